//! The admin API of a raftgate node: HTTP/JSON, the same on every node.
//!
//! Reads are answered from the node's local replicated state (or, with `?consistent=true`, after a
//! read-index round through the leader); writes go through [`raftgate_cluster::Node::write`], which
//! forwards them to the leader, so a client may use any node. The API is described by the
//! OpenAPI document served at `/openapi.json`, generated from these handlers' types
//! ([`openapi`]).

#![warn(missing_docs)]

mod ai;
mod analytics;
mod audit;
mod auth;
mod catalog;
mod cluster;
mod consumers;
pub mod error;
mod extract;
mod instances;
mod keys;
mod metrics;
pub mod openapi;
mod resources;
mod secrets;
mod tokens;
mod upstreams;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use hyper_util::service::TowerToHyperService;
use raftgate_cluster::Node;
use raftgate_metrics::Metrics;
use raftgate_model::access::TeamSpec;
use raftgate_model::ai::{ModelConfig, ProviderConfig};
use raftgate_model::catalog::ApiSpec;
use raftgate_model::prompt::PromptSpec;
use raftgate_model::{CertificateSpec, ConsumerSpec, RateLimitSpec, RouteSpec, ServiceSpec};
use raftgate_secrets::SecretsKey;

pub use error::ApiError;
pub use upstreams::HealthSource;

/// Largest request body the admin API accepts.
pub const MAX_BODY: usize = 1 << 20;

/// What every handler can reach.
struct AdminState {
    node: Node,
    token: Option<auth::TokenHash>,
    health: Option<HealthSource>,
    /// Seals AI provider credentials; without it they are refused.
    secrets: Option<Arc<SecretsKey>>,
    /// The node's metrics, served at `GET /metrics`.
    metrics: Arc<Metrics>,
}

type Shared = Arc<AdminState>;

/// Builds the admin API for `node`, with the web console ([`raftgate_console`]) at `/ui/`.
/// With `token` (the bootstrap token, role admin), every request but `GET /health`,
/// `GET /ready`, `GET /metrics` and the console's own files must carry
/// `Authorization: Bearer <token>` with it or with a token made through `POST /tokens`. `health` is where `GET /upstreams/health`
/// reads this node's view of its upstream targets (the proxy's). `secrets` seals AI provider
/// credentials. `metrics` is the node's registry, served at `GET /metrics`.
pub fn router(
    node: Node,
    token: Option<&str>,
    health: Option<HealthSource>,
    secrets: Option<Arc<SecretsKey>>,
    metrics: Arc<Metrics>,
) -> Router {
    let state = Arc::new(AdminState {
        node,
        token: token.map(auth::TokenHash::new),
        health,
        secrets,
        metrics,
    });
    Router::new()
        .route("/openapi.json", get(openapi::serve))
        // The console is not the API: it is kept out of the OpenAPI document, and it reads and
        // writes only through the routes below.
        .merge(raftgate_console::router())
        .route("/health", get(cluster::health))
        .route("/ready", get(cluster::ready))
        .merge(metrics::routes())
        .merge(resources::routes::<ServiceSpec>())
        .merge(resources::routes::<RouteSpec>())
        .merge(resources::routes::<ConsumerSpec>())
        .merge(resources::routes::<RateLimitSpec>())
        .merge(resources::routes::<CertificateSpec>())
        .merge(resources::routes::<ProviderConfig>())
        .merge(resources::routes::<ModelConfig>())
        .merge(resources::routes::<PromptSpec>())
        .merge(resources::routes::<TeamSpec>())
        .merge(resources::routes::<ApiSpec>())
        .merge(catalog::routes())
        .merge(instances::routes())
        .merge(keys::routes())
        .merge(consumers::routes())
        .merge(tokens::routes())
        .merge(
            // The cluster's own routes: cluster tokens only.
            Router::new()
                .merge(upstreams::routes())
                .merge(cluster::routes())
                .merge(audit::routes())
                .merge(ai::routes())
                .merge(analytics::routes())
                .route_layer(axum::middleware::from_fn(auth::require_cluster)),
        )
        .fallback(extract::not_found)
        .method_not_allowed_fallback(extract::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Serves the admin API on `listener`, within `limits`, until `shutdown` completes; see
/// [`router`]. Its refused connections are counted as listener `admin`.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    listener: tokio::net::TcpListener,
    limits: raftgate_listener::Limits,
    node: Node,
    token: Option<String>,
    health: Option<HealthSource>,
    secrets: Option<Arc<SecretsKey>>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), raftgate_listener::ListenError> {
    let listener = raftgate_listener::Listener {
        name: "admin",
        socket: listener,
        tls: None,
        refusals: metrics.connection_refusals("admin"),
    };
    let router = router(node, token.as_deref(), health, secrets, metrics);
    raftgate_listener::serve(
        vec![listener],
        raftgate_listener::Http::default(),
        limits,
        move |_, _| TowerToHyperService::new(router.clone()),
        shutdown,
    )
    .await
}
