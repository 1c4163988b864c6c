//! Round-trip harness for the type and key tests: every statement goes to the migrated table
//! `t` AND to a reference table `t_ref` with identical DDL that is never migrated. Afterwards the
//! columns they share must be byte-identical (HEX of each value), so both the copy path (rows
//! present before the migration) and the replay path (rows written while the migration waits
//! for its cut-over go, after the copy finished) are checked against what the server itself
//! stored for the same statements.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Row, Value};
use shadowcut::copy::CopyTuning;
use shadowcut::migration::{self, Controls, MigrationOptions, Outcome};
use shadowcut::progress::{NoObserver, Progress};
use shadowcut::state::State;
use shadowcut::throttle::Throttle;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::common::Db;

pub const DB: &str = "rt";
/// The migration adds a column, so the shadow table really is a different table and the shared
/// columns must match exactly.
pub const ALTER: &str = "ADD COLUMN zz_added INT NOT NULL DEFAULT 7";

pub struct Case {
    pub table: String,
    /// Column and key definitions, as between the parentheses of CREATE TABLE.
    pub ddl: String,
    /// Key columns: rows are ordered and joined by them.
    pub key: Vec<&'static str>,
    /// Statements run before the migration (copied rows). `{t}` stands for the table; a
    /// statement without `{t}` (SET, BEGIN, COMMIT) runs once on the writing session.
    pub before: Vec<String>,
    /// Statements run while the migration is postponed: the copy is over, so only the replay
    /// can bring them over.
    pub during: Vec<String>,
    /// `(query with {t}, expected first value)` checked on the migrated table: proves the
    /// statements stored what the test means, so equal-but-wrong cannot pass.
    pub expect: Vec<(String, Option<String>)>,
    /// Number of value tuples, for cases built by [`rows_case`].
    pub tuples: usize,
}

impl Case {
    pub fn new(table: &str, ddl: &str, key: &[&'static str]) -> Case {
        Case {
            table: table.to_string(),
            ddl: ddl.to_string(),
            key: key.to_vec(),
            before: Vec::new(),
            during: Vec::new(),
            expect: Vec::new(),
            tuples: 0,
        }
    }

    pub fn expect(mut self, query: &str, value: Option<&str>) -> Case {
        self.expect
            .push((query.to_string(), value.map(str::to_string)));
        self
    }

    /// Expects `value` from `query` (with `{id}`) on every row that holds tuple `i` at the end
    /// of a [`rows_case`]: the copied one, the copied-and-updated one, the replayed insert and
    /// the replayed insert-then-update.
    pub fn expect_tuple(mut self, i: usize, query: &str, value: Option<&str>) -> Case {
        let n = self.tuples;
        assert!(i < n, "tuple {i} of {n}");
        for id in [1 + i, 51 + (i + n - 1) % n, 101 + i, 151 + i] {
            self = self.expect(&query.replace("{id}", &id.to_string()), value);
        }
        self
    }
}

/// What a finished round trip saw.
pub struct Report {
    pub rows: usize,
    pub replayed: u64,
}

/// Runs statements against both tables on one session (so SET and transactions apply to both).
async fn apply(db: &Db, table: &str, stmts: &[String]) {
    let mut c = db.conn().await;
    for s in stmts {
        let targets = if s.contains("{t}") {
            vec![format!("{DB}.`{table}`"), format!("{DB}.`{table}_ref`")]
        } else {
            vec![String::new()]
        };
        for t in targets {
            let sql = s.replace("{t}", &t);
            c.query_drop(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }
}

fn text(v: Value) -> Option<String> {
    match v {
        Value::NULL => None,
        Value::Bytes(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        other => Some(format!("{other:?}")),
    }
}

/// The reference table's columns with their DATA_TYPE.
async fn columns(db: &Db, table: &str) -> Vec<(String, String)> {
    let mut c = db.conn().await;
    c.exec(
        "SELECT COLUMN_NAME, LOWER(DATA_TYPE) FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
        (DB, format!("{table}_ref")),
    )
    .await
    .unwrap()
}

/// Every row as HEX of each column's bytes. `CAST(.. AS BINARY)` gives the stored bytes of
/// strings and BIT, and the full-precision text of numbers and temporals (HEX of a number
/// alone would round DECIMAL and FLOAT to an integer).
async fn dump(
    db: &Db,
    table: &str,
    cols: &[(String, String)],
    key: &[&str],
) -> Vec<Vec<Option<String>>> {
    let select = cols
        .iter()
        .map(|(c, _)| format!("HEX(CAST(`{c}` AS BINARY))"))
        .collect::<Vec<_>>()
        .join(", ");
    let order = key
        .iter()
        .map(|k| format!("CAST(`{k}` AS BINARY)"))
        .collect::<Vec<_>>()
        .join(", ");
    let rows: Vec<Row> = db
        .rows(&format!(
            "SELECT {select} FROM {DB}.`{table}` ORDER BY {order}"
        ))
        .await;
    rows.into_iter()
        .map(|r| r.unwrap().into_iter().map(text).collect())
        .collect()
}

/// FLOAT/DOUBLE text may round; compare them as numbers too (`<=>`: NULL-safe).
async fn float_mismatches(db: &Db, table: &str, cols: &[(String, String)], key: &[&str]) -> u64 {
    let floats: Vec<&String> = cols
        .iter()
        .filter(|(_, ty)| ty == "float" || ty == "double")
        .map(|(c, _)| c)
        .collect();
    if floats.is_empty() {
        return 0;
    }
    let on = key
        .iter()
        .map(|k| format!("BINARY a.`{k}` = BINARY b.`{k}`"))
        .collect::<Vec<_>>()
        .join(" AND ");
    let differ = floats
        .iter()
        .map(|c| format!("NOT (a.`{c}` <=> b.`{c}`)"))
        .collect::<Vec<_>>()
        .join(" OR ");
    db.scalar_u64(&format!(
        "SELECT COUNT(*) FROM {DB}.`{table}` a JOIN {DB}.`{table}_ref` b ON {on} WHERE {differ}"
    ))
    .await
}

/// Creates both tables and runs `before`, then migrates `t` with a postponed cut-over, runs
/// `during` while postponed, and lets the cut-over go. Returns how the migration ended.
pub async fn migrate_with_writes(
    db: &Db,
    case: &Case,
) -> (shadowcut::Result<Outcome>, Arc<Progress>) {
    db.exec(&format!("CREATE DATABASE IF NOT EXISTS {DB}"))
        .await;
    for name in [case.table.clone(), format!("{}_ref", case.table)] {
        db.exec(&format!("CREATE TABLE {DB}.`{name}` ({})", case.ddl))
            .await;
    }
    apply(db, &case.table, &case.before).await;

    let options = MigrationOptions {
        chunk_size: 2,
        postpone_cutover: true,
        ..Default::default()
    };
    let spec = db.spec(DB, &case.table, ALTER, options);
    let (_tuning_tx, tuning) = watch::channel(CopyTuning {
        chunk_size: 2,
        nice_percent: 0,
    });
    let (go_tx, cutover_go) = watch::channel(false);
    let controls = Controls {
        cancel: CancellationToken::new(),
        shutdown: CancellationToken::new(),
        throttle: Throttle::new(),
        cutover_go,
        tuning,
    };
    let progress = Progress::new(Arc::new(NoObserver));
    let mut run = tokio::spawn(migration::run(spec, controls, progress.clone()));

    let started = Instant::now();
    while progress.state() != State::Postponed {
        if run.is_finished() {
            let r = (&mut run).await.expect("migration task");
            assert!(
                r.is_err(),
                "{}: completed without the cut-over go",
                case.table
            );
            return (r, progress);
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{}: not postponed after 60 s (state {:?})",
            case.table,
            progress.state()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    apply(db, &case.table, &case.during).await;
    go_tx.send_replace(true);
    let outcome = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap_or_else(|_| panic!("{}: migration did not finish", case.table))
        .expect("migration task");
    (outcome, progress)
}

/// [`migrate_with_writes`], then compares `t` with `t_ref` byte by byte and runs the expects.
pub async fn round_trip(db: &Db, case: &Case) -> Report {
    let (outcome, progress) = migrate_with_writes(db, case).await;
    if let Err(e) = outcome {
        panic!("{}: migration failed: {e}", case.table);
    }
    assert_eq!(progress.state(), State::Completed);

    let cols = columns(db, &case.table).await;
    let got = dump(db, &case.table, &cols, &case.key).await;
    let want = dump(db, &format!("{}_ref", case.table), &cols, &case.key).await;
    assert_eq!(got.len(), want.len(), "{}: row count", case.table);
    for (g, w) in got.iter().zip(&want) {
        for (i, (gv, wv)) in g.iter().zip(w).enumerate() {
            assert_eq!(
                gv, wv,
                "{}: column {} differs in row {w:?}",
                case.table, cols[i].0
            );
        }
    }
    assert_eq!(
        float_mismatches(db, &case.table, &cols, &case.key).await,
        0,
        "{}: FLOAT/DOUBLE values differ",
        case.table
    );
    let added = db
        .scalar_u64(&format!(
            "SELECT COUNT(*) FROM {DB}.`{}` WHERE zz_added = 7",
            case.table
        ))
        .await;
    assert_eq!(
        added as usize,
        got.len(),
        "{}: the ALTER was applied",
        case.table
    );
    for (query, value) in &case.expect {
        let sql = query.replace("{t}", &format!("{DB}.`{}`", case.table));
        let rows = db.rows(&sql).await;
        let first = rows
            .into_iter()
            .next()
            .and_then(|r| r.unwrap().into_iter().next())
            .and_then(text);
        assert_eq!(first.as_deref(), value.as_deref(), "{}: {sql}", case.table);
    }
    let replayed = progress.applied_total();
    Report {
        rows: got.len(),
        replayed,
    }
}

/// A case from value tuples: `rows[i]` holds SQL literals for `cols`; every tuple ends up in
/// the final table through each path, so each value is checked after each path:
/// - id `1 + i` holds tuple i, inserted before the migration (copy);
/// - id `51 + i` was copied with tuple i and updated to tuple `(i + 1) % n` while postponed;
/// - id `101 + i` was inserted with tuple i while postponed (replayed insert);
/// - id `151 + i` was inserted with tuple `(i + 1) % n` and updated to tuple i while postponed,
///   half of them in one multi-row statement;
/// - NULL transitions: id 99 copied with tuple 0 then set to all NULLs, id 100 inserted all
///   NULL, id 98 copied all NULL then set to tuple 0;
/// - deleted: id 97 (copied), id 96 (inserted and deleted), id 202 (inside a transaction that
///   also inserts id 201 with tuple `n - 1` and updates it to tuple `n / 2`).
pub fn rows_case(table: &str, ddl: &str, cols: &[&str], rows: &[&[&str]]) -> Case {
    let n = rows.len();
    assert!(
        n > 0 && n < 45,
        "{table}: ids are laid out for 1..45 tuples"
    );
    assert!(
        rows.iter().all(|r| r.len() == cols.len()),
        "{table}: tuple width"
    );
    let col_list = cols.join(", ");
    let tuple = |id: usize, r: &[&str]| format!("({id}, {})", r.join(", "));
    let insert = |values: &[String]| {
        format!(
            "INSERT INTO {{t}} (id, {col_list}) VALUES {}",
            values.join(", ")
        )
    };
    let nulls: Vec<&str> = cols.iter().map(|_| "NULL").collect();
    let update = |id: usize, r: &[&str]| {
        let set = cols
            .iter()
            .zip(r)
            .map(|(c, v)| format!("{c} = {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!("UPDATE {{t}} SET {set} WHERE id = {id}")
    };
    let mut case = Case::new(table, ddl, &["id"]);
    case.tuples = n;

    let mut copied: Vec<String> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| tuple(1 + i, r))
        .collect();
    copied.extend(rows.iter().enumerate().map(|(i, r)| tuple(51 + i, r)));
    copied.push(tuple(97, rows[0]));
    copied.push(tuple(98, &nulls));
    copied.push(tuple(99, rows[0]));
    case.before.push(insert(&copied));

    let d = &mut case.during;
    for (i, r) in rows.iter().enumerate() {
        d.push(insert(&[tuple(101 + i, r)]));
    }
    let shifted: Vec<String> = (0..n).map(|i| tuple(151 + i, rows[(i + 1) % n])).collect();
    d.push(insert(&shifted[..n / 2]));
    for s in &shifted[n / 2..] {
        d.push(insert(std::slice::from_ref(s)));
    }
    for i in 0..n {
        d.push(update(151 + i, rows[i]));
        d.push(update(51 + i, rows[(i + 1) % n]));
    }
    d.push(update(99, &nulls));
    d.push(insert(&[tuple(100, &nulls)]));
    d.push(update(98, rows[0]));
    d.push(insert(&[tuple(96, rows[n - 1])]));
    d.push("DELETE FROM {t} WHERE id IN (96, 97)".to_string());
    d.push("BEGIN".to_string());
    d.push(insert(&[tuple(201, rows[n - 1])]));
    d.push(update(201, rows[n / 2]));
    d.push(insert(&[tuple(202, rows[0])]));
    d.push("DELETE FROM {t} WHERE id = 202".to_string());
    d.push("COMMIT".to_string());
    case
}

/// Rows `rows_case` leaves for n tuples.
pub fn rows_case_count(n: usize) -> usize {
    4 * n + 4
}
