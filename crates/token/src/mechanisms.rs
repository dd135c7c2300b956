//! What the backing token can do, probed once at open: its mechanism list, key-size ranges of
//! the key generation mechanisms, which hashes `CKM_RSA_PKCS_OAEP` accepts, and whether the
//! token takes `CKA_COPYABLE` in templates; and [`Mechanisms::check_algorithm`], which
//! refuses an [`Algorithm`] the token cannot serve, naming the missing mechanism.
//!
//! PKCS#11 has no way to ask which hashes a token's OAEP supports (`CK_MECHANISM_INFO` says
//! nothing about parameters). SoftHSM2 2.6 is known to do OAEP with SHA-1 only: its
//! `C_EncryptInit`/`C_DecryptInit` refuse any other `hashAlg` or MGF with
//! `CKR_ARGUMENTS_BAD`. So the probe makes a session (`CKA_TOKEN=FALSE`) RSA key pair, tries
//! an OAEP encrypt and decrypt with each hash, and destroys the pair.

use crate::error::{Result, TokenError};
use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismInfo, MechanismType};
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use keyward_wire::keys::{Algorithm, KeyKind};
use std::collections::BTreeMap;

/// Hash of an RSA-OAEP operation (the OAEP hash and its MGF1 hash are always the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OaepHash {
    /// SHA-1 with MGF1-SHA-1.
    Sha1,
    /// SHA-256 with MGF1-SHA-256.
    Sha256,
}

impl OaepHash {
    /// The OAEP hash an algorithm asks for, if it is an OAEP algorithm.
    pub fn of(algorithm: Algorithm) -> Option<OaepHash> {
        use Algorithm::*;
        match algorithm {
            RsaDecryptOaep2048Sha1 | RsaDecryptOaep3072Sha1 | RsaDecryptOaep4096Sha1 => {
                Some(OaepHash::Sha1)
            }
            RsaDecryptOaep2048Sha256 | RsaDecryptOaep3072Sha256 | RsaDecryptOaep4096Sha256 => {
                Some(OaepHash::Sha256)
            }
            _ => None,
        }
    }

    /// The `CKM_RSA_PKCS_OAEP` mechanism with this hash and an empty label.
    pub(crate) fn mechanism(self) -> Mechanism<'static> {
        let (hash, mgf) = match self {
            OaepHash::Sha1 => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
            OaepHash::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
        };
        Mechanism::RsaPkcsOaep(PkcsOaepParams::new(hash, mgf, PkcsOaepSource::empty()))
    }

    /// How error messages name the mechanism variant.
    pub fn mechanism_name(self) -> &'static str {
        match self {
            OaepHash::Sha1 => "CKM_RSA_PKCS_OAEP with SHA-1 (hashAlg CKM_SHA_1, MGF1-SHA1)",
            OaepHash::Sha256 => "CKM_RSA_PKCS_OAEP with SHA-256 (hashAlg CKM_SHA256, MGF1-SHA256)",
        }
    }
}

/// The token's capabilities, probed at open and immutable afterwards.
#[derive(Debug, Clone)]
pub struct Mechanisms {
    /// Every mechanism `C_GetMechanismList` reported, by numeric type.
    available: BTreeMap<u64, MechanismType>,
    /// `C_GetMechanismInfo` of the key generation mechanisms present.
    keygen_info: BTreeMap<u64, MechanismInfo>,
    oaep_sha1: bool,
    oaep_sha256: bool,
    copyable: bool,
}

/// Key generation mechanisms whose key-size range is checked.
const KEYGEN: [MechanismType; 4] = [
    MechanismType::AES_KEY_GEN,
    MechanismType::GENERIC_SECRET_KEY_GEN,
    MechanismType::ECC_KEY_PAIR_GEN,
    MechanismType::RSA_PKCS_KEY_PAIR_GEN,
];

impl Mechanisms {
    /// Probes the token in `slot` through a logged-in read/write `session`.
    pub(crate) fn probe(ctx: &Pkcs11, slot: Slot, session: &Session) -> Result<Mechanisms> {
        let available: BTreeMap<u64, MechanismType> = ctx
            .get_mechanism_list(slot)?
            .into_iter()
            .map(|m| (*m, m))
            .collect();
        let mut keygen_info = BTreeMap::new();
        for m in KEYGEN {
            if available.contains_key(&*m) {
                keygen_info.insert(*m, ctx.get_mechanism_info(slot, m)?);
            }
        }
        let mut mechs = Mechanisms {
            available,
            keygen_info,
            oaep_sha1: false,
            oaep_sha256: false,
            copyable: false,
        };
        if mechs.has(MechanismType::RSA_PKCS_OAEP)
            && mechs.has(MechanismType::RSA_PKCS_KEY_PAIR_GEN)
        {
            let bits = mechs.probe_rsa_bits();
            let (public, private) = session.generate_key_pair(
                &Mechanism::RsaPkcsKeyPairGen,
                &[
                    Attribute::Token(false),
                    Attribute::ModulusBits(bits.into()),
                    Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                    Attribute::Encrypt(true),
                ],
                &[
                    Attribute::Token(false),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Decrypt(true),
                ],
            )?;
            mechs.oaep_sha1 = oaep_trial(session, public, private, OaepHash::Sha1);
            mechs.oaep_sha256 = oaep_trial(session, public, private, OaepHash::Sha256);
            session.destroy_object(private)?;
            session.destroy_object(public)?;
        }
        if mechs.has(MechanismType::AES_KEY_GEN) {
            mechs.copyable = copyable_trial(session)?;
        }
        Ok(mechs)
    }

    /// An RSA size for the probe key: 1024 bits, or the token's minimum if larger.
    fn probe_rsa_bits(&self) -> u64 {
        let min = self
            .keygen_info
            .get(&*MechanismType::RSA_PKCS_KEY_PAIR_GEN)
            .map_or(0, |i| i.min_key_size());
        u64::try_from(min.max(1024)).unwrap_or(1024)
    }

    /// True if `C_GetMechanismList` reported `m`.
    pub fn has(&self, m: MechanismType) -> bool {
        self.available.contains_key(&*m)
    }

    /// Every mechanism the token reported.
    pub fn list(&self) -> Vec<MechanismType> {
        self.available.values().copied().collect()
    }

    /// True if a trial `CKM_RSA_PKCS_OAEP` encrypt and decrypt with SHA-1 worked.
    pub fn oaep_sha1(&self) -> bool {
        self.oaep_sha1
    }

    /// True if a trial `CKM_RSA_PKCS_OAEP` encrypt and decrypt with SHA-256 worked
    /// (false on SoftHSM2 2.6).
    pub fn oaep_sha256(&self) -> bool {
        self.oaep_sha256
    }

    /// True if OAEP with `hash` worked in the probe.
    pub fn oaep(&self, hash: OaepHash) -> bool {
        match hash {
            OaepHash::Sha1 => self.oaep_sha1,
            OaepHash::Sha256 => self.oaep_sha256,
        }
    }

    /// True if the token accepted `CKA_COPYABLE=FALSE` in a key generation template.
    pub fn copyable_accepted(&self) -> bool {
        self.copyable
    }

    /// `Ok` if the token can generate and use keys of `algorithm`; otherwise
    /// [`TokenError::Unsupported`] naming the first missing mechanism (or mechanism variant:
    /// "CKM_RSA_PKCS_OAEP with SHA-256 ...", "CKM_RSA_PKCS_KEY_PAIR_GEN with 4096-bit keys").
    ///
    /// EC signing needs only raw `CKM_ECDSA`: keywardd hashes (public data) and signs the
    /// digest, composing `CKM_ECDSA_SHA256/384` that SoftHSM2 2.6 lacks (design §5).
    pub fn check_algorithm(&self, algorithm: Algorithm) -> Result<()> {
        let unsupported = |mechanism: String| TokenError::Unsupported {
            algorithm,
            mechanism,
        };
        let (keygen, size, uses): (MechanismType, usize, &[MechanismType]) = match algorithm.kind()
        {
            KeyKind::Aes(bytes) => (MechanismType::AES_KEY_GEN, bytes, &[MechanismType::AES_GCM]),
            KeyKind::Hmac(bytes) => (
                MechanismType::GENERIC_SECRET_KEY_GEN,
                bytes,
                &[MechanismType::SHA256_HMAC],
            ),
            KeyKind::Ec(bits) => (
                MechanismType::ECC_KEY_PAIR_GEN,
                bits,
                &[MechanismType::ECDSA],
            ),
            KeyKind::Rsa(bits) => {
                let uses: &[MechanismType] = match algorithm {
                    Algorithm::RsaSignPkcs1_2048Sha256
                    | Algorithm::RsaSignPkcs1_3072Sha256
                    | Algorithm::RsaSignPkcs1_4096Sha256 => &[MechanismType::SHA256_RSA_PKCS],
                    Algorithm::RsaSignPss2048Sha256
                    | Algorithm::RsaSignPss3072Sha256
                    | Algorithm::RsaSignPss4096Sha256 => &[MechanismType::SHA256_RSA_PKCS_PSS],
                    _ => &[MechanismType::RSA_PKCS_OAEP],
                };
                (MechanismType::RSA_PKCS_KEY_PAIR_GEN, bits, uses)
            }
        };
        for m in std::iter::once(&keygen).chain(uses) {
            if !self.has(*m) {
                return Err(unsupported(m.to_string()));
            }
        }
        if let Some(info) = self.keygen_info.get(&*keygen) {
            // Units follow the mechanism (bytes for AES and generic secrets, bits for RSA and
            // EC); 0..0 means the token does not say.
            let (min, max) = (info.min_key_size(), info.max_key_size());
            if max != 0 && (size < min || size > max) {
                let unit = match algorithm.kind() {
                    KeyKind::Aes(_) | KeyKind::Hmac(_) => "byte",
                    KeyKind::Ec(_) | KeyKind::Rsa(_) => "bit",
                };
                return Err(unsupported(format!("{keygen} with {size}-{unit} keys")));
            }
        }
        if let Some(hash) = OaepHash::of(algorithm) {
            if !self.oaep(hash) {
                return Err(unsupported(hash.mechanism_name().to_owned()));
            }
        }
        Ok(())
    }
}

impl Mechanisms {
    /// `Ok` if the token generates RSA pairs of `bits` bits, else the missing variant
    /// ("CKM_RSA_PKCS_KEY_PAIR_GEN with 4096-bit keys").
    pub fn check_rsa_bits(&self, bits: usize) -> std::result::Result<(), String> {
        let keygen = MechanismType::RSA_PKCS_KEY_PAIR_GEN;
        if !self.has(keygen) {
            return Err(keygen.to_string());
        }
        if let Some(info) = self.keygen_info.get(&*keygen) {
            let (min, max) = (info.min_key_size(), info.max_key_size());
            if max != 0 && (bits < min || bits > max) {
                return Err(format!("{keygen} with {bits}-bit keys"));
            }
        }
        Ok(())
    }
}

/// Encrypts and decrypts a short message with OAEP and `hash`; false on any failure.
fn oaep_trial(
    session: &Session,
    public: ObjectHandle,
    private: ObjectHandle,
    hash: OaepHash,
) -> bool {
    let message = b"keyward oaep probe";
    let result = session
        .encrypt(&hash.mechanism(), public, message)
        .and_then(|ct| session.decrypt(&hash.mechanism(), private, &ct));
    match result {
        Ok(pt) => pt == message,
        Err(e) => {
            tracing::info!(?hash, error = %e, "token refuses CKM_RSA_PKCS_OAEP with this hash");
            false
        }
    }
}

/// Generates a session AES key with `CKA_COPYABLE=FALSE`; true if the token took it.
fn copyable_trial(session: &Session) -> Result<bool> {
    match session.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Token(false),
            Attribute::ValueLen(16.into()),
            Attribute::Encrypt(true),
            Attribute::Copyable(false),
        ],
    ) {
        Ok(key) => {
            session.destroy_object(key)?;
            Ok(true)
        }
        Err(CryptokiError::Pkcs11(
            rv @ (RvError::AttributeTypeInvalid
            | RvError::AttributeReadOnly
            | RvError::AttributeValueInvalid
            | RvError::TemplateInconsistent),
            _,
        )) => {
            tracing::info!(%rv, "token refuses CKA_COPYABLE in templates; keys keep its default");
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}
