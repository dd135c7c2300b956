//! Public keys out of the token as DER `SubjectPublicKeyInfo` (RFC 5280) and PEM, built with
//! the `spki`/`der` crates from `CKA_MODULUS`/`CKA_PUBLIC_EXPONENT` (RSA) or
//! `CKA_EC_PARAMS`/`CKA_EC_POINT` (EC); and ECDSA signature encodings (PKCS#11's raw `r || s`
//! versus the DER `ECDSA-Sig-Value` that X.509 and OpenSSL use).
//!
//! Pure functions over bytes: no token calls here.

use crate::error::{Result, TokenError};
use sha1::{Digest, Sha1};
use spki::der::asn1::{AnyRef, BitString, OctetStringRef, UintRef};
use spki::der::{Decode, Encode, Header, Reader, SliceReader, Tag};
use spki::{
    AlgorithmIdentifierOwned, ObjectIdentifier, SubjectPublicKeyInfoOwned, SubjectPublicKeyInfoRef,
};

/// `rsaEncryption` (PKCS#1).
pub const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// `id-ecPublicKey` (RFC 5480).
pub const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// `secp256r1` / P-256.
pub const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// `secp384r1` / P-384.
pub const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// The NIST curves Keyward makes keys on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    /// NIST P-256 (secp256r1).
    P256,
    /// NIST P-384 (secp384r1).
    P384,
}

impl Curve {
    /// The curve of a field size in bits (256 or 384), as `KeyKind::Ec` carries it.
    pub fn from_bits(bits: usize) -> Option<Curve> {
        match bits {
            256 => Some(Curve::P256),
            384 => Some(Curve::P384),
            _ => None,
        }
    }

    /// The named-curve OID.
    pub fn oid(self) -> ObjectIdentifier {
        match self {
            Curve::P256 => SECP256R1,
            Curve::P384 => SECP384R1,
        }
    }

    /// Bytes of one field element (32 or 48).
    pub fn field_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }

    /// `CKA_EC_PARAMS` for this curve: the DER of its named-curve OID.
    pub fn ec_params(self) -> Vec<u8> {
        // An OID constant always encodes.
        self.oid().to_der().unwrap_or_default()
    }

    /// The curve named by DER `CKA_EC_PARAMS` (a named-curve OID), if it is one of ours.
    pub fn from_ec_params(params: &[u8]) -> Option<Curve> {
        let oid = ObjectIdentifier::from_der(params).ok()?;
        [Curve::P256, Curve::P384]
            .into_iter()
            .find(|c| c.oid() == oid)
    }

    /// Length of an uncompressed point `04 || X || Y`.
    fn point_len(self) -> usize {
        1 + 2 * self.field_len()
    }
}

fn der_err(what: &str, e: spki::der::Error) -> TokenError {
    TokenError::BadTokenData(format!("{what}: {e}"))
}

/// DER `SubjectPublicKeyInfo` of an RSA key from its big-endian modulus and public exponent
/// (`rsaEncryption`, NULL parameters; the key is the PKCS#1 `RSAPublicKey`).
pub fn rsa_spki_der(modulus: &[u8], public_exponent: &[u8]) -> Result<Vec<u8>> {
    let n = UintRef::new(modulus).map_err(|e| der_err("RSA modulus", e))?;
    let e = UintRef::new(public_exponent).map_err(|e| der_err("RSA public exponent", e))?;
    let rsa_public_key = der_integer_pair(n, e).map_err(|e| der_err("RSAPublicKey", e))?;
    let spki = SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: RSA_ENCRYPTION,
            parameters: Some(AnyRef::NULL.into()),
        },
        subject_public_key: BitString::from_bytes(&rsa_public_key)
            .map_err(|e| der_err("RSA key bits", e))?,
    };
    spki.to_der()
        .map_err(|e| der_err("RSA SubjectPublicKeyInfo", e))
}

/// The uncompressed point of `CKA_EC_POINT`. PKCS#11 says the attribute is the DER of an
/// OCTET STRING holding the point (SoftHSM2 does this); some tokens return the bare point.
/// Because an OCTET STRING's tag is also 0x04, the two are told apart by the curve's point
/// length: a wrapped point parses as one OCTET STRING whose content has exactly that length.
pub fn unwrap_ec_point(curve: Curve, ec_point: &[u8]) -> Result<Vec<u8>> {
    let want = curve.point_len();
    if let Ok(inner) = OctetStringRef::from_der(ec_point) {
        let inner = inner.as_bytes();
        if inner.len() == want && inner[0] == 0x04 {
            return Ok(inner.to_vec());
        }
    }
    if ec_point.len() == want && ec_point[0] == 0x04 {
        return Ok(ec_point.to_vec());
    }
    Err(TokenError::BadTokenData(format!(
        "CKA_EC_POINT ({} bytes) is not an uncompressed {curve:?} point, bare or in an OCTET STRING",
        ec_point.len()
    )))
}

/// DER `SubjectPublicKeyInfo` of an EC key from `CKA_EC_PARAMS` (named-curve OID) and
/// `CKA_EC_POINT` (wrapped or bare, see [`unwrap_ec_point`]).
pub fn ec_spki_der(ec_params: &[u8], ec_point: &[u8]) -> Result<Vec<u8>> {
    let curve = Curve::from_ec_params(ec_params).ok_or_else(|| {
        TokenError::BadTokenData("CKA_EC_PARAMS is not the OID of P-256 or P-384".into())
    })?;
    let point = unwrap_ec_point(curve, ec_point)?;
    let spki = SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: ID_EC_PUBLIC_KEY,
            parameters: Some(curve.oid().into()),
        },
        subject_public_key: BitString::from_bytes(&point).map_err(|e| der_err("EC point", e))?,
    };
    spki.to_der()
        .map_err(|e| der_err("EC SubjectPublicKeyInfo", e))
}

/// PEM (`-----BEGIN PUBLIC KEY-----`, LF line endings) of a DER `SubjectPublicKeyInfo`.
pub fn spki_pem(spki_der: &[u8]) -> Result<String> {
    spki::der::pem::encode_string("PUBLIC KEY", spki::der::pem::LineEnding::LF, spki_der)
        .map_err(|e| TokenError::BadTokenData(format!("PEM encoding: {e}")))
}

/// DER `ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }` from PKCS#11's raw `r || s`.
pub fn ecdsa_raw_to_der(raw: &[u8]) -> Result<Vec<u8>> {
    if raw.is_empty() || raw.len() % 2 != 0 {
        return Err(TokenError::InvalidArgument(format!(
            "raw ECDSA signature of odd or zero length {}",
            raw.len()
        )));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let r = UintRef::new(r).map_err(|e| der_err("ECDSA r", e))?;
    let s = UintRef::new(s).map_err(|e| der_err("ECDSA s", e))?;
    der_integer_pair(r, s).map_err(|e| der_err("ECDSA-Sig-Value", e))
}

/// PKCS#11's raw `r || s` (each left-padded to `field_len` bytes) from a DER
/// `ECDSA-Sig-Value`.
pub fn ecdsa_der_to_raw(der: &[u8], field_len: usize) -> Result<Vec<u8>> {
    let bad = |what: String| TokenError::InvalidArgument(format!("ECDSA signature: {what}"));
    let mut reader = SliceReader::new(der).map_err(|e| bad(e.to_string()))?;
    let (r, s) = reader
        .sequence(|seq| Ok((UintRef::decode(seq)?, UintRef::decode(seq)?)))
        .map_err(|e| bad(e.to_string()))?;
    reader.finish(()).map_err(|e| bad(e.to_string()))?;
    let mut out = vec![0u8; 2 * field_len];
    for (i, v) in [r.as_bytes(), s.as_bytes()].into_iter().enumerate() {
        if v.len() > field_len {
            return Err(bad(format!(
                "integer of {} bytes exceeds {field_len}",
                v.len()
            )));
        }
        let end = (i + 1) * field_len;
        out[end - v.len()..end].copy_from_slice(v);
    }
    Ok(out)
}

/// DER of `SEQUENCE { INTEGER a, INTEGER b }` (RSAPublicKey, ECDSA-Sig-Value).
fn der_integer_pair(a: UintRef<'_>, b: UintRef<'_>) -> spki::der::Result<Vec<u8>> {
    let len = (a.encoded_len()? + b.encoded_len()?)?;
    let mut out = Vec::new();
    Header::new(Tag::Sequence, len)?.encode_to_vec(&mut out)?;
    a.encode_to_vec(&mut out)?;
    b.encode_to_vec(&mut out)?;
    Ok(out)
}

/// The public values of a public key, parsed from its DER SPKI: the inverse of
/// [`rsa_spki_der`] and [`ec_spki_der`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicValues {
    /// RSA: the modulus and public exponent, big-endian without leading zeros.
    Rsa {
        /// `CKA_MODULUS`.
        modulus: Vec<u8>,
        /// `CKA_PUBLIC_EXPONENT`.
        exponent: Vec<u8>,
    },
    /// EC: the named-curve OID (DER) and the uncompressed point.
    Ec {
        /// `CKA_EC_PARAMS`.
        params: Vec<u8>,
        /// The uncompressed point `04 || X || Y`.
        point: Vec<u8>,
    },
}

impl PublicValues {
    /// Parses a DER SPKI (rsaEncryption or id-ecPublicKey with a named curve).
    pub fn from_spki(der: &[u8]) -> Option<PublicValues> {
        let spki = SubjectPublicKeyInfoRef::from_der(der).ok()?;
        let key = spki.subject_public_key.as_bytes()?;
        let oid = spki.algorithm.oid;
        if oid == RSA_ENCRYPTION {
            let mut r = SliceReader::new(key).ok()?;
            let (n, e) = r
                .sequence(|seq| {
                    let n = UintRef::decode(seq)?;
                    let e = UintRef::decode(seq)?;
                    Ok((n.as_bytes().to_vec(), e.as_bytes().to_vec()))
                })
                .ok()?;
            Some(PublicValues::Rsa {
                modulus: n,
                exponent: e,
            })
        } else if oid == ID_EC_PUBLIC_KEY {
            let params = spki.algorithm.parameters?.to_der().ok()?;
            Some(PublicValues::Ec {
                params,
                point: key.to_vec(),
            })
        } else {
            None
        }
    }

    /// `CKA_ID` as NSS computes it: SHA-1 of the modulus or of the point.
    pub fn nss_id(&self) -> Vec<u8> {
        match self {
            PublicValues::Rsa { modulus, .. } => Sha1::digest(modulus).to_vec(),
            PublicValues::Ec { point, .. } => Sha1::digest(point).to_vec(),
        }
    }

    /// `CKA_EC_POINT`: the DER OCTET STRING holding the point.
    pub fn ec_point_der(point: &[u8]) -> Option<Vec<u8>> {
        OctetStringRef::new(point).ok()?.to_der().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_spki_known_answer() {
        // n = 0xC5 (high bit set, so DER adds a 0x00), e = 65537.
        let der = rsa_spki_der(&[0xc5], &[0x01, 0x00, 0x01]).unwrap();
        let expected = [
            0x30, 0x1d, // SubjectPublicKeyInfo
            0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05,
            0x00, // rsaEncryption, NULL
            0x03, 0x0c, 0x00, // BIT STRING, 0 unused bits
            0x30, 0x09, 0x02, 0x02, 0x00, 0xc5, 0x02, 0x03, 0x01, 0x00, 0x01, // RSAPublicKey
        ];
        assert_eq!(der, expected);
        // Leading zeros of a token's big-endian value are not kept.
        assert_eq!(
            rsa_spki_der(&[0x00, 0xc5], &[0x01, 0x00, 0x01]).unwrap(),
            expected
        );
    }

    #[test]
    fn ec_point_wrapped_and_bare() {
        let mut point = vec![0x04];
        point.extend((0..64).map(|i| i as u8));
        let mut wrapped = vec![0x04, 65];
        wrapped.extend(&point);
        assert_eq!(unwrap_ec_point(Curve::P256, &wrapped).unwrap(), point);
        assert_eq!(unwrap_ec_point(Curve::P256, &point).unwrap(), point);
        // A bare point whose X starts with 63 parses as a 63-byte OCTET STRING: still bare.
        let mut tricky = vec![0x04, 63];
        tricky.extend((0..63).map(|i| i as u8));
        assert_eq!(unwrap_ec_point(Curve::P256, &tricky).unwrap(), tricky);
        assert!(unwrap_ec_point(Curve::P384, &wrapped).is_err());
        assert!(unwrap_ec_point(Curve::P256, &point[..64]).is_err());

        let spki = ec_spki_der(&Curve::P256.ec_params(), &wrapped).unwrap();
        let parsed = SubjectPublicKeyInfoOwned::from_der(&spki).unwrap();
        assert_eq!(parsed.algorithm.oid, ID_EC_PUBLIC_KEY);
        assert_eq!(parsed.subject_public_key.raw_bytes(), point.as_slice());
        assert!(ec_spki_der(&RSA_ENCRYPTION.to_der().unwrap(), &wrapped).is_err());
        assert!(spki_pem(&spki)
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----\n"));
    }

    #[test]
    fn ec_params_round_trip() {
        for c in [Curve::P256, Curve::P384] {
            assert_eq!(Curve::from_ec_params(&c.ec_params()), Some(c));
        }
        assert_eq!(
            Curve::P256.ec_params(),
            [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]
        );
        assert_eq!(
            Curve::P384.ec_params(),
            [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22]
        );
    }

    #[test]
    fn ecdsa_signature_encodings() {
        let mut raw = vec![0u8; 64];
        raw[0] = 0x80; // r has the high bit set: DER needs a leading zero
        raw[31] = 1;
        raw[63] = 2; // s = 2 (leading zeros stripped)
        let der = ecdsa_raw_to_der(&raw).unwrap();
        assert_eq!(&der[..4], &[0x30, 0x26, 0x02, 0x21]);
        assert_eq!(&der[der.len() - 3..], &[0x02, 0x01, 0x02]);
        assert_eq!(ecdsa_der_to_raw(&der, 32).unwrap(), raw);
        assert!(ecdsa_der_to_raw(&der, 16).is_err());
        assert!(ecdsa_raw_to_der(&raw[..63]).is_err());
        let mut trailing = der.clone();
        trailing.push(0);
        assert!(ecdsa_der_to_raw(&trailing, 32).is_err());
    }

    #[test]
    fn ec_spki_parses_and_ids_like_nss() {
        let mut point = vec![4u8];
        point.extend([7u8; 64]);
        let params = Curve::P256.ec_params();
        let mut wrapped = vec![0x04, 65];
        wrapped.extend(&point);
        let der = ec_spki_der(&params, &wrapped).unwrap();
        let p = PublicValues::from_spki(&der).unwrap();
        assert_eq!(
            p,
            PublicValues::Ec {
                params: params.clone(),
                point: point.clone()
            }
        );
        assert_eq!(p.nss_id(), Sha1::digest(&point).to_vec());
        assert_eq!(PublicValues::ec_point_der(&point).unwrap(), wrapped);
    }

    #[test]
    fn rsa_spki_parses() {
        let n = vec![0xC3u8; 256];
        let der = rsa_spki_der(&n, &[1, 0, 1]).unwrap();
        let p = PublicValues::from_spki(&der).unwrap();
        assert_eq!(
            p,
            PublicValues::Rsa {
                modulus: n.clone(),
                exponent: vec![1, 0, 1]
            }
        );
    }
}
