//! How long one routing decision takes over 100 hosts and 10 routes.
//!
//! `cargo run --release -p sandboxer-core --example resolver_bench`
//! prints a Markdown section for docs/benchmarks.md.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use sandboxer_core::credits::Micros;
use sandboxer_core::hosts::parse_hosts;
use sandboxer_core::profile::parse_profile;
use sandboxer_core::profile::ProfileSource;
use sandboxer_core::routing::{resolve, Constraints, ExtensionInfo, Input};

fn main() {
    let mut hosts_toml = String::new();
    for i in 0..100 {
        hosts_toml.push_str(&format!(
            "[[hosts]]\nname = \"h{i:03}\"\naddress = \"10.1.{}.{}\"\nidentity_file = \"/k\"\ncapacity = {}\n\n",
            i / 250,
            i % 250 + 1,
            4 + i % 3
        ));
    }
    let hosts = parse_hosts(Path::new("hosts.toml"), &hosts_toml).expect("hosts");
    let mut profile = String::from(
        "id = \"profile.bench\"\nversion = 1\ndescription = \"bench\"\ndefault_ttl = \"1h\"\nmax_ttl = \"2h\"\npolicy = \"burst\"\n",
    );
    for r in 0..10 {
        if r < 8 {
            let placement: Vec<String> = (0..100)
                .filter(|i| i % 8 == r)
                .map(|i| format!("\"h{i:03}\""))
                .collect();
            profile.push_str(&format!(
                "\n[[routes]]\nextension = \"ext.own\"\nplacement = [{}]\nprice_per_hour = \"0\"\n",
                placement.join(", ")
            ));
        } else {
            profile.push_str(&format!(
                "\n[[routes]]\nextension = \"ext.saas\"\nplacement = [\"saas{r}\"]\nprice_per_hour = \"0.{r}\"\n"
            ));
        }
    }
    let profile =
        parse_profile(Path::new("bench.toml"), &profile, ProfileSource::Builtin).expect("profile");
    let extensions = BTreeMap::from([
        ("ext.own".to_string(), ExtensionInfo { uses_host: true }),
        ("ext.saas".to_string(), ExtensionInfo { uses_host: false }),
    ]);
    // Most hosts full, some unreachable: the decision has work to do.
    let live: BTreeMap<String, u32> = (0..100)
        .map(|i| (format!("h{i:03}"), (i % 7) as u32))
        .collect();
    let unreachable: BTreeMap<String, String> = (0..100)
        .filter(|i| i % 11 == 0)
        .map(|i| (format!("h{i:03}"), "connection refused".into()))
        .collect();
    let tried = BTreeSet::new();
    let constraints = Constraints::default();
    let input = Input {
        profile: &profile,
        hosts: &hosts,
        extensions: &extensions,
        live_per_host: &live,
        unreachable: &unreachable,
        tried: &tried,
        balance: Some(Micros::from_credits(10)),
        ttl: Duration::from_secs(3600),
        constraints: &constraints,
    };
    for _ in 0..200 {
        std::hint::black_box(resolve(&input));
    }
    let mut samples = Vec::with_capacity(5000);
    let mut candidates = 0;
    for _ in 0..5000 {
        let t = Instant::now();
        let d = std::hint::black_box(resolve(&input));
        samples.push(t.elapsed());
        candidates = d.candidates.len() + d.rejected.len();
    }
    samples.sort();
    let pct = |p: f64| sandboxer_testkit::stats::percentile_of(&samples, p * 100.0);
    println!("<!-- bench:resolver -->");
    println!("## resolver: one decision over 100 hosts and 10 routes\n");
    println!(
        "`cargo run --release -p sandboxer-core --example resolver_bench`: the pure resolver, \
         policy burst, 8 own-host routes spread over 100 hosts (most near or at capacity, one in \
         eleven unreachable) and 2 metered routes; {candidates} candidates and rejections per \
         decision; 5,000 decisions after 200 warm-up ones.\n"
    );
    println!("| p50 | p95 | p99 | target | met |");
    println!("|---|---|---|---|---|");
    let met = pct(0.99) < Duration::from_micros(1000);
    println!(
        "| {:.1} µs | {:.1} µs | {:.1} µs | well under 1 ms | {} |",
        pct(0.5).as_secs_f64() * 1e6,
        pct(0.95).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6,
        if met { "yes" } else { "**no**" }
    );
    println!("<!-- /bench:resolver -->");
}
