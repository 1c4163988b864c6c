//! `bench`: the server's own `ALTER TABLE .. ALGORITHM=COPY` against a shadowcut migration of
//! the same change, on the same server, on identical sysbench-shaped tables, idle and under a
//! sysbench write load. See docs/benchmark.md.
//!
//! Per mode: load `sbtest.sbtest1` (N rows), copy it to a fresh identical table, time the
//! server's ALTER on `sbtest1` (with the writers running, if any), put the fresh copy in its
//! place, time shadowcut's migration of the same change (writers running again), verify.
//!
//! `--mode throttle` is a separate benchmark (module `throttle`): the application's latency
//! and a replica's lag while shadowcut migrates the table with replica-lag throttling.

#[path = "bench/data.rs"]
mod data;
#[path = "bench/host.rs"]
mod host;
#[path = "bench/lag.rs"]
mod lag;
#[path = "bench/latency.rs"]
mod latency;
#[path = "bench/throttle.rs"]
mod throttle;
#[path = "bench/writers.rs"]
mod writers;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use mysql_async::Conn;
use shadowcut::conn::ConnSettings;
use shadowcut::migration::{self, Controls, MigrationOptions, MigrationSpec};
use shadowcut::progress::{ChangeKind, Observer, Progress};
use shadowcut::sandbox::{Sandbox, SandboxOptions};
use shadowcut::state::Step;

use data::Loader;
use writers::{Load, Target, WriterReport, Writers};

#[derive(Parser)]
#[command(
    name = "bench",
    about = "Times the server's ALTER TABLE .. ALGORITHM=COPY against shadowcut's migration of \
             the same change, idle and under sysbench write loads; --mode throttle measures the \
             application's latency and a replica's lag during a throttled migration"
)]
struct Args {
    /// Rows in the sysbench-shaped table.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Which load to run the two migrations under; `throttle` is the separate replica-lag
    /// benchmark (not part of `all`).
    #[arg(long, value_enum, default_value_t = ModeArg::All)]
    mode: ModeArg,
    /// shadowcut's rows per copy chunk.
    #[arg(long, default_value_t = MigrationOptions::default().chunk_size)]
    chunk_size: u64,
    /// Use a server you started yourself on 127.0.0.1:PORT (root, no password, ROW binlog)
    /// instead of starting a sandbox. Its `sbtest` database is DROPPED and re-created.
    #[arg(long)]
    port: Option<u16>,
    /// InnoDB buffer pool of the bench's own sandbox, in MiB.
    #[arg(long, default_value_t = 1024)]
    buffer_pool_mb: u32,
    /// Transactions per second of the `rate` and `throttle` modes.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// sysbench threads in the `rate`, `unthrottled` and `throttle` modes.
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// Seconds the writers run before each timed migration (their baseline) and after it.
    #[arg(long, default_value_t = 3)]
    warmup_secs: u64,
    /// Runs every mode this many times (the machine may be noisy).
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// How the table is loaded.
    #[arg(long, value_enum, default_value_t = Loader::Sequence)]
    loader: Loader,
    /// Cancels a shadowcut migration still running after this many seconds (under writes the
    /// replay may not catch up) and reports the mode as failed.
    #[arg(long, default_value_t = 600)]
    migration_timeout_secs: u64,
    /// Exit with status 1 when a target is missed (idle ratio > 2.0, writer errors under
    /// shadowcut; in `throttle` mode p99 > 1.5x the baseline's, replica lag > 2x
    /// max_lag_millis), not only when a run fails or its verification does.
    #[arg(long)]
    check: bool,
    /// `throttle` mode: seconds of the baseline phase (the write load without a migration).
    #[arg(long, default_value_t = 30)]
    baseline_secs: u64,
    /// `throttle` mode: the migration's max_lag_millis for the replica.
    #[arg(long, default_value_t = 1000)]
    max_lag_millis: u64,
    /// `throttle` mode: the migration's nice_percent (pause after each chunk, in percent of
    /// the chunk's duration).
    #[arg(long, default_value_t = 0)]
    nice_percent: u32,
    /// `throttle` mode: how often the bench reads its heartbeat on the replica, in ms.
    #[arg(long, default_value_t = 100)]
    lag_sample_millis: u64,
    /// `throttle` mode: keep the old table, as shadowcut does by default (the bench drops it
    /// after the measurement); without it the migration drops it, as in the other modes.
    #[arg(long)]
    keep_old_table: bool,
    /// `throttle` mode: also write every lag sample and every per-second sysbench report to
    /// this CSV file (seconds from the start of the baseline).
    #[arg(long)]
    samples_csv: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    Idle,
    Rate,
    Unthrottled,
    All,
    Throttle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Idle,
    Rate,
    Unthrottled,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Idle => "idle",
            Mode::Rate => "rate",
            Mode::Unthrottled => "unthrottled",
        }
    }

    fn load(self, args: &Args) -> Option<Load> {
        match self {
            Mode::Idle => None,
            Mode::Rate => Some(Load {
                threads: args.threads,
                rate: args.rate,
            }),
            Mode::Unthrottled => Some(Load {
                threads: args.threads,
                rate: 0,
            }),
        }
    }
}

const IDLE_RATIO_TARGET: f64 = 2.0;

/// Time spent in each step of the migration, in order.
#[derive(Debug, Clone, Default)]
struct Phases(Vec<(Step, Duration)>);

/// Collects every copied chunk's duration.
#[derive(Default)]
struct ChunkTimes(Mutex<Vec<(u64, Duration)>>);

impl Observer for ChunkTimes {
    fn chunk_copied(&self, rows: u64, took: Duration) {
        self.0.lock().unwrap().push((rows, took));
    }
}

struct ShadowcutRun {
    took: Duration,
    /// Row changes the replay applied: inserts, updates, deletes.
    replayed: [u64; 3],
    /// The largest backlog of read but unapplied row events seen.
    max_backlog: u64,
    phases: Phases,
    chunks: Vec<(u64, Duration)>,
    /// How long the cut-over held the writers; `None` if the migration did not finish.
    stall: Option<Duration>,
    /// Why the migration was cancelled: it had not finished within --migration-timeout-secs.
    unfinished: Option<String>,
}

/// A mode that did not produce a result (e.g. the migration did not finish in time).
struct Failure {
    mode: Mode,
    what: String,
}

struct ModeResult {
    label: String,
    mode: Mode,
    rows: u64,
    load: Duration,
    alter: Duration,
    shadowcut: ShadowcutRun,
    alter_writers: Option<WriterReport>,
    shadowcut_writers: Option<WriterReport>,
    verified: String,
}

impl ModeResult {
    /// shadowcut's time over the server ALTER's; `None` if shadowcut did not finish.
    fn ratio(&self) -> Option<f64> {
        if self.shadowcut.unfinished.is_some() {
            return None;
        }
        Some(self.shadowcut.took.as_secs_f64() / self.alter.as_secs_f64())
    }

    fn ratio_text(&self) -> String {
        match self.ratio() {
            Some(r) => format!("{r:.2}"),
            None => "-".to_string(),
        }
    }

    fn shadowcut_text(&self) -> String {
        match self.shadowcut.unfinished {
            None => secs(self.shadowcut.took),
            Some(_) => format!(">{:.0} (unfinished)", self.shadowcut.took.as_secs_f64()),
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHADOWCUT_LOG")
                .unwrap_or_else(|_| "shadowcut=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match bench(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Returns whether every run passed (and, with --check, met the targets).
fn bench(args: Args) -> anyhow::Result<bool> {
    if args.rows == 0 {
        bail!("--rows must be at least 1");
    }
    let probe = MigrationOptions {
        chunk_size: args.chunk_size,
        ..MigrationOptions::default()
    };
    if let Err(e) = probe.validate() {
        bail!("{e}");
    }
    let modes: Vec<Mode> = match args.mode {
        ModeArg::Idle => vec![Mode::Idle],
        ModeArg::Rate => vec![Mode::Rate],
        ModeArg::Unthrottled => vec![Mode::Unthrottled],
        ModeArg::All => vec![Mode::Idle, Mode::Rate, Mode::Unthrottled],
        ModeArg::Throttle => return throttle::run(&args),
    };
    let needs_sysbench = args.loader == Loader::Sysbench || modes.iter().any(|m| *m != Mode::Idle);
    let sysbench = if needs_sysbench {
        Some(writers::find_sysbench()?)
    } else {
        None
    };

    // Declared before the runtime so that it outlives every task using it.
    let sandbox;
    let port = match args.port {
        Some(3306) => bail!(
            "refusing port 3306: the bench drops and re-creates the sbtest database; \
             point it at a throwaway server you started yourself, or let it start its own"
        ),
        Some(p) => p,
        None => {
            eprintln!(
                "starting a sandbox MariaDB (buffer pool {} MiB)...",
                args.buffer_pool_mb
            );
            sandbox = Sandbox::start_with(SandboxOptions {
                buffer_pool_mb: args.buffer_pool_mb,
                ..SandboxOptions::default()
            })
            .context("starting the sandbox server")?;
            eprintln!(
                "sandbox on 127.0.0.1:{} (error log {})",
                sandbox.port(),
                sandbox.error_log().display()
            );
            sandbox.port()
        }
    };
    let settings = ConnSettings {
        host: "127.0.0.1".to_string(),
        port,
        user: "root".to_string(),
        password: None,
    };

    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    let (results, failures) = runtime.block_on(async {
        tokio::select! {
            r = run_all(&args, &modes, &settings, sysbench.as_ref()) => r,
            _ = tokio::signal::ctrl_c() => bail!(
                "interrupted{}",
                if args.port.is_some() {
                    "; the sbtest database may hold shadowcut's helper tables"
                } else {
                    ""
                }
            ),
        }
    })?;
    drop(runtime);

    print_results(&args, &results, &failures);
    for f in &failures {
        println!("FAILED: {}", f.what);
    }
    let mut ok = failures.is_empty();
    if args.check {
        ok &= targets(&results, &failures).iter().all(|(_, met)| *met);
    }
    Ok(ok)
}

async fn run_all(
    args: &Args,
    modes: &[Mode],
    settings: &ConnSettings,
    sysbench: Option<&PathBuf>,
) -> anyhow::Result<(Vec<ModeResult>, Vec<Failure>)> {
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for round in 1..=args.repeat {
        for &mode in modes {
            let label = if args.repeat > 1 {
                format!("{} #{round}", mode.name())
            } else {
                mode.name().to_string()
            };
            let r = match run_mode(args, mode, settings, sysbench, &label).await {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("[{label}] FAILED: {e:#}");
                    failures.push(Failure {
                        mode,
                        what: format!("{label}: {e:#}"),
                    });
                    continue;
                }
            };
            eprintln!(
                "[{label}] ALTER COPY {:.2} s, shadowcut {} s, ratio {}",
                r.alter.as_secs_f64(),
                r.shadowcut_text(),
                r.ratio_text()
            );
            results.push(r);
        }
    }
    Ok((results, failures))
}

async fn admin(settings: &ConnSettings) -> anyhow::Result<Conn> {
    // A long lock wait: the server's ALTER may queue behind the writers' transactions.
    Ok(settings.connect_with_lock_wait("the bench", 3600).await?)
}

async fn start_writers(
    args: &Args,
    mode: Mode,
    port: u16,
    sysbench: Option<&PathBuf>,
    label: &str,
) -> anyhow::Result<Option<Writers>> {
    let Some(load) = mode.load(args) else {
        return Ok(None);
    };
    let sysbench = sysbench.expect("sysbench was found for the write modes");
    let target = Target {
        port,
        database: data::DATABASE.to_string(),
        table_size: args.rows,
    };
    let w = Writers::start(sysbench, &target, load).await?;
    eprintln!(
        "[{label}] writers running ({} threads, rate {}); warming up {} s",
        load.threads,
        if load.rate == 0 {
            "unthrottled".to_string()
        } else {
            format!("{}/s", load.rate)
        },
        args.warmup_secs
    );
    tokio::time::sleep(Duration::from_secs(args.warmup_secs)).await;
    Ok(Some(w))
}

async fn stop_writers(
    writers: Option<Writers>,
    window: (Instant, Instant),
    cooldown: Duration,
) -> Option<WriterReport> {
    let w = writers?;
    tokio::time::sleep(cooldown).await;
    Some(w.stop(window.0, window.1).await)
}

async fn run_mode(
    args: &Args,
    mode: Mode,
    settings: &ConnSettings,
    sysbench: Option<&PathBuf>,
    label: &str,
) -> anyhow::Result<ModeResult> {
    let mut conn = admin(settings).await?;
    let cooldown = Duration::from_secs(args.warmup_secs.min(2));
    data::reset_database(&mut conn).await?;
    eprintln!(
        "[{label}] loading {} rows ({:?})...",
        args.rows, args.loader
    );
    let load = data::load(
        &mut conn,
        args.loader,
        sysbench.map(|p| p.as_path()),
        settings.port,
        args.rows,
        false,
    )
    .await?;
    let copy = data::make_fresh_copy(&mut conn).await?;
    eprintln!(
        "[{label}] loaded in {:.1} s, fresh copy made in {:.1} s",
        load.as_secs_f64(),
        copy.as_secs_f64()
    );

    // The server's own ALTER.
    let writers = start_writers(args, mode, settings.port, sysbench, label).await?;
    eprintln!("[{label}] server ALTER TABLE .. ALGORITHM=COPY...");
    let started = Instant::now();
    data::server_alter(&mut conn).await?;
    let alter_end = Instant::now();
    let alter = alter_end - started;
    let alter_writers = stop_writers(writers, (started, alter_end), cooldown).await;
    let expected_checksum = if mode == Mode::Idle {
        data::checksum(&mut conn).await?
    } else {
        None
    };
    data::swap_in_fresh_copy(&mut conn).await?;

    // shadowcut's migration of the same change on the fresh copy.
    let writers = start_writers(args, mode, settings.port, sysbench, label).await?;
    eprintln!(
        "[{label}] shadowcut migration (chunk size {})...",
        args.chunk_size
    );
    let started = Instant::now();
    let run = run_shadowcut(args, settings).await;
    let sc_end = Instant::now();
    let shadowcut_writers = stop_writers(writers, (started, sc_end), cooldown).await;
    let shadowcut = run?;
    let verified = if shadowcut.unfinished.is_none() {
        data::verify(&mut conn, args.rows, expected_checksum).await?
    } else {
        data::verify_untouched(&mut conn, args.rows).await?
    };
    let _ = conn.disconnect().await;
    Ok(ModeResult {
        label: label.to_string(),
        mode,
        rows: args.rows,
        load,
        alter,
        shadowcut,
        alter_writers,
        shadowcut_writers,
        verified,
    })
}

async fn run_shadowcut(args: &Args, settings: &ConnSettings) -> anyhow::Result<ShadowcutRun> {
    let spec = MigrationSpec {
        settings: settings.clone(),
        database: data::DATABASE.to_string(),
        table: data::TABLE.to_string(),
        alter: data::ALTER_CLAUSE.to_string(),
        options: MigrationOptions {
            chunk_size: args.chunk_size,
            keep_old_table: false,
            ..MigrationOptions::default()
        },
    };
    let (controls, _tuning) = Controls::unattended(&spec.options);
    drive_migration(spec, controls, args.migration_timeout_secs, |_| {}).await
}

/// Runs one migration to its end, cancelling it after `timeout_secs`, and collects what the
/// bench reports about it. `on_start` gets the migration's progress as it starts.
async fn drive_migration(
    spec: MigrationSpec,
    controls: Controls,
    timeout_secs: u64,
    on_start: impl FnOnce(&Arc<Progress>),
) -> anyhow::Result<ShadowcutRun> {
    let chunks = Arc::new(ChunkTimes::default());
    let progress = Progress::new(chunks.clone());
    let started = Instant::now();
    let cancel = controls.cancel.clone();
    let deadline = started + Duration::from_secs(timeout_secs);
    on_start(&progress);
    let mut task = tokio::spawn(migration::run(spec, controls, progress.clone()));
    let mut steps: Vec<(Step, Instant)> = Vec::new();
    let mut max_backlog = 0;
    let mut lag_at_deadline = None;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let result = loop {
        tokio::select! {
            r = &mut task => break r,
            _ = tick.tick() => {
                max_backlog = max_backlog.max(Progress::get(&progress.backlog_events));
                if Instant::now() > deadline && !cancel.is_cancelled() {
                    eprintln!(
                        "shadowcut is still at step {:?} after {} s (--migration-timeout-secs): \
                         cancelling it",
                        progress.status().step,
                        timeout_secs
                    );
                    lag_at_deadline = progress.replay_lag();
                    cancel.cancel();
                }
                let step = progress.status().step;
                if steps.last().map(|(s, _)| *s) != Some(step) {
                    steps.push((step, Instant::now()));
                }
            }
        }
    };
    let end = Instant::now();
    let took = end - started;
    let (stall, unfinished) = match result.context("the migration task panicked")? {
        Ok(o) => (Some(o.stall), None),
        Err(e) if cancel.is_cancelled() => {
            let lag = lag_at_deadline
                .map(|d| format!("{:.1} s", d.as_secs_f64()))
                .unwrap_or_else(|| "unknown".to_string());
            (
                None,
                Some(format!(
                    "cancelled after {} s at step {:?} with a replay lag of {lag} ({e})",
                    timeout_secs,
                    steps.last().map(|(s, _)| *s).unwrap_or(Step::Pending)
                )),
            )
        }
        Err(e) => return Err(e).context("the shadowcut migration failed"),
    };
    let mut phases = Vec::new();
    for (i, (step, at)) in steps.iter().enumerate() {
        if matches!(step, Step::Pending | Step::Done) {
            continue;
        }
        let next = steps.get(i + 1).map(|(_, t)| *t).unwrap_or(end);
        phases.push((*step, next - *at));
    }
    let chunks = std::mem::take(&mut *chunks.0.lock().unwrap());
    Ok(ShadowcutRun {
        took,
        replayed: ChangeKind::ALL.map(|k| progress.applied(k)),
        max_backlog,
        phases: Phases(phases),
        chunks,
        stall,
        unfinished,
    })
}

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

/// The targets, judged on the median idle ratio (a single run is noisy) and on every
/// unthrottled run: it must finish, with no writer error. Each line comes with whether it was met.
fn targets(results: &[ModeResult], failures: &[Failure]) -> Vec<(String, bool)> {
    let verdict = |met: bool| if met { "met" } else { "MISSED" };
    let mut out = Vec::new();
    // An unfinished run counts as an infinite ratio.
    let idle: Vec<f64> = results
        .iter()
        .filter(|r| r.mode == Mode::Idle)
        .map(|r| r.ratio().unwrap_or(f64::INFINITY))
        .collect();
    if !idle.is_empty() {
        let m = median(idle.clone());
        let met = m <= IDLE_RATIO_TARGET;
        let within = idle.iter().filter(|r| **r <= IDLE_RATIO_TARGET).count();
        out.push((
            format!(
                "target: idle ratio <= {IDLE_RATIO_TARGET:.1}: median {m:.2} ({within} of {} runs \
                 within) {}",
                idle.len(),
                verdict(met)
            ),
            met,
        ));
    }
    let unthrottled: Vec<&ModeResult> = results
        .iter()
        .filter(|r| r.mode == Mode::Unthrottled)
        .collect();
    let writers: Vec<&WriterReport> = unthrottled
        .iter()
        .filter_map(|r| r.shadowcut_writers.as_ref())
        .collect();
    let failed = failures
        .iter()
        .filter(|f| f.mode == Mode::Unthrottled)
        .count();
    let finished = unthrottled.iter().filter(|r| r.ratio().is_some()).count();
    if !unthrottled.is_empty() || failed > 0 {
        let errors: u64 = writers.iter().map(|w| w.errors).sum();
        let died = writers.iter().any(|w| w.died.is_some());
        let met = errors == 0 && !died && finished == unthrottled.len() + failed;
        out.push((
            format!(
                "target: under unthrottled writes shadowcut finishes with zero writer errors: \
                 {finished} of {} runs finished, {errors} errors{} {}",
                unthrottled.len() + failed,
                if died { ", sysbench died" } else { "" },
                verdict(met)
            ),
            met,
        ));
    }
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn step_name(step: Step) -> &'static str {
    match step {
        Step::Pending => "pending",
        Step::Inspecting => "inspect",
        Step::CreatingShadow => "shadow",
        Step::Copying => "copy",
        Step::CatchingUp => "catch-up",
        Step::WaitingForCutover => "wait",
        Step::SwappingTables => "swap",
        Step::CleaningUp => "cleanup",
        Step::Done => "done",
    }
}

fn print_results(args: &Args, results: &[ModeResult], failures: &[Failure]) {
    println!();
    println!(
        "shadowcut bench: ADD COLUMN c2 INT NOT NULL DEFAULT 0, ADD INDEX k2 (c2); chunk size {}; \
         writers: sysbench oltp_write_only, {} threads (rate mode: {}/s)",
        args.chunk_size, args.threads, args.rate
    );
    println!();
    println!(
        "{:<16} {:>9} {:>8} {:>13} {:>12} {:>6}   {:>17}   {:>20}",
        "mode",
        "rows",
        "load s",
        "ALTER COPY s",
        "shadowcut s",
        "ratio",
        "writer errors",
        "writer tps"
    );
    println!(
        "{:<16} {:>9} {:>8} {:>13} {:>12} {:>6}   {:>17}   {:>20}",
        "", "", "", "", "", "", "ALTER / shadowcut", "base > ALTER | scut"
    );
    for r in results {
        let (errors, tps) = match (&r.alter_writers, &r.shadowcut_writers) {
            (Some(a), Some(s)) => (
                format!("{} / {}", a.errors, s.errors),
                format!(
                    "{:.0} > {:.0} | {:.0}",
                    (a.baseline_tps + s.baseline_tps) / 2.0,
                    a.window_tps,
                    s.window_tps
                ),
            ),
            _ => ("-".to_string(), "-".to_string()),
        };
        println!(
            "{:<16} {:>9} {:>8} {:>13} {:>12} {:>6}   {:>17}   {:>20}",
            r.label,
            r.rows,
            format!("{:.1}", r.load.as_secs_f64()),
            secs(r.alter),
            r.shadowcut_text(),
            r.ratio_text(),
            errors,
            tps
        );
    }

    if args.repeat > 1 {
        println!();
        println!("Medians over {} runs", args.repeat);
        for mode in [Mode::Idle, Mode::Rate, Mode::Unthrottled] {
            let runs: Vec<&ModeResult> = results.iter().filter(|r| r.mode == mode).collect();
            if runs.is_empty() {
                continue;
            }
            let finished: Vec<&&ModeResult> = runs.iter().filter(|r| r.ratio().is_some()).collect();
            println!(
                "{:<16} ALTER COPY {:.2} s, shadowcut {:.2} s, ratio {:.2} over {} finished \
                 runs (runs: {})",
                mode.name(),
                median(runs.iter().map(|r| r.alter.as_secs_f64()).collect()),
                median(
                    finished
                        .iter()
                        .map(|r| r.shadowcut.took.as_secs_f64())
                        .collect()
                ),
                median(finished.iter().filter_map(|r| r.ratio()).collect()),
                finished.len(),
                runs.iter()
                    .map(|r| r.ratio_text())
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
    }

    println!();
    println!("Details");
    for r in results {
        let name = &r.label;
        let sc = &r.shadowcut;
        let phases: Vec<String> = sc
            .phases
            .0
            .iter()
            .map(|(s, d)| format!("{} {}", step_name(*s), secs(*d)))
            .collect();
        let chunk_total: Duration = sc.chunks.iter().map(|(_, d)| *d).sum();
        let chunk_max = sc.chunks.iter().map(|(_, d)| *d).max().unwrap_or_default();
        let stall = match sc.stall {
            Some(d) => format!("cut-over stall {} ms", d.as_millis()),
            None => "no cut-over".to_string(),
        };
        println!(
            "  {name}: shadowcut phases (s): {}; {stall}",
            phases.join(", ")
        );
        if let Some(why) = &sc.unfinished {
            println!("  {name}: shadowcut UNFINISHED: {why}");
        }
        if !sc.chunks.is_empty() {
            println!(
                "  {name}: {} chunks, {:.1} ms mean, {:.1} ms max ({:.0} rows/s while copying)",
                sc.chunks.len(),
                chunk_total.as_secs_f64() * 1000.0 / sc.chunks.len() as f64,
                chunk_max.as_secs_f64() * 1000.0,
                sc.chunks.iter().map(|(n, _)| *n).sum::<u64>() as f64
                    / chunk_total.as_secs_f64().max(1e-9)
            );
        }
        let replayed: u64 = sc.replayed.iter().sum();
        if replayed > 0 {
            println!(
                "  {name}: replayed {} inserts, {} updates, {} deletes ({:.0} row changes/s over \
                 the migration); largest backlog {} row events",
                sc.replayed[0],
                sc.replayed[1],
                sc.replayed[2],
                replayed as f64 / sc.took.as_secs_f64(),
                sc.max_backlog
            );
        }
        for (what, w) in [
            ("ALTER COPY", &r.alter_writers),
            ("shadowcut ", &r.shadowcut_writers),
        ] {
            let Some(w) = w else { continue };
            let longest = match w.max_txn_ms {
                Some(ms) => format!("{ms:.0} ms ({} transactions >= 100 ms)", w.slow_txns),
                None => "< 100 ms".to_string(),
            };
            println!(
                "  {name}: writers during {what}: {:.0} tps before, {:.0} tps during, {} s with \
                 no commit, longest transaction {longest}, worst 1-s p95 {:.0} ms, {} errors, \
                 {} reconnects",
                w.baseline_tps, w.window_tps, w.zero_tps_secs, w.max_p95_ms, w.errors, w.reconnects
            );
            for m in &w.messages {
                println!("  {name}:   writer error: {m}");
            }
            if let Some(d) = &w.died {
                println!("  {name}:   {d}");
            }
        }
        println!("  {name}: verified: {}", r.verified);
    }

    println!();
    for (line, _) in targets(results, failures) {
        println!("{line}");
    }
    if results.iter().any(|r| {
        r.alter_writers
            .as_ref()
            .is_some_and(|w| w.zero_tps_secs > 0)
    }) {
        println!(
            "note: the server's ALGORITHM=COPY blocks writers for most of its run (they queue on \
             the table's metadata lock): see 's with no commit' above"
        );
    }
}
