//! The human-readable summary (`report.md`, also printed) of an [`Analysis`].

use std::collections::BTreeSet;
use std::fmt::Write;

use crate::checker::{Analysis, Counts};

/// What the run was.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunInfo {
    /// Results folder name.
    pub name: String,
    /// Workloads run.
    pub workloads: Vec<String>,
    /// Faults scheduled.
    pub nemesis: Vec<String>,
    /// Node count.
    pub nodes: usize,
    /// Seconds of workload.
    pub time_s: u64,
}

fn pct(c: &Counts) -> String {
    if c.total() == 0 {
        "–".into()
    } else {
        format!(
            "{}/{} ({:.1}%)",
            c.ok,
            c.total(),
            100.0 * c.ok as f64 / c.total() as f64
        )
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or("never".into(), |s| format!("{s:.2}"))
}

/// Renders the report as Markdown.
pub fn markdown(info: &RunInfo, a: &Analysis) -> String {
    let mut s = String::new();
    let verdict = if a.anomalies.is_empty() {
        "PASS: no anomaly".to_string()
    } else {
        format!("FAIL: {} anomalies", a.anomalies.len())
    };
    let _ = writeln!(s, "# raftgate Jepsen run {}\n", info.name);
    let _ = writeln!(
        s,
        "workloads: {} · nemesis: {} · nodes: {} · time: {} s\n\n**{verdict}**\n",
        info.workloads.join(","),
        if info.nemesis.is_empty() {
            "none".into()
        } else {
            info.nemesis.join(",")
        },
        info.nodes,
        info.time_s
    );

    let _ = writeln!(s, "## Operations per phase (ok / fail / info)\n");
    let _ = writeln!(
        s,
        "| phase | op | ok | fail | info |\n|---|---|---:|---:|---:|"
    );
    for (phase, per_f) in &a.counts {
        for (f, c) in per_f {
            let _ = writeln!(s, "| {phase} | {f} | {} | {} | {} |", c.ok, c.fail, c.info);
        }
    }

    let r = &a.register;
    if r.keys > 0 {
        let _ = writeln!(
            s,
            "\n## Register (linearizability, todc-utils WGL checker)\n\n{} keys, {} operations checked: {} linearizable, {} not, {} undecided\n",
            r.keys, r.ops_checked, r.valid, r.invalid, r.unknown
        );
    }
    let st = &a.set;
    if st.attempted > 0 {
        let _ = writeln!(
            s,
            "\n## Set\n\n{} adds, {} acknowledged; indeterminate adds present at the end: {}, absent: {}; lost: {}, failed-but-present: {}, never-added: {}, unreadable nodes: {:?}\n",
            st.attempted,
            st.acked,
            st.info_present,
            st.info_absent,
            st.lost.iter().map(|(_, l)| l.len()).sum::<usize>(),
            st.failed_present
                .iter()
                .map(|(_, l)| l.len())
                .sum::<usize>(),
            st.unexpected.iter().map(|(_, l)| l.len()).sum::<usize>(),
            st.unreadable
        );
    }
    if !a.proxy.is_empty() {
        let _ = writeln!(
            s,
            "\n## Proxy availability (requests answered by the upstream through each node)\n"
        );
        let _ = writeln!(
            s,
            "| node | cut off by a partition | killed/paused/replaced | otherwise |\n|---|---|---|---|"
        );
        let mut total = [Counts::default(); 3];
        for n in &a.proxy {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                n.node,
                pct(&n.cut_off),
                pct(&n.down),
                pct(&n.healthy)
            );
            for (t, c) in total.iter_mut().zip([n.cut_off, n.down, n.healthy]) {
                t.ok += c.ok;
                t.fail += c.fail;
                t.info += c.info;
            }
        }
        let _ = writeln!(
            s,
            "| all | {} | {} | {} |",
            pct(&total[0]),
            pct(&total[1]),
            pct(&total[2])
        );
    }
    if !a.recovery.is_empty() {
        let _ = writeln!(s, "\n## Faults and write availability (seconds)\n");
        let _ = writeln!(
            s,
            "| at | fault | variant | lasted | first write ack after start | after heal | longest gap without a write ack |\n|---:|---|---|---:|---:|---:|---:|"
        );
        for r in &a.recovery {
            let _ = writeln!(
                s,
                "| {:.1} | {} | {} | {:.1} | {} | {} | {:.2} |",
                r.at_s,
                r.fault,
                r.variant,
                r.duration_s,
                opt(r.first_write_after_start_s),
                opt(r.first_write_after_heal_s),
                r.longest_write_gap_s
            );
        }
    }
    if !a.anomalies.is_empty() {
        let _ = writeln!(s, "\n## Anomalies\n");
        for an in &a.anomalies {
            let _ = writeln!(s, "### {}: {}\n\n```", an.kind, an.detail);
            for op in &an.ops {
                let _ = writeln!(s, "{}", serde_json::to_string(op).unwrap_or_default());
            }
            let _ = writeln!(s, "```\n");
        }
    }
    s
}

/// A saved `report.json`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Saved {
    /// What the run was.
    pub run: RunInfo,
    /// What the checkers concluded.
    pub analysis: Analysis,
}

fn median_max(mut v: Vec<f64>) -> String {
    if v.is_empty() {
        return "–".into();
    }
    v.sort_by(f64::total_cmp);
    format!("{:.2} / {:.2}", v[v.len() / 2], v[v.len() - 1])
}

/// Sums the proxy counts of every node for one bucket.
fn proxy_total(a: &Analysis, pick: fn(&crate::checker::NodeAvailability) -> Counts) -> Counts {
    a.proxy
        .iter()
        .map(pick)
        .fold(Counts::default(), |mut t, c| {
            t.ok += c.ok;
            t.fail += c.fail;
            t.info += c.info;
            t
        })
}

/// One table over several runs (`raftgate-jepsen summarize`): one row per run, then one per
/// nemesis, with the figures the issue asks for.
pub fn summary(runs: &[Saved]) -> String {
    let mut s = String::new();
    let header = "| nemesis | runs | nodes | s | client ops (ok/fail/info) | anomalies | faults | proxy on cut-off nodes | proxy on killed/paused nodes | first write ack after fault, median / max s | after heal, median / max s | longest write gap, median / max s |\n|---|---:|---:|---:|---|---:|---:|---|---|---|---|---|";
    let row = |name: &str, group: &[&Saved]| -> String {
        let mut ops = Counts::default();
        let (mut anomalies, mut faults) = (0, 0);
        let (mut cut, mut down) = (Counts::default(), Counts::default());
        let (mut after, mut heal, mut gap) = (vec![], vec![], vec![]);
        for r in group {
            let a = &r.analysis;
            for per_f in a.counts.values() {
                for (f, c) in per_f {
                    if f != "proxy" && f != "read-all" {
                        ops.ok += c.ok;
                        ops.fail += c.fail;
                        ops.info += c.info;
                    }
                }
            }
            anomalies += a.anomalies.len();
            faults += a.recovery.len();
            for (t, c) in [
                (&mut cut, proxy_total(a, |n| n.cut_off)),
                (&mut down, proxy_total(a, |n| n.down)),
            ] {
                t.ok += c.ok;
                t.fail += c.fail;
                t.info += c.info;
            }
            after.extend(
                a.recovery
                    .iter()
                    .filter_map(|r| r.first_write_after_start_s),
            );
            heal.extend(a.recovery.iter().filter_map(|r| r.first_write_after_heal_s));
            gap.extend(a.recovery.iter().map(|r| r.longest_write_gap_s));
        }
        let join = |v: BTreeSet<u64>| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        let nodes = join(group.iter().map(|r| r.run.nodes as u64).collect());
        let secs = join(group.iter().map(|r| r.run.time_s).collect());
        format!(
            "| {name} | {} | {} | {} | {} ({}/{}/{}) | {anomalies} | {faults} | {} | {} | {} | {} | {} |",
            group.len(),
            nodes,
            secs,
            ops.total(),
            ops.ok,
            ops.fail,
            ops.info,
            pct(&cut),
            pct(&down),
            median_max(after),
            median_max(heal),
            median_max(gap)
        )
    };
    let _ = writeln!(s, "## Per run\n\n{header}");
    for r in runs {
        let _ = writeln!(s, "{}", row(&r.run.nemesis.join(","), &[r]));
    }
    let mut by: std::collections::BTreeMap<String, Vec<&Saved>> = Default::default();
    for r in runs {
        by.entry(r.run.nemesis.join(",")).or_default().push(r);
    }
    let _ = writeln!(s, "\n## Per nemesis\n\n{header}");
    for (name, group) in &by {
        let _ = writeln!(s, "{}", row(name, group));
    }
    s
}
