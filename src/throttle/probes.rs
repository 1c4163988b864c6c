//! Runs the throttle probes every few hundred milliseconds and sets one switch per source.
//!
//! Sources: `replica_lag`, `load`, `schedule`, `custom` (query and URL). `critical_load`
//! thresholds fail the migration cleanly (or pause it, by option) after N consecutive hits,
//! with the values in the error. Settings are live: a new value on the watch takes effect at
//! the next tick.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use mysql_async::Conn;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::custom::{query_verdict, url_verdict};
use super::load::{exceeded, global_status};
use super::replica::ReplicaProbe;
use super::schedule::{active_window, PeakWindow};
use super::{Switch, Throttle};
use crate::conn::ConnSettings;
use crate::error::{Error, Result};
use crate::flavor::ServerVersion;

const TICK: Duration = Duration::from_millis(250);

/// The live-tunable throttle settings of one migration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ThrottleSettings {
    pub max_lag_millis: Option<u64>,
    pub max_load: BTreeMap<String, u64>,
    pub critical_load: BTreeMap<String, u64>,
    /// Consecutive critical hits before acting.
    pub critical_load_hits: u32,
    /// Pause (the manual switch) instead of failing.
    pub critical_load_pause: bool,
    pub peak_windows: Vec<PeakWindow>,
    pub throttle_query: Option<String>,
    pub check_url: Option<String>,
}

/// What the probes need to reach the servers.
#[derive(Debug, Clone)]
pub struct ProbeContext {
    pub primary: ConnSettings,
    pub version: ServerVersion,
    pub replicas: Vec<ConnSettings>,
    pub database: String,
    pub changelog: String,
}

/// The probe switches, to be added to a migration's gate.
#[derive(Clone)]
pub struct ProbeSwitches {
    pub replica_lag: Switch,
    pub load: Switch,
    pub schedule: Switch,
    pub custom: Switch,
    /// True once every probe has been evaluated once: before that, "not throttled" means
    /// "not checked yet".
    checked: std::sync::Arc<watch::Sender<bool>>,
}

impl Default for ProbeSwitches {
    fn default() -> Self {
        ProbeSwitches {
            replica_lag: Switch::default(),
            load: Switch::default(),
            schedule: Switch::default(),
            custom: Switch::default(),
            checked: std::sync::Arc::new(watch::channel(false).0),
        }
    }
}

impl ProbeSwitches {
    /// Waits for the probes' first round (bounded: a probe stuck on an unreachable server
    /// must not hold the migration forever; it throttles once it answers).
    pub async fn first_round(&self, limit: Duration) {
        let mut rx = self.checked.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|c| *c)).await;
    }

    pub fn add_to(&self, throttle: Throttle) -> Throttle {
        throttle
            .with_source("replica_lag", &self.replica_lag)
            .with_source("load", &self.load)
            .with_source("schedule", &self.schedule)
            .with_source("custom", &self.custom)
    }
}

/// Starts the probes. The task ends `Ok` on cancel and `Err` when critical load fails the
/// migration; `pause` is set instead when the settings ask to pause.
pub fn spawn_probes(
    ctx: ProbeContext,
    settings: watch::Receiver<ThrottleSettings>,
    switches: ProbeSwitches,
    pause: Option<Switch>,
    cancel: CancellationToken,
) -> JoinHandle<Result<()>> {
    tokio::spawn(async move {
        let mut replicas = ReplicaProbe::new(
            ctx.replicas.clone(),
            ctx.version,
            &ctx.database,
            &ctx.changelog,
        );
        let mut primary: Option<Conn> = None;
        let mut critical_hits = 0u32;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            let s = settings.borrow().clone();

            let lag = match s.max_lag_millis {
                Some(max) if !replicas.is_empty() => {
                    replicas.check(Duration::from_millis(max)).await
                }
                _ => Vec::new(),
            };
            switches.replica_lag.set(joined(lag));

            switches
                .schedule
                .set(active_window(&s.peak_windows, Utc::now()));

            let needs_primary =
                !s.max_load.is_empty() || !s.critical_load.is_empty() || s.throttle_query.is_some();
            if needs_primary && primary.is_none() {
                primary = ctx.primary.connect("throttle checks").await.ok();
            }
            let (mut load_reasons, mut critical) = (Vec::new(), Vec::new());
            if !s.max_load.is_empty() || !s.critical_load.is_empty() {
                match primary.as_mut() {
                    Some(c) => match global_status(c).await {
                        Ok(values) => {
                            load_reasons = exceeded(&values, &s.max_load);
                            critical = exceeded(&values, &s.critical_load);
                        }
                        Err(e) => {
                            load_reasons.push(format!("cannot read global status: {e}"));
                            primary = None;
                        }
                    },
                    None => load_reasons.push("cannot connect to read global status".to_string()),
                }
            }
            let mut custom = Vec::new();
            if let Some(sql) = &s.throttle_query {
                match primary.as_mut() {
                    Some(c) => custom.extend(query_verdict(c, sql).await),
                    None => custom.push("cannot connect to run the throttle query".to_string()),
                }
            }
            if let Some(url) = &s.check_url {
                custom.extend(url_verdict(url).await);
            }
            switches.custom.set(joined(custom));

            if critical.is_empty() {
                critical_hits = 0;
            } else {
                critical_hits += 1;
                load_reasons.extend(critical.iter().map(|c| format!("critical: {c}")));
                if critical_hits >= s.critical_load_hits.max(1) {
                    let values = critical.join(", ");
                    match &pause {
                        Some(p) if s.critical_load_pause => {
                            p.set(Some(format!("critical load {values} ({critical_hits} checks in a row): resume when the server has recovered")));
                            critical_hits = 0;
                        }
                        _ => {
                            return Err(Error::refused(
                                "critical_load",
                                format!("critical load {values} for {critical_hits} checks in a row"),
                                "the migration stopped to protect the server; start it again when the load is lower, or raise critical_load",
                            ))
                        }
                    }
                }
            }
            switches.load.set(joined(load_reasons));
            switches.checked.send_replace(true);
        }
    })
}

fn joined(reasons: Vec<String>) -> Option<String> {
    (!reasons.is_empty()).then(|| reasons.join("; "))
}
