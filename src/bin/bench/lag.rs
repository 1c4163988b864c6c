//! Replica lag measured independently of shadowcut. The bench writes a heartbeat row (its own
//! clock, microseconds since the epoch) on the primary every 100 ms, in its own database
//! `bench_lag`, and reads it back on the replica every `sample` interval. The lag is now
//! minus the newest heartbeat the replica has applied; both servers run on this machine, so
//! there is one clock. A current replica therefore reads 0-100 ms (the heartbeat's age), and
//! a replica stuck behind a large transaction reads the full time since the last heartbeat
//! it applied. Each sample also records the migration's step and whether its replica-lag
//! throttle was on at that moment.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use shadowcut::clock::now_micros;
use shadowcut::conn::ConnSettings;
use shadowcut::progress::Progress;
use shadowcut::state::Step;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const DATABASE: &str = "bench_lag";
const HEARTBEAT_EVERY: Duration = Duration::from_millis(100);

/// Which part of the run a sample belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Loading, waiting for the replica: not reported.
    Setup,
    Baseline,
    Migration,
    /// The migration has returned; the replica may still be applying its last changes.
    After,
    /// The write load alone again, once the replica has caught up.
    BaselineAfter,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Setup => "setup",
            Phase::Baseline => "base",
            Phase::Migration => "migr",
            Phase::After => "after",
            Phase::BaselineAfter => "base2",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct LagSample {
    pub at: Instant,
    /// `None` when the replica could not be read.
    pub lag_ms: Option<f64>,
    pub phase: Phase,
    /// The migration's step and whether its replica-lag throttle was on; `None` outside it.
    pub migration: Option<(Step, bool)>,
}

#[derive(Default)]
struct Shared {
    phase: Option<Phase>,
    progress: Option<Arc<Progress>>,
    samples: Vec<LagSample>,
    heartbeat_errors: u64,
}

/// The heartbeat writer and the lag sampler, running until [`LagMonitor::stop`].
pub struct LagMonitor {
    shared: Arc<Mutex<Shared>>,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

/// What the monitor saw.
pub struct LagReport {
    pub samples: Vec<LagSample>,
    pub heartbeat_errors: u64,
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// Creates `bench_lag.heartbeat` on the primary (replicated like everything else).
pub async fn create_table(primary: &mut Conn) -> anyhow::Result<()> {
    for sql in [
        format!("DROP DATABASE IF EXISTS {DATABASE}"),
        format!("CREATE DATABASE {DATABASE}"),
        format!("CREATE TABLE {DATABASE}.heartbeat (id INT PRIMARY KEY, ts BIGINT NOT NULL)"),
        format!(
            "INSERT INTO {DATABASE}.heartbeat VALUES (1, {})",
            now_micros()
        ),
    ] {
        primary
            .query_drop(&sql)
            .await
            .with_context(|| format!("running `{sql}`"))?;
    }
    Ok(())
}

impl LagMonitor {
    pub fn start(primary: ConnSettings, replica: ConnSettings, sample: Duration) -> LagMonitor {
        let shared = Arc::new(Mutex::new(Shared {
            phase: Some(Phase::Setup),
            ..Shared::default()
        }));
        let cancel = CancellationToken::new();
        let tasks = vec![
            tokio::spawn(heartbeat(primary, shared.clone(), cancel.clone())),
            tokio::spawn(sampler(replica, sample, shared.clone(), cancel.clone())),
        ];
        LagMonitor {
            shared,
            cancel,
            tasks,
        }
    }

    /// Samples from now on belong to `phase`; `progress` is the running migration's, if any.
    pub fn set_phase(&self, phase: Phase, progress: Option<Arc<Progress>>) {
        let mut s = lock(&self.shared);
        s.phase = Some(phase);
        s.progress = progress;
    }

    /// The newest sample's lag, if there is one and it was readable.
    pub fn last_lag_ms(&self) -> Option<f64> {
        lock(&self.shared).samples.last().and_then(|s| s.lag_ms)
    }

    /// Waits until a sample reads a lag under `below_ms`: the heartbeat is being written and
    /// replicated (the row inserted at setup is older).
    pub async fn wait_current(&self, below_ms: f64, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        while !self.last_lag_ms().is_some_and(|l| l < below_ms) {
            if Instant::now() > deadline {
                anyhow::bail!(
                    "the replica did not show a current heartbeat within {limit:?} (last lag \
                     read: {:?} ms)",
                    self.last_lag_ms()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    pub async fn stop(mut self) -> LagReport {
        self.cancel.cancel();
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        let mut s = lock(&self.shared);
        LagReport {
            samples: std::mem::take(&mut s.samples),
            heartbeat_errors: s.heartbeat_errors,
        }
    }
}

async fn heartbeat(settings: ConnSettings, shared: Arc<Mutex<Shared>>, cancel: CancellationToken) {
    let sql = format!("UPDATE {DATABASE}.heartbeat SET ts = ? WHERE id = 1");
    let mut conn: Option<Conn> = None;
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        if conn.is_none() {
            conn = settings.connect("the bench's heartbeat").await.ok();
        }
        let written = match conn.as_mut() {
            Some(c) => c.exec_drop(&sql, (now_micros(),)).await.is_ok(),
            None => false,
        };
        if !written {
            conn = None;
            lock(&shared).heartbeat_errors += 1;
        }
    }
    if let Some(c) = conn {
        let _ = c.disconnect().await;
    }
}

async fn sampler(
    settings: ConnSettings,
    every: Duration,
    shared: Arc<Mutex<Shared>>,
    cancel: CancellationToken,
) {
    let sql = format!("SELECT ts FROM {DATABASE}.heartbeat WHERE id = 1");
    let mut conn: Option<Conn> = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        if conn.is_none() {
            conn = settings.connect("the bench's lag sampler").await.ok();
        }
        let read = match conn.as_mut() {
            Some(c) => match c.query_first::<i64, _>(&sql).await {
                Ok(Some(ts)) => Some((now_micros() - ts).max(0) as f64 / 1000.0),
                Ok(None) => None,
                Err(_) => {
                    conn = None;
                    None
                }
            },
            None => None,
        };
        let at = Instant::now();
        let mut s = lock(&shared);
        let phase = s.phase.unwrap_or(Phase::Setup);
        let migration = s.progress.as_ref().map(|p| {
            let throttled = p
                .throttle_sources()
                .iter()
                .any(|src| src.name == "replica_lag" && src.reason.is_some());
            (p.status().step, throttled)
        });
        s.samples.push(LagSample {
            at,
            lag_ms: read,
            phase,
            migration,
        });
    }
    if let Some(c) = conn {
        let _ = c.disconnect().await;
    }
}

/// Max and p99 (nearest rank) of the readable lags, with the number of unreadable samples.
pub fn stats<'a>(samples: impl Iterator<Item = &'a LagSample>) -> LagStats {
    let mut lags = Vec::new();
    let mut unreadable = 0;
    for s in samples {
        match s.lag_ms {
            Some(l) => lags.push(l),
            None => unreadable += 1,
        }
    }
    lags.sort_by(|a, b| a.total_cmp(b));
    let rank = |p: f64| -> Option<f64> {
        if lags.is_empty() {
            return None;
        }
        let i = ((p / 100.0 * lags.len() as f64).ceil() as usize).clamp(1, lags.len());
        Some(lags[i - 1])
    };
    LagStats {
        samples: lags.len(),
        unreadable,
        max_ms: lags.last().copied(),
        p99_ms: rank(99.0),
        p50_ms: rank(50.0),
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LagStats {
    pub samples: usize,
    pub unreadable: usize,
    pub max_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p50_ms: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_over_samples() {
        let t0 = Instant::now();
        let mut samples: Vec<LagSample> = (1..=200)
            .map(|i| LagSample {
                at: t0 + Duration::from_millis(i * 100),
                lag_ms: Some(i as f64),
                phase: Phase::Migration,
                migration: None,
            })
            .collect();
        samples.push(LagSample {
            at: t0,
            lag_ms: None,
            phase: Phase::Migration,
            migration: None,
        });
        let s = stats(samples.iter());
        assert_eq!(s.samples, 200);
        assert_eq!(s.unreadable, 1);
        assert_eq!(s.max_ms, Some(200.0));
        assert_eq!(s.p99_ms, Some(198.0));
        assert_eq!(s.p50_ms, Some(100.0));
        let none = stats(std::iter::empty());
        assert_eq!(none.max_ms, None);
    }
}
