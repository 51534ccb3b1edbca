//! What differs between the two systems under test: how a write is expressed and how the leader
//! is found. Everything else (connections, timing, statistics) is shared so that both systems are
//! measured by exactly the same code.

use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use raftgate_model::api::ClusterStatus;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::conn::Conn;
use crate::error::BenchError;

/// The system a run drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum System {
    /// raftgate's admin API: `PUT /consumers/{name}`.
    Raftgate,
    /// etcd's JSON gateway: `POST /v3/kv/put` (etcd 3.4 and later).
    Etcd,
}

impl System {
    /// The lower-case name used in results.
    pub fn name(self) -> &'static str {
        match self {
            System::Raftgate => "raftgate",
            System::Etcd => "etcd",
        }
    }
}

/// One write to send: method, path and body.
pub struct WriteRequest {
    /// HTTP method.
    pub method: Method,
    /// Request path.
    pub path: String,
    /// JSON body.
    pub body: Bytes,
}

/// Builds the writes of a run so that both systems store a value of the same size.
#[derive(Debug, Clone)]
pub struct Workload {
    system: System,
    /// Length of the stored text: raftgate's `custom_id`, etcd's value.
    value_len: usize,
    /// Distinct keys per worker: writes cycle over them, so after the first pass every write
    /// replaces an existing key.
    keys_per_worker: u64,
}

/// The key count per worker that the benchmark uses unless told otherwise.
pub const DEFAULT_KEYS_PER_WORKER: u64 = 1000;

/// raftgate refuses a `custom_id` longer than this.
const MAX_CUSTOM_ID: usize = 256;

impl Workload {
    /// A workload whose request bodies are about `value_size` bytes for raftgate (the whole JSON
    /// consumer spec, with only `custom_id` set) and carry a `value_size`-byte value for etcd;
    /// each worker cycles over `keys_per_worker` keys (at least one).
    pub fn new(system: System, value_size: usize, keys_per_worker: u64) -> Self {
        let value_len = match system {
            System::Raftgate => {
                let overhead = consumer_body("").len();
                value_size.saturating_sub(overhead).clamp(1, MAX_CUSTOM_ID)
            }
            System::Etcd => value_size.max(1),
        };
        Self {
            system,
            value_len,
            keys_per_worker: keys_per_worker.max(1),
        }
    }

    /// Write number `seq` of worker `worker`.
    pub fn request(&self, worker: usize, seq: u64) -> WriteRequest {
        let key = format!("k{worker}-{}", seq % self.keys_per_worker);
        let value = filler(worker, seq, self.value_len);
        match self.system {
            System::Raftgate => WriteRequest {
                method: Method::PUT,
                path: format!("/consumers/{key}"),
                body: consumer_body(&value),
            },
            System::Etcd => WriteRequest {
                method: Method::POST,
                path: "/v3/kv/put".to_owned(),
                body: to_body(&serde_json::json!({
                    "key": base64(key.as_bytes()),
                    "value": base64(value.as_bytes()),
                })),
            },
        }
    }

    /// Finds which of `endpoints` is the leader, by asking every endpoint who it is and whom it
    /// follows; the leader is the endpoint whose own id most endpoints name as leader.
    pub async fn leader_index(
        &self,
        endpoints: &[String],
        timeout: Duration,
    ) -> Result<usize, BenchError> {
        let mut views = Vec::with_capacity(endpoints.len());
        let mut detail = Vec::new();
        for endpoint in endpoints {
            let mut conn = Conn::new(endpoint.clone());
            match self.member_view(&mut conn, timeout).await {
                Ok(view) => views.push(Some(view)),
                Err(error) => {
                    detail.push(format!("{endpoint}: {error}"));
                    views.push(None);
                }
            }
        }
        let named: Vec<u64> = views.iter().flatten().filter_map(|v| v.leader).collect();
        let leader = named
            .iter()
            .copied()
            .max_by_key(|id| named.iter().filter(|other| *other == id).count());
        let index = leader.and_then(|leader| {
            views
                .iter()
                .position(|view| view.as_ref().is_some_and(|v| v.own_id == leader))
        });
        index.ok_or_else(|| {
            detail.push(format!("leaders named: {named:?}"));
            BenchError::NoLeader {
                endpoints: endpoints.join(","),
                detail: detail.join("; "),
            }
        })
    }

    /// Asks one member for its own id and the leader it knows.
    async fn member_view(
        &self,
        conn: &mut Conn,
        timeout: Duration,
    ) -> Result<MemberView, BenchError> {
        let addr = conn.addr().to_owned();
        let bad = |reason: &str| BenchError::BadAnswer {
            addr: addr.clone(),
            reason: reason.to_owned(),
        };
        match self.system {
            System::Raftgate => {
                let health = conn
                    .send(Method::GET, "/health", Bytes::new(), timeout)
                    .await?
                    .success(&addr)?;
                let health: Value =
                    serde_json::from_slice(&health).map_err(|_| bad("/health is not JSON"))?;
                let own_id = health
                    .get("node_id")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| bad("/health has no node_id"))?;
                let status = conn
                    .send(Method::GET, "/cluster", Bytes::new(), timeout)
                    .await?
                    .success(&addr)?;
                let status: ClusterStatus = serde_json::from_slice(&status)
                    .map_err(|_| bad("/cluster is not a ClusterStatus"))?;
                Ok(MemberView {
                    own_id,
                    leader: status.leader_id,
                })
            }
            System::Etcd => {
                let status = conn
                    .send(
                        Method::POST,
                        "/v3/maintenance/status",
                        Bytes::from_static(b"{}"),
                        timeout,
                    )
                    .await?
                    .success(&addr)?;
                let status: Value = serde_json::from_slice(&status)
                    .map_err(|_| bad("/v3/maintenance/status is not JSON"))?;
                let own_id = status
                    .pointer("/header/member_id")
                    .and_then(json_u64)
                    .ok_or_else(|| bad("status has no header.member_id"))?;
                // etcd reports leader 0 (or omits it) while it knows none.
                let leader = status
                    .get("leader")
                    .and_then(json_u64)
                    .filter(|id| *id != 0);
                Ok(MemberView { own_id, leader })
            }
        }
    }
}

/// One member's answer to "who are you, who leads?".
struct MemberView {
    own_id: u64,
    leader: Option<u64>,
}

/// etcd's gateway writes 64-bit integers as JSON strings; accept both forms.
fn json_u64(value: &Value) -> Option<u64> {
    value
        .as_u64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
}

fn to_body(value: &impl Serialize) -> Bytes {
    // Serializing these plain structs cannot fail; an empty body would show up as a 400 error.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// A printable value of exactly `len` bytes that differs from write to write.
/// A consumer spec with only `custom_id` set (every other field takes its default), so the
/// body's size does not grow with the fields consumers gain.
fn consumer_body(custom_id: &str) -> Bytes {
    to_body(&serde_json::json!({ "custom_id": custom_id }))
}

fn filler(worker: usize, seq: u64, len: usize) -> String {
    let mut value = format!("w{worker}-{seq}-");
    value.truncate(len);
    while value.len() < len {
        value.push('x');
    }
    value
}

/// Standard base64 with padding, as etcd's gateway expects for `bytes` fields.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftgate_model::ConsumerSpec;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
    }

    #[test]
    fn raftgate_body_has_the_requested_size() {
        let request =
            Workload::new(System::Raftgate, 100, DEFAULT_KEYS_PER_WORKER).request(3, 12_345);
        assert_eq!(request.body.len(), 100);
        assert_eq!(request.path, "/consumers/k3-345");
        let spec: ConsumerSpec = serde_json::from_slice(&request.body).unwrap();
        assert!(spec.custom_id.unwrap().starts_with("w3-12345-"));
    }

    #[test]
    fn etcd_value_has_the_requested_size() {
        let request = Workload::new(System::Etcd, 100, DEFAULT_KEYS_PER_WORKER).request(0, 7);
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["key"], base64(b"k0-7"));
        assert_eq!(body["value"].as_str().unwrap().len(), 136); // 100 bytes in base64
    }
}
