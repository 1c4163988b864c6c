//! The atomic swap of the original and shadow tables.
//!
//! MariaDB refuses RENAME under LOCK TABLES in the same session, so the swap uses two sessions
//! (it works the same on MySQL):
//!
//! 1. A: `CREATE TABLE <swap>`; `LOCK TABLES t WRITE, <swap> WRITE, <changelog> WRITE`.
//!    From here no write to `t` can commit; writers queue.
//! 2. Drain: A writes a marker into the changelog. It commits after every change to `t`, so
//!    once the replay has applied it, the shadow table holds every committed write.
//! 3. B: `RENAME TABLE t TO <swap>, <shadow> TO t`. It queues behind A on `t` (confirmed in
//!    the processlist before going on).
//! 4. A: `DROP TABLE <swap>; UNLOCK TABLES`. B's RENAME runs before the queued writers, which
//!    then find the new table under the old name.
//!
//! Why `<swap>` and `<shadow>` sort after `t`: a multi-table RENAME takes its metadata locks in
//! name order. If another name of the RENAME sorts first (gh-ost's `_t_del`, the usual
//! `_t_new`) and anyone holds that table's lock for a moment, B waits there, not on `t`, and
//! UNLOCK lets the queued writers into the OLD table (measured: up to 62% of cut-overs leak
//! with `_t_del`; with `_t_new`, 1 in 600 under load, when the server's purge or statistics
//! thread held the shadow; `tests/cutover_mdl.rs` forces it). With `t` first, B queues on `t`
//! itself and is served before the writers, whatever holds the other names.
//!
//! Failure safety: the name `t` always exists. If A dies, its locks go and B's RENAME fails
//! ("table exists": the swap table is still there), so nothing was swapped. Every step is
//! bounded by `lock_wait_timeout`; a failed attempt releases everything and is retried.

mod blockers;

pub use blockers::Blocker;

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::changelog::write_marker;
use crate::clock::now_micros;
use crate::conn::ConnSettings;
use crate::error::{server_error, DbContext, Error, Result};
use crate::shadow::HelperNames;
use crate::sql::qualified;

/// What the swap needs; nothing else of the migration.
#[derive(Debug, Clone)]
pub struct CutoverPlan {
    pub settings: ConnSettings,
    pub database: String,
    pub table: String,
    pub names: HelperNames,
    /// How long the application may wait on our lock per attempt.
    pub lock_timeout: Duration,
    pub keep_old_table: bool,
    /// Kill the sessions blocking our LOCK TABLES after this long (off when `None`).
    pub kill_blockers_after: Option<Duration>,
}

/// The result of a successful swap.
#[derive(Debug, Clone)]
pub struct Swapped {
    /// Where the old table's data now lives; `None` when it was dropped.
    pub old_table: Option<String>,
    /// How long writers to the table were blocked.
    pub stall: Duration,
}

/// The two moments of a swap at which the caller acts. The engine drains at `locked`; the
/// stress test queues writers at both, to prove that none of them reaches the old table.
#[allow(async_fn_in_trait)]
pub trait SwapHooks {
    /// A holds the table's lock: nothing more can commit on it. `a` is A's session (it may
    /// only touch the locked tables).
    async fn locked(&mut self, a: &mut Conn, plan: &CutoverPlan) -> Result<()>;
    /// B's RENAME is queued on the table's lock; A has not released it yet.
    async fn rename_queued(&mut self) -> Result<()> {
        Ok(())
    }
    /// LOCK TABLES timed out (or blockers were killed): who held the table.
    fn blocked(&mut self, _blockers: &[Blocker]) {}
}

impl SwapHooks for Drain {
    async fn locked(&mut self, a: &mut Conn, plan: &CutoverPlan) -> Result<()> {
        self.run(a, &plan.database, &plan.names.changelog, plan.lock_timeout)
            .await
            .map(|_| ())
    }
}

/// Proves that every change committed before a marker has reached the shadow table.
pub struct Drain {
    markers: watch::Receiver<i64>,
}

impl Drain {
    pub fn new(markers: watch::Receiver<i64>) -> Drain {
        Drain { markers }
    }

    /// Writes a marker on `conn` and waits until the replay applied it.
    pub async fn run(
        &mut self,
        conn: &mut Conn,
        database: &str,
        changelog: &str,
        timeout: Duration,
    ) -> Result<Duration> {
        let started = Instant::now();
        let token = now_micros();
        write_marker(conn, database, changelog, token).await?;
        let seen = tokio::time::timeout(timeout, self.markers.wait_for(|t| *t == token)).await;
        match seen {
            Ok(Ok(_)) => Ok(started.elapsed()),
            Ok(Err(_)) => Err(Error::Cutover(
                "the replay stopped before the drain completed".to_string(),
            )),
            Err(_) => Err(Error::Cutover(format!(
                "the replay did not catch up within {timeout:?}"
            ))),
        }
    }
}

async fn set_lock_wait(conn: &mut Conn, secs: u64) -> Result<()> {
    conn.query_drop(format!("SET SESSION lock_wait_timeout = {}", secs.max(1)))
        .await
        .ctx(|| "setting lock_wait_timeout".to_string())
}

/// One swap attempt. On error everything this attempt took is released.
pub async fn swap(plan: &CutoverPlan, hooks: &mut impl SwapHooks) -> Result<Swapped> {
    let db = &plan.database;
    let t = qualified(db, &plan.table);
    let swap_name = qualified(db, &plan.names.swap);
    let shadow = qualified(db, &plan.names.shadow);
    let changelog = qualified(db, &plan.names.changelog);
    let lock_secs = plan.lock_timeout.as_secs().max(1);

    let mut a = plan.settings.connect("cut-over (lock)").await?;
    let mut b = plan.settings.connect("cut-over (rename)").await?;
    let mut monitor = plan.settings.connect("cut-over (monitor)").await?;
    set_lock_wait(&mut a, lock_secs).await?;
    // B waits behind A's lock for at most the drain plus the hand-over, then gives up.
    set_lock_wait(&mut b, lock_secs * 2 + 2).await?;

    a.query_drop(format!("DROP TABLE IF EXISTS {swap_name}"))
        .await
        .ctx(|| "clearing the swap name".to_string())?;
    a.query_drop(format!("CREATE TABLE {swap_name} (id INT) ENGINE=InnoDB"))
        .await
        .ctx(|| format!("creating the swap placeholder {}", plan.names.swap))?;

    let result = locked_swap(
        plan,
        hooks,
        &mut a,
        &mut b,
        &mut monitor,
        &t,
        &swap_name,
        &shadow,
        &changelog,
    )
    .await;
    if result.is_err() {
        // Release whatever is still held; the original table is untouched.
        let _ = a
            .query_drop(format!("DROP TABLE IF EXISTS {swap_name}"))
            .await;
        let _ = a.query_drop("UNLOCK TABLES").await;
        // If A's session is gone its locks went with it; remove a leftover placeholder.
        let _ = monitor
            .query_drop(format!("DROP TABLE IF EXISTS {swap_name}"))
            .await;
    }
    let _ = monitor.disconnect().await;
    let _ = a.disconnect().await;
    let swapped = result?;

    // Nobody writes to the old table any more: archive or drop it at leisure.
    let old_table = if plan.keep_old_table {
        b.query_drop(format!(
            "RENAME TABLE {swap_name} TO {}",
            qualified(db, &plan.names.archive)
        ))
        .await
        .ctx(|| format!("archiving the old table as {}", plan.names.archive))?;
        Some(plan.names.archive.clone())
    } else {
        b.query_drop(format!("DROP TABLE {swap_name}"))
            .await
            .ctx(|| "dropping the old table".to_string())?;
        None
    };
    let _ = b.disconnect().await;
    Ok(Swapped {
        old_table,
        stall: swapped,
    })
}

#[allow(clippy::too_many_arguments)]
async fn locked_swap(
    plan: &CutoverPlan,
    hooks: &mut impl SwapHooks,
    a: &mut Conn,
    b: &mut Conn,
    monitor: &mut Conn,
    t: &str,
    swap_name: &str,
    shadow: &str,
    changelog: &str,
) -> Result<Duration> {
    let ours = [a.id(), b.id(), monitor.id()];
    let grace = plan.kill_blockers_after.filter(|g| *g < plan.lock_timeout);
    let locked = {
        let locking = a.query_drop(format!(
            "LOCK TABLES {t} WRITE, {swap_name} WRITE, {changelog} WRITE"
        ));
        tokio::pin!(locking);
        tokio::select! {
            r = &mut locking => r,
            _ = tokio::time::sleep(grace.unwrap_or_default()), if grace.is_some() => {
                // Asked for: end the sessions that keep the application waiting on our lock.
                let found = blockers::find(monitor, &plan.database, &plan.table, &ours).await;
                for blk in &found {
                    warn!(blocker = %blk, "killing a session that blocks the cut-over (kill_blockers_after_secs)");
                    let _ = monitor.query_drop(format!("KILL CONNECTION {}", blk.id)).await;
                }
                hooks.blocked(&found);
                locking.await
            }
        }
    };
    if let Err(e) = locked {
        let found = blockers::find(monitor, &plan.database, &plan.table, &ours).await;
        hooks.blocked(&found);
        let who = found
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        let err = lock_error("LOCK TABLES", e);
        return Err(if who.is_empty() {
            err
        } else {
            Error::Cutover(format!("{err}; blocked by {who}"))
        });
    }
    let locked_at = Instant::now();

    hooks.locked(a, plan).await?;

    let b_id = b.id();
    let rename_sql = format!("RENAME TABLE {t} TO {swap_name}, {shadow} TO {t}");
    let rename = b.query_drop(rename_sql);
    tokio::pin!(rename);

    // From here B's RENAME is on its way to the server. Dropping its future does not take it
    // back: it would stay queued there, and the caller's cleanup (DROP placeholder + UNLOCK)
    // would then perform the swap while we report a failure. So every failure below first
    // resolves the RENAME (see `stop_rename`).
    let mut rename_resolved = false;
    let handed_over: Result<()> = async {
        // Hand over only once B is queued on the table's metadata lock.
        let deadline = Instant::now() + plan.lock_timeout;
        loop {
            let check = rename_waiting(monitor, b_id);
            tokio::pin!(check);
            tokio::select! {
                r = &mut rename => {
                    rename_resolved = true;
                    // Let the monitor's query finish: a query future dropped half-way leaves
                    // its connection unusable, and the cleanup needs the monitor.
                    let _ = check.await;
                    // B finished while A still holds t: it can only have failed.
                    return Err(match r {
                        Ok(()) => Error::Cutover("RENAME completed while the table was locked".to_string()),
                        Err(e) => lock_error("RENAME", e),
                    });
                }
                waiting = &mut check => {
                    if waiting? {
                        break;
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(Error::Cutover(
                    "the RENAME did not queue on the table in time".to_string(),
                ));
            }
        }

        hooks.rename_queued().await?;
        a.query_drop(format!("DROP TABLE {swap_name}"))
            .await
            .ctx(|| "dropping the swap placeholder".to_string())?;
        a.query_drop("UNLOCK TABLES")
            .await
            .ctx(|| "UNLOCK TABLES".to_string())?;
        Ok(())
    }
    .await;
    match handed_over {
        Ok(()) => rename.await.map_err(|e| lock_error("RENAME", e))?,
        Err(e) if rename_resolved => return Err(e),
        Err(e) => {
            if !stop_rename(monitor, b_id, &mut rename).await {
                return Err(e);
            }
            // The RENAME ran: A had dropped the placeholder and its lock went with its
            // session. That is the hand-over, in the safe order: the swap is done.
            warn!(error = %e, "the hand-over reported an error but the RENAME ran: tables swapped");
        }
    }
    let stall = locked_at.elapsed();
    info!(stall_ms = stall.as_millis() as u64, "tables swapped");
    Ok(stall)
}

/// Stops B's pending RENAME (`KILL QUERY`, repeated in case the statement had not reached the
/// server yet) and returns whether it ran anyway. Until this returns, nothing may drop the
/// placeholder or release A's lock. If the monitor cannot kill, the RENAME still ends by
/// itself: B's lock_wait_timeout, or "table exists" while the placeholder is there.
async fn stop_rename<F>(monitor: &mut Conn, b_id: u32, rename: &mut F) -> bool
where
    F: std::future::Future<Output = std::result::Result<(), mysql_async::Error>> + Unpin,
{
    loop {
        let _ = monitor.query_drop(format!("KILL QUERY {b_id}")).await;
        tokio::select! {
            r = &mut *rename => return r.is_ok(),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

/// Whether session `id` is waiting for a metadata lock (our RENAME queued behind A).
async fn rename_waiting(monitor: &mut Conn, id: u32) -> Result<bool> {
    let state: Option<Option<String>> = monitor
        .exec_first(
            "SELECT STATE FROM information_schema.PROCESSLIST WHERE ID = ?",
            (id,),
        )
        .await
        .ctx(|| "watching the RENAME".to_string())?;
    let waiting = state.flatten().is_some_and(|s| s.contains("metadata lock"));
    if !waiting {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(waiting)
}

fn lock_error(what: &str, e: mysql_async::Error) -> Error {
    match server_error(&e) {
        Some((1205, _)) => Error::Cutover(format!(
            "{what} timed out waiting for a lock: a long transaction holds the table"
        )),
        Some((code, msg)) => Error::Cutover(format!("{what} failed: ERROR {code}: {msg}")),
        None => Error::Cutover(format!("{what} failed: {e}")),
    }
}

/// Tries the swap up to `attempts` times with exponential backoff.
pub async fn swap_with_retries(
    plan: &CutoverPlan,
    hooks: &mut impl SwapHooks,
    attempts: u32,
    mut on_attempt: impl FnMut(u32),
) -> Result<Swapped> {
    let mut backoff = Duration::from_millis(500);
    let mut last = None;
    for attempt in 1..=attempts.max(1) {
        on_attempt(attempt);
        match swap(plan, hooks).await {
            Ok(s) => return Ok(s),
            Err(e) => {
                warn!(attempt, error = %e, "cut-over attempt failed; the original table is untouched");
                last = Some(e);
                if attempt < attempts {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
    Err(last.unwrap_or_else(|| Error::Cutover("no attempt made".to_string())))
}
