//! Repos uploaded over HTTP: a caller of `sandboxer serve` cannot name a
//! path on the server, so it uploads its repo (`POST /v1/uploads`, unpacked
//! by `sandboxer-api` into `<data dir>/uploads/upl-...`) and refers to the
//! upload in a create as the input value `upload:upl-...`.
//!
//! - An upload belongs to the actor that made it; another actor's upload is
//!   the same "no upload" as one that does not exist.
//! - [`UploadRecord`]s live in the database (`uploads`), changed in the
//!   same transactions as the sandboxes that use them: a create that names an
//!   upload adds its id to `used_by` in the commit that records it.
//! - An upload is removed when every sandbox that used it has ended, or,
//!   never used, once it is older than the unused retention
//!   ([`DEFAULT_UNUSED_RETENTION`]). The reaper does it
//!   (`Manager::sweep_uploads`), and also removes folders under the uploads
//!   dir that have no record (a crash between unpacking and recording).
//!
//! ```
//! use sandboxer_core::uploads::{is_upload_id, new_upload_id, upload_ref};
//!
//! let id = new_upload_id();
//! assert!(is_upload_id(&id));
//! assert_eq!(upload_ref(&format!("upload:{id}")), Some(id.as_str()));
//! assert_eq!(upload_ref("/home/me/repo"), None);
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::manager::Manager;
use crate::model::{self, Actor};
use crate::store::db::{read, transact, Tx};
use crate::{Error, Result};

/// How an input value names an upload: `upload:upl-...`.
pub const UPLOAD_REF_PREFIX: &str = "upload:";

/// The folder under the data dir that holds the unpacked uploads.
pub const UPLOADS_DIR: &str = "uploads";

/// How long an upload no sandbox has used is kept.
pub const DEFAULT_UNUSED_RETENTION: Duration = Duration::from_secs(60 * 60);

/// One uploaded repo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UploadRecord {
    /// `upl-...`
    #[schemars(regex(pattern = r"^upl-[a-z0-9]+$"))]
    pub id: String,
    /// Who uploaded it; only this actor's creates may use it.
    pub actor: Actor,
    pub created_at: DateTime<Utc>,
    /// Regular files unpacked.
    pub files: u64,
    /// Their total size in bytes.
    pub bytes: u64,
    /// The sandboxes created from it (a recreation adds its new id).
    #[serde(default)]
    pub used_by: Vec<String>,
}

/// A fresh upload id: `upl-` and 10 characters of base32.
pub fn new_upload_id() -> String {
    format!("upl-{}", &crate::model::new_sandbox_id()["sbx-".len()..])
}

/// Whether `s` has the shape of an upload id (plain enough to be a folder
/// name).
pub fn is_upload_id(s: &str) -> bool {
    s.strip_prefix("upl-").is_some_and(|t| {
        !t.is_empty()
            && t.len() <= 32
            && t.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    })
}

/// The upload id an input value names (`upload:upl-...`), if it names one.
pub fn upload_ref(value: &str) -> Option<&str> {
    value
        .strip_prefix(UPLOAD_REF_PREFIX)
        .filter(|id| is_upload_id(id))
}

/// Whether an input value is meant as an upload reference (it starts with
/// `upload:`), well-formed or not.
pub fn looks_like_upload_ref(value: &str) -> bool {
    value.starts_with(UPLOAD_REF_PREFIX)
}

/// The `InvalidInput` for an upload that the actor cannot use: missing, of
/// another actor, or already removed all read the same.
pub fn no_such_upload(value: &str) -> crate::Error {
    crate::Error::invalid_input(format!("no upload `{value}`"))
        .with_hint("upload the repo with `POST /v1/uploads` and use the `use_as` value it answers (`upload:upl-...`)")
}

/// The uploads a create's `inputs` name, each checked to exist and to be
/// `actor`'s (else [`no_such_upload`]). Called inside the commit that
/// records the sandbox, which then adds itself to their `used_by`.
pub(crate) fn claim(
    tx: &mut dyn Tx,
    inputs: &BTreeMap<String, String>,
    actor: &Actor,
) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    for value in inputs.values().filter(|v| looks_like_upload_ref(v)) {
        let id = upload_ref(value).ok_or_else(|| no_such_upload(value))?;
        match tx.upload(id)? {
            Some(u) if &u.actor == actor => ids.push(id.to_string()),
            _ => return Err(no_such_upload(value)),
        }
    }
    Ok(ids)
}

/// An upload the sweep removed (or, dry, would remove).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct SweptUpload {
    pub id: String,
    /// The owner; `None` for a folder that had no record.
    pub actor: Option<Actor>,
    /// Why, for people.
    pub detail: String,
}

/// Whether `s` has ended (destroyed, or failed: a failed sandbox's
/// recreation would need the upload again, which is then to be made anew).
fn ended(s: &crate::model::Sandbox) -> bool {
    matches!(
        s.state(),
        crate::lifecycle::State::Destroyed | crate::lifecycle::State::Failed
    )
}

/// Whether the upload `u` is still needed: a sandbox that used it has not
/// ended, or nothing used it yet and it is younger than `unused_for`.
fn still_needed(
    tx: &mut dyn Tx,
    u: &UploadRecord,
    now: DateTime<Utc>,
    unused_for: Duration,
) -> Result<Option<String>> {
    if u.used_by.is_empty() {
        let age = (now - u.created_at).to_std().unwrap_or_default();
        return Ok((age >= unused_for).then(|| {
            format!(
                "never used in {}",
                crate::duration::format_duration(unused_for)
            )
        }));
    }
    for id in &u.used_by {
        if let Some(s) = tx.sandbox(id)? {
            if !ended(&s) {
                return Ok(None);
            }
        }
    }
    Ok(Some(format!(
        "every sandbox that used it has ended ({})",
        u.used_by.join(", ")
    )))
}

impl Manager {
    /// The inputs an extension gets: an `upload:upl-...` value becomes the
    /// folder the upload was unpacked to.
    pub(crate) fn resolve_uploads(
        &self,
        inputs: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        let Some(dir) = &self.uploads_dir else {
            return inputs.clone();
        };
        inputs
            .iter()
            .map(|(k, v)| match upload_ref(v) {
                Some(id) => (k.clone(), dir.join(id).display().to_string()),
                None => (k.clone(), v.clone()),
            })
            .collect()
    }

    /// The folder uploads are unpacked to, or `Unsupported` when this
    /// manager takes none.
    pub fn uploads_dir(&self) -> Result<&Path> {
        self.uploads_dir
            .as_deref()
            .ok_or_else(|| Error::unsupported("this manager takes no uploads"))
    }

    /// Record an upload unpacked to `uploads_dir()/ID`.
    pub fn record_upload(&self, rec: UploadRecord) -> Result<UploadRecord> {
        transact(self.db().as_ref(), |tx| {
            if tx.upload(&rec.id)?.is_some() {
                return Err(Error::conflict(format!("upload {} exists", rec.id)));
            }
            tx.put_upload(&rec)?;
            Ok(rec)
        })
    }

    /// Uploads, oldest first; only `actor`'s when given.
    pub fn uploads(&self, actor: Option<&Actor>) -> Result<Vec<UploadRecord>> {
        let mut list = read(self.db().as_ref(), |tx| tx.uploads(actor))?;
        list.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(list)
    }

    /// Delete an upload. `actor` (unless `None`, an operator) must own it:
    /// another actor's is the same `NotFound` as a missing one. An upload a
    /// live sandbox still uses is a `Conflict`.
    pub fn delete_upload(&self, id: &str, actor: Option<&Actor>) -> Result<UploadRecord> {
        let not_found = || {
            Error::not_found(format!("no upload `{id}`"))
                .with_hint("`GET /v1/uploads` lists your uploads")
        };
        let rec = transact(self.db().as_ref(), |tx| {
            let u = match tx.upload(id)? {
                Some(u) if actor.is_none_or(|a| &u.actor == a) => u,
                _ => return Err(not_found()),
            };
            for sid in &u.used_by {
                if tx.sandbox(sid)?.is_some_and(|s| !ended(&s)) {
                    return Err(
                        Error::conflict(format!("upload {id} is in use by sandbox {sid}"))
                            .with_hint("it is removed by itself once its sandboxes end"),
                    );
                }
            }
            tx.remove_upload(id)?;
            Ok(u)
        })?;
        self.remove_upload_dir(id)?;
        Ok(rec)
    }

    fn remove_upload_dir(&self, id: &str) -> Result<()> {
        let Some(dir) = &self.uploads_dir else {
            return Ok(());
        };
        if !is_upload_id(id) && !id.starts_with(PARTIAL_PREFIX) {
            return Ok(());
        }
        let path = dir.join(id);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
        }
    }

    /// Remove the uploads no longer needed (see [`still_needed`]), only
    /// those named in `only` when given, and the folders under the uploads
    /// dir that have no record and are older than `grace` (a crash between
    /// unpacking and recording). With `dry_run`, only say which.
    pub fn sweep_uploads(
        &self,
        only: Option<&[String]>,
        unused_for: Duration,
        grace: Duration,
        dry_run: bool,
    ) -> Result<Vec<SweptUpload>> {
        if self.uploads_dir.is_none() {
            return Ok(Vec::new());
        }
        let now = model::now();
        let pick = |tx: &mut dyn Tx| -> Result<Vec<SweptUpload>> {
            let mut out = Vec::new();
            for u in tx.uploads(None)? {
                if only.is_some_and(|o| !o.contains(&u.id)) {
                    continue;
                }
                if let Some(detail) = still_needed(tx, &u, now, unused_for)? {
                    out.push(SweptUpload {
                        id: u.id.clone(),
                        actor: Some(u.actor.clone()),
                        detail,
                    });
                }
            }
            Ok(out)
        };
        let mut swept = if dry_run {
            read(self.db().as_ref(), pick)?
        } else {
            transact(self.db().as_ref(), |tx| {
                let out = pick(tx)?;
                for s in &out {
                    tx.remove_upload(&s.id)?;
                }
                Ok(out)
            })?
        };
        if !dry_run {
            for s in &swept {
                self.remove_upload_dir(&s.id)?;
            }
        }
        if only.is_none() {
            swept.extend(self.orphan_upload_dirs(grace, dry_run)?);
        }
        Ok(swept)
    }

    /// Folders under the uploads dir with no record, older than `grace`.
    fn orphan_upload_dirs(&self, grace: Duration, dry_run: bool) -> Result<Vec<SweptUpload>> {
        let dir = self.uploads_dir()?;
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("reading {}", dir.display()), e)),
        };
        let known: std::collections::BTreeSet<String> =
            read(self.db().as_ref(), |tx| tx.uploads(None))?
                .into_iter()
                .map(|u| u.id)
                .collect();
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let partial = name.starts_with(PARTIAL_PREFIX);
            if !(is_upload_id(&name) || partial) || known.contains(&name) {
                continue;
            }
            let age = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .unwrap_or_default();
            if age < grace {
                continue;
            }
            if !dry_run {
                self.remove_upload_dir(&name)?;
            }
            out.push(SweptUpload {
                id: name,
                actor: None,
                detail: if partial {
                    "an upload that never finished".into()
                } else {
                    "a folder with no upload record".into()
                },
            });
        }
        Ok(out)
    }

    /// After `sbx` ended: remove the uploads it used that nothing needs now.
    pub(crate) fn release_uploads(&self, sbx: &crate::model::Sandbox) -> Result<()> {
        let ids: Vec<String> = sbx
            .inputs
            .values()
            .filter_map(|v| upload_ref(v).map(str::to_string))
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        self.sweep_uploads(Some(&ids), self.upload_retention, Duration::ZERO, false)
            .map(|_| ())
    }
}

/// The name prefix of a folder an upload is unpacked into before it is
/// complete (then renamed to its id).
pub const PARTIAL_PREFIX: &str = ".partial-";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_refs() {
        for _ in 0..50 {
            let id = new_upload_id();
            assert!(is_upload_id(&id), "{id}");
            assert!(!crate::model::is_sandbox_id(&id));
        }
        assert!(!is_upload_id("upl-"));
        assert!(!is_upload_id("upl-../x"));
        assert!(!is_upload_id("upl-ABC"));
        assert!(!is_upload_id("sbx-abc"));
        assert_eq!(upload_ref("upload:upl-abc2"), Some("upl-abc2"));
        assert_eq!(upload_ref("upload:upl-../../etc"), None);
        assert_eq!(upload_ref("upl-abc2"), None);
        assert!(looks_like_upload_ref("upload:whatever"));
        assert!(!looks_like_upload_ref("/srv/repo"));
    }
}
