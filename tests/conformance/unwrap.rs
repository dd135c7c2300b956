//! AES key unwrap with a Keyward key (issue 14 item 9, design §4 "No side doors"):
//! `C_UnwrapKey` with `CKM_AES_KEY_WRAP(_PAD)` and an AES key made through the module (with
//! `CKA_UNWRAP`) needs useToDecrypt on it, else `CKR_UNWRAPPING_KEY_HANDLE_INVALID`; into a
//! session object, or into the ring only as a plaintext import (`allow_plaintext_import` and
//! kms.cryptoKeys.create); the token unwraps. Blobs come from `openssl enc -id-aes256-wrap(-pad)`
//! over known bytes, and the unwrapped HMAC key MACs as `openssl dgst -mac HMAC` does.

use crate::common::daemon::Env;
use crate::common::module::{self, rv, Settings};
use cryptoki::error::RvError;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use std::process::Command;

const RING: &str = "projects/payments/keyRings/web";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `openssl enc -id-aes256-wrap(-pad)` of `data` under `kek`.
fn openssl_wrap(kek: &[u8], data: &[u8], pad: bool) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::write(&input, data).unwrap();
    let (cipher, iv) = if pad {
        ("-id-aes256-wrap-pad", "A65959A6")
    } else {
        ("-id-aes256-wrap", "A6A6A6A6A6A6A6A6")
    };
    let out = Command::new("openssl")
        .args(["enc", cipher, "-K", &hex(kek), "-iv", iv, "-in"])
        .arg(&input)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn openssl_hmac_sha256(key: &[u8], data: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("data");
    std::fs::write(&input, data).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-mac", "HMAC", "-macopt"])
        .arg(format!("hexkey:{}", hex(key)))
        .arg("-r")
        .arg(&input)
        .output()
        .expect("openssl");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn login(s: &Session, pin: &str) {
    let _ = s.logout();
    s.login(UserType::User, Some(&AuthPin::new(pin.to_owned().into())))
        .unwrap_or_else(|e| panic!("C_Login: {e}"));
}

fn kek(s: &Session) -> ObjectHandle {
    let found = s
        .find_objects(&[Attribute::Label(b"kek".to_vec())])
        .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    found[0]
}

fn mac_template(token: bool) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::Token(token),
        Attribute::Sign(true),
        Attribute::Verify(true),
    ]
}

#[test]
fn aes_key_unwrap_needs_use_to_decrypt_and_runs_in_the_token() {
    let _excl = module::exclusive();
    let mut env = Env::new();
    let enc = env.service_account_offline("enc");
    let dec = env.service_account_offline("dec");
    let owner = env.service_account_offline("owner");
    env.start();
    env.web_ring();
    env.ctl(&[
        "keyring",
        "update",
        RING,
        "--allow-plaintext-import",
        "true",
    ])
    .ok();
    env.bind(
        RING,
        "roles/kms.cryptoKeyEncrypter",
        "serviceAccount:enc@payments",
    );
    env.bind(
        RING,
        "roles/kms.cryptoKeyDecrypter",
        "serviceAccount:dec@payments",
    );
    for role in [
        "roles/kms.admin",
        "roles/kms.cryptoKeyDecrypter",
        "roles/kms.signerVerifier",
    ] {
        env.bind(RING, role, "serviceAccount:owner@payments");
    }
    let settings = Settings::new(&env.client_socket, &env.dir().join("module.toml"));
    let p11 = module::cryptoki(&settings);
    let slot = module::ring_slot(&p11, RING);
    let info = p11
        .get_mechanism_info(slot, MechanismType::AES_KEY_WRAP_PAD)
        .unwrap();
    assert!(info.wrap() && info.unwrap(), "{info:?}");
    let s = p11.open_rw_session(slot).unwrap();

    // The unwrapping key: a Keyward AES key from known bytes (a plaintext import).
    let kek_bytes: Vec<u8> = (0u8..32)
        .map(|i| i.wrapping_mul(7).wrapping_add(3))
        .collect();
    login(&s, &owner);
    s.create_object(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(true),
        Attribute::Value(kek_bytes.clone()),
        Attribute::Unwrap(true),
        Attribute::Label(b"kek".to_vec()),
        Attribute::Id(b"kek".to_vec()),
    ])
    .expect("the KEK");

    let mac_key: Vec<u8> = (0u8..64)
        .map(|i| i.wrapping_mul(13).wrapping_add(5))
        .collect();
    let kwp = openssl_wrap(&kek_bytes, &mac_key, true);
    let data = b"unwrapped MAC key data".to_vec();

    // useToEncrypt only: the KEK does not unwrap for it.
    login(&s, &enc);
    assert_eq!(
        rv(s.unwrap_key(
            &Mechanism::AesKeyWrapPad,
            kek(&s),
            &kwp,
            &mac_template(false)
        )),
        RvError::UnwrappingKeyHandleInvalid
    );

    // useToDecrypt: into a session object, which MACs as openssl does with the known bytes.
    login(&s, &dec);
    let k = kek(&s);
    let unwrapped = s
        .unwrap_key(&Mechanism::AesKeyWrapPad, k, &kwp, &mac_template(false))
        .expect("AES-KWP unwrap into a session object");
    let mac = s.sign(&Mechanism::Sha256Hmac, unwrapped, &data).unwrap();
    assert_eq!(hex(&mac), openssl_hmac_sha256(&mac_key, &data));
    // RFC 3394 without padding, into a session AES key of the wrapped key's length.
    let aes_key: Vec<u8> = (0u8..32).map(|i| i ^ 0x5a).collect();
    let kw = openssl_wrap(&kek_bytes, &aes_key, false);
    let aes = s
        .unwrap_key(
            &Mechanism::AesKeyWrap,
            k,
            &kw,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Encrypt(true),
            ],
        )
        .expect("AES-KW unwrap");
    let len = s.get_attributes(aes, &[AttributeType::ValueLen]).unwrap();
    assert_eq!(len, vec![Attribute::ValueLen(32.into())]);
    // A blob changed in one byte does not unwrap (the token checks the integrity value).
    let mut bad = kwp.clone();
    bad[3] ^= 1;
    assert_eq!(
        rv(s.unwrap_key(&Mechanism::AesKeyWrapPad, k, &bad, &mac_template(false))),
        RvError::WrappedKeyInvalid
    );
    // A private key is not unwrapped; a key of another size is not made.
    assert_eq!(
        rv(s.unwrap_key(
            &Mechanism::AesKeyWrapPad,
            k,
            &kwp,
            &[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(KeyType::RSA)
            ]
        )),
        RvError::TemplateInconsistent
    );
    assert_eq!(
        rv(s.unwrap_key(
            &Mechanism::AesKeyWrapPad,
            k,
            &kwp,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES)
            ]
        )),
        RvError::WrappedKeyLenRange
    );
    // Into the ring it is key creation: without kms.cryptoKeys.create, refused.
    assert_eq!(
        rv(s.unwrap_key(&Mechanism::AesKeyWrapPad, k, &kwp, &mac_template(true))),
        RvError::TokenWriteProtected
    );

    // With create and useToDecrypt: a plaintext import into the ring, a Keyward key.
    login(&s, &owner);
    let k = kek(&s);
    let mut t = mac_template(true);
    t.push(Attribute::Label(b"unwrapped-mac".to_vec()));
    let ring_key = s
        .unwrap_key(&Mechanism::AesKeyWrapPad, k, &kwp, &t)
        .expect("unwrap into the ring");
    let mac = s.sign(&Mechanism::Sha256Hmac, ring_key, &data).unwrap();
    assert_eq!(hex(&mac), openssl_hmac_sha256(&mac_key, &data));
    let attrs = s
        .get_attributes(ring_key, &[AttributeType::Sensitive, AttributeType::Local])
        .unwrap();
    assert!(attrs.contains(&Attribute::Sensitive(true)), "{attrs:?}");
    assert!(attrs.contains(&Attribute::Local(false)), "{attrs:?}");
    // The same label again is squatting (design §9).
    assert_eq!(
        rv(s.unwrap_key(&Mechanism::AesKeyWrapPad, k, &kwp, &t)),
        RvError::AttributeValueInvalid
    );
    // pkcs11-tool --unwrap (a token key: into the ring) of a KWP blob, with the KEK by its
    // CKA_ID: refused to the principal without useToDecrypt, done for the one with it.
    let blob_file = env.dir().join("mac.kwp");
    std::fs::write(&blob_file, &kwp).unwrap();
    let tool = |pin: &str| {
        Command::new("pkcs11-tool")
            .arg("--module")
            .arg(module::module_path())
            .args(["--slot", &module::ring_slot_id(RING).to_string()])
            .args(["--login", "--pin", pin, "--unwrap", "-m", "0x210a"])
            .args(["--id", &hex(b"kek"), "--key-type", "GENERIC:64"])
            .arg("-i")
            .arg(&blob_file)
            .env("KEYWARD_SOCKET", &env.client_socket)
            .env("KEYWARD_CONFIG", env.dir().join("module.toml"))
            .output()
            .expect("pkcs11-tool")
    };
    let out = tool(&enc);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "pkcs11-tool --unwrap without useToDecrypt: {text}"
    );
    assert!(text.contains("CKR_UNWRAPPING_KEY_HANDLE_INVALID"), "{text}");
    let out = tool(&owner);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "pkcs11-tool --unwrap: {text}");
    // pkcs11-tool 0.23 sends no label and asks CKA_VERIFY only: the one unlabelled generic
    // secret verifies openssl's MAC of the known key.
    let made = s
        .find_objects(&[
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Label(vec![]),
        ])
        .unwrap();
    assert_eq!(made.len(), 1, "{text}");
    let want = openssl_hmac_sha256(&mac_key, &data);
    let want: Vec<u8> = (0..want.len() / 2)
        .map(|i| u8::from_str_radix(&want[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    s.verify(&Mechanism::Sha256Hmac, made[0], &data, &want)
        .expect("the unwrapped key verifies openssl's MAC");

    // Without allow_plaintext_import on the ring, refused.
    env.ctl(&[
        "keyring",
        "update",
        RING,
        "--allow-plaintext-import",
        "false",
    ])
    .ok();
    assert_eq!(
        rv(s.unwrap_key(&Mechanism::AesKeyWrapPad, k, &kwp, &mac_template(true))),
        RvError::TemplateInconsistent
    );
    // An AES key without CKA_UNWRAP does not unwrap.
    let plain = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[Attribute::Token(true), Attribute::ValueLen(32.into())],
        )
        .unwrap();
    assert_eq!(
        rv(s.unwrap_key(&Mechanism::AesKeyWrapPad, plain, &kwp, &mac_template(false))),
        RvError::MechanismInvalid
    );
}
