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
//! Migrations run as tasks spawned by [`Registry::pump`] (see `lifecycle`); each ends by saving
//! its record, releasing its table and slot, and pumping its target's queue again. At startup
//! `restore` turns each target's stored records back into entries: the ones the previous
//! process left active resume from their checkpoints, queued ones queue again; a start request
//! for a target waits until its history is loaded, so it cannot take a table that a restored
//! migration holds. A migration's options
//! start from its target's (`[defaults]` with the target's throttle keys); the replicas it
//! watches are fixed when it starts (listed ones, plus discovered ones if the target asks).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

mod actions;
mod lifecycle;
mod restore;

use super::config::{Config, Target};
use super::entry::{Entry, NewEntry};
use super::metrics::Metrics;
use super::model::StartRequest;
use super::store::Store;
use super::throttle::GlobalThrottle;
use crate::clock::now_micros;
use crate::migration::{self, MigrationOptions, MigrationSpec};
use crate::state::State;

/// How long a start request may spend on its preflight.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a start request waits for its target's history to load.
const HISTORY_WAIT: Duration = Duration::from_secs(15);
/// Options an operator may change while the migration runs.
pub const LIVE_OPTIONS: &[&str] = &[
    "chunk_size",
    "nice_percent",
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
    #[error("the migration history of target {0} is not loaded yet (the target cannot be reached); try again")]
    HistoryNotLoaded(String),
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
    /// Per target: true once its stored history was loaded and restored.
    history_ready: BTreeMap<String, watch::Sender<bool>>,
    /// Seconds between checkpoint saves of a running migration.
    pub checkpoint_every: Duration,
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
        let history_ready = config
            .targets
            .keys()
            .map(|name| (name.clone(), watch::channel(false).0))
            .collect();
        Arc::new(Registry {
            targets: config.targets.clone(),
            stores,
            metrics,
            global: GlobalThrottle::default(),
            stopping: CancellationToken::new(),
            history_ready,
            checkpoint_every: Duration::from_secs(config.checkpoint_interval_secs),
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
        let result = self.start_new(req, key.clone(), fingerprint, None).await;
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

    /// Waits until the target's history is loaded (its restored migrations hold their tables).
    async fn wait_for_history(&self, target: &str) -> Result<(), RegistryError> {
        let Some(ready) = self.history_ready.get(target) else {
            return Ok(());
        };
        let mut rx = ready.subscribe();
        let loaded =
            tokio::time::timeout(HISTORY_WAIT, async { rx.wait_for(|r| *r).await.is_ok() }).await;
        match loaded {
            Ok(true) => Ok(()),
            _ => Err(RegistryError::HistoryNotLoaded(target.to_string())),
        }
    }

    async fn start_new(
        self: &Arc<Self>,
        req: StartRequest,
        key: Option<String>,
        fingerprint: String,
        restarted_from: Option<String>,
    ) -> Result<(Arc<Entry>, bool), RegistryError> {
        let target = self.resolve_target(req.target.as_deref())?.clone();
        check_name("database", &req.database)?;
        check_name("table", &req.table)?;
        self.wait_for_history(&target.name).await?;
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
                    restarted_from,
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

    /// Saves the entry's record on its target; failures are logged (the saver retries).
    /// Saves of one entry are serialised, so an older snapshot never overwrites a newer one.
    pub async fn save(&self, entry: &Entry) {
        let Some(store) = self.stores.get(&entry.target) else {
            return;
        };
        let _one_at_a_time = entry.save_lock.lock().await;
        let record = entry.record();
        let started = std::time::Instant::now();
        match store.save(&record).await {
            Ok(()) => {
                debug!(id = %entry.id, state = %record.state, took_ms = started.elapsed().as_millis() as u64,
                    checkpoint_rows = record.checkpoint.as_ref().map(|c| c.rows_copied), "record saved");
                entry.mark_saved(&record)
            }
            Err(e) => {
                warn!(id = %entry.id, error = %e, "could not save the migration record; retrying later");
                entry.mark_save_failed(Duration::from_secs(5));
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
}
