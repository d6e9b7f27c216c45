//! What both sides of sandboxer's E2B protocol share: the `metadata` filter
//! of E2B's list routes, as the E2B SDKs write it and E2B's server reads
//! it (each key and value URL-encoded, then the pairs form-encoded). The
//! HTTP API's front door reads it; `ext.saas-stub` writes it.
//!
//! ```
//! use sandboxer_core::e2b::{metadata_query, parse_metadata_query};
//!
//! let q = metadata_query(&[("sandboxer_id", "sbx-a"), ("k", "a b&c")]);
//! assert_eq!(q, "sandboxer_id=sbx-a&k=a%2520b%2526c");
//! assert_eq!(
//!     parse_metadata_query(&q).unwrap(),
//!     [("sandboxer_id".into(), "sbx-a".into()), ("k".into(), "a b&c".into())]
//! );
//! ```

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};

/// What Python's `urllib.parse.quote` leaves as it is (the E2B SDK's).
const QUOTE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'.')
    .remove(b'-')
    .remove(b'~')
    .remove(b'/');

/// The `metadata` query parameter for these pairs.
pub fn metadata_query(pairs: &[(&str, &str)]) -> String {
    let quoted: Vec<(String, String)> = pairs.iter().map(|(k, v)| (quote(k), quote(v))).collect();
    serde_urlencoded::to_string(quoted).unwrap_or_default()
}

/// The pairs of a `metadata` query parameter (its value once the query
/// string is decoded); an error says what does not decode.
pub fn parse_metadata_query(q: &str) -> Result<Vec<(String, String)>, String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q).map_err(|e| e.to_string())?;
    pairs
        .into_iter()
        .map(|(k, v)| Ok((unquote(&k)?, unquote(&v)?)))
        .collect()
}

fn quote(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, QUOTE).to_string()
}

fn unquote(s: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|e| format!("`{s}` is not UTF-8 once decoded: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_what_needs_quoting() {
        for (k, v) in [("a b", "c&d=e"), ("ü", "%41"), ("x", "")] {
            let q = metadata_query(&[(k, v)]);
            assert_eq!(
                parse_metadata_query(&q).unwrap(),
                [(k.to_string(), v.to_string())],
                "{q}"
            );
        }
        assert!(parse_metadata_query("k=%25FF").is_err());
    }
}
