//! `shadowcut run`: one migration in the foreground, with a progress line.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use shadowcut::conn::ConnSettings;
use shadowcut::migration::{self, Controls, MigrationOptions, MigrationSpec};
use shadowcut::progress::{NoObserver, Progress};
use shadowcut::state::Step;

#[derive(Args)]
pub struct RunArgs {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 3306)]
    port: u16,
    #[arg(long, default_value = "root")]
    user: String,
    /// Name of the environment variable holding the password (never pass it on the command line).
    #[arg(long)]
    password_env: Option<String>,
    #[arg(long)]
    database: String,
    #[arg(long)]
    table: String,
    /// The ALTER clause, e.g. "ADD COLUMN c2 INT NOT NULL DEFAULT 0, ADD INDEX k2 (c2)".
    #[arg(long)]
    alter: String,
    /// Rows per copy chunk.
    #[arg(long, default_value_t = 10_000)]
    chunk_size: u64,
    /// After each chunk, pause this percentage of the chunk's duration (100: copy at most half
    /// the time), to spare a busy server.
    #[arg(long, default_value_t = 0)]
    nice_percent: u32,
    /// Carry data over to columns renamed by CHANGE/RENAME COLUMN.
    #[arg(long)]
    allow_renames: bool,
    /// Drop the old table after the cut-over instead of keeping it.
    #[arg(long)]
    drop_old_table: bool,
    /// Seconds the cut-over may hold its lock per attempt.
    #[arg(long, default_value_t = 3)]
    cutover_lock_timeout: u64,
    /// Suppress the progress line.
    #[arg(long)]
    quiet: bool,
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let password = match &args.password_env {
        Some(var) => Some(std::env::var(var).with_context(|| {
            format!("environment variable {var} (from --password-env) is not set")
        })?),
        None => None,
    };
    let options = MigrationOptions {
        chunk_size: args.chunk_size,
        nice_percent: args.nice_percent,
        allow_renamed_columns: args.allow_renames,
        keep_old_table: !args.drop_old_table,
        cutover_lock_timeout_secs: args.cutover_lock_timeout,
        ..MigrationOptions::default()
    };
    if let Err(e) = options.validate() {
        bail!("{e}");
    }
    let spec = MigrationSpec {
        settings: ConnSettings {
            host: args.host,
            port: args.port,
            user: args.user,
            password,
        },
        database: args.database,
        table: args.table,
        alter: args.alter,
        options,
    };
    let (controls, _tuning) = Controls::unattended(&spec.options);
    let cancel = controls.cancel.clone();
    let progress = Progress::new(Arc::new(NoObserver));
    let mut task = tokio::spawn(migration::run(spec, controls, progress.clone()));
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let result = loop {
        tokio::select! {
            r = &mut task => break r.context("the migration task panicked")?,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("\ninterrupted: cancelling, the original table stays as it is");
                cancel.cancel();
            }
            _ = tick.tick() => if !args.quiet { print_progress(&progress, started) },
        }
    };
    if !args.quiet {
        eprintln!();
    }
    let outcome = result?;
    match outcome.old_table {
        Some(old) => println!(
            "migration completed; old table kept as {old}; writers stalled {} ms at cut-over",
            outcome.stall.as_millis()
        ),
        None => println!(
            "migration completed; old table dropped; writers stalled {} ms at cut-over",
            outcome.stall.as_millis()
        ),
    }
    Ok(())
}

fn print_progress(progress: &Progress, started: Instant) {
    let copied = Progress::get(&progress.rows_copied);
    let estimate = Progress::get(&progress.rows_estimate);
    let pct = progress.percent();
    let status = progress.status();
    let lag = progress
        .replay_lag()
        .map(|d| format!("{:.1}s", d.as_secs_f64()))
        .unwrap_or_else(|| "-".into());
    let elapsed = started.elapsed().as_secs_f64();
    let eta = if status.step == Step::Copying && copied > 0 && estimate > copied {
        let rate = copied as f64 / elapsed;
        format!("{:.0}s", (estimate - copied) as f64 / rate)
    } else {
        "-".into()
    };
    eprint!(
        "\r{:?}: copied {copied}/{estimate} rows ({pct:.1}%), replay lag {lag}, backlog {}, ETA {eta}      ",
        status.step,
        Progress::get(&progress.backlog_events)
    );
    let _ = std::io::stderr().flush();
}
