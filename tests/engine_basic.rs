//! End-to-end migrations of small tables: the happy path and the cleanup guarantees.

mod common;

use common::{dump, Db};
use shadowcut::migration::MigrationOptions;
use shadowcut::state::State;

#[tokio::test]
async fn adds_column_and_index_keeps_rows_and_archives_old_table() {
    let db = Db::start();
    db.exec("CREATE DATABASE app").await;
    db.exec(
        "CREATE TABLE app.t (id INT PRIMARY KEY AUTO_INCREMENT, k INT NOT NULL, c VARCHAR(20))",
    )
    .await;
    db.exec("INSERT INTO app.t (k, c) SELECT seq, CONCAT('row', seq) FROM app.seq_1_to_2500")
        .await;
    let before = dump(&db, "app.t", &["id", "k", "c"], "id").await;

    let opts = MigrationOptions {
        chunk_size: 300,
        ..Default::default()
    };
    let (r, progress) = db
        .migrate(
            "app",
            "t",
            "ADD COLUMN c2 INT NOT NULL DEFAULT 7, ADD INDEX k2 (c2)",
            opts,
        )
        .await;
    let outcome = r.expect("migration succeeds");
    assert_eq!(progress.state(), State::Completed);

    let after = dump(&db, "app.t", &["id", "k", "c"], "id").await;
    assert_eq!(before, after);
    assert_eq!(
        db.scalar_u64("SELECT COUNT(*) FROM app.t WHERE c2 = 7")
            .await,
        2500
    );
    let idx = db.scalar_u64("SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA='app' AND TABLE_NAME='t' AND INDEX_NAME='k2'").await;
    assert_eq!(idx, 1);
    let old = outcome.old_table.expect("old table kept");
    assert!(old.starts_with("_t_old_"), "{old}");
    let mut tables = db.tables("app").await;
    tables.sort();
    assert_eq!(tables, vec![old.clone(), "t".to_string()]);
    assert_eq!(
        dump(&db, &format!("app.`{old}`"), &["id", "k", "c"], "id").await,
        before
    );
}
