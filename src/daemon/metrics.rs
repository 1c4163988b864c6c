//! Prometheus metrics: per-migration series, daemon-wide gauges, and HTTP request metrics.
//!
//! Naming follows Prometheus conventions: a `shadowcut_` prefix, base units (`_seconds`), and
//! `_total` on counters. Per-migration series carry the labels `id`, `database` and `table`;
//! they are dropped [`Metrics::forget`] once a finished migration is older than the configured
//! retention, so the number of series stays bounded however many migrations run.
//!
//! Throttling shows at two levels: `shadowcut_migration_throttled` is 1 while any source
//! throttles; `shadowcut_migration_throttle_active{source}` and
//! `shadowcut_migration_throttled_seconds_total{source}` break it down by source (`manual`,
//! `global`, `replica_lag`, `load`, `schedule`, `custom`).
//!
//! The engine's counters are atomics in [`Progress`]; this module mirrors them into the
//! registry on each sample (counters advance by the difference to the last sample, so they stay
//! monotonic). Histograms need every observation and are fed by [`MigrationObserver`], the
//! engine's [`Observer`] hook.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    exponential_buckets, CounterVec, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::progress::{ChangeKind, Observer};
use crate::state::State;

const MIGRATION_LABELS: &[&str] = &["id", "database", "table"];

/// Every metric the daemon exports, registered in its own registry.
pub struct Metrics {
    registry: Registry,
    rows_copied: IntCounterVec,
    rows_estimate: IntGaugeVec,
    progress_ratio: GaugeVec,
    events_applied: IntCounterVec,
    replay_lag: GaugeVec,
    replay_transactions: IntCounterVec,
    backlog: IntGaugeVec,
    chunk_size: IntGaugeVec,
    chunk_duration: HistogramVec,
    throttled: IntGaugeVec,
    throttle_active: IntGaugeVec,
    throttled_seconds: CounterVec,
    state: IntGaugeVec,
    cutover_attempts: IntCounterVec,
    cutover_stall: HistogramVec,
    reconnects: IntCounterVec,
    migrations: IntGaugeVec,
    global_throttle: IntGaugeVec,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
}

/// One sample of a live migration's numbers, taken from its progress.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub rows_copied: u64,
    pub rows_estimate: u64,
    pub progress_ratio: f64,
    pub applied: [u64; 3],
    pub replay_lag_seconds: Option<f64>,
    pub backlog: u64,
    pub replay_transactions: u64,
    pub chunk_size: u64,
    pub throttled: bool,
    pub sources: Vec<SourceSample>,
    pub state: Option<State>,
    pub cutover_attempts: u64,
    pub reconnects: u64,
}

/// One throttle source in a sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceSample {
    pub name: String,
    pub active: bool,
    /// Seconds it has throttled so far (monotonic).
    pub seconds: f64,
}

/// The labels of one migration's series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    pub id: String,
    pub database: String,
    pub table: String,
}

impl Labels {
    fn values(&self) -> [&str; 3] {
        [&self.id, &self.database, &self.table]
    }
}

fn with(extra: &[&'static str]) -> Vec<&'static str> {
    let mut v = MIGRATION_LABELS.to_vec();
    v.extend_from_slice(extra);
    v
}

impl Metrics {
    /// Builds and registers every metric. Fails only on a programming error (a duplicate or
    /// malformed name), which every test run would show.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let m = Metrics {
            rows_copied: IntCounterVec::new(
                Opts::new(
                    "shadowcut_migration_rows_copied_total",
                    "Rows copied into the shadow table.",
                ),
                MIGRATION_LABELS,
            )?,
            rows_estimate: IntGaugeVec::new(
                Opts::new(
                    "shadowcut_migration_rows_estimate",
                    "The server's estimate of the table's rows.",
                ),
                MIGRATION_LABELS,
            )?,
            progress_ratio: GaugeVec::new(
                Opts::new(
                    "shadowcut_migration_progress_ratio",
                    "Copy progress from 0 to 1.",
                ),
                MIGRATION_LABELS,
            )?,
            events_applied: IntCounterVec::new(
                Opts::new(
                    "shadowcut_migration_binlog_events_applied_total",
                    "Binlog row events applied to the shadow table, by kind.",
                ),
                &with(&["kind"]),
            )?,
            replay_lag: GaugeVec::new(
                Opts::new(
                    "shadowcut_migration_replay_lag_seconds",
                    "How far the shadow table trails the original (heartbeat age).",
                ),
                MIGRATION_LABELS,
            )?,
            replay_transactions: IntCounterVec::new(
                Opts::new(
                    "shadowcut_migration_replay_transactions_total",
                    format!(
                        "Transactions the replay committed on the shadow table (each carries \
                         every change that arrived within {} ms).",
                        crate::replay::COALESCE.as_millis()
                    ),
                ),
                MIGRATION_LABELS,
            )?,
            backlog: IntGaugeVec::new(
                Opts::new(
                    "shadowcut_migration_backlog_events",
                    "Row events read from the binlog but not applied yet.",
                ),
                MIGRATION_LABELS,
            )?,
            chunk_size: IntGaugeVec::new(
                Opts::new(
                    "shadowcut_migration_chunk_size_rows",
                    "Rows per copy chunk in effect.",
                ),
                MIGRATION_LABELS,
            )?,
            chunk_duration: HistogramVec::new(
                HistogramOpts::new(
                    "shadowcut_migration_chunk_duration_seconds",
                    "Time to copy one chunk.",
                )
                .buckets(exponential_buckets(0.001, 2.0, 16)?),
                MIGRATION_LABELS,
            )?,
            throttled: IntGaugeVec::new(
                Opts::new(
                    "shadowcut_migration_throttled",
                    "1 while the migration's copy is throttled or paused.",
                ),
                MIGRATION_LABELS,
            )?,
            throttle_active: IntGaugeVec::new(
                Opts::new(
                    "shadowcut_migration_throttle_active",
                    "1 while this throttle source holds the migration's copy.",
                ),
                &with(&["source"]),
            )?,
            throttled_seconds: CounterVec::new(
                Opts::new(
                    "shadowcut_migration_throttled_seconds_total",
                    "Seconds this throttle source has held the migration's copy.",
                ),
                &with(&["source"]),
            )?,
            state: IntGaugeVec::new(
                Opts::new(
                    "shadowcut_migration_state",
                    "1 for the migration's current state, 0 for the others.",
                ),
                &with(&["state"]),
            )?,
            cutover_attempts: IntCounterVec::new(
                Opts::new(
                    "shadowcut_migration_cutover_attempts_total",
                    "Cut-over attempts made.",
                ),
                MIGRATION_LABELS,
            )?,
            cutover_stall: HistogramVec::new(
                HistogramOpts::new(
                    "shadowcut_migration_cutover_stall_seconds",
                    "How long writers were blocked by a successful cut-over's lock.",
                )
                .buckets(vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
                MIGRATION_LABELS,
            )?,
            reconnects: IntCounterVec::new(
                Opts::new(
                    "shadowcut_migration_reconnects_total",
                    "Lost server connections (queries or binlog) re-established.",
                ),
                MIGRATION_LABELS,
            )?,
            migrations: IntGaugeVec::new(
                Opts::new(
                    "shadowcut_migrations",
                    "Migrations the daemon knows, by state.",
                ),
                &["state"],
            )?,
            global_throttle: IntGaugeVec::new(
                Opts::new(
                    "shadowcut_global_throttle",
                    "1 while the global throttle is on.",
                ),
                &[] as &[&str],
            )?,
            http_requests: IntCounterVec::new(
                Opts::new(
                    "shadowcut_http_requests_total",
                    "HTTP requests by route, method and status.",
                ),
                &["route", "method", "status"],
            )?,
            http_duration: HistogramVec::new(
                HistogramOpts::new(
                    "shadowcut_http_request_duration_seconds",
                    "HTTP request latency by route and method.",
                )
                .buckets(exponential_buckets(0.0005, 4.0, 9)?),
                &["route", "method"],
            )?,
            registry,
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.rows_copied.clone()),
            Box::new(m.rows_estimate.clone()),
            Box::new(m.progress_ratio.clone()),
            Box::new(m.events_applied.clone()),
            Box::new(m.replay_lag.clone()),
            Box::new(m.replay_transactions.clone()),
            Box::new(m.backlog.clone()),
            Box::new(m.chunk_size.clone()),
            Box::new(m.chunk_duration.clone()),
            Box::new(m.throttled.clone()),
            Box::new(m.throttle_active.clone()),
            Box::new(m.throttled_seconds.clone()),
            Box::new(m.state.clone()),
            Box::new(m.cutover_attempts.clone()),
            Box::new(m.cutover_stall.clone()),
            Box::new(m.reconnects.clone()),
            Box::new(m.migrations.clone()),
            Box::new(m.global_throttle.clone()),
            Box::new(m.http_requests.clone()),
            Box::new(m.http_duration.clone()),
        ];
        for c in collectors {
            m.registry.register(c)?;
        }
        for s in State::ALL {
            m.migrations.with_label_values(&[s.as_str()]).set(0);
        }
        m.global_throttle.with_label_values(&[] as &[&str]).set(0);
        Ok(m)
    }

    /// The observer a migration's [`crate::progress::Progress`] reports histograms to.
    pub fn observer(&self, labels: &Labels) -> MigrationObserver {
        MigrationObserver {
            chunk: self.chunk_duration.clone(),
            stall: self.cutover_stall.clone(),
            labels: labels.clone(),
        }
    }

    /// Mirrors `now` into the migration's series; `last` is the previous sample (counters
    /// advance by the difference).
    pub fn record(&self, labels: &Labels, last: &Sample, now: &Sample) {
        let l = labels.values();
        let delta = |a: u64, b: u64| b.saturating_sub(a);
        self.rows_copied
            .with_label_values(&l)
            .inc_by(delta(last.rows_copied, now.rows_copied));
        self.rows_estimate
            .with_label_values(&l)
            .set(now.rows_estimate as i64);
        self.progress_ratio
            .with_label_values(&l)
            .set(now.progress_ratio);
        for kind in ChangeKind::ALL {
            let i = kind as usize;
            self.events_applied
                .with_label_values(&[l[0], l[1], l[2], kind.as_str()])
                .inc_by(delta(last.applied[i], now.applied[i]));
        }
        self.replay_lag
            .with_label_values(&l)
            .set(now.replay_lag_seconds.unwrap_or(0.0));
        self.replay_transactions
            .with_label_values(&l)
            .inc_by(delta(last.replay_transactions, now.replay_transactions));
        self.backlog.with_label_values(&l).set(now.backlog as i64);
        self.chunk_size
            .with_label_values(&l)
            .set(now.chunk_size as i64);
        self.throttled
            .with_label_values(&l)
            .set(i64::from(now.throttled));
        for s in &now.sources {
            let sl = [l[0], l[1], l[2], s.name.as_str()];
            self.throttle_active
                .with_label_values(&sl)
                .set(i64::from(s.active));
            let before = last
                .sources
                .iter()
                .find(|x| x.name == s.name)
                .map_or(0.0, |x| x.seconds);
            // Counters only go up; a source's seconds never shrink, but be safe about floats.
            let step = s.seconds - before;
            if step > 0.0 {
                self.throttled_seconds.with_label_values(&sl).inc_by(step);
            }
        }
        if let Some(current) = now.state {
            for s in State::ALL {
                self.state
                    .with_label_values(&[l[0], l[1], l[2], s.as_str()])
                    .set(i64::from(s == current));
            }
        }
        self.cutover_attempts
            .with_label_values(&l)
            .inc_by(delta(last.cutover_attempts, now.cutover_attempts));
        self.reconnects
            .with_label_values(&l)
            .inc_by(delta(last.reconnects, now.reconnects));
    }

    /// Drops every series of one migration (retention over); `sources` are the throttle
    /// sources it reported.
    pub fn forget(&self, labels: &Labels, sources: &[String]) {
        let l = labels.values();
        for s in sources {
            let sl = [l[0], l[1], l[2], s.as_str()];
            let _ = self.throttle_active.remove_label_values(&sl);
            let _ = self.throttled_seconds.remove_label_values(&sl);
        }
        let _ = self.rows_copied.remove_label_values(&l);
        let _ = self.rows_estimate.remove_label_values(&l);
        let _ = self.progress_ratio.remove_label_values(&l);
        let _ = self.replay_lag.remove_label_values(&l);
        let _ = self.replay_transactions.remove_label_values(&l);
        let _ = self.backlog.remove_label_values(&l);
        let _ = self.chunk_size.remove_label_values(&l);
        let _ = self.chunk_duration.remove_label_values(&l);
        let _ = self.throttled.remove_label_values(&l);
        let _ = self.cutover_attempts.remove_label_values(&l);
        let _ = self.cutover_stall.remove_label_values(&l);
        let _ = self.reconnects.remove_label_values(&l);
        for kind in ChangeKind::ALL {
            let _ = self
                .events_applied
                .remove_label_values(&[l[0], l[1], l[2], kind.as_str()]);
        }
        for s in State::ALL {
            let _ = self
                .state
                .remove_label_values(&[l[0], l[1], l[2], s.as_str()]);
        }
    }

    pub fn set_state_counts(&self, counts: &[(State, usize)]) {
        for (s, n) in counts {
            self.migrations
                .with_label_values(&[s.as_str()])
                .set(*n as i64);
        }
    }

    pub fn set_global_throttle(&self, on: bool) {
        self.global_throttle
            .with_label_values(&[] as &[&str])
            .set(i64::from(on));
    }

    pub fn http_request(&self, route: &str, method: &str, status: u16, took: Duration) {
        self.http_requests
            .with_label_values(&[route, method, &status.to_string()])
            .inc();
        self.http_duration
            .with_label_values(&[route, method])
            .observe(took.as_secs_f64());
    }

    /// Everything in the Prometheus text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

/// Feeds one migration's histograms from the engine.
pub struct MigrationObserver {
    chunk: HistogramVec,
    stall: HistogramVec,
    labels: Labels,
}

impl Observer for MigrationObserver {
    fn chunk_copied(&self, _rows: u64, took: Duration) {
        self.chunk
            .with_label_values(&self.labels.values())
            .observe(took.as_secs_f64());
    }

    fn cutover_stall(&self, held: Duration) {
        self.stall
            .with_label_values(&self.labels.values())
            .observe(held.as_secs_f64());
    }
}

/// Shared handle, for the places that only need to record.
pub type SharedMetrics = Arc<Metrics>;
