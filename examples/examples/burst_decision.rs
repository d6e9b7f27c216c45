//! A burst decision with the real resolver: two own hosts, one full and one
//! unreachable, so the request bursts to the metered SaaS route; then the
//! same with too little credit, where nothing can take it.
//!
//! Run it: `cargo run -p sandboxer-examples --example burst_decision`

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use sandboxer_core::credits::Micros;
use sandboxer_core::hosts::parse_hosts;
use sandboxer_core::profile::Catalog;
use sandboxer_core::routing::{resolve, Constraints, ExtensionInfo, Input};

fn main() -> anyhow::Result<()> {
    let hosts = parse_hosts(
        Path::new("hosts.toml"),
        r#"
[[hosts]]
name = "sandboxer01"
address = "10.0.0.11"
identity_file = "~/.ssh/id_ed25519"
capacity = 2

[[hosts]]
name = "coulombcore"
address = "10.0.0.12"
identity_file = "~/.ssh/id_ed25519"
capacity = 4
"#,
    )?;
    let catalog = Catalog::builtin();
    let profile = catalog.require("profile.burst")?;
    let extensions = BTreeMap::from([
        (
            "ext.compose-ssh".to_string(),
            ExtensionInfo { uses_host: true },
        ),
        (
            "ext.saas-stub".to_string(),
            ExtensionInfo { uses_host: false },
        ),
    ]);
    let live = BTreeMap::from([("sandboxer01".to_string(), 2)]);
    let unreachable =
        BTreeMap::from([("coulombcore".to_string(), "connection refused".to_string())]);
    let constraints = Constraints::default();
    let tried = BTreeSet::new();

    for balance in [Micros::from_credits(25), Micros(100_000)] {
        let decision = resolve(&Input {
            profile,
            hosts: &hosts,
            extensions: &extensions,
            live_per_host: &live,
            unreachable: &unreachable,
            tried: &tried,
            balance: Some(balance),
            ttl: profile.default_ttl,
            constraints: &constraints,
        });
        println!("balance {balance}: policy {}", decision.policy);
        for c in &decision.candidates {
            println!(
                "  candidate {} on {} at {}/h",
                c.extension, c.host, c.price_per_hour
            );
        }
        for r in &decision.rejected {
            println!("  rejected  {} on {}: {}", r.extension, r.host, r.reason);
        }
    }
    Ok(())
}
