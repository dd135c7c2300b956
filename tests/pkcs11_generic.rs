//! Keys made, renamed and destroyed through keywardd's PKCS#11 half (design §4): EC and RSA
//! pairs and AES keys generated with ordinary templates keep the client's CKA_ID/CKA_LABEL
//! byte-exact, are found by them, sign (checked by openssl) and encrypt; their flags are the
//! template's; CKA_SENSITIVE is forced or, with strict_templates, refused; creation needs
//! kms.cryptoKeys.create; the creating instance may rename them and read their public
//! values, another instance without cryptoKeys.update may not; destroying the private half
//! schedules the version's destruction, keeps the public half until destroyed, and frees the
//! CKA_ID; plaintext import needs allow_plaintext_import; everything is audited.

mod common;

use common::daemon::Env;
use common::pkcs11::*;
use keyward_wire::pkcs11::{
    AttrResult, AttrValue, Attribute, Blob, GcmLayout, GcmParams, MechParams, Mechanism,
    OaepParams, ObjectHandle, Operation, Pkcs11Request as R, Pkcs11Response as P, SessionId,
    SlotId,
};
use std::process::Command;

const RING: &str = "projects/payments/keyRings/web";
const CKA_TOKEN: u64 = 0x1;
const CKA_PRIVATE: u64 = 0x2;
const CKA_KEY_TYPE: u64 = 0x100;
const CKA_ENCRYPT: u64 = 0x104;
const CKA_VERIFY: u64 = 0x10A;
const CKA_MODIFIABLE: u64 = 0x170;
const CKA_PUBLIC_EXPONENT: u64 = 0x122;
const CKA_MODULUS_BITS: u64 = 0x121;
const CKA_VALUE_LEN: u64 = 0x161;
const CKA_EC_PARAMS: u64 = 0x180;
const CKA_EXTRACTABLE: u64 = 0x162;
const CKO_DATA: u64 = 0;
const CKK_AES: u64 = 0x1F;
const CKM_RSA_PKCS_KEY_PAIR_GEN: u64 = 0x0;
const CKM_EC_KEY_PAIR_GEN: u64 = 0x1040;
const CKM_AES_KEY_GEN: u64 = 0x1080;
const CKR_ATTRIBUTE_VALUE_INVALID: u64 = 0x13;
const CKR_OBJECT_HANDLE_INVALID: u64 = 0x82;
const CKR_TEMPLATE_INCONSISTENT: u64 = 0xD1;
const CKR_MECHANISM_PARAM_INVALID: u64 = 0x71;
const CKM_RSA_PKCS: u64 = 0x1;
const CKM_RSA_PKCS_OAEP: u64 = 0x9;
const CKM_SHA_1: u64 = 0x220;
const CKM_SHA256: u64 = 0x250;
const CKG_MGF1_SHA1: u64 = 0x1;
const CKG_MGF1_SHA256: u64 = 0x2;
const CKF_ENCRYPT: u64 = 0x100;
const CKF_DECRYPT: u64 = 0x200;

fn bytes(ty: u64, v: &[u8]) -> Attribute {
    Attribute {
        ty,
        value: AttrValue::Bytes(Blob::new(v.to_vec())),
    }
}

fn flag(ty: u64, v: bool) -> Attribute {
    Attribute {
        ty,
        value: AttrValue::Bool(v),
    }
}

fn ulong(ty: u64, v: u64) -> Attribute {
    Attribute {
        ty,
        value: AttrValue::Ulong(v),
    }
}

fn gcm(iv: u8) -> Mechanism {
    Mechanism {
        ty: CKM_AES_GCM,
        params: MechParams::Gcm(GcmParams {
            iv: Blob::new(vec![iv; 12]),
            iv_bits: 96,
            aad: Blob::new(Vec::new()),
            tag_bits: 128,
            layout: GcmLayout::WithIvBits,
        }),
    }
}

fn bind(env: &Env, role: &str, member: &str) {
    env.ctl(&[
        "iam",
        "bind",
        "--resource",
        RING,
        "--role",
        role,
        "--member",
        member,
    ])
    .ok();
}

fn slot_of(p: &mut P11) -> SlotId {
    p.slots()
        .iter()
        .find(|s| s.ring == RING)
        .expect("the ring's slot")
        .slot
}

fn pair(
    p: &mut P11,
    s: SessionId,
    mechanism: u64,
    public: Vec<Attribute>,
    private: Vec<Attribute>,
) -> Result<(ObjectHandle, ObjectHandle), u64> {
    match p.call(R::GenerateKeyPair {
        session: s,
        mechanism: mech(mechanism),
        public_template: public,
        private_template: private,
    })? {
        P::KeyPair { public, private } => Ok((public, private)),
        other => panic!("{other:?}"),
    }
}

/// An RSA-2048 pair (public exponent 65537, token objects): `public` and `private` add to
/// the templates.
fn rsa_pair(
    p: &mut P11,
    s: SessionId,
    public: Vec<Attribute>,
    private: Vec<Attribute>,
) -> Result<(ObjectHandle, ObjectHandle), u64> {
    let mut public_template = vec![
        flag(CKA_TOKEN, true),
        ulong(CKA_MODULUS_BITS, 2048),
        bytes(CKA_PUBLIC_EXPONENT, &[1, 0, 1]),
    ];
    public_template.extend(public);
    let mut private_template = vec![flag(CKA_TOKEN, true)];
    private_template.extend(private);
    pair(
        p,
        s,
        CKM_RSA_PKCS_KEY_PAIR_GEN,
        public_template,
        private_template,
    )
}

/// AES-GCM with IV `iv` through `key`: encrypts `data` and decrypts it back.
#[track_caller]
fn gcm_round_trip(p: &mut P11, s: SessionId, iv: u8, key: ObjectHandle, data: &[u8]) {
    p.init(Operation::Encrypt, s, gcm(iv), key).unwrap();
    let ct = p.one_shot(Operation::Encrypt, s, data).unwrap();
    p.init(Operation::Decrypt, s, gcm(iv), key).unwrap();
    assert_eq!(p.one_shot(Operation::Decrypt, s, &ct).unwrap(), data);
}

fn aes_key(p: &mut P11, s: SessionId, template: Vec<Attribute>) -> Result<ObjectHandle, u64> {
    match p.call(R::GenerateKey {
        session: s,
        mechanism: mech(CKM_AES_KEY_GEN),
        template,
    })? {
        P::Object(h) => Ok(h),
        other => panic!("{other:?}"),
    }
}

fn ec_pair(p: &mut P11, s: SessionId, id: &[u8], label: &[u8]) -> (ObjectHandle, ObjectHandle) {
    let params = keyward_token::public_key::Curve::P256.ec_params();
    pair(
        p,
        s,
        CKM_EC_KEY_PAIR_GEN,
        vec![
            flag(CKA_TOKEN, true),
            bytes(CKA_EC_PARAMS, &params),
            bytes(CKA_ID, id),
            bytes(CKA_LABEL, label),
            flag(CKA_VERIFY, true),
        ],
        vec![
            flag(CKA_TOKEN, true),
            flag(CKA_PRIVATE, true),
            // OpenSC 0.23 --keygen asks for a non-sensitive key: corrected.
            flag(CKA_SENSITIVE, false),
            bytes(CKA_ID, id),
            bytes(CKA_LABEL, label),
            flag(CKA_SIGN, true),
        ],
    )
    .expect("EC pair")
}

fn find_id(p: &mut P11, s: SessionId, class: u64, id: &[u8]) -> Vec<ObjectHandle> {
    p.find(
        s,
        vec![
            Attribute {
                ty: CKA_CLASS,
                value: AttrValue::Ulong(class),
            },
            bytes(CKA_ID, id),
        ],
    )
}

fn value(p: &mut P11, s: SessionId, o: ObjectHandle, ty: u64) -> AttrValue {
    match p.attrs(s, o, &[ty]).unwrap().remove(0) {
        AttrResult::Value(v) => v,
        other => panic!("attribute {ty:#x}: {other:?}"),
    }
}

fn sign(p: &mut P11, s: SessionId, m: u64, key: ObjectHandle, data: &[u8]) -> Vec<u8> {
    p.init(Operation::Sign, s, mech(m), key).unwrap();
    p.one_shot(Operation::Sign, s, data).unwrap()
}

/// `openssl dgst -sha256 -verify` of a DER signature with a DER SPKI.
fn openssl_verify(env: &Env, spki_der: &[u8], data: &[u8], sig: &[u8]) -> bool {
    openssl_verify_hash(env, "sha256", spki_der, data, sig)
}

fn ring_setting(env: &Env, setting: &str, on: bool) {
    env.ctl(&[
        "keyring",
        "update",
        RING,
        setting,
        if on { "true" } else { "false" },
    ])
    .ok();
}

#[test]
fn keys_made_renamed_and_destroyed_through_the_module() {
    let mut env = Env::new();
    let maker = env.service_account_offline("maker");
    let user = env.service_account_offline("user");
    env.start();
    env.web_ring();
    bind(&env, "roles/kms.admin", "serviceAccount:maker@payments");
    bind(
        &env,
        "roles/kms.cryptoOperator",
        "serviceAccount:maker@payments",
    );
    bind(
        &env,
        "roles/kms.cryptoOperator",
        "serviceAccount:user@payments",
    );

    let mut p = P11::connect(&env.client_socket, Some(&maker));
    let slot = slot_of(&mut p);
    let s = p.open(slot);
    p.login(slot, "").unwrap();
    let data = b"made through the module".to_vec();

    // --- EC P-256, client CKA_ID 01 and a UTF-8 label, found by them.
    let (ec_pub, ec_priv) = ec_pair(&mut p, s, &[1], "clé ec".as_bytes());
    assert_eq!(find_id(&mut p, s, CKO_PRIVATE_KEY, &[1]), vec![ec_priv]);
    assert_eq!(find_id(&mut p, s, CKO_PUBLIC_KEY, &[1]), vec![ec_pub]);
    assert_eq!(
        p.find(
            s,
            vec![
                ulong(CKA_CLASS, CKO_PRIVATE_KEY),
                bytes(CKA_LABEL, "clé ec".as_bytes())
            ]
        ),
        vec![ec_priv]
    );
    let a = p
        .attrs(
            s,
            ec_priv,
            &[
                CKA_SENSITIVE,
                CKA_SIGN,
                CKA_DECRYPT,
                CKA_VALUE,
                CKA_EXTRACTABLE,
                CKA_MODIFIABLE,
            ],
        )
        .unwrap();
    let t = |b| AttrResult::Value(AttrValue::Bool(b));
    assert_eq!(
        a,
        vec![
            t(true),
            t(true),
            t(false),
            AttrResult::Sensitive,
            t(false),
            t(true)
        ]
    );
    assert_eq!(value(&mut p, s, ec_pub, CKA_VERIFY), AttrValue::Bool(true));
    assert_eq!(
        value(&mut p, s, ec_pub, CKA_ENCRYPT),
        AttrValue::Bool(false)
    );
    // Signed in the token, verified by openssl with the public values read back.
    let point = p.bytes(s, ec_pub, CKA_EC_POINT);
    let params = p.bytes(s, ec_pub, CKA_EC_PARAMS);
    let spki = keyward_token::public_key::ec_spki_der(&params, &point).unwrap();
    let raw = sign(&mut p, s, CKM_ECDSA_SHA256, ec_priv, &data);
    let der = keyward_token::public_key::ecdsa_raw_to_der(&raw).unwrap();
    assert!(openssl_verify(&env, &spki, &data, &der), "EC signature");

    // --- RSA-2048 without usage flags: the defaults (sign, decrypt, verify, encrypt).
    let rsa_id = [2u8, 0xff, 0];
    let (rsa_pub, rsa_priv) = rsa_pair(
        &mut p,
        s,
        vec![bytes(CKA_ID, &rsa_id), bytes(CKA_LABEL, b"rsa")],
        vec![bytes(CKA_ID, &rsa_id), bytes(CKA_LABEL, b"rsa")],
    )
    .expect("RSA pair");
    assert_eq!(find_id(&mut p, s, CKO_PRIVATE_KEY, &rsa_id), vec![rsa_priv]);
    for (o, ty) in [
        (rsa_priv, CKA_SIGN),
        (rsa_priv, CKA_DECRYPT),
        (rsa_pub, CKA_VERIFY),
        (rsa_pub, CKA_ENCRYPT),
    ] {
        assert_eq!(value(&mut p, s, o, ty), AttrValue::Bool(true), "{ty:#x}");
    }
    let n = p.bytes(s, rsa_pub, CKA_MODULUS);
    let e = p.bytes(s, rsa_pub, CKA_PUBLIC_EXPONENT);
    let spki = keyward_token::public_key::rsa_spki_der(&n, &e).unwrap();
    let sig = sign(&mut p, s, CKM_SHA256_RSA_PKCS, rsa_priv, &data);
    assert!(openssl_verify(&env, &spki, &data, &sig), "RSA signature");

    // --- AES-256 with an empty label: GCM round trip in the token.
    let aes = aes_key(
        &mut p,
        s,
        vec![
            flag(CKA_TOKEN, true),
            ulong(CKA_VALUE_LEN, 32),
            bytes(CKA_ID, &[3]),
            bytes(CKA_LABEL, b""),
            flag(CKA_SENSITIVE, false),
        ],
    )
    .expect("AES key");
    assert_eq!(find_id(&mut p, s, CKO_SECRET_KEY, &[3]), vec![aes]);
    assert_eq!(p.bytes(s, aes, CKA_LABEL), Vec::<u8>::new());
    assert_eq!(value(&mut p, s, aes, CKA_SENSITIVE), AttrValue::Bool(true));
    assert_eq!(
        value(&mut p, s, aes, CKA_KEY_TYPE),
        AttrValue::Ulong(CKK_AES)
    );
    assert_eq!(value(&mut p, s, aes, CKA_VALUE_LEN), AttrValue::Ulong(32));
    assert_eq!(value(&mut p, s, aes, CKA_SIGN), AttrValue::Bool(false));
    gcm_round_trip(&mut p, s, 4, aes, &data);
    // A flag the template cleared forbids the mechanism.
    let (_, ec2_priv) = pair(
        &mut p,
        s,
        CKM_EC_KEY_PAIR_GEN,
        vec![
            flag(CKA_TOKEN, true),
            bytes(
                CKA_EC_PARAMS,
                &keyward_token::public_key::Curve::P384.ec_params(),
            ),
        ],
        vec![flag(CKA_TOKEN, true), flag(CKA_SIGN, false)],
    )
    .unwrap();
    assert_eq!(
        p.init(Operation::Sign, s, mech(CKM_ECDSA_SHA256), ec2_priv),
        Err(CKR_MECHANISM_INVALID)
    );

    // --- strict_templates: a non-sensitive request is refused, not corrected.
    ring_setting(&env, "--strict-templates", true);
    assert_eq!(
        aes_key(
            &mut p,
            s,
            vec![
                flag(CKA_TOKEN, true),
                ulong(CKA_VALUE_LEN, 16),
                flag(CKA_SENSITIVE, false)
            ]
        ),
        Err(CKR_ATTRIBUTE_VALUE_INVALID)
    );
    aes_key(
        &mut p,
        s,
        vec![flag(CKA_TOKEN, true), ulong(CKA_VALUE_LEN, 16)],
    )
    .expect("a sensitive key under strict_templates");
    ring_setting(&env, "--strict-templates", false);
    // CKA_TOKEN=FALSE makes a session object (tests/session_objects.rs), not a Keyward key.
    let session_key = aes_key(
        &mut p,
        s,
        vec![flag(CKA_TOKEN, false), ulong(CKA_VALUE_LEN, 16)],
    )
    .expect("a session key");
    assert_eq!(
        value(&mut p, s, session_key, CKA_TOKEN),
        AttrValue::Bool(false)
    );

    // --- another principal without kms.cryptoKeys.create: write-protected; it sees the new
    // keys (cryptoOperator on the ring) but may neither rename nor destroy them.
    let mut u = P11::connect(&env.client_socket, Some(&user));
    let us = u.open(slot);
    u.login(slot, "").unwrap();
    assert_eq!(
        aes_key(
            &mut u,
            us,
            vec![flag(CKA_TOKEN, true), ulong(CKA_VALUE_LEN, 32)]
        ),
        Err(CKR_TOKEN_WRITE_PROTECTED)
    );
    let u_ec_priv = find_id(&mut u, us, CKO_PRIVATE_KEY, &[1])[0];
    assert_eq!(
        u.call(R::SetAttributeValue {
            session: us,
            object: u_ec_priv,
            template: vec![bytes(CKA_LABEL, b"mine")],
        }),
        Err(CKR_ACTION_PROHIBITED)
    );
    assert_eq!(
        u.call(R::DestroyObject {
            session: us,
            object: u_ec_priv
        }),
        Err(CKR_ACTION_PROHIBITED)
    );

    // --- the creating instance renames (NSS sets CKA_ID after keygen).
    p.call(R::SetAttributeValue {
        session: s,
        object: rsa_priv,
        template: vec![bytes(CKA_ID, &[9, 9]), bytes(CKA_LABEL, b"renamed")],
    })
    .expect("the creator renames");
    p.call(R::SetAttributeValue {
        session: s,
        object: rsa_pub,
        template: vec![bytes(CKA_ID, &[9, 9])],
    })
    .expect("the creator renames the public half");
    assert_eq!(find_id(&mut p, s, CKO_PRIVATE_KEY, &[9, 9]), vec![rsa_priv]);
    assert_eq!(find_id(&mut p, s, CKO_PUBLIC_KEY, &[9, 9]), vec![rsa_pub]);
    assert!(find_id(&mut p, s, CKO_PRIVATE_KEY, &rsa_id).is_empty());
    assert_eq!(p.bytes(s, rsa_priv, CKA_LABEL), b"renamed".to_vec());
    assert_eq!(p.bytes(s, rsa_pub, CKA_LABEL), b"rsa".to_vec());
    assert_eq!(
        p.call(R::SetAttributeValue {
            session: s,
            object: rsa_priv,
            template: vec![flag(CKA_SIGN, false)],
        }),
        Err(0x10),
        "only CKA_ID and CKA_LABEL change"
    );

    // --- destroying the private half schedules the version's destruction and hides it;
    // the public half stays until destroyed; the CKA_ID is free at once.
    p.call(R::DestroyObject {
        session: s,
        object: ec_priv,
    })
    .expect("destroy the private half");
    assert!(find_id(&mut p, s, CKO_PRIVATE_KEY, &[1]).is_empty());
    assert_eq!(find_id(&mut p, s, CKO_PUBLIC_KEY, &[1]), vec![ec_pub]);
    assert_eq!(
        p.init(Operation::Sign, s, mech(CKM_ECDSA_SHA256), ec_priv),
        Err(CKR_KEY_HANDLE_INVALID)
    );
    let keys = env.ctl(&["--json", "key", "list", "--keyring", RING]);
    keys.ok();
    assert!(
        keys.stdout.contains("DESTROY_SCHEDULED") && keys.stdout.contains("PKCS11_GENERIC"),
        "{}",
        keys.stdout
    );
    p.call(R::DestroyObject {
        session: s,
        object: ec_pub,
    })
    .expect("destroy the public half");
    assert!(find_id(&mut p, s, CKO_PUBLIC_KEY, &[1]).is_empty());
    assert_eq!(
        p.attrs(s, ec_pub, &[CKA_LABEL]),
        Err(CKR_OBJECT_HANDLE_INVALID)
    );
    let (new_pub, new_priv) = ec_pair(&mut p, s, &[1], b"again");
    assert_eq!(find_id(&mut p, s, CKO_PRIVATE_KEY, &[1]), vec![new_priv]);
    assert_eq!(find_id(&mut p, s, CKO_PUBLIC_KEY, &[1]), vec![new_pub]);
    let raw = sign(&mut p, s, CKM_ECDSA_SHA256, new_priv, &data);
    assert_eq!(raw.len(), 64);
    // A secret key is destroyed at once from the client's view.
    p.call(R::DestroyObject {
        session: s,
        object: aes,
    })
    .expect("destroy the AES key");
    assert!(find_id(&mut p, s, CKO_SECRET_KEY, &[3]).is_empty());

    // --- C_CreateObject: plaintext AES only with allow_plaintext_import.
    let import = |p: &mut P11| {
        p.call(R::CreateObject {
            session: s,
            template: vec![
                ulong(CKA_CLASS, CKO_SECRET_KEY),
                ulong(CKA_KEY_TYPE, CKK_AES),
                flag(CKA_TOKEN, true),
                bytes(CKA_VALUE, &[0x42; 32]),
                bytes(CKA_ID, &[4]),
                bytes(CKA_LABEL, b"kat"),
            ],
        })
    };
    assert_eq!(import(&mut p), Err(CKR_TEMPLATE_INCONSISTENT));
    ring_setting(&env, "--allow-plaintext-import", true);
    let kat = match import(&mut p) {
        Ok(P::Object(h)) => h,
        other => panic!("{other:?}"),
    };
    assert_eq!(find_id(&mut p, s, CKO_SECRET_KEY, &[4]), vec![kat]);
    assert_eq!(
        value(&mut p, s, kat, 0x163),
        AttrValue::Bool(false),
        "CKA_LOCAL"
    );
    p.init(Operation::Encrypt, s, gcm(5), kat).unwrap();
    let ct = p.one_shot(Operation::Encrypt, s, &data).unwrap();
    // The same material imported again decrypts it: the key is the client's bytes.
    let again = match p.call(R::CreateObject {
        session: s,
        template: vec![
            ulong(CKA_CLASS, CKO_SECRET_KEY),
            ulong(CKA_KEY_TYPE, CKK_AES),
            flag(CKA_TOKEN, true),
            bytes(CKA_VALUE, &[0x42; 32]),
            bytes(CKA_ID, &[5]),
        ],
    }) {
        Ok(P::Object(h)) => h,
        other => panic!("{other:?}"),
    };
    p.init(Operation::Decrypt, s, gcm(5), again).unwrap();
    assert_eq!(p.one_shot(Operation::Decrypt, s, &ct).unwrap(), data);
    // Token data objects are not offered (session data objects are).
    assert_eq!(
        p.call(R::CreateObject {
            session: s,
            template: vec![
                ulong(CKA_CLASS, CKO_DATA),
                flag(CKA_TOKEN, true),
                bytes(CKA_VALUE, b"x")
            ],
        }),
        Err(CKR_TEMPLATE_INCONSISTENT)
    );

    // --- audit: creations, the import, destruction, renames and denials.
    drop(u);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let q = |action: &str| {
        let out = env.ctl(&["--json", "audit", "query", "--action", action]);
        out.ok();
        out.json_lines()
    };
    let gen = q("C_GenerateKeyPair");
    assert!(
        gen.iter().any(|r| r["result"] == "allowed"
            && r["principal"] == "serviceAccount:maker@payments"
            && r["resource"]
                .as_str()
                .is_some_and(|n| n.contains("/cryptoKeys/p11-"))
            && r["instance"].is_string()),
        "{gen:#?}"
    );
    let gk = q("C_GenerateKey");
    assert!(
        gk.iter().any(|r| r["result"] == "denied"
            && r["principal"] == "serviceAccount:user@payments"
            && r["rv"] == CKR_TOKEN_WRITE_PROTECTED),
        "{gk:#?}"
    );
    assert!(
        gk.iter()
            .any(|r| r["result"] == "denied" && r["rv"] == CKR_ATTRIBUTE_VALUE_INVALID),
        "{gk:#?}"
    );
    let created = q("C_CreateObject");
    assert!(
        created.iter().any(|r| r["result"] == "allowed"
            && r["detail"]
                .as_str()
                .is_some_and(|d| d.contains("imported plaintext"))),
        "{created:#?}"
    );
    let destroyed = q("C_DestroyObject");
    assert!(
        destroyed.iter().any(|r| r["result"] == "allowed"
            && r["detail"]
                .as_str()
                .is_some_and(|d| d.contains("destruction scheduled"))),
        "{destroyed:#?}"
    );
    assert!(destroyed
        .iter()
        .any(|r| r["result"] == "denied" && r["rv"] == CKR_ACTION_PROHIBITED));
    let set = q("C_SetAttributeValue");
    assert!(set.iter().any(|r| r["result"] == "allowed"), "{set:#?}");
    assert!(
        set.iter()
            .any(|r| r["result"] == "denied" && r["principal"] == "serviceAccount:user@payments"),
        "{set:#?}"
    );
}

fn oaep(hash: u64, mgf: u64, label: &[u8]) -> Mechanism {
    Mechanism {
        ty: CKM_RSA_PKCS_OAEP,
        params: MechParams::Oaep(OaepParams {
            hash,
            mgf,
            source: 1,
            source_data: Blob::new(label.to_vec()),
        }),
    }
}

/// Encrypts `data` with openssl under the RSA public key `spki_der`, `opts` as
/// `openssl pkeyutl -pkeyopt` values.
fn openssl_encrypt(env: &Env, spki_der: &[u8], data: &[u8], opts: &[&str]) -> Vec<u8> {
    let dir = env.dir();
    let pem = keyward_token::public_key::spki_pem(spki_der).unwrap();
    std::fs::write(dir.join("e-pub.pem"), pem).unwrap();
    std::fs::write(dir.join("e-data"), data).unwrap();
    let mut cmd = Command::new("openssl");
    cmd.args(["pkeyutl", "-encrypt", "-pubin", "-inkey"])
        .arg(dir.join("e-pub.pem"))
        .arg("-in")
        .arg(dir.join("e-data"))
        .arg("-out")
        .arg(dir.join("e-ct"));
    for o in opts {
        cmd.args(["-pkeyopt", o]);
    }
    assert!(
        cmd.status().expect("run openssl").success(),
        "openssl {opts:?}"
    );
    std::fs::read(dir.join("e-ct")).unwrap()
}

/// OpenSC 0.23 `--test` and `--decrypt -m RSA-PKCS-OAEP --hash-algorithm SHA256` against
/// SoftHSM2 2.6 (design §5): OAEP parameters the token cannot do (SHA-256, a label) are
/// `CKR_MECHANISM_PARAM_INVALID` at C_DecryptInit, never forwarded for the token to answer
/// `CKR_ARGUMENTS_BAD` at C_Decrypt/C_DecryptFinal (pkcs11-tool skips the first, aborts on the
/// second); OAEP with SHA-1 and no label and PKCS#1 v1.5 decryption work in the token.
#[test]
fn rsa_decryption_the_token_cannot_do_is_refused_at_init() {
    let mut env = Env::new();
    let maker = env.service_account_offline("maker");
    env.start();
    env.web_ring();
    bind(&env, "roles/kms.admin", "serviceAccount:maker@payments");
    bind(
        &env,
        "roles/kms.cryptoOperator",
        "serviceAccount:maker@payments",
    );
    let mut p = P11::connect(&env.client_socket, Some(&maker));
    let slot = slot_of(&mut p);
    let s = p.open(slot);
    p.login(slot, "").unwrap();
    let (rsa_pub, rsa_priv) = rsa_pair(
        &mut p,
        s,
        vec![bytes(CKA_ID, &[9])],
        vec![bytes(CKA_ID, &[9])],
    )
    .expect("RSA pair");
    let n = p.bytes(s, rsa_pub, CKA_MODULUS);
    let e = p.bytes(s, rsa_pub, CKA_PUBLIC_EXPONENT);
    let spki = keyward_token::public_key::rsa_spki_der(&n, &e).unwrap();
    let data = b"decrypted in the token".to_vec();

    // SHA-256 (what pkcs11-tool --test and --hash-algorithm SHA256 ask), with or without
    // the label "ABC", and SHA-1 with a label: refused at Init, for one-shot and multi-part.
    for m in [
        oaep(CKM_SHA256, CKG_MGF1_SHA256, b"ABC"),
        oaep(CKM_SHA256, CKG_MGF1_SHA256, b""),
        oaep(CKM_SHA_1, CKG_MGF1_SHA1, b"ABC"),
        oaep(CKM_SHA_1, CKG_MGF1_SHA256, b""),
        mech(CKM_RSA_PKCS_OAEP),
    ] {
        assert_eq!(
            p.init(Operation::Decrypt, s, m.clone(), rsa_priv),
            Err(CKR_MECHANISM_PARAM_INVALID),
            "{m:?}"
        );
        assert_eq!(
            p.init(Operation::Encrypt, s, m.clone(), rsa_pub),
            Err(CKR_MECHANISM_PARAM_INVALID),
            "{m:?}"
        );
    }
    // Nothing was left active: the next Init works.
    let ct = openssl_encrypt(
        &env,
        &spki,
        &data,
        &[
            "rsa_padding_mode:oaep",
            "rsa_oaep_md:sha1",
            "rsa_mgf1_md:sha1",
        ],
    );
    let sha1 = oaep(CKM_SHA_1, CKG_MGF1_SHA1, b"");
    p.init(Operation::Decrypt, s, sha1.clone(), rsa_priv)
        .unwrap();
    assert_eq!(p.one_shot(Operation::Decrypt, s, &ct).unwrap(), data);
    // Multi-part.
    p.init(Operation::Decrypt, s, sha1, rsa_priv).unwrap();
    p.call(R::OperationUpdate {
        op: Operation::Decrypt,
        session: s,
        data: Blob::new(ct.clone()),
    })
    .unwrap();
    match p.call(R::OperationFinal {
        op: Operation::Decrypt,
        session: s,
    }) {
        Ok(P::Data(d)) => assert_eq!(d.as_slice(), &data[..]),
        other => panic!("{other:?}"),
    }

    // PKCS#1 v1.5 decryption in the token, as pkcs11-tool --test does it; advertised for it.
    match p.call(R::GetMechanismInfo {
        slot,
        mechanism: CKM_RSA_PKCS,
    }) {
        Ok(P::MechanismInfo(i)) => {
            assert_eq!(
                i.flags & (CKF_ENCRYPT | CKF_DECRYPT),
                CKF_ENCRYPT | CKF_DECRYPT
            )
        }
        other => panic!("{other:?}"),
    }
    let ct = openssl_encrypt(&env, &spki, &data, &["rsa_padding_mode:pkcs1"]);
    p.init(Operation::Decrypt, s, mech(CKM_RSA_PKCS), rsa_priv)
        .unwrap();
    assert_eq!(p.one_shot(Operation::Decrypt, s, &ct).unwrap(), data);
    p.init(Operation::Encrypt, s, mech(CKM_RSA_PKCS), rsa_pub)
        .unwrap();
    let ct = p.one_shot(Operation::Encrypt, s, &data).unwrap();
    p.init(Operation::Decrypt, s, mech(CKM_RSA_PKCS), rsa_priv)
        .unwrap();
    assert_eq!(p.one_shot(Operation::Decrypt, s, &ct).unwrap(), data);
    // Not on a key without decrypt rights.
    let (_, sign_only) = rsa_pair(&mut p, s, vec![], vec![flag(CKA_DECRYPT, false)]).unwrap();
    assert_eq!(
        p.init(Operation::Decrypt, s, mech(CKM_RSA_PKCS), sign_only),
        Err(CKR_MECHANISM_INVALID)
    );
}

const CKM_AES_ECB: u64 = 0x1081;
const CKM_AES_CBC: u64 = 0x1082;
const CKM_AES_CBC_PAD: u64 = 0x1085;
const CKM_AES_CTR: u64 = 0x1086;
const CKM_SHA384_RSA_PKCS: u64 = 0x41;
const CKM_SHA512_RSA_PKCS: u64 = 0x42;
const CKR_DATA_LEN_RANGE: u64 = 0x21;
const CKR_ENCRYPTED_DATA_INVALID: u64 = 0x40;
const CKR_ENCRYPTED_DATA_LEN_RANGE: u64 = 0x41;

fn with_iv(ty: u64, iv: &[u8]) -> Mechanism {
    Mechanism {
        ty,
        params: MechParams::Bytes(Blob::new(iv.to_vec())),
    }
}

fn ctr(counter_bits: u64, cb: [u8; 16]) -> Mechanism {
    Mechanism {
        ty: CKM_AES_CTR,
        params: MechParams::Ctr(keyward_wire::pkcs11::CtrParams { counter_bits, cb }),
    }
}

/// `op` over `data` as C_*Update in two parts then C_*Final (the daemon runs it at Final).
fn multi_part(
    p: &mut P11,
    s: SessionId,
    op: Operation,
    m: Mechanism,
    key: ObjectHandle,
    data: &[u8],
) -> Result<Vec<u8>, u64> {
    p.init(op, s, m, key)?;
    let mut out = Vec::new();
    for part in [&data[..data.len() / 3], &data[data.len() / 3..]] {
        if let P::Data(d) = p.call(R::OperationUpdate {
            op,
            session: s,
            data: Blob::new(part.to_vec()),
        })? {
            out.extend_from_slice(d.as_slice());
        }
    }
    match p.call(R::OperationFinal { op, session: s })? {
        P::Data(d) => out.extend_from_slice(d.as_slice()),
        other => panic!("{other:?}"),
    }
    Ok(out)
}

/// `openssl enc` (`-e` or `-d`) with cipher `cipher`, hex key and IV, and `extra` options.
fn openssl_enc(
    env: &Env,
    dir: &str,
    cipher: &str,
    key: &[u8],
    iv: Option<&[u8]>,
    extra: &[&str],
    data: &[u8],
) -> Vec<u8> {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let d = env.dir();
    std::fs::write(d.join("enc-in"), data).unwrap();
    let mut cmd = Command::new("openssl");
    cmd.args(["enc", dir, cipher, "-K", &hex(key)])
        .arg("-in")
        .arg(d.join("enc-in"))
        .arg("-out")
        .arg(d.join("enc-out"));
    if let Some(iv) = iv {
        cmd.args(["-iv", &hex(iv)]);
    }
    cmd.args(extra);
    assert!(
        cmd.status().expect("run openssl").success(),
        "openssl enc {dir} {cipher}"
    );
    std::fs::read(d.join("enc-out")).unwrap()
}

/// `openssl dgst -<hash> -verify` of an RSA PKCS#1 v1.5 signature with a DER SPKI.
fn openssl_verify_hash(env: &Env, hash: &str, spki_der: &[u8], data: &[u8], sig: &[u8]) -> bool {
    let pem = keyward_token::public_key::spki_pem(spki_der).unwrap();
    env.openssl_verify(hash, &pem, data, sig)
}

/// OpenSC `--encrypt/--decrypt -m AES-CBC-PAD` and check-module.sh's known-answer test (design
/// §4 "Mechanisms"): AES keys made through the module (generated or imported) do AES-CBC-PAD,
/// -CBC, -ECB and -CTR in the token, one-shot and multi-part, with the same results as
/// `openssl enc`; parameters are checked at Init, input that is not whole blocks gets the
/// spec's length codes, bad padding CKR_ENCRYPTED_DATA_INVALID; a keywardctl AES_256_GCM key
/// keeps AES-GCM only. Generic RSA keys also sign with SHA-384/512 PKCS#1 v1.5.
#[test]
fn aes_block_modes_on_keys_made_through_the_module() {
    let mut env = Env::new();
    let maker = env.service_account_offline("maker");
    env.start();
    env.web_ring();
    ring_setting(&env, "--allow-plaintext-import", true);
    env.create_key(RING, "gcm-only", "ENCRYPT_DECRYPT", "AES_256_GCM");
    bind(&env, "roles/kms.admin", "serviceAccount:maker@payments");
    bind(
        &env,
        "roles/kms.cryptoOperator",
        "serviceAccount:maker@payments",
    );
    let mut p = P11::connect(&env.client_socket, Some(&maker));
    let slot = slot_of(&mut p);
    let s = p.open(slot);
    p.login(slot, "").unwrap();

    // Listed, with key sizes in bytes and encrypt/decrypt only.
    let listed = match p.call(R::GetMechanismList { slot }) {
        Ok(P::Mechanisms(m)) => m,
        other => panic!("{other:?}"),
    };
    for m in [CKM_AES_CBC_PAD, CKM_AES_CBC, CKM_AES_ECB, CKM_AES_CTR] {
        assert!(listed.contains(&m), "{m:#x} in {listed:x?}");
        match p.call(R::GetMechanismInfo { slot, mechanism: m }) {
            Ok(P::MechanismInfo(i)) => {
                assert_eq!(
                    (i.min_key_size, i.max_key_size, i.flags),
                    (16, 32, CKF_ENCRYPT | CKF_DECRYPT),
                    "{m:#x}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    let iv: [u8; 16] = std::array::from_fn(|i| i as u8 * 17);
    let cb: [u8; 16] = std::array::from_fn(|i| 0xf0 ^ i as u8);
    let modes = [
        with_iv(CKM_AES_CBC_PAD, &iv),
        with_iv(CKM_AES_CBC, &iv),
        mech(CKM_AES_ECB),
        ctr(128, cb),
    ];
    let blocks: Vec<u8> = (0..64u8).collect();
    let odd: Vec<u8> = (0..77u8).collect();
    // The input each mode takes: whole blocks without padding, any length otherwise.
    let input = |m: &Mechanism| match m.ty {
        CKM_AES_CBC | CKM_AES_ECB => &blocks[..],
        _ => &odd[..],
    };

    // --- a generated AES-256 key: round trips, one-shot and multi-part agree.
    let gen = aes_key(
        &mut p,
        s,
        vec![
            flag(CKA_TOKEN, true),
            ulong(CKA_VALUE_LEN, 32),
            bytes(CKA_ID, &[0xae]),
        ],
    )
    .expect("AES-256 key");
    for m in &modes {
        let data = input(m);
        p.init(Operation::Encrypt, s, m.clone(), gen).unwrap();
        let ct = p.one_shot(Operation::Encrypt, s, data).unwrap();
        let want_len = if m.ty == CKM_AES_CBC_PAD {
            80
        } else {
            data.len()
        };
        assert_eq!(ct.len(), want_len, "{m:?}");
        assert_ne!(&ct[..data.len()], data, "{m:?}");
        let ct2 = multi_part(&mut p, s, Operation::Encrypt, m.clone(), gen, data).unwrap();
        assert_eq!(ct2, ct, "multi-part {m:?}");
        p.init(Operation::Decrypt, s, m.clone(), gen).unwrap();
        assert_eq!(
            p.one_shot(Operation::Decrypt, s, &ct).unwrap(),
            data,
            "{m:?}"
        );
        let rt = multi_part(&mut p, s, Operation::Decrypt, m.clone(), gen, &ct).unwrap();
        assert_eq!(rt, data, "multi-part {m:?}");
    }

    // --- known key bytes imported: the same ciphertexts as openssl enc, both directions.
    let key: [u8; 32] = std::array::from_fn(|i| 0x30 + i as u8);
    let kat = match p.call(R::CreateObject {
        session: s,
        template: vec![
            ulong(CKA_CLASS, CKO_SECRET_KEY),
            ulong(CKA_KEY_TYPE, CKK_AES),
            flag(CKA_TOKEN, true),
            bytes(CKA_VALUE, &key),
            bytes(CKA_ID, &[0xa7]),
        ],
    }) {
        Ok(P::Object(h)) => h,
        other => panic!("{other:?}"),
    };
    for (m, cipher, iv, extra) in [
        (&modes[0], "-aes-256-cbc", Some(&iv[..]), &[][..]),
        (&modes[1], "-aes-256-cbc", Some(&iv[..]), &["-nopad"][..]),
        (&modes[2], "-aes-256-ecb", None, &["-nopad"][..]),
        (&modes[3], "-aes-256-ctr", Some(&cb[..]), &[][..]),
    ] {
        let data = input(m);
        p.init(Operation::Encrypt, s, m.clone(), kat).unwrap();
        let ct = p.one_shot(Operation::Encrypt, s, data).unwrap();
        assert_eq!(
            ct,
            openssl_enc(&env, "-e", cipher, &key, iv, extra, data),
            "{m:?}"
        );
        let ours = openssl_enc(&env, "-e", cipher, &key, iv, extra, data);
        p.init(Operation::Decrypt, s, m.clone(), kat).unwrap();
        assert_eq!(p.one_shot(Operation::Decrypt, s, &ours).unwrap(), data);
        assert_eq!(openssl_enc(&env, "-d", cipher, &key, iv, extra, &ct), data);
    }

    // --- parameters checked at Init; nothing is left active after a refusal.
    for (m, op) in [
        (with_iv(CKM_AES_CBC_PAD, &iv[..8]), Operation::Encrypt),
        (mech(CKM_AES_CBC_PAD), Operation::Decrypt),
        (with_iv(CKM_AES_CBC, &[0; 17]), Operation::Encrypt),
        (mech(CKM_AES_CBC), Operation::Decrypt),
        (with_iv(CKM_AES_ECB, &iv), Operation::Encrypt),
        (ctr(0, cb), Operation::Encrypt),
        (ctr(129, cb), Operation::Decrypt),
        (with_iv(CKM_AES_CTR, &cb), Operation::Encrypt),
    ] {
        assert_eq!(
            p.init(op, s, m.clone(), gen),
            Err(CKR_MECHANISM_PARAM_INVALID),
            "{m:?}"
        );
    }

    // --- input that is not whole blocks, and bad padding: the spec's codes.
    let cases = [
        (
            with_iv(CKM_AES_CBC, &iv),
            Operation::Encrypt,
            17,
            CKR_DATA_LEN_RANGE,
        ),
        (
            mech(CKM_AES_ECB),
            Operation::Encrypt,
            31,
            CKR_DATA_LEN_RANGE,
        ),
        (
            with_iv(CKM_AES_CBC, &iv),
            Operation::Decrypt,
            17,
            CKR_ENCRYPTED_DATA_LEN_RANGE,
        ),
        (
            mech(CKM_AES_ECB),
            Operation::Decrypt,
            15,
            CKR_ENCRYPTED_DATA_LEN_RANGE,
        ),
        (
            with_iv(CKM_AES_CBC_PAD, &iv),
            Operation::Decrypt,
            17,
            CKR_ENCRYPTED_DATA_LEN_RANGE,
        ),
        (
            with_iv(CKM_AES_CBC_PAD, &iv),
            Operation::Decrypt,
            0,
            CKR_ENCRYPTED_DATA_LEN_RANGE,
        ),
    ];
    for (m, op, len, rv) in cases {
        p.init(op, s, m.clone(), gen).unwrap();
        assert_eq!(p.one_shot(op, s, &vec![7; len]), Err(rv), "{m:?} {len}");
        assert_eq!(
            multi_part(&mut p, s, op, m.clone(), gen, &vec![7; len]),
            Err(rv),
            "multi-part {m:?} {len}"
        );
    }
    // A block whose plaintext ends in 0x00 is not PKCS#7 padding.
    p.init(Operation::Encrypt, s, with_iv(CKM_AES_CBC, &iv), gen)
        .unwrap();
    let ct = p.one_shot(Operation::Encrypt, s, &[0; 16]).unwrap();
    p.init(Operation::Decrypt, s, with_iv(CKM_AES_CBC_PAD, &iv), gen)
        .unwrap();
    assert_eq!(
        p.one_shot(Operation::Decrypt, s, &ct),
        Err(CKR_ENCRYPTED_DATA_INVALID)
    );
    // Empty input to the modes without padding is empty output; CBC-PAD pads a block.
    for (m, n) in [
        (&modes[0], 16),
        (&modes[1], 0),
        (&modes[2], 0),
        (&modes[3], 0),
    ] {
        p.init(Operation::Encrypt, s, m.clone(), gen).unwrap();
        assert_eq!(
            p.one_shot(Operation::Encrypt, s, &[]).unwrap().len(),
            n,
            "{m:?}"
        );
    }

    // --- a key without CKA_ENCRYPT: its flags decide (design §4).
    let dec_only = aes_key(
        &mut p,
        s,
        vec![
            flag(CKA_TOKEN, true),
            ulong(CKA_VALUE_LEN, 16),
            flag(CKA_ENCRYPT, false),
        ],
    )
    .unwrap();
    for m in &modes {
        assert_eq!(
            p.init(Operation::Encrypt, s, m.clone(), dec_only),
            Err(CKR_MECHANISM_INVALID),
            "{m:?}"
        );
        p.init(Operation::Decrypt, s, m.clone(), dec_only).unwrap();
        p.call(R::OperationCancel {
            op: Operation::Decrypt,
            session: s,
        })
        .unwrap();
    }
    // Not for signing either.
    assert_eq!(
        p.init(Operation::Sign, s, mech(CKM_AES_ECB), gen),
        Err(CKR_MECHANISM_INVALID)
    );

    // --- a keywardctl AES_256_GCM key keeps AES-GCM only.
    let gcm_key = p.find_labelled(s, CKO_SECRET_KEY, "gcm-only");
    assert_eq!(gcm_key.len(), 1);
    let gcm_key = gcm_key[0];
    for m in &modes {
        for op in [Operation::Encrypt, Operation::Decrypt] {
            assert_eq!(
                p.init(op, s, m.clone(), gcm_key),
                Err(CKR_MECHANISM_INVALID),
                "{m:?}"
            );
        }
    }
    gcm_round_trip(&mut p, s, 9, gcm_key, &odd);

    // --- SHA-384/512 PKCS#1 v1.5 with an RSA key made through the module, checked by openssl.
    let (rsa_pub, rsa_priv) = rsa_pair(&mut p, s, vec![], vec![]).expect("RSA pair");
    let n = p.bytes(s, rsa_pub, CKA_MODULUS);
    let e = p.bytes(s, rsa_pub, CKA_PUBLIC_EXPONENT);
    let spki = keyward_token::public_key::rsa_spki_der(&n, &e).unwrap();
    for (m, hash) in [
        (CKM_SHA384_RSA_PKCS, "sha384"),
        (CKM_SHA512_RSA_PKCS, "sha512"),
    ] {
        assert!(listed.contains(&m), "{m:#x}");
        let sig = sign(&mut p, s, m, rsa_priv, &odd);
        assert!(openssl_verify_hash(&env, hash, &spki, &odd, &sig), "{hash}");
        p.init(Operation::Verify, s, mech(m), rsa_pub).unwrap();
        assert_eq!(
            p.call(R::Verify {
                session: s,
                data: Blob::new(odd.clone()),
                signature: Blob::new(sig),
            })
            .map(drop),
            Ok(())
        );
    }
}
