//! `keywardctl sign|verify --digest` with a digest the key's algorithm does not sign (issue 18
//! item 5): refused before the token with a message naming the digest the key takes, and
//! the token's own refusals named by their PKCS#11 code (never "CKR_UNKNOWN"). A real
//! SoftHSM2 token and a real keywardd in temporary directories.

mod common;

use common::daemon::Env;
use common::Output;
use std::path::{Path, PathBuf};

const RING: &str = "projects/payments/keyRings/web";

fn key(id: &str) -> String {
    format!("{RING}/cryptoKeys/{id}")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn file(env: &Env, name: &str, bytes: &[u8]) -> PathBuf {
    let p = env.dir().join(name);
    std::fs::write(&p, bytes).expect("write");
    p
}

#[track_caller]
fn refused_naming(out: &Output, needles: &[&str]) {
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(!out.stderr.contains("CKR_UNKNOWN"), "{out:#?}");
    for n in needles {
        assert!(out.stderr.contains(n), "no {n:?} in the refusal: {out:#?}");
    }
}

#[test]
fn a_digest_the_key_does_not_sign_is_refused_naming_the_one_it_does() {
    let mut env = Env::new();
    let signer = env.service_account_offline("signer");
    env.start();
    env.web_ring();
    env.create_keys(
        RING,
        &[
            ("p256", "ASYMMETRIC_SIGN", "EC_SIGN_P256_SHA256"),
            ("p384", "ASYMMETRIC_SIGN", "EC_SIGN_P384_SHA384"),
            ("rsa", "ASYMMETRIC_SIGN", "RSA_SIGN_PKCS1_2048_SHA256"),
            ("pss", "ASYMMETRIC_SIGN", "RSA_SIGN_PSS_2048_SHA256"),
        ],
    );
    for k in ["p256", "p384", "rsa", "pss"] {
        env.bind(
            &key(k),
            "roles/kms.signerVerifier",
            "serviceAccount:signer@payments",
        );
    }
    let data = file(&env, "data", b"release 1.2.3");
    let sig = env.dir().join("sig");
    let run = |verb: &str, k: &str, digest: &str, more: &[&str]| {
        let k = key(k);
        let mut args = vec![verb, "--key", &k, "--in", s(&data), "--digest", digest];
        args.extend_from_slice(more);
        env.ctl_client_with_key(&signer, &args)
    };

    // The case: a P-256 key and a SHA-384 digest.
    let out = run("sign", "p256", "sha384", &["--out", s(&sig)]);
    refused_naming(&out, &["SHA-256", "--digest sha256"]);
    // The other way round, and the RSA keys (whose SHA-256 DigestInfo would have been put
    // in front of a SHA-384 digest).
    refused_naming(
        &run("sign", "p384", "sha256", &["--out", s(&sig)]),
        &["SHA-384", "--digest sha384"],
    );
    for k in ["rsa", "pss"] {
        refused_naming(
            &run("sign", k, "sha384", &["--out", s(&sig)]),
            &["SHA-256", "--digest sha256"],
        );
    }

    // The digests the keys take sign, and verify takes the same rule.
    run("sign", "p384", "sha384", &["--out", s(&sig)]).ok();
    run("verify", "p384", "sha384", &["--signature", s(&sig)]).ok();
    refused_naming(
        &run("verify", "p384", "sha256", &["--signature", s(&sig)]),
        &["SHA-384", "--digest sha384"],
    );
    run("sign", "p256", "sha256", &["--out", s(&sig)]).ok();
    refused_naming(
        &run("verify", "p256", "sha384", &["--signature", s(&sig)]),
        &["SHA-256", "--digest sha256"],
    );

    // A digest keywardctl does not know is a usage error, not a silent SHA-256.
    let out = run("sign", "p256", "md5", &["--out", s(&sig)]);
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(out.stderr.contains("sha256"), "{out:#?}");
}
