//! The gate an API version puts in front of its routes: its lifecycle and its subscriptions.
//!
//! A route that is one of an API version's ([`raftgate_model::RouteSpec::api_version`]) is
//! served as the version's state says: `draft` only to applications of the API's own team
//! (everyone else gets the same 404 as for a path no route serves), `published` to every
//! caller the route's policies admit, `deprecated` likewise with `Deprecation` (RFC 9745),
//! `Sunset` (RFC 8594) and a successor `Link`, and `retired` as `410 Gone` naming the successor.
//! Where the API takes subscriptions, only applications with an active one pass (`403
//! not_subscribed`), held to their plan's rate limits counted per application and API.
//!
//! It is compiled with the router from the replicated catalog, so a changed state or a revoked
//! subscription takes effect on every node as soon as the node applies it; per request it is a
//! few field reads and, for APIs with subscriptions, one hash lookup.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use http::StatusCode;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use raftgate_metrics::Metrics;
use raftgate_model::State;
use raftgate_model::catalog::{
    ApiVersionRef, Lifecycle, RefusedVersion, SubscriptionMode, SubscriptionState, key,
};
use tracing::warn;

use crate::auth::Consumer;
use crate::route::{Answer, RouteLimit, compile_limits};

/// The message of a 404 for a path no route serves; a draft version answers others with it
/// too, so that it cannot be told from nothing.
pub const NO_ROUTE: &str = "no route matches this request; check its host, path and method against the routes configured with the admin API";

static DEPRECATION: HeaderName = HeaderName::from_static("deprecation");
static SUNSET: HeaderName = HeaderName::from_static("sunset");
static LINK: HeaderName = HeaderName::from_static("link");

/// What the versions of one API share: who owns it and who may call it.
#[derive(Debug)]
pub struct ApiPolicy {
    name: Box<str>,
    team: Option<Box<str>>,
    mode: SubscriptionMode,
    /// Applications with an active subscription, and the index of their plan in `plans`
    /// (`plans.len()` for none).
    subscribers: HashMap<Box<str>, usize>,
    /// The rate limits of each plan, in the API's order of plans.
    plans: Vec<Box<[RouteLimit]>>,
}

impl ApiPolicy {
    /// The policy of API `name` in `state`; `None` when it does not exist.
    fn compile(state: &State, name: &str, metrics: &Metrics) -> Option<ApiPolicy> {
        let api = &state.apis.get(name)?.spec;
        let plans: Vec<Box<[RouteLimit]>> = api
            .plans
            .iter()
            .map(|p| compile_limits(name, &p.rate_limits, state, metrics).into())
            .collect();
        let subscribers = if api.subscription == SubscriptionMode::None {
            HashMap::new()
        } else {
            // Subscriptions are keyed `{api}/{application}`: this API's are one range.
            let first = key(name, "");
            state
                .subscriptions
                .range(first.clone()..)
                .take_while(|(k, _)| k.starts_with(&first))
                .filter(|(_, s)| s.spec.state == SubscriptionState::Active)
                .map(|(_, s)| {
                    let plan = s
                        .spec
                        .plan
                        .as_ref()
                        .and_then(|p| api.plans.iter().position(|x| &x.name == p))
                        .unwrap_or(plans.len());
                    (s.spec.application.as_str().into(), plan)
                })
                .collect()
        };
        Some(ApiPolicy {
            name: name.into(),
            team: api.team.as_deref().map(Box::from),
            mode: api.subscription,
            subscribers,
            plans,
        })
    }
}

/// The compiled gate of one API version, shared by its routes.
#[derive(Debug)]
pub struct ApiGate {
    api: Arc<ApiPolicy>,
    state: Lifecycle,
    /// `Deprecation`, `Sunset` and `Link` of a deprecated version; `Link` of a retired one.
    headers: HeaderMap,
    /// Named in the body of a refusal.
    detail: RefusedVersion,
}

/// Compiles the gates of a router's routes, each API's policy once.
#[derive(Default)]
pub struct Gates {
    apis: HashMap<String, Option<Arc<ApiPolicy>>>,
    versions: HashMap<String, Option<Arc<ApiGate>>>,
}

impl Gates {
    /// The gate of the API version `owner` names; `None` when the version or its API does not
    /// exist (the state machine refuses such routes, so the router skips one it finds).
    pub fn of(
        &mut self,
        state: &State,
        owner: &ApiVersionRef,
        metrics: &Metrics,
    ) -> Option<Arc<ApiGate>> {
        let versioned = owner.key();
        if let Some(gate) = self.versions.get(&versioned) {
            return gate.clone();
        }
        let api = self
            .apis
            .entry(owner.api.clone())
            .or_insert_with(|| ApiPolicy::compile(state, &owner.api, metrics).map(Arc::new))
            .clone();
        let gate = api.and_then(|api| ApiGate::compile(state, owner, api));
        self.versions.insert(versioned, gate.clone());
        gate
    }
}

impl ApiGate {
    fn compile(state: &State, owner: &ApiVersionRef, api: Arc<ApiPolicy>) -> Option<Arc<ApiGate>> {
        let version = &state.api_versions.get(&owner.key())?.spec;
        let successor = version.successor.as_ref().map(|s| {
            let path = state
                .api_versions
                .get(&key(&owner.api, s))
                .map(|v| v.spec.base_path.clone());
            (s.clone(), path)
        });
        let mut headers = HeaderMap::new();
        if let Some((_, Some(path))) = &successor
            && matches!(version.state, Lifecycle::Deprecated | Lifecycle::Retired)
        {
            insert(
                &mut headers,
                &LINK,
                format!("<{path}>; rel=\"successor-version\""),
            );
        }
        if version.state == Lifecycle::Deprecated {
            if let Some(ms) = version.deprecated_at {
                insert(&mut headers, &DEPRECATION, format!("@{}", ms / 1000));
            }
            if let Some(ms) = version.sunset_at {
                let at = UNIX_EPOCH + Duration::from_millis(ms);
                insert(&mut headers, &SUNSET, httpdate::fmt_http_date(at));
            }
        }
        let (successor, successor_path) = successor.unzip();
        Some(Arc::new(ApiGate {
            api,
            state: version.state,
            headers,
            detail: RefusedVersion {
                api: owner.api.clone(),
                version: owner.version.clone(),
                state: version.state,
                successor,
                successor_path: successor_path.flatten(),
            },
        }))
    }

    /// Whether a caller must be known to pass: a draft is for its team's applications, and a
    /// subscription is an application's. A route with no authentication of its own then takes
    /// API keys (`apikey` header or bearer).
    pub(crate) fn needs_identity(&self) -> bool {
        self.state == Lifecycle::Draft || self.api.mode != SubscriptionMode::None
    }

    /// The refusal of a retired version, before any other policy runs.
    pub(crate) fn retired(&self) -> Option<Box<Answer>> {
        if self.state != Lifecycle::Retired {
            return None;
        }
        let d = &self.detail;
        let next = match (&d.successor, &d.successor_path) {
            (Some(s), Some(p)) => format!("; use version '{s}' at {p}"),
            (Some(s), None) => format!("; use version '{s}'"),
            (None, _) => String::new(),
        };
        let mut answer = self.refusal(
            StatusCode::GONE,
            "retired",
            format!(
                "version '{}' of API '{}' is retired{next}",
                d.version, d.api
            ),
        );
        answer.headers = self.headers.clone();
        Some(answer)
    }

    /// Decides on an authenticated caller: the rate limits of its plan when it may pass.
    pub(crate) fn admit(&self, consumer: &Consumer) -> Result<&[RouteLimit], Box<Answer>> {
        if self.state == Lifecycle::Draft && consumer.team.as_deref() != self.api.team.as_deref() {
            return Err(Answer::error(StatusCode::NOT_FOUND, "no_route", NO_ROUTE));
        }
        if self.api.mode == SubscriptionMode::None {
            return Ok(&[]);
        }
        match self.api.subscribers.get(&*consumer.name) {
            Some(plan) => Ok(self.api.plans.get(*plan).map_or(&[], |l| l)),
            None => Err(self.refusal(
                StatusCode::FORBIDDEN,
                "not_subscribed",
                format!(
                    "application '{}' has no active subscription to API '{}'; subscribe with POST /apis/{}/subscriptions (and wait for approval where the API asks for it)",
                    consumer.name, self.api.name, self.api.name
                ),
            )),
        }
    }

    /// Headers every answer of this version carries (those of a deprecated version).
    pub(crate) fn response_headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The API's name: plan limits are counted per application and API.
    pub(crate) fn api(&self) -> &str {
        &self.api.name
    }

    fn refusal(&self, status: StatusCode, code: &'static str, message: String) -> Box<Answer> {
        let mut answer = Answer::error(status, code, message);
        answer.api = Some(Box::new(self.detail.clone()));
        answer
    }
}

fn insert(headers: &mut HeaderMap, name: &HeaderName, value: String) {
    match HeaderValue::try_from(value) {
        Ok(v) => {
            headers.insert(name.clone(), v);
        }
        Err(error) => warn!(header = %name, %error, "API lifecycle header not sent"),
    }
}
