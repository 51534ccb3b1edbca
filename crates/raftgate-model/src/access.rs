//! Who may use the admin API, what they may do, and the record of what they did with it.
//!
//! Admin tokens beyond the bootstrap `--admin-token` are replicated objects, so a token made on
//! one node works on every node and a revoked one stops working everywhere at the same log index.
//! Only a SHA-256 of each token is replicated: tokens are random 192-bit secrets, for which a
//! fast hash is as good as a slow one.
//!
//! A token has a [`Scope`]: the whole cluster (`admin`, `read-only`) or one team with a role
//! (`owner`, `developer`, `viewer`). [`authorize`] is the one place that decides what a scope
//! may do with an object, from the object's [`Owner`]: the admin API asks it for reads and
//! lists, and the state machine asks it again for every write against the objects as stored at
//! that log index (see [`State::scope_of`]), so a race between two writes cannot let a team
//! touch another team's object.
//!
//! The audit log is a bounded ring of the last [`AUDIT_CAPACITY`] admin writes, kept in the
//! replicated [`crate::State`]: it is built by the state machine from the log, so every node holds
//! the same entries (and a node restored from a snapshot gets them with it).

use imbl::Vector;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::State;
use crate::catalog::{Lifecycle, Visibility};
use crate::command::Kind;

/// What an admin token may do: a cluster role (`admin`, `read-only`) or, for a token of a
/// team, a team role (`owner`, `developer`, `viewer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TokenRole {
    /// Every read and every write, cluster membership included.
    Admin,
    /// Reads only: every write answers 403. For dashboards, auditors and monitoring.
    ReadOnly,
    /// Everything in its team: the team's objects, its subscriptions' approvals and its tokens.
    Owner,
    /// Reads and writes the team's objects; approves nothing and manages no tokens.
    Developer,
    /// Reads the team's objects.
    Viewer,
}

impl TokenRole {
    /// Whether the role belongs to a team (and a token with it names one).
    pub fn is_team_role(self) -> bool {
        matches!(
            self,
            TokenRole::Owner | TokenRole::Developer | TokenRole::Viewer
        )
    }

    /// Rank of a team role: each one may do what the ones below may.
    fn rank(self) -> u8 {
        match self {
            TokenRole::Viewer => 1,
            TokenRole::Developer => 2,
            TokenRole::Owner => 3,
            TokenRole::Admin | TokenRole::ReadOnly => 0,
        }
    }

    /// The name as JSON spells it, for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRole::Admin => "admin",
            TokenRole::ReadOnly => "read-only",
            TokenRole::Owner => "owner",
            TokenRole::Developer => "developer",
            TokenRole::Viewer => "viewer",
        }
    }
}

/// An admin token as stored: only a hash of the secret is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StoredToken {
    /// What the token may do.
    pub role: TokenRole,
    /// The team of a team role; absent for the cluster roles.
    #[serde(default)]
    pub team: Option<String>,
    /// First characters of the token, so a user can tell tokens apart.
    pub prefix: String,
    /// Hex SHA-256 of the whole token.
    pub hash: String,
}

impl StoredToken {
    /// What the token may reach. A team role without a team (which validation refuses) reaches
    /// nothing a team owns.
    pub fn scope(&self) -> Scope {
        match (self.role, &self.team) {
            (TokenRole::Admin, _) => Scope::Cluster { write: true },
            (TokenRole::ReadOnly, _) => Scope::Cluster { write: false },
            (role, team) => Scope::Team {
                team: team.clone().unwrap_or_default(),
                role,
            },
        }
    }
}

/// A team: the owner of services, routes, applications, APIs and the other owned kinds, and
/// the scope of its members' tokens. Teams are made by a cluster admin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamSpec {
    /// What the team does, for people.
    #[serde(default)]
    pub description: String,
    /// Free-form labels.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// What a caller may reach: the whole cluster, or one team's objects with a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// A cluster token: `admin` (`write`) or `read-only`.
    Cluster {
        /// Whether it may change anything.
        write: bool,
    },
    /// A team token.
    Team {
        /// The team.
        team: String,
        /// Its role in the team: owner, developer or viewer.
        role: TokenRole,
    },
}

impl Scope {
    /// The cluster admin: the bootstrap token, the anonymous caller of a node without one.
    pub const ADMIN: Scope = Scope::Cluster { write: true };

    /// The team of a team scope.
    pub fn team(&self) -> Option<&str> {
        match self {
            Scope::Team { team, .. } => Some(team),
            Scope::Cluster { .. } => None,
        }
    }

    /// Whether [`authorize`] refuses this scope every write (read-only and viewer tokens), so
    /// the admin API can refuse a write before looking at what it writes.
    pub fn writes_nothing(&self) -> bool {
        match self {
            Scope::Cluster { write } => !write,
            Scope::Team { role, .. } => role.rank() < TokenRole::Developer.rank(),
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Cluster { write: true } => f.write_str("a cluster admin"),
            Scope::Cluster { write: false } => f.write_str("read-only"),
            Scope::Team { team, role } => write!(f, "{} of team '{team}'", role.as_str()),
        }
    }
}

/// What a caller wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read an object, or see it in a list.
    Read,
    /// Create, replace or delete an object (for tokens: manage them).
    Write,
    /// Approve or reject a subscription to an API.
    Approve,
}

/// Who an object belongs to, as [`authorize`] judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner<'a> {
    /// The owning team; `None` for objects of the whole cluster (shared ones included).
    pub team: Option<&'a str>,
    /// Readable by every token (a public API and its versions past draft).
    pub public: bool,
}

impl<'a> Owner<'a> {
    /// An object of `team` (of the cluster when `None`), readable only within it.
    pub fn team(team: Option<&'a str>) -> Self {
        Owner {
            team,
            public: false,
        }
    }
}

/// What a request is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// An object of a kind (or, for lists and creation, the kind as far as `owner` is known).
    Object {
        /// Its kind.
        kind: Kind,
        /// Who owns it.
        owner: Owner<'a>,
    },
    /// The cluster itself: status, membership, snapshots, the audit log, usage reports,
    /// upstream health.
    Cluster,
}

/// Why [`authorize`] said no.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The caller may know the object exists but may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// The object belongs to another team: to this caller it does not exist (404).
    #[error("not found")]
    NotFound,
}

impl Kind {
    /// Whether objects of this kind belong to the whole cluster, never to a team.
    pub fn cluster_wide(self) -> bool {
        matches!(self, Kind::Certificate | Kind::AiProvider | Kind::Team)
    }
}

/// The one authorization rule of the admin API and the state machine. A cluster admin may do
/// anything; a read-only token every read; a team token, within its team, reads (viewer),
/// writes (developer) and approves subscriptions and manages the team's tokens (owner).
/// Another team's object does not exist for a team token (404) unless it is public and only
/// read; cluster-wide kinds, other teams' tokens and the cluster itself are refused (403).
pub fn authorize(scope: &Scope, action: Action, target: Target<'_>) -> Result<(), Denied> {
    let (team, role) = match scope {
        Scope::Cluster { write: true } => return Ok(()),
        Scope::Cluster { write: false } if action == Action::Read => return Ok(()),
        Scope::Cluster { write: false } => {
            return Err(Denied::Forbidden(
                "is read-only; use a token with the admin role to change anything".into(),
            ));
        }
        Scope::Team { team, role } => (team.as_str(), *role),
    };
    let (kind, owner) = match target {
        Target::Cluster => {
            return Err(Denied::Forbidden(format!(
                "is a token of team '{team}'; the cluster's status, membership, snapshots, audit log and usage need a cluster token"
            )));
        }
        Target::Object { kind, owner } => (kind, owner),
    };
    if kind.cluster_wide() {
        return Err(Denied::Forbidden(format!(
            "is a token of team '{team}'; {kind}s belong to the whole cluster and need a cluster token"
        )));
    }
    let needed = match (kind, action) {
        (Kind::Token, _) | (_, Action::Approve) => TokenRole::Owner,
        (_, Action::Write) => TokenRole::Developer,
        (_, Action::Read) => TokenRole::Viewer,
    };
    if action == Action::Read && owner.public {
        return Ok(());
    }
    if owner.team != Some(team) {
        return Err(match kind {
            Kind::Token => Denied::Forbidden(format!(
                "is a token of team '{team}'; it may manage only that team's tokens"
            )),
            _ => Denied::NotFound,
        });
    }
    if role.rank() < needed.rank() {
        let what = match (kind, action) {
            (Kind::Token, _) => "manage the team's tokens",
            (_, Action::Approve) => "approve or reject subscriptions",
            (_, Action::Write) => "change anything",
            (_, Action::Read) => "read",
        };
        return Err(Denied::Forbidden(format!(
            "is {scope}; to {what} it takes the {} role",
            needed.as_str()
        )));
    }
    Ok(())
}

/// [`authorize`] for a request that any one of `checks` allows: the first refusal that is a
/// 403 wins over a 404 (the caller may know the object then).
pub fn authorize_any(scope: &Scope, checks: &[(Action, Target<'_>)]) -> Result<(), Denied> {
    let mut denied = Denied::NotFound;
    for (action, target) in checks {
        match authorize(scope, *action, *target) {
            Ok(()) => return Ok(()),
            Err(forbidden @ Denied::Forbidden(_)) if denied == Denied::NotFound => {
                denied = forbidden;
            }
            Err(_) => {}
        }
    }
    Err(denied)
}

impl State {
    /// The scope of the admin token named `actor` as this state knows it: the bootstrap and
    /// anonymous actors are cluster admins; `None` for a token that does not exist (revoked).
    pub fn scope_of(&self, actor: &str) -> Option<Scope> {
        if actor == BOOTSTRAP_ACTOR || actor == ANONYMOUS_ACTOR {
            return Some(Scope::ADMIN);
        }
        self.tokens.get(actor).map(|t| t.spec.scope())
    }

    /// The team of a consumer, service or API `name`; `None` when it has none or does not
    /// exist.
    pub fn team_of(&self, kind: Kind, name: &str) -> Option<&str> {
        match kind {
            Kind::Service => self.services.get(name)?.spec.team.as_deref(),
            Kind::Consumer => self.consumers.get(name)?.spec.team.as_deref(),
            Kind::Api => self.apis.get(name)?.spec.team.as_deref(),
            _ => self.owner(kind, name)?.team,
        }
    }

    /// Who owns the stored object `name` of `kind`; `None` when it does not exist. Keys belong
    /// to their consumer's team, instances to their service's, API versions to their API's
    /// (public when the API is and the version is past draft), subscriptions to their
    /// application's.
    pub fn owner(&self, kind: Kind, name: &str) -> Option<Owner<'_>> {
        fn team(t: &Option<String>) -> Owner<'_> {
            Owner::team(t.as_deref())
        }
        Some(match kind {
            Kind::Service => team(&self.services.get(name)?.spec.team),
            Kind::Route => team(&self.routes.get(name)?.spec.team),
            Kind::Consumer => team(&self.consumers.get(name)?.spec.team),
            Kind::RateLimit => team(&self.rate_limits.get(name)?.spec.team),
            Kind::AiModel => team(&self.ai_models.get(name)?.spec.team),
            Kind::AiPrompt => team(&self.ai_prompts.get(name)?.spec.team),
            Kind::Token => team(&self.tokens.get(name)?.spec.team),
            Kind::Key => {
                Owner::team(self.team_of(Kind::Consumer, &self.keys.get(name)?.spec.consumer))
            }
            Kind::Instance => {
                Owner::team(self.team_of(Kind::Service, &self.instances.get(name)?.spec.service))
            }
            Kind::Certificate => {
                self.certificates.get(name)?;
                Owner::team(None)
            }
            Kind::AiProvider => {
                self.ai_providers.get(name)?;
                Owner::team(None)
            }
            Kind::Team => {
                self.teams.get(name)?;
                Owner::team(None)
            }
            Kind::Api => {
                let api = &self.apis.get(name)?.spec;
                Owner {
                    team: api.team.as_deref(),
                    public: api.visibility == Visibility::Public,
                }
            }
            Kind::ApiVersion => {
                let version = &self.api_versions.get(name)?.spec;
                let api = self.owner(Kind::Api, crate::catalog::api_of(name))?;
                Owner {
                    team: api.team,
                    public: api.public && version.state != Lifecycle::Draft,
                }
            }
            Kind::Subscription => Owner::team(self.team_of(
                Kind::Consumer,
                &self.subscriptions.get(name)?.spec.application,
            )),
        })
    }

    /// [`authorize`] for the stored object `name` of `kind` (404 when it does not exist).
    /// A subscription is read by its application's team and by its API's, withdrawn by the
    /// former's developers or the latter's owners, and decided by the latter's owners.
    pub fn authorize(
        &self,
        scope: &Scope,
        action: Action,
        kind: Kind,
        name: &str,
    ) -> Result<(), Denied> {
        let owner = self.owner(kind, name).ok_or(Denied::NotFound)?;
        let object = |owner| Target::Object { kind, owner };
        if kind != Kind::Subscription {
            return authorize(scope, action, object(owner));
        }
        let api_team = self
            .subscriptions
            .get(name)
            .and_then(|s| self.team_of(Kind::Api, &s.spec.api));
        let api = object(Owner::team(api_team));
        match action {
            Action::Read => {
                authorize_any(scope, &[(Action::Read, object(owner)), (Action::Read, api)])
            }
            Action::Write => authorize_any(
                scope,
                &[(Action::Write, object(owner)), (Action::Approve, api)],
            ),
            // The application's team sees the subscription but does not decide it.
            Action::Approve => match authorize(scope, Action::Approve, api) {
                Err(Denied::NotFound) if authorize(scope, Action::Read, object(owner)).is_ok() => {
                    Err(Denied::Forbidden(format!(
                        "is {scope}; subscriptions are decided by owners of the API's team"
                    )))
                }
                decided => decided,
            },
        }
    }
}

/// How many admin writes the replicated audit log keeps; older ones are dropped first.
pub const AUDIT_CAPACITY: usize = 10_000;

/// The actor recorded for requests authenticated with the bootstrap `--admin-token`; no stored
/// token may take this name.
pub const BOOTSTRAP_ACTOR: &str = "bootstrap";

/// The actor recorded for requests to a node that has no admin token configured (loopback only).
pub const ANONYMOUS_ACTOR: &str = "anonymous";

/// What an audited admin request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditOperation {
    /// Created or replaced a resource.
    Put,
    /// Deleted a resource.
    Delete,
    /// Added a node to the cluster.
    AddMember,
    /// Removed a node from the cluster.
    RemoveMember,
    /// Built a snapshot and purged the log behind it.
    Snapshot,
    /// Moved an API version to another lifecycle state (`detail`: the new state).
    Transition,
    /// Subscribed an application to an API (`detail`: the state it got).
    Subscribe,
    /// Approved a pending subscription.
    Approve,
    /// Rejected a pending subscription.
    Reject,
    /// Replaced the routes of an API version, as an import does (`detail`: how many).
    ReplaceRoutes,
}

/// One admin write as the audit log keeps it. Absent fields are `null` in JSON rather than
/// left out: the state machine's binary codec (bincode) cannot skip fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    /// Log index of the write (or of the record of a cluster operation); increases with time.
    pub index: u64,
    /// When, Unix milliseconds, as stamped by the node that took the request.
    pub at: u64,
    /// Who: the name of the admin token used ([`BOOTSTRAP_ACTOR`] for `--admin-token`).
    pub actor: String,
    /// What was done.
    pub operation: AuditOperation,
    /// Kind of the resource written; absent for cluster operations.
    pub kind: Option<Kind>,
    /// The resource's name, or the node id of a membership change.
    pub name: Option<String>,
    /// What the operation changed to, where its kind and name do not say it (a transition's
    /// new state, a subscription's state, the number of routes imported).
    pub detail: Option<String>,
    /// Why the write was refused; absent when it succeeded.
    pub error: Option<String>,
}

/// The bounded, replicated audit log: the last [`AUDIT_CAPACITY`] entries, oldest first.
/// A persistent vector, so publishing a new state does not copy it.
pub type AuditLog = Vector<AuditEntry>;

/// Appends `entry`, dropping the oldest entries beyond [`AUDIT_CAPACITY`].
pub fn record(log: &mut AuditLog, entry: AuditEntry) {
    log.push_back(entry);
    while log.len() > AUDIT_CAPACITY {
        log.pop_front();
    }
}

/// The entries a reader asked for: with `since`, the first `limit` entries after that log index
/// (to page forward); without it, the last `limit` entries. Oldest first either way.
pub fn select(log: &AuditLog, since: Option<u64>, limit: usize) -> Vec<AuditEntry> {
    match since {
        Some(after) => log
            .iter()
            .skip_while(|e| e.index <= after)
            .take(limit)
            .cloned()
            .collect(),
        None => log
            .iter()
            .skip(log.len().saturating_sub(limit))
            .cloned()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64) -> AuditEntry {
        AuditEntry {
            index,
            at: index * 10,
            actor: "ops".into(),
            operation: AuditOperation::Put,
            kind: Some(Kind::Service),
            name: Some(format!("s{index}")),
            detail: None,
            error: None,
        }
    }

    #[test]
    fn ring_is_bounded_and_pages_forward() {
        let mut log = AuditLog::new();
        for i in 1..=(AUDIT_CAPACITY as u64 + 5) {
            record(&mut log, entry(i));
        }
        assert_eq!(log.len(), AUDIT_CAPACITY);
        assert_eq!(log.front().map(|e| e.index), Some(6));
        let last: Vec<u64> = select(&log, None, 3).iter().map(|e| e.index).collect();
        assert_eq!(last, [10_003, 10_004, 10_005]);
        let page: Vec<u64> = select(&log, Some(100), 2).iter().map(|e| e.index).collect();
        assert_eq!(page, [101, 102]);
        assert!(select(&log, Some(20_000), 10).is_empty());
    }

    #[test]
    fn entries_survive_the_snapshot_codec() {
        let mut log = AuditLog::new();
        record(&mut log, entry(1));
        record(
            &mut log,
            AuditEntry {
                kind: None,
                name: None,
                error: Some("refused".into()),
                operation: AuditOperation::Snapshot,
                ..entry(2)
            },
        );
        let bytes = crate::codec::encode(&log).unwrap();
        assert_eq!(crate::codec::decode::<AuditLog>(&bytes).unwrap(), log);
    }

    #[test]
    fn roles_read_as_documented() {
        assert_eq!(
            serde_json::to_string(&TokenRole::ReadOnly).unwrap(),
            "\"read-only\""
        );
        for role in [
            TokenRole::Admin,
            TokenRole::ReadOnly,
            TokenRole::Owner,
            TokenRole::Developer,
            TokenRole::Viewer,
        ] {
            assert_eq!(
                serde_json::to_string(&role).unwrap(),
                format!("\"{}\"", role.as_str())
            );
        }
        let token = |role, team: Option<&str>| StoredToken {
            role,
            team: team.map(Into::into),
            prefix: String::new(),
            hash: String::new(),
        };
        assert!(!token(TokenRole::Admin, None).scope().writes_nothing());
        assert!(token(TokenRole::ReadOnly, None).scope().writes_nothing());
        assert!(token(TokenRole::Viewer, Some("a")).scope().writes_nothing());
        assert!(
            !token(TokenRole::Developer, Some("a"))
                .scope()
                .writes_nothing()
        );
    }

    /// Every scope against every kind of target and action, as the module documents it.
    #[test]
    fn authorize_follows_the_role_table() {
        use Action::{Approve, Read, Write};
        /// What a case expects: allowed, hidden (404) or refused (403).
        #[derive(Debug, PartialEq)]
        enum Is {
            Ok,
            Hidden,
            Refused,
        }
        let team = |role| Scope::Team {
            team: "a".into(),
            role,
        };
        let object = |kind, team: Option<&'static str>, public| Target::Object {
            kind,
            owner: Owner { team, public },
        };
        let read_only = Scope::Cluster { write: false };
        let (viewer, developer, owner) = (
            team(TokenRole::Viewer),
            team(TokenRole::Developer),
            team(TokenRole::Owner),
        );
        let cases = [
            (&Scope::ADMIN, Write, Target::Cluster, Is::Ok),
            (
                &Scope::ADMIN,
                Approve,
                object(Kind::Subscription, Some("b"), false),
                Is::Ok,
            ),
            (&read_only, Read, Target::Cluster, Is::Ok),
            (
                &read_only,
                Read,
                object(Kind::AiProvider, None, false),
                Is::Ok,
            ),
            (
                &read_only,
                Write,
                object(Kind::Service, None, false),
                Is::Refused,
            ),
            (
                &viewer,
                Read,
                object(Kind::Service, Some("a"), false),
                Is::Ok,
            ),
            (
                &viewer,
                Write,
                object(Kind::Service, Some("a"), false),
                Is::Refused,
            ),
            (
                &developer,
                Write,
                object(Kind::Route, Some("a"), false),
                Is::Ok,
            ),
            (
                &developer,
                Approve,
                object(Kind::Subscription, Some("a"), false),
                Is::Refused,
            ),
            (
                &owner,
                Approve,
                object(Kind::Subscription, Some("a"), false),
                Is::Ok,
            ),
            (
                &owner,
                Read,
                object(Kind::Service, Some("b"), false),
                Is::Hidden,
            ),
            (
                &owner,
                Write,
                object(Kind::Service, None, false),
                Is::Hidden,
            ),
            (&viewer, Read, object(Kind::Api, Some("b"), true), Is::Ok),
            (
                &owner,
                Write,
                object(Kind::Api, Some("b"), true),
                Is::Hidden,
            ),
            (
                &owner,
                Read,
                object(Kind::AiProvider, None, false),
                Is::Refused,
            ),
            (&owner, Write, object(Kind::Team, None, false), Is::Refused),
            (&owner, Read, Target::Cluster, Is::Refused),
            (&owner, Write, object(Kind::Token, Some("a"), false), Is::Ok),
            (
                &developer,
                Read,
                object(Kind::Token, Some("a"), false),
                Is::Refused,
            ),
            (
                &owner,
                Write,
                object(Kind::Token, Some("b"), false),
                Is::Refused,
            ),
            (&owner, Write, object(Kind::Token, None, false), Is::Refused),
        ];
        for (scope, action, target, expected) in cases {
            let got = match authorize(scope, action, target) {
                Ok(()) => Is::Ok,
                Err(Denied::NotFound) => Is::Hidden,
                Err(Denied::Forbidden(_)) => Is::Refused,
            };
            assert_eq!(got, expected, "{scope} {action:?} {target:?}");
        }
        // Any one allowing suffices; a 403 is preferred to a 404.
        assert_eq!(
            authorize_any(
                &developer,
                &[
                    (Read, object(Kind::Subscription, Some("b"), false)),
                    (Read, object(Kind::Subscription, Some("a"), false)),
                ]
            ),
            Ok(())
        );
        assert!(matches!(
            authorize_any(
                &developer,
                &[
                    (Write, object(Kind::Subscription, Some("b"), false)),
                    (Approve, object(Kind::Subscription, Some("a"), false)),
                ]
            ),
            Err(Denied::Forbidden(_))
        ));
    }
}
