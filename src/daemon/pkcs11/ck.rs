//! The PKCS#11 numbers keywardd's PKCS#11 half uses (return values, attribute types, classes,
//! key types, mechanisms, flags), as plain `u64`s: the wire carries `CK_ULONG`s as `u64`
//! and raw `CK_*` structures never reach the daemon (style.md rule 7).
#![allow(missing_docs)]

// Return values (PKCS#11 3.0 §5.1).
pub const CKR_SLOT_ID_INVALID: u64 = 0x03;
pub const CKR_GENERAL_ERROR: u64 = 0x05;
pub const CKR_ENCRYPTED_DATA_INVALID: u64 = 0x40;
pub const CKR_ENCRYPTED_DATA_LEN_RANGE: u64 = 0x41;
pub const CKR_ARGUMENTS_BAD: u64 = 0x07;
pub const CKR_ATTRIBUTE_READ_ONLY: u64 = 0x10;
pub const CKR_ACTION_PROHIBITED: u64 = 0x1B;
pub const CKR_DATA_INVALID: u64 = 0x20;
pub const CKR_DATA_LEN_RANGE: u64 = 0x21;
pub const CKR_DEVICE_ERROR: u64 = 0x30;
pub const CKR_DEVICE_MEMORY: u64 = 0x31;
pub const CKR_FUNCTION_NOT_SUPPORTED: u64 = 0x54;
pub const CKR_KEY_HANDLE_INVALID: u64 = 0x60;
pub const CKR_KEY_TYPE_INCONSISTENT: u64 = 0x63;
pub const CKR_KEY_FUNCTION_NOT_PERMITTED: u64 = 0x68;
pub const CKR_KEY_SIZE_RANGE: u64 = 0x62;
pub const CKR_MECHANISM_INVALID: u64 = 0x70;
pub const CKR_MECHANISM_PARAM_INVALID: u64 = 0x71;
pub const CKR_OBJECT_HANDLE_INVALID: u64 = 0x82;
pub const CKR_OPERATION_ACTIVE: u64 = 0x90;
pub const CKR_OPERATION_NOT_INITIALIZED: u64 = 0x91;
pub const CKR_PIN_INCORRECT: u64 = 0xA0;
pub const CKR_SESSION_COUNT: u64 = 0xB1;
pub const CKR_SESSION_HANDLE_INVALID: u64 = 0xB3;
pub const CKR_SIGNATURE_INVALID: u64 = 0xC0;
pub const CKR_SIGNATURE_LEN_RANGE: u64 = 0xC1;
pub const CKR_TOKEN_WRITE_PROTECTED: u64 = 0xE2;
pub const CKR_USER_ALREADY_LOGGED_IN: u64 = 0x100;
pub const CKR_USER_NOT_LOGGED_IN: u64 = 0x101;
pub const CKR_USER_TYPE_INVALID: u64 = 0x103;
pub const CKR_USER_ANOTHER_ALREADY_LOGGED_IN: u64 = 0x104;
pub const CKR_RANDOM_NO_RNG: u64 = 0x121;

// Attribute types.
pub const CKA_CLASS: u64 = 0x0;
pub const CKA_TOKEN: u64 = 0x1;
pub const CKA_PRIVATE: u64 = 0x2;
pub const CKA_LABEL: u64 = 0x3;
pub const CKA_VALUE: u64 = 0x11;
pub const CKA_KEY_TYPE: u64 = 0x100;
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

// Object classes and key types.
pub const CKO_PUBLIC_KEY: u64 = 2;
pub const CKO_PRIVATE_KEY: u64 = 3;
pub const CKO_SECRET_KEY: u64 = 4;
pub const CKK_RSA: u64 = 0x0;
pub const CKK_EC: u64 = 0x3;
pub const CKK_GENERIC_SECRET: u64 = 0x10;
pub const CKK_AES: u64 = 0x1F;

// Mechanisms.
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
pub const CKM_SHA384_HMAC: u64 = 0x261;
pub const CKM_SHA384_HMAC_GENERAL: u64 = 0x262;
pub const CKM_SHA512_HMAC: u64 = 0x271;
pub const CKM_SHA512_HMAC_GENERAL: u64 = 0x272;
pub const CKM_GENERIC_SECRET_KEY_GEN: u64 = 0x350;
pub const CKM_SHA384: u64 = 0x260;
pub const CKM_SHA512: u64 = 0x270;
pub const CKM_RSA_PKCS_KEY_PAIR_GEN: u64 = 0x0;
pub const CKM_EC_KEY_PAIR_GEN: u64 = 0x1040;
pub const CKM_AES_KEY_GEN: u64 = 0x1080;
pub const CKM_ECDSA: u64 = 0x1041;
pub const CKM_ECDSA_SHA256: u64 = 0x1044;
pub const CKM_ECDSA_SHA384: u64 = 0x1045;
pub const CKM_AES_ECB: u64 = 0x1081;
pub const CKM_AES_CBC: u64 = 0x1082;
pub const CKM_AES_CBC_PAD: u64 = 0x1085;
pub const CKM_AES_CTR: u64 = 0x1086;
pub const CKM_AES_GCM: u64 = 0x1087;
pub const CKM_RSA_AES_KEY_WRAP: u64 = 0x1054;
pub const CKM_AES_KEY_WRAP: u64 = 0x2109;
pub const CKM_AES_KEY_WRAP_PAD: u64 = 0x210A;

// MGFs.
pub const CKG_MGF1_SHA1: u64 = 0x1;
pub const CKG_MGF1_SHA256: u64 = 0x2;

// OAEP sources.
pub const CKZ_DATA_SPECIFIED: u64 = 0x1;

// Token flags.
pub const CKF_RNG: u64 = 0x1;
pub const CKF_LOGIN_REQUIRED: u64 = 0x4;
pub const CKF_USER_PIN_INITIALIZED: u64 = 0x8;
pub const CKF_TOKEN_INITIALIZED: u64 = 0x400;

// Mechanism flags.
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
