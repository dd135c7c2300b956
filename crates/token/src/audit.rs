//! The token side of keywardd's audit checkpoints (design §6): where the signed chain head
//! is kept in the token, and the batch verification of checkpoint signatures with the audit
//! public key. keywardd's `audit::checkpoint` decides what is signed and when; the token
//! calls are here, so a token that stores the head differently changes this one module.
//!
//! The head is a `CKO_DATA` object (`CKA_TOKEN`, `CKA_PRIVATE`, `CKA_LABEL` [`HEAD_LABEL`],
//! `CKA_APPLICATION` [`HEAD_APPLICATION`]) whose `CKA_VALUE` is the caller's encoding.

use crate::error::Result;
use crate::token::Token;
use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

/// `CKA_LABEL` of the `CKO_DATA` object holding the latest signed head.
pub const HEAD_LABEL: &str = "keyward-audit-head";
/// `CKA_APPLICATION` of the signed-head object.
pub const HEAD_APPLICATION: &[u8] = b"keyward";

/// The token object that holds a signed head this process wrote (opaque; valid while the
/// object exists).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadObject(ObjectHandle);

fn head_template() -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(true),
        Attribute::Label(HEAD_LABEL.as_bytes().to_vec()),
    ]
}

/// The `CKA_VALUE`s of every signed-head object in the token (normally one).
fn head_values(s: &Session) -> cryptoki::error::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for h in s.find_objects(&head_template())? {
        match s.get_attributes(h, &[AttributeType::Value]) {
            Ok(attrs) => {
                for a in attrs {
                    if let Attribute::Value(v) = a {
                        out.push(v);
                    }
                }
            }
            Err(CryptokiError::Pkcs11(RvError::ObjectHandleInvalid, _)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

impl Token {
    /// The values of every signed-head object in the token (normally one; two after a crash
    /// while one was replaced).
    pub fn signed_heads(&self) -> Result<Vec<Vec<u8>>> {
        self.with_session(head_values)
    }

    /// Writes `value` as the token's signed head. PKCS#11 does not let `CKA_VALUE` of a data
    /// object change after creation (no footnote 8 in its attribute table; SoftHSM2 answers
    /// `CKR_ATTRIBUTE_READ_ONLY`), so the object is replaced: the new one is created before
    /// the old ones are destroyed, and the token is never without a signed head. A crash in
    /// between leaves two ([`Token::signed_heads`] returns both).
    ///
    /// `previous` is the head this process wrote last: it is destroyed without searching the
    /// token (a search rescans SoftHSM2's whole store, about 18 ms at 1,000 keys, while every
    /// operation waits on the exclusive lock); without it, or if it is gone, every head found
    /// is. The section creates and destroys data objects only, so the key-handle cache stays.
    pub fn store_signed_head(
        &self,
        value: &[u8],
        previous: Option<HeadObject>,
    ) -> Result<HeadObject> {
        let previous = previous.map(|p| p.0);
        self.with_exclusive_data_session(|s| {
            let existing = match previous {
                Some(h) => vec![h],
                None => s.find_objects(&head_template())?,
            };
            let made = s.create_object(&[
                Attribute::Class(ObjectClass::DATA),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Label(HEAD_LABEL.as_bytes().to_vec()),
                Attribute::Application(HEAD_APPLICATION.to_vec()),
                Attribute::Value(value.to_vec()),
            ])?;
            for h in existing {
                match s.destroy_object(h) {
                    Ok(()) => {}
                    // Our last head is gone (removed by hand, or the token was reset): look.
                    Err(CryptokiError::Pkcs11(RvError::ObjectHandleInvalid, _))
                        if previous.is_some() =>
                    {
                        for other in s.find_objects(&head_template())? {
                            if other != made {
                                s.destroy_object(other)?;
                            }
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(HeadObject(made))
        })
    }

    /// Verifies each `(digest, raw r || s signature)` with `CKM_ECDSA` and the token public
    /// key whose `CKA_ID` is `id`, in one session. `None` when the token has no such key.
    pub fn verify_ecdsa_digests(
        &self,
        id: &[u8],
        items: &[([u8; 32], &[u8])],
    ) -> Result<Option<Vec<bool>>> {
        self.with_session(|s| {
            let keys = s.find_objects(&[
                Attribute::Token(true),
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::Id(id.to_vec()),
            ])?;
            let Some(key) = keys.first() else {
                return Ok(None);
            };
            let mut out = Vec::with_capacity(items.len());
            for (digest, signature) in items {
                match s.verify(&Mechanism::Ecdsa, *key, digest, signature) {
                    Ok(()) => out.push(true),
                    Err(CryptokiError::Pkcs11(
                        RvError::SignatureInvalid | RvError::SignatureLenRange,
                        _,
                    )) => out.push(false),
                    Err(e) => return Err(e),
                }
            }
            Ok(Some(out))
        })
    }
}
