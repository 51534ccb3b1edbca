//! Sealing write-only secrets before they are proposed: AI provider credentials and consumers'
//! HS256 JWT secrets reach the Raft log, the WAL and the snapshots only as ciphertext (see
//! [`raftgate_secrets`]), and are refused when the node has no secrets key rather than stored
//! in clear.

use raftgate_secrets::is_sealed;

use crate::{AdminState, ApiError};

/// `plain` sealed with the cluster's secrets key, for the JSON field `field`. A value that is
/// already sealed (exported from a cluster and written again) is kept only if this cluster's
/// key opens it.
pub(crate) fn seal(s: &AdminState, field: &str, plain: String) -> Result<String, ApiError> {
    let bad = |message: String| ApiError::BadRequest {
        field: Some(field.into()),
        message,
    };
    let Some(key) = &s.secrets else {
        return Err(bad(format!(
            "this cluster has no secrets key, so {field} cannot be encrypted at rest; start every node with --cluster-secret or --secrets-key-file"
        )));
    };
    if is_sealed(&plain) {
        key.open(&plain).map_err(|e| bad(e.to_string()))?;
        Ok(plain)
    } else {
        key.seal(&plain).map_err(|e| bad(e.to_string()))
    }
}
