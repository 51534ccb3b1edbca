//! The AI gateway as an API like the others, on a real three-node cluster in front of a mock
//! provider speaking OpenAI's wire format: a model alias published as an API version is served
//! under the version's base path through the same policy chain as routes (draft only for its
//! team, subscriptions, a route rate limit, IP rules, CORS, deprecation headers, 410 once
//! retired), with errors in the AI API's format, to raw HTTP, the Anthropic-style `x-api-key`
//! and the official `openai` Python SDK; `/v1` refuses the offered alias (naming the base
//! path) and keeps serving the others; a prompt API published as a version is served at the
//! version's base path and refused at its own.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use raftgate_ai::mock::{MOCK_KEY, MockProvider};
use raftgate_ai::providers::ProviderKind;
use raftgate_client::AdminClient;
use raftgate_model::NodeId;
use raftgate_model::catalog::Lifecycle;
use serde_json::{Value, json};
use support::{Cluster, eventually};

const ALL: [NodeId; 3] = [1, 2, 3];
const SECRET: &str = "the-cluster-secret-of-the-ai-api-test";
const CHAT: &str = "/assistant/v1/chat/completions";

/// `PUT path body` on the admin API, which must succeed.
async fn put(admin: &AdminClient, path: &str, body: Value) {
    let (status, _, answer) = admin
        .request(
            Method::PUT,
            path,
            Some(body.to_string().into_bytes()),
            HeaderMap::new(),
        )
        .await
        .unwrap_or_else(|e| panic!("PUT {path}: {e}"));
    assert!(
        status.is_success(),
        "PUT {path}: {status} {}",
        String::from_utf8_lossy(&answer)
    );
}

/// An answer of a proxy.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The `error.code` of an AI API error body.
    fn code(&self) -> String {
        let body = self.json();
        body["error"]["code"].as_str().unwrap_or_default().into()
    }
}

/// One request to a proxy: from `from` (a loopback source address) when given.
struct Call<'a> {
    method: Method,
    path: &'a str,
    headers: Vec<(&'a str, String)>,
    body: String,
    from: Option<IpAddr>,
}

impl<'a> Call<'a> {
    fn new(method: Method, path: &'a str) -> Call<'a> {
        Call {
            method,
            path,
            headers: vec![("content-type", "application/json".into())],
            body: String::new(),
            from: None,
        }
    }

    /// A chat completion with `model` at `path`, with `key` as a bearer token.
    fn chat(path: &'a str, key: &str, model: &str) -> Call<'a> {
        Call::new(Method::POST, path)
            .bearer(key)
            .body(json!({"model": model, "messages": [{"role": "user", "content": "hi there"}]}))
    }

    fn bearer(self, key: &str) -> Call<'a> {
        self.header("authorization", format!("Bearer {key}"))
    }

    fn header(mut self, name: &'a str, value: impl Into<String>) -> Call<'a> {
        self.headers.push((name, value.into()));
        self
    }

    fn body(mut self, body: Value) -> Call<'a> {
        self.body = body.to_string();
        self
    }

    async fn send(&self, proxy: SocketAddr) -> Answer {
        let mut request = Request::builder()
            .method(self.method.clone())
            .uri(format!("http://{proxy}{}", self.path));
        for (name, value) in &self.headers {
            request = request.header(*name, value);
        }
        let request = request
            .body(Full::new(Bytes::from(self.body.clone())))
            .expect("a valid request");
        let mut connector = HttpConnector::new();
        connector.set_local_address(self.from);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let exchange = async {
            let response = client.request(request).await.expect("an answer");
            let (parts, body) = response.into_parts();
            let body = body.collect().await.expect("a body").to_bytes();
            Answer {
                status: parts.status,
                headers: parts.headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            }
        };
        tokio::time::timeout(Duration::from_secs(20), exchange)
            .await
            .expect("an answer within 20 s")
    }

    /// Sends until every node's proxy answers with `status` (the configuration replicated);
    /// the answers.
    async fn on_every_node(&self, cluster: &Cluster, status: StatusCode) -> Vec<Answer> {
        let mut answers = Vec::new();
        for id in ALL {
            let proxy = cluster.node(id).addrs.proxy;
            let answered = eventually(Duration::from_secs(20), || async {
                let answer = self.send(proxy).await;
                (answer.status == status).then_some(answer)
            })
            .await;
            let answer = match answered {
                Some(answer) => answer,
                None => {
                    let last = self.send(proxy).await;
                    panic!(
                        "node {id}: {} {} never answered {status}; last: {} {}",
                        self.method, self.path, last.status, last.body
                    )
                }
            };
            answers.push(answer);
        }
        answers
    }
}

/// Keys of the applications: `app` and `burst` (held to 2 requests a minute) are subscribed
/// to the API, `stranger` is not, and `inhouse` is of the API's team (and subscribed).
struct Keys {
    app: String,
    burst: String,
    stranger: String,
    inhouse: String,
}

/// A three-node cluster, the mock provider, and [`configure`] done through node 1.
async fn start() -> (Cluster, MockProvider, Keys) {
    let (cluster, _) = Cluster::start_with_secret(&ALL, SECRET).await;
    let mock = MockProvider::start(ProviderKind::Openai)
        .await
        .expect("mock");
    let keys = configure(cluster.client(1), &mock).await;
    (cluster, mock, keys)
}

/// The OpenAI mock as provider `openai` with aliases `smart` and `plain`, team `ai` owning
/// the API `assistant` (subscriptions: auto) whose version v1 offers `smart` in draft, with IP
/// rules, CORS and a rate limit, and the applications of [`Keys`].
async fn configure(admin: &AdminClient, mock: &MockProvider) -> Keys {
    put(
        admin,
        "/ai/providers/openai",
        json!({"kind": "openai", "base_url": mock.base_url(), "api_key": MOCK_KEY}),
    )
    .await;
    for alias in ["smart", "plain"] {
        put(
            admin,
            &format!("/ai/models/{alias}"),
            json!({"deployments": [{"provider": "openai", "model": "gpt-4o-mini"}]}),
        )
        .await;
    }
    put(admin, "/teams/ai", json!({"description": "the AI team"})).await;
    put(
        admin,
        "/rate-limits/rpm",
        json!({"limit": 1000, "window": "minute"}),
    )
    .await;
    put(
        admin,
        "/apis/assistant",
        json!({"title": "Assistant", "team": "ai", "subscription": "auto"}),
    )
    .await;
    put(
        admin,
        "/apis/assistant/versions/v1",
        json!({
            "base_path": "/assistant/v1",
            "backend": {"ai_model": "smart"},
            "policies": {
                "ip": {"deny": ["127.0.0.2/32"]},
                "cors": {"origins": ["https://app.example"]},
                "rate_limits": ["rpm"]
            }
        }),
    )
    .await;
    let consumers = [
        ("app", json!({})),
        ("burst", json!({"limits": {"rpm": 2}})),
        ("stranger", json!({})),
        ("inhouse", json!({"team": "ai"})),
    ];
    let mut keys = Vec::new();
    for (name, spec) in consumers {
        put(admin, &format!("/consumers/{name}"), spec).await;
        keys.push(admin.create_key(name).await.expect("a key").key);
    }
    for app in ["app", "burst", "inhouse"] {
        admin
            .subscribe("assistant", app, None)
            .await
            .unwrap_or_else(|e| panic!("subscribe {app}: {e}"));
    }
    let [app, burst, stranger, inhouse] = <[String; 4]>::try_from(keys).expect("four keys");
    Keys {
        app,
        burst,
        stranger,
        inhouse,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ai_model_published_as_an_api_version_goes_through_the_policy_chain() {
    let python = support::python_with(&["openai"], "sdk-venv", &["openai", "anthropic"]);
    let (cluster, mock, keys) = start().await;
    let admin = cluster.client(1);

    // A draft: only the API team's applications see it; others cannot tell it from nothing.
    let answers = Call::chat(CHAT, &keys.inhouse, "smart")
        .on_every_node(&cluster, StatusCode::OK)
        .await;
    assert_eq!(
        answers[0].json()["choices"][0]["message"]["content"],
        "echo: hi there",
        "{}",
        answers[0].body
    );
    let answers = Call::chat(CHAT, &keys.app, "smart")
        .on_every_node(&cluster, StatusCode::NOT_FOUND)
        .await;
    assert_eq!(answers[0].code(), "no_route", "{}", answers[0].body);

    // Published: a subscribed application's key gets a chat completion on every node.
    admin
        .transition("assistant", "v1", Lifecycle::Published)
        .await
        .expect("publish");
    for answer in Call::chat(CHAT, &keys.app, "smart")
        .on_every_node(&cluster, StatusCode::OK)
        .await
    {
        let body = answer.json();
        assert_eq!(body["object"], "chat.completion", "{}", answer.body);
        assert_eq!(body["choices"][0]["message"]["content"], "echo: hi there");
        assert!(answer.headers.contains_key("ratelimit-remaining"));
    }
    // The provider is called with the deployment's model.
    let sent = mock.received().pop().expect("the mock was called");
    assert_eq!(sent.body["model"], "gpt-4o-mini");
    let proxy = cluster.node(2).addrs.proxy;

    // The Anthropic SDK's way: `x-api-key`, an answer in Anthropic's format.
    let messages = Call::new(Method::POST, "/assistant/v1/messages")
        .header("x-api-key", keys.app.clone())
        .body(json!({"model": "smart", "max_tokens": 20,
                     "messages": [{"role": "user", "content": "hi there"}]}))
        .send(proxy)
        .await;
    assert_eq!(messages.status, StatusCode::OK, "{}", messages.body);
    assert_eq!(messages.json()["type"], "message", "{}", messages.body);
    // Only the version's alias, listed and callable, under its base path.
    let models = Call::new(Method::GET, "/assistant/v1/models")
        .bearer(&keys.app)
        .send(proxy)
        .await;
    assert_eq!(models.status, StatusCode::OK, "{}", models.body);
    assert_eq!(models.json()["data"][0]["id"], "smart", "{}", models.body);
    assert_eq!(models.json()["data"].as_array().map(Vec::len), Some(1));
    let other = Call::chat(CHAT, &keys.app, "plain").send(proxy).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND, "{}", other.body);
    assert!(
        other.body.contains("serves the model smart only"),
        "{}",
        other.body
    );
    let nowhere = Call::new(Method::POST, "/assistant/v1/nowhere")
        .bearer(&keys.app)
        .send(proxy)
        .await;
    assert_eq!(nowhere.status, StatusCode::NOT_FOUND, "{}", nowhere.body);
    assert!(
        nowhere.body.contains("POST /assistant/v1/chat/completions"),
        "{}",
        nowhere.body
    );

    // Refusals of the policy chain, in the AI API's error format.
    let missing = Call::chat(CHAT, "", "smart").send(proxy).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED, "{}", missing.body);
    assert_eq!(missing.json()["error"]["type"], "authentication_error");
    let unsubscribed = Call::chat(CHAT, &keys.stranger, "smart").send(proxy).await;
    assert_eq!(unsubscribed.status, StatusCode::FORBIDDEN);
    assert_eq!(
        unsubscribed.code(),
        "not_subscribed",
        "{}",
        unsubscribed.body
    );
    assert!(
        unsubscribed
            .body
            .contains("POST /apis/assistant/subscriptions")
    );
    let denied = Call {
        from: Some("127.0.0.2".parse().expect("an address")),
        ..Call::chat(CHAT, &keys.app, "smart")
    }
    .send(proxy)
    .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "{}", denied.body);
    assert_eq!(denied.code(), "ip_denied");
    let limited = eventually(Duration::from_secs(10), || async {
        let answer = Call::new(Method::GET, "/assistant/v1/models")
            .bearer(&keys.burst)
            .send(proxy)
            .await;
        (answer.status == StatusCode::TOO_MANY_REQUESTS).then_some(answer)
    })
    .await
    .expect("burst is held to its 2 requests a minute");
    assert_eq!(limited.code(), "rate_limited", "{}", limited.body);
    assert!(limited.headers.contains_key("retry-after"));
    let preflight = Call::new(Method::OPTIONS, CHAT)
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .send(proxy)
        .await;
    assert_eq!(
        preflight.status,
        StatusCode::NO_CONTENT,
        "{}",
        preflight.body
    );
    assert_eq!(
        preflight.headers["access-control-allow-origin"],
        "https://app.example"
    );
    let cors = Call::chat(CHAT, &keys.app, "smart")
        .header("origin", "https://app.example")
        .send(proxy)
        .await;
    assert_eq!(cors.status, StatusCode::OK, "{}", cors.body);
    assert_eq!(
        cors.headers["access-control-allow-origin"],
        "https://app.example"
    );

    // `/v1` refuses the alias the API offers, naming where to call it; other aliases stay.
    let around = Call::chat("/v1/chat/completions", &keys.app, "smart")
        .on_every_node(&cluster, StatusCode::FORBIDDEN)
        .await;
    assert_eq!(around[0].code(), "offered_by_api", "{}", around[0].body);
    assert!(
        around[0].body.contains("/assistant/v1"),
        "{}",
        around[0].body
    );
    let plain = Call::chat("/v1/chat/completions", &keys.stranger, "plain")
        .send(proxy)
        .await;
    assert_eq!(plain.status, StatusCode::OK, "{}", plain.body);
    let listed = Call::new(Method::GET, "/v1/models")
        .bearer(&keys.app)
        .send(proxy)
        .await;
    assert_eq!(
        listed.json()["data"],
        json!([{"id": "plain", "object": "model",
        "created": 0, "owned_by": "raftgate"}]),
        "{}",
        listed.body
    );

    // The official OpenAI SDK with the version's base path.
    let script = r#"
import sys, openai
base, key, stranger = sys.argv[1:4]
client = openai.OpenAI(base_url=base, api_key=key, max_retries=0)
chat = client.chat.completions.create(model="smart", messages=[{"role": "user", "content": "from the sdk"}])
print(chat.choices[0].message.content)
try:
    openai.OpenAI(base_url=base, api_key=stranger, max_retries=0).chat.completions.create(
        model="smart", messages=[{"role": "user", "content": "x"}])
    print("stranger served")
except openai.PermissionDeniedError as e:
    print("refused", e.status_code, e.code)
"#;
    let out = tokio::process::Command::new(&python)
        .args(["-c", script])
        .arg(format!("http://{proxy}/assistant/v1"))
        .args([&keys.app, &keys.stranger])
        .output()
        .await
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["echo: from the sdk", "refused 403 not_subscribed"],
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Deprecated: the headers on AI answers; retired: 410 on every node.
    admin
        .transition("assistant", "v1", Lifecycle::Deprecated)
        .await
        .expect("deprecate");
    let answers = eventually(Duration::from_secs(20), || async {
        let answer = Call::chat(CHAT, &keys.app, "smart").send(proxy).await;
        answer.headers.contains_key("deprecation").then_some(answer)
    })
    .await
    .expect("a deprecated version's answers say so");
    assert_eq!(answers.status, StatusCode::OK, "{}", answers.body);
    admin
        .transition("assistant", "v1", Lifecycle::Retired)
        .await
        .expect("retire");
    let answers = Call::chat(CHAT, &keys.app, "smart")
        .on_every_node(&cluster, StatusCode::GONE)
        .await;
    assert_eq!(answers[0].code(), "retired", "{}", answers[0].body);
    // Retired, the alias is still not callable around the API.
    let around = Call::chat("/v1/chat/completions", &keys.app, "smart")
        .send(proxy)
        .await;
    assert_eq!(around.status, StatusCode::FORBIDDEN, "{}", around.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_api_published_as_an_api_version_is_served_at_its_base_path() {
    let (cluster, _mock, keys) = start().await;
    let admin = cluster.client(1);
    put(
        admin,
        "/ai/prompts/summary",
        json!({"path": "/prompts/summary", "model": "plain",
               "messages": [{"role": "user", "content": "Summarize: {{text}}"}]}),
    )
    .await;
    put(
        admin,
        "/apis/tools",
        json!({"team": "ai", "subscription": "auto"}),
    )
    .await;
    put(
        admin,
        "/apis/tools/versions/summary",
        json!({"base_path": "/tools/summary", "backend": {"prompt": "summary"},
               "state": "published", "policies": {"ip": {"deny": ["127.0.0.2/32"]}}}),
    )
    .await;
    admin
        .subscribe("tools", "app", None)
        .await
        .expect("subscribe app");
    let variables = json!({"text": "a long story"});

    // Served at the version's base path, on every node, to subscribed applications.
    let served = Call::new(Method::POST, "/tools/summary")
        .bearer(&keys.app)
        .body(variables.clone());
    for answer in served.on_every_node(&cluster, StatusCode::OK).await {
        assert_eq!(
            answer.json(),
            json!({"text": "echo: Summarize: a long story"}),
            "{}",
            answer.body
        );
    }
    let proxy = cluster.node(3).addrs.proxy;
    let unsubscribed = Call::new(Method::POST, "/tools/summary")
        .bearer(&keys.stranger)
        .body(variables.clone())
        .send(proxy)
        .await;
    assert_eq!(
        unsubscribed.status,
        StatusCode::FORBIDDEN,
        "{}",
        unsubscribed.body
    );
    assert_eq!(unsubscribed.code(), "not_subscribed");
    let denied = Call {
        from: Some("127.0.0.2".parse().expect("an address")),
        ..Call::new(Method::POST, "/tools/summary")
            .bearer(&keys.app)
            .body(variables.clone())
    }
    .send(proxy)
    .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "{}", denied.body);
    assert_eq!(denied.code(), "ip_denied");
    let get = Call::new(Method::GET, "/tools/summary")
        .bearer(&keys.app)
        .send(proxy)
        .await;
    assert_eq!(get.status, StatusCode::NOT_FOUND, "{}", get.body);

    // Its own path refuses it, naming the version's base path.
    let own = Call::new(Method::POST, "/prompts/summary")
        .bearer(&keys.app)
        .body(variables);
    let answers = own.on_every_node(&cluster, StatusCode::FORBIDDEN).await;
    assert_eq!(answers[0].code(), "offered_by_api", "{}", answers[0].body);
    assert!(
        answers[0].body.contains("/tools/summary"),
        "{}",
        answers[0].body
    );
}
