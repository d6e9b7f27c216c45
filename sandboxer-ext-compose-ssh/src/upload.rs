//! The repo upload: which paths are left out ([`Excludes`], pure) and the
//! tar archive of the rest ([`pack_repo`]), streamed to the host as the
//! stdin of `tar -x`.

use std::path::{Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use sandboxer_core::{Error, ErrorKind, Result};

/// The largest upload (the sum of the file sizes after exclusions). The
/// archive is built in memory, so a repo holding data sets or build outputs
/// under another name is refused rather than read whole.
pub const MAX_UPLOAD_BYTES: u64 = 512 * 1024 * 1024;

/// The repo's own `.dockerignore`, honoured by the upload.
pub const DOCKERIGNORE: &str = ".dockerignore";

/// Paths left out of the upload, matched with gitignore rules (the
/// `ignore` crate):
///
/// - A pattern without `/` (but a trailing one) matches a file or folder
///   name at any depth: `node_modules`, `*.log`.
/// - A pattern with `/` matches from the repo root: `data/cache` leaves out
///   that folder only (a leading `/` means the same).
/// - `*` and `?` match within a name, `**` across folders, `[a-z]` a class;
///   a later `!PATTERN` keeps what an earlier one left out.
///
/// A folder that matches is left out with everything under it. Patterns
/// come from the route's `exclude` (after the defaults), then the repo's
/// `.dockerignore`, read as docker reads it: every line from the repo root.
#[derive(Debug, Clone)]
pub struct Excludes {
    matcher: Gitignore,
}

/// The matcher builder: paths relative to the repo; an unclosed `[` is an
/// error (as docker has it), not a literal.
fn builder() -> GitignoreBuilder {
    let mut b = GitignoreBuilder::new(".");
    b.allow_unclosed_class(false);
    b
}

/// The builder with the route's `patterns` (each checked when the config
/// was read; one that is not a pattern matches nothing rather than
/// everything).
fn with_patterns<S: AsRef<str>>(patterns: &[S]) -> GitignoreBuilder {
    let mut b = builder();
    for p in patterns {
        if let Err(e) = b.add_line(None, p.as_ref()) {
            tracing::warn!("exclude pattern `{}` ignored: {e}", p.as_ref());
        }
    }
    b
}

/// Whether `pattern` is usable as an exclusion.
pub(crate) fn check_pattern(pattern: &str) -> std::result::Result<(), String> {
    let trimmed = pattern.trim_matches('/');
    if trimmed.is_empty() {
        return Err(format!("`{pattern}` would leave out the whole repo"));
    }
    if trimmed
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!(
            "`{pattern}` is not a pattern: empty, `.` or `..` parts"
        ));
    }
    builder()
        .add_line(None, pattern)
        .map(drop)
        .map_err(|e| format!("`{pattern}` is not a pattern: {e}"))
}

impl Excludes {
    /// The matcher for `patterns` alone (each checked when the config was
    /// read).
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Excludes {
        Excludes {
            matcher: with_patterns(patterns)
                .build()
                .unwrap_or_else(|_| Gitignore::empty()),
        }
    }

    /// The matcher for `patterns` and then the `.dockerignore` of `repo`,
    /// if it has one. A line of it that is not a pattern is an
    /// `InvalidInput` naming the file and line.
    pub fn for_repo<S: AsRef<str>>(repo: &Path, patterns: &[S]) -> Result<Excludes> {
        let mut b = with_patterns(patterns);
        let file = repo.join(DOCKERIGNORE);
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(format!("reading {}", file.display()), e)),
        };
        for (n, line) in text.iter().flat_map(|t| t.lines()).enumerate() {
            let Some(line) = dockerignore_line(line) else {
                continue;
            };
            b.add_line(Some(file.clone()), &line).map_err(|e| {
                Error::invalid_input(format!("{}:{}: {e}", file.display(), n + 1))
                    .with_hint("fix or remove that line of the repo's .dockerignore")
            })?;
        }
        let matcher = b.build().map_err(|e| {
            Error::invalid_input(format!("{}: {e}", file.display()))
                .with_hint("fix the repo's .dockerignore")
        })?;
        Ok(Excludes { matcher })
    }

    /// The pattern that leaves out the repo path `rel` (`/`-separated,
    /// relative), looking at the path and each of its parent folders; a
    /// `.dockerignore` pattern is named as such.
    pub fn excluded_by(&self, rel: &str) -> Option<String> {
        match self.matcher.matched_path_or_any_parents(rel, false) {
            ignore::Match::Ignore(g) => Some(match g.from() {
                Some(_) => format!("{} (in {DOCKERIGNORE})", g.original()),
                None => g.original().to_string(),
            }),
            _ => None,
        }
    }

    /// Whether the entry `rel`, whose parent folder is kept, is left out.
    fn leaves_out(&self, rel: &Path, is_dir: bool) -> bool {
        self.matcher.matched(rel, is_dir).is_ignore()
    }
}

/// One line of a `.dockerignore` as a gitignore line with docker's
/// meaning: comments and blank lines are nothing; every pattern is from
/// the repo root (a leading `/` or `./` changes nothing); `!` keeps.
fn dockerignore_line(line: &str) -> Option<String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (keep, body) = match line.strip_prefix('!') {
        Some(rest) => ("!", rest.trim()),
        None => ("", line),
    };
    let mut body = body;
    loop {
        let next = body.trim_start_matches('/');
        let next = next.strip_prefix("./").unwrap_or(next);
        if next == body {
            break;
        }
        body = next;
    }
    if body.is_empty() || body == "." {
        return None;
    }
    Some(format!("{keep}/{body}"))
}

/// What [`pack_repo`] made.
#[derive(Debug)]
pub struct Packed {
    /// The tar archive (ustar/GNU, uncompressed).
    pub archive: Vec<u8>,
    /// Regular files in it.
    pub files: usize,
    /// The sum of their sizes.
    pub bytes: u64,
}

/// A tar archive of the folder `repo` without what `excludes` leaves out.
/// Regular files, folders and symbolic links (kept as links, never
/// followed) are taken; sockets, fifos and devices are skipped. Modes and
/// times are kept; owners are not restored on the host (`tar -o`).
pub fn pack_repo(repo: &Path, excludes: &Excludes) -> Result<Packed> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    let mut packed = Packed {
        archive: Vec::new(),
        files: 0,
        bytes: 0,
    };
    let mut rel: Vec<String> = Vec::new();
    walk(repo, repo, &mut rel, excludes, &mut builder, &mut packed)?;
    packed.archive = builder
        .into_inner()
        .map_err(|e| Error::io(format!("packing {}", repo.display()), e))?;
    Ok(packed)
}

fn walk(
    root: &Path,
    dir: &Path,
    rel: &mut Vec<String>,
    excludes: &Excludes,
    builder: &mut tar::Builder<Vec<u8>>,
    packed: &mut Packed,
) -> Result<()> {
    let read = |e| Error::io(format!("reading the repo folder {}", dir.display()), e);
    let mut entries: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .map_err(read)?
        .map(|e| {
            e.map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
                .map_err(read)
        })
        .collect::<Result<_>>()?;
    entries.sort();
    for (name, path) in entries {
        rel.push(name);
        let in_archive: PathBuf = rel.iter().collect();
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let ft = meta.file_type();
        if excludes.leaves_out(&in_archive, ft.is_dir()) {
            rel.pop();
            continue;
        }
        let pack_err = |e| Error::io(format!("packing {}", path.display()), e);
        if ft.is_dir() {
            builder.append_dir(&in_archive, &path).map_err(pack_err)?;
            walk(root, &path, rel, excludes, builder, packed)?;
        } else if ft.is_file() || ft.is_symlink() {
            if ft.is_file() {
                packed.files += 1;
                packed.bytes += meta.len();
                if packed.bytes > MAX_UPLOAD_BYTES {
                    return Err(Error::new(
                        ErrorKind::InvalidInput,
                        format!(
                            "the repo {} holds more than {} MiB to upload (after exclusions)",
                            root.display(),
                            MAX_UPLOAD_BYTES / (1024 * 1024)
                        ),
                    )
                    .with_hint(
                        "leave out data and build folders with the route config key `exclude`",
                    ));
                }
            }
            builder
                .append_path_with_name(&path, &in_archive)
                .map_err(pack_err)?;
        } else {
            tracing::debug!(path = %path.display(), "not a file, folder or link: left out of the upload");
        }
        rel.pop();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_EXCLUDES;

    #[test]
    fn names_match_at_any_depth_and_paths_from_the_root() {
        let ex = Excludes::new(&["node_modules", "*.log", "data/cache", "/top"]);
        assert_eq!(
            ex.excluded_by("node_modules").as_deref(),
            Some("node_modules")
        );
        assert_eq!(
            ex.excluded_by("web/node_modules/x/y.js").as_deref(),
            Some("node_modules")
        );
        assert_eq!(ex.excluded_by("logs/app.log").as_deref(), Some("*.log"));
        assert_eq!(
            ex.excluded_by("data/cache/x").as_deref(),
            Some("data/cache")
        );
        assert_eq!(ex.excluded_by("sub/data/cache").as_deref(), None);
        assert_eq!(ex.excluded_by("top/file").as_deref(), Some("/top"));
        assert_eq!(ex.excluded_by("sub/top").as_deref(), None);
        assert_eq!(ex.excluded_by("docker-compose.e2e.yml").as_deref(), None);
    }

    #[test]
    fn the_repos_dockerignore_is_read_from_the_root_as_docker_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(
            root.join(DOCKERIGNORE),
            "# secrets stay home\nsecrets\n*.tmp\n!keep.tmp\n./logs/\n**/*.bak\n\n",
        )
        .unwrap();
        for d in ["sub/secrets", "logs", "a/b"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in [
            "secrets",
            "sub/secrets/x",
            "x.tmp",
            "keep.tmp",
            "sub/y.tmp",
            "logs/app",
            "a/b/c.bak",
            "main.rs",
        ] {
            std::fs::write(root.join(f), f).unwrap();
        }
        let ex = Excludes::for_repo(root, DEFAULT_EXCLUDES).unwrap();
        assert_eq!(
            ex.excluded_by("secrets").as_deref(),
            Some("/secrets (in .dockerignore)")
        );
        let packed = pack_repo(root, &ex).unwrap();
        let mut archive = tar::Archive::new(&packed.archive[..]);
        let mut files: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.header().entry_type().is_file())
            .map(|e| e.path().unwrap().to_string_lossy().into_owned())
            .collect();
        files.sort();
        // Docker's meaning: `secrets` and `*.tmp` at the root only, `**`
        // at any depth, `!` keeps; the file itself goes along.
        assert_eq!(
            files,
            [
                ".dockerignore",
                "keep.tmp",
                "main.rs",
                "sub/secrets/x",
                "sub/y.tmp"
            ]
        );
    }

    #[test]
    fn a_bad_dockerignore_line_is_named_by_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(DOCKERIGNORE), "ok\n\nbad[\n").unwrap();
        let err = Excludes::for_repo(dir.path(), DEFAULT_EXCLUDES).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(
            err.message().contains(".dockerignore:3:"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn patterns_are_checked() {
        assert!(check_pattern("").is_err());
        assert!(check_pattern("/").is_err());
        assert!(check_pattern("a/../b").is_err());
        assert!(check_pattern("a//b").is_err());
        assert!(check_pattern("bad[").is_err());
        assert!(check_pattern("**/*.bak").is_ok());
        assert!(check_pattern("*.tmp").is_ok());
        assert!(check_pattern("/data/").is_ok());
    }

    #[test]
    fn pack_leaves_out_the_defaults_and_keeps_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in [".git/objects", "target/debug", "src", "web/node_modules/x"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join(".git/HEAD"), "ref").unwrap();
        std::fs::write(root.join("target/debug/big"), "bin").unwrap();
        std::fs::write(root.join("web/node_modules/x/i.js"), "js").unwrap();
        std::fs::write(root.join("src/main.rs"), "fn main() {}").unwrap();
        std::fs::write(root.join("docker-compose.e2e.yml"), "services: {}").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
        let packed = pack_repo(root, &Excludes::new(DEFAULT_EXCLUDES)).unwrap();
        assert_eq!(packed.files, 2);
        let mut archive = tar::Archive::new(&packed.archive[..]);
        let mut names: Vec<(String, bool)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().entry_type().is_symlink(),
                )
            })
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                ("docker-compose.e2e.yml".to_string(), false),
                ("link".to_string(), true),
                ("src".to_string(), false),
                ("src/main.rs".to_string(), false),
                ("web".to_string(), false),
            ]
        );
    }
}
