//! SSH hosts: commands through `sh -c` over one SSH connection (the `ssh2`
//! crate, libssh2), files streamed through `cat` on that connection.
//!
//! One [`SshTransport`] is one TCP connection and one SSH session; every
//! `exec`, `write_file`, `copy_file` and `read_file` of it opens a channel
//! on that session, so the commands of one operation share one connection
//! (and one handshake). Calls on one transport may run concurrently: each
//! has its own channel, and the session is driven non-blocking under ssh2's
//! own lock.
//!
//! All ssh2 work is blocking C code; it runs in `tokio::task::spawn_blocking`.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use std::io::{Cursor, Read};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::os::fd::{AsRawFd as _, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sandboxer_core::duration::format_duration;
use sandboxer_core::hosts::{HostKind, HostSpec};
use sandboxer_core::transport::{shell_quote, ExecOutput, Transport, Utf8Path, Utf8PathBuf};
use sandboxer_core::{Error, ErrorKind, Result};
use ssh2::{CheckResult, HashType, HostKeyType, KnownHostFileKind, MethodType, Session};

mod known_hosts;
mod session;

use known_hosts::*;
use session::*;

/// Where and as whom [`SshTransport::login_unverified`] logs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshLogin {
    pub host: String,
    pub port: u16,
    pub user: String,
}

impl std::fmt::Display for SshLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.user, endpoint(&self.host, self.port))
    }
}

/// How [`SshTransport::login_unverified`] authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshAuth {
    /// A private key file on this machine (no passphrase).
    KeyFile(PathBuf),
    /// The SSH agent, then `~/.ssh/id_ed25519`, `~/.ssh/id_ecdsa`,
    /// `~/.ssh/id_rsa` (those that exist).
    Default,
}

/// The transport of an SSH host from `hosts.toml`.
///
/// - [`SshTransport::connect`] opens the TCP connection (within the host's
///   `connect_timeout`), checks the server's host key against the
///   known-hosts file and authenticates with the host's `identity_file`. An
///   unknown or changed host key is `Unauthorized` and nothing is run; a
///   host that does not answer is `Unreachable`.
/// - `exec` runs `sh -c SCRIPT` (the script is one quoted word) in the login
///   user's home, with stdin fed when given and closed otherwise. A command
///   that runs longer than the host's `command_timeout` fails with
///   `Timeout` and its channel is closed; the remote process is not killed
///   (SSH has no way to signal it without a terminal), so a script that may
///   hang should bound itself (`timeout 60 CMD`). A connection that drops
///   is `Unreachable`, for this and every later call of the transport.
/// - `write_file` and `copy_file` stream the data into a temp file beside
///   the target (created private, `umask 077`), check its size, set the
///   mode and rename it over the target: readers see the old or the new
///   file, and a transfer cut short leaves the target alone.
/// - `read_file` of a missing file (or one under a non-folder) is `None`.
///
/// ```no_run
/// # async fn f() -> sandboxer_core::Result<()> {
/// use sandboxer_core::hosts::Hosts;
/// use sandboxer_core::transport::{shell_quote, Transport};
/// use sandboxer_transport::SshTransport;
///
/// let config = sandboxer_core::paths::config_dir();
/// let spec = Hosts::load(&config)?.require("sandboxer01")?;
/// let t = SshTransport::connect(&spec, &config).await?;
/// let notes = t.data_dir().join("notes.txt");
/// t.write_file(notes.as_str(), b"hi\n", 0o600).await?;
/// let out = t.exec(&format!("wc -c {}", shell_quote(notes.as_str())), None).await?;
/// assert!(out.success());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SshTransport {
    conn: Arc<Conn>,
    data_dir: Utf8PathBuf,
}

impl std::fmt::Debug for SshTransport {
    // Names and paths only: no key material ever reaches this struct.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshTransport")
            .field("host", &self.conn.name)
            .field("address", &self.conn.address)
            .field("port", &self.conn.port)
            .field("user", &self.conn.user)
            .field("host_key", &self.conn.host_key)
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

impl SshTransport {
    /// Connect to the SSH host `spec` and authenticate.
    ///
    /// The host key is checked against `spec`'s `known_hosts` file, else
    /// `config_dir/known_hosts`: an unknown or a changed key is
    /// `Unauthorized` (accept a new key with [`trust_host_key`], the
    /// `sandboxer hosts trust NAME` command). A host that does not answer
    /// within `connect_timeout` is `Unreachable`; a key the host refuses is
    /// `Unauthorized`; a missing identity file `InvalidConfig`.
    pub async fn connect(spec: &HostSpec, config_dir: &Path) -> Result<SshTransport> {
        let spec = spec.clone();
        let known_hosts = known_hosts_path(&spec, config_dir);
        let started = Instant::now();
        let conn = tokio::task::spawn_blocking(move || open(&spec, &known_hosts))
            .await
            .map_err(|e| Error::internal(format!("the SSH connect task failed: {e}")))??;
        let conn = Arc::new(conn);
        let t = SshTransport {
            data_dir: Utf8PathBuf::new(),
            conn,
        };
        let data_dir = t.resolve_data_dir().await?;
        tracing::debug!(host = %t.conn.name, elapsed = ?started.elapsed(), "SSH connected");
        Ok(SshTransport { data_dir, ..t })
    }

    /// Log in to a machine that is not in `hosts.toml` and whose host key
    /// nobody can know yet (a VM booted moments ago, with a fresh key):
    /// the key is **not checked**, only reported by
    /// [`SshTransport::host_key_fingerprint`] so the caller can pin it.
    /// Connect, handshake and login must finish within `timeout`. A
    /// machine that does not answer is `Unreachable`, a refused login
    /// `Unauthorized`. The transport has no data folder.
    pub async fn login_unverified(
        login: &SshLogin,
        auth: &SshAuth,
        timeout: Duration,
    ) -> Result<SshTransport> {
        let (login, auth) = (login.clone(), auth.clone());
        let conn = tokio::task::spawn_blocking(move || open_unverified(&login, &auth, timeout))
            .await
            .map_err(|e| Error::internal(format!("the SSH login task failed: {e}")))??;
        Ok(SshTransport {
            conn: Arc::new(conn),
            data_dir: Utf8PathBuf::new(),
        })
    }

    /// The server's host key fingerprint (`SHA256:...`), as checked (or,
    /// after [`SshTransport::login_unverified`], as presented).
    pub fn host_key_fingerprint(&self) -> &str {
        &self.conn.host_key
    }

    /// The folder sandboxer keeps on the host: the spec's `data_dir` with
    /// `~` expanded (relative folders are under the home), else
    /// `$HOME/.local/share/sandboxer`.
    async fn resolve_data_dir(&self) -> Result<Utf8PathBuf> {
        let given = self.conn.data_dir_spec.clone();
        if let Some(d) = given.as_deref().filter(|d| d.starts_with('/')) {
            return Ok(trim_dir(d).into());
        }
        let out = self.exec("printf '%s' \"$HOME\"", None).await?;
        let home = out.stdout_str();
        if !out.success() || !home.starts_with('/') {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "could not learn the home folder of {} on {} (got {home:?}, status {})",
                    self.conn.user, self.conn.name, out.status
                ),
            )
            .with_hint(format!(
                "set data_dir for `{}` in hosts.toml",
                self.conn.name
            )));
        }
        let home = Utf8PathBuf::from(trim_dir(&home));
        Ok(match given.as_deref() {
            None => home.join(".local/share/sandboxer"),
            Some("~") => home,
            Some(d) => {
                let rel = d.strip_prefix("~/").unwrap_or(d);
                trim_dir(home.join(rel).as_str()).into()
            }
        })
    }

    async fn run(&self, script: String, input: Option<Input>) -> Result<ExecOutput> {
        let conn = self.conn.clone();
        let flag = Arc::new(AtomicBool::new(false));
        let _cancel = CancelOnDrop(flag.clone());
        tokio::task::spawn_blocking(move || conn.run(&script, input, &flag))
            .await
            .map_err(|e| Error::internal(format!("the SSH task failed: {e}")))?
    }

    /// Stream `input` (`size` bytes) to `path` through a temp file.
    async fn put(&self, path: &str, input: Input, size: u64, mode: u32) -> Result<()> {
        let (dir, name) = split_path(path).ok_or_else(|| {
            Error::new(
                ErrorKind::Io,
                format!(
                    "writing {path} on {}: the path does not name a file",
                    self.conn.name
                ),
            )
        })?;
        let tmp = shell_quote(&format!("{dir}/.{name}.tmp."));
        let script = format!(
            "umask 077; t={tmp}$$; if [ -d {path} ]; then printf '%s: is a folder\\n' {path} >&2; exit 1; fi; \
             mkdir -p {dir} && cat > \"$t\" && n=$(wc -c < \"$t\") && \
             if [ $n -ne {size} ]; then echo \"received $n of {size} bytes\" >&2; false; fi && \
             chmod {mode:o} \"$t\" && mv -f \"$t\" {path} || {{ rm -f \"$t\"; exit 1; }}",
            dir = shell_quote(dir),
            mode = mode & 0o7777,
            path = shell_quote(path),
        );
        let out = self.run(script, Some(input)).await?;
        if out.success() {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Io,
            format!(
                "writing {path} on {}: {}",
                self.conn.name,
                out.stderr_tail(3).trim()
            ),
        ))
    }
}

/// Connect to the SSH host `spec`, read the host key it presents and make
/// it the one trusted key for the host in `known_hosts` (the file is
/// created when missing; entries for other hosts are kept). Returns the
/// key's fingerprint (`SHA256:...`).
///
/// This is the explicit "accept a new host key" step (`sandboxer hosts
/// trust NAME`): it trusts whatever answers at the host's address, so the
/// caller shows the fingerprint to a person. It does not authenticate.
/// Blocking: call it from `spawn_blocking` in async code.
pub fn trust_host_key(spec: &HostSpec, known_hosts: &Path) -> Result<String> {
    let target = Target::of(spec)?;
    let mut known = KnownHostsFile::load(known_hosts)?;
    // No preference: take the key type the server and libssh2 agree on.
    let (session, _socket) = target.handshake(&KnownHostsFile {
        path: known_hosts.to_path_buf(),
        lines: Vec::new(),
    })?;
    let (key, _) =
        HostKey::of(&session).ok_or_else(|| target.unreachable("the server sent no host key"))?;
    known.trust(&target.known_hosts_name(), &key)?;
    let _ = session.disconnect(None, "sandboxer: host key read", None);
    Ok(key.fingerprint)
}

/// The known-hosts file for `spec`: its `known_hosts`, else
/// `config_dir/known_hosts`.
pub fn known_hosts_path(spec: &HostSpec, config_dir: &Path) -> PathBuf {
    match &spec.kind {
        HostKind::Ssh {
            known_hosts: Some(p),
            ..
        } => p.clone(),
        _ => config_dir.join("known_hosts"),
    }
}

#[async_trait]
impl Transport for SshTransport {
    fn host(&self) -> &str {
        &self.conn.name
    }

    fn address(&self) -> &str {
        &self.conn.address
    }

    fn data_dir(&self) -> &Utf8Path {
        &self.data_dir
    }

    async fn exec(&self, script: &str, stdin: Option<&[u8]>) -> Result<ExecOutput> {
        self.run(script.to_string(), stdin.map(|d| Input::bytes(d.to_vec())))
            .await
    }

    async fn write_file(&self, path: &str, data: &[u8], mode: u32) -> Result<()> {
        self.put(path, Input::bytes(data.to_vec()), data.len() as u64, mode)
            .await
    }

    async fn copy_file(&self, local: &Path, path: &str, mode: u32) -> Result<()> {
        let opened = std::fs::File::open(local).and_then(|f| {
            let len = f.metadata()?.len();
            Ok((f, len))
        });
        let (file, len) = opened.map_err(|e| {
            Error::io(
                format!(
                    "copying {} to {path} on {}",
                    local.display(),
                    self.conn.name
                ),
                e,
            )
        })?;
        let input = Input {
            // Exactly the size announced: a file that grows meanwhile is cut
            // there, one that shrinks fails the size check on the host.
            reader: Box::new(file.take(len)),
            what: local.display().to_string(),
        };
        self.put(path, input, len, mode).await
    }

    async fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let q = shell_quote(path);
        let script = format!("[ -e {q} ] || exit {MISSING}; exec cat -- {q}");
        let out = self.run(script, None).await?;
        match out.status {
            0 => Ok(Some(out.stdout)),
            MISSING => Ok(None),
            _ => Err(Error::new(
                ErrorKind::Io,
                format!(
                    "reading {path} on {}: {}",
                    self.conn.name,
                    out.stderr_tail(3).trim()
                ),
            )),
        }
    }
}

/// The first non-empty line of a script, shortened, to name it in errors.
fn first_line(script: &str) -> String {
    let line = script
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let mut s: String = line.chars().take(80).collect();
    if s.len() < line.len() || script.trim().lines().nth(1).is_some() {
        s.push_str(" ...");
    }
    s
}

/// `/a/b/` -> `/a/b`; `/` stays.
fn trim_dir(d: &str) -> String {
    match d.trim_end_matches('/') {
        "" if d.starts_with('/') => "/".to_string(),
        t => t.to_string(),
    }
}

/// `dir/name` -> (`dir`, `name`); a bare name is in `.`; `None` when the
/// path ends in `/` or is empty.
fn split_path(path: &str) -> Option<(&str, &str)> {
    let (dir, name) = match path.rsplit_once('/') {
        Some(("", name)) => ("/", name),
        Some((dir, name)) => (dir, name),
        None => (".", path),
    };
    (!name.is_empty() && name != "." && name != "..").then_some((dir, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hosts_names_follow_openssh() {
        assert_eq!(known_hosts_name("10.0.0.1", 22), "10.0.0.1");
        assert_eq!(known_hosts_name("10.0.0.1", 2222), "[10.0.0.1]:2222");
        assert_eq!(known_hosts_name("::1", 2222), "[::1]:2222");
    }

    #[test]
    fn split_path_names_folder_and_file() {
        assert_eq!(split_path("/a/b/c.txt"), Some(("/a/b", "c.txt")));
        assert_eq!(split_path("/c.txt"), Some(("/", "c.txt")));
        assert_eq!(split_path("c.txt"), Some((".", "c.txt")));
        assert_eq!(split_path("a/c"), Some(("a", "c")));
        assert_eq!(split_path("/a/b/"), None);
        assert_eq!(split_path("/"), None);
        assert_eq!(split_path(""), None);
        assert_eq!(split_path("/a/.."), None);
    }

    #[test]
    fn first_line_names_a_command_shortly() {
        assert_eq!(first_line("sleep 5"), "sleep 5");
        assert_eq!(first_line("\n  set -e\n  make\n"), "set -e ...");
        assert_eq!(first_line(&"x".repeat(100)).len(), 84);
    }

    #[test]
    fn trim_dir_keeps_the_root() {
        assert_eq!(trim_dir("/a/b/"), "/a/b");
        assert_eq!(trim_dir("/"), "/");
        assert_eq!(trim_dir("//"), "/");
    }

    #[test]
    fn signal_names_map_to_numbers() {
        assert_eq!(signal_number("TERM"), Some(libc::SIGTERM));
        assert_eq!(signal_number("SIGKILL"), Some(libc::SIGKILL));
        assert_eq!(signal_number("WINCH"), None);
    }

    fn file(lines: &[&str]) -> KnownHostsFile {
        KnownHostsFile {
            path: PathBuf::from("/nonexistent/known_hosts"),
            lines: lines.iter().map(|s| s.to_string()).collect(),
        }
    }

    const ED: &str = "AAAAC3NzaC1lZDI1NTE5AAAAILt50uDdd7rAfHuOrHKHt5V+u7kLAHRnwHIyA6+73dCr";
    const ED2: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIGIgrtarDuBsJJPSSyt4cnq4HE4hPSnUMkNZoBVcFPo0";

    #[test]
    fn lines_for_matches_the_port_exactly() {
        let f = file(&[
            "# comment",
            &format!("[10.0.0.1]:2222 ssh-ed25519 {ED}"),
            &format!("10.0.0.1 ssh-ed25519 {ED2}"),
            &format!("other,[10.0.0.1]:2222 ssh-rsa {ED2}"),
            "@cert-authority * ssh-ed25519 AAAA",
            "garbage",
        ]);
        assert_eq!(f.lines_for("[10.0.0.1]:2222"), vec![1, 3]);
        assert_eq!(f.lines_for("10.0.0.1"), vec![2]);
        assert_eq!(f.lines_for("[10.0.0.1]:22"), Vec::<usize>::new());
        assert_eq!(
            f.key_types_for("[10.0.0.1]:2222"),
            vec!["ssh-ed25519".to_string(), "ssh-rsa".to_string()]
        );
    }

    #[test]
    fn trust_replaces_only_the_hosts_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/known_hosts");
        let mut f = file(&[
            "# keep me",
            &format!("[10.0.0.1]:2222 ssh-ed25519 {ED2}"),
            &format!("other,[10.0.0.1]:2222 ssh-ed25519 {ED2}"),
            &format!("[10.0.0.2]:2222 ssh-ed25519 {ED2}"),
        ]);
        f.path = path.clone();
        let key = HostKey {
            kind: "ssh-ed25519",
            fingerprint: "SHA256:x".into(),
            base64: ED.into(),
        };
        f.trust("[10.0.0.1]:2222", &key).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            format!(
                "# keep me\nother ssh-ed25519 {ED2}\n[10.0.0.2]:2222 ssh-ed25519 {ED2}\n\
                 [10.0.0.1]:2222 ssh-ed25519 {ED}\n"
            )
        );
    }
}
