//! Slots, tokens, sessions and login (PKCS#11 3.0 §5.4-§5.6) for one client connection:
//! the instance's slot list (design §4 "Slots": a ring per slot), token and mechanism
//! information, session open and close (the close records the session's read counts,
//! design §6), and `C_Login` (a service-account key as the PIN; `CKU_SO` needs
//! kms.keyRings.setIamPolicy on the ring).

use super::ck::*;
use super::gate;
use super::instance::{Login, SlotEntry};
use super::ops;
use super::P11Error;
use super::{
    ClientConnection, KeyAuthenticator, Session, SlotCtx, MAX_CONFIGURED_LABEL, MAX_CONFIGURED_RING,
};
use crate::audit::Outcome;
use crate::catalog::State;
use crate::daemon::limits::Resource;
use crate::policy::{KeyRingName, Principal, ResourceName};
use keyward_wire::pkcs11::{
    ring_identity, ConfiguredToken, Pkcs11Response, SessionId, SlotDescription, SlotId, TokenInfo,
    UserType,
};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::Ordering;

impl ClientConnection {
    /// `C_GetTokenInfo` (PKCS#11 3.0 §5.5): the slot's label, serial and session counts.
    pub(super) fn get_token_info(&self, slot: SlotId) -> Result<Pkcs11Response, P11Error> {
        let entry = self.slot_entry(slot)?;
        let counts = self.inst.lock().sessions.get(&slot).copied();
        Ok(Pkcs11Response::TokenInfo(token_info(
            &entry.label,
            &entry.serial,
            counts,
        )))
    }

    /// `C_GetMechanismList` (§5.5): the mechanisms keywardd serves on the backing token.
    pub(super) fn mechanism_list(&self, slot: SlotId) -> Result<Pkcs11Response, P11Error> {
        self.slot_entry(slot)?;
        Ok(Pkcs11Response::Mechanisms(ops::served(&self.svc.token)))
    }

    /// `C_GetMechanismInfo` (§5.5); a mechanism not served is `CKR_MECHANISM_INVALID`.
    pub(super) fn mechanism_info(
        &self,
        slot: SlotId,
        mechanism: u64,
    ) -> Result<Pkcs11Response, P11Error> {
        self.slot_entry(slot)?;
        if !ops::served(&self.svc.token).contains(&mechanism) {
            return Err(CKR_MECHANISM_INVALID.into());
        }
        ops::info(mechanism)
            .map(Pkcs11Response::MechanismInfo)
            .ok_or(CKR_MECHANISM_INVALID.into())
    }

    /// `C_OpenSession` (§5.6), within the session limit of design §9 (`CKR_SESSION_COUNT`,
    /// audited).
    pub(super) fn open_session(
        &mut self,
        slot: SlotId,
        read_write: bool,
    ) -> Result<Pkcs11Response, P11Error> {
        let entry = self.slot_entry(slot)?;
        let principal = self.inst.lock().principal(slot).0;
        let charge = self
            .charge(Resource::Sessions, &principal, 1)
            .map_err(|r| {
                self.deny_limit(&principal, Some(entry.ring.clone()), CKR_SESSION_COUNT, r)
            })?;
        let id = self.next_session;
        self.next_session += 1;
        self.sessions.insert(
            id,
            Session {
                slot,
                rw: read_write,
                ops: HashMap::new(),
                finds: 0,
                reads: 0,
                _charge: charge,
            },
        );
        self.inst.lock().session_opened(slot, read_write);
        Ok(Pkcs11Response::Session(SessionId(id)))
    }

    /// `C_CloseSession` (§5.6).
    pub(super) fn close(&mut self, session: SessionId) -> Result<Pkcs11Response, P11Error> {
        if !self.sessions.contains_key(&session.0) {
            return Err(CKR_SESSION_HANDLE_INVALID.into());
        }
        self.close_session(session.0);
        Ok(Pkcs11Response::Done)
    }

    /// `C_Logout` (§5.6).
    pub(super) fn logout(&mut self, slot: SlotId) -> Result<Pkcs11Response, P11Error> {
        self.slot_entry(slot)?;
        let was = self.inst.lock().logins.remove(&slot);
        match was {
            Some(_) => {
                // PKCS#11 §5.6: C_Logout destroys the application's private
                // session objects.
                self.drop_session_objects(slot, "C_Logout", |o| o.slot == slot && o.private);
                Ok(Pkcs11Response::Done)
            }
            None => Err(CKR_USER_NOT_LOGGED_IN.into()),
        }
    }

    // ------------------------------------------------------------------ slots, login

    /// The instance's slot list (design §4): every ring its pre-login principal sees, plus
    /// every configured ring (looking empty if it is not seen). The list replaces the
    /// instance's slot table (the module sends its whole fixed list on each connection).
    /// More than `[daemon] max_unseen_configured_rings` distinct configured rings the
    /// principal does not see is `CKR_ARGUMENTS_BAD` (audited, logged): the rings it sees
    /// are not counted (an organisation admin sees thousands).
    pub(super) fn list_slots(
        &mut self,
        configured: &[ConfiguredToken],
    ) -> Result<Vec<SlotDescription>, P11Error> {
        let state = self.svc.published.current();
        let base = self.inst.lock().base.clone();
        let cap = self.svc.unseen_ring_cap.load(Ordering::Relaxed);
        let mut table: HashMap<SlotId, SlotEntry> = HashMap::new();
        let mut listed: Vec<(SlotId, String, String, String)> = Vec::new();
        for ring in gate::rings_seen(&state.policy, &base) {
            let Some(r) = state.catalog.rings.get(&ring) else {
                continue;
            };
            let name = ResourceName::KeyRing(ring.clone()).to_string();
            let slot = SlotId(u64::from(r.slot_id));
            if table
                .insert(
                    slot,
                    SlotEntry {
                        ring: name.clone(),
                        label: r.token_label.clone(),
                        serial: r.serial.clone(),
                    },
                )
                .is_none()
            {
                listed.push((slot, name, r.token_label.clone(), r.serial.clone()));
            }
        }
        let mut unseen = 0usize;
        for c in configured {
            // The slot id and serial come from the name as written (the module computes the
            // same); what is kept, shown and audited is cut (design §9: no ring name is
            // longer than MAX_CONFIGURED_RING bytes, so a longer one only looks absent).
            let (slot, serial) = ring_identity(&c.ring);
            if table.contains_key(&slot) {
                continue;
            }
            unseen += 1;
            if unseen > cap {
                self.refuse_slot_list(&base, configured.len(), cap);
                return Err(CKR_ARGUMENTS_BAD.into());
            }
            // Invisible or missing: the configured label, the same flags, empty.
            let ring = crate::audit::cap(&c.ring, MAX_CONFIGURED_RING).into_owned();
            let label = crate::audit::cap(&c.label, MAX_CONFIGURED_LABEL).into_owned();
            table.insert(
                slot,
                SlotEntry {
                    ring: ring.clone(),
                    label: label.clone(),
                    serial: serial.clone(),
                },
            );
            listed.push((slot, ring, label, serial));
        }
        let mut inst = self.inst.lock();
        let out = listed
            .into_iter()
            .map(|(slot, ring, label, serial)| SlotDescription {
                slot,
                ring,
                token: token_info(&label, &serial, inst.sessions.get(&slot).copied()),
            })
            .collect();
        inst.slots = table;
        Ok(out)
    }

    /// Audits and logs (at most every `server::LIMIT_LOG_EVERY`) a slot list refused by
    /// `[daemon] max_unseen_configured_rings`.
    pub(super) fn refuse_slot_list(&self, base: &Principal, named: usize, cap: usize) {
        self.deny(
            base,
            "C_GetSlotList",
            None,
            CKR_ARGUMENTS_BAD,
            &format!(
                "limit reached: more than {cap} configured key rings the caller does not see \
                 ([daemon] max_unseen_configured_rings)"
            ),
        );
        let now = std::time::Instant::now();
        let mut log = self.svc.unseen_log.lock();
        match log.0 {
            Some(at) if now.duration_since(at) < crate::daemon::server::LIMIT_LOG_EVERY => {
                log.1 += 1
            }
            _ => {
                tracing::warn!(
                    limit = "max_unseen_configured_rings",
                    cap,
                    named,
                    uid = self.caller.peer_uid,
                    pid = self.caller.peer_pid,
                    principal = %base.member,
                    suppressed = log.1,
                    "refused by [daemon] max_unseen_configured_rings = {cap}: a slot list \
                     naming more configured key rings the caller does not see"
                );
                *log = (Some(now), 0);
            }
        }
    }

    /// The instance's entry for `slot`; a ring the pre-login principal sees is added if the
    /// list was made before it appeared (or by an earlier keywardd).
    pub(super) fn slot_entry(&self, slot: SlotId) -> Result<SlotEntry, P11Error> {
        let mut inst = self.inst.lock();
        if let Some(e) = inst.slots.get(&slot) {
            return Ok(e.clone());
        }
        let state = self.svc.published.current();
        let u = u32::try_from(slot.0).map_err(|_| CKR_SLOT_ID_INVALID)?;
        let r = state.catalog.ring_by_slot(u).ok_or(CKR_SLOT_ID_INVALID)?;
        if !gate::ring_seen(&state.policy, &inst.base, &r.name) {
            return Err(CKR_SLOT_ID_INVALID.into());
        }
        let e = SlotEntry {
            ring: ResourceName::KeyRing(r.name.clone()).to_string(),
            label: r.token_label.clone(),
            serial: r.serial.clone(),
        };
        inst.slots.insert(slot, e.clone());
        Ok(e)
    }

    pub(super) fn slot_ctx(&self, slot: SlotId, state: &State) -> Result<SlotCtx, P11Error> {
        let entry = self.slot_entry(slot)?;
        let (principal, login) = self.inst.lock().principal(slot);
        let ring = parse_ring(&entry.ring).filter(|r| {
            state.catalog.rings.contains_key(r) && gate::ring_seen(&state.policy, &principal, r)
        });
        Ok(SlotCtx {
            principal,
            login,
            ring,
            ring_name: entry.ring,
        })
    }

    pub(super) fn login(
        &mut self,
        slot: SlotId,
        user: UserType,
        pin: Option<&[u8]>,
        auth: KeyAuthenticator<'_>,
    ) -> Result<Pkcs11Response, P11Error> {
        let entry = self.slot_entry(slot)?;
        let so = match user {
            UserType::User => false,
            UserType::So => true,
            UserType::ContextSpecific => return Err(CKR_OPERATION_NOT_INITIALIZED.into()),
        };
        {
            let inst = self.inst.lock();
            if let Some(l) = inst.logins.get(&slot) {
                return Err(if l.so == so {
                    CKR_USER_ALREADY_LOGGED_IN.into()
                } else {
                    CKR_USER_ANOTHER_ALREADY_LOGGED_IN.into()
                });
            }
        }
        self.healthy()?;
        let base = self.inst.lock().base.clone();
        let who = if so { "CKU_SO" } else { "CKU_USER" };
        let principal = match pin {
            None | Some([]) => Ok(base.clone()),
            Some(bytes) => match std::str::from_utf8(bytes) {
                Ok(key) => auth(key),
                Err(_) => Err(P11Error::new(CKR_PIN_INCORRECT, "the PIN is not UTF-8")),
            },
        };
        let principal = match principal {
            Ok(p) => p,
            Err(rv) => {
                self.deny(
                    &base,
                    "C_Login",
                    Some(entry.ring.clone()),
                    rv.rv(),
                    &format!("{who}: service-account key refused"),
                );
                return Err(rv);
            }
        };
        if so {
            let state = self.svc.published.current();
            let ring = parse_ring(&entry.ring);
            if let Err(d) = gate::so_login_gate(&state.policy, &principal, ring.as_ref()) {
                return Err(self.refused(&principal, "C_Login", Some(entry.ring.clone()), d));
            }
        }
        self.record(
            &principal,
            "C_Login",
            Some(entry.ring),
            Outcome::Allowed,
            0,
            Some(who.to_owned()),
        )?;
        self.inst
            .lock()
            .logins
            .insert(slot, Login { principal, so });
        Ok(Pkcs11Response::Done)
    }

    // ------------------------------------------------------------------ sessions

    pub(super) fn session(&self, id: SessionId) -> Result<&Session, P11Error> {
        self.sessions
            .get(&id.0)
            .ok_or(CKR_SESSION_HANDLE_INVALID.into())
    }

    pub(super) fn session_mut(&mut self, id: SessionId) -> Result<&mut Session, P11Error> {
        self.sessions
            .get_mut(&id.0)
            .ok_or(CKR_SESSION_HANDLE_INVALID.into())
    }

    pub(super) fn close_session(&mut self, id: u64) {
        let Some(s) = self.sessions.remove(&id) else {
            return;
        };
        let principal = {
            let mut inst = self.inst.lock();
            let p = inst.principal(s.slot).0;
            inst.session_closed(s.slot, s.rw);
            p
        };
        self.drop_owned_session_objects(s.slot, id);
        if s.finds > 0 || s.reads > 0 {
            let ring = self.inst.lock().slots.get(&s.slot).map(|e| e.ring.clone());
            let _ = self.record(
                &principal,
                "session.reads",
                ring,
                Outcome::Allowed,
                0,
                Some(format!(
                    "C_FindObjects={} C_GetAttributeValue={}",
                    s.finds, s.reads
                )),
            );
        }
    }
}

fn token_info(label: &str, serial: &str, counts: Option<(u64, u64)>) -> TokenInfo {
    let (all, rw) = counts.unwrap_or_default();
    TokenInfo {
        label: label.to_owned(),
        serial: serial.to_owned(),
        flags: CKF_LOGIN_REQUIRED | CKF_TOKEN_INITIALIZED | CKF_USER_PIN_INITIALIZED | CKF_RNG,
        session_count: Some(all),
        rw_session_count: Some(rw),
    }
}

fn parse_ring(name: &str) -> Option<KeyRingName> {
    match ResourceName::from_str(name) {
        Ok(ResourceName::KeyRing(r)) => Some(r),
        _ => None,
    }
}
