//! Cut-over under contention: a long transaction holds the table. Each attempt gives up after
//! the lock timeout, releasing everything (writers wait no longer than that), the status names
//! the blocking session, and the migration completes once the lock is gone; optionally the
//! blocker is killed; or the migration goes back to postponed.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Db;
use mysql_async::prelude::Queryable;
use shadowcut::migration::{self, Controls, CutoverGiveUp, MigrationOptions};
use shadowcut::progress::{NoObserver, Progress};
use shadowcut::state::State;
use tokio::sync::watch;

struct Run {
    progress: Arc<Progress>,
    task: tokio::task::JoinHandle<shadowcut::Result<migration::Outcome>>,
    go: watch::Sender<bool>,
}

async fn postponed(db: &Db, opts: MigrationOptions) -> Run {
    db.exec("CREATE DATABASE IF NOT EXISTS app").await;
    db.exec("CREATE TABLE app.t (id INT PRIMARY KEY AUTO_INCREMENT, v INT NOT NULL)")
        .await;
    db.exec("INSERT INTO app.t (v) SELECT seq FROM app.seq_1_to_2000")
        .await;
    let spec = db.spec(
        "app",
        "t",
        "ADD COLUMN x INT NOT NULL DEFAULT 0",
        MigrationOptions {
            postpone_cutover: true,
            ..opts
        },
    );
    let (mut controls, _t) = Controls::unattended(&spec.options);
    let (go, rx) = watch::channel(false);
    controls.cutover_go = rx;
    let progress = Progress::new(Arc::new(NoObserver));
    let task = tokio::spawn(migration::run(spec, controls, progress.clone()));
    while progress.state() != State::Postponed {
        assert!(!task.is_finished(), "{:?}", progress.status().error);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Run { progress, task, go }
}

/// A writer inserting in a loop; returns the longest single insert in milliseconds.
fn writer(
    db: &Db,
    stop: Arc<AtomicBool>,
) -> (tokio::task::JoinHandle<Vec<String>>, Arc<AtomicU64>) {
    let max = Arc::new(AtomicU64::new(0));
    let pool = db.pool.clone();
    let m = max.clone();
    let h = tokio::spawn(async move {
        let mut errors = Vec::new();
        let mut c = pool.get_conn().await.unwrap();
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            if let Err(e) = c.query_drop("INSERT INTO app.t (v) VALUES (1)").await {
                errors.push(e.to_string());
            }
            m.fetch_max(t.elapsed().as_millis() as u64, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        errors
    });
    (h, max)
}

/// Opens a transaction that holds the table's metadata lock; returns the session and its id.
async fn hold_table(db: &Db) -> (mysql_async::Conn, u64) {
    let mut c = db.pool.get_conn().await.unwrap();
    let id: u64 = c
        .query_first("SELECT CONNECTION_ID()")
        .await
        .unwrap()
        .unwrap();
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("SELECT COUNT(*) FROM app.t").await.unwrap();
    (c, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_transaction_blocks_then_releases_the_cutover() {
    let db = Db::start();
    let opts = MigrationOptions {
        cutover_lock_timeout_secs: 1,
        cutover_attempts: 30,
        ..Default::default()
    };
    let run = postponed(&db, opts).await;
    let (mut holder, holder_id) = hold_table(&db).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (w, max_stall) = writer(&db, stop.clone());
    run.go.send_replace(true);

    // Attempts fail while the transaction is open; the status names it.
    let t = Instant::now();
    while !run
        .progress
        .status()
        .cutover_blockers
        .iter()
        .any(|b| b.id == holder_id)
    {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "blocker never reported: {:?}",
            run.progress.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let blocker = run
        .progress
        .status()
        .cutover_blockers
        .into_iter()
        .find(|b| b.id == holder_id)
        .unwrap();
    assert_eq!(blocker.user, "root");
    assert!(Progress::get(&run.progress.cutover_attempts) >= 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(run.progress.state(), State::CuttingOver);
    holder.query_drop("COMMIT").await.unwrap();

    let outcome = tokio::time::timeout(Duration::from_secs(60), run.task)
        .await
        .unwrap()
        .unwrap();
    assert!(outcome.is_ok(), "{outcome:?}");
    stop.store(true, Ordering::Relaxed);
    let errors = w.await.unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    let stall = max_stall.load(Ordering::Relaxed);
    println!("longest writer stall during contended cut-over: {stall} ms (lock timeout 1000 ms)");
    // One attempt's lock wait plus the hand-over; never the sum of all attempts.
    assert!(stall < 2_500, "writers stalled {stall} ms");
    assert!(run.progress.status().cutover_blockers.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blockers_are_killed_when_asked() {
    let db = Db::start();
    let opts = MigrationOptions {
        cutover_lock_timeout_secs: 3,
        kill_blockers_after_secs: Some(1),
        ..Default::default()
    };
    let run = postponed(&db, opts).await;
    let (mut holder, holder_id) = hold_table(&db).await;
    run.go.send_replace(true);
    let outcome = tokio::time::timeout(Duration::from_secs(60), run.task)
        .await
        .unwrap()
        .unwrap();
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(
        Progress::get(&run.progress.cutover_attempts),
        1,
        "the first attempt succeeds after the kill"
    );
    assert!(
        holder.query_drop("COMMIT").await.is_err(),
        "the blocker {holder_id} was not killed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn giving_up_returns_to_postponed() {
    let db = Db::start();
    let opts = MigrationOptions {
        cutover_lock_timeout_secs: 1,
        cutover_attempts: 1,
        cutover_give_up: CutoverGiveUp::Postpone,
        ..Default::default()
    };
    let run = postponed(&db, opts).await;
    let (mut holder, _) = hold_table(&db).await;
    run.go.send_replace(true);
    let t = Instant::now();
    while !(run.progress.state() == State::Postponed
        && Progress::get(&run.progress.cutover_attempts) >= 1)
    {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{:?}",
            run.progress.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(run
        .progress
        .status()
        .error
        .unwrap_or_default()
        .contains("timed out"));
    holder.query_drop("COMMIT").await.unwrap();
    run.go.send_replace(true);
    let outcome = tokio::time::timeout(Duration::from_secs(60), run.task)
        .await
        .unwrap()
        .unwrap();
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(run.progress.state(), State::Completed);
}
