//! The token side of keywardd's audit checkpoints (design §6): where the signed chain head
//! is kept in the token, and the batch verification of checkpoint signatures with the audit
//! public key. keywardd's `audit::checkpoint` decides what is signed and when; the token
//! calls are here, so a token that stores the head differently changes this one module.
//!
//! # Where the head lives (design §6), learnt once per [`Token`] ([`Token::head_storage`])
//! 1. [`HeadStorage::DataObject`]: a `CKO_DATA` object (`CKA_TOKEN`, `CKA_PRIVATE`,
//!    `CKA_LABEL` [`HEAD_LABEL`], `CKA_APPLICATION` [`HEAD_APPLICATION`]) whose `CKA_VALUE` is
//!    the caller's encoding, replaced at each store (a data object's value is read-only).
//! 2. [`HeadStorage::Label`], on a token that refuses data objects (NSS softokn 3.87 refuses
//!    token data objects with any template): one dedicated token object, an AES key that can
//!    do nothing (`CKA_ID` [`HEAD_ID`], private, sensitive, not extractable, every usage
//!    FALSE), whose `CKA_LABEL` is rewritten with `C_SetAttributeValue` at each store:
//!    [`HEAD_LABEL`], a space and the value in hex. Never a new object per checkpoint.
//! 3. [`HeadStorage::Unavailable`] where neither works: no head is kept in the token, and
//!    `status` and `audit verify` say so and what protection is lost.
//!
//! A head object that exists decides (1 or 2) without a trial; otherwise the trials create
//! and destroy a data object, then create the dedicated object and rewrite its label.

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
/// `CKA_ID` of the dedicated head object ([`HeadStorage::Label`]).
pub const HEAD_ID: &[u8] = b"keyward-audit-head";

/// Where this token keeps the signed head (see the module header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadStorage {
    /// A `CKO_DATA` object, replaced at each store.
    DataObject,
    /// One dedicated object whose `CKA_LABEL` is rewritten.
    Label,
    /// No head in the token: why (the token's refusals).
    Unavailable(String),
}

impl HeadStorage {
    /// A short name for logs and reports.
    pub fn describe(&self) -> String {
        match self {
            HeadStorage::DataObject => "a data object".into(),
            HeadStorage::Label => "the label of a dedicated object".into(),
            HeadStorage::Unavailable(why) => format!("none ({why})"),
        }
    }
}

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

fn dedicated_template() -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Token(true),
        Attribute::Id(HEAD_ID.to_vec()),
    ]
}

/// The label that holds `value` ([`HeadStorage::Label`]).
fn label_of(value: &[u8]) -> Vec<u8> {
    let mut l = HEAD_LABEL.as_bytes().to_vec();
    l.push(b' ');
    for b in value {
        l.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    l
}

/// The value a dedicated object's label holds; `None` for the bare label (nothing stored
/// yet) or anything else. A malformed label gives its bytes back unparsed, so the caller
/// reports a malformed head rather than none.
fn value_of(label: &[u8]) -> Option<Vec<u8>> {
    let rest = label.strip_prefix(HEAD_LABEL.as_bytes())?;
    let hex = rest.strip_prefix(b" ")?;
    let parsed: Option<Vec<u8>> = hex
        .chunks(2)
        .map(|c| {
            std::str::from_utf8(c)
                .ok()
                .filter(|t| t.len() == 2)
                .and_then(|t| u8::from_str_radix(t, 16).ok())
        })
        .collect();
    Some(parsed.unwrap_or_else(|| hex.to_vec()))
}

/// Errors that say the token cannot do what a trial asked (not that it is broken).
fn refusal(e: &CryptokiError) -> bool {
    !matches!(
        e,
        CryptokiError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::DeviceMemory
                | RvError::HostMemory
                | RvError::TokenNotPresent
                | RvError::UserNotLoggedIn
                | RvError::CryptokiNotInitialized,
            _
        )
    )
}

/// Learns where the head lives (module header); keeps the dedicated object if it chose it.
fn learn_storage(s: &Session) -> cryptoki::error::Result<HeadStorage> {
    if !s.find_objects(&head_template())?.is_empty() {
        return Ok(HeadStorage::DataObject);
    }
    if !s.find_objects(&dedicated_template())?.is_empty() {
        return Ok(HeadStorage::Label);
    }
    let data = match s.create_object(&[
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Label(b"keyward-probe-data".to_vec()),
        Attribute::Application(HEAD_APPLICATION.to_vec()),
        Attribute::Value(vec![0]),
    ]) {
        Ok(h) => {
            s.destroy_object(h)?;
            return Ok(HeadStorage::DataObject);
        }
        Err(e) if refusal(&e) => e,
        Err(e) => return Err(e),
    };
    let made = s.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Derive(false),
            Attribute::ValueLen(16.into()),
            Attribute::Id(HEAD_ID.to_vec()),
            Attribute::Label(HEAD_LABEL.as_bytes().to_vec()),
        ],
    );
    let dedicated = made.and_then(|h| {
        s.update_attributes(h, &[Attribute::Label(label_of(&[0]))])?;
        s.update_attributes(h, &[Attribute::Label(HEAD_LABEL.as_bytes().to_vec())])?;
        Ok(h)
    });
    match dedicated {
        Ok(_) => Ok(HeadStorage::Label),
        Err(e) if refusal(&e) => {
            // Whatever the failed trial left (a key whose label could not be rewritten).
            for h in s.find_objects(&dedicated_template())? {
                s.destroy_object(h)?;
            }
            Ok(HeadStorage::Unavailable(format!(
                "the token refuses data objects ({data}) and a dedicated object with a \
                 rewritable label ({e})"
            )))
        }
        Err(e) => Err(e),
    }
}

/// The values of every signed-head object in the token (normally one).
fn head_values(s: &Session) -> cryptoki::error::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for h in s.find_objects(&dedicated_template())? {
        match s.get_attributes(h, &[AttributeType::Label]) {
            Ok(attrs) => {
                for a in attrs {
                    if let Attribute::Label(l) = a {
                        out.extend(value_of(&l));
                    }
                }
            }
            Err(CryptokiError::Pkcs11(RvError::ObjectHandleInvalid, _)) => {}
            Err(e) => return Err(e),
        }
    }
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
    /// Where this token keeps the signed head: learnt at the first call (trials that hold
    /// the object store exclusively; see the module header), then remembered.
    pub fn head_storage(&self) -> Result<HeadStorage> {
        let mut known = self.head_storage_cell().lock();
        if let Some(k) = known.as_ref() {
            return Ok(k.clone());
        }
        let learnt = self.with_exclusive_data_session(learn_storage)?;
        match &learnt {
            HeadStorage::Unavailable(why) => {
                tracing::warn!(reason = %why, "the token cannot keep the signed audit head")
            }
            other => tracing::info!(storage = %other.describe(), "signed audit head storage"),
        }
        *known = Some(learnt.clone());
        Ok(learnt)
    }

    /// The values of every signed-head object in the token (normally one; two after a crash
    /// while a data object was replaced).
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
    ///
    /// With [`HeadStorage::Label`] the dedicated object's label is rewritten instead; with
    /// [`HeadStorage::Unavailable`] this is [`TokenError::InvalidArgument`] naming why.
    pub fn store_signed_head(
        &self,
        value: &[u8],
        previous: Option<HeadObject>,
    ) -> Result<HeadObject> {
        match self.head_storage()? {
            HeadStorage::DataObject => {}
            HeadStorage::Label => {
                return self.with_exclusive_data_session(|s| {
                    let h = match previous {
                        Some(p) => p.0,
                        None => match s.find_objects(&dedicated_template())?.first() {
                            Some(h) => *h,
                            None => {
                                return Err(CryptokiError::Pkcs11(
                                    RvError::ObjectHandleInvalid,
                                    cryptoki::context::Function::FindObjects,
                                ))
                            }
                        },
                    };
                    s.update_attributes(h, &[Attribute::Label(label_of(value))])?;
                    Ok(HeadObject(h))
                });
            }
            HeadStorage::Unavailable(why) => {
                return Err(crate::error::TokenError::InvalidArgument(format!(
                    "the token cannot keep the signed audit head: {why}"
                )))
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_holds_the_value_in_hex_and_the_bare_label_holds_none() {
        let value: Vec<u8> = (0..104u8).collect();
        let label = label_of(&value);
        assert!(label.starts_with(b"keyward-audit-head 00010203"));
        assert_eq!(value_of(&label), Some(value));
        assert_eq!(value_of(HEAD_LABEL.as_bytes()), None);
        assert_eq!(value_of(b"another label"), None);
        // Malformed hex comes back unparsed, to be reported as a malformed head.
        assert_eq!(value_of(b"keyward-audit-head zz"), Some(b"zz".to_vec()));
    }
}
