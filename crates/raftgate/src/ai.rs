//! The node's AI gateway: one [`Gateway`] per node, its configuration rebuilt from the
//! replicated providers, models and prompt APIs on every state change, the secrets key their credentials
//! are sealed with, and its usage replicated in batches.
//!
//! Usage: each call's record goes on an unbounded channel (no lock, no I/O on the request
//! path); the [`AiUsageReporter`] counts it in the node's metrics, adds the records up per
//! hour, consumer, key, model and provider, and proposes one [`Command::RecordAiUsage`] per
//! interval when there is something to report. A report that fails is kept and sent with the
//! next one.
//!
//! Cooldowns: when this node's gateway cools a failing deployment down (a rare event), the
//! cooldown travels on the same channel and rides with the next report; every node's gateway
//! honours the replicated cooldowns ([`follow`]), so the others skip the deployment without
//! failing on it first.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use raftgate_ai::{Gateway, GatewayConfig, UsageRecord, UsageSink};
use raftgate_metrics::{AiCallUsage, AiLabels, Metrics};
use raftgate_model::ai::{AiCooldown, AiUsage, AiUsageDelta, HOUR_MS};
use raftgate_model::report::{Moment, Reporter};
use raftgate_model::{Command, State};
use raftgate_secrets::SecretsKey;
use tokio::sync::{mpsc, watch};

use crate::CliError;

/// What the gateway tells [`report_usage`].
pub enum Event {
    /// One call's usage.
    Usage(UsageRecord),
    /// A deployment this node cooled down.
    Cooldown(AiCooldown),
}

/// The gateway's usage sink: hands each record and cooldown to [`report_usage`].
pub struct UsageChannel(mpsc::UnboundedSender<Event>);

impl UsageChannel {
    /// The sink, and the receiving end for [`report_usage`].
    pub fn new() -> (Arc<UsageChannel>, mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Arc::new(UsageChannel(tx)), rx)
    }
}

impl UsageSink for UsageChannel {
    fn record(&self, record: UsageRecord) {
        // Fails only once the reporter stopped, at shutdown.
        let _ = self.0.send(Event::Usage(record));
    }

    fn cooldown(&self, cooldown: AiCooldown) {
        let _ = self.0.send(Event::Cooldown(cooldown));
    }
}

/// Usage not yet reported, by hour, consumer, key, model and provider.
type Pending = HashMap<(u64, String, String, String, String), AiUsage>;

fn add(pending: &mut Pending, r: &UsageRecord, now_ms: u64) {
    let key = (
        now_ms - now_ms % HOUR_MS,
        r.caller.consumer.clone().unwrap_or_default(),
        r.caller.key.clone().unwrap_or_default(),
        r.model.clone(),
        r.provider.clone(),
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

/// Replicates this node's AI usage: one [`Command::RecordAiUsage`] per interval with calls or
/// cooldowns to report (see [`crate::report::run`]); counts every call in the node's metrics
/// as it is collected.
pub struct AiUsageReporter {
    records: mpsc::UnboundedReceiver<Event>,
    metrics: Arc<Metrics>,
    pending: Pending,
    cooldowns: Vec<AiCooldown>,
}

impl AiUsageReporter {
    /// The reporter of what the gateway sends on `records`.
    pub fn new(records: mpsc::UnboundedReceiver<Event>, metrics: Arc<Metrics>) -> Self {
        AiUsageReporter {
            records,
            metrics,
            pending: Pending::new(),
            cooldowns: Vec::new(),
        }
    }
}

impl Reporter for AiUsageReporter {
    fn name(&self) -> &'static str {
        "AI usage"
    }

    fn collect(&mut self, moment: Moment<'_>) -> Option<Command> {
        while let Ok(event) = self.records.try_recv() {
            match event {
                Event::Usage(r) => {
                    add(&mut self.pending, &r, moment.now_ms);
                    count(&self.metrics, r);
                }
                Event::Cooldown(c) => self.cooldowns.push(c),
            }
        }
        if self.pending.is_empty() && self.cooldowns.is_empty() {
            return None;
        }
        let deltas: Vec<AiUsageDelta> = self
            .pending
            .iter()
            .map(
                |((hour_ms, consumer, key, model, provider), usage)| AiUsageDelta {
                    hour_ms: *hour_ms,
                    consumer: consumer.clone(),
                    key: key.clone(),
                    model: model.clone(),
                    provider: provider.clone(),
                    usage: *usage,
                },
            )
            .collect();
        Some(Command::RecordAiUsage {
            deltas,
            cooldowns: self.cooldowns.clone(),
        })
    }

    fn applied(&mut self, _: &State) {
        self.pending.clear();
        self.cooldowns.clear();
    }

    /// Kept: the next report carries it with what came since.
    fn failed(&mut self) {}
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

/// Keeps `gateway` serving what the replicated state says — providers, models and the
/// cluster's cooldowns — until the state channel closes. A configuration the gateway refuses
/// leaves the previous one in place, with an error logged.
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
            state.ai_cooldowns.clone(),
        );
        let same = |(p, m, t, _): &(_, _, _, _)| {
            Arc::ptr_eq(p, &tables.0) && Arc::ptr_eq(m, &tables.1) && Arc::ptr_eq(t, &tables.2)
        };
        let config_changed = last.as_ref().is_none_or(|l| !same(l));
        let cooldowns_changed = last
            .as_ref()
            .is_none_or(|(_, _, _, c)| !Arc::ptr_eq(c, &tables.3));
        if config_changed {
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
        }
        // After an update too: a deployment new to this node takes a live cooldown.
        if config_changed || cooldowns_changed {
            gateway.apply_cooldowns(&tables.3);
            last = Some(tables);
        }
        if states.changed().await.is_err() {
            return;
        }
    }
}
