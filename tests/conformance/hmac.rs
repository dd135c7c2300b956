//! HMAC keys through the module (issue 14 item 8): `C_GenerateKey(CKM_GENERIC_SECRET_KEY_GEN)`
//! makes a `PKCS11_GENERIC` Keyward key (`CKA_VALUE_LEN` in bytes) or a session object;
//! `CKM_SHA256/384/512_HMAC` sign and verify with it; a template that sets neither `CKA_SIGN`
//! nor `CKA_VERIFY` (pkcs11-tool `--keygen --key-type GENERIC:64` sends ENCRYPT/DECRYPT) gets
//! both; the policy minimum (32 bytes, and at least the hash's output for its HMAC) is
//! enforced; a session generic secret from the application's own bytes MACs exactly as
//! `openssl dgst -mac HMAC` does; pkcs11-tool makes, signs and verifies through the module.

use crate::common::daemon::Env;
use crate::common::module::{self, rv, In, Mech, Settings};
use cryptoki::error::RvError;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use std::process::Command;

const RING: &str = "projects/payments/keyRings/web";

/// The three HMACs with their `openssl dgst` digest name and MAC length.
fn hmacs() -> [(Mechanism<'static>, &'static str, usize); 3] {
    [
        (Mechanism::Sha256Hmac, "sha256", 32),
        (Mechanism::Sha384Hmac, "sha384", 48),
        (Mechanism::Sha512Hmac, "sha512", 64),
    ]
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `openssl dgst -<hash> -mac HMAC -macopt hexkey:<key>` of `data`, as hex.
fn openssl_hmac(hash: &str, key: &[u8], data: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("data");
    std::fs::write(&input, data).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", &format!("-{hash}"), "-mac", "HMAC", "-macopt"])
        .arg(format!("hexkey:{}", hex(key)))
        .arg("-r")
        .arg(&input)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn logged_in(p11: &cryptoki::context::Pkcs11) -> Session {
    let slot = module::ring_slot(p11, RING);
    let s = p11.open_rw_session(slot).unwrap();
    // An empty PIN asserts the pre-login principal (this uid's mapping, the org admin).
    s.login(UserType::User, Some(&AuthPin::new(String::new().into())))
        .unwrap();
    s
}

fn bools(s: &Session, key: ObjectHandle) -> (bool, bool, bool, bool) {
    let attrs = s
        .get_attributes(
            key,
            &[
                AttributeType::Sign,
                AttributeType::Verify,
                AttributeType::Encrypt,
                AttributeType::Decrypt,
            ],
        )
        .unwrap();
    let mut v = [false; 4];
    for a in attrs {
        match a {
            Attribute::Sign(b) => v[0] = b,
            Attribute::Verify(b) => v[1] = b,
            Attribute::Encrypt(b) => v[2] = b,
            Attribute::Decrypt(b) => v[3] = b,
            _ => {}
        }
    }
    (v[0], v[1], v[2], v[3])
}

/// Signs and verifies with each HMAC; a changed MAC does not verify.
fn sign_and_verify_each(s: &Session, key: ObjectHandle) {
    let data = b"keyward hmac".to_vec();
    for (m, name, len) in hmacs() {
        let mac = s
            .sign(&m, key, &data)
            .unwrap_or_else(|e| panic!("{name} sign: {e}"));
        assert_eq!(mac.len(), len, "{name}");
        s.verify(&m, key, &data, &mac)
            .unwrap_or_else(|e| panic!("{name} verify: {e}"));
        let mut bad = mac.clone();
        bad[0] ^= 1;
        assert_eq!(
            rv(s.verify(&m, key, &data, &bad)),
            RvError::SignatureInvalid,
            "{name}"
        );
    }
}

#[test]
fn generic_secrets_are_made_and_mac_with_sha256_384_512() {
    let excl = module::exclusive();
    let mut env = Env::new();
    env.start();
    env.payments_ring();
    // The org admin makes keys; MACs need useToSign/useToVerify (design §3).
    env.bind(RING, "roles/kms.cryptoOperator", crate::common::ADMIN);
    let settings = Settings::new(&env.client_socket, &env.dir().join("module.toml"));
    let p11 = module::cryptoki(&settings);
    let slot = module::ring_slot(&p11, RING);

    // The mechanism list: key generation and the three HMACs. Key generation's sizes are in
    // bits (PKCS#11 v2.40 current mechanisms, "Generic secret key generation": "the supported
    // range of generic secret key sizes, in bits"; issue 17: they were given in bytes), the
    // HMACs' in bytes as tokens report them (SoftHSM2, tpm2-pkcs11); CKA_VALUE_LEN is bytes.
    let listed = p11.get_mechanism_list(slot).unwrap();
    for (m, range) in [
        (MechanismType::GENERIC_SECRET_KEY_GEN, (32 * 8, 128 * 8)),
        (MechanismType::SHA256_HMAC, (32, 128)),
        (MechanismType::SHA384_HMAC, (48, 128)),
        (MechanismType::SHA512_HMAC, (64, 128)),
    ] {
        assert!(listed.contains(&m), "{m} missing from {listed:?}");
        let i = p11.get_mechanism_info(slot, m).unwrap();
        assert_eq!((i.min_key_size(), i.max_key_size()), range, "{m}: {i:?}");
        if m == MechanismType::GENERIC_SECRET_KEY_GEN {
            assert!(i.generate(), "{m}: {i:?}");
        } else {
            assert!(i.sign() && i.verify() && !i.encrypt(), "{m}: {i:?}");
        }
    }

    let s = logged_in(&p11);
    // A Keyward key, with pkcs11-tool's template (ENCRYPT/DECRYPT only): it gets sign+verify
    // and claims no encryption.
    let key = s
        .generate_key(
            &Mechanism::GenericSecretKeyGen,
            &[
                Attribute::Token(true),
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                Attribute::ValueLen(64.into()),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Label(b"mac64".to_vec()),
            ],
        )
        .expect("C_GenerateKey(CKM_GENERIC_SECRET_KEY_GEN)");
    assert_eq!(bools(&s, key), (true, true, false, false));
    let attrs = s
        .get_attributes(key, &[AttributeType::KeyType, AttributeType::ValueLen])
        .unwrap();
    assert!(
        attrs.contains(&Attribute::KeyType(KeyType::GENERIC_SECRET)),
        "{attrs:?}"
    );
    assert!(attrs.contains(&Attribute::ValueLen(64.into())), "{attrs:?}");
    sign_and_verify_each(&s, key);
    // It is not an encryption key.
    assert_eq!(
        rv(s.encrypt(&Mechanism::AesCbcPad([0; 16]), key, b"x")),
        RvError::MechanismInvalid
    );

    // A 32-byte key is the minimum; it MACs with SHA-256 but is too short for SHA-384/512
    // (SoftHSM2 refuses those at Init with CKR_KEY_SIZE_RANGE; keywardd answers first).
    let short = s
        .generate_key(
            &Mechanism::GenericSecretKeyGen,
            &[Attribute::Token(true), Attribute::ValueLen(32.into())],
        )
        .unwrap();
    s.sign(&Mechanism::Sha256Hmac, short, b"d").unwrap();
    for m in [Mechanism::Sha384Hmac, Mechanism::Sha512Hmac] {
        assert_eq!(rv(s.sign(&m, short, b"d")), RvError::KeySizeRange, "{m:?}");
    }
    for len in [16u64, 31, 129] {
        assert_eq!(
            rv(s.generate_key(
                &Mechanism::GenericSecretKeyGen,
                &[Attribute::Token(true), Attribute::ValueLen(len.into())],
            )),
            RvError::AttributeValueInvalid,
            "{len} bytes"
        );
    }
    // A template that asks only to verify gets only that.
    let verify_only = s
        .generate_key(
            &Mechanism::GenericSecretKeyGen,
            &[
                Attribute::Token(true),
                Attribute::ValueLen(64.into()),
                Attribute::Verify(true),
            ],
        )
        .unwrap();
    assert_eq!(bools(&s, verify_only), (false, true, false, false));
    assert_eq!(
        rv(s.sign(&Mechanism::Sha256Hmac, verify_only, b"d")),
        RvError::MechanismInvalid
    );

    // A session object generated in the token.
    let session_key = s
        .generate_key(
            &Mechanism::GenericSecretKeyGen,
            &[
                Attribute::Token(false),
                Attribute::ValueLen(64.into()),
                Attribute::Sign(true),
                Attribute::Verify(true),
            ],
        )
        .expect("a session generic secret");
    sign_and_verify_each(&s, session_key);

    // A session object from the application's own bytes: each MAC is openssl's.
    let known: Vec<u8> = (0u8..64)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect();
    let imported = s
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Token(false),
            Attribute::Value(known.clone()),
            Attribute::Label(b"known".to_vec()),
            Attribute::Sign(true),
            Attribute::Verify(true),
        ])
        .expect("C_CreateObject of a session generic secret");
    let data = b"known-answer data for HMAC".to_vec();
    for (m, name, _) in hmacs() {
        let mac = s.sign(&m, imported, &data).unwrap();
        assert_eq!(hex(&mac), openssl_hmac(name, &known, &data), "{name}");
    }
    // _GENERAL with a truncated MAC (the key's owner: sign and verify are its own), through
    // the raw calls of the same module instance (cryptoki has no typed _GENERAL).
    let raw = excl.raw();
    let (rv0, h) = raw.open_session(module::ring_slot_id(RING));
    assert_eq!(rv0, 0, "C_OpenSession");
    let found = raw.find(h, &[(0x3, b"known".to_vec())]);
    assert_eq!(found.len(), 1, "{found:?}");
    for (ty, name) in [(0x252, "sha256"), (0x262, "sha384"), (0x272, "sha512")] {
        let m = Mech::Bytes(ty, module::ulong_bytes(16));
        let mac = module::raw_sign(raw, h, &m, found[0], &data);
        assert_eq!(
            hex(&mac),
            openssl_hmac(name, &known, &data)[..32],
            "{name} general"
        );
        assert_eq!(raw.verify_init(h, &m, found[0]), 0, "{name}");
        assert_eq!(
            raw.verify(h, In::Bytes(&data), In::Bytes(&mac)),
            0,
            "{name}"
        );
        let mut bad = mac.clone();
        bad[15] ^= 1;
        assert_eq!(raw.verify_init(h, &m, found[0]), 0, "{name}");
        // CKR_SIGNATURE_INVALID
        assert_eq!(
            raw.verify(h, In::Bytes(&data), In::Bytes(&bad)),
            0xC0,
            "{name}"
        );
    }
    assert_eq!(raw.close_session(h), 0);
    // A session secret below the minimum is refused like a token one.
    assert_eq!(
        rv(s.create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Token(false),
            Attribute::Value(vec![1; 16]),
        ])),
        RvError::AttributeValueInvalid
    );
}

/// Runs pkcs11-tool logged in with `pin`.
fn tool<S: AsRef<std::ffi::OsStr>>(env: &Env, pin: &str, args: &[S]) -> std::process::Output {
    Command::new("pkcs11-tool")
        .arg("--module")
        .arg(module::module_path())
        .args(["--slot", &module::ring_slot_id(RING).to_string()])
        .args(["--login", "--pin", pin])
        .args(args)
        .env("KEYWARD_SOCKET", &env.client_socket)
        .env("KEYWARD_CONFIG", env.dir().join("module.toml"))
        .output()
        .expect("pkcs11-tool")
}

#[test]
fn pkcs11_tool_makes_hmac_keys_and_signs_and_verifies() {
    let _excl = module::exclusive();
    let mut env = Env::new();
    // A service account whose key is the PIN (pkcs11-tool cannot send an empty one).
    let pin = env.service_account_offline("mac");
    env.start();
    env.web_ring();
    for role in ["roles/kms.admin", "roles/kms.cryptoOperator"] {
        env.bind(RING, role, "serviceAccount:mac@payments");
    }
    // Writes the empty module.toml the tool's KEYWARD_CONFIG names.
    let _settings = Settings::new(&env.client_socket, &env.dir().join("module.toml"));
    let dir = env.dir().to_path_buf();
    let data = dir.join("data");
    std::fs::write(&data, b"pkcs11-tool hmac data\n").unwrap();
    let out = tool(
        &env,
        &pin,
        &[
            "--keygen",
            "--key-type",
            "GENERIC:64",
            "--label",
            "hm",
            "--id",
            "4d",
        ],
    );
    assert!(
        out.status.success(),
        "pkcs11-tool --keygen GENERIC:64: {:?} {} {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for (m, len) in [
        ("SHA256-HMAC", 32),
        ("SHA384-HMAC", 48),
        ("SHA512-HMAC", 64),
    ] {
        let mac = dir.join(format!("{m}.mac"));
        let (d, mac_s) = (data.as_os_str(), mac.as_os_str());
        let out = tool(
            &env,
            &pin,
            &[
                "--sign".as_ref(),
                "-m".as_ref(),
                m.as_ref(),
                "--id".as_ref(),
                "4d".as_ref(),
                "-i".as_ref(),
                d,
                "-o".as_ref(),
                mac_s,
            ],
        );
        assert!(
            out.status.success(),
            "pkcs11-tool --sign -m {m}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(std::fs::read(&mac).unwrap().len(), len, "{m}");
        let out = tool(
            &env,
            &pin,
            &[
                "--verify".as_ref(),
                "-m".as_ref(),
                m.as_ref(),
                "--id".as_ref(),
                "4d".as_ref(),
                "-i".as_ref(),
                d,
                "--signature-file".as_ref(),
                mac_s,
            ],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("Signature is valid"),
            "pkcs11-tool --verify -m {m}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
