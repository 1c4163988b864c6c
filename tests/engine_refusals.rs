//! Every refusal gives its error, names the fix, and leaves nothing behind; cancel and the DDL
//! guard leave the original table as it was.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{dump, Db};
use shadowcut::migration::{self, Controls, MigrationOptions};
use shadowcut::progress::{NoObserver, Progress};
use shadowcut::sandbox::{Sandbox, SandboxOptions};
use shadowcut::state::State;
use shadowcut::Error;

/// Runs a migration expected to be refused; returns the error text after checking that only
/// the tables that existed before are there.
async fn refused(db: &Db, table: &str, alter: &str, opts: MigrationOptions) -> (Error, String) {
    let before = db.tables("app").await;
    let (r, progress) = db.migrate("app", table, alter, opts).await;
    let err = r.expect_err("migration must be refused");
    assert_eq!(progress.state(), State::Failed);
    assert_eq!(
        db.tables("app").await,
        before,
        "a refusal left tables behind ({alter})"
    );
    let text = err.to_string();
    (err, text)
}

#[tokio::test]
async fn refusals_name_the_problem_and_leave_nothing_behind() {
    let db = Db::start();
    db.exec("CREATE DATABASE app").await;
    db.exec("CREATE TABLE app.t (id INT PRIMARY KEY, a INT NOT NULL, b VARCHAR(10))")
        .await;
    db.exec("INSERT INTO app.t VALUES (1, 1, 'x'), (2, 2, 'y')")
        .await;
    let opts = MigrationOptions::default;

    // The ALTER clause itself.
    for bad in [
        "ADD COLUMN x INT; DROP TABLE t",
        "RENAME TO t2",
        "ADD COLUMN x INT /*! , DROP COLUMN a */",
        "ADD CONSTRAINT fk FOREIGN KEY (a) REFERENCES other (id)",
        "PARTITION BY HASH(id) PARTITIONS 2",
        "DISCARD TABLESPACE",
        "ADD COLUMN x INT, ALGORITHM=INPLACE",
    ] {
        let (err, text) = refused(&db, "t", bad, opts()).await;
        assert!(matches!(err, Error::InvalidAlter(_)), "{bad}: {text}");
    }
    // The server's own message for a clause that parses but does not apply.
    let (err, text) = refused(&db, "t", "ADD COLUMN x NOSUCHTYPE", opts()).await;
    assert!(matches!(err, Error::AlterRejected(_)), "{text}");
    assert!(
        text.contains("NOSUCHTYPE") && text.contains("ERROR"),
        "{text}"
    );
    let (_, text) = refused(&db, "t", "DROP COLUMN nosuch", opts()).await;
    assert!(text.contains("nosuch"), "{text}");

    // The key rows are identified by must survive.
    let (_, text) = refused(&db, "t", "DROP PRIMARY KEY", opts()).await;
    assert!(
        text.contains("PRIMARY KEY") && text.contains("keep the primary key"),
        "{text}"
    );

    // Renames only with permission.
    let (_, text) = refused(&db, "t", "CHANGE COLUMN a a2 INT NOT NULL", opts()).await;
    assert!(
        text.contains("renames column a to a2") && text.contains("allow_renamed_columns"),
        "{text}"
    );

    // Missing table.
    let (err, _) = refused(&db, "nosuch", "ADD COLUMN x INT", opts()).await;
    assert!(matches!(err, Error::TableNotFound { .. }));

    // No usable key.
    db.exec("CREATE TABLE app.nokey (a INT, b INT)").await;
    db.exec("CREATE TABLE app.nullkey (a INT NULL, UNIQUE KEY (a))")
        .await;
    for t in ["nokey", "nullkey"] {
        let (_, text) = refused(&db, t, "ADD COLUMN x INT", opts()).await;
        assert!(
            text.contains("no PRIMARY KEY") && text.contains("add a primary key"),
            "{text}"
        );
    }

    // Triggers.
    db.exec("CREATE TABLE app.trig (id INT PRIMARY KEY)").await;
    db.exec("CREATE TRIGGER app.trig_ai AFTER INSERT ON app.trig FOR EACH ROW SET @x = 1")
        .await;
    let (_, text) = refused(&db, "trig", "ADD COLUMN x INT", opts()).await;
    assert!(text.contains("triggers (trig_ai)"), "{text}");

    // Foreign keys, both directions.
    db.exec("CREATE TABLE app.parent (id INT PRIMARY KEY) ENGINE=InnoDB")
        .await;
    db.exec("CREATE TABLE app.child (id INT PRIMARY KEY, p INT, CONSTRAINT fk_p FOREIGN KEY (p) REFERENCES app.parent (id)) ENGINE=InnoDB").await;
    for t in ["parent", "child"] {
        let (_, text) = refused(&db, t, "ADD COLUMN x INT", opts()).await;
        assert!(
            text.contains("fk_p") && text.contains("not supported yet"),
            "{t}: {text}"
        );
    }

    // A leftover helper table is never overwritten.
    db.exec("CREATE TABLE app.`t~new` (id INT)").await;
    let (_, text) = refused(&db, "t", "ADD COLUMN x INT", opts()).await;
    assert!(text.contains("t~new already exists"), "{text}");
    db.exec("DROP TABLE app.`t~new`").await;

    // Binlog settings (global values, which is what new sessions get).
    for (set, expect) in [
        (
            "SET GLOBAL binlog_format = 'STATEMENT'",
            "@@binlog_format is STATEMENT",
        ),
        (
            "SET GLOBAL binlog_row_image = 'MINIMAL'",
            "@@binlog_row_image is MINIMAL",
        ),
        (
            "SET GLOBAL log_bin_compress = ON",
            "@@log_bin_compress is ON",
        ),
    ] {
        db.exec(set).await;
        let (err, text) = refused(&db, "t", "ADD COLUMN x INT", opts()).await;
        assert!(
            matches!(
                err,
                Error::Refused {
                    check: "binlog",
                    ..
                }
            ),
            "{text}"
        );
        assert!(
            text.contains(expect) && text.contains("SET GLOBAL"),
            "{text}"
        );
        db.exec(
            "SET GLOBAL binlog_format = 'ROW', binlog_row_image = 'FULL', log_bin_compress = OFF",
        )
        .await;
    }
    assert_eq!(dump(&db, "app.t", &["id", "a", "b"], "id").await.len(), 2);
}

#[tokio::test]
async fn refuses_when_the_binlog_is_off() {
    let sandbox = Sandbox::start_with(SandboxOptions {
        extra_args: vec!["--skip-log-bin".into()],
        ..Default::default()
    })
    .unwrap();
    let pool = mysql_async::Pool::new(sandbox.url().as_str());
    let db = Db { sandbox, pool };
    db.exec("CREATE DATABASE app").await;
    db.exec("CREATE TABLE app.t (id INT PRIMARY KEY)").await;
    let (_, text) = refused(&db, "t", "ADD COLUMN x INT", MigrationOptions::default()).await;
    assert!(
        text.contains("@@log_bin is OFF") && text.contains("enable the binary log"),
        "{text}"
    );
}

async fn big_table(db: &Db, rows: u32) {
    db.exec("CREATE DATABASE app").await;
    db.exec("CREATE TABLE app.t (id INT PRIMARY KEY, v INT NOT NULL, s VARCHAR(40))")
        .await;
    db.exec(&format!(
        "INSERT INTO app.t SELECT seq, seq * 3, MD5(seq) FROM app.seq_1_to_{rows}"
    ))
    .await;
}

#[tokio::test]
async fn cancel_mid_copy_leaves_the_original_untouched() {
    let db = Db::start();
    big_table(&db, 30_000).await;
    let before = dump(&db, "app.t", &["id", "v", "s"], "id").await;
    let spec = db.spec(
        "app",
        "t",
        "ADD COLUMN x INT NOT NULL DEFAULT 1",
        MigrationOptions {
            chunk_size: 100,
            ..Default::default()
        },
    );
    let (controls, _tuning) = Controls::unattended(&spec.options);
    let cancel = controls.cancel.clone();
    let progress = Progress::new(Arc::new(NoObserver));
    let task = tokio::spawn(migration::run(spec, controls, progress.clone()));
    // Cancel once the copy is under way.
    while Progress::get(&progress.rows_copied) < 1_000 {
        assert!(
            !task.is_finished(),
            "migration ended before it could be cancelled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cancel.cancel();
    let r = task.await.unwrap();
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
    assert_eq!(progress.state(), State::Cancelled);
    assert!(
        Progress::get(&progress.rows_copied) < 30_000,
        "the copy finished before the cancel"
    );
    assert_eq!(db.tables("app").await, vec!["t".to_string()]);
    assert_eq!(dump(&db, "app.t", &["id", "v", "s"], "id").await, before);
}

#[tokio::test]
async fn ddl_on_the_table_during_the_migration_stops_it() {
    let db = Db::start();
    big_table(&db, 2_000).await;
    let (task, progress) = db
        .postponed("app", "t", "ADD COLUMN x INT NOT NULL DEFAULT 1")
        .await;
    db.exec("ALTER TABLE app.t ADD COLUMN y INT").await;
    let r = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("guard reacts")
        .unwrap();
    let err = r.expect_err("a DDL on the table must stop the migration");
    assert!(matches!(err, Error::SchemaChanged(_)), "{err}");
    assert!(err.to_string().contains("ADD COLUMN y"), "{err}");
    assert_eq!(progress.state(), State::Failed);
    assert_eq!(db.tables("app").await, vec!["t".to_string()]);
    assert_eq!(db.scalar_u64("SELECT COUNT(*) FROM app.t").await, 2_000);
}

/// When the replay fails, the migration reports the replay's error, not the binlog tail that
/// stopped because the replay went away. Repeated: which of the two ends first is a race.
#[tokio::test]
async fn a_failing_replay_reports_its_own_error() {
    let db = Db::start();
    big_table(&db, 2_000).await;
    for round in 0..3 {
        let (task, progress) = db
            .postponed("app", "t", "ADD COLUMN x INT NOT NULL DEFAULT 1")
            .await;
        // Someone drops the new table: the next replayed change fails.
        db.exec("DROP TABLE app.`t~new`").await;
        db.exec("UPDATE app.t SET v = v + 1 WHERE id = 1").await;
        let r = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the replay's failure stops the migration")
            .unwrap();
        let err = r.expect_err("the migration must fail").to_string();
        assert!(
            err.contains("t~new") && err.contains("1146"),
            "round {round}: {err}"
        );
        assert_eq!(progress.state(), State::Failed);
        assert_eq!(db.tables("app").await, vec!["t".to_string()]);
    }
}
