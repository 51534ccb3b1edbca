//! The admin API contract on a real single-node cluster: optimistic concurrency with `If-Match`,
//! refusal of bad input with the right status and error body, the admin token, API keys and the
//! OpenAPI document.

mod support;

use bytes::Bytes;
use http::header::{AUTHORIZATION, ETAG, IF_MATCH};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use raftgate_client::AdminClient;
use raftgate_model::api::ErrorBody;
use raftgate_model::{ConsumerSpec, Entity, RouteSpec, ServiceSpec};
use support::{Cluster, api_error, route, service};

/// Asserts a raw answer has `status` and a JSON [`ErrorBody`], and returns the body.
fn error_body(
    answer: &(StatusCode, HeaderMap, Bytes),
    status: StatusCode,
    what: &str,
) -> ErrorBody {
    let (got, _, body) = answer;
    let text = String::from_utf8_lossy(body);
    assert_eq!(*got, status, "{what}: status (body {text})");
    let decoded: ErrorBody = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{what}: body is not an ErrorBody ({e}): {text:?}"));
    assert!(
        !decoded.error.is_empty() && !decoded.message.is_empty(),
        "{what}: {decoded:?}"
    );
    decoded
}

fn headers(pairs: &[(http::HeaderName, &str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(name, value)| {
            (
                name.clone(),
                HeaderValue::from_str(value).expect("valid header value"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_guards_writes_and_deletes() {
    let (cluster, _) = Cluster::start(&[1], None).await;
    let c = cluster.client(1);

    let created = c
        .put("svc", &service("http://127.0.0.1:9001"), Some(0))
        .await
        .expect("If-Match: 0 creates a resource that does not exist");
    let body = api_error(
        c.put("svc", &service("http://127.0.0.1:9002"), Some(0))
            .await,
        StatusCode::PRECONDITION_FAILED,
    );
    assert!(!body.message.is_empty());

    let updated = c
        .put(
            "svc",
            &service("http://127.0.0.1:9002"),
            Some(created.version),
        )
        .await
        .expect("If-Match with the current version succeeds");
    assert!(updated.version > created.version);
    assert_eq!(updated.created_at, created.created_at);

    api_error(
        c.put(
            "svc",
            &service("http://127.0.0.1:9003"),
            Some(created.version),
        )
        .await,
        StatusCode::PRECONDITION_FAILED,
    );
    let current = c.get::<ServiceSpec>("svc").await.expect("GET svc");
    assert_eq!(current, updated, "refused writes change nothing");

    // The quoted ETag form is accepted too, and the answer carries the new ETag.
    let spec = serde_json::to_vec(&service("http://127.0.0.1:9004")).expect("encode spec");
    let answer = c
        .request(
            Method::PUT,
            "/services/svc",
            Some(spec),
            headers(&[(IF_MATCH, &format!("\"{}\"", updated.version))]),
        )
        .await
        .expect("PUT with a quoted If-Match");
    assert_eq!(
        answer.0,
        StatusCode::OK,
        "replacing answers 200: {answer:?}"
    );
    let replaced: Entity<ServiceSpec> = serde_json::from_slice(&answer.2).expect("entity body");
    assert_eq!(
        answer.1.get(ETAG).and_then(|v| v.to_str().ok()),
        Some(format!("\"{}\"", replaced.version).as_str()),
        "ETag of the replaced resource"
    );

    // A new resource answers 201.
    let spec = serde_json::to_vec(&service("http://127.0.0.1:9005")).expect("encode spec");
    let answer = c
        .request(Method::PUT, "/services/other", Some(spec), HeaderMap::new())
        .await
        .expect("PUT a new service");
    assert_eq!(
        answer.0,
        StatusCode::CREATED,
        "creating answers 201: {answer:?}"
    );

    api_error(
        c.delete::<ServiceSpec>("svc", Some(updated.version)).await,
        StatusCode::PRECONDITION_FAILED,
    );
    c.delete::<ServiceSpec>("svc", Some(replaced.version))
        .await
        .expect("DELETE with the current version");
    api_error(c.get::<ServiceSpec>("svc").await, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_the_documented_status() {
    let (cluster, _) = Cluster::start(&[1], None).await;
    let c = cluster.client(1);
    let put = |path: &'static str, body: Vec<u8>| async move {
        c.request(Method::PUT, path, Some(body), HeaderMap::new())
            .await
            .unwrap_or_else(|e| panic!("PUT {path}: {e}"))
    };

    let malformed = put("/services/bad", br#"{"targets": [{"url": "#.to_vec()).await;
    error_body(&malformed, StatusCode::BAD_REQUEST, "malformed JSON");

    let unknown = put(
        "/services/bad",
        br#"{"targets":[{"url":"http://127.0.0.1:9000","weight":1}],"lb":"round_robin","colour":"red"}"#
            .to_vec(),
    )
    .await;
    let body = error_body(&unknown, StatusCode::BAD_REQUEST, "unknown field");
    assert_eq!(
        body.field.as_deref(),
        Some("colour"),
        "unknown field is named: {body:?}"
    );

    let invalid = put(
        "/services/bad",
        br#"{"targets":[{"url":"ftp://127.0.0.1:9000"}]}"#.to_vec(),
    )
    .await;
    let body = error_body(&invalid, StatusCode::BAD_REQUEST, "invalid target URL");
    assert_eq!(body.field.as_deref(), Some("targets[0].url"), "{body:?}");

    // Just over the 1 MiB limit, as valid JSON padded with whitespace.
    let mut big = br#"{"targets":[{"url":"http://127.0.0.1:9000"}]"#.to_vec();
    big.resize((1 << 20) + 1024, b' ');
    big.push(b'}');
    let oversized = put("/services/big", big).await;
    error_body(&oversized, StatusCode::PAYLOAD_TOO_LARGE, "body over 1 MiB");

    for path in ["/services/bad", "/services/big"] {
        let (status, _, _) = c
            .request(Method::GET, path, None, HeaderMap::new())
            .await
            .expect("GET");
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "refused PUT {path} stored nothing"
        );
    }
    for path in ["/routes/nothing", "/no-such-collection"] {
        let answer = c
            .request(Method::GET, path, None, HeaderMap::new())
            .await
            .expect("GET");
        error_body(&answer, StatusCode::NOT_FOUND, path);
    }
    for (method, path) in [
        (Method::PATCH, "/services/svc"),
        (Method::POST, "/services"),
    ] {
        let answer = c
            .request(method.clone(), path, Some(b"{}".to_vec()), HeaderMap::new())
            .await
            .expect("request");
        error_body(
            &answer,
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{method} {path}"),
        );
    }

    let body = api_error(
        c.put("dangling", &route("ghost", "/ghost"), None).await,
        StatusCode::BAD_REQUEST,
    );
    assert_eq!(body.field.as_deref(), Some("service"), "{body:?}");
    api_error(c.get::<RouteSpec>("dangling").await, StatusCode::NOT_FOUND);

    c.put("svc", &service("http://127.0.0.1:9000"), None)
        .await
        .expect("PUT service");
    c.put("api", &route("svc", "/api"), None)
        .await
        .expect("PUT route");
    let body = api_error(
        c.delete::<ServiceSpec>("svc", None).await,
        StatusCode::CONFLICT,
    );
    assert!(
        body.message.contains("api"),
        "409 names the route using the service: {body:?}"
    );
    c.get::<ServiceSpec>("svc")
        .await
        .expect("the service survives the refused delete");
    c.delete::<RouteSpec>("api", None)
        .await
        .expect("DELETE route");
    c.delete::<ServiceSpec>("svc", None)
        .await
        .expect("DELETE service once unused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_is_required_when_configured() {
    let (cluster, _) = Cluster::start(&[1], Some("s3cret-token")).await;
    let authorized = cluster.client(1);
    let anonymous = AdminClient::new(authorized.base(), None).expect("same address, no token");

    let answer = anonymous
        .request(Method::GET, "/services", None, HeaderMap::new())
        .await
        .expect("GET without token");
    error_body(&answer, StatusCode::UNAUTHORIZED, "no bearer token");
    let answer = anonymous
        .request(
            Method::GET,
            "/services",
            None,
            headers(&[(AUTHORIZATION, "Bearer wrong-token")]),
        )
        .await
        .expect("GET with a wrong token");
    error_body(&answer, StatusCode::UNAUTHORIZED, "wrong bearer token");
    api_error(
        anonymous
            .put("svc", &service("http://127.0.0.1:9000"), None)
            .await,
        StatusCode::UNAUTHORIZED,
    );

    let (status, _, _) = authorized
        .request(Method::GET, "/services", None, HeaderMap::new())
        .await
        .expect("GET with the token");
    assert_eq!(status, StatusCode::OK);
    assert!(
        authorized
            .list::<ServiceSpec>()
            .await
            .expect("list with the token")
            .is_empty(),
        "the unauthorized PUT stored nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_keys_are_created_listed_and_revoked() {
    let (cluster, _) = Cluster::start(&[1], None).await;
    let c = cluster.client(1);
    api_error(c.create_key("nobody").await, StatusCode::NOT_FOUND);

    c.put("app", &ConsumerSpec::default(), None)
        .await
        .expect("PUT consumer");
    let key = c.create_key("app").await.expect("create a key");
    assert_eq!(key.consumer, "app");
    assert!(
        key.key.starts_with(&key.prefix) && key.key.len() > key.prefix.len(),
        "{key:?}"
    );

    let (status, _, listed) = c
        .request(Method::GET, "/consumers/app/keys", None, HeaderMap::new())
        .await
        .expect("list keys");
    assert_eq!(status, StatusCode::OK);
    assert!(
        !String::from_utf8_lossy(&listed).contains(&key.key),
        "listing keys must not reveal the secret"
    );
    let keys = c.list_keys("app").await.expect("list keys");
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(
        (&keys[0].id, &keys[0].prefix, keys[0].version),
        (&key.id, &key.prefix, key.version)
    );

    c.delete_key("app", &key.id).await.expect("revoke the key");
    assert!(c.list_keys("app").await.expect("list keys").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_is_served() {
    let (cluster, _) = Cluster::start(&[1], None).await;
    let doc = support::openapi(cluster.client(1)).await;
    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with('3'), "openapi version {version:?}");
    let paths = doc["paths"].as_object().expect("the document has paths");
    for path in ["/health", "/cluster", "/cluster/members"] {
        assert!(
            paths.contains_key(path),
            "{path} is documented; paths: {:?}",
            paths.keys()
        );
    }
}
