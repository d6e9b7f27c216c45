//! `cfg(sandboxer_testbed)` for the tests that need the testbed (see
//! sandboxer-testbed-cfg): without it they are ignored, never passed.
fn main() {
    sandboxer_testbed_cfg::emit();
}
