//! Drives one migration through the pipeline: inspect, shadow, tail + replay, copy, catch up,
//! (wait for the go), cut over, clean up.
//!
//! Invariants: the original table is only ever touched by the swap; on any error or cancel
//! before the swap, every helper table is dropped and the original is left exactly as it was;
//! state changes go through the state machine in `progress`. Components get only what they
//! need: connection settings, the plan, channels and the shared progress.

mod checkpoint;
mod options;
mod pipeline;
mod recovery;

pub use checkpoint::{Checkpoint, KeyValue};
pub use options::{CriticalLoadAction, CutoverGiveUp, MigrationOptions};
use pipeline::{catch_up, EngineHooks, Workers};
use recovery::{check_binlog_available, finish_interrupted_swap};

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn, Instrument};

use crate::alter;
use crate::binlog::{self, spawn_tail, TailConfig};
use crate::changelog::spawn_heartbeat;
use crate::clock::{now_micros, utc_stamp};
use crate::conn::ConnSettings;
use crate::copy::{Copier, CopyTuning};
use crate::cutover::{swap_with_retries, CutoverPlan, Drain};
use crate::error::{Error, Result};
use crate::inspect;
use crate::interlock::Interlock;
use crate::progress::Progress;
use crate::replay::Replayer;
use crate::shadow::{self, HelperNames, ShadowPlan};
use crate::state::{State, Step};
use crate::throttle::{spawn_probes, ProbeContext, ProbeSwitches, Throttle, ThrottleSettings};

/// What to migrate.
#[derive(Debug, Clone)]
pub struct MigrationSpec {
    pub settings: ConnSettings,
    pub database: String,
    pub table: String,
    pub alter: String,
    pub options: MigrationOptions,
}

/// How the outside steers a running migration.
pub struct Controls {
    /// Stop and drop the helper tables: the original stays as it was.
    pub cancel: CancellationToken,
    /// Stop at a safe point but keep the helper tables, for a resume from the checkpoint
    /// (daemon shutdown). The migration ends with [`Error::Interrupted`].
    pub shutdown: CancellationToken,
    pub throttle: Throttle,
    /// Becomes true when the operator allows a postponed cut-over.
    pub cutover_go: watch::Receiver<bool>,
    pub tuning: watch::Receiver<CopyTuning>,
}

impl Controls {
    /// Controls for a migration nobody steers (the foreground `run` command).
    pub fn unattended(options: &MigrationOptions) -> (Controls, watch::Sender<CopyTuning>) {
        let (tuning_tx, tuning) = watch::channel(CopyTuning::from(options));
        let (_, cutover_go) = watch::channel(!options.postpone_cutover);
        (
            Controls {
                cancel: CancellationToken::new(),
                shutdown: CancellationToken::new(),
                throttle: Throttle::new(),
                cutover_go,
                tuning,
            },
            tuning_tx,
        )
    }
}

/// A finished migration.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub old_table: Option<String>,
    pub stall: Duration,
}

/// Checks everything a start would check, synchronously, and leaves nothing behind: the
/// clause, the server's binlog settings, the table, and the clause applied to a real (empty)
/// shadow table, which is dropped again. The daemon uses it to answer a start request with
/// the right error before queueing the migration.
pub async fn preflight(spec: &MigrationSpec) -> Result<()> {
    let mut conn = spec.settings.connect("preflight").await?;
    let prepared = prepare(spec, &mut conn, |_| {}).await;
    let dropped = match &prepared {
        Ok((_, plan)) => shadow::drop_helpers(&mut conn, &spec.database, &plan.names).await,
        Err(_) => Ok(()),
    };
    let _ = conn.disconnect().await;
    prepared.and(dropped)
}

/// Validates, inspects and creates the shadow table: the steps a start and a preflight share.
async fn prepare(
    spec: &MigrationSpec,
    conn: &mut mysql_async::Conn,
    on_step: impl Fn(Step),
) -> Result<(inspect::Inspection, ShadowPlan)> {
    on_step(Step::Inspecting);
    spec.options
        .validate()
        .map_err(|e| Error::refused("options", e, "fix the option and try again"))?;
    let alter = alter::validate(&spec.alter)?;
    let insp = inspect::inspect(conn, &spec.database, &spec.table).await?;
    on_step(Step::CreatingShadow);
    let names = HelperNames::for_table(&spec.table, &utc_stamp())?;
    let plan = shadow::create(
        conn,
        &insp,
        &alter,
        spec.options.allow_renamed_columns,
        names,
    )
    .await?;
    Ok((insp, plan))
}

/// Runs the migration to its end and records the end state in `progress`.
pub async fn run(
    spec: MigrationSpec,
    controls: Controls,
    progress: Arc<Progress>,
) -> Result<Outcome> {
    run_with(spec, None, controls, progress).await
}

/// Continues a migration from its checkpoint after a restart or crash: replay from the saved
/// binlog position, copy from the watermark. A swap that a crash interrupted is completed or
/// rolled back first, by looking at which tables exist.
pub async fn resume(
    spec: MigrationSpec,
    checkpoint: Checkpoint,
    controls: Controls,
    progress: Arc<Progress>,
) -> Result<Outcome> {
    run_with(spec, Some(checkpoint), controls, progress).await
}

async fn run_with(
    spec: MigrationSpec,
    checkpoint: Option<Checkpoint>,
    controls: Controls,
    progress: Arc<Progress>,
) -> Result<Outcome> {
    let span = info_span!("migration", db = %spec.database, table = %spec.table);
    async move {
        // One stop token for the pipeline, fired by either cancel or shutdown.
        let stop = CancellationToken::new();
        let relay = {
            let (stop, cancel, shutdown) = (
                stop.clone(),
                controls.cancel.clone(),
                controls.shutdown.clone(),
            );
            tokio::spawn(async move {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = shutdown.cancelled() => {}
                }
                stop.cancel();
            })
        };
        let result = run_inner(&spec, &controls, &stop, &progress, checkpoint).await;
        relay.abort();
        let result = match result {
            Err(Error::Cancelled)
                if controls.shutdown.is_cancelled() && !controls.cancel.is_cancelled() =>
            {
                Err(Error::Interrupted)
            }
            other => other,
        };
        match &result {
            Ok(o) => {
                progress.update(|s| s.old_table = o.old_table.clone());
                let _ = progress.move_to(State::Completed);
                info!(old_table = ?o.old_table, "migration completed");
            }
            Err(Error::Cancelled) => {
                let _ = progress.move_to(State::Cancelled);
                info!("migration cancelled; the original table is unchanged");
            }
            Err(Error::Interrupted) => {
                info!("migration interrupted; helper tables kept for a resume")
            }
            Err(e) => {
                progress.fail(e.to_string());
                warn!(error = %e, "migration failed; the original table is unchanged");
            }
        }
        result
    }
    .instrument(span)
    .await
}

async fn run_inner(
    spec: &MigrationSpec,
    controls: &Controls,
    stop: &CancellationToken,
    progress: &Arc<Progress>,
    checkpoint: Option<Checkpoint>,
) -> Result<Outcome> {
    progress
        .move_to(State::Running)
        .map_err(|e| Error::Cutover(e.to_string()))?;
    if stop.is_cancelled() {
        return Err(Error::Cancelled);
    }
    let mut conn = spec.settings.connect("inspection").await?;
    let (insp, plan) = match &checkpoint {
        None => prepare(spec, &mut conn, |step| progress.set_step(step)).await?,
        Some(cp) => {
            if let Some(done) = finish_interrupted_swap(spec, &mut conn, &cp.names).await? {
                return Ok(done);
            }
            progress.set_step(Step::Inspecting);
            let alter = alter::validate(&spec.alter)?;
            let insp = inspect::inspect(&mut conn, &spec.database, &spec.table).await?;
            let plan = shadow::reopen(
                &mut conn,
                &insp,
                &alter,
                spec.options.allow_renamed_columns,
                cp.names.clone(),
            )
            .await?;
            progress
                .rows_copied
                .store(cp.rows_copied, std::sync::atomic::Ordering::Relaxed);
            progress.update(|s| {
                s.copy_done = cp.copy_done;
                s.copy_watermark = cp.watermark_values().ok().flatten();
            });
            info!(applied = %cp.applied, copy_done = cp.copy_done, "resuming from the checkpoint");
            (insp, plan)
        }
    };
    progress
        .rows_estimate
        .store(insp.rows_estimate, std::sync::atomic::Ordering::Relaxed);
    progress.update(|s| {
        s.shadow_table = Some(plan.names.shadow.clone());
        s.names = Some(plan.names.clone());
    });
    info!(shadow = %plan.names.shadow, key = ?plan.key.source, "shadow table ready");

    // From here on the helpers exist: on any error but an interruption, drop them.
    let tasks = CancellationToken::new();
    let result = migrate(
        spec,
        controls,
        stop,
        progress,
        &insp,
        &plan,
        &mut conn,
        &tasks,
        checkpoint.as_ref(),
    )
    .await;
    tasks.cancel();
    let interrupted = matches!(result, Err(Error::Cancelled))
        && controls.shutdown.is_cancelled()
        && !controls.cancel.is_cancelled();
    let _ = conn.disconnect().await;
    if result.is_err() && !interrupted {
        // A fresh session: the failure may well have been a lost connection.
        let dropped = match spec.settings.connect("cleanup").await {
            Ok(mut c) => {
                let r = shadow::drop_helpers(&mut c, &spec.database, &plan.names).await;
                let _ = c.disconnect().await;
                r
            }
            Err(e) => Err(e),
        };
        if let Err(e) = dropped {
            warn!(error = %e, "could not drop the helper tables; drop them by hand");
        }
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn migrate(
    spec: &MigrationSpec,
    controls: &Controls,
    stop: &CancellationToken,
    progress: &Arc<Progress>,
    insp: &inspect::Inspection,
    plan: &ShadowPlan,
    conn: &mut mysql_async::Conn,
    tasks: &CancellationToken,
    checkpoint: Option<&Checkpoint>,
) -> Result<Outcome> {
    let db = &spec.database;
    // Tail from before the copy starts, so every change the copy may miss is replayed.
    let start = match checkpoint {
        Some(cp) => {
            check_binlog_available(conn, &cp.applied).await?;
            cp.applied.clone()
        }
        None => binlog::current_position(conn, &insp.version).await?,
    };
    // A checkpoint exists from here on: nothing is applied yet, so the start is the position.
    progress.update(|s| s.applied_pos = Some(start.clone()));
    let (tx, rx) = mpsc::channel(64);
    let (marker_tx, marker_rx) = watch::channel(0i64);
    let server_id = 1_000_000_000 + (now_micros() as u32 % 1_000_000_000);
    let tail = spawn_tail(
        TailConfig {
            settings: spec.settings.clone(),
            version: insp.version,
            server_id,
            start,
            schema: insp.schema.clone(),
            changelog: plan.names.changelog.clone(),
            swap: plan.names.swap.clone(),
            reconnect_for: Duration::from_secs(spec.options.reconnect_timeout_secs),
        },
        tx,
        progress.clone(),
        tasks.child_token(),
    );
    let reconnect_for = Duration::from_secs(spec.options.reconnect_timeout_secs);
    let interlock = Interlock::new();
    let replayer = Replayer::new(
        &spec.settings,
        reconnect_for,
        &insp.schema,
        plan,
        progress.clone(),
        marker_tx,
        interlock.clone(),
    )
    .await?;
    let replay = replayer.spawn(rx, tasks.child_token());
    let _heartbeat = spawn_heartbeat(
        spec.settings.clone(),
        db.clone(),
        plan.names.changelog.clone(),
        tasks.child_token(),
    );

    // The probes read the changelog's heartbeat on replicas, so they start after it exists.
    let switches = ProbeSwitches::default();
    let gate = switches.add_to(controls.throttle.clone());
    progress.set_throttle(gate.clone());
    let settings = controls
        .throttle
        .settings()
        .unwrap_or_else(|| watch::channel(ThrottleSettings::from(&spec.options)).1);
    let probes = spawn_probes(
        ProbeContext {
            primary: spec.settings.clone(),
            version: insp.version,
            replicas: controls.throttle.replicas().to_vec(),
            database: db.clone(),
            changelog: plan.names.changelog.clone(),
        },
        settings,
        switches.clone(),
        controls.throttle.source("manual"),
        tasks.child_token(),
    );

    // Copy nothing before the probes have looked once: a peak window may cover now.
    switches.first_round(Duration::from_secs(5)).await;
    let mut workers = Workers {
        tail,
        replay,
        probes,
    };

    progress.set_step(Step::Copying);
    let mut copier = Copier::new(
        &spec.settings,
        reconnect_for,
        &insp.schema,
        plan,
        progress.clone(),
        interlock,
    )
    .await?;
    let resume_copy =
        match checkpoint {
            Some(cp) if cp.copy_done => None,
            Some(cp) => Some(cp.watermark_values().map_err(|e| {
                Error::refused("resume", e, "start the migration again from scratch")
            })?),
            None => Some(None),
        };
    if let Some(start_after) = resume_copy {
        let copy = copier.run(start_after, controls.tuning.clone(), &gate, stop);
        workers.watch(copy).await?;
    }
    progress.update(|s| s.copy_done = true);
    drop(copier);
    info!(rows = Progress::get(&progress.rows_copied), "copy done");

    progress.set_step(Step::CatchingUp);
    let mut drain = Drain::new(marker_rx);
    workers
        .watch(catch_up(spec, plan, &mut drain, stop, progress))
        .await?;

    if !*controls.cutover_go.borrow() {
        progress
            .move_to(State::Postponed)
            .map_err(|e| Error::Cutover(e.to_string()))?;
        progress.set_step(Step::WaitingForCutover);
        info!("copy done and replay caught up; waiting for the cut-over go");
        let mut go = controls.cutover_go.clone();
        let wait = async {
            let go_given = async {
                // Nobody left to give the go: wait for a cancel instead of guessing.
                if go.wait_for(|g| *g).await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = stop.cancelled() => Err(Error::Cancelled),
                _ = go_given => Ok(()),
            }
        };
        workers.watch(wait).await?;
        workers
            .watch(catch_up(spec, plan, &mut drain, stop, progress))
            .await?;
    }
    let cut = CutoverPlan {
        settings: spec.settings.clone(),
        database: db.clone(),
        table: spec.table.clone(),
        names: plan.names.clone(),
        lock_timeout: Duration::from_secs(spec.options.cutover_lock_timeout_secs),
        keep_old_table: spec.options.keep_old_table,
        kill_blockers_after: spec
            .options
            .kill_blockers_after_secs
            .map(Duration::from_secs),
    };
    let mut attempts_made = 0u64;
    let swapped = loop {
        // Not while throttled: the cut-over's lock is the one moment the application notices us.
        workers.watch(gate.wait_clear(stop)).await?;
        if stop.is_cancelled() {
            return Err(Error::Cancelled);
        }
        progress
            .move_to(State::CuttingOver)
            .map_err(|e| Error::Cutover(e.to_string()))?;
        progress.set_step(Step::SwappingTables);
        // The tail is not watched during the swap: it sees our own RENAME and stops, which is
        // expected once the swap is done; a dead tail before that makes the drain time out.
        let mut hooks = EngineHooks {
            drain: &mut drain,
            progress,
        };
        let result = swap_with_retries(&cut, &mut hooks, spec.options.cutover_attempts, |_| {
            attempts_made += 1;
            progress
                .cutover_attempts
                .store(attempts_made, std::sync::atomic::Ordering::Relaxed);
        })
        .await;
        match result {
            Ok(s) => break s,
            Err(e) if spec.options.cutover_give_up == CutoverGiveUp::Postpone => {
                // Keep the work: wait for the operator's next go and try again.
                warn!(error = %e, "cut-over gave up; the migration waits for another /cutover");
                progress.update(|s| s.error = Some(format!("last cut-over attempt: {e}")));
                progress
                    .move_to(State::Postponed)
                    .map_err(|e| Error::Cutover(e.to_string()))?;
                progress.set_step(Step::WaitingForCutover);
                let mut go = controls.cutover_go.clone();
                go.mark_unchanged();
                let next_go = async {
                    tokio::select! {
                        _ = stop.cancelled() => Err(Error::Cancelled),
                        r = go.changed() => match r {
                            Ok(()) => Ok(()),
                            Err(_) => { stop.cancelled().await; Err(Error::Cancelled) }
                        },
                    }
                };
                workers.watch(next_go).await?;
                workers
                    .watch(catch_up(spec, plan, &mut drain, stop, progress))
                    .await?;
            }
            Err(e) => return Err(e),
        }
    };
    progress.update(|s| {
        s.cutover_blockers.clear();
        s.error = None;
    });
    progress.observer().cutover_stall(swapped.stall);
    progress.set_step(Step::CleaningUp);
    tasks.cancel();
    let _ = workers.tail.await;
    let _ = workers.replay.await;
    let _ = workers.probes.await;
    // The swap is done; a failure to drop the changelog must not fail the migration.
    let dropped = match spec.settings.connect("cleanup").await {
        Ok(mut c) => shadow::drop_helper(&mut c, db, &plan.names.changelog).await,
        Err(e) => Err(e),
    };
    if let Err(e) = dropped {
        warn!(error = %e, "could not drop the changelog table; drop it by hand");
    }
    Ok(Outcome {
        old_table: swapped.old_table,
        stall: swapped.stall,
    })
}
