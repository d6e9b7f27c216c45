//! The route's `config` table, validated. Pure.

use std::collections::BTreeMap;
use std::time::Duration;

use sandboxer_core::route_config::{self, one_of, string_list, unknown_key};
use sandboxer_core::Result;
use serde_json::Value;

use crate::COMPOSE_SSH_EXTENSION_ID;

/// `compose_file` when the profile does not say.
pub const DEFAULT_COMPOSE_FILE: &str = "docker-compose.e2e.yml";
/// `fallback_compose_files` when the profile does not say.
pub const DEFAULT_FALLBACK_COMPOSE_FILES: &[&str] = &["compose.yaml"];
/// `stop_timeout` when the profile does not say.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// What is always left out of the upload (unless a `!PATTERN` in `exclude`
/// keeps it): version control and the usual build outputs.
pub const DEFAULT_EXCLUDES: &[&str] = &[
    ".git",
    "target",
    "node_modules",
    "__pycache__",
    ".venv",
    "dist",
    "build",
];

/// Every key the `config` table may have.
pub const CONFIG_KEYS: &[&str] = &[
    "compose_file",
    "fallback_compose_files",
    "stop_timeout",
    "exclude",
    "compose_command",
    "env",
    "pause_mode",
];

/// How a stack is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PauseMode {
    /// `compose pause`: the processes are frozen (cgroup freezer) and keep
    /// their memory; resume is instant.
    #[default]
    Pause,
    /// `compose stop`: the containers stop and free their memory; resume
    /// starts them again (their processes start over, the files stay).
    Stop,
}

/// Which compose command to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ComposeChoice {
    /// Detect it on the host: `docker compose` (v2), else `docker-compose`
    /// (v1).
    #[default]
    Auto,
    /// Always `docker-compose` (v1).
    V1,
    /// Always `docker compose` (v2).
    V2,
}

/// The validated `config` table of an `ext.compose-ssh` route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeConfig {
    /// The compose file, relative to the repo root.
    pub compose_file: String,
    /// Tried in order when `compose_file` is not in the repo.
    pub fallback_compose_files: Vec<String>,
    /// `down -t`: how long containers get to stop before they are killed.
    pub stop_timeout: Duration,
    /// Patterns left out of the upload: [`DEFAULT_EXCLUDES`] plus the
    /// `exclude` key, less the `!PATTERN` entries.
    pub exclude: Vec<String>,
    /// `compose_command`.
    pub compose_command: ComposeChoice,
    /// Extra environment for every compose command (`${VAR}` in the
    /// compose file). The values are data: they are quoted.
    pub env: BTreeMap<String, String>,
    /// `pause_mode`: `"pause"` (default) or `"stop"`.
    pub pause_mode: PauseMode,
}

impl Default for ComposeConfig {
    fn default() -> Self {
        ComposeConfig {
            compose_file: DEFAULT_COMPOSE_FILE.to_string(),
            fallback_compose_files: DEFAULT_FALLBACK_COMPOSE_FILES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            exclude: DEFAULT_EXCLUDES.iter().map(|s| s.to_string()).collect(),
            compose_command: ComposeChoice::Auto,
            env: BTreeMap::new(),
            pause_mode: PauseMode::Pause,
        }
    }
}

impl ComposeConfig {
    /// Validate a route's `config` table. Every problem is reported at once,
    /// as one `InvalidConfig` error.
    pub fn from_map(map: &serde_json::Map<String, Value>) -> Result<ComposeConfig> {
        let mut cfg = ComposeConfig::default();
        let mut problems: Vec<String> = Vec::new();
        for (key, value) in map {
            match key.as_str() {
                "compose_file" => match value.as_str() {
                    Some(s) => match check_relative_path(s) {
                        Ok(()) => cfg.compose_file = s.to_string(),
                        Err(why) => problems.push(format!("`compose_file`: {why}")),
                    },
                    None => problems.push(format!(
                        "`compose_file` must be a string (a path in the repo), got {value}"
                    )),
                },
                "fallback_compose_files" => match string_list(value) {
                    Some(list) => {
                        cfg.fallback_compose_files.clear();
                        for s in list {
                            match check_relative_path(&s) {
                                Ok(()) => cfg.fallback_compose_files.push(s),
                                Err(why) => {
                                    problems.push(format!("`fallback_compose_files`: {why}"))
                                }
                            }
                        }
                    }
                    None => problems.push(format!(
                        "`fallback_compose_files` must be a list of strings, got {value}"
                    )),
                },
                "stop_timeout" => match route_config::duration(key, value, "5s") {
                    Ok(d) => cfg.stop_timeout = d,
                    Err(problem) => problems.push(problem),
                },
                "exclude" => match string_list(value) {
                    Some(list) => {
                        for pattern in list {
                            if let Err(why) = apply_exclude(&mut cfg.exclude, &pattern) {
                                problems.push(format!("`exclude`: {why}"));
                            }
                        }
                    }
                    None => problems.push(format!(
                        "`exclude` must be a list of patterns (strings), got {value}"
                    )),
                },
                "compose_command" => match one_of(
                    value,
                    &[
                        ("auto", ComposeChoice::Auto),
                        ("v1", ComposeChoice::V1),
                        ("v2", ComposeChoice::V2),
                    ],
                ) {
                    Some(c) => cfg.compose_command = c,
                    None => problems.push(format!(
                        "`compose_command` must be \"auto\", \"v1\" (docker-compose) or \"v2\" (docker compose), got {value}"
                    )),
                },
                "pause_mode" => match one_of(
                    value,
                    &[("pause", PauseMode::Pause), ("stop", PauseMode::Stop)],
                ) {
                    Some(m) => cfg.pause_mode = m,
                    None => problems.push(format!(
                        "`pause_mode` must be \"pause\" (freeze the processes) or \"stop\" (stop the containers, freeing their memory), got {value}"
                    )),
                },
                "env" => match value.as_object() {
                    Some(table) => {
                        for (name, v) in table {
                            if !is_env_name(name) {
                                problems.push(format!(
                                    "`env`: `{name}` is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)"
                                ));
                            } else if let Some(s) = v.as_str() {
                                cfg.env.insert(name.clone(), s.to_string());
                            } else {
                                problems.push(format!("`env.{name}` must be a string, got {v}"));
                            }
                        }
                    }
                    None => problems.push(format!(
                        "`env` must be a table of strings, got {value}"
                    )),
                },
                other => problems.push(unknown_key(other, CONFIG_KEYS)),
            }
        }
        route_config::check(
            COMPOSE_SSH_EXTENSION_ID,
            "sandboxer-ext-compose-ssh/README.md",
            problems,
        )?;
        Ok(cfg)
    }

    /// The compose files to look for in the repo, in order.
    pub fn compose_candidates(&self) -> Vec<&str> {
        let mut out = vec![self.compose_file.as_str()];
        for f in &self.fallback_compose_files {
            if !out.contains(&f.as_str()) {
                out.push(f);
            }
        }
        out
    }

    /// `stop_timeout` in whole seconds (what `down -t` takes).
    pub fn stop_timeout_secs(&self) -> u64 {
        self.stop_timeout.as_secs()
    }
}

/// A compose file path: relative, inside the repo, plain.
fn check_relative_path(s: &str) -> std::result::Result<(), String> {
    if s.trim().is_empty() {
        return Err("empty path".into());
    }
    if s.starts_with('/') {
        return Err(format!("`{s}` is absolute; give a path inside the repo"));
    }
    if s.split('/').any(|c| c == "..") {
        return Err(format!("`{s}` leaves the repo (`..`)"));
    }
    if s.ends_with('/') || s.chars().any(|c| c.is_control()) {
        return Err(format!("`{s}` is not a file path"));
    }
    Ok(())
}

/// Add `pattern` to the exclusions, or remove the default it names when it
/// starts with `!`.
fn apply_exclude(list: &mut Vec<String>, pattern: &str) -> std::result::Result<(), String> {
    if let Some(keep) = pattern.strip_prefix('!') {
        let before = list.len();
        list.retain(|p| p != keep);
        if list.len() == before {
            return Err(format!(
                "`{pattern}` keeps `{keep}`, which is not excluded (the defaults are {})",
                DEFAULT_EXCLUDES.join(", ")
            ));
        }
        return Ok(());
    }
    crate::upload::check_pattern(pattern)?;
    if !list.iter().any(|p| p == pattern) {
        list.push(pattern.to_string());
    }
    Ok(())
}

fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandboxer_core::ErrorKind;
    use serde_json::json;

    fn parse(v: Value) -> Result<ComposeConfig> {
        ComposeConfig::from_map(v.as_object().unwrap())
    }

    #[test]
    fn empty_table_gives_the_defaults() {
        let cfg = parse(json!({})).unwrap();
        assert_eq!(cfg, ComposeConfig::default());
        assert_eq!(
            cfg.compose_candidates(),
            ["docker-compose.e2e.yml", "compose.yaml"]
        );
        assert_eq!(cfg.stop_timeout_secs(), 5);
    }

    #[test]
    fn the_built_in_profile_config_parses() {
        let cfg = parse(json!({
            "compose_file": "docker-compose.e2e.yml",
            "fallback_compose_files": ["compose.yaml"],
            "stop_timeout": "5s",
        }))
        .unwrap();
        assert_eq!(cfg, ComposeConfig::default());
    }

    #[test]
    fn every_key_is_read() {
        let cfg = parse(json!({
            "compose_file": "e2e/stack.yml",
            "fallback_compose_files": ["compose.yml", "e2e/stack.yml"],
            "stop_timeout": "1m",
            "exclude": ["*.log", "data/cache", "!build"],
            "compose_command": "v2",
            "env": {"BIND_IP": "127.0.0.1"},
        }))
        .unwrap();
        assert_eq!(cfg.compose_candidates(), ["e2e/stack.yml", "compose.yml"]);
        assert_eq!(cfg.stop_timeout, Duration::from_secs(60));
        assert!(cfg.exclude.contains(&"*.log".to_string()));
        assert!(cfg.exclude.contains(&"data/cache".to_string()));
        assert!(!cfg.exclude.contains(&"build".to_string()));
        assert!(cfg.exclude.contains(&".git".to_string()));
        assert_eq!(cfg.compose_command, ComposeChoice::V2);
        assert_eq!(cfg.env["BIND_IP"], "127.0.0.1");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let e = parse(json!({
            "compose_file": "../outside.yml",
            "fallback_compose_files": "compose.yaml",
            "stop_timeout": "5",
            "exclude": ["!nothing"],
            "compose_command": "v3",
            "env": {"1BAD": "x", "OK": 1},
            "compse_file": "typo",
        }))
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        let m = e.message();
        assert!(m.contains("8 problems"), "{m}");
        for needle in [
            "`compose_file`: `../outside.yml` leaves the repo",
            "`fallback_compose_files` must be a list",
            "`stop_timeout`:",
            "`!nothing` keeps `nothing`",
            "`compose_command` must be",
            "`1BAD` is not an environment variable name",
            "`env.OK` must be a string",
            "unknown key `compse_file`",
        ] {
            assert!(m.contains(needle), "missing {needle:?} in {m}");
        }
    }

    #[test]
    fn absolute_and_empty_compose_files_are_refused() {
        for bad in ["/etc/compose.yml", "", "dir/"] {
            let e = parse(json!({ "compose_file": bad })).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{bad}");
        }
    }
}
