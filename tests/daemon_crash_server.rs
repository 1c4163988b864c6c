//! The server side failing under a migration the daemon runs, with real processes and a real
//! MariaDB, under writers whose committed writes are modelled independently: the daemon's
//! connections killed from another session, a MariaDB restart, and a long transaction holding
//! the table's metadata lock during the cut-over. The migration must complete with the table
//! equal to the model; reconnects show in the API and the metrics; the blocking session shows
//! in the status, and writers stall at most about the lock timeout per attempt.

mod common;
mod daemon_crash_support;
mod daemon_support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Db;
use daemon_crash_support::{assert_table_is, migrated_rows, seeded, start_body, Writers};
use daemon_support::{config_text, metric, Daemon};
use mysql_async::prelude::Queryable;
use serde_json::json;

/// A daemon config for `user` (no password) on the sandbox.
fn config_as(port: u16, user: &str) -> String {
    config_text(port, "").replace("user = \"root\"", &format!("user = \"{user}\""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_are_reestablished() {
    let rows = 200_000;
    let db = Db::start();
    seeded(&db, rows).await;
    // The daemon connects as its own user, so its sessions can be told from the writers'.
    db.exec("CREATE USER 'sc'@'127.0.0.1'").await;
    db.exec("GRANT ALL PRIVILEGES ON *.* TO 'sc'@'127.0.0.1'")
        .await;
    let writers = Writers::start(&db, rows);
    let d = Daemon::start(&config_as(db.sandbox.port(), "sc"), None);
    let id = d
        .start_migration(start_body(
            json!({"chunk_size": 200, "postpone_cutover": true}),
        ))
        .await;
    let kill_all = || async {
        let ids: Vec<u64> = db
            .rows("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'sc'")
            .await
            .into_iter()
            .map(|r| r.get::<u64, _>(0).unwrap())
            .collect();
        let mut killed = 0;
        for i in &ids {
            let mut c = db.conn().await;
            // A session may end by itself in between.
            if c.query_drop(format!("KILL {i}")).await.is_ok() {
                killed += 1;
            }
        }
        killed
    };
    // Mid-copy: the copy, replay, tail and heartbeat sessions all go.
    d.wait_for(&id, 120, "copying", |v| {
        v["rows_copied"].as_u64() >= Some(rows as u64 / 5)
    })
    .await;
    let first = kill_all().await;
    println!("mid-copy: killed {first} daemon sessions");
    assert!(first >= 3, "{first}");
    // Postponed: the replay goes on; its sessions and the binlog tail's are killed again.
    let v = d.wait_state(&id, "postponed", 120).await;
    assert!(v["reconnects"].as_u64() >= Some(1), "{v}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = kill_all().await;
    println!("postponed: killed {second} daemon sessions");
    assert!(second >= 1, "{second}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (s, v) = d
        .call("POST", &format!("/v1/migrations/{id}/cutover"), None)
        .await;
    assert_eq!(s, 200, "{v}");

    let v = d.wait_state(&id, "completed", 180).await;
    let reconnects = v["reconnects"].as_u64().unwrap_or(0);
    println!("completed with {reconnects} reconnects");
    assert!(reconnects > 0, "reconnects show in the status: {v}");
    let m = d.metrics().await;
    assert!(
        metric(&m, "shadowcut_migration_reconnects_total", &[("id", &id)]) >= Some(1.0),
        "{m}"
    );
    let (expected, _) = writers.finish().await;
    assert_table_is(&db, &expected).await;
    assert_eq!(migrated_rows(&db).await, expected.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_mid_migration_is_survived() {
    let rows = 100_000;
    let mut db = Db::start();
    seeded(&db, rows).await;
    let mut writers = Writers::start(&db, rows);
    let d = Daemon::start(&config_text(db.sandbox.port(), ""), None);
    let id = d
        .start_migration(start_body(json!({"chunk_size": 500})))
        .await;
    d.wait_for(&id, 120, "copying", |v| {
        v["rows_copied"].as_u64() >= Some(rows as u64 / 5)
    })
    .await;

    // Writers pause around the restart: a write cut off mid-commit has an unknown outcome.
    writers.pause().await;
    let t = Instant::now();
    tokio::task::block_in_place(|| db.sandbox.restart()).expect("restart MariaDB");
    println!("MariaDB restarted in {:?}", t.elapsed());
    // The old pool's connections died with the server.
    db.pool = mysql_async::Pool::new(db.sandbox.url().as_str());
    writers.resume(&db);

    let v = d.wait_state(&id, "completed", 240).await;
    let reconnects = v["reconnects"].as_u64().unwrap_or(0);
    println!("completed with {reconnects} reconnects");
    assert!(reconnects > 0, "{v}");
    let (expected, _) = writers.finish().await;
    assert_table_is(&db, &expected).await;
    assert_eq!(migrated_rows(&db).await, expected.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_lock_during_cutover_stalls_writers_at_most_the_timeout() {
    let rows = 20_000;
    let lock_timeout = Duration::from_secs(1);
    let db = Db::start();
    seeded(&db, rows).await;
    // A probe row outside the writers' ranges, updated in a loop to time each write.
    let probe_id = rows + 500;
    db.exec(&format!(
        "INSERT INTO app.t VALUES ({probe_id}, 0, 'probe')"
    ))
    .await;
    let writers = Writers::start(&db, rows);
    let d = Daemon::start(&config_text(db.sandbox.port(), ""), None);
    let id = d
        .start_migration(start_body(json!({
            "chunk_size": 2000, "postpone_cutover": true,
            "cutover_lock_timeout_secs": lock_timeout.as_secs(), "cutover_attempts": 30
        })))
        .await;
    d.wait_state(&id, "postponed", 120).await;

    let mut blocker = db.conn().await;
    let blocker_id = blocker.id();
    blocker.query_drop("BEGIN").await.unwrap();
    let _: Option<i64> = blocker
        .query_first("SELECT v FROM app.t WHERE id = 19999")
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let worst_micros = Arc::new(AtomicU64::new(0));
    let probe = {
        let (pool, stop, worst) = (db.pool.clone(), stop.clone(), worst_micros.clone());
        tokio::spawn(async move {
            let mut conn = pool.get_conn().await.expect("probe connects");
            let mut last = 0i64;
            let mut n = 0i64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let t = Instant::now();
                conn.exec_drop("UPDATE app.t SET v = ? WHERE id = ?", (n, probe_id))
                    .await
                    .expect("probe update");
                last = n;
                worst.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            last
        })
    };

    let (s, v) = d
        .call("POST", &format!("/v1/migrations/{id}/cutover"), None)
        .await;
    assert_eq!(s, 200, "{v}");
    let v = d
        .wait_for(&id, 60, "failed attempts naming the blocker", |v| {
            v["cutover_attempts"].as_u64() >= Some(3)
                && v["cutover_blockers"]
                    .as_array()
                    .is_some_and(|b| !b.is_empty())
        })
        .await;
    assert_eq!(v["state"], "cutting_over", "{v}");
    let b = &v["cutover_blockers"][0];
    assert_eq!(b["id"].as_u64(), Some(u64::from(blocker_id)), "{v}");
    assert_eq!(b["user"], "root", "{v}");
    assert!(b["time_secs"].is_u64(), "{v}");
    assert!(b.get("query").is_some(), "{v}");
    let stalled = Duration::from_micros(worst_micros.load(Ordering::Relaxed));
    println!(
        "blocked cut-over: {} attempts, writers stalled at most {stalled:?} (lock timeout {lock_timeout:?})",
        v["cutover_attempts"]
    );
    assert!(
        stalled <= lock_timeout + Duration::from_millis(700),
        "writers stalled {stalled:?}"
    );
    assert_eq!(migrated_rows(&db).await, 0, "not swapped while blocked");

    blocker.query_drop("COMMIT").await.unwrap();
    drop(blocker);
    let v = d.wait_state(&id, "completed", 60).await;
    assert!(
        v["cutover_blockers"]
            .as_array()
            .is_none_or(|b| b.is_empty()),
        "{v}"
    );
    stop.store(true, Ordering::Relaxed);
    let last = probe.await.expect("probe");
    let stalled = Duration::from_micros(worst_micros.load(Ordering::Relaxed));
    assert!(
        stalled <= lock_timeout + Duration::from_millis(700),
        "writers stalled {stalled:?} over the whole cut-over"
    );
    let (mut expected, _) = writers.finish().await;
    expected.insert(probe_id, (last, "probe".to_string()));
    assert_table_is(&db, &expected).await;
    assert_eq!(migrated_rows(&db).await, expected.len() as u64);
}
