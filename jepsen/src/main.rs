//! `raftgate-jepsen`: a Jepsen-style test of a raftgate cluster. Nodes run in their own network
//! namespaces; client workloads record a history; a nemesis kills, pauses, partitions and
//! replaces nodes; checkers judge the history; a report goes to the results folder. The exit code
//! is 0 when no anomaly was found, 1 when one was, 2 when the harness itself failed.
//!
//! Use it through `jepsen/run` (see jepsen/README.md).

mod checker;
mod client;
mod db;
mod error;
mod history;
mod nemesis;
mod net;
mod report;
mod upstream;
mod workload;

use std::collections::BTreeSet;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};

use crate::checker::{Analysis, Anomaly};
use crate::db::Cluster;
use crate::error::Error;
use crate::history::{OpType, Recorder};
use crate::nemesis::Schedule;
use crate::net::Net;
use crate::report::RunInfo;
use crate::workload::{Ctx, RegisterOpts, SetOpts};

/// Port of the upstream server in its namespace.
const UPSTREAM_PORT: u16 = 8080;

#[derive(Parser)]
#[command(
    name = "raftgate-jepsen",
    about = "Fault-injection tests of a raftgate cluster in network namespaces (needs root)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs one test and writes history.jsonl, report.md, report.json and node logs.
    Run(RunArgs),
    /// Removes namespaces, links, processes and data left by runs whose controller is gone.
    Cleanup {
        /// Also remove the slots of runs that still seem alive.
        #[arg(long)]
        all: bool,
    },
    /// Checks a saved history again and prints the report.
    Check {
        /// history.jsonl of a run.
        history: PathBuf,
        /// Re-read `503 no_leader` failures as unknown outcomes (`info`), to see whether a
        /// history has anomalies other than writes that took effect after a 503.
        #[arg(long)]
        no_leader_unknown: bool,
    },
    /// Prints one table of figures over several runs' results folders.
    Summarize {
        /// Results folders (each holding a report.json).
        runs: Vec<PathBuf>,
    },
    /// The upstream HTTP server (started by `run` inside its namespace).
    Upstream {
        /// Listen address.
        #[arg(long)]
        addr: SocketAddr,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Workloads, comma-separated: register, set, proxy.
    #[arg(long, default_value = "register,set,proxy")]
    workload: String,
    /// Faults, comma-separated: kill, pause, partition, membership; or mixed (all), or none.
    #[arg(long, default_value = "mixed")]
    nemesis: String,
    /// Number of nodes (3 to 9).
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Seconds of workload.
    #[arg(long, default_value_t = 120)]
    time: u64,
    /// Seconds each fault lasts.
    #[arg(long, default_value_t = 10)]
    fault_time: u64,
    /// Seconds of calm before each fault.
    #[arg(long, default_value_t = 8)]
    quiet_time: u64,
    /// Register operations per second (all workers together).
    #[arg(long, default_value_t = 40.0)]
    rate: f64,
    /// Set adds per second.
    #[arg(long, default_value_t = 10.0)]
    set_rate: f64,
    /// Proxy requests per second and node.
    #[arg(long, default_value_t = 10.0)]
    proxy_rate: f64,
    /// Register keys in use at once.
    #[arg(long, default_value_t = 4)]
    keys: usize,
    /// Operations per register key before moving to a fresh key.
    #[arg(long, default_value_t = 120)]
    ops_per_key: u64,
    /// The raftgate binary.
    #[arg(long, default_value = "target/debug/raftgate")]
    bin: PathBuf,
    /// Parent of the results folder.
    #[arg(long, default_value = "results/jepsen")]
    results: PathBuf,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RAFTGATE_JEPSEN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Cmd::Run(args) => run(args).await,
            Cmd::Cleanup { all } => {
                let cleaned = net::cleanup(all);
                eprintln!("cleaned slots: {cleaned:?}");
                Ok(true)
            }
            Cmd::Check {
                history,
                no_leader_unknown,
            } => {
                let mut ops = history::load(&history)?;
                if no_leader_unknown {
                    for op in &mut ops {
                        if op.kind == OpType::Fail
                            && op
                                .error
                                .as_deref()
                                .is_some_and(|e| e.ends_with("no_leader"))
                        {
                            op.kind = OpType::Info;
                        }
                    }
                }
                let analysis = checker::analyze(&ops);
                let info = RunInfo {
                    name: history.display().to_string(),
                    workloads: vec![],
                    nemesis: vec![],
                    nodes: 0,
                    time_s: 0,
                };
                print!("{}", report::markdown(&info, &analysis));
                Ok(analysis.anomalies.is_empty())
            }
            Cmd::Summarize { runs } => {
                let mut saved = Vec::new();
                for dir in runs {
                    let path = dir.join("report.json");
                    let text = std::fs::read_to_string(&path)
                        .map_err(Error::io(format!("reading {}", path.display())))?;
                    saved.push(serde_json::from_str(&text).map_err(|e| Error::History {
                        line: 0,
                        reason: format!("{}: {e}", path.display()),
                    })?);
                }
                print!("{}", report::summary(&saved));
                Ok(true)
            }
            Cmd::Upstream { addr } => upstream::serve(addr).await.map(|()| true),
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `YYYYMMDD-HHMMSS` in UTC.
fn timestamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Removes the network (and so every process in it) when dropped, whatever ends the run.
struct Teardown(Arc<Net>);

impl Drop for Teardown {
    fn drop(&mut self) {
        self.0.destroy();
    }
}

async fn run(args: RunArgs) -> Result<bool, Error> {
    if !(3..=9).contains(&args.nodes) {
        return Err(Error::Usage("--nodes must be between 3 and 9".into()));
    }
    let workloads: BTreeSet<String> = args
        .workload
        .split(',')
        .map(|w| w.trim().to_string())
        .filter(|w| !w.is_empty())
        .collect();
    if let Some(bad) = workloads
        .iter()
        .find(|w| !["register", "set", "proxy"].contains(&w.as_str()))
    {
        return Err(Error::Usage(format!(
            "unknown workload '{bad}': use register, set, proxy"
        )));
    }
    let faults = nemesis::parse_list(&args.nemesis)?;
    let bin = std::fs::canonicalize(&args.bin).map_err(Error::io(format!(
        "finding the raftgate binary {} (build it with cargo build -p raftgate)",
        args.bin.display()
    )))?;
    let name = format!(
        "{}-{}-{}-n{}",
        timestamp(),
        args.workload.replace(',', "+"),
        args.nemesis.replace(',', "+"),
        args.nodes
    );
    let dir = args.results.join(&name);
    std::fs::create_dir_all(&dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    tracing::info!(dir = %dir.display(), "results folder");

    let net = Arc::new(Net::create(args.nodes)?);
    let _teardown = Teardown(net.clone());
    {
        let net = net.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            let terminated = async {
                match term.as_mut() {
                    Some(t) => {
                        t.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminated => {}
            }
            eprintln!("interrupted: tearing the test network down");
            net.destroy();
            std::process::exit(130);
        });
    }
    tracing::info!(slot = net.slot(), nodes = args.nodes, "network ready");

    let upstream = SocketAddr::V4(SocketAddrV4::new(net.upstream_ip(), UPSTREAM_PORT));
    let me = std::env::current_exe().map_err(Error::io("finding this executable"))?;
    let up_log = std::fs::File::create(dir.join("upstream.log"))
        .map_err(Error::io("creating upstream.log"))?;
    let _upstream = tokio::process::Command::new("ip")
        .args(["netns", "exec", &net.upstream_ns()])
        .arg(&me)
        .arg("upstream")
        .arg("--addr")
        .arg(upstream.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(up_log)
        .kill_on_drop(true)
        .spawn()
        .map_err(Error::io("starting the upstream"))?;

    let token = format!("jepsen-{:016x}", rand::random::<u64>());
    let cluster = Arc::new(Cluster::new(net.clone(), bin, token, dir.clone()));
    for i in 1..=args.nodes {
        cluster.start(i).await?;
    }
    cluster.wait_healthy(Duration::from_secs(60)).await?;
    tracing::info!("cluster healthy");

    let rec = Recorder::create(&dir.join("history.jsonl"))
        .map_err(Error::io("creating history.jsonl"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let ctx = Ctx {
        cluster: cluster.clone(),
        rec: rec.clone(),
        stop: stop.clone(),
        processes: Arc::new(AtomicU64::new(0)),
        values: Arc::new(AtomicU64::new(1)),
    };
    if workloads.contains("proxy") {
        workload::setup_proxy(&ctx, upstream)
            .await
            .map_err(Error::Setup)?;
    }

    let mut tasks = Vec::new();
    if workloads.contains("register") {
        tasks.push(tokio::spawn(workload::register(
            ctx.clone(),
            RegisterOpts {
                concurrency: 2 * args.nodes,
                rate: args.rate,
                keys: args.keys,
                ops_per_key: args.ops_per_key,
            },
        )));
    }
    if workloads.contains("set") {
        tasks.push(tokio::spawn(workload::set(
            ctx.clone(),
            SetOpts {
                concurrency: args.nodes,
                rate: args.set_rate,
            },
        )));
    }
    if workloads.contains("proxy") {
        tasks.push(tokio::spawn(workload::proxy(ctx.clone(), args.proxy_rate)));
    }
    let nemesis_task = tokio::spawn(nemesis::run(
        cluster.clone(),
        rec.clone(),
        Schedule {
            faults: faults.clone(),
            fault_time: Duration::from_secs(args.fault_time),
            quiet_time: Duration::from_secs(args.quiet_time),
        },
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(args.time)).await;
    stop.store(true, Ordering::SeqCst);
    tracing::info!("time is up: stopping clients and healing");
    let nemesis_result = nemesis_task.await;
    for t in tasks {
        let _ = t.await;
    }

    let mut harness_anomalies = Vec::new();
    if let Ok(Err(e)) = nemesis_result {
        harness_anomalies.push(format!("the nemesis failed: {e}"));
    }
    net.heal()?;
    cluster.revive_all().await?;
    if let Err(e) = nemesis::ensure_members(&cluster).await {
        harness_anomalies.push(format!(
            "could not restore the membership after the test: {e}"
        ));
    }
    if let Err(e) = cluster.wait_healthy(Duration::from_secs(60)).await {
        harness_anomalies.push(format!(
            "the cluster did not recover within 60 s after every fault was healed: {e}"
        ));
    }
    if workloads.contains("set") {
        let acked: BTreeSet<u64> = history::pairs(&rec.snapshot())
            .iter()
            .filter(|p| p.invoke.f == "add" && p.outcome() == OpType::Ok)
            .filter_map(|p| p.invoke.value.as_u64())
            .collect();
        workload::final_set_reads(&ctx, &acked, Duration::from_secs(30)).await;
    }
    cluster.stop_all().await;

    let ops = rec.snapshot();
    let mut analysis = checker::analyze(&ops);
    for detail in harness_anomalies {
        analysis.anomalies.push(Anomaly {
            kind: "liveness".into(),
            detail,
            ops: vec![],
        });
    }
    let info = RunInfo {
        name,
        workloads: workloads.into_iter().collect(),
        nemesis: faults.iter().map(|f| f.name().to_string()).collect(),
        nodes: args.nodes,
        time_s: args.time,
    };
    write_report(&dir, &info, &analysis)?;
    Ok(analysis.anomalies.is_empty())
}

fn write_report(dir: &Path, info: &RunInfo, analysis: &Analysis) -> Result<(), Error> {
    let md = report::markdown(info, analysis);
    std::fs::write(dir.join("report.md"), &md).map_err(Error::io("writing report.md"))?;
    let json = serde_json::json!({"run": info, "analysis": analysis});
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_vec_pretty(&json).unwrap_or_default(),
    )
    .map_err(Error::io("writing report.json"))?;
    print!("{md}");
    println!("\nresults: {}", dir.display());
    Ok(())
}
