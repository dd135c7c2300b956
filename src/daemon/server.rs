//! The two sockets of keywardd (design §1) and the connections on them.
//!
//! - **Admin socket** (0660, optional group): admin requests, each handled by the one
//!   [`AdminService`] behind a mutex, for the caller the handshake established.
//! - **Client socket** (0666): the PKCS#11 half, served by [`super::pkcs11`] (one
//!   [`super::pkcs11::ClientConnection`] per connection; without a PKCS#11 service only `Ping`
//!   is answered and everything else is `CKR_FUNCTION_NOT_SUPPORTED`); admin requests there
//!   are refused with a message pointing at the admin socket.
//!
//! One thread per connection, at most `max_connections` at once (more are closed at once).
//! Who is calling is decided here, once per connection, in this order: the service-account
//! key of the `Hello` (`KEYWARD_CREDENTIALS`; a wrong one is refused with
//! `CKR_PIN_INCORRECT` after a delay growing per (key id, peer uid), and a peer with many
//! failures gets `CKR_PIN_LOCKED` for a while); else the peer uid's mapping; else
//! `unix-uid:N` with the peer's groups (`SO_PEERCRED`, `SO_PEERGROUPS`).
//!
//! Instances: a module's first connection gets a new instance secret; a connection presenting
//! one joins that instance only from the same pid. An unknown secret (keywardd restarted) is
//! treated as a new instance with a new secret.
//!
//! Lock order: the service mutex, then nothing (the throttle, instance and connection tables
//! are taken on their own, never while the service mutex is held). Shutdown: stop accepting,
//! remove the socket files, shut the read half of every connection (a request being handled
//! still gets its answer), wait for the connection threads up to a bound.

use super::peercred::{peer_cred, PeerCred};
use super::pkcs11::{ClientConnection, Pkcs11Service};
use super::throttle::Throttle;
use crate::admin::{credentials, AdminService, Caller, Clock};
use crate::audit::{self, NewRecord, Outcome};
use crate::policy::{Member, Principal};
use crate::store::iam::get_mapping;
use keyward_wire::pkcs11::{Pkcs11Request, Pkcs11Response};
use keyward_wire::server::{accept, Accepted};
use keyward_wire::{
    rv, ClientKind, ErrorReply, Hello, InstanceSecret, RequestBody, ResponseBody, WireError,
};
use parking_lot::Mutex;
use rand::RngCore;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a client may take to send its `Hello`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an admin connection may stay idle between requests.
const ADMIN_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a response may take to be written.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the accept loop looks at the shutdown flag.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Connections over the limit answered with a refusal at once; more are just closed.
const MAX_BUSY_REFUSALS: usize = 16;
/// How long a connection over the limit gets to send its `Hello`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(1);
/// Instances remembered (oldest forgotten first).
const MAX_INSTANCES: usize = 10_000;

/// Which socket a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// Cap on open connections, both sockets together.
    pub max_connections: usize,
    /// How long shutdown waits for connections to finish.
    pub shutdown_grace: Duration,
}

/// One module instance.
#[derive(Debug, Clone)]
struct Instance {
    id: String,
    pid: Option<u32>,
}

/// Known instances by secret.
#[derive(Default)]
struct Instances {
    by_secret: HashMap<[u8; 32], Instance>,
    order: VecDeque<[u8; 32]>,
}

impl Instances {
    fn new_instance(&mut self, pid: Option<u32>, remember: bool) -> (InstanceSecret, Instance) {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let mut idb = [0u8; 6];
        rand::rngs::OsRng.fill_bytes(&mut idb);
        let id: String = idb.iter().map(|b| format!("{b:02x}")).collect();
        let inst = Instance { id, pid };
        if remember {
            if self.order.len() >= MAX_INSTANCES {
                if let Some(old) = self.order.pop_front() {
                    self.by_secret.remove(&old);
                }
            }
            self.by_secret.insert(bytes, inst.clone());
            self.order.push_back(bytes);
        }
        (InstanceSecret::from_bytes(bytes), inst)
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
    conns: Mutex<HashMap<u64, UnixStream>>,
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
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            busy_refusals: AtomicUsize::new(0),
            pkcs11,
        })
    }

    /// Open connections.
    pub fn open_connections(&self) -> usize {
        self.conns.lock().len()
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
        if let Some(left) = self.throttle.lock().locked(uid, Instant::now()) {
            tracing::warn!(uid, key_id, "service-account key refused: peer locked out");
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
        match found {
            Ok(Some(account)) => {
                self.throttle.lock().success(&key_id, uid);
                Ok(Principal::new(Member::ServiceAccount(account)))
            }
            Ok(None) => {
                let delay = self.throttle.lock().failure(&key_id, uid, Instant::now());
                tracing::warn!(uid, key_id, "wrong service-account key");
                self.audit_auth_failure(&key_id, peer);
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

    fn audit_auth_failure(&self, key_id: &str, peer: Option<&PeerCred>) {
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
            resource: Some(format!("serviceAccountKey:{key_id}")),
            outcome: Outcome::Denied,
            rv: rv::CKR_PIN_INCORRECT,
            detail: Some("wrong, revoked or deleted service-account key".into()),
            request_id: None,
        };
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
    /// same pid only).
    fn instance(
        &self,
        hello: &Hello,
        peer: Option<&PeerCred>,
    ) -> Result<(InstanceSecret, Instance), Refusal> {
        let pid = peer.and_then(|p| p.pid);
        let remember = hello.client == ClientKind::Module;
        let mut table = self.instances.lock();
        if let Some(secret) = &hello.instance_secret {
            if let Some(inst) = table.by_secret.get(secret.expose_secret()) {
                if inst.pid != pid || pid.is_none() {
                    return Err(Refusal {
                        rv: rv::CKR_DEVICE_ERROR,
                        message: "this instance secret belongs to another process".into(),
                    });
                }
                return Ok((secret.clone(), inst.clone()));
            }
        }
        Ok(table.new_instance(pid, remember))
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
            Ok(0) => continue,
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
    }
    tracing::info!("shutting down: no new connections");
    drop(sockets);
    for conn in shared.conns.lock().values() {
        let _ = conn.shutdown(std::net::Shutdown::Read);
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
        {
            let mut conns = shared.conns.lock();
            if conns.len() >= shared.settings.max_connections {
                tracing::warn!(
                    max = shared.settings.max_connections,
                    socket = kind.name(),
                    "connection limit reached; refusing a new connection"
                );
                drop(conns);
                refuse_busy(shared, stream);
                continue;
            }
            match stream.try_clone() {
                Ok(clone) => {
                    conns.insert(id, clone);
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot register a connection");
                    continue;
                }
            }
        }
        let shared2 = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name(format!("conn-{id}"))
            .spawn(move || {
                connection(&shared2, stream, kind, id);
                shared2.conns.lock().remove(&id);
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a connection thread");
            shared.conns.lock().remove(&id);
        }
    }
}

/// Answers a connection over the limit with a refusal, in a short-lived thread that reads
/// its `Hello` first (a client whose `Hello` meets a closed socket sees only a broken pipe).
/// At most [`MAX_BUSY_REFUSALS`] such threads run at once; past that the connection is just
/// closed.
fn refuse_busy(shared: &Arc<Shared>, stream: UnixStream) {
    if shared.busy_refusals.fetch_add(1, Ordering::SeqCst) >= MAX_BUSY_REFUSALS {
        shared.busy_refusals.fetch_sub(1, Ordering::SeqCst);
        return;
    }
    let max = shared.settings.max_connections;
    let shared2 = Arc::clone(shared);
    let spawned = std::thread::Builder::new()
        .name("busy".into())
        .spawn(move || {
            let ready = stream
                .set_nonblocking(false)
                .and_then(|()| stream.set_read_timeout(Some(BUSY_TIMEOUT)))
                .and_then(|()| stream.set_write_timeout(Some(BUSY_TIMEOUT)));
            if ready.is_ok() {
                if let Ok(Accepted { pending, .. }) = accept(stream) {
                    let _ = pending.refuse(
                        rv::CKR_DEVICE_ERROR,
                        format!("keywardd is at its limit of {max} connections: try again later"),
                    );
                }
            }
            shared2.busy_refusals.fetch_sub(1, Ordering::SeqCst);
        });
    if spawned.is_err() {
        shared.busy_refusals.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves one connection to its end.
fn connection(shared: &Shared, stream: UnixStream, kind: SocketKind, id: u64) {
    let setup = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT)))
        .and_then(|()| stream.set_write_timeout(Some(WRITE_TIMEOUT)));
    if let Err(e) = setup {
        tracing::warn!(conn = id, error = %e, "cannot set up a connection");
        return;
    }
    let peer = match peer_cred(&stream) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(conn = id, error = %e, "no peer credentials; caller is anonymous");
            None
        }
    };
    let Accepted { hello, pending } = match accept(stream) {
        Ok(a) => a,
        Err(WireError::Closed) => return,
        Err(e) => {
            tracing::info!(conn = id, socket = kind.name(), error = %e, "handshake failed");
            return;
        }
    };
    let resolved = shared
        .principal(&hello, peer.as_ref())
        .and_then(|p| Ok((shared.instance(&hello, peer.as_ref())?, p)));
    let ((secret, instance), principal) = match resolved {
        Ok(r) => r,
        Err(Refusal { rv, message }) => {
            let _ = pending.refuse(rv, message);
            return;
        }
    };
    let mut conn = match pending.welcome(&secret) {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(conn = id, error = %e, "client left during the handshake");
            return;
        }
    };
    drop(secret);
    let idle = match kind {
        SocketKind::Admin => Some(ADMIN_IDLE_TIMEOUT),
        SocketKind::Client => None,
    };
    if let Err(e) = conn.get_ref().set_read_timeout(idle) {
        tracing::warn!(conn = id, error = %e, "cannot set the idle timeout");
        return;
    }
    let caller = Caller {
        principal,
        peer_pid: peer.as_ref().and_then(|p| p.pid),
        peer_uid: peer.as_ref().map(|p| p.uid),
        instance: Some(instance.id),
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
        SocketKind::Client => shared.pkcs11.as_ref().map(|s| s.connect(&caller)),
        SocketKind::Admin => None,
    };
    let auth = |key: &str| {
        shared
            .authenticate_key(key, peer.as_ref())
            .map_err(|r| r.rv)
    };
    loop {
        // Clients send their next call soon after an answer: look briefly before sleeping.
        keyward_wire::spin::wait_readable(conn.get_ref(), keyward_wire::spin::budget());
        let request = match conn.next_request() {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(conn = id, error = %e, "connection dropped");
                break;
            }
        };
        let answer = match kind {
            SocketKind::Admin => admin_request(shared, &caller, request.body),
            SocketKind::Client => client_request(shared, p11.as_mut(), &auth, request.body),
        };
        if let Err(e) = conn.respond(request.id, answer) {
            tracing::debug!(conn = id, error = %e, "cannot send a response");
            break;
        }
    }
}

fn admin_request(
    shared: &Shared,
    caller: &Caller,
    body: RequestBody,
) -> Result<ResponseBody, ErrorReply> {
    match body {
        RequestBody::Admin(req) => {
            let result = shared.service.lock().handle(caller, req);
            result
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
    auth: &dyn Fn(&str) -> Result<Principal, u64>,
    body: RequestBody,
) -> Result<ResponseBody, ErrorReply> {
    match body {
        RequestBody::Pkcs11(req) => {
            if let Some(conn) = p11 {
                conn.handle(req, auth)
                    .map(ResponseBody::Pkcs11)
                    .map_err(ErrorReply::new)
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
