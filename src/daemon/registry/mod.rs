//! The registry: every migration the daemon knows, the per-target queues, and the operator
//! actions on them.
//!
//! Invariants, all kept under the one `inner` lock (held briefly, never across an await):
//! - at most one active (not terminal) migration per table of a target; a start request
//!   reserves its table before the preflight, so two concurrent requests cannot both pass;
//! - at most `max_running` migrations of a target are started; the rest wait, queued, and
//!   start in the order they were accepted;
//! - an `Idempotency-Key` maps to at most one migration; a retry with the same body gets that
//!   migration back, another body is refused.
//!
//! Migrations run as tasks spawned here ([`Registry::pump`]); each ends by saving its record,
//! releasing its table and slot, and pumping its target's queue again. A migration's options
//! start from its target's (`[defaults]` with the target's throttle keys); the replicas it
//! watches are fixed when it starts (listed ones, plus discovered ones if the target asks).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn, Instrument};

mod actions;

use super::config::{Config, Target};
use super::entry::{Entry, NewEntry};
use super::metrics::Metrics;
use super::model::StartRequest;
use super::replicas;
use super::store::{Record, Store};
use super::throttle::GlobalThrottle;
use crate::clock::now_micros;
use crate::migration::{self, MigrationOptions, MigrationSpec};
use crate::state::State;

/// How long a start request may spend on its preflight.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(60);
/// Options an operator may change while the migration runs.
pub const LIVE_OPTIONS: &[&str] = &[
    "chunk_size",
    "postpone_cutover",
    "max_lag_millis",
    "max_load",
    "critical_load",
    "critical_load_hits",
    "critical_load_action",
    "peak_windows",
    "throttle_query",
    "check_url",
];

/// Why an operation on the registry was refused. `api` maps each to an HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    #[error("option {0} cannot change while the migration runs (live options: {live})", live = LIVE_OPTIONS.join(", "))]
    OptionNotLive(String),
    #[error("no migration {0}")]
    NotFound(String),
    #[error("no target {0:?} in the configuration")]
    TargetNotFound(String),
    #[error("migration {id} ({state}) is already active on {database}.{table}")]
    TableBusy {
        id: String,
        state: String,
        database: String,
        table: String,
    },
    #[error("{0}")]
    WrongState(String),
    #[error("this Idempotency-Key was used for another request body (migration {0})")]
    KeyReused(String),
    #[error("a request with this Idempotency-Key is still being processed")]
    KeyInFlight,
    #[error("the daemon is shutting down")]
    ShuttingDown,
    #[error("the target did not answer the preflight within {0:?}")]
    PreflightTimeout(Duration),
    #[error(transparent)]
    Engine(#[from] crate::Error),
}

/// (target, database, table).
type TableKey = (String, String, String);

enum KeySlot {
    /// A request with this key is being processed.
    Pending,
    Done(String),
}

#[derive(Default)]
struct Inner {
    entries: BTreeMap<String, Arc<Entry>>,
    queues: BTreeMap<String, VecDeque<String>>,
    running: BTreeMap<String, usize>,
    /// Active table -> migration id ("" while a start request reserves it).
    tables: HashMap<TableKey, String>,
    keys: HashMap<String, KeySlot>,
}

/// Filters of `GET /v1/migrations`.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub state: Option<State>,
    pub target: Option<String>,
    pub database: Option<String>,
    pub table: Option<String>,
}

pub struct Registry {
    targets: BTreeMap<String, Target>,
    pub stores: BTreeMap<String, Arc<Store>>,
    pub metrics: Arc<Metrics>,
    pub global: GlobalThrottle,
    /// Cancelled when the daemon stops: nothing new starts.
    pub stopping: CancellationToken,
    inner: Mutex<Inner>,
}

/// Merges `over` into `base` key by key and parses the result as options.
pub fn merge_options(
    base: &MigrationOptions,
    over: &Map<String, Value>,
) -> Result<MigrationOptions, String> {
    let mut v = serde_json::to_value(base).map_err(|e| e.to_string())?;
    if let Value::Object(m) = &mut v {
        for (k, val) in over {
            m.insert(k.clone(), val.clone());
        }
    }
    let opts: MigrationOptions = serde_json::from_value(v).map_err(|e| e.to_string())?;
    opts.validate()?;
    Ok(opts)
}

fn check_name(what: &str, name: &str) -> Result<(), RegistryError> {
    if name.is_empty() || name.chars().count() > 64 {
        return Err(RegistryError::InvalidRequest(format!(
            "{what} must be 1 to 64 characters"
        )));
    }
    Ok(())
}

impl Registry {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Arc<Registry> {
        let stores = config
            .targets
            .values()
            .map(|t| {
                let store = Store::new(&t.name, &t.settings, &config.store_schema);
                (t.name.clone(), Arc::new(store))
            })
            .collect();
        Arc::new(Registry {
            targets: config.targets.clone(),
            stores,
            metrics,
            global: GlobalThrottle::default(),
            stopping: CancellationToken::new(),
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Maps and counters only: a panic elsewhere cannot leave them half-changed.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn targets(&self) -> &BTreeMap<String, Target> {
        &self.targets
    }

    pub fn get(&self, id: &str) -> Result<Arc<Entry>, RegistryError> {
        self.lock()
            .entries
            .get(id)
            .cloned()
            .ok_or_else(|| RegistryError::NotFound(id.to_string()))
    }

    /// Every entry (oldest first).
    pub fn all(&self) -> Vec<Arc<Entry>> {
        self.lock().entries.values().cloned().collect()
    }

    pub fn list(&self, f: &Filter) -> Vec<Arc<Entry>> {
        self.all()
            .into_iter()
            .filter(|e| f.target.as_ref().is_none_or(|t| *t == e.target))
            .filter(|e| f.database.as_ref().is_none_or(|d| *d == e.database))
            .filter(|e| f.table.as_ref().is_none_or(|t| *t == e.table))
            .filter(|e| f.state.is_none_or(|s| s == e.state()))
            .collect()
    }

    /// Accepts a start request. Returns the migration and whether it was created (false: an
    /// idempotent retry got the existing one).
    pub async fn start(
        self: &Arc<Self>,
        req: StartRequest,
        key: Option<String>,
    ) -> Result<(Arc<Entry>, bool), RegistryError> {
        if self.stopping.is_cancelled() {
            return Err(RegistryError::ShuttingDown);
        }
        // serde_json's maps are sorted, so this is canonical for equal documents.
        let fingerprint = serde_json::to_string(&req)
            .map_err(|e| RegistryError::InvalidRequest(e.to_string()))?;
        if let Some(k) = &key {
            let mut inner = self.lock();
            match inner.keys.get(k) {
                Some(KeySlot::Done(id)) => {
                    let entry = inner.entries.get(id).cloned();
                    return match entry {
                        Some(e) if e.fingerprint.as_deref() == Some(fingerprint.as_str()) => {
                            Ok((e, false))
                        }
                        _ => Err(RegistryError::KeyReused(id.clone())),
                    };
                }
                Some(KeySlot::Pending) => return Err(RegistryError::KeyInFlight),
                None => {
                    inner.keys.insert(k.clone(), KeySlot::Pending);
                }
            }
        }
        let result = self.start_new(req, key.clone(), fingerprint).await;
        if let Some(k) = key {
            let mut inner = self.lock();
            match &result {
                Ok((e, _)) => inner.keys.insert(k, KeySlot::Done(e.id.clone())),
                Err(_) => inner.keys.remove(&k),
            };
        }
        result
    }

    fn resolve_target(&self, name: Option<&str>) -> Result<&Target, RegistryError> {
        match name {
            Some(n) => self
                .targets
                .get(n)
                .ok_or_else(|| RegistryError::TargetNotFound(n.to_string())),
            None if self.targets.len() == 1 => self
                .targets
                .values()
                .next()
                .ok_or_else(|| RegistryError::TargetNotFound("default".into())),
            None => self.targets.get("default").ok_or_else(|| {
                RegistryError::InvalidRequest(
                    "several targets are configured and none is named default: set \"target\""
                        .into(),
                )
            }),
        }
    }

    async fn start_new(
        self: &Arc<Self>,
        req: StartRequest,
        key: Option<String>,
        fingerprint: String,
    ) -> Result<(Arc<Entry>, bool), RegistryError> {
        let target = self.resolve_target(req.target.as_deref())?.clone();
        check_name("database", &req.database)?;
        check_name("table", &req.table)?;
        let options = merge_options(&target.defaults, &req.options.clone().unwrap_or_default())
            .map_err(RegistryError::InvalidOptions)?;
        let table_key = (target.name.clone(), req.database.clone(), req.table.clone());
        {
            let mut inner = self.lock();
            if let Some(id) = inner.tables.get(&table_key) {
                let state = inner
                    .entries
                    .get(id)
                    .map_or("starting".to_string(), |e| e.state().to_string());
                return Err(RegistryError::TableBusy {
                    id: id.clone(),
                    state,
                    database: req.database,
                    table: req.table,
                });
            }
            inner.tables.insert(table_key.clone(), String::new());
        }
        let spec = MigrationSpec {
            settings: target.settings.clone(),
            database: req.database.clone(),
            table: req.table.clone(),
            alter: req.alter.clone(),
            options: options.clone(),
        };
        let checked = tokio::time::timeout(PREFLIGHT_TIMEOUT, migration::preflight(&spec)).await;
        let failure = match checked {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(RegistryError::Engine(e)),
            Err(_) => Some(RegistryError::PreflightTimeout(PREFLIGHT_TIMEOUT)),
        };
        if let Some(e) = failure {
            self.lock().tables.remove(&table_key);
            return Err(e);
        }

        let entry = {
            let mut inner = self.lock();
            let mut micros = now_micros();
            let id = loop {
                let id = format!("mig_{micros:014x}");
                if !inner.entries.contains_key(&id) {
                    break id;
                }
                micros += 1;
            };
            let entry = Arc::new(Entry::new_live(
                NewEntry {
                    id: id.clone(),
                    target: target.name.clone(),
                    database: req.database,
                    table: req.table,
                    alter: req.alter,
                    options,
                    idempotency_key: key,
                    fingerprint: Some(fingerprint),
                    config_windows: target.peak_windows.clone(),
                },
                self.global.switch(),
                &self.metrics,
            ));
            inner.entries.insert(id.clone(), entry.clone());
            inner.tables.insert(table_key, id.clone());
            inner
                .queues
                .entry(target.name.clone())
                .or_default()
                .push_back(id);
            entry
        };
        info!(id = %entry.id, target = %entry.target, db = %entry.database, table = %entry.table, "migration accepted");
        entry.sample(&self.metrics);
        self.save(&entry).await;
        self.pump(&target.name);
        Ok((entry, true))
    }

    /// Starts queued migrations of `target` while it has free slots.
    pub fn pump(self: &Arc<Self>, target: &str) {
        if self.stopping.is_cancelled() {
            return;
        }
        let Some(limit) = self.targets.get(target).map(|t| t.max_running) else {
            return;
        };
        let mut starting = Vec::new();
        {
            let mut inner = self.lock();
            loop {
                let running = inner.running.get(target).copied().unwrap_or(0);
                if running >= limit {
                    break;
                }
                let Some(id) = inner.queues.get_mut(target).and_then(VecDeque::pop_front) else {
                    break;
                };
                let Some(entry) = inner.entries.get(&id).cloned() else {
                    continue;
                };
                if entry.state() != State::Queued {
                    continue;
                }
                *inner.running.entry(target.to_string()).or_default() += 1;
                starting.push(entry);
            }
        }
        for entry in starting {
            let span = info_span!("migration", id = %entry.id, target = %entry.target, db = %entry.database, table = %entry.table);
            tokio::spawn(self.clone().drive(entry).instrument(span));
        }
    }

    /// Runs one migration to its end, then frees its slot and table.
    async fn drive(self: Arc<Self>, entry: Arc<Entry>) {
        let (Some(live), Some(target)) = (entry.live(), self.targets.get(&entry.target)) else {
            return;
        };
        let options = entry.options();
        let progress = live.progress.clone();
        match replicas::for_target(target).await {
            Ok(watched) => {
                let names: Vec<String> = watched
                    .iter()
                    .map(|r| format!("{}:{}", r.host, r.port))
                    .collect();
                info!(replicas = ?names, "migration starting");
                let controls = live.controls(&options, watched);
                let spec = MigrationSpec {
                    settings: target.settings.clone(),
                    database: entry.database.clone(),
                    table: entry.table.clone(),
                    alter: entry.alter.clone(),
                    options,
                };
                // Spawned so that a panic in the engine fails this migration, not the daemon.
                let task = tokio::spawn(
                    migration::run(spec, controls, progress.clone()).in_current_span(),
                );
                if let Err(e) = task.await {
                    progress.fail(format!(
                        "internal error: the migration task ended abnormally: {e}"
                    ));
                }
            }
            Err(e) => {
                warn!(error = %e, "migration not started");
                progress.fail(e);
            }
        }
        let state = entry.state();
        if state == State::Cancelled && self.stopping.is_cancelled() && !entry.cancel_requested() {
            entry.mark_interrupted(
                "interrupted: the daemon shut down; the original table is unchanged and the helper tables were dropped; start the migration again",
            );
        }
        entry.mark_finished();
        entry.sample(&self.metrics);
        self.save(&entry).await;
        {
            let mut inner = self.lock();
            let key = (
                entry.target.clone(),
                entry.database.clone(),
                entry.table.clone(),
            );
            if inner.tables.get(&key) == Some(&entry.id) {
                inner.tables.remove(&key);
            }
            if let Some(n) = inner.running.get_mut(&entry.target) {
                *n = n.saturating_sub(1);
            }
        }
        info!(state = %state, "migration ended");
        self.pump(&entry.target);
    }

    /// Saves the entry's record on its target; failures are logged (the ticker retries).
    pub async fn save(&self, entry: &Entry) {
        let Some(store) = self.stores.get(&entry.target) else {
            return;
        };
        let record = entry.record();
        match store.save(&record).await {
            Ok(()) => entry.mark_saved(record.state),
            Err(e) => {
                warn!(id = %entry.id, error = %e, "could not save the migration record; retrying later");
                entry.mark_save_failed(Duration::from_secs(5));
            }
        }
    }

    /// Adds a target's stored history. Records a previous process left active (it died) are
    /// marked failed and interrupted, and saved so.
    pub async fn add_history(&self, records: Vec<Record>) {
        let mut fixed = Vec::new();
        {
            let mut inner = self.lock();
            for mut r in records {
                if inner.entries.contains_key(&r.id) {
                    continue;
                }
                if !r.state.is_terminal() {
                    r.state = State::Failed;
                    r.interrupted = true;
                    r.finished_at = Some(SystemTime::now());
                    r.error = Some(format!(
                        "interrupted: the daemon stopped while the migration was {}; helper tables \
                         (_{t}_new, _{t}_chl) may be left behind: drop them, then start again",
                        r.error.as_deref().unwrap_or("active"),
                        t = r.table
                    ));
                    fixed.push(r.clone());
                }
                if let Some(k) = &r.idempotency_key {
                    inner.keys.insert(k.clone(), KeySlot::Done(r.id.clone()));
                }
                inner
                    .entries
                    .insert(r.id.clone(), Arc::new(Entry::from_record(r)));
            }
        }
        for r in fixed {
            if let Some(store) = self.stores.get(&r.target) {
                if let Err(e) = store.save(&r).await {
                    warn!(id = %r.id, error = %e, "could not mark an interrupted record");
                }
            }
        }
    }

    /// Counts by state, for the daemon-wide gauge.
    pub fn state_counts(&self) -> Vec<(State, usize)> {
        let all = self.all();
        State::ALL
            .into_iter()
            .map(|s| (s, all.iter().filter(|e| e.state() == s).count()))
            .collect()
    }

    /// Stops everything at a safe point: nothing new starts, queued migrations are cancelled,
    /// running ones are cancelled (the engine drops its helpers and leaves the table as it
    /// was); a cut-over under way is let finish. Waits up to `grace`, then saves every record.
    pub async fn shutdown(self: &Arc<Self>, grace: Duration) {
        self.stopping.cancel();
        let active: Vec<Arc<Entry>> = self
            .all()
            .into_iter()
            .filter(|e| e.live().is_some() && !e.state().is_terminal())
            .collect();
        {
            let mut inner = self.lock();
            for q in inner.queues.values_mut() {
                q.clear();
            }
        }
        for e in &active {
            if e.state() == State::Queued {
                if let Some(l) = e.live() {
                    if l.progress.move_to(State::Cancelled).is_ok() {
                        e.mark_interrupted(
                            "interrupted: the daemon shut down before the migration started; start it again",
                        );
                    }
                }
            }
            if e.state() != State::CuttingOver {
                if let Some(l) = e.live() {
                    l.cancel.cancel();
                }
            }
        }
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline {
            let busy = self.lock().running.values().sum::<usize>();
            if busy == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for e in &active {
            if !e.state().is_terminal() {
                e.mark_interrupted(
                    "interrupted: the daemon shut down before the migration reached a safe point; check the table and the helper tables",
                );
            }
            e.mark_finished();
            self.save(e).await;
        }
    }
}
