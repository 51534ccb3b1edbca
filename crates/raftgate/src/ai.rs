//! The node's AI gateway: one [`Gateway`] per node, its configuration rebuilt from the
//! replicated providers, models and prompt APIs on every state change, the secrets key their credentials
//! are sealed with, and its usage replicated in batches.
//!
//! Usage: each call's record goes on an unbounded channel (no lock, no I/O on the request
//! path); a background task counts it in the node's metrics, adds the records up per hour,
//! consumer and model, and proposes one [`Command::RecordAiUsage`] per interval when there is
//! something to report. A report that fails is kept and sent with the next one.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use raftgate_ai::secrets::SecretsKey;
use raftgate_ai::{Gateway, GatewayConfig, UsageRecord, UsageSink};
use raftgate_cluster::Node;
use raftgate_metrics::{AiCallUsage, AiLabels, Metrics};
use raftgate_model::ai::{AiUsage, AiUsageDelta, HOUR_MS};
use raftgate_model::{Command, State};
use tokio::sync::{mpsc, watch};

use crate::CliError;

/// The gateway's usage sink: hands each record to [`report_usage`].
pub struct UsageChannel(mpsc::UnboundedSender<UsageRecord>);

impl UsageChannel {
    /// The sink, and the receiving end for [`report_usage`].
    pub fn new() -> (Arc<UsageChannel>, mpsc::UnboundedReceiver<UsageRecord>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Arc::new(UsageChannel(tx)), rx)
    }
}

impl UsageSink for UsageChannel {
    fn record(&self, record: UsageRecord) {
        // Fails only once the reporter stopped, at shutdown.
        let _ = self.0.send(record);
    }
}

/// Usage not yet reported, by hour, consumer and model.
type Pending = HashMap<(u64, String, String), AiUsage>;

fn add(pending: &mut Pending, r: &UsageRecord, now_ms: u64) {
    let key = (
        now_ms - now_ms % HOUR_MS,
        r.caller.consumer.clone().unwrap_or_default(),
        r.model.clone(),
    );
    pending.entry(key).or_default().add(&AiUsage {
        requests: 1,
        prompt_tokens: r.usage.prompt_tokens,
        completion_tokens: r.usage.completion_tokens,
        cost_usd: r.cost_usd,
        cache_hits: u64::from(r.cached),
    });
}

/// Counts one call in the node's metrics, moving the record's names into the labels.
fn count(metrics: &Metrics, r: UsageRecord) {
    let labels = AiLabels {
        model: r.model,
        provider: r.provider,
        consumer: r.caller.consumer.unwrap_or_default(),
    };
    metrics.record_ai(
        &labels,
        &AiCallUsage {
            prompt_tokens: r.usage.prompt_tokens,
            completion_tokens: r.usage.completion_tokens,
            cost_usd: r.cost_usd,
        },
    );
}

/// Replicates this node's AI usage: one Raft entry per `interval` with traffic, until the
/// gateway is dropped; counts every call in `metrics` as it arrives.
pub async fn report_usage(
    node: Node,
    mut records: mpsc::UnboundedReceiver<UsageRecord>,
    interval: Duration,
    metrics: Arc<Metrics>,
) {
    let now_ms = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    };
    let mut pending = Pending::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0u32;
    loop {
        tokio::select! {
            record = records.recv() => match record {
                Some(r) => {
                    add(&mut pending, &r, now_ms());
                    count(&metrics, r);
                }
                None => return,
            },
            _ = tick.tick() => {
                if pending.is_empty() {
                    continue;
                }
                let deltas: Vec<AiUsageDelta> = pending
                    .iter()
                    .map(|((hour_ms, consumer, model), usage)| AiUsageDelta {
                        hour_ms: *hour_ms,
                        consumer: consumer.clone(),
                        model: model.clone(),
                        usage: *usage,
                    })
                    .collect();
                match node.write(Command::RecordAiUsage { deltas }).await {
                    Ok(_) => {
                        pending.clear();
                        failures = 0;
                    }
                    Err(error) => {
                        failures += 1;
                        // Once, then every 100th time: a partitioned node fails every interval.
                        if failures % 100 == 1 {
                            tracing::warn!(%error, failures, "AI usage report failed; it is kept for the next one");
                        }
                    }
                }
            }
        }
    }
}

/// The key provider credentials are sealed with: from `--secrets-key-file` when given, else
/// derived from the cluster secret; without either, none (and the admin API refuses provider
/// credentials, which this says once at startup).
pub fn secrets_key(
    file: Option<&Path>,
    cluster_secret: Option<&str>,
) -> Result<Option<Arc<SecretsKey>>, CliError> {
    let secret = match file {
        Some(path) => {
            let text = std::fs::read(path).map_err(CliError::io(format!(
                "reading the secrets key file {}",
                path.display()
            )))?;
            let text = String::from_utf8_lossy(&text).trim().to_string();
            if text.len() < 16 {
                return Err(CliError::Config(format!(
                    "the secrets key in {} must be at least 16 characters; generate one with `openssl rand -hex 32`",
                    path.display()
                )));
            }
            text
        }
        None => match cluster_secret {
            Some(s) => s.to_string(),
            None => {
                tracing::warn!(
                    "no secrets key: AI provider credentials cannot be stored (the admin API refuses them); start every node with --cluster-secret or --secrets-key-file"
                );
                return Ok(None);
            }
        },
    };
    Ok(Some(Arc::new(SecretsKey::derive(secret.as_bytes()))))
}

/// Keeps `gateway` serving what the replicated state says, until the state channel closes.
/// A configuration the gateway refuses leaves the previous one in place, with an error logged.
pub async fn follow(
    mut states: watch::Receiver<Arc<State>>,
    gateway: Arc<Gateway>,
    key: Option<Arc<SecretsKey>>,
) {
    let mut last = None;
    loop {
        let state = states.borrow_and_update().clone();
        let tables = (
            state.ai_providers.clone(),
            state.ai_models.clone(),
            state.ai_prompts.clone(),
        );
        let changed = last.as_ref().is_none_or(|(p, m, t)| {
            !Arc::ptr_eq(p, &tables.0) || !Arc::ptr_eq(m, &tables.1) || !Arc::ptr_eq(t, &tables.2)
        });
        if changed {
            let config = GatewayConfig::from_state(&state, key.as_deref());
            match gateway.update(&config) {
                Ok(()) => tracing::debug!(
                    providers = config.providers.len(),
                    models = config.models.len(),
                    prompts = config.prompts.len(),
                    "AI gateway configuration updated"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "AI gateway configuration refused; keeping the previous one")
                }
            }
            last = Some(tables);
        }
        if states.changed().await.is_err() {
            return;
        }
    }
}
