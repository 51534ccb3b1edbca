//! A small typed client for the raftgate admin API.
//!
//! The CLI, the integration tests and the benchmarks all talk to nodes through [`AdminClient`], so
//! the URL layout, the headers (`If-Match`, bearer token) and the error decoding live in one place
//! and use the same body types as the server ([`raftgate_model::api`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), raftgate_client::ClientError> {
//! use raftgate_client::AdminClient;
//! use raftgate_model::{ServiceSpec, Target};
//!
//! let client = AdminClient::new("127.0.0.1:7001", None)?;
//! let spec = ServiceSpec {
//!     targets: vec![Target { url: "http://127.0.0.1:9000".into(), weight: 1 }],
//!     ..Default::default()
//! };
//! let stored = client.put("svc", &spec, None).await?;
//! println!("svc is at version {}", stored.version);
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, IF_MATCH};
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use raftgate_model::access::TeamSpec;
use raftgate_model::access::{AuditEntry, TokenRole};
use raftgate_model::ai::{
    ModelConfig, Period, ProviderConfig, ProviderView, UsageQuery, UsageReport,
};
use raftgate_model::analytics::{AnalyticsQuery, AnalyticsReport, TopQuery, TopReport};
use raftgate_model::api::{
    AddMember, ClusterNodes, ClusterStatus, CreatedKey, ErrorBody, Health, KeyInfo, KeySettings,
    NodeUpstreams, Ready,
};
use raftgate_model::api::{CreateToken, CreatedToken, Subscribe, TokenInfo, Transition};
use raftgate_model::catalog::{ApiSpec, ApiVersionSpec, Lifecycle, SubscriptionSpec};
use raftgate_model::policy::ConsumerUsage;
use raftgate_model::prompt::PromptSpec;
use raftgate_model::state::Resource;
use raftgate_model::{
    ConsumerSpec, Entity, InstanceSpec, Kind, NodeId, RateLimitSpec, RouteSpec, ServiceSpec,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// How long a request may take, connection included, unless [`AdminClient::with_timeout`] says
/// otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an admin API call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The base address given to [`AdminClient::new`] (or a path built from it) is not usable.
    #[error("invalid admin API address '{address}': {reason}; use host:port or http://host:port")]
    InvalidUrl {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The server answered with a non-success status; `body` is its [`ErrorBody`] (synthesized
    /// from the status when the answer carried none).
    #[error("admin API answered {status}: {} ({}{})", body.message, body.error,
        body.field.as_deref().map(|f| format!(", field '{f}'")).unwrap_or_default())]
    Api {
        /// HTTP status of the answer.
        status: StatusCode,
        /// The decoded error body.
        body: ErrorBody,
    },
    /// No answer: the connection failed, broke, or the request timed out.
    #[error(
        "no answer from the admin API at {url}: {reason}; check that the node is running and listening there"
    )]
    Transport {
        /// The URL requested.
        url: String,
        /// What went wrong (connection refused, timeout, ...).
        reason: String,
    },
    /// The server answered with success but the body is not what the API promises.
    #[error(
        "unexpected answer from {url}: {reason}; are client and server the same raftgate version?"
    )]
    Decode {
        /// The URL requested.
        url: String,
        /// What could not be decoded.
        reason: String,
    },
}

impl ClientError {
    /// The HTTP status when the server answered with an error, so callers can branch on 404, 412...
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The resources that have their own admin URL collection (`/{collection}/{name}`, see
/// [`Kind::collection`]); API keys do not, they live under their consumer (see
/// [`AdminClient::create_key`]). Answers carry the resource's admin view (`Resource::View`:
/// the spec without its secrets). AI providers have their own methods
/// ([`AdminClient::put_ai_provider`]).
pub trait AdminResource: Resource {}

impl AdminResource for ServiceSpec {}
impl AdminResource for RouteSpec {}
impl AdminResource for ConsumerSpec {}
impl AdminResource for RateLimitSpec {}
impl AdminResource for ModelConfig {}
impl AdminResource for PromptSpec {}
impl AdminResource for TeamSpec {}
impl AdminResource for ApiSpec {}

/// The kinds kept under an API (`/apis/{api}/{collection}/{name}`, see [`Kind::collection`]):
/// its versions and its subscriptions.
pub trait CatalogResource: Resource<View = Self> {}

impl CatalogResource for ApiVersionSpec {}
impl CatalogResource for SubscriptionSpec {}

/// The `{"data": [...]}` envelope of list answers.
#[derive(Deserialize)]
struct Listing<T> {
    data: Vec<T>,
}

/// Raw answer of [`AdminClient::request`]: status, headers and the whole body.
pub type RawResponse = (StatusCode, HeaderMap, Bytes);

/// A client for one node's admin API. Cheap to clone: clones share the keep-alive pool.
#[derive(Clone, Debug)]
pub struct AdminClient {
    base: String,
    token: Option<String>,
    timeout: Duration,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl AdminClient {
    /// A client for the node whose admin API listens at `base` (`host:port` or `http://host:port`),
    /// sending `Authorization: Bearer <token>` when a token is given.
    pub fn new(base: &str, token: Option<String>) -> Result<Self, ClientError> {
        let invalid = |reason: &str| ClientError::InvalidUrl {
            address: base.to_owned(),
            reason: reason.to_owned(),
        };
        let trimmed = base.trim().trim_end_matches('/');
        if trimmed.starts_with("https://") {
            return Err(invalid("TLS is not supported by the admin API"));
        }
        let with_scheme = if trimmed.starts_with("http://") {
            trimmed.to_owned()
        } else {
            format!("http://{trimmed}")
        };
        let uri: Uri = with_scheme
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
        if uri.host().is_none_or(str::is_empty) {
            return Err(invalid("no host"));
        }
        if uri.path() != "/" && !uri.path().is_empty() {
            return Err(invalid("a path is not allowed"));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(DEFAULT_TIMEOUT));
        let http = Client::builder(TokioExecutor::new()).build(connector);
        Ok(AdminClient {
            base: with_scheme,
            token,
            timeout: DEFAULT_TIMEOUT,
            http,
        })
    }

    /// The same client with another per-request timeout (connection, request and whole body).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The base URL, `http://host:port`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends any request and returns the answer as is, whatever its status: for callers that need
    /// headers or want to send malformed input. `path` includes the query string. The bearer token
    /// is added unless `headers` already has an `Authorization`; `Content-Type: application/json`
    /// is added to a body unless `headers` sets one.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: HeaderMap,
    ) -> Result<RawResponse, ClientError> {
        let url = format!("{}{}", self.base, path);
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| ClientError::InvalidUrl {
                address: url.clone(),
                reason: e.to_string(),
            })?;
        let has_body = body.is_some();
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::InvalidUrl {
                address: url.clone(),
                reason: e.to_string(),
            })?;
        let sent = request.headers_mut();
        if let Some(token) = &self.token
            && !headers.contains_key(AUTHORIZATION)
        {
            let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                ClientError::InvalidUrl {
                    address: url.clone(),
                    reason: "the admin token contains characters not allowed in a header".into(),
                }
            })?;
            sent.insert(AUTHORIZATION, value);
        }
        if has_body && !headers.contains_key(CONTENT_TYPE) {
            sent.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        sent.extend(headers);

        let exchange = async {
            let response = self.http.request(request).await.map_err(|e| {
                // The legacy client's own message is terse; its source says what really failed.
                let reason = std::error::Error::source(&e)
                    .map_or_else(|| e.to_string(), |s| format!("{e}: {s}"));
                ClientError::Transport {
                    url: url.clone(),
                    reason,
                }
            })?;
            let (parts, body) = response.into_parts();
            let bytes = body
                .collect()
                .await
                .map_err(|e| ClientError::Transport {
                    url: url.clone(),
                    reason: format!("reading the answer failed: {e}"),
                })?
                .to_bytes();
            Ok((parts.status, parts.headers, bytes))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ClientError::Transport {
                url: url.clone(),
                reason: format!("timed out after {:?}", self.timeout),
            })?
    }

    /// Sends a request with an optional JSON body and decodes a successful JSON answer; an error
    /// status becomes [`ClientError::Api`].
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        if_match: Option<u64>,
    ) -> Result<T, ClientError> {
        let bytes = self.send(method, path, body, if_match).await?;
        self.decode(path, &bytes)
    }

    /// A successful JSON answer to `path`, decoded.
    fn decode<T: DeserializeOwned>(&self, path: &str, bytes: &[u8]) -> Result<T, ClientError> {
        serde_json::from_slice(bytes).map_err(|e| ClientError::Decode {
            url: format!("{}{}", self.base, path),
            reason: e.to_string(),
        })
    }

    /// Like [`Self::call`] but returns the body undecoded (for answers without one, like 204).
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        if_match: Option<u64>,
    ) -> Result<Bytes, ClientError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| ClientError::Decode {
                url: format!("{}{}", self.base, path),
                reason: format!("cannot encode the request body: {e}"),
            })?;
        let mut headers = HeaderMap::new();
        if let Some(version) = if_match {
            headers.insert(IF_MATCH, HeaderValue::from(version));
        }
        self.exchange(method, path, body, headers)
            .await
            .map(|(_, bytes)| bytes)
    }

    /// [`Self::request`] with an error status made a [`ClientError::Api`]: the headers and
    /// body of a successful answer.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: HeaderMap,
    ) -> Result<(HeaderMap, Bytes), ClientError> {
        let (status, headers, bytes) = self.request(method, path, body, headers).await?;
        if status.is_success() {
            Ok((headers, bytes))
        } else {
            Err(api_error(status, &bytes))
        }
    }

    /// Creates or replaces `name` (`PUT /{kind}/{name}`). With `if_match`, only if the stored
    /// version is that one (0: only if it does not exist yet); otherwise the error has status 412.
    pub async fn put<T: AdminResource>(
        &self,
        name: &str,
        spec: &T,
        if_match: Option<u64>,
    ) -> Result<Entity<T::View>, ClientError> {
        self.call(Method::PUT, &item_path::<T>(name), Some(spec), if_match)
            .await
    }

    /// Reads `name` from the answering node's local copy, which may lag the leader slightly.
    pub async fn get<T: AdminResource>(&self, name: &str) -> Result<Entity<T::View>, ClientError> {
        self.call(Method::GET, &item_path::<T>(name), NO_BODY, None)
            .await
    }

    /// Reads `name` linearizably: the answer reflects every write acknowledged before the call.
    pub async fn get_consistent<T: AdminResource>(
        &self,
        name: &str,
    ) -> Result<Entity<T::View>, ClientError> {
        let path = format!("{}?consistent=true", item_path::<T>(name));
        self.call(Method::GET, &path, NO_BODY, None).await
    }

    /// Lists every resource of a kind from the answering node's local copy.
    pub async fn list<T: AdminResource>(&self) -> Result<Vec<Entity<T::View>>, ClientError> {
        let path = format!("/{}", T::KIND.collection());
        let listing: Listing<Entity<T::View>> =
            self.call(Method::GET, &path, NO_BODY, None).await?;
        Ok(listing.data)
    }

    /// Lists every resource of a kind linearizably.
    pub async fn list_consistent<T: AdminResource>(
        &self,
    ) -> Result<Vec<Entity<T::View>>, ClientError> {
        let path = format!("/{}?consistent=true", T::KIND.collection());
        let listing: Listing<Entity<T::View>> =
            self.call(Method::GET, &path, NO_BODY, None).await?;
        Ok(listing.data)
    }

    /// Creates or replaces AI provider `name` (`PUT /ai/providers/{name}`); its credential is
    /// encrypted by the cluster and never returned, so the answer is the provider's view.
    pub async fn put_ai_provider(
        &self,
        name: &str,
        spec: &ProviderConfig,
    ) -> Result<Entity<ProviderView>, ClientError> {
        self.call(Method::PUT, &provider_path(name), Some(spec), None)
            .await
    }

    /// Reads AI provider `name` (without its credential).
    pub async fn get_ai_provider(&self, name: &str) -> Result<Entity<ProviderView>, ClientError> {
        self.call(Method::GET, &provider_path(name), NO_BODY, None)
            .await
    }

    /// Deletes AI provider `name`.
    pub async fn delete_ai_provider(&self, name: &str) -> Result<(), ClientError> {
        self.send(Method::DELETE, &provider_path(name), NO_BODY, None)
            .await
            .map(drop)
    }

    /// Deletes `name`, optionally only if it is at version `if_match`.
    pub async fn delete<T: AdminResource>(
        &self,
        name: &str,
        if_match: Option<u64>,
    ) -> Result<(), ClientError> {
        self.send(Method::DELETE, &item_path::<T>(name), NO_BODY, if_match)
            .await
            .map(drop)
    }

    /// Creates an API key for `consumer`; the answer holds the secret, which cannot be read again.
    pub async fn create_key(&self, consumer: &str) -> Result<CreatedKey, ClientError> {
        self.call(Method::POST, &keys_path(consumer), NO_BODY, None)
            .await
    }

    /// Creates an API key for `consumer` with `settings` (its AI limits).
    pub async fn create_key_with(
        &self,
        consumer: &str,
        settings: &KeySettings,
    ) -> Result<CreatedKey, ClientError> {
        self.call(Method::POST, &keys_path(consumer), Some(settings), None)
            .await
    }

    /// Replaces the settings of key `id` of `consumer`; the secret stays.
    pub async fn update_key(
        &self,
        consumer: &str,
        id: &str,
        settings: &KeySettings,
    ) -> Result<KeyInfo, ClientError> {
        let path = format!("{}/{}", keys_path(consumer), encode_segment(id));
        self.call(Method::PUT, &path, Some(settings), None).await
    }

    /// The rate-limit and quota counters of `consumer`, cluster-wide.
    pub async fn consumer_usage(&self, consumer: &str) -> Result<ConsumerUsage, ClientError> {
        let path = format!(
            "/{}/{}/usage",
            Kind::Consumer.collection(),
            encode_segment(consumer)
        );
        self.call(Method::GET, &path, NO_BODY, None).await
    }

    /// The AI gateway's usage that `query` selects (`GET /ai/usage`).
    pub async fn ai_usage(&self, query: &UsageQuery) -> Result<UsageReport, ClientError> {
        let mut params = Vec::new();
        if let Some(c) = &query.consumer {
            params.push(format!("consumer={}", encode_segment(c)));
        }
        if let Some(k) = &query.key {
            params.push(format!("key={}", encode_segment(k)));
        }
        if let Some(m) = &query.model {
            params.push(format!("model={}", encode_segment(m)));
        }
        if let Some(p) = &query.provider {
            params.push(format!("provider={}", encode_segment(p)));
        }
        if let Some(f) = query.from {
            params.push(format!("from={f}"));
        }
        if let Some(t) = query.to {
            params.push(format!("to={t}"));
        }
        if let Some(p) = query.period {
            params.push(format!(
                "period={}",
                if p == Period::Hour { "hour" } else { "day" }
            ));
        }
        let path = format!("/ai/usage?{}", params.join("&"));
        self.call(Method::GET, &path, NO_BODY, None).await
    }

    /// The cluster's traffic analytics that `query` selects (`GET /analytics`).
    pub async fn analytics(&self, query: &AnalyticsQuery) -> Result<AnalyticsReport, ClientError> {
        let path = format!("/analytics?{}", analytics_params(query).join("&"));
        self.call(Method::GET, &path, NO_BODY, None).await
    }

    /// The groups with the most of a metric in the traffic `filter` selects (`GET
    /// /analytics/top`).
    pub async fn analytics_top(
        &self,
        top: &TopQuery,
        filter: &AnalyticsQuery,
    ) -> Result<TopReport, ClientError> {
        let mut params = analytics_params(filter);
        params.push(format!("by={}", json_word(&top.by)));
        params.push(format!("metric={}", json_word(&top.metric)));
        if let Some(limit) = top.limit {
            params.push(format!("limit={limit}"));
        }
        let path = format!("/analytics/top?{}", params.join("&"));
        self.call(Method::GET, &path, NO_BODY, None).await
    }

    /// Lists the keys of `consumer` (without secrets).
    pub async fn list_keys(&self, consumer: &str) -> Result<Vec<KeyInfo>, ClientError> {
        let listing: Listing<KeyInfo> = self
            .call(Method::GET, &keys_path(consumer), NO_BODY, None)
            .await?;
        Ok(listing.data)
    }

    /// Registers (or re-registers) instance `id` of `service` (`PUT
    /// /services/{service}/instances/{id}`); it stays while heartbeats come within its TTL.
    pub async fn register_instance(
        &self,
        service: &str,
        id: &str,
        instance: &InstanceSpec,
    ) -> Result<Entity<InstanceSpec>, ClientError> {
        self.call(
            Method::PUT,
            &instance_path(service, id),
            Some(instance),
            None,
        )
        .await
    }

    /// Keeps instance `id` of `service` alive for another TTL; 404 once it has lapsed.
    pub async fn heartbeat_instance(
        &self,
        service: &str,
        id: &str,
    ) -> Result<Entity<InstanceSpec>, ClientError> {
        let path = format!("{}/heartbeat", instance_path(service, id));
        self.call(Method::PUT, &path, NO_BODY, None).await
    }

    /// The instances registered for `service`, as this node knows them.
    pub async fn list_instances(
        &self,
        service: &str,
    ) -> Result<Vec<Entity<InstanceSpec>>, ClientError> {
        let path = format!(
            "/{}/{}/instances",
            Kind::Service.collection(),
            encode_segment(service)
        );
        let listing: Listing<Entity<InstanceSpec>> =
            self.call(Method::GET, &path, NO_BODY, None).await?;
        Ok(listing.data)
    }

    /// Revokes key `id` of `consumer`.
    pub async fn delete_key(&self, consumer: &str, id: &str) -> Result<(), ClientError> {
        let path = format!("{}/{}", keys_path(consumer), encode_segment(id));
        self.send(Method::DELETE, &path, NO_BODY, None)
            .await
            .map(drop)
    }

    /// `GET /cluster`: leader, term and members as the answering node sees them.
    pub async fn cluster_status(&self) -> Result<ClusterStatus, ClientError> {
        self.call(Method::GET, "/cluster", NO_BODY, None).await
    }

    /// Every member with its health (`GET /cluster/nodes`): a member that does not answer is
    /// reported down rather than failing the call.
    pub async fn cluster_nodes(&self) -> Result<ClusterNodes, ClientError> {
        self.call(Method::GET, "/cluster/nodes", NO_BODY, None)
            .await
    }

    /// Adds a running node to the cluster (it catches up as a learner, then votes).
    pub async fn add_member(&self, member: &AddMember) -> Result<ClusterStatus, ClientError> {
        self.call(Method::POST, "/cluster/members", Some(member), None)
            .await
    }

    /// Removes node `id` from the cluster.
    pub async fn remove_member(&self, id: NodeId) -> Result<ClusterStatus, ClientError> {
        self.call(
            Method::DELETE,
            &format!("/cluster/members/{id}"),
            NO_BODY,
            None,
        )
        .await
    }

    /// Makes the answering node take a snapshot and purge its log up to it
    /// (`POST /cluster/snapshot`); new members are then brought up to date by snapshot.
    pub async fn trigger_snapshot(&self) -> Result<(), ClientError> {
        self.send(Method::POST, "/cluster/snapshot", NO_BODY, None)
            .await
            .map(drop)
    }

    /// `GET /upstreams/health`: this node's view of its upstream targets.
    pub async fn upstream_health(&self) -> Result<Vec<NodeUpstreams>, ClientError> {
        self.call(Method::GET, "/upstreams/health", NO_BODY, None)
            .await
    }

    /// `GET /metrics`: the node's metrics in the Prometheus text format.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let bytes = self.send(Method::GET, "/metrics", NO_BODY, None).await?;
        String::from_utf8(bytes.to_vec()).map_err(|e| ClientError::Decode {
            url: format!("{}/metrics", self.base),
            reason: format!("the metrics are not UTF-8: {e}"),
        })
    }

    /// `GET /upstreams/health?cluster=true`: every member's view of its upstream targets.
    pub async fn cluster_upstream_health(&self) -> Result<Vec<NodeUpstreams>, ClientError> {
        self.call(Method::GET, "/upstreams/health?cluster=true", NO_BODY, None)
            .await
    }

    /// Creates admin token `name` with cluster role `role` (`POST /tokens`); the answer holds
    /// the secret, which cannot be read again.
    pub async fn create_token(
        &self,
        name: &str,
        role: TokenRole,
    ) -> Result<CreatedToken, ClientError> {
        self.create_team_token(name, role, None).await
    }

    /// Creates admin token `name` with `role` in `team` (a team role: owner, developer or
    /// viewer; a team owner's token may leave `team` out for its own team).
    pub async fn create_team_token(
        &self,
        name: &str,
        role: TokenRole,
        team: Option<&str>,
    ) -> Result<CreatedToken, ClientError> {
        let body = CreateToken {
            name: name.to_owned(),
            role,
            team: team.map(str::to_owned),
        };
        self.call(Method::POST, "/tokens", Some(&body), None).await
    }

    /// Lists the admin tokens (names, roles, prefixes; never secrets).
    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>, ClientError> {
        let listing: Listing<TokenInfo> = self.call(Method::GET, "/tokens", NO_BODY, None).await?;
        Ok(listing.data)
    }

    /// Revokes admin token `name` on every node.
    pub async fn delete_token(&self, name: &str) -> Result<(), ClientError> {
        let path = format!("/tokens/{}", encode_segment(name));
        self.send(Method::DELETE, &path, NO_BODY, None)
            .await
            .map(drop)
    }

    /// `GET /audit`: the answering node's copy of the audit log, oldest first — the last `limit`
    /// entries, or with `since` the first `limit` entries after that log index.
    pub async fn audit(
        &self,
        limit: Option<usize>,
        since: Option<u64>,
    ) -> Result<Vec<AuditEntry>, ClientError> {
        let mut query = Vec::new();
        if let Some(limit) = limit {
            query.push(format!("limit={limit}"));
        }
        if let Some(since) = since {
            query.push(format!("since={since}"));
        }
        let path = if query.is_empty() {
            "/audit".to_owned()
        } else {
            format!("/audit?{}", query.join("&"))
        };
        let listing: Listing<AuditEntry> = self.call(Method::GET, &path, NO_BODY, None).await?;
        Ok(listing.data)
    }

    /// Creates or replaces version `version` of API `api` (`PUT /apis/{api}/versions/{version}`);
    /// with `if_match`, only at that stored version. A state change must be an allowed move.
    pub async fn put_version(
        &self,
        api: &str,
        version: &str,
        spec: &ApiVersionSpec,
        if_match: Option<u64>,
    ) -> Result<Entity<ApiVersionSpec>, ClientError> {
        let path = catalog_path(api, Kind::ApiVersion.collection(), Some(version));
        self.call(Method::PUT, &path, Some(spec), if_match).await
    }

    /// Reads `name` of kind `R` under API `api`: a version (`get_under::<ApiVersionSpec>`) or
    /// the subscription of an application (`get_under::<SubscriptionSpec>`); its own name is
    /// `"{api}/{name}"`.
    pub async fn get_under<R: CatalogResource>(
        &self,
        api: &str,
        name: &str,
    ) -> Result<Entity<R>, ClientError> {
        let path = catalog_path(api, R::KIND.collection(), Some(name));
        self.call(Method::GET, &path, NO_BODY, None).await
    }

    /// Lists what of kind `R` under API `api` the token may see: its versions or its
    /// subscriptions.
    pub async fn list_under<R: CatalogResource>(
        &self,
        api: &str,
    ) -> Result<Vec<Entity<R>>, ClientError> {
        let path = catalog_path(api, R::KIND.collection(), None);
        let listing: Listing<_> = self.call(Method::GET, &path, NO_BODY, None).await?;
        Ok(listing.data)
    }

    /// Deletes version `version` of API `api`, and its routes with it.
    pub async fn delete_version(
        &self,
        api: &str,
        version: &str,
        if_match: Option<u64>,
    ) -> Result<(), ClientError> {
        let path = catalog_path(api, Kind::ApiVersion.collection(), Some(version));
        self.send(Method::DELETE, &path, NO_BODY, if_match)
            .await
            .map(drop)
    }

    /// Moves version `version` of API `api` to lifecycle state `to`
    /// (`POST .../transition`); 409 names the allowed moves when it may not.
    pub async fn transition(
        &self,
        api: &str,
        version: &str,
        to: Lifecycle,
    ) -> Result<Entity<ApiVersionSpec>, ClientError> {
        let path = format!(
            "{}/transition",
            catalog_path(api, Kind::ApiVersion.collection(), Some(version))
        );
        self.call(Method::POST, &path, Some(&Transition { to }), None)
            .await
    }

    /// Replaces the routes of version `version` of API `api` with one per path and method of
    /// the OpenAPI 3.0 or 3.1 `document` (`POST .../import`), sent as `content_type` (JSON or
    /// YAML; without one the server tells them apart), and keeps the document. Answers the
    /// version's routes now; a 400 names where in the document the problem is.
    pub async fn import_openapi(
        &self,
        api: &str,
        version: &str,
        document: Vec<u8>,
        content_type: Option<&str>,
    ) -> Result<Vec<Entity<RouteSpec>>, ClientError> {
        let path = format!(
            "{}/import",
            catalog_path(api, Kind::ApiVersion.collection(), Some(version))
        );
        let mut headers = HeaderMap::new();
        let content_type = content_type.unwrap_or("application/octet-stream");
        let value = HeaderValue::from_str(content_type).map_err(|_| ClientError::InvalidUrl {
            address: format!("{}{path}", self.base),
            reason: format!("'{content_type}' is not a valid Content-Type"),
        })?;
        headers.insert(CONTENT_TYPE, value);
        let (_, bytes) = self
            .exchange(Method::POST, &path, Some(document), headers)
            .await?;
        let listing: Listing<_> = self.decode(&path, &bytes)?;
        Ok(listing.data)
    }

    /// The OpenAPI document of version `version` of API `api` as it was imported, with its
    /// media type (`application/json` or `application/yaml`).
    pub async fn get_openapi(
        &self,
        api: &str,
        version: &str,
    ) -> Result<(String, String), ClientError> {
        let path = format!(
            "{}/openapi",
            catalog_path(api, Kind::ApiVersion.collection(), Some(version))
        );
        let (headers, bytes) = self
            .exchange(Method::GET, &path, None, HeaderMap::new())
            .await?;
        let media = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok((media, String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Subscribes `application` to API `api` on `plan` (`POST /apis/{api}/subscriptions`):
    /// active at once or pending approval, as the API says.
    pub async fn subscribe(
        &self,
        api: &str,
        application: &str,
        plan: Option<&str>,
    ) -> Result<Entity<SubscriptionSpec>, ClientError> {
        let body = Subscribe {
            application: application.to_owned(),
            plan: plan.map(str::to_owned),
        };
        let path = catalog_path(api, Kind::Subscription.collection(), None);
        self.call(Method::POST, &path, Some(&body), None).await
    }

    /// Approves (`approve`) or rejects the pending subscription of `application` to `api`.
    pub async fn decide_subscription(
        &self,
        api: &str,
        application: &str,
        approve: bool,
    ) -> Result<Entity<SubscriptionSpec>, ClientError> {
        let verb = if approve { "approve" } else { "reject" };
        let path = format!(
            "{}/{verb}",
            catalog_path(api, Kind::Subscription.collection(), Some(application))
        );
        self.call(Method::POST, &path, NO_BODY, None).await
    }

    /// Revokes (deletes) the subscription of `application` to API `api`.
    pub async fn revoke_subscription(
        &self,
        api: &str,
        application: &str,
    ) -> Result<(), ClientError> {
        let path = catalog_path(api, Kind::Subscription.collection(), Some(application));
        self.send(Method::DELETE, &path, NO_BODY, None)
            .await
            .map(drop)
    }

    /// `GET /health`: whether the node answers, and its id.
    pub async fn health(&self) -> Result<Health, ClientError> {
        self.call(Method::GET, "/health", NO_BODY, None).await
    }

    /// `GET /ready`: whether the node can have writes committed now (503 when it cannot).
    pub async fn ready(&self) -> Result<Ready, ClientError> {
        self.call(Method::GET, "/ready", NO_BODY, None).await
    }
}

/// The `body` argument of a call without a body.
const NO_BODY: Option<&()> = None;

fn provider_path(name: &str) -> String {
    format!(
        "/{}/{}",
        Kind::AiProvider.collection(),
        encode_segment(name)
    )
}

fn item_path<T: AdminResource>(name: &str) -> String {
    format!("/{}/{}", T::KIND.collection(), encode_segment(name))
}

/// `/apis/{api}/{collection}[/{name}]`: an API's versions or subscriptions.
fn catalog_path(api: &str, collection: &str, name: Option<&str>) -> String {
    let base = format!(
        "/{}/{}/{collection}",
        Kind::Api.collection(),
        encode_segment(api)
    );
    match name {
        Some(name) => format!("{base}/{}", encode_segment(name)),
        None => base,
    }
}

fn instance_path(service: &str, id: &str) -> String {
    format!(
        "/{}/{}/instances/{}",
        Kind::Service.collection(),
        encode_segment(service),
        encode_segment(id)
    )
}

fn keys_path(consumer: &str) -> String {
    format!(
        "/{}/{}/keys",
        Kind::Consumer.collection(),
        encode_segment(consumer)
    )
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so that any name reaches the
/// server intact and the server, not the URL parser, judges whether it is valid.
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes an error answer; a body that is not an [`ErrorBody`] is kept as the message.
fn api_error(status: StatusCode, bytes: &[u8]) -> ClientError {
    let body = serde_json::from_slice::<ErrorBody>(bytes).unwrap_or_else(|_| {
        let text = String::from_utf8_lossy(bytes).trim().to_owned();
        ErrorBody {
            error: format!("http_{}", status.as_u16()),
            message: if text.is_empty() {
                status.canonical_reason().unwrap_or("error").to_owned()
            } else {
                text
            },
            field: None,
        }
    });
    ClientError::Api { status, body }
}

/// The query string pairs of an [`AnalyticsQuery`].
fn analytics_params(query: &AnalyticsQuery) -> Vec<String> {
    let mut params = Vec::new();
    for (name, value) in [
        ("api", &query.api),
        ("version", &query.version),
        ("route", &query.route),
        ("service", &query.service),
        ("consumer", &query.consumer),
    ] {
        if let Some(v) = value {
            params.push(format!("{name}={}", encode_segment(v)));
        }
    }
    if let Some(f) = query.from {
        params.push(format!("from={f}"));
    }
    if let Some(t) = query.to {
        params.push(format!("to={t}"));
    }
    if let Some(step) = &query.step {
        params.push(format!("step={}", json_word(step)));
    }
    params
}

/// A unit enum variant as its serde name (`"minute"` → `minute`).
fn json_word(value: &impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_addresses() {
        let plain = AdminClient::new("127.0.0.1:7001", None).unwrap();
        assert_eq!(plain.base(), "http://127.0.0.1:7001");
        let full = AdminClient::new("http://localhost:7001/", None).unwrap();
        assert_eq!(full.base(), "http://localhost:7001");
        assert!(matches!(
            AdminClient::new("https://x:1", None),
            Err(ClientError::InvalidUrl { .. })
        ));
        assert!(AdminClient::new("http://x:1/admin", None).is_err());
        assert!(AdminClient::new("not a url", None).is_err());
    }

    #[test]
    fn paths_and_errors() {
        assert_eq!(
            item_path::<RateLimitSpec>("a b/c"),
            "/rate-limits/a%20b%2Fc"
        );
        assert_eq!(keys_path("app"), "/consumers/app/keys");
        assert_eq!(
            catalog_path("orders", "versions", Some("v 1")),
            "/apis/orders/versions/v%201"
        );
        assert_eq!(
            catalog_path("orders", "subscriptions", None),
            "/apis/orders/subscriptions"
        );

        let decoded = api_error(
            StatusCode::BAD_REQUEST,
            br#"{"error":"invalid","message":"bad","field":"paths"}"#,
        );
        assert_eq!(decoded.status(), Some(StatusCode::BAD_REQUEST));
        assert!(decoded.to_string().contains("field 'paths'"));
        let ClientError::Api { body, .. } = api_error(StatusCode::METHOD_NOT_ALLOWED, b"") else {
            panic!("expected an API error");
        };
        assert_eq!(body.error, "http_405");
        assert_eq!(body.message, "Method Not Allowed");
    }
}
