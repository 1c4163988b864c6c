//! Tailing the binary log: positions, and the stream of committed changes to one table.
//!
//! The tail starts at a position taken before the copy begins, so every change the copy may
//! miss is in it. It reads on a dedicated connection (a binlog dump consumes it), verifies
//! CRC32 checksums, skips other tables' row events by table id before decoding them, and hands
//! the replay committed transactions in commit order through a bounded channel (backpressure:
//! a slow replay slows the reader, never piles up memory). Changelog rows (heartbeats and
//! cut-over markers) arrive in the same order, after everything committed before them.
//!
//! Guard: a DDL statement that names the table, or a table map whose columns differ from the
//! model, stops the tail with [`crate::Error::SchemaChanged`].

mod decode;
mod guard;
mod reader;

use std::fmt;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use serde::{Deserialize, Serialize};

pub use decode::{RowChange, TableDecoder};
pub use guard::ddl_touches_table;
pub use reader::{spawn_tail, Item, TailConfig};
pub use reader::{HEARTBEAT_ID, MARKER_ID};

use crate::error::{DbContext, Error, Result};
use crate::flavor::ServerVersion;

/// A point in the binlog: the position after a transaction's last event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinlogPos {
    pub file: String,
    pub pos: u64,
    /// The GTID of the transaction that ends here, where the server has one.
    pub gtid: Option<String>,
}

impl fmt::Display for BinlogPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)?;
        if let Some(g) = &self.gtid {
            write!(f, " ({g})")?;
        }
        Ok(())
    }
}

/// The server's current binlog position.
pub async fn current_position(conn: &mut Conn, version: &ServerVersion) -> Result<BinlogPos> {
    let sql = version.binlog_status_sql();
    let row: Option<Row> = conn
        .query_first(sql)
        .await
        .ctx(|| format!("running {sql}"))?;
    let row = row.ok_or_else(|| {
        Error::refused(
            "log_bin",
            "the server reports no binlog position",
            "enable the binary log",
        )
    })?;
    let file: Option<String> = row.get_opt("File").and_then(|r| r.ok());
    let pos: Option<u64> = row.get_opt("Position").and_then(|r| r.ok());
    match (file, pos) {
        (Some(file), Some(pos)) => Ok(BinlogPos {
            file,
            pos,
            gtid: None,
        }),
        _ => Err(Error::Binlog(format!(
            "{sql} returned no File/Position columns"
        ))),
    }
}
