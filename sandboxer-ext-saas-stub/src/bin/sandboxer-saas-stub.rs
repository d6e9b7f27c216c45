//! `sandboxer-saas-stub`: the stand-in metered SaaS provider. Prints
//! `listening on ADDR` once bound, serves until SIGTERM or Ctrl-C.

use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use sandboxer_ext_saas_stub::server::{shutdown_signal, Server, StubConfig};
use sandboxer_ext_saas_stub::ApiKey;

/// A stand-in for a metered SaaS sandbox provider, speaking a subset of
/// E2B's REST API (see the crate README).
#[derive(Parser)]
#[command(name = "sandboxer-saas-stub", version)]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8790")]
    bind: SocketAddr,
    /// The key clients must send in X-API-Key. Prefer the environment
    /// variable: a command line is visible to every user of the machine.
    #[arg(long, env = "SAAS_STUB_API_KEY", hide_env_values = true)]
    api_key: String,
    /// How many sandboxes may run at once; one more gets 429.
    #[arg(long, default_value_t = 4)]
    capacity: usize,
    /// Domain sandboxes are reached under: <sandboxID>.<domain>.
    #[arg(long, default_value = "saas-stub.local")]
    domain: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if args.api_key.is_empty() {
        eprintln!("sandboxer-saas-stub: the API key may not be empty");
        return ExitCode::from(2);
    }
    let config = StubConfig {
        capacity: args.capacity,
        domain: args.domain,
        ..StubConfig::new(ApiKey::new(args.api_key))
    };
    let shutdown = match shutdown_signal() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sandboxer-saas-stub: cannot catch signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let server = match Server::bind(args.bind, config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sandboxer-saas-stub: cannot listen on {}: {e}", args.bind);
            return ExitCode::FAILURE;
        }
    };
    let addr = match server.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sandboxer-saas-stub: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("listening on {addr}");
    let _ = std::io::stdout().flush();
    match server.run(shutdown).await {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sandboxer-saas-stub: {e}");
            ExitCode::FAILURE
        }
    }
}
