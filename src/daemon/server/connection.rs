//! Serving: the accept loop and shutdown, busy refusals, the handshake deadline and one
//! thread per connection answering admin and client requests.

use super::*;
use crate::daemon::transport;

/// Accepts connections on `sockets` until `stop` is set, then shuts down: the sockets are
/// closed and removed, the read half of every connection is shut, and connection threads
/// get up to `settings.shutdown_grace` to finish. Returns the number of connections still
/// open when the wait ended.
pub fn serve(shared: &Arc<Shared>, sockets: Vec<BoundSocket>, stop: &AtomicBool) -> usize {
    for s in &sockets {
        tracing::info!(socket = s.kind.name(), path = %s.path.display(), "listening");
    }
    if let Some(svc) = shared.pkcs11.as_ref() {
        transport::probe(svc.limits());
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
            // The refused connection gives its slot back before the client reads the
            // refusal: a client that connects again at once (a flood stopping at the
            // instance cap, then joining its first instance) finds its own count, not one
            // more (hostile connections test, seen once: 7 connections where the cap is 8).
            shared.conns.lock().remove(id);
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
    // The shared-memory ring, once the module asked for one (issue 19 item 2).
    let mut ring: Option<crate::daemon::ring::Made> = None;
    loop {
        let from_ring = match ring.as_mut() {
            None => None,
            Some(made) => {
                let p11 = p11.as_ref();
                let may_close = || p11.is_none_or(ClientConnection::may_close_idle);
                match transport::wait(&mut made.ring, &conn.get_ref().stream, idle, &may_close) {
                    transport::Next::Request(r) => Some(r),
                    transport::Next::Socket => None,
                    transport::Next::Idle => {
                        tracing::debug!(conn = id, "idle with no session and no login; closed");
                        break;
                    }
                    transport::Next::Broken(e) => {
                        tracing::debug!(conn = id, error = %e, "ring out of step; closed");
                        break;
                    }
                }
            }
        };
        let via_ring = from_ring.is_some();
        let request = match from_ring {
            Some(r) => r,
            None => match next_from_socket(
                &mut conn,
                p11.as_ref(),
                ring.is_some(),
                (idle, handshake),
                (id, kind, caller.peer_uid),
            ) {
                Some(r) => r,
                None => break,
            },
        };
        let open_ring = matches!(
            (&request.body, kind),
            (
                RequestBody::Pkcs11(Pkcs11Request::OpenRing),
                SocketKind::Client
            )
        );
        if let (true, Some(svc)) = (
            open_ring && ring.is_none() && !via_ring,
            shared.pkcs11.as_ref(),
        ) {
            let holder = crate::daemon::limits::Holder::new(
                caller.peer_uid,
                &caller.principal.member.to_string(),
            );
            let stream = conn.get_ref().stream.try_clone();
            let Ok(stream) = stream else { break };
            ring = transport::open(svc.limits(), &holder, &stream, id, &mut |answer| {
                conn.respond(request.id, answer)
            });
            continue;
        }
        let answer = match kind {
            SocketKind::Admin => admin_request(shared, &caller, request.body),
            SocketKind::Client => client_request(shared, p11.as_mut(), &auth, request.body),
        };
        let sent = match ring.as_mut() {
            Some(made) if via_ring => {
                transport::respond(&mut made.ring, conn.get_mut(), request.id, answer)
            }
            _ => conn.respond(request.id, answer),
        };
        if let Err(e) = sent {
            tracing::debug!(conn = id, error = %e, "cannot send a response");
            break;
        }
    }
    // The PKCS#11 connection closes its sessions before the instance may be forgotten.
    drop(ring);
    drop(p11);
    shared.leave(&joined);
}

/// The next request from the socket (waiting for it first unless a ring's wait already
/// did), or `None` to close the connection.
fn next_from_socket(
    conn: &mut keyward_wire::server::Connection<Deadline>,
    p11: Option<&ClientConnection>,
    waited: bool,
    limits: (Duration, Duration),
    who: (u64, SocketKind, Option<u32>),
) -> Option<keyward_wire::Request> {
    let (idle, handshake) = limits;
    let (id, kind, uid) = who;
    let ready = waited || {
        let may_close = || p11.is_none_or(ClientConnection::may_close_idle);
        wait_request(&conn.get_ref().stream, idle, &may_close)
    };
    // A connection that holds nothing gets the handshake's deadline for a whole request,
    // so that a request sent a byte at a time does not hold it (design §9).
    let bare = p11.is_none_or(ClientConnection::may_close_idle);
    if bare {
        conn.get_ref().limit(handshake);
    }
    if !ready {
        tracing::debug!(
            conn = id,
            socket = kind.name(),
            "idle with no session and no login; closed"
        );
        return None;
    }
    let request = match conn.next_request() {
        Ok(Some(r)) => r,
        Ok(None) => return None,
        Err(WireError::Timeout) if bare => {
            tracing::info!(
                conn = id,
                socket = kind.name(),
                uid,
                "request not finished within [daemon] handshake_timeout_secs; closed"
            );
            return None;
        }
        Err(e) => {
            tracing::debug!(conn = id, error = %e, "connection dropped");
            return None;
        }
    };
    if bare {
        if let Err(e) = conn.get_ref().clear() {
            tracing::warn!(conn = id, error = %e, "cannot clear a request deadline");
            return None;
        }
    }
    Some(request)
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
