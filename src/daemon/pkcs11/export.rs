//! Key export through the module (issue 7, design §4's `C_WrapKey` row): a key created
//! `--exportable` (`CKA_EXTRACTABLE` TRUE in the token, still sensitive) leaves the token only
//! wrapped, by a wrapping key the caller sees.
//!
//! - The wrapping key: visible (else `CKR_WRAPPING_KEY_HANDLE_INVALID`), ENABLED, allowed to
//!   wrap (`CKA_WRAP`), and the caller holds useToEncrypt on it (else
//!   `CKR_WRAPPING_KEY_HANDLE_INVALID`, audited). Mechanisms: `CKM_AES_KEY_WRAP(_PAD)` with
//!   an AES key (default IV only), `CKM_RSA_PKCS_OAEP` with an RSA public key (no label).
//! - The key: visible (else `CKR_KEY_HANDLE_INVALID`), ENABLED, a secret or private key (a
//!   public key is `CKR_KEY_NOT_WRAPPABLE`), and the caller holds
//!   kms.cryptoKeyVersions.exportKeyMaterial on it (else `CKR_KEY_UNEXTRACTABLE`, audited).
//!   Whether its material may leave is then the token's decision: a key made without
//!   `CKA_EXTRACTABLE` is refused with the token's own `CKR_KEY_UNEXTRACTABLE`.
//! - Every export, allowed or refused, is audited at warning level
//!   ([`crate::audit::WARNING_ACTIONS`]) and logged as a warning.
//! - `keywardctl key export` (the client socket, `super::ctl`) runs the same gate
//!   (`export_gated`) on the keys' primary (or named) versions, audited as `key.export`.

use super::ck::*;
use super::gate::{self, Denial};
use super::objects::{Half, ObjectView};
use super::P11Error;
use super::{ClientConnection, View};
use crate::audit::Outcome;
use crate::policy::Principal;
use keyward_token::{OaepHash, WrapMechanism};
use keyward_wire::pkcs11::{Blob, MechParams, Mechanism, ObjectHandle, Pkcs11Response, SessionId};

const ACTION: &str = "C_WrapKey";
/// The default IVs of RFC 3394 and RFC 5649.
const KW_IV: [u8; 8] = [0xA6; 8];
const KWP_IV: [u8; 4] = [0xA6, 0x59, 0x59, 0xA6];

/// The wrapping mechanism asked for, checked.
fn wrap_mechanism(m: &Mechanism) -> Result<WrapMechanism, P11Error> {
    let iv_ok = |default: &[u8]| match &m.params {
        MechParams::None => true,
        MechParams::Bytes(b) => b.as_slice().is_empty() || b.as_slice() == default,
        _ => false,
    };
    match m.ty {
        CKM_AES_KEY_WRAP if iv_ok(&KW_IV) => Ok(WrapMechanism::AesKeyWrap),
        CKM_AES_KEY_WRAP_PAD if iv_ok(&KWP_IV) => Ok(WrapMechanism::AesKeyWrapPad),
        CKM_AES_KEY_WRAP | CKM_AES_KEY_WRAP_PAD => Err(CKR_MECHANISM_PARAM_INVALID.into()),
        CKM_RSA_PKCS_OAEP => {
            let MechParams::Oaep(p) = &m.params else {
                return Err(CKR_MECHANISM_PARAM_INVALID.into());
            };
            let hash = match (p.hash, p.mgf) {
                (CKM_SHA_1, CKG_MGF1_SHA1) => OaepHash::Sha1,
                (CKM_SHA256, CKG_MGF1_SHA256) => OaepHash::Sha256,
                _ => return Err(CKR_MECHANISM_PARAM_INVALID.into()),
            };
            if p.source > CKZ_DATA_SPECIFIED || !p.source_data.as_slice().is_empty() {
                return Err(CKR_MECHANISM_PARAM_INVALID.into());
            }
            Ok(WrapMechanism::RsaOaep(hash))
        }
        _ => Err(CKR_MECHANISM_INVALID.into()),
    }
}

impl ClientConnection {
    /// C_WrapKey (PKCS#11 3.0 §5.14).
    pub(super) fn wrap_key(
        &mut self,
        session: SessionId,
        mechanism: &Mechanism,
        wrapping: ObjectHandle,
        key: ObjectHandle,
    ) -> Result<Pkcs11Response, P11Error> {
        let slot = self.session(session)?.slot;
        self.healthy()?;
        let view: View = self.svc.view()?;
        let ctx = self.slot_ctx(slot, &view.state)?;
        let wobj = self.resolve(&view, &ctx, wrapping, CKR_WRAPPING_KEY_HANDLE_INVALID)?;
        let kobj = self.resolve(&view, &ctx, key, CKR_KEY_HANDLE_INVALID)?;
        let refuse = |this: &Self, rv: u64, why: &str| {
            this.deny(
                &ctx.principal,
                ACTION,
                Some(kobj.id.version_name()),
                rv,
                why,
            );
            tracing::warn!(key = %kobj.id.version_name(), rv, why, "key export refused");
            Err(P11Error::new(rv, why.to_owned()))
        };
        if ctx.login == Some(true) {
            // An SO session sees public objects only.
            return refuse(self, CKR_KEY_HANDLE_INVALID, "SO session");
        }
        let m = match wrap_mechanism(mechanism) {
            Ok(m) => m,
            Err(rv) => {
                return refuse(
                    self,
                    rv.rv(),
                    &format!("wrapping mechanism {:#x} not offered", mechanism.ty),
                )
            }
        };
        self.export_gated(&view, &ctx.principal, ACTION, m, &wobj, &kobj)
            .map(|blob| Pkcs11Response::Data(Blob::new(blob)))
            .map_err(|(rv, why)| P11Error::new(rv, why))
    }

    /// The export gate and the token's wrap, shared by `C_WrapKey` and `keywardctl key
    /// export`: every refusal is audited (warning level) with its reason, which the error
    /// carries with the CK_RV.
    pub(super) fn export_gated(
        &self,
        view: &View,
        principal: &Principal,
        action: &'static str,
        m: WrapMechanism,
        wobj: &ObjectView<'_>,
        kobj: &ObjectView<'_>,
    ) -> Result<Vec<u8>, (u64, String)> {
        let resource = Some(kobj.id.version_name());
        let refuse_with = |d: Denial| {
            tracing::warn!(key = %kobj.id.version_name(), rv = d.rv, why = %d.why, "key export refused");
            let why = d.why.clone();
            Err((
                self.refused(principal, action, resource.clone(), d).rv(),
                why,
            ))
        };
        let refuse = |rv: u64, why: &str| refuse_with(Denial::new(rv, why));
        // The wrapping key: an AES secret key for AES-KW(P), an RSA public key for OAEP,
        // ENABLED, with CKA_WRAP, and useToEncrypt.
        let wkey_ok = match m {
            WrapMechanism::RsaOaep(_) => wobj.id.half == Half::Public && wobj.key_is_rsa(),
            _ => wobj.id.half == Half::Secret && wobj.key_is_aes(),
        };
        if !wkey_ok {
            return refuse(
                CKR_WRAPPING_KEY_TYPE_INCONSISTENT,
                "the wrapping key does not suit the mechanism",
            );
        }
        if !wobj.enabled() || !wobj.flags().4 {
            return refuse(
                CKR_WRAPPING_KEY_HANDLE_INVALID,
                "the wrapping key is not ENABLED or has no CKA_WRAP",
            );
        }
        let policy = &view.state.policy;
        if let Err(d) = gate::wrapping_gate(policy, principal, &wobj.id.key) {
            return refuse_with(d);
        }
        // The key: a secret or private key, ENABLED, and exportKeyMaterial.
        if kobj.id.half == Half::Public {
            return refuse(CKR_KEY_NOT_WRAPPABLE, "a public key is not exported");
        }
        if !kobj.enabled() {
            return refuse(CKR_KEY_HANDLE_INVALID, "the version is not ENABLED");
        }
        let d = match gate::export_gate(policy, principal, &kobj.id.key) {
            Ok(grant) => grant,
            Err(d) => return refuse_with(d),
        };
        let private = kobj.id.half == Half::Private;
        let wname = wobj.id.version_name();
        match self
            .svc
            .token
            .wrap_key(m, wobj.token_id(), kobj.token_id(), private)
        {
            Ok(blob) => {
                let granted = d
                    .granted_by
                    .map(|b| format!(", granted by {b}"))
                    .unwrap_or_default();
                tracing::warn!(
                    key = %kobj.id.version_name(),
                    wrapping = %wname,
                    principal = %principal.member,
                    "key material exported (wrapped)"
                );
                self.record(
                    principal,
                    action,
                    resource.clone(),
                    Outcome::Allowed,
                    0,
                    Some(format!(
                        "key material exported, wrapped by {wname} ({m:?}, {} bytes){granted}",
                        blob.len()
                    )),
                )
                .map_err(|e| {
                    let rv = e.rv();
                    let why = if rv == crate::audit::coalesce::CKR_DEVICE_MEMORY {
                        "refused: your uid is over its audit rate"
                    } else {
                        "the audit log is unavailable: refused"
                    };
                    (rv, why.to_string())
                })?;
                Ok(blob)
            }
            Err(e) => {
                let rv = e.ck_rv();
                tracing::warn!(key = %kobj.id.version_name(), error = %e, "key export refused by the token");
                let _ = self.record(
                    principal,
                    action,
                    resource,
                    if rv == CKR_KEY_UNEXTRACTABLE {
                        Outcome::Denied
                    } else {
                        Outcome::Error
                    },
                    rv,
                    Some(format!("the token refused: {e}")),
                );
                let rv = if rv == CKR_KEY_HANDLE_INVALID {
                    CKR_DEVICE_ERROR
                } else {
                    rv
                };
                Err((rv, format!("the token refused: {e}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_wire::pkcs11::OaepParams;

    #[test]
    fn wrap_mechanisms() {
        let m = |ty, params| Mechanism { ty, params };
        assert_eq!(
            wrap_mechanism(&m(CKM_AES_KEY_WRAP_PAD, MechParams::None)),
            Ok(WrapMechanism::AesKeyWrapPad)
        );
        assert_eq!(
            wrap_mechanism(&m(
                CKM_AES_KEY_WRAP_PAD,
                MechParams::Bytes(Blob::new(KWP_IV.to_vec()))
            )),
            Ok(WrapMechanism::AesKeyWrapPad)
        );
        assert_eq!(
            wrap_mechanism(&m(
                CKM_AES_KEY_WRAP,
                MechParams::Bytes(Blob::new(vec![1; 8]))
            )),
            Err(CKR_MECHANISM_PARAM_INVALID.into())
        );
        let oaep = |hash, mgf| {
            MechParams::Oaep(OaepParams {
                hash,
                mgf,
                source: CKZ_DATA_SPECIFIED,
                source_data: Blob::default(),
            })
        };
        assert_eq!(
            wrap_mechanism(&m(CKM_RSA_PKCS_OAEP, oaep(CKM_SHA_1, CKG_MGF1_SHA1))),
            Ok(WrapMechanism::RsaOaep(OaepHash::Sha1))
        );
        assert_eq!(
            wrap_mechanism(&m(CKM_RSA_PKCS_OAEP, oaep(CKM_SHA_1, CKG_MGF1_SHA256))),
            Err(CKR_MECHANISM_PARAM_INVALID.into())
        );
        assert_eq!(
            wrap_mechanism(&m(CKM_RSA_PKCS, MechParams::None)),
            Err(CKR_MECHANISM_INVALID.into())
        );
    }
}
