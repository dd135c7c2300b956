//! Session objects through the built `libkeyward_pkcs11.so` against a real keywardd (design
//! §4 "Session objects", "No side doors"): a session AES key is generated, encrypts and
//! decrypts, is seen by the instance's sessions on its slot and by no other instance, and is
//! gone from the token when its session closes (keywardd's count of the token's session
//! objects, `keywardctl status`); an EC public key made by OpenSSL verifies an OpenSSL
//! signature through C_Verify; the per-instance quota gives CKR_DEVICE_MEMORY; session-object
//! use needs no IAM gate (audited), but a principal with no bindings, which sees no Keyward key
//! and no ring, gets no session objects (design §9: `CKR_TOKEN_WRITE_PROTECTED`); nothing makes
//! a session object from a Keyward key.

mod common;

use common::daemon::Env;
use common::module::*;
use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass};
use cryptoki::session::{Session, UserType};
use std::time::Instant;

const RING: &str = "projects/payments/keyRings/web";
const QUOTA: usize = 6;
const P256_OID: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// keywardd with ring web, key ec (bound signerVerifier to a@payments), service account
/// n@payments with no binding at all, and the per-instance quota [`QUOTA`]. Returns the
/// keys of a and n.
fn world() -> (Env, String, String) {
    let mut env = Env::new();
    let a = env.service_account_offline("a");
    let n = env.service_account_offline("n");
    let text = std::fs::read_to_string(&env.config).unwrap();
    assert!(
        text.trim_end().ends_with("destroy_check_secs = 1"),
        "{text}"
    );
    std::fs::write(
        &env.config,
        format!("{text}session_objects_per_instance = {QUOTA}\n"),
    )
    .unwrap();
    env.start();
    env.web_ring();
    env.create_key(RING, "ec", "ASYMMETRIC_SIGN", "EC_SIGN_P256_SHA256");
    env.bind(
        &format!("{RING}/cryptoKeys/ec"),
        "roles/kms.signerVerifier",
        "serviceAccount:a@payments",
    );
    (env, a, n)
}

/// The session objects in the backing token, as keywardd counts them.
fn token_session_objects(env: &Env) -> u64 {
    let v = env.ctl(&["--json", "status"]).ok().json();
    v["token"]["sessionObjects"]
        .as_u64()
        .unwrap_or_else(|| panic!("no count in {v}"))
}

fn aes_template(label: &[u8]) -> Vec<Attribute> {
    vec![
        Attribute::Token(false),
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32.into()),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Label(label.to_vec()),
        Attribute::Id(vec![7, 7]),
    ]
}

fn labelled(s: &Session, label: &[u8]) -> Vec<cryptoki::object::ObjectHandle> {
    s.find_objects(&[Attribute::Label(label.to_vec())]).unwrap()
}

/// Encrypts and decrypts with AES-CBC-PAD under `key`.
fn round_trip(s: &Session, key: cryptoki::object::ObjectHandle) {
    let iv = [3u8; 16];
    let data = b"session objects are the session's".to_vec();
    let ct = s.encrypt(&Mechanism::AesCbcPad(iv), key, &data).unwrap();
    assert_ne!(ct, data);
    assert_eq!(
        s.decrypt(&Mechanism::AesCbcPad(iv), key, &ct).unwrap(),
        data
    );
}

/// Child role: another module instance (process) of the same principal looks for the
/// parent's session key and tries its handle.
fn other_instance_role() {
    let raw = Raw::load();
    assert_eq!(raw.initialize(Some(&child_settings())), CKR_OK);
    let (rv, h) = raw.open_session(ring_slot_id(RING) as Ulong);
    assert_eq!(rv, CKR_OK);
    assert_eq!(raw.login(h, In::Null(0)), CKR_OK);
    let theirs: Ulong = std::env::var("SESSION_KEY").unwrap().parse().unwrap();
    report(
        "by_label",
        raw.find(h, &[(CKA_LABEL, b"sess".to_vec())]).len(),
    );
    report("all", raw.find(h, &[]).len());
    report(
        "encrypt_init",
        raw.encrypt_init(h, &Mech::Sized(0x1085 /* CKM_AES_CBC_PAD */, 16), theirs),
    );
    report("attribute", raw.attribute(h, theirs, CKA_LABEL, Some(16)).0);
    report("destroy", raw.destroy_object(h, theirs));
    assert_eq!(raw.finalize(), CKR_OK);
}

/// A DER ECDSA-Sig-Value as PKCS#11's r || s (32 bytes each for P-256).
fn raw_signature(der: &[u8]) -> Vec<u8> {
    fn int(b: &[u8]) -> (&[u8], &[u8]) {
        assert_eq!(b[0], 0x02, "an INTEGER");
        let len = b[1] as usize;
        (&b[2..2 + len], &b[2 + len..])
    }
    assert_eq!(der[0], 0x30);
    let (r, rest) = int(&der[2..]);
    let (s, _) = int(rest);
    let mut out = Vec::new();
    for v in [r, s] {
        let v = &v[v.len().saturating_sub(32)..];
        out.extend(std::iter::repeat_n(0u8, 32 - v.len()));
        out.extend_from_slice(v);
    }
    out
}

#[test]
fn session_objects_belong_to_their_instance_and_die_with_their_session() {
    if child_role().as_deref() == Some("other") {
        other_instance_role();
        return;
    }
    let t0 = Instant::now();
    let excl = exclusive();
    let (env, a, n) = world();
    let dir = env.dir();
    let settings = Settings::new(&env.client_socket, &dir.join("module.toml"))
        .credentials(&dir.join("a.key"), &a);
    let p11 = cryptoki(&settings);
    let slot = ring_slot(&p11, RING);
    let s1 = p11.open_rw_session(slot).unwrap();
    // A private session object needs the user logged in.
    assert_eq!(
        rv(s1.generate_key(&Mechanism::AesKeyGen, &aes_template(b"sess"))),
        RvError::UserNotLoggedIn
    );
    s1.login(UserType::User, None).unwrap();
    assert_eq!(token_session_objects(&env), 0);

    // --- generate, use, read.
    let key = s1
        .generate_key(&Mechanism::AesKeyGen, &aes_template(b"sess"))
        .unwrap();
    round_trip(&s1, key);
    let attrs = s1
        .get_attributes(
            key,
            &[
                AttributeType::Token,
                AttributeType::Label,
                AttributeType::Id,
                AttributeType::Sensitive,
                AttributeType::Derive,
                AttributeType::Copyable,
                AttributeType::ValueLen,
            ],
        )
        .unwrap();
    for want in [
        Attribute::Token(false),
        Attribute::Label(b"sess".to_vec()),
        Attribute::Id(vec![7, 7]),
        Attribute::Sensitive(true),
        Attribute::Derive(false),
        Attribute::Copyable(false),
        Attribute::ValueLen(32.into()),
    ] {
        assert!(attrs.contains(&want), "{want:?} in {attrs:?}");
    }
    assert!(
        matches!(
            s1.get_attribute_info(key, &[AttributeType::Value])
                .unwrap()
                .as_slice(),
            [AttributeInfo::Sensitive]
        ),
        "a sensitive session key's value stays in the token"
    );
    assert_eq!(labelled(&s1, b"sess"), vec![key]);
    assert_eq!(
        s1.find_objects(&[Attribute::Token(false)]).unwrap(),
        vec![key]
    );
    assert_eq!(
        s1.find_objects(&[Attribute::Token(true)]).unwrap().len(),
        2,
        "the ec pair"
    );
    // No oracle on the hidden value.
    assert!(s1
        .find_objects(&[Attribute::Value(vec![0; 32])])
        .unwrap()
        .is_empty());
    assert_eq!(token_session_objects(&env), 1);
    // C_SetAttributeValue: the label and id; nothing else.
    s1.update_attributes(key, &[Attribute::Label(b"sess2".to_vec())])
        .unwrap();
    assert_eq!(labelled(&s1, b"sess2"), vec![key]);
    s1.update_attributes(key, &[Attribute::Label(b"sess".to_vec())])
        .unwrap();
    assert_eq!(
        rv(s1.update_attributes(key, &[Attribute::Encrypt(false)])),
        RvError::AttributeReadOnly
    );

    // --- another session of the instance on the slot sees and uses it (PKCS#11 §4.4: the
    // application's sessions; Java and NSS rely on it).
    let s2 = p11.open_rw_session(slot).unwrap();
    assert_eq!(labelled(&s2, b"sess"), vec![key]);
    round_trip(&s2, key);

    // --- another instance (process) of the same principal: nothing.
    let out = run_child(
        "session_objects_belong_to_their_instance_and_die_with_their_session",
        "other",
        &settings,
        &[("SESSION_KEY", &key.handle().to_string())],
    );
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(out.value("by_label"), "0");
    assert_eq!(out.value("all"), "2", "the ec pair only");
    assert_eq!(
        out.value("encrypt_init"),
        CKR_KEY_HANDLE_INVALID.to_string()
    );
    assert_eq!(
        out.value("attribute"),
        CKR_OBJECT_HANDLE_INVALID.to_string()
    );
    assert_eq!(out.value("destroy"), CKR_OBJECT_HANDLE_INVALID.to_string());
    round_trip(&s1, key);

    // --- no side doors: nothing makes a session object from a Keyward key, and a session
    // object is not copied or derived from.
    let ec = s1
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(b"ec".to_vec()),
        ])
        .unwrap()[0];
    assert_eq!(
        rv(s1.copy_object(ec, &[Attribute::Token(false)])),
        RvError::ActionProhibited
    );
    assert_eq!(
        rv(s1.copy_object(key, &[Attribute::Token(false)])),
        RvError::ActionProhibited
    );
    let raw = excl.raw();
    assert_eq!(
        raw.derive_key(
            s1.handle(),
            &Mech::Plain(0x393 /* CKM_SHA256_KEY_DERIVATION */),
            ec.handle()
        ),
        CKR_MECHANISM_INVALID
    );
    assert_eq!(
        raw.derive_key(
            s1.handle(),
            &Mech::Plain(0x393 /* CKM_SHA256_KEY_DERIVATION */),
            key.handle()
        ),
        CKR_MECHANISM_INVALID
    );
    let session_template = vec![
        (CKA_CLASS, ulong_bytes(CKO_SECRET_KEY)),
        (
            0x100, /* CKA_KEY_TYPE */
            ulong_bytes(0x1F /* CKK_AES */),
        ),
        (0x1 /* CKA_TOKEN */, vec![0]),
    ];
    let (rv_unwrap, made) = raw.unwrap_key(
        s1.handle(),
        &Mech::Plain(0x1 /* CKM_RSA_PKCS */),
        ec.handle(),
        &[0u8; 64],
        &session_template,
    );
    assert_ne!(rv_unwrap, CKR_OK, "a Keyward key unwraps nothing");
    assert_eq!(made, 0);
    let (rv_unwrap, made) = raw.unwrap_key(
        s1.handle(),
        &Mech::Plain(0x2109 /* CKM_AES_KEY_WRAP_PAD */),
        key.handle(),
        &[0u8; 40],
        &session_template,
    );
    assert_eq!(rv_unwrap, 0xF0 /* CKR_UNWRAPPING_KEY_HANDLE_INVALID */);
    assert_eq!(made, 0);
    assert!(s1.wrap_key(&Mechanism::AesKeyWrapPad, key, ec).is_err());
    assert_eq!(
        s1.find_objects(&[Attribute::Token(false)]).unwrap(),
        vec![key],
        "no new session object"
    );
    assert_eq!(token_session_objects(&env), 1);

    // --- an EC public key made by OpenSSL verifies OpenSSL's signature (what NSS and Java
    // import to verify); a public session object needs no login.
    common::openssl_ok(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ec.pem",
        ],
    );
    let spki = common::openssl_ok(dir, &["ec", "-in", "ec.pem", "-pubout", "-outform", "DER"]);
    let point = spki[spki.len() - 65..].to_vec();
    assert_eq!(point[0], 4);
    std::fs::write(dir.join("msg"), b"signed by openssl").unwrap();
    common::openssl_ok(
        dir,
        &[
            "dgst", "-sha256", "-sign", "ec.pem", "-out", "msg.sig", "msg",
        ],
    );
    let sig = raw_signature(&std::fs::read(dir.join("msg.sig")).unwrap());
    let mut ec_point = vec![0x04, 65];
    ec_point.extend_from_slice(&point);
    let s3 = p11.open_ro_session(slot).unwrap();
    let imported = s3
        .create_object(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::EC),
            Attribute::Token(false),
            Attribute::EcParams(P256_OID.to_vec()),
            Attribute::EcPoint(ec_point.clone()),
            Attribute::Verify(true),
            Attribute::Label(b"openssl".to_vec()),
        ])
        .unwrap();
    s3.verify(
        &Mechanism::EcdsaSha256,
        imported,
        b"signed by openssl",
        &sig,
    )
    .unwrap();
    assert_eq!(
        rv(s3.verify(
            &Mechanism::EcdsaSha256,
            imported,
            b"signed by someone",
            &sig
        )),
        RvError::SignatureInvalid
    );
    let digest = common::openssl_ok(dir, &["dgst", "-sha256", "-binary", "msg"]);
    s3.verify(&Mechanism::Ecdsa, imported, &digest, &sig)
        .unwrap();
    let got = s3
        .get_attributes(imported, &[AttributeType::EcPoint, AttributeType::Private])
        .unwrap();
    assert!(got.contains(&Attribute::EcPoint(ec_point)), "{got:?}");
    assert!(got.contains(&Attribute::Private(false)), "{got:?}");
    // So does an RSA public key (modulus and exponent, as Java SunPKCS11 imports it),
    // destroyed again with C_DestroyObject.
    common::openssl_ok(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "rsa.pem",
        ],
    );
    let modulus = String::from_utf8(common::openssl_ok(
        dir,
        &["rsa", "-in", "rsa.pem", "-noout", "-modulus"],
    ))
    .unwrap();
    let modulus = modulus.trim().trim_start_matches("Modulus=");
    let modulus: Vec<u8> = (0..modulus.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&modulus[i..i + 2], 16).unwrap())
        .collect();
    assert_eq!(modulus.len(), 256);
    common::openssl_ok(
        dir,
        &[
            "dgst", "-sha256", "-sign", "rsa.pem", "-out", "msg.rsa", "msg",
        ],
    );
    let rsa_sig = std::fs::read(dir.join("msg.rsa")).unwrap();
    let rsa = s3
        .create_object(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Token(false),
            Attribute::Modulus(modulus),
            Attribute::PublicExponent(vec![1, 0, 1]),
        ])
        .unwrap();
    s3.verify(
        &Mechanism::Sha256RsaPkcs,
        rsa,
        b"signed by openssl",
        &rsa_sig,
    )
    .unwrap();
    assert_eq!(
        rv(s3.verify(
            &Mechanism::Sha256RsaPkcs,
            rsa,
            b"signed by nobody",
            &rsa_sig
        )),
        RvError::SignatureInvalid
    );
    assert_eq!(token_session_objects(&env), 3);
    s3.destroy_object(rsa).unwrap();
    assert_eq!(token_session_objects(&env), 2);
    // An EC pair made as session objects signs, and its public half verifies.
    let (pubk, privk) = s3
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(false),
                Attribute::EcParams(P256_OID.to_vec()),
                Attribute::Verify(true),
            ],
            &[Attribute::Token(false), Attribute::Sign(true)],
        )
        .unwrap();
    let sig = s3.sign(&Mechanism::EcdsaSha256, privk, b"pair").unwrap();
    s3.verify(&Mechanism::EcdsaSha256, pubk, b"pair", &sig)
        .unwrap();
    assert_eq!(token_session_objects(&env), 4);

    // --- the quota: QUOTA per instance, then CKR_DEVICE_MEMORY (data objects count too).
    let mut data = Vec::new();
    let err = loop {
        match s3.create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Application(b"test".to_vec()),
            Attribute::Value(vec![1, 2, 3]),
        ]) {
            Ok(h) => data.push(h),
            Err(e) => break e,
        }
        assert!(data.len() <= QUOTA, "no quota");
    };
    assert_eq!(rv::<()>(Err(err)), RvError::DeviceMemory);
    assert_eq!(data.len(), QUOTA - 4);
    assert_eq!(
        rv(s3.generate_key(&Mechanism::AesKeyGen, &aes_template(b"over"))),
        RvError::DeviceMemory
    );
    // C_DestroyObject frees room.
    s3.destroy_object(data[0]).unwrap();
    assert_eq!(
        rv(s3.get_attributes(data[0], &[AttributeType::Value])),
        RvError::ObjectHandleInvalid
    );
    assert_eq!(token_session_objects(&env), QUOTA as u64 - 1);
    let again = s3
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Value(vec![9]),
        ])
        .unwrap();
    assert_ne!(again, data[0], "a handle is never reused");

    // --- closing the creating session destroys its objects, in the token too.
    drop(s1);
    assert!(labelled(&s2, b"sess").is_empty());
    assert_eq!(
        rv(s2.encrypt(&Mechanism::AesCbcPad([3; 16]), key, b"x")),
        RvError::KeyHandleInvalid
    );
    assert_eq!(token_session_objects(&env), QUOTA as u64 - 1);
    drop(s3);
    assert_eq!(token_session_objects(&env), 0);
    assert!(s2
        .find_objects(&[Attribute::Token(false)])
        .unwrap()
        .is_empty());
    // C_Logout destroys the instance's private session objects (PKCS#11 §5.6).
    let k2 = s2
        .generate_key(&Mechanism::AesKeyGen, &aes_template(b"k2"))
        .unwrap();
    let d2 = s2
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Value(vec![1]),
        ])
        .unwrap();
    assert_eq!(token_session_objects(&env), 2);
    s2.logout().unwrap();
    s2.login(UserType::User, None).unwrap();
    assert_eq!(
        rv(s2.encrypt(&Mechanism::AesCbcPad([3; 16]), k2, b"x")),
        RvError::KeyHandleInvalid
    );
    assert_eq!(
        s2.find_objects(&[Attribute::Token(false)]).unwrap(),
        vec![d2]
    );
    assert_eq!(token_session_objects(&env), 1);
    // The instance going (C_Finalize closes the connection) takes the rest.
    drop(s2);
    p11.finalize().unwrap();
    assert_eq!(token_session_objects(&env), 0);

    // --- a principal with no bindings: it sees no Keyward key (not even the ring, which is
    // configured here), and the token makes no session object for it (design §9).
    let settings = Settings::new(&env.client_socket, &dir.join("module.toml"))
        .tokens(&format!("{RING}=web"))
        .credentials(&dir.join("n.key"), &n);
    let p11 = cryptoki(&settings);
    let s = p11.open_rw_session(ring_slot(&p11, RING)).unwrap();
    s.login(UserType::User, None).unwrap();
    assert!(s.find_objects(&[]).unwrap().is_empty());
    assert_eq!(
        rv(s.generate_key(&Mechanism::AesKeyGen, &aes_template(b"mine"))),
        RvError::TokenWriteProtected
    );
    assert!(s.find_objects(&[]).unwrap().is_empty());
    assert!(s
        .find_objects(&[Attribute::Label(b"ec".to_vec())])
        .unwrap()
        .is_empty());
    drop(s);
    p11.finalize().unwrap();
    drop(excl);

    // --- audited as session-object use, with the instance and the peer.
    // Group commit: the records are written within moments; wait for them.
    let query = |action: &str, want: &dyn Fn(&serde_json::Value) -> bool| {
        for _ in 0..100 {
            let records = env
                .ctl(&["--json", "audit", "query", "--action", action])
                .ok()
                .json_lines();
            if let Some(r) = records.iter().find(|r| want(r)) {
                return r.clone();
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("no {action} record as wanted");
    };
    let n_use = query("C_EncryptInit", &|r| {
        r["principal"] == "serviceAccount:a@payments"
            && r["detail"]
                .as_str()
                .is_some_and(|d| d.contains("session object") && d.contains("no IAM gate"))
    });
    assert_eq!(n_use["result"], "allowed", "{n_use}");
    assert!(
        n_use["instance"].as_str().is_some_and(|i| !i.is_empty()),
        "{n_use}"
    );
    assert_eq!(n_use["peer_pid"], std::process::id(), "{n_use}");
    let closed = query("C_CloseSession", &|r| {
        r["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("destroyed session objects"))
    });
    assert_eq!(closed["principal"], "serviceAccount:a@payments", "{closed}");
    eprintln!("session objects: {:?}", t0.elapsed());
}
