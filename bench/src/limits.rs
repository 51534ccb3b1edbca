//! The rate-limit benchmark's own modes (`bench/limits` drives them):
//!
//! - `limits-setup` writes the consumers, keys, rate limits and routes;
//! - `limits-accuracy` offers a steady load with one consumer's key, spread over the nodes'
//!   proxies by weights, and counts what was admitted against the limit — and what the nodes
//!   would have admitted had each limited on its own (computed from the per-node offered load,
//!   for the two usual local set-ups: each node enforcing L/n, or each enforcing L);
//! - `limits-report` prints the table of a run: accuracy, proxy cost with and without policies
//!   next to nginx with and without `limit_req`, and the Raft entries rate limiting adds.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::StatusCode;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use raftgate_client::AdminClient;
use raftgate_model::catalog::{
    ApiSpec, ApiVersionRef, ApiVersionSpec, Backend, Lifecycle, SubscriptionMode,
};
use raftgate_model::policy::{AuthPolicy, KeyAuth, LimitScope, Policies};
use raftgate_model::{ConsumerSpec, RateLimitSpec, RateWindow, RouteSpec, ServiceSpec, Target};
use serde::{Deserialize, Serialize};

use crate::error::BenchError;
use crate::load::LoadReport;

/// Settings of `limits-setup`.
#[derive(Debug, Clone, clap::Args)]
pub struct SetupArgs {
    /// Admin API `host:port` of any node.
    #[arg(long)]
    pub admin: String,
    /// Upstream URL, `http://host:port`.
    #[arg(long)]
    pub upstream: String,
    /// Requests per minute of the measured limit.
    #[arg(long)]
    pub limit: u64,
    /// Consumers limited by it, one per accuracy scenario.
    #[arg(long, value_delimiter = ',', default_value = "even,hot")]
    pub consumers: Vec<String>,
}

/// What `limits-setup` made: each consumer's key.
#[derive(Debug, Serialize, Deserialize)]
pub struct SetupReport {
    /// API key by consumer name (the `cost` consumer is for the throughput runs).
    pub keys: BTreeMap<String, String>,
}

fn bench_error(what: &str) -> impl Fn(raftgate_client::ClientError) -> BenchError + '_ {
    move |e| BenchError::Admin(format!("{what}: {e}"))
}

fn keyed(limits: &[&str], path: &str) -> RouteSpec {
    RouteSpec {
        service: "svc".into(),
        paths: vec![path.into()],
        policies: Policies {
            auth: Some(AuthPolicy {
                key_auth: Some(KeyAuth::default()),
                ..Default::default()
            }),
            rate_limits: limits.iter().map(|l| l.to_string()).collect(),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Writes the benchmark's resources: `/limited` (key-auth, L per minute per consumer), `/cost`
/// (key-auth, a limit never reached, so every request is counted), `/open` (no policies),
/// `/keyauth` (key-auth only) and `/subscribed` (key-auth, a route of a published version of an
/// API that takes subscriptions, to which the `cost` consumer is subscribed: what the
/// subscription check adds to key-auth).
pub async fn setup(args: SetupArgs) -> Result<SetupReport, BenchError> {
    let c = AdminClient::new(&format!("http://{}", args.admin), None)
        .map_err(bench_error("admin client"))?;
    let service = ServiceSpec {
        targets: vec![Target {
            url: args.upstream.clone(),
            weight: 1,
        }],
        ..Default::default()
    };
    c.put("svc", &service, None)
        .await
        .map_err(bench_error("PUT service"))?;
    let limit = |limit| RateLimitSpec {
        limit,
        window: RateWindow::Minute,
        scope: LimitScope::Consumer,
        fixed: false,
        fail_open: false,
        team: None,
    };
    c.put("per-minute", &limit(args.limit), None)
        .await
        .map_err(bench_error("PUT rate limit"))?;
    c.put("unreached", &limit(u64::MAX / 4), None)
        .await
        .map_err(bench_error("PUT rate limit"))?;
    c.put("limited", &keyed(&["per-minute"], "/limited"), None)
        .await
        .map_err(bench_error("PUT route"))?;
    c.put("cost", &keyed(&["unreached"], "/cost"), None)
        .await
        .map_err(bench_error("PUT route"))?;
    c.put("keyauth", &keyed(&[], "/keyauth"), None)
        .await
        .map_err(bench_error("PUT route"))?;
    let api = ApiSpec {
        subscription: SubscriptionMode::Auto,
        ..Default::default()
    };
    c.put("bench", &api, None)
        .await
        .map_err(bench_error("PUT api"))?;
    let version = ApiVersionSpec {
        state: Lifecycle::Published,
        ..ApiVersionSpec::new("/subscribed", Backend::Service("svc".into()))
    };
    c.put_version("bench", "v1", &version, None)
        .await
        .map_err(bench_error("PUT api version"))?;
    let subscribed = RouteSpec {
        api_version: Some(ApiVersionRef {
            api: "bench".into(),
            version: "v1".into(),
        }),
        ..keyed(&[], "/subscribed")
    };
    c.put("subscribed", &subscribed, None)
        .await
        .map_err(bench_error("PUT route"))?;
    let open = RouteSpec {
        service: "svc".into(),
        paths: vec!["/open".into()],
        ..Default::default()
    };
    c.put("open", &open, None)
        .await
        .map_err(bench_error("PUT route"))?;
    let mut keys = BTreeMap::new();
    for consumer in args.consumers.iter().map(String::as_str).chain(["cost"]) {
        c.put(consumer, &ConsumerSpec::default(), None)
            .await
            .map_err(bench_error("PUT consumer"))?;
        let key = c
            .create_key(consumer)
            .await
            .map_err(bench_error("create key"))?;
        keys.insert(consumer.to_string(), key.key);
    }
    c.subscribe("bench", "cost", None)
        .await
        .map_err(bench_error("subscribe"))?;
    Ok(SetupReport { keys })
}

/// Settings of `limits-accuracy`.
#[derive(Debug, Clone, clap::Args)]
pub struct AccuracyArgs {
    /// Scenario name, for the report.
    #[arg(long)]
    pub label: String,
    /// Proxy `host:port` of each node.
    #[arg(long, value_delimiter = ',', required = true)]
    pub proxies: Vec<String>,
    /// Share of the load sent to each proxy, in `--proxies` order.
    #[arg(long, value_delimiter = ',', required = true)]
    pub weights: Vec<f64>,
    /// The consumer's API key.
    #[arg(long)]
    pub key: String,
    /// The limit, per minute.
    #[arg(long)]
    pub limit: u64,
    /// Offered load per minute, as a multiple of the limit.
    #[arg(long, default_value_t = 3.0)]
    pub offered: f64,
    /// Minutes the load lasts.
    #[arg(long, default_value_t = 2)]
    pub minutes: u32,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
}

/// The result of `limits-accuracy`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccuracyReport {
    /// Scenario name.
    pub label: String,
    /// The limit per minute.
    pub limit: u64,
    /// Requests offered, per node.
    pub offered: Vec<u64>,
    /// Requests admitted (200), per node.
    pub admitted: Vec<u64>,
    /// Requests refused (429), per node.
    pub refused: Vec<u64>,
    /// Other answers or failures.
    pub errors: u64,
    /// The most admitted over any minute-long span (sliding), / limit, cluster-wide.
    pub ratio: f64,
    /// Admitted per minute on average, / limit.
    pub mean_ratio: f64,
    /// What nodes limiting locally to L/n each would admit per minute, / limit.
    pub local_split_ratio: f64,
    /// What nodes limiting locally to L each would admit per minute, / limit.
    pub local_full_ratio: f64,
}

/// Sends `offered × limit` requests a minute for `minutes` at a steady rate, node `i` getting
/// `weights[i]` of them, and finds the minute-long span (any start, not only window boundaries)
/// in which the most were admitted.
pub async fn accuracy(args: AccuracyArgs) -> Result<AccuracyReport, BenchError> {
    let nodes = args.proxies.len();
    if args.weights.len() != nodes {
        return Err(BenchError::Args(
            "--weights needs one weight per proxy".into(),
        ));
    }
    let total_weight: f64 = args.weights.iter().sum();
    let minutes = args.minutes.max(1);
    let total = (args.offered * args.limit as f64 * f64::from(minutes)).round() as u64;
    // Deterministic spread: request n goes to the node furthest behind its share.
    let mut plan = Vec::with_capacity(total as usize);
    let mut sent = vec![0f64; nodes];
    for n in 0..total {
        let target = (0..nodes)
            .max_by(|&a, &b| {
                let lag = |i: usize| args.weights[i] / total_weight * (n + 1) as f64 - sent[i];
                lag(a).total_cmp(&lag(b))
            })
            .unwrap_or(0);
        sent[target] += 1.0;
        plan.push(target);
    }
    let http: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let interval = Duration::from_secs_f64(60.0 * f64::from(minutes) / total.max(1) as f64);
    let start = Instant::now();
    let limiter = std::sync::Arc::new(tokio::sync::Semaphore::new(args.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for (n, node) in plan.iter().copied().enumerate() {
        tokio::time::sleep_until((start + interval * n as u32).into()).await;
        let permit = limiter.clone().acquire_owned().await;
        let uri = format!("http://{}/limited", args.proxies[node]);
        let request = hyper::Request::get(uri)
            .header("apikey", &args.key)
            .body(Empty::new());
        let http = http.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let status = match request {
                Ok(request) => match http.request(request).await {
                    Ok(response) => {
                        let status = response.status();
                        let _ = response.into_body().collect().await;
                        Some(status)
                    }
                    Err(_) => None,
                },
                Err(_) => None,
            };
            (node, status, start.elapsed())
        });
    }
    let mut admitted = vec![0u64; nodes];
    let mut refused = vec![0u64; nodes];
    let mut errors = 0;
    let mut admitted_at = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((node, Some(StatusCode::OK), at)) => {
                admitted[node] += 1;
                admitted_at.push(at);
            }
            Ok((node, Some(StatusCode::TOO_MANY_REQUESTS), _)) => refused[node] += 1,
            _ => errors += 1,
        }
    }
    admitted_at.sort();
    let most_in_a_minute = (0..admitted_at.len())
        .map(|i| {
            let from = admitted_at[i];
            admitted_at[i..].partition_point(|&a| a < from + Duration::from_secs(60))
        })
        .max()
        .unwrap_or(0);
    let offered: Vec<u64> = sent.iter().map(|s| *s as u64).collect();
    let limit = args.limit as f64;
    let per_minute = f64::from(minutes);
    let local = |per_node: f64| {
        offered
            .iter()
            .map(|o| (*o as f64 / per_minute).min(per_node))
            .sum::<f64>()
            / limit
    };
    Ok(AccuracyReport {
        label: args.label,
        limit: args.limit,
        ratio: most_in_a_minute as f64 / limit,
        mean_ratio: admitted.iter().sum::<u64>() as f64 / per_minute / limit,
        local_split_ratio: local(limit / nodes as f64),
        local_full_ratio: local(limit),
        offered,
        admitted,
        refused,
        errors,
    })
}

/// One throughput run of the cost comparison, as `bench/limits` records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CostRun {
    /// `raftgate`, `raftgate+policies`, `raftgate+keyauth`, `raftgate+subscription`, `nginx`
    /// or `nginx+limit_req`.
    pub label: String,
    /// The wrk run.
    pub load: LoadReport,
    /// Raft log entries per second during the run (raftgate only).
    pub raft_entries_per_s: Option<f64>,
}

/// The lines a `bench/limits` run writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitsRecord {
    /// A `limits-accuracy` run.
    Accuracy(AccuracyReport),
    /// A cost run.
    Cost(CostRun),
}

/// Prints the table of one `bench/limits` results file.
pub fn report(path: &PathBuf) -> Result<String, BenchError> {
    let text = std::fs::read_to_string(path).map_err(|source| BenchError::Io {
        what: format!("read {}", path.display()),
        source,
    })?;
    let mut out = String::new();
    let mut costs: BTreeMap<String, Vec<CostRun>> = BTreeMap::new();
    out.push_str(
        "accuracy (limit L per minute, 3 L a minute offered for two minutes from a moment that is\n\
         not a window boundary; max/L: the most admitted in any minute-long span; mean/L: admitted\n\
         per minute; local: what nodes limiting on their own to L/n or L would admit a minute)\n",
    );
    out.push_str(
        "scenario  offered/node        admitted/node        max/L  mean/L  local L/n  local L\n",
    );
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let record: LimitsRecord =
            serde_json::from_str(line).map_err(|source| BenchError::Record {
                path: path.display().to_string(),
                line: n + 1,
                source,
            })?;
        match record {
            LimitsRecord::Accuracy(a) => out.push_str(&format!(
                "{:<9} {:<19} {:<19} {:>6.3} {:>7.3} {:>10.3} {:>8.3}\n",
                a.label,
                format!("{:?}", a.offered),
                format!("{:?}", a.admitted),
                a.ratio,
                a.mean_ratio,
                a.local_split_ratio,
                a.local_full_ratio
            )),
            LimitsRecord::Cost(c) => costs.entry(c.label.clone()).or_default().push(c),
        }
    }
    let mean = |runs: &[CostRun], f: &dyn Fn(&CostRun) -> Option<f64>| {
        let v: Vec<f64> = runs.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let rps = |label: &str| {
        costs
            .get(label)
            .and_then(|r| mean(r, &|c| Some(c.load.req_per_s)))
    };
    out.push_str("\ncost (wrk, keep-alive; mean of the rounds)\n");
    out.push_str("path                 req/s      p99 ms   raft entries/s\n");
    for (label, runs) in &costs {
        out.push_str(&format!(
            "{:<20} {:>9.0} {:>9.2} {:>13}\n",
            label,
            mean(runs, &|c| Some(c.load.req_per_s)).unwrap_or(0.0),
            mean(runs, &|c| Some(c.load.p99_ms)).unwrap_or(0.0),
            mean(runs, &|c| c.raft_entries_per_s).map_or("-".to_string(), |e| format!("{e:.1}"))
        ));
    }
    if let (Some(on), Some(off)) = (rps("raftgate+policies"), rps("raftgate")) {
        out.push_str(&format!(
            "\nkey-auth + rate limit keep {:.1} % of raftgate's throughput (target ≥ 90 %)\n",
            100.0 * on / off
        ));
    }
    if let (Some(on), Some(off)) = (rps("raftgate+subscription"), rps("raftgate+keyauth")) {
        out.push_str(&format!(
            "key-auth + subscription check keep {:.1} % of key-auth's throughput (target ≥ 97 %)\n",
            100.0 * on / off
        ));
    }
    if let (Some(on), Some(off)) = (rps("nginx+limit_req"), rps("nginx")) {
        out.push_str(&format!(
            "nginx limit_req keeps {:.1} % of nginx's throughput\n",
            100.0 * on / off
        ));
    }
    if let (Some(rg), Some(ng)) = (rps("raftgate+policies"), rps("nginx+limit_req")) {
        out.push_str(&format!(
            "raftgate+policies / nginx+limit_req = {:.2}\n",
            rg / ng
        ));
    }
    Ok(out)
}
