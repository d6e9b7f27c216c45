//! A throwaway sandboxer home (data and config dirs in a temp folder) and a
//! runner for the real `sandboxer` binary against it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A temp data dir + config dir, and the binary to run against them.
pub struct Home {
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub config: PathBuf,
    pub bin: PathBuf,
    /// Extra environment for every command.
    pub env: Vec<(String, String)>,
}

/// What one command did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout as JSON; panics with both streams when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}); exit {}\nstdout:\n{}\nstderr:\n{}",
                self.code, self.stdout, self.stderr
            )
        })
    }

    /// Panic unless the exit code is `code`.
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "expected exit {code}, got {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    pub fn ok(self) -> Self {
        self.expect_code(0)
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Home {
    /// A fresh home for `bin` (pass `env!("CARGO_BIN_EXE_sandboxer")`).
    pub fn new(bin: impl AsRef<Path>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("sandboxer-home-")
            .tempdir()
            .expect("temp dir");
        let data = dir.path().join("data");
        let config = dir.path().join("config");
        std::fs::create_dir_all(&config).expect("config dir");
        Home {
            dir,
            data,
            config,
            bin: bin.as_ref().to_path_buf(),
            env: Vec::new(),
        }
    }

    /// The command, with this home's environment and nothing inherited that
    /// would change where sandboxer looks.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args)
            .env("SANDBOXER_DATA_DIR", &self.data)
            .env("SANDBOXER_CONFIG_DIR", &self.config)
            .env_remove("SANDBOXER_HOST")
            .env_remove("SANDBOXER_ACTOR")
            .env_remove("SANDBOXER_STATE_HUB_URL")
            .env_remove("SANDBOXER_DATABASE_URL")
            .env("NO_COLOR", "1")
            .env("USER", "tester")
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Run and wait.
    pub fn run(&self, args: &[&str]) -> Run {
        self.command(args)
            .output()
            .expect("running sandboxer")
            .into()
    }

    /// The embedded database file.
    pub fn db_path(&self) -> PathBuf {
        self.data.join("sandboxer.db")
    }

    /// Everything the embedded database holds, table by table and row by
    /// row, as text (empty when there is no database yet): what "every
    /// stored byte is intact" compares. The file's own bytes are not
    /// stable across processes that only read (SQLite folds its write-ahead
    /// log into the file when the last connection closes), its contents
    /// are.
    pub fn store_dump(&self) -> String {
        let path = self.db_path();
        if !path.exists() {
            return String::new();
        }
        let conn = rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .expect("opening the database");
        let mut tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .and_then(|mut st| {
                st.query_map([], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .expect("listing the tables");
        tables.retain(|t| !t.starts_with("sqlite_"));
        let mut out = String::new();
        for t in tables {
            out.push_str(&format!("== {t}\n"));
            let mut st = conn
                .prepare(&format!("SELECT * FROM \"{t}\" ORDER BY rowid"))
                .expect("reading a table");
            let cols = st.column_count();
            let rows = st
                .query_map([], |r| {
                    (0..cols)
                        .map(|i| r.get::<_, rusqlite::types::Value>(i))
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .expect("reading rows");
            for row in rows {
                out.push_str(&format!("{:?}\n", row.expect("a row")));
            }
        }
        out
    }

    /// Write a user profile file `profiles/NAME`.
    pub fn write_profile(&self, name: &str, text: &str) -> PathBuf {
        let dir = self.config.join("profiles");
        std::fs::create_dir_all(&dir).expect("profiles dir");
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write profile");
        p
    }
}

impl Drop for Home {
    /// Stop any canary agent left running under this home (a test that
    /// failed half-way), so tests never leak processes.
    fn drop(&mut self) {
        let Ok(venues) = std::fs::read_dir(self.data.join("venues")) else {
            return;
        };
        for v in venues.flatten() {
            if let Ok(pid) = std::fs::read_to_string(v.path().join("agent.pid")) {
                if let Ok(pid) = pid.trim().parse::<i32>() {
                    if pid > 1 {
                        let _ = Command::new("kill")
                            .args(["-KILL", "--", &format!("-{pid}")])
                            .stderr(Stdio::null())
                            .status();
                    }
                }
            }
        }
    }
}
