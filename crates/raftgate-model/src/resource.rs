//! The resources a user configures, as they are stored and replicated.
//!
//! Each spec is exactly the JSON body of a `PUT /{kind}/{name}`; unknown fields are refused so
//! that a typo is an error rather than a silently ignored setting.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ai::AiLimits;
use crate::catalog::ApiVersionRef;
use crate::policy::{BasicCredential, JwtAlgorithm, JwtCredential, LimitScope, Policies};

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

impl<T> Entity<T> {
    /// An entity at version 1, for building a [`crate::State`] by hand (tests, tools) rather than
    /// through the state machine.
    pub fn new(name: &str, spec: T) -> Self {
        Self {
            name: name.to_string(),
            version: 1,
            created_at: 0,
            updated_at: 0,
            spec,
        }
    }
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
    /// Smooth weighted round-robin.
    #[default]
    RoundRobin,
    /// The target with the fewest requests in flight (weighted), as seen by this node.
    LeastConnections,
    /// Consistent hashing on `hash_on`, so the same client keeps the same target while the
    /// target set is unchanged.
    ConsistentHash,
}

/// What consistent hashing hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HashOn {
    /// The value of this request header (requests without it are balanced round-robin).
    Header(String),
    /// The value of this cookie.
    Cookie(String),
    /// The client's IP address.
    ClientIp,
}

/// Upstream timeouts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// Connecting to a target.
    #[serde(default = "default_connect_ms")]
    pub connect_ms: u64,
    /// Waiting for the response head after the request was sent.
    #[serde(default = "default_read_ms")]
    pub read_ms: u64,
    /// Whole exchange, body included; 0 means no limit.
    #[serde(default)]
    pub total_ms: u64,
}

fn default_connect_ms() -> u64 {
    5_000
}

fn default_read_ms() -> u64 {
    60_000
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect_ms: default_connect_ms(),
            read_ms: default_read_ms(),
            total_ms: 0,
        }
    }
}

/// Active health checking: each node probes each target on its own schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActiveCheck {
    /// Path probed with `GET`.
    #[serde(default = "default_check_path")]
    pub path: String,
    /// Time between probes.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Probe timeout.
    #[serde(default = "default_check_timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive successes (2xx/3xx) that make an unhealthy target healthy again.
    #[serde(default = "default_healthy")]
    pub healthy_threshold: u32,
    /// Consecutive failures that make a healthy target unhealthy.
    #[serde(default = "default_unhealthy")]
    pub unhealthy_threshold: u32,
}

fn default_check_path() -> String {
    "/".into()
}
fn default_interval_ms() -> u64 {
    5_000
}
fn default_check_timeout_ms() -> u64 {
    1_000
}
fn default_healthy() -> u32 {
    2
}
fn default_unhealthy() -> u32 {
    3
}

/// Passive health checking: real traffic that fails ejects a target for a while.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PassiveCheck {
    /// Consecutive failures (connect errors, timeouts, 5xx) that eject a target.
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    /// How long an ejected target stays out of rotation.
    #[serde(default = "default_ejection_ms")]
    pub ejection_ms: u64,
}

fn default_consecutive_failures() -> u32 {
    5
}
fn default_ejection_ms() -> u64 {
    30_000
}

/// Health checking of a service's targets; both kinds are off unless configured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthChecks {
    /// Probes sent by every node.
    #[serde(default)]
    pub active: Option<ActiveCheck>,
    /// Ejection on failing traffic.
    #[serde(default)]
    pub passive: Option<PassiveCheck>,
}

/// An upstream service: where matched requests go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Upstream servers. May be empty when instances register themselves (service discovery).
    /// A target host that is a DNS name is re-resolved every `dns_refresh_ms`.
    #[serde(default)]
    pub targets: Vec<Target>,
    /// Balancing policy.
    #[serde(default)]
    pub lb: LbPolicy,
    /// What `consistent_hash` hashes; required with it.
    #[serde(default)]
    pub hash_on: Option<HashOn>,
    /// Upstream timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// How many times an idempotent request (GET, HEAD, OPTIONS, PUT, DELETE) that failed to
    /// connect, timed out or got a 502/503/504 is retried on another target.
    #[serde(default)]
    pub retries: u32,
    /// Health checks.
    #[serde(default)]
    pub health_checks: HealthChecks,
    /// How often DNS names among the targets are resolved again.
    #[serde(default = "default_dns_refresh_ms")]
    pub dns_refresh_ms: u64,
    /// Policies of every route of this service; a route's own policies override them.
    #[serde(default)]
    pub policies: Policies,
    /// The owning team (see [`crate::access`]); filled in with the caller's team for a team
    /// token, absent for objects of the whole cluster.
    #[serde(default)]
    pub team: Option<String>,
}

fn default_dns_refresh_ms() -> u64 {
    10_000
}

/// The same defaults as an empty JSON object gets.
impl Default for ServiceSpec {
    fn default() -> Self {
        Self {
            targets: Vec::new(),
            lb: LbPolicy::default(),
            hash_on: None,
            timeouts: Timeouts::default(),
            retries: 0,
            health_checks: HealthChecks::default(),
            dns_refresh_ms: default_dns_refresh_ms(),
            policies: Policies::default(),
            team: None,
        }
    }
}

/// Header changes applied by a route, in this order: remove, then set (replacing), then add.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderOps {
    /// Headers to remove.
    #[serde(default)]
    pub remove: Vec<String>,
    /// Headers to set, replacing any value.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Headers to add, keeping existing values.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
}

/// A route: which requests go to which service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Name of the service that serves this route; it must exist.
    pub service: String,
    /// Paths: `/api` is a prefix (matched at a segment boundary), `=/api/v1` an exact path,
    /// `~^/users/[0-9]+$` a regular expression. Empty matches every path.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Host names matched against the `Host` header (port ignored); `*.example.com` matches any
    /// subdomain. Empty matches every host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// HTTP methods, upper case; empty matches every method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Request headers that must be present, each with one of the listed values (any value when
    /// the list is empty). Names are case-insensitive.
    #[serde(default)]
    pub headers: BTreeMap<String, Vec<String>>,
    /// Breaks ties between equally specific routes: higher first.
    #[serde(default)]
    pub priority: i32,
    /// Remove the matched path prefix before forwarding upstream.
    #[serde(default)]
    pub strip_path: bool,
    /// Rewrites the path: for a prefix path, the matched prefix is replaced by this; for a regex
    /// path, this is the replacement (`$1` for the first capture group).
    #[serde(default)]
    pub rewrite: Option<String>,
    /// Changes to the request headers sent upstream.
    #[serde(default)]
    pub request_headers: HeaderOps,
    /// Changes to the response headers sent to the client.
    #[serde(default)]
    pub response_headers: HeaderOps,
    /// Authentication, ACL, limits, CORS: each field set here overrides the service's.
    #[serde(default)]
    pub policies: Policies,
    /// Protocols a client may switch to with an HTTP/1.1 `Upgrade` through this route
    /// (case-insensitive; `[]` passes none). A request asking for another has its `Upgrade`
    /// removed and is forwarded as a plain request. `h2c` is never passed on.
    #[serde(default = "default_upgrades")]
    pub upgrades: Vec<String>,
    /// The owning team (see [`crate::access`]); filled in with the caller's team for a team
    /// token, absent for objects of the whole cluster.
    #[serde(default)]
    pub team: Option<String>,
    /// The API version this route is one of: deleting the version deletes it, and the
    /// version's lifecycle and subscriptions apply to it. Its team must be the API's.
    #[serde(default)]
    pub api_version: Option<ApiVersionRef>,
}

fn default_upgrades() -> Vec<String> {
    vec!["websocket".into()]
}

/// The same defaults as an empty JSON object gets (a service name aside).
impl Default for RouteSpec {
    fn default() -> Self {
        Self {
            service: String::new(),
            paths: Vec::new(),
            hosts: Vec::new(),
            methods: Vec::new(),
            headers: BTreeMap::new(),
            priority: 0,
            strip_path: false,
            rewrite: None,
            request_headers: HeaderOps::default(),
            response_headers: HeaderOps::default(),
            policies: Policies::default(),
            upgrades: default_upgrades(),
            team: None,
            api_version: None,
        }
    }
}

/// A service instance that registered itself (service discovery). It stays in the service's
/// targets while it sends heartbeats more often than every `ttl_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceSpec {
    /// The service this instance serves; it must exist.
    #[serde(default)]
    pub service: String,
    /// Base URL of the instance.
    pub url: String,
    /// Relative share of traffic.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Removed cluster-wide when no heartbeat came for this long.
    #[serde(default = "default_ttl_ms")]
    pub ttl_ms: u64,
}

fn default_ttl_ms() -> u64 {
    30_000
}

/// A TLS certificate and its private key, served for the listed SNI names. The key is never
/// returned by the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificateSpec {
    /// PEM certificate chain, leaf first.
    pub cert: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
    /// Server names this certificate is served for; `*.example.com` wildcards allowed.
    pub snis: Vec<String>,
}

/// A certificate as the admin API shows it: without its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CertificateInfo {
    /// PEM certificate chain.
    pub cert: String,
    /// Server names.
    pub snis: Vec<String>,
}

impl CertificateSpec {
    /// The admin view: the certificate without its key.
    pub fn info(&self) -> CertificateInfo {
        CertificateInfo {
            cert: self.cert.clone(),
            snis: self.snis.clone(),
        }
    }
}

/// A consumer: an application or user of the APIs, the owner of credentials.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumerSpec {
    /// Your own identifier for this consumer (for example its id in your user database).
    #[serde(default)]
    pub custom_id: Option<String>,
    /// Free-form labels for searching and grouping.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Groups this consumer belongs to, for ACLs.
    #[serde(default)]
    pub groups: Vec<String>,
    /// JWT verification keys (shared secrets, public keys or key sets), named by issuer.
    #[serde(default)]
    pub jwt: Vec<JwtCredential>,
    /// HTTP basic credential; the password is hashed by the admin API before it is stored.
    #[serde(default)]
    pub basic_auth: Option<BasicCredential>,
    /// This consumer's own limit for a rate limit, by rate-limit name (overrides its `limit`).
    #[serde(default)]
    pub limits: BTreeMap<String, u64>,
    /// AI model aliases this consumer may use through the AI gateway; empty means all.
    #[serde(default)]
    pub ai_models: Vec<String>,
    /// Budgets and token rate of this consumer's AI gateway calls, all keys together.
    #[serde(default)]
    pub ai_limits: AiLimits,
    /// The owning team: a consumer of a team is one of its applications, which subscribe to
    /// APIs. Filled in with the caller's team for a team token.
    #[serde(default)]
    pub team: Option<String>,
}

/// What the admin API shows of a consumer: its secrets (HS256 JWT secrets, the basic-auth
/// password hash) replaced by whether they are set. They are write-only: a consumer written
/// again without them keeps the stored ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConsumerView {
    /// Your own identifier for this consumer.
    pub custom_id: Option<String>,
    /// Free-form labels.
    pub tags: Vec<String>,
    /// Groups, for ACLs.
    pub groups: Vec<String>,
    /// JWT credentials, without HS256 secrets.
    pub jwt: Vec<JwtCredentialView>,
    /// The basic credential's user name.
    pub basic_auth: Option<BasicCredentialView>,
    /// Own limits by rate-limit name.
    pub limits: BTreeMap<String, u64>,
    /// AI model aliases it may use; empty means all.
    pub ai_models: Vec<String>,
    /// AI budgets and token rate.
    pub ai_limits: AiLimits,
    /// The owning team.
    pub team: Option<String>,
}

/// A JWT credential as the admin API shows it: public keys and key sets are shown, an HS256
/// shared secret never (it would let the reader mint tokens as the consumer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JwtCredentialView {
    /// The `iss` claim of the consumer's tokens.
    pub issuer: String,
    /// Signature algorithm.
    pub algorithm: JwtAlgorithm,
    /// RS256/ES256: the public key in PEM; never the HS256 secret.
    pub key: Option<String>,
    /// RS256/ES256: the JSON Web Key Set.
    pub jwks: Option<String>,
    /// Whether a key is stored.
    pub key_set: bool,
}

/// A basic credential as the admin API shows it: the user name only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BasicCredentialView {
    /// User name.
    pub username: String,
    /// Whether a password (its hash) is stored.
    pub password_set: bool,
}

impl ConsumerSpec {
    /// The admin view: secrets replaced by whether they are set.
    pub fn view(&self) -> ConsumerView {
        ConsumerView {
            custom_id: self.custom_id.clone(),
            tags: self.tags.clone(),
            groups: self.groups.clone(),
            jwt: self
                .jwt
                .iter()
                .map(|j| JwtCredentialView {
                    issuer: j.issuer.clone(),
                    algorithm: j.algorithm,
                    key: j.key.clone().filter(|_| j.algorithm != JwtAlgorithm::HS256),
                    jwks: j.jwks.clone(),
                    key_set: j.key.is_some() || j.jwks.is_some(),
                })
                .collect(),
            basic_auth: self.basic_auth.as_ref().map(|b| BasicCredentialView {
                username: b.username.clone(),
                password_set: !b.password.is_empty(),
            }),
            limits: self.limits.clone(),
            ai_models: self.ai_models.clone(),
            ai_limits: self.ai_limits,
            team: self.team.clone(),
        }
    }
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
    /// One calendar month (fixed), or 30 days (sliding).
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
    /// What is counted separately: each consumer, route, consumer on a route, or client IP.
    #[serde(default)]
    pub scope: LimitScope,
    /// Count in fixed calendar windows (quotas: "10,000 a month") rather than a sliding
    /// window (the last second, minute, hour, day or 30 days, counted in 20–30 buckets).
    #[serde(default)]
    pub fixed: bool,
    /// When this node could not exchange counts with the cluster for a while: admit requests
    /// (true) or refuse them (false, the default).
    #[serde(default)]
    pub fail_open: bool,
    /// The owning team (see [`crate::access`]); filled in with the caller's team for a team
    /// token, absent for objects of the whole cluster.
    #[serde(default)]
    pub team: Option<String>,
}

/// An API key as stored: only a hash of the secret is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StoredKey {
    /// Consumer that owns the key.
    pub consumer: String,
    /// First characters of the key, so a user can tell keys apart.
    pub prefix: String,
    /// Hex SHA-256 of the whole key.
    pub hash: String,
    /// Budgets and token rate of the AI gateway calls made with this key (on top of the
    /// consumer's).
    #[serde(default)]
    pub ai_limits: AiLimits,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_defaults_equal_json_defaults() {
        let from_json: ServiceSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(from_json, ServiceSpec::default());
        let from_json: RouteSpec = serde_json::from_str(r#"{"service":""}"#).unwrap();
        assert_eq!(from_json, RouteSpec::default());
        let from_json: Timeouts = serde_json::from_str("{}").unwrap();
        assert_eq!(from_json, Timeouts::default());
    }
}
