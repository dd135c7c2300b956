//! The module instance: configuration, the fixed slot list, the connection to keywardd, the
//! session table and the logins to replay (design §1, §4).
//!
//! **One instance per `C_Initialize`**, held in [`STATE`] with the pid that made it: a forked
//! child sees another pid and gets `CKR_CRYPTOKI_NOT_INITIALIZED` until it calls
//! `C_Initialize`, which replaces the parent's copy (dropping it only closes the child's
//! copies of the descriptors; the parent's connection is untouched).
//!
//! **Lock order** (take only in this order; every lock is `parking_lot`, so nothing
//! poisons):
//! 1. [`STATE`] (read: just long enough to clone the `Arc<Instance>`; write: C_Initialize /
//!    C_Finalize swap it);
//! 2. one of `Instance::lanes`: held across one request/response, because it exists to
//!    serialise that connection (one request in flight); never held for anything else;
//! 3. `Instance::link` (generation and instance secret): short sections, and across a
//!    (re)connect, which it serialises so that every lane joins the same instance;
//! 4. `Instance::sessions`: short sections, never across IPC;
//! 5. `Instance::logins`: short sections, never across IPC.
//!
//! **Lanes** (issue 9). keywardd serves each connection in its own thread, one request at a
//! time, and a daemon session lives on the connection that opened it. So that two threads
//! with two sessions run in parallel, an instance has up to [`LANES`] connections (lanes),
//! made as sessions need them: a new session opens on the lane with the fewest live sessions
//! and all its calls go there; calls without a session use lane 0. Every lane presents the
//! instance secret, so keywardd sees one instance (one login state, one handle space).
//!
//! **Sharing lanes** (design §9). keywardd caps connections per uid and closes a connection
//! that has no session and no login after an idle time. Neither is an error here: a lane
//! keywardd refuses (or closes during the handshake) while another lane is up is "no extra
//! lane", and sessions share the lanes that are up (that lane is not tried again for
//! [`LANE_RETRY`]); a lane without live sessions found closed is reconnected without ending
//! any session, and a session-less request that met such a close is sent once more on the
//! new connection (keywardd closes only a connection with no request in flight).
//!
//! **Connections.** Lazy: the first call that needs keywardd connects (C_Initialize tries once,
//! with a short timeout, to fetch the slot list). Every connection has a *generation*; each
//! session remembers the generation it was opened in. When a connection breaks, the
//! generation moves on (if it had live sessions), so its sessions are dead: the call that noticed gets
//! `CKR_DEVICE_REMOVED` (narrowed per function), later calls on those sessions
//! `CKR_SESSION_HANDLE_INVALID`. The next call that connects again re-sends the instance's
//! fixed slot list (a restarted keywardd admits only slots it is told of) and replays the
//! instance's logins with the PINs kept for that (zeroised on drop: at C_Logout, C_Finalize, or a
//! replay the daemon refuses).

use crate::config::Config;
use crate::error::Error;
use keyward_wire::pkcs11::{
    Blob, ConfiguredToken, ObjectHandle, Pin, Pkcs11Request, Pkcs11Response, SessionId,
    SlotDescription, SlotId, TokenInfo, UserType,
};
use keyward_wire::Client;
use keyward_wire::{
    ClientKind, ClientOptions, Hello, InstanceSecret, RequestBody, ResponseBody, WireError,
};
use parking_lot::{Mutex, RwLock};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The module's one global: the current instance, if initialised.
pub static STATE: RwLock<Option<Arc<Instance>>> = RwLock::new(None);

/// How long C_Initialize waits for keywardd's handshake when fetching the slot list, and any
/// later connect waits for the handshake (calls after it have their own deadlines:
/// [`Instance::deadline`]).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections (lanes) one instance may hold: sessions beyond this many share them.
pub const LANES: usize = 4;

/// How long a lane keywardd refused (a connection limit) is left alone while other lanes
/// are up.
pub const LANE_RETRY: Duration = Duration::from_secs(10);

/// Token flags of a configured token listed while keywardd is down (design §4).
pub const CONFIGURED_TOKEN_FLAGS: u64 = pkcs11_sys::CKF_RNG
    | pkcs11_sys::CKF_LOGIN_REQUIRED
    | pkcs11_sys::CKF_USER_PIN_INITIALIZED
    | pkcs11_sys::CKF_TOKEN_INITIALIZED;

/// One slot of the fixed slot list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The slot id.
    pub id: SlotId,
    /// The key ring's full name (slot description).
    pub ring: String,
    /// The token as first listed (label, serial); flags and counts are refreshed by
    /// C_GetTokenInfo.
    pub token: TokenInfo,
}

impl Slot {
    /// A configured key ring, described without keywardd.
    pub fn configured(t: &ConfiguredToken) -> Slot {
        let (id, serial) = keyward_wire::pkcs11::ring_identity(&t.ring);
        Slot {
            id,
            ring: t.ring.clone(),
            token: TokenInfo {
                label: t.label.clone(),
                serial,
                flags: CONFIGURED_TOKEN_FLAGS,
                session_count: None,
                rw_session_count: None,
            },
        }
    }
}

/// The slot list: keywardd's answer (which includes the configured rings) when it was
/// reachable, plus every configured ring it did not list; sorted by slot id.
pub fn merge_slots(from_daemon: Vec<SlotDescription>, configured: &[ConfiguredToken]) -> Vec<Slot> {
    let mut slots: Vec<Slot> = from_daemon
        .into_iter()
        .map(|d| Slot {
            id: d.slot,
            ring: d.ring,
            token: d.token,
        })
        .collect();
    for t in configured {
        let s = Slot::configured(t);
        if !slots.iter().any(|x| x.id == s.id) {
            slots.push(s);
        }
    }
    slots.sort_by_key(|s| s.id);
    slots.dedup_by_key(|s| s.id);
    slots
}

/// A login to replay after a reconnect.
#[derive(Debug, Clone)]
pub struct Login {
    /// `CKU_USER` or `CKU_SO`.
    pub user: UserType,
    /// The PIN as given (zeroised on drop).
    pub pin: Option<Pin>,
}

/// An output computed by keywardd that the client has not collected yet (two-call protocol).
#[derive(Debug)]
pub struct Pending {
    /// Which call produced it (`crate::allow::Func` of the one-shot/update/final call).
    pub call: crate::allow::Func,
    /// The input it was computed from: a second call with other input does not get it.
    pub input: Blob,
    /// The output.
    pub output: Blob,
}

/// One session of the instance.
#[derive(Debug)]
pub struct Session {
    /// Its slot.
    pub slot: SlotId,
    /// keywardd's id for it.
    pub remote: SessionId,
    /// The connection generation it lives in.
    pub generation: u64,
    /// The lane (connection) it lives on.
    pub lane: usize,
    /// Opened with `CKF_RW_SESSION`.
    pub read_write: bool,
    /// The active C_FindObjects cursor.
    pub find: Option<VecDeque<ObjectHandle>>,
    /// An output waiting for its second call.
    pub pending: Option<Pending>,
}

/// A copy of what a call needs to know about a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRef {
    /// The module's handle.
    pub handle: u64,
    /// Its slot.
    pub slot: SlotId,
    /// keywardd's id.
    pub remote: SessionId,
    /// Its connection generation.
    pub generation: u64,
    /// Its lane.
    pub lane: usize,
    /// Read-write.
    pub read_write: bool,
}

/// The session table.
#[derive(Debug, Default)]
pub struct Sessions {
    next: u64,
    map: HashMap<u64, Session>,
}

impl Sessions {
    /// Adds a session and returns its handle (never 0, never reused within the instance).
    pub fn insert(&mut self, s: Session) -> u64 {
        self.next += 1;
        let h = self.next;
        self.map.insert(h, s);
        h
    }

    /// The session `h`.
    pub fn get(&self, h: u64) -> Option<&Session> {
        self.map.get(&h)
    }

    /// The session `h`, mutably.
    pub fn get_mut(&mut self, h: u64) -> Option<&mut Session> {
        self.map.get_mut(&h)
    }

    /// Removes session `h`.
    pub fn remove(&mut self, h: u64) -> Option<Session> {
        self.map.remove(&h)
    }

    /// Handles of the sessions on `slot`.
    pub fn on_slot(&self, slot: SlotId) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .map
            .iter()
            .filter(|(_, s)| s.slot == slot)
            .map(|(h, _)| *h)
            .collect();
        v.sort_unstable();
        v
    }

    /// Live sessions (of `generation`) on each lane.
    pub fn per_lane(&self, generation: u64) -> [usize; LANES] {
        let mut n = [0usize; LANES];
        for s in self.map.values().filter(|s| s.generation == generation) {
            if let Some(c) = n.get_mut(s.lane) {
                *c += 1;
            }
        }
        n
    }

    /// (all, read-write) sessions on `slot` alive in `generation`.
    pub fn counts(&self, slot: SlotId, generation: u64) -> (u64, u64) {
        let live = self
            .map
            .values()
            .filter(|s| s.slot == slot && s.generation == generation);
        live.fold((0, 0), |(all, rw), s| {
            (all + 1, rw + u64::from(s.read_write))
        })
    }
}

/// One lane: a connection to keywardd and the generation it was made in.
#[derive(Debug, Default)]
pub struct Conn {
    client: Option<Client>,
    generation: u64,
    /// The socket timeouts the client has now (set per call: [`Instance::deadline`]).
    timeout: Option<Duration>,
}

/// What the lanes share: the generation (moved on whenever a connection breaks, which ends
/// every session) and the instance secret.
#[derive(Debug, Default)]
pub struct Link {
    generation: u64,
    secret: Option<InstanceSecret>,
}

/// One module instance (one successful C_Initialize in one process).
#[derive(Debug)]
pub struct Instance {
    /// The process that initialised it.
    pub pid: u32,
    /// The configuration.
    pub config: Config,
    /// The slot list, fixed at C_Initialize.
    pub slots: Vec<Slot>,
    lanes: [Mutex<Conn>; LANES],
    /// Lanes with a connection of some generation (read without the lane's lock, to pick a
    /// lane to share).
    up: [AtomicBool; LANES],
    /// Until when (milliseconds since `born`) a refused lane is not tried again.
    refused_until: [AtomicU64; LANES],
    /// When the instance was made (the clock of `refused_until`).
    born: Instant,
    /// Sessions being opened on each lane (not in the table yet), so that threads opening
    /// sessions at once spread over the lanes.
    opening: [AtomicUsize; LANES],
    link: Mutex<Link>,
    /// The session table (lock order 4).
    pub sessions: Mutex<Sessions>,
    /// Logins per slot (lock order 5).
    pub logins: Mutex<HashMap<SlotId, Login>>,
}

/// True for keywardd's handshake refusal: it answered, and refused this connection (a
/// limit: `CKR_DEVICE_MEMORY`, or another reason it gave).
fn is_refusal(e: &Error) -> bool {
    matches!(e, Error::Wire(WireError::Refused { .. }))
}

/// Why a session could not be opened on a lane.
#[derive(Debug)]
enum Open {
    /// The lane could not connect (keywardd down, refused, or closed the handshake).
    Connect(Error),
    /// The lane was up; opening failed.
    Other(Error),
}

impl Open {
    fn into_error(self) -> Error {
        match self {
            Open::Connect(e) | Open::Other(e) => e,
        }
    }
}

/// True if this process has an instance (`C_Initialize` was called here, not only in the
/// parent of a fork).
pub fn initialized() -> bool {
    matches!(&*STATE.read(), Some(i) if i.pid == std::process::id())
}

/// The current instance, if this process initialised the module.
pub fn instance() -> Result<Arc<Instance>, Error> {
    match &*STATE.read() {
        Some(i) if i.pid == std::process::id() => Ok(Arc::clone(i)),
        _ => Err(Error::NotInitialized),
    }
}

fn expect(r: Pkcs11Response, what: &'static str) -> Error {
    tracing::debug!(response = ?r, "unexpected response");
    Error::UnexpectedResponse(what)
}

impl Instance {
    /// A new instance for this process: tries keywardd once for the slot list (design §4: the
    /// list is fixed here), and lists the configured tokens whatever the answer.
    pub fn new(config: Config) -> Instance {
        let inst = Instance {
            pid: std::process::id(),
            slots: Vec::new(),
            config,
            lanes: Default::default(),
            up: Default::default(),
            refused_until: Default::default(),
            born: Instant::now(),
            opening: Default::default(),
            link: Mutex::new(Link::default()),
            sessions: Mutex::new(Sessions::default()),
            logins: Mutex::new(HashMap::new()),
        };
        let listed = inst.call(Pkcs11Request::ListSlots {
            configured: inst.config.tokens.clone(),
        });
        let from_daemon = match listed {
            Ok(Pkcs11Response::Slots(s)) => s,
            Ok(other) => {
                tracing::warn!(error = %expect(other, "ListSlots"), "keywardd's slot list");
                Vec::new()
            }
            Err(e) => {
                tracing::debug!(error = %e, "no slot list from keywardd; configured tokens only");
                Vec::new()
            }
        };
        let slots = merge_slots(from_daemon, &inst.config.tokens);
        Instance { slots, ..inst }
    }

    /// The slot `id`, if it is in the list.
    pub fn slot(&self, id: u64) -> Result<&Slot, Error> {
        self.slots
            .iter()
            .find(|s| s.id.0 == id)
            .ok_or(Error::SlotIdInvalid(id))
    }

    /// True if keywardd is reachable now (connecting if need be): `CKF_TOKEN_PRESENT`.
    pub fn daemon_up(&self) -> bool {
        let mut conn = self.lanes[0].lock();
        // A refusal (a connection limit) is keywardd answering.
        match self.ensure_connected(0, &mut conn) {
            Ok(()) => true,
            Err(e) => is_refusal(&e),
        }
    }

    /// True if `lane` holds no live session of `generation` (keywardd may close it when
    /// idle, and losing it ends no session). Takes `sessions` (lock order 4).
    fn lane_idle(&self, lane: usize, generation: u64) -> bool {
        self.sessions.lock().per_lane(generation)[lane] == 0
    }

    /// Milliseconds since the instance was made.
    fn now_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// True while `lane` is left alone after a refusal.
    fn lane_refused(&self, lane: usize) -> bool {
        self.refused_until[lane].load(Ordering::Relaxed) > self.now_ms()
    }

    /// The lane other than `except` that is up and has the fewest live sessions, if any.
    fn shared_lane(&self, except: usize) -> Option<usize> {
        let generation = self.generation();
        let counts = self.sessions.lock().per_lane(generation);
        (0..LANES)
            .filter(|&i| i != except && self.up[i].load(Ordering::Relaxed))
            .min_by_key(|&i| (counts[i], i))
    }

    /// Drops the lane's connection (the lane is locked by the caller).
    fn drop_client(&self, lane: usize, conn: &mut Conn) {
        conn.client = None;
        self.up[lane].store(false, Ordering::Relaxed);
    }

    /// The current connection generation.
    pub fn generation(&self) -> u64 {
        self.link.lock().generation
    }

    /// Connects the lane if it has no usable connection of the current generation,
    /// replaying logins. Called with the lane locked (lock order 2; holds `link` across the
    /// connect, takes `sessions` and `logins` briefly).
    fn ensure_connected(&self, lane: usize, conn: &mut Conn) -> Result<(), Error> {
        let mut link = self.link.lock();
        if conn.generation == link.generation {
            if let Some(client) = conn.client.as_mut() {
                let idle = self.lane_idle(lane, link.generation);
                // keywardd closes only lanes without sessions: look for that close there.
                if client.is_usable() && !(idle && client.peer_closed()) {
                    return Ok(());
                }
                self.drop_client(lane, conn);
                if !idle {
                    // This lane's connection broke under live sessions: every session ends
                    // with it.
                    link.generation += 1;
                }
            }
        }
        // A lane of an earlier generation is dropped (keywardd closes its sessions).
        self.drop_client(lane, conn);
        conn.generation = link.generation;
        let credentials = self
            .config
            .read_credentials()
            .map_err(credentials_refused)?;
        let hello = Hello::new(ClientKind::Module, link.secret.clone(), credentials);
        let options = ClientOptions {
            read_timeout: Some(HANDSHAKE_TIMEOUT),
            write_timeout: Some(HANDSHAKE_TIMEOUT),
        };
        let mut client = match Client::connect_with(&self.config.socket, &hello, &options) {
            Ok(c) => c,
            Err(e @ WireError::Connect { .. }) => {
                return Err(Error::TokenNotPresent(e.to_string()))
            }
            Err(e) if e.is_disconnect() => return Err(Error::TokenNotPresent(e.to_string())),
            Err(e) => return Err(Error::Wire(e)),
        };
        // The login replays below wait as long as any call.
        let timeout = self.config.timeout;
        client
            .stream()
            .set_read_timeout(Some(timeout))
            .and_then(|()| client.stream().set_write_timeout(Some(timeout)))
            .map_err(|e| Error::TokenNotPresent(e.to_string()))?;
        link.secret = Some(client.instance_secret().clone());
        // The shared-memory ring (issue 19 item 2); the socket if keywardd cannot make one.
        if crate::ring_map::wanted() {
            let opened = client.open_ring(crate::ring_map::map);
            crate::ring_map::chosen(&opened, client.is_usable());
            if let Err(e) = opened {
                if !client.is_usable() {
                    return Err(Error::TokenNotPresent(e.to_string()));
                }
            }
        }
        // Design §4: a keywardd that did not know the instance (it restarted) admits only the
        // slots it is told of, so every connection re-sends the fixed slot list (configured
        // and seen rings) before the logins are replayed. Empty only during `Instance::new`,
        // whose first request is that list.
        if !self.slots.is_empty() {
            let list = Pkcs11Request::ListSlots {
                configured: self
                    .slots
                    .iter()
                    .map(|s| ConfiguredToken {
                        ring: s.ring.clone(),
                        label: s.token.label.clone(),
                    })
                    .collect(),
            };
            match client.call(RequestBody::Pkcs11(list)) {
                Ok(_) => {}
                Err(e) if e.is_disconnect() => return Err(Error::TokenNotPresent(e.to_string())),
                // Refused (over keywardd's cap): the slots it admits anyway still work.
                Err(e) => tracing::warn!(error = %e, "keywardd refused the slot list"),
            }
        }
        let logins: Vec<(SlotId, Login)> = self
            .logins
            .lock()
            .iter()
            .map(|(s, l)| (*s, l.clone()))
            .collect();
        for (slot, login) in logins {
            let replay = Pkcs11Request::Login {
                slot,
                user: login.user,
                pin: login.pin,
            };
            match client.call(RequestBody::Pkcs11(replay)) {
                Ok(_) => {}
                // keywardd kept the instance (and its login) across the reconnect.
                Err(WireError::Remote(r)) if r.rv == pkcs11_sys::CKR_USER_ALREADY_LOGGED_IN => {}
                Err(e) if e.is_disconnect() => return Err(Error::TokenNotPresent(e.to_string())),
                Err(e) => {
                    // The key was revoked or the principal lost the ring: forget the login;
                    // the slot's sessions are public sessions from now on.
                    tracing::warn!(slot = slot.0, error = %e, "login replay refused");
                    self.logins.lock().remove(&slot);
                }
            }
        }
        conn.client = Some(client);
        conn.timeout = Some(timeout);
        self.up[lane].store(true, Ordering::Relaxed);
        Ok(())
    }

    /// How long `request` waits for keywardd's answer (issue 15 item 3): the configured
    /// `keygen_timeout` for key generation and unwrapping, which take seconds on a real
    /// token, `timeout` for everything else. A stopped or hung keywardd never holds a caller
    /// longer.
    pub fn deadline(&self, request: &Pkcs11Request) -> Duration {
        match request {
            Pkcs11Request::GenerateKey { .. }
            | Pkcs11Request::GenerateKeyPair { .. }
            | Pkcs11Request::UnwrapKey { .. } => self.config.keygen_timeout,
            _ => self.config.timeout,
        }
    }

    fn exchange(
        &self,
        lane: usize,
        conn: &mut Conn,
        request: Pkcs11Request,
    ) -> Result<Pkcs11Response, Error> {
        let client = conn.client.as_mut().ok_or(Error::Wire(WireError::Broken))?;
        let deadline = self.deadline(&request);
        let mut set = Ok(());
        if conn.timeout != Some(deadline) {
            set = client
                .stream()
                .set_read_timeout(Some(deadline))
                .and_then(|()| client.stream().set_write_timeout(Some(deadline)));
            conn.timeout = set.is_ok().then_some(deadline);
        }
        // Never a call without its deadline: a socket that refuses one goes as if broken.
        let answer = match set {
            Ok(()) => client.call(RequestBody::Pkcs11(request)),
            Err(e) => Err(WireError::Io(e)),
        };
        match answer {
            Ok(ResponseBody::Pkcs11(r)) => Ok(r),
            Ok(ResponseBody::Admin(_)) => Err(Error::UnexpectedResponse("admin response")),
            Ok(ResponseBody::Crypto(_)) => Err(Error::UnexpectedResponse("crypto response")),
            Err(e) => {
                if e.is_disconnect() {
                    self.drop_client(lane, conn);
                    let mut link = self.link.lock();
                    // A lane without sessions ends none when it goes (keywardd's idle close).
                    if conn.generation == link.generation && !self.lane_idle(lane, link.generation)
                    {
                        link.generation += 1;
                    }
                }
                Err(Error::Wire(e))
            }
        }
    }

    /// Sends a request that needs no session (on lane 0, or on another lane that is up if
    /// keywardd refuses lane 0), connecting if need be.
    pub fn call(&self, request: Pkcs11Request) -> Result<Pkcs11Response, Error> {
        let lane = if self.up[0].load(Ordering::Relaxed) || !self.lane_refused(0) {
            let mut conn = self.lanes[0].lock();
            match self.ensure_connected(0, &mut conn) {
                Ok(()) => return self.call_on(0, &mut conn, request),
                Err(e) if is_refusal(&e) => match self.shared_lane(0) {
                    Some(other) => {
                        self.refuse_lane(0);
                        other
                    }
                    None => return Err(e),
                },
                Err(e) => return Err(e),
            }
        } else {
            // Lane 0 was refused a moment ago: share another, or try lane 0 again.
            self.shared_lane(0).unwrap_or(0)
        };
        let mut conn = self.lanes[lane].lock();
        self.ensure_connected(lane, &mut conn)?;
        self.call_on(lane, &mut conn, request)
    }

    /// Sends a session-less request on a connected lane; if the lane had no live session and
    /// keywardd closed it as the request went out (its idle close: the request was not
    /// served), once more on a new connection.
    fn call_on(
        &self,
        lane: usize,
        conn: &mut Conn,
        request: Pkcs11Request,
    ) -> Result<Pkcs11Response, Error> {
        let idle = self.lane_idle(lane, conn.generation);
        match self.exchange(lane, conn, request.clone()) {
            // Not after a deadline: that request may have been (or still be) served.
            Err(Error::Wire(e))
                if idle && e.is_disconnect() && !matches!(e, WireError::Timeout) =>
            {
                tracing::debug!(lane, error = %e, "an idle lane was closed; connecting again");
                self.ensure_connected(lane, conn)?;
                self.exchange(lane, conn, request)
            }
            other => other,
        }
    }

    /// Leaves `lane` alone for [`LANE_RETRY`].
    fn refuse_lane(&self, lane: usize) {
        let until = self
            .now_ms()
            .saturating_add(u64::try_from(LANE_RETRY.as_millis()).unwrap_or(u64::MAX));
        self.refused_until[lane].store(until, Ordering::Relaxed);
    }

    /// Opens a session on keywardd (on the lane with the fewest live sessions, connecting it
    /// if need be) and records it.
    pub fn open_session(&self, slot: SlotId, read_write: bool) -> Result<u64, Error> {
        let lane = {
            let generation = self.generation();
            let sessions = self.sessions.lock();
            let counts = sessions.per_lane(generation);
            let load = |i: usize| counts[i] + self.opening[i].load(Ordering::Relaxed);
            // A lane keywardd refused a moment ago is not tried while another is up.
            let usable = |i: usize| self.up[i].load(Ordering::Relaxed) || !self.lane_refused(i);
            let lane = (0..LANES)
                .filter(|&i| usable(i))
                .min_by_key(|&i| (load(i), i))
                .unwrap_or(0);
            // Reserved under the sessions lock: the next opener sees it.
            self.opening[lane].fetch_add(1, Ordering::Relaxed);
            lane
        };
        let opened = self.open_on(lane, slot, read_write);
        self.opening[lane].fetch_sub(1, Ordering::Relaxed);
        match opened {
            // keywardd refused this extra lane (a connection limit) or closed it during the
            // handshake: not an error while another lane is up; share that one.
            Err(Open::Connect(e)) => match self.shared_lane(lane) {
                Some(other) => {
                    tracing::debug!(lane, error = %e, "no extra lane; sharing lane {other}");
                    self.refuse_lane(lane);
                    self.opening[other].fetch_add(1, Ordering::Relaxed);
                    let again = self.open_on(other, slot, read_write);
                    self.opening[other].fetch_sub(1, Ordering::Relaxed);
                    again.map_err(Open::into_error)
                }
                None => Err(e),
            },
            other => other.map_err(Open::into_error),
        }
    }

    fn open_on(&self, lane: usize, slot: SlotId, read_write: bool) -> Result<u64, Open> {
        let mut conn = self.lanes[lane].lock();
        self.ensure_connected(lane, &mut conn)
            .map_err(Open::Connect)?;
        let generation = conn.generation;
        let idle = self.lane_idle(lane, generation);
        let request = Pkcs11Request::OpenSession { slot, read_write };
        let answer = match self.exchange(lane, &mut conn, request.clone()) {
            // An idle lane keywardd closed as the request went out (not served): once more.
            // Not after a deadline: that request may have been (or still be) served.
            Err(Error::Wire(e))
                if idle && e.is_disconnect() && !matches!(e, WireError::Timeout) =>
            {
                self.ensure_connected(lane, &mut conn)
                    .map_err(Open::Connect)?;
                self.exchange(lane, &mut conn, request)
            }
            other => other,
        };
        let generation = conn.generation;
        let remote = match answer {
            Ok(Pkcs11Response::Session(id)) => id,
            Ok(other) => return Err(Open::Other(expect(other, "OpenSession"))),
            Err(Error::Wire(e)) if e.is_disconnect() => {
                return Err(Open::Other(Error::TokenNotPresent(e.to_string())))
            }
            Err(e) => return Err(Open::Other(e)),
        };
        let handle = self.sessions.lock().insert(Session {
            slot,
            remote,
            generation,
            lane,
            read_write,
            find: None,
            pending: None,
        });
        Ok(handle)
    }

    /// The session `h`, if it is alive: a session of an earlier connection is removed and
    /// `CKR_SESSION_HANDLE_INVALID`.
    pub fn session(&self, h: u64) -> Result<SessionRef, Error> {
        let generation = self.generation();
        let mut sessions = self.sessions.lock();
        let s = sessions.get(h).ok_or(Error::SessionHandleInvalid(h))?;
        if s.generation != generation {
            sessions.remove(h);
            return Err(Error::SessionHandleInvalid(h));
        }
        Ok(SessionRef {
            handle: h,
            slot: s.slot,
            remote: s.remote,
            generation: s.generation,
            lane: s.lane,
            read_write: s.read_write,
        })
    }

    /// Sends a request in session `s` over the connection it lives on (never reconnecting:
    /// a session does not survive its connection).
    pub fn call_in(&self, s: &SessionRef, request: Pkcs11Request) -> Result<Pkcs11Response, Error> {
        let mut conn = self.lanes.get(s.lane).unwrap_or(&self.lanes[0]).lock();
        let current = self.link.lock().generation;
        if conn.generation != s.generation || s.generation != current || conn.client.is_none() {
            drop(conn);
            self.sessions.lock().remove(s.handle);
            return Err(Error::SessionHandleInvalid(s.handle));
        }
        self.exchange(s.lane, &mut conn, request)
    }

    /// Expects [`Pkcs11Response::Done`].
    pub fn call_in_done(&self, s: &SessionRef, request: Pkcs11Request) -> Result<(), Error> {
        match self.call_in(s, request)? {
            Pkcs11Response::Done => Ok(()),
            other => Err(expect(other, "expected Done")),
        }
    }

    /// Expects [`Pkcs11Response::Object`].
    pub fn call_in_object(
        &self,
        s: &SessionRef,
        request: Pkcs11Request,
    ) -> Result<ObjectHandle, Error> {
        match self.call_in(s, request)? {
            Pkcs11Response::Object(o) => Ok(o),
            other => Err(expect(other, "expected Object")),
        }
    }

    /// Expects [`Pkcs11Response::Data`].
    pub fn call_in_data(&self, s: &SessionRef, request: Pkcs11Request) -> Result<Blob, Error> {
        match self.call_in(s, request)? {
            Pkcs11Response::Data(d) => Ok(d),
            other => Err(expect(other, "expected Data")),
        }
    }

    /// Forgets session `h` locally.
    pub fn forget_session(&self, h: u64) {
        self.sessions.lock().remove(h);
    }

    /// Takes the pending output of `call` for `input` from session `h`, if there is one; any
    /// other pending output of the session is dropped.
    pub fn take_pending(&self, h: u64, call: crate::allow::Func, input: &[u8]) -> Option<Blob> {
        let mut sessions = self.sessions.lock();
        let p = sessions.get_mut(h)?.pending.take()?;
        (p.call == call && p.input.as_slice() == input).then_some(p.output)
    }

    /// Keeps `output` for the second call of the two-call protocol.
    pub fn keep_pending(&self, h: u64, pending: Pending) {
        if let Some(s) = self.sessions.lock().get_mut(h) {
            s.pending = Some(pending);
        }
    }

    /// Drops a pending output of session `h` (a new `*Init`).
    pub fn clear_pending(&self, h: u64) {
        if let Some(s) = self.sessions.lock().get_mut(h) {
            s.pending = None;
        }
    }
}

/// The error of a credential file the module cannot use. One readable by its group or others
/// is a configuration error (`CKR_FUNCTION_FAILED`, universal; not `CKR_TOKEN_NOT_PRESENT`,
/// which would send the operator looking for a dead keywardd), said once per process on
/// stderr, since hosts rarely show a module's logs. Any other (missing, unreadable, empty)
/// keeps the token absent, as before.
fn credentials_refused(e: crate::config::ConfigError) -> Error {
    use std::sync::atomic::AtomicBool;
    static SAID: AtomicBool = AtomicBool::new(false);
    match e {
        crate::config::ConfigError::CredentialsOpen { .. } => {
            if !SAID.swap(true, Ordering::Relaxed) {
                eprintln!("libkeyward_pkcs11: {e}; every session is refused until then");
            }
            Error::Config(e.to_string())
        }
        other => Error::TokenNotPresent(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ring: &str, label: &str) -> ConfiguredToken {
        ConfiguredToken {
            ring: ring.into(),
            label: label.into(),
        }
    }

    #[test]
    fn configured_slots_without_daemon() {
        let a = t("projects/p/keyRings/r", "r");
        let s = Slot::configured(&a);
        assert_eq!(s.id, SlotId(736_758_884));
        assert_eq!(s.token.label, "r");
        assert_eq!(s.token.serial, "b71f3518b443ec75");
        assert_eq!(s.token.flags & pkcs11_sys::CKF_WRITE_PROTECTED, 0);
        assert_ne!(s.token.flags & pkcs11_sys::CKF_LOGIN_REQUIRED, 0);
    }

    #[test]
    fn merge_keeps_daemon_entries_and_adds_missing_configured() {
        let a = t("projects/p/keyRings/r", "configured label");
        let b = t("projects/p/keyRings/s", "s");
        let (id_a, serial_a) = keyward_wire::pkcs11::ring_identity(&a.ring);
        let daemon = vec![SlotDescription {
            slot: id_a,
            ring: a.ring.clone(),
            token: TokenInfo {
                label: "daemon label".into(),
                serial: serial_a,
                flags: 0x40D,
                session_count: None,
                rw_session_count: None,
            },
        }];
        let slots = merge_slots(daemon, &[a, b.clone()]);
        assert_eq!(slots.len(), 2);
        let first = slots.iter().find(|s| s.id == id_a).unwrap();
        assert_eq!(first.token.label, "daemon label");
        assert!(slots.iter().any(|s| s.ring == b.ring));
        assert!(slots.windows(2).all(|w| w[0].id < w[1].id));
    }

    #[test]
    fn session_table() {
        let mut t = Sessions::default();
        let mk = |slot, rw, generation| Session {
            slot: SlotId(slot),
            remote: SessionId(1),
            generation,
            lane: usize::from(rw),
            read_write: rw,
            find: None,
            pending: None,
        };
        let a = t.insert(mk(1, true, 0));
        let b = t.insert(mk(1, false, 0));
        let c = t.insert(mk(2, false, 0));
        let d = t.insert(mk(1, true, 1));
        assert_eq!((a, b, c, d), (1, 2, 3, 4));
        assert_eq!(t.counts(SlotId(1), 0), (2, 1));
        assert_eq!(t.counts(SlotId(1), 1), (1, 1));
        assert_eq!(t.on_slot(SlotId(1)), vec![1, 2, 4]);
        assert_eq!(t.per_lane(0), [2, 1, 0, 0]);
        assert_eq!(t.per_lane(1), [0, 1, 0, 0]);
        t.remove(a);
        assert_eq!(t.insert(mk(1, true, 0)), 5, "handles are never reused");
    }

    #[test]
    fn no_instance_is_not_initialised() {
        // Nothing in this unit-test binary initialises the global outside ffi::tests, which
        // hold its lock; a pid that is not ours must never be served.
        let fake = Instance {
            pid: std::process::id().wrapping_add(1),
            config: Config {
                socket: "/nonexistent".into(),
                tokens: vec![],
                credentials: None,
                timeout: crate::config::DEFAULT_TIMEOUT,
                keygen_timeout: crate::config::DEFAULT_KEYGEN_TIMEOUT,
            },
            slots: vec![],
            lanes: Default::default(),
            up: Default::default(),
            refused_until: Default::default(),
            born: Instant::now(),
            opening: Default::default(),
            link: Mutex::new(Link::default()),
            sessions: Mutex::new(Sessions::default()),
            logins: Mutex::new(HashMap::new()),
        };
        let _guard = crate::ffi::tests::STATE_LOCK.lock();
        let old = STATE.write().replace(Arc::new(fake));
        assert!(matches!(instance(), Err(Error::NotInitialized)));
        *STATE.write() = old;
    }
}
