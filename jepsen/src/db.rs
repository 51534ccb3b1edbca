//! The "DB" in Jepsen's terms: the raftgate node processes, one per namespace, and the admin calls
//! the harness itself makes (cluster status, membership). Nodes are addressed by their 1-based
//! slot; a slot keeps its address for the whole run but gets a new Raft id each time the
//! membership nemesis replaces it.

use std::collections::BTreeMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use raftgate_model::api::{AddMember, ClusterStatus};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use crate::client::{self, HttpError, Response};
use crate::error::Error;
use crate::net::Net;

/// Ports every node listens on, on its own address.
const CLUSTER_PORT: u16 = 7000;
const ADMIN_PORT: u16 = 9000;
const PROXY_PORT: u16 = 8000;
/// Timeout of the harness's own admin calls.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `sig` to `pid`; errors (no such process) are ignored: the caller wanted it gone or
/// stopped, and a process that is already gone is both.
pub fn signal(pid: i32, sig: i32) {
    if pid > 0 {
        // SAFETY: kill(2) takes plain integers and has no memory effects on this process.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// What the harness knows of one node.
#[derive(Debug)]
struct NodeState {
    /// Current Raft id of the process in this slot.
    id: u64,
    /// The running process, if any.
    child: Option<Child>,
    /// Stopped with SIGSTOP.
    paused: bool,
}

/// The nodes of a test and how to reach them.
pub struct Cluster {
    net: Arc<Net>,
    bin: PathBuf,
    token: String,
    log_dir: PathBuf,
    nodes: Vec<Mutex<NodeState>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Cluster {
    /// Describes a cluster of `net.nodes()` nodes (ids 1..=n); nothing is started yet.
    pub fn new(net: Arc<Net>, bin: PathBuf, token: String, log_dir: PathBuf) -> Cluster {
        let n = net.nodes();
        Cluster {
            nodes: (1..=n)
                .map(|i| {
                    Mutex::new(NodeState {
                        id: i as u64,
                        child: None,
                        paused: false,
                    })
                })
                .collect(),
            next_id: std::sync::atomic::AtomicU64::new(n as u64 + 1),
            net,
            bin,
            token,
            log_dir,
        }
    }

    /// Number of node slots.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The network the nodes live in.
    pub fn net(&self) -> &Net {
        &self.net
    }

    /// Admin API address of node `i`.
    pub fn admin_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.net.node_ip(i), ADMIN_PORT))
    }

    /// Proxy address of node `i`.
    pub fn proxy_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.net.node_ip(i), PROXY_PORT))
    }

    fn cluster_addr(&self, i: usize) -> String {
        format!("{}:{CLUSTER_PORT}", self.net.node_ip(i))
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.net.data_root().join(format!("n{i}"))
    }

    /// Current Raft id of node `i`.
    pub async fn id_of(&self, i: usize) -> u64 {
        self.nodes[i - 1].lock().await.id
    }

    /// The slot whose node currently has Raft id `id`.
    pub async fn slot_of(&self, id: u64) -> Option<usize> {
        for i in 1..=self.len() {
            if self.id_of(i).await == id {
                return Some(i);
            }
        }
        None
    }

    /// Starts node `i` (no-op when it runs). Its peers are the other slots under their current
    /// ids; they only matter for the very first start, when the lowest id bootstraps.
    pub async fn start(&self, i: usize) -> Result<(), Error> {
        let mut peers = Vec::new();
        for j in 1..=self.len() {
            if j != i {
                peers.push(format!("{}={}", self.id_of(j).await, self.cluster_addr(j)));
            }
        }
        let mut node = self.nodes[i - 1].lock().await;
        if let Some(child) = node.child.as_mut()
            && matches!(child.try_wait(), Ok(None))
        {
            return Ok(());
        }
        let log_path = self.log_dir.join(format!("n{i}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(Error::io(format!("opening {}", log_path.display())))?;
        let ns = self.net.node_ns(i);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns])
            .arg(&self.bin)
            .arg("serve")
            .arg("--id")
            .arg(node.id.to_string())
            .arg("--data-dir")
            .arg(self.data_dir(i))
            .arg("--cluster-addr")
            .arg(self.cluster_addr(i))
            .arg("--admin-addr")
            .arg(self.admin_addr(i).to_string())
            .arg("--proxy-addr")
            .arg(self.proxy_addr(i).to_string())
            .arg("--admin-token")
            .arg(&self.token)
            .arg("--log")
            .arg("info,openraft=warn");
        for p in &peers {
            cmd.arg("--peer").arg(p);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        let child = cmd.spawn().map_err(Error::io(format!(
            "starting node {i} ({})",
            self.bin.display()
        )))?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// SIGKILLs node `i` and reaps it.
    pub async fn kill(&self, i: usize) {
        let mut node = self.nodes[i - 1].lock().await;
        if let Some(mut child) = node.child.take() {
            if let Some(pid) = child.id() {
                signal(pid as i32, libc::SIGKILL);
            }
            let _ = child.wait().await;
        }
        node.paused = false;
    }

    /// Sends SIGSTOP (`pause`) or SIGCONT to node `i`.
    pub async fn set_paused(&self, i: usize, pause: bool) {
        let mut node = self.nodes[i - 1].lock().await;
        if let Some(pid) = node.child.as_ref().and_then(Child::id) {
            signal(
                pid as i32,
                if pause { libc::SIGSTOP } else { libc::SIGCONT },
            );
            node.paused = pause;
        }
    }

    /// Whether node `i`'s process runs (and is not paused).
    pub async fn is_up(&self, i: usize) -> bool {
        let mut node = self.nodes[i - 1].lock().await;
        let paused = node.paused;
        node.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
            && !paused
    }

    /// Kills node `i`, wipes its data and gives the slot a fresh Raft id for its next start.
    pub async fn wipe_and_renumber(&self, i: usize) -> Result<u64, Error> {
        self.kill(i).await;
        let dir = self.data_dir(i);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(Error::io(format!("wiping {}", dir.display())))?;
        }
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.nodes[i - 1].lock().await.id = id;
        Ok(id)
    }

    /// One admin API call to node `i`, with the run's bearer token.
    pub async fn admin(
        &self,
        i: usize,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Response, HttpError> {
        let mut all = vec![("authorization", format!("Bearer {}", self.token))];
        all.extend(headers.iter().map(|(k, v)| (*k, v.clone())));
        client::send(self.admin_addr(i), method, path, &all, body, timeout).await
    }

    /// `GET /cluster` on node `i`.
    pub async fn status(&self, i: usize) -> Option<ClusterStatus> {
        let resp = self
            .admin(
                i,
                Method::GET,
                "/cluster",
                &[],
                None,
                Duration::from_secs(2),
            )
            .await
            .ok()?;
        if !resp.status.is_success() {
            return None;
        }
        serde_json::from_slice(&resp.body).ok()
    }

    /// The slot of the leader as the running nodes report it (highest term wins).
    pub async fn leader(&self) -> Option<usize> {
        let mut best: Option<(u64, u64)> = None;
        for i in 1..=self.len() {
            if !self.is_up(i).await {
                continue;
            }
            if let Some(s) = self.status(i).await
                && let Some(l) = s.leader_id
                && best.is_none_or(|(t, _)| s.term > t)
            {
                best = Some((s.term, l));
            }
        }
        self.slot_of(best?.1).await
    }

    /// Waits until every node answers and agrees on a leader whose membership holds every slot's
    /// current id as a voter.
    pub async fn wait_healthy(&self, within: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + within;
        loop {
            let mut leaders = BTreeMap::new();
            let mut complete = true;
            for i in 1..=self.len() {
                match self.status(i).await {
                    Some(s) => {
                        let id = self.id_of(i).await;
                        let voters: Vec<u64> = s
                            .members
                            .iter()
                            .filter(|m| m.role == raftgate_model::api::Role::Voter)
                            .map(|m| m.id)
                            .collect();
                        complete &= voters.contains(&id) && voters.len() == self.len();
                        if let Some(l) = s.leader_id {
                            *leaders.entry(l).or_insert(0) += 1;
                        }
                    }
                    None => complete = false,
                }
            }
            if complete && leaders.len() == 1 && leaders.values().all(|c| *c == self.len()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Setup(format!(
                    "the cluster did not become healthy within {within:?} (leaders seen: {leaders:?})"
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Asks node `via` to remove the node with Raft id `id`.
    pub async fn remove_member(&self, via: usize, id: u64) -> Result<(), String> {
        let path = format!("/cluster/members/{id}");
        let resp = self
            .admin(via, Method::DELETE, &path, &[], None, ADMIN_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        success(&resp)
    }

    /// Asks node `via` to add node `i` under its current id.
    pub async fn add_member(&self, via: usize, i: usize) -> Result<(), String> {
        let body = AddMember {
            id: self.id_of(i).await,
            cluster_addr: self.cluster_addr(i),
            admin_addr: self.admin_addr(i).to_string(),
            proxy_addr: self.proxy_addr(i).to_string(),
        };
        let body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
        let resp = self
            .admin(
                via,
                Method::POST,
                "/cluster/members",
                &[],
                Some(body),
                Duration::from_secs(30),
            )
            .await
            .map_err(|e| e.to_string())?;
        success(&resp)
    }

    /// Brings every node back: resumes paused ones and starts dead ones.
    pub async fn revive_all(&self) -> Result<(), Error> {
        for i in 1..=self.len() {
            let paused = self.nodes[i - 1].lock().await.paused;
            if paused {
                self.set_paused(i, false).await;
            }
            self.start(i).await?;
        }
        Ok(())
    }

    /// Kills every node (end of the test).
    pub async fn stop_all(&self) {
        for i in 1..=self.len() {
            self.set_paused(i, false).await;
            self.kill(i).await;
        }
    }
}

/// `Ok` for a 2xx answer, else the status and body as the error.
fn success(resp: &crate::client::Response) -> Result<(), String> {
    if resp.status.is_success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            resp.status,
            String::from_utf8_lossy(&resp.body)
        ))
    }
}
