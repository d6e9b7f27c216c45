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
use sandboxer_core::transport::{shell_quote, ExecOutput, Transport};
use sandboxer_core::{Error, ErrorKind, Result};
use ssh2::{CheckResult, HashType, HostKeyType, KnownHostFileKind, MethodType, Session};

/// How many bytes one read of a stream or of a local file takes.
const CHUNK: usize = 64 * 1024;

/// The longest a waiting call sleeps before it looks at its channel again.
/// Several calls share one socket: the one that reads the socket may take
/// a packet meant for another's channel, which then sees it on its next
/// look.
const MAX_WAIT: Duration = Duration::from_millis(50);

/// Exit status of the `read_file` script when the file does not exist.
const MISSING: i32 = 3;

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
/// let notes = format!("{}/notes.txt", t.data_dir());
/// t.write_file(&notes, b"hi\n", 0o600).await?;
/// let out = t.exec(&format!("wc -c {}", shell_quote(&notes)), None).await?;
/// assert!(out.success());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SshTransport {
    conn: Arc<Conn>,
    data_dir: String,
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

/// What one SSH host is, from its [`HostSpec`].
struct Target<'a> {
    name: &'a str,
    address: &'a str,
    port: u16,
    user: &'a str,
    identity_file: &'a Path,
    connect_timeout: Option<Duration>,
}

impl<'a> Target<'a> {
    fn of(spec: &'a HostSpec) -> Result<Self> {
        match &spec.kind {
            HostKind::Ssh {
                port,
                user,
                identity_file,
                ..
            } => Ok(Target {
                name: &spec.name,
                address: &spec.address,
                port: *port,
                user,
                identity_file,
                connect_timeout: non_zero(spec.connect_timeout),
            }),
            HostKind::Local => Err(Error::internal(format!(
                "host `{}` is not an SSH host",
                spec.name
            ))),
        }
    }

    fn endpoint(&self) -> String {
        endpoint(self.address, self.port)
    }

    /// The host's name in a known-hosts file: `address` for port 22, else
    /// `[address]:port` (as OpenSSH writes it).
    fn known_hosts_name(&self) -> String {
        known_hosts_name(self.address, self.port)
    }

    fn unreachable(&self, what: impl std::fmt::Display) -> Error {
        Error::new(
            ErrorKind::Unreachable,
            format!("cannot reach {} ({}): {what}", self.name, self.endpoint()),
        )
        .with_hint(format!(
            "check that the host is up and sshd listens on {}, or set a longer \
             connect_timeout for `{}` in hosts.toml",
            self.endpoint(),
            self.name
        ))
    }

    /// TCP connect within the connect timeout, to the first address of the
    /// host that answers.
    fn tcp(&self) -> Result<TcpStream> {
        let addrs: Vec<SocketAddr> = (self.address, self.port)
            .to_socket_addrs()
            .map_err(|e| self.unreachable(format_args!("cannot resolve the address: {e}")))?
            .collect();
        let mut last = None;
        for addr in &addrs {
            let tried = match self.connect_timeout {
                Some(t) => TcpStream::connect_timeout(addr, t),
                None => TcpStream::connect(addr),
            };
            match tried {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            Some(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                let limit = self.connect_timeout.map(format_duration);
                let limit = limit.as_deref().unwrap_or("the system's limit");
                self.unreachable(format_args!("no answer within {limit}"))
                    .with_source(e)
            }
            Some(e) => self.unreachable(&e).with_source(e),
            None => self.unreachable("the address resolves to nothing"),
        })
    }

    /// TCP connect and SSH handshake, preferring the host key types the
    /// known-hosts file has for this host. The session is blocking, with
    /// the connect timeout on every call.
    fn handshake(&self, known: &KnownHostsFile) -> Result<(Session, TcpStream)> {
        let tcp = self.tcp()?;
        let mut session =
            Session::new().map_err(|e| Error::internal(format!("libssh2 session: {e}")))?;
        let for_session = tcp
            .try_clone()
            .map_err(|e| Error::io(format!("connecting to {}", self.name), e))?;
        session.set_tcp_stream(for_session);
        session.set_timeout(
            self.connect_timeout
                .map(|t| t.as_millis().clamp(1, u32::MAX as u128) as u32)
                .unwrap_or(0),
        );
        let known_types = known.key_types_for(&self.known_hosts_name());
        if !known_types.is_empty() {
            prefer_host_key_types(&session, &known_types);
        }
        session.handshake().map_err(|e| {
            if timed_out(&e) {
                self.unreachable("the SSH handshake did not finish within the connect timeout")
            } else {
                self.unreachable(format_args!("SSH handshake failed: {}", e.message()))
            }
            .with_source(e)
        })?;
        Ok((session, tcp))
    }
}

/// The server's host key, as a known-hosts file and people name it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostKey {
    /// `ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa`, ...
    kind: &'static str,
    /// `SHA256:` and the unpadded base64 of the key's SHA-256, as
    /// `ssh-keygen -l` prints it.
    fingerprint: String,
    /// The key blob, base64, as in a known-hosts line.
    base64: String,
}

impl HostKey {
    fn of(session: &Session) -> Option<(HostKey, Vec<u8>)> {
        let (blob, kind) = session.host_key()?;
        let hash = session.host_key_hash(HashType::Sha256)?;
        let key = HostKey {
            kind: key_type_name(kind),
            fingerprint: format!("SHA256:{}", STANDARD_NO_PAD.encode(hash)),
            base64: STANDARD.encode(blob),
        };
        Some((key, blob.to_vec()))
    }
}

/// The known-hosts file: its lines as read, to check a key against and to
/// rewrite when trusting one.
struct KnownHostsFile {
    path: PathBuf,
    lines: Vec<String>,
}

impl KnownHostsFile {
    /// Read `path`; a missing file has no lines.
    fn load(path: &Path) -> Result<Self> {
        let lines = match std::fs::read_to_string(path) {
            Ok(text) => text.lines().map(str::to_string).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(Error::io(
                    format!("reading known-hosts file {}", path.display()),
                    e,
                ))
            }
        };
        Ok(KnownHostsFile {
            path: path.to_path_buf(),
            lines,
        })
    }

    /// The indexes of the lines that name the host `name` (`[addr]:port`
    /// or `addr`), plain or hashed. Markers (`@cert-authority`,
    /// `@revoked`) and lines libssh2 cannot parse are skipped.
    fn lines_for(&self, name: &str) -> Vec<usize> {
        // A key that no line holds: a line that names the host answers
        // Mismatch, any other NotFound.
        let Ok(probe) = Session::new() else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for (i, line) in self.lines.iter().enumerate() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') || t.starts_with('@') {
                continue;
            }
            let Ok(mut kh) = probe.known_hosts() else {
                continue;
            };
            if kh.read_str(t, KnownHostFileKind::OpenSSH).is_err() {
                tracing::debug!(path = %self.path.display(), line = i + 1, "known-hosts line libssh2 cannot parse; skipped");
                continue;
            }
            if matches!(kh.check(name, b"\0"), CheckResult::Mismatch) {
                found.push(i);
            }
        }
        found
    }

    /// The key types recorded for `name`.
    fn key_types_for(&self, name: &str) -> Vec<String> {
        let mut types: Vec<String> = Vec::new();
        for i in self.lines_for(name) {
            if let Some(t) = self.lines[i].split_whitespace().nth(1) {
                if !types.iter().any(|k| k == t) {
                    types.push(t.to_string());
                }
            }
        }
        types
    }

    /// Whether `key` is the recorded key of `name`.
    fn check(&self, session: &Session, name: &str, key: &[u8]) -> Result<CheckResult> {
        let mut kh = session
            .known_hosts()
            .map_err(|e| Error::internal(format!("libssh2 known hosts: {e}")))?;
        for i in self.lines_for(name) {
            // lines_for only returns lines that parse.
            let _ = kh.read_str(self.lines[i].trim(), KnownHostFileKind::OpenSSH);
        }
        Ok(kh.check(name, key))
    }

    /// Drop every entry for `name`, add `name TYPE KEY`, and replace the
    /// file atomically (keeping its mode). Other hosts' entries, comments
    /// and lines libssh2 cannot parse stay as they are.
    fn trust(&mut self, name: &str, key: &HostKey) -> Result<()> {
        let ours = self.lines_for(name);
        let mut lines = Vec::with_capacity(self.lines.len() + 1);
        for (i, line) in self.lines.iter().enumerate() {
            if !ours.contains(&i) {
                lines.push(line.clone());
                continue;
            }
            // A plain line may name several hosts: keep it for the others.
            let mut fields = line.split_whitespace();
            let hosts = fields.next().unwrap_or("");
            let rest: Vec<&str> = fields.collect();
            if !hosts.starts_with('|') {
                let others: Vec<&str> = hosts.split(',').filter(|h| *h != name).collect();
                if !others.is_empty() && others.len() < hosts.split(',').count() {
                    lines.push(format!("{} {}", others.join(","), rest.join(" ")));
                }
            }
        }
        lines.push(format!("{name} {} {}", key.kind, key.base64));
        let mut text = lines.join("\n");
        text.push('\n');
        write_replacing(&self.path, text.as_bytes())
            .map_err(|e| Error::io(format!("writing {}", self.path.display()), e))?;
        self.lines = lines;
        Ok(())
    }
}

/// One SSH connection, shared by every call of one transport.
struct Conn {
    name: String,
    address: String,
    port: u16,
    user: String,
    host_key: String,
    command_timeout: Option<Duration>,
    /// `data_dir` of the hosts file, resolved once at connect.
    data_dir_spec: Option<String>,
    session: Session,
    /// The socket the session runs on, to wait on.
    socket: TcpStream,
    /// Why the connection is gone, once it is.
    lost: Mutex<Option<String>>,
    /// Held while a channel is opened and its command started.
    setup: Mutex<()>,
}

/// What to feed a command's stdin.
struct Input {
    reader: Box<dyn Read + Send>,
    /// What is being read, for errors.
    what: String,
}

impl Input {
    fn bytes(data: Vec<u8>) -> Self {
        Input {
            reader: Box::new(Cursor::new(data)),
            what: "the command's input".to_string(),
        }
    }
}

impl Conn {
    fn endpoint(&self) -> String {
        endpoint(&self.address, self.port)
    }

    fn lost(&self, what: &str, why: impl std::fmt::Display) -> Error {
        let why = why.to_string();
        let mut lost = self.lost.lock().unwrap_or_else(|e| e.into_inner());
        if lost.is_none() {
            *lost = Some(why.clone());
        }
        Error::new(
            ErrorKind::Unreachable,
            format!(
                "the SSH connection to {} ({}) was lost while running `{what}`: {why}",
                self.name,
                self.endpoint()
            ),
        )
        .with_hint("the command may or may not have run to the end on the host")
    }

    fn check_alive(&self) -> Result<()> {
        let lost = self.lost.lock().unwrap_or_else(|e| e.into_inner());
        match &*lost {
            None => Ok(()),
            Some(why) => Err(Error::new(
                ErrorKind::Unreachable,
                format!(
                    "the SSH connection to {} ({}) was lost earlier: {why}",
                    self.name,
                    self.endpoint()
                ),
            )
            .with_hint("connect again for a new connection")),
        }
    }

    /// Map an ssh2 error met while running `what`: a socket or protocol
    /// failure loses the connection (`Unreachable`); anything else (the
    /// server refused a channel, ...) is `Io`.
    fn ssh_error(&self, what: &str, e: ssh2::Error) -> Error {
        use ssh2::ErrorCode::Session as S;
        match e.code() {
            S(-1) | S(-5) | S(-7) | S(-9) | S(-12) | S(-13) | S(-14) | S(-30) | S(-43) | S(-45) => {
                self.lost(what, e.message())
            }
            _ => Error::new(
                ErrorKind::Io,
                format!(
                    "SSH error on {} running `{what}`: {}",
                    self.name,
                    e.message()
                ),
            )
            .with_source(e),
        }
    }

    /// Wait until the socket is ready in the direction libssh2 is blocked
    /// on, at most [`MAX_WAIT`]; fail when the deadline passed or the call
    /// was cancelled.
    fn wait(&self, call: &Call<'_>) -> Result<()> {
        if call.cancelled.load(Ordering::Relaxed) {
            return Err(Error::new(
                ErrorKind::Internal,
                format!("`{}` on {} was cancelled", call.what, self.name),
            ));
        }
        let mut wait = MAX_WAIT;
        if let Some(deadline) = call.deadline {
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "`{}` on {} ran longer than {}; its channel was closed",
                        call.what,
                        self.name,
                        format_duration(self.command_timeout.unwrap_or_default())
                    ),
                )
                .with_hint(format!(
                    "raise command_timeout for `{}` in hosts.toml, or bound the \
                     command itself; it may still be running on the host",
                    self.name
                )));
            }
            wait = wait.min(deadline - now);
        }
        let events = match self.session.block_directions() {
            ssh2::BlockDirections::Outbound => libc::POLLOUT,
            ssh2::BlockDirections::Both => libc::POLLIN | libc::POLLOUT,
            _ => libc::POLLIN,
        };
        poll(self.socket.as_raw_fd(), events, wait);
        Ok(())
    }

    /// Run an ssh2 call until it does not answer "would block".
    fn retry<T>(
        &self,
        call: &Call<'_>,
        mut op: impl FnMut() -> std::result::Result<T, ssh2::Error>,
    ) -> Result<T> {
        loop {
            match op() {
                Ok(v) => return Ok(v),
                Err(e) if would_block(&e) => self.wait(call)?,
                Err(e) => return Err(self.ssh_error(call.what, e)),
            }
        }
    }

    /// Run `sh -c script` on a new channel: feed `input`, collect stdout
    /// and stderr, return the exit status.
    fn run(
        &self,
        script: &str,
        input: Option<Input>,
        cancelled: &AtomicBool,
    ) -> Result<ExecOutput> {
        self.check_alive()?;
        let what = first_line(script);
        let call = Call {
            what: &what,
            deadline: self.command_timeout.map(|t| Instant::now() + t),
            cancelled,
        };
        let command = format!("sh -c {}", shell_quote(script));
        let mut channel = {
            // One channel at a time between "open" and "exec accepted":
            // libssh2 fails a call waiting for its channel's reply when it
            // reads the reply meant for another channel ("Failed waiting
            // for channel success") instead of queueing it.
            let _setup = self.setup.lock().unwrap_or_else(|e| e.into_inner());
            let mut channel = self.retry(&call, || self.session.channel_session())?;
            if let Err(e) = self.retry(&call, || channel.exec(&command)) {
                let _ = channel.close();
                return Err(e);
            }
            channel
        };
        let done = self.drive(&mut channel, input, &call);
        if done.is_err() {
            // Best effort, without waiting: tell the server we are gone.
            let _ = channel.close();
        }
        done
    }

    /// Feed `input` to a started command and collect what it prints, until
    /// it ends.
    fn drive(
        &self,
        channel: &mut ssh2::Channel,
        mut input: Option<Input>,
        call: &Call<'_>,
    ) -> Result<ExecOutput> {
        use std::io::Write as _;

        let mut out = ExecOutput::default();
        let mut buf = vec![0u8; CHUNK];
        // Input read from `input` but not yet taken by the channel.
        let mut pending: Vec<u8> = Vec::new();
        let mut sent = 0;
        let mut stdin_open = true;
        let (mut stdout_done, mut stderr_done) = (false, false);
        while !(stdout_done && stderr_done) {
            let mut progressed = false;
            if stdin_open {
                if sent == pending.len() {
                    if let Some(inp) = input.as_mut() {
                        pending.resize(CHUNK, 0);
                        let n = inp.reader.read(&mut pending).map_err(|e| {
                            Error::io(format!("reading {} for {}", inp.what, self.name), e)
                        })?;
                        pending.truncate(n);
                        sent = 0;
                        if n == 0 {
                            input = None;
                        }
                    }
                }
                if sent < pending.len() {
                    match channel.write(&pending[sent..]) {
                        Ok(n) => {
                            sent += n;
                            progressed |= n > 0;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        // The command closed its stdin (or ended): it does
                        // not want the rest. A lost connection shows in the
                        // reads below.
                        Err(_) => {
                            stdin_open = false;
                            input = None;
                        }
                    }
                } else if input.is_none() {
                    match channel.send_eof() {
                        Ok(()) => {
                            stdin_open = false;
                            progressed = true;
                        }
                        Err(e) if would_block(&e) => {}
                        Err(_) => stdin_open = false,
                    }
                }
            }
            for (stream, sink, done) in [
                (0, &mut out.stdout, &mut stdout_done),
                (1, &mut out.stderr, &mut stderr_done),
            ] {
                if *done {
                    continue;
                }
                match channel.stream(stream).read(&mut buf) {
                    Ok(0) => *done = true,
                    Ok(n) => {
                        sink.extend_from_slice(&buf[..n]);
                        progressed = true;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(self.lost(call.what, e)),
                }
            }
            let finished = stdout_done && stderr_done;
            if !progressed && !finished {
                self.wait(call)?;
            }
        }
        self.retry(call, || channel.close())?;
        self.retry(call, || channel.wait_close())?;
        out.status = match channel.exit_signal().ok().and_then(|s| s.exit_signal) {
            Some(sig) => signal_number(&sig).map_or(-1, |n| 128 + n),
            None => channel
                .exit_status()
                .map_err(|e| self.ssh_error(call.what, e))?,
        };
        Ok(out)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Best effort, without waiting: the socket closes right after.
        let _ = self.session.disconnect(None, "sandboxer: done", None);
    }
}

/// One call's limits.
struct Call<'a> {
    /// The command's first line, for errors.
    what: &'a str,
    deadline: Option<Instant>,
    cancelled: &'a AtomicBool,
}

/// Sets its flag when dropped: tells the blocking half of a call that the
/// caller is gone (the future was dropped) or done.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
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
            data_dir: String::new(),
            conn,
        };
        let data_dir = t.resolve_data_dir().await?;
        tracing::debug!(host = %t.conn.name, elapsed = ?started.elapsed(), "SSH connected");
        Ok(SshTransport { data_dir, ..t })
    }

    /// The server's host key fingerprint (`SHA256:...`), as checked.
    pub fn host_key_fingerprint(&self) -> &str {
        &self.conn.host_key
    }

    /// The folder sandboxer keeps on the host: the spec's `data_dir` with
    /// `~` expanded (relative folders are under the home), else
    /// `$HOME/.local/share/sandboxer`.
    async fn resolve_data_dir(&self) -> Result<String> {
        let given = self.conn.data_dir_spec.clone();
        if let Some(d) = given.as_deref().filter(|d| d.starts_with('/')) {
            return Ok(trim_dir(d));
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
        let home = trim_dir(&home);
        Ok(match given.as_deref() {
            None => format!("{}/.local/share/sandboxer", home.trim_end_matches('/')),
            Some("~") => home,
            Some(d) => {
                let rel = d.strip_prefix("~/").unwrap_or(d);
                trim_dir(&format!("{}/{rel}", home.trim_end_matches('/')))
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

/// Connect, check the host key, authenticate, and make the session
/// non-blocking. Blocking.
fn open(spec: &HostSpec, known_hosts: &Path) -> Result<Conn> {
    let target = Target::of(spec)?;
    if !target.identity_file.is_file() {
        return Err(Error::invalid_config(format!(
            "the identity file of {} ({}) does not exist or is not a file",
            target.name,
            target.identity_file.display()
        ))
        .with_hint(format!(
            "set identity_file for `{}` in hosts.toml to a private key the host accepts",
            target.name
        )));
    }
    let known = KnownHostsFile::load(known_hosts)?;
    let (session, socket) = target.handshake(&known)?;

    let (key, blob) =
        HostKey::of(&session).ok_or_else(|| target.unreachable("the server sent no host key"))?;
    let kh_name = target.known_hosts_name();
    match known.check(&session, &kh_name, &blob)? {
        CheckResult::Match => {}
        CheckResult::NotFound => {
            return Err(Error::new(
                ErrorKind::Unauthorized,
                format!(
                    "unknown host key for {} ({kh_name}), {} {}",
                    target.name, key.kind, key.fingerprint
                ),
            )
            .with_hint(format!(
                "if that fingerprint is the host's, accept it with `sandboxer hosts trust {}` \
                 (it is added to {})",
                target.name,
                known_hosts.display()
            )))
        }
        CheckResult::Mismatch => {
            return Err(Error::new(
                ErrorKind::Unauthorized,
                format!(
                    "HOST KEY CHANGED for {} ({kh_name}): it now presents {} {}, which is not \
                     the key recorded in {} (possible man-in-the-middle)",
                    target.name,
                    key.kind,
                    key.fingerprint,
                    known_hosts.display()
                ),
            )
            .with_hint(format!(
                "if the host was reinstalled or its key rotated, check the new fingerprint \
                 and accept it with `sandboxer hosts trust {}`",
                target.name
            )))
        }
        CheckResult::Failure => {
            return Err(Error::internal(format!(
                "checking the host key of {} against {} failed",
                target.name,
                known_hosts.display()
            )))
        }
    }

    session
        .userauth_pubkey_file(target.user, None, target.identity_file, None)
        .map_err(|e| {
            if timed_out(&e) {
                return target
                    .unreachable("authentication did not finish within the connect timeout");
            }
            Error::new(
                ErrorKind::Unauthorized,
                format!(
                    "{} did not accept user {} with key {}: {}",
                    target.name,
                    target.user,
                    target.identity_file.display(),
                    e.message()
                ),
            )
            .with_hint(format!(
                "the key's public half must be in ~{}/.ssh/authorized_keys on {}; the key \
                 must have no passphrase (ssh-agent is not used)",
                target.user, target.name
            ))
        })?;
    if !session.authenticated() {
        return Err(Error::new(
            ErrorKind::Unauthorized,
            format!(
                "{} did not accept user {} with key {}",
                target.name,
                target.user,
                target.identity_file.display()
            ),
        ));
    }
    session.set_timeout(0);
    session.set_blocking(false);
    Ok(Conn {
        name: spec.name.clone(),
        address: spec.address.clone(),
        port: target.port,
        user: target.user.to_string(),
        host_key: key.fingerprint,
        command_timeout: non_zero(spec.command_timeout),
        data_dir_spec: spec.data_dir.clone(),
        session,
        socket,
        lost: Mutex::new(None),
        setup: Mutex::new(()),
    })
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

    fn data_dir(&self) -> &str {
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

/// Ask libssh2 to prefer the host key algorithms of `types` (known-hosts
/// key types), then the rest it supports, as OpenSSH does: a host known by
/// its RSA key is not failed for offering Ed25519 first.
fn prefer_host_key_types(session: &Session, types: &[String]) {
    let Ok(supported) = session.supported_algs(MethodType::HostKey) else {
        return;
    };
    let mut prefs: Vec<&str> = Vec::new();
    for t in types {
        let algs: &[&str] = match t.as_str() {
            "ssh-rsa" => &["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"],
            other => &[other][..],
        };
        for a in algs {
            if let Some(s) = supported.iter().find(|s| *s == a) {
                if !prefs.contains(s) {
                    prefs.push(s);
                }
            }
        }
    }
    if prefs.is_empty() {
        return;
    }
    for s in &supported {
        if !prefs.contains(s) {
            prefs.push(s);
        }
    }
    if let Err(e) = session.method_pref(MethodType::HostKey, &prefs.join(",")) {
        tracing::debug!("host key preference not set: {e}");
    }
}

/// `address:port`, with IPv6 addresses in brackets.
fn endpoint(address: &str, port: u16) -> String {
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

fn known_hosts_name(address: &str, port: u16) -> String {
    if port == 22 {
        address.to_string()
    } else {
        format!("[{address}]:{port}")
    }
}

fn key_type_name(kind: HostKeyType) -> &'static str {
    match kind {
        HostKeyType::Rsa => "ssh-rsa",
        HostKeyType::Dss => "ssh-dss",
        HostKeyType::Ecdsa256 => "ecdsa-sha2-nistp256",
        HostKeyType::Ecdsa384 => "ecdsa-sha2-nistp384",
        HostKeyType::Ecdsa521 => "ecdsa-sha2-nistp521",
        HostKeyType::Ed25519 => "ssh-ed25519",
        HostKeyType::Unknown => "unknown",
    }
}

fn would_block(e: &ssh2::Error) -> bool {
    e.code() == ssh2::ErrorCode::Session(-37)
}

fn timed_out(e: &ssh2::Error) -> bool {
    matches!(
        e.code(),
        ssh2::ErrorCode::Session(-9) | ssh2::ErrorCode::Session(-30)
    )
}

fn non_zero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

/// Wait up to `wait` for `events` on `fd`.
fn poll(fd: RawFd, events: libc::c_short, wait: Duration) {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let ms = wait.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd, for the duration of the call.
    unsafe {
        libc::poll(&mut p, 1, ms);
    }
}

/// The number of the signal called `name` (`TERM`, `KILL`, ...).
fn signal_number(name: &str) -> Option<i32> {
    Some(match name.trim_start_matches("SIG") {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "ABRT" => libc::SIGABRT,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "SEGV" => libc::SIGSEGV,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        _ => return None,
    })
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

/// Replace `path` with `data` atomically, keeping the old file's mode
/// (0644 for a new file), creating the folder.
fn write_replacing(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644);
    sandboxer_core::fsutil::replace(path, mode, data)
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
