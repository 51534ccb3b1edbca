//! The gRPC service each node offers its peers: Raft traffic, forwarded client requests and
//! self-description.

use std::sync::Arc;

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use raftgate_model::codec;
use raftgate_store::TypeConfig;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};

use crate::forward::ForwardRequest;
use crate::node::Node;
use crate::pb::cluster_server::Cluster;
use crate::pb::{InfoRequest, NodeStatus, Payload};
use crate::security::{CHALLENGE, PROOF, Secret};

/// Largest gRPC message accepted or sent. Snapshot chunks are at most 1 MiB (see
/// [`crate::RaftTuning`]); append batches are bounded by openraft's `max_payload_entries`.
pub const MAX_MESSAGE: usize = 64 << 20;

/// The peer-facing service of one node.
pub struct ClusterService {
    node: Node,
    /// Answers challenges of nodes about to add this one (see [`crate::security`]).
    secret: Option<Arc<Secret>>,
}

impl ClusterService {
    /// Serves `node` to its peers.
    pub(crate) fn new(node: Node, secret: Option<Arc<Secret>>) -> Self {
        Self { node, secret }
    }
}

fn decode<T: DeserializeOwned>(req: Request<Payload>) -> Result<T, Status> {
    codec::decode(&req.into_inner().data)
        .map_err(|e| Status::invalid_argument(format!("undecodable request: {e}")))
}

fn reply<T: Serialize>(value: &T) -> Result<Response<Payload>, Status> {
    let data =
        codec::encode(value).map_err(|e| Status::internal(format!("cannot encode reply: {e}")))?;
    Ok(Response::new(Payload { data: data.into() }))
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn append_entries(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(req)?;
        reply(&self.node.raft().append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc: VoteRequest<u64> = decode(req)?;
        reply(&self.node.raft().vote(rpc).await)
    }

    async fn install_snapshot(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(req)?;
        reply(&self.node.raft().install_snapshot(rpc).await)
    }

    async fn forward(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc: ForwardRequest = decode(req)?;
        reply(&self.node.serve_forwarded(rpc).await)
    }

    async fn info(&self, req: Request<InfoRequest>) -> Result<Response<NodeStatus>, Status> {
        let info = self.node.info();
        let metrics = self.node.raft().metrics().borrow().clone();
        let mut response = Response::new(NodeStatus {
            id: self.node.id(),
            cluster_addr: info.cluster_addr.clone(),
            admin_addr: info.admin_addr.clone(),
            proxy_addr: info.proxy_addr.clone(),
            applied_index: metrics.last_applied.map_or(0, |l| l.index),
            term: metrics.current_term,
        });
        if let (Some(secret), Some(challenge)) = (&self.secret, req.metadata().get(CHALLENGE))
            && let Ok(proof) = secret.prove(challenge.as_bytes()).parse()
        {
            response.metadata_mut().insert(PROOF, proof);
        }
        Ok(response)
    }
}
