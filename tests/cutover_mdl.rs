//! The swap with another session holding the shadow table's metadata lock, as the server's own
//! purge and statistics threads do for a moment on MariaDB 10.6+, and as a monitoring query can
//! for longer. A writer queued on the table while it is locked must still land in the NEW table.
//!
//! A multi-table RENAME takes its metadata locks in name order. Had the shadow a name sorting
//! before the table (the usual `_t_new`), the RENAME would wait on the shadow instead of on the
//! table; the hand-over would then let the queued writer into the old table. This test makes
//! that wait long and certain.

mod common;

use std::time::{Duration, Instant};

use common::Db;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use shadowcut::cutover::{swap, CutoverPlan, SwapHooks};
use shadowcut::shadow::HelperNames;
use shadowcut::sql::qualified;
use tokio::task::JoinHandle;

struct Hooks {
    writer: Option<Conn>,
    holder: Option<Conn>,
    admin: Conn,
    table: String,
    write: Option<JoinHandle<Result<(), String>>>,
    release: Option<JoinHandle<()>>,
}

impl Hooks {
    /// Waits until session `id` waits for a metadata lock.
    async fn wait_queued(&mut self, id: u32) -> shadowcut::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let state: Option<Option<String>> = self
                .admin
                .exec_first(
                    "SELECT STATE FROM information_schema.PROCESSLIST WHERE ID = ?",
                    (id,),
                )
                .await
                .map_err(|e| shadowcut::Error::Cutover(e.to_string()))?;
            if state.flatten().is_some_and(|s| s.contains("metadata lock")) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(shadowcut::Error::Cutover("writer never queued".into()));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

impl SwapHooks for Hooks {
    async fn locked(&mut self, _a: &mut Conn, _plan: &CutoverPlan) -> shadowcut::Result<()> {
        // A writer queues on the locked table before the RENAME is issued.
        let mut w = self.writer.take().expect("one swap");
        let id = w.id();
        let sql = format!("INSERT INTO {} VALUES (1, 'w')", self.table);
        self.write = Some(tokio::spawn(async move {
            w.query_drop(sql).await.map_err(|e| e.to_string())
        }));
        self.wait_queued(id).await
    }

    async fn rename_queued(&mut self) -> shadowcut::Result<()> {
        // The shadow stays locked a while after A lets go of the table.
        let mut h = self.holder.take().expect("one swap");
        self.release = Some(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            h.query_drop("COMMIT").await.expect("holder commits");
        }));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_shadow_lock_cannot_let_a_queued_write_into_the_old_table() {
    let db = Db::start();
    let names = HelperNames::for_table("t", "1").expect("names");
    let (t, shadow) = (qualified("p", "t"), qualified("p", &names.shadow));
    db.exec("CREATE DATABASE p").await;
    db.exec(&format!(
        "CREATE TABLE {t} (id INT PRIMARY KEY, src VARCHAR(8))"
    ))
    .await;
    db.exec(&format!("INSERT INTO {t} VALUES (-1, 'old')"))
        .await;
    db.exec(&format!("CREATE TABLE {shadow} LIKE {t}")).await;
    db.exec(&format!("INSERT INTO {shadow} VALUES (-2, 'new')"))
        .await;
    db.exec(&format!(
        "CREATE TABLE {} (id TINYINT UNSIGNED NOT NULL PRIMARY KEY, value BIGINT NOT NULL)",
        qualified("p", &names.changelog)
    ))
    .await;

    // An open transaction that read the shadow holds its metadata lock.
    let mut holder = db.conn().await;
    holder.query_drop("BEGIN").await.unwrap();
    holder
        .query_drop(format!("SELECT COUNT(*) FROM {shadow}"))
        .await
        .unwrap();

    let mut hooks = Hooks {
        writer: Some(db.conn().await),
        holder: Some(holder),
        admin: db.conn().await,
        table: t.clone(),
        write: None,
        release: None,
    };
    let plan = CutoverPlan {
        settings: db.sandbox.settings(),
        database: "p".into(),
        table: "t".into(),
        names: names.clone(),
        lock_timeout: Duration::from_secs(5),
        keep_old_table: true,
        kill_blockers_after: None,
    };
    swap(&plan, &mut hooks).await.expect("the swap completes");
    hooks.release.take().expect("hand-over").await.unwrap();
    hooks
        .write
        .take()
        .expect("writer")
        .await
        .unwrap()
        .expect("the queued write succeeds");

    let in_t: Vec<(i32, String)> = db
        .conn()
        .await
        .query(format!("SELECT id, src FROM {t} ORDER BY id"))
        .await
        .unwrap();
    let in_old: Vec<(i32, String)> = db
        .conn()
        .await
        .query(format!(
            "SELECT id, src FROM {} ORDER BY id",
            qualified("p", &names.archive)
        ))
        .await
        .unwrap();
    assert_eq!(
        (in_t, in_old),
        (
            vec![(-2, "new".to_string()), (1, "w".to_string())],
            vec![(-1, "old".to_string())]
        ),
        "(new table, old table): the queued write must be in the new table only"
    );
}
