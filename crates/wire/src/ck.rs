//! The PKCS#11 numbers Keyward uses other than return values (those are in [`crate::rv`]):
//! attribute types, object classes, key and certificate types, mechanisms, MGFs, OAEP sources
//! and flags, as plain `u64`s. The wire carries `CK_ULONG`s as `u64`, and raw `CK_*`
//! structures never reach keywardd (style.md rule 7); keywardd, keywardctl and the tests name
//! them from here, so each is defined once.
//!
//! Values are those of the PKCS#11 3.x headers (`pkcs11t.h`); the test below checks them
//! written out in decimal. Each constant is the PKCS#11 name of its value, so it carries no
//! doc of its own.
#![allow(missing_docs)]

// Attribute types (`CK_ATTRIBUTE_TYPE`).
pub const CKA_CLASS: u64 = 0x0;
pub const CKA_TOKEN: u64 = 0x1;
pub const CKA_PRIVATE: u64 = 0x2;
pub const CKA_LABEL: u64 = 0x3;
pub const CKA_UNIQUE_ID: u64 = 0x4;
pub const CKA_VALUE: u64 = 0x11;
pub const CKA_CERTIFICATE_TYPE: u64 = 0x80;
pub const CKA_ISSUER: u64 = 0x81;
pub const CKA_SERIAL_NUMBER: u64 = 0x82;
pub const CKA_TRUSTED: u64 = 0x86;
pub const CKA_CERTIFICATE_CATEGORY: u64 = 0x87;
pub const CKA_JAVA_MIDP_SECURITY_DOMAIN: u64 = 0x88;
pub const CKA_URL: u64 = 0x89;
pub const CKA_HASH_OF_SUBJECT_PUBLIC_KEY: u64 = 0x8A;
pub const CKA_HASH_OF_ISSUER_PUBLIC_KEY: u64 = 0x8B;
pub const CKA_NAME_HASH_ALGORITHM: u64 = 0x8C;
pub const CKA_CHECK_VALUE: u64 = 0x90;
pub const CKA_KEY_TYPE: u64 = 0x100;
pub const CKA_SUBJECT: u64 = 0x101;
pub const CKA_ID: u64 = 0x102;
pub const CKA_SENSITIVE: u64 = 0x103;
pub const CKA_ENCRYPT: u64 = 0x104;
pub const CKA_DECRYPT: u64 = 0x105;
pub const CKA_WRAP: u64 = 0x106;
pub const CKA_UNWRAP: u64 = 0x107;
pub const CKA_SIGN: u64 = 0x108;
pub const CKA_SIGN_RECOVER: u64 = 0x109;
pub const CKA_VERIFY: u64 = 0x10A;
pub const CKA_VERIFY_RECOVER: u64 = 0x10B;
pub const CKA_DERIVE: u64 = 0x10C;
pub const CKA_START_DATE: u64 = 0x110;
pub const CKA_END_DATE: u64 = 0x111;
pub const CKA_MODULUS: u64 = 0x120;
pub const CKA_MODULUS_BITS: u64 = 0x121;
pub const CKA_PUBLIC_EXPONENT: u64 = 0x122;
pub const CKA_PUBLIC_KEY_INFO: u64 = 0x129;
pub const CKA_VALUE_LEN: u64 = 0x161;
pub const CKA_EXTRACTABLE: u64 = 0x162;
pub const CKA_LOCAL: u64 = 0x163;
pub const CKA_NEVER_EXTRACTABLE: u64 = 0x164;
pub const CKA_ALWAYS_SENSITIVE: u64 = 0x165;
pub const CKA_MODIFIABLE: u64 = 0x170;
pub const CKA_COPYABLE: u64 = 0x171;
pub const CKA_DESTROYABLE: u64 = 0x172;
pub const CKA_EC_PARAMS: u64 = 0x180;
pub const CKA_EC_POINT: u64 = 0x181;
pub const CKA_ALWAYS_AUTHENTICATE: u64 = 0x202;
pub const CKA_VENDOR_DEFINED: u64 = 0x80000000;

// Object classes (`CK_OBJECT_CLASS`).
pub const CKO_DATA: u64 = 0x0;
pub const CKO_CERTIFICATE: u64 = 0x1;
pub const CKO_PUBLIC_KEY: u64 = 0x2;
pub const CKO_PRIVATE_KEY: u64 = 0x3;
pub const CKO_SECRET_KEY: u64 = 0x4;

// Key types (`CK_KEY_TYPE`).
pub const CKK_RSA: u64 = 0x0;
pub const CKK_EC: u64 = 0x3;
pub const CKK_GENERIC_SECRET: u64 = 0x10;
pub const CKK_AES: u64 = 0x1F;

// Certificate types (`CK_CERTIFICATE_TYPE`).
pub const CKC_X_509: u64 = 0x0;

// Mechanisms (`CK_MECHANISM_TYPE`).
pub const CKM_RSA_PKCS_KEY_PAIR_GEN: u64 = 0x0;
pub const CKM_RSA_PKCS: u64 = 0x1;
pub const CKM_RSA_PKCS_OAEP: u64 = 0x9;
pub const CKM_RSA_PKCS_PSS: u64 = 0xD;
pub const CKM_SHA256_RSA_PKCS: u64 = 0x40;
pub const CKM_SHA384_RSA_PKCS: u64 = 0x41;
pub const CKM_SHA512_RSA_PKCS: u64 = 0x42;
pub const CKM_SHA256_RSA_PKCS_PSS: u64 = 0x43;
pub const CKM_SHA_1: u64 = 0x220;
pub const CKM_SHA256: u64 = 0x250;
pub const CKM_SHA256_HMAC: u64 = 0x251;
pub const CKM_SHA256_HMAC_GENERAL: u64 = 0x252;
pub const CKM_SHA384: u64 = 0x260;
pub const CKM_SHA384_HMAC: u64 = 0x261;
pub const CKM_SHA384_HMAC_GENERAL: u64 = 0x262;
pub const CKM_SHA512: u64 = 0x270;
pub const CKM_SHA512_HMAC: u64 = 0x271;
pub const CKM_SHA512_HMAC_GENERAL: u64 = 0x272;
pub const CKM_GENERIC_SECRET_KEY_GEN: u64 = 0x350;
pub const CKM_EC_KEY_PAIR_GEN: u64 = 0x1040;
pub const CKM_ECDSA: u64 = 0x1041;
pub const CKM_ECDSA_SHA256: u64 = 0x1044;
pub const CKM_ECDSA_SHA384: u64 = 0x1045;
pub const CKM_RSA_AES_KEY_WRAP: u64 = 0x1054;
pub const CKM_AES_KEY_GEN: u64 = 0x1080;
pub const CKM_AES_ECB: u64 = 0x1081;
pub const CKM_AES_CBC: u64 = 0x1082;
pub const CKM_AES_CBC_PAD: u64 = 0x1085;
pub const CKM_AES_CTR: u64 = 0x1086;
pub const CKM_AES_GCM: u64 = 0x1087;
pub const CKM_AES_KEY_WRAP: u64 = 0x2109;
pub const CKM_AES_KEY_WRAP_PAD: u64 = 0x210A;
/// RFC 5649 AES key wrap with padding (PKCS#11 v3.0); NSS softokn's `CKM_AES_KEY_WRAP_PAD` is
/// RFC 3394 with PKCS#7 padding instead, and its RFC 5649 is this one.
pub const CKM_AES_KEY_WRAP_KWP: u64 = 0x210B;

// Mask generation functions (`CK_RSA_PKCS_MGF_TYPE`).
pub const CKG_MGF1_SHA1: u64 = 0x1;
pub const CKG_MGF1_SHA256: u64 = 0x2;

// OAEP encoding parameter sources (`CK_RSA_PKCS_OAEP_SOURCE_TYPE`).
pub const CKZ_DATA_SPECIFIED: u64 = 0x1;
/// `CKF_ARRAY_ATTRIBUTE`: set in the type of attributes whose value is an array.
pub const CKF_ARRAY_ATTRIBUTE: u64 = 0x4000_0000;
/// `CKA_ALLOWED_MECHANISMS`.
pub const CKA_ALLOWED_MECHANISMS: u64 = CKF_ARRAY_ATTRIBUTE | 0x600;

// Token flags (`CK_TOKEN_INFO.flags`).
pub const CKF_RNG: u64 = 0x1;
pub const CKF_LOGIN_REQUIRED: u64 = 0x4;
pub const CKF_USER_PIN_INITIALIZED: u64 = 0x8;
pub const CKF_TOKEN_INITIALIZED: u64 = 0x400;

// Mechanism flags (`CK_MECHANISM_INFO.flags`).
pub const CKF_ENCRYPT: u64 = 0x100;
pub const CKF_DECRYPT: u64 = 0x200;
pub const CKF_DIGEST: u64 = 0x400;
pub const CKF_SIGN: u64 = 0x800;
pub const CKF_VERIFY: u64 = 0x2000;
pub const CKF_WRAP: u64 = 0x20000;
pub const CKF_UNWRAP: u64 = 0x40000;
pub const CKF_GENERATE: u64 = 0x8000;
pub const CKF_GENERATE_KEY_PAIR: u64 = 0x1_0000;
pub const CKF_EC_F_P: u64 = 0x10_0000;
pub const CKF_EC_NAMEDCURVE: u64 = 0x80_0000;
pub const CKF_EC_UNCOMPRESS: u64 = 0x100_0000;

#[cfg(test)]
mod tests {
    use super::*;

    /// Values as printed in OASIS PKCS#11 3.1 `pkcs11t.h`, in decimal, so that a typo in the
    /// hex above cannot hide behind the same typo here.
    #[test]
    fn values_match_the_spec_headers() {
        let expected: &[(u64, u64)] = &[
            (CKA_ALWAYS_AUTHENTICATE, 514),
            (CKA_ALWAYS_SENSITIVE, 357),
            (CKA_CERTIFICATE_CATEGORY, 135),
            (CKA_CERTIFICATE_TYPE, 128),
            (CKA_CHECK_VALUE, 144),
            (CKA_CLASS, 0),
            (CKA_COPYABLE, 369),
            (CKA_DECRYPT, 261),
            (CKA_DERIVE, 268),
            (CKA_DESTROYABLE, 370),
            (CKA_EC_PARAMS, 384),
            (CKA_EC_POINT, 385),
            (CKA_ENCRYPT, 260),
            (CKA_END_DATE, 273),
            (CKA_EXTRACTABLE, 354),
            (CKA_HASH_OF_ISSUER_PUBLIC_KEY, 139),
            (CKA_HASH_OF_SUBJECT_PUBLIC_KEY, 138),
            (CKA_ID, 258),
            (CKA_ISSUER, 129),
            (CKA_JAVA_MIDP_SECURITY_DOMAIN, 136),
            (CKA_KEY_TYPE, 256),
            (CKA_LABEL, 3),
            (CKA_LOCAL, 355),
            (CKA_MODIFIABLE, 368),
            (CKA_MODULUS, 288),
            (CKA_MODULUS_BITS, 289),
            (CKA_NAME_HASH_ALGORITHM, 140),
            (CKA_NEVER_EXTRACTABLE, 356),
            (CKA_PRIVATE, 2),
            (CKA_PUBLIC_EXPONENT, 290),
            (CKA_PUBLIC_KEY_INFO, 297),
            (CKA_SENSITIVE, 259),
            (CKA_SERIAL_NUMBER, 130),
            (CKA_SIGN, 264),
            (CKA_SIGN_RECOVER, 265),
            (CKA_START_DATE, 272),
            (CKA_SUBJECT, 257),
            (CKA_TOKEN, 1),
            (CKA_TRUSTED, 134),
            (CKA_UNIQUE_ID, 4),
            (CKA_UNWRAP, 263),
            (CKA_URL, 137),
            (CKA_VALUE, 17),
            (CKA_VALUE_LEN, 353),
            (CKA_VENDOR_DEFINED, 2147483648),
            (CKA_VERIFY, 266),
            (CKA_VERIFY_RECOVER, 267),
            (CKA_WRAP, 262),
            (CKC_X_509, 0),
            (CKF_DECRYPT, 512),
            (CKF_DIGEST, 1024),
            (CKF_EC_F_P, 1048576),
            (CKF_EC_NAMEDCURVE, 8388608),
            (CKF_EC_UNCOMPRESS, 16777216),
            (CKF_ENCRYPT, 256),
            (CKF_GENERATE, 32768),
            (CKF_GENERATE_KEY_PAIR, 65536),
            (CKF_LOGIN_REQUIRED, 4),
            (CKF_RNG, 1),
            (CKF_SIGN, 2048),
            (CKF_TOKEN_INITIALIZED, 1024),
            (CKF_UNWRAP, 262144),
            (CKF_USER_PIN_INITIALIZED, 8),
            (CKF_VERIFY, 8192),
            (CKF_WRAP, 131072),
            (CKG_MGF1_SHA1, 1),
            (CKG_MGF1_SHA256, 2),
            (CKK_AES, 31),
            (CKK_EC, 3),
            (CKK_GENERIC_SECRET, 16),
            (CKK_RSA, 0),
            (CKM_AES_CBC, 4226),
            (CKM_AES_CBC_PAD, 4229),
            (CKM_AES_CTR, 4230),
            (CKM_AES_ECB, 4225),
            (CKM_AES_GCM, 4231),
            (CKM_AES_KEY_GEN, 4224),
            (CKM_AES_KEY_WRAP, 8457),
            (CKM_AES_KEY_WRAP_PAD, 8458),
            (CKM_ECDSA, 4161),
            (CKM_ECDSA_SHA256, 4164),
            (CKM_ECDSA_SHA384, 4165),
            (CKM_EC_KEY_PAIR_GEN, 4160),
            (CKM_GENERIC_SECRET_KEY_GEN, 848),
            (CKM_RSA_AES_KEY_WRAP, 4180),
            (CKM_RSA_PKCS, 1),
            (CKM_RSA_PKCS_KEY_PAIR_GEN, 0),
            (CKM_RSA_PKCS_OAEP, 9),
            (CKM_RSA_PKCS_PSS, 13),
            (CKM_SHA256, 592),
            (CKM_SHA256_HMAC, 593),
            (CKM_SHA256_HMAC_GENERAL, 594),
            (CKM_SHA256_RSA_PKCS, 64),
            (CKM_SHA256_RSA_PKCS_PSS, 67),
            (CKM_SHA384, 608),
            (CKM_SHA384_HMAC, 609),
            (CKM_SHA384_HMAC_GENERAL, 610),
            (CKM_SHA384_RSA_PKCS, 65),
            (CKM_SHA512, 624),
            (CKM_SHA512_HMAC, 625),
            (CKM_SHA512_HMAC_GENERAL, 626),
            (CKM_SHA512_RSA_PKCS, 66),
            (CKM_SHA_1, 544),
            (CKO_CERTIFICATE, 1),
            (CKO_DATA, 0),
            (CKO_PRIVATE_KEY, 3),
            (CKO_PUBLIC_KEY, 2),
            (CKO_SECRET_KEY, 4),
            (CKZ_DATA_SPECIFIED, 1),
            (CKA_ALLOWED_MECHANISMS, 1073743360),
        ];
        for (i, (value, spec)) in expected.iter().enumerate() {
            assert_eq!(value, spec, "entry {i}");
        }
    }
}
