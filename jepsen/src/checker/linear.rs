//! Linearizability of the register workload, key by key, with `todc-utils`' memoizing
//! Wing–Gong–Lowe checker ([`WGLChecker`]).
//!
//! How the history becomes a checker input:
//! - `ok` read of `v` → `Read(v)` (valid only when the register holds `v`);
//! - `ok` write → `Write(v)`; `ok` CAS `[e, n]` → `Cas(e, n)` (valid only when it holds `e`);
//! - `info` write or CAS → may have happened at any time after its invocation or never: its
//!   response is placed after every other event, and an `info` CAS becomes `MaybeCas`, which is
//!   always valid and sets `n` only when the register holds `e`;
//! - `fail` operations and failed reads are left out: they did not happen.
//!
//! Every operation gets its own process number, which todc uses only to pair calls with
//! responses. The register starts absent (`None`). A CAS carries the entity version it read; since
//! every written value is unique, "same version" is "same value", so the value form is checked.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use todc_utils::linearizability::WGLChecker;
use todc_utils::linearizability::history::{Action, History};
use todc_utils::specifications::Specification;

use crate::history::{OpType, Pair};

/// The register's operations as the checker sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegOp {
    /// A read that returned this value (`None`: absent).
    Read(Option<u64>),
    /// A write.
    Write(u64),
    /// A successful compare-and-set from the first value to the second.
    Cas(Option<u64>, u64),
    /// A compare-and-set of unknown outcome.
    MaybeCas(Option<u64>, u64),
}

/// Sequential specification of the register.
pub struct RegisterSpec;

impl Specification for RegisterSpec {
    type State = Option<u64>;
    type Operation = RegOp;

    fn init() -> Self::State {
        None
    }

    fn apply(op: &RegOp, state: &Option<u64>) -> (bool, Option<u64>) {
        match op {
            RegOp::Read(v) => (v == state, *state),
            RegOp::Write(v) => (true, Some(*v)),
            RegOp::Cas(expected, new) => {
                if expected == state {
                    (true, Some(*new))
                } else {
                    (false, *state)
                }
            }
            RegOp::MaybeCas(expected, new) => {
                if expected == state {
                    (true, Some(*new))
                } else {
                    (true, *state)
                }
            }
        }
    }
}

/// One operation ready for the checker: its call and return times (`None`: never returned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timed {
    /// The operation.
    pub op: RegOp,
    /// Invocation time.
    pub start: u64,
    /// Completion time of an `ok` operation; `None` for an indeterminate one.
    pub end: Option<u64>,
}

/// Turns the history's pairs of one key into checker operations (see the module doc).
pub fn to_timed(pairs: &[&Pair]) -> Vec<Timed> {
    let mut out = Vec::new();
    for p in pairs {
        let outcome = p.outcome();
        if outcome == OpType::Fail {
            continue;
        }
        let value = p.complete.as_ref().map_or(&p.invoke.value, |c| &c.value);
        let end = if outcome == OpType::Ok { p.end() } else { None };
        let op = match (p.invoke.f.as_str(), outcome) {
            ("read", OpType::Ok) => RegOp::Read(value.as_u64()),
            ("read", _) => continue,
            ("write", _) => match p.invoke.value.as_u64() {
                Some(v) => RegOp::Write(v),
                None => continue,
            },
            ("cas", kind) => match cas_values(&p.invoke.value) {
                Some((e, n)) if kind == OpType::Ok => RegOp::Cas(e, n),
                Some((e, n)) => RegOp::MaybeCas(e, n),
                None => continue,
            },
            _ => continue,
        };
        out.push(Timed {
            op,
            start: p.invoke.time,
            end,
        });
    }
    out
}

fn cas_values(v: &Value) -> Option<(Option<u64>, u64)> {
    let arr = v.as_array()?;
    let expected = match arr.first()? {
        Value::Null => None,
        x => Some(x.as_u64()?),
    };
    Some((expected, arr.get(1)?.as_u64()?))
}

/// Whether the operations have a linearization. Empty histories are linearizable.
pub fn is_linearizable(ops: &[Timed]) -> bool {
    if ops.is_empty() {
        return true;
    }
    // Events in time order; responses of indeterminate operations after everything else. At
    // equal times, calls come before responses (the conservative choice: overlapping).
    let mut events: Vec<(u64, u8, usize, Action<RegOp>)> = Vec::with_capacity(ops.len() * 2);
    for (i, t) in ops.iter().enumerate() {
        events.push((t.start, 0, i, Action::Call(t.op.clone())));
        events.push((
            t.end.unwrap_or(u64::MAX),
            1,
            i,
            Action::Response(t.op.clone()),
        ));
    }
    events.sort_by_key(|(time, order, i, _)| (*time, *order, *i));
    let actions = events.into_iter().map(|(_, _, i, a)| (i, a)).collect();
    WGLChecker::<RegisterSpec>::is_linearizable(History::from_actions(actions))
}

/// Verdict on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A linearization exists.
    Valid,
    /// None exists. `witness` is the index (into the key's ops) of the operation whose completion
    /// first makes the history non-linearizable.
    Invalid {
        /// Operation at fault.
        witness: usize,
    },
    /// The checker did not finish within its time budget.
    Unknown,
}

/// Checks one key: the whole history, then (when invalid) the shortest prefix, by completion
/// time, that is already invalid, to name the operation at fault. Runs on a thread so that a
/// pathological history costs at most `budget`.
pub fn check_key(ops: Vec<Timed>, budget: Duration) -> Verdict {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(verdict(&ops));
    });
    rx.recv_timeout(budget).unwrap_or(Verdict::Unknown)
}

fn verdict(ops: &[Timed]) -> Verdict {
    if is_linearizable(ops) {
        return Verdict::Valid;
    }
    // Completion times of ok operations, ascending; a prefix up to time T keeps every operation
    // invoked by T, with those completing after T treated as indeterminate.
    let mut ends: Vec<(u64, usize)> = ops
        .iter()
        .enumerate()
        .filter_map(|(i, t)| t.end.map(|e| (e, i)))
        .collect();
    ends.sort_unstable();
    let prefix = |k: usize| -> Vec<Timed> {
        let cut = ends[k].0;
        ops.iter()
            .filter(|t| t.start <= cut)
            .map(|t| Timed {
                op: match (&t.op, t.end.is_some_and(|e| e <= cut)) {
                    (RegOp::Cas(e, n), false) => RegOp::MaybeCas(*e, *n),
                    (op, _) => op.clone(),
                },
                start: t.start,
                end: t.end.filter(|e| *e <= cut),
            })
            // A read that has not returned by the cut says nothing yet.
            .filter(|t| !(matches!(t.op, RegOp::Read(_)) && t.end.is_none()))
            .collect()
    };
    let (mut lo, mut hi) = (0usize, ends.len().saturating_sub(1));
    while lo < hi {
        let mid = (lo + hi) / 2;
        if is_linearizable(&prefix(mid)) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Verdict::Invalid {
        witness: ends.get(lo).map_or(0, |(_, i)| *i),
    }
}

/// Groups register operations by key.
pub fn by_key(pairs: &[Pair]) -> BTreeMap<String, Vec<&Pair>> {
    let mut keys: BTreeMap<String, Vec<&Pair>> = BTreeMap::new();
    for p in pairs {
        if matches!(p.invoke.f.as_str(), "read" | "write" | "cas")
            && let Some(k) = &p.invoke.key
        {
            keys.entry(k.clone()).or_default().push(p);
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use RegOp::*;

    fn t(op: RegOp, start: u64, end: Option<u64>) -> Timed {
        Timed { op, start, end }
    }

    #[test]
    fn sequential_write_then_read_is_valid() {
        let h = [t(Write(1), 0, Some(1)), t(Read(Some(1)), 2, Some(3))];
        assert!(is_linearizable(&h));
    }

    #[test]
    fn stale_read_after_acknowledged_write_is_invalid() {
        let h = [
            t(Write(1), 0, Some(1)),
            t(Write(2), 2, Some(3)),
            t(Read(Some(1)), 4, Some(5)),
        ];
        assert!(!is_linearizable(&h));
        assert_eq!(
            check_key(h.to_vec(), Duration::from_secs(5)),
            Verdict::Invalid { witness: 2 }
        );
    }

    #[test]
    fn read_of_initial_absence_is_valid_only_before_writes() {
        assert!(is_linearizable(&[t(Read(None), 0, Some(1))]));
        assert!(!is_linearizable(&[
            t(Write(1), 0, Some(1)),
            t(Read(None), 2, Some(3))
        ]));
    }

    #[test]
    fn concurrent_write_may_be_seen_or_not() {
        let h = [
            t(Write(1), 0, Some(1)),
            t(Write(2), 2, Some(10)),
            t(Read(Some(2)), 3, Some(4)),
            t(Read(Some(2)), 5, Some(6)),
        ];
        assert!(is_linearizable(&h));
        // ...but once seen, it cannot be unseen.
        let h = [
            t(Write(1), 0, Some(1)),
            t(Write(2), 2, Some(10)),
            t(Read(Some(2)), 3, Some(4)),
            t(Read(Some(1)), 5, Some(6)),
        ];
        assert!(!is_linearizable(&h));
    }

    #[test]
    fn indeterminate_write_may_appear_late_or_never() {
        let seen_late = [
            t(Write(1), 0, Some(1)),
            t(Write(2), 2, None),
            t(Read(Some(1)), 3, Some(4)),
            t(Read(Some(2)), 50, Some(51)),
        ];
        assert!(is_linearizable(&seen_late));
        let never = [
            t(Write(1), 0, Some(1)),
            t(Write(2), 2, None),
            t(Read(Some(1)), 50, Some(51)),
        ];
        assert!(is_linearizable(&never));
    }

    #[test]
    fn value_from_nowhere_is_invalid() {
        let h = [t(Write(1), 0, Some(1)), t(Read(Some(7)), 2, Some(3))];
        assert!(!is_linearizable(&h));
    }

    #[test]
    fn failed_write_must_not_be_read() {
        // A write answered with a definite failure is left out; reading its value is invalid.
        let h = [t(Write(1), 0, Some(1)), t(Read(Some(2)), 5, Some(6))];
        assert!(!is_linearizable(&h));
    }

    #[test]
    fn cas_needs_its_expected_value() {
        let ok = [
            t(Write(1), 0, Some(1)),
            t(Cas(Some(1), 2), 2, Some(3)),
            t(Read(Some(2)), 4, Some(5)),
        ];
        assert!(is_linearizable(&ok));
        let wrong = [t(Write(1), 0, Some(1)), t(Cas(Some(5), 2), 2, Some(3))];
        assert!(!is_linearizable(&wrong));
        let from_absent = [t(Cas(None, 3), 0, Some(1)), t(Read(Some(3)), 2, Some(3))];
        assert!(is_linearizable(&from_absent));
    }

    #[test]
    fn two_successful_cas_from_the_same_value_is_invalid() {
        // Lost update: both CAS(1→x) succeed, which a register cannot allow.
        let h = [
            t(Write(1), 0, Some(1)),
            t(Cas(Some(1), 2), 2, Some(5)),
            t(Cas(Some(1), 3), 2, Some(5)),
        ];
        assert!(!is_linearizable(&h));
    }

    #[test]
    fn indeterminate_cas_applies_only_when_it_matches() {
        let h = [
            t(Write(1), 0, Some(1)),
            t(MaybeCas(Some(1), 2), 2, None),
            t(Read(Some(2)), 3, Some(4)),
        ];
        assert!(is_linearizable(&h));
        let h = [
            t(Write(1), 0, Some(1)),
            t(MaybeCas(Some(9), 2), 2, None),
            t(Read(Some(2)), 3, Some(4)),
        ];
        assert!(!is_linearizable(&h));
    }

    #[test]
    fn history_records_convert() {
        use crate::history::{Op, Process};
        let mk = |p, kind, f: &str, value: Value, time| Op {
            process: Process::Client(p),
            kind,
            f: f.into(),
            key: Some("k".into()),
            value,
            time,
            node: Some(1),
            error: None,
        };
        let ops = vec![
            mk(1, OpType::Invoke, "write", Value::from(1u64), 0),
            mk(1, OpType::Ok, "write", Value::from(1u64), 1),
            mk(2, OpType::Invoke, "cas", serde_json::json!([1, 2]), 2),
            mk(2, OpType::Info, "cas", serde_json::json!([1, 2]), 3),
            mk(3, OpType::Invoke, "write", Value::from(9u64), 2),
            mk(3, OpType::Fail, "write", Value::from(9u64), 3),
            mk(4, OpType::Invoke, "read", Value::Null, 4),
            mk(4, OpType::Ok, "read", Value::from(2u64), 5),
        ];
        let pairs = crate::history::pairs(&ops);
        let refs: Vec<&Pair> = pairs.iter().collect();
        let timed = to_timed(&refs);
        assert_eq!(
            timed,
            vec![
                t(Write(1), 0, Some(1)),
                t(MaybeCas(Some(1), 2), 2, None),
                t(Read(Some(2)), 4, Some(5)),
            ]
        );
        assert!(is_linearizable(&timed));
    }

    /// Differential test against stateright's `LinearizabilityTester` (a plain backtracking
    /// search) on many small random histories: both must give the same verdict.
    #[test]
    fn agrees_with_stateright_on_random_histories() {
        use rand::{Rng, SeedableRng};
        use stateright::semantics::register::{Register, RegisterOp, RegisterRet};
        use stateright::semantics::{ConsistencyTester, LinearizabilityTester};

        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut invalid = 0;
        for _ in 0..400 {
            // Up to 3 threads, each doing 1-3 sequential reads/writes with random overlaps.
            let mut ops = Vec::new();
            let mut events = Vec::new(); // (time, is_return, thread, op index)
            for thread in 0..rng.random_range(1..=3usize) {
                let mut clock = rng.random_range(0..4u64);
                for _ in 0..rng.random_range(1..=3) {
                    let start = clock;
                    let end = start + rng.random_range(1..6u64);
                    clock = end + rng.random_range(1..3u64);
                    let op = if rng.random_bool(0.5) {
                        Write(rng.random_range(1..4))
                    } else {
                        let v = rng.random_range(0..4u64);
                        Read((v > 0).then_some(v))
                    };
                    events.push((start * 2, false, thread, ops.len()));
                    events.push((end * 2 + 1, true, thread, ops.len()));
                    ops.push(t(op, start * 2, Some(end * 2 + 1)));
                }
            }
            events.sort();
            let mut tester = LinearizabilityTester::new(Register(0u64));
            for (_, is_return, thread, i) in &events {
                let r = match (&ops[*i].op, is_return) {
                    (Write(v), false) => tester.on_invoke(*thread, RegisterOp::Write(*v)),
                    (Read(_), false) => tester.on_invoke(*thread, RegisterOp::Read),
                    (Write(_), true) => tester.on_return(*thread, RegisterRet::WriteOk),
                    (Read(v), true) => {
                        tester.on_return(*thread, RegisterRet::ReadOk(v.unwrap_or(0)))
                    }
                    _ => unreachable!("only reads and writes are generated"),
                };
                assert!(r.is_ok());
            }
            let ours = is_linearizable(&ops);
            assert_eq!(ours, tester.is_consistent(), "histories disagree: {ops:?}");
            invalid += usize::from(!ours);
        }
        assert!(
            invalid > 50,
            "the generator must produce invalid histories too"
        );
    }
}
