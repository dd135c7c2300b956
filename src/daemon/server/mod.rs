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
//!
//! Files: this one binds the sockets and keeps [`Shared`] (the instance and connection
//! tables, the limit log); `handshake.rs` admits a connection, decides who is calling and
//! joins or makes its instance; `connection.rs` accepts, serves and shuts down.

mod connection;
mod handshake;

pub use connection::serve;

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
