//! Concurrent writers through a whole migration, cut-over included: the final table must equal
//! an independent model of what the writers committed, and no writer may ever see the table
//! missing.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::Db;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Pool};
use shadowcut::migration::MigrationOptions;
use shadowcut::state::State;

/// A tiny deterministic PRNG so runs are reproducible per seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

type Model = BTreeMap<i64, (i64, String)>;

#[derive(Default)]
struct WriterReport {
    model: Model,
    commits: u64,
    errors: Vec<String>,
}

/// One writer owns keys [base, base + span): its model is exact whatever the interleaving.
async fn writer(
    pool: Pool,
    seed: u64,
    base: i64,
    span: i64,
    initial: Model,
    stop: Arc<AtomicBool>,
) -> WriterReport {
    let mut rng = Rng(seed);
    let mut report = WriterReport {
        model: initial,
        ..Default::default()
    };
    let mut conn: Conn = pool.get_conn().await.expect("writer connects");
    while !stop.load(Ordering::Relaxed) {
        let in_tx = rng.below(4) == 0;
        let ops = if in_tx { 1 + rng.below(4) } else { 1 };
        let mut pending = report.model.clone();
        let mut stmts: Vec<(String, Vec<mysql_async::Value>)> = Vec::new();
        for _ in 0..ops {
            let existing: Vec<i64> = pending.keys().copied().collect();
            let free = |rng: &mut Rng, m: &Model| loop {
                let id = base + rng.below(span as u64) as i64;
                if !m.contains_key(&id) {
                    break id;
                }
            };
            match rng.below(10) {
                0..=3 => {
                    let id = free(&mut rng, &pending);
                    let v = rng.below(1_000_000) as i64;
                    let p = format!("ins-{seed}-{v}-ü");
                    stmts.push((
                        "INSERT INTO app.t (id, v, payload) VALUES (?, ?, ?)".into(),
                        vec![id.into(), v.into(), p.clone().into()],
                    ));
                    pending.insert(id, (v, p));
                }
                4..=6 if !existing.is_empty() => {
                    let id = existing[rng.below(existing.len() as u64) as usize];
                    let v = rng.below(1_000_000) as i64;
                    let p = format!("upd-{seed}-{v}");
                    stmts.push((
                        "UPDATE app.t SET v = ?, payload = ? WHERE id = ?".into(),
                        vec![v.into(), p.clone().into(), id.into()],
                    ));
                    pending.insert(id, (v, p));
                }
                7 if !existing.is_empty() => {
                    let id = existing[rng.below(existing.len() as u64) as usize];
                    let new_id = free(&mut rng, &pending);
                    stmts.push((
                        "UPDATE app.t SET id = ? WHERE id = ?".into(),
                        vec![new_id.into(), id.into()],
                    ));
                    let row = pending.remove(&id).expect("row in model");
                    pending.insert(new_id, row);
                }
                8..=9 if !existing.is_empty() => {
                    let id = existing[rng.below(existing.len() as u64) as usize];
                    stmts.push(("DELETE FROM app.t WHERE id = ?".into(), vec![id.into()]));
                    pending.remove(&id);
                }
                _ => {}
            }
        }
        if stmts.is_empty() {
            continue;
        }
        let rollback = in_tx && rng.below(5) == 0;
        let result: Result<(), mysql_async::Error> = async {
            if in_tx {
                conn.query_drop("BEGIN").await?;
            }
            for (sql, params) in &stmts {
                conn.exec_drop(sql.as_str(), params.clone()).await?;
            }
            if in_tx {
                conn.query_drop(if rollback { "ROLLBACK" } else { "COMMIT" })
                    .await?;
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) if !rollback => {
                report.model = pending;
                report.commits += 1;
            }
            Ok(()) => {}
            Err(e) => {
                report.errors.push(e.to_string());
                if report.errors.len() > 20 {
                    break;
                }
                let _ = conn.query_drop("ROLLBACK").await;
            }
        }
    }
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_during_migration_and_cutover_lose_nothing() {
    let db = Db::start();
    db.exec("CREATE DATABASE app").await;
    db.exec("CREATE TABLE app.t (id BIGINT PRIMARY KEY, v BIGINT NOT NULL, payload VARCHAR(64) CHARACTER SET utf8mb4) ").await;
    const WRITERS: i64 = 4;
    const SPAN: i64 = 1_000_000;
    const INITIAL_PER_WRITER: i64 = 5_000;
    let mut initial: Vec<Model> = Vec::new();
    for w in 0..WRITERS {
        let base = w * SPAN;
        db.exec(&format!(
            "INSERT INTO app.t SELECT {base} + seq * 7, seq, CONCAT('init-', seq) FROM app.seq_1_to_{INITIAL_PER_WRITER}"
        ))
        .await;
        initial.push(
            (1..=INITIAL_PER_WRITER)
                .map(|s| (base + s * 7, (s, format!("init-{s}"))))
                .collect(),
        );
    }

    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for (w, model) in initial.into_iter().enumerate() {
        let pool = db.pool.clone();
        handles.push(tokio::spawn(writer(
            pool,
            0x9E37_79B9 + w as u64,
            w as i64 * SPAN,
            SPAN,
            model,
            stop.clone(),
        )));
    }

    let opts = MigrationOptions {
        chunk_size: 500,
        ..Default::default()
    };
    let migration = db.migrate("app", "t", "ADD COLUMN extra INT NOT NULL DEFAULT 5, MODIFY payload VARCHAR(100) CHARACTER SET utf8mb4", opts);
    let (r, progress) = tokio::time::timeout(Duration::from_secs(180), migration)
        .await
        .expect("migration finishes within 3 minutes");
    let outcome = r.expect("migration completes under concurrent writes");
    assert_eq!(progress.state(), State::Completed);
    // Keep writing a little after the swap: those writes must land in the new table.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);

    let mut model = Model::new();
    let mut commits = 0;
    for h in handles {
        let rep = h.await.expect("writer task");
        assert!(
            rep.errors.is_empty(),
            "writers saw errors: {:?}",
            rep.errors
        );
        commits += rep.commits;
        model.extend(rep.model);
    }
    assert!(
        commits > 100,
        "writers committed too little to prove anything: {commits}"
    );
    assert!(
        Progress::applied_total(&progress) > 0,
        "nothing was replayed"
    );

    let mut conn = db.conn().await;
    let rows: Vec<(i64, i64, String, i64)> = conn
        .query("SELECT id, v, payload, extra FROM app.t ORDER BY id")
        .await
        .unwrap();
    let actual: Model = rows
        .iter()
        .map(|(id, v, p, _)| (*id, (*v, p.clone())))
        .collect();
    assert_eq!(
        actual.len(),
        model.len(),
        "row count differs from the model"
    );
    let diffs: Vec<_> = model
        .iter()
        .filter(|(k, v)| actual.get(k) != Some(v))
        .take(5)
        .collect();
    assert!(
        diffs.is_empty(),
        "rows differ from the model, e.g. {diffs:?}"
    );
    assert!(rows.iter().all(|r| r.3 == 5));
    // Nothing but our own tables remain.
    let mut tables = db.tables("app").await;
    tables.sort();
    assert_eq!(
        tables,
        vec![
            outcome.old_table.clone().expect("old kept"),
            "t".to_string()
        ]
    );
}

use shadowcut::progress::{ChangeKind, Progress};
trait AppliedTotal {
    fn applied_total(p: &Arc<Progress>) -> u64;
}
impl AppliedTotal for Progress {
    fn applied_total(p: &Arc<Progress>) -> u64 {
        ChangeKind::ALL.iter().map(|k| p.applied(*k)).sum()
    }
}
