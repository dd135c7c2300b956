//! Mechanism parameters: which C structure each mechanism takes, and which `CK_GCM_PARAMS`
//! layout a client used (design §4). The ffi layer reads the structure this module names and
//! hands back a typed [`keyward_wire::pkcs11::MechParams`].

use crate::error::Error;
use keyward_wire::pkcs11::GcmLayout;

/// The C structure behind a mechanism's `pParameter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// No parameter (`ulParameterLen` must be 0).
    None,
    /// Plain bytes (an IV, optional or not).
    Bytes,
    /// `CK_GCM_PARAMS`, either layout.
    Gcm,
    /// `CK_AES_CTR_PARAMS`.
    Ctr,
    /// `CK_RSA_PKCS_OAEP_PARAMS`.
    Oaep,
    /// `CK_RSA_PKCS_PSS_PARAMS`.
    Pss,
    /// `CK_RSA_AES_KEY_WRAP_PARAMS`.
    RsaAesKeyWrap,
    /// `CK_ECDH1_DERIVE_PARAMS`.
    Ecdh1Derive,
    /// `CK_MAC_GENERAL_PARAMS` (one `CK_ULONG`).
    MacGeneral,
    /// A mechanism the module does not know: forwarded only without parameters.
    Unknown,
}

/// The parameter structure of mechanism `ty`.
pub fn param_kind(ty: u64) -> ParamKind {
    match ty {
        // Key generation, raw and hashed RSA PKCS#1 v1.5, ECDSA, AES-ECB, digests, HMAC.
        0x0
        | 0x1
        | 0x5
        | 0x6
        | 0x40
        | 0x41
        | 0x42
        | 0x46
        | 0x1040..=0x1046
        | 0x1080
        | 0x1081
        | 0x220
        | 0x250
        | 0x255
        | 0x260
        | 0x270
        | 0x221
        | 0x251
        | 0x256
        | 0x261
        | 0x271
        | 0x350 => ParamKind::None,
        // CKM_AES_CBC, CKM_AES_CBC_PAD, CKM_AES_KEY_WRAP, CKM_AES_KEY_WRAP_PAD,
        // CKM_AES_KEY_WRAP_KWP.
        0x1082 | 0x1085 | 0x2109 | 0x210A | 0x210B => ParamKind::Bytes,
        0x1087 => ParamKind::Gcm,
        0x1086 => ParamKind::Ctr,
        0x9 => ParamKind::Oaep,
        // CKM_RSA_PKCS_PSS, CKM_SHA1_RSA_PKCS_PSS, CKM_SHA256/384/512_RSA_PKCS_PSS,
        // CKM_SHA224_RSA_PKCS_PSS.
        0xD | 0xE | 0x43 | 0x44 | 0x45 | 0x47 => ParamKind::Pss,
        0x1054 => ParamKind::RsaAesKeyWrap,
        0x1050 => ParamKind::Ecdh1Derive,
        // CKM_SHA256_HMAC_GENERAL, CKM_SHA384_HMAC_GENERAL, CKM_SHA512_HMAC_GENERAL.
        0x252 | 0x262 | 0x272 => ParamKind::MacGeneral,
        _ => ParamKind::Unknown,
    }
}

/// Tells the two `CK_GCM_PARAMS` layouts apart by `ulParameterLen`: 3 pointers-or-ulongs
/// plus 3 ulongs with `ulIvBits`, one ulong fewer without (48 and 40 bytes on 64-bit Linux,
/// 24 and 20 on 32-bit).
pub fn gcm_layout(len: usize) -> Result<GcmLayout, Error> {
    let ptr = std::mem::size_of::<*const u8>();
    let ulong = crate::attr::ULONG_SIZE;
    let without = 2 * ptr + 3 * ulong;
    let with = without + ulong;
    if len == with {
        Ok(GcmLayout::WithIvBits)
    } else if len == without {
        Ok(GcmLayout::WithoutIvBits)
    } else {
        Err(Error::MechanismParamInvalid(
            "CK_GCM_PARAMS of neither known size",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcm_layouts_on_this_platform() {
        if cfg!(all(target_pointer_width = "64", not(windows))) {
            assert_eq!(gcm_layout(48).unwrap(), GcmLayout::WithIvBits);
            assert_eq!(gcm_layout(40).unwrap(), GcmLayout::WithoutIvBits);
        }
        assert_eq!(
            gcm_layout(std::mem::size_of::<pkcs11_sys::CK_GCM_PARAMS>()).unwrap(),
            GcmLayout::WithIvBits
        );
        assert!(gcm_layout(0).is_err());
        assert!(gcm_layout(44).is_err());
    }

    #[test]
    fn kinds() {
        assert_eq!(param_kind(pkcs11_sys::CKM_AES_GCM), ParamKind::Gcm);
        assert_eq!(param_kind(pkcs11_sys::CKM_RSA_PKCS_OAEP), ParamKind::Oaep);
        assert_eq!(
            param_kind(pkcs11_sys::CKM_SHA256_RSA_PKCS_PSS),
            ParamKind::Pss
        );
        assert_eq!(param_kind(pkcs11_sys::CKM_ECDSA), ParamKind::None);
        assert_eq!(param_kind(pkcs11_sys::CKM_ECDSA_SHA384), ParamKind::None);
        assert_eq!(param_kind(pkcs11_sys::CKM_SHA512_HMAC), ParamKind::None);
        assert_eq!(
            param_kind(pkcs11_sys::CKM_SHA384_HMAC_GENERAL),
            ParamKind::MacGeneral
        );
        assert_eq!(param_kind(pkcs11_sys::CKM_AES_CBC_PAD), ParamKind::Bytes);
        assert_eq!(
            param_kind(pkcs11_sys::CKM_AES_KEY_WRAP_PAD),
            ParamKind::Bytes
        );
        assert_eq!(param_kind(pkcs11_sys::CKM_AES_CTR), ParamKind::Ctr);
        assert_eq!(
            param_kind(pkcs11_sys::CKM_RSA_AES_KEY_WRAP),
            ParamKind::RsaAesKeyWrap
        );
        assert_eq!(param_kind(pkcs11_sys::CKM_EC_KEY_PAIR_GEN), ParamKind::None);
        assert_eq!(param_kind(pkcs11_sys::CKM_RSA_X_509), ParamKind::Unknown);
    }
}
