//! Keyward keys as PKCS#11 objects (design §4 "Objects", "Custody", "No side doors"): each
//! ENABLED version of a key is a secret-key object or a public/private pair; this module
//! builds the daemon's view of an object's attributes from the published catalog (never
//! the token: the token's own attributes carry Keyward's internal ids and labels).
//!
//! - `CKA_ID`: asymmetric keys, SHA-1 of the public key value as NSS computes it (EC: the
//!   uncompressed point inside `CKA_EC_POINT`; RSA: the modulus bytes); symmetric keys, the
//!   first 16 bytes of SHA-256 of the version's full name.
//! - `CKA_LABEL`: the key id for the primary version, `keyid@vN` for the others.
//! - Keys made through the module (`PKCS11_GENERIC`) show the client's `CKA_ID` and
//!   `CKA_LABEL` byte-exact and the usage flags of its template instead.
//! - Usage flags are true to what the key's purpose allows; `CKA_SENSITIVE` is always TRUE,
//!   `CKA_COPYABLE` and `CKA_DERIVE` always FALSE; `CKA_VALUE` of a secret or private key is
//!   sensitive; public values need viewPublicKey or a use permission (design §4's table).

use super::ck::*;
use crate::catalog::{GenericAttrs, KeyEntry, VersionEntry};
use crate::policy::{CryptoKeyName, PermSet, ResourceName};
use crate::store::keys::{PublicHalf, VersionState};
pub use keyward_token::public_key::PublicValues;
use keyward_token::GenericKind;
use keyward_wire::keys::{Algorithm, KeyKind, Purpose};
use keyward_wire::pkcs11::{AttrResult, AttrValue, Attribute, Blob};
use sha2::{Digest, Sha256};

/// Which object of a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Half {
    /// The secret key of a symmetric version.
    Secret,
    /// The public half of a pair.
    Public,
    /// The private half of a pair.
    Private,
}

impl Half {
    /// `CKA_CLASS`.
    pub fn class(self) -> u64 {
        match self {
            Half::Secret => CKO_SECRET_KEY,
            Half::Public => CKO_PUBLIC_KEY,
            Half::Private => CKO_PRIVATE_KEY,
        }
    }

    /// `CKA_PRIVATE`: private and secret objects are invisible before login.
    pub fn is_private(self) -> bool {
        !matches!(self, Half::Public)
    }
}

/// What identifies an object across policy and catalog changes: the handle tables map
/// handles to these.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// The key.
    pub key: CryptoKeyName,
    /// The version number.
    pub version: u64,
    /// Which object of the version.
    pub half: Half,
}

impl ObjectKey {
    /// The version's resource name, for audit records.
    pub fn version_name(&self) -> String {
        ResourceName::Version(self.key.clone(), self.version).to_string()
    }
}

/// One object as the daemon shows it, borrowed from the published catalog.
#[derive(Debug, Clone)]
pub struct ObjectView<'a> {
    /// Its identity.
    pub id: ObjectKey,
    /// The key.
    pub key: &'a KeyEntry,
    /// The version.
    pub version: &'a VersionEntry,
    /// The key's purpose.
    pub purpose: Purpose,
    /// The key's algorithm (`None` for PKCS11_GENERIC keys).
    pub algorithm: Option<Algorithm>,
    /// The public values of an asymmetric key.
    pub public: Option<PublicValues>,
    /// What the principal holds on the key.
    pub perms: PermSet,
    /// The PKCS#11 side of a key made through the module.
    pub generic: Option<&'a GenericAttrs>,
    /// Was the key made by the calling module instance (design §4's creator exception)?
    pub creator: bool,
    /// What a client did to the public half of this version.
    pub public_half: Option<PublicHalf>,
}

/// What the catalog does not say about a version's objects.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extra<'a> {
    /// The PKCS#11 side of a generic key.
    pub generic: Option<&'a GenericAttrs>,
    /// Made by the calling instance.
    pub creator: bool,
    /// What a client did to the public half.
    pub public_half: Option<PublicHalf>,
}

/// The objects of one version (none unless it is ENABLED and has a token object).
pub fn version_objects<'a>(
    key: &'a KeyEntry,
    version: &'a VersionEntry,
    perms: PermSet,
    extra: Extra<'a>,
) -> Vec<ObjectView<'a>> {
    if version.token_id.is_none() {
        return Vec::new();
    }
    let Ok(purpose) = key.purpose.parse::<Purpose>() else {
        return Vec::new();
    };
    let algorithm = key.algorithm.as_deref().and_then(|a| a.parse().ok());
    let public = version
        .public_key
        .as_deref()
        .and_then(PublicValues::from_spki);
    let halves: &[Half] = if version.public_key.is_some() {
        &[Half::Public, Half::Private]
    } else {
        &[Half::Secret]
    };
    halves
        .iter()
        .map(|&half| ObjectView {
            id: ObjectKey {
                key: key.name.clone(),
                version: version.version,
                half,
            },
            key,
            version,
            purpose,
            algorithm,
            public: public.clone(),
            perms,
            generic: extra.generic,
            creator: extra.creator,
            public_half: extra.public_half,
        })
        .collect()
}

/// The usage flags of an object: (encrypt, decrypt, sign, verify).
pub fn usage(purpose: Purpose, half: Half) -> (bool, bool, bool, bool) {
    match (purpose, half) {
        (Purpose::EncryptDecrypt, Half::Secret) => (true, true, false, false),
        (Purpose::Mac, Half::Secret) => (false, false, true, true),
        (Purpose::AsymmetricSign, Half::Private) => (false, false, true, false),
        (Purpose::AsymmetricSign, Half::Public) => (false, false, false, true),
        (Purpose::AsymmetricDecrypt, Half::Private) => (false, true, false, false),
        (Purpose::AsymmetricDecrypt, Half::Public) => (true, false, false, false),
        // PKCS11_GENERIC keys carry their template's flags (ObjectView::flags); nothing is
        // claimed without them.
        _ => (false, false, false, false),
    }
}

impl ObjectView<'_> {
    /// Is the version usable (ENABLED)?
    pub fn enabled(&self) -> bool {
        self.version.state == VersionState::Enabled
    }

    /// Is the object listed (design §4 "Destroying a pair")? Objects of ENABLED versions,
    /// but not a public half a client destroyed; and the public half of a version whose
    /// private half a client destroyed, until it is destroyed itself.
    pub fn shown(&self) -> bool {
        match (self.version.state, self.id.half, self.public_half) {
            (VersionState::Enabled, Half::Public, Some(PublicHalf::Destroyed)) => false,
            (VersionState::Enabled, ..) => true,
            (VersionState::DestroyScheduled, Half::Public, Some(PublicHalf::Kept)) => true,
            _ => false,
        }
    }

    /// The usage flags of this object: (encrypt, decrypt, sign, verify, wrap, unwrap).
    pub fn flags(&self) -> (bool, bool, bool, bool, bool, bool) {
        let Some(g) = self.generic else {
            let (e, d, s, v) = usage(self.purpose, self.id.half);
            return (e, d, s, v, false, false);
        };
        let u = g.usage;
        // Only what the key's kind can do is claimed (design §2: flags are true).
        match (g.kind, self.id.half) {
            (GenericKind::Aes(_), _) => (u.encrypt, u.decrypt, false, false, u.wrap, u.unwrap),
            (GenericKind::Secret(_), _) => (false, false, u.sign, u.verify, false, false),
            (GenericKind::Ec(_), Half::Private) => (false, false, u.sign, false, false, false),
            (GenericKind::Ec(_), _) => (false, false, false, u.verify, false, false),
            (GenericKind::Rsa(_), Half::Private) => {
                (false, u.decrypt, u.sign, false, false, u.unwrap)
            }
            (GenericKind::Rsa(_), _) => (u.encrypt, false, false, u.verify, u.wrap, false),
        }
    }

    /// The internal CKA_ID of the version in the backing token.
    pub fn token_id(&self) -> &[u8] {
        self.version.token_id.as_deref().unwrap_or_default()
    }

    /// May the principal read public values (viewPublicKey or any use permission)?
    pub fn sees_public_values(&self) -> bool {
        self.perms.reads_public_values() || self.creator
    }

    /// `CKA_ID` (design §4).
    pub fn cka_id(&self) -> Vec<u8> {
        if let Some(g) = self.generic {
            return match self.id.half {
                Half::Public => g.pub_cka_id.clone(),
                _ => g.cka_id.clone(),
            };
        }
        match &self.public {
            Some(p) => p.nss_id(),
            None => Sha256::digest(self.id.version_name().as_bytes())[..16].to_vec(),
        }
    }

    /// `CKA_LABEL`: the client's for a generic key; the key id for the primary version,
    /// `keyid@vN` for others.
    pub fn label(&self) -> Vec<u8> {
        if let Some(g) = self.generic {
            return match self.id.half {
                Half::Public => g.pub_cka_label.clone(),
                _ => g.cka_label.clone(),
            };
        }
        if self.key.primary_version == Some(self.version.version) {
            self.key.name.id.clone().into_bytes()
        } else {
            format!("{}@v{}", self.key.name.id, self.version.version).into_bytes()
        }
    }

    fn value_len(&self) -> Option<usize> {
        match (
            self.algorithm.map(|a| a.kind()),
            self.generic.map(|g| g.kind),
        ) {
            (Some(KeyKind::Aes(n) | KeyKind::Hmac(n)), _) => Some(n),
            (None, Some(GenericKind::Aes(n) | GenericKind::Secret(n))) => Some(n),
            _ => None,
        }
    }

    /// Is the key an RSA key?
    pub fn key_is_rsa(&self) -> bool {
        self.key_type() == Some(CKK_RSA)
    }

    /// Is the key an AES key?
    pub fn key_is_aes(&self) -> bool {
        self.key_type() == Some(CKK_AES)
    }

    fn key_type(&self) -> Option<u64> {
        match self.algorithm.map(|a| a.kind()) {
            Some(KeyKind::Aes(_)) => Some(CKK_AES),
            Some(KeyKind::Hmac(_)) => Some(CKK_GENERIC_SECRET),
            Some(KeyKind::Ec(_)) => Some(CKK_EC),
            Some(KeyKind::Rsa(_)) => Some(CKK_RSA),
            None => match (&self.public, self.generic.map(|g| g.kind)) {
                (Some(PublicValues::Rsa { .. }), _) => Some(CKK_RSA),
                (Some(PublicValues::Ec { .. }), _) => Some(CKK_EC),
                (None, Some(GenericKind::Aes(_))) => Some(CKK_AES),
                (None, Some(GenericKind::Secret(_))) => Some(CKK_GENERIC_SECRET),
                (None, _) => None,
            },
        }
    }

    /// The attribute `ty` as the daemon reports it.
    pub fn attribute(&self, ty: u64) -> AttrResult {
        let half = self.id.half;
        let (enc, dec, sign, verify, wrap, unwrap) = self.flags();
        let local = !self.version.imported && self.generic.is_none_or(|g| g.local);
        let secretish = half != Half::Public;
        let b = |v: bool| AttrResult::Value(AttrValue::Bool(v));
        let u = |v: u64| AttrResult::Value(AttrValue::Ulong(v));
        let bytes = |v: Vec<u8>| AttrResult::Value(AttrValue::Bytes(Blob::new(v)));
        let public_value = |v: Option<Vec<u8>>| match v {
            None => AttrResult::TypeInvalid,
            Some(_) if !self.sees_public_values() => AttrResult::Sensitive,
            Some(v) => bytes(v),
        };
        let rsa = match &self.public {
            Some(PublicValues::Rsa { modulus, exponent }) => Some((modulus, exponent)),
            _ => None,
        };
        let ec = match &self.public {
            Some(PublicValues::Ec { params, point }) => Some((params, point)),
            _ => None,
        };
        match ty {
            CKA_CLASS => u(half.class()),
            CKA_TOKEN => b(true),
            CKA_PRIVATE => b(half.is_private()),
            CKA_LABEL => bytes(self.label()),
            CKA_ID => bytes(self.cka_id()),
            CKA_KEY_TYPE => self.key_type().map_or(AttrResult::TypeInvalid, u),
            CKA_ENCRYPT => b(enc),
            CKA_DECRYPT => b(dec),
            CKA_SIGN => b(sign),
            CKA_VERIFY => b(verify),
            CKA_WRAP => b(wrap),
            CKA_UNWRAP => b(unwrap),
            CKA_SIGN_RECOVER | CKA_VERIFY_RECOVER | CKA_DERIVE => b(false),
            // CKA_ID and CKA_LABEL of a generic key may change (C_SetAttributeValue).
            CKA_MODIFIABLE => b(self.generic.is_some()),
            CKA_COPYABLE => b(false),
            CKA_DESTROYABLE => b(true),
            CKA_LOCAL => b(local),
            CKA_SENSITIVE if secretish => b(true),
            CKA_ALWAYS_SENSITIVE if secretish => b(local),
            CKA_EXTRACTABLE if secretish => b(self.key.exportable),
            CKA_NEVER_EXTRACTABLE if secretish => b(!self.key.exportable && local),
            CKA_ALWAYS_AUTHENTICATE if secretish => b(false),
            CKA_VALUE if secretish => AttrResult::Sensitive,
            CKA_VALUE_LEN if half == Half::Secret => match self.value_len() {
                Some(n) => u(u64::try_from(n).unwrap_or(0)),
                None => AttrResult::TypeInvalid,
            },
            CKA_MODULUS => public_value(rsa.map(|(n, _)| n.clone())),
            CKA_PUBLIC_EXPONENT => public_value(rsa.map(|(_, e)| e.clone())),
            CKA_MODULUS_BITS => match rsa {
                Some((n, _)) => u(modulus_bits(n)),
                None => AttrResult::TypeInvalid,
            },
            CKA_EC_PARAMS => ec.map_or(AttrResult::TypeInvalid, |(p, _)| bytes(p.clone())),
            CKA_EC_POINT => public_value(ec.and_then(|(_, p)| PublicValues::ec_point_der(p))),
            CKA_PUBLIC_KEY_INFO => public_value(self.version.public_key.clone()),
            _ => AttrResult::TypeInvalid,
        }
    }

    /// Does the object match a FindObjects template? An attribute the principal may not read
    /// never matches (no oracle on hidden values).
    pub fn matches(&self, template: &[Attribute]) -> bool {
        template.iter().all(|a| match self.attribute(a.ty) {
            AttrResult::Value(v) => v == a.value,
            _ => false,
        })
    }
}

fn modulus_bits(n: &[u8]) -> u64 {
    let Some(first) = n.iter().position(|b| *b != 0) else {
        return 0;
    };
    let len = u64::try_from(n.len() - first).unwrap_or(0);
    len * 8 - u64::from(n[first].leading_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modulus_bits_counts_from_the_first_set_bit() {
        let n = vec![0xC3u8; 256];
        assert_eq!(modulus_bits(&n), 2048);
        assert_eq!(modulus_bits(&[0, 1]), 1);
    }
}
