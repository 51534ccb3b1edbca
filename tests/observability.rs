//! Access logs and OpenTelemetry traces on real `raftgate serve` processes, exported to a real
//! OTLP receiver started by the test: a client's W3C trace continues through the proxy (the
//! server span is the client span's child, the upstream call the server span's, and the
//! upstream receives the upstream span's `traceparent`), a rate-limit refusal gets an error
//! `policy` span, an AI call a `gen_ai` span with the model, provider and tokens; the access
//! log has a JSON line with every field for each of those requests, and after logrotate moves
//! the file, `SIGHUP` makes the node write a new one.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use raftgate_ai::mock::{MOCK_KEY, MockProvider};
use raftgate_model::ai::ProviderKind;
use raftgate_model::policy::{AuthPolicy, KeyAuth, LimitScope, Policies};
use raftgate_model::{ConsumerSpec, RouteSpec};
use raftgate_trace::receiver::{ReceivedSpan, Receiver};
use serde_json::{Value, json};
use support::{Cluster, Echo, ProxyClient, eventually, per_minute, route, service};

const SECRET: &str = "observability-test-cluster-secret";
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn traceparent() -> String {
    format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
}

fn log_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The line of the request `id` in `path`, once it is written.
async fn line_of(path: &Path, id: &str) -> Value {
    eventually(Duration::from_secs(5), || async {
        log_lines(path).into_iter().find(|l| l["request_id"] == id)
    })
    .await
    .unwrap_or_else(|| panic!("no access log line for {id} in {}", path.display()))
}

fn by_id(spans: &[ReceivedSpan]) -> BTreeMap<&str, &ReceivedSpan> {
    spans.iter().map(|s| (s.span_id.as_str(), s)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_continue_through_the_proxy_and_every_request_is_logged() {
    let (receiver_addr, receiver) = Receiver::start().await.expect("OTLP receiver");
    let mut cluster = Cluster::new(&[1, 2, 3], None);
    let log_path = |id: u64| cluster.dir().join(format!("access-{id}.log"));
    let paths: Vec<_> = (1..=3).map(log_path).collect();
    for id in 1..=3u64 {
        let args = vec![
            "--cluster-secret".to_string(),
            SECRET.into(),
            "--access-log".into(),
            paths[id as usize - 1].display().to_string(),
            "--otlp-endpoint".into(),
            format!("http://{receiver_addr}"),
            "--trace-sample".into(),
            "1".into(),
        ];
        cluster.set_args(id, args);
        cluster.spawn(id);
    }
    for id in 1..=3 {
        cluster.wait_healthy(id).await;
    }
    cluster.wait_for_leader(&[1, 2, 3]).await;
    let c = cluster.client(1);
    let echo = Echo::start().await;
    c.put("svc", &service(&echo.url()), None)
        .await
        .expect("PUT service");
    c.put("one-a-minute", &per_minute(1, LimitScope::Consumer), None)
        .await
        .expect("PUT rate limit");
    let keyed = RouteSpec {
        policies: Policies {
            auth: Some(AuthPolicy {
                key_auth: Some(KeyAuth::default()),
                ..Default::default()
            }),
            rate_limits: vec!["one-a-minute".into()],
            ..Default::default()
        },
        ..route("svc", "/echo")
    };
    c.put("echo", &keyed, None).await.expect("PUT route");
    c.put("alice", &ConsumerSpec::default(), None)
        .await
        .expect("PUT consumer");
    let key = c.create_key("alice").await.expect("alice's key").key;

    // A traced request through node 1, continuing the client's trace.
    let proxy = ProxyClient::new(Duration::from_secs(10));
    let p1 = cluster.node(1).addrs.proxy;
    let tp = traceparent();
    let headers = [
        ("apikey", key.as_str()),
        ("traceparent", tp.as_str()),
        ("tracestate", "vendor=1"),
    ];
    let (status, answer_headers, body) = eventually(Duration::from_secs(10), || async {
        proxy
            .fetch(p1, "/echo/a?secret=x", &headers)
            .await
            .ok()
            .filter(|(s, _, _)| *s == StatusCode::OK)
    })
    .await
    .expect("node 1 proxies /echo with alice's key");
    assert_eq!(status, StatusCode::OK);
    let request_id = answer_headers["x-request-id"]
        .to_str()
        .expect("request id")
        .to_string();
    let echoed: Value = serde_json::from_str(&body).expect("echo JSON");
    let sent_upstream = echoed["headers"]["traceparent"][0]
        .as_str()
        .expect("a traceparent went upstream")
        .to_string();
    let parts: Vec<&str> = sent_upstream.split('-').collect();
    assert_eq!(parts[1], CLIENT_TRACE, "the client's trace goes on");
    assert_ne!(parts[2], CLIENT_SPAN, "with the proxy's own span as parent");
    assert_eq!(echoed["headers"]["tracestate"][0], "vendor=1");

    // The next one is over the limit of one a minute and refused.
    let (refused, refused_headers, _) = proxy.fetch(p1, "/echo/c", &headers).await.expect("answer");
    assert_eq!(refused, StatusCode::TOO_MANY_REQUESTS);
    let refused_id = refused_headers["x-request-id"]
        .to_str()
        .expect("request id")
        .to_string();

    // The spans of the first request: server span, child of the client's; upstream span, child
    // of the server span, whose id went upstream.
    let spans = receiver
        .wait_for(4, Duration::from_secs(20))
        .await
        .expect("spans exported");
    let ours: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.trace_id == CLIENT_TRACE)
        .collect();
    let ids = by_id(&spans);
    let upstream = ids
        .get(parts[2])
        .unwrap_or_else(|| panic!("the upstream span {} was exported: {ours:#?}", parts[2]));
    assert_eq!(upstream.kind(), raftgate_trace::receiver::SpanKind::Client);
    let server = ids[upstream.parent_span_id.as_deref().expect("a parent")];
    assert_eq!(server.parent_span_id.as_deref(), Some(CLIENT_SPAN));
    assert_eq!(server.str_attribute("http.route"), Some("echo"));
    assert_eq!(server.int_attribute("http.response.status_code"), Some(200));
    assert_eq!(server.int_attribute("raftgate.node"), Some(1));
    assert_eq!(server.service_name.as_deref(), Some("raftgate"));
    assert_eq!(
        upstream.int_attribute("http.response.status_code"),
        Some(200)
    );
    // The refusal: an error `policy` span under its request's server span.
    let policy = ours
        .iter()
        .find(|s| s.name() == "policy")
        .expect("a policy span for the refusal");
    assert!(policy.is_error());
    assert_eq!(
        policy.str_attribute("raftgate.refusal.code"),
        Some("rate_limited")
    );
    let refused_server = ids[policy.parent_span_id.as_deref().expect("a parent")];
    assert_eq!(
        refused_server.int_attribute("http.response.status_code"),
        Some(429)
    );

    // The access log of node 1 has both, with every field.
    let line = line_of(&paths[0], &request_id).await;
    for (field, want) in [
        ("trace_id", json!(CLIENT_TRACE)),
        ("node", json!(1)),
        ("method", json!("GET")),
        ("path", json!("/echo/a")),
        ("route", json!("echo")),
        ("service", json!("svc")),
        ("consumer", json!("alice")),
        ("status", json!(200)),
        ("upstream", json!(echo.url())),
        ("retries", json!(0)),
        ("rate_limit", json!("passed")),
    ] {
        assert_eq!(line[field], want, "{field} in {line}");
    }
    for field in [
        "time",
        "client",
        "host",
        "latency_ms",
        "upstream_latency_ms",
        "bytes_out",
    ] {
        assert!(!line[field].is_null(), "{field} in {line}");
    }
    assert!(
        !line.to_string().contains("secret=x"),
        "the query string is not logged: {line}"
    );
    let refused_line = line_of(&paths[0], &refused_id).await;
    assert_eq!(refused_line["status"], 429);
    assert_eq!(refused_line["rate_limit"], "refused");
    assert_eq!(refused_line["error"], "rate_limited");

    // An AI call gets a gen_ai span with the model, the provider and the tokens.
    let mock = MockProvider::start(ProviderKind::Openai)
        .await
        .expect("mock provider");
    let admin = cluster.client(1);
    admin
        .request(
            Method::PUT,
            "/ai/providers/openai",
            Some(
                json!({"kind": "openai", "base_url": mock.base_url(), "api_key": MOCK_KEY})
                    .to_string()
                    .into_bytes(),
            ),
            http::HeaderMap::new(),
        )
        .await
        .expect("PUT provider");
    admin
        .request(
            Method::PUT,
            "/ai/models/smart",
            Some(
                json!({"deployments": [{"provider": "openai", "model": "gpt-4o-mini"}]})
                    .to_string()
                    .into_bytes(),
            ),
            http::HeaderMap::new(),
        )
        .await
        .expect("PUT model");
    let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let ai_trace = "0af7651916cd43dd8448eb211c80319c";
    let chat = eventually(Duration::from_secs(10), || async {
        let request = Request::post(format!("http://{p1}/v1/chat/completions"))
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .header("traceparent", format!("00-{ai_trace}-b7ad6b7169203331-01"))
            .body(Full::new(Bytes::from(
                json!({"model": "smart", "messages": [{"role": "user", "content": "hi"}]})
                    .to_string(),
            )))
            .ok()?;
        let response = http.request(request).await.ok()?;
        let status = response.status();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        (status == StatusCode::OK).then_some(body)
    })
    .await
    .expect("the AI call answers once the model is known");
    let chat: Value = serde_json::from_slice(&chat).expect("chat JSON");
    let gen_ai = eventually(Duration::from_secs(20), || async {
        receiver
            .spans()
            .into_iter()
            .find(|s| s.trace_id == ai_trace && s.str_attribute("gen_ai.request.model").is_some())
    })
    .await
    .expect("a gen_ai span for the AI call");
    assert_eq!(gen_ai.str_attribute("gen_ai.request.model"), Some("smart"));
    assert_eq!(gen_ai.str_attribute("gen_ai.provider.name"), Some("openai"));
    assert_eq!(gen_ai.str_attribute("gen_ai.operation.name"), Some("chat"));
    assert_eq!(
        gen_ai.int_attribute("gen_ai.usage.input_tokens"),
        chat["usage"]["prompt_tokens"].as_i64()
    );
    assert_eq!(
        gen_ai.int_attribute("gen_ai.usage.output_tokens"),
        chat["usage"]["completion_tokens"].as_i64()
    );
    let all = receiver.spans();
    let parent = all
        .iter()
        .find(|s| Some(s.span_id.as_str()) == gen_ai.parent_span_id.as_deref())
        .expect("the AI call's request span");
    assert_eq!(parent.parent_span_id.as_deref(), Some("b7ad6b7169203331"));

    // logrotate: move node 1's file away, SIGHUP, and the next line goes to a new file.
    let rotated = paths[0].with_extension("log.1");
    std::fs::rename(&paths[0], &rotated).expect("rotate");
    let pid = cluster.pid(1).expect("node 1 runs");
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    let after = eventually(Duration::from_secs(10), || async {
        let (_, headers, _) = proxy.fetch(p1, "/nowhere", &[]).await.ok()?;
        let id = headers["x-request-id"].to_str().ok()?.to_string();
        log_lines(&paths[0])
            .iter()
            .any(|l| l["request_id"] == id)
            .then_some(id)
    })
    .await
    .expect("after SIGHUP, node 1 writes a new access log");
    let new_line = line_of(&paths[0], &after).await;
    assert_eq!(new_line["status"], 404);
    assert_eq!(new_line["error"], "no_route");
    assert!(
        log_lines(&rotated)
            .iter()
            .any(|l| l["request_id"] == request_id),
        "the rotated file keeps its lines"
    );
    assert!(cluster.pid(1).is_some(), "SIGHUP does not stop the node");
    let (status, _) = proxy
        .get_with_headers(p1, "/echo/d", &[("apikey", key.as_str())])
        .await
        .expect("node 1 still serves");
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "still limited");
}
