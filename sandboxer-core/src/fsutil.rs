//! Replacing a file atomically, the one way every crate does it: a temp file
//! beside the target (made by `tempfile`, so its name never collides and it
//! is removed on any failure), filled, given its mode, synced, renamed over
//! the target, then the folder synced. A reader sees the old file or the
//! new one, never a part; a crash leaves at worst a stray temp file.
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("state.json");
//! sandboxer_core::fsutil::replace(&path, 0o600, b"{}").unwrap();
//! assert_eq!(std::fs::read(&path).unwrap(), b"{}");
//! ```

use std::fs::{File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Replace `path` with `data` (mode `mode`), creating its folder.
pub fn replace(path: &Path, mode: u32, data: &[u8]) -> io::Result<()> {
    replace_with(path, mode, |f| f.write_all(data))
}

/// Replace `path` with what `fill` writes into the temp file (mode `mode`),
/// creating its folder. On any error the temp file is gone and `path` is as
/// it was.
pub fn replace_with(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "the path does not name a file")
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".tmp")
        .tempfile_in(dir)?;
    fill(tmp.as_file_mut())?;
    tmp.as_file()
        .set_permissions(Permissions::from_mode(mode))?;
    tmp.as_file().sync_all()?;
    // Closed before the rename: a program written this way can be run at
    // once (an open writer makes exec fail with "Text file busy").
    tmp.into_temp_path().persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_with_the_mode_and_leaves_nothing_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("sub/f");
        replace(&target, 0o640, b"one").unwrap();
        replace(&target, 0o600, b"two").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"two");
        let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let err = replace_with(&target, 0o644, |_| Err(io::Error::other("boom"))).unwrap_err();
        assert_eq!(err.to_string(), "boom");
        assert_eq!(std::fs::read(&target).unwrap(), b"two", "kept as it was");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["f"], "no temp file left");
        assert!(replace(dir.path(), 0o644, b"x").is_err() || dir.path().is_dir());
    }
}
