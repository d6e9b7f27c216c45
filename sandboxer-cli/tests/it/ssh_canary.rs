//! The canary (`profile.sandbox-canary`) on the testbed's SSH hosts through
//! the real binary: the agent binary is uploaded once per host and
//! content, telemetry comes back, `inspect host` reads the same inventory,
//! and `hosts trust` makes a host with an unknown key usable. Each test has
//! a data folder of its own on the host (see [`crate::compose::Bed`]).

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::compose::Bed;
use sandboxer_testkit::wait;

/// Every agent binary under `DATA/agents/*/sandboxer`.
fn agent_binaries(data: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(data.join("agents")) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path().join("sandboxer"))
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

/// 16 hex digits of the SHA-256 of `file` (`sha256sum`): the folder the
/// canary names the binary's copy after.
fn content_key(file: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..16].to_string()
}

fn pid_alive(pid: i64) -> bool {
    // kill(pid, 0): 0 when the process exists; a zombie counts as gone.
    let exists = unsafe { libc::kill(pid as i32, 0) == 0 };
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
    });
    exists && !zombie
}

#[test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
fn canary_over_ssh_uploads_the_binary_once_and_reports_telemetry() {
    let bed = Bed::new("canary_over_ssh_uploads_the_binary_once");
    bed.write_hosts(&[bed.host("sandboxer01"), bed.host("coulombcore")]);
    let data = bed.data_dir("sandboxer01");

    let started = Instant::now();
    let a = bed
        .home
        .run(&["create", "--host", "sandboxer01", "--json"])
        .ok()
        .json();
    let first = started.elapsed();
    assert_eq!(a["state"], "ready", "{a:#}");
    assert_eq!(a["profile"], "profile.sandbox-canary");
    assert_eq!(a["extension"], "ext.canary");
    assert_eq!(a["host"], "sandboxer01");
    assert_eq!(a["reachability"]["address"], "127.0.0.2");
    let venue = a["reachability"]["details"]["venue"].as_str().unwrap();
    assert!(
        venue.starts_with(&data.display().to_string()),
        "the venue is in the host's data dir: {venue}"
    );
    // Telemetry came back over SSH.
    let tel = &a["telemetry"];
    assert!(tel["cpus"].as_u64().unwrap() >= 1, "{a:#}");
    assert!(tel["mem_total_bytes"].as_u64().unwrap() > 0, "{a:#}");
    assert_eq!(tel["host"], "sandboxer01", "{a:#}");
    assert_eq!(tel["docker"]["present"], true, "{a:#}");
    assert!(
        tel["disk_path"]
            .as_str()
            .unwrap()
            .starts_with(&data.display().to_string()),
        "{a:#}"
    );

    // One binary on the host, named after its content.
    let bins = agent_binaries(&data);
    assert_eq!(bins.len(), 1, "{bins:?}");
    let exe = Path::new(env!("CARGO_BIN_EXE_sandboxer"));
    assert_eq!(
        bins[0]
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy(),
        content_key(exe)
    );
    assert_eq!(
        std::fs::metadata(&bins[0]).unwrap().len(),
        std::fs::metadata(exe).unwrap().len()
    );
    let meta = std::fs::metadata(&bins[0]).unwrap();

    // The second create (the default host: sandboxer01 is listed first)
    // reuses it.
    let started = Instant::now();
    let b = bed.home.run(&["create", "--json"]).ok().json();
    let second = started.elapsed();
    assert_eq!(b["state"], "ready", "{b:#}");
    assert_eq!(b["host"], "sandboxer01", "the default host: {b:#}");
    let bins2 = agent_binaries(&data);
    assert_eq!(bins2, bins, "still one binary");
    let meta2 = std::fs::metadata(&bins[0]).unwrap();
    assert_eq!(
        (meta2.ino(), meta2.mtime(), meta2.mtime_nsec()),
        (meta.ino(), meta.mtime(), meta.mtime_nsec()),
        "the binary was not uploaded again"
    );
    eprintln!("canary over SSH: first create (upload) {first:?}, second (reuse) {second:?}");
    // Both agents run (the hosts are this machine).
    let pids: Vec<i64> = [&a, &b]
        .iter()
        .map(|r| r["reachability"]["details"]["pid"].as_i64().unwrap())
        .collect();
    assert!(pids.iter().all(|p| pid_alive(*p)), "{pids:?}");

    // inspect host reads the same inventory.
    let inv = bed
        .home
        .run(&["inspect", "host", "sandboxer01", "--json"])
        .ok()
        .json();
    assert_eq!(inv["host"], "sandboxer01", "{inv:#}");
    assert_eq!(inv["cpus"], tel["cpus"]);
    assert_eq!(inv["kernel"], tel["kernel"]);
    assert_eq!(inv["venues_running"], 2, "{inv:#}");
    let human = bed
        .home
        .run(&["inspect", "host", "sandboxer01"])
        .ok()
        .stdout;
    assert!(
        human.contains("sandboxer01") && human.contains("venues running  2"),
        "{human}"
    );
    // Without a name: the default host.
    let inv = bed.home.run(&["inspect", "host", "--json"]).ok().json();
    assert_eq!(inv["host"], "sandboxer01");

    for r in [&a, &b] {
        let id = r["id"].as_str().unwrap();
        let d = bed.home.run(&["destroy", id, "--json"]).ok().json();
        assert_eq!(d["state"], "destroyed");
        assert!(!data.join("venues").join(id).exists(), "venue of {id} left");
    }
    wait::within(std::time::Duration::from_secs(10), || {
        (!pids.iter().any(|p| pid_alive(*p))).then_some(())
    });
    assert!(!pids.iter().any(|p| pid_alive(*p)), "agents still run");
    assert_eq!(
        agent_binaries(&data),
        bins,
        "the binary stays for next time"
    );

    // On another host it is uploaded there, once.
    let c = bed
        .home
        .run(&["create", "--host", "coulombcore", "--json"])
        .ok()
        .json();
    assert_eq!(c["host"], "coulombcore");
    assert_eq!(agent_binaries(&bed.data_dir("coulombcore")).len(), 1);
    bed.home.run(&["destroy", c["id"].as_str().unwrap()]).ok();
}

#[test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
fn hosts_trust_makes_an_unknown_host_usable() {
    let bed = Bed::new("hosts_trust_makes_an_unknown_host_usable");
    bed.write_hosts(&[bed.host("coulombcore").unknown_key()]);

    let hosts = bed.home.run(&["hosts", "list", "--json"]).ok().json();
    let row = hosts
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "coulombcore")
        .unwrap()
        .clone();
    assert_eq!(row["reachable"], false, "{row:#}");
    assert!(
        row["error"]
            .as_str()
            .unwrap()
            .starts_with("unknown host key for coulombcore"),
        "{row:#}"
    );
    let refused = bed.home.run(&["create", "--json"]);
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    assert!(
        refused.stdout.contains("unknown host key"),
        "{}",
        refused.stdout
    );
    assert!(!bed.data_dir("coulombcore").exists(), "nothing ran there");

    // The fingerprint printed is the host's (ssh-keygen agrees).
    let out = std::process::Command::new("ssh-keygen")
        .arg("-l")
        .arg("-f")
        .arg(
            bed.tb
                .dir
                .join("hosts")
                .join("coulombcore")
                .join("ssh_host_ed25519_key.pub"),
        )
        .output()
        .unwrap();
    let expected = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    let human = bed.home.run(&["hosts", "trust", "coulombcore"]).ok().stdout;
    assert!(
        human.contains(&format!("trusted coulombcore (127.0.0.3): {expected}")),
        "{human}"
    );
    let known = std::fs::read_to_string(bed.home.config.join("known_hosts")).unwrap();
    assert!(
        known.starts_with("[127.0.0.3]:2222 ssh-ed25519 "),
        "{known}"
    );
    // Trusting again is fine and keeps one line.
    let t = bed
        .home
        .run(&["hosts", "trust", "coulombcore", "--json"])
        .ok()
        .json();
    assert_eq!(t["fingerprint"], expected.as_str());
    let known = std::fs::read_to_string(bed.home.config.join("known_hosts")).unwrap();
    assert_eq!(known.lines().count(), 1, "{known}");

    let hosts = bed.home.run(&["hosts", "list", "--json"]).ok().json();
    assert!(
        hosts
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["name"] == "coulombcore" && h["reachable"] == true),
        "{hosts:#}"
    );
    let rec = bed.home.run(&["create", "--json"]).ok().json();
    assert_eq!(rec["state"], "ready", "{rec:#}");
    assert_eq!(rec["host"], "coulombcore");
    bed.home.run(&["destroy", rec["id"].as_str().unwrap()]).ok();
}
