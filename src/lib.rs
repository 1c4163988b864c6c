//! shadowcut: online schema changes for MySQL and MariaDB.
//!
//! The pipeline reads the way the data flows: [`inspect`] refuses what cannot be migrated
//! safely, [`shadow`] creates the shadow table and maps columns, [`binlog`] tails row events
//! (started before the copy), [`copy`] moves rows in chunks, [`replay`] applies the tailed
//! changes, and [`cutover`] swaps the tables atomically. [`migration`] drives one migration
//! through those steps and the [`state`] machine.

pub mod alter;
pub mod binlog;
pub mod changelog;
pub mod clock;
pub mod conn;
pub mod copy;
pub mod cutover;
pub mod daemon;
pub mod error;
pub mod flavor;
pub mod inspect;
pub mod interlock;
pub mod migration;
pub mod progress;
pub mod replay;
pub mod sandbox;
pub mod schema;
pub mod shadow;
pub mod sql;
pub mod state;
pub mod throttle;

pub use error::{Error, Result};
