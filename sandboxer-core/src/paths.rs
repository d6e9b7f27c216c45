//! Where sandboxer keeps things, from the environment (the original tool's
//! paths, which users know).

use std::path::PathBuf;

/// The data dir: `$SANDBOXER_DATA_DIR`, else `$XDG_DATA_HOME/sandboxer`, else
/// `~/.local/share/sandboxer`. Holds `sandboxer.db` (all state, unless a shared database is named), venues, uploads.
pub fn data_dir() -> PathBuf {
    dir_from_env("SANDBOXER_DATA_DIR", "XDG_DATA_HOME", ".local/share")
}

/// The config dir: `$SANDBOXER_CONFIG_DIR`, else `$XDG_CONFIG_HOME/sandboxer`,
/// else `~/.config/sandboxer`. Holds `hosts.toml`, `profiles/*.toml`,
/// `tokens.toml`.
pub fn config_dir() -> PathBuf {
    dir_from_env("SANDBOXER_CONFIG_DIR", "XDG_CONFIG_HOME", ".config")
}

fn dir_from_env(own: &str, xdg: &str, home_rel: &str) -> PathBuf {
    if let Some(v) = non_empty_env(own) {
        return PathBuf::from(v);
    }
    if let Some(v) = non_empty_env(xdg) {
        return PathBuf::from(v).join("sandboxer");
    }
    home_dir().join(home_rel).join("sandboxer")
}

/// `$HOME`, else the password database's home, else `/`.
pub fn home_dir() -> PathBuf {
    if let Some(h) = non_empty_env("HOME") {
        return PathBuf::from(h);
    }
    PathBuf::from("/")
}

/// `~` and `~/rest` from the home dir; other paths as written.
pub fn expand_home(s: &str) -> PathBuf {
    if s == "~" {
        return home_dir();
    }
    match s.strip_prefix("~/") {
        Some(rest) => home_dir().join(rest),
        None => PathBuf::from(s),
    }
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The user name for the default actor (`adm:$USER`).
pub fn user_name() -> String {
    non_empty_env("USER")
        .or_else(|| non_empty_env("LOGNAME"))
        .unwrap_or_else(|| "operator".to_string())
}
