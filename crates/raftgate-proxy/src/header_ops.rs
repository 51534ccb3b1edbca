//! A route's header changes ([`raftgate_model::HeaderOps`]) compiled once per router, so that
//! applying them to a request or response parses nothing and allocates only what the header map
//! itself needs.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use tracing::warn;

use crate::forward::is_hop_by_hop_name;

/// Compiled header changes, applied in the order remove, set, add.
#[derive(Debug, Default)]
pub(crate) struct HeaderOps {
    remove: Box<[HeaderName]>,
    set: Box<[(HeaderName, HeaderValue)]>,
    add: Box<[(HeaderName, HeaderValue)]>,
}

impl HeaderOps {
    /// Compiles `spec` for route `route`. Names the proxy must control (hop-by-hop headers and
    /// `Content-Length`, which frame the message) and unusable names or values are logged and
    /// skipped; validation normally refuses the latter.
    pub(crate) fn compile(route: &str, spec: &raftgate_model::HeaderOps) -> HeaderOps {
        let name = |n: &str| {
            let parsed = HeaderName::from_bytes(n.as_bytes()).ok();
            match parsed {
                Some(name) if !is_hop_by_hop_name(&name) && name != header::CONTENT_LENGTH => {
                    Some(name)
                }
                _ => {
                    warn!(
                        route,
                        header = n,
                        "a route cannot change this header (invalid, hop-by-hop or Content-Length); ignored"
                    );
                    None
                }
            }
        };
        let pairs = |map: &std::collections::BTreeMap<String, String>| {
            map.iter()
                .filter_map(|(n, v)| {
                    let value = HeaderValue::from_str(v).ok().or_else(|| {
                        warn!(route, header = %n, "header value is not valid; ignored");
                        None
                    })?;
                    Some((name(n)?, value))
                })
                .collect()
        };
        HeaderOps {
            remove: spec.remove.iter().filter_map(|n| name(n)).collect(),
            set: pairs(&spec.set),
            add: pairs(&spec.add),
        }
    }

    /// Whether applying these changes would do nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// Removes, then sets (replacing every value), then adds (keeping existing values).
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn remove_then_set_then_add() {
        let spec = raftgate_model::HeaderOps {
            remove: vec!["X-Drop".into(), "x-set".into(), "Transfer-Encoding".into()],
            set: BTreeMap::from([
                ("x-set".into(), "new".into()),
                ("content-length".into(), "1".into()),
                ("x-bad".into(), "a\nb".into()),
            ]),
            add: BTreeMap::from([
                ("x-add".into(), "2".into()),
                ("X-Set".into(), "more".into()),
            ]),
        };
        let ops = HeaderOps::compile("r", &spec);
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-drop", "1"),
            ("x-set", "old"),
            ("x-set", "older"),
            ("x-add", "1"),
            ("transfer-encoding", "chunked"),
            ("content-length", "9"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        ops.apply(&mut h);
        let all =
            |n: &str| -> Vec<&str> { h.get_all(n).iter().map(|v| v.to_str().unwrap()).collect() };
        assert!(all("x-drop").is_empty());
        assert_eq!(all("x-set"), ["new", "more"]);
        assert_eq!(all("x-add"), ["1", "2"]);
        // Framing headers are the proxy's: neither removed nor set by a route.
        assert_eq!(all("transfer-encoding"), ["chunked"]);
        assert_eq!(all("content-length"), ["9"]);
        assert!(all("x-bad").is_empty());
        assert!(!ops.is_empty());
        assert!(HeaderOps::default().is_empty());
    }
}
