//! Key generation for every algorithm SoftHSM2 serves, checked through cryptoki directly:
//! custody attributes (sensitive, not extractable unless exportable, CKA_VALUE unreadable),
//! usage flags from the purpose, CKA_ID/CKA_LABEL on both halves; the public key as PEM that
//! openssl parses; listing and destroying by CKA_ID.

mod common;

use common::{fixture, hex, new_id, openssl_ok, write_file, Fixture};
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass};
use keyward_token::{KeySpec, ObjectInfo, TokenError};
use keyward_wire::keys::{Algorithm, KeyKind, Purpose};

/// Generates `algorithm` and checks everything about the objects; destroys them at the end.
fn generate_and_check(algorithm: Algorithm, exportable: bool) {
    let fx = fixture("keys");
    let id = new_id(fx);
    let label = format!(
        "{}-{}",
        algorithm.as_str().to_lowercase(),
        if exportable { "exp" } else { "ne" }
    );
    let key = fx
        .token
        .generate_key(&KeySpec {
            algorithm,
            id: &id,
            label: &label,
            exportable,
        })
        .unwrap_or_else(|e| panic!("generate {algorithm}: {e}"));
    assert_eq!(key.id, id);
    assert_eq!(key.algorithm, algorithm);

    let objects = fx.token.find_by_id(&id).unwrap();
    let (secret_class, key_type) = match algorithm.kind() {
        KeyKind::Aes(_) => (ObjectClass::SECRET_KEY, KeyType::AES),
        KeyKind::Hmac(_) => (ObjectClass::SECRET_KEY, KeyType::GENERIC_SECRET),
        KeyKind::Ec(_) => (ObjectClass::PRIVATE_KEY, KeyType::EC),
        KeyKind::Rsa(_) => (ObjectClass::PRIVATE_KEY, KeyType::RSA),
    };
    assert_eq!(
        objects.len(),
        if algorithm.is_asymmetric() { 2 } else { 1 },
        "{objects:?}"
    );
    let copyable = fx.token.mechanisms().copyable_accepted();
    for o in &objects {
        assert_eq!(o.id, id);
        assert_eq!(o.label, label.as_bytes());
        assert!(o.token);
        assert_eq!(o.key_type, Some(key_type));
        assert_eq!(o.usage.derive, Some(false), "{o:?}");
        assert_ne!(o.usage.wrap, Some(true), "{o:?}");
        assert_ne!(o.usage.unwrap, Some(true), "{o:?}");
        if copyable {
            assert_eq!(o.copyable, Some(false), "{o:?}");
        }
        if o.class == secret_class {
            check_secret_half(algorithm, o, exportable);
        } else {
            assert_eq!(o.class, ObjectClass::PUBLIC_KEY);
            assert!(!o.private);
            let u = o.usage;
            match algorithm.purpose() {
                Purpose::AsymmetricSign => {
                    assert_eq!((u.verify, u.encrypt), (Some(true), Some(false)), "{o:?}")
                }
                Purpose::AsymmetricDecrypt => {
                    assert_eq!((u.verify, u.encrypt), (Some(false), Some(true)), "{o:?}")
                }
                p => panic!("{p} has no public half"),
            }
        }
    }
    check_with_cryptoki(fx, algorithm, &id, exportable);

    // The public key: SPKI that openssl reads, equal to what public_key() returns later.
    match algorithm.kind() {
        KeyKind::Aes(_) | KeyKind::Hmac(_) => assert!(key.public_key.is_none()),
        KeyKind::Ec(bits) | KeyKind::Rsa(bits) => {
            let public = key
                .public_key
                .as_ref()
                .expect("pairs return their public key");
            assert_eq!(&fx.token.public_key(&id).unwrap(), public);
            let pem = public.pem().unwrap();
            let path = write_file(fx, &format!("{}.pem", hex(&id)), pem.as_bytes());
            let text = openssl_ok(&["pkey", "-pubin", "-in", &path, "-noout", "-text"]);
            assert!(
                text.contains(&format!("Public-Key: ({bits} bit)")),
                "{text}"
            );
            match algorithm.kind() {
                KeyKind::Ec(256) => assert!(text.contains("NIST CURVE: P-256"), "{text}"),
                KeyKind::Ec(_) => assert!(text.contains("NIST CURVE: P-384"), "{text}"),
                _ => assert!(text.contains("Exponent: 65537 (0x10001)"), "{text}"),
            }
            // openssl's own DER of the key is byte-identical to ours.
            let der_path = write_file(fx, &format!("{}.der", hex(&id)), b"");
            openssl_ok(&[
                "pkey", "-pubin", "-in", &path, "-outform", "DER", "-out", &der_path,
            ]);
            assert_eq!(std::fs::read(&der_path).unwrap(), public.der);
        }
    }

    assert_eq!(fx.token.destroy_by_id(&id).unwrap(), objects.len());
    assert!(fx.token.find_by_id(&id).unwrap().is_empty());
    assert!(matches!(
        fx.token.public_key(&id),
        Err(TokenError::KeyNotFound { .. })
    ));
}

fn check_secret_half(algorithm: Algorithm, o: &ObjectInfo, exportable: bool) {
    assert!(o.private, "{o:?}");
    assert_eq!(o.sensitive, Some(true), "{o:?}");
    assert_eq!(o.always_sensitive, Some(true), "{o:?}");
    assert_eq!(o.extractable, Some(exportable), "{o:?}");
    assert_eq!(o.never_extractable, Some(!exportable), "{o:?}");
    assert_eq!(o.local, Some(true), "{o:?}");
    let u = o.usage;
    assert_eq!(u.unwrap, Some(false), "{o:?}");
    let (enc, dec, sign, verify) = match algorithm.purpose() {
        Purpose::EncryptDecrypt => (Some(true), Some(true), Some(false), Some(false)),
        Purpose::Mac => (Some(false), Some(false), Some(true), Some(true)),
        // A private key's CKA_ENCRYPT/CKA_VERIFY are not private-key attributes.
        Purpose::AsymmetricSign => (u.encrypt, Some(false), Some(true), u.verify),
        Purpose::AsymmetricDecrypt => (u.encrypt, Some(true), Some(false), u.verify),
        Purpose::Pkcs11Generic => unreachable!(),
    };
    assert_eq!(
        (u.encrypt, u.decrypt, u.sign, u.verify),
        (enc, dec, sign, verify),
        "{o:?}"
    );
}

/// The same facts read with cryptoki alone, and the key material refused.
fn check_with_cryptoki(fx: &Fixture, algorithm: Algorithm, id: &[u8], exportable: bool) {
    let secret_class = if algorithm.is_asymmetric() {
        ObjectClass::PRIVATE_KEY
    } else {
        ObjectClass::SECRET_KEY
    };
    fx.token
        .with_session(|s| {
            let handles =
                s.find_objects(&[Attribute::Id(id.to_vec()), Attribute::Class(secret_class)])?;
            assert_eq!(handles.len(), 1);
            let h = handles[0];
            let attrs = s.get_attributes(
                h,
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::Token,
                    AttributeType::Private,
                ],
            )?;
            let mut seen = 0;
            for a in attrs {
                match a {
                    Attribute::Sensitive(b) => {
                        assert!(b);
                        seen += 1
                    }
                    Attribute::Extractable(b) => {
                        assert_eq!(b, exportable);
                        seen += 1
                    }
                    Attribute::Token(b) => {
                        assert!(b);
                        seen += 1
                    }
                    Attribute::Private(b) => {
                        assert!(b);
                        seen += 1
                    }
                    _ => {}
                }
            }
            assert_eq!(seen, 4, "all four attributes read");
            // CKA_VALUE (secret keys) or CKA_PRIVATE_EXPONENT / CKA_VALUE (pairs): C_GetAttributeValue
            // answers CKR_ATTRIBUTE_SENSITIVE, which cryptoki reports as AttributeInfo::Sensitive.
            let secret_attr = match algorithm.kind() {
                KeyKind::Rsa(_) => AttributeType::PrivateExponent,
                _ => AttributeType::Value,
            };
            let info = s.get_attribute_info(h, &[secret_attr])?;
            assert!(
                matches!(info.as_slice(), [AttributeInfo::Sensitive]),
                "{algorithm}: key material readable: {info:?}"
            );
            Ok(())
        })
        .unwrap();
}

macro_rules! generation_tests {
    ($($name:ident: $alg:expr, $exportable:expr;)*) => {$(
        #[test]
        fn $name() {
            generate_and_check($alg, $exportable);
        }
    )*};
}

generation_tests! {
    aes_128_gcm: Algorithm::Aes128Gcm, false;
    aes_256_gcm: Algorithm::Aes256Gcm, false;
    aes_256_gcm_exportable: Algorithm::Aes256Gcm, true;
    hmac_sha256: Algorithm::HmacSha256, false;
    ec_p256: Algorithm::EcSignP256Sha256, false;
    ec_p256_exportable: Algorithm::EcSignP256Sha256, true;
    ec_p384: Algorithm::EcSignP384Sha384, false;
    rsa_pkcs1_2048: Algorithm::RsaSignPkcs1_2048Sha256, false;
    rsa_pkcs1_3072: Algorithm::RsaSignPkcs1_3072Sha256, false;
    rsa_pkcs1_4096: Algorithm::RsaSignPkcs1_4096Sha256, false;
    rsa_pss_2048: Algorithm::RsaSignPss2048Sha256, false;
    rsa_pss_3072: Algorithm::RsaSignPss3072Sha256, false;
    rsa_pss_4096: Algorithm::RsaSignPss4096Sha256, false;
    rsa_oaep_2048_sha1: Algorithm::RsaDecryptOaep2048Sha1, false;
    rsa_oaep_2048_sha1_exportable: Algorithm::RsaDecryptOaep2048Sha1, true;
    rsa_oaep_3072_sha1: Algorithm::RsaDecryptOaep3072Sha1, false;
    rsa_oaep_4096_sha1: Algorithm::RsaDecryptOaep4096Sha1, false;
}

#[test]
fn list_objects_shows_generated_keys_and_destroy_removes_them() {
    let fx = fixture("keys");
    let aes = new_id(fx);
    let ec = new_id(fx);
    fx.token
        .generate_key(&KeySpec {
            algorithm: Algorithm::Aes128Gcm,
            id: &aes,
            label: "list-aes",
            exportable: false,
        })
        .unwrap();
    fx.token
        .generate_key(&KeySpec {
            algorithm: Algorithm::EcSignP256Sha256,
            id: &ec,
            label: "list-ec",
            exportable: false,
        })
        .unwrap();

    let all = fx.token.list_objects().unwrap();
    let classes = |id: &[u8]| {
        let mut c: Vec<String> = all
            .iter()
            .filter(|o| o.id == id)
            .map(|o| o.class.to_string())
            .collect();
        c.sort();
        c
    };
    assert_eq!(classes(&aes), vec![ObjectClass::SECRET_KEY.to_string()]);
    assert_eq!(classes(&ec), {
        let mut v = vec![
            ObjectClass::PRIVATE_KEY.to_string(),
            ObjectClass::PUBLIC_KEY.to_string(),
        ];
        v.sort();
        v
    });
    assert!(all.iter().all(|o| o.token));

    assert_eq!(fx.token.destroy_by_id(&ec).unwrap(), 2);
    let after = fx.token.list_objects().unwrap();
    assert!(after.iter().all(|o| o.id != ec));
    assert_eq!(after.iter().filter(|o| o.id == aes).count(), 1);
    assert_eq!(fx.token.destroy_by_id(&aes).unwrap(), 1);
    assert_eq!(fx.token.destroy_by_id(&aes).unwrap(), 0);
    assert!(fx.token.list_objects().unwrap().iter().all(|o| o.id != aes));
}

#[test]
fn a_used_or_empty_id_is_refused() {
    let fx = fixture("keys");
    let id = new_id(fx);
    let spec = KeySpec {
        algorithm: Algorithm::HmacSha256,
        id: &id,
        label: "dup",
        exportable: false,
    };
    fx.token.generate_key(&spec).unwrap();
    let err = fx
        .token
        .generate_key(&spec)
        .expect_err("second key with one CKA_ID");
    assert!(matches!(err, TokenError::InvalidArgument(_)), "{err:?}");
    assert_eq!(fx.token.find_by_id(&id).unwrap().len(), 1);
    let err = fx
        .token
        .generate_key(&KeySpec { id: &[], ..spec })
        .expect_err("empty id");
    assert!(matches!(err, TokenError::InvalidArgument(_)), "{err:?}");
    assert_eq!(fx.token.destroy_by_id(&id).unwrap(), 1);
}
