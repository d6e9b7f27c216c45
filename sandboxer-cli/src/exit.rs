//! Exit codes and error rendering. Only this crate prints or exits.

use std::io::Write;

use sandboxer_core::{Error, ErrorKind};

/// The documented exit codes (also in `sandboxer --help` and the README).
pub mod code {
    pub const OK: i32 = 0;
    /// An unexpected internal or I/O error.
    pub const INTERNAL: i32 = 1;
    /// Bad command-line usage (unknown flag, missing argument).
    pub const USAGE: i32 = 2;
    /// No such sandbox, profile or host.
    pub const NOT_FOUND: i32 = 3;
    /// Invalid input or configuration (input, TTL, actor, amount, profile or
    /// hosts file).
    pub const INVALID: i32 = 4;
    /// Provisioning failed: the sandbox ended `failed`, or teardown failed.
    pub const PROVISION_FAILED: i32 = 5;
    /// The actor's credits do not cover the hold.
    pub const INSUFFICIENT_CREDITS: i32 = 6;
    /// Conflicts with the current state (idempotency key reused for another
    /// request, extending a destroyed sandbox, ...).
    pub const CONFLICT: i32 = 7;
    /// The store or ledger is corrupt or of an unknown version (left
    /// untouched).
    pub const STORE: i32 = 8;
    /// No host or provider can take the sandbox now (full, unreachable).
    pub const NO_PLACEMENT: i32 = 9;
    /// The extension or build lacks the ability asked for.
    pub const UNSUPPORTED: i32 = 10;
    /// Missing or refused credentials (HTTP tokens, SSH host keys).
    pub const UNAUTHORIZED: i32 = 11;
    /// Something did not happen in time.
    pub const TIMEOUT: i32 = 12;
}

pub fn exit_code(kind: ErrorKind) -> i32 {
    match kind {
        ErrorKind::NotFound => code::NOT_FOUND,
        ErrorKind::InvalidInput | ErrorKind::InvalidConfig => code::INVALID,
        ErrorKind::ProvisionFailed => code::PROVISION_FAILED,
        ErrorKind::InsufficientCredits => code::INSUFFICIENT_CREDITS,
        ErrorKind::Conflict => code::CONFLICT,
        ErrorKind::StoreCorrupt => code::STORE,
        ErrorKind::NoPlacement | ErrorKind::Unreachable => code::NO_PLACEMENT,
        ErrorKind::Unsupported => code::UNSUPPORTED,
        ErrorKind::Unauthorized | ErrorKind::Forbidden => code::UNAUTHORIZED,
        ErrorKind::Timeout => code::TIMEOUT,
        ErrorKind::Io | ErrorKind::Internal => code::INTERNAL,
    }
}

/// The exit-code table for `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  internal or I/O error
  2  usage error
  3  not found (sandbox, profile, host)
  4  invalid input or configuration
  5  provisioning failed (the sandbox ended `failed`) or teardown failed
  6  insufficient credits
  7  conflict with the current state (e.g. idempotency key reused)
  8  store or ledger corrupt or of an unknown version (left untouched)
  9  no placement: every host or provider is full, unreachable or excluded
 10  unsupported by this build or extension
 11  unauthorized
 12  timed out";

/// Render an error for people (`error: ...`, then `hint: ...`).
pub fn render_human(err: &Error, color: bool) -> String {
    let (red, yellow, reset) = if color {
        ("\x1b[1;31m", "\x1b[33m", "\x1b[0m")
    } else {
        ("", "", "")
    };
    let mut out = format!("{red}error{reset}: {}\n", err.message());
    if let Some(h) = err.hint() {
        for (i, line) in h.lines().enumerate() {
            if i == 0 {
                out.push_str(&format!("{yellow}hint{reset}: {line}\n"));
            } else {
                out.push_str(&format!("      {line}\n"));
            }
        }
    }
    out
}

/// Render an error for machines: `{"error": {"kind", "message", "hint"}}`.
pub fn render_json(err: &Error) -> String {
    let mut e = serde_json::json!({
        "kind": err.kind().as_str(),
        "message": err.message(),
    });
    if let Some(h) = err.hint() {
        e["hint"] = serde_json::Value::String(h.to_string());
    }
    serde_json::to_string_pretty(&serde_json::json!({ "error": e })).expect("json")
}

/// A usage error (clap's) with `--json`: the same `{"error": ...}` object
/// as every other error, kind `usage`, on stdout; exit 2.
pub fn report_usage(e: &clap::Error) -> i32 {
    let text = e.render().to_string();
    let mut parts = text.split("\n\n");
    let message = parts
        .next()
        .unwrap_or_default()
        .trim()
        .trim_start_matches("error: ")
        .to_string();
    let usage: Vec<&str> = parts
        .map(str::trim)
        .filter(|p| p.starts_with("Usage:"))
        .collect();
    let mut hint = usage.join(" ");
    if !hint.is_empty() {
        hint.push_str("; ");
    }
    hint.push_str("`--help` shows every command and option");
    let v = serde_json::json!({"error": {"kind": "usage", "message": message, "hint": hint}});
    let _ = writeln!(
        std::io::stdout(),
        "{}",
        serde_json::to_string_pretty(&v).expect("json")
    );
    code::USAGE
}

/// Print the error the right way and return its exit code.
pub fn report(err: &Error, json: bool, color: bool) -> i32 {
    if json {
        let _ = writeln!(std::io::stdout(), "{}", render_json(err));
    } else {
        let _ = write!(std::io::stderr(), "{}", render_human(err, color));
    }
    exit_code(err.kind())
}
