//! keywardd on NSS softokn 3.87 (`libsoftokn3.so`; issue 17 "What was found"), each test on a
//! private NSS database (ci/nss-token.sh, [`common::nss`]) opened with `[token] init_args`:
//! it starts (its audit key is made), AES-GCM works through keywardctl and the module, a
//! pooled token session serves again after token errors, the signed audit head is kept in
//! the token as design §6 allows (softokn refuses token data objects), every key type serves
//! through the module (signatures verified by OpenSSL), import jobs of both methods are made
//! and AES-256 material imported into them passes a known-answer check, and `audit verify`
//! passes.

use crate::common::byok::create_job;
use crate::common::daemon::Env;
use crate::common::module::{self, Settings};
use crate::common::nss;
use crate::common::Output;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use std::path::Path;

const RING: &str = "projects/payments/keyRings/web";

fn key(id: &str) -> String {
    format!("{RING}/cryptoKeys/{id}")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The one object of `class` labelled `label`.
fn labelled(s: &Session, class: ObjectClass, label: &str) -> ObjectHandle {
    let found = s
        .find_objects(&[
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .unwrap();
    assert_eq!(found.len(), 1, "one {class} labelled {label}: {found:?}");
    found[0]
}

/// keywardctl VERB --key KEY --in INPUT MORE... as the service account whose key is `who`.
fn crypto(env: &Env, who: &str, verb: &str, k: &str, input: &Path, more: &[&str]) -> Output {
    let k = key(k);
    let mut args = vec![verb, "--key", &k, "--in", s(input)];
    args.extend_from_slice(more);
    env.ctl_client_with_key(who, &args)
}

/// AES-GCM with a 128-bit tag.
fn gcm<'a>(iv: &'a mut [u8; 12], aad: &'a [u8]) -> Mechanism<'a> {
    Mechanism::AesGcm(GcmParams::new(iv, aad, 128.into()).unwrap())
}

/// An NSS token, a service account per name in `accounts` (their keys returned), keywardd
/// started on it, ring `web`.
fn started(accounts: &[&str]) -> (Env, Vec<String>) {
    let mut env = Env::new_on(nss::token);
    let keys = accounts
        .iter()
        .map(|a| env.service_account_offline(a))
        .collect();
    // Found at f6fb756: keywardd could not pass softokn its database (no init_args), and with
    // them its CKA_COPYABLE probe (refused on token objects with CKR_GENERAL_ERROR) answered
    // wrongly, so the audit key could not be made and keywardd exited.
    env.start();
    env.web_ring();
    (env, keys)
}

/// Issue 17 NSS (2): AES-GCM encryption failed with CKR_BUFFER_TOO_SMALL (softokn's length
/// query leaves out the tag); and the session it failed on went back to the pool with the
/// operation active. Both through keywardctl and through the module, several times in a row
/// (keywardd's pooled sessions are reused).
#[test]
fn nss_aes_gcm_encrypts_and_decrypts() {
    let excl = module::exclusive();
    let (env, keys) = started(&["crypter"]);
    let crypter = &keys[0];
    env.create_key(RING, "aes", "ENCRYPT_DECRYPT", "AES_256_GCM");
    env.bind(
        &key("aes"),
        "roles/kms.cryptoKeyEncrypterDecrypter",
        "serviceAccount:crypter@payments",
    );
    let plain: Vec<u8> = (0..=255u8).collect();
    let pt = env.dir().join("plain");
    std::fs::write(&pt, &plain).unwrap();
    for round in 0..3 {
        let ct = env.dir().join(format!("ct{round}"));
        let out = crypto(&env, crypter, "encrypt", "aes", &pt, &["--out", s(&ct)]);
        assert_eq!(out.code, 0, "encrypt round {round} on NSS: {out:#?}");
        let c = std::fs::read(&ct).unwrap();
        assert_eq!(c.len(), 3 + 8 + 12 + plain.len() + 16, "round {round}");
        let back = env.dir().join(format!("back{round}"));
        crypto(&env, crypter, "decrypt", "aes", &ct, &["--out", s(&back)]).ok();
        assert_eq!(std::fs::read(&back).unwrap(), plain, "round {round}");
    }

    // Through the module: C_Encrypt's own two calls, then a decryption.
    let settings = Settings::new(&env.client_socket, &env.dir().join("module.toml"))
        .credentials(&env.dir().join("crypter.key"), crypter);
    let p11 = module::cryptoki(&settings);
    let slot = module::ring_slot(&p11, RING);
    let sess = p11.open_rw_session(slot).unwrap();
    sess.login(UserType::User, None).unwrap();
    let k = labelled(&sess, ObjectClass::SECRET_KEY, "aes");
    for round in 0..3u8 {
        let mut iv = [round; 12];
        let ct = sess
            .encrypt(
                &Mechanism::AesGcm(GcmParams::new(&mut iv, b"aad", 128.into()).unwrap()),
                k,
                b"through the module",
            )
            .unwrap_or_else(|e| panic!("module AES-GCM encrypt round {round} on NSS: {e}"));
        assert_eq!(ct.len(), 18 + 16);
        let mut iv = [round; 12];
        let pt = sess
            .decrypt(
                &Mechanism::AesGcm(GcmParams::new(&mut iv, b"aad", 128.into()).unwrap()),
                k,
                &ct,
            )
            .unwrap();
        assert_eq!(pt, b"through the module");
    }
    // A pooled token session serves again after token errors: a tampered ciphertext and a
    // wrong AAD are refused by the token, then the next operations, on the same few pooled
    // sessions, work.
    let mut iv = [9u8; 12];
    let mut ct = sess
        .encrypt(&gcm(&mut iv, b"aad"), k, b"after errors")
        .unwrap();
    ct[0] ^= 1;
    for aad in [&b"aad"[..], &b"other"[..]] {
        let mut iv = [9u8; 12];
        let err = sess.decrypt(&gcm(&mut iv, aad), k, &ct);
        assert!(err.is_err(), "a tampered ciphertext decrypted on NSS");
    }
    ct[0] ^= 1;
    for _ in 0..4 {
        let mut iv = [9u8; 12];
        let pt = sess
            .decrypt(&gcm(&mut iv, b"aad"), k, &ct)
            .expect("a pooled session after token errors");
        assert_eq!(pt, b"after errors");
        let mut iv = [10u8; 12];
        sess.encrypt(&gcm(&mut iv, b"aad"), k, b"again")
            .expect("encrypt after token errors");
    }
    drop(sess);
    drop(p11);
    drop(excl);
}

/// Issue 17 NSS (3): softokn refuses token data objects with any template, so keywardd could
/// not store the signed chain head. Design §6: the head is then kept in one dedicated object
/// whose label is rewritten; `status` and `audit verify` show the token head, not stale.
#[test]
fn nss_signed_audit_head_is_kept_in_the_token() {
    let (mut env, _) = started(&["nobody"]);
    env.create_key(RING, "ec", "ASYMMETRIC_SIGN", "EC_SIGN_P256_SHA256");
    // A clean stop signs and stores the head at once.
    let status = env.signal_and_wait("TERM");
    assert!(
        status.success(),
        "keywardd stopped with {status}: {}",
        env.daemon_log()
    );
    let log = env.daemon_log();
    assert!(
        !log.contains("cannot store the signed audit head"),
        "the head was not stored on NSS: {log}"
    );
    env.start();
    let js = env.ctl(&["--json", "status"]).ok().json();
    let head = &js["auditHead"]["tokenHead"];
    assert!(
        head["seq"].as_i64().unwrap_or(0) > 0,
        "status shows no token head on NSS: {js:#}"
    );
    let out = env.ctl(&["audit", "verify"]);
    out.ok();
    assert!(
        !out.stdout.contains("no signed head") && !out.stderr.contains("no signed head"),
        "{out:#?}"
    );
}

/// The demo's flow for every algorithm softokn has: every key type is made, asymmetric ones
/// sign through the module (verified by OpenSSL), OAEP-SHA256 and RSA-4096 work, import jobs
/// of both methods are made, and `audit verify` passes.
#[test]
fn nss_serves_every_key_type() {
    let excl = module::exclusive();
    let (env, keys) = started(&["signer"]);
    let signer = &keys[0];
    let made = [
        ("ec256", "ASYMMETRIC_SIGN", "EC_SIGN_P256_SHA256"),
        ("ec384", "ASYMMETRIC_SIGN", "EC_SIGN_P384_SHA384"),
        ("pkcs1", "ASYMMETRIC_SIGN", "RSA_SIGN_PKCS1_2048_SHA256"),
        ("pss", "ASYMMETRIC_SIGN", "RSA_SIGN_PSS_3072_SHA256"),
        ("rsa4k", "ASYMMETRIC_SIGN", "RSA_SIGN_PKCS1_4096_SHA256"),
        ("oaep1", "ASYMMETRIC_DECRYPT", "RSA_DECRYPT_OAEP_2048_SHA1"),
        (
            "oaep256",
            "ASYMMETRIC_DECRYPT",
            "RSA_DECRYPT_OAEP_3072_SHA256",
        ),
        ("aes", "ENCRYPT_DECRYPT", "AES_256_GCM"),
        ("hmac", "MAC", "HMAC_SHA256"),
    ];
    for (id, purpose, algorithm) in made {
        env.create_key(RING, id, purpose, algorithm);
    }
    for (id, _, _) in made {
        env.bind(
            &key(id),
            "roles/kms.signerVerifier",
            "serviceAccount:signer@payments",
        );
    }
    env.bind(
        &key("oaep256"),
        "roles/kms.cryptoKeyDecrypter",
        "serviceAccount:signer@payments",
    );

    // Through the module: ECDSA and RSA signatures verified by OpenSSL.
    let settings = Settings::new(&env.client_socket, &env.dir().join("module.toml"))
        .credentials(&env.dir().join("signer.key"), signer);
    let p11 = module::cryptoki(&settings);
    let slot = module::ring_slot(&p11, RING);
    let sess = p11.open_rw_session(slot).unwrap();
    sess.login(UserType::User, None).unwrap();
    let data = b"keyward on NSS softokn".to_vec();
    for (id, hash, mech) in [
        ("ec256", "sha256", Mechanism::EcdsaSha256),
        ("ec384", "sha384", Mechanism::EcdsaSha384),
        ("pkcs1", "sha256", Mechanism::Sha256RsaPkcs),
        ("rsa4k", "sha256", Mechanism::Sha256RsaPkcs),
    ] {
        let k = labelled(&sess, ObjectClass::PRIVATE_KEY, id);
        let sig = sess
            .sign(&mech, k, &data)
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        let sig = if id.starts_with("ec") {
            keyward_token::public_key::ecdsa_raw_to_der(&sig).unwrap()
        } else {
            sig
        };
        let pem = env.ctl_with_key(signer, &["key", "get-public-key", &key(id)]);
        pem.ok();
        assert!(
            env.openssl_verify(hash, &pem.stdout, &data, &sig),
            "openssl rejects the {id} signature made on NSS"
        );
    }

    // OAEP-SHA256: OpenSSL encrypts to the public key, the module decrypts.
    let pem = env.dir().join("oaep256.pem");
    let out = env.ctl_with_key(signer, &["key", "get-public-key", &key("oaep256")]);
    out.ok();
    std::fs::write(&pem, &out.stdout).unwrap();
    let secret = env.dir().join("secret");
    std::fs::write(&secret, b"a secret for OAEP-SHA256").unwrap();
    let ct = env.dir().join("oaep.ct");
    crate::common::byok::openssl(&[
        "pkeyutl",
        "-encrypt",
        "-pubin",
        "-inkey",
        s(&pem),
        "-pkeyopt",
        "rsa_padding_mode:oaep",
        "-pkeyopt",
        "rsa_oaep_md:sha256",
        "-pkeyopt",
        "rsa_mgf1_md:sha256",
        "-in",
        s(&secret),
        "-out",
        s(&ct),
    ]);
    let oaep = PkcsOaepParams::new(
        MechanismType::SHA256,
        PkcsMgfType::MGF1_SHA256,
        PkcsOaepSource::empty(),
    );
    let k = labelled(&sess, ObjectClass::PRIVATE_KEY, "oaep256");
    let back = sess
        .decrypt(
            &Mechanism::RsaPkcsOaep(oaep),
            k,
            &std::fs::read(&ct).unwrap(),
        )
        .expect("OAEP-SHA256 decryption on NSS");
    assert_eq!(back, b"a secret for OAEP-SHA256");
    drop(sess);
    drop(p11);
    drop(excl);

    // Import jobs of both methods are made in the token (their RSA pairs); importing into
    // them: nss_byok_imported_aes_key_passes_a_known_answer_check.
    for (i, method) in ["rsa-oaep-3072-sha1-aes-256", "rsa-oaep-3072-sha256-aes-256"]
        .iter()
        .enumerate()
    {
        create_job(&env, RING, &format!("j{i}"), method);
    }

    env.ctl(&["audit", "verify"]).ok();

    // What the token can do, and the README's column, agree.
    let out = env.ctl(&["--json", "token", "capabilities"]);
    out.ok();
    let json = out.json();
    println!("{json:#}");
    crate::common::backing::assert_readme_matches("NSS", &json);
}

/// Issue 17 acceptance: "a known-answer check for symmetric keys imported by BYOK where the
/// token supports import". A known AES-256 key, wrapped with the openssl CLI for an import
/// job of each RSA-AES method softokn has, is imported through keywardctl; what keywardd
/// then encrypts with it, OpenSSL decrypts with the known key.
#[test]
fn nss_byok_imported_aes_key_passes_a_known_answer_check() {
    use crate::common::byok::{aes_material, openssl_gcm_decrypt, openssl_wrap_oaep};
    let (env, keys) = started(&["crypter"]);
    let crypter = &keys[0];
    let dir = env.dir().to_path_buf();
    for (i, (method, hash)) in [
        ("rsa-oaep-3072-sha1-aes-256", "sha1"),
        ("rsa-oaep-3072-sha256-aes-256", "sha256"),
    ]
    .iter()
    .enumerate()
    {
        let job_pem = create_job(&env, RING, &format!("j{i}"), method);
        let id = format!("imported{i}");
        let aes = aes_material(&dir, &id);
        let wrapped = openssl_wrap_oaep(&dir, &job_pem, &aes.wrapped_input, &id, hash);
        let k = key(&id);
        let job = format!("{RING}/importJobs/j{i}");
        let out = env.ctl(&[
            "key",
            "import",
            "--import-job",
            &job,
            "--key",
            &k,
            "--wrapped-key-file",
            s(&wrapped),
            "--algorithm",
            "AES_256_GCM",
        ]);
        assert_eq!(out.code, 0, "BYOK import ({method}) on NSS: {out:#?}");
        env.bind(
            &k,
            "roles/kms.cryptoKeyEncrypterDecrypter",
            "serviceAccount:crypter@payments",
        );
        let plain = dir.join(format!("{id}.plain"));
        std::fs::write(&plain, format!("known answer for {method}")).unwrap();
        let ct = dir.join(format!("{id}.ct"));
        crypto(&env, crypter, "encrypt", &id, &plain, &["--out", s(&ct)]).ok();
        assert_eq!(
            openssl_gcm_decrypt(&dir, &aes.original, &std::fs::read(&ct).unwrap()),
            std::fs::read(&plain).unwrap(),
            "OpenSSL decrypts, with the known key, what the key imported on NSS ({method}) encrypted"
        );
    }
    env.ctl(&["audit", "verify"]).ok();
}

/// Issue 17 NSS: key export with RFC 5649 (`CKM_AES_KEY_WRAP_PAD` through the module,
/// keywardctl's default `aes-kwp`) must give RFC 5649 on NSS softokn too, whose own
/// `CKM_AES_KEY_WRAP_PAD` is RFC 3394 with PKCS#7 padding (see crates/token/src/kwp.rs).
/// The blob must unwrap with OpenSSL's `id-aes256-wrap-pad` under the known wrapping key, to
/// the exported key's material (what the key encrypts, OpenSSL decrypts with it); keywardctl
/// key export gives the same blob.
#[test]
fn nss_export_wraps_with_rfc5649() {
    use crate::common::byok::{hex, openssl_gcm_body};
    use crate::common::module::login_with;
    let excl = module::exclusive();
    let (env, keys) = started(&["exporter"]);
    let exporter = &keys[0];
    env.ctl(&[
        "keyring",
        "update",
        RING,
        "--allow-plaintext-import",
        "true",
    ])
    .ok();
    env.bind(RING, "kms:FullAccess", crate::common::ADMIN);
    env.ctl(&[
        "key",
        "create",
        "--keyring",
        RING,
        "--purpose",
        "ENCRYPT_DECRYPT",
        "--algorithm",
        "AES_256_GCM",
        "--exportable",
        "exp",
    ])
    .ok();
    env.bind(RING, "kms:FullAccess", "serviceAccount:exporter@payments");
    let dir = env.dir().to_path_buf();
    let settings = Settings::new(&env.client_socket, &dir.join("module.toml"));
    let p11 = module::cryptoki(&settings);
    let slot = module::ring_slot(&p11, RING);
    let sess = p11.open_rw_session(slot).unwrap();
    login_with(&sess, exporter);
    let kek: Vec<u8> = (0u8..32)
        .map(|i| i.wrapping_mul(11).wrapping_add(5))
        .collect();
    let wrapping = sess
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(cryptoki::object::KeyType::AES),
            Attribute::Token(true),
            Attribute::Label(b"kek".to_vec()),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(true),
            Attribute::Value(kek.clone()),
        ])
        .unwrap();
    let exp = labelled(&sess, ObjectClass::SECRET_KEY, "exp");
    let blob = sess
        .wrap_key(&Mechanism::AesKeyWrapPad, wrapping, exp)
        .expect("C_WrapKey with CKM_AES_KEY_WRAP_PAD on NSS");
    let wrapped = dir.join("wrapped.bin");
    std::fs::write(&wrapped, &blob).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["enc", "-d", "-id-aes256-wrap-pad", "-K", &hex(&kek)])
        .args(["-iv", "A65959A6", "-in", s(&wrapped)])
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "OpenSSL cannot unwrap the export as RFC 5649 ({} bytes: {}): {}",
        blob.len(),
        hex(&blob),
        String::from_utf8_lossy(&out.stderr)
    );
    let material = out.stdout;
    assert_eq!(material.len(), 32, "an AES-256 key's material");
    // It is exp's material: OpenSSL decrypts with it what exp encrypted.
    let mut iv = [7u8; 12];
    let ct = sess
        .encrypt(&gcm(&mut iv, b""), exp, b"exported from NSS")
        .unwrap();
    let key_file = dir.join("material.key");
    std::fs::write(&key_file, &material).unwrap();
    assert_eq!(
        openssl_gcm_body(&dir, &key_file, &[7u8; 12], &ct[..ct.len() - 16]),
        b"exported from NSS"
    );
    // keywardctl key export (aes-kwp by default): the same blob.
    let listed = env.ctl(&["--json", "key", "list", "--keyring", RING]);
    listed.ok();
    let kek_key = listed.stdout[..]
        .split('"')
        .find(|w| w.contains("/cryptoKeys/p11-"))
        .expect("the wrapping key's name")
        .to_string();
    let ctl_out = dir.join("ctl-wrapped.bin");
    let out = env.ctl_client_with_key(
        exporter,
        &[
            "key",
            "export",
            "--key",
            &key("exp"),
            "--wrapping-key",
            &kek_key,
            "--out",
            s(&ctl_out),
        ],
    );
    out.ok();
    assert_eq!(std::fs::read(&ctl_out).unwrap(), blob);
    drop(sess);
    drop(p11);
    drop(excl);
}
