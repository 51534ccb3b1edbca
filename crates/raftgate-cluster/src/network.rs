//! openraft's network over tonic.
//!
//! openraft calls [`RaftNetworkFactory::new_client`] for every replication stream and vote round,
//! so it must not connect: each peer gets one lazily connected [`Channel`], cached here and shared
//! with write forwarding. Transport failures become `Unreachable` (openraft then backs off for
//! [`BACKOFF`]); errors returned by the peer's Raft come back as `RemoteError`.

use std::collections::HashMap;
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
use tonic::transport::{Channel, Endpoint};

use crate::pb::Payload;
use crate::pb::cluster_client::ClusterClient;

/// How long openraft waits before retrying an unreachable peer.
pub const BACKOFF: Duration = Duration::from_millis(200);
/// How long connecting to a peer may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// The channels to all peers, shared by Raft replication and write forwarding.
#[derive(Clone, Default)]
pub struct Network {
    channels: Arc<Mutex<HashMap<NodeId, (String, Channel)>>>,
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
    /// A gRPC client for node `id` at `addr`, reusing the cached channel when the address is unchanged.
    pub fn client(&self, id: NodeId, addr: &str) -> Result<ClusterClient<Channel>, BadAddress> {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((cached, channel)) = channels.get(&id)
            && cached == addr
        {
            return Ok(ClusterClient::new(channel.clone())
                .max_decoding_message_size(crate::server::MAX_MESSAGE));
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}")).map_err(|e| BadAddress {
            id,
            addr: addr.to_string(),
            reason: e.to_string(),
        })?;
        let channel = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .connect_lazy();
        channels.insert(id, (addr.to_string(), channel.clone()));
        Ok(ClusterClient::new(channel).max_decoding_message_size(crate::server::MAX_MESSAGE))
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Connection {
        Connection {
            target,
            client: self.client(target, &node.cluster_addr).map_err(Arc::new),
        }
    }
}

/// Raft's view of one peer.
pub struct Connection {
    target: NodeId,
    client: Result<ClusterClient<Channel>, Arc<BadAddress>>,
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
        F: FnOnce(ClusterClient<Channel>, tonic::Request<Payload>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Payload>, tonic::Status>>,
    {
        let client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(e.as_ref()))),
        };
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
