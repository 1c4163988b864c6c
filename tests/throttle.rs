//! Throttling against real servers: replica lag (SQL thread stopped, replica down), load,
//! peak windows, the custom query and URL, and critical load.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{dump, Db};
use shadowcut::migration::{self, Controls, CriticalLoadAction, MigrationOptions};
use shadowcut::progress::{NoObserver, Progress};
use shadowcut::sandbox::{Sandbox, SandboxOptions};
use shadowcut::state::State;
use shadowcut::throttle::{PeakWindow, ThrottleSettings};
use tokio::sync::watch;
use tokio::task::JoinHandle;

struct Running {
    progress: Arc<Progress>,
    task: JoinHandle<shadowcut::Result<migration::Outcome>>,
    settings: watch::Sender<ThrottleSettings>,
}

async fn table(db: &Db, rows: u32) {
    db.exec("CREATE DATABASE IF NOT EXISTS app").await;
    db.exec("CREATE TABLE app.t (id INT PRIMARY KEY, v INT NOT NULL, s VARCHAR(40))")
        .await;
    db.exec(&format!(
        "INSERT INTO app.t SELECT seq, seq, MD5(seq) FROM app.seq_1_to_{rows}"
    ))
    .await;
}

/// Starts a slow migration (small chunks) with live throttle settings and optional replicas.
fn start(db: &Db, opts: MigrationOptions, replicas: Vec<shadowcut::conn::ConnSettings>) -> Running {
    let spec = db.spec("app", "t", "ADD COLUMN x INT NOT NULL DEFAULT 0", opts);
    let (mut controls, _tuning) = Controls::unattended(&spec.options);
    let (settings, rx) = watch::channel(ThrottleSettings::from(&spec.options));
    controls.throttle = controls.throttle.with_replicas(replicas).with_settings(rx);
    let progress = Progress::new(Arc::new(NoObserver));
    let task = tokio::spawn(migration::run(spec, controls, progress.clone()));
    Running {
        progress,
        task,
        settings,
    }
}

fn copied(r: &Running) -> u64 {
    Progress::get(&r.progress.rows_copied)
}

async fn until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Throttled soon (probes look every 250 ms; 3 s allows for a loaded CI machine), with `needle`
/// in the reason, and copying really stopped.
async fn assert_throttled(r: &Running, needle: &str) {
    let seen = |r: &Running| {
        r.progress
            .throttle_reasons()
            .iter()
            .any(|x| x.contains(needle))
    };
    let t = Instant::now();
    while !seen(r) {
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "not throttled by {needle:?} within 3 s; reasons: {:?}, state {:?}, error {:?}, {} rows copied",
            r.progress.throttle_reasons(),
            r.progress.state(),
            r.progress.status().error,
            copied(r)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // a chunk in flight may finish
    let held = copied(r);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        copied(r),
        held,
        "rows were copied while throttled: {:?}",
        r.progress.throttle_reasons()
    );
    assert_eq!(r.progress.state(), State::Running);
}

async fn assert_resumes(r: &Running) {
    let held = copied(r);
    until("copying to resume", Duration::from_secs(5), || {
        copied(r) > held || r.task.is_finished()
    })
    .await;
}

fn opts() -> MigrationOptions {
    MigrationOptions {
        chunk_size: 20,
        ..Default::default()
    }
}

#[tokio::test]
async fn replica_lag_throttles_and_fails_closed() {
    let db = Db::start();
    let replica = Sandbox::start_with(SandboxOptions {
        server_id: 2,
        ..Default::default()
    })
    .unwrap();
    replica.replicate_from(db.sandbox.port()).await.unwrap();
    table(&db, 60_000).await;
    let rdb = mysql_async::Pool::new(replica.url().as_str());
    let run = start(
        &db,
        MigrationOptions {
            max_lag_millis: Some(500),
            ..opts()
        },
        vec![replica.settings()],
    );
    until("copy to start", Duration::from_secs(20), || {
        copied(&run) > 0
    })
    .await;
    let name = format!("replica 127.0.0.1:{}", replica.port());

    let mut rc = rdb.get_conn().await.unwrap();
    use mysql_async::prelude::Queryable;
    rc.query_drop("STOP SLAVE SQL_THREAD").await.unwrap();
    assert_throttled(&run, &name).await;
    assert!(run
        .progress
        .throttle_reasons()
        .iter()
        .any(|r| r.contains("replication stopped")));
    rc.query_drop("START SLAVE SQL_THREAD").await.unwrap();
    assert_resumes(&run).await;
    drop(rc);
    drop(rdb);

    // The whole replica gone: fail closed.
    assert_eq!(
        (run.progress.state(), run.progress.status().copy_done),
        (State::Running, false),
        "the copy must still run when the replica goes (a bigger table is needed)"
    );
    let mut replica = replica;
    replica.stop();
    assert_throttled(&run, "unreachable").await;
    assert!(run
        .progress
        .throttle_reasons()
        .iter()
        .any(|r| r.contains(&name)));
    run.task.abort();
}

#[tokio::test]
async fn load_schedule_query_and_url_throttle_and_clear() {
    let db = Db::start();
    table(&db, 80_000).await;
    db.exec("CREATE TABLE app.flag (id INT PRIMARY KEY, busy INT NOT NULL)")
        .await;
    db.exec("INSERT INTO app.flag VALUES (1, 0)").await;

    // A check URL served by the test: 503 while `down` is set.
    let down = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/ok", listener.local_addr().unwrap());
    let flag = down.clone();
    tokio::spawn(async move {
        let app = axum::Router::new().route(
            "/ok",
            axum::routing::get(move || {
                let flag = flag.clone();
                async move {
                    if flag.load(Ordering::Relaxed) {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        axum::http::StatusCode::OK
                    }
                }
            }),
        );
        axum::serve(listener, app).await.unwrap();
    });

    let base = MigrationOptions {
        throttle_query: Some("SELECT busy FROM app.flag WHERE id = 1".into()),
        check_url: Some(url),
        ..opts()
    };
    let run = start(&db, base.clone(), vec![]);
    until("copy to start", Duration::from_secs(20), || {
        copied(&run) > 0
    })
    .await;

    // Custom query.
    db.exec("UPDATE app.flag SET busy = 1").await;
    assert_throttled(&run, "throttle query returned 1").await;
    db.exec("UPDATE app.flag SET busy = 0").await;
    assert_resumes(&run).await;

    // Check URL.
    down.store(true, Ordering::Relaxed);
    assert_throttled(&run, "check URL answered 503").await;
    down.store(false, Ordering::Relaxed);
    assert_resumes(&run).await;

    // Load: Threads_running raised by sleeping sessions.
    let mut live = ThrottleSettings::from(&base);
    live.max_load = BTreeMap::from([("Threads_running".to_string(), 6)]);
    run.settings.send_replace(live.clone());
    let sleepers: Vec<_> = (0..6)
        .map(|_| {
            let pool = db.pool.clone();
            tokio::spawn(async move {
                use mysql_async::prelude::Queryable;
                let mut c = pool.get_conn().await.unwrap();
                let _ = c.query_drop("SELECT SLEEP(4)").await;
            })
        })
        .collect();
    // The clock starts once the load exists.
    let t = Instant::now();
    while db
        .scalar_u64(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP%'",
        )
        .await
        < 6
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "sleepers did not start"
        );
    }
    assert_throttled(&run, "Threads_running=").await;
    for s in sleepers {
        s.await.unwrap();
    }
    assert_resumes(&run).await;

    // A peak window covering now pauses; one that does not, does not (live settings).
    let now = chrono::Utc::now();
    let window =
        |start: chrono::DateTime<chrono::Utc>, end: chrono::DateTime<chrono::Utc>| PeakWindow {
            name: "lunch".into(),
            days: vec![],
            start: start.format("%H:%M").to_string(),
            end: end.format("%H:%M").to_string(),
            time_zone: "UTC".into(),
        };
    live.max_load.clear();
    live.peak_windows = vec![window(
        now + chrono::Duration::hours(2),
        now + chrono::Duration::hours(3),
    )];
    run.settings.send_replace(live.clone());
    assert_resumes(&run).await;
    assert!(!run
        .progress
        .throttle_reasons()
        .iter()
        .any(|r| r.contains("peak window")));
    live.peak_windows = vec![window(
        now - chrono::Duration::minutes(5),
        now + chrono::Duration::hours(1),
    )];
    run.settings.send_replace(live.clone());
    assert_throttled(&run, "peak window lunch").await;
    live.peak_windows.clear();
    run.settings.send_replace(live);
    let outcome = tokio::time::timeout(Duration::from_secs(120), run.task)
        .await
        .unwrap()
        .unwrap();
    assert!(outcome.is_ok(), "{outcome:?}");
    let sources = run.progress.throttle_sources();
    let secs = |n: &str| {
        sources
            .iter()
            .find(|s| s.name == n)
            .map(|s| s.throttled_seconds)
            .unwrap_or(0.0)
    };
    assert!(
        secs("custom") > 1.0 && secs("load") > 0.5 && secs("schedule") > 0.5,
        "{sources:?}"
    );
}

#[tokio::test]
async fn critical_load_fails_cleanly() {
    let db = Db::start();
    table(&db, 20_000).await;
    let before = dump(&db, "app.t", &["id", "v", "s"], "id").await;
    let o = MigrationOptions {
        critical_load: BTreeMap::from([("Threads_connected".to_string(), 1)]),
        critical_load_hits: 2,
        critical_load_action: CriticalLoadAction::Fail,
        ..opts()
    };
    let run = start(&db, o, vec![]);
    let r = tokio::time::timeout(Duration::from_secs(30), run.task)
        .await
        .unwrap()
        .unwrap();
    let err = r
        .expect_err("critical load must fail the migration")
        .to_string();
    assert!(
        err.contains("critical load Threads_connected=") && err.contains("2 checks in a row"),
        "{err}"
    );
    assert_eq!(run.progress.state(), State::Failed);
    assert_eq!(db.tables("app").await, vec!["t".to_string()]);
    assert_eq!(dump(&db, "app.t", &["id", "v", "s"], "id").await, before);
}

#[tokio::test]
async fn critical_load_can_pause_instead() {
    let db = Db::start();
    table(&db, 40_000).await;
    let o = MigrationOptions {
        critical_load: BTreeMap::from([("Threads_connected".to_string(), 1)]),
        critical_load_hits: 2,
        critical_load_action: CriticalLoadAction::Pause,
        ..opts()
    };
    let spec = db.spec("app", "t", "ADD COLUMN x INT NOT NULL DEFAULT 0", o.clone());
    let (mut controls, _tuning) = Controls::unattended(&spec.options);
    let pause = shadowcut::throttle::Switch::default();
    let (settings, rx) = watch::channel(ThrottleSettings::from(&o));
    controls.throttle = controls
        .throttle
        .with_source("manual", &pause)
        .with_settings(rx);
    let progress = Progress::new(Arc::new(NoObserver));
    let task = tokio::spawn(migration::run(spec, controls, progress.clone()));
    let run = Running {
        progress,
        task,
        settings,
    };
    assert_throttled(&run, "manual: critical load Threads_connected=").await;
    // The operator lowers the bar and resumes.
    run.settings.send_replace(ThrottleSettings::from(&opts()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    pause.set(None);
    let outcome = tokio::time::timeout(Duration::from_secs(120), run.task)
        .await
        .unwrap()
        .unwrap();
    assert!(outcome.is_ok(), "{outcome:?}");
}

/// Records when each chunk finished and how long it took.
#[derive(Default)]
struct ChunkLog(std::sync::Mutex<Vec<(Instant, Duration)>>);
impl shadowcut::progress::Observer for ChunkLog {
    fn chunk_copied(&self, _rows: u64, took: Duration) {
        if let Ok(mut l) = self.0.lock() {
            l.push((Instant::now(), took));
        }
    }
}

/// The copy's duty cycle: with `nice_percent` 400, after each chunk the copy pauses four times
/// the chunk's duration, so between the ends of two chunks at least that pause plus the next
/// chunk pass.
#[tokio::test]
async fn nice_percent_pauses_after_each_chunk() {
    let db = Db::start();
    table(&db, 30_000).await;
    let log = Arc::new(ChunkLog::default());
    let spec = db.spec(
        "app",
        "t",
        "ADD COLUMN x INT NOT NULL DEFAULT 0",
        MigrationOptions {
            chunk_size: 1_000,
            nice_percent: 400,
            ..Default::default()
        },
    );
    let (controls, tuning) = Controls::unattended(&spec.options);
    let progress = Progress::new(log.clone());
    let r = migration::run(spec, controls, progress.clone()).await;
    r.expect("migration completes");
    drop(tuning);
    let chunks = log.0.lock().unwrap().clone();
    assert!(chunks.len() >= 30, "{} chunks", chunks.len());
    let (mut gaps, mut due) = (Duration::ZERO, Duration::ZERO);
    for pair in chunks.windows(2) {
        gaps += pair[1].0 - pair[0].0;
        due += pair[0].1 * 4 + pair[1].1;
    }
    println!("between chunk ends: {gaps:?}; pauses plus chunks due: {due:?}");
    assert!(
        gaps >= due.mul_f64(0.95),
        "the copy did not pause: {gaps:?} between chunk ends, {due:?} due"
    );
}
