//! The mechanisms of the daemon's PKCS#11 operations ([`OpMechanism`]), built into cryptoki's
//! form in this one place, and [`Token::operate`], which runs one of them whole on a Keyward
//! key or a session object. keywardd decides which mechanism a key may use (its `ops` plan);
//! this module only turns the decision into token calls, so the raw PKCS#11 structures
//! (`CK_GCM_PARAMS`, `CK_AES_CTR_PARAMS`, the OAEP and PSS parameters) stay in this crate.

use crate::error::{Result, TokenError};
use crate::raw::encrypt_sized;
use crate::session_objects::SessionObject;
use crate::token::Token;
use cryptoki::context::Function;
use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use keyward_wire::pkcs11::Operation;
use sha2::{Digest, Sha256, Sha384, Sha512};

/// A digest (public data only: the caller's half of a composed mechanism such as
/// `CKM_ECDSA_SHA256`, and the hash of an HMAC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl Hash {
    /// The output length in bytes (also the full HMAC's).
    pub fn output_len(self) -> usize {
        match self {
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }

    /// The digest of `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => Sha256::digest(data).to_vec(),
            Hash::Sha384 => Sha384::digest(data).to_vec(),
            Hash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }
}

/// What the token is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpMechanism {
    /// `CKM_ECDSA`.
    Ecdsa,
    /// `CKM_RSA_PKCS`: a client-made `DigestInfo` signed, or PKCS#1 v1.5 decryption (the
    /// padding is checked in the token).
    RsaPkcs,
    /// `CKM_SHA256_RSA_PKCS`.
    Sha256RsaPkcs,
    /// `CKM_SHA384_RSA_PKCS`.
    Sha384RsaPkcs,
    /// `CKM_SHA512_RSA_PKCS`.
    Sha512RsaPkcs,
    /// `CKM_RSA_PKCS_PSS` with SHA-256 parameters (salt 32).
    RsaPssSha256,
    /// `CKM_SHA256_RSA_PKCS_PSS` (salt 32).
    Sha256RsaPss,
    /// `CKM_SHA256/384/512_HMAC`, the MAC cut to `len` bytes (`_GENERAL`: the token
    /// makes the full MAC; keywardd truncates it and compares truncated MACs).
    Hmac {
        /// The hash.
        hash: Hash,
        /// The MAC length in bytes (`hash.output_len()` unless a `_GENERAL` form asked fewer).
        /// The token always makes the full MAC.
        len: usize,
    },
    /// `CKM_AES_GCM`.
    Gcm {
        /// IV.
        iv: Vec<u8>,
        /// AAD.
        aad: Vec<u8>,
        /// Tag bits.
        tag_bits: u64,
    },
    /// `CKM_AES_ECB`.
    AesEcb,
    /// `CKM_AES_CBC`.
    AesCbc {
        /// IV.
        iv: [u8; 16],
    },
    /// `CKM_AES_CBC_PAD` (PKCS#7 padding).
    AesCbcPad {
        /// IV.
        iv: [u8; 16],
    },
    /// `CKM_AES_CTR`.
    AesCtr {
        /// Bits of the counter block that are the counter (1 to 128).
        counter_bits: u64,
        /// The initial counter block.
        cb: [u8; 16],
    },
    /// `CKM_RSA_PKCS_OAEP` without a label.
    Oaep {
        /// SHA-256 (else SHA-1), with the MGF1 of the same hash.
        sha256: bool,
    },
}

/// `CK_AES_CTR_PARAMS` as the token reads it (cryptoki 0.12 has no typed `CKM_AES_CTR`).
#[repr(C)]
struct CkAesCtrParams {
    counter_bits: std::ffi::c_ulong,
    cb: [u8; 16],
}

/// The token object an operation uses.
#[derive(Debug, Clone, Copy)]
pub enum OpTarget<'a> {
    /// A Keyward key's token object: its class and internal `CKA_ID`.
    Key(ObjectClass, &'a [u8]),
    /// A session object (design §4 "Session objects").
    Session(SessionObject),
}

/// What [`Token::operate`] gives back.
#[derive(Debug, PartialEq, Eq)]
pub enum OpOutput {
    /// Output bytes (a signature, a full MAC, ciphertext or plaintext).
    Data(Vec<u8>),
    /// A verification succeeded.
    Verified,
}

fn pss() -> PkcsPssParams {
    PkcsPssParams {
        hash_alg: MechanismType::SHA256,
        mgf: PkcsMgfType::MGF1_SHA256,
        s_len: 32u64.into(),
    }
}

impl Token {
    /// Runs `op` with `mech` over the whole of `data` (one-shot `C_*Init` + `C_*`) on
    /// `target`; `signature` is the one to check for [`Operation::Verify`] (a wrong one is
    /// the token's `CKR_SIGNATURE_INVALID`). [`Operation::Digest`] is `CKR_MECHANISM_INVALID`
    /// (digests are the caller's, over public data). Errors keep the token's `CK_RV`.
    pub fn operate(
        &self,
        target: OpTarget<'_>,
        op: Operation,
        mech: &OpMechanism,
        data: &[u8],
        signature: Option<&[u8]>,
    ) -> Result<OpOutput> {
        let ctr = match mech {
            OpMechanism::AesCtr { counter_bits, cb } => Some(CkAesCtrParams {
                counter_bits: std::ffi::c_ulong::try_from(*counter_bits).map_err(|_| {
                    TokenError::Pkcs11 {
                        rv: RvError::MechanismParamInvalid,
                        function: Function::EncryptInit,
                    }
                })?,
                cb: *cb,
            }),
            _ => None,
        };
        // AES-GCM's ciphertext: the plaintext and the tag.
        let gcm_out = match mech {
            OpMechanism::Gcm { tag_bits, .. } => usize::try_from(tag_bits.div_ceil(8))
                .ok()
                .and_then(|t| data.len().checked_add(t)),
            _ => None,
        };
        let call = |s: &Session, key: ObjectHandle| {
            let mut iv_buf;
            let m = match mech {
                OpMechanism::Ecdsa => Mechanism::Ecdsa,
                OpMechanism::RsaPkcs => Mechanism::RsaPkcs,
                OpMechanism::Sha256RsaPkcs => Mechanism::Sha256RsaPkcs,
                OpMechanism::Sha384RsaPkcs => Mechanism::Sha384RsaPkcs,
                OpMechanism::Sha512RsaPkcs => Mechanism::Sha512RsaPkcs,
                OpMechanism::AesEcb => Mechanism::AesEcb,
                OpMechanism::AesCbc { iv } => Mechanism::AesCbc(*iv),
                OpMechanism::AesCbcPad { iv } => Mechanism::AesCbcPad(*iv),
                OpMechanism::AesCtr { .. } => Mechanism::VendorDefined(
                    VendorDefinedMechanism::new(MechanismType::AES_CTR, ctr.as_ref()),
                ),
                OpMechanism::RsaPssSha256 => Mechanism::RsaPkcsPss(pss()),
                OpMechanism::Sha256RsaPss => Mechanism::Sha256RsaPkcsPss(pss()),
                OpMechanism::Hmac { hash, .. } => match hash {
                    Hash::Sha256 => Mechanism::Sha256Hmac,
                    Hash::Sha384 => Mechanism::Sha384Hmac,
                    Hash::Sha512 => Mechanism::Sha512Hmac,
                },
                OpMechanism::Gcm { iv, aad, tag_bits } => {
                    iv_buf = iv.clone();
                    Mechanism::AesGcm(GcmParams::new(&mut iv_buf, aad, (*tag_bits).into())?)
                }
                OpMechanism::Oaep { sha256 } => {
                    let (h, mgf) = if *sha256 {
                        (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256)
                    } else {
                        (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1)
                    };
                    Mechanism::RsaPkcsOaep(PkcsOaepParams::new(h, mgf, PkcsOaepSource::empty()))
                }
            };
            match op {
                Operation::Sign => s.sign(&m, key, data).map(OpOutput::Data),
                Operation::Verify => s
                    .verify(&m, key, data, signature.unwrap_or_default())
                    .map(|()| OpOutput::Verified),
                Operation::Encrypt => match gcm_out {
                    // No length query for AES-GCM: NSS softokn answers it without the tag.
                    Some(n) => encrypt_sized(self.raw(), s, &m, key, data, n),
                    None => s.encrypt(&m, key, data),
                }
                .map(OpOutput::Data),
                Operation::Decrypt => s.decrypt(&m, key, data).map(OpOutput::Data),
                Operation::Digest => Err(CryptokiError::Pkcs11(
                    RvError::MechanismInvalid,
                    Function::DigestInit,
                )),
            }
        };
        match target {
            OpTarget::Key(class, id) => self.with_key(class, id, "key", call),
            OpTarget::Session(o) => self.with_session_object(o, call),
        }
    }
}
