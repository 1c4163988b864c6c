//! Recovery on resume: how far an interrupted swap got, and whether the binlog needed to
//! continue is still there.

use mysql_async::prelude::Queryable;
use std::time::Duration;
use tracing::info;

use super::{MigrationSpec, Outcome};
use crate::binlog;
use crate::error::{DbContext, Error, Result};
use crate::inspect;
use crate::shadow::{self, HelperNames};
use crate::sql::qualified;

/// Works out how far an interrupted swap got. The RENAME is atomic, so either the shadow
/// still has its name (nothing swapped: remove a leftover placeholder and go on) or it is gone
/// (swapped: finish by archiving or dropping the old table). Returns the outcome in the
/// second case.
pub(super) async fn finish_interrupted_swap(
    spec: &MigrationSpec,
    conn: &mut mysql_async::Conn,
    names: &HelperNames,
) -> Result<Option<Outcome>> {
    let db = &spec.database;
    let shadow_there = inspect::table_exists(conn, db, &names.shadow).await?;
    let swap_there = inspect::table_exists(conn, db, &names.swap).await?;
    if shadow_there {
        if swap_there {
            info!(placeholder = %names.swap, "removing the placeholder of an interrupted cut-over; nothing was swapped");
            shadow::drop_helper(conn, db, &names.swap).await?;
        }
        return Ok(None);
    }
    let archived = inspect::table_exists(conn, db, &names.archive).await?;
    if !swap_there && !archived && spec.options.keep_old_table {
        return Err(Error::refused(
            "resume",
            format!(
                "cannot resume: neither the shadow table {} nor the old table exists",
                names.shadow
            ),
            "check the table by hand; the migration cannot tell how far it got",
        ));
    }
    info!("the interrupted cut-over had swapped the tables; finishing it");
    if swap_there {
        let swap = qualified(db, &names.swap);
        let sql = if spec.options.keep_old_table {
            format!("RENAME TABLE {swap} TO {}", qualified(db, &names.archive))
        } else {
            format!("DROP TABLE {swap}")
        };
        conn.query_drop(sql)
            .await
            .ctx(|| "finishing the interrupted cut-over".to_string())?;
    }
    shadow::drop_helper(conn, db, &names.changelog).await?;
    Ok(Some(Outcome {
        old_table: spec.options.keep_old_table.then(|| names.archive.clone()),
        stall: Duration::ZERO,
    }))
}

/// Refuses to resume from a binlog file the server no longer has.
pub(super) async fn check_binlog_available(
    conn: &mut mysql_async::Conn,
    pos: &binlog::BinlogPos,
) -> Result<()> {
    let files: Vec<mysql_async::Row> = conn
        .query("SHOW BINARY LOGS")
        .await
        .ctx(|| "listing binlog files".to_string())?;
    let present = files.iter().any(|r| {
        r.get_opt::<String, _>("Log_name")
            .and_then(|x| x.ok())
            .as_deref()
            == Some(pos.file.as_str())
    });
    if present {
        return Ok(());
    }
    Err(Error::refused(
        "binlog_purged",
        format!("the binlog file {} where the migration stopped ({pos}) has been purged from the server", pos.file),
        "the migration cannot resume; start it again from scratch (cancel it and start a new one), and keep binlogs longer than a migration may pause",
    ))
}
