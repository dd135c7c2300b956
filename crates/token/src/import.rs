//! BYOK in the token (design §5): import jobs' RSA wrapping pairs, and the unwrap of wrapped
//! key material into a version's token objects.
//!
//! # The wrapping pair
//! An RSA pair of the method's size: the private half is a token object, `CKA_PRIVATE`,
//! `CKA_SENSITIVE`, never extractable, and may only unwrap (`CKA_UNWRAP` TRUE, no decrypt,
//! no sign); the public half may only wrap. Its public key leaves as SPKI.
//!
//! # The unwrap
//! The `rsa-oaep-*-aes-256` methods are the `CKM_RSA_AES_KEY_WRAP` construction: the blob is
//! RSA-OAEP(ephemeral AES-256 key) followed by AES-KWP (RFC 5649) of the material. cryptoki
//! 0.12.1 can neither list nor build `CKM_RSA_AES_KEY_WRAP` (its `MechanismType` has no such
//! constant, and `C_GetMechanismList` results it cannot name are dropped), and SoftHSM2 2.6
//! lacks it anyway, so the construction is always composed here, inside the token, in one
//! session: `C_UnwrapKey(CKM_RSA_PKCS_OAEP)` of the ephemeral key as a session object
//! (sensitive, not extractable, unwrap only), `C_UnwrapKey` with the token's RFC 5649
//! mechanism (learnt at open, kwp.rs: `CKM_AES_KEY_WRAP_PAD` on SoftHSM2,
//! `CKM_AES_KEY_WRAP_KWP` on NSS softokn) of the material into the version's token object, then the ephemeral key is destroyed, whatever
//! happened. `rsa-oaep-3072-sha256` is one `C_UnwrapKey(CKM_RSA_PKCS_OAEP)` of the material.
//! The daemon never sees the ephemeral key or the material.
//!
//! An unwrapped key is checked before it counts: a secret key's length must be the
//! algorithm's; a private key's type and size (curve, modulus) must be the algorithm's, its
//! public key (given as SPKI, since the daemon never sees the material) is stored in the
//! token as the version's public half, and a test signature (or, for decryption keys, a test
//! OAEP encryption and decryption) must work across the pair. On any failure every object
//! made so far is destroyed: nothing half-imported stays in the token.

use crate::capabilities::{Half, OaepHash};
use crate::error::{Result, TokenError};
use crate::keys::{custody_secret, custody_template, PublicKey};
use crate::public_key::{Curve, ID_EC_PUBLIC_KEY, RSA_ENCRYPTION};
use crate::token::Token;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use keyward_wire::import::{ImportHash, ImportMethod, MAX_DIRECT_LEN, MAX_WRAPPED_LEN};
use keyward_wire::keys::{Algorithm, KeyKind, Purpose};
use spki::der::asn1::{OctetStringRef, UintRef};
use spki::der::{Decode, Encode, Reader, SliceReader};
use spki::SubjectPublicKeyInfoRef;

/// The shortest AES-KWP output (RFC 5649: one 64-bit block plus the integrity block).
const MIN_KWP_LEN: usize = 16;

/// What to unwrap into.
#[derive(Debug, Clone, Copy)]
pub struct ImportTarget<'a> {
    /// The version's algorithm.
    pub algorithm: Algorithm,
    /// `CKA_ID` for the new object(s): the daemon's internal random id.
    pub id: &'a [u8],
    /// `CKA_LABEL` for the new object(s).
    pub label: &'a str,
    /// `CKA_EXTRACTABLE` of the new private or secret object (it stays sensitive).
    pub exportable: bool,
    /// The public key (DER SPKI) of an asymmetric import.
    pub public_key: Option<&'a [u8]>,
}

fn oaep_hash(h: ImportHash) -> OaepHash {
    match h {
        ImportHash::Sha1 => OaepHash::Sha1,
        ImportHash::Sha256 => OaepHash::Sha256,
    }
}

fn oaep_mechanism(h: ImportHash) -> Mechanism<'static> {
    let (hash, mgf) = match h {
        ImportHash::Sha1 => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
        ImportHash::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
    };
    Mechanism::RsaPkcsOaep(PkcsOaepParams::new(hash, mgf, PkcsOaepSource::empty()))
}

/// Public values parsed from an SPKI.
enum Spki {
    Rsa { modulus: Vec<u8>, exponent: Vec<u8> },
    Ec { curve: Curve, point: Vec<u8> },
}

fn bad_spki(why: impl std::fmt::Display) -> TokenError {
    TokenError::InvalidArgument(format!("the public key is not a usable SPKI: {why}"))
}

fn parse_spki(der: &[u8]) -> Result<Spki> {
    let spki = SubjectPublicKeyInfoRef::from_der(der).map_err(bad_spki)?;
    let key = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| bad_spki("unaligned key bits"))?;
    let oid = spki.algorithm.oid;
    if oid == RSA_ENCRYPTION {
        let mut r = SliceReader::new(key).map_err(bad_spki)?;
        let (modulus, exponent) = r
            .sequence(|seq| {
                let n = UintRef::decode(seq)?;
                let e = UintRef::decode(seq)?;
                Ok((n.as_bytes().to_vec(), e.as_bytes().to_vec()))
            })
            .map_err(bad_spki)?;
        Ok(Spki::Rsa { modulus, exponent })
    } else if oid == ID_EC_PUBLIC_KEY {
        let params = spki
            .algorithm
            .parameters
            .ok_or_else(|| bad_spki("EC key without a named curve"))?
            .to_der()
            .map_err(bad_spki)?;
        let curve = Curve::from_ec_params(&params)
            .ok_or_else(|| bad_spki("EC curve other than P-256 or P-384"))?;
        if key.len() != 1 + 2 * curve.field_len() || key[0] != 0x04 {
            return Err(bad_spki("EC point is not uncompressed"));
        }
        Ok(Spki::Ec {
            curve,
            point: key.to_vec(),
        })
    } else {
        Err(bad_spki(format!("algorithm {oid} is neither RSA nor EC")))
    }
}

/// The kind and size of the key a DER SPKI carries: [`KeyKind::Rsa`] with its modulus bits,
/// or [`KeyKind::Ec`] with its curve's bits (P-256, P-384); anything else is
/// [`TokenError::InvalidArgument`].
pub fn spki_kind(der: &[u8]) -> Result<KeyKind> {
    Ok(match parse_spki(der)? {
        Spki::Rsa { modulus, .. } => KeyKind::Rsa(modulus_bits(&modulus)),
        Spki::Ec { curve, .. } => KeyKind::Ec(curve.field_len() * 8),
    })
}

fn modulus_bits(n: &[u8]) -> usize {
    let Some(first) = n.iter().position(|b| *b != 0) else {
        return 0;
    };
    (n.len() - first) * 8 - n[first].leading_zeros() as usize
}

/// Usage attributes of the imported key's objects: (secret or private, public).
fn usage(purpose: Purpose, asymmetric: bool) -> (Vec<Attribute>, Vec<Attribute>) {
    let (enc, dec, sign, verify) = match purpose {
        Purpose::EncryptDecrypt => (true, true, false, false),
        Purpose::Mac => (false, false, true, true),
        Purpose::AsymmetricSign => (false, false, true, true),
        Purpose::AsymmetricDecrypt => (true, true, false, false),
        Purpose::Pkcs11Generic => (false, false, false, false),
    };
    if asymmetric {
        (
            vec![
                Attribute::Decrypt(dec),
                Attribute::Sign(sign),
                Attribute::SignRecover(false),
                Attribute::Unwrap(false),
            ],
            vec![
                Attribute::Encrypt(enc),
                Attribute::Verify(verify),
                Attribute::VerifyRecover(false),
                Attribute::Wrap(false),
            ],
        )
    } else {
        (
            vec![
                Attribute::Encrypt(enc),
                Attribute::Decrypt(dec),
                Attribute::Sign(sign),
                Attribute::Verify(verify),
                Attribute::Wrap(false),
                Attribute::Unwrap(false),
            ],
            Vec::new(),
        )
    }
}

impl Token {
    /// `Ok` if the token can serve `method` (generate its wrapping pair and unwrap with it),
    /// else [`TokenError::MechanismUnavailable`] naming what is missing (on SoftHSM2 2.6 the
    /// SHA-256 methods: "CKM_RSA_PKCS_OAEP with SHA-256 ...").
    pub fn check_import_method(&self, method: ImportMethod) -> Result<()> {
        let m = self.mechanisms();
        let missing = |mechanism: String| {
            Err(TokenError::MechanismUnavailable {
                mechanism: format!("{mechanism}, which import method {method} needs"),
            })
        };
        for needed in [
            MechanismType::RSA_PKCS_KEY_PAIR_GEN,
            MechanismType::RSA_PKCS_OAEP,
        ] {
            if !m.has(needed) {
                return missing(needed.to_string());
            }
        }
        if let Some(why) = m.oaep_unwrap() {
            return missing(why.to_owned());
        }
        if method.uses_aes() && m.rfc5649().is_none() {
            return missing(format!(
                "RFC 5649 AES key wrap with padding (to compose CKM_RSA_AES_KEY_WRAP; {})",
                m.rfc5649_probe().reason().unwrap_or_default()
            ));
        }
        let hash = oaep_hash(method.hash());
        if !m.oaep(hash) {
            return missing(hash.mechanism_name().to_owned());
        }
        m.check_rsa_bits(method.rsa_bits())
            .map_err(|mechanism| TokenError::MechanismUnavailable {
                mechanism: format!("{mechanism}, which import method {method} needs"),
            })
    }

    /// Generates an import job's RSA wrapping pair with `id`/`label` and returns its public
    /// key. The private half never leaves the token and may only unwrap.
    pub fn generate_import_pair(
        &self,
        method: ImportMethod,
        id: &[u8],
        label: &str,
    ) -> Result<PublicKey> {
        self.check_import_method(method)?;
        if id.is_empty() {
            return Err(TokenError::InvalidArgument(
                "CKA_ID must not be empty".into(),
            ));
        }
        let copyable = self.mechanisms().copyable_accepted();
        let mut private = custody_secret(custody_template(id, label, true, copyable), false);
        private.extend([
            Attribute::Decrypt(false),
            Attribute::Sign(false),
            Attribute::SignRecover(false),
            Attribute::Unwrap(true),
        ]);
        let mut public = custody_template(id, label, false, copyable);
        public.extend([
            Attribute::Encrypt(false),
            Attribute::Verify(false),
            Attribute::VerifyRecover(false),
            Attribute::Wrap(true),
            Attribute::ModulusBits(u64::try_from(method.rsa_bits()).unwrap_or(0).into()),
            Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
        ]);
        let private = self.capabilities().fit(Half::Private, private);
        let public = self.capabilities().fit(Half::Public, public);
        self.write_session(|s| {
            if !s.find_objects(&[Attribute::Id(id.to_vec())])?.is_empty() {
                return Err(TokenError::InvalidArgument(format!(
                    "CKA_ID {} is already used by an object in the token",
                    crate::error::hex(id)
                )));
            }
            let (pub_h, priv_h) =
                s.generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)?;
            let key = crate::keys::read_public_key(s, pub_h).inspect_err(|_| {
                let _ = s.destroy_object(pub_h);
                let _ = s.destroy_object(priv_h);
            })?;
            tracing::info!(%method, id = %crate::error::hex(id), "generated an import job's wrapping pair");
            Ok(key)
        })
    }

    /// Unwraps `wrapped` with the import job pair `job_id` (made for `method`) into new token
    /// objects for `target` (see the module documentation). Returns the version's public key
    /// (SPKI as the token now holds it) for asymmetric imports. On error nothing new remains
    /// in the token; a blob the token cannot unwrap is the token's own error
    /// (`CKR_WRAPPED_KEY_INVALID`, `CKR_ENCRYPTED_DATA_INVALID`, ...), a key that does not fit
    /// the algorithm or its public key is [`TokenError::InvalidArgument`].
    pub fn import_wrapped(
        &self,
        job_id: &[u8],
        method: ImportMethod,
        wrapped: &[u8],
        target: &ImportTarget<'_>,
    ) -> Result<Option<PublicKey>> {
        self.check_import_method(method)?;
        let algorithm = target.algorithm;
        let asymmetric = algorithm.is_asymmetric();
        if target.id.is_empty() {
            return Err(TokenError::InvalidArgument(
                "CKA_ID must not be empty".into(),
            ));
        }
        let rsa_len = method.rsa_len();
        if method.uses_aes() {
            if wrapped.len() < rsa_len + MIN_KWP_LEN || wrapped.len() > MAX_WRAPPED_LEN {
                return Err(TokenError::InvalidArgument(format!(
                    "a {method} blob is the {rsa_len}-byte RSA-OAEP part followed by at least \
                     {MIN_KWP_LEN} bytes of AES-KWP (at most {MAX_WRAPPED_LEN} bytes in all); \
                     this one has {} bytes",
                    wrapped.len()
                )));
            }
        } else {
            if asymmetric {
                return Err(TokenError::InvalidArgument(format!(
                    "import method {method} carries symmetric keys of at most {MAX_DIRECT_LEN} \
                     bytes; {algorithm} needs an rsa-oaep-*-aes-256 method"
                )));
            }
            if wrapped.len() != rsa_len {
                return Err(TokenError::InvalidArgument(format!(
                    "a {method} blob is exactly {rsa_len} bytes; this one has {}",
                    wrapped.len()
                )));
            }
        }
        let spki = match (asymmetric, target.public_key) {
            (true, Some(der)) => Some(parse_spki(der)?),
            (true, None) => {
                return Err(TokenError::InvalidArgument(format!(
                    "{algorithm} is asymmetric: the import needs its public key (SPKI)"
                )))
            }
            (false, Some(_)) => {
                return Err(TokenError::InvalidArgument(format!(
                    "{algorithm} is symmetric: it takes no public key"
                )))
            }
            (false, None) => None,
        };
        match (algorithm.kind(), &spki) {
            (KeyKind::Ec(bits), Some(Spki::Ec { curve, .. }))
                if Curve::from_bits(bits) != Some(*curve) =>
            {
                return Err(TokenError::InvalidArgument(format!(
                    "the public key is on {curve:?}, but {algorithm} needs a {bits}-bit curve"
                )));
            }
            (KeyKind::Rsa(bits), Some(Spki::Rsa { modulus, .. })) => {
                let got = modulus_bits(modulus);
                if got != bits {
                    return Err(TokenError::InvalidArgument(format!(
                        "the public key is RSA-{got}, but {algorithm} needs RSA-{bits}"
                    )));
                }
            }
            (KeyKind::Ec(_), Some(Spki::Rsa { .. })) => {
                return Err(TokenError::InvalidArgument(format!(
                    "the public key is RSA, but {algorithm} is an EC algorithm"
                )))
            }
            (KeyKind::Rsa(_), Some(Spki::Ec { .. })) => {
                return Err(TokenError::InvalidArgument(format!(
                    "the public key is EC, but {algorithm} is an RSA algorithm"
                )))
            }
            _ => {}
        }

        // SoftHSM2 2.6 leaves CKA_VALUE_LEN of an unwrapped secret key 0, so a symmetric
        // key's length is checked on the blob: AES-KWP of L bytes (L a multiple of 8, as 16 and
        // 32 are) is exactly L + 8 bytes.
        if let (KeyKind::Aes(bytes) | KeyKind::Hmac(bytes), true) =
            (algorithm.kind(), method.uses_aes())
        {
            let kwp = wrapped.len() - rsa_len;
            if kwp != bytes + 8 {
                return Err(TokenError::InvalidArgument(format!(
                    "the wrapped material holds {} to {} bytes; {algorithm} needs {bytes}",
                    kwp.saturating_sub(15).max(1),
                    kwp - 8
                )));
            }
        }
        let copyable = self.mechanisms().copyable_accepted();
        let (secret_usage, public_usage) = usage(algorithm.purpose(), asymmetric);
        let mut secret = custody_secret(
            custody_template(target.id, target.label, true, copyable),
            target.exportable,
        );
        secret.extend(secret_usage);
        let key_type = match algorithm.kind() {
            KeyKind::Aes(_) => KeyType::AES,
            KeyKind::Hmac(_) => KeyType::GENERIC_SECRET,
            KeyKind::Ec(_) => KeyType::EC,
            KeyKind::Rsa(_) => KeyType::RSA,
        };
        secret.extend([
            Attribute::Class(if asymmetric {
                ObjectClass::PRIVATE_KEY
            } else {
                ObjectClass::SECRET_KEY
            }),
            Attribute::KeyType(key_type),
        ]);
        let mut public = custody_template(target.id, target.label, false, copyable);
        public.extend(public_usage);
        public.extend([
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(key_type),
        ]);
        match &spki {
            Some(Spki::Rsa { modulus, exponent }) => public.extend([
                Attribute::Modulus(modulus.clone()),
                Attribute::PublicExponent(exponent.clone()),
            ]),
            Some(Spki::Ec { curve, point }) => {
                let point = OctetStringRef::new(point)
                    .and_then(|o| o.to_der())
                    .map_err(bad_spki)?;
                public.extend([
                    Attribute::EcParams(curve.ec_params()),
                    Attribute::EcPoint(point),
                ]);
            }
            None => {}
        }

        self.write_session(|s| {
            if !s
                .find_objects(&[Attribute::Id(target.id.to_vec())])?
                .is_empty()
            {
                return Err(TokenError::InvalidArgument(format!(
                    "CKA_ID {} is already used by an object in the token",
                    crate::error::hex(target.id)
                )));
            }
            let job = crate::keys::find_one(s, job_id, ObjectClass::PRIVATE_KEY, "import job key")?;
            let key = unwrap_material(self, s, job, method, wrapped, &secret)?;
            let made = check_imported(s, key, target, spki.as_ref(), &public);
            match made {
                Ok(public_key) => {
                    tracing::info!(
                        %algorithm, %method,
                        id = %crate::error::hex(target.id),
                        "imported wrapped key material into the token"
                    );
                    Ok(public_key)
                }
                Err(e) => {
                    for h in s.find_objects(&[Attribute::Id(target.id.to_vec())])? {
                        let _ = s.destroy_object(h);
                    }
                    let _ = s.destroy_object(key);
                    Err(e)
                }
            }
        })
    }
}

/// The unwrap itself: the new key's handle (a token object with `template`).
fn unwrap_material(
    token: &Token,
    s: &Session,
    job: ObjectHandle,
    method: ImportMethod,
    wrapped: &[u8],
    template: &[Attribute],
) -> Result<ObjectHandle> {
    let oaep = oaep_mechanism(method.hash());
    if !method.uses_aes() {
        return Ok(s.unwrap_key(&oaep, job, wrapped, template)?);
    }
    let (rsa_part, kwp_part) = wrapped.split_at(method.rsa_len());
    let ephemeral = s.unwrap_key(
        &oaep,
        job,
        rsa_part,
        &[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Wrap(false),
            Attribute::Unwrap(true),
            Attribute::Derive(false),
        ],
    )?;
    let result = token.unwrap_rfc5649(s, ephemeral, kwp_part, template);
    if let Err(e) = s.destroy_object(ephemeral) {
        tracing::error!(error = %e, "cannot destroy the ephemeral import key (a session object: it goes with the session)");
    }
    result
}

fn value_len(s: &Session, h: ObjectHandle) -> Result<usize> {
    for a in s.get_attributes(h, &[AttributeType::ValueLen])? {
        if let Attribute::ValueLen(n) = a {
            return usize::try_from(u64::from(n))
                .map_err(|_| TokenError::BadTokenData("CKA_VALUE_LEN out of range".into()));
        }
    }
    Err(TokenError::BadTokenData("no CKA_VALUE_LEN".into()))
}

/// Checks the unwrapped key against the algorithm (and its public key), makes the public
/// half; returns the public key for asymmetric imports.
fn check_imported(
    s: &Session,
    key: ObjectHandle,
    target: &ImportTarget<'_>,
    spki: Option<&Spki>,
    public_template: &[Attribute],
) -> Result<Option<PublicKey>> {
    let algorithm = target.algorithm;
    let wrong = |why: String| Err(TokenError::InvalidArgument(why));
    match (algorithm.kind(), spki) {
        (KeyKind::Aes(bytes) | KeyKind::Hmac(bytes), _) => {
            // 0: the token does not say (SoftHSM2 2.6); the blob's length was checked.
            let len = value_len(s, key)?;
            if len != 0 && len != bytes {
                return wrong(format!(
                    "the unwrapped key has {len} bytes; {algorithm} needs {bytes}"
                ));
            }
            Ok(None)
        }
        (KeyKind::Ec(_), Some(Spki::Ec { curve, .. })) => {
            let params = s.get_attributes(key, &[AttributeType::EcParams])?;
            let got = params.iter().find_map(|a| match a {
                Attribute::EcParams(p) => Curve::from_ec_params(p),
                _ => None,
            });
            if got != Some(*curve) {
                return wrong(format!(
                    "the unwrapped key is not a {curve:?} key ({algorithm})"
                ));
            }
            let public = s.create_object(public_template)?;
            pair_test(s, key, public, algorithm)?;
            Ok(Some(crate::keys::read_public_key(s, public)?))
        }
        (KeyKind::Rsa(_), Some(Spki::Rsa { modulus, .. })) => {
            let attrs = s.get_attributes(key, &[AttributeType::Modulus])?;
            let got = attrs.iter().find_map(|a| match a {
                Attribute::Modulus(n) => Some(n.clone()),
                _ => None,
            });
            let strip = |v: &[u8]| {
                v.iter()
                    .skip_while(|b| **b == 0)
                    .copied()
                    .collect::<Vec<_>>()
            };
            if got.as_deref().map(strip) != Some(strip(modulus)) {
                return wrong(
                    "the unwrapped RSA key does not match the public key given with it".into(),
                );
            }
            let public = s.create_object(public_template)?;
            pair_test(s, key, public, algorithm)?;
            Ok(Some(crate::keys::read_public_key(s, public)?))
        }
        _ => wrong(format!(
            "{algorithm} is asymmetric: the import needs its public key (SPKI)"
        )),
    }
}

/// A test signature (or OAEP encryption and decryption) across the pair.
fn pair_test(
    s: &Session,
    private: ObjectHandle,
    public: ObjectHandle,
    algorithm: Algorithm,
) -> Result<()> {
    let message = b"keyward import pair check";
    let mismatch = || {
        TokenError::InvalidArgument(format!(
            "the unwrapped private key and the public key given with it are not a pair \
             (test {} failed)",
            if algorithm.purpose() == Purpose::AsymmetricDecrypt {
                "encryption"
            } else {
                "signature"
            }
        ))
    };
    match (algorithm.purpose(), algorithm.kind()) {
        (Purpose::AsymmetricDecrypt, _) => {
            let m = oaep_mechanism(ImportHash::Sha1);
            let ct = s.encrypt(&m, public, message)?;
            match s.decrypt(&m, private, &ct) {
                Ok(pt) if pt == message => Ok(()),
                _ => Err(mismatch()),
            }
        }
        (_, KeyKind::Ec(bits)) => {
            // A digest-sized input for raw ECDSA (the token signs what it is given).
            let digest = vec![0x5Au8; bits.div_ceil(8).min(48)];
            let sig = s.sign(&Mechanism::Ecdsa, private, &digest)?;
            s.verify(&Mechanism::Ecdsa, public, &digest, &sig)
                .map_err(|_| mismatch())
        }
        _ => {
            let sig = s.sign(&Mechanism::Sha256RsaPkcs, private, message)?;
            s.verify(&Mechanism::Sha256RsaPkcs, public, message, &sig)
                .map_err(|_| mismatch())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spki_parsing_refuses_junk() {
        assert!(parse_spki(b"not der").is_err());
        let n = vec![0xC3u8; 384];
        let der = crate::public_key::rsa_spki_der(&n, &[1, 0, 1]).unwrap();
        match parse_spki(&der).unwrap() {
            Spki::Rsa { modulus, .. } => assert_eq!(modulus_bits(&modulus), 3072),
            Spki::Ec { .. } => panic!("RSA parsed as EC"),
        }
    }
}
