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
use shadowcut::progress::{ChangeKind, Progress};
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
    assert!(progress.applied_total() > 0, "nothing was replayed");

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

/// One chunk spans the whole table, so it runs for a while: rows deleted ahead of it while it
/// runs must not be copied afterwards. A snapshot read copies them after their replayed delete
/// found nothing, and they survive in the new table; the chunk's share lock prevents that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_deleted_while_a_chunk_runs_stay_deleted() {
    let db = Db::start();
    const ROWS: u64 = 150_000;
    db.exec("CREATE DATABASE app").await;
    db.exec("CREATE TABLE app.t (id BIGINT PRIMARY KEY, v BIGINT NOT NULL, pad CHAR(200) NOT NULL DEFAULT '')").await;
    db.exec(&format!(
        "INSERT INTO app.t (id, v) SELECT seq, seq FROM app.seq_1_to_{ROWS}"
    ))
    .await;
    // Deletes random rows, mostly ahead of where a running chunk has got to.
    let stop = Arc::new(AtomicBool::new(false));
    let deleter = {
        let (pool, stop) = (db.pool.clone(), stop.clone());
        tokio::spawn(async move {
            let mut conn = pool.get_conn().await.expect("deleter connects");
            let mut deleted = std::collections::BTreeSet::new();
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let id = 1 + x % ROWS;
                conn.exec_drop("DELETE FROM app.t WHERE id = ?", (id,))
                    .await
                    .expect("delete");
                if conn.affected_rows() == 1 {
                    deleted.insert(id);
                }
            }
            deleted
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let opts = MigrationOptions {
        chunk_size: 2 * ROWS,
        ..Default::default()
    };
    let (r, _progress) = tokio::time::timeout(
        Duration::from_secs(180),
        db.migrate("app", "t", "ADD COLUMN extra INT NOT NULL DEFAULT 5", opts),
    )
    .await
    .expect("migration finishes within 3 minutes");
    r.expect("migration completes");
    stop.store(true, Ordering::Relaxed);
    let deleted = deleter.await.expect("deleter task");
    assert!(
        deleted.len() > 100,
        "too few deletes to prove anything: {}",
        deleted.len()
    );
    let ids: Vec<u64> = db
        .conn()
        .await
        .query("SELECT id FROM app.t WHERE id = v ORDER BY id")
        .await
        .unwrap();
    let back: Vec<_> = ids.iter().filter(|id| deleted.contains(id)).collect();
    assert!(
        back.is_empty(),
        "{} of {} deleted rows are back, e.g. {:?}",
        back.len(),
        deleted.len(),
        &back[..back.len().min(5)]
    );
    assert_eq!(ids.len() as u64, ROWS - deleted.len() as u64, "rows lost");
}

/// A light write load, one commit every few milliseconds and each alone in the binlog, is
/// applied in a few shadow transactions rather than one per commit, and every change arrives.
#[tokio::test]
async fn a_light_write_load_shares_replay_transactions() {
    let db = Db::start();
    common::seed_model_table(&db, 1_000).await;
    let (task, progress) = db
        .postponed("app", "t", "ADD COLUMN x INT NOT NULL DEFAULT 1")
        .await;
    let txns_before = Progress::get(&progress.replay_transactions);
    const COMMITS: u64 = 200;
    let started = std::time::Instant::now();
    let mut conn = db.conn().await;
    for id in 1..=COMMITS {
        conn.exec_drop("UPDATE app.t SET v = v + 1000 WHERE id = ?", (id,))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let spread = started.elapsed();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while progress.applied(ChangeKind::Update) < COMMITS {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {COMMITS} updates applied",
            progress.applied(ChangeKind::Update)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let txns = Progress::get(&progress.replay_transactions) - txns_before;
    // One per 50-ms window, and a few more for windows a commit straddles.
    let windows = spread.as_millis() as u64 / 50 + 1;
    assert!(
        (1..=2 * windows + 5).contains(&txns),
        "{COMMITS} commits over {spread:?} took {txns} replay transactions"
    );
    let source: Vec<(i64, i64)> = conn
        .query("SELECT id, v FROM app.t ORDER BY id")
        .await
        .unwrap();
    let shadow: Vec<(i64, i64)> = conn
        .query("SELECT id, v FROM app.`t~new` ORDER BY id")
        .await
        .unwrap();
    assert_eq!(source.len(), 1_000);
    assert_eq!(shadow, source, "the shadow table misses replayed updates");
    assert_eq!(progress.state(), State::Postponed);
    task.abort();
}
