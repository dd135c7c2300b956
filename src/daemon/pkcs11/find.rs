//! Finds and attributes (PKCS#11 3.0 §5.7): which objects a session's principal sees
//! (design §4 "Objects"; in creation order, design §9 "Squatting"), how a handle resolves to
//! one (adopting a handle an earlier keywardd derived from the same instance secret), and
//! `C_FindObjects` / `C_GetAttributeValue` on them. Reads are counted per session and
//! recorded when it closes (design §6).

use super::ck::*;
use super::gate;
use super::objects::{self, ObjectKey, ObjectView};
use super::P11Error;
use super::{ClientConnection, SlotCtx, View};
use crate::policy::CryptoKeyName;
use crate::store::keys::{PublicHalf, VersionState};
use keyward_wire::pkcs11::{AttrResult, Attribute, ObjectHandle, Pkcs11Response, SessionId};

impl ClientConnection {
    // ------------------------------------------------------------------ objects

    /// Every object the session's principal sees; with `label`, only keys whose objects may
    /// carry that `CKA_LABEL` are looked at (issue 9: a find by label among 1,000 keys
    /// checks visibility and builds objects for the candidates only, not for every key).
    pub(super) fn objects<'s>(
        &self,
        view: &'s View,
        ctx: &SlotCtx,
        label: Option<&[u8]>,
    ) -> Vec<ObjectView<'s>> {
        let Some(ring) = &ctx.ring else {
            return Vec::new();
        };
        let state = &view.state;
        let mut names: Vec<CryptoKeyName> = match label {
            Some(label) => state
                .catalog
                .keys
                .values()
                .filter(|k| &k.name.ring == ring && label_may_match(view, k, label))
                .map(|k| k.name.clone())
                .filter(|n| gate::key_seen(&state.policy, &ctx.principal, n))
                .collect(),
            None => gate::keys_seen(&state.policy, &ctx.principal, ring),
        };
        // Creation order (design §9 "Squatting"): the oldest key holding a name comes first,
        // whatever the keys' names.
        names.sort_by_key(|n| state.catalog.keys.get(n).map_or(i64::MAX, |k| k.seq));
        let mut out = Vec::new();
        for name in names {
            let Some(key) = state.catalog.keys.get(&name) else {
                continue;
            };
            let perms = gate::attribute_rights(&state.policy, &ctx.principal, &name);
            for v in key.versions.iter().filter(|v| {
                matches!(
                    v.state,
                    VersionState::Enabled | VersionState::DestroyScheduled
                )
            }) {
                out.extend(
                    objects::version_objects(key, v, perms, self.extra(view, &name, v.version))
                        .into_iter()
                        .filter(|o| o.shown())
                        .filter(|o| !o.id.half.is_private() || ctx.login == Some(false)),
                );
            }
        }
        out
    }

    /// The object a handle names, if the session's principal sees it now (any state, so
    /// `*Init` can tell a disabled version); `invalid` otherwise.
    pub(super) fn resolve<'s>(
        &self,
        view: &'s View,
        ctx: &SlotCtx,
        handle: ObjectHandle,
        invalid: u64,
    ) -> Result<ObjectView<'s>, P11Error> {
        let state = &view.state;
        let known = self.inst.lock().object(handle);
        let id = match known {
            Some(id) => id,
            None => self.adopt(view, ctx, handle).ok_or(invalid)?,
        };
        let ring = ctx.ring.as_ref().ok_or(invalid)?;
        if &id.key.ring != ring {
            return Err(invalid.into());
        }
        if let Err(d) = gate::visibility(&state.policy, &ctx.principal, &id.key, invalid) {
            // A handle the instance was given while it saw the key (a binding was revoked
            // since, or another principal's session found it): the caller is told the
            // object is absent, the audit log that it was refused (design §4, §6).
            return Err(self.refused(&ctx.principal, self.current, Some(id.version_name()), d));
        }
        if id.half.is_private() && ctx.login != Some(false) {
            return Err(invalid.into());
        }
        let key = state.catalog.keys.get(&id.key).ok_or(invalid)?;
        let version = key
            .versions
            .iter()
            .find(|v| v.version == id.version)
            .ok_or(invalid)?;
        let perms = gate::attribute_rights(&state.policy, &ctx.principal, &id.key);
        let obj = objects::version_objects(
            key,
            version,
            perms,
            self.extra(view, &id.key, version.version),
        )
        .into_iter()
        .find(|o| o.id == id)
        .ok_or(invalid)?;
        // A destroyed object is gone; a disabled version's objects stay (for *Init's code).
        let gone = matches!(
            version.state,
            VersionState::Destroyed | VersionState::DestroyScheduled
        ) || (id.half == objects::Half::Public
            && obj.public_half == Some(PublicHalf::Destroyed));
        if gone && !obj.shown() {
            return Err(invalid.into());
        }
        Ok(obj)
    }

    /// A handle this instance's table does not know (design §4: one given by an earlier
    /// keywardd, which derived it from the same instance secret): the object the session's
    /// principal sees now whose handle it is, if any; certificates and import jobs the
    /// principal sees get their handles too (as a find would give them).
    pub(super) fn adopt(
        &self,
        view: &View,
        ctx: &SlotCtx,
        handle: ObjectHandle,
    ) -> Option<ObjectKey> {
        if self.inst.lock().known(handle) {
            return None;
        }
        let found = self
            .objects(view, ctx, None)
            .into_iter()
            .map(|o| o.id)
            .find(|id| self.inst.lock().derived(id) == handle.0);
        if let Some(id) = found {
            let given = self.inst.lock().handle(&id);
            return (given == handle).then_some(id);
        }
        let _ = self.find_certs(view, ctx, &[]);
        let _ = self.find_jobs(view, ctx, &[]);
        None
    }

    /// [`ClientConnection::adopt`] for a handle used in `session`, if the instance's table
    /// does not know it.
    pub(super) fn adopt_in(
        &self,
        session: SessionId,
        handle: ObjectHandle,
    ) -> Result<(), P11Error> {
        if self.inst.lock().known(handle) {
            return Ok(());
        }
        let slot = self.session(session)?.slot;
        let view = self.svc.view()?;
        let ctx = self.slot_ctx(slot, &view.state)?;
        let _ = self.adopt(&view, &ctx, handle);
        Ok(())
    }

    /// A visible, ENABLED object (for everything but `*Init`).
    pub(super) fn visible_object(
        &self,
        session: SessionId,
        handle: ObjectHandle,
        invalid: u64,
    ) -> Result<(SlotCtx, ObjectKey), P11Error> {
        let slot = self.session(session)?.slot;
        let view = self.svc.view()?;
        let ctx = self.slot_ctx(slot, &view.state)?;
        let obj = self.resolve(&view, &ctx, handle, invalid)?;
        if !obj.shown() {
            return Err(invalid.into());
        }
        let id = obj.id.clone();
        Ok((ctx, id))
    }

    /// The certificate a handle names, with the slot's view: `None` if the handle names no
    /// certificate; `CKR_OBJECT_HANDLE_INVALID` if the principal does not see it (audited by
    /// [`ClientConnection::resolve_cert`]).
    pub(super) fn cert_of(
        &self,
        session: SessionId,
        handle: ObjectHandle,
    ) -> Result<Option<(SlotCtx, crate::catalog::CertEntry)>, P11Error> {
        let slot = self.session(session)?.slot;
        self.adopt_in(session, handle)?;
        if self.inst.lock().cert(handle).is_none() {
            return Ok(None);
        }
        let view = self.svc.view()?;
        let ctx = self.slot_ctx(slot, &view.state)?;
        match self.resolve_cert(&view, &ctx, handle) {
            None => Ok(None),
            Some(found) => {
                let cert = found?.entry.clone();
                Ok(Some((ctx, cert)))
            }
        }
    }

    pub(super) fn find(
        &mut self,
        session: SessionId,
        template: &[Attribute],
    ) -> Result<Pkcs11Response, P11Error> {
        let slot = self.session(session)?.slot;
        self.healthy()?;
        let view = self.svc.view()?;
        let ctx = self.slot_ctx(slot, &view.state)?;
        // A label of another kind matches nothing (`matches` below): any candidate set will do.
        let label = template
            .iter()
            .find(|a| a.ty == CKA_LABEL)
            .map(|a| match &a.value {
                keyward_wire::pkcs11::AttrValue::Bytes(b) => b.as_slice(),
                _ => &[],
            });
        let found: Vec<ObjectKey> = self
            .objects(&view, &ctx, label)
            .into_iter()
            .filter(|o| o.matches(template))
            .map(|o| o.id)
            .collect();
        let mut handles: Vec<ObjectHandle> = {
            let mut inst = self.inst.lock();
            found.iter().map(|k| inst.handle(k)).collect()
        };
        handles.extend(self.find_certs(&view, &ctx, template));
        handles.extend(self.find_jobs(&view, &ctx, template));
        handles.extend(self.find_session_objects(slot, ctx.login, template));
        self.session_mut(session)?.finds += 1;
        Ok(Pkcs11Response::Objects(handles))
    }

    pub(super) fn get_attributes(
        &mut self,
        session: SessionId,
        handle: ObjectHandle,
        types: &[u64],
    ) -> Result<Pkcs11Response, P11Error> {
        let slot = self.session(session)?.slot;
        self.healthy()?;
        let view = self.svc.view()?;
        let ctx = self.slot_ctx(slot, &view.state)?;
        if let Some(job) = self.resolve_job(&view, &ctx, handle, CKR_OBJECT_HANDLE_INVALID) {
            let results = self.job_attributes(&job?, types);
            self.session_mut(session)?.reads += 1;
            return Ok(Pkcs11Response::Attributes(results));
        }
        if let Some(cert) = self.resolve_cert(&view, &ctx, handle) {
            let results = self.cert_attributes(&ctx, cert?, types);
            self.session_mut(session)?.reads += 1;
            return Ok(Pkcs11Response::Attributes(results));
        }
        let obj = self.resolve(&view, &ctx, handle, CKR_OBJECT_HANDLE_INVALID)?;
        if !obj.shown() {
            return Err(CKR_OBJECT_HANDLE_INVALID.into());
        }
        let results: Vec<AttrResult> = types.iter().map(|t| obj.attribute(*t)).collect();
        let hidden = types
            .iter()
            .zip(&results)
            .any(|(t, r)| matches!(r, AttrResult::Sensitive) && *t != CKA_VALUE);
        if hidden {
            self.refused(
                &ctx.principal,
                "C_GetAttributeValue",
                Some(obj.id.version_name()),
                gate::public_values_hidden(false),
            );
        }
        self.session_mut(session)?.reads += 1;
        Ok(Pkcs11Response::Attributes(results))
    }

    /// What the catalog does not say about one version's objects.
    pub(super) fn extra<'s>(
        &self,
        view: &'s View,
        key: &CryptoKeyName,
        version: u64,
    ) -> objects::Extra<'s> {
        let generic = view.state.catalog.generic.get(key);
        objects::Extra {
            generic,
            creator: generic.is_some_and(|g| {
                g.creator_instance.is_some() && g.creator_instance == self.caller.instance
            }),
            public_half: view
                .state
                .catalog
                .public_halves
                .get(&(key.clone(), version))
                .copied(),
        }
    }
}

/// Can an object of `key` carry `CKA_LABEL` `label` (objects.rs `ObjectView::label`: a
/// generic key's client labels; else the key id, or `keyid@vN`)?
fn label_may_match(view: &View, key: &crate::catalog::KeyEntry, label: &[u8]) -> bool {
    if let Some(g) = view.state.catalog.generic.get(&key.name) {
        return g.cka_label == label || g.pub_cka_label == label;
    }
    let id = key.name.id.as_bytes();
    label
        .strip_prefix(id)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"@v"))
}
