//! Shared by the crash tests: a seeded table, writers whose committed effect is modelled
//! independently of the migration, the stored record of a migration, and the model check.
//!
//! Writers (from `common::writers`) each own a key range, so each one's model is exact:
//! writer A updates, re-keys and deletes the seeded rows of [1, 20 000) and inserts rows with
//! keys in [-20 000, 20 000), below where the copy started too; writer B inserts (then
//! changes) rows above every seeded key, so the copy meets rows that did not exist when it
//! started. Keys in the gap between the seeded rows and B's (`rows + 1 .. rows + 1 000`)
//! belong to no writer. Every other seeded row must come out as seeded.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use serde_json::Value;

use crate::common::writers::{writer, Model, WriterReport};
use crate::common::Db;
use crate::daemon_support::Daemon;

/// Keys [-A_SPAN, A_SPAN) belong to writer A.
pub const A_SPAN: i64 = 20_000;

/// Creates `app.t` with `rows` rows (id = v = 1..rows, payload `init-<id>`).
pub async fn seeded(db: &Db, rows: i64) {
    crate::common::seed_model_table(db, rows).await;
    db.exec("ANALYZE TABLE app.t").await;
}

fn seed_row(id: i64) -> (i64, String) {
    (id, format!("init-{id}"))
}

/// The two writers on `app.t` (seeded with `rows` rows) and what they committed.
pub struct Writers {
    rows: i64,
    stop: Arc<AtomicBool>,
    handles: Vec<tokio::task::JoinHandle<WriterReport>>,
    /// Models of writers that were stopped and replaced (see [`Writers::pause`]).
    models: [Option<Model>; 2],
    commits: u64,
    errors: Vec<String>,
    round: u64,
}

impl Writers {
    pub fn start(db: &Db, rows: i64) -> Writers {
        let initial_a: Model = (1..A_SPAN.min(rows + 1))
            .map(|i| (i, seed_row(i)))
            .collect();
        let mut w = Writers {
            rows,
            stop: Arc::new(AtomicBool::new(false)),
            handles: Vec::new(),
            models: [Some(initial_a), Some(Model::new())],
            commits: 0,
            errors: Vec::new(),
            round: 0,
        };
        w.spawn(db);
        w
    }

    fn spawn(&mut self, db: &Db) {
        self.stop = Arc::new(AtomicBool::new(false));
        self.round += 1;
        let b_base = self.rows + 1_000;
        // Each range has plenty of free keys: a writer picks new keys at random in its range.
        let ranges = [(-A_SPAN, 2 * A_SPAN), (b_base, 2 * A_SPAN)];
        for (i, (base, span)) in ranges.into_iter().enumerate() {
            let initial = self.models[i].take().expect("model");
            self.handles.push(tokio::spawn(writer(
                db.pool.clone(),
                self.round * 100 + i as u64 + 1,
                base,
                span,
                initial,
                self.stop.clone(),
            )));
        }
    }

    async fn collect(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for (i, h) in std::mem::take(&mut self.handles).into_iter().enumerate() {
            let rep = h.await.expect("writer task");
            self.commits += rep.commits;
            self.errors.extend(rep.errors);
            self.models[i] = Some(rep.model);
        }
    }

    /// Stops the writers (every write they started has finished), e.g. around a server
    /// restart, where a write cut off mid-commit would have an unknown outcome.
    pub async fn pause(&mut self) {
        self.collect().await;
    }

    /// Starts them again on `db`'s pool, from their models.
    pub fn resume(&mut self, db: &Db) {
        self.spawn(db);
    }

    /// Commits so far of the stopped rounds (the running round counts at [`Writers::finish`]).
    pub fn commits_so_far(&self) -> u64 {
        self.commits
    }

    /// Stops them and returns the whole table as it must be, and the number of commits.
    pub async fn finish(mut self) -> (Model, u64) {
        self.collect().await;
        assert!(self.errors.is_empty(), "writer errors: {:?}", self.errors);
        let mut expected: Model = (A_SPAN..=self.rows).map(|i| (i, seed_row(i))).collect();
        for m in self.models.iter().flatten() {
            expected.extend(m.iter().map(|(k, v)| (*k, v.clone())));
        }
        (expected, self.commits)
    }
}

/// Asserts that `app.t` holds exactly `expected` in (id, v, payload).
pub async fn assert_table_is(db: &Db, expected: &Model) {
    let mut conn = db.conn().await;
    let rows: Vec<(i64, i64, String)> = conn
        .query("SELECT id, v, payload FROM app.t ORDER BY id")
        .await
        .expect("read app.t");
    let actual: Model = rows.into_iter().map(|(id, v, p)| (id, (v, p))).collect();
    if &actual != expected {
        let missing: Vec<_> = expected
            .iter()
            .filter(|(k, v)| actual.get(k) != Some(v))
            .take(5)
            .collect();
        let extra: Vec<_> = actual
            .iter()
            .filter(|(k, _)| !expected.contains_key(k))
            .take(5)
            .collect();
        panic!(
            "app.t differs from the model ({} rows vs {}): missing or wrong {missing:?}, extra {extra:?}",
            actual.len(),
            expected.len()
        );
    }
}

/// The stored record's checkpoint JSON (as the daemon saved it), if any.
pub async fn stored_checkpoint(db: &Db, id: &str) -> Option<Value> {
    let mut conn = db.conn().await;
    let text: Option<Option<String>> = conn
        .exec_first(
            "SELECT checkpoint_json FROM _shadowcut.migrations WHERE id = ?",
            (id,),
        )
        .await
        .expect("read the stored record");
    text.flatten()
        .map(|t| serde_json::from_str(&t).expect("checkpoint JSON"))
}

/// The stored record's state.
pub async fn stored_state(db: &Db, id: &str) -> String {
    let mut conn = db.conn().await;
    let s: Option<String> = conn
        .exec_first(
            "SELECT state FROM _shadowcut.migrations WHERE id = ?",
            (id,),
        )
        .await
        .expect("read the stored record");
    s.expect("a stored record")
}

/// The first key value of a stored checkpoint's watermark (integer keys).
pub fn watermark(cp: &Value) -> Option<i64> {
    cp["copy_watermark"][0]["v"].as_i64()
}

/// Waits until a restarted daemon knows the migration again (its history loads in the
/// background right after the start).
pub async fn wait_known(d: &Daemon, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = d.call("GET", &format!("/v1/migrations/{id}"), None).await;
        if status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{id} not loaded after the restart:\n{}",
            crate::daemon_support::tail(&d.log(), 30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the restarted daemon shows the migration resumed and running again; returns
/// how long that took from `since` and the view.
pub async fn wait_resumed(d: &Daemon, id: &str, since: Instant, secs: u64) -> (Duration, Value) {
    wait_known(d, id).await;
    let v = d
        .wait_for(id, secs, "resumed", |v| {
            v["resume_count"].as_u64() >= Some(1)
                && matches!(
                    v["state"].as_str(),
                    Some("running" | "postponed" | "cutting_over" | "completed")
                )
        })
        .await;
    (since.elapsed(), v)
}

/// Base options of the crash tests' migrations.
pub fn start_body(options: Value) -> Value {
    serde_json::json!({
        "database": "app",
        "table": "t",
        "alter": "ADD COLUMN extra INT NOT NULL DEFAULT 9",
        "options": options,
    })
}

/// The rows of `app.t` with the new column's default; 0 before the swap (no such column).
pub async fn migrated_rows(db: &Db) -> u64 {
    let swapped = db
        .scalar_u64(
            "SELECT COUNT(*) FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = 'app' AND TABLE_NAME = 't' AND COLUMN_NAME = 'extra'",
        )
        .await;
    if swapped == 0 {
        return 0;
    }
    db.scalar_u64("SELECT COUNT(*) FROM app.t WHERE extra = 9")
        .await
}
