//! BYOK through the module (design §4's `C_UnwrapKey` row, §5).
//!
//! - Each ACTIVE import job of the session's ring shows, to a logged-in principal holding
//!   kms.importJobs.get on the ring, as one `CKO_PRIVATE_KEY` (RSA) labelled
//!   `import-job-<id>`: sensitive, never extractable, `CKA_UNWRAP` only; its public values
//!   (`CKA_MODULUS`, `CKA_PUBLIC_EXPONENT`, `CKA_PUBLIC_KEY_INFO`) are readable, so a client
//!   can wrap for it; `CKA_ID` is SHA-1 of the modulus, as NSS computes it.
//! - `C_UnwrapKey` with that key: `CKM_RSA_AES_KEY_WRAP` (`ulAESKeyBits` 256 and OAEP
//!   parameters matching the job's method, empty label) for the `*-aes-256` methods, or
//!   `CKM_RSA_PKCS_OAEP` for `rsa-oaep-3072-sha256`; anything else is
//!   `CKR_MECHANISM_INVALID` / `CKR_MECHANISM_PARAM_INVALID`. The template's `CKA_LABEL`
//!   names the target key: an existing key of the ring gets a new version (useToImport
//!   suffices), else a new key is made (also kms.cryptoKeys.create) whose algorithm follows
//!   `CKA_CLASS`/`CKA_KEY_TYPE`/`CKA_VALUE_LEN`, and for private keys the public key the
//!   template must carry as `CKA_PUBLIC_KEY_INFO` (SPKI; keywardd never sees the material).
//!   Denials: `CKR_UNWRAPPING_KEY_HANDLE_INVALID` without useToImport (or for an expired
//!   job), `CKR_TOKEN_WRITE_PROTECTED` without create; all audited. The new object's handle
//!   is the version's secret or private key.

use super::ck::*;
use super::objects::{Half, ObjectKey, PublicValues};
use super::{ClientConnection, SlotCtx, View};
use super::{P11Error, Ulong};
use crate::admin::import::Pkcs11Import;
use crate::catalog::JobEntry;
use keyward_wire::import::{ImportHash, ImportMethod};
use keyward_wire::keys::{Algorithm, KeyKind};
use keyward_wire::pkcs11::{
    AttrResult, AttrValue, Attribute, Blob, MechParams, Mechanism, OaepParams, ObjectHandle,
    Pkcs11Response, SessionId,
};
const ACTION: &str = "C_UnwrapKey";

/// One import job's private key object, as a principal sees it.
pub(super) struct JobView<'a> {
    pub entry: &'a JobEntry,
    public: Option<PublicValues>,
}

impl JobView<'_> {
    /// `CKA_LABEL`.
    fn label(&self) -> Vec<u8> {
        format!("import-job-{}", self.entry.id).into_bytes()
    }

    fn attribute(&self, ty: u64) -> AttrResult {
        let b = |v: bool| AttrResult::Value(AttrValue::Bool(v));
        let u = |v: u64| AttrResult::Value(AttrValue::Ulong(v));
        let bytes = |v: Vec<u8>| AttrResult::Value(AttrValue::Bytes(Blob::new(v)));
        let (n, e) = match &self.public {
            Some(PublicValues::Rsa { modulus, exponent }) => (Some(modulus), Some(exponent)),
            _ => (None, None),
        };
        match ty {
            CKA_CLASS => u(CKO_PRIVATE_KEY),
            CKA_KEY_TYPE => u(CKK_RSA),
            CKA_TOKEN
            | CKA_PRIVATE
            | CKA_SENSITIVE
            | CKA_ALWAYS_SENSITIVE
            | CKA_NEVER_EXTRACTABLE
            | CKA_LOCAL
            | CKA_UNWRAP => b(true),
            CKA_EXTRACTABLE
            | CKA_DECRYPT
            | CKA_SIGN
            | CKA_SIGN_RECOVER
            | CKA_DERIVE
            | CKA_ENCRYPT
            | CKA_VERIFY
            | CKA_VERIFY_RECOVER
            | CKA_WRAP
            | CKA_MODIFIABLE
            | CKA_COPYABLE
            | CKA_DESTROYABLE
            | CKA_ALWAYS_AUTHENTICATE => b(false),
            CKA_LABEL => bytes(self.label()),
            CKA_ID => self
                .public
                .as_ref()
                .map_or(AttrResult::TypeInvalid, |p| bytes(p.nss_id())),
            CKA_VALUE => AttrResult::Sensitive,
            CKA_MODULUS => n.map_or(AttrResult::TypeInvalid, |n| bytes(n.clone())),
            CKA_PUBLIC_EXPONENT => e.map_or(AttrResult::TypeInvalid, |e| bytes(e.clone())),
            CKA_MODULUS_BITS => u(u64::try_from(self.entry.method.rsa_bits()).unwrap_or(0)),
            CKA_PUBLIC_KEY_INFO => bytes(self.entry.public_key.clone()),
            _ => AttrResult::TypeInvalid,
        }
    }

    fn matches(&self, template: &[Attribute]) -> bool {
        template.iter().all(|a| match self.attribute(a.ty) {
            AttrResult::Value(v) => v == a.value,
            _ => false,
        })
    }
}

/// A template attribute, read as the kind it must be (`CKR_ATTRIBUTE_VALUE_INVALID` if not).
fn get(t: &[Attribute], ty: u64) -> Option<&AttrValue> {
    t.iter().rev().find(|a| a.ty == ty).map(|a| &a.value)
}

fn get_bool(t: &[Attribute], ty: u64) -> Result<Option<bool>, P11Error> {
    match get(t, ty) {
        None => Ok(None),
        Some(AttrValue::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(CKR_ATTRIBUTE_VALUE_INVALID.into()),
    }
}

fn get_ulong(t: &[Attribute], ty: u64) -> Result<Option<Ulong>, P11Error> {
    match get(t, ty) {
        None => Ok(None),
        Some(AttrValue::Ulong(v)) => Ok(Some(*v)),
        Some(_) => Err(CKR_ATTRIBUTE_VALUE_INVALID.into()),
    }
}

fn get_bytes(t: &[Attribute], ty: u64) -> Result<Option<Vec<u8>>, P11Error> {
    match get(t, ty) {
        None => Ok(None),
        Some(AttrValue::Bytes(b)) => Ok(Some(b.as_slice().to_vec())),
        Some(_) => Err(CKR_ATTRIBUTE_VALUE_INVALID.into()),
    }
}

/// The OAEP parameters an import method uses: its hash for both OAEP and MGF1, no label.
fn oaep_fits(p: &OaepParams, hash: ImportHash) -> bool {
    let (h, mgf) = match hash {
        ImportHash::Sha1 => (CKM_SHA_1, CKG_MGF1_SHA1),
        ImportHash::Sha256 => (CKM_SHA256, CKG_MGF1_SHA256),
    };
    p.hash == h
        && p.mgf == mgf
        && (p.source == 0 || p.source == CKZ_DATA_SPECIFIED)
        && p.source_data.as_slice().is_empty()
}

/// Checks the mechanism against the job's method.
fn check_mechanism(m: &Mechanism, method: ImportMethod) -> Result<(), P11Error> {
    match (m.ty, &m.params, method.uses_aes()) {
        (CKM_RSA_AES_KEY_WRAP, MechParams::RsaAesKeyWrap(p), true) => {
            if p.aes_key_bits == 256 && oaep_fits(&p.oaep, method.hash()) {
                Ok(())
            } else {
                Err(CKR_MECHANISM_PARAM_INVALID.into())
            }
        }
        (CKM_RSA_PKCS_OAEP, MechParams::Oaep(p), false) => {
            if oaep_fits(p, method.hash()) {
                Ok(())
            } else {
                Err(CKR_MECHANISM_PARAM_INVALID.into())
            }
        }
        (CKM_RSA_AES_KEY_WRAP, _, true) | (CKM_RSA_PKCS_OAEP, _, false) => {
            Err(CKR_MECHANISM_PARAM_INVALID.into())
        }
        _ => Err(CKR_MECHANISM_INVALID.into()),
    }
}

/// Does a template's class and key type fit an existing key's algorithm?
fn fits(algorithm: Algorithm, class: u64, key_type: u64) -> Result<(), P11Error> {
    let want = match algorithm.kind() {
        KeyKind::Aes(_) => (CKO_SECRET_KEY, CKK_AES),
        KeyKind::Hmac(_) => (CKO_SECRET_KEY, CKK_GENERIC_SECRET),
        KeyKind::Ec(_) => (CKO_PRIVATE_KEY, CKK_EC),
        KeyKind::Rsa(_) => (CKO_PRIVATE_KEY, CKK_RSA),
    };
    if (class, key_type) == want {
        Ok(())
    } else {
        Err(CKR_TEMPLATE_INCONSISTENT.into())
    }
}

impl ClientConnection {
    fn now(&self) -> i64 {
        self.svc.clock.now_ms() / 1000
    }

    /// The import jobs of the session's ring the principal sees (logged in as the user,
    /// kms.importJobs.get on the ring, ACTIVE now).
    pub(super) fn jobs<'s>(&self, view: &'s View, ctx: &SlotCtx) -> Vec<JobView<'s>> {
        let Some(ring) = &ctx.ring else {
            return Vec::new();
        };
        if ctx.login != Some(false) {
            return Vec::new();
        }
        if !super::gate::sees_import_jobs(&view.state.policy, &ctx.principal, ring) {
            return Vec::new();
        }
        let now = self.now();
        view.state
            .catalog
            .import_jobs
            .iter()
            .filter(|j| &j.ring == ring && j.active_at(now))
            .map(|entry| JobView {
                entry,
                public: PublicValues::from_spki(&entry.public_key),
            })
            .collect()
    }

    /// The handles of the import job keys matching `template`.
    pub(super) fn find_jobs(
        &self,
        view: &View,
        ctx: &SlotCtx,
        template: &[Attribute],
    ) -> Vec<ObjectHandle> {
        let names: Vec<String> = self
            .jobs(view, ctx)
            .into_iter()
            .filter(|j| j.matches(template))
            .map(|j| j.entry.name.clone())
            .collect();
        let mut inst = self.inst.lock();
        names.iter().map(|n| inst.job_handle(n)).collect()
    }

    /// The job key a handle names, if it is one: `None` for other handles; `Err(invalid)`
    /// for a job the principal does not see now (expired, gone, or without
    /// kms.importJobs.get): the caller is told the object is absent, the audit log that the
    /// call was refused (design §4, §6), as for keys.
    pub(super) fn resolve_job<'s>(
        &self,
        view: &'s View,
        ctx: &SlotCtx,
        handle: ObjectHandle,
        invalid: u64,
    ) -> Option<Result<JobView<'s>, P11Error>> {
        // Maybe a handle an earlier keywardd gave (design §4).
        let _ = self.adopt(view, ctx, handle);
        let name = self.inst.lock().job(handle)?;
        if let Some(j) = self
            .jobs(view, ctx)
            .into_iter()
            .find(|j| j.entry.name == name)
        {
            return Some(Ok(j));
        }
        let expired = view
            .state
            .catalog
            .import_jobs
            .iter()
            .any(|j| j.name == name && !j.active_at(self.now()));
        self.deny(
            &ctx.principal,
            self.current,
            Some(name),
            invalid,
            if expired {
                "the import job is EXPIRED"
            } else {
                "the import job is not visible (kms.importJobs.get)"
            },
        );
        Some(Err(invalid.into()))
    }

    /// If `handle` names an import job's key: `Some(rv)` (audited) when the principal sees it
    /// (every call but C_GetAttributeValue, C_FindObjects and C_UnwrapKey is refused:
    /// the key only unwraps), `Some(invalid)` when not; `None` for other handles.
    pub(super) fn job_refusal(
        &self,
        session: SessionId,
        handle: ObjectHandle,
        action: &str,
        rv: u64,
        invalid: u64,
    ) -> Result<Option<P11Error>, P11Error> {
        self.adopt_in(session, handle)?;
        let Some(name) = self.inst.lock().job(handle) else {
            return Ok(None);
        };
        let slot = self.session(session)?.slot;
        let view = self.svc.view()?;
        let ctx = self.slot_ctx(slot, &view.state)?;
        match self.resolve_job(&view, &ctx, handle, invalid) {
            Some(Ok(_)) => {
                self.deny(
                    &ctx.principal,
                    action,
                    Some(name),
                    rv,
                    "an import job's key only unwraps (C_UnwrapKey)",
                );
                Ok(Some(P11Error::new(rv, "an import job's key only unwraps")))
            }
            _ => Ok(Some(P11Error::new(
                invalid,
                "the import job is not visible",
            ))),
        }
    }

    /// C_GetAttributeValue of a job key.
    pub(super) fn job_attributes(&self, job: &JobView<'_>, types: &[u64]) -> Vec<AttrResult> {
        types.iter().map(|t| job.attribute(*t)).collect()
    }

    /// C_UnwrapKey (PKCS#11 3.0 §5.14; BYOK, design §5).
    pub(super) fn unwrap_key(
        &mut self,
        session: SessionId,
        mechanism: &Mechanism,
        unwrapping_key: ObjectHandle,
        wrapped: &[u8],
        template: &[Attribute],
    ) -> Result<Pkcs11Response, P11Error> {
        let s = self.session(session)?;
        let (slot, rw) = (s.slot, s.rw);
        self.healthy()?;
        let view = self.svc.view()?;
        let ctx = self.slot_ctx(slot, &view.state)?;
        let job = match self.resolve_job(
            &view,
            &ctx,
            unwrapping_key,
            CKR_UNWRAPPING_KEY_HANDLE_INVALID,
        ) {
            Some(Ok(j)) => j.entry.clone(),
            // A job this instance saw but that is gone now (audited by resolve_job).
            Some(Err(rv)) => return Err(rv),
            None => {
                // A Keyward key (AES, useToDecrypt: super::unwrap).
                drop(view);
                return self.unwrap_with_key(session, mechanism, unwrapping_key, wrapped, template);
            }
        };
        let refuse = |this: &Self, rv: u64, why: &str| {
            this.deny(&ctx.principal, ACTION, Some(job.name.clone()), rv, why);
            Err(P11Error::new(rv, why.to_owned()))
        };
        if let Err(rv) = check_mechanism(mechanism, job.method) {
            return refuse(
                self,
                rv.rv(),
                &format!(
                    "mechanism {:#x} or its parameters do not fit import method {}",
                    mechanism.ty, job.method
                ),
            );
        }
        let read = || -> Result<_, P11Error> {
            let label = get_bytes(template, CKA_LABEL)?.ok_or(CKR_TEMPLATE_INCOMPLETE)?;
            let key_id = String::from_utf8(label).map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?;
            let class = get_ulong(template, CKA_CLASS)?.ok_or(CKR_TEMPLATE_INCOMPLETE)?;
            let key_type = get_ulong(template, CKA_KEY_TYPE)?.ok_or(CKR_TEMPLATE_INCOMPLETE)?;
            if get_bool(template, CKA_TOKEN)? == Some(false) {
                // Session objects are not Keyward keys; imports make token objects.
                return Err(CKR_TEMPLATE_INCONSISTENT.into());
            }
            if get_bool(template, CKA_EXTRACTABLE)? == Some(true) {
                return Err(CKR_ATTRIBUTE_VALUE_INVALID.into());
            }
            let spki = get_bytes(template, CKA_PUBLIC_KEY_INFO)?;
            let value_len = get_ulong(template, CKA_VALUE_LEN)?;
            let new_key_algorithm = algorithm_for_template(
                class,
                key_type,
                value_len,
                get_bool(template, CKA_SIGN)?,
                get_bool(template, CKA_DECRYPT)?,
                spki.as_deref(),
            );
            Ok((key_id, class, key_type, spki, new_key_algorithm))
        };
        let (key_id, class, key_type, spki, new_key_algorithm) = match read() {
            Ok(v) => v,
            Err(rv) => return refuse(self, rv.rv(), "template refused"),
        };
        let half = if class == CKO_PRIVATE_KEY {
            Half::Private
        } else {
            Half::Secret
        };
        let Some(admin) = self.svc.admin.get().cloned() else {
            return Err(CKR_FUNCTION_NOT_SUPPORTED.into());
        };
        if !rw {
            return Err(CKR_SESSION_READ_ONLY.into());
        }
        let caller = self.admin_caller(&ctx);
        let ring = job.ring.clone();
        let made = admin.lock().pkcs11_import(
            &caller,
            Pkcs11Import {
                ring: ring.clone(),
                job_id: job.id.clone(),
                method: job.method,
                key_id,
                new_key_algorithm: new_key_algorithm.map_err(u64::from),
                fits: |a, c, t| fits(a, c, t).map_err(u64::from),
                class_and_type: (class, key_type),
                public_key: spki,
                wrapped: wrapped.to_vec(),
            },
        );
        let (key, version) = made.map_err(|e| {
            tracing::debug!(rv = e.rv, error = %e, "C_UnwrapKey refused");
            // keywardctl's argument errors are template errors here.
            if e.rv == CKR_ARGUMENTS_BAD {
                CKR_TEMPLATE_INCONSISTENT
            } else {
                e.rv
            }
        })?;
        let h = self.inst.lock().handle(&ObjectKey { key, version, half });
        Ok(Pkcs11Response::Object(h))
    }
}

/// The algorithm a new key gets from a `C_UnwrapKey` template (design §5): AES by
/// `CKA_VALUE_LEN` (16 or 32 bytes, default 32), a generic secret as HMAC-SHA256, EC by the
/// public key's curve, RSA by its size, for decryption (OAEP-SHA1) when the template asks
/// `CKA_DECRYPT` and not `CKA_SIGN`, else for PKCS#1 v1.5 signing. Errors are CK_RVs.
fn algorithm_for_template(
    class: u64,
    key_type: u64,
    value_len: Option<u64>,
    sign: Option<bool>,
    decrypt: Option<bool>,
    spki: Option<&[u8]>,
) -> Result<Algorithm, P11Error> {
    use Algorithm as A;
    match (class, key_type) {
        (CKO_SECRET_KEY, CKK_AES) => match value_len {
            Some(16) => Ok(A::Aes128Gcm),
            Some(32) | None => Ok(A::Aes256Gcm),
            Some(_) => Err(CKR_ATTRIBUTE_VALUE_INVALID.into()),
        },
        (CKO_SECRET_KEY, CKK_GENERIC_SECRET) => match value_len {
            Some(32) | None => Ok(A::HmacSha256),
            Some(_) => Err(CKR_ATTRIBUTE_VALUE_INVALID.into()),
        },
        (CKO_PRIVATE_KEY, CKK_EC | CKK_RSA) => {
            let spki = spki.ok_or(CKR_TEMPLATE_INCOMPLETE)?;
            let kind = keyward_token::spki_kind(spki).map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?;
            let decrypting = decrypt == Some(true) && sign != Some(true);
            match (key_type, kind) {
                (CKK_EC, KeyKind::Ec(256)) => Ok(A::EcSignP256Sha256),
                (CKK_EC, KeyKind::Ec(384)) => Ok(A::EcSignP384Sha384),
                (CKK_RSA, KeyKind::Rsa(bits)) => match (bits, decrypting) {
                    (2048, false) => Ok(A::RsaSignPkcs1_2048Sha256),
                    (3072, false) => Ok(A::RsaSignPkcs1_3072Sha256),
                    (4096, false) => Ok(A::RsaSignPkcs1_4096Sha256),
                    (2048, true) => Ok(A::RsaDecryptOaep2048Sha1),
                    (3072, true) => Ok(A::RsaDecryptOaep3072Sha1),
                    (4096, true) => Ok(A::RsaDecryptOaep4096Sha1),
                    _ => Err(CKR_ATTRIBUTE_VALUE_INVALID.into()),
                },
                _ => Err(CKR_TEMPLATE_INCONSISTENT.into()),
            }
        }
        _ => Err(CKR_TEMPLATE_INCONSISTENT.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_wire::pkcs11::RsaAesKeyWrapParams;

    fn oaep(hash: u64, mgf: u64) -> OaepParams {
        OaepParams {
            hash,
            mgf,
            source: CKZ_DATA_SPECIFIED,
            source_data: Blob::default(),
        }
    }

    #[test]
    fn mechanisms_must_fit_the_method() {
        let m = ImportMethod::RsaOaep3072Sha1Aes256;
        let wrap = |bits, p| Mechanism {
            ty: CKM_RSA_AES_KEY_WRAP,
            params: MechParams::RsaAesKeyWrap(RsaAesKeyWrapParams {
                aes_key_bits: bits,
                oaep: p,
            }),
        };
        assert_eq!(
            check_mechanism(&wrap(256, oaep(CKM_SHA_1, CKG_MGF1_SHA1)), m),
            Ok(())
        );
        assert_eq!(
            check_mechanism(&wrap(128, oaep(CKM_SHA_1, CKG_MGF1_SHA1)), m),
            Err(CKR_MECHANISM_PARAM_INVALID.into())
        );
        assert_eq!(
            check_mechanism(&wrap(256, oaep(CKM_SHA256, CKG_MGF1_SHA256)), m),
            Err(CKR_MECHANISM_PARAM_INVALID.into())
        );
        let direct = Mechanism {
            ty: CKM_RSA_PKCS_OAEP,
            params: MechParams::Oaep(oaep(CKM_SHA_1, CKG_MGF1_SHA1)),
        };
        assert_eq!(
            check_mechanism(&direct, m),
            Err(CKR_MECHANISM_INVALID.into())
        );
        let direct256 = Mechanism {
            ty: CKM_RSA_PKCS_OAEP,
            params: MechParams::Oaep(oaep(CKM_SHA256, CKG_MGF1_SHA256)),
        };
        assert_eq!(
            check_mechanism(&direct256, ImportMethod::RsaOaep3072Sha256),
            Ok(())
        );
        assert_eq!(fits(Algorithm::Aes256Gcm, CKO_SECRET_KEY, CKK_AES), Ok(()));
        assert_eq!(
            fits(Algorithm::EcSignP256Sha256, CKO_SECRET_KEY, CKK_AES),
            Err(CKR_TEMPLATE_INCONSISTENT.into())
        );
    }

    #[test]
    fn template_algorithms() {
        assert_eq!(
            algorithm_for_template(4, 0x1F, Some(16), None, None, None),
            Ok(Algorithm::Aes128Gcm)
        );
        assert_eq!(
            algorithm_for_template(4, 0x1F, None, None, None, None),
            Ok(Algorithm::Aes256Gcm)
        );
        assert_eq!(
            algorithm_for_template(4, 0x1F, Some(24), None, None, None),
            Err(CKR_ATTRIBUTE_VALUE_INVALID.into())
        );
        // A private key without its public key is incomplete.
        assert_eq!(
            algorithm_for_template(3, 3, None, Some(true), None, None),
            Err(CKR_TEMPLATE_INCOMPLETE.into())
        );
        let n = vec![0xC3u8; 384];
        let der = keyward_token::public_key::rsa_spki_der(&n, &[1, 0, 1]).unwrap();
        assert_eq!(
            algorithm_for_template(3, 0, None, None, Some(true), Some(&der)),
            Ok(Algorithm::RsaDecryptOaep3072Sha1)
        );
        assert_eq!(
            algorithm_for_template(3, 0, None, Some(true), None, Some(&der)),
            Ok(Algorithm::RsaSignPkcs1_3072Sha256)
        );
        // An EC template with an RSA public key.
        assert_eq!(
            algorithm_for_template(3, 3, None, Some(true), None, Some(&der)),
            Err(CKR_TEMPLATE_INCONSISTENT.into())
        );
    }
}
