//! `shadowcut sandbox` (hidden): a throwaway MariaDB with a demo table and a small write load,
//! for `deploy/local.sh` and for trying the daemon by hand.
//!
//! It starts a [`Sandbox`] (its own datadir and a free loopback port, never port 3306's server),
//! creates the `shadowcut` user (password from SHADOWCUT_DEFAULT_PASSWORD when set), fills
//! `demo.orders`, writes a daemon config next to it, and keeps writing until SIGTERM or Ctrl-C,
//! when the server is stopped and its files removed.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use mysql_async::prelude::Queryable;
use shadowcut::sandbox::Sandbox;

#[derive(Args)]
pub struct SandboxArgs {
    /// Directory for the generated daemon config (shadowcut.toml) and the port file.
    #[arg(long)]
    dir: PathBuf,
    /// Rows in demo.orders.
    #[arg(long, default_value_t = 200_000)]
    rows: u64,
    /// Writes per second of the demo load (0: none).
    #[arg(long, default_value_t = 20)]
    writes_per_sec: u64,
    /// Address the generated config makes the daemon listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
}

pub async fn sandbox(args: SandboxArgs) -> anyhow::Result<()> {
    let sandbox = tokio::task::spawn_blocking(Sandbox::start)
        .await
        .context("starting the sandbox")??;
    let pool = mysql_async::Pool::new(sandbox.url().as_str());
    let mut conn = pool.get_conn().await.context("connecting to the sandbox")?;
    let password = std::env::var("SHADOWCUT_DEFAULT_PASSWORD").unwrap_or_default();
    // CREATE USER takes no placeholder: quote the password as a string literal.
    let literal = password.replace('\\', "\\\\").replace('\'', "''");
    conn.query_drop(format!(
        "CREATE USER 'shadowcut'@'127.0.0.1' IDENTIFIED BY '{literal}'"
    ))
    .await?;
    conn.query_drop("GRANT ALL PRIVILEGES ON *.* TO 'shadowcut'@'127.0.0.1'")
        .await?;
    conn.query_drop("CREATE DATABASE demo").await?;
    conn.query_drop(
        "CREATE TABLE demo.orders (id BIGINT PRIMARY KEY AUTO_INCREMENT, customer INT NOT NULL, \
         amount DECIMAL(10,2) NOT NULL, note VARCHAR(64), created_at DATETIME NOT NULL)",
    )
    .await?;
    // The row count is a number, so it can be spliced (the sequence engine takes no placeholder).
    conn.query_drop(format!(
        "INSERT INTO demo.orders (customer, amount, note, created_at) \
         SELECT seq % 1000, seq % 997 + 0.5, CONCAT('order ', seq), NOW() FROM demo.seq_1_to_{}",
        args.rows.max(1)
    ))
    .await?;
    conn.query_drop("ANALYZE TABLE demo.orders").await?;

    std::fs::create_dir_all(&args.dir)?;
    let config = format!(
        "listen = \"{}\"\n\n[api]\ntoken_env = \"SHADOWCUT_API_TOKEN\"\n\n[targets.default]\n\
         host = \"127.0.0.1\"\nport = {}\nuser = \"shadowcut\"\npassword_env = \"SHADOWCUT_DEFAULT_PASSWORD\"\n",
        args.listen,
        sandbox.port()
    );
    std::fs::write(args.dir.join("shadowcut.toml"), config)?;
    std::fs::write(args.dir.join("sandbox.port"), sandbox.port().to_string())?;
    println!(
        "sandbox MariaDB on 127.0.0.1:{} with demo.orders ({} rows); config in {}",
        sandbox.port(),
        args.rows,
        args.dir.join("shadowcut.toml").display()
    );

    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let period = Duration::from_millis(1000 / args.writes_per_sec.max(1));
    let mut tick = tokio::time::interval(period);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = term.recv() => break,
            _ = tick.tick() => {}
        }
        if args.writes_per_sec == 0 {
            continue;
        }
        n += 1;
        let sql = match n % 3 {
            0 => "INSERT INTO demo.orders (customer, amount, note, created_at) VALUES (FLOOR(RAND()*1000), 9.99, 'live', NOW())",
            1 => "UPDATE demo.orders SET amount = amount + 1 WHERE id = FLOOR(1 + RAND() * 1000)",
            _ => "DELETE FROM demo.orders WHERE id = (SELECT MIN(id) FROM (SELECT id FROM demo.orders WHERE note = 'live') x)",
        };
        if let Err(e) = conn.query_drop(sql).await {
            // A write can fail while a cut-over holds the lock; the load just goes on.
            tracing::debug!(error = %e, "demo write failed");
        }
    }
    drop(conn);
    let _ = pool.disconnect().await;
    println!("stopping the sandbox");
    drop(sandbox);
    Ok(())
}
