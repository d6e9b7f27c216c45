//! The readiness check: an SSH login into the VM that runs a command.
//!
//! One attempt first waits for the server's SSH banner on a plain TCP
//! connection (qemu's user-mode network accepts the connection on the host
//! at once, and closes it or stays silent until the guest's sshd answers),
//! then logs in with the transport's SSH client
//! ([`SshTransport::login_unverified`]) and runs the command. The guest's
//! host key is not checked (a fresh VM has a fresh key); its SHA-256
//! fingerprint is reported so consumers can pin it.

use std::io::Read as _;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::time::Duration;

use sandboxer_core::transport::Transport as _;
use sandboxer_transport::SshTransport;
pub use sandboxer_transport::{SshAuth, SshLogin};
use tokio::time::Instant;

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
/// How long a login and its command may take once the banner came (TCG
/// guests are slow).
const LOGIN_TIMEOUT: Duration = Duration::from_secs(15);

/// One attempt: the banner, then login and `command` (exit status 0), at
/// most until `deadline` (but at least a short try). The error says why,
/// for people.
pub async fn login_attempt(
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
    let wait = left(BANNER_TIMEOUT);
    tokio::task::spawn_blocking(move || wait_banner(addr, wait))
        .await
        .map_err(|e| format!("the SSH banner task failed: {e}"))??;
    let limit = left(LOGIN_TIMEOUT);
    let login = async {
        let t = SshTransport::login_unverified(target, auth, limit)
            .await
            .map_err(|e| e.message().to_string())?;
        let out = t
            .exec(command, None)
            .await
            .map_err(|e| format!("running `{command}` in the VM ({target}): {}", e.message()))?;
        if !out.success() {
            return Err(format!(
                "`{command}` in the VM ({target}) exited with status {}: {}",
                out.status,
                out.stderr_tail(3).trim()
            ));
        }
        Ok(LoggedIn {
            host_key: t.host_key_fingerprint().to_string(),
            output: out.stdout_str().trim().to_string(),
        })
    };
    tokio::time::timeout(limit, login)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "the login to {target} and `{command}` did not finish within {} ms",
                limit.as_millis()
            ))
        })
}

/// Try [`login_attempt`] every `every` until one succeeds or `deadline`
/// passes (the by-hand baseline of the bench; the extension runs its own
/// loop, which also watches qemu). The error is the last attempt's.
pub async fn wait_for_login(
    target: &SshLogin,
    auth: &SshAuth,
    command: &str,
    deadline: Instant,
    every: Duration,
) -> Result<LoggedIn, String> {
    loop {
        let why = match login_attempt(target, auth, command, deadline).await {
            Ok(l) => return Ok(l),
            Err(why) => why,
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(why);
        }
        tokio::time::sleep(every.min(deadline - now)).await;
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

    #[tokio::test]
    async fn nothing_listening_fails_fast() {
        let closed = sandboxer_testkit::net::ClosedPort::new().unwrap();
        let target = SshLogin {
            host: "127.0.0.1".into(),
            port: closed.port(),
            user: "root".into(),
        };
        let started = std::time::Instant::now();
        let e = login_attempt(
            &target,
            &SshAuth::Default,
            "true",
            Instant::now() + Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert!(e.contains("TCP connect"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
