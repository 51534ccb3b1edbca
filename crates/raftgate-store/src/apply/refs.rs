//! Reference integrity: every name one object gives of another is checked here, when the
//! command is applied, identically on every node — an admin handler reading its own replica
//! could let two racing writes on two nodes both pass.
//!
//! A write must name objects that exist (400 `missing_reference` naming the field) and, for an
//! object of a team, objects of the same team or shared ones of no team (400). A deletion of
//! something still named is refused with 409 naming who names it ([`referrers`]), and an
//! object moves to another team only if what names it can follow. What an object owns goes
//! with it (see `apply::delete`).

use raftgate_model::catalog::{ApiSpec, ApiVersionSpec, api_of, key, split_key};
use raftgate_model::policy::Policies;
use raftgate_model::prompt::route_claim;
use raftgate_model::{Kind, Rejection, RouteSpec, Spec, State};

/// Whether object `name` of `kind` exists.
fn exists(state: &State, kind: Kind, name: &str) -> bool {
    state.version_of(kind, name) != 0
}

/// `name` of `kind`, given in `field`, must exist.
fn must_exist(state: &State, field: &str, kind: Kind, name: &str) -> Result<(), Rejection> {
    if exists(state, kind, name) {
        return Ok(());
    }
    Err(Rejection::MissingReference {
        field: field.to_string(),
        kind,
        name: name.to_string(),
    })
}

/// `name` of `kind`, given in `field` by an object of `team`, must exist and be of that team
/// or of none.
fn uses(
    state: &State,
    field: &str,
    kind: Kind,
    name: &str,
    team: Option<&str>,
) -> Result<(), Rejection> {
    must_exist(state, field, kind, name)?;
    match state.owner(kind, name).and_then(|o| o.team) {
        Some(other) if Some(other) != team => Err(Rejection::OtherTeam {
            field: field.to_string(),
            kind,
            name: name.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Policies may only name rate limits that exist, of the same team or shared.
fn rate_limits(
    state: &State,
    field: &str,
    limits: &[String],
    team: Option<&str>,
) -> Result<(), Rejection> {
    limits
        .iter()
        .enumerate()
        .try_for_each(|(i, l)| uses(state, &format!("{field}[{i}]"), Kind::RateLimit, l, team))
}

fn policies(state: &State, policies: &Policies, team: Option<&str>) -> Result<(), Rejection> {
    rate_limits(state, "policies.rate_limits", &policies.rate_limits, team)
}

/// Checks what `spec`, about to be stored under `name`, names.
pub(super) fn check_put(state: &State, name: &str, spec: &Spec) -> Result<(), Rejection> {
    if let Some(Some(team)) = spec.team() {
        must_exist(state, "team", Kind::Team, team)?;
    }
    match spec {
        Spec::Service(s) => policies(state, &s.policies, s.team.as_deref())?,
        Spec::Route(r) => {
            let team = r.team.as_deref();
            route_owner(state, r)?;
            uses(state, "service", Kind::Service, &r.service, team)?;
            policies(state, &r.policies, team)?;
            route_paths(state, r)?;
        }
        Spec::Key(k) => must_exist(state, "consumer", Kind::Consumer, &k.consumer)?,
        Spec::Instance(i) => must_exist(state, "service", Kind::Service, &i.service)?,
        Spec::AiModel(m) => {
            for (i, d) in m.deployments.iter().enumerate() {
                let field = format!("deployments[{i}].provider");
                must_exist(state, &field, Kind::AiProvider, &d.provider)?;
            }
        }
        Spec::AiPrompt(p) => {
            uses(state, "model", Kind::AiModel, &p.model, p.team.as_deref())?;
            prompt_path(state, name, &p.path)?;
        }
        Spec::Api(a) => {
            for (i, plan) in a.plans.iter().enumerate() {
                let field = format!("plans[{i}].rate_limits");
                rate_limits(state, &field, &plan.rate_limits, a.team.as_deref())?;
            }
            plans_kept(state, name, spec)?;
        }
        Spec::ApiVersion(v) => version(state, name, v)?,
        Spec::Consumer(_)
        | Spec::RateLimit(_)
        | Spec::Certificate(_)
        | Spec::Token(_)
        | Spec::AiProvider(_)
        | Spec::Team(_)
        | Spec::Subscription(_) => {}
    }
    team_change(state, name, spec)
}

/// A version belongs to an existing API; its backend and the rate limits of its policies are
/// the API team's (or shared), its successor another version of the API, and a new state one
/// its stored state may move to.
fn version(state: &State, versioned: &str, v: &ApiVersionSpec) -> Result<(), Rejection> {
    let Some((api, name)) = split_key(versioned) else {
        return Err(Rejection::Invalid {
            field: "name".into(),
            message: format!("'{versioned}' is not an API version key (api/version)"),
        });
    };
    if !exists(state, Kind::Api, api) {
        return Err(Rejection::NotFound {
            kind: Kind::Api,
            name: api.to_string(),
        });
    }
    let (kind, target) = v.backend.target();
    let team = state.team_of(Kind::Api, api);
    uses(state, v.backend.field(), kind, target, team)?;
    policies(state, &v.policies, team)?;
    if let Some(successor) = &v.successor {
        if successor == name {
            return Err(Rejection::Invalid {
                field: "successor".into(),
                message: "must name another version of the API, not this one".into(),
            });
        }
        must_exist(state, "successor", Kind::ApiVersion, &key(api, successor))?;
    }
    match state.api_versions.get(versioned) {
        Some(stored) if stored.spec.state != v.state => {
            super::catalog::may_move(api, name, stored.spec.state, v.state)
        }
        _ => Ok(()),
    }
}

/// A route of an API version needs the version, and is of the API's team.
fn route_owner(state: &State, route: &RouteSpec) -> Result<(), Rejection> {
    let Some(owner) = &route.api_version else {
        return Ok(());
    };
    let version = owner.key();
    must_exist(state, "api_version", Kind::ApiVersion, &version)?;
    let team = state.team_of(Kind::Api, &owner.api);
    if route.team.as_deref() != team {
        return Err(Rejection::Invalid {
            field: "team".into(),
            message: format!(
                "a route of api_version '{version}' belongs to the API's team ({}); set team to it",
                team.unwrap_or("none")
            ),
        });
    }
    Ok(())
}

/// An API may not drop a plan its subscriptions chose.
fn plans_kept(state: &State, name: &str, spec: &Spec) -> Result<(), Rejection> {
    let Spec::Api(api) = spec else {
        return Ok(());
    };
    let kept = |plan: &str| api.plans.iter().any(|p| p.name == plan);
    let mut dropped: Vec<(&str, &str)> = state
        .subscriptions
        .values()
        .filter(|s| s.spec.api == name)
        .filter_map(|s| {
            s.spec
                .plan
                .as_deref()
                .map(|p| (p, s.spec.application.as_str()))
        })
        .filter(|(plan, _)| !kept(plan))
        .collect();
    let Some(&(plan, _)) = dropped.first() else {
        return Ok(());
    };
    dropped.retain(|(p, _)| *p == plan);
    Err(Rejection::PlanInUse {
        api: name.to_string(),
        plan: plan.to_string(),
        by: dropped
            .into_iter()
            .map(|(_, app)| app.to_string())
            .collect(),
    })
}

/// An object moves to another team only if everything that names it is of that team (a
/// subscription names its application across teams, so it does not count), and an API only
/// without versions, whose routes are of its team.
fn team_change(state: &State, name: &str, spec: &Spec) -> Result<(), Rejection> {
    let (kind, Some(new)) = (spec.kind(), spec.team()) else {
        return Ok(());
    };
    let Some(old) = state.owner(kind, name).map(|o| o.team) else {
        return Ok(());
    };
    if old == new {
        return Ok(());
    }
    let stuck: Vec<(Kind, String)> = referrers(state, kind, name)
        .into_iter()
        .filter(|(by, _, team)| {
            *by != Kind::Subscription
                && (kind == Kind::Api || new.is_some_and(|new| team.as_deref() != Some(new)))
        })
        .map(|(by, name, _)| (by, name))
        .collect();
    in_use(kind, name, stuck)
}

/// 409 naming the first kind of `by`, if any.
fn in_use(kind: Kind, name: &str, by: Vec<(Kind, String)>) -> Result<(), Rejection> {
    let Some(&(by_kind, _)) = by.first() else {
        return Ok(());
    };
    Err(Rejection::InUse {
        kind,
        name: name.to_string(),
        by_kind,
        by: by
            .into_iter()
            .filter(|(k, _)| *k == by_kind)
            .map(|(_, n)| n)
            .collect(),
    })
}

/// Refuses deleting object `name` of `kind` while others name it.
pub(super) fn check_delete(state: &State, kind: Kind, name: &str) -> Result<(), Rejection> {
    let by = referrers(state, kind, name)
        .into_iter()
        .map(|(k, n, _)| (k, n))
        .collect();
    in_use(kind, name, by)
}

/// An object that names another: its kind, name and team.
type Referrer = (Kind, String, Option<String>);

/// Every object that names `name` of `kind`. What an object owns (a service's instances, a
/// consumer's keys, a version's routes) is not listed: it goes along.
fn referrers(state: &State, kind: Kind, name: &str) -> Vec<Referrer> {
    let mut by: Vec<Referrer> = Vec::new();
    let mut add = |k: Kind, n: &str, team: Option<&str>| {
        by.push((k, n.to_string(), team.map(str::to_string)));
    };
    let api_team = |api: &str| state.team_of(Kind::Api, api);
    match kind {
        Kind::Service => {
            for r in state.routes.values().filter(|r| r.spec.service == name) {
                add(Kind::Route, &r.name, r.spec.team.as_deref());
            }
        }
        Kind::RateLimit => {
            let limits = |p: &Policies| p.rate_limits.iter().any(|l| l == name);
            for r in state.routes.values().filter(|r| limits(&r.spec.policies)) {
                add(Kind::Route, &r.name, r.spec.team.as_deref());
            }
            for s in state.services.values().filter(|s| limits(&s.spec.policies)) {
                add(Kind::Service, &s.name, s.spec.team.as_deref());
            }
            let in_plans = |a: &ApiSpec| {
                a.plans
                    .iter()
                    .any(|p| p.rate_limits.iter().any(|l| l == name))
            };
            for a in state.apis.values().filter(|a| in_plans(&a.spec)) {
                add(Kind::Api, &a.name, a.spec.team.as_deref());
            }
            for v in state
                .api_versions
                .values()
                .filter(|v| limits(&v.spec.policies))
            {
                add(Kind::ApiVersion, &v.name, api_team(api_of(&v.name)));
            }
        }
        Kind::Consumer => {
            for s in state.subscriptions.values() {
                if s.spec.application == name {
                    add(Kind::Subscription, &s.name, None);
                }
            }
        }
        Kind::AiProvider => {
            for m in state.models_of_provider(name) {
                add(Kind::AiModel, &m, state.team_of(Kind::AiModel, &m));
            }
        }
        Kind::AiModel => {
            for p in state.ai_prompts.values().filter(|p| p.spec.model == name) {
                add(Kind::AiPrompt, &p.name, p.spec.team.as_deref());
            }
        }
        Kind::Api => {
            for v in state.api_versions.keys().filter(|k| api_of(k) == name) {
                add(Kind::ApiVersion, v, api_team(name));
            }
            for s in state.subscriptions.values().filter(|s| s.spec.api == name) {
                add(Kind::Subscription, &s.name, None);
            }
        }
        Kind::ApiVersion => {
            if let Some((api, version)) = split_key(name) {
                for v in state.api_versions.values() {
                    if api_of(&v.name) == api && v.spec.successor.as_deref() == Some(version) {
                        add(Kind::ApiVersion, &v.name, api_team(api));
                    }
                }
            }
        }
        Kind::Team => {
            let mine = |team: &Option<String>| team.as_deref() == Some(name);
            macro_rules! owned_by_team {
                ($($table:ident => $kind:ident),*) => {$(
                    for e in state.$table.values().filter(|e| mine(&e.spec.team)) {
                        add(Kind::$kind, &e.name, Some(name));
                    }
                )*};
            }
            owned_by_team!(
                services => Service, routes => Route, consumers => Consumer,
                rate_limits => RateLimit, ai_models => AiModel, ai_prompts => AiPrompt,
                apis => Api, tokens => Token
            );
        }
        Kind::Route
        | Kind::Key
        | Kind::Instance
        | Kind::Certificate
        | Kind::Token
        | Kind::AiPrompt
        | Kind::Subscription => {}
    }
    // Versions name their backend: a service, a model or a prompt API.
    for v in state.api_versions.values() {
        if v.spec.backend.target() == (kind, name) {
            add(Kind::ApiVersion, &v.name, api_team(api_of(&v.name)));
        }
    }
    by
}

/// A prompt API's path must be its own: no other prompt API's, and none a route claims for
/// `POST` (see [`route_claim`]), which the prompt API would silently shadow.
fn prompt_path(state: &State, name: &str, path: &str) -> Result<(), Rejection> {
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
fn route_paths(state: &State, route: &RouteSpec) -> Result<(), Rejection> {
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
