//! Who is calling the admin API, and whether they may do what they ask.
//!
//! A request carries `Authorization: Bearer <token>`: either the bootstrap `--admin-token` (role
//! admin) or one of the replicated tokens made with `POST /tokens`. Only SHA-256 digests are
//! kept, and the presented token's digest is compared with every known one in constant time, so
//! the answer's timing says nothing about how close a guess was. A token that writes nothing
//! (read-only, viewer) gets 403 on anything but a read. The caller's [`Caller`] identity goes
//! into the request's extensions, where handlers take it to name the actor of the audit log and
//! to ask [`raftgate_model::access::authorize`] what its scope may see; the state machine asks
//! it again for every write.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::Method;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use raftgate_model::access::{
    ANONYMOUS_ACTOR, Action, BOOTSTRAP_ACTOR, Denied, Owner, Scope, Target, authorize,
};
use raftgate_model::{Command, Kind, Spec, State as Replica};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{ApiError, Shared};

/// The digest of the configured bootstrap token.
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// Hashes the configured token.
    pub fn new(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }
}

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name: the actor in the audit log.
    pub name: String,
    /// What the token may reach.
    pub scope: Scope,
}

impl Caller {
    /// The answer to what [`authorize`] denied: `missing` for an object the caller may not
    /// see, 403 otherwise.
    fn judge(&self, decision: Result<(), Denied>, missing: ApiError) -> Result<(), ApiError> {
        decision.map_err(|denied| match denied {
            Denied::NotFound => missing,
            Denied::Forbidden(reason) => ApiError::Forbidden {
                actor: self.name.clone(),
                reason,
            },
        })
    }

    /// Whether the caller may do `action` to objects of `kind` at all (of its own team, for a
    /// team token): a 403 before anything else is looked at.
    pub fn may(&self, action: Action, kind: Kind) -> Result<(), ApiError> {
        let owner = Owner::team(self.scope.team());
        let decision = authorize(&self.scope, action, Target::Object { kind, owner });
        self.judge(decision, ApiError::NotFound(format!("no such {kind}")))
    }

    /// Whether the caller may do `action` to the cluster itself (its status, membership,
    /// snapshots, audit log, usage).
    pub fn may_operate(&self, action: Action) -> Result<(), ApiError> {
        let decision = authorize(&self.scope, action, Target::Cluster);
        self.judge(decision, ApiError::NotFound("no such resource".into()))
    }

    /// Whether the stored object `name` of `kind` exists for the caller: `missing` (a 404)
    /// when it does not or is another team's.
    pub fn may_read(
        &self,
        state: &Replica,
        kind: Kind,
        name: &str,
        missing: ApiError,
    ) -> Result<(), ApiError> {
        self.judge(
            state.authorize(&self.scope, Action::Read, kind, name),
            missing,
        )
    }

    /// Whether a list shows the caller the stored object `name` of `kind`.
    pub fn sees(&self, state: &Replica, kind: Kind, name: &str) -> bool {
        state
            .authorize(&self.scope, Action::Read, kind, name)
            .is_ok()
    }

    /// Makes an object a team token writes its team's when the body names no team (the state
    /// machine refuses any other team).
    pub fn fill_team(&self, spec: &mut Spec) {
        if let (Some(team), Some(slot @ None)) = (self.scope.team(), spec.team_mut()) {
            *slot = Some(team.to_string());
        }
    }
}

/// A new random credential (API key or admin token): shown to the user once, stored only as
/// `hash`.
pub struct Secret {
    /// The whole credential: a type tag and 192 random bits in hex.
    pub secret: String,
    /// Its first characters, kept so that users can tell credentials apart.
    pub prefix: String,
    /// Hex SHA-256 of `secret`.
    pub hash: String,
}

/// Writes a newly made credential `spec` under `name` for `caller`, failing (412) rather than
/// replacing one that already exists; returns the write's log index.
pub async fn write_new(
    s: &Shared,
    caller: &Caller,
    name: &str,
    spec: Spec,
) -> Result<u64, ApiError> {
    let outcome = s
        .node
        .write_as(
            &caller.name,
            Command::Put {
                name: name.to_string(),
                spec: Box::new(spec),
                if_version: Some(0),
            },
        )
        .await?;
    Ok(outcome.index)
}

impl Secret {
    /// Characters of the credential kept (and shown) as its prefix.
    const PREFIX_LEN: usize = 10;

    /// A new credential starting with `tag` (e.g. `rgk_` for API keys).
    pub fn generate(tag: &str) -> Secret {
        let secret = format!("{tag}{}", hex::encode(rand::random::<[u8; 24]>()));
        Secret {
            prefix: secret.chars().take(Self::PREFIX_LEN).collect(),
            hash: hex::encode(Sha256::digest(secret.as_bytes())),
            secret,
        }
    }
}

/// Finds who `presented` belongs to, looking at every token so that the time taken does not
/// depend on which one (if any) matched.
fn identify(s: &Shared, bootstrap: &TokenHash, presented: &str) -> Option<Caller> {
    let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    let mut found = None;
    if bool::from(digest.ct_eq(&bootstrap.0)) {
        found = Some(Caller {
            name: BOOTSTRAP_ACTOR.into(),
            scope: Scope::ADMIN,
        });
    }
    let hex_digest = hex::encode(digest);
    let state = s.node.state();
    for token in state.tokens.values() {
        if bool::from(hex_digest.as_bytes().ct_eq(token.spec.hash.as_bytes())) {
            found = Some(Caller {
                name: token.name.clone(),
                scope: token.spec.scope(),
            });
        }
    }
    found
}

/// Whether `method` only reads.
fn is_read(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Rejects requests without a valid token (when a bootstrap token is configured) and writes by
/// tokens that write nothing; `/health` and `/ready` stay open for load balancers and orchestrators, and `/metrics`
/// for Prometheus (see the `metrics` module for why). The web console's static files stay open
/// too: they hold no data, and the page they make asks for the token it then sends with every
/// API call. Without a bootstrap token the node is loopback-only and every caller is an
/// anonymous admin.
pub async fn require_token(State(s): State<Shared>, mut req: Request, next: Next) -> Response {
    if matches!(req.uri().path(), "/health" | "/ready" | "/metrics")
        || raftgate_console::is_public(req.method(), req.uri().path())
    {
        return next.run(req).await;
    }
    let caller = match &s.token {
        None => Caller {
            name: ANONYMOUS_ACTOR.into(),
            scope: Scope::ADMIN,
        },
        Some(bootstrap) => {
            let presented = req
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            match presented.and_then(|t| identify(&s, bootstrap, t)) {
                Some(caller) => caller,
                None => return ApiError::Unauthorized.into_response(),
            }
        }
    };
    if caller.scope.writes_nothing() && !is_read(req.method()) {
        tracing::info!(
            actor = %caller.name,
            method = %req.method(),
            path = %req.uri().path(),
            "write refused: the admin token writes nothing"
        );
        let reason = format!(
            "is {} and writes nothing; use a token that may change this",
            caller.scope
        );
        return ApiError::Forbidden {
            actor: caller.name,
            reason,
        }
        .into_response();
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// Lets only cluster tokens at the cluster's own routes (status, membership, snapshots, the
/// audit log, usage reports, upstream health): a team token gets 403 there.
pub async fn require_cluster(caller: Caller, req: Request, next: Next) -> Response {
    let action = if is_read(req.method()) {
        Action::Read
    } else {
        Action::Write
    };
    match caller.may_operate(action) {
        Ok(()) => next.run(req).await,
        Err(refused) => refused.into_response(),
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or(ApiError::Unauthorized)
    }
}
