//! Secrets at rest — AI provider credentials, consumers' HS256 JWT secrets — sealed with
//! AES-256-GCM under a key every node derives from the same secret (the cluster secret, or a
//! dedicated secrets key file).
//!
//! The admin API seals a secret before proposing it, so the Raft log, the WAL and the snapshots
//! only hold ciphertext; each node opens it when it builds what uses it (the AI gateway's
//! configuration, the policies' credential index). The key is derived with HKDF-SHA256 under a
//! raftgate-specific label, so the same cluster secret used for peer authentication never
//! doubles as an encryption key. (The label names provider credentials, the first secrets
//! sealed; it stays, so that what was sealed before still opens.)

#![warn(missing_docs)]

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf::{HKDF_SHA256, Salt};
use ring::rand::{SecureRandom, SystemRandom};

/// Prefix of a sealed credential (format version 1: hex of nonce, ciphertext and tag).
const SEALED_PREFIX: &str = "sealed:v1:";
/// HKDF salt and label: which key this is, so the secret can serve other purposes safely.
const SALT: &[u8] = b"raftgate secrets key";
const LABEL: &[u8] = b"raftgate ai provider credentials v1";

/// Why a secret could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The stored value is not something [`SecretsKey::seal`] produced.
    #[error(
        "the stored secret is not sealed by raftgate; write the resource again with its secret"
    )]
    NotSealed,
    /// The key does not open it: another key sealed it, or it was altered.
    #[error(
        "the stored secret cannot be decrypted with this node's secrets key; give every node the same --cluster-secret or --secrets-key-file, or write the resource again with its secret"
    )]
    WrongKey,
    /// The system random source failed.
    #[error("no random nonce could be drawn from the operating system; check /dev/urandom")]
    Random,
}

/// The AES-256-GCM key secrets are sealed with.
pub struct SecretsKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(<redacted>)")
    }
}

impl SecretsKey {
    /// Derives the key from a secret every node shares.
    pub fn derive(secret: &[u8]) -> SecretsKey {
        let prk = Salt::new(HKDF_SHA256, SALT).extract(secret);
        let labels = [LABEL];
        // Expanding 32 bytes of output from HKDF-SHA256 cannot fail (the limit is 255 * 32).
        let key = match prk.expand(&labels, &AES_256_GCM) {
            Ok(okm) => UnboundKey::from(okm),
            Err(_) => unreachable!("HKDF-SHA256 can expand a 32-byte key"),
        };
        SecretsKey {
            key: LessSafeKey::new(key),
        }
    }

    /// Seals `plaintext` under a fresh random nonce.
    pub fn seal(&self, plaintext: &str) -> Result<String, SecretError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SecretError::Random)?;
        let mut data = plaintext.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(LABEL),
                &mut data,
            )
            .map_err(|_| SecretError::Random)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(format!("{SEALED_PREFIX}{}", hex::encode(out)))
    }

    /// Opens a value produced by [`SecretsKey::seal`] with the same key.
    pub fn open(&self, sealed: &str) -> Result<String, SecretError> {
        let bytes = sealed
            .strip_prefix(SEALED_PREFIX)
            .and_then(|h| hex::decode(h).ok())
            .filter(|b| b.len() >= NONCE_LEN)
            .ok_or(SecretError::NotSealed)?;
        let (nonce, data) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretError::NotSealed)?;
        let mut data = data.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(LABEL), &mut data)
            .map_err(|_| SecretError::WrongKey)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SecretError::WrongKey)
    }
}

/// Whether a value is already sealed (one exported from a cluster and written again).
pub fn is_sealed(value: &str) -> bool {
    value.starts_with(SEALED_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_wrong_key() {
        let key = SecretsKey::derive(b"cluster secret of enough length");
        let sealed = key.seal("sk-live-123").unwrap();
        assert!(is_sealed(&sealed));
        assert!(!sealed.contains("sk-live-123"));
        assert_ne!(
            sealed,
            key.seal("sk-live-123").unwrap(),
            "fresh nonce each time"
        );
        assert_eq!(key.open(&sealed).unwrap(), "sk-live-123");

        let other = SecretsKey::derive(b"another secret");
        assert_eq!(other.open(&sealed), Err(SecretError::WrongKey));
        assert_eq!(key.open("sk-live-123"), Err(SecretError::NotSealed));
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('0') { '1' } else { '0' });
        assert_eq!(key.open(&tampered), Err(SecretError::WrongKey));
    }
}
