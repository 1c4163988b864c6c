//! `--mode throttle`: what the application and a replica see while shadowcut migrates a large
//! table with replica-lag throttling on (issue 4).
//!
//! The bench starts a primary and one replica sandbox (MariaDB GTID replication, a single
//! applier thread), loads `sbtest.sbtest1` on the primary and lets the replica load the same
//! rows (checked with `CHECKSUM TABLE`). Then three phases under the same sysbench
//! `oltp_write_only --rate` load: a baseline of `--baseline-secs` without a migration; the
//! migration phase, which lasts exactly as long as shadowcut's migration of the table (same
//! ALTER as the other modes, `max_lag_millis` watched on the replica); and, once the replica
//! has caught up, a second baseline, which shows whether the machine's other load changed
//! during the run. Each phase is one sysbench run stopped when the phase ends (`latency`), so
//! its tps, p95 and p99 come from sysbench's own report and histogram. The replica's lag is
//! sampled independently of shadowcut throughout (`lag`). Targets: p99 during the migration
//! at most 1.5x the (first) baseline's; replica lag, during the migration and until the
//! replica has applied it, never above 2x `max_lag_millis`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use shadowcut::migration::{Controls, MigrationOptions, MigrationSpec};
use shadowcut::progress::Progress;
use shadowcut::sandbox::{Sandbox, SandboxOptions};
use shadowcut::state::Step;

use crate::data;
use crate::host::{quiesce, CpuShare, CpuTimes};
use crate::lag::{self, LagMonitor, LagReport, LagSample, Phase};
use crate::latency::{Interim, PacedRun, RunReport};
use crate::writers::{self, Load, Target};
use crate::{secs, step_name, Args, ShadowcutRun};

const P99_RATIO_TARGET: f64 = 1.5;
const LAG_FACTOR_TARGET: f64 = 2.0;
/// How long sysbench may take to stop and print its report once asked.
const STOP_LIMIT: Duration = Duration::from_secs(30);
/// Width of one line of the time series.
const WINDOW: Duration = Duration::from_secs(5);

/// Everything one run measured.
struct Measured {
    load: Duration,
    baseline: RunReport,
    migration: RunReport,
    /// The same load once more after the migration, to see whether the machine changed.
    baseline_after: RunReport,
    /// Share of the machine's CPU time in use during each of the three phases (everyone's,
    /// not only ours).
    cpu_busy: [Option<CpuShare>; 3],
    shadowcut: ShadowcutRun,
    /// Seconds the migration's replica-lag source throttled the copy.
    throttled_secs: f64,
    /// Row events the replay applied, and in how many shadow transactions.
    replayed: (u64, u64),
    /// How long the replica took to apply everything after the migration returned.
    replica_after: Duration,
    lag: LagReport,
    /// When the baseline began: the time series' zero.
    t0: Instant,
    verified: String,
    replica_check: String,
}

/// Runs the throttle benchmark; returns whether it passed (with --check: met the targets).
pub fn run(args: &Args) -> anyhow::Result<bool> {
    if args.port.is_some() {
        bail!("--mode throttle starts its own primary and replica; it does not take --port");
    }
    if args.rate == 0 {
        bail!("--mode throttle needs a fixed rate: --rate must be at least 1");
    }
    if args.max_lag_millis == 0 || args.lag_sample_millis == 0 || args.baseline_secs == 0 {
        bail!("--max-lag-millis, --lag-sample-millis and --baseline-secs must be at least 1");
    }
    let sysbench = writers::find_sysbench()?;
    eprintln!(
        "starting a primary and a replica sandbox MariaDB (buffer pool {} MiB each)...",
        args.buffer_pool_mb
    );
    let sandbox = |server_id| {
        Sandbox::start_with(SandboxOptions {
            server_id,
            buffer_pool_mb: args.buffer_pool_mb,
            ..SandboxOptions::default()
        })
    };
    let primary = sandbox(1).context("starting the primary sandbox")?;
    let replica = sandbox(2).context("starting the replica sandbox")?;
    eprintln!(
        "primary on 127.0.0.1:{} (error log {}), replica on 127.0.0.1:{} (error log {})",
        primary.port(),
        primary.error_log().display(),
        replica.port(),
        replica.error_log().display()
    );
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    let measured = runtime.block_on(async {
        tokio::select! {
            r = measure(args, &sysbench, &primary, &replica) => r,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        }
    })?;
    drop(runtime);
    if let Some(path) = &args.samples_csv {
        write_csv(path, &measured)
            .with_context(|| format!("writing the samples to {}", path.display()))?;
    }
    let verdicts = print(args, &measured);
    Ok(!args.check || verdicts.iter().all(|met| *met))
}

async fn measure(
    args: &Args,
    sysbench: &std::path::Path,
    primary: &Sandbox,
    replica: &Sandbox,
) -> anyhow::Result<Measured> {
    replica
        .replicate_from(primary.port())
        .await
        .context("making the replica")?;
    let settings = primary.settings();
    let mut conn = crate::admin(&settings).await?;
    let mut rconn = replica.settings().connect("the bench").await?;
    data::reset_database(&mut conn).await?;
    lag::create_table(&mut conn).await?;
    eprintln!(
        "[throttle] loading {} rows ({:?}) on the primary and the replica...",
        args.rows, args.loader
    );
    let load = data::load(
        &mut conn,
        args.loader,
        Some(sysbench),
        settings.port,
        args.rows,
        true,
    )
    .await?;
    let waited = wait_for_replica(&mut conn, &mut rconn, Duration::from_secs(600)).await?;
    let (ours, theirs) = (
        data::checksum(&mut conn).await?,
        data::checksum(&mut rconn).await?,
    );
    if ours != theirs {
        bail!("after the load the replica's sbtest1 differs (CHECKSUM TABLE {ours:?} on the primary, {theirs:?} on the replica)");
    }
    eprintln!(
        "[throttle] loaded in {:.1} s; the replica had it {:.1} s later, identical",
        load.as_secs_f64(),
        waited.as_secs_f64()
    );

    let monitor = LagMonitor::start(
        settings.clone(),
        replica.settings(),
        Duration::from_millis(args.lag_sample_millis),
    );
    monitor.wait_current(500.0, Duration::from_secs(30)).await?;
    let t0 = Instant::now();
    let target = Target {
        port: settings.port,
        database: data::DATABASE.to_string(),
        table_size: args.rows,
    };
    let writers = Load {
        threads: args.threads,
        rate: args.rate,
    };
    // Bounds sysbench if the bench dies without stopping it.
    let max_secs = args.baseline_secs + args.migration_timeout_secs + 300;

    let baseline_phase = || async {
        eprintln!(
            "[throttle] baseline: sysbench at {}/s for {} s, no migration...",
            args.rate, args.baseline_secs
        );
        let sb = PacedRun::start(sysbench, &target, writers, max_secs).await?;
        let cpu = CpuTimes::read();
        tokio::time::sleep(Duration::from_secs(args.baseline_secs)).await;
        let busy = CpuTimes::busy_since(cpu);
        let report = sb.finish(STOP_LIMIT).await.context("a baseline phase")?;
        anyhow::Ok((report, busy))
    };

    quiesce(&mut conn, &mut rconn).await?;
    monitor.set_phase(Phase::Baseline, None);
    let (baseline, baseline_cpu) = baseline_phase().await?;

    monitor.set_phase(Phase::Migration, None);
    eprintln!(
        "[throttle] migration: sysbench at {}/s while shadowcut migrates (max_lag_millis {})...",
        args.rate, args.max_lag_millis
    );
    let sb = PacedRun::start(sysbench, &target, writers, max_secs).await?;
    let cpu = CpuTimes::read();
    let spec = MigrationSpec {
        settings: settings.clone(),
        database: data::DATABASE.to_string(),
        table: data::TABLE.to_string(),
        alter: data::ALTER_CLAUSE.to_string(),
        options: MigrationOptions {
            chunk_size: args.chunk_size,
            nice_percent: args.nice_percent,
            keep_old_table: args.keep_old_table,
            max_lag_millis: Some(args.max_lag_millis),
            ..MigrationOptions::default()
        },
    };
    let (mut controls, _tuning) = Controls::unattended(&spec.options);
    controls.throttle = controls.throttle.with_replicas(vec![replica.settings()]);
    let mut progress: Option<Arc<Progress>> = None;
    let shadowcut = crate::drive_migration(spec, controls, args.migration_timeout_secs, |p| {
        monitor.set_phase(Phase::Migration, Some(p.clone()));
        progress = Some(p.clone());
    })
    .await;
    let migration_cpu = CpuTimes::busy_since(cpu);
    let migration = sb.finish(STOP_LIMIT).await;
    monitor.set_phase(Phase::After, None);
    let shadowcut = shadowcut?;
    let migration = migration.context("the migration phase")?;
    let replayed = progress.as_ref().map_or((0, 0), |p| {
        (p.applied_total(), Progress::get(&p.replay_transactions))
    });
    let throttled_secs = progress
        .map(|p| {
            p.throttle_sources()
                .iter()
                .filter(|s| s.name == "replica_lag")
                .map(|s| s.throttled_seconds)
                .sum()
        })
        .unwrap_or(0.0);
    eprintln!(
        "[throttle] migration {} in {:.1} s; waiting for the replica...",
        if shadowcut.unfinished.is_some() {
            "cancelled"
        } else {
            "done"
        },
        shadowcut.took.as_secs_f64()
    );
    let replica_after = wait_for_replica(&mut conn, &mut rconn, Duration::from_secs(300)).await?;
    // A few more samples of the replica at rest.
    tokio::time::sleep(Duration::from_secs(1)).await;
    if let Some(l) = monitor.last_lag_ms() {
        eprintln!("[throttle] replica caught up (lag now {l:.0} ms)");
    }

    // Outside the measurement: the old table the migration kept.
    monitor.set_phase(Phase::Setup, None);
    if let Some(old) = old_table(&mut conn).await? {
        conn.query_drop(format!("DROP TABLE {}.`{old}`", data::DATABASE))
            .await
            .with_context(|| format!("dropping the old table {old}"))?;
        wait_for_replica(&mut conn, &mut rconn, Duration::from_secs(300)).await?;
    }
    quiesce(&mut conn, &mut rconn).await?;
    monitor.set_phase(Phase::BaselineAfter, None);
    let (baseline_after, after_cpu) = baseline_phase().await?;
    let lag = monitor.stop().await;
    let verified = if shadowcut.unfinished.is_none() {
        data::verify(&mut conn, args.rows, None).await?
    } else {
        data::verify_untouched(&mut conn, args.rows).await?
    };
    let (ours, theirs) = (
        data::checksum(&mut conn).await?,
        data::checksum(&mut rconn).await?,
    );
    let replica_check = if ours == theirs {
        "the replica's sbtest1 is identical (CHECKSUM TABLE)".to_string()
    } else {
        bail!("after the migration the replica's sbtest1 differs (CHECKSUM TABLE {ours:?} on the primary, {theirs:?} on the replica)");
    };
    let _ = conn.disconnect().await;
    let _ = rconn.disconnect().await;
    Ok(Measured {
        load,
        baseline,
        migration,
        baseline_after,
        cpu_busy: [baseline_cpu, migration_cpu, after_cpu],
        shadowcut,
        throttled_secs,
        replayed,
        replica_after,
        lag,
        t0,
        verified,
        replica_check,
    })
}

/// The old table a migration with keep_old_table left, if any.
async fn old_table(conn: &mut Conn) -> anyhow::Result<Option<String>> {
    let tables: Vec<String> = conn
        .query(format!("SHOW TABLES FROM {}", data::DATABASE))
        .await
        .context("listing tables")?;
    let prefix = format!("_{}_old_", data::TABLE);
    Ok(tables.into_iter().find(|t| t.starts_with(&prefix)))
}

/// Waits until the replica has applied everything the primary has binlogged so far; returns
/// how long that took.
async fn wait_for_replica(
    primary: &mut Conn,
    replica: &mut Conn,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let pos: Option<String> = primary
        .query_first("SELECT @@GLOBAL.gtid_binlog_pos")
        .await
        .context("reading the primary's GTID position")?;
    let pos = pos.unwrap_or_default();
    let got: Option<i64> = replica
        .exec_first(
            "SELECT MASTER_GTID_WAIT(?, ?)",
            (pos.as_str(), limit.as_secs_f64()),
        )
        .await
        .context("waiting for the replica (MASTER_GTID_WAIT)")?;
    if got != Some(0) {
        bail!(
            "the replica did not reach the primary's position {pos} within {} s",
            limit.as_secs()
        );
    }
    Ok(started.elapsed())
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.2}"),
        None => "-".to_string(),
    }
}

/// One line of the phase table.
fn phase_line(name: &str, r: &RunReport, cpu: Option<CpuShare>) -> String {
    let s = &r.summary;
    let h = &s.histogram;
    format!(
        "{name:<10} {:>7.1} {:>7.1} {:>8} {:>8} {:>8} {:>7} {:>12} {:>9} {:>6}",
        s.secs,
        s.tps(),
        ms(h.percentile(95.0)),
        ms(h.percentile(99.0)),
        ms(s.max_ms),
        s.errors,
        ms(s.sysbench_pct_ms),
        cpu.map(|c| format!("{:.0}%", c.busy * 100.0))
            .unwrap_or_else(|| "-".to_string()),
        cpu.map(|c| format!("{:.1}%", c.steal * 100.0))
            .unwrap_or_else(|| "-".to_string()),
    )
}

/// Prints the report and returns whether each target was met.
fn print(args: &Args, m: &Measured) -> Vec<bool> {
    let verdict = |met: bool| if met { "PASS" } else { "MISS" };
    println!();
    println!(
        "shadowcut throttle bench: {} rows; {}; sysbench oltp_write_only --rate={} \
         --threads={}; max_lag_millis {} on one replica; chunk size {}; nice_percent {}; old \
         table {}; loaded in {:.1} s",
        args.rows,
        data::ALTER_CLAUSE,
        args.rate,
        args.threads,
        args.max_lag_millis,
        args.chunk_size,
        args.nice_percent,
        if args.keep_old_table {
            "kept (dropped after the measurement)"
        } else {
            "dropped by the migration"
        },
        m.load.as_secs_f64()
    );
    println!();
    println!(
        "{:<10} {:>7} {:>7} {:>8} {:>8} {:>8} {:>7} {:>12} {:>9} {:>6}",
        "phase",
        "secs",
        "tps",
        "p95 ms",
        "p99 ms",
        "max ms",
        "errors",
        "sysbench p99",
        "CPU busy",
        "steal"
    );
    println!("{}", phase_line("baseline", &m.baseline, m.cpu_busy[0]));
    println!("{}", phase_line("migration", &m.migration, m.cpu_busy[1]));
    println!(
        "{}",
        phase_line("base after", &m.baseline_after, m.cpu_busy[2])
    );
    println!(
        "(p95/p99 from sysbench's histogram, \"sysbench p99\" is its own figure; CPU busy is the \
         whole machine's, other users' work included; steal is the share of it the hypervisor \
         gave to other guests)"
    );
    for (name, r) in [
        ("baseline", &m.baseline),
        ("migration", &m.migration),
        ("base after", &m.baseline_after),
    ] {
        for msg in &r.messages {
            println!("  {name}: writer error: {msg}");
        }
    }

    let sc = &m.shadowcut;
    let phases: Vec<String> = sc
        .phases
        .0
        .iter()
        .map(|(s, d)| format!("{} {}", step_name(*s), secs(*d)))
        .collect();
    let stall = match sc.stall {
        Some(d) => format!("cut-over stall {} ms", d.as_millis()),
        None => "no cut-over".to_string(),
    };
    println!();
    println!(
        "migration: {} in {:.1} s ({}); {stall}; copy throttled by replica lag for {:.1} s \
         ({:.0}% of the migration)",
        if sc.unfinished.is_some() {
            "UNFINISHED"
        } else {
            "finished"
        },
        sc.took.as_secs_f64(),
        phases.join(", "),
        m.throttled_secs,
        100.0 * m.throttled_secs / sc.took.as_secs_f64().max(1e-9)
    );
    if let Some(why) = &sc.unfinished {
        println!("migration: {why}");
    }
    println!(
        "migration: the replay applied {} row events in {} transactions",
        m.replayed.0, m.replayed.1
    );
    println!("migration: verified: {}; {}", m.verified, m.replica_check);

    let samples = &m.lag.samples;
    let base = lag::stats(samples.iter().filter(|s| s.phase == Phase::Baseline));
    let migrating = lag::stats(samples.iter().filter(|s| s.phase == Phase::Migration));
    let after = lag::stats(samples.iter().filter(|s| s.phase == Phase::After));
    let base_after = lag::stats(samples.iter().filter(|s| s.phase == Phase::BaselineAfter));
    let during = lag::stats(
        samples
            .iter()
            .filter(|s| matches!(s.phase, Phase::Migration | Phase::After)),
    );
    println!();
    println!(
        "replica lag (the bench's own heartbeat, written every 100 ms, read every {} ms; a \
         current replica reads 0-100 ms):",
        args.lag_sample_millis
    );
    for (name, s) in [
        ("baseline", base),
        ("migration", migrating),
        ("after it returned", after),
        ("baseline after", base_after),
    ] {
        println!(
            "  {name}: max {} ms, p99 {} ms, median {} ms over {} samples{}",
            ms(s.max_ms),
            ms(s.p99_ms),
            ms(s.p50_ms),
            s.samples,
            if s.unreadable > 0 {
                format!(" ({} unreadable)", s.unreadable)
            } else {
                String::new()
            }
        );
    }
    println!(
        "  after the migration returned the replica needed {:.1} s to apply the rest; {} \
         heartbeat writes failed",
        m.replica_after.as_secs_f64(),
        m.lag.heartbeat_errors
    );
    println!();
    print_series(m);

    let p99 = |r: &RunReport| r.summary.histogram.percentile(99.0);
    let over = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let ratio = over(p99(&m.migration), p99(&m.baseline));
    let ratio_after = over(p99(&m.migration), p99(&m.baseline_after));
    let baselines = over(p99(&m.baseline), p99(&m.baseline_after));
    let ratio_met = ratio.is_some_and(|r| r <= P99_RATIO_TARGET);
    let lag_limit = LAG_FACTOR_TARGET * args.max_lag_millis as f64;
    let lag_met = during.unreadable == 0 && during.max_ms.is_some_and(|l| l <= lag_limit);
    let finished = sc.unfinished.is_none();
    println!();
    println!(
        "target: p99 during the migration <= {P99_RATIO_TARGET}x the baseline's: {} / {} ms = \
         {} {}",
        ms(p99(&m.migration)),
        ms(p99(&m.baseline)),
        ratio
            .map(|r| format!("{r:.2}x"))
            .unwrap_or_else(|| "-".to_string()),
        verdict(ratio_met)
    );
    println!(
        "  (against the baseline after the migration, {} ms: {})",
        ms(p99(&m.baseline_after)),
        ratio_after
            .map(|r| format!("{r:.2}x"))
            .unwrap_or_else(|| "-".to_string())
    );
    if let Some(b) = baselines.filter(|b| !(0.5..=2.0).contains(b)) {
        println!(
            "  note: the two baselines' p99 differ by {:.1}x: the machine's other load changed \
             during the run, so the ratio says little",
            if b >= 1.0 { b } else { 1.0 / b }
        );
    }
    println!(
        "target: replica lag never above {LAG_FACTOR_TARGET} x max_lag_millis = {lag_limit:.0} \
         ms (during the migration and until the replica has applied it): max {} ms{} {}",
        ms(during.max_ms),
        if during.unreadable > 0 {
            format!(", {} samples unreadable", during.unreadable)
        } else {
            String::new()
        },
        verdict(lag_met)
    );
    println!(
        "migration finished within --migration-timeout-secs ({} s): {}",
        args.migration_timeout_secs,
        verdict(finished)
    );
    vec![ratio_met, lag_met, finished]
}

/// One line per WINDOW: the replica's worst lag, how much of the window the copy was
/// throttled, sysbench's tps and worst per-second p99, and the migration's step.
fn print_series(m: &Measured) {
    println!(
        "over time ({} s windows, t from the start of the baseline):",
        WINDOW.as_secs()
    );
    println!(
        "  {:>9}  {:<17} {:>10} {:>9} {:>6} {:>14}  step",
        "t s", "phase", "lag max ms", "throttled", "tps", "worst 1-s p99"
    );
    let interim: Vec<&Interim> = m
        .baseline
        .interim
        .iter()
        .chain(m.migration.interim.iter())
        .chain(m.baseline_after.interim.iter())
        .collect();
    let samples: Vec<&LagSample> = m
        .lag
        .samples
        .iter()
        .filter(|s| s.phase != Phase::Setup)
        .collect();
    let index = |at: Instant| {
        (at.saturating_duration_since(m.t0).as_secs_f64() / WINDOW.as_secs_f64()) as usize
    };
    let Some(last) = samples.last().map(|s| index(s.at)) else {
        return;
    };
    for w in 0..=last {
        let in_w: Vec<&&LagSample> = samples.iter().filter(|s| index(s.at) == w).collect();
        let reports: Vec<&&Interim> = interim.iter().filter(|i| index(i.at) == w).collect();
        let mut phases: Vec<&str> = Vec::new();
        for s in &in_w {
            if !phases.contains(&s.phase.name()) {
                phases.push(s.phase.name());
            }
        }
        let lag_max = in_w.iter().filter_map(|s| s.lag_ms).reduce(f64::max);
        let in_migration: Vec<(Step, bool)> = in_w.iter().filter_map(|s| s.migration).collect();
        let throttled = if in_migration.is_empty() {
            "-".to_string()
        } else {
            let on = in_migration.iter().filter(|(_, t)| *t).count();
            format!("{:.0}%", 100.0 * on as f64 / in_migration.len() as f64)
        };
        let step = in_migration
            .last()
            .map(|(s, _)| step_name(*s))
            .unwrap_or("");
        let (tps, p99) = if reports.is_empty() {
            ("-".to_string(), "-".to_string())
        } else {
            (
                format!(
                    "{:.0}",
                    reports.iter().map(|i| i.tps).sum::<f64>() / reports.len() as f64
                ),
                ms(reports.iter().map(|i| i.pct_ms).reduce(f64::max)),
            )
        };
        let lo = w as u64 * WINDOW.as_secs();
        println!(
            "  {:>9}  {:<17} {:>10} {:>9} {:>6} {:>14}  {step}",
            format!("{lo}-{}", lo + WINDOW.as_secs()),
            phases.join("/"),
            ms(lag_max),
            throttled,
            tps,
            p99
        );
    }
}

/// Every lag sample and every per-second sysbench report, as CSV.
fn write_csv(path: &std::path::Path, m: &Measured) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let t = |at: Instant| {
        if at >= m.t0 {
            (at - m.t0).as_secs_f64()
        } else {
            -(m.t0 - at).as_secs_f64()
        }
    };
    let mut out = String::from("kind,t_s,phase,lag_ms,step,throttled,tps,p99_ms\n");
    for s in &m.lag.samples {
        let (step, throttled) = match s.migration {
            Some((step, on)) => (step_name(step), if on { "1" } else { "0" }),
            None => ("", ""),
        };
        let lag = s.lag_ms.map(|l| format!("{l:.1}")).unwrap_or_default();
        writeln!(
            out,
            "lag,{:.3},{},{lag},{step},{throttled},,",
            t(s.at),
            s.phase.name()
        )?;
    }
    for (phase, r) in [
        ("base", &m.baseline),
        ("migr", &m.migration),
        ("base2", &m.baseline_after),
    ] {
        for i in &r.interim {
            writeln!(
                out,
                "sysbench,{:.3},{phase},,,,{:.2},{:.2}",
                t(i.at),
                i.tps,
                i.pct_ms
            )?;
        }
    }
    std::fs::write(path, out)?;
    Ok(())
}
