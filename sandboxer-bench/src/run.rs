//! Running and timing real processes, from spawn to exit.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// One finished run.
#[derive(Debug, Clone)]
pub struct Timed {
    /// From spawn to exit.
    pub wall: Duration,
    /// CPU time the process used (user + system, all its threads): less
    /// moved by other work on the machine than `wall`.
    pub cpu: Duration,
    pub stdout: Vec<u8>,
}

/// A throwaway home for `sandboxer`: its data and config dirs (the config
/// dir made), in a temp folder removed when dropped.
pub struct BenchHome {
    dir: tempfile::TempDir,
}

impl BenchHome {
    pub fn new(section: &str) -> Result<BenchHome> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("sandboxer-bench-{section}-"))
            .tempdir()?;
        std::fs::create_dir_all(dir.path().join("config"))?;
        Ok(BenchHome { dir })
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `sandboxer` at `bin` on this home.
    pub fn sandboxer(&self, bin: &Path) -> Program {
        Program::sandboxer(bin, &self.data(), &self.dir.path().join("config"))
    }
}

/// A running `sandboxer serve`, stopped when dropped.
pub struct Served {
    child: std::process::Child,
    /// `http://ADDR`.
    pub base: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A program and the environment every run of it gets.
#[derive(Debug, Clone)]
pub struct Program {
    pub path: PathBuf,
    env: Vec<(String, String)>,
}

/// Variables of the caller's environment that would change what a
/// benchmarked `sandboxer` does; removed from every run.
const SCRUBBED: &[&str] = &[
    "SANDBOXER_HOST",
    "SANDBOXER_STATE_HUB_URL",
    "SANDBOXER_LOG",
    "SANDBOXER_ACTOR",
    "SANDBOXER_DATA_DIR",
    "SANDBOXER_CONFIG_DIR",
];

impl Program {
    pub fn new(path: impl Into<PathBuf>) -> Program {
        Program {
            path: path.into(),
            env: Vec::new(),
        }
    }

    /// `sandboxer` on its own data and config dirs, as `adm:bench`.
    pub fn sandboxer(path: &Path, data_dir: &Path, config_dir: &Path) -> Program {
        let mut p = Program::new(path);
        p.env = vec![
            ("SANDBOXER_DATA_DIR".into(), data_dir.display().to_string()),
            (
                "SANDBOXER_CONFIG_DIR".into(),
                config_dir.display().to_string(),
            ),
            ("SANDBOXER_ACTOR".into(), "adm:bench".into()),
            ("NO_COLOR".into(), "1".into()),
        ];
        p
    }

    fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = Command::new(&self.path);
        c.args(args).stdin(Stdio::null());
        for v in SCRUBBED {
            c.env_remove(v);
        }
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// A new API token for `actor`: its secret.
    pub fn token(&self, actor: &str) -> Result<String> {
        let out = self.run(["tokens", "add", "--actor", actor, "--json"])?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        v["token"]
            .as_str()
            .map(str::to_string)
            .context("`tokens add --json` printed no token")
    }

    /// `sandboxer serve` on a free loopback port with no reaper, until
    /// the answer is dropped.
    pub fn serve(&self) -> Result<Served> {
        use std::io::BufRead as _;
        let mut child = self.spawn(["serve", "--bind", "127.0.0.1:0", "--reap-interval", "0s"])?;
        let mut line = String::new();
        let stdout = child.stdout.take().context("the server's stdout")?;
        // Killed when dropped, also on the early returns below.
        let mut served = Served {
            child,
            base: String::new(),
        };
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .with_context(|| format!("serve said {line:?}"))?;
        served.base = format!("http://{addr}");
        Ok(served)
    }

    /// Start it with its stdout piped and stderr discarded (a server).
    pub fn spawn<I, S>(&self, args: I) -> Result<std::process::Child>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", self.path.display()))
    }

    /// Run to the end, keeping its stdout. A failed run is an error, with
    /// what it printed.
    pub fn run<I, S>(&self, args: I) -> Result<Timed>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = self.command(args);
        c.stdout(Stdio::piped());
        run_timed(c)
    }

    /// Like [`Program::run`] with stdout sent to /dev/null.
    pub fn run_quiet<I, S>(&self, args: I) -> Result<Timed>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = self.command(args);
        c.stdout(Stdio::null());
        run_timed(c)
    }

    /// Run a probe subcommand that prints one JSON object; the run and the
    /// object.
    pub fn probe<I, S>(&self, args: I) -> Result<(Timed, serde_json::Value)>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let run = self.run(args)?;
        let v = serde_json::from_slice(&run.stdout)
            .with_context(|| format!("probe printed {}", String::from_utf8_lossy(&run.stdout)))?;
        Ok((run, v))
    }
}

fn run_timed(mut c: Command) -> Result<Timed> {
    c.stderr(Stdio::piped());
    let what = format!("{c:?}");
    let t = Instant::now();
    let mut child = c.spawn().with_context(|| format!("starting {what}"))?;
    let mut stdout = Vec::new();
    if let Some(mut o) = child.stdout.take() {
        o.read_to_end(&mut stdout)?;
    }
    // What these programs print on stderr is short: read after stdout.
    let mut stderr = Vec::new();
    if let Some(mut e) = child.stderr.take() {
        e.read_to_end(&mut stderr)?;
    }
    let (status, cpu) =
        wait_with_usage(child.id()).with_context(|| format!("waiting for {what}"))?;
    let wall = t.elapsed();
    if !status.success() {
        bail!(
            "{what} failed ({status}):\n{}{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        );
    }
    Ok(Timed { wall, cpu, stdout })
}

/// Reap the child `pid` with `wait4`, which also reports the CPU time it
/// used (std's `Child::wait` does not).
fn wait_with_usage(pid: u32) -> std::io::Result<(ExitStatus, Duration)> {
    let mut status = 0;
    // SAFETY: `rusage` is plain data that wait4 fills in; `pid` is our
    // unreaped child (std's `Child` never waited for it).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
        if r == pid as libc::pid_t {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok((
        ExitStatus::from_raw(status),
        tv(usage.ru_utime) + tv(usage.ru_stime),
    ))
}

/// `field` of a probe's answer, in milliseconds.
pub fn ms_field(v: &serde_json::Value, field: &str) -> Result<f64> {
    v.get(field)
        .and_then(serde_json::Value::as_f64)
        .with_context(|| format!("no `{field}` in {v}"))
}

/// Whether `program` can be started (found on PATH and answers `args`).
pub fn answers(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
