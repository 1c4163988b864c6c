//! The long-lived daemon (`shadowcut serve`): an HTTP API over a registry of migrations.
//!
//! Layout: [`config`] loads the TOML file; [`registry`] holds the migrations, queues and
//! actions, one [`entry`] per migration; [`store`] keeps their history on each target;
//! [`api`] is the router, with [`errors`] mapping failures to HTTP; [`metrics`] exports them to
//! Prometheus; [`throttle`] is the global pause switch; [`model`] the JSON documents (shared
//! with the CLI client).
//!
//! Lifecycle: [`serve`] loads each target's history (retrying in the background while a target
//! is unreachable) and resumes the migrations the previous process left active, from their
//! checkpoints; it starts the ticker (metrics samples and retention, throttle expiry), the
//! saver (each active migration's record and checkpoint every `checkpoint_interval_secs`, and
//! at once on a state change or its first checkpoint) and the HTTP server. On SIGTERM or
//! SIGINT it stops accepting connections, stops every migration at a safe point keeping its
//! helper tables (see [`registry::Registry::shutdown`]), saves their checkpoints, and returns
//! within `shutdown_grace_secs` plus a few seconds; the next start resumes them.

pub mod api;
pub mod config;
pub mod entry;
pub mod errors;
pub mod metrics;
pub mod model;
pub mod registry;
pub mod replicas;
pub mod store;
pub mod target;
pub mod throttle;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use config::Config;
use metrics::Metrics;
use registry::Registry;

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

/// How often the saver looks for records due (a state change shows within this).
const SAVER_TICK: Duration = Duration::from_millis(250);

/// Mirrors every live migration into the metrics and drops expired series.
pub fn refresh_metrics(registry: &Registry) {
    for e in registry.all() {
        e.sample(&registry.metrics);
    }
    registry.metrics.set_state_counts(&registry.state_counts());
    registry
        .metrics
        .set_global_throttle(registry.global.is_on());
}

/// Loads one target's history, retrying every few seconds until it works or the daemon stops.
async fn load_history(registry: Arc<Registry>, target: String) {
    let Some(store) = registry.stores.get(&target).cloned() else {
        return;
    };
    let mut delay = Duration::from_secs(1);
    loop {
        match store.load().await {
            Ok(records) => {
                info!(%target, records = records.len(), "history loaded");
                registry.add_history(&target, records).await;
                return;
            }
            Err(e) => warn!(%target, error = %e, "cannot load the history yet; retrying"),
        }
        tokio::select! {
            _ = registry.stopping.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// Samples metrics every second, forgets expired series, lifts an expired global throttle.
async fn ticker(registry: Arc<Registry>, retention: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = registry.stopping.cancelled() => return,
            _ = tick.tick() => {}
        }
        if registry.global.expire(SystemTime::now()) {
            info!("global throttle lifted: its end time passed");
        }
        refresh_metrics(&registry);
        for e in registry.all() {
            if e.metrics_expired(retention) {
                e.forget_metrics(&registry.metrics);
            }
        }
    }
}

/// Saves live records whose state changed, that got their first checkpoint, or that were not
/// saved for `checkpoint_every`: the stored checkpoint trails the migration by about that.
async fn saver(registry: Arc<Registry>) {
    let mut tick = tokio::time::interval(SAVER_TICK);
    loop {
        tokio::select! {
            _ = registry.stopping.cancelled() => return,
            _ = tick.tick() => {}
        }
        for e in registry.all() {
            if e.live().is_some() && e.save_due(registry.checkpoint_every) {
                registry.save(&e).await;
            }
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the daemon");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs the daemon until SIGTERM/SIGINT or until `stop` is cancelled.
pub async fn serve(config: Config, stop: CancellationToken) -> Result<(), DaemonError> {
    for w in &config.warnings {
        warn!("{w}");
    }
    let metrics = Arc::new(Metrics::new().map_err(|e| DaemonError::Internal(e.to_string()))?);
    let registry = Registry::new(&config, metrics);
    for name in config.targets.keys() {
        tokio::spawn(load_history(registry.clone(), name.clone()));
    }
    tokio::spawn(ticker(
        registry.clone(),
        Duration::from_secs(config.metrics_retention_secs),
    ));
    tokio::spawn(saver(registry.clone()));

    let state = Arc::new(api::AppState {
        registry: registry.clone(),
        tokens: config.tokens.clone(),
    });
    let app = api::router(state).map_err(DaemonError::Internal)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| DaemonError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(config.listen);
    info!(%addr, targets = config.targets.len(), auth = !config.tokens.is_empty(), "shadowcut daemon listening");
    // Printed on stdout so scripts and tests can wait for it.
    println!("shadowcut daemon listening on {addr}");

    let shutting_down = CancellationToken::new();
    {
        let shutting_down = shutting_down.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = signal() => {}
                _ = stop.cancelled() => {}
            }
            shutting_down.cancel();
        });
    }
    let server = axum::serve(listener, app).with_graceful_shutdown({
        let s = shutting_down.clone();
        async move { s.cancelled().await }
    });
    let server = tokio::spawn(async move { server.await });

    shutting_down.cancelled().await;
    info!("shutting down: no new requests; stopping migrations at a safe point");
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    registry.shutdown(grace).await;
    // In-flight requests get a moment to finish; idle keep-alive connections are closed.
    match tokio::time::timeout(Duration::from_secs(3), server).await {
        Ok(Ok(Err(e))) => return Err(DaemonError::Serve(e)),
        Ok(_) => {}
        Err(_) => warn!("some HTTP connections did not close in time"),
    }
    info!("daemon stopped");
    Ok(())
}
