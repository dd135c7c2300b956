//! Certificate objects through the module (design §4 "Objects", issue 7): `CKO_CERTIFICATE`
//! (X.509) objects kept by keywardd in SQLite ([`crate::admin::certs`]), public
//! (`CKA_PRIVATE` FALSE: listed before login), with the attributes clients pair and chain them
//! by (`CKA_ID`, `CKA_SUBJECT`, `CKA_ISSUER`, `CKA_SERIAL_NUMBER`).
//!
//! - Visibility: a certificate of a key is seen by whoever sees the key; a certificate of the
//!   ring (no key of the ring has its public key: a CA) by whoever sees the ring's token.
//! - `CKA_VALUE` (and what is derived from it: `CKA_CHECK_VALUE`, `CKA_PUBLIC_KEY_INFO`) needs
//!   viewPublicKey or a use permission on the key (for a ring's certificate: on the ring or on
//!   a key of it the principal sees), or to be its creator in the creating instance
//!   (design §4's table);
//!   otherwise `CKR_ATTRIBUTE_SENSITIVE`, and it never matches a FindObjects template.
//! - `C_CreateObject`: kms.cryptoKeys.create on the ring (else `CKR_TOKEN_WRITE_PROTECTED`);
//!   token objects only; `CKA_TRUSTED` TRUE only in an SO session (PKCS#11 3.0 §4.6.3, else
//!   `CKR_ATTRIBUTE_READ_ONLY`); `CKA_PRIVATE` TRUE is `CKR_ATTRIBUTE_VALUE_INVALID`.
//! - `C_DestroyObject` and `C_SetAttributeValue` (`CKA_ID`, `CKA_LABEL`): see
//!   [`crate::admin::certs`]; `C_CopyObject` is `CKR_ACTION_PROHIBITED`.

use super::ck::*;
use super::P11Error;
use super::{ClientConnection, SlotCtx, View};
use crate::admin::certs::NewCertObject;
use crate::audit::Outcome;
use crate::catalog::CertEntry;
use crate::policy::Principal;
use keyward_wire::pkcs11::{
    AttrResult, AttrValue, Attribute, Blob, ObjectHandle, Pkcs11Response, SessionId,
};
use sha1::{Digest, Sha1};
use std::cell::OnceCell;

/// A certificate as one principal sees it.
#[derive(Debug, Clone, Copy)]
pub struct CertView<'a> {
    /// The certificate.
    pub entry: &'a CertEntry,
    /// May the principal read `CKA_VALUE`?
    pub readable: bool,
}

impl CertView<'_> {
    /// The attribute `ty` as the daemon reports it.
    pub fn attribute(&self, ty: u64) -> AttrResult {
        let row = &self.entry.row;
        let b = |v: bool| AttrResult::Value(AttrValue::Bool(v));
        let u = |v: u64| AttrResult::Value(AttrValue::Ulong(v));
        let bytes = |v: &[u8]| AttrResult::Value(AttrValue::Bytes(Blob::new(v.to_vec())));
        let gated = |v: Vec<u8>| {
            if self.readable {
                AttrResult::Value(AttrValue::Bytes(Blob::new(v)))
            } else {
                AttrResult::Sensitive
            }
        };
        match ty {
            CKA_CLASS => u(CKO_CERTIFICATE),
            CKA_TOKEN => b(true),
            CKA_PRIVATE => b(false),
            CKA_MODIFIABLE => b(true),
            CKA_COPYABLE => b(false),
            CKA_DESTROYABLE => b(true),
            CKA_LABEL => bytes(&row.cka_label),
            CKA_ID => bytes(&row.cka_id),
            CKA_CERTIFICATE_TYPE => u(CKC_X_509),
            CKA_TRUSTED => b(row.trusted),
            CKA_CERTIFICATE_CATEGORY => u(row.category),
            CKA_SUBJECT => bytes(&row.subject),
            CKA_ISSUER => bytes(&row.issuer),
            CKA_SERIAL_NUMBER => bytes(&row.serial),
            CKA_VALUE => gated(row.value.clone()),
            CKA_CHECK_VALUE => gated(Sha1::digest(&row.value)[..3].to_vec()),
            CKA_PUBLIC_KEY_INFO => match crate::x509::parse_certificate(&row.value) {
                Ok(info) => gated(info.spki),
                Err(_) => bytes(&[]),
            },
            CKA_START_DATE
            | CKA_END_DATE
            | CKA_URL
            | CKA_HASH_OF_SUBJECT_PUBLIC_KEY
            | CKA_HASH_OF_ISSUER_PUBLIC_KEY => bytes(&[]),
            CKA_JAVA_MIDP_SECURITY_DOMAIN => u(0),
            CKA_NAME_HASH_ALGORITHM => u(CKM_SHA_1),
            _ => AttrResult::TypeInvalid,
        }
    }

    /// Does the certificate match a FindObjects template? (A value the principal may not
    /// read never matches.)
    pub fn matches(&self, template: &[Attribute]) -> bool {
        template.iter().all(|a| match self.attribute(a.ty) {
            AttrResult::Value(v) => v == a.value,
            _ => false,
        })
    }
}

impl ClientConnection {
    /// The certificate as the principal sees it, if it does.
    /// `ring_reads` caches, for one call, whether the principal may read the ring's own
    /// certificates (a permission on the ring or on any key of it it sees).
    fn cert_view<'s>(
        &self,
        view: &'s View,
        principal: &Principal,
        ring: &crate::policy::KeyRingName,
        c: &'s CertEntry,
        ring_reads: &OnceCell<bool>,
    ) -> Option<CertView<'s>> {
        if &c.ring != ring {
            return None;
        }
        let creator = self.caller.instance.is_some()
            && c.row.creator_instance == self.caller.instance
            && c.row.created_by == principal.member.to_string();
        let readable = super::gate::cert_read(
            &view.state.policy,
            principal,
            ring,
            c.owner.as_ref().map(|(key, _)| key),
            creator,
            ring_reads,
        )?;
        Some(CertView { entry: c, readable })
    }

    /// The certificates of the slot's ring the principal sees.
    pub(super) fn certificates<'s>(&self, view: &'s View, ctx: &SlotCtx) -> Vec<CertView<'s>> {
        let Some(ring) = &ctx.ring else {
            return Vec::new();
        };
        let ring_reads = OnceCell::new();
        view.state
            .catalog
            .certificates
            .iter()
            .filter_map(|c| self.cert_view(view, &ctx.principal, ring, c, &ring_reads))
            .collect()
    }

    /// The certificate a handle names: `None` if the handle names no certificate;
    /// `Some(Err(CKR_OBJECT_HANDLE_INVALID))` if it is gone, of another ring, or the
    /// principal does not see it (any more): that refusal is audited, as for keys (the
    /// caller is told the object is absent, the audit log that it was refused; design §4, §6).
    pub(super) fn resolve_cert<'s>(
        &self,
        view: &'s View,
        ctx: &SlotCtx,
        handle: ObjectHandle,
    ) -> Option<Result<CertView<'s>, P11Error>> {
        let id = self.inst.lock().cert(handle)?;
        let Some((ring, c)) = ctx.ring.as_ref().and_then(|ring| {
            view.state
                .catalog
                .certificates
                .iter()
                .find(|c| c.row.id == id && &c.ring == ring)
                .map(|c| (ring, c))
        }) else {
            return Some(Err(CKR_OBJECT_HANDLE_INVALID.into()));
        };
        let found = self.cert_view(view, &ctx.principal, ring, c, &OnceCell::new());
        if found.is_none() {
            self.refused(
                &ctx.principal,
                self.current,
                Some(c.resource()),
                super::gate::Denial::new(CKR_OBJECT_HANDLE_INVALID, "not visible to the caller"),
            );
        }
        Some(found.ok_or(CKR_OBJECT_HANDLE_INVALID.into()))
    }

    /// The handles of the certificates matching `template`.
    pub(super) fn find_certs(
        &self,
        view: &View,
        ctx: &SlotCtx,
        template: &[Attribute],
    ) -> Vec<ObjectHandle> {
        let ids: Vec<i64> = self
            .certificates(view, ctx)
            .into_iter()
            .filter(|c| c.matches(template))
            .map(|c| c.entry.row.id)
            .collect();
        let mut inst = self.inst.lock();
        ids.into_iter().map(|id| inst.cert_handle(id)).collect()
    }

    /// C_GetAttributeValue of a certificate (audits a hidden `CKA_VALUE` as a denial).
    pub(super) fn cert_attributes(
        &self,
        ctx: &SlotCtx,
        cert: CertView<'_>,
        types: &[u64],
    ) -> Vec<AttrResult> {
        let results: Vec<AttrResult> = types.iter().map(|t| cert.attribute(*t)).collect();
        if results.iter().any(|r| matches!(r, AttrResult::Sensitive)) {
            self.refused(
                &ctx.principal,
                "C_GetAttributeValue",
                Some(cert.entry.resource()),
                super::gate::public_values_hidden(true),
            );
        }
        results
    }

    /// C_CreateObject of a certificate (PKCS#11 3.0 §4.6).
    pub(super) fn create_cert(
        &mut self,
        session: SessionId,
        template: &[Attribute],
    ) -> Result<Pkcs11Response, P11Error> {
        const ACTION: &str = "C_CreateObject";
        let (ctx, ring, _) = self.creation_gate(session, ACTION)?;
        let parsed = cert_template(template, ctx.login == Some(true), ring);
        let req = match parsed {
            Ok(r) => r,
            Err(rv) => {
                return Err(P11Error::from(self.template_refused(
                    &ctx,
                    ACTION,
                    rv.rv(),
                    "certificate template refused",
                )))
            }
        };
        let Some(admin) = self.svc.admin.get().cloned() else {
            return Err(CKR_FUNCTION_NOT_SUPPORTED.into());
        };
        let caller = self.admin_caller(&ctx);
        let made = admin.lock().pkcs11_create_cert(&caller, req);
        let id = made.map_err(|e| {
            tracing::debug!(rv = e.rv, error = %e, "certificate creation refused");
            e.rv
        })?;
        Ok(Pkcs11Response::Object(self.inst.lock().cert_handle(id)))
    }

    /// C_DestroyObject of a certificate.
    pub(super) fn destroy_cert(
        &mut self,
        session: SessionId,
        ctx: &SlotCtx,
        cert: &CertEntry,
    ) -> Result<Pkcs11Response, P11Error> {
        if !self.session(session)?.rw {
            return Err(CKR_SESSION_READ_ONLY.into());
        }
        let Some(admin) = self.svc.admin.get().cloned() else {
            return Err(CKR_FUNCTION_NOT_SUPPORTED.into());
        };
        let caller = self.admin_caller(ctx);
        let done = admin.lock().pkcs11_destroy_cert(&caller, cert.row.id);
        done.map_err(|e| {
            tracing::debug!(rv = e.rv, error = %e, "certificate destruction refused");
            e.rv
        })?;
        Ok(Pkcs11Response::Done)
    }

    /// C_SetAttributeValue of a certificate: `CKA_ID` and `CKA_LABEL`.
    pub(super) fn set_cert_attributes(
        &mut self,
        session: SessionId,
        ctx: &SlotCtx,
        cert: &CertEntry,
        template: &[Attribute],
    ) -> Result<Pkcs11Response, P11Error> {
        let Some(names) = self.new_names(session, template)? else {
            return Ok(Pkcs11Response::Done);
        };
        let caller = self.admin_caller(ctx);
        let done =
            names
                .admin
                .lock()
                .pkcs11_set_cert_names(&caller, cert.row.id, names.id, names.label);
        done.map_err(|e| {
            tracing::debug!(rv = e.rv, error = %e, "certificate rename refused");
            e.rv
        })?;
        Ok(Pkcs11Response::Done)
    }

    /// C_CopyObject of a certificate: refused like every copy (design §4 "No side doors").
    pub(super) fn copy_cert(&self, ctx: &SlotCtx, cert: &CertEntry) -> u64 {
        let _ = self.record(
            &ctx.principal,
            "C_CopyObject",
            Some(cert.resource()),
            Outcome::Denied,
            CKR_ACTION_PROHIBITED,
            Some("certificate objects are not copied".into()),
        );
        CKR_ACTION_PROHIBITED
    }
}

/// Reads a certificate template for `ring`. `so`: an SO session.
fn cert_template(
    template: &[Attribute],
    so: bool,
    ring: crate::policy::KeyRingName,
) -> Result<NewCertObject, P11Error> {
    let get = |ty: u64| template.iter().rev().find(|a| a.ty == ty).map(|a| &a.value);
    let bytes = |ty: u64| match get(ty) {
        None => Ok(None),
        Some(AttrValue::Bytes(b)) => Ok(Some(b.as_slice().to_vec())),
        Some(_) => Err(CKR_ATTRIBUTE_VALUE_INVALID),
    };
    let boolean = |ty: u64| match get(ty) {
        None => Ok(None),
        Some(AttrValue::Bool(v)) => Ok(Some(*v)),
        Some(_) => Err(CKR_ATTRIBUTE_VALUE_INVALID),
    };
    let ulong = |ty: u64| match get(ty) {
        None => Ok(None),
        Some(AttrValue::Ulong(v)) => Ok(Some(*v)),
        Some(_) => Err(CKR_ATTRIBUTE_VALUE_INVALID),
    };
    for a in template {
        let known = matches!(
            a.ty,
            CKA_CLASS
                | CKA_TOKEN
                | CKA_PRIVATE
                | CKA_MODIFIABLE
                | CKA_COPYABLE
                | CKA_DESTROYABLE
                | CKA_LABEL
                | CKA_UNIQUE_ID
                | CKA_ID
                | CKA_CERTIFICATE_TYPE
                | CKA_TRUSTED
                | CKA_CERTIFICATE_CATEGORY
                | CKA_CHECK_VALUE
                | CKA_START_DATE
                | CKA_END_DATE
                | CKA_PUBLIC_KEY_INFO
                | CKA_SUBJECT
                | CKA_ISSUER
                | CKA_SERIAL_NUMBER
                | CKA_VALUE
                | CKA_URL
                | CKA_HASH_OF_SUBJECT_PUBLIC_KEY
                | CKA_HASH_OF_ISSUER_PUBLIC_KEY
                | CKA_JAVA_MIDP_SECURITY_DOMAIN
                | CKA_NAME_HASH_ALGORITHM
        );
        if !known && a.ty < CKA_VENDOR_DEFINED {
            return Err(CKR_ATTRIBUTE_TYPE_INVALID.into());
        }
    }
    // Certificates are token objects only (no session certificates); CKA_TOKEN defaults to
    // FALSE.
    if boolean(CKA_TOKEN)? != Some(true) {
        return Err(CKR_TEMPLATE_INCONSISTENT.into());
    }
    if boolean(CKA_PRIVATE)? == Some(true) || boolean(CKA_COPYABLE)? == Some(true) {
        return Err(CKR_ATTRIBUTE_VALUE_INVALID.into());
    }
    if ulong(CKA_CERTIFICATE_TYPE)?.is_some_and(|t| t != CKC_X_509) {
        return Err(CKR_ATTRIBUTE_VALUE_INVALID.into());
    }
    let trusted = boolean(CKA_TRUSTED)?.unwrap_or(false);
    if trusted && !so {
        return Err(CKR_ATTRIBUTE_READ_ONLY.into());
    }
    let value = bytes(CKA_VALUE)?.ok_or(CKR_TEMPLATE_INCOMPLETE)?;
    let category = ulong(CKA_CERTIFICATE_CATEGORY)?.unwrap_or(0);
    if category > 3 {
        return Err(CKR_ATTRIBUTE_VALUE_INVALID.into());
    }
    Ok(NewCertObject {
        ring,
        value,
        cka_id: bytes(CKA_ID)?,
        cka_label: bytes(CKA_LABEL)?.unwrap_or_default(),
        subject: bytes(CKA_SUBJECT)?,
        issuer: bytes(CKA_ISSUER)?,
        serial: bytes(CKA_SERIAL_NUMBER)?,
        category,
        trusted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(ty: u64, value: AttrValue) -> Attribute {
        Attribute { ty, value }
    }

    #[test]
    fn certificate_templates() {
        let ring = crate::policy::KeyRingName {
            parent: crate::policy::RingParent::Project("p".into()),
            id: "r".into(),
        };
        let cert_template = |t: &[Attribute], so| cert_template(t, so, ring.clone());
        let base = vec![
            a(CKA_CLASS, AttrValue::Ulong(CKO_CERTIFICATE)),
            a(CKA_TOKEN, AttrValue::Bool(true)),
            a(CKA_CERTIFICATE_TYPE, AttrValue::Ulong(CKC_X_509)),
            a(CKA_VALUE, AttrValue::Bytes(Blob::new(vec![0x30, 0]))),
            a(0xCE53_4351, AttrValue::Bytes(Blob::new(vec![1]))),
        ];
        let t = cert_template(&base, false).unwrap();
        assert_eq!(t.value, vec![0x30, 0]);
        assert_eq!(t.cka_id, None);
        let with = |extra: Attribute| {
            let mut t = base.clone();
            t.push(extra);
            cert_template(&t, false).map(|_| ())
        };
        assert_eq!(
            with(a(CKA_TOKEN, AttrValue::Bool(false))),
            Err(CKR_TEMPLATE_INCONSISTENT.into())
        );
        assert_eq!(
            with(a(CKA_TRUSTED, AttrValue::Bool(true))),
            Err(CKR_ATTRIBUTE_READ_ONLY.into())
        );
        assert_eq!(
            with(a(CKA_PRIVATE, AttrValue::Bool(true))),
            Err(CKR_ATTRIBUTE_VALUE_INVALID.into())
        );
        assert_eq!(
            with(a(CKA_MODULUS, AttrValue::Bytes(Blob::new(vec![1])))),
            Err(CKR_ATTRIBUTE_TYPE_INVALID.into())
        );
        assert_eq!(
            cert_template(&base[..3], false).map(|_| ()),
            Err(CKR_TEMPLATE_INCOMPLETE.into())
        );
    }
}
