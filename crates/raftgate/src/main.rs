//! `raftgate`: run a node (`serve`), a local three-node cluster (`dev`), or talk to a cluster's
//! admin API (`cluster`, `get`, `put`, `delete`, `token`, `audit`, `metrics`, and the API
//! catalog's `team`, `api`, `subscription`).

mod admin_cli;
mod ai;
mod app;
mod config;
mod dev;
mod memory;
mod report;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "raftgate",
    version,
    about = "An API gateway whose nodes replicate their configuration by Raft"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node of a cluster.
    Serve(Box<config::ServeArgs>),
    /// Run a local three-node cluster on loopback with an example upstream and route.
    Dev(dev::DevArgs),
    /// Inspect or change the cluster membership.
    Cluster(admin_cli::ClusterArgs),
    /// Show one resource, or list a kind (services, routes, consumers, rate-limits).
    Get(admin_cli::GetArgs),
    /// Create or replace a resource from JSON.
    Put(admin_cli::PutArgs),
    /// Delete a resource.
    Delete(admin_cli::DeleteArgs),
    /// Create, list or revoke admin tokens.
    Token(admin_cli::TokenArgs),
    /// Show the audit log of admin writes.
    Audit(admin_cli::AuditArgs),
    /// Print a node's metrics (Prometheus text, as served at `GET /metrics`).
    Metrics(admin_cli::MetricsArgs),
    /// Create, show, list or delete teams.
    Team(admin_cli::TeamArgs),
    /// Manage APIs, their versions and lifecycle, and import their routes from OpenAPI.
    Api(admin_cli::ApiArgs),
    /// Subscribe applications to APIs, approve, reject or revoke subscriptions.
    Subscription(admin_cli::SubscriptionArgs),
}

/// jemalloc rather than glibc's allocator. Writing a large configuration (10,000 routes)
/// leaves glibc's heap fragmented, and from then on every proxied request's allocations that
/// miss its small-size cache searched the fragmented bins: `bench/proxy` measured 0.5 µs more
/// CPU per request with 10,000 routes than with 10 (0.91 of the 10-route throughput), against
/// 0.98 with jemalloc. mimalloc was as fast but held twice the memory (107 MiB with 10,000
/// routes, over the 64 MiB target).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("raftgate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => app::run(*args).await,
            Command::Dev(args) => dev::run(args).await,
            Command::Cluster(args) => admin_cli::cluster(args).await,
            Command::Get(args) => admin_cli::get(args).await,
            Command::Put(args) => admin_cli::put(args).await,
            Command::Delete(args) => admin_cli::delete(args).await,
            Command::Token(args) => admin_cli::token(args).await,
            Command::Audit(args) => admin_cli::audit(args).await,
            Command::Metrics(args) => admin_cli::metrics(args).await,
            Command::Team(args) => admin_cli::team(args).await,
            Command::Api(args) => admin_cli::api(args).await,
            Command::Subscription(args) => admin_cli::subscription(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raftgate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Anything a command can fail with; printed as `raftgate: <message>`.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad settings.
    #[error("{0}")]
    Config(String),
    /// The node could not start.
    #[error(transparent)]
    Start(#[from] raftgate_cluster::StartError),
    /// An admin API call failed.
    #[error(transparent)]
    Client(#[from] raftgate_client::ClientError),
    /// I/O failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

impl CliError {
    fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> CliError {
        let context = context.into();
        move |source| CliError::Io { context, source }
    }
}
