//! The options of one migration: what operators set at start (and some live), with limits.
//! Field names are part of the HTTP API.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::throttle::{validate_query, PeakWindow, ThrottleSettings};

/// Options of one migration. Field names are part of the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MigrationOptions {
    pub chunk_size: u64,
    /// After each chunk the copy pauses this percentage of the chunk's duration (gh-ost's
    /// nice-ratio x 100): 100 copies at most half the time. Trades speed for the
    /// application's latency on a busy server.
    pub nice_percent: u32,
    pub postpone_cutover: bool,
    pub keep_old_table: bool,
    pub cutover_lock_timeout_secs: u64,
    pub cutover_attempts: u32,
    pub allow_renamed_columns: bool,
    pub max_lag_millis: Option<u64>,
    pub max_load: BTreeMap<String, u64>,
    pub critical_load: BTreeMap<String, u64>,
    /// Consecutive `critical_load` hits before acting.
    pub critical_load_hits: u32,
    /// `fail` (default) or `pause`.
    pub critical_load_action: CriticalLoadAction,
    /// Windows during which the migration pauses, in addition to the target's.
    pub peak_windows: Vec<PeakWindow>,
    /// A single SELECT; a non-zero first value throttles.
    pub throttle_query: Option<String>,
    /// An http:// URL; anything but a 2xx answer within a second throttles.
    pub check_url: Option<String>,
    /// After `cutover_attempts` failed: `fail` (default) or `postpone` (wait for another go).
    pub cutover_give_up: CutoverGiveUp,
    /// Kill sessions that block the cut-over's lock after this many seconds (off by default).
    pub kill_blockers_after_secs: Option<u64>,
    /// How long the server may be unreachable (reconnecting with backoff) before the
    /// migration fails.
    pub reconnect_timeout_secs: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CutoverGiveUp {
    #[default]
    Fail,
    Postpone,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CriticalLoadAction {
    #[default]
    Fail,
    Pause,
}

impl From<&MigrationOptions> for ThrottleSettings {
    fn from(o: &MigrationOptions) -> ThrottleSettings {
        ThrottleSettings {
            max_lag_millis: o.max_lag_millis,
            max_load: o.max_load.clone(),
            critical_load: o.critical_load.clone(),
            critical_load_hits: o.critical_load_hits,
            critical_load_pause: o.critical_load_action == CriticalLoadAction::Pause,
            peak_windows: o.peak_windows.clone(),
            throttle_query: o.throttle_query.clone(),
            check_url: o.check_url.clone(),
        }
    }
}

impl Default for MigrationOptions {
    fn default() -> Self {
        MigrationOptions {
            chunk_size: 10_000,
            nice_percent: 0,
            postpone_cutover: false,
            keep_old_table: true,
            cutover_lock_timeout_secs: 3,
            cutover_attempts: 5,
            allow_renamed_columns: false,
            max_lag_millis: None,
            max_load: BTreeMap::new(),
            critical_load: BTreeMap::new(),
            critical_load_hits: 3,
            critical_load_action: CriticalLoadAction::Fail,
            peak_windows: Vec::new(),
            throttle_query: None,
            check_url: None,
            reconnect_timeout_secs: 120,
            cutover_give_up: CutoverGiveUp::Fail,
            kill_blockers_after_secs: None,
        }
    }
}

impl MigrationOptions {
    /// Refuses option values that cannot work, naming the option.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(1..=1_000_000).contains(&self.chunk_size) {
            return Err("chunk_size must be between 1 and 1000000".into());
        }
        if self.nice_percent > 10_000 {
            return Err("nice_percent must be between 0 and 10000".into());
        }
        if !(1..=3600).contains(&self.cutover_lock_timeout_secs) {
            return Err("cutover_lock_timeout_secs must be between 1 and 3600".into());
        }
        if !(1..=100).contains(&self.cutover_attempts) {
            return Err("cutover_attempts must be between 1 and 100".into());
        }
        if !(1..=86_400).contains(&self.reconnect_timeout_secs) {
            return Err("reconnect_timeout_secs must be between 1 and 86400".into());
        }
        if !(1..=1000).contains(&self.critical_load_hits) {
            return Err("critical_load_hits must be between 1 and 1000".into());
        }
        for w in &self.peak_windows {
            w.validate()?;
        }
        if let Some(q) = &self.throttle_query {
            validate_query(q)?;
        }
        if let Some(u) = &self.check_url {
            if !u.starts_with("http://") {
                return Err("check_url must be an http:// URL".into());
            }
        }
        Ok(())
    }
}
