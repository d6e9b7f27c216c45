//! The readiness check: an SSH login into the VM that runs a command.
//!
//! One attempt first waits for the server's SSH banner on a plain TCP
//! connection (qemu's user-mode network accepts the connection on the host
//! at once, and closes it or stays silent until the guest's sshd answers),
//! then logs in with `ssh2` and runs the command. The guest's host key is
//! not checked (a fresh VM has a fresh key); its SHA-256 fingerprint is
//! reported so consumers can pin it.

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;
use std::io::Read as _;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where and as whom to log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshLogin {
    pub host: String,
    pub port: u16,
    pub user: String,
}

impl std::fmt::Display for SshLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}:{}", self.user, self.host, self.port)
    }
}

/// How the readiness login authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshAuth {
    /// A private key file on this machine.
    KeyFile(PathBuf),
    /// The SSH agent, then `~/.ssh/id_ed25519`, `~/.ssh/id_ecdsa`,
    /// `~/.ssh/id_rsa` (those that exist).
    Default,
}

/// What a successful login saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedIn {
    /// `SHA256:...` of the server's host key, as OpenSSH prints it.
    pub host_key: String,
    /// What the command printed (trimmed).
    pub output: String,
}

/// The command the readiness login runs.
pub const READY_COMMAND: &str = "uname -a";

/// How long the banner may take on one connection.
const BANNER_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long a login may take once the banner came (TCG guests are slow).
const LOGIN_TIMEOUT: Duration = Duration::from_secs(15);

/// One attempt: the banner, then login and `command` (exit status 0), at
/// most until `deadline` (but at least a short try). The error says why,
/// for people.
pub fn login_attempt(
    target: &SshLogin,
    auth: &SshAuth,
    command: &str,
    deadline: Instant,
) -> Result<LoggedIn, String> {
    let left = |cap: Duration| {
        deadline
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(250), cap)
    };
    let addr = resolve(target)?;
    wait_banner(addr, left(BANNER_TIMEOUT))?;
    login(addr, target, auth, command, left(LOGIN_TIMEOUT))
}

/// Try [`login_attempt`] every `every` until one succeeds or `deadline`
/// passes (blocking; the extension runs its own loop, which also watches
/// qemu). The error is the last attempt's.
pub fn wait_for_login(
    target: &SshLogin,
    auth: &SshAuth,
    command: &str,
    deadline: Instant,
    every: Duration,
) -> Result<LoggedIn, String> {
    loop {
        let why = match login_attempt(target, auth, command, deadline) {
            Ok(l) => return Ok(l),
            Err(why) => why,
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(why);
        }
        std::thread::sleep(every.min(deadline - now));
    }
}

fn resolve(target: &SshLogin) -> Result<SocketAddr, String> {
    (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", target.host))?
        .next()
        .ok_or_else(|| format!("{} has no address", target.host))
}

/// Connect and read until the server's `SSH-` banner arrives.
fn wait_banner(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let started = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("TCP connect to {addr}: {e}"))?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(format!(
                "no SSH banner from {addr} within {} ms (the guest's sshd is not up yet)",
                timeout.as_millis()
            ));
        }
        s.set_read_timeout(Some(left))
            .map_err(|e| format!("socket: {e}"))?;
        match s.read(&mut buf) {
            Ok(0) => {
                return Err(format!(
                    "{addr} closed the connection before an SSH banner (nothing listens in the guest yet)"
                ))
            }
            Ok(n) => {
                seen.extend_from_slice(&buf[..n]);
                if seen.windows(4).any(|w| w == b"SSH-") {
                    return Ok(());
                }
                if seen.len() > 8192 {
                    return Err(format!("{addr} does not speak SSH"));
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(format!("reading the SSH banner from {addr}: {e}")),
        }
    }
}

fn login(
    addr: SocketAddr,
    target: &SshLogin,
    auth: &SshAuth,
    command: &str,
    timeout: Duration,
) -> Result<LoggedIn, String> {
    let tcp = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("TCP connect to {addr}: {e}"))?;
    let mut session = ssh2::Session::new().map_err(|e| format!("ssh session: {e}"))?;
    session.set_tcp_stream(tcp);
    session.set_timeout(timeout.as_millis().min(u32::MAX as u128) as u32);
    session
        .handshake()
        .map_err(|e| format!("SSH handshake with {addr}: {}", e.message()))?;
    let host_key = session
        .host_key_hash(ssh2::HashType::Sha256)
        .map(|h| format!("SHA256:{}", STANDARD_NO_PAD.encode(h)))
        .unwrap_or_default();
    authenticate(&session, &target.user, auth)?;
    let mut ch = session
        .channel_session()
        .map_err(|e| format!("opening a channel on {addr}: {}", e.message()))?;
    ch.exec(command)
        .map_err(|e| format!("running `{command}` on {addr}: {}", e.message()))?;
    let mut out = String::new();
    let _ = ch.read_to_string(&mut out);
    let mut err = String::new();
    let _ = ch.stderr().read_to_string(&mut err);
    let _ = ch.wait_close();
    let status = ch.exit_status().unwrap_or(-1);
    if status != 0 {
        return Err(format!(
            "`{command}` in the VM ({target}) exited with status {status}: {}",
            err.trim()
        ));
    }
    Ok(LoggedIn {
        host_key,
        output: out.trim().to_string(),
    })
}

fn authenticate(session: &ssh2::Session, user: &str, auth: &SshAuth) -> Result<(), String> {
    let try_key = |key: &Path| -> Result<(), String> {
        session
            .userauth_pubkey_file(user, None, key, None)
            .map_err(|e| {
                format!(
                    "the VM refused the key {} for `{user}`: {}",
                    key.display(),
                    e.message()
                )
            })
    };
    match auth {
        SshAuth::KeyFile(key) => try_key(key)?,
        SshAuth::Default => {
            let mut tried = Vec::new();
            if std::env::var_os("SSH_AUTH_SOCK").is_some() {
                match session.userauth_agent(user) {
                    Ok(()) => return Ok(()),
                    Err(e) => tried.push(format!("agent: {}", e.message())),
                }
            }
            let ssh_dir = sandboxer_core::paths::home_dir().join(".ssh");
            for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
                let key = ssh_dir.join(name);
                if key.is_file() {
                    match try_key(&key) {
                        Ok(()) => return Ok(()),
                        Err(e) => tried.push(e),
                    }
                }
            }
            if tried.is_empty() {
                return Err(format!(
                    "no key to log in as `{user}` with: no SSH agent and no key in {}; set `ssh_key` in the route config",
                    ssh_dir.display()
                ));
            }
            return Err(tried.join("; "));
        }
    }
    if session.authenticated() {
        Ok(())
    } else {
        Err(format!("the VM did not accept the login of `{user}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::net::TcpListener;

    #[test]
    fn a_closed_connection_is_not_a_banner() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || drop(l.accept().unwrap()));
        let e = wait_banner(addr, Duration::from_secs(2)).unwrap_err();
        assert!(e.contains("closed the connection"), "{e}");
        t.join().unwrap();
    }

    #[test]
    fn a_silent_server_times_out_and_a_banner_is_seen() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (silent, _) = l.accept().unwrap();
            let (mut talker, _) = l.accept().unwrap();
            talker.write_all(b"SSH-2.0-test\r\n").unwrap();
            std::thread::sleep(Duration::from_millis(200));
            drop(silent);
        });
        let e = wait_banner(addr, Duration::from_millis(200)).unwrap_err();
        assert!(e.contains("no SSH banner"), "{e}");
        wait_banner(addr, Duration::from_secs(2)).unwrap();
        t.join().unwrap();
    }

    #[test]
    fn nothing_listening_fails_fast() {
        let closed = sandboxer_testkit::net::ClosedPort::new().unwrap();
        let target = SshLogin {
            host: "127.0.0.1".into(),
            port: closed.port(),
            user: "root".into(),
        };
        let started = Instant::now();
        let e = login_attempt(
            &target,
            &SshAuth::Default,
            "true",
            Instant::now() + Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(e.contains("TCP connect"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
