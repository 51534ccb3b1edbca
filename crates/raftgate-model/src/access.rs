//! Who may use the admin API, and the record of what they did with it.
//!
//! Admin tokens beyond the bootstrap `--admin-token` are replicated objects, so a token made on
//! one node works on every node and a revoked one stops working everywhere at the same log index.
//! Only a SHA-256 of each token is replicated: tokens are random 192-bit secrets, for which a
//! fast hash is as good as a slow one.
//!
//! The audit log is a bounded ring of the last [`AUDIT_CAPACITY`] admin writes, kept in the
//! replicated [`crate::State`]: it is built by the state machine from the log, so every node holds
//! the same entries (and a node restored from a snapshot gets them with it).

use imbl::Vector;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::command::Kind;

/// What an admin token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TokenRole {
    /// Every read and every write, cluster membership included.
    Admin,
    /// Reads only: every write answers 403. For dashboards, auditors and monitoring.
    ReadOnly,
}

impl TokenRole {
    /// Whether this role may change the cluster's configuration.
    pub fn may_write(self) -> bool {
        self == TokenRole::Admin
    }
}

/// An admin token as stored: only a hash of the secret is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StoredToken {
    /// What the token may do.
    pub role: TokenRole,
    /// First characters of the token, so a user can tell tokens apart.
    pub prefix: String,
    /// Hex SHA-256 of the whole token.
    pub hash: String,
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
        assert!(TokenRole::Admin.may_write() && !TokenRole::ReadOnly.may_write());
    }
}
