//! `C_UnwrapKey` with a Keyward AES key (design §4 "No side doors", issue 14 item 9).
//!
//! - The unwrapping key: an AES key made through the module whose `CKA_UNWRAP` is TRUE
//!   (keywardctl's AES-GCM keys and keys without the flag: `CKR_MECHANISM_INVALID`, as a
//!   mechanism the key's flags forbid), ENABLED, seen by the principal; the principal holds
//!   useToDecrypt on it, else `CKR_UNWRAPPING_KEY_HANDLE_INVALID` (audited): unwrapping is
//!   decryption of the blob into a key.
//! - Mechanisms: `CKM_AES_KEY_WRAP` (RFC 3394) and `CKM_AES_KEY_WRAP_PAD` (RFC 5649), without
//!   parameters; run by the token, never composed here (keywardd would see the material).
//! - The new key: `CKO_SECRET_KEY` of `CKK_AES` (16, 24, 32 bytes) or `CKK_GENERIC_SECRET`
//!   (32 to 128 bytes) of the wrapped key's length: the blob's less 8 bytes, or
//!   `CKA_VALUE_LEN` if the template gives one that fits the blob (with padding up to 7 bytes
//!   fewer; else `CKR_TEMPLATE_INCONSISTENT`); a blob of another length is
//!   `CKR_WRAPPED_KEY_LEN_RANGE`. Private keys are not unwrapped.
//!   A session must be logged in as the user (`CKR_USER_NOT_LOGGED_IN`, audited).
//! - Into a session object (`CKA_TOKEN` FALSE or absent): the module instance's, as any
//!   session object. Into the ring (`CKA_TOKEN=TRUE`): a plaintext import (the blob's maker
//!   knew the material): `allow_plaintext_import` on the ring (else
//!   `CKR_TEMPLATE_INCONSISTENT`) and kms.cryptoKeys.create (else `CKR_TOKEN_WRITE_PROTECTED`),
//!   with the custody, label and ID rules of every creation; audited as such.
//! - Import jobs' keys unwrap through [`super::byok`] (BYOK, design §5).

use super::ck::*;
use super::gate::{self, Denial};
use super::objects::Half;
use super::session_objects::wants_session_object;
use super::ClientConnection;
use super::{P11Error, Ulong};
use crate::admin::generic::UnwrapFrom;
use crate::audit::Outcome;
use keyward_token::GenericKind;
use keyward_token::MechanismType;
use keyward_wire::pkcs11::{
    AttrValue, Attribute, MechParams, Mechanism, ObjectHandle, Pkcs11Response, SessionId,
};

const ACTION: &str = "C_UnwrapKey";

/// The AES key-wrap overhead (one 64-bit block, RFC 3394 and RFC 5649).
const KW_OVERHEAD: usize = 8;

fn ulong(t: &[Attribute], ty: u64) -> Result<Option<Ulong>, P11Error> {
    match t.iter().rev().find(|a| a.ty == ty).map(|a| &a.value) {
        None => Ok(None),
        Some(AttrValue::Ulong(v)) => Ok(Some(*v)),
        Some(_) => Err(CKR_ATTRIBUTE_VALUE_INVALID.into()),
    }
}

/// The kind of key a template and a blob of `wrapped` bytes make: (kind, `CKA_KEY_TYPE`).
/// `CKA_VALUE_LEN`, if given, must fit the blob (RFC 3394: its length less 8 bytes; RFC 5649
/// with padding, `pad`: up to 7 bytes fewer); else the key has the blob's length less 8.
fn target_kind(
    template: &[Attribute],
    wrapped: usize,
    pad: bool,
) -> Result<(GenericKind, u64), P11Error> {
    match ulong(template, CKA_CLASS)? {
        Some(CKO_SECRET_KEY) => {}
        None => return Err(CKR_TEMPLATE_INCOMPLETE.into()),
        // Private keys (plaintext private keys are not taken, design §4), anything else.
        Some(_) => return Err(CKR_TEMPLATE_INCONSISTENT.into()),
    }
    let full = wrapped
        .checked_sub(KW_OVERHEAD)
        .filter(|_| wrapped % KW_OVERHEAD == 0)
        .ok_or(CKR_WRAPPED_KEY_LEN_RANGE)?;
    let len = match ulong(template, CKA_VALUE_LEN)? {
        None => full,
        Some(n) => {
            let n = usize::try_from(n).map_err(|_| CKR_TEMPLATE_INCONSISTENT)?;
            let fits = if pad {
                n <= full && n + KW_OVERHEAD > full
            } else {
                n == full
            };
            if !fits {
                return Err(CKR_TEMPLATE_INCONSISTENT.into());
            }
            n
        }
    };
    let key_type = ulong(template, CKA_KEY_TYPE)?.ok_or(CKR_TEMPLATE_INCOMPLETE)?;
    let kind = match key_type {
        CKK_AES => GenericKind::Aes(len),
        CKK_GENERIC_SECRET => GenericKind::Secret(len),
        _ => return Err(CKR_TEMPLATE_INCONSISTENT.into()),
    };
    kind.check().map_err(|_| CKR_WRAPPED_KEY_LEN_RANGE)?;
    Ok((kind, key_type))
}

impl ClientConnection {
    /// C_UnwrapKey (PKCS#11 3.0 §5.18) with a Keyward key as the unwrapping key.
    pub(super) fn unwrap_with_key(
        &mut self,
        session: SessionId,
        mechanism: &Mechanism,
        unwrapping_key: ObjectHandle,
        wrapped: &[u8],
        template: &[Attribute],
    ) -> Result<Pkcs11Response, P11Error> {
        let slot = self.session(session)?.slot;
        self.healthy()?;
        let view = self.svc.view()?;
        let ctx = self.slot_ctx(slot, &view.state)?;
        let obj = self
            .resolve(
                &view,
                &ctx,
                unwrapping_key,
                CKR_UNWRAPPING_KEY_HANDLE_INVALID,
            )
            .map_err(|_| CKR_UNWRAPPING_KEY_HANDLE_INVALID)?;
        let name = obj.id.version_name();
        let refuse = |this: &Self, rv: u64, why: &str| {
            Err(this.refused(
                &ctx.principal,
                ACTION,
                Some(name.clone()),
                Denial::new(rv, why),
            ))
        };
        // No IV, or an empty one: the default IV of RFC 3394 / RFC 5649.
        let default_iv = match &mechanism.params {
            MechParams::None => true,
            MechParams::Bytes(b) => b.as_slice().is_empty(),
            _ => false,
        };
        let (pad, token_mech) = match (mechanism.ty, default_iv) {
            (CKM_AES_KEY_WRAP, true) => (false, MechanismType::AES_KEY_WRAP),
            (CKM_AES_KEY_WRAP_PAD, true) => (true, MechanismType::AES_KEY_WRAP_PAD),
            (CKM_AES_KEY_WRAP | CKM_AES_KEY_WRAP_PAD, false) => {
                return refuse(
                    self,
                    CKR_MECHANISM_PARAM_INVALID,
                    "AES key wrap takes no parameter (the default IV)",
                )
            }
            _ => {
                return refuse(
                    self,
                    CKR_MECHANISM_INVALID,
                    &format!(
                        "mechanism {:#x} does not unwrap with a Keyward key",
                        mechanism.ty
                    ),
                )
            }
        };
        let flags = obj.flags();
        let unwrapper =
            obj.generic.is_some() && obj.key_is_aes() && obj.id.half == Half::Secret && flags.5;
        if !unwrapper || !self.svc.token.mechanisms().has(token_mech) {
            return refuse(
                self,
                CKR_MECHANISM_INVALID,
                "only AES keys made through the module with CKA_UNWRAP unwrap",
            );
        }
        if !obj.enabled() {
            return refuse(
                self,
                CKR_UNWRAPPING_KEY_HANDLE_INVALID,
                "version not ENABLED",
            );
        }
        if ctx.login == Some(true) {
            return refuse(self, CKR_UNWRAPPING_KEY_HANDLE_INVALID, "SO session");
        }
        let d = match gate::unwrap_gate(&view.state.policy, &ctx.principal, &obj.id.key) {
            Ok(grant) => grant,
            Err(d) => return Err(self.refused(&ctx.principal, ACTION, Some(name.clone()), d)),
        };
        let unwrapping_id = obj.token_id().to_vec();
        let granted = d.granted_by.map(|b| format!("granted by {b}; unwrap"));
        let (kind, key_type) = match target_kind(template, wrapped.len(), pad) {
            Ok(k) => k,
            Err(rv) => return refuse(self, rv.rv(), "unwrap template or blob length refused"),
        };
        let principal = ctx.principal.clone();
        drop(view);
        // The length is the blob's (checked above); the token is not told it.
        let template: Vec<Attribute> = template
            .iter()
            .filter(|a| a.ty != CKA_VALUE_LEN)
            .cloned()
            .collect();
        let template = template.as_slice();
        self.login_gate(session, ACTION)?;
        self.record(
            &principal,
            ACTION,
            Some(name.clone()),
            Outcome::Allowed,
            0,
            granted,
        )?;
        if wants_session_object(template) {
            self.unwrap_session_object(
                session,
                template,
                (kind, key_type),
                &unwrapping_id,
                pad,
                wrapped,
                &name,
            )
        } else {
            let from = UnwrapFrom {
                unwrapping_id,
                pad,
                wrapped: wrapped.to_vec(),
            };
            self.unwrap_into_ring(session, template, kind, from, &name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(ty: u64, v: u64) -> Attribute {
        Attribute {
            ty,
            value: AttrValue::Ulong(v),
        }
    }

    #[test]
    fn kinds_from_template_and_blob() {
        let aes = [u(CKA_CLASS, CKO_SECRET_KEY), u(CKA_KEY_TYPE, CKK_AES)];
        let mac = [
            u(CKA_CLASS, CKO_SECRET_KEY),
            u(CKA_KEY_TYPE, CKK_GENERIC_SECRET),
        ];
        assert_eq!(
            target_kind(&aes, 40, false),
            Ok((GenericKind::Aes(32), CKK_AES))
        );
        assert_eq!(
            target_kind(&mac, 72, true),
            Ok((GenericKind::Secret(64), CKK_GENERIC_SECRET))
        );
        assert_eq!(
            target_kind(&aes, 72, true),
            Err(CKR_WRAPPED_KEY_LEN_RANGE.into())
        );
        assert_eq!(
            target_kind(&aes, 4, true),
            Err(CKR_WRAPPED_KEY_LEN_RANGE.into())
        );
        assert_eq!(
            target_kind(&aes, 41, true),
            Err(CKR_WRAPPED_KEY_LEN_RANGE.into())
        );
        assert_eq!(
            target_kind(&mac, 24, true),
            Err(CKR_WRAPPED_KEY_LEN_RANGE.into())
        );
        assert_eq!(
            target_kind(&[u(CKA_CLASS, CKO_PRIVATE_KEY)], 40, true),
            Err(CKR_TEMPLATE_INCONSISTENT.into())
        );
        assert_eq!(
            target_kind(&[], 40, true),
            Err(CKR_TEMPLATE_INCOMPLETE.into())
        );
        // CKA_VALUE_LEN must fit the blob: exactly without padding, within 7 bytes with.
        let with_len = |n| {
            let mut t = mac.to_vec();
            t.push(u(CKA_VALUE_LEN, n));
            t
        };
        assert_eq!(
            target_kind(&with_len(60), 72, true),
            Ok((GenericKind::Secret(60), CKK_GENERIC_SECRET))
        );
        assert_eq!(
            target_kind(&with_len(64), 72, false),
            Ok((GenericKind::Secret(64), CKK_GENERIC_SECRET))
        );
        for (n, pad) in [(60, false), (56, true), (65, true)] {
            assert_eq!(
                target_kind(&with_len(n), 72, pad),
                Err(CKR_TEMPLATE_INCONSISTENT.into()),
                "{n} {pad}"
            );
        }
    }
}
