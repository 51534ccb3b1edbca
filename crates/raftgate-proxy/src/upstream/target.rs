//! Target URLs, parsed once when a service's pool is built.

use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use http::HeaderValue;
use http::uri::{Authority, PathAndQuery, Uri};

/// A parsed `http://host[:port][/base]` target URL.
#[derive(Debug, Clone)]
pub(crate) struct TargetUrl {
    /// The URL as configured, for logs and the health view.
    pub(crate) url: Arc<str>,
    /// Host name or IP literal, without IPv6 brackets.
    pub(crate) host: Box<str>,
    /// Port, 80 when the URL has none.
    pub(crate) port: u16,
    /// The address when the host is an IP literal; `None` for a DNS name.
    pub(crate) ip: Option<IpAddr>,
    /// `Host` header sent upstream: the URL's authority.
    pub(crate) host_header: HeaderValue,
    /// Path prepended to the forwarded path, without a trailing `/`; empty for none.
    pub(crate) base_path: Arc<str>,
}

impl TargetUrl {
    /// Parses `url`; `None` when it is not of the form `http://host[:port][/path]` (validation
    /// refuses such URLs before they are stored).
    pub(crate) fn parse(url: &str) -> Option<TargetUrl> {
        let rest = url.strip_prefix("http://")?;
        let (authority, base) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let parsed = Authority::from_str(authority).ok()?;
        let host = parsed.host();
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if bare.is_empty() {
            return None;
        }
        Some(TargetUrl {
            url: url.into(),
            ip: bare.parse().ok(),
            host: bare.into(),
            port: parsed.port_u16().unwrap_or(80),
            host_header: HeaderValue::from_str(parsed.as_str()).ok()?,
            base_path: base.trim_end_matches('/').into(),
        })
    }
}

/// What to send to one resolved address of a target (the address itself is the endpoint's).
#[derive(Debug)]
pub(crate) struct Destination {
    host_header: HeaderValue,
    base_path: Arc<str>,
}

impl Destination {
    /// The destination of `target`.
    pub(crate) fn new(target: &TargetUrl) -> Destination {
        Destination {
            host_header: target.host_header.clone(),
            base_path: target.base_path.clone(),
        }
    }

    /// The `Host` header value to send: the target URL's authority, also when it was resolved.
    pub(crate) fn host_header(&self) -> &HeaderValue {
        &self.host_header
    }

    /// The origin-form URI (`/path?query`) for sending a request for `uri` (origin-form, or
    /// absolute-form whose authority is ignored) here: the target's base path prepended, the
    /// query kept.
    pub(crate) fn upstream_uri(&self, uri: &Uri) -> Result<Uri, http::Error> {
        let path_and_query = if self.base_path.is_empty() {
            // The common case reuses the original (reference-counted) bytes.
            match uri.path_and_query() {
                Some(pq) if pq.as_str().starts_with('/') => pq.clone(),
                _ => join("", uri.path(), uri.query())?,
            }
        } else {
            join(&self.base_path, uri.path(), uri.query())?
        };
        Ok(Uri::from(path_and_query))
    }
}

/// `original` with its path replaced by `path` (a route's rewrite or strip), the query kept;
/// in origin-form, ready for [`Destination::upstream_uri`].
pub(crate) fn rewrite_path(original: &Uri, path: &str) -> Result<Uri, http::Error> {
    Ok(Uri::from(join("", path, original.query())?))
}

/// `base` + `path` (with a `/` between when `path` lacks one) + `?query`.
fn join(base: &str, path: &str, query: Option<&str>) -> Result<PathAndQuery, http::Error> {
    let mut s = String::with_capacity(base.len() + path.len() + 2 + query.map_or(0, str::len));
    s.push_str(base);
    if !path.starts_with('/') {
        s.push('/');
    }
    s.push_str(path);
    if let Some(q) = query {
        s.push('?');
        s.push_str(q);
    }
    Ok(PathAndQuery::try_from(s)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn destination(url: &str) -> Destination {
        Destination::new(&TargetUrl::parse(url).unwrap())
    }

    #[test]
    fn parses_hosts_ports_and_base_paths() {
        let t = TargetUrl::parse("http://10.0.0.1:8080/base/").unwrap();
        assert_eq!(
            (&*t.host, t.port, t.ip, &*t.base_path),
            ("10.0.0.1", 8080, Some("10.0.0.1".parse().unwrap()), "/base")
        );
        let t = TargetUrl::parse("http://Up.Example:81").unwrap();
        assert_eq!((&*t.host, t.port, t.ip), ("Up.Example", 81, None));
        assert_eq!(t.host_header, "Up.Example:81");
        let t = TargetUrl::parse("http://[::1]:9000").unwrap();
        assert_eq!((t.ip, t.port), (Some("::1".parse().unwrap()), 9000));
        assert_eq!(TargetUrl::parse("http://localhost").unwrap().port, 80);
        assert!(TargetUrl::parse("https://x").is_none());
        assert!(TargetUrl::parse("http://a b").is_none());
        assert!(TargetUrl::parse("http://:80").is_none());
    }

    #[test]
    fn upstream_uris() {
        let d = destination("http://up.example:8080/base/");
        let uri: Uri = "/api/users?x=1".parse().unwrap();
        let upstream = |d: &Destination, uri: &Uri| d.upstream_uri(uri).unwrap().to_string();
        assert_eq!(
            upstream(&d, &rewrite_path(&uri, "/users").unwrap()),
            "/base/users?x=1"
        );
        assert_eq!(d.host_header(), "up.example:8080");
        assert_eq!(
            upstream(&d, &rewrite_path(&"/api".parse().unwrap(), "").unwrap()),
            "/base/"
        );
        let d = destination("http://up:80");
        assert_eq!(d.host_header(), "up:80");
        assert_eq!(
            upstream(&d, &rewrite_path(&"/api".parse().unwrap(), "").unwrap()),
            "/"
        );
        assert_eq!(
            upstream(
                &d,
                &rewrite_path(&"/api/?q".parse().unwrap(), "v2").unwrap()
            ),
            "/v2?q"
        );
        assert_eq!(upstream(&d, &uri), "/api/users?x=1");
        assert_eq!(
            upstream(&d, &"http://client.example/a?b".parse().unwrap()),
            "/a?b"
        );
    }
}
