//! Repos for remote callers. Over HTTP a path input (`repo`) never names an
//! arbitrary path on the server:
//!
//! - the caller uploads the repo (`POST /v1/uploads`, a tar or tar.gz
//!   stream of at most [`RepoPolicy::max_upload`] bytes) and passes the
//!   answer's `use_as` (`upload:upl-...`) as the input; the archive is
//!   checked entry by entry while it is unpacked into a folder of its own,
//!   and the whole upload is refused at the first entry that could write
//!   outside that folder (an absolute path, a `..` part, a link that leads
//!   out, a hard link) or that is not a file, folder or link (devices,
//!   fifos);
//! - a server-side path is taken only under the roots the operator listed
//!   (`serve --repo-root DIR`, none by default), after resolving symlinks;
//!   every other path gets one and the same answer, whatever exists there,
//!   and is not looked at unless it is under a root as written.
//!
//! The CLI is not behind this gate: it runs as the user who owns the paths.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sandboxer_core::uploads::{
    looks_like_upload_ref, new_upload_id, UploadRecord, PARTIAL_PREFIX, UPLOAD_REF_PREFIX,
};
use sandboxer_core::{model, Error, ErrorKind};
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::error::ApiError;
use crate::extract::{Caller, PathParam};
use crate::ApiState;

/// The inputs that name a folder on the machine that runs sandboxer (the
/// compose extension's repo).
pub const PATH_INPUTS: &[&str] = &["repo"];

/// The default largest upload (the request body): 100 MiB.
pub const DEFAULT_MAX_UPLOAD: u64 = 100 * 1024 * 1024;

/// An archive unpacks to at most this many times [`RepoPolicy::max_upload`]
/// (so a compressed archive cannot fill the disk).
pub const UNPACKED_FACTOR: u64 = 4;

/// At most this many entries in one archive.
pub const MAX_ENTRIES: u64 = 100_000;

/// What remote callers may name as a repo.
#[derive(Debug, Clone)]
pub struct RepoPolicy {
    /// Folders under which a server-side path is accepted, each with its
    /// symlinks resolved. Empty: uploads only.
    pub roots: Vec<PathBuf>,
    /// The largest upload body, in bytes.
    pub max_upload: u64,
}

impl Default for RepoPolicy {
    fn default() -> Self {
        RepoPolicy {
            roots: Vec::new(),
            max_upload: DEFAULT_MAX_UPLOAD,
        }
    }
}

impl RepoPolicy {
    /// The policy with `roots` (each must be an existing folder; it is
    /// resolved now, so a later symlink swap of the root itself does not
    /// move it).
    pub fn new(roots: &[PathBuf], max_upload: u64) -> sandboxer_core::Result<Self> {
        let mut resolved = Vec::new();
        for r in roots {
            let c = std::fs::canonicalize(r).map_err(|e| {
                Error::io(format!("--repo-root {}", r.display()), e)
                    .with_hint("name an existing folder the server may read repos from")
            })?;
            if !c.is_dir() {
                return Err(Error::invalid_input(format!(
                    "--repo-root {} is not a folder",
                    r.display()
                )));
            }
            resolved.push(c);
        }
        if max_upload == 0 {
            return Err(Error::invalid_input(
                "--max-upload must be more than 0 bytes",
            ));
        }
        Ok(RepoPolicy {
            roots: resolved,
            max_upload,
        })
    }

    /// Check the path inputs of a create over HTTP: an upload reference is
    /// kept as it is (the manager checks it is the caller's); a path becomes
    /// its resolved form when it is a folder under a root, and anything
    /// else is [`outside_roots`], the same for every such path.
    pub fn check_inputs(
        &self,
        inputs: &mut std::collections::BTreeMap<String, String>,
    ) -> Result<(), ApiError> {
        for name in PATH_INPUTS {
            let Some(value) = inputs.get_mut(*name) else {
                continue;
            };
            if looks_like_upload_ref(value) {
                continue;
            }
            *value = self
                .resolve(value)
                .ok_or_else(|| outside_roots(name))?
                .display()
                .to_string();
        }
        Ok(())
    }

    /// The folder `raw` names, when it is one under a root. A path that is
    /// not under a root as written is not looked at.
    fn resolve(&self, raw: &str) -> Option<PathBuf> {
        let path = Path::new(raw);
        if !path.is_absolute() {
            return None;
        }
        let lexical = normalize(path)?;
        if !self.roots.iter().any(|r| lexical.starts_with(r)) {
            return None;
        }
        let real = std::fs::canonicalize(&lexical).ok()?;
        (self.roots.iter().any(|r| real.starts_with(r)) && real.is_dir()).then_some(real)
    }
}

/// `path` with `.` and `..` folded, without asking the file system; `None`
/// when `..` would climb above the root.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                if !out.pop() || out.as_os_str().is_empty() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Some(out)
}

/// The one answer for a path input that is not a folder under a root.
pub fn outside_roots(name: &str) -> ApiError {
    ApiError::invalid(format!(
        "`{name}` must be an upload (`{UPLOAD_REF_PREFIX}upl-...`) or a folder under one of the server's repo roots"
    ))
    .with_hint("upload the repo first: `POST /v1/uploads` with a tar or tar.gz body, then pass the `use_as` value it answers")
}

/// What went wrong unpacking an archive.
#[derive(Debug)]
enum Refused {
    /// Larger than allowed (413).
    TooLarge(String),
    /// Not a usable archive, or an entry that is refused (400).
    Bad(String),
    /// The server's own I/O (500).
    Io(Error),
}

impl From<Refused> for ApiError {
    fn from(r: Refused) -> ApiError {
        match r {
            Refused::TooLarge(m) => ApiError::new(ErrorKind::InvalidInput, m)
                .with_status(StatusCode::PAYLOAD_TOO_LARGE)
                .with_hint("leave out build outputs and data, or ask the operator for a larger `--max-upload`"),
            Refused::Bad(m) => ApiError::invalid(m).with_hint(
                "send a tar or tar.gz of the repo folder with relative paths, e.g. `tar -czf - -C REPO .`",
            ),
            Refused::Io(e) => ApiError::from(e),
        }
    }
}

/// What an archive held.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Unpacked {
    pub files: u64,
    pub bytes: u64,
}

/// Unpack the tar (or gzip-compressed tar) `archive` into `dest` (an empty
/// folder), refusing it whole at the first entry that is not a regular
/// file, folder or symlink, whose path is absolute or has `..`, whose link
/// leads out of `dest`, or past `max_bytes` unpacked or [`MAX_ENTRIES`].
fn unpack(archive: &Path, dest: &Path, max_bytes: u64) -> Result<Unpacked, Refused> {
    let io = |what: &str, e: std::io::Error| Refused::Io(Error::io(what.to_string(), e));
    let mut file = std::fs::File::open(archive).map_err(|e| io("opening the upload", e))?;
    let mut magic = [0u8; 2];
    let n = file
        .read(&mut magic)
        .map_err(|e| io("reading the upload", e))?;
    let file = std::fs::File::open(archive).map_err(|e| io("opening the upload", e))?;
    let reader: Box<dyn Read> = if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut ar = tar::Archive::new(reader);
    ar.set_preserve_permissions(false);
    ar.set_preserve_ownerships(false);
    ar.set_unpack_xattrs(false);
    ar.set_overwrite(false);
    let bad_archive =
        |e: std::io::Error| Refused::Bad(format!("the body is not a tar or tar.gz archive: {e}"));
    let mut out = Unpacked::default();
    let mut entries = 0u64;
    for entry in ar.entries().map_err(bad_archive)? {
        let mut entry = entry.map_err(bad_archive)?;
        entries += 1;
        if entries > MAX_ENTRIES {
            return Err(Refused::TooLarge(format!(
                "the archive has more than {MAX_ENTRIES} entries"
            )));
        }
        let path = entry.path().map_err(bad_archive)?.into_owned();
        let shown = path.display().to_string();
        check_entry_path(&path).map_err(|why| Refused::Bad(format!("entry `{shown}`: {why}")))?;
        let kind = entry.header().entry_type();
        use tar::EntryType as T;
        match kind {
            T::Regular | T::Continuous => {
                out.files += 1;
                out.bytes += entry.size();
                if out.bytes > max_bytes {
                    return Err(Refused::TooLarge(format!(
                        "the archive unpacks to more than {max_bytes} bytes"
                    )));
                }
            }
            T::Directory => {}
            T::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(bad_archive)?
                    .ok_or_else(|| {
                        Refused::Bad(format!("entry `{shown}`: a link without a target"))
                    })?
                    .into_owned();
                check_link(&path, &target).map_err(|why| {
                    Refused::Bad(format!(
                        "entry `{shown}`: the link to `{}` {why}",
                        target.display()
                    ))
                })?;
            }
            T::Link => {
                return Err(Refused::Bad(format!(
                    "entry `{shown}`: hard links are not taken; archive the file itself"
                )))
            }
            other => {
                return Err(Refused::Bad(format!(
                    "entry `{shown}`: only files, folders and symbolic links are taken, not {}",
                    entry_kind(other)
                )))
            }
        }
        // `unpack_in` also refuses to write through a link that leads out.
        match entry.unpack_in(dest) {
            Ok(true) => {}
            Ok(false) => {
                return Err(Refused::Bad(format!(
                    "entry `{shown}` would be written outside the upload"
                )))
            }
            Err(e) => return Err(Refused::Bad(format!("entry `{shown}`: {e}"))),
        }
    }
    Ok(out)
}

fn entry_kind(t: tar::EntryType) -> &'static str {
    use tar::EntryType as T;
    match t {
        T::Char => "a character device",
        T::Block => "a block device",
        T::Fifo => "a fifo",
        T::GNUSparse => "a sparse file",
        _ => "this kind of entry",
    }
}

/// An entry's path must be relative and without `..`.
fn check_entry_path(path: &Path) -> Result<(), &'static str> {
    for c in path.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err("a path with `..` is not taken"),
            Component::RootDir | Component::Prefix(_) => {
                return Err("an absolute path is not taken")
            }
        }
    }
    Ok(())
}

/// A symlink at `at` (relative to the upload's root) pointing to `target`
/// must stay inside the root.
fn check_link(at: &Path, target: &Path) -> Result<(), &'static str> {
    if target.is_absolute() {
        return Err("is absolute");
    }
    let mut depth: Vec<&std::ffi::OsStr> = at
        .parent()
        .into_iter()
        .flat_map(Path::components)
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    for c in target.components() {
        match c {
            Component::Normal(n) => depth.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return Err("leads out of the upload");
                }
            }
            Component::RootDir | Component::Prefix(_) => return Err("is absolute"),
        }
    }
    Ok(())
}

/// The answer to an upload: the record, and how to use it.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[schemars(rename = "Upload")]
pub(crate) struct UploadView<'a> {
    #[serde(flatten)]
    upload: &'a UploadRecord,
    /// The `repo` input value that names this upload in a create.
    #[schemars(example = &"upload:upl-q3v7k2m4xa")]
    use_as: String,
}

fn view(u: &UploadRecord) -> UploadView<'_> {
    UploadView {
        upload: u,
        use_as: format!("{UPLOAD_REF_PREFIX}{}", u.id),
    }
}

/// Removes the partial folder and body file unless disarmed.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_dir_all(p).or_else(|_| std::fs::remove_file(p));
        }
    }
}

/// `POST /v1/uploads`: stream the body to a file (at most `max_upload`
/// bytes), unpack it into a folder of its own, record it.
pub(crate) async fn upload_repo(
    State(st): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let max = st.repos.max_upload;
    let too_large = || {
        ApiError::from(Refused::TooLarge(format!(
            "the upload is larger than the server takes ({max} bytes)"
        )))
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > max {
            return Err(too_large());
        }
    }
    let dir = st
        .manager
        .uploads_dir()
        .map_err(ApiError::from)?
        .to_path_buf();
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ApiError::from(Error::io(format!("creating {}", dir.display()), e)))?;
    let id = new_upload_id();
    let partial = dir.join(format!("{PARTIAL_PREFIX}{id}"));
    let body_file = dir.join(format!("{PARTIAL_PREFIX}{id}.body"));
    let mut cleanup = Cleanup(vec![partial.clone(), body_file.clone()]);
    let io = |what: String, e: std::io::Error| ApiError::from(Error::io(what, e));
    let mut f = tokio::fs::File::create(&body_file)
        .await
        .map_err(|e| io(format!("creating {}", body_file.display()), e))?;
    let mut received = 0u64;
    let mut stream = body.into_data_stream();
    use futures_util::StreamExt;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| body_error(&e))?;
        received += chunk.len() as u64;
        if received > max {
            return Err(too_large());
        }
        f.write_all(&chunk)
            .await
            .map_err(|e| io(format!("writing {}", body_file.display()), e))?;
    }
    f.flush()
        .await
        .map_err(|e| io(format!("writing {}", body_file.display()), e))?;
    drop(f);
    if received == 0 {
        return Err(
            Refused::Bad("the body is empty; send a tar or tar.gz of the repo".into()).into(),
        );
    }
    let (src, dest) = (body_file.clone(), partial.clone());
    let unpacked = tokio::task::spawn_blocking(move || {
        std::fs::create_dir(&dest)
            .map_err(|e| Refused::Io(Error::io(format!("creating {}", dest.display()), e)))?;
        unpack(&src, &dest, max.saturating_mul(UNPACKED_FACTOR))
    })
    .await
    .map_err(|e| ApiError::from(Error::internal(format!("unpacking stopped: {e}"))))??;
    let final_dir = dir.join(&id);
    std::fs::rename(&partial, &final_dir).map_err(|e| {
        io(
            format!("renaming {} to {}", partial.display(), final_dir.display()),
            e,
        )
    })?;
    cleanup.0 = vec![body_file, final_dir];
    let rec = UploadRecord {
        id,
        actor: caller.actor.clone(),
        created_at: model::now(),
        files: unpacked.files,
        bytes: unpacked.bytes,
        used_by: Vec::new(),
    };
    let m = st.manager.clone();
    let rec = crate::routes::run_blocking(move || async move { m.record_upload(rec) })
        .await
        .map_err(ApiError::from)?;
    // Recorded: keep the folder, drop the body file.
    cleanup.0.truncate(1);
    tracing::info!(
        upload = %rec.id,
        actor = %rec.actor,
        files = rec.files,
        bytes = rec.bytes,
        "upload unpacked"
    );
    Ok((StatusCode::CREATED, Json(view(&rec))).into_response())
}

/// A body that could not be read: 408 when its deadline passed, else 400.
fn body_error(e: &axum::Error) -> ApiError {
    if crate::conn::is_body_timeout(e) {
        return crate::conn::body_timeout_error();
    }
    ApiError::invalid(format!("reading the upload: {e}"))
}

/// `GET /v1/uploads`: the caller's uploads (every upload for `adm`).
pub(crate) async fn list_uploads(
    State(st): State<ApiState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let m = st.manager.clone();
    let who = (!caller.is_admin()).then(|| caller.actor.clone());
    let list = crate::routes::run_blocking(move || async move { m.uploads(who.as_ref()) })
        .await
        .map_err(ApiError::from)?;
    let views: Vec<UploadView<'_>> = list.iter().map(view).collect();
    Ok(Json(views).into_response())
}

/// `DELETE /v1/uploads/{id}`: remove an upload no live sandbox uses.
pub(crate) async fn delete_upload(
    State(st): State<ApiState>,
    caller: Caller,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    let m = st.manager.clone();
    let who = (!caller.is_admin()).then(|| caller.actor.clone());
    let rec =
        crate::routes::run_blocking(move || async move { m.delete_upload(&id, who.as_ref()) })
            .await
            .map_err(ApiError::from)?;
    Ok(Json(view(&rec)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> tempfile::NamedTempFile {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        let bytes = b.into_inner().unwrap();
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), bytes).unwrap();
        f
    }

    fn header(kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h
    }

    /// Write a raw name into the header (the builder refuses `..` and
    /// absolute names, as a hostile client would not).
    fn raw_name(h: &mut tar::Header, name: &str) {
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
    }

    fn unpack_to(
        f: &tempfile::NamedTempFile,
        max: u64,
    ) -> (tempfile::TempDir, Result<Unpacked, Refused>) {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("up");
        std::fs::create_dir(&dest).unwrap();
        let r = unpack(f.path(), &dest, max);
        (root, r)
    }

    /// Every path under `root` (relative), sorted.
    fn tree(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                let p = e.path();
                out.push(p.strip_prefix(root).unwrap().display().to_string());
                if e.file_type().unwrap().is_dir() {
                    stack.push(p);
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn a_plain_archive_unpacks_with_its_links() {
        let f = archive(|b| {
            let data = b"services: {}\n";
            b.append_data(
                &mut header(tar::EntryType::Regular, data.len() as u64),
                "docker-compose.e2e.yml",
                &data[..],
            )
            .unwrap();
            b.append_data(&mut header(tar::EntryType::Directory, 0), "src", &[][..])
                .unwrap();
            b.append_data(
                &mut header(tar::EntryType::Regular, 2),
                "src/a.rs",
                &b"//"[..],
            )
            .unwrap();
            let mut l = header(tar::EntryType::Symlink, 0);
            b.append_link(&mut l, "src/link", "../docker-compose.e2e.yml")
                .unwrap();
        });
        let (root, r) = unpack_to(&f, 1 << 20);
        assert_eq!(
            r.unwrap(),
            Unpacked {
                files: 2,
                bytes: 15
            }
        );
        assert_eq!(
            tree(&root.path().join("up")),
            ["docker-compose.e2e.yml", "src", "src/a.rs", "src/link"]
        );
    }

    #[test]
    fn escaping_entries_are_refused_and_nothing_is_written_outside() {
        type Build = Box<dyn Fn(&mut tar::Builder<Vec<u8>>)>;
        let cases: Vec<(&str, Build, &str)> = vec![
            (
                "dotdot",
                Box::new(|b| {
                    let mut h = header(tar::EntryType::Regular, 1);
                    raw_name(&mut h, "../escaped");
                    b.append(&h, &b"x"[..]).unwrap();
                }),
                "`..`",
            ),
            (
                "absolute",
                Box::new(|b| {
                    let mut h = header(tar::EntryType::Regular, 1);
                    raw_name(&mut h, "/tmp/escaped-abs");
                    b.append(&h, &b"x"[..]).unwrap();
                }),
                "absolute path",
            ),
            (
                "link out",
                Box::new(|b| {
                    let mut l = header(tar::EntryType::Symlink, 0);
                    b.append_link(&mut l, "a/out", "../../escaped").unwrap();
                }),
                "leads out",
            ),
            (
                "absolute link",
                Box::new(|b| {
                    let mut l = header(tar::EntryType::Symlink, 0);
                    b.append_link(&mut l, "etc", "/etc").unwrap();
                }),
                "is absolute",
            ),
            (
                "hard link",
                Box::new(|b| {
                    let mut l = header(tar::EntryType::Link, 0);
                    b.append_link(&mut l, "pw", "/etc/passwd").unwrap();
                }),
                "hard links",
            ),
            (
                "device",
                Box::new(|b| {
                    let mut h = header(tar::EntryType::Char, 0);
                    b.append_data(&mut h, "null", &[][..]).unwrap();
                }),
                "character device",
            ),
            (
                "fifo",
                Box::new(|b| {
                    let mut h = header(tar::EntryType::Fifo, 0);
                    b.append_data(&mut h, "pipe", &[][..]).unwrap();
                }),
                "fifo",
            ),
        ];
        for (name, build, expect) in cases {
            let f = archive(|b| {
                b.append_data(
                    &mut header(tar::EntryType::Regular, 2),
                    "ok.txt",
                    &b"ok"[..],
                )
                .unwrap();
                build(b);
            });
            let (root, r) = unpack_to(&f, 1 << 20);
            match r {
                Err(Refused::Bad(m)) => assert!(m.contains(expect), "{name}: {m}"),
                other => panic!("{name}: {other:?}"),
            }
            // Nothing beside the upload's folder.
            assert_eq!(
                tree(root.path())
                    .iter()
                    .filter(|p| !p.starts_with("up"))
                    .count(),
                0,
                "{name}: {:?}",
                tree(root.path())
            );
        }
        assert!(!Path::new("/tmp/escaped-abs").exists());
    }

    #[test]
    fn size_limits_hold_for_plain_and_compressed_archives() {
        let f = archive(|b| {
            let data = vec![0u8; 5000];
            b.append_data(&mut header(tar::EntryType::Regular, 5000), "big", &data[..])
                .unwrap();
        });
        let (_root, r) = unpack_to(&f, 4000);
        assert!(matches!(r, Err(Refused::TooLarge(_))), "{r:?}");
        // A gzip bomb: small compressed, large unpacked.
        let gz = tempfile::NamedTempFile::new().unwrap();
        {
            let mut enc = flate2::write::GzEncoder::new(
                std::fs::File::create(gz.path()).unwrap(),
                flate2::Compression::best(),
            );
            std::io::copy(&mut std::fs::File::open(f.path()).unwrap(), &mut enc).unwrap();
            enc.finish().unwrap();
        }
        assert!(std::fs::metadata(gz.path()).unwrap().len() < 4000);
        let (_root, r) = unpack_to(&gz, 4000);
        assert!(matches!(r, Err(Refused::TooLarge(_))), "{r:?}");
        let (_root, r) = unpack_to(&gz, 10_000);
        assert_eq!(
            r.unwrap(),
            Unpacked {
                files: 1,
                bytes: 5000
            }
        );
    }

    #[test]
    fn garbage_is_not_an_archive() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), b"this is not a tar archive at all, just text").unwrap();
        let (_root, r) = unpack_to(&f, 1 << 20);
        assert!(matches!(r, Err(Refused::Bad(_))), "{r:?}");
    }

    #[test]
    fn paths_outside_the_roots_all_get_the_same_answer() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("root");
        let outside = base.path().join("outside");
        std::fs::create_dir_all(root.join("repo")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("sneaky")).unwrap();
        let policy = RepoPolicy::new(std::slice::from_ref(&root), 1000).unwrap();
        let root_s = root.display().to_string();
        let good = format!("{root_s}/repo");
        let mut inputs = std::collections::BTreeMap::from([("repo".to_string(), good.clone())]);
        policy.check_inputs(&mut inputs).unwrap();
        assert_eq!(
            inputs["repo"],
            std::fs::canonicalize(&good).unwrap().display().to_string()
        );
        let refused = [
            outside.display().to_string(),
            format!("{}/missing", outside.display()),
            "/root".to_string(),
            "/nonexistent/path".to_string(),
            "relative/repo".to_string(),
            "repo".to_string(),
            format!("{root_s}/../outside"),
            format!("{root_s}/repo/../../outside"),
            format!("{root_s}/sneaky"),
            format!("{root_s}/missing"),
            String::new(),
        ];
        let mut answers = std::collections::BTreeSet::new();
        for raw in refused {
            let mut inputs = std::collections::BTreeMap::from([("repo".to_string(), raw.clone())]);
            let e = policy.check_inputs(&mut inputs).unwrap_err();
            assert_eq!(inputs["repo"], raw, "the input is left as it was");
            answers.insert(serde_json::to_string(&e.body()).unwrap());
        }
        assert_eq!(answers.len(), 1, "{answers:?}");
        // No roots: every path is refused.
        let none = RepoPolicy::default();
        let mut inputs = std::collections::BTreeMap::from([("repo".to_string(), good)]);
        assert!(none.check_inputs(&mut inputs).is_err());
        // Upload references pass through to the manager.
        let mut inputs =
            std::collections::BTreeMap::from([("repo".to_string(), "upload:upl-abc".to_string())]);
        none.check_inputs(&mut inputs).unwrap();
    }
}
