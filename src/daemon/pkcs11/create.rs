//! Key creation, destruction and renaming through the module (design §4 "Objects",
//! "Custody", "Session objects", "Destroying a pair", the gates table).
//!
//! - `C_GenerateKey(Pair)` with an ordinary template makes a `PKCS11_GENERIC` key in the
//!   session's ring: kms.cryptoKeys.create on the ring (else `CKR_TOKEN_WRITE_PROTECTED`).
//!   Kinds: EC P-256/P-384 (`CKA_EC_PARAMS`), RSA 2048/3072/4096 (`CKA_MODULUS_BITS`,
//!   exponent 65537), AES 128/192/256 (`CKA_VALUE_LEN`), generic secrets (HMAC keys,
//!   `CKM_GENERIC_SECRET_KEY_GEN`, `CKA_VALUE_LEN` 32 to 128 bytes). Usage flags come from
//!   the templates, with the defaults clients expect when absent (RSA
//!   sign+decrypt+verify+encrypt, EC sign+verify, AES encrypt+decrypt, generic secrets
//!   sign+verify when the template sets neither). The client's `CKA_ID`/`CKA_LABEL` are kept
//!   byte-exact.
//! - Custody: a template asking for weaker custody (`CKA_SENSITIVE=FALSE`,
//!   `CKA_EXTRACTABLE=TRUE` without exportKeyMaterial on the ring, `CKA_DERIVE=TRUE`,
//!   `CKA_COPYABLE=TRUE`, `CKA_PRIVATE=FALSE` on a private or secret key) is corrected, or with
//!   the ring's `strict_templates` refused with `CKR_ATTRIBUTE_VALUE_INVALID`.
//! - `C_CreateObject`: plaintext secret key material only with the ring's
//!   `allow_plaintext_import` (AES or generic secret, imported as a `PKCS11_GENERIC` key,
//!   audited), else
//!   `CKR_TEMPLATE_INCONSISTENT`; private keys, public keys and data objects are
//!   `CKR_TEMPLATE_INCONSISTENT`; certificates are [`super::certs`]'.
//! - Session objects (`CKA_TOKEN` FALSE or absent) are [`super::session_objects`]': the
//!   dispatcher sends such templates there; here a key's template must say `CKA_TOKEN=TRUE`.
//! - `C_DestroyObject`: kms.cryptoKeyVersions.destroy (else `CKR_ACTION_PROHIBITED`); the
//!   private or secret half schedules the version's destruction, the public half is hidden.
//! - `C_SetAttributeValue`: `CKA_ID`/`CKA_LABEL` of a generic key, by the creating instance
//!   or with kms.cryptoKeys.update (else `CKR_ACTION_PROHIBITED`); anything else is
//!   `CKR_ATTRIBUTE_READ_ONLY`.

use super::ck::*;
use super::gate;
use super::manage::Generation;
use super::objects::{Half, ObjectKey};
use super::{ClientConnection, SlotCtx};
use super::{P11Error, Ulong};
use crate::admin::generic::{NewGenericKey, UnwrapFrom};
use crate::admin::AdminService;
use crate::audit::Outcome;
use crate::catalog::RingEntry;
use crate::context::Caller;
use crate::policy::KeyRingName;
use keyward_token::public_key::Curve;
use keyward_token::{GenericKind, GenericUsage};
use keyward_wire::pkcs11::{
    AttrValue, Attribute, MechParams, Mechanism, ObjectHandle, Pkcs11Response, SessionId,
};
use parking_lot::Mutex;
use std::sync::Arc;

/// A template, read attribute by attribute; a value of the wrong kind is
/// `CKR_ATTRIBUTE_VALUE_INVALID`.
#[derive(Clone, Copy)]
struct Tpl<'a>(&'a [Attribute]);

impl Tpl<'_> {
    fn get(&self, ty: u64) -> Option<&AttrValue> {
        self.0.iter().rev().find(|a| a.ty == ty).map(|a| &a.value)
    }

    fn bool(&self, ty: u64) -> Result<Option<bool>, P11Error> {
        match self.get(ty) {
            None => Ok(None),
            Some(AttrValue::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(CKR_ATTRIBUTE_VALUE_INVALID.into()),
        }
    }

    fn ulong(&self, ty: u64) -> Result<Option<Ulong>, P11Error> {
        match self.get(ty) {
            None => Ok(None),
            Some(AttrValue::Ulong(v)) => Ok(Some(*v)),
            Some(_) => Err(CKR_ATTRIBUTE_VALUE_INVALID.into()),
        }
    }

    fn bytes(&self, ty: u64) -> Result<Option<Vec<u8>>, P11Error> {
        match self.get(ty) {
            None => Ok(None),
            Some(AttrValue::Bytes(b)) => Ok(Some(b.as_slice().to_vec())),
            Some(_) => Err(CKR_ATTRIBUTE_VALUE_INVALID.into()),
        }
    }

    /// `CKA_CLASS`/`CKA_KEY_TYPE`, if given, must be these.
    fn expect(&self, class: u64, key_type: u64) -> Result<(), P11Error> {
        if self.ulong(CKA_CLASS)?.is_some_and(|c| c != class)
            || self.ulong(CKA_KEY_TYPE)?.is_some_and(|t| t != key_type)
        {
            return Err(CKR_TEMPLATE_INCONSISTENT.into());
        }
        Ok(())
    }
}

/// A key template, checked: what to make and what was asked beyond Keyward's custody.
#[derive(Debug)]
struct KeyTemplate {
    kind: GenericKind,
    usage: GenericUsage,
    extractable: bool,
    cka_id: Vec<u8>,
    cka_label: Vec<u8>,
    pub_cka_id: Option<Vec<u8>>,
    pub_cka_label: Option<Vec<u8>>,
    /// What the template asked that custody does not allow (corrected unless strict).
    weaker: Vec<&'static str>,
}

/// Reads a key template: `secret` is the private or secret key's, `public` the public key's
/// of a pair.
fn key_template(
    kind: GenericKind,
    secret: Tpl<'_>,
    public: Option<Tpl<'_>>,
) -> Result<KeyTemplate, P11Error> {
    // A Keyward key is a token object; CKA_TOKEN defaults to FALSE (PKCS#11 §4.4), and such
    // templates are session objects' (the dispatcher sends them to session_objects.rs).
    if secret.bool(CKA_TOKEN)? != Some(true) {
        return Err(CKR_TEMPLATE_INCONSISTENT.into());
    }
    if let Some(p) = public {
        if p.bool(CKA_TOKEN)? == Some(false) {
            return Err(CKR_TEMPLATE_INCONSISTENT.into());
        }
    }
    let mut weaker = Vec::new();
    if secret.bool(CKA_SENSITIVE)? == Some(false) {
        weaker.push("CKA_SENSITIVE=FALSE");
    }
    if secret.bool(CKA_PRIVATE)? == Some(false) {
        weaker.push("CKA_PRIVATE=FALSE");
    }
    for t in std::iter::once(secret).chain(public) {
        if t.bool(CKA_DERIVE)? == Some(true) {
            weaker.push("CKA_DERIVE=TRUE");
        }
        if t.bool(CKA_COPYABLE)? == Some(true) {
            weaker.push("CKA_COPYABLE=TRUE");
        }
    }
    let flag = |t: Tpl<'_>, ty: u64, default: bool| t.bool(ty).map(|v| v.unwrap_or(default));
    let usage = match (kind, public) {
        // A MAC key signs and verifies; a template that sets neither (pkcs11-tool's
        // `--keygen --key-type GENERIC:64` sends ENCRYPT/DECRYPT) gets both.
        (GenericKind::Secret(_), _) => {
            let (sign, verify) = (secret.bool(CKA_SIGN)?, secret.bool(CKA_VERIFY)?);
            let neither = sign.is_none() && verify.is_none();
            GenericUsage {
                sign: sign.unwrap_or(neither),
                verify: verify.unwrap_or(neither),
                ..GenericUsage::default()
            }
        }
        (GenericKind::Aes(_), _) | (_, None) => GenericUsage {
            encrypt: flag(secret, CKA_ENCRYPT, true)?,
            decrypt: flag(secret, CKA_DECRYPT, true)?,
            sign: false,
            verify: false,
            wrap: flag(secret, CKA_WRAP, false)?,
            unwrap: flag(secret, CKA_UNWRAP, false)?,
        },
        (GenericKind::Rsa(_), Some(p)) => GenericUsage {
            sign: flag(secret, CKA_SIGN, true)?,
            decrypt: flag(secret, CKA_DECRYPT, true)?,
            unwrap: flag(secret, CKA_UNWRAP, false)?,
            verify: flag(p, CKA_VERIFY, true)?,
            encrypt: flag(p, CKA_ENCRYPT, true)?,
            wrap: flag(p, CKA_WRAP, false)?,
        },
        (GenericKind::Ec(_), Some(p)) => GenericUsage {
            sign: flag(secret, CKA_SIGN, true)?,
            verify: flag(p, CKA_VERIFY, true)?,
            ..GenericUsage::default()
        },
    };
    let cka_id = secret.bytes(CKA_ID)?;
    let cka_label = secret.bytes(CKA_LABEL)?;
    let (pub_cka_id, pub_cka_label) = match public {
        Some(p) => (p.bytes(CKA_ID)?, p.bytes(CKA_LABEL)?),
        None => (None, None),
    };
    Ok(KeyTemplate {
        kind,
        usage,
        extractable: secret.bool(CKA_EXTRACTABLE)? == Some(true),
        // One half's CKA_ID/CKA_LABEL serves the other when only one template has it.
        cka_id: cka_id
            .clone()
            .or_else(|| pub_cka_id.clone())
            .unwrap_or_default(),
        cka_label: cka_label
            .clone()
            .or_else(|| pub_cka_label.clone())
            .unwrap_or_default(),
        pub_cka_id: public.map(|_| pub_cka_id.or(cka_id).unwrap_or_default()),
        pub_cka_label: public.map(|_| pub_cka_label.or(cka_label).unwrap_or_default()),
        weaker,
    })
}

/// The kind a generation mechanism and its templates ask for.
fn generation_kind(
    m: &Mechanism,
    pair: bool,
    secret: Tpl<'_>,
    public: Tpl<'_>,
) -> Result<GenericKind, P11Error> {
    if !matches!(m.params, MechParams::None) {
        return Err(CKR_MECHANISM_PARAM_INVALID.into());
    }
    match (m.ty, pair) {
        (CKM_EC_KEY_PAIR_GEN, true) => {
            public.expect(CKO_PUBLIC_KEY, CKK_EC)?;
            secret.expect(CKO_PRIVATE_KEY, CKK_EC)?;
            let params = public
                .bytes(CKA_EC_PARAMS)?
                .or(secret.bytes(CKA_EC_PARAMS)?)
                .ok_or(CKR_TEMPLATE_INCOMPLETE)?;
            let curve = Curve::from_ec_params(&params).ok_or(CKR_CURVE_NOT_SUPPORTED)?;
            Ok(GenericKind::Ec(curve))
        }
        (CKM_RSA_PKCS_KEY_PAIR_GEN, true) => {
            public.expect(CKO_PUBLIC_KEY, CKK_RSA)?;
            secret.expect(CKO_PRIVATE_KEY, CKK_RSA)?;
            let bits = public
                .ulong(CKA_MODULUS_BITS)?
                .ok_or(CKR_TEMPLATE_INCOMPLETE)?;
            if let Some(e) = public.bytes(CKA_PUBLIC_EXPONENT)? {
                let first = e.iter().position(|b| *b != 0).unwrap_or(e.len());
                if e[first..] != [1, 0, 1] {
                    return Err(CKR_ATTRIBUTE_VALUE_INVALID.into());
                }
            }
            let kind = GenericKind::Rsa(usize::try_from(bits).unwrap_or(0));
            kind.check().map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?;
            Ok(kind)
        }
        (CKM_AES_KEY_GEN, false) => {
            secret.expect(CKO_SECRET_KEY, CKK_AES)?;
            let len = secret
                .ulong(CKA_VALUE_LEN)?
                .ok_or(CKR_TEMPLATE_INCOMPLETE)?;
            let kind = GenericKind::Aes(usize::try_from(len).unwrap_or(0));
            kind.check().map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?;
            Ok(kind)
        }
        (CKM_GENERIC_SECRET_KEY_GEN, false) => {
            secret.expect(CKO_SECRET_KEY, CKK_GENERIC_SECRET)?;
            // CKA_VALUE_LEN in bytes (PKCS#11 3.0 §6.8.2).
            let len = secret
                .ulong(CKA_VALUE_LEN)?
                .ok_or(CKR_TEMPLATE_INCOMPLETE)?;
            let kind = GenericKind::Secret(usize::try_from(len).unwrap_or(0));
            kind.check().map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?;
            Ok(kind)
        }
        _ => Err(CKR_MECHANISM_INVALID.into()),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What [`ClientConnection::new_names`] found to change, and the service that changes it.
pub(super) struct NewNames {
    pub(super) id: Option<Vec<u8>>,
    pub(super) label: Option<Vec<u8>>,
    pub(super) admin: Arc<Mutex<AdminService>>,
}

impl ClientConnection {
    /// The caller as the admin service sees it: the slot's principal, this instance.
    pub(super) fn admin_caller(&self, ctx: &SlotCtx) -> Caller {
        Caller {
            principal: ctx.principal.clone(),
            ..self.caller.clone()
        }
    }

    /// kms.cryptoKeys.create on the session's ring, else `CKR_TOKEN_WRITE_PROTECTED`
    /// (audited); then a read-write session. Returns the slot's view and its ring.
    pub(super) fn creation_gate(
        &mut self,
        session: SessionId,
        action: &str,
    ) -> Result<(SlotCtx, KeyRingName, RingEntry), P11Error> {
        let s = self.session(session)?;
        let (slot, rw) = (s.slot, s.rw);
        self.healthy()?;
        let view = self.svc.view()?;
        let ctx = self.slot_ctx(slot, &view.state)?;
        // A ring absent from the catalog is refused as one not seen.
        let found = ctx
            .ring
            .as_ref()
            .and_then(|r| Some((r.clone(), view.state.catalog.rings.get(r)?.clone())));
        let ring = found.as_ref().map(|(r, _)| r);
        let (ring, entry) = match gate::create_gate(&view.state.policy, &ctx.principal, ring) {
            // create_gate refuses a `None` ring: `found` is there.
            Ok(_) => found.ok_or(CKR_TOKEN_WRITE_PROTECTED)?,
            Err(d) => {
                return Err(self.refused(&ctx.principal, action, Some(ctx.ring_name.clone()), d))
            }
        };
        if !rw {
            return Err(CKR_SESSION_READ_ONLY.into());
        }
        Ok((ctx, ring, entry))
    }

    /// A private or secret Keyward key (always `CKA_PRIVATE`) is made only in a session
    /// logged in as the user (PKCS#11 3.0 §4.4; SoftHSM2 answers the same), else
    /// `CKR_USER_NOT_LOGGED_IN`, audited, before anything is made: without it the key would
    /// be made and its handles be invalid at once in the session that asked (issue 14).
    pub(super) fn login_gate(&mut self, session: SessionId, action: &str) -> Result<(), P11Error> {
        let slot = self.session(session)?.slot;
        let view = self.svc.view()?;
        let ctx = self.slot_ctx(slot, &view.state)?;
        if ctx.login == Some(false) {
            return Ok(());
        }
        self.deny(
            &ctx.principal,
            action,
            Some(ctx.ring_name.clone()),
            CKR_USER_NOT_LOGGED_IN,
            "a private or secret key needs a session logged in as the user",
        );
        Err(CKR_USER_NOT_LOGGED_IN.into())
    }

    /// Records a refused template (`error`, or `denied` for custody under strict_templates).
    pub(super) fn template_refused(&self, ctx: &SlotCtx, action: &str, rv: u64, why: &str) -> u64 {
        let _ = self.record(
            &ctx.principal,
            action,
            Some(ctx.ring_name.clone()),
            if rv == CKR_ATTRIBUTE_VALUE_INVALID || rv == CKR_TEMPLATE_INCONSISTENT {
                Outcome::Denied
            } else {
                Outcome::Error
            },
            rv,
            Some(why.to_owned()),
        );
        rv
    }

    /// Applies custody: corrected (`t.extractable` only with exportKeyMaterial), or refused
    /// under `strict_templates`.
    fn custody(
        &self,
        ctx: &SlotCtx,
        action: &str,
        ring: &KeyRingName,
        strict: bool,
        t: &mut KeyTemplate,
    ) -> Result<(), P11Error> {
        let view = self.svc.view()?;
        let may_export = gate::may_make_extractable(&view.state.policy, &ctx.principal, ring);
        if t.extractable && !may_export {
            t.weaker
                .push("CKA_EXTRACTABLE=TRUE without exportKeyMaterial");
        }
        if !t.weaker.is_empty() {
            let what = t.weaker.join(", ");
            if strict {
                return Err(P11Error::from(self.template_refused(
                    ctx,
                    action,
                    CKR_ATTRIBUTE_VALUE_INVALID,
                    &format!("strict_templates: {what}"),
                )));
            }
            tracing::debug!(action, asked = %what, "template corrected to Keyward's custody");
        }
        t.extractable &= may_export;
        Ok(())
    }

    /// Makes the key through the admin service and returns the new objects' handles.
    #[allow(clippy::too_many_arguments)]
    fn make_key(
        &mut self,
        ctx: &SlotCtx,
        ring: KeyRingName,
        t: KeyTemplate,
        material: Option<zeroize::Zeroizing<Vec<u8>>>,
        unwrap: Option<UnwrapFrom>,
        action: &'static str,
        detail: String,
    ) -> Result<Pkcs11Response, P11Error> {
        let Some(admin) = self.svc.admin.get().cloned() else {
            return Err(CKR_FUNCTION_NOT_SUPPORTED.into());
        };
        let pair = t.kind.is_pair();
        let detail = if t.weaker.is_empty() {
            detail
        } else {
            format!("{detail}; corrected: {}", t.weaker.join(", "))
        };
        let req = NewGenericKey {
            ring,
            kind: t.kind,
            usage: t.usage,
            exportable: t.extractable,
            cka_id: t.cka_id,
            cka_label: t.cka_label,
            pub_cka_id: t.pub_cka_id,
            pub_cka_label: t.pub_cka_label,
            material,
            unwrap,
            action,
            detail,
            client_left: self.client_left(),
        };
        let caller = self.admin_caller(ctx);
        let made = admin.lock().pkcs11_create_key(&caller, req);
        let (key, version) = made.map_err(|e| {
            tracing::debug!(action, rv = e.rv, error = %e, "key creation refused");
            e.rv
        })?;
        let mut inst = self.inst.lock();
        let mut handle = |half| {
            inst.handle(&ObjectKey {
                key: key.clone(),
                version,
                half,
            })
        };
        Ok(if pair {
            let private = handle(Half::Private);
            let public = handle(Half::Public);
            Pkcs11Response::KeyPair { public, private }
        } else {
            Pkcs11Response::Object(handle(Half::Secret))
        })
    }

    /// C_GenerateKey (`public` is `None`) and C_GenerateKeyPair (PKCS#11 3.0 §5.14) of token
    /// objects; the call as [`super::manage`]'s `generate_any` named it.
    pub(super) fn generate(
        &mut self,
        session: SessionId,
        call: Generation<'_>,
    ) -> Result<Pkcs11Response, P11Error> {
        let action = call.action;
        self.login_gate(session, action)?;
        let (ctx, ring, entry) = self.creation_gate(session, action)?;
        let (s, p) = (Tpl(call.secret), call.public.map(Tpl));
        let parsed = generation_kind(call.mechanism, p.is_some(), s, p.unwrap_or(Tpl(&[])))
            .and_then(|kind| key_template(kind, s, p));
        let mut t = match parsed {
            Ok(t) => t,
            Err(rv) => {
                return Err(P11Error::from(self.template_refused(
                    &ctx,
                    action,
                    rv.rv(),
                    &format!("template refused (mechanism {:#x})", call.mechanism.ty),
                )))
            }
        };
        self.custody(&ctx, action, &ring, entry.strict_templates, &mut t)?;
        let detail = format!("mechanism {:#x}, usage {:?}", call.mechanism.ty, t.usage);
        // Held while the token generates (the token's CPU, design §9).
        let _generating = self.generation_charge(&ctx.principal, &ctx.ring_name)?;
        self.make_key(&ctx, ring, t, None, None, action, detail)
    }

    /// C_CreateObject (PKCS#11 3.0 §5.7): plaintext AES keys with `allow_plaintext_import`.
    pub(super) fn create_object(
        &mut self,
        session: SessionId,
        template: &[Attribute],
    ) -> Result<Pkcs11Response, P11Error> {
        const ACTION: &str = "C_CreateObject";
        let t = Tpl(template);
        let class = t.ulong(CKA_CLASS)?;
        match class {
            Some(CKO_CERTIFICATE) => return self.create_cert(session, template),
            Some(CKO_SECRET_KEY | CKO_PRIVATE_KEY) => {}
            None => {
                self.session(session)?;
                return Err(CKR_TEMPLATE_INCOMPLETE.into());
            }
            Some(CKO_DATA | CKO_PUBLIC_KEY) | Some(_) => {
                self.session(session)?;
                return Err(CKR_TEMPLATE_INCONSISTENT.into());
            }
        }
        self.login_gate(session, ACTION)?;
        let (ctx, ring, entry) = self.creation_gate(session, ACTION)?;
        if !entry.allow_plaintext_import {
            return Err(P11Error::from(self.template_refused(
                &ctx,
                ACTION,
                CKR_TEMPLATE_INCONSISTENT,
                "plaintext key material needs allow_plaintext_import on the ring",
            )));
        }
        let parsed = (|| {
            let key_type = t.ulong(CKA_KEY_TYPE)?;
            if class != Some(CKO_SECRET_KEY)
                || !matches!(key_type, Some(CKK_AES | CKK_GENERIC_SECRET))
            {
                // Private keys and other secrets: not offered (BYOK goes through import jobs).
                return Err(CKR_TEMPLATE_INCONSISTENT);
            }
            let value = match t.get(CKA_VALUE) {
                Some(AttrValue::Bytes(b)) => zeroize::Zeroizing::new(b.as_slice().to_vec()),
                Some(_) => return Err(CKR_ATTRIBUTE_VALUE_INVALID),
                None => return Err(CKR_TEMPLATE_INCOMPLETE),
            };
            let kind = if key_type == Some(CKK_AES) {
                GenericKind::Aes(value.len())
            } else {
                GenericKind::Secret(value.len())
            };
            kind.check().map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?;
            if t.ulong(CKA_VALUE_LEN)?.is_some() {
                return Err(CKR_TEMPLATE_INCONSISTENT);
            }
            Ok((key_template(kind, t, None)?, value))
        })();
        let (mut kt, value) = match parsed {
            Ok(v) => v,
            Err(rv) => {
                return Err(P11Error::from(self.template_refused(
                    &ctx,
                    ACTION,
                    rv,
                    "template refused",
                )))
            }
        };
        self.custody(&ctx, ACTION, &ring, entry.strict_templates, &mut kt)?;
        let detail = format!("plaintext {} import, usage {:?}", kt.kind, kt.usage);
        self.make_key(&ctx, ring, kt, Some(value), None, ACTION, detail)
    }

    /// C_UnwrapKey into the ring with a Keyward AES key ([`super::unwrap`]): a plaintext
    /// import (`allow_plaintext_import`, else `CKR_TEMPLATE_INCONSISTENT`) that needs
    /// kms.cryptoKeys.create (else `CKR_TOKEN_WRITE_PROTECTED`), with every creation's custody
    /// and name rules; the token unwraps.
    pub(super) fn unwrap_into_ring(
        &mut self,
        session: SessionId,
        template: &[Attribute],
        kind: GenericKind,
        from: UnwrapFrom,
        unwrapping: &str,
    ) -> Result<Pkcs11Response, P11Error> {
        const ACTION: &str = "C_UnwrapKey";
        let (ctx, ring, entry) = self.creation_gate(session, ACTION)?;
        if !entry.allow_plaintext_import {
            return Err(P11Error::from(self.template_refused(
                &ctx,
                ACTION,
                CKR_TEMPLATE_INCONSISTENT,
                "unwrapping into the ring is a plaintext import: it needs allow_plaintext_import",
            )));
        }
        let mut kt = match key_template(kind, Tpl(template), None) {
            Ok(t) => t,
            Err(rv) => {
                return Err(P11Error::from(self.template_refused(
                    &ctx,
                    ACTION,
                    rv.rv(),
                    "template refused",
                )))
            }
        };
        self.custody(&ctx, ACTION, &ring, entry.strict_templates, &mut kt)?;
        let detail = format!(
            "plaintext {} import by unwrap with {unwrapping}, usage {:?}",
            kt.kind, kt.usage
        );
        self.make_key(&ctx, ring, kt, None, Some(from), ACTION, detail)
    }

    /// C_DestroyObject (PKCS#11 3.0 §5.7): kms.cryptoKeyVersions.destroy, else
    /// `CKR_ACTION_PROHIBITED`.
    pub(super) fn destroy(
        &mut self,
        session: SessionId,
        handle: ObjectHandle,
    ) -> Result<Pkcs11Response, P11Error> {
        const ACTION: &str = "C_DestroyObject";
        let (ctx, id) = self.visible_object(session, handle, CKR_OBJECT_HANDLE_INVALID)?;
        let view = self.svc.view()?;
        if let Err(d) = gate::destroy_gate(&view.state.policy, &ctx.principal, &id.key) {
            return Err(self.refused(&ctx.principal, ACTION, Some(id.version_name()), d));
        }
        if !self.session(session)?.rw {
            return Err(CKR_SESSION_READ_ONLY.into());
        }
        let Some(admin) = self.svc.admin.get().cloned() else {
            return Err(CKR_FUNCTION_NOT_SUPPORTED.into());
        };
        let caller = self.admin_caller(&ctx);
        let done =
            admin
                .lock()
                .pkcs11_destroy(&caller, &id.key, id.version, id.half == Half::Public);
        done.map_err(|e| {
            tracing::debug!(rv = e.rv, error = %e, "C_DestroyObject refused");
            e.rv
        })?;
        Ok(Pkcs11Response::Done)
    }

    /// C_SetAttributeValue (PKCS#11 3.0 §5.7): `CKA_ID`/`CKA_LABEL` of a generic key.
    pub(super) fn set_attributes(
        &mut self,
        session: SessionId,
        handle: ObjectHandle,
        template: &[Attribute],
    ) -> Result<Pkcs11Response, P11Error> {
        const ACTION: &str = "C_SetAttributeValue";
        let (ctx, id) = self.visible_object(session, handle, CKR_OBJECT_HANDLE_INVALID)?;
        let view = self.svc.view()?;
        let generic = view.state.catalog.generic.get(&id.key);
        let creator = self.extra(&view, &id.key, id.version).creator;
        if let Err(d) = gate::attribute_gate(&view.state.policy, &ctx.principal, &id.key, creator) {
            return Err(self.refused(&ctx.principal, ACTION, Some(id.version_name()), d));
        }
        if generic.is_none() {
            // Keys made with keywardctl have derived CKA_ID/CKA_LABEL (design §4).
            return Err(CKR_ATTRIBUTE_READ_ONLY.into());
        }
        let Some(names) = self.new_names(session, template)? else {
            return Ok(Pkcs11Response::Done);
        };
        let caller = self.admin_caller(&ctx);
        tracing::debug!(id = names.id.as_deref().map(hex), "C_SetAttributeValue");
        let done = names.admin.lock().pkcs11_set_names(
            &caller,
            &id.key,
            id.half == Half::Public,
            names.id,
            names.label,
        );
        done.map_err(|e| {
            tracing::debug!(rv = e.rv, error = %e, "C_SetAttributeValue refused");
            e.rv
        })?;
        Ok(Pkcs11Response::Done)
    }

    /// The new `CKA_ID` and `CKA_LABEL` a C_SetAttributeValue template of a generic key or a
    /// certificate asks for (any other attribute is read-only), with the admin service that
    /// makes the change; `None` if the template changes nothing. A change needs a read-write
    /// session.
    pub(super) fn new_names(
        &self,
        session: SessionId,
        template: &[Attribute],
    ) -> Result<Option<NewNames>, P11Error> {
        let (mut new_id, mut new_label) = (None, None);
        for a in template {
            match (a.ty, &a.value) {
                (CKA_ID, AttrValue::Bytes(b)) => new_id = Some(b.as_slice().to_vec()),
                (CKA_LABEL, AttrValue::Bytes(b)) => new_label = Some(b.as_slice().to_vec()),
                (CKA_ID | CKA_LABEL, _) => return Err(CKR_ATTRIBUTE_VALUE_INVALID.into()),
                _ => return Err(CKR_ATTRIBUTE_READ_ONLY.into()),
            }
        }
        if new_id.is_none() && new_label.is_none() {
            return Ok(None);
        }
        if !self.session(session)?.rw {
            return Err(CKR_SESSION_READ_ONLY.into());
        }
        let Some(admin) = self.svc.admin.get().cloned() else {
            return Err(CKR_FUNCTION_NOT_SUPPORTED.into());
        };
        Ok(Some(NewNames {
            id: new_id,
            label: new_label,
            admin,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_wire::pkcs11::Blob;

    fn a(ty: u64, value: AttrValue) -> Attribute {
        Attribute { ty, value }
    }

    fn b(ty: u64, v: bool) -> Attribute {
        a(ty, AttrValue::Bool(v))
    }

    fn none(ty: u64) -> Mechanism {
        Mechanism {
            ty,
            params: MechParams::None,
        }
    }

    #[test]
    fn ec_pair_template_with_defaults() {
        let public = vec![
            b(CKA_TOKEN, true),
            a(
                CKA_EC_PARAMS,
                AttrValue::Bytes(Blob::new(Curve::P256.ec_params())),
            ),
            a(CKA_ID, AttrValue::Bytes(Blob::new(vec![1]))),
        ];
        let private = vec![
            b(CKA_TOKEN, true),
            b(CKA_SENSITIVE, false),
            a(CKA_LABEL, AttrValue::Bytes(Blob::new(b"x".to_vec()))),
            a(CKA_ID, AttrValue::Bytes(Blob::new(vec![1]))),
        ];
        let kind = generation_kind(
            &none(CKM_EC_KEY_PAIR_GEN),
            true,
            Tpl(&private),
            Tpl(&public),
        )
        .unwrap();
        assert_eq!(kind, GenericKind::Ec(Curve::P256));
        let t = key_template(kind, Tpl(&private), Some(Tpl(&public))).unwrap();
        assert!(t.usage.sign && t.usage.verify && !t.usage.decrypt);
        assert_eq!(t.cka_id, vec![1]);
        assert_eq!(t.pub_cka_label.as_deref(), Some(&b"x"[..]));
        assert_eq!(t.weaker, vec!["CKA_SENSITIVE=FALSE"]);
    }

    #[test]
    fn templates_refused() {
        let aes = |len: u64, token: Option<bool>| {
            let mut t = vec![a(CKA_VALUE_LEN, AttrValue::Ulong(len))];
            if let Some(v) = token {
                t.push(b(CKA_TOKEN, v));
            }
            t
        };
        let gen = |t: &[Attribute]| {
            generation_kind(&none(CKM_AES_KEY_GEN), false, Tpl(t), Tpl(&[]))
                .and_then(|k| key_template(k, Tpl(t), None))
                .map(|t| t.kind)
        };
        assert_eq!(gen(&aes(32, Some(true))).unwrap(), GenericKind::Aes(32));
        assert_eq!(gen(&aes(32, None)).unwrap_err(), CKR_TEMPLATE_INCONSISTENT);
        assert_eq!(
            gen(&aes(7, Some(true))).unwrap_err(),
            CKR_ATTRIBUTE_VALUE_INVALID
        );
        assert_eq!(
            generation_kind(&none(0x1234), false, Tpl(&[]), Tpl(&[])).unwrap_err(),
            CKR_MECHANISM_INVALID
        );
        let rsa = vec![
            a(CKA_MODULUS_BITS, AttrValue::Ulong(2048)),
            a(CKA_PUBLIC_EXPONENT, AttrValue::Bytes(Blob::new(vec![3]))),
        ];
        assert_eq!(
            generation_kind(&none(CKM_RSA_PKCS_KEY_PAIR_GEN), true, Tpl(&[]), Tpl(&rsa))
                .unwrap_err(),
            CKR_ATTRIBUTE_VALUE_INVALID
        );
        assert_eq!(
            generation_kind(&none(CKM_EC_KEY_PAIR_GEN), true, Tpl(&[]), Tpl(&[])).unwrap_err(),
            CKR_TEMPLATE_INCOMPLETE
        );
    }
}
