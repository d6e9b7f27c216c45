//! The canary agent alone, for tests: `sandboxer-canary-agent [agent]
//! --venue DIR --sandbox-id ID --deadline RFC3339`. The `sandboxer` binary
//! runs the same code as `sandboxer agent ...`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(sandboxer_telemetry::agent_main(&args));
}
