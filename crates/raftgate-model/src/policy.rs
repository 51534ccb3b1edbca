//! Policies attached to routes and services — authentication, ACL, rate limits and quotas,
//! request-size limits, IP allow/deny, CORS — and the replicated usage counters that make rate
//! limits cluster-wide.
//!
//! These are the stored, replicated shapes only; `raftgate-policy` enforces them. A route's
//! policies override its service's field by field: a field the route sets wins, a field it leaves
//! empty falls back to the service's ([`Policies::overlay`]).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

use std::net::IpAddr;

use imbl::OrdMap;

use crate::NodeId;
use crate::resource::{ConsumerSpec, RateWindow};
use crate::validate::{self, ValidationError};

fn err(field: impl Into<String>, message: impl Into<String>) -> ValidationError {
    ValidationError {
        field: field.into(),
        message: message.into(),
    }
}

/// The policies of a route or a service; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Policies {
    /// Who may call: requests without valid credentials get a 401.
    #[serde(default)]
    pub auth: Option<AuthPolicy>,
    /// Which authenticated consumers may call, by name or group (403 otherwise); needs `auth`.
    #[serde(default)]
    pub acl: Option<AllowDeny>,
    /// Names of rate-limit resources (`/rate-limits/{name}`) enforced, cluster-wide.
    #[serde(default)]
    pub rate_limits: Vec<String>,
    /// Largest request body accepted, in bytes (413 above it).
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    /// Client addresses allowed or refused, as CIDR blocks (403).
    #[serde(default)]
    pub ip: Option<AllowDeny>,
    /// Cross-origin requests: the proxy answers preflights and adds the CORS headers.
    #[serde(default)]
    pub cors: Option<CorsPolicy>,
}

impl Policies {
    /// The effective policies of a route on `service`: each field the route sets wins.
    pub fn overlay(route: &Policies, service: &Policies) -> Policies {
        Policies {
            auth: route.auth.clone().or_else(|| service.auth.clone()),
            acl: route.acl.clone().or_else(|| service.acl.clone()),
            rate_limits: if route.rate_limits.is_empty() {
                service.rate_limits.clone()
            } else {
                route.rate_limits.clone()
            },
            max_body_bytes: route.max_body_bytes.or(service.max_body_bytes),
            ip: route.ip.clone().or_else(|| service.ip.clone()),
            cors: route.cors.clone().or_else(|| service.cors.clone()),
        }
    }

    /// Whether no policy is set, so the proxy can skip the policy step entirely.
    pub fn is_empty(&self) -> bool {
        *self == Policies::default()
    }
}

/// Accepted ways to authenticate; at least one must be set. They are tried in the order key,
/// JWT, basic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthPolicy {
    /// API keys made with `POST /consumers/{name}/keys`.
    #[serde(default)]
    pub key_auth: Option<KeyAuth>,
    /// JSON Web Tokens verified with a consumer's JWT credential.
    #[serde(default)]
    pub jwt: Option<JwtAuth>,
    /// HTTP basic authentication with a consumer's `basic_auth` credential.
    #[serde(default)]
    pub basic: Option<BasicAuth>,
}

/// Where the proxy looks for an API key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyAuth {
    /// Request header carrying the key.
    #[serde(default = "default_key_header")]
    pub header: String,
    /// Also accept `Authorization: Bearer <key>`.
    #[serde(default = "yes")]
    pub bearer: bool,
    /// Also accept the key in this query parameter.
    #[serde(default)]
    pub query_param: Option<String>,
    /// Remove the key from the request sent upstream.
    #[serde(default = "yes")]
    pub hide_credentials: bool,
}

fn default_key_header() -> String {
    "apikey".into()
}

fn yes() -> bool {
    true
}

impl Default for KeyAuth {
    fn default() -> Self {
        Self {
            header: default_key_header(),
            bearer: true,
            query_param: None,
            hide_credentials: true,
        }
    }
}

/// What a JWT must carry; the token's `iss` names the consumer credential that verifies it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtAuth {
    /// Accepted audiences (`aud`); empty accepts any. When set, a token must carry `aud`.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    #[serde(default)]
    pub leeway_s: u64,
    /// Remove the token (`Authorization`) from the request sent upstream; by default it is
    /// forwarded, so that the upstream can read its claims.
    #[serde(default)]
    pub hide_credentials: bool,
}

/// HTTP basic authentication settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// Realm named in the `WWW-Authenticate` challenge.
    #[serde(default = "default_realm")]
    pub realm: String,
}

fn default_realm() -> String {
    "raftgate".into()
}

/// An allow list and a deny list: for an ACL, consumer names or groups; for IP rules, CIDR
/// blocks (`10.0.0.0/8`, `2001:db8::/32`) or single addresses. Deny wins; an empty `allow`
/// admits everything not denied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowDeny {
    /// Admitted.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Refused.
    #[serde(default)]
    pub deny: Vec<String>,
}

/// Cross-origin resource sharing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CorsPolicy {
    /// Allowed origins (`https://app.example.com`), or `*`.
    pub origins: Vec<String>,
    /// Methods allowed in preflights; empty allows the method asked for.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Request headers allowed in preflights; empty allows those asked for.
    #[serde(default)]
    pub headers: Vec<String>,
    /// How long browsers may cache a preflight answer, in seconds.
    #[serde(default)]
    pub max_age_s: u64,
    /// Allow credentials (cookies); not combinable with the `*` origin.
    #[serde(default)]
    pub credentials: bool,
}

/// What a rate limit counts separately.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LimitScope {
    /// Each consumer, across every route using the limit (needs `auth`).
    #[default]
    Consumer,
    /// Each route, all callers together.
    Route,
    /// Each consumer on each route.
    ConsumerRoute,
    /// Each client IP address.
    ClientIp,
}

/// A consumer's JWT verification key. Tokens name it with their `iss` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtCredential {
    /// The `iss` claim of this consumer's tokens; unique across consumers.
    pub issuer: String,
    /// Signature algorithm.
    pub algorithm: JwtAlgorithm,
    /// HS256: the shared secret (write-only: sealed at rest and never shown; leave it out to
    /// keep the stored one); RS256/ES256: the public key in PEM. Omit when `jwks` is set.
    #[serde(default)]
    pub key: Option<String>,
    /// RS256/ES256: a JSON Web Key Set document; the token's `kid` picks the key.
    #[serde(default)]
    pub jwks: Option<String>,
}

/// JWT signature algorithms accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256 and a shared secret.
    HS256,
    /// RSA PKCS#1 v1.5 with SHA-256.
    RS256,
    /// ECDSA P-256 with SHA-256.
    ES256,
}

/// A consumer's HTTP basic credential. The admin API hashes the password (Argon2id) before it
/// is replicated: the state only ever holds the PHC hash string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicCredential {
    /// User name; unique across consumers.
    pub username: String,
    /// On write: the password (hashed by the admin API; leave it out to keep the stored one).
    /// As stored: its Argon2id PHC string (`$argon2id$...`), never shown.
    #[serde(default)]
    pub password: String,
}

/// How a counter cuts time into buckets. A fixed calendar window (a quota) is one bucket. A
/// sliding window is [`Span::buckets`] buckets, and admission counts every bucket that overlaps
/// the window ending now, weighing only the oldest by its overlap: the estimate over any
/// window-long span is off by at most a fraction of one bucket, where the classic two-window
/// estimate can be off by most of a window when traffic is bunched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Span {
    /// Window length.
    pub window: RateWindow,
    /// Fixed calendar windows instead of a sliding window.
    pub fixed: bool,
}

impl Span {
    /// Bucket length of a sliding window, Unix milliseconds. A sliding month is 30 days.
    fn bucket_ms(self) -> u64 {
        match self.window {
            RateWindow::Second => 50,
            RateWindow::Minute => 2 * SECOND,
            RateWindow::Hour => 2 * MINUTE,
            RateWindow::Day => 48 * MINUTE,
            RateWindow::Month => DAY,
        }
    }

    /// Buckets per window: 1 for a fixed window.
    pub fn buckets(self) -> u64 {
        if self.fixed {
            1
        } else {
            match self.window {
                RateWindow::Second => 20,
                _ => 30,
            }
        }
    }

    /// Start of the bucket containing `ms`.
    pub fn bucket_of(self, ms: u64) -> u64 {
        if self.fixed {
            self.window.start_of(ms)
        } else {
            ms - ms % self.bucket_ms()
        }
    }

    /// Start of the bucket after the one starting at `start`.
    pub fn next_bucket(self, start: u64) -> u64 {
        if self.fixed {
            self.window.next_start(start)
        } else {
            start + self.bucket_ms()
        }
    }

    /// Start of the bucket before the one starting at `start`.
    pub fn previous_bucket(self, start: u64) -> u64 {
        if self.fixed {
            self.window.previous_start(start)
        } else {
            start.saturating_sub(self.bucket_ms())
        }
    }

    /// The oldest bucket still kept while `current` is the current one: for a sliding window
    /// the one the window ending now partly overlaps; for a fixed window the window before,
    /// which admission ignores but late reports and the usage API still use.
    pub fn oldest(self, current: u64) -> u64 {
        if self.fixed {
            self.window.previous_start(current)
        } else {
            current.saturating_sub(self.buckets() * self.bucket_ms())
        }
    }

    /// What counts against the limit at `now_ms`, from amounts by bucket start (a bucket may
    /// appear more than once; buckets out of reach are ignored): the buckets the window ending
    /// now covers, the oldest weighed by its overlap. A fixed window counts its current bucket.
    pub fn weigh(self, now_ms: u64, amounts: impl IntoIterator<Item = (u64, u64)>) -> u64 {
        let current = self.bucket_of(now_ms);
        let oldest = self.oldest(current);
        let (mut full, mut partial) = (0u64, 0u64);
        for (start, amount) in amounts {
            if start == current || (!self.fixed && start > oldest && start < current) {
                full = full.saturating_add(amount);
            } else if start == oldest && !self.fixed {
                partial = partial.saturating_add(amount);
            }
        }
        if partial == 0 {
            return full;
        }
        let end = self.next_bucket(current);
        let weight = (end - now_ms.min(end)) as f64 / self.bucket_ms() as f64;
        full.saturating_add((partial as f64 * weight).ceil() as u64)
    }

    /// When nothing of the bucket starting at `start` counts or shows any more, Unix ms.
    fn expiry(self, start: u64) -> u64 {
        if self.fixed {
            self.window.next_start(self.window.next_start(start))
        } else {
            start + (self.buckets() + 1) * self.bucket_ms()
        }
    }
}

/// One node's count for one counter and bucket, as carried by [`crate::Command::RecordUsage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageDelta {
    /// Counter key: `{rate limit}/{scope}:{subject}`.
    pub key: String,
    /// How the counter cuts time.
    pub span: Span,
    /// Start of the bucket counted, Unix milliseconds.
    pub start_ms: u64,
    /// Amount admitted since the node's last report; negative when settling returned some.
    pub amount: i64,
}

/// A node's latest report on a counter: about what that node admits per sync interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Report {
    /// Bucket the report was for.
    pub start_ms: u64,
    /// Amount reported.
    pub amount: u64,
}

/// The replicated state of one counter: the current bucket per node, earlier buckets summed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UsageCounter {
    /// How the counter cuts time.
    pub span: Span,
    /// Start of the current bucket, Unix milliseconds.
    pub start_ms: u64,
    /// Amount counted in the current bucket, by reporting node.
    pub current: BTreeMap<NodeId, u64>,
    /// Amount counted in the earlier buckets still in reach ([`Span::oldest`]), all nodes
    /// together, by bucket start.
    pub earlier: BTreeMap<u64, u64>,
    /// Each node's latest report, which the others set aside when they divide the remaining
    /// budget.
    pub last: BTreeMap<NodeId, Report>,
}

impl UsageCounter {
    fn new(span: Span, start_ms: u64) -> UsageCounter {
        UsageCounter {
            span,
            start_ms,
            current: BTreeMap::new(),
            earlier: BTreeMap::new(),
            last: BTreeMap::new(),
        }
    }

    /// Everything counted in the current bucket.
    pub fn current_total(&self) -> u64 {
        self.current.values().sum()
    }

    /// Amounts by bucket start, oldest first, the current bucket last.
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.earlier
            .iter()
            .map(|(s, a)| (*s, *a))
            .chain(std::iter::once((self.start_ms, self.current_total())))
    }

    /// Amount counted in the bucket starting at `start`.
    pub fn at(&self, start: u64) -> u64 {
        if start == self.start_ms {
            self.current_total()
        } else {
            self.earlier.get(&start).copied().unwrap_or(0)
        }
    }
}

/// One counter of a consumer, as `GET /consumers/{name}/usage` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UsageEntry {
    /// The rate limit (`/rate-limits/{name}`) counted, or one of the consumer's AI limits
    /// (`ai:budget_usd_day`, `ai:budget_usd_month` in micro-dollars, `ai:tokens_per_minute`).
    pub rate_limit: String,
    /// What is counted: `consumer:{name}` or `consumer_route:{name}:{route}`.
    pub scope: String,
    /// Window kind.
    pub window: RateWindow,
    /// Whether the window is a fixed calendar window (a quota) rather than a sliding one.
    pub fixed: bool,
    /// Start of the window counted, Unix milliseconds: the current calendar window, or the
    /// sliding window ending now.
    pub window_start_ms: u64,
    /// Amount used in that window, as replicated and as admission weighs it (each node
    /// reports every sync interval, so the last fraction of a second may be missing).
    pub used: u64,
    /// Amount used in the calendar window before (fixed windows; 0 for sliding ones).
    pub previous: u64,
    /// This consumer's limit for it, when the rate limit exists.
    pub limit: Option<u64>,
}

/// `GET /consumers/{name}/usage`: the consumer's rate-limit and quota counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConsumerUsage {
    /// The consumer.
    pub consumer: String,
    /// Its counters, by rate limit and scope.
    pub counters: Vec<UsageEntry>,
}

impl ConsumerUsage {
    /// The counters of consumer `name` in `state` as of `now_ms`: a window that ended since the
    /// last report shows as the previous one.
    pub fn of(state: &crate::State, name: &str, now_ms: u64) -> ConsumerUsage {
        let mut counters = Vec::new();
        for (key, c) in state.usage.iter() {
            let Some((limit, scope)) = key.split_once('/') else {
                continue;
            };
            let owner = scope.strip_prefix("consumer:").or_else(|| {
                scope
                    .strip_prefix("consumer_route:")
                    .and_then(|r| r.split(':').next())
            });
            if owner != Some(name) {
                continue;
            }
            let span = c.span;
            let current = span.bucket_of(now_ms);
            let (window_start_ms, previous) = if span.fixed {
                (current, c.at(span.previous_bucket(current)))
            } else {
                let length = span.buckets() * (span.next_bucket(current) - current);
                (now_ms.saturating_sub(length), 0)
            };
            let used = span.weigh(now_ms, c.buckets());
            let configured = state.rate_limits.get(limit).map(|l| l.spec.limit);
            let spec = state.consumers.get(name).map(|c| &c.spec);
            // The AI gateway's budgets count in micro-dollars, its token rate in tokens.
            let own = spec.and_then(|c| {
                c.limits.get(limit).copied().or_else(|| {
                    let kind = crate::ai::AiLimitKind::from_counter_name(limit)?;
                    c.ai_limits
                        .counted()
                        .find(|(k, _)| *k == kind)
                        .map(|(_, l)| l)
                })
            });
            counters.push(UsageEntry {
                rate_limit: limit.to_string(),
                scope: scope.to_string(),
                window: c.span.window,
                fixed: c.span.fixed,
                window_start_ms,
                used,
                previous,
                limit: own.or(configured),
            });
        }
        ConsumerUsage {
            consumer: name.to_string(),
            counters,
        }
    }
}

/// Checks the policies of a route, service or AI API version; fields are named under
/// `policies.`.
pub fn validate(p: &Policies) -> Result<(), ValidationError> {
    if let Some(auth) = &p.auth {
        if auth.key_auth.is_none() && auth.jwt.is_none() && auth.basic.is_none() {
            return Err(err(
                "policies.auth",
                "set at least one of key_auth, jwt or basic",
            ));
        }
        if let Some(k) = &auth.key_auth {
            if !validate::is_header_name(&k.header) {
                return Err(err(
                    "policies.auth.key_auth.header",
                    "must be a header name",
                ));
            }
            if k.query_param.as_ref().is_some_and(|q| q.is_empty()) {
                return Err(err(
                    "policies.auth.key_auth.query_param",
                    "must not be empty",
                ));
            }
        }
    }
    if p.acl.is_some() && p.auth.is_none() {
        return Err(err(
            "policies.acl",
            "an ACL needs auth on the same route or service, to know the consumer",
        ));
    }
    for (i, name) in p.rate_limits.iter().enumerate() {
        validate::name(&format!("policies.rate_limits[{i}]"), name)?;
    }
    if p.max_body_bytes == Some(0) {
        return Err(err("policies.max_body_bytes", "must be at least 1"));
    }
    if let Some(ip) = &p.ip {
        for (list, entries) in [("allow", &ip.allow), ("deny", &ip.deny)] {
            for (i, cidr) in entries.iter().enumerate() {
                if parse_cidr(cidr).is_none() {
                    return Err(err(
                        format!("policies.ip.{list}[{i}]"),
                        "must be an IP address or a CIDR block such as 10.0.0.0/8",
                    ));
                }
            }
        }
    }
    if let Some(cors) = &p.cors {
        if cors.origins.is_empty() {
            return Err(err(
                "policies.cors.origins",
                "list at least one origin, or *",
            ));
        }
        if cors.credentials && cors.origins.iter().any(|o| o == "*") {
            return Err(err(
                "policies.cors.credentials",
                "browsers refuse credentials with the * origin; list the origins",
            ));
        }
        for (i, h) in cors.headers.iter().enumerate() {
            if !validate::is_header_name(h) {
                return Err(err(
                    format!("policies.cors.headers[{i}]"),
                    "must be a header name",
                ));
            }
        }
    }
    Ok(())
}

/// Checks a consumer's credentials as stored: the basic password must already be a hash.
pub fn validate_consumer(c: &ConsumerSpec) -> Result<(), ValidationError> {
    for (i, j) in c.jwt.iter().enumerate() {
        let field = format!("jwt[{i}]");
        if j.issuer.is_empty() {
            return Err(err(format!("{field}.issuer"), "must not be empty"));
        }
        match (&j.key, &j.jwks, j.algorithm) {
            (Some(k), None, _) if !k.is_empty() => {}
            // The stored secret is kept (checked where the write is applied).
            (None, None, JwtAlgorithm::HS256) => {}
            (None, Some(jwks), JwtAlgorithm::RS256 | JwtAlgorithm::ES256) => {
                let doc: serde_json::Value = serde_json::from_str(jwks).map_err(|e| {
                    err(
                        format!("{field}.jwks"),
                        format!("must be a JWK Set (JSON): {e}"),
                    )
                })?;
                if !doc.get("keys").is_some_and(serde_json::Value::is_array) {
                    return Err(err(format!("{field}.jwks"), "must have a \"keys\" array"));
                }
            }
            _ => {
                return Err(err(
                    field,
                    "set exactly one of key (HS256 secret or PEM public key) or jwks (RS256/ES256)",
                ));
            }
        }
        if c.jwt[..i].iter().any(|o| o.issuer == j.issuer) {
            return Err(err(format!("{field}.issuer"), "is listed twice"));
        }
    }
    if let Some(b) = &c.basic_auth {
        if b.username.is_empty() || b.username.contains(':') {
            return Err(err(
                "basic_auth.username",
                "must be non-empty and without ':'",
            ));
        }
        // Empty: the stored hash is kept (checked where the write is applied).
        if !b.password.is_empty() && !b.password.starts_with("$argon2") {
            return Err(err(
                "basic_auth.password",
                "must be stored hashed; send it through the admin API, which hashes it",
            ));
        }
    }
    for (name, limit) in &c.limits {
        validate::name(&format!("limits.{name}"), name)?;
        if *limit == 0 {
            return Err(err(format!("limits.{name}"), "must be at least 1"));
        }
    }
    Ok(())
}

/// Parses `10.0.0.0/8`, `2001:db8::/32` or a single address (a /32 or /128): the network
/// address and the prefix length.
pub fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a.parse::<IpAddr>().ok()?, Some(l.parse::<u8>().ok()?)),
        None => (s.parse::<IpAddr>().ok()?, None),
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = len.unwrap_or(max);
    (len <= max).then_some((addr, len))
}

/// Applies one node's report to the replicated counters at `at_ms`, for the state machine:
/// deterministic, and dropping counters whose buckets are all out of reach at `at_ms`.
pub fn apply_usage(
    usage: &mut OrdMap<String, UsageCounter>,
    node: NodeId,
    deltas: &[UsageDelta],
    at_ms: u64,
) {
    for d in deltas {
        let entry = usage
            .entry(d.key.clone())
            .or_insert_with(|| UsageCounter::new(d.span, d.start_ms));
        if entry.span != d.span {
            // The limit changed its window: start over.
            *entry = UsageCounter::new(d.span, d.start_ms);
        }
        let add = |v: u64| v.saturating_add_signed(d.amount);
        let report = Report {
            start_ms: d.start_ms,
            amount: add(0),
        };
        if d.start_ms == entry.start_ms {
            let mine = entry.current.entry(node).or_default();
            *mine = add(*mine);
            entry.last.insert(node, report);
        } else if d.start_ms > entry.start_ms {
            let total = entry.current_total();
            if total > 0 {
                entry.earlier.insert(entry.start_ms, total);
            }
            entry.earlier = entry.earlier.split_off(&d.span.oldest(d.start_ms));
            entry.start_ms = d.start_ms;
            entry.current.clear();
            entry.current.insert(node, add(0));
            entry.last.insert(node, report);
        } else if d.start_ms >= d.span.oldest(entry.start_ms) {
            let earlier = entry.earlier.entry(d.start_ms).or_default();
            *earlier = add(*earlier);
        }
    }
    let over: Vec<String> = usage
        .iter()
        .filter(|(_, c)| c.span.expiry(c.start_ms) <= at_ms)
        .map(|(k, _)| k.clone())
        .collect();
    for key in over {
        usage.remove(&key);
    }
}

const SECOND: u64 = 1_000;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

impl RateWindow {
    /// Start of the window containing `ms` (Unix milliseconds, UTC; months are calendar months).
    pub fn start_of(self, ms: u64) -> u64 {
        match self.fixed_len() {
            Some(len) => ms - ms % len,
            None => {
                let (y, m, _) = civil_from_days(ms / DAY);
                days_from_civil(y, m, 1) * DAY
            }
        }
    }

    /// Start of the window after the one starting at `start`.
    pub fn next_start(self, start: u64) -> u64 {
        match self.fixed_len() {
            Some(len) => start + len,
            None => {
                let (y, m, _) = civil_from_days(start / DAY);
                let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                days_from_civil(y, m, 1) * DAY
            }
        }
    }

    /// Start of the window before the one starting at `start`.
    pub fn previous_start(self, start: u64) -> u64 {
        match self.fixed_len() {
            Some(len) => start.saturating_sub(len),
            None => self.start_of(start.saturating_sub(1)),
        }
    }

    fn fixed_len(self) -> Option<u64> {
        match self {
            RateWindow::Second => Some(SECOND),
            RateWindow::Minute => Some(MINUTE),
            RateWindow::Hour => Some(HOUR),
            RateWindow::Day => Some(DAY),
            RateWindow::Month => None,
        }
    }
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01 (Howard Hinnant's algorithm):
/// for calendar-month windows here, and for the access log's timestamps.
pub fn civil_from_days(days: u64) -> (i64, u32, u32) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Days since 1970-01-01 of a civil date (inverse of [`civil_from_days`]).
fn days_from_civil(y: i64, m: u32, d: u32) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468).max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_months() {
        // 2024-02-10T12:00Z lies in February of a leap year.
        let feb10 = days_from_civil(2024, 2, 10) * DAY + 12 * HOUR;
        let feb1 = RateWindow::Month.start_of(feb10);
        assert_eq!(civil_from_days(feb1 / DAY), (2024, 2, 1));
        let mar1 = RateWindow::Month.next_start(feb1);
        assert_eq!((mar1 - feb1) / DAY, 29);
        assert_eq!(
            RateWindow::Month.previous_start(feb1) / DAY,
            days_from_civil(2024, 1, 1)
        );
        let dec = days_from_civil(2023, 12, 31) * DAY;
        assert_eq!(
            civil_from_days(RateWindow::Month.next_start(RateWindow::Month.start_of(dec)) / DAY),
            (2024, 1, 1)
        );
        assert_eq!(RateWindow::Minute.start_of(61_500), 60_000);
        assert_eq!(RateWindow::Minute.next_start(60_000), 120_000);
    }

    #[test]
    fn replicated_counters_roll_over_and_expire() {
        let quota = Span {
            window: RateWindow::Minute,
            fixed: true,
        };
        let mut usage = OrdMap::new();
        let d = |start: u64, amount: i64| UsageDelta {
            key: "k".into(),
            span: quota,
            start_ms: start,
            amount,
        };
        apply_usage(&mut usage, 1, &[d(MINUTE, 5)], MINUTE);
        apply_usage(&mut usage, 2, &[d(MINUTE, 7)], MINUTE);
        assert_eq!(usage["k"].current_total(), 12);
        apply_usage(&mut usage, 1, &[d(2 * MINUTE, 1)], 2 * MINUTE);
        assert_eq!((usage["k"].at(MINUTE), usage["k"].current_total()), (12, 1));
        // A late report for the previous window still counts there.
        apply_usage(
            &mut usage,
            2,
            &[d(MINUTE, 3), d(2 * MINUTE, -1)],
            2 * MINUTE,
        );
        // Node 2 had nothing in the new window: its -1 saturates at 0.
        assert_eq!((usage["k"].at(MINUTE), usage["k"].current_total()), (15, 1));
        // A fixed window ignores the window before.
        assert_eq!(quota.weigh(2 * MINUTE + 1, usage["k"].buckets()), 1);
        apply_usage(&mut usage, 1, &[], 4 * MINUTE);
        assert!(usage.is_empty());
    }

    #[test]
    fn a_sliding_window_counts_the_buckets_it_overlaps() {
        let span = Span {
            window: RateWindow::Minute,
            fixed: false,
        };
        let (bucket, n) = (span.bucket_ms(), span.buckets());
        assert_eq!(bucket * n, MINUTE);
        let mut usage = OrdMap::new();
        let d = |start: u64| UsageDelta {
            key: "k".into(),
            span,
            start_ms: start,
            amount: 10,
        };
        let t0 = 100 * MINUTE;
        // 10 in each of the first 30 buckets of a minute, from two nodes in turn.
        for i in 0..n {
            apply_usage(
                &mut usage,
                1 + i % 2,
                &[d(t0 + i * bucket)],
                t0 + i * bucket,
            );
        }
        let c = &usage["k"];
        assert_eq!(c.buckets().map(|(_, a)| a).sum::<u64>(), 300);
        // At the end of the minute the window holds everything.
        assert_eq!(span.weigh(t0 + MINUTE - 1, c.buckets()), 300);
        // A quarter of a bucket into the next minute, the window still overlaps three quarters of
        // the first bucket.
        assert_eq!(span.weigh(t0 + MINUTE + bucket / 4, c.buckets()), 290 + 8);
        // Two buckets on, the first bucket is out of reach and the second half in.
        assert_eq!(
            span.weigh(t0 + MINUTE + bucket + bucket / 2, c.buckets()),
            280 + 5
        );
        // The counter is dropped once its last bucket leaves the window.
        apply_usage(&mut usage, 1, &[], t0 + 2 * MINUTE + bucket);
        assert!(usage.is_empty());
    }

    #[test]
    fn route_policies_override_service_policies() {
        let service = Policies {
            rate_limits: vec!["svc".into()],
            max_body_bytes: Some(10),
            acl: Some(AllowDeny::default()),
            ..Default::default()
        };
        let route = Policies {
            max_body_bytes: Some(5),
            ..Default::default()
        };
        let eff = Policies::overlay(&route, &service);
        assert_eq!(eff.max_body_bytes, Some(5));
        assert_eq!(eff.rate_limits, vec!["svc".to_string()]);
        assert!(eff.acl.is_some());
    }
}
