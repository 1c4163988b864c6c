//! The write load: sysbench `oltp_write_only` as a child process, and what its writers saw.
//!
//! sysbench 1.0 ignores SIGINT and cannot be stopped early with its final summary, so the
//! figures come from its per-second interim reports (`--report-interval=1`), timestamped as
//! they arrive; the process is killed when the bench is done with it. It runs with
//! `--mysql-ignore-errors=all` so that an error does not end the run but is counted (`err/s`),
//! and through a small wrapper script that prints the first errors each writer thread sees,
//! because sysbench itself does not print ignored errors.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// Marks an error line printed by the wrapper script.
const ERROR_TAG: &str = "BENCH-WRITER-ERROR";

/// Marks a slow transaction printed by the wrapper script.
const SLOW_TAG: &str = "BENCH-WRITER-SLOW";
/// Transactions at least this slow are printed, in milliseconds.
const SLOW_MS: u32 = 100;

/// sysbench's `oltp_write_only`, unchanged, plus two kinds of lines on stderr: the first errors
/// each writer thread sees (sysbench does not print ignored errors), and every transaction
/// slower than SLOW_MS, since the interim reports carry only a p95, which hides a stall of a
/// few transactions among thousands.
fn wrapper_script() -> String {
    format!(
        r#"-- Written by shadowcut's bench: sysbench's oltp_write_only plus error and slow-transaction
-- lines on stderr.
require("oltp_write_only")
local ffi = require("ffi")
pcall(ffi.cdef, [[
typedef struct {{ long tv_sec; long tv_nsec; }} bench_timespec_t;
int clock_gettime(int clk_id, bench_timespec_t *tp);
]])
local ts = ffi.new("bench_timespec_t")
local function now_ms()
   ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
   return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
local inner_event = event
function event()
   local t0 = now_ms()
   inner_event()
   local took = now_ms() - t0
   if took >= {SLOW_MS} then
      io.stderr:write(string.format("{SLOW_TAG} %.1f\n", took))
      io.stderr:flush()
   end
end
{error_hook}"#,
        error_hook = lua_error_hook(ERROR_TAG)
    )
}

/// Starts `sysbench <script> ... run` against `target` with `load`, for at most `max_secs`,
/// with per-second reports and errors ignored (the wrapper scripts print them), `extra` options
/// added, stdout and stderr piped. It runs in `dir`: sysbench finds oltp_write_only and
/// oltp_common in its own library path.
pub fn sysbench_run(
    sysbench: &Path,
    script: &Path,
    dir: &Path,
    target: &Target,
    load: Load,
    max_secs: u64,
    extra: &[&str],
) -> anyhow::Result<tokio::process::Child> {
    Command::new(sysbench)
        .arg(script)
        .arg("--db-driver=mysql")
        .arg("--mysql-host=127.0.0.1")
        .arg(format!("--mysql-port={}", target.port))
        .arg("--mysql-user=root")
        .arg(format!("--mysql-db={}", target.database))
        .arg("--tables=1")
        .arg(format!("--table-size={}", target.table_size))
        .arg(format!("--threads={}", load.threads))
        .arg(format!("--rate={}", load.rate))
        .arg(format!("--time={max_secs}"))
        .arg("--report-interval=1")
        .args(extra)
        .arg("--mysql-ignore-errors=all")
        .arg("run")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", sysbench.display()))
}

/// Lua that prints the first errors each sysbench thread sees (sysbench prints none of the
/// errors it ignores and retries), one `<tag> <errno> <message>` line each on stderr.
pub fn lua_error_hook(tag: &str) -> String {
    format!(
        r#"local shown = 0
local previous = sysbench.hooks.before_restart_event
function sysbench.hooks.before_restart_event(errdesc)
   if shown < 5 then
      shown = shown + 1
      io.stderr:write(string.format("{tag} %s %s\n",
         tostring(errdesc.sql_errno), tostring(errdesc.sql_errmsg)))
      io.stderr:flush()
   end
   if previous then previous(errdesc) end
end
"#
    )
}

/// How hard the writers write.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub threads: u32,
    /// Transactions per second over all threads; 0 is unthrottled.
    pub rate: u32,
}

/// Where sysbench writes and how big its id range is.
#[derive(Debug, Clone)]
pub struct Target {
    pub port: u16,
    pub database: String,
    pub table_size: u64,
}

/// Finds the sysbench binary, or says how to install it.
pub fn find_sysbench() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/bin", "/usr/local/bin"].map(PathBuf::from));
    for d in dirs {
        let p = d.join("sysbench");
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "sysbench was not found: the write-load modes (rate, unthrottled, all) need it; \
         install the Debian package sysbench (apt-get install sysbench), or run --mode idle"
    )
}

/// One interim report: the second `[ Ns ]` it closes and its figures.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    at: Instant,
    second: u64,
    tps: f64,
    p95_ms: f64,
    err_per_s: f64,
    reconn_per_s: f64,
}

/// Parses `[ 2s ] thds: 2 tps: 201.05 qps: ... lat (ms,95%): 3.26 err/s: 0.00 reconn/s: 0.00`.
fn parse_report(line: &str, at: Instant) -> Option<Sample> {
    let rest = line.trim_start().strip_prefix('[')?;
    let (second, rest) = rest.split_once("s ]")?;
    let second: u64 = second.trim().parse().ok()?;
    let tokens: Vec<&str> = rest.split_whitespace().collect();
    let after = |key: &str| -> Option<f64> {
        let i = tokens.iter().position(|t| *t == key)?;
        tokens.get(i + 1)?.parse().ok()
    };
    Some(Sample {
        at,
        second,
        tps: after("tps:")?,
        p95_ms: after("(ms,95%):")?,
        err_per_s: after("err/s:")?,
        reconn_per_s: after("reconn/s:")?,
    })
}

#[derive(Default)]
struct Seen {
    samples: Vec<Sample>,
    /// Transactions of at least SLOW_MS, in ms.
    slow_ms: Vec<f64>,
    errors: Vec<String>,
    other: Vec<String>,
}

/// A running sysbench.
pub struct Writers {
    child: Child,
    seen: Arc<Mutex<Seen>>,
    readers: Vec<JoinHandle<()>>,
    _script: tempfile::TempDir,
}

/// What the writers saw while the bench watched a window of time.
#[derive(Debug, Clone, Default)]
pub struct WriterReport {
    /// Mean tps over the reports before the window (the warm-up).
    pub baseline_tps: f64,
    /// Transactions per second completed during the window.
    pub window_tps: f64,
    /// Whole seconds inside the window in which no transaction completed.
    pub zero_tps_secs: u32,
    /// The worst per-second p95 latency of the whole run (warm-up, window, cool-down).
    pub max_p95_ms: f64,
    /// The longest single transaction of the whole run, if any took at least 100 ms.
    pub max_txn_ms: Option<f64>,
    /// Transactions of the whole run that took at least 100 ms.
    pub slow_txns: usize,
    /// Errors over the whole run: warm-up, window and cool-down.
    pub errors: u64,
    pub reconnects: u64,
    /// Distinct error messages (code and text), at most a few.
    pub messages: Vec<String>,
    /// sysbench stopped by itself (a FATAL error, a crash) before the bench stopped it.
    pub died: Option<String>,
}

impl Writers {
    /// Starts sysbench and waits until its threads report for the first time.
    pub async fn start(sysbench: &Path, target: &Target, load: Load) -> anyhow::Result<Writers> {
        let dir = tempfile::Builder::new()
            .prefix("shadowcut-bench-")
            .tempdir()
            .context("creating a temp dir for the sysbench script")?;
        let script = dir.path().join("bench_write_only.lua");
        std::fs::write(&script, wrapper_script()).context("writing the sysbench script")?;
        // Killed by the bench long before; bounded in case the bench itself is killed.
        let mut child = sysbench_run(sysbench, &script, dir.path(), target, load, 7200, &[])?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut readers = Vec::new();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        readers.push(tokio::spawn(read_lines(stdout, seen.clone())));
        readers.push(tokio::spawn(read_lines(stderr, seen.clone())));
        let mut writers = Writers {
            child,
            seen,
            readers,
            _script: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if !writers.seen.lock().unwrap().samples.is_empty() {
                return Ok(writers);
            }
            if let Ok(Some(status)) = writers.child.try_wait() {
                let other = writers.seen.lock().unwrap().other.join("\n");
                bail!("sysbench exited with {status} before its first report:\n{other}");
            }
            if Instant::now() > deadline {
                bail!("sysbench did not report within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills sysbench and sums up what it reported, for the window `[start, end]`.
    pub async fn stop(mut self, start: Instant, end: Instant) -> WriterReport {
        let died = match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        };
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        for r in self.readers.drain(..) {
            let _ = r.await;
        }
        let seen = std::mem::take(&mut *self.seen.lock().unwrap());
        let mut report = summarize(&seen.samples, start, end);
        let mut messages: Vec<String> = Vec::new();
        for m in seen.errors {
            if !messages.contains(&m) && messages.len() < 5 {
                messages.push(m);
            }
        }
        report.messages = messages;
        report.slow_txns = seen.slow_ms.len();
        report.max_txn_ms = seen.slow_ms.iter().copied().reduce(f64::max);
        report.died = died.map(|status| {
            let fatal: Vec<&String> = seen
                .other
                .iter()
                .filter(|l| l.contains("FATAL") || l.contains("rror"))
                .take(5)
                .collect();
            format!("sysbench exited by itself ({status}): {fatal:?}")
        });
        report
    }
}

async fn read_lines(stream: impl tokio::io::AsyncRead + Unpin, seen: Arc<Mutex<Seen>>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let at = Instant::now();
        let mut seen = seen.lock().unwrap();
        if let Some(ms) = line.strip_prefix(SLOW_TAG) {
            if let Ok(ms) = ms.trim().parse() {
                seen.slow_ms.push(ms);
            }
        } else if let Some(msg) = line.strip_prefix(ERROR_TAG) {
            seen.errors.push(msg.trim().to_string());
        } else if let Some(sample) = parse_report(&line, at) {
            seen.samples.push(sample);
        } else if !line.trim().is_empty() && seen.other.len() < 200 {
            seen.other.push(line);
        }
    }
}

/// Each sample covers the second(s) before it arrived; the window gets each sample's
/// transactions in proportion to how much of that time it overlaps.
fn summarize(samples: &[Sample], start: Instant, end: Instant) -> WriterReport {
    let mut r = WriterReport::default();
    let mut prev_second = 0;
    let (mut base_sum, mut base_n) = (0.0, 0u32);
    let mut window_tx = 0.0;
    for s in samples {
        let secs = s.second.saturating_sub(prev_second).max(1);
        prev_second = s.second;
        let covered = Duration::from_secs(secs);
        let from = s.at.checked_sub(covered).unwrap_or(s.at);
        r.errors += (s.err_per_s * secs as f64).round() as u64;
        r.reconnects += (s.reconn_per_s * secs as f64).round() as u64;
        r.max_p95_ms = r.max_p95_ms.max(s.p95_ms);
        if s.at <= start {
            base_sum += s.tps;
            base_n += 1;
            continue;
        }
        let lo = from.max(start);
        let hi = s.at.min(end);
        if hi > lo {
            let overlap = (hi - lo).as_secs_f64();
            window_tx += s.tps * overlap;
            if s.tps == 0.0 && overlap >= 0.5 * secs as f64 {
                r.zero_tps_secs += secs as u32;
            }
        }
    }
    if base_n > 0 {
        r.baseline_tps = base_sum / f64::from(base_n);
    }
    let window = end.saturating_duration_since(start).as_secs_f64();
    if window > 0.0 {
        r.window_tps = window_tx / window;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_interim_report() {
        let now = Instant::now();
        let line = "[ 2s ] thds: 1 tps: 201.05 qps: 5725.48 (r/w/o: 0.00/804.21/4921.28) \
                    lat (ms,95%): 325.98 err/s: 4519.17 reconn/s: 0.50";
        let s = parse_report(line, now).unwrap();
        assert_eq!(s.second, 2);
        assert_eq!(s.tps, 201.05);
        assert_eq!(s.p95_ms, 325.98);
        assert_eq!(s.err_per_s, 4519.17);
        assert_eq!(s.reconn_per_s, 0.5);
        assert!(parse_report("[ 2s ] queue length: 0, concurrency: 0", now).is_none());
        assert!(parse_report("Threads started!", now).is_none());
    }

    #[test]
    fn summarizes_a_window() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let sample = |sec: u64, tps: f64, err: f64| Sample {
            at: at(sec * 1000),
            second: sec,
            tps,
            p95_ms: tps / 10.0,
            err_per_s: err,
            reconn_per_s: 0.0,
        };
        // Warm-up at 100 tps, a window from 2.0 s to 5.5 s stalled for 3 s, then a burst.
        let samples = [
            sample(1, 100.0, 0.0),
            sample(2, 100.0, 0.0),
            sample(3, 0.0, 0.0),
            sample(4, 0.0, 0.0),
            sample(5, 0.0, 2.0),
            sample(6, 600.0, 0.0),
        ];
        let r = summarize(&samples, at(2000), at(5500));
        assert_eq!(r.baseline_tps, 100.0);
        assert_eq!(r.zero_tps_secs, 3);
        assert!(
            (r.window_tps - 300.0 / 3.5).abs() < 1e-9,
            "{}",
            r.window_tps
        );
        assert_eq!(r.errors, 2);
        assert_eq!(r.max_p95_ms, 60.0);
    }
}
