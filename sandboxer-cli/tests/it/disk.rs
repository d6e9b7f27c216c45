//! The embedded database when the disk fills up or the data dir turns
//! read-only: a clear error with exit 1, every change acknowledged before
//! kept, and the database opening again once there is room. The data dir
//! is a small tmpfs of its own (mounted by the test, which needs root, as
//! the testbed has).

use std::path::{Path, PathBuf};
use std::process::Command;

use sandboxer_testkit::home::Home;

/// A tmpfs of `size` mounted on a temp dir, unmounted on drop.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size: &str) -> SmallFs {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            sandboxer_testkit::testbed::missing(
                "disk tests",
                "mounting a tmpfs failed",
                "run the tests as root, as scripts/test does on the testbed",
            );
        }
        SmallFs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount(&self, opts: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(self.path())
            .status()
            .unwrap();
        assert!(st.success(), "remount {opts}");
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn home_on(fs: &SmallFs) -> Home {
    let mut h = crate::home();
    h.data = fs.path().join("data");
    h
}

/// Fill the file system but for about `room` bytes.
fn fill(fs: &SmallFs, room: u64) -> PathBuf {
    let filler = fs.path().join("filler");
    let st = nix_statvfs(fs.path());
    let free = st.saturating_sub(room);
    std::fs::write(&filler, vec![0u8; free as usize]).unwrap();
    filler
}

fn nix_statvfs(p: &Path) -> u64 {
    let out = Command::new("stat")
        .args(["-f", "-c", "%a %S"])
        .arg(p)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut it = text.split_whitespace().map(|n| n.parse::<u64>().unwrap());
    it.next().unwrap() * it.next().unwrap()
}

fn available(h: &Home, actor: &str) -> String {
    h.run(&["credits", "balance", "--actor", actor, "--json"])
        .ok()
        .json()["account"]["granted"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed (root, to mount a tmpfs): scripts/testbed up, then source .testbed/env"
)]
fn a_full_disk_is_a_clear_error_and_loses_no_acknowledged_change() {
    let fs = SmallFs::mount("8m");
    let h = home_on(&fs);
    h.run(&[
        "credits", "grant", "--actor", "agt:full", "1", "--key", "first",
    ])
    .ok();
    let filler = fill(&fs, 64 * 1024);
    let mut acknowledged = 1u64;
    let mut refused = None;
    for i in 0..5000 {
        let key = format!("grant-{i}-{}", "k".repeat(150));
        let r = h.run(&[
            "credits", "grant", "--actor", "agt:full", "1", "--key", &key,
        ]);
        if r.code == 0 {
            acknowledged += 1;
        } else {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("the disk never filled up");
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("disk is full") || r.stderr.contains("No space left"),
        "a clear error: {}",
        r.stderr
    );
    std::fs::remove_file(filler).unwrap();
    // Room again: the database opens and holds every acknowledged grant.
    assert_eq!(available(&h, "agt:full"), acknowledged.to_string());
    h.run(&["db", "check"]).ok();
}

#[test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed (root, to mount a tmpfs): scripts/testbed up, then source .testbed/env"
)]
fn a_read_only_data_dir_refuses_changes_clearly_and_keeps_everything() {
    let fs = SmallFs::mount("16m");
    let h = home_on(&fs);
    h.run(&["credits", "grant", "--actor", "agt:ro", "5"]).ok();
    let dump = h.store_dump();
    fs.remount("ro");
    for args in [
        &["credits", "grant", "--actor", "agt:ro", "1"][..],
        &["tokens", "add", "--actor", "agt:ro"],
    ] {
        let r = h.run(args);
        assert_eq!(r.code, 1, "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("sandboxer.db") || r.stderr.contains("read-only"),
            "{args:?} names what is read-only: {}",
            r.stderr
        );
    }
    fs.remount("rw");
    assert_eq!(h.store_dump(), dump, "nothing changed, nothing lost");
    assert_eq!(available(&h, "agt:ro"), "5");
}
