//! Raw TOML walk for profiles and hosts files (placeholder, being written).
use std::path::Path;

use super::Profile;
use crate::hosts::Hosts;
use crate::Result;

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub path: std::path::PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub hint: Option<String>,
}

pub fn parse_profile(_path: &Path, _text: &str, _source: super::ProfileSource) -> Result<Profile> {
    Err(crate::Error::internal("profile parsing not written yet"))
}

pub fn parse_hosts_toml(_path: &Path, _text: &str) -> Result<Hosts> {
    Err(crate::Error::internal("hosts parsing not written yet"))
}
