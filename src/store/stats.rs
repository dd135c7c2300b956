//! Store-wide counts and the audit chain head, for `keywardctl status`.

use super::Result;
use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;

/// How many live objects of each kind the store holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// Organisations not deleted.
    pub organizations: i64,
    /// Folders not deleted.
    pub folders: i64,
    /// Projects not deleted.
    pub projects: i64,
    /// Key rings not deleted.
    pub key_rings: i64,
    /// Crypto keys not deleted.
    pub crypto_keys: i64,
    /// Versions neither destroyed nor failed to import (enabled, disabled, scheduled).
    pub key_versions: i64,
    /// Role bindings on live resources.
    pub bindings: i64,
    /// Service accounts not deleted.
    pub service_accounts: i64,
    /// Groups.
    pub groups: i64,
    /// Custom roles.
    pub custom_roles: i64,
}

/// The newest audit record and the newest token-signed checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditHead {
    /// Records in the chain (the head's sequence number; 0 for an empty log).
    pub seq: i64,
    /// The head record's hash, hex (the genesis value's for an empty log: `None`).
    pub hash: Option<String>,
    /// When the head record was written (unix ms).
    pub time_ms: Option<i64>,
    /// The sequence number of the newest token-signed checkpoint, if any.
    pub checkpoint_seq: Option<i64>,
    /// When that checkpoint was signed (unix ms).
    pub checkpoint_time_ms: Option<i64>,
}

const COUNT_RESOURCES: &str = "SELECT \
    COALESCE(SUM(kind = 'organization'), 0), COALESCE(SUM(kind = 'folder'), 0), \
    COALESCE(SUM(kind = 'project'), 0), COALESCE(SUM(kind = 'keyRing'), 0), \
    COALESCE(SUM(kind = 'cryptoKey'), 0) \
    FROM resources WHERE deleted_at IS NULL";
const COUNT_VERSIONS: &str = "SELECT COUNT(*) FROM key_versions v \
    JOIN resources r ON r.id = v.key_id \
    WHERE r.deleted_at IS NULL AND v.state IN ('ENABLED', 'DISABLED', 'DESTROY_SCHEDULED')";
const COUNT_BINDINGS: &str = "SELECT COUNT(*) FROM bindings b \
    JOIN resources r ON r.id = b.resource_id WHERE r.deleted_at IS NULL";
const COUNT_ACCOUNTS: &str = "SELECT COUNT(*) FROM service_accounts WHERE deleted_at IS NULL";
const COUNT_GROUPS: &str = "SELECT COUNT(*) FROM groups";
const COUNT_ROLES: &str = "SELECT COUNT(*) FROM custom_roles";
const HEAD: &str = "SELECT seq, hash, time_ms FROM audit_log ORDER BY seq DESC LIMIT 1";
const CHECKPOINT: &str =
    "SELECT seq, time_ms FROM audit_checkpoints ORDER BY seq DESC, time_ms DESC LIMIT 1";

/// Counts every live object kind (run inside one transaction for a consistent answer).
pub fn counts(conn: &Connection) -> Result<Counts> {
    let one = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0));
    let (organizations, folders, projects, key_rings, crypto_keys) =
        conn.query_row(COUNT_RESOURCES, [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?;
    Ok(Counts {
        organizations,
        folders,
        projects,
        key_rings,
        crypto_keys,
        key_versions: one(COUNT_VERSIONS)?,
        bindings: one(COUNT_BINDINGS)?,
        service_accounts: one(COUNT_ACCOUNTS)?,
        groups: one(COUNT_GROUPS)?,
        custom_roles: one(COUNT_ROLES)?,
    })
}

/// The audit chain's head and newest checkpoint.
pub fn audit_head(conn: &Connection) -> Result<AuditHead> {
    let head: Option<(i64, Vec<u8>, i64)> = conn
        .query_row(HEAD, [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let checkpoint: Option<(i64, i64)> = conn
        .query_row(CHECKPOINT, [], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (seq, hash, time_ms) = match head {
        Some((seq, hash, t)) => (seq, Some(crate::audit::hex(&hash)), Some(t)),
        None => (0, None, None),
    };
    Ok(AuditHead {
        seq,
        hash,
        time_ms,
        checkpoint_seq: checkpoint.map(|c| c.0),
        checkpoint_time_ms: checkpoint.map(|c| c.1),
    })
}
