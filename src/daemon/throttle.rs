//! The global throttle: one switch every migration on every target obeys (peak load, incidents).
//!
//! It is the engine's `global` throttle [`Switch`], plus what the API shows about it (reason,
//! since when, until when). An `until` in the past is refused; once it passes, the registry's
//! ticker calls [`GlobalThrottle::expire`] and the switch turns off by itself.

use std::sync::Mutex;
use std::time::SystemTime;

use super::model::{rfc3339, ThrottleView};
use crate::throttle::Switch;

#[derive(Debug, Clone)]
struct Info {
    reason: String,
    since: SystemTime,
    until: Option<SystemTime>,
}

#[derive(Default)]
pub struct GlobalThrottle {
    switch: Switch,
    info: Mutex<Option<Info>>,
}

impl GlobalThrottle {
    /// The switch migrations subscribe to.
    pub fn switch(&self) -> &Switch {
        &self.switch
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Info>> {
        self.info.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Turns the throttle on (or changes its reason and end).
    pub fn set(&self, reason: String, until: Option<SystemTime>) {
        let mut info = self.lock();
        let since = info.as_ref().map_or_else(SystemTime::now, |i| i.since);
        self.switch.set(Some(reason.clone()));
        *info = Some(Info {
            reason,
            since,
            until,
        });
    }

    pub fn clear(&self) {
        let mut info = self.lock();
        self.switch.set(None);
        *info = None;
    }

    /// Turns the throttle off if its `until` has passed; true when it did.
    pub fn expire(&self, now: SystemTime) -> bool {
        let mut info = self.lock();
        if info
            .as_ref()
            .and_then(|i| i.until)
            .is_some_and(|until| until <= now)
        {
            self.switch.set(None);
            *info = None;
            return true;
        }
        false
    }

    pub fn is_on(&self) -> bool {
        self.lock().is_some()
    }

    pub fn view(&self) -> ThrottleView {
        match &*self.lock() {
            Some(i) => ThrottleView {
                active: true,
                reason: Some(i.reason.clone()),
                until: i.until.map(rfc3339),
                since: Some(rfc3339(i.since)),
            },
            None => ThrottleView {
                active: false,
                reason: None,
                until: None,
                since: None,
            },
        }
    }
}
