//! `report` mode: reads the JSON lines of a benchmark run and prints the comparison table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::error::BenchError;
use crate::failover::FailoverReport;
use crate::load::LoadReport;
use crate::proxy_report;
use crate::system::System;
use crate::writes::{Via, WritesReport};

/// One line of a results file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Record {
    /// A `writes` run.
    Writes(WritesReport),
    /// A `failover` run.
    Failover(FailoverReport),
    /// A `load` run of the proxy benchmark.
    Load(LoadReport),
}

/// Reads every record of the given JSON-lines files. The proxy runs' rounds of each file are
/// numbered after those of the files before it, so that a round only ever pairs runs that were
/// measured side by side.
pub fn read(paths: &[std::path::PathBuf]) -> Result<Vec<Record>, BenchError> {
    let mut records = Vec::new();
    let mut rounds_before = 0;
    for path in paths {
        let mut last_round = rounds_before;
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| BenchError::Io {
            what: format!("read {shown}"),
            source,
        })?;
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let mut record = serde_json::from_str(line).map_err(|source| BenchError::Record {
                path: shown.clone(),
                line: n + 1,
                source,
            })?;
            if let Record::Load(load) = &mut record {
                load.round += rounds_before;
                last_round = last_round.max(load.round);
            }
            records.push(record);
        }
        rounds_before = last_round;
    }
    Ok(records)
}

/// The comparison table: writes per system, concurrency and target members (runs averaged), failover times, and
/// raftgate/etcd ratios against the targets.
pub fn table(records: &[Record]) -> String {
    let mut writes: BTreeMap<(Setting, &'static str), Vec<&WritesReport>> = BTreeMap::new();
    let mut failovers: BTreeMap<&'static str, Vec<&FailoverReport>> = BTreeMap::new();
    let mut loads: Vec<&LoadReport> = Vec::new();
    for record in records {
        match record {
            Record::Writes(w) => writes
                .entry(((w.concurrency, w.via), w.system.name()))
                .or_default()
                .push(w),
            Record::Failover(f) => failovers.entry(f.system.name()).or_default().push(f),
            Record::Load(l) => loads.push(l),
        }
    }

    let mut out = String::new();
    if !writes.is_empty() {
        writes_table(&mut out, &writes);
    }
    if !failovers.is_empty() {
        failover_table(&mut out, &failovers);
    }
    if !loads.is_empty() {
        out.push_str(&proxy_report::table(&loads));
    }
    out
}

type Setting = (usize, Via);

fn writes_table(out: &mut String, writes: &BTreeMap<(Setting, &'static str), Vec<&WritesReport>>) {
    let _ = writeln!(
        out,
        "{:<9} {:>4} {:<8} {:>4} {:>9} {:>8} {:>8} {:>8} {:>6} {:>10} {:>10} {:>12}",
        "system",
        "conc",
        "via",
        "runs",
        "writes/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "srv us/op",
        "cli us/op",
        "other cores"
    );
    for (((concurrency, via), system), runs) in writes {
        let fmt_opt = |v: Option<f64>, decimals: usize| {
            v.map_or("-".to_owned(), |v| format!("{v:.decimals$}"))
        };
        let _ = writeln!(
            out,
            "{:<9} {:>4} {:<8} {:>4} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>6} {:>10} {:>10} {:>12}",
            system,
            concurrency,
            via.name(),
            runs.len(),
            mean(runs.iter().map(|r| r.ops_per_s)),
            median(runs.iter().map(|r| r.p50_ms)),
            median(runs.iter().map(|r| r.p99_ms)),
            runs.iter().map(|r| r.max_ms).fold(0.0, f64::max),
            runs.iter().map(|r| r.errors).sum::<u64>(),
            fmt_opt(mean_opt(runs.iter().map(|r| r.server_cpu_us_per_op)), 0),
            fmt_opt(mean_opt(runs.iter().map(|r| r.client_cpu_us_per_op)), 0),
            fmt_opt(mean_opt(runs.iter().map(|r| r.other_cpu_cores)), 2),
        );
    }
    let settings: Vec<Setting> = {
        let mut s: Vec<Setting> = writes.keys().map(|(s, _)| *s).collect();
        s.dedup();
        s
    };
    for (concurrency, via) in settings {
        let rate = |system: System| {
            writes
                .get(&((concurrency, via), system.name()))
                .map(|runs| mean(runs.iter().map(|r| r.ops_per_s)))
        };
        if let (Some(raftgate), Some(etcd)) = (rate(System::Raftgate), rate(System::Etcd)) {
            let ratio = raftgate / etcd;
            let target = if (concurrency, via) == (32, Via::All) {
                verdict(ratio >= 1.0, "target >= 1.00")
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "ratio raftgate/etcd writes/s, concurrency {concurrency} via {}: {ratio:.2}{target}",
                via.name()
            );
        }
    }
}

fn failover_table(out: &mut String, failovers: &BTreeMap<&'static str, Vec<&FailoverReport>>) {
    let _ = writeln!(
        out,
        "\nfailover: leader SIGKILL -> first successful write, ms"
    );
    let _ = writeln!(
        out,
        "{:<9} {:>4} {:>8} {:>8} {:>8}  all (writable between last failure and first success)",
        "system", "runs", "min", "median", "max"
    );
    for (system, runs) in failovers {
        let times = || runs.iter().map(|r| r.unavailable_ms);
        let all: Vec<String> = runs
            .iter()
            .map(|r| format!("{:.0}..{:.0}", r.last_failed_attempt_ms, r.unavailable_ms))
            .collect();
        let _ = writeln!(
            out,
            "{:<9} {:>4} {:>8.0} {:>8.0} {:>8.0}  {}",
            system,
            runs.len(),
            times().fold(f64::INFINITY, f64::min),
            median(times()),
            times().fold(0.0, f64::max),
            all.join(" ")
        );
    }
    let med = |system: System| {
        failovers
            .get(system.name())
            .map(|runs| median(runs.iter().map(|r| r.unavailable_ms)))
    };
    if let (Some(raftgate), Some(etcd)) = (med(System::Raftgate), med(System::Etcd)) {
        let ratio = raftgate / etcd;
        let _ = writeln!(
            out,
            "ratio raftgate/etcd median failover time: {ratio:.2}{}",
            verdict(ratio <= 1.0, "target <= 1.00")
        );
    }
}

/// " (target: met)" or " (target: NOT met)", appended to a ratio.
pub(crate) fn verdict(met: bool, target: &str) -> String {
    format!(" ({target}: {})", if met { "met" } else { "NOT met" })
}

/// Arithmetic mean; 0 when empty.
pub(crate) fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let values: Vec<f64> = values.collect();
    if values.is_empty() {
        return 0.0;
    }
    values.iter().sum::<f64>() / values.len() as f64
}

fn mean_opt(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let values: Option<Vec<f64>> = values.collect();
    values
        .filter(|v| !v.is_empty())
        .map(|v| mean(v.into_iter()))
}

/// Median (mean of the middle two for an even count); 0 when empty.
pub(crate) fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_of_later_files_follow_those_of_earlier_ones() {
        let dir =
            std::env::temp_dir().join(format!("raftgate-bench-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let load = |round: usize| {
            format!(
                r#"{{"mode":"load","path":"nginx","routes":null,"round":{round},"threads":1,"connections":64,"duration_s":10.0,"requests":10,"req_per_s":1.0,"p50_ms":0.5,"p90_ms":0.8,"p99_ms":1.0,"max_ms":2.0,"errors":0,"bytes_per_response":1.0,"proxy_cpu_us_per_req":null,"upstream_cpu_us_per_req":null,"load_cpu_us_per_req":null,"proxy_rss_kib":null,"other_cpu_cores":null}}"#
            )
        };
        let files = [dir.join("a.jsonl"), dir.join("b.jsonl")];
        std::fs::write(&files[0], format!("{}\n{}\n", load(1), load(2))).unwrap();
        std::fs::write(&files[1], format!("{}\n{}\n", load(1), load(2))).unwrap();
        let rounds: Vec<usize> = read(&files)
            .unwrap()
            .iter()
            .filter_map(|r| match r {
                Record::Load(load) => Some(load.round),
                _ => None,
            })
            .collect();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(rounds, [1, 2, 3, 4]);
    }

    fn writes_line(system: &str, via: &str, concurrency: usize, ops_per_s: f64) -> String {
        format!(
            r#"{{"mode":"writes","system":"{system}","via":"{via}","concurrency":{concurrency},
            "duration_s":10.0,
            "value_size":100,"ops":1,"ops_per_s":{ops_per_s},"p50_ms":1.0,"p99_ms":2.0,
            "max_ms":3.0,"errors":0,"first_error":null,"server_cpu_us_per_op":null,
            "client_cpu_us_per_op":10.0,"other_cpu_cores":0.1}}"#
        )
        .replace('\n', "")
    }

    #[test]
    fn table_shows_ratios_and_verdicts() {
        let lines = [
            writes_line("raftgate", "all", 32, 3000.0),
            writes_line("etcd", "all", 32, 2000.0),
            writes_line("raftgate", "leader", 1, 500.0),
            writes_line("etcd", "leader", 1, 1000.0),
            r#"{"mode":"failover","system":"raftgate","killed_index":0,"killed_endpoint":"a","killed_pid":1,"unavailable_ms":400.0,"last_failed_attempt_ms":350.0,"timeout_ms":100,"failures":{},"writes_before_kill":5}"#.into(),
            r#"{"mode":"failover","system":"etcd","killed_index":0,"killed_endpoint":"a","killed_pid":1,"unavailable_ms":1600.0,"last_failed_attempt_ms":1500.0,"timeout_ms":100,"failures":{"timeout":3},"writes_before_kill":5}"#.into(),
        ];
        let records: Vec<Record> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let table = table(&records);
        assert!(
            table.contains("concurrency 1 via leader: 0.50\n"),
            "{table}"
        );
        assert!(
            table.contains("concurrency 32 via all: 1.50 (target >= 1.00: met)"),
            "{table}"
        );
        assert!(table.contains("1500..1600"), "{table}");
        assert!(
            table.contains("median failover time: 0.25 (target <= 1.00: met)"),
            "{table}"
        );
    }
}
