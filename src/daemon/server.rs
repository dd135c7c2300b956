//! The two sockets of keywardd (design §1) and the connections on them.
//!
//! - **Admin socket** (0660, optional group): admin requests, each handled by the one
//!   [`AdminService`] behind a mutex, for the caller the handshake established.
//! - **Client socket** (0666): the PKCS#11 half, served by [`super::pkcs11`] (one
//!   [`super::pkcs11::ClientConnection`] per connection; without a PKCS#11 service only `Ping`
//!   is answered and everything else is `CKR_FUNCTION_NOT_SUPPORTED`); admin requests there
//!   are refused with a message pointing at the admin socket.
//!
//! One thread per connection. Limits (design §9, `[daemon]` in keyward.toml, README
//! "Connections and module instances"): connections per socket, per peer uid and for every
//! uid together (the admin socket has its own budget, so a flood of the client socket never
//! locks the admin out); a deadline on the whole handshake (a byte a second does not hold a
//! connection); a client connection with no session and no login is closed after an idle
//! time, an admin connection after its own; module instances per peer uid and in all. A
//! connection over a limit gets a handshake refusal `CKR_DEVICE_MEMORY` naming the limit
//! (the module then shares the lanes it has); each refusal is logged, at most once per
//! [`LIMIT_LOG_EVERY`] per limit and uid, with the number left unsaid.
//! Who is calling is decided here, once per connection, in this order: the service-account
//! key of the `Hello` (`KEYWARD_CREDENTIALS`; a wrong one is refused with
//! `CKR_PIN_INCORRECT` after a delay growing per (key id, peer uid), and a peer with many
//! failures gets `CKR_PIN_LOCKED` for a while); else the peer uid's mapping; else
//! `unix-uid:N` with the peer's groups (`SO_PEERCRED`, `SO_PEERGROUPS`).
//!
//! Instances: a module's first connection gets a new instance secret; a connection presenting
//! one joins that instance only from the same pid. An unknown secret (keywardd restarted, or
//! the instance was forgotten) makes a new instance that keeps that secret, bound to the
//! presenting pid (its object handles derive from it, design §4); without a pid, a new
//! secret. An instance
//! lives while it has a connection; without one it is forgotten when its process exits
//! (a pidfd, else `kill(pid, 0)`), when the same process starts a new instance (it
//! finalised the old one), or, if it has no pid to watch, after `instance_grace_secs`. At a
//! cap a new instance is refused; another uid's is never evicted. keywardctl's connections
//! to the client socket are instances of one connection, forgotten when it closes.
//!
//! Lock order: the throttle, then the service mutex (to check a service-account key, so that
//! checking and counting a wrong key are one step); the service mutex, then nothing (the
//! instance and connection tables and the limit log are each taken on their own, never while
//! another lock is held; the PKCS#11 service's instance state is forgotten after the instance
//! table is released). Shutdown: stop accepting,
//! remove the socket files, shut the read half of every connection (a request being handled
//! still gets its answer), wait for the connection threads up to a bound.

use super::config::Limits;
use super::peercred::{peer_cred, PeerCred};
use super::pkcs11::{ClientConnection, Pkcs11Service};
use super::throttle::Throttle;
use crate::admin::{credentials, AdminService};
use crate::audit::{self, NewRecord, Outcome};
use crate::context::{Caller, Clock};
use crate::daemon::pkcs11::P11Error;
use crate::policy::{Member, Principal};
use crate::store::iam::get_mapping;
use keyward_wire::admin::{AdminRequest, AdminResponse};
use keyward_wire::pkcs11::{Pkcs11Request, Pkcs11Response};
use keyward_wire::server::{accept, Accepted};
use keyward_wire::{
    rv, ClientKind, ErrorReply, Hello, InstanceSecret, RequestBody, ResponseBody, WireError,
};
use parking_lot::Mutex;
use rand::RngCore;
use std::cell::Cell;
use std::collections::HashMap;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a response may take to be written.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the accept loop looks at the shutdown flag.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Connections over the limit answered with a refusal at once; more are just closed.
const MAX_BUSY_REFUSALS: usize = 16;
/// How long a connection over the limit gets to send its `Hello` (whole).
const BUSY_TIMEOUT: Duration = Duration::from_secs(1);
/// How often instances without a connection are looked at.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// A refusal by a limit is logged at most this often per (limit, uid).
pub const LIMIT_LOG_EVERY: Duration = Duration::from_secs(10);

/// Which socket a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SocketKind {
    /// The admin socket.
    Admin,
    /// The client (PKCS#11) socket.
    Client,
}

impl SocketKind {
    fn name(self) -> &'static str {
        match self {
            SocketKind::Admin => "admin",
            SocketKind::Client => "client",
        }
    }
}

/// A listening socket whose file is removed when it is dropped.
#[derive(Debug)]
pub struct BoundSocket {
    listener: UnixListener,
    path: PathBuf,
    kind: SocketKind,
}

impl BoundSocket {
    /// The socket file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the socket file");
            }
        }
    }
}

/// Binds a socket at `path` with `mode` (and group `gid`, if any).
///
/// An existing socket file is removed only if nothing listens on it; any other file is left
/// alone and refused. The socket is created under a umask of 077 and then opened up to
/// `mode`, so it is never reachable with wider permissions than asked.
pub fn bind(
    path: &Path,
    kind: SocketKind,
    mode: u32,
    gid: Option<u32>,
) -> Result<BoundSocket, String> {
    let shown = path.display();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        socket_dir(dir, kind)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => {
                return Err(format!(
                    "another process is listening on {shown}: stop it, or set another \
                     [{}] socket",
                    kind.name()
                ))
            }
            Err(_) => {
                std::fs::remove_file(path)
                    .map_err(|e| format!("cannot remove the stale socket {shown}: {e}"))?;
                tracing::info!(path = %shown, "removed a stale socket file");
            }
        },
        Ok(_) => {
            return Err(format!(
                "{shown} exists and is not a socket: remove it, or set another [{}] socket",
                kind.name()
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot check {shown}: {e}")),
    }
    // The umask is process-wide: this runs at start, before any thread of ours exists.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let bound = UnixListener::bind(path);
    rustix::process::umask(old);
    let listener = bound.map_err(|e| {
        format!(
            "cannot bind the {} socket {shown}: {e} (does its directory exist and is it \
             writable?)",
            kind.name()
        )
    })?;
    let socket = BoundSocket {
        listener,
        path: path.to_owned(),
        kind,
    };
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, None, Some(gid))
            .map_err(|e| format!("cannot give {shown} to group {gid}: {e}"))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set mode {mode:04o} on {shown}: {e}"))?;
    socket
        .listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot set up {shown}: {e}"))?;
    Ok(socket)
}

/// The directory of a socket (design §9 "Files"): created 0755 (owned by keywardd's user)
/// if it is missing; refused if every user may write it without the sticky bit (anyone could
/// replace the socket with their own and collect keys given as PINs); a group-writable one is
/// logged.
fn socket_dir(dir: &Path, kind: SocketKind) -> Result<(), String> {
    let shown = dir.display();
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .mode(0o755)
                .create(dir)
                .and_then(|()| {
                    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                })
                .map_err(|e| {
                    format!(
                        "cannot create the {} socket's directory {shown}: {e}",
                        kind.name()
                    )
                })?;
            tracing::info!(dir = %shown, "created the socket directory (0755)");
            return Ok(());
        }
        Err(e) => return Err(format!("cannot check the socket directory {shown}: {e}")),
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o002 != 0 && mode & 0o1000 == 0 {
        return Err(format!(
            "the {} socket's directory {shown} may be written by every user (mode {mode:04o}), \
             so anyone could replace the socket: use a directory only keywardd's user may write \
             (0755 or 0711)",
            kind.name()
        ));
    }
    if mode & 0o020 != 0 && mode & 0o1000 == 0 {
        tracing::warn!(dir = %shown, mode = format!("{mode:04o}"), "the socket directory may be written by its group, which could replace the socket");
    }
    Ok(())
}

/// Resolves a group name or number to a gid, from `/etc/group`.
pub fn resolve_group(group: &str) -> Result<u32, String> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let text = std::fs::read_to_string("/etc/group")
        .map_err(|e| format!("cannot read /etc/group to find group {group}: {e}"))?;
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let gid = f.nth(1)?.parse::<u32>().ok()?;
            (name == group).then_some(gid)
        })
        .next()
        .ok_or_else(|| {
            format!("no group named {group} in /etc/group: create it, or fix [admin] group")
        })
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Connection, handshake, idle and instance limits (`[daemon]`).
    pub limits: Limits,
    /// How long shutdown waits for connections to finish.
    pub shutdown_grace: Duration,
}

/// One module instance.
#[derive(Debug)]
struct Instance {
    id: String,
    pid: Option<u32>,
    uid: Option<u32>,
    /// Open connections presenting it.
    conns: usize,
    /// When its last connection closed (None while it has one).
    detached: Option<Instant>,
    /// Its process, to see it exit (None: no pid, or pidfd_open failed: `kill(pid, 0)`).
    pidfd: Option<OwnedFd>,
    /// Order of creation: a later instance of the same process replaces this one.
    born: u64,
}

impl Instance {
    /// True once its process has exited (or, with no pid to watch, the grace has passed).
    fn gone(&self, now: Instant, grace: Duration) -> bool {
        if let Some(fd) = &self.pidfd {
            let mut fds = [rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN)];
            let zero = rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            return matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(n) if n > 0);
        }
        match self
            .pid
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            Some(pid) => rustix::process::test_kill_process(pid) == Err(rustix::io::Errno::SRCH),
            None => self
                .detached
                .is_some_and(|t| now.saturating_duration_since(t) >= grace),
        }
    }
}

/// What a connection holds of the instance table.
#[derive(Debug, Clone)]
struct Joined {
    /// The instance's id (audit records, the PKCS#11 state).
    id: String,
    /// Its secret, if it is in the table (module instances); keywardctl's are not.
    key: Option<[u8; 32]>,
}

/// Known module instances by secret, and how many each uid has.
#[derive(Default)]
struct Instances {
    by_secret: HashMap<[u8; 32], Instance>,
    per_uid: HashMap<Option<u32>, usize>,
    last_sweep: Option<Instant>,
    made: u64,
}

impl Instances {
    fn fresh_secret() -> ([u8; 32], String) {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let mut idb = [0u8; 6];
        rand::rngs::OsRng.fill_bytes(&mut idb);
        (bytes, idb.iter().map(|b| format!("{b:02x}")).collect())
    }

    fn remove(&mut self, key: &[u8; 32]) -> Option<Instance> {
        let inst = self.by_secret.remove(key)?;
        if let Some(n) = self.per_uid.get_mut(&inst.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_uid.remove(&inst.uid);
            }
        }
        Some(inst)
    }

    /// Forgets the instances without a connection that are done with (design §9): their
    /// process exited, `same_pid` made a new one, or no pid and the grace passed. `only_uid`
    /// limits the look to one uid's. Returns the forgotten ids.
    fn sweep(
        &mut self,
        grace: Duration,
        only_uid: Option<Option<u32>>,
        same_pid: Option<u32>,
    ) -> Vec<String> {
        let now = Instant::now();
        let done: Vec<[u8; 32]> = self
            .by_secret
            .iter()
            .filter(|(_, i)| i.conns == 0 && only_uid.is_none_or(|u| u == i.uid))
            .filter(|(_, i)| (same_pid.is_some() && i.pid == same_pid) || i.gone(now, grace))
            .map(|(k, _)| *k)
            .collect();
        done.iter()
            .filter_map(|k| self.remove(k))
            .map(|i| i.id)
            .collect()
    }
}

/// One open connection, as the accept loop and shutdown see it.
struct ConnEntry {
    stream: UnixStream,
    kind: SocketKind,
    uid: Option<u32>,
}

/// Open connections, counted per socket and per (socket, uid).
#[derive(Default)]
struct Conns {
    by_id: HashMap<u64, ConnEntry>,
    per_socket: HashMap<SocketKind, usize>,
    per_uid: HashMap<(SocketKind, Option<u32>), usize>,
}

impl Conns {
    fn count(&self, kind: SocketKind) -> usize {
        self.per_socket.get(&kind).copied().unwrap_or(0)
    }

    fn remove(&mut self, id: u64) {
        if let Some(e) = self.by_id.remove(&id) {
            if let Some(n) = self.per_socket.get_mut(&e.kind) {
                *n = n.saturating_sub(1);
            }
            let key = (e.kind, e.uid);
            if let Some(n) = self.per_uid.get_mut(&key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_uid.remove(&key);
                }
            }
        }
    }
}

/// Refusals by a limit, logged at most once per [`LIMIT_LOG_EVERY`] per (limit, uid).
#[derive(Default)]
struct LimitLog {
    last: HashMap<(&'static str, Option<u32>), (Instant, u64)>,
}

impl LimitLog {
    fn refused(&mut self, limit: &'static str, max: usize, uid: Option<u32>, what: &str) {
        let now = Instant::now();
        if self.last.len() > 4096 {
            self.last
                .retain(|_, (t, _)| now.saturating_duration_since(*t) < LIMIT_LOG_EVERY);
        }
        match self.last.get_mut(&(limit, uid)) {
            Some((t, n)) if now.saturating_duration_since(*t) < LIMIT_LOG_EVERY => *n += 1,
            entry => {
                let suppressed = entry.map_or(0, |(_, n)| *n);
                tracing::warn!(
                    limit,
                    max,
                    uid,
                    suppressed,
                    "refused by [daemon] {limit} = {max}: {what}"
                );
                self.last.insert((limit, uid), (now, 0));
            }
        }
    }
}

/// State shared by every connection.
pub struct Shared {
    service: Arc<Mutex<AdminService>>,
    clock: Arc<dyn Clock>,
    settings: Settings,
    admin_path: PathBuf,
    throttle: Mutex<Throttle>,
    instances: Mutex<Instances>,
    conns: Mutex<Conns>,
    limit_log: Mutex<LimitLog>,
    next_conn: AtomicU64,
    busy_refusals: AtomicUsize,
    pkcs11: Option<Arc<Pkcs11Service>>,
}

/// A refusal of the handshake.
struct Refusal {
    rv: u64,
    message: String,
}

impl Shared {
    /// The shared state over the one admin service and, for the client socket, the PKCS#11
    /// service (`None`: only `Ping` is served there).
    pub fn new(
        service: Arc<Mutex<AdminService>>,
        settings: Settings,
        admin_path: PathBuf,
        pkcs11: Option<Arc<Pkcs11Service>>,
    ) -> Arc<Shared> {
        let clock = service.lock().clock().clone();
        Arc::new(Shared {
            service,
            clock,
            settings,
            admin_path,
            throttle: Mutex::new(Throttle::default()),
            instances: Mutex::new(Instances::default()),
            conns: Mutex::new(Conns::default()),
            limit_log: Mutex::new(LimitLog::default()),
            next_conn: AtomicU64::new(1),
            busy_refusals: AtomicUsize::new(0),
            pkcs11,
        })
    }

    /// Open connections.
    pub fn open_connections(&self) -> usize {
        self.conns.lock().by_id.len()
    }

    /// Open connections on `kind`'s socket.
    pub fn connections_on(&self, kind: SocketKind) -> usize {
        self.conns.lock().count(kind)
    }

    /// Module instances in the table.
    pub fn module_instances(&self) -> usize {
        self.instances.lock().by_secret.len()
    }

    fn grace(&self) -> Duration {
        Duration::from_secs(self.settings.limits.instance_grace_secs)
    }

    /// Forgets instances without a connection whose process exited (at most once per
    /// [`SWEEP_EVERY`]), and their PKCS#11 state.
    fn sweep_instances(&self) {
        let forgotten = {
            let mut t = self.instances.lock();
            let now = Instant::now();
            if t.last_sweep
                .is_some_and(|l| now.saturating_duration_since(l) < SWEEP_EVERY)
            {
                return;
            }
            t.last_sweep = Some(now);
            t.sweep(self.grace(), None, None)
        };
        self.forget(&forgotten);
    }

    fn forget(&self, ids: &[String]) {
        if let Some(p11) = &self.pkcs11 {
            for id in ids {
                p11.forget_instance(id);
            }
        }
        if !ids.is_empty() {
            tracing::debug!(
                count = ids.len(),
                "forgot module instances of exited processes"
            );
        }
    }

    /// A connection of instance `joined` closed.
    fn leave(&self, joined: &Joined) {
        let Some(key) = joined.key else {
            // keywardctl: an instance of one connection.
            self.forget(std::slice::from_ref(&joined.id));
            return;
        };
        let mut t = self.instances.lock();
        let Some(i) = t.by_secret.get_mut(&key) else {
            return;
        };
        i.conns = i.conns.saturating_sub(1);
        if i.conns > 0 {
            return;
        }
        i.detached = Some(Instant::now());
        // Its process made a newer instance while this one's last connection was closing
        // (C_Finalize, then C_Initialize): it is done with this one.
        let (pid, born) = (i.pid, i.born);
        let replaced = pid.is_some() && t.by_secret.values().any(|o| o.pid == pid && o.born > born);
        if replaced {
            let gone = t.remove(&key).map(|i| i.id);
            drop(t);
            self.forget(gone.as_slice());
        }
    }

    /// Registers a new connection, or says which limit refuses it.
    fn admit(
        &self,
        id: u64,
        kind: SocketKind,
        uid: Option<u32>,
        stream: &UnixStream,
    ) -> Result<(), (&'static str, usize)> {
        let l = &self.settings.limits;
        let (global, per_uid) = match kind {
            SocketKind::Client => (
                ("max_connections", l.max_connections),
                ("max_connections_per_uid", l.max_connections_per_uid),
            ),
            SocketKind::Admin => (
                ("max_admin_connections", l.max_admin_connections),
                (
                    "max_admin_connections_per_uid",
                    l.max_admin_connections_per_uid,
                ),
            ),
        };
        let mut conns = self.conns.lock();
        if conns.per_uid.get(&(kind, uid)).copied().unwrap_or(0) >= per_uid.1 {
            return Err(per_uid);
        }
        if conns.count(kind) >= global.1 {
            return Err(global);
        }
        let clone = stream.try_clone().map_err(|e| {
            tracing::error!(error = %e, "cannot register a connection");
            global
        })?;
        conns.by_id.insert(
            id,
            ConnEntry {
                stream: clone,
                kind,
                uid,
            },
        );
        *conns.per_socket.entry(kind).or_default() += 1;
        *conns.per_uid.entry((kind, uid)).or_default() += 1;
        Ok(())
    }

    /// Who is calling (design §1), or why the handshake is refused.
    fn principal(&self, hello: &Hello, peer: Option<&PeerCred>) -> Result<Principal, Refusal> {
        let uid = peer.map(|p| p.uid);
        if let Some(key) = &hello.credentials {
            return self.authenticate_key(key.expose_secret(), peer);
        }
        let Some(peer) = peer else {
            return Ok(Principal::anonymous());
        };
        let mapped = {
            let mut svc = self.service.lock();
            get_mapping(svc.store_mut().connection(), peer.uid)
        };
        match mapped {
            Ok(Some(member)) => Ok(Principal::new(member)),
            Ok(None) => Ok(Principal {
                member: Member::UnixUid(peer.uid),
                unix_gids: peer.groups.clone(),
            }),
            Err(e) => {
                tracing::error!(error = %e, uid, "cannot read the uid mapping");
                Err(Refusal {
                    rv: rv::CKR_DEVICE_ERROR,
                    message: "keywardd cannot read its store; see its log".into(),
                })
            }
        }
    }

    fn authenticate_key(&self, key: &str, peer: Option<&PeerCred>) -> Result<Principal, Refusal> {
        let uid = peer.map(|p| p.uid);
        let key_id = credentials::key_id_of(key)
            .unwrap_or("(malformed)")
            .to_owned();
        // Check, evaluation and record under one hold of the throttle (lock order: the
        // throttle, then the service mutex), so parallel attempts are counted one by one.
        let mut throttle = self.throttle.lock();
        if let Some(left) = throttle.locked(uid, Instant::now()) {
            drop(throttle);
            tracing::warn!(uid, key_id, "service-account key refused: peer locked out");
            // Without the key id: the key was not checked, and identical refusals coalesce.
            self.audit_auth_refusal(
                None,
                peer,
                rv::CKR_PIN_LOCKED,
                "peer uid locked out after too many wrong service-account keys; the key was \
                 not checked",
            );
            return Err(Refusal {
                rv: rv::CKR_PIN_LOCKED,
                message: format!(
                    "too many wrong service-account keys from this user: try again in {} s",
                    left.as_secs().max(1)
                ),
            });
        }
        let found = {
            let mut svc = self.service.lock();
            credentials::authenticate(svc.store_mut().connection(), key)
        };
        let delay = match &found {
            Ok(Some(_)) => {
                throttle.success(&key_id, uid);
                Duration::ZERO
            }
            Ok(None) => throttle.failure(&key_id, uid, Instant::now()),
            Err(_) => Duration::ZERO,
        };
        drop(throttle);
        match found {
            Ok(Some(account)) => Ok(Principal::new(Member::ServiceAccount(account))),
            Ok(None) => {
                tracing::warn!(uid, key_id, "wrong service-account key");
                self.audit_auth_refusal(
                    Some(&key_id),
                    peer,
                    rv::CKR_PIN_INCORRECT,
                    "wrong, revoked or deleted service-account key",
                );
                std::thread::sleep(delay);
                Err(Refusal {
                    rv: rv::CKR_PIN_INCORRECT,
                    message: format!(
                        "the service-account key {key_id} (KEYWARD_CREDENTIALS) is wrong, \
                         revoked, or its account is deleted"
                    ),
                })
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot check a service-account key");
                Err(Refusal {
                    rv: rv::CKR_DEVICE_ERROR,
                    message: "keywardd cannot read its store; see its log".into(),
                })
            }
        }
    }

    /// Records a refused service-account key (`rv`: wrong, or its peer locked out) through
    /// the audit writer, where identical refusals coalesce and count against the peer uid's
    /// audit rate (design §6, §9); without a PKCS#11 service, in the store directly.
    fn audit_auth_refusal(
        &self,
        key_id: Option<&str>,
        peer: Option<&PeerCred>,
        rv: u64,
        why: &str,
    ) {
        let record = NewRecord {
            time_ms: self.clock.now_ms(),
            principal: peer.map_or_else(
                || Member::Anonymous.to_string(),
                |p| Member::UnixUid(p.uid).to_string(),
            ),
            peer_pid: peer.and_then(|p| p.pid),
            peer_uid: peer.map(|p| p.uid),
            instance: None,
            action: "auth.serviceAccountKey".into(),
            resource: key_id.map(|id| format!("serviceAccountKey:{id}")),
            outcome: Outcome::Denied,
            rv,
            detail: Some(why.into()),
            request_id: None,
        };
        if let Some(p11) = &self.pkcs11 {
            if let Err(e) = p11.audit().submit(record) {
                tracing::error!(error = %e, "cannot audit a refused service-account key");
            }
            return;
        }
        let mut svc = self.service.lock();
        let written = svc.store_mut().write().and_then(|tx| {
            audit::append(&tx, &record)?;
            Ok(tx.commit()?)
        });
        if let Err(e) = written {
            tracing::error!(error = %e, "cannot audit a wrong service-account key");
        }
    }

    /// The instance of this connection: new, or the one whose secret it presented (from the
    /// same pid only). A new module instance over a cap is refused (design §9).
    fn instance(
        &self,
        hello: &Hello,
        peer: Option<&PeerCred>,
    ) -> Result<(InstanceSecret, Joined), Refusal> {
        let pid = peer.and_then(|p| p.pid);
        let uid = peer.map(|p| p.uid);
        let module = hello.client == ClientKind::Module;
        let mut table = self.instances.lock();
        if let Some(secret) = &hello.instance_secret {
            let key = *secret.expose_secret();
            if let Some(inst) = table.by_secret.get_mut(&key) {
                if inst.pid != pid || pid.is_none() {
                    return Err(Refusal {
                        rv: rv::CKR_DEVICE_ERROR,
                        message: "this instance secret belongs to another process".into(),
                    });
                }
                inst.conns += 1;
                inst.detached = None;
                let joined = Joined {
                    id: inst.id.clone(),
                    key: Some(key),
                };
                return Ok((secret.clone(), joined));
            }
        }
        let (fresh, id) = Instances::fresh_secret();
        // A module presenting a secret this keywardd does not know (an earlier keywardd gave
        // it, design §4): the instance keeps it, bound to this pid, so the object handles
        // derived from it stay valid. Without a pid to bind it to, a new secret.
        let bytes = match &hello.instance_secret {
            Some(secret) if module && pid.is_some() => *secret.expose_secret(),
            _ => fresh,
        };
        if !module {
            return Ok((InstanceSecret::from_bytes(bytes), Joined { id, key: None }));
        }
        // This uid's instances that are done with go first: the same process making a new
        // instance finalised its old one.
        let forgotten = table.sweep(self.grace(), Some(uid), pid);
        let l = &self.settings.limits;
        let refused = if table.per_uid.get(&uid).copied().unwrap_or(0) >= l.max_instances_per_uid {
            Some(("max_instances_per_uid", l.max_instances_per_uid))
        } else if table.by_secret.len() >= l.max_instances {
            Some(("max_instances", l.max_instances))
        } else {
            None
        };
        if let Some((limit, max)) = refused {
            drop(table);
            self.forget(&forgotten);
            self.limit_log
                .lock()
                .refused(limit, max, uid, "a new module instance");
            return Err(Refusal {
                rv: rv::CKR_DEVICE_MEMORY,
                message: format!(
                    "keywardd refuses a new module instance: {} ([daemon] {limit} = {max}); \
                     instances are freed when their processes exit",
                    if limit == "max_instances" {
                        "it holds its limit of instances"
                    } else {
                        "this user holds its limit of instances"
                    }
                ),
            });
        }
        let pidfd = pid
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
            .and_then(|p| {
                rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok()
            });
        let born = table.made;
        table.by_secret.insert(
            bytes,
            Instance {
                id: id.clone(),
                pid,
                uid,
                conns: 1,
                detached: None,
                pidfd,
                born,
            },
        );
        *table.per_uid.entry(uid).or_default() += 1;
        table.made += 1;
        drop(table);
        self.forget(&forgotten);
        Ok((
            InstanceSecret::from_bytes(bytes),
            Joined {
                id,
                key: Some(bytes),
            },
        ))
    }
}

/// Accepts connections on `sockets` until `stop` is set, then shuts down: the sockets are
/// closed and removed, the read half of every connection is shut, and connection threads
/// get up to `settings.shutdown_grace` to finish. Returns the number of connections still
/// open when the wait ended.
pub fn serve(shared: &Arc<Shared>, sockets: Vec<BoundSocket>, stop: &AtomicBool) -> usize {
    for s in &sockets {
        tracing::info!(socket = s.kind.name(), path = %s.path.display(), "listening");
    }
    while !stop.load(Ordering::SeqCst) {
        let mut fds: Vec<rustix::event::PollFd<'_>> = sockets
            .iter()
            .map(|s| rustix::event::PollFd::new(&s.listener, rustix::event::PollFlags::IN))
            .collect();
        let timeout = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: i64::try_from(POLL_INTERVAL.as_nanos()).unwrap_or(200_000_000),
        };
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(0) => {
                shared.sweep_instances();
                continue;
            }
            Ok(_) => {}
            Err(e) if e == rustix::io::Errno::INTR => continue,
            Err(e) => {
                tracing::error!(error = %e, "poll failed");
                std::thread::sleep(POLL_INTERVAL);
                continue;
            }
        }
        drop(fds);
        for s in &sockets {
            accept_all(shared, s, stop);
        }
        shared.sweep_instances();
    }
    tracing::info!("shutting down: no new connections");
    drop(sockets);
    for conn in shared.conns.lock().by_id.values() {
        let _ = conn.stream.shutdown(std::net::Shutdown::Read);
    }
    let deadline = Instant::now() + shared.settings.shutdown_grace;
    loop {
        let open = shared.open_connections();
        if open == 0 {
            return 0;
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                open,
                "shutdown: connections still busy after the grace period"
            );
            return open;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn accept_all(shared: &Arc<Shared>, socket: &BoundSocket, stop: &AtomicBool) {
    loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let stream = match socket.listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // EMFILE and friends: back off rather than spin.
                tracing::error!(error = %e, socket = socket.kind.name(), "accept failed");
                std::thread::sleep(Duration::from_millis(50));
                return;
            }
        };
        let kind = socket.kind;
        let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        let peer = match peer_cred(&stream) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(conn = id, error = %e, "no peer credentials; caller is anonymous");
                None
            }
        };
        let uid = peer.as_ref().map(|p| p.uid);
        if let Err((limit, max)) = shared.admit(id, kind, uid, &stream) {
            let what = format!("a connection to the {} socket", kind.name());
            shared.limit_log.lock().refused(limit, max, uid, &what);
            let message = if limit.ends_with("_per_uid") {
                format!(
                    "this user holds its limit of {max} connections to keywardd's {} socket \
                     ([daemon] {limit}): close some, or share them",
                    kind.name()
                )
            } else {
                format!(
                    "keywardd holds its limit of {max} connections to its {} socket \
                     ([daemon] {limit}): try again later",
                    kind.name()
                )
            };
            refuse_busy(shared, stream, message);
            continue;
        }
        let shared2 = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name(format!("conn-{id}"))
            .spawn(move || {
                connection(&shared2, stream, kind, id, peer);
                shared2.conns.lock().remove(id);
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a connection thread");
            shared.conns.lock().remove(id);
        }
    }
}

/// Answers a connection over the limit with a refusal, in a short-lived thread that reads
/// its `Hello` first (a client whose `Hello` meets a closed socket sees only a broken pipe).
/// At most [`MAX_BUSY_REFUSALS`] such threads run at once; past that the connection is just
/// closed.
fn refuse_busy(shared: &Arc<Shared>, stream: UnixStream, message: String) {
    if shared.busy_refusals.fetch_add(1, Ordering::SeqCst) >= MAX_BUSY_REFUSALS {
        shared.busy_refusals.fetch_sub(1, Ordering::SeqCst);
        return;
    }
    let shared2 = Arc::clone(shared);
    let spawned = std::thread::Builder::new()
        .name("busy".into())
        .spawn(move || {
            let ready = stream
                .set_nonblocking(false)
                .and_then(|()| stream.set_write_timeout(Some(BUSY_TIMEOUT)));
            if ready.is_ok() {
                let timed = Deadline::new(stream, BUSY_TIMEOUT);
                if let Ok(Accepted { pending, .. }) = accept(timed) {
                    let _ = pending.refuse(rv::CKR_DEVICE_MEMORY, message);
                }
            }
            shared2.busy_refusals.fetch_sub(1, Ordering::SeqCst);
        });
    if spawned.is_err() {
        shared.busy_refusals.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A stream whose reads share one deadline while it is set (the whole handshake, design
/// §9), so that a byte a second does not hold a connection; writes keep their timeout.
struct Deadline {
    stream: UnixStream,
    until: Cell<Option<Instant>>,
}

impl Deadline {
    fn new(stream: UnixStream, within: Duration) -> Deadline {
        Deadline {
            stream,
            until: Cell::new(Some(Instant::now() + within)),
        }
    }

    /// Sets a deadline `within` from now on the reads to come.
    fn limit(&self, within: Duration) {
        self.until.set(Some(Instant::now() + within));
    }

    /// Ends the deadline: reads block until data comes.
    fn clear(&self) -> io::Result<()> {
        self.until.set(None);
        self.stream.set_read_timeout(None)
    }
}

impl Read for Deadline {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(until) = self.until.get() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            self.stream.set_read_timeout(Some(left))?;
        }
        self.stream.read(buf)
    }
}

impl io::Write for Deadline {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// Waits until `stream` has something to read (a request, or end of file). `idle`: how long
/// a quiet connection may stay; each time it passes, `may_close` decides (true: `false` is
/// returned and the caller closes the connection). A connection with data waiting is not
/// closed; a request that arrives just as it closes is not served, and the module, seeing
/// its session-less lane closed, sends it again on a new one.
fn wait_request(stream: &UnixStream, idle: Duration, may_close: &dyn Fn() -> bool) -> bool {
    keyward_wire::spin::wait_readable(stream, keyward_wire::spin::budget());
    let timeout = rustix::event::Timespec {
        tv_sec: i64::try_from(idle.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(idle.subsec_nanos()),
    };
    loop {
        let mut fds = [rustix::event::PollFd::new(
            stream,
            rustix::event::PollFlags::IN,
        )];
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(0) => {
                if may_close() {
                    // One last look: a request that came in meanwhile is served.
                    let mut fds = [rustix::event::PollFd::new(
                        stream,
                        rustix::event::PollFlags::IN,
                    )];
                    let zero = rustix::event::Timespec {
                        tv_sec: 0,
                        tv_nsec: 0,
                    };
                    return matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(n) if n > 0);
                }
            }
            Ok(_) => return true,
            Err(e) if e == rustix::io::Errno::INTR => {}
            // Let the read report it.
            Err(_) => return true,
        }
    }
}

/// Serves one connection to its end.
fn connection(
    shared: &Shared,
    stream: UnixStream,
    kind: SocketKind,
    id: u64,
    peer: Option<PeerCred>,
) {
    let limits = &shared.settings.limits;
    let setup = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_write_timeout(Some(WRITE_TIMEOUT)));
    if let Err(e) = setup {
        tracing::warn!(conn = id, error = %e, "cannot set up a connection");
        return;
    }
    let handshake = Duration::from_secs(limits.handshake_timeout_secs);
    let Accepted { hello, pending } = match accept(Deadline::new(stream, handshake)) {
        Ok(a) => a,
        Err(WireError::Closed) => return,
        Err(WireError::Timeout) => {
            tracing::info!(
                conn = id,
                socket = kind.name(),
                uid = peer.as_ref().map(|p| p.uid),
                "handshake not finished within [daemon] handshake_timeout_secs; closed"
            );
            return;
        }
        Err(e) => {
            tracing::info!(conn = id, socket = kind.name(), error = %e, "handshake failed");
            return;
        }
    };
    let resolved = shared
        .principal(&hello, peer.as_ref())
        .and_then(|p| Ok((shared.instance(&hello, peer.as_ref())?, p)));
    let ((secret, joined), principal) = match resolved {
        Ok(r) => r,
        Err(Refusal { rv, message }) => {
            let _ = pending.refuse(rv, message);
            return;
        }
    };
    let welcomed = pending.welcome(&secret);
    drop(secret);
    let mut conn = match welcomed {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(conn = id, error = %e, "client left during the handshake");
            shared.leave(&joined);
            return;
        }
    };
    if let Err(e) = conn.get_ref().clear() {
        tracing::warn!(conn = id, error = %e, "cannot clear the handshake timeout");
        shared.leave(&joined);
        return;
    }
    let caller = Caller {
        principal,
        peer_pid: peer.as_ref().and_then(|p| p.pid),
        peer_uid: peer.as_ref().map(|p| p.uid),
        instance: Some(joined.id.clone()),
    };
    tracing::debug!(
        conn = id,
        socket = kind.name(),
        principal = %caller.principal.member,
        pid = caller.peer_pid,
        uid = caller.peer_uid,
        "connection accepted"
    );
    let mut p11 = match kind {
        SocketKind::Client => shared
            .pkcs11
            .as_ref()
            .map(|s| s.connect(&caller, joined.key.as_ref())),
        SocketKind::Admin => None,
    };
    if let Some(p) = p11.as_mut() {
        // Without the clone a key whose client left is kept as before (logged).
        match conn.get_ref().stream.try_clone() {
            Ok(s) => p.watch_peer(s),
            Err(e) => tracing::warn!(conn = id, error = %e, "cannot watch the client's socket"),
        }
    }
    let auth = |key: &str| {
        shared
            .authenticate_key(key, peer.as_ref())
            .map_err(|r| P11Error::new(r.rv, r.message))
    };
    let idle = Duration::from_secs(match kind {
        SocketKind::Admin => limits.admin_idle_secs,
        SocketKind::Client => limits.client_idle_secs,
    });
    loop {
        let ready = {
            let p11 = p11.as_ref();
            let may_close = || p11.is_none_or(ClientConnection::may_close_idle);
            wait_request(&conn.get_ref().stream, idle, &may_close)
        };
        // A connection that holds nothing gets the handshake's deadline for a whole request,
        // so that a request sent a byte at a time does not hold it (design §9).
        let bare = p11.as_ref().is_none_or(ClientConnection::may_close_idle);
        if bare {
            conn.get_ref().limit(handshake);
        }
        if !ready {
            tracing::debug!(
                conn = id,
                socket = kind.name(),
                "idle with no session and no login; closed"
            );
            break;
        }
        let request = match conn.next_request() {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(WireError::Timeout) if bare => {
                tracing::info!(
                    conn = id,
                    socket = kind.name(),
                    uid = caller.peer_uid,
                    "request not finished within [daemon] handshake_timeout_secs; closed"
                );
                break;
            }
            Err(e) => {
                tracing::debug!(conn = id, error = %e, "connection dropped");
                break;
            }
        };
        if bare {
            if let Err(e) = conn.get_ref().clear() {
                tracing::warn!(conn = id, error = %e, "cannot clear a request deadline");
                break;
            }
        }
        let answer = match kind {
            SocketKind::Admin => admin_request(shared, &caller, request.body),
            SocketKind::Client => client_request(shared, p11.as_mut(), &auth, request.body),
        };
        if let Err(e) = conn.respond(request.id, answer) {
            tracing::debug!(conn = id, error = %e, "cannot send a response");
            break;
        }
    }
    // The PKCS#11 connection closes its sessions before the instance may be forgotten.
    drop(p11);
    shared.leave(&joined);
}

impl Shared {
    /// Adds keywardd's live counts (open connections per socket, module instances) to a
    /// `status` answer that carries store-wide counts (its caller holds kms.auditLogs.read
    /// on every organisation); others' answers are left as they are.
    fn live_status(&self, mut r: AdminResponse) -> AdminResponse {
        let Ok(mut js) = serde_json::from_str::<serde_json::Value>(&r.json) else {
            return r;
        };
        if js["counts"].is_null() {
            return r;
        }
        let client = self.connections_on(SocketKind::Client);
        let admin = self.connections_on(SocketKind::Admin);
        let instances = self.module_instances();
        js["daemon"]["connections"] = serde_json::json!({"client": client, "admin": admin});
        js["daemon"]["moduleInstances"] = serde_json::json!(instances);
        r.json = js.to_string();
        if let Some(t) = r.table.as_mut() {
            let at = t.rows.len().min(1);
            let l = &self.settings.limits;
            t.rows.insert(
                at,
                vec![
                    "module instances".into(),
                    format!("{instances} (max {})", l.max_instances),
                ],
            );
            t.rows.insert(
                at,
                vec![
                    "connections".into(),
                    format!(
                        "{client} client (max {}), {admin} admin (max {})",
                        l.max_connections, l.max_admin_connections
                    ),
                ],
            );
        }
        r
    }
}

fn admin_request(
    shared: &Shared,
    caller: &Caller,
    body: RequestBody,
) -> Result<ResponseBody, ErrorReply> {
    match body {
        RequestBody::Admin(req) => {
            // A read of the audit log shows the counts of open coalescing windows too (design
            // §6): they are written first.
            if matches!(
                req,
                AdminRequest::AuditTail { .. }
                    | AdminRequest::AuditQuery { .. }
                    | AdminRequest::AuditVerify
            ) {
                if let Some(p11) = &shared.pkcs11 {
                    if let Err(e) = p11.audit().flush() {
                        tracing::warn!(error = %e, "cannot write pending audit counts before a read");
                    }
                }
            }
            let status = matches!(req, AdminRequest::Status);
            let result = shared.service.lock().handle(caller, req);
            result
                .map(|r| if status { shared.live_status(r) } else { r })
                .map(ResponseBody::Admin)
                .map_err(|e| ErrorReply::with_message(e.rv, e.message))
        }
        RequestBody::Pkcs11(_) | RequestBody::Crypto(_) => Err(ErrorReply::with_message(
            rv::CKR_FUNCTION_NOT_SUPPORTED,
            "PKCS#11 and crypto requests go to the client socket, not the admin socket",
        )),
    }
}

fn client_request(
    shared: &Shared,
    p11: Option<&mut ClientConnection>,
    auth: &dyn Fn(&str) -> Result<Principal, P11Error>,
    body: RequestBody,
) -> Result<ResponseBody, ErrorReply> {
    match body {
        RequestBody::Pkcs11(req) => {
            if let Some(conn) = p11 {
                conn.handle(req, auth)
                    .map(ResponseBody::Pkcs11)
                    .map_err(|e| ErrorReply::new(e.rv()))
            } else if matches!(req, Pkcs11Request::Ping) {
                Ok(ResponseBody::Pkcs11(Pkcs11Response::Pong))
            } else {
                Err(ErrorReply::new(rv::CKR_FUNCTION_NOT_SUPPORTED))
            }
        }
        RequestBody::Crypto(req) => match p11 {
            Some(conn) => conn.crypto(req).map(ResponseBody::Crypto),
            None => Err(ErrorReply::with_message(
                rv::CKR_FUNCTION_NOT_SUPPORTED,
                "keywardd serves no token on this socket",
            )),
        },
        RequestBody::Admin(_) => Err(ErrorReply::with_message(
            rv::CKR_FUNCTION_NOT_SUPPORTED,
            format!(
                "admin requests go to the admin socket ({}), not the client socket",
                shared.admin_path.display()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_resolve_by_number_and_name() {
        assert_eq!(resolve_group("4242").unwrap(), 4242);
        assert_eq!(resolve_group("root").unwrap(), 0);
        let e = resolve_group("no-such-group-keyward").unwrap_err();
        assert!(e.contains("[admin] group"), "{e}");
    }

    #[test]
    fn bind_removes_only_stale_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.sock");
        let s = bind(&p, SocketKind::Admin, 0o660, None).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        // A live socket is not taken over.
        let e = bind(&p, SocketKind::Admin, 0o660, None).unwrap_err();
        assert!(e.contains("another process is listening"), "{e}");
        // A stale one (its listener closed without removing the file) is.
        let stale = UnixListener::bind(dir.path().join("b.sock")).unwrap();
        drop(stale);
        let b = bind(&dir.path().join("b.sock"), SocketKind::Client, 0o666, None).unwrap();
        let mode = std::fs::metadata(b.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666);
        // A regular file is never removed.
        let f = dir.path().join("file");
        std::fs::write(&f, "x").unwrap();
        assert!(bind(&f, SocketKind::Client, 0o666, None)
            .unwrap_err()
            .contains("not a socket"));
        assert!(f.exists());
        drop(s);
        assert!(!p.exists(), "dropping the socket removes its file");
    }
}
