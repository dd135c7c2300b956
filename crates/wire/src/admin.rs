//! The admin half of the request type: what keywardctl asks of the admin handler.
//!
//! keywardctl turns each command into one [`AdminRequest`]. keywardd serves them on the admin
//! socket; `keywardctl --db` runs the same handler in-process. The caller is never part of the
//! request: the daemon decides who is calling (design §1), and offline `--as` names it.

use serde::{Deserialize, Serialize};

/// Filters of `audit query` (all optional, combined with AND).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFilter {
    /// Only records of this principal (exact member string).
    pub principal: Option<String>,
    /// Only records about this resource or anything below it.
    pub resource: Option<String>,
    /// Only records of this action (exact, e.g. `iam.bind`).
    pub action: Option<String>,
    /// Only `allowed`/`denied`/`error` records.
    pub result: Option<String>,
    /// Only records at or after this time (seconds since the epoch).
    pub since: Option<i64>,
    /// Only records before this time (seconds since the epoch).
    pub until: Option<i64>,
    /// At most this many records (newest last).
    pub limit: Option<u32>,
}

/// One admin request. Resource arguments are full resource names
/// (`organizations/acme`, `projects/payments/keyRings/web`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum AdminRequest {
    /// Bootstrap an empty store: the organisation and its first admin (design §1).
    Init {
        org: String,
        admin: String,
    },

    OrgCreate {
        org: String,
    },
    OrgList,
    OrgGet {
        name: String,
    },
    OrgDelete {
        name: String,
    },
    /// Separation of duties: `off`, `warn` or `enforce`.
    OrgSetSod {
        name: String,
        mode: String,
    },

    FolderCreate {
        parent: String,
        id: String,
    },
    FolderList {
        parent: Option<String>,
    },
    FolderGet {
        name: String,
    },
    FolderDelete {
        name: String,
    },

    ProjectCreate {
        parent: String,
        id: String,
    },
    ProjectList {
        parent: Option<String>,
    },
    ProjectGet {
        name: String,
    },
    ProjectDelete {
        name: String,
    },

    KeyRingCreate {
        parent: String,
        id: String,
        token_label: Option<String>,
    },
    KeyRingList {
        parent: Option<String>,
    },
    KeyRingGet {
        name: String,
    },
    KeyRingDelete {
        name: String,
    },
    KeyRingUpdate {
        name: String,
        allow_plaintext_import: Option<bool>,
        strict_templates: Option<bool>,
        token_label: Option<String>,
    },

    RoleList,
    RoleDescribe {
        name: String,
    },
    /// A custom role at an organisation, from fine permissions and/or Thalassa verbs.
    RoleCreate {
        org: String,
        id: String,
        title: Option<String>,
        permissions: Vec<String>,
    },
    /// Replaces a custom role's permissions (and title, if given).
    RoleUpdate {
        name: String,
        title: Option<String>,
        permissions: Vec<String>,
        /// Update even if a member would then hold both key administration and key use
        /// where separation of duties is enforced (audited).
        #[serde(default)]
        allow_sod_violation: bool,
    },
    RoleDelete {
        name: String,
    },

    IamBind {
        resource: String,
        role: String,
        member: String,
        allow_sod_violation: bool,
    },
    IamUnbind {
        resource: String,
        role: String,
        member: String,
    },
    IamPolicy {
        resource: String,
    },
    /// testIamPermissions: which of these (all, when empty) does `member` hold on `resource`.
    IamTest {
        member: String,
        resource: String,
        permissions: Vec<String>,
    },
    /// Which binding grants each permission (all held, when `permission` is None).
    IamExplain {
        member: String,
        resource: String,
        permission: Option<String>,
    },
    IamWhoCan {
        resource: String,
        permission: String,
    },
    /// Separation of duties: every principal holding key administration and key use on the
    /// same key in an organisation, with the bindings and groups that cause it.
    IamSodReport {
        org: String,
    },
    IamMapUid {
        uid: u32,
        member: String,
        /// Map even if the uid would then hold both key administration and key use where
        /// separation of duties is enforced (audited).
        #[serde(default)]
        allow_sod_violation: bool,
    },
    IamUnmapUid {
        uid: u32,
    },
    IamListMappings,

    GroupCreate {
        group: String,
    },
    GroupList,
    GroupGet {
        group: String,
    },
    GroupDelete {
        group: String,
    },
    GroupAddMember {
        group: String,
        member: String,
        /// Add even if a member would then hold both key administration and key use where
        /// separation of duties is enforced (audited).
        #[serde(default)]
        allow_sod_violation: bool,
    },
    GroupRemoveMember {
        group: String,
        member: String,
    },

    SaCreate {
        project: String,
        id: String,
        display_name: Option<String>,
    },
    SaList {
        project: Option<String>,
    },
    SaDelete {
        account: String,
    },
    SaKeyCreate {
        account: String,
    },
    SaKeyList {
        account: String,
    },
    SaKeyRevoke {
        account: String,
        key_id: String,
    },

    /// A new key in a key ring; its first version is generated in the token.
    KeyCreate {
        keyring: String,
        id: String,
        purpose: String,
        algorithm: String,
        exportable: bool,
    },
    KeyList {
        keyring: String,
    },
    KeyGet {
        name: String,
    },
    /// A new version; primary at once for symmetric keys, else only with `set_primary`.
    KeyRotate {
        name: String,
        set_primary: bool,
    },
    KeySetPrimary {
        name: String,
        version: u64,
    },
    /// The public key of a version (the primary when None), as PEM.
    KeyGetPublicKey {
        name: String,
        version: Option<u64>,
    },
    VersionList {
        key: String,
    },
    VersionGet {
        name: String,
    },
    VersionEnable {
        name: String,
    },
    VersionDisable {
        name: String,
    },
    /// Schedules destruction after `grace_secs` (default 30 days, at least 1 day).
    VersionDestroy {
        name: String,
        grace_secs: Option<u64>,
    },
    VersionRestore {
        name: String,
    },

    /// A BYOK import job in a key ring (design §5): an RSA wrapping pair made in the token.
    ImportJobCreate {
        keyring: String,
        id: Option<String>,
        method: String,
    },
    /// A job; `pem`: answer with its public key as PEM only.
    ImportJobGet {
        name: String,
        pem: bool,
    },
    ImportJobList {
        keyring: String,
    },
    /// Unwraps `wrapped` with an import job into a new version of `key` (created if missing,
    /// with `algorithm`); asymmetric material comes with its public key (DER or PEM SPKI).
    KeyImport {
        import_job: String,
        key: String,
        algorithm: String,
        wrapped: Vec<u8>,
        public_key: Option<Vec<u8>>,
    },

    AuditTail {
        count: u32,
    },
    AuditQuery {
        filter: AuditFilter,
    },
    AuditVerify,
    /// Attach a certificate of one of the key's public keys (DER), then its chain, as
    /// certificate objects (issue 7: `key cert import`, `key cert create --self-signed`).
    KeyCertImport {
        key: String,
        certs: Vec<Vec<u8>>,
        label: Option<String>,
    },
    /// The certificates attached to a key.
    KeyCertList {
        key: String,
    },

    /// `keywardctl status`: the daemon, its token, and (with kms.auditLogs.read on every
    /// organisation) store-wide counts and the audit chain head.
    Status,
    /// `keywardctl token capabilities`: what the backing token can and cannot do, as keywardd
    /// learnt it at start, and which Keyward features each absence disables.
    TokenCapabilities,
}

/// A table for humans: column headers and rows of cells.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    /// Column headers.
    pub headers: Vec<String>,
    /// Rows, each as long as `headers`.
    pub rows: Vec<Vec<String>>,
}

/// The answer to an [`AdminRequest`]: the same result for humans and for scripts.
/// Its `Debug` never prints `secret`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminResponse {
    /// A one-line summary for humans ("created key ring ...").
    pub message: Option<String>,
    /// Warnings to show (e.g. a separation-of-duties warning).
    pub warnings: Vec<String>,
    /// A table for humans, if the answer is tabular.
    pub table: Option<Table>,
    /// The whole answer as one JSON document, for `--json`.
    pub json: String,
    /// A secret shown exactly once (a new service-account key), never stored by the daemon.
    pub secret: Option<String>,
}

impl std::fmt::Debug for AdminResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminResponse")
            .field("message", &self.message)
            .field("warnings", &self.warnings)
            .field("table", &self.table)
            .field(
                "json",
                &if self.secret.is_some() {
                    "<has a secret>"
                } else {
                    &self.json
                },
            )
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_secret() {
        let r = AdminResponse {
            json: "{\"key\":\"kwabcdef.SECRETSECRETSECRETSECRE\"}".into(),
            secret: Some("kwabcdef.SECRETSECRETSECRETSECRE".into()),
            ..AdminResponse::default()
        };
        let d = format!("{r:?}");
        assert!(!d.contains("SECRET"), "{d}");
    }
}
