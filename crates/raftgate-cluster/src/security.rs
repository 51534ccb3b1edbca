//! Who may talk to a node's cluster port. Two optional layers, usable together or alone:
//!
//! - **mutual TLS** with a cluster CA: every node presents a certificate signed by the CA and
//!   accepts only peers that do, so a machine without such a certificate cannot even complete a
//!   handshake, and Raft traffic (the replicated configuration, keys included) is encrypted;
//! - a **cluster secret**: every RPC carries a value derived from it (`x-raftgate-cluster`
//!   metadata, added by [`Outgoing`]), which the receiving node checks in constant time
//!   ([`Incoming`]) before any Raft or forwarding code runs. A node with another secret, or none,
//!   has its RPCs refused with a log line saying why.
//!
//! A node started without the secret would accept anything, so the secret is also checked the
//! other way: before a node is added as a member, and before the first Raft message on each
//! connection to a peer, the sender makes the receiver prove that it holds the secret (a random
//! [`challenge`], answered in the `Info` reply's metadata). Such a node is therefore never made a
//! member nor sent the log. The secret itself never crosses the wire, only digests of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::service::Interceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use tonic::{Request, Status};

use crate::network::PeerClient;
use crate::pb::{InfoRequest, NodeStatus};

/// Metadata carrying the digest of the cluster secret on every RPC.
const BEARER: &str = "x-raftgate-cluster";
/// Metadata of an `Info` request asking the peer to prove it knows the secret.
pub(crate) const CHALLENGE: &str = "x-raftgate-challenge";
/// Metadata of the `Info` reply answering [`CHALLENGE`].
pub(crate) const PROOF: &str = "x-raftgate-proof";

/// How often a refused peer is logged at `warn`; refusals in between are logged at `debug`, so a
/// misconfigured node retrying every heartbeat does not flood the log.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// PEM files of a node's cluster TLS identity.
#[derive(Clone)]
pub struct TlsFiles {
    /// The cluster CA certificate: peers must present a certificate it signed.
    pub ca: Vec<u8>,
    /// This node's certificate chain, signed by the CA; its names must include the host of the
    /// node's advertised cluster address.
    pub cert: Vec<u8>,
    /// This node's private key.
    pub key: Vec<u8>,
}

/// How a node protects its cluster port; the default is neither TLS nor a secret.
#[derive(Clone, Default)]
pub struct Security {
    /// Mutual TLS with the cluster CA.
    pub tls: Option<TlsFiles>,
    /// The cluster secret every RPC must present.
    pub secret: Option<String>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Security")
            .field("tls", &self.tls.is_some())
            .field("secret", &self.secret.is_some())
            .finish()
    }
}

impl Security {
    /// The URL scheme of peer addresses.
    pub(crate) fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The server side of mutual TLS: this node's identity, and peers must present a
    /// certificate signed by the cluster CA.
    pub(crate) fn server_tls(&self) -> Option<ServerTlsConfig> {
        self.tls.as_ref().map(|t| {
            ServerTlsConfig::new()
                .identity(Identity::from_pem(&t.cert, &t.key))
                .client_ca_root(Certificate::from_pem(&t.ca))
        })
    }

    /// The client side of mutual TLS: trust only the cluster CA, and present this node's identity.
    pub(crate) fn client_tls(&self) -> Option<ClientTlsConfig> {
        self.tls.as_ref().map(|t| {
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&t.ca))
                .identity(Identity::from_pem(&t.cert, &t.key))
        })
    }

    /// The secret's derived values, if a secret is configured.
    pub(crate) fn secret(&self) -> Option<Arc<Secret>> {
        self.secret.as_deref().map(|s| Arc::new(Secret::new(s)))
    }
}

/// Values derived from the cluster secret; the secret itself is not kept.
pub(crate) struct Secret {
    /// Sent with every RPC.
    bearer: AsciiMetadataValue,
    /// Keys the answers to challenges.
    proof_key: [u8; 32],
}

fn derive(purpose: &str, secret: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"raftgate cluster secret v1\0");
    h.update(purpose.as_bytes());
    h.update(b"\0");
    h.update(secret.as_bytes());
    h.finalize().into()
}

impl Secret {
    fn new(secret: &str) -> Secret {
        let bearer = hex::encode(derive("bearer", secret));
        Secret {
            // Hex digits are always valid metadata.
            bearer: AsciiMetadataValue::try_from(bearer)
                .unwrap_or_else(|_| unreachable!("hex digits are valid ASCII metadata")),
            proof_key: derive("proof", secret),
        }
    }

    /// The answer to `challenge`, which only holders of the secret can compute.
    pub(crate) fn prove(&self, challenge: &[u8]) -> String {
        let mut h = Sha256::new();
        h.update(self.proof_key);
        h.update(challenge);
        hex::encode(h.finalize())
    }

    /// Whether the reply metadata answers `challenge` correctly.
    pub(crate) fn verify(&self, challenge: &[u8], reply: &MetadataMap) -> bool {
        let expected = self.prove(challenge);
        reply
            .get(PROOF)
            .is_some_and(|v| bool::from(v.as_bytes().ct_eq(expected.as_bytes())))
    }
}

/// Adds the secret's bearer value to every outgoing RPC.
#[derive(Clone, Default)]
pub struct Outgoing(pub(crate) Option<Arc<Secret>>);

impl Interceptor for Outgoing {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(secret) = &self.0 {
            request.metadata_mut().insert(BEARER, secret.bearer.clone());
        }
        Ok(request)
    }
}

/// Refuses incoming RPCs that do not carry this node's cluster secret.
#[derive(Clone, Default)]
pub struct Incoming(pub(crate) Option<Arc<Secret>>);

impl Interceptor for Incoming {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(secret) = &self.0 else {
            return Ok(request);
        };
        let presented = request.metadata().get(BEARER);
        let ok =
            presented.is_some_and(|v| bool::from(v.as_bytes().ct_eq(secret.bearer.as_bytes())));
        if ok {
            return Ok(request);
        }
        let peer = request
            .remote_addr()
            .map_or_else(|| "an unknown address".to_string(), |a| a.to_string());
        let why = if presented.is_some() {
            "a different cluster secret"
        } else {
            "no cluster secret"
        };
        static REFUSED: Throttle = Throttle::new();
        if REFUSED.due() {
            tracing::warn!(
                %peer,
                "refused a cluster RPC from {peer}: it presented {why}; every node of a cluster must run with the same --cluster-secret"
            );
        } else {
            tracing::debug!(%peer, "refused a cluster RPC: {why}");
        }
        Err(Status::unauthenticated(format!(
            "refused: {why} presented; this node requires the cluster's --cluster-secret"
        )))
    }
}

/// Makes the peer behind `client` prove, within `timeout`, that it completes the TLS handshake
/// (when configured) and holds `secret` (when there is one); returns what the peer says about
/// itself, or why it did not prove it.
pub(crate) async fn challenge(
    client: &mut PeerClient,
    secret: Option<&Secret>,
    timeout: Duration,
) -> Result<NodeStatus, String> {
    let challenge = hex::encode(rand::random::<[u8; 16]>());
    let mut req = Request::new(InfoRequest {});
    req.set_timeout(timeout);
    if let Ok(value) = challenge.parse() {
        req.metadata_mut().insert(CHALLENGE, value);
    }
    let reply = tokio::time::timeout(timeout, client.info(req))
        .await
        .map_err(|_| "no answer in time".to_string())?
        .map_err(|status| status.message().to_string())?;
    match secret {
        Some(secret) if !secret.verify(challenge.as_bytes(), reply.metadata()) => {
            Err("it could not prove that it holds the cluster secret".into())
        }
        _ => Ok(reply.into_inner()),
    }
}

/// Limits one kind of refusal to a `warn` line every [`WARN_EVERY`].
pub(crate) struct Throttle(AtomicU64);

impl Throttle {
    /// A throttle that lets the first refusal through.
    pub(crate) const fn new() -> Throttle {
        Throttle(AtomicU64::new(0))
    }

    /// Whether enough time passed since the last refusal logged at `warn`.
    pub(crate) fn due(&self) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let last = self.0.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= WARN_EVERY.as_millis() as u64;
        due && self
            .0
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_bearer(from: &Outgoing) -> Request<()> {
        from.clone().call(Request::new(())).unwrap()
    }

    #[test]
    fn only_the_same_secret_passes() {
        let ours = Security {
            secret: Some("s3cret".into()),
            ..Security::default()
        };
        let theirs = Security {
            secret: Some("other".into()),
            ..Security::default()
        };
        let mut check = Incoming(ours.secret());
        assert!(check.call(with_bearer(&Outgoing(ours.secret()))).is_ok());
        let wrong = check.call(with_bearer(&Outgoing(theirs.secret())));
        assert_eq!(wrong.unwrap_err().code(), tonic::Code::Unauthenticated);
        let missing = check.call(with_bearer(&Outgoing(None)));
        assert_eq!(missing.unwrap_err().code(), tonic::Code::Unauthenticated);
        // A node without a secret accepts anything.
        assert!(Incoming(None).call(Request::new(())).is_ok());
    }

    #[test]
    fn only_holders_of_the_secret_answer_a_challenge() {
        let ours = Security {
            secret: Some("s3cret".into()),
            ..Security::default()
        }
        .secret()
        .unwrap();
        let theirs = Secret::new("other");
        let challenge = b"0123456789abcdef";
        let answer = |by: &Secret| {
            let mut m = MetadataMap::new();
            m.insert(PROOF, by.prove(challenge).parse().unwrap());
            m
        };
        assert!(ours.verify(challenge, &answer(&ours)));
        assert!(!ours.verify(challenge, &answer(&theirs)));
        assert!(!ours.verify(challenge, &MetadataMap::new()));
        assert!(!ours.verify(b"another challenge", &answer(&ours)));
    }
}
