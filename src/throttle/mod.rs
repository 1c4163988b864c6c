//! The throttle gate: copying waits between chunks while any throttle source is active.
//!
//! A source is a [`Switch`]: on with a reason, or off. Today's sources are the per-migration
//! pause and the daemon-wide switch; replica lag, load, schedules and custom checks become more
//! switches fed by their own probes, without the copier knowing about them.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// One throttle source: `Some(reason)` while it throttles.
#[derive(Clone)]
pub struct Switch {
    tx: Arc<watch::Sender<Option<String>>>,
}

impl Default for Switch {
    fn default() -> Self {
        Switch {
            tx: Arc::new(watch::channel(None).0),
        }
    }
}

impl Switch {
    pub fn set(&self, reason: Option<String>) {
        self.tx.send_replace(reason);
    }

    pub fn reason(&self) -> Option<String> {
        self.tx.borrow().clone()
    }

    fn subscribe(&self) -> watch::Receiver<Option<String>> {
        self.tx.subscribe()
    }
}

/// The set of sources one migration obeys.
#[derive(Clone, Default)]
pub struct Throttle {
    sources: Vec<(String, watch::Receiver<Option<String>>)>,
}

impl Throttle {
    pub fn new() -> Throttle {
        Throttle::default()
    }

    pub fn with_source(mut self, name: &str, switch: &Switch) -> Throttle {
        self.sources.push((name.to_string(), switch.subscribe()));
        self
    }

    /// Active sources as `name: reason`.
    pub fn reasons(&self) -> Vec<String> {
        self.sources
            .iter()
            .filter_map(|(name, rx)| rx.borrow().as_ref().map(|r| format!("{name}: {r}")))
            .collect()
    }

    pub fn is_throttled(&self) -> bool {
        self.sources.iter().any(|(_, rx)| rx.borrow().is_some())
    }

    /// Waits until no source throttles. Cancellation ends the wait with [`Error::Cancelled`].
    pub async fn wait_clear(&self, cancel: &CancellationToken) -> Result<()> {
        while self.is_throttled() {
            tokio::select! {
                _ = cancel.cancelled() => return Err(Error::Cancelled),
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
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
        pause.set(Some("operator".into()));
        cancel.cancel();
        assert!(matches!(t.wait_clear(&cancel).await, Err(Error::Cancelled)));
    }
}
