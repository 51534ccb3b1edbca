//! How each [`Command`] changes the [`State`]: the deterministic heart of the state machine.
//!
//! Every node runs exactly this code on exactly the same log, so it must not read clocks,
//! randomness or anything local: time comes from the proposal, versions from the log index.
//! Each admin write is authorized here for its actor ([`guard`]), every reference between
//! objects is checked here ([`refs`]), and the catalog's commands are applied in [`catalog`].

mod catalog;
mod guard;
mod refs;
#[cfg(test)]
mod rules_tests;

use std::sync::Arc;

use raftgate_model::access::{self, Action, AuditEntry, AuditOperation, StoredToken, TeamSpec};
use raftgate_model::ai::{ModelConfig, ProviderConfig};
use raftgate_model::catalog::{ApiSpec, ApiVersionSpec, SubscriptionSpec, key};
use raftgate_model::command::Applied;
use raftgate_model::policy::JwtAlgorithm;
use raftgate_model::prompt::PromptSpec;
use raftgate_model::state::Resource;
use raftgate_model::{
    CertificateSpec, Command, ConsumerSpec, Entity, InstanceSpec, Kind, Outcome, Proposal,
    RateLimitSpec, Rejection, RouteSpec, ServiceSpec, Spec, State, StoredKey,
};

use catalog::At;
use guard::Actor;

/// Applies one proposal at log `index`, and records it in the audit log when an admin asked for it.
pub fn apply(state: &mut State, index: u64, proposal: &Proposal) -> Applied {
    let applied = change(state, index, proposal);
    if let Some(actor) = &proposal.actor {
        audit(state, index, proposal, actor, &applied);
    }
    applied
}

/// Appends the audit entry of an admin's proposal, whatever its outcome.
fn audit(state: &mut State, index: u64, proposal: &Proposal, actor: &str, applied: &Applied) {
    // What was done, to what, and (for a cluster operation) its own error.
    let (operation, kind, name, detail, error) = match &proposal.command {
        Command::Put { name, spec, .. } => (
            AuditOperation::Put,
            Some(spec.kind()),
            name.clone(),
            None,
            None,
        ),
        Command::Delete { kind, name, .. } => (
            AuditOperation::Delete,
            Some(*kind),
            name.clone(),
            None,
            None,
        ),
        Command::Transition {
            api, version, to, ..
        } => (
            AuditOperation::Transition,
            Some(Kind::ApiVersion),
            key(api, version),
            Some(to.to_string()),
            None,
        ),
        Command::Subscribe {
            api, application, ..
        } => {
            let subscription = key(api, application);
            let got = state
                .subscriptions
                .get(&subscription)
                .filter(|_| applied.is_ok())
                .map(|s| s.spec.state.as_str().to_string());
            let kind = Some(Kind::Subscription);
            (AuditOperation::Subscribe, kind, subscription, got, None)
        }
        Command::Decide {
            api,
            application,
            approve,
        } => {
            let operation = if *approve {
                AuditOperation::Approve
            } else {
                AuditOperation::Reject
            };
            let kind = Some(Kind::Subscription);
            (operation, kind, key(api, application), None, None)
        }
        Command::ReplaceVersionRoutes {
            api,
            version,
            routes,
            ..
        } => (
            AuditOperation::ReplaceRoutes,
            Some(Kind::ApiVersion),
            key(api, version),
            Some(format!("{} routes", routes.len())),
            None,
        ),
        Command::Record {
            operation,
            name,
            error,
        } => (
            *operation,
            None,
            name.clone().unwrap_or_default(),
            None,
            error.clone(),
        ),
        // Liveness, expiry and usage are the cluster's own bookkeeping, not admin decisions.
        Command::Heartbeat { .. }
        | Command::ExpireInstances
        | Command::RecordUsage { .. }
        | Command::RecordAiUsage { .. }
        | Command::RecordTraffic { .. } => {
            return;
        }
    };
    let error = error.or_else(|| applied.as_ref().err().map(ToString::to_string));
    access::record(
        &mut state.audit,
        AuditEntry {
            index,
            at: proposal.at_ms,
            actor: actor.to_string(),
            operation,
            kind,
            name: Some(name).filter(|n| !n.is_empty()),
            detail,
            error,
        },
    );
}

/// The outcome of a command that changed no versioned resource (or removed one).
fn done(index: u64) -> Applied {
    Ok(Outcome {
        index,
        version: None,
        created: false,
    })
}

/// The change a proposal makes to the resources.
fn change(state: &mut State, index: u64, proposal: &Proposal) -> Applied {
    let at = At {
        index,
        ms: proposal.at_ms,
    };
    let actor = Actor::of(state, proposal.actor.as_deref())?;
    match &proposal.command {
        Command::Put {
            name,
            spec,
            if_version,
        } => {
            if let Spec::Subscription(_) = &**spec {
                return Err(Rejection::Invalid {
                    field: "state".into(),
                    message: "subscriptions are made with POST /apis/{api}/subscriptions and decided with approve or reject".into(),
                });
            }
            actor.may_put(state, name, spec)?;
            check_version(state, spec.kind(), name, *if_version)?;
            put_spec(state, name, spec, at)
        }
        Command::Delete {
            kind,
            name,
            if_version,
        } => {
            let missing = || Rejection::NotFound {
                kind: *kind,
                name: name.clone(),
            };
            if state.version_of(*kind, name) == 0 {
                return Err(missing());
            }
            actor.may(state, Action::Write, *kind, name, missing)?;
            check_version(state, *kind, name, *if_version)?;
            delete(state, *kind, name)?;
            done(index)
        }
        Command::Transition {
            api,
            version,
            to,
            if_version,
        } => catalog::transition(state, &actor, at, (api, version, *to), *if_version),
        Command::Subscribe {
            api,
            application,
            plan,
        } => catalog::subscribe(state, &actor, at, (api, application), plan),
        Command::Decide {
            api,
            application,
            approve,
        } => catalog::decide(state, &actor, at, (api, application), *approve),
        Command::ReplaceVersionRoutes {
            api,
            version,
            routes,
            openapi,
            if_version,
        } => catalog::replace_routes(
            state,
            &actor,
            at,
            (api, version),
            (routes, openapi),
            *if_version,
        ),
        Command::Heartbeat { instance } => heartbeat(state, at, instance),
        Command::ExpireInstances => {
            for instance in state.expired_instances(at.ms) {
                remove::<InstanceSpec>(state, &instance);
            }
            done(index)
        }
        Command::RecordUsage { node, deltas } => {
            raftgate_model::policy::apply_usage(
                Arc::make_mut(&mut state.usage),
                *node,
                deltas,
                at.ms,
            );
            done(index)
        }
        Command::RecordAiUsage { deltas, cooldowns } => {
            raftgate_model::ai::apply_ai_usage(Arc::make_mut(&mut state.ai_usage), deltas, at.ms);
            // Only touched when there is something to change, so that the gateway (which
            // follows this table by pointer) is not woken by every usage report.
            if !cooldowns.is_empty() || state.ai_cooldowns.values().any(|u| *u <= at.ms) {
                raftgate_model::ai::apply_cooldowns(
                    Arc::make_mut(&mut state.ai_cooldowns),
                    cooldowns,
                    at.ms,
                );
            }
            done(index)
        }
        Command::RecordTraffic { deltas } => {
            Arc::make_mut(&mut state.traffic).apply(deltas, at.ms);
            done(index)
        }
        // Only the audit entry, written by `apply`.
        Command::Record { .. } => done(index),
    }
}

/// Stores `spec` under `name` once what it names is checked.
fn put_spec(state: &mut State, name: &str, spec: &Spec, at: At) -> Applied {
    refs::check_put(state, name, spec)?;
    match spec {
        Spec::Service(s) => put(state, name, s.clone(), at),
        Spec::Route(r) => put(state, name, r.clone(), at),
        Spec::Consumer(c) => {
            let consumer = keep_stored_secrets(state, name, c.clone())?;
            put(state, name, consumer, at)
        }
        Spec::RateLimit(l) => put(state, name, l.clone(), at),
        Spec::Key(k) => put(state, name, k.clone(), at),
        Spec::Instance(i) => put(state, name, i.clone(), at),
        Spec::Certificate(c) => put(state, name, c.clone(), at),
        Spec::Token(t) => put(state, name, t.clone(), at),
        Spec::AiProvider(p) => put(state, name, p.clone(), at),
        Spec::AiModel(m) => put(state, name, m.clone(), at),
        Spec::AiPrompt(p) => put(state, name, p.clone(), at),
        Spec::Team(t) => put(state, name, t.clone(), at),
        Spec::Api(a) => put(state, name, a.clone(), at),
        Spec::ApiVersion(v) => {
            let mut version = v.clone();
            let stored = state.api_versions.get(name).map(|e| &e.spec);
            if version.openapi.is_none() {
                version.openapi = stored.and_then(|s| s.openapi.clone());
            }
            if version.deprecated_at.is_none() {
                version.deprecated_at = stored.and_then(|s| s.deprecated_at);
            }
            catalog::stamp_deprecation(stored.map(|s| s.state), &mut version, at.ms);
            put(state, name, version, at)
        }
        Spec::Subscription(s) => put(state, name, s.clone(), at),
    }
}

/// Removes `name` of `kind` unless something names it, with what it owns: a service's
/// instances, a consumer's keys, an API version's routes.
fn delete(state: &mut State, kind: Kind, name: &str) -> Result<(), Rejection> {
    refs::check_delete(state, kind, name)?;
    match kind {
        Kind::Service => {
            let instances: Vec<String> = state
                .instances_of_service(name)
                .map(|i| i.name.clone())
                .collect();
            for instance in instances {
                remove::<InstanceSpec>(state, &instance);
            }
            remove::<ServiceSpec>(state, name);
        }
        Kind::Route => remove::<RouteSpec>(state, name),
        Kind::Consumer => {
            for key in state.keys_of_consumer(name) {
                remove::<StoredKey>(state, &key);
            }
            remove::<ConsumerSpec>(state, name);
        }
        Kind::RateLimit => remove::<RateLimitSpec>(state, name),
        Kind::Key => remove::<StoredKey>(state, name),
        Kind::Instance => remove::<InstanceSpec>(state, name),
        Kind::Certificate => remove::<CertificateSpec>(state, name),
        Kind::Token => remove::<StoredToken>(state, name),
        Kind::AiProvider => remove::<ProviderConfig>(state, name),
        Kind::AiModel => remove::<ModelConfig>(state, name),
        Kind::AiPrompt => remove::<PromptSpec>(state, name),
        Kind::Team => remove::<TeamSpec>(state, name),
        Kind::Api => remove::<ApiSpec>(state, name),
        Kind::ApiVersion => {
            for route in state.routes_of_version(name) {
                remove::<RouteSpec>(state, &route);
            }
            remove::<ApiVersionSpec>(state, name);
        }
        Kind::Subscription => remove::<SubscriptionSpec>(state, name),
    }
    Ok(())
}

/// A heartbeat keeps a registered instance alive.
fn heartbeat(state: &mut State, at: At, instance: &str) -> Applied {
    let table = Arc::make_mut(&mut state.instances);
    let entry = table.get_mut(instance).ok_or_else(|| Rejection::NotFound {
        kind: Kind::Instance,
        name: instance.to_string(),
    })?;
    entry.updated_at = at.ms;
    entry.version = at.index;
    Ok(Outcome {
        index: at.index,
        version: Some(at.index),
        created: false,
    })
}

fn check_version(
    state: &State,
    kind: Kind,
    name: &str,
    expected: Option<u64>,
) -> Result<(), Rejection> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let actual = state.version_of(kind, name);
    if actual == expected {
        Ok(())
    } else {
        Err(Rejection::VersionMismatch {
            kind,
            name: name.to_string(),
            expected,
            actual,
        })
    }
}

fn put<R: Resource>(state: &mut State, name: &str, spec: R, at: At) -> Applied {
    let table = Arc::make_mut(R::table_mut(state));
    let existing = table.get(name).map(|e| e.created_at);
    let created_at = existing.unwrap_or(at.ms);
    table.insert(
        name.to_string(),
        Entity {
            name: name.to_string(),
            version: at.index,
            created_at,
            updated_at: at.ms,
            spec,
        },
    );
    Ok(Outcome {
        index: at.index,
        version: Some(at.index),
        created: existing.is_none(),
    })
}

/// A consumer's write-only secrets left out of a write are kept from the stored consumer: an
/// HS256 credential without `key` keeps the stored secret of the same issuer, a basic credential
/// without `password` the stored hash of the same user name. Without one to keep, the write is
/// refused.
fn keep_stored_secrets(
    state: &State,
    name: &str,
    mut consumer: ConsumerSpec,
) -> Result<ConsumerSpec, Rejection> {
    let stored = state.consumers.get(name).map(|e| &e.spec);
    for (i, credential) in consumer.jwt.iter_mut().enumerate() {
        if credential.algorithm != JwtAlgorithm::HS256 || credential.key.is_some() {
            continue;
        }
        credential.key = stored
            .and_then(|s| {
                s.jwt.iter().find(|old| {
                    old.issuer == credential.issuer && old.algorithm == JwtAlgorithm::HS256
                })
            })
            .and_then(|old| old.key.clone());
        if credential.key.is_none() {
            return Err(Rejection::MissingSecret {
                field: format!("jwt[{i}].key"),
            });
        }
    }
    if let Some(basic) = &mut consumer.basic_auth
        && basic.password.is_empty()
    {
        basic.password = stored
            .and_then(|s| s.basic_auth.as_ref())
            .filter(|old| old.username == basic.username)
            .map(|old| old.password.clone())
            .ok_or_else(|| Rejection::MissingSecret {
                field: "basic_auth.password".into(),
            })?;
    }
    Ok(consumer)
}

fn remove<R: Resource>(state: &mut State, name: &str) {
    Arc::make_mut(R::table_mut(state)).remove(name);
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftgate_model::Target;
    use raftgate_model::access::TokenRole;

    fn proposal(command: Command) -> Proposal {
        Proposal {
            request_id: 1,
            at_ms: 1000,
            command,
            actor: None,
        }
    }

    fn put_cmd(name: &str, spec: Spec, if_version: Option<u64>) -> Proposal {
        proposal(Command::Put {
            name: name.into(),
            spec: Box::new(spec),
            if_version,
        })
    }

    fn service() -> Spec {
        Spec::Service(ServiceSpec {
            targets: vec![Target {
                url: "http://127.0.0.1:1".into(),
                weight: 1,
            }],
            ..Default::default()
        })
    }

    /// Stores `spec` under `name` as it is, bypassing the state machine (a state to start from).
    pub(super) fn insert<R: Resource>(s: &mut State, name: &str, spec: R) {
        Arc::make_mut(R::table_mut(s)).insert(name.into(), Entity::new(name, spec));
    }

    /// Stores an admin token `name`, so proposals may name it as their actor.
    pub(super) fn token(s: &mut State, name: &str, role: TokenRole, team: Option<&str>) {
        let token = StoredToken {
            role,
            team: team.map(Into::into),
            prefix: "rga_".into(),
            hash: "0".repeat(64),
        };
        insert(s, name, token);
    }

    /// A prompt API at `path` calling model alias `model`.
    pub(super) fn prompt(path: &str, model: &str) -> PromptSpec {
        use raftgate_model::prompt::{PromptMessage, PromptRole};
        PromptSpec {
            path: path.into(),
            model: model.into(),
            messages: vec![PromptMessage {
                role: PromptRole::User,
                content: "hi".into(),
            }],
            variables: Default::default(),
            parameters: Default::default(),
            response_format: Default::default(),
            team: None,
        }
    }

    /// An OpenAI-kind provider without a key.
    pub(super) fn provider() -> ProviderConfig {
        ProviderConfig {
            kind: raftgate_model::ai::ProviderKind::Openai,
            base_url: "http://127.0.0.1:1/v1".into(),
            api_key: None,
            api_version: None,
            timeout_ms: 1000,
            stream_idle_timeout_ms: 1000,
        }
    }

    /// A model alias with one deployment on `provider`.
    pub(super) fn model(provider: &str) -> ModelConfig {
        ModelConfig {
            deployments: vec![raftgate_model::ai::Deployment {
                provider: provider.into(),
                model: "gpt".into(),
                weight: 1,
                priority: 0,
                price: None,
            }],
            price: None,
            context_window: None,
            cache: None,
            team: None,
        }
    }

    fn route(service: &str) -> Spec {
        Spec::Route(RouteSpec {
            service: service.into(),
            paths: vec!["/".into()],
            hosts: vec![],
            methods: vec![],
            strip_path: false,
            ..Default::default()
        })
    }

    #[test]
    fn versions_references_and_cascades() {
        let mut s = State::default();
        // A route needs its service.
        assert!(matches!(
            apply(&mut s, 1, &put_cmd("r", route("svc"), None)),
            Err(Rejection::MissingReference { .. })
        ));
        assert_eq!(
            apply(&mut s, 2, &put_cmd("svc", service(), Some(0)))
                .unwrap()
                .version,
            Some(2)
        );
        // If-Match 0 on an existing resource fails; the right version succeeds and keeps created_at.
        assert!(matches!(
            apply(&mut s, 3, &put_cmd("svc", service(), Some(0))),
            Err(Rejection::VersionMismatch { actual: 2, .. })
        ));
        let mut later = put_cmd("svc", service(), Some(2));
        later.at_ms = 5000;
        apply(&mut s, 4, &later).unwrap();
        let e = &s.services["svc"];
        assert_eq!((e.version, e.created_at, e.updated_at), (4, 1000, 5000));
        apply(&mut s, 5, &put_cmd("r", route("svc"), None)).unwrap();
        // A service in use cannot go.
        let del = proposal(Command::Delete {
            kind: Kind::Service,
            name: "svc".into(),
            if_version: None,
        });
        assert!(matches!(
            apply(&mut s, 6, &del),
            Err(Rejection::InUse { .. })
        ));
        // Deleting a consumer removes its keys.
        apply(
            &mut s,
            7,
            &put_cmd("c", Spec::Consumer(ConsumerSpec::default()), None),
        )
        .unwrap();
        let key = StoredKey {
            consumer: "c".into(),
            prefix: "rg_ab".into(),
            hash: "0".repeat(64),
            ai_limits: Default::default(),
        };
        apply(&mut s, 8, &put_cmd("k1", Spec::Key(key), None)).unwrap();
        let del_c = proposal(Command::Delete {
            kind: Kind::Consumer,
            name: "c".into(),
            if_version: None,
        });
        apply(&mut s, 9, &del_c).unwrap();
        assert!(s.keys.is_empty() && s.consumers.is_empty());
        let missing = proposal(Command::Delete {
            kind: Kind::Route,
            name: "nope".into(),
            if_version: None,
        });
        assert!(matches!(
            apply(&mut s, 10, &missing),
            Err(Rejection::NotFound { .. })
        ));
    }

    #[test]
    fn write_only_consumer_secrets_left_out_are_kept() {
        use raftgate_model::policy::{BasicCredential, JwtCredential};
        let consumer = |key: Option<&str>, password: &str, username: &str| {
            Spec::Consumer(ConsumerSpec {
                jwt: vec![JwtCredential {
                    issuer: "iss".into(),
                    algorithm: JwtAlgorithm::HS256,
                    key: key.map(Into::into),
                    jwks: None,
                }],
                basic_auth: Some(BasicCredential {
                    username: username.into(),
                    password: password.into(),
                }),
                ..ConsumerSpec::default()
            })
        };
        let mut s = State::default();
        // Nothing stored yet: a secret left out is refused, naming its field.
        assert_eq!(
            apply(
                &mut s,
                1,
                &put_cmd("c", consumer(None, "$argon2id$h", "u"), None)
            ),
            Err(Rejection::MissingSecret {
                field: "jwt[0].key".into()
            })
        );
        assert_eq!(
            apply(
                &mut s,
                2,
                &put_cmd("c", consumer(Some("sealed:v1:k"), "", "u"), None)
            ),
            Err(Rejection::MissingSecret {
                field: "basic_auth.password".into()
            })
        );
        apply(
            &mut s,
            3,
            &put_cmd("c", consumer(Some("sealed:v1:k"), "$argon2id$h", "u"), None),
        )
        .unwrap();
        // Left out later: the stored ones are kept.
        apply(&mut s, 4, &put_cmd("c", consumer(None, "", "u"), None)).unwrap();
        let stored = &s.consumers["c"].spec;
        assert_eq!(stored.jwt[0].key.as_deref(), Some("sealed:v1:k"));
        assert_eq!(stored.basic_auth.as_ref().unwrap().password, "$argon2id$h");
        // A password is kept only for the same user name.
        assert!(matches!(
            apply(&mut s, 5, &put_cmd("c", consumer(None, "", "other"), None)),
            Err(Rejection::MissingSecret { .. })
        ));
    }

    #[test]
    fn a_provider_used_by_a_model_is_not_deleted_and_cooldowns_expire() {
        use raftgate_model::ai::AiCooldown;
        let mut s = State::default();
        apply(&mut s, 1, &put_cmd("p", Spec::AiProvider(provider()), None)).unwrap();
        apply(&mut s, 2, &put_cmd("m", Spec::AiModel(model("p")), None)).unwrap();
        let delete = |kind, name: &str| {
            proposal(Command::Delete {
                kind,
                name: name.into(),
                if_version: None,
            })
        };
        let refused = apply(&mut s, 3, &delete(Kind::AiProvider, "p")).unwrap_err();
        assert_eq!(
            refused,
            Rejection::InUse {
                kind: Kind::AiProvider,
                name: "p".into(),
                by_kind: Kind::AiModel,
                by: vec!["m".into()],
            }
        );
        apply(&mut s, 4, &delete(Kind::AiModel, "m")).unwrap();
        apply(&mut s, 5, &delete(Kind::AiProvider, "p")).unwrap();
        assert!(s.ai_providers.is_empty());

        // Cooldowns: the later end wins; the proposal's time expires them.
        let report = |at_ms, until_ms| Proposal {
            at_ms,
            ..proposal(Command::RecordAiUsage {
                deltas: vec![],
                cooldowns: vec![AiCooldown {
                    provider: "p".into(),
                    model: "gpt".into(),
                    until_ms,
                }],
            })
        };
        apply(&mut s, 6, &report(1_000, 5_000)).unwrap();
        apply(&mut s, 7, &report(2_000, 4_000)).unwrap();
        assert_eq!(
            s.ai_cooldowns.get(&("p".into(), "gpt".into())),
            Some(&5_000)
        );
        let quiet = |at_ms| Proposal {
            at_ms,
            ..proposal(Command::RecordAiUsage {
                deltas: vec![],
                cooldowns: vec![],
            })
        };
        let before = s.ai_cooldowns.clone();
        apply(&mut s, 8, &quiet(3_000)).unwrap();
        assert!(
            Arc::ptr_eq(&before, &s.ai_cooldowns),
            "nothing changed, same table"
        );
        apply(&mut s, 9, &quiet(5_000)).unwrap();
        assert!(s.ai_cooldowns.is_empty());
    }

    #[test]
    fn a_prompt_api_and_a_route_never_claim_the_same_path() {
        let prompt = |path: &str| Spec::AiPrompt(prompt(path, "m"));
        let route_at = |paths: &[&str], methods: &[&str]| {
            let Spec::Route(mut r) = route("svc") else {
                unreachable!()
            };
            r.paths = paths.iter().map(|p| p.to_string()).collect();
            r.methods = methods.iter().map(|m| m.to_string()).collect();
            Spec::Route(r)
        };
        let mut s = State::default();
        insert(&mut s, "m", model("p"));
        apply(&mut s, 1, &put_cmd("svc", service(), None)).unwrap();
        apply(&mut s, 2, &put_cmd("shop", route_at(&["/shop"], &[]), None)).unwrap();
        apply(
            &mut s,
            3,
            &put_cmd("exact", route_at(&["=/cart"], &["POST"]), None),
        )
        .unwrap();
        apply(
            &mut s,
            4,
            &put_cmd("re", route_at(&["~^/users/[0-9]+$"], &[]), None),
        )
        .unwrap();
        apply(
            &mut s,
            5,
            &put_cmd("reads", route_at(&["/news"], &["GET"]), None),
        )
        .unwrap();
        apply(&mut s, 6, &put_cmd("all", route_at(&["/"], &[]), None)).unwrap();
        // A prompt may not take a path a route names (prefix, exact or regex) for POST.
        for (i, (path, by)) in [("/shop", "shop"), ("/cart", "exact"), ("/users/7", "re")]
            .into_iter()
            .enumerate()
        {
            let refused = apply(&mut s, 10 + i as u64, &put_cmd("p", prompt(path), None));
            assert_eq!(
                refused,
                Err(Rejection::PathTaken {
                    field: "path".into(),
                    path: path.into(),
                    by_kind: Kind::Route,
                    by: by.into(),
                })
            );
        }
        // Below a prefix, on a route without POST, or under the catch-all: its own path.
        for (i, path) in ["/shop/assistant", "/news", "/apis/x"]
            .into_iter()
            .enumerate()
        {
            apply(
                &mut s,
                20 + i as u64,
                &put_cmd(&format!("p{i}"), prompt(path), None),
            )
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        }
        // The other way round: a route that a prompt API would shadow, and another prompt.
        let refused = apply(
            &mut s,
            30,
            &put_cmd("r2", route_at(&["=/apis/x"], &[]), None),
        );
        assert_eq!(
            refused,
            Err(Rejection::PathTaken {
                field: "paths[0]".into(),
                path: "=/apis/x".into(),
                by_kind: Kind::AiPrompt,
                by: "p2".into(),
            })
        );
        assert!(
            apply(
                &mut s,
                31,
                &put_cmd("r3", route_at(&["/news"], &["POST"]), None)
            )
            .is_err()
        );
        apply(
            &mut s,
            32,
            &put_cmd("r4", route_at(&["/news"], &["GET"]), None),
        )
        .unwrap();
        let refused = apply(&mut s, 33, &put_cmd("other", prompt("/apis/x"), None));
        assert!(
            matches!(&refused, Err(Rejection::PathTaken { by_kind: Kind::AiPrompt, by, .. }) if by == "p2"),
            "{refused:?}"
        );
        // Rewriting a prompt at its own path is fine.
        apply(&mut s, 34, &put_cmd("p2", prompt("/apis/x"), None)).unwrap();
    }

    #[test]
    fn admin_writes_are_audited_with_actor_and_outcome() {
        let mut s = State::default();
        token(&mut s, "ops", TokenRole::Admin, None);
        token(&mut s, "ci", TokenRole::Admin, None);
        let by = |actor: Option<&str>, mut p: Proposal| {
            p.actor = actor.map(str::to_string);
            p
        };
        apply(&mut s, 1, &by(Some("ops"), put_cmd("svc", service(), None))).unwrap();
        // Refused writes are recorded too, with why.
        let refused = by(Some("ci"), put_cmd("r", route("nope"), None));
        assert!(apply(&mut s, 2, &refused).is_err());
        // The cluster's own writes are not.
        apply(&mut s, 3, &proposal(Command::ExpireInstances)).unwrap();
        apply(&mut s, 4, &put_cmd("other", service(), None)).unwrap();
        let record = Command::Record {
            operation: AuditOperation::RemoveMember,
            name: Some("4".into()),
            error: None,
        };
        apply(&mut s, 5, &by(Some("ops"), proposal(record))).unwrap();

        let seen: Vec<_> = s
            .audit
            .iter()
            .map(|e| {
                (
                    e.index,
                    e.actor.as_str(),
                    e.operation,
                    e.kind,
                    e.error.is_some(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (1, "ops", AuditOperation::Put, Some(Kind::Service), false),
                (2, "ci", AuditOperation::Put, Some(Kind::Route), true),
                (5, "ops", AuditOperation::RemoveMember, None, false),
            ]
        );
        assert_eq!(s.audit[0].at, 1000);
        assert_eq!(s.audit[2].name.as_deref(), Some("4"));
    }
}
