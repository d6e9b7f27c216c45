//! `GET /v1/sandboxes` a page at a time: a limit, an opaque cursor in the
//! `X-Next-Token` header, the caller's own records only for agent tokens,
//! and clear 400s for a bad limit or cursor.

use std::collections::BTreeSet;

use sandboxer_core::model::{Actor, NewSandbox, Sandbox};
use sandboxer_core::store::db::transact;

use crate::start;

pub(crate) fn record(i: usize, actor: &str) -> Sandbox {
    Sandbox::new(NewSandbox {
        id: format!("sbx-page{i:06}"),
        profile: "profile.sandbox-canary".into(),
        profile_version: 1,
        extension: "ext.canary".into(),
        host: "local".into(),
        actor: actor.parse::<Actor>().unwrap(),
        inputs: Default::default(),
        route: Default::default(),
        ttl_seconds: 600,
        idempotency_key: None,
        recreated_from: None,
        cost: None,
        created_at: sandboxer_core::model::now(),
    })
}

/// GET `path`: the status, the `X-Next-Token` header and the JSON body.
async fn get(
    r: &crate::Running,
    path: &str,
    token: &str,
) -> (u16, Option<String>, serde_json::Value) {
    let resp = r
        .http
        .get(format!("{}{path}", r.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let next = resp
        .headers()
        .get("x-next-token")
        .map(|v| v.to_str().unwrap().to_string());
    (status, next, resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_history_goes_out_a_page_at_a_time() {
    let r = start(Vec::new()).await;
    let db = sandboxer_store::open(None, &r.data_dir()).unwrap();
    transact(db.as_ref(), |tx| {
        for i in 0..250 {
            let who = if i % 5 < 3 { "agt:a" } else { "agt:b" };
            tx.insert_sandbox(&record(i, who))?;
        }
        Ok(())
    })
    .unwrap();
    let admin = r.token("adm:ops");

    // Default pages of 100, followed to the end: every record once, in order.
    let mut seen = Vec::new();
    let mut path = "/v1/sandboxes".to_string();
    let mut pages = 0;
    loop {
        let (status, next, body) = get(&r, &path, &admin).await;
        assert_eq!(status, 200, "{body}");
        let page = body.as_array().unwrap();
        assert!(page.len() <= 100);
        seen.extend(page.iter().map(|s| s["id"].as_str().unwrap().to_string()));
        pages += 1;
        match next {
            Some(t) => path = format!("/v1/sandboxes?next_token={t}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let want: Vec<String> = (0..250).map(|i| format!("sbx-page{i:06}")).collect();
    assert_eq!(seen, want, "oldest first, none twice, none left out");

    // An agent sees its own, and full pages of them.
    let a = r.token("agt:a");
    let (status, next, body) = get(&r, "/v1/sandboxes?limit=1000", &a).await;
    assert_eq!((status, next), (200, None));
    let mine = body.as_array().unwrap();
    assert_eq!(mine.len(), 150);
    assert!(mine.iter().all(|s| s["actor"] == "agt:a"));
    let (_, next, body) = get(&r, "/v1/sandboxes?limit=40", &a).await;
    assert_eq!(body.as_array().unwrap().len(), 40);
    assert!(next.is_some());
    let (status, _, body) = get(&r, "/v1/sandboxes?actor=agt:b", &a).await;
    assert_eq!((status, body), (200, serde_json::json!([])));
    // Filters and pages together.
    let (_, _, body) = get(&r, "/v1/sandboxes?actor=agt:b&limit=1000", &admin).await;
    let ids: BTreeSet<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 100);

    for bad in [
        "limit=0",
        "limit=1001",
        "limit=ten",
        "next_token=zzz",
        "next_token=42",
    ] {
        let (status, _, body) = get(&r, &format!("/v1/sandboxes?{bad}"), &admin).await;
        assert_eq!(status, 400, "{bad}");
        let msg = body["message"].as_str().unwrap();
        assert!(
            msg.contains("limit") || msg.contains("next_token"),
            "{bad}: {body}"
        );
    }
    r.stop().await;
}
