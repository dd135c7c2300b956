//! Wrong service-account keys (design §1): each failure for a (key id, peer uid) is answered
//! after a delay that doubles with every failure, and a peer uid with many failures in a
//! window is locked out for a while (`CKR_PIN_LOCKED`). Key ids are not secret, so the lock is
//! per peer, never per key: nobody can lock others out of their key.
//!
//! The caller holds the throttle's lock from [`Throttle::locked`] through the key check to
//! [`Throttle::failure`] or [`Throttle::success`], so check and record are one step: parallel
//! attempts cannot all pass the check before the first failure is counted (200 parallel
//! wrong keys got 26 evaluations against a limit of 20 before, issue 13).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The delay after the first failure of a (key id, peer).
pub const BASE_DELAY: Duration = Duration::from_millis(100);
/// The longest delay.
pub const MAX_DELAY: Duration = Duration::from_secs(3);
/// Failures of one peer within [`WINDOW`] that lock it.
pub const PEER_LIMIT: u32 = 20;
/// The window failures are counted in; a failure older than this is forgotten.
pub const WINDOW: Duration = Duration::from_secs(600);
/// How long a locked peer stays locked after its last failure.
pub const LOCK_TIME: Duration = Duration::from_secs(300);

/// Entries kept before old ones are pruned.
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Count {
    failures: u32,
    first: Instant,
    last: Instant,
}

impl Count {
    fn new(now: Instant) -> Count {
        Count {
            failures: 0,
            first: now,
            last: now,
        }
    }

    fn bump(&mut self, now: Instant) {
        if now.duration_since(self.first) > WINDOW {
            *self = Count::new(now);
        }
        self.failures = self.failures.saturating_add(1);
        self.last = now;
    }
}

/// Failure counts per (key id, peer uid) and per peer uid.
#[derive(Debug, Default)]
pub struct Throttle {
    keys: HashMap<(String, Option<u32>), Count>,
    peers: HashMap<Option<u32>, Count>,
}

impl Throttle {
    /// If `peer` is locked out at `now`, how long it still is.
    pub fn locked(&self, peer: Option<u32>, now: Instant) -> Option<Duration> {
        let c = self.peers.get(&peer)?;
        if c.failures < PEER_LIMIT {
            return None;
        }
        let until = c.last + LOCK_TIME;
        (until > now).then(|| until - now)
    }

    /// Records a failure and returns how long to wait before answering it.
    pub fn failure(&mut self, key_id: &str, peer: Option<u32>, now: Instant) -> Duration {
        if self.keys.len() >= MAX_ENTRIES || self.peers.len() >= MAX_ENTRIES {
            self.prune(now);
        }
        let k = self
            .keys
            .entry((key_id.to_owned(), peer))
            .or_insert_with(|| Count::new(now));
        k.bump(now);
        let n = k.failures;
        self.peers
            .entry(peer)
            .or_insert_with(|| Count::new(now))
            .bump(now);
        let doublings = n.saturating_sub(1).min(16);
        BASE_DELAY.saturating_mul(1u32 << doublings).min(MAX_DELAY)
    }

    /// A key worked: forget that key's failures for this peer (not the peer's count).
    pub fn success(&mut self, key_id: &str, peer: Option<u32>) {
        self.keys.remove(&(key_id.to_owned(), peer));
    }

    fn prune(&mut self, now: Instant) {
        let stale = |c: &Count| now.duration_since(c.last) > WINDOW.max(LOCK_TIME);
        self.keys.retain(|_, c| !stale(c));
        self.peers.retain(|_, c| !stale(c));
        // Still full (a flood of distinct key ids): start over rather than grow.
        if self.keys.len() >= MAX_ENTRIES {
            self.keys.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_per_key_and_peer() {
        let mut t = Throttle::default();
        let now = Instant::now();
        let got: Vec<_> = (0..8).map(|_| t.failure("abc", Some(1), now)).collect();
        assert_eq!(got[0], BASE_DELAY);
        assert_eq!(got[1], BASE_DELAY * 2);
        assert_eq!(got[2], BASE_DELAY * 4);
        assert_eq!(*got.last().unwrap(), MAX_DELAY);
        // Another peer with the same key id starts from the base delay.
        assert_eq!(t.failure("abc", Some(2), now), BASE_DELAY);
        // A success forgets the key's failures for that peer only.
        t.success("abc", Some(1));
        assert_eq!(t.failure("abc", Some(1), now), BASE_DELAY);
        assert_eq!(t.failure("abc", Some(2), now), BASE_DELAY * 2);
    }

    #[test]
    fn many_failures_lock_the_peer_only_for_a_while() {
        let mut t = Throttle::default();
        let now = Instant::now();
        for i in 0..PEER_LIMIT {
            assert_eq!(t.locked(Some(7), now), None, "after {i}");
            t.failure(&format!("k{i}"), Some(7), now);
        }
        assert!(t.locked(Some(7), now).is_some());
        assert_eq!(t.locked(Some(8), now), None);
        assert_eq!(
            t.locked(Some(7), now + LOCK_TIME + Duration::from_secs(1)),
            None
        );
    }

    #[test]
    fn old_failures_are_forgotten() {
        let mut t = Throttle::default();
        let now = Instant::now();
        for _ in 0..5 {
            t.failure("k", Some(1), now);
        }
        let later = now + WINDOW + Duration::from_secs(1);
        assert_eq!(t.failure("k", Some(1), later), BASE_DELAY);
    }
}
