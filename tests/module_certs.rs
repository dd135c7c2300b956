//! Certificate objects through the built `libkeyward_pkcs11.so` (issue 7, design §4
//! "Objects"): `C_CreateObject` of an X.509 certificate (and NSS `certutil -A`) into a ring,
//! read back byte-identical, found by the attributes clients pair and chain by, owned by the
//! key whose public key it carries (visible to whoever sees that key; a CA's to whoever sees
//! the ring), `CKA_VALUE` only with viewPublicKey or a use permission, creation gated by
//! kms.cryptoKeys.create (`CKR_TOKEN_WRITE_PROTECTED`), destruction by create/update
//! (`CKR_ACTION_PROHIBITED`), every change audited.
//!
//! The module is needed built (`cargo build -p keyward-pkcs11`, see `common::module`).

mod common;

use common::daemon::Env;
use common::module::{self, login_with, ring_slot, rv, Settings};
use cryptoki::error::RvError;
use cryptoki::object::{
    Attribute, AttributeInfo, AttributeType, CertificateType, ObjectClass, ObjectHandle,
};
use cryptoki::session::{Session, UserType};
use std::path::Path;
use std::process::Command;

const RING: &str = "projects/payments/keyRings/web";

fn key(id: &str) -> String {
    format!("{RING}/cryptoKeys/{id}")
}

fn sa(id: &str) -> String {
    format!("serviceAccount:{id}@payments")
}

#[track_caller]
fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().expect("cannot run the command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A CA (openssl) and a certificate it issues for `pub_pem`'s key: (leaf DER, CA DER).
fn issue_for(dir: &Path, pub_pem: &str, cn: &str) -> (Vec<u8>, Vec<u8>) {
    std::fs::write(dir.join("leaf-pub.pem"), pub_pem).unwrap();
    if !dir.join("ca.pem").exists() {
        common::openssl_ca(dir, "Test CA", "ca");
    }
    common::openssl_issue(dir, "leaf-pub.pem", cn, "ca", "leaf.der");
    let ca = common::openssl_ok(dir, &["x509", "-outform", "DER", "-in", "ca.pem"]);
    (std::fs::read(dir.join("leaf.der")).unwrap(), ca)
}

fn cert_template(value: &[u8], label: &str, id: &[u8]) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::CERTIFICATE),
        Attribute::CertificateType(CertificateType::X_509),
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
        Attribute::Value(value.to_vec()),
    ]
}

fn certs(s: &Session) -> Vec<ObjectHandle> {
    s.find_objects(&[Attribute::Class(ObjectClass::CERTIFICATE)])
        .unwrap()
}

fn value(s: &Session, o: ObjectHandle) -> Option<Vec<u8>> {
    match s.get_attribute_info(o, &[AttributeType::Value]).unwrap()[0] {
        AttributeInfo::Sensitive => None,
        AttributeInfo::Available(_) => match s.get_attributes(o, &[AttributeType::Value]) {
            Ok(mut v) => match v.pop() {
                Some(Attribute::Value(b)) => Some(b),
                other => panic!("{other:?}"),
            },
            Err(e) => panic!("{e}"),
        },
        ref other => panic!("{other:?}"),
    }
}

fn bytes(s: &Session, o: ObjectHandle, t: AttributeType) -> Vec<u8> {
    match s.get_attributes(o, &[t]).unwrap().pop() {
        Some(Attribute::Id(v))
        | Some(Attribute::Label(v))
        | Some(Attribute::Subject(v))
        | Some(Attribute::Issuer(v))
        | Some(Attribute::SerialNumber(v)) => v,
        other => panic!("{t:?}: {other:?}"),
    }
}

/// The audit records of `action` with `result`, once one satisfies `want` (the writer
/// appends within its batching window; asks again for up to 5 s).
fn audit(
    env: &Env,
    action: &str,
    result: &str,
    want: impl Fn(&serde_json::Value) -> bool,
) -> Vec<serde_json::Value> {
    let mut records = Vec::new();
    for _ in 0..50 {
        let out = env.ctl(&[
            "--json", "audit", "query", "--action", action, "--result", result,
        ]);
        out.ok();
        records = out.json_lines();
        if records.iter().any(&want) {
            return records;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("no {result} {action} record as wanted: {records:#?}");
}

#[test]
fn certificates_through_the_module() {
    let excl = module::exclusive();
    let mut env = Env::new();
    let creator = env.service_account_offline("creator");
    let signer = env.service_account_offline("signer");
    let other = env.service_account_offline("other");
    let viewer = env.service_account_offline("viewer");
    env.start();
    env.web_ring();
    for id in ["ec", "ec2"] {
        env.create_key(RING, id, "ASYMMETRIC_SIGN", "EC_SIGN_P256_SHA256");
    }
    env.bind(RING, "roles/kms.admin", &sa("creator"));
    env.bind(&key("ec"), "roles/kms.signerVerifier", &sa("signer"));
    env.bind(&key("ec2"), "roles/kms.signerVerifier", &sa("other"));
    env.bind(RING, "roles/kms.viewer", &sa("viewer"));
    let pem = env.ctl_with_key(&signer, &["key", "get-public-key", &key("ec")]);
    pem.ok();
    let dir = env.dir().to_path_buf();
    let (leaf, ca) = issue_for(&dir, &pem.stdout, "ec.example");

    // The pre-login principal is this uid (the org admin); each account logs in with its key.
    let settings = Settings::new(&env.client_socket, &dir.join("module.toml"));
    let p11 = module::cryptoki(&settings);
    let web = ring_slot(&p11, RING);

    // --- creation needs kms.cryptoKeys.create on the ring (signer: write-protected, audited).
    let s = p11.open_rw_session(web).unwrap();
    login_with(&s, &signer);
    assert_eq!(
        rv(s.create_object(&cert_template(&leaf, "leaf", b"id-1"))),
        RvError::TokenWriteProtected
    );
    s.logout().unwrap();
    audit(&env, "C_CreateObject", "denied", |r| {
        r["principal"] == sa("signer").as_str()
    });

    // --- the creator stores the leaf and the CA; CKA_VALUE comes back byte-identical.
    login_with(&s, &creator);
    let h = s
        .create_object(&cert_template(&leaf, "leaf", b"id-1"))
        .unwrap();
    let h_ca = s
        .create_object(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::CertificateType(CertificateType::X_509),
            Attribute::Token(true),
            Attribute::Label(b"Test CA".to_vec()),
            Attribute::Value(ca.clone()),
        ])
        .unwrap();
    assert_eq!(value(&s, h).as_deref(), Some(&leaf[..]));
    assert_eq!(value(&s, h_ca).as_deref(), Some(&ca[..]));
    assert_eq!(bytes(&s, h, AttributeType::Id), b"id-1");
    // Derived attributes: the subject/issuer/serial of the DER, the CA's CKA_ID as NSS makes it.
    let subject = bytes(&s, h, AttributeType::Subject);
    let issuer = bytes(&s, h, AttributeType::Issuer);
    assert_eq!(issuer, bytes(&s, h_ca, AttributeType::Subject));
    assert_ne!(subject, issuer);
    assert_eq!(bytes(&s, h, AttributeType::SerialNumber)[0], 0x02);
    assert_eq!(bytes(&s, h_ca, AttributeType::Id).len(), 20);
    match s
        .get_attributes(
            h,
            &[
                AttributeType::Private,
                AttributeType::Token,
                AttributeType::Trusted,
            ],
        )
        .unwrap()[..]
    {
        [Attribute::Private(false), Attribute::Token(true), Attribute::Trusted(false)] => {}
        ref other => panic!("{other:?}"),
    }
    // Found by the attributes NSS and Java search with.
    let by = |t: Vec<Attribute>| s.find_objects(&t).unwrap();
    assert_eq!(by(vec![Attribute::Id(b"id-1".to_vec())]), vec![h]);
    assert_eq!(
        by(vec![
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::Subject(issuer.clone())
        ]),
        vec![h_ca]
    );
    assert_eq!(
        by(vec![
            Attribute::Issuer(issuer.clone()),
            Attribute::SerialNumber(bytes(&s, h, AttributeType::SerialNumber)),
        ]),
        vec![h]
    );
    assert_eq!(by(vec![Attribute::Value(leaf.clone())]), vec![h]);
    // Neither is a key.
    assert_eq!(
        rv(s.sign_init(&cryptoki::mechanism::Mechanism::Ecdsa, h)),
        RvError::KeyHandleInvalid
    );
    s.logout().unwrap();
    // The leaf belongs to ec's version 1, the CA to the ring.
    let v1 = format!("{}/cryptoKeyVersions/1", key("ec"));
    audit(&env, "C_CreateObject", "allowed", |r| {
        r["resource"] == v1.as_str()
    });
    audit(&env, "C_CreateObject", "allowed", |r| r["resource"] == RING);

    // --- visibility: public objects, listed before login too (as this uid: sees everything).
    assert_eq!(certs(&s).len(), 2);
    // signer sees ec: both certificates, values readable (viewPublicKey).
    login_with(&s, &signer);
    let seen = certs(&s);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(value(&s, h).as_deref(), Some(&leaf[..]));
    // ... but may not destroy them (no create/update): CKR_ACTION_PROHIBITED, audited.
    assert_eq!(rv(s.destroy_object(h)), RvError::ActionProhibited);
    s.logout().unwrap();
    // other sees only ec2: the leaf of ec is invisible, its handle invalid; the ring's CA is
    // seen.
    login_with(&s, &other);
    assert_eq!(certs(&s), vec![h_ca]);
    assert_eq!(
        rv(s.get_attributes(h, &[AttributeType::Value])),
        RvError::ObjectHandleInvalid
    );
    assert_eq!(rv(s.destroy_object(h)), RvError::ObjectHandleInvalid);
    s.logout().unwrap();
    // viewer (kms.viewer on the ring) sees both, but not their values.
    login_with(&s, &viewer);
    assert_eq!(certs(&s).len(), 2);
    assert_eq!(value(&s, h), None);
    assert_eq!(value(&s, h_ca), None);
    assert!(
        s.find_objects(&[Attribute::Value(leaf.clone())])
            .unwrap()
            .is_empty(),
        "no oracle on a hidden value"
    );
    s.logout().unwrap();

    // --- the creator renames and destroys; the object is gone for everyone.
    login_with(&s, &creator);
    s.update_attributes(h, &[Attribute::Label(b"renamed".to_vec())])
        .unwrap();
    assert_eq!(bytes(&s, h, AttributeType::Label), b"renamed");
    s.destroy_object(h).unwrap();
    assert_eq!(certs(&s), vec![h_ca]);
    assert_eq!(
        rv(s.get_attributes(h, &[AttributeType::Value])),
        RvError::ObjectHandleInvalid
    );
    s.logout().unwrap();
    audit(&env, "C_DestroyObject", "denied", |r| {
        r["principal"] == sa("signer").as_str()
    });
    audit(&env, "C_DestroyObject", "allowed", |r| {
        r["principal"] == sa("creator").as_str() && r["resource"] == v1.as_str()
    });
    drop(s);
    drop(p11);
    drop(excl);
}

/// NSS `certutil -A` through the module stores the certificate; C_GetAttributeValue of
/// CKA_VALUE reads it back byte-identical (issue 7 acceptance 3, second half).
#[test]
fn certutil_import_reads_back_byte_identical() {
    let excl = module::exclusive();
    let mut env = Env::new();
    let creator = env.service_account_offline("creator");
    env.start();
    env.web_ring();
    env.create_key(RING, "ec", "ASYMMETRIC_SIGN", "EC_SIGN_P256_SHA256");
    env.bind(RING, "roles/kms.admin", &sa("creator"));
    env.bind(RING, "roles/kms.cryptoOperator", &sa("creator"));
    let pem = env.ctl_with_key(&creator, &["key", "get-public-key", &key("ec")]);
    pem.ok();
    let dir = env.dir().to_path_buf();
    let (leaf, _) = issue_for(&dir, &pem.stdout, "nss.example");
    std::fs::write(dir.join("leaf.pem"), {
        run(Command::new("openssl")
            .args(["x509", "-inform", "DER", "-in"])
            .arg(dir.join("leaf.der")))
    })
    .unwrap();

    // An NSS database with the module, the creator's key as its credentials and PIN.
    let nssdb = dir.join("nssdb");
    std::fs::create_dir(&nssdb).unwrap();
    let creds = dir.join("creator.key");
    let settings =
        Settings::new(&env.client_socket, &dir.join("module.toml")).credentials(&creds, &creator);
    std::fs::write(dir.join("pinfile"), format!("{creator}\n")).unwrap();
    let nss = |cmd: &str| {
        let mut c = Command::new(cmd);
        c.env("KEYWARD_SOCKET", &env.client_socket)
            .env("KEYWARD_CREDENTIALS", &creds)
            .env("KEYWARD_CONFIG", dir.join("module.toml"))
            .env("NSS_DISABLE_UNLOAD", "1");
        c
    };
    run(nss("certutil")
        .args(["-N", "--empty-password", "-d"])
        .arg(format!("sql:{}", nssdb.display())));
    run(nss("modutil")
        .args(["-force", "-add", "keyward", "-libfile"])
        .arg(module::module_path())
        .arg("-dbdir")
        .arg(format!("sql:{}", nssdb.display())));
    run(nss("certutil")
        .args(["-A", "-h", "web", "-n", "nsscert", "-t", ",,", "-d"])
        .arg(format!("sql:{}", nssdb.display()))
        .arg("-f")
        .arg(dir.join("pinfile"))
        .arg("-i")
        .arg(dir.join("leaf.pem")));

    let p11 = module::cryptoki(&settings);
    let s = p11.open_ro_session(ring_slot(&p11, RING)).unwrap();
    let found = s
        .find_objects(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::Label(b"nsscert".to_vec()),
        ])
        .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(value(&s, found[0]).as_deref(), Some(&leaf[..]));
    // NSS set CKA_ID to SHA-1 of the public point: the certificate pairs with the key.
    let key_id = s
        .find_objects(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Label(b"ec".to_vec()),
        ])
        .unwrap();
    assert_eq!(key_id.len(), 1);
    assert_eq!(
        bytes(&s, found[0], AttributeType::Id),
        bytes(&s, key_id[0], AttributeType::Id)
    );
    drop(s);
    drop(p11);
    drop(excl);
}

/// A certificate made by `keywardctl key cert create --self-signed` is a certificate object
/// with the version's CKA_ID and CKA_LABEL: clients (Java, NSS) pair it with the private key.
#[test]
fn keywardctl_certificates_pair_with_their_key() {
    let excl = module::exclusive();
    let mut env = Env::new();
    let certs = env.service_account_offline("certs");
    env.start();
    env.web_ring();
    for (id, alg) in [
        ("ec", "EC_SIGN_P256_SHA256"),
        ("rsa", "RSA_SIGN_PKCS1_2048_SHA256"),
    ] {
        env.create_key(RING, id, "ASYMMETRIC_SIGN", alg);
    }
    env.bind(RING, "roles/kms.admin", &sa("certs"));
    env.bind(RING, "roles/kms.signerVerifier", &sa("certs"));
    let dir = env.dir().to_path_buf();
    let creds = dir.join("certs.key");
    let settings =
        Settings::new(&env.client_socket, &dir.join("module.toml")).credentials(&creds, &certs);
    let client = env.client_socket.to_str().unwrap().to_string();
    // keywardctl reads the module's credentials file (a # comment, then the key) as the
    // module does.
    let mut pems = Vec::new();
    for id in ["ec", "rsa"] {
        let out = env.ctl_env(
            &["key", "cert", "create", "--key", &key(id), "--self-signed"],
            &[
                ("KEYWARD_CREDENTIALS", creds.to_str().unwrap()),
                ("KEYWARD_SOCKET", &client),
            ],
        );
        out.ok();
        pems.push(out.stdout.clone());
    }

    let p11 = module::cryptoki(&settings);
    let s = p11.open_ro_session(ring_slot(&p11, RING)).unwrap();
    s.login(UserType::User, None).unwrap();
    for (id, pem) in ["ec", "rsa"].iter().zip(&pems) {
        let label = Attribute::Label(id.as_bytes().to_vec());
        let cert = s
            .find_objects(&[Attribute::Class(ObjectClass::CERTIFICATE), label.clone()])
            .unwrap();
        let private = s
            .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY), label])
            .unwrap();
        assert_eq!((cert.len(), private.len()), (1, 1), "{id}");
        assert_eq!(
            bytes(&s, cert[0], AttributeType::Id),
            bytes(&s, private[0], AttributeType::Id),
            "{id}: the certificate pairs with the private key"
        );
        // The object holds what keywardctl wrote.
        std::fs::write(dir.join("c.pem"), pem).unwrap();
        let der = run(Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(dir.join("c.pem")));
        assert_eq!(value(&s, cert[0]), Some(der));
    }
    drop(s);
    drop(p11);
    drop(excl);
}
