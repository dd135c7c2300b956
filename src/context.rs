//! Who calls and when: the [`Caller`] a transport established and the [`Clock`] both halves
//! of keywardd read. Neutral ground: the admin handler and the PKCS#11 data path both use
//! them, and neither defines them for the other.

use crate::audit::{NewRecord, Outcome};
use crate::policy::Principal;

/// Who sent a request, as the transport established it.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The principal the request runs as.
    pub principal: Principal,
    /// The peer's pid, when known (SO_PEERCRED).
    pub peer_pid: Option<u32>,
    /// The peer's uid, when known.
    pub peer_uid: Option<u32>,
    /// The module instance or connection id, when there is one.
    pub instance: Option<String>,
}

impl Caller {
    /// A caller known only by its principal (offline `--as`, tests).
    pub fn new(principal: Principal) -> Caller {
        Caller {
            principal,
            peer_pid: None,
            peer_uid: None,
            instance: None,
        }
    }

    /// An `allowed` audit record of this caller (the outcome is set when known).
    pub(crate) fn record(&self, action: &str, resource: Option<String>, now_ms: i64) -> NewRecord {
        NewRecord {
            time_ms: now_ms,
            principal: self.principal.member.to_string(),
            peer_pid: self.peer_pid,
            peer_uid: self.peer_uid,
            instance: self.instance.clone(),
            action: action.to_string(),
            resource,
            outcome: Outcome::Allowed,
            rv: 0,
            detail: None,
            request_id: None,
        }
    }
}

/// A source of time (injectable for tests).
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}
