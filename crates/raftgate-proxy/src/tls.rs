//! TLS termination with rustls (ring provider): certificates come from the replicated state and
//! are picked by SNI.
//!
//! The rustls [`ServerConfig`] is built once; its certificate resolver reads a [`CertTable`]
//! through an [`ArcSwap`], which the reload task replaces whenever the state's certificates
//! change. New handshakes see the new certificates at once; established connections keep theirs.
//! No restart, no lock on the handshake path.
//!
//! Selection: the client's SNI (case-insensitive) is looked up among the certificates' `snis`;
//! an exact name wins over a wildcard `*.example.com`, which — as TLS clients check it — covers
//! exactly one more label (`a.example.com`, not `a.b.example.com` nor `example.com`). Without a
//! matching certificate, or without SNI, the handshake fails. When two certificates list the
//! same name, the one whose resource name sorts first is used and a warning is logged. A
//! certificate whose PEM does not parse or whose key does not fit it is logged and skipped.
//!
//! ALPN offers `h2` and `http/1.1`; the connection is then served like a cleartext one.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use arc_swap::ArcSwap;
use raftgate_model::CertificateSpec;
use raftgate_model::state::Table;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tracing::{info, warn};

/// Why a certificate resource cannot be served.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CertError {
    /// The certificate PEM holds no usable certificate.
    #[error("its cert is not a PEM certificate chain ({0}); PUT it again with the leaf first")]
    Chain(String),
    /// The key PEM holds no usable key.
    #[error("its key is not a PEM private key ({0}); use PKCS#8, PKCS#1 or SEC1")]
    Key(#[source] rustls::pki_types::pem::Error),
    /// rustls refused the pair.
    #[error("its key cannot be used with its certificate ({0}); check that they belong together")]
    Pair(#[source] rustls::Error),
}

/// The TLS settings could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up TLS ({0}); this is a bug in the proxy's TLS settings")]
pub struct TlsSetupError(#[source] rustls::Error);

/// Certificates by server name, compiled from one certificates table.
#[derive(Debug, Default)]
pub(crate) struct CertTable {
    exact: HashMap<Box<str>, Arc<CertifiedKey>>,
    /// Keyed by the suffix after `*.`.
    wildcard: HashMap<Box<str>, Arc<CertifiedKey>>,
    /// The table compiled, to tell whether a new state needs a new one.
    source: Table<CertificateSpec>,
}

impl CertTable {
    /// Loads every certificate of `table`, skipping (with a warning) those that do not load.
    pub(crate) fn compile(table: &Table<CertificateSpec>, provider: &CryptoProvider) -> CertTable {
        let mut compiled = CertTable {
            source: table.clone(),
            ..CertTable::default()
        };
        for (name, entity) in table.iter() {
            let key = match load(&entity.spec, provider) {
                Ok(key) => Arc::new(key),
                Err(error) => {
                    warn!(certificate = %name, %error, "certificate skipped");
                    continue;
                }
            };
            for sni in &entity.spec.snis {
                let sni = sni.trim_end_matches('.').to_ascii_lowercase();
                let (map, sni) = match sni.strip_prefix("*.") {
                    Some(suffix) => (&mut compiled.wildcard, suffix),
                    None => (&mut compiled.exact, sni.as_str()),
                };
                match map.entry(sni.into()) {
                    Entry::Vacant(slot) => {
                        slot.insert(key.clone());
                    }
                    Entry::Occupied(_) => {
                        warn!(certificate = %name, %sni,
                            "another certificate already serves this name; this one is not used for it");
                    }
                }
            }
        }
        compiled
    }

    /// Whether this table was compiled from exactly `table`.
    pub(crate) fn is_compiled_from(&self, table: &Table<CertificateSpec>) -> bool {
        Arc::ptr_eq(&self.source, table)
    }

    /// The certificate for server name `sni`.
    fn find(&self, sni: &str) -> Option<&Arc<CertifiedKey>> {
        let sni = sni.trim_end_matches('.');
        let lower;
        let sni = if sni.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = sni.to_ascii_lowercase();
            lower.as_str()
        } else {
            sni
        };
        self.exact.get(sni).or_else(|| {
            let (_, parent) = sni.split_once('.')?;
            self.wildcard.get(parent)
        })
    }

    /// Number of server names served.
    pub(crate) fn name_count(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }
}

fn load(spec: &CertificateSpec, provider: &CryptoProvider) -> Result<CertifiedKey, CertError> {
    let chain = CertificateDer::pem_slice_iter(spec.cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Chain(e.to_string()))?;
    if chain.is_empty() {
        return Err(CertError::Chain("no certificate found".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(spec.key.as_bytes()).map_err(CertError::Key)?;
    CertifiedKey::from_der(chain, key, provider).map_err(CertError::Pair)
}

/// The SNI resolver handed to rustls; reads the current table without locking.
#[derive(Debug)]
pub(crate) struct Certificates {
    table: ArcSwap<CertTable>,
    provider: Arc<CryptoProvider>,
}

impl Certificates {
    /// Resolver over the certificates of `table`.
    pub(crate) fn new(table: &Table<CertificateSpec>) -> Certificates {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let compiled = CertTable::compile(table, &provider);
        info!(names = compiled.name_count(), "TLS certificates loaded");
        Certificates {
            table: ArcSwap::from_pointee(compiled),
            provider,
        }
    }

    /// Replaces the certificates with those of `table` unless they are already the same.
    pub(crate) fn reload(&self, table: &Table<CertificateSpec>) {
        if self.table.load().is_compiled_from(table) {
            return;
        }
        let compiled = CertTable::compile(table, &self.provider);
        info!(names = compiled.name_count(), "TLS certificates reloaded");
        self.table.store(Arc::new(compiled));
    }

    /// The rustls server settings using this resolver, offering `h2` and `http/1.1` by ALPN.
    pub(crate) fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsSetupError> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsSetupError)?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name()?;
        self.table.load().find(sni).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftgate_model::Entity;

    fn cert(names: &[&str]) -> CertificateSpec {
        let generated = rcgen::generate_simple_self_signed(
            names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        CertificateSpec {
            cert: generated.cert.pem(),
            key: generated.signing_key.serialize_pem(),
            snis: names.iter().map(|n| n.to_string()).collect(),
        }
    }

    fn table(certs: Vec<(&str, CertificateSpec)>) -> Table<CertificateSpec> {
        Arc::new(
            certs
                .into_iter()
                .map(|(name, spec)| (name.to_owned(), Entity::new(name, spec)))
                .collect(),
        )
    }

    #[test]
    fn exact_then_one_label_wildcard_and_bad_pairs_skipped() {
        let a = cert(&["a.example.com"]);
        let wild = cert(&["*.example.com"]);
        let mut mismatched = cert(&["bad.example.com"]);
        mismatched.key = cert(&["other"]).key;
        let mut garbage = cert(&["junk.example.com"]);
        garbage.cert = "not a certificate".into();
        let provider = rustls::crypto::ring::default_provider();
        let compiled = CertTable::compile(
            &table(vec![
                ("a", a.clone()),
                ("wild", wild),
                ("mismatched", mismatched),
                ("garbage", garbage),
                // Sorts after "a": loses the name to it.
                ("b-dup", cert(&["a.example.com"])),
            ]),
            &provider,
        );
        assert_eq!(compiled.name_count(), 2);
        let leaf = |sni: &str| compiled.find(sni).map(|k| k.cert[0].clone());
        let a_leaf = CertificateDer::from_pem_slice(a.cert.as_bytes()).unwrap();
        assert_eq!(leaf("a.example.com"), Some(a_leaf.clone()));
        assert_eq!(leaf("A.Example.COM."), Some(a_leaf.clone()));
        let wild_leaf = leaf("x.example.com").expect("wildcard");
        assert_ne!(wild_leaf, a_leaf);
        assert_eq!(leaf("bad.example.com"), Some(wild_leaf));
        assert_eq!(leaf("a.b.example.com"), None);
        assert_eq!(leaf("example.com"), None);
    }
}
