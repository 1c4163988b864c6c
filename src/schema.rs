//! The table model: columns and keys as information_schema describes them.
//!
//! The binlog carries no column names (MariaDB's default `binlog_row_metadata=NO_LOG`), so
//! binlog column i is the column with ORDINAL_POSITION i+1 here, virtual and invisible columns
//! included. This module is the single reader of that metadata; decoding and copying take their
//! types from it.

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use crate::error::{DbContext, Result};

/// One column, as the binlog decoder and the copier need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// `DATA_TYPE`, lower-case: `int`, `varchar`, `timestamp`, `inet6`, ...
    pub data_type: String,
    /// `COLUMN_TYPE` as the server prints it: `int(10) unsigned`, `enum('a','B')`, ...
    pub column_type: String,
    pub unsigned: bool,
    /// `None` for binary and non-string columns.
    pub charset: Option<String>,
    pub collation: Option<String>,
    pub nullable: bool,
    /// Virtual or stored generated: never written, the server computes it.
    pub generated: bool,
    /// Members of an ENUM or SET, in declaration order.
    pub members: Vec<String>,
}

/// A PRIMARY or UNIQUE key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub name: String,
    pub columns: Vec<String>,
    /// Every column is NOT NULL and no column is a prefix: usable to identify rows.
    pub usable: bool,
}

/// A table's columns in ordinal order and its unique keys (PRIMARY first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSchema {
    pub database: String,
    pub name: String,
    pub columns: Vec<Column>,
    pub unique_keys: Vec<Key>,
}

impl TableSchema {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
    }

    pub fn primary_key(&self) -> Option<&Key> {
        self.unique_keys.iter().find(|k| k.name == "PRIMARY")
    }
}

/// Reads a table's model; `None` if the table does not exist.
pub async fn load(conn: &mut Conn, database: &str, table: &str) -> Result<Option<TableSchema>> {
    type ColumnRow = (
        String,
        String,
        String,
        Option<String>,
        Option<String>,
        String,
        String,
    );
    let rows: Vec<ColumnRow> = conn
        .exec(
            "SELECT COLUMN_NAME AS name, LOWER(DATA_TYPE) AS data_type, \
                    COLUMN_TYPE AS column_type, CHARACTER_SET_NAME AS charset, \
                    COLLATION_NAME AS collation, \
                    IS_NULLABLE AS nullable, UPPER(EXTRA) AS extra \
             FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (database, table),
        )
        .await
        .ctx(|| format!("reading the columns of {database}.{table}"))?;
    if rows.is_empty() {
        return Ok(None);
    }
    let columns = rows
        .into_iter()
        .map(
            |(name, data_type, column_type, charset, collation, nullable, extra)| {
                let members = if data_type == "enum" || data_type == "set" {
                    parse_members(&column_type)
                } else {
                    Vec::new()
                };
                Column {
                    unsigned: column_type.to_ascii_lowercase().contains("unsigned"),
                    generated: extra.contains("GENERATED") || extra.contains("PERSISTENT"),
                    nullable: nullable == "YES",
                    name,
                    data_type,
                    column_type,
                    charset,
                    collation,
                    members,
                }
            },
        )
        .collect();

    let key_rows: Vec<(String, String, Option<u64>, String)> = conn
        .exec(
            "SELECT INDEX_NAME AS name, COLUMN_NAME AS col, SUB_PART AS sub_part, \
                    NULLABLE AS nullable \
             FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND NON_UNIQUE = 0 \
             ORDER BY INDEX_NAME = 'PRIMARY' DESC, INDEX_NAME, SEQ_IN_INDEX",
            (database, table),
        )
        .await
        .ctx(|| format!("reading the keys of {database}.{table}"))?;
    let mut unique_keys: Vec<Key> = Vec::new();
    for (name, col, sub_part, nullable) in key_rows {
        let usable = sub_part.is_none() && nullable != "YES";
        match unique_keys.last_mut() {
            Some(k) if k.name == name => {
                k.columns.push(col);
                k.usable &= usable;
            }
            _ => unique_keys.push(Key {
                name,
                columns: vec![col],
                usable,
            }),
        }
    }
    Ok(Some(TableSchema {
        database: database.to_string(),
        name: table.to_string(),
        columns,
        unique_keys,
    }))
}

/// Parses the members of `enum('a','b''c')` / `set(...)` as information_schema prints them.
pub fn parse_members(column_type: &str) -> Vec<String> {
    let Some(start) = column_type.find('(') else {
        return Vec::new();
    };
    let body = &column_type[start + 1..];
    let mut members = Vec::new();
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut member = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    member.push('\'');
                }
                '\'' => break,
                '\\' => {
                    if let Some(n) = chars.next() {
                        member.push(n);
                    }
                }
                _ => member.push(c),
            }
        }
        members.push(member);
    }
    members
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_enum_members_with_quotes_and_commas() {
        assert_eq!(parse_members("enum('a','b')"), vec!["a", "b"]);
        assert_eq!(
            parse_members("set('x,y','it''s','')"),
            vec!["x,y", "it's", ""]
        );
        assert!(parse_members("int(11)").is_empty());
    }
}
