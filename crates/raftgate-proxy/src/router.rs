//! Routes and services compiled from a [`State`] into an immutable lookup structure.
//!
//! The proxy recompiles a [`Router`] whenever the replicated state changes and swaps it in
//! atomically; a request only reads the current one, so matching never waits for a lock or for
//! the cluster.
//!
//! # Matching
//!
//! A route matches a request when all of these hold:
//! - **host**: the request host (URI authority, else the `Host` header; port and a trailing dot
//!   ignored, case-insensitive) equals one of the route's `hosts`, or matches a wildcard
//!   `*.example.com`, which matches any host ending in `.example.com` (`a.example.com`,
//!   `a.b.example.com`) but not `example.com` itself. A route without `hosts` matches any host,
//!   including a request without one. Other uses of `*` are not supported: such a host entry never
//!   matches (a warning is logged when compiling).
//! - **path**: one of the route's `paths` matches the raw request path (not percent-decoded,
//!   without the query). A route without `paths` matches every path. A path entry is one of:
//!   - `=/api/v1` — **exact**: the whole path equals `/api/v1`;
//!   - `~^/users/[0-9]+$` — **regex**: the regular expression (Rust `regex` syntax, unanchored
//!     unless written with `^`/`$`) finds a match in the path;
//!   - `/api` — **prefix**, matched *at a segment boundary*: `/api` matches `/api`, `/api/` and
//!     `/api/x` but not `/apix`; a prefix ending in `/` (`/api/`) matches `/api/` and `/api/x`
//!     but not `/api`.
//! - **method**: the request method is one of the route's `methods` (exact, so `GET` does not
//!   imply `HEAD`); a route without `methods` matches every method.
//! - **headers**: for each entry of the route's `headers`, the request has that header (name
//!   case-insensitive) and, unless the entry's list of values is empty, one of its lines equals
//!   one of the values (byte for byte; a comma-separated line is one value).
//!
//! # Precedence
//!
//! When several routes match, the most specific wins, deciding by each rule in turn:
//! 1. host: exact host, then wildcard host (the longest wildcard suffix first), then routes
//!    without hosts — all paths of a more specific host group are tried before the next group;
//! 2. path: an exact path, then regex paths, then the longest matching prefix, then routes
//!    without `paths`. Regexes come before prefixes because what a regex matches cannot be
//!    compared with a prefix, and a catch-all prefix such as `/` would otherwise hide them;
//! 3. among routes that matched the same way (the same exact path, the same prefix, any regex, or
//!    no path): more header matchers first, then routes listing `methods` before routes matching
//!    every method;
//! 4. then the higher `priority`;
//! 5. then the route name, in byte order, so the choice is deterministic.
//!
//! # Rewriting the path
//!
//! The path sent upstream is derived from the request path by the winning route:
//! - with `rewrite`, for a prefix path the matched prefix is replaced by it (`/api` → `/v2`
//!   sends `/api/users` as `/v2/users`; the replacement is literal, so map `/b/` to `/v2/`); for
//!   an exact path the whole path is replaced; for a regex path the first match is replaced,
//!   with `$1`, `${1}` or `${name}` standing for capture groups (write `${1}x`, not `$1x`, and
//!   `$$` for a literal `$`); for a route without paths it is prepended;
//! - otherwise, with `strip_path`, the matched prefix, the exact path, or the regex's first match
//!   is removed;
//! - an empty result becomes `/`, one without a leading `/` gets one, and a target URL with a
//!   path (`http://host:port/base`) has that path prepended. The query is kept.
//!
//! # Cost of a lookup
//!
//! Hosts are looked up in hash maps (one lookup for the exact host, one per label for
//! wildcards). Within a host group, the exact path is one hash probe, and the candidate prefixes
//! of the request path (one or two per `/` in the path, skipping lengths no prefix has) are
//! looked up in a hash map, longest first. Without regex routes a lookup therefore costs
//! O(path segments + host labels) hash probes, whatever the number of routes; only routes sharing
//! the same host and path are scanned for their methods and headers. A host group that has regex
//! routes first runs one combined scan of all its regexes (a `RegexSet`), and only when it
//! matches tries them one by one in precedence order. With 10,000 routes, a lookup takes about
//! 0.1 µs in a release build.
//!
//! # Upstream selection
//!
//! A route holds its [`Service`], which lives in [`crate::upstream`] across recompiles: the
//! router is compiled against the services [`crate::upstream`] keeps for the same state.
//!
//! # AI API versions
//!
//! An API version whose backend is an AI model alias or a prompt API has no routes of its own:
//! the router adds one for it, named `{api}/{version}`, matching its `base_path` as a prefix,
//! with the version's gate and policies, whose target is the node's AI gateway
//! ([`crate::ai`]). It is matched like any other route, so IP rules, CORS, rate limits and
//! subscriptions apply to AI calls too.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::sync::{Arc, OnceLock};

use http::{HeaderMap, HeaderName, Method};
use raftgate_metrics::{Metrics, RouteMetrics};
use raftgate_model::catalog::{
    ApiSpec, ApiVersionRef, ApiVersionSpec, SubscriptionSpec, split_key,
};
use raftgate_model::state::Table;
use raftgate_model::validate::{PathMatch, path_match};
use raftgate_model::{Entity, RateLimitSpec, RouteSpec, ServiceSpec, State};
use raftgate_policy::{Gates, RoutePolicies};
use regex::{Regex, RegexSet};
use tracing::warn;

/// The router's maps: keyed by hosts and paths of the configuration, looked up with the
/// request's. foldhash rather than SipHash: SipHash's resistance to chosen collisions protects
/// maps whose keys clients insert, and these keys come from the admin API only; three lookups
/// per request cost 600 instructions with SipHash.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

use crate::ai::{AiGuards, AiVersion};
use crate::header_ops::HeaderOps;
use crate::upstream::{Service, Services};

/// The compiled, immutable routing table of one [`State`].
#[derive(Debug, Default)]
pub struct Router {
    exact: HashMap<Box<str>, PathTable>,
    /// Keyed by the suffix after `*.`: `*.example.com` is stored under `example.com`.
    wildcard: HashMap<Box<str>, PathTable>,
    any_host: PathTable,
    routes: usize,
    services: usize,
    /// What AI API versions offer, which their own entrances then refuse.
    guards: AiGuards,
    /// The tables compiled, to tell whether a new state needs a new router.
    source: Source,
}

/// The tables a router is compiled from: routes and services, the rate limits their policies
/// name, and the catalog their API versions' gates come from.
#[derive(Debug, Default)]
struct Source {
    routes: Table<RouteSpec>,
    services: Table<ServiceSpec>,
    rate_limits: Table<RateLimitSpec>,
    apis: Table<ApiSpec>,
    versions: Table<ApiVersionSpec>,
    subscriptions: Table<SubscriptionSpec>,
}

impl Source {
    fn of(state: &State) -> Source {
        Source {
            routes: state.routes.clone(),
            services: state.services.clone(),
            rate_limits: state.rate_limits.clone(),
            apis: state.apis.clone(),
            versions: state.api_versions.clone(),
            subscriptions: state.subscriptions.clone(),
        }
    }

    fn is(&self, state: &State) -> bool {
        Arc::ptr_eq(&self.routes, &state.routes)
            && Arc::ptr_eq(&self.services, &state.services)
            && Arc::ptr_eq(&self.rate_limits, &state.rate_limits)
            && Arc::ptr_eq(&self.apis, &state.apis)
            && Arc::ptr_eq(&self.versions, &state.api_versions)
            && Arc::ptr_eq(&self.subscriptions, &state.subscriptions)
    }
}

/// The routes of one host group, indexed by path. Every list of routes is sorted by
/// [`Route::rank`].
#[derive(Debug, Default)]
struct PathTable {
    /// Routes by exact path (`=/x`, stored without the `=`).
    exact: HashMap<Box<str>, Vec<Arc<Route>>>,
    /// Routes by path prefix.
    prefixes: HashMap<Box<str>, Vec<Arc<Route>>>,
    /// The distinct lengths of `prefixes`, ascending: candidates of other lengths are skipped
    /// without hashing.
    lengths: Vec<usize>,
    /// Regex paths, in precedence order.
    regexes: Vec<RegexPath>,
    /// All of `regexes` at once, to rule them all out in one scan; `None` when there are none
    /// or the set is too large to compile (then each is tried).
    regex_set: Option<RegexSet>,
    /// Routes without paths.
    every_path: Vec<Arc<Route>>,
}

/// One regex path of a route.
#[derive(Debug)]
struct RegexPath {
    regex: Regex,
    route: Arc<Route>,
}

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    /// Route name, for logs (shared, so an access log line takes it without a copy).
    pub name: Arc<str>,
    /// Methods accepted; empty accepts all.
    methods: Box<[Method]>,
    /// Request headers required.
    headers: Box<[HeaderMatch]>,
    /// Tie-breaker among equally specific routes; higher wins.
    priority: i32,
    /// Whether the matched part of the path is removed before forwarding.
    strip_path: bool,
    /// Replacement of the matched part of the path; see the module documentation.
    rewrite: Option<Box<str>>,
    /// Changes to the request headers sent upstream.
    pub(crate) request_headers: HeaderOps,
    /// Changes to the response headers sent to the client.
    pub(crate) response_headers: HeaderOps,
    /// Where matched requests go.
    pub target: Target,
    /// Authentication, ACL, limits, CORS: the route's own merged over its service's; `None`
    /// when it has none.
    pub(crate) policies: Option<Arc<RoutePolicies>>,
    /// Protocols a client may upgrade to through this route, lower case.
    pub(crate) upgrades: Box<[Box<str>]>,
    /// The API version the route belongs to, for the access log.
    api_version: Option<ApiVersionRef>,
    /// The node's metrics, where [`Route::metrics`] finds the route's series.
    registry: Arc<Metrics>,
    /// Where its requests are counted and timed: resolved at the route's first request and kept,
    /// so that later requests look nothing up by name, and a table of 10,000 routes holds series
    /// only for the routes that get traffic.
    metrics: OnceLock<RouteMetrics>,
}

/// Where a route's requests go.
#[derive(Debug)]
pub enum Target {
    /// An upstream service.
    Service(Arc<Service>),
    /// The AI gateway, for the route of an AI API version.
    Ai(Arc<AiVersion>),
}

impl Target {
    /// The `service` label of the route's metrics.
    fn label(&self) -> &Arc<str> {
        match self {
            Target::Service(service) => &service.name,
            Target::Ai(version) => version.label(),
        }
    }
}

/// One entry of [`RouteSpec::headers`].
#[derive(Debug)]
struct HeaderMatch {
    name: HeaderName,
    /// Accepted values; empty accepts any.
    values: Box<[Box<[u8]>]>,
}

impl HeaderMatch {
    fn accepts(&self, headers: &HeaderMap) -> bool {
        let mut lines = headers.get_all(&self.name).iter();
        if self.values.is_empty() {
            return lines.next().is_some();
        }
        lines.any(|line| self.values.iter().any(|v| **v == *line.as_bytes()))
    }
}

impl Route {
    /// The route's metric handles (an atomic load once resolved; see the field).
    pub(crate) fn metrics(&self) -> &RouteMetrics {
        self.metrics
            .get_or_init(|| self.registry.route(&self.name, self.target.label()))
    }

    /// The name of what the route sends to: its service, or its AI API version.
    pub(crate) fn target_label(&self) -> &Arc<str> {
        self.target.label()
    }

    /// The API version the route belongs to.
    pub(crate) fn api_version(&self) -> Option<&ApiVersionRef> {
        self.api_version.as_ref()
    }

    fn accepts(&self, method: &Method, headers: &HeaderMap) -> bool {
        (self.methods.is_empty()
            || self.methods.contains(method)
            || self.preflight_for_a_method(method, headers))
            && self.headers.iter().all(|h| h.accepts(headers))
    }

    /// A CORS preflight asks with `OPTIONS` about a method the route does list: a route with a
    /// CORS policy takes it, so the browser gets the policy's answer rather than a 404.
    fn preflight_for_a_method(&self, method: &Method, headers: &HeaderMap) -> bool {
        method == Method::OPTIONS
            && self.policies.as_ref().is_some_and(|p| p.has_cors())
            && headers
                .get(http::header::ACCESS_CONTROL_REQUEST_METHOD)
                .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
                .is_some_and(|m| self.methods.contains(&m))
    }

    /// Order among routes that matched the same host and path the same way; see rules 3 to 5 of
    /// the precedence.
    fn rank(&self) -> (Reverse<usize>, bool, Reverse<i32>, &str) {
        (
            Reverse(self.headers.len()),
            self.methods.is_empty(),
            Reverse(self.priority),
            &self.name,
        )
    }
}

/// A successful lookup.
#[derive(Debug, Clone, Copy)]
pub struct Matched<'r> {
    /// The winning route.
    pub route: &'r Arc<Route>,
    /// How its path matched.
    path: PathKind<'r>,
}

/// How a route's path matched the request.
#[derive(Debug, Clone, Copy)]
enum PathKind<'r> {
    /// The route has no paths.
    Any,
    /// An exact path.
    Exact,
    /// This prefix.
    Prefix(&'r str),
    /// This regular expression.
    Regex(&'r Regex),
}

impl<'r> Matched<'r> {
    /// The path to send upstream instead of the request path `path` (before the target's base
    /// path), or `None` to send it unchanged. See "Rewriting the path" in the module
    /// documentation; a result may be empty or lack its leading `/`, which
    /// the upstream call adds.
    pub fn rewritten_path<'a>(&self, path: &'a str) -> Option<Cow<'a, str>>
    where
        'r: 'a,
    {
        let route: &'r Route = self.route;
        match (self.path, route.rewrite.as_deref()) {
            (PathKind::Any, None) => None,
            (PathKind::Any, Some(rewrite)) => Some(Cow::Owned(format!("{rewrite}{path}"))),
            (PathKind::Exact, Some(rewrite)) => Some(Cow::Borrowed(rewrite)),
            (PathKind::Prefix(prefix), Some(rewrite)) => {
                let rest = path.get(prefix.len()..).unwrap_or_default();
                Some(Cow::Owned(format!("{rewrite}{rest}")))
            }
            (PathKind::Regex(regex), Some(rewrite)) => Some(regex.replace(path, rewrite)),
            (_, None) if !route.strip_path => None,
            (PathKind::Exact, None) => Some(Cow::Borrowed("/")),
            (PathKind::Prefix(prefix), None) => {
                Some(Cow::Borrowed(path.get(prefix.len()..).unwrap_or_default()))
            }
            (PathKind::Regex(regex), None) => Some(regex.replace(path, regex::NoExpand(""))),
        }
    }
}

/// A route path entry, parsed once per route.
enum CompiledPath {
    Exact(Box<str>),
    Prefix(Box<str>),
    Regex(Regex),
}

impl Router {
    /// Compiles the routes and services of `state`. Routes naming a missing service, regex
    /// paths that do not compile and targets with an unusable URL are skipped with a warning;
    /// validation normally prevents all three.
    /// `services` are those of `state`, from [`crate::upstream`]; each route's requests are
    /// recorded in `metrics`.
    pub fn compile(state: &State, services: &Services, metrics: &Arc<Metrics>) -> Router {
        let mut router = Router {
            services: services.len(),
            source: Source::of(state),
            ..Router::default()
        };
        let mut gates = Gates::default();
        for entity in state.routes.values() {
            let Some(service) = services.get(entity.spec.service.as_str()) else {
                warn!(route = %entity.name, service = %entity.spec.service,
                    "route names a service that does not exist; route skipped");
                continue;
            };
            let gate = match &entity.spec.api_version {
                Some(owner) => match gates.of(state, owner, metrics) {
                    Some(gate) => Some(gate),
                    None => {
                        // Serving it without its version's gate could let anyone in.
                        warn!(route = %entity.name, api_version = %owner.key(),
                            "route's API version does not exist; route skipped");
                        continue;
                    }
                },
                None => None,
            };
            let policies = state.services.get(&entity.spec.service).and_then(|s| {
                RoutePolicies::compile(&entity.name, &entity.spec, &s.spec, gate, state, metrics)
            });
            router.add(entity, Target::Service(service.clone()), policies, metrics);
        }
        for entity in state.api_versions.values() {
            let Some(version) = AiVersion::of(&entity.spec) else {
                continue;
            };
            let owner = split_key(&entity.name).map(|(api, version)| ApiVersionRef {
                api: api.into(),
                version: version.into(),
            });
            let Some(gate) = owner.as_ref().and_then(|o| gates.of(state, o, metrics)) else {
                warn!(api_version = %entity.name, "AI API version's API does not exist; not served");
                continue;
            };
            router.guards.offer(state, &entity.name, &entity.spec);
            let policies = RoutePolicies::compile_ai(
                &entity.name,
                &entity.spec.policies,
                gate,
                state,
                metrics,
            );
            let route = RouteSpec {
                paths: vec![entity.spec.base_path.clone()],
                api_version: owner,
                ..RouteSpec::default()
            };
            let route = Entity::new(&entity.name, route);
            router.add(&route, Target::Ai(version), Some(policies), metrics);
        }
        router.finish();
        router
    }

    fn add(
        &mut self,
        entity: &Entity<RouteSpec>,
        target: Target,
        policies: Option<Arc<RoutePolicies>>,
        metrics: &Arc<Metrics>,
    ) {
        let spec = &entity.spec;
        let name = entity.name.as_str();
        let paths: Vec<CompiledPath> = spec
            .paths
            .iter()
            .filter_map(|p| match path_match(p) {
                PathMatch::Exact(p) => Some(CompiledPath::Exact(p.into())),
                PathMatch::Prefix(p) => Some(CompiledPath::Prefix(p.into())),
                PathMatch::Regex(re) => match Regex::new(re) {
                    Ok(regex) => Some(CompiledPath::Regex(regex)),
                    Err(error) => {
                        warn!(route = name, path = %p, %error,
                            "regex path does not compile; this path never matches");
                        None
                    }
                },
            })
            .collect();
        if paths.is_empty() && !spec.paths.is_empty() {
            warn!(
                route = name,
                "no path of this route compiles; route skipped"
            );
            return;
        }
        let mut headers = Vec::with_capacity(spec.headers.len());
        for (header, values) in &spec.headers {
            let Ok(header) = HeaderName::from_bytes(header.as_bytes()) else {
                // Ignoring the matcher would widen the route: leave the route out instead.
                warn!(route = name, %header, "header matcher is not a header name; route skipped");
                return;
            };
            headers.push(HeaderMatch {
                name: header,
                values: values.iter().map(|v| v.as_bytes().into()).collect(),
            });
        }
        let route = Arc::new(Route {
            name: name.into(),
            methods: spec
                .methods
                .iter()
                .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                .collect(),
            headers: headers.into(),
            priority: spec.priority,
            strip_path: spec.strip_path,
            rewrite: spec.rewrite.as_deref().map(Box::from),
            request_headers: HeaderOps::compile(name, &spec.request_headers),
            response_headers: HeaderOps::compile(name, &spec.response_headers),
            target,
            policies,
            upgrades: spec
                .upgrades
                .iter()
                .map(|p| p.to_ascii_lowercase().into())
                .collect(),
            api_version: spec.api_version.clone(),
            registry: metrics.clone(),
            metrics: OnceLock::new(),
        });
        self.routes += 1;
        if spec.hosts.is_empty() {
            self.any_host.insert(&paths, &route);
            return;
        }
        for host in &spec.hosts {
            let host = host.trim_end_matches('.').to_ascii_lowercase();
            let (map, key) = match host.strip_prefix("*.") {
                Some(suffix) if !suffix.is_empty() && !suffix.contains('*') => {
                    (&mut self.wildcard, suffix.to_owned())
                }
                _ if host.contains('*') => {
                    warn!(route = name, host = %host,
                        "only a leading '*.' wildcard is supported; this host never matches");
                    continue;
                }
                _ => (&mut self.exact, host),
            };
            map.entry(key.into_boxed_str())
                .or_default()
                .insert(&paths, &route);
        }
    }

    /// Orders every list of routes for precedence, records prefix lengths and builds the regex
    /// sets; run once all routes are added.
    fn finish(&mut self) {
        for table in self
            .exact
            .values_mut()
            .chain(self.wildcard.values_mut())
            .chain(std::iter::once(&mut self.any_host))
        {
            table.finish();
        }
    }

    /// The route for a request, following the precedence in the module documentation.
    /// `host` may carry a port and any case; `path` is the raw request path.
    pub fn find<'r>(
        &'r self,
        host: Option<&str>,
        path: &str,
        method: &Method,
        headers: &HeaderMap,
    ) -> Option<Matched<'r>> {
        if let Some(host) = host.map(normalize_host).filter(|h| !h.is_empty()) {
            let host = lowercase(host);
            let host: &str = &host;
            if let Some(m) = self
                .exact
                .get(host)
                .and_then(|t| t.find(path, method, headers))
            {
                return Some(m);
            }
            if !self.wildcard.is_empty() {
                for (i, _) in host.match_indices('.') {
                    let suffix = host.get(i + 1..).unwrap_or_default();
                    if let Some(m) = self
                        .wildcard
                        .get(suffix)
                        .and_then(|t| t.find(path, method, headers))
                    {
                        return Some(m);
                    }
                }
            }
        }
        self.any_host.find(path, method, headers)
    }

    /// What AI API versions offer, for the AI gateway's own entrances.
    pub(crate) fn ai_guards(&self) -> &AiGuards {
        &self.guards
    }

    /// Number of routes compiled.
    pub fn route_count(&self) -> usize {
        self.routes
    }

    /// Number of services compiled.
    pub fn service_count(&self) -> usize {
        self.services
    }

    /// Whether `state` has the very tables this router was compiled from (routes, services,
    /// rate limits and the API catalog; the state machine keeps a table's `Arc` when a change
    /// does not touch it), so that changes to consumers, keys or usage counters cost no
    /// recompilation.
    pub fn is_compiled_from(&self, state: &State) -> bool {
        self.source.is(state)
    }
}

impl PathTable {
    fn insert(&mut self, paths: &[CompiledPath], route: &Arc<Route>) {
        fn push(bucket: &mut Vec<Arc<Route>>, route: &Arc<Route>) {
            // A spec may repeat a host or a path; keep one entry.
            if !bucket.iter().any(|r| Arc::ptr_eq(r, route)) {
                bucket.push(route.clone());
            }
        }
        if paths.is_empty() {
            push(&mut self.every_path, route);
        }
        for path in paths {
            match path {
                CompiledPath::Exact(p) => push(self.exact.entry(p.clone()).or_default(), route),
                CompiledPath::Prefix(p) => push(self.prefixes.entry(p.clone()).or_default(), route),
                CompiledPath::Regex(regex) => self.regexes.push(RegexPath {
                    regex: regex.clone(),
                    route: route.clone(),
                }),
            }
        }
    }

    fn finish(&mut self) {
        for bucket in self.exact.values_mut().chain(self.prefixes.values_mut()) {
            bucket.sort_by(|a, b| a.rank().cmp(&b.rank()));
        }
        self.every_path.sort_by(|a, b| a.rank().cmp(&b.rank()));
        self.regexes.sort_by(|a, b| {
            (a.route.rank(), a.regex.as_str()).cmp(&(b.route.rank(), b.regex.as_str()))
        });
        self.lengths = self.prefixes.keys().map(|p| p.len()).collect();
        self.lengths.sort_unstable();
        self.lengths.dedup();
        if !self.regexes.is_empty() {
            self.regex_set = RegexSet::new(self.regexes.iter().map(|r| r.regex.as_str()))
                .map_err(|error| {
                    warn!(%error, count = self.regexes.len(),
                        "regex paths do not compile as one set; they are tried one by one")
                })
                .ok();
        }
    }

    fn find<'r>(&'r self, path: &str, method: &Method, headers: &HeaderMap) -> Option<Matched<'r>> {
        let accepting =
            |bucket: &'r [Arc<Route>]| bucket.iter().find(|r| r.accepts(method, headers));
        if !self.exact.is_empty()
            && let Some(route) = self.exact.get(path).and_then(|b| accepting(b))
        {
            return Some(Matched {
                route,
                path: PathKind::Exact,
            });
        }
        if !self.regexes.is_empty() && self.regex_set.as_ref().is_none_or(|s| s.is_match(path)) {
            let found = self
                .regexes
                .iter()
                .find(|r| r.route.accepts(method, headers) && r.regex.is_match(path));
            if let Some(RegexPath { regex, route }) = found {
                return Some(Matched {
                    route,
                    path: PathKind::Regex(regex),
                });
            }
        }
        if !self.prefixes.is_empty() {
            for candidate in candidate_prefixes(path) {
                if self.lengths.binary_search(&candidate.len()).is_ok()
                    && let Some((prefix, bucket)) = self.prefixes.get_key_value(candidate)
                    && let Some(route) = accepting(bucket)
                {
                    return Some(Matched {
                        route,
                        path: PathKind::Prefix(prefix),
                    });
                }
            }
        }
        Some(Matched {
            route: accepting(&self.every_path)?,
            path: PathKind::Any,
        })
    }
}

/// Every prefix of `path` that a segment-aware match could have used, longest first: the path
/// itself, then for each `/` from the right, the path up to and including it and up to it.
fn candidate_prefixes(path: &str) -> impl Iterator<Item = &str> {
    // A byte scan: on a path of a few segments it is cheaper than the general char searcher.
    let slashes = path.bytes().enumerate().rev().filter(|&(_, b)| b == b'/');
    let cuts = slashes.flat_map(move |(i, _)| {
        let with_slash = (i + 1 < path.len()).then(|| path.get(..=i)).flatten();
        let without = (i > 0).then(|| path.get(..i)).flatten();
        [with_slash, without]
    });
    std::iter::once(path).chain(cuts.flatten())
}

/// Removes the port (IPv6 literals keep their brackets) and a trailing dot.
fn normalize_host(host: &str) -> &str {
    let host = if host.starts_with('[') {
        match host.find(']') {
            Some(i) => host.get(..=i).unwrap_or(host),
            None => host,
        }
    } else {
        // A byte scan: on a short host it is cheaper than the general char searcher.
        match host.bytes().rposition(|b| b == b':') {
            Some(i) => host.get(..i).unwrap_or(host),
            None => host,
        }
    };
    host.strip_suffix('.').unwrap_or(host)
}

/// Lower-cases only when needed, so the usual lower-case host costs nothing.
fn lowercase(host: &str) -> std::borrow::Cow<'_, str> {
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        host.to_ascii_lowercase().into()
    } else {
        host.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::Upstreams;
    use http::HeaderValue;
    use raftgate_model::Target as TargetSpec;
    use std::collections::BTreeMap;

    fn route(name: &str, hosts: &[&str], paths: &[&str], methods: &[&str]) -> Entity<RouteSpec> {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect();
        Entity::new(
            name,
            RouteSpec {
                service: "svc".into(),
                paths: v(paths),
                hosts: v(hosts),
                methods: v(methods),
                strip_path: false,
                ..Default::default()
            },
        )
    }

    fn state(routes: Vec<Entity<RouteSpec>>, weights: &[u32]) -> State {
        let targets = weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| TargetSpec {
                url: format!("http://127.0.0.1:{}", 9000 + i),
                weight,
            })
            .collect();
        let svc = Entity::new(
            "svc",
            ServiceSpec {
                targets,
                ..Default::default()
            },
        );
        State {
            services: Arc::new([("svc".to_string(), svc)].into_iter().collect()),
            routes: Arc::new(routes.into_iter().map(|r| (r.name.clone(), r)).collect()),
            ..State::default()
        }
    }

    fn compile(state: &State) -> Router {
        Router::compile(
            state,
            &Upstreams::new().sync(state),
            &Arc::new(Metrics::new()),
        )
    }

    fn prefix_of<'r>(m: &Matched<'r>) -> &'r str {
        match m.path {
            PathKind::Prefix(p) => p,
            _ => "",
        }
    }

    fn name(router: &Router, host: Option<&str>, path: &str, method: Method) -> Option<String> {
        router
            .find(host, path, &method, &HeaderMap::new())
            .map(|m| m.route.name.to_string())
    }

    #[test]
    fn precedence() {
        let router = compile(&state(
            vec![
                route("root", &[], &["/"], &[]),
                route("api", &[], &["/api"], &[]),
                route("api-get", &[], &["/api"], &["GET"]),
                route("b-api-get", &[], &["/api"], &["GET"]),
                route("exact", &["API.example.com"], &["/"], &[]),
                route("wild", &["*.example.com"], &[], &[]),
                route("wild-deep", &["*.b.example.com"], &[], &[]),
                route("exact-post", &["post.example.com"], &["/"], &["POST"]),
            ],
            &[1],
        ));
        let get = || Method::GET;
        assert_eq!(
            name(&router, None, "/api/x", get()).as_deref(),
            Some("api-get")
        );
        assert_eq!(
            name(&router, None, "/api/x", Method::POST).as_deref(),
            Some("api")
        );
        assert_eq!(name(&router, None, "/apix", get()).as_deref(), Some("root"));
        assert_eq!(
            name(&router, Some("api.example.com:8080"), "/api", get()).as_deref(),
            Some("exact")
        );
        assert_eq!(
            name(&router, Some("x.example.com"), "/api", get()).as_deref(),
            Some("wild")
        );
        assert_eq!(
            name(&router, Some("a.b.example.com."), "/", get()).as_deref(),
            Some("wild-deep")
        );
        assert_eq!(
            name(&router, Some("example.com"), "/api", get()).as_deref(),
            Some("api-get")
        );
        // An exact host whose routes do not accept the method falls back to the wildcard.
        assert_eq!(
            name(&router, Some("post.example.com"), "/", get()).as_deref(),
            Some("wild")
        );
        assert_eq!(
            name(&router, Some("post.example.com"), "/", Method::POST).as_deref(),
            Some("exact-post")
        );
    }

    fn custom(name: &str, paths: &[&str], edit: impl FnOnce(&mut RouteSpec)) -> Entity<RouteSpec> {
        let mut r = route(name, &[], paths, &[]);
        edit(&mut r.spec);
        r
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn exact_then_regex_then_prefix() {
        let router = compile(&state(
            vec![
                route("root", &[], &["/"], &[]),
                route("prefix-users", &[], &["/users"], &[]),
                route("exact-me", &[], &["=/users/me"], &[]),
                route("regex-id", &[], &["~^/users/[0-9]+$"], &[]),
                route("regex-get", &[], &["~^/users/[0-9]+$"], &["GET"]),
                route("host", &["a.example.com"], &["/"], &[]),
            ],
            &[1],
        ));
        let find =
            |host: Option<&str>, path: &str, method: Method| name(&router, host, path, method);
        assert_eq!(
            find(None, "/users/me", Method::GET).as_deref(),
            Some("exact-me")
        );
        assert_eq!(
            find(None, "/users/42", Method::GET).as_deref(),
            Some("regex-get")
        );
        assert_eq!(
            find(None, "/users/42", Method::PUT).as_deref(),
            Some("regex-id")
        );
        assert_eq!(
            find(None, "/users/42/x", Method::GET).as_deref(),
            Some("prefix-users")
        );
        assert_eq!(
            find(None, "/users/me/x", Method::GET).as_deref(),
            Some("prefix-users")
        );
        assert_eq!(
            find(None, "/users/mex", Method::GET).as_deref(),
            Some("prefix-users")
        );
        assert_eq!(find(None, "/other", Method::GET).as_deref(), Some("root"));
        // The host decides first: a route of the request's host beats a regex of any host.
        assert_eq!(
            find(Some("a.example.com"), "/users/42", Method::GET).as_deref(),
            Some("host")
        );
    }

    #[test]
    fn headers_then_methods_then_priority_then_name() {
        let router = compile(&state(
            vec![
                custom("a-plain", &["/api"], |_| {}),
                custom("b-high", &["/api"], |r| r.priority = 10),
                custom("c-get", &["/api"], |r| r.methods = vec!["GET".into()]),
                custom("d-version", &["/api"], |r| {
                    r.headers = BTreeMap::from([("X-Version".into(), vec!["2".into(), "3".into()])])
                }),
                custom("e-canary", &["/api"], |r| {
                    r.headers = BTreeMap::from([("x-canary".into(), vec![])]);
                    r.priority = 5;
                }),
                custom("f-both", &["/api"], |r| {
                    r.headers = BTreeMap::from([
                        ("x-canary".into(), vec![]),
                        ("x-version".into(), vec!["3".into()]),
                    ]);
                    r.priority = -1;
                }),
                custom("r-low", &["~^/re/"], |r| r.priority = 1),
                custom("r-high", &["~^/re/x"], |r| r.priority = 2),
                custom("r-tie-b", &["~^/tie"], |_| {}),
                custom("r-tie-a", &["~^/tie"], |_| {}),
            ],
            &[1],
        ));
        let find = |method: Method, h: &[(&'static str, &'static str)], path: &str| {
            router
                .find(None, path, &method, &headers(h))
                .map(|m| m.route.name.to_string())
        };
        assert_eq!(find(Method::GET, &[], "/api").as_deref(), Some("c-get"));
        assert_eq!(find(Method::POST, &[], "/api/x").as_deref(), Some("b-high"));
        assert_eq!(
            find(Method::POST, &[("x-version", "2")], "/api").as_deref(),
            Some("d-version")
        );
        assert_eq!(
            find(Method::POST, &[("x-version", "4")], "/api").as_deref(),
            Some("b-high")
        );
        // Any line of a repeated header may match; values compare byte for byte.
        assert_eq!(
            find(
                Method::GET,
                &[("x-version", "9"), ("x-version", "3")],
                "/api"
            )
            .as_deref(),
            Some("d-version")
        );
        assert_eq!(
            find(Method::GET, &[("x-version", "3 ")], "/api").as_deref(),
            Some("c-get")
        );
        // Same number of header matchers: the priority decides.
        assert_eq!(
            find(Method::GET, &[("x-canary", ""), ("x-version", "2")], "/api").as_deref(),
            Some("e-canary")
        );
        // More header matchers beat a higher priority.
        assert_eq!(
            find(
                Method::GET,
                &[("x-canary", "1"), ("x-version", "3")],
                "/api"
            )
            .as_deref(),
            Some("f-both")
        );
        assert_eq!(find(Method::GET, &[], "/re/x").as_deref(), Some("r-high"));
        assert_eq!(find(Method::GET, &[], "/re/y").as_deref(), Some("r-low"));
        assert_eq!(find(Method::GET, &[], "/tie").as_deref(), Some("r-tie-a"));
        assert_eq!(find(Method::GET, &[], "/nothing"), None);
    }

    #[test]
    fn rewrites_and_strips() {
        let rw = |s: &str| Some(s.to_owned());
        let router = compile(&state(
            vec![
                custom("pre", &["/api"], |r| r.rewrite = rw("/v2")),
                custom("pre-slash", &["/b/"], |r| r.rewrite = rw("/v3/")),
                custom("strip", &["/s"], |r| r.strip_path = true),
                custom("exact", &["=/old"], |r| r.rewrite = rw("/new")),
                custom("exact-strip", &["=/gone"], |r| r.strip_path = true),
                custom("re", &["~^/u/([0-9]+)/(?P<tab>[a-z]+)$"], |r| {
                    r.rewrite = rw("/users/${1}/$tab");
                    r.strip_path = true;
                }),
                custom("re-strip", &["~^/strip-me"], |r| r.strip_path = true),
                custom("any", &[], |r| {
                    r.hosts = vec!["any.example.com".into()];
                    r.rewrite = rw("/base");
                }),
                custom("plain", &["/plain"], |_| {}),
            ],
            &[1],
        ));
        let rewritten = |host: Option<&str>, path: &str| {
            let m = router
                .find(host, path, &Method::GET, &HeaderMap::new())
                .unwrap();
            m.rewritten_path(path).map(Cow::into_owned)
        };
        let cases: [(Option<&str>, &str, Option<&str>); 11] = [
            (None, "/api/users", Some("/v2/users")),
            (None, "/api", Some("/v2")),
            (None, "/b/x", Some("/v3/x")),
            (None, "/s/x", Some("/x")),
            (None, "/s", Some("")),
            (None, "/old", Some("/new")),
            (None, "/gone", Some("/")),
            (None, "/u/42/posts", Some("/users/42/posts")),
            (None, "/strip-me/too", Some("/too")),
            (Some("any.example.com"), "/p", Some("/base/p")),
            (None, "/plain/x", None),
        ];
        for (host, path, expected) in cases {
            assert_eq!(rewritten(host, path).as_deref(), expected, "{path}");
        }
    }

    #[test]
    fn segment_aware_prefixes() {
        let router = compile(&state(
            vec![
                route("api", &[], &["/api"], &[]),
                route("api-slash", &[], &["/api/v1/"], &[]),
            ],
            &[1],
        ));
        let find = |p: &str| {
            router
                .find(None, p, &Method::GET, &HeaderMap::new())
                .map(|m| (m.route.name.to_string(), prefix_of(&m).to_string()))
        };
        assert_eq!(find("/api"), Some(("api".into(), "/api".into())));
        assert_eq!(find("/api/"), Some(("api".into(), "/api".into())));
        assert_eq!(find("/api/x/y"), Some(("api".into(), "/api".into())));
        assert_eq!(find("/apix"), None);
        assert_eq!(find("/api/v1"), Some(("api".into(), "/api".into())));
        assert_eq!(
            find("/api/v1/users"),
            Some(("api-slash".into(), "/api/v1/".into()))
        );
        assert_eq!(find("/"), None);
        assert_eq!(find(""), None);
        assert_eq!(find("*"), None);
    }

    #[test]
    fn candidates_are_longest_first() {
        let c: Vec<&str> = candidate_prefixes("/a/bc/").collect();
        assert_eq!(c, ["/a/bc/", "/a/bc", "/a/", "/a", "/"]);
        let c: Vec<&str> = candidate_prefixes("/a").collect();
        assert_eq!(c, ["/a", "/"]);
    }

    #[test]
    fn many_hosts_compile_and_match() {
        let routes = (0..10_000)
            .map(|i| {
                route(
                    &format!("r{i}"),
                    &[&format!("h{i}.example.com")],
                    &["/"],
                    &[],
                )
            })
            .collect();
        let router = compile(&state(routes, &[1]));
        assert_eq!(router.route_count(), 10_000);
        assert_eq!(
            name(&router, Some("h9999.example.com"), "/x", Method::GET).as_deref(),
            Some("r9999")
        );
        assert!(
            router
                .find(Some("nope"), "/x", &Method::GET, &HeaderMap::new())
                .is_none()
        );
    }

    #[test]
    fn ai_versions_are_served_at_their_base_path_and_guarded_once_offered() {
        use raftgate_model::catalog::{ApiSpec, Backend, Lifecycle, SubscriptionMode};
        let mut state = state(vec![route("catch-all", &[], &["/"], &[])], &[1]);
        let api = |subscription| ApiSpec {
            subscription,
            ..ApiSpec::default()
        };
        let version = |base: &str, backend, state| ApiVersionSpec {
            base_path: base.into(),
            backend,
            state,
            successor: None,
            sunset_at: None,
            deprecated_at: None,
            openapi: None,
            policies: Default::default(),
        };
        let apis = Arc::make_mut(&mut state.apis);
        apis.insert(
            "sub".into(),
            Entity::new("sub", api(SubscriptionMode::Auto)),
        );
        apis.insert(
            "open".into(),
            Entity::new("open", api(SubscriptionMode::None)),
        );
        let versions = Arc::make_mut(&mut state.api_versions);
        for (key, base, backend, lifecycle) in [
            (
                "sub/v1",
                "/sub/v1",
                Backend::AiModel("smart".into()),
                Lifecycle::Published,
            ),
            (
                "sub/v2",
                "/sub/v2",
                Backend::AiModel("draft".into()),
                Lifecycle::Draft,
            ),
            (
                "sub/p",
                "/sub/p",
                Backend::Prompt("summary".into()),
                Lifecycle::Retired,
            ),
            (
                "open/v1",
                "/open/v1",
                Backend::AiModel("plain".into()),
                Lifecycle::Published,
            ),
            (
                "sub/svc",
                "/sub/svc",
                Backend::Service("svc".into()),
                Lifecycle::Published,
            ),
        ] {
            versions.insert(
                key.into(),
                Entity::new(key, version(base, backend, lifecycle)),
            );
        }
        let router = compile(&state);
        // Every AI version has its route, with policies (keys at least); a service version
        // has only the routes that name it.
        for (path, expected) in [
            ("/sub/v1/chat/completions", "sub/v1"),
            ("/sub/v2/models", "sub/v2"),
            ("/sub/p", "sub/p"),
            ("/open/v1/embeddings", "open/v1"),
            ("/sub/svc/x", "catch-all"),
        ] {
            let found = router
                .find(None, path, &Method::POST, &HeaderMap::new())
                .expect("a route");
            assert_eq!(&*found.route.name, expected, "{path}");
            let ai = matches!(found.route.target, Target::Ai(_));
            assert_eq!(ai, expected != "catch-all", "{path}");
            assert_eq!(found.route.policies.is_some(), ai, "{path}");
        }
        assert_eq!(router.route_count(), 5);
        // Offered by an API with subscriptions past draft: refused at their own entrance.
        let guards = router.ai_guards();
        assert!(guards.model("smart").is_err());
        assert!(guards.model("draft").is_ok() && guards.model("plain").is_ok());
        assert!(
            guards.prompt("summary").is_err(),
            "a retired version still offers it"
        );
    }
}
