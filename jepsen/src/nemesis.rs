//! Nemeses: the faults, injected one at a time on a schedule (quiet period, fault, heal, …) and
//! recorded in the history as `nemesis` `info` records `start-<fault>` (written once the fault is
//! in force) and `stop-<fault>` (once healed), whose value names the variant, the targeted nodes
//! and the nodes cut off from a majority.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};
use serde_json::{Value, json};

use crate::db::Cluster;
use crate::error::Error;
use crate::history::{NemesisTag, Op, OpType, Process, Recorder};

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// SIGKILL then restart.
    Kill,
    /// SIGSTOP then SIGCONT.
    Pause,
    /// iptables DROP between groups of nodes.
    Partition,
    /// Remove a node, wipe it, re-add it under a new id.
    Membership,
}

impl Fault {
    /// Name used in the history and the report.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::Partition => "partition",
            Fault::Membership => "membership",
        }
    }

    /// All faults, for `mixed`.
    pub const ALL: [Fault; 4] = [
        Fault::Kill,
        Fault::Pause,
        Fault::Partition,
        Fault::Membership,
    ];
}

impl FromStr for Fault {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Fault::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                Error::Usage(format!(
                    "unknown nemesis '{s}': use kill, pause, partition, membership, mixed or none"
                ))
            })
    }
}

/// Parses `--nemesis`: a comma-separated list, `mixed` (all) or `none`.
pub fn parse_list(s: &str) -> Result<Vec<Fault>, Error> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part {
            "none" => {}
            "mixed" | "all" => out.extend(Fault::ALL),
            other => {
                out.insert(other.parse()?);
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// Schedule of the nemesis.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Faults to inject, one per cycle, taken in turn (in a random order).
    pub faults: Vec<Fault>,
    /// How long each fault lasts.
    pub fault_time: Duration,
    /// Quiet time before each fault.
    pub quiet_time: Duration,
}

/// Nodes (1-based) whose connected component, counting a link as cut when either end drops the
/// other, is smaller than a majority: the "minority side" of a partition.
pub fn cut_off(n: usize, grudge: &BTreeMap<usize, BTreeSet<usize>>) -> BTreeSet<usize> {
    let linked = |a: usize, b: usize| {
        !grudge.get(&a).is_some_and(|g| g.contains(&b))
            && !grudge.get(&b).is_some_and(|g| g.contains(&a))
    };
    let majority = n / 2 + 1;
    let mut out = BTreeSet::new();
    for start in 1..=n {
        let mut seen = BTreeSet::from([start]);
        let mut todo = vec![start];
        while let Some(a) = todo.pop() {
            for b in 1..=n {
                if !seen.contains(&b) && linked(a, b) {
                    seen.insert(b);
                    todo.push(b);
                }
            }
        }
        if seen.len() < majority {
            out.insert(start);
        }
    }
    out
}

/// Grudge that splits nodes into groups that cannot talk to each other.
fn split(groups: &[Vec<usize>]) -> BTreeMap<usize, BTreeSet<usize>> {
    let mut grudge = BTreeMap::new();
    for (gi, group) in groups.iter().enumerate() {
        let others: BTreeSet<usize> = groups
            .iter()
            .enumerate()
            .filter(|(gj, _)| *gj != gi)
            .flat_map(|(_, g)| g.iter().copied())
            .collect();
        for node in group {
            grudge.insert(*node, others.clone());
        }
    }
    grudge
}

/// Jepsen's bridge: two halves that cannot talk to each other, and one node that talks to both.
fn bridge(nodes: &[usize]) -> BTreeMap<usize, BTreeSet<usize>> {
    let mid = nodes.len() / 2;
    let (left, rest) = nodes.split_at(mid);
    let (bridge_node, right) = rest
        .split_first()
        .map_or((None, rest), |(b, r)| (Some(*b), r));
    let mut grudge = split(&[left.to_vec(), right.to_vec()]);
    if let Some(b) = bridge_node {
        grudge.remove(&b);
    }
    grudge
}

/// Runs the nemesis until `stop` is set; heals whatever it broke before returning.
pub async fn run(
    cluster: Arc<Cluster>,
    rec: Recorder,
    schedule: Schedule,
    stop: Arc<AtomicBool>,
) -> Result<(), Error> {
    if schedule.faults.is_empty() {
        return Ok(());
    }
    let sleep_unless_stopped = |d: Duration| {
        let stop = stop.clone();
        async move {
            let until = Instant::now() + d;
            while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    // Round-robin over a shuffled list, so that a short run still sees every fault.
    let mut order = schedule.faults.clone();
    order.shuffle(&mut rand::rng());
    for fault in order.into_iter().cycle() {
        sleep_unless_stopped(schedule.quiet_time).await;
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        match fault {
            Fault::Kill | Fault::Pause => {
                let (variant, targets) = pick_targets(&cluster).await;
                for &i in &targets {
                    if fault == Fault::Kill {
                        cluster.kill(i).await;
                    } else {
                        cluster.set_paused(i, true).await;
                    }
                }
                note(
                    &rec,
                    &format!("start-{}", fault.name()),
                    json!({"variant": variant, "nodes": targets, "cut_off": targets}),
                );
                sleep_unless_stopped(schedule.fault_time).await;
                for &i in &targets {
                    if fault == Fault::Kill {
                        cluster.start(i).await?;
                    } else {
                        cluster.set_paused(i, false).await;
                    }
                }
                note(
                    &rec,
                    &format!("stop-{}", fault.name()),
                    json!({"nodes": targets}),
                );
            }
            Fault::Partition => {
                let (variant, grudge) = pick_partition(&cluster).await;
                let cut = cut_off(cluster.len(), &grudge);
                cluster.net().partition(&grudge)?;
                note(
                    &rec,
                    "start-partition",
                    json!({"variant": variant, "grudge": grudge, "cut_off": cut}),
                );
                sleep_unless_stopped(schedule.fault_time).await;
                cluster.net().heal()?;
                note(&rec, "stop-partition", Value::Null);
            }
            Fault::Membership => {
                membership(&cluster, &rec, schedule.fault_time, &sleep_unless_stopped).await?;
            }
        }
    }
    Ok(())
}

fn note(rec: &Recorder, f: &str, value: Value) {
    tracing::info!(f, %value, "nemesis");
    rec.record(Op {
        process: Process::Nemesis(NemesisTag::Nemesis),
        kind: OpType::Info,
        f: f.to_string(),
        key: None,
        value,
        time: 0,
        node: None,
        error: None,
    });
}

/// One node at random, the leader, or a random minority.
async fn pick_targets(cluster: &Cluster) -> (&'static str, Vec<usize>) {
    let n = cluster.len();
    let all: Vec<usize> = (1..=n).collect();
    let roll = rand::rng().random_range(0..3);
    if roll == 1
        && let Some(l) = cluster.leader().await
    {
        return ("leader", vec![l]);
    }
    if roll == 2 && n >= 5 {
        let mut shuffled = all.clone();
        shuffled.shuffle(&mut rand::rng());
        shuffled.truncate((n - 1) / 2);
        shuffled.sort_unstable();
        return ("minority", shuffled);
    }
    ("one", vec![*all.choose(&mut rand::rng()).unwrap_or(&1)])
}

async fn pick_partition(cluster: &Cluster) -> (&'static str, BTreeMap<usize, BTreeSet<usize>>) {
    let n = cluster.len();
    let mut nodes: Vec<usize> = (1..=n).collect();
    nodes.shuffle(&mut rand::rng());
    let roll = rand::rng().random_range(0..5);
    match roll {
        0 => {
            let (a, b) = nodes.split_at(n / 2);
            ("halves", split(&[a.to_vec(), b.to_vec()]))
        }
        1 => {
            let (a, b) = nodes.split_at(1);
            ("isolate-one", split(&[a.to_vec(), b.to_vec()]))
        }
        2 => match cluster.leader().await {
            Some(l) => {
                let rest: Vec<usize> = (1..=n).filter(|i| *i != l).collect();
                ("isolate-leader", split(&[vec![l], rest]))
            }
            None => {
                let (a, b) = nodes.split_at(1);
                ("isolate-one", split(&[a.to_vec(), b.to_vec()]))
            }
        },
        3 => ("bridge", bridge(&nodes)),
        _ => {
            // Random cuts: each pair loses its link with probability 1/2, in both directions.
            let mut grudge: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
            for a in 1..=n {
                for b in a + 1..=n {
                    if rand::rng().random_bool(0.5) {
                        grudge.entry(a).or_default().insert(b);
                        grudge.entry(b).or_default().insert(a);
                    }
                }
            }
            ("random", grudge)
        }
    }
}

/// Removes a node (a random one or the leader), wipes it, restarts it under a new id and adds it
/// back, as the README prescribes.
async fn membership<F, Fut>(
    cluster: &Cluster,
    rec: &Recorder,
    hold: Duration,
    sleep: &F,
) -> Result<(), Error>
where
    F: Fn(Duration) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let n = cluster.len();
    let leader = cluster.leader().await;
    let (take_leader, random_one) = {
        let mut rng = rand::rng();
        (rng.random_bool(0.3), rng.random_range(1..=n))
    };
    let (variant, target) = match leader {
        Some(l) if take_leader => ("leader", l),
        _ => ("one", random_one),
    };
    let old_id = cluster.id_of(target).await;
    let via = |exclude: usize| {
        let mut others: Vec<usize> = (1..=n).filter(|i| *i != exclude).collect();
        others.shuffle(&mut rand::rng());
        others
    };
    note(
        rec,
        "start-membership",
        json!({"variant": variant, "nodes": [target], "cut_off": [target], "remove_id": old_id}),
    );
    let mut removed = Err(String::from("not tried"));
    for v in via(target) {
        removed = cluster.remove_member(v, old_id).await;
        if removed.is_ok() {
            break;
        }
    }
    if let Err(e) = removed {
        note(
            rec,
            "stop-membership",
            json!({"nodes": [target], "error": format!("remove failed: {e}")}),
        );
        return Ok(());
    }
    let new_id = cluster.wipe_and_renumber(target).await?;
    cluster.start(target).await?;
    sleep(hold).await;
    let added = add_back(cluster, target, Duration::from_secs(60)).await;
    note(
        rec,
        "stop-membership",
        json!({"nodes": [target], "removed_id": old_id, "added_id": new_id, "error": added.err()}),
    );
    Ok(())
}

/// Adds node `i` under its current id through any node that accepts, retrying until `within`.
pub async fn add_back(cluster: &Cluster, i: usize, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    while Instant::now() < deadline {
        for v in (1..=cluster.len()).filter(|v| *v != i) {
            match cluster.add_member(v, i).await {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Err(last)
}

/// Puts every slot back into the membership as a voter (after a membership fault that did not
/// finish).
pub async fn ensure_members(cluster: &Cluster) -> Result<(), String> {
    let Some(leader) = cluster.leader().await else {
        return Err("no leader".into());
    };
    let Some(status) = cluster.status(leader).await else {
        return Err("leader does not answer".into());
    };
    for i in 1..=cluster.len() {
        let id = cluster.id_of(i).await;
        let voter = status
            .members
            .iter()
            .any(|m| m.id == id && m.role == raftgate_model::api::Role::Voter);
        if !voter {
            add_back(cluster, i, Duration::from_secs(60)).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_cut_off_the_smaller_side() {
        let g = split(&[vec![1, 2], vec![3, 4, 5]]);
        assert_eq!(cut_off(5, &g), BTreeSet::from([1, 2]));
    }

    #[test]
    fn bridge_leaves_everyone_with_a_majority() {
        let g = bridge(&[1, 2, 3, 4, 5]);
        assert!(!g.contains_key(&3), "3 is the bridge");
        assert!(g[&1].contains(&4) && g[&5].contains(&2));
        assert!(cut_off(5, &g).is_empty());
    }

    #[test]
    fn isolated_node_is_cut_off() {
        let g = split(&[vec![4], vec![1, 2, 3, 5]]);
        assert_eq!(cut_off(5, &g), BTreeSet::from([4]));
    }

    #[test]
    fn nemesis_list_parses() {
        assert_eq!(
            parse_list("partition,kill").expect("valid"),
            vec![Fault::Kill, Fault::Partition]
        );
        assert_eq!(parse_list("mixed").expect("valid").len(), 4);
        assert!(parse_list("none").expect("valid").is_empty());
        assert!(parse_list("fire").is_err());
    }
}
