//! The tail task: one binlog connection, events in, committed transactions of one table out.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Value};
use mysql_common::binlog::consts::BinlogChecksumAlg;
use mysql_common::binlog::events::{Event, EventData, TableMapEvent};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::decode::{RowChange, TableDecoder};
use super::guard::{ddl_touches_table, is_our_swap};
use super::BinlogPos;
use crate::conn::ConnSettings;
use crate::error::{DbContext, Error, Result};
use crate::flavor::ServerVersion;
use crate::progress::Progress;
use crate::schema::{Column, TableSchema};

/// A big transaction is handed over in parts of at most this many rows, so memory stays
/// bounded; only the last part carries the position.
const MAX_ROWS_PER_ITEM: usize = 2000;

/// Row ids in the changelog table.
pub const HEARTBEAT_ID: u64 = 1;
pub const MARKER_ID: u64 = 2;

// Event type codes, raw because MariaDB's (160+) are not in mysql_common's enum.
const QUERY: u8 = 2;
const ROTATE: u8 = 4;
const FORMAT_DESCRIPTION: u8 = 15;
const XID: u8 = 16;
const TABLE_MAP: u8 = 19;
const MYSQL_GTID: u8 = 33;
const MARIADB_GTID: u8 = 162;
const ROWS_EVENTS: [u8; 6] = [23, 24, 25, 30, 31, 32];
const MARIADB_COMPRESSED_ROWS: std::ops::RangeInclusive<u8> = 166..=171;

/// What the tail hands the replay, in commit order.
#[derive(Debug)]
pub enum Item {
    /// Row changes of a committed transaction; `end` is set on its last part only.
    Changes {
        changes: Vec<RowChange>,
        end: Option<BinlogPos>,
    },
    /// A heartbeat written at `micros` (epoch), committed at `end`.
    Heartbeat { micros: i64, end: BinlogPos },
    /// A cut-over marker: everything committed before `token` was written precedes it.
    Marker { token: i64, end: BinlogPos },
}

/// What the tail needs to know; it shares nothing else with the engine.
#[derive(Debug, Clone)]
pub struct TailConfig {
    pub settings: ConnSettings,
    pub version: ServerVersion,
    /// Unique among the server's replicas: a duplicate id kicks the other connection off.
    pub server_id: u32,
    pub start: BinlogPos,
    pub schema: TableSchema,
    pub changelog: String,
    /// The cut-over's placeholder name: a RENAME naming it is our own swap, the tail's end.
    pub swap: String,
    /// How long to keep reconnecting after the stream broke before giving up.
    pub reconnect_for: std::time::Duration,
}

/// Starts the tail. The task ends when `cancel` fires (Ok), the channel closes (Ok), or on error.
pub fn spawn_tail(
    cfg: TailConfig,
    tx: mpsc::Sender<Item>,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> JoinHandle<Result<()>> {
    tokio::spawn(async move {
        let result = tokio::select! {
            r = tail(&cfg, &tx, &progress) => r,
            _ = cancel.cancelled() => Ok(()),
        };
        if let Err(e) = &result {
            warn!(error = %e, "binlog tail stopped");
        }
        result
    })
}

fn changelog_schema(db: &str, name: &str) -> TableSchema {
    let col = |name: &str, data_type: &str, unsigned: bool| Column {
        name: name.to_string(),
        data_type: data_type.to_string(),
        column_type: data_type.to_string(),
        unsigned,
        charset: None,
        collation: None,
        nullable: false,
        generated: false,
        members: Vec::new(),
    };
    TableSchema {
        database: db.to_string(),
        name: name.to_string(),
        columns: vec![col("id", "tinyint", true), col("value", "bigint", false)],
        unique_keys: Vec::new(),
    }
}

/// Reader state between events.
struct Tail<'a> {
    cfg: &'a TailConfig,
    tx: &'a mpsc::Sender<Item>,
    progress: &'a Progress,
    file: String,
    fde_seen: bool,
    table_id: Option<u64>,
    decoders: HashMap<u64, TableDecoder>,
    changelog_id: Option<u64>,
    changelog_decoder: Option<TableDecoder>,
    gtid: Option<String>,
    pending: Vec<RowChange>,
    /// Changelog rows of the open transaction: (id, value).
    pending_changelog: Vec<(u64, i64)>,
    /// End of the last transaction handed over: where a reconnect resumes.
    last_end: BinlogPos,
}

/// Verifies an event's CRC32, which mysql_common strips but does not check. Events before the
/// format description and artificial ones (the fake first ROTATE) are not checksummed usably.
fn verify_checksum(event: &Event, fde_seen: bool, file: &str) -> Result<()> {
    let artificial = event.header().flags_raw() & 0x0020 != 0;
    if !fde_seen || artificial {
        return Ok(());
    }
    let alg = event.footer().get_checksum_alg().ok().flatten();
    if alg != Some(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32) {
        return Ok(());
    }
    if let Some(sum) = event.checksum() {
        let expected = u32::from_le_bytes(sum);
        let actual = event.calc_checksum(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32);
        if expected != actual {
            return Err(Error::Binlog(format!(
                "checksum mismatch in {file} before position {}: the binlog or the network corrupted an event; the migration stopped, start it again",
                event.header().log_pos()
            )));
        }
    }
    Ok(())
}

const STREAM_CLOSED: &str = "the server closed the binlog stream";

/// Streams until the replay side goes away, reconnecting after a lost connection from the end
/// of the last transaction handed over (a transaction handed over in parts is sent again from
/// its start; the replay applies it idempotently).
async fn tail(cfg: &TailConfig, tx: &mpsc::Sender<Item>, progress: &Progress) -> Result<()> {
    let mut from = cfg.start.clone();
    let mut lost_since: Option<std::time::Instant> = None;
    let mut backoff = std::time::Duration::from_millis(100);
    loop {
        let mut flowing = false;
        match stream_from(cfg, tx, progress, &mut from, &mut flowing).await {
            Ok(()) => return Ok(()),
            Err(e)
                if e.is_connection_lost()
                    || matches!(&e, Error::Binlog(m) if m == STREAM_CLOSED) =>
            {
                if flowing {
                    lost_since = None;
                    backoff = std::time::Duration::from_millis(100);
                }
                let since = *lost_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > cfg.reconnect_for {
                    return Err(Error::Binlog(format!(
                        "the binlog connection could not be re-established for {:?} ({e}); the migration stopped",
                        cfg.reconnect_for
                    )));
                }
                warn!(error = %e, resume_at = %from, "binlog connection lost; reconnecting");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(2));
                progress
                    .reconnects
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => return Err(e),
        }
    }
}

async fn stream_from(
    cfg: &TailConfig,
    tx: &mpsc::Sender<Item>,
    progress: &Progress,
    from: &mut BinlogPos,
    flowing: &mut bool,
) -> Result<()> {
    use futures_util::StreamExt;

    let mut conn = cfg.settings.connect("binlog streaming").await?;
    for stmt in cfg.version.binlog_session_setup(1_000_000_000) {
        conn.query_drop(&stmt)
            .await
            .ctx(|| format!("binlog session: {stmt}"))?;
    }
    info!(start = %from, server_id = cfg.server_id, "binlog tail starting");
    let request = BinlogStreamRequest::new(cfg.server_id)
        .with_filename(from.file.as_bytes())
        .with_pos(from.pos);
    let mut stream = conn
        .get_binlog_stream(request)
        .await
        .ctx(|| format!("requesting the binlog from {from}"))?;
    let mut t = Tail {
        cfg,
        tx,
        progress,
        file: from.file.clone(),
        fde_seen: false,
        table_id: None,
        decoders: HashMap::new(),
        changelog_id: None,
        changelog_decoder: None,
        gtid: from.gtid.clone(),
        pending: Vec::new(),
        pending_changelog: Vec::new(),
        last_end: from.clone(),
    };
    let result = async {
        while let Some(event) = stream.next().await {
            let event = event.ctx(|| format!("reading the binlog near {}", t.file))?;
            *flowing = true;
            if !t.handle(&event).await? {
                return Ok(());
            }
        }
        Err(Error::Binlog(STREAM_CLOSED.to_string()))
    }
    .await;
    *from = t.last_end.clone();
    result
}

impl Tail<'_> {
    fn position(&self, log_pos: u32) -> BinlogPos {
        BinlogPos {
            file: self.file.clone(),
            pos: u64::from(log_pos),
            gtid: self.gtid.clone(),
        }
    }

    /// Handles one event; `Ok(false)` when the replay side has gone away or the table was
    /// swapped by our cut-over.
    async fn handle(&mut self, event: &Event) -> Result<bool> {
        verify_checksum(event, self.fde_seen, &self.file)?;
        let header = event.header();
        let ty = header.event_type_raw();
        match ty {
            ROTATE => {
                // The fake ROTATE sent before the format description carries the checksum
                // bytes at the end of its name (mysql_common cannot strip them yet), and they
                // may well be printable: keep the file name we asked for instead.
                if !self.fde_seen {
                    return Ok(true);
                }
                if let Ok(Some(EventData::RotateEvent(r))) = event.read_data() {
                    let name = String::from_utf8_lossy(r.name_raw()).into_owned();
                    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic()) {
                        debug!(file = %name, "binlog rotated");
                        self.file = name;
                    } else {
                        return Err(Error::Binlog(format!("unreadable binlog file name in a ROTATE event after {}", self.file)));
                    }
                }
            }
            FORMAT_DESCRIPTION => self.fde_seen = true,
            MARIADB_GTID => {
                // seq_no u64 LE, domain u32 LE, flags u8; the server id is in the header.
                let d = event.data();
                if d.len() >= 12 {
                    let seq = u64::from_le_bytes(d[0..8].try_into().unwrap_or_default());
                    let domain = u32::from_le_bytes(d[8..12].try_into().unwrap_or_default());
                    self.gtid = Some(format!("{domain}-{}-{seq}", header.server_id()));
                }
            }
            MYSQL_GTID => {
                if let Ok(Some(EventData::GtidEvent(g))) = event.read_data() {
                    let sid = g.sid();
                    let hex: String = sid.iter().map(|b| format!("{b:02x}")).collect();
                    self.gtid = Some(format!(
                        "{}-{}-{}-{}-{}:{}",
                        &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32], g.gno()
                    ));
                }
            }
            QUERY => {
                let Ok(Some(EventData::QueryEvent(q))) = event.read_data() else {
                    return Ok(true);
                };
                let text = q.query();
                let upper = text.trim_start().get(..8).unwrap_or("").to_ascii_uppercase();
                if upper.starts_with("COMMIT") {
                    return self.commit(header.log_pos()).await;
                }
                if !upper.starts_with("BEGIN") {
                    let (db, table) = (&self.cfg.schema.database, &self.cfg.schema.name);
                    if ddl_touches_table(&text, &q.schema(), db, table) {
                        if is_our_swap(&text, &self.cfg.swap) {
                            // Nothing after it is ours to replay: the table has the new schema.
                            info!("the binlog shows our cut-over's RENAME; the tail is done");
                            return Ok(false);
                        }
                        return Err(Error::SchemaChanged(format!("the binlog shows `{}`", text.chars().take(200).collect::<String>())));
                    }
                }
            }
            TABLE_MAP => {
                if let Ok(Some(EventData::TableMapEvent(tme))) = event.read_data() {
                    self.table_map(&tme)?;
                }
            }
            XID => return self.commit(header.log_pos()).await,
            t if ROWS_EVENTS.contains(&t) => return self.rows(event).await,
            t if MARIADB_COMPRESSED_ROWS.contains(&t) => {
                return Err(Error::Binlog(
                    "the binlog holds compressed row events: set log_bin_compress=OFF and start the migration again".to_string(),
                ))
            }
            _ => {}
        }
        Ok(true)
    }

    fn table_map(&mut self, tme: &TableMapEvent<'_>) -> Result<()> {
        let db = tme.database_name();
        let name = tme.table_name();
        let schema = &self.cfg.schema;
        let id = tme.table_id();
        if db == schema.database.as_str() && name == schema.name.as_str() {
            if !self.decoders.contains_key(&id) {
                let decoder = TableDecoder::new(tme, schema).map_err(Error::SchemaChanged)?;
                self.decoders.clear();
                self.decoders.insert(id, decoder);
            }
            self.table_id = Some(id);
        } else if db == schema.database.as_str()
            && name == self.cfg.changelog.as_str()
            && self.changelog_id != Some(id)
        {
            let decoder = TableDecoder::new(
                tme,
                &changelog_schema(&schema.database, &self.cfg.changelog),
            )
            .map_err(Error::Binlog)?;
            self.changelog_id = Some(id);
            self.changelog_decoder = Some(decoder);
        }
        Ok(())
    }

    async fn rows(&mut self, event: &Event) -> Result<bool> {
        // The table id is the first 6 bytes of the post-header: skip other tables undecoded.
        let d = event.data();
        if d.len() < 6 {
            return Ok(true);
        }
        let mut raw = [0u8; 8];
        raw[..6].copy_from_slice(&d[..6]);
        let id = u64::from_le_bytes(raw);
        let ours = self.table_id == Some(id);
        let changelog = self.changelog_id == Some(id);
        if !ours && !changelog {
            return Ok(true);
        }
        let Ok(Some(EventData::RowsEvent(rows))) = event.read_data() else {
            return Err(Error::Binlog(format!(
                "undecodable rows event before {}:{}",
                self.file,
                event.header().log_pos()
            )));
        };
        let decoder = if ours {
            self.decoders.get(&id)
        } else {
            self.changelog_decoder.as_ref()
        };
        let Some(decoder) = decoder else {
            return Ok(true);
        };
        let changes = decoder.decode(&rows).map_err(|e| {
            Error::Binlog(format!(
                "decoding a row event before {}:{}: {e}",
                self.file,
                event.header().log_pos()
            ))
        })?;
        if changelog {
            for c in changes {
                if let Some(after) = c.after {
                    if let [Value::UInt(id), Value::Int(v), ..] = after.as_slice() {
                        self.pending_changelog.push((*id, *v));
                    }
                }
            }
            return Ok(true);
        }
        self.pending.extend(changes);
        if self.pending.len() >= MAX_ROWS_PER_ITEM {
            let changes = std::mem::take(&mut self.pending);
            return Ok(self.send(Item::Changes { changes, end: None }).await);
        }
        Ok(true)
    }

    async fn commit(&mut self, log_pos: u32) -> Result<bool> {
        let end = self.position(log_pos);
        if !self.pending.is_empty() {
            let changes = std::mem::take(&mut self.pending);
            if !self
                .send(Item::Changes {
                    changes,
                    end: Some(end.clone()),
                })
                .await
            {
                return Ok(false);
            }
        }
        for (id, value) in std::mem::take(&mut self.pending_changelog) {
            let item = match id {
                HEARTBEAT_ID => Item::Heartbeat {
                    micros: value,
                    end: end.clone(),
                },
                MARKER_ID => Item::Marker {
                    token: value,
                    end: end.clone(),
                },
                _ => continue,
            };
            if !self.send(item).await {
                return Ok(false);
            }
        }
        // The whole transaction is handed over: a reconnect may start after it.
        self.last_end = end;
        Ok(true)
    }

    async fn send(&self, item: Item) -> bool {
        let rows = match &item {
            Item::Changes { changes, .. } => changes.len() as u64,
            _ => 0,
        };
        self.progress
            .backlog_events
            .fetch_add(rows, Ordering::Relaxed);
        self.tx.send(item).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use mysql_common::binlog::consts::BinlogVersion;
    use mysql_common::binlog::events::{BinlogEventFooter, FormatDescriptionEvent};

    use super::*;

    /// An XID event (type 16) with the given trailing checksum bytes.
    fn xid_event(fde: &FormatDescriptionEvent<'_>, checksum: [u8; 4]) -> Event {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&1_700_000_000u32.to_le_bytes()); // timestamp
        bytes.push(XID);
        bytes.extend_from_slice(&1u32.to_le_bytes()); // server id
        bytes.extend_from_slice(&31u32.to_le_bytes()); // event size: 19 + 8 + 4
        bytes.extend_from_slice(&1234u32.to_le_bytes()); // log pos
        bytes.extend_from_slice(&0u16.to_le_bytes()); // flags
        bytes.extend_from_slice(&42u64.to_le_bytes()); // xid
        bytes.extend_from_slice(&checksum);
        Event::read(fde, &bytes[..]).expect("well-formed event")
    }

    #[test]
    fn detects_a_corrupted_event() {
        let fde = FormatDescriptionEvent::new(BinlogVersion::Version4).with_footer(
            BinlogEventFooter::new(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32),
        );
        let probe = xid_event(&fde, [0; 4]);
        let good = probe
            .calc_checksum(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32)
            .to_le_bytes();
        assert!(verify_checksum(&xid_event(&fde, good), true, "binlog.000001").is_ok());
        let mut bad = good;
        bad[0] ^= 0x01;
        let err = verify_checksum(&xid_event(&fde, bad), true, "binlog.000001").unwrap_err();
        assert!(
            err.to_string()
                .contains("checksum mismatch in binlog.000001 before position 1234"),
            "{err}"
        );
        // Before the format description nothing can be checked.
        assert!(verify_checksum(&xid_event(&fde, bad), false, "binlog.000001").is_ok());
    }
}
