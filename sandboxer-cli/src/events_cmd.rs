//! `sandboxer events status` and `sandboxer events flush`: the State Hub
//! outbox and its delivery (the relay is `sandboxer_events`).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sandboxer_core::{Error, ErrorKind, Result};
use sandboxer_events::{FlushReport, OutboxStatus, Relay, RelayOptions};

use crate::args::EventsCmd;
use crate::{exit, out, print_json, Env};

/// Rows of the human status table; `--json` lists every event.
const MAX_ROWS: usize = 20;

pub async fn run(env: &Env, cmd: EventsCmd, json: bool) -> Result<i32> {
    let db = env.db()?;
    let outbox = |db: &Arc<dyn sandboxer_core::store::db::Db>| {
        sandboxer_core::store::db::read(db.as_ref(), sandboxer_events::load_outbox)
    };
    let hub = sandboxer_events::hub_url_from_env();
    match cmd {
        EventsCmd::Status => {
            let doc = outbox(&db)?;
            let st = sandboxer_events::status(&doc.outbox, hub.as_deref(), Utc::now());
            if json {
                print_json(&serde_json::to_value(&st).expect("json"));
            } else {
                out(&render_status(&st, Utc::now()));
            }
            Ok(exit::code::OK)
        }
        EventsCmd::Flush { timeout } => {
            let timeout = sandboxer_core::duration::parse_duration(&timeout)
                .map_err(|e| Error::invalid_input(format!("--timeout: {e}")))?;
            let Some(url) = hub else {
                let waiting = outbox(&db)?.outbox.len();
                if waiting > 0 {
                    return Err(Error::invalid_config(format!(
                        "{waiting} event(s) wait in the outbox, but {} is not set",
                        sandboxer_events::HUB_URL_ENV
                    ))
                    .with_hint("set it to the hub's base URL, e.g. http://127.0.0.1:9000"));
                }
                return Ok(flushed(None, &FlushReport::default(), timeout, json));
            };
            let relay = Relay::new(db, &url, RelayOptions::background())?;
            let report = relay.flush(timeout).await?;
            Ok(flushed(Some(relay.hub()), &report, timeout, json))
        }
    }
}

/// Print what a flush did; exit 12 when events remain.
fn flushed(hub: Option<&str>, r: &FlushReport, timeout: Duration, json: bool) -> i32 {
    let error = (r.remaining > 0).then(|| {
        let why = r
            .last_error
            .as_deref()
            .map(|e| format!(" (last error: {e})"))
            .unwrap_or_default();
        let when = if r.timed_out && r.attempted > 0 {
            format!(
                " after {}",
                sandboxer_core::duration::format_duration(timeout)
            )
        } else {
            String::new()
        };
        Error::new(
            ErrorKind::Timeout,
            format!("{} event(s) remain in the outbox{when}{why}", r.remaining),
        )
        .with_hint("`sandboxer events status` shows each event's attempts and last error")
    });
    if json {
        let mut v = serde_json::json!({
            "hub_url": hub,
            "attempted": r.attempted,
            "delivered": r.delivered,
            "failed": r.failed,
            "remaining": r.remaining,
            "timed_out": r.timed_out,
            "last_error": r.last_error,
        });
        if let Some(e) = &error {
            v["error"] = serde_json::json!({"kind": e.kind().as_str(), "message": e.message()});
        }
        print_json(&v);
    } else {
        let to = hub.map(|h| format!(" to {h}")).unwrap_or_default();
        out(&match (r.delivered, r.remaining) {
            (0, 0) => "nothing to deliver: the outbox is empty".to_string(),
            (n, 0) => format!("delivered {n} event(s){to}; the outbox is empty"),
            (n, left) => format!("delivered {n} event(s){to}; {left} remain"),
        });
    }
    match error {
        Some(e) if json => exit::exit_code(e.kind()),
        Some(e) => exit::report(&e, false, crate::color_enabled()),
        None => exit::code::OK,
    }
}

fn render_status(st: &OutboxStatus, now: DateTime<Utc>) -> String {
    let mut o = String::new();
    let hub = match &st.hub_url {
        Some(u) => u.clone(),
        None => format!(
            "not configured (set {}; until then transitions queue no events)",
            sandboxer_events::HUB_URL_ENV
        ),
    };
    o.push_str(&format!("hub         {hub}\n"));
    match (st.events, st.oldest_at) {
        (0, _) => o.push_str("outbox      empty\n"),
        (n, Some(t)) => o.push_str(&format!(
            "outbox      {n} event(s), oldest {} ({})\n",
            relative(t, now),
            rfc3339(t)
        )),
        (n, None) => o.push_str(&format!("outbox      {n} event(s)\n")),
    }
    if st.unreadable > 0 {
        o.push_str(&format!(
            "unreadable  {} entr(ies) this build does not read (left alone)\n",
            st.unreadable
        ));
    }
    if let Some(t) = st.backing_off_until {
        o.push_str(&format!(
            "backoff     the hub failed; next try {} (`sandboxer events flush` does not wait)\n",
            relative(t, now)
        ));
    }
    if let Some(e) = &st.last_error {
        o.push_str(&format!(
            "last error  {} ({}, {})\n",
            e.message,
            e.event_id,
            relative(e.at, now)
        ));
    }
    if st.entries.is_empty() {
        return o;
    }
    let rows: Vec<Vec<String>> = st
        .entries
        .iter()
        .take(MAX_ROWS)
        .map(|e| {
            vec![
                e.event_id.clone(),
                match e.from {
                    Some(f) => format!("{} -> {}", f.as_str(), e.to.as_str()),
                    None => e.to.as_str().to_string(),
                },
                rfc3339(e.at),
                e.attempts.to_string(),
                e.next_attempt_at
                    .map(|t| relative(t, now))
                    .unwrap_or_else(|| "-".into()),
                e.last_error
                    .as_deref()
                    .map(|m| shorten(m, 60))
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    o.push('\n');
    o.push_str(&crate::render::table(
        &[
            "event",
            "transition",
            "at",
            "attempts",
            "next try",
            "last error",
        ],
        &rows,
    ));
    if st.entries.len() > MAX_ROWS {
        o.push_str(&format!(
            "... and {} more (`sandboxer events status --json` lists every event)\n",
            st.entries.len() - MAX_ROWS
        ));
    }
    o
}

fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (t - now).num_seconds();
    let d = sandboxer_core::duration::format_duration(Duration::from_secs(secs.unsigned_abs()));
    if secs > 0 {
        format!("in {d}")
    } else if secs == 0 {
        "now".into()
    } else {
        format!("{d} ago")
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max - 3).collect();
    out.push_str("...");
    out
}
