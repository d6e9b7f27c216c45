//! `sandboxer`: establishes sandboxes for agents and automations. See
//! `sandboxer --help` and the README.

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    // The canary agent is this same binary, deployed to a host; it starts
    // fast and without the async runtime.
    if argv.get(1).map(String::as_str) == Some("agent") {
        std::process::exit(sandboxer_telemetry::agent_main(&argv[2..]));
    }
    std::process::exit(sandboxer_cli::run(argv));
}
