//! Operator actions on one migration: pause, resume, cut-over go, cancel, live options.
//! (Restarting a failed one from scratch is in `restore`.)
//!
//! Each checks that the action fits the migration's state (409 otherwise) and acts through the
//! migration's controls only; the engine moves the state. The exception is cancelling a
//! migration that never left the queue: it is taken out and marked cancelled under the
//! registry lock, so the scheduler cannot start it at the same moment.

use std::sync::Arc;

use serde_json::{Map, Value};
use tracing::info;

use super::{Registry, RegistryError, LIVE_OPTIONS};
use crate::copy::CopyTuning;
use crate::daemon::entry::{Entry, PAUSE_REASON};
use crate::daemon::registry::merge_options;
use crate::state::State;

impl Registry {
    fn live_entry(&self, id: &str) -> Result<Arc<Entry>, RegistryError> {
        let e = self.get(id)?;
        if e.live().is_none() || e.state().is_terminal() {
            return Err(RegistryError::WrongState(format!(
                "migration {id} is {}: the action needs an active migration",
                e.state()
            )));
        }
        Ok(e)
    }

    pub fn pause(&self, id: &str) -> Result<Arc<Entry>, RegistryError> {
        let e = self.live_entry(id)?;
        if let Some(l) = e.live() {
            l.pause.set(Some(PAUSE_REASON.to_string()));
        }
        info!(id, "paused");
        Ok(e)
    }

    pub fn resume(&self, id: &str) -> Result<Arc<Entry>, RegistryError> {
        let e = self.live_entry(id)?;
        if let Some(l) = e.live() {
            l.pause.set(None);
        }
        info!(id, "resumed");
        Ok(e)
    }

    pub fn cutover(&self, id: &str) -> Result<Arc<Entry>, RegistryError> {
        let e = self.live_entry(id)?;
        let state = e.state();
        if !e.options().postpone_cutover {
            return Err(RegistryError::WrongState(format!(
                "migration {id} cuts over by itself (postpone_cutover is false)"
            )));
        }
        if !matches!(state, State::Queued | State::Running | State::Postponed) {
            return Err(RegistryError::WrongState(format!(
                "migration {id} is {state}: the cut-over was already given"
            )));
        }
        if let Some(l) = e.live() {
            l.cutover_go.send_replace(true);
        }
        info!(id, "cut-over allowed");
        Ok(e)
    }

    pub async fn cancel(self: &Arc<Self>, id: &str) -> Result<Arc<Entry>, RegistryError> {
        let e = self.live_entry(id)?;
        if e.state() == State::CuttingOver {
            return Err(RegistryError::WrongState(format!(
                "migration {id} is cutting over and can no longer be cancelled"
            )));
        }
        if e.resume_pending() {
            // Its helper tables exist and a cut-over may have been under way: only the resumed
            // run can tell, and it drops them on a cancel.
            return Err(RegistryError::WrongState(format!(
                "migration {id} waits for a slot to resume from its checkpoint; cancel it once it runs"
            )));
        }
        let never_started = {
            let mut inner = self.lock();
            let queued = inner
                .queues
                .get_mut(&e.target)
                .and_then(|q| q.iter().position(|x| *x == e.id).map(|i| q.remove(i)));
            if queued.is_some() {
                if let Some(l) = e.live() {
                    let _ = l.progress.move_to(State::Cancelled);
                }
                let key = (e.target.clone(), e.database.clone(), e.table.clone());
                inner.tables.remove(&key);
            }
            queued.is_some()
        };
        e.mark_cancel_requested();
        if let Some(l) = e.live() {
            l.cancel.cancel();
        }
        info!(id, never_started, "cancel requested");
        if never_started {
            e.mark_finished();
            e.sample(&self.metrics);
            self.save(&e).await;
        }
        Ok(e)
    }

    /// Applies live option changes.
    pub async fn patch(
        &self,
        id: &str,
        changes: &Map<String, Value>,
    ) -> Result<Arc<Entry>, RegistryError> {
        let e = self.live_entry(id)?;
        if e.state() == State::CuttingOver {
            return Err(RegistryError::WrongState(format!(
                "migration {id} is cutting over: options can no longer change"
            )));
        }
        let current = e.options();
        let next = merge_options(&current, changes).map_err(RegistryError::InvalidOptions)?;
        let (before, after) = (
            serde_json::to_value(&current).unwrap_or_default(),
            serde_json::to_value(&next).unwrap_or_default(),
        );
        for k in changes.keys() {
            if !LIVE_OPTIONS.contains(&k.as_str()) && before.get(k) != after.get(k) {
                return Err(RegistryError::OptionNotLive(k.clone()));
            }
        }
        e.set_options(next.clone());
        if let Some(l) = e.live() {
            l.tuning.send_replace(CopyTuning::from(&next));
            if current.postpone_cutover != next.postpone_cutover {
                l.cutover_go.send_replace(!next.postpone_cutover);
            }
        }
        info!(id, options = ?changes, "options changed");
        self.save(&e).await;
        Ok(e)
    }
}
