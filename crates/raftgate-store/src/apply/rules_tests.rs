//! The state machine's rules about teams, references and the catalog, one test per rule.

use raftgate_model::access::TokenRole;
use raftgate_model::catalog::{
    ApiSpec, ApiVersionRef, ApiVersionSpec, Backend, Lifecycle, Plan, SubscriptionMode,
    SubscriptionSpec, SubscriptionState, Visibility,
};
use raftgate_model::policy::Policies;
use raftgate_model::{
    Command, ConsumerSpec, Kind, Proposal, RateLimitSpec, RateWindow, Rejection, RouteSpec,
    ServiceSpec, Spec, State,
};

use super::apply;
use super::tests::{insert, model, prompt, provider, token};
use raftgate_model::access::{AuditOperation, TeamSpec};
use raftgate_model::command::Applied;

/// A state and the log index of the next proposal.
struct Log {
    s: State,
    index: u64,
}

impl Log {
    /// Teams `a` and `b`, each with an owner, a developer and a viewer token (`a-owner`, ...),
    /// and a cluster read-only token `ro`.
    fn new() -> Log {
        let mut s = State::default();
        for team in ["a", "b"] {
            insert(&mut s, team, TeamSpec::default());
            for role in [TokenRole::Owner, TokenRole::Developer, TokenRole::Viewer] {
                token(
                    &mut s,
                    &format!("{team}-{}", role.as_str()),
                    role,
                    Some(team),
                );
            }
        }
        token(&mut s, "ro", TokenRole::ReadOnly, None);
        Log { s, index: 0 }
    }

    fn run(&mut self, actor: &str, command: Command) -> Applied {
        self.index += 1;
        let proposal = Proposal {
            request_id: u128::from(self.index),
            at_ms: 1_000 + self.index,
            command,
            actor: Some(actor.to_string()),
        };
        apply(&mut self.s, self.index, &proposal)
    }

    fn put(&mut self, actor: &str, name: &str, spec: Spec) -> Applied {
        self.run(
            actor,
            Command::Put {
                name: name.into(),
                spec: Box::new(spec),
                if_version: None,
            },
        )
    }

    fn delete(&mut self, actor: &str, kind: Kind, name: &str) -> Applied {
        self.run(
            actor,
            Command::Delete {
                kind,
                name: name.into(),
                if_version: None,
            },
        )
    }

    /// Asserts `result` refused with `expected`.
    fn refused(result: Applied, expected: Rejection) {
        assert_eq!(result, Err(expected));
    }
}

const ADMIN: &str = "bootstrap";

fn service(team: Option<&str>, limits: &[&str]) -> Spec {
    Spec::Service(ServiceSpec {
        team: team.map(Into::into),
        policies: Policies {
            rate_limits: limits.iter().map(|l| l.to_string()).collect(),
            ..Policies::default()
        },
        ..ServiceSpec::default()
    })
}

fn route(team: Option<&str>, service: &str, limits: &[&str]) -> RouteSpec {
    RouteSpec {
        service: service.into(),
        paths: vec!["/x".into()],
        team: team.map(Into::into),
        policies: Policies {
            rate_limits: limits.iter().map(|l| l.to_string()).collect(),
            ..Policies::default()
        },
        ..RouteSpec::default()
    }
}

fn limit(team: Option<&str>) -> Spec {
    Spec::RateLimit(RateLimitSpec {
        limit: 10,
        window: RateWindow::Minute,
        scope: Default::default(),
        fixed: false,
        fail_open: false,
        team: team.map(Into::into),
    })
}

fn consumer(team: Option<&str>) -> Spec {
    Spec::Consumer(ConsumerSpec {
        team: team.map(Into::into),
        ..ConsumerSpec::default()
    })
}

fn api(team: &str, subscription: SubscriptionMode, plans: &[(&str, &[&str])]) -> Spec {
    Spec::Api(ApiSpec {
        team: Some(team.into()),
        subscription,
        plans: plans
            .iter()
            .map(|(name, limits)| Plan {
                name: name.to_string(),
                rate_limits: limits.iter().map(|l| l.to_string()).collect(),
            })
            .collect(),
        ..ApiSpec::default()
    })
}

fn version(service: &str, state: Lifecycle, successor: Option<&str>) -> ApiVersionSpec {
    ApiVersionSpec {
        base_path: "/orders/v1".into(),
        backend: Backend::Service(service.into()),
        state,
        successor: successor.map(Into::into),
        sunset_at: None,
        deprecated_at: None,
        openapi: None,
        policies: Default::default(),
    }
}

fn forbidden(actor: &str, result: Applied) {
    assert!(
        matches!(&result, Err(Rejection::Forbidden { actor: a, .. }) if a == actor),
        "{actor}: {result:?}"
    );
}

#[test]
fn writes_are_authorized_against_the_stored_objects() {
    let mut log = Log::new();
    // A developer writes its own team's objects, never another team's or a shared one.
    log.put("a-developer", "web", service(Some("a"), &[]))
        .unwrap();
    let other = log.put("a-developer", "other", service(Some("b"), &[]));
    assert!(
        matches!(&other, Err(Rejection::Forbidden { field: Some(f), .. }) if f == "team"),
        "{other:?}"
    );
    forbidden(
        "a-developer",
        log.put("a-developer", "shared", service(None, &[])),
    );
    // Viewers and read-only tokens write nothing.
    forbidden(
        "a-viewer",
        log.put("a-viewer", "v", service(Some("a"), &[])),
    );
    forbidden("ro", log.put("ro", "v", service(None, &[])));
    forbidden("a-viewer", log.delete("a-viewer", Kind::Service, "web"));
    // Names are global: another team's name is taken, and its object is not found.
    Log::refused(
        log.put("b-owner", "web", service(Some("b"), &[])),
        Rejection::NameTaken {
            kind: Kind::Service,
            name: "web".into(),
        },
    );
    Log::refused(
        log.delete("b-owner", Kind::Service, "web"),
        Rejection::NotFound {
            kind: Kind::Service,
            name: "web".into(),
        },
    );
    assert_eq!(log.s.services["web"].spec.team.as_deref(), Some("a"));
    // Cluster-wide kinds need a cluster token, whatever the team role.
    forbidden(
        "a-owner",
        log.put("a-owner", "c", Spec::Team(TeamSpec::default())),
    );
    forbidden("a-owner", log.delete("a-owner", Kind::Team, "a"));
    // A token revoked before its write is applied writes nothing.
    log.delete(ADMIN, Kind::Token, "a-developer").unwrap();
    Log::refused(
        log.put("a-developer", "late", service(Some("a"), &[])),
        Rejection::Revoked {
            actor: "a-developer".into(),
        },
    );
    assert!(!log.s.services.contains_key("late"));
    // The cluster admin does anything, and an owner deletes its team's object.
    log.put(ADMIN, "shared", service(None, &[])).unwrap();
    log.delete("a-owner", Kind::Service, "web").unwrap();
}

#[test]
fn owners_manage_their_teams_tokens_only() {
    let mut log = Log::new();
    let token = |role, team: Option<&str>| {
        Spec::Token(raftgate_model::access::StoredToken {
            role,
            team: team.map(Into::into),
            prefix: "rga_1".into(),
            hash: "1".repeat(64),
        })
    };
    log.put("a-owner", "ci-a", token(TokenRole::Developer, Some("a")))
        .unwrap();
    forbidden(
        "a-owner",
        log.put("a-owner", "x", token(TokenRole::Viewer, Some("b"))),
    );
    forbidden(
        "a-owner",
        log.put("a-owner", "x", token(TokenRole::Admin, None)),
    );
    forbidden(
        "a-developer",
        log.put("a-developer", "x", token(TokenRole::Viewer, Some("a"))),
    );
    forbidden("a-owner", log.delete("a-owner", Kind::Token, "b-viewer"));
    log.delete("a-owner", Kind::Token, "ci-a").unwrap();
    // A token needs its team to exist.
    assert!(matches!(
        log.put(ADMIN, "x", token(TokenRole::Viewer, Some("nope"))),
        Err(Rejection::MissingReference { field, .. }) if field == "team"
    ));
}

#[test]
fn references_are_checked_and_referenced_objects_stay() {
    let mut log = Log::new();
    // Everything named must exist, the team of an object included.
    let missing = |field: &str, kind, name: &str| {
        Err(Rejection::MissingReference {
            field: field.into(),
            kind,
            name: name.into(),
        })
    };
    assert_eq!(
        log.put(ADMIN, "s", service(Some("nope"), &[])),
        missing("team", Kind::Team, "nope")
    );
    assert_eq!(
        log.put(ADMIN, "s", service(None, &["rl"])),
        missing("policies.rate_limits[0]", Kind::RateLimit, "rl")
    );
    assert_eq!(
        log.put(ADMIN, "m", Spec::AiModel(model("p"))),
        missing("deployments[0].provider", Kind::AiProvider, "p")
    );
    let prompt = Spec::AiPrompt(prompt("/apis/p", "m"));
    assert_eq!(
        log.put(ADMIN, "p", prompt.clone()),
        missing("model", Kind::AiModel, "m")
    );

    // Deleting what is named is refused, naming who names it.
    let in_use = |kind, name: &str, by_kind, by: &[&str]| {
        Err(Rejection::InUse {
            kind,
            name: name.into(),
            by_kind,
            by: by.iter().map(|b| b.to_string()).collect(),
        })
    };
    log.put(ADMIN, "rl", limit(None)).unwrap();
    log.put(ADMIN, "s", service(None, &["rl"])).unwrap();
    assert_eq!(
        log.delete(ADMIN, Kind::RateLimit, "rl"),
        in_use(Kind::RateLimit, "rl", Kind::Service, &["s"])
    );
    log.put(ADMIN, "s", service(None, &[])).unwrap();
    log.put(ADMIN, "r", Spec::Route(route(None, "s", &["rl"])))
        .unwrap();
    assert_eq!(
        log.delete(ADMIN, Kind::RateLimit, "rl"),
        in_use(Kind::RateLimit, "rl", Kind::Route, &["r"])
    );
    log.put(ADMIN, "r", Spec::Route(route(None, "s", &[])))
        .unwrap();
    log.put(
        ADMIN,
        "orders",
        api("a", SubscriptionMode::Auto, &[("gold", &["rl"])]),
    )
    .unwrap();
    assert_eq!(
        log.delete(ADMIN, Kind::RateLimit, "rl"),
        in_use(Kind::RateLimit, "rl", Kind::Api, &["orders"])
    );
    log.put(ADMIN, "p", Spec::AiProvider(provider())).unwrap();
    log.put(ADMIN, "m", Spec::AiModel(model("p"))).unwrap();
    log.put(ADMIN, "p", prompt).unwrap();
    assert_eq!(
        log.delete(ADMIN, Kind::AiModel, "m"),
        in_use(Kind::AiModel, "m", Kind::AiPrompt, &["p"])
    );
    // An AI version's policies name rate limits as a route's do.
    let mut ai = version("s", Lifecycle::Draft, None);
    ai.backend = Backend::AiModel("m".into());
    ai.policies.rate_limits = vec!["other".into()];
    assert_eq!(
        log.put(ADMIN, "orders/v1", Spec::ApiVersion(ai.clone())),
        missing("policies.rate_limits[0]", Kind::RateLimit, "other")
    );
    log.put(ADMIN, "orders", api("a", SubscriptionMode::Auto, &[]))
        .unwrap();
    ai.policies.rate_limits = vec!["rl".into()];
    log.put(ADMIN, "orders/v1", Spec::ApiVersion(ai)).unwrap();
    assert_eq!(
        log.delete(ADMIN, Kind::RateLimit, "rl"),
        in_use(Kind::RateLimit, "rl", Kind::ApiVersion, &["orders/v1"])
    );
    log.delete(ADMIN, Kind::ApiVersion, "orders/v1").unwrap();
    log.delete(ADMIN, Kind::RateLimit, "rl").unwrap();
    assert_eq!(
        log.delete(ADMIN, Kind::Team, "a"),
        in_use(Kind::Team, "a", Kind::Api, &["orders"])
    );
    log.delete(ADMIN, Kind::Api, "orders").unwrap();
    assert_eq!(
        log.delete(ADMIN, Kind::Team, "a"),
        in_use(
            Kind::Team,
            "a",
            Kind::Token,
            &["a-developer", "a-owner", "a-viewer"]
        )
    );
}

#[test]
fn a_team_uses_only_its_own_objects_and_shared_ones() {
    let mut log = Log::new();
    log.put("b-developer", "b-limit", limit(Some("b"))).unwrap();
    log.put(ADMIN, "shared", limit(None)).unwrap();
    log.put("b-developer", "b-svc", service(Some("b"), &[]))
        .unwrap();
    let other = |field: &str, kind, name: &str| {
        Err(Rejection::OtherTeam {
            field: field.into(),
            kind,
            name: name.into(),
        })
    };
    assert_eq!(
        log.put(
            "a-developer",
            "s",
            service(Some("a"), &["shared", "b-limit"])
        ),
        other("policies.rate_limits[1]", Kind::RateLimit, "b-limit")
    );
    assert_eq!(
        log.put(
            "a-developer",
            "r",
            Spec::Route(route(Some("a"), "b-svc", &[]))
        ),
        other("service", Kind::Service, "b-svc")
    );
    log.put("a-developer", "s", service(Some("a"), &["shared"]))
        .unwrap();
    // Moving an object to another team needs what names it to be of that team.
    log.put("a-developer", "r", Spec::Route(route(Some("a"), "s", &[])))
        .unwrap();
    assert_eq!(
        log.put(ADMIN, "s", service(Some("b"), &["shared"])),
        Err(Rejection::InUse {
            kind: Kind::Service,
            name: "s".into(),
            by_kind: Kind::Route,
            by: vec!["r".into()],
        })
    );
    // Shared (no team), everyone may use it.
    log.put(ADMIN, "s", service(None, &["shared"])).unwrap();
}

#[test]
fn versions_own_their_routes_and_move_through_the_lifecycle() {
    let mut log = Log::new();
    log.put("a-developer", "svc", service(Some("a"), &[]))
        .unwrap();
    let put_version = |log: &mut Log, actor: &str, name: &str, v: ApiVersionSpec| {
        log.put(actor, &format!("orders/{name}"), Spec::ApiVersion(v))
    };
    // A version needs its API; a team token of another team does not see the API.
    Log::refused(
        put_version(
            &mut log,
            ADMIN,
            "v1",
            version("svc", Lifecycle::Draft, None),
        ),
        Rejection::NotFound {
            kind: Kind::Api,
            name: "orders".into(),
        },
    );
    log.put(
        "a-developer",
        "orders",
        api("a", SubscriptionMode::None, &[]),
    )
    .unwrap();
    Log::refused(
        put_version(
            &mut log,
            "b-owner",
            "v1",
            version("svc", Lifecycle::Draft, None),
        ),
        Rejection::NotFound {
            kind: Kind::Api,
            name: "orders".into(),
        },
    );
    assert!(matches!(
        put_version(&mut log, "a-developer", "v1", version("nope", Lifecycle::Draft, None)),
        Err(Rejection::MissingReference { field, .. }) if field == "backend.service"
    ));
    assert!(matches!(
        put_version(&mut log, "a-developer", "v1", version("svc", Lifecycle::Draft, Some("v2"))),
        Err(Rejection::MissingReference { field, .. }) if field == "successor"
    ));
    let mut v1 = version("svc", Lifecycle::Draft, None);
    v1.openapi = Some("openapi: 3.1.0".into());
    put_version(&mut log, "a-developer", "v1", v1).unwrap();
    put_version(
        &mut log,
        "a-developer",
        "v2",
        version("svc", Lifecycle::Draft, None),
    )
    .unwrap();
    // A write without the document keeps it; a successor is another version of the API.
    put_version(
        &mut log,
        "a-developer",
        "v1",
        version("svc", Lifecycle::Draft, Some("v2")),
    )
    .unwrap();
    assert_eq!(
        log.s.api_versions["orders/v1"].spec.openapi.as_deref(),
        Some("openapi: 3.1.0")
    );
    // Routes of the version are of the API's team.
    let owned = |team: Option<&str>| {
        Spec::Route(RouteSpec {
            api_version: Some(ApiVersionRef {
                api: "orders".into(),
                version: "v1".into(),
            }),
            ..route(team, "svc", &[])
        })
    };
    assert!(matches!(
        log.put(ADMIN, "list", owned(None)),
        Err(Rejection::Invalid { field, .. }) if field == "team"
    ));
    log.put("a-developer", "list", owned(Some("a"))).unwrap();

    // Lifecycle: only the allowed moves, by transition or by a write of the version.
    let to = |log: &mut Log, actor: &str, to| {
        log.run(
            actor,
            Command::Transition {
                api: "orders".into(),
                version: "v1".into(),
                to,
                if_version: None,
            },
        )
    };
    Log::refused(
        to(&mut log, "a-developer", Lifecycle::Deprecated),
        Rejection::IllegalTransition {
            api: "orders".into(),
            version: "v1".into(),
            from: Lifecycle::Draft,
            to: Lifecycle::Deprecated,
            allowed: vec![Lifecycle::Published],
        },
    );
    forbidden("a-viewer", to(&mut log, "a-viewer", Lifecycle::Published));
    assert!(matches!(
        to(&mut log, "b-owner", Lifecycle::Published),
        Err(Rejection::NotFound {
            kind: Kind::ApiVersion,
            ..
        })
    ));
    for state in [
        Lifecycle::Published,
        Lifecycle::Deprecated,
        Lifecycle::Published,
        Lifecycle::Deprecated,
    ] {
        to(&mut log, "a-developer", state).unwrap();
        assert_eq!(log.s.api_versions["orders/v1"].spec.state, state);
    }
    assert!(matches!(
        put_version(
            &mut log,
            "a-developer",
            "v1",
            version("svc", Lifecycle::Draft, Some("v2"))
        ),
        Err(Rejection::IllegalTransition { .. })
    ));
    to(&mut log, "a-developer", Lifecycle::Retired).unwrap();
    assert!(matches!(
        to(&mut log, "a-owner", Lifecycle::Published),
        Err(Rejection::IllegalTransition { allowed, .. }) if allowed.is_empty()
    ));
    // Every move is audited with its actor and the new state.
    let moves: Vec<(&str, Option<&str>, bool)> = log
        .s
        .audit
        .iter()
        .filter(|e| e.operation == AuditOperation::Transition)
        .map(|e| (e.actor.as_str(), e.detail.as_deref(), e.error.is_none()))
        .collect();
    assert_eq!(moves.len(), 9);
    assert_eq!(moves[0], ("a-developer", Some("deprecated"), false));
    assert_eq!(moves[3], ("a-developer", Some("published"), true));
    assert_eq!(moves[8], ("a-owner", Some("published"), false));

    // What names a version keeps it; deleting it takes its routes; an API with versions stays.
    assert!(matches!(
        log.delete("a-developer", Kind::ApiVersion, "orders/v2"),
        Err(Rejection::InUse {
            by_kind: Kind::ApiVersion,
            ..
        })
    ));
    assert!(matches!(
        log.delete("a-developer", Kind::Service, "svc"),
        Err(Rejection::InUse {
            by_kind: Kind::Route,
            ..
        })
    ));
    assert!(matches!(
        log.delete("a-developer", Kind::Api, "orders"),
        Err(Rejection::InUse {
            by_kind: Kind::ApiVersion,
            ..
        })
    ));
    log.delete("a-developer", Kind::ApiVersion, "orders/v1")
        .unwrap();
    assert!(!log.s.routes.contains_key("list"));
    log.delete("a-developer", Kind::ApiVersion, "orders/v2")
        .unwrap();
    log.delete("a-developer", Kind::Api, "orders").unwrap();
}

#[test]
fn subscriptions_follow_their_state_machine() {
    let mut log = Log::new();
    log.put(ADMIN, "rl", limit(None)).unwrap();
    log.put(
        "a-developer",
        "orders",
        api("a", SubscriptionMode::None, &[]),
    )
    .unwrap();
    log.put("b-developer", "app", consumer(Some("b"))).unwrap();
    let subscribe = |log: &mut Log, actor: &str, plan: Option<&str>| {
        log.run(
            actor,
            Command::Subscribe {
                api: "orders".into(),
                application: "app".into(),
                plan: plan.map(Into::into),
            },
        )
    };
    let decide = |log: &mut Log, actor: &str, approve| {
        log.run(
            actor,
            Command::Decide {
                api: "orders".into(),
                application: "app".into(),
                approve,
            },
        )
    };
    let state = |log: &Log| log.s.subscriptions.get("orders/app").map(|s| s.spec.state);
    Log::refused(
        subscribe(&mut log, "b-developer", None),
        Rejection::NoSubscriptions {
            api: "orders".into(),
        },
    );
    // Auto: active at once. A viewer, or another team, cannot subscribe the application.
    log.put(
        "a-developer",
        "orders",
        api("a", SubscriptionMode::Auto, &[("gold", &["rl"])]),
    )
    .unwrap();
    forbidden("b-viewer", subscribe(&mut log, "b-viewer", None));
    assert!(matches!(
        subscribe(&mut log, "a-developer", None),
        Err(Rejection::MissingReference { field, .. }) if field == "application"
    ));
    assert!(matches!(
        subscribe(&mut log, "b-developer", Some("silver")),
        Err(Rejection::UnknownPlan { plans, .. }) if plans == ["gold"]
    ));
    subscribe(&mut log, "b-developer", Some("gold")).unwrap();
    assert_eq!(state(&log), Some(SubscriptionState::Active));
    assert!(matches!(
        subscribe(&mut log, "b-developer", Some("gold")),
        Err(Rejection::AlreadySubscribed { .. })
    ));
    // What a subscription names stays: its application, its API, its plan.
    assert!(matches!(
        log.delete(ADMIN, Kind::Consumer, "app"),
        Err(Rejection::InUse {
            by_kind: Kind::Subscription,
            ..
        })
    ));
    assert!(matches!(
        log.put("a-developer", "orders", api("a", SubscriptionMode::Auto, &[])),
        Err(Rejection::PlanInUse { plan, by, .. }) if plan == "gold" && by == ["app"]
    ));
    assert!(matches!(
        log.delete("a-developer", Kind::Api, "orders"),
        Err(Rejection::InUse {
            by_kind: Kind::Subscription,
            ..
        })
    ));
    // Withdrawn by the application's team (or the API's owner).
    log.delete("b-developer", Kind::Subscription, "orders/app")
        .unwrap();

    // Approval: pending until an owner of the API's team decides.
    log.put(
        "a-developer",
        "orders",
        api("a", SubscriptionMode::Approval, &[]),
    )
    .unwrap();
    subscribe(&mut log, "b-developer", None).unwrap();
    assert_eq!(state(&log), Some(SubscriptionState::Pending));
    forbidden("a-developer", decide(&mut log, "a-developer", true));
    forbidden("b-owner", decide(&mut log, "b-owner", true));
    decide(&mut log, "a-owner", false).unwrap();
    assert_eq!(state(&log), Some(SubscriptionState::Rejected));
    assert!(matches!(
        decide(&mut log, "a-owner", true),
        Err(Rejection::NotPending {
            state: SubscriptionState::Rejected,
            ..
        })
    ));
    // A rejected application may ask again.
    subscribe(&mut log, "b-developer", None).unwrap();
    decide(&mut log, "a-owner", true).unwrap();
    assert_eq!(state(&log), Some(SubscriptionState::Active));
    forbidden(
        "a-developer",
        log.delete("a-developer", Kind::Subscription, "orders/app"),
    );
    log.delete("a-owner", Kind::Subscription, "orders/app")
        .unwrap();
    let audited: Vec<(AuditOperation, &str, Option<&str>)> = log
        .s
        .audit
        .iter()
        .filter(|e| e.kind == Some(Kind::Subscription) && e.error.is_none())
        .map(|e| (e.operation, e.actor.as_str(), e.detail.as_deref()))
        .collect();
    assert_eq!(
        audited,
        [
            (AuditOperation::Subscribe, "b-developer", Some("active")),
            (AuditOperation::Delete, "b-developer", None),
            (AuditOperation::Subscribe, "b-developer", Some("pending")),
            (AuditOperation::Reject, "a-owner", None),
            (AuditOperation::Subscribe, "b-developer", Some("pending")),
            (AuditOperation::Approve, "a-owner", None),
            (AuditOperation::Delete, "a-owner", None),
        ]
    );

    // A team's API takes only the team's applications; a Put of a subscription is refused.
    let team_only = ApiSpec {
        visibility: Visibility::Team,
        ..ApiSpec {
            team: Some("a".into()),
            subscription: SubscriptionMode::Auto,
            ..ApiSpec::default()
        }
    };
    log.put("a-developer", "orders", Spec::Api(team_only))
        .unwrap();
    assert!(matches!(
        subscribe(&mut log, "b-developer", None),
        Err(Rejection::NotFound {
            kind: Kind::Api,
            ..
        })
    ));
    assert!(matches!(
        subscribe(&mut log, ADMIN, None),
        Err(Rejection::OtherTeam { field, .. }) if field == "application"
    ));
    let direct = SubscriptionSpec {
        api: "orders".into(),
        application: "app".into(),
        plan: None,
        state: SubscriptionState::Active,
    };
    assert!(matches!(
        log.put(ADMIN, "orders/app", Spec::Subscription(direct)),
        Err(Rejection::Invalid { .. })
    ));
}

#[test]
fn a_version_s_routes_are_replaced_all_or_nothing() {
    let mut log = Log::new();
    log.put("a-developer", "svc", service(Some("a"), &[]))
        .unwrap();
    log.put(
        "a-developer",
        "orders",
        api("a", SubscriptionMode::None, &[]),
    )
    .unwrap();
    log.put(
        "a-developer",
        "orders/v1",
        Spec::ApiVersion(version("svc", Lifecycle::Draft, None)),
    )
    .unwrap();
    log.put("b-developer", "b-svc", service(Some("b"), &[]))
        .unwrap();
    log.put(
        "b-developer",
        "taken",
        Spec::Route(route(Some("b"), "b-svc", &[])),
    )
    .unwrap();
    let replace = |log: &mut Log, routes: Vec<(&str, &str)>, openapi: Option<&str>| {
        log.run(
            "a-developer",
            Command::ReplaceVersionRoutes {
                api: "orders".into(),
                version: "v1".into(),
                routes: routes
                    .into_iter()
                    .map(|(name, service)| (name.to_string(), route(None, service, &[])))
                    .collect(),
                openapi: openapi.map(Into::into),
                if_version: None,
            },
        )
    };
    replace(
        &mut log,
        vec![("get-order", "svc"), ("list", "svc")],
        Some("doc 1"),
    )
    .unwrap();
    let routes = |log: &Log| log.s.routes_of_version("orders/v1");
    assert_eq!(routes(&log), ["get-order", "list"]);
    let stored = &log.s.routes["list"].spec;
    assert_eq!(stored.team.as_deref(), Some("a"));
    assert_eq!(
        stored.api_version.as_ref().map(|v| v.key()),
        Some("orders/v1".into())
    );
    // One bad route and nothing changes: neither the routes nor the document.
    let before = log.s.clone();
    assert!(matches!(
        replace(&mut log, vec![("new", "svc"), ("bad", "nope")], Some("doc 2")),
        Err(Rejection::MissingReference { field, .. }) if field == "routes[1].service"
    ));
    assert!(matches!(
        replace(&mut log, vec![("new", "svc"), ("taken", "svc")], None),
        Err(Rejection::NameTaken { .. })
    ));
    assert!(matches!(
        replace(&mut log, vec![("new", "svc"), ("new", "svc")], None),
        Err(Rejection::Invalid { field, .. }) if field == "routes[1].name"
    ));
    let invalid = log.run(
        "a-developer",
        Command::ReplaceVersionRoutes {
            api: "orders".into(),
            version: "v1".into(),
            routes: vec![(
                "bad-path".into(),
                RouteSpec {
                    paths: vec!["/a/../b".into()],
                    ..route(None, "svc", &[])
                },
            )],
            openapi: None,
            if_version: None,
        },
    );
    assert!(
        matches!(&invalid, Err(Rejection::Invalid { field, .. }) if field == "routes[0].paths[0]"),
        "{invalid:?}"
    );
    assert_eq!(log.s.routes, before.routes);
    assert_eq!(log.s.api_versions, before.api_versions);
    // Made from a version that has changed since: refused whole.
    let at = log.s.api_versions["orders/v1"].version;
    let stale = log.run(
        "a-developer",
        Command::ReplaceVersionRoutes {
            api: "orders".into(),
            version: "v1".into(),
            routes: vec![("new".into(), route(None, "svc", &[]))],
            openapi: Some("doc 2".into()),
            if_version: Some(at - 1),
        },
    );
    assert!(
        matches!(&stale, Err(Rejection::VersionMismatch { actual, .. }) if *actual == at),
        "{stale:?}"
    );
    assert_eq!(log.s.routes, before.routes);
    // A good set replaces the old one whole.
    replace(&mut log, vec![("new", "svc")], Some("doc 2")).unwrap();
    assert_eq!(routes(&log), ["new"]);
    assert_eq!(
        log.s.api_versions["orders/v1"].spec.openapi.as_deref(),
        Some("doc 2")
    );
    // Only the API's team's developers and owners replace its routes.
    let empty = |actor: &str, log: &mut Log| {
        log.run(
            actor,
            Command::ReplaceVersionRoutes {
                api: "orders".into(),
                version: "v1".into(),
                routes: vec![],
                openapi: None,
                if_version: None,
            },
        )
    };
    forbidden("a-viewer", empty("a-viewer", &mut log));
    assert!(matches!(
        empty("b-owner", &mut log),
        Err(Rejection::NotFound {
            kind: Kind::ApiVersion,
            ..
        })
    ));
    assert_eq!(routes(&log), ["new"]);
}
