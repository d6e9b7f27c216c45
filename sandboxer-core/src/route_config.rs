//! Reading an extension's route `config` table (a profile route's
//! `[routes.config]`, as JSON): the value checks the extensions share and
//! the one `InvalidConfig` error that reports every problem at once.
//!
//! ```
//! use sandboxer_core::route_config::{check, int_in, one_of, unknown_key};
//! use serde_json::json;
//!
//! let mut problems = Vec::new();
//! assert_eq!(one_of(&json!("stop"), &[("pause", 1), ("stop", 2)]), Some(2));
//! assert_eq!(int_in(&json!(70000), 1, 65535), None);
//! problems.push(unknown_key("prot", &["port", "user"]));
//! let e = check("ext.x", "sandboxer-ext-x/README.md", problems).unwrap_err();
//! assert!(e.message().contains("unknown key `prot`; the keys are `port`, `user`"));
//! ```

use std::time::Duration;

use serde_json::Value;

use crate::{Error, Result};

/// The problem of a key that is not one of `keys`.
pub fn unknown_key(key: &str, keys: &[&str]) -> String {
    let keys: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
    format!("unknown key `{key}`; the keys are {}", keys.join(", "))
}

/// A list of strings, or `None`.
pub fn string_list(value: &Value) -> Option<Vec<String>> {
    value
        .as_array()?
        .iter()
        .map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// An integer from `lo` to `hi`, or `None`.
pub fn int_in(value: &Value, lo: i64, hi: i64) -> Option<i64> {
    value.as_i64().filter(|n| (lo..=hi).contains(n))
}

/// The choice `value` names among `options` (as written, the value), or
/// `None`.
pub fn one_of<T: Copy>(value: &Value, options: &[(&str, T)]) -> Option<T> {
    let s = value.as_str()?;
    options.iter().find(|(name, _)| *name == s).map(|(_, v)| *v)
}

/// A duration string (`"10s"`), or the problem with it, naming `key` and
/// showing `example`.
pub fn duration(key: &str, value: &Value, example: &str) -> std::result::Result<Duration, String> {
    match value.as_str().map(crate::duration::parse_duration) {
        Some(Ok(d)) => Ok(d),
        Some(Err(why)) => Err(format!("`{key}`: {why}")),
        None => Err(format!(
            "`{key}` must be a duration string such as \"{example}\", got {value}"
        )),
    }
}

/// Every problem found in `extension`'s route config as one `InvalidConfig`
/// error whose hint points at `readme`; `Ok` when there is none.
pub fn check(extension: &str, readme: &str, problems: Vec<String>) -> Result<()> {
    if problems.is_empty() {
        return Ok(());
    }
    Err(Error::invalid_config(format!(
        "the {extension} route config has {} problem{}:\n  - {}",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        problems.join("\n  - ")
    ))
    .with_hint(format!("see {readme} for the config keys")))
}
