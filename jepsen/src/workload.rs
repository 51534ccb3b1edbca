//! Client workloads. Each worker is bound to one node (as in Jepsen) and loops until the
//! deadline: it records an `invoke`, calls that node's admin API (or proxy) and records how it
//! ended:
//!
//! | answer | recorded as |
//! |---|---|
//! | 2xx | `ok` |
//! | 4xx (412 version mismatch, 404...) | `fail`: the state machine refused it |
//! | 503 `no_leader` | `fail`: no leader took it, so it was not applied |
//! | 504, other 5xx, timeout, reset after sending | `info`: it may or may not have been applied |
//! | connection refused (nothing sent) | `fail` |
//!
//! After an `info` a worker continues as a new process, as in Jepsen: its old operation may still
//! be in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::Method;
use raftgate_model::api::ErrorBody;
use raftgate_model::{ConsumerSpec, Entity};
use rand::Rng;
use serde_json::{Value, json};

use crate::client::{HttpError, Response};
use crate::db::Cluster;
use crate::history::{Op, OpType, Process, Recorder};

/// Timeout of one client operation: above the server's own 5 s leader wait plus its 5 s wait for
/// the local apply, so that a timeout here really means "no answer".
pub const OP_TIMEOUT: Duration = Duration::from_secs(12);
/// Prefix of the register keys (consumer names).
pub const REGISTER_PREFIX: &str = "reg-";
/// Prefix of the set elements (consumer names).
pub const SET_PREFIX: &str = "set-";
/// Service and route the proxy workload goes through.
const PROXY_SERVICE: &str = "jepsen-upstream";
const PROXY_ROUTE: &str = "jepsen";
/// Path requested through the proxies.
const PROXY_PATH: &str = "/jepsen/ping";

/// What every worker shares.
#[derive(Clone)]
pub struct Ctx {
    /// The nodes.
    pub cluster: Arc<Cluster>,
    /// The history.
    pub rec: Recorder,
    /// Set when workers must stop.
    pub stop: Arc<AtomicBool>,
    /// Source of process numbers.
    pub processes: Arc<AtomicU64>,
    /// Source of unique values.
    pub values: Arc<AtomicU64>,
}

impl Ctx {
    fn new_process(&self) -> u64 {
        self.processes.fetch_add(1, Ordering::SeqCst)
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// The node worker `w` talks to: workers are spread evenly and stay on their node, as
    /// Jepsen binds each client to one node, so a paused node holds up only its own clients.
    fn node_of(&self, w: usize) -> usize {
        w % self.cluster.len() + 1
    }

    /// Sleeps a random time with mean `mean`, or less if the run stops.
    async fn pace(&self, mean: Duration) {
        let ms = mean.as_millis() as u64;
        let wait = rand::rng().random_range(0..=ms.saturating_mul(2).max(1));
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
}

/// How a client-visible answer ends an operation.
pub fn classify(result: &Result<Response, HttpError>) -> (OpType, Option<String>) {
    match result {
        Ok(r) if r.status.is_success() => (OpType::Ok, None),
        Ok(r) => {
            let code = serde_json::from_slice::<ErrorBody>(&r.body)
                .map(|b| b.error)
                .unwrap_or_else(|_| r.status.to_string());
            let kind = if r.status.is_client_error() || code == "no_leader" {
                OpType::Fail
            } else {
                OpType::Info
            };
            (kind, Some(format!("{} {code}", r.status.as_u16())))
        }
        Err(e) if e.maybe_sent() => (OpType::Info, Some(e.to_string())),
        Err(e) => (OpType::Fail, Some(e.to_string())),
    }
}

fn op(process: u64, kind: OpType, f: &str, key: Option<&str>, value: Value, node: usize) -> Op {
    Op {
        process: Process::Client(process),
        kind,
        f: f.to_string(),
        key: key.map(str::to_string),
        value,
        time: 0,
        node: Some(node),
        error: None,
    }
}

/// Register keys in use: `slots` keys at a time, each retired after `limit` operations so that
/// every key's history stays short enough for the linearizability checker.
struct Keys {
    gens: std::sync::Mutex<Vec<(u64, u64)>>,
    limit: u64,
}

impl Keys {
    fn pick(&self) -> String {
        let mut gens = self.gens.lock().unwrap_or_else(|p| p.into_inner());
        let slot = rand::rng().random_range(0..gens.len());
        let (generation, count) = &mut gens[slot];
        *count += 1;
        if *count > self.limit {
            *generation += 1;
            *count = 1;
        }
        format!("{REGISTER_PREFIX}{slot}-{generation}")
    }
}

/// Settings of the register workload.
#[derive(Debug, Clone)]
pub struct RegisterOpts {
    /// Concurrent workers.
    pub concurrency: usize,
    /// Target operations per second over all workers.
    pub rate: f64,
    /// Keys in use at once.
    pub keys: usize,
    /// Operations per key before it is retired.
    pub ops_per_key: u64,
}

/// Reads (`?consistent=true`), writes and CAS (`If-Match`) on consumers' `custom_id`.
pub async fn register(ctx: Ctx, opts: RegisterOpts) {
    let keys = Arc::new(Keys {
        gens: std::sync::Mutex::new(vec![(0, 0); opts.keys.max(1)]),
        limit: opts.ops_per_key.max(1),
    });
    let mean = Duration::from_secs_f64(opts.concurrency as f64 / opts.rate.max(0.1));
    let workers: Vec<_> = (0..opts.concurrency)
        .map(|w| {
            let ctx = ctx.clone();
            let keys = keys.clone();
            tokio::spawn(async move {
                let mut process = ctx.new_process();
                while !ctx.stopped() {
                    ctx.pace(mean).await;
                    if ctx.stopped() {
                        break;
                    }
                    let key = keys.pick();
                    let node = ctx.node_of(w);
                    let roll: f64 = rand::rng().random();
                    let completed = if roll < 0.5 {
                        read(&ctx, process, &key, node).await.0
                    } else if roll < 0.75 {
                        write(&ctx, process, &key, node).await
                    } else {
                        match read(&ctx, process, &key, node).await {
                            (OpType::Ok, Some(current)) => {
                                cas(&ctx, process, &key, node, current).await
                            }
                            (kind, _) => kind,
                        }
                    };
                    if completed == OpType::Info {
                        process = ctx.new_process();
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
}

/// What a read saw: the register value and the entity version (0 when absent).
#[derive(Debug, Clone, Copy)]
struct Seen {
    value: Option<u64>,
    version: u64,
}

fn register_value(entity: &Entity<ConsumerSpec>) -> Option<u64> {
    entity
        .spec
        .custom_id
        .as_deref()
        .and_then(|s| s.parse().ok())
}

async fn read(ctx: &Ctx, process: u64, key: &str, node: usize) -> (OpType, Option<Seen>) {
    ctx.rec.record(op(
        process,
        OpType::Invoke,
        "read",
        Some(key),
        Value::Null,
        node,
    ));
    let path = format!("/consumers/{key}?consistent=true");
    let result = ctx
        .cluster
        .admin(node, Method::GET, &path, &[], None, OP_TIMEOUT)
        .await;
    let (mut kind, mut error) = classify(&result);
    let mut seen = None;
    match &result {
        Ok(r) if r.status.is_success() => {
            match serde_json::from_slice::<Entity<ConsumerSpec>>(&r.body) {
                Ok(entity) => {
                    seen = Some(Seen {
                        value: register_value(&entity),
                        version: entity.version,
                    })
                }
                Err(e) => {
                    kind = OpType::Info;
                    error = Some(format!("undecodable body: {e}"));
                }
            }
        }
        Ok(r) if r.status == http::StatusCode::NOT_FOUND => {
            kind = OpType::Ok;
            error = None;
            seen = Some(Seen {
                value: None,
                version: 0,
            });
        }
        _ => {}
    }
    // A read has no effect: an unknown outcome is as good as a failure.
    if kind == OpType::Info {
        kind = OpType::Fail;
    }
    let mut done = op(
        process,
        kind,
        "read",
        Some(key),
        seen.map_or(Value::Null, |s| json!(s.value)),
        node,
    );
    done.error = error;
    ctx.rec.record(done);
    (kind, seen)
}

async fn put_consumer(
    ctx: &Ctx,
    node: usize,
    name: &str,
    spec: &ConsumerSpec,
    if_match: Option<u64>,
) -> Result<Response, HttpError> {
    let body = serde_json::to_vec(spec).unwrap_or_default();
    let headers: Vec<(&str, String)> = if_match
        .map(|v| vec![("if-match", format!("\"{v}\""))])
        .unwrap_or_default();
    ctx.cluster
        .admin(
            node,
            Method::PUT,
            &format!("/consumers/{name}"),
            &headers,
            Some(body),
            OP_TIMEOUT,
        )
        .await
}

async fn write(ctx: &Ctx, process: u64, key: &str, node: usize) -> OpType {
    let value = ctx.values.fetch_add(1, Ordering::SeqCst);
    ctx.rec.record(op(
        process,
        OpType::Invoke,
        "write",
        Some(key),
        json!(value),
        node,
    ));
    let spec = ConsumerSpec {
        custom_id: Some(value.to_string()),
        ..Default::default()
    };
    let result = put_consumer(ctx, node, key, &spec, None).await;
    finish(
        ctx,
        process,
        "write",
        Some(key),
        json!(value),
        node,
        &result,
    )
}

async fn cas(ctx: &Ctx, process: u64, key: &str, node: usize, current: Seen) -> OpType {
    let new = ctx.values.fetch_add(1, Ordering::SeqCst);
    let value = json!([current.value, new]);
    ctx.rec.record(op(
        process,
        OpType::Invoke,
        "cas",
        Some(key),
        value.clone(),
        node,
    ));
    let spec = ConsumerSpec {
        custom_id: Some(new.to_string()),
        ..Default::default()
    };
    let result = put_consumer(ctx, node, key, &spec, Some(current.version)).await;
    finish(ctx, process, "cas", Some(key), value, node, &result)
}

fn finish(
    ctx: &Ctx,
    process: u64,
    f: &str,
    key: Option<&str>,
    value: Value,
    node: usize,
    result: &Result<Response, HttpError>,
) -> OpType {
    let (kind, error) = classify(result);
    let mut done = op(process, kind, f, key, value, node);
    done.error = error;
    ctx.rec.record(done);
    kind
}

/// Settings of the set workload.
#[derive(Debug, Clone)]
pub struct SetOpts {
    /// Concurrent workers.
    pub concurrency: usize,
    /// Target adds per second over all workers.
    pub rate: f64,
}

/// Unique adds: each operation creates one consumer `set-<n>`.
pub async fn set(ctx: Ctx, opts: SetOpts) {
    let mean = Duration::from_secs_f64(opts.concurrency as f64 / opts.rate.max(0.1));
    let workers: Vec<_> = (0..opts.concurrency)
        .map(|w| {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let mut process = ctx.new_process();
                while !ctx.stopped() {
                    ctx.pace(mean).await;
                    if ctx.stopped() {
                        break;
                    }
                    let element = ctx.values.fetch_add(1, Ordering::SeqCst);
                    let node = ctx.node_of(w);
                    ctx.rec.record(op(
                        process,
                        OpType::Invoke,
                        "add",
                        None,
                        json!(element),
                        node,
                    ));
                    let spec = ConsumerSpec {
                        tags: vec!["jepsen-set".into()],
                        ..Default::default()
                    };
                    let name = format!("{SET_PREFIX}{element}");
                    let result = put_consumer(&ctx, node, &name, &spec, None).await;
                    if finish(&ctx, process, "add", None, json!(element), node, &result)
                        == OpType::Info
                    {
                        process = ctx.new_process();
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
}

/// Reads the set elements node `node` holds in its local state (no consensus, so a node's own
/// replica is what is checked). `None` when the node does not answer.
pub async fn read_set(ctx: &Ctx, node: usize) -> Option<Vec<u64>> {
    let resp = ctx
        .cluster
        .admin(node, Method::GET, "/consumers", &[], None, OP_TIMEOUT)
        .await
        .ok()?;
    if !resp.status.is_success() {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct List {
        data: Vec<Entity<ConsumerSpec>>,
    }
    let list: List = serde_json::from_slice(&resp.body).ok()?;
    Some(
        list.data
            .iter()
            .filter_map(|e| e.name.strip_prefix(SET_PREFIX)?.parse().ok())
            .collect(),
    )
}

/// Final read of the set on every node, recorded as `read-all` operations. Retries each node until
/// it holds every acknowledged element or `within` has passed, so a replica that is merely behind
/// is not reported as a loss.
pub async fn final_set_reads(ctx: &Ctx, acked: &std::collections::BTreeSet<u64>, within: Duration) {
    let deadline = Instant::now() + within;
    for node in 1..=ctx.cluster.len() {
        let process = ctx.new_process();
        ctx.rec.record(op(
            process,
            OpType::Invoke,
            "read-all",
            None,
            Value::Null,
            node,
        ));
        let mut last = None;
        loop {
            if let Some(seen) = read_set(ctx, node).await {
                let held: std::collections::HashSet<u64> = seen.iter().copied().collect();
                let complete = acked.iter().all(|e| held.contains(e));
                last = Some(seen);
                if complete {
                    break;
                }
            }
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let (kind, value) = match last {
            Some(mut seen) => {
                seen.sort_unstable();
                (OpType::Ok, json!(seen))
            }
            None => (OpType::Fail, Value::Null),
        };
        ctx.rec
            .record(op(process, kind, "read-all", None, value, node));
    }
}

/// Creates the upstream service and the route the proxy workload uses, then waits until every
/// node's proxy serves it.
pub async fn setup_proxy(ctx: &Ctx, upstream: std::net::SocketAddr) -> Result<(), String> {
    let service = json!({"targets": [{"url": format!("http://{upstream}"), "weight": 1}]});
    let route = json!({"service": PROXY_SERVICE, "paths": ["/jepsen"], "strip_path": true});
    for (path, body) in [
        (format!("/services/{PROXY_SERVICE}"), service),
        (format!("/routes/{PROXY_ROUTE}"), route),
    ] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let result = ctx
                .cluster
                .admin(
                    1,
                    Method::PUT,
                    &path,
                    &[],
                    Some(body.to_string().into_bytes()),
                    OP_TIMEOUT,
                )
                .await;
            match result {
                Ok(r) if r.status.is_success() => break,
                other if Instant::now() > deadline => {
                    return Err(format!("PUT {path} failed: {:?}", classify(&other).1));
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
    for node in 1..=ctx.cluster.len() {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !probe(ctx, node).await.0 {
            if Instant::now() > deadline {
                return Err(format!("node {node}'s proxy does not serve {PROXY_PATH}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

async fn probe(ctx: &Ctx, node: usize) -> (bool, Option<String>) {
    let result = crate::client::send(
        ctx.cluster.proxy_addr(node),
        Method::GET,
        PROXY_PATH,
        &[],
        None,
        Duration::from_secs(1),
    )
    .await;
    match result {
        Ok(r) if r.status.is_success() && r.body.as_ref() == b"ok" => (true, None),
        Ok(r) => (false, Some(format!("status {}", r.status.as_u16()))),
        Err(e) => (false, Some(e.to_string())),
    }
}

/// Requests through every node's proxy, `per_node_rate` per second each, recorded as `proxy`
/// operations (`ok` or `fail`; a proxied GET changes nothing, so there is no `info`).
pub async fn proxy(ctx: Ctx, per_node_rate: f64) {
    let period = Duration::from_secs_f64(1.0 / per_node_rate.max(0.1));
    let workers: Vec<_> = (1..=ctx.cluster.len())
        .map(|node| {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let process = ctx.new_process();
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !ctx.stopped() {
                    tick.tick().await;
                    ctx.rec.record(op(
                        process,
                        OpType::Invoke,
                        "proxy",
                        None,
                        Value::Null,
                        node,
                    ));
                    let (ok, error) = probe(&ctx, node).await;
                    let mut done = op(
                        process,
                        if ok { OpType::Ok } else { OpType::Fail },
                        "proxy",
                        None,
                        Value::Null,
                        node,
                    );
                    done.error = error;
                    ctx.rec.record(done);
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
}
