//! Preflight: find out what server and table we have, and refuse early what we cannot migrate
//! safely.
//!
//! Invariant: this module only reads. Every refusal happens before anything is created, names
//! the problem and says what to do.

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use crate::error::{DbContext, Error, Result};
use crate::flavor::ServerVersion;
use crate::schema::{self, Column, TableSchema};

/// What preflight learned, handed to the later steps.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub version: ServerVersion,
    pub schema: TableSchema,
    pub rows_estimate: u64,
    /// `lower_case_table_names`: names compare lower-cased when non-zero (cut-over ordering).
    pub lower_case_names: bool,
}

/// Column types whose values we decode from the binlog and write back byte-exactly.
const REPLAYABLE_TYPES: &[&str] = &[
    "tinyint",
    "smallint",
    "mediumint",
    "int",
    "bigint",
    "decimal",
    "float",
    "double",
    "bit",
    "date",
    "datetime",
    "timestamp",
    "time",
    "year",
    "char",
    "varchar",
    "tinytext",
    "text",
    "mediumtext",
    "longtext",
    "binary",
    "varbinary",
    "tinyblob",
    "blob",
    "mediumblob",
    "longblob",
    "enum",
    "set",
    "json",
    "inet4",
    "inet6",
    "uuid",
    "geometry",
    "point",
    "linestring",
    "polygon",
    "multipoint",
    "multilinestring",
    "multipolygon",
    "geometrycollection",
];

pub async fn server_version(conn: &mut Conn) -> Result<ServerVersion> {
    let v: String = conn
        .query_first("SELECT VERSION()")
        .await
        .ctx(|| "reading the server version".to_string())?
        .unwrap_or_default();
    let version = ServerVersion::parse(&v).ok_or_else(|| {
        Error::refused(
            "version",
            format!("cannot parse server version {v:?}"),
            "shadowcut supports MySQL 8.0+ and MariaDB 10.6+",
        )
    })?;
    if !version.supported() {
        return Err(Error::refused(
            "version",
            format!("{version} is not supported"),
            "upgrade to MySQL 8.0+ or MariaDB 10.6+",
        ));
    }
    Ok(version)
}

/// Refuses when the binlog cannot give us every row change in full.
pub async fn check_binlog_settings(conn: &mut Conn, version: &ServerVersion) -> Result<()> {
    for (name, required) in version.required_binlog_settings() {
        // `_` is a LIKE wildcard; escape it so only the variable itself matches.
        let sql = format!("SHOW GLOBAL VARIABLES LIKE '{}'", name.replace('_', "\\_"));
        let row: Option<(String, String)> = conn
            .query_first(sql)
            .await
            .ctx(|| format!("reading @@{name}"))?;
        let Some((_, value)) = row else { continue };
        if !value.eq_ignore_ascii_case(required) {
            let shown = if value.is_empty() {
                "''"
            } else {
                value.as_str()
            };
            let want = if required.is_empty() { "''" } else { required };
            let fix = match name {
                "log_bin" => "enable the binary log (log_bin in the server config) and restart the server".to_string(),
                _ => format!("run SET GLOBAL {name} = '{required}' (and set it in the server config); sessions started before keep the old value"),
            };
            return Err(Error::refused(
                "binlog",
                format!("@@{name} is {shown} but shadowcut needs {want} to see every row change in full"),
                fix,
            ));
        }
    }
    Ok(())
}

/// Runs every read-only precondition on the table.
pub async fn inspect(conn: &mut Conn, database: &str, table: &str) -> Result<Inspection> {
    let version = server_version(conn).await?;
    check_binlog_settings(conn, &version).await?;

    let kind: Option<String> = conn
        .exec_first(
            "SELECT TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (database, table),
        )
        .await
        .ctx(|| format!("looking up {database}.{table}"))?;
    match kind.as_deref() {
        None => {
            return Err(Error::TableNotFound {
                database: database.to_string(),
                table: table.to_string(),
            })
        }
        Some("BASE TABLE") => {}
        Some(other) => {
            return Err(Error::refused(
                "table_type",
                format!("{database}.{table} is a {other}, not a base table"),
                "migrate the underlying table instead",
            ))
        }
    }
    let schema =
        schema::load(conn, database, table)
            .await?
            .ok_or_else(|| Error::TableNotFound {
                database: database.to_string(),
                table: table.to_string(),
            })?;

    let triggers: Vec<String> = conn
        .exec(
            "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS \
             WHERE EVENT_OBJECT_SCHEMA = ? AND EVENT_OBJECT_TABLE = ?",
            (database, table),
        )
        .await
        .ctx(|| "reading triggers".to_string())?;
    if !triggers.is_empty() {
        return Err(Error::refused(
            "triggers",
            format!("{database}.{table} has triggers ({})", triggers.join(", ")),
            "shadowcut does not migrate tables with triggers: drop them for the migration and recreate them afterwards",
        ));
    }

    let fks: Vec<(String, String, String)> = conn
        .exec(
            "SELECT CONSTRAINT_NAME, TABLE_NAME, REFERENCED_TABLE_NAME \
             FROM information_schema.REFERENTIAL_CONSTRAINTS \
             WHERE (CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?) \
                OR (UNIQUE_CONSTRAINT_SCHEMA = ? AND REFERENCED_TABLE_NAME = ?)",
            (database, table, database, table),
        )
        .await
        .ctx(|| "reading foreign keys".to_string())?;
    if let Some((name, child, parent)) = fks.first() {
        return Err(Error::refused(
            "foreign_keys",
            format!("{database}.{table} takes part in foreign key {name} ({child} -> {parent})"),
            "foreign keys are not supported yet: drop the constraint for the migration or use the server's own ALTER TABLE",
        ));
    }

    for col in &schema.columns {
        if col.is_compressed() {
            return Err(Error::refused(
                "column_type",
                format!(
                    "column {} is {}: MariaDB logs COMPRESSED columns in a compressed binlog format that shadowcut cannot replay",
                    col.name, col.column_type
                ),
                "remove the COMPRESSED attribute first (ALTER TABLE .. MODIFY) or use the server's own ALTER TABLE for this table",
            ));
        }
        if let Some(member) = unknowable_member(col) {
            return Err(Error::refused(
                "column_type",
                format!(
                    "column {} is {} and information_schema shows its member {member:?} with a '?': \
                     MariaDB and MySQL show characters outside the Basic Multilingual Plane (emoji) \
                     in ENUM/SET members as '?', so shadowcut cannot know the member's real name \
                     to replay it",
                    col.name, col.column_type
                ),
                "rename the member to one without such characters first (ALTER TABLE .. MODIFY), or use the server's own ALTER TABLE for this table",
            ));
        }
        if !REPLAYABLE_TYPES.contains(&col.data_type.as_str()) {
            return Err(Error::refused(
                "column_type",
                format!(
                    "column {} has type {} which shadowcut cannot yet copy and replay exactly",
                    col.name, col.column_type
                ),
                "use the server's own ALTER TABLE for this table",
            ));
        }
    }

    if !schema.unique_keys.iter().any(|k| k.usable) {
        return Err(Error::refused(
            "shared_key",
            format!("{database}.{table} has no PRIMARY KEY and no UNIQUE key on NOT NULL columns"),
            "add a primary key first (shadowcut needs one to identify rows)",
        ));
    }

    let (rows_estimate, lctn): (Option<u64>, u32) = conn
        .exec_first(
            "SELECT TABLE_ROWS, @@lower_case_table_names FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (database, table),
        )
        .await
        .ctx(|| "reading the row estimate".to_string())?
        .unwrap_or((None, 0));

    Ok(Inspection {
        version,
        schema,
        rows_estimate: rows_estimate.unwrap_or(0),
        lower_case_names: lctn != 0,
    })
}

/// An ENUM/SET member whose name information_schema may have mangled: its metadata is
/// utf8mb3, so a character outside the BMP (possible only in these charsets) shows as '?'. A
/// real '?' looks the same; refusing it too is the price of never writing the wrong member.
fn unknowable_member(col: &Column) -> Option<&str> {
    let wide = matches!(
        col.charset.as_deref(),
        Some("utf8mb4" | "utf16" | "utf16le" | "utf32")
    );
    if !wide || !matches!(col.data_type.as_str(), "enum" | "set") {
        return None;
    }
    col.members
        .iter()
        .find(|m| m.contains('?'))
        .map(String::as_str)
}

/// Whether a table exists (for helper-name collision checks).
pub async fn table_exists(conn: &mut Conn, database: &str, table: &str) -> Result<bool> {
    let n: Option<u64> = conn
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (database, table),
        )
        .await
        .ctx(|| format!("looking up {database}.{table}"))?;
    Ok(n.unwrap_or(0) > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(data_type: &str, charset: &str, members: &[&str]) -> Column {
        Column {
            name: "e".into(),
            data_type: data_type.into(),
            column_type: String::new(),
            unsigned: false,
            charset: Some(charset.into()),
            collation: None,
            nullable: true,
            generated: false,
            members: members.iter().map(|m| m.to_string()).collect(),
        }
    }

    #[test]
    fn question_marks_in_wide_enum_members_are_unknowable() {
        assert_eq!(
            unknowable_member(&col("enum", "utf8mb4", &["a", "?"])),
            Some("?")
        );
        assert_eq!(
            unknowable_member(&col("set", "utf16", &["x?y"])),
            Some("x?y")
        );
        assert_eq!(
            unknowable_member(&col("enum", "utf8mb4", &["a", "é"])),
            None
        );
        // latin1 and utf8mb3 cannot hold such characters: a '?' there is a '?'.
        assert_eq!(unknowable_member(&col("enum", "latin1", &["?"])), None);
        assert_eq!(unknowable_member(&col("enum", "utf8mb3", &["?"])), None);
        assert_eq!(unknowable_member(&col("varchar", "utf8mb4", &[])), None);
    }
}
