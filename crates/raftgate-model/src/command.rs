//! The commands the Raft log carries: every change to the replicated state is one of these.
//!
//! A command is wrapped in a [`Proposal`] that adds what the state machine needs to stay
//! deterministic and idempotent: the time stamped by the proposing node, and a request id so
//! that a write retried after a timeout is applied once.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::NodeId;
use crate::access::{AuditOperation, StoredToken, TeamSpec};
use crate::ai::{AiCooldown, AiUsageDelta, ModelConfig, ProviderConfig};
use crate::catalog::{ApiSpec, ApiVersionSpec, Lifecycle, SubscriptionSpec, SubscriptionState};
use crate::policy::UsageDelta;
use crate::prompt::PromptSpec;
use crate::resource::{
    CertificateSpec, ConsumerSpec, InstanceSpec, RateLimitSpec, RouteSpec, ServiceSpec, StoredKey,
};

/// The kinds of replicated resources; the first path segment of their admin URLs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Upstream services.
    Service,
    /// Routes to services.
    Route,
    /// API consumers.
    Consumer,
    /// Rate-limit policies.
    RateLimit,
    /// API keys of consumers.
    Key,
    /// Self-registered service instances.
    Instance,
    /// TLS certificates.
    Certificate,
    /// Admin API tokens.
    Token,
    /// LLM provider accounts of the AI gateway.
    AiProvider,
    /// Model aliases of the AI gateway.
    AiModel,
    /// Prompt templates of the AI gateway served as APIs.
    AiPrompt,
    /// Teams, the owners of the other kinds.
    Team,
    /// APIs of the catalog.
    Api,
    /// Versions of APIs.
    ApiVersion,
    /// Subscriptions of applications to APIs.
    Subscription,
}

impl Kind {
    /// Singular name used in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Service => "service",
            Kind::Route => "route",
            Kind::Consumer => "consumer",
            Kind::RateLimit => "rate_limit",
            Kind::Key => "key",
            Kind::Instance => "instance",
            Kind::Certificate => "certificate",
            Kind::Token => "token",
            Kind::AiProvider => "ai_provider",
            Kind::AiModel => "ai_model",
            Kind::AiPrompt => "ai_prompt",
            Kind::Team => "team",
            Kind::Api => "api",
            Kind::ApiVersion => "api_version",
            Kind::Subscription => "subscription",
        }
    }
}

impl Kind {
    /// The admin API collection path segment, e.g. `services` in `/services/{name}`. Versions
    /// and subscriptions are collections under their API (`/apis/{api}/versions`).
    pub fn collection(self) -> &'static str {
        match self {
            Kind::Service => "services",
            Kind::Route => "routes",
            Kind::Consumer => "consumers",
            Kind::RateLimit => "rate-limits",
            Kind::Key => "keys",
            Kind::Instance => "instances",
            Kind::Certificate => "certificates",
            Kind::Token => "tokens",
            Kind::AiProvider => "ai/providers",
            Kind::AiModel => "ai/models",
            Kind::AiPrompt => "ai/prompts",
            Kind::Team => "teams",
            Kind::Api => "apis",
            Kind::ApiVersion => "versions",
            Kind::Subscription => "subscriptions",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The accessors of the `team` field, for the kinds that have one (listed once).
macro_rules! team_field {
    ($($kind:ident),*) => {
        /// The team the spec names: `Some(None)` for an object of no team; `None` for kinds
        /// owned through another object (keys, instances, versions) or by the whole cluster.
        pub fn team(&self) -> Option<Option<&str>> {
            match self {
                $(Spec::$kind(s) => Some(s.team.as_deref()),)*
                _ => None,
            }
        }

        /// The `team` field, so the admin API can fill in a team token's team.
        pub fn team_mut(&mut self) -> Option<&mut Option<String>> {
            match self {
                $(Spec::$kind(s) => Some(&mut s.team),)*
                _ => None,
            }
        }
    };
}

/// A resource spec of any kind, as carried by [`Command::Put`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Spec {
    /// See [`ServiceSpec`].
    Service(ServiceSpec),
    /// See [`RouteSpec`].
    Route(RouteSpec),
    /// See [`ConsumerSpec`].
    Consumer(ConsumerSpec),
    /// See [`RateLimitSpec`].
    RateLimit(RateLimitSpec),
    /// See [`StoredKey`].
    Key(StoredKey),
    /// See [`InstanceSpec`].
    Instance(InstanceSpec),
    /// See [`CertificateSpec`].
    Certificate(CertificateSpec),
    /// See [`StoredToken`].
    Token(StoredToken),
    /// See [`ProviderConfig`].
    AiProvider(ProviderConfig),
    /// See [`ModelConfig`].
    AiModel(ModelConfig),
    /// See [`PromptSpec`].
    AiPrompt(PromptSpec),
    /// See [`TeamSpec`].
    Team(TeamSpec),
    /// See [`ApiSpec`].
    Api(ApiSpec),
    /// See [`ApiVersionSpec`]; named `"{api}/{version}"`.
    ApiVersion(ApiVersionSpec),
    /// See [`SubscriptionSpec`]; named `"{api}/{application}"`. Subscriptions are made with
    /// [`Command::Subscribe`] and decided with [`Command::Decide`]: a `Put` of one is refused.
    Subscription(SubscriptionSpec),
}

impl Spec {
    /// The kind of resource this spec describes.
    pub fn kind(&self) -> Kind {
        match self {
            Spec::Service(_) => Kind::Service,
            Spec::Route(_) => Kind::Route,
            Spec::Consumer(_) => Kind::Consumer,
            Spec::RateLimit(_) => Kind::RateLimit,
            Spec::Key(_) => Kind::Key,
            Spec::Instance(_) => Kind::Instance,
            Spec::Certificate(_) => Kind::Certificate,
            Spec::Token(_) => Kind::Token,
            Spec::AiProvider(_) => Kind::AiProvider,
            Spec::AiModel(_) => Kind::AiModel,
            Spec::AiPrompt(_) => Kind::AiPrompt,
            Spec::Team(_) => Kind::Team,
            Spec::Api(_) => Kind::Api,
            Spec::ApiVersion(_) => Kind::ApiVersion,
            Spec::Subscription(_) => Kind::Subscription,
        }
    }

    team_field!(
        Service, Route, Consumer, RateLimit, AiModel, AiPrompt, Api, Token
    );
}

/// A change to the replicated state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Create or replace the resource `name`. With `if_version`, only if its stored version is
    /// exactly that (0 means "must not exist yet").
    Put {
        /// Resource name.
        name: String,
        /// New contents (boxed: specs are much larger than the other commands).
        spec: Box<Spec>,
        /// Compare-and-set guard.
        if_version: Option<u64>,
    },
    /// Remove the resource `name`, optionally guarded like `Put`.
    Delete {
        /// Resource kind.
        kind: Kind,
        /// Resource name.
        name: String,
        /// Compare-and-set guard.
        if_version: Option<u64>,
    },
    /// A registered instance is alive: moves its `updated_at` to the proposal's time.
    Heartbeat {
        /// Instance id.
        instance: String,
    },
    /// Removes every instance whose last heartbeat is older than its TTL at the proposal's
    /// time. Proposed by the leader, so expiry is decided once for the whole cluster.
    ExpireInstances,
    /// One node's rate-limit usage since its last report, added to the replicated counters.
    /// Each node sends one per sync interval (never one per request); applying it also drops
    /// counters whose windows ended before the proposal's time.
    RecordUsage {
        /// The reporting node: counters keep each node's share of the current window.
        node: NodeId,
        /// What it admitted, by counter and window.
        deltas: Vec<UsageDelta>,
    },
    /// One node's AI gateway usage since its last report, added to the hourly and daily
    /// buckets, and the deployments it cooled down since. One per report interval and node,
    /// never one per call; applying it also drops buckets older than their retention and
    /// cooldowns over at the proposal's time.
    RecordAiUsage {
        /// What was used, by hour, consumer, key, model and provider.
        deltas: Vec<AiUsageDelta>,
        /// Deployments this node took out of rotation after repeated failures.
        cooldowns: Vec<AiCooldown>,
    },
    /// One node's proxied traffic since its last report, added to the minute, hour and day
    /// buckets of the analytics ([`crate::analytics::TrafficTable::apply`]). One per report
    /// interval and node, never one per request; applying it also drops buckets past their
    /// retention at the proposal's time.
    RecordTraffic {
        /// What was served, by minute and series.
        deltas: Vec<crate::analytics::TrafficDelta>,
    },
    /// Moves API version `version` of `api` to lifecycle state `to`, if that is one of the
    /// moves its state allows ([`crate::catalog::Lifecycle::allowed_next`]).
    Transition {
        /// The API.
        api: String,
        /// The version.
        version: String,
        /// The new state.
        to: Lifecycle,
        /// Compare-and-set guard on the version's stored version.
        if_version: Option<u64>,
    },
    /// Subscribes `application` (a consumer) to `api`: active at once when the API's
    /// subscription mode is `auto`, pending when it is `approval`.
    Subscribe {
        /// The API.
        api: String,
        /// The subscribing consumer.
        application: String,
        /// One of the API's plans.
        plan: Option<String>,
    },
    /// Approves (or rejects) the pending subscription of `application` to `api`; the actor
    /// must be an owner of the API's team (or a cluster admin).
    Decide {
        /// The API.
        api: String,
        /// The subscribed consumer.
        application: String,
        /// Approve (true) or reject.
        approve: bool,
    },
    /// Replaces every route of API version `version` of `api` with `routes` (each made the
    /// version's and the API team's), and its OpenAPI document with `openapi` when given: all
    /// or nothing, so an import never leaves half a set.
    ReplaceVersionRoutes {
        /// The API.
        api: String,
        /// The version.
        version: String,
        /// The new routes, by name.
        routes: Vec<(String, RouteSpec)>,
        /// The document they were made from.
        openapi: Option<String>,
        /// Only if the version is still at this version: the routes of an import are made
        /// from its base path and backend, which must not have changed in the meantime.
        if_version: Option<u64>,
    },
    /// Records in the audit log an admin operation that changes no replicated resource (a
    /// membership change, a snapshot), so that it is readable on every node like the writes.
    Record {
        /// What was done.
        operation: AuditOperation,
        /// The node id concerned, if any.
        name: Option<String>,
        /// Why it failed, if it did.
        error: Option<String>,
    },
}

/// What the Raft log stores: a command plus the data that keeps its application deterministic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// Client-chosen unique id; a second proposal with the same id is not applied again and gets
    /// the first one's outcome.
    pub request_id: u128,
    /// Wall-clock time at the proposing node, Unix milliseconds; used for `created_at`/`updated_at`.
    pub at_ms: u64,
    /// The change.
    pub command: Command,
    /// Name of the admin token that asked for the change, for the audit log; `None` for the
    /// cluster's own writes (instance expiry, heartbeats), which are not audited.
    pub actor: Option<String>,
}

/// What one Raft log entry carries: every write that was waiting for the leader when the entry was
/// proposed, so that one disk sync commits them all (group commit at the application level).
pub type Batch = Vec<Proposal>;

/// The successful result of applying a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Outcome {
    /// Log index at which the command was applied (the new version of a written resource).
    pub index: u64,
    /// Version of the resource after the command; `None` after a delete.
    pub version: Option<u64>,
    /// Whether a put created the resource (rather than replacing it).
    pub created: bool,
}

/// Why the state machine refused a command. Refusals are deterministic: every node refuses the same
/// command the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    /// The resource does not exist.
    #[error("{kind} '{name}' does not exist")]
    NotFound {
        /// Kind of the missing resource.
        kind: Kind,
        /// Name of the missing resource.
        name: String,
    },
    /// The `If-Match` version differs from the stored one.
    #[error(
        "{kind} '{name}' is at version {actual}, not {expected}; read it again and retry with the current version"
    )]
    VersionMismatch {
        /// Kind of the resource.
        kind: Kind,
        /// Name of the resource.
        name: String,
        /// Version the client expected.
        expected: u64,
        /// Version actually stored (0: absent).
        actual: u64,
    },
    /// The resource is referenced by others and cannot be removed.
    #[error("{kind} '{name}' is still used by {by_kind} {by:?}; delete or change those first")]
    InUse {
        /// Kind of the resource.
        kind: Kind,
        /// Name of the resource.
        name: String,
        /// Kind of the referencing resources.
        by_kind: Kind,
        /// Names of the referencing resources.
        by: Vec<String>,
    },
    /// A prompt API and a route (or two prompt APIs) would serve the same path, one shadowing
    /// the other.
    #[error(
        "{field} {path} is already served by {by_kind} '{by}'; choose another path, or change that {by_kind} first"
    )]
    PathTaken {
        /// JSON field holding the path.
        field: String,
        /// The path asked for.
        path: String,
        /// Kind of the resource serving it.
        by_kind: Kind,
        /// Name of the resource serving it.
        by: String,
    },
    /// The spec names a resource that does not exist.
    #[error("{field} names {kind} '{name}', which does not exist; create it first")]
    MissingReference {
        /// JSON field holding the reference.
        field: String,
        /// Kind of the referenced resource.
        kind: Kind,
        /// Name that was referenced.
        name: String,
    },
    /// A write-only secret was left out where none is stored to keep.
    #[error(
        "{field} is required: no secret is stored for it yet (secrets are write-only; leave one out only to keep the stored one)"
    )]
    MissingSecret {
        /// JSON field of the secret.
        field: String,
    },
    /// The actor's token may not make this write (see [`crate::access::authorize`]).
    #[error("admin token '{actor}' {reason}")]
    Forbidden {
        /// The token's name.
        actor: String,
        /// Why, and what would be allowed.
        reason: String,
        /// The JSON field at fault, if one is (the `team` of an object).
        field: Option<String>,
    },
    /// The actor's token was revoked between the request and the write.
    #[error("admin token '{actor}' no longer exists (it was revoked); use a valid token")]
    Revoked {
        /// The token's name.
        actor: String,
    },
    /// The name belongs to another team's object (names are unique across teams).
    #[error("{kind} '{name}' already exists and belongs to another team; choose another name")]
    NameTaken {
        /// Kind of the object.
        kind: Kind,
        /// Its name.
        name: String,
    },
    /// The spec names an object of another team: a team's objects may use only their own
    /// team's objects and shared ones (of no team).
    #[error(
        "{field} names {kind} '{name}', which belongs to another team; use one of the same team or a shared one"
    )]
    OtherTeam {
        /// JSON field holding the reference.
        field: String,
        /// Kind of the referenced object.
        kind: Kind,
        /// Its name.
        name: String,
    },
    /// A lifecycle move the version's state does not allow.
    #[error(
        "api_version '{api}/{version}' is {from}; it cannot move to {to} (allowed: {})",
        if allowed.is_empty() { "none, it is retired".to_string() } else {
            allowed.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        }
    )]
    IllegalTransition {
        /// The API.
        api: String,
        /// The version.
        version: String,
        /// Its state.
        from: Lifecycle,
        /// The state asked for.
        to: Lifecycle,
        /// The states it may move to.
        allowed: Vec<Lifecycle>,
    },
    /// The API takes no subscriptions (its subscription mode is `none`).
    #[error(
        "api '{api}' takes no subscriptions (subscription: none); its owners set subscription to auto or approval first"
    )]
    NoSubscriptions {
        /// The API.
        api: String,
    },
    /// The application already has a pending or active subscription to the API.
    #[error(
        "consumer '{application}' already has a subscription to api '{api}' ({state}); delete it first to subscribe anew"
    )]
    AlreadySubscribed {
        /// The API.
        api: String,
        /// The application.
        application: String,
        /// Its subscription's state.
        state: SubscriptionState,
    },
    /// Only a pending subscription is approved or rejected.
    #[error(
        "the subscription of consumer '{application}' to api '{api}' is {state}, not pending; only pending subscriptions are decided"
    )]
    NotPending {
        /// The API.
        api: String,
        /// The application.
        application: String,
        /// Its subscription's state.
        state: SubscriptionState,
    },
    /// The subscription names a plan the API does not have.
    #[error("api '{api}' has no plan '{plan}' (its plans: {plans:?})")]
    UnknownPlan {
        /// The API.
        api: String,
        /// The plan asked for.
        plan: String,
        /// The plans it has.
        plans: Vec<String>,
    },
    /// A plan still chosen by subscriptions would be removed from its API.
    #[error(
        "plan '{plan}' of api '{api}' is still chosen by the subscriptions of {by:?}; delete those first or keep the plan"
    )]
    PlanInUse {
        /// The API.
        api: String,
        /// The plan.
        plan: String,
        /// Applications subscribed on it.
        by: Vec<String>,
    },
    /// A command that is malformed in a way validation cannot see (e.g. a key that is not
    /// `"{api}/{version}"`).
    #[error("{field}: {message}")]
    Invalid {
        /// The field at fault.
        field: String,
        /// What is wrong.
        message: String,
    },
}

impl Rejection {
    /// The same rejection with the JSON field it names put under `prefix` (e.g. `routes[2]`),
    /// for a command that carries several objects.
    pub fn within(mut self, prefix: &str) -> Rejection {
        if let Some(field) = self.field_mut() {
            *field = format!("{prefix}.{field}");
        }
        self
    }

    /// The JSON field the rejection names, if it names one: for a caller that knows better
    /// where the field came from (an import names the document's operation).
    pub fn field_mut(&mut self) -> Option<&mut String> {
        match self {
            Rejection::PathTaken { field, .. }
            | Rejection::MissingReference { field, .. }
            | Rejection::MissingSecret { field }
            | Rejection::OtherTeam { field, .. }
            | Rejection::Invalid { field, .. }
            | Rejection::Forbidden {
                field: Some(field), ..
            } => Some(field),
            _ => None,
        }
    }
}

/// The state machine's answer to one proposal, as Raft returns it to the proposer.
pub type Applied = Result<Outcome, Rejection>;
