//! The pipeline's helpers around the main flow: the background workers whose failure stops
//! the migration, the catch-up before the cut-over, and the engine's swap hooks.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::MigrationSpec;
use crate::conn::Session;
use crate::cutover::{CutoverPlan, Drain, SwapHooks};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::shadow::ShadowPlan;

/// A background task whose failure must stop the migration.
async fn failed(handle: &mut JoinHandle<Result<()>>, what: &str) -> Error {
    match handle.await {
        Ok(Ok(())) => Error::Binlog(format!("the {what} stopped unexpectedly")),
        Ok(Err(e)) => e,
        Err(e) => Error::Binlog(format!("the {what} panicked: {e}")),
    }
}

/// The background tasks whose failure must stop the migration.
pub(super) struct Workers {
    pub tail: JoinHandle<Result<()>>,
    pub replay: JoinHandle<Result<()>>,
    /// Ends only when cancelled (Ok) or when critical load fails the migration.
    pub probes: JoinHandle<Result<()>>,
}

impl Workers {
    /// The first failure. A replay that ended cleanly did so because the tail closed its
    /// channel: the tail's outcome is the one to report.
    async fn first_failure(&mut self) -> Error {
        let probes = async {
            match (&mut self.probes).await {
                Ok(Ok(())) => std::future::pending().await,
                Ok(Err(e)) => e,
                Err(e) => Error::Binlog(format!("the throttle probes panicked: {e}")),
            }
        };
        let replay_ended = tokio::select! {
            e = failed(&mut self.tail, "binlog tail") => {
                // A replay that failed closed the channel, which ends the tail too: its
                // error is the cause, if it comes.
                return match tokio::time::timeout(Duration::from_millis(500), &mut self.replay).await {
                    Ok(Ok(Err(cause))) => cause,
                    _ => e,
                };
            }
            e = probes => return e,
            r = &mut self.replay => r,
        };
        match replay_ended {
            Ok(Ok(())) => failed(&mut self.tail, "binlog tail").await,
            Ok(Err(e)) => e,
            Err(e) => Error::Binlog(format!("the replay panicked: {e}")),
        }
    }

    /// Runs `fut` unless a worker fails first.
    pub async fn watch<T>(
        &mut self,
        fut: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        tokio::select! {
            r = fut => r,
            e = self.first_failure() => Err(e),
        }
    }
}

/// The engine's side of the swap: drain at the lock, record who blocked it.
pub(super) struct EngineHooks<'a> {
    pub drain: &'a mut Drain,
    pub progress: &'a Progress,
}

impl SwapHooks for EngineHooks<'_> {
    async fn locked(&mut self, a: &mut mysql_async::Conn, plan: &CutoverPlan) -> Result<()> {
        self.drain.locked(a, plan).await
    }

    fn blocked(&mut self, blockers: &[crate::cutover::Blocker]) {
        let list = blockers.to_vec();
        self.progress.update(|s| s.cutover_blockers = list);
    }
}

/// Waits until a marker round trip through the replay fits well inside the cut-over's lock
/// budget: the drain under the lock will then finish long before the lock times out.
pub(super) async fn catch_up(
    spec: &MigrationSpec,
    plan: &ShadowPlan,
    drain: &mut Drain,
    cancel: &CancellationToken,
    progress: &Arc<Progress>,
) -> Result<()> {
    let reconnect_for = Duration::from_secs(spec.options.reconnect_timeout_secs);
    let mut session = Session::open(
        &spec.settings,
        "catch-up",
        Vec::new(),
        reconnect_for,
        progress.clone(),
    )
    .await?;
    let ready_within = Duration::from_secs(spec.options.cutover_lock_timeout_secs) / 3;
    loop {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let conn = session.conn().await?;
        match drain
            .run(
                conn,
                &spec.database,
                &plan.names.changelog,
                Duration::from_secs(30),
            )
            .await
        {
            Ok(took) if took < ready_within => break,
            Ok(took) => info!(took_ms = took.as_millis() as u64, "replay catching up"),
            Err(Error::Cutover(msg)) => info!(%msg, "replay catching up"),
            Err(e) if e.is_connection_lost() => session.lost(&e),
            Err(e) => return Err(e),
        }
    }
    session.close().await;
    Ok(())
}
