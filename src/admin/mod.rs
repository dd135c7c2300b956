//! The one admin handler: every keywardctl command is an [`AdminRequest`] handled here.
//! keywardctl runs it in-process with `--db`; keywardd serves it on the admin socket.
//!
//! Each request runs in one write transaction: the policy snapshot is built inside it, the
//! caller is authorised like any principal, the change is made, and its audit record is
//! appended in the same transaction. A refused or failed request changes nothing and leaves
//! a `denied` or `error` audit record of its own.

mod accounts;
mod audit_cmd;
pub mod certs;
pub mod credentials;
pub mod generic;
mod hierarchy;
mod iam;
pub mod import;
mod keys;
mod maintenance;
pub use keys::{DEFAULT_GRACE_SECS, MIN_GRACE_SECS};
pub use maintenance::{ReconcileReport, RESERVED_LABEL_PREFIX};
pub(crate) mod render;
// Re-exported for the admin handler's users (keywardctl, tests); the data path imports them
// from the neutral [`crate::context`].
pub use crate::context::{Caller, Clock, SystemClock};
mod squat;
mod status;

use crate::audit::{self, NewRecord, Outcome};
use crate::policy::{Member, Permission, Principal, ResourceKind, ResourceName, Snapshot};
use crate::store::{self, Store, StoreError};
use keyward_wire::admin::{AdminRequest, AdminResponse};
use rusqlite::Transaction;
use std::path::Path;
use std::sync::Arc;

// CK_RV codes admin errors travel with (PKCS#11 v3.0 §5.1).
pub(crate) use keyward_wire::rv::CKR_DEVICE_ERROR;
use keyward_wire::rv::{CKR_ACTION_PROHIBITED, CKR_ARGUMENTS_BAD, CKR_FUNCTION_FAILED};

/// An admin request that failed: a CK_RV for the wire and a message for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminError {
    /// The CK_RV that travels on the wire.
    pub rv: u64,
    /// What was wrong and what to do.
    pub message: String,
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AdminError {}

/// Why a request did not go through (inside the handler).
#[derive(Debug)]
pub(crate) enum Failure {
    /// Policy said no.
    Denied(String),
    /// The request is malformed (bad id, unknown role, ...).
    Invalid(String),
    /// The state does not allow it (duplicate, non-empty, not found, ...).
    Precondition(String),
    /// The store failed.
    Store(StoreError),
    /// The token failed (its CK_RV and what went wrong).
    Token(u64, String),
    /// Policy said no, with the CK_RV the PKCS#11 function returns for it.
    DeniedWith(u64, String),
    /// The request failed, but what its transaction wrote stands (an IMPORT_FAILED version):
    /// the transaction is committed with the failure's audit record.
    Recorded(Box<Failure>),
    /// A failure already audited and committed (after [`Failure::Recorded`]).
    Audited(AdminError),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        Failure::Store(e)
    }
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Failure {
        Failure::Store(StoreError::Sqlite(e))
    }
}

impl Failure {
    fn outcome(&self) -> Outcome {
        match self {
            Failure::Denied(_) | Failure::DeniedWith(..) => Outcome::Denied,
            Failure::Recorded(inner) => inner.outcome(),
            _ => Outcome::Error,
        }
    }

    fn into_error(self) -> AdminError {
        let (rv, message) = match self {
            Failure::Denied(m) => (CKR_ACTION_PROHIBITED, m),
            Failure::Invalid(m) => (CKR_ARGUMENTS_BAD, m),
            Failure::Precondition(m) => (CKR_FUNCTION_FAILED, m),
            Failure::Store(e) => (CKR_DEVICE_ERROR, format!("store error: {e}")),
            Failure::Token(rv, m) => (rv, format!("token error: {m}")),
            Failure::DeniedWith(rv, m) => (rv, m),
            Failure::Recorded(inner) => return inner.into_error(),
            Failure::Audited(e) => return e,
        };
        AdminError { rv, message }
    }
}

pub(crate) type Res<T> = std::result::Result<T, Failure>;

/// An extra audit record a handler asks for (e.g. a separation-of-duties violation).
pub(crate) struct Extra {
    action: &'static str,
    resource: Option<String>,
    detail: String,
}

/// What one request runs with.
pub(crate) struct Ctx<'a> {
    pub tx: &'a Transaction<'a>,
    pub token: Option<&'a keyward_token::Token>,
    pub snap: Snapshot,
    pub caller: &'a Caller,
    pub now: i64,
    pub extras: Vec<Extra>,
}

impl Ctx<'_> {
    fn who(&self) -> &Principal {
        &self.caller.principal
    }

    /// Requires `perm` on `resource`. A missing resource is reported as "does not exist"
    /// only to callers who would know it if it existed ([`Snapshot::may_know`], the rule the
    /// data path sees keys by); to everyone else an absent resource and one they may not
    /// know get the same answer (design §9).
    pub fn require(&self, perm: Permission, resource: &ResourceName) -> Res<()> {
        let d = self.snap.authorize(self.who(), perm, resource);
        if d.allowed {
            return Ok(());
        }
        // Asked for existing and absent resources alike: the same work for both.
        let knows = self.snap.may_know(self.who(), resource);
        if !self.snap.exists(resource) && knows {
            return Err(Failure::Precondition(format!(
                "{} {resource} does not exist",
                resource.kind().noun()
            )));
        }
        Err(Failure::Denied(format!(
            "permission denied: {} lacks {perm} on {resource} (or it does not exist)",
            self.who().member
        )))
    }

    /// May the caller know whether `resource` exists ([`Snapshot::may_know`])?
    pub fn may_know(&self, resource: &ResourceName) -> bool {
        self.snap.may_know(self.who(), resource)
    }

    /// Every live organisation.
    pub fn snap_orgs(&self) -> Vec<ResourceName> {
        store::resources::list(self.tx, ResourceKind::Organization, None)
            .map(|v| v.into_iter().map(|r| r.name).collect())
            .unwrap_or_default()
    }

    /// Requires `perm` on every organisation (store-wide objects: groups, uid mappings,
    /// the audit log). With no organisation at all, nobody holds it.
    pub fn require_global(&self, perm: Permission) -> Res<()> {
        let orgs = self.snap_orgs();
        if orgs.is_empty() {
            return Err(Failure::Precondition(
                "the store has no organisation yet: run `keywardctl init --org ORG --admin \
                 MEMBER` first"
                    .into(),
            ));
        }
        for o in &orgs {
            if !self.snap.authorize(self.who(), perm, o).allowed {
                // Which organisation refused is not said: its name is not the caller's to know.
                return Err(Failure::Denied(format!(
                    "permission denied: {} lacks {perm} on at least one organisation \
                     (store-wide objects need it on every organisation)",
                    self.who().member
                )));
            }
        }
        Ok(())
    }

    /// True if the caller holds `perm` on `resource` (for filtering lists).
    pub fn holds(&self, perm: Permission, resource: &ResourceName) -> bool {
        self.snap.authorize(self.who(), perm, resource).allowed
    }

    /// Asks for an extra audit record in the same transaction.
    pub fn audit_extra(&mut self, action: &'static str, resource: Option<String>, detail: String) {
        self.extras.push(Extra {
            action,
            resource,
            detail,
        });
    }
}

/// Parses a resource name argument.
pub(crate) fn parse_resource(s: &str) -> Res<ResourceName> {
    s.parse().map_err(Failure::Invalid)
}

/// Parses a member argument.
pub(crate) fn parse_member(s: &str) -> Res<Member> {
    s.parse().map_err(Failure::Invalid)
}

/// The admin service over one store.
pub struct AdminService {
    store: Store,
    clock: Arc<dyn Clock>,
    token: Option<Arc<keyward_token::Token>>,
    published: crate::catalog::Published,
}

impl AdminService {
    /// Opens (creating if needed) the store at `db` and the handler over it.
    pub fn open(db: &Path) -> Result<AdminService, AdminError> {
        let store = Store::open(db).map_err(|e| AdminError {
            rv: CKR_DEVICE_ERROR,
            message: format!("cannot open the store {}: {e}", db.display()),
        })?;
        Ok(AdminService::new(store, Arc::new(SystemClock)))
    }

    /// The handler over an open store with a given clock.
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> AdminService {
        AdminService {
            store,
            clock,
            token: None,
            published: Default::default(),
        }
    }

    /// The handler with the backing token (keywardd): key lifecycle requests need it.
    pub fn with_token(
        store: Store,
        clock: Arc<dyn Clock>,
        token: Arc<keyward_token::Token>,
    ) -> AdminService {
        AdminService {
            store,
            clock,
            token: Some(token),
            published: Default::default(),
        }
    }

    /// The state the data path reads (policy snapshot and key catalog), kept current: it is
    /// rebuilt after every committed request. Call [`AdminService::refresh`] once at start.
    pub fn published(&self) -> crate::catalog::Published {
        self.published.clone()
    }

    /// Rebuilds the published state from the store (one read transaction).
    pub fn refresh(&mut self) -> Result<(), AdminError> {
        let state = self
            .store
            .read()
            .and_then(|tx| crate::catalog::build(&tx))
            .map_err(|e| Failure::from(e).into_error())?;
        self.published.publish(state);
        Ok(())
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The backing token, if this handler has one.
    pub fn token(&self) -> Option<&Arc<keyward_token::Token>> {
        self.token.as_ref()
    }

    /// The store (for the daemon's snapshot and tests).
    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }

    /// Handles one request for `caller`.
    pub fn handle(
        &mut self,
        caller: &Caller,
        req: AdminRequest,
    ) -> Result<AdminResponse, AdminError> {
        let now_ms = self.clock.now_ms();
        let (action, resource) = describe(&req);
        let writes = !is_plain_read(&req);
        let record = caller.record(action, resource, now_ms);
        if let Some(refusal) = oversized_text(&req) {
            return self.finish(record, Err(refusal), false, None);
        }
        let result = self.run(caller, req, now_ms, &record, writes);
        self.finish(record, result, writes, None)
    }

    /// Ends a request: the state is republished after a change (`changed`) or an audited
    /// refusal; any other failure is recorded in `record` (a policy denial answered with
    /// `denied_rv` if given) and returned as the caller's error.
    pub(crate) fn finish<T>(
        &mut self,
        mut record: NewRecord,
        result: Res<T>,
        changed: bool,
        denied_rv: Option<u64>,
    ) -> Result<T, AdminError> {
        let failure = match result {
            Ok(v) => {
                if changed {
                    self.republish();
                }
                return Ok(v);
            }
            Err(Failure::Audited(err)) => {
                self.republish();
                return Err(err);
            }
            Err(f) => f,
        };
        record.outcome = failure.outcome();
        let err = match (failure, denied_rv) {
            (Failure::Denied(message), Some(rv)) => AdminError { rv, message },
            (other, _) => other.into_error(),
        };
        self.audit_failure(record, &err);
        Err(err)
    }

    /// [`AdminService::refresh`] after a committed change: on failure the data path keeps
    /// the previous state until the next successful refresh.
    fn republish(&mut self) {
        if let Err(e) = self.refresh() {
            tracing::error!(error = %e, "cannot rebuild the published state");
        }
    }

    /// Records a refused or failed request in a transaction of its own (the request's own
    /// transaction was rolled back).
    pub(crate) fn audit_failure(&mut self, mut record: NewRecord, err: &AdminError) {
        record.rv = err.rv;
        record.detail = Some(err.message.clone());
        let logged = self.store.write().and_then(|tx| {
            audit::append(&tx, &record)?;
            Ok(tx.commit()?)
        });
        if let Err(e) = logged {
            tracing::error!(error = %e, action = %record.action, "cannot write the audit record of a failed request");
        }
    }

    fn run(
        &mut self,
        caller: &Caller,
        req: AdminRequest,
        now_ms: i64,
        record: &NewRecord,
        audited: bool,
    ) -> Res<AdminResponse> {
        self.in_write(
            caller,
            now_ms,
            record,
            |ctx| dispatch(ctx, req),
            |tx, resp, extras| {
                if audited {
                    let mut rec = record.clone();
                    rec.detail = resp.message.clone();
                    audit::append(tx, &rec)?;
                }
                for extra in extras {
                    let mut rec = record.clone();
                    rec.action = extra.action.to_string();
                    rec.resource = extra.resource;
                    rec.detail = Some(extra.detail);
                    audit::append(tx, &rec)?;
                }
                Ok(())
            },
        )
    }

    /// Runs `f` on a [`Ctx`] in one write transaction at `now_ms`, then `audit_ok` (the
    /// success's audit records, given the records `f` asked for besides), then commits. A
    /// [`Failure::Recorded`] of `f` commits with `record` as its audit record instead.
    pub(crate) fn in_write<T>(
        &mut self,
        caller: &Caller,
        now_ms: i64,
        record: &NewRecord,
        f: impl FnOnce(&mut Ctx<'_>) -> Res<T>,
        audit_ok: impl FnOnce(&Transaction<'_>, &T, Vec<Extra>) -> Res<()>,
    ) -> Res<T> {
        let tx = self.store.write()?;
        let snap = store::build_snapshot(&tx)?;
        let mut ctx = Ctx {
            tx: &tx,
            token: self.token.as_deref(),
            snap,
            caller,
            now: now_ms / 1000,
            extras: Vec::new(),
        };
        let value = match f(&mut ctx) {
            Ok(v) => v,
            Err(Failure::Recorded(inner)) => {
                drop(ctx);
                return Err(commit_recorded(tx, record, *inner));
            }
            Err(f) => return Err(f),
        };
        let extras = std::mem::take(&mut ctx.extras);
        drop(ctx);
        audit_ok(&tx, &value, extras)?;
        tx.commit()?;
        Ok(value)
    }
}

/// Commits a failed request's transaction with its audit record (see [`Failure::Recorded`]);
/// returns the failure as [`Failure::Audited`] (or a store failure if the commit failed).
pub(crate) fn commit_recorded(tx: Transaction<'_>, record: &NewRecord, inner: Failure) -> Failure {
    let mut rec = record.clone();
    rec.outcome = inner.outcome();
    let err = inner.into_error();
    rec.rv = err.rv;
    rec.detail = Some(err.message.clone());
    let committed = audit::append(&tx, &rec).and_then(|_| Ok(tx.commit()?));
    match committed {
        Ok(()) => Failure::Audited(err),
        Err(e) => Failure::Store(e),
    }
}

fn dispatch(ctx: &mut Ctx<'_>, req: AdminRequest) -> Res<AdminResponse> {
    use AdminRequest as R;
    match req {
        R::Init { org, admin } => hierarchy::init(ctx, &org, &admin),
        R::OrgCreate { org } => hierarchy::org_create(ctx, &org),
        R::OrgList => hierarchy::list(ctx, ResourceKind::Organization, None),
        R::OrgGet { name } => hierarchy::get(ctx, ResourceKind::Organization, &name),
        R::OrgDelete { name } => hierarchy::delete(ctx, ResourceKind::Organization, &name),
        R::OrgSetSod { name, mode } => hierarchy::org_set_sod(ctx, &name, &mode),
        R::FolderCreate { parent, id } => {
            hierarchy::container_create(ctx, ResourceKind::Folder, &parent, &id)
        }
        R::FolderList { parent } => hierarchy::list(ctx, ResourceKind::Folder, parent.as_deref()),
        R::FolderGet { name } => hierarchy::get(ctx, ResourceKind::Folder, &name),
        R::FolderDelete { name } => hierarchy::delete(ctx, ResourceKind::Folder, &name),
        R::ProjectCreate { parent, id } => {
            hierarchy::container_create(ctx, ResourceKind::Project, &parent, &id)
        }
        R::ProjectList { parent } => hierarchy::list(ctx, ResourceKind::Project, parent.as_deref()),
        R::ProjectGet { name } => hierarchy::get(ctx, ResourceKind::Project, &name),
        R::ProjectDelete { name } => hierarchy::delete(ctx, ResourceKind::Project, &name),
        R::KeyRingCreate {
            parent,
            id,
            token_label,
        } => hierarchy::key_ring_create(ctx, &parent, &id, token_label.as_deref()),
        R::KeyRingList { parent } => hierarchy::list(ctx, ResourceKind::KeyRing, parent.as_deref()),
        R::KeyRingGet { name } => hierarchy::get(ctx, ResourceKind::KeyRing, &name),
        R::KeyRingDelete { name } => hierarchy::delete(ctx, ResourceKind::KeyRing, &name),
        R::KeyRingUpdate {
            name,
            allow_plaintext_import,
            strict_templates,
            token_label,
        } => hierarchy::key_ring_update(
            ctx,
            &name,
            allow_plaintext_import,
            strict_templates,
            token_label.as_deref(),
        ),
        R::RoleList => iam::role_list(ctx),
        R::RoleDescribe { name } => iam::role_describe(ctx, &name),
        R::RoleCreate {
            org,
            id,
            title,
            permissions,
        } => iam::role_create(ctx, &org, &id, title.as_deref(), &permissions),
        R::RoleUpdate {
            name,
            title,
            permissions,
            allow_sod_violation,
        } => iam::role_update(
            ctx,
            &name,
            title.as_deref(),
            &permissions,
            allow_sod_violation,
        ),
        R::RoleDelete { name } => iam::role_delete(ctx, &name),
        R::IamBind {
            resource,
            role,
            member,
            allow_sod_violation,
        } => iam::bind(ctx, &resource, &role, &member, allow_sod_violation),
        R::IamUnbind {
            resource,
            role,
            member,
        } => iam::unbind(ctx, &resource, &role, &member),
        R::IamPolicy { resource } => iam::policy(ctx, &resource),
        R::IamTest {
            member,
            resource,
            permissions,
        } => iam::test(ctx, &member, &resource, &permissions),
        R::IamExplain {
            member,
            resource,
            permission,
        } => iam::explain(ctx, &member, &resource, permission.as_deref()),
        R::IamWhoCan {
            resource,
            permission,
        } => iam::who_can(ctx, &resource, &permission),
        R::IamSodReport { org } => iam::sod_report(ctx, &org),
        R::IamMapUid {
            uid,
            member,
            allow_sod_violation,
        } => accounts::map_uid(ctx, uid, &member, allow_sod_violation),
        R::IamUnmapUid { uid } => accounts::unmap_uid(ctx, uid),
        R::IamListMappings => accounts::list_mappings(ctx),
        R::GroupCreate { group } => accounts::group_create(ctx, &group),
        R::GroupList => accounts::group_list(ctx),
        R::GroupGet { group } => accounts::group_get(ctx, &group),
        R::GroupDelete { group } => accounts::group_delete(ctx, &group),
        R::GroupAddMember {
            group,
            member,
            allow_sod_violation,
        } => accounts::group_add(ctx, &group, &member, allow_sod_violation),
        R::GroupRemoveMember { group, member } => accounts::group_remove(ctx, &group, &member),
        R::SaCreate {
            project,
            id,
            display_name,
        } => accounts::sa_create(ctx, &project, &id, display_name.as_deref()),
        R::SaList { project } => accounts::sa_list(ctx, project.as_deref()),
        R::SaDelete { account } => accounts::sa_delete(ctx, &account),
        R::SaKeyCreate { account } => accounts::sa_key_create(ctx, &account),
        R::SaKeyList { account } => accounts::sa_key_list(ctx, &account),
        R::SaKeyRevoke { account, key_id } => accounts::sa_key_revoke(ctx, &account, &key_id),
        R::KeyCreate {
            keyring,
            id,
            purpose,
            algorithm,
            exportable,
        } => keys::create(ctx, &keyring, &id, &purpose, &algorithm, exportable),
        R::KeyList { keyring } => keys::list(ctx, &keyring),
        R::KeyGet { name } => keys::get(ctx, &name),
        R::KeyRotate { name, set_primary } => keys::rotate(ctx, &name, set_primary),
        R::KeySetPrimary { name, version } => keys::set_primary(ctx, &name, version),
        R::KeyGetPublicKey { name, version } => keys::public_key(ctx, &name, version),
        R::VersionList { key } => keys::versions(ctx, &key),
        R::VersionGet { name } => keys::version_get(ctx, &name),
        R::VersionEnable { name } => keys::version_change(ctx, &name, keys::Change::Enable, None),
        R::VersionDisable { name } => keys::version_change(ctx, &name, keys::Change::Disable, None),
        R::VersionDestroy { name, grace_secs } => {
            keys::version_change(ctx, &name, keys::Change::Destroy, grace_secs)
        }
        R::VersionRestore { name } => keys::version_change(ctx, &name, keys::Change::Restore, None),
        R::ImportJobCreate {
            keyring,
            id,
            method,
        } => import::job_create(ctx, &keyring, id.as_deref(), &method),
        R::ImportJobGet { name, pem } => import::job_get(ctx, &name, pem),
        R::ImportJobList { keyring } => import::job_list(ctx, &keyring),
        R::KeyImport {
            import_job,
            key,
            algorithm,
            wrapped,
            public_key,
        } => import::key_import(
            ctx,
            &import_job,
            &key,
            &algorithm,
            &wrapped,
            public_key.as_deref(),
        ),
        R::AuditTail { count } => audit_cmd::tail(ctx, count),
        R::AuditQuery { filter } => audit_cmd::query(ctx, &filter),
        R::AuditVerify => audit_cmd::verify(ctx),
        R::KeyCertImport { key, certs, label } => {
            certs::import(ctx, &key, &certs, label.as_deref())
        }
        R::KeyCertList { key } => certs::list(ctx, &key),
        R::Status => status::status(ctx),
        R::TokenCapabilities => status::capabilities(ctx),
    }
}

/// Plain reads (get/list/describe): not audited when allowed (denials always are), and the
/// requests `keywardctl --db` may still run while keywardd holds the store.
pub fn is_plain_read(req: &AdminRequest) -> bool {
    use AdminRequest as R;
    matches!(
        req,
        R::OrgList
            | R::OrgGet { .. }
            | R::FolderList { .. }
            | R::FolderGet { .. }
            | R::ProjectList { .. }
            | R::ProjectGet { .. }
            | R::KeyRingList { .. }
            | R::KeyRingGet { .. }
            | R::RoleList
            | R::RoleDescribe { .. }
            | R::GroupList
            | R::GroupGet { .. }
            | R::SaList { .. }
            | R::SaKeyList { .. }
            | R::IamListMappings
            | R::KeyList { .. }
            | R::KeyGet { .. }
            | R::VersionList { .. }
            | R::VersionGet { .. }
            | R::KeyCertList { .. }
            | R::Status
            | R::TokenCapabilities
            | R::ImportJobGet { .. }
            | R::ImportJobList { .. }
    )
}

/// The audit action name and resource of a request.
fn describe(req: &AdminRequest) -> (&'static str, Option<String>) {
    use AdminRequest as R;
    let s = |v: &str| Some(v.to_string());
    match req {
        R::Init { org, .. } => ("init", Some(format!("organizations/{org}"))),
        R::OrgCreate { org } => ("org.create", Some(format!("organizations/{org}"))),
        R::OrgList => ("org.list", None),
        R::OrgGet { name } => ("org.get", s(name)),
        R::OrgDelete { name } => ("org.delete", s(name)),
        R::OrgSetSod { name, .. } => ("org.setSod", s(name)),
        R::FolderCreate { parent, id } => ("folder.create", Some(format!("{parent} folders/{id}"))),
        R::FolderList { parent } => ("folder.list", parent.clone()),
        R::FolderGet { name } => ("folder.get", s(name)),
        R::FolderDelete { name } => ("folder.delete", s(name)),
        R::ProjectCreate { id, .. } => ("project.create", Some(format!("projects/{id}"))),
        R::ProjectList { parent } => ("project.list", parent.clone()),
        R::ProjectGet { name } => ("project.get", s(name)),
        R::ProjectDelete { name } => ("project.delete", s(name)),
        R::KeyRingCreate { parent, id, .. } => {
            ("keyring.create", Some(format!("{parent}/keyRings/{id}")))
        }
        R::KeyRingList { parent } => ("keyring.list", parent.clone()),
        R::KeyRingGet { name } => ("keyring.get", s(name)),
        R::KeyRingDelete { name } => ("keyring.delete", s(name)),
        R::KeyRingUpdate { name, .. } => ("keyring.update", s(name)),
        R::RoleList => ("role.list", None),
        R::RoleDescribe { name } => ("role.describe", s(name)),
        R::RoleCreate { org, id, .. } => {
            ("role.create", Some(format!("{}/roles/{id}", org_name(org))))
        }
        R::RoleUpdate { name, .. } => ("role.update", s(name)),
        R::RoleDelete { name } => ("role.delete", s(name)),
        R::IamBind { resource, .. } => ("iam.bind", s(resource)),
        R::IamUnbind { resource, .. } => ("iam.unbind", s(resource)),
        R::IamPolicy { resource } => ("iam.policy", s(resource)),
        R::IamTest { resource, .. } => ("iam.test", s(resource)),
        R::IamExplain { resource, .. } => ("iam.explain", s(resource)),
        R::IamWhoCan { resource, .. } => ("iam.whoCan", s(resource)),
        R::IamSodReport { org } => ("iam.sodReport", Some(org_name(org))),
        R::IamMapUid { uid, .. } => ("iam.mapUid", Some(format!("unix-uid:{uid}"))),
        R::IamUnmapUid { uid } => ("iam.unmapUid", Some(format!("unix-uid:{uid}"))),
        R::IamListMappings => ("iam.listMappings", None),
        R::GroupCreate { group } => ("group.create", Some(format!("group:{group}"))),
        R::GroupList => ("group.list", None),
        R::GroupGet { group } => ("group.get", Some(format!("group:{group}"))),
        R::GroupDelete { group } => ("group.delete", Some(format!("group:{group}"))),
        R::GroupAddMember { group, .. } => ("group.addMember", Some(format!("group:{group}"))),
        R::GroupRemoveMember { group, .. } => {
            ("group.removeMember", Some(format!("group:{group}")))
        }
        R::SaCreate { project, id, .. } => (
            "sa.create",
            Some(format!("serviceAccount:{id}@{}", bare_project(project))),
        ),
        R::SaList { project } => ("sa.list", project.clone()),
        R::SaDelete { account } => ("sa.delete", Some(sa_member(account))),
        R::SaKeyCreate { account } => ("sa.key.create", Some(sa_member(account))),
        R::SaKeyList { account } => ("sa.key.list", Some(sa_member(account))),
        R::SaKeyRevoke { account, .. } => ("sa.key.revoke", Some(sa_member(account))),
        R::KeyCreate { keyring, id, .. } => {
            ("key.create", Some(format!("{keyring}/cryptoKeys/{id}")))
        }
        R::KeyList { keyring } => ("key.list", s(keyring)),
        R::KeyGet { name } => ("key.get", s(name)),
        R::KeyRotate { name, .. } => ("key.rotate", s(name)),
        R::KeySetPrimary { name, version } => (
            "key.setPrimary",
            Some(format!("{name}/cryptoKeyVersions/{version}")),
        ),
        R::KeyGetPublicKey { name, .. } => ("key.getPublicKey", s(name)),
        R::VersionList { key } => ("version.list", s(key)),
        R::VersionGet { name } => ("version.get", s(name)),
        R::VersionEnable { name } => ("version.enable", s(name)),
        R::VersionDisable { name } => ("version.disable", s(name)),
        R::VersionDestroy { name, .. } => ("version.destroy", s(name)),
        R::VersionRestore { name } => ("version.restore", s(name)),
        R::ImportJobCreate { keyring, id, .. } => (
            "importJob.create",
            Some(format!(
                "{keyring}/importJobs/{}",
                id.as_deref().unwrap_or("*")
            )),
        ),
        R::ImportJobGet { name, .. } => ("importJob.get", s(name)),
        R::ImportJobList { keyring } => ("importJob.list", s(keyring)),
        R::KeyImport { key, .. } => ("key.import", s(key)),
        R::AuditTail { .. } => ("audit.tail", None),
        R::AuditQuery { .. } => ("audit.query", None),
        R::AuditVerify => ("audit.verify", None),
        R::KeyCertImport { key, .. } => ("key.cert.import", s(key)),
        R::KeyCertList { key } => ("key.cert.list", s(key)),
        R::Status => ("status", None),
        R::TokenCapabilities => ("token.capabilities", None),
    }
}

/// `acme` or `organizations/acme` → `organizations/acme`.
pub(crate) fn org_name(s: &str) -> String {
    if s.starts_with("organizations/") {
        s.to_string()
    } else {
        format!("organizations/{s}")
    }
}

/// `payments` or `projects/payments` → `payments`.
pub(crate) fn bare_project(s: &str) -> &str {
    s.strip_prefix("projects/").unwrap_or(s)
}

/// `web@payments` or `serviceAccount:web@payments` → `serviceAccount:web@payments`.
pub(crate) fn sa_member(s: &str) -> String {
    if s.starts_with("serviceAccount:") {
        s.to_string()
    } else {
        format!("serviceAccount:{s}")
    }
}

/// Bytes a free-text field of an admin request (a role's title, an account's display name, a
/// certificate's label) may have (design §9: a client string that reaches the store is capped).
pub const MAX_TEXT_FIELD: usize = 1024;

/// The refusal of a request with a free-text field over [`MAX_TEXT_FIELD`] bytes.
fn oversized_text(req: &AdminRequest) -> Option<Failure> {
    let (field, value) = match req {
        AdminRequest::RoleCreate { title: Some(t), .. }
        | AdminRequest::RoleUpdate { title: Some(t), .. } => ("title", t),
        AdminRequest::SaCreate {
            display_name: Some(d),
            ..
        } => ("display name", d),
        AdminRequest::KeyCertImport { label: Some(l), .. } => ("label", l),
        _ => return None,
    };
    (value.len() > MAX_TEXT_FIELD).then(|| {
        Failure::Invalid(format!(
            "the {field} has {} bytes: at most {MAX_TEXT_FIELD}",
            value.len()
        ))
    })
}
