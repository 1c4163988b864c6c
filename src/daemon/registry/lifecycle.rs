//! Running migrations: the per-target scheduler ([`Registry::pump`]), one task per migration
//! ([`Registry::drive`]) and the stop at shutdown ([`Registry::shutdown`]).
//!
//! A migration the daemon restored from its store continues here as well: from its checkpoint
//! with [`migration::resume`], or, when it died before it had one, from scratch once the
//! leftovers of its first run are gone.
//!
//! Shutdown keeps work: running migrations get their `shutdown` token (not `cancel`), stop at a
//! safe point with their helper tables kept, and are saved still active, with their final
//! checkpoint; queued ones stay queued. The next start resumes both.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, info_span, warn, Instrument};

use super::restore::clear_leftovers;
use super::Registry;
use crate::daemon::entry::{Entry, Resume};
use crate::daemon::replicas;
use crate::migration::{self, MigrationSpec};
use crate::state::State;
use crate::Error;

impl Registry {
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
                let Some(id) = inner
                    .queues
                    .get_mut(target)
                    .and_then(std::collections::VecDeque::pop_front)
                else {
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

    /// Runs (or resumes) one migration until it ends or the daemon stops it, then frees its
    /// slot and table.
    async fn drive(self: Arc<Self>, entry: Arc<Entry>) {
        let (Some(live), Some(target)) = (entry.live(), self.targets.get(&entry.target)) else {
            return;
        };
        let options = entry.options();
        let progress = live.progress.clone();
        let mut interrupted = false;
        match replicas::for_target(target).await {
            Ok(watched) => {
                let names: Vec<String> = watched
                    .iter()
                    .map(|r| format!("{}:{}", r.host, r.port))
                    .collect();
                let controls = live.controls(&options, watched);
                let spec = MigrationSpec {
                    settings: target.settings.clone(),
                    database: entry.database.clone(),
                    table: entry.table.clone(),
                    alter: entry.alter.clone(),
                    options,
                };
                let resume = entry.take_resume();
                if resume.is_some() {
                    entry.mark_resumed();
                }
                // Spawned so that a panic in the engine fails this migration, not the daemon.
                let task = match resume {
                    Some(Resume::Checkpoint(cp)) => {
                        info!(replicas = ?names, applied = %cp.applied, watermark = ?cp.copy_watermark, rows_copied = cp.rows_copied, "migration resuming from its checkpoint");
                        let p = progress.clone();
                        Some(tokio::spawn(
                            migration::resume(spec, cp, controls, p).in_current_span(),
                        ))
                    }
                    Some(Resume::Scratch) => match clear_leftovers(&spec).await {
                        Ok(()) => {
                            info!(replicas = ?names, "migration starting over: it had no checkpoint yet");
                            let p = progress.clone();
                            Some(tokio::spawn(
                                migration::run(spec, controls, p).in_current_span(),
                            ))
                        }
                        Err(e) => {
                            warn!(error = %e, "migration cannot start over");
                            progress.fail(e);
                            None
                        }
                    },
                    None => {
                        info!(replicas = ?names, "migration starting");
                        let p = progress.clone();
                        Some(tokio::spawn(
                            migration::run(spec, controls, p).in_current_span(),
                        ))
                    }
                };
                match task {
                    None => {}
                    Some(task) => match task.await {
                        Ok(Err(Error::Interrupted)) => interrupted = true,
                        Ok(Err(Error::Refused {
                            check: "binlog_purged",
                            ..
                        })) => {
                            // The engine's message says what happened; add how to start over here.
                            let hint = format!(
                                " To start it again from scratch with the same request: POST /v1/migrations/{}/restart.",
                                entry.id
                            );
                            progress.update(|s| {
                                if let Some(e) = &mut s.error {
                                    e.push_str(&hint);
                                }
                            });
                        }
                        Ok(Ok(_)) if !progress.state().is_terminal() => {
                            // A resume that found the interrupted swap already done returns
                            // its outcome without passing through cutting_over, from which
                            // the engine's move to completed is refused: take that path here.
                            warn!("the resumed swap was already done; recording the migration as completed");
                            let _ = progress.move_to(State::CuttingOver);
                            let _ = progress.move_to(State::Completed);
                        }
                        Ok(_) => {}
                        Err(e) => progress.fail(format!(
                            "internal error: the migration task ended abnormally: {e}"
                        )),
                    },
                }
            }
            Err(e) => {
                warn!(error = %e, "migration not started");
                progress.fail(e);
            }
        }
        let state = entry.state();
        if interrupted && !state.is_terminal() {
            // Still active: saved with its final checkpoint, it resumes at the next start.
            entry.mark_interrupted();
            info!(state = %state, "migration stopped for the shutdown; it resumes at the next start");
        } else {
            entry.mark_finished();
        }
        entry.sample(&self.metrics);
        self.save(&entry).await;
        {
            let mut inner = self.lock();
            if !interrupted {
                let key = (
                    entry.target.clone(),
                    entry.database.clone(),
                    entry.table.clone(),
                );
                if inner.tables.get(&key) == Some(&entry.id) {
                    inner.tables.remove(&key);
                }
            }
            if let Some(n) = inner.running.get_mut(&entry.target) {
                *n = n.saturating_sub(1);
            }
        }
        info!(state = %state, "migration ended");
        self.pump(&entry.target);
    }

    /// Stops everything at a safe point and keeps the work: nothing new starts; running
    /// migrations stop with their helper tables kept (a cut-over under way is let finish);
    /// queued ones stay queued. Waits up to `grace`, then saves every active record with its
    /// checkpoint: the next start resumes them. A migration still cutting over after `grace`
    /// is saved as it is; the next start works out how far its swap got.
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
            if let Some(l) = e.live() {
                l.shutdown.cancel();
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
            let state = e.state();
            if state.is_terminal() {
                continue;
            }
            if state != State::Queued {
                e.mark_interrupted();
                warn!(id = %e.id, state = %state, "migration still active at exit; it resumes at the next start");
            }
            self.save(e).await;
        }
    }
}
