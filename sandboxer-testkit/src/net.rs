//! Addresses for tests that need a peer to be absent.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// A TCP port on 127.0.0.1 that refuses every connection for as long as
/// this value lives.
///
/// Binding a listener to port 0 and dropping it frees the port for the
/// next test that binds port 0, which then answers where a refusal was
/// expected. This socket is bound but never listens: a connection to it is
/// refused by the kernel, and no other socket can take the port meanwhile.
#[derive(Debug)]
pub struct ClosedPort {
    _socket: OwnedFd,
    port: u16,
}

impl ClosedPort {
    pub fn new() -> io::Result<ClosedPort> {
        // SAFETY: socket(2) with constant arguments; the result is checked
        // and owned right away.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
            },
            sin_zero: [0; 8],
        };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: `addr` is a valid sockaddr_in of `len` bytes for both
        // calls; getsockname writes at most `len` bytes into it.
        unsafe {
            if libc::bind(fd, (&raw const addr).cast(), len) != 0
                || libc::getsockname(fd, (&raw mut addr).cast(), &mut len) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(ClosedPort {
            _socket: socket,
            port: u16::from_be(addr.sin_port),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_refused_and_the_port_stays_taken() {
        let closed = ClosedPort::new().unwrap();
        assert_ne!(closed.port(), 0);
        let e = std::net::TcpStream::connect(("127.0.0.1", closed.port())).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        let taken = std::net::TcpListener::bind(("127.0.0.1", closed.port())).unwrap_err();
        assert_eq!(taken.kind(), io::ErrorKind::AddrInUse);
    }
}
