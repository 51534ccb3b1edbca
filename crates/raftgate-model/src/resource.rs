//! The resources a user configures, as they are stored and replicated.
//!
//! Each spec is exactly the JSON body of a `PUT /{kind}/{name}`; unknown fields are refused so
//! that a typo is an error rather than a silently ignored setting.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A stored resource: the user's spec plus the bookkeeping every resource carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Entity<T> {
    /// Unique name within its kind; the last path segment of its URL.
    pub name: String,
    /// Raft log index of the last write: what `If-Match` compares against.
    pub version: u64,
    /// Creation time, Unix milliseconds, stamped by the node that proposed the write.
    pub created_at: u64,
    /// Time of the last write, Unix milliseconds.
    pub updated_at: u64,
    /// The user-supplied configuration.
    pub spec: T,
}

/// One upstream server of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Base URL, `http://host:port`; a path prefix here is prepended to the request path.
    pub url: String,
    /// Relative share of traffic; 0 takes the target out of rotation without deleting it.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// How a service spreads requests over its targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    /// Weighted round-robin.
    #[default]
    RoundRobin,
}

/// An upstream service: where matched requests go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Upstream servers; at least one.
    pub targets: Vec<Target>,
    /// Balancing policy.
    #[serde(default)]
    pub lb: LbPolicy,
}

/// A route: which requests go to which service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Name of the service that serves this route; it must exist.
    pub service: String,
    /// Path prefixes (each starting with `/`); empty matches every path.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Host names matched against the `Host` header (port ignored); empty matches every host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// HTTP methods, upper case; empty matches every method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Remove the matched path prefix before forwarding upstream.
    #[serde(default)]
    pub strip_path: bool,
}

/// A consumer: an application or user of the APIs, the owner of credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumerSpec {
    /// Your own identifier for this consumer (for example its id in your user database).
    #[serde(default)]
    pub custom_id: Option<String>,
    /// Free-form labels for searching and grouping.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// The window a rate limit counts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RateWindow {
    /// One second.
    Second,
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One day.
    Day,
    /// One calendar month.
    Month,
}

/// A named rate-limit policy: the replicated definition that the rate limiter enforces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    /// Requests allowed per window, cluster-wide.
    pub limit: u64,
    /// Window length.
    pub window: RateWindow,
}

/// An API key as stored: only a hash of the secret is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StoredKey {
    /// Consumer that owns the key.
    pub consumer: String,
    /// First characters of the key, so a user can tell keys apart.
    pub prefix: String,
    /// Hex SHA-256 of the whole key.
    pub hash: String,
}
