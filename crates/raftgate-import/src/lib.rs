//! OpenAPI import: an OpenAPI 3.0 or 3.1 document, JSON or YAML, becomes the routes of an API
//! version — one route per path and method, the one place this translation is made.
//!
//! The version's `base_path` is the gateway's prefix and the document's paths are the
//! upstream's: a request for `{base_path}/users/42` matches the route of `/users/{id}` and
//! reaches the version's service as `/users/42` (the query kept). So:
//! - a plain path `/users` becomes the exact match `={base_path}/users`, rewritten to `/users`;
//! - a template `/users/{id}` becomes the anchored regular expression
//!   `~^{base_path}(/users/[^/]+)$` (a parameter matches one segment, or the part of one it
//!   stands for), rewritten to the capture `${1}`; its priority is its number of segments
//!   without a parameter, so `/users/{id}/posts` wins over `/users/{id}/{tab}` (and, as the
//!   router tries exact paths first, `/users/me` over `/users/{id}`);
//! - `methods` is the operation's method, `service` the version's backend service.
//!
//! Characters a client would percent-encode in a path (a space, `|`, non-ASCII…) are matched
//! encoded, in the upper-case form the proxy normalises requests to. Route names are
//! `{api}-{version}-{method}-{slug of the path}`; one that would be longer than a name may be,
//! or the same as another operation's (`/users/{id}` and `/users/id`), is cut and ends with 8 hex
//! digits of a hash of its method and path instead. The same document always gives the same
//! routes, in the order of the document's paths and methods.
//!
//! What routes do not need — servers, parameters, schemas, responses — is not read. A problem
//! is reported at the document path it is found at, e.g. `paths./users/{id}.get`.

mod document;

use raftgate_model::catalog::{ApiVersionSpec, Backend};
use raftgate_model::validate::{self, MAX_NAME_LEN, ValidationError};
use raftgate_model::{Kind, RouteSpec};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

pub use document::Format;

/// Most operations one document may declare: each is a route every node matches requests
/// against, and a larger API is better split into several.
pub const MAX_OPERATIONS: usize = 2000;

/// The fields of a path item that are operations, as the document spells them.
const OPERATIONS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The other fields of a path item, which routes do not need.
const IGNORED: [&str; 4] = ["summary", "description", "servers", "parameters"];

/// Why a document cannot be imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// The body is not text.
    #[error("the document is not UTF-8 text; save it as UTF-8")]
    NotText,
    /// The body does not parse in its format.
    #[error(
        "the document is not valid {format}: {message} (send YAML as application/yaml, JSON as application/json)"
    )]
    Syntax {
        /// The format it was read as.
        format: &'static str,
        /// What the parser said, with the line and column.
        message: String,
    },
    /// It parses, but is not a mapping of fields.
    #[error("the document must be an object of fields (openapi, paths, ...), not a single value")]
    NotAMapping,
    /// A field of the document is wrong; `field` is its document path.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The version's traffic goes somewhere routes cannot send it.
    #[error(
        "API version '{api}/{version}' is served by {kind} '{name}', and imported routes go to a service: set its backend to {{\"service\": name}} first"
    )]
    NotAService {
        /// The API.
        api: String,
        /// The version.
        version: String,
        /// The kind of its backend.
        kind: Kind,
        /// The backend's name.
        name: String,
    },
}

/// One route made from one operation of the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedRoute {
    /// The route's name.
    pub name: String,
    /// Where in the document its operation is, e.g. `paths./users/{id}.get`: what an error
    /// about the route names.
    pub operation: String,
    /// The route, without its owner (the state machine makes it the version's).
    pub spec: RouteSpec,
}

/// A document ready to be stored with the routes made from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    /// The document, as uploaded.
    pub document: String,
    /// How it is written.
    pub format: Format,
    /// Its routes, in the order of its paths and methods.
    pub routes: Vec<ImportedRoute>,
}

/// Reads `body` (of `content_type`, when the request said) and makes the routes of version
/// `version` of API `api`, stored as `spec`.
pub fn import(
    api: &str,
    version: &str,
    spec: &ApiVersionSpec,
    body: &[u8],
    content_type: Option<&str>,
) -> Result<Import, ImportError> {
    let text = std::str::from_utf8(body).map_err(|_| ImportError::NotText)?;
    let format = Format::of(content_type, text);
    let doc = document::parse(format, text)?;
    let routes = routes(api, version, spec, &doc)?;
    Ok(Import {
        document: text.to_string(),
        format,
        routes,
    })
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ImportError {
    ImportError::Invalid(ValidationError {
        field: field.into(),
        message: message.into(),
    })
}

/// The routes of the parsed document `doc` for version `version` of `api`, stored as `spec`.
pub fn routes(
    api: &str,
    version: &str,
    spec: &ApiVersionSpec,
    doc: &Value,
) -> Result<Vec<ImportedRoute>, ImportError> {
    let Backend::Service(service) = &spec.backend else {
        let (kind, name) = spec.backend.target();
        return Err(ImportError::NotAService {
            api: api.to_string(),
            version: version.to_string(),
            kind,
            name: name.to_string(),
        });
    };
    let doc = doc.as_object().ok_or(ImportError::NotAMapping)?;
    check_version(doc)?;
    let prefix = spec.base_path.trim_end_matches('/');
    let mut operations = Vec::new();
    for (path, item) in paths(doc)? {
        let at = format!("paths.{path}");
        let route = route_of(prefix, path, &at, service)?;
        let item = item
            .as_object()
            .ok_or_else(|| invalid(&at, "must be a path item: an object of operations"))?;
        for (field, operation) in item {
            let at = format!("{at}.{field}");
            if OPERATIONS.contains(&field.as_str()) {
                if !operation.is_object() {
                    return Err(invalid(
                        at,
                        "must be an operation object (with responses, parameters, ...)",
                    ));
                }
                let spec = RouteSpec {
                    methods: vec![field.to_ascii_uppercase()],
                    ..route.clone()
                };
                validate::route(&spec)
                    .map_err(|e| invalid(&at, format!("makes a route that is not valid: {e}")))?;
                operations.push((field.as_str(), path.as_str(), at, spec));
            } else if field == "$ref" {
                return Err(invalid(
                    at,
                    "path items by reference are not imported; write the operations in place",
                ));
            } else if !IGNORED.contains(&field.as_str()) && !field.starts_with("x-") {
                return Err(invalid(
                    at,
                    format!(
                        "is not a field of a path item; its operations are {}",
                        OPERATIONS.join(", ")
                    ),
                ));
            }
        }
    }
    if operations.is_empty() {
        return Err(invalid(
            "paths",
            "declares no operation (get, post, ... under a path); an import makes a route of each",
        ));
    }
    if operations.len() > MAX_OPERATIONS {
        return Err(invalid(
            "paths",
            format!(
                "declares {} operations, more than the {MAX_OPERATIONS} one version may have; split the API",
                operations.len()
            ),
        ));
    }
    let candidates: Vec<String> = operations
        .iter()
        .map(|(method, path, ..)| format!("{api}-{version}-{method}-{}", slug(path)))
        .collect();
    let mut routes: Vec<ImportedRoute> = Vec::with_capacity(operations.len());
    for (i, (method, path, operation, spec)) in operations.into_iter().enumerate() {
        let candidate = &candidates[i];
        let unique = candidates.iter().filter(|c| *c == candidate).count() == 1;
        let name = if unique && candidate.len() <= MAX_NAME_LEN {
            candidate.clone()
        } else {
            hashed(candidate, method, path)
        };
        validate::name(&operation, &name)?;
        if let Some(other) = routes.iter().find(|r| r.name == name) {
            return Err(invalid(
                operation,
                format!(
                    "makes route '{name}', as {} does; change one of the paths",
                    other.operation
                ),
            ));
        }
        routes.push(ImportedRoute {
            name,
            operation,
            spec,
        });
    }
    Ok(routes)
}

/// Checks that `doc` is an OpenAPI 3.0 or 3.1 document.
fn check_version(doc: &Map<String, Value>) -> Result<(), ImportError> {
    let supported = "only OpenAPI 3.0.x and 3.1.x documents are imported";
    match doc.get("openapi") {
        Some(Value::String(v)) => {
            let patch = v.strip_prefix("3.0.").or_else(|| v.strip_prefix("3.1."));
            if patch.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) {
                Ok(())
            } else {
                Err(invalid("openapi", format!("is \"{v}\"; {supported}")))
            }
        }
        Some(Value::Number(n)) => Err(invalid(
            "openapi",
            format!("is the number {n}; write the version as a string, e.g. \"3.1.0\""),
        )),
        Some(other) => Err(invalid(
            "openapi",
            format!("is {other}; {supported}, e.g. \"3.1.0\""),
        )),
        None if doc.contains_key("swagger") => Err(invalid(
            "openapi",
            format!(
                "is missing: this is a Swagger 2.0 document, and {supported}; convert it first"
            ),
        )),
        None => Err(invalid(
            "openapi",
            "is missing; the document must say its version, e.g. \"openapi\": \"3.1.0\"",
        )),
    }
}

/// The document's paths (extensions left out).
fn paths(doc: &Map<String, Value>) -> Result<Vec<(&String, &Value)>, ImportError> {
    let paths = doc
        .get("paths")
        .ok_or_else(|| invalid("paths", "is missing; an import makes routes of the paths"))?
        .as_object()
        .ok_or_else(|| {
            invalid(
                "paths",
                "must be an object of paths, e.g. {\"/users\": {...}}",
            )
        })?;
    Ok(paths.iter().filter(|(p, _)| !p.starts_with("x-")).collect())
}

/// A part of a path template: text, or a `{parameter}`.
#[derive(Debug, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    Parameter,
}

/// Splits the path template `path` at its parameters.
fn template(path: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut rest = path;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err("has a } without its {".into());
        }
        if open > 0 {
            pieces.push(Piece::Text(&rest[..open]));
        }
        let after = &rest[open + 1..];
        match after.find(['{', '}', '/']) {
            Some(0) if after.starts_with('}') => return Err("has an empty parameter {}".into()),
            Some(close) if after[close..].starts_with('}') => {
                pieces.push(Piece::Parameter);
                rest = &after[close + 1..];
            }
            _ => {
                return Err(
                    "has a { without its } (a parameter name cannot hold {, } or /)".into(),
                );
            }
        }
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    Ok(pieces)
}

/// `text` as a client sends it: what is not allowed in a path segment (RFC 3986 `pchar`, `/`
/// and `%` kept) percent-encoded with upper-case digits, as the proxy keeps such escapes.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The route (all but its method) of the document path `path` (at `at`) under `prefix`.
fn route_of(prefix: &str, path: &str, at: &str, service: &str) -> Result<RouteSpec, ImportError> {
    if !path.starts_with('/') {
        return Err(invalid(at, "must start with /"));
    }
    let pieces = template(path).map_err(|e| invalid(at, e))?;
    // Requests are normalised before they are routed: only a normal path can ever match.
    let example: String = pieces
        .iter()
        .map(|p| match p {
            Piece::Text(t) => encode(t),
            Piece::Parameter => "x".into(),
        })
        .collect();
    validate::normal_path(at, &format!("{prefix}{example}"))?;
    let parameters = pieces.iter().filter(|p| **p == Piece::Parameter).count();
    let (matcher, rewrite, priority) = if parameters == 0 {
        let exact = encode(path);
        let rewrite = (!prefix.is_empty()).then(|| exact.clone());
        (format!("={prefix}{exact}"), rewrite, 0)
    } else {
        let pattern: String = pieces
            .iter()
            .map(|p| match p {
                Piece::Text(t) => regex::escape(&encode(t)),
                Piece::Parameter => "[^/]+".into(),
            })
            .collect();
        let literal_segments = path
            .split('/')
            .filter(|s| !s.is_empty() && !s.contains('{'))
            .count();
        let priority = i32::try_from(literal_segments).unwrap_or(i32::MAX);
        if prefix.is_empty() {
            (format!("~^{pattern}$"), None, priority)
        } else {
            let prefix = regex::escape(prefix);
            (
                format!("~^{prefix}({pattern})$"),
                Some("${1}".into()),
                priority,
            )
        }
    };
    Ok(RouteSpec {
        service: service.to_string(),
        paths: vec![matcher],
        priority,
        rewrite,
        ..RouteSpec::default()
    })
}

/// The letters, digits and `_` of `path`, each other run of characters one `-`: `/users/{id}`
/// is `users-id`; `/` is `root`.
fn slug(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    let slug = out.trim_end_matches('-');
    if slug.is_empty() {
        "root".into()
    } else {
        slug.into()
    }
}

/// `candidate` cut to leave room for `-` and 8 hex digits of the hash of `method path`, which
/// it then ends with: a name that fits and differs from those of other operations.
fn hashed(candidate: &str, method: &str, path: &str) -> String {
    let digest = Sha256::digest(format!("{method} {path}"));
    let suffix = hex::encode(&digest[..4]);
    let mut end = candidate.len().min(MAX_NAME_LEN - suffix.len() - 1);
    while !candidate.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}-{suffix}", candidate[..end].trim_end_matches('-'))
}

#[cfg(test)]
mod tests;
