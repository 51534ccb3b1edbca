//! `raftgate serve`: one node — Raft, the admin API, the proxy and the bookkeeping reporters —
//! wired from its [`Settings`], run until SIGINT or SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use raftgate_accesslog::{AccessLog, DEFAULT_QUEUE};
use raftgate_cluster::Node;
use raftgate_metrics::Metrics;
use raftgate_proxy::Observability;
use raftgate_trace::{TraceConfig, Tracer};
use tokio::net::TcpListener;

use crate::CliError;
use crate::config::{ServeArgs, Settings};
use crate::report::{self, InstanceReaper, TrafficReporter};

async fn bind(addr: std::net::SocketAddr, what: &str) -> Result<TcpListener, CliError> {
    TcpListener::bind(addr)
        .await
        .map_err(CliError::io(format!("cannot listen on {what} {addr}")))
}

/// Runs a node until SIGINT or SIGTERM.
pub async fn run(flags: ServeArgs) -> Result<(), CliError> {
    let settings = Settings::resolve(flags)?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&settings.log)
                .map_err(|e| CliError::Config(format!("--log: {e}")))?,
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let secrets = crate::ai::secrets_key(
        settings.secrets_key_file.as_deref(),
        settings.cluster_secret.as_deref(),
    )?;
    // Bind the client-facing ports first, so a port conflict is reported before joining Raft.
    let admin_listener = bind(settings.admin_addr, "admin address").await?;
    let proxy_listener = bind(settings.proxy_addr, "proxy address").await?;
    let tls_listener = match settings.proxy_tls_addr {
        Some(addr) => Some(bind(addr, "proxy TLS address").await?),
        None => None,
    };
    let proxy_config = raftgate_proxy::ProxyConfig {
        limits: settings.limits,
        max_body_bytes: settings.max_body_bytes,
        ..raftgate_proxy::ProxyConfig::default()
    };
    let id = settings.node.id;
    let cluster_addr = settings.node.cluster_listen;
    let metrics = Arc::new(match settings.analytics {
        Some(_) => Metrics::with_analytics(),
        None => Metrics::new(),
    });
    let access_log = match settings.access_log {
        Some((output, sample)) => Some(Arc::new(
            AccessLog::start(output, sample, DEFAULT_QUEUE, metrics.access_log_drops())
                .map_err(|e| CliError::Config(e.to_string()))?,
        )),
        None => None,
    };
    let tracer = match &settings.tracing {
        Some((endpoint, ratio)) => Some(Arc::new(
            Tracer::start(&TraceConfig {
                endpoint: endpoint.clone(),
                sampling_ratio: *ratio,
                service_name: "raftgate".into(),
                node: id,
            })
            .map_err(|e| CliError::Config(e.to_string()))?,
        )),
        None => None,
    };
    let node = Node::start(settings.node).await?;
    node.export_raft_metrics(metrics.raft().clone());

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let policies = Arc::new(
        raftgate_policy::Engine::new(node.id(), settings.usage_sync).with_secrets(secrets.clone()),
    );
    let (ai_usage, ai_records) = crate::ai::UsageChannel::new();
    let gateway = Arc::new(
        raftgate_ai::Gateway::new(&raftgate_ai::GatewayConfig::default(), ai_usage)
            .map_err(|e| CliError::Config(e.to_string()))?
            .with_answer_memory(settings.ai_answer_memory),
    );

    // The node's own tasks: the cluster's bookkeeping, and following the state.
    let mut tasks = vec![
        tokio::spawn(count_members(node.clone(), policies.clone())),
        tokio::spawn(report::run(
            node.clone(),
            settings.usage_sync,
            false,
            raftgate_policy::UsageReporter::new(policies.clone()),
        )),
        tokio::spawn(report::run(
            node.clone(),
            settings.usage_sync,
            false,
            crate::ai::AiUsageReporter::new(ai_records, metrics.clone()),
        )),
        tokio::spawn(report::run(
            node.clone(),
            report::REAP_INTERVAL,
            false,
            InstanceReaper,
        )),
        tokio::spawn(crate::ai::follow(
            node.subscribe(),
            gateway.clone(),
            secrets.clone(),
        )),
        tokio::spawn(crate::memory::trim_after_changes(node.subscribe())),
    ];
    if let Some(log) = &access_log {
        tasks.push(tokio::spawn(reopen_on_hangup(log.clone())));
    }
    if let Some(interval) = settings.analytics {
        tasks.push(tokio::spawn(report::run(
            node.clone(),
            interval,
            true,
            TrafficReporter::new(metrics.clone(), interval),
        )));
    }

    let proxy = raftgate_proxy::Proxy::new(node.subscribe(), proxy_config)
        .with_policies(policies)
        .with_ai(gateway)
        .with_metrics(metrics.clone())
        .with_observability(Observability {
            node: id,
            access_log,
            tracer: tracer.clone(),
        });
    let health = proxy.health();
    let health: raftgate_admin::HealthSource = Arc::new(move || health.all());
    let proxy_task = match tls_listener {
        Some(tls) => tokio::spawn(proxy.serve_with_tls(proxy_listener, tls, stopped())),
        None => tokio::spawn(proxy.serve(proxy_listener, stopped())),
    };
    let admin_task = tokio::spawn(raftgate_admin::serve(
        admin_listener,
        settings.limits,
        node.clone(),
        settings.admin_token,
        Some(health),
        secrets,
        metrics,
        stopped(),
    ));
    tracing::info!(id, admin_addr = %settings.admin_addr, proxy_addr = %settings.proxy_addr,
        %cluster_addr, "admin API listening");

    shutdown_signal().await;
    tracing::info!("shutting down");
    for task in &tasks {
        task.abort();
    }
    let _ = stop_tx.send(true);
    if let Ok(Err(e)) = proxy_task.await {
        tracing::warn!(error = %e, "proxy stopped with an error");
    }
    if let Ok(Err(e)) = admin_task.await {
        tracing::warn!(error = %e, "admin API stopped with an error");
    }
    node.shutdown().await;
    if let Some(tracer) = tracer {
        tracer.shutdown().await;
    }
    Ok(())
}

/// Reopens the access log file on every SIGHUP (logrotate's signal).
async fn reopen_on_hangup(log: Arc<AccessLog>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hangups) => {
                while hangups.recv().await.is_some() {
                    log.reopen();
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP; the access log will not be reopened")
            }
        }
    }
}

/// Keeps the number of members, between which each rate limit's remaining budget is divided,
/// current.
async fn count_members(node: Node, engine: Arc<raftgate_policy::Engine>) {
    loop {
        if let Ok(status) = node.status().await
            && !status.members.is_empty()
        {
            engine.counters().set_nodes(status.members.len() as u64);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
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
