//! The web console, served by every node's admin API at `/ui/`.
//!
//! It is plain HTML, CSS and JavaScript modules kept in `assets/` and embedded in the binary, so
//! one binary still serves everything and there is no UI server to run. The build script names
//! each module and stylesheet by a hash of its content and compresses every file once; here
//! they are only looked up and sent, gzip-compressed when the browser accepts it, with an
//! `ETag`. Hashed files are cached for a year (`immutable`); `index.html`, which names them, is
//! revalidated on every load (`no-cache`), so a new build reaches browsers at once.
//!
//! The files hold no data: the console reads and writes everything through the public admin
//! API of the node that served it, with the admin token the user signs in with. So
//! [`is_public`] lets the admin API serve exactly these files without a token, and nothing else.

#![warn(missing_docs)]

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use raftgate_model::api::ErrorBody;

/// Where the console is mounted on the admin API.
pub const MOUNT: &str = "/ui/";

/// The policy every console answer carries: scripts, styles and API calls from this origin only,
/// no inline script or style, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'self'";

/// How long a content-named file may be cached: a year, never revalidated.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// One embedded file.
struct Asset {
    /// Its name under [`MOUNT`]; empty for `index.html`.
    name: &'static str,
    content_type: &'static str,
    raw: &'static [u8],
    gzip: &'static [u8],
    /// A digest of `raw`, the base of both representations' `ETag`.
    tag: &'static str,
    /// Named by its content, so cached for good.
    immutable: bool,
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The console's routes: `/ui` (redirected to `/ui/`), `/ui/` (the page) and its files.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ui", get(|| async { secured(Redirect::permanent(MOUNT)) }))
        .route("/ui/", get(|headers: HeaderMap| async move { serve("", &headers) }))
        .route(
            "/ui/{file}",
            get(|Path(file): Path<String>, headers: HeaderMap| async move {
                serve(&file, &headers)
            }),
        )
}

/// Whether `method` `path` asks for one of the console's files (or the redirect to them):
/// what the admin API serves without a token. Anything else under `/ui/` still needs one.
pub fn is_public(method: &Method, path: &str) -> bool {
    if !(method == Method::GET || method == Method::HEAD) {
        return false;
    }
    path == "/ui"
        || path
            .strip_prefix(MOUNT)
            .is_some_and(|name| find(name).is_some())
}

fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

/// Adds the headers every console answer carries.
fn secured(response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// The file `name`, in the encoding `headers` accept, or 304 when the browser has it already.
fn serve(name: &str, headers: &HeaderMap) -> Response {
    let Some(asset) = find(name) else {
        // The admin API's error shape, like every other answer of the admin port.
        return secured((
            StatusCode::NOT_FOUND,
            axum::Json(ErrorBody {
                error: "not_found".into(),
                message: format!("no console file '{name}'; open /ui/"),
                field: None,
            }),
        ));
    };
    let gzip = accepts_gzip(headers);
    let etag = if gzip {
        format!("\"{}-gzip\"", asset.tag)
    } else {
        format!("\"{}\"", asset.tag)
    };
    let cache = if asset.immutable {
        IMMUTABLE
    } else {
        "no-cache"
    };
    let mut response = if has_current(headers, asset.tag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let body = if gzip { asset.gzip } else { asset.raw };
        let mut response = (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            body,
        )
            .into_response();
        if gzip {
            response
                .headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        response
    };
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    secured(response)
}

/// Whether `Accept-Encoding` takes gzip (or `*`) with a weight above zero.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

/// Whether `If-None-Match` names either representation of the asset tagged `tag` (or `*`).
fn has_current(headers: &HeaderMap, tag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/").trim_matches('"'))
        .any(|t| t == "*" || t == tag || t.strip_suffix("-gzip") == Some(tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn get(response: &Response, name: header::HeaderName) -> &str {
        response
            .headers()
            .get(&name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or_else(|| panic!("no {name} header"))
    }

    fn script() -> &'static Asset {
        ASSETS
            .iter()
            .find(|a| a.name.starts_with("app.") && a.name.ends_with(".js"))
            .expect("app.js is embedded under a hashed name")
    }

    #[test]
    fn the_index_names_every_hashed_file_and_is_revalidated() {
        let index = find("").expect("the index is embedded");
        let html = std::str::from_utf8(index.raw).unwrap();
        for asset in ASSETS.iter().filter(|a| a.immutable) {
            assert!(
                html.contains(&format!("\"{}\"", asset.name)),
                "index.html does not name {}",
                asset.name
            );
        }
        let response = serve("", &HeaderMap::new());
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(get(&response, header::CACHE_CONTROL), "no-cache");
        assert_eq!(
            get(&response, header::CONTENT_TYPE),
            "text/html; charset=utf-8"
        );
    }

    #[test]
    fn modules_import_each_other_by_hashed_name() {
        let app = std::str::from_utf8(script().raw).unwrap();
        let imports: Vec<&str> = app
            .lines()
            .filter(|l| l.starts_with("import ") || l.starts_with("} from "))
            .collect();
        assert!(!imports.is_empty(), "app.js imports the pages");
        for line in imports {
            let name = line.split('\'').nth(1).unwrap().trim_start_matches("./");
            assert!(find(name).is_some(), "{line}: {name} is not embedded");
        }
    }

    #[test]
    fn gzip_is_sent_only_when_accepted() {
        let asset = script();
        let plain = serve(asset.name, &HeaderMap::new());
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        for accept in ["gzip", "br, gzip;q=0.5", "*", "deflate, GZIP"] {
            let response = serve(asset.name, &headers(&[(header::ACCEPT_ENCODING, accept)]));
            assert_eq!(get(&response, header::CONTENT_ENCODING), "gzip", "{accept}");
            assert_eq!(get(&response, header::VARY), "Accept-Encoding");
        }
        for accept in ["br", "gzip;q=0", "identity"] {
            let response = serve(asset.name, &headers(&[(header::ACCEPT_ENCODING, accept)]));
            assert!(
                response.headers().get(header::CONTENT_ENCODING).is_none(),
                "{accept}"
            );
        }
        assert!(asset.gzip.len() < asset.raw.len());
    }

    #[test]
    fn hashed_files_are_immutable_and_revalidate_by_etag() {
        let asset = script();
        let gz = headers(&[(header::ACCEPT_ENCODING, "gzip")]);
        let response = serve(asset.name, &gz);
        assert_eq!(get(&response, header::CACHE_CONTROL), IMMUTABLE);
        let etag = get(&response, header::ETAG).to_string();
        let again = serve(
            asset.name,
            &headers(&[
                (header::ACCEPT_ENCODING, "gzip"),
                (header::IF_NONE_MATCH, &etag),
            ]),
        );
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(get(&again, header::ETAG), etag);
        let stale = serve(asset.name, &headers(&[(header::IF_NONE_MATCH, "\"0123\"")]));
        assert_eq!(stale.status(), StatusCode::OK);
    }

    #[test]
    fn every_answer_carries_the_policy() {
        for response in [
            serve("", &HeaderMap::new()),
            serve(script().name, &HeaderMap::new()),
            serve("missing.js", &HeaderMap::new()),
        ] {
            let csp = get(&response, header::CONTENT_SECURITY_POLICY);
            assert_eq!(csp, CONTENT_SECURITY_POLICY);
            assert!(!csp.contains("unsafe-inline"));
            assert_eq!(get(&response, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
        }
        let missing = serve("missing.js", &HeaderMap::new());
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            missing.headers()[header::CONTENT_TYPE],
            "application/json",
            "errors are JSON, as everywhere on the admin port"
        );
    }

    #[test]
    fn only_the_files_are_public() {
        assert!(is_public(&Method::GET, "/ui"));
        assert!(is_public(&Method::GET, "/ui/"));
        assert!(is_public(&Method::HEAD, &format!("/ui/{}", script().name)));
        assert!(!is_public(&Method::POST, "/ui/"));
        assert!(!is_public(&Method::GET, "/ui/missing.js"));
        assert!(!is_public(&Method::GET, "/ui/index.html"));
        assert!(!is_public(&Method::GET, "/services"));
        assert!(!is_public(&Method::GET, "/uix"));
        assert!(!is_public(&Method::GET, "/ui//services"));
    }
}
