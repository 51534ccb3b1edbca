//! Who is calling: API keys, JWTs and HTTP basic credentials, looked up in an index built from
//! the replicated consumers and keys.
//!
//! - **Keys** are stored as SHA-256 only. Keys are 192-bit random secrets, so a fast hash is
//!   enough; the index is keyed by the digest's first 8 bytes and the full digest is then
//!   compared in constant time. A consumer may hold several keys at once, which is how a key is
//!   rotated without downtime: create the new one, move clients over, delete the old one.
//! - **JWTs** name their consumer by the `iss` claim; the consumer's credential for that issuer
//!   (an HS256 secret, an RS256/ES256 public key, or a JWK Set) verifies the signature, and
//!   `exp`, `nbf`, `iss` and `aud` are checked.
//! - **Basic** passwords are stored as Argon2id hashes. Verifying one takes tens of
//!   milliseconds, so it runs on the blocking pool, and a successful verification is
//!   remembered (keyed by a SHA-256 of the user, password and stored hash) until the consumers
//!   change.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::HeaderMap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use raftgate_model::ai::AiLimits;
use raftgate_model::policy::{JwtAlgorithm, JwtAuth, JwtCredential};
use raftgate_model::state::Table;
use raftgate_model::{ConsumerSpec, State};
use raftgate_secrets::SecretsKey;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::warn;

/// Why a request is not authenticated; the message is shown to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credential of an accepted kind was sent.
    #[error("credentials are required; send {0}")]
    Missing(String),
    /// The API key matches no consumer (wrong or revoked).
    #[error("the API key is not valid; check it, or ask for a new one if it was revoked")]
    BadKey,
    /// The token is not acceptable.
    #[error("the token is not valid: {0}")]
    BadToken(String),
    /// The user name or password is wrong.
    #[error("the user name or password is not valid")]
    BadPassword,
}

/// A consumer as policies need it.
#[derive(Debug)]
pub struct Consumer {
    /// Its name, sent upstream in `X-Consumer-Name`.
    pub name: Arc<str>,
    /// Its groups, for ACLs.
    pub groups: Box<[String]>,
    /// Its own limits, by rate-limit name.
    pub limits: HashMap<String, u64>,
    /// The AI model aliases it may use; empty means all.
    pub ai_models: Box<[String]>,
    /// Its AI budgets and token rate.
    pub ai_limits: AiLimits,
    /// The team it is an application of, for the draft versions of the team's APIs.
    pub team: Option<Box<str>>,
}

/// An API key as the request path sees it: which key it is (for per-key usage and limits) and
/// whose.
#[derive(Debug)]
pub struct ApiKey {
    /// The key id (`/consumers/{name}/keys/{id}`).
    pub id: Arc<str>,
    /// The consumer owning it.
    pub consumer: Arc<Consumer>,
    /// The key's own AI budgets and token rate.
    pub ai_limits: AiLimits,
}

/// Who a request's credentials name: an API key (which says its consumer), or a consumer
/// directly (a JWT, a user and password). The AI gateway counts per-key limits, so the key is
/// kept rather than only its consumer.
#[derive(Debug, Clone)]
pub enum Identity {
    /// An API key.
    Key(Arc<ApiKey>),
    /// A consumer authenticated without a key.
    Consumer(Arc<Consumer>),
}

impl Identity {
    /// The consumer calling.
    pub fn consumer(&self) -> &Arc<Consumer> {
        match self {
            Identity::Key(key) => &key.consumer,
            Identity::Consumer(consumer) => consumer,
        }
    }

    /// The key used, if one was.
    pub fn key(&self) -> Option<&ApiKey> {
        match self {
            Identity::Key(key) => Some(key),
            Identity::Consumer(_) => None,
        }
    }
}

/// How one JWT issuer's tokens are verified.
struct JwtVerifier {
    consumer: Arc<Consumer>,
    algorithm: Algorithm,
    /// One key, or keys by `kid` from a JWK Set.
    keys: JwtKeys,
}

enum JwtKeys {
    One(DecodingKey),
    Set(HashMap<String, DecodingKey>),
}

/// Key digests by their first 8 bytes, with the key each stands for.
type KeyIndex = HashMap<u64, Vec<([u8; 32], Arc<ApiKey>)>>;

/// The credentials of every consumer, indexed for the request path; rebuilt when keys change or
/// a consumer that owns credentials does (see [`Credentials::unaffected_by`]).
pub struct Credentials {
    /// Key digests by their first 8 bytes.
    keys: KeyIndex,
    jwt: HashMap<String, JwtVerifier>,
    basic: HashMap<String, (Arc<Consumer>, String)>,
    /// Basic credentials verified since this index was built, by SHA-256 of user, password and
    /// stored hash.
    verified: Mutex<HashMap<[u8; 32], Arc<Consumer>>>,
    /// Consumers this index depends on: those named by a key, or with a JWT or basic credential.
    owners: HashSet<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("keys", &self.keys.len())
            .field("jwt_issuers", &self.jwt.len())
            .field("basic_users", &self.basic.len())
            .finish()
    }
}

/// Remembered basic verifications at most; the cache is cleared when full.
const VERIFIED_MAX: usize = 10_000;

fn consumer(name: &str, spec: &ConsumerSpec) -> Arc<Consumer> {
    Arc::new(Consumer {
        name: name.into(),
        groups: spec.groups.clone().into(),
        limits: spec.limits.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        ai_models: spec.ai_models.clone().into(),
        ai_limits: spec.ai_limits,
        team: spec.team.as_deref().map(Box::from),
    })
}

fn algorithm(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::ES256 => Algorithm::ES256,
    }
}

/// The key that verifies `c`'s tokens. An HS256 secret is stored sealed: it is opened with
/// `secrets`, the node's secrets key.
fn decoding_key(c: &JwtCredential, secrets: Option<&SecretsKey>) -> Result<JwtKeys, String> {
    if let Some(jwks) = &c.jwks {
        let set: JwkSet = serde_json::from_str(jwks).map_err(|e| e.to_string())?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let kid = jwk.common.key_id.clone().unwrap_or_default();
            keys.insert(kid, DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?);
        }
        return Ok(JwtKeys::Set(keys));
    }
    let stored = c.key.as_deref().unwrap_or_default();
    let key = match c.algorithm {
        JwtAlgorithm::HS256 => {
            let secrets = secrets.ok_or(
                "this node has no secrets key to open the HS256 secret with; start every node with --cluster-secret or --secrets-key-file",
            )?;
            let secret = secrets.open(stored).map_err(|e| e.to_string())?;
            DecodingKey::from_secret(secret.as_bytes())
        }
        JwtAlgorithm::RS256 => {
            DecodingKey::from_rsa_pem(stored.as_bytes()).map_err(|e| e.to_string())?
        }
        JwtAlgorithm::ES256 => {
            DecodingKey::from_ec_pem(stored.as_bytes()).map_err(|e| e.to_string())?
        }
    };
    Ok(JwtKeys::One(key))
}

/// The first 8 bytes of a digest, as the index key.
fn bucket(digest: &[u8; 32]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(b)
}

/// Whether a consumer carries credentials of its own (keys are separate resources).
fn has_credentials(spec: &ConsumerSpec) -> bool {
    !spec.jwt.is_empty() || spec.basic_auth.is_some()
}

impl Credentials {
    /// Indexes the consumers and keys of `state`, opening sealed HS256 secrets with `secrets`.
    /// Credentials that cannot be used (a PEM key that does not parse, a secret this node
    /// cannot open) are left out with a warning.
    pub fn build(state: &State, secrets: Option<&SecretsKey>) -> Credentials {
        let consumers: HashMap<&str, Arc<Consumer>> = state
            .consumers
            .values()
            .map(|c| (c.name.as_str(), consumer(&c.name, &c.spec)))
            .collect();
        let mut keys = KeyIndex::new();
        let mut owners = HashSet::new();
        for key in state.keys.values() {
            owners.insert(key.spec.consumer.clone());
            let Some(owner) = consumers.get(key.spec.consumer.as_str()) else {
                continue;
            };
            let mut digest = [0u8; 32];
            if hex_decode(&key.spec.hash, &mut digest).is_none() {
                warn!(key = %key.name, "stored key hash is not hex SHA-256; key ignored");
                continue;
            }
            let entry = ApiKey {
                id: key.name.as_str().into(),
                consumer: owner.clone(),
                ai_limits: key.spec.ai_limits,
            };
            keys.entry(bucket(&digest))
                .or_default()
                .push((digest, Arc::new(entry)));
        }
        let mut jwt = HashMap::new();
        let mut basic = HashMap::new();
        for c in state.consumers.values() {
            if has_credentials(&c.spec) {
                owners.insert(c.name.clone());
            }
            let owner = &consumers[c.name.as_str()];
            for cred in &c.spec.jwt {
                match decoding_key(cred, secrets) {
                    Ok(keys) => {
                        jwt.insert(
                            cred.issuer.clone(),
                            JwtVerifier {
                                consumer: owner.clone(),
                                algorithm: algorithm(cred.algorithm),
                                keys,
                            },
                        );
                    }
                    Err(error) => warn!(consumer = %c.name, issuer = %cred.issuer, %error,
                        "JWT credential key cannot be used; tokens of this issuer are refused"),
                }
            }
            if let Some(b) = &c.spec.basic_auth {
                basic.insert(b.username.clone(), (owner.clone(), b.password.clone()));
            }
        }
        Credentials {
            keys,
            jwt,
            basic,
            verified: Mutex::default(),
            owners,
        }
    }

    /// Whether going from consumers `old` to `new` (keys unchanged) leaves this index as it is:
    /// every consumer added, changed or removed neither owns a key nor has a JWT or basic
    /// credential. Costs the size of the change, not of the table, so that writing consumers
    /// without credentials (the common bulk load) does not rebuild the index each time.
    pub fn unaffected_by(&self, old: &Table<ConsumerSpec>, new: &Table<ConsumerSpec>) -> bool {
        use imbl::ordmap::DiffItem;
        old.diff(new).all(|item| {
            let (name, now) = match item {
                DiffItem::Add(name, entity)
                | DiffItem::Update {
                    new: (name, entity),
                    ..
                } => (name, Some(entity)),
                DiffItem::Remove(name, _) => (name, None),
            };
            !self.owners.contains(name) && now.is_none_or(|e| !has_credentials(&e.spec))
        })
    }

    /// API key `key`, as the identity of a request that sent it.
    pub fn by_key(&self, key: &str) -> Result<Identity, AuthError> {
        self.key(key).map(|k| Identity::Key(k.clone()))
    }

    /// The stored key matching API key `key`, with its id and owner.
    pub fn key(&self, key: &str) -> Result<&Arc<ApiKey>, AuthError> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        self.keys
            .get(&bucket(&digest))
            .and_then(|candidates| {
                candidates
                    .iter()
                    .find(|(d, _)| bool::from(d.ct_eq(&digest)))
            })
            .map(|(_, k)| k)
            .ok_or(AuthError::BadKey)
    }

    /// The consumer whose credential verifies `token`, checked against `policy`.
    pub fn by_jwt(&self, token: &str, policy: &JwtAuth) -> Result<Arc<Consumer>, AuthError> {
        let bad = |m: &str| AuthError::BadToken(m.to_string());
        let payload = token
            .split('.')
            .nth(1)
            .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
            .ok_or_else(|| bad("it is not a JWT (header.payload.signature, base64url)"))?;
        #[derive(serde::Deserialize)]
        struct Issuer {
            iss: Option<String>,
        }
        let iss = serde_json::from_slice::<Issuer>(&payload)
            .ok()
            .and_then(|i| i.iss)
            .ok_or_else(|| bad("it has no iss claim naming its issuer"))?;
        let verifier = self
            .jwt
            .get(&iss)
            .ok_or_else(|| bad("no consumer has a JWT credential for its issuer"))?;
        // The library's own message would name its internals (`unknown variant none`).
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            bad("its header is not readable or names an unsupported algorithm; sign with HS256, RS256 or ES256")
        })?;
        let key = match &verifier.keys {
            JwtKeys::One(k) => k,
            JwtKeys::Set(keys) => keys
                .get(header.kid.as_deref().unwrap_or_default())
                .ok_or_else(|| bad("its kid names no key of the issuer's key set"))?,
        };
        let mut validation = Validation::new(verifier.algorithm);
        validation.set_issuer(&[&iss]);
        validation.validate_nbf = true;
        validation.leeway = policy.leeway_s;
        if policy.audiences.is_empty() {
            validation.set_required_spec_claims(&["exp", "iss"]);
            validation.validate_aud = false;
        } else {
            // Without `aud` in the required claims the library accepts a token lacking one.
            validation.set_required_spec_claims(&["exp", "iss", "aud"]);
            validation.set_audience(&policy.audiences);
        }
        match jsonwebtoken::decode::<serde_json::Value>(token, key, &validation) {
            Ok(_) => Ok(verifier.consumer.clone()),
            Err(e) => Err(bad(match e.kind() {
                ErrorKind::ExpiredSignature => "it has expired (exp)",
                ErrorKind::ImmatureSignature => "it is not valid yet (nbf)",
                ErrorKind::InvalidAudience => "its audience (aud) is not accepted here",
                ErrorKind::InvalidIssuer => "its issuer (iss) does not match",
                ErrorKind::InvalidSignature => "its signature does not verify",
                ErrorKind::InvalidAlgorithm => "it is signed with another algorithm",
                ErrorKind::MissingRequiredClaim(_) if policy.audiences.is_empty() => {
                    "it lacks a required claim (exp, iss)"
                }
                ErrorKind::MissingRequiredClaim(_) => "it lacks a required claim (exp, iss, aud)",
                _ => "it cannot be decoded",
            })),
        }
    }

    /// The consumer with basic credential `user`/`password`. Slow on first sight of a pair:
    /// Argon2 runs on the blocking pool.
    pub async fn by_password(
        &self,
        user: &str,
        password: &str,
    ) -> Result<Arc<Consumer>, AuthError> {
        let (owner, phc) = self.basic.get(user).ok_or(AuthError::BadPassword)?;
        let mut h = Sha256::new();
        for part in [user, password, phc] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        let memo: [u8; 32] = h.finalize().into();
        if let Some(c) = self.verified_get(&memo) {
            return Ok(c);
        }
        let (phc, password) = (phc.clone(), password.to_string());
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&phc).is_ok_and(|hash| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &hash)
                    .is_ok()
            })
        })
        .await
        .unwrap_or(false);
        if !ok {
            return Err(AuthError::BadPassword);
        }
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= VERIFIED_MAX {
            verified.clear();
        }
        verified.insert(memo, owner.clone());
        Ok(owner.clone())
    }

    fn verified_get(&self, memo: &[u8; 32]) -> Option<Arc<Consumer>> {
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(memo)
            .cloned()
    }
}

/// `user:password` from an `Authorization: Basic` header.
pub fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(rest.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

fn hex_decode(hex: &str, out: &mut [u8; 32]) -> Option<()> {
    if hex.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(())
}

/// Hashes a basic-auth password for storage (Argon2id, random salt): what the admin API does
/// before a consumer is written.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    use argon2::PasswordHasher;
    use argon2::password_hash::SaltString;
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes)?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftgate_model::policy::BasicCredential;
    use raftgate_model::{Entity, StoredKey};

    fn secrets() -> SecretsKey {
        SecretsKey::derive(b"the secrets key of the auth tests")
    }

    fn state() -> State {
        let mut s = State::default();
        let mut alice = ConsumerSpec {
            groups: vec!["gold".into()],
            ..Default::default()
        };
        alice.jwt.push(JwtCredential {
            issuer: "alice-iss".into(),
            algorithm: JwtAlgorithm::HS256,
            key: Some(secrets().seal("s3cret").unwrap()),
            jwks: None,
        });
        alice.basic_auth = Some(BasicCredential {
            username: "alice".into(),
            password: hash_password("pw").unwrap(),
        });
        std::sync::Arc::make_mut(&mut s.consumers)
            .insert("alice".into(), Entity::new("alice", alice));
        let key = StoredKey {
            consumer: "alice".into(),
            prefix: "rgk_".into(),
            hash: Sha256::digest(b"rgk_one")
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            ai_limits: AiLimits {
                tokens_per_minute: Some(100),
                ..AiLimits::default()
            },
        };
        std::sync::Arc::make_mut(&mut s.keys).insert("k1".into(), Entity::new("k1", key));
        s
    }

    #[test]
    fn only_consumers_with_credentials_affect_the_index() {
        let before = state();
        let creds = Credentials::build(&before, Some(&secrets()));
        let with = |name: &str, spec: ConsumerSpec| {
            let mut s = before.clone();
            std::sync::Arc::make_mut(&mut s.consumers).insert(name.into(), Entity::new(name, spec));
            s.consumers
        };
        // A consumer without credentials, added: the index stays.
        assert!(creds.unaffected_by(&before.consumers, &with("bob", ConsumerSpec::default())));
        // One with a basic credential, or named by a key before it exists: rebuild.
        let basic = ConsumerSpec {
            basic_auth: Some(BasicCredential {
                username: "bob".into(),
                password: "x".into(),
            }),
            ..Default::default()
        };
        assert!(!creds.unaffected_by(&before.consumers, &with("bob", basic)));
        // The owner of a key changes (its groups): rebuild.
        assert!(!creds.unaffected_by(&before.consumers, &with("alice", ConsumerSpec::default())));
        // The owner is removed: rebuild.
        let mut gone = before.clone();
        std::sync::Arc::make_mut(&mut gone.consumers).remove("alice");
        assert!(!creds.unaffected_by(&before.consumers, &gone.consumers));
    }

    #[tokio::test]
    async fn keys_tokens_and_passwords() {
        let creds = Credentials::build(&state(), Some(&secrets()));
        assert_eq!(&*creds.by_key("rgk_one").unwrap().consumer().name, "alice");
        let key = creds.key("rgk_one").unwrap();
        assert_eq!(
            (&*key.id, key.ai_limits.tokens_per_minute),
            ("k1", Some(100))
        );
        assert_eq!(creds.by_key("rgk_two").unwrap_err(), AuthError::BadKey);

        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let sign = |claims: serde_json::Value, secret: &[u8]| {
            jsonwebtoken::encode(
                &jsonwebtoken::Header::new(Algorithm::HS256),
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(secret),
            )
            .unwrap()
        };
        let policy = JwtAuth {
            audiences: vec!["api".into()],
            ..JwtAuth::default()
        };
        let good = serde_json::json!({"iss": "alice-iss", "aud": "api", "exp": now + 60});
        assert!(
            creds
                .by_jwt(&sign(good.clone(), b"s3cret"), &policy)
                .is_ok()
        );
        let wrong_key = creds.by_jwt(&sign(good, b"other"), &policy).unwrap_err();
        assert!(wrong_key.to_string().contains("signature"), "{wrong_key}");
        let expired = serde_json::json!({"iss": "alice-iss", "aud": "api", "exp": now - 60});
        assert!(
            creds
                .by_jwt(&sign(expired, b"s3cret"), &policy)
                .unwrap_err()
                .to_string()
                .contains("expired")
        );
        let aud = serde_json::json!({"iss": "alice-iss", "aud": "web", "exp": now + 60});
        assert!(
            creds
                .by_jwt(&sign(aud, b"s3cret"), &policy)
                .unwrap_err()
                .to_string()
                .contains("audience")
        );
        let no_aud = serde_json::json!({"iss": "alice-iss", "exp": now + 60});
        let error = creds
            .by_jwt(&sign(no_aud.clone(), b"s3cret"), &policy)
            .unwrap_err();
        assert!(error.to_string().contains("aud"), "{error}");
        // Without audiences on the route, `aud` is not required.
        assert!(
            creds
                .by_jwt(&sign(no_aud, b"s3cret"), &JwtAuth::default())
                .is_ok()
        );
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(br#"{"iss":"alice-iss"}"#)
        );
        let error = creds.by_jwt(&none, &policy).unwrap_err().to_string();
        assert!(
            error.contains("unsupported algorithm") && !error.contains("variant"),
            "{error}"
        );
        // A secret sealed under another key (or no key on this node) verifies nothing.
        for other in [Some(SecretsKey::derive(b"another secrets key")), None] {
            let creds = Credentials::build(&state(), other.as_ref());
            let good = serde_json::json!({"iss": "alice-iss", "aud": "api", "exp": now + 60});
            assert!(creds.by_jwt(&sign(good, b"s3cret"), &policy).is_err());
        }
        let nbf = serde_json::json!({"iss": "alice-iss", "exp": now + 600, "nbf": now + 300, "aud": "api"});
        assert!(
            creds
                .by_jwt(&sign(nbf, b"s3cret"), &policy)
                .unwrap_err()
                .to_string()
                .contains("not valid yet")
        );

        assert_eq!(
            &*creds.by_password("alice", "pw").await.unwrap().name,
            "alice"
        );
        // Second time from the cache.
        assert!(creds.by_password("alice", "pw").await.is_ok());
        assert_eq!(
            creds.by_password("alice", "nope").await.unwrap_err(),
            AuthError::BadPassword
        );
        assert_eq!(
            creds.by_password("bob", "pw").await.unwrap_err(),
            AuthError::BadPassword
        );
    }

    #[test]
    fn authorization_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            "Basic YWxpY2U6cHc6eA==".parse().unwrap(),
        );
        assert_eq!(basic_credentials(&h), Some(("alice".into(), "pw:x".into())));
        h.insert(http::header::AUTHORIZATION, "bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        assert_eq!(basic_credentials(&h), None);
    }
}
