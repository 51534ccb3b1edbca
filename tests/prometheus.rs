//! The monitoring files in `deploy/` against a real Prometheus: a three-node cluster serves
//! traffic (successes, 404s without a route, 502s from a dead upstream, 429s from a rate limit)
//! through every node's proxy; a real `prometheus` process, configured from
//! `deploy/prometheus/prometheus.yml` with the nodes' admin addresses as targets, scrapes all
//! three (`up` is 1 for each, each node's request count is the number of requests its proxy
//! served, exactly one node is the Raft leader); and every query of
//! `deploy/grafana/raftgate-dashboard.json`, its template variables included, is valid PromQL
//! over series that exist — so the dashboard has no broken panel and no misspelled metric.
//!
//! Needs the `prometheus` binary on `PATH` (Debian: `apt-get install prometheus`); the test
//! fails, rather than skipping, without it.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::StatusCode;
use raftgate_model::policy::{LimitScope, Policies};
use raftgate_model::{NodeId, RouteSpec};
use serde_json::Value;
use support::{Cluster, ProxyClient, Upstream, eventually, free_ports, per_minute, route, service};

const TOKEN: &str = "prometheus-test-admin-token";

/// The shipped scrape configuration and dashboard, as a user gets them.
const SCRAPE_CONFIG: &str = include_str!("../deploy/prometheus/prometheus.yml");
const DASHBOARD: &str = include_str!("../deploy/grafana/raftgate-dashboard.json");

/// What Grafana puts in place of the dashboard's variables when every node is selected.
const SUBSTITUTIONS: [(&str, &str); 5] = [
    ("$__rate_interval", "1m"),
    ("$__interval", "15s"),
    ("$__range", "1h"),
    ("$job", "raftgate"),
    ("$instance", ".*"),
];

/// Metric families this test does not make a node record (AI gateway calls, connections
/// refused by a full listener): their queries must be valid and name real families, but may be
/// empty.
const NOT_EXERCISED: [&str; 2] = ["raftgate_ai_", "raftgate_connections_refused_"];

/// Where the families are registered: a family with no series yet has no `# TYPE` line on
/// `/metrics`, so its name is checked against its registration instead.
const METRICS_SOURCE: &str = include_str!("../crates/raftgate-metrics/src/lib.rs");

/// A `prometheus` process; killed when dropped, its log printed if the test failed.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Prometheus {
    /// Starts `prometheus` with `config`, keeping its configuration, data and log under `dir`.
    fn start(dir: &Path, config: &str) -> Prometheus {
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config).expect("write the Prometheus configuration");
        let log = dir.join("prometheus.log");
        let out = File::create(&log).expect("create the Prometheus log");
        let err = out.try_clone().expect("clone the Prometheus log handle");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_ports(1)[0]));
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("prometheus-data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start prometheus: {e}"));
        Prometheus { child, addr, log }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- prometheus log (last lines) ---");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// Fails the test, saying what to install, when there is no `prometheus` to run.
fn require_prometheus() {
    match Command::new("prometheus").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`prometheus --version` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "this test runs a real Prometheus, and there is no `prometheus` on PATH: \
             install it with `apt-get install prometheus` (Prometheus 2.42 or later)"
        ),
        Err(e) => panic!("run `prometheus --version`: {e}"),
    }
}

/// `deploy/prometheus/prometheus.yml` for the test cluster: the same job, scraping `targets`
/// every second.
fn scrape_config(targets: &[SocketAddr]) -> String {
    for expected in ["job_name: raftgate", "metrics_path: /metrics"] {
        assert!(
            SCRAPE_CONFIG.contains(expected),
            "prometheus.yml has `{expected}`"
        );
    }
    let list = targets
        .iter()
        .map(|t| format!("\"{t}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut replaced = (0, 0);
    let lines: Vec<String> = SCRAPE_CONFIG
        .lines()
        .map(|line| {
            let indent = &line[..line.len() - line.trim_start().len()];
            if line.trim_start().starts_with("- targets:") {
                replaced.0 += 1;
                format!("{indent}- targets: [{list}]")
            } else if line.trim() == "scrape_interval: 15s" {
                replaced.1 += 1;
                format!("{indent}scrape_interval: 1s")
            } else {
                line.to_owned()
            }
        })
        .collect();
    assert_eq!(
        replaced,
        (1, 1),
        "prometheus.yml has one static target list and a 15s scrape_interval"
    );
    lines.join("\n") + "\n"
}

/// `s` percent-encoded for a URL's query string.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Prometheus's HTTP API, through a plain HTTP client.
struct Api {
    http: ProxyClient,
    addr: SocketAddr,
}

impl Api {
    /// `GET path` parsed as JSON (error answers of the API are JSON too).
    async fn get(&self, path: &str) -> Result<Value, String> {
        let (_, body) = self.http.get(self.addr, path).await?;
        serde_json::from_str(&body).map_err(|e| format!("GET {path}: {e}: {body}"))
    }

    /// An instant query: the API's whole answer.
    async fn query(&self, promql: &str) -> Result<Value, String> {
        self.get(&format!("/api/v1/query?query={}", encode(promql)))
            .await
    }

    /// An instant query expected to give a vector: each sample's labels and value.
    async fn vector(&self, promql: &str) -> Option<Vec<(BTreeMap<String, String>, f64)>> {
        let answer = self.query(promql).await.ok()?;
        let samples = answer["data"]["result"].as_array()?;
        samples
            .iter()
            .map(|s| {
                let labels = serde_json::from_value(s["metric"].clone()).ok()?;
                let value = s["value"][1].as_str()?.parse().ok()?;
                Some((labels, value))
            })
            .collect()
    }

    /// The values of `by` per series of `promql`: `{instance → value}` and the like.
    async fn by_label(&self, promql: &str, by: &str) -> Option<BTreeMap<String, f64>> {
        let samples = self.vector(promql).await?;
        Some(
            samples
                .into_iter()
                .map(|(labels, v)| (labels.get(by).cloned().unwrap_or_default(), v))
                .collect(),
        )
    }
}

/// `GET path` through node `id`'s proxy until the route is there (anything but a 404), then
/// `times` more: every answer that counted under the route, by status.
async fn send(
    cluster: &Cluster,
    proxy: &ProxyClient,
    id: NodeId,
    path: &str,
    times: usize,
) -> BTreeMap<StatusCode, u64> {
    let addr = cluster.node(id).addrs.proxy;
    let mut answered = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = proxy.get(addr, path).await.expect("the proxy answers");
        // Before the route reaches this node the 404 counts under no route.
        if status != StatusCode::NOT_FOUND {
            *answered.entry(status).or_default() += 1;
            break;
        }
        assert!(Instant::now() < deadline, "node {id} routes {path}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..times {
        let (status, _) = proxy.get(addr, path).await.expect("the proxy answers");
        *answered.entry(status).or_default() += 1;
    }
    answered
}

/// Every string under an `expr` key in `value`.
fn exprs(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match v {
                    Value::String(expr) if key == "expr" => found.push(expr.clone()),
                    _ => exprs(v, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| exprs(v, found)),
        _ => {}
    }
}

/// `text` with the dashboard's variables replaced as Grafana would, none left over.
fn substitute(text: &str) -> String {
    let out = SUBSTITUTIONS
        .iter()
        .fold(text.to_owned(), |t, (var, value)| t.replace(var, value));
    assert!(!out.contains('$'), "an unknown variable in {text}");
    out
}

/// Every `raftgate_…` metric name `promql` mentions.
fn metric_names(promql: &str) -> BTreeSet<&str> {
    let name_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    promql
        .match_indices("raftgate_")
        .filter(|(at, _)| !promql[..*at].ends_with(name_char))
        .map(|(at, _)| {
            let rest = &promql[at..];
            &rest[..rest.find(|c| !name_char(c)).unwrap_or(rest.len())]
        })
        .collect()
}

/// Whether `name` is a sample name of a family in `families` (from `# TYPE` lines), or of a
/// family raftgate-metrics registers (`registry.register("ai_requests", …)` and the like).
fn is_family_sample(name: &str, families: &BTreeSet<String>) -> bool {
    ["", "_total", "_bucket", "_sum", "_count"]
        .iter()
        .any(|suffix| {
            name.strip_suffix(suffix).is_some_and(|family| {
                families.contains(family)
                    || family.strip_prefix("raftgate_").is_some_and(|registered| {
                        METRICS_SOURCE.contains(&format!("\"{registered}\""))
                    })
            })
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_cluster_and_every_dashboard_query_works() {
    require_prometheus();
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let started = Instant::now();

    let (cluster, _leader) = Cluster::start(&[1, 2, 3], Some(TOKEN)).await;
    let c = cluster.client(1);
    let upstream = Upstream::start("up").await;
    c.put("svc", &service(&upstream.url()), None)
        .await
        .expect("PUT service");
    // Nothing listens there: requests to it get a 5xx.
    let dead = format!("http://127.0.0.1:{}", free_ports(1)[0]);
    c.put("dead", &service(&dead), None)
        .await
        .expect("PUT dead service");
    let one_per_minute = per_minute(1, LimitScope::Route);
    c.put("one-per-minute", &one_per_minute, None)
        .await
        .expect("PUT rate limit");
    c.put("app", &route("svc", "/app"), None)
        .await
        .expect("PUT app route");
    c.put("broken", &route("dead", "/broken"), None)
        .await
        .expect("PUT broken route");
    let limited = RouteSpec {
        policies: Policies {
            rate_limits: vec!["one-per-minute".into()],
            ..Default::default()
        },
        ..route("svc", "/limited")
    };
    c.put("limited", &limited, None)
        .await
        .expect("PUT limited route");

    // A different number of requests through each node, so each node's count is its own.
    let proxy = ProxyClient::new(Duration::from_secs(10));
    let mut served: BTreeMap<String, f64> = BTreeMap::new();
    for id in [1, 2, 3] {
        let answered = send(&cluster, &proxy, id, "/app", 2 * id as usize).await;
        assert_eq!(answered.keys().collect::<Vec<_>>(), [&StatusCode::OK]);
        let admin = cluster.node(id).addrs.admin.to_string();
        served.insert(admin, answered.values().sum::<u64>() as f64);
        let (status, _) = proxy
            .get(cluster.node(id).addrs.proxy, "/nowhere")
            .await
            .expect("the proxy answers");
        assert_eq!(status, StatusCode::NOT_FOUND);
        let broken = send(&cluster, &proxy, id, "/broken", 1).await;
        assert!(
            broken.keys().all(StatusCode::is_server_error),
            "a dead upstream gives 5xx: {broken:?}"
        );
    }
    let limited = send(&cluster, &proxy, 1, "/limited", 3).await;
    assert!(
        limited.contains_key(&StatusCode::TOO_MANY_REQUESTS),
        "one request a minute: {limited:?}"
    );

    // A real Prometheus, configured from the shipped file.
    let admins: Vec<SocketAddr> = [1, 2, 3]
        .iter()
        .map(|&id| cluster.node(id).addrs.admin)
        .collect();
    let prometheus = Prometheus::start(cluster.dir(), &scrape_config(&admins));
    let api = Api {
        http: ProxyClient::new(Duration::from_secs(10)),
        addr: prometheus.addr,
    };
    let ready = eventually(Duration::from_secs(30), || async {
        let (status, _) = api.http.get(api.addr, "/-/ready").await.ok()?;
        (status == StatusCode::OK).then_some(())
    })
    .await;
    assert!(ready.is_some(), "prometheus is ready within 30 s");

    let instances: BTreeSet<String> = admins.iter().map(ToString::to_string).collect();
    let all_one: BTreeMap<String, f64> = instances.iter().map(|i| (i.clone(), 1.0)).collect();
    let up = eventually(Duration::from_secs(30), || async {
        let up = api.by_label(r#"up{job="raftgate"}"#, "instance").await?;
        (up == all_one).then_some(())
    })
    .await;
    assert!(
        up.is_some(),
        "up{{job=\"raftgate\"}} is 1 for {instances:?}: {:?}",
        api.query(r#"up{job="raftgate"}"#).await
    );

    let counted =
        r#"sum by (instance) (raftgate_http_requests_total{job="raftgate", route="app"})"#;
    let counts = eventually(Duration::from_secs(30), || async {
        let counts = api.by_label(counted, "instance").await?;
        (counts == served).then_some(())
    })
    .await;
    assert!(
        counts.is_some(),
        "each node counts the requests its proxy served, {served:?}: {:?}",
        api.by_label(counted, "instance").await
    );

    let leaders = r#"sum(raftgate_raft_is_leader{job="raftgate"})"#;
    let one_leader = eventually(Duration::from_secs(30), || async {
        let sum = api.vector(leaders).await?;
        (sum.len() == 1 && sum[0].1 == 1.0).then_some(())
    })
    .await;
    assert!(
        one_leader.is_some(),
        "exactly one leader: {:?}",
        api.query(leaders).await
    );

    // The families a node registers, from its own page, to check the names in every query.
    let (status, page) = proxy
        .get(admins[0], "/metrics")
        .await
        .expect("GET /metrics");
    assert_eq!(status, StatusCode::OK);
    let families: BTreeSet<String> = page
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();

    // Every panel reads the templated data source.
    let mut sources = Vec::new();
    collect_datasources(&dashboard, &mut sources);
    assert!(!sources.is_empty());
    for uid in sources {
        assert_eq!(uid, "${DS_PROMETHEUS}", "a panel with a fixed data source");
    }

    // The template variables: `label_values(selector, label)` through the label values API.
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    for variable in variables {
        let name = variable["name"].as_str().unwrap_or_default();
        match variable["type"].as_str() {
            Some("datasource") => {
                assert_eq!(name, "DS_PROMETHEUS");
                assert_eq!(variable["query"], "prometheus");
            }
            Some("query") => {
                let query = variable["query"]["query"]
                    .as_str()
                    .or_else(|| variable["query"].as_str())
                    .expect("a query variable's query");
                let (selector, label) = query
                    .strip_prefix("label_values(")
                    .and_then(|q| q.strip_suffix(')'))
                    .and_then(|q| q.rsplit_once(','))
                    .unwrap_or_else(|| panic!("variable {name}: not label_values(…): {query}"));
                let path = format!(
                    "/api/v1/label/{}/values?match[]={}",
                    label.trim(),
                    encode(&substitute(selector))
                );
                let answer = api.get(&path).await.expect("label values");
                assert_eq!(answer["status"], "success", "variable {name}: {answer}");
                let values: BTreeSet<String> =
                    serde_json::from_value(answer["data"].clone()).expect("label values");
                let expected = match name {
                    "job" => BTreeSet::from(["raftgate".to_owned()]),
                    "instance" => instances.clone(),
                    other => panic!("a variable the test does not know: {other}"),
                };
                assert_eq!(values, expected, "variable {name}");
            }
            other => panic!("variable {name} of an unexpected type {other:?}"),
        }
    }

    // Every panel query: valid, naming only real families, and with data unless it charts
    // something this test cannot produce. Rates need two scrapes after the traffic: retry.
    let mut queries = Vec::new();
    exprs(&dashboard["panels"], &mut queries);
    assert!(queries.len() >= 20, "the dashboard's queries: {queries:?}");
    let mut problems = Vec::new();
    for expr in &queries {
        let promql = substitute(expr);
        for name in metric_names(&promql) {
            if !is_family_sample(name, &families) {
                problems.push(format!("{name} is no family of /metrics, in {promql}"));
            }
        }
        let must_have_data = !NOT_EXERCISED.iter().any(|f| promql.contains(f));
        let answer = eventually(Duration::from_secs(20), || async {
            let answer = api.query(&promql).await.ok()?;
            let empty = answer["data"]["result"]
                .as_array()
                .is_none_or(Vec::is_empty);
            (answer["status"] != "success" || !(must_have_data && empty)).then_some(answer)
        })
        .await;
        match answer {
            Some(answer) if answer["status"] == "success" => {}
            Some(answer) => problems.push(format!("{promql}: {answer}")),
            None => problems.push(format!("{promql}: no data")),
        }
    }
    assert!(
        problems.is_empty(),
        "dashboard queries:\n{}",
        problems.join("\n")
    );
    drop(prometheus);
    eprintln!(
        "{} dashboard queries checked against a real Prometheus in {:?}",
        queries.len(),
        started.elapsed()
    );
}

/// The `uid` of every Prometheus data source reference in `value`.
fn collect_datasources(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(ds) = map.get("datasource")
                && ds["type"] == "prometheus"
            {
                found.push(ds["uid"].as_str().unwrap_or_default().to_owned());
            }
            map.values().for_each(|v| collect_datasources(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_datasources(v, found)),
        _ => {}
    }
}
