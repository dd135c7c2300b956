//! The module's end of the shared-memory transport (issue 19 item 2; protocol in
//! `keyward_wire::ring`): checks and maps the memfd keywardd sent, and decides whether to ask
//! for a ring at all. The mapping is the only `unsafe` of the transport on this side
//! (design §7: "a shared-memory transport's mapping").
//!
//! `KEYWARD_TRANSPORT=socket` keeps every connection on the socket (comparisons, and hosts
//! whose own seccomp filter forbids `mmap` of a received descriptor). If keywardd cannot make
//! a ring, the module logs it once and keeps to the socket for the rest of the process.
#![allow(unsafe_code)]

use keyward_wire::ring::RingMemory;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static NO_RING: AtomicBool = AtomicBool::new(false);
static LOGGED: AtomicBool = AtomicBool::new(false);

/// True if this connection should ask keywardd for a ring.
pub fn wanted() -> bool {
    !NO_RING.load(Ordering::Relaxed)
        && std::env::var("KEYWARD_TRANSPORT").as_deref() != Ok("socket")
}

/// Records the transport a new connection got, logging it once per process (and a fallback
/// once at warn, later ones at debug). keywardd's refusal (a limit, a seccomp filter on its
/// side) is asked again on the next connection; a keywardd that broke the connection over
/// the question (one without rings) is not asked again by this process.
pub fn chosen(result: &Result<(), keyward_wire::WireError>, usable: bool) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    match result {
        Ok(()) => {
            if !LOGGED.swap(true, Ordering::Relaxed) {
                tracing::info!(
                    transport = "ring",
                    "keywardd connection: shared-memory ring"
                );
            }
        }
        Err(e) => {
            if !usable {
                NO_RING.store(true, Ordering::Relaxed);
            }
            if WARNED.swap(true, Ordering::Relaxed) {
                tracing::debug!(transport = "socket", error = %e, "no shared-memory ring");
            } else {
                tracing::warn!(transport = "socket", error = %e,
                    "keywardd connection: no shared-memory ring; using the socket");
            }
        }
    }
}

/// Checks that `fd` is a memfd of `len` bytes sealed against shrinking (so the mapping cannot
/// fault) and maps it shared read-write.
pub fn map(fd: OwnedFd, len: usize) -> io::Result<Box<dyn RingMemory>> {
    // SAFETY: `fcntl(F_GET_SEALS)` and `fstat` only read the descriptor's state into a
    // local `stat` we own; the descriptor is owned and open.
    let (seals, size) = unsafe {
        let seals = libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS);
        let mut st: libc::stat = std::mem::zeroed();
        let r = libc::fstat(fd.as_raw_fd(), &mut st);
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        (seals, st.st_size)
    };
    let needed = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
    if seals < 0
        || seals & needed != needed
        || usize::try_from(size).ok() != Some(len)
        || len % 8 != 0
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the ring is not a sealed memfd of the expected size",
        ));
    }
    // SAFETY: a new mapping (null hint), so no existing memory is affected; the memfd is
    // `len` bytes and cannot shrink (checked above), so every page stays backed.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let ptr = NonNull::new(ptr).ok_or_else(|| io::Error::other("mmap gave null"))?;
    Ok(Box::new(Mapping { ptr, len }))
}

#[derive(Debug)]
struct Mapping {
    ptr: NonNull<libc::c_void>,
    len: usize,
}

// SAFETY: plain shared memory, accessed only through `AtomicU64`s; not tied to a thread.
unsafe impl Send for Mapping {}
// SAFETY: as above: every access is atomic.
unsafe impl Sync for Mapping {}

impl RingMemory for Mapping {
    fn words(&self) -> &[AtomicU64] {
        // SAFETY: `ptr` is page-aligned, valid for `len` bytes (a multiple of 8) until
        // `drop`, which takes `&mut self`; keywardd writes the same memory concurrently,
        // which atomics allow.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<AtomicU64>(), self.len / 8) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: exactly the range `mmap` returned; no borrow outlives `&mut self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr(), self.len);
        }
    }
}
