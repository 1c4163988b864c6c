//! Key shapes: the replay finds rows by key (deletes, and the delete half of a key-changing
//! update), so every key type must match the row it came from, no more and no fewer. Each case
//! copies some rows, then while the cut-over is postponed changes keys, deletes by key,
//! inserts, and moves keys around inside a transaction; the migrated table must equal the
//! reference table byte for byte (see `types.rs` for the method).

mod common;
mod roundtrip;

use common::Db;
use roundtrip::{round_trip, Case};

fn stmts(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn integer_and_composite_keys_with_key_changes() {
    let db = Db::start();
    let mut int = Case::new("k_int", "id BIGINT PRIMARY KEY, v VARCHAR(10)", &["id"]);
    int.before = stmts(&[
        "INSERT INTO {t} VALUES (-9223372036854775808, 'min'), (0, 'zero'), (1, 'one'), \
         (2, 'two'), (3, 'three'), (9223372036854775807, 'max')",
    ]);
    int.during = stmts(&[
        "UPDATE {t} SET id = 10 WHERE id = 1",
        "UPDATE {t} SET id = -1, v = 'was 0' WHERE id = 0",
        "UPDATE {t} SET v = 'max!' WHERE id = 9223372036854775807",
        "DELETE FROM {t} WHERE id = -9223372036854775808",
        "INSERT INTO {t} VALUES (100, 'new'), (101, 'new2')",
        "UPDATE {t} SET id = id + 1000 WHERE id >= 100 AND id < 1000",
        // Rotate keys inside one transaction: 2 -> 50, 3 -> 2, 50 -> 3.
        "BEGIN",
        "UPDATE {t} SET id = 50 WHERE id = 2",
        "UPDATE {t} SET id = 2 WHERE id = 3",
        "UPDATE {t} SET id = 3 WHERE id = 50",
        "COMMIT",
    ]);
    let int = int
        .expect("SELECT v FROM {t} WHERE id = 3", Some("two"))
        .expect("SELECT v FROM {t} WHERE id = 2", Some("three"))
        .expect("SELECT v FROM {t} WHERE id = -1", Some("was 0"))
        .expect("SELECT COUNT(*) FROM {t}", Some("7"));
    round_trip(&db, &int).await;

    let mut comp = Case::new(
        "k_comp",
        "a INT NOT NULL, b VARCHAR(20) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL, \
         v INT, PRIMARY KEY (a, b)",
        &["a", "b"],
    );
    comp.before = stmts(&[
        "INSERT INTO {t} VALUES (1, 'a', 1), (1, 'B', 2), (1, 'c', 3), (2, 'a', 4), \
         (2, 'é', 5), (3, '😀', 6), (3, '', 7)",
    ]);
    comp.during = stmts(&[
        "UPDATE {t} SET a = 9 WHERE a = 1 AND b = 'a'",
        "UPDATE {t} SET b = 'b ' WHERE a = 1 AND b = 'B'",
        "UPDATE {t} SET a = 4, b = 'E' WHERE a = 2 AND b = 'é'",
        "UPDATE {t} SET v = 70 WHERE a = 3 AND b = ''",
        "DELETE FROM {t} WHERE a = 3 AND b = '😀'",
        "DELETE FROM {t} WHERE a = 1 AND b = 'C'",
        "INSERT INTO {t} VALUES (5, 'x', 8), (5, 'y', 9)",
    ]);
    let comp = comp
        .expect("SELECT HEX(b) FROM {t} WHERE a = 1", Some("6220"))
        .expect("SELECT b FROM {t} WHERE a = 4", Some("E"))
        .expect("SELECT COUNT(*) FROM {t}", Some("7"));
    round_trip(&db, &comp).await;
}

/// Numeric keys compared exactly: DECIMAL keys that differ only past a DOUBLE's precision,
/// unsigned BIGINT keys above 2^63, DOUBLE keys.
#[tokio::test]
async fn decimal_unsigned_and_double_keys() {
    let db = Db::start();
    let mut dec = Case::new("k_dec", "k DECIMAL(65,30) PRIMARY KEY, v INT", &["k"]);
    dec.before = stmts(&[
        "INSERT INTO {t} VALUES (0.100000000000000000000000000001, 1), \
         (0.100000000000000000000000000002, 2), (0.1, 3), (-0.1, 4), \
         (99999999999999999999999999999999999.999999999999999999999999999999, 5)",
    ]);
    dec.during = stmts(&[
        "DELETE FROM {t} WHERE k = 0.100000000000000000000000000001",
        "UPDATE {t} SET k = 7 WHERE k = 0.100000000000000000000000000002",
        "UPDATE {t} SET v = 30 WHERE k = 0.1",
        "UPDATE {t} SET k = -k \
         WHERE k = 99999999999999999999999999999999999.999999999999999999999999999999",
    ]);
    let dec = dec
        .expect("SELECT v FROM {t} WHERE k = 0.1", Some("30"))
        .expect("SELECT v FROM {t} WHERE k = 7", Some("2"))
        .expect("SELECT COUNT(*) FROM {t}", Some("4"));
    round_trip(&db, &dec).await;

    let mut num = Case::new(
        "k_num",
        "u BIGINT UNSIGNED NOT NULL, d DOUBLE NOT NULL, v INT, PRIMARY KEY (u, d)",
        &["u", "d"],
    );
    num.before = stmts(&[
        "INSERT INTO {t} VALUES (18446744073709551615, 0.1, 1), (9223372036854775808, 1e300, 2), \
         (0, -2.2250738585072014e-308, 3), (1, 0.30000000000000004, 4), (1, 0.3, 5)",
    ]);
    num.during = stmts(&[
        "DELETE FROM {t} WHERE u = 18446744073709551615",
        "UPDATE {t} SET u = 18446744073709551614 WHERE u = 9223372036854775808",
        "UPDATE {t} SET d = 5e-324 WHERE u = 0",
        "DELETE FROM {t} WHERE u = 1 AND d = 0.30000000000000004",
        "UPDATE {t} SET v = 50 WHERE u = 1 AND d = 0.3",
    ]);
    let num = num
        .expect(
            "SELECT v FROM {t} WHERE u = 18446744073709551614",
            Some("2"),
        )
        .expect("SELECT v FROM {t} WHERE u = 1", Some("50"))
        .expect("SELECT COUNT(*) FROM {t}", Some("3"));
    round_trip(&db, &num).await;
}

/// Case- and accent-insensitive, PAD SPACE collations: 'B', 'b' and 'b ' are the same key. A
/// key change between such spellings must still delete the old row and keep the new bytes.
#[tokio::test]
async fn varchar_keys_in_case_insensitive_and_latin1_collations() {
    let db = Db::start();
    let mut ci = Case::new(
        "k_ci",
        "k VARCHAR(20) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci PRIMARY KEY, v INT",
        &["k"],
    );
    ci.before = stmts(&[
        "INSERT INTO {t} VALUES ('B', 1), ('a', 2), ('c', 3), ('é', 4), ('x😀', 5), ('zz', 6), \
         ('', 7), ('tail ', 8)",
    ]);
    ci.during = stmts(&[
        "UPDATE {t} SET k = 'b ' WHERE k = 'B'",
        "UPDATE {t} SET k = 'A' WHERE k = 'a'",
        "UPDATE {t} SET v = 30 WHERE k = 'C'",
        "DELETE FROM {t} WHERE k = 'É'",
        "UPDATE {t} SET k = 'TAIL' WHERE k = 'tail'",
        "INSERT INTO {t} VALUES ('new', 9), ('Ñ', 10)",
        "UPDATE {t} SET k = 'NEW2' WHERE k = 'new'",
        "BEGIN",
        "UPDATE {t} SET k = 'tmp' WHERE k = 'x😀'",
        "UPDATE {t} SET k = 'x😀' WHERE k = 'zz'",
        "UPDATE {t} SET k = 'zz' WHERE k = 'tmp'",
        "COMMIT",
    ]);
    let ci = ci
        .expect("SELECT HEX(k) FROM {t} WHERE v = 1", Some("6220"))
        .expect("SELECT k FROM {t} WHERE v = 2", Some("A"))
        .expect("SELECT k FROM {t} WHERE v = 8", Some("TAIL"))
        .expect("SELECT v FROM {t} WHERE k = 'zz'", Some("5"))
        .expect("SELECT COUNT(*) FROM {t} WHERE v = 4", Some("0"))
        .expect("SELECT COUNT(*) FROM {t}", Some("9"));
    round_trip(&db, &ci).await;

    let mut latin = Case::new(
        "k_latin1",
        "k VARCHAR(10) CHARACTER SET latin1 PRIMARY KEY, v INT",
        &["k"],
    );
    latin.before = stmts(&[
        "INSERT INTO {t} VALUES (CONVERT(X'E9' USING latin1), 1), (CONVERT(X'C4FF' USING latin1), 2), \
         (CONVERT(X'80' USING latin1), 3), ('plain', 4), (CONVERT(X'8D8F' USING latin1), 5)",
    ]);
    latin.during = stmts(&[
        "UPDATE {t} SET k = CONVERT(X'E0' USING latin1) WHERE k = CONVERT(X'E9' USING latin1)",
        "DELETE FROM {t} WHERE k = CONVERT(X'C4FF' USING latin1)",
        "UPDATE {t} SET v = 33 WHERE k = CONVERT(X'80' USING latin1)",
        "UPDATE {t} SET k = CONVERT(X'FE' USING latin1) WHERE k = CONVERT(X'8D8F' USING latin1)",
        "INSERT INTO {t} VALUES (CONVERT(X'DF' USING latin1), 6)",
    ]);
    let latin = latin
        .expect("SELECT HEX(k) FROM {t} WHERE v = 1", Some("E0"))
        .expect("SELECT HEX(k) FROM {t} WHERE v = 5", Some("FE"))
        .expect("SELECT v FROM {t} WHERE HEX(k) = '80'", Some("33"))
        .expect("SELECT COUNT(*) FROM {t}", Some("5"));
    round_trip(&db, &latin).await;

    // A NO PAD collation on CHAR, as the only (UNIQUE, NOT NULL) key: no PRIMARY KEY.
    let mut nopad = Case::new(
        "k_nopad",
        "k CHAR(5) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL, v INT, UNIQUE KEY (k)",
        &["k"],
    );
    nopad.before = stmts(&["INSERT INTO {t} VALUES ('a', 1), ('a b', 2), ('b', 3), (' c', 4)"]);
    nopad.during = stmts(&[
        "UPDATE {t} SET k = 'A' WHERE k = 'a'",
        "DELETE FROM {t} WHERE k = 'b'",
        "UPDATE {t} SET k = 'c' WHERE k = ' c'",
        "UPDATE {t} SET v = 20 WHERE k = 'a b'",
        "INSERT INTO {t} VALUES ('b ', 5)",
    ]);
    let nopad = nopad
        .expect("SELECT v FROM {t} WHERE k = 'A'", Some("1"))
        .expect("SELECT v FROM {t} WHERE k = 'c'", Some("4"))
        .expect("SELECT COUNT(*) FROM {t}", Some("4"));
    round_trip(&db, &nopad).await;
}

/// BINARY keys with zero bytes: a delete by key must match X'00...' and trailing zeros exactly.
/// INET6 and UUID keys are what a peer tool failed on.
#[tokio::test]
async fn binary_inet6_and_uuid_keys() {
    let db = Db::start();
    let mut bin = Case::new("k_bin", "k BINARY(16) PRIMARY KEY, v INT", &["k"]);
    bin.before = stmts(&[
        "INSERT INTO {t} VALUES (X'00', 1), (REPEAT(X'FF', 16), 2), (X'61', 3), \
         (X'00000000000000000000000000000001', 4), (UNHEX('6CCD780CBABA102695645B8C656024DB'), 5), \
         (X'0061', 6), (X'C3', 7)",
    ]);
    // BINARY compares without padding: name full 16-byte keys in the WHERE clauses.
    bin.during = stmts(&[
        "DELETE FROM {t} WHERE k = CAST(X'00' AS BINARY(16))",
        "UPDATE {t} SET k = X'62' WHERE k = CAST(X'61' AS BINARY(16))",
        "UPDATE {t} SET v = 40 WHERE k = X'00000000000000000000000000000001'",
        "UPDATE {t} SET k = X'00' WHERE k = CAST(X'0061' AS BINARY(16))",
        "UPDATE {t} SET k = X'FF' WHERE k = REPEAT(X'FF', 16)",
        "DELETE FROM {t} WHERE k = CAST(X'C3' AS BINARY(16))",
        "INSERT INTO {t} VALUES (X'80', 9), (X'7F', 8)",
    ]);
    let bin = bin
        .expect(
            "SELECT v FROM {t} WHERE k = CAST(X'00' AS BINARY(16))",
            Some("6"),
        )
        .expect(
            "SELECT v FROM {t} WHERE k = CAST(X'62' AS BINARY(16))",
            Some("3"),
        )
        .expect(
            "SELECT v FROM {t} WHERE k = CAST(X'FF' AS BINARY(16))",
            Some("2"),
        )
        .expect("SELECT COUNT(*) FROM {t} WHERE v IN (1, 7)", Some("0"))
        .expect("SELECT COUNT(*) FROM {t}", Some("7"));
    round_trip(&db, &bin).await;

    let mut inet = Case::new("k_inet6", "k INET6 PRIMARY KEY, v INT", &["k"]);
    inet.before = stmts(&[
        "INSERT INTO {t} VALUES ('::', 1), ('::1', 2), ('fe80::', 3), ('2001:db8::1', 4), \
         ('::ffff:1.2.3.4', 5)",
    ]);
    inet.during = stmts(&[
        "DELETE FROM {t} WHERE k = '::'",
        "UPDATE {t} SET k = '::2' WHERE k = '::1'",
        "UPDATE {t} SET v = 30 WHERE k = 'fe80::'",
        "UPDATE {t} SET k = '::' WHERE k = '2001:db8::1'",
        "INSERT INTO {t} VALUES ('1::', 6)",
    ]);
    let inet = inet
        .expect("SELECT v FROM {t} WHERE k = '::'", Some("4"))
        .expect("SELECT v FROM {t} WHERE k = 'fe80::'", Some("30"))
        .expect("SELECT COUNT(*) FROM {t}", Some("5"));
    round_trip(&db, &inet).await;

    let mut uuid = Case::new("k_uuid", "k UUID PRIMARY KEY, v INT", &["k"]);
    uuid.before = stmts(&[
        "INSERT INTO {t} VALUES ('00000000-0000-0000-0000-000000000000', 1), \
         ('6ccd780c-baba-1026-9564-5b8c656024db', 2), ('f47ac10b-58cc-4372-a567-0e02b2c3d479', 3), \
         ('01890a5d-ac96-774b-bcce-b302099a8000', 4)",
    ]);
    uuid.during = stmts(&[
        "DELETE FROM {t} WHERE k = '00000000-0000-0000-0000-000000000000'",
        "UPDATE {t} SET k = '6ccd780c-baba-1026-9564-5b8c65602400' \
         WHERE k = '6ccd780c-baba-1026-9564-5b8c656024db'",
        "UPDATE {t} SET v = 30 WHERE k = 'f47ac10b-58cc-4372-a567-0e02b2c3d479'",
        "DELETE FROM {t} WHERE k = '01890a5d-ac96-774b-bcce-b302099a8000'",
        "INSERT INTO {t} VALUES ('11111111-2222-1333-8444-555555555555', 5)",
    ]);
    let uuid = uuid
        .expect(
            "SELECT v FROM {t} WHERE k = '6ccd780c-baba-1026-9564-5b8c65602400'",
            Some("2"),
        )
        .expect("SELECT COUNT(*) FROM {t}", Some("3"));
    round_trip(&db, &uuid).await;
}

/// Temporal keys: DATETIME(6) including the zero date, negative TIME(2) with fractions, a
/// TIMESTAMP(3) written from a session in another time zone.
#[tokio::test]
async fn temporal_keys() {
    let db = Db::start();
    let mut dt = Case::new("k_dt", "k DATETIME(6) PRIMARY KEY, v INT", &["k"]);
    dt.before = stmts(&[
        "INSERT INTO {t} VALUES ('0000-00-00 00:00:00', 1), ('2024-01-01 00:00:00', 2), \
         ('2024-01-01 00:00:00.000001', 3), ('9999-12-31 23:59:59.999999', 4), \
         ('2024-02-00 12:00:00.5', 5)",
    ]);
    dt.during = stmts(&[
        "UPDATE {t} SET k = '2024-01-01 00:00:00.000002' WHERE k = '2024-01-01 00:00:00.000001'",
        "DELETE FROM {t} WHERE k = '0000-00-00 00:00:00'",
        "UPDATE {t} SET v = 40 WHERE k = '9999-12-31 23:59:59.999999'",
        "UPDATE {t} SET k = '0000-00-00 00:00:00' WHERE k = '2024-02-00 12:00:00.5'",
        "INSERT INTO {t} VALUES ('1000-01-01 00:00:00.999999', 6)",
    ]);
    let dt = dt
        .expect(
            "SELECT v FROM {t} WHERE k = '0000-00-00 00:00:00'",
            Some("5"),
        )
        .expect(
            "SELECT v FROM {t} WHERE k = '2024-01-01 00:00:00.000002'",
            Some("3"),
        )
        .expect("SELECT COUNT(*) FROM {t}", Some("5"));
    round_trip(&db, &dt).await;

    let mut tm = Case::new(
        "k_time",
        "k TIME(2) NOT NULL, ts TIMESTAMP(3) NOT NULL DEFAULT '2000-01-01 00:00:00', v INT, \
         PRIMARY KEY (k, ts)",
        &["k", "ts"],
    );
    tm.before = stmts(&[
        "INSERT INTO {t} VALUES ('-00:00:00.01', FROM_UNIXTIME(1), 1), \
         ('-838:59:59', FROM_UNIXTIME(1000000000.123), 2), ('00:00:00', FROM_UNIXTIME(2), 3), \
         ('-01:00:00.5', FROM_UNIXTIME(3), 4)",
    ]);
    tm.during = stmts(&[
        "SET time_zone = '-07:00'",
        "DELETE FROM {t} WHERE k = '-00:00:00.01'",
        "UPDATE {t} SET k = '-00:00:00.99' WHERE k = '00:00:00'",
        "UPDATE {t} SET ts = FROM_UNIXTIME(1000000000.456) WHERE k = '-838:59:59'",
        "UPDATE {t} SET v = 40 WHERE k = '-01:00:00.5'",
        "INSERT INTO {t} VALUES ('838:59:59.99', FROM_UNIXTIME(2147483647.999), 5)",
    ]);
    let tm = tm
        .expect("SELECT v FROM {t} WHERE k = '-00:00:00.99'", Some("3"))
        .expect(
            "SELECT UNIX_TIMESTAMP(ts) FROM {t} WHERE v = 2",
            Some("1000000000.456"),
        )
        .expect("SELECT COUNT(*) FROM {t}", Some("4"));
    round_trip(&db, &tm).await;
}

#[tokio::test]
async fn empty_and_one_row_tables() {
    let db = Db::start();
    // Nothing to copy: every row comes from the replay.
    let mut empty = Case::new("k_empty", "id INT PRIMARY KEY, v VARCHAR(10)", &["id"]);
    empty.during = stmts(&[
        "INSERT INTO {t} VALUES (1, 'a'), (2, 'b'), (3, 'c')",
        "UPDATE {t} SET id = 4, v = 'd' WHERE id = 1",
        "DELETE FROM {t} WHERE id = 2",
    ]);
    let empty = empty
        .expect("SELECT GROUP_CONCAT(id ORDER BY id) FROM {t}", Some("3,4"))
        .expect("SELECT v FROM {t} WHERE id = 4", Some("d"));
    let report = round_trip(&db, &empty).await;
    assert_eq!(report.rows, 2);

    // Stays empty: the copy and the replay have nothing to do and the swap still happens.
    let none = Case::new("k_none", "id INT PRIMARY KEY", &["id"])
        .expect("SELECT COUNT(*) FROM {t}", Some("0"));
    assert_eq!(round_trip(&db, &none).await.rows, 0);

    let mut one = Case::new("k_one", "id INT PRIMARY KEY, v VARCHAR(10)", &["id"]);
    one.before = stmts(&["INSERT INTO {t} VALUES (7, 'seven')"]);
    one.during = stmts(&[
        "UPDATE {t} SET v = 'SEVEN' WHERE id = 7",
        "UPDATE {t} SET id = 8 WHERE id = 7",
    ]);
    let one = one.expect("SELECT GROUP_CONCAT(id, v) FROM {t}", Some("8SEVEN"));
    assert_eq!(round_trip(&db, &one).await.rows, 1);

    // A one-row table whose only row is deleted during the migration.
    let mut gone = Case::new("k_gone", "id INT PRIMARY KEY", &["id"]);
    gone.before = stmts(&["INSERT INTO {t} VALUES (1)"]);
    gone.during = stmts(&["DELETE FROM {t} WHERE id = 1"]);
    assert_eq!(round_trip(&db, &gone).await.rows, 0);
}
