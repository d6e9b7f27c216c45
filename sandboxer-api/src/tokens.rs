//! API tokens: `tokens.toml` in the config dir.
//!
//! Each token is bound to an actor. The secret (`sbxt_` and 32 lowercase
//! base32 characters, 160 random bits) is shown once, by `sandboxer tokens
//! add`; the file keeps only its SHA-256 hash:
//!
//! ```toml
//! [[tokens]]
//! name = "harness-k2m4qa"
//! actor = "agt:harness"
//! hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! created_at = "2026-11-28T14:30:00.000Z"
//! ```
//!
//! - Changes (add, revoke) take an exclusive lock on `tokens.lock` beside the
//!   file, re-read it, and replace it atomically (temp file with mode 0600,
//!   fsync, rename, fsync the folder), so concurrent `tokens add` lose nothing.
//! - A running server notices a changed file (size, mtime, inode) at the next
//!   request and re-reads it: a new token works and a revoked one stops
//!   working without a restart. A file that does not parse refuses every
//!   token (fail closed) and names file, line and column.
//! - Hashes are compared in constant time; [`Secret`]'s `Debug` prints
//!   `[redacted]`, and nothing here logs a secret.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SecondsFormat, Utc};
use sandboxer_core::model::Actor;
use sandboxer_core::{Error, Result};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;
use toml::Spanned;

/// The tokens file's name in the config dir.
pub const FILE_NAME: &str = "tokens.toml";
/// The lock file beside it.
pub const LOCK_NAME: &str = "tokens.lock";
/// Every secret starts with this.
pub const PREFIX: &str = "sbxt_";

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";

/// A token's secret (a `secrecy` box: wiped from memory when dropped).
/// Shown once; its `Debug` never shows it.
pub struct Secret(SecretString);

impl Secret {
    fn generate() -> Secret {
        use rand::Rng;
        let mut rng = rand::thread_rng();
        let tail: String = (0..32)
            .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
            .collect();
        Secret(SecretString::from(format!("{PREFIX}{tail}")))
    }

    /// The secret itself, to show the user once.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// What is known about a token besides its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    pub name: String,
    pub actor: Actor,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone)]
struct Stored {
    info: TokenInfo,
    hash: [u8; 32],
}

impl fmt::Debug for Stored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stored")
            .field("info", &self.info)
            .field("hash", &"[redacted]")
            .finish()
    }
}

/// What identifies one version of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
    ino: u64,
}

#[derive(Debug, Default)]
struct Cache {
    /// `None`: no file (no tokens), or not read yet when `loaded` is false.
    stamp: Option<Stamp>,
    loaded: bool,
    tokens: Vec<Stored>,
}

/// `tokens.toml`: read, changed and checked. Cheap to clone (shared cache).
#[derive(Debug, Clone)]
pub struct TokenStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    lock_path: PathBuf,
    cache: Mutex<Cache>,
}

impl TokenStore {
    /// The tokens of `config_dir/tokens.toml` (a missing file is no tokens).
    pub fn in_config_dir(config_dir: &Path) -> TokenStore {
        TokenStore {
            inner: Arc::new(Inner {
                path: config_dir.join(FILE_NAME),
                lock_path: config_dir.join(LOCK_NAME),
                cache: Mutex::new(Cache::default()),
            }),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Every token, in file order (never a secret or hash).
    pub fn list(&self) -> Result<Vec<TokenInfo>> {
        Ok(self.refresh()?.into_iter().map(|s| s.info).collect())
    }

    /// Whether the file has no token.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.refresh()?.is_empty())
    }

    /// Make a token for `actor`, named `name` (default: generated). Returns
    /// the secret, which is not kept anywhere.
    pub fn add(&self, actor: &Actor, name: Option<&str>) -> Result<(TokenInfo, Secret)> {
        let name = match name {
            Some(n) => {
                check_name(n)?;
                n.to_string()
            }
            None => default_name(actor),
        };
        let secret = Secret::generate();
        let info = TokenInfo {
            name: name.clone(),
            actor: actor.clone(),
            created_at: sandboxer_core::model::now(),
        };
        let stored = Stored {
            info: info.clone(),
            hash: digest(secret.expose()),
        };
        self.change(|tokens| {
            if tokens.iter().any(|t| t.info.name == name) {
                return Err(Error::conflict(format!("a token named `{name}` exists"))
                    .with_hint("pick another --name, or `sandboxer tokens revoke` the old one"));
            }
            tokens.push(stored);
            Ok(())
        })?;
        Ok((info, secret))
    }

    /// Remove the token called `name`.
    pub fn revoke(&self, name: &str) -> Result<TokenInfo> {
        let mut removed = None;
        self.change(|tokens| {
            let Some(i) = tokens.iter().position(|t| t.info.name == name) else {
                return Err(Error::not_found(format!("no token named `{name}`"))
                    .with_hint("`sandboxer tokens list` shows the names"));
            };
            removed = Some(tokens.remove(i).info);
            Ok(())
        })?;
        removed.ok_or_else(|| Error::internal("revoke removed nothing"))
    }

    /// The token whose secret is `presented`, or `None`. Every stored hash
    /// is compared, in constant time. Re-reads the file when it changed; a
    /// file that does not parse is an error (no token is accepted then).
    pub fn authenticate(&self, presented: &str) -> Result<Option<TokenInfo>> {
        let tokens = self.refresh()?;
        let hash = digest(presented);
        let mut found = None;
        for t in &tokens {
            if bool::from(t.hash.ct_eq(&hash)) {
                found = Some(t.info.clone());
            }
        }
        Ok(found)
    }

    /// The current tokens, re-read when the file changed.
    fn refresh(&self) -> Result<Vec<Stored>> {
        let mut cache = self.inner.cache.lock().unwrap_or_else(|p| p.into_inner());
        let stamp = stamp_of(&self.inner.path)?;
        if cache.loaded && cache.stamp == stamp {
            return Ok(cache.tokens.clone());
        }
        let tokens = match stamp {
            None => Vec::new(),
            Some(_) => read_file(&self.inner.path)?.unwrap_or_default(),
        };
        cache.stamp = stamp;
        cache.loaded = true;
        cache.tokens = tokens.clone();
        Ok(tokens)
    }

    /// Read-modify-write under the lock, replacing the file atomically.
    fn change(&self, f: impl FnOnce(&mut Vec<Stored>) -> Result<()>) -> Result<()> {
        let dir = self.inner.path.parent().unwrap_or(Path::new("."));
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder
            .create(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&self.inner.lock_path)
            .map_err(|e| Error::io(format!("opening {}", self.inner.lock_path.display()), e))?;
        lock.lock()
            .map_err(|e| Error::io(format!("locking {}", self.inner.lock_path.display()), e))?;
        let result = (|| {
            let mut tokens = read_file(&self.inner.path)?.unwrap_or_default();
            f(&mut tokens)?;
            write_file(&self.inner.path, &tokens)
        })();
        let _ = lock.unlock();
        // The next read sees the new file by its stamp.
        result
    }
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn check_name(n: &str) -> Result<()> {
    if n.is_empty()
        || n.len() > 64
        || !n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
    {
        return Err(Error::invalid_input(format!("bad token name `{n}`"))
            .with_hint("a token name is 1 to 64 letters, digits, `.`, `_`, `-` or `@`"));
    }
    Ok(())
}

fn default_name(actor: &Actor) -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let tail: String = (0..6)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    let base: String = actor.name.chars().take(57).collect();
    format!("{base}-{tail}")
}

fn stamp_of(path: &Path) -> Result<Option<Stamp>> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(Stamp {
            len: m.len(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            ino: m.ino(),
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    #[serde(default)]
    tokens: Vec<Spanned<TokenToml>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenToml {
    name: Spanned<String>,
    actor: Spanned<String>,
    hash: Spanned<String>,
    created_at: Spanned<String>,
}

/// The file's tokens; `None` when there is no file.
fn read_file(path: &Path) -> Result<Option<Vec<Stored>>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    parse(path, &text).map(Some)
}

/// Parse `tokens.toml`; every problem is reported at once with
/// `FILE:LINE:COLUMN`.
pub fn parse_tokens(path: &Path, text: &str) -> Result<Vec<TokenInfo>> {
    Ok(parse(path, text)?.into_iter().map(|s| s.info).collect())
}

fn parse(path: &Path, text: &str) -> Result<Vec<Stored>> {
    let hint = "each [[tokens]] table has name, actor, hash (64 hex digits) and created_at \
                (RFC 3339); `sandboxer tokens add` writes them";
    let at = |offset: usize| {
        let (line, col) = line_col(text, offset);
        format!("{}:{line}:{col}", path.display())
    };
    let file: FileToml = toml::from_str(text).map_err(|e| {
        let place = e
            .span()
            .map(|s| at(s.start))
            .unwrap_or_else(|| path.display().to_string());
        Error::invalid_config(format!("{place}: {}", e.message().trim())).with_hint(hint)
    })?;
    let mut problems = Vec::new();
    let mut out: Vec<Stored> = Vec::new();
    for t in file.tokens {
        let t = t.into_inner();
        let name = t.name.get_ref();
        if check_name(name).is_err() {
            problems.push(format!(
                "{}: bad token name `{name}` (1 to 64 letters, digits, `.`, `_`, `-`, `@`)",
                at(t.name.span().start)
            ));
        } else if out.iter().any(|o| &o.info.name == name) {
            problems.push(format!(
                "{}: a second token named `{name}`",
                at(t.name.span().start)
            ));
        }
        let actor = match t.actor.get_ref().parse::<Actor>() {
            Ok(a) => Some(a),
            Err(e) => {
                problems.push(format!("{}: {}", at(t.actor.span().start), e.message()));
                None
            }
        };
        let hash = t.hash.get_ref();
        let bytes = hex::decode(hash).ok().filter(|b| b.len() == 32);
        if bytes.is_none() {
            problems.push(format!(
                "{}: `hash` is not 64 hex digits (a SHA-256)",
                at(t.hash.span().start)
            ));
        }
        let created = match DateTime::parse_from_rfc3339(t.created_at.get_ref()) {
            Ok(d) => Some(d.with_timezone(&Utc)),
            Err(e) => {
                problems.push(format!(
                    "{}: `created_at` is not an RFC 3339 time ({e})",
                    at(t.created_at.span().start)
                ));
                None
            }
        };
        if let (Some(actor), Some(bytes), Some(created_at)) = (actor, bytes, created) {
            let mut hash = [0u8; 32];
            hash.copy_from_slice(&bytes);
            out.push(Stored {
                info: TokenInfo {
                    name: name.clone(),
                    actor,
                    created_at,
                },
                hash,
            });
        }
    }
    if !problems.is_empty() {
        return Err(Error::invalid_config(problems.join("\n")).with_hint(hint));
    }
    Ok(out)
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[derive(Serialize)]
struct FileOut<'a> {
    tokens: Vec<TokenOut<'a>>,
}

#[derive(Serialize)]
struct TokenOut<'a> {
    name: &'a str,
    actor: String,
    hash: String,
    created_at: String,
}

const HEADER: &str = "\
# sandboxer HTTP API tokens; change them with `sandboxer tokens add|list|revoke`.
# Only the SHA-256 of each secret is kept: the secret was shown once.

";

fn write_file(path: &Path, tokens: &[Stored]) -> Result<()> {
    let doc = FileOut {
        tokens: tokens
            .iter()
            .map(|t| TokenOut {
                name: &t.info.name,
                actor: t.info.actor.to_string(),
                hash: hex::encode(t.hash),
                created_at: t
                    .info
                    .created_at
                    .to_rfc3339_opts(SecondsFormat::Millis, true),
            })
            .collect(),
    };
    let body =
        toml::to_string(&doc).map_err(|e| Error::internal(format!("writing tokens.toml: {e}")))?;
    let text = format!("{HEADER}{body}");
    sandboxer_core::fsutil::replace(path, 0o600, text.as_bytes())
        .map_err(|e| Error::io(format!("replacing {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, TokenStore) {
        let d = tempfile::tempdir().unwrap();
        let s = TokenStore::in_config_dir(&d.path().join("config"));
        (d, s)
    }

    #[test]
    fn a_token_is_shown_once_and_only_its_hash_is_kept() {
        let (_d, s) = store();
        assert!(s.is_empty().unwrap());
        let actor: Actor = "agt:harness".parse().unwrap();
        let (info, secret) = s.add(&actor, None).unwrap();
        assert!(secret.expose().starts_with(PREFIX));
        assert_eq!(secret.expose().len(), PREFIX.len() + 32);
        assert_eq!(format!("{secret:?}"), "[redacted]");
        let text = fs::read_to_string(s.path()).unwrap();
        assert!(!text.contains(secret.expose()));
        assert!(text.contains(&hex::encode(digest(secret.expose()))));
        let mode = fs::metadata(s.path()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            s.authenticate(secret.expose()).unwrap().as_ref(),
            Some(&info)
        );
        assert_eq!(s.authenticate("sbxt_wrong").unwrap(), None);
        assert_eq!(s.authenticate("").unwrap(), None);
        assert_eq!(s.list().unwrap(), vec![info]);
    }

    #[test]
    fn another_handle_sees_adds_and_revokes_without_restarting() {
        let (d, s) = store();
        let server = TokenStore::in_config_dir(&d.path().join("config"));
        assert!(server.is_empty().unwrap());
        let a: Actor = "adm:ops".parse().unwrap();
        let (_, one) = s.add(&a, Some("one")).unwrap();
        let (_, two) = s.add(&a, Some("two")).unwrap();
        assert!(server.authenticate(one.expose()).unwrap().is_some());
        s.revoke("one").unwrap();
        assert!(server.authenticate(one.expose()).unwrap().is_none());
        assert_eq!(
            server.authenticate(two.expose()).unwrap().unwrap().name,
            "two"
        );
        let e = s.add(&a, Some("two")).unwrap_err();
        assert_eq!(e.kind(), sandboxer_core::ErrorKind::Conflict);
        let e = s.revoke("nope").unwrap_err();
        assert_eq!(e.kind(), sandboxer_core::ErrorKind::NotFound);
        let e = s.add(&a, Some("bad name")).unwrap_err();
        assert_eq!(e.kind(), sandboxer_core::ErrorKind::InvalidInput);
    }

    #[test]
    fn concurrent_adds_lose_nothing() {
        let (_d, s) = store();
        let a: Actor = "atm:ci".parse().unwrap();
        std::thread::scope(|scope| {
            for i in 0..8 {
                let s = s.clone();
                let a = a.clone();
                scope.spawn(move || s.add(&a, Some(&format!("t{i}"))).unwrap());
            }
        });
        assert_eq!(s.list().unwrap().len(), 8);
    }

    #[test]
    fn a_broken_file_names_every_problem_with_its_line_and_refuses_all_tokens() {
        let (d, s) = store();
        let (_, secret) = s.add(&"adm:ops".parse().unwrap(), Some("ok")).unwrap();
        let text = fs::read_to_string(s.path()).unwrap();
        let broken = format!(
            "{text}\n[[tokens]]\nname = \"ok\"\nactor = \"boss:x\"\nhash = \"xyz\"\ncreated_at = \"yesterday\"\n"
        );
        fs::write(s.path(), &broken).unwrap();
        let e = s.authenticate(secret.expose()).unwrap_err();
        assert_eq!(e.kind(), sandboxer_core::ErrorKind::InvalidConfig);
        let msg = e.message();
        let file = d.path().join("config").join(FILE_NAME);
        let name_line = broken
            .lines()
            .enumerate()
            .filter(|(_, l)| *l == "name = \"ok\"")
            .nth(1)
            .unwrap()
            .0
            + 1;
        for (k, what) in [
            (0, "second token"),
            (1, "bad actor"),
            (2, "hash"),
            (3, "created_at"),
        ] {
            let line = name_line + k;
            assert!(
                msg.contains(&format!("{}:{line}:", file.display())) && msg.contains(what),
                "{what} at line {line} in:\n{msg}"
            );
        }

        fs::write(s.path(), "[[tokens]]\nname = \"a\"\nsecret = 1\n").unwrap();
        let e = s.list().unwrap_err();
        assert!(e.message().contains(":3:"), "{}", e.message());
        assert!(e.message().contains("secret"), "{}", e.message());
    }
}
