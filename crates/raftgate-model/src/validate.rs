//! Validation of user input, done before a command is proposed so that the log only carries
//! well-formed specs. Each error names the JSON field at fault.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::access::{StoredToken, TeamSpec, TokenRole};
use crate::ai::{ModelConfig, ProviderConfig};
use crate::resource::{
    CertificateSpec, ConsumerSpec, HashOn, InstanceSpec, LbPolicy, RateLimitSpec, RouteSpec,
    ServiceSpec, StoredKey,
};

/// A spec field that is not acceptable, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// JSON path of the offending field, e.g. `targets[0].url`.
    pub field: String,
    /// What is wrong and what is expected.
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> ValidationError {
    ValidationError {
        field: field.into(),
        message: message.into(),
    }
}

/// Longest accepted resource name.
pub const MAX_NAME_LEN: usize = 128;

/// Resource names appear in URLs and logs: keep them to a safe alphabet.
pub fn name(field: &str, name: &str) -> Result<(), ValidationError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(err(
            field,
            format!("must be 1 to {MAX_NAME_LEN} characters long"),
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
    {
        return Err(err(field, "may contain only letters, digits and - _ . ~"));
    }
    // Clients that normalise URL paths turn `/services/..` into `/`: such a name could be
    // written but never read back or deleted.
    if matches!(name, "." | ".." | "~") {
        return Err(err(
            field,
            "must not be ., .. or ~ (clients that normalise URL paths cannot address it)",
        ));
    }
    Ok(())
}

/// Checks an upstream URL of the form `http://host:port[/path]` without pulling in a URL parser.
fn target_url(field: &str, url: &str) -> Result<(), ValidationError> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        err(
            field,
            "must start with http:// (for example http://127.0.0.1:9000)",
        )
    })?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.contains(['@', '?', '#', ' ']) {
        return Err(err(field, "must name a host, as in http://host:port"));
    }
    if let Some((host, port)) = authority.rsplit_once(':')
        && !host.ends_with(']')
        && (host.is_empty() || port.parse::<u16>().is_err())
    {
        return Err(err(field, "port must be a number from 0 to 65535"));
    }
    Ok(())
}

/// See [`ServiceSpec`].
pub fn service(spec: &ServiceSpec) -> Result<(), ValidationError> {
    for (i, t) in spec.targets.iter().enumerate() {
        target_url(&format!("targets[{i}].url"), &t.url)?;
    }
    if !spec.targets.is_empty() && spec.targets.iter().all(|t| t.weight == 0) {
        return Err(err("targets", "at least one target needs a weight above 0"));
    }
    match (&spec.lb, &spec.hash_on) {
        (LbPolicy::ConsistentHash, None) => {
            return Err(err(
                "hash_on",
                "consistent_hash needs hash_on: {\"header\": name}, {\"cookie\": name} or \"client_ip\"",
            ));
        }
        (_, Some(HashOn::Header(h))) if !is_header_name(h) => {
            return Err(err("hash_on.header", "must be a valid header name"));
        }
        (_, Some(HashOn::Cookie(c))) if c.is_empty() => {
            return Err(err("hash_on.cookie", "must name a cookie"));
        }
        _ => {}
    }
    if spec.timeouts.connect_ms == 0 || spec.timeouts.read_ms == 0 {
        return Err(err("timeouts", "connect_ms and read_ms must be above 0"));
    }
    if spec.retries > 10 {
        return Err(err("retries", "must be at most 10"));
    }
    if let Some(a) = &spec.health_checks.active {
        if !a.path.starts_with('/') {
            return Err(err("health_checks.active.path", "must start with /"));
        }
        if a.interval_ms < 100 || a.timeout_ms == 0 {
            return Err(err(
                "health_checks.active",
                "interval_ms must be at least 100 and timeout_ms above 0",
            ));
        }
        if a.healthy_threshold == 0 || a.unhealthy_threshold == 0 {
            return Err(err("health_checks.active", "thresholds must be at least 1"));
        }
    }
    if let Some(p) = &spec.health_checks.passive
        && (p.consecutive_failures == 0 || p.ejection_ms == 0)
    {
        return Err(err(
            "health_checks.passive",
            "consecutive_failures and ejection_ms must be above 0",
        ));
    }
    if spec.dns_refresh_ms < 100 {
        return Err(err("dns_refresh_ms", "must be at least 100"));
    }
    team("team", spec.team.as_deref())?;
    crate::policy::validate(&spec.policies)
}

/// Host names, `*.` wildcards allowed.
fn hosts(field: &str, hosts: &[String]) -> Result<(), ValidationError> {
    for (i, h) in hosts.iter().enumerate() {
        let ok = !h.is_empty()
            && h.len() <= 253
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'*'));
        if !ok {
            return Err(err(
                format!("{field}[{i}]"),
                "must be a host name such as api.example.com",
            ));
        }
    }
    Ok(())
}

/// HTTP header names: RFC 9110 tokens.
pub(crate) fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(is_token_byte)
}

/// A byte of an HTTP token (RFC 9110 §5.6.2).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];

/// How a route path entry matches, as written in [`RouteSpec::paths`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch<'a> {
    /// `/api`: prefix at a segment boundary.
    Prefix(&'a str),
    /// `=/api/v1`: the whole path.
    Exact(&'a str),
    /// `~^/users/[0-9]+$`: a regular expression.
    Regex(&'a str),
}

/// Splits a route path entry into its kind; the single place that knows the `=`/`~` syntax.
pub fn path_match(path: &str) -> PathMatch<'_> {
    if let Some(exact) = path.strip_prefix('=') {
        PathMatch::Exact(exact)
    } else if let Some(re) = path.strip_prefix('~') {
        PathMatch::Regex(re)
    } else {
        PathMatch::Prefix(path)
    }
}

/// A path in the normal form requests are matched in (see [`crate::path::normalize`]),
/// starting with `/`.
pub fn normal_path(field: &str, path: &str) -> Result<(), ValidationError> {
    if !path.starts_with('/') {
        return Err(err(field, "must start with /"));
    }
    match crate::path::normalize(path) {
        Ok(None) => Ok(()),
        Ok(Some(normal)) => Err(err(
            field,
            format!("must be in the normal form requests are matched in: {normal}"),
        )),
        Err(e) => Err(err(field, e.to_string())),
    }
}

/// The owning team of an owned object, when it names one.
pub fn team(field: &str, team: Option<&str>) -> Result<(), ValidationError> {
    team.map_or(Ok(()), |t| name(field, t))
}

/// Longest description accepted.
pub const MAX_DESCRIPTION: usize = 10_000;

/// A description for people.
pub fn description(field: &str, text: &str) -> Result<(), ValidationError> {
    if text.chars().count() > MAX_DESCRIPTION {
        return Err(err(
            field,
            format!("must be at most {MAX_DESCRIPTION} characters"),
        ));
    }
    Ok(())
}

/// Free-form labels: each 1 to 64 characters, at most 64 of them.
pub fn tags(field: &str, tags: &[String]) -> Result<(), ValidationError> {
    if tags.len() > 64 {
        return Err(err(field, "must list at most 64 tags"));
    }
    match tags
        .iter()
        .position(|t| t.is_empty() || t.chars().count() > 64)
    {
        Some(i) => Err(err(
            format!("{field}[{i}]"),
            "must be 1 to 64 characters long",
        )),
        None => Ok(()),
    }
}

/// See [`TeamSpec`].
pub fn team_spec(spec: &TeamSpec) -> Result<(), ValidationError> {
    description("description", &spec.description)?;
    tags("tags", &spec.tags)
}

/// See [`RouteSpec`].
pub fn route(spec: &RouteSpec) -> Result<(), ValidationError> {
    name("service", &spec.service)?;
    team("team", spec.team.as_deref())?;
    if let Some(owner) = &spec.api_version {
        name("api_version.api", &owner.api)?;
        name("api_version.version", &owner.version)?;
    }
    for (i, p) in spec.paths.iter().enumerate() {
        let field = format!("paths[{i}]");
        match path_match(p) {
            PathMatch::Prefix(p) | PathMatch::Exact(p) if !p.starts_with('/') => {
                return Err(err(
                    field,
                    "must start with / (or =/ for an exact path, ~ for a regex)",
                ));
            }
            // Requests are normalised before routing, so only a normal path can match one.
            PathMatch::Prefix(p) | PathMatch::Exact(p) => normal_path(&field, p)?,
            PathMatch::Regex(re) => {
                regex::Regex::new(re)
                    .map_err(|e| err(field, format!("invalid regular expression: {e}")))?;
            }
        }
    }
    hosts("hosts", &spec.hosts)?;
    for (i, m) in spec.methods.iter().enumerate() {
        if !METHODS.contains(&m.as_str()) {
            return Err(err(
                format!("methods[{i}]"),
                format!("must be one of {}", METHODS.join(", ")),
            ));
        }
    }
    for name in spec.headers.keys() {
        if !is_header_name(name) {
            return Err(err(
                format!("headers.{name}"),
                "must be a valid header name",
            ));
        }
    }
    for (i, protocol) in spec.upgrades.iter().enumerate() {
        let field = format!("upgrades[{i}]");
        if protocol.eq_ignore_ascii_case("h2c") {
            return Err(err(
                field,
                "h2c upgrades are never passed on (HTTP/2 smuggling); clients speak HTTP/2 to the proxy directly instead",
            ));
        }
        // A protocol name as `Upgrade` carries it (RFC 9110 §7.8), without its version.
        if protocol.is_empty() || !protocol.bytes().all(is_token_byte) {
            return Err(err(
                field,
                "must be a protocol name such as websocket (a token, no version)",
            ));
        }
    }
    for (field, ops) in [
        ("request_headers", &spec.request_headers),
        ("response_headers", &spec.response_headers),
    ] {
        let names = ops
            .remove
            .iter()
            .chain(ops.set.keys())
            .chain(ops.add.keys());
        for name in names {
            if !is_header_name(name) {
                return Err(err(
                    format!("{field}.{name}"),
                    "must be a valid header name",
                ));
            }
        }
        for (name, value) in ops.set.iter().chain(ops.add.iter()) {
            if value.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f) {
                return Err(err(
                    format!("{field}.{name}"),
                    "value must not contain control characters",
                ));
            }
        }
    }
    crate::policy::validate(&spec.policies)
}

/// See [`InstanceSpec`].
pub fn instance(spec: &InstanceSpec) -> Result<(), ValidationError> {
    target_url("url", &spec.url)?;
    if spec.ttl_ms < 1_000 {
        return Err(err("ttl_ms", "must be at least 1000"));
    }
    Ok(())
}

/// See [`CertificateSpec`]: the PEM blocks must parse (whether the key fits the certificate is
/// checked when the proxy loads it).
pub fn certificate(spec: &CertificateSpec) -> Result<(), ValidationError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(spec.cert.as_bytes()).collect();
    match certs {
        Ok(c) if !c.is_empty() => {}
        _ => {
            return Err(err(
                "cert",
                "must be one or more PEM certificates (-----BEGIN CERTIFICATE-----)",
            ));
        }
    }
    if PrivateKeyDer::from_pem_slice(spec.key.as_bytes()).is_err() {
        return Err(err(
            "key",
            "must be a PEM private key (PKCS#8, PKCS#1 or SEC1)",
        ));
    }
    if spec.snis.is_empty() {
        return Err(err("snis", "must list at least one server name"));
    }
    hosts("snis", &spec.snis)?;
    Ok(())
}

/// See [`ConsumerSpec`].
pub fn consumer(spec: &ConsumerSpec) -> Result<(), ValidationError> {
    if let Some(id) = &spec.custom_id
        && (id.is_empty() || id.len() > 256)
    {
        return Err(err("custom_id", "must be 1 to 256 characters long"));
    }
    team("team", spec.team.as_deref())?;
    tags("tags", &spec.tags)?;
    spec.ai_limits.validate("ai_limits")?;
    crate::policy::validate_consumer(spec)
}

/// See [`ProviderConfig`]. Whether models name existing providers is the state machine's
/// rule.
pub fn ai_provider(spec: &ProviderConfig) -> Result<(), ValidationError> {
    let url = spec.base_url.as_str();
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
        return Err(err(
            "base_url",
            "must be an absolute http:// or https:// URL, e.g. https://api.openai.com/v1",
        ));
    }
    if spec.timeout_ms == 0 {
        return Err(err("timeout_ms", "must be at least 1"));
    }
    if spec.stream_idle_timeout_ms == 0 {
        return Err(err("stream_idle_timeout_ms", "must be at least 1"));
    }
    if spec.api_key.as_ref().is_some_and(String::is_empty) {
        return Err(err(
            "api_key",
            "must not be empty; leave it out for keyless servers",
        ));
    }
    Ok(())
}

/// See [`ModelConfig`].
pub fn ai_model(spec: &ModelConfig) -> Result<(), ValidationError> {
    team("team", spec.team.as_deref())?;
    if spec.deployments.is_empty() {
        return Err(err("deployments", "must list at least one deployment"));
    }
    for (i, d) in spec.deployments.iter().enumerate() {
        name(&format!("deployments[{i}].provider"), &d.provider)?;
        if d.model.is_empty() {
            return Err(err(format!("deployments[{i}].model"), "must not be empty"));
        }
    }
    if spec.deployments.iter().all(|d| d.weight == 0) {
        return Err(err(
            "deployments",
            "at least one deployment needs a weight above 0",
        ));
    }
    if let Some(cache) = &spec.cache {
        if cache.ttl_s == 0 || cache.ttl_s > MAX_CACHE_TTL_S {
            return Err(err(
                "cache.ttl_s",
                format!("must be from 1 to {MAX_CACHE_TTL_S} seconds"),
            ));
        }
        match (cache.max_entries, cache.max_bytes) {
            (Some(_), Some(_)) => {
                return Err(err("cache", "give max_entries or max_bytes, not both"));
            }
            (Some(0), _) => return Err(err("cache.max_entries", "must be at least 1")),
            (_, Some(0)) => return Err(err("cache.max_bytes", "must be at least 1")),
            _ => {}
        }
    }
    Ok(())
}

/// Longest time a cached AI answer may be served: a day.
pub const MAX_CACHE_TTL_S: u64 = 86_400;

/// See [`RateLimitSpec`].
pub fn rate_limit(spec: &RateLimitSpec) -> Result<(), ValidationError> {
    if spec.limit == 0 {
        return Err(err("limit", "must be at least 1"));
    }
    team("team", spec.team.as_deref())
}

/// See [`StoredKey`]: keys are made by the server, so this guards against a malformed proposal.
pub fn key(spec: &StoredKey) -> Result<(), ValidationError> {
    name("consumer", &spec.consumer)?;
    spec.ai_limits.validate("ai_limits")?;
    sha256_hex("hash", &spec.hash)
}

/// A stored secret's digest: hex SHA-256.
fn sha256_hex(field: &str, hash: &str) -> Result<(), ValidationError> {
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(err(field, "must be 64 hex digits"));
    }
    Ok(())
}

/// See [`StoredToken`]: tokens are made by the server, so this guards against a malformed
/// proposal.
pub fn token(spec: &StoredToken) -> Result<(), ValidationError> {
    token_team(spec.role, spec.team.as_deref())?;
    sha256_hex("hash", &spec.hash)
}

/// A team role needs a team, a cluster role takes none.
pub fn token_team(role: TokenRole, team: Option<&str>) -> Result<(), ValidationError> {
    match (role.is_team_role(), team) {
        (true, None) => Err(err(
            "team",
            format!(
                "role {} is a team role: name the team (owner, developer and viewer tokens belong to one)",
                role.as_str()
            ),
        )),
        (false, Some(_)) => Err(err(
            "team",
            format!(
                "role {} is a cluster role and belongs to no team; leave team out or use owner, developer or viewer",
                role.as_str()
            ),
        )),
        (_, team) => self::team("team", team),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Target;

    fn svc(url: &str) -> ServiceSpec {
        ServiceSpec {
            targets: vec![Target {
                url: url.into(),
                weight: 1,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn target_urls() {
        assert!(service(&svc("http://127.0.0.1:9000")).is_ok());
        assert!(service(&svc("http://upstream/base")).is_ok());
        assert_eq!(
            service(&svc("ftp://x")).unwrap_err().field,
            "targets[0].url"
        );
        assert!(service(&svc("http://:80")).is_err());
        assert!(service(&svc("http://h:99999")).is_err());
        assert!(service(&svc("http://")).is_err());
    }

    #[test]
    fn names() {
        assert!(name("n", "svc-1.v2").is_ok());
        assert!(name("n", "").is_err());
        assert!(name("n", "a/b").is_err());
        assert!(name("n", &"x".repeat(129)).is_err());
        for unreadable in [".", "..", "~"] {
            assert!(name("n", unreadable).is_err(), "{unreadable}");
        }
        assert!(name("n", "...").is_ok());
        assert!(name("n", ".hidden").is_ok());
    }

    #[test]
    fn routes() {
        let mut r = RouteSpec {
            service: "s".into(),
            paths: vec!["/api".into()],
            hosts: vec!["*.example.com".into()],
            methods: vec!["GET".into()],
            strip_path: false,
            ..Default::default()
        };
        assert!(route(&r).is_ok());
        r.methods = vec!["get".into()];
        assert_eq!(route(&r).unwrap_err().field, "methods[0]");
        r.methods.clear();
        r.paths = vec!["api".into()];
        assert_eq!(route(&r).unwrap_err().field, "paths[0]");
        for never_matched in ["/a/../b", "//a", "/a/./b", "=/%7euser", "/a%2fb", "/.."] {
            r.paths = vec!["/ok".into(), never_matched.into()];
            assert_eq!(route(&r).unwrap_err().field, "paths[1]", "{never_matched}");
        }
        r.paths = vec!["/a/".into(), "=/sp%20ace".into(), "~^/a/../b$".into()];
        assert!(route(&r).is_ok());
    }
}
