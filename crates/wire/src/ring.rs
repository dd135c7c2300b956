//! The shared-memory transport (issue 19 item 2): one mailbox per connection, in a sealed
//! memfd keywardd creates, so that a request and its answer cost no socket round trip and,
//! while both ends are awake, no wake-up at all.
//!
//! **Set-up.** After the handshake the module asks with `Pkcs11Request::OpenRing`; keywardd
//! creates a memfd (`MFD_ALLOW_SEALING`), sizes it, seals it against shrinking and growing
//! (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`), maps it, and answers `Pkcs11Response::Ring`
//! followed by one byte carrying three descriptors (`SCM_RIGHTS`): the memfd and two eventfds
//! ([`send_fds`] / [`recv_fds`]). keywardd never maps a descriptor a client gave it: it takes
//! none (a descriptor a client sends is dropped unread by the kernel with the byte it rode on).
//! The socket stays the handshake, the identity check (`SO_PEERCRED`), the path of messages
//! larger than an area, and the fallback: either end that cannot set the ring up goes on
//! over the socket, and says so in its log.
//!
//! **Layout** (64-bit words, little-endian data): a header of [`HEADER_WORDS`] words, then
//! the request area, then the response area, each [`AREA_BYTES`] bytes. Each direction has a
//! sequence word (the writer bumps it with release ordering after the data and the length),
//! a length word ([`ON_SOCKET`]: the message is a frame on the socket), and a "sleeping" word
//! the reader sets before it blocks; the writer signals the reader's eventfd only then. The
//! reader spins on the sequence word for a short bounded time ([`crate::spin::budget`])
//! first, yielding the CPU between looks.
//!
//! **Trust.** keywardd is the only trust boundary, and a hostile client may write any word at
//! any time. keywardd therefore reads each field of a request once: the sequence, then the
//! length (checked against the area), then copies the bytes out, and decodes only its copy.
//! Whatever the client writes after that changes nothing keywardd checked. The memfd cannot
//! shrink, so no access faults; keywardd's own descriptors are non-blocking, so a client
//! that fills or drains an eventfd cannot block it. The memory is touched only through
//! atomics ([`RingMemory::words`]), which are sound under a concurrent writer. Each end zeroes
//! the words of a message as it copies them out, so the ring keeps no copy of a PIN, plaintext
//! or decrypted data after its reader has it.

use crate::error::WireError;
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use std::fmt;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// Bytes of each area (request and response).
pub const AREA_BYTES: usize = 64 * 1024;
/// Words of the header.
pub const HEADER_WORDS: usize = 16;
/// The whole ring in bytes: header and two areas.
pub const RING_BYTES: usize = HEADER_WORDS * 8 + 2 * AREA_BYTES;
/// The first word, written by keywardd: layout version 1.
pub const MAGIC: u64 = 0x4b57_5249_4e47_0001; // "KWRING" v1
/// A length word meaning "this message is a frame on the socket".
pub const ON_SOCKET: u64 = u64::MAX;

const AREA_WORDS: usize = AREA_BYTES / 8;
/// Header word: [`MAGIC`].
pub const W_MAGIC: usize = 0;
/// Header word: the bytes of each area.
pub const W_AREA: usize = 1;
/// Header word: the request sequence number (the client bumps it).
pub const W_REQ_SEQ: usize = 2;
/// Header word: the request's length, or [`ON_SOCKET`].
pub const W_REQ_LEN: usize = 3;
/// Header word: non-zero while keywardd sleeps on its eventfd.
pub const W_DAEMON_SLEEPING: usize = 4;
/// Header word: the response sequence number (keywardd bumps it).
pub const W_RESP_SEQ: usize = 5;
/// Header word: the response's length, or [`ON_SOCKET`].
pub const W_RESP_LEN: usize = 6;
/// Header word: non-zero while the client sleeps on its eventfd.
pub const W_CLIENT_SLEEPING: usize = 7;
/// Byte offset of the request area.
pub const REQUEST_AT: usize = HEADER_WORDS * 8;
/// Byte offset of the response area.
pub const RESPONSE_AT: usize = REQUEST_AT + AREA_BYTES;

/// The mapped ring, as words. The mapping module of each side (keywardd's and the module's,
/// the only `unsafe` of this transport) implements it; tests use [`HeapMemory`].
pub trait RingMemory: Send + Sync + fmt::Debug {
    /// The whole mapping as [`RING_BYTES`]` / 8` words.
    fn words(&self) -> &[AtomicU64];
}

/// A ring in ordinary memory, for tests of the protocol within one process.
#[derive(Debug)]
pub struct HeapMemory(Box<[AtomicU64]>);

impl HeapMemory {
    /// A zeroed ring of [`RING_BYTES`].
    pub fn new() -> std::sync::Arc<HeapMemory> {
        std::sync::Arc::new(HeapMemory(
            (0..RING_BYTES / 8).map(|_| AtomicU64::new(0)).collect(),
        ))
    }
}

impl RingMemory for std::sync::Arc<HeapMemory> {
    fn words(&self) -> &[AtomicU64] {
        &self.0
    }
}

/// Which end of the ring this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// keywardd: reads requests, writes responses.
    Daemon,
    /// The module: writes requests, reads responses.
    Client,
}

/// What a reader found after waiting.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A message, copied out of the ring.
    Message(Zeroizing<Vec<u8>>),
    /// The writer put this message on the socket as a frame.
    OnSocket,
    /// Nothing in the ring, but the socket is readable (a frame, or end of file).
    Socket,
    /// The wait's time passed.
    Timeout,
}

/// One end of a ring: the memory, this end's eventfd (waited on) and the peer's (signalled).
#[derive(Debug)]
pub struct Ring {
    mem: Box<dyn RingMemory>,
    role: Role,
    own_wake: OwnedFd,
    peer_wake: OwnedFd,
    /// The incoming sequence number last taken.
    seen: u64,
    /// The outgoing sequence number last published.
    sent: u64,
}

impl Ring {
    /// keywardd's end over a fresh (zeroed) mapping: writes the header.
    pub fn daemon(mem: Box<dyn RingMemory>, to_daemon: OwnedFd, to_client: OwnedFd) -> Ring {
        let w = mem.words();
        w[W_AREA].store(AREA_BYTES as u64, Ordering::Relaxed);
        w[W_MAGIC].store(MAGIC, Ordering::Release);
        Ring {
            mem,
            role: Role::Daemon,
            own_wake: to_daemon,
            peer_wake: to_client,
            seen: 0,
            sent: 0,
        }
    }

    /// The module's end: checks the header keywardd wrote.
    pub fn client(
        mem: Box<dyn RingMemory>,
        to_daemon: OwnedFd,
        to_client: OwnedFd,
    ) -> Result<Ring, WireError> {
        let w = mem.words();
        if w.len() * 8 < RING_BYTES
            || w[W_MAGIC].load(Ordering::Acquire) != MAGIC
            || w[W_AREA].load(Ordering::Relaxed) != AREA_BYTES as u64
        {
            return Err(WireError::Protocol("the ring's header is not version 1's"));
        }
        let seen = w[W_RESP_SEQ].load(Ordering::Acquire);
        let sent = w[W_REQ_SEQ].load(Ordering::Relaxed);
        Ok(Ring {
            mem,
            role: Role::Client,
            own_wake: to_client,
            peer_wake: to_daemon,
            seen,
            sent,
        })
    }

    fn words(&self) -> &[AtomicU64] {
        self.mem.words()
    }

    /// (sequence, length, sleeping, area start) words of what this end writes.
    fn outgoing(&self) -> (usize, usize, usize, usize) {
        match self.role {
            Role::Client => (W_REQ_SEQ, W_REQ_LEN, W_DAEMON_SLEEPING, HEADER_WORDS),
            Role::Daemon => (
                W_RESP_SEQ,
                W_RESP_LEN,
                W_CLIENT_SLEEPING,
                HEADER_WORDS + AREA_WORDS,
            ),
        }
    }

    /// (sequence, length, own sleeping, area start) words of what this end reads.
    fn incoming(&self) -> (usize, usize, usize, usize) {
        match self.role {
            Role::Client => (
                W_RESP_SEQ,
                W_RESP_LEN,
                W_CLIENT_SLEEPING,
                HEADER_WORDS + AREA_WORDS,
            ),
            Role::Daemon => (W_REQ_SEQ, W_REQ_LEN, W_DAEMON_SLEEPING, HEADER_WORDS),
        }
    }

    /// True if `len` bytes fit in an area.
    pub fn fits(len: usize) -> bool {
        len <= AREA_BYTES
    }

    /// Publishes `payload` (at most [`AREA_BYTES`]) and wakes the peer if it sleeps.
    pub fn send(&mut self, payload: &[u8]) -> Result<(), WireError> {
        if !Self::fits(payload.len()) {
            return Err(WireError::FrameTooLarge {
                len: payload.len() as u64,
                max: AREA_BYTES as u64,
            });
        }
        let (_, len_w, _, area) = self.outgoing();
        let w = self.words();
        for (i, chunk) in payload.chunks(8).enumerate() {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            w[area + i].store(u64::from_le_bytes(word), Ordering::Relaxed);
        }
        w[len_w].store(payload.len() as u64, Ordering::Relaxed);
        self.publish()
    }

    /// Publishes "the message is a frame on the socket"; the caller writes the frame next.
    pub fn send_on_socket(&mut self) -> Result<(), WireError> {
        let (_, len_w, _, _) = self.outgoing();
        self.words()[len_w].store(ON_SOCKET, Ordering::Relaxed);
        self.publish()
    }

    fn publish(&mut self) -> Result<(), WireError> {
        let (seq_w, _, sleeping_w, _) = self.outgoing();
        self.sent = self.sent.wrapping_add(1);
        let w = self.mem.words();
        w[seq_w].store(self.sent, Ordering::SeqCst);
        // Pairs with the reader's store of its sleeping word and look at the sequence: one
        // of the two sees the other (both SeqCst).
        fence(Ordering::SeqCst);
        if w[sleeping_w].load(Ordering::SeqCst) != 0 {
            signal(&self.peer_wake)?;
        }
        Ok(())
    }

    /// True if the peer published a message not taken yet.
    fn pending(&self) -> bool {
        let (seq_w, ..) = self.incoming();
        self.words()[seq_w].load(Ordering::Acquire) != self.seen
    }

    /// Takes the pending message: each field read once, the bytes copied out. A length
    /// beyond the area is a protocol error (the connection is out of step).
    fn take(&mut self) -> Result<Incoming, WireError> {
        let (seq_w, len_w, _, area) = self.incoming();
        let w = self.mem.words();
        let seq = w[seq_w].load(Ordering::Acquire);
        let len = w[len_w].load(Ordering::Relaxed);
        self.seen = seq;
        if len == ON_SOCKET {
            return Ok(Incoming::OnSocket);
        }
        let len = usize::try_from(len)
            .ok()
            .filter(|l| *l <= AREA_BYTES)
            .ok_or(WireError::Protocol("ring message longer than its area"))?;
        let mut out = Zeroizing::new(Vec::with_capacity(len.next_multiple_of(8)));
        for word in &w[area..area + len.div_ceil(8)] {
            out.extend_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
            // The copy is the only one: requests carry PINs and plaintext, responses
            // decrypted data (as a Blob is zeroised on drop). The peer writes this area again
            // only after this end's answer, so nothing of its next message is lost.
            word.store(0, Ordering::Relaxed);
        }
        out.truncate(len);
        Ok(Incoming::Message(out))
    }

    /// Waits for the next message: spins up to `spin` (yielding between looks), then blocks
    /// on this end's eventfd and `socket` until `timeout` (`None`: forever).
    pub fn receive(
        &mut self,
        socket: &UnixStream,
        spin: Duration,
        timeout: Option<Duration>,
    ) -> Result<Incoming, WireError> {
        let start = Instant::now();
        if !spin.is_zero() && crate::spin::enter() {
            let mut looks = 0u32;
            let found = loop {
                if self.pending() {
                    break true;
                }
                looks += 1;
                // The first looks are a pure spin (an answer due in a few microseconds);
                // after them each look yields the CPU, so that a spinner beside a busy
                // peer (an RSA signature) costs little CPU.
                if looks < 128 {
                    std::hint::spin_loop();
                } else {
                    if start.elapsed() >= spin {
                        break false;
                    }
                    std::thread::yield_now();
                }
            };
            crate::spin::leave();
            if found {
                return self.take();
            }
        }
        let (_, _, sleeping_w, _) = self.incoming();
        loop {
            self.words()[sleeping_w].store(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if self.pending() {
                self.words()[sleeping_w].store(0, Ordering::Relaxed);
                return self.take();
            }
            let left = match timeout {
                Some(t) => match t.checked_sub(start.elapsed()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => {
                        self.words()[sleeping_w].store(0, Ordering::Relaxed);
                        return Ok(Incoming::Timeout);
                    }
                },
                None => None,
            };
            let polled = poll_two(&self.own_wake, socket, left);
            self.words()[sleeping_w].store(0, Ordering::Relaxed);
            drain(&self.own_wake);
            if self.pending() {
                return self.take();
            }
            match polled {
                Ok((_, true)) => return Ok(Incoming::Socket),
                Ok(_) => {}
                Err(e) => return Err(WireError::Io(e.into())),
            }
        }
    }
}

/// Polls `wake` and `socket` for input; returns which were ready.
fn poll_two(
    wake: &OwnedFd,
    socket: &UnixStream,
    timeout: Option<Duration>,
) -> Result<(bool, bool), Errno> {
    let ts = timeout.map(|t| Timespec {
        tv_sec: i64::try_from(t.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(t.subsec_nanos()),
    });
    let mut fds = [
        PollFd::new(wake, PollFlags::IN),
        PollFd::new(socket, PollFlags::IN),
    ];
    match rustix::event::poll(&mut fds, ts.as_ref()) {
        Ok(_) => Ok((!fds[0].revents().is_empty(), !fds[1].revents().is_empty())),
        Err(Errno::INTR) => Ok((false, false)),
        Err(e) => Err(e),
    }
}

/// Adds one to an eventfd. A full counter (`EAGAIN`) is already a pending wake-up.
fn signal(fd: &OwnedFd) -> Result<(), WireError> {
    match rustix::io::write(fd, &1u64.to_ne_bytes()) {
        Ok(_) | Err(Errno::AGAIN) => Ok(()),
        Err(e) => Err(WireError::Io(e.into())),
    }
}

/// Empties a non-blocking eventfd.
fn drain(fd: &OwnedFd) {
    let mut buf = [0u8; 8];
    let _ = rustix::io::read(fd, &mut buf);
}

/// A pair of non-blocking, close-on-exec eventfds (to keywardd, to the client).
pub fn wake_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let flags = rustix::event::EventfdFlags::NONBLOCK | rustix::event::EventfdFlags::CLOEXEC;
    Ok((
        rustix::event::eventfd(0, flags)?,
        rustix::event::eventfd(0, flags)?,
    ))
}

/// Sends one byte carrying `fds` (`SCM_RIGHTS`).
pub fn send_fds(socket: &UnixStream, fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
    if fds.len() > 3 || !control.push(rustix::net::SendAncillaryMessage::ScmRights(fds)) {
        return Err(std::io::ErrorKind::InvalidInput.into());
    }
    let sent = rustix::net::sendmsg(
        socket,
        &[IoSlice::new(b"R")],
        &mut control,
        rustix::net::SendFlags::NOSIGNAL,
    )?;
    if sent == 1 {
        Ok(())
    } else {
        Err(std::io::ErrorKind::WriteZero.into())
    }
}

/// Receives the byte [`send_fds`] sent and exactly `n` (at most 3) descriptors with it
/// (close-on-exec). The socket's read timeout applies.
pub fn recv_fds(socket: &UnixStream, n: usize) -> std::io::Result<Vec<OwnedFd>> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let got = loop {
        match rustix::net::recvmsg(
            socket,
            &mut [IoSliceMut::new(&mut byte)],
            &mut control,
            rustix::net::RecvFlags::CMSG_CLOEXEC,
        ) {
            Err(Errno::INTR) => continue,
            other => break other?,
        }
    };
    let mut fds = Vec::new();
    for msg in control.drain() {
        if let rustix::net::RecvAncillaryMessage::ScmRights(rights) = msg {
            fds.extend(rights);
        }
    }
    if got.bytes != 1 || byte != *b"R" || fds.len() != n {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "expected one byte with {n} descriptors, got {} bytes and {}",
                got.bytes,
                fds.len()
            ),
        ));
    }
    Ok(fds)
}

/// Borrow helper for [`send_fds`].
pub fn borrow<F: AsFd>(f: &F) -> BorrowedFd<'_> {
    f.as_fd()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Ring, Ring, UnixStream, UnixStream) {
        let mem = HeapMemory::new();
        let (to_d, to_c) = wake_pair().unwrap();
        let (to_d2, to_c2) = (to_d.try_clone().unwrap(), to_c.try_clone().unwrap());
        let daemon = Ring::daemon(Box::new(mem.clone()), to_d, to_c);
        let client = Ring::client(Box::new(mem), to_d2, to_c2).unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        (daemon, client, a, b)
    }

    #[test]
    fn round_trips_with_and_without_spinning() {
        let (mut daemon, mut client, ds, cs) = pair();
        let server = std::thread::spawn(move || {
            for i in 0..200u32 {
                let spin = if i % 2 == 0 {
                    Duration::ZERO
                } else {
                    Duration::from_micros(200)
                };
                match daemon
                    .receive(&ds, spin, Some(Duration::from_secs(20)))
                    .unwrap()
                {
                    Incoming::Message(m) => {
                        let mut reply = m.to_vec();
                        reply.reverse();
                        daemon.send(&reply).unwrap();
                    }
                    other => panic!("daemon got {other:?}"),
                }
            }
        });
        for i in 0..200u32 {
            let msg: Vec<u8> = (0..(i as usize * 37) % 3000).map(|b| b as u8).collect();
            client.send(&msg).unwrap();
            let spin = if i % 3 == 0 {
                Duration::ZERO
            } else {
                Duration::from_micros(300)
            };
            match client
                .receive(&cs, spin, Some(Duration::from_secs(20)))
                .unwrap()
            {
                Incoming::Message(m) => {
                    let mut want = msg.clone();
                    want.reverse();
                    assert_eq!(*m, want, "message {i}");
                }
                other => panic!("client got {other:?}"),
            }
        }
        server.join().unwrap();
    }

    #[test]
    fn a_message_taken_leaves_no_copy_in_the_ring() {
        // Requests carry PINs and plaintext, responses decrypted data: once the reader has
        // its (zeroised-on-drop) copy, the ring keeps none, as Blob keeps none on drop.
        let mem = HeapMemory::new();
        let (to_d, to_c) = wake_pair().unwrap();
        let (to_d2, to_c2) = (to_d.try_clone().unwrap(), to_c.try_clone().unwrap());
        let mut daemon = Ring::daemon(Box::new(mem.clone()), to_d, to_c);
        let mut client = Ring::client(Box::new(mem.clone()), to_d2, to_c2).unwrap();
        let (ds, cs) = UnixStream::pair().unwrap();
        let area_is_zero = |at: usize| {
            mem.words()[at / 8..at / 8 + 64]
                .iter()
                .all(|w| w.load(Ordering::Relaxed) == 0)
        };
        let secret = [0x5au8; 300];
        client.send(&secret).unwrap();
        assert!(!area_is_zero(REQUEST_AT));
        let got = daemon
            .receive(&ds, Duration::ZERO, Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(got, Incoming::Message(Zeroizing::new(secret.to_vec())));
        assert!(area_is_zero(REQUEST_AT), "the request stayed in the ring");
        daemon.send(&secret[..100]).unwrap();
        let got = client
            .receive(&cs, Duration::ZERO, Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(
            got,
            Incoming::Message(Zeroizing::new(secret[..100].to_vec()))
        );
        assert!(area_is_zero(RESPONSE_AT), "the response stayed in the ring");
    }

    #[test]
    fn a_length_beyond_the_area_is_an_error_and_the_socket_marker_is_seen() {
        let (mut daemon, mut client, ds, _cs) = pair();
        client.send_on_socket().unwrap();
        assert_eq!(
            daemon
                .receive(&ds, Duration::ZERO, Some(Duration::from_secs(5)))
                .unwrap(),
            Incoming::OnSocket
        );
        // A hostile client writes a length past the area, then bumps the sequence.
        let w = client.words();
        w[W_REQ_LEN].store(AREA_BYTES as u64 + 1, Ordering::Relaxed);
        w[W_REQ_SEQ].store(77, Ordering::Release);
        assert!(matches!(
            daemon.receive(&ds, Duration::ZERO, Some(Duration::from_secs(5))),
            Err(WireError::Protocol(_))
        ));
    }

    #[test]
    fn timeout_and_socket_wake_ups() {
        let (mut daemon, _client, ds, cs) = pair();
        assert_eq!(
            daemon
                .receive(&ds, Duration::ZERO, Some(Duration::from_millis(30)))
                .unwrap(),
            Incoming::Timeout
        );
        drop(cs);
        assert_eq!(
            daemon
                .receive(&ds, Duration::ZERO, Some(Duration::from_secs(5)))
                .unwrap(),
            Incoming::Socket
        );
    }

    #[test]
    fn descriptors_pass_over_the_socket() {
        let (a, b) = UnixStream::pair().unwrap();
        let (x, y) = wake_pair().unwrap();
        send_fds(&a, &[borrow(&x), borrow(&y)]).unwrap();
        let got = recv_fds(&b, 2).unwrap();
        assert_eq!(got.len(), 2);
        signal(&got[0]).unwrap();
        let mut buf = [0u8; 8];
        rustix::io::read(&x, &mut buf).unwrap();
        assert_eq!(u64::from_ne_bytes(buf), 1);
        // A byte without descriptors is refused.
        std::io::Write::write_all(&mut &a, b"R").unwrap();
        assert!(recv_fds(&b, 2).is_err());
    }
}
