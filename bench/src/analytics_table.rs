//! `analytics-table` mode: the memory and snapshot size of the replicated analytics when every
//! bucket holds its most series — the bound that keeps 10,000 busy routes from growing the
//! state without end. Fills a table through the state machine's own apply (minutes of the last
//! 24 hours, hours of the last 30 days, days of the last 400, each with one series more than
//! its bound) and prints its rows, the process's RSS growth and the table's encoded size.
//!
//! By default the same routes stay busy, so every bucket holds the same series: what a real
//! gateway sees. With `--distinct` every bucket holds series no other bucket has (routes that
//! change every minute), the worst case for a table that stores each series' names once.

use raftgate_model::analytics::{Resolution, Series, Traffic, TrafficDelta, TrafficTable};

use crate::error::BenchError;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// What to fill the table with.
#[derive(Debug, clap::Args)]
pub struct AnalyticsTableArgs {
    /// Give every bucket its own series instead of the same busy routes everywhere.
    #[arg(long)]
    distinct: bool,
}

/// `n` series for the bucket starting at `start_ms`, named like real routes and consumers;
/// numbered from `first`.
fn deltas(start_ms: u64, first: u64, n: u64) -> Vec<TrafficDelta> {
    (first..first + n)
        .map(|i| {
            let mut traffic = Traffic {
                requests: 1000,
                latency_sum_us: 1_500_000,
                bytes_in: 10_000,
                bytes_out: 1_000_000,
                ..Traffic::default()
            };
            traffic.status[1] = 990;
            traffic.status[4] = 10;
            traffic.latency[3] = 600;
            traffic.latency[4] = 400;
            TrafficDelta {
                minute_ms: start_ms,
                series: Series {
                    route: format!("orders-route-{i:05}"),
                    service: "orders-service".into(),
                    api: "orders".into(),
                    version: "v2".into(),
                    consumer: format!("application-{:04}", i % 500),
                },
                traffic,
            }
        })
        .collect()
}

/// Fills a table to its bound and reports what it takes.
pub fn run(args: &AnalyticsTableArgs) -> Result<String, BenchError> {
    let day = Resolution::Day.millis();
    let now = 20_000 * day;
    let before = rss_kib();
    let mut table = TrafficTable::default();
    let mut first = 0;
    for r in [Resolution::Day, Resolution::Hour, Resolution::Minute] {
        let buckets = r.retention_ms() / r.millis();
        let n = u64::from(r.max_series()) + 1;
        for b in (0..buckets).rev() {
            let start = now - b * r.millis();
            table.apply(&deltas(start, first, n), now);
            if args.distinct {
                first += n;
            }
        }
    }
    let after = rss_kib();
    let encoded = raftgate_model::codec::encode(&table)
        .map_err(|e| BenchError::Args(format!("encoding the table: {e}")))?;
    Ok(format!(
        "{{\"series\":\"{}\",\"rows\":{},\"rss_growth_mib\":{:.1},\"encoded_mib\":{:.1}}}",
        if args.distinct { "distinct" } else { "same" },
        table.len(),
        after.saturating_sub(before) as f64 / 1024.0,
        encoded.len() as f64 / (1024.0 * 1024.0)
    ))
}
