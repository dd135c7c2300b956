//! Key export (issue 7, design §4's `C_WrapKey` row): an exportable key (`CKA_EXTRACTABLE`
//! TRUE, still sensitive) leaves the token only wrapped, by a wrapping key held in the token,
//! both addressed by `CKA_ID`. A key made without `CKA_EXTRACTABLE` is refused by the token
//! itself (`CKR_KEY_UNEXTRACTABLE`), which the error keeps.
//!
//! `AesKeyWrapPad` is RFC 5649 (OpenSSL's `id-aes256-wrap-pad`, Cloud KMS) whatever the
//! token calls it: the mechanism learnt at open (kwp.rs) wraps, `CKM_AES_KEY_WRAP_KWP` by a
//! raw call on NSS softokn (whose own `CKM_AES_KEY_WRAP_PAD` gives RFC 3394 of PKCS#7-padded
//! input, without an error); a token without RFC 5649 refuses it by name.

use crate::capabilities::OaepHash;
use crate::error::{Result, TokenError};
use crate::keys::find_one;
use crate::kwp::Rfc5649;
use crate::raw::wrap_key_no_param;
use crate::token::Token;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::ObjectClass;
use keyward_wire::ck::CKM_AES_KEY_WRAP_KWP;

/// How to wrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrapMechanism {
    /// `CKM_AES_KEY_WRAP` (RFC 3394) with an AES key, default IV.
    AesKeyWrap,
    /// `CKM_AES_KEY_WRAP_PAD` (RFC 5649) with an AES key, default IV.
    AesKeyWrapPad,
    /// `CKM_RSA_PKCS_OAEP` (empty label) with an RSA public key.
    RsaOaep(OaepHash),
}

impl WrapMechanism {
    fn mechanism(self) -> Mechanism<'static> {
        match self {
            WrapMechanism::AesKeyWrap => Mechanism::AesKeyWrap,
            WrapMechanism::AesKeyWrapPad => Mechanism::AesKeyWrapPad,
            WrapMechanism::RsaOaep(h) => h.mechanism(),
        }
    }

    fn mechanism_type(self) -> MechanismType {
        match self {
            WrapMechanism::AesKeyWrap => MechanismType::AES_KEY_WRAP,
            WrapMechanism::AesKeyWrapPad => MechanismType::AES_KEY_WRAP_PAD,
            WrapMechanism::RsaOaep(_) => MechanismType::RSA_PKCS_OAEP,
        }
    }

    fn wrapping_class(self) -> (ObjectClass, &'static str) {
        match self {
            WrapMechanism::RsaOaep(_) => (ObjectClass::PUBLIC_KEY, "public key"),
            _ => (ObjectClass::SECRET_KEY, "secret key"),
        }
    }
}

impl Token {
    /// Wraps the key `key_id` (its private key if `private`, else its secret key) with the
    /// wrapping key `wrapping_id`. The token decides whether the key may leave it.
    pub fn wrap_key(
        &self,
        mechanism: WrapMechanism,
        wrapping_id: &[u8],
        key_id: &[u8],
        private: bool,
    ) -> Result<Vec<u8>> {
        let m = mechanism.mechanism_type();
        let rfc5649 = self.mechanisms().rfc5649();
        if mechanism == WrapMechanism::AesKeyWrapPad && rfc5649.is_none() {
            return Err(TokenError::MechanismUnavailable {
                mechanism: format!(
                    "RFC 5649 AES key wrap with padding ({})",
                    self.mechanisms()
                        .rfc5649_probe()
                        .reason()
                        .unwrap_or_default()
                ),
            });
        }
        if mechanism != WrapMechanism::AesKeyWrapPad && !self.mechanisms().has(m) {
            return Err(TokenError::MechanismUnavailable {
                mechanism: m.to_string(),
            });
        }
        if let WrapMechanism::RsaOaep(h) = mechanism {
            if !self.mechanisms().oaep(h) {
                return Err(TokenError::MechanismParamUnsupported {
                    mechanism: h.mechanism_name().to_owned(),
                });
            }
        }
        let (wclass, wwhat) = mechanism.wrapping_class();
        let (kclass, kwhat) = if private {
            (ObjectClass::PRIVATE_KEY, "private key")
        } else {
            (ObjectClass::SECRET_KEY, "secret key")
        };
        self.session(|s| {
            let wrapping = find_one(s, wrapping_id, wclass, wwhat)?;
            let key = find_one(s, key_id, kclass, kwhat)?;
            if mechanism == WrapMechanism::AesKeyWrapPad && rfc5649 == Some(Rfc5649::Kwp) {
                return Ok(wrap_key_no_param(
                    self.raw(),
                    s,
                    CKM_AES_KEY_WRAP_KWP,
                    wrapping,
                    key,
                )?);
            }
            Ok(s.wrap_key(&mechanism.mechanism(), wrapping, key)?)
        })
    }
}
