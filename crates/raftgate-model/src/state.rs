//! The replicated state: what the Raft state machine holds on every node.
//!
//! Tables are persistent maps (`imbl::OrdMap`) behind an `Arc`, so that a published [`State`] is
//! an immutable snapshot: the proxy and the admin API read it without locks while the state
//! machine prepares the next one. A write copies only the O(log n) tree nodes on its path, never
//! a whole table, so its cost does not grow with the number of resources; a table a change did
//! not touch keeps its `Arc`, which tells readers (the proxy's router) that nothing changed.

use std::sync::Arc;

use imbl::OrdMap;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::access::{AuditLog, StoredToken, TeamSpec};
use crate::ai::{CooldownTable, ModelConfig, ProviderConfig, ProviderView, UsageTable};
use crate::catalog::{ApiSpec, ApiVersionSpec, SubscriptionSpec};
use crate::command::{Kind, Spec};
use crate::policy::UsageCounter;
use crate::prompt::PromptSpec;
use crate::resource::{
    CertificateInfo, CertificateSpec, ConsumerSpec, ConsumerView, Entity, InstanceSpec,
    RateLimitSpec, RouteSpec, ServiceSpec, StoredKey,
};
use crate::validate::{self, ValidationError};

/// Resources of one kind, by name.
pub type Table<T> = Arc<OrdMap<String, Entity<T>>>;

/// Everything the cluster replicates, as of one applied log index.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Upstream services.
    pub services: Table<ServiceSpec>,
    /// Routes.
    pub routes: Table<RouteSpec>,
    /// Consumers.
    pub consumers: Table<ConsumerSpec>,
    /// Rate-limit policies.
    pub rate_limits: Table<RateLimitSpec>,
    /// API keys, by key id.
    pub keys: Table<StoredKey>,
    /// Self-registered service instances, by instance id.
    pub instances: Table<InstanceSpec>,
    /// TLS certificates.
    pub certificates: Table<CertificateSpec>,
    /// Admin API tokens besides the bootstrap one, by token name.
    pub tokens: Table<StoredToken>,
    /// The last admin writes, oldest first (see [`crate::access`]).
    pub audit: AuditLog,
    /// LLM providers of the AI gateway (credentials sealed).
    pub ai_providers: Table<ProviderConfig>,
    /// Model aliases of the AI gateway.
    pub ai_models: Table<ModelConfig>,
    /// Prompt templates of the AI gateway served as APIs.
    pub ai_prompts: Table<PromptSpec>,
    /// AI gateway usage, rolled up per hour and day (see [`crate::ai::apply_ai_usage`]).
    pub ai_usage: Arc<UsageTable>,
    /// Proxied traffic per minute, hour and day (see [`crate::analytics`]).
    pub traffic: Arc<crate::analytics::TrafficTable>,
    /// AI deployments in cooldown cluster-wide (see [`crate::ai::apply_cooldowns`]).
    pub ai_cooldowns: Arc<CooldownTable>,
    /// Teams, the owners of the owned kinds.
    pub teams: Table<TeamSpec>,
    /// APIs of the catalog.
    pub apis: Table<ApiSpec>,
    /// Versions of APIs, by `"{api}/{version}"`.
    pub api_versions: Table<ApiVersionSpec>,
    /// Subscriptions of applications to APIs, by `"{api}/{application}"`.
    pub subscriptions: Table<SubscriptionSpec>,
    /// Rate-limit and quota counters, by counter key (`{rate limit}/{scope}:{subject}`).
    pub usage: Arc<OrdMap<String, UsageCounter>>,
    /// Index of the last log entry applied to this state.
    pub applied_index: u64,
}

impl State {
    /// The stored version of a resource, 0 when it does not exist.
    pub fn version_of(&self, kind: Kind, name: &str) -> u64 {
        fn v<T>(t: &Table<T>, name: &str) -> u64 {
            t.get(name).map_or(0, |e| e.version)
        }
        match kind {
            Kind::Service => v(&self.services, name),
            Kind::Route => v(&self.routes, name),
            Kind::Consumer => v(&self.consumers, name),
            Kind::RateLimit => v(&self.rate_limits, name),
            Kind::Key => v(&self.keys, name),
            Kind::Instance => v(&self.instances, name),
            Kind::Certificate => v(&self.certificates, name),
            Kind::Token => v(&self.tokens, name),
            Kind::AiProvider => v(&self.ai_providers, name),
            Kind::AiModel => v(&self.ai_models, name),
            Kind::AiPrompt => v(&self.ai_prompts, name),
            Kind::Team => v(&self.teams, name),
            Kind::Api => v(&self.apis, name),
            Kind::ApiVersion => v(&self.api_versions, name),
            Kind::Subscription => v(&self.subscriptions, name),
        }
    }

    /// Routes that send traffic to `service`.
    pub fn routes_of_service(&self, service: &str) -> Vec<String> {
        self.routes
            .values()
            .filter(|r| r.spec.service == service)
            .map(|r| r.name.clone())
            .collect()
    }

    /// Routes of API version `version` (its key, `"{api}/{version}"`): they go with it.
    pub fn routes_of_version(&self, version: &str) -> Vec<String> {
        self.routes
            .values()
            .filter(|r| {
                r.spec
                    .api_version
                    .as_ref()
                    .is_some_and(|v| v.key() == version)
            })
            .map(|r| r.name.clone())
            .collect()
    }

    /// Instances registered for `service`.
    pub fn instances_of_service(
        &self,
        service: &str,
    ) -> impl Iterator<Item = &Entity<InstanceSpec>> {
        self.instances
            .values()
            .filter(move |i| i.spec.service == service)
    }

    /// Instances whose last heartbeat is older than their TTL at `now_ms`.
    pub fn expired_instances(&self, now_ms: u64) -> Vec<String> {
        self.instances
            .values()
            .filter(|i| i.updated_at.saturating_add(i.spec.ttl_ms) < now_ms)
            .map(|i| i.name.clone())
            .collect()
    }

    /// Model aliases with a deployment on AI provider `provider`.
    pub fn models_of_provider(&self, provider: &str) -> Vec<String> {
        self.ai_models
            .values()
            .filter(|m| m.spec.deployments.iter().any(|d| d.provider == provider))
            .map(|m| m.name.clone())
            .collect()
    }

    /// Key ids owned by `consumer`.
    pub fn keys_of_consumer(&self, consumer: &str) -> Vec<String> {
        self.keys
            .values()
            .filter(|k| k.spec.consumer == consumer)
            .map(|k| k.name.clone())
            .collect()
    }
}

/// A kind of resource as seen by generic code (admin handlers, the CLI, the state machine).
pub trait Resource:
    Clone + Serialize + DeserializeOwned + ToSchema + Send + Sync + 'static
{
    /// The kind tag.
    const KIND: Kind;
    /// The table of this kind in a state.
    fn table(state: &State) -> &Table<Self>;
    /// The mutable table of this kind, for the state machine.
    fn table_mut(state: &mut State) -> &mut Table<Self>;
    /// Wraps the spec for a [`crate::Command::Put`].
    fn into_spec(self) -> Spec;
    /// Checks the spec on its own (references to other resources are checked on apply).
    fn validate(&self) -> Result<(), ValidationError>;
    /// What the admin API shows of a spec (secrets removed).
    type View: Serialize + DeserializeOwned + ToSchema + Send + 'static;
    /// The admin API's view of this spec.
    fn view(&self) -> Self::View;
}

impl<T: Resource> Entity<T> {
    /// The entity as the admin API shows it.
    pub fn view(&self) -> Entity<T::View> {
        Entity {
            name: self.name.clone(),
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
            spec: self.spec.view(),
        }
    }
}

macro_rules! resource {
    // The admin API shows the spec as stored.
    ($ty:ty, $kind:ident, $field:ident, $validate:path) => {
        resource!($ty, $kind, $field, $validate, $ty, Clone::clone);
    };
    // The admin API shows `$view`, made by `$show` (secrets left out).
    ($ty:ty, $kind:ident, $field:ident, $validate:path, $view:ty, $show:expr) => {
        impl Resource for $ty {
            const KIND: Kind = Kind::$kind;
            fn table(state: &State) -> &Table<Self> {
                &state.$field
            }
            fn table_mut(state: &mut State) -> &mut Table<Self> {
                &mut state.$field
            }
            fn into_spec(self) -> Spec {
                Spec::$kind(self)
            }
            fn validate(&self) -> Result<(), ValidationError> {
                $validate(self)
            }
            type View = $view;
            fn view(&self) -> $view {
                $show(self)
            }
        }
    };
}

resource!(ServiceSpec, Service, services, validate::service);
resource!(
    ConsumerSpec,
    Consumer,
    consumers,
    validate::consumer,
    ConsumerView,
    ConsumerSpec::view
);
resource!(
    CertificateSpec,
    Certificate,
    certificates,
    validate::certificate,
    CertificateInfo,
    CertificateSpec::info
);
resource!(
    ProviderConfig,
    AiProvider,
    ai_providers,
    validate::ai_provider,
    ProviderView,
    ProviderConfig::view
);
resource!(RouteSpec, Route, routes, validate::route);
resource!(RateLimitSpec, RateLimit, rate_limits, validate::rate_limit);
resource!(StoredKey, Key, keys, validate::key);
resource!(InstanceSpec, Instance, instances, validate::instance);
resource!(ModelConfig, AiModel, ai_models, validate::ai_model);
resource!(PromptSpec, AiPrompt, ai_prompts, crate::prompt::validate);
resource!(TeamSpec, Team, teams, validate::team_spec);
resource!(ApiSpec, Api, apis, crate::catalog::validate_api);
resource!(
    ApiVersionSpec,
    ApiVersion,
    api_versions,
    crate::catalog::validate_version
);
resource!(
    SubscriptionSpec,
    Subscription,
    subscriptions,
    crate::catalog::validate_subscription
);
// Tokens have no generic CRUD routes (see the admin API's `tokens` module), so this view, which
// shows the hash, is never served.
resource!(StoredToken, Token, tokens, validate::token);
