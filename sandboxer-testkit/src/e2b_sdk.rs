//! The official E2B Python SDK, in a virtualenv the tests make once per
//! checkout (`target/e2b-sdk/venv`, `pip install e2b==VERSION`), for tests
//! that drive sandboxer's E2B front door with a real client.

use std::path::PathBuf;
use std::process::Command;

/// The SDK version the tests pin (the one docs/e2b-compatibility.md was
/// checked with).
pub const VERSION: &str = "2.63.0";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("e2b-sdk")
}

/// The virtualenv's `python`, with `e2b` installed; made on first use
/// (under a lock, so parallel tests make it once). A test called `test`
/// fails (never passes) when it cannot be made.
#[track_caller]
pub fn python(test: &str) -> PathBuf {
    let root = root();
    std::fs::create_dir_all(&root).unwrap();
    let lock = std::fs::File::create(root.join(".lock")).unwrap();
    lock.lock().expect("locking target/e2b-sdk");
    let venv = root.join("venv");
    let py = venv.join("bin").join("python");
    let stamp = venv.join(format!(".e2b-{VERSION}"));
    if !stamp.exists() {
        let _ = std::fs::remove_dir_all(&venv);
        let run = |cmd: &mut Command, what: &str| {
            let out = cmd.output().unwrap_or_else(|e| {
                crate::testbed::missing(
                    test,
                    &format!("{what}: {e}"),
                    "install python3 and python3-venv (scripts/testbed up does)",
                )
            });
            if !out.status.success() {
                crate::testbed::missing(
                    test,
                    &format!(
                        "{what} failed: {}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    ),
                    "install python3-venv (scripts/testbed up does) and reach PyPI",
                )
            }
        };
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "python3 -m venv",
        );
        run(
            Command::new(&py).args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                &format!("e2b=={VERSION}"),
            ]),
            "pip install e2b",
        );
        std::fs::write(&stamp, VERSION).unwrap();
    }
    py
}
