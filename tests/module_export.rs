//! Key export through the built `libkeyward_pkcs11.so` (issue 7 acceptance 4, design §4's
//! `C_WrapKey` row): a key created `--exportable` leaves the token wrapped (AES-KWP, RFC
//! 5649) by a principal holding exportKeyMaterial and useToEncrypt on the wrapping key; the
//! blob unwraps with `openssl enc -id-aes256-wrap-pad` to the key's material (checked by
//! decrypting, with that material imported as another key, what the exported key
//! encrypted); a non-exportable key is refused by the token (`CKR_KEY_UNEXTRACTABLE`), so is
//! a principal without exportKeyMaterial, and one without useToEncrypt on the wrapping key
//! gets `CKR_WRAPPING_KEY_HANDLE_INVALID`; `keywardctl key export` goes through the same gate
//! (the same blob; the same refusals); every export is audited at warning level.

mod common;

use common::daemon::Env;
use common::module::{self, login_with, rv, Settings};
use common::ADMIN;
use cryptoki::error::RvError;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use std::process::Command;

const RING: &str = "projects/payments/keyRings/web";

fn key(id: &str) -> String {
    format!("{RING}/cryptoKeys/{id}")
}

fn sa(id: &str) -> String {
    format!("serviceAccount:{id}@payments")
}

fn secret(s: &Session, label: &str) -> ObjectHandle {
    let found = s
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .unwrap();
    assert_eq!(found.len(), 1, "{label}: {found:?}");
    found[0]
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `openssl enc -d -id-aes256-wrap-pad` of `blob` with `kek`.
fn openssl_unwrap(dir: &std::path::Path, kek: &[u8], blob: &[u8]) -> Vec<u8> {
    std::fs::write(dir.join("wrapped.bin"), blob).unwrap();
    let out = Command::new("openssl")
        .args([
            "enc",
            "-d",
            "-id-aes256-wrap-pad",
            "-K",
            &hex(kek),
            "-iv",
            "A65959A6",
            "-in",
        ])
        .arg(dir.join("wrapped.bin"))
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl could not unwrap: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn aes_template(label: &str, value: &[u8], wrap: bool) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(wrap),
        Attribute::Value(value.to_vec()),
    ]
}

#[test]
fn exportable_keys_leave_the_token_wrapped_and_audited() {
    let excl = module::exclusive();
    let mut env = Env::new();
    let exporter = env.service_account_offline("exporter");
    let user = env.service_account_offline("user");
    let nowrap = env.service_account_offline("nowrap");
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
    // Creating an exportable key needs exportKeyMaterial on the ring (kms:FullAccess has it).
    env.bind(RING, "kms:FullAccess", ADMIN);
    for (id, exportable) in [("exp", true), ("plain", false)] {
        let mut args = vec![
            "key",
            "create",
            "--keyring",
            RING,
            "--purpose",
            "ENCRYPT_DECRYPT",
            "--algorithm",
            "AES_256_GCM",
            id,
        ];
        if exportable {
            args.push("--exportable");
        }
        env.ctl(&args).ok();
    }
    env.bind(RING, "kms:FullAccess", &sa("exporter"));
    env.bind(RING, "roles/kms.cryptoOperator", &sa("user"));
    env.bind(RING, "roles/kms.viewer", &sa("nowrap"));
    env.bind(&key("exp"), "kms:FullAccess", &sa("nowrap"));
    let dir = env.dir().to_path_buf();

    let settings = Settings::new(&env.client_socket, &dir.join("module.toml"));
    let p11 = module::cryptoki(&settings);
    let web = module::ring_slot(&p11, RING);
    let s = p11.open_rw_session(web).unwrap();

    // --- the exporter: a wrapping key of known material (plaintext import), then the export.
    login_with(&s, &exporter);
    let kek: Vec<u8> = (0u8..32)
        .map(|i| i.wrapping_mul(7).wrapping_add(3))
        .collect();
    let wrapping = s.create_object(&aes_template("kek", &kek, true)).unwrap();
    // Its Keyward key id (generated: p11-...), the only key made through the module so far.
    let listed = env.ctl(&["--json", "key", "list", "--keyring", RING]);
    listed.ok();
    let kek_key = listed.stdout[..]
        .split('"')
        .find(|w| w.contains("/cryptoKeys/p11-"))
        .expect("the wrapping key's name")
        .to_string();
    let exp = secret(&s, "exp");
    let plain = secret(&s, "plain");
    // The exported key still reports sensitive, and extractable.
    match s
        .get_attributes(
            exp,
            &[
                cryptoki::object::AttributeType::Sensitive,
                cryptoki::object::AttributeType::Extractable,
            ],
        )
        .unwrap()[..]
    {
        [Attribute::Sensitive(true), Attribute::Extractable(true)] => {}
        ref other => panic!("{other:?}"),
    }
    let blob = s
        .wrap_key(&Mechanism::AesKeyWrapPad, wrapping, exp)
        .unwrap();
    let material = openssl_unwrap(&dir, &kek, &blob);
    assert_eq!(material.len(), 32);
    // keywardctl key export: the same gate; AES-KWP is deterministic, so the same blob.
    let creds = |who: &str, name: &str| {
        let p = dir.join(name);
        std::fs::write(&p, format!("{who}\n")).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        p
    };
    let exporter_creds = creds(&exporter, "exporter.key");
    let user_creds = creds(&user, "user.key");
    let client = env.client_socket.to_str().unwrap().to_string();
    let export = |who: &std::path::Path, k: &str| {
        env.ctl_env(
            &[
                "key",
                "export",
                "--key",
                &key(k),
                "--wrapping-key",
                &kek_key,
                "--out",
                dir.join("ctl-wrapped.bin").to_str().unwrap(),
            ],
            &[
                ("KEYWARD_CREDENTIALS", who.to_str().unwrap()),
                ("KEYWARD_SOCKET", &client),
            ],
        )
    };
    let out = export(&exporter_creds, "exp");
    out.ok();
    assert!(out.stderr.contains("left the token wrapped"), "{out:#?}");
    assert_eq!(std::fs::read(dir.join("ctl-wrapped.bin")).unwrap(), blob);
    let out = export(&exporter_creds, "plain");
    out.failed();
    assert!(
        out.stderr.contains("CKR_KEY_UNEXTRACTABLE") || out.stderr.contains("token refused"),
        "{out:#?}"
    );
    let out = export(&user_creds, "exp");
    out.failed();
    assert!(out.stderr.contains("exportKeyMaterial"), "{out:#?}");
    // It is exp's material: what exp encrypts, the material (imported as a key) decrypts.
    let copy = s
        .create_object(&aes_template("copy", &material, false))
        .unwrap();
    let mut iv = [9u8; 12];
    let text = b"exported keys decrypt the same".to_vec();
    let ct = s
        .encrypt(
            &Mechanism::AesGcm(GcmParams::new(&mut iv, &[], 128.into()).unwrap()),
            exp,
            &text,
        )
        .unwrap();
    let back = s
        .decrypt(
            &Mechanism::AesGcm(GcmParams::new(&mut iv, &[], 128.into()).unwrap()),
            copy,
            &ct,
        )
        .unwrap();
    assert_eq!(back, text);
    // A key created without --exportable: the token's own refusal.
    assert_eq!(
        rv(s.wrap_key(&Mechanism::AesKeyWrapPad, wrapping, plain)),
        RvError::KeyUnextractable
    );
    // Not a wrapping key (no CKA_WRAP).
    assert_eq!(
        rv(s.wrap_key(&Mechanism::AesKeyWrapPad, copy, exp)),
        RvError::WrappingKeyHandleInvalid
    );
    s.logout().unwrap();

    // --- a principal without exportKeyMaterial (cryptoOperator on the ring): refused.
    login_with(&s, &user);
    let exp_u = secret(&s, "exp");
    assert_eq!(
        rv(s.wrap_key(&Mechanism::AesKeyWrapPad, wrapping, exp_u)),
        RvError::KeyUnextractable
    );
    s.logout().unwrap();
    // --- with exportKeyMaterial on exp but no useToEncrypt on the wrapping key: refused.
    login_with(&s, &nowrap);
    assert_eq!(
        rv(s.wrap_key(&Mechanism::AesKeyWrapPad, wrapping, exp)),
        RvError::WrappingKeyHandleInvalid
    );
    s.logout().unwrap();
    drop(s);
    drop(p11);
    drop(excl);

    // --- every export is audited at warning level: the one allowed, the refusals.
    let exp_v1 = format!("{}/cryptoKeyVersions/1", key("exp"));
    let plain_v1 = format!("{}/cryptoKeyVersions/1", key("plain"));
    let mut records = Vec::new();
    for _ in 0..50 {
        let out = env.ctl(&["--json", "audit", "query", "--action", "C_WrapKey"]);
        out.ok();
        records = out.json_lines();
        if records.len() >= 5 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(records.len(), 5, "{records:#?}");
    assert!(
        records.iter().all(|r| r["severity"] == "warning"),
        "{records:#?}"
    );
    let has = |result: &str, who: &str, resource: &str, detail: &str| {
        records.iter().any(|r| {
            r["result"] == result
                && r["principal"] == who
                && r["resource"] == resource
                && r["detail"].as_str().is_some_and(|d| d.contains(detail))
        })
    };
    assert!(has(
        "allowed",
        &sa("exporter"),
        &exp_v1,
        "key material exported"
    ));
    assert!(has(
        "denied",
        &sa("exporter"),
        &plain_v1,
        "the token refused"
    ));
    assert!(has("denied", &sa("user"), &exp_v1, "exportKeyMaterial"));
    assert!(has("denied", &sa("nowrap"), &exp_v1, "useToEncrypt"));
    // keywardctl's exports too: one allowed, two refused, all at warning level.
    let mut ctl = Vec::new();
    for _ in 0..50 {
        let out = env.ctl(&["--json", "audit", "query", "--action", "ExportKey"]);
        out.ok();
        ctl = out.json_lines();
        if ctl.len() >= 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(ctl.len(), 3, "{ctl:#?}");
    assert!(ctl.iter().all(|r| r["severity"] == "warning"), "{ctl:#?}");
    assert_eq!(ctl.iter().filter(|r| r["result"] == "allowed").count(), 1);
    // Other records stay at info level.
    let other = env.ctl(&["--json", "audit", "query", "--action", "C_EncryptInit"]);
    other.ok();
    let enc = other.json_lines();
    assert!(!enc.is_empty() && enc.iter().all(|r| r["severity"] == "info"));
}
