//! The machine and the servers around a measurement: how busy the machine's CPUs were (and
//! how much of their time the hypervisor gave away), and a quiet start for a baseline.
//! Both matter on a shared 2-vCPU host, where a baseline taken while the page cleaner still
//! writes out the last phase, or while a neighbour takes our vCPUs, says little.

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

/// The machine's CPU time counters from /proc/stat (every core, every process on it).
#[derive(Debug, Clone, Copy)]
pub struct CpuTimes {
    busy: u64,
    steal: u64,
    total: u64,
}

/// Shares of the machine's CPU time over a phase. Steal is time the hypervisor gave our
/// vCPUs to someone else: on a shared host it is what makes two baselines disagree.
#[derive(Debug, Clone, Copy)]
pub struct CpuShare {
    pub busy: f64,
    pub steal: f64,
}

impl CpuTimes {
    pub fn read() -> Option<CpuTimes> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        parse_cpu_line(stat.lines().next()?)
    }

    /// The share of CPU time in use since `start`.
    pub fn busy_since(start: Option<CpuTimes>) -> Option<CpuShare> {
        let (a, b) = (start?, CpuTimes::read()?);
        let total = b.total.checked_sub(a.total)?;
        (total > 0).then(|| CpuShare {
            busy: b.busy.saturating_sub(a.busy) as f64 / total as f64,
            steal: b.steal.saturating_sub(a.steal) as f64 / total as f64,
        })
    }
}

/// `cpu  user nice system idle iowait irq softirq steal ...`: idle and iowait are not busy;
/// steal counts as busy (the vCPU could not run).
fn parse_cpu_line(line: &str) -> Option<CpuTimes> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = fields
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if v.len() < 5 {
        return None;
    }
    let total: u64 = v.iter().sum();
    Some(CpuTimes {
        busy: total - v[3] - v[4],
        steal: v.get(7).copied().unwrap_or(0),
        total,
    })
}

/// Lets both servers flush their dirty pages before a baseline. Otherwise the page cleaner
/// is still writing out the load (or the migration's new table) while the baseline runs, and
/// the application's commits queue behind those writes: a baseline that says more about the
/// phase before it than about the application at rest.
pub async fn quiesce(primary: &mut Conn, replica: &mut Conn) -> anyhow::Result<()> {
    const SETTLED_PAGES: u64 = 500;
    const LIMIT: Duration = Duration::from_secs(120);
    let started = Instant::now();
    let mut before = Vec::new();
    for c in [&mut *primary, &mut *replica] {
        let pct: f64 = c
            .query_first("SELECT @@GLOBAL.innodb_max_dirty_pages_pct")
            .await?
            .unwrap_or(90.0);
        c.query_drop("SET GLOBAL innodb_max_dirty_pages_pct = 0")
            .await?;
        before.push(pct);
    }
    let mut dirty = [0u64; 2];
    loop {
        for (i, c) in [&mut *primary, &mut *replica].into_iter().enumerate() {
            dirty[i] = c
                .query_first(
                    "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS \
                     WHERE VARIABLE_NAME = 'INNODB_BUFFER_POOL_PAGES_DIRTY'",
                )
                .await?
                .unwrap_or(0);
        }
        if dirty.iter().all(|d| *d <= SETTLED_PAGES) || started.elapsed() >= LIMIT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (c, pct) in [&mut *primary, &mut *replica].into_iter().zip(before) {
        c.query_drop(format!("SET GLOBAL innodb_max_dirty_pages_pct = {pct}"))
            .await?;
    }
    eprintln!(
        "[throttle] flushed dirty pages in {:.1} s (left: {} on the primary, {} on the replica)",
        started.elapsed().as_secs_f64(),
        dirty[0],
        dirty[1]
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_cpu_line() {
        let c = parse_cpu_line("cpu  100 5 50 800 40 3 2 7 0 0").unwrap();
        assert_eq!(c.total, 1007);
        assert_eq!(c.busy, 167);
        assert_eq!(c.steal, 7);
        assert!(parse_cpu_line("cpu0 1 2 3 4 5").is_none());
    }
}
