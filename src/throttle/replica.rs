//! Replica lag: read the migration's own heartbeat (written on the primary every 100 ms) on
//! each replica, for sub-second resolution; fall back to the replica status seconds. A replica
//! that cannot be reached, or whose replication is stopped, counts as lagging: fail closed,
//! naming the replica.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};

use crate::binlog::HEARTBEAT_ID;
use crate::clock::now_micros;
use crate::conn::ConnSettings;
use crate::flavor::ServerVersion;
use crate::sql::qualified;

const TIMEOUT: Duration = Duration::from_secs(1);

pub struct ReplicaProbe {
    replicas: Vec<(ConnSettings, Option<Conn>)>,
    version: ServerVersion,
    heartbeat_sql: String,
}

impl ReplicaProbe {
    pub fn new(
        replicas: Vec<ConnSettings>,
        version: ServerVersion,
        database: &str,
        changelog: &str,
    ) -> ReplicaProbe {
        ReplicaProbe {
            replicas: replicas.into_iter().map(|r| (r, None)).collect(),
            version,
            heartbeat_sql: format!(
                "SELECT value FROM {} WHERE id = {HEARTBEAT_ID}",
                qualified(database, changelog)
            ),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.replicas.is_empty()
    }

    /// Every replica over `max_lag` (or unusable), with its measured lag.
    pub async fn check(&mut self, max_lag: Duration) -> Vec<String> {
        let mut reasons = Vec::new();
        let status = self.version.replica_status();
        for (settings, conn) in &mut self.replicas {
            let name = format!("{}:{}", settings.host, settings.port);
            if conn.is_none() {
                match tokio::time::timeout(TIMEOUT, settings.connect("replica lag check")).await {
                    Ok(Ok(c)) => *conn = Some(c),
                    Ok(Err(e)) => {
                        reasons.push(format!("replica {name} unreachable: {e}"));
                        continue;
                    }
                    Err(_) => {
                        reasons.push(format!(
                            "replica {name} unreachable: no answer within {TIMEOUT:?}"
                        ));
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { continue };
            match measure(c, status, &self.heartbeat_sql).await {
                Ok(Lag::Stopped(what)) => {
                    reasons.push(format!("replication stopped on replica {name} ({what})"))
                }
                Ok(Lag::Millis(ms)) if ms > max_lag.as_millis() as i64 => reasons.push(format!(
                    "replica {name} lags {ms} ms (max {} ms)",
                    max_lag.as_millis()
                )),
                Ok(Lag::Millis(_)) => {}
                Ok(Lag::Unknown) => {
                    reasons.push(format!("replica {name} reports no lag (not replicating?)"))
                }
                Err(e) => {
                    reasons.push(format!("replica {name} unreachable: {e}"));
                    *conn = None;
                }
            }
        }
        reasons
    }
}

enum Lag {
    Millis(i64),
    Stopped(String),
    Unknown,
}

async fn measure(
    conn: &mut Conn,
    status: crate::flavor::ReplicaStatusSql,
    heartbeat_sql: &str,
) -> Result<Lag, String> {
    let row: Option<Row> = tokio::time::timeout(TIMEOUT, conn.query_first(status.statement))
        .await
        .map_err(|_| format!("no answer within {TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    let Some(row) = row else {
        return Ok(Lag::Stopped("it has no replication configured".to_string()));
    };
    let text = |col: &str| {
        row.get_opt::<Option<String>, _>(col)
            .and_then(|r| r.ok())
            .flatten()
    };
    for col in [status.sql_running_column, status.io_running_column] {
        let running = text(col).unwrap_or_default();
        if !running.eq_ignore_ascii_case("yes") {
            return Ok(Lag::Stopped(format!("{col}={running}")));
        }
    }
    // The heartbeat row may not have reached the replica yet: then the status seconds count.
    let heartbeat = tokio::time::timeout(TIMEOUT, conn.query_first::<i64, _>(heartbeat_sql)).await;
    if let Ok(Ok(Some(micros))) = heartbeat {
        return Ok(Lag::Millis((now_micros() - micros).max(0) / 1000));
    }
    Ok(
        match text(status.lag_column).and_then(|s| s.parse::<i64>().ok()) {
            Some(secs) => Lag::Millis(secs * 1000),
            None => Lag::Unknown,
        },
    )
}
