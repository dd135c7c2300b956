//! keywardd's access to the one backing PKCS#11 token (SoftHSM2 or any HSM), through cryptoki.
//!
//! [`Token::open`] loads the module, finds the token by label, logs in with the user PIN (a
//! [`secrecy::SecretString`]; never logged) and probes its mechanisms. Everything else
//! addresses keys by their internal `CKA_ID`, never by handle: key generation with Keyward's
//! custody attributes ([`Token::generate_key`]), public keys as SPKI/PEM, listing and
//! destroying objects for reconciliation, and the crypto operations the daemon serves.
//! Every failure is a [`TokenError`] that keeps the token's `CK_RV` ([`TokenError::ck_rv`]).
// `unsafe` (design §7) only in the C_Initialize arguments of `[token] init_args` (token.rs,
// `context`: one block) and the raw two-call helpers cryptoki lacks (raw.rs).
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod audit;
mod capabilities;
mod error;
mod export;
mod generic;
mod import;
mod keys;
mod kwp;
mod mech;
mod ops;
pub mod public_key;
mod raw;
mod session_objects;
mod token;

pub use audit::{HeadObject, HeadStorage, HEAD_APPLICATION, HEAD_ID, HEAD_LABEL};
pub use capabilities::{Capabilities, CapabilityLine, Family, Half, Mechanisms, OaepHash, Probe};
pub use cryptoki::mechanism::MechanismType;
pub use cryptoki::object::{KeyType, ObjectClass};
pub use error::{rv_to_ck_rv, Result, TokenError};
pub use export::WrapMechanism;
pub use generic::{GenericKind, GenericSpec, GenericUsage, GENERIC_SECRET_MAX, GENERIC_SECRET_MIN};
pub use import::{spki_kind, ImportTarget};
pub use keys::{GeneratedKey, KeySpec, KeyUsage, ObjectInfo, PublicKey, OBJECT_ID_LEN};
pub use kwp::Rfc5649;
pub use mech::{Hash, OpMechanism, OpOutput, OpTarget};
pub use ops::{GcmCiphertext, SignMechanism, GCM_IV_LEN, GCM_TAG_LEN};
pub use session_objects::{
    session_attribute, SessionGeneration, SessionObject, SESSION_OBJECT_LABEL,
};
pub use token::{Token, TokenSummary};
