//! The engine's typed errors.
//!
//! Every error says what happened and what the operator should do. The variants are grouped by
//! who must act, so the daemon can map them to HTTP statuses: the caller's input
//! ([`Error::InvalidAlter`], [`Error::AlterRejected`]), the table or server not fitting
//! ([`Error::Refused`], [`Error::TableNotFound`]), or the migration failing while it ran.

use crate::alter::AlterError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A precondition failed; nothing was created.
    #[error("{problem}: {fix}")]
    Refused {
        /// Short machine-readable name of the failed check, e.g. `binlog_format`.
        check: &'static str,
        problem: String,
        fix: String,
    },
    #[error("table {database}.{table} does not exist: check the database and table names")]
    TableNotFound { database: String, table: String },
    #[error("invalid ALTER clause: {0}")]
    InvalidAlter(#[from] AlterError),
    /// The server refused the clause when applied to the empty shadow table.
    #[error("the server rejected the ALTER clause: {0}; fix the clause and start again")]
    AlterRejected(String),
    #[error("{context}: {source}")]
    Db {
        context: String,
        #[source]
        source: mysql_async::Error,
    },
    #[error("binlog stream: {0}")]
    Binlog(String),
    #[error("the original table changed during the migration ({0}); the migration stopped without touching it: start it again once the other change is done")]
    SchemaChanged(String),
    #[error("cut-over failed: {0}")]
    Cutover(String),
    #[error("cancelled")]
    Cancelled,
    /// Stopped for a restart with its helper tables kept: it resumes from its checkpoint.
    #[error("interrupted by a shutdown; it resumes from its checkpoint at the next start")]
    Interrupted,
}

impl Error {
    pub fn refused(
        check: &'static str,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Error::Refused {
            check,
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    /// Whether the error is the caller's input (bad ALTER), as opposed to the table or server.
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, Error::InvalidAlter(_) | Error::AlterRejected(_))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches what we were doing to a driver error.
pub trait DbContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> DbContext<T> for std::result::Result<T, mysql_async::Error> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Db {
            context: context(),
            source,
        })
    }
}

impl Error {
    /// A deadlock or lock wait timeout: the server rolled back, and an idempotent unit of work
    /// (a copy chunk, a replay batch) may simply run again.
    pub fn is_transient_lock(&self) -> bool {
        matches!(self, Error::Db { source, .. } if matches!(server_error(source), Some((1213 | 1205, _))))
    }
}

impl Error {
    /// The connection to the server broke (network, server restart, the session was killed):
    /// reconnecting and redoing the idempotent unit of work is safe.
    pub fn is_connection_lost(&self) -> bool {
        let Error::Db { source, .. } = self else {
            return false;
        };
        match source {
            mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => true,
            // Server shutdown in progress, connection killed, server gone / lost.
            mysql_async::Error::Server(e) => matches!(e.code, 1053 | 1927 | 2006 | 2013),
            _ => false,
        }
    }
}

/// How often an idempotent unit of work is retried after a deadlock before giving up.
pub const LOCK_RETRIES: u32 = 20;

/// The server's own error code and message, when the error came from the server.
pub fn server_error(err: &mysql_async::Error) -> Option<(u16, &str)> {
    match err {
        mysql_async::Error::Server(e) => Some((e.code, e.message.as_str())),
        _ => None,
    }
}
