//! [`ApiKey`]: the provider's API key, which never shows itself.

use std::fmt;

/// An API key. `Debug` and `Display` print `[redacted]`; the only way to the
/// text is [`ApiKey::expose`], called where the key goes on the wire (the
/// `X-API-Key` header) or is checked (the stub server). It is not
/// `Serialize`, so it cannot end up in a record or a log line by accident.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }

    /// The key itself. Call it only to put the key on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `candidate` is this key, compared in time that does not
    /// depend on where the two first differ.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let key = self.0.as_bytes();
        if key.len() != candidate.len() {
            return false;
        }
        key.iter()
            .zip(candidate)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_itself() {
        let key = ApiKey::new("s3cret-key");
        assert_eq!(format!("{key}"), "[redacted]");
        assert_eq!(format!("{key:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(key.clone())), "Some([redacted])");
        assert_eq!(key.expose(), "s3cret-key");
    }

    #[test]
    fn matches_only_itself() {
        let key = ApiKey::new("abc");
        assert!(key.matches(b"abc"));
        assert!(!key.matches(b"abd"));
        assert!(!key.matches(b"ab"));
        assert!(!key.matches(b"abcd"));
        assert!(!key.matches(b""));
    }
}
