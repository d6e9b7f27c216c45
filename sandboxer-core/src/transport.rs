//! The host transport contract: how sandboxer runs commands and moves files on
//! a placement host. `local` runs them here; SSH hosts over one SSH
//! connection. Implementations live in `sandboxer-transport`.

use async_trait::async_trait;
pub use camino::{Utf8Path, Utf8PathBuf};

use crate::Result;

/// What a command printed and how it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.status == 0
    }
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    /// The last `n` lines of stderr, for error messages.
    pub fn stderr_tail(&self, n: usize) -> String {
        let s = String::from_utf8_lossy(&self.stderr);
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// Quote `s` for a POSIX shell: the result is one word whatever `s` holds.
/// Every value that reaches a shell goes through this.
/// `rm -rf` every path on the transport's host (`what` names them in the
/// error: `snapshot`, ...); paths that are not there are fine.
pub async fn remove_paths(t: &dyn Transport, paths: &[&Utf8Path], what: &str) -> crate::Result<()> {
    let words: Vec<String> = paths.iter().map(|p| shell_quote(p.as_str())).collect();
    let out = t
        .exec(&format!("rm -rf -- {}", words.join(" ")), None)
        .await?;
    if out.success() {
        return Ok(());
    }
    Err(crate::Error::new(
        crate::ErrorKind::Io,
        format!(
            "removing {what} {} on {} failed (exit {}): {}",
            paths.first().map_or("", |p| p.as_str()),
            t.host(),
            out.status,
            out.stderr_tail(5)
        ),
    ))
}

pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@%+,".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs commands and moves files on one host.
///
/// Contract:
/// - `exec` runs `script` with `sh -c` on the host, with `stdin` fed in when
///   given; a non-zero exit is *not* an error (look at `status`); failing to
///   run it at all is (`Unreachable`, `Timeout`, `Io`).
/// - `write_file` replaces the file atomically (temp + rename) and creates
///   the parent folders.
/// - `read_file` of a missing file is `Ok(None)`.
/// - Paths are host paths; relative paths are relative to
///   [`Transport::data_dir`]'s filesystem user home (SSH) or the current dir.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// The host name (`local` or the hosts-file name).
    fn host(&self) -> &str;

    /// The address consumers use to reach services on this host.
    fn address(&self) -> &str;

    /// sandboxer's data folder on the host (venues, agent binaries, work
    /// folders live under it). Absolute, without a trailing `/`; the paths
    /// under it are built with [`Utf8Path::join`].
    fn data_dir(&self) -> &Utf8Path;

    /// Run `sh -c script`.
    async fn exec(&self, script: &str, stdin: Option<&[u8]>) -> Result<ExecOutput>;

    /// Write `data` to `path` (mode `mode`), atomically.
    async fn write_file(&self, path: &str, data: &[u8], mode: u32) -> Result<()>;

    /// Copy a file of this machine to `path` on the host (mode `mode`),
    /// atomically.
    async fn copy_file(&self, local: &std::path::Path, path: &str, mode: u32) -> Result<()>;

    /// Read a whole file; `None` when it does not exist.
    async fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>>;
}

/// Opens transports to hosts (`local` or SSH). The manager holds one.
#[async_trait]
pub trait Connector: Send + Sync + 'static {
    /// A transport to `host`, connected and authenticated. A host that does
    /// not answer is `Unreachable`; a changed host key `Unauthorized`.
    async fn connect(&self, host: &crate::hosts::HostSpec)
        -> Result<std::sync::Arc<dyn Transport>>;
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn plain_words_stay_and_everything_else_is_one_quoted_word() {
        assert_eq!(shell_quote("/a/b.json"), "/a/b.json");
        assert_eq!(shell_quote("key=v@h:1,2+3%"), "key=v@h:1,2+3%");
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
    }
}
