//! API tokens, kept in sandboxer's database (`tokens`), so every `serve`
//! replica on a shared database knows the same tokens.
//!
//! Each token is bound to an actor. The secret (`sbxt_` and 32 lowercase
//! base32 characters, 160 random bits) is shown once, by `sandboxer tokens
//! add`; the database keeps only its SHA-256 hash, as hex.
//!
//! - Adds and revokes are transactions: concurrent `tokens add` lose
//!   nothing, and a server (any replica) sees them at its next request.
//! - A presented secret is hashed and looked up by its hash (an index on a
//!   hash of 160 random bits tells an attacker nothing), then compared in
//!   constant time; [`Secret`]'s `Debug` prints `[redacted]`, and nothing
//!   here logs a secret.
//! - The `tokens.toml` file of release 0.1 is imported once with the rest of
//!   the state (`sandboxer_stack::import`).

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sandboxer_core::model::Actor;
use sandboxer_core::store::db::{read, transact, Db, TokenRow};
use sandboxer_core::{Error, ErrorKind, Result};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

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

impl From<TokenRow> for TokenInfo {
    fn from(t: TokenRow) -> TokenInfo {
        TokenInfo {
            name: t.name,
            actor: t.actor,
            created_at: t.created_at,
        }
    }
}

/// The tokens in the database. Cheap to clone.
#[derive(Clone)]
pub struct TokenStore {
    db: Arc<dyn Db>,
}

impl fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenStore")
            .field("db", &self.db.location())
            .finish()
    }
}

impl TokenStore {
    /// The tokens kept in `db`.
    pub fn new(db: Arc<dyn Db>) -> TokenStore {
        TokenStore { db }
    }

    /// Where they are, for messages.
    pub fn location(&self) -> String {
        self.db.location()
    }

    /// Every token, oldest first (never a secret or hash).
    pub fn list(&self) -> Result<Vec<TokenInfo>> {
        let rows = read(self.db.as_ref(), |tx| tx.tokens())?;
        Ok(rows.into_iter().map(TokenInfo::from).collect())
    }

    /// Whether there is no token.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.list()?.is_empty())
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
        let row = TokenRow {
            name: name.clone(),
            actor: actor.clone(),
            hash: hex::encode(digest(secret.expose())),
            created_at: sandboxer_core::model::now(),
        };
        transact(self.db.as_ref(), |tx| tx.put_token(&row)).map_err(|e| {
            if e.kind() == ErrorKind::Conflict {
                Error::conflict(format!("a token named `{name}` exists"))
                    .with_hint("pick another --name, or `sandboxer tokens revoke` the old one")
            } else {
                e
            }
        })?;
        Ok((TokenInfo::from(row), secret))
    }

    /// Remove the token called `name`.
    pub fn revoke(&self, name: &str) -> Result<TokenInfo> {
        transact(self.db.as_ref(), |tx| {
            let found = tx.tokens()?.into_iter().find(|t| t.name == name);
            match found {
                Some(t) if tx.remove_token(name)? => Ok(TokenInfo::from(t)),
                _ => Err(Error::not_found(format!("no token named `{name}`"))
                    .with_hint("`sandboxer tokens list` shows the names")),
            }
        })
    }

    /// The token whose secret is `presented`, or `None`.
    pub fn authenticate(&self, presented: &str) -> Result<Option<TokenInfo>> {
        let want = hex::encode(digest(presented));
        let row = read(self.db.as_ref(), |tx| tx.token_by_hash(&want))?;
        Ok(row
            .filter(|t| bool::from(t.hash.as_bytes().ct_eq(want.as_bytes())))
            .map(TokenInfo::from))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, TokenStore) {
        let d = tempfile::tempdir().unwrap();
        let db = sandboxer_store::open(None, d.path()).unwrap();
        (d, TokenStore::new(db))
    }

    #[test]
    fn a_token_is_shown_once_and_only_its_hash_is_kept() {
        let (d, s) = store();
        assert!(s.is_empty().unwrap());
        let actor: Actor = "agt:harness".parse().unwrap();
        let (info, secret) = s.add(&actor, None).unwrap();
        assert!(secret.expose().starts_with(PREFIX));
        assert_eq!(secret.expose().len(), PREFIX.len() + 32);
        assert_eq!(format!("{secret:?}"), "[redacted]");
        let rows = read(s.db.as_ref(), |tx| tx.tokens()).unwrap();
        assert_eq!(rows[0].hash, hex::encode(digest(secret.expose())));
        // Not in the database file, nor its write-ahead log.
        for f in ["sandboxer.db", "sandboxer.db-wal"] {
            let bytes = std::fs::read(d.path().join(f)).unwrap_or_default();
            let needle = secret.expose().as_bytes();
            assert!(!bytes.windows(needle.len()).any(|w| w == needle), "{f}");
        }
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
        let server = TokenStore::new(sandboxer_store::open(None, d.path()).unwrap());
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
        assert_eq!(e.kind(), ErrorKind::Conflict);
        assert!(e.message().contains("`two` exists"), "{}", e.message());
        let e = s.revoke("nope").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        let e = s.add(&a, Some("bad name")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
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
}
