//! Crash safety in the engine: a shutdown keeps the helpers and the checkpoint resumes the
//! migration without losing a write; an interrupted swap is completed or rolled back; a purged
//! binlog gives a clear error.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::writers::{writer, Model};
use common::{dump, Db};
use mysql_async::prelude::Queryable;
use shadowcut::migration::{self, Checkpoint, Controls, MigrationOptions};
use shadowcut::progress::{NoObserver, Progress};
use shadowcut::state::State;
use shadowcut::Error;

const ROWS: i64 = 30_000;

async fn seeded(db: &Db) -> Model {
    common::seed_model_table(db, ROWS).await
}

fn opts() -> MigrationOptions {
    MigrationOptions {
        chunk_size: 200,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mid_copy_then_resume_loses_nothing() {
    let db = Db::start();
    let initial = seeded(&db).await;
    let stop = Arc::new(AtomicBool::new(false));
    let w = tokio::spawn(writer(
        db.pool.clone(),
        7,
        0,
        10 * ROWS,
        initial,
        stop.clone(),
    ));

    let spec = db.spec(
        "app",
        "t",
        "ADD COLUMN extra INT NOT NULL DEFAULT 9",
        opts(),
    );
    let (controls, _t) = Controls::unattended(&spec.options);
    let shutdown = controls.shutdown.clone();
    let progress = Progress::new(Arc::new(NoObserver));
    let task = tokio::spawn(migration::run(spec.clone(), controls, progress.clone()));
    while Progress::get(&progress.rows_copied) < ROWS as u64 / 3 {
        assert!(!task.is_finished(), "{:?}", progress.status().error);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    let r = task.await.unwrap();
    assert!(matches!(r, Err(Error::Interrupted)), "{r:?}");
    assert_eq!(
        progress.state(),
        State::Running,
        "an interrupted migration is not finished"
    );
    let cp = Checkpoint::of(&progress).expect("a checkpoint exists");
    let copied_before = cp.rows_copied;
    assert!(!cp.copy_done && cp.copy_watermark.is_some());
    let mut tables = db.tables("app").await;
    tables.sort();
    assert_eq!(
        tables,
        vec!["_t_chl", "t", "t~new"],
        "helpers kept for the resume"
    );

    // Writes keep coming while nobody migrates; the resume must pick them up from the binlog.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The checkpoint survives a round trip through JSON, as the daemon stores it.
    let cp: Checkpoint = serde_json::from_str(&serde_json::to_string(&cp).unwrap()).unwrap();
    let (controls, _t) = Controls::unattended(&spec.options);
    let resumed = Progress::new(Arc::new(NoObserver));
    let started = std::time::Instant::now();
    let outcome = migration::resume(spec, cp, controls, resumed.clone())
        .await
        .expect("resume completes");
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let rep = w.await.unwrap();
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    assert!(rep.commits > 50, "too few writes to prove anything");

    let mut conn = db.conn().await;
    let rows: Vec<(i64, i64, String)> = conn
        .query("SELECT id, v, payload FROM app.t ORDER BY id")
        .await
        .unwrap();
    let actual: Model = rows.into_iter().map(|(id, v, p)| (id, (v, p))).collect();
    assert_eq!(
        actual, rep.model,
        "the resumed migration lost or corrupted writes"
    );
    let copied_total = Progress::get(&resumed.rows_copied);
    println!(
        "resume: copied {copied_before} rows before the shutdown, {} after; migration finished {:?} after the resume; old table {:?}",
        copied_total - copied_before,
        took,
        outcome.old_table
    );
    // Only rows above the watermark are copied again (inserted counts may be lower: replayed rows are skipped).
    assert!(copied_total <= ROWS as u64 + 1_000, "{copied_total}");
}

/// Sets up the helper tables as a migration would and returns its checkpoint, postponed.
async fn postponed_checkpoint(db: &Db, alter: &str) -> (migration::MigrationSpec, Checkpoint) {
    let spec = db.spec(
        "app",
        "t",
        alter,
        MigrationOptions {
            postpone_cutover: true,
            ..opts()
        },
    );
    let (controls, _t) = Controls::unattended(&spec.options);
    let shutdown = controls.shutdown.clone();
    let progress = Progress::new(Arc::new(NoObserver));
    let task = tokio::spawn(migration::run(spec.clone(), controls, progress.clone()));
    while progress.state() != State::Postponed {
        assert!(!task.is_finished(), "{:?}", progress.status().error);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    assert!(matches!(task.await.unwrap(), Err(Error::Interrupted)));
    (spec, Checkpoint::of(&progress).expect("checkpoint"))
}

#[tokio::test]
async fn interrupted_cutover_is_rolled_back_or_completed() {
    let db = Db::start();
    seeded(&db).await;
    let before = dump(&db, "app.t", &["id", "v", "payload"], "id").await;

    // Crash after the placeholder was created, before the RENAME: nothing was swapped.
    let (spec, cp) = postponed_checkpoint(&db, "ADD COLUMN extra INT NOT NULL DEFAULT 9").await;
    db.exec("CREATE TABLE app.`t~sc` (id INT)").await;
    let spec_go = migration::MigrationSpec {
        options: MigrationOptions {
            postpone_cutover: false,
            ..spec.options.clone()
        },
        ..spec
    };
    let (controls, _t) = Controls::unattended(&spec_go.options);
    let outcome = migration::resume(
        spec_go.clone(),
        cp,
        controls,
        Progress::new(Arc::new(NoObserver)),
    )
    .await
    .expect("resume completes");
    assert_eq!(
        dump(&db, "app.t", &["id", "v", "payload"], "id").await,
        before
    );
    assert_eq!(
        db.scalar_u64("SELECT COUNT(*) FROM app.t WHERE extra = 9")
            .await,
        ROWS as u64
    );
    let old = outcome.old_table.expect("kept");
    let mut tables = db.tables("app").await;
    tables.sort();
    assert_eq!(tables, vec![old.clone(), "t".to_string()]);
    db.exec(&format!("DROP TABLE app.`{old}`")).await;

    // Crash right after the RENAME: the swap happened; the resume only archives the old table.
    let (spec, cp) = postponed_checkpoint(&db, "ADD COLUMN extra2 INT NOT NULL DEFAULT 8").await;
    db.exec("RENAME TABLE app.t TO app.`t~sc`, app.`t~new` TO app.t")
        .await;
    let (controls, _t) = Controls::unattended(&spec.options);
    let outcome = migration::resume(
        spec,
        cp.clone(),
        controls,
        Progress::new(Arc::new(NoObserver)),
    )
    .await
    .expect("finishes");
    assert_eq!(
        outcome.old_table.as_deref(),
        Some(cp.names.archive.as_str())
    );
    let mut tables = db.tables("app").await;
    tables.sort();
    assert_eq!(tables, vec![cp.names.archive.clone(), "t".to_string()]);
    assert_eq!(
        db.scalar_u64("SELECT COUNT(*) FROM app.t WHERE extra2 = 8")
            .await,
        ROWS as u64
    );
}

#[tokio::test]
async fn purged_binlog_gives_a_clear_error() {
    let db = Db::start();
    seeded(&db).await;
    let (spec, cp) = postponed_checkpoint(&db, "ADD COLUMN extra INT NOT NULL DEFAULT 9").await;
    db.exec("FLUSH BINARY LOGS").await;
    let newest: String = db.rows("SHOW MASTER STATUS").await[0].get("File").unwrap();
    // The server skips files a dump thread still reads (the stopped tail's session may linger).
    let t = std::time::Instant::now();
    loop {
        db.exec(&format!("PURGE BINARY LOGS TO '{newest}'")).await;
        let files: Vec<String> = db
            .rows("SHOW BINARY LOGS")
            .await
            .into_iter()
            .map(|r| r.get::<String, _>(0).unwrap())
            .collect();
        if !files.contains(&cp.applied.file) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "could not purge {}",
            cp.applied.file
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let spec = migration::MigrationSpec {
        options: MigrationOptions {
            postpone_cutover: false,
            ..spec.options.clone()
        },
        ..spec
    };
    let (controls, _t) = Controls::unattended(&spec.options);
    let err = migration::resume(
        spec,
        cp.clone(),
        controls,
        Progress::new(Arc::new(NoObserver)),
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            err,
            Error::Refused {
                check: "binlog_purged",
                ..
            }
        ),
        "{text}"
    );
    assert!(
        text.contains(&cp.applied.file) && text.contains("start it again from scratch"),
        "{text}"
    );
    assert_eq!(
        db.tables("app").await,
        vec!["t".to_string()],
        "a failed resume cleans up"
    );
}
