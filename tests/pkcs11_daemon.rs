//! keywardd's PKCS#11 half end to end: a real SoftHSM2 token, a real keywardd, keys made with
//! keywardctl, and module-like clients on the client socket sending `Pkcs11Request`s:
//! slots per principal, login with a service-account key, objects and attributes (CKA_ID
//! rules, labels, sensitive values), EC and RSA signatures checked with `openssl`, AES-GCM
//! round trip, denials with their exact codes, live revocation, and the audit records.

mod common;

use common::daemon::Env;
use common::pkcs11::*;
use common::ADMIN;
use keyward_wire::pkcs11::{
    AttrResult, AttrValue, Blob, GcmLayout, GcmParams, MechParams, Mechanism, Operation,
    Pkcs11Request, SlotId,
};

const RING: &str = "projects/payments/keyRings/web";

fn key(id: &str) -> String {
    format!("{RING}/cryptoKeys/{id}")
}

fn gcm(iv: u8) -> Mechanism {
    Mechanism {
        ty: CKM_AES_GCM,
        params: MechParams::Gcm(GcmParams {
            iv: Blob::new(vec![iv; 12]),
            iv_bits: 96,
            aad: Blob::new(b"aad".to_vec()),
            tag_bits: 128,
            layout: GcmLayout::WithIvBits,
        }),
    }
}

fn slot_of(p: &mut P11) -> SlotId {
    let slots = p.slots();
    slots
        .iter()
        .find(|s| s.ring == RING)
        .unwrap_or_else(|| panic!("no slot for {RING}: {slots:?}"))
        .slot
}

#[test]
fn pkcs11_data_path_through_keywardd() {
    let mut env = Env::new();
    let ec_signer = env.service_account_offline("ecsigner");
    let rsa_signer = env.service_account_offline("rsasigner");
    let crypter = env.service_account_offline("crypter");
    let encrypter = env.service_account_offline("encrypter");
    let revokee = env.service_account_offline("revokee");
    env.start();
    env.web_ring();
    env.create_keys(
        RING,
        &[
            ("ec", "ASYMMETRIC_SIGN", "EC_SIGN_P256_SHA256"),
            ("rsa", "ASYMMETRIC_SIGN", "RSA_SIGN_PKCS1_2048_SHA256"),
            ("aes", "ENCRYPT_DECRYPT", "AES_256_GCM"),
        ],
    );
    env.ctl(&["key", "rotate", &key("aes")]).ok();
    env.bind(
        &key("ec"),
        "roles/kms.signerVerifier",
        "serviceAccount:ecsigner@payments",
    );
    env.bind(
        &key("rsa"),
        "roles/kms.signerVerifier",
        "serviceAccount:rsasigner@payments",
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
    env.bind(
        &key("ec"),
        "roles/kms.signer",
        "serviceAccount:revokee@payments",
    );
    env.bind(
        &key("ec"),
        "roles/kms.publicKeyViewer",
        "serviceAccount:revokee@payments",
    );

    // --- least privilege: a signerVerifier on one key sees one token with exactly that key.
    let mut p = P11::connect(&env.client_socket, Some(&ec_signer));
    let slots = p.slots();
    assert_eq!(slots.len(), 1, "{slots:?}");
    assert_eq!(slots[0].ring, RING);
    assert_eq!(slots[0].token.label, "web");
    assert_eq!(slots[0].token.flags & 0x2, 0, "never CKF_WRITE_PROTECTED");
    assert_eq!(slots[0].token.flags, 0x4 | 0x8 | 0x400 | 0x1);
    let slot = slots[0].slot;
    let s = p.open(slot);
    // Before login: the public half only.
    let before = p.find(s, vec![]);
    assert_eq!(before.len(), 1);
    // An empty PIN asserts the pre-login principal (the credentials' account).
    p.login(slot, "").expect("empty PIN login");
    let all = p.find(s, vec![]);
    assert_eq!(all.len(), 2, "the ec pair only");
    let ec_pub = p.find_labelled(s, CKO_PUBLIC_KEY, "ec")[0];
    let ec_priv = p.find_labelled(s, CKO_PRIVATE_KEY, "ec")[0];
    assert_eq!(ec_pub, before[0], "handles are stable");

    // CKA_ID: SHA-1 of the EC point (inside the CKA_EC_POINT octet string), on both halves.
    let point_der = p.bytes(s, ec_pub, CKA_EC_POINT);
    assert_eq!(&point_der[..2], &[0x04, 65]);
    let want = sha1::Sha1::digest(&point_der[2..]).to_vec();
    assert_eq!(p.bytes(s, ec_pub, CKA_ID), want);
    assert_eq!(p.bytes(s, ec_priv, CKA_ID), want);
    let a = p
        .attrs(
            s,
            ec_priv,
            &[
                CKA_VALUE,
                CKA_SENSITIVE,
                CKA_SIGN,
                CKA_DECRYPT,
                CKA_COPYABLE,
            ],
        )
        .unwrap();
    assert_eq!(
        a,
        vec![
            AttrResult::Sensitive,
            AttrResult::Value(AttrValue::Bool(true)),
            AttrResult::Value(AttrValue::Bool(true)),
            AttrResult::Value(AttrValue::Bool(false)),
            AttrResult::Value(AttrValue::Bool(false)),
        ]
    );

    // --- ECDSA-SHA256 (composed: digest in keywardd, raw ECDSA in the token), checked by
    // openssl against keywardctl's PEM.
    let data = b"keyward signs this".to_vec();
    p.init(Operation::Sign, s, mech(CKM_ECDSA_SHA256), ec_priv)
        .unwrap();
    let raw = p.one_shot(Operation::Sign, s, &data).unwrap();
    assert_eq!(raw.len(), 64);
    let der = keyward_token::public_key::ecdsa_raw_to_der(&raw).unwrap();
    let pem = env.ctl_with_key(&ec_signer, &["key", "get-public-key", &key("ec")]);
    pem.ok();
    assert!(
        env.openssl_verify("sha256", &pem.stdout, &data, &der),
        "openssl rejects the EC signature"
    );
    // Verify through keywardd too; a wrong signature is CKR_SIGNATURE_INVALID.
    p.init(Operation::Verify, s, mech(CKM_ECDSA_SHA256), ec_pub)
        .unwrap();
    p.call(Pkcs11Request::Verify {
        session: s,
        data: Blob::new(data.clone()),
        signature: Blob::new(raw.clone()),
    })
    .expect("verifies");
    let mut bad = raw.clone();
    bad[5] ^= 1;
    p.init(Operation::Verify, s, mech(CKM_ECDSA_SHA256), ec_pub)
        .unwrap();
    let rv = p
        .call(Pkcs11Request::Verify {
            session: s,
            data: Blob::new(data.clone()),
            signature: Blob::new(bad),
        })
        .unwrap_err();
    assert_eq!(rv, 0xC0);
    // A mechanism the key's purpose forbids.
    assert_eq!(
        p.init(Operation::Sign, s, mech(CKM_SHA256_RSA_PKCS), ec_priv),
        Err(CKR_MECHANISM_INVALID)
    );
    // Multi-part: the same key, parts buffered.
    p.init(Operation::Sign, s, mech(CKM_ECDSA_SHA256), ec_priv)
        .unwrap();
    p.call(Pkcs11Request::OperationUpdate {
        op: Operation::Sign,
        session: s,
        data: Blob::new(data[..5].to_vec()),
    })
    .unwrap();
    p.call(Pkcs11Request::OperationUpdate {
        op: Operation::Sign,
        session: s,
        data: Blob::new(data[5..].to_vec()),
    })
    .unwrap();
    let raw2 = match p
        .call(Pkcs11Request::OperationFinal {
            op: Operation::Sign,
            session: s,
        })
        .unwrap()
    {
        keyward_wire::pkcs11::Pkcs11Response::Data(d) => d.as_slice().to_vec(),
        other => panic!("{other:?}"),
    };
    let der2 = keyward_token::public_key::ecdsa_raw_to_der(&raw2).unwrap();
    assert!(env.openssl_verify("sha256", &pem.stdout, &data, &der2));
    // Key creation needs kms.cryptoKeys.create on the ring (a session key, CKA_TOKEN
    // FALSE or absent, needs none: tests/session_objects.rs).
    assert_eq!(
        p.call(Pkcs11Request::GenerateKey {
            session: s,
            mechanism: mech(0x1080),
            template: vec![keyward_wire::pkcs11::Attribute {
                ty: 0x1, // CKA_TOKEN
                value: AttrValue::Bool(true),
            }],
        }),
        Err(CKR_TOKEN_WRITE_PROTECTED)
    );
    assert_eq!(
        p.call(Pkcs11Request::DestroyObject {
            session: s,
            object: ec_priv
        }),
        Err(CKR_ACTION_PROHIBITED)
    );
    // A handle of this instance means nothing in another.
    let mut other = P11::connect(&env.client_socket, Some(&ec_signer));
    let os = other.open(slot);
    other.login(slot, "").unwrap();
    assert_eq!(
        other.init(Operation::Sign, os, mech(CKM_ECDSA_SHA256), ec_priv),
        Err(CKR_KEY_HANDLE_INVALID)
    );

    // --- RSA PKCS#1 v1.5 with SHA-256, by a principal logged in with its key as PIN (the
    // connection itself is the test's uid, mapped to the org admin).
    let mut r = P11::connect(&env.client_socket, None);
    let slot_r = slot_of(&mut r);
    let rs = r.open(slot_r);
    assert_eq!(
        r.login(slot_r, "kwnope00.AAAAAAAAAAAAAAAAAAAAAA"),
        Err(CKR_PIN_INCORRECT)
    );
    r.login(slot_r, &rsa_signer)
        .expect("login with a service-account key");
    let rsa_priv = r.find_labelled(rs, CKO_PRIVATE_KEY, "rsa")[0];
    let rsa_pub = r.find_labelled(rs, CKO_PUBLIC_KEY, "rsa")[0];
    let modulus = r.bytes(rs, rsa_pub, CKA_MODULUS);
    assert_eq!(
        r.bytes(rs, rsa_priv, CKA_ID),
        sha1::Sha1::digest(&modulus).to_vec()
    );
    r.init(Operation::Sign, rs, mech(CKM_SHA256_RSA_PKCS), rsa_priv)
        .unwrap();
    let sig = r.one_shot(Operation::Sign, rs, &data).unwrap();
    assert_eq!(sig.len(), 256);
    let pem = env.ctl_with_key(&rsa_signer, &["key", "get-public-key", &key("rsa")]);
    pem.ok();
    assert!(
        env.openssl_verify("sha256", &pem.stdout, &data, &sig),
        "openssl rejects the RSA signature"
    );
    // The ec key is invisible to this principal: not found.
    assert!(r.find_labelled(rs, CKO_PRIVATE_KEY, "ec").is_empty());

    // --- the org admin (pre-login principal of the uid): sees every key, reads no public
    // value, uses none.
    r.logout(slot_r);
    r.login(slot_r, "").unwrap();
    let admin_ec_pub = r.find_labelled(rs, CKO_PUBLIC_KEY, "ec")[0];
    assert_eq!(
        r.attrs(rs, admin_ec_pub, &[CKA_EC_POINT]).unwrap(),
        vec![AttrResult::Sensitive]
    );
    let admin_rsa_priv = r.find_labelled(rs, CKO_PRIVATE_KEY, "rsa")[0];
    assert_eq!(
        admin_rsa_priv, rsa_priv,
        "one handle per object in an instance"
    );
    assert_eq!(
        r.init(Operation::Sign, rs, mech(CKM_SHA256_RSA_PKCS), rsa_priv),
        Err(CKR_KEY_FUNCTION_NOT_PERMITTED)
    );

    // --- AES-256-GCM round trip; labels and CKA_ID of a rotated symmetric key.
    r.logout(slot_r);
    r.login(slot_r, &crypter).unwrap();
    let aes = r.find_labelled(rs, CKO_SECRET_KEY, "aes")[0];
    let aes_v1 = r.find_labelled(rs, CKO_SECRET_KEY, "aes@v1");
    assert_eq!(aes_v1.len(), 1, "the older version is keyid@v1");
    let name = format!("{}/cryptoKeyVersions/2", key("aes"));
    use sha2::Digest as _;
    assert_eq!(
        r.bytes(rs, aes, CKA_ID),
        sha2::Sha256::digest(name.as_bytes())[..16].to_vec()
    );
    assert_eq!(
        r.attrs(rs, aes, &[CKA_VALUE]).unwrap(),
        vec![AttrResult::Sensitive]
    );
    let plain = b"attack at dawn".to_vec();
    r.init(Operation::Encrypt, rs, gcm(7), aes).unwrap();
    let ct = r.one_shot(Operation::Encrypt, rs, &plain).unwrap();
    assert_eq!(ct.len(), plain.len() + 16);
    r.init(Operation::Decrypt, rs, gcm(7), aes).unwrap();
    assert_eq!(r.one_shot(Operation::Decrypt, rs, &ct).unwrap(), plain);
    // The aes handle is invisible to another principal of the same instance.
    r.logout(slot_r);
    r.login(slot_r, &rsa_signer).unwrap();
    assert_eq!(
        r.init(Operation::Encrypt, rs, gcm(8), aes),
        Err(CKR_KEY_HANDLE_INVALID)
    );
    assert_eq!(r.attrs(rs, aes, &[CKA_LABEL]), Err(0x82));
    // An encrypter may not decrypt, nor choose its IV (design §9: keywardd's, given back).
    r.logout(slot_r);
    r.login(slot_r, &encrypter).unwrap();
    assert_eq!(
        r.init(Operation::Encrypt, rs, gcm(9), aes),
        Err(CKR_MECHANISM_PARAM_INVALID)
    );
    r.init(Operation::Encrypt, rs, gcm(0), aes).unwrap();
    r.one_shot(Operation::Encrypt, rs, &plain).unwrap();
    assert_eq!(
        r.init(Operation::Decrypt, rs, gcm(7), aes),
        Err(CKR_KEY_FUNCTION_NOT_PERMITTED)
    );

    // --- live revocation: the next *Init fails without reconnecting.
    let mut v = P11::connect(&env.client_socket, Some(&revokee));
    let vslot = slot_of(&mut v);
    let vs = v.open(vslot);
    v.login(vslot, "").unwrap();
    let vpriv = v.find_labelled(vs, CKO_PRIVATE_KEY, "ec")[0];
    v.init(Operation::Sign, vs, mech(CKM_ECDSA_SHA256), vpriv)
        .unwrap();
    v.one_shot(Operation::Sign, vs, &data).unwrap();
    env.ctl(&[
        "iam",
        "unbind",
        "--resource",
        &key("ec"),
        "--role",
        "roles/kms.signer",
        "--member",
        "serviceAccount:revokee@payments",
    ])
    .ok();
    assert_eq!(
        v.init(Operation::Sign, vs, mech(CKM_ECDSA_SHA256), vpriv),
        Err(CKR_KEY_FUNCTION_NOT_PERMITTED)
    );
    env.bind(
        &key("ec"),
        "roles/kms.signer",
        "serviceAccount:revokee@payments",
    );
    v.init(Operation::Sign, vs, mech(CKM_ECDSA_SHA256), vpriv)
        .unwrap();
    v.one_shot(Operation::Sign, vs, &data).unwrap();

    // --- audit: every SignInit allowed and denied, logins, with instance and peer.
    drop(p);
    drop(other);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = env.ctl(&["--json", "audit", "query", "--action", "C_SignInit"]);
    out.ok();
    let recs = out.json_lines();
    assert!(
        recs.iter()
            .any(|r| r["result"] == "allowed"
                && r["principal"] == "serviceAccount:ecsigner@payments"),
        "{recs:#?}"
    );
    let denied: Vec<_> = recs.iter().filter(|r| r["result"] == "denied").collect();
    assert!(
        denied
            .iter()
            .any(|r| r["principal"] == "serviceAccount:revokee@payments"
                && r["rv"] == CKR_KEY_FUNCTION_NOT_PERMITTED),
        "{recs:#?}"
    );
    assert!(denied.iter().any(|r| r["principal"] == ADMIN), "{recs:#?}");
    for r in &recs {
        assert!(r["instance"].is_string(), "{r}");
        assert!(
            r["peer_pid"].is_number() && r["peer_uid"].is_number(),
            "{r}"
        );
    }
    let out = env.ctl(&["--json", "audit", "query", "--action", "C_Login"]);
    out.ok();
    let logins = out.json_lines();
    assert!(
        logins
            .iter()
            .any(|r| r["result"] == "denied" && r["rv"] == CKR_PIN_INCORRECT),
        "{logins:#?}"
    );
    assert!(
        logins
            .iter()
            .any(|r| r["result"] == "allowed"
                && r["principal"] == "serviceAccount:rsasigner@payments")
    );
    let out = env.ctl(&["--json", "audit", "query", "--action", "session.reads"]);
    out.ok();
    assert!(
        !out.json_lines().is_empty(),
        "reads are counted when a session closes"
    );
    let out = env.ctl(&["--json", "audit", "query", "--action", "C_DecryptInit"]);
    out.ok();
    assert!(out
        .json_lines()
        .iter()
        .any(|r| r["result"] == "denied" && r["principal"] == "serviceAccount:encrypter@payments"));
}
