//! Lost connections and a server restart in the middle of a migration are survived: the
//! migration reconnects, continues from the last applied position, and loses nothing.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::writers::{writer, Model};
use common::Db;
use mysql_async::prelude::Queryable;
use shadowcut::migration::{self, Controls, MigrationOptions};
use shadowcut::progress::{NoObserver, Progress};
use shadowcut::state::State;

const ROWS: i64 = 40_000;

async fn seeded(db: &Db) -> Model {
    common::seed_model_table(db, ROWS).await
}

async fn check_table(db: &Db, model: &Model) {
    let mut conn = db.conn().await;
    let rows: Vec<(i64, i64, String)> = conn
        .query("SELECT id, v, payload FROM app.t ORDER BY id")
        .await
        .unwrap();
    let actual: Model = rows.into_iter().map(|(id, v, p)| (id, (v, p))).collect();
    assert_eq!(actual.len(), model.len());
    assert!(
        &actual == model,
        "the table differs from the writers' model"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_are_reestablished() {
    let db = Db::start();
    let initial = seeded(&db).await;
    let stop = Arc::new(AtomicBool::new(false));
    // The writer runs on its own pool so the KILLs below can spare it by user.
    db.exec("CREATE USER app@'127.0.0.1'").await;
    db.exec("GRANT ALL ON *.* TO app@'127.0.0.1'").await;
    let app_pool =
        mysql_async::Pool::new(format!("mysql://app@127.0.0.1:{}/", db.sandbox.port()).as_str());
    let w = tokio::spawn(writer(app_pool, 11, 0, 10 * ROWS, initial, stop.clone()));

    let spec = db.spec(
        "app",
        "t",
        "ADD COLUMN extra INT NOT NULL DEFAULT 1",
        MigrationOptions {
            chunk_size: 200,
            ..Default::default()
        },
    );
    let (controls, _t) = Controls::unattended(&spec.options);
    let progress = Progress::new(Arc::new(NoObserver));
    let task = tokio::spawn(migration::run(spec, controls, progress.clone()));
    for threshold in [ROWS as u64 / 4, ROWS as u64 / 2] {
        while Progress::get(&progress.rows_copied) < threshold {
            assert!(!task.is_finished(), "{:?}", progress.status().error);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Kill every session of the migration (root), binlog dump included, once they are up.
        let mut c = db.conn().await;
        let t = std::time::Instant::now();
        let ids: Vec<u64> = loop {
            let ids: Vec<u64> = c
                .query("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'root' AND ID <> CONNECTION_ID()")
                .await
                .unwrap();
            if ids.len() >= 3 {
                break ids;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "the migration's sessions did not come back: {ids:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        for id in ids {
            let _ = c.query_drop(format!("KILL {id}")).await;
        }
    }
    let outcome = tokio::time::timeout(Duration::from_secs(120), task)
        .await
        .expect("finishes")
        .unwrap();
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(progress.state(), State::Completed);
    assert!(
        Progress::get(&progress.reconnects) >= 2,
        "reconnects were not counted"
    );
    stop.store(true, Ordering::Relaxed);
    let rep = w.await.unwrap();
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    check_table(&db, &rep.model).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_mid_copy_is_survived() {
    let mut db = Db::start();
    let initial = seeded(&db).await;
    let spec = db.spec(
        "app",
        "t",
        "ADD COLUMN extra INT NOT NULL DEFAULT 1",
        MigrationOptions {
            chunk_size: 200,
            ..Default::default()
        },
    );
    let (controls, _t) = Controls::unattended(&spec.options);
    let progress = Progress::new(Arc::new(NoObserver));
    let task = tokio::spawn(migration::run(spec, controls, progress.clone()));
    while Progress::get(&progress.rows_copied) < ROWS as u64 / 3 {
        assert!(!task.is_finished(), "{:?}", progress.status().error);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    db.sandbox.restart().expect("restart the server");
    // Writes after the restart are replayed too.
    db.pool = mysql_async::Pool::new(db.sandbox.url().as_str());
    let stop = Arc::new(AtomicBool::new(false));
    let w = tokio::spawn(writer(
        db.pool.clone(),
        13,
        0,
        10 * ROWS,
        initial,
        stop.clone(),
    ));
    let outcome = tokio::time::timeout(Duration::from_secs(120), task)
        .await
        .expect("finishes")
        .unwrap();
    assert!(outcome.is_ok(), "{outcome:?}");
    assert!(Progress::get(&progress.reconnects) >= 1);
    stop.store(true, Ordering::Relaxed);
    let rep = w.await.unwrap();
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    check_table(&db, &rep.model).await;
}

/// After a lost copy connection the server may still be running the chunk statement (it
/// notices a closed connection only when it next writes to it); it must be ended before the
/// replay may commit again. A stand-in orphan, started by hand with the copy's statement
/// prefix, is killed, so what it would have written never reaches the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphaned_chunk_statement_is_ended_after_a_reconnect() {
    let db = Db::start();
    const BIG: i64 = 300_000;
    common::seed_model_table(&db, BIG).await;
    let spec = db.spec(
        "app",
        "t",
        "ADD COLUMN extra INT NOT NULL DEFAULT 1",
        MigrationOptions {
            chunk_size: 100,
            ..Default::default()
        },
    );
    let (controls, _t) = Controls::unattended(&spec.options);
    let progress = Progress::new(Arc::new(NoObserver));
    let task = tokio::spawn(migration::run(spec, controls, progress.clone()));
    while Progress::get(&progress.rows_copied) < 5_000 {
        assert!(!task.is_finished(), "{:?}", progress.status().error);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut orphan = db.conn().await;
    let orphan_id = orphan.id();
    let started = std::time::Instant::now();
    let running = tokio::spawn(async move {
        // A prepared statement, like the copy's own chunks.
        orphan
            .exec_drop(
                "INSERT IGNORE INTO `app`.`t~new` (`id`, `v`, `payload`) \
                 SELECT ?, 0, 'orphan' FROM DUAL WHERE SLEEP(60) = 0",
                (-5,),
            )
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut c = db.conn().await;
    let ids: Vec<u64> = c
        .query(format!(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'root' \
             AND ID <> CONNECTION_ID() AND ID <> {orphan_id} AND COMMAND <> 'Binlog Dump'"
        ))
        .await
        .unwrap();
    assert!(
        !progress.status().copy_done,
        "the copy must still run at the kill"
    );
    for id in ids {
        let _ = c.query_drop(format!("KILL {id}")).await;
    }
    let ended = tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the orphan is ended well before its 60 s")
        .unwrap();
    println!("orphan ended after {:?}: {ended:?}", started.elapsed());
    let outcome = tokio::time::timeout(Duration::from_secs(120), task)
        .await
        .expect("finishes")
        .unwrap();
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(
        db.scalar_u64("SELECT COUNT(*) FROM app.t WHERE id = -5")
            .await,
        0
    );
    assert_eq!(
        db.scalar_u64("SELECT COUNT(*) FROM app.t").await,
        BIG as u64
    );
}
