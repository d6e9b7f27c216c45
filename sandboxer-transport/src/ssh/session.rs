//! The SSH session driver: one non-blocking libssh2 session per host,
//! channels per call, streams pumped with `poll`, and the connect and
//! authenticate steps.

use super::*;

/// How many bytes one read of a stream or of a local file takes.
pub(super) const CHUNK: usize = 64 * 1024;

/// The longest a waiting call sleeps before it looks at its channel again.
/// Several calls share one socket: the one that reads the socket may take
/// a packet meant for another's channel, which then sees it on its next
/// look.
pub(super) const MAX_WAIT: Duration = Duration::from_millis(50);

/// Exit status of the `read_file` script when the file does not exist.
pub(super) const MISSING: i32 = 3;

/// One SSH connection, shared by every call of one transport.
pub(super) struct Conn {
    pub(super) name: String,
    pub(super) address: String,
    pub(super) port: u16,
    pub(super) user: String,
    pub(super) host_key: String,
    pub(super) command_timeout: Option<Duration>,
    /// `data_dir` of the hosts file, resolved once at connect.
    pub(super) data_dir_spec: Option<String>,
    pub(super) session: Session,
    /// The socket the session runs on, to wait on.
    pub(super) socket: TcpStream,
    /// Why the connection is gone, once it is.
    pub(super) lost: Mutex<Option<String>>,
    /// Held while a channel is opened and its command started.
    pub(super) setup: Mutex<()>,
}

/// What to feed a command's stdin.
pub(super) struct Input {
    pub(super) reader: Box<dyn Read + Send>,
    /// What is being read, for errors.
    pub(super) what: String,
}

impl Input {
    pub(super) fn bytes(data: Vec<u8>) -> Self {
        Input {
            reader: Box::new(Cursor::new(data)),
            what: "the command's input".to_string(),
        }
    }
}

impl Conn {
    pub(super) fn endpoint(&self) -> String {
        endpoint(&self.address, self.port)
    }

    pub(super) fn lost(&self, what: &str, why: impl std::fmt::Display) -> Error {
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

    pub(super) fn check_alive(&self) -> Result<()> {
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
    pub(super) fn ssh_error(&self, what: &str, e: ssh2::Error) -> Error {
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
    pub(super) fn wait(&self, call: &Call<'_>) -> Result<()> {
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
    pub(super) fn retry<T>(
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
    pub(super) fn run(
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
    pub(super) fn drive(
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
pub(super) struct Call<'a> {
    /// The command's first line, for errors.
    pub(super) what: &'a str,
    pub(super) deadline: Option<Instant>,
    pub(super) cancelled: &'a AtomicBool,
}

/// Sets its flag when dropped: tells the blocking half of a call that the
/// caller is gone (the future was dropped) or done.
pub(super) struct CancelOnDrop(pub(super) Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Connect, check the host key, authenticate, and make the session
/// non-blocking. Blocking.
pub(super) fn open(spec: &HostSpec, known_hosts: &Path) -> Result<Conn> {
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

    auth_key(&session, &target, target.identity_file)?;
    finish(session, socket, &target, key.fingerprint, spec)
}

/// Connect and authenticate as `login` says, reporting the server's host
/// key without checking it (see [`SshTransport::login_unverified`]).
/// Blocking.
pub(super) fn open_unverified(login: &SshLogin, auth: &SshAuth, timeout: Duration) -> Result<Conn> {
    let name = login.to_string();
    let target = Target {
        name: &name,
        address: &login.host,
        port: login.port,
        user: &login.user,
        identity_file: Path::new(""),
        connect_timeout: non_zero(timeout),
    };
    let (session, socket) = target.handshake(&KnownHostsFile::none())?;
    let (key, _) =
        HostKey::of(&session).ok_or_else(|| target.unreachable("the server sent no host key"))?;
    match auth {
        SshAuth::KeyFile(path) => auth_key(&session, &target, path)?,
        SshAuth::Default => auth_default(&session, &target)?,
    }
    let spec = HostSpec {
        name: name.clone(),
        address: login.host.clone(),
        ..HostSpec::local()
    };
    finish(session, socket, &target, key.fingerprint, &spec)
}

/// The SSH agent (when `SSH_AUTH_SOCK` is set), then `~/.ssh/id_ed25519`,
/// `id_ecdsa` and `id_rsa`, those that exist, until one is accepted.
fn auth_default(session: &Session, target: &Target<'_>) -> Result<()> {
    let mut tried = Vec::new();
    if std::env::var_os("SSH_AUTH_SOCK").is_some() {
        match session.userauth_agent(target.user) {
            Ok(()) if session.authenticated() => return Ok(()),
            Ok(()) => tried.push("the SSH agent: not accepted".to_string()),
            Err(e) => tried.push(format!("the SSH agent: {}", e.message())),
        }
    }
    let ssh_dir = sandboxer_core::paths::home_dir().join(".ssh");
    for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
        let key = ssh_dir.join(name);
        if key.is_file() {
            match auth_key(session, target, &key) {
                Ok(()) => return Ok(()),
                Err(e) => tried.push(e.message().to_string()),
            }
        }
    }
    let why = if tried.is_empty() {
        format!("no SSH agent and no key in {}", ssh_dir.display())
    } else {
        tried.join("; ")
    };
    Err(Error::new(
        ErrorKind::Unauthorized,
        format!("{} did not accept a login: {why}", target.name),
    ))
}

/// Authenticate with the private key at `key`.
fn auth_key(session: &Session, target: &Target<'_>, key: &Path) -> Result<()> {
    session
        .userauth_pubkey_file(target.user, None, key, None)
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
                    key.display(),
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
                key.display()
            ),
        ));
    }
    Ok(())
}

/// The connection, made non-blocking.
fn finish(
    session: Session,
    socket: TcpStream,
    target: &Target<'_>,
    host_key: String,
    spec: &HostSpec,
) -> Result<Conn> {
    session.set_timeout(0);
    session.set_blocking(false);
    Ok(Conn {
        name: spec.name.clone(),
        address: spec.address.clone(),
        port: target.port,
        user: target.user.to_string(),
        host_key,
        command_timeout: non_zero(spec.command_timeout),
        data_dir_spec: spec.data_dir.clone(),
        session,
        socket,
        lost: Mutex::new(None),
        setup: Mutex::new(()),
    })
}

pub(super) fn would_block(e: &ssh2::Error) -> bool {
    e.code() == ssh2::ErrorCode::Session(-37)
}

pub(super) fn timed_out(e: &ssh2::Error) -> bool {
    matches!(
        e.code(),
        ssh2::ErrorCode::Session(-9) | ssh2::ErrorCode::Session(-30)
    )
}

pub(super) fn non_zero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

/// Wait up to `wait` for `events` on `fd`.
pub(super) fn poll(fd: RawFd, events: libc::c_short, wait: Duration) {
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
pub(super) fn signal_number(name: &str) -> Option<i32> {
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
