//! The set checker: every acknowledged add must be in every node's final read; nothing that was
//! never added, or whose add definitely failed, may be there.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::history::{OpType, Pair};

/// What the set checker found.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SetReport {
    /// Adds attempted.
    pub attempted: usize,
    /// Adds acknowledged (`ok`).
    pub acked: usize,
    /// Adds of unknown outcome found present at the end.
    pub info_present: usize,
    /// Adds of unknown outcome absent at the end.
    pub info_absent: usize,
    /// Per node: acknowledged elements missing from its final read.
    pub lost: Vec<(usize, Vec<u64>)>,
    /// Per node: elements present although their add definitely failed.
    pub failed_present: Vec<(usize, Vec<u64>)>,
    /// Per node: elements present that were never added.
    pub unexpected: Vec<(usize, Vec<u64>)>,
    /// Nodes whose final read failed.
    pub unreadable: Vec<usize>,
}

/// Checks the `add` and `read-all` operations of a history.
pub fn check(pairs: &[Pair]) -> SetReport {
    let mut report = SetReport::default();
    let (mut acked, mut failed, mut info, mut attempted) = (
        BTreeSet::new(),
        BTreeSet::new(),
        BTreeSet::new(),
        BTreeSet::new(),
    );
    for p in pairs.iter().filter(|p| p.invoke.f == "add") {
        let Some(e) = p.invoke.value.as_u64() else {
            continue;
        };
        attempted.insert(e);
        match p.outcome() {
            OpType::Ok => acked.insert(e),
            OpType::Fail => failed.insert(e),
            _ => info.insert(e),
        };
    }
    report.attempted = attempted.len();
    report.acked = acked.len();
    let mut present_anywhere = BTreeSet::new();
    for p in pairs.iter().filter(|p| p.invoke.f == "read-all") {
        let node = p.invoke.node.unwrap_or(0);
        let seen: Option<BTreeSet<u64>> = p
            .complete
            .as_ref()
            .filter(|c| c.kind == OpType::Ok)
            .and_then(|c| c.value.as_array())
            .map(|a| a.iter().filter_map(|v| v.as_u64()).collect());
        let Some(seen) = seen else {
            report.unreadable.push(node);
            continue;
        };
        let lost: Vec<u64> = acked.difference(&seen).copied().collect();
        let failed_present: Vec<u64> = failed.intersection(&seen).copied().collect();
        let unexpected: Vec<u64> = seen.difference(&attempted).copied().collect();
        for (list, found) in [
            (&mut report.lost, lost),
            (&mut report.failed_present, failed_present),
            (&mut report.unexpected, unexpected),
        ] {
            if !found.is_empty() {
                list.push((node, found));
            }
        }
        present_anywhere.extend(seen);
    }
    report.info_present = info.intersection(&present_anywhere).count();
    report.info_absent = info.len() - report.info_present;
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Op, Process, pairs};
    use serde_json::{Value, json};

    fn op(p: u64, kind: OpType, f: &str, value: Value, node: usize) -> Op {
        Op {
            process: Process::Client(p),
            kind,
            f: f.into(),
            key: None,
            value,
            time: 0,
            node: Some(node),
            error: None,
        }
    }

    fn history(final_reads: &[(usize, Value)]) -> Vec<Op> {
        let mut h = vec![
            op(1, OpType::Invoke, "add", json!(1), 1),
            op(1, OpType::Ok, "add", json!(1), 1),
            op(2, OpType::Invoke, "add", json!(2), 2),
            op(2, OpType::Fail, "add", json!(2), 2),
            op(3, OpType::Invoke, "add", json!(3), 3),
            op(3, OpType::Info, "add", json!(3), 3),
        ];
        for (i, (node, v)) in final_reads.iter().enumerate() {
            let p = 10 + i as u64;
            h.push(op(p, OpType::Invoke, "read-all", Value::Null, *node));
            h.push(op(p, OpType::Ok, "read-all", v.clone(), *node));
        }
        h
    }

    fn has_anomaly(r: &SetReport) -> bool {
        !r.lost.is_empty()
            || !r.failed_present.is_empty()
            || !r.unexpected.is_empty()
            || !r.unreadable.is_empty()
    }

    #[test]
    fn all_acked_present_is_clean() {
        let r = check(&pairs(&history(&[(1, json!([1, 3])), (2, json!([1]))])));
        assert!(!has_anomaly(&r), "{r:?}");
        assert_eq!((r.attempted, r.acked, r.info_present), (3, 1, 1));
    }

    #[test]
    fn missing_acked_element_is_lost() {
        let r = check(&pairs(&history(&[(1, json!([1])), (2, json!([3]))])));
        assert_eq!(r.lost, vec![(2, vec![1])]);
        assert!(has_anomaly(&r));
    }

    #[test]
    fn failed_add_present_and_phantoms_are_reported() {
        let r = check(&pairs(&history(&[(1, json!([1, 2, 99]))])));
        assert_eq!(r.failed_present, vec![(1, vec![2])]);
        assert_eq!(r.unexpected, vec![(1, vec![99])]);
    }
}
