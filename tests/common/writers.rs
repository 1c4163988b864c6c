//! Writers whose committed effect is modelled independently: each owns a key range, so its
//! model is exact whatever the interleaving with other writers and with the migration.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Pool};

/// A tiny deterministic PRNG so runs are reproducible per seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub type Model = BTreeMap<i64, (i64, String)>;

#[derive(Default)]
pub struct WriterReport {
    pub model: Model,
    pub commits: u64,
    pub errors: Vec<String>,
}

/// One writer owns keys [base, base + span): its model is exact whatever the interleaving.
pub async fn writer(
    pool: Pool,
    seed: u64,
    base: i64,
    span: i64,
    initial: Model,
    stop: Arc<AtomicBool>,
) -> WriterReport {
    let mut rng = Rng(seed);
    let mut report = WriterReport {
        model: initial,
        ..Default::default()
    };
    let mut conn: Conn = pool.get_conn().await.expect("writer connects");
    while !stop.load(Ordering::Relaxed) {
        let in_tx = rng.below(4) == 0;
        let ops = if in_tx { 1 + rng.below(4) } else { 1 };
        let mut pending = report.model.clone();
        let mut stmts: Vec<(String, Vec<mysql_async::Value>)> = Vec::new();
        for _ in 0..ops {
            let existing: Vec<i64> = pending.keys().copied().collect();
            let free = |rng: &mut Rng, m: &Model| loop {
                let id = base + rng.below(span as u64) as i64;
                if !m.contains_key(&id) {
                    break id;
                }
            };
            match rng.below(10) {
                0..=3 => {
                    let id = free(&mut rng, &pending);
                    let v = rng.below(1_000_000) as i64;
                    let p = format!("ins-{seed}-{v}-ü");
                    stmts.push((
                        "INSERT INTO app.t (id, v, payload) VALUES (?, ?, ?)".into(),
                        vec![id.into(), v.into(), p.clone().into()],
                    ));
                    pending.insert(id, (v, p));
                }
                4..=6 if !existing.is_empty() => {
                    let id = existing[rng.below(existing.len() as u64) as usize];
                    let v = rng.below(1_000_000) as i64;
                    let p = format!("upd-{seed}-{v}");
                    stmts.push((
                        "UPDATE app.t SET v = ?, payload = ? WHERE id = ?".into(),
                        vec![v.into(), p.clone().into(), id.into()],
                    ));
                    pending.insert(id, (v, p));
                }
                7 if !existing.is_empty() => {
                    let id = existing[rng.below(existing.len() as u64) as usize];
                    let new_id = free(&mut rng, &pending);
                    stmts.push((
                        "UPDATE app.t SET id = ? WHERE id = ?".into(),
                        vec![new_id.into(), id.into()],
                    ));
                    let row = pending.remove(&id).expect("row in model");
                    pending.insert(new_id, row);
                }
                8..=9 if !existing.is_empty() => {
                    let id = existing[rng.below(existing.len() as u64) as usize];
                    stmts.push(("DELETE FROM app.t WHERE id = ?".into(), vec![id.into()]));
                    pending.remove(&id);
                }
                _ => {}
            }
        }
        if stmts.is_empty() {
            continue;
        }
        let rollback = in_tx && rng.below(5) == 0;
        let result: Result<(), mysql_async::Error> = async {
            if in_tx {
                conn.query_drop("BEGIN").await?;
            }
            for (sql, params) in &stmts {
                conn.exec_drop(sql.as_str(), params.clone()).await?;
            }
            if in_tx {
                conn.query_drop(if rollback { "ROLLBACK" } else { "COMMIT" })
                    .await?;
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) if !rollback => {
                report.model = pending;
                report.commits += 1;
            }
            Ok(()) => {}
            Err(e) => {
                report.errors.push(e.to_string());
                if report.errors.len() > 20 {
                    break;
                }
                let _ = conn.query_drop("ROLLBACK").await;
            }
        }
    }
    report
}
