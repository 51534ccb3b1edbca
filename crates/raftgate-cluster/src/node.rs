//! A running raftgate node: its Raft instance, its peer-facing gRPC server, and the operations the
//! admin API needs.
//!
//! Every operation that only the leader can do goes through [`Node::leader_call`]: try locally; if
//! this node is not the leader, forward to the leader it knows; if none is known yet (an election
//! is under way), wait and retry until [`LEADER_WAIT`] is spent. Writes carry a request id chosen
//! once, so a retry after a timeout is applied at most once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::error::{CheckIsLeaderError, ClientWriteError, InitializeError, RaftError};
use openraft::{ChangeMembers, SnapshotPolicy};
use raftgate_metrics::{RaftGauges, RaftStatus};
use raftgate_model::api::{AddMember, ClusterStatus, Member, Ready, Role};
use raftgate_model::command::Applied;
use raftgate_model::{Command, NodeId, NodeInfo, Outcome, Proposal, State, codec};
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Endpoint;
use tonic::transport::server::TcpIncoming;

use crate::Raft;
use crate::error::{StartError, WriteError};
use crate::forward::{CATCH_UP_WAIT, ForwardError, ForwardRequest, ForwardResponse, PROBE_TIMEOUT};
use crate::network::{Network, request};
use crate::pb::InfoRequest;
use crate::pb::cluster_server::ClusterServer;
use crate::security::{Incoming, Secret, Security, challenge};
use crate::server::{ClusterService, MAX_MESSAGE};

/// How long a request waits for a leader before the client is told to retry (503).
pub const LEADER_WAIT: Duration = Duration::from_secs(5);
/// Deadline of the `Info` call `status` makes to each member.
const INFO_TIMEOUT: Duration = Duration::from_millis(300);
/// How long a node about to be added may take to pass the credentials check.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(3);
/// How long `GET /ready` waits for a leader to confirm its leadership with a quorum.
pub const READY_WAIT: Duration = Duration::from_secs(2);

/// The voters and all members (voters and learners) with their addresses.
struct Membership {
    voters: BTreeSet<NodeId>,
    nodes: BTreeMap<NodeId, NodeInfo>,
}

/// Why a node could not be identified.
enum Unidentified {
    /// It answered as another node.
    Other(NodeId),
    /// It did not answer, or did not pass the credentials check.
    Failed(String),
}

/// Raft timing and snapshot settings.
#[derive(Debug, Clone)]
pub struct RaftTuning {
    /// Leader heartbeat period. Keep it at least 3× the p99 of an append including fsync.
    pub heartbeat_ms: u64,
    /// Lower bound of the randomised election timeout.
    pub election_min_ms: u64,
    /// Upper bound of the randomised election timeout.
    pub election_max_ms: u64,
    /// Build a snapshot (and purge the log behind it) every this many entries, and also when
    /// the log outgrows the state (see `raftgate_store::LogGrowth`).
    pub snapshot_every: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        Self {
            heartbeat_ms: 50,
            election_min_ms: 250,
            election_max_ms: 500,
            snapshot_every: 5000,
        }
    }
}

/// Everything a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id; unique and stable.
    pub id: NodeId,
    /// Directory of the node's database.
    pub data_dir: PathBuf,
    /// Where the cluster gRPC server listens.
    pub cluster_listen: SocketAddr,
    /// The addresses other nodes and clients should use for this node.
    pub info: NodeInfo,
    /// Initial peers (id → cluster address), this node included or not. The lowest id among them
    /// and this node initializes the cluster on first start.
    pub peers: BTreeMap<NodeId, String>,
    /// Raft timing.
    pub tuning: RaftTuning,
    /// Mutual TLS and the cluster secret on the cluster port (see [`crate::security`]).
    pub security: Security,
}

/// A running node. Cheap to clone; clones share the node.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

/// A write waiting for the next log entry, with where its outcome goes.
type Waiting = (Proposal, oneshot::Sender<Result<Applied, ForwardError>>);

/// Most writes put in one log entry.
const MAX_BATCH: usize = 512;

struct Inner {
    id: NodeId,
    info: NodeInfo,
    raft: Raft,
    /// Writes to propose; see [`propose_batches`].
    batcher: mpsc::UnboundedSender<Waiting>,
    states: watch::Receiver<Arc<State>>,
    network: Network,
    /// Membership changes run one at a time.
    membership: Mutex<()>,
    /// Whether the cluster port speaks mutual TLS.
    tls: bool,
    /// The cluster secret's derived values, for challenging nodes about to be added.
    secret: Option<Arc<Secret>>,
    stop_server: std::sync::Mutex<Option<oneshot::Sender<()>>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Node {
    /// Opens the store, starts Raft and the cluster server, and bootstraps the cluster if this
    /// node is the designated initializer and nothing is initialized yet.
    pub async fn start(cfg: NodeConfig) -> Result<Node, StartError> {
        let (log, sm) = raftgate_store::open(&cfg.data_dir)?;
        let growth = raftgate_store::LogGrowth::of(&log, &sm);
        let states = sm.subscribe();
        let config = openraft::Config {
            cluster_name: "raftgate".into(),
            heartbeat_interval: cfg.tuning.heartbeat_ms,
            election_timeout_min: cfg.tuning.election_min_ms,
            election_timeout_max: cfg.tuning.election_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.tuning.snapshot_every),
            snapshot_max_chunk_size: 1 << 20,
            install_snapshot_timeout: 2000,
            max_in_snapshot_log_to_keep: 0,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Config(e.to_string()))?;
        let secret = cfg.security.secret();
        let server = server_builder(&cfg.security)?;
        let network = Network::new(&cfg.security);
        let raft = Raft::new(cfg.id, Arc::new(config), network.clone(), log, sm)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;

        let listener = tokio::net::TcpListener::bind(cfg.cluster_listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: cfg.cluster_listen.to_string(),
                source,
            })?;
        let (stop_tx, stop_rx) = oneshot::channel();
        let (batcher, waiting) = mpsc::unbounded_channel();
        tokio::spawn(propose_batches(raft.clone(), waiting));
        tokio::spawn(compact_when_outgrown(raft.clone(), growth));
        let node = Node {
            inner: Arc::new(Inner {
                id: cfg.id,
                info: cfg.info.clone(),
                raft,
                batcher,
                states,
                network,
                membership: Mutex::new(()),
                tls: cfg.security.tls.is_some(),
                secret: secret.clone(),
                stop_server: std::sync::Mutex::new(Some(stop_tx)),
            }),
        };
        let service = ClusterServer::new(ClusterService::new(node.clone(), secret.clone()))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let service = InterceptedService::new(service, Incoming(secret));
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let mut server = server;
        tokio::spawn(async move {
            let served = server
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stop_rx.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "cluster gRPC server stopped");
            }
        });
        tracing::info!(
            id = cfg.id,
            addr = %cfg.cluster_listen,
            security = ?cfg.security,
            "cluster server listening"
        );
        node.bootstrap(&cfg.peers).await?;
        Ok(node)
    }

    async fn bootstrap(&self, peers: &BTreeMap<NodeId, String>) -> Result<(), StartError> {
        let id = self.inner.id;
        let lowest = peers.keys().copied().chain([id]).min().unwrap_or(id);
        let raft = &self.inner.raft;
        if lowest != id || peers.is_empty() {
            return Ok(());
        }
        if raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?
        {
            return Ok(());
        }
        let mut members: BTreeMap<NodeId, NodeInfo> = peers
            .iter()
            .map(|(pid, addr)| {
                (
                    *pid,
                    NodeInfo {
                        cluster_addr: addr.clone(),
                        ..NodeInfo::default()
                    },
                )
            })
            .collect();
        members.insert(id, self.inner.info.clone());
        match raft.initialize(members).await {
            Ok(()) => tracing::info!(id, "initialized a new cluster"),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
            Err(e) => return Err(StartError::Raft(e.to_string())),
        }
        Ok(())
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The addresses this node advertises.
    pub fn info(&self) -> &NodeInfo {
        &self.inner.info
    }

    /// The Raft instance (for the peer-facing server).
    pub(crate) fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// Whether this node leads the cluster now, as far as it knows: for the bookkeeping only
    /// one node should propose (instance expiry).
    pub fn is_leader(&self) -> bool {
        self.inner.raft.metrics().borrow().current_leader == Some(self.inner.id)
    }

    /// The local copy of the replicated state; may lag the leader by a few milliseconds.
    pub fn state(&self) -> Arc<State> {
        self.inner.states.borrow().clone()
    }

    /// Receives every new local state; the proxy recompiles its router from it.
    pub fn subscribe(&self) -> watch::Receiver<Arc<State>> {
        self.inner.states.clone()
    }

    /// Proposes `command` through the leader and returns its outcome once applied here too, so a
    /// client reading the same node right after sees its own write. For the cluster's own writes;
    /// an admin's go through [`Node::write_as`].
    pub async fn write(&self, command: Command) -> Result<Outcome, WriteError> {
        self.propose(None, command).await
    }

    /// Like [`Node::write`], on behalf of the admin token named `actor`: the write is recorded
    /// in the replicated audit log under that name.
    pub async fn write_as(&self, actor: &str, command: Command) -> Result<Outcome, WriteError> {
        self.propose(Some(actor.to_string()), command).await
    }

    async fn propose(
        &self,
        actor: Option<String>,
        command: Command,
    ) -> Result<Outcome, WriteError> {
        let proposal = Proposal {
            request_id: rand::random(),
            at_ms: now_ms(),
            command,
            actor,
        };
        match self.leader_call(ForwardRequest::Write(proposal)).await? {
            ForwardResponse::Written(applied) => {
                let outcome = applied?;
                self.wait_applied(outcome.index).await?;
                Ok(outcome)
            }
            other => Err(unexpected(&other)),
        }
    }

    /// The local state once it includes every write committed before this call (read index via
    /// the leader).
    pub async fn linearizable_state(&self) -> Result<Arc<State>, WriteError> {
        match self.leader_call(ForwardRequest::ReadIndex).await? {
            ForwardResponse::ReadIndex(index) => self.wait_applied(index).await,
            other => Err(unexpected(&other)),
        }
    }

    async fn wait_applied(&self, index: u64) -> Result<Arc<State>, WriteError> {
        let mut rx = self.inner.states.clone();
        let waited =
            tokio::time::timeout(LEADER_WAIT, rx.wait_for(|s| s.applied_index >= index)).await;
        match waited {
            Ok(Ok(state)) => Ok(state.clone()),
            Ok(Err(_)) => Err(WriteError::Stopped("state machine closed".into())),
            // Committed (or read-indexed) but not yet applied here: the change exists.
            Err(_) => Err(WriteError::Timeout {
                retry_after: Duration::from_secs(1),
            }),
        }
    }

    /// Adds a node: as a learner first, then, once it has caught up, as a voter.
    pub async fn add_member(&self, member: AddMember) -> Result<ClusterStatus, WriteError> {
        self.change_membership(ForwardRequest::AddMember(member))
            .await
    }

    /// Removes a node from the cluster.
    pub async fn remove_member(&self, id: NodeId) -> Result<ClusterStatus, WriteError> {
        self.change_membership(ForwardRequest::RemoveMember(id))
            .await
    }

    /// Runs a membership change on the leader and answers once this node has applied it, so the
    /// status returned already shows the change. When the outcome is unknown (the attempt timed
    /// out, or the leader changed under it), it is not tried again: once this node has caught
    /// up with the leader, the membership shows whether the change happened, and that is the
    /// answer; a change still neither done nor refused answers `Timeout`.
    async fn change_membership(&self, req: ForwardRequest) -> Result<ClusterStatus, WriteError> {
        match self.leader_call(req.clone()).await {
            Ok(ForwardResponse::MembershipChanged(index)) => {
                self.wait_applied(index).await?;
                self.status().await
            }
            Ok(other) => Err(unexpected(&other)),
            Err(WriteError::Timeout { retry_after }) => {
                self.linearizable_state().await?;
                let membership = self.membership();
                let done = match &req {
                    ForwardRequest::AddMember(m) => membership.voters.contains(&m.id),
                    ForwardRequest::RemoveMember(id) => !membership.nodes.contains_key(id),
                    _ => false,
                };
                if done {
                    self.status().await
                } else {
                    Err(WriteError::Timeout { retry_after })
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The membership this node knows (the latest, committed or not).
    fn membership(&self) -> Membership {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        Membership {
            voters: membership.voter_ids().collect(),
            nodes: membership.nodes().map(|(id, n)| (*id, n.clone())).collect(),
        }
    }

    /// Whether this node can have writes committed now: it is a member, a leader confirms its
    /// leadership with a quorum (a read-index round) within [`READY_WAIT`], and this node has
    /// applied everything committed before. `NotReady` says why not.
    pub async fn ready(&self) -> Result<Ready, WriteError> {
        let not_ready = |why: String| WriteError::NotReady(why);
        let running = self.inner.raft.metrics().borrow().running_state.clone();
        running
            .map_err(|e| not_ready(format!("its Raft core has stopped ({e}); restart the node")))?;
        if !self.membership().nodes.contains_key(&self.inner.id) {
            return Err(not_ready(format!(
                "node {} is not a member of the cluster; add it with POST /cluster/members",
                self.inner.id
            )));
        }
        let state = tokio::time::timeout(READY_WAIT, self.linearizable_state())
            .await
            .map_err(|_| {
                not_ready(format!(
                    "no leader confirmed its leadership with a quorum within {READY_WAIT:?}: a majority of the voters is down or cut off"
                ))
            })?
            .map_err(|e| not_ready(e.to_string()))?;
        let leader = self.inner.raft.metrics().borrow().current_leader;
        let leader_id = leader.ok_or_else(|| not_ready("it knows no leader".into()))?;
        Ok(Ready {
            node_id: self.inner.id,
            leader_id,
            applied_index: state.applied_index,
        })
    }

    /// Builds a snapshot on this node now and purges the log it covers; returns its last index.
    pub async fn snapshot(&self) -> Result<u64, WriteError> {
        let raft = &self.inner.raft;
        let applied = raft.metrics().borrow().last_applied.map_or(0, |l| l.index);
        raft.trigger().snapshot().await.map_err(stopped)?;
        let metrics = raft
            .wait(Some(LEADER_WAIT))
            .metrics(
                |m| m.snapshot.is_some_and(|s| s.index >= applied),
                "snapshot built",
            )
            .await
            .map_err(|e| WriteError::Invalid(format!("snapshot not built in time: {e}")))?;
        let index = metrics.snapshot.map_or(0, |s| s.index);
        raft.trigger().purge_log(index).await.map_err(stopped)?;
        Ok(index)
    }

    /// The cluster as this node sees it, with each member's own report of its progress.
    pub async fn status(&self) -> Result<ClusterStatus, WriteError> {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let nodes: Vec<(NodeId, NodeInfo)> =
            membership.nodes().map(|(id, n)| (*id, n.clone())).collect();
        let reports =
            futures_util::future::join_all(nodes.iter().map(|(id, n)| self.member_report(*id, n)))
                .await;
        let members = nodes
            .into_iter()
            .zip(reports)
            .map(|((id, known), report)| {
                let (info, applied_index) = report.unwrap_or((known, None));
                Member {
                    id,
                    cluster_addr: info.cluster_addr,
                    admin_addr: info.admin_addr,
                    proxy_addr: info.proxy_addr,
                    role: if voters.contains(&id) {
                        Role::Voter
                    } else {
                        Role::Learner
                    },
                    applied_index,
                }
            })
            .collect();
        Ok(ClusterStatus {
            node_id: self.inner.id,
            leader_id: metrics.current_leader,
            term: metrics.current_term,
            applied_index: metrics.last_applied.map_or(0, |l| l.index),
            members,
        })
    }

    /// Asks a member for its addresses and applied index; `None` if it does not answer quickly.
    async fn member_report(&self, id: NodeId, known: &NodeInfo) -> Option<(NodeInfo, Option<u64>)> {
        if id == self.inner.id {
            let applied = self
                .inner
                .raft
                .metrics()
                .borrow()
                .last_applied
                .map(|l| l.index);
            return Some((self.inner.info.clone(), applied));
        }
        let mut client = self.inner.network.client(id, &known.cluster_addr).ok()?;
        let mut req = tonic::Request::new(InfoRequest {});
        req.set_timeout(INFO_TIMEOUT);
        let status = tokio::time::timeout(INFO_TIMEOUT, client.info(req))
            .await
            .ok()?
            .ok()?
            .into_inner();
        Some((
            NodeInfo {
                cluster_addr: known.cluster_addr.clone(),
                admin_addr: status.admin_addr,
                proxy_addr: status.proxy_addr,
            },
            Some(status.applied_index),
        ))
    }

    /// Runs `req` on the leader, wherever it is, retrying through elections until [`LEADER_WAIT`].
    /// Every attempt is bounded by the request's own deadline, so a leader that lost its quorum
    /// cannot hold a client forever.
    async fn leader_call(&self, req: ForwardRequest) -> Result<ForwardResponse, WriteError> {
        let deadline = Instant::now() + LEADER_WAIT;
        let mut pause = Duration::from_millis(20);
        let mut timed_out = false;
        loop {
            let local =
                tokio::time::timeout(req.timeout(), self.serve_forwarded(req.clone())).await;
            let attempt = match local {
                Err(_) => Err(ForwardError::TimedOut),
                Ok(Err(ForwardError::NotLeader(Some((leader, info)))))
                    if leader != self.inner.id =>
                {
                    self.forward_to(leader, &info, &req).await
                }
                Ok(other) => other,
            };
            match attempt {
                Ok(resp) => return Ok(resp),
                Err(ForwardError::Invalid(msg)) => return Err(WriteError::Invalid(msg)),
                Err(ForwardError::Stopped(msg)) => return Err(WriteError::Stopped(msg)),
                Err(ForwardError::BadMember { field, message }) => {
                    return Err(WriteError::BadMember { field, message });
                }
                Err(ForwardError::Unsafe(msg)) => return Err(WriteError::Unsafe(msg)),
                Err(ForwardError::NoQuorum(msg)) => return Err(WriteError::NoQuorum(msg)),
                Err(ForwardError::TimedOut) if !req.retry_safe() => {
                    return Err(WriteError::Timeout {
                        retry_after: Duration::from_secs(1),
                    });
                }
                Err(ForwardError::TimedOut) => timed_out = true,
                Err(ForwardError::NotLeader(_)) => {}
            }
            if Instant::now() + pause >= deadline {
                let retry_after = Duration::from_secs(1);
                return Err(if timed_out {
                    WriteError::Timeout { retry_after }
                } else {
                    WriteError::NoLeader { retry_after }
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Sends `req` to the leader; transport failures read as "no leader" so the caller retries.
    async fn forward_to(
        &self,
        leader: NodeId,
        info: &NodeInfo,
        req: &ForwardRequest,
    ) -> Result<ForwardResponse, ForwardError> {
        let retry = |why: String| {
            tracing::debug!(leader, %why, "forwarding to the leader failed; will retry");
            ForwardError::NotLeader(None)
        };
        let mut client = self
            .inner
            .network
            .client(leader, &info.cluster_addr)
            .map_err(|e| retry(e.to_string()))?;
        let request = request(req, Some(req.timeout())).map_err(|e| retry(e.to_string()))?;
        // Give up on this leader as soon as another one is known: a request stuck in a
        // partitioned or paused leader's socket should not hold the client until the deadline.
        let mut metrics = self.inner.raft.metrics();
        let replaced = async move {
            let _ = metrics
                .wait_for(|m| m.current_leader.is_some_and(|l| l != leader))
                .await;
        };
        let sent = tokio::time::timeout(req.timeout(), client.forward(request));
        let outcome = tokio::select! {
            outcome = sent => outcome,
            () = replaced => {
                tracing::debug!(leader, "a new leader appeared while forwarding; retrying there");
                return Err(ForwardError::TimedOut);
            }
        };
        let reply = match outcome {
            Ok(Ok(reply)) => reply,
            // The connection could not even be made: the request was not delivered.
            Ok(Err(status))
                if status.code() == tonic::Code::Unavailable && is_connect_error(&status) =>
            {
                return Err(retry(status.to_string()));
            }
            // Anything else happened after the request may have reached the leader, which may
            // apply it: the outcome is unknown (a retry with the same request id is safe).
            Ok(Err(status)) => {
                tracing::debug!(leader, %status, "forwarded request failed after sending");
                return Err(ForwardError::TimedOut);
            }
            Err(_) => return Err(ForwardError::TimedOut),
        };
        codec::decode::<Result<ForwardResponse, ForwardError>>(&reply.into_inner().data)
            .map_err(|e| retry(e.to_string()))?
    }

    /// Serves a leader-only request here; answers `NotLeader` when this node is not the leader.
    pub(crate) async fn serve_forwarded(
        &self,
        req: ForwardRequest,
    ) -> Result<ForwardResponse, ForwardError> {
        let raft = &self.inner.raft;
        match req {
            ForwardRequest::Write(proposal) => {
                let (reply, outcome) = oneshot::channel();
                let stopped = || ForwardError::Stopped("the write batcher has stopped".into());
                self.inner
                    .batcher
                    .send((proposal, reply))
                    .map_err(|_| stopped())?;
                outcome
                    .await
                    .map_err(|_| stopped())?
                    .map(ForwardResponse::Written)
            }
            ForwardRequest::ReadIndex => match raft.ensure_linearizable().await {
                Ok(log_id) => Ok(ForwardResponse::ReadIndex(log_id.map_or(0, |l| l.index))),
                Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                    Err(ForwardError::NotLeader(f.leader_id.zip(f.leader_node)))
                }
                Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => {
                    Err(ForwardError::NotLeader(None))
                }
                Err(RaftError::Fatal(f)) => Err(ForwardError::Stopped(f.to_string())),
            },
            ForwardRequest::AddMember(m) => self.add_member_here(m).await,
            ForwardRequest::RemoveMember(id) => self.remove_member_here(id).await,
        }
    }

    /// Unless this node is the leader, answers `NotLeader` with the leader it knows: membership
    /// changes are checked against the leader's view of the membership, and only there.
    fn lead_here(&self) -> Result<(), ForwardError> {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow();
        match m.current_leader {
            Some(leader) if leader == self.inner.id => Ok(()),
            leader => Err(ForwardError::NotLeader(leader.and_then(|l| {
                let node = m.membership_config.membership().get_node(&l).cloned();
                node.map(|n| (l, n))
            }))),
        }
    }

    async fn add_member_here(&self, m: AddMember) -> Result<ForwardResponse, ForwardError> {
        let _one_at_a_time = self.inner.membership.lock().await;
        self.lead_here()?;
        let id = m.id;
        let bad = |field: &str, message: String| ForwardError::BadMember {
            field: field.into(),
            message,
        };
        if id == 0 {
            return Err(bad(
                "id",
                "node ids start at 1 (0 stands for no node); give the node the id it runs with (--id)".into(),
            ));
        }
        let mut membership = self.membership();
        if membership.voters.contains(&id) {
            return Err(bad(
                "id",
                format!("node {id} is already a voter; to replace it, remove it first"),
            ));
        }
        // A learner left by an earlier attempt may be promoted, if it is the same node.
        if let Some(existing) = membership.nodes.get(&id)
            && existing.cluster_addr != m.cluster_addr
        {
            return Err(bad(
                "id",
                format!(
                    "node {id} is already a member at {}; remove it first",
                    existing.cluster_addr
                ),
            ));
        }
        if let Some(other) = membership
            .nodes
            .iter()
            .find(|(other, n)| **other != id && n.cluster_addr == m.cluster_addr)
            .map(|(other, _)| *other)
        {
            return Err(bad(
                "cluster_addr",
                format!(
                    "{} is the cluster address of node {other}; give node {id} its own",
                    m.cluster_addr
                ),
            ));
        }
        let node = NodeInfo {
            cluster_addr: m.cluster_addr,
            admin_addr: m.admin_addr,
            proxy_addr: m.proxy_addr,
        };
        self.verify_peer(id, &node.cluster_addr).await?;
        let current = membership.voters.clone();
        membership.nodes.insert(id, node.clone());
        // The learner is added by a log entry the current voters must commit.
        self.check_quorum(&membership.nodes, &current, &current)
            .await?;
        let raft = &self.inner.raft;
        raft.add_learner(id, node, true)
            .await
            .map_err(membership_error)?;
        // add_learner returns before the learner has the log: wait until it has what we have.
        let target = raft.metrics().borrow().last_log_index.unwrap_or(0);
        let caught_up = raft
            .wait(Some(CATCH_UP_WAIT))
            .metrics(
                |x| {
                    x.replication
                        .as_ref()
                        .and_then(|r| r.get(&id).copied().flatten())
                        .is_some_and(|l| l.index >= target)
                },
                "learner caught up",
            )
            .await;
        let mut next = current.clone();
        next.insert(id);
        let checked = match caught_up {
            Err(e) => Err(bad(
                "cluster_addr",
                format!("node {id} did not catch up: {e}; is it running and reachable?"),
            )),
            // It may have stopped answering while catching up.
            Ok(_) => self.check_quorum(&membership.nodes, &current, &next).await,
        };
        if let Err(e) = checked {
            self.drop_learner(id).await;
            return Err(e);
        }
        let changed = raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(membership_error)?;
        tracing::info!(id, "node added as voter");
        Ok(ForwardResponse::MembershipChanged(changed.log_id.index))
    }

    /// Takes back a learner that will not be promoted, so that a refused addition leaves
    /// nothing behind; a failure is only logged (a learner does not count towards the quorum).
    async fn drop_learner(&self, id: NodeId) {
        let change = ChangeMembers::RemoveNodes(BTreeSet::from([id]));
        if let Err(e) = self.inner.raft.change_membership(change, false).await {
            tracing::warn!(id, error = %e, "cannot remove the learner of a refused addition; remove it with DELETE /cluster/members/{id}");
        }
    }

    /// Before a node is added: it must answer at `addr` as node `id`, complete the mutual TLS
    /// handshake (when configured) and prove that it holds the cluster secret (when there is
    /// one), so that a node that would accept anything, or another member under a second id,
    /// is never made a member nor sent the log.
    async fn verify_peer(&self, id: NodeId, addr: &str) -> Result<(), ForwardError> {
        let refused = |why: String| {
            tracing::warn!(id, addr, %why, "refusing to add a node");
            ForwardError::BadMember {
                field: "cluster_addr".into(),
                message: why,
            }
        };
        let hint = match (self.inner.secret.is_some(), self.inner.tls) {
            (true, true) => "this cluster's --cluster-secret and a certificate signed by its CA",
            (true, false) => "this cluster's --cluster-secret",
            (false, true) => "a certificate signed by this cluster's CA (--cluster-ca/-cert/-key)",
            (false, false) => "",
        };
        match self.identify(id, addr, VERIFY_TIMEOUT).await {
            Ok(()) => Ok(()),
            Err(Unidentified::Other(other)) => Err(refused(format!(
                "the node at {addr} is node {other}, not node {id}; start node {id} with --id {id} and its own --cluster-addr"
            ))),
            Err(Unidentified::Failed(why)) if hint.is_empty() => Err(refused(format!(
                "node {id} does not answer at {addr} ({why}); start it first, with --cluster-addr {addr}"
            ))),
            Err(Unidentified::Failed(why)) => Err(refused(format!(
                "node {id} at {addr} failed the cluster's credentials check ({why}); start it with {hint}"
            ))),
        }
    }

    /// Asks the node at `addr` who it is, within `timeout`: `Ok` if it answers as node `id`
    /// and passes the cluster's credentials check (see [`challenge`]).
    async fn identify(
        &self,
        id: NodeId,
        addr: &str,
        timeout: Duration,
    ) -> Result<(), Unidentified> {
        let mut client = self
            .inner
            .network
            .client(id, addr)
            .map_err(|e| Unidentified::Failed(e.to_string()))?;
        let status = challenge(&mut client, self.inner.secret.as_deref(), timeout)
            .await
            .map_err(Unidentified::Failed)?;
        if status.id == id {
            Ok(())
        } else {
            Err(Unidentified::Other(status.id))
        }
    }

    /// Refuses a change of the voters from `current` to `next` unless a majority of each
    /// answers now (a joint change is committed by both): otherwise the change could not
    /// commit (`NoQuorum`), or would leave a cluster that cannot commit anything (`Unsafe`).
    /// `nodes` has the addresses.
    async fn check_quorum(
        &self,
        nodes: &BTreeMap<NodeId, NodeInfo>,
        current: &BTreeSet<NodeId>,
        next: &BTreeSet<NodeId>,
    ) -> Result<(), ForwardError> {
        if next.is_empty() {
            return Err(ForwardError::Unsafe(
                "the change would leave the cluster with no voter; add another node first".into(),
            ));
        }
        let probes = current.union(next).map(|&id| async move {
            let answers = id == self.inner.id
                || match nodes.get(&id) {
                    Some(n) => self
                        .identify(id, &n.cluster_addr, PROBE_TIMEOUT)
                        .await
                        .is_ok(),
                    None => false,
                };
            answers.then_some(id)
        });
        let up: BTreeSet<NodeId> = futures_util::future::join_all(probes)
            .await
            .into_iter()
            .flatten()
            .collect();
        let short = |voters: &BTreeSet<NodeId>, which: &str| {
            let answering: BTreeSet<NodeId> = voters.intersection(&up).copied().collect();
            (answering.len() * 2 <= voters.len()).then(|| {
                format!(
                    "only nodes {answering:?} of the {which} voters {voters:?} answer, not a majority"
                )
            })
        };
        if let Some(why) = short(current, "current") {
            return Err(ForwardError::NoQuorum(format!(
                "{why}: the cluster cannot commit anything now, this change included; bring the others back first"
            )));
        }
        if let Some(why) = short(next, "resulting") {
            return Err(ForwardError::Unsafe(format!(
                "refused: {why}, so the cluster could not commit after the change; bring the others back first (or remove the unreachable ones)"
            )));
        }
        Ok(())
    }

    async fn remove_member_here(&self, id: NodeId) -> Result<ForwardResponse, ForwardError> {
        let _one_at_a_time = self.inner.membership.lock().await;
        self.lead_here()?;
        let membership = self.membership();
        let change = if membership.voters.contains(&id) {
            let mut next = membership.voters.clone();
            next.remove(&id);
            self.check_quorum(&membership.nodes, &membership.voters, &next)
                .await?;
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else if membership.nodes.contains_key(&id) {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        } else {
            return Err(ForwardError::Invalid(format!("node {id} is not a member")));
        };
        let changed = self
            .inner
            .raft
            .change_membership(change, false)
            .await
            .map_err(membership_error)?;
        tracing::info!(id, "node removed");
        Ok(ForwardResponse::MembershipChanged(changed.log_id.index))
    }

    /// Keeps `gauges` equal to openraft's view of this node — term, leader, last log index,
    /// applied index — until Raft stops: a background task sets them whenever openraft
    /// publishes new metrics, so a scrape only reads five atomics.
    pub fn export_raft_metrics(&self, gauges: RaftGauges) {
        let mut metrics = self.inner.raft.metrics();
        tokio::spawn(async move {
            loop {
                let status = {
                    let m = metrics.borrow_and_update();
                    RaftStatus {
                        term: m.current_term,
                        leader: m.current_leader,
                        last_log_index: m.last_log_index.unwrap_or(0),
                        applied_index: m.last_applied.map_or(0, |l| l.index),
                        is_leader: m.current_leader == Some(m.id),
                    }
                };
                gauges.set(&status);
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    /// Stops Raft and the cluster server.
    pub async fn shutdown(&self) {
        if let Some(stop) = self
            .inner
            .stop_server
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = stop.send(());
        }
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}

/// Below this many encoded bytes the log is never compacted for its size (the entry count of
/// [`RaftTuning::snapshot_every`] still applies).
const COMPACT_FLOOR_BYTES: u64 = 1 << 20;

/// Builds a snapshot (and so purges the log) whenever the log outgrows the state; see
/// [`raftgate_store::LogGrowth`]. Checked once a second; ends with the node.
async fn compact_when_outgrown(raft: Raft, growth: raftgate_store::LogGrowth) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if growth.outgrown(COMPACT_FLOOR_BYTES) && raft.trigger().snapshot().await.is_err() {
            return;
        }
    }
}

/// Proposes the waiting writes, all of them in one log entry, one entry at a time: while an entry
/// is being made durable and replicated, the writes arriving meanwhile gather for the next one,
/// so a single disk sync commits many writes (group commit). On a follower the proposal fails
/// at once with the leader's address and each write is forwarded there.
async fn propose_batches(raft: Raft, mut waiting: mpsc::UnboundedReceiver<Waiting>) {
    let mut pending = Vec::with_capacity(MAX_BATCH);
    while waiting.recv_many(&mut pending, MAX_BATCH).await > 0 {
        let (proposals, replies): (Vec<Proposal>, Vec<_>) = pending.drain(..).unzip();
        // A leader that steps down with the entry appended answers "forward to leader" too, yet
        // the entry may still commit under the next leader: then the outcome is unknown.
        let was_leader = {
            let m = raft.metrics();
            let m = m.borrow();
            m.current_leader == Some(m.id)
        };
        match raft.client_write(proposals).await {
            Ok(resp) => {
                for (reply, outcome) in replies.into_iter().zip(resp.data) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                let err = match write_error(e) {
                    ForwardError::NotLeader(_) if was_leader => ForwardError::TimedOut,
                    other => other,
                };
                for reply in replies {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }
}

/// The cluster gRPC server, with mutual TLS when configured. Checks the client side of the TLS
/// settings too, so that a bad certificate or key stops the node at start rather than at its
/// first connection.
fn server_builder(security: &Security) -> Result<tonic::transport::Server, StartError> {
    let tls_error = |e: tonic::transport::Error| {
        let source = std::error::Error::source(&e).map_or_else(String::new, |s| format!(": {s}"));
        StartError::Tls(format!("{e}{source}"))
    };
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = security.server_tls() {
        // One crypto provider for the whole process (ring, like the proxy); an error means one
        // is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        server = server.tls_config(tls).map_err(tls_error)?;
    }
    if let Some(tls) = security.client_tls() {
        Endpoint::from_static("https://localhost")
            .tls_config(tls)
            .map_err(tls_error)?;
    }
    Ok(server)
}

/// Whether a transport error happened while connecting, before anything was sent.
fn is_connect_error(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
            )
        {
            return true;
        }
        source = e.source();
    }
    status.message().contains("connect")
}

fn write_error(e: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>) -> ForwardError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            ForwardError::NotLeader(f.leader_id.zip(f.leader_node))
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            ForwardError::Invalid(e.to_string())
        }
        RaftError::Fatal(f) => ForwardError::Stopped(f.to_string()),
    }
}

/// Like [`write_error`], for a membership change made on this node as leader: "forward to the
/// leader" then means it stepped down during the change, which may have happened in part (the
/// joint configuration committed), so the outcome is unknown.
fn membership_error(e: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>) -> ForwardError {
    match write_error(e) {
        ForwardError::NotLeader(_) => ForwardError::TimedOut,
        other => other,
    }
}

fn stopped(e: openraft::error::Fatal<NodeId>) -> WriteError {
    WriteError::Stopped(e.to_string())
}

fn unexpected(resp: &ForwardResponse) -> WriteError {
    WriteError::Stopped(format!(
        "leader answered {resp:?} to another request; nodes run different raftgate versions?"
    ))
}
