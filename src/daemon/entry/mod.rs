//! One migration the daemon knows: either live (started by this process, or restored from a
//! target's store because the previous process stopped while it was active; steered through
//! its controls, reporting through its [`Progress`]) or history (a [`Record`] loaded from a
//! target's store, always in a terminal state).
//!
//! Crash safety: the record of a live migration carries its checkpoint ([`Checkpoint::of`] of
//! the progress). A restored migration carries the stored checkpoint until its resumed run has
//! one of its own, so a save in between never loses the position. The API shows the last
//! checkpoint that was saved: the one a crash would resume from.
//!
//! Invariants: the engine owns the state of a live migration (this module reads it from the
//! progress and never moves it, except `Queued -> Cancelled` for a migration that never
//! started, which the registry does under its lock); the API view, the stored record and the
//! metrics sample are all derived from the same reads, so they agree.
//!
//! Throttling: each live migration holds the sender of its throttle settings, so a changed
//! option reaches its probes at their next tick. Its sources are the manual pause and the
//! global switch while it waits, and every probe source once it runs; when it ends they are
//! frozen (nothing throttles a finished migration, and the seconds stop counting).

mod view;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use tracing::info;

use super::metrics::{Labels, Metrics, Sample, SourceSample};
use super::store::Record;
use crate::conn::ConnSettings;
use crate::copy::CopyTuning;
use crate::migration::{Checkpoint, Controls, MigrationOptions};
use crate::progress::{ChangeKind, Progress};
use crate::state::State;
use crate::throttle::{PeakWindow, SourceStatus, Switch, Throttle, ThrottleSettings};

/// Reason shown while an operator paused the migration.
pub const PAUSE_REASON: &str = "paused by operator";

/// The handles that steer a live migration.
pub struct Live {
    pub progress: Arc<Progress>,
    pub pause: Switch,
    pub throttle: Throttle,
    pub cancel: CancellationToken,
    /// Stops at a safe point and keeps the helper tables (daemon shutdown): it resumes later.
    pub shutdown: CancellationToken,
    pub cutover_go: watch::Sender<bool>,
    pub tuning: watch::Sender<CopyTuning>,
    /// The probes' live settings: the options' thresholds and checks, and every window.
    pub settings: watch::Sender<ThrottleSettings>,
    /// Peak windows from the configuration (daemon-wide and the target's).
    pub config_windows: Vec<PeakWindow>,
}

/// What the probes obey: the options, with the configured windows before the migration's own.
pub fn throttle_settings(
    options: &MigrationOptions,
    config_windows: &[PeakWindow],
) -> ThrottleSettings {
    let mut s = ThrottleSettings::from(options);
    let own = std::mem::take(&mut s.peak_windows);
    s.peak_windows = config_windows.iter().cloned().chain(own).collect();
    s
}

impl Live {
    /// Controls for the engine, subscribed to these handles, watching `replicas`.
    pub fn controls(&self, options: &MigrationOptions, replicas: Vec<ConnSettings>) -> Controls {
        // Built from the engine's defaults so a control added there keeps its default here.
        let (mut c, _) = Controls::unattended(options);
        c.cancel = self.cancel.clone();
        c.shutdown = self.shutdown.clone();
        c.throttle = self
            .throttle
            .clone()
            .with_replicas(replicas)
            .with_settings(self.settings.subscribe());
        c.cutover_go = self.cutover_go.subscribe();
        c.tuning = self.tuning.subscribe();
        c
    }

    /// Every source now: the running migration's gate, or before that the pause and global
    /// switches.
    fn sources(&self) -> Vec<SourceStatus> {
        let running = self.progress.throttle_sources();
        if running.is_empty() {
            self.throttle.sources()
        } else {
            running
        }
    }
}

/// How a restored migration continues when it gets its slot.
#[derive(Debug, Clone, PartialEq)]
pub enum Resume {
    /// From the stored checkpoint: copy from the watermark, replay from the binlog position.
    Checkpoint(Checkpoint),
    /// It was active but had no checkpoint yet (it died while inspecting or creating the
    /// shadow table): leftover helper tables are cleared and it starts over.
    Scratch,
}

/// What changes over an entry's life, behind one short-held lock.
#[derive(Default)]
struct Mutable {
    options: MigrationOptions,
    /// The daemon stopped (or died) while the migration was active.
    interrupted: bool,
    cancel_requested: bool,
    /// Set for a restored migration until its run starts.
    resume: Option<Resume>,
    /// The stored checkpoint of a restored migration: the record's until the resumed run
    /// reports its own (it never claims more than was applied, so it stays valid).
    restored_checkpoint: Option<(Checkpoint, SystemTime)>,
    resume_count: u32,
    resumed_at: Option<SystemTime>,
    /// The last checkpoint saved on the target, and when it was taken.
    persisted: Option<(Checkpoint, SystemTime)>,
    /// When the migration ended (for metric retention).
    finished: Option<Instant>,
    /// Its metric series were dropped.
    forgotten: bool,
    /// The throttle sources as they were when the migration ended, none active.
    final_sources: Option<Vec<SourceStatus>>,
    last_sample: Sample,
    /// Copy rate in rows/s (moving average) and the point it was last updated from.
    rate: f64,
    rate_point: Option<(Instant, u64)>,
    /// State and time of the last successful save, and whether it held a checkpoint.
    saved: Option<(State, Instant, bool)>,
    /// After a failed save, the next periodic try waits until then (no log flood).
    retry_at: Option<Instant>,
}

pub struct Entry {
    pub id: String,
    pub target: String,
    pub database: String,
    pub table: String,
    pub alter: String,
    pub created_at: SystemTime,
    pub idempotency_key: Option<String>,
    pub fingerprint: Option<String>,
    /// The failed or cancelled migration this one starts again from scratch.
    pub restarted_from: Option<String>,
    pub labels: Labels,
    /// Serialises saves, so an older snapshot never lands after a newer one.
    pub save_lock: tokio::sync::Mutex<()>,
    kind: Kind,
    m: Mutex<Mutable>,
}

enum Kind {
    Live(Box<Live>),
    /// Loaded from a store; always terminal.
    History(Box<Record>),
}

/// Fields of a new live entry.
pub struct NewEntry {
    pub id: String,
    pub target: String,
    pub database: String,
    pub table: String,
    pub alter: String,
    pub options: MigrationOptions,
    pub idempotency_key: Option<String>,
    pub fingerprint: Option<String>,
    /// Peak windows from the configuration, which apply besides the options' own.
    pub config_windows: Vec<PeakWindow>,
    pub restarted_from: Option<String>,
}

impl Entry {
    /// A live entry, queued, obeying `global` besides its own pause switch.
    pub fn new_live(n: NewEntry, global: &Switch, metrics: &Metrics) -> Entry {
        let labels = Labels {
            id: n.id.clone(),
            database: n.database.clone(),
            table: n.table.clone(),
        };
        let pause = Switch::default();
        let throttle = Throttle::new()
            .with_source("manual", &pause)
            .with_source("global", global);
        let live = Live {
            progress: Progress::new(Arc::new(metrics.observer(&labels))),
            pause,
            throttle,
            cancel: CancellationToken::new(),
            shutdown: CancellationToken::new(),
            cutover_go: watch::channel(!n.options.postpone_cutover).0,
            tuning: watch::channel(CopyTuning::from(&n.options)).0,
            settings: watch::channel(throttle_settings(&n.options, &n.config_windows)).0,
            config_windows: n.config_windows,
        };
        Entry {
            id: n.id,
            target: n.target,
            database: n.database,
            table: n.table,
            alter: n.alter,
            created_at: SystemTime::now(),
            idempotency_key: n.idempotency_key,
            fingerprint: n.fingerprint,
            restarted_from: n.restarted_from,
            labels,
            save_lock: tokio::sync::Mutex::new(()),
            kind: Kind::Live(Box::new(live)),
            m: Mutex::new(Mutable {
                options: n.options,
                ..Mutable::default()
            }),
        }
    }

    /// A live entry again for a record the previous process left active or queued: counters,
    /// pause, cut-over go and start time as stored; `resume` says how it continues.
    pub fn restored(
        r: Record,
        resume: Option<Resume>,
        config_windows: Vec<PeakWindow>,
        global: &Switch,
        metrics: &Metrics,
    ) -> Entry {
        let mut e = Entry::new_live(
            NewEntry {
                id: r.id.clone(),
                target: r.target.clone(),
                database: r.database.clone(),
                table: r.table.clone(),
                alter: r.alter.clone(),
                options: r.options.clone(),
                idempotency_key: r.idempotency_key.clone(),
                fingerprint: r.request_fingerprint.clone(),
                config_windows,
                restarted_from: r.restarted_from.clone(),
            },
            global,
            metrics,
        );
        e.created_at = r.created_at;
        if let Some(l) = e.live() {
            let p = &l.progress;
            p.rows_estimate.store(r.rows_estimate, Ordering::Relaxed);
            p.cutover_attempts
                .store(r.cutover_attempts, Ordering::Relaxed);
            p.reconnects.store(r.reconnects, Ordering::Relaxed);
            p.update(|s| s.started_at = r.started_at);
            if let Some(cp) = &r.checkpoint {
                // The engine restores it too when the resume starts; this shows it meanwhile.
                p.rows_copied.store(cp.rows_copied, Ordering::Relaxed);
            }
            if r.paused {
                l.pause.set(Some(PAUSE_REASON.to_string()));
            }
            if r.cutover_requested {
                l.cutover_go.send_replace(true);
            }
        }
        let was_active = r.state != State::Queued;
        let stored = r
            .checkpoint
            .map(|cp| (cp, r.checkpoint_at.unwrap_or_else(SystemTime::now)));
        {
            let m = e.m.get_mut().unwrap_or_else(|p| p.into_inner());
            m.interrupted = r.interrupted || was_active;
            m.resume = resume;
            m.restored_checkpoint = stored.clone();
            m.persisted = stored;
            m.resume_count = r.resume_count;
            m.resumed_at = r.resumed_at;
        }
        e
    }

    /// A history entry.
    pub fn from_record(r: Record) -> Entry {
        Entry {
            id: r.id.clone(),
            target: r.target.clone(),
            database: r.database.clone(),
            table: r.table.clone(),
            alter: r.alter.clone(),
            created_at: r.created_at,
            idempotency_key: r.idempotency_key.clone(),
            fingerprint: r.request_fingerprint.clone(),
            restarted_from: r.restarted_from.clone(),
            save_lock: tokio::sync::Mutex::new(()),
            labels: Labels {
                id: r.id.clone(),
                database: r.database.clone(),
                table: r.table.clone(),
            },
            m: Mutex::new(Mutable {
                options: r.options.clone(),
                saved: Some((r.state, Instant::now(), r.checkpoint.is_some())),
                forgotten: true,
                persisted: r
                    .checkpoint
                    .clone()
                    .zip(r.checkpoint_at.or(Some(r.created_at))),
                resume_count: r.resume_count,
                resumed_at: r.resumed_at,
                ..Mutable::default()
            }),
            kind: Kind::History(Box::new(r)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Mutable> {
        // Plain data: a panic elsewhere cannot leave it inconsistent.
        self.m.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn live(&self) -> Option<&Live> {
        match &self.kind {
            Kind::Live(l) => Some(l),
            Kind::History(_) => None,
        }
    }

    pub fn state(&self) -> State {
        match &self.kind {
            Kind::Live(l) => l.progress.state(),
            Kind::History(r) => r.state,
        }
    }

    pub fn options(&self) -> MigrationOptions {
        self.lock().options.clone()
    }

    /// Takes new options; thresholds, windows and checks reach the probes at their next tick.
    pub fn set_options(&self, options: MigrationOptions) {
        if let Some(l) = self.live() {
            l.settings
                .send_replace(throttle_settings(&options, &l.config_windows));
        }
        self.lock().options = options;
    }

    pub fn mark_cancel_requested(&self) {
        self.lock().cancel_requested = true;
    }

    pub fn cancel_requested(&self) -> bool {
        self.lock().cancel_requested
    }

    /// Notes that the daemon stopped while the migration was active (it resumes later).
    pub fn mark_interrupted(&self) {
        self.lock().interrupted = true;
    }

    /// How the restored migration continues; taken once, when its run starts.
    pub fn take_resume(&self) -> Option<Resume> {
        self.lock().resume.take()
    }

    /// Whether the migration waits to resume from a checkpoint (its helper tables exist).
    pub fn resume_pending(&self) -> bool {
        matches!(self.lock().resume, Some(Resume::Checkpoint(_)))
    }

    /// Counts a resume that starts now.
    pub fn mark_resumed(&self) {
        let mut m = self.lock();
        m.resume_count += 1;
        m.resumed_at = Some(SystemTime::now());
    }

    /// Records the end (once), for metric retention, and freezes the throttle sources.
    pub fn mark_finished(&self) {
        let sources = self.live().map(Live::sources);
        let mut m = self.lock();
        if m.finished.is_none() {
            m.finished = Some(Instant::now());
        }
        if m.final_sources.is_none() {
            m.final_sources = sources.map(|v| {
                v.into_iter()
                    .map(|s| SourceStatus { reason: None, ..s })
                    .collect()
            });
        }
    }

    /// The throttle sources of a live migration (frozen once it ended).
    fn sources(live: &Live, m: &Mutable) -> Vec<SourceStatus> {
        match &m.final_sources {
            Some(frozen) => frozen.clone(),
            None => live.sources(),
        }
    }

    /// Whether the entry finished more than `retention` ago and still has metric series.
    pub fn metrics_expired(&self, retention: std::time::Duration) -> bool {
        let m = self.lock();
        !m.forgotten && m.finished.is_some_and(|f| f.elapsed() >= retention)
    }

    /// Drops the migration's metric series (retention over).
    pub fn forget_metrics(&self, metrics: &Metrics) {
        let mut m = self.lock();
        let sources: Vec<String> = m
            .last_sample
            .sources
            .iter()
            .map(|s| s.name.clone())
            .collect();
        metrics.forget(&self.labels, &sources);
        m.forgotten = true;
    }

    /// Whether a save is due: the state changed since the last one, the first checkpoint
    /// appeared (saved at once: from then on a crash resumes instead of starting over), or
    /// `every` passed.
    pub fn save_due(&self, every: std::time::Duration) -> bool {
        let state = self.state();
        let has_checkpoint = self
            .live()
            .is_some_and(|l| l.progress.status().applied_pos.is_some());
        let m = self.lock();
        if m.retry_at.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        match m.saved {
            None => true,
            Some((s, at, had_checkpoint)) => {
                s != state
                    || (!state.is_terminal()
                        && (at.elapsed() >= every || (has_checkpoint && !had_checkpoint)))
            }
        }
    }

    /// Notes a successful save of `record`.
    pub fn mark_saved(&self, record: &Record) {
        let mut m = self.lock();
        m.saved = Some((record.state, Instant::now(), record.checkpoint.is_some()));
        m.retry_at = None;
        if let (Some(cp), Some(at)) = (&record.checkpoint, record.checkpoint_at) {
            m.persisted = Some((cp.clone(), at));
        }
    }

    pub fn mark_save_failed(&self, retry_in: std::time::Duration) {
        self.lock().retry_at = Some(Instant::now() + retry_in);
    }

    /// The record to store.
    pub fn record(&self) -> Record {
        let live = match &self.kind {
            Kind::Live(l) => l,
            Kind::History(r) => return (**r).clone(),
        };
        let m = self.lock();
        let p = &live.progress;
        let st = p.status();
        // The run's own checkpoint once it has one; before that the stored one (a restored
        // migration), so a save never forgets where to resume.
        let (checkpoint, checkpoint_at) = match Checkpoint::of(p) {
            Some(cp) => (Some(cp), Some(SystemTime::now())),
            None => match &m.restored_checkpoint {
                Some((cp, at)) => (Some(cp.clone()), Some(*at)),
                None => (None, None),
            },
        };
        Record {
            id: self.id.clone(),
            target: self.target.clone(),
            database: self.database.clone(),
            table: self.table.clone(),
            alter: self.alter.clone(),
            options: m.options.clone(),
            state: st.state,
            error: st.error,
            rows_copied: Progress::get(&p.rows_copied),
            rows_estimate: Progress::get(&p.rows_estimate),
            cutover_attempts: Progress::get(&p.cutover_attempts),
            shadow_table: st.shadow_table,
            old_table: st.old_table,
            idempotency_key: self.idempotency_key.clone(),
            request_fingerprint: self.fingerprint.clone(),
            interrupted: m.interrupted,
            created_at: self.created_at,
            started_at: st.started_at,
            finished_at: st.finished_at,
            checkpoint,
            checkpoint_at,
            resume_count: m.resume_count,
            resumed_at: m.resumed_at,
            reconnects: Progress::get(&p.reconnects),
            cutover_requested: m.options.postpone_cutover && *live.cutover_go.borrow(),
            paused: live.pause.reason().is_some(),
            restarted_from: self.restarted_from.clone(),
        }
    }

    /// The live numbers the record does not hold.
    fn sample_now(&self, live: &Live, m: &Mutable) -> Sample {
        let p = &live.progress;
        let sources: Vec<SourceSample> = Self::sources(live, m)
            .into_iter()
            .map(|s| SourceSample {
                active: s.reason.is_some(),
                name: s.name,
                seconds: s.throttled_seconds,
            })
            .collect();
        Sample {
            rows_copied: Progress::get(&p.rows_copied),
            rows_estimate: Progress::get(&p.rows_estimate),
            progress_ratio: p.percent() / 100.0,
            applied: ChangeKind::ALL.map(|k| p.applied(k)),
            // A finished migration has no lag (its heartbeat only gets older).
            replay_lag_seconds: (!p.state().is_terminal())
                .then(|| p.replay_lag().map(|d| d.as_secs_f64()))
                .flatten(),
            backlog: Progress::get(&p.backlog_events),
            replay_transactions: Progress::get(&p.replay_transactions),
            chunk_size: Progress::get(&p.chunk_size),
            throttled: sources.iter().any(|s| s.active),
            sources,
            state: Some(p.state()),
            cutover_attempts: Progress::get(&p.cutover_attempts),
            reconnects: Progress::get(&p.reconnects),
        }
    }

    /// Logs each source that started or stopped throttling since the last sample.
    fn log_sources(&self, live: &Live, last: &Sample, now: &Sample) {
        let was = |name: &str| last.sources.iter().any(|s| s.name == name && s.active);
        let reasons = live.sources();
        for s in &now.sources {
            if s.active && !was(&s.name) {
                let reason = reasons
                    .iter()
                    .find(|r| r.name == s.name)
                    .and_then(|r| r.reason.clone())
                    .unwrap_or_default();
                info!(id = %self.id, source = %s.name, %reason, "throttle source active");
            } else if !s.active && was(&s.name) {
                info!(id = %self.id, source = %s.name, seconds = s.seconds, "throttle source cleared");
            }
        }
    }

    /// Takes a sample: mirrors it into `metrics` (unless the series were dropped) and updates
    /// the copy rate.
    pub fn sample(&self, metrics: &Metrics) {
        let Some(live) = self.live() else { return };
        let mut m = self.lock();
        let now = self.sample_now(live, &m);
        self.log_sources(live, &m.last_sample, &now);
        if !m.forgotten {
            metrics.record(&self.labels, &m.last_sample, &now);
        }
        let t = Instant::now();
        if let Some((at, rows)) = m.rate_point {
            let dt = t.duration_since(at).as_secs_f64();
            if dt > 0.05 {
                let instant = now.rows_copied.saturating_sub(rows) as f64 / dt;
                m.rate = if m.rate == 0.0 {
                    instant
                } else {
                    0.7 * m.rate + 0.3 * instant
                };
                m.rate_point = Some((t, now.rows_copied));
            }
        } else {
            m.rate_point = Some((t, now.rows_copied));
        }
        m.last_sample = now;
    }
}
