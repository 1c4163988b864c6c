//! `shadowcut run` as an operator uses it: exit 0 and a summary on success, a non-zero exit
//! with one readable line on failure.

mod common;

use std::process::Command;

use common::Db;

fn run(db: &Db, table: &str, alter: &str, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shadowcut"))
        .args([
            "run",
            "--host",
            "127.0.0.1",
            "--user",
            "root",
            "--database",
            "app",
            "--quiet",
        ])
        .args([
            "--port",
            &db.sandbox.port().to_string(),
            "--table",
            table,
            "--alter",
            alter,
        ])
        .args(extra)
        .output()
        .expect("run the binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn run_command_exit_codes_and_messages() {
    let db = Db::start();
    db.exec("CREATE DATABASE app").await;
    db.exec("CREATE TABLE app.t (id INT PRIMARY KEY, v INT)")
        .await;
    db.exec("INSERT INTO app.t SELECT seq, seq FROM app.seq_1_to_1000")
        .await;

    let (code, out, _) = run(
        &db,
        "t",
        "ADD COLUMN c2 INT NOT NULL DEFAULT 0, ADD INDEX k2 (c2)",
        &["--chunk-size", "100", "--drop-old-table"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("migration completed; old table dropped"),
        "{out}"
    );
    assert_eq!(
        db.scalar_u64("SELECT COUNT(*) FROM app.t WHERE c2 = 0")
            .await,
        1000
    );

    // The error is one line, the last one (log lines, if any, come before it).
    let error_line = |err: &str| -> String {
        let lines: Vec<&str> = err
            .trim()
            .lines()
            .filter(|l| l.starts_with("shadowcut: error:"))
            .collect();
        assert_eq!(lines.len(), 1, "one error line: {err}");
        assert_eq!(
            err.trim().lines().last(),
            Some(lines[0]),
            "the error comes last: {err}"
        );
        lines[0].to_string()
    };
    let (code, _, err) = run(&db, "nosuch", "ADD COLUMN x INT", &[]);
    assert_eq!(code, 1);
    assert!(
        error_line(&err).starts_with("shadowcut: error: table app.nosuch does not exist"),
        "{err}"
    );

    let (code, _, err) = run(&db, "t", "ADD COLUMN x INT; DROP TABLE t", &[]);
    assert_eq!(code, 1);
    assert!(error_line(&err).contains("';'"), "{err}");

    let (code, _, err) = run(&db, "t", "ADD COLUMN x INT", &["--chunk-size", "0"]);
    assert_eq!(code, 1);
    assert!(
        error_line(&err).contains("chunk_size must be between"),
        "{err}"
    );
    assert_eq!(db.tables("app").await, vec!["t".to_string()]);
}
