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

impl Column {
    /// A MariaDB `COMPRESSED` column (COLUMN_TYPE `varchar(100) /*M!100301 COMPRESSED*/`):
    /// its binlog values are compressed in a format the decoder does not read.
    pub fn is_compressed(&self) -> bool {
        !matches!(self.data_type.as_str(), "enum" | "set")
            && self
                .column_type
                .to_ascii_uppercase()
                .contains(" COMPRESSED")
    }
}

/// Whether COLUMN_TYPE says UNSIGNED. Only numeric types can be unsigned; an ENUM member may
/// be called 'unsigned'.
fn is_unsigned(data_type: &str, column_type: &str) -> bool {
    !matches!(data_type, "enum" | "set")
        && column_type
            .to_ascii_lowercase()
            .split_whitespace()
            .any(|w| w == "unsigned")
}

/// Whether EXTRA marks a generated column: MariaDB and MySQL say `VIRTUAL GENERATED` or
/// `STORED GENERATED` (older MariaDB `PERSISTENT GENERATED`). MySQL's `DEFAULT_GENERATED`
/// marks an expression DEFAULT on an ordinary column, whose values must be copied.
fn is_generated(extra: &str) -> bool {
    let extra = extra.to_ascii_uppercase();
    [
        "VIRTUAL GENERATED",
        "STORED GENERATED",
        "PERSISTENT GENERATED",
    ]
    .iter()
    .any(|g| extra.contains(g))
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
                    unsigned: is_unsigned(&data_type, &column_type),
                    generated: is_generated(&extra),
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
        // As MariaDB 10.11 prints them: quotes doubled, backslashes escaped.
        assert_eq!(
            parse_members(r#"enum('a','it''s','x\\y','0','q"','😀')"#),
            vec!["a", "it's", r"x\y", "0", "q\"", "😀"]
        );
    }

    #[test]
    fn unsigned_only_for_numbers() {
        assert!(is_unsigned("int", "int(10) unsigned"));
        assert!(is_unsigned("bigint", "bigint(20) unsigned zerofill"));
        assert!(is_unsigned("decimal", "decimal(10,2) unsigned"));
        assert!(!is_unsigned("int", "int(11)"));
        assert!(!is_unsigned("enum", "enum('signed','unsigned')"));
    }

    #[test]
    fn generated_columns_but_not_expression_defaults() {
        assert!(is_generated("VIRTUAL GENERATED"));
        assert!(is_generated("STORED GENERATED"));
        assert!(is_generated("PERSISTENT GENERATED"));
        assert!(!is_generated(""));
        assert!(!is_generated("DEFAULT_GENERATED"));
        assert!(!is_generated(
            "DEFAULT_GENERATED on update CURRENT_TIMESTAMP"
        ));
        assert!(!is_generated("on update current_timestamp()"));
        assert!(!is_generated("INVISIBLE"));
    }

    #[test]
    fn compressed_columns() {
        let col = |data_type: &str, column_type: &str| Column {
            name: "c".into(),
            data_type: data_type.into(),
            column_type: column_type.into(),
            unsigned: false,
            charset: None,
            collation: None,
            nullable: true,
            generated: false,
            members: Vec::new(),
        };
        assert!(col("varchar", "varchar(100) /*M!100301 COMPRESSED*/").is_compressed());
        assert!(col("blob", "blob /*M!100301 COMPRESSED*/").is_compressed());
        assert!(!col("varchar", "varchar(100)").is_compressed());
        assert!(!col("enum", "enum('a COMPRESSED')").is_compressed());
    }
}
