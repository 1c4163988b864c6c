//! Cut-over stress: hundreds of swaps (`cutover::swap`, not whole migrations) of small tables
//! with writers queued on the table both while A holds the lock and after B's RENAME is
//! queued, in autocommit and inside transactions, with and without CPU load.
//!
//! What must hold for every single swap (zero is the only acceptable count, see the notes'
//! Cut-over section: a naive variant leaked in 0.2%-62% of trials and a 30-run probe saw
//! nothing):
//! - no write of a queued writer lands in the old (archived) table, none is lost, none fails;
//! - the name never disappears for a client that uses the table (a watcher keeps querying it);
//! - the writers' stall per cut-over is measured and reported (p50/p95/max).
//!
//! And when the swap fails half-way (A's session killed, or a failure after B's RENAME is
//! queued), nothing is swapped and the queued writers succeed on the ORIGINAL table.
//!
//! Knobs: `SHADOWCUT_CUTOVER_TRIALS` (default 600), `SHADOWCUT_CUTOVER_SEED` (default: time).

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use shadowcut::conn::ConnSettings;
use shadowcut::cutover::{swap, CutoverPlan, SwapHooks};
use shadowcut::error::server_error;
use shadowcut::sandbox::Sandbox;
use shadowcut::shadow::HelperNames;
use shadowcut::sql::{qualified, quote_ident};
use tokio::task::JoinHandle;

const WAITING_FOR_MDL: &str = "Waiting for table metadata lock";
/// Writer connections per lane: at most 4 queue at each of the two moments.
const WRITERS_PER_LANE: usize = 8;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// xorshift64*: no extra dependency, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

/// A small random pause: nothing, a yield, or 1-3 ms.
async fn jitter(rng: &mut Rng) {
    match rng.below(5) {
        0 => {}
        1 => tokio::task::yield_now().await,
        n => tokio::time::sleep(Duration::from_millis(n - 1)).await,
    }
}

/// How a writer writes its row into `t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Autocommit, text protocol.
    Auto,
    /// Autocommit, a prepared statement (cached on the connection across swaps).
    AutoPrepared,
    /// `BEGIN; INSERT ..; COMMIT`.
    Txn,
    /// `BEGIN` and a write to another table before the lock; the `INSERT` into `t` and the
    /// `COMMIT` while `t` is locked.
    TxnPrior,
}

impl Mode {
    fn transactional(self) -> bool {
        matches!(self, Mode::Txn | Mode::TxnPrior)
    }
}

struct Job {
    conn: Conn,
    mode: Mode,
    id: i64,
    /// Qualified name of `t`.
    t: String,
}

struct Done {
    conn: Conn,
    mode: Mode,
    id: i64,
    result: Result<(), String>,
    waited: Duration,
}

impl Job {
    async fn run(self) -> Done {
        let Job {
            mut conn,
            mode,
            id,
            t,
        } = self;
        let started = Instant::now();
        let insert = format!("INSERT INTO {t} (id, v, src) VALUES ({id}, {id}, 'w')");
        let r: Result<(), mysql_async::Error> = async {
            match mode {
                Mode::Auto => conn.query_drop(&insert).await,
                Mode::AutoPrepared => {
                    conn.exec_drop(
                        format!("INSERT INTO {t} (id, v, src) VALUES (?, ?, 'w')"),
                        (id, id),
                    )
                    .await
                }
                Mode::Txn => {
                    conn.query_drop("BEGIN").await?;
                    conn.query_drop(&insert).await?;
                    conn.query_drop("COMMIT").await
                }
                Mode::TxnPrior => {
                    conn.query_drop(&insert).await?;
                    conn.query_drop("COMMIT").await
                }
            }
        }
        .await;
        let waited = started.elapsed();
        if r.is_err() && mode.transactional() {
            let _ = conn.query_drop("ROLLBACK").await;
        }
        Done {
            conn,
            mode,
            id,
            result: r.map_err(|e| describe(&e)),
            waited,
        }
    }
}

fn describe(e: &mysql_async::Error) -> String {
    match server_error(e) {
        Some((code, msg)) => format!("ERROR {code}: {msg}"),
        None => e.to_string(),
    }
}

fn cut_err(msg: impl Into<String>) -> shadowcut::Error {
    shadowcut::Error::Cutover(msg.into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sabotage {
    None,
    /// KILL A's connection from the `locked` hook (after the writers queued).
    KillAWhileLocked,
    /// KILL A's connection from the `rename_queued` hook.
    KillAOnceRenameQueued,
    /// The `rename_queued` hook fails (as anything between B's RENAME and A's release may).
    FailOnceRenameQueued,
}

/// Queues writers at the two moments of the swap and confirms each one waits on `t`.
struct StressHooks<'a> {
    admin: &'a mut Conn,
    rng: &'a mut Rng,
    at_lock: Vec<Job>,
    at_rename: Vec<Job>,
    running: Vec<JoinHandle<Done>>,
    sabotage: Sabotage,
    a_id: Option<u32>,
    rename_queued_called: bool,
    /// Time spent in the hooks (queueing writers and confirming them): part of the stall
    /// that is the test's, not the swap's.
    in_hooks: Duration,
}

impl StressHooks<'_> {
    /// Starts the writers and returns once every one is waiting for `t`'s metadata lock.
    async fn launch(&mut self, jobs: Vec<Job>) -> shadowcut::Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = jobs.iter().map(|j| j.conn.id().to_string()).collect();
        let first = self.running.len();
        for job in jobs {
            if self.rng.chance(3) {
                tokio::task::yield_now().await;
            }
            self.running.push(tokio::spawn(job.run()));
        }
        let sql = format!(
            "SELECT ID, STATE FROM information_schema.PROCESSLIST WHERE ID IN ({})",
            ids.join(",")
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.running[first..].iter().any(|h| h.is_finished()) {
                return Err(cut_err(
                    "a writer finished while the table was locked (it did not queue)",
                ));
            }
            let rows: Vec<(u64, Option<String>)> = self
                .admin
                .query(&sql)
                .await
                .map_err(|e| cut_err(format!("processlist: {e}")))?;
            let waiting = rows
                .iter()
                .filter(|(_, s)| s.as_deref() == Some(WAITING_FOR_MDL))
                .count();
            if waiting == ids.len() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(cut_err(format!(
                    "writers did not queue on the table within 10 s: {rows:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    async fn kill_a(&mut self) -> shadowcut::Result<()> {
        let id = self.a_id.expect("A's id is known once locked");
        self.admin
            .query_drop(format!("KILL CONNECTION {id}"))
            .await
            .map_err(|e| cut_err(format!("KILL A: {e}")))
    }
}

impl SwapHooks for StressHooks<'_> {
    async fn locked(&mut self, a: &mut Conn, _plan: &CutoverPlan) -> shadowcut::Result<()> {
        let started = Instant::now();
        let r = self.queue_while_locked(a).await;
        self.in_hooks += started.elapsed();
        r
    }

    async fn rename_queued(&mut self) -> shadowcut::Result<()> {
        let started = Instant::now();
        let r = self.queue_behind_rename().await;
        self.in_hooks += started.elapsed();
        r
    }
}

impl StressHooks<'_> {
    async fn queue_while_locked(&mut self, a: &mut Conn) -> shadowcut::Result<()> {
        self.a_id = Some(a.id());
        jitter(self.rng).await;
        let jobs = std::mem::take(&mut self.at_lock);
        self.launch(jobs).await?;
        jitter(self.rng).await;
        if self.sabotage == Sabotage::KillAWhileLocked {
            self.kill_a().await?;
        }
        Ok(())
    }

    async fn queue_behind_rename(&mut self) -> shadowcut::Result<()> {
        self.rename_queued_called = true;
        jitter(self.rng).await;
        let jobs = std::mem::take(&mut self.at_rename);
        self.launch(jobs).await?;
        jitter(self.rng).await;
        match self.sabotage {
            Sabotage::KillAOnceRenameQueued => self.kill_a().await?,
            Sabotage::FailOnceRenameQueued => return Err(cut_err("injected failure")),
            _ => {}
        }
        Ok(())
    }
}

/// Counters of one run, summed over lanes.
#[derive(Default)]
struct Stats {
    trials: u64,
    writers_before: u64,
    writers_after: u64,
    autocommit: u64,
    transactional: u64,
    /// Writer rows found in the old table.
    leaks: u64,
    /// Writer rows found in neither table.
    lost: u64,
    /// Writer failures and swap failures, described.
    errors: Vec<String>,
    stalls: Vec<Duration>,
    /// The stall minus the time the test's hooks took.
    own_stalls: Vec<Duration>,
    writer_waits: Vec<Duration>,
    /// (table, trials, leaks) per lane.
    per_lane: Vec<(String, u64, u64)>,
}

impl Stats {
    fn merge(&mut self, o: Stats) {
        self.trials += o.trials;
        self.writers_before += o.writers_before;
        self.writers_after += o.writers_after;
        self.autocommit += o.autocommit;
        self.transactional += o.transactional;
        self.leaks += o.leaks;
        self.lost += o.lost;
        self.errors.extend(o.errors);
        self.stalls.extend(o.stalls);
        self.own_stalls.extend(o.own_stalls);
        self.writer_waits.extend(o.writer_waits);
        self.per_lane.extend(o.per_lane);
    }
}

fn percentile_ms(v: &[Duration], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort();
    let i = ((s.len() - 1) as f64 * q).round() as usize;
    s[i].as_secs_f64() * 1000.0
}

/// Keeps querying the table's name; counts the times it was missing.
#[derive(Default, Debug)]
struct WatchReport {
    probes: u64,
    missing: u64,
    samples: Vec<String>,
}

struct Watcher {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<WatchReport>>,
}

impl Watcher {
    async fn start(settings: &ConnSettings, db: &str, table: &str) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        // A client using the table: takes its metadata lock, so it queues during the swap.
        {
            let mut conn = settings.connect("watcher").await.unwrap();
            let sql = format!("SELECT 1 FROM {} LIMIT 0", qualified(db, table));
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let mut r = WatchReport::default();
                while !stop.load(Ordering::Relaxed) {
                    r.probes += 1;
                    if let Err(e) = conn.query_drop(&sql).await {
                        r.missing += 1;
                        if r.samples.len() < 5 {
                            r.samples.push(format!("SELECT: {}", describe(&e)));
                        }
                    }
                    // Often enough to be queued in every swap (A holds the lock for several
                    // ms), without burning the CPU the swaps need.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                r
            }));
        }
        // The catalog view, without metadata locks.
        {
            let mut conn = settings.connect("watcher").await.unwrap();
            let sql = format!("SHOW TABLES FROM {} LIKE '{table}'", quote_ident(db));
            let table = table.to_string();
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let mut r = WatchReport::default();
                while !stop.load(Ordering::Relaxed) {
                    r.probes += 1;
                    match conn.query::<String, _>(&sql).await {
                        Ok(names) if names.contains(&table) => {}
                        Ok(names) => {
                            r.missing += 1;
                            if r.samples.len() < 5 {
                                r.samples.push(format!("{sql}: {names:?}"));
                            }
                        }
                        Err(e) => {
                            r.missing += 1;
                            if r.samples.len() < 5 {
                                r.samples.push(format!("{sql}: {}", describe(&e)));
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                r
            }));
        }
        Watcher { stop, tasks }
    }

    /// (SELECT report, SHOW TABLES report).
    async fn finish(self) -> (WatchReport, WatchReport) {
        self.stop.store(true, Ordering::Relaxed);
        let mut reports = Vec::new();
        for t in self.tasks {
            reports.push(t.await.unwrap());
        }
        let show = reports.pop().unwrap();
        let select = reports.pop().unwrap();
        (select, show)
    }
}

/// CPU load on the 2-core machine: writers hammering another table, and a spinning thread.
struct Load {
    stop: Arc<AtomicBool>,
    writes: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
    spinner: std::thread::JoinHandle<()>,
}

impl Load {
    async fn start(settings: &ConnSettings, admin: &mut Conn) -> Load {
        admin
            .query_drop("CREATE DATABASE IF NOT EXISTS loaddb")
            .await
            .unwrap();
        admin
            .query_drop(
                "CREATE TABLE IF NOT EXISTS loaddb.burn (id INT PRIMARY KEY, v BIGINT NOT NULL, pad VARCHAR(255))",
            )
            .await
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for w in 0..2u64 {
            let mut conn = settings.connect("load").await.unwrap();
            let stop = stop.clone();
            let writes = writes.clone();
            tasks.push(tokio::spawn(async move {
                let mut i = w * 1_000_000;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    conn.exec_drop(
                        "INSERT INTO loaddb.burn (id, v, pad) VALUES (?, 1, REPEAT('x', 200)) \
                         ON DUPLICATE KEY UPDATE v = v + 1",
                        ((i % 2000) as i64 + (w as i64) * 10_000,),
                    )
                    .await
                    .unwrap();
                    writes.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        let spin_stop = stop.clone();
        let spinner = std::thread::spawn(move || {
            let mut x: u64 = 1;
            while !spin_stop.load(Ordering::Relaxed) {
                for _ in 0..10_000 {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            }
        });
        Load {
            stop,
            writes,
            tasks,
            spinner,
        }
    }

    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        self.spinner.join().unwrap();
        self.writes.load(Ordering::Relaxed)
    }
}

/// One database with its `t`, shadow, changelog and side table, plus pre-opened writers.
struct Lane {
    lane: usize,
    settings: ConnSettings,
    db: String,
    table: String,
    admin: Conn,
    writers: Vec<Conn>,
    rng: Rng,
    next_id: i64,
    trial: u64,
    /// Replaces the swap placeholder's name (the negative control only).
    swap_name: Option<String>,
}

/// Seed rows that tell the tables apart: the old table holds `old`, the shadow `new`.
const SEED_OLD: i64 = -1;
const SEED_NEW: i64 = -2;

impl Lane {
    async fn new(settings: &ConnSettings, lane: usize, table: &str, seed: u64) -> Lane {
        let db = format!("stress{lane}");
        let mut admin = settings.connect("admin").await.unwrap();
        let names = HelperNames::for_table(table, "0").unwrap();
        let create = |name: &str| {
            format!(
                "CREATE TABLE {} (id INT PRIMARY KEY, v INT, src VARCHAR(8)) ENGINE=InnoDB",
                qualified(&db, name)
            )
        };
        for sql in [
            format!("CREATE DATABASE {}", quote_ident(&db)),
            create(table),
            create(&names.shadow),
            format!(
                "CREATE TABLE {} (id TINYINT UNSIGNED NOT NULL PRIMARY KEY, value BIGINT NOT NULL) ENGINE=InnoDB",
                qualified(&db, &names.changelog)
            ),
            format!(
                "CREATE TABLE {} (id BIGINT PRIMARY KEY, trial BIGINT NOT NULL) ENGINE=InnoDB",
                qualified(&db, "side")
            ),
            format!(
                "INSERT INTO {} VALUES ({SEED_OLD}, 0, 'old')",
                qualified(&db, table)
            ),
            format!(
                "INSERT INTO {} VALUES ({SEED_NEW}, 0, 'new')",
                qualified(&db, &names.shadow)
            ),
        ] {
            admin
                .query_drop(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        let mut writers = Vec::new();
        for _ in 0..WRITERS_PER_LANE {
            writers.push(settings.connect("writer").await.unwrap());
        }
        Lane {
            lane,
            settings: settings.clone(),
            db,
            table: table.to_string(),
            admin,
            writers,
            rng: Rng::new(seed ^ (lane as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            next_id: 1,
            trial: 0,
            swap_name: None,
        }
    }

    fn t(&self) -> String {
        qualified(&self.db, &self.table)
    }

    fn plan(&self, names: HelperNames) -> CutoverPlan {
        CutoverPlan {
            settings: self.settings.clone(),
            database: self.db.clone(),
            table: self.table.clone(),
            names,
            lock_timeout: Duration::from_secs(5),
            keep_old_table: true,
            kill_blockers_after: None,
        }
    }

    fn pick_modes(&mut self, k: usize) -> Vec<Mode> {
        let parity = self.rng.below(2) as usize;
        (0..k)
            .map(|i| {
                let txn = (i + parity) % 2 == 1;
                let alt = self.rng.chance(2);
                match (txn, alt) {
                    (false, false) => Mode::Auto,
                    (false, true) => Mode::AutoPrepared,
                    (true, false) => Mode::Txn,
                    (true, true) => Mode::TxnPrior,
                }
            })
            .collect()
    }

    /// Takes writers for `modes`, opening the transactions of `TxnPrior` ones now (before the
    /// lock).
    async fn jobs(&mut self, modes: &[Mode]) -> Vec<Job> {
        let mut jobs = Vec::new();
        for &mode in modes {
            let mut conn = self.writers.pop().expect("enough writer connections");
            let id = self.next_id;
            self.next_id += 1;
            if mode == Mode::TxnPrior {
                conn.query_drop("BEGIN").await.unwrap();
                conn.query_drop(format!(
                    "INSERT INTO {} (id, trial) VALUES ({id}, {})",
                    qualified(&self.db, "side"),
                    self.trial
                ))
                .await
                .unwrap();
            }
            jobs.push(Job {
                conn,
                mode,
                id,
                t: self.t(),
            });
        }
        jobs
    }

    /// Gives the connections of jobs that never ran back, ending their transactions.
    async fn reclaim(&mut self, jobs: Vec<Job>) {
        for mut job in jobs {
            if job.mode == Mode::TxnPrior {
                job.conn.query_drop("ROLLBACK").await.unwrap();
            }
            self.writers.push(job.conn);
        }
    }

    /// Ids of the rows from `src` in `table`; `None` if the table does not exist.
    async fn ids_in(&mut self, table: &str, src: &str) -> Option<BTreeSet<i64>> {
        let sql = format!(
            "SELECT id FROM {} WHERE src = '{src}'",
            qualified(&self.db, table)
        );
        match self.admin.query::<i64, _>(&sql).await {
            Ok(ids) => Some(ids.into_iter().collect()),
            Err(e) if server_error(&e).map(|(c, _)| c) == Some(1146) => None,
            Err(e) => panic!("{sql}: {e}"),
        }
    }

    /// Whether `table` has at least one row from `src` (false if it does not exist).
    async fn has(&mut self, table: &str, src: &str) -> bool {
        self.ids_in(table, src)
            .await
            .is_some_and(|ids| !ids.is_empty())
    }

    async fn tables(&mut self) -> BTreeSet<String> {
        self.admin
            .exec::<String, _, _>(
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?",
                (&self.db,),
            )
            .await
            .unwrap()
            .into_iter()
            .collect()
    }

    /// One swap with `k1` writers queued while locked and `k2` once the RENAME is queued.
    async fn trial(&mut self, stats: &mut Stats, sabotage: Sabotage) -> TrialOutcome {
        self.trial += 1;
        let stamp = format!("{}x{}", self.lane, self.trial);
        let mut names = HelperNames::for_table(&self.table, &stamp).unwrap();
        if let Some(swap_name) = &self.swap_name {
            names.swap = swap_name.clone();
        }
        let plan = self.plan(names.clone());
        let k1 = 1 + self.rng.below(4) as usize;
        let k2 = if sabotage == Sabotage::KillAWhileLocked {
            // After A's death nothing is locked any more: writers could not queue.
            0
        } else {
            1 + self.rng.below(4) as usize
        };
        let modes1 = self.pick_modes(k1);
        let modes2 = self.pick_modes(k2);
        let at_lock = self.jobs(&modes1).await;
        let at_rename = self.jobs(&modes2).await;
        let prior: Vec<i64> = at_lock
            .iter()
            .chain(&at_rename)
            .filter(|j| j.mode == Mode::TxnPrior)
            .map(|j| j.id)
            .collect();

        let mut hooks = StressHooks {
            admin: &mut self.admin,
            rng: &mut self.rng,
            at_lock,
            at_rename,
            running: Vec::new(),
            sabotage,
            a_id: None,
            rename_queued_called: false,
            in_hooks: Duration::ZERO,
        };
        let result = swap(&plan, &mut hooks).await;
        let StressHooks {
            at_lock,
            at_rename,
            running,
            rename_queued_called,
            in_hooks,
            ..
        } = hooks;
        self.reclaim(at_lock).await;
        self.reclaim(at_rename).await;

        let mut launched = BTreeSet::new();
        let mut ok_ids = BTreeSet::new();
        let mut ok_prior = BTreeSet::new();
        for h in running {
            let done = h.await.unwrap();
            launched.insert(done.id);
            stats.writer_waits.push(done.waited);
            match &done.result {
                Ok(()) => {
                    ok_ids.insert(done.id);
                    if done.mode == Mode::TxnPrior {
                        ok_prior.insert(done.id);
                    }
                }
                Err(e) => stats.errors.push(format!(
                    "{} trial {}: writer {} ({:?}) failed: {e}",
                    self.db, self.trial, done.id, done.mode
                )),
            }
            if done.mode.transactional() {
                stats.transactional += 1;
            } else {
                stats.autocommit += 1;
            }
            self.writers.push(done.conn);
        }
        stats.trials += 1;
        stats.writers_before += modes1.len() as u64;
        if rename_queued_called {
            stats.writers_after += modes2.len() as u64;
        }

        // Where did the rows go?
        let tables = self.tables().await;
        let table = self.table.clone();
        let in_t = self.ids_in(&table, "w").await.expect("t exists");
        let t_seed_old = self.has(&table, "old").await;
        let t_seed_new = self.has(&table, "new").await;
        let side_sql = format!(
            "SELECT id FROM {} WHERE trial = {}",
            qualified(&self.db, "side"),
            self.trial
        );
        let side: BTreeSet<i64> = self
            .admin
            .query::<i64, _>(&side_sql)
            .await
            .unwrap()
            .into_iter()
            .collect();
        let committed_prior: BTreeSet<i64> = prior
            .iter()
            .copied()
            .filter(|id| ok_prior.contains(id))
            .collect();
        if side != committed_prior {
            stats.errors.push(format!(
                "{} trial {}: side-table rows of the transactions {side:?}, expected {committed_prior:?}",
                self.db, self.trial
            ));
        }

        match result {
            Ok(swapped) => {
                stats.stalls.push(swapped.stall);
                stats
                    .own_stalls
                    .push(swapped.stall.saturating_sub(in_hooks));
                assert_eq!(
                    swapped.old_table.as_deref(),
                    Some(names.archive.as_str()),
                    "the old table is archived"
                );
                let in_old = self
                    .ids_in(&names.archive, "w")
                    .await
                    .expect("archive exists");
                let old_seed = self.has(&names.archive, "old").await;
                let leaked = in_old.intersection(&launched).count() as u64;
                stats.leaks += leaked;
                let lost = ok_ids
                    .iter()
                    .filter(|id| !in_t.contains(id) && !in_old.contains(id))
                    .count() as u64;
                stats.lost += lost;
                if leaked > 0 {
                    eprintln!(
                        "LEAK {} trial {}: rows {in_old:?} landed in the old table (k1={k1} {modes1:?}, k2={k2} {modes2:?})",
                        self.db, self.trial
                    );
                }
                let expected: BTreeSet<String> = [
                    self.table.clone(),
                    names.changelog.clone(),
                    names.archive.clone(),
                    "side".to_string(),
                ]
                .into();
                if tables != expected || !old_seed || !t_seed_new || t_seed_old {
                    stats.errors.push(format!(
                        "{} trial {}: after the swap the tables are {tables:?} (old seed in archive: {old_seed}, t has new seed: {t_seed_new}, t has old seed: {t_seed_old})",
                        self.db, self.trial
                    ));
                }
                // Next trial: the archive (emptied) becomes the shadow, `t` is emptied and
                // seeded as the old table. The name `t` never goes away.
                let t = self.t();
                let archive = qualified(&self.db, &names.archive);
                let shadow = qualified(&self.db, &names.shadow);
                for sql in [
                    format!("DELETE FROM {archive}"),
                    format!("RENAME TABLE {archive} TO {shadow}"),
                    format!("DELETE FROM {t}"),
                    format!("INSERT INTO {t} VALUES ({SEED_OLD}, 0, 'old')"),
                    format!("INSERT INTO {shadow} VALUES ({SEED_NEW}, 0, 'new')"),
                ] {
                    self.admin
                        .query_drop(&sql)
                        .await
                        .unwrap_or_else(|e| panic!("{sql}: {e}"));
                }
                TrialOutcome::Swapped
            }
            Err(e) => {
                let in_shadow = self.ids_in(&names.shadow, "w").await.unwrap_or_default();
                let shadow_seed = self.has(&names.shadow, "new").await;
                let lost = ok_ids.iter().filter(|id| !in_t.contains(id)).count() as u64;
                stats.lost += lost;
                let expected: BTreeSet<String> = [
                    self.table.clone(),
                    names.shadow.clone(),
                    names.changelog.clone(),
                    "side".to_string(),
                ]
                .into();
                let untouched = tables == expected
                    && t_seed_old
                    && !t_seed_new
                    && shadow_seed
                    && in_shadow.is_empty();
                // Undo the writers' rows on the original, whatever happened.
                let t = self.t();
                self.admin
                    .query_drop(format!("DELETE FROM {t} WHERE src = 'w'"))
                    .await
                    .unwrap();
                TrialOutcome::Failed {
                    error: e.to_string(),
                    untouched,
                    detail: format!(
                        "tables {tables:?}; t has old seed: {t_seed_old}, new seed: {t_seed_new}; shadow seed: {shadow_seed}; writer rows in shadow: {in_shadow:?}; lost: {lost}"
                    ),
                }
            }
        }
    }

    async fn finish(self) {
        for c in self.writers {
            let _ = c.disconnect().await;
        }
        let _ = self.admin.disconnect().await;
    }
}

enum TrialOutcome {
    Swapped,
    Failed {
        error: String,
        untouched: bool,
        detail: String,
    },
}

/// Runs `trials` swaps spread over the lanes, all lanes at once.
async fn run_lanes(lanes: Vec<Lane>, trials: u64) -> (Vec<Lane>, Stats) {
    let n = lanes.len() as u64;
    let mut handles = Vec::new();
    for (i, mut lane) in lanes.into_iter().enumerate() {
        let count = trials / n + u64::from((i as u64) < trials % n);
        handles.push(tokio::spawn(async move {
            let mut stats = Stats::default();
            for _ in 0..count {
                if let TrialOutcome::Failed { error, detail, .. } =
                    lane.trial(&mut stats, Sabotage::None).await
                {
                    stats.errors.push(format!(
                        "{} trial {}: swap failed: {error} ({detail})",
                        lane.db, lane.trial
                    ));
                }
            }
            stats
                .per_lane
                .push((lane.table.clone(), stats.trials, stats.leaks));
            (lane, stats)
        }));
    }
    let mut lanes = Vec::new();
    let mut stats = Stats::default();
    for h in handles {
        let (lane, s) = h.await.unwrap();
        lanes.push(lane);
        stats.merge(s);
    }
    (lanes, stats)
}

fn start_sandbox() -> Sandbox {
    Sandbox::start().expect("start a MariaDB sandbox (is mariadb-server installed?)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundreds_of_cutovers_leak_no_write_and_never_lose_the_name() {
    let started = Instant::now();
    let total = env_u64("SHADOWCUT_CUTOVER_TRIALS").unwrap_or(600);
    let seed = env_u64("SHADOWCUT_CUTOVER_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    eprintln!("cut-over stress: seed {seed} (SHADOWCUT_CUTOVER_SEED to repeat)");
    let sandbox = start_sandbox();
    let settings = sandbox.settings();
    let mut admin = settings.connect("admin").await.unwrap();

    // Three lanes: `t`, `Users` (upper case) and `orders`, in separate databases. One run
    // with the shadow named `_t_new` (sorting before `t`, not before `Users`) leaked in lane
    // `t` once in 600 trials under load; `tests/cutover_mdl.rs` forces that case.
    let mut lanes = Vec::new();
    for (i, table) in ["t", "Users", "orders"].into_iter().enumerate() {
        lanes.push(Lane::new(&settings, i, table, seed).await);
    }
    let mut watchers = Vec::new();
    for lane in &lanes {
        watchers.push(Watcher::start(&settings, &lane.db, &lane.table).await);
    }

    let loaded_trials = total * 2 / 5;
    let quiet_trials = total - loaded_trials;
    let (lanes, mut stats) = run_lanes(lanes, quiet_trials).await;
    let quiet_elapsed = started.elapsed();
    let load = Load::start(&settings, &mut admin).await;
    let (lanes, loaded) = run_lanes(lanes, loaded_trials).await;
    let load_writes = load.finish().await;
    let _ = admin.disconnect().await;
    let stall_line = |name: &str, s: &Stats| {
        format!(
            "{name}: stall p50 {:.1} / p95 {:.1} / max {:.1} ms (without the test's hooks: p50 {:.1} / p95 {:.1} / max {:.1} ms); writer wait p50 {:.1} / max {:.1} ms",
            percentile_ms(&s.stalls, 0.5),
            percentile_ms(&s.stalls, 0.95),
            percentile_ms(&s.stalls, 1.0),
            percentile_ms(&s.own_stalls, 0.5),
            percentile_ms(&s.own_stalls, 0.95),
            percentile_ms(&s.own_stalls, 1.0),
            percentile_ms(&s.writer_waits, 0.5),
            percentile_ms(&s.writer_waits, 1.0),
        )
    };
    let quiet_line = stall_line("quiet", &stats);
    let loaded_line = stall_line("under load", &loaded);
    stats.merge(loaded);

    let mut select = WatchReport::default();
    let mut show = WatchReport::default();
    for w in watchers {
        let (s, t) = w.finish().await;
        select.probes += s.probes;
        select.missing += s.missing;
        select.samples.extend(s.samples);
        show.probes += t.probes;
        show.missing += t.missing;
        show.samples.extend(t.samples);
    }
    for lane in lanes {
        lane.finish().await;
    }

    let elapsed = started.elapsed();
    println!(
        "cut-over stress: {} trials ({quiet_trials} quiet in {:.1} s, {loaded_trials} under CPU load: a spinning thread and {load_writes} background writes), runtime {:.1} s",
        stats.trials,
        quiet_elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
    );
    println!(
        "  writers queued: {} ({} while A held the lock, {} behind the queued RENAME; {} autocommit, {} in transactions)",
        stats.writers_before + stats.writers_after,
        stats.writers_before,
        stats.writers_after,
        stats.autocommit,
        stats.transactional,
    );
    println!(
        "  leaks {} (writes in the old table), lost {}, writer/swap errors {}, `t` missing for a client (SELECT) {} of {} probes",
        stats.leaks,
        stats.lost,
        stats.errors.len(),
        select.missing,
        select.probes,
    );
    println!("  {}", stall_line("all", &stats));
    println!("  {quiet_line}");
    println!("  {loaded_line}");
    // Not asserted: catalog reads take no metadata lock and miss the name while any RENAME
    // of it runs, the single atomic RENAME included (see
    // `catalog_reads_miss_the_name_only_while_a_rename_runs`).
    println!(
        "  SHOW TABLES LIKE (no metadata lock; informational) missed `t` in {} of {} probes",
        show.missing, show.probes
    );
    for e in stats.errors.iter().take(20) {
        println!("  error: {e}");
    }
    for s in select.samples.iter().take(10) {
        println!("  name missing: {s}");
    }
    assert!(
        total >= 500 || env_u64("SHADOWCUT_CUTOVER_TRIALS").is_some(),
        "at least 500 trials"
    );
    assert_eq!(stats.trials, total);
    assert_eq!(stats.leaks, 0, "writes landed in the old table");
    assert_eq!(stats.lost, 0, "writes were lost");
    assert!(stats.errors.is_empty(), "errors: {:#?}", stats.errors);
    assert_eq!(select.missing, 0, "a client saw the table missing");
}

/// Negative control: the harness must see the leak of gh-ost's placeholder shape, a swap name
/// sorting BEFORE the table (`_t_del` < `t`), which the notes measured at 0.2-0.6% of trials
/// with DROP and UNLOCK as two statements. `_Users_del` sorts after `Users`: that lane is the
/// control within the control and must not leak. Slow and statistical, hence ignored:
/// `cargo test --test cutover_stress negative_control -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore]
async fn negative_control_placeholder_sorting_first_leaks() {
    let total = env_u64("SHADOWCUT_CUTOVER_TRIALS").unwrap_or(1500);
    let seed = env_u64("SHADOWCUT_CUTOVER_SEED").unwrap_or(11);
    let sandbox = start_sandbox();
    let settings = sandbox.settings();
    let mut lanes = Vec::new();
    for (i, table) in ["t", "Users", "orders"].into_iter().enumerate() {
        let mut lane = Lane::new(&settings, i, table, seed).await;
        lane.swap_name = Some(format!("_{table}_del"));
        lanes.push(lane);
    }
    let (lanes, stats) = run_lanes(lanes, total).await;
    for lane in lanes {
        lane.finish().await;
    }
    println!(
        "negative control: {} trials, leaks {} (rows), per lane (table, trials, leaked rows): {:?}; errors {}",
        stats.trials,
        stats.leaks,
        stats.per_lane,
        stats.errors.len()
    );
    let users = stats
        .per_lane
        .iter()
        .find(|(t, _, _)| t == "Users")
        .unwrap();
    assert_eq!(users.2, 0, "`_Users_del` sorts after `Users`: no leak");
    assert!(stats.leaks > 0, "the harness did not see the known leak");
}

/// Runs sabotaged swaps on one lane: each must fail, swap nothing, and let the queued writers
/// through to the original table.
async fn sabotaged(sabotage: Sabotage, rounds: usize) {
    let sandbox = start_sandbox();
    let settings = sandbox.settings();
    let seed = env_u64("SHADOWCUT_CUTOVER_SEED").unwrap_or(7);
    let mut lane = Lane::new(&settings, 0, "t", seed).await;
    let watcher = Watcher::start(&settings, &lane.db, &lane.table).await;
    let mut stats = Stats::default();
    let mut failures = Vec::new();
    for _ in 0..rounds {
        match lane.trial(&mut stats, sabotage).await {
            TrialOutcome::Swapped => {
                failures.push(format!(
                    "trial {}: the swap succeeded although {sabotage:?}",
                    lane.trial
                ));
                break;
            }
            TrialOutcome::Failed {
                error,
                untouched,
                detail,
            } => {
                if !untouched {
                    failures.push(format!(
                        "trial {}: swap failed ({error}) but the tables changed: {detail}",
                        lane.trial
                    ));
                    // The lane's tables are not in a known state any more.
                    break;
                }
            }
        }
    }
    let (select, _show) = watcher.finish().await;
    lane.finish().await;
    println!(
        "{sabotage:?}: {rounds} swaps, {} writers ({} while locked, {} after the RENAME), writer errors {}, lost {}, name missing {}/{}",
        stats.writers_before + stats.writers_after,
        stats.writers_before,
        stats.writers_after,
        stats.errors.len(),
        stats.lost,
        select.missing,
        select.probes
    );
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(stats.errors.is_empty(), "{:#?}", stats.errors);
    assert_eq!(stats.lost, 0);
    assert_eq!(select.missing, 0, "{:?}", select.samples);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_a_while_locked_swaps_nothing() {
    sabotaged(Sabotage::KillAWhileLocked, 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_a_once_the_rename_is_queued_swaps_nothing() {
    sabotaged(Sabotage::KillAOnceRenameQueued, 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failure_once_the_rename_is_queued_swaps_nothing() {
    sabotaged(Sabotage::FailOnceRenameQueued, 20).await;
}

/// Why the stress test does not assert on `SHOW TABLES`: catalog reads take no metadata lock,
/// and MariaDB's `SHOW TABLES LIKE 't'` returns nothing while a RENAME of `t` executes, even
/// the classic single-statement atomic swap `RENAME TABLE t TO tmp, new TO t, tmp TO new`
/// (measured on 10.11: ~25% of probes during a loop of such RENAMEs). No swap can avoid it.
/// What must hold, and is asserted: the name is listed while A holds the lock and while B's
/// RENAME is queued, i.e. for the whole stall except the RENAME's own execution.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn catalog_reads_miss_the_name_only_while_a_rename_runs() {
    let sandbox = start_sandbox();
    let settings = sandbox.settings();
    let mut a = settings.connect("a").await.unwrap();
    for sql in [
        "CREATE DATABASE p",
        "CREATE TABLE p.t (id INT PRIMARY KEY)",
        "CREATE TABLE p._t_new (id INT PRIMARY KEY)",
        "CREATE TABLE p.x (id INT PRIMARY KEY)",
        "SET SESSION lock_wait_timeout = 10",
    ] {
        a.query_drop(sql).await.unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let miss = Arc::new(AtomicU64::new(0));
    let probes = Arc::new(AtomicU64::new(0));
    let mut w = settings.connect("watcher").await.unwrap();
    let (s2, m2, p2) = (stop.clone(), miss.clone(), probes.clone());
    let watcher = tokio::spawn(async move {
        while !s2.load(Ordering::Relaxed) {
            let n: Vec<String> = w.query("SHOW TABLES FROM p LIKE 't'").await.unwrap();
            p2.fetch_add(1, Ordering::Relaxed);
            if n.is_empty() {
                m2.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let counters = || (miss.load(Ordering::Relaxed), probes.load(Ordering::Relaxed));
    let mut phases = Vec::new();
    let mut phase = |name: &'static str, before: (u64, u64), after: (u64, u64)| {
        let (m, p) = (after.0 - before.0, after.1 - before.1);
        println!("SHOW TABLES LIKE 't', {name}: missed {m} of {p} probes");
        phases.push((name, m, p));
    };
    let pause = || tokio::time::sleep(Duration::from_millis(300));

    let c = counters();
    pause().await;
    phase("idle", c, counters());

    // The swap's shape, held at its two moments.
    a.query_drop("CREATE TABLE p.`t~sc` (id INT)")
        .await
        .unwrap();
    a.query_drop("LOCK TABLES p.t WRITE, p.`t~sc` WRITE")
        .await
        .unwrap();
    let c = counters();
    pause().await;
    phase("A holds the lock", c, counters());
    let mut b = settings.connect("b").await.unwrap();
    let b_id = b.id();
    let rename = tokio::spawn(async move {
        b.query_drop("RENAME TABLE p.t TO p.`t~sc`, p._t_new TO p.t")
            .await
            .unwrap();
        b
    });
    let mut admin = settings.connect("admin").await.unwrap();
    loop {
        let state: Option<Option<String>> = admin
            .exec_first(
                "SELECT STATE FROM information_schema.PROCESSLIST WHERE ID = ?",
                (b_id,),
            )
            .await
            .unwrap();
        if state.flatten().as_deref() == Some(WAITING_FOR_MDL) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let c = counters();
    pause().await;
    phase("B's RENAME queued", c, counters());
    let c = counters();
    a.query_drop("DROP TABLE p.`t~sc`").await.unwrap();
    a.query_drop("UNLOCK TABLES").await.unwrap();
    let _b = rename.await.unwrap();
    phase("A releases, the RENAME runs", c, counters());

    let c = counters();
    for _ in 0..100 {
        a.query_drop("RENAME TABLE p.x TO p.y, p.y TO p.x")
            .await
            .unwrap();
    }
    phase("100 RENAMEs of another table", c, counters());
    let c = counters();
    for _ in 0..100 {
        a.query_drop("RENAME TABLE p.t TO p.tmp, p.`t~sc` TO p.t, p.tmp TO p.`t~sc`")
            .await
            .unwrap();
    }
    phase("100 single atomic swap RENAMEs of t", c, counters());
    stop.store(true, Ordering::Relaxed);
    watcher.await.unwrap();
    let _ = admin.disconnect().await;
    let _ = a.disconnect().await;

    for (name, m, p) in phases {
        if matches!(
            name,
            "idle" | "A holds the lock" | "B's RENAME queued" | "100 RENAMEs of another table"
        ) {
            assert!(p > 0, "{name}: no probe ran");
            assert_eq!(m, 0, "{name}: SHOW TABLES missed t");
        }
    }
}
