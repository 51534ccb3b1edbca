//! `raftgate-bench`: the load generator and reporter of raftgate's benchmarks.
//!
//! For the cluster benchmark it drives raftgate and etcd with the same code (one HTTP/1.1
//! keep-alive connection per worker, same key pattern and value size) so that their ratio, not
//! an absolute number from a shared machine, is what the benchmark reports. For the proxy
//! benchmark it fills raftgate with routes and wraps `wrk` runs with CPU and memory figures.
//! `bench/cluster` and `bench/proxy` start the systems and call it; each measuring mode prints
//! one JSON line, and `report` turns those lines into the tables.

mod analytics_table;
mod conn;
mod error;
mod failover;
mod limits;
mod load;
mod mock_llm;
mod otlp_sink;
mod proxy_report;
mod report;
mod routes;
mod stats;
mod system;
mod wal_stats;
mod writes;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::error::BenchError;
use crate::report::Record;
use crate::system::{System, Workload};

/// Command line of `raftgate-bench`.
#[derive(Debug, Parser)]
#[command(
    about = "Load generator of raftgate's benchmarks (cluster: raftgate vs etcd; proxy: raftgate vs nginx)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Concurrent puts for a fixed time; prints one JSON line (ops/s, p50, p99, max, errors).
    Writes(writes::WritesArgs),
    /// SIGKILL the leader while writing; prints one JSON line with the unavailability in ms.
    Failover(failover::FailoverArgs),
    /// One wrk run through a proxy (or direct); prints one JSON line (req/s, latency, CPU/req).
    Load(load::LoadArgs),
    /// Creates a service and a table of routes on a raftgate cluster for the proxy benchmark.
    Routes(routes::RoutesArgs),
    /// Prints the index (0-based, in --endpoints order) of the current leader; fails if none.
    Leader {
        /// The system behind the endpoints.
        #[arg(long, value_enum)]
        system: System,
        /// Comma-separated `host:port` list.
        #[arg(long, value_delimiter = ',', required = true)]
        endpoints: Vec<String>,
    },
    /// Prints the comparison table of one or more JSON-lines results files.
    Report {
        /// Results files written from this tool's output.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Writes the rate-limit benchmark's routes, limits, consumers and keys; prints the keys.
    LimitsSetup(limits::SetupArgs),
    /// Offers a steady load over the nodes with one consumer's key; prints one JSON line
    /// (admitted/limit, and what local limiting would admit).
    LimitsAccuracy(limits::AccuracyArgs),
    /// Prints the table of a `bench/limits` results file.
    LimitsReport {
        /// The results file.
        file: PathBuf,
    },
    /// Serves a mock OpenAI provider on loopback until stopped (the AI gateway benchmark's
    /// upstream).
    MockLlm(mock_llm::MockLlmArgs),
    /// Serves an OTLP trace collector that counts and drops spans, until stopped (the proxy
    /// benchmark's collector for raftgate with tracing on).
    OtlpSink(otlp_sink::OtlpSinkArgs),
    /// Fills the replicated analytics table to its bound; prints its rows, RSS and encoded size.
    AnalyticsTable(analytics_table::AnalyticsTableArgs),
    /// Prints the records and bytes of a node's Raft log directory, as one JSON line.
    WalStats(wal_stats::WalStatsArgs),
    /// Prints `count` currently free loopback TCP ports, space-separated.
    FreePorts {
        /// How many ports.
        count: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(output) => {
            println!("{output}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("raftgate-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<String, BenchError> {
    let runtime = || {
        // One thread: the load generator shares two cores with six servers, and one thread is
        // enough for tens of thousands of requests per second (see client_cpu_us_per_op).
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| BenchError::Io {
                what: "start the tokio runtime".into(),
                source,
            })
    };
    match command {
        Command::Writes(args) => {
            let report = runtime()?.block_on(writes::run(args))?;
            Ok(json_line(&Record::Writes(report)))
        }
        Command::Failover(args) => {
            let report = runtime()?.block_on(failover::run(args))?;
            Ok(json_line(&Record::Failover(report)))
        }
        Command::Load(args) => Ok(json_line(&Record::Load(load::run(args)?))),
        Command::Routes(args) => {
            let report = runtime()?.block_on(routes::run(args))?;
            Ok(serde_json::to_string(&report).unwrap_or_default())
        }
        Command::Leader { system, endpoints } => {
            let workload = Workload::new(system, 1, 1);
            let index =
                runtime()?.block_on(workload.leader_index(&endpoints, Duration::from_secs(2)))?;
            Ok(index.to_string())
        }
        Command::Report { files } => Ok(report::table(&report::read(&files)?)),
        Command::LimitsSetup(args) => {
            let report = runtime()?.block_on(limits::setup(args))?;
            Ok(serde_json::to_string(&report).unwrap_or_default())
        }
        Command::LimitsAccuracy(args) => {
            let report = runtime()?.block_on(limits::accuracy(args))?;
            Ok(serde_json::to_string(&limits::LimitsRecord::Accuracy(report)).unwrap_or_default())
        }
        Command::LimitsReport { file } => limits::report(&file),
        Command::FreePorts { count } => free_ports(count),
        Command::MockLlm(args) => runtime()?.block_on(mock_llm::run(args)),
        Command::OtlpSink(args) => runtime()?.block_on(otlp_sink::run(args)),
        Command::WalStats(args) => wal_stats::run(&args),
        Command::AnalyticsTable(args) => analytics_table::run(&args),
    }
}

fn json_line(record: &Record) -> String {
    // Plain data with string keys: serialization cannot fail.
    serde_json::to_string(record).unwrap_or_default()
}

/// Binds `count` listeners at once (so the ports are distinct), reports their ports and closes
/// them; a server started right after can bind them.
fn free_ports(count: usize) -> Result<String, BenchError> {
    let listeners = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .and_then(|ls| {
            ls.iter()
                .map(|l| l.local_addr())
                .collect::<Result<Vec<_>, _>>()
        });
    let addrs = listeners.map_err(|source| BenchError::Io {
        what: "bind a free loopback port".into(),
        source,
    })?;
    let ports: Vec<String> = addrs.iter().map(|a| a.port().to_string()).collect();
    Ok(ports.join(" "))
}
