//! The server: bind (refusing a non-loopback address while no token
//! exists), serve the router, run the reaper and any other background task
//! (the State Hub relay) beside it, and shut down gracefully on SIGTERM or
//! Ctrl-C.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use sandboxer_core::{Error, Result};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::routes::run_blocking;
use crate::{router, ApiState};

/// Tells background tasks that the server is stopping.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Resolves once the server is stopping.
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    /// Whether the server is stopping.
    pub fn is_stopping(&self) -> bool {
        *self.0.borrow()
    }
}

type TaskFn = Box<dyn FnOnce(Shutdown) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// A task the server runs beside the HTTP listener until it shuts down: the
/// built-in reaper, and the State Hub relay.
///
/// ```
/// use sandboxer_api::BackgroundTask;
///
/// let relay = BackgroundTask::new("state-hub relay", |mut shutdown| async move {
///     loop {
///         tokio::select! {
///             _ = shutdown.wait() => break,
///             _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => { /* deliver the outbox */ }
///         }
///     }
/// });
/// assert_eq!(relay.name(), "state-hub relay");
/// ```
pub struct BackgroundTask {
    name: String,
    run: TaskFn,
}

impl BackgroundTask {
    /// `run` gets a [`Shutdown`] and should return soon after it fires.
    pub fn new<F, Fut>(name: impl Into<String>, run: F) -> Self
    where
        F: FnOnce(Shutdown) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        BackgroundTask {
            name: name.into(),
            run: Box::new(move |s| Box::pin(run(s))),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Debug for BackgroundTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackgroundTask")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The built-in reaper (TTL enforcement without cron).
#[derive(Debug, Clone, Copy)]
pub struct ReaperConfig {
    /// How often it runs (the first run is at start).
    pub interval: Duration,
    /// Nothing younger than this is touched.
    pub grace: Duration,
}

/// Everything [`serve`] needs.
#[derive(Debug)]
pub struct ServeConfig {
    pub bind: SocketAddr,
    pub state: ApiState,
    /// `None` turns the built-in reaper off.
    pub reaper: Option<ReaperConfig>,
    /// How often every host is probed for `/metrics` (`sandboxer_host_up`);
    /// `None`: never.
    pub host_probe: Option<Duration>,
    /// More tasks to run until shutdown. The State Hub relay goes here.
    pub background: Vec<BackgroundTask>,
    /// How long shutdown waits for requests in flight, background tasks
    /// and provisioning started with `wait: false`.
    pub shutdown_grace: Duration,
    /// Deadlines for slow clients and the cap on connections.
    pub limits: crate::ConnLimits,
}

impl ServeConfig {
    /// `bind` and `state`, the reaper every minute with a 2m grace window,
    /// the hosts probed every 30s, no other task, 30s to shut down, the
    /// default [`crate::ConnLimits`].
    pub fn new(bind: SocketAddr, state: ApiState) -> Self {
        ServeConfig {
            bind,
            state,
            reaper: Some(ReaperConfig {
                interval: Duration::from_secs(60),
                grace: sandboxer_core::reaper::DEFAULT_GRACE,
            }),
            host_probe: Some(Duration::from_secs(30)),
            background: Vec::new(),
            shutdown_grace: Duration::from_secs(30),
            limits: crate::ConnLimits::default(),
        }
    }
}

/// A bound server, not serving yet: [`Server::local_addr`] is the address
/// actually bound (port 0 picks a free port).
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    config: ServeConfig,
}

impl Server {
    /// Bind. A non-loopback address is refused while no token exists.
    pub async fn bind(config: ServeConfig) -> Result<Server> {
        let no_tokens = config.state.tokens.is_empty()?;
        if no_tokens && !config.bind.ip().is_loopback() {
            return Err(Error::invalid_input(format!(
                "refusing to listen on {}, which is not a loopback address, while no token exists",
                config.bind
            ))
            .with_hint(
                "make a token first (`sandboxer tokens add --actor adm:NAME`), or bind 127.0.0.1",
            ));
        }
        if no_tokens {
            tracing::warn!(
                "no token in {}: every /v1 request will be refused (401) until `sandboxer tokens add`",
                config.state.tokens.location()
            );
        }
        let listener = TcpListener::bind(config.bind).await.map_err(|e| {
            Error::io(format!("listening on {}", config.bind), e)
                .with_hint("is another server on that port? `--bind 127.0.0.1:0` picks a free one")
        })?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading the bound address", e))?;
        Ok(Server {
            listener,
            addr,
            config,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serve until SIGTERM or Ctrl-C, then shut down gracefully.
    pub async fn run(self) -> Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serve until `stop` resolves, then shut down gracefully: stop
    /// accepting, let requests in flight finish (at most `shutdown_grace`),
    /// stop the background tasks, and wait for detached provisioning.
    pub async fn run_until(self, stop: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let Server {
            listener,
            addr,
            config,
        } = self;
        let ServeConfig {
            state,
            reaper,
            host_probe,
            mut background,
            shutdown_grace,
            limits,
            ..
        } = config;
        let (tx, rx) = watch::channel(false);
        if let Some(r) = reaper {
            background.insert(0, reaper_task(state.clone(), r));
        }
        if let Some(every) = host_probe {
            background.push(host_probe_task(state.clone(), every));
        }
        let mut tasks = JoinSet::new();
        for t in background {
            tracing::info!("starting {}", t.name);
            let name = t.name.clone();
            let fut = (t.run)(Shutdown(rx.clone()));
            tasks.spawn(async move {
                fut.await;
                name
            });
        }
        let app = router(state.clone());
        let signal_tx = tx.clone();
        tracing::debug!("serving on {addr} with {limits:?}");
        crate::conn::serve(
            listener,
            app,
            limits,
            async move {
                stop.await;
                tracing::info!("stopping: no new connections; finishing requests in flight");
                let _ = signal_tx.send(true);
            },
            shutdown_grace,
        )
        .await;
        let _ = tx.send(true);
        let drained = tokio::time::timeout(shutdown_grace, async {
            while let Some(done) = tasks.join_next().await {
                if let Ok(name) = done {
                    tracing::info!("{name} stopped");
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!("background tasks did not stop within {shutdown_grace:?}");
            tasks.abort_all();
        }
        if !state.wait_detached(shutdown_grace).await {
            tracing::warn!(
                "provisioning started with `wait: false` is still running; the reaper will find what it leaves"
            );
        }
        Ok(())
    }
}

/// Bind and serve until SIGTERM or Ctrl-C (see [`Server`]).
pub async fn serve(config: ServeConfig) -> Result<()> {
    Server::bind(config).await?.run().await
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT). The handlers are installed
/// when this is called, not when it is first polled: call it before telling
/// anyone the server listens, so a signal sent right after cannot find the
/// default action (which kills the process without a graceful stop).
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate()).ok();
    let int = signal(SignalKind::interrupt()).ok();
    async move {
        let wait = |s: Option<tokio::signal::unix::Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = wait(term) => {},
            _ = wait(int) => {},
        }
    }
}

/// An interval whose first tick is now, and that does not hurry to catch
/// up after a slow run.
fn ticks(every: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// Wait for the next tick; false once the server is stopping.
async fn next_tick(tick: &mut tokio::time::Interval, shutdown: &mut Shutdown) -> bool {
    tokio::select! {
        _ = shutdown.wait() => false,
        _ = tick.tick() => true,
    }
}

/// Every `every`, connect to each host of the inventory (as `sandboxer
/// hosts list` does) and keep what was found for `/metrics`.
pub fn host_probe_task(state: ApiState, every: Duration) -> BackgroundTask {
    BackgroundTask::new("host probe", move |mut shutdown| async move {
        let mut tick = ticks(every);
        while next_tick(&mut tick, &mut shutdown).await {
            let m = state.manager.clone();
            let probe =
                run_blocking(move || async move { Ok(crate::views::probe_hosts(&m).await) });
            let rows = tokio::select! {
                _ = shutdown.wait() => break,
                r = probe => r,
            };
            match rows {
                Ok(rows) => state.metrics.hosts(&rows),
                Err(e) => tracing::warn!("host probe: {e}"),
            }
        }
    })
}

/// The reaper as a background task: `reap_stale` every interval (the same
/// as `sandboxer reap-stale`), and the ledger reconciled with the store.
pub fn reaper_task(state: ApiState, cfg: ReaperConfig) -> BackgroundTask {
    BackgroundTask::new("reaper", move |mut shutdown| async move {
        let mut tick = ticks(cfg.interval);
        while next_tick(&mut tick, &mut shutdown).await {
            let m = state.manager.clone();
            let grace = cfg.grace;
            let r = run_blocking(move || async move { m.reap_stale(grace, false).await }).await;
            state.metrics.reaper_pass(r.as_ref().map_err(|_| ()));
            match r {
                Ok(report) => {
                    for r in &report.reaped {
                        if r.ok {
                            tracing::info!(
                                "reaper: {} {} on {}: {}",
                                r.item.kind.as_str(),
                                r.item.sandbox_id,
                                r.item.host,
                                r.outcome
                            );
                        } else {
                            tracing::warn!(
                                "reaper: {} {} on {}: {}",
                                r.item.kind.as_str(),
                                r.item.sandbox_id,
                                r.item.host,
                                r.outcome
                            );
                        }
                    }
                }
                Err(e) => tracing::warn!("reaper: {e}"),
            }
        }
    })
}
