//! The repo upload: which paths are left out ([`Excludes`], pure) and the
//! tar archive of the rest ([`pack_repo`]), streamed to the host as the
//! stdin of `tar -x`.

use std::path::{Path, PathBuf};

use sandboxer_core::{Error, ErrorKind, Result};

/// The largest upload (the sum of the file sizes after exclusions). The
/// archive is built in memory, so a repo holding data sets or build outputs
/// under another name is refused rather than read whole.
pub const MAX_UPLOAD_BYTES: u64 = 512 * 1024 * 1024;

/// Patterns of paths left out of the upload.
///
/// - A pattern without `/` matches a file or folder name at any depth:
///   `node_modules`, `*.log`.
/// - A pattern with `/` matches from the repo root: `data/cache` leaves out
///   that folder only (a leading `/` is allowed and means the same).
/// - `*` matches any run of characters within a name, `?` one character.
///
/// A folder that matches is left out with everything under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excludes {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    text: String,
    anchored: bool,
    parts: Vec<String>,
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
    Ok(())
}

impl Excludes {
    /// The matcher for `patterns` (each checked when the config was read).
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Excludes {
        let patterns = patterns
            .iter()
            .map(|p| {
                let text = p.as_ref().to_string();
                let body = text.trim_end_matches('/');
                let anchored = body.contains('/');
                let parts = body
                    .trim_start_matches('/')
                    .split('/')
                    .map(str::to_string)
                    .collect();
                Pattern {
                    text,
                    anchored,
                    parts,
                }
            })
            .collect();
        Excludes { patterns }
    }

    /// The pattern that leaves out the repo path `rel` (`/`-separated,
    /// relative), looking at the path and each of its parent folders.
    pub fn excluded_by(&self, rel: &str) -> Option<&str> {
        let parts: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
        self.patterns
            .iter()
            .find(|p| {
                if p.anchored {
                    parts.len() >= p.parts.len()
                        && p.parts.iter().zip(&parts).all(|(g, c)| glob(g, c))
                } else {
                    parts.iter().any(|c| glob(&p.parts[0], c))
                }
            })
            .map(|p| p.text.as_str())
    }

    /// Whether the entry `rel`, whose parent folder is kept, is left out.
    fn leaves_out(&self, rel: &[&str]) -> bool {
        let name = rel[rel.len() - 1];
        self.patterns.iter().any(|p| {
            if p.anchored {
                rel.len() == p.parts.len() && p.parts.iter().zip(rel).all(|(g, c)| glob(g, c))
            } else {
                glob(&p.parts[0], name)
            }
        })
    }
}

/// `*` and `?` over one name.
fn glob(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
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
        let parts: Vec<&str> = rel.iter().map(String::as_str).collect();
        if excludes.leaves_out(&parts) {
            rel.pop();
            continue;
        }
        let in_archive: PathBuf = rel.iter().collect();
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let ft = meta.file_type();
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
    fn glob_matches_star_and_question_mark() {
        assert!(glob("*.log", "a.log"));
        assert!(glob("*.log", ".log"));
        assert!(!glob("*.log", "a.log.1"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(glob("*", "anything"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
        assert!(glob("target", "target"));
        assert!(!glob("target", "targets"));
    }

    #[test]
    fn names_match_at_any_depth_and_paths_from_the_root() {
        let ex = Excludes::new(&["node_modules", "*.log", "data/cache", "/top"]);
        assert_eq!(ex.excluded_by("node_modules"), Some("node_modules"));
        assert_eq!(
            ex.excluded_by("web/node_modules/x/y.js"),
            Some("node_modules")
        );
        assert_eq!(ex.excluded_by("logs/app.log"), Some("*.log"));
        assert_eq!(ex.excluded_by("data/cache/x"), Some("data/cache"));
        assert_eq!(ex.excluded_by("sub/data/cache"), None);
        assert_eq!(ex.excluded_by("top/file"), Some("/top"));
        assert_eq!(ex.excluded_by("sub/top"), None);
        assert_eq!(ex.excluded_by("docker-compose.e2e.yml"), None);
    }

    #[test]
    fn patterns_are_checked() {
        assert!(check_pattern("").is_err());
        assert!(check_pattern("/").is_err());
        assert!(check_pattern("a/../b").is_err());
        assert!(check_pattern("a//b").is_err());
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
