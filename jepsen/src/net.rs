//! The test network: one Linux network namespace per node (a "host" of its own), one for the
//! upstream the proxy workload talks to, and a switch namespace holding the bridge they all plug
//! into. The controller (this process) reaches the bridge through one veth whose host end has
//! the address `.1`. Nothing here has a default route, so no packet can leave the machine.
//!
//! Everything is named `rgj<slot>-…` (namespaces) or `rgj<slot>h` (the one host-side link), and
//! a slot is claimed by creating `/run/raftgate-jepsen/slot-<N>` with the owner's pid inside, so
//! [`cleanup`] can find and remove what a killed run left behind without touching a live run.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::error::Error;

/// Name prefix of every namespace and link the harness creates.
pub const PREFIX: &str = "rgj";
/// Where slot claims live (tmpfs: a reboot forgets them, as it forgets the namespaces).
const CLAIMS: &str = "/run/raftgate-jepsen";
/// Where node data directories live (on disk, so fsync costs what it costs).
const DATA: &str = "/var/tmp/raftgate-jepsen";
/// Highest slot number; the subnet is 10.213.<slot>.0/24.
const MAX_SLOT: u8 = 250;

/// Runs a command; an error carries its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String, Error> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(Error::io(format!("running {program}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command {
            command: format!("{program} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Runs a command with `input` on its stdin.
fn run_with_input(program: &str, args: &[&str], input: &str) -> Result<(), Error> {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(Error::io(format!("running {program}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(Error::io(format!("writing to {program}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(Error::io(format!("waiting for {program}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Command {
            command: format!("{program} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// A claimed slot and the namespaces built in it.
#[derive(Debug)]
pub struct Net {
    slot: u8,
    nodes: usize,
}

impl Net {
    /// Claims a free slot and builds the switch, the node namespaces and the upstream namespace.
    pub fn create(nodes: usize) -> Result<Net, Error> {
        let slot = claim_slot()?;
        let net = Net { slot, nodes };
        if let Err(e) = net.build() {
            net.destroy();
            return Err(e);
        }
        Ok(net)
    }

    fn build(&self) -> Result<(), Error> {
        let sw = self.switch_ns();
        run("ip", &["netns", "add", &sw])?;
        run("ip", &["-n", &sw, "link", "set", "lo", "up"])?;
        run("ip", &["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        run("ip", &["-n", &sw, "link", "set", "br0", "up"])?;
        let host_link = self.host_link();
        run(
            "ip",
            &[
                "link", "add", &host_link, "type", "veth", "peer", "name", "ctl", "netns", &sw,
            ],
        )?;
        let ctl = format!("{}/24", self.controller_ip());
        run("ip", &["addr", "add", &ctl, "dev", &host_link])?;
        run("ip", &["link", "set", &host_link, "up"])?;
        run("ip", &["-n", &sw, "link", "set", "ctl", "master", "br0"])?;
        run("ip", &["-n", &sw, "link", "set", "ctl", "up"])?;
        let members: Vec<(String, Ipv4Addr)> = (1..=self.nodes)
            .map(|i| (self.node_ns(i), self.node_ip(i)))
            .chain([(self.upstream_ns(), self.upstream_ip())])
            .collect();
        for (k, (ns, ip)) in members.iter().enumerate() {
            let port = format!("p{k}");
            run("ip", &["netns", "add", ns])?;
            run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
            run(
                "ip",
                &[
                    "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                    "netns", ns,
                ],
            )?;
            run("ip", &["-n", &sw, "link", "set", &port, "master", "br0"])?;
            run("ip", &["-n", &sw, "link", "set", &port, "up"])?;
            let addr = format!("{ip}/24");
            run("ip", &["-n", ns, "addr", "add", &addr, "dev", "eth0"])?;
            run("ip", &["-n", ns, "link", "set", "eth0", "up"])?;
        }
        std::fs::create_dir_all(self.data_root()).map_err(Error::io(format!(
            "creating {}",
            self.data_root().display()
        )))?;
        Ok(())
    }

    /// Number of node namespaces.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// The slot number (third octet of the subnet).
    pub fn slot(&self) -> u8 {
        self.slot
    }

    fn switch_ns(&self) -> String {
        format!("{PREFIX}{}-sw", self.slot)
    }

    fn host_link(&self) -> String {
        format!("{PREFIX}{}h", self.slot)
    }

    /// Namespace of node `i` (1-based).
    pub fn node_ns(&self, i: usize) -> String {
        format!("{PREFIX}{}-n{i}", self.slot)
    }

    /// Namespace of the upstream server.
    pub fn upstream_ns(&self) -> String {
        format!("{PREFIX}{}-up", self.slot)
    }

    /// Address of node `i` (1-based).
    pub fn node_ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.slot, 10 + i as u8)
    }

    /// Address of the upstream server.
    pub fn upstream_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.slot, 100)
    }

    /// The controller's own address on the bridge.
    pub fn controller_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.slot, 1)
    }

    /// Directory for node data directories.
    pub fn data_root(&self) -> PathBuf {
        PathBuf::from(DATA).join(format!("slot-{}", self.slot))
    }

    /// Makes each node drop every packet from the nodes its grudge names (node → nodes it no
    /// longer hears). Nodes absent from `grudge` get their rules cleared. The controller and the
    /// upstream stay reachable from everyone, as in Jepsen.
    pub fn partition(&self, grudge: &BTreeMap<usize, BTreeSet<usize>>) -> Result<(), Error> {
        for i in 1..=self.nodes {
            let mut rules = String::from("*filter\n:INPUT ACCEPT [0:0]\n");
            for j in grudge.get(&i).into_iter().flatten() {
                rules.push_str(&format!("-A INPUT -s {} -j DROP\n", self.node_ip(*j)));
            }
            rules.push_str("COMMIT\n");
            run_with_input(
                "ip",
                &["netns", "exec", &self.node_ns(i), "iptables-restore"],
                &rules,
            )?;
        }
        Ok(())
    }

    /// Removes every partition rule.
    pub fn heal(&self) -> Result<(), Error> {
        self.partition(&BTreeMap::new())
    }

    /// Kills whatever runs in the slot's namespaces and removes them, the host link, the data and
    /// the claim. Never fails: it is also the error path.
    pub fn destroy(&self) {
        cleanup_slot(self.slot);
    }
}

/// Claims the lowest free slot; a slot whose owner is dead is cleaned and reused.
fn claim_slot() -> Result<u8, Error> {
    std::fs::create_dir_all(CLAIMS).map_err(Error::io(format!("creating {CLAIMS}")))?;
    for slot in 1..=MAX_SLOT {
        let dir = claim_dir(slot);
        if std::fs::create_dir(&dir).is_err() {
            if owner_alive(slot) {
                continue;
            }
            cleanup_slot(slot);
            if std::fs::create_dir(&dir).is_err() {
                continue;
            }
        }
        if slot_in_use_by_system(slot) {
            // Leftover namespaces without a claim: clean them before use.
            cleanup_namespaces(slot);
        }
        std::fs::write(dir.join("pid"), std::process::id().to_string())
            .map_err(Error::io(format!("writing {}", dir.display())))?;
        return Ok(slot);
    }
    Err(Error::NoSlot)
}

fn claim_dir(slot: u8) -> PathBuf {
    PathBuf::from(CLAIMS).join(format!("slot-{slot}"))
}

/// Whether the process that claimed `slot` still runs.
fn owner_alive(slot: u8) -> bool {
    let Ok(pid) = std::fs::read_to_string(claim_dir(slot).join("pid")) else {
        // Claimed a moment ago and the pid not written yet, or a broken claim: treat a claim
        // younger than a minute as alive.
        return std::fs::metadata(claim_dir(slot))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() < 60);
    };
    let pid = pid.trim();
    !pid.is_empty() && PathBuf::from("/proc").join(pid).exists()
}

fn slot_in_use_by_system(slot: u8) -> bool {
    namespaces_of(slot).next().is_some()
}

/// All namespace names the harness may have created, as (slot, name).
fn harness_namespaces() -> Vec<(u8, String)> {
    let list = run("ip", &["netns", "list"]).unwrap_or_default();
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|name| {
            let rest = name.strip_prefix(PREFIX)?;
            let (num, _) = rest.split_once('-')?;
            Some((num.parse::<u8>().ok()?, name.to_string()))
        })
        .collect()
}

fn namespaces_of(slot: u8) -> impl Iterator<Item = String> {
    harness_namespaces()
        .into_iter()
        .filter(move |(s, _)| *s == slot)
        .map(|(_, n)| n)
}

fn cleanup_namespaces(slot: u8) {
    for ns in namespaces_of(slot) {
        let pids = run("ip", &["netns", "pids", &ns]).unwrap_or_default();
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            crate::db::signal(pid, libc::SIGKILL);
        }
        if let Err(e) = run("ip", &["netns", "del", &ns]) {
            tracing::warn!(%ns, error = %e, "could not delete namespace");
        }
    }
    let _ = run("ip", &["link", "del", &format!("{PREFIX}{slot}h")]);
}

fn cleanup_slot(slot: u8) {
    cleanup_namespaces(slot);
    let data = PathBuf::from(DATA).join(format!("slot-{slot}"));
    let _ = std::fs::remove_dir_all(&data);
    let _ = std::fs::remove_dir_all(claim_dir(slot));
}

/// Removes what runs of this harness left behind. Slots whose owner still runs are kept unless
/// `all` is set. Returns the slots cleaned.
pub fn cleanup(all: bool) -> Vec<u8> {
    let mut slots: BTreeSet<u8> = harness_namespaces().into_iter().map(|(s, _)| s).collect();
    for place in [CLAIMS, DATA] {
        for entry in std::fs::read_dir(place).into_iter().flatten().flatten() {
            if let Some(n) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("slot-"))
                .and_then(|n| n.parse::<u8>().ok())
            {
                slots.insert(n);
            }
        }
    }
    let links = run("ip", &["-o", "link", "show"]).unwrap_or_default();
    for line in links.lines() {
        if let Some(name) = line.split(':').nth(1).map(str::trim)
            && let Some(n) = name
                .split('@')
                .next()
                .and_then(|n| n.strip_prefix(PREFIX))
                .and_then(|n| n.strip_suffix('h'))
                .and_then(|n| n.parse::<u8>().ok())
        {
            slots.insert(n);
        }
    }
    slots
        .into_iter()
        .filter(|s| all || !owner_alive(*s))
        .inspect(|s| cleanup_slot(*s))
        .collect()
}
