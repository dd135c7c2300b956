//! Session objects (design §4 "Session objects", "No side doors"): `CKA_TOKEN=FALSE` objects
//! a module session makes with `C_GenerateKey(Pair)` or `C_CreateObject`. They are session
//! objects of the backing token ([`keyward_token::SessionObject`]), not Keyward keys: they
//! need no IAM permission to make or use (every use is audited as session-object use, with
//! the instance and peer like every record), and they never come from a Keyward key
//! (C_CopyObject, C_DeriveKey and C_UnwrapKey of Keyward keys stay refused; session objects
//! themselves are not copied, derived from, wrapped or used to unwrap).
//!
//! - **Owner and visibility.** PKCS#11 3.0 §4.4 and §5.6: a session object is visible to
//!   every session of the application that made it, on that token, and is destroyed when the
//!   session that created it closes. The application here is the module instance (one
//!   `C_Initialize`): its sessions on the slot find and use the object, nobody else does
//!   (another instance, even of the same principal and process, finds nothing and its
//!   handles are invalid). Clients depend on this (Java SunPKCS11 and NSS make a key in one
//!   session and use it in another of their pool). A private object (`CKA_PRIVATE`, the
//!   default for secret and private keys) is seen only while the slot is logged in as the
//!   user, and `C_Logout` destroys the instance's private session objects on the slot (§5.6).
//! - **Lifetime.** keywardd destroys a session object when its creating session closes,
//!   when the instance's connection goes (its sessions close), at `C_DestroyObject`, and at
//!   start (orphans left in the token).
//! - **Quota.** An instance holds at most `[daemon] session_objects_per_instance` (default
//!   1,000); more is `CKR_DEVICE_MEMORY`.
//! - **What.** Generation: AES (`CKM_AES_KEY_GEN`), generic secrets
//!   (`CKM_GENERIC_SECRET_KEY_GEN`, 32 to 128 bytes), EC P-256/P-384
//!   (`CKM_EC_KEY_PAIR_GEN`), RSA (`CKM_RSA_PKCS_KEY_PAIR_GEN`). Creation: RSA and EC
//!   (P-256/P-384) public keys, AES and generic secret keys with a plaintext `CKA_VALUE`,
//!   data objects.
//!   Attributes follow PKCS#11 (a sensitive value stays sensitive; secret and private keys
//!   default to `CKA_SENSITIVE=TRUE` and `CKA_PRIVATE=TRUE`); `CKA_DERIVE` and
//!   `CKA_COPYABLE` are always FALSE; the client's `CKA_ID`/`CKA_LABEL` are kept here and
//!   may be changed with `C_SetAttributeValue` (nothing else may).
//! - **Custody.** A session secret key is material the client already had (or made for
//!   itself): keywardd keeps it in the token only as long as the session, never lets it
//!   touch a Keyward key, and `allow_plaintext_import` (which guards material becoming a
//!   Keyward key) does not apply.

use super::ck::*;
use super::instance::SessionObj;
use super::manage::Generation;
use super::objects::Half;
use super::{Active, ClientConnection, SlotCtx};
use super::{P11Error, Ulong};
use crate::audit::Outcome;
use crate::daemon::limits::{Charge, Resource};
use keyward_token::public_key::Curve;
use keyward_token::{session_attribute, GenericKind, SessionGeneration};
use keyward_wire::pkcs11::{
    AttrResult, AttrValue, Attribute, Blob, MechParams, Mechanism, ObjectHandle, Operation,
    Pkcs11Response, SessionId, SlotId,
};
use std::sync::atomic::Ordering;

mod access;

fn get(t: &[Attribute], ty: u64) -> Option<&AttrValue> {
    t.iter().rev().find(|a| a.ty == ty).map(|a| &a.value)
}

fn get_ulong(t: &[Attribute], ty: u64) -> Result<Option<Ulong>, P11Error> {
    match get(t, ty) {
        None => Ok(None),
        Some(AttrValue::Ulong(v)) => Ok(Some(*v)),
        Some(_) => Err(CKR_ATTRIBUTE_VALUE_INVALID.into()),
    }
}

fn get_bytes(t: &[Attribute], ty: u64) -> Result<Option<&[u8]>, P11Error> {
    match get(t, ty) {
        None => Ok(None),
        Some(AttrValue::Bytes(b)) => Ok(Some(b.as_slice())),
        Some(_) => Err(CKR_ATTRIBUTE_VALUE_INVALID.into()),
    }
}

/// Does this template ask for a session object (`CKA_TOKEN` FALSE or absent, PKCS#11's
/// default)? Certificates are not offered as session objects (their own path refuses them).
pub fn wants_session_object(template: &[Attribute]) -> bool {
    !matches!(get(template, CKA_TOKEN), Some(AttrValue::Bool(true)))
        && !matches!(
            get(template, CKA_CLASS),
            Some(AttrValue::Ulong(CKO_CERTIFICATE))
        )
}

/// A client template made ready for the token: keywardd's own attributes taken out.
#[derive(Debug, Default)]
struct Prepared {
    forward: Vec<Attribute>,
    cka_id: Vec<u8>,
    cka_label: Vec<u8>,
    private: bool,
}

/// Splits a template of an object of `class`: `CKA_ID`/`CKA_LABEL` stay here, `CKA_TOKEN`
/// (FALSE), `CKA_DERIVE` and `CKA_COPYABLE` are keywardd's (always FALSE), the rest must
/// be on the token layer's list; `CKA_CLASS`, `CKA_KEY_TYPE`, `CKA_PRIVATE` and (secret
/// and private keys) `CKA_SENSITIVE` get their defaults.
fn prepare(
    template: &[Attribute],
    class: u64,
    key_type: Option<u64>,
) -> Result<Prepared, P11Error> {
    let mut p = Prepared {
        private: class == CKO_SECRET_KEY || class == CKO_PRIVATE_KEY,
        ..Prepared::default()
    };
    let mut sensitive_given = false;
    for a in template {
        match a.ty {
            CKA_TOKEN | CKA_DERIVE | CKA_COPYABLE => {
                if !matches!(a.value, AttrValue::Bool(_)) {
                    return Err(CKR_ATTRIBUTE_VALUE_INVALID.into());
                }
                if a.ty == CKA_TOKEN && a.value == AttrValue::Bool(true) {
                    return Err(CKR_TEMPLATE_INCONSISTENT.into());
                }
            }
            CKA_ID | CKA_LABEL => {
                let AttrValue::Bytes(b) = &a.value else {
                    return Err(CKR_ATTRIBUTE_VALUE_INVALID.into());
                };
                if a.ty == CKA_ID {
                    if class == CKO_DATA {
                        return Err(CKR_ATTRIBUTE_TYPE_INVALID.into());
                    }
                    p.cka_id = b.as_slice().to_vec();
                } else {
                    p.cka_label = b.as_slice().to_vec();
                }
            }
            _ => {
                session_attribute(a)?;
                match (a.ty, &a.value) {
                    (CKA_CLASS, AttrValue::Ulong(c)) if *c != class => {
                        return Err(CKR_TEMPLATE_INCONSISTENT.into())
                    }
                    (CKA_KEY_TYPE, AttrValue::Ulong(k)) if Some(*k) != key_type => {
                        return Err(CKR_TEMPLATE_INCONSISTENT.into())
                    }
                    (CKA_CLASS | CKA_KEY_TYPE, _) => continue,
                    (CKA_PRIVATE, AttrValue::Bool(v)) => p.private = *v,
                    (CKA_SENSITIVE, _) => sensitive_given = true,
                    _ => {}
                }
                p.forward.push(a.clone());
            }
        }
    }
    let attr = |ty, value| Attribute { ty, value };
    p.forward.push(attr(CKA_CLASS, AttrValue::Ulong(class)));
    if let Some(k) = key_type {
        p.forward.push(attr(CKA_KEY_TYPE, AttrValue::Ulong(k)));
    }
    if !p.forward.iter().any(|a| a.ty == CKA_PRIVATE) {
        p.forward
            .push(attr(CKA_PRIVATE, AttrValue::Bool(p.private)));
    }
    if (class == CKO_SECRET_KEY || class == CKO_PRIVATE_KEY) && !sensitive_given {
        p.forward.push(attr(CKA_SENSITIVE, AttrValue::Bool(true)));
    }
    Ok(p)
}

/// The code of a failed token unwrap: SoftHSM2 2.6 answers a wrong integrity value with
/// `CKR_GENERAL_ERROR`, which clients take as unrecoverable; PKCS#11 says
/// `CKR_WRAPPED_KEY_INVALID` (the blob's length was checked before).
pub(super) fn unwrap_rv(rv: u64) -> u64 {
    if rv == CKR_GENERAL_ERROR {
        CKR_WRAPPED_KEY_INVALID
    } else {
        rv
    }
}

/// A generic secret's template with `CKA_SIGN`/`CKA_VERIFY` both TRUE when it sets neither
/// (pkcs11-tool asks ENCRYPT/DECRYPT of every secret key, design §2: a MAC key MACs); a
/// generic secret never encrypts in the token, so the rest goes as asked.
fn mac_defaults(template: &[Attribute]) -> Vec<Attribute> {
    let mut t = template.to_vec();
    if !t.iter().any(|a| a.ty == CKA_SIGN || a.ty == CKA_VERIFY) {
        for ty in [CKA_SIGN, CKA_VERIFY] {
            t.push(Attribute {
                ty,
                value: AttrValue::Bool(true),
            });
        }
    }
    t
}

/// The bit length of a big-endian modulus.
fn bits(n: &[u8]) -> usize {
    match n.iter().position(|b| *b != 0) {
        Some(first) => (n.len() - first) * 8 - n[first].leading_zeros() as usize,
        None => 0,
    }
}

/// The half of its key an object of `class` is.
fn half(class: u64) -> Half {
    match class {
        CKO_PUBLIC_KEY => Half::Public,
        CKO_PRIVATE_KEY => Half::Private,
        _ => Half::Secret,
    }
}

/// What to look up for a session-object handle.
pub(super) enum Lookup {
    /// Not a session object of this instance.
    No,
    /// One the session may not see (another slot; private and not logged in).
    Hidden,
    /// One the session sees.
    Seen(Box<SessionObj>),
}

impl ClientConnection {
    /// Is `handle` one of this instance's session objects, and does `session` see it?
    pub(super) fn session_object(
        &self,
        session: SessionId,
        handle: ObjectHandle,
    ) -> Result<Lookup, P11Error> {
        let slot = self.session(session)?.slot;
        let inst = self.inst.lock();
        let Some(o) = inst.session_object(handle) else {
            return Ok(Lookup::No);
        };
        let user = inst.principal(slot).1 == Some(false);
        Ok(if o.slot == slot && (!o.private || user) {
            Lookup::Seen(Box::new(o.clone()))
        } else {
            Lookup::Hidden
        })
    }

    /// Audits one session-object event as the slot's principal.
    fn record_session(&self, ctx: &SlotCtx, action: &str, detail: String) -> Result<(), P11Error> {
        self.record(
            &ctx.principal,
            action,
            Some(ctx.ring_name.clone()),
            Outcome::Allowed,
            0,
            Some(detail),
        )
    }

    /// The slot's view, the audit log healthy, a principal that sees the slot's ring (else
    /// `CKR_TOKEN_WRITE_PROTECTED`, as for an absent ring: design §9, an unbound uid cannot
    /// use the token); and room for `n` more session objects, charged here (else
    /// `CKR_DEVICE_MEMORY`, audited).
    fn session_object_room(
        &self,
        session: SessionId,
        action: &str,
        n: usize,
    ) -> Result<(SlotCtx, Vec<Charge>), P11Error> {
        let slot = self.session(session)?.slot;
        self.healthy()?;
        let view = self.svc.view()?;
        let ctx = self.slot_ctx(slot, &view.state)?;
        if let Err(d) = super::gate::session_object_gate(ctx.ring.as_ref()) {
            return Err(self.refused(&ctx.principal, action, Some(ctx.ring_name.clone()), d));
        }
        let quota = self.svc.session_object_quota.load(Ordering::Relaxed);
        let held = self.inst.lock().session_object_count();
        if held.saturating_add(n) > quota {
            self.deny(
                &ctx.principal,
                action,
                Some(ctx.ring_name.clone()),
                CKR_DEVICE_MEMORY,
                &format!("session object quota ({quota} per instance) reached"),
            );
            return Err(CKR_DEVICE_MEMORY.into());
        }
        let mut charges = Vec::with_capacity(n);
        for _ in 0..n {
            let c = self
                .charge(Resource::SessionObjects, &ctx.principal, 1)
                .map_err(|r| {
                    self.deny_limit(
                        &ctx.principal,
                        Some(ctx.ring_name.clone()),
                        CKR_DEVICE_MEMORY,
                        r,
                    )
                })?;
            charges.push(c);
        }
        Ok((ctx, charges))
    }

    /// A private session object needs the slot logged in as the user.
    fn private_allowed(&self, ctx: &SlotCtx, private: bool) -> Result<(), P11Error> {
        if private && ctx.login != Some(false) {
            return Err(CKR_USER_NOT_LOGGED_IN.into());
        }
        Ok(())
    }

    /// Registers new session objects (made by `session`) and returns their handles. The
    /// quota is checked again here, under the instance's lock (an instance's connections run
    /// at once): over it, the new objects are destroyed and `CKR_DEVICE_MEMORY`.
    fn register(
        &self,
        ctx: &SlotCtx,
        action: &str,
        session: SessionId,
        objects: Vec<(
            keyward_token::SessionObject,
            u64,
            &Prepared,
            Option<GenericKind>,
        )>,
        charges: Vec<Charge>,
    ) -> Result<Vec<ObjectHandle>, P11Error> {
        let slot = self.session(session)?.slot;
        let quota = self.svc.session_object_quota.load(Ordering::Relaxed);
        let mut inst = self.inst.lock();
        if inst.session_object_count().saturating_add(objects.len()) > quota {
            drop(inst);
            for (o, ..) in &objects {
                let _ = self.svc.token.destroy_session_object(*o);
            }
            self.deny(
                &ctx.principal,
                action,
                Some(ctx.ring_name.clone()),
                CKR_DEVICE_MEMORY,
                &format!("session object quota ({quota} per instance) reached"),
            );
            return Err(CKR_DEVICE_MEMORY.into());
        }
        Ok(objects
            .into_iter()
            .zip(charges)
            .map(|((token, class, p, kind), charge)| {
                inst.add_session_object(SessionObj {
                    slot,
                    owner: (self.id, session.0),
                    token,
                    class,
                    private: p.private,
                    cka_id: p.cka_id.clone(),
                    cka_label: p.cka_label.clone(),
                    kind,
                    charge: std::sync::Arc::new(charge),
                })
            })
            .collect())
    }

    /// Audits a creation; if the record cannot be written the objects are destroyed again
    /// (fail closed).
    fn created(
        &self,
        ctx: &SlotCtx,
        action: &str,
        made: &[keyward_token::SessionObject],
        handles: &[ObjectHandle],
        what: String,
    ) -> Result<(), P11Error> {
        let list: Vec<String> = handles.iter().map(|h| h.0.to_string()).collect();
        let rec = self.record_session(
            ctx,
            action,
            format!("session object {} ({what}; no IAM gate)", list.join(", ")),
        );
        if let Err(rv) = rec {
            let mut inst = self.inst.lock();
            for h in handles {
                inst.remove_session_object(*h);
            }
            drop(inst);
            for o in made {
                let _ = self.svc.token.destroy_session_object(*o);
            }
            return Err(rv);
        }
        Ok(())
    }

    /// C_GenerateKey / C_GenerateKeyPair of session objects (PKCS#11 3.0 §5.14); the call
    /// as [`super::manage`]'s `generate_any` named it.
    pub(super) fn generate_session_objects(
        &mut self,
        session: SessionId,
        call: Generation<'_>,
    ) -> Result<Pkcs11Response, P11Error> {
        let Generation {
            action,
            mechanism,
            public,
            secret,
        } = call;
        let n = if public.is_some() { 2 } else { 1 };
        let (ctx, charges) = self.session_object_room(session, action, n)?;
        if !matches!(mechanism.params, MechParams::None) {
            return Err(CKR_MECHANISM_PARAM_INVALID.into());
        }
        if !super::ops::served(&self.svc.token).contains(&mechanism.ty) {
            return Err(CKR_MECHANISM_INVALID.into());
        }
        let prepared = (|| -> Result<_, P11Error> {
            match (mechanism.ty, public) {
                (CKM_AES_KEY_GEN, None) => {
                    let len = get_ulong(secret, CKA_VALUE_LEN)?.ok_or(CKR_TEMPLATE_INCOMPLETE)?;
                    let kind = GenericKind::Aes(usize::try_from(len).unwrap_or(0));
                    kind.check().map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?;
                    let p = prepare(secret, CKO_SECRET_KEY, Some(CKK_AES))?;
                    Ok((SessionGeneration::AesKey, kind, p, None))
                }
                (CKM_GENERIC_SECRET_KEY_GEN, None) => {
                    let len = get_ulong(secret, CKA_VALUE_LEN)?.ok_or(CKR_TEMPLATE_INCOMPLETE)?;
                    let kind = GenericKind::Secret(usize::try_from(len).unwrap_or(0));
                    kind.check().map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?;
                    let p = prepare(
                        &mac_defaults(secret),
                        CKO_SECRET_KEY,
                        Some(CKK_GENERIC_SECRET),
                    )?;
                    Ok((SessionGeneration::GenericSecret, kind, p, None))
                }
                (CKM_EC_KEY_PAIR_GEN, Some(public)) => {
                    let params = match get_bytes(public, CKA_EC_PARAMS)? {
                        Some(p) => p.to_vec(),
                        None => get_bytes(secret, CKA_EC_PARAMS)?
                            .ok_or(CKR_TEMPLATE_INCOMPLETE)?
                            .to_vec(),
                    };
                    let curve = Curve::from_ec_params(&params).ok_or(CKR_CURVE_NOT_SUPPORTED)?;
                    // CKA_EC_PARAMS belongs to the public template (PKCS#11 §2.3.4).
                    let secret: Vec<Attribute> = secret
                        .iter()
                        .filter(|a| a.ty != CKA_EC_PARAMS)
                        .cloned()
                        .collect();
                    let mut public: Vec<Attribute> = public
                        .iter()
                        .filter(|a| a.ty != CKA_EC_PARAMS)
                        .cloned()
                        .collect();
                    public.push(Attribute {
                        ty: CKA_EC_PARAMS,
                        value: AttrValue::Bytes(Blob::new(params)),
                    });
                    let s = prepare(&secret, CKO_PRIVATE_KEY, Some(CKK_EC))?;
                    let p = prepare(&public, CKO_PUBLIC_KEY, Some(CKK_EC))?;
                    Ok((
                        SessionGeneration::EcPair,
                        GenericKind::Ec(curve),
                        s,
                        Some(p),
                    ))
                }
                (CKM_RSA_PKCS_KEY_PAIR_GEN, Some(public)) => {
                    let n = get_ulong(public, CKA_MODULUS_BITS)?.ok_or(CKR_TEMPLATE_INCOMPLETE)?;
                    let kind = GenericKind::Rsa(usize::try_from(n).unwrap_or(0));
                    kind.check().map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?;
                    let s = prepare(secret, CKO_PRIVATE_KEY, Some(CKK_RSA))?;
                    let p = prepare(public, CKO_PUBLIC_KEY, Some(CKK_RSA))?;
                    Ok((SessionGeneration::RsaPair, kind, s, Some(p)))
                }
                _ => Err(CKR_MECHANISM_INVALID.into()),
            }
        })();
        let (what, kind, s, p) = match prepared {
            Ok(v) => v,
            Err(rv) => {
                return Err(P11Error::from(self.template_refused(
                    &ctx,
                    action,
                    rv.rv(),
                    &format!(
                        "session object template refused (mechanism {:#x})",
                        mechanism.ty
                    ),
                )))
            }
        };
        self.private_allowed(&ctx, s.private || p.as_ref().is_some_and(|p| p.private))?;
        let no_public = Vec::new();
        let public_forward = p.as_ref().map_or(&no_public, |p| &p.forward);
        // Held while the token generates (the token's CPU, design §9).
        let generating = self.generation_charge(&ctx.principal, &ctx.ring_name)?;
        let generated = self
            .svc
            .token
            .generate_session_objects(what, public_forward, &s.forward);
        drop(generating);
        let (secret_obj, public_obj) = generated.map_err(|e| {
            tracing::debug!(action, error = %e, "session object generation failed");
            e.ck_rv()
        })?;
        let (made, handles) = match (public_obj, &p) {
            (Some(po), Some(pp)) => {
                let h = self.register(
                    &ctx,
                    action,
                    session,
                    vec![
                        (secret_obj, CKO_PRIVATE_KEY, &s, Some(kind)),
                        (po, CKO_PUBLIC_KEY, pp, Some(kind)),
                    ],
                    charges,
                )?;
                (vec![secret_obj, po], h)
            }
            _ => {
                let h = self.register(
                    &ctx,
                    action,
                    session,
                    vec![(secret_obj, CKO_SECRET_KEY, &s, Some(kind))],
                    charges,
                )?;
                (vec![secret_obj], h)
            }
        };
        self.created(&ctx, action, &made, &handles, format!("{kind}"))?;
        Ok(match handles.as_slice() {
            [private, public] => Pkcs11Response::KeyPair {
                public: *public,
                private: *private,
            },
            [h] => Pkcs11Response::Object(*h),
            _ => return Err(CKR_GENERAL_ERROR.into()),
        })
    }

    /// C_CreateObject of a session object (PKCS#11 3.0 §5.7): an RSA or EC public key, an
    /// AES secret key, or a data object.
    pub(super) fn create_session_object(
        &mut self,
        session: SessionId,
        template: &[Attribute],
    ) -> Result<Pkcs11Response, P11Error> {
        const ACTION: &str = "C_CreateObject";
        let class = get_ulong(template, CKA_CLASS)?;
        let (ctx, charges) = self.session_object_room(session, ACTION, 1)?;
        let checked = (|| -> Result<_, P11Error> {
            let class = class.ok_or(CKR_TEMPLATE_INCOMPLETE)?;
            let key_type = get_ulong(template, CKA_KEY_TYPE)?;
            let need = |ty| -> Result<&[u8], P11Error> {
                get_bytes(template, ty)?.ok_or(CKR_TEMPLATE_INCOMPLETE.into())
            };
            let kind = match (class, key_type) {
                (CKO_DATA, None) => None,
                (CKO_PUBLIC_KEY, Some(CKK_RSA)) => {
                    need(CKA_PUBLIC_EXPONENT)?;
                    Some(GenericKind::Rsa(bits(need(CKA_MODULUS)?)))
                }
                (CKO_PUBLIC_KEY, Some(CKK_EC)) => {
                    need(CKA_EC_POINT)?;
                    let curve = Curve::from_ec_params(need(CKA_EC_PARAMS)?)
                        .ok_or(CKR_CURVE_NOT_SUPPORTED)?;
                    Some(GenericKind::Ec(curve))
                }
                (CKO_SECRET_KEY, Some(CKK_AES)) => {
                    let kind = GenericKind::Aes(need(CKA_VALUE)?.len());
                    kind.check().map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?;
                    if get(template, CKA_VALUE_LEN).is_some() {
                        return Err(CKR_TEMPLATE_INCONSISTENT.into());
                    }
                    Some(kind)
                }
                (CKO_SECRET_KEY, Some(CKK_GENERIC_SECRET)) => {
                    let kind = GenericKind::Secret(need(CKA_VALUE)?.len());
                    kind.check().map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?;
                    if get(template, CKA_VALUE_LEN).is_some() {
                        return Err(CKR_TEMPLATE_INCONSISTENT.into());
                    }
                    Some(kind)
                }
                (CKO_PUBLIC_KEY | CKO_SECRET_KEY, None) => {
                    return Err(CKR_TEMPLATE_INCOMPLETE.into())
                }
                // Private keys, other key types, other classes: not offered.
                _ => return Err(CKR_TEMPLATE_INCONSISTENT.into()),
            };
            if class == CKO_DATA && template.iter().any(|a| a.ty == CKA_KEY_TYPE) {
                return Err(CKR_TEMPLATE_INCONSISTENT.into());
            }
            let p = if key_type == Some(CKK_GENERIC_SECRET) {
                prepare(&mac_defaults(template), class, key_type)?
            } else {
                prepare(template, class, key_type)?
            };
            Ok((class, kind, p))
        })();
        let (class, kind, p) = match checked {
            Ok(v) => v,
            Err(rv) => {
                return Err(P11Error::from(self.template_refused(
                    &ctx,
                    ACTION,
                    rv.rv(),
                    "session object template refused",
                )))
            }
        };
        self.private_allowed(&ctx, p.private)?;
        let made = self
            .svc
            .token
            .create_session_object(&p.forward, class != CKO_DATA)
            .map_err(|e| {
                tracing::debug!(error = %e, "session object creation failed");
                e.ck_rv()
            })?;
        let handles = self.register(
            &ctx,
            ACTION,
            session,
            vec![(made, class, &p, kind)],
            charges,
        )?;
        let what = match (class, kind) {
            (CKO_DATA, _) => "data object".to_string(),
            (CKO_SECRET_KEY, Some(k)) => format!("{k} secret key, plaintext value"),
            (_, Some(k)) => format!("{k} public key"),
            _ => "object".to_string(),
        };
        self.created(&ctx, ACTION, &[made], &handles, what)?;
        Ok(Pkcs11Response::Object(handles[0]))
    }

    /// C_UnwrapKey into a session object ([`super::unwrap`]): the token unwraps `wrapped`
    /// with the Keyward key whose internal `CKA_ID` is `unwrapping_id` (its use already
    /// decided and audited) into a secret key of `kind`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn unwrap_session_object(
        &mut self,
        session: SessionId,
        template: &[Attribute],
        (kind, key_type): (GenericKind, u64),
        unwrapping_id: &[u8],
        pad: bool,
        wrapped: &[u8],
        unwrapping: &str,
    ) -> Result<Pkcs11Response, P11Error> {
        const ACTION: &str = "C_UnwrapKey";
        let (ctx, charges) = self.session_object_room(session, ACTION, 1)?;
        let t = if key_type == CKK_GENERIC_SECRET {
            mac_defaults(template)
        } else {
            template.to_vec()
        };
        let p = match prepare(&t, CKO_SECRET_KEY, Some(key_type)) {
            Ok(p) => p,
            Err(rv) => {
                return Err(P11Error::from(self.template_refused(
                    &ctx,
                    ACTION,
                    rv.rv(),
                    "session object template refused",
                )))
            }
        };
        self.private_allowed(&ctx, p.private)?;
        let (made, len) = self
            .svc
            .token
            .unwrap_session_object(unwrapping_id, pad, wrapped, &p.forward)
            .map_err(|e| {
                tracing::debug!(error = %e, "unwrapping into a session object failed");
                unwrap_rv(e.ck_rv())
            })?;
        let expected = match kind {
            GenericKind::Aes(n) | GenericKind::Secret(n) => n,
            _ => 0,
        };
        // A token that reports the unwrapped length (SoftHSM2 2.6 reports 0) must agree.
        if len != 0 && len != expected {
            let _ = self.svc.token.destroy_session_object(made);
            return Err(CKR_WRAPPED_KEY_INVALID.into());
        }
        let handles = self.register(
            &ctx,
            ACTION,
            session,
            vec![(made, CKO_SECRET_KEY, &p, Some(kind))],
            charges,
        )?;
        self.created(
            &ctx,
            ACTION,
            &[made],
            &handles,
            format!("{kind} secret key unwrapped with {unwrapping}"),
        )?;
        Ok(Pkcs11Response::Object(handles[0]))
    }

    /// C_EncryptInit, C_DecryptInit, C_SignInit, C_VerifyInit with a session object: no IAM
    /// gate (it is not a Keyward key), audited as session-object use.
    pub(super) fn init_session_object(
        &mut self,
        op: Operation,
        session: SessionId,
        mechanism: &Mechanism,
        handle: ObjectHandle,
        o: &SessionObj,
    ) -> Result<Pkcs11Response, P11Error> {
        let (slot, action) = self.init_start(op, session)?;
        let view = self.svc.view()?;
        let ctx = self.slot_ctx(slot, &view.state)?;
        if !self.svc.audit.is_healthy() {
            return Err(P11Error::from(self.audit_down(&ctx.principal, action)));
        }
        let Some(kind) = o.kind else {
            // A data object is not a key.
            return Err(CKR_KEY_HANDLE_INVALID.into());
        };
        let flags = [
            CKA_ENCRYPT,
            CKA_DECRYPT,
            CKA_SIGN,
            CKA_VERIFY,
            CKA_WRAP,
            CKA_UNWRAP,
        ];
        let read = self.read_session_object(o, &flags).map_err(|rv| {
            if rv == CKR_OBJECT_HANDLE_INVALID {
                CKR_KEY_HANDLE_INVALID
            } else {
                rv.rv()
            }
        })?;
        let f = |i: usize| read.get(i) == Some(&AttrResult::Value(AttrValue::Bool(true)));
        let flags = (f(0), f(1), f(2), f(3), f(4), f(5));
        let plan = super::ops::plan_kind(
            op,
            mechanism,
            flags,
            half(o.class),
            kind,
            self.svc.token.mechanisms(),
        )?;
        let (charge, buf) = self.operation_charge(&ctx.principal, Some(ctx.ring_name.clone()))?;
        self.record_session(
            &ctx,
            action,
            format!(
                "session object {} (no IAM gate), mechanism {:#x}",
                handle.0, mechanism.ty
            ),
        )?;
        let active = Active::Keyed {
            object: format!("session object {}", handle.0),
            plan,
            token_id: Vec::new(),
            session_object: Some(o.token),
            buf,
            stream: None,
            _charge: charge,
        };
        self.session_mut(session)?.ops.insert(op, active);
        Ok(Pkcs11Response::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(ty: u64, value: AttrValue) -> Attribute {
        Attribute { ty, value }
    }

    #[test]
    fn templates_are_split() {
        let t = vec![
            a(CKA_TOKEN, AttrValue::Bool(false)),
            a(CKA_ID, AttrValue::Bytes(Blob::new(vec![1, 2]))),
            a(CKA_LABEL, AttrValue::Bytes(Blob::new(b"k".to_vec()))),
            a(CKA_DERIVE, AttrValue::Bool(true)),
            a(CKA_ENCRYPT, AttrValue::Bool(true)),
            a(CKA_VALUE_LEN, AttrValue::Ulong(32)),
        ];
        let p = prepare(&t, CKO_SECRET_KEY, Some(CKK_AES)).unwrap();
        assert_eq!(p.cka_id, vec![1, 2]);
        assert_eq!(p.cka_label, b"k".to_vec());
        assert!(p.private);
        let types: Vec<u64> = p.forward.iter().map(|a| a.ty).collect();
        assert!(!types.contains(&CKA_TOKEN) && !types.contains(&CKA_DERIVE));
        assert!(p.forward.contains(&a(CKA_SENSITIVE, AttrValue::Bool(true))));
        assert!(p.forward.contains(&a(CKA_PRIVATE, AttrValue::Bool(true))));
        let public = prepare(&[], CKO_PUBLIC_KEY, Some(CKK_EC)).unwrap();
        assert!(public
            .forward
            .contains(&a(CKA_PRIVATE, AttrValue::Bool(false))));
        // A class or key type other than the mechanism's, a token object, an unknown type.
        for bad in [
            a(CKA_CLASS, AttrValue::Ulong(CKO_PUBLIC_KEY)),
            a(CKA_KEY_TYPE, AttrValue::Ulong(CKK_RSA)),
            a(CKA_TOKEN, AttrValue::Bool(true)),
        ] {
            assert_eq!(
                prepare(&[bad], CKO_SECRET_KEY, Some(CKK_AES)).unwrap_err(),
                CKR_TEMPLATE_INCONSISTENT
            );
        }
        assert_eq!(
            prepare(
                &[a(0x123, AttrValue::Bytes(Blob::new(vec![1])))],
                CKO_PRIVATE_KEY,
                Some(CKK_RSA)
            )
            .unwrap_err(),
            CKR_ATTRIBUTE_TYPE_INVALID
        );
        assert!(wants_session_object(&[]));
        assert!(!wants_session_object(&[a(
            CKA_TOKEN,
            AttrValue::Bool(true)
        )]));
        assert!(!wants_session_object(&[a(
            CKA_CLASS,
            AttrValue::Ulong(CKO_CERTIFICATE)
        )]));
        assert_eq!(bits(&[0, 0x80, 0]), 16);
    }
}
