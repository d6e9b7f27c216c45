//! Snapshots: the saved state of a sandbox (`snap-...` records), made by
//! its extension, from which new sandboxes of the same profile are
//! created. The record is plain data, like [`crate::model::Sandbox`]; the
//! manager makes, restores and deletes them (`manager::snapshots`).
//!
//! ```text
//! creating -> ready -> deleted
//!     |          \____ (delete)
//!     v
//!   failed (the making failed or was interrupted; nothing of it is kept)
//! ```

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::credits::Micros;
use crate::extension::Resource;
use crate::model::{Actor, Worker};
use crate::transport::{Utf8Path, Utf8PathBuf};

/// Where a snapshot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotState {
    /// Its extension is making it.
    Creating,
    /// Whole: sandboxes can be created from it.
    Ready,
    /// The making failed or was interrupted; nothing of it is kept.
    Failed,
    /// Deleted: its artifacts are gone, the record stays as history.
    Deleted,
}

impl SnapshotState {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotState::Creating => "creating",
            SnapshotState::Ready => "ready",
            SnapshotState::Failed => "failed",
            SnapshotState::Deleted => "deleted",
        }
    }

    /// Whether its artifacts may exist (creating or ready).
    pub fn is_live(self) -> bool {
        matches!(self, SnapshotState::Creating | SnapshotState::Ready)
    }
}

impl fmt::Display for SnapshotState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SnapshotState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "creating" => SnapshotState::Creating,
            "ready" => SnapshotState::Ready,
            "failed" => SnapshotState::Failed,
            "deleted" => SnapshotState::Deleted,
            other => {
                return Err(format!(
                    "unknown snapshot state `{other}` (creating, ready, failed, deleted)"
                ))
            }
        })
    }
}

/// A snapshot record. Its field names are a contract like the sandbox
/// record's (`snapshots get --json`, `/v1/snapshots`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Snapshot {
    /// `snap-` and 10 characters of lowercase base32.
    #[schemars(regex(pattern = r"^snap-[a-z0-9]+$"), example = &"snap-q3v7k2m4xa")]
    pub id: String,
    /// A name its maker gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The sandbox it was taken of.
    pub source: String,
    pub profile: String,
    pub profile_version: u32,
    pub extension: String,
    /// The host it lives on (or the provider's name for a SaaS extension).
    pub host: String,
    /// Where on it: a folder, an image name, a provider's snapshot id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Bytes it takes where it lives, when the extension can tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    pub actor: Actor,
    pub state: SnapshotState,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// The profile's storage price per hour while it is kept (zero:
    /// free), paid when it is deleted.
    #[serde(default, skip_serializing_if = "Micros::is_zero")]
    pub storage_price_per_hour: Micros,
    /// What its storage cost, once deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_cost: Option<Micros>,
    /// The process making it (the reaper fails a snapshot whose maker
    /// died).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<Worker>,
    /// Extension-private state restore and delete read (left out of the
    /// public view, like a sandbox's `backend`).
    #[serde(default, skip_serializing_if = "crate::model::hide_backend")]
    #[schemars(skip)]
    pub backend: serde_json::Value,
}

/// A fresh snapshot id: `snap-` and 10 characters of lowercase base32.
pub fn new_snapshot_id() -> String {
    format!("snap-{}", crate::model::random_tail())
}

/// Whether `s` has the shape of a snapshot id (ids go into paths and
/// commands on hosts only when they are plain).
pub fn is_snapshot_id(s: &str) -> bool {
    s.strip_prefix("snap-").is_some_and(|t| {
        !t.is_empty()
            && t.len() <= 32
            && t.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    })
}

/// Where the snapshot folder `dir` (`.../SNAP`) is made before it is
/// whole: `.SNAP.partial` beside it, renamed to `dir` last, so nothing
/// under a snapshot's own name is ever a part.
pub fn partial_dir(dir: &Utf8Path) -> Utf8PathBuf {
    dir.with_file_name(format!(".{}.partial", dir.file_name().unwrap_or("snap")))
}

/// A POSIX sh fragment that prints one `SNAP whole` or `SNAP partial` line
/// per snapshot folder under `root` (nothing when `root` is missing). It
/// runs in a subshell: the caller's folder and exit status are untouched.
pub fn folders_listing(root: &Utf8Path) -> String {
    format!(
        r#"( cd {root} 2>/dev/null || exit 0
for _s in snap-* .snap-*.partial; do
  [ -d "$_s" ] || continue
  case "$_s" in
    .*) _s=${{_s#.}}; echo "${{_s%.partial}} partial" ;;
    *) echo "$_s whole" ;;
  esac
done )
"#,
        root = crate::transport::shell_quote(root.as_str()),
    )
}

/// A line of [`folders_listing`] under `root` as the resource of kind
/// `kind` (a snapshot's folder, whole or partial); `None` for any other
/// line.
pub fn listed_folder(line: &str, root: &Utf8Path, kind: &str) -> Option<Resource> {
    let (id, what) = line.split_once(' ')?;
    if !is_snapshot_id(id) {
        return None;
    }
    let dir = root.join(id);
    let name = match what {
        "whole" => dir,
        "partial" => partial_dir(&dir),
        _ => return None,
    };
    Some(Resource {
        sandbox_id: id.to_string(),
        kind: kind.to_string(),
        name: name.into_string(),
        running: false,
    })
}

/// The `NotFound` error for a snapshot id.
pub fn unknown_snapshot(id: &str) -> crate::Error {
    crate::Error::not_found(format!("no snapshot `{id}`"))
        .with_hint("`sandboxer snapshots list` shows the snapshots this store knows")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_their_shape_and_strangers_are_refused() {
        let id = new_snapshot_id();
        assert!(is_snapshot_id(&id), "{id}");
        assert!(!is_snapshot_id("snap-"));
        assert!(!is_snapshot_id("snap-../x"));
        assert!(!is_snapshot_id("sbx-abc"));
    }

    #[test]
    fn folder_listings_name_whole_and_partial_snapshots_only() {
        let root = Utf8Path::new("/d/snapshots");
        let r = listed_folder("snap-abc whole", root, "k").unwrap();
        assert_eq!(
            (r.sandbox_id.as_str(), r.name.as_str()),
            ("snap-abc", "/d/snapshots/snap-abc")
        );
        let r = listed_folder("snap-abc partial", root, "k").unwrap();
        assert_eq!(r.name, "/d/snapshots/.snap-abc.partial");
        assert_eq!(listed_folder("sbx-abc 1", root, "k"), None);
        assert_eq!(listed_folder("snap-abc image", root, "k"), None);
        assert!(folders_listing(Utf8Path::new("/a b")).starts_with("( cd '/a b' "));
    }

    #[test]
    fn states_parse_back() {
        for s in [
            SnapshotState::Creating,
            SnapshotState::Ready,
            SnapshotState::Failed,
            SnapshotState::Deleted,
        ] {
            assert_eq!(s.as_str().parse::<SnapshotState>().unwrap(), s);
        }
        assert!("paused".parse::<SnapshotState>().is_err());
    }
}
