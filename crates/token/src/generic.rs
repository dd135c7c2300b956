//! Keys made through the PKCS#11 module (`PKCS11_GENERIC`, design §2 and §4): a key kind and
//! size chosen by the client's template rather than an [`keyward_wire::keys::Algorithm`],
//! and usage flags taken from the template (one RSA key may sign and decrypt).
//!
//! Custody is the same as for every Keyward key ([`crate::KeySpec`]): token objects with the
//! daemon's internal random `CKA_ID`, private and secret halves `CKA_PRIVATE` and
//! `CKA_SENSITIVE`, never derivable, not copyable where the token accepts the attribute,
//! extractable only when asked. The client's own `CKA_ID` and `CKA_LABEL` never reach the
//! token: keywardd keeps them.

use crate::capabilities::{Family, Half};
use crate::error::{Result, TokenError};
use crate::keys::PublicKey;
use crate::public_key::Curve;
use crate::token::Token;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use std::fmt;
use std::str::FromStr;

/// The kind and size of a generic key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenericKind {
    /// An EC pair on a named curve.
    Ec(Curve),
    /// An RSA pair of this many modulus bits (2048, 3072 or 4096), exponent 65537.
    Rsa(usize),
    /// An AES key of this many bytes (16, 24 or 32).
    Aes(usize),
    /// A generic secret (`CKK_GENERIC_SECRET`, an HMAC key) of this many bytes
    /// ([`GENERIC_SECRET_MIN`] to [`GENERIC_SECRET_MAX`]).
    Secret(usize),
}

/// The fewest bytes of a generic secret (Keyward's policy: the output of SHA-256, the
/// shortest HMAC offered; RFC 2104 §3 advises no key shorter than the hash output).
pub const GENERIC_SECRET_MIN: usize = 32;

/// The most bytes of a generic secret (SHA-512's block: HMAC hashes a longer key down
/// first, RFC 2104 §2, so more adds nothing).
pub const GENERIC_SECRET_MAX: usize = 128;

impl GenericKind {
    /// Is it a key pair?
    pub fn is_pair(self) -> bool {
        !matches!(self, GenericKind::Aes(_) | GenericKind::Secret(_))
    }

    /// Checks the size: RSA 2048/3072/4096 bits, AES 16/24/32 bytes, generic secrets
    /// [`GENERIC_SECRET_MIN`] to [`GENERIC_SECRET_MAX`] bytes.
    pub fn check(self) -> Result<()> {
        match self {
            GenericKind::Ec(_) => Ok(()),
            GenericKind::Rsa(2048 | 3072 | 4096) => Ok(()),
            GenericKind::Aes(16 | 24 | 32) => Ok(()),
            GenericKind::Secret(n) if (GENERIC_SECRET_MIN..=GENERIC_SECRET_MAX).contains(&n) => {
                Ok(())
            }
            GenericKind::Secret(n) => Err(TokenError::InvalidArgument(format!(
                "generic secrets have {GENERIC_SECRET_MIN} to {GENERIC_SECRET_MAX} bytes, not {n}"
            ))),
            GenericKind::Rsa(n) => Err(TokenError::InvalidArgument(format!(
                "RSA keys have 2048, 3072 or 4096 bits, not {n}"
            ))),
            GenericKind::Aes(n) => Err(TokenError::InvalidArgument(format!(
                "AES keys have 16, 24 or 32 bytes, not {n}"
            ))),
        }
    }
}

impl fmt::Display for GenericKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GenericKind::Ec(Curve::P256) => f.write_str("EC_P256"),
            GenericKind::Ec(Curve::P384) => f.write_str("EC_P384"),
            GenericKind::Rsa(bits) => write!(f, "RSA_{bits}"),
            GenericKind::Aes(bytes) => write!(f, "AES_{}", bytes * 8),
            GenericKind::Secret(bytes) => write!(f, "GENERIC_SECRET_{}", bytes * 8),
        }
    }
}

impl FromStr for GenericKind {
    type Err = String;

    /// The names [`fmt::Display`] writes (`EC_P256`, `RSA_2048`, `AES_256`).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("unknown generic key kind '{s}'");
        let kind = match s {
            "EC_P256" => GenericKind::Ec(Curve::P256),
            "EC_P384" => GenericKind::Ec(Curve::P384),
            _ => {
                if let Some(bits) = s.strip_prefix("GENERIC_SECRET_") {
                    let bits: usize = bits.parse().map_err(|_| bad())?;
                    if bits % 8 != 0 {
                        return Err(bad());
                    }
                    GenericKind::Secret(bits / 8)
                } else if let Some(bits) = s.strip_prefix("RSA_") {
                    GenericKind::Rsa(bits.parse().map_err(|_| bad())?)
                } else if let Some(bits) = s.strip_prefix("AES_") {
                    let bits: usize = bits.parse().map_err(|_| bad())?;
                    if bits % 8 != 0 {
                        return Err(bad());
                    }
                    GenericKind::Aes(bits / 8)
                } else {
                    return Err(bad());
                }
            }
        };
        kind.check().map_err(|_| bad())?;
        Ok(kind)
    }
}

/// The usage flags of a generic key, as the client's template set them. For a pair, the
/// private half carries sign/decrypt/unwrap and the public half verify/encrypt/wrap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GenericUsage {
    /// `CKA_ENCRYPT`.
    pub encrypt: bool,
    /// `CKA_DECRYPT`.
    pub decrypt: bool,
    /// `CKA_SIGN`.
    pub sign: bool,
    /// `CKA_VERIFY`.
    pub verify: bool,
    /// `CKA_WRAP`.
    pub wrap: bool,
    /// `CKA_UNWRAP`.
    pub unwrap: bool,
}

/// What to make.
#[derive(Debug, Clone, Copy)]
pub struct GenericSpec<'a> {
    /// Kind and size.
    pub kind: GenericKind,
    /// The daemon's internal `CKA_ID` (both halves of a pair).
    pub id: &'a [u8],
    /// The internal `CKA_LABEL` (both halves).
    pub label: &'a str,
    /// `CKA_EXTRACTABLE` of the private or secret object (it stays sensitive).
    pub exportable: bool,
    /// Usage flags.
    pub usage: GenericUsage,
}

/// The templates of a generic key: (private or secret, public). The public template is
/// empty for a secret key.
fn templates(spec: &GenericSpec<'_>, copyable_attr: bool) -> (Vec<Attribute>, Vec<Attribute>) {
    let u = spec.usage;
    let common =
        |private| crate::keys::custody_template(spec.id, spec.label, private, copyable_attr);
    let mut secret = crate::keys::custody_secret(common(true), spec.exportable);
    let mut public = Vec::new();
    match spec.kind {
        GenericKind::Aes(bytes) => secret.extend([
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(u64::try_from(bytes).unwrap_or(0).into()),
            Attribute::Encrypt(u.encrypt),
            Attribute::Decrypt(u.decrypt),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Wrap(u.wrap),
            Attribute::Unwrap(u.unwrap),
        ]),
        GenericKind::Secret(bytes) => secret.extend([
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::ValueLen(u64::try_from(bytes).unwrap_or(0).into()),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Sign(u.sign),
            Attribute::Verify(u.verify),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
        ]),
        GenericKind::Ec(_) | GenericKind::Rsa(_) => {
            secret.extend([
                Attribute::Sign(u.sign),
                Attribute::Decrypt(u.decrypt),
                Attribute::Unwrap(u.unwrap),
                Attribute::SignRecover(false),
            ]);
            public = common(false);
            public.extend([
                Attribute::Verify(u.verify),
                Attribute::Encrypt(u.encrypt),
                Attribute::Wrap(u.wrap),
                Attribute::VerifyRecover(false),
            ]);
            match spec.kind {
                GenericKind::Ec(curve) => public.push(Attribute::EcParams(curve.ec_params())),
                GenericKind::Rsa(bits) => public.extend([
                    Attribute::ModulusBits(u64::try_from(bits).unwrap_or(0).into()),
                    Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                ]),
                GenericKind::Aes(_) | GenericKind::Secret(_) => {}
            }
        }
    }
    (secret, public)
}

impl Token {
    /// [`templates`] with what the token refuses left out ([`crate::Capabilities::fit`]).
    fn fitted_templates(&self, spec: &GenericSpec<'_>) -> (Vec<Attribute>, Vec<Attribute>) {
        let caps = self.capabilities();
        let (secret, public) = templates(spec, caps.copyable_accepted());
        let half = if spec.kind.is_pair() {
            Half::Private
        } else {
            Half::Secret
        };
        (caps.fit(half, secret), caps.fit(Half::Public, public))
    }

    /// `Ok` if the token can generate keys of `kind` (its family passed the probe and the
    /// size is in the mechanism's range), else [`TokenError::MechanismUnavailable`] naming
    /// what is missing.
    pub fn check_generic(&self, kind: GenericKind) -> Result<()> {
        let caps = self.capabilities();
        let family = match kind {
            GenericKind::Ec(_) => Family::Ec,
            GenericKind::Rsa(_) => Family::Rsa,
            GenericKind::Aes(_) => Family::Aes,
            GenericKind::Secret(_) => Family::GenericSecret,
        };
        let missing = |why: String| {
            Err(TokenError::MechanismUnavailable {
                mechanism: format!("{why} (for a {kind} key)"),
            })
        };
        if !caps.listed(family.keygen()) {
            return missing(family.keygen().to_string());
        }
        if let Some(why) = caps.family(family).reason() {
            return missing(why.to_owned());
        }
        let size = match kind {
            GenericKind::Rsa(bits) => caps.check_rsa_bits(bits),
            GenericKind::Secret(bytes) => caps.check_generic_secret_bytes(bytes),
            GenericKind::Ec(_) | GenericKind::Aes(_) => Ok(()),
        };
        size.or_else(missing)
    }

    /// Generates a generic key (or pair) as token objects with `spec.id`/`spec.label`;
    /// returns the public key of a pair. Refuses a bad size and an id already in use
    /// ([`TokenError::InvalidArgument`]).
    pub fn generate_generic(&self, spec: &GenericSpec<'_>) -> Result<Option<PublicKey>> {
        spec.kind.check()?;
        if spec.id.is_empty() {
            return Err(TokenError::InvalidArgument(
                "CKA_ID must not be empty".into(),
            ));
        }
        self.check_generic(spec.kind)?;
        let (secret, public) = self.fitted_templates(spec);
        self.write_session(|s| {
            if !s
                .find_objects(&[Attribute::Id(spec.id.to_vec())])?
                .is_empty()
            {
                return Err(TokenError::InvalidArgument(format!(
                    "CKA_ID {} is already used by an object in the token",
                    crate::error::hex(spec.id)
                )));
            }
            match spec.kind {
                GenericKind::Aes(_) => {
                    s.generate_key(&Mechanism::AesKeyGen, &secret)?;
                }
                GenericKind::Secret(_) => {
                    s.generate_key(&Mechanism::GenericSecretKeyGen, &secret)?;
                }
                GenericKind::Ec(_) => {
                    s.generate_key_pair(&Mechanism::EccKeyPairGen, &public, &secret)?;
                }
                GenericKind::Rsa(_) => {
                    s.generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &secret)?;
                }
            }
            Ok(())
        })?;
        tracing::info!(kind = %spec.kind, id = %crate::error::hex(spec.id),
            exportable = spec.exportable, "generated generic key in token");
        if !spec.kind.is_pair() {
            return Ok(None);
        }
        match self.public_key(spec.id) {
            Ok(p) => Ok(Some(p)),
            Err(e) => {
                let _ = self.destroy_by_id(spec.id);
                Err(e)
            }
        }
    }

    /// Imports a plaintext secret key (`allow_plaintext_import`, design §4 "Custody") as a
    /// sensitive token object with `spec.id`/`spec.label`. Only AES keys and generic secrets.
    pub fn import_generic_secret(&self, spec: &GenericSpec<'_>, value: &[u8]) -> Result<()> {
        let (GenericKind::Aes(bytes) | GenericKind::Secret(bytes)) = spec.kind else {
            return Err(TokenError::InvalidArgument(
                "only AES keys and generic secrets are imported".into(),
            ));
        };
        spec.kind.check()?;
        if value.len() != bytes {
            return Err(TokenError::InvalidArgument(format!(
                "a secret key of {bytes} bytes, got {}",
                value.len()
            )));
        }
        if spec.id.is_empty() {
            return Err(TokenError::InvalidArgument(
                "CKA_ID must not be empty".into(),
            ));
        }
        let (mut secret, _) = self.fitted_templates(spec);
        // CKA_VALUE_LEN is not given with CKA_VALUE (PKCS#11 §4.10 table 1 note 3).
        secret.retain(|a| !matches!(a, Attribute::ValueLen(_)));
        secret.push(Attribute::Value(value.to_vec()));
        let out = self.write_session(|s| {
            if !s
                .find_objects(&[Attribute::Id(spec.id.to_vec())])?
                .is_empty()
            {
                return Err(TokenError::InvalidArgument(format!(
                    "CKA_ID {} is already used by an object in the token",
                    crate::error::hex(spec.id)
                )));
            }
            s.create_object(&secret)?;
            Ok(())
        });
        for a in &mut secret {
            if let Attribute::Value(v) = a {
                // Best effort (this crate has no zeroize): the caller zeroises its own copy.
                v.fill(0);
            }
        }
        out?;
        tracing::info!(kind = %spec.kind, id = %crate::error::hex(spec.id), "imported generic secret key");
        Ok(())
    }
}

impl Token {
    /// Unwraps `wrapped` (AES key wrap, or with padding: `pad`) with the secret key whose
    /// internal `CKA_ID` is `unwrapping_id` into a token secret key of `spec` (AES or generic
    /// secret, Keyward's custody), in the token: keywardd never sees the material. Where the
    /// token reports the unwrapped key's size it must be `spec`'s, else the key is destroyed
    /// again ([`TokenError::InvalidArgument`]).
    pub fn unwrap_generic_secret(
        &self,
        spec: &GenericSpec<'_>,
        unwrapping_id: &[u8],
        pad: bool,
        wrapped: &[u8],
    ) -> Result<()> {
        let (GenericKind::Aes(bytes) | GenericKind::Secret(bytes)) = spec.kind else {
            return Err(TokenError::InvalidArgument(
                "only AES keys and generic secrets are unwrapped".into(),
            ));
        };
        spec.kind.check()?;
        if spec.id.is_empty() {
            return Err(TokenError::InvalidArgument(
                "CKA_ID must not be empty".into(),
            ));
        }
        let (mut secret, _) = self.fitted_templates(spec);
        // The length comes from the wrapped key (PKCS#11 §4.10: not given to an unwrap).
        secret.retain(|a| !matches!(a, Attribute::ValueLen(_)));
        self.write_session(|s| {
            if !s
                .find_objects(&[Attribute::Id(spec.id.to_vec())])?
                .is_empty()
            {
                return Err(TokenError::InvalidArgument(format!(
                    "CKA_ID {} is already used by an object in the token",
                    crate::error::hex(spec.id)
                )));
            }
            let key = crate::session_objects::unwrapping_key(s, unwrapping_id)?;
            // CKM_AES_KEY_WRAP_PAD is RFC 5649 to Keyward's clients: the token's mechanism
            // for it, learnt at open (kwp.rs).
            let h = if pad {
                self.unwrap_rfc5649(s, key, wrapped, &secret)?
            } else {
                s.unwrap_key(&Mechanism::AesKeyWrap, key, wrapped, &secret)?
            };
            let len = s
                .get_attributes(h, &[cryptoki::object::AttributeType::ValueLen])
                .ok()
                .and_then(|a| {
                    a.into_iter().find_map(|a| match a {
                        Attribute::ValueLen(n) => usize::try_from(u64::from(n)).ok(),
                        _ => None,
                    })
                });
            // A token that reports the unwrapped length (SoftHSM2 2.6 reports 0) must agree.
            if len.is_some_and(|n| n != 0 && n != bytes) {
                let _ = s.destroy_object(h);
                return Err(TokenError::InvalidArgument(format!(
                    "the unwrapped key has {len:?} bytes, not {bytes}"
                )));
            }
            Ok(())
        })?;
        tracing::info!(kind = %spec.kind, id = %crate::error::hex(spec.id), "unwrapped generic secret key");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for k in [
            GenericKind::Ec(Curve::P256),
            GenericKind::Ec(Curve::P384),
            GenericKind::Rsa(2048),
            GenericKind::Rsa(4096),
            GenericKind::Aes(16),
            GenericKind::Aes(32),
            GenericKind::Secret(32),
            GenericKind::Secret(64),
            GenericKind::Secret(128),
        ] {
            assert_eq!(k.to_string().parse::<GenericKind>(), Ok(k));
        }
        assert!("GENERIC_SECRET_128".parse::<GenericKind>().is_err());
        assert!("GENERIC_SECRET_1032".parse::<GenericKind>().is_err());
        assert!(!GenericKind::Secret(64).is_pair());
        assert!("RSA_1024".parse::<GenericKind>().is_err());
        assert!("AES_100".parse::<GenericKind>().is_err());
        assert!("DES".parse::<GenericKind>().is_err());
        assert!(GenericKind::Rsa(2048).is_pair());
        assert!(!GenericKind::Aes(32).is_pair());
    }

    #[test]
    fn templates_keep_custody_and_flags() {
        let spec = GenericSpec {
            kind: GenericKind::Rsa(2048),
            id: &[1, 2, 3],
            label: "l",
            exportable: false,
            usage: GenericUsage {
                sign: true,
                decrypt: true,
                verify: true,
                encrypt: false,
                wrap: false,
                unwrap: false,
            },
        };
        let (private, public) = templates(&spec, true);
        for a in [
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Private(true),
            Attribute::Derive(false),
            Attribute::Copyable(false),
            Attribute::Sign(true),
            Attribute::Decrypt(true),
        ] {
            assert!(private.contains(&a), "{a:?}");
        }
        assert!(public.contains(&Attribute::Verify(true)));
        assert!(public.contains(&Attribute::Encrypt(false)));
        assert!(public.contains(&Attribute::Private(false)));
        let aes = GenericSpec {
            kind: GenericKind::Aes(32),
            usage: GenericUsage {
                encrypt: true,
                decrypt: true,
                ..GenericUsage::default()
            },
            ..spec
        };
        let (secret, public) = templates(&aes, false);
        assert!(public.is_empty());
        assert!(secret.contains(&Attribute::Class(ObjectClass::SECRET_KEY)));
        assert!(secret.contains(&Attribute::Sign(false)));
        assert!(!secret.iter().any(|a| matches!(a, Attribute::Copyable(_))));
    }
}
