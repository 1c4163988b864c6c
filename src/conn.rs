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
