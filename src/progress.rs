//! What a running migration reports about itself: counters, positions and its state.
//!
//! The engine writes, everyone else reads. Counters are atomics so the hot paths (copy, replay)
//! never wait on a reader; the state and positions sit behind one short-held mutex, and every
//! state change goes through [`Progress::move_to`], which enforces the state machine.
//! Positions here are checkpoint material: they never claim more than has been applied.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use mysql_async::Value;

use crate::binlog::BinlogPos;
use crate::state::{InvalidTransition, State, Step};

/// Kinds of replayed row events, for counters and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Insert,
    Update,
    Delete,
}

impl ChangeKind {
    pub const ALL: [ChangeKind; 3] = [ChangeKind::Insert, ChangeKind::Update, ChangeKind::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Insert => "insert",
            ChangeKind::Update => "update",
            ChangeKind::Delete => "delete",
        }
    }
}

/// Hooks for measurements that need every observation (histograms), not just the latest value.
pub trait Observer: Send + Sync {
    fn chunk_copied(&self, _rows: u64, _took: Duration) {}
    fn cutover_stall(&self, _held: Duration) {}
}

/// An observer that ignores everything.
pub struct NoObserver;
impl Observer for NoObserver {}

#[derive(Debug, Clone)]
pub struct Status {
    pub state: State,
    pub step: Step,
    pub error: Option<String>,
    pub shadow_table: Option<String>,
    pub old_table: Option<String>,
    /// The helper tables, once created: with the positions below, what a resume needs.
    pub names: Option<crate::shadow::HelperNames>,
    pub copy_done: bool,
    /// Sessions that held the table when the last cut-over attempt could not lock it.
    pub cutover_blockers: Vec<crate::cutover::Blocker>,
    /// Every row with a key at or below this was copied and committed.
    pub copy_watermark: Option<Vec<Value>>,
    /// The last transaction fully applied to the shadow table.
    pub applied_pos: Option<BinlogPos>,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
}

pub struct Progress {
    status: Mutex<Status>,
    pub rows_copied: AtomicU64,
    pub rows_estimate: AtomicU64,
    applied: [AtomicU64; 3],
    /// Row events read from the binlog but not yet applied.
    pub backlog_events: AtomicU64,
    /// Transactions the replay committed on the shadow table.
    pub replay_transactions: AtomicU64,
    /// Epoch micros of the newest heartbeat the replay applied (0: none yet).
    pub heartbeat_applied_micros: AtomicI64,
    pub chunk_size: AtomicU64,
    pub cutover_attempts: AtomicU64,
    /// Connections re-established after a loss.
    pub reconnects: AtomicU64,
    observer: Arc<dyn Observer>,
    /// The gate the migration obeys, probes included, once it runs.
    throttle: Mutex<Option<crate::throttle::Throttle>>,
}

impl Progress {
    pub fn new(observer: Arc<dyn Observer>) -> Arc<Progress> {
        Arc::new(Progress {
            status: Mutex::new(Status {
                state: State::Queued,
                step: Step::Pending,
                error: None,
                shadow_table: None,
                old_table: None,
                names: None,
                copy_done: false,
                cutover_blockers: Vec::new(),
                copy_watermark: None,
                applied_pos: None,
                started_at: None,
                finished_at: None,
            }),
            rows_copied: AtomicU64::new(0),
            rows_estimate: AtomicU64::new(0),
            applied: Default::default(),
            backlog_events: AtomicU64::new(0),
            replay_transactions: AtomicU64::new(0),
            heartbeat_applied_micros: AtomicI64::new(0),
            chunk_size: AtomicU64::new(0),
            cutover_attempts: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            observer,
            throttle: Mutex::new(None),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Status> {
        // A panic while holding this lock cannot leave the plain data inconsistent.
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn status(&self) -> Status {
        self.lock().clone()
    }

    pub fn state(&self) -> State {
        self.lock().state
    }

    /// Moves to `next` if the state machine allows it.
    pub fn move_to(&self, next: State) -> Result<(), InvalidTransition> {
        let mut st = self.lock();
        if !st.state.can_move_to(next) {
            return Err(InvalidTransition {
                from: st.state,
                to: next,
            });
        }
        st.state = next;
        let now = SystemTime::now();
        if next == State::Running && st.started_at.is_none() {
            st.started_at = Some(now);
        }
        if next.is_terminal() {
            st.finished_at = Some(now);
            st.step = Step::Done;
        }
        Ok(())
    }

    pub fn fail(&self, error: String) {
        let mut st = self.lock();
        st.error = Some(error);
        drop(st);
        // Already terminal (e.g. cancelled): keep the first outcome.
        let _ = self.move_to(State::Failed);
    }

    pub fn set_step(&self, step: Step) {
        self.lock().step = step;
    }

    pub fn update(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.lock());
    }

    pub fn add_applied(&self, kind: ChangeKind, n: u64) {
        self.applied[kind as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub fn applied(&self, kind: ChangeKind) -> u64 {
        self.applied[kind as usize].load(Ordering::Relaxed)
    }

    /// Row events applied, every kind.
    pub fn applied_total(&self) -> u64 {
        ChangeKind::ALL.iter().map(|k| self.applied(*k)).sum()
    }

    pub fn set_throttle(&self, throttle: crate::throttle::Throttle) {
        *self.throttle.lock().unwrap_or_else(|p| p.into_inner()) = Some(throttle);
    }

    /// Every throttle source of the running migration (empty before it runs).
    pub fn throttle_sources(&self) -> Vec<crate::throttle::SourceStatus> {
        let t = self.throttle.lock().unwrap_or_else(|p| p.into_inner());
        t.as_ref().map(|t| t.sources()).unwrap_or_default()
    }

    /// Active throttle reasons as `source: reason`.
    pub fn throttle_reasons(&self) -> Vec<String> {
        let t = self.throttle.lock().unwrap_or_else(|p| p.into_inner());
        t.as_ref().map(|t| t.reasons()).unwrap_or_default()
    }

    pub fn observer(&self) -> &dyn Observer {
        self.observer.as_ref()
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// How far the shadow table trails the original: now minus the newest applied heartbeat.
    /// `None` before the first heartbeat came through.
    pub fn replay_lag(&self) -> Option<Duration> {
        let hb = self.heartbeat_applied_micros.load(Ordering::Relaxed);
        if hb == 0 {
            return None;
        }
        let lag = (crate::clock::now_micros() - hb).max(0);
        Some(Duration::from_micros(lag as u64))
    }

    /// Copy completion in percent, from the row estimate (capped: estimates are rough).
    pub fn percent(&self) -> f64 {
        let est = Self::get(&self.rows_estimate);
        let copied = Self::get(&self.rows_copied);
        if self.state() == State::Completed {
            return 100.0;
        }
        if est == 0 {
            return if copied > 0 { 99.0 } else { 0.0 };
        }
        (copied as f64 * 100.0 / est as f64).min(99.9)
    }
}
