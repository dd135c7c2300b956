//! The handshake: the first frame each way on every connection.
//!
//! The client sends a [`Hello`] (protocol version, client kind, the instance secret once it
//! has one, optional service-account credentials); keywardd answers [`HelloReply::Welcome`]
//! with the instance secret, or [`HelloReply::Refused`].
//!
//! **Version mismatch.** Both sides check the version before decoding anything else, so a
//! mismatch is reported as such even if a later version changes these messages: the first
//! field of a `Hello` is its `protocol_version`, and the first field of either reply is the
//! daemon's `protocol_version`. These two rules, and the frame layout, never change. The
//! daemon answers a mismatching `Hello` with `Refused { rv: CKR_DEVICE_ERROR, .. }` and a
//! message naming both versions; the client turns either reply from a daemon of another
//! version into [`WireError::VersionMismatch`]. `CKR_DEVICE_ERROR` because nearly every
//! C_ function may return it, and "the device (keywardd) does not work with this module"
//! is what it means; `CKR_TOKEN_NOT_PRESENT` would make clients wait for it to come back.

use crate::codec::decode;
use crate::error::WireError;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

/// The protocol version this build speaks. Bump it on any incompatible change to a message.
pub const PROTOCOL_VERSION: u32 = 1;

/// Who is connecting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ClientKind {
    /// The PKCS#11 module, on behalf of one module instance (one `C_Initialize`).
    Module,
    /// keywardctl.
    Ctl,
}

/// The secret keywardd issues a module instance at its first connection (design §1).
///
/// Every further connection of the instance presents it. Compared in constant time, zeroised
/// on drop, and never printed by `Debug`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstanceSecret([u8; 32]);

impl InstanceSecret {
    /// Wraps 32 secret bytes (keywardd draws them from a CSPRNG).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        InstanceSecret(bytes)
    }

    /// The secret bytes.
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }
}

impl PartialEq for InstanceSecret {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}
impl Eq for InstanceSecret {}

impl fmt::Debug for InstanceSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InstanceSecret(<redacted>)")
    }
}

impl Drop for InstanceSecret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// A service-account key (design §1: `kw` + 6-char key id + `.` + 22-char base64url secret).
///
/// Zeroised on drop; compared in constant time (for equal lengths); `Debug` shows only the
/// key id, the part before the first `.`, and nothing at all if there is no `.`. The format
/// is not checked here: keywardd does that, and refuses a malformed key like a wrong one.
#[derive(Clone)]
pub struct ServiceAccountKey(String);

impl ServiceAccountKey {
    /// Wraps a key as read from a credential file or given as a PIN.
    pub fn new(key: impl Into<String>) -> Self {
        ServiceAccountKey(key.into())
    }

    /// The whole key, secret included.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// The key id: the part before the first `.`, if there is one.
    pub fn key_id(&self) -> Option<&str> {
        self.0.split_once('.').map(|(id, _)| id)
    }
}

impl PartialEq for ServiceAccountKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}
impl Eq for ServiceAccountKey {}

impl fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.key_id() {
            Some(id) => write!(f, "ServiceAccountKey({id:?}.<redacted>)"),
            None => f.write_str("ServiceAccountKey(<redacted>)"),
        }
    }
}

impl Drop for ServiceAccountKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl Serialize for ServiceAccountKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ServiceAccountKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(ServiceAccountKey)
    }
}

/// The client's first frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The client's [`PROTOCOL_VERSION`]. Must stay the first field.
    pub protocol_version: u32,
    /// Module or keywardctl.
    pub client: ClientKind,
    /// The instance secret from an earlier `Welcome` of this module instance; `None` on the
    /// instance's first connection (and for keywardctl).
    pub instance_secret: Option<InstanceSecret>,
    /// Credentials from `KEYWARD_CREDENTIALS`, if set.
    pub credentials: Option<ServiceAccountKey>,
}

impl Hello {
    /// A `Hello` of this build's [`PROTOCOL_VERSION`].
    pub fn new(
        client: ClientKind,
        instance_secret: Option<InstanceSecret>,
        credentials: Option<ServiceAccountKey>,
    ) -> Self {
        Hello {
            protocol_version: PROTOCOL_VERSION,
            client,
            instance_secret,
            credentials,
        }
    }
}

/// The daemon's answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    /// Accepted. Must stay variant 0 with `protocol_version` first.
    Welcome {
        /// The daemon's [`PROTOCOL_VERSION`].
        protocol_version: u32,
        /// The instance's secret: new on its first connection, else the one it presented.
        instance_secret: InstanceSecret,
    },
    /// Refused; the daemon closes the connection. Must stay variant 1 with
    /// `protocol_version` first.
    Refused {
        /// The daemon's [`PROTOCOL_VERSION`], so the client can tell a version mismatch.
        protocol_version: u32,
        /// The CK_RV the refusal maps to.
        rv: u64,
        /// Why, for logs and keywardctl's output.
        message: String,
    },
}

/// Reads the protocol version at the start of an encoded [`Hello`], without decoding the rest.
pub fn hello_version(payload: &[u8]) -> Result<u32, WireError> {
    postcard::take_from_bytes::<u32>(payload)
        .map(|(v, _)| v)
        .map_err(WireError::Decode)
}

/// Reads the daemon's protocol version at the start of an encoded [`HelloReply`].
pub fn reply_version(payload: &[u8]) -> Result<u32, WireError> {
    // A variant index (varint u32) and then the first field of either variant.
    postcard::take_from_bytes::<(u32, u32)>(payload)
        .map(|((_, v), _)| v)
        .map_err(WireError::Decode)
}

/// Decodes a client's [`Hello`] payload, checking the version first.
pub fn decode_hello(payload: &[u8]) -> Result<Hello, WireError> {
    let theirs = hello_version(payload)?;
    if theirs != PROTOCOL_VERSION {
        return Err(WireError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs,
        });
    }
    decode(payload)
}

/// Decodes the daemon's [`HelloReply`] payload into the instance secret, checking the version
/// first: a reply of a version other than `ours` (the one the client's `Hello` carried,
/// normally [`PROTOCOL_VERSION`]) is [`WireError::VersionMismatch`], a refusal
/// [`WireError::Refused`].
pub fn decode_reply(payload: &[u8], ours: u32) -> Result<InstanceSecret, WireError> {
    let theirs = reply_version(payload)?;
    if theirs != ours {
        return Err(WireError::VersionMismatch { ours, theirs });
    }
    match decode(payload)? {
        HelloReply::Welcome {
            instance_secret, ..
        } => Ok(instance_secret),
        HelloReply::Refused { rv, message, .. } => Err(WireError::Refused { rv, message }),
    }
}

/// The refusal keywardd sends for a `Hello` of version `theirs`.
pub fn version_refusal(theirs: u32) -> HelloReply {
    HelloReply::Refused {
        protocol_version: PROTOCOL_VERSION,
        rv: crate::rv::CKR_DEVICE_ERROR,
        message: format!(
            "protocol version mismatch: keywardd speaks {PROTOCOL_VERSION}, the client {theirs}; \
             install a module and keywardctl of the daemon's release"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode;
    use crate::rv;

    const KEY: &str = "kwAbC123.abcdefghijklmnopqrstuv";

    #[test]
    fn key_debug_shows_only_the_id() {
        let key = ServiceAccountKey::new(KEY);
        let shown = format!("{key:?}");
        assert!(shown.contains("kwAbC123"), "{shown}");
        assert!(!shown.contains("abcdefghij"), "{shown}");
        assert_eq!(key.key_id(), Some("kwAbC123"));
        let no_dot = ServiceAccountKey::new("secretwithoutdot");
        assert_eq!(format!("{no_dot:?}"), "ServiceAccountKey(<redacted>)");
        assert_eq!(no_dot.key_id(), None);
        // Through a Hello too.
        let hello = Hello::new(ClientKind::Ctl, None, Some(key));
        let shown = format!("{hello:?}");
        assert!(!shown.contains("abcdefghij"), "{shown}");
    }

    #[test]
    fn instance_secret_debug_is_redacted() {
        let s = InstanceSecret::from_bytes([0xAB; 32]);
        let shown = format!("{s:?}");
        assert_eq!(shown, "InstanceSecret(<redacted>)");
        let hello = Hello::new(ClientKind::Module, Some(s), None);
        let shown = format!("{hello:?}");
        assert!(!shown.contains("171"), "{shown}");
        assert!(!shown.to_lowercase().contains("ab, ab"), "{shown}");
    }

    #[test]
    fn secrets_compare_by_value() {
        assert_eq!(
            InstanceSecret::from_bytes([1; 32]),
            InstanceSecret::from_bytes([1; 32])
        );
        let mut other = [1; 32];
        other[31] = 2;
        assert_ne!(
            InstanceSecret::from_bytes([1; 32]),
            InstanceSecret::from_bytes(other)
        );
        assert_eq!(ServiceAccountKey::new(KEY), ServiceAccountKey::new(KEY));
        assert_ne!(ServiceAccountKey::new(KEY), ServiceAccountKey::new("kw.x"));
    }

    #[test]
    fn hello_round_trip_and_version_first() {
        let hello = Hello::new(
            ClientKind::Module,
            Some(InstanceSecret::from_bytes([7; 32])),
            Some(ServiceAccountKey::new(KEY)),
        );
        let bytes = encode(&hello).unwrap();
        assert_eq!(hello_version(&bytes).unwrap(), PROTOCOL_VERSION);
        assert_eq!(decode_hello(&bytes).unwrap(), hello);
        // The instance secret is 32 raw bytes, not length-prefixed.
        let bare = encode(&Hello::new(ClientKind::Ctl, None, None)).unwrap();
        assert_eq!(bytes.len(), bare.len() + 32 + 1 + KEY.len());
    }

    #[test]
    fn hello_of_another_version_is_a_mismatch_whatever_follows() {
        // Version 2, then bytes no v1 Hello could decode.
        let bytes = [2u8, 0xff, 0xff, 0xff];
        assert!(matches!(
            decode_hello(&bytes),
            Err(WireError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: 2
            })
        ));
        let mut hello = Hello::new(ClientKind::Ctl, None, None);
        hello.protocol_version = 900;
        assert!(matches!(
            decode_hello(&encode(&hello).unwrap()),
            Err(WireError::VersionMismatch { theirs: 900, .. })
        ));
    }

    #[test]
    fn replies() {
        let welcome = HelloReply::Welcome {
            protocol_version: PROTOCOL_VERSION,
            instance_secret: InstanceSecret::from_bytes([9; 32]),
        };
        let secret = decode_reply(&encode(&welcome).unwrap(), PROTOCOL_VERSION).unwrap();
        assert_eq!(secret.expose_secret(), &[9; 32]);

        let refused = HelloReply::Refused {
            protocol_version: PROTOCOL_VERSION,
            rv: rv::CKR_PIN_INCORRECT,
            message: "bad key".into(),
        };
        assert!(matches!(
            decode_reply(&encode(&refused).unwrap(), PROTOCOL_VERSION),
            Err(WireError::Refused { rv: rv::CKR_PIN_INCORRECT, ref message }) if message == "bad key"
        ));

        // A version refusal from a daemon of version 2 is a mismatch for the client.
        let from_v2 = [1u8, 2, 0x30, 0];
        assert!(matches!(
            decode_reply(&from_v2, PROTOCOL_VERSION),
            Err(WireError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: 2
            })
        ));
        // As is a v2 Welcome whose layout changed.
        assert!(matches!(
            decode_reply(&[0u8, 2], PROTOCOL_VERSION),
            Err(WireError::VersionMismatch { theirs: 2, .. })
        ));
    }

    #[test]
    fn version_refusal_is_device_error_naming_both_versions() {
        match version_refusal(7) {
            HelloReply::Refused {
                protocol_version,
                rv,
                message,
            } => {
                assert_eq!(protocol_version, PROTOCOL_VERSION);
                assert_eq!(rv, rv::CKR_DEVICE_ERROR);
                assert!(
                    message.contains(&format!("speaks {PROTOCOL_VERSION}")),
                    "{message}"
                );
                assert!(message.contains("client 7"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
}
