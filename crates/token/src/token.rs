//! Opening the backing token and the pool of logged-in sessions every other module borrows.
//!
//! # Contexts
//! A PKCS#11 module may be `C_Initialize`d once per process, so loaded modules live in a
//! process-wide registry keyed by module path and are never finalised (the process exit
//! does that). Two [`Token`]s of one module share its context.
//!
//! # Sessions
//! A `cryptoki::Session` is `Send + !Sync`: idle sessions sit in a `Vec` behind a
//! `parking_lot::Mutex`; a caller checks one out (opening a new one when none is idle), uses
//! it alone, and checks it back in. Login state is per application and token (PKCS#11 §5.6):
//! every session opened after `C_Login` is logged in too; if the token has forgotten the login
//! (all sessions closed, token reset) a new session logs in again with the stored PIN. A
//! session whose call failed in a way that may have broken it is closed, not pooled.
//!
//! # Object-store writes are exclusive
//! SoftHSM2 2.6's file object store is not safe for concurrent use while token objects are
//! created or destroyed: every `C_FindObjects` and key lookup rescans the token directory,
//! and a `C_GenerateKey(Pair)` racing with another generation, a destruction or even a
//! signing fails at random with `CKR_GENERAL_ERROR` (seen here with 4 threads generating,
//! listing, signing and destroying; upstream SoftHSMv2 issue 573, which made Parsec serialise
//! its PKCS#11 provider). So `Token::store` is a reader-writer lock: calls that create or
//! destroy token objects hold it exclusively (`write_session`, `with_exclusive_session`);
//! every other call that touches objects holds it shared. A signature waits while a key is
//! being generated (an RSA-4096 generation can take seconds), and generation never waits
//! long behind readers: parking_lot's lock is task-fair.
//!
//! # Key handles are cached
//! SoftHSM2's `C_FindObjects` rescans the whole object store (about 18 ms with 1,000 keys),
//! so looking a key up by `CKA_ID` for every operation would cost more than the operation.
//! [`Token::with_key`] keeps (class, `CKA_ID`) → handle in `Token::handles`: filled by a
//! search, emptied whenever the object store is taken exclusively (every creation or
//! destruction of a token object), and an entry whose handle the token refuses
//! (`CKR_KEY_HANDLE_INVALID`/`CKR_OBJECT_HANDLE_INVALID`) is dropped and searched again once.
//! Token object handles are valid in every session of the application (PKCS#11 §2.4).
//!
//! # Lock order
//! 1. `CONTEXTS` (the module registry) — held across `C_GetFunctionList`/`C_Initialize`, which
//!    it exists to serialise.
//! 2. `Token::store` — held (shared or exclusive) across the token calls it exists to order.
//! 3. `Token::handles` (the handle cache) — held only to read, insert or clear, never across
//!    a token call.
//! 4. `Token::idle` (the session pool) — held only to push or pop a session, never across a
//!    token call (closing a surplus session happens after the lock is released).
//!
//! 5. `Token::homes` (the idle sessions that create session objects: never closed while they
//!    work, since closing one would destroy its objects, PKCS#11 §5.6) — held only to push or
//!    pop a session, never across a token call, so one principal's long key generation (an
//!    RSA-4096 session pair takes seconds) never holds up another's session-object work: each
//!    runs in a home session of its own, opened when none is idle.
//!
//! 0. `Token::head_storage` (where the signed audit head lives, audit.rs) — taken before
//!    every other lock and held across the trials that learn it once (they take `store`
//!    exclusively), so two first callers do not run them twice.
//!
//! A lock is only ever taken while holding locks above it in this list. No other locks exist
//! in this crate.

use crate::capabilities::Capabilities;
use crate::error::{Result, TokenError};
use crate::raw::RawModule;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use parking_lot::{Mutex, RwLock};
use secrecy::SecretString;
use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::fmt;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::OnceLock;

/// Cached key handles kept at most (the cache is emptied when it would grow past this).
const MAX_CACHED_HANDLES: usize = 65_536;

/// Idle sessions kept open beyond this many are closed when checked in.
const MAX_IDLE_SESSIONS: usize = 8;

/// Loaded and initialised modules of this process (lock order 1).
static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();

/// The module at `path`, loaded and `C_Initialize`d once per process. `init_args` (the
/// `[token] init_args` setting) is passed as `pReserved` of `CK_C_INITIALIZE_ARGS`, which
/// some modules read their parameters from (NSS softokn: its database directory); it is
/// used by the first load of a module in the process only.
fn context(path: &Path, init_args: Option<&str>) -> Result<Pkcs11> {
    let key = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    let mut contexts = CONTEXTS.get_or_init(Default::default).lock();
    if let Some(ctx) = contexts.get(&key) {
        return Ok(ctx.clone());
    }
    let load_err = |source| TokenError::Load {
        path: path.to_owned(),
        source,
    };
    let ctx = Pkcs11::new(&key).map_err(load_err)?;
    let flags = CInitializeFlags::OS_LOCKING_OK;
    // Kept alive until after C_Initialize: the module reads pReserved during the call.
    let params = init_args
        .map(|a| {
            CString::new(a).map_err(|_| {
                TokenError::InvalidArgument("[token] init_args contains a NUL byte".into())
            })
        })
        .transpose()?;
    let args = match &params {
        None => CInitializeArgs::new(flags),
        Some(p) => {
            let ptr = NonNull::new(p.as_ptr().cast_mut().cast::<c_void>())
                .ok_or_else(|| TokenError::InvalidArgument("[token] init_args".into()))?;
            // SAFETY: `ptr` points at the NUL-terminated bytes of `params`, a CString that
            // lives to the end of this function, after `initialize` returns: the module reads
            // pReserved only during C_Initialize (PKCS#11 3.0 §5.4: "pReserved ... reserved
            // for future use"; NSS softokn parses it as its library parameters, a C string,
            // and copies what it keeps). Nothing writes through the pointer.
            #[allow(unsafe_code)]
            unsafe {
                CInitializeArgs::new_with_reserved(flags, ptr)
            }
        }
    };
    let initialized = ctx.initialize(args);
    drop(params);
    match initialized {
        // Someone else in this process (a test using cryptoki directly) initialised it.
        Ok(()) | Err(CryptokiError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(load_err(e)),
    }
    contexts.insert(key, ctx.clone());
    Ok(ctx)
}

/// The backing token as `C_GetTokenInfo` describes it ([`Token::summary`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSummary {
    /// `CKA_LABEL` of the token (blank padding removed).
    pub label: String,
    /// Its manufacturer.
    pub manufacturer: String,
    /// Its model.
    pub model: String,
    /// Its serial number.
    pub serial: String,
    /// Firmware version, `major.minor`.
    pub firmware: String,
    /// The slot it sits in.
    pub slot: u64,
    /// keywardd holds a logged-in user session (always, while the token is open).
    pub logged_in: bool,
    /// Logged-in sessions idle in keywardd's pool.
    pub idle_sessions: usize,
    /// Session objects keywardd made for module sessions that exist in the token now.
    pub session_objects: usize,
}

/// The one backing token keywardd holds: a logged-in user session pool and what the token can
/// do. `Token` is `Send + Sync`; share it behind an `Arc`.
pub struct Token {
    ctx: Pkcs11,
    slot: Slot,
    label: String,
    pin: SecretString,
    idle: Mutex<Vec<Session>>,
    store: RwLock<()>,
    handles: RwLock<HashMap<(u64, Vec<u8>), ObjectHandle>>,
    capabilities: Capabilities,
    homes: Mutex<Vec<Session>>,
    /// Counts the home sessions that broke: a session object of an earlier generation is
    /// gone, and its handle must not reach a token that may reuse handles.
    home_generation: std::sync::atomic::AtomicU64,
    /// The module's function list, for the raw calls cryptoki lacks ([`crate::raw`]).
    raw: RawModule,
    /// Where the signed audit head lives, once learnt ([`Token::head_storage`]).
    head_storage: Mutex<Option<crate::audit::HeadStorage>>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the PIN.
        f.debug_struct("Token")
            .field("label", &self.label)
            .field("slot", &self.slot.id())
            .field("idle_sessions", &self.idle.lock().len())
            .finish_non_exhaustive()
    }
}

impl Token {
    /// Loads the PKCS#11 module at `module_path`, finds the token labelled `token_label`,
    /// logs in as the user with `user_pin`, and probes its mechanisms.
    ///
    /// Errors: [`TokenError::Load`], [`TokenError::TokenNotFound`] (with the labels that do
    /// exist), [`TokenError::AmbiguousToken`], [`TokenError::PinIncorrect`],
    /// [`TokenError::AlreadyOpen`] (this process already logged in to the token), or the
    /// PKCS#11 failure.
    pub fn open(module_path: &Path, token_label: &str, user_pin: SecretString) -> Result<Token> {
        Token::open_with(module_path, None, token_label, user_pin)
    }

    /// [`Token::open`], passing `init_args` to the module's `C_Initialize` as `pReserved`
    /// (a NUL-terminated string; the `[token] init_args` setting), for modules that read
    /// their parameters there (NSS softokn). A NUL byte in it is
    /// [`TokenError::InvalidArgument`]. The arguments apply when this process loads the
    /// module first.
    pub fn open_with(
        module_path: &Path,
        init_args: Option<&str>,
        token_label: &str,
        user_pin: SecretString,
    ) -> Result<Token> {
        let ctx = context(module_path, init_args)?;
        let canonical = module_path
            .canonicalize()
            .unwrap_or_else(|_| module_path.to_owned());
        let raw = RawModule::load(&canonical).map_err(|source| TokenError::Load {
            path: module_path.to_owned(),
            source,
        })?;
        let slot = find_slot(&ctx, token_label)?;
        let session = ctx.open_rw_session(slot)?;
        match session.login(UserType::User, Some(&user_pin)) {
            Ok(()) => {}
            Err(CryptokiError::Pkcs11(RvError::PinIncorrect, _)) => {
                return Err(TokenError::PinIncorrect {
                    label: token_label.to_owned(),
                })
            }
            Err(CryptokiError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                return Err(TokenError::AlreadyOpen {
                    label: token_label.to_owned(),
                })
            }
            Err(e) => return Err(e.into()),
        }
        let capabilities = Capabilities::probe(&ctx, slot, &session, &raw)?;
        let missing: Vec<String> = capabilities
            .report()
            .into_iter()
            .filter(|l| !l.available && !l.disables.is_empty())
            .map(|l| l.name)
            .collect();
        tracing::info!(
            token = token_label,
            slot = slot.id(),
            oaep_sha1 = capabilities.oaep_sha1(),
            oaep_sha256 = capabilities.oaep_sha256(),
            copyable = capabilities.copyable_accepted(),
            unavailable = %missing.join(","),
            "backing token open (keywardctl token capabilities lists what it cannot do)"
        );
        Ok(Token {
            ctx,
            slot,
            label: token_label.to_owned(),
            pin: user_pin,
            idle: Mutex::new(vec![session]),
            store: RwLock::new(()),
            handles: RwLock::new(HashMap::new()),
            capabilities,
            homes: Mutex::new(Vec::new()),
            home_generation: std::sync::atomic::AtomicU64::new(0),
            raw,
            head_storage: Mutex::new(None),
        })
    }

    /// The cell of [`Token::head_storage`] (lock order 0: held across the trials it exists to
    /// run once).
    pub(crate) fn head_storage_cell(&self) -> &Mutex<Option<crate::audit::HeadStorage>> {
        &self.head_storage
    }

    /// The module's function list, for [`crate::raw`]'s helpers.
    pub(crate) fn raw(&self) -> &RawModule {
        &self.raw
    }

    /// The token's label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// What the token says of itself now (`C_GetTokenInfo`), for `keywardctl status`.
    pub fn summary(&self) -> Result<TokenSummary> {
        let info = self.ctx.get_token_info(self.slot)?;
        // Before the pool lock below (a temporary guard lives to the end of the statement).
        let session_objects = self.count_session_objects()?;
        let idle_sessions = self.idle.lock().len();
        Ok(TokenSummary {
            label: info.label().trim_end().to_owned(),
            manufacturer: info.manufacturer_id().trim_end().to_owned(),
            model: info.model().trim_end().to_owned(),
            serial: info.serial_number().trim_end().to_owned(),
            firmware: info.firmware_version().to_string(),
            slot: self.slot.id(),
            logged_in: true,
            idle_sessions,
            session_objects,
        })
    }

    /// What the token can do, as probed at [`Token::open`].
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// The earlier name of [`Token::capabilities`].
    pub fn mechanisms(&self) -> &Capabilities {
        &self.capabilities
    }

    /// Runs `f` with a logged-in read/write session of the token, for what this crate does
    /// not wrap (the daemon's session objects, tests that inspect objects directly).
    /// The session is used by `f` alone and returned to the pool afterwards; `f` must leave no
    /// operation active on it. `f` runs with the object store shared: it must not create or
    /// destroy token objects (`CKA_TOKEN=TRUE`); use [`Token::with_exclusive_session`] for
    /// that.
    pub fn with_session<R>(
        &self,
        f: impl FnOnce(&Session) -> cryptoki::error::Result<R>,
    ) -> Result<R> {
        let _store = self.store.read();
        self.raw_session(f)
    }

    /// Like [`Token::with_session`], with the object store held exclusively: for creating or
    /// destroying token objects (see the module header).
    pub fn with_exclusive_session<R>(
        &self,
        f: impl FnOnce(&Session) -> cryptoki::error::Result<R>,
    ) -> Result<R> {
        let _store = self.store.write();
        self.handles.write().clear();
        self.raw_session(f)
    }

    /// Like [`Token::with_exclusive_session`], but the key-handle cache stays: only for
    /// sections that create or destroy objects that are not keys (the audit checkpoint's
    /// signed-head data object), so no cached key handle can go stale or be reused.
    pub fn with_exclusive_data_session<R>(
        &self,
        f: impl FnOnce(&Session) -> cryptoki::error::Result<R>,
    ) -> Result<R> {
        let _store = self.store.write();
        self.raw_session(f)
    }

    /// Runs `f` with a logged-in session and the handle of the one token object of `class`
    /// whose `CKA_ID` is `id` (cached; see the module header), with the object store shared.
    /// No such object is [`TokenError::KeyNotFound`], several [`TokenError::DuplicateId`]
    /// (`what` names the object in both). If `f` fails with `CKR_KEY_HANDLE_INVALID` or
    /// `CKR_OBJECT_HANDLE_INVALID` on a cached handle, the object is searched again and `f`
    /// runs once more, so `f` must not have side effects on failure (a one-shot operation).
    pub fn with_key<R>(
        &self,
        class: ObjectClass,
        id: &[u8],
        what: &'static str,
        mut f: impl FnMut(&Session, ObjectHandle) -> cryptoki::error::Result<R>,
    ) -> Result<R> {
        let _store = self.store.read();
        let key = (class_key(class), id.to_vec());
        let cached = self.handles.read().get(&key).copied();
        let found = self.raw_session(|s| {
            if let Some(h) = cached {
                match f(s, h) {
                    Err(CryptokiError::Pkcs11(
                        RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid,
                        _,
                    )) => {
                        self.handles.write().remove(&key);
                    }
                    other => return other.map(Found::Done),
                }
            }
            let found = s.find_objects(&[
                Attribute::Token(true),
                Attribute::Class(class),
                Attribute::Id(id.to_vec()),
            ])?;
            match found.as_slice() {
                [h] => {
                    {
                        let mut handles = self.handles.write();
                        if handles.len() >= MAX_CACHED_HANDLES {
                            handles.clear();
                        }
                        handles.insert(key.clone(), *h);
                    }
                    f(s, *h).map(Found::Done)
                }
                [] => Ok(Found::Missing),
                many => Ok(Found::Several(many.len())),
            }
        })?;
        match found {
            Found::Done(r) => Ok(r),
            Found::Missing => Err(TokenError::KeyNotFound {
                id: id.to_vec(),
                what,
            }),
            Found::Several(count) => Err(TokenError::DuplicateId {
                id: id.to_vec(),
                what,
                count,
            }),
        }
    }

    /// The generation of the home session (see [`Token::with_home_session`]).
    pub(crate) fn home_generation(&self) -> u64 {
        self.home_generation
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Runs `f` in a session that creates session objects (an idle one, or one opened now;
    /// with the object store shared); returns its result and the generation. A failure that
    /// may have broken the session drops it: its objects are gone with it and the generation
    /// moves on (conservatively for every home session's objects: a token that breaks one
    /// session has usually broken them all).
    pub(crate) fn with_home_session<R>(
        &self,
        f: impl FnOnce(&Session) -> cryptoki::error::Result<R>,
    ) -> Result<(R, u64)> {
        let _store = self.store.read();
        let idle = self.homes.lock().pop();
        let session = match idle {
            Some(s) => s,
            None => self.new_session()?,
        };
        let result = f(&session);
        let broken = matches!(
            &result,
            Err(CryptokiError::Pkcs11(
                RvError::SessionHandleInvalid
                    | RvError::SessionClosed
                    | RvError::DeviceRemoved
                    | RvError::TokenNotPresent
                    | RvError::UserNotLoggedIn,
                _
            ))
        );
        if broken {
            tracing::warn!(token = %self.label, "the session-object session broke; its objects are gone");
            self.home_generation
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        } else {
            self.homes.lock().push(session);
        }
        let generation = self.home_generation();
        result.map(|r| (r, generation)).map_err(TokenError::from)
    }

    fn raw_session<R>(&self, f: impl FnOnce(&Session) -> cryptoki::error::Result<R>) -> Result<R> {
        let mut session = self.checkout()?;
        let result = f(&session);
        if let Err(e) = &result {
            session.note_error(e);
        }
        result.map_err(|e| {
            let e = TokenError::from(e);
            tracing::debug!(error = %e, "token call failed");
            e
        })
    }

    /// Like [`Token::with_session`] for this crate's own code, whose closures return
    /// [`TokenError`]s: the object store held shared.
    pub(crate) fn session<R>(&self, f: impl FnOnce(&Session) -> Result<R>) -> Result<R> {
        let _store = self.store.read();
        self.crate_session(f)
    }

    /// Like [`Token::session`], with the object store held exclusively: for every call that
    /// creates or destroys token objects.
    pub(crate) fn write_session<R>(&self, f: impl FnOnce(&Session) -> Result<R>) -> Result<R> {
        let _store = self.store.write();
        self.handles.write().clear();
        self.crate_session(f)
    }

    /// A session without taking the object-store lock: for calls that touch no object
    /// (random bytes).
    pub(crate) fn crate_session<R>(&self, f: impl FnOnce(&Session) -> Result<R>) -> Result<R> {
        let mut session = self.checkout()?;
        let result = f(&session);
        if let Err(TokenError::Pkcs11 { rv, function }) = &result {
            session.note_error(&CryptokiError::Pkcs11(*rv, *function));
            tracing::debug!(%function, %rv, "token call failed");
        }
        result
    }

    fn checkout(&self) -> Result<PooledSession<'_>> {
        let idle = self.idle.lock().pop();
        let session = match idle {
            Some(s) => s,
            None => self.new_session()?,
        };
        Ok(PooledSession {
            token: self,
            session: Some(session),
            discard: false,
        })
    }

    /// Opens one more session, logging in again if the token forgot the login.
    fn new_session(&self) -> Result<Session> {
        let session = self.ctx.open_rw_session(self.slot)?;
        if session.get_session_info()?.session_state() != SessionState::RwUser {
            tracing::warn!(token = %self.label, "token lost its login; logging in again");
            match session.login(UserType::User, Some(&self.pin)) {
                Ok(()) | Err(CryptokiError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
                Err(CryptokiError::Pkcs11(RvError::PinIncorrect, _)) => {
                    return Err(TokenError::PinIncorrect {
                        label: self.label.clone(),
                    })
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(session)
    }

    fn check_in(&self, session: Session) {
        let surplus = {
            let mut idle = self.idle.lock();
            if idle.len() < MAX_IDLE_SESSIONS {
                idle.push(session);
                None
            } else {
                Some(session)
            }
        };
        // C_CloseSession outside the pool lock.
        drop(surplus);
    }
}

/// A checked-out session; goes back to the pool on drop unless a failure may have broken it.
struct PooledSession<'a> {
    token: &'a Token,
    session: Option<Session>,
    discard: bool,
}

impl PooledSession<'_> {
    fn note_error(&mut self, e: &CryptokiError) {
        if let CryptokiError::Pkcs11(rv, _) = e {
            if matches!(
                rv,
                RvError::SessionHandleInvalid
                    | RvError::SessionClosed
                    | RvError::DeviceRemoved
                    | RvError::DeviceError
                    | RvError::TokenNotPresent
                    | RvError::OperationActive
                    // The call that returned it left its operation active (PKCS#11 §5.2).
                    | RvError::BufferTooSmall
                    | RvError::GeneralError
                    | RvError::UserNotLoggedIn
            ) {
                self.discard = true;
            }
        }
    }
}

impl Deref for PooledSession<'_> {
    type Target = Session;
    fn deref(&self) -> &Session {
        // Present from construction until drop.
        self.session.as_ref().expect("session present until drop")
    }
}

impl Drop for PooledSession<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            if !self.discard {
                self.token.check_in(session);
            }
        }
    }
}

/// What [`Token::with_key`]'s search found.
enum Found<R> {
    Done(R),
    Missing,
    Several(usize),
}

/// The numeric value of an object class (part of the cache key).
#[allow(clippy::useless_conversion)] // CK_ULONG is 32 bits on Windows.
fn class_key(class: ObjectClass) -> u64 {
    u64::from(*class)
}

/// The one slot whose initialised token carries `label`.
fn find_slot(ctx: &Pkcs11, label: &str) -> Result<Slot> {
    let mut found = Vec::new();
    let mut available = Vec::new();
    for slot in ctx.get_slots_with_token()? {
        let info = ctx.get_token_info(slot)?;
        if !info.token_initialized() {
            continue;
        }
        if info.label() == label {
            found.push(slot);
        }
        available.push(info.label().to_owned());
    }
    match found.as_slice() {
        [slot] => Ok(*slot),
        [] => Err(TokenError::TokenNotFound {
            label: label.to_owned(),
            available,
        }),
        many => Err(TokenError::AmbiguousToken {
            label: label.to_owned(),
            count: many.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn token_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<super::Token>();
    }
}
