//! Concurrent writers through a whole migration, cut-over included: the final table must equal
//! an independent model of what the writers committed, and no writer may ever see the table
//! missing.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::writers::{writer, Model};
use common::Db;
use mysql_async::prelude::Queryable;

use shadowcut::migration::MigrationOptions;
use shadowcut::state::State;

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
