//! `failover` mode: write continuously, SIGKILL the leader between two writes, and time how long
//! the surviving members take to accept a write again.
//!
//! The tool sends the signal itself, between two requests, so no write is in flight at the kill
//! and the measured interval runs exactly from the moment `kill` returned (the signal delivered)
//! to the end of the first successful write sent after it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::conn::Conn;
use crate::error::BenchError;
use crate::system::{DEFAULT_KEYS_PER_WORKER, System, Workload};

/// Settings of a `failover` run.
#[derive(Debug, Clone, clap::Args)]
pub struct FailoverArgs {
    /// The system behind the endpoints.
    #[arg(long, value_enum)]
    pub system: System,
    /// Comma-separated `host:port` list: raftgate admin addresses or etcd client addresses.
    #[arg(long, value_delimiter = ',', required = true)]
    pub endpoints: Vec<String>,
    /// Comma-separated process ids of the members, in the order of `--endpoints`.
    #[arg(long, value_delimiter = ',', required = true)]
    pub pids: Vec<u32>,
    /// Per-request timeout in milliseconds; after a failure the next surviving endpoint is tried.
    /// It bounds the measurement's resolution when a survivor holds a request it cannot serve
    /// (see `last_failed_attempt_ms`); 100 ms is 30 times etcd's p99 at concurrency 1 here.
    #[arg(long, default_value_t = 100)]
    pub timeout_ms: u64,
    /// Milliseconds of writing before the kill (shows the cluster healthy first).
    #[arg(long, default_value_t = 1000)]
    pub before_ms: u64,
    /// Give up after this many seconds without a successful write.
    #[arg(long, default_value_t = 30)]
    pub max_wait_s: u64,
    /// Value size, as in `writes`.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
}

/// The result line of a `failover` run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailoverReport {
    /// System measured.
    pub system: System,
    /// Index in `--endpoints` of the killed leader (the member to restart).
    pub killed_index: usize,
    /// Endpoint of the killed leader.
    pub killed_endpoint: String,
    /// Process id that was killed.
    pub killed_pid: u32,
    /// Milliseconds from the kill to the end of the first successful write after it.
    pub unavailable_ms: f64,
    /// Milliseconds from the kill to the start of the last failed write: the cluster became
    /// writable somewhere between this and `unavailable_ms` (0 when no write failed).
    pub last_failed_attempt_ms: f64,
    /// The per-request timeout used, i.e. the coarsest resolution of the measurement.
    pub timeout_ms: u64,
    /// Writes that failed after the kill, by kind of failure.
    pub failures: BTreeMap<String, u64>,
    /// Successful writes in the healthy period before the kill.
    pub writes_before_kill: u64,
}

/// Runs one kill-and-recover measurement.
pub async fn run(args: FailoverArgs) -> Result<FailoverReport, BenchError> {
    if args.pids.len() != args.endpoints.len() || args.endpoints.len() < 2 {
        return Err(BenchError::Args(
            "--pids must list one process id per endpoint, and there must be at least two".into(),
        ));
    }
    let workload = Workload::new(args.system, args.value_size, DEFAULT_KEYS_PER_WORKER);
    let timeout = Duration::from_millis(args.timeout_ms);
    let leader = workload
        .leader_index(&args.endpoints, Duration::from_secs(2))
        .await?;
    let survivors: Vec<&String> = (0..args.endpoints.len())
        .filter(|i| *i != leader)
        .map(|i| &args.endpoints[i])
        .collect();

    // The client talks to a survivor, so the kill is seen as the cluster sees it, not as a
    // dropped connection.
    let mut target = 0;
    let mut conn = Conn::new(survivors[target].clone());
    let mut seq = 0;
    let mut writes_before_kill = 0;
    let healthy_until = Instant::now() + Duration::from_millis(args.before_ms);
    while Instant::now() < healthy_until || writes_before_kill == 0 {
        let request = workload.request(0, seq);
        seq += 1;
        conn.send(request.method, &request.path, request.body, timeout)
            .await
            .and_then(|reply| reply.success(conn.addr()))?;
        writes_before_kill += 1;
    }

    let killed_pid = args.pids[leader];
    kill(killed_pid)?;
    let killed_at = Instant::now();

    let give_up = killed_at + Duration::from_secs(args.max_wait_s);
    let mut failures = BTreeMap::new();
    let mut last_failed_attempt = None;
    loop {
        let request = workload.request(0, seq);
        seq += 1;
        let started = Instant::now();
        let result = conn
            .send(request.method, &request.path, request.body, timeout)
            .await
            .and_then(|reply| reply.success(conn.addr()));
        let now = Instant::now();
        match result {
            Ok(_) => {
                return Ok(FailoverReport {
                    system: args.system,
                    killed_index: leader,
                    killed_endpoint: args.endpoints[leader].clone(),
                    killed_pid,
                    unavailable_ms: millis(now - killed_at),
                    last_failed_attempt_ms: last_failed_attempt
                        .map_or(0.0, |at: Instant| millis(at - killed_at)),
                    timeout_ms: args.timeout_ms,
                    failures,
                    writes_before_kill,
                });
            }
            Err(error) => {
                *failures.entry(failure_kind(&error)).or_insert(0) += 1;
                last_failed_attempt = Some(started);
                if now >= give_up {
                    return Err(BenchError::NoRecovery {
                        secs: args.max_wait_s,
                    });
                }
                target = (target + 1) % survivors.len();
                conn.retarget(survivors[target].clone());
                // A survivor that refuses at once (503, no leader yet) is asked again shortly,
                // not in a tight loop; 5 ms keeps the measurement fine-grained.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

fn millis(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() * 1000.0
}

/// A short label for a failed write, for the per-kind failure counts.
fn failure_kind(error: &BenchError) -> String {
    match error {
        BenchError::Status { status, .. } => format!("status_{status}"),
        BenchError::Timeout { .. } => "timeout".into(),
        BenchError::Connect { .. } => "connect".into(),
        BenchError::Http { .. } => "http".into(),
        _ => "other".into(),
    }
}

/// Sends SIGKILL to `pid` and returns once the signal has been delivered.
fn kill(pid: u32) -> Result<(), BenchError> {
    let output = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .output()
        .map_err(|error| BenchError::Kill {
            pid,
            detail: error.to_string(),
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(BenchError::Kill {
            pid,
            detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}
