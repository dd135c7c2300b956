//! A small blocking client over a Unix socket, for the module and keywardctl.
//!
//! No threads, no async runtime: the module lives in arbitrary host processes. One request
//! is in flight at a time; the caller serialises access (`&mut self`).
//!
//! After any error that may leave the stream mid-frame or out of step (I/O, timeout,
//! malformed or mismatched response) the client marks itself unusable and every further
//! call returns [`WireError::Broken`] without touching the socket: open a new one. A client
//! used from a forked child returns [`WireError::Forked`] without touching the socket, so a
//! child can never interleave frames with its parent on the shared descriptor.
//!
//! Writes cannot raise `SIGPIPE` in the host: on Linux std's `UnixStream` sends with
//! `MSG_NOSIGNAL`, so a daemon that went away gives `EPIPE`, i.e. a disconnect error.

use crate::codec::{decode, encode, recv_secret, send_secret};
use crate::envelope::{Request, RequestBody, Response, ResponseBody};
use crate::error::WireError;
use crate::frame::read_frame;
use crate::handshake::{decode_reply, Hello, InstanceSecret};
use crate::pkcs11::{Pkcs11Request, Pkcs11Response};
use crate::ring::{Incoming, Ring, RingMemory, RING_BYTES};
use crate::rv;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;
use zeroize::Zeroizing;

/// Socket timeouts for a [`Client`]. `None` waits forever (the default: token calls such as
/// RSA key generation can take seconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientOptions {
    /// Timeout of each read from the socket, the handshake included.
    pub read_timeout: Option<Duration>,
    /// Timeout of each write to the socket, the handshake included.
    pub write_timeout: Option<Duration>,
}

/// A connection to keywardd after a successful handshake.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    instance_secret: InstanceSecret,
    next_id: u64,
    owner: u32,
    broken: bool,
    /// The shared-memory ring, once [`Client::open_ring`] set it up.
    ring: Option<Ring>,
}

impl Client {
    /// Connects to the socket at `path` and performs the handshake, without timeouts.
    pub fn connect(path: impl AsRef<Path>, hello: &Hello) -> Result<Self, WireError> {
        Self::connect_with(path, hello, &ClientOptions::default())
    }

    /// Connects to the socket at `path` with `options` and performs the handshake.
    ///
    /// A missing socket or a daemon not listening is [`WireError::Connect`]; a refusal
    /// [`WireError::Refused`]; a daemon of another protocol version
    /// [`WireError::VersionMismatch`].
    pub fn connect_with(
        path: impl AsRef<Path>,
        hello: &Hello,
        options: &ClientOptions,
    ) -> Result<Self, WireError> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path).map_err(|source| WireError::Connect {
            path: path.to_owned(),
            source,
        })?;
        Self::handshake(stream, hello, options)
    }

    /// Performs the handshake on an already connected stream.
    pub fn handshake(
        stream: UnixStream,
        hello: &Hello,
        options: &ClientOptions,
    ) -> Result<Self, WireError> {
        stream
            .set_read_timeout(options.read_timeout)
            .and_then(|()| stream.set_write_timeout(options.write_timeout))
            .map_err(WireError::Io)?;
        send_secret(&mut &stream, hello)?;
        let reply = Zeroizing::new(read_frame(&mut &stream)?);
        let instance_secret = decode_reply(&reply, hello.protocol_version)?;
        Ok(Client {
            stream,
            instance_secret,
            next_id: 1,
            owner: std::process::id(),
            broken: false,
            ring: None,
        })
    }

    /// The instance secret the daemon gave in its `Welcome`; present it in the next `Hello`.
    pub fn instance_secret(&self) -> &InstanceSecret {
        &self.instance_secret
    }

    /// False once an error made the connection unusable (see the module docs).
    pub fn is_usable(&self) -> bool {
        !self.broken && std::process::id() == self.owner
    }

    /// True if keywardd has closed this connection while no request was in flight (it closes
    /// connections that have no session and no login after an idle time, design §9): a
    /// non-blocking peek sees end of file. Bytes waiting between requests would be out of
    /// step, so they count as closed too. A closed client is unusable from then on.
    pub fn peer_closed(&mut self) -> bool {
        if self.broken {
            return true;
        }
        let mut probe = [0u8; 1];
        let flags = rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT;
        match rustix::net::recv(&self.stream, &mut probe, flags) {
            Err(e) if e == rustix::io::Errno::AGAIN || e == rustix::io::Errno::INTR => false,
            _ => {
                self.broken = true;
                true
            }
        }
    }

    /// True once requests go through a shared-memory ring.
    pub fn has_ring(&self) -> bool {
        self.ring.is_some()
    }

    /// Asks keywardd for a shared-memory ring ([`crate::ring`]) and, if it gives one, sends
    /// further requests through it (those larger than an area still go on the socket).
    /// `map` checks and maps the memfd (the caller's mapping module: this crate has no
    /// `unsafe`). On `Err` the connection keeps to the socket if it is still usable
    /// ([`Client::is_usable`]); keywardd serves both on a connection with a ring.
    pub fn open_ring<F>(&mut self, map: F) -> Result<(), WireError>
    where
        F: FnOnce(OwnedFd, usize) -> std::io::Result<Box<dyn RingMemory>>,
    {
        match self.call(RequestBody::Pkcs11(Pkcs11Request::OpenRing))? {
            ResponseBody::Pkcs11(Pkcs11Response::Ring { bytes }) if bytes == RING_BYTES as u64 => {}
            _ => {
                self.broken = true;
                return Err(WireError::Protocol("unexpected answer to OpenRing"));
            }
        }
        let fds = crate::ring::recv_fds(&self.stream, 3).map_err(|e| {
            // The byte with the descriptors is part of the answer: without it the stream is
            // out of step.
            self.broken = true;
            WireError::Io(e)
        })?;
        let mut fds = fds.into_iter();
        let (Some(memfd), Some(to_daemon), Some(to_client)) = (fds.next(), fds.next(), fds.next())
        else {
            self.broken = true;
            return Err(WireError::Protocol("ring descriptors missing"));
        };
        let mem = map(memfd, RING_BYTES).map_err(WireError::Io)?;
        self.ring = Some(Ring::client(mem, to_daemon, to_client)?);
        Ok(())
    }

    /// The underlying stream (e.g. to change timeouts).
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Sends one request and waits for its response.
    ///
    /// After an error for which [`WireError::is_disconnect`] holds, the client is unusable.
    /// The daemon's error answer is [`WireError::Remote`] and leaves the connection usable;
    /// a response with another id is [`WireError::IdMismatch`], a response of the other
    /// half (admin for PKCS#11 or back) or an error reply carrying `CKR_OK` is
    /// [`WireError::Protocol`]; both make the client unusable.
    pub fn call(&mut self, body: RequestBody) -> Result<ResponseBody, WireError> {
        if std::process::id() != self.owner {
            return Err(WireError::Forked { owner: self.owner });
        }
        if self.broken {
            return Err(WireError::Broken);
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let request = Request { id, body };
        let result = match self.ring.is_some() {
            true => self.ring_call(id, &request),
            false => send_secret(&mut &self.stream, &request)
                .and_then(|()| self.receive(id, &request.body)),
        };
        if let Err(e) = &result {
            // One rule: whatever `is_disconnect` calls fatal ends this connection.
            if e.is_disconnect() {
                self.broken = true;
            }
        }
        result
    }

    /// One exchange with a ring: the request in the ring if it fits, else on the socket; the
    /// answer where keywardd put it. The socket's read timeout bounds the wait.
    fn ring_call(&mut self, id: u64, request: &Request) -> Result<ResponseBody, WireError> {
        let Some(ring) = self.ring.as_mut() else {
            return Err(WireError::Broken);
        };
        let bytes = Zeroizing::new(encode(request)?);
        if !Ring::fits(bytes.len()) {
            crate::frame::write_frame(&mut &self.stream, &bytes)?;
            return self.receive(id, &request.body);
        }
        ring.send(&bytes)?;
        let timeout = self.stream.read_timeout().map_err(WireError::Io)?;
        let response: Response = match ring.receive(&self.stream, crate::spin::budget(), timeout)? {
            Incoming::Message(m) => decode(&m)?,
            Incoming::OnSocket => recv_secret(&mut &self.stream)?,
            Incoming::Timeout => return Err(WireError::Timeout),
            // Nothing comes on the socket before its marker: this is end of file.
            Incoming::Socket => return Err(WireError::Closed),
        };
        self.check(id, &request.body, response)
    }

    fn receive(&mut self, id: u64, sent: &RequestBody) -> Result<ResponseBody, WireError> {
        crate::spin::wait_readable(&self.stream, crate::spin::budget());
        let response: Response = recv_secret(&mut &self.stream)?;
        self.check(id, sent, response)
    }

    fn check(
        &mut self,
        id: u64,
        sent: &RequestBody,
        response: Response,
    ) -> Result<ResponseBody, WireError> {
        if response.id != id {
            return Err(WireError::IdMismatch {
                expected: id,
                got: response.id,
            });
        }
        match response.body {
            Ok(body) if sent.matches(&body) => Ok(body),
            Ok(_) => Err(WireError::Protocol(
                "response is of the other half than the request",
            )),
            Err(reply) if reply.rv == rv::CKR_OK => {
                Err(WireError::Protocol("error reply carries CKR_OK"))
            }
            Err(reply) => Err(WireError::Remote(reply)),
        }
    }
}
