//! Command-line front end. `anyhow` lives here, at the edge; the library speaks typed errors.

mod client;
mod migrations;
mod run;
mod sandbox;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "shadowcut",
    version,
    about = "Online schema changes for MySQL and MariaDB"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one migration in the foreground.
    Run(run::RunArgs),
    /// Run the daemon: the HTTP API and Prometheus metrics over a registry of migrations.
    Serve(serve::ServeArgs),
    /// Drive the daemon's migrations (start, list, show, pause, resume, cutover, cancel, restart).
    Migrations(migrations::MigrationsArgs),
    /// The daemon's global throttle (on, off, status).
    Throttle(migrations::ThrottleArgs),
    /// A throwaway MariaDB with a demo table and write load (for deploy/local.sh).
    #[command(hide = true)]
    Sandbox(sandbox::SandboxArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon logs what it does; one-shot commands only warn.
    let default_filter = match cli.command {
        Command::Serve(_) => "shadowcut=info",
        _ => "shadowcut=warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHADOWCUT_LOG")
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shadowcut: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run::run(args).await,
            Command::Serve(args) => serve::serve(args).await,
            Command::Migrations(args) => migrations::migrations(args).await,
            Command::Throttle(args) => migrations::throttle(args).await,
            Command::Sandbox(args) => sandbox::sandbox(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shadowcut: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
