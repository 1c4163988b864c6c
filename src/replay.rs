//! Applies the tailed row changes to the shadow table, in commit order and idempotently.
//!
//! Inserts and updates become `REPLACE` of the full after image (so a row the copy has not
//! reached yet is simply created, and the copy's later `INSERT IGNORE` leaves it alone); a
//! key-changing update is a delete of the old key plus that upsert; deletes go by key.
//! Applying any suffix of the stream again converges to the same table, which is what makes
//! the copy/replay race and a resume from a checkpoint safe.
//!
//! Positions, heartbeats and markers are published only after the transaction that contains
//! everything before them committed: they never claim more than was applied.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::binlog::{BinlogPos, Item, RowChange};
use crate::conn::{ConnSettings, Session, READ_COMMITTED};
use crate::error::{DbContext, Error, Result, LOCK_RETRIES};
use crate::interlock::Interlock;
use crate::progress::{ChangeKind, Progress};
use crate::schema::{Column, TableSchema};
use crate::shadow::ShadowPlan;
use crate::sql::{column_list, qualified, quote_ident};

/// Rows applied in one shadow transaction at most.
const MAX_BATCH_ROWS: usize = 5000;
/// How long a batch waits for more changes after its first one. Without it a light write load
/// (a few hundred commits a second, each alone in the channel) costs one shadow transaction,
/// one fsync and one replicated transaction per application commit: as much commit work as
/// the application's own, on the primary and on every replica. Waiting a little lets one
/// transaction carry many and lets the fold cancel repeated writes to the same key. A marker
/// ends the wait at once, so the cut-over's drain never pays for it.
pub const COALESCE: Duration = Duration::from_millis(50);
/// Prepared statements allow 65,535 placeholders.
const MAX_PARAMS: usize = 60_000;

/// A charset or collation name spliced into SQL: information_schema names are plain words.
fn sql_word(kind: &str, column: &str, name: &str) -> Result<String> {
    if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(name.to_string())
    } else {
        Err(Error::refused(
            "charset",
            format!("column {column} has {kind} {name:?}"),
            "report this as a bug",
        ))
    }
}

/// The SQL expression that writes a decoded value into a column.
///
/// Text arrives as the column's raw bytes in the source charset. They are bound as a string
/// in the session charset (utf8mb4), which they need not be valid in (latin1 bytes above 0x7F),
/// so they are relabelled as the source charset without conversion, then the server converts
/// them to the target column's charset. `CAST(CAST(? AS BINARY) AS CHAR CHARACTER SET cs)`
/// relabels; `CONVERT(CAST(? AS BINARY) USING cs)` does NOT on MariaDB 10.11: it converts from
/// the parameter's utf8mb4, turning latin1 0xE9 into '?' or failing with ERROR 1300.
///
/// ENUM and SET arrive as member names (UTF-8, from information_schema) and are bound as
/// utf8mb4 text; an ENUM's empty error value arrives as the integer 0, which a strict session
/// refuses to store rather than mapping it to a member. INET4/INET6/UUID arrive as text.
/// Everything else is bound as the decoded value.
fn value_expr(source: &Column) -> Result<String> {
    match source.data_type.as_str() {
        "enum" | "set" => Ok("?".to_string()),
        _ => match source.charset.as_deref() {
            Some(cs) => Ok(format!(
                "CAST(CAST(? AS BINARY) AS CHAR CHARACTER SET {})",
                sql_word("charset", &source.name, cs)?
            )),
            None => Ok("?".to_string()),
        },
    }
}

/// The expression comparing a key column of the shadow table with a decoded source value. An
/// explicit COLLATE avoids "illegal mix of collations" and compares as the unique key does.
/// ENUM/SET compare with a bound name (or an ENUM index) as the column itself does.
fn key_expr(source: &Column, target: &Column) -> Result<String> {
    let value = value_expr(source)?;
    let text = source.charset.is_some() && !matches!(source.data_type.as_str(), "enum" | "set");
    match (&target.charset, &target.collation) {
        (Some(cs), Some(coll)) if text => Ok(format!(
            "{} = CONVERT({value} USING {}) COLLATE {}",
            quote_ident(&target.name),
            sql_word("charset", &target.name, cs)?,
            sql_word("collation", &target.name, coll)?
        )),
        // By the comparison rules a DECIMAL against a string compares as DOUBLE, and keys
        // differing past the 17th digit would all match. MariaDB 10.11 converts the bound
        // constant to the column's type first (the key tests pass without this), but the
        // explicit cast keeps the match exact whatever the optimizer does.
        _ if source.data_type == "decimal" => Ok(format!(
            "{} = CAST({value} AS {})",
            quote_ident(&target.name),
            decimal_type(source)?
        )),
        _ => Ok(format!("{} = {value}", quote_ident(&target.name))),
    }
}

/// `DECIMAL(p,s)` of a DECIMAL column, from its COLUMN_TYPE (`decimal(10,2) unsigned`).
fn decimal_type(col: &Column) -> Result<String> {
    let digits = col
        .column_type
        .split(['(', ')'])
        .nth(1)
        .filter(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit() || c == ','));
    match digits {
        Some(d) => Ok(format!("DECIMAL({d})")),
        None => Err(Error::refused(
            "column_type",
            format!(
                "cannot read the precision of column {} ({})",
                col.name, col.column_type
            ),
            "report this as a bug",
        )),
    }
}

/// Prebuilt SQL pieces for one shadow table.
struct Statements {
    upsert_prefix: String,
    row_values: String,
    delete_prefix: String,
    key_match: String,
    /// Source ordinal of each written column, in statement order.
    written: Vec<usize>,
    /// Source ordinal of each key column.
    key: Vec<usize>,
}

impl Statements {
    fn new(source: &TableSchema, plan: &ShadowPlan) -> Result<Statements> {
        let shadow = qualified(&source.database, &plan.names.shadow);
        let targets: Vec<&str> = plan.columns.iter().map(|c| c.target.as_str()).collect();
        let exprs = plan
            .columns
            .iter()
            .map(|c| value_expr(&source.columns[c.source_index]))
            .collect::<Result<Vec<_>>>()?;
        let mut key_parts = Vec::new();
        for (src_idx, target) in plan.key.source_index.iter().zip(&plan.key.target) {
            let target_col = plan.shadow_schema.column(target).ok_or_else(|| {
                Error::Cutover(format!("key column {target} missing in the shadow table"))
            })?;
            key_parts.push(key_expr(&source.columns[*src_idx], target_col)?);
        }
        Ok(Statements {
            upsert_prefix: format!("REPLACE INTO {shadow} ({}) VALUES ", column_list(&targets)),
            row_values: format!("({})", exprs.join(", ")),
            delete_prefix: format!("DELETE FROM {shadow} WHERE "),
            key_match: format!("({})", key_parts.join(" AND ")),
            written: plan.columns.iter().map(|c| c.source_index).collect(),
            key: plan.key.source_index.clone(),
        })
    }
}

enum Op<'a> {
    Upsert(&'a [Value]),
    Delete(&'a [Value]),
}

pub struct Replayer {
    session: Session,
    stmts: Statements,
    progress: Arc<Progress>,
    markers: watch::Sender<i64>,
    interlock: Interlock,
}

impl Replayer {
    pub async fn new(
        settings: &ConnSettings,
        reconnect_for: Duration,
        source: &TableSchema,
        plan: &ShadowPlan,
        progress: Arc<Progress>,
        markers: watch::Sender<i64>,
        interlock: Interlock,
    ) -> Result<Replayer> {
        // Fewer gap locks on the shadow table.
        let setup = vec![READ_COMMITTED.to_string()];
        let session =
            Session::open(settings, "replay", setup, reconnect_for, progress.clone()).await?;
        Ok(Replayer {
            session,
            stmts: Statements::new(source, plan)?,
            progress,
            markers,
            interlock,
        })
    }

    /// Applies items until the channel closes or `cancel` fires.
    pub fn spawn(
        mut self,
        mut rx: mpsc::Receiver<Item>,
        cancel: CancellationToken,
    ) -> JoinHandle<Result<()>> {
        tokio::spawn(async move {
            loop {
                let first = tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    item = rx.recv() => match item { Some(i) => i, None => return Ok(()) },
                };
                let deadline = tokio::time::Instant::now() + COALESCE;
                let mut urgent = matches!(first, Item::Marker { .. });
                let mut rows = item_rows(&first);
                let mut batch = vec![first];
                while rows < MAX_BATCH_ROWS && !urgent {
                    let item = match rx.try_recv() {
                        Ok(item) => item,
                        Err(mpsc::error::TryRecvError::Disconnected) => break,
                        Err(mpsc::error::TryRecvError::Empty) => tokio::select! {
                            _ = cancel.cancelled() => return Ok(()),
                            _ = tokio::time::sleep_until(deadline) => break,
                            item = rx.recv() => match item { Some(i) => i, None => break },
                        },
                    };
                    urgent = matches!(item, Item::Marker { .. });
                    rows += item_rows(&item);
                    batch.push(item);
                }
                self.apply(batch).await?;
            }
        })
    }

    async fn apply(&mut self, batch: Vec<Item>) -> Result<()> {
        let mut ops = Vec::new();
        let mut counts = [0u64; 3];
        let mut end: Option<BinlogPos> = None;
        let mut heartbeat = None;
        let mut marker = None;
        for item in &batch {
            match item {
                Item::Changes { changes, end: e } => {
                    for c in changes {
                        counts[c.kind as usize] += 1;
                        push_ops(&mut ops, c, &self.stmts.key);
                    }
                    if let Some(e) = e {
                        end = Some(e.clone());
                    }
                }
                Item::Heartbeat { micros, end: e } => {
                    heartbeat = Some(*micros);
                    end = Some(e.clone());
                }
                Item::Marker { token, end: e } => {
                    marker = Some(*token);
                    end = Some(e.clone());
                }
            }
        }
        let rows: u64 = counts.iter().sum();
        let ops = fold_by_key(ops, &self.stmts.key);
        if !ops.is_empty() {
            // Not while a chunk runs (see the interlock module); held across retries.
            let interlock = self.interlock.clone();
            let _serialized = interlock.replay().await;
            // A deadlock, or a lost connection, rolls the batch back whole; replaying it is
            // idempotent.
            let mut attempt = 0;
            loop {
                match self.apply_ops(&ops).await {
                    Ok(()) => break,
                    Err(e) if e.is_connection_lost() => self.session.lost(&e),
                    Err(e) if e.is_transient_lock() && attempt < LOCK_RETRIES => {
                        if let Ok(c) = self.session.conn().await {
                            let _ = c.query_drop("ROLLBACK").await;
                        }
                        attempt += 1;
                        debug!(attempt, "replay batch hit a deadlock; retrying");
                        tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
                    }
                    Err(e) => return Err(e),
                }
            }
            self.progress
                .replay_transactions
                .fetch_add(1, Ordering::Relaxed);
        }
        for kind in ChangeKind::ALL {
            self.progress.add_applied(kind, counts[kind as usize]);
        }
        self.progress.backlog_events.fetch_sub(
            rows.min(Progress::get(&self.progress.backlog_events)),
            Ordering::Relaxed,
        );
        if let Some(e) = end {
            self.progress.update(|s| s.applied_pos = Some(e));
        }
        if let Some(hb) = heartbeat {
            self.progress
                .heartbeat_applied_micros
                .store(hb, Ordering::Relaxed);
        }
        if let Some(token) = marker {
            self.markers.send_replace(token);
        }
        Ok(())
    }

    async fn apply_ops(&mut self, ops: &[Op<'_>]) -> Result<()> {
        self.session
            .conn()
            .await?
            .query_drop("BEGIN")
            .await
            .ctx(|| "replay: BEGIN".to_string())?;
        let mut i = 0;
        while i < ops.len() {
            let upsert = matches!(ops[i], Op::Upsert(_));
            let mut j = i;
            while j < ops.len() && matches!(ops[j], Op::Upsert(_)) == upsert {
                j += 1;
            }
            if upsert {
                self.upsert(&ops[i..j]).await?;
            } else {
                self.delete(&ops[i..j]).await?;
            }
            i = j;
        }
        self.session
            .conn()
            .await?
            .query_drop("COMMIT")
            .await
            .ctx(|| "replay: COMMIT".to_string())
    }

    async fn upsert(&mut self, ops: &[Op<'_>]) -> Result<()> {
        let per_stmt = (MAX_PARAMS / self.stmts.written.len().max(1)).clamp(1, 1000);
        for chunk in ops.chunks(per_stmt) {
            let mut sql = String::with_capacity(
                self.stmts.upsert_prefix.len() + chunk.len() * (self.stmts.row_values.len() + 2),
            );
            sql.push_str(&self.stmts.upsert_prefix);
            let mut params = Vec::with_capacity(chunk.len() * self.stmts.written.len());
            for (n, op) in chunk.iter().enumerate() {
                let Op::Upsert(row) = op else { continue };
                if n > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&self.stmts.row_values);
                params.extend(self.stmts.written.iter().map(|&i| row[i].clone()));
            }
            self.session
                .conn()
                .await?
                .exec_drop(sql, params)
                .await
                .ctx(|| "replaying inserts/updates into the shadow table".to_string())?;
        }
        Ok(())
    }

    async fn delete(&mut self, ops: &[Op<'_>]) -> Result<()> {
        let per_stmt = (MAX_PARAMS / self.stmts.key.len().max(1)).clamp(1, 1000);
        for chunk in ops.chunks(per_stmt) {
            let mut sql = self.stmts.delete_prefix.clone();
            let mut params = Vec::with_capacity(chunk.len() * self.stmts.key.len());
            for (n, op) in chunk.iter().enumerate() {
                let Op::Delete(row) = op else { continue };
                if n > 0 {
                    sql.push_str(" OR ");
                }
                sql.push_str(&self.stmts.key_match);
                params.extend(self.stmts.key.iter().map(|&i| row[i].clone()));
            }
            self.session
                .conn()
                .await?
                .exec_drop(sql, params)
                .await
                .ctx(|| "replaying deletes into the shadow table".to_string())?;
        }
        Ok(())
    }
}

fn item_rows(item: &Item) -> usize {
    match item {
        Item::Changes { changes, .. } => changes.len(),
        _ => 1,
    }
}

/// Keeps the last operation per key and orders deletes before upserts: the batch then takes
/// two statements instead of one per row change, which is what lets the replay keep up with
/// writers that saturate the server.
///
/// Why this reaches the same table as applying every change in order: keys are the exact
/// bytes of the row images, and a row changes its key bytes only through a delete of the old
/// form plus an upsert of the new one. So for every row, each key form it has left ends in a
/// delete and the form it ends in (if any) ends in an upsert. Deleting first and upserting
/// after leaves exactly the final forms, also when two forms are equal under the key's
/// collation ('a' and 'A'), and deletes free unique values before upserts need them.
fn fold_by_key<'a>(ops: Vec<Op<'a>>, key: &[usize]) -> Vec<Op<'a>> {
    use std::collections::HashMap;
    let key_of = |row: &[Value]| -> Vec<u8> {
        let mut k = Vec::new();
        for &i in key {
            // Length-prefixed SQL text of each value: unambiguous across types and values.
            let part = row[i].as_sql(true);
            k.extend_from_slice(&(part.len() as u32).to_le_bytes());
            k.extend_from_slice(part.as_bytes());
        }
        k
    };
    let mut last: HashMap<Vec<u8>, usize> = HashMap::with_capacity(ops.len());
    for (n, op) in ops.iter().enumerate() {
        let row = match op {
            Op::Upsert(r) | Op::Delete(r) => r,
        };
        last.insert(key_of(row), n);
    }
    let mut keep: Vec<usize> = last.into_values().collect();
    keep.sort_unstable();
    let mut slots: Vec<Option<Op<'a>>> = ops.into_iter().map(Some).collect();
    let (mut deletes, mut upserts) = (Vec::new(), Vec::new());
    for n in keep {
        match slots[n].take() {
            Some(op @ Op::Delete(_)) => deletes.push(op),
            Some(op @ Op::Upsert(_)) => upserts.push(op),
            None => {}
        }
    }
    deletes.extend(upserts);
    deletes
}

fn push_ops<'a>(ops: &mut Vec<Op<'a>>, c: &'a RowChange, key: &[usize]) {
    match (c.kind, &c.before, &c.after) {
        (ChangeKind::Insert, _, Some(after)) => ops.push(Op::Upsert(after)),
        (ChangeKind::Delete, Some(before), _) => ops.push(Op::Delete(before)),
        (ChangeKind::Update, Some(before), Some(after)) => {
            if key.iter().any(|&i| before[i] != after[i]) {
                ops.push(Op::Delete(before));
            }
            ops.push(Op::Upsert(after));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(data_type: &str, column_type: &str, charset: Option<&str>) -> Column {
        Column {
            name: "c".into(),
            data_type: data_type.into(),
            column_type: column_type.into(),
            unsigned: false,
            charset: charset.map(str::to_string),
            collation: charset.map(|cs| format!("{cs}_bin")),
            nullable: false,
            generated: false,
            members: Vec::new(),
        }
    }

    #[test]
    fn value_and_key_expressions_per_type() {
        let latin = col("varchar", "varchar(10)", Some("latin1"));
        assert_eq!(
            value_expr(&latin).unwrap(),
            "CAST(CAST(? AS BINARY) AS CHAR CHARACTER SET latin1)"
        );
        assert_eq!(
            key_expr(&latin, &latin).unwrap(),
            "`c` = CONVERT(CAST(CAST(? AS BINARY) AS CHAR CHARACTER SET latin1) USING latin1) \
             COLLATE latin1_bin"
        );
        let e = col("enum", "enum('a')", Some("utf8mb4"));
        assert_eq!(value_expr(&e).unwrap(), "?");
        assert_eq!(key_expr(&e, &e).unwrap(), "`c` = ?");
        let d = col("decimal", "decimal(65,30) unsigned", None);
        assert_eq!(value_expr(&d).unwrap(), "?");
        assert_eq!(key_expr(&d, &d).unwrap(), "`c` = CAST(? AS DECIMAL(65,30))");
        assert!(key_expr(&col("decimal", "decimal", None), &d).is_err());
        let bad = col("varchar", "varchar(1)", Some("x; DROP"));
        assert!(value_expr(&bad).is_err());
    }

    /// Applies ops to a model table (key = column 0) the way the server would.
    fn apply_model(ops: &[Op<'_>], table: &mut std::collections::BTreeMap<String, i64>) {
        for op in ops {
            match op {
                Op::Upsert(r) => {
                    let k = format!("{:?}", r[0]).to_lowercase(); // a case-insensitive key
                    let v = match r[1] {
                        Value::Int(v) => v,
                        _ => 0,
                    };
                    table.insert(k, v);
                }
                Op::Delete(r) => {
                    table.remove(&format!("{:?}", r[0]).to_lowercase());
                }
            }
        }
    }

    #[test]
    fn folding_by_key_reaches_the_same_table() {
        let row = |k: &str, v: i64| vec![Value::Bytes(k.as_bytes().to_vec()), Value::Int(v)];
        // insert a; a -> A (key change); update A; insert b; delete b; insert c; c -> C -> c.
        let rows = [
            row("a", 1),
            row("a", 1),
            row("A", 1),
            row("A", 2),
            row("b", 3),
            row("b", 3),
            row("c", 4),
            row("c", 4),
            row("C", 4),
            row("C", 4),
            row("c", 5),
        ];
        let ops = vec![
            Op::Upsert(&rows[0]),
            Op::Delete(&rows[1]),
            Op::Upsert(&rows[2]),
            Op::Upsert(&rows[3]),
            Op::Upsert(&rows[4]),
            Op::Delete(&rows[5]),
            Op::Upsert(&rows[6]),
            Op::Delete(&rows[7]),
            Op::Upsert(&rows[8]),
            Op::Delete(&rows[9]),
            Op::Upsert(&rows[10]),
        ];
        let mut in_order = std::collections::BTreeMap::new();
        apply_model(&ops, &mut in_order);
        let folded = fold_by_key(ops, &[0]);
        assert!(folded.len() < 11);
        // Deletes come first.
        let first_upsert = folded
            .iter()
            .position(|o| matches!(o, Op::Upsert(_)))
            .unwrap();
        assert!(folded[first_upsert..]
            .iter()
            .all(|o| matches!(o, Op::Upsert(_))));
        let mut by_fold = std::collections::BTreeMap::new();
        apply_model(&folded, &mut by_fold);
        assert_eq!(by_fold, in_order);
    }
}
