//! Crypto operations by `CKA_ID` for the daemon: sign/verify (ECDSA over a digest, RSA
//! PKCS#1 v1.5 and PSS with SHA-256, HMAC-SHA256), AES-GCM, RSA-OAEP, and random bytes.
//! One-shot cryptoki calls (`C_SignInit` + `C_Sign`, ...) on a pooled session; no RSA
//! padding or hashing of secret data ever happens here.

use crate::capabilities::OaepHash;
use crate::error::{Result, TokenError};
use crate::keys::find_one;
use crate::raw::encrypt_sized;
use crate::token::Token;
use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::ObjectClass;

/// AES-GCM IV length (bytes).
pub const GCM_IV_LEN: usize = 12;
/// AES-GCM tag length (bytes), appended to the ciphertext.
pub const GCM_TAG_LEN: usize = 16;

/// A signing or MAC mechanism, and what its input is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignMechanism {
    /// `CKM_ECDSA` over a digest the caller made; the signature is raw `r || s`
    /// ([`crate::public_key::ecdsa_raw_to_der`] makes the DER form).
    Ecdsa,
    /// `CKM_SHA256_RSA_PKCS`: the token hashes the message.
    RsaPkcs1Sha256,
    /// `CKM_RSA_PKCS` over a DER `DigestInfo` the caller made (how libp11, NSS, ssh and Java
    /// sign). Sign/verify only: never used to decrypt.
    RsaPkcs1,
    /// `CKM_SHA256_RSA_PKCS_PSS` (MGF1-SHA256, 32-byte salt): the token hashes the message.
    RsaPssSha256,
    /// `CKM_RSA_PKCS_PSS` with SHA-256 parameters over a 32-byte digest the caller made.
    RsaPssSha256Digest,
    /// `CKM_SHA256_HMAC` with a generic secret key.
    HmacSha256,
}

impl SignMechanism {
    fn mechanism(self) -> Mechanism<'static> {
        let pss = PkcsPssParams {
            hash_alg: MechanismType::SHA256,
            mgf: PkcsMgfType::MGF1_SHA256,
            s_len: 32u64.into(),
        };
        match self {
            SignMechanism::Ecdsa => Mechanism::Ecdsa,
            SignMechanism::RsaPkcs1Sha256 => Mechanism::Sha256RsaPkcs,
            SignMechanism::RsaPkcs1 => Mechanism::RsaPkcs,
            SignMechanism::RsaPssSha256 => Mechanism::Sha256RsaPkcsPss(pss),
            SignMechanism::RsaPssSha256Digest => Mechanism::RsaPkcsPss(pss),
            SignMechanism::HmacSha256 => Mechanism::Sha256Hmac,
        }
    }

    /// (class of the signing key, class of the verifying key, their names)
    fn classes(self) -> [(ObjectClass, &'static str); 2] {
        match self {
            SignMechanism::HmacSha256 => [
                (ObjectClass::SECRET_KEY, "secret key"),
                (ObjectClass::SECRET_KEY, "secret key"),
            ],
            _ => [
                (ObjectClass::PRIVATE_KEY, "private key"),
                (ObjectClass::PUBLIC_KEY, "public key"),
            ],
        }
    }
}

/// The result of an AES-GCM encryption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcmCiphertext {
    /// The 12-byte IV used (the caller's, or one from the token's RNG).
    pub iv: [u8; GCM_IV_LEN],
    /// Ciphertext followed by the 16-byte tag.
    pub ciphertext: Vec<u8>,
}

impl Token {
    fn require(&self, m: MechanismType) -> Result<()> {
        if self.mechanisms().has(m) {
            Ok(())
        } else {
            Err(TokenError::MechanismUnavailable {
                mechanism: m.to_string(),
            })
        }
    }

    /// Signs (or MACs) `data` with the key `id` (the private key of a pair, or an HMAC secret).
    pub fn sign(&self, id: &[u8], mechanism: SignMechanism, data: &[u8]) -> Result<Vec<u8>> {
        let m = mechanism.mechanism();
        self.require(m.mechanism_type())?;
        let [(class, what), _] = mechanism.classes();
        self.with_key(class, id, what, |s, key| s.sign(&m, key, data))
    }

    /// Verifies `signature` over `data` with the key `id` (the public key of a pair, or an
    /// HMAC secret). `Ok(false)` for a wrong signature (`CKR_SIGNATURE_INVALID` or
    /// `CKR_SIGNATURE_LEN_RANGE`).
    pub fn verify(
        &self,
        id: &[u8],
        mechanism: SignMechanism,
        data: &[u8],
        signature: &[u8],
    ) -> Result<bool> {
        let m = mechanism.mechanism();
        self.require(m.mechanism_type())?;
        let [_, (class, what)] = mechanism.classes();
        self.session(|s| {
            let key = find_one(s, id, class, what)?;
            match s.verify(&m, key, data, signature) {
                Ok(()) => Ok(true),
                Err(CryptokiError::Pkcs11(
                    RvError::SignatureInvalid | RvError::SignatureLenRange,
                    _,
                )) => Ok(false),
                Err(e) => Err(e.into()),
            }
        })
    }

    /// AES-GCM encryption with the secret key `id`, a 128-bit tag and `aad`. With `iv` `None`
    /// the IV comes from the token's RNG. Never reuse an IV with one key.
    pub fn encrypt_aes_gcm(
        &self,
        id: &[u8],
        plaintext: &[u8],
        aad: &[u8],
        iv: Option<[u8; GCM_IV_LEN]>,
    ) -> Result<GcmCiphertext> {
        self.require(MechanismType::AES_GCM)?;
        let iv = match iv {
            Some(iv) => iv,
            None => {
                let mut iv = [0u8; GCM_IV_LEN];
                self.crate_session(|s| Ok(s.generate_random_slice(&mut iv)?))?;
                iv
            }
        };
        let ciphertext = self.session(|s| {
            let key = find_one(s, id, ObjectClass::SECRET_KEY, "secret key")?;
            let mut iv_copy = iv;
            let params = GcmParams::new(&mut iv_copy, aad, tag_bits())?;
            let out_len = plaintext.len().saturating_add(GCM_TAG_LEN);
            // No length query: NSS softokn answers it without the tag (raw.rs).
            Ok(encrypt_sized(
                self.raw(),
                s,
                &Mechanism::AesGcm(params),
                key,
                plaintext,
                out_len,
            )?)
        })?;
        Ok(GcmCiphertext { iv, ciphertext })
    }

    /// AES-GCM decryption of `ciphertext` (tag appended) with the secret key `id`.
    /// A wrong key, IV, AAD or tag is the token's error (`CKR_ENCRYPTED_DATA_INVALID` on
    /// SoftHSM2).
    pub fn decrypt_aes_gcm(
        &self,
        id: &[u8],
        iv: &[u8; GCM_IV_LEN],
        ciphertext: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>> {
        self.require(MechanismType::AES_GCM)?;
        if ciphertext.len() < GCM_TAG_LEN {
            return Err(TokenError::InvalidArgument(format!(
                "AES-GCM ciphertext of {} bytes is shorter than the {GCM_TAG_LEN}-byte tag",
                ciphertext.len()
            )));
        }
        self.session(|s| {
            let key = find_one(s, id, ObjectClass::SECRET_KEY, "secret key")?;
            let mut iv = *iv;
            let params = GcmParams::new(&mut iv, aad, tag_bits())?;
            Ok(s.decrypt(&Mechanism::AesGcm(params), key, ciphertext)?)
        })
    }

    fn require_oaep(&self, hash: OaepHash) -> Result<()> {
        self.require(MechanismType::RSA_PKCS_OAEP)?;
        if self.mechanisms().oaep(hash) {
            Ok(())
        } else {
            Err(TokenError::MechanismParamUnsupported {
                mechanism: hash.mechanism_name().to_owned(),
            })
        }
    }

    /// RSA-OAEP encryption (empty label) with the public key `id` held in the token.
    pub fn encrypt_rsa_oaep(&self, id: &[u8], hash: OaepHash, plaintext: &[u8]) -> Result<Vec<u8>> {
        self.require_oaep(hash)?;
        self.session(|s| {
            let key = find_one(s, id, ObjectClass::PUBLIC_KEY, "public key")?;
            Ok(s.encrypt(&hash.mechanism(), key, plaintext)?)
        })
    }

    /// RSA-OAEP decryption (empty label) with the private key `id`.
    pub fn decrypt_rsa_oaep(
        &self,
        id: &[u8],
        hash: OaepHash,
        ciphertext: &[u8],
    ) -> Result<Vec<u8>> {
        self.require_oaep(hash)?;
        self.session(|s| {
            let key = find_one(s, id, ObjectClass::PRIVATE_KEY, "private key")?;
            Ok(s.decrypt(&hash.mechanism(), key, ciphertext)?)
        })
    }

    /// `len` bytes from the token's RNG.
    pub fn generate_random(&self, len: usize) -> Result<Vec<u8>> {
        let len = u32::try_from(len)
            .map_err(|_| TokenError::InvalidArgument(format!("{len} random bytes is too many")))?;
        self.crate_session(|s| Ok(s.generate_random_vec(len)?))
    }
}

fn tag_bits() -> cryptoki::types::Ulong {
    u64::try_from(GCM_TAG_LEN * 8).unwrap_or(128).into()
}
