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
//! - **path**: the raw request path (not percent-decoded) starts with one of the route's `paths`
//!   *at a segment boundary*: `/api` matches `/api`, `/api/` and `/api/x` but not `/apix`; a
//!   prefix ending in `/` (`/api/`) matches `/api/` and `/api/x` but not `/api`. A route without
//!   `paths` matches every path.
//! - **method**: the request method is one of the route's `methods` (exact, so `GET` does not
//!   imply `HEAD`); a route without `methods` matches every method.
//!
//! # Precedence
//!
//! When several routes match, the most specific wins, deciding by each rule in turn:
//! 1. exact host, then wildcard host (the longest wildcard suffix first), then routes without
//!    hosts;
//! 2. the longest matching path prefix (a route without `paths` comes last);
//! 3. routes listing `methods` before routes matching every method;
//! 4. the route name, in byte order, so the choice is deterministic.
//!
//! # Cost of a lookup
//!
//! Hosts are looked up in hash maps (one lookup for the exact host, one per label for
//! wildcards), and within a host group the candidate prefixes of the request path (one or two per
//! `/` in the path, skipping lengths no prefix has) are looked up in a hash map, longest first.
//! A lookup therefore costs O(path segments + host labels) hash probes, whatever the number of
//! routes; only routes sharing the same host and prefix are scanned for their methods. With
//! 10,000 routes, a lookup takes about 0.1 µs in a release build.
//!
//! # Upstream selection
//!
//! Each [`Service`] carries a precomputed smooth weighted round-robin schedule of its targets and
//! an atomic counter, so [`Service::next_target`] is lock-free. Weights are divided by their
//! greatest common divisor; if their sum still exceeds [`MAX_SCHEDULE`] they are scaled down
//! proportionally (a target with a weight above 0 always keeps at least one slot). The counter
//! starts again from zero each time the router is recompiled.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::uri::{Authority, Parts, PathAndQuery, Scheme, Uri};
use http::{HeaderValue, Method};
use raftgate_model::state::Table;
use raftgate_model::{Entity, LbPolicy, RouteSpec, ServiceSpec, State};
use tracing::warn;

/// Largest round-robin schedule kept per service; bounds memory for very large weights.
pub const MAX_SCHEDULE: usize = 1024;

/// The compiled, immutable routing table of one [`State`].
#[derive(Debug, Default)]
pub struct Router {
    exact: HashMap<Box<str>, PathTable>,
    /// Keyed by the suffix after `*.`: `*.example.com` is stored under `example.com`.
    wildcard: HashMap<Box<str>, PathTable>,
    any_host: PathTable,
    routes: usize,
    services: usize,
    /// The tables compiled, to tell whether a new state needs a new router.
    source: (Table<RouteSpec>, Table<ServiceSpec>),
}

/// The routes of one host group, indexed by path prefix.
#[derive(Debug, Default)]
struct PathTable {
    /// Each bucket is sorted: routes with methods first, then by name.
    prefixes: HashMap<Box<str>, Vec<Arc<Route>>>,
    /// The distinct lengths of `prefixes`, ascending: candidates of other lengths are skipped
    /// without hashing.
    lengths: Vec<usize>,
    /// Routes without paths, sorted like a bucket.
    every_path: Vec<Arc<Route>>,
}

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    /// Route name, for logs.
    pub name: Box<str>,
    /// Methods accepted; empty accepts all.
    methods: Box<[Method]>,
    /// Whether the matched prefix is removed before forwarding.
    pub strip_path: bool,
    /// Where matched requests go.
    pub service: Arc<Service>,
}

impl Route {
    fn accepts(&self, method: &Method) -> bool {
        self.methods.is_empty() || self.methods.contains(method)
    }
}

/// A compiled upstream service with its round-robin state.
#[derive(Debug)]
pub struct Service {
    /// Service name, for logs and error messages.
    pub name: Arc<str>,
    /// Targets with a weight above 0, in spec order.
    targets: Box<[Target]>,
    /// Indices into `targets`, in the order they are used.
    schedule: Box<[u32]>,
    next: AtomicUsize,
}

impl Service {
    /// The next target in weighted round-robin order; `None` when no target has a weight above 0.
    pub fn next_target(&self) -> Option<&Target> {
        if self.schedule.is_empty() {
            return None;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.schedule.len();
        self.targets.get(*self.schedule.get(turn)? as usize)
    }
}

/// One upstream server, parsed once at compile time.
#[derive(Debug)]
pub struct Target {
    /// The configured URL, for logs.
    pub url: Arc<str>,
    authority: Authority,
    /// `Host` header sent upstream: the target's authority.
    host: HeaderValue,
    /// Path prepended to the forwarded path, without a trailing `/`; empty for none.
    base_path: Box<str>,
}

impl Target {
    fn parse(url: &str) -> Option<Target> {
        let rest = url.strip_prefix("http://")?;
        let (authority, base) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let authority = Authority::from_str(authority).ok()?;
        Some(Target {
            url: url.into(),
            host: HeaderValue::from_str(authority.as_str()).ok()?,
            authority,
            base_path: base.trim_end_matches('/').into(),
        })
    }

    /// The `Host` header value to send to this target.
    pub fn host_header(&self) -> &HeaderValue {
        &self.host
    }

    /// The absolute upstream URI for a request to `original`, after removing the first
    /// `strip` bytes of its path (0 for none) and prepending the target's base path.
    pub fn upstream_uri(&self, original: &Uri, strip: usize) -> Result<Uri, http::Error> {
        let path_and_query = if strip == 0 && self.base_path.is_empty() {
            // The common case reuses the original (reference-counted) bytes.
            match original.path_and_query() {
                Some(pq) => pq.clone(),
                None => PathAndQuery::from_static("/"),
            }
        } else {
            let rest = original.path().get(strip..).unwrap_or_default();
            let query = original.query();
            let mut s = String::with_capacity(
                self.base_path.len() + rest.len() + 2 + query.map_or(0, str::len),
            );
            s.push_str(&self.base_path);
            if !rest.starts_with('/') {
                s.push('/');
            }
            s.push_str(rest);
            if let Some(q) = query {
                s.push('?');
                s.push_str(q);
            }
            PathAndQuery::try_from(s)?
        };
        let mut parts = Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path_and_query);
        Ok(Uri::from_parts(parts)?)
    }
}

/// A successful lookup.
#[derive(Debug, Clone, Copy)]
pub struct Matched<'r> {
    /// The winning route.
    pub route: &'r Arc<Route>,
    /// The path prefix that matched; empty for a route without paths.
    pub prefix: &'r str,
}

impl Matched<'_> {
    /// How many leading bytes of the request path to remove before forwarding.
    pub fn strip_len(&self) -> usize {
        if self.route.strip_path {
            self.prefix.len()
        } else {
            0
        }
    }
}

impl Router {
    /// Compiles the routes and services of `state`. Routes naming a missing service and targets
    /// with an unusable URL are skipped with a warning; validation normally prevents both.
    pub fn compile(state: &State) -> Router {
        let services: HashMap<&str, Arc<Service>> = state
            .services
            .values()
            .map(|e| (e.name.as_str(), Arc::new(compile_service(e))))
            .collect();
        let mut router = Router {
            services: services.len(),
            source: (state.routes.clone(), state.services.clone()),
            ..Router::default()
        };
        for entity in state.routes.values() {
            let Some(service) = services.get(entity.spec.service.as_str()) else {
                warn!(route = %entity.name, service = %entity.spec.service,
                    "route names a service that does not exist; route skipped");
                continue;
            };
            router.add(entity, service);
        }
        router.finish();
        router
    }

    fn add(&mut self, entity: &Entity<RouteSpec>, service: &Arc<Service>) {
        let spec = &entity.spec;
        let route = Arc::new(Route {
            name: entity.name.as_str().into(),
            methods: spec
                .methods
                .iter()
                .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                .collect(),
            strip_path: spec.strip_path,
            service: service.clone(),
        });
        self.routes += 1;
        if spec.hosts.is_empty() {
            self.any_host.insert(&spec.paths, &route);
            return;
        }
        for host in &spec.hosts {
            let host = host.trim_end_matches('.').to_ascii_lowercase();
            let (map, key) = match host.strip_prefix("*.") {
                Some(suffix) if !suffix.is_empty() && !suffix.contains('*') => {
                    (&mut self.wildcard, suffix.to_owned())
                }
                _ if host.contains('*') => {
                    warn!(route = %entity.name, host = %host,
                        "only a leading '*.' wildcard is supported; this host never matches");
                    continue;
                }
                _ => (&mut self.exact, host),
            };
            map.entry(key.into_boxed_str())
                .or_default()
                .insert(&spec.paths, &route);
        }
    }

    /// Orders every bucket for precedence and records prefix lengths; run once all routes are
    /// added.
    fn finish(&mut self) {
        for table in self
            .exact
            .values_mut()
            .chain(self.wildcard.values_mut())
            .chain(std::iter::once(&mut self.any_host))
        {
            for bucket in table.prefixes.values_mut() {
                sort_bucket(bucket);
            }
            sort_bucket(&mut table.every_path);
            table.lengths = table.prefixes.keys().map(|p| p.len()).collect();
            table.lengths.sort_unstable();
            table.lengths.dedup();
        }
    }

    /// The route for a request, following the precedence in the module documentation.
    /// `host` may carry a port and any case; `path` is the raw request path.
    pub fn find<'r>(
        &'r self,
        host: Option<&str>,
        path: &str,
        method: &Method,
    ) -> Option<Matched<'r>> {
        if let Some(host) = host.map(normalize_host).filter(|h| !h.is_empty()) {
            let host = lowercase(host);
            let host: &str = &host;
            if let Some(m) = self.exact.get(host).and_then(|t| t.find(path, method)) {
                return Some(m);
            }
            if !self.wildcard.is_empty() {
                for (i, _) in host.match_indices('.') {
                    let suffix = host.get(i + 1..).unwrap_or_default();
                    if let Some(m) = self.wildcard.get(suffix).and_then(|t| t.find(path, method)) {
                        return Some(m);
                    }
                }
            }
        }
        self.any_host.find(path, method)
    }

    /// Number of routes compiled.
    pub fn route_count(&self) -> usize {
        self.routes
    }

    /// Number of services compiled.
    pub fn service_count(&self) -> usize {
        self.services
    }

    /// Whether `state` has the very routes and services this router was compiled from (the
    /// state machine keeps a table's `Arc` when a change does not touch it), so that changes
    /// to consumers or keys cost no recompilation.
    pub fn is_compiled_from(&self, state: &State) -> bool {
        Arc::ptr_eq(&self.source.0, &state.routes) && Arc::ptr_eq(&self.source.1, &state.services)
    }
}

impl PathTable {
    fn insert(&mut self, paths: &[String], route: &Arc<Route>) {
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
            push(
                self.prefixes.entry(path.as_str().into()).or_default(),
                route,
            );
        }
    }

    fn find<'r>(&'r self, path: &str, method: &Method) -> Option<Matched<'r>> {
        if !self.prefixes.is_empty() {
            for candidate in candidate_prefixes(path) {
                if self.lengths.binary_search(&candidate.len()).is_ok()
                    && let Some((prefix, bucket)) = self.prefixes.get_key_value(candidate)
                    && let Some(route) = bucket.iter().find(|r| r.accepts(method))
                {
                    return Some(Matched { route, prefix });
                }
            }
        }
        let route = self.every_path.iter().find(|r| r.accepts(method))?;
        Some(Matched { route, prefix: "" })
    }
}

fn sort_bucket(bucket: &mut [Arc<Route>]) {
    bucket.sort_by(|a, b| {
        a.methods
            .is_empty()
            .cmp(&b.methods.is_empty())
            .then_with(|| a.name.cmp(&b.name))
    });
}

/// Every prefix of `path` that a segment-aware match could have used, longest first: the path
/// itself, then for each `/` from the right, the path up to and including it and up to it.
fn candidate_prefixes(path: &str) -> impl Iterator<Item = &str> {
    let cuts = path.rmatch_indices('/').flat_map(move |(i, _)| {
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
        match host.rfind(':') {
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

fn compile_service(entity: &Entity<ServiceSpec>) -> Service {
    // Least-connections and consistent hashing are being added in the upstream module; until
    // then every service is balanced round-robin.
    match entity.spec.lb {
        LbPolicy::RoundRobin | LbPolicy::LeastConnections | LbPolicy::ConsistentHash => {}
    }
    let mut targets = Vec::new();
    let mut weights = Vec::new();
    for t in &entity.spec.targets {
        if t.weight == 0 {
            continue;
        }
        match Target::parse(&t.url) {
            Some(target) => {
                targets.push(target);
                weights.push(t.weight);
            }
            None => warn!(service = %entity.name, url = %t.url,
                "target URL is not of the form http://host:port[/path]; target skipped"),
        }
    }
    Service {
        name: entity.name.as_str().into(),
        schedule: schedule(&weights).into(),
        targets: targets.into(),
        next: AtomicUsize::new(0),
    }
}

/// Smooth weighted round-robin order (as in nginx) over targets with the given weights (all
/// above 0): spreads each target's turns evenly instead of sending them in bursts.
fn schedule(weights: &[u32]) -> Vec<u32> {
    let weights = reduce(weights);
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut order = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += w;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        order.push(best as u32);
    }
    order
}

/// Divides weights by their GCD and scales them down if their sum exceeds the schedule cap.
fn reduce(weights: &[u32]) -> Vec<i64> {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let g = weights.iter().fold(0, |g, &w| gcd(g, u64::from(w))).max(1);
    let reduced: Vec<u64> = weights.iter().map(|&w| u64::from(w) / g).collect();
    let sum: u64 = reduced.iter().sum();
    let cap = MAX_SCHEDULE.max(weights.len()) as u64;
    reduced
        .into_iter()
        .map(|w| {
            let w = if sum > cap { (w * cap / sum).max(1) } else { w };
            i64::try_from(w).unwrap_or(1)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftgate_model::Target as TargetSpec;
    use std::collections::BTreeMap;

    fn entity<T>(name: &str, spec: T) -> Entity<T> {
        Entity {
            name: name.into(),
            version: 1,
            created_at: 0,
            updated_at: 0,
            spec,
        }
    }

    fn route(name: &str, hosts: &[&str], paths: &[&str], methods: &[&str]) -> Entity<RouteSpec> {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect();
        entity(
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
        let svc = entity(
            "svc",
            ServiceSpec {
                targets,
                ..Default::default()
            },
        );
        State {
            services: Arc::new(BTreeMap::from([("svc".to_string(), svc)])),
            routes: Arc::new(routes.into_iter().map(|r| (r.name.clone(), r)).collect()),
            ..State::default()
        }
    }

    fn name(router: &Router, host: Option<&str>, path: &str, method: Method) -> Option<String> {
        router
            .find(host, path, &method)
            .map(|m| m.route.name.to_string())
    }

    #[test]
    fn precedence() {
        let router = Router::compile(&state(
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

    #[test]
    fn segment_aware_prefixes() {
        let router = Router::compile(&state(
            vec![
                route("api", &[], &["/api"], &[]),
                route("api-slash", &[], &["/api/v1/"], &[]),
            ],
            &[1],
        ));
        let find = |p: &str| {
            router
                .find(None, p, &Method::GET)
                .map(|m| (m.route.name.to_string(), m.prefix.to_string()))
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
    fn upstream_uris() {
        let t = Target::parse("http://10.0.0.1:8080/base/").unwrap();
        let uri: Uri = "/api/users?x=1".parse().unwrap();
        assert_eq!(
            t.upstream_uri(&uri, 4).unwrap().to_string(),
            "http://10.0.0.1:8080/base/users?x=1"
        );
        assert_eq!(
            t.upstream_uri(&"/api".parse().unwrap(), 4)
                .unwrap()
                .to_string(),
            "http://10.0.0.1:8080/base/"
        );
        let t = Target::parse("http://up:80").unwrap();
        assert_eq!(t.host_header(), "up:80");
        assert_eq!(
            t.upstream_uri(&"/api".parse().unwrap(), 4)
                .unwrap()
                .to_string(),
            "http://up:80/"
        );
        assert_eq!(
            t.upstream_uri(&"/api/".parse().unwrap(), 5)
                .unwrap()
                .to_string(),
            "http://up:80/"
        );
        assert_eq!(
            t.upstream_uri(&uri, 0).unwrap().to_string(),
            "http://up:80/api/users?x=1"
        );
        assert!(Target::parse("https://x").is_none());
        assert!(Target::parse("http://a b").is_none());
    }

    #[test]
    fn weighted_schedule() {
        assert_eq!(schedule(&[3, 1]), [0, 0, 1, 0]);
        assert_eq!(schedule(&[5, 5]), [0, 1]);
        assert_eq!(schedule(&[2, 1, 1]).len(), 4);
        let big = schedule(&[u32::MAX, 1]);
        assert_eq!(big.len(), MAX_SCHEDULE);
        assert_eq!(big.iter().filter(|&&i| i == 1).count(), 1);

        let router = Router::compile(&state(vec![route("r", &[], &[], &[])], &[3, 0, 1]));
        let svc = &router.find(None, "/", &Method::GET).unwrap().route.service;
        let mut counts = [0; 2];
        for _ in 0..400 {
            let t = svc.next_target().unwrap();
            counts[usize::from(t.url.ends_with("9002"))] += 1;
        }
        assert_eq!(counts, [300, 100]);
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
        let router = Router::compile(&state(routes, &[1]));
        assert_eq!(router.route_count(), 10_000);
        assert_eq!(
            name(&router, Some("h9999.example.com"), "/x", Method::GET).as_deref(),
            Some("r9999")
        );
        assert!(router.find(Some("nope"), "/x", &Method::GET).is_none());
    }
}
