//! Request ids: kept from the client when usable, otherwise generated cheaply.
//!
//! A generated id is `PPPPPPPP-CCCCCCCCCCCCCCCC`: a random 32-bit prefix chosen when the proxy
//! starts (so ids from different nodes and restarts do not collide in practice) followed by a
//! per-proxy counter, both in hex. Making one costs an atomic increment and a 25-byte copy.

use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, HeaderName, HeaderValue};

/// The header carrying the request id, upstream and back to the client.
pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied id that is passed on; a longer one is replaced.
const MAX_CLIENT_ID_LEN: usize = 128;

/// Hands out request ids.
#[derive(Debug)]
pub(crate) struct RequestIds {
    prefix: u32,
    next: AtomicU64,
}

impl RequestIds {
    /// A generator with a fresh random prefix.
    pub(crate) fn new() -> RequestIds {
        RequestIds {
            prefix: rand::random(),
            next: AtomicU64::new(0),
        }
    }

    /// The client's `X-Request-Id` if it is present, printable and short enough; a new id
    /// otherwise.
    pub(crate) fn for_request(&self, headers: &HeaderMap) -> HeaderValue {
        if let Some(id) = headers.get(&X_REQUEST_ID)
            && !id.is_empty()
            && id.len() <= MAX_CLIENT_ID_LEN
            && id.to_str().is_ok()
        {
            return id.clone();
        }
        self.generate()
    }

    fn generate(&self) -> HeaderValue {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut buf = [b'-'; 25];
        for (i, slot) in buf[..8].iter_mut().enumerate() {
            *slot = HEX[(self.prefix >> (28 - 4 * i) & 0xf) as usize];
        }
        for (i, slot) in buf[9..].iter_mut().enumerate() {
            *slot = HEX[(n >> (60 - 4 * i) & 0xf) as usize];
        }
        // Hex digits and '-' are always a valid header value.
        HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_unique_and_well_formed() {
        let ids = RequestIds::new();
        let a = ids.for_request(&HeaderMap::new());
        let b = ids.for_request(&HeaderMap::new());
        assert_ne!(a, b);
        let a = a.to_str().unwrap();
        assert_eq!(a.len(), 25);
        assert_eq!(&a[8..9], "-");
        assert!(a.ends_with("0000000000000000"));
        assert!(b.to_str().unwrap().ends_with("0000000000000001"));
    }

    #[test]
    fn client_ids_are_kept_when_sane() {
        let ids = RequestIds::new();
        let mut h = HeaderMap::new();
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(ids.for_request(&h), "abc-123");
        h.insert(&X_REQUEST_ID, HeaderValue::from_static(""));
        assert_eq!(ids.for_request(&h).len(), 25);
        h.insert(
            &X_REQUEST_ID,
            HeaderValue::from_str(&"x".repeat(129)).unwrap(),
        );
        assert_eq!(ids.for_request(&h).len(), 25);
    }
}
