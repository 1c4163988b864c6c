//! Writes into the migration's changelog table: heartbeats and cut-over markers.
//!
//! Both are read back through the binlog (see `binlog`), which turns them into facts about the
//! replay: a heartbeat applied at time T means every change committed before T was written to
//! the shadow table (replay lag = now - T); a marker seen by the replay proves that every change
//! committed before the marker was applied (the cut-over drain).

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::binlog::{HEARTBEAT_ID, MARKER_ID};
use crate::clock::now_micros;
use crate::conn::ConnSettings;
use crate::error::{DbContext, Result};
use crate::sql::qualified;

/// How often a heartbeat is written: the resolution of the replay lag.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);

fn upsert_sql(database: &str, changelog: &str) -> String {
    format!(
        "INSERT INTO {} (id, value) VALUES (?, ?) ON DUPLICATE KEY UPDATE value = VALUES(value)",
        qualified(database, changelog)
    )
}

/// Writes a cut-over marker with `token` and returns once it is committed.
pub async fn write_marker(
    conn: &mut Conn,
    database: &str,
    changelog: &str,
    token: i64,
) -> Result<()> {
    conn.exec_drop(upsert_sql(database, changelog), (MARKER_ID, token))
        .await
        .ctx(|| "writing the cut-over marker".to_string())
}

/// Writes a heartbeat every [`HEARTBEAT_INTERVAL`] until cancelled. Errors are retried with a
/// fresh connection: a missing heartbeat only makes the lag look larger (fails safe).
pub fn spawn_heartbeat(
    settings: ConnSettings,
    database: String,
    changelog: String,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let sql = upsert_sql(&database, &changelog);
        let mut conn: Option<Conn> = None;
        let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            if conn.is_none() {
                conn = settings.connect("heartbeat").await.ok();
            }
            if let Some(c) = conn.as_mut() {
                if let Err(e) = c.exec_drop(&sql, (HEARTBEAT_ID, now_micros())).await {
                    warn!(error = %e, "heartbeat write failed; reconnecting");
                    conn = None;
                }
            }
        }
        if let Some(c) = conn {
            let _ = c.disconnect().await;
        }
    })
}
