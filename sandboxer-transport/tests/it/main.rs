//! Integration tests of the transports against the real machine (and, in
//! `ssh`, the testbed's sshd hosts).

mod ssh;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sandboxer_core::hosts::{HostKind, HostSpec};
use sandboxer_core::transport::{shell_quote, Transport};
use sandboxer_core::ErrorKind;
use sandboxer_testkit::wait;
use sandboxer_transport::{connect, LocalTransport};

fn local(dir: &Path) -> LocalTransport {
    LocalTransport::new(dir.to_path_buf())
}

fn p(path: &Path) -> String {
    path.to_str().unwrap().to_string()
}

/// Whether `pid` is gone: no process, or a zombie nobody reaped yet (PID 1
/// of a container may not reap orphans).
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            let state = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
            state.starts_with('Z') || state.starts_with('X')
        }
    }
}

fn wait_gone(pid: u32) -> bool {
    wait::within(Duration::from_secs(5), || process_gone(pid).then_some(())).is_some()
}

fn read_pid(path: &Path) -> u32 {
    wait::until(Duration::from_secs(5), format!("a pid in {path:?}"), || {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
    })
}

#[tokio::test]
async fn exec_captures_stdout_stderr_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let t = local(dir.path());
    let out = t
        .exec("echo out; echo err >&2; echo more; exit 3", None)
        .await
        .unwrap();
    assert_eq!(out.status, 3);
    assert!(!out.success());
    assert_eq!(out.stdout_str(), "out\nmore\n");
    assert_eq!(out.stderr_tail(5), "err");

    let ok = t.exec("true", None).await.unwrap();
    assert!(ok.success());
    assert!(ok.stdout.is_empty() && ok.stderr.is_empty());
}

#[tokio::test]
async fn exec_reports_a_signal_as_128_plus_its_number() {
    let dir = tempfile::tempdir().unwrap();
    let out = local(dir.path()).exec("kill -TERM $$", None).await.unwrap();
    assert_eq!(out.status, 128 + libc::SIGTERM);
}

#[tokio::test]
async fn exec_feeds_stdin_and_otherwise_gives_dev_null() {
    let dir = tempfile::tempdir().unwrap();
    let t = local(dir.path());
    let out = t.exec("tr a-z A-Z", Some(b"hello\n")).await.unwrap();
    assert_eq!(out.stdout_str(), "HELLO\n");

    // More than a pipe buffer in and out, at the same time: no deadlock.
    let big = vec![b'x'; 1 << 20];
    let out = t.exec("cat", Some(&big)).await.unwrap();
    assert_eq!(out.stdout.len(), big.len());

    // A script that ignores its input still ends normally.
    let out = t.exec("echo done", Some(&big)).await.unwrap();
    assert_eq!(out.stdout_str(), "done\n");

    // Without input, stdin is empty rather than the terminal.
    let out = t.exec("cat; echo end", None).await.unwrap();
    assert_eq!(out.stdout_str(), "end\n");
}

#[tokio::test]
async fn exec_runs_in_the_current_folder_with_sh() {
    let dir = tempfile::tempdir().unwrap();
    let out = local(dir.path())
        .exec("pwd; echo \"$0\"", None)
        .await
        .unwrap();
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(out.stdout_str(), format!("{}\nsh\n", cwd.display()));
}

#[tokio::test]
async fn exec_timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let t = local(dir.path()).with_command_timeout(Duration::from_millis(300));
    let pidfile = dir.path().join("child.pid");
    let script = format!("sleep 30 & echo $! > {}; wait", shell_quote(&p(&pidfile)));
    let started = Instant::now();
    let err = t.exec(&script, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let child = read_pid(&pidfile);
    assert!(
        wait_gone(child),
        "the script's background child {child} survived"
    );
}

#[tokio::test]
async fn dropping_an_exec_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let t = local(dir.path());
    let pidfile = dir.path().join("child.pid");
    let script = format!("sleep 30 & echo $! > {}; wait", shell_quote(&p(&pidfile)));
    let cancelled = tokio::time::timeout(Duration::from_millis(300), t.exec(&script, None)).await;
    assert!(cancelled.is_err(), "the script should still be running");
    let child = read_pid(&pidfile);
    assert!(
        wait_gone(child),
        "the script's background child {child} survived"
    );
}

#[tokio::test]
async fn a_detached_child_outlives_exec() {
    let dir = tempfile::tempdir().unwrap();
    let t = local(dir.path());
    let script = "sleep 30 </dev/null >/dev/null 2>&1 & echo $!";
    let out = t.exec(script, None).await.unwrap();
    let pid: u32 = out.stdout_str().trim().parse().unwrap();
    assert!(!process_gone(pid), "the detached child should still run");
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert!(wait_gone(pid));
}

#[tokio::test]
async fn write_file_creates_folders_sets_the_mode_and_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let t = local(dir.path());
    let target = dir.path().join("a/b/c/file.txt");
    t.write_file(&p(&target), b"one", 0o640).await.unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"one");
    let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640);

    // Replacing keeps no temp files behind and applies the new mode even
    // where the umask would strip it.
    t.write_file(&p(&target), b"two, longer", 0o777)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"two, longer");
    let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o777);
    let names: Vec<_> = std::fs::read_dir(target.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("file.txt")]);

    // A read-only mode still gets its content.
    let ro = dir.path().join("ro");
    t.write_file(&p(&ro), b"x", 0o400).await.unwrap();
    assert_eq!(std::fs::read(&ro).unwrap(), b"x");
}

#[tokio::test]
async fn write_file_is_atomic_for_readers() {
    let dir = tempfile::tempdir().unwrap();
    let t = std::sync::Arc::new(local(dir.path()));
    let target = p(&dir.path().join("f"));
    let a = vec![b'a'; 256 * 1024];
    let b = vec![b'b'; 256 * 1024];
    t.write_file(&target, &a, 0o644).await.unwrap();
    let writer = {
        let (t, target, a, b) = (t.clone(), target.clone(), a.clone(), b.clone());
        tokio::spawn(async move {
            for i in 0..50 {
                let data = if i % 2 == 0 { &b } else { &a };
                t.write_file(&target, data, 0o644).await.unwrap();
            }
        })
    };
    for _ in 0..200 {
        let seen = t.read_file(&target).await.unwrap().expect("file exists");
        assert!(seen == a || seen == b, "a reader saw a partial file");
    }
    writer.await.unwrap();
}

#[tokio::test]
async fn write_file_to_a_folder_path_fails_with_io() {
    let dir = tempfile::tempdir().unwrap();
    let t = local(dir.path());
    let err = t.write_file(&p(dir.path()), b"x", 0o644).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err:?}");
    assert!(err.message().contains(&p(dir.path())), "{err}");
}

#[tokio::test]
async fn copy_file_copies_with_mode_and_folders() {
    let dir = tempfile::tempdir().unwrap();
    let t = local(dir.path());
    let src = dir.path().join("src.bin");
    std::fs::write(&src, b"#!/bin/sh\necho copied\n").unwrap();
    let dst = dir.path().join("x/y/run.sh");
    t.copy_file(&src, &p(&dst), 0o755).await.unwrap();
    let mode = std::fs::metadata(&dst).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o755);
    let out = t.exec(&shell_quote(&p(&dst)), None).await.unwrap();
    assert_eq!(out.stdout_str(), "copied\n");

    // Over an existing file.
    std::fs::write(&src, b"new").unwrap();
    t.copy_file(&src, &p(&dst), 0o600).await.unwrap();
    assert_eq!(std::fs::read(&dst).unwrap(), b"new");
    let mode = std::fs::metadata(&dst).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600);

    let err = t
        .copy_file(&dir.path().join("nope"), &p(&dst), 0o600)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert_eq!(
        std::fs::read(&dst).unwrap(),
        b"new",
        "a failed copy left the target alone"
    );
}

#[tokio::test]
async fn read_file_of_missing_files_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let t = local(dir.path());
    let f = dir.path().join("there");
    std::fs::write(&f, b"content").unwrap();
    assert_eq!(
        t.read_file(&p(&f)).await.unwrap(),
        Some(b"content".to_vec())
    );
    assert_eq!(
        t.read_file(&p(&dir.path().join("nope"))).await.unwrap(),
        None
    );
    // A path "under" a plain file does not exist either.
    assert_eq!(
        t.read_file(&format!("{}/below", p(&f))).await.unwrap(),
        None
    );
    // Reading a folder is an error, not "missing".
    let err = t.read_file(&p(dir.path())).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
}

#[tokio::test]
async fn shell_quoted_values_reach_the_command_as_one_literal_word() {
    let dir = tempfile::tempdir().unwrap();
    let t = local(dir.path());
    let marker = p(&dir.path().join("pwned"));
    let payloads = [
        format!("; touch {marker}"),
        format!("$(touch {marker})"),
        format!("`touch {marker}`"),
        format!("'; touch {marker}; echo '"),
        format!("\"; touch {marker}; echo \""),
        format!("\"$(touch {marker})\""),
        format!("x' \"$(touch {marker})\" '`touch {marker}`"),
        format!("a\nb; touch {marker}"),
        format!("$HOME ${{PATH}} * ? [a] ~ | & > {marker} < /dev/null"),
        "with  two  spaces".to_string(),
        "\\back\\slash\\".to_string(),
        String::new(),
        "plain-word_1.2".to_string(),
    ];
    for payload in &payloads {
        let q = shell_quote(payload);
        let script = format!("set -- {q}; echo \"$#\"; printf '%s' \"$1\"");
        let out = t.exec(&script, None).await.unwrap();
        assert!(out.success(), "{payload:?}: {}", out.stderr_tail(5));
        let stdout = out.stdout_str();
        let (count, value) = stdout.split_once('\n').unwrap();
        assert_eq!(count, "1", "{payload:?} was split into {count} words");
        assert_eq!(value, payload, "{payload:?} did not arrive literally");
        assert!(
            !Path::new(&marker).exists(),
            "{payload:?} ran a command through the shell"
        );
    }
}

#[tokio::test]
async fn connect_gives_local() {
    let dir = tempfile::tempdir().unwrap();
    let t = connect(&HostSpec::local(), dir.path(), Path::new("/unused"))
        .await
        .unwrap();
    assert_eq!(t.host(), "local");
    assert_eq!(t.address(), "127.0.0.1");
    assert_eq!(t.data_dir(), p(dir.path()));
    assert!(t.exec("true", None).await.unwrap().success());

    let mut spec = HostSpec::local();
    spec.data_dir = Some(p(&dir.path().join("elsewhere")));
    spec.address = "192.0.2.10".into();
    let t = connect(&spec, Path::new("/unused"), Path::new("/unused"))
        .await
        .unwrap();
    assert_eq!(t.data_dir(), p(&dir.path().join("elsewhere")));
    assert_eq!(t.address(), "192.0.2.10");
}

#[tokio::test]
async fn connect_to_an_ssh_host_without_its_key_file_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let ssh = HostSpec {
        name: "sandboxer01".into(),
        address: "127.0.0.2".into(),
        kind: HostKind::Ssh {
            port: 22,
            user: "sandboxer".into(),
            identity_file: PathBuf::from("/nonexistent/id_ed25519"),
            known_hosts: None,
        },
        ..HostSpec::local()
    };
    let err = connect(&ssh, dir.path(), dir.path())
        .await
        .err()
        .expect("no key, no connection");
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert!(err.message().contains("/nonexistent/id_ed25519"), "{err}");
    assert!(err.hint().unwrap().contains("sandboxer01"));
}

#[tokio::test]
async fn the_default_connector_connects_like_connect() {
    use sandboxer_core::transport::Connector as _;
    let dir = tempfile::tempdir().unwrap();
    let c = sandboxer_transport::DefaultConnector::new(dir.path().to_path_buf());
    let t = c.connect(&HostSpec::local()).await.unwrap();
    assert_eq!(
        (t.host(), t.data_dir().as_str()),
        ("local", p(dir.path()).as_str())
    );
}
