//! The effective policies of one route, compiled, and the check every request of that route
//! goes through before it is forwarded.
//!
//! The order is: CORS preflight (answered here), client IP, declared body size, credentials,
//! ACL, rate limits. The first refusal answers; a request refused by a later rate limit gives
//! back what the earlier ones reserved.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{StatusCode, Uri};
use raftgate_metrics::{Metrics, Refusals};
use raftgate_model::catalog::RefusedVersion;
use raftgate_model::policy::{AllowDeny, AuthPolicy, KeyAuth, LimitScope, Policies};
use raftgate_model::{RateLimitSpec, RouteSpec, ServiceSpec, State};
use tracing::warn;

use crate::Engine;
use crate::access::{Cors, CorsVerdict, IpRules, acl_admits};
use crate::api::ApiGate;
use crate::auth::{AuthError, Consumer, Identity, basic_credentials, bearer};
use crate::counter::{Limit, LimitStatus, Refusal, Reservation, now_ms};

/// The header that tells the upstream who called.
pub static X_CONSUMER_NAME: HeaderName = HeaderName::from_static("x-consumer-name");
static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// A rate limit as one route (or one plan of an API) uses it.
#[derive(Debug)]
pub(crate) struct RouteLimit {
    name: Box<str>,
    spec: RateLimitSpec,
    /// `raftgate_rate_limit_refusals_total` of this limit, resolved here so a refusal only
    /// increments it.
    refusals: Refusals,
}

/// The compiled policies of one route (its own merged over its service's).
#[derive(Debug)]
pub struct RoutePolicies {
    route: Box<str>,
    auth: Option<AuthPolicy>,
    key_header: Option<HeaderName>,
    acl: Option<AllowDeny>,
    limits: Vec<RouteLimit>,
    max_body_bytes: Option<u64>,
    ip: Option<IpRules>,
    cors: Option<Cors>,
    /// The lifecycle and subscriptions of the API version the route is one of.
    gate: Option<Arc<ApiGate>>,
}

/// The rate limits `names` of `state` as `owner` (a route or an API) uses them; those that do
/// not exist are skipped with a warning (the state machine refuses such references).
pub(crate) fn compile_limits(
    owner: &str,
    names: &[String],
    state: &State,
    metrics: &Metrics,
) -> Vec<RouteLimit> {
    names
        .iter()
        .filter_map(|l| match state.rate_limits.get(l) {
            Some(e) => Some(RouteLimit {
                name: l.as_str().into(),
                spec: e.spec.clone(),
                refusals: metrics.limit_refusals(l),
            }),
            None => {
                warn!(owner, rate_limit = %l, "rate limit does not exist; not enforced");
                None
            }
        })
        .collect()
}

/// The proxy's own answer to a request it does not forward.
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: StatusCode,
    /// Machine-readable code and message for the JSON error body; `None` for an answer without
    /// a body (a CORS preflight).
    pub error: Option<(&'static str, String)>,
    /// Headers of the answer (`WWW-Authenticate`, `Retry-After`, `RateLimit-*`, CORS).
    pub headers: HeaderMap,
    /// The authenticated consumer, when the refusal came after authentication (by the ACL or
    /// a rate limit), for logs and metrics.
    pub consumer: Option<Arc<str>>,
    /// The API version refused (not subscribed, retired), for the error body.
    pub api: Option<Box<RefusedVersion>>,
}

impl Answer {
    pub(crate) fn error(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> Box<Answer> {
        Box::new(Answer {
            status,
            error: Some((code, message.into())),
            headers: HeaderMap::new(),
            consumer: None,
            api: None,
        })
    }
}

/// A request the policies let through.
#[derive(Debug, Default)]
pub struct Admitted {
    /// The authenticated consumer, for logs.
    pub consumer: Option<Arc<str>>,
    /// Who the credentials named: the caller of an AI route, whose key's own AI limits count.
    pub identity: Option<Identity>,
    /// Headers to add to the upstream's answer (CORS, `RateLimit-*`).
    pub response_headers: HeaderMap,
    /// The route's body size limit, to enforce on a streamed body too.
    pub max_body_bytes: Option<u64>,
}

impl RoutePolicies {
    /// Whether the route answers CORS preflights: a preflight (`OPTIONS`) then matches it for
    /// the method it asks about, even where the route does not list `OPTIONS`.
    pub fn has_cors(&self) -> bool {
        self.cors.is_some()
    }

    /// Whether any rate limit or quota applies to the route's requests (for the access log's
    /// rate-limit outcome).
    pub fn has_limits(&self) -> bool {
        !self.limits.is_empty()
    }

    /// The effective policies of route `name` (behind the `gate` of its API version, if it is
    /// one's), or `None` when it has none (then the proxy skips the policy step). Rate limits
    /// that do not exist are skipped with a warning. Refusals are counted in `metrics`.
    pub fn compile(
        name: &str,
        route: &RouteSpec,
        service: &ServiceSpec,
        gate: Option<Arc<ApiGate>>,
        state: &State,
        metrics: &Metrics,
    ) -> Option<Arc<RoutePolicies>> {
        let mut p = Policies::overlay(&route.policies, &service.policies);
        if p.is_empty() && gate.is_none() {
            return None;
        }
        if p.auth.is_none() && gate.as_ref().is_some_and(|g| g.needs_identity()) {
            p.auth = Some(AuthPolicy {
                key_auth: Some(KeyAuth::default()),
                ..AuthPolicy::default()
            });
        }
        Some(RoutePolicies::build(name, p, gate, state, metrics))
    }

    /// The policies of the route the proxy serves an AI API version at (`name` is
    /// `{api}/{version}`): the version's own, behind its `gate`. An AI call always has a
    /// caller (usage, budgets), so without auth of their own they take API keys the way AI
    /// clients send them: `Authorization: Bearer` (OpenAI SDKs) or `x-api-key` (Anthropic's).
    pub fn compile_ai(
        name: &str,
        policies: &Policies,
        gate: Arc<ApiGate>,
        state: &State,
        metrics: &Metrics,
    ) -> Arc<RoutePolicies> {
        let mut p = policies.clone();
        if p.auth.is_none() {
            p.auth = Some(AuthPolicy {
                key_auth: Some(KeyAuth {
                    header: "x-api-key".into(),
                    bearer: true,
                    query_param: None,
                    hide_credentials: true,
                }),
                ..AuthPolicy::default()
            });
        }
        RoutePolicies::build(name, p, Some(gate), state, metrics)
    }

    fn build(
        name: &str,
        p: Policies,
        gate: Option<Arc<ApiGate>>,
        state: &State,
        metrics: &Metrics,
    ) -> Arc<RoutePolicies> {
        let limits = compile_limits(name, &p.rate_limits, state, metrics);
        let key_header = p
            .auth
            .as_ref()
            .and_then(|a| a.key_auth.as_ref())
            .and_then(|k| HeaderName::from_bytes(k.header.as_bytes()).ok());
        Arc::new(RoutePolicies {
            route: name.into(),
            key_header,
            acl: p.acl,
            limits,
            max_body_bytes: p.max_body_bytes,
            ip: p.ip.as_ref().map(IpRules::compile),
            cors: p.cors.as_ref().map(Cors::compile),
            auth: p.auth,
            gate,
        })
    }

    /// Decides on one request; on success the request is ready for its upstream: credentials
    /// removed (unless configured otherwise) and `X-Consumer-Name` set.
    pub async fn check(
        &self,
        engine: &Engine,
        parts: &mut Parts,
        client_ip: IpAddr,
        declared_body: Option<u64>,
    ) -> Result<Admitted, Box<Answer>> {
        let mut admitted = Admitted {
            max_body_bytes: self.max_body_bytes,
            ..Admitted::default()
        };
        if let Some(gate) = &self.gate {
            if let Some(retired) = gate.retired() {
                return Err(retired);
            }
            let headers = gate.response_headers();
            if !headers.is_empty() {
                admitted.response_headers.extend(headers.clone());
            }
        }
        if let Some(cors) = &self.cors {
            match cors.check(&parts.method, &parts.headers) {
                CorsVerdict::Ignore => {}
                CorsVerdict::Preflight(status, headers) => {
                    return Err(Box::new(Answer {
                        status,
                        error: None,
                        headers,
                        consumer: None,
                        api: None,
                    }));
                }
                CorsVerdict::Allow(headers) => admitted.response_headers.extend(headers),
            }
        }
        if let Some(ip) = &self.ip
            && !ip.admits(client_ip)
        {
            return Err(Answer::error(
                StatusCode::FORBIDDEN,
                "ip_denied",
                "requests from your address are not allowed on this route",
            ));
        }
        if let (Some(limit), Some(size)) = (self.max_body_bytes, declared_body)
            && size > limit
        {
            return Err(Answer::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!(
                    "the request body is larger than this route accepts ({limit} bytes); send less"
                ),
            ));
        }
        // The rate limits of the caller's plan, when the route is an API's with subscriptions.
        let mut plan: &[RouteLimit] = &[];
        let identity = match &self.auth {
            Some(auth) => {
                // A client's own `X-Consumer-Name` was removed before routing (every route).
                let identity = self
                    .authenticate(engine, auth, parts)
                    .await
                    .map_err(|e| self.unauthorized(auth, &e))?;
                let consumer = identity.consumer();
                if let Some(acl) = &self.acl
                    && !acl_admits(acl, consumer)
                {
                    let mut answer = Answer::error(
                        StatusCode::FORBIDDEN,
                        "forbidden",
                        format!("consumer '{}' is not allowed on this route", consumer.name),
                    );
                    answer.consumer = Some(consumer.name.clone());
                    return Err(answer);
                }
                if let Some(gate) = &self.gate {
                    plan = gate.admit(consumer).map_err(|mut answer| {
                        answer.consumer = Some(consumer.name.clone());
                        answer
                    })?;
                }
                if let Ok(v) = HeaderValue::from_str(&consumer.name) {
                    parts.headers.insert(&X_CONSUMER_NAME, v);
                }
                admitted.consumer = Some(consumer.name.clone());
                Some(identity)
            }
            None => None,
        };
        if !self.limits.is_empty() || !plan.is_empty() {
            let consumer = identity.as_ref().map(|i| &**i.consumer());
            match self.limit(engine, consumer, client_ip, plan) {
                Ok(Some(s)) => ratelimit_headers(&mut admitted.response_headers, &s),
                Ok(None) => {}
                Err(mut answer) => {
                    answer.consumer = admitted.consumer.take();
                    return Err(answer);
                }
            }
        }
        admitted.identity = identity;
        Ok(admitted)
    }

    /// Counts the request against every rate limit of the route and of the caller's `plan`;
    /// the most restrictive status on success.
    fn limit(
        &self,
        engine: &Engine,
        consumer: Option<&Consumer>,
        client_ip: IpAddr,
        plan: &[RouteLimit],
    ) -> Result<Option<LimitStatus>, Box<Answer>> {
        let now = now_ms();
        let mut reserved: Vec<Reservation> = Vec::with_capacity(self.limits.len() + plan.len());
        let mut tightest: Option<LimitStatus> = None;
        let route = self.limits.iter().map(|l| (l, false));
        for (l, of_plan) in route.chain(plan.iter().map(|l| (l, true))) {
            let subject = match (l.spec.scope, consumer, &self.gate) {
                // A plan's limits count per application and API, whatever their scope says.
                (_, Some(c), Some(gate)) if of_plan => format!("plan:{}:{}", gate.api(), c.name),
                (LimitScope::Consumer, Some(c), _) => format!("consumer:{}", c.name),
                (LimitScope::ConsumerRoute, Some(c), _) => {
                    format!("consumer_route:{}:{}", c.name, self.route)
                }
                (LimitScope::Route, _, _) => format!("route:{}", self.route),
                // Without a consumer, per-consumer limits count per client address.
                _ => format!("ip:{client_ip}"),
            };
            let key = format!("{}/{subject}", l.name);
            let limit = consumer
                .and_then(|c| c.limits.get(&*l.name).copied())
                .unwrap_or(l.spec.limit);
            let check = Limit {
                key: &key,
                window: l.spec.window,
                limit,
                fixed: l.spec.fixed,
                fail_open: l.spec.fail_open,
            };
            match engine.counters().acquire(&check, 1, now) {
                Ok(r) => {
                    if tightest.is_none_or(|t| r.status.remaining < t.remaining) {
                        tightest = Some(r.status);
                    }
                    reserved.push(r);
                }
                Err(refusal) => {
                    for r in reserved {
                        r.settle(0);
                    }
                    l.refusals.refused();
                    return Err(too_many(&l.name, &refusal));
                }
            }
        }
        Ok(tightest)
    }

    async fn authenticate(
        &self,
        engine: &Engine,
        auth: &AuthPolicy,
        parts: &mut Parts,
    ) -> Result<Identity, AuthError> {
        let credentials = engine.credentials();
        if let Some(k) = &auth.key_auth {
            let from_header = self
                .key_header
                .as_ref()
                .and_then(|h| parts.headers.get(h))
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            if let Some(key) = from_header {
                if k.hide_credentials
                    && let Some(h) = &self.key_header
                {
                    parts.headers.remove(h);
                }
                return credentials.by_key(&key);
            }
            // A bearer token with dots is a JWT when JWTs are accepted too.
            let bearer_key = bearer(&parts.headers)
                .filter(|t| k.bearer && !(auth.jwt.is_some() && t.contains('.')))
                .map(str::to_owned);
            if let Some(key) = bearer_key {
                if k.hide_credentials {
                    parts.headers.remove(header::AUTHORIZATION);
                }
                return credentials.by_key(&key);
            }
            if let Some(param) = &k.query_param
                && let Some(key) = query_value(&parts.uri, param)
            {
                if k.hide_credentials {
                    parts.uri = without_query_param(&parts.uri, param);
                }
                return credentials.by_key(&key);
            }
        }
        if let Some(jwt) = &auth.jwt
            && let Some(token) = bearer(&parts.headers).map(str::to_owned)
        {
            let consumer = credentials.by_jwt(&token, jwt)?;
            if jwt.hide_credentials {
                parts.headers.remove(header::AUTHORIZATION);
            }
            return Ok(Identity::Consumer(consumer));
        }
        if auth.basic.is_some()
            && let Some((user, password)) = basic_credentials(&parts.headers)
        {
            parts.headers.remove(header::AUTHORIZATION);
            let consumer = credentials.by_password(&user, &password).await?;
            return Ok(Identity::Consumer(consumer));
        }
        Err(AuthError::Missing(accepted(auth)))
    }

    fn unauthorized(&self, auth: &AuthPolicy, error: &AuthError) -> Box<Answer> {
        let mut answer = Answer::error(StatusCode::UNAUTHORIZED, "unauthorized", error.to_string());
        let h = &mut answer.headers;
        if auth.key_auth.is_some() || auth.jwt.is_some() {
            let challenge = match error {
                AuthError::BadToken(_) | AuthError::BadKey => {
                    "Bearer realm=\"raftgate\", error=\"invalid_token\""
                }
                _ => "Bearer realm=\"raftgate\"",
            };
            h.append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if let Some(basic) = &auth.basic
            && let Ok(v) = HeaderValue::from_str(&format!(
                "Basic realm=\"{}\", charset=\"UTF-8\"",
                basic.realm.replace('"', "")
            ))
        {
            h.append(header::WWW_AUTHENTICATE, v);
        }
        answer
    }
}

/// The credentials a route accepts, for the 401 message.
fn accepted(auth: &AuthPolicy) -> String {
    let mut ways = Vec::new();
    if let Some(k) = &auth.key_auth {
        ways.push(format!("an API key in the '{}' header", k.header));
        if k.bearer {
            ways.push("'Authorization: Bearer <key>'".into());
        }
        if let Some(q) = &k.query_param {
            ways.push(format!("the '{q}' query parameter"));
        }
    }
    if auth.jwt.is_some() {
        ways.push("a JWT as 'Authorization: Bearer <token>'".into());
    }
    if auth.basic.is_some() {
        ways.push("'Authorization: Basic' user and password".into());
    }
    ways.join(", or ")
}

fn ratelimit_headers(h: &mut HeaderMap, s: &LimitStatus) {
    h.insert(&RATELIMIT_LIMIT, HeaderValue::from(s.limit));
    h.insert(&RATELIMIT_REMAINING, HeaderValue::from(s.remaining));
    h.insert(&RATELIMIT_RESET, HeaderValue::from(s.reset_s));
}

fn too_many(limit: &str, r: &Refusal) -> Box<Answer> {
    let message = if r.stale {
        format!(
            "rate limit '{limit}' cannot be checked: this node lost touch with the cluster; retry later or on another node"
        )
    } else {
        format!(
            "rate limit '{limit}' exceeded; retry after {} s",
            r.retry_after_s
        )
    };
    let mut answer = Answer::error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
    answer
        .headers
        .insert(header::RETRY_AFTER, HeaderValue::from(r.retry_after_s));
    ratelimit_headers(&mut answer.headers, &r.status);
    answer
}

/// The value of query parameter `name` (not percent-decoded: keys are URL-safe).
fn query_value(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name && !v.is_empty()).then(|| v.to_string())
    })
}

/// `uri` without query parameter `name`.
fn without_query_param(uri: &Uri, name: &str) -> Uri {
    let Some(query) = uri.query() else {
        return uri.clone();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| p.split_once('=').map_or(*p, |(k, _)| k) != name)
        .collect();
    let path_and_query = if kept.is_empty() {
        uri.path().to_string()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    match path_and_query.parse() {
        Ok(pq) => parts.path_and_query = Some(pq),
        Err(_) => return uri.clone(),
    }
    Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use raftgate_model::policy::KeyAuth;
    use raftgate_model::{ConsumerSpec, Entity, RateWindow, StoredKey};
    use sha2::{Digest, Sha256};

    /// A route limited to 1 request a minute per consumer, where alice may make 3.
    fn limited() -> (State, RouteSpec) {
        let mut state = State::default();
        let limit = RateLimitSpec {
            limit: 1,
            window: RateWindow::Minute,
            scope: LimitScope::Consumer,
            fixed: false,
            fail_open: false,
            team: None,
        };
        Arc::make_mut(&mut state.rate_limits).insert("rpm".into(), Entity::new("rpm", limit));
        for (name, own) in [("alice", Some(3)), ("bob", None)] {
            let spec = ConsumerSpec {
                limits: own.map(|l| ("rpm".to_string(), l)).into_iter().collect(),
                ..Default::default()
            };
            Arc::make_mut(&mut state.consumers).insert(name.into(), Entity::new(name, spec));
            let key = StoredKey {
                consumer: name.into(),
                prefix: String::new(),
                hash: Sha256::digest(format!("key-{name}"))
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect(),
                ai_limits: Default::default(),
            };
            Arc::make_mut(&mut state.keys).insert(name.into(), Entity::new(name, key));
        }
        let route = RouteSpec {
            service: "svc".into(),
            policies: Policies {
                auth: Some(AuthPolicy {
                    key_auth: Some(KeyAuth::default()),
                    ..Default::default()
                }),
                rate_limits: vec!["rpm".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        (state, route)
    }

    #[tokio::test]
    async fn a_consumers_own_limit_overrides_the_limit() {
        let (state, route) = limited();
        let metrics = Metrics::new();
        let policies =
            RoutePolicies::compile("r", &route, &ServiceSpec::default(), None, &state, &metrics)
                .expect("the route has policies");
        let engine = Engine::standalone();
        engine.refresh(&state);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let mut admitted = BTreeMap::new();
        let mut last = None;
        for name in ["alice", "bob"] {
            for _ in 0..5 {
                let (mut parts, ()) = http::Request::get("/")
                    .header("apikey", format!("key-{name}"))
                    .body(())
                    .unwrap()
                    .into_parts();
                match policies.check(&engine, &mut parts, ip, None).await {
                    Ok(a) => {
                        assert_eq!(parts.headers[&X_CONSUMER_NAME], name);
                        assert!(!parts.headers.contains_key("apikey"), "key hidden");
                        *admitted.entry(name).or_insert(0) += 1;
                        assert!(a.response_headers.contains_key(&RATELIMIT_REMAINING));
                    }
                    Err(answer) => last = Some(answer),
                }
            }
        }
        assert_eq!(admitted, BTreeMap::from([("alice", 3), ("bob", 1)]));
        let refused = last.expect("refusals");
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.consumer.as_deref(), Some("bob"));
        assert!(refused.headers.contains_key(header::RETRY_AFTER));
        assert_eq!(refused.headers[&RATELIMIT_LIMIT], "1");
        let text = metrics.encode().expect("metrics encode");
        assert!(
            text.lines()
                .any(|l| l == "raftgate_rate_limit_refusals_total{limit=\"rpm\"} 6"),
            "alice's 2 and bob's 4 refusals counted:\n{text}"
        );
    }

    #[test]
    fn query_parameters() {
        let uri: Uri = "/a/b?x=1&apikey=secret&y=2".parse().unwrap();
        assert_eq!(query_value(&uri, "apikey").as_deref(), Some("secret"));
        assert_eq!(without_query_param(&uri, "apikey"), "/a/b?x=1&y=2");
        let only: Uri = "/p?apikey=s".parse().unwrap();
        assert_eq!(without_query_param(&only, "apikey"), "/p");
        assert_eq!(query_value(&only, "other"), None);
    }
}
