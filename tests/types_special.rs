//! Round trips of the types that need the decoder's fix-ups (ENUM/SET names, BIT, JSON),
//! generated columns, MariaDB's INET4/INET6/UUID, spatial types; and what the engine refuses
//! or stops on rather than write a wrong value. See `types.rs` for the method.

mod common;
mod roundtrip;

use common::Db;
use roundtrip::{migrate_with_writes, round_trip, rows_case, Case, DB};
use shadowcut::migration::MigrationOptions;
use shadowcut::state::State;
use shadowcut::Error;

#[tokio::test]
async fn enum_set_bit_and_json() {
    let db = Db::start();
    // Member names chosen to trip name handling: quotes, backslash, multi-byte characters, and
    // a member called '0' (the text of ENUM index 0). latin1_bin, because latin1_swedish_ci
    // holds 'é' and 'e' equal (a strict session refuses such an ENUM). No emoji: see
    // `enum_members_with_emoji_are_refused_up_front`.
    let ddl = "id INT PRIMARY KEY, \
               e ENUM('a','B','c d','it''s','日本€','x\\\\y','0') CHARACTER SET utf8mb4, \
               el ENUM('é','e','ÿ') CHARACTER SET latin1 COLLATE latin1_bin, \
               s SET('a','b','c','€') CHARACTER SET utf8mb4, \
               sl SET('é','x') CHARACTER SET latin1, \
               b1 BIT(1), b8 BIT(8), b13 BIT(13), b64 BIT(64), j JSON";
    let cols = ["e", "el", "s", "sl", "b1", "b8", "b13", "b64", "j"];
    #[rustfmt::skip]
    let rows: &[&[&str]] = &[
        &["'a'", "'é'", "''", "''", "b'0'", "0", "0", "0", "'{}'"],
        &["'B'", "'ÿ'", "'a,b,c,€'", "'é,x'", "b'1'", "255", "8191", "18446744073709551615",
          "'{\"k\": \"日本😀\", \"n\": [1, 2.5, null, true, false], \"e\": \"\\\\u00e9\"}'"],
        &["'c d'", "'e'", "'c,a'", "'x'", "b'1'", "b'10000000'", "b'1010101010101'",
          "0x8000000000000001", "'[]'"],
        &["'it''s'", "'e'", "'€'", "''", "0", "1", "1", "1", "'\"str\"'"],
        &["'日本€'", "'é'", "'b'", "'é'", "1", "128", "4096", "9223372036854775808", "'null'"],
        &["'x\\\\y'", "'ÿ'", "'a'", "'é,x'", "0", "127", "0", "1311768467463790320",
          "'[1, \"a\", {\"b\": []}]'"],
        &["'0'", "'é'", "'c'", "'x'", "1", "2", "3", "4", "'123'"],
        &["'B'", "'e'", "'b,a'", "''", "1", "2", "3", "4", "'{\"a\": \"\"}'"],
    ];
    let q = |expr: &str| format!("SELECT {expr} FROM {{t}} WHERE id = {{id}}");
    let case = rows_case("enums", ddl, &cols, rows)
        .expect_tuple(6, &q("e + 0"), Some("7"))
        .expect_tuple(7, &q("e + 0"), Some("2"))
        .expect_tuple(7, &q("el + 0"), Some("2"))
        .expect_tuple(5, &q("CAST(e AS CHAR)"), Some("x\\y"))
        .expect_tuple(3, &q("CAST(e AS CHAR)"), Some("it's"))
        .expect_tuple(4, &q("CAST(e AS CHAR)"), Some("日本€"))
        .expect_tuple(5, &q("HEX(el)"), Some("FF"))
        .expect_tuple(1, &q("CAST(s AS CHAR)"), Some("a,b,c,€"))
        .expect_tuple(2, &q("s + 0"), Some("5"))
        .expect_tuple(1, &q("HEX(sl)"), Some("E92C78"))
        .expect_tuple(0, &q("HEX(s)"), Some(""))
        .expect_tuple(1, &q("b1 + 0"), Some("1"))
        .expect_tuple(1, &q("b64 + 0"), Some("18446744073709551615"))
        .expect_tuple(2, &q("b64 + 0"), Some("9223372036854775809"))
        .expect_tuple(1, &q("b13 + 0"), Some("8191"))
        .expect_tuple(2, &q("b8 + 0"), Some("128"))
        .expect_tuple(1, &q("JSON_VALUE(j, '$.k')"), Some("日本😀"))
        .expect_tuple(1, &q("JSON_VALUE(j, '$.e')"), Some("é"));
    round_trip(&db, &case).await;
}

#[tokio::test]
async fn generated_columns_are_computed_not_written() {
    let db = Db::start();
    // Generated columns sit between written ones, so binlog ordinals must map by position.
    let ddl = "id INT PRIMARY KEY, a INT, v BIGINT AS (a * 2) VIRTUAL, \
               b VARCHAR(20) CHARACTER SET utf8mb4, \
               s VARCHAR(40) CHARACTER SET utf8mb4 AS (CONCAT(b, '!')) STORED, c TIME(3), \
               vj VARCHAR(60) CHARACTER SET utf8mb4 AS (JSON_OBJECT('a', a, 'b', b)) VIRTUAL, \
               d DATETIME(6), KEY (v)";
    let cols = ["a", "b", "c", "d"];
    #[rustfmt::skip]
    let rows: &[&[&str]] = &[
        &["1", "'x😀'", "'-00:00:00.5'", "'0000-00-00 00:00:00'"],
        &["-2147483648", "''", "'838:59:59.999'", "'2024-01-01 00:00:00.000001'"],
        &["7", "'é'", "'-01:02:03.004'", "'1999-12-31 23:59:59.999999'"],
    ];
    let q = |expr: &str| format!("SELECT {expr} FROM {{t}} WHERE id = {{id}}");
    let case = rows_case("gens", ddl, &cols, rows)
        .expect_tuple(2, &q("v"), Some("14"))
        .expect_tuple(1, &q("v"), Some("-4294967296"))
        .expect_tuple(2, &q("s"), Some("é!"))
        .expect_tuple(0, &q("vj"), Some("{\"a\": 1, \"b\": \"x😀\"}"))
        .expect_tuple(2, &q("CAST(c AS CHAR)"), Some("-01:02:03.004"))
        .expect_tuple(0, &q("CAST(c AS CHAR)"), Some("-00:00:00.500"));
    round_trip(&db, &case).await;
}

#[tokio::test]
async fn mariadb_inet4_inet6_uuid_and_time3() {
    let db = Db::start();
    let ddl = "id INT PRIMARY KEY, i4 INET4, i6 INET6, u UUID, tm3 TIME(3)";
    let cols = ["i4", "i6", "u", "tm3"];
    // All-zero and trailing-zero values (the binlog strips trailing zero bytes), and UUIDs of
    // several versions and variants (MariaDB may store time-based ones segment-swapped).
    #[rustfmt::skip]
    let rows: &[&[&str]] = &[
        &["'0.0.0.0'", "'::'", "'00000000-0000-0000-0000-000000000000'", "'-00:00:00.001'"],
        &["'255.255.255.255'", "'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'",
          "'ffffffff-ffff-ffff-ffff-ffffffffffff'", "'838:59:59.999'"],
        &["'10.1.2.0'", "'::ffff:1.2.3.4'", "'6ccd780c-baba-1026-9564-5b8c656024db'",
          "'12:34:56.789'"],
        &["'192.168.0.1'", "'2001:db8::1'", "'f47ac10b-58cc-4372-a567-0e02b2c3d479'",
          "'-838:59:59.000'"],
        &["'127.0.0.1'", "'::1'", "'01890a5d-ac96-774b-bcce-b302099a8057'", "'-00:00:01.999'"],
        &["'1.0.0.0'", "'fe80::'", "'11111111-2222-0333-8444-555555555500'", "'00:00:00.500'"],
        &["'8.8.4.4'", "'1::'", "'00112233-4455-6677-0899-aabbccddee00'", "'-100:00:00.010'"],
    ];
    let q = |col: &str| format!("SELECT CAST({col} AS CHAR) FROM {{t}} WHERE id = {{id}}");
    let case = rows_case("mariadb_types", ddl, &cols, rows)
        .expect_tuple(0, &q("u"), Some("00000000-0000-0000-0000-000000000000"))
        .expect_tuple(2, &q("u"), Some("6ccd780c-baba-1026-9564-5b8c656024db"))
        .expect_tuple(3, &q("u"), Some("f47ac10b-58cc-4372-a567-0e02b2c3d479"))
        .expect_tuple(4, &q("u"), Some("01890a5d-ac96-774b-bcce-b302099a8057"))
        .expect_tuple(5, &q("u"), Some("11111111-2222-0333-8444-555555555500"))
        .expect_tuple(6, &q("u"), Some("00112233-4455-6677-0899-aabbccddee00"))
        .expect_tuple(0, &q("i6"), Some("::"))
        .expect_tuple(1, &q("i6"), Some("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))
        .expect_tuple(2, &q("i6"), Some("::ffff:1.2.3.4"))
        .expect_tuple(3, &q("i6"), Some("2001:db8::1"))
        .expect_tuple(5, &q("i6"), Some("fe80::"))
        .expect_tuple(0, &q("i4"), Some("0.0.0.0"))
        .expect_tuple(1, &q("i4"), Some("255.255.255.255"))
        .expect_tuple(2, &q("i4"), Some("10.1.2.0"))
        .expect_tuple(5, &q("i4"), Some("1.0.0.0"))
        .expect_tuple(0, &q("tm3"), Some("-00:00:00.001"))
        .expect_tuple(1, &q("tm3"), Some("838:59:59.999"))
        .expect_tuple(2, &q("tm3"), Some("12:34:56.789"))
        .expect_tuple(4, &q("tm3"), Some("-00:00:01.999"))
        .expect_tuple(5, &q("tm3"), Some("00:00:00.500"))
        .expect_tuple(6, &q("tm3"), Some("-100:00:00.010"));
    round_trip(&db, &case).await;
}

#[tokio::test]
async fn spatial_types() {
    let db = Db::start();
    let ddl = "id INT PRIMARY KEY, g GEOMETRY, p POINT, ls LINESTRING, pg POLYGON, \
               gs GEOMETRY REF_SYSTEM_ID=4326";
    let cols = ["g", "p", "ls", "pg", "gs"];
    #[rustfmt::skip]
    let rows: &[&[&str]] = &[
        &["ST_GeomFromText('POINT(1 2)')", "ST_GeomFromText('POINT(-1.5 1e300)')",
          "ST_GeomFromText('LINESTRING(0 0, 1 1, 2 -2.5)')",
          "ST_GeomFromText('POLYGON((0 0, 4 0, 4 4, 0 4, 0 0))')",
          "ST_GeomFromText('POINT(10 20)', 4326)"],
        &["ST_GeomFromText('MULTIPOINT(1 1, 2 2)')", "ST_GeomFromText('POINT(0 0)')",
          "ST_GeomFromText('LINESTRING(5 5, 6 6)')",
          "ST_GeomFromText('POLYGON((0 0, 1 0, 1 1, 0 0))')",
          "ST_GeomFromText('LINESTRING(1 1, 2 2)', 4326)"],
        &["ST_GeomFromText('GEOMETRYCOLLECTION(POINT(1 1), LINESTRING(0 0, 1 1))')",
          "ST_GeomFromText('POINT(3 4)')", "ST_GeomFromText('LINESTRING(0 0, 0 1)')",
          "ST_GeomFromText('POLYGON((0 0, 2 0, 2 2, 0 0))')",
          "ST_GeomFromText('POINT(-180 -90)', 4326)"],
    ];
    let q = |expr: &str| format!("SELECT {expr} FROM {{t}} WHERE id = {{id}}");
    let case = rows_case("spatial", ddl, &cols, rows)
        .expect_tuple(2, &q("ST_AsText(p)"), Some("POINT(3 4)"))
        .expect_tuple(0, &q("ST_AsText(ls)"), Some("LINESTRING(0 0,1 1,2 -2.5)"))
        .expect_tuple(2, &q("ST_SRID(gs)"), Some("4326"));
    round_trip(&db, &case).await;
}

/// A non-strict session can store an ENUM's empty error value (index 0). The copy carries it
/// over column to column.
#[tokio::test]
async fn enum_error_value_is_copied() {
    let db = Db::start();
    let mut case = Case::new("enum0c", "id INT PRIMARY KEY, e ENUM('a','0','b')", &["id"]);
    case.before = vec!["INSERT INTO {t} VALUES (1, 'a'), (2, 'nope'), (3, '0')".to_string()];
    case.during = vec!["UPDATE {t} SET e = 'b' WHERE id = 1".to_string()];
    let case = case
        .expect("SELECT e + 0 FROM {t} WHERE id = 2", Some("0"))
        .expect("SELECT e + 0 FROM {t} WHERE id = 3", Some("2"))
        .expect("SELECT e + 0 FROM {t} WHERE id = 1", Some("3"));
    round_trip(&db, &case).await;
}

/// A strict session cannot write ENUM index 0 from a value, so when one is written during the
/// migration the replay must fail loudly rather than store a member; in particular not the
/// member named '0', which is what the index's text used to match.
#[tokio::test]
async fn enum_error_value_written_during_the_migration_fails_it_without_guessing() {
    let db = Db::start();
    let mut case = Case::new("enum0", "id INT PRIMARY KEY, e ENUM('a','0','b')", &["id"]);
    case.before = vec!["INSERT INTO {t} VALUES (1, 'a'), (2, 'nope'), (3, '0')".to_string()];
    case.during = vec!["INSERT INTO {t} VALUES (4, 'nope')".to_string()];
    let (r, progress) = migrate_with_writes(&db, &case).await;
    let err = r.expect_err("index 0 cannot be replayed in a strict session");
    assert!(err.to_string().contains("'e'"), "names the column: {err}");
    assert_eq!(progress.state(), State::Failed);
    // The original is untouched and the helper tables are gone.
    assert_eq!(
        db.tables(DB).await,
        vec!["enum0".to_string(), "enum0_ref".to_string()]
    );
    let rows: Vec<(i64, i64)> = db
        .rows("SELECT id, e + 0 FROM rt.enum0 ORDER BY id")
        .await
        .into_iter()
        .map(mysql_async::from_row)
        .collect();
    assert_eq!(rows, vec![(1, 1), (2, 0), (3, 2), (4, 0)]);
}

/// information_schema (utf8mb3) shows an emoji in an ENUM/SET member as '?': the engine cannot
/// know the member's name, and ENUM('?','😀') would replay 😀 as '?'. Refused before anything
/// is created.
#[tokio::test]
async fn enum_members_with_emoji_are_refused_up_front() {
    let db = Db::start();
    db.exec("CREATE DATABASE app").await;
    for (table, column) in [
        ("t1", "e ENUM('?','😀') CHARACTER SET utf8mb4"),
        ("t2", "e SET('a','x😀') CHARACTER SET utf8mb4"),
    ] {
        db.exec(&format!(
            "CREATE TABLE app.{table} (id INT PRIMARY KEY, {column})"
        ))
        .await;
        let (r, _) = db
            .migrate(
                "app",
                table,
                "ADD COLUMN z INT",
                MigrationOptions::default(),
            )
            .await;
        match r {
            Err(Error::Refused { check, problem, .. }) => {
                assert_eq!(check, "column_type");
                assert!(problem.contains("column e "), "names the column: {problem}");
                assert!(problem.contains("emoji"), "says why: {problem}");
            }
            other => panic!("{table}: expected a refusal, got {other:?}"),
        }
    }
    assert_eq!(
        db.tables("app").await,
        vec!["t1".to_string(), "t2".to_string()]
    );
}

/// MariaDB's compressed columns are logged in a compressed binlog format the decoder cannot
/// read: the migration must refuse the table before creating anything.
#[tokio::test]
async fn compressed_columns_are_refused_up_front() {
    let db = Db::start();
    db.exec("CREATE DATABASE app").await;
    db.exec(
        "CREATE TABLE app.t (id INT PRIMARY KEY, c VARCHAR(100) COMPRESSED, b BLOB COMPRESSED)",
    )
    .await;
    db.exec("INSERT INTO app.t VALUES (1, 'x', 'y')").await;
    let (r, _) = db
        .migrate("app", "t", "ADD COLUMN z INT", MigrationOptions::default())
        .await;
    match r {
        Err(Error::Refused { check, problem, .. }) => {
            assert_eq!(check, "column_type");
            assert!(problem.contains("COMPRESSED"), "{problem}");
            assert!(problem.contains("column c "), "names the column: {problem}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(db.tables("app").await, vec!["t".to_string()]);
}
