//! Session objects of the backing token (design §4 "Session objects"): objects with
//! `CKA_TOKEN=FALSE` that keywardd makes for module sessions. They are not Keyward keys:
//! keywardd tracks which module session owns each and destroys it when that session closes.
//!
//! - They are made in dedicated token sessions (`Token::with_home_session`: one per
//!   concurrent creation, kept idle between), never pooled and never closed while they
//!   work: PKCS#11 §5.6 destroys a session object when the session that created it closes,
//!   and the pool closes surplus sessions. Session objects
//!   are visible to every session of keywardd's process (the application), so operations
//!   and destruction use the pool as usual, by handle.
//! - Every one carries the internal `CKA_LABEL`/`CKA_ID` [`SESSION_OBJECT_LABEL`] (22 bytes:
//!   never a Keyward key's 16-byte internal `CKA_ID`, so no search for a key finds one); the
//!   client's `CKA_ID`/`CKA_LABEL` stay in keywardd.
//! - Templates pass through [`session_attribute`], a short list of attribute types (what key
//!   generation and public-key, secret-key and data-object creation need); `CKA_TOKEN`,
//!   `CKA_DERIVE` and `CKA_COPYABLE` are set here (FALSE), never by the client.
//! - [`Token::destroy_session_objects`] removes every session object keywardd's process
//!   holds (at start; with SoftHSM2 none survives a process, an HSM may differ).

use crate::capabilities::Half;
use crate::error::{Result, TokenError};
use crate::token::Token;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{
    Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass, ObjectHandle,
};
use keyward_wire::pkcs11::{AttrResult, AttrValue, Attribute as WireAttribute, Blob};

/// The internal `CKA_LABEL` and `CKA_ID` of every session object keywardd makes.
pub const SESSION_OBJECT_LABEL: &[u8] = b"keyward-session-object";

use keyward_wire::rv::{CKR_ATTRIBUTE_TYPE_INVALID, CKR_ATTRIBUTE_VALUE_INVALID};

/// One session object in the token: its handle (valid in every session of the process) and
/// the generation of the home session that made it (a handle of a broken home session is
/// refused here, never sent to a token that may have given it to a new object).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionObject(ObjectHandle, u64);

/// A generation of session objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionGeneration {
    /// `CKM_AES_KEY_GEN`.
    AesKey,
    /// `CKM_GENERIC_SECRET_KEY_GEN`.
    GenericSecret,
    /// `CKM_EC_KEY_PAIR_GEN`.
    EcPair,
    /// `CKM_RSA_PKCS_KEY_PAIR_GEN`.
    RsaPair,
}

/// The token attribute for a client's template entry, or the CK_RV that refuses it
/// (`CKR_ATTRIBUTE_TYPE_INVALID` for a type not on the list, `CKR_ATTRIBUTE_VALUE_INVALID`
/// for a value of the wrong kind or an unknown class or key type). `CKA_TOKEN`, `CKA_ID`,
/// `CKA_LABEL`, `CKA_DERIVE` and `CKA_COPYABLE` are keywardd's and are refused here.
pub fn session_attribute(a: &WireAttribute) -> std::result::Result<Attribute, u64> {
    let bad = CKR_ATTRIBUTE_VALUE_INVALID;
    let flag = || match a.value {
        AttrValue::Bool(b) => Ok(b),
        _ => Err(bad),
    };
    let ulong = || match a.value {
        AttrValue::Ulong(v) => Ok(v),
        _ => Err(bad),
    };
    let bytes = || match &a.value {
        AttrValue::Bytes(b) => Ok(b.as_slice().to_vec()),
        _ => Err(bad),
    };
    let ty = AttributeType::try_from(
        cryptoki_sys::CK_ATTRIBUTE_TYPE::try_from(a.ty).map_err(|_| CKR_ATTRIBUTE_TYPE_INVALID)?,
    )
    .map_err(|_| CKR_ATTRIBUTE_TYPE_INVALID)?;
    Ok(match ty {
        AttributeType::Class => {
            Attribute::Class(ObjectClass::try_from(to_ck(ulong()?)?).map_err(|_| bad)?)
        }
        AttributeType::KeyType => {
            Attribute::KeyType(KeyType::try_from(to_ck(ulong()?)?).map_err(|_| bad)?)
        }
        AttributeType::ValueLen => Attribute::ValueLen(to_ck(ulong()?)?.into()),
        AttributeType::ModulusBits => Attribute::ModulusBits(to_ck(ulong()?)?.into()),
        AttributeType::Private => Attribute::Private(flag()?),
        AttributeType::Sensitive => Attribute::Sensitive(flag()?),
        AttributeType::Extractable => Attribute::Extractable(flag()?),
        AttributeType::Encrypt => Attribute::Encrypt(flag()?),
        AttributeType::Decrypt => Attribute::Decrypt(flag()?),
        AttributeType::Sign => Attribute::Sign(flag()?),
        AttributeType::Verify => Attribute::Verify(flag()?),
        AttributeType::SignRecover => Attribute::SignRecover(flag()?),
        AttributeType::VerifyRecover => Attribute::VerifyRecover(flag()?),
        AttributeType::Wrap => Attribute::Wrap(flag()?),
        AttributeType::Unwrap => Attribute::Unwrap(flag()?),
        AttributeType::Modifiable => Attribute::Modifiable(flag()?),
        AttributeType::Destroyable => Attribute::Destroyable(flag()?),
        AttributeType::Value => Attribute::Value(bytes()?),
        AttributeType::Modulus => Attribute::Modulus(bytes()?),
        AttributeType::PublicExponent => Attribute::PublicExponent(bytes()?),
        AttributeType::EcParams => Attribute::EcParams(bytes()?),
        AttributeType::EcPoint => Attribute::EcPoint(bytes()?),
        AttributeType::Application => Attribute::Application(bytes()?),
        AttributeType::ObjectId => Attribute::ObjectId(bytes()?),
        AttributeType::Subject => Attribute::Subject(bytes()?),
        _ => return Err(CKR_ATTRIBUTE_TYPE_INVALID),
    })
}

fn to_ck(v: u64) -> std::result::Result<cryptoki_sys::CK_ULONG, u64> {
    cryptoki_sys::CK_ULONG::try_from(v).map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)
}

/// A token attribute as the wire carries it (`None` for kinds keywardd does not report).
#[allow(clippy::useless_conversion)] // CK_ULONG is 32 bits on Windows.
fn wire_value(a: Attribute) -> Option<AttrValue> {
    let u = |v: cryptoki_sys::CK_ULONG| Some(AttrValue::Ulong(u64::from(v)));
    let b = |v: bool| Some(AttrValue::Bool(v));
    let bytes = |v: Vec<u8>| Some(AttrValue::Bytes(Blob::new(v)));
    match a {
        Attribute::Class(c) => u(c.into()),
        Attribute::KeyType(k) => u(k.into()),
        Attribute::ValueLen(v) | Attribute::ModulusBits(v) => u(v.into()),
        Attribute::KeyGenMechanism(m) => u(m.into()),
        Attribute::Token(v)
        | Attribute::Private(v)
        | Attribute::Sensitive(v)
        | Attribute::Extractable(v)
        | Attribute::Encrypt(v)
        | Attribute::Decrypt(v)
        | Attribute::Sign(v)
        | Attribute::Verify(v)
        | Attribute::SignRecover(v)
        | Attribute::VerifyRecover(v)
        | Attribute::Wrap(v)
        | Attribute::Unwrap(v)
        | Attribute::Derive(v)
        | Attribute::Local(v)
        | Attribute::AlwaysSensitive(v)
        | Attribute::NeverExtractable(v)
        | Attribute::AlwaysAuthenticate(v)
        | Attribute::Modifiable(v)
        | Attribute::Copyable(v)
        | Attribute::Destroyable(v)
        | Attribute::Trusted(v)
        | Attribute::WrapWithTrusted(v) => b(v),
        Attribute::Value(v)
        | Attribute::Modulus(v)
        | Attribute::PublicExponent(v)
        | Attribute::PrivateExponent(v)
        | Attribute::Prime1(v)
        | Attribute::Prime2(v)
        | Attribute::Exponent1(v)
        | Attribute::Exponent2(v)
        | Attribute::Coefficient(v)
        | Attribute::EcParams(v)
        | Attribute::EcPoint(v)
        | Attribute::Application(v)
        | Attribute::ObjectId(v)
        | Attribute::Subject(v)
        | Attribute::PublicKeyInfo(v)
        | Attribute::CheckValue(v)
        | Attribute::UniqueId(v) => bytes(v),
        _ => None,
    }
}

/// What keywardd sets on every session object it makes (after the client's entries, so
/// these win).
fn forced(class_is_key: bool, copyable_attr: bool) -> Vec<Attribute> {
    let mut out = vec![
        Attribute::Token(false),
        Attribute::Label(SESSION_OBJECT_LABEL.to_vec()),
    ];
    if class_is_key {
        out.push(Attribute::Id(SESSION_OBJECT_LABEL.to_vec()));
        out.push(Attribute::Derive(false));
    }
    if copyable_attr {
        out.push(Attribute::Copyable(false));
    }
    out
}

fn convert(template: &[WireAttribute]) -> Result<Vec<Attribute>> {
    template
        .iter()
        .map(|a| {
            session_attribute(a).map_err(|rv| {
                TokenError::InvalidArgument(format!(
                    "attribute {:#x} refused for a session object (CK_RV {rv:#x})",
                    a.ty
                ))
            })
        })
        .collect()
}

fn wipe(template: &mut [Attribute]) {
    for a in template {
        if let Attribute::Value(v) = a {
            // Best effort (this crate has no zeroize): the caller zeroises its own copy.
            v.fill(0);
        }
    }
}

impl Token {
    /// Makes a session object of `template` (`C_CreateObject`; a key, or a data object when
    /// `is_key` is false).
    pub fn create_session_object(
        &self,
        template: &[WireAttribute],
        is_key: bool,
    ) -> Result<SessionObject> {
        let mut t = convert(template)?;
        t.extend(forced(is_key, self.mechanisms().copyable_accepted()));
        let made = self.with_home_session(|s| s.create_object(&t));
        wipe(&mut t);
        made.map(|(h, generation)| SessionObject(h, generation))
    }

    /// Unwraps `wrapped` (AES key wrap, RFC 3394, or with padding, RFC 5649: `pad`) with the
    /// secret key whose internal `CKA_ID` is `unwrapping_id` into a session secret key of
    /// `template`, in the token (keywardd never sees the material); returns it and its
    /// `CKA_VALUE_LEN`.
    pub fn unwrap_session_object(
        &self,
        unwrapping_id: &[u8],
        pad: bool,
        wrapped: &[u8],
        template: &[WireAttribute],
    ) -> Result<(SessionObject, usize)> {
        let mut t = convert(template)?;
        t.extend(forced(true, self.mechanisms().copyable_accepted()));
        let made = self.with_home_session(|s| {
            let key = unwrapping_key(s, unwrapping_id)?;
            // CKM_AES_KEY_WRAP_PAD is RFC 5649 to Keyward's clients: the token's mechanism
            // for it, learnt at open (kwp.rs).
            let h = if pad {
                self.unwrap_rfc5649_ck(s, key, wrapped, &t)?
            } else {
                s.unwrap_key(&Mechanism::AesKeyWrap, key, wrapped, &t)?
            };
            let len = match s.get_attributes(h, &[AttributeType::ValueLen]) {
                Ok(a) => a.into_iter().find_map(|a| match a {
                    Attribute::ValueLen(n) => usize::try_from(u64::from(n)).ok(),
                    _ => None,
                }),
                Err(e) => {
                    let _ = s.destroy_object(h);
                    return Err(e);
                }
            };
            Ok((h, len.unwrap_or(0)))
        });
        made.map(|((h, len), generation)| (SessionObject(h, generation), len))
    }

    /// Generates a session key (`public` is empty) or key pair: (private or secret, public).
    pub fn generate_session_objects(
        &self,
        what: SessionGeneration,
        public: &[WireAttribute],
        secret: &[WireAttribute],
    ) -> Result<(SessionObject, Option<SessionObject>)> {
        let caps = self.capabilities();
        let (probe, half) = match what {
            SessionGeneration::AesKey | SessionGeneration::GenericSecret => {
                (caps.session_secret_keys(), Half::Secret)
            }
            SessionGeneration::EcPair | SessionGeneration::RsaPair => {
                (caps.session_key_pairs(), Half::Private)
            }
        };
        if let Some(why) = probe.reason() {
            return Err(TokenError::SessionKeysUnsupported(why.to_owned()));
        }
        let copyable = caps.copyable_accepted();
        let mut sec = convert(secret)?;
        sec.extend(forced(true, copyable));
        let sec = caps.fit(half, sec);
        let mut publ = convert(public)?;
        publ.extend(forced(true, copyable));
        let publ = caps.fit(Half::Public, publ);
        let (made, generation) = self.with_home_session(|s| match what {
            SessionGeneration::AesKey => s
                .generate_key(&Mechanism::AesKeyGen, &sec)
                .map(|k| (k, None)),
            SessionGeneration::GenericSecret => s
                .generate_key(&Mechanism::GenericSecretKeyGen, &sec)
                .map(|k| (k, None)),
            SessionGeneration::EcPair | SessionGeneration::RsaPair => {
                let m = if what == SessionGeneration::EcPair {
                    Mechanism::EccKeyPairGen
                } else {
                    Mechanism::RsaPkcsKeyPairGen
                };
                s.generate_key_pair(&m, &publ, &sec)
                    .map(|(p, k)| (k, Some(p)))
            }
        })?;
        Ok((
            SessionObject(made.0, generation),
            made.1.map(|p| SessionObject(p, generation)),
        ))
    }

    /// The object's handle, unless its home session broke since it was made.
    fn live(&self, o: SessionObject) -> Result<ObjectHandle> {
        if o.1 == self.home_generation() {
            Ok(o.0)
        } else {
            Err(TokenError::Pkcs11 {
                rv: cryptoki::error::RvError::ObjectHandleInvalid,
                function: cryptoki::context::Function::GetAttributeValue,
            })
        }
    }

    /// Destroys a session object.
    pub fn destroy_session_object(&self, o: SessionObject) -> Result<()> {
        let h = self.live(o)?;
        self.with_session(|s| s.destroy_object(h))
    }

    /// The attributes `types` of a session object as the token reports them (sensitive ones
    /// as [`AttrResult::Sensitive`]; unknown, absent or unavailable ones as
    /// [`AttrResult::TypeInvalid`]).
    pub fn session_object_attributes(
        &self,
        o: SessionObject,
        types: &[u64],
    ) -> Result<Vec<AttrResult>> {
        let known: Vec<Option<AttributeType>> = types
            .iter()
            .map(|t| {
                cryptoki_sys::CK_ATTRIBUTE_TYPE::try_from(*t)
                    .ok()
                    .and_then(|t| AttributeType::try_from(t).ok())
            })
            .collect();
        let asked: Vec<AttributeType> = known.iter().flatten().copied().collect();
        let h = self.live(o)?;
        self.with_session(|s| {
            let info = s.get_attribute_info(h, &asked)?;
            let available: Vec<AttributeType> = asked
                .iter()
                .zip(&info)
                .filter(|(_, i)| matches!(i, AttributeInfo::Available(_)))
                .map(|(t, _)| *t)
                .collect();
            let values = s.get_attributes(h, &available)?;
            Ok(known
                .iter()
                .map(|t| {
                    let Some(t) = t else {
                        return AttrResult::TypeInvalid;
                    };
                    let i = asked.iter().position(|a| a == t).map(|p| &info[p]);
                    match i {
                        Some(AttributeInfo::Sensitive) => AttrResult::Sensitive,
                        Some(AttributeInfo::Available(_)) => values
                            .iter()
                            .find(|v| v.attribute_type() == *t)
                            .cloned()
                            .and_then(wire_value)
                            .map_or(AttrResult::TypeInvalid, AttrResult::Value),
                        _ => AttrResult::TypeInvalid,
                    }
                })
                .collect())
        })
    }

    /// Runs `f` with a pooled session and the session object's handle (the object store
    /// shared), for an operation with the object.
    pub fn with_session_object<R>(
        &self,
        o: SessionObject,
        f: impl FnOnce(&cryptoki::session::Session, ObjectHandle) -> cryptoki::error::Result<R>,
    ) -> Result<R> {
        let h = self.live(o)?;
        self.with_session(|s| f(s, h))
    }

    fn session_object_handles(&self) -> Result<Vec<ObjectHandle>> {
        self.with_session(|s| {
            s.find_objects(&[
                Attribute::Token(false),
                Attribute::Label(SESSION_OBJECT_LABEL.to_vec()),
            ])
        })
    }

    /// How many session objects keywardd made exist in the token now (as a search in
    /// keywardd's process sees them).
    pub fn count_session_objects(&self) -> Result<usize> {
        Ok(self.session_object_handles()?.len())
    }

    /// Destroys every session object keywardd's process holds (orphans: at start no module
    /// session owns any). Returns how many there were.
    pub fn destroy_session_objects(&self) -> Result<usize> {
        let found = self.session_object_handles()?;
        for h in &found {
            match self.with_session(|s| s.destroy_object(*h)) {
                Ok(())
                | Err(TokenError::Pkcs11 {
                    rv: cryptoki::error::RvError::ObjectHandleInvalid,
                    ..
                }) => {}
                Err(e) => return Err(e),
            }
        }
        if !found.is_empty() {
            tracing::info!(count = found.len(), "destroyed orphaned session objects");
        }
        Ok(found.len())
    }
}

/// The secret key with internal `CKA_ID` `id` (a Keyward key's token object), in session `s`.
pub(crate) fn unwrapping_key(
    s: &cryptoki::session::Session,
    id: &[u8],
) -> cryptoki::error::Result<ObjectHandle> {
    let found = s.find_objects(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Id(id.to_vec()),
    ])?;
    match found.as_slice() {
        [h] => Ok(*h),
        _ => Err(cryptoki::error::Error::Pkcs11(
            cryptoki::error::RvError::UnwrappingKeyHandleInvalid,
            cryptoki::context::Function::UnwrapKey,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(ty: u64, value: AttrValue) -> WireAttribute {
        WireAttribute { ty, value }
    }

    #[test]
    fn template_list() {
        assert_eq!(
            session_attribute(&a(0x104, AttrValue::Bool(true))),
            Ok(Attribute::Encrypt(true))
        );
        assert_eq!(
            session_attribute(&a(0x0, AttrValue::Ulong(4))),
            Ok(Attribute::Class(ObjectClass::SECRET_KEY))
        );
        // CKA_TOKEN, CKA_ID, CKA_DERIVE are keywardd's; CKA_PRIVATE_EXPONENT is not offered.
        for ty in [0x1, 0x102, 0x10C, 0x123] {
            assert_eq!(
                session_attribute(&a(ty, AttrValue::Bool(false))),
                Err(CKR_ATTRIBUTE_TYPE_INVALID),
                "{ty:#x}"
            );
        }
        assert_eq!(
            session_attribute(&a(0x104, AttrValue::Ulong(1))),
            Err(CKR_ATTRIBUTE_VALUE_INVALID)
        );
        assert_ne!(SESSION_OBJECT_LABEL.len(), crate::OBJECT_ID_LEN);
    }
}
