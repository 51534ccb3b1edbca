//! Validation of user input, done before a command is proposed so that the log only carries
//! well-formed specs. Each error names the JSON field at fault.

use crate::resource::{ConsumerSpec, RateLimitSpec, RouteSpec, ServiceSpec, StoredKey};

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
    if spec.targets.is_empty() {
        return Err(err("targets", "must list at least one target"));
    }
    for (i, t) in spec.targets.iter().enumerate() {
        target_url(&format!("targets[{i}].url"), &t.url)?;
    }
    if spec.targets.iter().all(|t| t.weight == 0) {
        return Err(err("targets", "at least one target needs a weight above 0"));
    }
    Ok(())
}

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];

/// See [`RouteSpec`].
pub fn route(spec: &RouteSpec) -> Result<(), ValidationError> {
    name("service", &spec.service)?;
    for (i, p) in spec.paths.iter().enumerate() {
        if !p.starts_with('/') {
            return Err(err(format!("paths[{i}]"), "must start with /"));
        }
    }
    for (i, h) in spec.hosts.iter().enumerate() {
        let ok = !h.is_empty()
            && h.len() <= 253
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'*'));
        if !ok {
            return Err(err(
                format!("hosts[{i}]"),
                "must be a host name such as api.example.com",
            ));
        }
    }
    for (i, m) in spec.methods.iter().enumerate() {
        if !METHODS.contains(&m.as_str()) {
            return Err(err(
                format!("methods[{i}]"),
                format!("must be one of {}", METHODS.join(", ")),
            ));
        }
    }
    Ok(())
}

/// See [`ConsumerSpec`].
pub fn consumer(spec: &ConsumerSpec) -> Result<(), ValidationError> {
    if let Some(id) = &spec.custom_id
        && (id.is_empty() || id.len() > 256)
    {
        return Err(err("custom_id", "must be 1 to 256 characters long"));
    }
    Ok(())
}

/// See [`RateLimitSpec`].
pub fn rate_limit(spec: &RateLimitSpec) -> Result<(), ValidationError> {
    if spec.limit == 0 {
        return Err(err("limit", "must be at least 1"));
    }
    Ok(())
}

/// See [`StoredKey`]: keys are made by the server, so this guards against a malformed proposal.
pub fn key(spec: &StoredKey) -> Result<(), ValidationError> {
    name("consumer", &spec.consumer)?;
    if spec.hash.len() != 64 || !spec.hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(err("hash", "must be 64 hex digits"));
    }
    Ok(())
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
            lb: Default::default(),
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
    }

    #[test]
    fn routes() {
        let mut r = RouteSpec {
            service: "s".into(),
            paths: vec!["/api".into()],
            hosts: vec!["*.example.com".into()],
            methods: vec!["GET".into()],
            strip_path: false,
        };
        assert!(route(&r).is_ok());
        r.methods = vec!["get".into()];
        assert_eq!(route(&r).unwrap_err().field, "methods[0]");
        r.methods.clear();
        r.paths = vec!["api".into()];
        assert_eq!(route(&r).unwrap_err().field, "paths[0]");
    }
}
