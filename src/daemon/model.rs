//! The API's JSON documents, shared by the daemon and the CLI client.
//!
//! Field names here are the HTTP API (and `docs/openapi.yaml` documents them): rename nothing.
//! Timestamps are RFC 3339 strings in UTC; [`rfc3339`] and [`parse_rfc3339`] convert them
//! without a time-zone database.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::civil_from_days;
use crate::migration::MigrationOptions;

/// `POST /v1/migrations`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub database: String,
    pub table: String,
    pub alter: String,
    /// Options over the daemon's defaults, key by key (validated as [`MigrationOptions`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<serde_json::Map<String, Value>>,
}

/// A migration as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MigrationView {
    pub id: String,
    pub target: String,
    pub database: String,
    pub table: String,
    pub alter: String,
    pub state: String,
    /// Finer progress inside the state (`copying`, `catching_up`, ...); null for history.
    pub step: Option<String>,
    pub paused: bool,
    /// True while any throttle source is active.
    pub throttled: bool,
    /// Every active source as `source: reason` (with its measured value), joined by `; `.
    pub throttle_reason: Option<String>,
    /// Every source the migration obeys, active or not; empty for history.
    #[serde(default)]
    pub throttle_sources: Vec<ThrottleSourceView>,
    pub rows_copied: u64,
    pub rows_estimate: u64,
    pub progress: f64,
    pub eta_seconds: Option<u64>,
    pub replay_lag_seconds: Option<f64>,
    pub backlog_events: u64,
    pub chunk_size: u64,
    pub cutover_attempts: u64,
    /// True once `/cutover` gave the go for a postponed cut-over.
    pub cutover_requested: bool,
    /// True once `/cancel` was accepted and the migration is stopping.
    pub cancel_requested: bool,
    /// True when the daemon stopped (or died) while the migration was active.
    pub interrupted: bool,
    pub error: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub options: MigrationOptions,
    pub shadow_table: Option<String>,
    pub old_table: Option<String>,
    /// Lost connections (queries or binlog) re-established, over every run of the migration.
    #[serde(default)]
    pub reconnects: u64,
    /// The last checkpoint saved on the target: where a resume after a crash continues.
    #[serde(default)]
    pub checkpoint: Option<CheckpointView>,
    /// How often the daemon continued the migration after a stop or crash.
    #[serde(default)]
    pub resume_count: u32,
    #[serde(default)]
    pub resumed_at: Option<String>,
    /// The failed or cancelled migration this one starts again from scratch.
    #[serde(default)]
    pub restarted_from: Option<String>,
    /// Sessions that held the table when the last cut-over attempt could not lock it.
    #[serde(default)]
    pub cutover_blockers: Vec<BlockerView>,
}

/// A saved checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckpointView {
    /// Every row with a key at or below this was copied; null before the first chunk.
    pub copy_watermark: Option<Vec<Value>>,
    pub copy_done: bool,
    pub rows_copied: u64,
    /// The end of the last transaction fully applied to the shadow table.
    pub binlog_file: String,
    pub binlog_pos: u64,
    pub gtid: Option<String>,
    /// When the checkpoint was taken.
    pub at: String,
}

/// A session that may hold the table's metadata lock.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BlockerView {
    pub id: u64,
    pub user: String,
    pub host: String,
    /// Seconds in its current state (transaction age where known).
    pub time_secs: u64,
    pub state: Option<String>,
    pub query: Option<String>,
}

/// One throttle source of a migration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ThrottleSourceView {
    /// `manual`, `global`, `replica_lag`, `load`, `schedule` or `custom`.
    pub name: String,
    pub active: bool,
    pub reason: Option<String>,
    /// Seconds this source has throttled the migration so far.
    pub throttled_seconds: f64,
}

/// `GET /v1/migrations`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MigrationList {
    pub migrations: Vec<MigrationView>,
}

/// `POST /v1/throttle`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleRequest {
    pub reason: String,
    /// RFC 3339 time at which the throttle lifts by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

/// The global throttle as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ThrottleView {
    pub active: bool,
    pub reason: Option<String>,
    pub until: Option<String>,
    pub since: Option<String>,
}

/// `{"error": {...}}`, every error response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    /// The failed precondition, for 422 `precondition_failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    /// The migration in the way, for 409 `table_busy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_id: Option<String>,
}

fn epoch_parts(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_micros()),
        Err(_) => (0, 0),
    }
}

/// `2024-03-01T12:00:00.123456Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let (secs, micros) = epoch_parts(t);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (inverse of `civil_from_days`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `YYYY-MM-DD[T ]hh:mm:ss[.frac](Z|±hh:mm)`; `None` when it is not that.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut micros = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits: String = frac.chars().take_while(|c| c.is_ascii_digit()).collect();
        if digits.is_empty() {
            return None;
        }
        let six: String = digits
            .chars()
            .chain(std::iter::repeat('0'))
            .take(6)
            .collect();
        micros = six.parse().ok()?;
        rest = &frac[digits.len()..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset;
    if secs < 0 {
        return None;
    }
    Some(UNIX_EPOCH + Duration::from_secs(secs as u64) + Duration::from_micros(micros as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let t = UNIX_EPOCH + Duration::from_micros(1_709_294_400_123_456);
        let s = rfc3339(t);
        assert_eq!(s, "2024-03-01T12:00:00.123456Z");
        assert_eq!(parse_rfc3339(&s), Some(t));
        assert_eq!(
            parse_rfc3339("2024-03-01T13:30:00+01:30"),
            Some(UNIX_EPOCH + Duration::from_secs(1_709_294_400))
        );
        assert_eq!(parse_rfc3339("2024-03-01"), None);
        assert_eq!(parse_rfc3339("2024-13-01T00:00:00Z"), None);
    }
}
