//! The benchmark's table: loading it the way sysbench shapes it, copying it, checking results.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

pub const DATABASE: &str = "sbtest";
pub const TABLE: &str = "sbtest1";
/// The untouched copy the shadowcut run migrates, made before the server's ALTER.
pub const FRESH: &str = "sbtest1_bench_fresh";
/// The change both sides make.
pub const ALTER_CLAUSE: &str = "ADD COLUMN c2 INT NOT NULL DEFAULT 0, ADD INDEX k2 (c2)";

/// sysbench's own DDL for `sbtest1` (oltp_common.lua, mysql driver, default options).
const CREATE_TABLE: &str = "CREATE TABLE sbtest1(
  id INTEGER NOT NULL AUTO_INCREMENT,
  k INTEGER DEFAULT '0' NOT NULL,
  c CHAR(120) DEFAULT '' NOT NULL,
  pad CHAR(60) DEFAULT '' NOT NULL,
  PRIMARY KEY (id)
) /*! ENGINE = innodb */";

/// Rows per INSERT .. SELECT statement of the loader.
const LOAD_BATCH: u64 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Loader {
    /// Server-side INSERT .. SELECT from MariaDB's sequence engine (fastest; MariaDB only).
    Sequence,
    /// `sysbench oltp_write_only prepare` (works on MySQL too; slower, and writes binlog).
    Sysbench,
}

async fn exec(conn: &mut Conn, sql: &str) -> anyhow::Result<()> {
    conn.query_drop(sql)
        .await
        .with_context(|| format!("running `{}`", sql.lines().next().unwrap_or(sql)))
}

/// Drops and re-creates the `sbtest` database.
pub async fn reset_database(conn: &mut Conn) -> anyhow::Result<()> {
    exec(conn, &format!("DROP DATABASE IF EXISTS {DATABASE}")).await?;
    exec(conn, &format!("CREATE DATABASE {DATABASE}")).await
}

/// `#` groups of sysbench's c/pad templates: 11 random digits each, dash-separated.
fn random_digit_groups(groups: usize) -> String {
    let one = "LPAD(FLOOR(RAND() * 100000000000), 11, '0')";
    format!("CONCAT_WS('-', {})", vec![one; groups].join(", "))
}

/// Loads `sbtest1` with ids 1..=rows, then adds the `k_1` index, as sysbench's prepare does.
/// With `replicated`, the sequence loader writes its statements to the binlog in statement
/// format (the server logs RAND()'s seeds), so that a replica loads the same rows in about
/// the same time; otherwise it keeps the load out of the binlog. sysbench's prepare always
/// writes to the binlog.
pub async fn load(
    conn: &mut Conn,
    loader: Loader,
    sysbench: Option<&Path>,
    port: u16,
    rows: u64,
    replicated: bool,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    match loader {
        Loader::Sequence => {
            let (before, after) = if replicated {
                (
                    "SET SESSION binlog_format = 'STATEMENT'",
                    "SET SESSION binlog_format = 'ROW'",
                )
            } else {
                // The load is not part of any measurement: keep it out of the binlog.
                ("SET SESSION sql_log_bin = 0", "SET SESSION sql_log_bin = 1")
            };
            exec(conn, before).await?;
            exec(conn, &format!("USE {DATABASE}")).await?;
            exec(conn, CREATE_TABLE).await?;
            let mut lo = 1;
            while lo <= rows {
                let hi = (lo + LOAD_BATCH - 1).min(rows);
                let sql = format!(
                    "INSERT INTO {TABLE} (id, k, c, pad) SELECT seq, FLOOR(1 + RAND() * {rows}), \
                     {}, {} FROM seq_{lo}_to_{hi}",
                    random_digit_groups(10),
                    random_digit_groups(5)
                );
                exec(conn, &sql).await.context(
                    "loading rows from the sequence engine (MariaDB only; try --loader sysbench)",
                )?;
                lo = hi + 1;
            }
            exec(conn, &format!("CREATE INDEX k_1 ON {TABLE}(k)")).await?;
            exec(conn, after).await?;
        }
        Loader::Sysbench => {
            let Some(sysbench) = sysbench else {
                bail!("--loader sysbench needs sysbench (apt-get install sysbench)");
            };
            let out = tokio::process::Command::new(sysbench)
                .arg("oltp_write_only")
                .arg("--db-driver=mysql")
                .arg("--mysql-host=127.0.0.1")
                .arg(format!("--mysql-port={port}"))
                .arg("--mysql-user=root")
                .arg(format!("--mysql-db={DATABASE}"))
                .arg("--tables=1")
                .arg(format!("--table-size={rows}"))
                .arg("prepare")
                .stdin(Stdio::null())
                .output()
                .await
                .context("running sysbench prepare")?;
            if !out.status.success() {
                bail!(
                    "sysbench prepare failed ({}): {}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    Ok(started.elapsed())
}

/// Copies `sbtest1` to [`FRESH`]: the identical table the shadowcut run gets.
pub async fn make_fresh_copy(conn: &mut Conn) -> anyhow::Result<Duration> {
    let started = Instant::now();
    exec(conn, "SET SESSION sql_log_bin = 0").await?;
    exec(conn, &format!("USE {DATABASE}")).await?;
    exec(conn, &format!("CREATE TABLE {FRESH} LIKE {TABLE}")).await?;
    exec(
        conn,
        &format!("INSERT INTO {FRESH} SELECT * FROM {TABLE} ORDER BY id"),
    )
    .await?;
    exec(conn, "SET SESSION sql_log_bin = 1").await?;
    Ok(started.elapsed())
}

/// Runs the server's own `ALTER TABLE .. ALGORITHM=COPY` on `sbtest1`.
pub async fn server_alter(conn: &mut Conn) -> anyhow::Result<()> {
    exec(
        conn,
        &format!("ALTER TABLE {DATABASE}.{TABLE} {ALTER_CLAUSE}, ALGORITHM=COPY"),
    )
    .await
}

/// Puts the fresh copy in place of the altered table.
pub async fn swap_in_fresh_copy(conn: &mut Conn) -> anyhow::Result<()> {
    exec(conn, &format!("DROP TABLE {DATABASE}.{TABLE}")).await?;
    exec(
        conn,
        &format!("RENAME TABLE {DATABASE}.{FRESH} TO {DATABASE}.{TABLE}"),
    )
    .await
}

pub async fn checksum(conn: &mut Conn) -> anyhow::Result<Option<u64>> {
    let row: Option<(String, Option<u64>)> = conn
        .query_first(format!("CHECKSUM TABLE {DATABASE}.{TABLE}"))
        .await
        .context("CHECKSUM TABLE")?;
    Ok(row.and_then(|(_, c)| c))
}

/// Checks the migrated table: every row there, the new column and index present, no helper
/// table left behind, and (idle only) the same content as the server's own ALTER produced.
pub async fn verify(
    conn: &mut Conn,
    rows: u64,
    expected_checksum: Option<u64>,
) -> anyhow::Result<String> {
    let mut problems = Vec::new();
    let count: u64 = conn
        .query_first(format!("SELECT COUNT(*) FROM {DATABASE}.{TABLE}"))
        .await
        .context("counting rows")?
        .unwrap_or(0);
    if count != rows {
        problems.push(format!("{count} rows instead of {rows}"));
    }
    let columns: Vec<String> = conn
        .query(format!(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = '{DATABASE}' AND TABLE_NAME = '{TABLE}' ORDER BY ORDINAL_POSITION"
        ))
        .await
        .context("reading columns")?;
    if columns != ["id", "k", "c", "pad", "c2"] {
        problems.push(format!("columns are {columns:?}"));
    }
    let k2: Vec<String> = conn
        .query(format!(
            "SELECT COLUMN_NAME FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = '{DATABASE}' AND TABLE_NAME = '{TABLE}' AND INDEX_NAME = 'k2' \
             ORDER BY SEQ_IN_INDEX"
        ))
        .await
        .context("reading indexes")?;
    if k2 != ["c2"] {
        problems.push(format!("index k2 covers {k2:?}"));
    }
    let tables: Vec<String> = conn
        .query(format!("SHOW TABLES FROM {DATABASE}"))
        .await
        .context("listing tables")?;
    if tables != [TABLE] {
        problems.push(format!("tables left: {tables:?}"));
    }
    let mut checked = format!("{count} rows, c2, k2");
    if let Some(expected) = expected_checksum {
        let got = checksum(conn).await?;
        if got != Some(expected) {
            problems.push(format!(
                "checksum {got:?} differs from the server ALTER's {expected}"
            ));
        }
        checked.push_str(", checksum = server ALTER's");
    }
    if problems.is_empty() {
        Ok(checked)
    } else {
        bail!("verification failed: {}", problems.join("; "))
    }
}

/// Checks that a cancelled migration left the table as it was: every row, the old columns, and
/// no helper table.
pub async fn verify_untouched(conn: &mut Conn, rows: u64) -> anyhow::Result<String> {
    let mut problems = Vec::new();
    let count: u64 = conn
        .query_first(format!("SELECT COUNT(*) FROM {DATABASE}.{TABLE}"))
        .await
        .context("counting rows")?
        .unwrap_or(0);
    if count != rows {
        problems.push(format!("{count} rows instead of {rows}"));
    }
    let columns: Vec<String> = conn
        .query(format!(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = '{DATABASE}' AND TABLE_NAME = '{TABLE}' ORDER BY ORDINAL_POSITION"
        ))
        .await
        .context("reading columns")?;
    if columns != ["id", "k", "c", "pad"] {
        problems.push(format!("columns are {columns:?}"));
    }
    let tables: Vec<String> = conn
        .query(format!("SHOW TABLES FROM {DATABASE}"))
        .await
        .context("listing tables")?;
    if tables != [TABLE] {
        problems.push(format!("tables left: {tables:?}"));
    }
    if problems.is_empty() {
        Ok(format!(
            "cancelled cleanly: original table unchanged ({count} rows), no helper table left"
        ))
    } else {
        bail!("after the cancel: {}", problems.join("; "))
    }
}
