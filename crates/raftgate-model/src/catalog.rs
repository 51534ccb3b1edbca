//! The API catalog: APIs, their versions and the subscriptions of applications to them.
//!
//! Users of an API-management product think in APIs rather than routes: a team publishes an
//! API, its versions go through a lifecycle (draft, published, deprecated, retired), and
//! applications (consumers of a team) subscribe to it, with the owner's approval where the API
//! asks for one. These are replicated objects like routes and services, so every node knows the
//! same catalog; a version's routes are ordinary routes that name it
//! ([`crate::RouteSpec::api_version`]), so they keep every policy routes have.
//!
//! Versions and subscriptions are kept in their own tables under a composite key,
//! `"{api}/{version}"` and `"{api}/{application}"` ([`key`]): both parts are resource names,
//! which cannot contain `/`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::policy::{self, Policies};
use crate::validate::{self, ValidationError};

/// Who may see an API in the catalog and subscribe to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Every token reads it; applications of any team may subscribe.
    #[default]
    Public,
    /// Only its team reads it and subscribes its own applications.
    Team,
}

/// Whether calling an API takes a subscription, and how one is granted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionMode {
    /// No subscriptions: the routes' own policies decide who calls.
    #[default]
    None,
    /// A subscription is active as soon as it is made.
    Auto,
    /// A subscription waits for an owner of the API's team to approve it.
    Approval,
}

/// A plan: the rate limits and quotas a subscription on it is held to, counted per
/// application and API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The plan's name, e.g. `gold`; unique within the API.
    pub name: String,
    /// Names of rate limits (`/rate-limits/{name}`) that apply to its subscribers.
    #[serde(default)]
    pub rate_limits: Vec<String>,
}

/// An API: what a team offers and applications subscribe to. Its versions
/// (`/apis/{name}/versions/{version}`) carry the base path, the backend and the lifecycle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiSpec {
    /// Title for people, e.g. `Orders`.
    #[serde(default)]
    pub title: String,
    /// What the API is for.
    #[serde(default)]
    pub description: String,
    /// The owning team; filled in with the caller's team for a team token.
    #[serde(default)]
    pub team: Option<String>,
    /// Free-form labels.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Who sees it and may subscribe.
    #[serde(default)]
    pub visibility: Visibility,
    /// Whether calling it takes a subscription.
    #[serde(default)]
    pub subscription: SubscriptionMode,
    /// The plans subscriptions choose from.
    #[serde(default)]
    pub plans: Vec<Plan>,
}

/// Where an API version's traffic goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// An upstream service (`/services/{name}`).
    Service(String),
    /// An AI model alias (`/ai/models/{name}`).
    AiModel(String),
    /// A prompt API (`/ai/prompts/{name}`).
    Prompt(String),
}

impl Backend {
    /// The kind and name of the object it names.
    pub fn target(&self) -> (crate::Kind, &str) {
        match self {
            Backend::Service(s) => (crate::Kind::Service, s),
            Backend::AiModel(m) => (crate::Kind::AiModel, m),
            Backend::Prompt(p) => (crate::Kind::AiPrompt, p),
        }
    }

    /// The JSON field that holds the name, for errors.
    pub fn field(&self) -> &'static str {
        match self {
            Backend::Service(_) => "backend.service",
            Backend::AiModel(_) => "backend.ai_model",
            Backend::Prompt(_) => "backend.prompt",
        }
    }
}

/// Where an API version is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    /// Being built: served only to its own team's applications.
    #[default]
    Draft,
    /// Served to everyone its policies admit.
    Published,
    /// Still served, with `Deprecation`, `Sunset` and successor `Link` headers.
    Deprecated,
    /// No longer served: `410 Gone` naming the successor.
    Retired,
}

impl Lifecycle {
    /// The states this one may move to: draft → published → deprecated → retired, a
    /// deprecated version may be published again, and a published one retired at once.
    pub fn allowed_next(self) -> &'static [Lifecycle] {
        match self {
            Lifecycle::Draft => &[Lifecycle::Published],
            Lifecycle::Published => &[Lifecycle::Deprecated, Lifecycle::Retired],
            Lifecycle::Deprecated => &[Lifecycle::Published, Lifecycle::Retired],
            Lifecycle::Retired => &[],
        }
    }

    /// The name as JSON spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Draft => "draft",
            Lifecycle::Published => "published",
            Lifecycle::Deprecated => "deprecated",
            Lifecycle::Retired => "retired",
        }
    }
}

impl std::fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A version of an API, stored under `"{api}/{version}"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiVersionSpec {
    /// The path prefix the version is served under, e.g. `/orders/v1`, in the normal form
    /// requests are matched in.
    pub base_path: String,
    /// Where its traffic goes.
    pub backend: Backend,
    /// Its lifecycle state; changed with `POST .../transition` (or here, by an allowed move).
    #[serde(default)]
    pub state: Lifecycle,
    /// The version that replaces it (a version of the same API), named in the `Link` header
    /// of a deprecated version and the `410` of a retired one.
    #[serde(default)]
    pub successor: Option<String>,
    /// When it is retired, Unix milliseconds (the `Sunset` header of a deprecated version).
    #[serde(default)]
    pub sunset_at: Option<u64>,
    /// When it was deprecated, Unix milliseconds (the `Deprecation` header): stamped by the
    /// cluster when the version moves to `deprecated` unless given (a date announced ahead).
    #[serde(default)]
    pub deprecated_at: Option<u64>,
    /// The imported OpenAPI document, kept for the portal. A write that leaves it out keeps
    /// the stored one.
    #[serde(default)]
    pub openapi: Option<String>,
    /// Policies of an AI version (backend `ai_model` or `prompt`), which the proxy serves at
    /// `base_path` itself rather than through routes: IP rules, CORS, rate limits and the like
    /// apply there as on a route. A service version sets them on its routes instead.
    #[serde(default)]
    pub policies: Policies,
}

impl ApiVersionSpec {
    /// A draft version at `base_path` served by `backend`, with nothing else set.
    pub fn new(base_path: impl Into<String>, backend: Backend) -> ApiVersionSpec {
        ApiVersionSpec {
            base_path: base_path.into(),
            backend,
            state: Lifecycle::Draft,
            successor: None,
            sunset_at: None,
            deprecated_at: None,
            openapi: None,
            policies: Policies::default(),
        }
    }
}

/// A route's owner: the API version whose routes it is one of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiVersionRef {
    /// The API's name.
    pub api: String,
    /// The version's name.
    pub version: String,
}

impl ApiVersionRef {
    /// The key of the version in [`crate::State::api_versions`].
    pub fn key(&self) -> String {
        key(&self.api, &self.version)
    }
}

/// The API version a proxy refusal is about (`403 not_subscribed`, `410 Gone` of a retired
/// version), in the error body, so a client can tell which API to subscribe to or move to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RefusedVersion {
    /// The API's name.
    pub api: String,
    /// The version's name.
    pub version: String,
    /// The version's lifecycle state.
    pub state: Lifecycle,
    /// The version that replaces it, if it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successor: Option<String>,
    /// The successor's base path, where its requests go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successor_path: Option<String>,
}

/// Where a subscription is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionState {
    /// Waiting for an owner of the API's team.
    Pending,
    /// The application may call the API.
    Active,
    /// Refused; subscribing again asks anew.
    Rejected,
}

impl SubscriptionState {
    /// The name as JSON spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionState::Pending => "pending",
            SubscriptionState::Active => "active",
            SubscriptionState::Rejected => "rejected",
        }
    }
}

impl std::fmt::Display for SubscriptionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An application's subscription to an API, stored under `"{api}/{application}"`: one per
/// API and application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionSpec {
    /// The API subscribed to.
    pub api: String,
    /// The subscribing application (a consumer).
    pub application: String,
    /// The plan chosen, one of the API's.
    #[serde(default)]
    pub plan: Option<String>,
    /// Pending, active or rejected.
    pub state: SubscriptionState,
}

/// The key of a version (or a subscription) of `api`: `"{api}/{part}"`.
pub fn key(api: &str, part: &str) -> String {
    format!("{api}/{part}")
}

/// The two names of a version or subscription key; `None` for a key that is not one.
pub fn split_key(key: &str) -> Option<(&str, &str)> {
    key.split_once('/')
        .filter(|(api, part)| !api.is_empty() && !part.is_empty() && !part.contains('/'))
}

/// The API a version or subscription key belongs to.
pub fn api_of(key: &str) -> &str {
    split_key(key).map_or(key, |(api, _)| api)
}

/// Longest title accepted.
const MAX_TITLE: usize = 200;

fn err(field: impl Into<String>, message: impl Into<String>) -> ValidationError {
    ValidationError {
        field: field.into(),
        message: message.into(),
    }
}

/// See [`ApiSpec`].
pub fn validate_api(spec: &ApiSpec) -> Result<(), ValidationError> {
    if spec.title.chars().count() > MAX_TITLE {
        return Err(err(
            "title",
            format!("must be at most {MAX_TITLE} characters"),
        ));
    }
    validate::description("description", &spec.description)?;
    validate::team("team", spec.team.as_deref())?;
    validate::tags("tags", &spec.tags)?;
    for (i, plan) in spec.plans.iter().enumerate() {
        validate::name(&format!("plans[{i}].name"), &plan.name)?;
        if spec.plans[..i].iter().any(|p| p.name == plan.name) {
            return Err(err(
                format!("plans[{i}].name"),
                format!("plan '{}' is listed twice", plan.name),
            ));
        }
        for (j, limit) in plan.rate_limits.iter().enumerate() {
            validate::name(&format!("plans[{i}].rate_limits[{j}]"), limit)?;
        }
    }
    Ok(())
}

/// See [`ApiVersionSpec`].
pub fn validate_version(spec: &ApiVersionSpec) -> Result<(), ValidationError> {
    validate::normal_path("base_path", &spec.base_path)?;
    let (_, name) = spec.backend.target();
    validate::name(spec.backend.field(), name)?;
    if let Some(successor) = &spec.successor {
        validate::name("successor", successor)?;
    }
    if !spec.policies.is_empty() && matches!(spec.backend, Backend::Service(_)) {
        return Err(err(
            "policies",
            "only an AI version (backend ai_model or prompt) has policies of its own; set those of a service version on its routes",
        ));
    }
    policy::validate(&spec.policies)?;
    if spec.openapi.as_ref().is_some_and(|d| d.trim().is_empty()) {
        return Err(err(
            "openapi",
            "must not be empty; leave it out to keep the stored document",
        ));
    }
    Ok(())
}

/// See [`SubscriptionSpec`].
pub fn validate_subscription(spec: &SubscriptionSpec) -> Result<(), ValidationError> {
    validate::name("api", &spec.api)?;
    validate::name("application", &spec.application)?;
    if let Some(plan) = &spec.plan {
        validate::name("plan", plan)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_moves() {
        use Lifecycle::*;
        let all = [Draft, Published, Deprecated, Retired];
        let allowed: Vec<(Lifecycle, Lifecycle)> = all
            .iter()
            .flat_map(|from| from.allowed_next().iter().map(move |to| (*from, *to)))
            .collect();
        assert_eq!(
            allowed,
            [
                (Draft, Published),
                (Published, Deprecated),
                (Published, Retired),
                (Deprecated, Published),
                (Deprecated, Retired),
            ]
        );
        assert_eq!(
            serde_json::to_string(&Deprecated).unwrap(),
            "\"deprecated\""
        );
    }

    #[test]
    fn shapes_and_keys() {
        let backend: Backend = serde_json::from_str(r#"{"service":"orders"}"#).unwrap();
        assert_eq!(backend, Backend::Service("orders".into()));
        let backend: Backend = serde_json::from_str(r#"{"ai_model":"smart"}"#).unwrap();
        assert_eq!(backend.target(), (crate::Kind::AiModel, "smart"));
        let version: ApiVersionSpec =
            serde_json::from_str(r#"{"base_path":"/orders/v1","backend":{"service":"o"}}"#)
                .unwrap();
        assert_eq!(version.state, Lifecycle::Draft);
        assert!(validate_version(&version).is_ok());
        for (path, ok) in [("/orders/v1", true), ("orders", false), ("/a/../b", false)] {
            let v = ApiVersionSpec {
                base_path: path.into(),
                ..version.clone()
            };
            assert_eq!(validate_version(&v).is_ok(), ok, "{path}");
        }
        // A service version's policies belong on its routes; an AI version's are checked.
        let policies = |v: &str| serde_json::from_str::<Policies>(v).unwrap();
        let limited = policies(r#"{"rate_limits":["rpm"]}"#);
        let service = ApiVersionSpec {
            policies: limited.clone(),
            ..version.clone()
        };
        assert_eq!(validate_version(&service).unwrap_err().field, "policies");
        let ai = ApiVersionSpec {
            backend: Backend::AiModel("smart".into()),
            policies: limited,
            ..version.clone()
        };
        assert!(validate_version(&ai).is_ok());
        let bad = ApiVersionSpec {
            policies: policies(r#"{"ip":{"deny":["not-an-ip"]}}"#),
            ..ai
        };
        assert_eq!(
            validate_version(&bad).unwrap_err().field,
            "policies.ip.deny[0]"
        );
        assert_eq!(split_key("orders/v1"), Some(("orders", "v1")));
        assert_eq!(split_key("orders"), None);
        assert_eq!(split_key("a/b/c"), None);
        assert_eq!(api_of(&key("orders", "app")), "orders");

        let api: ApiSpec = serde_json::from_str(
            r#"{"title":"Orders","subscription":"approval","plans":[{"name":"gold","rate_limits":["rl"]}]}"#,
        )
        .unwrap();
        assert_eq!(api.visibility, Visibility::Public);
        assert!(validate_api(&api).is_ok());
        let twice = ApiSpec {
            plans: vec![api.plans[0].clone(), api.plans[0].clone()],
            ..api.clone()
        };
        assert_eq!(validate_api(&twice).unwrap_err().field, "plans[1].name");
        let bad_limit = ApiSpec {
            plans: vec![Plan {
                name: "p".into(),
                rate_limits: vec!["a/b".into()],
            }],
            ..api
        };
        assert_eq!(
            validate_api(&bad_limit).unwrap_err().field,
            "plans[0].rate_limits[0]"
        );
    }
}
