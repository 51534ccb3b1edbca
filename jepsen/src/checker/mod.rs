//! Checkers: they read the history only, so a saved history can be checked again later
//! (`raftgate-jepsen check`).

pub mod linear;
pub mod set;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::history::{Op, OpType, Pair, Process, pairs};

/// Time budget of the linearizability search on one key.
const KEY_BUDGET: Duration = Duration::from_secs(60);
/// Operations shown with a register anomaly.
const CONTEXT_OPS: usize = 16;

/// Something the checkers consider wrong.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Anomaly {
    /// Which checker found it.
    pub kind: String,
    /// What it is.
    pub detail: String,
    /// The operations involved (invocations and completions).
    pub ops: Vec<Op>,
}

/// A fault as the history records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Interval {
    /// kill, pause, partition, membership.
    pub fault: String,
    /// How targets were picked (leader, halves, bridge...).
    pub variant: String,
    /// Start time (ns).
    pub start: u64,
    /// Heal time (ns); the end of the history if it never healed.
    pub end: u64,
    /// Nodes the fault was aimed at (killed, paused, replaced).
    pub nodes: Vec<usize>,
    /// Nodes cut off from a majority (partitions), or down (other faults).
    pub cut_off: Vec<usize>,
}

/// Faults recorded in the history.
pub fn intervals(ops: &[Op]) -> Vec<Interval> {
    let last = ops.last().map_or(0, |o| o.time);
    let mut out: Vec<Interval> = Vec::new();
    let mut open: BTreeMap<String, usize> = BTreeMap::new();
    let nums = |v: &serde_json::Value, field: &str| -> Vec<usize> {
        v.get(field)
            .and_then(|a| a.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_u64())
                    .map(|x| x as usize)
                    .collect()
            })
            .unwrap_or_default()
    };
    for op in ops
        .iter()
        .filter(|o| matches!(o.process, Process::Nemesis(_)))
    {
        if let Some(fault) = op.f.strip_prefix("start-") {
            open.insert(fault.to_string(), out.len());
            out.push(Interval {
                fault: fault.to_string(),
                variant: op
                    .value
                    .get("variant")
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string(),
                start: op.time,
                end: last,
                nodes: nums(&op.value, "nodes"),
                cut_off: nums(&op.value, "cut_off"),
            });
        } else if let Some(fault) = op.f.strip_prefix("stop-")
            && let Some(i) = open.remove(fault)
        {
            out[i].end = op.time;
        }
    }
    out
}

/// ok/fail/info counts.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counts {
    /// Acknowledged.
    pub ok: usize,
    /// Definitely not done.
    pub fail: usize,
    /// Unknown outcome.
    pub info: usize,
}

impl Counts {
    fn add(&mut self, kind: OpType) {
        match kind {
            OpType::Ok => self.ok += 1,
            OpType::Fail => self.fail += 1,
            _ => self.info += 1,
        }
    }

    /// All operations.
    pub fn total(&self) -> usize {
        self.ok + self.fail + self.info
    }
}

/// Register checker summary.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RegisterReport {
    /// Keys checked.
    pub keys: usize,
    /// Operations given to the checker (ok reads/writes/CAS, indeterminate writes/CAS).
    pub ops_checked: usize,
    /// Keys with a linearization.
    pub valid: usize,
    /// Keys without one.
    pub invalid: usize,
    /// Keys the checker could not decide within its budget.
    pub unknown: usize,
}

/// Proxy availability of one node.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeAvailability {
    /// Node slot.
    pub node: usize,
    /// Probes while the node was cut off from a majority by a partition.
    pub cut_off: Counts,
    /// Probes while the node was killed, paused or being replaced.
    pub down: Counts,
    /// Probes at all other times.
    pub healthy: Counts,
}

/// Recovery of write availability around one fault.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recovery {
    /// The fault.
    pub fault: String,
    /// Its variant.
    pub variant: String,
    /// Start, seconds since the test began.
    pub at_s: f64,
    /// How long the fault lasted.
    pub duration_s: f64,
    /// From the fault's start to the first acknowledgement of a write invoked after it.
    pub first_write_after_start_s: Option<f64>,
    /// From the heal to the first acknowledgement of a write invoked after it.
    pub first_write_after_heal_s: Option<f64>,
    /// Longest time without any write acknowledged, from the fault's start to its heal.
    pub longest_write_gap_s: f64,
}

/// Everything the checkers concluded.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Analysis {
    /// Per phase (`none` or the active fault), per operation name.
    pub counts: BTreeMap<String, BTreeMap<String, Counts>>,
    /// Register linearizability.
    pub register: RegisterReport,
    /// Set.
    pub set: set::SetReport,
    /// Proxy availability per node.
    pub proxy: Vec<NodeAvailability>,
    /// Write recovery per fault.
    pub recovery: Vec<Recovery>,
    /// Faults injected.
    pub faults: Vec<Interval>,
    /// Anomalies; the run fails when this is not empty.
    pub anomalies: Vec<Anomaly>,
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Runs every checker on a history.
pub fn analyze(ops: &[Op]) -> Analysis {
    let pairs = pairs(ops);
    let faults = intervals(ops);
    let mut a = Analysis {
        faults: faults.clone(),
        ..Analysis::default()
    };
    let phase_at = |t: u64| {
        faults
            .iter()
            .find(|i| i.start <= t && t <= i.end)
            .map_or("none", |i| i.fault.as_str())
    };
    for p in &pairs {
        a.counts
            .entry(phase_at(p.invoke.time).to_string())
            .or_default()
            .entry(p.invoke.f.clone())
            .or_default()
            .add(p.outcome());
    }
    check_register(&pairs, &mut a);
    if pairs.iter().any(|p| p.invoke.f == "add") {
        a.set = set::check(&pairs);
        for (what, list) in [
            ("lost acknowledged adds", &a.set.lost),
            (
                "adds that failed definitely (4xx/503) but are present",
                &a.set.failed_present,
            ),
            ("elements that were never added", &a.set.unexpected),
        ] {
            // Nodes that miss (or hold) the same elements make one anomaly.
            let mut grouped: BTreeMap<&Vec<u64>, Vec<usize>> = BTreeMap::new();
            for (node, elements) in list {
                grouped.entry(elements).or_default().push(*node);
            }
            for (elements, nodes) in grouped {
                a.anomalies.push(Anomaly {
                    kind: "set".into(),
                    detail: format!("nodes {nodes:?}: {what}: {elements:?}"),
                    ops: add_ops(&pairs, elements),
                });
            }
        }
        for node in &a.set.unreadable {
            a.anomalies.push(Anomaly {
                kind: "set".into(),
                detail: format!("node {node}: the final read got no answer after the heal"),
                ops: vec![],
            });
        }
    }
    a.proxy = proxy_availability(&pairs, &faults);
    a.recovery = recovery(&pairs, &faults);
    a
}

fn add_ops(pairs: &[Pair], elements: &[u64]) -> Vec<Op> {
    pairs
        .iter()
        .filter(|p| {
            p.invoke.f == "add"
                && p.invoke
                    .value
                    .as_u64()
                    .is_some_and(|e| elements.contains(&e))
        })
        .take(CONTEXT_OPS)
        .flat_map(|p| std::iter::once(p.invoke.clone()).chain(p.complete.clone()))
        .collect()
}

fn check_register(pairs: &[Pair], a: &mut Analysis) {
    for (key, key_pairs) in linear::by_key(pairs) {
        let timed = linear::to_timed(&key_pairs);
        a.register.keys += 1;
        a.register.ops_checked += timed.len();
        // to_timed skips failed operations; keep the pairs it kept, in the same order, to name
        // the witness.
        let kept: Vec<&Pair> = key_pairs
            .iter()
            .copied()
            .filter(|p| {
                p.outcome() != OpType::Fail && !(p.invoke.f == "read" && p.outcome() != OpType::Ok)
            })
            .collect();
        match linear::check_key(timed, KEY_BUDGET) {
            linear::Verdict::Valid => a.register.valid += 1,
            linear::Verdict::Unknown => {
                a.register.unknown += 1;
                tracing::warn!(%key, "linearizability undecided within the budget");
            }
            linear::Verdict::Invalid { witness } => {
                a.register.invalid += 1;
                let culprit = kept.get(witness).copied();
                let cut = culprit.and_then(Pair::end).unwrap_or(u64::MAX);
                let mut context: Vec<&Pair> = key_pairs
                    .iter()
                    .copied()
                    .filter(|p| p.invoke.time <= cut)
                    .collect();
                let skip = context.len().saturating_sub(CONTEXT_OPS);
                context.drain(..skip);
                // Always show the culprit and, for a read, the operation that wrote its value.
                let read_value = culprit
                    .filter(|p| p.invoke.f == "read")
                    .and_then(|p| p.complete.as_ref())
                    .and_then(|c| c.value.as_u64());
                let writer = key_pairs.iter().copied().find(|p| {
                    read_value.is_some()
                        && p.invoke.f != "read"
                        && (p.invoke.value.as_u64() == read_value
                            || p.invoke.value.get(1).and_then(|v| v.as_u64()) == read_value)
                });
                for extra in [writer, culprit].into_iter().flatten() {
                    if !context.iter().any(|p| std::ptr::eq(*p, extra)) {
                        context.push(extra);
                    }
                }
                context.sort_by_key(|p| p.invoke.time);
                // The most common explanation, spelled out: the value read was written by an
                // operation whose answer said it failed.
                let failed_writer = writer
                    .filter(|w| w.outcome() == OpType::Fail)
                    .and_then(|w| w.complete.as_ref())
                    .map_or(String::new(), |c| {
                        format!(
                            "; the {} of that value was answered '{}' (definitely not applied) yet took effect",
                            c.f,
                            c.error.as_deref().unwrap_or("fail")
                        )
                    });
                a.anomalies.push(Anomaly {
                    kind: "register".into(),
                    detail: format!(
                        "key {key} is not linearizable; no order explains {}{failed_writer} ({} operations on the key up to it follow, with the write of the value read)",
                        culprit.map_or("the history".into(), |p| format!(
                            "the {} {} by process {} on node {}",
                            p.invoke.f,
                            p.complete.as_ref().map_or(&p.invoke.value, |c| &c.value),
                            serde_json::to_string(&p.invoke.process).unwrap_or_default(),
                            p.invoke.node.map_or("?".into(), |n| n.to_string())
                        )),
                        context.len()
                    ),
                    ops: context
                        .into_iter()
                        .flat_map(|p| std::iter::once(p.invoke.clone()).chain(p.complete.clone()))
                        .collect(),
                });
            }
        }
    }
}

fn proxy_availability(pairs: &[Pair], faults: &[Interval]) -> Vec<NodeAvailability> {
    let mut per: BTreeMap<usize, NodeAvailability> = BTreeMap::new();
    for p in pairs.iter().filter(|p| p.invoke.f == "proxy") {
        let Some(node) = p.invoke.node else { continue };
        let t = p.invoke.time;
        let entry = per.entry(node).or_insert_with(|| NodeAvailability {
            node,
            ..Default::default()
        });
        let active = faults
            .iter()
            .filter(|i| i.start <= t && t <= i.end && i.cut_off.contains(&node));
        let mut bucket = &mut entry.healthy;
        for i in active {
            bucket = if i.fault == "partition" {
                &mut entry.cut_off
            } else {
                &mut entry.down
            };
        }
        bucket.add(p.outcome());
    }
    per.into_values().collect()
}

fn recovery(pairs: &[Pair], faults: &[Interval]) -> Vec<Recovery> {
    let mut writes: Vec<(u64, u64)> = pairs
        .iter()
        .filter(|p| matches!(p.invoke.f.as_str(), "write" | "cas" | "add"))
        .filter(|p| p.outcome() == OpType::Ok)
        .filter_map(|p| Some((p.invoke.time, p.end()?)))
        .collect();
    writes.sort_by_key(|w| w.1);
    let first_after = |t: u64| {
        writes
            .iter()
            .filter(|(s, _)| *s >= t)
            .map(|(_, e)| e - t)
            .min()
            .map(secs)
    };
    faults
        .iter()
        .map(|i| {
            let mut last = i.start;
            let mut gap = 0;
            for (_, e) in writes.iter().filter(|(_, e)| *e >= i.start && *e <= i.end) {
                gap = gap.max(e - last);
                last = *e;
            }
            gap = gap.max(i.end - last);
            Recovery {
                fault: i.fault.clone(),
                variant: i.variant.clone(),
                at_s: secs(i.start),
                duration_s: secs(i.end - i.start),
                first_write_after_start_s: first_after(i.start),
                first_write_after_heal_s: first_after(i.end),
                longest_write_gap_s: secs(gap),
            }
        })
        .collect()
}
