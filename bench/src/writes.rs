//! `writes` mode: N workers, one keep-alive connection each, put as fast as the cluster answers.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::conn::Conn;
use crate::error::BenchError;
use crate::stats::{self, micros};
use crate::system::{DEFAULT_KEYS_PER_WORKER, System, Workload};

/// Settings of a `writes` run.
#[derive(Debug, Clone, clap::Args)]
pub struct WritesArgs {
    /// The system behind the endpoints.
    #[arg(long, value_enum)]
    pub system: System,
    /// Comma-separated `host:port` list: raftgate admin addresses or etcd client addresses.
    /// Worker `w` uses endpoint `w mod len`.
    #[arg(long, value_delimiter = ',', required = true)]
    pub endpoints: Vec<String>,
    /// Which members receive the writes: all of them (worker `w` uses endpoint `w mod len`), only
    /// the current leader, or only the followers (whose writes are forwarded to the leader).
    #[arg(long, value_enum, default_value_t = Via::All)]
    pub via: Via,
    /// Number of workers, each with its own connection and one request in flight.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before the measurement starts (same connections, not counted).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Size of the stored value: raftgate's whole request body, etcd's value.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Distinct keys each worker cycles over (`k{worker}-{i mod keys}`): the table a run leaves
    /// behind has concurrency × keys entries.
    #[arg(long, default_value_t = DEFAULT_KEYS_PER_WORKER)]
    pub keys: u64,
    /// Per-request timeout in milliseconds; a request over it counts as an error.
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
    /// Comma-separated server process ids whose CPU time to report per write (optional).
    #[arg(long, value_delimiter = ',')]
    pub pids: Vec<u32>,
}

/// Which members a `writes` run sends to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// Every endpoint, workers spread round-robin.
    All,
    /// The leader only: the commit path without forwarding.
    Leader,
    /// The followers only: every write is forwarded.
    Follower,
}

impl Via {
    /// The lower-case name used in results.
    pub fn name(self) -> &'static str {
        match self {
            Via::All => "all",
            Via::Leader => "leader",
            Via::Follower => "follower",
        }
    }
}

/// The result line of a `writes` run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WritesReport {
    /// System measured.
    pub system: System,
    /// Members written to.
    pub via: Via,
    /// Workers.
    pub concurrency: usize,
    /// Seconds measured.
    pub duration_s: f64,
    /// Value size asked for.
    pub value_size: usize,
    /// Successful writes in the measured window.
    pub ops: u64,
    /// Successful writes per second.
    pub ops_per_s: f64,
    /// Median latency of successful writes.
    pub p50_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
    /// Slowest successful write.
    pub max_ms: f64,
    /// Failed or timed-out writes in the measured window.
    pub errors: u64,
    /// The first error seen, to tell what went wrong.
    pub first_error: Option<String>,
    /// Server CPU (all `--pids` together) per successful write, in microseconds.
    pub server_cpu_us_per_op: Option<f64>,
    /// This load generator's own CPU per successful write, in microseconds.
    pub client_cpu_us_per_op: Option<f64>,
    /// Cores used on average by everything else on the machine during the measurement (other
    /// builds, the idle cluster): a run with a high value was disturbed and should be repeated.
    pub other_cpu_cores: Option<f64>,
}

/// What one worker measured.
#[derive(Default)]
struct WorkerTally {
    latencies_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

/// Runs the load and returns its result line.
pub async fn run(args: WritesArgs) -> Result<WritesReport, BenchError> {
    if args.concurrency == 0 || args.endpoints.is_empty() || args.duration <= 0.0 {
        return Err(BenchError::Args(
            "--concurrency, --duration and --endpoints must be positive/non-empty".into(),
        ));
    }
    let workload = Arc::new(Workload::new(args.system, args.value_size, args.keys));
    let timeout = Duration::from_millis(args.timeout_ms);
    let endpoints = match args.via {
        Via::All => args.endpoints.clone(),
        via => {
            let leader = workload
                .leader_index(&args.endpoints, Duration::from_secs(2))
                .await?;
            let chosen = args
                .endpoints
                .iter()
                .enumerate()
                .filter(|(i, _)| (*i == leader) == (via == Via::Leader))
                .map(|(_, endpoint)| endpoint.clone());
            chosen.collect()
        }
    };
    if endpoints.is_empty() {
        return Err(BenchError::Args(
            "--via follower needs at least two endpoints".into(),
        ));
    }
    let measure_from = Instant::now() + Duration::from_secs_f64(args.warmup.max(0.0));
    let end = measure_from + Duration::from_secs_f64(args.duration);

    let workers: Vec<_> = (0..args.concurrency)
        .map(|worker| {
            let endpoint = endpoints[worker % endpoints.len()].clone();
            let workload = Arc::clone(&workload);
            tokio::spawn(work(worker, endpoint, workload, timeout, measure_from, end))
        })
        .collect();

    tokio::time::sleep_until(measure_from).await;
    let cpu_before = cpu_snapshot(&args.pids);
    tokio::time::sleep_until(end).await;
    let cpu_after = cpu_snapshot(&args.pids);

    let mut all = WorkerTally::default();
    for worker in workers {
        // A worker only panics on a bug in this tool; count it as an error rather than abort.
        let tally = worker.await.unwrap_or_else(|join| WorkerTally {
            errors: 1,
            first_error: Some(format!("worker failed: {join}")),
            ..WorkerTally::default()
        });
        all.latencies_us.extend(tally.latencies_us);
        all.errors += tally.errors;
        all.first_error = all.first_error.or(tally.first_error);
    }

    let ops = all.latencies_us.len() as u64;
    let summary = stats::summarize(&mut all.latencies_us);
    // CPU seconds spent during the measured window, per source.
    let server = cpu_before.server.zip(cpu_after.server).map(|(b, a)| a - b);
    let client = cpu_before.client.zip(cpu_after.client).map(|(b, a)| a - b);
    let machine = cpu_before
        .machine
        .zip(cpu_after.machine)
        .map(|(b, a)| a - b);
    let per_op = |seconds: Option<f64>| {
        seconds
            .filter(|_| ops > 0)
            .map(|seconds| seconds * 1e6 / ops as f64)
    };
    let other_cpu_cores = machine.map(|machine| {
        let ours = server.unwrap_or(0.0) + client.unwrap_or(0.0);
        ((machine - ours) / args.duration).max(0.0)
    });
    Ok(WritesReport {
        system: args.system,
        via: args.via,
        concurrency: args.concurrency,
        duration_s: args.duration,
        value_size: args.value_size,
        ops,
        ops_per_s: ops as f64 / args.duration,
        p50_ms: summary.p50_ms,
        p99_ms: summary.p99_ms,
        max_ms: summary.max_ms,
        errors: all.errors,
        first_error: all.first_error,
        server_cpu_us_per_op: per_op(server),
        client_cpu_us_per_op: per_op(client),
        other_cpu_cores,
    })
}

/// CPU seconds of the servers and of this tool at one instant; `None` when not readable.
struct CpuSnapshot {
    server: Option<f64>,
    client: Option<f64>,
    machine: Option<f64>,
}

fn cpu_snapshot(pids: &[u32]) -> CpuSnapshot {
    CpuSnapshot {
        server: (!pids.is_empty())
            .then(|| stats::total_cpu_seconds(pids).ok())
            .flatten(),
        client: stats::cpu_seconds("self").ok(),
        machine: stats::machine_busy_seconds().ok(),
    }
}

/// One worker: sequential writes on one connection until `end`; only writes that start at or
/// after `measure_from` and finish before `end` are counted.
async fn work(
    worker: usize,
    endpoint: String,
    workload: Arc<Workload>,
    timeout: Duration,
    measure_from: Instant,
    end: Instant,
) -> WorkerTally {
    let mut conn = Conn::new(endpoint);
    let mut tally = WorkerTally::default();
    for seq in 0.. {
        let started = Instant::now();
        if started >= end {
            break;
        }
        let request = workload.request(worker, seq);
        let result = conn
            .send(request.method, &request.path, request.body, timeout)
            .await
            .and_then(|reply| reply.success(conn.addr()));
        let finished = Instant::now();
        if finished > end {
            break;
        }
        let counted = started >= measure_from;
        match result {
            Ok(_) if counted => tally.latencies_us.push(micros(finished - started)),
            Ok(_) => {}
            Err(error) => {
                if counted {
                    tally.errors += 1;
                    tally.first_error.get_or_insert_with(|| error.to_string());
                }
                // Do not spin on a refused connection; a real client would back off too.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    tally
}
