//! The OpenAPI 3 document of the admin API, built from the same Rust types the handlers use, so
//! the document cannot drift from the code. Resource kinds share one generic description, as they
//! share one generic implementation.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use raftgate_model::access::{AUDIT_CAPACITY, AuditEntry, AuditOperation, TeamSpec, TokenRole};
use raftgate_model::ai::{
    AiLimits, AiUsage, CacheConfig, Deployment, ModelConfig, Period, Price, ProviderConfig,
    ProviderKind, ProviderView, UsageReport, UsageRow,
};
use raftgate_model::analytics::{
    AnalyticsPoint, AnalyticsReport, Latency, Resolution, StatusClasses, Summary, TopBy, TopMetric,
    TopReport, TopRow,
};
use raftgate_model::api::{
    AddMember, ClusterNodes, ClusterStatus, CreatedKey, ErrorBody, Health, KeyInfo, KeySettings,
    Member, NodeHealth, NodeState, NodeUpstreams, Ready, Role, TargetHealth, UpstreamHealth,
};
use raftgate_model::api::{CreateToken, CreatedToken, Subscribe, TokenInfo, Transition};
use raftgate_model::catalog::{
    ApiSpec, ApiVersionRef, ApiVersionSpec, Backend, Lifecycle, Plan, SubscriptionMode,
    SubscriptionSpec, SubscriptionState, Visibility,
};
use raftgate_model::policy::{
    AllowDeny, AuthPolicy, BasicAuth, BasicCredential, ConsumerUsage, CorsPolicy, JwtAlgorithm,
    JwtAuth, JwtCredential, KeyAuth, LimitScope, Policies, UsageEntry,
};
use raftgate_model::prompt::{
    PromptFormat, PromptMessage, PromptParameters, PromptRole, PromptSpec, PromptVariable,
};
use raftgate_model::resource::{BasicCredentialView, ConsumerView, JwtCredentialView};
use raftgate_model::state::Resource;
use raftgate_model::{
    ActiveCheck, CertificateInfo, CertificateSpec, ConsumerSpec, Entity, HashOn, HeaderOps,
    HealthChecks, InstanceSpec, Kind, LbPolicy, PassiveCheck, RateLimitSpec, RateWindow, RouteSpec,
    ServiceSpec, Target, Timeouts, validate,
};
use utoipa::PartialSchema;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::request_body::{RequestBody, RequestBodyBuilder};
use utoipa::openapi::schema::{ArrayBuilder, ComponentsBuilder, ObjectBuilder, Type};
use utoipa::openapi::{
    ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Paths, Ref, RefOr, Required,
    ResponseBuilder, Schema,
};

use crate::cluster::SnapshotTaken;

/// Every write answers 403 to a token that writes nothing (read-only, viewer) or may not
/// write this: says so on every operation that is not a read.
fn forbid_writes(paths: &mut Paths) {
    for item in paths.paths.values_mut() {
        for (method, operation) in operations(item) {
            if let (true, Some(operation)) = (method != "get", operation) {
                operation.responses.responses.entry("403".into()).or_insert_with(|| {
                    error(
                        "The token may not do this: a read-only or viewer token, a role too low, another team's token or a cluster-wide kind",
                    )
                    .into()
                });
            }
        }
    }
}

/// 403 of a read a team token may not make (cluster-wide kinds, the cluster itself).
fn team_forbidden() -> utoipa::openapi::Response {
    error("A team token: this needs a cluster token")
}

/// An operation's id: its method and path, e.g. `put_services_name`.
fn operation_id(method: &str, path: &str) -> String {
    let words: Vec<&str> = path
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    format!("{method}_{}", words.join("_"))
}

/// The operations of a path, by method.
fn operations(item: &mut PathItem) -> [(&'static str, &mut Option<Operation>); 4] {
    [
        ("get", &mut item.get),
        ("put", &mut item.put),
        ("post", &mut item.post),
        ("delete", &mut item.delete),
    ]
}

/// Gives every operation its [`operation_id`], which links name.
fn name_operations(paths: &mut Paths) {
    for (path, item) in &mut paths.paths {
        for (method, operation) in operations(item) {
            if let Some(operation) = operation {
                operation.operation_id = Some(operation_id(method, path));
            }
        }
    }
}

/// Links the answers `statuses` of `method path` to the operations `to` (method, path), with
/// their `parameters` taken from the request or the answer (runtime expressions): what a
/// client, or a fuzzer, can do next with what it just made.
fn link(
    paths: &mut Paths,
    (method, path): (&str, &str),
    statuses: &[&str],
    to: &[(&str, &str)],
    parameters: &[(&str, &str)],
) {
    let operation = paths
        .paths
        .get_mut(path)
        .and_then(|item| operations(item).into_iter().find(|(m, _)| *m == method))
        .and_then(|(_, operation)| operation.as_mut());
    let Some(operation) = operation else { return };
    for status in statuses {
        let Some(RefOr::T(response)) = operation.responses.responses.get_mut(*status) else {
            continue;
        };
        for (to_method, to_path) in to {
            let id = operation_id(to_method, to_path);
            let link = parameters
                .iter()
                .fold(LinkBuilder::new().operation_id(&id), |l, (name, value)| {
                    l.parameter(*name, *value)
                });
            response.links.insert(id, link.build().into());
        }
    }
}

/// The links from where things are made to where they are used.
fn link_paths(paths: &mut Paths) {
    let collections: Vec<String> = paths
        .paths
        .keys()
        .filter(|p| p.ends_with("/{name}") && p.matches('{').count() == 1)
        .cloned()
        .collect();
    let by_name = [("name", "$request.path.name")];
    for item in &collections {
        link(
            paths,
            ("put", item),
            &["200", "201"],
            &[("get", item), ("delete", item)],
            &by_name,
        );
    }
    link(
        paths,
        ("put", "/services/{name}"),
        &["200", "201"],
        &[
            ("get", "/services/{service}/instances"),
            ("put", "/services/{service}/instances/{id}"),
        ],
        &[("service", "$request.path.name")],
    );
    let instance = "/services/{service}/instances/{id}";
    link(
        paths,
        ("put", instance),
        &["200", "201"],
        &[
            ("put", "/services/{service}/instances/{id}/heartbeat"),
            ("delete", instance),
        ],
        &[
            ("service", "$request.path.service"),
            ("id", "$request.path.id"),
        ],
    );
    link(
        paths,
        ("put", "/consumers/{name}"),
        &["200", "201"],
        &[
            ("post", "/consumers/{name}/keys"),
            ("get", "/consumers/{name}/keys"),
            ("get", "/consumers/{name}/usage"),
        ],
        &by_name,
    );
    let key = "/consumers/{name}/keys/{id}";
    link(
        paths,
        ("post", "/consumers/{name}/keys"),
        &["201"],
        &[("put", key), ("delete", key)],
        &[("name", "$request.path.name"), ("id", "$response.body#/id")],
    );
    link(
        paths,
        ("post", "/tokens"),
        &["201"],
        &[("delete", "/tokens/{name}")],
        &[("name", "$response.body#/name")],
    );
    link(
        paths,
        ("put", "/apis/{name}"),
        &["200", "201"],
        &[
            ("get", "/apis/{name}/versions"),
            ("get", "/apis/{name}/subscriptions"),
        ],
        &by_name,
    );
    let version = "/apis/{name}/versions/{version}";
    link(
        paths,
        ("put", version),
        &["200", "201"],
        &[
            ("get", version),
            ("delete", version),
            ("post", "/apis/{name}/versions/{version}/transition"),
            ("post", "/apis/{name}/versions/{version}/import"),
            ("get", "/apis/{name}/versions/{version}/openapi"),
        ],
        &[
            ("name", "$request.path.name"),
            ("version", "$request.path.version"),
        ],
    );
    let subscription = "/apis/{name}/subscriptions/{application}";
    link(
        paths,
        ("post", "/apis/{name}/subscriptions"),
        &["200", "201"],
        &[
            ("get", subscription),
            ("delete", subscription),
            ("post", "/apis/{name}/subscriptions/{application}/approve"),
            ("post", "/apis/{name}/subscriptions/{application}/reject"),
        ],
        &[
            ("name", "$request.path.name"),
            ("application", "$response.body#/spec/application"),
        ],
    );
}

/// `/tokens` and `/audit`: who may use the admin API, and what they did.
fn access_paths(paths: &mut Paths) {
    paths.add_path_operation(
        "/tokens",
        vec![HttpMethod::Post],
        with_body(
            leader_op(
                "tokens",
                "Create an admin token; the secret is returned only now",
            ),
            body(Ref::from_schema_name("CreateToken"), Required::True),
        )
        .response(
            "201",
            ok("The new token", Ref::from_schema_name("CreatedToken")),
        )
        .response("412", error("Created at the same time by another request")),
    );
    paths.add_path_operation(
        "/tokens",
        vec![HttpMethod::Get],
        leader_op(
            "tokens",
            "List the admin tokens (names, roles and prefixes only; a team owner: its team's)",
        )
        .response("403", error("A team token that is not an owner"))
        .parameter(consistent())
        .response(
            "200",
            ok("The tokens", list_of(Ref::from_schema_name("TokenInfo"))),
        ),
    );
    paths.add_path_operation(
        "/tokens/{name}",
        vec![HttpMethod::Delete],
        leader_op("tokens", "Revoke an admin token on every node")
            .parameter(name_param("name", "token name"))
            .response("204", ResponseBuilder::new().description("Revoked").build())
            .response("404", error("No such token")),
    );
    paths.add_path_operation(
        "/audit",
        vec![HttpMethod::Get],
        leader_op(
            "audit",
            "The replicated log of admin writes: who, what, when, outcome",
        )
        .response("403", team_forbidden())
        .parameter(param(
            "limit",
            ParameterIn::Query,
            "at most this many entries (default 100)",
            integer(1, AUDIT_CAPACITY as u64),
        ))
        .parameter(param(
            "since",
            ParameterIn::Query,
            "only entries after this log index, oldest first; without it, the newest entries",
            integer(0, u64::MAX),
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

fn param(
    name: &str,
    place: ParameterIn,
    description: &str,
    schema: impl Into<RefOr<Schema>>,
) -> utoipa::openapi::path::Parameter {
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
        .schema(Some(schema))
        .build()
}

/// The names [`validate::name`] accepts, as a JSON Schema pattern (letters, digits and
/// `- _ . ~`, but not `.`, `..` or `~` alone); [`name_schema`] adds the length bounds. A unit
/// test keeps the two in agreement.
pub const NAME_PATTERN: &str = r"^(?:[A-Za-z0-9_-][A-Za-z0-9._~-]*|~[A-Za-z0-9._~-]+|\.[A-Za-z0-9_~-][A-Za-z0-9._~-]*|\.\.[A-Za-z0-9._~-]+)$";

/// A resource name (of any kind, tokens and instances included).
fn name_schema() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(NAME_PATTERN))
        .min_length(Some(1))
        .max_length(Some(validate::MAX_NAME_LEN))
        .into()
}

/// A path parameter naming a resource.
fn name_param(name: &str, what: &str) -> utoipa::openapi::path::Parameter {
    param(
        name,
        ParameterIn::Path,
        &format!(
            "{what}: 1 to {} letters, digits, - _ . ~",
            validate::MAX_NAME_LEN
        ),
        name_schema(),
    )
}

fn string() -> Schema {
    ObjectBuilder::new().schema_type(Type::String).into()
}

fn boolean() -> Schema {
    ObjectBuilder::new().schema_type(Type::Boolean).into()
}

/// An integer from `min` to `max`, both included.
fn integer(min: u64, max: u64) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(min))
        .maximum(Some(max))
        .into()
}

fn consistent() -> utoipa::openapi::path::Parameter {
    param(
        "consistent",
        ParameterIn::Query,
        "true: linearizable read through the leader's read index",
        boolean(),
    )
}

/// `If-Match`: a version, plain or as an entity tag.
fn if_match() -> utoipa::openapi::path::Parameter {
    param(
        "If-Match",
        ParameterIn::Header,
        "expected version (0: must not exist); 412 if it differs",
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(IF_MATCH_PATTERN)),
    )
}

/// The `If-Match` values [`crate::extract::if_match`] accepts: a version, bare or quoted,
/// optionally weak.
pub const IF_MATCH_PATTERN: &str = r#"^(W/)?("[0-9]{1,18}"|[0-9]{1,18})$"#;

/// The key ids `POST /consumers/{name}/keys` makes: 16 hex digits.
fn key_id() -> utoipa::openapi::path::Parameter {
    param(
        "id",
        ParameterIn::Path,
        "key id (16 hex digits)",
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[0-9a-f]{16}$")),
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

/// An operation that writes, or reads through the leader: it may also time out.
fn leader_op(tag: &str, summary: &str) -> OperationBuilder {
    op(tag, summary).response(
        "504",
        error("Reached the leader but did not complete in time; a write may still apply: read it back"),
    )
}

/// A JSON request body of `schema`.
fn body(schema: impl Into<RefOr<Schema>>, required: Required) -> RequestBody {
    RequestBodyBuilder::new()
        .content("application/json", json(schema))
        .required(Some(required))
        .build()
}

/// An operation with a request body, which may be too large.
fn with_body(op: OperationBuilder, body: RequestBody) -> OperationBuilder {
    op.request_body(Some(body)).response(
        "413",
        error(&format!("Body larger than {} bytes", crate::MAX_BODY)),
    )
}

fn unsafe_change() -> utoipa::openapi::Response {
    error("Refused: a majority of the voters left after the change would not answer")
}

fn resource_paths<R: Resource>(paths: &mut Paths) {
    let kind = R::KIND;
    let tag = kind.collection();
    let entity = <Entity<R::View> as PartialSchema>::schema();
    let name = || name_param("name", "resource name");
    let collection = format!("/{tag}");
    // A team token reads its team's objects of the owned kinds, and none of the others.
    let reads = |op: OperationBuilder| {
        if kind.cluster_wide() {
            op.response("403", team_forbidden())
        } else {
            op
        }
    };
    paths.add_path_operation(
        &collection,
        vec![HttpMethod::Get],
        reads(leader_op(
            tag,
            &format!("List {tag} (a team token: those it may read)"),
        ))
        .parameter(consistent())
        .response("200", ok("All of them", list_of(entity.clone()))),
    );
    let item = format!("/{tag}/{{name}}");
    paths.add_path_operation(
        &item,
        vec![HttpMethod::Get],
        reads(leader_op(tag, &format!("Read a {kind}")))
            .parameter(name())
            .parameter(consistent())
            .response(
                "200",
                ok("The resource; ETag is its version", entity.clone()),
            )
            .response("404", error("No such resource (or another team's)")),
    );
    paths.add_path_operation(
        &item,
        vec![HttpMethod::Put],
        with_body(
            leader_op(tag, &format!("Create or replace a {kind}")),
            body(R::schema(), Required::True),
        )
        .parameter(name())
        .parameter(if_match())
        .response("200", ok("Replaced", entity.clone()))
        .response("201", ok("Created", entity))
        .response("404", error("Deleted again before it could be read back"))
        .response(
            "409",
            error("The name is another team's, the path is served already, or what uses it cannot move to its new team"),
        )
        .response("412", error("If-Match version differs")),
    );
    paths.add_path_operation(
        &item,
        vec![HttpMethod::Delete],
        leader_op(tag, &format!("Delete a {kind}"))
            .parameter(name())
            .parameter(if_match())
            .response("204", ResponseBuilder::new().description("Deleted").build())
            .response("404", error("No such resource"))
            .response("409", error("Still referenced by another resource"))
            .response("412", error("If-Match version differs")),
    );
}

/// An API's versions (with their lifecycle) and subscriptions (with their approval).
fn catalog_paths(paths: &mut Paths) {
    let api = || name_param("name", "API name");
    let version = || name_param("version", "version name");
    let application = || name_param("application", "application (consumer) name");
    let entity = <Entity<ApiVersionSpec> as PartialSchema>::schema();
    let versions = "/apis/{name}/versions";
    let item = "/apis/{name}/versions/{version}";
    let no_api = || error("No such API (or another team's)");
    paths.add_path_operation(
        versions,
        vec![HttpMethod::Get],
        leader_op("apis", "List an API's versions")
            .parameter(api())
            .parameter(consistent())
            .response("200", ok("Its versions", list_of(entity.clone())))
            .response("404", no_api()),
    );
    paths.add_path_operation(
        item,
        vec![HttpMethod::Get],
        leader_op(
            "apis",
            "Read an API version (its name is `{api}/{version}`)",
        )
        .parameter(api())
        .parameter(version())
        .parameter(consistent())
        .response(
            "200",
            ok("The version; ETag is its version", entity.clone()),
        )
        .response("404", error("No such version")),
    );
    paths.add_path_operation(
        item,
        vec![HttpMethod::Put],
        with_body(
            leader_op(
                "apis",
                "Create or replace an API version; a new state must be an allowed move",
            ),
            body(ApiVersionSpec::schema(), Required::True),
        )
        .parameter(api())
        .parameter(version())
        .parameter(if_match())
        .response("200", ok("Replaced", entity.clone()))
        .response("201", ok("Created", entity.clone()))
        .response("404", no_api())
        .response(
            "409",
            error("A lifecycle move its state does not allow (illegal_transition)"),
        )
        .response("412", error("If-Match version differs")),
    );
    paths.add_path_operation(
        item,
        vec![HttpMethod::Delete],
        leader_op("apis", "Delete an API version and its routes")
            .parameter(api())
            .parameter(version())
            .parameter(if_match())
            .response("204", ResponseBuilder::new().description("Deleted").build())
            .response("404", error("No such version"))
            .response("409", error("Another version names it as its successor"))
            .response("412", error("If-Match version differs")),
    );
    paths.add_path_operation(
        "/apis/{name}/versions/{version}/transition",
        vec![HttpMethod::Post],
        with_body(
            leader_op(
                "apis",
                "Move an API version to another lifecycle state (audited with its actor)",
            ),
            body(Ref::from_schema_name("Transition"), Required::True),
        )
        .parameter(api())
        .parameter(version())
        .parameter(if_match())
        .response("200", ok("The version in its new state", entity))
        .response("404", error("No such version"))
        .response(
            "409",
            error("Not an allowed move; the message names the allowed ones"),
        )
        .response("412", error("If-Match version differs")),
    );
    import_paths(paths);
    let entity = <Entity<SubscriptionSpec> as PartialSchema>::schema();
    let subscriptions = "/apis/{name}/subscriptions";
    let item = "/apis/{name}/subscriptions/{application}";
    paths.add_path_operation(
        subscriptions,
        vec![HttpMethod::Get],
        leader_op(
            "subscriptions",
            "List an API's subscriptions (a team token: its applications', or all for the API's team)",
        )
        .parameter(api())
        .parameter(consistent())
        .response("200", ok("The subscriptions", list_of(entity.clone())))
        .response("404", no_api()),
    );
    paths.add_path_operation(
        subscriptions,
        vec![HttpMethod::Post],
        with_body(
            leader_op(
                "subscriptions",
                "Subscribe an application: active at once (auto) or pending approval",
            ),
            body(Ref::from_schema_name("Subscribe"), Required::True),
        )
        .parameter(api())
        .response("201", ok("Subscribed", entity.clone()))
        .response(
            "200",
            ok("Subscribed again after a rejection", entity.clone()),
        )
        .response("404", no_api())
        .response(
            "409",
            error("The API takes no subscriptions, or the application has one already"),
        ),
    );
    paths.add_path_operation(
        item,
        vec![HttpMethod::Get],
        leader_op("subscriptions", "Read a subscription")
            .parameter(api())
            .parameter(application())
            .parameter(consistent())
            .response("200", ok("The subscription", entity.clone()))
            .response("404", error("No such subscription")),
    );
    paths.add_path_operation(
        item,
        vec![HttpMethod::Delete],
        leader_op("subscriptions", "Revoke a subscription on every node")
            .parameter(api())
            .parameter(application())
            .parameter(if_match())
            .response("204", ResponseBuilder::new().description("Revoked").build())
            .response("404", error("No such subscription"))
            .response("412", error("If-Match version differs")),
    );
    for (verb, summary) in [
        (
            "approve",
            "Approve a pending subscription (an owner of the API's team)",
        ),
        (
            "reject",
            "Reject a pending subscription (an owner of the API's team)",
        ),
    ] {
        paths.add_path_operation(
            format!("{item}/{verb}"),
            vec![HttpMethod::Post],
            leader_op("subscriptions", summary)
                .parameter(api())
                .parameter(application())
                .response("200", ok("The decided subscription", entity.clone()))
                .response("404", error("No such subscription"))
                .response("409", error("The subscription is not pending")),
        );
    }
}

/// The OpenAPI document an import reads: what routes are made of, the rest not described.
fn openapi_document() -> Schema {
    ObjectBuilder::new()
        .description(Some(
            "An OpenAPI 3.0 or 3.1 document; only `openapi` and the operations under `paths` are read",
        ))
        .property(
            "openapi",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(r"^3\.[01]\.[0-9]+$")),
        )
        .required("openapi")
        .property(
            "paths",
            ObjectBuilder::new().schema_type(Type::Object),
        )
        .required("paths")
        .into()
}

/// `POST .../import` and `GET .../openapi` of an API version.
fn import_paths(paths: &mut Paths) {
    let api = || name_param("name", "API name");
    let version = || name_param("version", "version name");
    let document = || json(openapi_document());
    let routes = <Entity<RouteSpec> as PartialSchema>::schema();
    let body = RequestBodyBuilder::new()
        .description(Some(
            "The document as JSON or YAML: by Content-Type (application/json; application/yaml, application/x-yaml or text/yaml), else JSON when it starts with {",
        ))
        .content("application/json", document())
        .content("text/yaml", document())
        .required(Some(Required::True))
        .build();
    paths.add_path_operation(
        "/apis/{name}/versions/{version}/import",
        vec![HttpMethod::Post],
        with_body(
            leader_op(
                "apis",
                "Replace an API version's routes with one per path and method of an OpenAPI document, in one write; the document is kept",
            ),
            body,
        )
        .parameter(api())
        .parameter(version())
        .parameter(if_match())
        .response(
            "200",
            ok("The version's routes now", list_of(routes)),
        )
        .response(
            "400",
            error("The document cannot be imported; `field` names where in it, e.g. paths./users/{id}.get"),
        )
        .response("404", error("No such version (or another team's)"))
        .response(
            "409",
            error("The version's backend is not a service, or a route name is another's"),
        )
        .response(
            "412",
            error("If-Match version differs, or the version changed during the import"),
        ),
    );
    paths.add_path_operation(
        "/apis/{name}/versions/{version}/openapi",
        vec![HttpMethod::Get],
        leader_op("apis", "The version's OpenAPI document as it was imported")
            .parameter(api())
            .parameter(version())
            .parameter(consistent())
            .response(
                "200",
                ResponseBuilder::new()
                    .description("The document, as JSON or as YAML as it was written")
                    .content(
                        "application/json",
                        json(ObjectBuilder::new().schema_type(Type::Object)),
                    )
                    .content("application/yaml", ContentBuilder::new().build())
                    .build(),
            )
            .response("404", error("No such version, or it has no document")),
    );
}

fn instance_paths(paths: &mut Paths) {
    let service = || name_param("service", "service name");
    let id = || name_param("id", "instance id, unique in the cluster");
    let entity = <Entity<InstanceSpec> as PartialSchema>::schema();
    paths.add_path_operation(
        "/services/{service}/instances",
        vec![HttpMethod::Get],
        leader_op("instances", "List the instances registered for a service")
            .parameter(service())
            .parameter(consistent())
            .response("200", ok("The instances", list_of(entity.clone())))
            .response("404", error("No such service")),
    );
    paths.add_path_operation(
        "/services/{service}/instances/{id}",
        vec![HttpMethod::Put],
        with_body(
            leader_op(
                "instances",
                "Register (or re-register) an instance with a TTL",
            ),
            body(InstanceSpec::schema(), Required::True),
        )
        .parameter(service())
        .parameter(id())
        .parameter(if_match())
        .response("201", ok("Registered", entity.clone()))
        .response("200", ok("Re-registered", entity.clone()))
        .response("404", error("No such service"))
        .response("412", error("If-Match version differs")),
    );
    paths.add_path_operation(
        "/services/{service}/instances/{id}",
        vec![HttpMethod::Delete],
        leader_op("instances", "Deregister an instance")
            .parameter(service())
            .parameter(id())
            .parameter(if_match())
            .response(
                "204",
                ResponseBuilder::new().description("Deregistered").build(),
            )
            .response("404", error("No such instance"))
            .response("412", error("If-Match version differs")),
    );
    paths.add_path_operation(
        "/services/{service}/instances/{id}/heartbeat",
        vec![HttpMethod::Put],
        leader_op("instances", "Keep an instance alive for another TTL")
            .parameter(service())
            .parameter(id())
            .response("200", ok("Alive", entity))
            .response(
                "404",
                error("Not registered (it may have expired): register it again"),
            ),
    );
}

/// A consumer's usage and keys.
fn consumer_paths(paths: &mut Paths) {
    let consumer = || name_param("name", "consumer name");
    paths.add_path_operation(
        "/consumers/{name}/usage",
        vec![HttpMethod::Get],
        leader_op(
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
    let settings = || Ref::from_schema_name("KeySettings");
    paths.add_path_operation(
        "/consumers/{name}/keys",
        vec![HttpMethod::Post],
        with_body(
            leader_op("keys", "Create an API key; the secret is returned only now"),
            body(settings(), Required::False),
        )
        .parameter(consumer())
        .response(
            "201",
            ok("The new key", Ref::from_schema_name("CreatedKey")),
        )
        .response("404", error("No such consumer")),
    );
    paths.add_path_operation(
        "/consumers/{name}/keys/{id}",
        vec![HttpMethod::Put],
        with_body(
            leader_op(
                "keys",
                "Replace a key's settings (its AI limits); the secret stays",
            ),
            body(settings(), Required::True),
        )
        .parameter(consumer())
        .parameter(key_id())
        .response("200", ok("The key", Ref::from_schema_name("KeyInfo")))
        .response("404", error("No such key"))
        .response("412", error("Changed or revoked at the same time")),
    );
    paths.add_path_operation(
        "/consumers/{name}/keys",
        vec![HttpMethod::Get],
        leader_op("keys", "List a consumer's keys (ids and prefixes only)")
            .parameter(consumer())
            .parameter(consistent())
            .response(
                "200",
                ok("The keys", list_of(Ref::from_schema_name("KeyInfo"))),
            )
            .response("404", error("No such consumer")),
    );
    paths.add_path_operation(
        "/consumers/{name}/keys/{id}",
        vec![HttpMethod::Delete],
        leader_op("keys", "Revoke a key")
            .parameter(consumer())
            .parameter(key_id())
            .response("204", ResponseBuilder::new().description("Revoked").build())
            .response("404", error("No such key")),
    );
}

/// Status, membership and snapshots.
fn cluster_paths(paths: &mut Paths) {
    let status = || {
        ok(
            "The cluster as seen by the answering node",
            Ref::from_schema_name("ClusterStatus"),
        )
    };
    paths.add_path_operation(
        "/cluster",
        vec![HttpMethod::Get],
        op("cluster", "Leader, term and members")
            .response("200", status())
            .response("403", team_forbidden()),
    );
    paths.add_path_operation(
        "/cluster/nodes",
        vec![HttpMethod::Get],
        op(
            "cluster",
            "Every member with its health: role, leader, applied index, lag, and whether it answers its readiness check (a node that does not is `down`)",
        )
        .response(
            "200",
            ok(
                "Every member as the answering node sees it",
                Ref::from_schema_name("ClusterNodes"),
            ),
        )
        .response("403", team_forbidden()),
    );
    paths.add_path_operation(
        "/cluster/members",
        vec![HttpMethod::Post],
        with_body(
            leader_op(
                "cluster",
                "Add a running node: as learner, then as voter once caught up",
            ),
            body(Ref::from_schema_name("AddMember"), Required::True),
        )
        .response("200", status())
        .response("409", unsafe_change()),
    );
    paths.add_path_operation(
        "/cluster/members/{id}",
        vec![HttpMethod::Delete],
        leader_op("cluster", "Remove a node from the cluster")
            .parameter(param(
                "id",
                ParameterIn::Path,
                "node id",
                integer(1, u64::MAX),
            ))
            .response("200", status())
            .response("409", unsafe_change()),
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
        "/openapi.json",
        vec![HttpMethod::Get],
        OperationBuilder::new()
            .tag("meta")
            .summary(Some("This document"))
            .response(
                "200",
                ok(
                    "OpenAPI 3.1",
                    ObjectBuilder::new().schema_type(Type::Object),
                ),
            )
            .response("401", error("Missing or wrong admin token")),
    );
}

/// What answers without a token: liveness, readiness, metrics.
fn open_paths(paths: &mut Paths) {
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
}

/// The filters `GET /analytics` and `GET /analytics/top` share.
fn analytics_filters(mut op: OperationBuilder) -> OperationBuilder {
    for (name, what) in [
        ("api", "only this API"),
        ("version", "only this API version"),
        ("route", "only this route"),
        ("service", "only this service"),
        ("consumer", "only this consumer (application)"),
    ] {
        op = op.parameter(param(name, ParameterIn::Query, what, string()));
    }
    op.parameter(param(
        "from",
        ParameterIn::Query,
        "from this Unix millisecond (default: an hour before `to`)",
        integer(0, u64::MAX),
    ))
    .parameter(param(
        "to",
        ParameterIn::Query,
        "to this Unix millisecond, exclusive (default: now)",
        integer(0, u64::MAX),
    ))
    .parameter(param(
        "step",
        ParameterIn::Query,
        "minute (kept 24 h), hour (30 days) or day (400 days); default: the finest still kept for `from`",
        Ref::from_schema_name("Resolution"),
    ))
    .response("400", error("A query parameter is malformed"))
    .response("403", team_forbidden())
}

/// `GET /ai/usage`, also served as `GET /analytics/ai`.
fn ai_usage_op(tag: &str, summary: &str) -> OperationBuilder {
    op(tag, summary)
        .response("403", team_forbidden())
        .parameter(param(
            "consumer",
            ParameterIn::Query,
            "only this consumer",
            string(),
        ))
        .parameter(param(
            "key",
            ParameterIn::Query,
            "only this key id",
            string(),
        ))
        .parameter(param(
            "model",
            ParameterIn::Query,
            "only this model alias",
            string(),
        ))
        .parameter(param(
            "provider",
            ParameterIn::Query,
            "only this provider",
            string(),
        ))
        .parameter(param(
            "from",
            ParameterIn::Query,
            "buckets starting at or after this Unix millisecond",
            integer(0, u64::MAX),
        ))
        .parameter(param(
            "to",
            ParameterIn::Query,
            "buckets starting before this Unix millisecond",
            integer(0, u64::MAX),
        ))
        .parameter(param(
            "period",
            ParameterIn::Query,
            "hour (kept 7 days) or day (kept 400 days, the default)",
            Ref::from_schema_name("Period"),
        ))
        .response(
            "200",
            ok(
                "Matching buckets and their sum",
                Ref::from_schema_name("UsageReport"),
            ),
        )
}

fn analytics_paths(paths: &mut Paths) {
    paths.add_path_operation(
        "/analytics",
        vec![HttpMethod::Get],
        analytics_filters(op(
            "analytics",
            "Proxied traffic over time (requests, status classes, error rate, p50/p95/p99 latency, bytes) from the cluster's replicated analytics",
        ))
        .response(
            "200",
            ok(
                "One point per step with traffic, and the whole window",
                Ref::from_schema_name("AnalyticsReport"),
            ),
        ),
    );
    paths.add_path_operation(
        "/analytics/top",
        vec![HttpMethod::Get],
        analytics_filters(op(
            "analytics",
            "The consumers, routes, services or API versions with the most requests, errors or latency",
        ))
        .parameter(param(
            "by",
            ParameterIn::Query,
            "group by (default consumer)",
            Ref::from_schema_name("TopBy"),
        ))
        .parameter(param(
            "metric",
            ParameterIn::Query,
            "rank by (default requests; latency ranks by p99)",
            Ref::from_schema_name("TopMetric"),
        ))
        .parameter(param(
            "limit",
            ParameterIn::Query,
            "most rows (default 10)",
            integer(1, 1000),
        ))
        .response(
            "200",
            ok("Groups, largest first", Ref::from_schema_name("TopReport")),
        ),
    );
    paths.add_path_operation(
        "/analytics/ai",
        vec![HttpMethod::Get],
        ai_usage_op(
            "analytics",
            "AI gateway usage: the same report as GET /ai/usage",
        ),
    );
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
    resource_paths::<TeamSpec>(&mut paths);
    resource_paths::<ApiSpec>(&mut paths);
    catalog_paths(&mut paths);
    instance_paths(&mut paths);
    access_paths(&mut paths);
    consumer_paths(&mut paths);
    cluster_paths(&mut paths);
    open_paths(&mut paths);
    paths.add_path_operation(
        "/ai/usage",
        vec![HttpMethod::Get],
        ai_usage_op(
            "ai/usage",
            "AI gateway usage (requests, tokens, cost) by hour or day, consumer, key, model and provider",
        ),
    );
    analytics_paths(&mut paths);
    paths.add_path_operation(
        "/upstreams/health",
        vec![HttpMethod::Get],
        op(
            "upstreams",
            "Health of every service's targets as this node (or every node) sees it",
        )
        .response("403", team_forbidden())
        .parameter(param(
            "cluster",
            ParameterIn::Query,
            "true: ask every member too",
            boolean(),
        ))
        .response(
            "200",
            ok(
                "One entry per node",
                ArrayBuilder::new().items(Ref::from_schema_name("NodeUpstreams")),
            ),
        ),
    );
    forbid_writes(&mut paths);
    name_operations(&mut paths);
    link_paths(&mut paths);
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
        .schema_from::<ConsumerView>()
        .schema_from::<JwtCredentialView>()
        .schema_from::<BasicCredentialView>()
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
        .schema_from::<ClusterNodes>()
        .schema_from::<NodeHealth>()
        .schema_from::<NodeState>()
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
        .schema_from::<TeamSpec>()
        .schema_from::<ApiSpec>()
        .schema_from::<Plan>()
        .schema_from::<Visibility>()
        .schema_from::<SubscriptionMode>()
        .schema_from::<ApiVersionSpec>()
        .schema_from::<Backend>()
        .schema_from::<Lifecycle>()
        .schema_from::<ApiVersionRef>()
        .schema_from::<SubscriptionSpec>()
        .schema_from::<SubscriptionState>()
        .schema_from::<Subscribe>()
        .schema_from::<Transition>()
        .schema_from::<AnalyticsReport>()
        .schema_from::<AnalyticsPoint>()
        .schema_from::<Summary>()
        .schema_from::<StatusClasses>()
        .schema_from::<Latency>()
        .schema_from::<Resolution>()
        .schema_from::<TopReport>()
        .schema_from::<TopRow>()
        .schema_from::<TopBy>()
        .schema_from::<TopMetric>()
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
        let mut doc = serde_json::to_value(build()).unwrap_or_default();
        bound_unsigned(&mut doc);
        camel_case_links(&mut doc);
        doc.to_string()
    })
}

/// utoipa 5.5 writes the fields of a Link Object in snake case (`operation_id`), which
/// OpenAPI does not know; renames them as the specification spells them.
fn camel_case_links(doc: &mut serde_json::Value) {
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    let responses = paths
        .values_mut()
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut())
        .filter_map(|operation| operation.get_mut("responses")?.as_object_mut())
        .flat_map(|responses| responses.values_mut());
    for response in responses {
        let Some(links) = response.get_mut("links").and_then(|l| l.as_object_mut()) else {
            continue;
        };
        for link in links.values_mut().filter_map(|l| l.as_object_mut()) {
            for (from, to) in [
                ("operation_id", "operationId"),
                ("operation_ref", "operationRef"),
                ("request_body", "requestBody"),
            ] {
                if let Some(value) = link.remove(from) {
                    link.insert(to.into(), value);
                }
            }
        }
    }
}

/// utoipa states an unsigned integer by a format it spells `u-int64` (`u-int8` to `u-int64`)
/// and a minimum of 0. This spells the format as OpenAPI's format registry does (`uint64`)
/// and adds the maximum, so that clients and fuzzers know the whole range the server takes
/// (JSON Schema validators do not know these formats).
fn bound_unsigned(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            let unsigned = match map.get("format").and_then(serde_json::Value::as_str) {
                Some("u-int8" | "uint8") => Some(("uint8", u64::from(u8::MAX))),
                Some("u-int16" | "uint16") => Some(("uint16", u64::from(u16::MAX))),
                Some("u-int32" | "uint32") => Some(("uint32", u64::from(u32::MAX))),
                Some("u-int64" | "uint64") => Some(("uint64", u64::MAX)),
                _ => None,
            };
            if let Some((format, max)) = unsigned {
                map.insert("format".into(), format.into());
                map.entry("minimum").or_insert(0.into());
                map.entry("maximum").or_insert(max.into());
            }
            map.values_mut().for_each(bound_unsigned);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(bound_unsigned),
        _ => {}
    }
}

/// `GET /openapi.json`.
pub async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document states the same name rule as `validate::name`, for path parameters and
    /// for `CreateToken.name`.
    #[test]
    fn the_name_pattern_is_the_validation_rule() {
        let pattern = regex::Regex::new(NAME_PATTERN).unwrap();
        let long = "a".repeat(validate::MAX_NAME_LEN);
        let too_long = "a".repeat(validate::MAX_NAME_LEN + 1);
        for name in [
            "a", "web-1", "A_b.c~d", ".", "..", "~", "...", ".a", "..a", "~a", ".~", "", "a b",
            "a/b", "é", "a%2f", "x\n", &long, &too_long,
        ] {
            let by_schema = pattern.is_match(name)
                && (1..=validate::MAX_NAME_LEN).contains(&name.chars().count());
            assert_eq!(
                by_schema,
                validate::name("name", name).is_ok(),
                "{name:?}: the schema and validate::name disagree; update NAME_PATTERN"
            );
        }
        let doc: serde_json::Value = serde_json::from_str(document()).unwrap();
        let token = &doc["components"]["schemas"]["CreateToken"]["properties"]["name"];
        assert_eq!(token["pattern"], NAME_PATTERN);
        assert_eq!(token["maxLength"], validate::MAX_NAME_LEN);
    }

    /// `If-Match` values the pattern admits are read as versions, and others are refused.
    #[test]
    fn the_if_match_pattern_is_what_the_server_reads() {
        let pattern = regex::Regex::new(IF_MATCH_PATTERN).unwrap();
        for value in [
            "42",
            "\"42\"",
            "W/\"42\"",
            "0",
            "W/7",
            "",
            "\"42",
            "42\"",
            "x",
            " 42",
            "-1",
            "1.5",
            "W/",
            "123456789012345678",
            "1234567890123456789",
            "\"\"42\"\"",
        ] {
            let mut headers = axum::http::HeaderMap::new();
            headers.insert(
                axum::http::header::IF_MATCH,
                axum::http::HeaderValue::from_str(value).unwrap(),
            );
            assert_eq!(
                pattern.is_match(value),
                crate::extract::if_match(&headers).is_ok(),
                "{value:?}"
            );
        }
    }
}
