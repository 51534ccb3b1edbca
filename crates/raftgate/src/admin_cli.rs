//! The admin commands: `cluster`, `get`, `put`, `delete`, `token`, `audit`, `metrics`, and
//! the API catalog's `team`, `api` and `subscription`, all through [`AdminClient`].

use std::io::Read;

use clap::{Args, Subcommand};
use http::{HeaderMap, HeaderValue, Method, header};
use raftgate_client::AdminClient;
use raftgate_model::access::TeamSpec;
use raftgate_model::api::AddMember;
use raftgate_model::catalog::{ApiSpec, ApiVersionSpec, Lifecycle, SubscriptionSpec};
use raftgate_model::{Kind, NodeId};
use serde::Serialize;
use serde::de::DeserializeOwned;

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

/// The JSON spec given on the command line, or read from standard input when absent or `-`.
fn spec_text(json: Option<&str>) -> Result<Vec<u8>, CliError> {
    match json {
        Some(json) if json != "-" => Ok(json.as_bytes().to_vec()),
        _ => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(CliError::io("reading the JSON spec from standard input"))?;
            Ok(buf)
        }
    }
}

/// Runs `raftgate put`.
pub async fn put(args: PutArgs) -> Result<(), CliError> {
    let body = spec_text(args.json.as_deref())?;
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
    print(&entries)
}

/// Prints an answer as indented JSON.
fn print(value: &impl Serialize) -> Result<(), CliError> {
    let json = serde_json::to_string_pretty(value).map_err(|e| CliError::Config(e.to_string()))?;
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

/// The spec of type `T` given as JSON on the command line or on standard input.
fn read_spec<T: DeserializeOwned>(json: Option<&str>) -> Result<T, CliError> {
    let text = spec_text(json)?;
    serde_json::from_slice(&text)
        .map_err(|e| CliError::Config(format!("the JSON spec is not valid: {e}")))
}

/// A lifecycle state by name, for `raftgate api transition`.
fn lifecycle(name: &str) -> Result<Lifecycle, String> {
    serde_json::from_value(serde_json::Value::String(name.to_owned()))
        .map_err(|_| "use draft, published, deprecated or retired".to_owned())
}

/// Writing a spec given as JSON: `NAME [JSON] [--if-match V]`.
#[derive(Args, Debug)]
struct Write {
    /// Its name (of the team, API or version).
    name: String,
    /// The JSON spec; read from standard input when absent or `-`.
    json: Option<String>,
    /// Only if the stored version is this one (0: only if it does not exist).
    #[arg(long)]
    if_match: Option<u64>,
}

/// `raftgate team ...`
#[derive(Args, Debug)]
pub struct TeamArgs {
    #[command(subcommand)]
    action: NamedAction,
    #[command(flatten)]
    target: Target,
}

/// What `team` and `api` do to their objects.
#[derive(Subcommand, Debug)]
enum NamedAction {
    /// Create or replace one from JSON.
    Put(Write),
    /// Show one.
    Get {
        /// The name.
        name: String,
    },
    /// List those the token sees.
    List,
    /// Delete one.
    Delete {
        /// The name.
        name: String,
        /// Only if the stored version is this one.
        #[arg(long)]
        if_match: Option<u64>,
    },
}

/// Runs `put`, `get`, `list` or `delete` on objects of kind `T` through `client`.
async fn named<T>(client: AdminClient, action: NamedAction) -> Result<(), CliError>
where
    T: raftgate_client::AdminResource + DeserializeOwned,
    T::View: Serialize,
{
    match action {
        NamedAction::Put(w) => {
            let spec: T = read_spec(w.json.as_deref())?;
            print(&client.put(&w.name, &spec, w.if_match).await?)
        }
        NamedAction::Get { name } => print(&client.get::<T>(&name).await?),
        NamedAction::List => print(&client.list::<T>().await?),
        NamedAction::Delete { name, if_match } => Ok(client.delete::<T>(&name, if_match).await?),
    }
}

/// Runs `raftgate team ...`.
pub async fn team(args: TeamArgs) -> Result<(), CliError> {
    named::<TeamSpec>(args.target.client()?, args.action).await
}

/// `raftgate api ...`
#[derive(Args, Debug)]
pub struct ApiArgs {
    #[command(subcommand)]
    action: ApiAction,
    #[command(flatten)]
    target: Target,
}

#[derive(Subcommand, Debug)]
enum ApiAction {
    #[command(flatten)]
    Named(NamedAction),
    /// An API's versions.
    Version {
        #[command(subcommand)]
        action: VersionAction,
    },
    /// Move a version to another lifecycle state.
    Transition {
        /// The API.
        api: String,
        /// The version.
        version: String,
        /// draft, published, deprecated or retired.
        #[arg(value_parser = lifecycle)]
        to: Lifecycle,
    },
    /// Replace a version's routes with those of an OpenAPI 3.0 or 3.1 document (JSON or YAML).
    Import {
        /// The API.
        api: String,
        /// The version.
        version: String,
        /// The document; `-` reads standard input. `.json` is sent as JSON, `.yaml` and
        /// `.yml` as YAML, anything else is told apart by the server.
        #[arg(short, long)]
        file: String,
    },
}

#[derive(Subcommand, Debug)]
enum VersionAction {
    /// Create or replace a version from JSON.
    Put {
        /// The API.
        api: String,
        #[command(flatten)]
        write: Write,
    },
    /// Show a version.
    Get {
        /// The API.
        api: String,
        /// The version.
        version: String,
    },
    /// List an API's versions.
    List {
        /// The API.
        api: String,
    },
    /// Delete a version and its routes.
    Delete {
        /// The API.
        api: String,
        /// The version.
        version: String,
        /// Only if the stored version is this one.
        #[arg(long)]
        if_match: Option<u64>,
    },
}

/// The document to import and its media type, by the file's extension.
fn document(file: &str) -> Result<(Vec<u8>, Option<&'static str>), CliError> {
    if file == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(CliError::io("reading the document from standard input"))?;
        return Ok((buf, None));
    }
    let text = std::fs::read(file).map_err(CliError::io(format!("reading {file}")))?;
    let extension = std::path::Path::new(file)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let media = match extension.as_deref() {
        Some("json") => Some("application/json"),
        Some("yaml" | "yml") => Some("application/yaml"),
        _ => None,
    };
    Ok((text, media))
}

/// Runs `raftgate api ...`.
pub async fn api(args: ApiArgs) -> Result<(), CliError> {
    let client = args.target.client()?;
    match args.action {
        ApiAction::Named(action) => named::<ApiSpec>(client, action).await,
        ApiAction::Version { action } => match action {
            VersionAction::Put { api, write } => {
                let spec: ApiVersionSpec = read_spec(write.json.as_deref())?;
                print(
                    &client
                        .put_version(&api, &write.name, &spec, write.if_match)
                        .await?,
                )
            }
            VersionAction::Get { api, version } => {
                print(&client.get_under::<ApiVersionSpec>(&api, &version).await?)
            }
            VersionAction::List { api } => print(&client.list_under::<ApiVersionSpec>(&api).await?),
            VersionAction::Delete {
                api,
                version,
                if_match,
            } => Ok(client.delete_version(&api, &version, if_match).await?),
        },
        ApiAction::Transition { api, version, to } => {
            print(&client.transition(&api, &version, to).await?)
        }
        ApiAction::Import { api, version, file } => {
            let (text, media) = document(&file)?;
            print(&client.import_openapi(&api, &version, text, media).await?)
        }
    }
}

/// `raftgate subscription ...`
#[derive(Args, Debug)]
pub struct SubscriptionArgs {
    #[command(subcommand)]
    action: SubscriptionAction,
    #[command(flatten)]
    target: Target,
}

/// An application's subscription to an API.
#[derive(Args, Debug)]
struct Subscription {
    /// The API.
    api: String,
    /// The application (a consumer).
    application: String,
}

#[derive(Subcommand, Debug)]
enum SubscriptionAction {
    /// Subscribe an application to an API: active at once, or pending approval.
    Create {
        #[command(flatten)]
        subscription: Subscription,
        /// One of the API's plans.
        #[arg(long)]
        plan: Option<String>,
    },
    /// List an API's subscriptions.
    List {
        /// The API.
        api: String,
    },
    /// Approve a pending subscription (an owner of the API's team).
    Approve(Subscription),
    /// Reject a pending subscription (an owner of the API's team).
    Reject(Subscription),
    /// Revoke (delete) a subscription.
    Revoke(Subscription),
}

/// Runs `raftgate subscription ...`.
pub async fn subscription(args: SubscriptionArgs) -> Result<(), CliError> {
    let client = args.target.client()?;
    match args.action {
        SubscriptionAction::Create {
            subscription: s,
            plan,
        } => print(
            &client
                .subscribe(&s.api, &s.application, plan.as_deref())
                .await?,
        ),
        SubscriptionAction::List { api } => {
            print(&client.list_under::<SubscriptionSpec>(&api).await?)
        }
        SubscriptionAction::Approve(s) => print(
            &client
                .decide_subscription(&s.api, &s.application, true)
                .await?,
        ),
        SubscriptionAction::Reject(s) => print(
            &client
                .decide_subscription(&s.api, &s.application, false)
                .await?,
        ),
        SubscriptionAction::Revoke(s) => {
            Ok(client.revoke_subscription(&s.api, &s.application).await?)
        }
    }
}
