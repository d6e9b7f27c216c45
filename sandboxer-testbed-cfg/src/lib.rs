//! One line for the build script of every crate whose tests need the
//! testbed (`scripts/testbed up`, then `source .testbed/env`):
//!
//! ```text
//! // build.rs
//! fn main() {
//!     sandboxer_testbed_cfg::emit();
//! }
//! ```
//!
//! With `SANDBOXER_TESTBED` set at build time the crate is compiled with
//! `cfg(sandboxer_testbed)`; tests that need the testbed carry
//!
//! ```text
//! #[cfg_attr(not(sandboxer_testbed), ignore = "needs the testbed: scripts/testbed up, then source .testbed/env")]
//! ```
//!
//! so without it the runner reports them as ignored, and with it they run
//! and fail when a component is down (`sandboxer_testkit::testbed`'s
//! `require_*` functions panic). No test returns early as passed.

/// The cfg a test crate's tests look at.
pub const CFG: &str = "sandboxer_testbed";

/// The variable `scripts/testbed env` sets.
pub const ENV: &str = "SANDBOXER_TESTBED";

/// Print the build-script lines: declare the cfg, rebuild when the
/// variable changes, set the cfg when it is set and not empty.
pub fn emit() {
    println!("cargo:rustc-check-cfg=cfg({CFG})");
    println!("cargo:rerun-if-env-changed={ENV}");
    if std::env::var_os(ENV).is_some_and(|v| !v.is_empty()) {
        println!("cargo:rustc-cfg={CFG}");
    }
}
