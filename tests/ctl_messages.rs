//! keywardd's messages a user can act on (issue 18 item 5, daemon side): decrypting with the
//! wrong key says so (not "has no version 2"), and a key of the wrong purpose is named by its
//! purpose in good English with the purpose the command needs. A real SoftHSM2 token and a
//! real keywardd in temporary directories.

mod common;

use common::daemon::Env;
use std::path::Path;

const RING: &str = "projects/payments/keyRings/web";

fn key(id: &str) -> String {
    format!("{RING}/cryptoKeys/{id}")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn wrong_key_and_wrong_purpose_messages_say_what_to_do() {
    let mut env = Env::new();
    let crypter = env.service_account_offline("crypter");
    env.start();
    env.web_ring();
    env.create_keys(
        RING,
        &[
            ("a", "ENCRYPT_DECRYPT", "AES_256_GCM"),
            ("b", "ENCRYPT_DECRYPT", "AES_256_GCM"),
            ("ec", "ASYMMETRIC_SIGN", "EC_SIGN_P256_SHA256"),
        ],
    );
    for k in ["a", "b", "ec"] {
        env.bind(
            &key(k),
            "roles/kms.cryptoKeyEncrypterDecrypter",
            "serviceAccount:crypter@payments",
        );
    }
    let plain = env.dir().join("plain");
    std::fs::write(&plain, b"order 42").expect("write");
    let ct = env.dir().join("ct");
    // Key a at version 2, then decrypt its ciphertext with key b (one version).
    env.ctl(&["key", "rotate", &key("a")]).ok();
    env.ctl_client_with_key(
        &crypter,
        &[
            "encrypt",
            "--key",
            &key("a"),
            "--in",
            s(&plain),
            "--out",
            s(&ct),
        ],
    )
    .ok();
    let out = env.ctl_client_with_key(&crypter, &["decrypt", "--key", &key("b"), "--in", s(&ct)]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stderr.contains("version 2")
            && out.stderr.contains("wrong key")
            && out.stderr.contains("versions 1 to 1"),
        "{out:#?}"
    );

    // Wrong purposes: named as purposes, with the one the command needs.
    let out = env.ctl_client_with_key(
        &crypter,
        &["encrypt", "--key", &key("ec"), "--in", s(&plain)],
    );
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(!out.stderr.contains(" a ASYMMETRIC"), "{out:#?}");
    assert!(
        out.stderr.contains("purpose ASYMMETRIC_SIGN") && out.stderr.contains("ENCRYPT_DECRYPT"),
        "{out:#?}"
    );
    env.bind(
        &key("a"),
        "roles/kms.publicKeyViewer",
        "serviceAccount:crypter@payments",
    );
    let out = env.ctl_with_key(&crypter, &["key", "get-public-key", &key("a")]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(!out.stderr.contains(" a ENCRYPT_DECRYPT"), "{out:#?}");
    assert!(
        out.stderr.contains("purpose ENCRYPT_DECRYPT") && out.stderr.contains("ASYMMETRIC_SIGN"),
        "{out:#?}"
    );
}
