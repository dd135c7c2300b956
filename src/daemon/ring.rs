//! keywardd's end of the shared-memory transport (issue 19 item 2; the protocol is
//! `keyward_wire::ring`): creates a connection's ring as a sealed memfd, maps it, and charges
//! its bytes to the peer's limits. The mapping below is the only `unsafe` of the transport on
//! this side (design §7: "a shared-memory transport's mapping").
//!
//! keywardd maps only memfds it created itself, after sealing them against shrinking and
//! growing (`F_SEAL_SHRINK | F_SEAL_GROW`, then `F_SEAL_SEAL`): a client holding the
//! descriptor can write the memory but cannot truncate it under keywardd's mapping (which
//! would fault, SIGBUS), nor change the seals. keywardd never receives a descriptor.
#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

use super::limits::{Charge, Holder, Limits, Resource};
use keyward_wire::ring::{Ring, RingMemory, RING_BYTES};
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};
use std::ffi::c_void;
use std::io;
use std::os::fd::OwnedFd;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// A ring keywardd made for one connection: its end of the protocol and the charge of its
/// bytes (given back on drop).
#[derive(Debug)]
pub struct Made {
    /// keywardd's end.
    pub ring: Ring,
    /// The ring's bytes, counted as buffered bytes of the peer uid and principal.
    pub charge: Charge,
}

/// The descriptors to send the client, in the order it expects them: the memfd and the two
/// eventfds (to keywardd, to the client). keywardd closes its copies once they are sent (its
/// mapping and its own eventfds stay).
pub type ClientFds = [OwnedFd; 3];

/// Why no ring was made; the connection keeps to the socket.
#[derive(Debug)]
pub enum Refusal {
    /// A per-uid, per-principal or global cap on buffered bytes.
    Limit,
    /// A system call failed (a seccomp filter, no memory, ...).
    Io(io::Error),
}

/// Makes a ring for a connection of `holder`, charging [`RING_BYTES`] to its buffered bytes.
pub fn make(limits: &Arc<Limits>, holder: &Holder) -> Result<(Made, ClientFds), Refusal> {
    let charge = limits
        .charge(Resource::BufferedBytes, holder, RING_BYTES)
        .map_err(|_| Refusal::Limit)?;
    let memfd = sealed_memfd().map_err(Refusal::Io)?;
    let mem = Mapping::new(&memfd, RING_BYTES).map_err(Refusal::Io)?;
    let (to_daemon, to_client) = keyward_wire::ring::wake_pair().map_err(Refusal::Io)?;
    let fds = [
        memfd,
        to_daemon.try_clone().map_err(Refusal::Io)?,
        to_client.try_clone().map_err(Refusal::Io)?,
    ];
    let ring = Ring::daemon(Box::new(mem), to_daemon, to_client);
    Ok((Made { ring, charge }, fds))
}

/// A memfd of [`RING_BYTES`], sealed so that it can neither shrink nor grow, and its seals
/// fixed.
fn sealed_memfd() -> io::Result<OwnedFd> {
    let fd = rustix::fs::memfd_create(
        "keyward-ring",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    rustix::fs::ftruncate(&fd, RING_BYTES as u64)?;
    rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
    Ok(fd)
}

/// A shared read-write mapping of a sealed memfd keywardd created.
#[derive(Debug)]
struct Mapping {
    ptr: NonNull<c_void>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory, accessed only through `AtomicU64`s (which are
// `Sync`); the pointer is not tied to a thread.
unsafe impl Send for Mapping {}
// SAFETY: as above: every access is atomic.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(fd: &OwnedFd, len: usize) -> io::Result<Mapping> {
        // SAFETY: a new mapping (null hint: the kernel picks an unused range), so no existing
        // memory is affected; `fd` is a memfd of exactly `len` bytes sealed against
        // shrinking, so every page of the mapping stays backed for its lifetime.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )?
        };
        let ptr = NonNull::new(ptr).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(Mapping { ptr, len })
    }
}

impl RingMemory for Mapping {
    fn words(&self) -> &[AtomicU64] {
        // SAFETY: `ptr` is page-aligned (so aligned for `AtomicU64`), valid for `len` bytes
        // (`len` is a multiple of 8) until `drop` unmaps it, which needs `&mut self`, so no
        // borrow outlives it. The client may write the same memory at any time: that is why
        // it is seen only as atomics, for which concurrent writes are defined behaviour.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<AtomicU64>(), self.len / 8) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what `mmap` returned and no borrow of the memory
        // outlives `&mut self`.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::limits::Settings;

    #[test]
    fn the_memfd_cannot_shrink_grow_or_lose_its_seals() {
        let limits = Limits::new(Settings::default());
        let (made, fds) = make(&limits, &Holder::new(Some(4242), "user:a@example.com")).unwrap();
        let memfd = &fds[0];
        assert!(rustix::fs::ftruncate(memfd, 0).is_err(), "shrink");
        assert!(
            rustix::fs::ftruncate(memfd, (RING_BYTES * 2) as u64).is_err(),
            "grow"
        );
        assert!(
            rustix::fs::fcntl_add_seals(memfd, SealFlags::WRITE).is_err(),
            "reseal"
        );
        assert_eq!(rustix::fs::fstat(memfd).unwrap().st_size, RING_BYTES as i64);
        assert_eq!(
            limits.held_by_uid(Resource::BufferedBytes, 4242),
            RING_BYTES
        );
        drop(made);
        assert_eq!(limits.held_by_uid(Resource::BufferedBytes, 4242), 0);
    }

    #[test]
    fn a_ring_over_the_uid_cap_is_refused() {
        let mut settings = Settings::default();
        settings.buffered_bytes.per_uid = RING_BYTES + RING_BYTES / 2;
        let limits = Limits::new(settings);
        let holder = Holder::new(Some(7), "user:b@example.com");
        let first = make(&limits, &holder).unwrap();
        assert!(matches!(make(&limits, &holder), Err(Refusal::Limit)));
        drop(first);
        assert!(make(&limits, &holder).is_ok());
    }
}
