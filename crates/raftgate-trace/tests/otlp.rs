//! The tracer against a real OTLP gRPC receiver: what is exported, with which ids and
//! attributes, and what goes upstream in `traceparent`.

use std::time::Duration;

use http::Method;
use http::header::{HeaderMap, HeaderValue};
use raftgate_trace::receiver::{ReceivedSpan, Receiver, SpanKind};
use raftgate_trace::{TraceConfig, TraceError, Tracer};

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn config(receiver: &Receiver, sampling_ratio: f64) -> TraceConfig {
    TraceConfig {
        endpoint: receiver.endpoint(),
        sampling_ratio,
        service_name: "raftgate-test".into(),
        node: 7,
    }
}

/// A client request's headers, with `traceparent` lines as given.
fn client_headers(traceparents: &[&str]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::HOST,
        HeaderValue::from_static("gw.example:8443"),
    );
    for traceparent in traceparents {
        headers.append("traceparent", HeaderValue::from_str(traceparent).unwrap());
    }
    headers
}

fn sampled_client() -> HeaderMap {
    let mut headers = client_headers(&[&format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")]);
    headers.insert("tracestate", HeaderValue::from_static("vendor=abc"));
    headers
}

fn find<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    spans
        .iter()
        .find(|s| s.name() == name)
        .unwrap_or_else(|| panic!("no span {name} in {spans:#?}"))
}

/// The fields of a `traceparent` value: version, trace id, span id, flags.
fn traceparent(headers: &HeaderMap) -> [String; 4] {
    let value = headers["traceparent"].to_str().unwrap();
    let parts: Vec<String> = value.split('-').map(String::from).collect();
    parts.try_into().unwrap()
}

#[tokio::test]
async fn request_continues_the_client_trace_and_upstream_span_is_its_child() {
    let (_, receiver) = Receiver::start().await.unwrap();
    let tracer = Tracer::start(&config(&receiver, 1.0)).unwrap();

    let mut request = tracer.request(&sampled_client(), &Method::GET, "/orders/7");
    assert_eq!(request.trace_id().as_deref(), Some(CLIENT_TRACE));
    request.set_route("orders", "orders-service");
    let upstream = request.upstream("127.0.0.1:9000");
    let mut upstream_headers = HeaderMap::new();
    // A client's stale tracestate is replaced, not kept beside ours.
    upstream_headers.insert("tracestate", HeaderValue::from_static("stale=1"));
    upstream.inject(&mut upstream_headers);
    upstream.finish(Some(200), 1, None);
    request.finish(200);
    tracer.shutdown().await;

    let spans = receiver.wait_for(2, Duration::from_secs(10)).await.unwrap();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let server = find(&spans, "GET orders");
    assert_eq!(server.kind(), SpanKind::Server);
    assert_eq!(server.trace_id, CLIENT_TRACE);
    assert_eq!(server.parent_span_id.as_deref(), Some(CLIENT_SPAN));
    assert_eq!(server.service_name.as_deref(), Some("raftgate-test"));
    assert_eq!(server.str_attribute("http.request.method"), Some("GET"));
    assert_eq!(server.str_attribute("url.path"), Some("/orders/7"));
    assert_eq!(server.str_attribute("http.route"), Some("orders"));
    assert_eq!(
        server.str_attribute("raftgate.service"),
        Some("orders-service")
    );
    assert_eq!(server.int_attribute("http.response.status_code"), Some(200));
    assert_eq!(server.str_attribute("server.address"), Some("gw.example"));
    assert_eq!(server.int_attribute("server.port"), Some(8443));
    assert_eq!(server.int_attribute("raftgate.node"), Some(7));
    assert!(!server.is_error());

    let client = find(&spans, "GET");
    assert_eq!(client.kind(), SpanKind::Client);
    assert_eq!(client.trace_id, CLIENT_TRACE);
    assert_eq!(
        client.parent_span_id.as_deref(),
        Some(server.span_id.as_str())
    );
    assert_eq!(client.str_attribute("server.address"), Some("127.0.0.1"));
    assert_eq!(client.int_attribute("server.port"), Some(9000));
    assert_eq!(client.int_attribute("raftgate.retries"), Some(1));
    assert_eq!(client.int_attribute("http.response.status_code"), Some(200));

    let [version, trace, span, flags] = traceparent(&upstream_headers);
    assert_eq!(version, "00");
    assert_eq!(trace, CLIENT_TRACE);
    assert_eq!(span, client.span_id);
    assert_eq!(flags, "01");
    assert_eq!(upstream_headers["tracestate"], "vendor=abc");
}

#[tokio::test]
async fn refusal_is_a_policy_span_with_error_status() {
    let (_, receiver) = Receiver::start().await.unwrap();
    let tracer = Tracer::start(&config(&receiver, 1.0)).unwrap();

    let request = tracer.request(&sampled_client(), &Method::POST, "/orders");
    request.refused("rate_limited", 429);
    request.finish(429);
    tracer.shutdown().await;

    let spans = receiver.spans();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let server = find(&spans, "POST");
    // A 4xx is the client's doing: not an error of the server span.
    assert!(!server.is_error());
    let policy = find(&spans, "policy");
    assert!(policy.is_error());
    assert_eq!(
        policy.parent_span_id.as_deref(),
        Some(server.span_id.as_str())
    );
    assert_eq!(
        policy.str_attribute("raftgate.refusal.code"),
        Some("rate_limited")
    );
    assert_eq!(policy.str_attribute("error.type"), Some("rate_limited"));
    assert_eq!(policy.int_attribute("http.response.status_code"), Some(429));
}

#[tokio::test]
async fn ai_call_carries_gen_ai_attributes() {
    let (_, receiver) = Receiver::start().await.unwrap();
    let tracer = Tracer::start(&config(&receiver, 1.0)).unwrap();

    let request = tracer.request(&sampled_client(), &Method::POST, "/v1/chat/completions");
    let ai = request.ai_call("chat", "gpt-4o", "openai");
    ai.finish(Some("gpt-4o-2024-08-06"), 12, 34, None);
    let failed = request.ai_call("embeddings", "text-embedding-3-small", "openai");
    failed.finish(None, 0, 0, Some("provider_timeout"));
    request.finish(200);
    tracer.shutdown().await;

    let spans = receiver.spans();
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let server = find(&spans, "POST");
    let ai = find(&spans, "chat gpt-4o");
    assert_eq!(ai.kind(), SpanKind::Client);
    assert_eq!(ai.parent_span_id.as_deref(), Some(server.span_id.as_str()));
    assert_eq!(ai.str_attribute("gen_ai.operation.name"), Some("chat"));
    assert_eq!(ai.str_attribute("gen_ai.request.model"), Some("gpt-4o"));
    assert_eq!(
        ai.str_attribute("gen_ai.response.model"),
        Some("gpt-4o-2024-08-06")
    );
    assert_eq!(ai.str_attribute("gen_ai.provider.name"), Some("openai"));
    assert_eq!(ai.str_attribute("gen_ai.system"), Some("openai"));
    assert_eq!(ai.int_attribute("gen_ai.usage.input_tokens"), Some(12));
    assert_eq!(ai.int_attribute("gen_ai.usage.output_tokens"), Some(34));
    assert!(!ai.is_error());

    let failed = find(&spans, "embeddings text-embedding-3-small");
    assert!(failed.is_error());
    assert_eq!(failed.str_attribute("error.type"), Some("provider_timeout"));
    assert_eq!(failed.str_attribute("gen_ai.response.model"), None);
}

#[tokio::test]
async fn request_without_traceparent_starts_a_new_trace() {
    let (_, receiver) = Receiver::start().await.unwrap();
    let tracer = Tracer::start(&config(&receiver, 1.0)).unwrap();

    let request = tracer.request(&client_headers(&[]), &Method::GET, "/");
    let trace_id = request.trace_id().unwrap();
    let upstream = request.upstream("http://backend.internal:8080/base");
    let mut upstream_headers = HeaderMap::new();
    upstream.inject(&mut upstream_headers);
    upstream.finish(None, 2, Some("upstream_timeout"));
    request.finish(504);
    tracer.shutdown().await;

    let spans = receiver.spans();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let server = spans.iter().find(|s| s.kind() == SpanKind::Server).unwrap();
    assert_eq!(server.parent_span_id, None);
    assert_eq!(server.trace_id, trace_id);
    assert_eq!(trace_id.len(), 32);
    assert_ne!(trace_id, "0".repeat(32));
    assert!(server.is_error(), "a 5xx answer is a server error");
    assert_eq!(server.str_attribute("error.type"), Some("504"));

    let client = spans.iter().find(|s| s.kind() == SpanKind::Client).unwrap();
    assert!(client.is_error());
    assert_eq!(client.str_attribute("error.type"), Some("upstream_timeout"));
    assert_eq!(
        client.str_attribute("server.address"),
        Some("backend.internal")
    );
    assert_eq!(client.int_attribute("server.port"), Some(8080));
    assert_eq!(client.int_attribute("raftgate.retries"), Some(2));
    assert_eq!(client.int_attribute("http.response.status_code"), None);
    assert!(!upstream_headers.contains_key("tracestate"));
    let [_, trace, span, flags] = traceparent(&upstream_headers);
    assert_eq!(
        (trace, span, flags),
        (trace_id, client.span_id.clone(), "01".into())
    );
}

#[tokio::test]
async fn tracestate_lines_are_joined_and_other_methods_named_http() {
    let (_, receiver) = Receiver::start().await.unwrap();
    let tracer = Tracer::start(&config(&receiver, 1.0)).unwrap();

    let mut headers = client_headers(&[&format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")]);
    headers.append("tracestate", HeaderValue::from_static("a=1"));
    headers.append("tracestate", HeaderValue::from_static("b=2"));
    let method = Method::from_bytes(b"PURGE").unwrap();
    let request = tracer.request(&headers, &method, "/cache");
    let upstream = request.upstream("[::1]:9000");
    let mut upstream_headers = HeaderMap::new();
    upstream.inject(&mut upstream_headers);
    upstream.finish(Some(404), 0, None);
    request.finish(404);
    tracer.shutdown().await;

    assert_eq!(upstream_headers["tracestate"], "a=1,b=2");
    let spans = receiver.spans();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    for span in &spans {
        assert_eq!(span.name(), "HTTP");
        assert_eq!(span.str_attribute("http.request.method"), Some("_OTHER"));
        assert_eq!(
            span.str_attribute("http.request.method_original"),
            Some("PURGE")
        );
    }
    let client = spans.iter().find(|s| s.kind() == SpanKind::Client).unwrap();
    assert_eq!(client.str_attribute("server.address"), Some("::1"));
    assert!(client.is_error(), "a 4xx is an error of a client span");
    let server = spans.iter().find(|s| s.kind() == SpanKind::Server).unwrap();
    assert!(!server.is_error());
}

#[tokio::test]
async fn ratio_zero_exports_nothing_but_still_propagates() {
    let (_, receiver) = Receiver::start().await.unwrap();
    let tracer = Tracer::start(&config(&receiver, 0.0)).unwrap();

    // The client's own decision not to sample is followed, and its trace continued.
    let unsampled = client_headers(&[&format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-00")]);
    let mut request = tracer.request(&unsampled, &Method::GET, "/orders");
    assert_eq!(request.trace_id().as_deref(), Some(CLIENT_TRACE));
    request.set_route("orders", "orders-service");
    request.refused("unauthorized", 401);
    request
        .ai_call("chat", "m", "p")
        .finish(Some("m"), 1, 1, None);
    let upstream = request.upstream("127.0.0.1:9000");
    let mut upstream_headers = HeaderMap::new();
    upstream.inject(&mut upstream_headers);
    upstream.finish(Some(200), 0, None);
    request.finish(200);
    let [_, trace, span, flags] = traceparent(&upstream_headers);
    assert_eq!(trace, CLIENT_TRACE);
    assert_ne!(
        span, CLIENT_SPAN,
        "the upstream's parent is the proxy's span"
    );
    assert_eq!(flags, "00");

    // A new trace is not sampled at ratio 0, yet its context goes upstream.
    let request = tracer.request(&client_headers(&[]), &Method::GET, "/orders");
    let upstream = request.upstream("127.0.0.1:9000");
    let mut upstream_headers = HeaderMap::new();
    upstream.inject(&mut upstream_headers);
    let [_, trace, _, flags] = traceparent(&upstream_headers);
    assert_eq!(Some(trace), request.trace_id());
    assert_eq!(flags, "00");
    upstream.finish(Some(200), 0, None);
    request.finish(200);
    tracer.shutdown().await;

    assert!(receiver.spans().is_empty(), "{:#?}", receiver.spans());
}

#[tokio::test]
async fn malformed_traceparent_starts_a_new_trace() {
    let (_, receiver) = Receiver::start().await.unwrap();
    let tracer = Tracer::start(&config(&receiver, 1.0)).unwrap();

    let valid = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let malformed = [
        vec!["garbage".to_string()],
        vec![format!("00-{}-{CLIENT_SPAN}-01", "0".repeat(32))],
        vec![format!(
            "00-{}-{CLIENT_SPAN}-01",
            CLIENT_TRACE.to_uppercase()
        )],
        vec![format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}")],
        // Two lines are ambiguous, even if each parses.
        vec![valid.clone(), valid],
    ];
    for traceparents in &malformed {
        let lines: Vec<&str> = traceparents.iter().map(String::as_str).collect();
        let request = tracer.request(&client_headers(&lines), &Method::GET, "/");
        assert_ne!(request.trace_id().as_deref(), Some(CLIENT_TRACE));
        request.finish(200);
    }
    // Not valid UTF-8 text, as a header may be.
    let mut headers = HeaderMap::new();
    headers.insert(
        "traceparent",
        HeaderValue::from_bytes(b"00-\xff-01").unwrap(),
    );
    tracer.request(&headers, &Method::GET, "/").finish(200);
    tracer.shutdown().await;

    let spans = receiver.spans();
    assert_eq!(spans.len(), malformed.len() + 1, "{spans:#?}");
    for span in &spans {
        assert_eq!(span.parent_span_id, None, "{span:#?}");
        assert_ne!(span.trace_id, CLIENT_TRACE);
    }
}

#[tokio::test]
async fn shutdown_flushes_queued_spans() {
    let (_, receiver) = Receiver::start().await.unwrap();
    let tracer = Tracer::start(&config(&receiver, 1.0)).unwrap();
    for n in 0..20 {
        tracer
            .request(&client_headers(&[]), &Method::GET, &format!("/item/{n}"))
            .finish(200);
    }
    // The batch exporter's delay (5 s by default) has not passed: only shutdown sends them.
    assert!(receiver.spans().is_empty());
    tracer.shutdown().await;
    assert_eq!(receiver.spans().len(), 20);

    // Once shut down, requests are no longer traced.
    let request = tracer.request(&sampled_client(), &Method::GET, "/");
    assert_eq!(request.trace_id(), None);
    let mut upstream_headers = HeaderMap::new();
    request
        .upstream("127.0.0.1:1")
        .inject(&mut upstream_headers);
    assert!(upstream_headers.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_exporter_sends_without_shutdown() {
    let (_, receiver) = Receiver::start().await.unwrap();
    let tracer = Tracer::start(&config(&receiver, 1.0)).unwrap();
    tracer
        .request(&sampled_client(), &Method::GET, "/")
        .finish(200);
    let spans = receiver.wait_for(1, Duration::from_secs(20)).await.unwrap();
    assert_eq!(spans[0].trace_id, CLIENT_TRACE);
    tracer.shutdown().await;
}

#[tokio::test]
async fn bad_sampling_ratio_or_endpoint_is_refused() {
    let (_, receiver) = Receiver::start().await.unwrap();
    for ratio in [-0.1, 1.5, f64::NAN] {
        let error = Tracer::start(&config(&receiver, ratio)).err().unwrap();
        assert!(matches!(error, TraceError::SamplingRatio(_)), "{error}");
    }
    let mut bad_endpoint = config(&receiver, 1.0);
    bad_endpoint.endpoint = "http://no spaces allowed:4317".into();
    let error = Tracer::start(&bad_endpoint).err().unwrap();
    assert!(matches!(error, TraceError::Exporter { .. }), "{error}");
    assert!(
        error.to_string().contains("http://127.0.0.1:4317"),
        "{error}"
    );
}

#[test]
fn start_outside_a_runtime_is_refused() {
    let config = TraceConfig {
        endpoint: "http://127.0.0.1:4317".into(),
        sampling_ratio: 1.0,
        service_name: "raftgate-test".into(),
        node: 1,
    };
    let error = Tracer::start(&config).err().unwrap();
    assert!(matches!(error, TraceError::NoRuntime), "{error}");
}
