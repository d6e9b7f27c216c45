//! Tests of the real `sandboxer` binary against a throwaway home.

mod bad_input;
mod burst;
mod canary;
mod completions;
mod compose;
mod concurrency;
mod credits;
mod dashboard;
mod disk;
mod e2b;
mod events;
mod federation;
mod http;
mod import;
mod metrics;
mod pause;
mod reaper;
mod replicas;
mod security;
mod ssh_canary;

use sandboxer_testkit::home::Home;

pub fn home() -> Home {
    Home::new(env!("CARGO_BIN_EXE_sandboxer"))
}

/// Replace ids and times with stable placeholders for snapshots.
pub fn redact(s: &str) -> String {
    let rules = [
        (r"sbx-[a-z2-7]{10}\b", "[ID]"),
        (
            r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})",
            "[TIME]",
        ),
    ];
    let mut out = s.to_string();
    for (re, with) in rules {
        out = regex_lite::Regex::new(re)
            .unwrap()
            .replace_all(&out, with)
            .into_owned();
    }
    out
}
