//! `routes` mode: fills a raftgate cluster with one service and a table of routes for the proxy
//! benchmark — the route that is measured plus fillers that share its host, its path or neither,
//! so the lookup works on a realistic table and not on a single entry.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;
use raftgate_model::{RouteSpec, ServiceSpec, Target};
use serde::Serialize;

use crate::conn::Conn;
use crate::error::BenchError;

/// Settings of a `routes` run.
#[derive(Debug, Clone, clap::Args)]
pub struct RoutesArgs {
    /// `host:port` of a node's admin API (writes are forwarded to the leader).
    #[arg(long)]
    pub admin: String,
    /// Base URL of the upstream every route is served by, `http://host:port`.
    #[arg(long)]
    pub upstream: String,
    /// Routes in all, the measured one included.
    #[arg(long, default_value_t = 10)]
    pub count: usize,
    /// Host the measured route matches (the load sends it as `Host`).
    #[arg(long)]
    pub host: String,
    /// Path prefix the measured route matches (the load requests a path under it).
    #[arg(long)]
    pub prefix: String,
    /// Writes in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
}

/// What a `routes` run did.
#[derive(Debug, Serialize)]
pub struct RoutesReport {
    /// Routes written, the measured one included.
    pub routes: usize,
    /// Seconds the writes took.
    pub seconds: f64,
}

/// Name of the service every route points at.
const SERVICE: &str = "bench-upstream";

/// Name of the measured route.
pub const MEASURED: &str = "measured";

/// Per-write timeout: a write that takes longer means the cluster is in trouble.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes the service, the fillers, and last the measured route: once the measured route
/// serves on a node, every filler has been applied there too (Raft applies in log order).
pub async fn run(args: RoutesArgs) -> Result<RoutesReport, BenchError> {
    if args.count == 0 || args.concurrency == 0 {
        return Err(BenchError::Args(
            "--count and --concurrency must be at least 1".into(),
        ));
    }
    let started = Instant::now();
    let service = ServiceSpec {
        targets: vec![Target {
            url: args.upstream.clone(),
            weight: 1,
        }],
        ..ServiceSpec::default()
    };
    put(
        &mut Conn::new(args.admin.clone()),
        &format!("/services/{SERVICE}"),
        &service,
    )
    .await?;

    let fillers = args.count - 1;
    let next = Arc::new(AtomicUsize::new(1));
    let writers: Vec<_> = (0..args.concurrency.min(fillers.max(1)))
        .map(|_| {
            let next = Arc::clone(&next);
            let args = args.clone();
            tokio::spawn(async move {
                let mut conn = Conn::new(args.admin.clone());
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i > fillers {
                        return Ok(());
                    }
                    let (name, spec) = filler(i, &args.host);
                    put(&mut conn, &format!("/routes/{name}"), &spec).await?;
                }
            })
        })
        .collect();
    for writer in writers {
        writer
            .await
            .map_err(|join| BenchError::Args(format!("route writer failed: {join}")))??;
    }

    let measured = route(vec![args.host.clone()], args.prefix.clone());
    put(
        &mut Conn::new(args.admin.clone()),
        &format!("/routes/{MEASURED}"),
        &measured,
    )
    .await?;
    Ok(RoutesReport {
        routes: args.count,
        seconds: started.elapsed().as_secs_f64(),
    })
}

async fn put(conn: &mut Conn, path: &str, spec: &impl Serialize) -> Result<(), BenchError> {
    let body = Bytes::from(serde_json::to_vec(spec).unwrap_or_default());
    let addr = conn.addr().to_owned();
    conn.send(Method::PUT, path, body, WRITE_TIMEOUT)
        .await?
        .success(&addr)
        .map(drop)
}

fn route(hosts: Vec<String>, prefix: String) -> RouteSpec {
    RouteSpec {
        service: SERVICE.to_owned(),
        paths: vec![prefix],
        hosts,
        ..RouteSpec::default()
    }
}

/// Filler route number `i` (from 1): a mix of exact hosts, wildcard hosts and host-less
/// prefixes, some on the measured host itself; none matches the measured request better than
/// the measured route.
fn filler(i: usize, measured_host: &str) -> (String, RouteSpec) {
    let (hosts, prefix) = match i % 5 {
        // Another exact host, with its own path.
        0 => (vec![format!("api-{i}.bench.test")], format!("/v1/r{i}")),
        // Another exact host with a path like the measured one.
        1 => (
            vec![format!("svc-{i}.bench.test")],
            format!("/v1/items/{i}"),
        ),
        // A wildcard host.
        2 => (vec![format!("*.zone-{i}.bench.test")], format!("/z{i}")),
        // A prefix on any host.
        3 => (Vec::new(), format!("/p{i}/items")),
        // The measured host, another prefix.
        _ => (vec![measured_host.to_owned()], format!("/m{i}")),
    };
    (format!("r{i:05}"), route(hosts, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fillers_are_distinct_and_mixed() {
        let fillers: Vec<(String, RouteSpec)> =
            (1..10_000).map(|i| filler(i, "api.bench.test")).collect();
        let mut names: Vec<&str> = fillers.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 9_999);
        assert!(!names.contains(&MEASURED));
        let on_measured_host = fillers
            .iter()
            .filter(|(_, r)| r.hosts == ["api.bench.test"])
            .count();
        let without_host = fillers.iter().filter(|(_, r)| r.hosts.is_empty()).count();
        let wildcards = fillers
            .iter()
            .filter(|(_, r)| r.hosts.iter().any(|h| h.starts_with("*.")))
            .count();
        assert_eq!(
            (on_measured_host, without_host, wildcards),
            (2000, 2000, 2000)
        );
        // No filler on the measured host has a prefix of the measured path.
        assert!(
            fillers
                .iter()
                .filter(|(_, r)| r.hosts == ["api.bench.test"])
                .all(|(_, r)| !"/v1/items/42".starts_with(r.paths[0].as_str()))
        );
    }
}
