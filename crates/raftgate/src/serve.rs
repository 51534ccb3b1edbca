//! `raftgate serve`: one node — Raft, the admin API and the proxy — from flags or a TOML file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use raftgate_cluster::{Node, NodeConfig, RaftTuning, Security, TlsFiles};
use raftgate_model::{NodeId, NodeInfo};
use serde::Deserialize;

use crate::CliError;

/// Settings of a node. Every flag may also be given in the `--config` TOML file under the same
/// name (with `_` for `-`); flags win over the file.
#[derive(Args, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeArgs {
    /// TOML file with the same settings as the flags.
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// This node's id: a positive integer, unique in the cluster and stable across restarts.
    #[arg(long)]
    pub id: Option<NodeId>,
    /// Take the id from the host name's trailing ordinal plus one (`raftgate-0` is node 1), as
    /// Kubernetes StatefulSet pods are named.
    #[arg(long)]
    #[serde(default)]
    pub id_from_hostname: bool,
    /// Directory for the node's Raft log and state.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// host:port for Raft traffic between nodes.
    #[arg(long)]
    pub cluster_addr: Option<SocketAddr>,
    /// host:port of the admin API.
    #[arg(long)]
    pub admin_addr: Option<SocketAddr>,
    /// host:port of the proxy.
    #[arg(long)]
    pub proxy_addr: Option<SocketAddr>,
    /// host:port of the TLS proxy listener (certificates come from `/certificates`, chosen by SNI).
    #[arg(long)]
    pub proxy_tls_addr: Option<SocketAddr>,
    /// Largest request body the proxy forwards (413 above it); unlimited by default, since bodies
    /// are streamed.
    #[arg(long)]
    pub max_body_bytes: Option<u64>,
    /// Milliseconds a client connection (proxy or admin API) may take to send its first bytes or
    /// finish its TLS handshake, and then each HTTP/1.1 request head — which also bounds how
    /// long an HTTP/1.1 connection may idle between requests. Default 30000.
    #[arg(long)]
    pub header_timeout_ms: Option<u64>,
    /// Milliseconds an HTTP/2 client connection may go without a request before it is closed
    /// (GOAWAY). Default 60000.
    #[arg(long)]
    pub idle_timeout_ms: Option<u64>,
    /// Most open client connections per listener (proxy, proxy TLS, admin API); more are closed
    /// on accept and counted in raftgate_connections_refused_total. Default 16384.
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Milliseconds between two reports of this node's rate-limit and AI usage to the cluster
    /// (one Raft entry each): shorter is more accurate, longer costs less. Default 250.
    #[arg(long)]
    pub usage_sync_ms: Option<u64>,
    /// Most MiB of AI answers this node holds in memory at once while reading them (a complete
    /// answer is read whole, up to 32 MiB); past it an AI call is answered 503 with
    /// Retry-After, so AI traffic cannot take the memory the node's Raft work needs. Default 64.
    #[arg(long)]
    pub ai_answer_memory_mib: Option<u64>,
    /// Host name or IP other nodes and clients use to reach this node, when the listen addresses
    /// are wildcards (0.0.0.0), e.g. in containers. `{hostname}` is replaced by the host name.
    #[arg(long)]
    pub advertise_host: Option<String>,
    /// An initial peer, `ID=HOST:PORT` (its cluster address); repeat for each. Give the same list
    /// to every node; the lowest id initializes the cluster on first start.
    #[arg(long = "peer")]
    #[serde(default)]
    pub peers: Vec<String>,
    /// Require `Authorization: Bearer <token>` on the admin API. Without it the admin API only
    /// binds to loopback.
    #[arg(long, env = "RAFTGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// PEM file of the cluster CA: with --cluster-cert and --cluster-key, the cluster port speaks
    /// mutual TLS and accepts only peers with a certificate this CA signed.
    #[arg(long)]
    pub cluster_ca: Option<PathBuf>,
    /// PEM file of this node's certificate, signed by the cluster CA; it must name the host of
    /// the node's advertised cluster address (IP or DNS name).
    #[arg(long)]
    pub cluster_cert: Option<PathBuf>,
    /// PEM file of this node's private key.
    #[arg(long)]
    pub cluster_key: Option<PathBuf>,
    /// A secret shared by every node: each cluster RPC must present it, and a node without it
    /// cannot join. Prefer --cluster-secret-file or RAFTGATE_CLUSTER_SECRET over the flag.
    #[arg(long, env = "RAFTGATE_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// File holding the cluster secret (surrounding whitespace ignored).
    #[arg(long)]
    pub cluster_secret_file: Option<PathBuf>,
    /// File holding the key AI provider credentials are encrypted with at rest (the same on
    /// every node). Without it, the key is derived from the cluster secret.
    #[arg(long)]
    pub secrets_key_file: Option<PathBuf>,
    /// Raft heartbeat period in milliseconds.
    #[arg(long)]
    pub heartbeat_ms: Option<u64>,
    /// Raft election timeout range in milliseconds, `MIN-MAX`.
    #[arg(long)]
    pub election_ms: Option<String>,
    /// Build a snapshot every this many log entries.
    #[arg(long)]
    pub snapshot_every: Option<u64>,
    /// Log filter (tracing syntax), e.g. `info` or `raftgate=debug,openraft=info`.
    #[arg(long, env = "RAFTGATE_LOG")]
    pub log: Option<String>,
}

fn or<T>(flag: Option<T>, file: Option<T>, name: &str) -> Result<T, CliError> {
    flag.or(file).ok_or_else(|| {
        CliError::Config(format!(
            "--{name} is required (as a flag or in the --config file)"
        ))
    })
}

fn parse_peer(s: &str) -> Result<(NodeId, String), CliError> {
    let bad = || CliError::Config(format!("--peer '{s}' must look like 2=10.0.0.2:7000"));
    let (id, addr) = s.split_once('=').ok_or_else(bad)?;
    let id = id.trim().parse::<NodeId>().map_err(|_| bad())?;
    let addr = addr.trim();
    if addr
        .rsplit_once(':')
        .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
    {
        return Err(bad());
    }
    Ok((id, addr.to_string()))
}

fn hostname() -> Result<String, CliError> {
    if let Ok(h) = std::env::var("HOSTNAME")
        && !h.is_empty()
    {
        return Ok(h);
    }
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .map_err(CliError::io("reading the host name (set HOSTNAME)"))
}

/// `raftgate-2` → 3.
fn id_from_hostname(host: &str) -> Result<NodeId, CliError> {
    host.rsplit_once('-')
        .and_then(|(_, n)| n.parse::<NodeId>().ok())
        .map(|n| n + 1)
        .ok_or_else(|| {
            CliError::Config(format!(
                "--id-from-hostname: host name '{host}' does not end in -<ordinal>"
            ))
        })
}

fn advertised(addr: SocketAddr, host: Option<&str>) -> String {
    match host {
        Some(h) => format!("{h}:{}", addr.port()),
        None => addr.to_string(),
    }
}

fn read_file(path: &PathBuf, what: &str) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(CliError::io(format!(
        "reading the {what} {}",
        path.display()
    )))
}

/// The cluster port's protection from the `--cluster-*` settings (flags win over the file).
fn security(flags: &ServeArgs, file: &ServeArgs) -> Result<Security, CliError> {
    let pick = |f: &Option<PathBuf>, g: &Option<PathBuf>| f.clone().or_else(|| g.clone());
    let tls = match (
        pick(&flags.cluster_ca, &file.cluster_ca),
        pick(&flags.cluster_cert, &file.cluster_cert),
        pick(&flags.cluster_key, &file.cluster_key),
    ) {
        (None, None, None) => None,
        (Some(ca), Some(cert), Some(key)) => Some(TlsFiles {
            ca: read_file(&ca, "cluster CA")?,
            cert: read_file(&cert, "cluster certificate")?,
            key: read_file(&key, "cluster key")?,
        }),
        _ => {
            return Err(CliError::Config(
                "--cluster-ca, --cluster-cert and --cluster-key go together: give all three for mutual TLS, or none".into(),
            ));
        }
    };
    let secret = match (
        flags
            .cluster_secret
            .clone()
            .or_else(|| file.cluster_secret.clone()),
        pick(&flags.cluster_secret_file, &file.cluster_secret_file),
    ) {
        (Some(_), Some(_)) => {
            return Err(CliError::Config(
                "give the cluster secret once: --cluster-secret or --cluster-secret-file".into(),
            ));
        }
        (Some(s), None) => Some(s),
        (None, Some(path)) => {
            let text = read_file(&path, "cluster secret file")?;
            Some(String::from_utf8_lossy(&text).trim().to_string())
        }
        (None, None) => None,
    };
    if let Some(s) = &secret
        && s.len() < 16
    {
        return Err(CliError::Config(
            "the cluster secret must be at least 16 characters; generate one with `openssl rand -hex 32`".into(),
        ));
    }
    Ok(Security { tls, secret })
}

/// Runs a node until SIGINT or SIGTERM.
pub async fn run(flags: ServeArgs) -> Result<(), CliError> {
    let file: ServeArgs = match &flags.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(CliError::io(format!("reading {}", path.display())))?;
            toml::from_str(&text)
                .map_err(|e| CliError::Config(format!("{}: {e}", path.display())))?
        }
        None => ServeArgs::default(),
    };
    let limits = listener_limits(&flags, &file);
    let filter = flags
        .log
        .clone()
        .or(file.log.clone())
        .unwrap_or_else(|| "info,openraft=warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter)
                .map_err(|e| CliError::Config(format!("--log: {e}")))?,
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let security = security(&flags, &file)?;
    let secrets = crate::ai::secrets_key(
        flags
            .secrets_key_file
            .as_deref()
            .or(file.secrets_key_file.as_deref()),
        security.secret.as_deref(),
    )?;
    let id = if flags.id_from_hostname || file.id_from_hostname {
        id_from_hostname(&hostname()?)?
    } else {
        or(flags.id, file.id, "id")?
    };
    if id == 0 {
        return Err(CliError::Config("--id must be a positive integer".into()));
    }
    let data_dir = or(flags.data_dir, file.data_dir, "data-dir")?;
    let cluster_addr = or(flags.cluster_addr, file.cluster_addr, "cluster-addr")?;
    let admin_addr = or(flags.admin_addr, file.admin_addr, "admin-addr")?;
    let proxy_addr = or(flags.proxy_addr, file.proxy_addr, "proxy-addr")?;
    let token = flags.admin_token.or(file.admin_token);
    if token.is_none() && !admin_addr.ip().is_loopback() {
        return Err(CliError::Config(format!(
            "refusing to serve the admin API on {admin_addr} without a token: set --admin-token (or RAFTGATE_ADMIN_TOKEN), or bind it to 127.0.0.1"
        )));
    }
    let host = match flags.advertise_host.or(file.advertise_host) {
        Some(h) if h.contains("{hostname}") => Some(h.replace("{hostname}", &hostname()?)),
        other => other,
    };
    let peer_specs = if flags.peers.is_empty() {
        file.peers
    } else {
        flags.peers
    };
    let peers: BTreeMap<NodeId, String> = peer_specs
        .iter()
        .map(|p| parse_peer(p))
        .collect::<Result<_, _>>()?;
    let mut tuning = RaftTuning::default();
    if let Some(h) = flags.heartbeat_ms.or(file.heartbeat_ms) {
        tuning.heartbeat_ms = h;
    }
    if let Some(range) = flags.election_ms.or(file.election_ms) {
        let parsed = range
            .split_once('-')
            .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)));
        let (min, max) = parsed.ok_or_else(|| {
            CliError::Config(format!("--election-ms '{range}' must look like 250-500"))
        })?;
        tuning.election_min_ms = min;
        tuning.election_max_ms = max;
    }
    if let Some(n) = flags.snapshot_every.or(file.snapshot_every) {
        tuning.snapshot_every = n;
    }

    let info = NodeInfo {
        cluster_addr: advertised(cluster_addr, host.as_deref()),
        admin_addr: advertised(admin_addr, host.as_deref()),
        proxy_addr: advertised(proxy_addr, host.as_deref()),
    };
    // Bind the client-facing ports first, so a port conflict is reported before joining Raft.
    let admin_listener = tokio::net::TcpListener::bind(admin_addr)
        .await
        .map_err(CliError::io(format!(
            "cannot listen on admin address {admin_addr}"
        )))?;
    let proxy_listener = tokio::net::TcpListener::bind(proxy_addr)
        .await
        .map_err(CliError::io(format!(
            "cannot listen on proxy address {proxy_addr}"
        )))?;
    let tls_listener = match flags.proxy_tls_addr.or(file.proxy_tls_addr) {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(CliError::io(format!(
                    "cannot listen on proxy TLS address {addr}"
                )))?,
        ),
        None => None,
    };
    let proxy_config = raftgate_proxy::ProxyConfig {
        limits,
        max_body_bytes: flags.max_body_bytes.or(file.max_body_bytes),
        ..raftgate_proxy::ProxyConfig::default()
    };
    let node = Node::start(NodeConfig {
        id,
        data_dir,
        cluster_listen: cluster_addr,
        info,
        peers,
        tuning,
        security,
    })
    .await?;

    let metrics = std::sync::Arc::new(raftgate_metrics::Metrics::new());
    node.export_raft_metrics(metrics.raft().clone());

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let usage_sync = flags
        .usage_sync_ms
        .or(file.usage_sync_ms)
        .map_or(raftgate_policy::DEFAULT_SYNC_INTERVAL, |ms| {
            std::time::Duration::from_millis(ms.max(10))
        });
    let policies = std::sync::Arc::new(
        raftgate_policy::Engine::new(node.id(), usage_sync).with_secrets(secrets.clone()),
    );
    let usage_task = tokio::spawn(report_usage(node.clone(), policies.clone()));
    let (ai_usage, ai_records) = crate::ai::UsageChannel::new();
    let answer_memory = flags
        .ai_answer_memory_mib
        .or(file.ai_answer_memory_mib)
        .map_or(raftgate_ai::memory::DEFAULT_ANSWER_MEMORY, |mib| {
            usize::try_from(mib.max(1).saturating_mul(1 << 20)).unwrap_or(usize::MAX)
        });
    let gateway = std::sync::Arc::new(
        raftgate_ai::Gateway::new(&raftgate_ai::GatewayConfig::default(), ai_usage)
            .map_err(|e| CliError::Config(e.to_string()))?
            .with_answer_memory(answer_memory),
    );
    let ai_usage_task = tokio::spawn(crate::ai::report_usage(
        node.clone(),
        ai_records,
        usage_sync,
        metrics.clone(),
    ));
    let ai_task = tokio::spawn(crate::ai::follow(
        node.subscribe(),
        gateway.clone(),
        secrets.clone(),
    ));
    let trim_task = tokio::spawn(crate::memory::trim_after_changes(node.subscribe()));
    let proxy = raftgate_proxy::Proxy::new(node.subscribe(), proxy_config)
        .with_policies(policies)
        .with_ai(gateway)
        .with_metrics(metrics.clone());
    let health = proxy.health();
    let health: raftgate_admin::HealthSource = std::sync::Arc::new(move || health.all());
    let proxy_task = match tls_listener {
        Some(tls) => tokio::spawn(proxy.serve_with_tls(proxy_listener, tls, stopped())),
        None => tokio::spawn(proxy.serve(proxy_listener, stopped())),
    };
    let admin_task = tokio::spawn(raftgate_admin::serve(
        admin_listener,
        limits,
        node.clone(),
        token.clone(),
        Some(health),
        secrets,
        metrics,
        stopped(),
    ));
    tracing::info!(id, %admin_addr, %proxy_addr, %cluster_addr, "admin API listening");

    shutdown_signal().await;
    tracing::info!("shutting down");
    usage_task.abort();
    ai_task.abort();
    ai_usage_task.abort();
    trim_task.abort();
    let _ = stop_tx.send(true);
    if let Ok(Err(e)) = proxy_task.await {
        tracing::warn!(error = %e, "proxy stopped with an error");
    }
    if let Ok(Err(e)) = admin_task.await {
        tracing::warn!(error = %e, "admin API stopped with an error");
    }
    node.shutdown().await;
    Ok(())
}

/// The connection limits of the client-facing listeners, from the flags or the file.
fn listener_limits(flags: &ServeArgs, file: &ServeArgs) -> raftgate_listener::Limits {
    let defaults = raftgate_listener::Limits::default();
    let ms = std::time::Duration::from_millis;
    raftgate_listener::Limits {
        header_timeout: flags
            .header_timeout_ms
            .or(file.header_timeout_ms)
            .map_or(defaults.header_timeout, |v| ms(v.max(1))),
        idle_timeout: flags
            .idle_timeout_ms
            .or(file.idle_timeout_ms)
            .map_or(defaults.idle_timeout, |v| ms(v.max(1))),
        max_connections: flags
            .max_connections
            .or(file.max_connections)
            .map_or(defaults.max_connections, |v| v.max(1)),
        ..defaults
    }
}

/// Reports this node's rate-limit usage through Raft every sync interval, and keeps the number
/// of members, between which each limit's remaining budget is divided, current.
async fn report_usage(node: Node, engine: std::sync::Arc<raftgate_policy::Engine>) {
    let members = async {
        loop {
            if let Ok(status) = node.status().await
                && !status.members.is_empty()
            {
                engine.counters().set_nodes(status.members.len() as u64);
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    };
    let report = raftgate_policy::sync_loop(engine.clone(), |deltas| {
        let node = node.clone();
        async move {
            let command = raftgate_model::Command::RecordUsage {
                node: node.id(),
                deltas,
            };
            node.write(command).await.map(|_| node.state())
        }
    });
    tokio::join!(members, report);
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_and_ordinals() {
        assert_eq!(
            parse_peer("2=10.0.0.2:7000").unwrap(),
            (2, "10.0.0.2:7000".into())
        );
        assert_eq!(
            parse_peer("3=node3:7000").unwrap(),
            (3, "node3:7000".into())
        );
        assert!(parse_peer("x=1.2.3.4:5").is_err());
        assert!(parse_peer("2=10.0.0.2").is_err());
        assert!(parse_peer("2=:7000").is_err());
        assert_eq!(id_from_hostname("raftgate-0").unwrap(), 1);
        assert_eq!(id_from_hostname("my-gw-12").unwrap(), 13);
        assert!(id_from_hostname("raftgate").is_err());
    }

    #[test]
    fn config_file_uses_flag_names() {
        let file: ServeArgs = toml::from_str(
            r#"
            id = 2
            data_dir = "/var/lib/raftgate"
            cluster_addr = "127.0.0.1:7000"
            admin_addr = "127.0.0.1:9000"
            proxy_addr = "127.0.0.1:8000"
            peers = ["1=127.0.0.1:7000"]
            election_ms = "300-600"
            "#,
        )
        .unwrap();
        assert_eq!(file.id, Some(2));
        assert_eq!(file.peers.len(), 1);
        assert!(toml::from_str::<ServeArgs>("idd = 2").is_err());
    }

    #[test]
    fn cluster_security_settings() {
        let none = ServeArgs::default();
        let open = security(&none, &none).unwrap();
        assert!(open.tls.is_none() && open.secret.is_none());
        // TLS files go together.
        let partial = ServeArgs {
            cluster_ca: Some("ca.pem".into()),
            ..ServeArgs::default()
        };
        assert!(security(&partial, &none).is_err());
        let short = ServeArgs {
            cluster_secret: Some("short".into()),
            ..ServeArgs::default()
        };
        assert!(security(&short, &none).is_err());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "  0123456789abcdef0123\n").unwrap();
        let file: ServeArgs = toml::from_str(&format!(
            "cluster_secret_file = {:?}",
            path.display().to_string()
        ))
        .unwrap();
        let from_file = security(&none, &file).unwrap();
        assert_eq!(from_file.secret.as_deref(), Some("0123456789abcdef0123"));
        let flag = ServeArgs {
            cluster_secret: Some("another-secret-of-enough-length".into()),
            ..ServeArgs::default()
        };
        assert!(security(&flag, &file).is_err(), "the secret is given once");
        let missing = ServeArgs {
            cluster_secret_file: Some(dir.path().join("absent")),
            ..ServeArgs::default()
        };
        assert!(security(&missing, &none).is_err());
    }
}
