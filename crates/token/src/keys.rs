//! Key objects in the token, by `CKA_ID`: generation for every [`Algorithm`] with Keyward's
//! custody attributes (design §4 "Custody", "No side doors"), public keys as SPKI, listing
//! for reconciliation with the store's object map, and destruction.
//!
//! Every generated object is a token object (`CKA_TOKEN=TRUE`) carrying the caller's `CKA_ID`
//! and `CKA_LABEL`. Private and secret objects are `CKA_PRIVATE`, `CKA_SENSITIVE`, not
//! derivable, extractable only when asked (`exportable`), and `CKA_COPYABLE=FALSE` where the
//! token accepts the attribute. Usage flags follow the purpose and nothing else is allowed.

use crate::capabilities::Half;
use crate::error::{Result, TokenError};
use crate::public_key::{ec_spki_der, rsa_spki_der, spki_pem, Curve};
use crate::token::Token;
use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use keyward_wire::keys::{Algorithm, KeyKind, Purpose};

/// Length of the ids [`Token::new_object_id`] makes.
pub const OBJECT_ID_LEN: usize = 16;

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct KeySpec<'a> {
    /// The algorithm (and so the purpose and key size).
    pub algorithm: Algorithm,
    /// `CKA_ID` for the key (both halves of a pair): the daemon's internal random id.
    pub id: &'a [u8],
    /// `CKA_LABEL` for the key (both halves of a pair).
    pub label: &'a str,
    /// `CKA_EXTRACTABLE` of the private or secret object. The key stays `CKA_SENSITIVE`:
    /// extractable means it may be wrapped out, never read in clear.
    pub exportable: bool,
}

/// A public key, as DER `SubjectPublicKeyInfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// DER `SubjectPublicKeyInfo`.
    pub der: Vec<u8>,
}

impl PublicKey {
    /// PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn pem(&self) -> Result<String> {
        spki_pem(&self.der)
    }
}

/// A key the token has just made; no handles, only what identifies and describes it.
#[derive(Debug, Clone)]
pub struct GeneratedKey {
    /// The `CKA_ID` both halves (or the secret key) carry.
    pub id: Vec<u8>,
    /// The algorithm it was made for.
    pub algorithm: Algorithm,
    /// The public key of a pair; `None` for secret keys.
    pub public_key: Option<PublicKey>,
}

/// Usage flags of a key object (`None`: the attribute does not apply to the object).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyUsage {
    /// `CKA_ENCRYPT`.
    pub encrypt: Option<bool>,
    /// `CKA_DECRYPT`.
    pub decrypt: Option<bool>,
    /// `CKA_SIGN`.
    pub sign: Option<bool>,
    /// `CKA_VERIFY`.
    pub verify: Option<bool>,
    /// `CKA_WRAP`.
    pub wrap: Option<bool>,
    /// `CKA_UNWRAP`.
    pub unwrap: Option<bool>,
    /// `CKA_DERIVE`.
    pub derive: Option<bool>,
}

/// One token object as reconciliation sees it. Attributes that do not apply to the object's
/// class are `None`. Never holds key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// `CKA_ID` (empty if the object has none).
    pub id: Vec<u8>,
    /// `CKA_CLASS`.
    pub class: ObjectClass,
    /// `CKA_KEY_TYPE`, for keys.
    pub key_type: Option<KeyType>,
    /// `CKA_LABEL`, byte-exact.
    pub label: Vec<u8>,
    /// `CKA_TOKEN`.
    pub token: bool,
    /// `CKA_PRIVATE`.
    pub private: bool,
    /// `CKA_SENSITIVE`, for private and secret keys.
    pub sensitive: Option<bool>,
    /// `CKA_EXTRACTABLE`, for private and secret keys.
    pub extractable: Option<bool>,
    /// `CKA_ALWAYS_SENSITIVE`, for private and secret keys.
    pub always_sensitive: Option<bool>,
    /// `CKA_NEVER_EXTRACTABLE`, for private and secret keys.
    pub never_extractable: Option<bool>,
    /// `CKA_COPYABLE`, if the token reports it.
    pub copyable: Option<bool>,
    /// `CKA_LOCAL`: generated in the token.
    pub local: Option<bool>,
    /// Usage flags.
    pub usage: KeyUsage,
}

const INFO_ATTRIBUTES: [AttributeType; 19] = [
    AttributeType::Class,
    AttributeType::KeyType,
    AttributeType::Id,
    AttributeType::Label,
    AttributeType::Token,
    AttributeType::Private,
    AttributeType::Sensitive,
    AttributeType::Extractable,
    AttributeType::AlwaysSensitive,
    AttributeType::NeverExtractable,
    AttributeType::Copyable,
    AttributeType::Local,
    AttributeType::Encrypt,
    AttributeType::Decrypt,
    AttributeType::Sign,
    AttributeType::Verify,
    AttributeType::Wrap,
    AttributeType::Unwrap,
    AttributeType::Derive,
];

/// Usage flags of each half, from the purpose.
#[derive(Clone, Copy, Default)]
struct Flags {
    encrypt: bool,
    decrypt: bool,
    sign: bool,
    verify: bool,
}

impl Flags {
    /// Usage attributes of a secret key: every usage flag, set or cleared.
    fn secret_attributes(self) -> [Attribute; 6] {
        [
            Attribute::Encrypt(self.encrypt),
            Attribute::Decrypt(self.decrypt),
            Attribute::Sign(self.sign),
            Attribute::Verify(self.verify),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
        ]
    }

    /// Usage attributes of a private key (PKCS#11 §4.9: a private key has no CKA_ENCRYPT,
    /// CKA_VERIFY or CKA_WRAP; SoftHSM2 answers CKR_ATTRIBUTE_TYPE_INVALID to them).
    fn private_attributes(self) -> [Attribute; 4] {
        [
            Attribute::Decrypt(self.decrypt),
            Attribute::Sign(self.sign),
            Attribute::SignRecover(false),
            Attribute::Unwrap(false),
        ]
    }

    /// Usage attributes of a public key (§4.8: no CKA_DECRYPT, CKA_SIGN or CKA_UNWRAP).
    fn public_attributes(self) -> [Attribute; 4] {
        [
            Attribute::Encrypt(self.encrypt),
            Attribute::Verify(self.verify),
            Attribute::VerifyRecover(false),
            Attribute::Wrap(false),
        ]
    }
}

/// (secret or private half, public half) usage for a purpose.
fn usage_flags(purpose: Purpose) -> (Flags, Flags) {
    let none = Flags::default();
    match purpose {
        Purpose::EncryptDecrypt => (
            Flags {
                encrypt: true,
                decrypt: true,
                ..none
            },
            none,
        ),
        Purpose::Mac => (
            Flags {
                sign: true,
                verify: true,
                ..none
            },
            none,
        ),
        Purpose::AsymmetricSign => (
            Flags { sign: true, ..none },
            Flags {
                verify: true,
                ..none
            },
        ),
        Purpose::AsymmetricDecrypt => (
            Flags {
                decrypt: true,
                ..none
            },
            Flags {
                encrypt: true,
                ..none
            },
        ),
        // Keys of the module carry the client's flags; no Algorithm has this purpose.
        Purpose::Pkcs11Generic => (none, none),
    }
}

impl Token {
    /// 16 random bytes from the token's RNG, for a new internal `CKA_ID`.
    pub fn new_object_id(&self) -> Result<Vec<u8>> {
        self.generate_random(OBJECT_ID_LEN)
    }

    /// Generates a key (or key pair) for `spec.algorithm` as token objects with
    /// `spec.id`/`spec.label`. Refuses, naming the missing mechanism, an algorithm the token
    /// cannot serve ([`TokenError::Unsupported`]), and an id already on an object
    /// ([`TokenError::InvalidArgument`]).
    pub fn generate_key(&self, spec: &KeySpec<'_>) -> Result<GeneratedKey> {
        self.check_algorithm(spec.algorithm)?;
        if spec.id.is_empty() {
            return Err(TokenError::InvalidArgument(
                "CKA_ID must not be empty".into(),
            ));
        }
        let copyable = self.mechanisms().copyable_accepted();
        let (secret_flags, public_flags) = usage_flags(spec.algorithm.purpose());
        let common = |private| custody_template(spec.id, spec.label, private, copyable);
        let mut secret = custody_secret(common(true), spec.exportable);
        if spec.algorithm.is_asymmetric() {
            secret.extend(secret_flags.private_attributes());
        } else {
            secret.extend(secret_flags.secret_attributes());
        }
        let mut public = common(false);
        public.extend(public_flags.public_attributes());
        let caps = self.capabilities();
        let half = if spec.algorithm.is_asymmetric() {
            Half::Private
        } else {
            Half::Secret
        };
        let mut secret = caps.fit(half, secret);
        let mut public = caps.fit(Half::Public, public);

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
            // No retry on failure (a token's CKR_GENERAL_ERROR may leave an orphan): every
            // object with the new id is swept instead, so none outlives the refusal.
            let made = (|| -> Result<Option<PublicKey>> {
                Ok(match spec.algorithm.kind() {
                    KeyKind::Aes(bytes) | KeyKind::Hmac(bytes) => {
                        let (mechanism, key_type) = match spec.algorithm.kind() {
                            KeyKind::Aes(_) => (Mechanism::AesKeyGen, KeyType::AES),
                            _ => (Mechanism::GenericSecretKeyGen, KeyType::GENERIC_SECRET),
                        };
                        secret.extend([
                            Attribute::Class(ObjectClass::SECRET_KEY),
                            Attribute::KeyType(key_type),
                            Attribute::ValueLen(u64::try_from(bytes).unwrap_or(u64::MAX).into()),
                        ]);
                        s.generate_key(&mechanism, &secret)?;
                        None
                    }
                    KeyKind::Ec(bits) => {
                        let curve = Curve::from_bits(bits).ok_or_else(|| {
                            TokenError::InvalidArgument(format!("no EC curve of {bits} bits"))
                        })?;
                        public.push(Attribute::EcParams(curve.ec_params()));
                        let (pub_h, priv_h) =
                            s.generate_key_pair(&Mechanism::EccKeyPairGen, &public, &secret)?;
                        Some(read_public_key(s, pub_h).inspect_err(|_| {
                            let _ = s.destroy_object(pub_h);
                            let _ = s.destroy_object(priv_h);
                        })?)
                    }
                    KeyKind::Rsa(bits) => {
                        public.extend([
                            Attribute::ModulusBits(u64::try_from(bits).unwrap_or(0).into()),
                            Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                        ]);
                        let (pub_h, priv_h) =
                            s.generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &secret)?;
                        Some(read_public_key(s, pub_h).inspect_err(|_| {
                            let _ = s.destroy_object(pub_h);
                            let _ = s.destroy_object(priv_h);
                        })?)
                    }
                })
            })();
            let public_key = made.inspect_err(|_| sweep_id(s, spec.id))?;
            tracing::info!(
                algorithm = %spec.algorithm,
                id = %crate::error::hex(spec.id),
                exportable = spec.exportable,
                "generated key in token"
            );
            Ok(GeneratedKey {
                id: spec.id.to_vec(),
                algorithm: spec.algorithm,
                public_key,
            })
        })
    }

    /// `Ok` if the token can serve `algorithm`, else [`TokenError::Unsupported`] naming the
    /// missing mechanism (see [`crate::Mechanisms::check_algorithm`]).
    pub fn check_algorithm(&self, algorithm: Algorithm) -> Result<()> {
        self.mechanisms().check_algorithm(algorithm)
    }

    /// The public key of the pair with `id`, as SPKI.
    pub fn public_key(&self, id: &[u8]) -> Result<PublicKey> {
        self.session(|s| {
            let h = find_one(s, id, ObjectClass::PUBLIC_KEY, "public key")?;
            read_public_key(s, h)
        })
    }

    /// Every object carrying `CKA_ID` `id`.
    pub fn find_by_id(&self, id: &[u8]) -> Result<Vec<ObjectInfo>> {
        self.objects(&[Attribute::Token(true), Attribute::Id(id.to_vec())])
    }

    /// Every token object (`CKA_TOKEN=TRUE`, private ones included), for reconciling the
    /// store's object map with the token.
    pub fn list_objects(&self) -> Result<Vec<ObjectInfo>> {
        self.objects(&[Attribute::Token(true)])
    }

    fn objects(&self, template: &[Attribute]) -> Result<Vec<ObjectInfo>> {
        self.session(|s| {
            let mut out = Vec::new();
            for h in s.find_objects(template)? {
                match object_info(s, h) {
                    Ok(info) => out.push(info),
                    // Destroyed by another process since C_FindObjects.
                    Err(TokenError::Pkcs11 {
                        rv: RvError::ObjectHandleInvalid,
                        ..
                    }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(out)
        })
    }

    /// Destroys every token object carrying `CKA_ID` `id`; returns how many there were.
    pub fn destroy_by_id(&self, id: &[u8]) -> Result<usize> {
        if id.is_empty() {
            return Err(TokenError::InvalidArgument(
                "CKA_ID must not be empty".into(),
            ));
        }
        self.write_session(|s| {
            let handles = s.find_objects(&[Attribute::Token(true), Attribute::Id(id.to_vec())])?;
            for &h in &handles {
                s.destroy_object(h)?;
            }
            tracing::info!(id = %crate::error::hex(id), count = handles.len(), "destroyed token objects");
            Ok(handles.len())
        })
    }
}

/// Destroys every object carrying `id` (best effort, after a failed generation).
pub(crate) fn sweep_id(s: &Session, id: &[u8]) {
    if let Ok(found) = s.find_objects(&[Attribute::Id(id.to_vec())]) {
        for h in found {
            let _ = s.destroy_object(h);
        }
    }
}

/// The one token object of `class` with `id`.
pub(crate) fn find_one(
    s: &Session,
    id: &[u8],
    class: ObjectClass,
    what: &'static str,
) -> Result<ObjectHandle> {
    let found = s.find_objects(&[
        Attribute::Token(true),
        Attribute::Class(class),
        Attribute::Id(id.to_vec()),
    ])?;
    match found.as_slice() {
        [h] => Ok(*h),
        [] => Err(TokenError::KeyNotFound {
            id: id.to_vec(),
            what,
        }),
        many => Err(TokenError::DuplicateId {
            id: id.to_vec(),
            what,
            count: many.len(),
        }),
    }
}

/// SPKI of a public key object (RSA or EC).
pub(crate) fn read_public_key(s: &Session, h: ObjectHandle) -> Result<PublicKey> {
    let attrs = s.get_attributes(
        h,
        &[
            AttributeType::KeyType,
            AttributeType::Modulus,
            AttributeType::PublicExponent,
            AttributeType::EcParams,
            AttributeType::EcPoint,
        ],
    )?;
    let (mut key_type, mut n, mut e, mut params, mut point) = (None, None, None, None, None);
    for a in attrs {
        match a {
            Attribute::KeyType(t) => key_type = Some(t),
            Attribute::Modulus(v) => n = Some(v),
            Attribute::PublicExponent(v) => e = Some(v),
            Attribute::EcParams(v) => params = Some(v),
            Attribute::EcPoint(v) => point = Some(v),
            _ => {}
        }
    }
    let der = match (key_type, n, e, params, point) {
        (Some(KeyType::RSA), Some(n), Some(e), _, _) => rsa_spki_der(&n, &e)?,
        (Some(KeyType::EC), _, _, Some(params), Some(point)) => ec_spki_der(&params, &point)?,
        (t, ..) => {
            return Err(TokenError::BadTokenData(format!(
                "public key object of type {} lacks its public values",
                t.map_or_else(|| "unknown".to_owned(), |t| t.to_string())
            )))
        }
    };
    Ok(PublicKey { der })
}

fn object_info(s: &Session, h: ObjectHandle) -> Result<ObjectInfo> {
    let mut info = ObjectInfo {
        id: Vec::new(),
        class: ObjectClass::DATA,
        key_type: None,
        label: Vec::new(),
        token: false,
        private: false,
        sensitive: None,
        extractable: None,
        always_sensitive: None,
        never_extractable: None,
        copyable: None,
        local: None,
        usage: KeyUsage::default(),
    };
    let mut class = None;
    for a in s.get_attributes(h, &INFO_ATTRIBUTES)? {
        match a {
            Attribute::Class(c) => class = Some(c),
            Attribute::KeyType(t) => info.key_type = Some(t),
            Attribute::Id(v) => info.id = v,
            Attribute::Label(v) => info.label = v,
            Attribute::Token(b) => info.token = b,
            Attribute::Private(b) => info.private = b,
            Attribute::Sensitive(b) => info.sensitive = Some(b),
            Attribute::Extractable(b) => info.extractable = Some(b),
            Attribute::AlwaysSensitive(b) => info.always_sensitive = Some(b),
            Attribute::NeverExtractable(b) => info.never_extractable = Some(b),
            Attribute::Copyable(b) => info.copyable = Some(b),
            Attribute::Local(b) => info.local = Some(b),
            Attribute::Encrypt(b) => info.usage.encrypt = Some(b),
            Attribute::Decrypt(b) => info.usage.decrypt = Some(b),
            Attribute::Sign(b) => info.usage.sign = Some(b),
            Attribute::Verify(b) => info.usage.verify = Some(b),
            Attribute::Wrap(b) => info.usage.wrap = Some(b),
            Attribute::Unwrap(b) => info.usage.unwrap = Some(b),
            Attribute::Derive(b) => info.usage.derive = Some(b),
            _ => {}
        }
    }
    info.class =
        class.ok_or_else(|| TokenError::BadTokenData("object without CKA_CLASS".into()))?;
    Ok(info)
}

/// The attributes every object Keyward makes carries: a token object with Keyward's internal
/// `CKA_ID` and label, never derivable, never copyable (where the token accepts the
/// attribute); `private` for the private or secret half.
pub(crate) fn custody_template(
    id: &[u8],
    label: &str,
    private: bool,
    copyable_attr: bool,
) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Token(true),
        Attribute::Private(private),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Derive(false),
    ];
    if copyable_attr {
        t.push(Attribute::Copyable(false));
    }
    t
}

/// A private or secret half's template: always sensitive, extractable only if exportable.
pub(crate) fn custody_secret(mut common: Vec<Attribute>, exportable: bool) -> Vec<Attribute> {
    common.extend([
        Attribute::Sensitive(true),
        Attribute::Extractable(exportable),
    ]);
    common
}
