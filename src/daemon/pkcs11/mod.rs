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
//! rebuilt). Everything else reads the published state only (generic keys' client
//! `CKA_ID`/`CKA_LABEL` and flags, kept public halves, certificates and import jobs are in
//! its catalog): a call that leaves the store unchanged never takes the admin mutex.
//!
//! Lock order: the attached `AdminService` (only to create, destroy or rename), then
//! `Pkcs11Service::instances`, then one `InstanceState` mutex; none but the first is held
//! across a token call or an authentication.

pub mod byok;
pub mod certs;
pub mod ck;
pub mod create;
pub mod ctl;
pub mod error;
pub mod export;
mod find;
pub mod gate;
pub mod instance;
mod manage;
pub mod objects;
mod operation;
pub mod ops;
mod record;
mod session;
pub mod session_objects;
pub mod stream;
pub mod unwrap;

use crate::admin::AdminService;
use crate::audit::writer::AuditWriter;
use crate::catalog::{Published, State};
use crate::context::{Caller, Clock};
use crate::daemon::limits::{Buffer, Charge, Limits};
use crate::policy::{KeyRingName, Principal};
use ck::*;
pub use error::P11Error;
use instance::InstanceState;
use keyward_token::Token;
use keyward_wire::pkcs11::{Attribute, Operation, Pkcs11Request, Pkcs11Response, SlotId};
use ops::Plan;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use stream::{Hasher, Stream};

/// A `CK_ULONG` value as a template carries it.
pub type Ulong = u64;

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
fn oversized_strings(req: &Pkcs11Request) -> Result<(), P11Error> {
    use keyward_wire::pkcs11::AttrValue;
    use Pkcs11Request as R;
    let check = |t: &[Attribute]| {
        let over = t.iter().any(|a| {
            matches!(a.ty, CKA_LABEL | CKA_ID)
                && matches!(&a.value, AttrValue::Bytes(b) if b.len() > MAX_LABEL_OR_ID)
        });
        if over {
            Err(P11Error::new(
                keyward_wire::rv::CKR_ATTRIBUTE_VALUE_INVALID,
                "a CKA_LABEL or CKA_ID over MAX_LABEL_OR_ID bytes",
            ))
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
pub type KeyAuthenticator<'a> = &'a dyn Fn(&str) -> Result<Principal, P11Error>;

/// What every client connection shares.
pub struct Pkcs11Service {
    published: Published,
    token: Arc<Token>,
    audit: Arc<AuditWriter>,
    clock: Arc<dyn Clock>,
    instances: Mutex<Instances>,
    admin: OnceLock<Arc<Mutex<AdminService>>>,
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

/// One request's view: the published state (policy and catalog, generic keys, certificates
/// and import jobs included), read once per request.
struct View {
    state: Arc<State>,
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

    /// The published state. Never the store nor the admin handler's mutex: a call that
    /// changes nothing does not wait for an admin request (design §4).
    fn view(&self) -> Result<View, P11Error> {
        Ok(View {
            state: self.published.current(),
        })
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
        R::OpenRing => "ring",
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

    /// Answers one request; an error's [`P11Error::rv`] is the CK_RV the C_ function returns
    /// (the only part sent back), its cause and site are logged here at debug level. The
    /// router's arms name the functions that answer: slots, sessions and login in
    /// `session.rs`, finds and attributes in `find.rs`, object management in `manage.rs`,
    /// operations in `operation.rs`.
    pub fn handle(
        &mut self,
        req: Pkcs11Request,
        auth: KeyAuthenticator<'_>,
    ) -> Result<Pkcs11Response, P11Error> {
        self.current = request_action(&req);
        let answer = self.route(req, auth);
        if let Err(e) = &answer {
            // Only the code goes back; the cause stays here (never key material or a PIN).
            tracing::debug!(
                action = self.current,
                rv = format_args!("{:#x}", e.rv()),
                cause = e.cause(),
                at = %e.at(),
                "PKCS#11 call failed"
            );
        }
        answer
    }

    /// The router: one arm per request, naming the function that answers it.
    fn route(
        &mut self,
        req: Pkcs11Request,
        auth: KeyAuthenticator<'_>,
    ) -> Result<Pkcs11Response, P11Error> {
        use Pkcs11Request as R;
        use Pkcs11Response as P;
        oversized_strings(&req)?;
        match req {
            R::Ping => Ok(P::Pong),
            // The connection's transport answers it (`server.rs`), never the service.
            R::OpenRing => Err(P11Error::new(
                CKR_FUNCTION_NOT_SUPPORTED,
                "OpenRing is answered by the connection, not the service",
            )),
            R::ListSlots { configured } => self.list_slots(&configured).map(P::Slots),
            R::GetTokenInfo { slot } => self.get_token_info(slot),
            R::GetMechanismList { slot } => self.mechanism_list(slot),
            R::GetMechanismInfo { slot, mechanism } => self.mechanism_info(slot, mechanism),
            R::OpenSession { slot, read_write } => self.open_session(slot, read_write),
            R::CloseSession { session } => self.close(session),
            R::Login { slot, user, pin } => {
                self.login(slot, user, pin.as_ref().map(|p| p.expose_secret()), auth)
            }
            R::Logout { slot } => self.logout(slot),
            R::FindObjects { session, template } => self.find(session, &template),
            R::GetAttributeValue {
                session,
                object,
                types,
            } => self.get_attribute_value(session, object, &types),
            R::SetAttributeValue {
                session,
                object,
                template,
            } => self.set_attribute_value(session, object, &template),
            R::CopyObject {
                session, object, ..
            } => self.copy_object(session, object),
            R::DestroyObject { session, object } => self.destroy_object(session, object),
            R::GetObjectSize { session, object } => self.object_size(session, object),
            R::CreateObject { session, template } => self.create_any(session, &template),
            R::GenerateKey {
                session,
                mechanism,
                template,
            } => self.generate_any(session, &mechanism, None, &template),
            R::GenerateKeyPair {
                session,
                mechanism,
                public_template,
                private_template,
            } => self.generate_any(
                session,
                &mechanism,
                Some(&public_template),
                &private_template,
            ),
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
            } => self.derive_key(session, base_key),
            R::OperationInit {
                op,
                session,
                mechanism,
                key,
            } => self.operation_init(op, session, &mechanism, key),
            R::OperationOneShot { op, session, data } => {
                self.finish(op, session, None, Some(data.as_slice()))
            }
            R::OperationUpdate { op, session, data } => self.update(op, session, data.as_slice()),
            R::OperationFinal { op, session } => self.finish(op, session, None, None),
            R::Verify {
                session,
                data,
                signature,
            } => self.verify(session, data.as_slice(), signature.as_slice()),
            R::VerifyFinal { session, signature } => {
                self.finish(Operation::Verify, session, Some(signature.as_slice()), None)
            }
            R::OperationCancel { op, session } => self.cancel(op, session),
            R::GenerateRandom { session, len } => self.random(session, len),
        }
    }
}
