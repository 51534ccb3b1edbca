//! `raftgate serve`'s settings: the flags, the same names in a TOML file, and the checks made
//! before anything starts ([`Settings::resolve`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use raftgate_cluster::{NodeConfig, RaftTuning, Security, TlsFiles};
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
    /// Milliseconds between two reports of this node's proxied traffic to the cluster's
    /// analytics (`GET /analytics`): one Raft entry each, never one per request. Must divide a
    /// minute; 0 keeps no analytics (and records nothing for them). Default 10000.
    #[arg(long)]
    pub analytics_interval_ms: Option<u64>,
    /// Access log: `stdout` or a file path, one JSON line per proxied request (and per AI
    /// call); off when absent. A file is reopened on SIGHUP (for logrotate).
    #[arg(long)]
    pub access_log: Option<String>,
    /// Share of requests written to the access log, 0 to 1. Default 1 (every request).
    #[arg(long)]
    pub access_log_sample: Option<f64>,
    /// OTLP gRPC endpoint spans are exported to (e.g. `http://127.0.0.1:4317`); no tracing
    /// when absent. Requests carrying a W3C `traceparent` continue their trace.
    #[arg(long)]
    pub otlp_endpoint: Option<String>,
    /// Share of the traces started here that are recorded, 0 to 1 (a sampled parent's
    /// decision is followed). Default 1.
    #[arg(long)]
    pub trace_sample: Option<f64>,
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

/// A node's settings, resolved from the flags and the `--config` file (flags win).
pub struct Settings {
    /// Log filter.
    pub log: String,
    /// The client-facing listeners' limits.
    pub limits: raftgate_listener::Limits,
    /// The cluster secret, from which the secrets key is derived without a key file.
    pub cluster_secret: Option<String>,
    /// `--secrets-key-file`.
    pub secrets_key_file: Option<PathBuf>,
    /// This node's Raft settings.
    pub node: NodeConfig,
    /// Admin API address.
    pub admin_addr: SocketAddr,
    /// Proxy address.
    pub proxy_addr: SocketAddr,
    /// TLS proxy address.
    pub proxy_tls_addr: Option<SocketAddr>,
    /// The admin token.
    pub admin_token: Option<String>,
    /// The proxy's request limits.
    pub max_body_bytes: Option<u64>,
    /// Interval of the rate-limit and AI usage reports.
    pub usage_sync: std::time::Duration,
    /// Interval of the traffic analytics reports; `None` when the node keeps none.
    pub analytics: Option<std::time::Duration>,
    /// Memory for AI answers being read.
    pub ai_answer_memory: usize,
    /// The access log's output and sampling ratio; `None`: no access log.
    pub access_log: Option<(raftgate_accesslog::Output, f64)>,
    /// The OTLP endpoint and sampling ratio; `None`: no tracing.
    pub tracing: Option<(String, f64)>,
}

impl Settings {
    /// Reads `--config` and merges it under `flags`; checks what can be checked before
    /// anything starts.
    pub fn resolve(flags: ServeArgs) -> Result<Settings, CliError> {
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
        let log = flags
            .log
            .clone()
            .or(file.log.clone())
            .unwrap_or_else(|| "info,openraft=warn".into());
        let security = security(&flags, &file)?;
        let cluster_secret = security.secret.clone();
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
        let admin_token = flags.admin_token.or(file.admin_token);
        if admin_token.is_none() && !admin_addr.ip().is_loopback() {
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
        let ms = std::time::Duration::from_millis;
        let analytics_ms = flags
            .analytics_interval_ms
            .or(file.analytics_interval_ms)
            .unwrap_or(DEFAULT_ANALYTICS_MS);
        if analytics_ms != 0 && 60_000 % analytics_ms != 0 {
            return Err(CliError::Config(format!(
                "--analytics-interval-ms {analytics_ms} must divide a minute (60000), e.g. 10000, or be 0 to keep no analytics"
            )));
        }
        let access_log = flags.access_log.or(file.access_log).map(|out| {
            (
                raftgate_accesslog::Output::parse(&out),
                flags
                    .access_log_sample
                    .or(file.access_log_sample)
                    .unwrap_or(1.0),
            )
        });
        let tracing = flags.otlp_endpoint.or(file.otlp_endpoint).map(|endpoint| {
            (
                endpoint,
                flags.trace_sample.or(file.trace_sample).unwrap_or(1.0),
            )
        });
        Ok(Settings {
            access_log,
            tracing,
            log,
            limits,
            cluster_secret,
            secrets_key_file: flags.secrets_key_file.or(file.secrets_key_file),
            node: NodeConfig {
                id,
                data_dir,
                cluster_listen: cluster_addr,
                info,
                peers,
                tuning,
                security,
            },
            admin_addr,
            proxy_addr,
            proxy_tls_addr: flags.proxy_tls_addr.or(file.proxy_tls_addr),
            admin_token,
            max_body_bytes: flags.max_body_bytes.or(file.max_body_bytes),
            usage_sync: flags
                .usage_sync_ms
                .or(file.usage_sync_ms)
                .map_or(raftgate_policy::DEFAULT_SYNC_INTERVAL, |v| ms(v.max(10))),
            analytics: (analytics_ms > 0).then(|| ms(analytics_ms)),
            ai_answer_memory: flags
                .ai_answer_memory_mib
                .or(file.ai_answer_memory_mib)
                .map_or(raftgate_ai::memory::DEFAULT_ANSWER_MEMORY, |mib| {
                    usize::try_from(mib.max(1).saturating_mul(1 << 20)).unwrap_or(usize::MAX)
                }),
        })
    }
}

/// Default interval of the traffic analytics reports: six Raft entries a minute per node.
const DEFAULT_ANALYTICS_MS: u64 = 10_000;

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
