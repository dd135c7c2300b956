//! The PKCS#11 half of the request type: what the module asks of keywardd (design §1, §4).
//!
//! The module (`libkeyward_pkcs11.so`) turns each C_ call that needs the daemon into one
//! [`Pkcs11Request`] and expects the [`Pkcs11Response`] variant named on that request. Raw
//! `CK_*` structures never cross the wire: attributes travel as [`Attribute`] (a type and a
//! typed [`AttrValue`]), mechanisms as [`Mechanism`] with typed [`MechParams`], `CK_ULONG`s
//! as `u64` whatever the client's ABI (the module converts, so a 32-bit `CK_ULONG` or either
//! `CK_GCM_PARAMS` layout never reaches the daemon). Every failure is an
//! [`crate::ErrorReply`] carrying the CK_RV the C_ function returns.
//!
//! **Who does what.** The module checks pointers and lengths, keeps the session table, the
//! find-objects cursor, the login state it must replay after a reconnect, and the two-call
//! buffer protocol (it caches an output the client asked the size of, so the daemon computes
//! every result once). keywardd decides and executes: identity, visibility, the use gates at
//! `*Init`, handles, the token. Session ids ([`SessionId`]) are the daemon's, valid on the
//! connection that opened them only; object handles ([`ObjectHandle`]) belong to the module
//! instance and stay valid across its connections (design §4).
//!
//! Encoding rules: postcard, so no `flatten`, untagged enums, `skip_serializing_if` or
//! `serde_json::Value`. New variants go at the end (postcard encodes a variant by its index)
//! and bump [`crate::PROTOCOL_VERSION`] when an existing variant changes.

use serde::{Deserialize, Serialize};
use std::fmt;
use zeroize::Zeroize;

// ------------------------------------------------------------------------------ handles

/// A slot id: the 31-bit hash of a key ring's full name ([`ring_identity`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SlotId(pub u64);

/// A session id chosen by keywardd, valid on the connection that opened it only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(pub u64);

/// An object handle chosen by keywardd: belongs to the module instance and works in all its
/// sessions (and across its reconnects while keywardd keeps the instance), in no other
/// instance. Never 0 (`CK_INVALID_HANDLE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ObjectHandle(pub u64);

// ------------------------------------------------------------------------------ secrets

/// Bytes that may be secret (key material, plaintext, PINs): zeroised on drop, and `Debug`
/// shows only the length, so a template or a payload can never be logged by accident.
///
/// It travels as serde bytes, not a sequence of `u8`: the same encoding in postcard (a
/// length, then the bytes) and in JSON (an array of numbers), but copied at once, not
/// visited a byte at a time (issue 19's profile: about 3% of keywardd on 1 KiB payloads).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Blob(Vec<u8>);

impl Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl<'de> serde::de::Visitor<'de> for Bytes {
            type Value = Blob;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob(v))
            }
            // JSON and other self-describing formats give an array of numbers.
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Blob, A::Error> {
                let mut v = Blob(Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096)));
                while let Some(b) = seq.next_element::<u8>()? {
                    v.0.push(b);
                }
                Ok(v)
            }
        }
        d.deserialize_byte_buf(Bytes)
    }
}

impl Blob {
    /// Wraps `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        Blob(bytes)
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// The number of bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for Blob {
    fn from(v: Vec<u8>) -> Self {
        Blob(v)
    }
}

impl From<&[u8]> for Blob {
    fn from(v: &[u8]) -> Self {
        Blob(v.to_vec())
    }
}

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

impl Drop for Blob {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// A login PIN (design §1: a service-account key, or empty for the pre-login principal).
/// Zeroised on drop; `Debug` prints nothing of it, not even its length.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Pin(Blob);

impl Pin {
    /// Wraps the PIN bytes as the client passed them.
    pub fn new(bytes: Vec<u8>) -> Self {
        Pin(Blob(bytes))
    }

    /// The PIN bytes.
    pub fn expose_secret(&self) -> &[u8] {
        self.0.as_slice()
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(<redacted>)")
    }
}

// ------------------------------------------------------------------------------ attributes

/// How an attribute's value is laid out in the client's memory, hence how it travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrKind {
    /// `CK_BBOOL`: one byte.
    Bool,
    /// `CK_ULONG` (the client's width): travels as `u64`.
    Ulong,
    /// An array of `CK_ULONG` (`CKA_ALLOWED_MECHANISMS`).
    UlongList,
    /// Plain bytes (labels, ids, big integers, DER, dates, ...).
    Bytes,
    /// A nested template (`CKA_WRAP_TEMPLATE`, ...): holds pointers, not supported.
    Template,
}

pub use crate::ck::{CKA_ALLOWED_MECHANISMS, CKF_ARRAY_ATTRIBUTE};

/// The layout of attribute type `ty`: a table both ends share, so the module converts a
/// `CK_ATTRIBUTE` into an [`AttrValue`] and back the same way keywardd reads it. Unknown
/// (and vendor) types are [`AttrKind::Bytes`].
pub fn attribute_kind(ty: u64) -> AttrKind {
    match ty {
        // CKA_TOKEN, CKA_PRIVATE, CKA_TRUSTED, CKA_SENSITIVE .. CKA_DERIVE, CKA_EXTRACTABLE,
        // CKA_LOCAL, CKA_NEVER_EXTRACTABLE, CKA_ALWAYS_SENSITIVE, CKA_MODIFIABLE,
        // CKA_COPYABLE, CKA_DESTROYABLE, CKA_ALWAYS_AUTHENTICATE, CKA_WRAP_WITH_TRUSTED,
        // CKA_RESET_ON_INIT, CKA_HAS_RESET.
        0x1
        | 0x2
        | 0x86
        | 0x103..=0x10C
        | 0x162
        | 0x163
        | 0x164
        | 0x165
        | 0x170
        | 0x171
        | 0x172
        | 0x202
        | 0x210
        | 0x301
        | 0x302 => AttrKind::Bool,
        // CKA_CLASS, CKA_CERTIFICATE_TYPE, CKA_CERTIFICATE_CATEGORY,
        // CKA_JAVA_MIDP_SECURITY_DOMAIN, CKA_NAME_HASH_ALGORITHM, CKA_KEY_TYPE,
        // CKA_MODULUS_BITS, CKA_PRIME_BITS, CKA_SUB_PRIME_BITS, CKA_VALUE_BITS, CKA_VALUE_LEN,
        // CKA_KEY_GEN_MECHANISM, CKA_AUTH_PIN_FLAGS, CKA_HW_FEATURE_TYPE, CKA_MECHANISM_TYPE,
        // CKA_PROFILE_ID.
        0x0 | 0x80 | 0x87 | 0x88 | 0x8C | 0x100 | 0x121 | 0x133 | 0x134 | 0x160 | 0x161 | 0x166
        | 0x201 | 0x300 | 0x500 | 0x601 => AttrKind::Ulong,
        CKA_ALLOWED_MECHANISMS => AttrKind::UlongList,
        t if t & CKF_ARRAY_ATTRIBUTE != 0 && t < 0x8000_0000 => AttrKind::Template,
        _ => AttrKind::Bytes,
    }
}

/// A typed attribute value.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttrValue {
    /// A `CK_BBOOL`.
    Bool(bool),
    /// A `CK_ULONG`.
    Ulong(u64),
    /// An array of `CK_ULONG`.
    UlongList(Vec<u64>),
    /// Bytes; zeroised on drop (`CKA_VALUE` of a secret key travels here).
    Bytes(Blob),
}

impl AttrValue {
    /// The kind this value is of.
    pub fn kind(&self) -> AttrKind {
        match self {
            AttrValue::Bool(_) => AttrKind::Bool,
            AttrValue::Ulong(_) => AttrKind::Ulong,
            AttrValue::UlongList(_) => AttrKind::UlongList,
            AttrValue::Bytes(_) => AttrKind::Bytes,
        }
    }
}

impl fmt::Debug for AttrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a value (style rule 12): kinds and lengths only.
        match self {
            AttrValue::Bool(_) => f.write_str("Bool(..)"),
            AttrValue::Ulong(_) => f.write_str("Ulong(..)"),
            AttrValue::UlongList(v) => write!(f, "UlongList({} items)", v.len()),
            AttrValue::Bytes(b) => write!(f, "{b:?}"),
        }
    }
}

/// One attribute of a template: its `CKA_*` type and typed value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribute {
    /// The `CKA_*` type.
    pub ty: u64,
    /// The value.
    pub value: AttrValue,
}

/// One attribute's answer to [`Pkcs11Request::GetAttributeValue`].
///
/// The module writes each into the client's template: `Value` as the value (or its length
/// for a NULL `pValue`; `CKR_BUFFER_TOO_SMALL` with `ulValueLen = CK_UNAVAILABLE_INFORMATION`
/// if the buffer is short), `Sensitive` and `TypeInvalid` as `ulValueLen =
/// CK_UNAVAILABLE_INFORMATION` with `CKR_ATTRIBUTE_SENSITIVE` / `CKR_ATTRIBUTE_TYPE_INVALID`
/// for the call, every other attribute still processed (PKCS#11 3.0 §5.7.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttrResult {
    /// The value.
    Value(AttrValue),
    /// The value may not be revealed (including design §4's public values without
    /// viewPublicKey).
    Sensitive,
    /// The object has no such attribute.
    TypeInvalid,
}

// ------------------------------------------------------------------------------ mechanisms

/// A mechanism with typed parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mechanism {
    /// The `CKM_*` type.
    pub ty: u64,
    /// Its parameters.
    pub params: MechParams,
}

/// Mechanism parameters, decoded by the module from the client's structure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MechParams {
    /// No parameter (`pParameter` NULL or `ulParameterLen` 0).
    None,
    /// Parameters that are plain bytes: an IV (`CKM_AES_CBC`, `CKM_AES_CBC_PAD`), the
    /// optional IV of `CKM_AES_KEY_WRAP(_PAD)`, an EC key's parameters, ...
    Bytes(Blob),
    /// `CK_GCM_PARAMS`, from either ABI layout.
    Gcm(GcmParams),
    /// `CK_AES_CTR_PARAMS`.
    Ctr(CtrParams),
    /// `CK_RSA_PKCS_OAEP_PARAMS`.
    Oaep(OaepParams),
    /// `CK_RSA_PKCS_PSS_PARAMS`.
    Pss(PssParams),
    /// `CK_RSA_AES_KEY_WRAP_PARAMS` (BYOK, design §5).
    RsaAesKeyWrap(RsaAesKeyWrapParams),
    /// `CK_ECDH1_DERIVE_PARAMS`.
    Ecdh1Derive(Ecdh1DeriveParams),
    /// `CK_MAC_GENERAL_PARAMS` (`CKM_SHA*_HMAC_GENERAL`): the MAC length in bytes.
    MacLen(u64),
}

/// Which `CK_GCM_PARAMS` layout the client used (design §4: both exist in the wild).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GcmLayout {
    /// PKCS#11 2.40 errata / 3.0: `pIv, ulIvLen, ulIvBits, pAAD, ulAADLen, ulTagBits`
    /// (48 bytes on 64-bit Linux).
    WithIvBits,
    /// The 2.40 header as first published (and SoftHSM2, OpenSSL's pkcs11 users of that era):
    /// `pIv, ulIvLen, pAAD, ulAADLen, ulTagBits` (40 bytes on 64-bit Linux).
    WithoutIvBits,
}

/// AES-GCM parameters, one typed struct for either client layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcmParams {
    /// The IV.
    pub iv: Blob,
    /// `ulIvBits` as the client gave it; `iv.len() * 8` for the layout without it.
    pub iv_bits: u64,
    /// Additional authenticated data.
    pub aad: Blob,
    /// The tag length in bits.
    pub tag_bits: u64,
    /// The client's layout (keywardd passes the token the layout the token expects; this
    /// is kept for logs and tests).
    pub layout: GcmLayout,
}

/// `CK_AES_CTR_PARAMS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CtrParams {
    /// Bits of the counter block that are the counter.
    pub counter_bits: u64,
    /// The initial counter block.
    pub cb: [u8; 16],
}

/// `CK_RSA_PKCS_OAEP_PARAMS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OaepParams {
    /// `hashAlg` (`CKM_SHA_1`, `CKM_SHA256`, ...).
    pub hash: u64,
    /// `mgf` (`CKG_MGF1_SHA1`, ...).
    pub mgf: u64,
    /// `source` (`CKZ_DATA_SPECIFIED` or 0).
    pub source: u64,
    /// The label (`pSourceData`).
    pub source_data: Blob,
}

/// `CK_RSA_PKCS_PSS_PARAMS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PssParams {
    /// `hashAlg`.
    pub hash: u64,
    /// `mgf`.
    pub mgf: u64,
    /// `sLen`, the salt length in bytes.
    pub salt_len: u64,
}

/// `CK_RSA_AES_KEY_WRAP_PARAMS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RsaAesKeyWrapParams {
    /// `ulAESKeyBits`.
    pub aes_key_bits: u64,
    /// `pOAEPParams`.
    pub oaep: OaepParams,
}

/// `CK_ECDH1_DERIVE_PARAMS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ecdh1DeriveParams {
    /// `kdf` (`CKD_NULL`, ...).
    pub kdf: u64,
    /// `pSharedData`.
    pub shared_data: Blob,
    /// `pPublicData`: the other party's public point.
    pub public_data: Blob,
}

// ------------------------------------------------------------------------------ info

/// A token as keywardd describes it (design §4 "Slots and tokens").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// The token label (≤ 32 bytes; the module pads it with spaces).
    pub label: String,
    /// The token serial (≤ 16 bytes; stable hash of the ring's name).
    pub serial: String,
    /// `CK_TOKEN_INFO.flags` (`CKF_LOGIN_REQUIRED | CKF_TOKEN_INITIALIZED |
    /// CKF_USER_PIN_INITIALIZED | CKF_RNG`, never `CKF_WRITE_PROTECTED`).
    pub flags: u64,
    /// Sessions of this instance open on the token; `None` for
    /// `CK_UNAVAILABLE_INFORMATION`.
    pub session_count: Option<u64>,
    /// Read-write sessions of this instance open on the token; `None` as above.
    pub rw_session_count: Option<u64>,
}

/// One slot of the instance's slot list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotDescription {
    /// The slot id.
    pub slot: SlotId,
    /// The key ring's full name, for the slot description (`organizations/o/keyRings/r`).
    pub ring: String,
    /// Its token.
    pub token: TokenInfo,
}

/// A key ring named in the module configuration (`KEYWARD_TOKENS`, design §4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfiguredToken {
    /// The ring's full name as written in the configuration.
    pub ring: String,
    /// The token label as written in the configuration (default: the ring id).
    pub label: String,
}

/// `CK_MECHANISM_INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MechanismInfo {
    /// `ulMinKeySize`.
    pub min_key_size: u64,
    /// `ulMaxKeySize`.
    pub max_key_size: u64,
    /// `flags` (`CKF_ENCRYPT`, `CKF_SIGN`, ...).
    pub flags: u64,
}

/// The user type of a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UserType {
    /// `CKU_USER`.
    User,
    /// `CKU_SO`.
    So,
    /// `CKU_CONTEXT_SPECIFIC`.
    ContextSpecific,
}

/// A multi-part or one-shot cryptographic operation family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Operation {
    /// C_Encrypt*.
    Encrypt,
    /// C_Decrypt*.
    Decrypt,
    /// C_Sign*.
    Sign,
    /// C_Verify*.
    Verify,
    /// C_Digest*.
    Digest,
}

// ------------------------------------------------------------------------------ requests

/// One PKCS#11 request from the module. The comment on each names its C_ function(s) and
/// the [`Pkcs11Response`] variant of its success.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Pkcs11Request {
    /// Liveness check → [`Pkcs11Response::Pong`].
    Ping,
    /// The instance's slot list, fixed by the module at C_Initialize: every key ring the
    /// pre-login principal sees plus every `configured` one (a configured ring the principal
    /// does not see, or that does not exist, is listed all the same with the configured label:
    /// design §4) → [`Pkcs11Response::Slots`].
    ListSlots {
        /// The configured key rings.
        configured: Vec<ConfiguredToken>,
    },
    /// C_GetTokenInfo → [`Pkcs11Response::TokenInfo`].
    GetTokenInfo {
        /// The slot.
        slot: SlotId,
    },
    /// C_GetMechanismList → [`Pkcs11Response::Mechanisms`].
    GetMechanismList {
        /// The slot.
        slot: SlotId,
    },
    /// C_GetMechanismInfo → [`Pkcs11Response::MechanismInfo`].
    GetMechanismInfo {
        /// The slot.
        slot: SlotId,
        /// The `CKM_*` type.
        mechanism: u64,
    },
    /// C_OpenSession → [`Pkcs11Response::Session`].
    OpenSession {
        /// The slot.
        slot: SlotId,
        /// `CKF_RW_SESSION` was set.
        read_write: bool,
    },
    /// C_CloseSession → [`Pkcs11Response::Done`]. keywardd destroys the session's session
    /// objects. (A connection that closes closes all its sessions the same way.)
    CloseSession {
        /// The session.
        session: SessionId,
    },
    /// C_Login (login is per instance and slot; the module sends the session's slot) →
    /// [`Pkcs11Response::Done`]. Also sent by the module after a reconnect, replaying the
    /// instance's logins.
    Login {
        /// The slot.
        slot: SlotId,
        /// `CKU_USER`, `CKU_SO` or `CKU_CONTEXT_SPECIFIC`.
        user: UserType,
        /// The PIN: a service-account key, or `None` / empty for the pre-login principal.
        pin: Option<Pin>,
    },
    /// C_Logout → [`Pkcs11Response::Done`].
    Logout {
        /// The slot.
        slot: SlotId,
    },
    /// C_FindObjectsInit: every visible object matching `template`, all at once; the module
    /// pages them out through C_FindObjects → [`Pkcs11Response::Objects`].
    FindObjects {
        /// The session.
        session: SessionId,
        /// The search template.
        template: Vec<Attribute>,
    },
    /// C_GetAttributeValue → [`Pkcs11Response::Attributes`], one result per type, in order.
    GetAttributeValue {
        /// The session.
        session: SessionId,
        /// The object.
        object: ObjectHandle,
        /// The `CKA_*` types asked for.
        types: Vec<u64>,
    },
    /// C_SetAttributeValue → [`Pkcs11Response::Done`].
    SetAttributeValue {
        /// The session.
        session: SessionId,
        /// The object.
        object: ObjectHandle,
        /// The new values.
        template: Vec<Attribute>,
    },
    /// C_GetObjectSize → [`Pkcs11Response::Size`].
    GetObjectSize {
        /// The session.
        session: SessionId,
        /// The object.
        object: ObjectHandle,
    },
    /// C_CreateObject → [`Pkcs11Response::Object`].
    CreateObject {
        /// The session.
        session: SessionId,
        /// The template.
        template: Vec<Attribute>,
    },
    /// C_CopyObject → [`Pkcs11Response::Object`] (a Keyward key: `CKR_ACTION_PROHIBITED`).
    CopyObject {
        /// The session.
        session: SessionId,
        /// The object to copy.
        object: ObjectHandle,
        /// Attributes to change in the copy.
        template: Vec<Attribute>,
    },
    /// C_DestroyObject → [`Pkcs11Response::Done`].
    DestroyObject {
        /// The session.
        session: SessionId,
        /// The object.
        object: ObjectHandle,
    },
    /// C_GenerateKey → [`Pkcs11Response::Object`].
    GenerateKey {
        /// The session.
        session: SessionId,
        /// The key generation mechanism.
        mechanism: Mechanism,
        /// The key's template.
        template: Vec<Attribute>,
    },
    /// C_GenerateKeyPair → [`Pkcs11Response::KeyPair`].
    GenerateKeyPair {
        /// The session.
        session: SessionId,
        /// The key pair generation mechanism.
        mechanism: Mechanism,
        /// The public key's template.
        public_template: Vec<Attribute>,
        /// The private key's template.
        private_template: Vec<Attribute>,
    },
    /// C_WrapKey → [`Pkcs11Response::Data`] (the wrapped key).
    WrapKey {
        /// The session.
        session: SessionId,
        /// The wrapping mechanism.
        mechanism: Mechanism,
        /// The wrapping key.
        wrapping_key: ObjectHandle,
        /// The key to wrap.
        key: ObjectHandle,
    },
    /// C_UnwrapKey → [`Pkcs11Response::Object`].
    UnwrapKey {
        /// The session.
        session: SessionId,
        /// The unwrapping mechanism.
        mechanism: Mechanism,
        /// The unwrapping key.
        unwrapping_key: ObjectHandle,
        /// The wrapped key.
        wrapped: Blob,
        /// The new key's template.
        template: Vec<Attribute>,
    },
    /// C_DeriveKey → [`Pkcs11Response::Object`] (from a Keyward key:
    /// `CKR_MECHANISM_INVALID`, design §4).
    DeriveKey {
        /// The session.
        session: SessionId,
        /// The derivation mechanism.
        mechanism: Mechanism,
        /// The base key.
        base_key: ObjectHandle,
        /// The new key's template.
        template: Vec<Attribute>,
    },
    /// C_EncryptInit, C_DecryptInit, C_SignInit, C_VerifyInit, C_DigestInit →
    /// [`Pkcs11Response::Done`], or [`Pkcs11Response::GeneratedIv`] for an AES-GCM or
    /// AES-CTR encryption by a principal that may not decrypt with the key (design §9). The
    /// use gate of design §4 is checked here and bound to the operation.
    OperationInit {
        /// Which operation.
        op: Operation,
        /// The session.
        session: SessionId,
        /// The mechanism.
        mechanism: Mechanism,
        /// The key; `None` for a digest.
        key: Option<ObjectHandle>,
    },
    /// C_Encrypt, C_Decrypt, C_Sign, C_Digest (one-shot; ends the operation) →
    /// [`Pkcs11Response::Data`].
    OperationOneShot {
        /// Encrypt, Decrypt, Sign or Digest.
        op: Operation,
        /// The session.
        session: SessionId,
        /// The input.
        data: Blob,
    },
    /// C_EncryptUpdate, C_DecryptUpdate (output may be empty), C_SignUpdate,
    /// C_VerifyUpdate, C_DigestUpdate (output empty) → [`Pkcs11Response::Data`].
    OperationUpdate {
        /// Which operation.
        op: Operation,
        /// The session.
        session: SessionId,
        /// The input part.
        data: Blob,
    },
    /// C_EncryptFinal, C_DecryptFinal, C_SignFinal, C_DigestFinal (ends the operation) →
    /// [`Pkcs11Response::Data`].
    OperationFinal {
        /// Encrypt, Decrypt, Sign or Digest.
        op: Operation,
        /// The session.
        session: SessionId,
    },
    /// C_Verify (one-shot; ends the operation) → [`Pkcs11Response::Done`], or
    /// `CKR_SIGNATURE_INVALID` / `CKR_SIGNATURE_LEN_RANGE`.
    Verify {
        /// The session.
        session: SessionId,
        /// The signed data.
        data: Blob,
        /// The signature.
        signature: Blob,
    },
    /// C_VerifyFinal (ends the operation) → [`Pkcs11Response::Done`], or as [`Self::Verify`].
    VerifyFinal {
        /// The session.
        session: SessionId,
        /// The signature.
        signature: Blob,
    },
    /// Ends the active operation of `op` without a result: the module sends it for a
    /// C_EncryptInit / C_DecryptInit / C_SignInit / C_VerifyInit / C_DigestInit with a NULL
    /// mechanism (PKCS#11 3.0: cancels the active operation); keywardd answers
    /// [`Pkcs11Response::Done`] also when no operation was active.
    OperationCancel {
        /// Which operation.
        op: Operation,
        /// The session.
        session: SessionId,
    },
    /// C_GenerateRandom → [`Pkcs11Response::Data`] of exactly `len` bytes.
    GenerateRandom {
        /// The session.
        session: SessionId,
        /// How many bytes.
        len: u64,
    },
    /// Not a C_ function: asks keywardd for a shared-memory ring on this connection
    /// ([`crate::ring`]) → [`Pkcs11Response::Ring`], followed on the socket by one byte carrying
    /// the ring's descriptors. `CKR_FUNCTION_NOT_SUPPORTED`: keep to the socket.
    OpenRing,
}

impl Pkcs11Request {
    /// The session a request runs in, if it names one.
    pub fn session(&self) -> Option<SessionId> {
        use Pkcs11Request as R;
        match self {
            R::Ping
            | R::ListSlots { .. }
            | R::GetTokenInfo { .. }
            | R::GetMechanismList { .. }
            | R::GetMechanismInfo { .. }
            | R::OpenSession { .. }
            | R::Login { .. }
            | R::Logout { .. }
            | R::OpenRing => None,
            R::CloseSession { session }
            | R::FindObjects { session, .. }
            | R::GetAttributeValue { session, .. }
            | R::SetAttributeValue { session, .. }
            | R::GetObjectSize { session, .. }
            | R::CreateObject { session, .. }
            | R::CopyObject { session, .. }
            | R::DestroyObject { session, .. }
            | R::GenerateKey { session, .. }
            | R::GenerateKeyPair { session, .. }
            | R::WrapKey { session, .. }
            | R::UnwrapKey { session, .. }
            | R::DeriveKey { session, .. }
            | R::OperationInit { session, .. }
            | R::OperationOneShot { session, .. }
            | R::OperationUpdate { session, .. }
            | R::OperationFinal { session, .. }
            | R::Verify { session, .. }
            | R::VerifyFinal { session, .. }
            | R::OperationCancel { session, .. }
            | R::GenerateRandom { session, .. } => Some(*session),
        }
    }
}

/// The successful answer to a [`Pkcs11Request`]; each request names its variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Pkcs11Response {
    /// The answer to [`Pkcs11Request::Ping`].
    Pong,
    /// Success with nothing to return.
    Done,
    /// The instance's slots.
    Slots(Vec<SlotDescription>),
    /// A token's description.
    TokenInfo(TokenInfo),
    /// Mechanism types the token offers through Keyward.
    Mechanisms(Vec<u64>),
    /// One mechanism's description.
    MechanismInfo(MechanismInfo),
    /// A new session.
    Session(SessionId),
    /// Object handles (find results).
    Objects(Vec<ObjectHandle>),
    /// Per-attribute results, in the order asked.
    Attributes(Vec<AttrResult>),
    /// A new object.
    Object(ObjectHandle),
    /// A new key pair.
    KeyPair {
        /// The public key.
        public: ObjectHandle,
        /// The private key.
        private: ObjectHandle,
    },
    /// Output bytes (ciphertext, plaintext, signature, digest, wrapped key, random).
    Data(Blob),
    /// An object's size in bytes; `None` for `CK_UNAVAILABLE_INFORMATION`.
    Size(Option<u64>),
    /// The answer to a C_EncryptInit ([`Pkcs11Request::OperationInit`]) by a principal that
    /// may encrypt but not decrypt with the key (design §9 "Crypto semantics"): the IV
    /// (AES-GCM, 12 bytes) or initial counter block (AES-CTR, 16 bytes) keywardd generated
    /// for the operation. The module writes it into the client's `pIv` / `cb`, in the
    /// client's layout; the client sent zeros there.
    GeneratedIv(Blob),
    /// The answer to [`Pkcs11Request::OpenRing`]: the ring's size in bytes; its three
    /// descriptors (memfd, eventfd to keywardd, eventfd to the client) follow on the socket.
    Ring {
        /// The memfd's size.
        bytes: u64,
    },
}

// ------------------------------------------------------------------------------ slots

/// The slot id and token serial of the key ring named `ring` (its full name, e.g.
/// `organizations/acme/keyRings/root-ca`): SHA-256 of the name, the first 4 bytes as a
/// big-endian number with the top bit cleared (31 bits: fits Java's `slot=` int), the next 8
/// bytes in lower-case hex (16 characters: `CK_TOKEN_INFO.serialNumber`). Stable across
/// restarts; the module computes it for configured tokens while keywardd is down.
pub fn ring_identity(ring: &str) -> (SlotId, String) {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(ring.as_bytes());
    let slot = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) & 0x7fff_ffff;
    let serial: String = h[4..12].iter().map(|b| format!("{b:02x}")).collect();
    (SlotId(u64::from(slot)), serial)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};
    use crate::envelope::{Request, RequestBody, Response, ResponseBody};
    use proptest::prelude::*;

    fn attrs() -> Vec<Attribute> {
        vec![
            Attribute {
                ty: 0x0,
                value: AttrValue::Ulong(3),
            },
            Attribute {
                ty: 0x1,
                value: AttrValue::Bool(true),
            },
            Attribute {
                ty: 0x3,
                value: AttrValue::Bytes(Blob::from(&b"label"[..])),
            },
            Attribute {
                ty: CKA_ALLOWED_MECHANISMS,
                value: AttrValue::UlongList(vec![0x1087, u64::MAX]),
            },
        ]
    }

    fn gcm(layout: GcmLayout) -> Mechanism {
        Mechanism {
            ty: 0x1087,
            params: MechParams::Gcm(GcmParams {
                iv: Blob::new(vec![1; 12]),
                iv_bits: 96,
                aad: Blob::new(vec![2; 5]),
                tag_bits: 128,
                layout,
            }),
        }
    }

    fn every_request() -> Vec<Pkcs11Request> {
        use Pkcs11Request as R;
        let s = SessionId(7);
        let o = ObjectHandle(9);
        let oaep = OaepParams {
            hash: 0x250,
            mgf: 2,
            source: 1,
            source_data: Blob::new(vec![]),
        };
        vec![
            R::Ping,
            R::ListSlots {
                configured: vec![ConfiguredToken {
                    ring: "organizations/o/keyRings/r".into(),
                    label: "r".into(),
                }],
            },
            R::GetTokenInfo { slot: SlotId(1) },
            R::GetMechanismList { slot: SlotId(1) },
            R::GetMechanismInfo {
                slot: SlotId(1),
                mechanism: 0x1041,
            },
            R::OpenSession {
                slot: SlotId(0x7fff_ffff),
                read_write: true,
            },
            R::CloseSession { session: s },
            R::Login {
                slot: SlotId(1),
                user: UserType::User,
                pin: Some(Pin::new(b"kwAbC123.secret".to_vec())),
            },
            R::Login {
                slot: SlotId(1),
                user: UserType::So,
                pin: None,
            },
            R::Logout { slot: SlotId(1) },
            R::FindObjects {
                session: s,
                template: attrs(),
            },
            R::GetAttributeValue {
                session: s,
                object: o,
                types: vec![0, 1, 0x11, u64::MAX],
            },
            R::SetAttributeValue {
                session: s,
                object: o,
                template: attrs(),
            },
            R::GetObjectSize {
                session: s,
                object: o,
            },
            R::CreateObject {
                session: s,
                template: attrs(),
            },
            R::CopyObject {
                session: s,
                object: o,
                template: vec![],
            },
            R::DestroyObject {
                session: s,
                object: o,
            },
            R::GenerateKey {
                session: s,
                mechanism: Mechanism {
                    ty: 0x1080,
                    params: MechParams::None,
                },
                template: attrs(),
            },
            R::GenerateKeyPair {
                session: s,
                mechanism: Mechanism {
                    ty: 0x1040,
                    params: MechParams::None,
                },
                public_template: attrs(),
                private_template: vec![],
            },
            R::WrapKey {
                session: s,
                mechanism: Mechanism {
                    ty: 0x210A,
                    params: MechParams::Bytes(Blob::new(vec![0xA6; 4])),
                },
                wrapping_key: o,
                key: ObjectHandle(10),
            },
            R::UnwrapKey {
                session: s,
                mechanism: Mechanism {
                    ty: 0x1054,
                    params: MechParams::RsaAesKeyWrap(RsaAesKeyWrapParams {
                        aes_key_bits: 256,
                        oaep: oaep.clone(),
                    }),
                },
                unwrapping_key: o,
                wrapped: Blob::new(vec![5; 40]),
                template: attrs(),
            },
            R::DeriveKey {
                session: s,
                mechanism: Mechanism {
                    ty: 0x1050,
                    params: MechParams::Ecdh1Derive(Ecdh1DeriveParams {
                        kdf: 1,
                        shared_data: Blob::default(),
                        public_data: Blob::new(vec![4; 65]),
                    }),
                },
                base_key: o,
                template: vec![],
            },
            R::OperationInit {
                op: Operation::Encrypt,
                session: s,
                mechanism: gcm(GcmLayout::WithoutIvBits),
                key: Some(o),
            },
            R::OperationInit {
                op: Operation::Decrypt,
                session: s,
                mechanism: Mechanism {
                    ty: 0x9,
                    params: MechParams::Oaep(oaep),
                },
                key: Some(o),
            },
            R::OperationInit {
                op: Operation::Sign,
                session: s,
                mechanism: Mechanism {
                    ty: 0x43,
                    params: MechParams::Pss(PssParams {
                        hash: 0x250,
                        mgf: 2,
                        salt_len: 32,
                    }),
                },
                key: Some(o),
            },
            R::OperationInit {
                op: Operation::Encrypt,
                session: s,
                mechanism: Mechanism {
                    ty: 0x1086,
                    params: MechParams::Ctr(CtrParams {
                        counter_bits: 32,
                        cb: [3; 16],
                    }),
                },
                key: Some(o),
            },
            R::OperationInit {
                op: Operation::Digest,
                session: s,
                mechanism: Mechanism {
                    ty: 0x250,
                    params: MechParams::None,
                },
                key: None,
            },
            R::OperationOneShot {
                op: Operation::Sign,
                session: s,
                data: Blob::new(vec![1, 2, 3]),
            },
            R::OperationUpdate {
                op: Operation::Verify,
                session: s,
                data: Blob::new(vec![]),
            },
            R::OperationFinal {
                op: Operation::Digest,
                session: s,
            },
            R::Verify {
                session: s,
                data: Blob::new(vec![1]),
                signature: Blob::new(vec![2; 64]),
            },
            R::VerifyFinal {
                session: s,
                signature: Blob::new(vec![2; 64]),
            },
            R::OperationCancel {
                op: Operation::Decrypt,
                session: s,
            },
            R::GenerateRandom {
                session: s,
                len: 32,
            },
            R::OpenRing,
        ]
    }

    fn every_response() -> Vec<Pkcs11Response> {
        use Pkcs11Response as P;
        let token = TokenInfo {
            label: "Acme Root CA".into(),
            serial: "0123456789abcdef".into(),
            flags: 0x40D,
            session_count: Some(2),
            rw_session_count: None,
        };
        vec![
            P::Pong,
            P::Done,
            P::Slots(vec![SlotDescription {
                slot: SlotId(5),
                ring: "projects/p/keyRings/r".into(),
                token: token.clone(),
            }]),
            P::TokenInfo(token),
            P::Mechanisms(vec![0x1, 0x1087]),
            P::MechanismInfo(MechanismInfo {
                min_key_size: 2048,
                max_key_size: 4096,
                flags: 0x800,
            }),
            P::Session(SessionId(1)),
            P::Objects(vec![ObjectHandle(1), ObjectHandle(u64::MAX)]),
            P::Attributes(vec![
                AttrResult::Value(AttrValue::Bool(false)),
                AttrResult::Sensitive,
                AttrResult::TypeInvalid,
            ]),
            P::Object(ObjectHandle(3)),
            P::KeyPair {
                public: ObjectHandle(4),
                private: ObjectHandle(5),
            },
            P::Data(Blob::new(vec![9; 300])),
            P::Size(None),
            P::Size(Some(77)),
            P::GeneratedIv(Blob::new(vec![0x5A; 12])),
            P::Ring { bytes: 4096 },
        ]
    }

    #[test]
    fn every_request_and_response_round_trips_in_the_envelope() {
        for (i, r) in every_request().into_iter().enumerate() {
            let request = Request {
                id: i as u64,
                body: RequestBody::Pkcs11(r),
            };
            let bytes = encode(&request).unwrap();
            assert_eq!(decode::<Request>(&bytes).unwrap(), request);
        }
        for (i, r) in every_response().into_iter().enumerate() {
            let response = Response {
                id: i as u64,
                body: Ok(ResponseBody::Pkcs11(r)),
            };
            let bytes = encode(&response).unwrap();
            assert_eq!(decode::<Response>(&bytes).unwrap(), response);
        }
    }

    #[test]
    fn ping_keeps_index_zero() {
        // Variant 0 on the wire stays Ping / Pong: older peers' liveness checks still work.
        assert_eq!(encode(&Pkcs11Request::Ping).unwrap(), vec![0]);
        assert_eq!(encode(&Pkcs11Response::Pong).unwrap(), vec![0]);
    }

    #[test]
    fn debug_never_shows_secrets() {
        let login = Pkcs11Request::Login {
            slot: SlotId(1),
            user: UserType::User,
            pin: Some(Pin::new(b"kwAbC123.topsecretvalue".to_vec())),
        };
        let shown = format!("{login:?}");
        assert!(!shown.contains("topsecret"), "{shown}");
        assert!(shown.contains("Pin(<redacted>)"), "{shown}");
        let create = Pkcs11Request::CreateObject {
            session: SessionId(1),
            template: vec![Attribute {
                ty: 0x11,
                value: AttrValue::Bytes(Blob::new(vec![0x42; 16])),
            }],
        };
        let shown = format!("{create:?}");
        assert!(shown.contains("16 bytes"), "{shown}");
        assert!(!shown.contains("66"), "{shown}"); // 0x42 in decimal
        assert_eq!(format!("{:?}", AttrValue::Ulong(12345)), "Ulong(..)");
    }

    #[test]
    fn session_of_requests() {
        for r in every_request() {
            let named = matches!(
                r,
                Pkcs11Request::Ping
                    | Pkcs11Request::ListSlots { .. }
                    | Pkcs11Request::GetTokenInfo { .. }
                    | Pkcs11Request::GetMechanismList { .. }
                    | Pkcs11Request::GetMechanismInfo { .. }
                    | Pkcs11Request::OpenSession { .. }
                    | Pkcs11Request::Login { .. }
                    | Pkcs11Request::Logout { .. }
                    | Pkcs11Request::OpenRing
            );
            assert_eq!(r.session().is_none(), named, "{r:?}");
        }
    }

    #[test]
    fn attribute_kinds() {
        assert_eq!(attribute_kind(0x0), AttrKind::Ulong); // CKA_CLASS
        assert_eq!(attribute_kind(0x1), AttrKind::Bool); // CKA_TOKEN
        assert_eq!(attribute_kind(0x3), AttrKind::Bytes); // CKA_LABEL
        assert_eq!(attribute_kind(0x102), AttrKind::Bytes); // CKA_ID
        assert_eq!(attribute_kind(0x103), AttrKind::Bool); // CKA_SENSITIVE
        assert_eq!(attribute_kind(0x108), AttrKind::Bool); // CKA_SIGN
        assert_eq!(attribute_kind(0x10C), AttrKind::Bool); // CKA_DERIVE
        assert_eq!(attribute_kind(0x11), AttrKind::Bytes); // CKA_VALUE
        assert_eq!(attribute_kind(0x161), AttrKind::Ulong); // CKA_VALUE_LEN
        assert_eq!(attribute_kind(0x121), AttrKind::Ulong); // CKA_MODULUS_BITS
        assert_eq!(attribute_kind(0x180), AttrKind::Bytes); // CKA_EC_PARAMS
        assert_eq!(attribute_kind(0x4000_0211), AttrKind::Template); // CKA_WRAP_TEMPLATE
        assert_eq!(attribute_kind(0x4000_0600), AttrKind::UlongList);
        assert_eq!(attribute_kind(0x8000_0001), AttrKind::Bytes); // vendor
        assert_eq!(AttrValue::Bool(true).kind(), AttrKind::Bool);
    }

    #[test]
    fn a_blob_travels_as_a_byte_sequence_did() {
        // The wire format is unchanged by Blob's byte encoding: same postcard bytes as a
        // Vec<u8> (a sequence of u8), both ways, and JSON still an array of numbers.
        let bytes: Vec<u8> = (0..=255u8).chain(0..44).collect();
        let blob = Blob::new(bytes.clone());
        assert_eq!(encode(&blob).unwrap(), encode(&bytes).unwrap());
        let back: Blob = decode(&encode(&bytes).unwrap()).unwrap();
        assert_eq!(back.as_slice(), &bytes[..]);
        let as_vec: Vec<u8> = decode(&encode(&blob).unwrap()).unwrap();
        assert_eq!(as_vec, bytes);
        let json = serde_json::to_string(&Blob::new(vec![1, 2, 255])).unwrap();
        assert_eq!(json, "[1,2,255]");
        let from_json: Blob = serde_json::from_str("[1,2,255]").unwrap();
        assert_eq!(from_json.as_slice(), &[1, 2, 255]);
        // A length beyond the input is an error, not an allocation of that length.
        let mut lying = encode(&Blob::new(vec![7; 3])).unwrap();
        lying[0] = 0x7f;
        assert!(decode::<Blob>(&lying).is_err());
    }

    #[test]
    fn ring_identity_is_stable() {
        let (slot, serial) = ring_identity("organizations/acme/keyRings/root-ca");
        assert!(slot.0 <= 0x7fff_ffff);
        assert_eq!(serial.len(), 16);
        assert!(serial.bytes().all(|b| b.is_ascii_hexdigit()));
        // Pinned (sha256sum of the name): keywardd's store uses the same formula.
        let (slot, serial) = ring_identity("projects/p/keyRings/r");
        assert_eq!(slot, SlotId(736_758_884));
        assert_eq!(serial, "b71f3518b443ec75");
        assert_ne!(slot, ring_identity("projects/p/keyRings/s").0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Hostile bytes never panic the decoder of either direction.
        #[test]
        fn hostile_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode::<Pkcs11Request>(&bytes);
            let _ = decode::<Pkcs11Response>(&bytes);
            let _ = decode::<Request>(&bytes);
            let _ = decode::<Response>(&bytes);
        }

        /// Valid messages with bytes flipped or cut never panic either.
        #[test]
        fn mutated_messages_never_panic(
            which in 0usize..34,
            flip in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
            cut in any::<usize>(),
        ) {
            let requests = every_request();
            let r = &requests[which % requests.len()];
            let mut bytes = encode(r).unwrap();
            for (at, b) in flip {
                if !bytes.is_empty() {
                    let i = at % bytes.len();
                    bytes[i] ^= b;
                }
            }
            let keep = if bytes.is_empty() { 0 } else { cut % (bytes.len() + 1) };
            bytes.truncate(keep);
            let _ = decode::<Pkcs11Request>(&bytes);
            let _ = decode::<Pkcs11Response>(&bytes);
        }

        /// Arbitrary typed attributes and data round-trip.
        #[test]
        fn attributes_round_trip(
            ty in any::<u64>(),
            b in any::<bool>(),
            n in any::<u64>(),
            list in proptest::collection::vec(any::<u64>(), 0..8),
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let template = vec![
                Attribute { ty, value: AttrValue::Bool(b) },
                Attribute { ty, value: AttrValue::Ulong(n) },
                Attribute { ty, value: AttrValue::UlongList(list) },
                Attribute { ty, value: AttrValue::Bytes(Blob::new(bytes.clone())) },
            ];
            let r = Pkcs11Request::CreateObject { session: SessionId(n), template };
            prop_assert_eq!(decode::<Pkcs11Request>(&encode(&r).unwrap()).unwrap(), r);
            let p = Pkcs11Response::Data(Blob::new(bytes));
            prop_assert_eq!(decode::<Pkcs11Response>(&encode(&p).unwrap()).unwrap(), p);
        }
    }
}
