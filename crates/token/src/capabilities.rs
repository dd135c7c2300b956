//! What the backing token can do, learnt once at open and immutable afterwards
//! ([`Capabilities`]): its mechanism list and key-size ranges, then one trial per thing the
//! PKCS#11 specification leaves to the token, each recorded as available or not with the
//! reason (the token's `CK_RV`): can it generate each key family with Keyward's custody
//! attributes (EC, RSA, AES, generic secrets), which explicit FALSE usage flags it takes in a
//! template, whether it takes `CKA_COPYABLE`, whether it makes session (`CKA_TOKEN=FALSE`)
//! keys, which hashes `CKM_RSA_PKCS_OAEP` accepts, and which mechanism does RFC 5649 AES key
//! wrap with padding (kwp.rs). [`Capabilities::check_algorithm`]
//! refuses an [`Algorithm`] the token cannot serve, naming what is missing.
//!
//! # Probing never assumes, and never ends start-up for a missing capability
//! A trial that fails with an attribute, template, mechanism or key-size code (or
//! `CKR_FUNCTION_NOT_SUPPORTED`, `CKR_GENERAL_ERROR`) records "not available"; a session,
//! login or device error ends [`crate::Token::open`] (the token is unusable, not limited).
//! Trials make token objects (`CKA_TOKEN=TRUE`, as every Keyward key is: tpm2-pkcs11 1.9
//! refuses session key pairs) under a probe `CKA_ID` and destroy every object carrying it
//! afterwards, whether the trial succeeded or not: a `C_GenerateKey(Pair)` that fails with
//! `CKR_GENERAL_ERROR` may have left an orphan. Each trial uses a fresh id; a user's key
//! generation is never retried (keys.rs).
//!
//! # Templates carry only what means something
//! Each family is first tried with the full template Keyward uses (custody attributes, the
//! usage flags it needs TRUE, every other usage flag explicitly FALSE, `CKA_COPYABLE=FALSE`).
//! If the token refuses it, the minimal template (custody attributes and the TRUE flags) is
//! tried, then `CKA_COPYABLE=FALSE` alone and each FALSE flag alone: the FALSE flags a token
//! refuses (tpm2-pkcs11 1.9: `CKR_GENERAL_ERROR` for `CKA_SIGN`, `CKA_VERIFY`, `CKA_ENCRYPT`,
//! `CKA_DECRYPT` set FALSE) are left out of templates from then on ([`Capabilities::fit`]);
//! Keyward's own purpose gate still refuses every use the purpose does not allow. The custody
//! attributes `CKA_PRIVATE=TRUE`, `CKA_SENSITIVE=TRUE` and `CKA_EXTRACTABLE=FALSE` are never
//! left out: a token that refuses the minimal template has that key family unavailable.
//!
//! # Units
//! `CK_MECHANISM_INFO` key sizes are in the mechanism's own unit: bytes for `CKM_AES_KEY_GEN`,
//! **bits** for `CKM_GENERIC_SECRET_KEY_GEN` (PKCS#11 v2.40 current mechanisms §2.33.1
//! "Generic secret key generation": "the supported range of generic secret key sizes, in
//! bits"), bits for RSA and EC; `CKA_VALUE_LEN` is always bytes.
//!
//! # OAEP
//! PKCS#11 has no way to ask which hashes a token's OAEP supports (`CK_MECHANISM_INFO` says
//! nothing about parameters). SoftHSM2 2.6 does OAEP with SHA-1 only: its
//! `C_EncryptInit`/`C_DecryptInit` refuse any other `hashAlg` or MGF with
//! `CKR_ARGUMENTS_BAD`. So the RSA trial pair (an encrypt/decrypt pair) encrypts and decrypts
//! with each hash.

use crate::error::{Result, TokenError};
use crate::kwp::Rfc5649;
use crate::public_key::Curve;
use crate::raw::RawModule;
use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use keyward_wire::keys::{Algorithm, KeyKind};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

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

/// Whether the token can do one thing, as learnt at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// It can.
    Available,
    /// It cannot; why (the mechanism missing from `C_GetMechanismList`, or the function and
    /// the `CK_RV` the token answered the trial with).
    Unavailable(String),
}

impl Probe {
    /// True if available.
    pub fn is_available(&self) -> bool {
        matches!(self, Probe::Available)
    }

    /// Why not, if not available.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Probe::Available => None,
            Probe::Unavailable(r) => Some(r),
        }
    }

    fn from_trial(what: &str, r: &Result<()>) -> Probe {
        match r {
            Ok(()) => Probe::Available,
            Err(e) => Probe::Unavailable(format!("{what}: {}", rv_text(e))),
        }
    }
}

/// A key family Keyward generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// EC key pairs (`CKM_EC_KEY_PAIR_GEN`; the trial uses P-256).
    Ec,
    /// RSA key pairs (`CKM_RSA_PKCS_KEY_PAIR_GEN`).
    Rsa,
    /// AES keys (`CKM_AES_KEY_GEN`).
    Aes,
    /// Generic secrets, Keyward's HMAC keys (`CKM_GENERIC_SECRET_KEY_GEN`).
    GenericSecret,
}

impl Family {
    /// Every family, in probing order.
    pub const ALL: [Family; 4] = [Family::Ec, Family::Rsa, Family::Aes, Family::GenericSecret];

    /// The key generation mechanism.
    pub fn keygen(self) -> MechanismType {
        match self {
            Family::Ec => MechanismType::ECC_KEY_PAIR_GEN,
            Family::Rsa => MechanismType::RSA_PKCS_KEY_PAIR_GEN,
            Family::Aes => MechanismType::AES_KEY_GEN,
            Family::GenericSecret => MechanismType::GENERIC_SECRET_KEY_GEN,
        }
    }

    fn is_pair(self) -> bool {
        matches!(self, Family::Ec | Family::Rsa)
    }

    /// The name `keywardctl token capabilities` shows.
    pub fn name(self) -> &'static str {
        match self {
            Family::Ec => "ec-keys",
            Family::Rsa => "rsa-keys",
            Family::Aes => "aes-keys",
            Family::GenericSecret => "generic-secret-keys",
        }
    }
}

/// The half of a key a template describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Half {
    /// A private key.
    Private,
    /// A public key.
    Public,
    /// A secret key.
    Secret,
}

/// The usage flags whose explicit FALSE a token may refuse, per half (PKCS#11 §4.8-4.10: a
/// private key has no `CKA_ENCRYPT`/`CKA_VERIFY`/`CKA_WRAP`, a public key no
/// `CKA_DECRYPT`/`CKA_SIGN`/`CKA_UNWRAP`).
fn usage_types(half: Half) -> &'static [AttributeType] {
    use AttributeType as A;
    match half {
        Half::Private => &[A::Decrypt, A::Sign, A::SignRecover, A::Unwrap, A::Derive],
        Half::Public => &[A::Encrypt, A::Verify, A::VerifyRecover, A::Wrap, A::Derive],
        Half::Secret => &[
            A::Encrypt,
            A::Decrypt,
            A::Sign,
            A::Verify,
            A::Wrap,
            A::Unwrap,
            A::Derive,
        ],
    }
}

/// The explicit FALSE of a usage attribute type.
fn false_flag(t: AttributeType) -> Option<Attribute> {
    use AttributeType as A;
    Some(match t {
        A::Encrypt => Attribute::Encrypt(false),
        A::Decrypt => Attribute::Decrypt(false),
        A::Sign => Attribute::Sign(false),
        A::Verify => Attribute::Verify(false),
        A::SignRecover => Attribute::SignRecover(false),
        A::VerifyRecover => Attribute::VerifyRecover(false),
        A::Wrap => Attribute::Wrap(false),
        A::Unwrap => Attribute::Unwrap(false),
        A::Derive => Attribute::Derive(false),
        _ => return None,
    })
}

/// The usage attribute type of an explicit FALSE usage flag.
fn false_type(a: &Attribute) -> Option<AttributeType> {
    use AttributeType as A;
    Some(match a {
        Attribute::Encrypt(false) => A::Encrypt,
        Attribute::Decrypt(false) => A::Decrypt,
        Attribute::Sign(false) => A::Sign,
        Attribute::Verify(false) => A::Verify,
        Attribute::SignRecover(false) => A::SignRecover,
        Attribute::VerifyRecover(false) => A::VerifyRecover,
        Attribute::Wrap(false) => A::Wrap,
        Attribute::Unwrap(false) => A::Unwrap,
        Attribute::Derive(false) => A::Derive,
        _ => return None,
    })
}

/// One line of `keywardctl token capabilities`: a capability, whether the token has it,
/// why not, and the Keyward features its absence disables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapabilityLine {
    /// Its name (`ec-keys`, `oaep-sha256`, `session-key-pairs`, an algorithm name, ...).
    pub name: String,
    /// True if the token has it.
    pub available: bool,
    /// Why not (empty when available), or a note on how Keyward adapts.
    pub detail: String,
    /// Keyward features unavailable without it.
    pub disables: Vec<String>,
}

/// The token's capabilities, learnt at open and immutable afterwards.
#[derive(Debug, Clone)]
pub struct Capabilities {
    /// Every mechanism `C_GetMechanismList` reported, by numeric type.
    available: BTreeMap<u64, MechanismType>,
    /// Key-size range (min, max) of the key generation mechanisms present, in the
    /// mechanism's unit (see the module header); (0, 0) when the token does not say.
    keygen_range: BTreeMap<u64, (usize, usize)>,
    /// Whether each key family can be generated with Keyward's custody attributes.
    families: BTreeMap<Family, Probe>,
    /// Explicit FALSE usage flags the token refused, per half.
    refused_false: BTreeSet<(Half, u64)>,
    copyable: Probe,
    session_pairs: Probe,
    session_secrets: Probe,
    oaep_sha1: Probe,
    oaep_sha256: Probe,
    /// `C_UnwrapKey` with `CKM_RSA_PKCS_OAEP` (its `CKF_UNWRAP`): what import jobs need.
    oaep_unwrap: Probe,
    /// RFC 5649 AES key wrap with padding, by a known-answer trial (kwp.rs), and the
    /// mechanism that does it.
    rfc5649: Probe,
    rfc5649_mechanism: Option<Rfc5649>,
}

/// The earlier name of [`Capabilities`].
pub type Mechanisms = Capabilities;

/// Key generation mechanisms whose key-size range is read.
const KEYGEN: [MechanismType; 4] = [
    MechanismType::AES_KEY_GEN,
    MechanismType::GENERIC_SECRET_KEY_GEN,
    MechanismType::ECC_KEY_PAIR_GEN,
    MechanismType::RSA_PKCS_KEY_PAIR_GEN,
];

/// `CKA_LABEL` of the probe objects (destroyed right after each trial).
pub(crate) const PROBE_LABEL: &[u8] = b"keyward-capability-probe";

/// True if `rv` means the token (or the session, or the login) is unusable, rather than
/// that it lacks what a trial asked for: such a failure ends start-up.
fn fatal_rv(rv: RvError) -> bool {
    !matches!(
        rv,
        RvError::AttributeReadOnly
            | RvError::AttributeTypeInvalid
            | RvError::AttributeValueInvalid
            | RvError::AttributeSensitive
            | RvError::TemplateIncomplete
            | RvError::TemplateInconsistent
            | RvError::MechanismInvalid
            | RvError::MechanismParamInvalid
            | RvError::FunctionNotSupported
            | RvError::KeySizeRange
            | RvError::KeyTypeInconsistent
            | RvError::KeyFunctionNotPermitted
            | RvError::DomainParamsInvalid
            | RvError::CurveNotSupported
            | RvError::ArgumentsBad
            | RvError::GeneralError
            | RvError::FunctionFailed
            | RvError::DataLenRange
            | RvError::EncryptedDataInvalid
            | RvError::EncryptedDataLenRange
            | RvError::ActionProhibited
            | RvError::WrappedKeyInvalid
            | RvError::WrappedKeyLenRange
            | RvError::UnwrappingKeyTypeInconsistent
            | RvError::UnwrappingKeySizeRange
    )
}

/// `Err` for an error that ends start-up; the error back for one a trial records.
pub(crate) fn triage(e: TokenError) -> Result<TokenError> {
    match &e {
        TokenError::Pkcs11 { rv, .. } if !fatal_rv(*rv) => Ok(e),
        _ => Err(e),
    }
}

/// "C_GenerateKey returned CKR_FUNCTION_NOT_SUPPORTED".
pub(crate) fn rv_text(e: &TokenError) -> String {
    match e {
        TokenError::Pkcs11 { rv, function } => format!(
            "{function} returned {}",
            keyward_wire::rv::rv_name(crate::error::rv_to_ck_rv(*rv))
        ),
        other => other.to_string(),
    }
}

/// Destroys every object carrying the probe id `id` (the trial's objects, orphans included).
pub(crate) fn sweep(session: &Session, id: &[u8]) -> Result<()> {
    for h in session.find_objects(&[Attribute::Id(id.to_vec())])? {
        match session.destroy_object(h) {
            Ok(()) | Err(CryptokiError::Pkcs11(RvError::ObjectHandleInvalid, _)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The trial templates of one family: what Keyward's keys of the family carry.
struct Trial {
    family: Family,
    /// Custody attributes and the usage flags that must be TRUE (private or secret half).
    key: Vec<Attribute>,
    /// Likewise for the public half of a pair (empty for secret keys).
    public: Vec<Attribute>,
}

impl Trial {
    fn new(family: Family, token: bool, rsa_bits: u64) -> Trial {
        let custody = |private: bool| {
            let mut t = vec![
                Attribute::Token(token),
                Attribute::Private(private),
                Attribute::Label(PROBE_LABEL.to_vec()),
            ];
            if private {
                t.extend([Attribute::Sensitive(true), Attribute::Extractable(false)]);
            }
            t
        };
        let mut key = custody(true);
        let mut public = Vec::new();
        match family {
            Family::Ec => {
                key.push(Attribute::Sign(true));
                public = custody(false);
                public.extend([
                    Attribute::Verify(true),
                    Attribute::EcParams(Curve::P256.ec_params()),
                ]);
            }
            Family::Rsa => {
                // An encrypt/decrypt pair: the OAEP trials use it.
                key.push(Attribute::Decrypt(true));
                public = custody(false);
                public.extend([
                    Attribute::Encrypt(true),
                    Attribute::ModulusBits(rsa_bits.into()),
                    Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                ]);
            }
            Family::Aes => key.extend([
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32.into()),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
            ]),
            Family::GenericSecret => key.extend([
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                // CKA_VALUE_LEN is bytes: a 256-bit key.
                Attribute::ValueLen(32.into()),
                Attribute::Sign(true),
                Attribute::Verify(true),
            ]),
        }
        Trial {
            family,
            key,
            public,
        }
    }

    fn key_half(&self) -> Half {
        if self.family.is_pair() {
            Half::Private
        } else {
            Half::Secret
        }
    }

    /// The FALSE flags a Keyward key of this family carries on `half` (every usage flag the
    /// trial does not set TRUE).
    fn falses(&self, half: Half) -> Vec<Attribute> {
        let template = if half == Half::Public {
            &self.public
        } else {
            &self.key
        };
        usage_types(half)
            .iter()
            .filter(|t| !template.iter().any(|a| a.attribute_type() == **t))
            .filter_map(|t| false_flag(*t))
            .collect()
    }

    /// Generates the objects of this trial with `extra_key`/`extra_public` added, under a
    /// fresh probe id, and sweeps them (and any orphan) away; the generation's result.
    /// On success with `keep`, `keep` runs on the handles before the sweep.
    fn run(
        &self,
        session: &Session,
        extra_key: &[Attribute],
        extra_public: &[Attribute],
        keep: &mut dyn FnMut(&Session, ObjectHandle, Option<ObjectHandle>),
    ) -> Result<Result<()>> {
        let id = probe_id(session)?;
        let mut key = self.key.clone();
        key.extend_from_slice(extra_key);
        key.push(Attribute::Id(id.clone()));
        let made = if self.family.is_pair() {
            let mut public = self.public.clone();
            public.extend_from_slice(extra_public);
            public.push(Attribute::Id(id.clone()));
            let m = match self.family {
                Family::Ec => Mechanism::EccKeyPairGen,
                _ => Mechanism::RsaPkcsKeyPairGen,
            };
            session
                .generate_key_pair(&m, &public, &key)
                .map(|(p, k)| (k, Some(p)))
        } else {
            let m = match self.family {
                Family::Aes => Mechanism::AesKeyGen,
                _ => Mechanism::GenericSecretKeyGen,
            };
            session.generate_key(&m, &key).map(|k| (k, None))
        };
        let result = match made {
            Ok((k, p)) => {
                keep(session, k, p);
                Ok(())
            }
            Err(e) => Err(triage(e.into())?),
        };
        sweep(session, &id)?;
        Ok(result)
    }
}

/// A fresh random probe `CKA_ID`.
pub(crate) fn probe_id(session: &Session) -> Result<Vec<u8>> {
    let mut id = b"kw-probe-".to_vec();
    id.extend(session.generate_random_vec(8)?);
    Ok(id)
}

fn no_keep(_: &Session, _: ObjectHandle, _: Option<ObjectHandle>) {}

impl Capabilities {
    /// Learns what the token in `slot` can do, through a logged-in read/write `session`.
    /// Errors only for what makes the token unusable (see the module header).
    pub(crate) fn probe(
        ctx: &Pkcs11,
        slot: Slot,
        session: &Session,
        raw: &RawModule,
    ) -> Result<Capabilities> {
        let available: BTreeMap<u64, MechanismType> = ctx
            .get_mechanism_list(slot)?
            .into_iter()
            .map(|m| (*m, m))
            .collect();
        let mut keygen_range = BTreeMap::new();
        for m in KEYGEN {
            if available.contains_key(&*m) {
                let range = match ctx.get_mechanism_info(slot, m) {
                    Ok(i) => (i.min_key_size(), i.max_key_size()),
                    Err(e) => {
                        let e = triage(e.into())?;
                        tracing::info!(mechanism = %m, error = %e, "token does not describe a key generation mechanism");
                        (0, 0)
                    }
                };
                keygen_range.insert(*m, range);
            }
        }
        let missing =
            |m: MechanismType| Probe::Unavailable(format!("{m} is not in C_GetMechanismList"));
        let mut caps = Capabilities {
            available,
            keygen_range,
            families: BTreeMap::new(),
            refused_false: BTreeSet::new(),
            copyable: Probe::Unavailable("not probed: no key family could be generated".into()),
            session_pairs: Probe::Unavailable("not probed: no key pair family".into()),
            session_secrets: Probe::Unavailable("not probed: no secret key family".into()),
            oaep_sha1: missing(MechanismType::RSA_PKCS_OAEP),
            oaep_sha256: missing(MechanismType::RSA_PKCS_OAEP),
            oaep_unwrap: missing(MechanismType::RSA_PKCS_OAEP),
            rfc5649: Probe::Unavailable("not probed".into()),
            rfc5649_mechanism: None,
        };
        if caps.listed(MechanismType::RSA_PKCS_OAEP) {
            caps.oaep_unwrap = match ctx.get_mechanism_info(slot, MechanismType::RSA_PKCS_OAEP) {
                Ok(i) if i.unwrap() => Probe::Available,
                Ok(_) => Probe::Unavailable(
                    "CKM_RSA_PKCS_OAEP without CKF_UNWRAP in C_GetMechanismInfo (no C_UnwrapKey)"
                        .into(),
                ),
                Err(e) => Probe::from_trial(
                    "C_GetMechanismInfo(CKM_RSA_PKCS_OAEP)",
                    &Err(triage(e.into())?),
                ),
            };
        }
        let mut copyable_known = false;
        let rsa_bits = caps.probe_rsa_bits();
        for family in Family::ALL {
            if !caps.listed(family.keygen()) {
                caps.families.insert(family, missing(family.keygen()));
                continue;
            }
            let trial = Trial::new(family, true, rsa_bits);
            let probe = caps.learn(session, &trial, &mut copyable_known)?;
            if probe.is_available()
                && family == Family::Rsa
                && caps.has(MechanismType::RSA_PKCS_OAEP)
            {
                // The OAEP trials, on a pair made with the learnt template.
                let mut oaep = (false, false);
                let mut keep = |s: &Session, k: ObjectHandle, p: Option<ObjectHandle>| {
                    if let Some(p) = p {
                        oaep = (
                            oaep_trial(s, p, k, OaepHash::Sha1),
                            oaep_trial(s, p, k, OaepHash::Sha256),
                        );
                    }
                };
                let pub_extra = caps.fit(Half::Public, trial.falses(Half::Public));
                let key_extra = caps.fit(Half::Private, trial.falses(Half::Private));
                let copy = caps.copyable_template();
                let mut k = key_extra;
                k.extend(copy.clone());
                let mut p = pub_extra;
                p.extend(copy);
                let made = trial.run(session, &k, &p, &mut keep)?;
                let refused = |hash: OaepHash| {
                    Probe::Unavailable(format!(
                        "{}: the token refused a trial encryption and decryption",
                        hash.mechanism_name()
                    ))
                };
                caps.oaep_sha1 = if oaep.0 {
                    Probe::Available
                } else {
                    refused(OaepHash::Sha1)
                };
                caps.oaep_sha256 = if oaep.1 {
                    Probe::Available
                } else {
                    refused(OaepHash::Sha256)
                };
                if let Err(e) = made {
                    let why = Probe::from_trial("the OAEP trial pair", &Err(e));
                    caps.oaep_sha1 = why.clone();
                    caps.oaep_sha256 = why;
                }
            }
            caps.families.insert(family, probe);
        }
        caps.generic_range_units();
        // Session objects (module clients' CKA_TOKEN=FALSE keys), with the learnt template.
        if let Some(f) = [Family::Ec, Family::Rsa]
            .into_iter()
            .find(|f| caps.family(*f).is_available())
        {
            let trial = Trial::new(f, false, rsa_bits);
            let key = caps.fit(Half::Private, Vec::new());
            let r = trial.run(session, &key, &[], &mut no_keep)?;
            caps.session_pairs =
                Probe::from_trial(&format!("{} with CKA_TOKEN=FALSE", f.keygen()), &r);
        }
        if let Some(f) = [Family::Aes, Family::GenericSecret]
            .into_iter()
            .find(|f| caps.family(*f).is_available())
        {
            let trial = Trial::new(f, false, rsa_bits);
            let r = trial.run(session, &[], &[], &mut no_keep)?;
            caps.session_secrets =
                Probe::from_trial(&format!("{} with CKA_TOKEN=FALSE", f.keygen()), &r);
        }
        (caps.rfc5649, caps.rfc5649_mechanism) =
            crate::kwp::trial(raw, session, caps.family(Family::Aes).is_available())?;
        Ok(caps)
    }

    /// Tries `trial` with the template Keyward would use; if the token refuses it, finds out
    /// why (see the module header) and records it. The family's availability.
    fn learn(
        &mut self,
        session: &Session,
        trial: &Trial,
        copyable_known: &mut bool,
    ) -> Result<Probe> {
        let what = trial.family.keygen().to_string();
        let copy = if *copyable_known {
            self.copyable_template()
        } else {
            vec![Attribute::Copyable(false)]
        };
        let key_half = trial.key_half();
        let mut key = self.fit(key_half, trial.falses(key_half));
        key.extend(copy.clone());
        let mut public = self.fit(Half::Public, trial.falses(Half::Public));
        if trial.family.is_pair() {
            public.extend(copy);
        }
        if trial.run(session, &key, &public, &mut no_keep)?.is_ok() {
            if !*copyable_known {
                *copyable_known = true;
                self.copyable = Probe::Available;
            }
            return Ok(Probe::Available);
        }
        // The minimal template: custody attributes and the TRUE flags only.
        if let Err(e) = trial.run(session, &[], &[], &mut no_keep)? {
            let probe = Probe::from_trial(&what, &Err(e));
            tracing::info!(family = ?trial.family, reason = probe.reason(), "token cannot generate this key family with Keyward's custody attributes");
            return Ok(probe);
        }
        if !*copyable_known {
            *copyable_known = true;
            let copy = [Attribute::Copyable(false)];
            let public: &[Attribute] = if trial.family.is_pair() { &copy } else { &[] };
            let r = trial.run(session, &copy, public, &mut no_keep)?;
            self.copyable = Probe::from_trial("CKA_COPYABLE=FALSE in a key template", &r);
            if !self.copyable.is_available() {
                tracing::info!("token refuses CKA_COPYABLE in templates; keys keep its default");
            }
        }
        let mut halves = vec![key_half];
        if trial.family.is_pair() {
            halves.push(Half::Public);
        }
        for half in halves {
            for flag in self.fit(half, trial.falses(half)) {
                let one = [flag.clone()];
                let (k, p): (&[Attribute], &[Attribute]) = if half == Half::Public {
                    (&[], &one)
                } else {
                    (&one, &[])
                };
                if trial.run(session, k, p, &mut no_keep)?.is_err() {
                    if let Some(t) = false_type(&flag) {
                        tracing::info!(?half, attribute = %t, "token refuses this usage flag set FALSE; templates leave it out");
                        self.refused_false.insert((half, attr_key(t)));
                    }
                }
            }
        }
        // The template Keyward will use now, once more: it must work.
        let mut key = self.fit(key_half, trial.falses(key_half));
        key.extend(self.copyable_template());
        let mut public = self.fit(Half::Public, trial.falses(Half::Public));
        if trial.family.is_pair() {
            public.extend(self.copyable_template());
        }
        let r = trial.run(session, &key, &public, &mut no_keep)?;
        Ok(Probe::from_trial(&what, &r))
    }

    /// The mechanism that does RFC 5649 AES key wrap with padding, if any (kwp.rs).
    pub fn rfc5649(&self) -> Option<Rfc5649> {
        self.rfc5649_mechanism
    }

    /// Whether the token does RFC 5649, and why not.
    pub fn rfc5649_probe(&self) -> &Probe {
        &self.rfc5649
    }

    /// `[CKA_COPYABLE=FALSE]` if the token takes it, else nothing.
    fn copyable_template(&self) -> Vec<Attribute> {
        if self.copyable.is_available() {
            vec![Attribute::Copyable(false)]
        } else {
            Vec::new()
        }
    }

    /// `template` (of a `half` object) with what the token refuses left out: the explicit
    /// FALSE usage flags it refused at the probe, and `CKA_COPYABLE=FALSE` if it refused that.
    /// Never touches anything else (`CKA_PRIVATE`, `CKA_SENSITIVE`, `CKA_EXTRACTABLE`, TRUE
    /// flags stay as given).
    pub fn fit(&self, half: Half, mut template: Vec<Attribute>) -> Vec<Attribute> {
        template.retain(|a| match a {
            Attribute::Copyable(false) => self.copyable.is_available(),
            a => match false_type(a) {
                Some(t) => !self.refused_false.contains(&(half, attr_key(t))),
                None => true,
            },
        });
        template
    }

    /// Whether `family` can be generated with Keyward's custody attributes.
    pub fn family(&self, family: Family) -> &Probe {
        static UNPROBED: Probe = Probe::Available;
        self.families.get(&family).unwrap_or(&UNPROBED)
    }

    /// True if the token makes key pairs with `CKA_TOKEN=FALSE` (module session objects).
    pub fn session_key_pairs(&self) -> &Probe {
        &self.session_pairs
    }

    /// True if the token makes secret keys with `CKA_TOKEN=FALSE` (module session objects).
    pub fn session_secret_keys(&self) -> &Probe {
        &self.session_secrets
    }

    /// An RSA size for the probe key: 1024 bits, or the token's minimum if larger.
    fn probe_rsa_bits(&self) -> u64 {
        let min = self
            .keygen_range
            .get(&*MechanismType::RSA_PKCS_KEY_PAIR_GEN)
            .map_or(0, |r| r.0);
        u64::try_from(min.max(1024)).unwrap_or(1024)
    }

    /// True if the token can do `m`: `C_GetMechanismList` reported it and, for a key
    /// generation mechanism, the family's trial worked (tpm2-pkcs11 1.9 lists
    /// `CKM_AES_KEY_GEN` but answers `C_GenerateKey` with `CKR_FUNCTION_NOT_SUPPORTED`), so
    /// keywardd offers module clients only what works.
    pub fn has(&self, m: MechanismType) -> bool {
        self.listed(m)
            && Family::ALL
                .iter()
                .filter(|f| f.keygen() == m)
                .all(|f| self.families.get(f).is_none_or(Probe::is_available))
    }

    /// True if `C_GetMechanismList` reported `m`.
    pub fn listed(&self, m: MechanismType) -> bool {
        self.available.contains_key(&*m)
    }

    /// Every mechanism the token reported.
    pub fn list(&self) -> Vec<MechanismType> {
        self.available.values().copied().collect()
    }

    /// True if a trial `CKM_RSA_PKCS_OAEP` encrypt and decrypt with SHA-1 worked.
    pub fn oaep_sha1(&self) -> bool {
        self.oaep_sha1.is_available()
    }

    /// True if a trial `CKM_RSA_PKCS_OAEP` encrypt and decrypt with SHA-256 worked
    /// (false on SoftHSM2 2.6).
    pub fn oaep_sha256(&self) -> bool {
        self.oaep_sha256.is_available()
    }

    /// True if OAEP with `hash` worked in the probe.
    pub fn oaep(&self, hash: OaepHash) -> bool {
        match hash {
            OaepHash::Sha1 => self.oaep_sha1(),
            OaepHash::Sha256 => self.oaep_sha256(),
        }
    }

    /// `C_UnwrapKey` with `CKM_RSA_PKCS_OAEP`, which every import method needs: `None` if
    /// the token has it, else why not.
    pub fn oaep_unwrap(&self) -> Option<&str> {
        self.oaep_unwrap.reason()
    }

    /// True if the token accepted `CKA_COPYABLE=FALSE` in a key generation template.
    pub fn copyable_accepted(&self) -> bool {
        self.copyable.is_available()
    }

    /// The key-size range of `keygen` in its unit, if the token gave one.
    /// NSS softokn 3.87 gives `CKM_GENERIC_SECRET_KEY_GEN`'s range in bytes where the
    /// specification says bits: when the generic-secret trial made its 256-bit (32-byte) key
    /// although 256 is outside the range read as bits, the token counts bytes, and the range
    /// is taken as bytes (times 8) from then on.
    fn generic_range_units(&mut self) {
        // Only a trial that ran counts (an unprobed family reads as available).
        let tried = self
            .families
            .get(&Family::GenericSecret)
            .is_some_and(Probe::is_available);
        if !tried {
            return;
        }
        let key = *MechanismType::GENERIC_SECRET_KEY_GEN;
        if let Some(r) = self.keygen_range.get_mut(&key) {
            if r.1 != 0 && (256 < r.0 || 256 > r.1) {
                tracing::info!(
                    min = r.0,
                    max = r.1,
                    "the token gives CKM_GENERIC_SECRET_KEY_GEN's range in bytes (a 32-byte trial key was made): read as bytes"
                );
                *r = (r.0.saturating_mul(8), r.1.saturating_mul(8));
            }
        }
    }

    fn range(&self, keygen: MechanismType) -> Option<(usize, usize)> {
        self.keygen_range
            .get(&*keygen)
            .copied()
            .filter(|(_, max)| *max != 0)
    }

    /// `Ok` if the token can generate and use keys of `algorithm`; otherwise
    /// [`TokenError::Unsupported`] naming what is missing: a mechanism, a mechanism variant
    /// ("CKM_RSA_PKCS_OAEP with SHA-256 ...", "CKM_RSA_PKCS_KEY_PAIR_GEN with 4096-bit
    /// keys"), or a key family the trial showed the token cannot generate
    /// ("CKM_AES_KEY_GEN: C_GenerateKey returned CKR_FUNCTION_NOT_SUPPORTED").
    ///
    /// EC signing needs only raw `CKM_ECDSA`: keywardd hashes (public data) and signs the
    /// digest, composing `CKM_ECDSA_SHA256/384` that SoftHSM2 2.6 lacks (design §5).
    pub fn check_algorithm(&self, algorithm: Algorithm) -> Result<()> {
        let unsupported = |mechanism: String| TokenError::Unsupported {
            algorithm,
            mechanism,
        };
        let (family, uses): (Family, &[MechanismType]) = match algorithm.kind() {
            KeyKind::Aes(_) => (Family::Aes, &[MechanismType::AES_GCM]),
            KeyKind::Hmac(_) => (Family::GenericSecret, &[MechanismType::SHA256_HMAC]),
            KeyKind::Ec(_) => (Family::Ec, &[MechanismType::ECDSA]),
            KeyKind::Rsa(_) => {
                let uses: &[MechanismType] = match algorithm {
                    Algorithm::RsaSignPkcs1_2048Sha256
                    | Algorithm::RsaSignPkcs1_3072Sha256
                    | Algorithm::RsaSignPkcs1_4096Sha256 => &[MechanismType::SHA256_RSA_PKCS],
                    Algorithm::RsaSignPss2048Sha256
                    | Algorithm::RsaSignPss3072Sha256
                    | Algorithm::RsaSignPss4096Sha256 => &[MechanismType::SHA256_RSA_PKCS_PSS],
                    _ => &[MechanismType::RSA_PKCS_OAEP],
                };
                (Family::Rsa, uses)
            }
        };
        let keygen = family.keygen();
        for m in std::iter::once(&keygen).chain(uses) {
            if !self.listed(*m) {
                return Err(unsupported(m.to_string()));
            }
        }
        if let Some(reason) = self.family(family).reason() {
            return Err(unsupported(reason.to_owned()));
        }
        self.check_size(algorithm.kind()).map_err(unsupported)?;
        if let Some(hash) = OaepHash::of(algorithm) {
            if !self.oaep(hash) {
                return Err(unsupported(hash.mechanism_name().to_owned()));
            }
        }
        Ok(())
    }

    /// `Ok` if the key generation mechanism's range admits a key of `kind`, else the
    /// missing variant. Units follow the mechanism (module header: bytes for AES, bits for
    /// generic secrets, RSA and EC); a kind's size is bytes for AES and HMAC keys.
    fn check_size(&self, kind: KeyKind) -> std::result::Result<(), String> {
        let (keygen, size, unit) = match kind {
            KeyKind::Aes(bytes) => (MechanismType::AES_KEY_GEN, bytes, "byte"),
            KeyKind::Hmac(bytes) => (
                MechanismType::GENERIC_SECRET_KEY_GEN,
                bytes.saturating_mul(8),
                "bit",
            ),
            KeyKind::Ec(bits) => (MechanismType::ECC_KEY_PAIR_GEN, bits, "bit"),
            KeyKind::Rsa(bits) => (MechanismType::RSA_PKCS_KEY_PAIR_GEN, bits, "bit"),
        };
        match self.range(keygen) {
            Some((min, max)) if size < min || size > max => {
                Err(format!("{keygen} with {size}-{unit} keys"))
            }
            _ => Ok(()),
        }
    }

    /// `Ok` if the token generates RSA pairs of `bits` bits, else the missing variant
    /// ("CKM_RSA_PKCS_KEY_PAIR_GEN with 4096-bit keys").
    pub fn check_rsa_bits(&self, bits: usize) -> std::result::Result<(), String> {
        let keygen = MechanismType::RSA_PKCS_KEY_PAIR_GEN;
        if !self.listed(keygen) {
            return Err(keygen.to_string());
        }
        if let Some(reason) = self.family(Family::Rsa).reason() {
            return Err(reason.to_owned());
        }
        self.check_size(KeyKind::Rsa(bits))
    }

    /// `Ok` if a generic secret (an HMAC key) of `bytes` bytes fits the token's
    /// `CKM_GENERIC_SECRET_KEY_GEN` range (given in bits), else the missing variant.
    pub fn check_generic_secret_bytes(&self, bytes: usize) -> std::result::Result<(), String> {
        self.check_size(KeyKind::Hmac(bytes))
    }

    /// What the token can and cannot do, and what each absence disables, for
    /// `keywardctl token capabilities` and `status`.
    pub fn report(&self) -> Vec<CapabilityLine> {
        let line = |name: &str, probe: &Probe, disables: &[&str]| CapabilityLine {
            name: name.to_owned(),
            available: probe.is_available(),
            detail: probe.reason().unwrap_or_default().to_owned(),
            disables: if probe.is_available() {
                Vec::new()
            } else {
                disables.iter().map(|s| (*s).to_owned()).collect()
            },
        };
        let mut out = Vec::new();
        for f in Family::ALL {
            let disables: &[&str] = match f {
                Family::Ec => &["EC_SIGN_* keys", "module EC keys"],
                Family::Rsa => &["RSA_* keys", "module RSA keys", "import jobs"],
                Family::Aes => &[
                    "GOOGLE_SYMMETRIC_ENCRYPTION (AES-GCM) keys",
                    "module AES keys",
                    "import jobs with AES key wrap",
                ],
                Family::GenericSecret => &["HMAC_* keys", "module generic secrets"],
            };
            out.push(line(f.name(), self.family(f), disables));
        }
        out.push(line(
            "oaep-sha1",
            &self.oaep_sha1,
            &[
                "RSA_DECRYPT_OAEP_*_SHA1 keys",
                "rsa-oaep-*-sha1* import methods",
            ],
        ));
        out.push(line(
            "oaep-sha256",
            &self.oaep_sha256,
            &[
                "RSA_DECRYPT_OAEP_*_SHA256 keys",
                "rsa-oaep-*-sha256* import methods",
            ],
        ));
        out.push(line(
            "oaep-unwrap",
            &self.oaep_unwrap,
            &["import jobs (every import method unwraps with RSA-OAEP)"],
        ));
        let mut kwp = line(
            "aes-key-wrap-rfc5649",
            &self.rfc5649,
            &[
                "import jobs with AES key wrap (rsa-oaep-*-aes-256 methods)",
                "module CKM_RSA_AES_KEY_WRAP and CKM_AES_KEY_WRAP_PAD unwraps",
            ],
        );
        if let Some(m) = self.rfc5649_mechanism {
            kwp.detail = format!("by {}", m.mechanism_name());
        }
        out.push(kwp);
        out.push(line(
            "session-key-pairs",
            &self.session_pairs,
            &["module session key pairs (CKA_TOKEN=FALSE: CKR_TEMPLATE_INCONSISTENT)"],
        ));
        out.push(line(
            "session-secret-keys",
            &self.session_secrets,
            &["module session secret keys (CKA_TOKEN=FALSE: CKR_TEMPLATE_INCONSISTENT)"],
        ));
        let mut copy = line("copyable-false", &self.copyable, &[]);
        if !copy.available {
            copy.detail
                .push_str("; keys keep the token's default CKA_COPYABLE");
        }
        out.push(copy);
        let refused: Vec<String> = self
            .refused_false
            .iter()
            .map(|(h, t)| format!("{h:?} {}", attr_name(*t)))
            .collect();
        out.push(CapabilityLine {
            name: "explicit-false-usage-flags".into(),
            available: refused.is_empty(),
            detail: if refused.is_empty() {
                String::new()
            } else {
                format!(
                    "refused set FALSE, left out of templates (Keyward's purpose gate still applies): {}",
                    refused.join(", ")
                )
            },
            disables: Vec::new(),
        });
        for algorithm in Algorithm::ALL {
            let r = self.check_algorithm(algorithm);
            out.push(CapabilityLine {
                name: algorithm.to_string(),
                available: r.is_ok(),
                detail: match r {
                    Ok(()) => String::new(),
                    Err(TokenError::Unsupported { mechanism, .. }) => format!("lacks {mechanism}"),
                    Err(e) => e.to_string(),
                },
                disables: Vec::new(),
            });
        }
        out
    }
}

impl fmt::Display for Half {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The numeric attribute type (a set key).
#[allow(clippy::useless_conversion)] // CK_ULONG is 32 bits on Windows.
fn attr_key(t: AttributeType) -> u64 {
    u64::from(cryptoki_sys::CK_ATTRIBUTE_TYPE::from(t))
}

/// `CKA_SIGN` for the numeric attribute type.
fn attr_name(t: u64) -> String {
    cryptoki_sys::CK_ATTRIBUTE_TYPE::try_from(t)
        .ok()
        .and_then(|t| AttributeType::try_from(t).ok())
        .map_or_else(|| format!("{t:#x}"), |t| t.to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Capabilities as a token with `ranges` and `refused` FALSE flags would have them.
    fn caps(
        ranges: &[(MechanismType, usize, usize)],
        refused: &[(Half, AttributeType)],
    ) -> Capabilities {
        let mut available = BTreeMap::new();
        for m in [
            MechanismType::AES_KEY_GEN,
            MechanismType::AES_GCM,
            MechanismType::GENERIC_SECRET_KEY_GEN,
            MechanismType::SHA256_HMAC,
            MechanismType::ECC_KEY_PAIR_GEN,
            MechanismType::ECDSA,
            MechanismType::RSA_PKCS_KEY_PAIR_GEN,
            MechanismType::SHA256_RSA_PKCS,
        ] {
            available.insert(*m, m);
        }
        Capabilities {
            available,
            keygen_range: ranges.iter().map(|(m, lo, hi)| (**m, (*lo, *hi))).collect(),
            families: BTreeMap::new(),
            refused_false: refused.iter().map(|(h, t)| (*h, attr_key(*t))).collect(),
            copyable: Probe::Unavailable("refused".into()),
            session_pairs: Probe::Available,
            session_secrets: Probe::Available,
            oaep_sha1: Probe::Available,
            oaep_sha256: Probe::Available,
            oaep_unwrap: Probe::Available,
            rfc5649: Probe::Available,
            rfc5649_mechanism: Some(Rfc5649::WrapPad),
        }
    }

    /// NSS softokn 3.87 gives CKM_GENERIC_SECRET_KEY_GEN's range in bytes: a 32-byte trial
    /// key made outside the range read as bits turns it into bytes; without a successful
    /// trial the range stays as the token gave it.
    #[test]
    fn generic_secret_range_in_bytes_is_learnt_from_the_trial() {
        let mut c = caps(&[(MechanismType::GENERIC_SECRET_KEY_GEN, 1, 128)], &[]);
        c.generic_range_units();
        assert!(
            c.check_generic_secret_bytes(32).is_err(),
            "no trial: still bits"
        );
        c.families.insert(Family::GenericSecret, Probe::Available);
        c.generic_range_units();
        assert_eq!(c.check_generic_secret_bytes(32), Ok(()));
        assert_eq!(c.check_generic_secret_bytes(128), Ok(()));
        assert!(c.check_generic_secret_bytes(129).is_err());
        // A range that admits 256 bits is left alone.
        let mut ok = caps(&[(MechanismType::GENERIC_SECRET_KEY_GEN, 8, 512)], &[]);
        ok.families.insert(Family::GenericSecret, Probe::Available);
        ok.generic_range_units();
        assert!(ok.check_generic_secret_bytes(65).is_err());
    }

    /// CKM_GENERIC_SECRET_KEY_GEN's range is in bits, HMAC key sizes in bytes (issue 17).
    #[test]
    fn generic_secret_range_is_bits() {
        let c = caps(&[(MechanismType::GENERIC_SECRET_KEY_GEN, 8, 512)], &[]);
        // 32 bytes = 256 bits, inside 8..=512 bits.
        c.check_algorithm(Algorithm::HmacSha256)
            .expect("256 bits fit 8..=512 bits");
        assert_eq!(c.check_generic_secret_bytes(64), Ok(()));
        let err = c.check_generic_secret_bytes(65).unwrap_err();
        assert!(err.contains("520-bit"), "{err}");
        // A token whose generic secrets stop at 128 bits cannot make Keyward's HMAC keys.
        let small = caps(&[(MechanismType::GENERIC_SECRET_KEY_GEN, 8, 128)], &[]);
        let err = small.check_algorithm(Algorithm::HmacSha256).unwrap_err();
        assert!(err.to_string().contains("256-bit keys"), "{err}");
        // AES stays in bytes.
        let aes = caps(&[(MechanismType::AES_KEY_GEN, 16, 32)], &[]);
        aes.check_algorithm(Algorithm::Aes256Gcm).expect("32 bytes");
    }

    /// `fit` leaves out only refused FALSE usage flags and a refused CKA_COPYABLE; custody
    /// attributes and TRUE flags always stay.
    #[test]
    fn fit_keeps_custody() {
        let c = caps(
            &[],
            &[
                (Half::Private, AttributeType::Sign),
                (Half::Public, AttributeType::Verify),
            ],
        );
        let private = vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Copyable(false),
            Attribute::Decrypt(true),
            Attribute::Sign(false),
            Attribute::Derive(false),
        ];
        let fitted = c.fit(Half::Private, private.clone());
        assert_eq!(
            fitted,
            vec![
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Decrypt(true),
                Attribute::Derive(false),
            ]
        );
        // A TRUE sign flag is never dropped; the refusal is per half.
        let signing = vec![Attribute::Sign(true), Attribute::Verify(false)];
        assert_eq!(c.fit(Half::Private, signing.clone()), signing);
        assert_eq!(c.fit(Half::Public, vec![Attribute::Verify(false)]), vec![]);
    }

    /// A family the probe found unusable is refused by name, with the token's code.
    #[test]
    fn unavailable_family_is_refused_by_name() {
        let mut c = caps(&[], &[]);
        c.families.insert(
            Family::Aes,
            Probe::Unavailable(
                "CKM_AES_KEY_GEN: Function::GenerateKey returned CKR_FUNCTION_NOT_SUPPORTED".into(),
            ),
        );
        let err = c
            .check_algorithm(Algorithm::Aes128Gcm)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("AES_128_GCM") && err.contains("CKR_FUNCTION_NOT_SUPPORTED"),
            "{err}"
        );
        let report = c.report();
        let aes = report.iter().find(|l| l.name == "aes-keys").unwrap();
        assert!(!aes.available && !aes.disables.is_empty(), "{aes:?}");
        assert!(report
            .iter()
            .any(|l| l.name == "AES_256_GCM" && !l.available));
        assert!(report
            .iter()
            .any(|l| l.name == "EC_SIGN_P256_SHA256" && l.available));
    }

    /// Session, login and device errors end start-up; a missing capability does not.
    #[test]
    fn fatal_codes() {
        for rv in [
            RvError::SessionHandleInvalid,
            RvError::UserNotLoggedIn,
            RvError::DeviceError,
            RvError::DeviceRemoved,
            RvError::TokenNotPresent,
        ] {
            assert!(fatal_rv(rv), "{rv}");
        }
        for rv in [
            RvError::AttributeValueInvalid,
            RvError::TemplateInconsistent,
            RvError::MechanismInvalid,
            RvError::FunctionNotSupported,
            RvError::GeneralError,
        ] {
            assert!(!fatal_rv(rv), "{rv}");
        }
    }
}
