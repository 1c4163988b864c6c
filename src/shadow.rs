//! The shadow table: helper-table names, creating the shadow with the new schema, and the
//! column mapping and shared key that copy and replay use.
//!
//! Invariants: helper names never collide with an existing table (we refuse instead); the
//! swap name sorts after the original name (the cut-over depends on it, see `cutover`);
//! generated columns are never written; a renamed column keeps its data only when the caller
//! allowed renames. Anything this module creates is dropped again if a later check in it fails.

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use crate::alter::AlterPlan;
use crate::error::{server_error, DbContext, Error, Result};
use crate::inspect::{self, Inspection};
use crate::schema::{self, TableSchema};
use crate::sql::{qualified, quote_ident};

/// MySQL and MariaDB limit table names to 64 characters.
pub const MAX_NAME_CHARS: usize = 64;

/// Names of every table a migration creates.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HelperNames {
    /// `<t>~new`: the table with the new schema. It is renamed to `<t>` in the swap, so it
    /// sorts after `<t>` too (see the cut-over module).
    pub shadow: String,
    /// `_<t>_chl`: heartbeats and cut-over markers, read back through the binlog.
    pub changelog: String,
    /// The old table's name during the swap. It sorts after `<t>` so that the swapping RENAME
    /// queues on `<t>` itself (see the cut-over module).
    pub swap: String,
    /// `_<t>_old_<stamp>`: where the old table is kept after the cut-over.
    pub archive: String,
}

/// FNV-1a: a stable short hash, so shortened names (and the sandbox's shared template
/// directory) are the same on every run.
pub(crate) fn short_hash(s: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

/// `prefix + table + suffix`, shortening the table part (with a hash of the full name) when the
/// result would pass the 64-character limit.
fn affixed(table: &str, prefix: &str, suffix: &str) -> String {
    let fixed = prefix.chars().count() + suffix.chars().count();
    if table.chars().count() + fixed <= MAX_NAME_CHARS {
        return format!("{prefix}{table}{suffix}");
    }
    let hash = short_hash(table);
    let keep = MAX_NAME_CHARS - fixed - hash.len() - 1;
    let head: String = table.chars().take(keep).collect();
    format!("{prefix}{head}_{hash}{suffix}")
}

/// `table + suffix` (`suffix` starts with '~'): a name that sorts after `table` byte-wise (also
/// when both are lower-cased) and fits 64 characters.
fn name_sorting_after(table: &str, suffix: &str) -> Result<String> {
    if table.chars().count() + suffix.chars().count() <= MAX_NAME_CHARS {
        // `table` is a strict prefix: it sorts first.
        return Ok(format!("{table}{suffix}"));
    }
    // Cut at a character below '~' and put the suffix's '~' there: that byte decides the
    // order. The hash of the full name keeps long names with the same head apart.
    let hash = short_hash(table);
    let chars: Vec<char> = table.chars().collect();
    let limit = MAX_NAME_CHARS - suffix.chars().count() - hash.len() - 1;
    for cut in (0..limit.min(chars.len())).rev() {
        if chars[cut].is_ascii() && chars[cut] < '~' {
            let head: String = chars[..cut].iter().collect();
            return Ok(format!("{head}{suffix}_{hash}"));
        }
    }
    Err(Error::refused(
        "table_name",
        format!("cannot build helper table names for table {table}"),
        "rename the table to a shorter name first",
    ))
}

impl HelperNames {
    pub fn for_table(table: &str, stamp: &str) -> Result<HelperNames> {
        Ok(HelperNames {
            shadow: name_sorting_after(table, "~new")?,
            changelog: affixed(table, "_", "_chl"),
            swap: name_sorting_after(table, "~sc")?,
            archive: affixed(table, "_", &format!("_old_{stamp}")),
        })
    }
}

/// One column the migration writes: source ordinal index and name, shadow name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedColumn {
    pub source_index: usize,
    pub source: String,
    pub target: String,
}

/// The key rows are chunked and identified by, present with the same columns before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedKey {
    /// The source index, for `FORCE INDEX`.
    pub index_name: String,
    pub source: Vec<String>,
    pub source_index: Vec<usize>,
    pub target: Vec<String>,
}

/// Everything later steps need to know about the shadow table.
#[derive(Debug, Clone)]
pub struct ShadowPlan {
    pub names: HelperNames,
    pub columns: Vec<MappedColumn>,
    pub key: SharedKey,
    pub shadow_schema: TableSchema,
}

/// Maps source columns to shadow columns: same name first, then allowed renames.
pub fn map_columns(
    source: &TableSchema,
    shadow: &TableSchema,
    renames: &[(String, String)],
    allow_renames: bool,
) -> Result<Vec<MappedColumn>> {
    let mut mapped = Vec::new();
    for (i, col) in source.columns.iter().enumerate() {
        if col.generated {
            continue;
        }
        let renamed_to = renames
            .iter()
            .find(|(old, new)| {
                old.eq_ignore_ascii_case(&col.name) && !new.eq_ignore_ascii_case(old)
            })
            .map(|(_, new)| new.as_str());
        let target = match renamed_to {
            Some(new) if !allow_renames => {
                return Err(Error::refused(
                    "renamed_column",
                    format!("the ALTER renames column {} to {new}", col.name),
                    "set allow_renamed_columns (--allow-renames) to carry its data over, or add the new column and drop the old one in separate steps",
                ))
            }
            Some(new) => shadow.column(new),
            None => shadow.column(&col.name),
        };
        if let Some(t) = target.filter(|t| !t.generated) {
            mapped.push(MappedColumn {
                source_index: i,
                source: col.name.clone(),
                target: t.name.clone(),
            });
        }
    }
    if mapped.is_empty() {
        return Err(Error::refused(
            "columns",
            "the new table shares no column with the old one",
            "keep at least the key columns",
        ));
    }
    Ok(mapped)
}

/// Picks the first usable source key (PRIMARY first) whose mapped columns form a usable unique
/// key of the shadow table too.
pub fn shared_key(
    source: &TableSchema,
    shadow: &TableSchema,
    columns: &[MappedColumn],
) -> Result<SharedKey> {
    for key in source.unique_keys.iter().filter(|k| k.usable) {
        let mut target = Vec::new();
        let mut source_index = Vec::new();
        for c in &key.columns {
            match columns.iter().find(|m| m.source.eq_ignore_ascii_case(c)) {
                Some(m) => {
                    target.push(m.target.clone());
                    source_index.push(m.source_index);
                }
                None => break,
            }
        }
        if target.len() != key.columns.len() {
            continue;
        }
        let same_set = |k: &&schema::Key| {
            k.usable
                && k.columns.len() == target.len()
                && k.columns
                    .iter()
                    .all(|c| target.iter().any(|t| t.eq_ignore_ascii_case(c)))
        };
        if shadow.unique_keys.iter().any(|k| same_set(&k)) {
            return Ok(SharedKey {
                index_name: key.name.clone(),
                source: key.columns.clone(),
                source_index,
                target,
            });
        }
    }
    Err(Error::refused(
        "shared_key",
        format!(
            "after the ALTER, {}.{} has no PRIMARY KEY or NOT NULL UNIQUE key with the same columns as before",
            source.database, source.name
        ),
        "keep the primary key (or a NOT NULL unique key) unchanged in this migration and change it in a separate one",
    ))
}

/// Refuses if any helper name is taken: it may be a user table or a previous migration's leftover.
pub async fn check_names_free(conn: &mut Conn, database: &str, names: &HelperNames) -> Result<()> {
    for name in [&names.shadow, &names.changelog, &names.swap, &names.archive] {
        if inspect::table_exists(conn, database, name).await? {
            return Err(Error::refused(
                "helper_table_exists",
                format!("table {database}.{name} already exists"),
                "it is a leftover of an earlier migration or a table of yours: drop or rename it, then start again",
            ));
        }
    }
    Ok(())
}

/// Picks up an existing shadow table after a restart: the same checks as at creation, on the
/// table that is there. Refuses if the shadow or changelog table is missing.
pub async fn reopen(
    conn: &mut Conn,
    insp: &Inspection,
    alter: &AlterPlan,
    allow_renames: bool,
    names: HelperNames,
) -> Result<ShadowPlan> {
    let db = &insp.schema.database;
    for name in [&names.shadow, &names.changelog] {
        if !inspect::table_exists(conn, db, name).await? {
            return Err(Error::refused(
                "resume",
                format!("cannot resume: helper table {db}.{name} is gone"),
                "start the migration again from scratch",
            ));
        }
    }
    let (columns, key, shadow_schema) =
        map_shadow(conn, insp, alter, allow_renames, &names).await?;
    Ok(ShadowPlan {
        names,
        columns,
        key,
        shadow_schema,
    })
}

/// Reads the shadow table as it is and maps the source onto it.
async fn map_shadow(
    conn: &mut Conn,
    insp: &Inspection,
    alter: &AlterPlan,
    allow_renames: bool,
    names: &HelperNames,
) -> Result<(Vec<MappedColumn>, SharedKey, TableSchema)> {
    let shadow_schema = schema::load(conn, &insp.schema.database, &names.shadow)
        .await?
        .ok_or_else(|| Error::Cutover(format!("shadow table {} vanished", names.shadow)))?;
    let columns = map_columns(&insp.schema, &shadow_schema, &alter.renames, allow_renames)?;
    let key = shared_key(&insp.schema, &shadow_schema, &columns)?;
    Ok((columns, key, shadow_schema))
}

/// Creates the shadow and changelog tables and works out the mapping.
pub async fn create(
    conn: &mut Conn,
    insp: &Inspection,
    alter: &AlterPlan,
    allow_renames: bool,
    names: HelperNames,
) -> Result<ShadowPlan> {
    let db = &insp.schema.database;
    check_names_free(conn, db, &names).await?;
    let source = qualified(db, &insp.schema.name);
    let shadow = qualified(db, &names.shadow);
    conn.query_drop(format!("CREATE TABLE {shadow} LIKE {source}"))
        .await
        .ctx(|| format!("creating the shadow table {}", names.shadow))?;
    let result = prepare_shadow(conn, insp, alter, allow_renames, &names).await;
    match result {
        Ok((columns, key, shadow_schema)) => Ok(ShadowPlan {
            names,
            columns,
            key,
            shadow_schema,
        }),
        Err(e) => {
            // Leave nothing behind: the refusal must not change the database.
            drop_helpers(conn, db, &names).await.ok();
            Err(e)
        }
    }
}

async fn prepare_shadow(
    conn: &mut Conn,
    insp: &Inspection,
    alter: &AlterPlan,
    allow_renames: bool,
    names: &HelperNames,
) -> Result<(Vec<MappedColumn>, SharedKey, TableSchema)> {
    let db = &insp.schema.database;
    let shadow = qualified(db, &names.shadow);
    if let Err(e) = conn
        .query_drop(format!("ALTER TABLE {shadow} {}", alter.clause))
        .await
    {
        return Err(match server_error(&e) {
            Some((code, msg)) => Error::AlterRejected(format!("ERROR {code}: {msg}")),
            None => Error::Db {
                context: "applying the ALTER to the shadow table".to_string(),
                source: e,
            },
        });
    }
    let mapped = map_shadow(conn, insp, alter, allow_renames, names).await?;
    conn.query_drop(format!(
        "CREATE TABLE {} (id TINYINT UNSIGNED NOT NULL PRIMARY KEY, value BIGINT NOT NULL) ENGINE=InnoDB",
        qualified(db, &names.changelog)
    ))
    .await
    .ctx(|| format!("creating the changelog table {}", names.changelog))?;
    Ok(mapped)
}

/// Drops one helper table if it exists.
pub async fn drop_helper(conn: &mut Conn, database: &str, name: &str) -> Result<()> {
    conn.query_drop(format!(
        "DROP TABLE IF EXISTS {}",
        qualified(database, name)
    ))
    .await
    .ctx(|| format!("dropping helper table {}", quote_ident(name)))
}

/// Drops the shadow, changelog and swap tables if they exist. Never touches the original.
pub async fn drop_helpers(conn: &mut Conn, database: &str, names: &HelperNames) -> Result<()> {
    for name in [&names.shadow, &names.changelog, &names.swap] {
        drop_helper(conn, database, name).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Column, Key};

    fn col(name: &str) -> Column {
        Column {
            name: name.into(),
            data_type: "int".into(),
            column_type: "int(11)".into(),
            unsigned: false,
            charset: None,
            collation: None,
            nullable: false,
            generated: false,
            members: vec![],
        }
    }

    fn table(cols: &[&str], keys: &[(&str, &[&str])]) -> TableSchema {
        TableSchema {
            database: "d".into(),
            name: "t".into(),
            columns: cols.iter().map(|c| col(c)).collect(),
            unique_keys: keys
                .iter()
                .map(|(n, cs)| Key {
                    name: n.to_string(),
                    columns: cs.iter().map(|c| c.to_string()).collect(),
                    usable: true,
                })
                .collect(),
        }
    }

    #[test]
    fn names_for_short_and_long_tables() {
        let n = HelperNames::for_table("users", "20261122000000").unwrap();
        assert_eq!(n.shadow, "users~new");
        assert_eq!(n.changelog, "_users_chl");
        assert_eq!(n.swap, "users~sc");
        assert_eq!(n.archive, "_users_old_20261122000000");
        assert!(n.swap.as_str() > "users");
        assert!(n.shadow.as_str() > "users");

        let long = "x".repeat(64);
        let n = HelperNames::for_table(&long, "20261122000000").unwrap();
        for name in [&n.shadow, &n.changelog, &n.swap, &n.archive] {
            assert!(name.chars().count() <= MAX_NAME_CHARS, "{name}");
        }
        assert!(n.swap.as_str() > long.as_str());
        assert!(n.shadow.as_str() > long.as_str());
        assert_ne!(n.shadow, n.changelog);
        assert_ne!(n.shadow, n.swap);
        // Deterministic.
        assert_eq!(n, HelperNames::for_table(&long, "20261122000000").unwrap());
        // Two long names differing only at the end stay distinct.
        let other = format!("{}y", "x".repeat(63));
        assert_ne!(
            HelperNames::for_table(&other, "1").unwrap().changelog,
            HelperNames::for_table(&long, "1").unwrap().changelog
        );
        assert_ne!(
            HelperNames::for_table(&other, "1").unwrap().shadow,
            HelperNames::for_table(&long, "1").unwrap().shadow
        );

        let tilde = format!("{}~~~~", "a".repeat(60));
        let n = HelperNames::for_table(&tilde, "1").unwrap();
        for name in [&n.swap, &n.shadow] {
            assert!(name.as_str() > tilde.as_str(), "{name}");
            assert!(name.to_lowercase() > tilde.to_lowercase(), "{name}");
        }
    }

    #[test]
    fn maps_by_name_and_refuses_unallowed_renames() {
        let src = table(&["id", "a", "b"], &[("PRIMARY", &["id"])]);
        let dst = table(&["id", "a2", "b", "c"], &[("PRIMARY", &["id"])]);
        let renames = vec![("a".to_string(), "a2".to_string())];
        let err = map_columns(&src, &dst, &renames, false).unwrap_err();
        assert!(err.to_string().contains("renames column a to a2"), "{err}");
        let m = map_columns(&src, &dst, &renames, true).unwrap();
        let pairs: Vec<_> = m
            .iter()
            .map(|c| (c.source.as_str(), c.target.as_str()))
            .collect();
        assert_eq!(pairs, vec![("id", "id"), ("a", "a2"), ("b", "b")]);
        // Dropped column: not mapped.
        let dst = table(&["id", "b"], &[("PRIMARY", &["id"])]);
        let m = map_columns(&src, &dst, &[], false).unwrap();
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn generated_columns_are_never_written() {
        let mut src = table(&["id", "g"], &[("PRIMARY", &["id"])]);
        src.columns[1].generated = true;
        let dst = src.clone();
        let m = map_columns(&src, &dst, &[], false).unwrap();
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn shared_key_must_survive_the_alter() {
        let src = table(&["id", "u"], &[("PRIMARY", &["id"]), ("uk", &["u"])]);
        let dst = table(&["id", "u"], &[("PRIMARY", &["id", "u"]), ("uk", &["u"])]);
        let m = map_columns(&src, &dst, &[], false).unwrap();
        let k = shared_key(&src, &dst, &m).unwrap();
        assert_eq!(k.index_name, "uk");
        assert_eq!(k.target, vec!["u".to_string()]);
        let dst = table(&["id", "u"], &[("PRIMARY", &["id", "u"])]);
        assert!(shared_key(&src, &dst, &m).is_err());
    }
}
