//! The AI gateway on real processes: providers and models written through one node of a
//! three-node cluster, served by every node's proxy in front of mock providers on loopback
//! (speaking the providers' real wire formats), authenticated with consumer keys; credentials
//! sealed at rest; budgets and token limits enforced across nodes; usage per key; cooldowns
//! shared by the cluster; and the official `openai` and `anthropic` Python SDKs driven against a
//! node. Then the hostile cases: request shapes that must not overspend (images, `n`,
//! embeddings), streams of keep-alive comments or stalled after their first events, a client
//! leaving a complete call, a provider's `Retry-After`, and huge answers against a node's answer
//! memory.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use raftgate_ai::mock::{Behavior, Failure, MOCK_KEY, MockProvider, png_data_url};
use raftgate_ai::providers::ProviderKind;
use raftgate_model::ConsumerSpec;
use raftgate_model::NodeId;
use raftgate_model::ai::{
    AiLimits, Deployment, ModelConfig, Period, Price, ProviderConfig, UsageQuery,
};
use raftgate_model::api::KeySettings;
use serde_json::{Value, json};
use support::{Cluster, api_error, eventually};

const IDS: [NodeId; 3] = [1, 2, 3];
const SECRET: &str = "the-cluster-secret-of-the-ai-test";

/// Starts a three-node cluster whose nodes share `secret` (the secrets key is derived from it).
async fn cluster(secret: Option<&str>) -> Cluster {
    let mut cluster = Cluster::new(&IDS, None);
    for id in IDS {
        if let Some(s) = secret {
            cluster.set_args(id, vec!["--cluster-secret".into(), s.into()]);
        }
        cluster.spawn(id);
    }
    for id in IDS {
        cluster.wait_healthy(id).await;
    }
    cluster.wait_for_leader(&IDS).await;
    cluster
}

/// The mock providers, kept alive for the test.
struct Mocks {
    openai: MockProvider,
    anthropic: MockProvider,
    gemini: MockProvider,
    cohere: MockProvider,
    breaking: MockProvider,
    failing: MockProvider,
}

impl Mocks {
    async fn start() -> Mocks {
        let start = |kind| async move { MockProvider::start(kind).await.expect("start a mock") };
        let m = Mocks {
            openai: start(ProviderKind::Openai).await,
            anthropic: start(ProviderKind::Anthropic).await,
            gemini: start(ProviderKind::Gemini).await,
            cohere: start(ProviderKind::Cohere).await,
            breaking: start(ProviderKind::Openai).await,
            failing: start(ProviderKind::Anthropic).await,
        };
        m.breaking.set(Behavior {
            failure: Some(Failure::MidStream { after_events: 2 }),
            ..Behavior::default()
        });
        m.failing.set(Behavior {
            failure: Some(Failure::Status(529)),
            ..Behavior::default()
        });
        m
    }
}

fn provider(kind: ProviderKind, mock: &MockProvider) -> ProviderConfig {
    provider_with(kind, mock, json!({}))
}

/// A provider for `mock` with the settings of `more` (e.g. its timeouts).
fn provider_with(kind: ProviderKind, mock: &MockProvider, more: Value) -> ProviderConfig {
    let mut spec = json!({"kind": kind, "base_url": mock.base_url(), "api_key": MOCK_KEY,
                          "timeout_ms": 10_000});
    for (field, value) in more.as_object().into_iter().flatten() {
        spec[field] = value.clone();
    }
    serde_json::from_value(spec).expect("a provider spec")
}

fn model(deployments: &[(&str, &str)]) -> ModelConfig {
    ModelConfig {
        deployments: deployments
            .iter()
            .enumerate()
            .map(|(priority, (provider, model))| Deployment {
                provider: (*provider).into(),
                model: (*model).into(),
                weight: 1,
                priority: priority as u32,
                price: None,
            })
            .collect(),
        price: None,
        context_window: None,
        cache: None,
        team: None,
    }
}

/// Writes the mock_gateway example's providers and models through node `via`, and a consumer
/// `app` that may use every model but `secret`; returns the consumer's key.
async fn configure(cluster: &Cluster, via: NodeId, m: &Mocks) -> String {
    let client = cluster.client(via);
    let providers = [
        ("openai", provider(ProviderKind::Openai, &m.openai)),
        ("anthropic", provider(ProviderKind::Anthropic, &m.anthropic)),
        ("gemini", provider(ProviderKind::Gemini, &m.gemini)),
        ("cohere", provider(ProviderKind::Cohere, &m.cohere)),
        ("breaking", provider(ProviderKind::Openai, &m.breaking)),
        ("failing", provider(ProviderKind::Anthropic, &m.failing)),
    ];
    for (name, spec) in &providers {
        let stored = client
            .put_ai_provider(name, spec)
            .await
            .unwrap_or_else(|e| panic!("put provider {name}: {e}"));
        assert!(stored.spec.api_key_set, "{name}: the credential is stored");
    }
    let models = [
        ("gpt", model(&[("openai", "gpt-4o-mini")])),
        (
            "claude",
            model(&[("anthropic", "claude-3-5-haiku-20241022")]),
        ),
        ("gemini", model(&[("gemini", "gemini-2.5-flash")])),
        ("command", model(&[("cohere", "command-r-08-2024")])),
        ("midstream", model(&[("breaking", "gpt-4o-mini")])),
        ("emb", model(&[("openai", "text-embedding-3-small")])),
        (
            "fallback",
            model(&[
                ("failing", "claude-3-5-haiku-latest"),
                ("openai", "gpt-4o-mini"),
            ]),
        ),
        ("broken", model(&[("failing", "claude-3-5-haiku-latest")])),
        ("secret", model(&[("openai", "gpt-4o")])),
    ];
    for (alias, spec) in &models {
        client
            .put(alias, spec, None)
            .await
            .unwrap_or_else(|e| panic!("put model {alias}: {e}"));
    }
    let allowed = models
        .iter()
        .map(|(a, _)| a.to_string())
        .filter(|a| a != "secret")
        .collect();
    let consumer = ConsumerSpec {
        ai_models: allowed,
        ..ConsumerSpec::default()
    };
    client
        .put("app", &consumer, None)
        .await
        .expect("put consumer");
    client.create_key("app").await.expect("create a key").key
}

/// A plain HTTP client for the proxies.
fn http() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends a request to `proxy`; answers the status and the whole body.
async fn call(
    proxy: SocketAddr,
    method: Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (StatusCode, String) {
    let request = Request::builder()
        .method(method)
        .uri(format!("http://{proxy}{path}"))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .expect("a valid request");
    let exchange = async {
        let response = http().request(request).await.expect("an answer");
        let status = response.status();
        let body = response.into_body().collect().await.expect("a body");
        (
            status,
            String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        )
    };
    tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .expect("an answer within 20 s")
}

/// What the mocks answer to "hello world".
const ECHO: &str = "echo: hello world";

/// `POST /v1/chat/completions` through `proxy` with consumer key `key`.
async fn post_chat(proxy: SocketAddr, key: &str, body: Value) -> (StatusCode, String) {
    call(proxy, Method::POST, "/v1/chat/completions", key, Some(body)).await
}

/// A non-streamed chat with `model` that must answer `status`; returns the JSON answer.
async fn completion(proxy: SocketAddr, key: &str, model: &str, status: StatusCode) -> Value {
    let (got, body) = post_chat(proxy, key, chat(model, false)).await;
    assert_eq!(got, status, "{model} through {proxy}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream,
           "messages": [{"role": "user", "content": "hello world"}]})
}

/// Waits until node `proxy` serves `model` to the holder of `key` (configuration and key
/// replicated).
async fn wait_served(proxy: SocketAddr, key: &str, model: &str) {
    let served = eventually(Duration::from_secs(20), || async {
        let (status, body) = call(proxy, Method::GET, "/v1/models", key, None).await;
        (status == StatusCode::OK && body.contains(&format!("\"{model}\""))).then_some(())
    })
    .await;
    assert!(
        served.is_some(),
        "proxy {proxy} never served the AI model {model}"
    );
}

/// The text of an OpenAI event stream: the deltas' contents in order; asserts it ends with
/// `[DONE]`.
fn streamed_text(body: &str) -> String {
    let events: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(
        events.last(),
        Some(&"[DONE]"),
        "stream ends with [DONE]: {body}"
    );
    events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).expect("each event is JSON"))
        .filter_map(|e| {
            e["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_serves_the_ai_api_from_replicated_providers_and_models() {
    let cluster = cluster(Some(SECRET)).await;
    let mocks = Mocks::start().await;
    let key = configure(&cluster, 2, &mocks).await;

    // The admin API never shows the credential.
    let read = cluster
        .client(3)
        .get_ai_provider("openai")
        .await
        .expect("read");
    let shown = serde_json::to_string(&read).expect("encode");
    assert!(
        read.spec.api_key_set && !shown.contains(MOCK_KEY),
        "{shown}"
    );
    // A model on a provider that does not exist is refused, naming the field.
    let bad = cluster
        .client(1)
        .put("typo", &model(&[("nope", "gpt-4o")]), None)
        .await;
    let body = api_error(bad, StatusCode::BAD_REQUEST);
    assert_eq!(
        body.field.as_deref(),
        Some("deployments[0].provider"),
        "{body:?}"
    );

    for id in IDS {
        let proxy = cluster.node(id).addrs.proxy;
        wait_served(proxy, &key, "fallback").await;

        let answer = completion(proxy, &key, "gpt", StatusCode::OK).await;
        assert_eq!(
            answer["choices"][0]["message"]["content"], ECHO,
            "node {id}"
        );
        assert_eq!(answer["usage"]["completion_tokens"], 3, "node {id}");
        // Fallback: the failing provider (529) is tried first, the next priority answers.
        let answer = completion(proxy, &key, "fallback", StatusCode::OK).await;
        assert_eq!(
            answer["choices"][0]["message"]["content"], ECHO,
            "node {id}"
        );

        for model in ["gpt", "claude", "gemini"] {
            let (status, body) = post_chat(proxy, &key, chat(model, true)).await;
            assert_eq!(status, StatusCode::OK, "node {id} {model}: {body}");
            assert_eq!(streamed_text(&body), ECHO, "node {id} {model}");
        }

        let (status, body) = call(proxy, Method::GET, "/v1/models", &key, None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            !body.contains("\"secret\""),
            "node {id} hides forbidden models: {body}"
        );

        let refused = completion(proxy, "sk-wrong", "gpt", StatusCode::UNAUTHORIZED).await;
        assert_eq!(refused["error"]["code"], "invalid_api_key", "node {id}");
        let refused = completion(proxy, &key, "secret", StatusCode::NOT_FOUND).await;
        assert_eq!(refused["error"]["code"], "model_not_found", "node {id}");
    }
    assert!(
        mocks.failing.hits() > 0,
        "the failing provider was tried before the fallback"
    );
    assert!(mocks.openai.hits() > 0 && mocks.anthropic.hits() > 0 && mocks.gemini.hits() > 0);
    // Every request reached a mock with the provider credential, opened on each node.
    let received = mocks.openai.received();
    assert!(
        received.iter().all(|r| r
            .headers
            .get("authorization")
            .is_some_and(|v| v.as_bytes() == format!("Bearer {MOCK_KEY}").as_bytes())),
        "every node sends the opened credential"
    );

    // Usage: each node reports its calls in batches; every node ends up with the sum.
    // Per node, `gpt` served one complete and one streamed chat (refused calls are not used).
    let gpt = UsageQuery {
        consumer: Some("app".into()),
        model: Some("gpt".into()),
        ..UsageQuery::default()
    };
    for id in IDS {
        let client = cluster.client(id);
        let report = eventually(Duration::from_secs(20), || async {
            let r = client.ai_usage(&gpt).await.ok()?;
            (r.total.requests == 6).then_some(r)
        })
        .await
        .unwrap_or_else(|| panic!("node {id} never reported the 6 gpt calls of the cluster"));
        assert_eq!(report.data.len(), 1, "one daily bucket: {report:?}");
        assert!(report.total.prompt_tokens > 0 && report.total.completion_tokens > 0);
        let hourly = client
            .ai_usage(&UsageQuery {
                period: Some(Period::Hour),
                ..gpt.clone()
            })
            .await
            .expect("hourly usage");
        assert_eq!(
            hourly.total.requests, 6,
            "hourly and daily agree on node {id}"
        );
        // Other models' last calls may ride with a later report than gpt's.
        let all = eventually(Duration::from_secs(20), || async {
            let r = client.ai_usage(&UsageQuery::default()).await.ok()?;
            (r.total.requests >= 15).then_some(r)
        })
        .await
        .unwrap_or_else(|| panic!("node {id} never reported the cluster's 15 calls"));
        assert_eq!(
            all.total.requests, 15,
            "gpt 6, claude 3, gemini 3, fallback 3: {all:?}"
        );
    }

    // Each node's own metrics count its calls: one complete and one streamed gpt chat.
    for id in IDS {
        let client = cluster.client(id);
        let counted = eventually(Duration::from_secs(5), || async {
            let text = client.metrics().await.ok()?;
            let value = |name: &str| {
                let series =
                    format!("{name}{{model=\"gpt\",provider=\"openai\",consumer=\"app\"}} ");
                text.lines()
                    .find_map(|l| l.strip_prefix(series.as_str()))
                    .and_then(|v| v.parse::<f64>().ok())
            };
            (value("raftgate_ai_requests_total")? == 2.0
                && value("raftgate_ai_prompt_tokens_total")? > 0.0
                && value("raftgate_ai_completion_tokens_total")? > 0.0)
                .then_some(())
        })
        .await;
        assert!(
            counted.is_some(),
            "node {id}'s AI metrics count its 2 gpt calls"
        );
    }

    // At rest (WAL, snapshots) the credential is only ciphertext.
    for entry in walk(cluster.dir()) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        assert!(
            !bytes
                .windows(MOCK_KEY.len())
                .any(|w| w == MOCK_KEY.as_bytes()),
            "{} holds the provider credential in clear",
            entry.display()
        );
    }
}

/// Every file under `dir` except the nodes' logs.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_none_or(|e| e != "log") {
                files.push(path);
            }
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secrets_key_a_provider_credential_is_refused() {
    let mut cluster = Cluster::new(&[1], None);
    cluster.spawn(1);
    cluster.wait_healthy(1).await;
    cluster.wait_for_leader(&[1]).await;
    assert!(
        cluster.log_text(1).contains("no secrets key"),
        "the node says at startup that it has no secrets key"
    );
    let mock = MockProvider::start(ProviderKind::Openai)
        .await
        .expect("mock");
    let refused = cluster
        .client(1)
        .put_ai_provider("openai", &provider(ProviderKind::Openai, &mock))
        .await;
    let body = api_error(refused, StatusCode::BAD_REQUEST);
    assert_eq!(body.field.as_deref(), Some("api_key"));
    assert!(body.message.contains("--cluster-secret"), "{body:?}");
    // A keyless server (Ollama, vLLM) needs no key.
    let keyless = ProviderConfig {
        api_key: None,
        ..provider(ProviderKind::Openai, &mock)
    };
    let stored = cluster
        .client(1)
        .put_ai_provider("local", &keyless)
        .await
        .expect("a keyless provider is stored");
    assert!(!stored.spec.api_key_set);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_and_anthropic_sdks_against_a_node() {
    let python = support::python_with(
        &["openai", "anthropic"],
        "sdk-venv",
        &["openai", "anthropic"],
    );
    let cluster = cluster(Some(SECRET)).await;
    let mocks = Mocks::start().await;
    let key = configure(&cluster, 1, &mocks).await;
    let proxy = cluster.node(3).addrs.proxy;
    wait_served(proxy, &key, "fallback").await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../raftgate-ai/tests/sdk/check.py"
    );
    let out = tokio::process::Command::new(&python)
        .arg(script)
        .arg(format!("http://{proxy}"))
        .arg(&key)
        .output()
        .await
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The last line is `N passed, M failed`; every check of the script must have run and passed.
    let passed = stdout
        .lines()
        .last()
        .and_then(|l| l.strip_suffix(" passed, 0 failed"))
        .and_then(|n| n.parse::<u32>().ok());
    assert!(
        out.status.success() && passed.is_some_and(|n| n >= 38),
        "SDK check failed ({passed:?} passed):\n{stdout}\n{stderr}"
    );
}

/// A chat with `gpt` whose output is limited to 15 tokens, so its reservation is known: the
/// gateway estimates the prompt at 9 tokens, hence 24 tokens reserved.
fn small_chat(stream: bool) -> Value {
    json!({"model": "gpt", "stream": stream, "max_tokens": 15,
           "messages": [{"role": "user", "content": "hello world"}]})
}

/// Writes through node 1 the OpenAI `mock` as provider `openai` and the model `gpt` on its
/// `provider_model`, priced 0.001 USD a token (in and out), so that costs are tokens / 1000.
async fn put_priced_gpt(cluster: &Cluster, mock: &MockProvider, provider_model: &str) {
    let admin = cluster.client(1);
    admin
        .put_ai_provider("openai", &provider(ProviderKind::Openai, mock))
        .await
        .expect("put provider");
    let mut gpt = model(&[("openai", provider_model)]);
    gpt.price = Some(Price {
        input_per_million: 1000.0,
        output_per_million: 1000.0,
    });
    admin.put("gpt", &gpt, None).await.expect("put model");
}

/// Asserts a refusal by an AI limit: a 429 whose OpenAI-style error has `code` and a message
/// with every one of `names`.
fn assert_refused(answer: (StatusCode, String), code: &str, names: &[&str]) {
    let (status, body) = answer;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(error["error"]["code"], code, "{body}");
    assert_eq!(error["error"]["type"], code, "{body}");
    let message = error["error"]["message"].as_str().unwrap_or_default();
    for name in names {
        assert!(
            message.contains(name),
            "the message names {name}: {message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_and_token_limits_hold_across_nodes_and_usage_is_kept_per_key() {
    let cluster = cluster(Some(SECRET)).await;
    let openai = MockProvider::start(ProviderKind::Openai)
        .await
        .expect("mock");
    let admin = cluster.client(1);
    // 0.001 USD a token: the mock's answer (11 prompt + 3 completion tokens) costs 0.014 USD,
    // a reservation of 24 tokens 0.024 USD.
    put_priced_gpt(&cluster, &openai, "gpt-4o-mini").await;

    let limited = |limits: AiLimits| ConsumerSpec {
        ai_limits: limits,
        ..ConsumerSpec::default()
    };
    // Limits are checked on write, naming the field.
    let bad = limited(AiLimits {
        budget_usd_day: Some(-0.5),
        ..AiLimits::default()
    });
    let body = api_error(admin.put("app", &bad, None).await, StatusCode::BAD_REQUEST);
    assert_eq!(body.field.as_deref(), Some("ai_limits.budget_usd_day"));
    let app = limited(AiLimits {
        budget_usd_day: Some(0.03),
        ..AiLimits::default()
    });
    admin.put("app", &app, None).await.expect("put app");
    let tpm = limited(AiLimits {
        tokens_per_minute: Some(30),
        ..AiLimits::default()
    });
    admin.put("tpm", &tpm, None).await.expect("put tpm");
    let month = |usd| KeySettings {
        ai_limits: AiLimits {
            budget_usd_month: Some(usd),
            ..AiLimits::default()
        },
    };
    let body = api_error(
        admin.create_key_with("app", &month(2e9)).await,
        StatusCode::BAD_REQUEST,
    );
    assert_eq!(body.field.as_deref(), Some("ai_limits.budget_usd_month"));
    let k1 = admin.create_key("app").await.expect("key 1");
    let k2 = admin
        .create_key_with("app", &month(0.01))
        .await
        .expect("key 2");
    let kt = admin.create_key("tpm").await.expect("tpm key");

    let (a, b) = (cluster.node(1).addrs.proxy, cluster.node(2).addrs.proxy);
    for (proxy, key) in [(a, &k1.key), (b, &k1.key), (a, &k2.key), (a, &kt.key)] {
        wait_served(proxy, key, "gpt").await;
    }

    // The key's own monthly budget is smaller than the reservation: the request could never
    // be admitted, which a 400 says (a 429's Retry-After would be a wait for nothing).
    let (status, body) = post_chat(a, &k2.key, small_chat(false)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let error: Value = serde_json::from_str(&body).expect("a JSON error");
    assert_eq!(error["error"]["code"], "budget_exceeded", "{body}");
    assert_eq!(error["error"]["param"], "max_tokens", "{body}");
    let message = error["error"]["message"].as_str().unwrap_or_default();
    let whose = format!("key '{}' of consumer 'app'", k2.id);
    for said in [whose.as_str(), "0.01 USD per month", "never"] {
        assert!(message.contains(said), "{said}: {message}");
    }
    // Spent on node A, streamed: settled with the stream's usage at its end.
    let (status, body) = post_chat(a, &k1.key, small_chat(true)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(streamed_text(&body), ECHO);
    // Once node B knows (the counters are replicated in batches), the day's budget is short of
    // another reservation there.
    let synced = eventually(Duration::from_secs(20), || async {
        let usage = cluster.client(2).consumer_usage("app").await.ok()?;
        let day = usage
            .counters
            .into_iter()
            .find(|c| c.rate_limit == "ai:budget_usd_day")?;
        (day.used >= 14_000).then_some(day)
    })
    .await
    .expect("node B sees what node A spent");
    assert_eq!(synced.limit, Some(30_000), "micro-dollars: {synced:?}");
    assert!(
        synced.used < 15_000,
        "settled with the actual cost: {synced:?}"
    );
    assert_refused(
        post_chat(b, &k1.key, small_chat(false)).await,
        "budget_exceeded",
        &["consumer 'app'", "0.03 USD per day"],
    );
    // Lifting the key's own limit leaves the consumer's, which node A enforces too.
    let info = admin
        .update_key("app", &k2.id, &KeySettings::default())
        .await
        .expect("update key 2");
    assert!(info.ai_limits.is_empty());
    let lifted = eventually(Duration::from_secs(20), || async {
        let answer = post_chat(a, &k2.key, small_chat(false)).await;
        answer.1.contains("consumer 'app'").then_some(answer)
    })
    .await
    .expect("node A applies the key's new settings");
    assert_refused(lifted, "budget_exceeded", &["0.03 USD per day"]);

    // Tokens per minute: 24 reserved, 14 used; another 24 would pass 30.
    let (status, body) = post_chat(a, &kt.key, small_chat(false)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_refused(
        post_chat(a, &kt.key, small_chat(false)).await,
        "tokens_per_minute_exceeded",
        &["consumer 'tpm'", "30 tokens per minute"],
    );

    // Usage per key (refused calls use nothing), with consumer, model and provider.
    let by_key = |key: &str| UsageQuery {
        key: Some(key.to_string()),
        ..UsageQuery::default()
    };
    let client = cluster.client(3);
    let report = eventually(Duration::from_secs(20), || async {
        let r = client.ai_usage(&by_key(&k1.id)).await.ok()?;
        (r.total.requests == 1).then_some(r)
    })
    .await
    .expect("node 3 reports key 1's call");
    let row = &report.data[0];
    assert_eq!(
        (&*row.consumer, &*row.key, &*row.model, &*row.provider),
        ("app", &*k1.id, "gpt", "openai")
    );
    assert_eq!(row.usage.prompt_tokens + row.usage.completion_tokens, 14);
    let tpm_calls = eventually(Duration::from_secs(20), || async {
        let r = client.ai_usage(&by_key(&kt.id)).await.ok()?;
        (r.total.requests == 1).then_some(r)
    })
    .await;
    assert!(tpm_calls.is_some(), "node 3 reports the tpm key's call");
    let k2_usage = client.ai_usage(&by_key(&k2.id)).await.expect("usage");
    assert_eq!(k2_usage.total.requests, 0, "{k2_usage:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_cooled_on_one_node_is_skipped_by_the_others() {
    let cluster = cluster(Some(SECRET)).await;
    let start = |kind| async move { MockProvider::start(kind).await.expect("start a mock") };
    let failing = start(ProviderKind::Openai).await;
    failing.set(Behavior {
        failure: Some(Failure::Status(500)),
        ..Behavior::default()
    });
    let good = start(ProviderKind::Openai).await;
    let admin = cluster.client(2);
    for (name, mock) in [("failing", &failing), ("good", &good)] {
        admin
            .put_ai_provider(name, &provider(ProviderKind::Openai, mock))
            .await
            .expect("put provider");
    }
    let fb = model(&[("failing", "gpt-4o-mini"), ("good", "gpt-4o-mini")]);
    admin.put("fb", &fb, None).await.expect("put model");
    admin
        .put("app", &ConsumerSpec::default(), None)
        .await
        .expect("put consumer");
    let key = admin.create_key("app").await.expect("key").key;
    for id in IDS {
        wait_served(cluster.node(id).addrs.proxy, &key, "fb").await;
    }

    // Node 1 sees the first deployment fail (500, retried, then the fallback answers) until it
    // cools it down and stops trying it (3 failures in a row by default).
    let first = cluster.node(1).addrs.proxy;
    let mut calls = 0;
    loop {
        let before = failing.hits();
        let answer = completion(first, &key, "fb", StatusCode::OK).await;
        assert_eq!(answer["choices"][0]["message"]["content"], ECHO);
        calls += 1;
        if failing.hits() == before {
            break;
        }
        assert!(calls < 5, "node 1 never cooled the failing deployment down");
    }
    // The cooldown rides with node 1's usage report: once the others have its calls, they have
    // the cooldown too.
    for id in [2, 3] {
        let all = UsageQuery {
            model: Some("fb".into()),
            ..UsageQuery::default()
        };
        let client = cluster.client(id);
        let reported = eventually(Duration::from_secs(20), || async {
            let r = client.ai_usage(&all).await.ok()?;
            (r.total.requests == calls).then_some(())
        })
        .await;
        assert!(reported.is_some(), "node {id} has node 1's {calls} calls");
    }
    // The state is applied before the gateway follows it: give that a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = failing.hits();
    for id in [2, 3] {
        let answer = completion(cluster.node(id).addrs.proxy, &key, "fb", StatusCode::OK).await;
        assert_eq!(
            answer["choices"][0]["message"]["content"], ECHO,
            "node {id}"
        );
    }
    assert_eq!(
        failing.hits(),
        before,
        "nodes 2 and 3 skip the deployment node 1 cooled down, without failing on it first"
    );

    // A provider a model still uses cannot be deleted; the answer names the model.
    let body = api_error(
        admin.delete_ai_provider("failing").await,
        StatusCode::CONFLICT,
    );
    assert_eq!(body.error, "in_use", "{body:?}");
    assert!(body.message.contains("fb"), "{body:?}");
    admin
        .delete::<ModelConfig>("fb", None)
        .await
        .expect("delete the model");
    admin
        .delete_ai_provider("failing")
        .await
        .expect("an unused provider is deleted");
}

/// Sends `bodies` to `path` all at once, spread over `proxies`; answers the statuses.
async fn burst(proxies: &[SocketAddr], path: &str, key: &str, bodies: Vec<Value>) -> Vec<u16> {
    let calls = bodies.into_iter().enumerate().map(|(i, body)| {
        let proxy = proxies[i % proxies.len()];
        let (path, key) = (path.to_string(), key.to_string());
        tokio::spawn(async move {
            call(proxy, Method::POST, &path, &key, Some(body))
                .await
                .0
                .as_u16()
        })
    });
    // Spawned all before the first is awaited.
    let calls: Vec<_> = calls.collect();
    let mut statuses = Vec::new();
    for call in calls {
        statuses.push(call.await.expect("a call"));
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_request_shapes_cannot_overspend_budgets_or_token_limits() {
    let cluster = cluster(Some(SECRET)).await;
    let mock = MockProvider::start(ProviderKind::Openai)
        .await
        .expect("mock");
    // A verbose model: every choice is as long as max_tokens allows.
    mock.set(Behavior {
        fill_max_tokens: true,
        ..Behavior::default()
    });
    let admin = cluster.client(1);
    // 0.001 USD a token: a budget of 20 USD is 20,000 tokens, like the token limit.
    put_priced_gpt(&cluster, &mock, "gpt-4o").await;
    // Each request may use 1-2 % of the limits, as plain requests in the probe did.
    const TOKENS: u64 = 20_000;
    let limits = AiLimits {
        budget_usd_day: Some(TOKENS as f64 / 1000.0),
        tokens_per_minute: Some(TOKENS),
        ..AiLimits::default()
    };
    let image =
        json!({"type": "image_url", "image_url": {"url": png_data_url(1, 1), "detail": "low"}});
    let mut images = vec![json!({"type": "text", "text": "what is in these?"})];
    images.extend(std::iter::repeat_n(image, 5));
    let shapes = [
        (
            "plain",
            "/v1/chat/completions",
            json!({"model": "gpt", "max_tokens": 200,
                   "messages": [{"role": "user", "content": "hello world"}]}),
        ),
        (
            "images",
            "/v1/chat/completions",
            json!({"model": "gpt", "max_tokens": 10,
                   "messages": [{"role": "user", "content": images}]}),
        ),
        (
            "choices",
            "/v1/chat/completions",
            json!({"model": "gpt", "n": 5, "max_tokens": 40,
                   "messages": [{"role": "user", "content": "hello world"}]}),
        ),
        (
            "embeddings",
            "/v1/embeddings",
            json!({"model": "gpt", "input": vec![(1..=20).collect::<Vec<u32>>(); 10]}),
        ),
    ];
    let mut keys = Vec::new();
    for (consumer, _, _) in &shapes {
        let spec = ConsumerSpec {
            ai_limits: limits,
            ..ConsumerSpec::default()
        };
        admin.put(consumer, &spec, None).await.expect("consumer");
        keys.push(admin.create_key(consumer).await.expect("key").key);
    }
    let proxies: Vec<SocketAddr> = IDS.iter().map(|id| cluster.node(*id).addrs.proxy).collect();
    for proxy in &proxies {
        for key in &keys {
            wait_served(*proxy, key, "gpt").await;
        }
    }
    // One request alone larger than the limit is refused for what it is.
    let mut huge = shapes[1].2.clone();
    huge["messages"][0]["content"] = json!(
        std::iter::repeat_n(
            json!({"type": "image_url", "image_url": {"url": png_data_url(1, 1)}}),
            1000
        )
        .collect::<Vec<_>>()
    );
    let (status, body) = post_chat(proxies[0], &keys[1], huge).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("would never be admitted"), "{body}");

    // Each shape goes to one node, 5 waves of 100 concurrent requests a sync interval apart (so
    // the node's share of the limits refills): what is measured is how well each request's
    // reservation covers what the provider bills, not the cluster's error (traffic spread over
    // nodes faster than they sync overshoots by up to (n-1)/n · r · (T + c), plain requests as
    // much as these; see the README's rate limits).
    for ((consumer, path, body), key) in shapes.iter().zip(&keys) {
        let mut statuses = Vec::new();
        for _ in 0..5 {
            statuses.extend(burst(&proxies[..1], path, key, vec![body.clone(); 100]).await);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let served = statuses.iter().filter(|s| **s == 200).count();
        assert!(
            served > 0 && statuses.iter().all(|s| *s == 200 || *s == 429),
            "{consumer}: {statuses:?}"
        );
        let query = UsageQuery {
            consumer: Some(consumer.to_string()),
            ..UsageQuery::default()
        };
        let client = cluster.client(2);
        let report = eventually(Duration::from_secs(20), || async {
            let r = client.ai_usage(&query).await.ok()?;
            (r.total.requests == served as u64).then_some(r)
        })
        .await
        .unwrap_or_else(|| panic!("{consumer}: the {served} calls are reported"));
        let tokens = report.total.prompt_tokens + report.total.completion_tokens;
        let tokens_ratio = tokens as f64 / TOKENS as f64;
        let budget_ratio = report.total.cost_usd / (TOKENS as f64 / 1000.0);
        eprintln!(
            "{consumer}: {served} of 500 served, {tokens} tokens against {TOKENS} a minute ({tokens_ratio:.3}×), {:.3} USD against {:.1} USD a day ({budget_ratio:.3}×)",
            report.total.cost_usd,
            TOKENS as f64 / 1000.0
        );
        assert!(
            tokens_ratio <= 1.05 && budget_ratio <= 1.05,
            "{consumer}: {tokens_ratio:.3}× the token limit, {budget_ratio:.3}× the budget"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_that_stall_or_providers_that_refuse_end_as_they_should_on_a_node() {
    let cluster = cluster(Some(SECRET)).await;
    let start = |kind| async move { MockProvider::start(kind).await.expect("start a mock") };
    let (stalled, silent, good, slow, limited) = (
        start(ProviderKind::Openai).await,
        start(ProviderKind::Anthropic).await,
        start(ProviderKind::Openai).await,
        start(ProviderKind::Openai).await,
        start(ProviderKind::Anthropic).await,
    );
    // Keep-alive comments only; comments after two events; an answer after 1.5 s; a 429 with
    // Retry-After.
    silent.set(Behavior {
        failure: Some(Failure::Stall { after_events: 0 }),
        ..Behavior::default()
    });
    stalled.set(Behavior {
        failure: Some(Failure::Stall { after_events: 2 }),
        ..Behavior::default()
    });
    slow.set(Behavior {
        latency: Duration::from_millis(1500),
        ..Behavior::default()
    });
    limited.set(Behavior {
        failure: Some(Failure::Status(429)),
        retry_after: Some(7),
        ..Behavior::default()
    });
    const TIMEOUT_MS: u64 = 1000;
    const IDLE_MS: u64 = 500;
    let admin = cluster.client(1);
    let timeouts = json!({"timeout_ms": TIMEOUT_MS, "stream_idle_timeout_ms": IDLE_MS});
    for (name, kind, mock, more) in [
        ("silent", ProviderKind::Anthropic, &silent, &timeouts),
        ("stalled", ProviderKind::Openai, &stalled, &timeouts),
        ("good", ProviderKind::Openai, &good, &json!({})),
        ("slow", ProviderKind::Openai, &slow, &json!({})),
        ("limited", ProviderKind::Anthropic, &limited, &json!({})),
    ] {
        let spec = provider_with(kind, mock, more.clone());
        admin.put_ai_provider(name, &spec).await.expect("provider");
    }
    for (alias, deployments) in [
        (
            "silent",
            &[
                ("silent", "claude-3-5-haiku-latest"),
                ("good", "gpt-4o-mini"),
            ][..],
        ),
        ("stalled", &[("stalled", "gpt-4o-mini")][..]),
        ("slow", &[("slow", "gpt-4o-mini")][..]),
        ("limited", &[("limited", "claude-3-5-haiku-latest")][..]),
    ] {
        admin
            .put(alias, &model(deployments), None)
            .await
            .expect("model");
    }
    let proxy = cluster.node(3).addrs.proxy;
    let key = app_key(&cluster, proxy, &["silent", "stalled", "slow", "limited"]).await;

    // Comments only: the next deployment answers once the first event is overdue.
    let started = std::time::Instant::now();
    let request = Request::post(format!("http://{proxy}/v1/chat/completions"))
        .header("authorization", format!("Bearer {key}"))
        .body(Full::new(Bytes::from(chat("silent", true).to_string())))
        .expect("a request");
    let response = tokio::time::timeout(Duration::from_secs(10), http().request(request))
        .await
        .expect("an answer, not a hang")
        .expect("an answer");
    let head_after = started.elapsed();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    assert_eq!(streamed_text(&String::from_utf8_lossy(&body)), ECHO);
    eprintln!(
        "comment-only stream: fallback answered {} ms after the request (timeout_ms {TIMEOUT_MS})",
        head_after.as_millis()
    );
    assert!(
        head_after >= Duration::from_millis(TIMEOUT_MS)
            && head_after < Duration::from_millis(TIMEOUT_MS + 300),
        "{head_after:?}"
    );

    // Comments after the first events: the stream ends with an error event, then [DONE].
    let started = std::time::Instant::now();
    let (status, body) = post_chat(proxy, &key, chat("stalled", true)).await;
    let ended_after = started.elapsed();
    assert_eq!(status, StatusCode::OK, "{body}");
    let events: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{body}");
    let error: Value = serde_json::from_str(events[events.len() - 2]).expect("an error event");
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("stream_idle_timeout_ms")),
        "{body}"
    );
    assert!(
        ended_after < Duration::from_millis(IDLE_MS + 2000),
        "{ended_after:?}"
    );

    // A 429's Retry-After reaches the client, complete and streamed.
    for stream in [false, true] {
        let request = Request::post(format!("http://{proxy}/v1/chat/completions"))
            .header("authorization", format!("Bearer {key}"))
            .body(Full::new(Bytes::from(chat("limited", stream).to_string())))
            .expect("a request");
        let response = http().request(request).await.expect("an answer");
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            response.headers().get("retry-after").map(|v| v.as_bytes()),
            Some(&b"7"[..]),
            "stream: {stream}"
        );
    }

    // The client of a complete call leaves at 0.5 s; the provider answers at 1.5 s; the
    // call is counted all the same.
    let left = tokio::time::timeout(
        Duration::from_millis(500),
        post_chat(proxy, &key, chat("slow", false)),
    )
    .await;
    assert!(left.is_err(), "the client left before the answer");
    let query = UsageQuery {
        model: Some("slow".into()),
        ..UsageQuery::default()
    };
    let client = cluster.client(3);
    let report = eventually(Duration::from_secs(20), || async {
        let r = client.ai_usage(&query).await.ok()?;
        (r.total.requests == 1).then_some(r)
    })
    .await
    .expect("the abandoned call is in the usage");
    assert_eq!(
        (report.total.prompt_tokens, report.total.completion_tokens),
        (11, 3),
        "the provider's own counts: {report:?}"
    );
}

/// Writes through node 1 a consumer `app` without limits and returns a key of it, once `proxy`
/// serves each of `aliases` to it.
async fn app_key(cluster: &Cluster, proxy: SocketAddr, aliases: &[&str]) -> String {
    let admin = cluster.client(1);
    admin
        .put("app", &ConsumerSpec::default(), None)
        .await
        .expect("consumer");
    let key = admin.create_key("app").await.expect("key").key;
    for alias in aliases {
        wait_served(proxy, &key, alias).await;
    }
    key
}

/// The peak resident memory of process `pid`, in MiB (`VmHWM` of `/proc`).
fn peak_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_answers_stay_within_the_nodes_answer_memory() {
    // One node that may hold 64 MiB of answers (the default): a 30 MB answer is held twice
    // while it is parsed, so four cannot be read at once.
    let mut cluster = Cluster::new(&[1], None);
    let args = ["--cluster-secret", SECRET, "--ai-answer-memory-mib", "64"];
    cluster.set_args(1, args.map(String::from).to_vec());
    cluster.spawn(1);
    cluster.wait_healthy(1).await;
    cluster.wait_for_leader(&[1]).await;
    let huge = MockProvider::start(ProviderKind::Openai)
        .await
        .expect("mock");
    // 30 MB answers, arriving 1 MiB every 200 ms: four are read at the same time.
    huge.set(Behavior {
        answer_bytes: 30_000_000,
        chunk_delay: Duration::from_millis(200),
        ..Behavior::default()
    });
    let admin = cluster.client(1);
    admin
        .put_ai_provider("huge", &provider(ProviderKind::Openai, &huge))
        .await
        .expect("provider");
    admin
        .put("huge", &model(&[("huge", "gpt-4o-mini")]), None)
        .await
        .expect("model");
    let proxy = cluster.node(1).addrs.proxy;
    let key = app_key(&cluster, proxy, &["huge"]).await;
    let pid = cluster.pid(1).expect("the node runs");
    let term = cluster.status(1).await.term;
    let before = peak_mib(pid);
    let statuses = burst(
        &[proxy],
        "/v1/chat/completions",
        &key,
        vec![chat("huge", false); 4],
    )
    .await;
    let after = peak_mib(pid);
    eprintln!(
        "4 concurrent 30 MB answers: {statuses:?}; the node's peak resident memory {before:.0} -> {after:.0} MiB"
    );
    let served = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        served >= 1 && statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&503),
        "four 30 MB answers do not fit 64 MiB at once: {statuses:?}"
    );
    assert_eq!(cluster.status(1).await.term, term, "no election meanwhile");
}
