//! The routing resolver, pure: from a profile's routes, the hosts, how many
//! live sandboxes each host has, the actor's balance and the request's
//! constraints, to an ordered list of candidates plus a reason for every
//! rejected one. The manager tries the candidates in order.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;

use crate::credits::Micros;
use crate::hosts::Hosts;
use crate::model::{Candidate, Skipped};
use crate::profile::{Policy, Profile};

/// What the request asks of placement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Constraints {
    /// `--host` / `SANDBOXER_HOST`: place here or nowhere.
    pub host: Option<String>,
    /// `--max-price`: refuse routes dearer than this per hour.
    pub max_price: Option<Micros>,
    /// `--only EXT`: only these extensions.
    pub only: Vec<String>,
    /// `--ignore EXT`: never these extensions.
    pub ignore: Vec<String>,
    /// `--no-fallback`: only the first candidate may be tried.
    pub no_fallback: bool,
}

/// What the resolver knows about one extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtensionInfo {
    /// Runs on a placement host (false for SaaS providers).
    pub uses_host: bool,
}

/// Everything the decision depends on.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    pub profile: &'a Profile,
    pub hosts: &'a Hosts,
    /// Extensions in this build.
    pub extensions: &'a BTreeMap<String, ExtensionInfo>,
    /// Live sandboxes per host name.
    pub live_per_host: &'a BTreeMap<String, u32>,
    /// Hosts known to be unreachable right now, with the reason.
    pub unreachable: &'a BTreeMap<String, String>,
    /// Candidates already tried and failed for this request (route, host).
    pub tried: &'a BTreeSet<(usize, String)>,
    /// The actor's available balance, when metering is on.
    pub balance: Option<Micros>,
    pub ttl: Duration,
    pub constraints: &'a Constraints,
}

/// The resolver's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Decision {
    pub policy: String,
    /// In the order to try them.
    pub candidates: Vec<Candidate>,
    pub rejected: Vec<Skipped>,
}

/// The hold a metered candidate needs: price per hour times the TTL.
pub fn hold_for(price_per_hour: Micros, ttl: Duration) -> Micros {
    price_per_hour.per_hour_times_secs(ttl.as_secs())
}

/// Decide. Deterministic and total.
pub fn resolve(input: &Input<'_>) -> Decision {
    let p = input.profile;
    let c = input.constraints;
    let mut candidates = Vec::new();
    let mut rejected = Vec::new();

    for (idx, route) in p.routes.iter().enumerate() {
        let reject_all = |why: String, hosts: Vec<String>, out: &mut Vec<Skipped>| {
            for host in hosts {
                out.push(Skipped {
                    route: idx,
                    extension: route.extension.clone(),
                    host,
                    reason: why.clone(),
                });
            }
        };
        let info = input.extensions.get(&route.extension).copied();
        let uses_host = info.map(|i| i.uses_host).unwrap_or(true);
        let places: Vec<String> = if !uses_host {
            if route.placement.is_empty() {
                vec![route.extension.trim_start_matches("ext.").to_string()]
            } else {
                route.placement.clone()
            }
        } else if let Some(h) = &c.host {
            vec![h.clone()]
        } else if route.placement.is_empty() {
            vec![input.hosts.default.clone()]
        } else {
            route.placement.clone()
        };

        // A host named twice in one route counts once.
        let mut seen = BTreeSet::new();
        let places: Vec<String> = places
            .into_iter()
            .filter(|h| seen.insert(h.clone()))
            .collect();

        if info.is_none() {
            reject_all(
                format!("extension {} is not in this build", route.extension),
                places,
                &mut rejected,
            );
            continue;
        }
        if !c.only.is_empty() && !c.only.contains(&route.extension) {
            reject_all(
                format!("--only {} leaves it out", c.only.join(",")),
                places,
                &mut rejected,
            );
            continue;
        }
        if c.ignore.contains(&route.extension) {
            reject_all(
                format!("--ignore {}", route.extension),
                places,
                &mut rejected,
            );
            continue;
        }
        if let Some(h) = &c.host {
            if !uses_host {
                reject_all(
                    format!("pinned to host {h}; this route is a SaaS provider"),
                    places,
                    &mut rejected,
                );
                continue;
            }
        }
        if let Some(max) = c.max_price {
            if route.price_per_hour > max {
                reject_all(
                    format!(
                        "price {}/h is above --max-price {max}",
                        route.price_per_hour
                    ),
                    places,
                    &mut rejected,
                );
                continue;
            }
        }
        if route.price_per_hour > Micros::ZERO {
            if let Some(balance) = input.balance {
                let need = hold_for(route.price_per_hour, input.ttl);
                if need > balance {
                    reject_all(
                        format!("insufficient credits: the hold needs {need}, {balance} available"),
                        places,
                        &mut rejected,
                    );
                    continue;
                }
            }
        }
        for host in places {
            let reject = |why: String, out: &mut Vec<Skipped>| {
                out.push(Skipped {
                    route: idx,
                    extension: route.extension.clone(),
                    host: host.clone(),
                    reason: why,
                })
            };
            if input.tried.contains(&(idx, host.clone())) {
                continue;
            }
            if uses_host {
                let Some(spec) = input.hosts.get(&host) else {
                    reject(format!("host {host} is not in hosts.toml"), &mut rejected);
                    continue;
                };
                if let Some(why) = input.unreachable.get(&host) {
                    reject(format!("unreachable: {why}"), &mut rejected);
                    continue;
                }
                if let Some(cap) = spec.capacity {
                    let live = input.live_per_host.get(&host).copied().unwrap_or(0);
                    if live >= cap {
                        reject(format!("at capacity ({live}/{cap} live)"), &mut rejected);
                        continue;
                    }
                }
            }
            candidates.push(Candidate {
                route: idx,
                extension: route.extension.clone(),
                host,
                price_per_hour: route.price_per_hour,
            });
        }
    }

    match p.policy {
        Policy::Ordered => {}
        Policy::Burst => {
            // Own hosts (free) first in their order, then metered providers.
            candidates.sort_by_key(|c| c.price_per_hour > Micros::ZERO);
        }
        Policy::Cheapest => candidates.sort_by_key(|c| c.price_per_hour),
    }
    if c.no_fallback && candidates.len() > 1 {
        for extra in candidates.split_off(1) {
            rejected.push(Skipped {
                route: extra.route,
                extension: extra.extension,
                host: extra.host,
                reason: "--no-fallback: only the first candidate may be tried".into(),
            });
        }
    }
    Decision {
        policy: p.policy.as_str().to_string(),
        candidates,
        rejected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hosts::{HostKind, HostSpec, Hosts};
    use crate::profile::{ProfileSource, Route};
    use proptest::prelude::*;

    fn host(name: &str, cap: Option<u32>) -> HostSpec {
        HostSpec {
            name: name.into(),
            address: "127.0.0.1".into(),
            kind: HostKind::Ssh {
                port: 22,
                user: "root".into(),
                identity_file: "/k".into(),
                known_hosts: None,
            },
            capacity: cap,
            labels: Default::default(),
            data_dir: None,
            connect_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_secs(1),
        }
    }

    fn profile(policy: Policy, routes: Vec<Route>) -> Profile {
        Profile {
            id: "profile.t".into(),
            version: 1,
            description: String::new(),
            aliases: Vec::new(),
            inputs: Default::default(),
            default_ttl: Duration::from_secs(3600),
            max_ttl: Duration::from_secs(7200),
            ready_timeout: Duration::from_secs(60),
            policy,
            paused_retention: crate::profile::parse::DEFAULT_PAUSED_RETENTION,
            paused_price_per_hour: Micros::ZERO,
            snapshot_price_per_hour: Micros::ZERO,
            routes,
            source: ProfileSource::Builtin,
        }
    }

    fn route(ext: &str, placement: &[&str], price: i64) -> Route {
        Route {
            extension: ext.into(),
            config: Default::default(),
            placement: placement.iter().map(|s| s.to_string()).collect(),
            price_per_hour: Micros(price),
        }
    }

    fn exts() -> BTreeMap<String, ExtensionInfo> {
        BTreeMap::from([
            ("ext.own".to_string(), ExtensionInfo { uses_host: true }),
            ("ext.saas".to_string(), ExtensionInfo { uses_host: false }),
        ])
    }

    #[test]
    fn burst_fills_own_hosts_then_goes_to_saas() {
        let hosts = Hosts {
            path: None,
            default: "h1".into(),
            hosts: vec![host("h1", Some(1)), host("h2", Some(1))],
            unreadable: None,
        };
        let p = profile(
            Policy::Burst,
            vec![
                route("ext.saas", &["saas"], 600_000),
                route("ext.own", &["h1", "h2"], 0),
            ],
        );
        let live = BTreeMap::from([("h1".to_string(), 1)]);
        let unreachable = BTreeMap::from([("h2".to_string(), "connection refused".to_string())]);
        let c = Constraints::default();
        let d = resolve(&Input {
            profile: &p,
            hosts: &hosts,
            extensions: &exts(),
            live_per_host: &live,
            unreachable: &unreachable,
            tried: &BTreeSet::new(),
            balance: Some(Micros::from_credits(10)),
            ttl: Duration::from_secs(3600),
            constraints: &c,
        });
        assert_eq!(d.candidates.len(), 1);
        assert_eq!(d.candidates[0].extension, "ext.saas");
        let reasons: Vec<&str> = d.rejected.iter().map(|s| s.reason.as_str()).collect();
        assert!(
            reasons.iter().any(|r| r.starts_with("at capacity")),
            "{reasons:?}"
        );
        assert!(
            reasons.iter().any(|r| r.starts_with("unreachable")),
            "{reasons:?}"
        );
    }

    #[test]
    fn insufficient_balance_rejects_metered_routes_with_the_amounts() {
        let hosts = Hosts::local_only();
        let p = profile(
            Policy::Ordered,
            vec![route("ext.saas", &["saas"], 1_000_000)],
        );
        let c = Constraints::default();
        let d = resolve(&Input {
            profile: &p,
            hosts: &hosts,
            extensions: &exts(),
            live_per_host: &BTreeMap::new(),
            unreachable: &BTreeMap::new(),
            tried: &BTreeSet::new(),
            balance: Some(Micros(500_000)),
            ttl: Duration::from_secs(3600),
            constraints: &c,
        });
        assert!(d.candidates.is_empty());
        assert_eq!(
            d.rejected[0].reason,
            "insufficient credits: the hold needs 1, 0.5 available"
        );
    }

    prop_compose! {
        fn arb_route()(own in any::<bool>(), hosts in proptest::collection::vec(0usize..5, 0..4), price in 0i64..3_000_000) -> Route {
            let names = ["h0", "h1", "h2", "h3", "nowhere"];
            if own {
                Route { extension: "ext.own".into(), config: Default::default(),
                        placement: hosts.iter().map(|i| names[*i].to_string()).collect(), price_per_hour: Micros(price) }
            } else {
                Route { extension: if price % 7 == 0 { "ext.missing".into() } else { "ext.saas".into() },
                        config: Default::default(), placement: vec!["saas".into()], price_per_hour: Micros(price) }
            }
        }
    }

    fn arb_policy() -> impl Strategy<Value = Policy> {
        prop_oneof![
            Just(Policy::Ordered),
            Just(Policy::Burst),
            Just(Policy::Cheapest)
        ]
    }

    proptest! {
        #[test]
        fn resolver_is_deterministic_total_and_respects_caps(
            policy in arb_policy(),
            routes in proptest::collection::vec(arb_route(), 1..6),
            caps in proptest::collection::vec(proptest::option::of(0u32..3), 4),
            live in proptest::collection::vec(0u32..4, 4),
            down in proptest::collection::vec(any::<bool>(), 4),
            balance in proptest::option::of(0i64..5_000_000),
            max_price in proptest::option::of(0i64..3_000_000),
            no_fallback in any::<bool>(),
            ttl_secs in 1u64..20_000,
        ) {
            let hosts = Hosts {
                path: None,
                default: "h0".into(),
                hosts: (0..4).map(|i| host(&format!("h{i}"), caps[i])).collect(),
                unreadable: None,
            };
            let live_map: BTreeMap<String, u32> = (0..4).map(|i| (format!("h{i}"), live[i])).collect();
            let unreachable: BTreeMap<String, String> = (0..4)
                .filter(|i| down[*i])
                .map(|i| (format!("h{i}"), "down".to_string()))
                .collect();
            let p = profile(policy, routes.clone());
            let c = Constraints { max_price: max_price.map(Micros), no_fallback, ..Default::default() };
            let input = Input {
                profile: &p,
                hosts: &hosts,
                extensions: &exts(),
                live_per_host: &live_map,
                unreachable: &unreachable,
                tried: &BTreeSet::new(),
                balance: balance.map(Micros),
                ttl: Duration::from_secs(ttl_secs),
                constraints: &c,
            };
            let a = resolve(&input);
            let b = resolve(&input);
            prop_assert_eq!(&a, &b, "deterministic");

            // Total: every (route, place) is either a candidate or rejected.
            let expected: usize = routes.iter().map(|r| match r.extension.as_str() {
                "ext.own" if r.placement.is_empty() => 1,
                "ext.own" => r.placement.iter().collect::<BTreeSet<_>>().len(),
                _ => 1,
            }).sum();
            prop_assert_eq!(a.candidates.len() + a.rejected.len(), expected);

            let rejected: BTreeSet<(usize, String)> =
                a.rejected.iter().map(|s| (s.route, s.host.clone())).collect();
            for cand in &a.candidates {
                prop_assert!(!rejected.contains(&(cand.route, cand.host.clone())),
                    "never picks a rejected candidate");
                if let Some(m) = max_price {
                    prop_assert!(cand.price_per_hour <= Micros(m), "never above the price cap");
                }
                if let (Some(bal), true) = (balance, cand.price_per_hour > Micros::ZERO) {
                    prop_assert!(hold_for(cand.price_per_hour, Duration::from_secs(ttl_secs)) <= Micros(bal),
                        "never above the balance");
                }
                prop_assert!(cand.extension != "ext.missing");
                if cand.extension == "ext.own" {
                    let i: usize = cand.host[1..].parse().unwrap();
                    prop_assert!(!down[i], "never an unreachable host");
                    if let Some(cap) = caps[i] { prop_assert!(live[i] < cap, "never a full host"); }
                }
            }
            if no_fallback {
                prop_assert!(a.candidates.len() <= 1);
            }
            if policy == Policy::Cheapest {
                prop_assert!(a.candidates.windows(2).all(|w| w[0].price_per_hour <= w[1].price_per_hour));
            }
            if policy == Policy::Burst {
                prop_assert!(a.candidates.windows(2).all(|w|
                    !(w[0].price_per_hour > Micros::ZERO && w[1].price_per_hour == Micros::ZERO)));
            }
        }
    }
}
