//! Who holds the table when the cut-over cannot get its lock: the sessions an operator must
//! look at (or that shadowcut may kill, when asked to).

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use serde::Serialize;

/// A session that may be holding the table's metadata lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocker {
    pub id: u64,
    pub user: String,
    pub host: String,
    /// Seconds in its current state (transaction age where known).
    pub time_secs: u64,
    pub state: Option<String>,
    pub query: Option<String>,
}

impl std::fmt::Display for Blocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "connection {} ({}@{}, {} s",
            self.id, self.user, self.host, self.time_secs
        )?;
        if let Some(q) = &self.query {
            write!(f, ", running {:?}", q.chars().take(120).collect::<String>())?;
        }
        write!(f, ")")
    }
}

type Row = (u64, String, String, u64, Option<String>, Option<String>);

fn rows_to_blockers(rows: Vec<Row>, exclude: &[u32]) -> Vec<Blocker> {
    rows.into_iter()
        .filter(|r| !exclude.contains(&(r.0 as u32)))
        .map(|(id, user, host, time_secs, state, query)| Blocker {
            id,
            user,
            host,
            time_secs,
            state,
            query,
        })
        .collect()
}

/// Sessions that may hold `database`.`table`: exactly, through MariaDB's METADATA_LOCK_INFO
/// plugin when it is installed; otherwise every other session with an open transaction,
/// oldest first (a transaction that touched the table keeps its lock until it ends).
pub async fn find(conn: &mut Conn, database: &str, table: &str, exclude: &[u32]) -> Vec<Blocker> {
    let exact: Result<Vec<Row>, _> = conn
        .exec(
            "SELECT p.ID, p.USER, p.HOST, p.TIME, p.STATE, p.INFO \
             FROM information_schema.METADATA_LOCK_INFO m \
             JOIN information_schema.PROCESSLIST p ON p.ID = m.THREAD_ID \
             WHERE m.TABLE_SCHEMA = ? AND m.TABLE_NAME = ? ORDER BY p.TIME DESC",
            (database, table),
        )
        .await;
    if let Ok(rows) = exact {
        return rows_to_blockers(rows, exclude);
    }
    let open: Result<Vec<Row>, _> = conn
        .query(
            "SELECT p.ID, p.USER, p.HOST, \
                    GREATEST(p.TIME, TIMESTAMPDIFF(SECOND, x.trx_started, NOW())), p.STATE, p.INFO \
             FROM information_schema.INNODB_TRX x \
             JOIN information_schema.PROCESSLIST p ON p.ID = x.trx_mysql_thread_id \
             ORDER BY x.trx_started",
        )
        .await;
    rows_to_blockers(open.unwrap_or_default(), exclude)
}
