//! Coalescing and the per-uid audit rate (design §6 "Coalescing", §9 "Resources"): what keeps
//! one local user from flooding the audit log until the disk fills and the service fails
//! closed for everyone.
//!
//! - **Coalescing.** A denial identical to one recorded less than `window` ago (same
//!   principal, peer uid, action, resource and CK_RV) is only counted; when the window ends
//!   (or at a flush or shutdown) one record carries the count of what was merged into it. The
//!   first denial of a window is recorded at once, so a single denial is as visible as before.
//!   Allowed operations and errors are never coalesced or dropped.
//! - **Rate.** Every record a peer uid causes takes a token from that uid's bucket (`burst`
//!   tokens, refilled at `rate` per second). Once it is empty, the uid's allowed operations
//!   are refused (the caller answers `CKR_DEVICE_MEMORY`) and its denials lose their resource;
//!   both become coalesced records that take no token ("refusals"), so the uid adds at most a
//!   handful of records per window, whatever it sends. Records without a peer uid (keywardd's
//!   own, in-process keywardctl) are never limited.
//!
//! Everything here is decided under one mutex, held for a map lookup; the writer thread
//! sweeps the windows that ended ([`Coalescer::take_due`]).

use super::{cap, NewRecord, Outcome, MAX_DETAIL, MAX_FIELD};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// `CKR_DEVICE_MEMORY`: what an operation of a uid over its audit rate returns.
pub use keyward_wire::rv::CKR_DEVICE_MEMORY;

/// Open windows kept at most; when full, every pending count is written and the table starts
/// over (bounded memory against floods of distinct denials from many uids).
const MAX_OPEN: usize = 100_000;
/// Buckets kept at most; full buckets are forgotten first.
const MAX_BUCKETS: usize = 100_000;
/// How often one uid's refusals are logged at most.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The limits (keywardd's `[daemon]` `audit_coalesce_window_ms`,
/// `audit_records_per_uid_per_second`, `audit_burst_per_uid`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// How long identical denials are merged into one record.
    pub window: Duration,
    /// Records per second one peer uid may add, sustained (0: no refill).
    pub rate: u32,
    /// Records one peer uid may add at once.
    pub burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            window: Duration::from_secs(1),
            rate: 10_000,
            burst: 50_000,
        }
    }
}

type Key = (String, Option<u32>, String, Option<String>, u64);

struct Open {
    /// The record written when the window's count is.
    template: NewRecord,
    ends: Instant,
    /// Denials merged since the last record of this key.
    merged: u64,
    /// The time (ms) of the first and the last of them.
    first_ms: i64,
    last_ms: i64,
}

impl Open {
    /// The record of the denials merged so far (their count goes with it): the template at
    /// the time of the last one, its detail naming the span.
    fn emit(&mut self) -> (NewRecord, u64) {
        let n = std::mem::take(&mut self.merged);
        let mut r = self.template.clone();
        r.time_ms = self.last_ms;
        let span = format!(
            "{n} identical denials from time_ms {} to {} (coalesced)",
            self.first_ms, self.last_ms
        );
        r.detail = Some(match r.detail.take() {
            Some(d) => cap(&format!("{span}; {d}"), MAX_DETAIL).into_owned(),
            None => span,
        });
        (r, n)
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
    logged: Option<Instant>,
}

/// What [`Coalescer::admit`] decided.
#[derive(Debug)]
pub struct Admission {
    /// Records to write now, each with its count (windows that ended, then this record or
    /// its refusal).
    pub write: Vec<(NewRecord, u64)>,
    /// The operation must be refused: its uid is over its audit rate.
    pub refused: Option<u32>,
}

/// Open windows and buckets (see the module header).
pub struct Coalescer {
    limits: Limits,
    open: HashMap<Key, Open>,
    buckets: HashMap<u32, Bucket>,
}

fn key(r: &NewRecord) -> Key {
    (
        r.principal.clone(),
        r.peer_uid,
        r.action.clone(),
        r.resource.clone(),
        r.rv,
    )
}

/// Cuts the client-supplied fields of `r` to the caps of [`super::append_counted`] before
/// they are kept or compared here.
fn capped(mut r: NewRecord) -> NewRecord {
    let c = |s: &mut String, max: usize| {
        if s.len() > max {
            *s = cap(s, max).into_owned();
        }
    };
    c(&mut r.principal, MAX_FIELD);
    c(&mut r.action, MAX_FIELD);
    for s in [&mut r.instance, &mut r.resource, &mut r.request_id]
        .into_iter()
        .flatten()
    {
        c(s, MAX_FIELD);
    }
    if let Some(s) = &mut r.detail {
        c(s, MAX_DETAIL);
    }
    r
}

impl Coalescer {
    /// An empty table with `limits`.
    pub fn new(limits: Limits) -> Coalescer {
        Coalescer {
            limits,
            open: HashMap::new(),
            buckets: HashMap::new(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Decides what `record` becomes at `now`: merged into an open window (nothing to
    /// write), written, or refused for its uid's rate (see the module header).
    pub fn admit(&mut self, record: NewRecord, now: Instant) -> Admission {
        let record = capped(record);
        let mut out = Admission {
            write: Vec::new(),
            refused: None,
        };
        let denial = record.outcome == Outcome::Denied;
        if denial && self.merge(&key(&record), record.time_ms, now, &mut out.write) {
            return out;
        }
        let uid = record.peer_uid;
        if let Some(uid) = uid {
            if !self.take_token(uid, now) {
                let refusal = self.refusal(record, uid);
                let k = key(&refusal);
                if !self.merge(&k, refusal.time_ms, now, &mut out.write) {
                    self.open_window(k, &refusal, now, &mut out.write);
                    out.write.push((refusal, 1));
                }
                // A denial stands as it was; an allowed operation is refused.
                if !denial {
                    out.refused = Some(uid);
                }
                return out;
            }
        }
        if denial {
            self.open_window(key(&record), &record, now, &mut out.write);
        }
        out.write.push((record, 1));
        out
    }

    /// Counts a denial of `k` into its open window; true if it was merged. A window that
    /// ended is closed (its count goes to `write`).
    fn merge(
        &mut self,
        k: &Key,
        time_ms: i64,
        now: Instant,
        write: &mut Vec<(NewRecord, u64)>,
    ) -> bool {
        match self.open.get_mut(k) {
            Some(o) if now < o.ends => {
                if o.merged == 0 {
                    o.first_ms = time_ms;
                }
                o.merged = o.merged.saturating_add(1);
                o.last_ms = time_ms;
                true
            }
            Some(_) => {
                if let Some(mut o) = self.open.remove(k) {
                    if o.merged > 0 {
                        write.push(o.emit());
                    }
                }
                false
            }
            None => false,
        }
    }

    fn open_window(
        &mut self,
        k: Key,
        template: &NewRecord,
        now: Instant,
        write: &mut Vec<(NewRecord, u64)>,
    ) {
        if self.open.len() >= MAX_OPEN {
            write.extend(self.take_all());
            self.open.clear();
        }
        self.open.insert(
            k,
            Open {
                template: template.clone(),
                ends: now + self.limits.window,
                merged: 0,
                first_ms: template.time_ms,
                last_ms: template.time_ms,
            },
        );
    }

    /// What an operation of `uid` over its rate is recorded as: its denial without the
    /// resource, or (allowed or failed) a refusal with `CKR_DEVICE_MEMORY`; logged at most
    /// every [`LOG_EVERY`] per uid, naming the limit.
    fn refusal(&mut self, r: NewRecord, uid: u32) -> NewRecord {
        let Limits { rate, burst, .. } = self.limits;
        let limit = format!(
            "peer uid {uid} is over its audit rate (audit_records_per_uid_per_second = {rate}, \
             audit_burst_per_uid = {burst})"
        );
        if let Some(b) = self.buckets.get_mut(&uid) {
            let now = b.at;
            if b.logged.is_none_or(|t| now.duration_since(t) >= LOG_EVERY) {
                b.logged = Some(now);
                tracing::warn!(
                    uid,
                    principal = %r.principal,
                    action = %r.action,
                    rate,
                    burst,
                    "audit rate limit: refusing this uid's operations and coalescing its \
                     denials (logged at most every 10 s per uid)"
                );
            }
        }
        let (outcome, rv, detail) = if r.outcome == Outcome::Denied {
            (
                Outcome::Denied,
                r.rv,
                format!("{limit}: denials recorded without their resource"),
            )
        } else {
            (
                Outcome::Denied,
                CKR_DEVICE_MEMORY,
                format!("{limit}: operation refused"),
            )
        };
        NewRecord {
            resource: None,
            outcome,
            rv,
            detail: Some(detail),
            request_id: None,
            ..r
        }
    }

    fn take_token(&mut self, uid: u32, now: Instant) -> bool {
        if self.buckets.len() >= MAX_BUCKETS && !self.buckets.contains_key(&uid) {
            let burst = f64::from(self.limits.burst);
            let rate = f64::from(self.limits.rate);
            self.buckets
                .retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
            if self.buckets.len() >= MAX_BUCKETS {
                // Every uid is busy: start over rather than grow (each gets a full bucket).
                self.buckets.clear();
            }
        }
        let Limits { rate, burst, .. } = self.limits;
        let b = self.buckets.entry(uid).or_insert(Bucket {
            tokens: f64::from(burst),
            at: now,
            logged: None,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * f64::from(rate)).min(f64::from(burst));
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// The counts of windows that ended by `now` (their keys are forgotten).
    pub fn take_due(&mut self, now: Instant) -> Vec<(NewRecord, u64)> {
        let mut out = Vec::new();
        self.open.retain(|_, o| {
            if now < o.ends {
                return true;
            }
            if o.merged > 0 {
                out.push(o.emit());
            }
            false
        });
        out
    }

    /// Every pending count, ended or not (a flush, a shutdown); the windows stay open with
    /// nothing merged.
    pub fn take_all(&mut self) -> Vec<(NewRecord, u64)> {
        let mut out = Vec::new();
        for o in self.open.values_mut() {
            if o.merged > 0 {
                out.push(o.emit());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denial(uid: u32, resource: &str) -> NewRecord {
        NewRecord {
            time_ms: 1,
            principal: format!("unix-uid:{uid}"),
            peer_pid: Some(9),
            peer_uid: Some(uid),
            instance: None,
            action: "C_GenerateKey".into(),
            resource: Some(resource.into()),
            outcome: Outcome::Denied,
            rv: 0xE1,
            detail: None,
            request_id: None,
        }
    }

    fn allowed(uid: u32) -> NewRecord {
        NewRecord {
            outcome: Outcome::Allowed,
            rv: 0,
            ..denial(uid, "r")
        }
    }

    fn total(v: &[(NewRecord, u64)]) -> u64 {
        v.iter().map(|(_, n)| n).sum()
    }

    #[test]
    fn identical_denials_are_one_record_per_window_with_the_count() {
        let limits = Limits {
            window: Duration::from_secs(10),
            rate: 0,
            burst: 100,
        };
        let mut c = Coalescer::new(limits);
        let t0 = Instant::now();
        let mut written = Vec::new();
        for i in 0..1000u64 {
            let a = c.admit(denial(1, "r"), t0 + Duration::from_millis(i));
            assert!(a.refused.is_none());
            written.extend(a.write);
        }
        assert_eq!(written.len(), 1, "only the first is written at once");
        written.extend(c.take_due(t0 + Duration::from_secs(5)));
        assert_eq!(written.len(), 1, "the window is still open");
        written.extend(c.take_due(t0 + Duration::from_secs(11)));
        assert_eq!(written.len(), 2);
        assert_eq!(total(&written), 1000);
        let detail = written[1].0.detail.as_deref().unwrap();
        assert!(detail.starts_with("999 identical denials"), "{detail}");
        // Allowed operations are never merged.
        let mut allowed_written = 0;
        for _ in 0..50 {
            allowed_written += c.admit(allowed(1), t0).write.len();
        }
        assert_eq!(allowed_written, 50);
    }

    #[test]
    fn a_uid_over_its_rate_is_refused_and_its_refusals_coalesce() {
        let limits = Limits {
            window: Duration::from_secs(60),
            rate: 0,
            burst: 10,
        };
        let mut c = Coalescer::new(limits);
        let t = Instant::now();
        let mut written = Vec::new();
        // Distinct denials defeat coalescing until the bucket is empty.
        for i in 0..1000 {
            let a = c.admit(denial(7, &format!("r{i}")), t);
            assert!(a.refused.is_none(), "a denial stays a denial");
            written.extend(a.write);
        }
        written.extend(c.take_all());
        assert_eq!(total(&written), 1000);
        assert!(written.len() <= 10 + 2, "{}", written.len());
        assert!(written[10..].iter().all(|(r, _)| r.resource.is_none()));
        // Its allowed operations are refused now; another uid's are not.
        let a = c.admit(allowed(7), t);
        assert_eq!(a.refused, Some(7));
        assert_eq!(a.write[0].0.rv, CKR_DEVICE_MEMORY);
        assert!(c.admit(allowed(7), t).write.is_empty(), "coalesced");
        let b = c.admit(allowed(8), t);
        assert!(b.refused.is_none());
        assert_eq!(b.write.len(), 1);
        // Records of no uid (keywardd's own) are never limited.
        let mut own = allowed(0);
        own.peer_uid = None;
        for _ in 0..100 {
            assert!(c.admit(own.clone(), t).refused.is_none());
        }
    }

    #[test]
    fn the_bucket_refills_at_the_rate() {
        let limits = Limits {
            window: Duration::from_secs(1),
            rate: 10,
            burst: 10,
        };
        let mut c = Coalescer::new(limits);
        let t = Instant::now();
        for _ in 0..10 {
            assert!(c.admit(allowed(3), t).refused.is_none());
        }
        assert!(c.admit(allowed(3), t).refused.is_some());
        let later = t + Duration::from_millis(500);
        let ok = (0..10)
            .filter(|_| c.admit(allowed(3), later).refused.is_none())
            .count();
        assert_eq!(ok, 5);
    }

    #[test]
    fn long_fields_are_cut_before_they_are_kept() {
        let mut c = Coalescer::new(Limits::default());
        let huge = "x".repeat(1 << 20);
        let a = c.admit(denial(1, &huge), Instant::now());
        let r = &a.write[0].0;
        let res = r.resource.as_deref().unwrap();
        assert!(res.len() <= MAX_FIELD, "{}", res.len());
        assert!(res.ends_with(&format!("[cut: {} bytes]", 1 << 20)), "{res}");
    }
}
