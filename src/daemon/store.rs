//! Migration history, kept in a table on each target (`_shadowcut.migrations` by default), so
//! that it survives a daemon restart and lives next to the data it describes.
//!
//! Invariants: a record holds everything needed to start the migration again (target, names,
//! ALTER clause, options as JSON) and, once its helper tables exist, its checkpoint (JSON of
//! [`Checkpoint`]: helper names, copy watermark, binlog position), so a daemon that stopped or
//! died resumes it from there; writes are idempotent upserts keyed by id, so saving the same
//! record twice is harmless; every call is bounded in time, and a store that cannot be reached
//! never blocks a migration (callers log and retry on the next save). A history table made by
//! an older version gets the newer columns added on first use.

use std::time::{Duration, SystemTime};

use mysql_async::prelude::Queryable;
use mysql_async::{OptsBuilder, Pool, PoolConstraints, PoolOpts, Row};
use tokio::sync::Mutex;

use super::model::{parse_rfc3339, rfc3339};
use crate::conn::ConnSettings;
use crate::migration::{Checkpoint, MigrationOptions};
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
    /// Where a resume continues; `None` until the helper tables and the binlog tail exist.
    pub checkpoint: Option<Checkpoint>,
    /// When `checkpoint` was taken.
    pub checkpoint_at: Option<SystemTime>,
    /// How often the daemon continued the migration after a stop or crash.
    pub resume_count: u32,
    pub resumed_at: Option<SystemTime>,
    /// Lost connections re-established, over every run of the migration.
    pub reconnects: u64,
    /// The operator gave the go for a postponed cut-over (survives a restart).
    pub cutover_requested: bool,
    /// The operator paused the copy (survives a restart).
    pub paused: bool,
    /// The failed or cancelled migration this one restarts from scratch.
    pub restarted_from: Option<String>,
}

/// Columns added after the first version, with their definitions: an older history table
/// gets them on first use.
const ADDED_COLUMNS: &[(&str, &str)] = &[
    ("checkpoint_json", "MEDIUMTEXT NULL"),
    ("checkpoint_at", "DATETIME(6) NULL"),
    ("resume_count", "INT UNSIGNED NOT NULL DEFAULT 0"),
    ("resumed_at", "DATETIME(6) NULL"),
    ("reconnects", "BIGINT UNSIGNED NOT NULL DEFAULT 0"),
    ("cutover_requested", "TINYINT(1) NOT NULL DEFAULT 0"),
    ("paused", "TINYINT(1) NOT NULL DEFAULT 0"),
    ("restarted_from", "VARCHAR(64) NULL"),
];

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
               {added},
               KEY by_table (database_name, table_name),
               KEY by_state (state)
             ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
            self.table,
            added = ADDED_COLUMNS
                .iter()
                .map(|(name, def)| format!("{name} {def}"))
                .collect::<Vec<_>>()
                .join(",\n               "),
        ))
        .await
        .map_err(|e| self.err(e))?;
        self.upgrade(conn).await?;
        *ready = true;
        Ok(())
    }

    /// Adds the columns a history table made by an older version lacks. Portable (no
    /// `ADD COLUMN IF NOT EXISTS`, which MySQL lacks): the missing ones are looked up first.
    async fn upgrade(&self, conn: &mut mysql_async::Conn) -> Result<(), StoreError> {
        let present: Vec<String> = conn
            .exec(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'migrations'",
                (&self.schema,),
            )
            .await
            .map_err(|e| self.err(e))?;
        for (name, def) in ADDED_COLUMNS {
            if present.iter().any(|p| p.eq_ignore_ascii_case(name)) {
                continue;
            }
            conn.query_drop(format!(
                "ALTER TABLE {} ADD COLUMN {name} {def}",
                self.table
            ))
            .await
            .map_err(|e| self.err(format!("adding column {name}: {e}")))?;
        }
        Ok(())
    }

    /// Inserts or updates `r`.
    pub async fn save(&self, r: &Record) -> Result<(), StoreError> {
        self.bounded(async {
            let mut conn = self.pool.get_conn().await.map_err(|e| self.err(e))?;
            self.ensure(&mut conn).await?;
            let options = serde_json::to_string(&r.options).map_err(|e| self.err(e))?;
            let checkpoint = r
                .checkpoint
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(|e| self.err(e))?;
            let columns: Vec<(&str, mysql_async::Value)> = vec![
                ("id", r.id.clone().into()),
                ("target", r.target.clone().into()),
                ("database_name", r.database.clone().into()),
                ("table_name", r.table.clone().into()),
                ("alter_clause", r.alter.clone().into()),
                ("options_json", options.into()),
                ("state", r.state.as_str().into()),
                ("error", r.error.clone().into()),
                ("rows_copied", r.rows_copied.into()),
                ("rows_estimate", r.rows_estimate.into()),
                ("cutover_attempts", r.cutover_attempts.into()),
                ("shadow_table", r.shadow_table.clone().into()),
                ("old_table", r.old_table.clone().into()),
                ("idempotency_key", r.idempotency_key.clone().into()),
                ("request_fingerprint", r.request_fingerprint.clone().into()),
                ("interrupted", r.interrupted.into()),
                ("created_at", db_time(r.created_at).into()),
                ("started_at", r.started_at.map(db_time).into()),
                ("finished_at", r.finished_at.map(db_time).into()),
                ("updated_at", db_time(SystemTime::now()).into()),
                ("checkpoint_json", checkpoint.into()),
                ("checkpoint_at", r.checkpoint_at.map(db_time).into()),
                ("resume_count", r.resume_count.into()),
                ("resumed_at", r.resumed_at.map(db_time).into()),
                ("reconnects", r.reconnects.into()),
                ("cutover_requested", r.cutover_requested.into()),
                ("paused", r.paused.into()),
                ("restarted_from", r.restarted_from.clone().into()),
            ];
            // What a request fixed at the start never changes; everything else is updated.
            const FIXED: &[&str] = &[
                "id",
                "target",
                "database_name",
                "table_name",
                "alter_clause",
                "idempotency_key",
                "request_fingerprint",
                "created_at",
                "restarted_from",
            ];
            let names: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
            let updates: Vec<String> = names
                .iter()
                .filter(|n| !FIXED.contains(n))
                .map(|n| format!("{n} = VALUES({n})"))
                .collect();
            let sql = format!(
                "INSERT INTO {} ({}) VALUES ({}) ON DUPLICATE KEY UPDATE {}",
                self.table,
                names.join(", "),
                vec!["?"; names.len()].join(", "),
                updates.join(", ")
            );
            let params: Vec<mysql_async::Value> = columns.into_iter().map(|(_, v)| v).collect();
            conn.exec_drop(sql, params).await.map_err(|e| self.err(e))
        })
        .await
    }

    /// The newest records of this target, oldest first.
    pub async fn load(&self) -> Result<Vec<Record>, StoreError> {
        self.bounded(async {
            let mut conn = self.pool.get_conn().await.map_err(|e| self.err(e))?;
            self.ensure(&mut conn).await?;
            let ts = |c: &str| format!("DATE_FORMAT({c}, '%Y-%m-%dT%H:%i:%s.%fZ') AS {c}");
            let rows: Vec<Row> = conn
                .query(format!(
                    "SELECT id, target, database_name, table_name, alter_clause, options_json,
                       state, error, rows_copied, rows_estimate, cutover_attempts, shadow_table,
                       old_table, idempotency_key, request_fingerprint, interrupted,
                       checkpoint_json, resume_count, reconnects, cutover_requested, paused,
                       restarted_from, {}, {}, {}, {}, {}
                     FROM {} WHERE target = {} ORDER BY created_at DESC, id DESC LIMIT {LOAD_LIMIT}",
                    ts("created_at"),
                    ts("started_at"),
                    ts("finished_at"),
                    ts("checkpoint_at"),
                    ts("resumed_at"),
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
            name: &str,
        ) -> Result<T, StoreError> {
            match row.take_opt::<T, &str>(name) {
                Some(Ok(v)) => Ok(v),
                Some(Err(e)) => Err(store.err(format!("unreadable column {name}: {e}"))),
                None => Err(store.err(format!("missing column {name}"))),
            }
        }
        let id: String = take(self, &mut row, "id")?;
        let state_text: String = take(self, &mut row, "state")?;
        let state = State::parse(&state_text)
            .ok_or_else(|| self.err(format!("record {id} has unknown state {state_text:?}")))?;
        let options_text: String = take(self, &mut row, "options_json")?;
        let options: MigrationOptions = serde_json::from_str(&options_text)
            .map_err(|e| self.err(format!("record {id} has unreadable options: {e}")))?;
        let checkpoint_text: Option<String> = take(self, &mut row, "checkpoint_json")?;
        let checkpoint = checkpoint_text
            .map(|t| serde_json::from_str::<Checkpoint>(&t))
            .transpose()
            .map_err(|e| self.err(format!("record {id} has an unreadable checkpoint: {e}")))?;
        let mut time = |name: &str| -> Result<Option<SystemTime>, StoreError> {
            let text: Option<String> = take(self, &mut row, name)?;
            Ok(text.as_deref().and_then(parse_rfc3339))
        };
        let created_at = time("created_at")?.unwrap_or(SystemTime::UNIX_EPOCH);
        let started_at = time("started_at")?;
        let finished_at = time("finished_at")?;
        let checkpoint_at = time("checkpoint_at")?;
        let resumed_at = time("resumed_at")?;
        Ok(Record {
            target: take(self, &mut row, "target")?,
            database: take(self, &mut row, "database_name")?,
            table: take(self, &mut row, "table_name")?,
            alter: take(self, &mut row, "alter_clause")?,
            options,
            state,
            error: take(self, &mut row, "error")?,
            rows_copied: take(self, &mut row, "rows_copied")?,
            rows_estimate: take(self, &mut row, "rows_estimate")?,
            cutover_attempts: take(self, &mut row, "cutover_attempts")?,
            shadow_table: take(self, &mut row, "shadow_table")?,
            old_table: take(self, &mut row, "old_table")?,
            idempotency_key: take(self, &mut row, "idempotency_key")?,
            request_fingerprint: take(self, &mut row, "request_fingerprint")?,
            interrupted: take(self, &mut row, "interrupted")?,
            created_at,
            started_at,
            finished_at,
            checkpoint,
            checkpoint_at,
            resume_count: take(self, &mut row, "resume_count")?,
            resumed_at,
            reconnects: take(self, &mut row, "reconnects")?,
            cutover_requested: take(self, &mut row, "cutover_requested")?,
            paused: take(self, &mut row, "paused")?,
            restarted_from: take(self, &mut row, "restarted_from")?,
            id,
        })
    }

    /// Closes the pool's connections (at shutdown).
    pub async fn close(self) {
        let _ = self.pool.disconnect().await;
    }
}
