//! The throttle gate: copying waits between chunks while any throttle source is active.
//!
//! A source is a [`Switch`]: on with a reason, or off. The per-migration pause and the
//! daemon-wide switch are set by operators; replica lag, load, peak windows and custom checks
//! are switches fed by probes (`probes`), so the copier only ever sees the gate. Each switch
//! keeps the time it spent on, for the metrics.

mod custom;
mod load;
mod probes;
mod replica;
mod schedule;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use custom::validate_query;
pub use probes::{spawn_probes, ProbeContext, ProbeSwitches, ThrottleSettings};
pub use schedule::PeakWindow;

use crate::error::{Error, Result};

/// One throttle source: `Some(reason)` while it throttles.
#[derive(Clone)]
pub struct Switch {
    tx: Arc<watch::Sender<Option<String>>>,
    /// Time spent throttling before the current stretch, and when the current one began.
    on_time: Arc<Mutex<(Duration, Option<Instant>)>>,
}

impl Default for Switch {
    fn default() -> Self {
        Switch {
            tx: Arc::new(watch::channel(None).0),
            on_time: Arc::new(Mutex::new((Duration::ZERO, None))),
        }
    }
}

impl Switch {
    pub fn set(&self, reason: Option<String>) {
        let mut t = self.on_time.lock().unwrap_or_else(|p| p.into_inner());
        match (&reason, t.1) {
            (Some(_), None) => t.1 = Some(Instant::now()),
            (None, Some(since)) => {
                t.0 += since.elapsed();
                t.1 = None;
            }
            _ => {}
        }
        drop(t);
        self.tx.send_replace(reason);
    }

    /// Total time this source has throttled, the current stretch included.
    pub fn throttled_for(&self) -> Duration {
        let t = self.on_time.lock().unwrap_or_else(|p| p.into_inner());
        t.0 + t.1.map(|s| s.elapsed()).unwrap_or_default()
    }

    pub fn reason(&self) -> Option<String> {
        self.tx.borrow().clone()
    }

    fn subscribe(&self) -> watch::Receiver<Option<String>> {
        self.tx.subscribe()
    }
}

/// The state of one source, for status and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceStatus {
    pub name: String,
    pub reason: Option<String>,
    pub throttled_seconds: f64,
}

/// The set of sources one migration obeys, and what its probes need: the replicas to watch
/// and, when the caller tunes them live, the throttle settings.
#[derive(Clone, Default)]
pub struct Throttle {
    sources: Vec<(String, Switch, watch::Receiver<Option<String>>)>,
    replicas: Vec<crate::conn::ConnSettings>,
    settings: Option<watch::Receiver<ThrottleSettings>>,
}

impl Throttle {
    pub fn new() -> Throttle {
        Throttle::default()
    }

    pub fn with_source(mut self, name: &str, switch: &Switch) -> Throttle {
        self.sources
            .push((name.to_string(), switch.clone(), switch.subscribe()));
        self
    }

    /// Replicas whose lag this migration watches (`max_lag_millis`).
    pub fn with_replicas(mut self, replicas: Vec<crate::conn::ConnSettings>) -> Throttle {
        self.replicas = replicas;
        self
    }

    /// Live throttle settings; without them the migration's start options apply throughout.
    pub fn with_settings(mut self, settings: watch::Receiver<ThrottleSettings>) -> Throttle {
        self.settings = Some(settings);
        self
    }

    /// The switch registered under `name` (e.g. "manual", which critical load may set).
    pub fn source(&self, name: &str) -> Option<Switch> {
        self.sources
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, s, _)| s.clone())
    }

    pub fn replicas(&self) -> &[crate::conn::ConnSettings] {
        &self.replicas
    }

    pub fn settings(&self) -> Option<watch::Receiver<ThrottleSettings>> {
        self.settings.clone()
    }

    /// Active sources as `name: reason`.
    pub fn reasons(&self) -> Vec<String> {
        self.sources
            .iter()
            .filter_map(|(name, _, rx)| rx.borrow().as_ref().map(|r| format!("{name}: {r}")))
            .collect()
    }

    /// Every source with its reason and the seconds it has throttled.
    pub fn sources(&self) -> Vec<SourceStatus> {
        self.sources
            .iter()
            .map(|(name, switch, rx)| SourceStatus {
                name: name.clone(),
                reason: rx.borrow().clone(),
                throttled_seconds: switch.throttled_for().as_secs_f64(),
            })
            .collect()
    }

    pub fn is_throttled(&self) -> bool {
        self.sources.iter().any(|(_, _, rx)| rx.borrow().is_some())
    }

    /// Logs when throttling starts and ends, with every active reason.
    pub fn log_transition(&self, was: &mut bool) {
        let now = self.is_throttled();
        if now != *was {
            if now {
                info!(reasons = ?self.reasons(), "throttling started: copying pauses between chunks");
            } else {
                info!("throttling ended: copying resumes");
            }
            *was = now;
        }
    }

    /// Waits until no source throttles. Cancellation ends the wait with [`Error::Cancelled`].
    pub async fn wait_clear(&self, cancel: &CancellationToken) -> Result<()> {
        let mut logged = false;
        self.log_transition(&mut logged);
        while self.is_throttled() {
            tokio::select! {
                _ = cancel.cancelled() => return Err(Error::Cancelled),
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        self.log_transition(&mut logged);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_while_any_source_is_on() {
        let pause = Switch::default();
        let global = Switch::default();
        let t = Throttle::new()
            .with_source("manual", &pause)
            .with_source("global", &global);
        assert!(!t.is_throttled());
        global.set(Some("peak hours".into()));
        assert_eq!(t.reasons(), vec!["global: peak hours".to_string()]);
        let cancel = CancellationToken::new();
        let waiter = {
            let t = t.clone();
            let c = cancel.clone();
            tokio::spawn(async move { t.wait_clear(&c).await })
        };
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(!waiter.is_finished());
        global.set(None);
        assert!(waiter.await.unwrap().is_ok());
        let on = global.throttled_for();
        assert!(on >= Duration::from_millis(100), "{on:?}");
        assert_eq!(t.sources()[1].name, "global");
        assert!(t.sources()[1].reason.is_none());
        pause.set(Some("operator".into()));
        cancel.cancel();
        assert!(matches!(t.wait_clear(&cancel).await, Err(Error::Cancelled)));
    }
}
