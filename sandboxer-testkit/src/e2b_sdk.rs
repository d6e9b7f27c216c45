//! The official E2B SDKs, installed once per checkout for tests that drive
//! sandboxer's E2B front door with real clients: the Python SDK in a
//! virtualenv (`target/e2b-sdk/venv`, `pip install e2b==VERSION`, with
//! `openapi-spec-validator` beside it) and the
//! JavaScript SDK (`target/e2b-sdk/js`, `npm install e2b@JS_VERSION`).

use std::path::PathBuf;
use std::process::Command;

/// The Python SDK version the tests pin (the one docs/e2b-compatibility.md
/// was checked with).
pub const VERSION: &str = "2.63.0";

/// The version of `openapi-spec-validator` (an OpenAPI 3.1 validator that
/// is not sandboxer's) installed beside the Python SDK, for the test that
/// checks the served document with it.
pub const SPEC_VALIDATOR_VERSION: &str = "0.9.0";

/// The JavaScript SDK version the tests pin.
pub const JS_VERSION: &str = "2.51.0";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("e2b-sdk")
}

/// Run `cmd`; a failure makes test `test` fail with `what` and its output.
#[track_caller]
fn run(test: &str, cmd: &mut Command, what: &str, fix: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| crate::testbed::missing(test, &format!("{what}: {e}"), fix));
    if !out.status.success() {
        crate::testbed::missing(
            test,
            &format!(
                "{what} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            fix,
        )
    }
}

/// The folder whose `node_modules` holds the JavaScript SDK (run `node`
/// there); installed on first use, under the same lock as the virtualenv.
#[track_caller]
pub fn node_dir(test: &str) -> PathBuf {
    let root = root();
    std::fs::create_dir_all(&root).unwrap();
    let lock = std::fs::File::create(root.join(".lock")).unwrap();
    lock.lock().expect("locking target/e2b-sdk");
    let dir = root.join("js");
    let stamp = dir.join(format!(".e2b-{JS_VERSION}"));
    if !stamp.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("package.json"), "{\"private\": true}\n").unwrap();
        run(
            test,
            Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--silent"])
                .arg(format!("e2b@{JS_VERSION}"))
                .current_dir(&dir),
            "npm install e2b",
            "install nodejs and npm (scripts/testbed up does) and reach the npm registry",
        );
        std::fs::write(&stamp, JS_VERSION).unwrap();
    }
    dir
}

/// The virtualenv's `python`, with `e2b` and `openapi-spec-validator`
/// installed; made on first use
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
    let stamp = venv.join(format!(".e2b-{VERSION}-oasv-{SPEC_VALIDATOR_VERSION}"));
    if !stamp.exists() {
        let _ = std::fs::remove_dir_all(&venv);
        let fix = "install python3-venv (scripts/testbed up does) and reach PyPI";
        run(
            test,
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "python3 -m venv",
            fix,
        );
        run(
            test,
            Command::new(&py).args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                &format!("e2b=={VERSION}"),
                &format!("openapi-spec-validator=={SPEC_VALIDATOR_VERSION}"),
            ]),
            "pip install e2b openapi-spec-validator",
            fix,
        );
        std::fs::write(&stamp, VERSION).unwrap();
    }
    py
}
