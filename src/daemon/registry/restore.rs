//! Continuing after a stop or crash, and starting over on request.
//!
//! At startup each target's stored records come back ([`Registry::add_history`]): finished
//! ones as history; every record the previous process left active (running, postponed or
//! cutting over, whether it stopped cleanly or died) as a live migration that resumes from its
//! stored checkpoint, ahead of the ones that were queued, which queue again in their order.
//! A record that was active without a checkpoint (it died before its binlog tail started)
//! starts over once its leftover helper tables are gone ([`clear_leftovers`]).
//!
//! [`Registry::restart`] starts a failed or cancelled migration again from scratch with the
//! same request, as a new migration (a new id, `restarted_from` naming the old one): the old
//! record stays as it was, so the history keeps both runs.

use std::sync::Arc;

use serde_json::Value;
use tracing::{info, warn};

use super::{KeySlot, Registry, RegistryError};
use crate::daemon::entry::{Entry, Resume};
use crate::daemon::model::StartRequest;
use crate::daemon::store::Record;
use crate::inspect;
use crate::migration::MigrationSpec;
use crate::shadow::{self, HelperNames};
use crate::state::State;

/// Drops what a migration that died before its first checkpoint may have left: the shadow and
/// changelog tables and a swap placeholder. Their names do not depend on the run. Refuses when
/// the shadow table is gone but the swap name is taken: a cut-over may have swapped the tables,
/// and only a person can tell.
pub(super) async fn clear_leftovers(spec: &MigrationSpec) -> Result<(), String> {
    let names = HelperNames::for_table(&spec.table, "0").map_err(|e| e.to_string())?;
    let db = &spec.database;
    let mut conn = spec
        .settings
        .connect("clearing leftovers")
        .await
        .map_err(|e| e.to_string())?;
    let result = async {
        let shadow = inspect::table_exists(&mut conn, db, &names.shadow).await?;
        let swap = inspect::table_exists(&mut conn, db, &names.swap).await?;
        if !shadow && swap {
            return Ok(Err(format!(
                "the daemon stopped while the migration had no checkpoint, and {db}.{} exists \
                 without the shadow table {}: a cut-over may have swapped the tables. Check \
                 {db}.{} and {db}.{} by hand, then start the migration again if needed",
                names.swap, names.shadow, spec.table, names.swap
            )));
        }
        shadow::drop_helpers(&mut conn, db, &names).await?;
        Ok::<_, crate::Error>(Ok(()))
    }
    .await;
    let _ = conn.disconnect().await;
    match result {
        Ok(r) => r,
        Err(e) => Err(format!("cannot clear the leftovers of the first run: {e}")),
    }
}

impl Registry {
    /// Adds a target's stored records: finished ones as history, active and queued ones as
    /// live migrations again (see the module doc). Marks the target's history as loaded and
    /// starts what its slots allow.
    pub async fn add_history(self: &Arc<Self>, target: &str, records: Vec<Record>) {
        let windows = self
            .targets
            .get(target)
            .map(|t| t.peak_windows.clone())
            .unwrap_or_default();
        let mut restored = Vec::new();
        {
            let mut inner = self.lock();
            let (mut active, mut queued) = (Vec::new(), Vec::new());
            for r in records {
                if inner.entries.contains_key(&r.id) {
                    continue;
                }
                if let Some(k) = &r.idempotency_key {
                    inner.keys.insert(k.clone(), KeySlot::Done(r.id.clone()));
                }
                if r.state.is_terminal() {
                    inner
                        .entries
                        .insert(r.id.clone(), Arc::new(Entry::from_record(r)));
                    continue;
                }
                let was_active = r.state != State::Queued;
                let resume = match (&r.checkpoint, was_active) {
                    (Some(cp), _) => Some(Resume::Checkpoint(cp.clone())),
                    (None, true) => Some(Resume::Scratch),
                    (None, false) => None,
                };
                info!(id = %r.id, state = %r.state, checkpoint = r.checkpoint.is_some(), "restoring a migration the previous process left {}", if was_active { "active" } else { "queued" });
                let key = (r.target.clone(), r.database.clone(), r.table.clone());
                let entry = Arc::new(Entry::restored(
                    r,
                    resume,
                    windows.clone(),
                    self.global.switch(),
                    &self.metrics,
                ));
                if let Some(other) = inner.tables.get(&key) {
                    // Two active records for one table cannot both be right: keep the first.
                    if let Some(l) = entry.live() {
                        l.progress.fail(format!(
                            "migration {other} was active on the same table when the daemon stopped; this one was not resumed"
                        ));
                    }
                    entry.mark_finished();
                } else {
                    inner.tables.insert(key, entry.id.clone());
                    if was_active {
                        active.push(entry.id.clone());
                    } else {
                        queued.push(entry.id.clone());
                    }
                }
                inner.entries.insert(entry.id.clone(), entry.clone());
                restored.push(entry);
            }
            // Resumed migrations first (they hold helper tables), then the queue as it was.
            let q = inner.queues.entry(target.to_string()).or_default();
            for id in active.into_iter().chain(queued).rev() {
                q.push_front(id);
            }
        }
        if let Some(ready) = self.history_ready.get(target) {
            ready.send_replace(true);
        }
        for e in &restored {
            e.sample(&self.metrics);
            self.save(e).await;
        }
        self.pump(target);
    }

    /// Starts a failed or cancelled migration again from scratch with the same target, table,
    /// clause and options, as a new migration (see the module doc).
    pub async fn restart(self: &Arc<Self>, id: &str) -> Result<Arc<Entry>, RegistryError> {
        if self.stopping.is_cancelled() {
            return Err(RegistryError::ShuttingDown);
        }
        let old = self.get(id)?;
        let state = old.state();
        if !matches!(state, State::Failed | State::Cancelled) {
            return Err(RegistryError::WrongState(format!(
                "migration {id} is {state}: only a failed or cancelled migration can be restarted"
            )));
        }
        let options = match serde_json::to_value(old.options()) {
            Ok(Value::Object(m)) => m,
            Ok(_) | Err(_) => {
                return Err(RegistryError::InvalidOptions(format!(
                    "the options of migration {id} cannot be read back"
                )))
            }
        };
        let req = StartRequest {
            target: Some(old.target.clone()),
            database: old.database.clone(),
            table: old.table.clone(),
            alter: old.alter.clone(),
            options: Some(options),
        };
        let fingerprint = serde_json::to_string(&req)
            .map_err(|e| RegistryError::InvalidRequest(e.to_string()))?;
        let (entry, _) = self
            .start_new(req, None, fingerprint, Some(old.id.clone()))
            .await
            .inspect_err(|e| warn!(id, error = %e, "restart refused"))?;
        info!(id, new_id = %entry.id, "migration restarted from scratch");
        Ok(entry)
    }
}
