//! A client connection's transport after the handshake (issue 19 item 2): the Unix socket,
//! and, once the module asks for one (`Pkcs11Request::OpenRing`), a shared-memory ring beside
//! it ([`super::ring`], protocol in `keyward_wire::ring`). With a ring, requests come from
//! either: the ring for those that fit an area, the socket for larger ones; each answer goes
//! back the way its request came (a ring answer too large for its area goes on the socket,
//! announced in the ring).

use super::limits::Holder;
use super::ring::{self, Made, Refusal};
use keyward_wire::codec::{decode, encode};
use keyward_wire::pkcs11::Pkcs11Response;
use keyward_wire::ring::{Incoming, Ring, RING_BYTES};
use keyward_wire::{rv, ErrorReply, Request, Response, ResponseBody, WireError};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use zeroize::Zeroizing;

/// What waiting on a connection with a ring found.
#[derive(Debug)]
pub enum Next {
    /// A request from the ring, decoded from keywardd's own copy.
    Request(Request),
    /// The socket has something (a frame, or end of file): read it there.
    Socket,
    /// Idle for the idle time and closing loses nothing.
    Idle,
    /// The ring is out of step (a malformed message, a length beyond its area): close.
    Broken(WireError),
}

/// Waits for the next request on a connection with a ring: the ring, the socket, or the idle
/// time (after which `may_close` decides, as for a socket-only connection).
pub fn wait(
    ring: &mut Ring,
    stream: &UnixStream,
    idle: Duration,
    may_close: &dyn Fn() -> bool,
) -> Next {
    let mut spin = keyward_wire::spin::budget();
    loop {
        match ring.receive(stream, spin, Some(idle)) {
            Ok(Incoming::Message(bytes)) => {
                return match decode::<Request>(&bytes) {
                    Ok(r) => Next::Request(r),
                    Err(e) => Next::Broken(e),
                }
            }
            Ok(Incoming::OnSocket | Incoming::Socket) => return Next::Socket,
            Ok(Incoming::Timeout) => {
                if may_close() {
                    // One last look: a request that came in meanwhile is served.
                    return match ring.receive(stream, Duration::ZERO, Some(Duration::ZERO)) {
                        Ok(Incoming::Timeout) => Next::Idle,
                        Ok(Incoming::Message(bytes)) => match decode::<Request>(&bytes) {
                            Ok(r) => Next::Request(r),
                            Err(e) => Next::Broken(e),
                        },
                        Ok(_) => Next::Socket,
                        Err(e) => Next::Broken(e),
                    };
                }
                spin = Duration::ZERO;
            }
            Err(e) => return Next::Broken(e),
        }
    }
}

/// Sends the answer to a request that came from the ring: in the ring if it fits, else
/// announced in the ring and written on the socket.
pub fn respond<W: std::io::Write>(
    ring: &mut Ring,
    socket: &mut W,
    id: u64,
    body: Result<ResponseBody, ErrorReply>,
) -> Result<(), WireError> {
    let bytes = Zeroizing::new(encode(&Response { id, body })?);
    if Ring::fits(bytes.len()) {
        ring.send(&bytes)
    } else {
        ring.send_on_socket()?;
        keyward_wire::frame::write_frame(socket, &bytes)
    }
}

/// Answers `OpenRing` on `stream`: makes a ring charged to `holder` and sends its answer and
/// descriptors, or answers why not (the connection then keeps to the socket). `answer`
/// writes one response frame on the socket.
pub fn open(
    limits: &std::sync::Arc<super::limits::Limits>,
    holder: &Holder,
    stream: &UnixStream,
    conn: u64,
    answer: &mut dyn FnMut(Result<ResponseBody, ErrorReply>) -> Result<(), WireError>,
) -> Option<Made> {
    match ring::make(limits, holder) {
        Ok((made, client_fds)) => {
            let body = ResponseBody::Pkcs11(Pkcs11Response::Ring {
                bytes: RING_BYTES as u64,
            });
            let fds = [
                client_fds[0].as_fd(),
                client_fds[1].as_fd(),
                client_fds[2].as_fd(),
            ];
            let sent = answer(Ok(body)).map_err(|e| e.to_string()).and_then(|()| {
                keyward_wire::ring::send_fds(stream, &fds).map_err(|e| e.to_string())
            });
            // keywardd keeps its mapping and its own eventfds, not the client's copies.
            drop(client_fds);
            match sent {
                Ok(()) => {
                    tracing::debug!(conn, transport = "ring", "shared-memory ring set up");
                    Some(made)
                }
                Err(e) => {
                    tracing::debug!(conn, error = %e, "cannot send a ring");
                    None
                }
            }
        }
        Err(Refusal::Limit) => {
            let _ = answer(Err(ErrorReply::with_message(
                rv::CKR_DEVICE_MEMORY,
                "a shared-memory ring would exceed the buffered bytes cap; use the socket",
            )));
            None
        }
        Err(Refusal::Io(e)) => {
            static LOGGED: AtomicBool = AtomicBool::new(false);
            if !LOGGED.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %e, transport = "socket",
                    "cannot set up a shared-memory ring; clients use the socket");
            }
            let _ = answer(Err(ErrorReply::with_message(
                rv::CKR_FUNCTION_NOT_SUPPORTED,
                format!("no shared-memory ring: {e}"),
            )));
            None
        }
    }
}

/// Start-up check that rings can be made here (memfd, seals, mmap, eventfd: a seccomp
/// filter may forbid one); logs the transport clients will get.
pub fn probe(limits: &std::sync::Arc<super::limits::Limits>) {
    match ring::make(limits, &Holder::new(None, "keywardd start-up probe")) {
        Ok(made) => {
            drop(made);
            tracing::info!(transport = "ring", ring_bytes = RING_BYTES,
                "client transport: shared-memory rings (the socket for large messages and as fallback)");
        }
        Err(Refusal::Limit) => tracing::info!(
            transport = "socket",
            "client transport: socket (a ring exceeds the buffered bytes cap)"
        ),
        Err(Refusal::Io(e)) => tracing::warn!(transport = "socket", error = %e,
            "client transport: socket only; shared-memory rings cannot be made here"),
    }
}
