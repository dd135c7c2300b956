//! RFC 5649 (AES key wrap with padding) on the backing token: which mechanism does it, learnt
//! once at open by a known-answer trial, never by the token's name.
//!
//! Keyward's BYOK second step (`CKM_RSA_AES_KEY_WRAP` composed in the token, import.rs) and
//! its module's `CKM_AES_KEY_WRAP_PAD` unwraps are RFC 5649, as OpenSSL's `id-aes256-wrap-pad`
//! and Cloud KMS wrap. PKCS#11 v2.40 left `CKM_AES_KEY_WRAP_PAD` ambiguous: SoftHSM2 2.6 does
//! RFC 5649 with it; NSS softokn 3.87 does RFC 3394 with PKCS#7 padding, so an RFC 5649 blob
//! fails with `CKR_WRAPPED_KEY_INVALID`, and has RFC 5649 as PKCS#11 v3.0's
//! `CKM_AES_KEY_WRAP_KWP` (0x210B), which cryptoki 0.12 cannot name (raw.rs calls it).
//!
//! The trial: a session AES-256 key of known value (`C_CreateObject`) unwraps a known RFC 5649
//! blob (made by OpenSSL's `id-aes256-wrap-pad`, which reproduces RFC 5649 §6's vectors) of a
//! 20-byte key, as an extractable session generic secret whose value is then compared: first
//! with `CKM_AES_KEY_WRAP_PAD`, then with `CKM_AES_KEY_WRAP_KWP`. The first that gives the
//! known key is the one used; if neither does, RFC 5649 is unavailable and what needs it
//! (import jobs of the `*-aes-256` methods) is refused at creation, naming it. Every trial
//! object carries a probe id and is destroyed after.

use crate::capabilities::{probe_id, rv_text, sweep, triage, Probe, PROBE_LABEL};
use crate::error::{Result, TokenError};
use crate::raw::{unwrap_key_no_param, RawModule};
use crate::token::Token;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use keyward_wire::ck::CKM_AES_KEY_WRAP_KWP;

/// The token mechanism that does RFC 5649.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rfc5649 {
    /// `CKM_AES_KEY_WRAP_PAD` (SoftHSM2).
    WrapPad,
    /// `CKM_AES_KEY_WRAP_KWP` (NSS softokn).
    Kwp,
}

impl Rfc5649 {
    /// The mechanism's PKCS#11 name.
    pub fn mechanism_name(self) -> &'static str {
        match self {
            Rfc5649::WrapPad => "CKM_AES_KEY_WRAP_PAD",
            Rfc5649::Kwp => "CKM_AES_KEY_WRAP_KWP",
        }
    }
}

/// The trial's wrapping key (AES-256).
const KEK: [u8; 32] = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
];
/// RFC 5649 §6's 20-octet key (not a multiple of 8: padding is exercised).
const KEY: [u8; 20] = [
    0xc3, 0x7b, 0x7e, 0x64, 0x92, 0x58, 0x43, 0x40, 0xbe, 0xd1, 0x22, 0x07, 0x80, 0x89, 0x41, 0x15,
    0x50, 0x68, 0xf7, 0x38,
];
/// `openssl enc -id-aes256-wrap-pad -K <KEK> -iv A65959A6` of [`KEY`].
const WRAPPED: [u8; 32] = [
    0x29, 0xb7, 0xfa, 0x19, 0x1c, 0x21, 0x65, 0x68, 0x43, 0x74, 0xee, 0xe9, 0xf7, 0x45, 0x95, 0xe2,
    0xa4, 0x2b, 0xac, 0xe7, 0x5c, 0x42, 0x5b, 0x30, 0x53, 0xef, 0xa2, 0x6f, 0xfe, 0x1b, 0xb3, 0x2f,
];

/// `C_UnwrapKey` with `mechanism` (RFC 5649 by construction of the caller's choice).
fn unwrap_with(
    raw: &RawModule,
    s: &Session,
    mechanism: Rfc5649,
    key: ObjectHandle,
    wrapped: &[u8],
    template: &[Attribute],
) -> cryptoki::error::Result<ObjectHandle> {
    match mechanism {
        Rfc5649::WrapPad => s.unwrap_key(&Mechanism::AesKeyWrapPad, key, wrapped, template),
        Rfc5649::Kwp => unwrap_key_no_param(raw, s, CKM_AES_KEY_WRAP_KWP, key, wrapped, template),
    }
}

/// Learns which mechanism does RFC 5649 (see the module header). `Err` only for what makes
/// the token unusable; otherwise the probe and, when available, the mechanism.
pub(crate) fn trial(
    raw: &RawModule,
    s: &Session,
    aes_keys: bool,
) -> Result<(Probe, Option<Rfc5649>)> {
    if !aes_keys {
        return Ok((
            Probe::Unavailable("not probed: the token has no AES keys".into()),
            None,
        ));
    }
    let id = probe_id(s)?;
    let result = trial_with_id(raw, s, &id);
    sweep(s, &id)?;
    result
}

fn trial_with_id(raw: &RawModule, s: &Session, id: &[u8]) -> Result<(Probe, Option<Rfc5649>)> {
    let kek = match s.create_object(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Value(KEK.to_vec()),
        Attribute::Unwrap(true),
        Attribute::Id(id.to_vec()),
        Attribute::Label(PROBE_LABEL.to_vec()),
    ]) {
        Ok(h) => h,
        Err(e) => {
            let e = triage(e.into())?;
            return Ok((
                Probe::Unavailable(format!(
                    "C_CreateObject of the trial's AES key: {}",
                    rv_text(&e)
                )),
                None,
            ));
        }
    };
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::Token(false),
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
        Attribute::Id(id.to_vec()),
        Attribute::Label(PROBE_LABEL.to_vec()),
    ];
    let mut why = Vec::new();
    for m in [Rfc5649::WrapPad, Rfc5649::Kwp] {
        let made = match unwrap_with(raw, s, m, kek, &WRAPPED, &template) {
            Ok(h) => h,
            Err(e) => {
                let e = triage(e.into())?;
                why.push(format!("{}: {}", m.mechanism_name(), rv_text(&e)));
                continue;
            }
        };
        let value = s
            .get_attributes(made, &[AttributeType::Value])
            .ok()
            .and_then(|a| {
                a.into_iter().find_map(|a| match a {
                    Attribute::Value(v) => Some(v),
                    _ => None,
                })
            });
        let _ = s.destroy_object(made);
        match value {
            Some(v) if v == KEY => {
                tracing::info!(
                    mechanism = m.mechanism_name(),
                    "the token does RFC 5649 AES key wrap with padding with this mechanism"
                );
                return Ok((Probe::Available, Some(m)));
            }
            Some(_) => why.push(format!(
                "{}: unwrapped a known RFC 5649 blob to another value",
                m.mechanism_name()
            )),
            None => why.push(format!(
                "{}: the unwrapped trial key's CKA_VALUE cannot be read",
                m.mechanism_name()
            )),
        }
    }
    Ok((
        Probe::Unavailable(format!(
            "no mechanism unwraps a known RFC 5649 blob: {}",
            why.join("; ")
        )),
        None,
    ))
}

impl Token {
    /// `C_UnwrapKey` of an RFC 5649 blob with the AES key `key`, by the mechanism learnt at
    /// open; [`TokenError::MechanismUnavailable`] if the token has none.
    pub(crate) fn unwrap_rfc5649(
        &self,
        s: &Session,
        key: ObjectHandle,
        wrapped: &[u8],
        template: &[Attribute],
    ) -> Result<ObjectHandle> {
        match self.mechanisms().rfc5649() {
            Some(m) => Ok(unwrap_with(self.raw(), s, m, key, wrapped, template)?),
            None => Err(TokenError::MechanismUnavailable {
                mechanism: format!(
                    "RFC 5649 AES key wrap with padding ({})",
                    self.mechanisms()
                        .rfc5649_probe()
                        .reason()
                        .unwrap_or_default()
                ),
            }),
        }
    }

    /// [`Token::unwrap_rfc5649`] for code working in cryptoki's errors (a session closure):
    /// `CKR_MECHANISM_INVALID` if the token has no RFC 5649.
    pub(crate) fn unwrap_rfc5649_ck(
        &self,
        s: &Session,
        key: ObjectHandle,
        wrapped: &[u8],
        template: &[Attribute],
    ) -> cryptoki::error::Result<ObjectHandle> {
        match self.mechanisms().rfc5649() {
            Some(m) => unwrap_with(self.raw(), s, m, key, wrapped, template),
            None => Err(cryptoki::error::Error::Pkcs11(
                cryptoki::error::RvError::MechanismInvalid,
                cryptoki::context::Function::UnwrapKey,
            )),
        }
    }
}
