//! `profile.compose-e2e` on an SSH host of the testbed: create-to-ready
//! plus destroy through the release `sandboxer` binary, beside the same
//! work done by hand in the same run (`tar | ssh tar -x`, `ssh
//! docker-compose up -d`, polling the published port until it serves,
//! `ssh docker-compose down`), then 10 concurrent creates spread over two
//! hosts. Prints a Markdown section on stdout (progress on stderr).
//!
//! ```sh
//! scripts/testbed up && source .testbed/env
//! cargo run --release -p sandboxer-ext-compose-ssh --example compose_bench -- --runs 20
//! ```
//!
//! Options: `--runs N` (default 10) rounds of each, after one warm-up round;
//! `--concurrent N` (default 10, 0 to skip) creates at once over two hosts;
//! `--host NAME` (default `sandboxer01`) and `--second-host NAME` (default
//! `coulombcore`); `--bin PATH` (default: `target/release/sandboxer`, built
//! first with `cargo build --release -p sandboxer-cli`).
//!
//! Both sides use the same host, the same repo (`examples/compose-e2e-repo`),
//! the same compose file and command, and publish on the host's loopback
//! address. The by-hand side opens one `ssh` per step (no connection
//! sharing), as a person or a script would; sandboxer opens one SSH
//! connection per command. Rounds alternate which side goes first.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sandboxer_testkit::testbed::{testbed, Testbed, SSH_PORT};
use serde_json::Value;

type Res<T> = Result<T, String>;

struct Opts {
    runs: usize,
    concurrent: usize,
    host: String,
    second_host: String,
    bin: Option<PathBuf>,
}

fn parse_opts() -> Res<Opts> {
    let mut o = Opts {
        runs: 10,
        concurrent: 10,
        host: "sandboxer01".into(),
        second_host: "coulombcore".into(),
        bin: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--runs" => o.runs = val()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--concurrent" => {
                o.concurrent = val()?.parse().map_err(|e| format!("--concurrent: {e}"))?
            }
            "--host" => o.host = val()?,
            "--second-host" => o.second_host = val()?,
            "--bin" => o.bin = Some(PathBuf::from(val()?)),
            "-h" | "--help" => {
                eprintln!("usage: compose_bench [--runs N] [--concurrent N] [--host NAME] [--second-host NAME] [--bin PATH]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}` (try --help)")),
        }
    }
    if o.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    Ok(o)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("compose_bench: {e}");
        std::process::exit(1);
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The release binary, built first unless `--bin` names one.
fn sandboxer_bin(given: Option<PathBuf>) -> Res<PathBuf> {
    if let Some(b) = given {
        return Ok(b);
    }
    eprintln!("building the release sandboxer binary ...");
    let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "-q",
            "-p",
            "sandboxer-cli",
            "--bin",
            "sandboxer",
        ])
        .current_dir(workspace())
        .status()
        .map_err(|e| format!("cargo build: {e}"))?;
    if !st.success() {
        return Err("cargo build --release -p sandboxer-cli failed".into());
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    Ok(target.join("release").join("sandboxer"))
}

/// One testbed host as the bench uses it.
#[derive(Clone)]
struct Host {
    name: String,
    address: String,
    /// The bench's own data folder on the host.
    data_dir: String,
}

struct Bench {
    tb: Testbed,
    bin: PathBuf,
    home: tempfile::TempDir,
    repo: PathBuf,
    a: Host,
    b: Host,
    /// `docker-compose` or `docker compose`, as found on the host.
    compose: String,
}

fn run() -> Res<()> {
    let o = parse_opts()?;
    let tb = testbed().ok_or(
        "no testbed: run `scripts/testbed up` and `source .testbed/env` (SANDBOXER_TESTBED is not set)",
    )?;
    let missing = tb.missing_files();
    if !missing.is_empty() {
        return Err(format!(
            "the testbed is incomplete ({missing:?}): run `scripts/testbed up`"
        ));
    }
    let bin = sandboxer_bin(o.bin.clone())?;
    let home = tempfile::Builder::new()
        .prefix("compose-bench-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    let tag = home
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let host = |name: &str| -> Res<Host> {
        let h = tb
            .host(name)
            .ok_or(format!("`{name}` is not a testbed host"))?;
        Ok(Host {
            name: name.to_string(),
            address: h.address.to_string(),
            data_dir: tb.host_data_dir(name).join(&tag).display().to_string(),
        })
    };
    let (a, b) = (host(&o.host)?, host(&o.second_host)?);
    let repo = workspace()
        .join("examples")
        .join("compose-e2e-repo")
        .canonicalize()
        .map_err(|e| format!("examples/compose-e2e-repo: {e}"))?;
    let mut bench = Bench {
        tb,
        bin,
        home,
        repo,
        a,
        b,
        compose: String::new(),
    };
    bench.compose = bench.detect_compose()?;
    let result = bench.measure(&o);
    bench.cleanup();
    let report = result?;
    println!("{report}");
    Ok(())
}

// ------------------------------------------------------------- the two sides

impl Bench {
    fn config_dir(&self) -> PathBuf {
        self.home.path().join("config")
    }

    fn data_dir(&self) -> PathBuf {
        self.home.path().join("data")
    }

    /// hosts.toml with both hosts at `capacity` each, and the profile: one
    /// route per host, publishing on that host's address.
    fn write_config(&self, hosts: &[(&Host, Option<u32>)]) -> Res<()> {
        let q = |s: &str| serde_json::to_string(s).unwrap();
        let mut t = String::new();
        for (h, cap) in hosts {
            t.push_str(&format!(
                "[[hosts]]\nname = {}\naddress = {}\nport = {SSH_PORT}\nuser = \"sbxhost\"\nidentity_file = {}\nknown_hosts = {}\ndata_dir = {}\n",
                q(&h.name),
                q(&h.address),
                q(&self.tb.identity_file.display().to_string()),
                q(&self.tb.known_hosts.display().to_string()),
                q(&h.data_dir)
            ));
            if let Some(c) = cap {
                t.push_str(&format!("capacity = {c}\n"));
            }
            t.push('\n');
        }
        let mut p = String::from(
            "id = \"profile.compose-e2e\"\nversion = 1\ndescription = \"compose-e2e, ports on the host's loopback address (bench)\"\n\
             default_ttl = \"1h\"\nmax_ttl = \"2h\"\nready_timeout = \"2m\"\n\n[inputs.repo]\nrequired = true\nhelp = \"the repo\"\n",
        );
        for (h, _) in hosts {
            p.push_str(&format!(
                "\n[[routes]]\nextension = \"ext.compose-ssh\"\nplacement = [{}]\nprice_per_hour = \"0\"\n[routes.config]\n\
                 compose_file = \"docker-compose.e2e.yml\"\nstop_timeout = \"5s\"\nenv = {{ E2E_BIND_IP = {} }}\n",
                q(&h.name),
                q(&h.address)
            ));
        }
        let dir = self.config_dir();
        std::fs::create_dir_all(dir.join("profiles")).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("hosts.toml"), t).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("profiles").join("compose-e2e.toml"), p).map_err(|e| e.to_string())
    }

    fn sandboxer(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args)
            .env("SANDBOXER_DATA_DIR", self.data_dir())
            .env("SANDBOXER_CONFIG_DIR", self.config_dir())
            .env_remove("SANDBOXER_HOST")
            .env_remove("SANDBOXER_STATE_HUB_URL")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        c
    }

    /// `sandboxer create` to ready: the record and the time.
    fn create(&self) -> Res<(Value, Duration)> {
        let input = format!("repo={}", self.repo.display());
        let t = Instant::now();
        let out = self
            .sandboxer(&[
                "create",
                "--profile",
                "profile.compose-e2e",
                "--input",
                &input,
                "--json",
            ])
            .output()
            .map_err(|e| format!("running sandboxer: {e}"))?;
        let took = t.elapsed();
        let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "create printed no JSON ({e}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        if !out.status.success() || v["state"] != "ready" {
            return Err(format!("create failed: {v:#}"));
        }
        Ok((v, took))
    }

    fn destroy(&self, id: &str) -> Res<Duration> {
        let t = Instant::now();
        let out = self
            .sandboxer(&["destroy", id, "--json"])
            .output()
            .map_err(|e| format!("running sandboxer: {e}"))?;
        let took = t.elapsed();
        if !out.status.success() {
            return Err(format!(
                "destroy {id} failed: {}",
                String::from_utf8_lossy(&out.stdout)
            ));
        }
        Ok(took)
    }

    /// One sandboxer round: create to ready, check the page, destroy.
    fn sandboxer_round(&self) -> Res<(Duration, Duration)> {
        let (rec, create) = self.create()?;
        let id = rec["id"].as_str().unwrap_or_default().to_string();
        let address = rec["reachability"]["address"].as_str().unwrap_or_default();
        let port = rec["reachability"]["ports"]["web"][0]["published"]
            .as_u64()
            .unwrap_or(0) as u16;
        serves(address, port).map_err(|e| format!("{id} is ready but does not serve: {e}"))?;
        let destroy = self.destroy(&id)?;
        Ok((create, destroy))
    }

    fn ssh(&self, h: &Host) -> Command {
        let mut c = Command::new("ssh");
        c.args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "ConnectTimeout=5",
        ])
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            self.tb.known_hosts.display()
        ))
        .arg("-i")
        .arg(&self.tb.identity_file)
        .args(["-p", &SSH_PORT.to_string()])
        .arg(format!("sbxhost@{}", h.address));
        c
    }

    fn ssh_run(&self, h: &Host, script: &str) -> Res<String> {
        let out = self
            .ssh(h)
            .arg(script)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("ssh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "ssh {}: `{script}` failed: {}",
                h.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn detect_compose(&self) -> Res<String> {
        let out = self.ssh_run(
            &self.a,
            "if docker compose version >/dev/null 2>&1; then echo 'docker compose'; else echo docker-compose; fi",
        )?;
        Ok(out.trim().to_string())
    }

    /// One round by hand: upload, up, poll, down. Times: up to serving,
    /// and down.
    fn raw_round(&self, n: usize) -> Res<RawTimes> {
        let h = &self.a;
        let project = format!("rawbench{}x{n}", std::process::id());
        let work = format!("{}/raw/{project}", h.data_dir);
        let compose = format!(
            "cd {work} && E2E_BIND_IP={} {} -p {project} -f docker-compose.e2e.yml",
            h.address, self.compose
        );
        let start = Instant::now();
        // tar | ssh tar -x
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(&self.repo)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("tar: {e}"))?;
        let up = self
            .ssh(h)
            .arg(format!("mkdir -p {work} && tar -x -o -f - -C {work}"))
            .stdin(Stdio::from(tar.stdout.take().unwrap()))
            .status()
            .map_err(|e| format!("ssh: {e}"))?;
        let _ = tar.wait();
        if !up.success() {
            return Err("the upload by hand failed".into());
        }
        let upload = start.elapsed();
        self.ssh_run(h, &format!("{compose} up -d"))?;
        let compose_up = start.elapsed();
        // The published port, then poll it until it serves.
        let ports = self.ssh_run(
            h,
            &format!("docker ps --filter label=com.docker.compose.project={project} --format '{{{{.Ports}}}}'"),
        )?;
        let port: u16 = ports
            .split("->80/tcp")
            .next()
            .and_then(|s| s.rsplit(':').next())
            .and_then(|p| p.trim().parse().ok())
            .ok_or(format!("no published port in `{}`", ports.trim()))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while serves(&h.address, port).is_err() {
            if Instant::now() > deadline {
                return Err(format!("{project} never served on {}:{port}", h.address));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let ready = start.elapsed();
        let t = Instant::now();
        self.ssh_run(
            h,
            &format!("{compose} down -v --remove-orphans -t 5 2>/dev/null; cd / && rm -rf {work}"),
        )?;
        let down = t.elapsed();
        Ok(RawTimes {
            upload,
            compose_up: compose_up - upload,
            poll: ready - compose_up,
            ready,
            down,
        })
    }

    fn measure(&self, o: &Opts) -> Res<String> {
        let load_before = load();
        let started = chrono::Utc::now();
        // Sequential: host A only.
        self.write_config(&[(&self.a, None)])?;
        eprintln!("warm-up ...");
        self.sandboxer_round()?;
        self.raw_round(0)?;
        let (mut s_create, mut s_destroy, mut s_total) = (vec![], vec![], vec![]);
        let mut raw: Vec<RawTimes> = vec![];
        for i in 0..o.runs {
            eprintln!("round {}/{} ...", i + 1, o.runs);
            let mut sbx = || -> Res<()> {
                let (c, d) = self.sandboxer_round()?;
                s_create.push(c);
                s_destroy.push(d);
                s_total.push(c + d);
                Ok(())
            };
            if i % 2 == 0 {
                sbx()?;
                raw.push(self.raw_round(i + 1)?);
            } else {
                raw.push(self.raw_round(i + 1)?);
                sbx()?;
            }
        }
        let load_mid = load();

        // Concurrent: both hosts, half the creates' capacity each.
        let conc = if o.concurrent > 0 {
            let cap = o.concurrent.div_ceil(2) as u32;
            self.write_config(&[(&self.a, Some(cap)), (&self.b, Some(cap))])?;
            eprintln!("{} concurrent creates ...", o.concurrent);
            Some(self.concurrent(o.concurrent, cap)?)
        } else {
            None
        };
        let load_after = load();

        let mut md = String::new();
        let w = &mut md;
        let total_raw: Vec<Duration> = raw.iter().map(|r| r.ready + r.down).collect();
        let p50 = |v: &[Duration]| pct(v, 50.0);
        let ratio = ms(p50(&s_total)) / ms(p50(&total_raw));
        w.push_str("## compose-ssh: profile.compose-e2e on an SSH host\n\n");
        w.push_str(&format!(
            "Create-to-ready plus destroy of `profile.compose-e2e` (repo `examples/compose-e2e-repo`, one busybox httpd service) through the release `sandboxer` binary on testbed host `{}` ({}:{SSH_PORT}), beside the same work by hand in the same run; then {} concurrent creates over `{}` and `{}`.\n\n",
            self.a.name, self.a.address, o.concurrent, self.a.name, self.b.name
        ));
        w.push_str(&format!(
            "- run: {} to {} UTC, `cargo run --release -p sandboxer-ext-compose-ssh --example compose_bench -- --runs {}`\n",
            started.format("%Y-%m-%d %H:%M:%S"),
            chrono::Utc::now().format("%H:%M:%S"),
            o.runs
        ));
        w.push_str(&format!("- machine: {}\n", machine()));
        w.push_str(&format!(
            "- load average (1 / 5 / 15 min): {load_before} before, {load_mid} after the sequential rounds, {load_after} after the concurrent creates. Other work on the machine slows both sides.\n"
        ));
        w.push_str(&format!(
            "- compose on the host: `{}`; the testbed's hosts are sshd processes on this machine, sharing one docker engine\n",
            self.compose
        ));
        w.push_str("- each figure: a real process from spawn to exit (sandboxer), or the wall time of the steps (by hand); p50 and p95 by nearest rank, after one warm-up round of each; rounds alternate which side goes first\n\n");
        w.push_str("### Sequential, one host\n\n");
        w.push_str("| what | runs | p50 | p95 | mean |\n|---|---|---|---|---|\n");
        let row = |w: &mut String, what: &str, v: &[Duration]| {
            w.push_str(&format!(
                "| {what} | {} | {} | {} | {} |\n",
                v.len(),
                fmt_ms(pct(v, 50.0)),
                fmt_ms(pct(v, 95.0)),
                fmt_ms(mean(v))
            ));
        };
        row(w, "`sandboxer create --json` (to ready)", &s_create);
        row(w, "`sandboxer destroy ID --json`", &s_destroy);
        row(w, "**sandboxer: create + destroy**", &s_total);
        let col = |f: fn(&RawTimes) -> Duration| raw.iter().map(f).collect::<Vec<_>>();
        row(
            w,
            "by hand: `tar -c \\| ssh HOST tar -x`",
            &col(|r| r.upload),
        );
        row(
            w,
            &format!("by hand: `ssh HOST {} up -d`", self.compose),
            &col(|r| r.compose_up),
        );
        row(
            w,
            "by hand: `ssh HOST docker ps` for the port, then GET until it serves",
            &col(|r| r.poll),
        );
        row(w, "by hand: up to serving", &col(|r| r.ready));
        row(
            w,
            &format!("by hand: `ssh HOST {} down -v -t 5; rm -rf`", self.compose),
            &col(|r| r.down),
        );
        row(w, "**by hand: up + down**", &total_raw);
        w.push_str(&format!(
            "\nTarget: sandboxer at most 10% slower than by hand at p50 (create + destroy): {} vs {}: ratio {ratio:.3}, {}.\n",
            fmt_ms(p50(&s_total)),
            fmt_ms(p50(&total_raw)),
            if ratio <= 1.10 { "met" } else { "**not met**" }
        ));
        w.push_str(&format!(
            "Parts at p50: create {} vs up to serving {} ({:.3}); destroy {} vs down {} ({:.3}).\n",
            fmt_ms(p50(&s_create)),
            fmt_ms(p50(&col(|r| r.ready))),
            ms(p50(&s_create)) / ms(p50(&col(|r| r.ready))),
            fmt_ms(p50(&s_destroy)),
            fmt_ms(p50(&col(|r| r.down))),
            ms(p50(&s_destroy)) / ms(p50(&col(|r| r.down))),
        ));
        if let Some(c) = conc {
            w.push_str(&format!(
                "\n### {} concurrent creates over two hosts\n\n",
                o.concurrent
            ));
            w.push_str(&format!(
                "{} `sandboxer create` processes started at once; hosts.toml gives `{}` and `{}` capacity {} each and the profile places on `{}` first, so placement spreads them by capacity.\n\n",
                o.concurrent, self.a.name, self.b.name, c.cap, self.a.name
            ));
            w.push_str("| what | value |\n|---|---|\n");
            w.push_str(&format!(
                "| wall time, first spawn to last ready | {} |\n",
                fmt_ms(c.wall)
            ));
            w.push_str(&format!(
                "| one create to ready: p50 / max | {} / {} |\n",
                fmt_ms(pct(&c.each, 50.0)),
                fmt_ms(pct(&c.each, 100.0))
            ));
            for (host, n) in &c.share {
                w.push_str(&format!("| on `{host}` | {n} of {} |\n", o.concurrent));
            }
            if c.failed > 0 {
                w.push_str(&format!("| failed | {} |\n", c.failed));
            }
            w.push_str(&format!(
                "| wall time to destroy them all at once | {} |\n",
                fmt_ms(c.destroy_wall)
            ));
        }
        Ok(md)
    }

    fn concurrent(&self, n: usize, cap: u32) -> Res<Concurrent> {
        let input = format!("repo={}", self.repo.display());
        let start = Instant::now();
        let children: Vec<_> = (0..n)
            .map(|_| {
                let t = Instant::now();
                self.sandboxer(&[
                    "create",
                    "--profile",
                    "profile.compose-e2e",
                    "--input",
                    &input,
                    "--json",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map(|c| (c, t))
            })
            .collect::<std::io::Result<_>>()
            .map_err(|e| format!("spawning sandboxer: {e}"))?;
        let mut each = vec![];
        let mut ids = vec![];
        let mut share = std::collections::BTreeMap::<String, usize>::new();
        let mut failed = 0;
        for (c, t) in children {
            let out = c.wait_with_output().map_err(|e| e.to_string())?;
            each.push(t.elapsed());
            match serde_json::from_slice::<Value>(&out.stdout) {
                Ok(v) if v["state"] == "ready" => {
                    *share
                        .entry(v["host"].as_str().unwrap_or("?").to_string())
                        .or_default() += 1;
                    ids.push(v["id"].as_str().unwrap_or_default().to_string());
                }
                _ => {
                    failed += 1;
                    eprintln!(
                        "a concurrent create failed: {}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
        }
        let wall = start.elapsed();
        let t = Instant::now();
        let destroys: Vec<_> = ids
            .iter()
            .map(|id| {
                self.sandboxer(&["destroy", id, "--json"])
                    .stdout(Stdio::null())
                    .spawn()
            })
            .collect::<std::io::Result<_>>()
            .map_err(|e| e.to_string())?;
        for mut d in destroys {
            let _ = d.wait();
        }
        Ok(Concurrent {
            cap,
            wall,
            each,
            share: share.into_iter().collect(),
            failed,
            destroy_wall: t.elapsed(),
        })
    }

    /// Destroy whatever is left and remove the bench's folders on the hosts.
    fn cleanup(&self) {
        if let Ok(out) = self.sandboxer(&["list", "--live", "--json"]).output() {
            if let Ok(Value::Array(recs)) = serde_json::from_slice::<Value>(&out.stdout) {
                for r in recs {
                    if let Some(id) = r["id"].as_str() {
                        let _ = self
                            .sandboxer(&["destroy", id])
                            .stdout(Stdio::null())
                            .status();
                    }
                }
            }
        }
        for h in [&self.a, &self.b] {
            let _ = self.ssh_run(h, &format!("rm -rf '{}'", h.data_dir));
        }
    }
}

struct RawTimes {
    upload: Duration,
    compose_up: Duration,
    poll: Duration,
    ready: Duration,
    down: Duration,
}

struct Concurrent {
    cap: u32,
    wall: Duration,
    each: Vec<Duration>,
    share: Vec<(String, usize)>,
    failed: usize,
    destroy_wall: Duration,
}

/// `GET /` answers with an HTTP status line.
fn serves(address: &str, port: u16) -> std::io::Result<()> {
    let addr: SocketAddr = format!("{address}:{port}")
        .parse()
        .map_err(|e| std::io::Error::other(format!("{e}")))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf)?;
    if buf[..n].starts_with(b"HTTP/") {
        Ok(())
    } else {
        Err(std::io::Error::other("no HTTP answer"))
    }
}

fn pct(v: &[Duration], p: f64) -> Duration {
    sandboxer_testkit::stats::percentile_of(v, p)
}

fn mean(v: &[Duration]) -> Duration {
    v.iter().sum::<Duration>() / v.len() as u32
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn fmt_ms(d: Duration) -> String {
    format!("{:.1} ms", ms(d))
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" / "))
        .unwrap_or_else(|| "unknown".into())
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpus} CPUs ({model}), kernel {}", kernel.trim())
}
