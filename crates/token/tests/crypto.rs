//! Crypto operations by CKA_ID, checked against the openssl CLI where a public key allows it:
//! ECDSA and RSA (PKCS#1 v1.5, PSS) signatures verified by openssl against the exported PEM,
//! RSA-OAEP-SHA1 ciphertexts from openssl decrypted by the token, AES-GCM and HMAC round trips.

mod common;

use common::{fixture, hex, new_id, openssl, openssl_ok, write_file, Fixture};
use keyward_token::public_key::ecdsa_raw_to_der;
use keyward_token::{KeySpec, OaepHash, SignMechanism, TokenError, GCM_TAG_LEN};
use keyward_wire::keys::Algorithm;

const CKR_KEY_HANDLE_INVALID: u64 = 0x60;

/// Generates a key and writes its public PEM (pairs); returns (id, pem path).
fn key(fx: &Fixture, algorithm: Algorithm) -> (Vec<u8>, Option<String>) {
    let id = new_id(fx);
    let key = fx
        .token
        .generate_key(&KeySpec {
            algorithm,
            id: &id,
            label: algorithm.as_str(),
            exportable: false,
        })
        .unwrap_or_else(|e| panic!("generate {algorithm}: {e}"));
    let pem = key.public_key.map(|p| {
        write_file(
            fx,
            &format!("{}.pem", hex(&id)),
            p.pem().unwrap().as_bytes(),
        )
    });
    (id, pem)
}

fn sha(fx: &Fixture, alg: &str, msg_path: &str, name: &str) -> (Vec<u8>, String) {
    let out = write_file(fx, name, b"");
    openssl_ok(&[
        "dgst",
        &format!("-{alg}"),
        "-binary",
        "-out",
        &out,
        msg_path,
    ]);
    (std::fs::read(&out).unwrap(), out)
}

fn ecdsa_case(algorithm: Algorithm, hash: &str) {
    let fx = fixture("crypto");
    let (id, pem) = key(fx, algorithm);
    let pem = pem.unwrap();
    let tag = hex(&id);
    let msg = write_file(fx, &format!("{tag}.msg"), b"keyward ecdsa test message");
    let (digest, digest_path) = sha(fx, hash, &msg, &format!("{tag}.dgst"));

    let raw = fx.token.sign(&id, SignMechanism::Ecdsa, &digest).unwrap();
    assert_eq!(raw.len(), if hash == "sha256" { 64 } else { 96 });
    assert!(fx
        .token
        .verify(&id, SignMechanism::Ecdsa, &digest, &raw)
        .unwrap());
    let mut bad = digest.clone();
    bad[0] ^= 1;
    assert!(!fx
        .token
        .verify(&id, SignMechanism::Ecdsa, &bad, &raw)
        .unwrap());

    let sig = write_file(fx, &format!("{tag}.sig"), &ecdsa_raw_to_der(&raw).unwrap());
    // Over the digest, and over the message with openssl hashing it.
    let out = openssl_ok(&[
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        &pem,
        "-in",
        &digest_path,
        "-sigfile",
        &sig,
    ]);
    assert!(out.contains("Signature Verified Successfully"), "{out}");
    let out = openssl_ok(&[
        "dgst",
        &format!("-{hash}"),
        "-verify",
        &pem,
        "-signature",
        &sig,
        &msg,
    ]);
    assert!(out.contains("Verified OK"), "{out}");
    // openssl rejects the signature over another message: the check can fail.
    let other = write_file(fx, &format!("{tag}.other"), b"another message");
    let out = openssl(&[
        "dgst",
        &format!("-{hash}"),
        "-verify",
        &pem,
        "-signature",
        &sig,
        &other,
    ]);
    assert!(
        !out.status.success(),
        "openssl verified a signature over a different message"
    );
    fx.token.destroy_by_id(&id).unwrap();
}

#[test]
fn ecdsa_p256_verifies_with_openssl() {
    ecdsa_case(Algorithm::EcSignP256Sha256, "sha256");
}

#[test]
fn ecdsa_p384_verifies_with_openssl() {
    ecdsa_case(Algorithm::EcSignP384Sha384, "sha384");
}

#[test]
fn rsa_pkcs1_sha256_verifies_with_openssl() {
    let fx = fixture("crypto");
    let (id, pem) = key(fx, Algorithm::RsaSignPkcs1_2048Sha256);
    let pem = pem.unwrap();
    let tag = hex(&id);
    let message = b"keyward rsa pkcs1 message";
    let msg = write_file(fx, &format!("{tag}.msg"), message);
    let sig = fx
        .token
        .sign(&id, SignMechanism::RsaPkcs1Sha256, message)
        .unwrap();
    assert_eq!(sig.len(), 256);
    let sig_path = write_file(fx, &format!("{tag}.sig"), &sig);
    let out = openssl_ok(&[
        "dgst",
        "-sha256",
        "-verify",
        &pem,
        "-signature",
        &sig_path,
        &msg,
    ]);
    assert!(out.contains("Verified OK"), "{out}");
    assert!(fx
        .token
        .verify(&id, SignMechanism::RsaPkcs1Sha256, message, &sig)
        .unwrap());
    assert!(!fx
        .token
        .verify(&id, SignMechanism::RsaPkcs1Sha256, b"other", &sig)
        .unwrap());

    // Raw CKM_RSA_PKCS over a DigestInfo gives the very same (deterministic) signature.
    let (digest, _) = sha(fx, "sha256", &msg, &format!("{tag}.dgst"));
    let mut digest_info = vec![
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    digest_info.extend(&digest);
    assert_eq!(
        fx.token
            .sign(&id, SignMechanism::RsaPkcs1, &digest_info)
            .unwrap(),
        sig
    );
    fx.token.destroy_by_id(&id).unwrap();
}

#[test]
fn rsa_pss_sha256_verifies_with_openssl() {
    let fx = fixture("crypto");
    let (id, pem) = key(fx, Algorithm::RsaSignPss2048Sha256);
    let pem = pem.unwrap();
    let tag = hex(&id);
    let message = b"keyward rsa pss message";
    let msg = write_file(fx, &format!("{tag}.msg"), message);
    let pss = [
        "-sigopt",
        "rsa_padding_mode:pss",
        "-sigopt",
        "rsa_pss_saltlen:32",
        "-sigopt",
        "rsa_mgf1_md:sha256",
    ];

    let sig = fx
        .token
        .sign(&id, SignMechanism::RsaPssSha256, message)
        .unwrap();
    let sig_path = write_file(fx, &format!("{tag}.sig"), &sig);
    let mut args = vec!["dgst", "-sha256"];
    args.extend(pss);
    args.extend(["-verify", &pem, "-signature", &sig_path, &msg]);
    assert!(openssl_ok(&args).contains("Verified OK"));
    // PSS is randomised: two signatures differ, both verify in the token.
    let sig2 = fx
        .token
        .sign(&id, SignMechanism::RsaPssSha256, message)
        .unwrap();
    assert_ne!(sig, sig2);
    assert!(fx
        .token
        .verify(&id, SignMechanism::RsaPssSha256, message, &sig2)
        .unwrap());

    // Over a caller-made digest: openssl verifies it as a signature of the message.
    let (digest, _) = sha(fx, "sha256", &msg, &format!("{tag}.dgst"));
    let sig3 = fx
        .token
        .sign(&id, SignMechanism::RsaPssSha256Digest, &digest)
        .unwrap();
    let sig3_path = write_file(fx, &format!("{tag}.sig3"), &sig3);
    let mut args = vec!["dgst", "-sha256"];
    args.extend(pss);
    args.extend(["-verify", &pem, "-signature", &sig3_path, &msg]);
    assert!(openssl_ok(&args).contains("Verified OK"));
    // And openssl refuses PKCS#1 v1.5 verification of a PSS signature.
    let out = openssl(&[
        "dgst",
        "-sha256",
        "-verify",
        &pem,
        "-signature",
        &sig_path,
        &msg,
    ]);
    assert!(!out.status.success());
    fx.token.destroy_by_id(&id).unwrap();
}

#[test]
fn hmac_sha256_round_trip() {
    let fx = fixture("crypto");
    let (id, _) = key(fx, Algorithm::HmacSha256);
    let mac = fx
        .token
        .sign(&id, SignMechanism::HmacSha256, b"data")
        .unwrap();
    assert_eq!(mac.len(), 32);
    assert_eq!(
        fx.token
            .sign(&id, SignMechanism::HmacSha256, b"data")
            .unwrap(),
        mac
    );
    assert!(fx
        .token
        .verify(&id, SignMechanism::HmacSha256, b"data", &mac)
        .unwrap());
    assert!(!fx
        .token
        .verify(&id, SignMechanism::HmacSha256, b"date", &mac)
        .unwrap());
    assert!(!fx
        .token
        .verify(&id, SignMechanism::HmacSha256, b"data", &mac[..16])
        .unwrap());
    // Another key gives another MAC.
    let (other, _) = key(fx, Algorithm::HmacSha256);
    assert_ne!(
        fx.token
            .sign(&other, SignMechanism::HmacSha256, b"data")
            .unwrap(),
        mac
    );
    fx.token.destroy_by_id(&id).unwrap();
    fx.token.destroy_by_id(&other).unwrap();
}

#[test]
fn aes_gcm_round_trip() {
    let fx = fixture("crypto");
    for algorithm in [Algorithm::Aes128Gcm, Algorithm::Aes256Gcm] {
        let (id, _) = key(fx, algorithm);
        let plaintext = b"attack at dawn, keyward style";
        let aad = b"cryptoKeyVersions/1";

        let ct = fx.token.encrypt_aes_gcm(&id, plaintext, aad, None).unwrap();
        assert_eq!(ct.ciphertext.len(), plaintext.len() + GCM_TAG_LEN);
        assert_ne!(&ct.ciphertext[..plaintext.len()], plaintext);
        assert_eq!(
            fx.token
                .decrypt_aes_gcm(&id, &ct.iv, &ct.ciphertext, aad)
                .unwrap(),
            plaintext
        );
        // Token-made IVs differ between calls.
        let ct2 = fx.token.encrypt_aes_gcm(&id, plaintext, aad, None).unwrap();
        assert_ne!(ct.iv, ct2.iv);
        // A given IV is used as is: deterministic.
        let iv = [9u8; 12];
        let a = fx
            .token
            .encrypt_aes_gcm(&id, plaintext, aad, Some(iv))
            .unwrap();
        let b = fx
            .token
            .encrypt_aes_gcm(&id, plaintext, aad, Some(iv))
            .unwrap();
        assert_eq!((a.iv, &a.ciphertext), (iv, &b.ciphertext));
        // Wrong AAD, tampered ciphertext, wrong IV: all refused by the token.
        assert!(fx
            .token
            .decrypt_aes_gcm(&id, &ct.iv, &ct.ciphertext, b"other")
            .is_err());
        let mut tampered = ct.ciphertext.clone();
        tampered[0] ^= 1;
        assert!(fx
            .token
            .decrypt_aes_gcm(&id, &ct.iv, &tampered, aad)
            .is_err());
        assert!(fx
            .token
            .decrypt_aes_gcm(&id, &iv, &ct.ciphertext, aad)
            .is_err());
        let err = fx
            .token
            .decrypt_aes_gcm(&id, &iv, &[0; 8], aad)
            .expect_err("shorter than a tag");
        assert!(matches!(err, TokenError::InvalidArgument(_)), "{err:?}");
        // Empty plaintext and AAD work.
        let e = fx.token.encrypt_aes_gcm(&id, b"", b"", None).unwrap();
        assert_eq!(e.ciphertext.len(), GCM_TAG_LEN);
        assert!(fx
            .token
            .decrypt_aes_gcm(&id, &e.iv, &e.ciphertext, b"")
            .unwrap()
            .is_empty());
        fx.token.destroy_by_id(&id).unwrap();
    }
}

#[test]
fn rsa_oaep_sha1_round_trip_and_openssl_interop() {
    let fx = fixture("crypto");
    let (id, pem) = key(fx, Algorithm::RsaDecryptOaep2048Sha1);
    let pem = pem.unwrap();
    let tag = hex(&id);
    let secret = b"0123456789abcdef0123456789abcdef";

    let ct = fx
        .token
        .encrypt_rsa_oaep(&id, OaepHash::Sha1, secret)
        .unwrap();
    assert_eq!(ct.len(), 256);
    assert_eq!(
        fx.token.decrypt_rsa_oaep(&id, OaepHash::Sha1, &ct).unwrap(),
        secret
    );

    // openssl encrypts with the exported public key; the token decrypts.
    let pt_path = write_file(fx, &format!("{tag}.pt"), secret);
    let ct_path = write_file(fx, &format!("{tag}.ct"), b"");
    openssl_ok(&[
        "pkeyutl",
        "-encrypt",
        "-pubin",
        "-inkey",
        &pem,
        "-in",
        &pt_path,
        "-out",
        &ct_path,
        "-pkeyopt",
        "rsa_padding_mode:oaep",
        "-pkeyopt",
        "rsa_oaep_md:sha1",
        "-pkeyopt",
        "rsa_mgf1_md:sha1",
    ]);
    let from_openssl = std::fs::read(&ct_path).unwrap();
    assert_eq!(
        fx.token
            .decrypt_rsa_oaep(&id, OaepHash::Sha1, &from_openssl)
            .unwrap(),
        secret
    );
    // A corrupted ciphertext is refused.
    let mut bad = from_openssl.clone();
    bad[10] ^= 0x40;
    assert!(fx
        .token
        .decrypt_rsa_oaep(&id, OaepHash::Sha1, &bad)
        .is_err());
    // The signing uses are not allowed on a decryption key.
    assert!(fx
        .token
        .sign(&id, SignMechanism::RsaPkcs1Sha256, b"x")
        .is_err());
    fx.token.destroy_by_id(&id).unwrap();
}

#[test]
fn unknown_ids_are_key_not_found() {
    let fx = fixture("crypto");
    let id = new_id(fx);
    let err = fx
        .token
        .sign(&id, SignMechanism::Ecdsa, &[0; 32])
        .expect_err("no such key");
    assert!(
        matches!(
            &err,
            TokenError::KeyNotFound {
                what: "private key",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.ck_rv(), CKR_KEY_HANDLE_INVALID);
    assert!(matches!(
        fx.token.encrypt_aes_gcm(&id, b"x", b"", None),
        Err(TokenError::KeyNotFound { .. })
    ));
    // An AES key has no private half: signing with its id finds nothing.
    let (aes, _) = key(fx, Algorithm::Aes128Gcm);
    assert!(matches!(
        fx.token.sign(&aes, SignMechanism::Ecdsa, &[0; 32]),
        Err(TokenError::KeyNotFound { .. })
    ));
    // And HMAC with an AES key is refused by the token (wrong key type or usage).
    let err = fx
        .token
        .sign(&aes, SignMechanism::HmacSha256, b"x")
        .expect_err("AES key cannot HMAC");
    assert!(matches!(err, TokenError::Pkcs11 { .. }), "{err:?}");
    fx.token.destroy_by_id(&aes).unwrap();
}
