//! Copies the existing rows into the shadow table in chunks ordered by the shared key.
//!
//! Each chunk is one `INSERT IGNORE ... SELECT` over a key range (lo, hi]. The range end is found
//! in the index first, and the copy stops at the largest key that existed when it started:
//! rows inserted later are in the binlog, which the replay applies. A row the replay already
//! wrote is left alone by `IGNORE`. Any other warning (a value that does not fit the new
//! column, a duplicate on a new unique key) fails the migration instead of losing data.
//!
//! The chunk reads the source without locking it (the application never waits on the copy),
//! from a snapshot taken when its statement starts; the [`Interlock`] keeps the replay from
//! committing while a chunk runs, which is what makes that snapshot safe. After a lost
//! connection the orphaned statement is ended on the server before anything else happens.
//!
//! Invariant: `copy_watermark` in the progress is the upper key of the last committed chunk:
//! every source row at or below it has been copied. Throttling and cancellation are honoured
//! between chunks.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Row, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::conn::{ConnSettings, Session, READ_COMMITTED};
use crate::error::{DbContext, Error, Result, LOCK_RETRIES};
use crate::interlock::Interlock;
use crate::progress::Progress;
use crate::schema::TableSchema;
use crate::shadow::ShadowPlan;
use crate::sql::{column_list, key_after, key_bound_params, qualified, quote_ident};
use crate::throttle::Throttle;

/// Live-tunable copy settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyTuning {
    pub chunk_size: u64,
    /// Pause after each chunk, in percent of the chunk's duration.
    pub nice_percent: u32,
}

impl From<&crate::migration::MigrationOptions> for CopyTuning {
    fn from(o: &crate::migration::MigrationOptions) -> CopyTuning {
        CopyTuning {
            chunk_size: o.chunk_size,
            nice_percent: o.nice_percent,
        }
    }
}

pub struct Copier {
    session: Session,
    source: String,
    key_cols: Vec<String>,
    force_index: String,
    insert_prefix: String,
    select_list: String,
    interlock: Interlock,
    /// Name of the shadow's key that the shared key maps to: duplicates on it are expected.
    shadow_key_name: String,
    progress: Arc<Progress>,
}

impl Copier {
    pub async fn new(
        settings: &ConnSettings,
        reconnect_for: Duration,
        source: &TableSchema,
        plan: &ShadowPlan,
        progress: Arc<Progress>,
        interlock: Interlock,
    ) -> Result<Copier> {
        // A non-locking read of the source: the application's row locks are not touched.
        let setup = vec![READ_COMMITTED.to_string()];
        let session =
            Session::open(settings, "copy", setup, reconnect_for, progress.clone()).await?;
        let sources: Vec<&str> = plan.columns.iter().map(|c| c.source.as_str()).collect();
        let targets: Vec<&str> = plan.columns.iter().map(|c| c.target.as_str()).collect();
        let shadow_key_name = plan
            .shadow_schema
            .unique_keys
            .iter()
            .find(|k| {
                k.columns.len() == plan.key.target.len()
                    && k.columns
                        .iter()
                        .all(|c| plan.key.target.iter().any(|t| t.eq_ignore_ascii_case(c)))
            })
            .map(|k| k.name.clone())
            .unwrap_or_else(|| "PRIMARY".to_string());
        Ok(Copier {
            session,
            source: qualified(&source.database, &source.name),
            key_cols: plan.key.source.clone(),
            force_index: quote_ident(&plan.key.index_name),
            insert_prefix: format!(
                "INSERT IGNORE INTO {} ({})",
                qualified(&source.database, &plan.names.shadow),
                column_list(&targets)
            ),
            select_list: column_list(&sources),
            interlock,
            shadow_key_name,
            progress,
        })
    }

    fn order_by(&self) -> String {
        column_list(&self.key_cols)
    }

    /// The largest key now, or `None` for an empty table.
    async fn max_key(&mut self) -> Result<Option<Vec<Value>>> {
        let order = self
            .key_cols
            .iter()
            .map(|c| format!("{} DESC", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {} FROM {} FORCE INDEX ({}) ORDER BY {order} LIMIT 1",
            self.order_by(),
            self.source,
            self.force_index
        );
        let row: Option<Row> = self
            .session
            .conn()
            .await?
            .query_first(sql)
            .await
            .ctx(|| "finding the copy's end key".to_string())?;
        Ok(row.map(Row::unwrap))
    }

    /// The key `chunk` rows after `lo` (exclusive) and not past `end`, or `None` if fewer rows
    /// remain. Bounds are compared by the server: only it knows the key's collation order.
    async fn chunk_end(
        &mut self,
        lo: Option<&[Value]>,
        end: &[Value],
        chunk: u64,
    ) -> Result<Option<Vec<Value>>> {
        let mut conds = vec![key_after(&self.key_cols, true, false)];
        let mut params = key_bound_params(end);
        if let Some(lo) = lo {
            conds.push(key_after(&self.key_cols, false, true));
            params.extend(key_bound_params(lo));
        }
        let sql = format!(
            "SELECT {} FROM {} FORCE INDEX ({}) WHERE {} ORDER BY {} LIMIT 1 OFFSET {}",
            self.order_by(),
            self.source,
            self.force_index,
            conds.join(" AND "),
            self.order_by(),
            chunk.saturating_sub(1)
        );
        let row: Option<Row> = self
            .session
            .conn()
            .await?
            .exec_first(sql, params)
            .await
            .ctx(|| "finding a chunk boundary".to_string())?;
        Ok(row.map(Row::unwrap))
    }

    /// Copies (lo, hi] and returns the rows inserted.
    async fn copy_range(&mut self, lo: Option<&[Value]>, hi: &[Value]) -> Result<u64> {
        let mut conds = Vec::new();
        let mut params = Vec::new();
        if let Some(lo) = lo {
            conds.push(key_after(&self.key_cols, false, true));
            params.extend(key_bound_params(lo));
        }
        conds.push(key_after(&self.key_cols, true, false));
        params.extend(key_bound_params(hi));
        let sql = format!(
            "{} SELECT {} FROM {} FORCE INDEX ({}) WHERE {}",
            self.insert_prefix,
            self.select_list,
            self.source,
            self.force_index,
            conds.join(" AND ")
        );
        let conn = self.session.conn().await?;
        conn.exec_drop(&sql, params)
            .await
            .ctx(|| "copying a chunk".to_string())?;
        let (inserted, warnings) = (conn.affected_rows(), conn.get_warnings());
        if warnings > 0 {
            self.check_warnings().await?;
        }
        Ok(inserted)
    }

    /// Fails on any warning but a duplicate on the shared key (a row the replay wrote first).
    async fn check_warnings(&mut self) -> Result<()> {
        let warnings: Vec<(String, u32, String)> = self
            .session
            .conn()
            .await?
            .query("SHOW WARNINGS")
            .await
            .ctx(|| "reading copy warnings".to_string())?;
        let key = &self.shadow_key_name;
        for (_, code, message) in warnings {
            let expected_dup = code == 1062
                && (message.ends_with(&format!("for key '{key}'"))
                    || message.ends_with(&format!(".{key}'")));
            if !expected_dup {
                return Err(Error::refused(
                    "copy_warning",
                    format!("copying rows into the new table raised warning {code}: {message}"),
                    "the data does not fit the new schema; fix the data or the ALTER and start again",
                ));
            }
        }
        Ok(())
    }

    /// Finds the next chunk's end and copies it: `(hi, last, rows inserted)`.
    async fn chunk(
        &mut self,
        lo: Option<&[Value]>,
        end: &[Value],
        chunk: u64,
    ) -> Result<(Vec<Value>, bool, u64)> {
        let (hi, last) = match self.chunk_end(lo, end, chunk).await? {
            Some(hi) => (hi, false),
            None => (end.to_vec(), true),
        };
        let inserted = self.copy_range(lo, &hi).await?;
        Ok((hi, last, inserted))
    }

    /// Ends chunk statements of a lost session that the server is still running (it notices a
    /// closed connection only when it next writes to it). They are ours: nothing else writes
    /// `INSERT IGNORE INTO <shadow>`. A server restart has ended them already.
    async fn end_orphans(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let prefix_chars = self.insert_prefix.chars().count() as u64;
        loop {
            let found: Result<Vec<u64>> = async {
                self.session
                    .conn()
                    .await?
                    .exec(
                        "SELECT ID FROM information_schema.PROCESSLIST \
                         WHERE ID <> CONNECTION_ID() AND LEFT(INFO, ?) = ?",
                        (prefix_chars, self.insert_prefix.as_str()),
                    )
                    .await
                    .ctx(|| "looking for an orphaned chunk statement".to_string())
            }
            .await;
            let ids = match found {
                Ok(ids) => ids,
                Err(e) if e.is_connection_lost() => {
                    self.session.lost(&e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if ids.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Binlog(format!(
                    "an orphaned copy statement (session {ids:?}) is still running after a \
                     reconnect; kill it by hand and resume the migration"
                )));
            }
            for id in ids {
                debug!(id, "ending an orphaned chunk statement");
                if let Ok(c) = self.session.conn().await {
                    let _ = c.query_drop(format!("KILL QUERY {id}")).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Copies from `start_after` (exclusive; `None` from the beginning) to the end.
    pub async fn run(
        &mut self,
        start_after: Option<Vec<Value>>,
        tuning: watch::Receiver<CopyTuning>,
        throttle: &Throttle,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let end = loop {
            match self.max_key().await {
                Ok(end) => break end,
                Err(e) if e.is_connection_lost() => self.session.lost(&e),
                Err(e) => return Err(e),
            }
        };
        let Some(end) = end else {
            return Ok(());
        };
        let mut lo = start_after;
        loop {
            throttle.wait_clear(cancel).await?;
            if cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let CopyTuning {
                chunk_size,
                nice_percent,
            } = *tuning.borrow();
            let chunk = chunk_size.max(1);
            self.progress.chunk_size.store(chunk, Ordering::Relaxed);
            let started = Instant::now();
            // A chunk is idempotent: after a deadlock or a lost connection, run it again.
            let interlock = self.interlock.clone();
            let serialized = interlock.chunk().await;
            let mut deadlocks = 0;
            let (hi, last, inserted) = loop {
                match self.chunk(lo.as_deref(), &end, chunk).await {
                    Ok(done) => break done,
                    Err(e) if e.is_connection_lost() => {
                        self.session.lost(&e);
                        // The server may still be running the statement: it must not commit
                        // once the interlock is released.
                        self.end_orphans().await?;
                    }
                    Err(e) if e.is_transient_lock() && deadlocks < LOCK_RETRIES => {
                        deadlocks += 1;
                        debug!(deadlocks, "copy chunk hit a deadlock; retrying");
                        tokio::time::sleep(Duration::from_millis(5 * u64::from(deadlocks))).await;
                    }
                    Err(e) => return Err(e),
                }
            };
            self.progress
                .rows_copied
                .fetch_add(inserted, Ordering::Relaxed);
            self.progress
                .observer()
                .chunk_copied(inserted, started.elapsed());
            debug!(
                rows = inserted,
                took_ms = started.elapsed().as_millis() as u64,
                "chunk copied"
            );
            self.progress
                .update(|s| s.copy_watermark = Some(hi.clone()));
            // Released only now: whoever takes the interlock next sees the new watermark.
            drop(serialized);
            if last {
                return Ok(());
            }
            lo = Some(hi);
            let pause = started.elapsed() * nice_percent / 100;
            if !pause.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = cancel.cancelled() => return Err(Error::Cancelled),
                }
            }
        }
    }
}
