//! `shadowcut migrations ...` and `shadowcut throttle ...`: the daemon's API from a shell.
//!
//! `migrations restart ID` starts a failed or cancelled migration again from scratch (a new
//! migration). Output is a short human summary by default and the API's JSON with `--json`. `show --follow`
//! redraws a progress bar every second until the migration ends, and exits non-zero unless it
//! completed, so scripts can wait on it.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::{json, Map, Value};

use super::client::{ApiArgs, Client};
use shadowcut::daemon::model::{
    parse_rfc3339, rfc3339, MigrationList, MigrationView, ThrottleView,
};

#[derive(Args)]
pub struct MigrationsArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: MigrationsCommand,
}

#[derive(Subcommand)]
enum MigrationsCommand {
    /// Start a migration.
    Start(StartArgs),
    /// List migrations.
    List {
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        target: Option<String>,
        #[arg(long)]
        database: Option<String>,
        #[arg(long)]
        table: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one migration.
    Show {
        id: String,
        /// Redraw a progress bar until the migration ends.
        #[arg(long)]
        follow: bool,
        #[arg(long)]
        json: bool,
    },
    /// Pause copying.
    Pause { id: String },
    /// Resume copying.
    Resume { id: String },
    /// Allow a postponed cut-over.
    Cutover { id: String },
    /// Cancel; the original table stays as it is.
    Cancel { id: String },
    /// Start a failed or cancelled migration again from scratch (a new migration).
    Restart { id: String },
    /// Change live options.
    Set {
        id: String,
        #[arg(long)]
        chunk_size: Option<u64>,
        /// Pause after each chunk, in percent of its duration.
        #[arg(long)]
        nice_percent: Option<u32>,
        #[arg(long)]
        max_lag_millis: Option<u64>,
        #[arg(long)]
        postpone_cutover: Option<bool>,
    },
}

#[derive(Args)]
struct StartArgs {
    #[arg(long)]
    target: Option<String>,
    #[arg(long)]
    database: String,
    #[arg(long)]
    table: String,
    /// The ALTER clause, e.g. "ADD COLUMN c2 INT NOT NULL DEFAULT 0".
    #[arg(long)]
    alter: String,
    #[arg(long)]
    chunk_size: Option<u64>,
    /// Pause after each chunk, in percent of its duration (100: copy at most half the time).
    #[arg(long)]
    nice_percent: Option<u32>,
    /// Wait for `migrations cutover ID` before swapping the tables.
    #[arg(long)]
    postpone_cutover: bool,
    /// Drop the old table after the cut-over instead of keeping it.
    #[arg(long)]
    drop_old_table: bool,
    #[arg(long)]
    cutover_lock_timeout_secs: Option<u64>,
    /// Carry data over to columns renamed by CHANGE/RENAME COLUMN.
    #[arg(long)]
    allow_renamed_columns: bool,
    #[arg(long)]
    max_lag_millis: Option<u64>,
    /// Makes retries safe: the same key and request return the same migration.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Follow the migration's progress until it ends.
    #[arg(long)]
    follow: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ThrottleArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: ThrottleCommand,
}

#[derive(Subcommand)]
enum ThrottleCommand {
    /// Pause copying of every migration on every target.
    On {
        #[arg(long)]
        reason: String,
        /// RFC 3339 end, e.g. 2024-03-01T18:00:00Z.
        #[arg(long, conflicts_with = "for_secs")]
        until: Option<String>,
        /// Seconds from now after which the throttle lifts by itself.
        #[arg(long = "for")]
        for_secs: Option<u64>,
    },
    Off,
    Status,
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn summary(m: &MigrationView) -> String {
    let mut s = format!(
        "{}  {}  {}.{}  {:.1}%  {}/{} rows",
        m.id, m.state, m.database, m.table, m.progress, m.rows_copied, m.rows_estimate
    );
    if m.paused {
        s.push_str("  [paused]");
    } else if let Some(r) = &m.throttle_reason {
        s.push_str(&format!("  [throttled: {r}]"));
    }
    if m.resume_count > 0 {
        s.push_str(&format!(
            "\n  resumed {} time(s), last at {}",
            m.resume_count,
            m.resumed_at.as_deref().unwrap_or("-")
        ));
    }
    if m.reconnects > 0 {
        s.push_str(&format!("\n  reconnects: {}", m.reconnects));
    }
    if let Some(cp) = &m.checkpoint {
        if !is_terminal_state(&m.state) {
            s.push_str(&format!(
                "\n  checkpoint {}: {} rows, binlog {}:{}",
                cp.at, cp.rows_copied, cp.binlog_file, cp.binlog_pos
            ));
        }
    }
    for b in &m.cutover_blockers {
        s.push_str(&format!(
            "\n  cut-over blocked by connection {} ({}@{}, {} s){}",
            b.id,
            b.user,
            b.host,
            b.time_secs,
            b.query
                .as_deref()
                .map(|q| format!(": {q}"))
                .unwrap_or_default()
        ));
    }
    if let Some(from) = &m.restarted_from {
        s.push_str(&format!("\n  restarts {from}"));
    }
    if let Some(e) = &m.error {
        s.push_str(&format!("\n  error: {e}"));
    }
    if let Some(old) = &m.old_table {
        s.push_str(&format!("\n  old table kept as {old}"));
    }
    s
}

fn bar(m: &MigrationView) -> String {
    const WIDTH: usize = 30;
    let filled = ((m.progress / 100.0) * WIDTH as f64).round() as usize;
    let filled = filled.min(WIDTH);
    let lag = m
        .replay_lag_seconds
        .map_or("-".to_string(), |l| format!("{l:.1}s"));
    let eta = m.eta_seconds.map_or("-".to_string(), |e| format!("{e}s"));
    let status = match (&m.step, m.paused, m.throttled) {
        (_, true, _) => "paused".to_string(),
        (_, _, true) => "throttled".to_string(),
        (Some(step), _, _) => format!("{} ({step})", m.state),
        (None, _, _) => m.state.clone(),
    };
    format!(
        "[{}{}] {:5.1}%  {}/{} rows  lag {lag}  backlog {}  ETA {eta}  {status}",
        "#".repeat(filled),
        "-".repeat(WIDTH - filled),
        m.progress,
        m.rows_copied,
        m.rows_estimate,
        m.backlog_events
    )
}

fn is_terminal_state(s: &str) -> bool {
    matches!(s, "completed" | "failed" | "cancelled")
}

async fn follow(client: &Client, id: &str) -> anyhow::Result<()> {
    let tty = std::io::stdout().is_terminal();
    let mut last = String::new();
    loop {
        let m: MigrationView = client
            .call(Method::GET, &format!("/v1/migrations/{id}"), None, &[])
            .await?;
        let line = bar(&m);
        if tty {
            print!("\r{line}\x1b[K");
            let _ = std::io::stdout().flush();
        } else if line != last {
            println!("{line}");
        }
        last = line;
        if is_terminal_state(&m.state) {
            if tty {
                println!();
            }
            println!("{}", summary(&m));
            if m.state != "completed" {
                bail!("migration {id} ended {}", m.state);
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

pub async fn migrations(args: MigrationsArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.api)?;
    let one = |id: &str, action: &str| format!("/v1/migrations/{id}/{action}");
    match args.command {
        MigrationsCommand::Start(s) => {
            let mut options = Map::new();
            if let Some(c) = s.chunk_size {
                options.insert("chunk_size".into(), json!(c));
            }
            if let Some(n) = s.nice_percent {
                options.insert("nice_percent".into(), json!(n));
            }
            if s.postpone_cutover {
                options.insert("postpone_cutover".into(), json!(true));
            }
            if s.drop_old_table {
                options.insert("keep_old_table".into(), json!(false));
            }
            if let Some(t) = s.cutover_lock_timeout_secs {
                options.insert("cutover_lock_timeout_secs".into(), json!(t));
            }
            if s.allow_renamed_columns {
                options.insert("allow_renamed_columns".into(), json!(true));
            }
            if let Some(l) = s.max_lag_millis {
                options.insert("max_lag_millis".into(), json!(l));
            }
            let mut body = json!({"database": s.database, "table": s.table, "alter": s.alter});
            if let Some(t) = s.target {
                body["target"] = json!(t);
            }
            if !options.is_empty() {
                body["options"] = Value::Object(options);
            }
            let headers: Vec<(&str, &str)> = s
                .idempotency_key
                .as_deref()
                .map(|k| ("idempotency-key", k))
                .into_iter()
                .collect();
            let m: MigrationView = client
                .call(Method::POST, "/v1/migrations", Some(&body), &headers)
                .await?;
            if s.json {
                print_json(&m)?;
            } else {
                println!("{}", summary(&m));
            }
            if s.follow {
                follow(&client, &m.id).await?;
            }
        }
        MigrationsCommand::List {
            state,
            target,
            database,
            table,
            json,
        } => {
            let mut query = Vec::new();
            for (k, v) in [
                ("state", state),
                ("target", target),
                ("database", database),
                ("table", table),
            ] {
                if let Some(v) = v {
                    query.push(format!("{k}={}", urlencode(&v)));
                }
            }
            let path = if query.is_empty() {
                "/v1/migrations".to_string()
            } else {
                format!("/v1/migrations?{}", query.join("&"))
            };
            let list: MigrationList = client.call(Method::GET, &path, None, &[]).await?;
            if json {
                print_json(&list)?;
            } else if list.migrations.is_empty() {
                println!("no migrations");
            } else {
                for m in &list.migrations {
                    println!("{}", summary(m));
                }
            }
        }
        MigrationsCommand::Show {
            id,
            follow: f,
            json,
        } => {
            if f {
                follow(&client, &id).await?;
            } else {
                let m: MigrationView = client
                    .call(Method::GET, &format!("/v1/migrations/{id}"), None, &[])
                    .await?;
                if json {
                    print_json(&m)?;
                } else {
                    println!("{}\n{}", summary(&m), bar(&m));
                }
            }
        }
        MigrationsCommand::Pause { id } => action(&client, &one(&id, "pause")).await?,
        MigrationsCommand::Resume { id } => action(&client, &one(&id, "resume")).await?,
        MigrationsCommand::Cutover { id } => action(&client, &one(&id, "cutover")).await?,
        MigrationsCommand::Cancel { id } => action(&client, &one(&id, "cancel")).await?,
        MigrationsCommand::Restart { id } => action(&client, &one(&id, "restart")).await?,
        MigrationsCommand::Set {
            id,
            chunk_size,
            nice_percent,
            max_lag_millis,
            postpone_cutover,
        } => {
            let mut changes = Map::new();
            if let Some(c) = chunk_size {
                changes.insert("chunk_size".into(), json!(c));
            }
            if let Some(n) = nice_percent {
                changes.insert("nice_percent".into(), json!(n));
            }
            if let Some(l) = max_lag_millis {
                changes.insert("max_lag_millis".into(), json!(l));
            }
            if let Some(p) = postpone_cutover {
                changes.insert("postpone_cutover".into(), json!(p));
            }
            if changes.is_empty() {
                bail!("name at least one option to change (--chunk-size, --nice-percent, --max-lag-millis, --postpone-cutover)");
            }
            let m: MigrationView = client
                .call(
                    Method::PATCH,
                    &format!("/v1/migrations/{id}"),
                    Some(&Value::Object(changes)),
                    &[],
                )
                .await?;
            println!("{}", summary(&m));
        }
    }
    Ok(())
}

async fn action(client: &Client, path: &str) -> anyhow::Result<()> {
    let m: MigrationView = client.call(Method::POST, path, None, &[]).await?;
    println!("{}", summary(&m));
    Ok(())
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn print_throttle(t: &ThrottleView) {
    if t.active {
        println!(
            "global throttle ON: {} (since {}{})",
            t.reason.as_deref().unwrap_or("-"),
            t.since.as_deref().unwrap_or("-"),
            t.until
                .as_deref()
                .map(|u| format!(", until {u}"))
                .unwrap_or_default()
        );
    } else {
        println!("global throttle off");
    }
}

pub async fn throttle(args: ThrottleArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.api)?;
    let view: ThrottleView = match args.command {
        ThrottleCommand::On {
            reason,
            until,
            for_secs,
        } => {
            let until = match (until, for_secs) {
                (Some(u), _) => {
                    if parse_rfc3339(&u).is_none() {
                        bail!("--until {u:?} is not an RFC 3339 time like 2024-03-01T18:00:00Z");
                    }
                    Some(u)
                }
                (None, Some(s)) => Some(rfc3339(
                    std::time::SystemTime::now() + Duration::from_secs(s),
                )),
                (None, None) => None,
            };
            let mut body = json!({"reason": reason});
            if let Some(u) = until {
                body["until"] = json!(u);
            }
            client
                .call(Method::POST, "/v1/throttle", Some(&body), &[])
                .await?
        }
        ThrottleCommand::Off => {
            client
                .call(Method::DELETE, "/v1/throttle", None, &[])
                .await?
        }
        ThrottleCommand::Status => client.call(Method::GET, "/v1/throttle", None, &[]).await?,
    };
    print_throttle(&view);
    Ok(())
}
