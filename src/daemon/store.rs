//! Migration history, kept in a table on each target (`_shadowcut.migrations` by default), so
//! that it survives a daemon restart and lives next to the data it describes.
//!
//! Invariants: a record holds everything needed to start the migration again (target, names,
//! ALTER clause, options as JSON), so the crash-safety work can resume from it by adding its
//! checkpoint columns; writes are idempotent upserts keyed by id, so saving the same record
//! twice is harmless; every call is bounded in time, and a store that cannot be reached never
//! blocks a migration (callers log and retry on the next save).

use std::time::{Duration, SystemTime};

use mysql_async::prelude::Queryable;
use mysql_async::{OptsBuilder, Pool, PoolConstraints, PoolOpts, Row};
use tokio::sync::Mutex;

use super::model::{parse_rfc3339, rfc3339};
use crate::conn::ConnSettings;
use crate::migration::MigrationOptions;
use crate::sql::{qualified, quote_ident};
use crate::state::State;

/// Bound on any one store operation.
const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// Records loaded at startup, newest first.
const LOAD_LIMIT: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("history store on target {target}: {message}")]
    Db { target: String, message: String },
    #[error("history store on target {target}: no answer within {OP_TIMEOUT:?}")]
    Timeout { target: String },
}

/// One migration as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub id: String,
    pub target: String,
    pub database: String,
    pub table: String,
    pub alter: String,
    pub options: MigrationOptions,
    pub state: State,
    pub error: Option<String>,
    pub rows_copied: u64,
    pub rows_estimate: u64,
    pub cutover_attempts: u64,
    pub shadow_table: Option<String>,
    pub old_table: Option<String>,
    pub idempotency_key: Option<String>,
    /// The canonical JSON of the start request, to answer retries with the same key.
    pub request_fingerprint: Option<String>,
    /// The daemon stopped (or died) while the migration ran.
    pub interrupted: bool,
    pub created_at: SystemTime,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
}

/// The history table on one target.
pub struct Store {
    target: String,
    pool: Pool,
    table: String,
    schema: String,
    /// Whether the schema and table were created (done once, lazily, under this lock).
    ready: Mutex<bool>,
}

/// `YYYY-MM-DD hh:mm:ss.ffffff` in UTC, for DATETIME(6) columns.
fn db_time(t: SystemTime) -> String {
    rfc3339(t)
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_string()
}

impl Store {
    pub fn new(target: &str, settings: &ConnSettings, schema: &str) -> Store {
        let opts = OptsBuilder::default()
            .ip_or_hostname(settings.host.clone())
            .tcp_port(settings.port)
            .user(Some(settings.user.clone()))
            .pass(settings.password.clone())
            .prefer_socket(false)
            .pool_opts(
                PoolOpts::default()
                    .with_constraints(PoolConstraints::new(0, 2).unwrap_or_default()),
            )
            .init(vec!["SET NAMES utf8mb4".to_string()]);
        Store {
            target: target.to_string(),
            pool: Pool::new(opts),
            table: qualified(schema, "migrations"),
            schema: schema.to_string(),
            ready: Mutex::new(false),
        }
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Db {
            target: self.target.clone(),
            message: e.to_string(),
        }
    }

    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(OP_TIMEOUT, fut)
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Timeout {
                    target: self.target.clone(),
                })
            })
    }

    async fn ensure(&self, conn: &mut mysql_async::Conn) -> Result<(), StoreError> {
        let mut ready = self.ready.lock().await;
        if *ready {
            return Ok(());
        }
        conn.query_drop(format!(
            "CREATE DATABASE IF NOT EXISTS {}",
            quote_ident(&self.schema)
        ))
        .await
        .map_err(|e| self.err(e))?;
        conn.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {} (
               id VARCHAR(64) NOT NULL PRIMARY KEY,
               target VARCHAR(64) NOT NULL,
               database_name VARCHAR(64) NOT NULL,
               table_name VARCHAR(64) NOT NULL,
               alter_clause MEDIUMTEXT NOT NULL,
               options_json MEDIUMTEXT NOT NULL,
               state VARCHAR(16) NOT NULL,
               error MEDIUMTEXT NULL,
               rows_copied BIGINT UNSIGNED NOT NULL DEFAULT 0,
               rows_estimate BIGINT UNSIGNED NOT NULL DEFAULT 0,
               cutover_attempts INT UNSIGNED NOT NULL DEFAULT 0,
               shadow_table VARCHAR(64) NULL,
               old_table VARCHAR(64) NULL,
               idempotency_key VARCHAR(255) NULL,
               request_fingerprint MEDIUMTEXT NULL,
               interrupted TINYINT(1) NOT NULL DEFAULT 0,
               created_at DATETIME(6) NOT NULL,
               started_at DATETIME(6) NULL,
               finished_at DATETIME(6) NULL,
               updated_at DATETIME(6) NOT NULL,
               KEY by_table (database_name, table_name),
               KEY by_state (state)
             ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
            self.table
        ))
        .await
        .map_err(|e| self.err(e))?;
        *ready = true;
        Ok(())
    }

    /// Inserts or updates `r`.
    pub async fn save(&self, r: &Record) -> Result<(), StoreError> {
        self.bounded(async {
            let mut conn = self.pool.get_conn().await.map_err(|e| self.err(e))?;
            self.ensure(&mut conn).await?;
            let options = serde_json::to_string(&r.options).map_err(|e| self.err(e))?;
            let params: Vec<mysql_async::Value> = vec![
                r.id.clone().into(),
                r.target.clone().into(),
                r.database.clone().into(),
                r.table.clone().into(),
                r.alter.clone().into(),
                options.into(),
                r.state.as_str().into(),
                r.error.clone().into(),
                r.rows_copied.into(),
                r.rows_estimate.into(),
                r.cutover_attempts.into(),
                r.shadow_table.clone().into(),
                r.old_table.clone().into(),
                r.idempotency_key.clone().into(),
                r.request_fingerprint.clone().into(),
                r.interrupted.into(),
                db_time(r.created_at).into(),
                r.started_at.map(db_time).into(),
                r.finished_at.map(db_time).into(),
                db_time(SystemTime::now()).into(),
            ];
            conn.exec_drop(
                format!(
                    "INSERT INTO {} (id, target, database_name, table_name, alter_clause,
                       options_json, state, error, rows_copied, rows_estimate, cutover_attempts,
                       shadow_table, old_table, idempotency_key, request_fingerprint, interrupted,
                       created_at, started_at, finished_at, updated_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                     ON DUPLICATE KEY UPDATE options_json = VALUES(options_json),
                       state = VALUES(state), error = VALUES(error),
                       rows_copied = VALUES(rows_copied), rows_estimate = VALUES(rows_estimate),
                       cutover_attempts = VALUES(cutover_attempts),
                       shadow_table = VALUES(shadow_table), old_table = VALUES(old_table),
                       interrupted = VALUES(interrupted), started_at = VALUES(started_at),
                       finished_at = VALUES(finished_at), updated_at = VALUES(updated_at)",
                    self.table
                ),
                params,
            )
            .await
            .map_err(|e| self.err(e))
        })
        .await
    }

    /// The newest records of this target, oldest first.
    pub async fn load(&self) -> Result<Vec<Record>, StoreError> {
        self.bounded(async {
            let mut conn = self.pool.get_conn().await.map_err(|e| self.err(e))?;
            self.ensure(&mut conn).await?;
            let ts = |c: &str| format!("DATE_FORMAT({c}, '%Y-%m-%dT%H:%i:%s.%fZ')");
            let rows: Vec<Row> = conn
                .query(format!(
                    "SELECT id, target, database_name, table_name, alter_clause, options_json,
                       state, error, rows_copied, rows_estimate, cutover_attempts, shadow_table,
                       old_table, idempotency_key, request_fingerprint, interrupted, {}, {}, {}
                     FROM {} WHERE target = {} ORDER BY created_at DESC, id DESC LIMIT {LOAD_LIMIT}",
                    ts("created_at"),
                    ts("started_at"),
                    ts("finished_at"),
                    self.table,
                    // The target name was validated as [A-Za-z0-9_-]: safe to quote inline.
                    format_args!("'{}'", self.target),
                ))
                .await
                .map_err(|e| self.err(e))?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows.into_iter().rev() {
                out.push(self.decode(row)?);
            }
            Ok(out)
        })
        .await
    }

    fn decode(&self, mut row: Row) -> Result<Record, StoreError> {
        fn take<T: mysql_async::prelude::FromValue>(
            store: &Store,
            row: &mut Row,
            i: usize,
        ) -> Result<T, StoreError> {
            match row.take_opt::<T, usize>(i) {
                Some(Ok(v)) => Ok(v),
                Some(Err(e)) => Err(store.err(format!("unreadable column {i}: {e}"))),
                None => Err(store.err(format!("missing column {i}"))),
            }
        }
        let id: String = take(self, &mut row, 0)?;
        let state_text: String = take(self, &mut row, 6)?;
        let state = State::parse(&state_text)
            .ok_or_else(|| self.err(format!("record {id} has unknown state {state_text:?}")))?;
        let options_text: String = take(self, &mut row, 5)?;
        let options: MigrationOptions = serde_json::from_str(&options_text)
            .map_err(|e| self.err(format!("record {id} has unreadable options: {e}")))?;
        let time = |s: Option<String>| s.as_deref().and_then(parse_rfc3339);
        let created: String = take(self, &mut row, 16)?;
        Ok(Record {
            target: take(self, &mut row, 1)?,
            database: take(self, &mut row, 2)?,
            table: take(self, &mut row, 3)?,
            alter: take(self, &mut row, 4)?,
            options,
            state,
            error: take(self, &mut row, 7)?,
            rows_copied: take(self, &mut row, 8)?,
            rows_estimate: take(self, &mut row, 9)?,
            cutover_attempts: take(self, &mut row, 10)?,
            shadow_table: take(self, &mut row, 11)?,
            old_table: take(self, &mut row, 12)?,
            idempotency_key: take(self, &mut row, 13)?,
            request_fingerprint: take(self, &mut row, 14)?,
            interrupted: take(self, &mut row, 15)?,
            created_at: parse_rfc3339(&created).unwrap_or(SystemTime::UNIX_EPOCH),
            started_at: time(take(self, &mut row, 17)?),
            finished_at: time(take(self, &mut row, 18)?),
            id,
        })
    }

    /// Closes the pool's connections (at shutdown).
    pub async fn close(self) {
        let _ = self.pool.disconnect().await;
    }
}
