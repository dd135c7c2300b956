//! Resource limits of the client socket per peer uid, per principal and in total (design §9
//! "Resources"): sessions, operations in flight, bytes buffered (per operation and in total),
//! session objects, and key generations in flight (the token's CPU).
//!
//! Every use takes a [`Charge`] from [`Limits::charge`] before it allocates or starts; the
//! charge is counted against the peer uid, the principal and the global total, and given back
//! when it is dropped (a session closes, an operation ends, a session object is destroyed, a
//! generation returns). A charge over any cap is refused with a [`Refused`] that names the
//! limit; the caller audits it and answers the code the C_ function may return
//! (`CKR_SESSION_COUNT` from `C_OpenSession`, `CKR_DEVICE_MEMORY` elsewhere). Other uids and
//! principals are unaffected: their counts are their own, and the global caps are several
//! times the per-uid ones.
//!
//! Bytes are charged as the buffers' capacities ([`Charge::grow`]), so one place accounts for
//! whatever buffers an operation: the buffered multi-part operations today, the HMAC and GCM
//! buffers once operations stream.
//!
//! Refusals are logged (warn), at most once per limit, scope and uid every
//! [`LOG_INTERVAL`], with the number of refusals not logged since.
//!
//! Lock order: `Limits::usage`, then nothing; `Limits::logged` on its own. Neither is held
//! across a token call.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often one limit's refusals of one uid are logged at most.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Refusal log entries remembered (the table is emptied when it would grow past this).
const MAX_LOGGED: usize = 4096;

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// Open PKCS#11 sessions.
    Sessions,
    /// Operations in flight (`*Init` to the end of the operation).
    Operations,
    /// Bytes buffered by operations in flight.
    BufferedBytes,
    /// Session objects (`CKA_TOKEN=FALSE`) in the token.
    SessionObjects,
    /// Key generations (`C_GenerateKey`, `C_GenerateKeyPair`) running in the token.
    KeyGenerations,
}

const RESOURCES: usize = 5;

impl Resource {
    fn index(self) -> usize {
        match self {
            Resource::Sessions => 0,
            Resource::Operations => 1,
            Resource::BufferedBytes => 2,
            Resource::SessionObjects => 3,
            Resource::KeyGenerations => 4,
        }
    }

    /// The name logs, audit records and the README use.
    pub fn name(self) -> &'static str {
        match self {
            Resource::Sessions => "sessions",
            Resource::Operations => "operations in flight",
            Resource::BufferedBytes => "buffered bytes",
            Resource::SessionObjects => "session objects",
            Resource::KeyGenerations => "key generations in flight",
        }
    }
}

/// Whose count a cap bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// One peer uid.
    Uid,
    /// One principal.
    Principal,
    /// Everyone together.
    Global,
    /// One operation (bytes buffered by it).
    Operation,
}

impl Scope {
    fn name(self) -> &'static str {
        match self {
            Scope::Uid => "per uid",
            Scope::Principal => "per principal",
            Scope::Global => "in total",
            Scope::Operation => "per operation",
        }
    }
}

/// The caps on one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Per peer uid.
    pub per_uid: usize,
    /// Per principal.
    pub per_principal: usize,
    /// All uids together.
    pub global: usize,
}

/// Every cap (keywardd's `[daemon]` keys; see `config.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Open sessions.
    pub sessions: Caps,
    /// Operations in flight.
    pub operations: Caps,
    /// Bytes one operation may buffer.
    pub operation_bytes: usize,
    /// Bytes buffered by operations in flight.
    pub buffered_bytes: Caps,
    /// Session objects.
    pub session_objects: Caps,
    /// Key generations in flight.
    pub key_generations: Caps,
}

impl Settings {
    fn caps(&self, r: Resource) -> Caps {
        match r {
            Resource::Sessions => self.sessions,
            Resource::Operations => self.operations,
            Resource::BufferedBytes => self.buffered_bytes,
            Resource::SessionObjects => self.session_objects,
            Resource::KeyGenerations => self.key_generations,
        }
    }
}

impl Default for Settings {
    fn default() -> Settings {
        use super::config as c;
        let caps = |per_uid, global| Caps {
            per_uid,
            per_principal: per_uid,
            global,
        };
        Settings {
            sessions: caps(c::DEFAULT_MAX_SESSIONS_PER_UID, c::DEFAULT_MAX_SESSIONS),
            operations: caps(c::DEFAULT_MAX_OPERATIONS_PER_UID, c::DEFAULT_MAX_OPERATIONS),
            operation_bytes: c::DEFAULT_MAX_OPERATION_BYTES,
            buffered_bytes: caps(
                c::DEFAULT_MAX_BUFFERED_BYTES_PER_UID,
                c::DEFAULT_MAX_BUFFERED_BYTES,
            ),
            session_objects: caps(
                c::DEFAULT_MAX_SESSION_OBJECTS_PER_UID,
                c::DEFAULT_MAX_SESSION_OBJECTS,
            ),
            key_generations: caps(
                c::DEFAULT_MAX_KEY_GENERATIONS_PER_UID,
                c::DEFAULT_MAX_KEY_GENERATIONS,
            ),
        }
    }
}

/// A use refused by a cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// What was counted.
    pub resource: Resource,
    /// Whose count was full.
    pub scope: Scope,
    /// The cap.
    pub cap: usize,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "limit reached: {} {} (cap {})",
            self.resource.name(),
            self.scope.name(),
            self.cap
        )
    }
}

/// The uid counted for a peer whose uid is unknown (all such peers share it).
const UNKNOWN_UID: u32 = u32::MAX;

#[derive(Default)]
struct Usage {
    by_uid: HashMap<u32, [usize; RESOURCES]>,
    by_principal: HashMap<Arc<str>, [usize; RESOURCES]>,
    global: [usize; RESOURCES],
}

/// One limit's refusals of one uid, as the log counts them: last logged, refusals since.
type LogKey = (Resource, Scope, u32);

/// The counts and caps, shared by every connection of the client socket.
pub struct Limits {
    settings: Settings,
    usage: Mutex<Usage>,
    logged: Mutex<HashMap<LogKey, (Instant, u64)>>,
}

impl fmt::Debug for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limits")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Who a charge is counted against.
#[derive(Debug, Clone)]
pub struct Holder {
    uid: u32,
    principal: Arc<str>,
}

impl Holder {
    /// The peer uid (unknown ones share one count) and the principal (its member string).
    pub fn new(uid: Option<u32>, principal: &str) -> Holder {
        Holder {
            uid: uid.unwrap_or(UNKNOWN_UID),
            principal: Arc::from(principal),
        }
    }
}

impl Limits {
    /// Counts under `settings`.
    pub fn new(settings: Settings) -> Arc<Limits> {
        Arc::new(Limits {
            settings,
            usage: Mutex::new(Usage::default()),
            logged: Mutex::new(HashMap::new()),
        })
    }

    /// The caps.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Takes `amount` of `resource` for `holder`, or refuses (logged, rate-limited).
    pub fn charge(
        self: &Arc<Self>,
        resource: Resource,
        holder: &Holder,
        amount: usize,
    ) -> Result<Charge, Refused> {
        self.take(resource, holder, amount)?;
        Ok(Charge {
            limits: Arc::clone(self),
            resource,
            holder: holder.clone(),
            amount,
        })
    }

    fn take(&self, resource: Resource, holder: &Holder, amount: usize) -> Result<(), Refused> {
        let caps = self.settings.caps(resource);
        let i = resource.index();
        let refused = {
            let mut u = self.usage.lock();
            let by_uid = u.by_uid.get(&holder.uid).map_or(0, |c| c[i]);
            let by_principal = u.by_principal.get(&holder.principal).map_or(0, |c| c[i]);
            let over = |held: usize, cap: usize| held.saturating_add(amount) > cap;
            if over(by_uid, caps.per_uid) {
                Some((Scope::Uid, caps.per_uid))
            } else if over(by_principal, caps.per_principal) {
                Some((Scope::Principal, caps.per_principal))
            } else if over(u.global[i], caps.global) {
                Some((Scope::Global, caps.global))
            } else {
                u.by_uid.entry(holder.uid).or_default()[i] += amount;
                u.by_principal
                    .entry(Arc::clone(&holder.principal))
                    .or_default()[i] += amount;
                u.global[i] += amount;
                None
            }
        };
        match refused {
            None => Ok(()),
            Some((scope, cap)) => {
                let r = Refused {
                    resource,
                    scope,
                    cap,
                };
                self.log_refusal(r, holder);
                Err(r)
            }
        }
    }

    /// Refuses a buffer that would pass the per-operation cap (logged like the others).
    pub fn operation_bytes(&self, holder: &Holder, total: usize) -> Result<(), Refused> {
        let cap = self.settings.operation_bytes;
        if total <= cap {
            return Ok(());
        }
        let r = Refused {
            resource: Resource::BufferedBytes,
            scope: Scope::Operation,
            cap,
        };
        self.log_refusal(r, holder);
        Err(r)
    }

    fn give_back(&self, resource: Resource, holder: &Holder, amount: usize) {
        if amount == 0 {
            return;
        }
        let i = resource.index();
        let mut u = self.usage.lock();
        if let Some(c) = u.by_uid.get_mut(&holder.uid) {
            c[i] = c[i].saturating_sub(amount);
            if c.iter().all(|v| *v == 0) {
                u.by_uid.remove(&holder.uid);
            }
        }
        if let Some(c) = u.by_principal.get_mut(&holder.principal) {
            c[i] = c[i].saturating_sub(amount);
            if c.iter().all(|v| *v == 0) {
                u.by_principal.remove(&holder.principal);
            }
        }
        u.global[i] = u.global[i].saturating_sub(amount);
    }

    fn log_refusal(&self, r: Refused, holder: &Holder) {
        let now = Instant::now();
        let key = (r.resource, r.scope, holder.uid);
        let suppressed = {
            let mut logged = self.logged.lock();
            if logged.len() >= MAX_LOGGED && !logged.contains_key(&key) {
                logged.clear();
            }
            match logged.get_mut(&key) {
                Some((at, n)) if now.duration_since(*at) < LOG_INTERVAL => {
                    *n += 1;
                    return;
                }
                Some((at, n)) => {
                    let s = *n;
                    *at = now;
                    *n = 0;
                    s
                }
                None => {
                    logged.insert(key, (now, 0));
                    0
                }
            }
        };
        tracing::warn!(
            limit = r.resource.name(),
            scope = r.scope.name(),
            cap = r.cap,
            uid = holder.uid,
            principal = %holder.principal,
            suppressed,
            "refused by a resource limit"
        );
    }

    /// What `holder`'s uid holds of `resource` now (tests, status).
    pub fn held_by_uid(&self, resource: Resource, uid: u32) -> usize {
        self.usage
            .lock()
            .by_uid
            .get(&uid)
            .map_or(0, |c| c[resource.index()])
    }
}

/// An amount of a resource held; given back on drop.
pub struct Charge {
    limits: Arc<Limits>,
    resource: Resource,
    holder: Holder,
    amount: usize,
}

impl fmt::Debug for Charge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Charge")
            .field("resource", &self.resource)
            .field("amount", &self.amount)
            .finish_non_exhaustive()
    }
}

impl Charge {
    /// Takes `more` of the same resource for the same holder (a buffer growing), or refuses
    /// and keeps what it held.
    pub fn grow(&mut self, more: usize) -> Result<(), Refused> {
        self.limits.take(self.resource, &self.holder, more)?;
        self.amount += more;
        Ok(())
    }

    /// What it holds.
    pub fn amount(&self) -> usize {
        self.amount
    }

    /// The holder it counts against.
    pub fn holder(&self) -> &Holder {
        &self.holder
    }

    /// The limits it was taken from.
    pub fn limits(&self) -> &Arc<Limits> {
        &self.limits
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.limits
            .give_back(self.resource, &self.holder, self.amount);
    }
}

/// A byte buffer of an operation whose capacity is charged to [`Resource::BufferedBytes`]
/// (per operation, per uid, per principal, in total). Its contents are zeroised when it is
/// dropped (it may hold plaintext).
pub struct Buffer {
    data: Vec<u8>,
    charge: Charge,
}

impl fmt::Debug for Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the contents.
        f.debug_struct("Buffer")
            .field("len", &self.data.len())
            .field("charged", &self.charge.amount())
            .finish()
    }
}

impl Buffer {
    /// An empty buffer charged to `holder`.
    pub fn new(limits: &Arc<Limits>, holder: &Holder) -> Result<Buffer, Refused> {
        Ok(Buffer {
            data: Vec::new(),
            charge: limits.charge(Resource::BufferedBytes, holder, 0)?,
        })
    }

    /// Appends `more`, charging any growth first; over a cap nothing is appended.
    pub fn extend(&mut self, more: &[u8]) -> Result<(), Refused> {
        let need = self.data.len().saturating_add(more.len());
        let limits = Arc::clone(self.charge.limits());
        limits.operation_bytes(self.charge.holder(), need)?;
        let cap = self.data.capacity();
        if need > cap {
            // Grow geometrically (amortised appends), never past the per-operation cap.
            let new_cap = need
                .max(cap.saturating_mul(2))
                .min(limits.settings().operation_bytes)
                .max(need);
            self.charge.grow(new_cap - cap)?;
            let mut bigger = Vec::with_capacity(new_cap);
            bigger.extend_from_slice(&self.data);
            zeroize::Zeroize::zeroize(&mut self.data);
            self.data = bigger;
        }
        self.data.extend_from_slice(more);
        Ok(())
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.data
    }

    /// Drops the first `n` bytes (a streamed part that was processed), zeroising them; the
    /// capacity (and its charge) stays for the next part.
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.data.len());
        zeroize::Zeroize::zeroize(&mut self.data[..n]);
        self.data.drain(..n);
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        let caps = |per_uid, per_principal, global| Caps {
            per_uid,
            per_principal,
            global,
        };
        Settings {
            sessions: caps(2, 3, 4),
            operations: caps(1, 1, 1),
            operation_bytes: 100,
            buffered_bytes: caps(150, 1000, 1000),
            session_objects: caps(1, 1, 1),
            key_generations: caps(1, 1, 1),
        }
    }

    #[test]
    fn caps_per_uid_principal_and_global() {
        let l = Limits::new(settings());
        let a = Holder::new(Some(1), "unix-uid:1");
        let a2 = Holder::new(Some(1), "serviceAccount:x");
        let b = Holder::new(Some(2), "serviceAccount:x");
        let c = Holder::new(Some(3), "unix-uid:3");
        let s1 = l.charge(Resource::Sessions, &a, 1).unwrap();
        let _s2 = l.charge(Resource::Sessions, &a2, 1).unwrap();
        let e = l.charge(Resource::Sessions, &a, 1).unwrap_err();
        assert_eq!((e.scope, e.cap), (Scope::Uid, 2));
        let _s3 = l.charge(Resource::Sessions, &b, 1).unwrap();
        // serviceAccount:x holds 2 (uids 1 and 2): one more is its third, allowed.
        let _s4 = l.charge(Resource::Sessions, &c, 1).unwrap();
        // 4 in total.
        let e = l.charge(Resource::Sessions, &b, 1).unwrap_err();
        assert_eq!(e.scope, Scope::Global, "{e}");
        assert_eq!(l.held_by_uid(Resource::Sessions, 1), 2);
        drop(s1);
        assert_eq!(l.held_by_uid(Resource::Sessions, 1), 1);
        let e = l.charge(Resource::Sessions, &b, 1);
        assert!(e.is_ok(), "a session was given back");
        // Another resource has its own count.
        assert!(l.charge(Resource::Operations, &a, 1).is_ok());
    }

    #[test]
    fn buffers_are_charged_by_capacity() {
        let l = Limits::new(settings());
        let a = Holder::new(Some(1), "unix-uid:1");
        let mut b1 = Buffer::new(&l, &a).unwrap();
        b1.extend(&[1; 60]).unwrap();
        b1.extend(&[2; 40]).unwrap();
        assert_eq!(b1.as_slice().len(), 100);
        let e = b1.extend(&[3]).unwrap_err();
        assert_eq!(e.scope, Scope::Operation);
        assert_eq!(b1.as_slice().len(), 100, "nothing appended over the cap");
        let held = l.held_by_uid(Resource::BufferedBytes, 1);
        assert!((100..=150).contains(&held), "{held}");
        let mut b2 = Buffer::new(&l, &a).unwrap();
        let e = b2.extend(&[0; 60]).unwrap_err();
        assert_eq!(e.scope, Scope::Uid, "{e}");
        drop(b1);
        assert_eq!(l.held_by_uid(Resource::BufferedBytes, 1), 0);
        b2.extend(&[0; 60]).unwrap();
    }
}
