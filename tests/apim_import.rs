//! OpenAPI import and the API-management CLI on real three-node clusters: a YAML 3.0 and a
//! JSON 3.1 document become routes on every node, through which a real upstream receives the
//! document's paths; broken documents are refused naming where in them, with no route made;
//! a second import replaces the set whole; another team's token finds nothing. Then the
//! `raftgate team`, `api` and `subscription` commands of the real binary, end to end.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use http::{HeaderMap, Method, StatusCode};
use raftgate_client::AdminClient;
use raftgate_model::access::{TeamSpec, TokenRole};
use raftgate_model::catalog::{ApiSpec, ApiVersionSpec, Backend, Lifecycle};
use raftgate_model::{Entity, NodeId, RouteSpec};
use serde_json::{Value, json};
use support::{Cluster, Echo, ProxyClient, api_error, eventually, service};

const ALL: [NodeId; 3] = [1, 2, 3];
const BOOTSTRAP: &str = "bootstrap-token-of-the-import-tests";
const WAIT: Duration = Duration::from_secs(10);

/// A YAML OpenAPI 3.0 document: a collection, a templated item, an operation with a single
/// method and the fields routes do not need.
const USERS_YAML: &str = r#"openapi: 3.0.3
info:
  title: Users
  version: "1"
servers:
  - url: https://users.example.com
paths:
  /users:
    get:
      responses:
        200: {description: the users}
    post:
      responses:
        201: {description: made}
  /users/{id}:
    parameters:
      - {name: id, in: path, required: true, schema: {type: integer}}
    get:
      responses:
        200: {description: a user}
    delete:
      responses:
        204: {description: gone}
  /status:
    post:
      responses:
        200: {description: ok}
"#;

/// Team `a` owns everything; `b` is the other team.
struct Setup {
    cluster: Cluster,
    leader: NodeId,
    /// Token secrets of `a-owner` and `b-owner`.
    a: String,
    b: String,
    echo: Echo,
}

impl Setup {
    /// Teams `a` and `b` with an owner token each, and, as team `a`, service `users-svc` (a
    /// real echo upstream) and API `users`.
    async fn start() -> Setup {
        let (cluster, leader) = Cluster::start(&ALL, Some(BOOTSTRAP)).await;
        let boot = cluster.client(leader);
        let mut secrets = Vec::new();
        for team in ["a", "b"] {
            boot.put(team, &TeamSpec::default(), None)
                .await
                .unwrap_or_else(|e| panic!("team {team}: {e}"));
            let made = boot
                .create_team_token(&format!("{team}-owner"), TokenRole::Owner, Some(team))
                .await
                .unwrap_or_else(|e| panic!("token of {team}: {e}"));
            secrets.push(made.token);
        }
        let echo = Echo::start().await;
        let setup = Setup {
            cluster,
            leader,
            b: secrets.pop().expect("b's token"),
            a: secrets.pop().expect("a's token"),
            echo,
        };
        let a = setup.as_a(leader);
        a.put("users-svc", &service(&setup.echo.url()), None)
            .await
            .expect("service");
        a.put("users", &ApiSpec::default(), None)
            .await
            .expect("API");
        setup
    }

    fn client(&self, id: NodeId, secret: &str) -> AdminClient {
        let admin = self.cluster.node(id).addrs.admin.to_string();
        AdminClient::new(&admin, Some(secret.to_owned()))
            .expect("loopback admin address")
            .with_timeout(WAIT)
    }

    /// Team `a`'s owner on node `id`.
    fn as_a(&self, id: NodeId) -> AdminClient {
        self.client(id, &self.a)
    }

    /// A node that is not the leader, so writes are forwarded.
    fn follower(&self) -> NodeId {
        ALL.into_iter()
            .find(|&id| id != self.leader)
            .expect("a follower")
    }

    /// Creates version `version` of `users` under `base_path`, published so that nothing but
    /// routing decides what the proxy serves.
    async fn version(&self, version: &str, base_path: &str) {
        let a = self.as_a(self.leader);
        let spec = ApiVersionSpec::new(base_path, Backend::Service("users-svc".into()));
        a.put_version("users", version, &spec, None)
            .await
            .unwrap_or_else(|e| panic!("version {version}: {e}"));
        a.transition("users", version, Lifecycle::Published)
            .await
            .unwrap_or_else(|e| panic!("publish {version}: {e}"));
    }

    /// Waits until every node's routes of `users/{version}` are `expected`, by name.
    async fn routes_everywhere(&self, version: &str, expected: &BTreeSet<String>) {
        for id in ALL {
            let client = self.as_a(id);
            let seen = eventually(WAIT, || async {
                let names = version_routes(&client, version).await;
                (&names == expected).then_some(())
            })
            .await;
            let now = version_routes(&client, version).await;
            assert!(
                seen.is_some(),
                "node {id} has routes {now:?}, not {expected:?}"
            );
        }
    }

    /// What the echo upstream received for `GET path` through node `id`'s proxy: the status and
    /// the URI it saw (`None` when the proxy answered itself).
    async fn through(&self, id: NodeId, path: &str) -> (StatusCode, Option<String>) {
        let proxy = self.cluster.node(id).addrs.proxy;
        let (status, body) = ProxyClient::new(WAIT)
            .get(proxy, path)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let uri = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["uri"].as_str().map(str::to_owned));
        (status, uri)
    }

    /// Waits until `GET path` through every node's proxy reaches the upstream as `upstream`,
    /// or, with `None`, is answered 404 by the proxy.
    async fn serves_everywhere(&self, path: &str, upstream: Option<&str>) {
        for id in ALL {
            let expected = match upstream {
                Some(uri) => (StatusCode::OK, Some(uri.to_owned())),
                None => (StatusCode::NOT_FOUND, None),
            };
            let seen = eventually(WAIT, || async {
                (self.through(id, path).await == expected).then_some(())
            })
            .await;
            let now = self.through(id, path).await;
            assert!(
                seen.is_some(),
                "GET {path} via node {id}: {now:?}, not {expected:?}"
            );
        }
    }
}

/// The names of the routes of `users/{version}` that `client`'s node has.
async fn version_routes(client: &AdminClient, version: &str) -> BTreeSet<String> {
    client
        .list::<RouteSpec>()
        .await
        .expect("list routes")
        .into_iter()
        .filter(|r| {
            r.spec
                .api_version
                .as_ref()
                .is_some_and(|v| v.api == "users" && v.version == version)
        })
        .map(|r| r.name)
        .collect()
}

fn names(routes: &[Entity<RouteSpec>]) -> BTreeSet<String> {
    routes.iter().map(|r| r.name.clone()).collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

/// `POST .../import` of `body` as `content_type` through `client`: the status and JSON answer.
async fn post_import(
    client: &AdminClient,
    version: &str,
    body: Vec<u8>,
    content_type: &str,
) -> (StatusCode, Value) {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        content_type.parse().expect("a media type"),
    );
    let path = format!("/apis/users/versions/{version}/import");
    let (status, _, answer) = client
        .request(Method::POST, &path, Some(body), headers)
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
    (status, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_documents_route_their_paths_on_every_node_and_broken_ones_change_nothing() {
    let s = Setup::start().await;
    s.version("v1", "/users-api/v1").await;
    s.version("v2", "/users-api/v2").await;
    let via = s.as_a(s.follower());

    // A YAML 3.0 document, through a follower.
    let made = via
        .import_openapi(
            "users",
            "v1",
            USERS_YAML.as_bytes().to_vec(),
            Some("application/yaml"),
        )
        .await
        .expect("import the YAML document");
    let v1 = set(&[
        "users-v1-get-users",
        "users-v1-post-users",
        "users-v1-get-users-id",
        "users-v1-delete-users-id",
        "users-v1-post-status",
    ]);
    assert_eq!(names(&made), v1);
    for route in &made {
        assert_eq!(route.spec.service, "users-svc");
        assert_eq!(route.spec.team.as_deref(), Some("a"));
    }
    s.routes_everywhere("v1", &v1).await;
    // The upstream gets the document's path, the query kept; other paths and methods do not
    // match.
    s.serves_everywhere("/users-api/v1/users/42", Some("/users/42"))
        .await;
    s.serves_everywhere("/users-api/v1/users?page=2", Some("/users?page=2"))
        .await;
    s.serves_everywhere("/users-api/v1/users/42/extra", None)
        .await;
    s.serves_everywhere("/users-api/v1/status", None).await;
    s.serves_everywhere("/users/42", None).await;

    // The document is kept, and served back as it was written.
    let stored = via
        .get_under::<ApiVersionSpec>("users", "v1")
        .await
        .expect("read v1");
    assert_eq!(stored.spec.openapi.as_deref(), Some(USERS_YAML));
    assert_eq!(
        via.get_openapi("users", "v1").await.expect("the document"),
        ("application/yaml".to_owned(), USERS_YAML.to_owned())
    );

    // A JSON 3.1 document, told apart by its first character.
    let posts = json!({
        "openapi": "3.1.0",
        "info": {"title": "Users", "version": "2"},
        "paths": {
            "/users/{id}/posts/{post}": {"get": {"responses": {"200": {"description": "a post"}}}},
            "/users/{id}/posts/latest": {"get": {}},
        },
        "components": {"schemas": {}},
    })
    .to_string();
    let made = via
        .import_openapi("users", "v2", posts.clone().into_bytes(), None)
        .await
        .expect("import the JSON document");
    let v2 = set(&[
        "users-v2-get-users-id-posts-post",
        "users-v2-get-users-id-posts-latest",
    ]);
    assert_eq!(names(&made), v2);
    s.routes_everywhere("v2", &v2).await;
    s.serves_everywhere("/users-api/v2/users/7/posts/9", Some("/users/7/posts/9"))
        .await;
    s.serves_everywhere(
        "/users-api/v2/users/7/posts/latest",
        Some("/users/7/posts/latest"),
    )
    .await;
    assert_eq!(
        via.get_openapi("users", "v2").await.expect("the document"),
        ("application/json".to_owned(), posts)
    );

    // Broken documents: 400 naming where, and nothing changes.
    let broken = [
        (
            USERS_YAML.replace("    delete:\n", "    delete: 5\n    other:\n"),
            "paths./users/{id}.delete",
        ),
        (
            "openapi: 3.0.3\ninfo: {title: t, version: '1'}\n".to_owned(),
            "paths",
        ),
        (
            USERS_YAML.replace("openapi: 3.0.3", "swagger: '2.0'"),
            "openapi",
        ),
        (
            USERS_YAML.replace("openapi: 3.0.3", "openapi: 3.2.0"),
            "openapi",
        ),
        (
            USERS_YAML.replace("/users/{id}:", "/users/{id:"),
            "paths./users/{id",
        ),
        (
            USERS_YAML.replace(
                "    post:\n      responses:\n        201",
                "    post: [1]\n    put:\n      responses:\n        201",
            ),
            "paths./users.post",
        ),
    ];
    for (doc, field) in &broken {
        let (status, answer) = post_import(&via, "v1", doc.clone().into_bytes(), "text/yaml").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {answer}");
        assert_eq!(answer["field"], *field, "{answer}");
        assert_eq!(answer["error"], "invalid_request", "{answer}");
    }
    let (status, answer) =
        post_import(&via, "v1", b"{\"openapi\": ".to_vec(), "application/json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let huge = format!("{USERS_YAML}# {}\n", "x".repeat(1 << 20));
    let (status, _) = post_import(&via, "v1", huge.into_bytes(), "text/yaml").await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // Made for a version of v1 other than the stored one: 412, nothing changes.
    let mut headers = HeaderMap::new();
    headers.insert(http::header::IF_MATCH, "1".parse().expect("a version"));
    let (status, _, answer) = via
        .request(
            Method::POST,
            "/apis/users/versions/v1/import",
            Some(b"openapi: 3.0.0\npaths: {/x: {get: {}}}\n".to_vec()),
            headers,
        )
        .await
        .expect("POST with If-Match");
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{answer:?}");
    // A route name another route has: refused whole (409), nothing changes.
    s.as_a(s.leader)
        .put(
            "users-v1-get-b",
            &support::route("users-svc", "/elsewhere"),
            None,
        )
        .await
        .expect("a route of no version");
    let clash = json!({"openapi": "3.0.0", "paths": {"/a": {"get": {}}, "/b": {"get": {}}}});
    let (status, answer) = post_import(
        &via,
        "v1",
        clash.to_string().into_bytes(),
        "application/json",
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(answer["error"], "name_taken", "{answer}");
    s.routes_everywhere("v1", &v1).await;
    assert_eq!(
        via.get_openapi("users", "v1")
            .await
            .expect("the document")
            .1,
        USERS_YAML
    );

    // A smaller document replaces the set on every node.
    let smaller = "openapi: 3.0.0\npaths:\n  /users/{id}:\n    get: {}\n";
    let made = via
        .import_openapi("users", "v1", smaller.as_bytes().to_vec(), None)
        .await
        .expect("re-import");
    let v1_now = set(&["users-v1-get-users-id"]);
    assert_eq!(names(&made), v1_now);
    s.routes_everywhere("v1", &v1_now).await;
    s.serves_everywhere("/users-api/v1/users", None).await;
    s.serves_everywhere("/users-api/v1/users/42", Some("/users/42"))
        .await;
    s.routes_everywhere("v2", &v2).await;

    // Another team's token reads the published document of a public API, as a portal does,
    // but cannot import: the version is not there for it to write (404). Nor does it find
    // a draft's document.
    let b = s.client(s.follower(), &s.b);
    let (status, answer) = post_import(&b, "v1", USERS_YAML.as_bytes().to_vec(), "text/yaml").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert_eq!(
        b.get_openapi("users", "v1")
            .await
            .expect("a public document")
            .1,
        smaller
    );
    let draft = ApiVersionSpec {
        openapi: Some(smaller.to_owned()),
        ..ApiVersionSpec::new("/users-api/v3", Backend::Service("users-svc".into()))
    };
    s.as_a(s.leader)
        .put_version("users", "v3", &draft, None)
        .await
        .expect("a draft with a document");
    let (status, answer) = post_import(&b, "v3", USERS_YAML.as_bytes().to_vec(), "text/yaml").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    let own = s.as_a(s.follower());
    let replicated = eventually(WAIT, || async { own.get_openapi("users", "v3").await.ok() }).await;
    assert_eq!(replicated.map(|(_, doc)| doc).as_deref(), Some(smaller));
    api_error(b.get_openapi("users", "v3").await, StatusCode::NOT_FOUND);
}

/// What a run of the `raftgate` binary gave: whether it succeeded, its standard output as
/// JSON (`null` when empty) and its standard error.
struct Run {
    ok: bool,
    out: Value,
    err: String,
}

/// Runs the real `raftgate` binary with `args` against the admin API at `admin` with `token`.
async fn raftgate(admin: std::net::SocketAddr, token: &str, args: &[&str]) -> Run {
    let out = tokio::process::Command::new(support::BIN)
        .args(args)
        .args(["--admin", &admin.to_string(), "--token", token])
        .env_remove("RAFTGATE_ADMIN")
        .env_remove("RAFTGATE_ADMIN_TOKEN")
        .output()
        .await
        .expect("run raftgate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let out_json = if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("raftgate {args:?} printed no JSON ({e}): {stdout}"))
    };
    Run {
        ok: out.status.success(),
        out: out_json,
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_teams_apis_versions_imports_and_subscriptions() {
    let (cluster, leader) = Cluster::start(&ALL, Some(BOOTSTRAP)).await;
    let follower = ALL
        .into_iter()
        .find(|&id| id != leader)
        .expect("a follower");
    let admin = cluster.node(follower).addrs.admin;
    let run = |args: &'static [&'static str]| raftgate(admin, BOOTSTRAP, args);
    let ok = |run: Run, what: &str| {
        assert!(run.ok, "raftgate {what} failed: {}", run.err);
        run.out
    };

    // Teams.
    let team = ok(
        run(&["team", "put", "payments", r#"{"description":"pays"}"#]).await,
        "team put",
    );
    assert_eq!(
        (&team["name"], &team["spec"]["description"]),
        (&json!("payments"), &json!("pays"))
    );
    assert_eq!(
        ok(run(&["team", "get", "payments"]).await, "team get")["name"],
        "payments"
    );
    ok(run(&["team", "put", "empty", "{}"]).await, "team put");
    let teams = ok(run(&["team", "list"]).await, "team list");
    let listed: Vec<&str> = teams
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(listed, ["empty", "payments"]);
    assert_eq!(
        ok(run(&["team", "delete", "empty"]).await, "team delete"),
        Value::Null
    );
    let missing = run(&["team", "get", "empty"]).await;
    assert!(
        !missing.ok && missing.err.contains("404"),
        "{}",
        missing.err
    );

    // An API and a version, its service made with the generic `put`.
    let svc = json!({"targets": [{"url": "http://127.0.0.1:9", "weight": 1}], "team": "payments"});
    let svc_text = svc.to_string();
    let put_service = raftgate(
        admin,
        BOOTSTRAP,
        &["put", "services", "pay-svc", svc_text.as_str()],
    )
    .await;
    assert!(put_service.ok, "{}", put_service.err);
    let api = ok(
        run(&[
            "api",
            "put",
            "pay",
            r#"{"title":"Pay","team":"payments","subscription":"approval"}"#,
        ])
        .await,
        "api put",
    );
    assert_eq!(api["spec"]["subscription"], "approval");
    assert_eq!(
        ok(run(&["api", "get", "pay"]).await, "api get")["spec"]["title"],
        "Pay"
    );
    assert_eq!(
        ok(run(&["api", "list"]).await, "api list")[0]["name"],
        "pay"
    );
    let version = ok(
        run(&[
            "api",
            "version",
            "put",
            "pay",
            "v1",
            r#"{"base_path":"/pay/v1","backend":{"service":"pay-svc"}}"#,
        ])
        .await,
        "api version put",
    );
    assert_eq!(
        (&version["name"], &version["spec"]["state"]),
        (&json!("pay/v1"), &json!("draft"))
    );

    // Import from a file, then publish.
    let doc = "openapi: 3.1.0\npaths:\n  /charges:\n    post: {}\n  /charges/{id}:\n    get: {}\n";
    let file = cluster.dir().join("pay.yaml");
    std::fs::write(&file, doc).expect("write the document");
    let file = file.to_str().expect("a UTF-8 path").to_owned();
    let imported = raftgate(
        admin,
        BOOTSTRAP,
        &["api", "import", "pay", "v1", "-f", file.as_str()],
    )
    .await;
    assert!(imported.ok, "{}", imported.err);
    let routes: Vec<&str> = imported
        .out
        .as_array()
        .expect("the routes")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    // In the order of the document's paths.
    assert_eq!(routes, ["pay-v1-post-charges", "pay-v1-get-charges-id"]);
    let bad = cluster.dir().join("bad.yaml");
    std::fs::write(&bad, doc.replace("get: {}", "get: nope")).expect("write the document");
    let bad = bad.to_str().expect("a UTF-8 path").to_owned();
    let refused = raftgate(
        admin,
        BOOTSTRAP,
        &["api", "import", "pay", "v1", "--file", bad.as_str()],
    )
    .await;
    assert!(!refused.ok);
    assert!(
        refused.err.contains("400") && refused.err.contains("field 'paths./charges/{id}.get'"),
        "{}",
        refused.err
    );
    let published = ok(
        run(&["api", "transition", "pay", "v1", "published"]).await,
        "api transition",
    );
    assert_eq!(published["spec"]["state"], "published");
    let illegal = run(&["api", "transition", "pay", "v1", "draft"]).await;
    assert!(
        !illegal.ok && illegal.err.contains("409"),
        "{}",
        illegal.err
    );
    let unknown = run(&["api", "transition", "pay", "v1", "gone"]).await;
    assert!(
        !unknown.ok && unknown.err.contains("draft, published"),
        "{}",
        unknown.err
    );
    let read = ok(
        run(&["api", "version", "get", "pay", "v1"]).await,
        "api version get",
    );
    assert_eq!(read["spec"]["openapi"], doc);
    assert_eq!(
        ok(
            run(&["api", "version", "list", "pay"]).await,
            "api version list"
        )
        .as_array()
        .map(Vec::len),
        Some(1)
    );

    // Subscriptions of an application through their states.
    let shop = raftgate(
        admin,
        BOOTSTRAP,
        &["put", "consumers", "shop", r#"{"team":"payments"}"#],
    )
    .await;
    assert!(shop.ok, "{}", shop.err);
    let sub = ok(
        run(&["subscription", "create", "pay", "shop"]).await,
        "subscription create",
    );
    assert_eq!(
        (&sub["name"], &sub["spec"]["state"]),
        (&json!("pay/shop"), &json!("pending"))
    );
    let listed = ok(
        run(&["subscription", "list", "pay"]).await,
        "subscription list",
    );
    assert_eq!(listed[0]["spec"]["state"], "pending");
    let approved = ok(
        run(&["subscription", "approve", "pay", "shop"]).await,
        "subscription approve",
    );
    assert_eq!(approved["spec"]["state"], "active");
    assert_eq!(
        ok(
            run(&["subscription", "revoke", "pay", "shop"]).await,
            "subscription revoke"
        ),
        Value::Null
    );
    assert_eq!(
        ok(run(&["subscription", "list", "pay"]).await, "list"),
        json!([])
    );
    ok(
        run(&["subscription", "create", "pay", "shop"]).await,
        "create again",
    );
    let rejected = ok(
        run(&["subscription", "reject", "pay", "shop"]).await,
        "subscription reject",
    );
    assert_eq!(rejected["spec"]["state"], "rejected");
    ok(
        run(&["subscription", "revoke", "pay", "shop"]).await,
        "revoke",
    );

    // Deleting the version takes its routes; then the API goes.
    ok(
        run(&["api", "version", "delete", "pay", "v1"]).await,
        "api version delete",
    );
    let routes = cluster
        .client(leader)
        .list_consistent::<RouteSpec>()
        .await
        .expect("routes");
    assert!(routes.is_empty(), "{routes:?}");
    ok(run(&["api", "delete", "pay"]).await, "api delete");
    assert_eq!(ok(run(&["api", "list"]).await, "api list"), json!([]));
}
