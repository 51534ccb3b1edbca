//! Who may make a write, decided by the state machine.
//!
//! The admin API authorizes what it can see, but its replica may lag and two writes may race
//! on two nodes. So every admin write is authorized again here, with
//! [`raftgate_model::access::authorize`], for the actor the proposal names, against the tokens
//! and objects as they are at this log index: every node decides the same, and a team can
//! never overwrite another team's object, whatever the timing.

use raftgate_model::access::{Action, Denied, Owner, Scope, Target, authorize};
use raftgate_model::catalog::api_of;
use raftgate_model::{Kind, Rejection, Spec, State};

/// The author of a proposal, as the state machine knows it.
pub(super) struct Actor<'p> {
    /// The token's name; `None` for the cluster's own writes (heartbeats, expiry, usage).
    name: Option<&'p str>,
    /// What it may reach; `None` for the cluster's own writes, which need no permission.
    scope: Option<Scope>,
}

impl<'p> Actor<'p> {
    /// The actor named `name`: refused when its token no longer exists.
    pub(super) fn of(state: &State, name: Option<&'p str>) -> Result<Self, Rejection> {
        let scope = match name {
            None => None,
            Some(actor) => Some(state.scope_of(actor).ok_or_else(|| Rejection::Revoked {
                actor: actor.to_string(),
            })?),
        };
        Ok(Actor { name, scope })
    }

    /// A refusal of this actor's write.
    fn forbidden(&self, reason: String, field: Option<&str>) -> Rejection {
        Rejection::Forbidden {
            actor: self.name.unwrap_or_default().to_string(),
            reason,
            field: field.map(str::to_string),
        }
    }

    /// Whether the actor may do `action` to the stored object `name` of `kind`; an object it
    /// may not see is answered with `hidden()`.
    pub(super) fn may(
        &self,
        state: &State,
        action: Action,
        kind: Kind,
        name: &str,
        hidden: impl FnOnce() -> Rejection,
    ) -> Result<(), Rejection> {
        let Some(scope) = &self.scope else {
            return Ok(());
        };
        self.judge(state.authorize(scope, action, kind, name), hidden)
    }

    /// The rejection of what [`authorize`] denied: `hidden()` for an object the actor may not
    /// see, a 403 otherwise.
    fn judge(
        &self,
        decision: Result<(), Denied>,
        hidden: impl FnOnce() -> Rejection,
    ) -> Result<(), Rejection> {
        decision.map_err(|denied| match denied {
            Denied::NotFound => hidden(),
            Denied::Forbidden(reason) => self.forbidden(reason, None),
        })
    }

    /// Whether the actor may write `spec` under `name`: own what it writes — an object of its
    /// own team, a key of its team's consumer, an instance of its team's service, a version of
    /// its team's API (another team's API does not exist for it) — and replace what is stored
    /// there (another team's name is taken).
    pub(super) fn may_put(&self, state: &State, name: &str, spec: &Spec) -> Result<(), Rejection> {
        let Some(scope) = &self.scope else {
            return Ok(());
        };
        let kind = spec.kind();
        let missing = |field: &str, kind, name: &str| Rejection::MissingReference {
            field: field.to_string(),
            kind,
            name: name.to_string(),
        };
        let (team, hidden) = match spec {
            Spec::Key(k) => (
                state.team_of(Kind::Consumer, &k.consumer),
                missing("consumer", Kind::Consumer, &k.consumer),
            ),
            Spec::Instance(i) => (
                state.team_of(Kind::Service, &i.service),
                missing("service", Kind::Service, &i.service),
            ),
            Spec::ApiVersion(_) => (
                state.team_of(Kind::Api, api_of(name)),
                Rejection::NotFound {
                    kind: Kind::Api,
                    name: api_of(name).to_string(),
                },
            ),
            _ => {
                let team = spec.team().flatten();
                let reason = match scope.team() {
                    Some(own) => format!(
                        "belongs to team '{own}' and writes only that team's objects; leave team out or set it to '{own}'"
                    ),
                    None => "may not write this".to_string(),
                };
                (team, self.forbidden(reason, Some("team")))
            }
        };
        let target = Target::Object {
            kind,
            owner: Owner::team(team),
        };
        self.judge(authorize(scope, Action::Write, target), || hidden)?;
        if state.version_of(kind, name) == 0 {
            return Ok(());
        }
        self.may(state, Action::Write, kind, name, || Rejection::NameTaken {
            kind,
            name: name.to_string(),
        })
    }
}
