//! Every column type round-trips exactly through the copy and through the replay: numbers,
//! text, binary strings and temporal types here; ENUM/SET/BIT/JSON, generated columns,
//! MariaDB's own types, spatial types and refusals in `types_special.rs`; key shapes in
//! `keys.rs`.
//!
//! Each test builds one type group with extreme and ordinary values and runs it through
//! [`roundtrip::round_trip`]: rows that exist before the migration take the copy path; rows
//! inserted, updated and deleted while the cut-over is postponed take the replay path. The
//! migrated table must then equal a never-migrated reference table byte by byte, and absolute
//! values are checked on every path so that a typo in a literal cannot make both sides agree
//! on the wrong thing.

mod common;
mod roundtrip;

use common::Db;
use roundtrip::{round_trip, rows_case, rows_case_count};

#[tokio::test]
async fn integers_of_every_width_signed_and_unsigned() {
    let db = Db::start();
    let ddl = "id INT PRIMARY KEY, ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, \
               su SMALLINT UNSIGNED, mi MEDIUMINT, mu MEDIUMINT UNSIGNED, i INT, \
               iu INT UNSIGNED, bi BIGINT, bu BIGINT UNSIGNED, bo BOOL, z INT(5) ZEROFILL";
    let cols = [
        "ti", "tu", "si", "su", "mi", "mu", "i", "iu", "bi", "bu", "bo", "z",
    ];
    #[rustfmt::skip]
    let rows: &[&[&str]] = &[
        &["-128", "0", "-32768", "0", "-8388608", "0", "-2147483648", "0",
          "-9223372036854775808", "0", "0", "0"],
        &["127", "255", "32767", "65535", "8388607", "16777215", "2147483647", "4294967295",
          "9223372036854775807", "18446744073709551615", "1", "99999"],
        &["-1", "1", "-1", "1", "-1", "1", "-1", "1", "-1", "1", "-128", "1"],
        &["0", "128", "-129", "32768", "-65536", "8388608", "-65537", "2147483648",
          "-4294967297", "9223372036854775808", "127", "4294967295"],
        &["42", "200", "300", "40000", "-70000", "9000000", "123456789", "3000000000",
          "-1234567890123", "10000000000000000000", "2", "42"],
    ];
    let q = |col: &str| format!("SELECT {col} FROM {{t}} WHERE id = {{id}}");
    let case = rows_case("ints", ddl, &cols, rows)
        .expect_tuple(3, &q("bu"), Some("9223372036854775808"))
        .expect_tuple(3, &q("mi"), Some("-65536"))
        .expect_tuple(4, &q("mi"), Some("-70000"))
        .expect_tuple(0, &q("mi"), Some("-8388608"))
        .expect_tuple(1, &q("mu"), Some("16777215"))
        .expect_tuple(0, &q("bi"), Some("-9223372036854775808"))
        .expect_tuple(1, &q("bu"), Some("18446744073709551615"))
        .expect_tuple(2, &q("mi"), Some("-1"))
        .expect_tuple(0, &q("ti"), Some("-128"))
        .expect_tuple(1, &q("iu"), Some("4294967295"))
        .expect_tuple(4, &q("z"), Some("00042"))
        .expect("SELECT bu FROM {t} WHERE id = 99", None);
    let report = round_trip(&db, &case).await;
    assert_eq!(report.rows, rows_case_count(rows.len()));
    // 5 + 5 + 1 + 1 inserts and 5 + 5 + 2 + 1 updates at least, all through the replay.
    assert!(report.replayed >= 25, "replayed {}", report.replayed);
}

#[tokio::test]
async fn decimals_floats_and_doubles() {
    let db = Db::start();
    let ddl = "id INT PRIMARY KEY, d1 DECIMAL(10,2), d2 DECIMAL(65,30), d3 DECIMAL(5,5), \
               d4 DECIMAL(20,0) UNSIGNED, f FLOAT, f73 FLOAT(7,3), d DOUBLE, d102 DOUBLE(10,2)";
    let cols = ["d1", "d2", "d3", "d4", "f", "f73", "d", "d102"];
    #[rustfmt::skip]
    let rows: &[&[&str]] = &[
        &["0", "0", "0", "0", "0", "0", "0", "0"],
        &["-0.01", "-99999999999999999999999999999999999.999999999999999999999999999999",
          "-0.99999", "99999999999999999999", "3.4028234e38", "9999.999",
          "1.7976931348623157e308", "-99999999.99"],
        &["99999999.99", "0.000000000000000000000000000001", "0.00001", "1", "-3.4028234e38",
          "-9999.999", "-2.2250738585072014e-308", "0.01"],
        &["-99999999.99", "12345678901234567890123456789012345.123456789012345678901234567890",
          "-0.00001", "18446744073709551615", "1.17549435e-38", "0.001", "4.9e-324",
          "12345678.9"],
        &["1.5", "-0.000000000000000000000000000001", "0.5", "10", "0.1", "-0.5",
          "0.30000000000000004", "-0.5"],
        &["-0.5", "1", "-0.5", "0", "1.4e-45", "1.5", "-1e-300", "1"],
        // Negative zeros.
        &["-0.00", "-0.0", "-0.0", "0", "-0e0", "-0.0", "-0e0", "-0.0"],
        &["12.34", "3.141592653589793238462643383279", "0.12345", "123", "16777217",
          "-1234.567", "0.1", "3.14"],
    ];
    let q = |expr: &str| format!("SELECT {expr} FROM {{t}} WHERE id = {{id}}");
    let case = rows_case("nums", ddl, &cols, rows)
        .expect_tuple(
            3,
            &q("CAST(d2 AS CHAR)"),
            Some("12345678901234567890123456789012345.123456789012345678901234567890"),
        )
        .expect_tuple(1, &q("CAST(d4 AS CHAR)"), Some("99999999999999999999"))
        .expect_tuple(5, &q("CAST(d3 AS CHAR)"), Some("-0.50000"))
        .expect_tuple(6, &q("CAST(d3 AS CHAR)"), Some("0.00000"))
        // 16777217 is not a float: it is stored as 16777216.
        .expect_tuple(7, &q("f = 16777216"), Some("1"))
        .expect_tuple(4, &q("f = CAST(0.1 AS FLOAT)"), Some("1"))
        .expect_tuple(5, &q("f > 0 AND f < 2e-45"), Some("1"))
        .expect_tuple(3, &q("d = 4.9e-324"), Some("1"))
        .expect_tuple(1, &q("d = 1.7976931348623157e308"), Some("1"))
        .expect_tuple(4, &q("d = 0.30000000000000004"), Some("1"))
        .expect_tuple(7, &q("d = 0.1"), Some("1"));
    round_trip(&db, &case).await;
}

#[tokio::test]
async fn text_in_utf8mb4_and_latin1() {
    let db = Db::start();
    let ddl = "id INT PRIMARY KEY, \
               c4 CHAR(4) CHARACTER SET utf8mb4, v VARCHAR(50) CHARACTER SET utf8mb4, \
               tx TEXT CHARACTER SET utf8mb4, cl CHAR(4) CHARACTER SET latin1, \
               vl VARCHAR(50) CHARACTER SET latin1, tl TEXT CHARACTER SET latin1, \
               vlong VARCHAR(300) CHARACTER SET utf8mb4, c255 CHAR(255) CHARACTER SET utf8mb4, \
               mt MEDIUMTEXT CHARACTER SET utf8mb4, tt TINYTEXT CHARACTER SET latin1, \
               lt LONGTEXT CHARACTER SET utf8mb4, vbin VARCHAR(10) COLLATE utf8mb4_bin, \
               v8 VARCHAR(20) CHARACTER SET utf8mb3";
    let cols = [
        "c4", "v", "tx", "cl", "vl", "tl", "vlong", "c255", "mt", "tt", "lt", "vbin", "v8",
    ];
    #[rustfmt::skip]
    let rows: &[&[&str]] = &[
        // Emoji, and Latin-1 bytes above 0x7F including ones cp1252 leaves undefined.
        &["'😀'", "'emoji 😀🎉 and ñ'", "'日本語テキスト🚀'", "CONVERT(X'E9FF80A0' USING latin1)",
          "CONVERT(X'C0FFEE81908D8F9D' USING latin1)", "CONVERT(X'A3E9E8E0' USING latin1)",
          "REPEAT('é😀', 150)", "REPEAT('😀', 255)", "REPEAT('ab😀', 30000)",
          "CONVERT(X'FF' USING latin1)", "'{}'", "'Ab😀'", "'€ñ中'"],
        &["''", "''", "''", "''", "''", "''", "''", "''", "''", "''", "''", "''", "''"],
        // Trailing and leading spaces (CHAR strips trailing ones, VARCHAR/TEXT keep them).
        &["'a  '", "'a  '", "' x '", "'é '", "'é  '", "' \t'", "'sp  '", "'  lead'", "'t '",
          "'x '", "'y  '", "'B '", "'z '"],
        // NUL bytes, quotes, backslashes, control characters, long values.
        &["CONCAT('a', CHAR(0), 'b')", "'it''s \\\\ \"q\"'", "'line1\\nline2\\r\\t'",
          "CONVERT(X'00E900' USING latin1)", "'quote''s'", "CONCAT(CHAR(0), 'z')",
          "CONCAT('x', CHAR(0))", "'%_'", "REPEAT('x', 70000)", "CONVERT(X'5C00' USING latin1)",
          "REPEAT('😀', 100000)", "'a'", "'b'"],
        &["'abc'", "'hello'", "'world'", "'héé'", "'naïve café'", "'Größe'", "'x'", "'y'", "'m'",
          "'t'", "'l'", "'A'", "'ü'"],
    ];
    let q = |expr: &str| format!("SELECT {expr} FROM {{t}} WHERE id = {{id}}");
    let case = rows_case("texts", ddl, &cols, rows)
        .expect_tuple(0, &q("HEX(c4)"), Some("F09F9880"))
        .expect_tuple(0, &q("HEX(vl)"), Some("C0FFEE81908D8F9D"))
        .expect_tuple(0, &q("HEX(cl)"), Some("E9FF80A0"))
        .expect_tuple(0, &q("HEX(tt)"), Some("FF"))
        .expect_tuple(0, &q("HEX(v8)"), Some("E282ACC3B1E4B8AD"))
        .expect_tuple(0, &q("CHAR_LENGTH(c255)"), Some("255"))
        .expect_tuple(3, &q("HEX(cl)"), Some("00E900"))
        .expect_tuple(3, &q("HEX(c4)"), Some("610062"))
        .expect_tuple(3, &q("LENGTH(lt)"), Some("400000"))
        .expect_tuple(2, &q("HEX(v)"), Some("612020"))
        .expect_tuple(2, &q("HEX(cl)"), Some("E9"))
        .expect_tuple(4, &q("HEX(tl)"), Some("4772F6DF65"))
        .expect_tuple(1, &q("HEX(tx)"), Some(""));
    round_trip(&db, &case).await;
}

#[tokio::test]
async fn binary_strings_keep_every_byte() {
    let db = Db::start();
    let ddl = "id INT PRIMARY KEY, b4 BINARY(4), vb VARBINARY(20), bl BLOB, tb TINYBLOB, \
               mb MEDIUMBLOB, lb LONGBLOB, b255 BINARY(255)";
    let cols = ["b4", "vb", "bl", "tb", "mb", "lb", "b255"];
    #[rustfmt::skip]
    let rows: &[&[&str]] = &[
        &["X'00'", "X'00'", "X'00'", "X'00'", "X'00'", "X'00'", "X'00'"],
        &["X'FFFFFFFF'", "X'FF00FF00'", "X'FF'", "X'80'", "REPEAT(X'FF00', 40000)", "X'C3'",
          "REPEAT(X'FF', 255)"],
        // Trailing zero bytes: BINARY pads with them, VARBINARY and BLOB keep them.
        &["X'61000000'", "X'6100000000'", "X'0000'", "X''", "X''", "X'0A0D'", "X'01'"],
        // Invalid UTF-8.
        &["X''", "X''", "X''", "X'C328'", "X'F09F9880'", "X'5C27'", "X'00FF00'"],
        &["'abcd'", "'é😀'", "'text'", "X'E9'", "X'00000000'", "REPEAT('z', 100000)", "'trail'"],
    ];
    let q = |expr: &str| format!("SELECT {expr} FROM {{t}} WHERE id = {{id}}");
    let case = rows_case("bins", ddl, &cols, rows)
        .expect_tuple(0, &q("HEX(b4)"), Some("00000000"))
        .expect_tuple(0, &q("HEX(vb)"), Some("00"))
        .expect_tuple(1, &q("HEX(tb)"), Some("80"))
        .expect_tuple(1, &q("HEX(lb)"), Some("C3"))
        .expect_tuple(4, &q("HEX(vb)"), Some("C3A9F09F9880"))
        .expect_tuple(3, &q("HEX(tb)"), Some("C328"))
        .expect_tuple(4, &q("HEX(mb)"), Some("00000000"))
        .expect_tuple(2, &q("HEX(vb)"), Some("6100000000"))
        .expect_tuple(3, &q("HEX(vb)"), Some(""))
        .expect_tuple(
            3,
            &q("HEX(b255) = CONCAT('00FF00', REPEAT('00', 252))"),
            Some("1"),
        );
    round_trip(&db, &case).await;
}

/// One temporal tuple: DATE, DATETIME(0..6), TIMESTAMP(0..6), TIME(0..6), YEAR, each
/// precision fed the same full-precision value (the column truncates it).
fn temporal(
    date: &'static str,
    dt: &'static str,
    ts: &'static str,
    tm: &'static str,
    y: &'static str,
) -> Vec<&'static str> {
    let mut r = vec![date];
    r.extend([dt; 7]);
    r.extend([ts; 7]);
    r.extend([tm; 7]);
    r.push(y);
    r
}

#[tokio::test]
async fn temporal_types_with_zero_dates_fractions_and_negative_times() {
    let db = Db::start();
    let mut ddl = "id INT PRIMARY KEY, d DATE".to_string();
    let mut cols = vec!["d".to_string()];
    for (prefix, ty, extra) in [
        ("dt", "DATETIME", ""),
        ("ts", "TIMESTAMP", " NULL DEFAULT NULL"),
        ("tm", "TIME", ""),
    ] {
        for p in 0..=6 {
            ddl.push_str(&format!(", {prefix}{p} {ty}({p}){extra}"));
            cols.push(format!("{prefix}{p}"));
        }
    }
    ddl.push_str(", y YEAR");
    cols.push("y".to_string());
    let cols: Vec<&str> = cols.iter().map(String::as_str).collect();
    // TIMESTAMPs from epochs: the same instant whatever the writing session's time zone.
    #[rustfmt::skip]
    let rows = [
        temporal("'0000-00-00'", "'0000-00-00 00:00:00'", "'0000-00-00 00:00:00'",
                 "'00:00:00'", "0"),
        temporal("'9999-12-31'", "'9999-12-31 23:59:59.999999'",
                 "FROM_UNIXTIME(2147483647.999999)", "'838:59:59'", "2155"),
        temporal("'1000-01-01'", "'1000-01-01 00:00:00.000001'", "FROM_UNIXTIME(1)",
                 "'-838:59:59'", "1901"),
        temporal("'2024-00-15'", "'2024-02-00 12:34:56.123456'",
                 "FROM_UNIXTIME(1709208000.123456)", "'-00:00:00.123456'", "2000"),
        temporal("'2024-02-29'", "'2000-01-01 00:00:00.050505'", "FROM_UNIXTIME(1000000000.5)",
                 "'-12:34:56.789012'", "1999"),
        temporal("'0000-01-01'", "'0000-00-01 00:00:00.1'", "FROM_UNIXTIME(946684799.99)",
                 "'-00:00:01.010101'", "1970"),
        temporal("'2024-01-00'", "'2024-12-31 23:59:59.000009'",
                 "FROM_UNIXTIME(1592208000.000001)", "'-23:59:59.999999'", "2069"),
        temporal("'1999-12-31'", "'1970-01-01 00:00:00'", "FROM_UNIXTIME(1234567890.654321)",
                 "'-00:00:00.999999'", "1901"),
        temporal("'2000-02-29'", "'2038-01-19 03:14:08.5'", "FROM_UNIXTIME(86400.05)",
                 "'837:00:00.55'", "2155"),
        temporal("'2001-01-01'", "'2001-01-01 01:01:01.010101'", "FROM_UNIXTIME(1700000000.9)",
                 "'-34:00:00.100001'", "0"),
    ];
    let rows: Vec<&[&str]> = rows.iter().map(Vec::as_slice).collect();
    let mut case = rows_case("temporals", &ddl, &cols, &rows);
    // The replayed writes come from a session in another time zone: TIMESTAMPs must still
    // land on the same instant.
    case.during
        .insert(0, "SET time_zone = '+05:30'".to_string());
    let q = |col: &str| format!("SELECT CAST({col} AS CHAR) FROM {{t}} WHERE id = {{id}}");
    let case = case
        .expect_tuple(4, &q("tm3"), Some("-12:34:56.789"))
        .expect_tuple(5, &q("tm1"), Some("-00:00:01.0"))
        .expect_tuple(5, &q("tm2"), Some("-00:00:01.01"))
        .expect_tuple(7, &q("tm1"), Some("-00:00:00.9"))
        .expect_tuple(7, &q("tm2"), Some("-00:00:00.99"))
        .expect_tuple(7, &q("tm6"), Some("-00:00:00.999999"))
        .expect_tuple(3, &q("tm6"), Some("-00:00:00.123456"))
        .expect_tuple(3, &q("tm3"), Some("-00:00:00.123"))
        .expect_tuple(9, &q("tm4"), Some("-34:00:00.1000"))
        .expect_tuple(9, &q("tm5"), Some("-34:00:00.10000"))
        .expect_tuple(2, &q("tm0"), Some("-838:59:59"))
        .expect_tuple(1, &q("tm6"), Some("838:59:59.000000"))
        .expect_tuple(8, &q("tm2"), Some("837:00:00.55"))
        .expect_tuple(0, &q("tm0"), Some("00:00:00"))
        .expect_tuple(5, &q("d"), Some("0000-01-01"))
        .expect_tuple(3, &q("d"), Some("2024-00-15"))
        .expect_tuple(6, &q("d"), Some("2024-01-00"))
        .expect_tuple(0, &q("dt0"), Some("0000-00-00 00:00:00"))
        .expect_tuple(5, &q("dt6"), Some("0000-00-01 00:00:00.100000"))
        .expect_tuple(4, &q("dt3"), Some("2000-01-01 00:00:00.050"))
        .expect_tuple(1, &q("dt6"), Some("9999-12-31 23:59:59.999999"))
        .expect_tuple(7, &q("ts5"), Some("2009-02-13 23:31:30.65432"))
        .expect_tuple(2, &q("ts0"), Some("1970-01-01 00:00:01"))
        .expect_tuple(0, &q("ts6"), Some("0000-00-00 00:00:00.000000"))
        .expect_tuple(
            1,
            "SELECT UNIX_TIMESTAMP(ts6) FROM {t} WHERE id = {id}",
            Some("2147483647.999999"),
        )
        .expect_tuple(0, &q("y"), Some("0000"))
        .expect_tuple(1, &q("y"), Some("2155"))
        .expect_tuple(2, &q("y"), Some("1901"));
    round_trip(&db, &case).await;
}
