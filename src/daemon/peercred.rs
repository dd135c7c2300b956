//! The peer's credentials on a Unix socket, as the kernel recorded them at `connect`:
//! pid, uid, gid (`SO_PEERCRED`, through rustix) and supplementary groups (`SO_PEERGROUPS`,
//! Linux ≥ 4.13, which no trusted crate wraps: one `getsockopt` call below, the only `unsafe`
//! of the library; style.md rule 1).
#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

use std::io;
use std::os::fd::AsFd;
#[cfg(target_os = "linux")]
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

/// Who is on the other end of a Unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCred {
    /// The peer's pid (absent if the kernel did not know it, e.g. across pid namespaces).
    pub pid: Option<u32>,
    /// The peer's effective uid.
    pub uid: u32,
    /// The peer's effective gid.
    pub gid: u32,
    /// The peer's groups: its gid and supplementary groups, sorted, without duplicates.
    pub groups: Vec<u32>,
}

/// Reads the peer credentials of `stream`.
pub fn peer_cred(stream: &UnixStream) -> io::Result<PeerCred> {
    let cred = rustix::net::sockopt::socket_peercred(stream.as_fd())?;
    let pid = u32::try_from(cred.pid.as_raw_nonzero().get())
        .ok()
        .filter(|p| *p > 0);
    let uid = cred.uid.as_raw();
    let gid = cred.gid.as_raw();
    let mut groups = peer_groups(stream)?;
    groups.push(gid);
    groups.sort_unstable();
    groups.dedup();
    Ok(PeerCred {
        pid,
        uid,
        gid,
        groups,
    })
}

/// The peer's supplementary groups (`SO_PEERGROUPS`).
#[cfg(target_os = "linux")]
fn peer_groups(stream: &UnixStream) -> io::Result<Vec<u32>> {
    let fd = stream.as_raw_fd();
    // Linux caps a process's supplementary groups at NGROUPS_MAX (65536); start small and
    // grow to the size the kernel asks for.
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    for _ in 0..4 {
        let mut len = libc::socklen_t::try_from(groups.len() * std::mem::size_of::<libc::gid_t>())
            .map_err(|_| io::Error::other("group buffer too large"))?;
        // SAFETY: `fd` is a valid open socket borrowed from `stream` for the whole call;
        // `groups` is a live, writable buffer of exactly `len` bytes, and the kernel writes at
        // most `len` bytes into it and stores the needed or used length in `len`, a valid
        // `socklen_t` we own.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast::<libc::c_void>(),
                &mut len,
            )
        };
        let bytes = usize::try_from(len).unwrap_or(usize::MAX);
        let count = bytes / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(count.min(groups.len()));
            return Ok(groups);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            // The buffer was too small; `len` now holds the size needed.
            Some(libc::ERANGE) if count > groups.len() && count <= 65_536 => {
                groups.resize(count, 0);
            }
            // A kernel without SO_PEERGROUPS: the primary gid only.
            Some(libc::ENOPROTOOPT) => return Ok(Vec::new()),
            _ => return Err(err),
        }
    }
    Err(io::Error::other(
        "SO_PEERGROUPS: the group list kept changing size",
    ))
}

/// Without `SO_PEERGROUPS`: the primary gid only.
#[cfg(not(target_os = "linux"))]
fn peer_groups(_stream: &UnixStream) -> io::Result<Vec<u32>> {
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_ids(field: &str) -> Vec<u32> {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .map(|r| {
                r.split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn a_socket_pair_sees_this_process() {
        let (a, _b) = UnixStream::pair().unwrap();
        let cred = peer_cred(&a).unwrap();
        assert_eq!(cred.pid, Some(std::process::id()));
        assert_eq!(cred.uid, status_ids("Uid:")[1]); // effective uid
        assert_eq!(cred.gid, status_ids("Gid:")[1]);
        let mut want = status_ids("Groups:");
        want.push(cred.gid);
        want.sort_unstable();
        want.dedup();
        assert_eq!(cred.groups, want);
    }
}
