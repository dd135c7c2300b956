//! What keywardd serves of the backing token's mechanisms (PKCS#11 3.0 §5.5
//! `C_GetMechanismList`, `C_GetMechanismInfo`): the key generation, signature, encryption,
//! wrapping and digest mechanisms design §4 offers, where the token has them, and their
//! `CK_MECHANISM_INFO` (key sizes in bits; AES and HMAC in bytes).

use super::super::ck::*;
use keyward_token::{MechanismType, Token};
use keyward_wire::pkcs11::MechanismInfo;

/// Mechanisms keywardd serves, given what the backing token has.
pub fn served(token: &Token) -> Vec<u64> {
    let has = |m: MechanismType| token.mechanisms().has(m);
    let mut out = Vec::new();
    // Key generation (PKCS11_GENERIC keys, design §4), where the token can.
    if has(MechanismType::RSA_PKCS_KEY_PAIR_GEN) {
        out.push(CKM_RSA_PKCS_KEY_PAIR_GEN);
    }
    if has(MechanismType::ECC_KEY_PAIR_GEN) {
        out.push(CKM_EC_KEY_PAIR_GEN);
    }
    if has(MechanismType::AES_KEY_GEN) {
        out.push(CKM_AES_KEY_GEN);
    }
    if has(MechanismType::ECDSA) {
        out.extend([CKM_ECDSA, CKM_ECDSA_SHA256, CKM_ECDSA_SHA384]);
    }
    if has(MechanismType::RSA_PKCS) {
        out.push(CKM_RSA_PKCS);
    }
    if has(MechanismType::SHA256_RSA_PKCS) {
        out.push(CKM_SHA256_RSA_PKCS);
    }
    // Keys made through the module (design §4); keywardctl's RSA keys name SHA-256.
    if has(MechanismType::SHA384_RSA_PKCS) {
        out.push(CKM_SHA384_RSA_PKCS);
    }
    if has(MechanismType::SHA512_RSA_PKCS) {
        out.push(CKM_SHA512_RSA_PKCS);
    }
    if has(MechanismType::RSA_PKCS_PSS) {
        out.push(CKM_RSA_PKCS_PSS);
    }
    if has(MechanismType::SHA256_RSA_PKCS_PSS) {
        out.push(CKM_SHA256_RSA_PKCS_PSS);
    }
    if has(MechanismType::RSA_PKCS_OAEP) && token.mechanisms().oaep_sha1() {
        out.push(CKM_RSA_PKCS_OAEP);
    }
    if has(MechanismType::AES_GCM) {
        out.push(CKM_AES_GCM);
    }
    // AES keys made through the module only (keywardctl's are AES-GCM by algorithm).
    for (m, ty) in [
        (MechanismType::AES_CBC_PAD, CKM_AES_CBC_PAD),
        (MechanismType::AES_CBC, CKM_AES_CBC),
        (MechanismType::AES_ECB, CKM_AES_ECB),
        (MechanismType::AES_CTR, CKM_AES_CTR),
    ] {
        if has(m) {
            out.push(ty);
        }
    }
    // HMAC (keywardctl's MAC keys, generic secrets made through the module); the `_GENERAL`
    // forms are the token's full MAC cut in keywardd.
    if has(MechanismType::GENERIC_SECRET_KEY_GEN) {
        out.push(CKM_GENERIC_SECRET_KEY_GEN);
    }
    for (m, full, general) in [
        (
            MechanismType::SHA256_HMAC,
            CKM_SHA256_HMAC,
            CKM_SHA256_HMAC_GENERAL,
        ),
        (
            MechanismType::SHA384_HMAC,
            CKM_SHA384_HMAC,
            CKM_SHA384_HMAC_GENERAL,
        ),
        (
            MechanismType::SHA512_HMAC,
            CKM_SHA512_HMAC,
            CKM_SHA512_HMAC_GENERAL,
        ),
    ] {
        if has(m) {
            out.extend([full, general]);
        }
    }
    // C_WrapKey of exportable keys (design §4, export.rs). CKM_AES_KEY_WRAP_PAD is RFC 5649
    // to Keyward's clients: served when the token does RFC 5649 by some mechanism (learnt at
    // open, keyward_token's kwp.rs; NSS softokn's own CKM_AES_KEY_WRAP_PAD is not RFC 5649).
    if has(MechanismType::AES_KEY_WRAP) {
        out.push(CKM_AES_KEY_WRAP);
    }
    if token.mechanisms().rfc5649().is_some() {
        out.push(CKM_AES_KEY_WRAP_PAD);
    }
    // BYOK (design §5): C_UnwrapKey with an import job's key, composed in the token from
    // OAEP-SHA1 and RFC 5649 AES-KWP (keyward_token::import; the token's RFC 5649 mechanism
    // is learnt at open).
    if has(MechanismType::RSA_PKCS_OAEP)
        && token.mechanisms().oaep_sha1()
        && token.mechanisms().rfc5649().is_some()
    {
        out.push(CKM_RSA_AES_KEY_WRAP);
    }
    out.extend([CKM_SHA256, CKM_SHA384, CKM_SHA512]);
    out
}

/// `CK_MECHANISM_INFO` of a served mechanism (key sizes in bits, AES and HMAC in bytes).
pub fn info(mechanism: u64) -> Option<MechanismInfo> {
    let i = |min, max, flags| {
        Some(MechanismInfo {
            min_key_size: min,
            max_key_size: max,
            flags,
        })
    };
    let ec = CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS;
    match mechanism {
        CKM_RSA_PKCS_KEY_PAIR_GEN => i(2048, 4096, CKF_GENERATE_KEY_PAIR),
        CKM_EC_KEY_PAIR_GEN => i(256, 384, CKF_GENERATE_KEY_PAIR | ec),
        CKM_AES_KEY_GEN => i(16, 32, CKF_GENERATE),
        CKM_ECDSA | CKM_ECDSA_SHA256 | CKM_ECDSA_SHA384 => i(256, 384, CKF_SIGN | CKF_VERIFY | ec),
        // Raw PKCS#1 v1.5 also encrypts and decrypts with keys made through the module.
        CKM_RSA_PKCS => i(
            2048,
            4096,
            CKF_SIGN | CKF_VERIFY | CKF_ENCRYPT | CKF_DECRYPT,
        ),
        CKM_SHA256_RSA_PKCS
        | CKM_SHA384_RSA_PKCS
        | CKM_SHA512_RSA_PKCS
        | CKM_RSA_PKCS_PSS
        | CKM_SHA256_RSA_PKCS_PSS => i(2048, 4096, CKF_SIGN | CKF_VERIFY),
        // Wrap: export to an RSA public key; unwrap: BYOK with an import job's key (§5).
        CKM_RSA_PKCS_OAEP => i(
            2048,
            4096,
            CKF_ENCRYPT | CKF_DECRYPT | CKF_WRAP | CKF_UNWRAP,
        ),
        // Wrap: export (export.rs); unwrap: with an AES key made through the module
        // (unwrap.rs).
        CKM_AES_KEY_WRAP | CKM_AES_KEY_WRAP_PAD => i(16, 32, CKF_WRAP | CKF_UNWRAP),
        CKM_AES_GCM | CKM_AES_CBC_PAD | CKM_AES_CBC | CKM_AES_ECB | CKM_AES_CTR => {
            i(16, 32, CKF_ENCRYPT | CKF_DECRYPT)
        }
        // Generic secrets: GENERIC_SECRET_MIN..=MAX bytes of CKA_VALUE_LEN, which key
        // generation's info gives in bits (PKCS#11 v2.40 current mechanisms, "Generic secret
        // key generation"); the HMACs' in bytes, as tokens report them. An HMAC needs at
        // least its hash's output (SoftHSM2's rule at Init, enforced by keywardd first).
        CKM_GENERIC_SECRET_KEY_GEN => i(SECRET_MIN * 8, SECRET_MAX * 8, CKF_GENERATE),
        CKM_SHA256_HMAC | CKM_SHA256_HMAC_GENERAL => i(32, SECRET_MAX, CKF_SIGN | CKF_VERIFY),
        CKM_SHA384_HMAC | CKM_SHA384_HMAC_GENERAL => i(48, SECRET_MAX, CKF_SIGN | CKF_VERIFY),
        CKM_SHA512_HMAC | CKM_SHA512_HMAC_GENERAL => i(64, SECRET_MAX, CKF_SIGN | CKF_VERIFY),
        CKM_SHA256 | CKM_SHA384 | CKM_SHA512 => i(0, 0, CKF_DIGEST),
        CKM_RSA_AES_KEY_WRAP => i(3072, 4096, CKF_UNWRAP),
        _ => None,
    }
}

pub(super) const SECRET_MIN: u64 = keyward_token::GENERIC_SECRET_MIN as u64;
pub(super) const SECRET_MAX: u64 = keyward_token::GENERIC_SECRET_MAX as u64;
