//! Keeps the copy's chunk statements and the replay's transactions from overlapping.
//!
//! Why: a chunk's `INSERT IGNORE .. SELECT` reads the source without locking it (READ
//! COMMITTED: the application's rows are never locked or waited on by the copy), from a
//! snapshot taken when the statement starts. If the replay applied the delete of a row while a
//! chunk that had already read that row was running, the delete would find nothing in the
//! shadow table and the chunk would then write the stale row, which would survive the
//! migration. With the two serialized, every replayed change commits either before a chunk's
//! snapshot is taken (so the snapshot already reflects it) or after the chunk committed (so it
//! overwrites or deletes what the chunk wrote), and the binlog order does the rest.
//!
//! Invariants: a chunk holds [`Interlock::chunk`] from before its statement is sent until the
//! server has finished it, which after a lost connection includes ending the orphaned
//! statement on the server; the replay holds [`Interlock::replay`] for a whole transaction,
//! COMMIT included. Chunks share the lock (a parallel copy can run several at once); the replay
//! takes it alone. The lock is fair, so neither side starves the other.

use std::sync::Arc;

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

#[derive(Clone, Default)]
pub struct Interlock(Arc<RwLock<()>>);

impl Interlock {
    pub fn new() -> Interlock {
        Interlock::default()
    }

    /// Held by a chunk statement while it may still write to the shadow table.
    pub async fn chunk(&self) -> RwLockReadGuard<'_, ()> {
        self.0.read().await
    }

    /// Held by a replay transaction until it committed or rolled back.
    pub async fn replay(&self) -> RwLockWriteGuard<'_, ()> {
        self.0.write().await
    }
}
