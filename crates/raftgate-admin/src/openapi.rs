//! The OpenAPI 3 document of the admin API, built from the same Rust types the handlers use, so
//! the document cannot drift from the code. Resource kinds share one generic description, as they
//! share one generic implementation.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use raftgate_model::access::{AuditEntry, AuditOperation, TokenRole};
use raftgate_model::ai::{
    AiLimits, AiUsage, CacheConfig, Deployment, ModelConfig, Period, Price, ProviderConfig,
    ProviderKind, ProviderView, UsageReport, UsageRow,
};
use raftgate_model::api::{
    AddMember, ClusterStatus, CreatedKey, ErrorBody, Health, KeyInfo, KeySettings, Member,
    NodeUpstreams, Ready, Role, TargetHealth, UpstreamHealth,
};
use raftgate_model::api::{CreateToken, CreatedToken, TokenInfo};
use raftgate_model::policy::{
    AllowDeny, AuthPolicy, BasicAuth, BasicCredential, ConsumerUsage, CorsPolicy, JwtAlgorithm,
    JwtAuth, JwtCredential, KeyAuth, LimitScope, Policies, UsageEntry,
};
use raftgate_model::prompt::{
    PromptFormat, PromptMessage, PromptParameters, PromptRole, PromptSpec, PromptVariable,
};
use raftgate_model::state::Resource;
use raftgate_model::{
    ActiveCheck, CertificateInfo, CertificateSpec, ConsumerSpec, Entity, HashOn, HeaderOps,
    HealthChecks, InstanceSpec, Kind, LbPolicy, PassiveCheck, RateLimitSpec, RateWindow, RouteSpec,
    ServiceSpec, Target, Timeouts,
};
use utoipa::PartialSchema;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ArrayBuilder, ComponentsBuilder, ObjectBuilder};
use utoipa::openapi::{
    ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Paths, Ref, RefOr, Required,
    ResponseBuilder, Schema,
};

use crate::cluster::SnapshotTaken;

/// Every write answers 403 to a read-only token: says so on every operation that is not a read.
fn forbid_writes(paths: &mut Paths) {
    for item in paths.paths.values_mut() {
        let writes = [
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in writes.into_iter().flatten() {
            operation.responses.responses.insert(
                "403".into(),
                error("The token is read-only; writing needs an admin token").into(),
            );
        }
    }
}

/// `/tokens` and `/audit`: who may use the admin API, and what they did.
fn access_paths(paths: &mut Paths) {
    paths.add_path_operation(
        "/tokens",
        vec![HttpMethod::Post],
        op(
            "tokens",
            "Create an admin token; the secret is returned only now",
        )
        .request_body(Some(
            RequestBodyBuilder::new()
                .content(
                    "application/json",
                    json(Ref::from_schema_name("CreateToken")),
                )
                .required(Some(Required::True))
                .build(),
        ))
        .response(
            "201",
            ok("The new token", Ref::from_schema_name("CreatedToken")),
        ),
    );
    paths.add_path_operation(
        "/tokens",
        vec![HttpMethod::Get],
        op(
            "tokens",
            "List the admin tokens (names, roles and prefixes only)",
        )
        .parameter(consistent())
        .response(
            "200",
            ok("The tokens", list_of(Ref::from_schema_name("TokenInfo"))),
        ),
    );
    paths.add_path_operation(
        "/tokens/{name}",
        vec![HttpMethod::Delete],
        op("tokens", "Revoke an admin token on every node")
            .parameter(param("name", ParameterIn::Path, "token name"))
            .response("204", ResponseBuilder::new().description("Revoked").build())
            .response("404", error("No such token")),
    );
    paths.add_path_operation(
        "/audit",
        vec![HttpMethod::Get],
        op(
            "audit",
            "The replicated log of admin writes: who, what, when, outcome",
        )
        .parameter(param(
            "limit",
            ParameterIn::Query,
            "at most this many entries (default 100, at most 10000)",
        ))
        .parameter(param(
            "since",
            ParameterIn::Query,
            "only entries after this log index, oldest first; without it, the newest entries",
        ))
        .parameter(consistent())
        .response(
            "200",
            ok(
                "Entries, oldest first",
                list_of(Ref::from_schema_name("AuditEntry")),
            ),
        ),
    );
}

fn json(schema: impl Into<RefOr<Schema>>) -> utoipa::openapi::Content {
    ContentBuilder::new().schema(Some(schema)).build()
}

fn list_of(item: impl Into<RefOr<Schema>>) -> Schema {
    ObjectBuilder::new()
        .property("data", ArrayBuilder::new().items(item.into()))
        .required("data")
        .into()
}

fn ok(description: &str, schema: impl Into<RefOr<Schema>>) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", json(schema))
        .build()
}

fn error(description: &str) -> utoipa::openapi::Response {
    ok(description, Ref::from_schema_name("ErrorBody"))
}

fn param(name: &str, place: ParameterIn, description: &str) -> utoipa::openapi::path::Parameter {
    let required = if place == ParameterIn::Path {
        Required::True
    } else {
        Required::False
    };
    ParameterBuilder::new()
        .name(name)
        .parameter_in(place)
        .required(required)
        .description(Some(description))
        .build()
}

fn consistent() -> utoipa::openapi::path::Parameter {
    param(
        "consistent",
        ParameterIn::Query,
        "true: linearizable read through the leader's read index",
    )
}

fn op(tag: &str, summary: &str) -> OperationBuilder {
    OperationBuilder::new()
        .tag(tag)
        .summary(Some(summary))
        .response("400", error("Invalid input; `field` names the culprit"))
        .response("401", error("Missing or wrong admin token"))
        .response(
            "503",
            error("No leader reachable; retry after Retry-After seconds"),
        )
}

fn unsafe_change() -> utoipa::openapi::Response {
    error("Refused: a majority of the voters left after the change would not answer")
}

fn unknown_outcome() -> utoipa::openapi::Response {
    error("The outcome is unknown (it may still take effect): read it back")
}

fn resource_paths<R: Resource>(paths: &mut Paths) {
    let kind = R::KIND;
    let tag = kind.collection();
    let entity = <Entity<R::View> as PartialSchema>::schema();
    let body = RequestBodyBuilder::new()
        .content("application/json", json(R::schema()))
        .required(Some(Required::True))
        .build();
    let name = || {
        param(
            "name",
            ParameterIn::Path,
            "resource name: letters, digits, - _ . ~",
        )
    };
    let if_match = || {
        param(
            "If-Match",
            ParameterIn::Header,
            "expected version (0: must not exist); 412 if it differs",
        )
    };
    let collection = format!("/{tag}");
    paths.add_path_operation(
        &collection,
        vec![HttpMethod::Get],
        op(tag, &format!("List {tag}"))
            .parameter(consistent())
            .response("200", ok("All of them", list_of(entity.clone()))),
    );
    let item = format!("/{tag}/{{name}}");
    paths.add_path_operation(
        &item,
        vec![HttpMethod::Get],
        op(tag, &format!("Read a {kind}"))
            .parameter(name())
            .parameter(consistent())
            .response(
                "200",
                ok("The resource; ETag is its version", entity.clone()),
            )
            .response("404", error("No such resource")),
    );
    paths.add_path_operation(
        &item,
        vec![HttpMethod::Put],
        op(tag, &format!("Create or replace a {kind}"))
            .parameter(name())
            .parameter(if_match())
            .request_body(Some(body))
            .response("200", ok("Replaced", entity.clone()))
            .response("201", ok("Created", entity))
            .response("412", error("If-Match version differs")),
    );
    paths.add_path_operation(
        &item,
        vec![HttpMethod::Delete],
        op(tag, &format!("Delete a {kind}"))
            .parameter(name())
            .parameter(if_match())
            .response("204", ResponseBuilder::new().description("Deleted").build())
            .response("404", error("No such resource"))
            .response("409", error("Still referenced by another resource"))
            .response("412", error("If-Match version differs")),
    );
}

fn instance_paths(paths: &mut Paths) {
    let service = || param("service", ParameterIn::Path, "service name");
    let id = || {
        param(
            "id",
            ParameterIn::Path,
            "instance id, unique in the cluster",
        )
    };
    let entity = <Entity<InstanceSpec> as PartialSchema>::schema();
    paths.add_path_operation(
        "/services/{service}/instances",
        vec![HttpMethod::Get],
        op("instances", "List the instances registered for a service")
            .parameter(service())
            .parameter(consistent())
            .response("200", ok("The instances", list_of(entity.clone()))),
    );
    paths.add_path_operation(
        "/services/{service}/instances/{id}",
        vec![HttpMethod::Put],
        op(
            "instances",
            "Register (or re-register) an instance with a TTL",
        )
        .parameter(service())
        .parameter(id())
        .request_body(Some(
            RequestBodyBuilder::new()
                .content("application/json", json(InstanceSpec::schema()))
                .required(Some(Required::True))
                .build(),
        ))
        .response("201", ok("Registered", entity.clone()))
        .response("200", ok("Re-registered", entity.clone()))
        .response("404", error("No such service")),
    );
    paths.add_path_operation(
        "/services/{service}/instances/{id}",
        vec![HttpMethod::Delete],
        op("instances", "Deregister an instance")
            .parameter(service())
            .parameter(id())
            .response(
                "204",
                ResponseBuilder::new().description("Deregistered").build(),
            )
            .response("404", error("No such instance")),
    );
    paths.add_path_operation(
        "/services/{service}/instances/{id}/heartbeat",
        vec![HttpMethod::Put],
        op("instances", "Keep an instance alive for another TTL")
            .parameter(service())
            .parameter(id())
            .response("200", ok("Alive", entity))
            .response(
                "404",
                error("Not registered (it may have expired): register it again"),
            ),
    );
}

/// The body of a key's creation (optional) or update.
fn key_settings(required: Required) -> utoipa::openapi::request_body::RequestBody {
    RequestBodyBuilder::new()
        .content(
            "application/json",
            json(Ref::from_schema_name("KeySettings")),
        )
        .required(Some(required))
        .build()
}

fn build() -> OpenApi {
    let mut paths = Paths::new();
    resource_paths::<ServiceSpec>(&mut paths);
    resource_paths::<RouteSpec>(&mut paths);
    resource_paths::<ConsumerSpec>(&mut paths);
    resource_paths::<RateLimitSpec>(&mut paths);
    resource_paths::<CertificateSpec>(&mut paths);
    resource_paths::<ProviderConfig>(&mut paths);
    resource_paths::<ModelConfig>(&mut paths);
    resource_paths::<PromptSpec>(&mut paths);
    instance_paths(&mut paths);
    access_paths(&mut paths);
    let consumer = || param("name", ParameterIn::Path, "consumer name");
    paths.add_path_operation(
        "/ai/usage",
        vec![HttpMethod::Get],
        op(
            "ai/usage",
            "AI gateway usage (requests, tokens, cost) by hour or day, consumer, key, model and provider",
        )
        .parameter(param("consumer", ParameterIn::Query, "only this consumer"))
        .parameter(param("key", ParameterIn::Query, "only this key id"))
        .parameter(param("model", ParameterIn::Query, "only this model alias"))
        .parameter(param("provider", ParameterIn::Query, "only this provider"))
        .parameter(param(
            "from",
            ParameterIn::Query,
            "buckets starting at or after this Unix millisecond",
        ))
        .parameter(param(
            "to",
            ParameterIn::Query,
            "buckets starting before this Unix millisecond",
        ))
        .parameter(param(
            "period",
            ParameterIn::Query,
            "hour (kept 7 days) or day (kept 400 days, the default)",
        ))
        .response(
            "200",
            ok(
                "Matching buckets and their sum",
                Ref::from_schema_name("UsageReport"),
            ),
        )
        .response("400", error("Bad query string")),
    );
    paths.add_path_operation(
        "/consumers/{name}/usage",
        vec![HttpMethod::Get],
        op(
            "consumers",
            "A consumer's rate-limit and quota counters, cluster-wide",
        )
        .parameter(consumer())
        .parameter(consistent())
        .response(
            "200",
            ok("The counters", Ref::from_schema_name("ConsumerUsage")),
        )
        .response("404", error("No such consumer")),
    );
    paths.add_path_operation(
        "/consumers/{name}/keys",
        vec![HttpMethod::Post],
        op("keys", "Create an API key; the secret is returned only now")
            .parameter(consumer())
            .request_body(Some(key_settings(Required::False)))
            .response(
                "201",
                ok("The new key", Ref::from_schema_name("CreatedKey")),
            )
            .response("400", error("Invalid settings; `field` names the bad one"))
            .response("404", error("No such consumer")),
    );
    paths.add_path_operation(
        "/consumers/{name}/keys/{id}",
        vec![HttpMethod::Put],
        op(
            "keys",
            "Replace a key's settings (its AI limits); the secret stays",
        )
        .parameter(consumer())
        .parameter(param("id", ParameterIn::Path, "key id"))
        .request_body(Some(key_settings(Required::True)))
        .response("200", ok("The key", Ref::from_schema_name("KeyInfo")))
        .response("400", error("Invalid settings; `field` names the bad one"))
        .response("404", error("No such key")),
    );
    paths.add_path_operation(
        "/consumers/{name}/keys",
        vec![HttpMethod::Get],
        op("keys", "List a consumer's keys (ids and prefixes only)")
            .parameter(consumer())
            .parameter(consistent())
            .response(
                "200",
                ok("The keys", list_of(Ref::from_schema_name("KeyInfo"))),
            ),
    );
    paths.add_path_operation(
        "/consumers/{name}/keys/{id}",
        vec![HttpMethod::Delete],
        op("keys", "Revoke a key")
            .parameter(consumer())
            .parameter(param("id", ParameterIn::Path, "key id"))
            .response("204", ResponseBuilder::new().description("Revoked").build())
            .response("404", error("No such key")),
    );
    let status = || {
        ok(
            "The cluster as seen by the answering node",
            Ref::from_schema_name("ClusterStatus"),
        )
    };
    paths.add_path_operation(
        "/cluster",
        vec![HttpMethod::Get],
        op("cluster", "Leader, term and members").response("200", status()),
    );
    paths.add_path_operation(
        "/cluster/members",
        vec![HttpMethod::Post],
        op(
            "cluster",
            "Add a running node: as learner, then as voter once caught up",
        )
        .request_body(Some(
            RequestBodyBuilder::new()
                .content("application/json", json(Ref::from_schema_name("AddMember")))
                .required(Some(Required::True))
                .build(),
        ))
        .response("200", status())
        .response("409", unsafe_change())
        .response("504", unknown_outcome()),
    );
    paths.add_path_operation(
        "/cluster/members/{id}",
        vec![HttpMethod::Delete],
        op("cluster", "Remove a node from the cluster")
            .parameter(param("id", ParameterIn::Path, "node id"))
            .response("200", status())
            .response("409", unsafe_change())
            .response("504", unknown_outcome()),
    );
    paths.add_path_operation(
        "/cluster/snapshot",
        vec![HttpMethod::Post],
        op(
            "cluster",
            "Build a snapshot on the answering node and purge the log it covers",
        )
        .response("200", ok("Snapshot built", SnapshotTaken::schema())),
    );
    paths.add_path_operation(
        "/upstreams/health",
        vec![HttpMethod::Get],
        op(
            "upstreams",
            "Health of every service's targets as this node (or every node) sees it",
        )
        .parameter(param(
            "cluster",
            ParameterIn::Query,
            "true: ask every member too",
        ))
        .response(
            "200",
            ok(
                "One entry per node",
                ArrayBuilder::new().items(Ref::from_schema_name("NodeUpstreams")),
            ),
        ),
    );
    paths.add_path_operation(
        "/health",
        vec![HttpMethod::Get],
        OperationBuilder::new()
            .tag("cluster")
            .summary(Some("Liveness; never needs a token"))
            .response("200", ok("The node answers", Health::schema())),
    );
    paths.add_path_operation(
        "/ready",
        vec![HttpMethod::Get],
        OperationBuilder::new()
            .tag("cluster")
            .summary(Some(
                "Readiness: whether this node can have writes committed now; never needs a token",
            ))
            .response("200", ok("Ready", Ref::from_schema_name("Ready")))
            .response(
                "503",
                error("Not ready (no quorum, not a member, Raft stopped); `message` says why"),
            ),
    );
    paths.add_path_operation(
        "/metrics",
        vec![HttpMethod::Get],
        OperationBuilder::new()
            .tag("metrics")
            .summary(Some(
                "This node's metrics in the Prometheus text format; never needs a token",
            ))
            .description(Some(
                "Proxied requests by route, service, consumer and status code; request and \
                 upstream latency histograms by route; rate-limit refusals by limit; upstream \
                 target health; Raft term, leader, log and applied index; AI gateway requests, \
                 tokens and cost by model, provider and consumer.",
            ))
            .response(
                "200",
                ResponseBuilder::new()
                    .description("Prometheus text exposition format 0.0.4")
                    .content(
                        raftgate_metrics::CONTENT_TYPE,
                        ContentBuilder::new()
                            .schema(Some(<String as PartialSchema>::schema()))
                            .build(),
                    )
                    .build(),
            )
            .response("500", error("The metrics could not be encoded (a bug)")),
    );
    forbid_writes(&mut paths);
    let components = ComponentsBuilder::new()
        .schema_from::<ErrorBody>()
        .schema_from::<ServiceSpec>()
        .schema_from::<Target>()
        .schema_from::<LbPolicy>()
        .schema_from::<HashOn>()
        .schema_from::<Timeouts>()
        .schema_from::<HealthChecks>()
        .schema_from::<ActiveCheck>()
        .schema_from::<PassiveCheck>()
        .schema_from::<HeaderOps>()
        .schema_from::<InstanceSpec>()
        .schema_from::<CertificateSpec>()
        .schema_from::<CertificateInfo>()
        .schema_from::<RouteSpec>()
        .schema_from::<ConsumerSpec>()
        .schema_from::<RateLimitSpec>()
        .schema_from::<RateWindow>()
        .schema_from::<CreatedKey>()
        .schema_from::<KeyInfo>()
        .schema_from::<KeySettings>()
        .schema_from::<AiLimits>()
        .schema_from::<ConsumerUsage>()
        .schema_from::<UsageEntry>()
        .schema_from::<Policies>()
        .schema_from::<AuthPolicy>()
        .schema_from::<KeyAuth>()
        .schema_from::<JwtAuth>()
        .schema_from::<BasicAuth>()
        .schema_from::<AllowDeny>()
        .schema_from::<CorsPolicy>()
        .schema_from::<LimitScope>()
        .schema_from::<JwtCredential>()
        .schema_from::<JwtAlgorithm>()
        .schema_from::<BasicCredential>()
        .schema_from::<ClusterStatus>()
        .schema_from::<Member>()
        .schema_from::<Role>()
        .schema_from::<AddMember>()
        .schema_from::<Ready>()
        .schema_from::<NodeUpstreams>()
        .schema_from::<UpstreamHealth>()
        .schema_from::<TargetHealth>()
        .schema_from::<CreateToken>()
        .schema_from::<CreatedToken>()
        .schema_from::<TokenInfo>()
        .schema_from::<TokenRole>()
        .schema_from::<AuditEntry>()
        .schema_from::<AuditOperation>()
        .schema_from::<Kind>()
        .schema_from::<ProviderConfig>()
        .schema_from::<ProviderView>()
        .schema_from::<ProviderKind>()
        .schema_from::<ModelConfig>()
        .schema_from::<Deployment>()
        .schema_from::<CacheConfig>()
        .schema_from::<PromptSpec>()
        .schema_from::<PromptMessage>()
        .schema_from::<PromptRole>()
        .schema_from::<PromptVariable>()
        .schema_from::<PromptParameters>()
        .schema_from::<PromptFormat>()
        .schema_from::<Price>()
        .schema_from::<UsageReport>()
        .schema_from::<UsageRow>()
        .schema_from::<AiUsage>()
        .schema_from::<Period>()
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("raftgate admin API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Configuration of a raftgate cluster. Every node answers; writes are forwarded to the Raft leader.",
                ))
                .build(),
        )
        .paths(paths)
        .components(Some(components))
        .build()
}

/// The document as JSON, built once.
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        build()
            .to_json()
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    })
}

/// `GET /openapi.json`.
pub async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document())
}
