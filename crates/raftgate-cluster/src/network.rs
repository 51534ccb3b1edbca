//! openraft's network over tonic.
//!
//! openraft calls [`RaftNetworkFactory::new_client`] for every replication stream and vote round,
//! so it must not connect: each peer gets one lazily connected [`Channel`], cached here and shared
//! with write forwarding. Transport failures become `Unreachable` (openraft then backs off for
//! [`BACKOFF`]); errors returned by the peer's Raft come back as `RemoteError`. With a cluster
//! secret, a peer gets no Raft message on a channel until it proved it holds the secret (see
//! [`crate::security`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use raftgate_model::{NodeId, NodeInfo, codec};
use raftgate_store::TypeConfig;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::pb::Payload;
use crate::pb::cluster_client::ClusterClient;
use crate::security::{Outgoing, Secret, Security, Throttle, challenge};

/// How long openraft waits before retrying an unreachable peer.
pub const BACKOFF: Duration = Duration::from_millis(200);
/// How long connecting to a peer may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// A gRPC client of one peer; every call carries the cluster secret, if there is one.
pub type PeerClient = ClusterClient<InterceptedService<Channel, Outgoing>>;

/// One peer's channel.
struct Peer {
    addr: String,
    channel: Channel,
    /// Whether the peer on this channel proved it holds the cluster secret.
    proven: Arc<AtomicBool>,
}

/// The channels to all peers, shared by Raft replication and write forwarding.
#[derive(Clone)]
pub struct Network {
    channels: Arc<Mutex<HashMap<NodeId, Peer>>>,
    /// `http` or `https`.
    scheme: &'static str,
    /// Mutual TLS towards peers, if configured.
    tls: Option<ClientTlsConfig>,
    /// Adds the cluster secret to each call.
    outgoing: Outgoing,
    /// What peers must prove they hold before they get Raft messages.
    secret: Option<Arc<Secret>>,
}

/// A peer that could not prove it holds the cluster secret, so it is sent nothing.
#[derive(Debug, thiserror::Error)]
#[error(
    "not sending Raft messages to node {id}: {why}; it must run with this cluster's --cluster-secret"
)]
pub struct Unproven {
    id: NodeId,
    why: String,
}

/// A peer address that cannot be turned into an endpoint.
#[derive(Debug, thiserror::Error)]
#[error("peer {id} has an invalid cluster address '{addr}': {reason}; fix its --cluster-addr")]
pub struct BadAddress {
    id: NodeId,
    addr: String,
    reason: String,
}

impl Network {
    /// The network of a node protected by `security` (see [`crate::security`]).
    pub fn new(security: &Security) -> Network {
        let secret = security.secret();
        Network {
            channels: Arc::default(),
            scheme: security.scheme(),
            tls: security.client_tls(),
            outgoing: Outgoing(secret.clone()),
            secret,
        }
    }

    fn peer_client(&self, channel: Channel) -> PeerClient {
        ClusterClient::with_interceptor(channel, self.outgoing.clone())
            .max_decoding_message_size(crate::server::MAX_MESSAGE)
    }

    /// A gRPC client for node `id` at `addr`, reusing the cached channel when the address is unchanged.
    pub fn client(&self, id: NodeId, addr: &str) -> Result<PeerClient, BadAddress> {
        self.peer(id, addr).map(|(client, _)| client)
    }

    /// The client of node `id` at `addr` and whether that peer proved it holds the secret.
    fn peer(&self, id: NodeId, addr: &str) -> Result<(PeerClient, Arc<AtomicBool>), BadAddress> {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(peer) = channels.get(&id)
            && peer.addr == addr
        {
            return Ok((self.peer_client(peer.channel.clone()), peer.proven.clone()));
        }
        let bad = |reason: String| BadAddress {
            id,
            addr: addr.to_string(),
            reason,
        };
        let mut endpoint = Endpoint::from_shared(format!("{}://{addr}", self.scheme))
            .map_err(|e| bad(e.to_string()))?;
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| bad(format!("cannot use the cluster TLS settings: {e}")))?;
        }
        let channel = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .connect_lazy();
        let proven = Arc::new(AtomicBool::new(false));
        channels.insert(
            id,
            Peer {
                addr: addr.to_string(),
                channel: channel.clone(),
                proven: proven.clone(),
            },
        );
        Ok((self.peer_client(channel), proven))
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Connection {
        let (client, proven) = match self.peer(target, &node.cluster_addr) {
            Ok((client, proven)) => (Ok(client), proven),
            Err(e) => (Err(Arc::new(e)), Arc::default()),
        };
        Connection {
            target,
            client,
            proven,
            secret: self.secret.clone(),
        }
    }
}

/// Raft's view of one peer.
pub struct Connection {
    target: NodeId,
    client: Result<PeerClient, Arc<BadAddress>>,
    /// Whether the peer proved it holds the cluster secret (shared by the channel's users).
    proven: Arc<AtomicBool>,
    /// The cluster secret, if there is one.
    secret: Option<Arc<Secret>>,
}

/// Maps a gRPC status to openraft's notion of why a call failed: `Unavailable` (connection refused
/// or reset) means the peer is down and openraft should back off.
pub fn status_to_rpc<E: std::error::Error>(status: tonic::Status) -> RPCError<NodeId, NodeInfo, E> {
    if status.code() == tonic::Code::Unavailable {
        RPCError::Unreachable(Unreachable::new(&status))
    } else {
        RPCError::Network(NetworkError::new(&status))
    }
}

/// Encodes a request as a gRPC payload with an optional deadline.
pub fn request<T: Serialize>(
    value: &T,
    timeout: Option<Duration>,
) -> Result<tonic::Request<Payload>, codec::CodecError> {
    let mut req = tonic::Request::new(Payload {
        data: codec::encode(value)?.into(),
    });
    if let Some(t) = timeout {
        req.set_timeout(t);
    }
    Ok(req)
}

impl Connection {
    async fn call<Req, Resp, E, F, Fut>(
        &mut self,
        req: &Req,
        option: &RPCOption,
        method: F,
    ) -> Result<Resp, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
        F: FnOnce(PeerClient, tonic::Request<Payload>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Payload>, tonic::Status>>,
    {
        let mut client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(e.as_ref()))),
        };
        if let Some(secret) = &self.secret
            && !self.proven.load(Ordering::Acquire)
        {
            match challenge(&mut client, Some(secret), option.hard_ttl()).await {
                Ok(_) => self.proven.store(true, Ordering::Release),
                Err(why) => {
                    let e = Unproven {
                        id: self.target,
                        why,
                    };
                    static UNPROVEN: Throttle = Throttle::new();
                    if UNPROVEN.due() {
                        tracing::warn!(error = %e, "peer refused");
                    } else {
                        tracing::debug!(error = %e, "peer refused");
                    }
                    return Err(RPCError::Unreachable(Unreachable::new(&e)));
                }
            }
        }
        let request = request(req, Some(option.hard_ttl()))
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let payload = method(client, request)
            .await
            .map_err(status_to_rpc)?
            .into_inner();
        let result: Result<Resp, RaftError<NodeId, E>> =
            codec::decode(&payload.data).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.call(&rpc, &option, |mut c, r| async move {
            c.append_entries(r).await
        })
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(&rpc, &option, |mut c, r| async move {
            c.install_snapshot(r).await
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.call(&rpc, &option, |mut c, r| async move { c.vote(r).await })
            .await
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(BACKOFF))
    }
}
