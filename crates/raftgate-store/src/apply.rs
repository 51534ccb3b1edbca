//! How each [`Command`] changes the [`State`]: the deterministic heart of the state machine.
//!
//! Every node runs exactly this code on exactly the same log, so it must not read clocks,
//! randomness or anything local: time comes from the proposal, versions from the log index.

use std::sync::Arc;

use raftgate_model::access::{self, AuditEntry, AuditOperation, StoredToken};
use raftgate_model::ai::{ModelConfig, ProviderConfig};
use raftgate_model::command::Applied;
use raftgate_model::policy::{JwtAlgorithm, Policies};
use raftgate_model::prompt::{PromptSpec, route_claim};
use raftgate_model::state::Resource;
use raftgate_model::{
    CertificateSpec, Command, ConsumerSpec, Entity, InstanceSpec, Kind, Outcome, Proposal,
    RateLimitSpec, Rejection, RouteSpec, ServiceSpec, Spec, State, StoredKey,
};

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
    let (operation, kind, name, error) = match &proposal.command {
        Command::Put { name, spec, .. } => (
            AuditOperation::Put,
            Some(spec.kind()),
            Some(name.clone()),
            None,
        ),
        Command::Delete { kind, name, .. } => (
            AuditOperation::Delete,
            Some(*kind),
            Some(name.clone()),
            None,
        ),
        Command::Record {
            operation,
            name,
            error,
        } => (*operation, None, name.clone(), error.clone()),
        // Liveness, expiry and usage are the cluster's own bookkeeping, not admin decisions.
        Command::Heartbeat { .. }
        | Command::ExpireInstances
        | Command::RecordUsage { .. }
        | Command::RecordAiUsage { .. } => {
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
            name,
            error,
        },
    );
}

/// The change a proposal makes to the resources.
fn change(state: &mut State, index: u64, proposal: &Proposal) -> Applied {
    let at = proposal.at_ms;
    match &proposal.command {
        Command::Put {
            name,
            spec,
            if_version,
        } => {
            check_version(state, spec.kind(), name, *if_version)?;
            match &**spec {
                Spec::Service(s) => {
                    check_rate_limits(state, &s.policies)?;
                    put(state, name, s.clone(), index, at)
                }
                Spec::Route(r) => {
                    if !state.services.contains_key(&r.service) {
                        return Err(Rejection::MissingReference {
                            field: "service".into(),
                            kind: Kind::Service,
                            name: r.service.clone(),
                        });
                    }
                    check_rate_limits(state, &r.policies)?;
                    check_route_paths(state, r)?;
                    put(state, name, r.clone(), index, at)
                }
                Spec::Consumer(c) => {
                    let consumer = keep_stored_secrets(state, name, c.clone())?;
                    put(state, name, consumer, index, at)
                }
                Spec::RateLimit(l) => put(state, name, l.clone(), index, at),
                Spec::Key(k) => {
                    if !state.consumers.contains_key(&k.consumer) {
                        return Err(Rejection::MissingReference {
                            field: "consumer".into(),
                            kind: Kind::Consumer,
                            name: k.consumer.clone(),
                        });
                    }
                    put(state, name, k.clone(), index, at)
                }
                Spec::Instance(i) => {
                    if !state.services.contains_key(&i.service) {
                        return Err(Rejection::MissingReference {
                            field: "service".into(),
                            kind: Kind::Service,
                            name: i.service.clone(),
                        });
                    }
                    put(state, name, i.clone(), index, at)
                }
                Spec::Certificate(c) => put(state, name, c.clone(), index, at),
                Spec::Token(t) => put(state, name, t.clone(), index, at),
                Spec::AiProvider(p) => put(state, name, p.clone(), index, at),
                Spec::AiModel(m) => put(state, name, m.clone(), index, at),
                Spec::AiPrompt(p) => {
                    check_prompt_path(state, name, &p.path)?;
                    put(state, name, p.clone(), index, at)
                }
            }
        }
        Command::Delete {
            kind,
            name,
            if_version,
        } => {
            if state.version_of(*kind, name) == 0 {
                return Err(Rejection::NotFound {
                    kind: *kind,
                    name: name.clone(),
                });
            }
            check_version(state, *kind, name, *if_version)?;
            match kind {
                Kind::Service => {
                    let by = state.routes_of_service(name);
                    if !by.is_empty() {
                        return Err(Rejection::InUse {
                            kind: Kind::Service,
                            name: name.clone(),
                            by_kind: Kind::Route,
                            by,
                        });
                    }
                    // Instances registered for the service go with it.
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
                    // A consumer's credentials go with it.
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
                Kind::AiProvider => {
                    let by = state.models_of_provider(name);
                    if !by.is_empty() {
                        return Err(Rejection::InUse {
                            kind: Kind::AiProvider,
                            name: name.clone(),
                            by_kind: Kind::AiModel,
                            by,
                        });
                    }
                    remove::<ProviderConfig>(state, name);
                }
                Kind::AiModel => remove::<ModelConfig>(state, name),
                Kind::AiPrompt => remove::<PromptSpec>(state, name),
            }
            Ok(Outcome {
                index,
                version: None,
                created: false,
            })
        }
        Command::Heartbeat { instance } => heartbeat(state, index, at, instance),
        Command::ExpireInstances => expire(state, index, at),
        Command::RecordUsage { node, deltas } => {
            raftgate_model::policy::apply_usage(Arc::make_mut(&mut state.usage), *node, deltas, at);
            Ok(Outcome {
                index,
                version: None,
                created: false,
            })
        }
        Command::RecordAiUsage { deltas, cooldowns } => {
            raftgate_model::ai::apply_ai_usage(Arc::make_mut(&mut state.ai_usage), deltas, at);
            // Only touched when there is something to change, so that the gateway (which
            // follows this table by pointer) is not woken by every usage report.
            if !cooldowns.is_empty() || state.ai_cooldowns.values().any(|u| *u <= at) {
                raftgate_model::ai::apply_cooldowns(
                    Arc::make_mut(&mut state.ai_cooldowns),
                    cooldowns,
                    at,
                );
            }
            Ok(Outcome {
                index,
                version: None,
                created: false,
            })
        }
        // Only the audit entry, written by `apply`.
        Command::Record { .. } => Ok(Outcome {
            index,
            version: None,
            created: false,
        }),
    }
}

/// Policies may only name rate limits that exist.
fn check_rate_limits(state: &State, policies: &Policies) -> Result<(), Rejection> {
    match policies
        .rate_limits
        .iter()
        .enumerate()
        .find(|(_, l)| !state.rate_limits.contains_key(*l))
    {
        Some((i, l)) => Err(Rejection::MissingReference {
            field: format!("policies.rate_limits[{i}]"),
            kind: Kind::RateLimit,
            name: l.clone(),
        }),
        None => Ok(()),
    }
}

/// A prompt API's path must be its own: no other prompt API's, and none a route claims for
/// `POST` (see [`route_claim`]), which the prompt API would silently shadow.
fn check_prompt_path(state: &State, name: &str, path: &str) -> Result<(), Rejection> {
    let taken = |by_kind, by: &str| Rejection::PathTaken {
        field: "path".into(),
        path: path.to_string(),
        by_kind,
        by: by.to_string(),
    };
    if let Some((other, _)) = state
        .ai_prompts
        .iter()
        .find(|(other, e)| *other != name && e.spec.path == path)
    {
        return Err(taken(Kind::AiPrompt, other));
    }
    match state
        .routes
        .iter()
        .find(|(_, e)| route_claim(&e.spec, path).is_some())
    {
        Some((route, _)) => Err(taken(Kind::Route, route)),
        None => Ok(()),
    }
}

/// A route may not claim a prompt API's path (the prompt API would shadow it).
fn check_route_paths(state: &State, route: &RouteSpec) -> Result<(), Rejection> {
    for (prompt, e) in state.ai_prompts.iter() {
        if let Some(i) = route_claim(route, &e.spec.path) {
            return Err(Rejection::PathTaken {
                field: format!("paths[{i}]"),
                path: route.paths[i].clone(),
                by_kind: Kind::AiPrompt,
                by: prompt.clone(),
            });
        }
    }
    Ok(())
}

/// A heartbeat keeps a registered instance alive.
fn heartbeat(state: &mut State, index: u64, at: u64, instance: &str) -> Applied {
    let table = Arc::make_mut(&mut state.instances);
    let entry = table.get_mut(instance).ok_or_else(|| Rejection::NotFound {
        kind: Kind::Instance,
        name: instance.to_string(),
    })?;
    entry.updated_at = at;
    entry.version = index;
    Ok(Outcome {
        index,
        version: Some(index),
        created: false,
    })
}

/// Removes the instances whose TTL lapsed by `at`.
fn expire(state: &mut State, index: u64, at: u64) -> Applied {
    for instance in state.expired_instances(at) {
        remove::<InstanceSpec>(state, &instance);
    }
    Ok(Outcome {
        index,
        version: None,
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

fn put<R: Resource>(state: &mut State, name: &str, spec: R, index: u64, at: u64) -> Applied {
    let table = Arc::make_mut(R::table_mut(state));
    let existing = table.get(name).map(|e| e.created_at);
    let created_at = existing.unwrap_or(at);
    table.insert(
        name.to_string(),
        Entity {
            name: name.to_string(),
            version: index,
            created_at,
            updated_at: at,
            spec,
        },
    );
    Ok(Outcome {
        index,
        version: Some(index),
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
        use raftgate_model::ai::{AiCooldown, Deployment, ProviderKind};
        let mut s = State::default();
        let provider = ProviderConfig {
            kind: ProviderKind::Openai,
            base_url: "http://127.0.0.1:1/v1".into(),
            api_key: None,
            api_version: None,
            timeout_ms: 1000,
            stream_idle_timeout_ms: 1000,
        };
        apply(&mut s, 1, &put_cmd("p", Spec::AiProvider(provider), None)).unwrap();
        let model = ModelConfig {
            deployments: vec![Deployment {
                provider: "p".into(),
                model: "gpt".into(),
                weight: 1,
                priority: 0,
                price: None,
            }],
            price: None,
            context_window: None,
            cache: None,
        };
        apply(&mut s, 2, &put_cmd("m", Spec::AiModel(model), None)).unwrap();
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
        use raftgate_model::prompt::{PromptMessage, PromptRole};
        let prompt = |path: &str| {
            Spec::AiPrompt(PromptSpec {
                path: path.into(),
                model: "m".into(),
                messages: vec![PromptMessage {
                    role: PromptRole::User,
                    content: "hi".into(),
                }],
                variables: Default::default(),
                parameters: Default::default(),
                response_format: Default::default(),
            })
        };
        let route_at = |paths: &[&str], methods: &[&str]| {
            let Spec::Route(mut r) = route("svc") else {
                unreachable!()
            };
            r.paths = paths.iter().map(|p| p.to_string()).collect();
            r.methods = methods.iter().map(|m| m.to_string()).collect();
            Spec::Route(r)
        };
        let mut s = State::default();
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
