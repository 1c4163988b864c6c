//! Connection settings and the session every shadowcut connection runs in.
//!
//! Invariants of a shadowcut session: UTC (`time_zone='+00:00'`, so TIMESTAMP values written
//! from binlog epochs mean what they meant), strict SQL mode without zero-date checks (values
//! are written exactly or the statement fails; zero dates that exist in the table stay
//! writable) and `NO_AUTO_VALUE_ON_ZERO` (a key 0 stays 0 instead of drawing an
//! AUTO_INCREMENT value), utf8mb4, and a bounded `lock_wait_timeout` (MariaDB's default is a
//! day).

use std::fmt;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};

use crate::error::{DbContext, Result};

/// Lock wait bound for ordinary worker sessions (copy, replay, inspection), in seconds.
pub const WORKER_LOCK_WAIT_SECS: u64 = 20;

/// Where and as whom to connect. The password is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnSettings {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
}

impl fmt::Debug for ConnSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl fmt::Display for ConnSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}:{}", self.user, self.host, self.port)
    }
}

impl ConnSettings {
    fn opts(&self, lock_wait_secs: u64) -> Opts {
        OptsBuilder::default()
            .ip_or_hostname(self.host.clone())
            .tcp_port(self.port)
            .user(Some(self.user.clone()))
            .pass(self.password.clone())
            .prefer_socket(false)
            .stmt_cache_size(128)
            .init(vec![
                "SET NAMES utf8mb4".to_string(),
                format!(
                    "SET SESSION time_zone = '+00:00', \
                     sql_mode = 'STRICT_ALL_TABLES,NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION', \
                     lock_wait_timeout = {lock_wait_secs}, innodb_lock_wait_timeout = {lock_wait_secs}"
                ),
            ])
            .into()
    }

    /// Opens a worker session. `purpose` names it in errors ("copy", "replay", ...).
    pub async fn connect(&self, purpose: &str) -> Result<Conn> {
        self.connect_with_lock_wait(purpose, WORKER_LOCK_WAIT_SECS)
            .await
    }

    /// Opens a session whose lock waits give up after `lock_wait_secs`.
    pub async fn connect_with_lock_wait(&self, purpose: &str, lock_wait_secs: u64) -> Result<Conn> {
        Conn::new(self.opts(lock_wait_secs.max(1)))
            .await
            .ctx(|| format!("connecting to {self} for {purpose}"))
    }
}

/// Runs a query returning one optional row of one column.
pub async fn query_scalar<T>(conn: &mut Conn, sql: &str) -> Result<Option<T>>
where
    T: mysql_async::prelude::FromValue + Send + 'static,
{
    conn.query_first::<T, _>(sql)
        .await
        .ctx(|| format!("running `{sql}`"))
}

/// Sessions that read the source or write the shadow use READ COMMITTED: no gap locks, so
/// fewer deadlocks with each other and no locks on the application's rows.
pub const READ_COMMITTED: &str = "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED";

/// A worker's connection that comes back after a loss.
///
/// `conn()` reconnects with backoff (running the session's setup statements again) until
/// `reconnect_for` has passed since the loss was noticed; then the last error stands. Callers
/// redo their idempotent unit of work after a loss, so a reconnect never skips or half-applies
/// anything.
pub struct Session {
    settings: ConnSettings,
    purpose: &'static str,
    setup: Vec<String>,
    reconnect_for: std::time::Duration,
    progress: std::sync::Arc<crate::progress::Progress>,
    conn: Option<Conn>,
    lost_since: Option<std::time::Instant>,
}

impl Session {
    pub async fn open(
        settings: &ConnSettings,
        purpose: &'static str,
        setup: Vec<String>,
        reconnect_for: std::time::Duration,
        progress: std::sync::Arc<crate::progress::Progress>,
    ) -> Result<Session> {
        let mut s = Session {
            settings: settings.clone(),
            purpose,
            setup,
            reconnect_for,
            progress,
            conn: None,
            lost_since: None,
        };
        s.conn().await?;
        Ok(s)
    }

    async fn connect_once(&self) -> Result<Conn> {
        let mut conn = self.settings.connect(self.purpose).await?;
        for stmt in &self.setup {
            conn.query_drop(stmt)
                .await
                .ctx(|| format!("{} session setup", self.purpose))?;
        }
        Ok(conn)
    }

    /// The live connection, reconnecting first if it was lost.
    pub async fn conn(&mut self) -> Result<&mut Conn> {
        if self.conn.is_none() {
            let mut backoff = std::time::Duration::from_millis(100);
            loop {
                match self.connect_once().await {
                    Ok(c) => {
                        if self.lost_since.take().is_some() {
                            self.progress
                                .reconnects
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tracing::info!(purpose = self.purpose, "reconnected");
                        }
                        self.conn = Some(c);
                        break;
                    }
                    Err(e) if e.is_connection_lost() && self.lost_since.is_some() => {
                        let since = self.lost_since.unwrap_or_else(std::time::Instant::now);
                        if since.elapsed() > self.reconnect_for {
                            return Err(crate::Error::Db {
                                context: format!(
                                    "the server was unreachable for more than {:?} ({}); the migration stopped",
                                    self.reconnect_for, self.purpose
                                ),
                                source: match e {
                                    crate::Error::Db { source, .. } => source,
                                    _ => return Err(e),
                                },
                            });
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(std::time::Duration::from_secs(2));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        match self.conn.as_mut() {
            Some(c) => Ok(c),
            None => Err(crate::Error::Binlog("no connection".to_string())),
        }
    }

    /// Notes a lost connection: the next `conn()` reconnects.
    pub fn lost(&mut self, error: &crate::Error) {
        tracing::warn!(purpose = self.purpose, %error, "connection lost; reconnecting");
        self.conn = None;
        self.lost_since.get_or_insert_with(std::time::Instant::now);
    }

    pub async fn close(mut self) {
        if let Some(c) = self.conn.take() {
            let _ = c.disconnect().await;
        }
    }
}
