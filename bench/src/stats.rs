//! Latency percentiles and process CPU time, the figures every run reports.

use std::time::Duration;

use crate::error::BenchError;

/// Latency summary of the successful requests of a run, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest request.
    pub max_ms: f64,
}

/// Summarizes latencies given in microseconds (sorted in place); all zero when there are none.
pub fn summarize(latencies_us: &mut [u32]) -> Summary {
    latencies_us.sort_unstable();
    let at = |q: f64| {
        if latencies_us.is_empty() {
            return 0.0;
        }
        // Nearest-rank percentile: the smallest value with at least q of the samples at or below.
        let rank = (q * latencies_us.len() as f64).ceil() as usize;
        f64::from(latencies_us[rank.clamp(1, latencies_us.len()) - 1]) / 1000.0
    };
    Summary {
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: at(1.0),
    }
}

/// Microseconds of `elapsed`, saturating (a request never takes 70 minutes).
pub fn micros(elapsed: Duration) -> u32 {
    u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX)
}

/// Linux reports process times in clock ticks of `USER_HZ`, which is 100 on every Linux ABI.
const TICKS_PER_SECOND: f64 = 100.0;

/// User plus system CPU seconds consumed so far by process `pid` ("self" for this process).
pub fn cpu_seconds(pid: &str) -> Result<f64, BenchError> {
    stat_ticks(pid, 11)
}

/// User plus system CPU seconds of this process's children that have exited and been waited
/// for: the CPU of a load tool run as a child, read before it starts and after it ends.
pub fn children_cpu_seconds() -> Result<f64, BenchError> {
    stat_ticks("self", 13)
}

/// The sum of two consecutive tick fields of `/proc/PID/stat` (counted from the state field,
/// 0-based), in seconds: 11 for utime + stime, 13 for cutime + cstime.
fn stat_ticks(pid: &str, first: usize) -> Result<f64, BenchError> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|source| BenchError::Io {
        what: format!("read {path}"),
        source,
    })?;
    // The command name (field 2) may contain spaces; the fields after its closing ')' are fixed:
    // state is field 3, utime field 14 and stime field 15.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    match (ticks(first), ticks(first + 1)) {
        (Some(user), Some(system)) => Ok((user + system) as f64 / TICKS_PER_SECOND),
        _ => Err(BenchError::Io {
            what: format!("parse {path}"),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "unexpected format"),
        }),
    }
}

/// Resident set size of process `pid` in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> Result<u64, BenchError> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|source| BenchError::Io {
        what: format!("read {path}"),
        source,
    })?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| BenchError::Io {
            what: format!("parse {path}"),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "no VmRSS line"),
        })
}

/// CPU seconds the whole machine has spent busy (all cores, neither idle nor waiting for I/O).
pub fn machine_busy_seconds() -> Result<f64, BenchError> {
    let path = "/proc/stat";
    let stat = std::fs::read_to_string(path).map_err(|source| BenchError::Io {
        what: format!("read {path}"),
        source,
    })?;
    // First line: "cpu user nice system idle iowait irq softirq steal ...", in ticks.
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    if ticks.len() < 5 {
        return Err(BenchError::Io {
            what: format!("parse {path}"),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "unexpected format"),
        });
    }
    let idle = ticks[3] + ticks[4];
    Ok((ticks.iter().sum::<u64>() - idle) as f64 / TICKS_PER_SECOND)
}

/// Total CPU seconds of several processes.
pub fn total_cpu_seconds(pids: &[u32]) -> Result<f64, BenchError> {
    pids.iter().map(|pid| cpu_seconds(&pid.to_string())).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut samples: Vec<u32> = (1..=100).rev().map(|ms| ms * 1000).collect();
        let summary = summarize(&mut samples);
        assert_eq!(summary.p50_ms, 50.0);
        assert_eq!(summary.p99_ms, 99.0);
        assert_eq!(summary.max_ms, 100.0);
        assert_eq!(summarize(&mut []).max_ms, 0.0);
    }

    #[test]
    fn own_cpu_time_is_readable() {
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(cpu_seconds("self").unwrap() > 0.0);
        assert!(machine_busy_seconds().unwrap() >= cpu_seconds("self").unwrap());
        assert!(rss_kib(std::process::id()).unwrap() > 100);
    }

    #[test]
    fn waited_children_cpu_time_is_counted() {
        let before = children_cpu_seconds().unwrap();
        let status = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"])
            .status()
            .unwrap();
        assert!(status.success());
        assert!(children_cpu_seconds().unwrap() > before);
    }
}
