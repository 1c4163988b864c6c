//! Peak windows: named stretches of the week (days, time range, time zone) during which
//! migrations pause. The operator's peak-hours switch, without anyone at the keyboard.

use chrono::{DateTime, Datelike, NaiveTime, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeakWindow {
    pub name: String,
    /// `mon` .. `sun`; empty means every day.
    #[serde(default)]
    pub days: Vec<String>,
    /// `HH:MM`, local to `time_zone`; a window may cross midnight (`22:00`-`02:00`).
    pub start: String,
    pub end: String,
    /// IANA name (`Europe/Berlin`) or `UTC`.
    #[serde(default = "utc")]
    pub time_zone: String,
}

fn utc() -> String {
    "UTC".to_string()
}

fn weekday(s: &str) -> Option<Weekday> {
    s.get(..3)?.parse().ok()
}

impl PeakWindow {
    /// Refuses unknown days, times and zones, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        self.parts().map(|_| ())
    }

    fn parts(&self) -> Result<(Vec<Weekday>, NaiveTime, NaiveTime, Tz), String> {
        let days = self
            .days
            .iter()
            .map(|d| {
                weekday(d).ok_or_else(|| {
                    format!(
                        "peak window {}: unknown day {d:?} (use mon..sun)",
                        self.name
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let time = |t: &str| {
            NaiveTime::parse_from_str(t, "%H:%M")
                .map_err(|_| format!("peak window {}: time {t:?} is not HH:MM", self.name))
        };
        let tz: Tz = self.time_zone.parse().map_err(|_| {
            format!(
                "peak window {}: unknown time zone {:?} (use an IANA name such as Europe/Berlin)",
                self.name, self.time_zone
            )
        })?;
        Ok((days, time(&self.start)?, time(&self.end)?, tz))
    }

    /// Whether `now` falls inside the window.
    pub fn contains(&self, now: DateTime<Utc>) -> Result<bool, String> {
        let (days, start, end, tz) = self.parts()?;
        let local = now.with_timezone(&tz);
        let t = local.time();
        let today = local.weekday();
        let day_ok = |d: Weekday| days.is_empty() || days.contains(&d);
        Ok(if start <= end {
            day_ok(today) && t >= start && t < end
        } else {
            // Crossing midnight: the evening part belongs to today, the morning part to the
            // window that started yesterday.
            (day_ok(today) && t >= start) || (day_ok(today.pred()) && t < end)
        })
    }
}

/// The first window that contains `now`, as a throttle reason.
pub fn active_window(windows: &[PeakWindow], now: DateTime<Utc>) -> Option<String> {
    windows.iter().find_map(|w| match w.contains(now) {
        Ok(true) => Some(format!(
            "peak window {} ({}-{} {})",
            w.name, w.start, w.end, w.time_zone
        )),
        Ok(false) => None,
        Err(e) => Some(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn w(days: &[&str], start: &str, end: &str, tz: &str) -> PeakWindow {
        PeakWindow {
            name: "peak".into(),
            days: days.iter().map(|d| d.to_string()).collect(),
            start: start.into(),
            end: end.into(),
            time_zone: tz.into(),
        }
    }

    #[test]
    fn windows_by_day_time_and_zone() {
        // Sunday 2026-11-22 10:30 UTC = 11:30 in Berlin.
        let now = Utc.with_ymd_and_hms(2026, 11, 22, 10, 30, 0).unwrap();
        assert!(w(&[], "10:00", "11:00", "UTC").contains(now).unwrap());
        assert!(!w(&[], "10:00", "11:00", "Europe/Berlin")
            .contains(now)
            .unwrap());
        assert!(w(&["sun"], "11:00", "12:00", "Europe/Berlin")
            .contains(now)
            .unwrap());
        assert!(!w(&["mon", "tue"], "00:00", "23:59", "UTC")
            .contains(now)
            .unwrap());
        // Crossing midnight: Saturday 22:00 to 02:00 covers Sunday 01:00 but not Sunday 03:00.
        let sat_night = w(&["sat"], "22:00", "02:00", "UTC");
        assert!(sat_night
            .contains(Utc.with_ymd_and_hms(2026, 11, 22, 1, 0, 0).unwrap())
            .unwrap());
        assert!(!sat_night
            .contains(Utc.with_ymd_and_hms(2026, 11, 22, 3, 0, 0).unwrap())
            .unwrap());
        assert!(w(&["xyz"], "10:00", "11:00", "UTC")
            .validate()
            .unwrap_err()
            .contains("unknown day"));
        assert!(w(&[], "25:00", "11:00", "UTC")
            .validate()
            .unwrap_err()
            .contains("not HH:MM"));
        assert!(w(&[], "10:00", "11:00", "Mars/Base")
            .validate()
            .unwrap_err()
            .contains("unknown time zone"));
        assert_eq!(
            active_window(&[w(&[], "10:00", "11:00", "UTC")], now).unwrap(),
            "peak window peak (10:00-11:00 UTC)"
        );
    }
}
