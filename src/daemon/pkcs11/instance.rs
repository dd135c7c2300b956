//! Per module instance state (design §1, §4): the pre-login principal, login state per slot,
//! the slot list fixed at `ListSlots`, open session counts, and the object handle table: one
//! map from every handle given out to what it names ([`ObjectRef`]: a key object, a
//! certificate, an import job's key, a session object, or a retired session object's handle),
//! so a handle is resolved to its kind with one lookup.
//!
//! Handles of keys, certificates and import jobs are derived (design §4): 63 bits of
//! HMAC-SHA-256 under a key derived from the instance secret, over the object's stable
//! identity (a version's key name, number and half; a certificate's id; a job's name). So the
//! same object always gets the same handle, also in a later keywardd that adopted the
//! instance's secret (a handle the table does not know is looked for among the objects the
//! session's principal sees now, [`InstanceState::derived`]); a handle never names another
//! object (a stale handle matches another object's only by a 2^-63 accident, and then still
//! only one the principal sees), and handles are meaningless in other instances (other
//! secrets). Session objects get random 63-bit handles: they die with keywardd's token
//! sessions, so their handles are invalid after a restart. Handles are never reused.

use super::objects::ObjectKey;
use crate::policy::Principal;
use hmac::{Hmac, Mac};
use keyward_token::{GenericKind, SessionObject};
use keyward_wire::pkcs11::{ObjectHandle, SlotId};
use rand::Rng;
use sha2::Sha256;
use std::collections::{BTreeSet, HashMap};

/// A session object of the instance (design §4 "Session objects"): made by one of its
/// sessions on one slot, in the backing token.
#[derive(Debug, Clone)]
pub struct SessionObj {
    /// The slot (token) it was made on; it is seen on that slot only.
    pub slot: SlotId,
    /// The creating connection and session: closing that session destroys it.
    pub owner: (u64, u64),
    /// The object in the backing token.
    pub token: SessionObject,
    /// `CKA_CLASS`.
    pub class: u64,
    /// `CKA_PRIVATE`: seen only while the slot is logged in as the user.
    pub private: bool,
    /// The client's `CKA_ID` (kept here, not in the token).
    pub cka_id: Vec<u8>,
    /// The client's `CKA_LABEL` (kept here, not in the token).
    pub cka_label: Vec<u8>,
    /// What operations may use it (`None`: a data object).
    pub kind: Option<GenericKind>,
    /// Its count against the limits (design §9), given back when the last copy goes.
    pub charge: std::sync::Arc<crate::daemon::limits::Charge>,
}

/// A login on one slot.
#[derive(Debug, Clone)]
pub struct Login {
    /// Whom it made the principal.
    pub principal: Principal,
    /// `CKU_SO`: public objects only.
    pub so: bool,
}

/// One slot of the instance's list: the ring name as the module named it (a configured ring
/// that does not exist or is invisible keeps its name and looks empty).
#[derive(Debug, Clone)]
pub struct SlotEntry {
    /// The ring's full name.
    pub ring: String,
    /// The token label shown.
    pub label: String,
    /// The token serial shown.
    pub serial: String,
}

/// One module instance.
#[derive(Debug)]
pub struct InstanceState {
    /// The instance id (audit records).
    pub id: String,
    /// The pre-login principal (the connection's).
    pub base: Principal,
    /// The key object handles are derived under (from the instance secret).
    handle_key: [u8; 32],
    /// Logins by slot.
    pub logins: HashMap<SlotId, Login>,
    /// The slot list.
    pub slots: HashMap<SlotId, SlotEntry>,
    /// Open sessions by slot: (all, read-write).
    pub sessions: HashMap<SlotId, (u64, u64)>,
    /// The one handle space: what every handle given out names.
    handles: HashMap<u64, ObjectRef>,
    /// The handles of token objects by identity (the reverse of `handles` for them).
    given: HashMap<Identity, u64>,
    /// The live session objects' handles among `handles` (an index: closing a session or
    /// logging out sweeps them without walking every key's handle).
    session_handles: BTreeSet<u64>,
}

/// What a handle names (design §4: keys, certificates, import jobs and session objects share
/// one handle space).
#[derive(Debug, Clone)]
pub enum ObjectRef {
    /// One object (half) of a key version.
    Key(ObjectKey),
    /// A certificate, by its id in the store.
    Cert(i64),
    /// An import job's private key, by the job's name.
    Job(String),
    /// A session object of the instance.
    Session(Box<SessionObj>),
    /// A destroyed session object: its handle is never given out again.
    Retired,
}

/// A token object's stable identity: what its handle derives from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Identity {
    Key(ObjectKey),
    Cert(i64),
    Job(String),
}

impl Identity {
    fn object_ref(&self) -> ObjectRef {
        match self {
            Identity::Key(k) => ObjectRef::Key(k.clone()),
            Identity::Cert(id) => ObjectRef::Cert(*id),
            Identity::Job(name) => ObjectRef::Job(name.clone()),
        }
    }
}

impl InstanceState {
    /// A new instance whose pre-login principal is `base`.
    /// `secret`: the instance secret its handles derive from (`None`: a random one, for
    /// clients with no secret to present again).
    pub fn new(id: String, base: Principal, secret: Option<&[u8; 32]>) -> InstanceState {
        let seed: [u8; 32] = match secret {
            Some(s) => *s,
            None => rand::random(),
        };
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&seed).expect("any key length");
        mac.update(b"keyward object handles v1");
        let handle_key: [u8; 32] = mac.finalize().into_bytes().into();
        InstanceState {
            id,
            base,
            handle_key,
            logins: HashMap::new(),
            slots: HashMap::new(),
            sessions: HashMap::new(),
            handles: HashMap::new(),
            given: HashMap::new(),
            session_handles: BTreeSet::new(),
        }
    }

    /// The principal on `slot` and whether it is logged in (and as SO).
    pub fn principal(&self, slot: SlotId) -> (Principal, Option<bool>) {
        match self.logins.get(&slot) {
            Some(l) => (l.principal.clone(), Some(l.so)),
            None => (self.base.clone(), None),
        }
    }

    /// The handle of `object`, made on first use.
    pub fn handle(&mut self, object: &ObjectKey) -> ObjectHandle {
        self.give(Identity::Key(object.clone()))
    }

    /// The handle of a token object, made on first use: derived from its identity, or (a
    /// 2^-63 collision) a random free one.
    fn give(&mut self, id: Identity) -> ObjectHandle {
        if let Some(h) = self.given.get(&id) {
            return ObjectHandle(*h);
        }
        let derived = match &id {
            Identity::Key(k) => self.derived(k),
            Identity::Cert(c) => self.derive(2, &[&c.to_be_bytes()]),
            Identity::Job(name) => self.derive(3, &[name.as_bytes()]),
        };
        let h = if self.known(ObjectHandle(derived)) {
            self.fresh_handle()
        } else {
            derived
        };
        self.handles.insert(h, id.object_ref());
        self.given.insert(id, h);
        ObjectHandle(h)
    }

    /// What `handle` names in this instance, if anything (a retired session object's handle
    /// names [`ObjectRef::Retired`]).
    pub fn named(&self, handle: ObjectHandle) -> Option<&ObjectRef> {
        self.handles.get(&handle.0)
    }

    /// The handle `object` derives to in this instance (what [`InstanceState::handle`] gives
    /// it, but for a 2^-63 collision).
    pub fn derived(&self, object: &ObjectKey) -> u64 {
        let half: u8 = match object.half {
            super::objects::Half::Secret => 0,
            super::objects::Half::Public => 1,
            super::objects::Half::Private => 2,
        };
        let name = object.key.to_string();
        self.derive(
            1,
            &[
                name.as_bytes(),
                &[0],
                &object.version.to_be_bytes(),
                &[half],
            ],
        )
    }

    fn derive(&self, domain: u8, parts: &[&[u8]]) -> u64 {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.handle_key).expect("any key length");
        mac.update(&[domain]);
        for p in parts {
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        let out = mac.finalize().into_bytes();
        let h = u64::from_be_bytes(out[..8].try_into().expect("8 bytes")) & 0x7fff_ffff_ffff_ffff;
        h.max(1)
    }

    /// True if `h` names anything in this instance, or did.
    pub fn known(&self, h: ObjectHandle) -> bool {
        self.handles.contains_key(&h.0)
    }

    /// A handle not used for anything yet.
    fn fresh_handle(&self) -> u64 {
        let mut rng = rand::thread_rng();
        loop {
            let h: u64 = rng.gen_range(1..=0x7fff_ffff_ffff_ffff);
            if !self.known(ObjectHandle(h)) {
                break h;
            }
        }
    }

    /// The handle of the certificate `id`, made on first use (one handle space with keys).
    pub fn cert_handle(&mut self, id: i64) -> ObjectHandle {
        self.give(Identity::Cert(id))
    }

    /// The handle of the import job `name`'s private key, made on first use (one handle
    /// space with keys and certificates).
    pub fn job_handle(&mut self, name: &str) -> ObjectHandle {
        self.give(Identity::Job(name.to_string()))
    }

    /// The import job a handle names in this instance.
    pub fn job(&self, handle: ObjectHandle) -> Option<String> {
        match self.named(handle)? {
            ObjectRef::Job(name) => Some(name.clone()),
            _ => None,
        }
    }

    /// The certificate a handle names in this instance.
    pub fn cert(&self, handle: ObjectHandle) -> Option<i64> {
        match self.named(handle)? {
            ObjectRef::Cert(id) => Some(*id),
            _ => None,
        }
    }

    /// The key object a handle names in this instance.
    pub fn object(&self, handle: ObjectHandle) -> Option<ObjectKey> {
        match self.named(handle)? {
            ObjectRef::Key(k) => Some(k.clone()),
            _ => None,
        }
    }

    /// A handle for a new session object.
    pub fn add_session_object(&mut self, object: SessionObj) -> ObjectHandle {
        let h = self.fresh_handle();
        self.handles.insert(h, ObjectRef::Session(Box::new(object)));
        self.session_handles.insert(h);
        ObjectHandle(h)
    }

    /// The session object a handle names in this instance.
    pub fn session_object(&self, handle: ObjectHandle) -> Option<&SessionObj> {
        match self.named(handle)? {
            ObjectRef::Session(o) => Some(o.as_ref()),
            _ => None,
        }
    }

    /// The session object a handle names, mutably (its `CKA_ID`/`CKA_LABEL`).
    pub fn session_object_mut(&mut self, handle: ObjectHandle) -> Option<&mut SessionObj> {
        match self.handles.get_mut(&handle.0)? {
            ObjectRef::Session(o) => Some(o.as_mut()),
            _ => None,
        }
    }

    /// Forgets a session object; its handle is never reused.
    pub fn remove_session_object(&mut self, handle: ObjectHandle) -> Option<SessionObj> {
        let slot = self.handles.get_mut(&handle.0)?;
        if !matches!(slot, ObjectRef::Session(_)) {
            return None;
        }
        let ObjectRef::Session(o) = std::mem::replace(slot, ObjectRef::Retired) else {
            return None;
        };
        self.session_handles.remove(&handle.0);
        Some(*o)
    }

    /// The instance's session objects that `keep` selects, with their handles.
    pub fn session_objects_where(
        &self,
        keep: impl Fn(&SessionObj) -> bool,
    ) -> Vec<(ObjectHandle, SessionObj)> {
        self.session_handles
            .iter()
            .filter_map(|h| match self.handles.get(h) {
                Some(ObjectRef::Session(o)) if keep(o) => Some((ObjectHandle(*h), (**o).clone())),
                _ => None,
            })
            .collect()
    }

    /// How many session objects the instance holds.
    pub fn session_object_count(&self) -> usize {
        self.session_handles.len()
    }

    /// A session on `slot` opened.
    pub fn session_opened(&mut self, slot: SlotId, rw: bool) {
        let e = self.sessions.entry(slot).or_default();
        e.0 += 1;
        if rw {
            e.1 += 1;
        }
    }

    /// A session on `slot` closed; the last one logs the slot out (PKCS#11 §5.6).
    pub fn session_closed(&mut self, slot: SlotId, rw: bool) {
        let e = self.sessions.entry(slot).or_default();
        e.0 = e.0.saturating_sub(1);
        if rw {
            e.1 = e.1.saturating_sub(1);
        }
        if e.0 == 0 {
            self.sessions.remove(&slot);
            self.logins.remove(&slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::pkcs11::objects::Half;
    use crate::policy::{CryptoKeyName, KeyRingName, RingParent};

    fn key(v: u64) -> ObjectKey {
        ObjectKey {
            key: CryptoKeyName {
                ring: KeyRingName {
                    parent: RingParent::Project("p".into()),
                    id: "r".into(),
                },
                id: "k".into(),
            },
            version: v,
            half: Half::Secret,
        }
    }

    #[test]
    fn handles_are_stable_and_distinct() {
        let mut i = InstanceState::new("i".into(), Principal::anonymous(), Some(&[7; 32]));
        let a = i.handle(&key(1));
        let b = i.handle(&key(2));
        assert_ne!(a, b);
        assert_eq!(i.handle(&key(1)), a);
        assert_eq!(i.object(a), Some(key(1)));
        assert!(a.0 != 0 && a.0 <= 0x7fff_ffff_ffff_ffff);
        // The same secret in a later keywardd: the same handles, in any order.
        let mut again = InstanceState::new("j".into(), Principal::anonymous(), Some(&[7; 32]));
        assert_eq!(again.derived(&key(2)), b.0);
        assert_eq!(again.handle(&key(2)), b);
        assert_eq!(again.handle(&key(1)), a);
        assert_eq!(again.cert_handle(9), i.cert_handle(9));
        assert_eq!(again.job_handle("j"), i.job_handle("j"));
        // Another instance's secret: other handles.
        let other = InstanceState::new("k".into(), Principal::anonymous(), Some(&[8; 32]));
        assert_ne!(other.derived(&key(1)), a.0);
    }

    #[test]
    fn one_handle_space_names_each_kind() {
        let mut i = InstanceState::new("i".into(), Principal::anonymous(), Some(&[7; 32]));
        let k = i.handle(&key(1));
        let c = i.cert_handle(9);
        let j = i.job_handle("job");
        assert!(matches!(i.named(k), Some(ObjectRef::Key(o)) if *o == key(1)));
        assert!(matches!(i.named(c), Some(ObjectRef::Cert(9))));
        assert!(matches!(i.named(j), Some(ObjectRef::Job(n)) if n == "job"));
        // Each kind's lookup answers only for its own kind.
        assert_eq!(i.object(c), None);
        assert_eq!(i.cert(j), None);
        assert_eq!(i.job(k), None);
        assert!(i.session_object(k).is_none());
        assert_eq!(i.session_object_count(), 0);
        assert!(i.named(ObjectHandle(k.0 ^ 1)).is_none());
    }

    #[test]
    fn last_session_logs_out() {
        let mut i = InstanceState::new("i".into(), Principal::anonymous(), None);
        let s = SlotId(5);
        i.session_opened(s, true);
        i.logins.insert(
            s,
            Login {
                principal: Principal::anonymous(),
                so: false,
            },
        );
        i.session_opened(s, false);
        i.session_closed(s, true);
        assert!(i.logins.contains_key(&s));
        i.session_closed(s, false);
        assert!(!i.logins.contains_key(&s));
    }
}
