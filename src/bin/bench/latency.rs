//! A fixed-rate sysbench `oltp_write_only` run that ends when the bench asks, with sysbench's
//! own final report: transactions, errors and the latency histogram, from which p95 and p99
//! are computed exactly the way sysbench computes its percentile.
//!
//! sysbench 1.0 ignores SIGINT and prints its final report only when its threads end by
//! themselves. Its Lua event loop (`thread_run`) ends a thread when `event()` returns true, so
//! the wrapper script returns true, without running a transaction, once a stop file exists:
//! the run ends within one transaction interval of the bench's request, with the complete
//! report and histogram. With `--rate`, sysbench's latency of a transaction runs from the
//! moment it was due, not from the moment a thread picked it up: a stall counts for every
//! transaction it delayed, as an application with a fixed arrival rate would see it. The
//! per-second interim reports (`--report-interval=1`, p99 with `--percentile=99`) are kept,
//! timestamped as they arrive, for the time series.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;
use tokio::task::JoinHandle;

use crate::writers::{Load, Target};

/// Marks an error line printed by the wrapper script.
const ERROR_TAG: &str = "BENCH-PACED-ERROR";

/// sysbench's `oltp_write_only`, unchanged, except that every thread stops once `stop_file`
/// exists, and that the first errors each thread sees are printed (sysbench prints none of
/// the errors it ignores).
fn wrapper_script(stop_file: &Path) -> String {
    // A Lua long string: the temp dir path holds no "]]".
    format!(
        r#"-- Written by shadowcut's bench: sysbench's oltp_write_only, stopped by a file.
require("oltp_write_only")
local stop_file = [[{stop}]]
local inner_event = event
function event()
   local f = io.open(stop_file, "r")
   if f then
      f:close()
      return true -- sysbench's thread_run ends this thread's loop
   end
   inner_event()
end
{error_hook}"#,
        stop = stop_file.display(),
        error_hook = crate::writers::lua_error_hook(ERROR_TAG)
    )
}

/// sysbench's latency histogram: (bucket value in ms, count), in increasing order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram(pub Vec<(f64, u64)>);

impl Histogram {
    pub fn count(&self) -> u64 {
        self.0.iter().map(|(_, n)| n).sum()
    }

    /// The `p`th percentile in ms, as sysbench computes it: the value of the first bucket at
    /// which the running count reaches `round(count * p / 100)`.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let needed = ((total as f64 * p / 100.0) + 0.5).floor() as u64;
        let mut seen = 0;
        for (value, n) in &self.0 {
            seen += n;
            if seen >= needed {
                return Some(*value);
            }
        }
        self.0.last().map(|(v, _)| *v)
    }
}

/// One per-second interim report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interim {
    pub at: Instant,
    pub tps: f64,
    /// The second's latency percentile (`--percentile`, 99 here), in ms.
    pub pct_ms: f64,
}

/// Parses `[ 2s ] thds: 2 tps: 201.05 qps: ... lat (ms,99%): 3.26 err/s: 0.00 reconn/s: 0.00`.
fn parse_interim(line: &str, at: Instant) -> Option<Interim> {
    let rest = line.trim_start().strip_prefix('[')?;
    let (_, rest) = rest.split_once("s ]")?;
    let tokens: Vec<&str> = rest.split_whitespace().collect();
    let after = |pred: &dyn Fn(&str) -> bool| -> Option<f64> {
        let i = tokens.iter().position(|t| pred(t))?;
        tokens.get(i + 1)?.parse().ok()
    };
    Some(Interim {
        at,
        tps: after(&|t| t == "tps:")?,
        pct_ms: after(&|t| t.starts_with("(ms,") && t.ends_with("%):"))?,
    })
}

/// What sysbench's final report says about the run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// sysbench's `total time`, in seconds.
    pub secs: f64,
    pub transactions: u64,
    pub errors: u64,
    pub reconnects: u64,
    /// sysbench's own percentile (`--percentile`), in ms, to cross-check the histogram.
    pub sysbench_pct_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub histogram: Histogram,
}

impl Summary {
    pub fn tps(&self) -> f64 {
        if self.secs > 0.0 {
            self.transactions as f64 / self.secs
        } else {
            0.0
        }
    }
}

/// The first number in `line` after `key`, e.g. `transactions:    588 (197.47 per sec.)`.
fn number_after(line: &str, key: &str) -> Option<f64> {
    let rest = line.trim_start().strip_prefix(key)?;
    let token = rest.split_whitespace().next()?;
    token.trim_end_matches('s').parse().ok()
}

/// Parses a histogram line `      16.706 |***        1`.
fn parse_bucket(line: &str) -> Option<(f64, u64)> {
    let (value, rest) = line.split_once('|')?;
    let value: f64 = value.trim().parse().ok()?;
    let count: u64 = rest.split_whitespace().last()?.parse().ok()?;
    Some((value, count))
}

/// Parses sysbench's final report (the lines that are not interim reports).
fn parse_summary(lines: &[String]) -> anyhow::Result<Summary> {
    let mut s = Summary::default();
    let mut in_histogram = false;
    let mut saw_total = false;
    for line in lines {
        let t = line.trim();
        if t.starts_with("Latency histogram") {
            in_histogram = true;
            continue;
        }
        if in_histogram {
            if let Some(b) = parse_bucket(line) {
                s.histogram.0.push(b);
                continue;
            }
            if t.starts_with("value") {
                continue;
            }
            in_histogram = false;
        }
        if let Some(v) = number_after(t, "transactions:") {
            s.transactions = v as u64;
        } else if let Some(v) = number_after(t, "ignored errors:") {
            s.errors = v as u64;
        } else if let Some(v) = number_after(t, "reconnects:") {
            s.reconnects = v as u64;
        } else if let Some(v) = number_after(t, "total time:") {
            s.secs = v;
            saw_total = true;
        } else if let Some(v) = number_after(t, "max:") {
            s.max_ms = Some(v);
        } else if t.contains("th percentile:") {
            s.sysbench_pct_ms = t.rsplit(':').next().and_then(|v| v.trim().parse().ok());
        }
    }
    if !saw_total {
        bail!("sysbench printed no final report");
    }
    s.histogram.0.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(s)
}

#[derive(Default)]
struct Seen {
    interim: Vec<Interim>,
    errors: Vec<String>,
    /// Every other line (the final report, warnings), bounded.
    other: Vec<String>,
    started: bool,
}

/// What one run reported.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub summary: Summary,
    pub interim: Vec<Interim>,
    /// Distinct error messages (code and text), at most a few.
    pub messages: Vec<String>,
}

/// A running sysbench that stops when asked.
pub struct PacedRun {
    child: Child,
    stop_file: PathBuf,
    seen: Arc<Mutex<Seen>>,
    readers: Vec<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl PacedRun {
    /// Starts sysbench and waits until its threads have started. `max_secs` bounds the run in
    /// case the bench itself dies without stopping it.
    pub async fn start(
        sysbench: &Path,
        target: &Target,
        load: Load,
        max_secs: u64,
    ) -> anyhow::Result<PacedRun> {
        let dir = tempfile::Builder::new()
            .prefix("shadowcut-bench-paced-")
            .tempdir()
            .context("creating a temp dir for the sysbench script")?;
        let stop_file = dir.path().join("stop");
        let script = dir.path().join("bench_paced_write_only.lua");
        std::fs::write(&script, wrapper_script(&stop_file))
            .context("writing the sysbench script")?;
        let mut child = crate::writers::sysbench_run(
            sysbench,
            &script,
            dir.path(),
            target,
            load,
            max_secs,
            &["--percentile=99", "--histogram=on"],
        )?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stdout = child.stdout.take().context("sysbench's stdout")?;
        let stderr = child.stderr.take().context("sysbench's stderr")?;
        let readers = vec![
            tokio::spawn(read_lines(stdout, seen.clone())),
            tokio::spawn(read_lines(stderr, seen.clone())),
        ];
        let mut run = PacedRun {
            child,
            stop_file,
            seen,
            readers,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if lock(&run.seen).started {
                return Ok(run);
            }
            if let Ok(Some(status)) = run.child.try_wait() {
                let other = lock(&run.seen).other.join("\n");
                bail!("sysbench exited with {status} before its threads started:\n{other}");
            }
            if Instant::now() > deadline {
                bail!("sysbench's threads did not start within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asks sysbench to stop, waits for its final report (at most `limit`) and parses it.
    pub async fn finish(mut self, limit: Duration) -> anyhow::Result<RunReport> {
        let ended_early = match self.child.try_wait() {
            Ok(Some(status)) => Some(status),
            _ => None,
        };
        std::fs::write(&self.stop_file, b"stop").context("writing sysbench's stop file")?;
        let status = match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(r) => r.context("waiting for sysbench")?,
            Err(_) => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                bail!("sysbench did not stop within {limit:?} of the request");
            }
        };
        for r in self.readers.drain(..) {
            let _ = r.await;
        }
        let seen = std::mem::take(&mut *lock(&self.seen));
        if let Some(s) = ended_early {
            bail!(
                "sysbench ended by itself ({s}) before the bench stopped it: {:?}",
                seen.other.iter().rev().take(5).collect::<Vec<_>>()
            );
        }
        if !status.success() {
            bail!(
                "sysbench exited with {status}: {:?}",
                seen.other.iter().rev().take(5).collect::<Vec<_>>()
            );
        }
        let summary = parse_summary(&seen.other)?;
        let mut messages: Vec<String> = Vec::new();
        for m in seen.errors {
            if !messages.contains(&m) && messages.len() < 5 {
                messages.push(m);
            }
        }
        Ok(RunReport {
            summary,
            interim: seen.interim,
            messages,
        })
    }
}

fn lock(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|p| p.into_inner())
}

async fn read_lines(stream: impl tokio::io::AsyncRead + Unpin, seen: Arc<Mutex<Seen>>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let at = Instant::now();
        let mut seen = lock(&seen);
        if let Some(msg) = line.strip_prefix(ERROR_TAG) {
            seen.errors.push(msg.trim().to_string());
        } else if let Some(i) = parse_interim(&line, at) {
            seen.interim.push(i);
        } else if line.trim() == "Threads started!" {
            seen.started = true;
        } else if !line.trim().is_empty() && line.trim_start().starts_with('[') {
            // `[ 1s ] queue length: 0, concurrency: 1`: not needed.
        } else if !line.trim().is_empty() && seen.other.len() < 5000 {
            seen.other.push(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "\
Latency histogram (values are in milliseconds)
       value  ------------- distribution ------------- count
       0.196 |***                                      1
       0.218 |***                                      2
       0.980 |*************                            95
       9.220 |***                                      1
      36.894 |***                                      1

SQL statistics:
    queries performed:
        read:                            0
        write:                           2352
    transactions:                        100    (33.47 per sec.)
    queries:                             3528   (1184.81 per sec.)
    ignored errors:                      3      (0.00 per sec.)
    reconnects:                          0      (0.00 per sec.)

General statistics:
    total time:                          2.9770s
    total number of events:              100

Latency (ms):
         min:                                    0.19
         avg:                                    0.92
         max:                                   37.20
         99th percentile:                        9.22
         sum:                                  541.16
";

    #[test]
    fn parses_the_final_report_and_its_histogram() {
        let lines: Vec<String> = REPORT.lines().map(str::to_string).collect();
        let s = parse_summary(&lines).unwrap();
        assert_eq!(s.transactions, 100);
        assert_eq!(s.errors, 3);
        assert_eq!(s.reconnects, 0);
        assert_eq!(s.secs, 2.977);
        assert_eq!(s.max_ms, Some(37.2));
        assert_eq!(s.sysbench_pct_ms, Some(9.22));
        assert_eq!(s.histogram.count(), 100);
        assert_eq!(s.histogram.0[0], (0.196, 1));
        // 99th of 100: the 99th transaction, in the 9.220 bucket, as sysbench says.
        assert_eq!(s.histogram.percentile(99.0), Some(9.22));
        assert_eq!(s.histogram.percentile(95.0), Some(0.98));
        assert_eq!(s.histogram.percentile(100.0), Some(36.894));
        assert!((s.tps() - 100.0 / 2.977).abs() < 1e-9);
        assert!(parse_summary(&lines[..5]).is_err());
    }

    #[test]
    fn parses_an_interim_report() {
        let now = Instant::now();
        let line = "[ 2s ] thds: 2 tps: 192.04 qps: 1154.25 (r/w/o: 0.00/769.17/385.08) \
                    lat (ms,99%): 2.97 err/s: 0.00 reconn/s: 0.00";
        let i = parse_interim(line, now).unwrap();
        assert_eq!(i.tps, 192.04);
        assert_eq!(i.pct_ms, 2.97);
        assert!(parse_interim("[ 2s ] queue length: 0, concurrency: 2", now).is_none());
    }

    #[test]
    fn an_empty_histogram_has_no_percentile() {
        assert_eq!(Histogram::default().percentile(99.0), None);
    }
}
