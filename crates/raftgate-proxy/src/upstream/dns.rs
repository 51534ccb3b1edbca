//! Re-resolution of targets named by DNS, off the request path.
//!
//! A service with such targets has a background task that resolves each name (with its port)
//! right away and then every `dns_refresh_ms`; each address found becomes an endpoint of its
//! own. A failed lookup keeps the previous addresses, so a DNS outage does not empty a pool;
//! until a name resolved once, its target has no endpoint. The pool is rebuilt only when an
//! answer differs from the last one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Weak;
use std::time::Duration;

use tracing::{debug, warn};

use super::Service;

/// Longest wait for one lookup.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// A DNS name and the port to connect to.
pub(crate) type Name = (Box<str>, u16);

/// The addresses last found for each name.
pub(crate) type Resolved = HashMap<Name, Vec<SocketAddr>>;

/// Resolves the service's DNS names now and every `dns_refresh_ms` while the service exists and
/// has some. Holds only a weak reference, so dropping the service ends it.
pub(crate) async fn run_resolver(service: Weak<Service>) {
    loop {
        let Some((names, every)) = service.upgrade().map(|s| s.dns_names()) else {
            return;
        };
        if names.is_empty() {
            return;
        }
        let mut found = Resolved::with_capacity(names.len());
        for name in names {
            let lookup = tokio::net::lookup_host((name.0.to_string(), name.1));
            match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
                Ok(Ok(addrs)) => {
                    let mut addrs: Vec<SocketAddr> = addrs.collect();
                    addrs.sort_unstable();
                    addrs.dedup();
                    debug!(host = %name.0, port = name.1, ?addrs, "resolved upstream target");
                    found.insert(name, addrs);
                }
                Ok(Err(error)) => warn!(host = %name.0, %error,
                    "cannot resolve an upstream target; keeping its previous addresses"),
                Err(_) => warn!(host = %name.0, timeout = ?LOOKUP_TIMEOUT,
                    "resolving an upstream target timed out; keeping its previous addresses"),
            }
        }
        match service.upgrade() {
            Some(service) => service.resolved(found),
            None => return,
        }
        tokio::time::sleep(every).await;
    }
}
