//! The SSH transport against the testbed's sshd hosts (`scripts/testbed
//! up`). Every host is this machine, so the tests check the host's side of
//! things through the local filesystem.
//!
//! stderr is checked by its end: the login shell sshd runs each command
//! with may print first (root's `~/.bashrc` on these machines runs `pyenv
//! init`, which complains when two commands start at once).
//!
//! Only `spare01` is ever stopped, and the tests that use it hold a file
//! lock in the testbed dir, so they take turns under cargo test and nextest.

use std::os::fd::AsRawFd as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sandboxer_core::hosts::{HostKind, HostSpec, Hosts};
use sandboxer_core::transport::{shell_quote, Connector as _, Transport};
use sandboxer_core::ErrorKind;
use sandboxer_testkit::testbed::{require_testbed, Testbed};
use sandboxer_testkit::wait;
use sandboxer_transport::{trust_host_key, DefaultConnector, SshTransport};

fn host(tb: &Testbed, name: &str) -> HostSpec {
    Hosts::load(&tb.config_dir())
        .unwrap()
        .require(name)
        .unwrap()
}

fn with_known_hosts(mut spec: HostSpec, path: &Path) -> HostSpec {
    if let HostKind::Ssh { known_hosts, .. } = &mut spec.kind {
        *known_hosts = Some(path.to_path_buf());
    }
    spec
}

fn with_identity(mut spec: HostSpec, path: &Path) -> HostSpec {
    if let HostKind::Ssh { identity_file, .. } = &mut spec.kind {
        *identity_file = path.to_path_buf();
    }
    spec
}

async fn connect(tb: &Testbed, name: &str) -> SshTransport {
    SshTransport::connect(&host(tb, name), &tb.config_dir())
        .await
        .unwrap()
}

fn p(path: &Path) -> String {
    path.to_str().unwrap().to_string()
}

/// The testbed's known-hosts line for `name` (`[127.0.0.N]:2222 TYPE KEY`).
fn known_line(tb: &Testbed, name: &str) -> String {
    let addr = tb.host(name).unwrap().address;
    std::fs::read_to_string(&tb.known_hosts)
        .unwrap()
        .lines()
        .find(|l| l.starts_with(&format!("[{addr}]:")))
        .unwrap()
        .to_string()
}

/// `ssh-keygen -l` of host `name`'s public host key: `SHA256:...`.
fn keygen_fingerprint(tb: &Testbed, name: &str) -> String {
    let pubkey = tb
        .dir
        .join("hosts")
        .join(name)
        .join("ssh_host_ed25519_key.pub");
    let out = std::process::Command::new("ssh-keygen")
        .arg("-l")
        .arg("-f")
        .arg(&pubkey)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

/// Holds the testbed's `spare01` for one test (an exclusive `flock`).
struct Spare {
    _lock: std::fs::File,
}

async fn lock_spare(tb: &Testbed) -> Spare {
    let path = tb.dir.join("spare01.test-lock");
    tokio::task::spawn_blocking(move || {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap();
        // SAFETY: flock(2) on a descriptor we own.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
        Spare { _lock: f }
    })
    .await
    .unwrap()
}

/// The `Accepted publickey` lines of a host's sshd log.
fn accepted_logins(tb: &Testbed, name: &str) -> usize {
    std::fs::read_to_string(tb.dir.join("hosts").join(name).join("sshd.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("Accepted publickey"))
        .count()
}

#[tokio::test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn ssh_connect_and_exec_round_trip_with_timings() {
    let tb = require_testbed("ssh_connect_and_exec_round_trip_with_timings");
    let spec = host(&tb, "sandboxer01");
    let started = Instant::now();
    let t = SshTransport::connect(&spec, &tb.config_dir())
        .await
        .unwrap();
    let connect_time = started.elapsed();
    assert_eq!(t.host(), "sandboxer01");
    assert_eq!(t.address(), "127.0.0.2");
    assert_eq!(t.data_dir(), p(&tb.host_data_dir("sandboxer01")));
    assert_eq!(
        t.host_key_fingerprint(),
        keygen_fingerprint(&tb, "sandboxer01")
    );

    let mut round_trips = Vec::new();
    for _ in 0..20 {
        let s = Instant::now();
        let out = t.exec("true", None).await.unwrap();
        round_trips.push(s.elapsed());
        assert!(out.success());
    }
    round_trips.sort();
    eprintln!(
        "ssh timings: connect+auth {:?}; exec `true` round trip median {:?}, min {:?}, max {:?}",
        connect_time,
        round_trips[round_trips.len() / 2],
        round_trips[0],
        round_trips[round_trips.len() - 1]
    );

    let out = t
        .exec("echo out; echo err >&2; echo more; exit 3", None)
        .await
        .unwrap();
    assert_eq!(out.status, 3);
    assert_eq!(out.stdout_str(), "out\nmore\n");
    assert_eq!(out.stderr_tail(1), "err");

    let out = t.exec("kill -TERM $$", None).await.unwrap();
    assert_eq!(out.status, 128 + libc::SIGTERM);

    // The script runs under sh, in the login user's home.
    let out = t
        .exec("echo \"$0\"; pwd; echo \"$HOME\"", None)
        .await
        .unwrap();
    let lines: Vec<String> = out.stdout_str().lines().map(String::from).collect();
    assert_eq!(lines[0], "sh");
    assert_eq!(lines[1], lines[2]);

    // Without input, stdin is empty.
    let out = t.exec("cat; echo end", None).await.unwrap();
    assert_eq!(out.stdout_str(), "end\n");
    let out = t.exec("tr a-z A-Z", Some(b"hello\n")).await.unwrap();
    assert_eq!(out.stdout_str(), "HELLO\n");
    // A script that ignores its (large) input still ends normally.
    let big = vec![b'x'; 8 << 20];
    let out = t.exec("echo done", Some(&big)).await.unwrap();
    assert_eq!(out.stdout_str(), "done\n");
}

#[tokio::test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn ssh_large_stdin_stdout_and_stderr_at_once_do_not_deadlock() {
    let tb = require_testbed("ssh_large_stdin_stdout_and_stderr_at_once");
    let t = connect(&tb, "sandboxer01").await;
    // Several MB on both streams at the same time.
    let script = "(head -c 3000000 /dev/zero | tr '\\0' e >&2) & \
                  head -c 5000000 /dev/zero | tr '\\0' o; wait";
    let out = t.exec(script, None).await.unwrap();
    assert!(out.success(), "{}", out.stderr_tail(3));
    assert_eq!(out.stdout.len(), 5_000_000);
    assert!(out.stdout.iter().all(|b| *b == b'o'));
    assert!(out.stderr.ends_with(&vec![b'e'; 3_000_000]));

    // Large input echoed back while it is still being sent, with stderr.
    let input: Vec<u8> = (0..6_000_000u32).map(|i| (i % 251) as u8).collect();
    let out = t.exec("tee /dev/stderr | cat", Some(&input)).await.unwrap();
    assert!(out.success());
    assert!(out.stdout == input, "stdout differs from the input");
    assert!(
        out.stderr.ends_with(&input),
        "stderr differs from the input"
    );
}

#[tokio::test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn ssh_files_are_written_copied_and_read_atomically() {
    let tb = require_testbed("ssh_files_are_written_copied_and_read_atomically");
    let t = connect(&tb, "coulombcore").await;
    let dir = remote_tempdir();

    let target = dir.path().join("a/b c/file.txt");
    t.write_file(&p(&target), b"one", 0o640).await.unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"one");
    let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640);
    t.write_file(&p(&target), b"two, longer", 0o755)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"two, longer");
    let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o755);
    let names: Vec<_> = std::fs::read_dir(target.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("file.txt")],
        "temp files left"
    );
    assert_eq!(
        t.read_file(&p(&target)).await.unwrap(),
        Some(b"two, longer".to_vec())
    );
    // Empty files too.
    t.write_file(&p(&target), b"", 0o600).await.unwrap();
    assert_eq!(t.read_file(&p(&target)).await.unwrap(), Some(Vec::new()));

    // 20 MB of not-quite-random bytes, copied and read back.
    let big: Vec<u8> = (0..20u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let src = dir.path().join("big.bin");
    std::fs::write(&src, &big).unwrap();
    let dst = dir.path().join("remote/big.bin");
    let s = Instant::now();
    t.copy_file(&src, &p(&dst), 0o600).await.unwrap();
    let copy_time = s.elapsed();
    assert!(std::fs::read(&dst).unwrap() == big, "the copy differs");
    let mode = std::fs::metadata(&dst).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600);
    let s = Instant::now();
    let back = t.read_file(&p(&dst)).await.unwrap().unwrap();
    let read_time = s.elapsed();
    assert!(back == big, "read_file differs");
    let s = Instant::now();
    t.write_file(&p(&dst), &big, 0o644).await.unwrap();
    let write_time = s.elapsed();
    assert!(std::fs::read(&dst).unwrap() == big);
    eprintln!(
        "ssh timings: 20 MiB copy_file {copy_time:?}, write_file {write_time:?}, read_file {read_time:?}"
    );

    // Missing files (and paths under a plain file) are None; a folder is Io.
    assert_eq!(
        t.read_file(&p(&dir.path().join("nope"))).await.unwrap(),
        None
    );
    assert_eq!(
        t.read_file(&format!("{}/below", p(&dst))).await.unwrap(),
        None
    );
    let err = t.read_file(&p(dir.path())).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err:?}");

    // Writing over a folder fails, names the path, and leaves nothing.
    let err = t.write_file(&p(dir.path()), b"x", 0o644).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err:?}");
    let folder = dir.path().join("a");
    let err = t.write_file(&p(&folder), b"x", 0o644).await.unwrap_err();
    assert!(err.message().contains(&p(&folder)), "{err}");
    assert!(folder.is_dir());

    // A missing local file fails before anything reaches the host.
    let err = t
        .copy_file(&dir.path().join("no-such"), &p(&dst), 0o600)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert!(
        std::fs::read(&dst).unwrap() == big,
        "a failed copy changed the target"
    );
}

#[tokio::test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn ssh_a_transport_is_one_connection_for_all_its_calls() {
    let tb = require_testbed("ssh_a_transport_is_one_connection_for_all_its_calls");
    let t = Arc::new(connect(&tb, "sandboxer01").await);
    // SSH_CONNECTION is "client_addr client_port server_addr server_port".
    async fn client_port(t: &dyn Transport) -> String {
        let out = t.exec("echo $SSH_CONNECTION", None).await.unwrap();
        let s = out.stdout_str();
        let f: Vec<&str> = s.split_whitespace().collect();
        assert_eq!(f.len(), 4, "{s:?}");
        f[1].to_string()
    }
    let first = client_port(t.as_ref()).await;
    for _ in 0..10 {
        assert_eq!(client_port(t.as_ref()).await, first);
    }
    let dir = remote_tempdir();
    t.write_file(&p(&dir.path().join("f")), b"x", 0o644)
        .await
        .unwrap();
    t.read_file(&p(&dir.path().join("f"))).await.unwrap();
    assert_eq!(client_port(t.as_ref()).await, first);

    // Concurrent calls share it too, each on its own channel, and run at
    // the same time (one after the other they would take 8 s at least).
    let mut tasks = Vec::new();
    for i in 0..8 {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let out = t
                .exec(&format!("sleep 1; echo {i} $SSH_CONNECTION"), None)
                .await
                .unwrap();
            out.stdout_str()
        }));
    }
    let started = Instant::now();
    for (i, task) in tasks.into_iter().enumerate() {
        let line = task.await.unwrap();
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f[0], i.to_string());
        assert_eq!(f[2], first, "call {i} used another connection");
    }
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "concurrent calls ran one after the other: {:?}",
        started.elapsed()
    );

    // Another transport is another connection.
    let other = connect(&tb, "sandboxer01").await;
    assert_ne!(client_port(&other).await, first);
}

#[tokio::test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn ssh_concurrent_calls_with_large_data_on_one_connection() {
    let tb = require_testbed("ssh_concurrent_calls_with_large_data");
    let t = Arc::new(connect(&tb, "coulombcore").await);
    let dir = remote_tempdir();
    let mut tasks = Vec::new();
    for i in 0..6u8 {
        let t = t.clone();
        let file = p(&dir.path().join(format!("f{i}")));
        tasks.push(tokio::spawn(async move {
            let data: Vec<u8> = (0..(1u32 << 20) + u32::from(i))
                .map(|n| (n % 241) as u8 ^ i)
                .collect();
            let out = t.exec("cat; echo done >&2", Some(&data)).await.unwrap();
            assert!(out.stdout == data, "call {i}: stdout differs");
            assert!(out.stderr.ends_with(b"done\n"), "call {i}");
            t.write_file(&file, &data, 0o600).await.unwrap();
            assert!(t.read_file(&file).await.unwrap().unwrap() == data);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn ssh_shell_quoted_values_arrive_literally_and_run_nothing() {
    let tb = require_testbed("ssh_shell_quoted_values_arrive_literally");
    let t = connect(&tb, "coulombcore").await;
    let markers = ["/tmp/pwned-ssh", "/tmp/pwned-ssh2", "/tmp/pwned-ssh3"];
    for m in markers {
        let _ = std::fs::remove_file(m);
    }
    let [m1, m2, m3] = markers;
    let payloads = [
        format!("/tmp/x; touch {m1}"),
        format!("repo=/tmp/x; touch {m1}"),
        format!("$(touch {m2})"),
        format!("`touch {m3}`"),
        format!("'; touch {m1}; echo '"),
        format!("\"; touch {m1}; echo \""),
        format!("\"$(touch {m2})\""),
        format!("x' \"$(touch {m2})\" '`touch {m3}`"),
        format!("a\nb; touch {m1}\n"),
        format!("$HOME ${{PATH}} * ? [a] ~ | & > {m1} < /dev/null"),
        "with  two  spaces\ttab".to_string(),
        "\\back\\slash\\".to_string(),
        "it's".to_string(),
        String::new(),
        "plain-word_1.2".to_string(),
    ];
    let dir = remote_tempdir();
    for (i, payload) in payloads.iter().enumerate() {
        let q = shell_quote(payload);
        let script = format!("set -- {q}; echo \"$#\"; printf '%s' \"$1\"");
        let out = t.exec(&script, None).await.unwrap();
        assert!(out.success(), "{payload:?}: {}", out.stderr_tail(5));
        let stdout = out.stdout_str();
        let (count, value) = stdout.split_once('\n').unwrap();
        assert_eq!(count, "1", "{payload:?} was split into {count} words");
        assert_eq!(value, payload, "{payload:?} did not arrive literally");

        // As a file name: write, read back, and find it under that name.
        if !payload.is_empty() && !payload.contains('/') {
            let path = format!("{}/{i}-{payload}", p(dir.path()));
            t.write_file(&path, payload.as_bytes(), 0o644)
                .await
                .unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), payload.as_bytes());
            assert_eq!(
                t.read_file(&path).await.unwrap(),
                Some(payload.as_bytes().to_vec())
            );
        }
        for m in markers {
            assert!(
                !Path::new(m).exists(),
                "{payload:?} ran a command: {m} exists"
            );
        }
    }
    // The script itself is one word for the login shell too: quotes,
    // newlines and `$` in it reach `sh -c` untouched.
    let out = t
        .exec("x='it'\"'\"'s'; printf '%s|' \"$x\" \"a\nb\" '$(no)'", None)
        .await
        .unwrap();
    assert_eq!(out.stdout_str(), "it's|a\nb|$(no)|");
    for m in markers {
        assert!(!Path::new(m).exists());
    }
}

#[tokio::test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn ssh_unknown_host_key_is_refused_before_anything_runs() {
    let tb = require_testbed("ssh_unknown_host_key_is_refused");
    let _spare = lock_spare(&tb).await;
    let dir = remote_tempdir();
    let empty = dir.path().join("known_hosts");
    std::fs::write(&empty, "").unwrap();
    let spec = with_known_hosts(host(&tb, "spare01"), &empty);
    let logins = accepted_logins(&tb, "spare01");
    let err = SshTransport::connect(&spec, dir.path()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err:?}");
    assert_eq!(
        err.message(),
        format!(
            "unknown host key for spare01 ([127.0.0.4]:2222), ssh-ed25519 {}",
            keygen_fingerprint(&tb, "spare01")
        )
    );
    assert!(
        err.hint()
            .unwrap()
            .contains("sandboxer hosts trust spare01"),
        "{err:?}"
    );
    // No file at all is the same, and the default is the config dir's.
    let mut spec = host(&tb, "spare01");
    if let HostKind::Ssh { known_hosts, .. } = &mut spec.kind {
        *known_hosts = None;
    }
    let err = SshTransport::connect(&spec, dir.path().join("none").as_path())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err:?}");
    assert!(err
        .hint()
        .unwrap()
        .contains(&p(&dir.path().join("none/known_hosts"))));
    // The refusal came before authentication: the host logged no login.
    assert_eq!(accepted_logins(&tb, "spare01"), logins);
}

#[tokio::test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn ssh_changed_host_key_is_refused() {
    let tb = require_testbed("ssh_changed_host_key_is_refused");
    let dir = remote_tempdir();
    let kh = dir.path().join("known_hosts");
    // coulombcore's key under sandboxer01's address.
    let theirs = known_line(&tb, "coulombcore");
    let key = theirs.split_once(' ').unwrap().1;
    std::fs::write(&kh, format!("# a comment\n[127.0.0.2]:2222 {key}\n")).unwrap();
    let spec = with_known_hosts(host(&tb, "sandboxer01"), &kh);
    let err = SshTransport::connect(&spec, dir.path()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err:?}");
    assert!(
        err.message()
            .starts_with("HOST KEY CHANGED for sandboxer01 ([127.0.0.2]:2222)"),
        "{err}"
    );
    assert!(
        err.message().contains("possible man-in-the-middle"),
        "{err}"
    );
    assert!(
        err.message()
            .contains(&keygen_fingerprint(&tb, "sandboxer01")),
        "{err}"
    );
    assert!(err
        .hint()
        .unwrap()
        .contains("sandboxer hosts trust sandboxer01"));

    // A key for the same address on port 22 is another host: unknown, not
    // changed.
    std::fs::write(&kh, format!("127.0.0.2 {key}\n")).unwrap();
    let err = SshTransport::connect(&spec, dir.path()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized);
    assert!(err.message().starts_with("unknown host key"), "{err}");
}

#[tokio::test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn ssh_trust_host_key_records_the_key_and_connect_works() {
    let tb = require_testbed("ssh_trust_host_key_records_the_key");
    let dir = remote_tempdir();
    let kh = dir.path().join("cfg/known_hosts");
    let spec = with_known_hosts(host(&tb, "sandboxer01"), &kh);

    // Missing file: created with the one line.
    let (s, k) = (spec.clone(), kh.clone());
    let fp = tokio::task::spawn_blocking(move || trust_host_key(&s, &k))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fp, keygen_fingerprint(&tb, "sandboxer01"));
    assert_eq!(
        std::fs::read_to_string(&kh).unwrap(),
        format!("{}\n", known_line(&tb, "sandboxer01"))
    );
    let t = SshTransport::connect(&spec, dir.path()).await.unwrap();
    assert!(t.exec("true", None).await.unwrap().success());

    // A changed key is replaced; other hosts and comments stay.
    let wrong = known_line(&tb, "coulombcore");
    let wrong_key = wrong.split_once(' ').unwrap().1;
    let other = known_line(&tb, "spare01");
    std::fs::write(
        &kh,
        format!("# mine\n{other}\n[127.0.0.2]:2222 {wrong_key}\n"),
    )
    .unwrap();
    assert_eq!(
        SshTransport::connect(&spec, dir.path())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Unauthorized
    );
    let (s, k) = (spec.clone(), kh.clone());
    tokio::task::spawn_blocking(move || trust_host_key(&s, &k))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&kh).unwrap(),
        format!("# mine\n{other}\n{}\n", known_line(&tb, "sandboxer01"))
    );
    let t = SshTransport::connect(&spec, dir.path()).await.unwrap();
    assert!(t.exec("true", None).await.unwrap().success());
}

#[tokio::test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn ssh_a_key_the_host_refuses_is_unauthorized() {
    let tb = require_testbed("ssh_a_key_the_host_refuses_is_unauthorized");
    let dir = remote_tempdir();
    let key = dir.path().join("id_other");
    let out = std::process::Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "not-authorized",
            "-f",
        ])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success());
    let spec = with_identity(host(&tb, "sandboxer01"), &key);
    let err = SshTransport::connect(&spec, &tb.config_dir())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err:?}");
    assert!(
        err.message()
            .contains(&format!("user {}", spec_user(&spec))),
        "{err}"
    );
    assert!(err.message().contains(&p(&key)), "{err}");
    // Never the key itself.
    let secret = std::fs::read_to_string(&key).unwrap();
    let body: String = secret.lines().nth(1).unwrap().to_string();
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let public_b64 = public.split_whitespace().nth(1).unwrap();
    let shown = format!("{err:?} {}", err.hint().unwrap_or(""));
    assert!(
        !shown.contains(&body) && !shown.contains(public_b64),
        "{shown}"
    );

    // A missing key file is a configuration error.
    let spec = with_identity(host(&tb, "sandboxer01"), &dir.path().join("nope"));
    let err = SshTransport::connect(&spec, &tb.config_dir())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err:?}");
}

#[tokio::test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn ssh_a_stopped_host_is_unreachable_within_the_connect_timeout() {
    let tb = require_testbed("ssh_a_stopped_host_is_unreachable");
    let _spare = lock_spare(&tb).await;
    let mut spec = host(&tb, "spare01");
    spec.connect_timeout = Duration::from_secs(2);
    let stopped = tb.stopped_host("spare01").unwrap();
    let started = Instant::now();
    let err = SshTransport::connect(&spec, &tb.config_dir())
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err:?}");
    assert!(err.message().contains("spare01"), "{err}");
    assert!(err.message().contains("127.0.0.4:2222"), "{err}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    drop(stopped);
    let t = SshTransport::connect(&spec, &tb.config_dir())
        .await
        .unwrap();
    assert!(t.exec("true", None).await.unwrap().success());
}

#[tokio::test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn ssh_a_server_that_never_speaks_times_out_as_unreachable() {
    let tb = require_testbed("ssh_a_server_that_never_speaks");
    // Accepts TCP (the kernel does, from the backlog) but never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let mut spec = host(&tb, "sandboxer01");
    spec.address = "127.0.0.1".into();
    if let HostKind::Ssh { port: p, .. } = &mut spec.kind {
        *p = port;
    }
    spec.connect_timeout = Duration::from_millis(700);
    let started = Instant::now();
    let err = SshTransport::connect(&spec, &tb.config_dir())
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err:?}");
    assert!(
        err.message().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[tokio::test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn ssh_a_connection_dropped_mid_command_is_unreachable() {
    let tb = require_testbed("ssh_a_connection_dropped_mid_command");
    let _spare = lock_spare(&tb).await;
    let t = Arc::new(connect(&tb, "spare01").await);
    let dir = remote_tempdir();
    let mark = dir.path().join("running");
    let script = format!("touch {}; sleep 30", shell_quote(&p(&mark)));
    let running = {
        let t = t.clone();
        tokio::spawn(async move { t.exec(&script, None).await })
    };
    wait::until_async(Duration::from_secs(10), "the command to start", || async {
        mark.exists().then_some(())
    })
    .await;
    let stopped = tb.stopped_host("spare01").unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the call noticed the dropped connection")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err:?}");
    assert!(err.message().contains("spare01"), "{err}");
    assert!(err.message().contains("sleep 30"), "{err}");
    // Later calls fail at once, even when the host is back.
    drop(stopped);
    let err = t.exec("true", None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err:?}");
}

#[tokio::test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn ssh_a_command_longer_than_the_command_timeout_is_a_timeout() {
    let tb = require_testbed("ssh_a_command_longer_than_the_command_timeout");
    let mut spec = host(&tb, "coulombcore");
    spec.command_timeout = Duration::from_millis(800);
    let t = SshTransport::connect(&spec, &tb.config_dir())
        .await
        .unwrap();
    let started = Instant::now();
    let err = t.exec("sleep 5\necho late", None).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err:?}");
    assert!(err.message().contains("`sleep 5 ...`"), "{err}");
    assert!(err.message().contains("coulombcore"), "{err}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    // The connection is still good.
    let out = t.exec("echo ok", None).await.unwrap();
    assert_eq!(out.stdout_str(), "ok\n");

    // A dropped (cancelled) call leaves it good as well.
    let cancelled = tokio::time::timeout(Duration::from_millis(200), t.exec("sleep 3", None)).await;
    assert!(cancelled.is_err());
    let out = t.exec("echo still", None).await.unwrap();
    assert_eq!(out.stdout_str(), "still\n");
}

#[tokio::test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn ssh_data_dir_defaults_under_the_remote_home() {
    let tb = require_testbed("ssh_data_dir_defaults_under_the_remote_home");
    let mut spec = host(&tb, "sandboxer01");
    let t = SshTransport::connect(&spec, &tb.config_dir())
        .await
        .unwrap();
    let home = t
        .exec("printf %s \"$HOME\"", None)
        .await
        .unwrap()
        .stdout_str();
    assert!(home.starts_with('/'));
    let home = home.trim_end_matches('/').to_string();

    spec.data_dir = None;
    let t = SshTransport::connect(&spec, &tb.config_dir())
        .await
        .unwrap();
    assert_eq!(t.data_dir(), format!("{home}/.local/share/sandboxer"));
    spec.data_dir = Some("~/sbx/".into());
    let t = SshTransport::connect(&spec, &tb.config_dir())
        .await
        .unwrap();
    assert_eq!(t.data_dir(), format!("{home}/sbx"));
    spec.data_dir = Some("/srv/sandboxer/".into());
    let t = SshTransport::connect(&spec, &tb.config_dir())
        .await
        .unwrap();
    assert_eq!(t.data_dir(), "/srv/sandboxer");
    // Debug shows names, never key material.
    let shown = format!("{t:?}");
    assert!(
        shown.contains("sandboxer01") && shown.contains("SHA256:"),
        "{shown}"
    );
    let key = std::fs::read_to_string(&tb.identity_file).unwrap();
    for line in key.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!shown.contains(line), "{shown}");
    }
}

#[tokio::test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn ssh_the_default_connector_connects_ssh_hosts() {
    let tb = require_testbed("ssh_the_default_connector_connects_ssh_hosts");
    // The host's known_hosts unset: the connector's config dir has it.
    let config = tempfile::tempdir().unwrap();
    std::fs::copy(&tb.known_hosts, config.path().join("known_hosts")).unwrap();
    let mut spec = host(&tb, "sandboxer01");
    if let HostKind::Ssh { known_hosts, .. } = &mut spec.kind {
        *known_hosts = None;
    }
    let c =
        DefaultConnector::with_config_dir(PathBuf::from("/unused"), config.path().to_path_buf());
    let t = c.connect(&spec).await.unwrap();
    assert_eq!(t.host(), "sandboxer01");
    assert_eq!(t.data_dir(), p(&tb.host_data_dir("sandboxer01")));
    assert!(t.exec("true", None).await.unwrap().success());

    let t = sandboxer_transport::connect(&spec, Path::new("/unused"), config.path())
        .await
        .unwrap();
    assert!(t.exec("true", None).await.unwrap().success());

    // Without it there, the key is unknown.
    let empty = tempfile::tempdir().unwrap();
    let c = DefaultConnector::with_config_dir(PathBuf::from("/unused"), empty.path().into());
    let err = c.connect(&spec).await.err().unwrap();
    assert_eq!(err.kind(), ErrorKind::Unauthorized);
}

/// A temp folder the testbed hosts' login user (not root) may write into:
/// the tests read and write it from both sides.
fn remote_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// The login user of an SSH host spec.
fn spec_user(spec: &sandboxer_core::hosts::HostSpec) -> String {
    match &spec.kind {
        sandboxer_core::hosts::HostKind::Ssh { user, .. } => user.clone(),
        sandboxer_core::hosts::HostKind::Local => String::new(),
    }
}

#[tokio::test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn ssh_an_unverified_login_reports_the_host_key_it_did_not_check() {
    use sandboxer_transport::{SshAuth, SshLogin};
    let tb = require_testbed("ssh_an_unverified_login_reports_the_host_key_it_did_not_check");
    let spec = host(&tb, "sandboxer01");
    let login = SshLogin {
        host: spec.address.clone(),
        port: sandboxer_testkit::testbed::SSH_PORT,
        user: spec_user(&spec),
    };
    // No known-hosts file anywhere: the key is presented, not checked.
    let t = SshTransport::login_unverified(
        &login,
        &SshAuth::KeyFile(tb.identity_file.clone()),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let out = t.exec("echo logged-in", None).await.unwrap();
    assert!(out.success(), "{out:?}");
    assert_eq!(out.stdout_str().trim(), "logged-in");
    // The very key the checked connection verifies against known_hosts.
    assert_eq!(
        t.host_key_fingerprint(),
        keygen_fingerprint(&tb, "sandboxer01")
    );

    // A key the host does not know is refused, naming the login.
    let dir = remote_tempdir();
    let other = dir.path().join("id_other");
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(made.success());
    let err =
        SshTransport::login_unverified(&login, &SshAuth::KeyFile(other), Duration::from_secs(10))
            .await
            .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err:?}");
    assert!(err.message().contains(&login.to_string()), "{err}");

    // Nothing listening: unreachable, at once.
    let closed = sandboxer_testkit::net::ClosedPort::new().unwrap();
    let gone = SshLogin {
        host: "127.0.0.1".into(),
        port: closed.port(),
        user: login.user.clone(),
    };
    let err = SshTransport::login_unverified(&gone, &SshAuth::Default, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err:?}");
}
