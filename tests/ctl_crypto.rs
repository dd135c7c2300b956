//! `keywardctl encrypt|decrypt|sign|verify|mac` over keywardd's client socket, as the
//! caller's principal (service-account keys in `KEYWARD_CREDENTIALS`), through the module's
//! gate: a real SoftHSM2 token and a real keywardd in temporary directories.

mod common;

use common::daemon::Env;
use common::Output;
use std::path::{Path, PathBuf};
use std::process::Command;

const RING: &str = "projects/payments/keyRings/web";

fn key(id: &str) -> String {
    format!("{RING}/cryptoKeys/{id}")
}

fn file(env: &Env, name: &str, bytes: &[u8]) -> PathBuf {
    let p = env.dir().join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// keywardctl VERB --key KEY --in INPUT MORE... through the client socket, as the service
/// account whose key is `who`.
fn crypto(env: &Env, who: &str, verb: &str, k: &str, input: &Path, more: &[&str]) -> Output {
    let k = key(k);
    let mut args = vec![verb, "--key", &k, "--in", s(input)];
    args.extend_from_slice(more);
    env.ctl_client_with_key(who, &args)
}

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn crypto_commands_through_the_client_socket() {
    let mut env = Env::new();
    let crypter = env.service_account_offline("crypter");
    let signer = env.service_account_offline("signer");
    let encrypter = env.service_account_offline("encrypter");
    env.start();
    env.web_ring();
    env.create_keys(
        RING,
        &[
            ("aes", "ENCRYPT_DECRYPT", "AES_256_GCM"),
            ("ec", "ASYMMETRIC_SIGN", "EC_SIGN_P256_SHA256"),
            ("hmac", "MAC", "HMAC_SHA256"),
            ("rsa", "ASYMMETRIC_SIGN", "RSA_SIGN_PKCS1_2048_SHA256"),
            ("pss", "ASYMMETRIC_SIGN", "RSA_SIGN_PSS_2048_SHA256"),
        ],
    );
    env.bind(
        &key("aes"),
        "roles/kms.cryptoKeyEncrypterDecrypter",
        "serviceAccount:crypter@payments",
    );
    env.bind(
        &key("aes"),
        "roles/kms.cryptoKeyEncrypter",
        "serviceAccount:encrypter@payments",
    );
    for k in ["ec", "hmac", "rsa", "pss"] {
        env.bind(
            &key(k),
            "roles/kms.signerVerifier",
            "serviceAccount:signer@payments",
        );
    }

    // encrypt -> decrypt with AAD; binary data survives.
    let plain: Vec<u8> = (0..=255u8).chain([0, 10, 13, 0]).collect();
    let pt = file(&env, "plain", &plain);
    let aad = file(&env, "aad", b"order-42");
    let ct1 = env.dir().join("ct1");
    crypto(
        &env,
        &crypter,
        "encrypt",
        "aes",
        &pt,
        &["--out", s(&ct1), "--aad-file", s(&aad)],
    )
    .ok();
    let c1 = std::fs::read(&ct1).unwrap();
    assert_eq!(&c1[..3], b"KW1");
    assert_eq!(u64::from_be_bytes(c1[3..11].try_into().unwrap()), 1);
    assert_eq!(c1.len(), 3 + 8 + 12 + plain.len() + 16);
    let back = env.dir().join("back");
    crypto(
        &env,
        &crypter,
        "decrypt",
        "aes",
        &ct1,
        &["--out", s(&back), "--aad-file", s(&aad)],
    )
    .ok();
    assert_eq!(std::fs::read(&back).unwrap(), plain);
    // Wrong AAD: refused with a clear message.
    let bad_aad = file(&env, "bad-aad", b"order-43");
    let out = crypto(
        &env,
        &crypter,
        "decrypt",
        "aes",
        &ct1,
        &["--aad-file", s(&bad_aad)],
    );
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("decryption failed"), "{out:#?}");

    // After a rotation: new ciphertexts name version 2, old ones still decrypt.
    env.ctl(&["key", "rotate", &key("aes")]).ok();
    let ct2 = env.dir().join("ct2");
    crypto(&env, &crypter, "encrypt", "aes", &pt, &["--out", s(&ct2)]).ok();
    let c2 = std::fs::read(&ct2).unwrap();
    assert_eq!(u64::from_be_bytes(c2[3..11].try_into().unwrap()), 2);
    let back1 = env.dir().join("back1");
    crypto(
        &env,
        &crypter,
        "decrypt",
        "aes",
        &ct1,
        &["--out", s(&back1), "--aad-file", s(&aad)],
    )
    .ok();
    assert_eq!(std::fs::read(&back1).unwrap(), plain);
    let back2 = env.dir().join("back2");
    crypto(
        &env,
        &crypter,
        "decrypt",
        "aes",
        &ct2,
        &["--out", s(&back2)],
    )
    .ok();
    assert_eq!(std::fs::read(&back2).unwrap(), plain);

    // A version that is not ENABLED: a clear error.
    env.ctl(&[
        "version",
        "disable",
        &format!("{}/cryptoKeyVersions/1", key("aes")),
    ])
    .ok();
    let out = crypto(
        &env,
        &crypter,
        "decrypt",
        "aes",
        &ct1,
        &["--aad-file", s(&aad)],
    );
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("not ENABLED"), "{out:#?}");

    // An encrypter alone cannot decrypt: a clear error and an audit record.
    let ct3 = env.dir().join("ct3");
    crypto(&env, &encrypter, "encrypt", "aes", &pt, &["--out", s(&ct3)]).ok();
    let out = crypto(&env, &encrypter, "decrypt", "aes", &ct3, &[]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stderr.contains("permission denied") && out.stderr.contains("useToDecrypt"),
        "{out:#?}"
    );
    // The record is written by the audit thread within its batching window.
    let found = (0..50).any(|_| {
        let log = env.ctl(&["--json", "audit", "query", "--result", "denied"]);
        log.ok();
        let hit = log.json_lines().iter().any(|r| {
            r["action"] == "key.decrypt" && r["principal"] == "serviceAccount:encrypter@payments"
        });
        if !hit {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        hit
    });
    assert!(found, "no denied Decrypt record for the encrypter");

    // EC sign: a DER signature that openssl verifies against the public key.
    let msg = file(&env, "msg", b"sign me through keywardctl");
    let sig = env.dir().join("sig");
    crypto(&env, &signer, "sign", "ec", &msg, &["--out", s(&sig)]).ok();
    let pem = env.ctl_client_with_key(&signer, &["key", "get-public-key", &key("ec")]);
    pem.ok();
    let pub_pem = file(&env, "pub.pem", pem.stdout.as_bytes());
    let ossl = Command::new("openssl")
        .args([
            "dgst",
            "-sha256",
            "-verify",
            s(&pub_pem),
            "-signature",
            s(&sig),
            s(&msg),
        ])
        .output()
        .expect("run openssl");
    assert!(ossl.status.success(), "openssl rejects: {ossl:?}");
    // --digest sha256 gives a signature over the same digest.
    let sig2 = env.dir().join("sig2");
    crypto(
        &env,
        &signer,
        "sign",
        "ec",
        &msg,
        &["--digest", "sha256", "--out", s(&sig2)],
    )
    .ok();
    // verify: exit 0 on valid, 1 with a message on invalid.
    for sg in [&sig, &sig2] {
        crypto(&env, &signer, "verify", "ec", &msg, &["--signature", s(sg)]).ok();
    }
    let other = file(&env, "other", b"another message");
    let out = crypto(
        &env,
        &signer,
        "verify",
        "ec",
        &other,
        &["--signature", s(&sig)],
    );
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("INVALID"), "{out:#?}");

    // RSA PKCS#1 v1.5 and PSS: openssl verifies with the public key; so does keywardctl.
    for (k, pss) in [("rsa", false), ("pss", true)] {
        let sig = env.dir().join(format!("sig-{k}"));
        crypto(&env, &signer, "sign", k, &msg, &["--out", s(&sig)]).ok();
        let pem = env.ctl_client_with_key(&signer, &["key", "get-public-key", &key(k)]);
        pem.ok();
        let pub_pem = file(&env, &format!("{k}.pem"), pem.stdout.as_bytes());
        let mut cmd = Command::new("openssl");
        cmd.args(["dgst", "-sha256", "-verify", s(&pub_pem)]);
        if pss {
            cmd.args([
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:32",
            ]);
        }
        let ossl = cmd
            .args(["-signature", s(&sig), s(&msg)])
            .output()
            .expect("run openssl");
        assert!(ossl.status.success(), "openssl rejects {k}: {ossl:?}");
        crypto(
            &env,
            &signer,
            "verify",
            k,
            &msg,
            &["--digest", "sha256", "--signature", s(&sig)],
        )
        .ok();
    }

    // mac: tag, then --verify.
    let tag = env.dir().join("tag");
    crypto(&env, &signer, "mac", "hmac", &msg, &["--out", s(&tag)]).ok();
    assert_eq!(std::fs::read(&tag).unwrap().len(), 32);
    crypto(&env, &signer, "mac", "hmac", &msg, &["--verify", s(&tag)]).ok();
    let out = crypto(&env, &signer, "mac", "hmac", &other, &["--verify", s(&tag)]);
    assert_eq!(out.code, 1, "{out:#?}");

    // The signer sees nothing of the AES key.
    let out = crypto(&env, &signer, "encrypt", "aes", &msg, &[]);
    assert_eq!(out.code, 1, "{out:#?}");
}
