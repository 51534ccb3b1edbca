//! The admin commands: `cluster`, `get`, `put`, `delete`, `token`, `audit`, `metrics`, all
//! through [`AdminClient`].

use std::io::Read;

use clap::{Args, Subcommand};
use http::{HeaderMap, HeaderValue, Method, header};
use raftgate_client::AdminClient;
use raftgate_model::api::AddMember;
use raftgate_model::{Kind, NodeId};

use crate::CliError;

/// Where the admin API is and how to authenticate.
#[derive(Args, Debug)]
pub struct Target {
    /// Admin API address of any node.
    #[arg(
        long,
        env = "RAFTGATE_ADMIN",
        default_value = "127.0.0.1:9091",
        global = true
    )]
    admin: String,
    /// Admin token, if the cluster requires one.
    #[arg(
        long,
        env = "RAFTGATE_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    token: Option<String>,
}

impl Target {
    fn client(&self) -> Result<AdminClient, CliError> {
        Ok(AdminClient::new(&self.admin, self.token.clone())?)
    }
}

/// `raftgate cluster ...`
#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[command(subcommand)]
    action: ClusterAction,
    #[command(flatten)]
    target: Target,
}

#[derive(Subcommand, Debug)]
enum ClusterAction {
    /// Leader, term and members.
    Status,
    /// Add a running node (it becomes a voter once caught up).
    Add {
        /// The new node's id.
        #[arg(long)]
        id: NodeId,
        /// Its cluster (Raft) address.
        #[arg(long)]
        cluster_addr: String,
        /// Its admin API address.
        #[arg(long)]
        admin_addr: String,
        /// Its proxy address.
        #[arg(long)]
        proxy_addr: String,
    },
    /// Remove a node.
    Remove {
        /// The node's id.
        id: NodeId,
    },
    /// Build a snapshot on the node and purge the log behind it.
    Snapshot,
}

fn print_json(bytes: &[u8]) {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(v) => println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default()),
        Err(_) => println!("{}", String::from_utf8_lossy(bytes)),
    }
}

/// Sends a request and prints the answer; an error status fails the command.
async fn send(
    target: &Target,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
    if_match: Option<u64>,
) -> Result<(), CliError> {
    let mut headers = HeaderMap::new();
    if let Some(v) = if_match {
        headers.insert(header::IF_MATCH, HeaderValue::from(v));
    }
    let (status, _, bytes) = target
        .client()?
        .request(method, path, body, headers)
        .await?;
    if !bytes.is_empty() {
        print_json(&bytes);
    }
    if status.is_success() {
        Ok(())
    } else {
        Err(CliError::Config(format!("the admin API answered {status}")))
    }
}

/// Runs `raftgate cluster ...`.
pub async fn cluster(args: ClusterArgs) -> Result<(), CliError> {
    let t = &args.target;
    match args.action {
        ClusterAction::Status => send(t, Method::GET, "/cluster", None, None).await,
        ClusterAction::Add {
            id,
            cluster_addr,
            admin_addr,
            proxy_addr,
        } => {
            let body = serde_json::to_vec(&AddMember {
                id,
                cluster_addr,
                admin_addr,
                proxy_addr,
            })
            .map_err(|e| CliError::Config(e.to_string()))?;
            send(t, Method::POST, "/cluster/members", Some(body), None).await
        }
        ClusterAction::Remove { id } => {
            send(
                t,
                Method::DELETE,
                &format!("/cluster/members/{id}"),
                None,
                None,
            )
            .await
        }
        ClusterAction::Snapshot => send(t, Method::POST, "/cluster/snapshot", None, None).await,
    }
}

/// The URL collection of a kind given by name, singular or plural.
fn collection(kind: &str) -> Result<&'static str, CliError> {
    let kind = match kind.trim_end_matches('s') {
        "service" => Kind::Service,
        "route" => Kind::Route,
        "consumer" => Kind::Consumer,
        "rate-limit" => Kind::RateLimit,
        other => {
            return Err(CliError::Config(format!(
                "unknown kind '{other}'; use services, routes, consumers or rate-limits"
            )));
        }
    };
    Ok(kind.collection())
}

/// `raftgate get KIND [NAME]`
#[derive(Args, Debug)]
pub struct GetArgs {
    /// services, routes, consumers or rate-limits.
    kind: String,
    /// A name; all of the kind when absent.
    name: Option<String>,
    /// Linearizable read through the leader.
    #[arg(long)]
    consistent: bool,
    #[command(flatten)]
    target: Target,
}

/// Runs `raftgate get`.
pub async fn get(args: GetArgs) -> Result<(), CliError> {
    let mut path = format!("/{}", collection(&args.kind)?);
    if let Some(name) = &args.name {
        path = format!("{path}/{name}");
    }
    if args.consistent {
        path.push_str("?consistent=true");
    }
    send(&args.target, Method::GET, &path, None, None).await
}

/// `raftgate put KIND NAME [JSON]`
#[derive(Args, Debug)]
pub struct PutArgs {
    /// services, routes, consumers or rate-limits.
    kind: String,
    /// The resource name.
    name: String,
    /// The JSON spec; read from standard input when absent or `-`.
    json: Option<String>,
    /// Only if the stored version is this one (0: only if it does not exist).
    #[arg(long)]
    if_match: Option<u64>,
    #[command(flatten)]
    target: Target,
}

/// Runs `raftgate put`.
pub async fn put(args: PutArgs) -> Result<(), CliError> {
    let body = match args.json.as_deref() {
        Some(json) if json != "-" => json.as_bytes().to_vec(),
        _ => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(CliError::io("reading the JSON spec from standard input"))?;
            buf
        }
    };
    let path = format!("/{}/{}", collection(&args.kind)?, args.name);
    send(&args.target, Method::PUT, &path, Some(body), args.if_match).await
}

/// `raftgate delete KIND NAME`
#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// services, routes, consumers or rate-limits.
    kind: String,
    /// The resource name.
    name: String,
    /// Only if the stored version is this one.
    #[arg(long)]
    if_match: Option<u64>,
    #[command(flatten)]
    target: Target,
}

/// Runs `raftgate delete`.
pub async fn delete(args: DeleteArgs) -> Result<(), CliError> {
    let path = format!("/{}/{}", collection(&args.kind)?, args.name);
    send(&args.target, Method::DELETE, &path, None, args.if_match).await
}

/// `raftgate token ...`
#[derive(Args, Debug)]
pub struct TokenArgs {
    #[command(subcommand)]
    action: TokenAction,
    #[command(flatten)]
    target: Target,
}

#[derive(Subcommand, Debug)]
enum TokenAction {
    /// Create a token; its secret is printed once.
    Create {
        /// The token's name, recorded as the actor of its writes in the audit log.
        name: String,
        /// `admin` or `read-only`.
        #[arg(long, default_value = "admin")]
        role: String,
    },
    /// List the tokens (names and roles, never secrets).
    List,
    /// Revoke a token on every node.
    Delete {
        /// The token's name.
        name: String,
    },
}

/// Runs `raftgate token ...`.
pub async fn token(args: TokenArgs) -> Result<(), CliError> {
    let t = &args.target;
    match args.action {
        TokenAction::Create { name, role } => {
            let body = serde_json::json!({ "name": name, "role": role });
            send(
                t,
                Method::POST,
                "/tokens",
                Some(body.to_string().into_bytes()),
                None,
            )
            .await
        }
        TokenAction::List => send(t, Method::GET, "/tokens", None, None).await,
        TokenAction::Delete { name } => {
            send(t, Method::DELETE, &format!("/tokens/{name}"), None, None).await
        }
    }
}

/// `raftgate audit`
#[derive(Args, Debug)]
pub struct AuditArgs {
    /// At most this many entries.
    #[arg(long)]
    limit: Option<usize>,
    /// Only entries after this log index.
    #[arg(long)]
    since: Option<u64>,
    #[command(flatten)]
    target: Target,
}

/// Runs `raftgate audit`.
pub async fn audit(args: AuditArgs) -> Result<(), CliError> {
    let entries = args.target.client()?.audit(args.limit, args.since).await?;
    let json =
        serde_json::to_string_pretty(&entries).map_err(|e| CliError::Config(e.to_string()))?;
    println!("{json}");
    Ok(())
}

/// `raftgate metrics`
#[derive(Args, Debug)]
pub struct MetricsArgs {
    #[command(flatten)]
    target: Target,
}

/// Runs `raftgate metrics`: prints the node's metrics as Prometheus scrapes them.
pub async fn metrics(args: MetricsArgs) -> Result<(), CliError> {
    print!("{}", args.target.client()?.metrics().await?);
    Ok(())
}
