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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
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
