//! `load` mode: one `wrk` run against one path to the upstream (direct, nginx or raftgate),
//! with the CPU time of the proxy, the upstream and wrk itself measured around it, so that the
//! proxies are compared per request and not only by throughput.
//!
//! wrk reports through a Lua `done` hook that prints one JSON object, so nothing depends on the
//! layout of wrk's human-readable output.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::BenchError;
use crate::stats;

/// Settings of a `load` run.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// The path measured; only a label in the results.
    #[arg(long, value_enum)]
    pub path: ProxyPath,
    /// Routes in raftgate's table during the run (raftgate only).
    #[arg(long)]
    pub routes: Option<usize>,
    /// The raftgate variant measured (settings beyond the defaults, e.g. `access-log`);
    /// none for raftgate as it ships.
    #[arg(long)]
    pub variant: Option<String>,
    /// Round number, for per-round ratios.
    #[arg(long, default_value_t = 1)]
    pub round: usize,
    /// URL requested, `http://host:port/path`.
    #[arg(long)]
    pub url: String,
    /// `Host` header sent (the measured route matches it).
    #[arg(long)]
    pub host: String,
    /// wrk threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// wrk connections (all keep-alive).
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Seconds of load (a separate wrk run, same settings) before the measured one; 0 for none.
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Comma-separated process ids of the proxy (nginx: master and worker); none for direct.
    #[arg(long, value_delimiter = ',')]
    pub proxy_pids: Vec<u32>,
    /// Comma-separated process ids of the upstream server.
    #[arg(long, value_delimiter = ',')]
    pub upstream_pids: Vec<u32>,
    /// More request headers, `Name: value` (repeat the flag).
    #[arg(long = "header")]
    pub headers: Vec<String>,
    /// The wrk executable.
    #[arg(long, default_value = "wrk")]
    pub wrk: PathBuf,
}

/// The way a request reaches the upstream.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum ProxyPath {
    /// wrk talks to the upstream itself: the ceiling of the machine.
    Direct,
    /// nginx as reverse proxy.
    Nginx,
    /// A raftgate node's proxy port.
    Raftgate,
}

impl ProxyPath {
    /// The lower-case name used in results.
    pub fn name(self) -> &'static str {
        match self {
            ProxyPath::Direct => "direct",
            ProxyPath::Nginx => "nginx",
            ProxyPath::Raftgate => "raftgate",
        }
    }
}

/// The result line of a `load` run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadReport {
    /// Path measured.
    pub path: ProxyPath,
    /// Routes in raftgate's table (raftgate only).
    pub routes: Option<usize>,
    /// The raftgate variant (none: raftgate as it ships).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Round number.
    pub round: usize,
    /// wrk threads.
    pub threads: usize,
    /// wrk connections.
    pub connections: usize,
    /// Seconds wrk measured.
    pub duration_s: f64,
    /// Responses received (any status).
    pub requests: u64,
    /// Responses per second.
    pub req_per_s: f64,
    /// Median latency.
    pub p50_ms: f64,
    /// 90th percentile latency.
    pub p90_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
    /// Slowest request.
    pub max_ms: f64,
    /// Connect, read and write errors, timeouts, and answers other than 2xx/3xx.
    pub errors: u64,
    /// Mean bytes per response, headers included (the same body on every path).
    pub bytes_per_response: f64,
    /// CPU of the proxy processes per request, in microseconds.
    pub proxy_cpu_us_per_req: Option<f64>,
    /// CPU of the upstream per request, in microseconds.
    pub upstream_cpu_us_per_req: Option<f64>,
    /// CPU of wrk per request, in microseconds.
    pub load_cpu_us_per_req: Option<f64>,
    /// Resident memory of the proxy processes after the run, in KiB.
    pub proxy_rss_kib: Option<u64>,
    /// Cores used on average by everything else on the machine during the run (other builds,
    /// idle cluster nodes): a run with a high value was disturbed and should be repeated.
    pub other_cpu_cores: Option<f64>,
}

/// What the Lua hook prints: wrk's own summary (times in microseconds).
#[derive(Debug, Deserialize)]
struct WrkSummary {
    requests: u64,
    duration_us: f64,
    bytes: f64,
    errors: u64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    max_us: f64,
}

/// Marks the hook's line in wrk's output.
const MARKER: &str = "RAFTGATE_BENCH ";

/// wrk's `done` hook: one JSON line with the summary. `errors.status` counts answers other than
/// 2xx/3xx, so a proxy answering 404 cannot pass for a fast one.
const DONE_HOOK: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RAFTGATE_BENCH {"requests":%d,"duration_us":%.0f,"bytes":%.0f,"errors":%d,' ..
    '"p50_us":%.0f,"p90_us":%.0f,"p99_us":%.0f,"max_us":%.0f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"#;

/// Runs the warm-up and the measured wrk run and returns the result line.
pub fn run(args: LoadArgs) -> Result<LoadReport, BenchError> {
    if args.duration == 0 || args.connections == 0 || args.threads == 0 {
        return Err(BenchError::Args(
            "--duration, --connections and --threads must be at least 1".into(),
        ));
    }
    let script =
        std::env::temp_dir().join(format!("raftgate-bench-wrk-{}.lua", std::process::id()));
    std::fs::write(&script, DONE_HOOK).map_err(|source| BenchError::Io {
        what: format!("write {}", script.display()),
        source,
    })?;
    let result = measure(&args, &script);
    let _ = std::fs::remove_file(&script);
    result
}

fn measure(args: &LoadArgs, script: &std::path::Path) -> Result<LoadReport, BenchError> {
    if args.warmup > 0 {
        wrk(args, args.warmup, script)?;
    }
    let before = Snapshot::take(args)?;
    let started = Instant::now();
    let summary = wrk(args, args.duration, script)?;
    let wall = started.elapsed().as_secs_f64();
    let after = Snapshot::take(args)?;

    let requests = summary.requests;
    let per_req = |seconds: Option<f64>| {
        seconds
            .filter(|_| requests > 0)
            .map(|s| s * 1e6 / requests as f64)
    };
    let proxy = (!args.proxy_pids.is_empty()).then_some(after.proxy - before.proxy);
    let upstream = (!args.upstream_pids.is_empty()).then_some(after.upstream - before.upstream);
    let load = after.load - before.load;
    let others =
        (after.machine - before.machine) - proxy.unwrap_or(0.0) - upstream.unwrap_or(0.0) - load;
    let proxy_rss_kib = if args.proxy_pids.is_empty() {
        None
    } else {
        Some(
            args.proxy_pids
                .iter()
                .map(|pid| stats::rss_kib(*pid))
                .sum::<Result<u64, _>>()?,
        )
    };
    let duration_s = summary.duration_us / 1e6;
    Ok(LoadReport {
        path: args.path,
        routes: args.routes,
        variant: args.variant.clone(),
        round: args.round,
        threads: args.threads,
        connections: args.connections,
        duration_s,
        requests,
        req_per_s: if duration_s > 0.0 {
            requests as f64 / duration_s
        } else {
            0.0
        },
        p50_ms: summary.p50_us / 1000.0,
        p90_ms: summary.p90_us / 1000.0,
        p99_ms: summary.p99_us / 1000.0,
        max_ms: summary.max_us / 1000.0,
        errors: summary.errors,
        bytes_per_response: if requests > 0 {
            summary.bytes / requests as f64
        } else {
            0.0
        },
        proxy_cpu_us_per_req: per_req(proxy),
        upstream_cpu_us_per_req: per_req(upstream),
        load_cpu_us_per_req: per_req(Some(load)),
        proxy_rss_kib,
        other_cpu_cores: Some((others / wall).max(0.0)),
    })
}

/// CPU seconds consumed so far by each party.
struct Snapshot {
    proxy: f64,
    upstream: f64,
    /// wrk runs that have ended (children of this process).
    load: f64,
    machine: f64,
}

impl Snapshot {
    fn take(args: &LoadArgs) -> Result<Snapshot, BenchError> {
        Ok(Snapshot {
            proxy: stats::total_cpu_seconds(&args.proxy_pids)?,
            upstream: stats::total_cpu_seconds(&args.upstream_pids)?,
            load: stats::children_cpu_seconds()?,
            machine: stats::machine_busy_seconds()?,
        })
    }
}

/// Runs wrk for `seconds` and parses its hook's line.
fn wrk(args: &LoadArgs, seconds: u64, script: &std::path::Path) -> Result<WrkSummary, BenchError> {
    let output = Command::new(&args.wrk)
        .arg(format!("--threads={}", args.threads))
        .arg(format!("--connections={}", args.connections))
        .arg(format!("--duration={seconds}s"))
        .arg("--timeout=5s")
        .arg(format!("--header=Host: {}", args.host))
        .args(args.headers.iter().map(|h| format!("--header={h}")))
        .arg(format!("--script={}", script.display()))
        .arg(&args.url)
        .output()
        .map_err(|source| BenchError::Io {
            what: format!(
                "run {} (install it: apt-get install wrk)",
                args.wrk.display()
            ),
            source,
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let failed = || BenchError::Load {
        detail: format!(
            "{} exited with {}: {}{}",
            args.wrk.display(),
            output.status,
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        ),
    };
    if !output.status.success() {
        return Err(failed());
    }
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix(MARKER))
        .ok_or_else(failed)?;
    serde_json::from_str(line).map_err(|_| failed())
}
