//! The API view of an entry: the stored record's fields, the live numbers the record does
//! not hold, and the last saved checkpoint in a readable form.

use mysql_async::Value as SqlValue;
use serde_json::Value;

use super::{Entry, Live};
use crate::daemon::model::{
    rfc3339, BlockerView, CheckpointView, MigrationView, ThrottleSourceView,
};
use crate::migration::Checkpoint;
use crate::progress::Progress;
use crate::state::{State, Step};

impl Entry {
    /// The API view.
    pub fn view(&self) -> MigrationView {
        let r = self.record();
        let blockers = self.live().map(blockers).unwrap_or_default();
        let m = self.lock();
        let sources = self
            .live()
            .map(|l| Self::sources(l, &m))
            .unwrap_or_default();
        // As the engine words them: `source: reason`, every active source.
        let reasons: Vec<String> = sources
            .iter()
            .filter_map(|s| s.reason.as_ref().map(|r| format!("{}: {r}", s.name)))
            .collect();
        let (step, paused, lag, backlog, chunk, cutover_go, progress) = match self.live() {
            Some(l) => {
                let p = &l.progress;
                let chunk = Progress::get(&p.chunk_size);
                (
                    Some(p.status().step),
                    l.pause.reason().is_some(),
                    p.replay_lag()
                        .filter(|_| !r.state.is_terminal())
                        .map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0),
                    Progress::get(&p.backlog_events),
                    if chunk == 0 {
                        m.options.chunk_size
                    } else {
                        chunk
                    },
                    *l.cutover_go.borrow(),
                    p.percent(),
                )
            }
            None => {
                let pct = match r.state {
                    State::Completed => 100.0,
                    _ if r.rows_estimate > 0 => {
                        (r.rows_copied as f64 * 100.0 / r.rows_estimate as f64).min(99.9)
                    }
                    _ => 0.0,
                };
                let go = !r.options.postpone_cutover;
                (None, false, None, 0, r.options.chunk_size, go, pct)
            }
        };
        let eta = match (r.state, step) {
            (State::Completed, _) => Some(0),
            (State::Running, Some(Step::Copying)) if m.rate > 1.0 => {
                Some((r.rows_estimate.saturating_sub(r.rows_copied) as f64 / m.rate).ceil() as u64)
            }
            _ => None,
        };
        MigrationView {
            id: r.id,
            target: r.target,
            database: r.database,
            table: r.table,
            alter: r.alter,
            state: r.state.as_str().to_string(),
            step: step.map(step_name),
            paused,
            throttled: !reasons.is_empty(),
            throttle_reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
            throttle_sources: sources
                .into_iter()
                .map(|s| ThrottleSourceView {
                    active: s.reason.is_some(),
                    name: s.name,
                    reason: s.reason,
                    throttled_seconds: (s.throttled_seconds * 1000.0).round() / 1000.0,
                })
                .collect(),
            rows_copied: r.rows_copied,
            rows_estimate: r.rows_estimate,
            progress: (progress * 10.0).round() / 10.0,
            eta_seconds: eta,
            replay_lag_seconds: lag,
            backlog_events: backlog,
            chunk_size: chunk,
            cutover_attempts: r.cutover_attempts,
            cutover_requested: r.options.postpone_cutover && cutover_go,
            cancel_requested: m.cancel_requested,
            interrupted: r.interrupted,
            error: r.error,
            created_at: rfc3339(r.created_at),
            started_at: r.started_at.map(rfc3339),
            finished_at: r.finished_at.map(rfc3339),
            options: r.options,
            shadow_table: r.shadow_table,
            old_table: r.old_table,
            reconnects: r.reconnects,
            checkpoint: m
                .persisted
                .as_ref()
                .map(|(cp, at)| checkpoint_view(cp, *at)),
            resume_count: m.resume_count,
            resumed_at: m.resumed_at.map(rfc3339),
            restarted_from: r.restarted_from,
            cutover_blockers: blockers,
        }
    }
}

/// The step's API name (its serde name).
fn step_name(step: Step) -> String {
    serde_json::to_value(step)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_else(|| format!("{step:?}"))
}

/// The sessions that held the table at the last cut-over attempt that could not lock it,
/// while the migration is cutting over or waits for another go.
fn blockers(live: &Live) -> Vec<BlockerView> {
    let st = live.progress.status();
    if st.state.is_terminal() {
        return Vec::new();
    }
    st.cutover_blockers
        .into_iter()
        .map(|b| BlockerView {
            id: b.id,
            user: b.user,
            host: b.host,
            time_secs: b.time_secs,
            state: b.state,
            query: b.query,
        })
        .collect()
}

/// A checkpoint as the API shows it: key values as plain JSON (numbers, text, or `0x` hex for
/// binary strings), the binlog position split into its parts.
pub(crate) fn checkpoint_view(cp: &Checkpoint, at: std::time::SystemTime) -> CheckpointView {
    let key = cp
        .watermark_values()
        .ok()
        .flatten()
        .map(|values| values.iter().map(key_json).collect::<Vec<Value>>());
    CheckpointView {
        copy_watermark: key,
        copy_done: cp.copy_done,
        rows_copied: cp.rows_copied,
        binlog_file: cp.applied.file.clone(),
        binlog_pos: cp.applied.pos,
        gtid: cp.applied.gtid.clone(),
        at: rfc3339(at),
    }
}

fn key_json(v: &SqlValue) -> Value {
    match v {
        SqlValue::NULL => Value::Null,
        SqlValue::Int(i) => Value::from(*i),
        SqlValue::UInt(u) => Value::from(*u),
        SqlValue::Float(f) => Value::from(f64::from(*f)),
        SqlValue::Double(f) => Value::from(*f),
        SqlValue::Bytes(b) => match std::str::from_utf8(b) {
            Ok(s) => Value::from(s),
            Err(_) => Value::from(format!(
                "0x{}",
                b.iter().map(|x| format!("{x:02x}")).collect::<String>()
            )),
        },
        SqlValue::Date(y, mo, d, h, mi, s, us) => Value::from(format!(
            "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}"
        )),
        SqlValue::Time(neg, d, h, mi, s, us) => Value::from(format!(
            "{}{}:{mi:02}:{s:02}.{us:06}",
            if *neg { "-" } else { "" },
            u64::from(*d) * 24 + u64::from(*h)
        )),
    }
}
