//! The catalog's own commands: lifecycle transitions of API versions, subscriptions and their
//! approval, and the all-or-nothing replacement of a version's routes that an import makes.
//! Each is one command, so it is decided once, at one log index, the same on every node.

use raftgate_model::access::Action;
use raftgate_model::catalog::{
    ApiVersionRef, ApiVersionSpec, Lifecycle, SubscriptionMode, SubscriptionSpec,
    SubscriptionState, Visibility, key,
};
use raftgate_model::command::Applied;
use raftgate_model::state::Resource;
use raftgate_model::{Kind, Rejection, RouteSpec, Spec, State, validate};

use super::guard::Actor;
use super::{put, put_spec, remove};

/// 404 for object `name` of `kind`.
fn not_found(kind: Kind, name: &str) -> impl FnOnce() -> Rejection {
    let name = name.to_string();
    move || Rejection::NotFound { kind, name }
}

/// The stored spec `name` of kind `R`, for an actor who may do `action` to it (404 otherwise).
fn stored_for<R: Resource>(
    state: &State,
    actor: &Actor,
    action: Action,
    name: &str,
) -> Result<R, Rejection> {
    let missing = not_found(R::KIND, name);
    let Some(stored) = R::table(state).get(name) else {
        return Err(missing());
    };
    actor.may(state, action, R::KIND, name, missing)?;
    Ok(stored.spec.clone())
}

/// Whether API version `api/version` may move from `from` to `to`.
pub(super) fn may_move(
    api: &str,
    version: &str,
    from: Lifecycle,
    to: Lifecycle,
) -> Result<(), Rejection> {
    if from.allowed_next().contains(&to) {
        return Ok(());
    }
    Err(Rejection::IllegalTransition {
        api: api.to_string(),
        version: version.to_string(),
        from,
        to,
        allowed: from.allowed_next().to_vec(),
    })
}

/// Where a change is made: the log index and the proposal's time.
#[derive(Clone, Copy)]
pub(super) struct At {
    /// The log index (the new version of what is written).
    pub index: u64,
    /// Unix milliseconds stamped by the proposing node.
    pub ms: u64,
}

/// [`raftgate_model::Command::Transition`].
pub(super) fn transition(
    state: &mut State,
    actor: &Actor,
    at: At,
    (api, version, to): (&str, &str, Lifecycle),
    if_version: Option<u64>,
) -> Applied {
    let versioned = key(api, version);
    let mut spec: ApiVersionSpec = stored_for(state, actor, Action::Write, &versioned)?;
    super::check_version(state, Kind::ApiVersion, &versioned, if_version)?;
    may_move(api, version, spec.state, to)?;
    let from = spec.state;
    spec.state = to;
    stamp_deprecation(Some(from), &mut spec, at.ms);
    put(state, &versioned, spec, at)
}

/// Gives a version that becomes deprecated (from `stored`, its state before) the time it did,
/// unless the writer announced one; a version no longer deprecated loses it.
pub(super) fn stamp_deprecation(stored: Option<Lifecycle>, spec: &mut ApiVersionSpec, ms: u64) {
    if spec.state != Lifecycle::Deprecated {
        spec.deprecated_at = None;
    } else if stored != Some(Lifecycle::Deprecated) && spec.deprecated_at.is_none() {
        spec.deprecated_at = Some(ms);
    }
}

/// [`raftgate_model::Command::Subscribe`].
pub(super) fn subscribe(
    state: &mut State,
    actor: &Actor,
    at: At,
    (api, application): (&str, &str),
    plan: &Option<String>,
) -> Applied {
    actor.may(
        state,
        Action::Read,
        Kind::Api,
        api,
        not_found(Kind::Api, api),
    )?;
    let Some(stored) = state.apis.get(api) else {
        return Err(not_found(Kind::Api, api)());
    };
    let spec = &stored.spec;
    actor.may(state, Action::Write, Kind::Consumer, application, || {
        Rejection::MissingReference {
            field: "application".into(),
            kind: Kind::Consumer,
            name: application.to_string(),
        }
    })?;
    let state_now = match spec.subscription {
        SubscriptionMode::None => {
            return Err(Rejection::NoSubscriptions {
                api: api.to_string(),
            });
        }
        SubscriptionMode::Auto => SubscriptionState::Active,
        SubscriptionMode::Approval => SubscriptionState::Pending,
    };
    if spec.visibility == Visibility::Team
        && state.team_of(Kind::Consumer, application) != spec.team.as_deref()
    {
        return Err(Rejection::OtherTeam {
            field: "application".into(),
            kind: Kind::Consumer,
            name: application.to_string(),
        });
    }
    if let Some(plan) = plan
        && !spec.plans.iter().any(|p| &p.name == plan)
    {
        return Err(Rejection::UnknownPlan {
            api: api.to_string(),
            plan: plan.clone(),
            plans: spec.plans.iter().map(|p| p.name.clone()).collect(),
        });
    }
    let subscription = key(api, application);
    if let Some(existing) = state.subscriptions.get(&subscription)
        && existing.spec.state != SubscriptionState::Rejected
    {
        return Err(Rejection::AlreadySubscribed {
            api: api.to_string(),
            application: application.to_string(),
            state: existing.spec.state,
        });
    }
    let spec = SubscriptionSpec {
        api: api.to_string(),
        application: application.to_string(),
        plan: plan.clone(),
        state: state_now,
    };
    put(state, &subscription, spec, at)
}

/// [`raftgate_model::Command::Decide`].
pub(super) fn decide(
    state: &mut State,
    actor: &Actor,
    at: At,
    (api, application): (&str, &str),
    approve: bool,
) -> Applied {
    let subscription = key(api, application);
    let mut spec: SubscriptionSpec = stored_for(state, actor, Action::Approve, &subscription)?;
    if spec.state != SubscriptionState::Pending {
        return Err(Rejection::NotPending {
            api: api.to_string(),
            application: application.to_string(),
            state: spec.state,
        });
    }
    spec.state = if approve {
        SubscriptionState::Active
    } else {
        SubscriptionState::Rejected
    };
    put(state, &subscription, spec, at)
}

/// [`raftgate_model::Command::ReplaceVersionRoutes`]: made on a copy of the state (cheap:
/// its tables are persistent maps) that replaces `state` only when every route passed.
pub(super) fn replace_routes(
    state: &mut State,
    actor: &Actor,
    at: At,
    (api, version): (&str, &str),
    (routes, openapi): (&[(String, RouteSpec)], &Option<String>),
    if_version: Option<u64>,
) -> Applied {
    let versioned = key(api, version);
    let mut spec: ApiVersionSpec = stored_for(state, actor, Action::Write, &versioned)?;
    super::check_version(state, Kind::ApiVersion, &versioned, if_version)?;
    let owner = ApiVersionRef {
        api: api.to_string(),
        version: version.to_string(),
    };
    let team = state.team_of(Kind::Api, api).map(str::to_string);
    let mut next = state.clone();
    for name in next.routes_of_version(&versioned) {
        remove::<RouteSpec>(&mut next, &name);
    }
    for (i, (name, route)) in routes.iter().enumerate() {
        let within = |r: Rejection| r.within(&format!("routes[{i}]"));
        let invalid = |message: String| Rejection::Invalid {
            field: format!("routes[{i}].name"),
            message,
        };
        validate::name("name", name).map_err(|e| invalid(e.message))?;
        if routes[..i].iter().any(|(other, _)| other == name) {
            return Err(invalid(format!("route '{name}' is given twice")));
        }
        if next.routes.contains_key(name) {
            // Neither this version's (those are gone) nor free: another's route.
            return Err(Rejection::NameTaken {
                kind: Kind::Route,
                name: name.clone(),
            });
        }
        let route = RouteSpec {
            api_version: Some(owner.clone()),
            team: team.clone(),
            ..route.clone()
        };
        // Made by a program (an import), not typed by a user: checked here like any input.
        route.validate().map_err(|e| {
            within(Rejection::Invalid {
                field: e.field,
                message: e.message,
            })
        })?;
        let spec = Spec::Route(route);
        actor.may_put(&next, name, &spec).map_err(within)?;
        put_spec(&mut next, name, &spec, at).map_err(within)?;
    }
    if openapi.is_some() {
        spec.openapi.clone_from(openapi);
    }
    let outcome = put(&mut next, &versioned, spec, at)?;
    *state = next;
    Ok(outcome)
}
