//! [`Buf`]: the bytes a load reads records from. `sandboxes.json` is mapped
//! read-only rather than copied: at 10,000 records (13 MB) the copy and the
//! fresh memory it needs were a third of a commit's time.

use std::fs::File;
use std::io;
use std::ptr::NonNull;

/// Bytes records are read from: a file mapped read-only, or a buffer.
pub(crate) enum Buf {
    Heap(Vec<u8>),
    Map(Mapping),
}

impl Buf {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Buf::Heap(v) => v,
            Buf::Map(m) => m.bytes(),
        }
    }

    /// `file` (of `len` bytes, from its metadata), mapped; read into a
    /// buffer when it is empty or cannot be mapped.
    pub fn of_file(file: &mut File, len: u64) -> io::Result<Buf> {
        if len > 0 && len <= isize::MAX as u64 {
            if let Ok(m) = Mapping::of(file, len as usize) {
                return Ok(Buf::Map(m));
            }
        }
        let mut v = Vec::with_capacity(len as usize + 1);
        io::Read::read_to_end(file, &mut v)?;
        Ok(Buf::Heap(v))
    }
}

/// A private read-only mapping of a whole file, unmapped on drop.
///
/// The store never writes into `sandboxes.json`: every change either goes
/// to the journal or renames a new file over it, and the mapping keeps the
/// file it was made from. So the mapped bytes do not change while it lives,
/// as long as no other program writes into the file in place (docs/store.md
/// asks people to repair a store with the commands stopped, and to replace
/// the file rather than edit it where it is while they run).
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value alone; sharing
// it across threads is sharing a `&[u8]`.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Mapping {
    fn of(file: &File, len: usize) -> io::Result<Mapping> {
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh read-only private mapping of `len` bytes (the
        // file's size) of an open file; the kernel picks the address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(Mapping { ptr, len })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until `drop`, which needs
        // `&mut self`, so not while this borrow lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `of` mapped, once.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapped_file_reads_as_written_and_outlives_a_rename_over_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"first contents").unwrap();
        let mut f = File::open(&path).unwrap();
        let buf = Buf::of_file(&mut f, 14).unwrap();
        assert!(matches!(buf, Buf::Map(_)));
        // What a checkpoint does: a new file renamed over the path.
        std::fs::write(dir.path().join("g"), b"second").unwrap();
        std::fs::rename(dir.path().join("g"), &path).unwrap();
        assert_eq!(buf.bytes(), b"first contents");

        std::fs::write(&path, b"").unwrap();
        let mut f = File::open(&path).unwrap();
        let empty = Buf::of_file(&mut f, 0).unwrap();
        assert!(matches!(empty, Buf::Heap(_)));
        assert_eq!(empty.bytes(), b"");
    }
}
