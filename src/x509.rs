//! X.509 certificates and PKCS#10 requests (design §4 "Objects", issue 7): parsing the
//! certificates clients store as `CKO_CERTIFICATE` objects, and building the
//! `TBSCertificate` / `CertificationRequestInfo` that `keywardctl key cert create` has a token
//! key sign (with the `x509-cert`, `der` and `spki` crates; the signature itself is made in the
//! token through keywardd, never here).

use der::asn1::{BitString, OctetString};
use der::{Any, Decode, Encode};
use sha1::{Digest, Sha1};
use spki::{AlgorithmIdentifierOwned, ObjectIdentifier, SubjectPublicKeyInfoOwned};
use std::str::FromStr;
use std::time::{Duration, SystemTime};
use x509_cert::certificate::{CertificateInner, Raw, TbsCertificate, Version};
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, BasicConstraints, SubjectKeyIdentifier};
use x509_cert::ext::{AsExtension, Extension};
use x509_cert::name::Name;
use x509_cert::request::{CertReq, CertReqInfo};
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};
use x509_cert::Certificate;

/// What PKCS#11 shows of a certificate, from its DER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// `CKA_SUBJECT`: the subject Name, DER.
    pub subject: Vec<u8>,
    /// `CKA_ISSUER`: the issuer Name, DER.
    pub issuer: Vec<u8>,
    /// `CKA_SERIAL_NUMBER`: the serial number as a DER INTEGER.
    pub serial: Vec<u8>,
    /// The subject public key info, DER.
    pub spki: Vec<u8>,
    /// The subject, as text (for listings).
    pub subject_text: String,
    /// notAfter, unix seconds.
    pub not_after: u64,
}

/// Parses one DER certificate (any serial length: clients store what CAs issue).
pub fn parse_certificate(der: &[u8]) -> Result<CertInfo, String> {
    let cert = CertificateInner::<Raw>::from_der(der)
        .map_err(|e| format!("not a DER X.509 certificate: {e}"))?;
    let tbs = &cert.tbs_certificate;
    let enc = |r: der::Result<Vec<u8>>| r.map_err(|e| format!("cannot encode: {e}"));
    Ok(CertInfo {
        subject: enc(tbs.subject.to_der())?,
        issuer: enc(tbs.issuer.to_der())?,
        serial: enc(tbs.serial_number.to_der())?,
        spki: enc(tbs.subject_public_key_info.to_der())?,
        subject_text: tbs.subject.to_string(),
        not_after: tbs.validity.not_after.to_unix_duration().as_secs(),
    })
}

/// The certificates in `bytes`: PEM blocks (`CERTIFICATE`), or one DER certificate.
pub fn read_certificates(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    if bytes.first() == Some(&0x30) {
        return Ok(vec![bytes.to_vec()]);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "neither PEM nor DER".to_string())?;
    let mut out = Vec::new();
    let mut rest = text;
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    while let Some(start) = rest.find(BEGIN) {
        let after = &rest[start..];
        let end = after
            .find(END)
            .ok_or_else(|| "a PEM certificate has no END line".to_string())?;
        let block = &after[..end + END.len()];
        let (label, der) =
            der::pem::decode_vec(block.as_bytes()).map_err(|e| format!("bad PEM: {e}"))?;
        if label != "CERTIFICATE" {
            return Err(format!("unexpected PEM label {label}"));
        }
        out.push(der);
        rest = &after[end + END.len()..];
    }
    if out.is_empty() {
        return Err("no certificate found (expected PEM CERTIFICATE blocks or DER)".into());
    }
    Ok(out)
}

/// PEM of a DER object.
pub fn pem(label: &str, der: &[u8]) -> Result<String, String> {
    der::pem::encode_string(label, der::pem::LineEnding::LF, der).map_err(|e| e.to_string())
}

/// How a key signs certificates and requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigAlg {
    /// ecdsa-with-SHA256 (P-256).
    EcdsaSha256,
    /// ecdsa-with-SHA384 (P-384).
    EcdsaSha384,
    /// sha256WithRSAEncryption.
    RsaPkcs1Sha256,
    /// RSASSA-PSS, SHA-256, MGF1-SHA-256, salt 32.
    RsaPssSha256,
}

const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const SHA256_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const RSASSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");

/// RSASSA-PSS-params: SHA-256, MGF1 with SHA-256, salt length 32, trailer 1 (RFC 4055).
const PSS_SHA256_PARAMS: [u8; 54] = [
    0x30, 0x34, 0xa0, 0x0f, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
    0x01, 0x05, 0x00, 0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01,
    0x01, 0x08, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0xa2, 0x03, 0x02, 0x01, 0x20,
];

impl SigAlg {
    /// The signature algorithm of a Keyward algorithm name (`EC_SIGN_P256_SHA256`, ...).
    pub fn for_algorithm(algorithm: &str) -> Option<SigAlg> {
        match algorithm {
            "EC_SIGN_P256_SHA256" => Some(SigAlg::EcdsaSha256),
            "EC_SIGN_P384_SHA384" => Some(SigAlg::EcdsaSha384),
            a if a.starts_with("RSA_SIGN_PKCS1_") && a.ends_with("_SHA256") => {
                Some(SigAlg::RsaPkcs1Sha256)
            }
            a if a.starts_with("RSA_SIGN_PSS_") && a.ends_with("_SHA256") => {
                Some(SigAlg::RsaPssSha256)
            }
            _ => None,
        }
    }

    /// The signature algorithm for a public key of a key made through the PKCS#11 module
    /// (no algorithm name), from its SubjectPublicKeyInfo (DER): EC P-256 → ECDSA with
    /// SHA-256, EC P-384 → ECDSA with SHA-384, RSA → sha256WithRSAEncryption (PKCS#1 v1.5).
    pub fn for_spki(spki_der: &[u8]) -> Result<SigAlg, String> {
        use keyward_token::public_key::{ID_EC_PUBLIC_KEY, RSA_ENCRYPTION, SECP256R1, SECP384R1};
        let spki = SubjectPublicKeyInfoOwned::from_der(spki_der)
            .map_err(|e| format!("not a SubjectPublicKeyInfo: {e}"))?;
        let oid = spki.algorithm.oid;
        if oid == RSA_ENCRYPTION {
            return Ok(SigAlg::RsaPkcs1Sha256);
        }
        if oid != ID_EC_PUBLIC_KEY {
            return Err(format!(
                "a public key of algorithm {oid}: certificates are made for EC P-256, EC P-384 \
                 and RSA keys"
            ));
        }
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        match curve {
            Some(c) if c == SECP256R1 => Ok(SigAlg::EcdsaSha256),
            Some(c) if c == SECP384R1 => Ok(SigAlg::EcdsaSha384),
            Some(c) => Err(format!(
                "an EC key on curve {c}: certificates are made for P-256 and P-384 keys"
            )),
            None => Err(
                "an EC key without a named curve: certificates are made for P-256 \
                         and P-384 keys"
                    .into(),
            ),
        }
    }

    /// Its AlgorithmIdentifier.
    pub fn identifier(self) -> Result<AlgorithmIdentifierOwned, String> {
        Ok(match self {
            SigAlg::EcdsaSha256 => AlgorithmIdentifierOwned {
                oid: ECDSA_SHA256,
                parameters: None,
            },
            SigAlg::EcdsaSha384 => AlgorithmIdentifierOwned {
                oid: ECDSA_SHA384,
                parameters: None,
            },
            SigAlg::RsaPkcs1Sha256 => AlgorithmIdentifierOwned {
                oid: SHA256_RSA,
                parameters: Some(Any::null()),
            },
            SigAlg::RsaPssSha256 => AlgorithmIdentifierOwned {
                oid: RSASSA_PSS,
                parameters: Some(Any::from_der(&PSS_SHA256_PARAMS).map_err(|e| e.to_string())?),
            },
        })
    }
}

fn der_err(e: der::Error) -> String {
    e.to_string()
}

/// Parses an RFC 4514 subject (`CN=web,O=Example`).
pub fn parse_subject(s: &str) -> Result<Name, String> {
    Name::from_str(s).map_err(|e| format!("invalid subject '{s}' (use e.g. CN=web,O=Example): {e}"))
}

fn key_identifier(spki: &SubjectPublicKeyInfoOwned) -> Vec<u8> {
    Sha1::digest(spki.subject_public_key.raw_bytes()).to_vec()
}

/// The `TBSCertificate` of a self-signed v3 certificate for `spki_der`, valid from `now` for
/// `days` days, with the extensions `openssl req -x509` adds (subject and authority key
/// identifiers, basicConstraints CA:TRUE critical). `serial` is positive (a leading zero bit).
pub fn self_signed_tbs(
    spki_der: &[u8],
    subject: &Name,
    days: u32,
    serial: &[u8],
    now: SystemTime,
    alg: SigAlg,
) -> Result<Vec<u8>, String> {
    let spki = SubjectPublicKeyInfoOwned::from_der(spki_der).map_err(der_err)?;
    let not_before = Time::try_from(now).map_err(der_err)?;
    let not_after =
        Time::try_from(now + Duration::from_secs(u64::from(days) * 86_400)).map_err(der_err)?;
    let kid = key_identifier(&spki);
    let ski = SubjectKeyIdentifier(OctetString::new(kid.clone()).map_err(der_err)?);
    let aki = AuthorityKeyIdentifier {
        key_identifier: Some(OctetString::new(kid).map_err(der_err)?),
        authority_cert_issuer: None,
        authority_cert_serial_number: None,
    };
    let bc = BasicConstraints {
        ca: true,
        path_len_constraint: None,
    };
    let ext = |e: der::Result<Extension>| e.map_err(der_err);
    let extensions = vec![
        ext(ski.to_extension(subject, &[]))?,
        ext(aki.to_extension(subject, &[]))?,
        ext(bc.to_extension(subject, &[]))?,
    ];
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(serial).map_err(der_err)?,
        signature: alg.identifier()?,
        issuer: subject.clone(),
        validity: Validity {
            not_before,
            not_after,
        },
        subject: subject.clone(),
        subject_public_key_info: spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(extensions),
    };
    tbs.to_der().map_err(der_err)
}

/// The certificate: `tbs` signed with `alg` (`signature` as the algorithm defines it: DER
/// `Ecdsa-Sig-Value` for ECDSA, the raw RSA signature).
pub fn assemble_certificate(tbs: &[u8], alg: SigAlg, signature: &[u8]) -> Result<Vec<u8>, String> {
    let cert = Certificate {
        tbs_certificate: TbsCertificate::from_der(tbs).map_err(der_err)?,
        signature_algorithm: alg.identifier()?,
        signature: BitString::from_bytes(signature).map_err(der_err)?,
    };
    cert.to_der().map_err(der_err)
}

/// The `CertificationRequestInfo` (PKCS#10) for `spki_der` and `subject`, no attributes.
pub fn request_info(spki_der: &[u8], subject: &Name) -> Result<Vec<u8>, String> {
    let info = CertReqInfo {
        version: x509_cert::request::Version::V1,
        subject: subject.clone(),
        public_key: SubjectPublicKeyInfoOwned::from_der(spki_der).map_err(der_err)?,
        attributes: Default::default(),
    };
    info.to_der().map_err(der_err)
}

/// The PKCS#10 request: `info` signed with `alg`.
pub fn assemble_request(info: &[u8], alg: SigAlg, signature: &[u8]) -> Result<Vec<u8>, String> {
    let req = CertReq {
        info: CertReqInfo::from_der(info).map_err(der_err)?,
        algorithm: alg.identifier()?,
        signature: BitString::from_bytes(signature).map_err(der_err)?,
    };
    req.to_der().map_err(der_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pss_params_decode() {
        let a = SigAlg::RsaPssSha256.identifier().unwrap();
        assert_eq!(a.to_der().unwrap().len(), 2 + 11 + PSS_SHA256_PARAMS.len());
    }

    #[test]
    fn generic_keys_sign_by_their_spki() {
        use keyward_token::public_key::{ID_EC_PUBLIC_KEY, RSA_ENCRYPTION, SECP256R1, SECP384R1};
        let spki = |oid, params: Option<Any>| {
            SubjectPublicKeyInfoOwned {
                algorithm: AlgorithmIdentifierOwned {
                    oid,
                    parameters: params,
                },
                subject_public_key: BitString::from_bytes(&[4, 1, 2]).unwrap(),
            }
            .to_der()
            .unwrap()
        };
        let curve = |c: ObjectIdentifier| Some(Any::encode_from(&c).unwrap());
        assert_eq!(
            SigAlg::for_spki(&spki(ID_EC_PUBLIC_KEY, curve(SECP256R1))),
            Ok(SigAlg::EcdsaSha256)
        );
        assert_eq!(
            SigAlg::for_spki(&spki(ID_EC_PUBLIC_KEY, curve(SECP384R1))),
            Ok(SigAlg::EcdsaSha384)
        );
        assert_eq!(
            SigAlg::for_spki(&spki(RSA_ENCRYPTION, Some(Any::null()))),
            Ok(SigAlg::RsaPkcs1Sha256)
        );
        // P-521, no named curve, Ed25519, garbage: clear errors.
        let p521 = ObjectIdentifier::new_unwrap("1.3.132.0.35");
        let e = SigAlg::for_spki(&spki(ID_EC_PUBLIC_KEY, curve(p521))).unwrap_err();
        assert!(e.contains("P-256 and P-384"), "{e}");
        assert!(SigAlg::for_spki(&spki(ID_EC_PUBLIC_KEY, None)).is_err());
        let ed = ObjectIdentifier::new_unwrap("1.3.101.112");
        let e = SigAlg::for_spki(&spki(ed, None)).unwrap_err();
        assert!(e.contains("1.3.101.112"), "{e}");
        assert!(SigAlg::for_spki(b"nonsense").is_err());
    }

    #[test]
    fn subjects_parse() {
        let n = parse_subject("CN=web,O=Example").unwrap();
        assert_eq!(n.to_string(), "CN=web,O=Example");
        assert!(parse_subject("nonsense").is_err());
    }

    #[test]
    fn pem_and_der_inputs() {
        assert!(read_certificates(b"hello").is_err());
        assert_eq!(
            read_certificates(&[0x30, 0x00]).unwrap(),
            vec![vec![0x30, 0x00]]
        );
        let p = pem("CERTIFICATE", &[0x30, 0x00]).unwrap();
        let two = format!("{p}{p}");
        assert_eq!(read_certificates(two.as_bytes()).unwrap().len(), 2);
    }
}
