//! Keys are made only in a logged-in session (issue 14 bug 2): a create or generation that
//! would make a private or secret Keyward key (always `CKA_PRIVATE`) in a read-write session
//! that is not logged in is `CKR_USER_NOT_LOGGED_IN` before anything is made, and audited, as
//! SoftHSM2 answers; `pkcs11-tool --keypairgen` without `--login` fails cleanly and leaves no
//! key in the ring. Logged in, the same calls make keys.

use crate::common::daemon::Env;
use crate::common::module::{self, rv, Settings};
use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use std::process::Command;

const RING: &str = "projects/payments/keyRings/web";

/// The ring's keys, as `keywardctl key list` gives them.
fn keys(env: &Env) -> Vec<serde_json::Value> {
    let out = env.ctl(&["--json", "key", "list", "--keyring", RING]);
    out.ok();
    match out.json() {
        serde_json::Value::Array(a) => a,
        other => other["keys"].as_array().cloned().unwrap_or_default(),
    }
}

fn ec_pair() -> (Vec<Attribute>, Vec<Attribute>) {
    // secp256r1
    let params = vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    (
        vec![
            Attribute::Token(true),
            Attribute::EcParams(params),
            Attribute::Verify(true),
        ],
        vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sign(true),
        ],
    )
}

fn aes_template() -> Vec<Attribute> {
    vec![
        Attribute::Token(true),
        Attribute::ValueLen(32.into()),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
    ]
}

#[test]
fn keys_are_not_made_in_a_session_that_is_not_logged_in() {
    let _excl = module::exclusive();
    let mut env = Env::new();
    env.start();
    env.payments_ring();
    env.ctl(&[
        "keyring",
        "update",
        RING,
        "--allow-plaintext-import",
        "true",
    ])
    .ok();
    let settings = Settings::new(&env.client_socket, &env.dir().join("module.toml"));
    let p11 = module::cryptoki(&settings);
    let slot = module::ring_slot(&p11, RING);
    let s = p11.open_rw_session(slot).unwrap();
    // The pre-login principal (this uid's mapping, the organisation admin) may create keys:
    // only the missing login refuses them.
    let (public, private) = ec_pair();
    assert_eq!(
        rv(s.generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)),
        RvError::UserNotLoggedIn
    );
    assert_eq!(
        rv(s.generate_key(&Mechanism::AesKeyGen, &aes_template())),
        RvError::UserNotLoggedIn
    );
    let plaintext = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(true),
        Attribute::Value(vec![7; 32]),
        Attribute::Encrypt(true),
    ];
    assert_eq!(rv(s.create_object(&plaintext)), RvError::UserNotLoggedIn);
    assert!(keys(&env).is_empty(), "keys were made: {:?}", keys(&env));
    // The audit writer commits in groups: wait (boundedly) for the three refusals.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let log = env.ctl(&["--json", "audit", "query", "--result", "denied"]);
        log.ok();
        let refused: Vec<String> = log
            .json_lines()
            .into_iter()
            .filter(|r| r["rv"] == 0x101)
            .map(|r| r["action"].as_str().unwrap_or_default().to_owned())
            .collect();
        if refused.len() >= 3 {
            for a in ["C_GenerateKeyPair", "C_GenerateKey", "C_CreateObject"] {
                assert!(
                    refused.iter().any(|r| r == a),
                    "{a} not audited: {refused:?}"
                );
            }
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the refusals are not audited: {}",
            log.stdout
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // pkcs11-tool without --login: a clean failure, no key.
    let tool = Command::new("pkcs11-tool")
        .args(["--module"])
        .arg(module::module_path())
        .args([
            "--slot",
            &module::ring_slot_id(RING).to_string(),
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
            "--label",
            "nologin",
        ])
        .env("KEYWARD_SOCKET", &env.client_socket)
        .env("KEYWARD_CONFIG", env.dir().join("module.toml"))
        .output()
        .expect("pkcs11-tool");
    let stderr = String::from_utf8_lossy(&tool.stderr);
    assert!(!tool.status.success(), "pkcs11-tool succeeded: {stderr}");
    assert!(
        stderr.contains("CKR_USER_NOT_LOGGED_IN"),
        "pkcs11-tool: {stderr}"
    );
    assert!(
        keys(&env).is_empty(),
        "pkcs11-tool left a key: {:?}",
        keys(&env)
    );

    // Logged in (an empty PIN asserts the pre-login principal), the same calls make keys.
    s.login(UserType::User, Some(&AuthPin::new(String::new().into())))
        .unwrap();
    let (public, private) = ec_pair();
    s.generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
        .unwrap();
    s.generate_key(&Mechanism::AesKeyGen, &aes_template())
        .unwrap();
    s.create_object(&plaintext).unwrap();
    assert_eq!(keys(&env).len(), 3, "{:?}", keys(&env));
}
