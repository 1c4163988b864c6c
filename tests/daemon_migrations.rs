//! Migrations driven only through the daemon's HTTP API, against the real process and a real
//! MariaDB: a full migration under writers (data checked against a model of every write),
//! metrics moving, postpone + cutover, pause/resume, the global throttle, the per-target limit,
//! cancel, SIGTERM, and history across a restart.

mod common;
mod daemon_support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{dump, Db};
use daemon_support::{config_text, metric, Daemon};
use mysql_async::prelude::Queryable;
use serde_json::{json, Value};

type Model = Arc<Mutex<BTreeMap<i64, (i64, String)>>>;

async fn table_with_rows(db: &Db, name: &str, rows: u64) {
    db.exec(&format!(
        "CREATE TABLE app.{name} (id BIGINT PRIMARY KEY, k BIGINT NOT NULL, c VARCHAR(40))"
    ))
    .await;
    db.exec(&format!(
        "INSERT INTO app.{name} SELECT seq, seq, CONCAT('r', seq) FROM app.seq_1_to_{rows}"
    ))
    .await;
    db.exec(&format!("ANALYZE TABLE app.{name}")).await;
}

/// Writers that insert, update and delete rows of `app.t` until `stop`, recording every write
/// that succeeded in `model`. Writer `w` only touches ids with `id % n == w`, so each writer's
/// own order is the database's order for those rows.
fn spawn_writers(
    db: &Db,
    n: i64,
    model: Model,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..n)
        .map(|w| {
            let pool = db.pool.clone();
            let model = model.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut conn = pool.get_conn().await.expect("writer connection");
                let mut done = 0u64;
                let mut next_id = 1_000_000 + w;
                let deadline = Instant::now() + Duration::from_secs(120);
                let mut i: i64 = 0;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    i += 1;
                    let target = (i * 7919 % 20_000) / n * n + w + 1;
                    // Ids of writer w are all == w + 1 (mod n): no two writers share a row.
                    let (sql, params, id, row): (
                        &str,
                        Vec<mysql_async::Value>,
                        i64,
                        Option<(i64, String)>,
                    ) = match i % 3 {
                        0 => {
                            let (id, c) = (next_id, format!("ins{w}-{i}"));
                            next_id += n;
                            (
                                "INSERT INTO app.t (id, k, c) VALUES (?, ?, ?)",
                                vec![id.into(), i.into(), c.clone().into()],
                                id,
                                Some((i, c)),
                            )
                        }
                        1 => {
                            let c = format!("upd{w}-{i}");
                            (
                                "UPDATE app.t SET k = ?, c = ? WHERE id = ?",
                                vec![(-i).into(), c.clone().into(), target.into()],
                                target,
                                Some((-i, c)),
                            )
                        }
                        _ => (
                            "DELETE FROM app.t WHERE id = ?",
                            vec![(target + 2 * n).into()],
                            target + 2 * n,
                            None,
                        ),
                    };
                    // A failed statement changed nothing (autocommit); it is left out of the model.
                    if conn.exec_drop(sql, params).await.is_ok() {
                        let affected = conn.affected_rows();
                        let mut m = model.lock().unwrap();
                        match row {
                            Some(r) if affected > 0 => {
                                m.insert(id, r);
                            }
                            Some(_) => {}
                            None => {
                                m.remove(&id);
                            }
                        }
                        done += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
                done
            })
        })
        .collect()
}

#[tokio::test]
async fn full_migration_under_writers_with_metrics() {
    let db = Db::start();
    db.exec("CREATE DATABASE app").await;
    table_with_rows(&db, "t", 20_000).await;
    let model: Model = Arc::new(Mutex::new(
        (1..=20_000).map(|i| (i, (i, format!("r{i}")))).collect(),
    ));
    let d = Daemon::start(&config_text(db.sandbox.port(), ""), None);
    let stop = Arc::new(AtomicBool::new(false));
    let writers = spawn_writers(&db, 3, model.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let id = d
        .start_migration(json!({"database": "app", "table": "t",
            "alter": "ADD COLUMN c2 INT NOT NULL DEFAULT 7, ADD INDEX by_k (k)",
            "options": {"chunk_size": 100}}))
        .await;
    // Scrape while it runs: the series appear and move.
    let labels = [("id", id.as_str()), ("database", "app"), ("table", "t")];
    let mut seen = Vec::new();
    let mut saw_running = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    let last = loop {
        let m = d.metrics().await;
        if let Some(v) = metric(&m, "shadowcut_migration_rows_copied_total", &labels) {
            seen.push(v);
        }
        let mut running = labels.to_vec();
        running.push(("state", "running"));
        saw_running |= metric(&m, "shadowcut_migration_state", &running) == Some(1.0);
        let v = d.get(&id).await;
        if v["state"] == "completed" || v["state"] == "failed" {
            break v;
        }
        assert!(Instant::now() < deadline, "not done: {v}");
        tokio::time::sleep(Duration::from_millis(40)).await;
    };
    assert_eq!(
        last["state"],
        "completed",
        "{last}\n{}",
        daemon_support::tail(&d.log(), 30)
    );
    stop.store(true, Ordering::Relaxed);
    let mut writes = 0;
    for w in writers {
        writes += w.await.unwrap();
    }
    assert!(writes > 100, "the writers ran ({writes} writes)");
    assert!(saw_running, "state gauge showed running");
    let moving: Vec<f64> = seen
        .iter()
        .copied()
        .filter(|v| *v > 0.0 && *v < 20_000.0)
        .collect();
    assert!(
        moving.len() >= 2 && moving.windows(2).any(|w| w[1] > w[0]),
        "rows copied moved mid-copy: {seen:?}"
    );

    // Every write the writers saw succeed is in the new table, and nothing else.
    let expected: Vec<Vec<Option<String>>> = {
        let hex = |s: &str| s.bytes().map(|b| format!("{b:02X}")).collect::<String>();
        let m = model.lock().unwrap();
        m.iter()
            .map(|(id, (k, c))| {
                vec![
                    Some(hex(&id.to_string())),
                    Some(hex(&k.to_string())),
                    Some(hex(c)),
                ]
            })
            .collect()
    };
    let actual = db
        .rows("SELECT HEX(CAST(id AS CHAR)), HEX(CAST(k AS CHAR)), HEX(c) FROM app.t ORDER BY id")
        .await;
    let actual: Vec<Vec<Option<String>>> = actual
        .into_iter()
        .map(|r| {
            r.unwrap()
                .into_iter()
                .map(|v| match v {
                    mysql_async::Value::Bytes(b) => Some(String::from_utf8_lossy(&b).into_owned()),
                    mysql_async::Value::NULL => None,
                    other => Some(format!("{other:?}")),
                })
                .collect()
        })
        .collect();
    assert_eq!(actual.len(), expected.len(), "row count");
    assert!(
        actual == expected,
        "the new table differs from the writers' model"
    );
    let n = expected.len() as u64;
    assert_eq!(
        db.scalar_u64("SELECT COUNT(*) FROM app.t WHERE c2 = 7")
            .await,
        n
    );
    let old = last["old_table"]
        .as_str()
        .expect("old table kept")
        .to_string();
    assert!(
        db.scalar_u64(&format!("SELECT COUNT(*) FROM app.`{old}`"))
            .await
            > 0
    );
    assert_eq!(last["progress"], 100.0);

    let m = d.metrics().await;
    let mut completed = labels.to_vec();
    completed.push(("state", "completed"));
    assert_eq!(
        metric(&m, "shadowcut_migration_state", &completed),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "shadowcut_migration_rows_copied_total", &labels),
        last["rows_copied"].as_f64()
    );
    assert_eq!(
        metric(&m, "shadowcut_migration_progress_ratio", &labels),
        Some(1.0)
    );
    assert!(metric(&m, "shadowcut_migration_cutover_attempts_total", &labels) >= Some(1.0));
    assert_eq!(
        metric(
            &m,
            "shadowcut_migration_cutover_stall_seconds_count",
            &labels
        ),
        Some(1.0)
    );
    assert!(
        metric(
            &m,
            "shadowcut_migration_chunk_duration_seconds_count",
            &labels
        ) >= Some(100.0)
    );
    assert_eq!(
        metric(&m, "shadowcut_migration_chunk_size_rows", &labels),
        Some(100.0)
    );
    let mut inserts = labels.to_vec();
    inserts.push(("kind", "insert"));
    assert!(
        metric(
            &m,
            "shadowcut_migration_binlog_events_applied_total",
            &inserts
        ) > Some(0.0),
        "replayed inserts counted"
    );
    assert_eq!(
        metric(&m, "shadowcut_migrations", &[("state", "completed")]),
        Some(1.0)
    );
}

#[tokio::test]
async fn pause_resume_postpone_and_cutover() {
    let db = Db::start();
    db.exec("CREATE DATABASE app").await;
    table_with_rows(&db, "p", 60_000).await;
    let before = dump(&db, "app.p", &["id", "k", "c"], "id").await;
    let d = Daemon::start(&config_text(db.sandbox.port(), ""), None);
    let id = d
        .start_migration(json!({"database": "app", "table": "p", "alter": "ADD COLUMN flag TINYINT NOT NULL DEFAULT 1",
            "options": {"chunk_size": 50, "postpone_cutover": true}}))
        .await;
    d.wait_for(&id, 60, "copying", |v| v["rows_copied"].as_u64() > Some(0))
        .await;

    let (s, v) = d
        .call("POST", &format!("/v1/migrations/{id}/pause"), None)
        .await;
    assert_eq!((s, v["paused"].as_bool()), (200, Some(true)), "{v}");
    tokio::time::sleep(Duration::from_millis(500)).await; // the chunk in flight ends
    let a = d.get(&id).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b = d.get(&id).await;
    assert_eq!(
        a["rows_copied"], b["rows_copied"],
        "no rows copied while paused"
    );
    assert!(b["rows_copied"].as_u64() < Some(60_000));
    assert_eq!(
        (b["state"].as_str(), b["throttled"].as_bool()),
        (Some("running"), Some(true))
    );
    assert_eq!(b["throttle_reason"], "manual: paused by operator");
    let m = d.metrics().await;
    assert_eq!(
        metric(&m, "shadowcut_migration_throttled", &[("id", id.as_str())]),
        Some(1.0)
    );

    let (s, v) = d
        .call("POST", &format!("/v1/migrations/{id}/resume"), None)
        .await;
    assert_eq!(
        (s, v["paused"].as_bool(), v["throttled"].as_bool()),
        (200, Some(false), Some(false)),
        "{v}"
    );
    let paused_at = b["rows_copied"].as_u64().unwrap();
    d.wait_for(&id, 30, "copying again", |v| {
        v["rows_copied"].as_u64() > Some(paused_at)
    })
    .await;

    let v = d
        .wait_for(&id, 10, "an ETA", |v| {
            v["eta_seconds"].is_u64() || v["state"] != "running"
        })
        .await;
    assert!(v["eta_seconds"].as_u64() < Some(3600), "{v}");

    // A live chunk size is in effect within a second.
    let (s, _) = d
        .call(
            "PATCH",
            &format!("/v1/migrations/{id}"),
            Some(json!({"chunk_size": 5000})),
        )
        .await;
    assert_eq!(s, 200);
    let t = Instant::now();
    d.wait_for(&id, 10, "chunk size 5000", |v| {
        v["chunk_size"] == 5000 || v["state"] != "running"
    })
    .await;
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        t.elapsed()
    );

    let v = d.wait_state(&id, "postponed", 60).await;
    assert_eq!(
        (v["rows_copied"].as_u64(), v["cutover_requested"].as_bool()),
        (Some(60_000), Some(false))
    );
    let cols = "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA='app' AND TABLE_NAME='p' AND COLUMN_NAME='flag'";
    assert_eq!(db.scalar_u64(cols).await, 0, "not swapped while postponed");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(d.get(&id).await["state"], "postponed", "waits for the go");

    let (s, v) = d
        .call("POST", &format!("/v1/migrations/{id}/cutover"), None)
        .await;
    assert_eq!(
        (s, v["cutover_requested"].as_bool()),
        (200, Some(true)),
        "{v}"
    );
    let v = d.wait_state(&id, "completed", 60).await;
    assert_eq!(db.scalar_u64(cols).await, 1);
    assert_eq!(dump(&db, "app.p", &["id", "k", "c"], "id").await, before);
    assert_eq!(
        db.scalar_u64("SELECT COUNT(*) FROM app.p WHERE flag = 1")
            .await,
        60_000
    );
    let old = v["old_table"].as_str().unwrap();
    assert_eq!(
        dump(&db, &format!("app.`{old}`"), &["id", "k", "c"], "id").await,
        before
    );
}

#[tokio::test]
async fn global_throttle_and_per_target_limit() {
    let db = Db::start();
    db.exec("CREATE DATABASE app").await;
    for t in ["a", "b", "c"] {
        table_with_rows(&db, t, 40_000).await;
    }
    let d = Daemon::start(
        &config_text(db.sandbox.port(), "[limits]\nmax_running_per_target = 2"),
        None,
    );
    let mut ids = Vec::new();
    for t in ["a", "b", "c"] {
        let id = d
            .start_migration(json!({"database": "app", "table": t, "alter": "ADD COLUMN z INT NOT NULL DEFAULT 2",
                "options": {"chunk_size": 100}}))
            .await;
        ids.push(id);
    }
    let (a, b, c) = (&ids[0], &ids[1], &ids[2]);
    for id in [a, b] {
        d.wait_for(id, 60, "copying", |v| v["rows_copied"].as_u64() > Some(0))
            .await;
    }
    let (s, v) = d
        .call(
            "POST",
            "/v1/throttle",
            Some(json!({"reason": "peak hours"})),
        )
        .await;
    assert_eq!((s, v["active"].as_bool()), (200, Some(true)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before: Vec<Value> = vec![d.get(a).await, d.get(b).await, d.get(c).await];
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after: Vec<Value> = vec![d.get(a).await, d.get(b).await, d.get(c).await];
    for (x, y) in before.iter().zip(&after).take(2) {
        assert_eq!(y["state"], "running", "two run side by side: {y}");
        assert_eq!(
            x["rows_copied"], y["rows_copied"],
            "throttled: no rows copied"
        );
        assert!(y["rows_copied"].as_u64() < Some(40_000));
        assert_eq!(
            (y["throttled"].as_bool(), y["paused"].as_bool()),
            (Some(true), Some(false))
        );
        assert_eq!(y["throttle_reason"], "global: peak hours");
    }
    assert_eq!(
        (after[2]["state"].as_str(), after[2]["rows_copied"].as_u64()),
        (Some("queued"), Some(0)),
        "the third waits"
    );
    assert!(after[2]["started_at"].is_null());
    let (_, v) = d.call("GET", "/v1/migrations?state=queued", None).await;
    assert_eq!(v["migrations"].as_array().unwrap().len(), 1);

    let (s, _) = d.call("DELETE", "/v1/throttle", None).await;
    assert_eq!(s, 200);
    let mut done = Vec::new();
    for id in [a, b, c] {
        done.push(d.wait_state(id, "completed", 120).await);
    }
    let first_end = [&done[0], &done[1]]
        .iter()
        .map(|v| v["finished_at"].as_str().unwrap().to_string())
        .min()
        .unwrap();
    let c_start = done[2]["started_at"].as_str().unwrap().to_string();
    assert!(
        c_start >= first_end,
        "the third started ({c_start}) after a slot freed ({first_end})"
    );
    for t in ["a", "b", "c"] {
        assert_eq!(
            db.scalar_u64(&format!("SELECT COUNT(*) FROM app.{t} WHERE z = 2"))
                .await,
            40_000
        );
    }
}

#[tokio::test]
async fn sigterm_cancel_and_history_across_restart() {
    let db = Db::start();
    db.exec("CREATE DATABASE app").await;
    table_with_rows(&db, "h1", 1000).await;
    table_with_rows(&db, "h2", 40_000).await;
    let h2_before = dump(&db, "app.h2", &["id", "k", "c"], "id").await;
    let mut d = Daemon::start(&config_text(db.sandbox.port(), ""), None);

    let done = d
        .start_migration(json!({"database": "app", "table": "h1", "alter": "ADD COLUMN y INT"}))
        .await;
    let done_view = d.wait_state(&done, "completed", 60).await;
    let running = d
        .start_migration(json!({"database": "app", "table": "h2", "alter": "ADD COLUMN y INT", "options": {"chunk_size": 100}}))
        .await;
    d.wait_for(&running, 60, "copying", |v| {
        v["rows_copied"].as_u64() > Some(0)
    })
    .await;
    d.call("POST", &format!("/v1/migrations/{running}/pause"), None)
        .await;

    // SIGTERM keeps the work: the helpers stay, the record stays active with its checkpoint.
    let (took, ok) = d.terminate();
    assert!(ok, "clean exit:\n{}", d.log());
    assert!(took < Duration::from_secs(10), "exited in {took:?}");
    assert_eq!(
        dump(&db, "app.h2", &["id", "k", "c"], "id").await,
        h2_before,
        "h2 untouched"
    );
    let mut tables = db.tables("app").await;
    tables.sort();
    assert_eq!(
        tables.len(),
        5,
        "h1, its old copy, h2 and h2's helpers remain: {tables:?}"
    );
    assert!(tables.contains(&"h2~new".to_string()) && tables.contains(&"_h2_chl".to_string()));
    assert_eq!(
        db.scalar_u64("SELECT COUNT(*) FROM _shadowcut.migrations")
            .await,
        2
    );
    assert_eq!(
        db.scalar_u64("SELECT COUNT(*) FROM _shadowcut.migrations WHERE state = 'running' AND checkpoint_json IS NOT NULL AND paused = 1")
            .await,
        1,
        "h2 saved running and paused, with its checkpoint"
    );

    let d = d.restart();
    let (s, v) = d.call("GET", "/v1/migrations", None).await;
    let list = v["migrations"]
        .as_array()
        .unwrap_or_else(|| panic!("{s}: {v}"))
        .clone();
    let list = if list.len() < 2 {
        // History loads in the background right after the start.
        tokio::time::sleep(Duration::from_secs(2)).await;
        d.call("GET", "/v1/migrations", None).await.1["migrations"]
            .as_array()
            .unwrap()
            .clone()
    } else {
        list
    };
    assert_eq!(list.len(), 2, "{list:?}");
    let h1 = d.get(&done).await;
    for field in [
        "state",
        "rows_copied",
        "old_table",
        "created_at",
        "started_at",
        "finished_at",
        "alter",
        "options",
    ] {
        assert_eq!(h1[field], done_view[field], "{field} survives the restart");
    }
    let h2 = d
        .wait_for(&running, 30, "resumed", |v| v["resume_count"] == 1)
        .await;
    assert_eq!(
        (
            h2["state"].as_str(),
            h2["interrupted"].as_bool(),
            h2["paused"].as_bool()
        ),
        (Some("running"), Some(true), Some(true)),
        "resumed, still paused: {h2}"
    );
    assert!(h2["error"].is_null(), "{h2}");
    assert_eq!(h2["options"]["chunk_size"], 100, "the spec is kept");
    assert!(h2["checkpoint"]["binlog_file"].is_string(), "{h2}");

    // A resumed migration cancels cleanly: helpers dropped, the table as it was.
    let (s, _) = d
        .call("POST", &format!("/v1/migrations/{running}/cancel"), None)
        .await;
    assert_eq!(s, 200);
    let v = d.wait_state(&running, "cancelled", 30).await;
    assert!(v["error"].is_null(), "{v}");
    assert_eq!(
        dump(&db, "app.h2", &["id", "k", "c"], "id").await,
        h2_before
    );
    assert_eq!(db.tables("app").await.len(), 3);
}
