//! Discovery of the testbed that `scripts/testbed up` starts: a docker
//! engine, the local image `sandboxer/busybox:latest` and three sshd "hosts"
//! on loopback (`sandboxer01` on 127.0.0.2, `coulombcore` on 127.0.0.3,
//! `spare01` on 127.0.0.4, all port 2222, user `sbxhost` by key).
//!
//! `scripts/testbed up` writes `.testbed/env`; sourcing it exports
//! `SANDBOXER_TESTBED` (the state dir), `SANDBOXER_TESTBED_IMAGE` and
//! `SANDBOXER_TEST_DATABASE_URL` (the private PostgreSQL). A test that needs
//! the real components is compiled as ignored without the testbed
//! (`sandboxer-testbed-cfg`: the runner reports it as ignored, never as
//! passed), and with it asks for them first: a component that is down is a
//! failure ([`missing`]), whether or not `CI` is set.
//!
//! ```no_run
//! use sandboxer_testkit::testbed::require_testbed;
//!
//! let tb = require_testbed("compose_up_on_sandboxer01");
//! // Point the CLI at the testbed's hosts file.
//! let out = std::process::Command::new("sandboxer")
//!     .args(["inspect", "host", "sandboxer01", "--json"])
//!     .env("SANDBOXER_CONFIG_DIR", tb.config_dir())
//!     .output();
//! ```
//!
//! Stopping a host (to see placement move on) affects every test that runs at
//! the same time: stop only `spare01`, and only while holding
//! [`Testbed::lock_spare`] (a file lock every crate's tests share), with the
//! [`StoppedHost`] guard so the host comes back even when the test fails:
//!
//! ```no_run
//! # let tb = sandboxer_testkit::testbed::require_testbed("doc");
//! let lock = tb.lock_spare().unwrap();
//! {
//!     let _stopped = lock.stop().unwrap();
//!     // spare01 refuses connections here
//! }
//! // spare01 is up again; the lock goes last
//! drop(lock);
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _};

/// The env var holding the testbed's state dir.
pub const ENV_DIR: &str = "SANDBOXER_TESTBED";
/// The env var holding the image the testbed built.
pub const ENV_IMAGE: &str = "SANDBOXER_TESTBED_IMAGE";
/// The image `scripts/testbed up` builds from busybox-static.
pub const DEFAULT_IMAGE: &str = "sandboxer/busybox:latest";
/// The port every testbed sshd listens on.
pub const SSH_PORT: u16 = 2222;

/// One sshd "host" of the testbed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestbedHost {
    /// The name in `hosts.toml`.
    pub name: &'static str,
    /// Its loopback address; the port is [`SSH_PORT`].
    pub address: &'static str,
}

/// The hosts `scripts/testbed up` starts, in `hosts.toml` order.
pub const HOSTS: [TestbedHost; 3] = [
    TestbedHost {
        name: "sandboxer01",
        address: "127.0.0.2",
    },
    TestbedHost {
        name: "coulombcore",
        address: "127.0.0.3",
    },
    TestbedHost {
        name: "spare01",
        address: "127.0.0.4",
    },
];

/// The files of a testbed that is (or was) up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Testbed {
    /// The state dir (`$SANDBOXER_TESTBED`).
    pub dir: PathBuf,
    /// `<dir>/config/hosts.toml`: one `[[hosts]]` per sshd host.
    pub hosts_toml: PathBuf,
    /// The docker image to run in sandboxes (`$SANDBOXER_TESTBED_IMAGE`).
    pub image: String,
    /// `<dir>/known_hosts`: each host key under `[127.0.0.N]:2222`.
    pub known_hosts: PathBuf,
    /// `<dir>/id_ed25519`: the client key every host accepts for its user.
    pub identity_file: PathBuf,
}

impl Testbed {
    /// The testbed whose state dir is `dir`; `image` defaults to
    /// [`DEFAULT_IMAGE`].
    pub fn at(dir: impl Into<PathBuf>, image: Option<String>) -> Testbed {
        let dir = dir.into();
        Testbed {
            hosts_toml: dir.join("config").join("hosts.toml"),
            known_hosts: dir.join("known_hosts"),
            identity_file: dir.join("id_ed25519"),
            image: image
                .filter(|i| !i.is_empty())
                .unwrap_or_else(|| DEFAULT_IMAGE.to_owned()),
            dir,
        }
    }

    /// The dir holding `hosts.toml`, for `SANDBOXER_CONFIG_DIR`.
    pub fn config_dir(&self) -> PathBuf {
        self.dir.join("config")
    }

    /// The host called `name`, if the testbed has one.
    pub fn host(&self, name: &str) -> Option<TestbedHost> {
        HOSTS.iter().copied().find(|h| h.name == name)
    }

    /// The `data_dir` of host `name` in `hosts.toml` (each host has its own,
    /// since all of them are this machine; `scripts/testbed` puts them under
    /// `/var/lib/sandboxer-testbed/hosts/NAME/data`, owned by the hosts' SSH
    /// user). Falls back to `<dir>/hosts/NAME/data` when `hosts.toml` does not
    /// say.
    pub fn host_data_dir(&self, name: &str) -> PathBuf {
        sandboxer_core::hosts::Hosts::load(&self.config_dir())
            .ok()
            .and_then(|h| h.get(name))
            .and_then(|h| h.data_dir)
            .map(PathBuf::from)
            .unwrap_or_else(|| self.dir.join("hosts").join(name).join("data"))
    }

    /// Take the `spare01` lock (`<dir>/spare01.test-lock`, an exclusive
    /// `flock`), waiting for other holders. Every test that stops `spare01`
    /// holds it, so no two tests stop or use a stopped `spare01` at once
    /// (under cargo test threads, nextest processes and other crates' test
    /// binaries alike). Drop the guard after the host is started again.
    pub fn lock_spare(&self) -> anyhow::Result<SpareLock> {
        let path = self.dir.join(format!("{SPARE_HOST}.test-lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(SpareLock {
            _file: file,
            testbed: self.clone(),
        })
    }

    /// The files `scripts/testbed up` writes that are not there.
    pub fn missing_files(&self) -> Vec<PathBuf> {
        [&self.hosts_toml, &self.known_hosts, &self.identity_file]
            .into_iter()
            .filter(|p| !p.is_file())
            .cloned()
            .collect()
    }

    /// Stops the sshd of host `name` and the sessions it holds
    /// (`scripts/testbed stop-host NAME`). Stopping a stopped host is Ok.
    pub fn stop_host(&self, name: &str) -> anyhow::Result<()> {
        self.run_script(&["stop-host", name])
    }

    /// Starts the sshd of host `name` again and waits until it accepts the
    /// testbed key (`scripts/testbed start-host NAME`). Starting a running
    /// host is Ok.
    pub fn start_host(&self, name: &str) -> anyhow::Result<()> {
        self.run_script(&["start-host", name])
    }

    /// Stops host `name` until the returned guard is dropped, so the host
    /// comes back even when the test panics.
    pub fn stopped_host(&self, name: &str) -> anyhow::Result<StoppedHost> {
        self.stop_host(name)?;
        Ok(StoppedHost {
            testbed: self.clone(),
            name: name.to_owned(),
        })
    }

    fn run_script(&self, args: &[&str]) -> anyhow::Result<()> {
        let script = script_path();
        let out = Command::new(&script)
            .args(args)
            .env("SANDBOXER_TESTBED_DIR", &self.dir)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        if !out.status.success() {
            bail!(
                "`scripts/testbed {}` failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

/// The one testbed host tests may stop.
pub const SPARE_HOST: &str = "spare01";

/// Holds the `spare01` lock (see [`Testbed::lock_spare`]) until dropped.
#[derive(Debug)]
#[must_use = "the lock is released when this guard is dropped"]
pub struct SpareLock {
    _file: std::fs::File,
    testbed: Testbed,
}

impl SpareLock {
    /// Stop `spare01` until the returned guard is dropped (drop it before
    /// this lock).
    pub fn stop(&self) -> anyhow::Result<StoppedHost> {
        self.testbed.stopped_host(SPARE_HOST)
    }
}

/// A host stopped by [`Testbed::stopped_host`]; dropping it starts the host
/// again.
#[derive(Debug)]
#[must_use = "the host starts again when this guard is dropped"]
pub struct StoppedHost {
    testbed: Testbed,
    name: String,
}

impl StoppedHost {
    /// The stopped host's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for StoppedHost {
    fn drop(&mut self) {
        if let Err(e) = self.testbed.start_host(&self.name) {
            eprintln!("testbed: could not start host {} again: {e:#}", self.name);
        }
    }
}

/// `scripts/testbed` of this repository.
pub fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("scripts")
        .join("testbed")
}

/// The testbed named by `SANDBOXER_TESTBED`, if that is set. It may be down
/// or incomplete: [`require_testbed`] checks its files.
pub fn testbed() -> Option<Testbed> {
    let dir = std::env::var_os(ENV_DIR).filter(|d| !d.is_empty())?;
    Some(Testbed::at(dir, std::env::var(ENV_IMAGE).ok()))
}

/// The testbed, for a test called `test` that needs it. Such a test is
/// compiled as ignored without the testbed (see `sandboxer-testbed-cfg`),
/// so reaching this without `SANDBOXER_TESTBED`, or with the files of
/// `scripts/testbed up` missing, is a failure.
#[track_caller]
pub fn require_testbed(test: &str) -> Testbed {
    let Some(tb) = testbed() else {
        missing(
            test,
            "no testbed (SANDBOXER_TESTBED is not set)",
            "run `scripts/testbed up` and `source .testbed/env`",
        );
    };
    let files = tb.missing_files();
    if !files.is_empty() {
        missing(
            test,
            &format!(
                "SANDBOXER_TESTBED={} but {} missing",
                tb.dir.display(),
                files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "run `scripts/testbed up`",
        );
    }
    tb
}

/// A docker engine that answers, for a test called `test` (a failure
/// otherwise, as for [`require_testbed`]).
#[track_caller]
pub fn require_docker(test: &str) {
    if !docker_answers(Duration::from_secs(20)) {
        missing(
            test,
            "no docker engine (`docker info` does not answer)",
            "run `scripts/testbed up`",
        );
    }
}

/// A component `test` needs is missing although the testbed is configured:
/// the one way every test kit helper fails (never a silent pass).
#[track_caller]
pub fn missing(test: &str, what: &str, fix: &str) -> ! {
    panic!("{test}: {what}; {fix} (this test needs the testbed, and it is configured)")
}

/// Whether `docker info` succeeds within `timeout`.
pub fn docker_answers(timeout: Duration) -> bool {
    let Ok(mut child) = Command::new("docker")
        .arg("info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    crate::wait::exit_of(&mut child, timeout).is_some_and(|s| s.success())
}

/// Stops the sshd of testbed host `host_name` (see [`Testbed::stop_host`]).
pub fn stop_sshd(host_name: &str) -> anyhow::Result<()> {
    testbed()
        .context("SANDBOXER_TESTBED is not set")?
        .stop_host(host_name)
}

/// Starts the sshd of testbed host `host_name` (see [`Testbed::start_host`]).
pub fn start_sshd(host_name: &str) -> anyhow::Result<()> {
    testbed()
        .context("SANDBOXER_TESTBED is not set")?
        .start_host(host_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_state_dir() {
        let tb = Testbed::at("/tmp/tb", None);
        assert_eq!(tb.dir, Path::new("/tmp/tb"));
        assert_eq!(tb.hosts_toml, Path::new("/tmp/tb/config/hosts.toml"));
        assert_eq!(tb.config_dir(), Path::new("/tmp/tb/config"));
        assert_eq!(tb.known_hosts, Path::new("/tmp/tb/known_hosts"));
        assert_eq!(tb.identity_file, Path::new("/tmp/tb/id_ed25519"));
        assert_eq!(tb.image, DEFAULT_IMAGE);
        assert_eq!(
            tb.host_data_dir("spare01"),
            Path::new("/tmp/tb/hosts/spare01/data")
        );
    }

    #[test]
    fn image_comes_from_the_env_value_unless_empty() {
        assert_eq!(Testbed::at("/x", Some("img:1".into())).image, "img:1");
        assert_eq!(Testbed::at("/x", Some(String::new())).image, DEFAULT_IMAGE);
    }

    #[test]
    fn hosts_are_known_by_name() {
        let tb = Testbed::at("/x", None);
        assert_eq!(tb.host("coulombcore").unwrap().address, "127.0.0.3");
        assert!(tb.host("nope").is_none());
    }

    #[test]
    fn missing_files_lists_what_up_did_not_write() {
        let dir = tempfile::tempdir().unwrap();
        let tb = Testbed::at(dir.path(), None);
        assert_eq!(tb.missing_files().len(), 3);
        std::fs::create_dir_all(tb.config_dir()).unwrap();
        for f in [&tb.hosts_toml, &tb.known_hosts, &tb.identity_file] {
            std::fs::write(f, "").unwrap();
        }
        assert!(tb.missing_files().is_empty());
    }

    #[test]
    #[should_panic(expected = "t3: no docker; run it (this test needs the testbed")]
    fn a_missing_component_is_a_failure() {
        missing("t3", "no docker", "run it");
    }

    /// The script and this module must agree on names and addresses.
    #[test]
    fn script_starts_the_hosts_listed_here() {
        let script = std::fs::read_to_string(script_path()).unwrap();
        for h in HOSTS {
            assert!(
                script.contains(&format!("{} {}", h.name, h.address)),
                "scripts/testbed does not start {} on {}",
                h.name,
                h.address
            );
        }
        assert!(script.contains(&format!("SSH_PORT={SSH_PORT}")));
        assert!(script.contains(&format!("IMAGE={DEFAULT_IMAGE}")));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(script_path())
                .unwrap()
                .permissions()
                .mode();
            assert!(mode & 0o111 != 0, "scripts/testbed is not executable");
        }
    }

    /// With the testbed up: its files are there and name every host.
    #[test]
    #[cfg_attr(
        not(sandboxer_testbed),
        ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
    )]
    fn testbed_files_name_every_host() {
        let tb = require_testbed("testbed_files_name_every_host");
        let hosts = std::fs::read_to_string(&tb.hosts_toml).unwrap();
        let known = std::fs::read_to_string(&tb.known_hosts).unwrap();
        for h in HOSTS {
            assert!(hosts.contains(&format!("name = \"{}\"", h.name)));
            assert!(known.contains(&format!("[{}]:{SSH_PORT} ssh-ed25519 ", h.address)));
            assert!(tb.host_data_dir(h.name).is_dir());
        }
    }

    /// With the testbed up: its image runs.
    #[test]
    #[cfg_attr(
        not(sandboxer_testbed),
        ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
    )]
    fn testbed_image_runs() {
        let tb = require_testbed("testbed_image_runs");
        require_docker("testbed_image_runs");
        let out = Command::new("docker")
            .args(["run", "--rm", &tb.image, "/bin/sh", "-c", "echo hi"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hi");
    }
}
