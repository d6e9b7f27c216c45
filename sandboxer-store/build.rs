//! `cfg(sandboxer_testbed)` when the testbed's variables are set at build
//! time (`source .testbed/env`): the tests that need its PostgreSQL run then
//! (and fail when it is down); without it they are reported as ignored,
//! never as passed.
fn main() {
    println!("cargo:rustc-check-cfg=cfg(sandboxer_testbed)");
    println!("cargo:rerun-if-env-changed=SANDBOXER_TESTBED");
    if std::env::var_os("SANDBOXER_TESTBED").is_some_and(|v| !v.is_empty()) {
        println!("cargo:rustc-cfg=sandboxer_testbed");
    }
}
