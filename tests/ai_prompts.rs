//! Prompt APIs and the response cache of the AI gateway on real processes, in front of mock
//! providers on loopback speaking the providers' real wire formats: a prompt template written
//! through one node is served at its own path by another node's proxy (the mock sees the
//! rendered prompt), in text and JSON modes, with 400s naming a missing variable; identical
//! chat requests are answered from a model's cache until its TTL, streams bypass it, and the
//! replicated usage counts the hits.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use raftgate_ai::mock::{MOCK_KEY, MockProvider};
use raftgate_ai::providers::ProviderKind;
use raftgate_model::ai::{ModelConfig, ProviderConfig, UsageQuery};
use raftgate_model::prompt::PromptSpec;
use raftgate_model::{ConsumerSpec, NodeId};
use serde_json::{Value, json};
use support::{Cluster, api_error, eventually};

const SECRET: &str = "the-cluster-secret-of-the-prompt-test";

/// Starts nodes `ids` sharing the cluster secret (provider credentials are sealed with it).
async fn cluster(ids: &[NodeId]) -> Cluster {
    Cluster::start_with_secret(ids, SECRET).await.0
}

/// An OpenAI mock as provider `openai`, the model aliases `models` (alias, JSON spec over
/// that provider), and consumers `app` (all models) and `limited` (only `other`); returns
/// their keys.
async fn configure(
    cluster: &Cluster,
    via: NodeId,
    mock: &MockProvider,
    models: &[(&str, Value)],
) -> (String, String) {
    let client = cluster.client(via);
    let provider: ProviderConfig = serde_json::from_value(
        json!({"kind": "openai", "base_url": mock.base_url(), "api_key": MOCK_KEY}),
    )
    .expect("a provider spec");
    client
        .put_ai_provider("openai", &provider)
        .await
        .expect("put provider");
    for (alias, spec) in models {
        let spec: ModelConfig = serde_json::from_value(spec.clone()).expect("a model spec");
        client
            .put(alias, &spec, None)
            .await
            .unwrap_or_else(|e| panic!("put model {alias}: {e}"));
    }
    let mut keys = Vec::new();
    for (name, ai_models) in [("app", vec![]), ("limited", vec!["other".to_string()])] {
        let consumer = ConsumerSpec {
            ai_models,
            ..ConsumerSpec::default()
        };
        client.put(name, &consumer, None).await.expect("consumer");
        keys.push(client.create_key(name).await.expect("a key").key);
    }
    (keys.remove(0), keys.remove(0))
}

fn model(cache: Option<Value>) -> Value {
    json!({"deployments": [{"provider": "openai", "model": "gpt-4o-mini"}], "cache": cache})
}

fn prompt(spec: Value) -> PromptSpec {
    serde_json::from_value(spec).expect("a prompt spec")
}

/// An answer of the proxy.
struct Answer {
    status: StatusCode,
    /// The `X-Cache` header.
    cache: Option<String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends `method path` with `body` to `proxy`, with consumer key `key` when given.
async fn send(
    proxy: SocketAddr,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> Answer {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{proxy}{path}"))
        .header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("a valid request");
    let exchange = async {
        let client = Client::builder(TokioExecutor::new()).build_http();
        let response = client.request(request).await.expect("an answer");
        let status = response.status();
        let cache = response
            .headers()
            .get("x-cache")
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        let body = response.into_body().collect().await.expect("a body");
        Answer {
            status,
            cache,
            body: String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        }
    };
    tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .expect("an answer within 20 s")
}

async fn post(proxy: SocketAddr, path: &str, key: &str, body: &str) -> Answer {
    send(proxy, Method::POST, path, Some(key), body).await
}

/// Waits until `proxy` answers `POST path` with something other than a 404 (the prompt and the
/// key replicated), and returns that answer.
async fn wait_prompt(proxy: SocketAddr, path: &str, key: &str, body: &str) -> Answer {
    eventually(Duration::from_secs(20), || async {
        let answer = post(proxy, path, key, body).await;
        (answer.status != StatusCode::NOT_FOUND && answer.status != StatusCode::UNAUTHORIZED)
            .then_some(answer)
    })
    .await
    .unwrap_or_else(|| panic!("proxy {proxy} never served {path}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_apis_render_their_templates_and_are_served_by_every_node() {
    let cluster = cluster(&[1, 2, 3]).await;
    let mock = MockProvider::start(ProviderKind::Openai)
        .await
        .expect("mock");
    let (key, limited) = configure(&cluster, 1, &mock, &[("gpt", model(None))]).await;
    let admin = cluster.client(1);
    let sentiment = prompt(json!({
        "path": "/apis/sentiment",
        "model": "gpt",
        "messages": [
            {"role": "system", "content": "You rate the sentiment of {{lang}} text."},
            {"role": "user", "content": "Rate: {{ text }}"}
        ],
        "variables": {
            "text": {"description": "the text to rate"},
            "lang": {"description": "its language", "default": "English"}
        },
        "parameters": {"temperature": 0.2, "max_tokens": 50}
    }));
    admin
        .put("sentiment", &sentiment, None)
        .await
        .expect("put the prompt");

    // Written through node 1, served by node 3.
    let proxy = cluster.node(3).addrs.proxy;
    let answer = wait_prompt(
        proxy,
        "/apis/sentiment",
        &key,
        r#"{"text": "I love {{lang}} it"}"#,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(
        answer.json(),
        json!({"text": "echo: Rate: I love {{lang}} it"})
    );
    let sent = mock.received().pop().expect("the mock was called");
    assert_eq!(
        sent.body["messages"],
        json!([
            {"role": "system", "content": "You rate the sentiment of English text."},
            {"role": "user", "content": "Rate: I love {{lang}} it"}
        ]),
        "the model receives the rendered prompt; values are inserted as written"
    );
    assert_eq!(sent.body["temperature"], 0.2);
    assert_eq!(sent.body["max_tokens"], 50);
    assert_eq!(sent.body["model"], "gpt-4o-mini");

    // The prompt is readable on every node.
    let read = eventually(Duration::from_secs(10), || async {
        cluster.client(2).get::<PromptSpec>("sentiment").await.ok()
    })
    .await
    .expect("node 2 has the prompt");
    assert_eq!(read.spec, sentiment);
    let all = cluster
        .client(3)
        .list::<PromptSpec>()
        .await
        .expect("list prompts");
    assert_eq!(all.len(), 1);

    // Bad requests name what is wrong.
    let missing = post(proxy, "/apis/sentiment", &key, r#"{"lang": "French"}"#).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST, "{}", missing.body);
    let error = &missing.json()["error"];
    assert_eq!(error["param"], "text", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("text"),
        "{error}"
    );
    let garbage = post(proxy, "/apis/sentiment", &key, "text=hello").await;
    assert_eq!(garbage.status, StatusCode::BAD_REQUEST, "{}", garbage.body);
    let unknown = post(
        proxy,
        "/apis/sentiment",
        &key,
        r#"{"text": "a", "tone": "b"}"#,
    )
    .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert_eq!(unknown.json()["error"]["param"], "tone");
    // The same consumer key authentication as /v1, and the consumer's model list.
    let anonymous = send(
        proxy,
        Method::POST,
        "/apis/sentiment",
        None,
        r#"{"text": "a"}"#,
    )
    .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let refused = post(proxy, "/apis/sentiment", &limited, r#"{"text": "a"}"#).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    // Other paths and methods fall through to normal routing.
    for (method, path) in [
        (Method::POST, "/apis/nothing"),
        (Method::GET, "/apis/sentiment"),
    ] {
        let routed = send(proxy, method, path, Some(&key), "{}").await;
        assert_eq!(routed.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(routed.json()["error"], "no_route", "{path}");
    }

    // JSON mode: the API answers the JSON object the model produced.
    let extract = prompt(json!({
        "path": "/apis/extract",
        "model": "gpt",
        "messages": [{"role": "user", "content": "Extract the city from: {{sentence}}"}],
        "response_format": "json"
    }));
    cluster
        .client(2)
        .put("extract", &extract, None)
        .await
        .expect("put the JSON prompt");
    let answer = wait_prompt(
        proxy,
        "/apis/extract",
        &key,
        r#"{"sentence": "I live in Paris"}"#,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(
        answer.json(),
        json!({"answer": "echo: Extract the city from: I live in Paris"})
    );
    let sent = mock.received().pop().expect("the mock was called");
    assert_eq!(sent.body["response_format"], json!({"type": "json_object"}));

    // Writes are checked, naming the field.
    let bad = [
        (json!({"model": "nope"}), "model"),
        (json!({"path": "/v1/sentiment"}), "path"),
        (
            json!({"messages": [{"role": "user", "content": "Rate {{txt}}"}]}),
            "messages[0].content",
        ),
    ];
    for (change, field) in bad {
        let mut spec = serde_json::to_value(&sentiment).expect("encode");
        spec["path"] = json!("/apis/other");
        for (k, v) in change.as_object().expect("an object") {
            spec[k] = v.clone();
        }
        // Node 2 wrote the JSON prompt, so it has applied it.
        let refused = cluster.client(2).put("other", &prompt(spec), None).await;
        let body = api_error(refused, StatusCode::BAD_REQUEST);
        assert_eq!(body.field.as_deref(), Some(field), "{body:?}");
    }

    // A path another prompt API or a route serves is refused by the state machine (409,
    // naming who serves it), and a route may not take a prompt API's path either.
    let upstream = support::Upstream::start("shop").await;
    admin
        .put("shop", &support::service(&upstream.url()), None)
        .await
        .expect("put a service");
    admin
        .put("shop", &support::route("shop", "/shop"), None)
        .await
        .expect("put a route");
    for (path, by) in [
        ("/apis/extract", "ai_prompt 'extract'"),
        ("/shop", "route 'shop'"),
    ] {
        let mut spec = sentiment.clone();
        spec.path = path.into();
        let refused = cluster.client(2).put("other", &spec, None).await;
        let body = api_error(refused, StatusCode::CONFLICT);
        assert_eq!(
            (body.error.as_str(), body.field.as_deref()),
            ("path_taken", Some("path")),
            "{body:?}"
        );
        assert!(body.message.contains(by), "{path}: {body:?}");
    }
    let refused = admin
        .put("shadowed", &support::route("shop", "/apis/extract"), None)
        .await;
    let body = api_error(refused, StatusCode::CONFLICT);
    assert_eq!(body.field.as_deref(), Some("paths[0]"), "{body:?}");
    assert!(body.message.contains("ai_prompt 'extract'"), "{body:?}");
    // POST /shop still reaches the route's upstream, not the AI gateway.
    let routed = eventually(Duration::from_secs(10), || async {
        let answer = post(proxy, "/shop", &key, "{}").await;
        (answer.status == StatusCode::OK).then_some(answer)
    })
    .await;
    assert!(routed.is_some(), "POST /shop is the route's");

    // A deleted prompt's path falls through to routing again, on every node.
    admin
        .delete::<PromptSpec>("sentiment", None)
        .await
        .expect("delete");
    let gone = cluster.node(2).addrs.proxy;
    let routed = eventually(Duration::from_secs(10), || async {
        let answer = post(gone, "/apis/sentiment", &key, r#"{"text": "a"}"#).await;
        (answer.status == StatusCode::NOT_FOUND).then_some(answer)
    })
    .await
    .expect("the deleted prompt stops being served");
    assert_eq!(routed.json()["error"], "no_route");
}

fn chat(temperature: f64, stream: bool) -> String {
    json!({"model": "cached", "temperature": temperature, "stream": stream,
           "messages": [{"role": "user", "content": "hello world"}]})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_requests_are_answered_from_the_cache_until_its_ttl() {
    let cluster = cluster(&[1]).await;
    let mock = MockProvider::start(ProviderKind::Openai)
        .await
        .expect("mock");
    let ttl = Duration::from_secs(3);
    let (key, _) = configure(
        &cluster,
        1,
        &mock,
        &[
            (
                "cached",
                model(Some(json!({"ttl_s": ttl.as_secs(), "max_entries": 100}))),
            ),
            ("plain", model(None)),
        ],
    )
    .await;
    let proxy = cluster.node(1).addrs.proxy;
    let chat_path = "/v1/chat/completions";
    let first = wait_prompt(proxy, chat_path, &key, &chat(0.5, false)).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.cache.as_deref(), Some("MISS"));
    assert_eq!(mock.hits(), 1);

    // The same request, keys reordered and spaced differently: a hit, the provider not called.
    let reordered = r#"{ "messages": [ {"content": "hello world", "role": "user"} ],
                         "stream": false, "temperature": 0.50, "model": "cached" }"#;
    let hit = post(proxy, chat_path, &key, reordered).await;
    assert_eq!(hit.status, StatusCode::OK, "{}", hit.body);
    assert_eq!(hit.cache.as_deref(), Some("HIT"));
    assert_eq!(
        hit.json()["choices"][0]["message"]["content"],
        "echo: hello world"
    );
    assert_eq!(mock.hits(), 1, "a hit does not call the provider");

    // Another temperature is another answer.
    let hotter = post(proxy, chat_path, &key, &chat(0.9, false)).await;
    assert_eq!(hotter.cache.as_deref(), Some("MISS"));
    assert_eq!(mock.hits(), 2);

    // Streams bypass the cache.
    for _ in 0..2 {
        let streamed = post(proxy, chat_path, &key, &chat(0.5, true)).await;
        assert_eq!(streamed.status, StatusCode::OK, "{}", streamed.body);
        assert!(streamed.body.contains("data: [DONE]"), "{}", streamed.body);
        assert_eq!(streamed.cache, None);
    }
    assert_eq!(mock.hits(), 4);

    // A prompt API goes through the same cache.
    let prompt_api = prompt(json!({
        "path": "/apis/greet",
        "model": "cached",
        "messages": [{"role": "user", "content": "Greet {{name}}"}]
    }));
    cluster
        .client(1)
        .put("greet", &prompt_api, None)
        .await
        .expect("put the prompt");
    let miss = wait_prompt(proxy, "/apis/greet", &key, r#"{"name": "Ada"}"#).await;
    assert_eq!(
        (miss.status, miss.cache.as_deref()),
        (StatusCode::OK, Some("MISS"))
    );
    let hit = post(proxy, "/apis/greet", &key, r#"{"name": "Ada"}"#).await;
    assert_eq!(hit.cache.as_deref(), Some("HIT"));
    assert_eq!(hit.json(), json!({"text": "echo: Greet Ada"}));
    assert_eq!(mock.hits(), 5);

    // An alias without a cache always calls the provider.
    for _ in 0..2 {
        let body = chat(0.5, false).replace("cached", "plain");
        let plain = post(proxy, chat_path, &key, &body).await;
        assert_eq!(plain.cache.as_deref(), Some("MISS"));
    }
    assert_eq!(mock.hits(), 7);

    // Past the TTL the answer is fetched again.
    tokio::time::sleep(ttl + Duration::from_millis(500)).await;
    let expired = post(proxy, chat_path, &key, &chat(0.5, false)).await;
    assert_eq!(expired.cache.as_deref(), Some("MISS"));
    assert_eq!(mock.hits(), 8);

    // Usage: 8 calls of `cached` (6 reached the provider, 2 were answered from the cache with
    // no tokens), 2 of `plain`.
    let query = UsageQuery {
        consumer: Some("app".into()),
        model: Some("cached".into()),
        ..UsageQuery::default()
    };
    let client = cluster.client(1);
    let report = eventually(Duration::from_secs(10), || async {
        let r = client.ai_usage(&query).await.ok()?;
        (r.total.requests == 8).then_some(r)
    })
    .await
    .expect("the usage of the 8 calls is reported");
    assert_eq!(report.total.cache_hits, 2, "{report:?}");
    let plain = client
        .ai_usage(&UsageQuery {
            model: Some("plain".into()),
            ..query.clone()
        })
        .await
        .expect("usage");
    assert_eq!(
        (plain.total.requests, plain.total.cache_hits),
        (2, 0),
        "{plain:?}"
    );
    // Complete calls of the same conversation cost the same tokens; hits cost none.
    let per_call = plain.total.prompt_tokens / 2;
    assert!(per_call > 0);
    let complete_misses = 4; // 0.5, 0.9, the prompt API's, and the expired one
    let streamed = report.total.prompt_tokens - complete_misses * per_call;
    assert_eq!(
        streamed,
        2 * per_call,
        "the two streams count, the two hits do not: {report:?}"
    );
}
