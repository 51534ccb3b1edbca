//! The one place where replicated data becomes bytes.
//!
//! Every encoded value starts with a format-version byte followed by a bincode 2 body, so that a
//! future change of format (or of codec) is made here and old data is still recognised.
//! Decoding is bounded so that bytes from the network cannot make a node allocate without limit.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Version of the byte format written by this build. Bump it whenever a replicated type
/// changes shape (bincode has no field names to tolerate that): 2 added policies, consumer
/// credentials, usage counters, admin tokens, the audit log and AI providers and models; 4
/// added a provider's `stream_idle_timeout_ms`, routes' `upgrades`, JWT `hide_credentials` and
/// the path-taken and missing-secret rejections; 5 added teams and team-scoped tokens, the
/// `team` of the owned kinds, the API catalog (APIs, versions, subscriptions, a route's
/// `api_version`), its commands and rejections, and the audit entries' `detail`; 6 added an API
/// version's `deprecated_at` and `policies` (those of an AI version) and the `if_version` of
/// `ReplaceVersionRoutes`; 7 added the traffic analytics (`RecordTraffic`, the state's
/// `traffic`); 8 writes the analytics table with each series once, its rows naming them by
/// index, with their counters packed.
pub const FORMAT_VERSION: u8 = 8;

/// Largest value [`decode`] accepts; larger input is refused rather than allocated.
pub const MAX_DECODE_BYTES: usize = 256 << 20;

/// Encoding or decoding failed.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The value could not be encoded.
    #[error("cannot encode value: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    /// The bytes are not a valid encoding of the expected type.
    #[error(
        "cannot decode stored or received data (corrupt, or written by an incompatible raftgate): {0}"
    )]
    Decode(#[from] bincode::error::DecodeError),
    /// The bytes were written in a format this build does not know.
    #[error(
        "data has format version {found}, this raftgate reads version {FORMAT_VERSION}: a node sending it needs the same raftgate version; data written by an older raftgate cannot be read: start this node with an empty data directory and let it catch up from the cluster (or re-apply the configuration)"
    )]
    Version {
        /// The version byte found.
        found: u8,
    },
    /// Nothing to decode.
    #[error("cannot decode an empty value")]
    Empty,
    /// Bytes left over after the value.
    #[error("{0} unexpected bytes after the encoded value")]
    Trailing(usize),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_DECODE_BYTES>()
}

/// Encodes `value` with the current format version.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(64);
    out.push(FORMAT_VERSION);
    bincode::serde::encode_into_std_write(value, &mut out, config())?;
    Ok(out)
}

/// Decodes bytes produced by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(CodecError::Version { found: version });
    }
    let (value, used) = bincode::serde::decode_from_slice(body, config())?;
    if used != body.len() {
        return Err(CodecError::Trailing(body.len() - used));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Kind, Proposal, Spec};
    use crate::resource::{ServiceSpec, Target};

    #[test]
    fn roundtrip_and_errors() {
        let p = Proposal {
            request_id: u128::MAX - 7,
            at_ms: 1_700_000_000_000,
            command: Command::Put {
                name: "svc".into(),
                spec: Box::new(Spec::Service(ServiceSpec {
                    targets: vec![Target {
                        url: "http://127.0.0.1:1".into(),
                        weight: 3,
                    }],
                    ..Default::default()
                })),
                if_version: Some(4),
            },
            actor: Some("ops".into()),
        };
        let bytes = encode(&p).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode::<Proposal>(&bytes).unwrap(), p);

        let mut wrong = bytes.clone();
        wrong[0] = 99;
        assert!(matches!(
            decode::<Proposal>(&wrong),
            Err(CodecError::Version { found: 99 })
        ));
        assert!(matches!(decode::<Proposal>(&[]), Err(CodecError::Empty)));
        assert!(decode::<Proposal>(&bytes[..bytes.len() - 2]).is_err());
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            decode::<Proposal>(&long),
            Err(CodecError::Trailing(1))
        ));
        let del = Command::Delete {
            kind: Kind::Route,
            name: "r".into(),
            if_version: None,
        };
        assert_eq!(decode::<Command>(&encode(&del).unwrap()).unwrap(), del);
    }

    #[test]
    fn ai_limits_usage_and_cooldowns_roundtrip() {
        use crate::ai::{AiCooldown, AiLimits, AiUsage, AiUsageDelta, apply_cooldowns};
        let mut state = crate::State::default();
        let consumer = crate::ConsumerSpec {
            ai_limits: AiLimits {
                budget_usd_day: Some(2.5),
                budget_usd_month: None,
                tokens_per_minute: Some(1000),
            },
            ..Default::default()
        };
        std::sync::Arc::make_mut(&mut state.consumers)
            .insert("c".into(), crate::Entity::new("c", consumer));
        let cooldown = AiCooldown {
            provider: "p".into(),
            model: "m".into(),
            until_ms: 9,
        };
        apply_cooldowns(
            std::sync::Arc::make_mut(&mut state.ai_cooldowns),
            std::slice::from_ref(&cooldown),
            1,
        );
        assert_eq!(
            decode::<crate::State>(&encode(&state).unwrap()).unwrap(),
            state
        );
        let report = Command::RecordAiUsage {
            deltas: vec![AiUsageDelta {
                hour_ms: 0,
                consumer: "c".into(),
                key: "k".into(),
                model: "m".into(),
                provider: "p".into(),
                usage: AiUsage::default(),
            }],
            cooldowns: vec![cooldown],
        };
        assert_eq!(
            decode::<Command>(&encode(&report).unwrap()).unwrap(),
            report
        );
    }

    #[test]
    fn teams_and_the_catalog_roundtrip() {
        use crate::access::{StoredToken, TeamSpec, TokenRole};
        use crate::catalog::{
            ApiSpec, ApiVersionRef, ApiVersionSpec, Backend, Lifecycle, Plan, SubscriptionSpec,
            SubscriptionState,
        };
        use crate::resource::Entity;
        use std::sync::Arc;
        let mut state = crate::State::default();
        Arc::make_mut(&mut state.teams).insert("a".into(), Entity::new("a", TeamSpec::default()));
        let token = StoredToken {
            role: TokenRole::Developer,
            team: Some("a".into()),
            prefix: "rga_1".into(),
            hash: "0".repeat(64),
        };
        Arc::make_mut(&mut state.tokens).insert("t".into(), Entity::new("t", token));
        let api = ApiSpec {
            team: Some("a".into()),
            plans: vec![Plan {
                name: "gold".into(),
                rate_limits: vec!["rl".into()],
            }],
            ..ApiSpec::default()
        };
        Arc::make_mut(&mut state.apis).insert("o".into(), Entity::new("o", api));
        let version = ApiVersionSpec {
            base_path: "/o/v1".into(),
            backend: Backend::AiModel("m".into()),
            state: Lifecycle::Deprecated,
            successor: Some("v2".into()),
            sunset_at: Some(1),
            deprecated_at: Some(2),
            openapi: Some("{}".into()),
            policies: crate::policy::Policies {
                rate_limits: vec!["rl".into()],
                ..Default::default()
            },
        };
        Arc::make_mut(&mut state.api_versions).insert("o/v1".into(), Entity::new("o/v1", version));
        let subscription = SubscriptionSpec {
            api: "o".into(),
            application: "app".into(),
            plan: Some("gold".into()),
            state: SubscriptionState::Pending,
        };
        Arc::make_mut(&mut state.subscriptions)
            .insert("o/app".into(), Entity::new("o/app", subscription));
        assert_eq!(
            decode::<crate::State>(&encode(&state).unwrap()).unwrap(),
            state
        );
        let route = crate::RouteSpec {
            service: "s".into(),
            team: Some("a".into()),
            api_version: Some(ApiVersionRef {
                api: "o".into(),
                version: "v1".into(),
            }),
            ..Default::default()
        };
        for command in [
            Command::ReplaceVersionRoutes {
                api: "o".into(),
                version: "v1".into(),
                routes: vec![("r".into(), route)],
                openapi: None,
                if_version: Some(7),
            },
            Command::Transition {
                api: "o".into(),
                version: "v1".into(),
                to: Lifecycle::Retired,
                if_version: Some(3),
            },
            Command::Decide {
                api: "o".into(),
                application: "app".into(),
                approve: true,
            },
        ] {
            assert_eq!(
                decode::<Command>(&encode(&command).unwrap()).unwrap(),
                command
            );
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x9e3779b97f4a7c15u64;
        for len in 0..200 {
            let mut buf = vec![FORMAT_VERSION];
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                buf.push(seed as u8);
            }
            let _ = decode::<Proposal>(&buf);
        }
    }
}
