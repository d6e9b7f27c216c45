//! `sandboxer-hub-stub`: a stand-in State Hub on loopback, to try
//! `SANDBOXER_STATE_HUB_URL` by hand. Prints each event it accepts.
//!
//! ```text
//! sandboxer-hub-stub [--listen 127.0.0.1:9000] [--mode accept|unavailable|reject|drop|hang]
//! ```

use std::time::Duration;

use sandboxer_events::stub_hub::{HubMode, StubHub};

fn main() {
    let mut listen = "127.0.0.1:9000".to_string();
    let mut mode = HubMode::Accept;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--listen", Some(v)) => listen = v,
            ("--mode", Some(v)) => match v.parse() {
                Ok(m) => mode = m,
                Err(e) => fail(&e),
            },
            _ => fail("usage: sandboxer-hub-stub [--listen ADDR] [--mode accept|unavailable|reject|drop|hang]"),
        }
    }
    let addr = listen
        .parse()
        .unwrap_or_else(|e| fail(&format!("--listen `{listen}`: {e}")));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&e.to_string()));
    rt.block_on(async {
        let hub = StubHub::bind(addr)
            .await
            .unwrap_or_else(|e| fail(&format!("listening on {addr}: {e}")));
        hub.set_mode(mode);
        eprintln!(
            "State Hub stub on {} ({mode:?}); Ctrl-C stops it",
            hub.url()
        );
        let mut shown = 0;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            let got = hub.received();
            for r in &got[shown..] {
                println!("{}", r.body);
            }
            shown = got.len();
        }
    });
}

fn fail(msg: &str) -> ! {
    eprintln!("sandboxer-hub-stub: {msg}");
    std::process::exit(2);
}
