//! The known-hosts file: where a host's key is looked up, checked and
//! recorded (OpenSSH's format and names), and the host key types asked for.

use super::*;

/// What one SSH host is, from its [`HostSpec`].
pub(super) struct Target<'a> {
    pub(super) name: &'a str,
    pub(super) address: &'a str,
    pub(super) port: u16,
    pub(super) user: &'a str,
    pub(super) identity_file: &'a Path,
    pub(super) connect_timeout: Option<Duration>,
}

impl<'a> Target<'a> {
    pub(super) fn of(spec: &'a HostSpec) -> Result<Self> {
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

    pub(super) fn endpoint(&self) -> String {
        endpoint(self.address, self.port)
    }

    /// The host's name in a known-hosts file: `address` for port 22, else
    /// `[address]:port` (as OpenSSH writes it).
    pub(super) fn known_hosts_name(&self) -> String {
        known_hosts_name(self.address, self.port)
    }

    pub(super) fn unreachable(&self, what: impl std::fmt::Display) -> Error {
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
    pub(super) fn tcp(&self) -> Result<TcpStream> {
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
    pub(super) fn handshake(&self, known: &KnownHostsFile) -> Result<(Session, TcpStream)> {
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
pub(super) struct HostKey {
    /// `ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa`, ...
    pub(super) kind: &'static str,
    /// `SHA256:` and the unpadded base64 of the key's SHA-256, as
    /// `ssh-keygen -l` prints it.
    pub(super) fingerprint: String,
    /// The key blob, base64, as in a known-hosts line.
    pub(super) base64: String,
}

impl HostKey {
    pub(super) fn of(session: &Session) -> Option<(HostKey, Vec<u8>)> {
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
pub(super) struct KnownHostsFile {
    pub(super) path: PathBuf,
    pub(super) lines: Vec<String>,
}

impl KnownHostsFile {
    /// No file and no lines: nothing is known (a login that does not
    /// check the host key).
    pub(super) fn none() -> Self {
        KnownHostsFile {
            path: PathBuf::new(),
            lines: Vec::new(),
        }
    }

    /// Read `path`; a missing file has no lines.
    pub(super) fn load(path: &Path) -> Result<Self> {
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
    pub(super) fn lines_for(&self, name: &str) -> Vec<usize> {
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
    pub(super) fn key_types_for(&self, name: &str) -> Vec<String> {
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
    pub(super) fn check(&self, session: &Session, name: &str, key: &[u8]) -> Result<CheckResult> {
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
    pub(super) fn trust(&mut self, name: &str, key: &HostKey) -> Result<()> {
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

/// Ask libssh2 to prefer the host key algorithms of `types` (known-hosts
/// key types), then the rest it supports, as OpenSSH does: a host known by
/// its RSA key is not failed for offering Ed25519 first.
pub(super) fn prefer_host_key_types(session: &Session, types: &[String]) {
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
pub(super) fn endpoint(address: &str, port: u16) -> String {
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

pub(super) fn known_hosts_name(address: &str, port: u16) -> String {
    if port == 22 {
        address.to_string()
    } else {
        format!("[{address}]:{port}")
    }
}

pub(super) fn key_type_name(kind: HostKeyType) -> &'static str {
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

/// Replace `path` with `data` atomically, keeping the old file's mode
/// (0644 for a new file), creating the folder.
pub(super) fn write_replacing(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644);
    sandboxer_core::fsutil::replace(path, mode, data)
}
