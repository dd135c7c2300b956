//! Key export (issue 7, design §4's `C_WrapKey` row): an exportable key (`CKA_EXTRACTABLE`
//! TRUE, still sensitive) leaves the token only wrapped, by a wrapping key held in the token,
//! both addressed by `CKA_ID`. A key made without `CKA_EXTRACTABLE` is refused by the token
//! itself (`CKR_KEY_UNEXTRACTABLE`), which the error keeps.

use crate::capabilities::OaepHash;
use crate::error::{Result, TokenError};
use crate::keys::find_one;
use crate::token::Token;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::ObjectClass;

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
        if !self.mechanisms().has(m) {
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
            Ok(s.wrap_key(&mechanism.mechanism(), wrapping, key)?)
        })
    }
}
