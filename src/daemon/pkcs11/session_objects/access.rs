//! What a session object shows and how it ends (design §4 "Session objects"): its
//! attributes (`C_GetAttributeValue`; the token is asked only for what keywardd does not
//! keep), finds among the instance's session objects, `C_SetAttributeValue` of `CKA_ID` and
//! `CKA_LABEL`, `C_DestroyObject`, and the sweeps when a session closes or the slot logs out.

use super::*;

impl ClientConnection {
    /// The value keywardd itself reports for `ty` of a session object, if it does.
    pub(super) fn own_attribute(o: &SessionObj, ty: u64) -> Option<AttrResult> {
        let is_key = o.class != CKO_DATA;
        let v = |v| Some(AttrResult::Value(v));
        match ty {
            CKA_CLASS => v(AttrValue::Ulong(o.class)),
            CKA_TOKEN => v(AttrValue::Bool(false)),
            CKA_LABEL => v(AttrValue::Bytes(Blob::new(o.cka_label.clone()))),
            CKA_ID if is_key => v(AttrValue::Bytes(Blob::new(o.cka_id.clone()))),
            CKA_DERIVE if is_key => v(AttrValue::Bool(false)),
            CKA_COPYABLE => v(AttrValue::Bool(false)),
            // keywardd's, from the kind it checked (a token may report 0 after an unwrap:
            // SoftHSM2 2.6 does).
            CKA_VALUE_LEN => match o.kind {
                Some(GenericKind::Aes(n) | GenericKind::Secret(n)) => {
                    v(AttrValue::Ulong(u64::try_from(n).unwrap_or(0)))
                }
                _ => None,
            },
            CKA_ID | CKA_DERIVE => Some(AttrResult::TypeInvalid),
            _ => None,
        }
    }

    /// The attributes `types` of a session object: keywardd's own, the rest from the token.
    pub(super) fn read_session_object(
        &self,
        o: &SessionObj,
        types: &[u64],
    ) -> Result<Vec<AttrResult>, P11Error> {
        let from_token: Vec<u64> = types
            .iter()
            .copied()
            .filter(|t| Self::own_attribute(o, *t).is_none())
            .collect();
        let mut read = if from_token.is_empty() {
            Vec::new()
        } else {
            self.svc
                .token
                .session_object_attributes(o.token, &from_token)
                .map_err(|e| {
                    tracing::debug!(error = %e, "reading a session object failed");
                    match e.ck_rv() {
                        CKR_KEY_HANDLE_INVALID => CKR_OBJECT_HANDLE_INVALID,
                        rv => rv,
                    }
                })?
        }
        .into_iter();
        Ok(types
            .iter()
            .map(|t| match Self::own_attribute(o, *t) {
                Some(r) => r,
                None => read.next().unwrap_or(AttrResult::TypeInvalid),
            })
            .collect())
    }

    /// C_GetAttributeValue of a session object.
    pub(in crate::daemon::pkcs11) fn session_object_attributes(
        &mut self,
        session: SessionId,
        o: &SessionObj,
        types: &[u64],
    ) -> Result<Pkcs11Response, P11Error> {
        self.healthy()?;
        let results = self.read_session_object(o, types)?;
        self.session_mut(session)?.reads += 1;
        Ok(Pkcs11Response::Attributes(results))
    }

    /// The session objects `session` sees that match `template` (C_FindObjects).
    pub(in crate::daemon::pkcs11) fn find_session_objects(
        &self,
        slot: SlotId,
        login: Option<bool>,
        template: &[Attribute],
    ) -> Vec<ObjectHandle> {
        let user = login == Some(false);
        let candidates = self
            .inst
            .lock()
            .session_objects_where(|o| o.slot == slot && (!o.private || user));
        let types: Vec<u64> = template.iter().map(|a| a.ty).collect();
        candidates
            .into_iter()
            .filter(|(_, o)| match self.read_session_object(o, &types) {
                // A sensitive or absent value never matches (no oracle).
                Ok(values) => template
                    .iter()
                    .zip(values)
                    .all(|(a, r)| r == AttrResult::Value(a.value.clone())),
                Err(_) => false,
            })
            .map(|(h, _)| h)
            .collect()
    }

    /// C_SetAttributeValue of a session object: `CKA_ID`/`CKA_LABEL` (keywardd's copies);
    /// anything else is `CKR_ATTRIBUTE_READ_ONLY`.
    pub(in crate::daemon::pkcs11) fn set_session_object_attributes(
        &mut self,
        handle: ObjectHandle,
        o: &SessionObj,
        template: &[Attribute],
    ) -> Result<Pkcs11Response, P11Error> {
        let (mut id, mut label) = (None, None);
        for a in template {
            match (a.ty, &a.value) {
                (CKA_ID, AttrValue::Bytes(b)) if o.class != CKO_DATA => {
                    id = Some(b.as_slice().to_vec())
                }
                (CKA_LABEL, AttrValue::Bytes(b)) => label = Some(b.as_slice().to_vec()),
                (CKA_ID | CKA_LABEL, _) if o.class != CKO_DATA || a.ty == CKA_LABEL => {
                    return Err(CKR_ATTRIBUTE_VALUE_INVALID.into())
                }
                (CKA_ID, _) => return Err(CKR_ATTRIBUTE_TYPE_INVALID.into()),
                _ => return Err(CKR_ATTRIBUTE_READ_ONLY.into()),
            }
        }
        let mut inst = self.inst.lock();
        let o = inst
            .session_object_mut(handle)
            .ok_or(CKR_OBJECT_HANDLE_INVALID)?;
        if let Some(id) = id {
            o.cka_id = id;
        }
        if let Some(label) = label {
            o.cka_label = label;
        }
        Ok(Pkcs11Response::Done)
    }

    /// C_DestroyObject of a session object: no permission needed (it is the instance's).
    pub(in crate::daemon::pkcs11) fn destroy_session_object(
        &mut self,
        session: SessionId,
        handle: ObjectHandle,
    ) -> Result<Pkcs11Response, P11Error> {
        let slot = self.session(session)?.slot;
        self.healthy()?;
        let view = self.svc.view()?;
        let ctx = self.slot_ctx(slot, &view.state)?;
        let o = self
            .inst
            .lock()
            .remove_session_object(handle)
            .ok_or(CKR_OBJECT_HANDLE_INVALID)?;
        self.destroy_in_token(&o);
        self.record_session(
            &ctx,
            "C_DestroyObject",
            format!("session object {}", handle.0),
        )?;
        Ok(Pkcs11Response::Done)
    }

    pub(super) fn destroy_in_token(&self, o: &SessionObj) {
        if let Err(e) = self.svc.token.destroy_session_object(o.token) {
            // Gone already (the token session that held it broke); nothing else to do.
            tracing::warn!(error = %e, "destroying a session object failed");
        }
    }

    /// Destroys the session objects `which` selects (a closed session's; the private ones
    /// of a slot at C_Logout), audited as one record.
    pub(in crate::daemon::pkcs11) fn drop_session_objects(
        &self,
        slot: SlotId,
        action: &str,
        which: impl Fn(&SessionObj) -> bool,
    ) {
        let gone: Vec<(ObjectHandle, SessionObj)> = {
            let mut inst = self.inst.lock();
            let found = inst.session_objects_where(which);
            for (h, _) in &found {
                inst.remove_session_object(*h);
            }
            found
        };
        if gone.is_empty() {
            return;
        }
        for (_, o) in &gone {
            self.destroy_in_token(o);
        }
        let (principal, _) = self.inst.lock().principal(slot);
        let ring = self.inst.lock().slots.get(&slot).map(|e| e.ring.clone());
        let list: Vec<String> = gone.iter().map(|(h, _)| h.0.to_string()).collect();
        let _ = self.record(
            &principal,
            action,
            ring,
            Outcome::Allowed,
            0,
            Some(format!("destroyed session objects {}", list.join(", "))),
        );
    }

    /// Destroys the session objects the session `id` (of this connection) created.
    pub(in crate::daemon::pkcs11) fn drop_owned_session_objects(&self, slot: SlotId, id: u64) {
        let owner = (self.id, id);
        self.drop_session_objects(slot, "C_CloseSession", |o| o.owner == owner);
    }
}
