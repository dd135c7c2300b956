//! keywardd's pieces (design §1): configuration, the token PIN, peer credentials, the store
//! lock, and the server of the admin and client sockets. `src/bin/keywardd.rs` puts them
//! together; keywardctl uses [`store_is_held`] and [`is_read_only`] to refuse writing a store
//! a running daemon holds.

pub mod config;
pub mod limits;
pub mod peercred;
pub mod pin;
pub mod pkcs11;
pub mod ring;
pub mod server;
mod throttle;
pub mod transport;

use crate::context::Clock;
use keyward_wire::admin::AdminRequest;
use rustix::fs::FlockOperation;
use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The lock file of a store: `<db path>.lock`.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

/// An exclusive `flock` on `<db path>.lock`, held for keywardd's lifetime (released by the
/// kernel when the process exits, however it exits).
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
    path: PathBuf,
}

impl StoreLock {
    /// Takes the lock without waiting. `Ok(None)` if another process holds it.
    pub fn acquire(db: &Path) -> io::Result<Option<StoreLock>> {
        let path = lock_path(db);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)?;
        match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(StoreLock { _file: file, path })),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// True if a running keywardd holds the store at `db` (its lock file is locked).
///
/// A missing or unreadable lock file means no daemon holds it.
pub fn store_is_held(db: &Path) -> bool {
    let Ok(file) = File::open(lock_path(db)) else {
        return false;
    };
    match rustix::fs::flock(&file, FlockOperation::NonBlockingLockShared) {
        Ok(()) => {
            // Dropping the file releases the probe's shared lock.
            false
        }
        Err(e) => e == rustix::io::Errno::WOULDBLOCK,
    }
}

/// True for admin requests that never change the store when they are allowed (they leave no
/// audit record). Everything else, unknown requests included, counts as a write.
pub fn is_read_only(req: &AdminRequest) -> bool {
    crate::admin::is_plain_read(req)
}

/// TESTS ONLY (`[testing] clock_file`): the time is the unix seconds written in a file, read
/// at every call, so a test can move keywardd's clock past a destroy grace period. If the file
/// cannot be read or parsed, the system clock is used and a warning logged.
#[derive(Debug)]
pub struct FileClock {
    path: PathBuf,
}

impl FileClock {
    /// A clock reading `path`.
    pub fn new(path: PathBuf) -> FileClock {
        FileClock { path }
    }
}

impl Clock for FileClock {
    fn now_ms(&self) -> i64 {
        let read = std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok());
        match read {
            Some(secs) => secs.saturating_mul(1000),
            None => {
                tracing::warn!(path = %self.path.display(), "test clock file unreadable; using the system clock");
                crate::context::SystemClock.now_ms()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_is_exclusive_and_visible() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("k.db");
        assert!(!store_is_held(&db), "no lock file yet");
        let lock = StoreLock::acquire(&db).unwrap().expect("first lock");
        assert_eq!(lock.path(), dir.path().join("k.db.lock"));
        assert!(store_is_held(&db));
        // flock locks belong to the open file description: a second open is refused.
        assert!(StoreLock::acquire(&db).unwrap().is_none());
        drop(lock);
        assert!(!store_is_held(&db));
        assert!(StoreLock::acquire(&db).unwrap().is_some());
    }

    #[test]
    fn file_clock() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("clock");
        std::fs::write(&p, "1700000000\n").unwrap();
        let c = FileClock::new(p.clone());
        assert_eq!(c.now_ms(), 1_700_000_000_000);
        std::fs::write(&p, "garbage").unwrap();
        assert!(c.now_ms() > 1_700_000_000_000);
    }

    #[test]
    fn reads_and_writes() {
        assert!(is_read_only(&AdminRequest::OrgList));
        assert!(!is_read_only(&AdminRequest::AuditVerify));
        assert!(!is_read_only(&AdminRequest::OrgCreate { org: "x".into() }));
    }
}
