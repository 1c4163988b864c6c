//! Shared test harness: a real MariaDB sandbox per test, and helpers to run and check
//! migrations against it.
#![allow(dead_code)]

pub mod writers;

use std::sync::Arc;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Pool, Row, Value};
use shadowcut::migration::{self, Controls, MigrationOptions, MigrationSpec, Outcome};
use shadowcut::progress::{NoObserver, Progress};
use shadowcut::sandbox::Sandbox;

pub struct Db {
    pub sandbox: Sandbox,
    pub pool: Pool,
}

/// Logs to the test output when SHADOWCUT_LOG is set (e.g. `SHADOWCUT_LOG=shadowcut=debug`).
pub fn init_tracing() {
    if let Ok(filter) = std::env::var("SHADOWCUT_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

impl Db {
    pub fn start() -> Db {
        init_tracing();
        let sandbox =
            Sandbox::start().expect("start a MariaDB sandbox (is mariadb-server installed?)");
        let pool = Pool::new(sandbox.url().as_str());
        Db { sandbox, pool }
    }

    pub async fn conn(&self) -> Conn {
        let mut c = self.pool.get_conn().await.expect("connect to sandbox");
        c.query_drop("SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION', time_zone = '+00:00'")
            .await
            .unwrap();
        c
    }

    pub async fn exec(&self, sql: &str) {
        let mut c = self.conn().await;
        c.query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    pub async fn rows(&self, sql: &str) -> Vec<Row> {
        let mut c = self.conn().await;
        c.query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    pub async fn scalar_u64(&self, sql: &str) -> u64 {
        let mut c = self.conn().await;
        c.query_first::<u64, _>(sql).await.unwrap().unwrap_or(0)
    }

    pub async fn tables(&self, database: &str) -> Vec<String> {
        let mut c = self.conn().await;
        c.exec("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME", (database,))
            .await
            .unwrap()
    }

    pub fn spec(
        &self,
        database: &str,
        table: &str,
        alter: &str,
        options: MigrationOptions,
    ) -> MigrationSpec {
        MigrationSpec {
            settings: self.sandbox.settings(),
            database: database.into(),
            table: table.into(),
            alter: alter.into(),
            options,
        }
    }

    /// Runs a migration to its end.
    pub async fn migrate(
        &self,
        database: &str,
        table: &str,
        alter: &str,
        options: MigrationOptions,
    ) -> (shadowcut::Result<Outcome>, Arc<Progress>) {
        let spec = self.spec(database, table, alter, options);
        let (controls, _tuning) = Controls::unattended(&spec.options);
        let progress = Progress::new(Arc::new(NoObserver));
        let r = migration::run(spec, controls, progress.clone()).await;
        (r, progress)
    }

    /// Starts a migration that copies, then waits, postponed, for the cut-over (replaying
    /// live changes meanwhile); returns once it waits.
    pub async fn postponed(
        &self,
        database: &str,
        table: &str,
        alter: &str,
    ) -> (
        tokio::task::JoinHandle<shadowcut::Result<Outcome>>,
        Arc<Progress>,
    ) {
        let options = MigrationOptions {
            postpone_cutover: true,
            ..Default::default()
        };
        let spec = self.spec(database, table, alter, options);
        let (controls, _tuning) = Controls::unattended(&spec.options);
        let progress = Progress::new(Arc::new(NoObserver));
        let task = tokio::spawn(migration::run(spec, controls, progress.clone()));
        while progress.state() != shadowcut::state::State::Postponed {
            assert!(
                !task.is_finished(),
                "migration ended early: {:?}",
                progress.status().error
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        (task, progress)
    }
}

/// Every row of `table` as HEX/text of each listed column, ordered by `order`. HEX makes the
/// comparison byte-exact whatever the type.
pub async fn dump(db: &Db, table: &str, cols: &[&str], order: &str) -> Vec<Vec<Option<String>>> {
    let select = cols
        .iter()
        .map(|c| format!("HEX(`{c}`)"))
        .collect::<Vec<_>>()
        .join(", ");
    let rows = db
        .rows(&format!("SELECT {select} FROM {table} ORDER BY {order}"))
        .await;
    rows.into_iter()
        .map(|r| {
            r.unwrap()
                .into_iter()
                .map(|v| match v {
                    Value::NULL => None,
                    Value::Bytes(b) => Some(String::from_utf8_lossy(&b).into_owned()),
                    other => Some(format!("{other:?}")),
                })
                .collect()
        })
        .collect()
}

/// `app.t (id, v, payload)` with `rows` rows and the matching writer model.
pub async fn seed_model_table(db: &Db, rows: i64) -> writers::Model {
    db.exec("CREATE DATABASE app").await;
    db.exec("CREATE TABLE app.t (id BIGINT PRIMARY KEY, v BIGINT NOT NULL, payload VARCHAR(64))")
        .await;
    db.exec(&format!(
        "INSERT INTO app.t SELECT seq, seq, CONCAT('init-', seq) FROM app.seq_1_to_{rows}"
    ))
    .await;
    (1..=rows).map(|s| (s, (s, format!("init-{s}")))).collect()
}
