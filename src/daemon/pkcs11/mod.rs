//! keywardd's PKCS#11 half (design §1, §4, §6): the dispatcher of [`Pkcs11Request`]s on the
//! client socket.
//!
//! - [`Pkcs11Service`] is shared by every connection: the published policy and catalog
//!   ([`crate::catalog::Published`], never SQLite per call), the backing token, the audit
//!   writer, and the module instances ([`instance::InstanceState`]: principal, logins per
//!   slot, slot list, handles).
//! - [`ClientConnection`] is one connection of an instance: its sessions and their bound
//!   operations. Dropping it closes its sessions (their read counts are audited).
//!
//! Decisions are made on one `Arc<State>` per request; a policy change applies to the next
//! call. Denials follow design §4's table; invisible objects are
//! `CKR_OBJECT_HANDLE_INVALID`/`CKR_KEY_HANDLE_INVALID`; the use gate is checked at `*Init`
//! and bound (key, version, token id, mechanism) to the session's operation.
//!
//! Audit (design §6): every `*Init` (allowed or denied), login success and failure, every
//! denial, key generation attempts; FindObjects/GetAttributeValue are counted per session and
//! recorded when it closes. Records carry the instance and the peer pid/uid. If the writer
//! cannot persist, new operations (`*Init`, login, finds, attribute reads, random) are refused
//! with `CKR_DEVICE_ERROR` (fail closed).
//!
//! Key creation, destruction and renaming ([`create`]) go through the attached
//! [`AdminService`] (one write transaction with the audit record, then the published state is
//! rebuilt). What the catalog does not carry (generic keys' client `CKA_ID`/`CKA_LABEL` and
//! flags, kept public halves) is read from the store once per published state.
//!
//! Lock order: the attached `AdminService` (only to create, destroy, rename, or to read the
//! extras of a new published state), then `Pkcs11Service::extras`, then
//! `Pkcs11Service::instances`, then one `InstanceState` mutex; none but the first is held
//! across a token call or an authentication.

pub mod byok;
pub mod certs;
pub mod ck;
pub mod create;
pub mod ctl;
pub mod export;
pub mod instance;
pub mod objects;
pub mod ops;
pub mod session_objects;
pub mod stream;
pub mod unwrap;

use crate::admin::generic::Pkcs11Extras;
use crate::admin::{AdminService, Caller, Clock};
use crate::audit::writer::{AuditUnavailable, AuditWriter};
use crate::audit::{NewRecord, Outcome};
use crate::catalog::{Published, State};
use crate::daemon::limits::{Buffer, Charge, Holder, Limits, Refused, Resource};
use crate::policy::{CryptoKeyName, KeyRingName, Permission, Principal, ResourceName};
use crate::store::keys::{PublicHalf, VersionState};
use ck::*;
use instance::{InstanceState, Login, SlotEntry};
use keyward_token::Token;
use keyward_wire::pkcs11::{
    ring_identity, AttrResult, Attribute, Blob, ConfiguredToken, ObjectHandle, Operation,
    Pkcs11Request, Pkcs11Response, SessionId, SlotDescription, SlotId, TokenInfo, UserType,
};
use objects::{ObjectKey, ObjectView};
use ops::Plan;
use parking_lot::Mutex;
use session_objects::Lookup;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use stream::{Chain, Hasher, Stream};

/// Random bytes one call may ask for.
const MAX_RANDOM: u64 = 1 << 20;
/// Bytes kept of a configured ring name (`KEYWARD_TOKENS`): a valid ring name
/// (`organizations/ID/keyRings/ID`, IDs of at most 63 bytes) is far shorter.
const MAX_CONFIGURED_RING: usize = 256;
/// Bytes a key's or certificate's `CKA_LABEL` or `CKA_ID` may have (design §9: a client
/// string that reaches the store is capped). Clients use a few dozen; longer is
/// `CKR_ATTRIBUTE_VALUE_INVALID`.
pub const MAX_LABEL_OR_ID: usize = 1024;

/// `CKR_ATTRIBUTE_VALUE_INVALID` if a template that may reach the store (creation, generation,
/// unwrap, copy, derivation, `C_SetAttributeValue`) has a `CKA_LABEL` or `CKA_ID` over
/// [`MAX_LABEL_OR_ID`] bytes. Checked before anything else, so nothing of it is kept.
fn oversized_strings(req: &Pkcs11Request) -> Result<(), u64> {
    use keyward_wire::pkcs11::AttrValue;
    use Pkcs11Request as R;
    let check = |t: &[Attribute]| {
        let over = t.iter().any(|a| {
            matches!(a.ty, CKA_LABEL | CKA_ID)
                && matches!(&a.value, AttrValue::Bytes(b) if b.len() > MAX_LABEL_OR_ID)
        });
        if over {
            Err(keyward_wire::rv::CKR_ATTRIBUTE_VALUE_INVALID)
        } else {
            Ok(())
        }
    };
    match req {
        R::SetAttributeValue { template, .. }
        | R::CreateObject { template, .. }
        | R::CopyObject { template, .. }
        | R::GenerateKey { template, .. }
        | R::UnwrapKey { template, .. }
        | R::DeriveKey { template, .. } => check(template),
        R::GenerateKeyPair {
            public_template,
            private_template,
            ..
        } => check(public_template).and_then(|()| check(private_template)),
        _ => Ok(()),
    }
}

/// Bytes kept of a configured token label (a PKCS#11 label has 32; some room for UTF-8).
const MAX_CONFIGURED_LABEL: usize = 128;

/// Authenticates a service-account key given as a PIN, with the server's back-off
/// (`CKR_PIN_INCORRECT` after a growing delay, `CKR_PIN_LOCKED`, `CKR_DEVICE_ERROR`).
pub type KeyAuthenticator<'a> = &'a dyn Fn(&str) -> Result<Principal, u64>;

/// What every client connection shares.
pub struct Pkcs11Service {
    published: Published,
    token: Arc<Token>,
    audit: Arc<AuditWriter>,
    clock: Arc<dyn Clock>,
    instances: Mutex<Instances>,
    admin: OnceLock<Arc<Mutex<AdminService>>>,
    extras: Mutex<Option<(Arc<State>, Arc<Pkcs11Extras>)>>,
    /// Session objects one instance may hold (design §4 "Session objects").
    session_object_quota: AtomicUsize,
    /// Configured rings the caller does not see one slot list may name (design §9).
    unseen_ring_cap: AtomicUsize,
    /// When a refusal by `unseen_ring_cap` was last logged, and how many since.
    unseen_log: Mutex<(Option<std::time::Instant>, u64)>,
    /// The id of the next connection (session objects name their owner by it).
    next_connection: AtomicU64,
    /// Resource limits per uid, per principal and in total (design §9 "Resources").
    limits: OnceLock<Arc<Limits>>,
}

/// One request's view: the published state and the extras read for it.
struct View {
    state: Arc<State>,
    extras: Arc<Pkcs11Extras>,
}

/// The instances' state by id. Which instances exist is the server's instance table's
/// business (design §9: caps per uid, forgotten when the process exits): it calls
/// [`Pkcs11Service::forget_instance`]; nothing here is ever evicted for another.
#[derive(Default)]
struct Instances {
    by_id: HashMap<String, Arc<Mutex<InstanceState>>>,
}

impl Pkcs11Service {
    /// The service over the published state, the token and the audit writer.
    pub fn new(
        published: Published,
        token: Arc<Token>,
        audit: Arc<AuditWriter>,
        clock: Arc<dyn Clock>,
    ) -> Arc<Pkcs11Service> {
        Arc::new(Pkcs11Service {
            published,
            token,
            audit,
            clock,
            instances: Mutex::new(Instances::default()),
            admin: OnceLock::new(),
            extras: Mutex::new(None),
            session_object_quota: AtomicUsize::new(
                crate::daemon::config::DEFAULT_SESSION_OBJECTS_PER_INSTANCE,
            ),
            unseen_ring_cap: AtomicUsize::new(
                crate::daemon::config::DEFAULT_MAX_UNSEEN_CONFIGURED_RINGS,
            ),
            unseen_log: Mutex::new((None, 0)),
            next_connection: AtomicU64::new(1),
            limits: OnceLock::new(),
        })
    }

    /// Sets the resource limits (keywardd's `[daemon] max_*` keys), before the first
    /// connection; without it the defaults apply.
    pub fn set_limits(&self, settings: crate::daemon::limits::Settings) {
        let _ = self.limits.set(Limits::new(settings));
    }

    /// The resource limits.
    pub fn limits(&self) -> &Arc<Limits> {
        self.limits.get_or_init(|| Limits::new(Default::default()))
    }

    /// The audit writer the data path records with (the server records handshake
    /// refusals with it too, so they coalesce and count against the peer's audit rate).
    pub fn audit(&self) -> &Arc<AuditWriter> {
        &self.audit
    }

    /// Sets how many session objects one module instance may hold (keywardd's
    /// `[daemon] session_objects_per_instance`); more is `CKR_DEVICE_MEMORY`.
    pub fn set_session_object_quota(&self, quota: usize) {
        self.session_object_quota.store(quota, Ordering::Relaxed);
    }

    /// Sets how many configured key rings its principal does not see one slot list may name
    /// (keywardd's `[daemon] max_unseen_configured_rings`); more is `CKR_ARGUMENTS_BAD`.
    pub fn set_unseen_ring_cap(&self, cap: usize) {
        self.unseen_ring_cap.store(cap, Ordering::Relaxed);
    }

    /// Attaches the admin service that creates, destroys and renames keys for the module
    /// (keywardd does at start). Without it those calls return `CKR_FUNCTION_NOT_SUPPORTED`.
    pub fn attach_admin(&self, admin: Arc<Mutex<AdminService>>) {
        let _ = self.admin.set(admin);
    }

    /// The published state and its extras (read from the store once per state; an error
    /// fails closed with `CKR_DEVICE_ERROR`).
    fn view(&self) -> Result<View, u64> {
        let state = self.published.current();
        if let Some((s, e)) = &*self.extras.lock() {
            if Arc::ptr_eq(s, &state) {
                return Ok(View {
                    state,
                    extras: Arc::clone(e),
                });
            }
        }
        let extras = match self.admin.get() {
            Some(admin) => {
                let loaded = admin.lock().pkcs11_extras();
                Arc::new(loaded.map_err(|e| {
                    tracing::error!(error = %e, "cannot read generic keys: failing closed");
                    CKR_DEVICE_ERROR
                })?)
            }
            None => Arc::new(Pkcs11Extras::default()),
        };
        *self.extras.lock() = Some((Arc::clone(&state), Arc::clone(&extras)));
        Ok(View { state, extras })
    }

    /// A connection of the instance `caller.instance` whose pre-login principal is
    /// `caller.principal`; `secret`: the instance secret its object handles derive from
    /// (design §4: they stay valid in a later keywardd that adopts the secret).
    pub fn connect(
        self: &Arc<Self>,
        caller: &Caller,
        secret: Option<&[u8; 32]>,
    ) -> ClientConnection {
        let id = caller.instance.clone().unwrap_or_default();
        let inst = {
            let mut t = self.instances.lock();
            match t.by_id.get(&id) {
                Some(i) => Arc::clone(i),
                None => {
                    let i = Arc::new(Mutex::new(InstanceState::new(
                        id.clone(),
                        caller.principal.clone(),
                        secret,
                    )));
                    t.by_id.insert(id, Arc::clone(&i));
                    i
                }
            }
        };
        ClientConnection {
            id: self.next_connection.fetch_add(1, Ordering::Relaxed),
            svc: Arc::clone(self),
            inst,
            caller: caller.clone(),
            sessions: HashMap::new(),
            next_session: 1,
            current: "none",
            peer: None,
        }
    }
}

impl Pkcs11Service {
    /// Forgets instance `id` (the server's table forgot it: its process exited, or it was a
    /// keywardctl connection that closed). Its connections are gone already.
    pub fn forget_instance(&self, id: &str) {
        self.instances.lock().by_id.remove(id);
    }
}

/// An operation bound at `*Init`.
// Keyed is the common variant (every key operation); boxing it would add an allocation to
// each `*Init` to save memory only for digests.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Active {
    Keyed {
        /// The version's or session object's name (logs).
        object: String,
        plan: Plan,
        token_id: Vec<u8>,
        /// A session object's operation runs on it instead of `token_id`.
        session_object: Option<keyward_token::SessionObject>,
        /// What is buffered (all of it for [`Stream::Whole`], held-back bytes of a block
        /// mode), within the limits of design §9.
        buf: Buffer,
        /// How the input streams; `None` until the first update (a one-shot call on a fresh
        /// operation runs the mechanism itself over its whole input).
        stream: Option<Box<Stream>>,
        /// The operation's count against the limits (design §9).
        _charge: Charge,
    },
    Digest {
        /// Hashed as the data comes (nothing is buffered; boxed: a SHA-512 state is large).
        hasher: Box<Hasher>,
        _charge: Charge,
    },
}

#[derive(Debug)]
struct Session {
    slot: SlotId,
    rw: bool,
    ops: HashMap<Operation, Active>,
    finds: u64,
    reads: u64,
    /// The session's count against the limits (design §9).
    _charge: Charge,
}

/// One client connection of a module instance.
pub struct ClientConnection {
    /// Unique among the service's connections (session objects' owners).
    id: u64,
    svc: Arc<Pkcs11Service>,
    inst: Arc<Mutex<InstanceState>>,
    caller: Caller,
    sessions: HashMap<u64, Session>,
    next_session: u64,
    /// The C_ function of the request being answered (for audit records of refusals made
    /// below `handle`).
    current: &'static str,
    /// The connection's socket, to see whether the client is still there before a key it
    /// asked for is stored ([`ClientConnection::watch_peer`]).
    peer: Option<Arc<std::os::unix::net::UnixStream>>,
}

/// The slot's view for one request: who, whether logged in, and the ring if it exists and
/// the principal sees it.
struct SlotCtx {
    principal: Principal,
    login: Option<bool>,
    ring: Option<KeyRingName>,
    ring_name: String,
}

/// The C_ function a request stands for, as audit records name it.
fn request_action(req: &Pkcs11Request) -> &'static str {
    use Pkcs11Request as R;
    match req {
        R::Ping => "ping",
        R::ListSlots { .. } => "C_GetSlotList",
        R::GetTokenInfo { .. } => "C_GetTokenInfo",
        R::GetMechanismList { .. } => "C_GetMechanismList",
        R::GetMechanismInfo { .. } => "C_GetMechanismInfo",
        R::OpenSession { .. } => "C_OpenSession",
        R::CloseSession { .. } => "C_CloseSession",
        R::Login { .. } => "C_Login",
        R::Logout { .. } => "C_Logout",
        R::FindObjects { .. } => "C_FindObjects",
        R::GetAttributeValue { .. } => "C_GetAttributeValue",
        R::SetAttributeValue { .. } => "C_SetAttributeValue",
        R::CopyObject { .. } => "C_CopyObject",
        R::DestroyObject { .. } => "C_DestroyObject",
        R::GetObjectSize { .. } => "C_GetObjectSize",
        R::CreateObject { .. } => "C_CreateObject",
        R::GenerateKey { .. } => "C_GenerateKey",
        R::GenerateKeyPair { .. } => "C_GenerateKeyPair",
        R::WrapKey { .. } => "C_WrapKey",
        R::UnwrapKey { .. } => "C_UnwrapKey",
        R::DeriveKey { .. } => "C_DeriveKey",
        R::OperationInit { op, .. } => init_action(*op),
        R::OperationOneShot { .. }
        | R::OperationUpdate { .. }
        | R::OperationFinal { .. }
        | R::Verify { .. }
        | R::VerifyFinal { .. }
        | R::OperationCancel { .. } => "operation",
        R::GenerateRandom { .. } => "C_GenerateRandom",
    }
}

fn init_action(op: Operation) -> &'static str {
    match op {
        Operation::Encrypt => "C_EncryptInit",
        Operation::Decrypt => "C_DecryptInit",
        Operation::Sign => "C_SignInit",
        Operation::Verify => "C_VerifyInit",
        Operation::Digest => "C_DigestInit",
    }
}

fn use_permission(op: Operation) -> Option<Permission> {
    match op {
        Operation::Encrypt => Some(Permission::UseToEncrypt),
        Operation::Decrypt => Some(Permission::UseToDecrypt),
        Operation::Sign => Some(Permission::UseToSign),
        Operation::Verify => Some(Permission::UseToVerify),
        Operation::Digest => None,
    }
}

fn token_info(label: &str, serial: &str, counts: Option<(u64, u64)>) -> TokenInfo {
    let (all, rw) = counts.unwrap_or_default();
    TokenInfo {
        label: label.to_owned(),
        serial: serial.to_owned(),
        flags: CKF_LOGIN_REQUIRED | CKF_TOKEN_INITIALIZED | CKF_USER_PIN_INITIALIZED | CKF_RNG,
        session_count: Some(all),
        rw_session_count: Some(rw),
    }
}

/// Can an object of `key` carry `CKA_LABEL` `label` (objects.rs `ObjectView::label`: a
/// generic key's client labels; else the key id, or `keyid@vN`)?
fn label_may_match(view: &View, key: &crate::catalog::KeyEntry, label: &[u8]) -> bool {
    if let Some(g) = view.extras.generic.get(&key.name) {
        return g.cka_label == label || g.pub_cka_label == label;
    }
    let id = key.name.id.as_bytes();
    label
        .strip_prefix(id)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"@v"))
}

fn parse_ring(name: &str) -> Option<KeyRingName> {
    match ResourceName::from_str(name) {
        Ok(ResourceName::KeyRing(r)) => Some(r),
        _ => None,
    }
}

impl Drop for ClientConnection {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.sessions.keys().copied().collect();
        for id in ids {
            self.close_session(id);
        }
    }
}

impl ClientConnection {
    /// Gives the connection its socket (a clone), so that a key creation can tell whether
    /// the client is still waiting for it.
    pub fn watch_peer(&mut self, stream: std::os::unix::net::UnixStream) {
        self.peer = Some(Arc::new(stream));
    }

    /// A probe that is true once the client has closed its end (end of file or an error on
    /// a non-blocking peek; a request already waiting means it is still there).
    fn client_left(&self) -> Option<Box<dyn Fn() -> bool>> {
        let peer = Arc::clone(self.peer.as_ref()?);
        Some(Box::new(move || {
            let mut probe = [0u8; 1];
            let flags = rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT;
            match rustix::net::recv(&*peer, &mut probe, flags) {
                Ok((n, _)) => n == 0,
                Err(e) => e != rustix::io::Errno::AGAIN && e != rustix::io::Errno::INTR,
            }
        }))
    }

    /// True if closing this connection loses nothing (design §9 "Lifecycles"): it holds no
    /// session and its instance is logged in on no slot.
    pub fn may_close_idle(&self) -> bool {
        self.sessions.is_empty() && self.inst.lock().logins.is_empty()
    }

    /// Answers one request; an error is the CK_RV the C_ function returns.
    pub fn handle(
        &mut self,
        req: Pkcs11Request,
        auth: KeyAuthenticator<'_>,
    ) -> Result<Pkcs11Response, u64> {
        use Pkcs11Request as R;
        use Pkcs11Response as P;
        self.current = request_action(&req);
        oversized_strings(&req)?;
        match req {
            R::Ping => Ok(P::Pong),
            R::ListSlots { configured } => self.list_slots(&configured).map(P::Slots),
            R::GetTokenInfo { slot } => {
                let entry = self.slot_entry(slot)?;
                let counts = self.inst.lock().sessions.get(&slot).copied();
                Ok(P::TokenInfo(token_info(
                    &entry.label,
                    &entry.serial,
                    counts,
                )))
            }
            R::GetMechanismList { slot } => {
                self.slot_entry(slot)?;
                Ok(P::Mechanisms(ops::served(&self.svc.token)))
            }
            R::GetMechanismInfo { slot, mechanism } => {
                self.slot_entry(slot)?;
                if !ops::served(&self.svc.token).contains(&mechanism) {
                    return Err(CKR_MECHANISM_INVALID);
                }
                ops::info(mechanism)
                    .map(P::MechanismInfo)
                    .ok_or(CKR_MECHANISM_INVALID)
            }
            R::OpenSession { slot, read_write } => {
                let entry = self.slot_entry(slot)?;
                let principal = self.inst.lock().principal(slot).0;
                let charge = self
                    .charge(Resource::Sessions, &principal, 1)
                    .map_err(|r| {
                        self.deny_limit(&principal, Some(entry.ring.clone()), CKR_SESSION_COUNT, r)
                    })?;
                let id = self.next_session;
                self.next_session += 1;
                self.sessions.insert(
                    id,
                    Session {
                        slot,
                        rw: read_write,
                        ops: HashMap::new(),
                        finds: 0,
                        reads: 0,
                        _charge: charge,
                    },
                );
                self.inst.lock().session_opened(slot, read_write);
                Ok(P::Session(SessionId(id)))
            }
            R::CloseSession { session } => {
                if !self.sessions.contains_key(&session.0) {
                    return Err(CKR_SESSION_HANDLE_INVALID);
                }
                self.close_session(session.0);
                Ok(P::Done)
            }
            R::Login { slot, user, pin } => {
                self.login(slot, user, pin.as_ref().map(|p| p.expose_secret()), auth)
            }
            R::Logout { slot } => {
                self.slot_entry(slot)?;
                let was = self.inst.lock().logins.remove(&slot);
                match was {
                    Some(_) => {
                        // PKCS#11 §5.6: C_Logout destroys the application's private
                        // session objects.
                        self.drop_session_objects(slot, "C_Logout", |o| {
                            o.slot == slot && o.private
                        });
                        Ok(P::Done)
                    }
                    None => Err(CKR_USER_NOT_LOGGED_IN),
                }
            }
            R::FindObjects { session, template } => self.find(session, &template),
            R::GetAttributeValue {
                session,
                object,
                types,
            } => match self.session_object(session, object)? {
                Lookup::Seen(o) => self.session_object_attributes(session, &o, &types),
                Lookup::Hidden => Err(CKR_OBJECT_HANDLE_INVALID),
                Lookup::No => self.get_attributes(session, object, &types),
            },
            R::SetAttributeValue {
                session,
                object,
                template,
            } => {
                match self.session_object(session, object)? {
                    Lookup::Seen(o) => {
                        return self.set_session_object_attributes(object, &o, &template)
                    }
                    Lookup::Hidden => return Err(CKR_OBJECT_HANDLE_INVALID),
                    Lookup::No => {}
                }
                if let Some(rv) = self.job_refusal(
                    session,
                    object,
                    "C_SetAttributeValue",
                    CKR_ACTION_PROHIBITED,
                    CKR_OBJECT_HANDLE_INVALID,
                )? {
                    return Err(rv);
                }
                if let Some(found) = self.cert_of(session, object)? {
                    let (ctx, cert) = found?;
                    return self.set_cert_attributes(session, &ctx, &cert, &template);
                }
                self.set_attributes(session, object, &template)
            }
            R::CopyObject {
                session, object, ..
            } => {
                match self.session_object(session, object)? {
                    // Session objects report CKA_COPYABLE=FALSE.
                    Lookup::Seen(_) => return Err(CKR_ACTION_PROHIBITED),
                    Lookup::Hidden => return Err(CKR_OBJECT_HANDLE_INVALID),
                    Lookup::No => {}
                }
                if let Some(rv) = self.job_refusal(
                    session,
                    object,
                    "C_CopyObject",
                    CKR_ACTION_PROHIBITED,
                    CKR_OBJECT_HANDLE_INVALID,
                )? {
                    return Err(rv);
                }
                if let Some(found) = self.cert_of(session, object)? {
                    let (ctx, cert) = found?;
                    return Err(self.copy_cert(&ctx, &cert));
                }
                // A Keyward key is never copied (design §4 "No side doors").
                let (ctx, obj) = self.visible_object(session, object, CKR_OBJECT_HANDLE_INVALID)?;
                self.deny(
                    &ctx.principal,
                    "C_CopyObject",
                    Some(obj.version_name()),
                    CKR_ACTION_PROHIBITED,
                    "Keyward keys are not copyable",
                );
                Err(CKR_ACTION_PROHIBITED)
            }
            R::DestroyObject { session, object } => {
                match self.session_object(session, object)? {
                    Lookup::Seen(_) => return self.destroy_session_object(session, object),
                    Lookup::Hidden => return Err(CKR_OBJECT_HANDLE_INVALID),
                    Lookup::No => {}
                }
                if let Some(rv) = self.job_refusal(
                    session,
                    object,
                    "C_DestroyObject",
                    CKR_ACTION_PROHIBITED,
                    CKR_OBJECT_HANDLE_INVALID,
                )? {
                    return Err(rv);
                }
                if let Some(found) = self.cert_of(session, object)? {
                    let (ctx, cert) = found?;
                    return self.destroy_cert(session, &ctx, &cert);
                }
                self.destroy(session, object)
            }
            R::GetObjectSize { session, object } => {
                match self.session_object(session, object)? {
                    Lookup::Seen(_) => return Ok(P::Size(None)),
                    Lookup::Hidden => return Err(CKR_OBJECT_HANDLE_INVALID),
                    Lookup::No => {}
                }
                if let Some(found) = self.cert_of(session, object)? {
                    found?;
                    return Ok(P::Size(None));
                }
                self.visible_object(session, object, CKR_OBJECT_HANDLE_INVALID)?;
                Ok(P::Size(None))
            }
            R::CreateObject { session, template } => {
                if session_objects::wants_session_object(&template) {
                    return self.create_session_object(session, &template);
                }
                self.create_object(session, &template)
            }
            R::GenerateKey {
                session,
                mechanism,
                template,
            } => {
                if session_objects::wants_session_object(&template) {
                    return self.generate_session_objects(session, &mechanism, None, &template);
                }
                self.generate(session, &mechanism, None, &template)
            }
            R::GenerateKeyPair {
                session,
                mechanism,
                public_template,
                private_template,
            } => {
                // A session private key comes with a session public key.
                if session_objects::wants_session_object(&private_template) {
                    return self.generate_session_objects(
                        session,
                        &mechanism,
                        Some(&public_template),
                        &private_template,
                    );
                }
                self.generate(
                    session,
                    &mechanism,
                    Some(&public_template),
                    &private_template,
                )
            }
            R::WrapKey {
                session,
                mechanism,
                wrapping_key,
                key,
            } => self.wrap_key(session, &mechanism, wrapping_key, key),
            R::UnwrapKey {
                session,
                mechanism,
                unwrapping_key,
                wrapped,
                template,
            } => self.unwrap_key(
                session,
                &mechanism,
                unwrapping_key,
                wrapped.as_slice(),
                &template,
            ),
            R::DeriveKey {
                session, base_key, ..
            } => {
                match self.session_object(session, base_key)? {
                    // No derivation mechanism is offered (CKA_DERIVE is FALSE).
                    Lookup::Seen(_) => return Err(CKR_MECHANISM_INVALID),
                    Lookup::Hidden => return Err(CKR_KEY_HANDLE_INVALID),
                    Lookup::No => {}
                }
                let (ctx, obj) = self.visible_object(session, base_key, CKR_KEY_HANDLE_INVALID)?;
                self.deny(
                    &ctx.principal,
                    "C_DeriveKey",
                    Some(obj.version_name()),
                    CKR_MECHANISM_INVALID,
                    "no derivation from Keyward keys",
                );
                Err(CKR_MECHANISM_INVALID)
            }
            R::OperationInit {
                op,
                session,
                mechanism,
                key,
            } => {
                if let Some(h) = key {
                    match self.session_object(session, h)? {
                        Lookup::Seen(o) => {
                            return self.init_session_object(op, session, &mechanism, h, &o)
                        }
                        Lookup::Hidden => return Err(CKR_KEY_HANDLE_INVALID),
                        Lookup::No => {}
                    }
                    if let Some(rv) = self.job_refusal(
                        session,
                        h,
                        init_action(op),
                        CKR_KEY_FUNCTION_NOT_PERMITTED,
                        CKR_KEY_HANDLE_INVALID,
                    )? {
                        return Err(rv);
                    }
                }
                self.init(op, session, &mechanism, key)
            }
            R::OperationOneShot { op, session, data } => {
                self.finish(op, session, None, Some(data.as_slice()))
            }
            R::OperationUpdate { op, session, data } => {
                let out = self.append(op, session, data.as_slice())?;
                Ok(P::Data(Blob::new(out)))
            }
            R::OperationFinal { op, session } => self.finish(op, session, None, None),
            R::Verify {
                session,
                data,
                signature,
            } => self.finish(
                Operation::Verify,
                session,
                Some(signature.as_slice()),
                Some(data.as_slice()),
            ),
            R::VerifyFinal { session, signature } => {
                self.finish(Operation::Verify, session, Some(signature.as_slice()), None)
            }
            R::OperationCancel { op, session } => {
                self.session_mut(session)?.ops.remove(&op);
                Ok(P::Done)
            }
            R::GenerateRandom { session, len } => self.random(session, len),
        }
    }

    // ------------------------------------------------------------------ limits

    /// Who this connection's uses are counted against, as `principal`.
    fn holder(&self, principal: &Principal) -> Holder {
        Holder::new(self.caller.peer_uid, &principal.member.to_string())
    }

    /// Takes `n` of `resource` for `principal` on this connection's uid (design §9).
    fn charge(
        &self,
        resource: Resource,
        principal: &Principal,
        n: usize,
    ) -> Result<Charge, Refused> {
        self.svc
            .limits()
            .charge(resource, &self.holder(principal), n)
    }

    /// Audits a refusal by a limit of the request being answered; returns `rv`.
    fn deny_limit(
        &self,
        principal: &Principal,
        resource: Option<String>,
        rv: u64,
        refused: Refused,
    ) -> u64 {
        self.deny(principal, self.current, resource, rv, &refused.to_string());
        rv
    }

    /// An operation's charge and its (empty) input buffer, or `CKR_DEVICE_MEMORY` (audited).
    fn operation_charge(
        &self,
        principal: &Principal,
        resource: Option<String>,
    ) -> Result<(Charge, Buffer), u64> {
        let limits = self.svc.limits();
        let holder = self.holder(principal);
        limits
            .charge(Resource::Operations, &holder, 1)
            .and_then(|c| Ok((c, Buffer::new(limits, &holder)?)))
            .map_err(|r| self.deny_limit(principal, resource, CKR_DEVICE_MEMORY, r))
    }

    /// A key generation's charge (held while the token generates), or `CKR_DEVICE_MEMORY`
    /// (audited).
    fn generation_charge(&self, principal: &Principal, ring: &str) -> Result<Charge, u64> {
        self.charge(Resource::KeyGenerations, principal, 1)
            .map_err(|r| self.deny_limit(principal, Some(ring.to_owned()), CKR_DEVICE_MEMORY, r))
    }

    // ------------------------------------------------------------------ audit

    fn record(
        &self,
        principal: &Principal,
        action: &str,
        resource: Option<String>,
        outcome: Outcome,
        rv: u64,
        detail: Option<String>,
    ) -> Result<(), u64> {
        let rec = NewRecord {
            time_ms: self.svc.clock.now_ms(),
            principal: principal.member.to_string(),
            peer_pid: self.caller.peer_pid,
            peer_uid: self.caller.peer_uid,
            instance: self.caller.instance.clone(),
            action: action.to_owned(),
            resource,
            outcome,
            rv,
            detail,
            request_id: None,
        };
        self.svc.audit.submit(rec).map_err(|e| {
            // A uid over its audit rate is logged (rate-limited) by the writer.
            if !matches!(e, AuditUnavailable::RateLimited(_)) {
                tracing::error!(error = %e, action, "audit record refused: failing closed");
            }
            e.ck_rv()
        })
    }

    /// Records a denial (the denial stands whether or not the record could be written).
    fn deny(
        &self,
        principal: &Principal,
        action: &str,
        resource: Option<String>,
        rv: u64,
        why: &str,
    ) {
        let _ = self.record(
            principal,
            action,
            resource,
            Outcome::Denied,
            rv,
            Some(why.to_owned()),
        );
    }

    /// `CKR_DEVICE_ERROR` while the audit log cannot be written; the refusal is recorded
    /// (as the instance's principal) when the log is writable again.
    fn healthy(&self) -> Result<(), u64> {
        if self.svc.audit.is_healthy() {
            Ok(())
        } else {
            let base = self.inst.lock().base.clone();
            Err(self.audit_down(&base, self.current))
        }
    }

    /// Refuses an operation for want of an audit log: its denial goes to the writer's
    /// outage list (design §6: every denial is recorded); answers `CKR_DEVICE_ERROR`.
    fn audit_down(&self, principal: &Principal, action: &str) -> u64 {
        tracing::error!(action, "audit log unavailable: operation refused");
        self.svc.audit.refuse(NewRecord {
            time_ms: self.svc.clock.now_ms(),
            principal: principal.member.to_string(),
            peer_pid: self.caller.peer_pid,
            peer_uid: self.caller.peer_uid,
            instance: self.caller.instance.clone(),
            action: action.to_owned(),
            resource: None,
            outcome: Outcome::Denied,
            rv: CKR_DEVICE_ERROR,
            detail: Some("the audit log could not be written".into()),
            request_id: None,
        });
        CKR_DEVICE_ERROR
    }

    // ------------------------------------------------------------------ slots, login

    /// The instance's slot list (design §4): every ring its pre-login principal sees, plus
    /// every configured ring (looking empty if it is not seen). The list replaces the
    /// instance's slot table (the module sends its whole fixed list on each connection).
    /// More than `[daemon] max_unseen_configured_rings` distinct configured rings the
    /// principal does not see is `CKR_ARGUMENTS_BAD` (audited, logged): the rings it sees
    /// are not counted (an organisation admin sees thousands).
    fn list_slots(&mut self, configured: &[ConfiguredToken]) -> Result<Vec<SlotDescription>, u64> {
        let state = self.svc.published.current();
        let base = self.inst.lock().base.clone();
        let cap = self.svc.unseen_ring_cap.load(Ordering::Relaxed);
        let mut table: HashMap<SlotId, SlotEntry> = HashMap::new();
        let mut listed: Vec<(SlotId, String, String, String)> = Vec::new();
        for ring in state.policy.visible_key_rings(&base) {
            let Some(r) = state.catalog.rings.get(&ring) else {
                continue;
            };
            let name = ResourceName::KeyRing(ring.clone()).to_string();
            let slot = SlotId(u64::from(r.slot_id));
            if table
                .insert(
                    slot,
                    SlotEntry {
                        ring: name.clone(),
                        label: r.token_label.clone(),
                        serial: r.serial.clone(),
                    },
                )
                .is_none()
            {
                listed.push((slot, name, r.token_label.clone(), r.serial.clone()));
            }
        }
        let mut unseen = 0usize;
        for c in configured {
            // The slot id and serial come from the name as written (the module computes the
            // same); what is kept, shown and audited is cut (design §9: no ring name is
            // longer than MAX_CONFIGURED_RING bytes, so a longer one only looks absent).
            let (slot, serial) = ring_identity(&c.ring);
            if table.contains_key(&slot) {
                continue;
            }
            unseen += 1;
            if unseen > cap {
                self.refuse_slot_list(&base, configured.len(), cap);
                return Err(CKR_ARGUMENTS_BAD);
            }
            // Invisible or missing: the configured label, the same flags, empty.
            let ring = crate::audit::cap(&c.ring, MAX_CONFIGURED_RING).into_owned();
            let label = crate::audit::cap(&c.label, MAX_CONFIGURED_LABEL).into_owned();
            table.insert(
                slot,
                SlotEntry {
                    ring: ring.clone(),
                    label: label.clone(),
                    serial: serial.clone(),
                },
            );
            listed.push((slot, ring, label, serial));
        }
        let mut inst = self.inst.lock();
        let out = listed
            .into_iter()
            .map(|(slot, ring, label, serial)| SlotDescription {
                slot,
                ring,
                token: token_info(&label, &serial, inst.sessions.get(&slot).copied()),
            })
            .collect();
        inst.slots = table;
        Ok(out)
    }

    /// Audits and logs (at most every `server::LIMIT_LOG_EVERY`) a slot list refused by
    /// `[daemon] max_unseen_configured_rings`.
    fn refuse_slot_list(&self, base: &Principal, named: usize, cap: usize) {
        self.deny(
            base,
            "C_GetSlotList",
            None,
            CKR_ARGUMENTS_BAD,
            &format!(
                "limit reached: more than {cap} configured key rings the caller does not see \
                 ([daemon] max_unseen_configured_rings)"
            ),
        );
        let now = std::time::Instant::now();
        let mut log = self.svc.unseen_log.lock();
        match log.0 {
            Some(at) if now.duration_since(at) < crate::daemon::server::LIMIT_LOG_EVERY => {
                log.1 += 1
            }
            _ => {
                tracing::warn!(
                    limit = "max_unseen_configured_rings",
                    cap,
                    named,
                    uid = self.caller.peer_uid,
                    pid = self.caller.peer_pid,
                    principal = %base.member,
                    suppressed = log.1,
                    "refused by [daemon] max_unseen_configured_rings = {cap}: a slot list \
                     naming more configured key rings the caller does not see"
                );
                *log = (Some(now), 0);
            }
        }
    }

    /// The instance's entry for `slot`; a ring the pre-login principal sees is added if the
    /// list was made before it appeared (or by an earlier keywardd).
    fn slot_entry(&self, slot: SlotId) -> Result<SlotEntry, u64> {
        let mut inst = self.inst.lock();
        if let Some(e) = inst.slots.get(&slot) {
            return Ok(e.clone());
        }
        let state = self.svc.published.current();
        let u = u32::try_from(slot.0).map_err(|_| CKR_SLOT_ID_INVALID)?;
        let r = state.catalog.ring_by_slot(u).ok_or(CKR_SLOT_ID_INVALID)?;
        if !state.policy.sees_key_ring(&inst.base, &r.name) {
            return Err(CKR_SLOT_ID_INVALID);
        }
        let e = SlotEntry {
            ring: ResourceName::KeyRing(r.name.clone()).to_string(),
            label: r.token_label.clone(),
            serial: r.serial.clone(),
        };
        inst.slots.insert(slot, e.clone());
        Ok(e)
    }

    fn slot_ctx(&self, slot: SlotId, state: &State) -> Result<SlotCtx, u64> {
        let entry = self.slot_entry(slot)?;
        let (principal, login) = self.inst.lock().principal(slot);
        let ring = parse_ring(&entry.ring).filter(|r| {
            state.catalog.rings.contains_key(r) && state.policy.sees_key_ring(&principal, r)
        });
        Ok(SlotCtx {
            principal,
            login,
            ring,
            ring_name: entry.ring,
        })
    }

    fn login(
        &mut self,
        slot: SlotId,
        user: UserType,
        pin: Option<&[u8]>,
        auth: KeyAuthenticator<'_>,
    ) -> Result<Pkcs11Response, u64> {
        let entry = self.slot_entry(slot)?;
        let so = match user {
            UserType::User => false,
            UserType::So => true,
            UserType::ContextSpecific => return Err(CKR_OPERATION_NOT_INITIALIZED),
        };
        {
            let inst = self.inst.lock();
            if let Some(l) = inst.logins.get(&slot) {
                return Err(if l.so == so {
                    CKR_USER_ALREADY_LOGGED_IN
                } else {
                    CKR_USER_ANOTHER_ALREADY_LOGGED_IN
                });
            }
        }
        self.healthy()?;
        let base = self.inst.lock().base.clone();
        let who = if so { "CKU_SO" } else { "CKU_USER" };
        let principal = match pin {
            None | Some([]) => Ok(base.clone()),
            Some(bytes) => match std::str::from_utf8(bytes) {
                Ok(key) => auth(key),
                Err(_) => Err(CKR_PIN_INCORRECT),
            },
        };
        let principal = match principal {
            Ok(p) => p,
            Err(rv) => {
                self.deny(
                    &base,
                    "C_Login",
                    Some(entry.ring.clone()),
                    rv,
                    &format!("{who}: service-account key refused"),
                );
                return Err(rv);
            }
        };
        if so {
            let state = self.svc.published.current();
            let allowed = parse_ring(&entry.ring).is_some_and(|r| {
                state
                    .policy
                    .authorize(
                        &principal,
                        Permission::KeyRingsSetIamPolicy,
                        &ResourceName::KeyRing(r),
                    )
                    .allowed
            });
            if !allowed {
                self.deny(
                    &principal,
                    "C_Login",
                    Some(entry.ring.clone()),
                    CKR_PIN_INCORRECT,
                    "CKU_SO without kms.keyRings.setIamPolicy on the ring",
                );
                return Err(CKR_PIN_INCORRECT);
            }
        }
        self.record(
            &principal,
            "C_Login",
            Some(entry.ring),
            Outcome::Allowed,
            0,
            Some(who.to_owned()),
        )?;
        self.inst
            .lock()
            .logins
            .insert(slot, Login { principal, so });
        Ok(Pkcs11Response::Done)
    }

    // ------------------------------------------------------------------ sessions

    fn session(&self, id: SessionId) -> Result<&Session, u64> {
        self.sessions.get(&id.0).ok_or(CKR_SESSION_HANDLE_INVALID)
    }

    fn session_mut(&mut self, id: SessionId) -> Result<&mut Session, u64> {
        self.sessions
            .get_mut(&id.0)
            .ok_or(CKR_SESSION_HANDLE_INVALID)
    }

    fn close_session(&mut self, id: u64) {
        let Some(s) = self.sessions.remove(&id) else {
            return;
        };
        let principal = {
            let mut inst = self.inst.lock();
            let p = inst.principal(s.slot).0;
            inst.session_closed(s.slot, s.rw);
            p
        };
        self.drop_owned_session_objects(s.slot, id);
        if s.finds > 0 || s.reads > 0 {
            let ring = self.inst.lock().slots.get(&s.slot).map(|e| e.ring.clone());
            let _ = self.record(
                &principal,
                "session.reads",
                ring,
                Outcome::Allowed,
                0,
                Some(format!(
                    "C_FindObjects={} C_GetAttributeValue={}",
                    s.finds, s.reads
                )),
            );
        }
    }

    // ------------------------------------------------------------------ objects

    /// Every object the session's principal sees; with `label`, only keys whose objects may
    /// carry that `CKA_LABEL` are looked at (issue 9: a find by label among 1,000 keys
    /// checks visibility and builds objects for the candidates only, not for every key).
    fn objects<'s>(
        &self,
        view: &'s View,
        ctx: &SlotCtx,
        label: Option<&[u8]>,
    ) -> Vec<ObjectView<'s>> {
        let Some(ring) = &ctx.ring else {
            return Vec::new();
        };
        let state = &view.state;
        let mut names: Vec<CryptoKeyName> = match label {
            Some(label) => state
                .catalog
                .keys
                .values()
                .filter(|k| &k.name.ring == ring && label_may_match(view, k, label))
                .map(|k| k.name.clone())
                .filter(|n| state.policy.sees_key(&ctx.principal, n))
                .collect(),
            None => state.policy.visible_keys(&ctx.principal, ring),
        };
        // Creation order (design §9 "Squatting"): the oldest key holding a name comes first,
        // whatever the keys' names.
        names.sort_by_key(|n| state.catalog.keys.get(n).map_or(i64::MAX, |k| k.seq));
        let mut out = Vec::new();
        for name in names {
            let Some(key) = state.catalog.keys.get(&name) else {
                continue;
            };
            let perms = state
                .policy
                .effective_permissions(&ctx.principal, &ResourceName::CryptoKey(name.clone()));
            for v in key.versions.iter().filter(|v| {
                matches!(
                    v.state,
                    VersionState::Enabled | VersionState::DestroyScheduled
                )
            }) {
                out.extend(
                    objects::version_objects(key, v, perms, self.extra(view, &name, v.version))
                        .into_iter()
                        .filter(|o| o.shown())
                        .filter(|o| !o.id.half.is_private() || ctx.login == Some(false)),
                );
            }
        }
        out
    }

    /// The object a handle names, if the session's principal sees it now (any state, so
    /// `*Init` can tell a disabled version); `invalid` otherwise.
    fn resolve<'s>(
        &self,
        view: &'s View,
        ctx: &SlotCtx,
        handle: ObjectHandle,
        invalid: u64,
    ) -> Result<ObjectView<'s>, u64> {
        let state = &view.state;
        let known = self.inst.lock().object(handle);
        let id = match known {
            Some(id) => id,
            None => self.adopt(view, ctx, handle).ok_or(invalid)?,
        };
        let ring = ctx.ring.as_ref().ok_or(invalid)?;
        if &id.key.ring != ring {
            return Err(invalid);
        }
        if !state.policy.sees_key(&ctx.principal, &id.key) {
            // A handle the instance was given while it saw the key (a binding was revoked
            // since, or another principal's session found it): the caller is told the
            // object is absent, the audit log that it was refused (design §4, §6).
            self.deny(
                &ctx.principal,
                self.current,
                Some(id.version_name()),
                invalid,
                "not visible to the caller",
            );
            return Err(invalid);
        }
        if id.half.is_private() && ctx.login != Some(false) {
            return Err(invalid);
        }
        let key = state.catalog.keys.get(&id.key).ok_or(invalid)?;
        let version = key
            .versions
            .iter()
            .find(|v| v.version == id.version)
            .ok_or(invalid)?;
        let perms = state
            .policy
            .effective_permissions(&ctx.principal, &ResourceName::CryptoKey(id.key.clone()));
        let obj = objects::version_objects(
            key,
            version,
            perms,
            self.extra(view, &id.key, version.version),
        )
        .into_iter()
        .find(|o| o.id == id)
        .ok_or(invalid)?;
        // A destroyed object is gone; a disabled version's objects stay (for *Init's code).
        let gone = matches!(
            version.state,
            VersionState::Destroyed | VersionState::DestroyScheduled
        ) || (id.half == objects::Half::Public
            && obj.public_half == Some(PublicHalf::Destroyed));
        if gone && !obj.shown() {
            return Err(invalid);
        }
        Ok(obj)
    }

    /// A handle this instance's table does not know (design §4: one given by an earlier
    /// keywardd, which derived it from the same instance secret): the object the session's
    /// principal sees now whose handle it is, if any; certificates and import jobs the
    /// principal sees get their handles too (as a find would give them).
    fn adopt(&self, view: &View, ctx: &SlotCtx, handle: ObjectHandle) -> Option<ObjectKey> {
        if self.inst.lock().known(handle) {
            return None;
        }
        let found = self
            .objects(view, ctx, None)
            .into_iter()
            .map(|o| o.id)
            .find(|id| self.inst.lock().derived(id) == handle.0);
        if let Some(id) = found {
            let given = self.inst.lock().handle(&id);
            return (given == handle).then_some(id);
        }
        let _ = self.find_certs(view, ctx, &[]);
        let _ = self.find_jobs(view, ctx, &[]);
        None
    }

    /// [`ClientConnection::adopt`] for a handle used in `session`, if the instance's table
    /// does not know it.
    fn adopt_in(&self, session: SessionId, handle: ObjectHandle) -> Result<(), u64> {
        if self.inst.lock().known(handle) {
            return Ok(());
        }
        let slot = self.session(session)?.slot;
        let view = self.svc.view()?;
        let ctx = self.slot_ctx(slot, &view.state)?;
        let _ = self.adopt(&view, &ctx, handle);
        Ok(())
    }

    /// A visible, ENABLED object (for everything but `*Init`).
    fn visible_object(
        &self,
        session: SessionId,
        handle: ObjectHandle,
        invalid: u64,
    ) -> Result<(SlotCtx, ObjectKey), u64> {
        let slot = self.session(session)?.slot;
        let view = self.svc.view()?;
        let ctx = self.slot_ctx(slot, &view.state)?;
        let obj = self.resolve(&view, &ctx, handle, invalid)?;
        if !obj.shown() {
            return Err(invalid);
        }
        let id = obj.id.clone();
        Ok((ctx, id))
    }

    /// The certificate a handle names, with the slot's view: `None` if the handle names no
    /// certificate, `Some(Err(CKR_OBJECT_HANDLE_INVALID))` if the principal does not see it.
    #[allow(clippy::type_complexity)]
    fn cert_of(
        &self,
        session: SessionId,
        handle: ObjectHandle,
    ) -> Result<Option<Result<(SlotCtx, crate::admin::certs::CertEntry), u64>>, u64> {
        let slot = self.session(session)?.slot;
        self.adopt_in(session, handle)?;
        if self.inst.lock().cert(handle).is_none() {
            return Ok(None);
        }
        let view = self.svc.view()?;
        let ctx = self.slot_ctx(slot, &view.state)?;
        Ok(self
            .resolve_cert(&view, &ctx, handle)
            .map(|r| r.map(|c| c.entry.clone()).map(|c| (ctx, c))))
    }

    fn find(&mut self, session: SessionId, template: &[Attribute]) -> Result<Pkcs11Response, u64> {
        let slot = self.session(session)?.slot;
        self.healthy()?;
        let view = self.svc.view()?;
        let ctx = self.slot_ctx(slot, &view.state)?;
        // A label of another kind matches nothing (`matches` below): any candidate set will do.
        let label = template
            .iter()
            .find(|a| a.ty == CKA_LABEL)
            .map(|a| match &a.value {
                keyward_wire::pkcs11::AttrValue::Bytes(b) => b.as_slice(),
                _ => &[],
            });
        let found: Vec<ObjectKey> = self
            .objects(&view, &ctx, label)
            .into_iter()
            .filter(|o| o.matches(template))
            .map(|o| o.id)
            .collect();
        let mut handles: Vec<ObjectHandle> = {
            let mut inst = self.inst.lock();
            found.iter().map(|k| inst.handle(k)).collect()
        };
        handles.extend(self.find_certs(&view, &ctx, template));
        handles.extend(self.find_jobs(&view, &ctx, template));
        handles.extend(self.find_session_objects(slot, ctx.login, template));
        self.session_mut(session)?.finds += 1;
        Ok(Pkcs11Response::Objects(handles))
    }

    fn get_attributes(
        &mut self,
        session: SessionId,
        handle: ObjectHandle,
        types: &[u64],
    ) -> Result<Pkcs11Response, u64> {
        let slot = self.session(session)?.slot;
        self.healthy()?;
        let view = self.svc.view()?;
        let ctx = self.slot_ctx(slot, &view.state)?;
        if let Some(job) = self.resolve_job(&view, &ctx, handle, CKR_OBJECT_HANDLE_INVALID) {
            let results = self.job_attributes(&job?, types);
            self.session_mut(session)?.reads += 1;
            return Ok(Pkcs11Response::Attributes(results));
        }
        if let Some(cert) = self.resolve_cert(&view, &ctx, handle) {
            let results = self.cert_attributes(&ctx, cert?, types);
            self.session_mut(session)?.reads += 1;
            return Ok(Pkcs11Response::Attributes(results));
        }
        let obj = self.resolve(&view, &ctx, handle, CKR_OBJECT_HANDLE_INVALID)?;
        if !obj.shown() {
            return Err(CKR_OBJECT_HANDLE_INVALID);
        }
        let results: Vec<AttrResult> = types.iter().map(|t| obj.attribute(*t)).collect();
        let hidden = types
            .iter()
            .zip(&results)
            .any(|(t, r)| matches!(r, AttrResult::Sensitive) && *t != CKA_VALUE);
        if hidden {
            self.deny(
                &ctx.principal,
                "C_GetAttributeValue",
                Some(obj.id.version_name()),
                0x11,
                "public value without viewPublicKey or a use permission",
            );
        }
        self.session_mut(session)?.reads += 1;
        Ok(Pkcs11Response::Attributes(results))
    }

    /// What the catalog does not say about one version's objects.
    fn extra<'s>(&self, view: &'s View, key: &CryptoKeyName, version: u64) -> objects::Extra<'s> {
        let generic = view.extras.generic.get(key);
        objects::Extra {
            generic,
            creator: generic.is_some_and(|g| {
                g.creator_instance.is_some() && g.creator_instance == self.caller.instance
            }),
            public_half: view
                .extras
                .public_halves
                .get(&(key.clone(), version))
                .copied(),
        }
    }

    fn random(&mut self, session: SessionId, len: u64) -> Result<Pkcs11Response, u64> {
        let slot = self.session(session)?.slot;
        if len > MAX_RANDOM {
            return Err(CKR_ARGUMENTS_BAD);
        }
        self.healthy()?;
        let state = self.svc.published.current();
        let ctx = self.slot_ctx(slot, &state)?;
        if ctx.ring.is_none() {
            return Err(CKR_RANDOM_NO_RNG);
        }
        let n = usize::try_from(len).map_err(|_| CKR_ARGUMENTS_BAD)?;
        let bytes = self.svc.token.generate_random(n).map_err(|e| {
            tracing::warn!(error = %e, "C_GenerateRandom failed in the token");
            e.ck_rv()
        })?;
        Ok(Pkcs11Response::Data(Blob::new(bytes)))
    }

    // ------------------------------------------------------------------ operations

    fn init(
        &mut self,
        op: Operation,
        session: SessionId,
        mechanism: &keyward_wire::pkcs11::Mechanism,
        key: Option<ObjectHandle>,
    ) -> Result<Pkcs11Response, u64> {
        let s = self.session(session)?;
        if s.ops.contains_key(&op) {
            return Err(CKR_OPERATION_ACTIVE);
        }
        let slot = s.slot;
        let action = init_action(op);
        let view = self.svc.view()?;
        let state = &view.state;
        let ctx = self.slot_ctx(slot, state)?;
        if !self.svc.audit.is_healthy() {
            return Err(self.audit_down(&ctx.principal, action));
        }
        let (Some(handle), Some(permission)) = (key, use_permission(op)) else {
            // C_DigestInit: no key and no IAM gate, but the slot's token must be one the
            // principal sees (design §9: an unbound uid cannot use the token).
            let hash = ops::digest_mechanism(mechanism)?;
            if ctx.ring.is_none() {
                self.deny(
                    &ctx.principal,
                    action,
                    Some(ctx.ring_name.clone()),
                    CKR_MECHANISM_INVALID,
                    "the slot's key ring is absent or not visible to the caller",
                );
                return Err(CKR_MECHANISM_INVALID);
            }
            let (charge, _) = self.operation_charge(&ctx.principal, Some(ctx.ring_name.clone()))?;
            self.record(&ctx.principal, action, None, Outcome::Allowed, 0, None)?;
            self.session_mut(session)?.ops.insert(
                op,
                Active::Digest {
                    hasher: Box::new(Hasher::new(hash)),
                    _charge: charge,
                },
            );
            return Ok(Pkcs11Response::Done);
        };
        let obj = self.resolve(&view, &ctx, handle, CKR_KEY_HANDLE_INVALID)?;
        let resource = Some(obj.id.version_name());
        let refuse = |this: &Self, rv: u64, why: &str| {
            this.deny(&ctx.principal, action, resource.clone(), rv, why);
            Err(rv)
        };
        let mut plan = match ops::plan(op, mechanism, &obj, self.svc.token.mechanisms()) {
            Ok(p) => p,
            Err(rv) => {
                return refuse(
                    self,
                    rv,
                    &format!("mechanism {:#x} not allowed for this key", mechanism.ty),
                )
            }
        };
        if !obj.enabled() {
            return refuse(self, CKR_KEY_FUNCTION_NOT_PERMITTED, "version not ENABLED");
        }
        if ctx.login == Some(true) && obj.id.half.is_private() {
            return refuse(self, CKR_KEY_HANDLE_INVALID, "SO session");
        }
        let d = state.policy.authorize(
            &ctx.principal,
            permission,
            &ResourceName::CryptoKey(obj.id.key.clone()),
        );
        if !d.allowed {
            return refuse(
                self,
                CKR_KEY_FUNCTION_NOT_PERMITTED,
                &format!("needs {permission}"),
            );
        }
        // Design §9: the opposite use permission decides who chooses IVs and which modes are
        // offered (decided on this snapshot, bound to the operation with its plan).
        let other = match op {
            Operation::Encrypt => Some(Permission::UseToDecrypt),
            Operation::Decrypt => Some(Permission::UseToEncrypt),
            // A short-MAC verify is a sign oracle (design §9): it needs useToSign.
            Operation::Verify => Some(Permission::UseToSign),
            _ => None,
        };
        let holds_other = other.is_none_or(|p| {
            state
                .policy
                .authorize(
                    &ctx.principal,
                    p,
                    &ResourceName::CryptoKey(obj.id.key.clone()),
                )
                .allowed
        });
        let token = &self.svc.token;
        let generated = match ops::restrict(op, &mut plan, &mechanism.params, holds_other, |n| {
            token.generate_random(n).map_err(|e| {
                tracing::warn!(error = %e, "cannot draw an IV in the token");
                CKR_DEVICE_ERROR
            })
        }) {
            Ok(g) => g,
            Err(rv) => {
                let why = match (op, rv) {
                    (_, CKR_MECHANISM_PARAM_INVALID) => {
                        "without useToDecrypt the IV or counter block is keywardd's: pass zeros"
                    }
                    (Operation::Encrypt, CKR_KEY_FUNCTION_NOT_PERMITTED) => {
                        "ECB and CBC are not offered without useToDecrypt"
                    }
                    (Operation::Verify, CKR_KEY_FUNCTION_NOT_PERMITTED) => {
                        "a truncated MAC is verified only with useToSign"
                    }
                    (_, CKR_KEY_FUNCTION_NOT_PERMITTED) => {
                        "CTR is not offered without useToEncrypt"
                    }
                    _ => "cannot generate an IV",
                };
                return refuse(self, rv, why);
            }
        };
        let (charge, buf) = self.operation_charge(&ctx.principal, resource.clone())?;
        let granted = d.granted_by.map(|b| {
            if generated.is_some() {
                format!("granted by {b}; IV generated by keywardd")
            } else {
                format!("granted by {b}")
            }
        });
        self.record(
            &ctx.principal,
            action,
            resource,
            Outcome::Allowed,
            0,
            granted,
        )?;
        let active = Active::Keyed {
            object: obj.id.version_name(),
            plan,
            token_id: obj.token_id().to_vec(),
            session_object: None,
            buf,
            stream: None,
            _charge: charge,
        };
        self.session_mut(session)?.ops.insert(op, active);
        Ok(match generated {
            Some(iv) => Pkcs11Response::GeneratedIv(Blob::new(iv)),
            None => Pkcs11Response::Done,
        })
    }

    /// Adds input to the active `op` (an `*Update`) and returns what it outputs now. Over a
    /// limit of design §9 the operation ends with `CKR_DEVICE_MEMORY` (audited); any other
    /// failure ends it too.
    fn append(&mut self, op: Operation, session: SessionId, data: &[u8]) -> Result<Vec<u8>, u64> {
        let token = Arc::clone(&self.svc.token);
        let s = self.session_mut(session)?;
        let slot = s.slot;
        let active = s.ops.get_mut(&op).ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        let (result, object) = match active {
            Active::Digest { hasher, .. } => {
                hasher.update(data);
                (Ok(Vec::new()), None)
            }
            Active::Keyed {
                buf,
                object,
                plan,
                stream,
                token_id,
                session_object,
                ..
            } => {
                let stream = stream.get_or_insert_with(|| Box::new(Stream::of(op, plan)));
                let target = match session_object {
                    Some(o) => ops::KeyRef::Session(*o),
                    None => ops::KeyRef::Id(token_id),
                };
                let r = match &mut **stream {
                    Stream::Whole => buf.extend(data).map(|()| Vec::new()).map_err(Fail::Limit),
                    Stream::Hashed { hasher, .. } => {
                        hasher.update(data);
                        Ok(Vec::new())
                    }
                    Stream::Blocks(chain) => {
                        stream_part(&token, op, plan, chain, buf, target, data)
                    }
                };
                (r, Some(object.clone()))
            }
        };
        if result.is_err() {
            s.ops.remove(&op);
        }
        result.map_err(|fail| match fail {
            Fail::Rv(rv) => {
                tracing::debug!(?object, rv, "operation part failed");
                rv
            }
            Fail::Limit(r) => {
                let principal = self.inst.lock().principal(slot).0;
                self.deny_limit(&principal, object, CKR_DEVICE_MEMORY, r)
            }
        })
    }

    /// Ends the active `op` and returns its last output: a one-shot call (`last` is its
    /// whole input) runs the mechanism itself over it, nothing buffered; a `*Final` runs it
    /// over what an update left (the buffered input, a block mode's held-back bytes, or a
    /// streamed hash's digest).
    fn finish(
        &mut self,
        op: Operation,
        session: SessionId,
        signature: Option<&[u8]>,
        last: Option<&[u8]>,
    ) -> Result<Pkcs11Response, u64> {
        if let Some(data) = last {
            // A one-shot call after updates (PKCS#11 forbids it; SoftHSM2 takes it): as an
            // update, then the final.
            if matches!(
                self.session_mut(session)?.ops.get(&op),
                Some(
                    Active::Digest { .. }
                        | Active::Keyed {
                            stream: Some(_),
                            ..
                        }
                )
            ) {
                self.append(op, session, data)?;
                return self.finish(op, session, signature, None);
            }
        }
        let s = self.session_mut(session)?;
        let active = s.ops.remove(&op).ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        match active {
            Active::Digest { hasher, .. } => Ok(Pkcs11Response::Data(Blob::new(hasher.finish()))),
            Active::Keyed {
                object,
                plan,
                token_id,
                session_object,
                buf,
                stream,
                ..
            } => {
                let target = match session_object {
                    Some(o) => ops::KeyRef::Session(o),
                    None => ops::KeyRef::Id(&token_id),
                };
                let out = match stream.map(|s| *s) {
                    None | Some(Stream::Whole) => ops::run_on(
                        &self.svc.token,
                        op,
                        &plan,
                        target,
                        last.unwrap_or(buf.as_slice()),
                        signature,
                    ),
                    Some(Stream::Hashed {
                        hasher,
                        last,
                        prefix,
                    }) => {
                        let digest = hasher.finish();
                        let data = [prefix.unwrap_or_default(), &digest[..]].concat();
                        ops::run_on(&self.svc.token, op, &last, target, &data, signature)
                    }
                    Some(Stream::Blocks(chain)) => {
                        let held = buf.as_slice();
                        if !chain.final_needs_token(held.len()) {
                            Ok(ops::Outcome::Data(Vec::new()))
                        } else if !chain.counter_fits(held.len()) {
                            Err(CKR_DATA_LEN_RANGE)
                        } else {
                            let last = Plan {
                                mech: chain.last(),
                                ..plan
                            };
                            ops::run_on(&self.svc.token, op, &last, target, held, signature)
                        }
                    }
                };
                // The buffer (and its charge) goes here; it zeroises itself.
                drop(buf);
                match out {
                    Ok(ops::Outcome::Data(d)) => Ok(Pkcs11Response::Data(Blob::new(d))),
                    Ok(ops::Outcome::Verified) => Ok(Pkcs11Response::Done),
                    Err(rv) => {
                        tracing::debug!(%object, rv, "operation failed");
                        Err(if rv == CKR_KEY_HANDLE_INVALID {
                            CKR_DEVICE_ERROR
                        } else {
                            rv
                        })
                    }
                }
            }
        }
    }
}

/// Why an operation's update failed.
enum Fail {
    /// The token or a check refused it.
    Rv(u64),
    /// A limit of design §9.
    Limit(Refused),
}

/// One update of an AES block mode (see [`stream`]): buffers `data`, runs the whole blocks
/// that are ready as one single-part token call chained from `chain`, advances the chain,
/// and drops what was processed from `buf`.
fn stream_part(
    token: &keyward_token::Token,
    op: Operation,
    plan: &Plan,
    chain: &mut Chain,
    buf: &mut Buffer,
    target: ops::KeyRef<'_>,
    data: &[u8],
) -> Result<Vec<u8>, Fail> {
    let held = buf.as_slice().len();
    let n = chain.ready(op, held + data.len(), data.len());
    if n == 0 {
        buf.extend(data).map_err(Fail::Limit)?;
        return Ok(Vec::new());
    }
    if !chain.counter_fits(n) {
        return Err(Fail::Rv(CKR_DATA_LEN_RANGE));
    }
    let part = Plan {
        mech: chain.middle(),
        ..plan.clone()
    };
    // Nothing held back: the part comes straight from the request and only the rest is
    // buffered (a stream of whole-block updates buffers nothing).
    if held > 0 {
        buf.extend(data).map_err(Fail::Limit)?;
    }
    let input = if held == 0 {
        &data[..n]
    } else {
        &buf.as_slice()[..n]
    };
    let out = match ops::run_on(token, op, &part, target, input, None).map_err(Fail::Rv)? {
        ops::Outcome::Data(d) => d,
        ops::Outcome::Verified => Vec::new(),
    };
    chain.advance(op, input, &out);
    if held == 0 {
        buf.extend(&data[n..]).map_err(Fail::Limit)?;
    } else {
        buf.consume(n);
    }
    Ok(out)
}
