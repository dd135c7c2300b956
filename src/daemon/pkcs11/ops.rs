//! Cryptographic operations (design §4 "Mechanisms", §5): which mechanism each key's
//! algorithm allows ([`plan`], `CKR_MECHANISM_INVALID` otherwise), and running a bound
//! operation in the backing token against the version's internal `CKA_ID` ([`run`]).
//!
//! AES-CBC(-PAD), -ECB and -CTR are offered for AES keys made through the module only (keys
//! made by keywardctl are AES-GCM, their algorithm): parameters are checked at `*Init`
//! (`CKR_MECHANISM_PARAM_INVALID`), whole-block input at the final call
//! (`CKR_DATA_LEN_RANGE` / `CKR_ENCRYPTED_DATA_LEN_RANGE`) before the token sees it.
//!
//! Compositions: `CKM_ECDSA_SHA256/384` are a digest in the daemon (public data) then raw
//! `CKM_ECDSA` in the token. Raw `CKM_ECDSA`, `CKM_RSA_PKCS` and `CKM_RSA_PKCS_PSS` take a
//! client-made digest whose length (and, for PKCS#1 v1.5, `DigestInfo`) must match the key's
//! algorithm. `CKM_RSA_X_509` is never offered. Multi-part operations accumulate their input
//! in the daemon (a [`crate::daemon::limits::Buffer`]: at most `[daemon] max_operation_bytes`,
//! and within the per-uid, per-principal and global caps on buffered bytes) and run once at
//! the final call, so no token session is held between a client's calls and no client can
//! block another.

use super::ck::*;
use super::objects::{Half, ObjectView};
use super::stream::SHA256_DIGEST_INFO;
use super::P11Error;
use keyward_token::{
    GenericKind, MechanismType, Mechanisms, OaepHash, ObjectClass, OpOutput, OpTarget,
    SessionObject, Token,
};
pub use keyward_token::{Hash, OpMechanism as TokenMech};
use keyward_wire::keys::{Algorithm, KeyKind};
use keyward_wire::pkcs11::{GcmLayout, MechParams, Mechanism, Operation};

mod served;
pub use served::{info, served};
/// The AES block size.
/// The AES block size.
pub(super) const AES_BLOCK: usize = 16;

/// A checked operation: bound to its key at `*Init`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The token mechanism.
    pub mech: TokenMech,
    /// A digest the daemon makes first (composed mechanisms).
    pub prehash: Option<Hash>,
    /// The input length a raw mechanism requires (the key algorithm's digest).
    pub input_len: Option<usize>,
    /// The input must start with this (a `DigestInfo` prefix).
    pub input_prefix: Option<&'static [u8]>,
    /// The class of the token object used.
    pub class: ObjectClass,
}

/// The HMAC a mechanism asks for, where the token has it: (hash, MAC length). `None` if `m`
/// is no HMAC; `CKR_MECHANISM_INVALID` if the token lacks it; a `_GENERAL` length of 1 to
/// the hash's output, else `CKR_MECHANISM_PARAM_INVALID`; a key of `key_len` bytes shorter
/// than the hash's output is `CKR_KEY_SIZE_RANGE` (SoftHSM2 answers the same at Init).
pub fn hmac(
    m: &Mechanism,
    caps: &Mechanisms,
    key_len: usize,
) -> Option<Result<TokenMech, P11Error>> {
    let (hash, general, ty) = match m.ty {
        CKM_SHA256_HMAC => (Hash::Sha256, false, MechanismType::SHA256_HMAC),
        CKM_SHA384_HMAC => (Hash::Sha384, false, MechanismType::SHA384_HMAC),
        CKM_SHA512_HMAC => (Hash::Sha512, false, MechanismType::SHA512_HMAC),
        CKM_SHA256_HMAC_GENERAL => (Hash::Sha256, true, MechanismType::SHA256_HMAC),
        CKM_SHA384_HMAC_GENERAL => (Hash::Sha384, true, MechanismType::SHA384_HMAC),
        CKM_SHA512_HMAC_GENERAL => (Hash::Sha512, true, MechanismType::SHA512_HMAC),
        _ => return None,
    };
    Some(
        (|| {
            if !caps.has(ty) {
                return Err(CKR_MECHANISM_INVALID);
            }
            let len = match (&m.params, general) {
                (MechParams::None, false) => hash.output_len(),
                (MechParams::MacLen(n), true) => usize::try_from(*n)
                    .ok()
                    .filter(|n| (1..=hash.output_len()).contains(n))
                    .ok_or(CKR_MECHANISM_PARAM_INVALID)?,
                _ => return Err(CKR_MECHANISM_PARAM_INVALID),
            };
            if key_len < hash.output_len() {
                return Err(CKR_KEY_SIZE_RANGE);
            }
            Ok(TokenMech::Hmac { hash, len })
        })()
        .map_err(P11Error::from),
    )
}

/// The digest of a `C_DigestInit` mechanism.
pub fn digest_mechanism(m: &Mechanism) -> Result<Hash, P11Error> {
    match m.ty {
        CKM_SHA256 => Ok(Hash::Sha256),
        CKM_SHA384 => Ok(Hash::Sha384),
        CKM_SHA512 => Ok(Hash::Sha512),
        _ => Err(CKR_MECHANISM_INVALID.into()),
    }
}

/// The token's `CKM_RSA_PKCS_OAEP` for client parameters `params`: SHA-1 or SHA-256 (each
/// with the MGF1 of the same hash) where the token's probe showed it works (design §5: not
/// SHA-256 on SoftHSM2 2.6), `want` if given, and no label (SoftHSM2 2.6 takes none; the
/// probe tries none). Anything else is `CKR_MECHANISM_PARAM_INVALID` here, at `*Init`: never
/// forwarded for the token to answer `CKR_ARGUMENTS_BAD` at the final call.
pub fn oaep(
    params: &MechParams,
    caps: &Mechanisms,
    want: Option<OaepHash>,
) -> Result<TokenMech, P11Error> {
    let MechParams::Oaep(p) = params else {
        return Err(CKR_MECHANISM_PARAM_INVALID.into());
    };
    let hash = match (p.hash, p.mgf) {
        (CKM_SHA_1, CKG_MGF1_SHA1) => OaepHash::Sha1,
        (CKM_SHA256, CKG_MGF1_SHA256) => OaepHash::Sha256,
        _ => return Err(CKR_MECHANISM_PARAM_INVALID.into()),
    };
    // `source` is CKZ_DATA_SPECIFIED; OpenSC passes 0 with no label.
    let no_label = p.source <= CKZ_DATA_SPECIFIED && p.source_data.as_slice().is_empty();
    if !no_label || !caps.oaep(hash) || want.is_some_and(|w| w != hash) {
        return Err(CKR_MECHANISM_PARAM_INVALID.into());
    }
    Ok(TokenMech::Oaep {
        sha256: hash == OaepHash::Sha256,
    })
}

/// Checks `mechanism` for `op` on the object, given what the token can do (`caps`):
/// `CKR_MECHANISM_INVALID` if the key's purpose or algorithm forbids it,
/// `CKR_MECHANISM_PARAM_INVALID` for parameters other than the algorithm's or ones the token
/// cannot do, `CKR_KEY_FUNCTION_NOT_PERMITTED` if this object cannot do `op` (a public key
/// asked to sign).
pub fn plan(
    op: Operation,
    m: &Mechanism,
    obj: &ObjectView<'_>,
    caps: &Mechanisms,
) -> Result<Plan, P11Error> {
    if let Some(g) = obj.generic {
        return plan_generic(op, m, obj, g.kind, caps);
    }
    let Some(alg) = obj.algorithm else {
        return Err(CKR_MECHANISM_INVALID.into());
    };
    let half = obj.id.half;
    let mk = |mech, prehash, input_len, class| Plan {
        mech,
        prehash,
        input_len,
        input_prefix: None,
        class,
    };
    // The class of the token object each operation uses.
    let sign_class = || match (op, half) {
        (Operation::Sign, Half::Private) => Ok(ObjectClass::PRIVATE_KEY),
        (Operation::Verify, Half::Public) => Ok(ObjectClass::PUBLIC_KEY),
        (Operation::Sign | Operation::Verify, _) => Err(CKR_KEY_FUNCTION_NOT_PERMITTED),
        _ => Err(CKR_MECHANISM_INVALID),
    };
    let no_params = || match &m.params {
        MechParams::None => Ok(()),
        _ => Err(CKR_MECHANISM_PARAM_INVALID),
    };
    match alg.kind() {
        KeyKind::Ec(bits) => {
            let (hash, len, composed) = if bits == 384 {
                (Hash::Sha384, 48, CKM_ECDSA_SHA384)
            } else {
                (Hash::Sha256, 32, CKM_ECDSA_SHA256)
            };
            if m.ty == CKM_ECDSA {
                no_params()?;
                Ok(mk(TokenMech::Ecdsa, None, Some(len), sign_class()?))
            } else if m.ty == composed {
                no_params()?;
                Ok(mk(TokenMech::Ecdsa, Some(hash), None, sign_class()?))
            } else {
                Err(CKR_MECHANISM_INVALID.into())
            }
        }
        KeyKind::Rsa(_) if is_pkcs1_sign(alg) => match m.ty {
            CKM_RSA_PKCS => {
                no_params()?;
                let mut p = mk(TokenMech::RsaPkcs, None, Some(51), sign_class()?);
                p.input_prefix = Some(&SHA256_DIGEST_INFO);
                Ok(p)
            }
            CKM_SHA256_RSA_PKCS => {
                no_params()?;
                Ok(mk(TokenMech::Sha256RsaPkcs, None, None, sign_class()?))
            }
            _ => Err(CKR_MECHANISM_INVALID.into()),
        },
        KeyKind::Rsa(_) if is_pss_sign(alg) => {
            let pss_ok = |m: &Mechanism| match &m.params {
                MechParams::Pss(p)
                    if p.hash == CKM_SHA256 && p.mgf == CKG_MGF1_SHA256 && p.salt_len == 32 =>
                {
                    Ok(())
                }
                _ => Err(CKR_MECHANISM_PARAM_INVALID),
            };
            match m.ty {
                CKM_RSA_PKCS_PSS => {
                    pss_ok(m)?;
                    Ok(mk(TokenMech::RsaPssSha256, None, Some(32), sign_class()?))
                }
                CKM_SHA256_RSA_PKCS_PSS => {
                    pss_ok(m)?;
                    Ok(mk(TokenMech::Sha256RsaPss, None, None, sign_class()?))
                }
                _ => Err(CKR_MECHANISM_INVALID.into()),
            }
        }
        KeyKind::Rsa(_) => {
            // RSA_DECRYPT_OAEP_*.
            if m.ty != CKM_RSA_PKCS_OAEP {
                return Err(CKR_MECHANISM_INVALID.into());
            }
            let want = OaepHash::of(alg).unwrap_or(OaepHash::Sha1);
            let mech = oaep(&m.params, caps, Some(want))?;
            let class = match (op, half) {
                (Operation::Decrypt, Half::Private) => ObjectClass::PRIVATE_KEY,
                (Operation::Encrypt, Half::Public) => ObjectClass::PUBLIC_KEY,
                (Operation::Encrypt | Operation::Decrypt, _) => {
                    return Err(CKR_KEY_FUNCTION_NOT_PERMITTED.into())
                }
                _ => return Err(CKR_MECHANISM_INVALID.into()),
            };
            Ok(mk(mech, None, None, class))
        }
        KeyKind::Aes(_) => {
            if m.ty != CKM_AES_GCM || !matches!(op, Operation::Encrypt | Operation::Decrypt) {
                return Err(CKR_MECHANISM_INVALID.into());
            }
            let MechParams::Gcm(g) = &m.params else {
                return Err(CKR_MECHANISM_PARAM_INVALID.into());
            };
            if g.iv.is_empty() || g.tag_bits == 0 || g.tag_bits > 128 || g.tag_bits % 8 != 0 {
                return Err(CKR_MECHANISM_PARAM_INVALID.into());
            }
            let mech = TokenMech::Gcm {
                iv: g.iv.as_slice().to_vec(),
                aad: g.aad.as_slice().to_vec(),
                tag_bits: g.tag_bits,
            };
            Ok(mk(mech, None, None, ObjectClass::SECRET_KEY))
        }
        KeyKind::Hmac(n) => {
            // HMAC_SHA256 keys: CKM_SHA256_HMAC and its _GENERAL form.
            let sha256 = matches!(m.ty, CKM_SHA256_HMAC | CKM_SHA256_HMAC_GENERAL);
            if !sha256 || !matches!(op, Operation::Sign | Operation::Verify) {
                return Err(CKR_MECHANISM_INVALID.into());
            }
            let mech = hmac(m, caps, n).unwrap_or(Err(CKR_MECHANISM_INVALID.into()))?;
            Ok(mk(mech, None, None, ObjectClass::SECRET_KEY))
        }
    }
}

/// [`plan`] for a key made through the module: its kind and its template's flags decide
/// (a flag the key lacks is `CKR_MECHANISM_INVALID`, design §4); raw ECDSA and RSA PKCS#1
/// take a client-made digest of any length (the key is not bound to one hash).
fn plan_generic(
    op: Operation,
    m: &Mechanism,
    obj: &ObjectView<'_>,
    kind: GenericKind,
    caps: &Mechanisms,
) -> Result<Plan, P11Error> {
    plan_kind(op, m, obj.flags(), obj.id.half, kind, caps)
}

/// The usage flags of an object: (encrypt, decrypt, sign, verify, wrap, unwrap).
pub type Flags = (bool, bool, bool, bool, bool, bool);

/// [`plan`] for an object of `kind` with these flags that is the `half` of its key: keys
/// made through the module and session objects (design §4 "Session objects").
pub fn plan_kind(
    op: Operation,
    m: &Mechanism,
    flags: Flags,
    half: Half,
    kind: GenericKind,
    caps: &Mechanisms,
) -> Result<Plan, P11Error> {
    let (enc, dec, sign, verify, _, _) = flags;
    let class = match (op, half) {
        (Operation::Sign | Operation::Decrypt, Half::Private) => ObjectClass::PRIVATE_KEY,
        (Operation::Verify | Operation::Encrypt, Half::Public) => ObjectClass::PUBLIC_KEY,
        (_, Half::Secret) => ObjectClass::SECRET_KEY,
        (Operation::Digest, _) => return Err(CKR_MECHANISM_INVALID.into()),
        _ => return Err(CKR_KEY_FUNCTION_NOT_PERMITTED.into()),
    };
    let allowed = match op {
        Operation::Sign => sign,
        Operation::Verify => verify,
        Operation::Encrypt => enc,
        Operation::Decrypt => dec,
        Operation::Digest => false,
    };
    if !allowed {
        return Err(CKR_MECHANISM_INVALID.into());
    }
    let none = || match &m.params {
        MechParams::None => Ok(()),
        _ => Err(CKR_MECHANISM_PARAM_INVALID),
    };
    let mk = |mech, prehash| Plan {
        mech,
        prehash,
        input_len: None,
        input_prefix: None,
        class,
    };
    let signing = matches!(op, Operation::Sign | Operation::Verify);
    match (kind, m.ty) {
        (GenericKind::Ec(_), CKM_ECDSA) if signing => {
            none()?;
            Ok(mk(TokenMech::Ecdsa, None))
        }
        (GenericKind::Ec(_), CKM_ECDSA_SHA256) if signing => {
            none()?;
            Ok(mk(TokenMech::Ecdsa, Some(Hash::Sha256)))
        }
        (GenericKind::Ec(_), CKM_ECDSA_SHA384) if signing => {
            none()?;
            Ok(mk(TokenMech::Ecdsa, Some(Hash::Sha384)))
        }
        (GenericKind::Rsa(_), CKM_RSA_PKCS) if signing => {
            none()?;
            Ok(mk(TokenMech::RsaPkcs, None))
        }
        (GenericKind::Rsa(_), CKM_SHA256_RSA_PKCS) if signing => {
            none()?;
            Ok(mk(TokenMech::Sha256RsaPkcs, None))
        }
        (GenericKind::Rsa(_), CKM_SHA384_RSA_PKCS | CKM_SHA512_RSA_PKCS) if signing => {
            let (t, mech) = if m.ty == CKM_SHA384_RSA_PKCS {
                (MechanismType::SHA384_RSA_PKCS, TokenMech::Sha384RsaPkcs)
            } else {
                (MechanismType::SHA512_RSA_PKCS, TokenMech::Sha512RsaPkcs)
            };
            if !caps.has(t) {
                return Err(CKR_MECHANISM_INVALID.into());
            }
            none()?;
            Ok(mk(mech, None))
        }
        (GenericKind::Rsa(_), CKM_RSA_PKCS_PSS | CKM_SHA256_RSA_PKCS_PSS) if signing => {
            match &m.params {
                MechParams::Pss(p)
                    if p.hash == CKM_SHA256 && p.mgf == CKG_MGF1_SHA256 && p.salt_len == 32 => {}
                _ => return Err(CKR_MECHANISM_PARAM_INVALID.into()),
            }
            let mech = if m.ty == CKM_RSA_PKCS_PSS {
                TokenMech::RsaPssSha256
            } else {
                TokenMech::Sha256RsaPss
            };
            let mut p = mk(mech, None);
            if m.ty == CKM_RSA_PKCS_PSS {
                p.input_len = Some(32);
            }
            Ok(p)
        }
        (GenericKind::Rsa(_), CKM_RSA_PKCS_OAEP) if !signing => {
            Ok(mk(oaep(&m.params, caps, None)?, None))
        }
        // PKCS#1 v1.5 encryption, done (and its padding checked) in the token.
        (GenericKind::Rsa(_), CKM_RSA_PKCS) if !signing => {
            if !caps.has(MechanismType::RSA_PKCS) {
                return Err(CKR_MECHANISM_INVALID.into());
            }
            none()?;
            Ok(mk(TokenMech::RsaPkcs, None))
        }
        (GenericKind::Aes(_), CKM_AES_GCM) if !signing => {
            let MechParams::Gcm(g) = &m.params else {
                return Err(CKR_MECHANISM_PARAM_INVALID.into());
            };
            if g.iv.is_empty() || g.tag_bits == 0 || g.tag_bits > 128 || g.tag_bits % 8 != 0 {
                return Err(CKR_MECHANISM_PARAM_INVALID.into());
            }
            Ok(mk(
                TokenMech::Gcm {
                    iv: g.iv.as_slice().to_vec(),
                    aad: g.aad.as_slice().to_vec(),
                    tag_bits: g.tag_bits,
                },
                None,
            ))
        }
        (GenericKind::Aes(_), CKM_AES_CBC_PAD | CKM_AES_CBC | CKM_AES_ECB | CKM_AES_CTR)
            if !signing =>
        {
            Ok(mk(aes_block_mode(m, caps)?, None))
        }
        (GenericKind::Secret(n), _) if signing => match hmac(m, caps, n) {
            Some(mech) => Ok(mk(mech?, None)),
            None => Err(CKR_MECHANISM_INVALID.into()),
        },
        _ => Err(CKR_MECHANISM_INVALID.into()),
    }
}

/// The token mechanism for AES-CBC(-PAD), -ECB or -CTR `m`, where the token has it
/// (`CKR_MECHANISM_INVALID` otherwise): a 16-byte IV for CBC and CBC-PAD, no parameter for
/// ECB, a counter of 1 to 128 bits for CTR; anything else is `CKR_MECHANISM_PARAM_INVALID`.
fn aes_block_mode(m: &Mechanism, caps: &Mechanisms) -> Result<TokenMech, P11Error> {
    let t = match m.ty {
        CKM_AES_CBC_PAD => MechanismType::AES_CBC_PAD,
        CKM_AES_CBC => MechanismType::AES_CBC,
        CKM_AES_ECB => MechanismType::AES_ECB,
        CKM_AES_CTR => MechanismType::AES_CTR,
        _ => return Err(CKR_MECHANISM_INVALID.into()),
    };
    if !caps.has(t) {
        return Err(CKR_MECHANISM_INVALID.into());
    }
    let iv = || match &m.params {
        MechParams::Bytes(b) => {
            <[u8; 16]>::try_from(b.as_slice()).map_err(|_| CKR_MECHANISM_PARAM_INVALID)
        }
        _ => Err(CKR_MECHANISM_PARAM_INVALID),
    };
    match (m.ty, &m.params) {
        (CKM_AES_CBC_PAD, _) => Ok(TokenMech::AesCbcPad { iv: iv()? }),
        (CKM_AES_CBC, _) => Ok(TokenMech::AesCbc { iv: iv()? }),
        (CKM_AES_ECB, MechParams::None) => Ok(TokenMech::AesEcb),
        (CKM_AES_CTR, MechParams::Ctr(c)) if (1..=128).contains(&c.counter_bits) => {
            Ok(TokenMech::AesCtr {
                counter_bits: c.counter_bits,
                cb: c.cb,
            })
        }
        _ => Err(CKR_MECHANISM_PARAM_INVALID.into()),
    }
}

/// The IV length keywardd generates for AES-GCM (96 bits, NIST SP 800-38D §8.2.2).
pub const GCM_IV_LEN: usize = 12;

/// Design §9 "Crypto semantics, not only call rights": a permission grants a capability,
/// never an oracle for another. Applied at `*Init` to a planned operation on a Keyward key
/// (session objects are exempt), given whether the principal also holds the opposite use
/// permission on the key (`holds_other`: useToDecrypt for an encryption, useToEncrypt for a
/// decryption). A principal holding both keeps its own IVs.
///
/// - Encryption without useToDecrypt: AES-GCM and AES-CTR get an IV / initial counter block
///   from `random` (the caller must send zeros there: a 12-byte IV, `ulIvBits` 96 where its
///   layout has it, or a zero 16-byte counter block; anything else is
///   `CKR_MECHANISM_PARAM_INVALID`), returned for the module to write back; ECB, CBC and
///   CBC-PAD are `CKR_KEY_FUNCTION_NOT_PERMITTED` (with an IV known before the data they are
///   a raw block-encryption oracle).
/// - Decryption without useToEncrypt: AES-CTR (a keystream XOR, so an encryption oracle; its
///   counter block 0 would give GCM's hash key) is `CKR_KEY_FUNCTION_NOT_PERMITTED`; GCM
///   decryption needs the tag and stays.
/// - Verification without useToSign (`holds_other` is useToSign there): an HMAC shorter than
///   the hash's output (`_GENERAL`) is `CKR_KEY_FUNCTION_NOT_PERMITTED` (a short-MAC verify
///   is a forging oracle: a 1-byte MAC is found in 256 tries).
///
/// `random(n)` gives `n` random bytes or the CK_RV to fail with.
pub fn restrict(
    op: Operation,
    plan: &mut Plan,
    requested: &MechParams,
    holds_other: bool,
    random: impl FnOnce(usize) -> Result<Vec<u8>, P11Error>,
) -> Result<Option<Vec<u8>>, P11Error> {
    if holds_other {
        return Ok(None);
    }
    let zero = |b: &[u8]| b.iter().all(|x| *x == 0);
    match (op, &mut plan.mech) {
        (Operation::Encrypt, TokenMech::Gcm { iv, .. }) => {
            let MechParams::Gcm(g) = requested else {
                return Err(CKR_MECHANISM_PARAM_INVALID.into());
            };
            let bits_ok = match g.layout {
                GcmLayout::WithIvBits => g.iv_bits == 96,
                GcmLayout::WithoutIvBits => true,
            };
            if g.iv.len() != GCM_IV_LEN || !zero(g.iv.as_slice()) || !bits_ok {
                return Err(CKR_MECHANISM_PARAM_INVALID.into());
            }
            let fresh = random(GCM_IV_LEN)?;
            if fresh.len() != GCM_IV_LEN {
                return Err(CKR_DEVICE_ERROR.into());
            }
            *iv = fresh.clone();
            Ok(Some(fresh))
        }
        (Operation::Encrypt, TokenMech::AesCtr { cb, counter_bits }) => {
            if !zero(cb) {
                return Err(CKR_MECHANISM_PARAM_INVALID.into());
            }
            let fresh = random(AES_BLOCK)?;
            let block =
                <[u8; AES_BLOCK]>::try_from(fresh.as_slice()).map_err(|_| CKR_DEVICE_ERROR)?;
            // A random nonce above the counter bits, which start at 0: the message may be as
            // long as the client's counter allows (SoftHSM2 refuses one that would wrap it),
            // and no keystream block repeats within it.
            let counter_mask = if *counter_bits >= 128 {
                0
            } else {
                (1u128 << *counter_bits) - 1
            };
            *cb = (u128::from_be_bytes(block) & !counter_mask).to_be_bytes();
            Ok(Some(cb.to_vec()))
        }
        (
            Operation::Encrypt,
            TokenMech::AesEcb | TokenMech::AesCbc { .. } | TokenMech::AesCbcPad { .. },
        ) => Err(CKR_KEY_FUNCTION_NOT_PERMITTED.into()),
        (Operation::Decrypt, TokenMech::AesCtr { .. }) => {
            Err(CKR_KEY_FUNCTION_NOT_PERMITTED.into())
        }
        (Operation::Verify, TokenMech::Hmac { hash, len }) if *len < hash.output_len() => {
            Err(CKR_KEY_FUNCTION_NOT_PERMITTED.into())
        }
        _ => Ok(None),
    }
}

/// The length error the PKCS#11 mechanism tables give for input that is not whole AES
/// blocks: to ECB or CBC (either way), or to CBC-PAD decryption (which also needs a block).
fn block_len_error(mech: &TokenMech, op: Operation, len: usize) -> Option<u64> {
    let whole = len % AES_BLOCK == 0;
    match (mech, op) {
        (TokenMech::AesEcb | TokenMech::AesCbc { .. }, Operation::Encrypt) if !whole => {
            Some(CKR_DATA_LEN_RANGE)
        }
        (TokenMech::AesEcb | TokenMech::AesCbc { .. }, Operation::Decrypt) if !whole => {
            Some(CKR_ENCRYPTED_DATA_LEN_RANGE)
        }
        (TokenMech::AesCbcPad { .. }, Operation::Decrypt) if !whole || len == 0 => {
            Some(CKR_ENCRYPTED_DATA_LEN_RANGE)
        }
        _ => None,
    }
}

fn is_pkcs1_sign(a: Algorithm) -> bool {
    a.as_str().starts_with("RSA_SIGN_PKCS1_")
}

fn is_pss_sign(a: Algorithm) -> bool {
    a.as_str().starts_with("RSA_SIGN_PSS_")
}

/// What [`run`] gives back.
#[derive(Debug)]
pub enum Outcome {
    /// Output bytes.
    Data(Vec<u8>),
    /// A verification succeeded.
    Verified,
}

/// Runs a bound operation over its whole input in the token. `signature` is given for
/// verification. Errors are CK_RVs (the token's unchanged).
pub fn run(
    token: &Token,
    op: Operation,
    plan: &Plan,
    token_id: &[u8],
    input: &[u8],
    signature: Option<&[u8]>,
) -> Result<Outcome, P11Error> {
    run_on(token, op, plan, KeyRef::Id(token_id), input, signature)
}

/// The token object an operation uses.
#[derive(Debug, Clone, Copy)]
pub enum KeyRef<'a> {
    /// A Keyward key's token object, by its internal `CKA_ID` (and the plan's class).
    Id(&'a [u8]),
    /// A session object (design §4 "Session objects").
    Session(SessionObject),
}

/// [`run`] on a Keyward key or a session object.
pub fn run_on(
    token: &Token,
    op: Operation,
    plan: &Plan,
    target: KeyRef<'_>,
    input: &[u8],
    signature: Option<&[u8]>,
) -> Result<Outcome, P11Error> {
    let hashed;
    let data = match plan.prehash {
        Some(h) => {
            hashed = h.digest(input);
            &hashed[..]
        }
        None => input,
    };
    if let Some(len) = plan.input_len {
        if data.len() != len {
            return Err(CKR_DATA_LEN_RANGE.into());
        }
    }
    if let Some(prefix) = plan.input_prefix {
        if !data.starts_with(prefix) {
            return Err(CKR_DATA_INVALID.into());
        }
    }
    if let Some(rv) = block_len_error(&plan.mech, op, data.len()) {
        return Err(rv.into());
    }
    // A `_GENERAL` HMAC shorter than the hash's output.
    let truncated = match plan.mech {
        TokenMech::Hmac { hash, len } if len < hash.output_len() => Some(len),
        _ => None,
    };
    let target = match target {
        KeyRef::Id(id) => OpTarget::Key(plan.class, id),
        KeyRef::Session(o) => OpTarget::Session(o),
    };
    // A truncated HMAC: the token's full MAC, cut here (and compared, for a verify).
    let token_op = match op {
        Operation::Verify if truncated.is_some() => Operation::Sign,
        op => op,
    };
    let result = token
        .operate(target, token_op, &plan.mech, data, signature)
        .map(|out| match out {
            OpOutput::Data(d) => Outcome::Data(d),
            OpOutput::Verified => Outcome::Verified,
        });
    if let (Some(len), Ok(Outcome::Data(full))) = (truncated, &result) {
        let mac = full.get(..len).ok_or(CKR_GENERAL_ERROR)?;
        return match (op, signature) {
            (Operation::Verify, Some(sig)) if sig.len() != len => {
                Err(CKR_SIGNATURE_LEN_RANGE.into())
            }
            (Operation::Verify, Some(sig)) => {
                if bool::from(subtle::ConstantTimeEq::ct_eq(mac, sig)) {
                    Ok(Outcome::Verified)
                } else {
                    Err(CKR_SIGNATURE_INVALID.into())
                }
            }
            (Operation::Verify, None) => Err(CKR_SIGNATURE_LEN_RANGE.into()),
            _ => Ok(Outcome::Data(mac.to_vec())),
        };
    }
    let decrypt = op == Operation::Decrypt;
    let checked_decrypt = decrypt
        && matches!(
            plan.mech,
            TokenMech::Gcm { .. } | TokenMech::AesCbcPad { .. }
        );
    let block_mode = matches!(
        plan.mech,
        TokenMech::AesEcb | TokenMech::AesCbc { .. } | TokenMech::AesCbcPad { .. }
    );
    result.map_err(|e| {
        tracing::debug!(error = %e, "token operation failed");
        let rv = e.ck_rv();
        // SoftHSM2 before 2.6.2 (SoftHSMv2 PR 690) answers a failed AES-GCM tag check, and
        // 2.6 bad CBC-PAD padding, with CKR_GENERAL_ERROR, which clients take as
        // unrecoverable; PKCS#11 3.0 says CKR_ENCRYPTED_DATA_INVALID, and nothing else in a
        // decrypt of well-formed input (whole blocks, checked above) fails that way.
        let rv = if checked_decrypt && rv == CKR_GENERAL_ERROR {
            CKR_ENCRYPTED_DATA_INVALID
        } else if decrypt && block_mode && rv == CKR_DATA_LEN_RANGE {
            // Ciphertext length errors are CKR_ENCRYPTED_DATA_LEN_RANGE for decryption.
            CKR_ENCRYPTED_DATA_LEN_RANGE
        } else {
            rv
        };
        P11Error::new(rv, format!("token: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_wire::pkcs11::{Blob, CtrParams, GcmParams};

    fn plan(mech: TokenMech) -> Plan {
        Plan {
            mech,
            prehash: None,
            input_len: None,
            input_prefix: None,
            class: ObjectClass::SECRET_KEY,
        }
    }

    fn gcm_params(iv: &[u8], iv_bits: u64, layout: GcmLayout) -> MechParams {
        MechParams::Gcm(GcmParams {
            iv: Blob::new(iv.to_vec()),
            iv_bits,
            aad: Blob::default(),
            tag_bits: 128,
            layout,
        })
    }

    fn gcm_plan(iv: &[u8]) -> Plan {
        plan(TokenMech::Gcm {
            iv: iv.to_vec(),
            aad: vec![],
            tag_bits: 128,
        })
    }

    fn rng(n: usize) -> Result<Vec<u8>, P11Error> {
        Ok(vec![0xA5; n])
    }

    #[test]
    fn encrypt_only_gcm_gets_keywardds_iv() {
        for (params, ok) in [
            (gcm_params(&[0; 12], 96, GcmLayout::WithIvBits), true),
            (gcm_params(&[0; 12], 96, GcmLayout::WithoutIvBits), true),
            (gcm_params(&[0; 12], 0, GcmLayout::WithIvBits), false),
            (gcm_params(&[1; 12], 96, GcmLayout::WithIvBits), false),
            (gcm_params(&[0; 8], 64, GcmLayout::WithIvBits), false),
            (gcm_params(&[0; 16], 128, GcmLayout::WithoutIvBits), false),
        ] {
            let MechParams::Gcm(g) = &params else {
                unreachable!()
            };
            let mut p = gcm_plan(g.iv.as_slice());
            let r = restrict(Operation::Encrypt, &mut p, &params, false, rng);
            if ok {
                assert_eq!(r, Ok(Some(vec![0xA5; 12])));
                assert_eq!(p, gcm_plan(&[0xA5; 12]), "the plan uses keywardd's IV");
            } else {
                assert_eq!(r, Err(CKR_MECHANISM_PARAM_INVALID.into()), "{params:?}");
            }
        }
        // A token that cannot draw random bytes fails closed.
        let params = gcm_params(&[0; 12], 96, GcmLayout::WithIvBits);
        let mut p = gcm_plan(&[0; 12]);
        let r = restrict(Operation::Encrypt, &mut p, &params, false, |_| {
            Err(CKR_DEVICE_ERROR.into())
        });
        assert_eq!(r, Err(CKR_DEVICE_ERROR.into()));
    }

    #[test]
    fn modes_by_what_the_principal_holds() {
        let ctr = |cb| {
            plan(TokenMech::AesCtr {
                counter_bits: 128,
                cb,
            })
        };
        let ctr_params = |cb| {
            MechParams::Ctr(CtrParams {
                counter_bits: 128,
                cb,
            })
        };
        let block = [
            TokenMech::AesEcb,
            TokenMech::AesCbc { iv: [0; 16] },
            TokenMech::AesCbcPad { iv: [0; 16] },
        ];
        // Encrypt-only: CTR gets a counter block; a chosen one is refused; no block modes.
        let mut p = ctr([0; 16]);
        let r = restrict(Operation::Encrypt, &mut p, &ctr_params([0; 16]), false, rng);
        assert_eq!(r, Ok(Some(vec![0xA5; 16])));
        assert_eq!(p, ctr([0xA5; 16]));
        let mut p = ctr([1; 16]);
        let r = restrict(Operation::Encrypt, &mut p, &ctr_params([1; 16]), false, rng);
        assert_eq!(r, Err(CKR_MECHANISM_PARAM_INVALID.into()));
        for m in &block {
            let r = restrict(
                Operation::Encrypt,
                &mut plan(m.clone()),
                &MechParams::None,
                false,
                rng,
            );
            assert_eq!(r, Err(CKR_KEY_FUNCTION_NOT_PERMITTED.into()), "{m:?}");
            // Decrypting with them stays allowed to a decrypt-only principal.
            let r = restrict(
                Operation::Decrypt,
                &mut plan(m.clone()),
                &MechParams::None,
                false,
                rng,
            );
            assert_eq!(r, Ok(None), "{m:?}");
        }
        // Decrypt-only: no CTR; GCM stays.
        let r = restrict(
            Operation::Decrypt,
            &mut ctr([1; 16]),
            &ctr_params([1; 16]),
            false,
            rng,
        );
        assert_eq!(r, Err(CKR_KEY_FUNCTION_NOT_PERMITTED.into()));
        let params = gcm_params(&[1; 12], 96, GcmLayout::WithIvBits);
        let mut p = gcm_plan(&[1; 12]);
        assert_eq!(
            restrict(Operation::Decrypt, &mut p, &params, false, rng),
            Ok(None)
        );
        assert_eq!(p, gcm_plan(&[1; 12]));
        // Both: everything as asked, IVs untouched.
        let mut p = gcm_plan(&[1; 12]);
        assert_eq!(
            restrict(Operation::Encrypt, &mut p, &params, true, rng),
            Ok(None)
        );
        assert_eq!(p, gcm_plan(&[1; 12]));
        for m in block.iter().chain([&TokenMech::AesCtr {
            counter_bits: 128,
            cb: [1; 16],
        }]) {
            for op in [Operation::Encrypt, Operation::Decrypt] {
                let mut p = plan(m.clone());
                assert_eq!(restrict(op, &mut p, &MechParams::None, true, rng), Ok(None));
                assert_eq!(p, plan(m.clone()));
            }
        }
        // Other mechanisms are not concerned.
        let r = restrict(
            Operation::Encrypt,
            &mut plan(TokenMech::RsaPkcs),
            &MechParams::None,
            false,
            rng,
        );
        assert_eq!(r, Ok(None));
    }
}
