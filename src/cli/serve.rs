//! `shadowcut serve --config FILE`: the long-lived daemon (see `shadowcut::daemon`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use shadowcut::daemon::{self, config::Config};
use tokio_util::sync::CancellationToken;

#[derive(Args)]
pub struct ServeArgs {
    /// The TOML configuration (see deploy/shadowcut.example.toml).
    #[arg(long, env = "SHADOWCUT_CONFIG")]
    config: PathBuf,
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config).context("invalid configuration")?;
    daemon::serve(config, CancellationToken::new()).await?;
    Ok(())
}
