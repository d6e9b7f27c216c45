//! `cfg(sandboxer_testbed)` for the tests that need the testbed's
//! PostgreSQL (see sandboxer-testbed-cfg).
fn main() {
    sandboxer_testbed_cfg::emit();
}
