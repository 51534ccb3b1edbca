//! Access rules that need no credentials store: client IP allow/deny, consumer ACLs and CORS.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use raftgate_model::policy::{AllowDeny, CorsPolicy, parse_cidr};
use tracing::warn;

use crate::auth::Consumer;

/// A CIDR block.
#[derive(Debug, Clone, Copy)]
struct Block {
    network: IpAddr,
    len: u8,
}

impl Block {
    fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket arrives as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// Compiled IP rules ([`Policies::ip`](raftgate_model::policy::Policies::ip)).
#[derive(Debug)]
pub struct IpRules {
    allow: Vec<Block>,
    deny: Vec<Block>,
}

impl IpRules {
    /// Compiles `policy`; entries that do not parse (validation prevents them) are skipped.
    pub fn compile(policy: &AllowDeny) -> IpRules {
        let blocks = |list: &[String]| {
            list.iter()
                .filter_map(|c| {
                    let parsed = parse_cidr(c).map(|(network, len)| Block { network, len });
                    if parsed.is_none() {
                        warn!(cidr = %c, "IP rule does not parse; skipped");
                    }
                    parsed
                })
                .collect()
        };
        IpRules {
            allow: blocks(&policy.allow),
            deny: blocks(&policy.deny),
        }
    }

    /// Whether `ip` may call.
    pub fn admits(&self, ip: IpAddr) -> bool {
        !self.deny.iter().any(|b| b.contains(ip))
            && (self.allow.is_empty() || self.allow.iter().any(|b| b.contains(ip)))
    }
}

/// Whether `consumer` passes `acl`: deny wins, then an empty allow list admits everyone.
pub fn acl_admits(acl: &AllowDeny, consumer: &Consumer) -> bool {
    let matches = |subject: &String| {
        **subject == *consumer.name || consumer.groups.iter().any(|g| g == subject)
    };
    !acl.deny.iter().any(matches) && (acl.allow.is_empty() || acl.allow.iter().any(matches))
}

/// Compiled [`CorsPolicy`].
#[derive(Debug)]
pub struct Cors {
    any_origin: bool,
    origins: Vec<HeaderValue>,
    methods: Option<HeaderValue>,
    headers: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    credentials: bool,
}

static ALLOW_ORIGIN: HeaderName = header::ACCESS_CONTROL_ALLOW_ORIGIN;

/// What CORS makes of a request.
#[derive(Debug)]
pub enum CorsVerdict {
    /// Not a cross-origin request, or an origin not allowed (the browser will block the
    /// answer): forward as is.
    Ignore,
    /// A preflight: answer it with this status and these headers, without forwarding.
    Preflight(StatusCode, HeaderMap),
    /// An allowed cross-origin request: forward it, and add these headers to the answer.
    Allow(HeaderMap),
}

impl Cors {
    /// Compiles `policy`.
    pub fn compile(policy: &CorsPolicy) -> Cors {
        let join = |list: &[String]| {
            (!list.is_empty())
                .then(|| HeaderValue::from_str(&list.join(", ")).ok())
                .flatten()
        };
        Cors {
            any_origin: policy.origins.iter().any(|o| o == "*"),
            origins: policy
                .origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect(),
            methods: join(&policy.methods),
            headers: join(&policy.headers),
            max_age: (policy.max_age_s > 0).then(|| HeaderValue::from(policy.max_age_s)),
            credentials: policy.credentials,
        }
    }

    /// Decides on a request with these `method` and `headers`.
    pub fn check(&self, method: &Method, headers: &HeaderMap) -> CorsVerdict {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return CorsVerdict::Ignore;
        };
        let allowed = self.any_origin || self.origins.iter().any(|o| o == origin);
        let preflight = method == Method::OPTIONS
            && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if !allowed {
            return if preflight {
                CorsVerdict::Preflight(StatusCode::FORBIDDEN, HeaderMap::new())
            } else {
                CorsVerdict::Ignore
            };
        }
        let mut out = HeaderMap::new();
        let origin_value = if self.any_origin && !self.credentials {
            HeaderValue::from_static("*")
        } else {
            out.insert(header::VARY, HeaderValue::from_static("Origin"));
            origin.clone()
        };
        out.insert(&ALLOW_ORIGIN, origin_value);
        if self.credentials {
            out.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if !preflight {
            return CorsVerdict::Allow(out);
        }
        let asked_method = headers.get(header::ACCESS_CONTROL_REQUEST_METHOD);
        let methods = self.methods.as_ref().or(asked_method);
        if let Some(m) = methods {
            out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, m.clone());
        }
        let asked_headers = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS);
        if let Some(h) = self.headers.as_ref().or(asked_headers) {
            out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, h.clone());
        }
        if let Some(age) = &self.max_age {
            out.insert(header::ACCESS_CONTROL_MAX_AGE, age.clone());
        }
        CorsVerdict::Preflight(StatusCode::NO_CONTENT, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn ip_rules() {
        let rules = IpRules::compile(&AllowDeny {
            allow: vec!["10.0.0.0/8".into(), "2001:db8::/32".into()],
            deny: vec!["10.1.2.3".into()],
        });
        assert!(rules.admits("10.9.9.9".parse().unwrap()));
        assert!(rules.admits("::ffff:10.9.9.9".parse().unwrap()));
        assert!(!rules.admits("10.1.2.3".parse().unwrap()));
        assert!(!rules.admits("11.0.0.1".parse().unwrap()));
        assert!(rules.admits("2001:db8::1".parse().unwrap()));
        let everyone = IpRules::compile(&AllowDeny {
            allow: vec![],
            deny: vec!["0.0.0.0/0".into()],
        });
        assert!(!everyone.admits("1.2.3.4".parse().unwrap()));
    }

    #[test]
    fn acls() {
        let c = Consumer {
            name: Arc::from("alice"),
            groups: vec!["gold".to_string()].into(),
            limits: Default::default(),
            ai_models: Default::default(),
            ai_limits: Default::default(),
            team: None,
        };
        let acl = |allow: &[&str], deny: &[&str]| AllowDeny {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
        };
        assert!(acl_admits(&acl(&["gold"], &[]), &c));
        assert!(acl_admits(&acl(&[], &[]), &c));
        assert!(!acl_admits(&acl(&["silver"], &[]), &c));
        assert!(!acl_admits(&acl(&["gold"], &["alice"]), &c));
    }

    #[test]
    fn cors_preflight_and_simple_requests() {
        let cors = Cors::compile(&CorsPolicy {
            origins: vec!["https://app.example".into()],
            max_age_s: 600,
            ..Default::default()
        });
        let mut h = HeaderMap::new();
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://app.example"),
        );
        h.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("PUT"),
        );
        match cors.check(&Method::OPTIONS, &h) {
            CorsVerdict::Preflight(StatusCode::NO_CONTENT, out) => {
                assert_eq!(out[&ALLOW_ORIGIN], "https://app.example");
                assert_eq!(out[header::ACCESS_CONTROL_ALLOW_METHODS], "PUT");
                assert_eq!(out[header::ACCESS_CONTROL_MAX_AGE], "600");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            cors.check(&Method::GET, &h),
            CorsVerdict::Allow(_)
        ));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(matches!(
            cors.check(&Method::OPTIONS, &h),
            CorsVerdict::Preflight(StatusCode::FORBIDDEN, _)
        ));
    }
}
