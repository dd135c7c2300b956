//! Attacks: label and ID squatting (issue 13 finding 7, design §9 "Squatting").
//!
//! A principal holding only `kms.cryptoKeys.create` on a ring makes a key whose value it
//! knows (generated or plaintext-imported) with the `CKA_LABEL` and `CKA_ID` of the ring's
//! real key, so that an encrypter finding "the key" by label gets the squatter's. Within a
//! ring a non-empty `CKA_LABEL` or `CKA_ID` is unique among keys (the two halves of one pair
//! share theirs), on every path that names a key: C_GenerateKey(Pair), C_CreateObject,
//! C_SetAttributeValue, BYOK imports, `key create` and version restore; keywardctl key ids,
//! `id@vN` and `import-job-*` labels are reserved; a taken one is
//! `CKR_ATTRIBUTE_VALUE_INVALID`. Empty or absent values are exempt; finds return objects in
//! creation order; a scheduled destruction frees the names; duplicates made before this rule
//! are reported when keywardd starts, not refused.

use crate::common::daemon::Env;
use crate::common::module::{cryptoki, exclusive, ring_slot, Settings};
use crate::common::pkcs11::*;
use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism as CkMechanism;
use cryptoki::object::{Attribute as CkAttr, AttributeType, KeyType, ObjectClass};
use keyward_wire::pkcs11::{
    AttrValue, Attribute, Blob, ObjectHandle, Pkcs11Request as R, Pkcs11Response as P, SessionId,
    SlotId,
};

const RING: &str = "projects/payments/keyRings/web";
const REAL: &str = "web-key";
const CREATOR: &str = "serviceAccount:squatter@payments";
const CKR_ATTRIBUTE_VALUE_INVALID: u64 = 0x13;
const CKA_TOKEN: u64 = 0x1;
const CKA_KEY_TYPE: u64 = 0x100;
const CKA_VALUE_LEN: u64 = 0x161;
const CKA_EC_PARAMS: u64 = 0x180;
const CKK_AES: u64 = 0x1F;
const CKM_AES_KEY_GEN: u64 = 0x1080;
const CKM_EC_KEY_PAIR_GEN: u64 = 0x1040;

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

/// keywardd with ring `web` holding the admin's AES key [`REAL`]; `squatter@payments` holds
/// only a custom role with `kms.cryptoKeys.create` on the ring, `enc@payments`
/// `roles/kms.cryptoKeyEncrypter` on the ring. Returns (env, squatter's key, encrypter's key).
fn world() -> (Env, String, String) {
    let mut env = Env::new();
    let squatter = env.service_account_offline("squatter");
    let enc = env.service_account_offline("enc");
    env.start();
    env.web_ring();
    env.create_key(RING, REAL, "ENCRYPT_DECRYPT", "AES_256_GCM");
    env.ctl(&[
        "role",
        "create",
        "--org",
        "acme",
        "creator",
        "--permissions",
        "kms.cryptoKeys.create",
    ])
    .ok();
    env.bind(RING, "organizations/acme/roles/creator", CREATOR);
    env.bind(
        RING,
        "roles/kms.cryptoKeyEncrypter",
        "serviceAccount:enc@payments",
    );
    (env, squatter, enc)
}

/// A logged-in session of the principal whose key is `key`, on the ring's slot.
fn session(env: &Env, key: &str) -> (P11, SlotId, SessionId) {
    let mut p = P11::connect(&env.client_socket, Some(key));
    let slot = p
        .slots()
        .iter()
        .find(|s| s.ring == RING)
        .expect("the ring's slot")
        .slot;
    let s = p.open(slot);
    p.login(slot, "").expect("login");
    (p, slot, s)
}

/// C_GenerateKey of a token AES-256 key with `label` and `id` (None: absent).
fn aes(
    p: &mut P11,
    s: SessionId,
    label: Option<&[u8]>,
    id: Option<&[u8]>,
) -> Result<ObjectHandle, u64> {
    let mut template = vec![flag(CKA_TOKEN, true), ulong(CKA_VALUE_LEN, 32)];
    if let Some(l) = label {
        template.push(bytes(CKA_LABEL, l));
    }
    if let Some(i) = id {
        template.push(bytes(CKA_ID, i));
    }
    match p.call(R::GenerateKey {
        session: s,
        mechanism: mech(CKM_AES_KEY_GEN),
        template,
    })? {
        P::Object(h) => Ok(h),
        other => panic!("{other:?}"),
    }
}

/// C_GenerateKeyPair of a P-256 pair, both halves with `label` and `id`.
fn ec_pair(
    p: &mut P11,
    s: SessionId,
    label: &[u8],
    id: &[u8],
) -> Result<(ObjectHandle, ObjectHandle), u64> {
    let params = keyward_token::public_key::Curve::P256.ec_params();
    match p.call(R::GenerateKeyPair {
        session: s,
        mechanism: mech(CKM_EC_KEY_PAIR_GEN),
        public_template: vec![
            flag(CKA_TOKEN, true),
            bytes(CKA_EC_PARAMS, &params),
            bytes(CKA_LABEL, label),
            bytes(CKA_ID, id),
        ],
        private_template: vec![
            flag(CKA_TOKEN, true),
            bytes(CKA_LABEL, label),
            bytes(CKA_ID, id),
        ],
    })? {
        P::KeyPair { public, private } => Ok((public, private)),
        other => panic!("{other:?}"),
    }
}

/// C_CreateObject of a plaintext AES-256 token key.
fn import_plain(p: &mut P11, s: SessionId, label: &[u8], id: &[u8]) -> Result<P, u64> {
    p.call(R::CreateObject {
        session: s,
        template: vec![
            ulong(CKA_CLASS, CKO_SECRET_KEY),
            ulong(CKA_KEY_TYPE, CKK_AES),
            flag(CKA_TOKEN, true),
            bytes(CKA_VALUE, &[0x42; 32]),
            bytes(CKA_LABEL, label),
            bytes(CKA_ID, id),
        ],
    })
}

fn set(p: &mut P11, s: SessionId, o: ObjectHandle, template: Vec<Attribute>) -> Result<P, u64> {
    p.call(R::SetAttributeValue {
        session: s,
        object: o,
        template,
    })
}

/// The names of the keys made through the module (`p11-...`), as `key list` gives them.
fn generated_keys(env: &Env) -> Vec<String> {
    let out = env.ctl(&["--json", "key", "list", "--keyring", RING]);
    out.ok();
    out.json()
        .as_array()
        .unwrap_or_else(|| panic!("{out:#?}"))
        .iter()
        .filter_map(|k| k["name"].as_str())
        .filter(|n| n.contains("/cryptoKeys/p11-"))
        .map(str::to_string)
        .collect()
}

/// The real key's `CKA_ID`, as anyone who sees the ring reads it.
fn real_id(p: &mut P11, s: SessionId) -> Vec<u8> {
    let found = p.find_labelled(s, CKO_SECRET_KEY, REAL);
    assert_eq!(found.len(), 1, "the real key is found by its label");
    p.bytes(s, found[0], CKA_ID)
}

/// The attack through the module: the squatter generates a key with the real key's
/// label and CKA_ID; an encrypter finding the key by label must get the real one.
#[test]
fn squatter_cannot_take_the_real_keys_label_and_id() {
    let _excl = exclusive();
    let (env, squatter, enc) = world();
    let dir = env.dir();
    let settings = Settings::new(&env.client_socket, &dir.join("module.toml"))
        .credentials(&dir.join("squatter.key"), &squatter);
    let p11 = cryptoki(&settings);
    let slot = ring_slot(&p11, RING);
    let s = p11.open_rw_session(slot).unwrap();
    s.login(cryptoki::session::UserType::User, None).unwrap();
    let real = s
        .find_objects(&[CkAttr::Label(REAL.as_bytes().to_vec())])
        .unwrap();
    assert_eq!(real.len(), 1);
    let id = match &s.get_attributes(real[0], &[AttributeType::Id]).unwrap()[0] {
        CkAttr::Id(id) => id.clone(),
        other => panic!("{other:?}"),
    };
    let template = |label: Option<&str>, id: Option<&[u8]>| {
        let mut t = vec![
            CkAttr::Token(true),
            CkAttr::Class(ObjectClass::SECRET_KEY),
            CkAttr::KeyType(KeyType::AES),
            CkAttr::ValueLen(32.into()),
            CkAttr::Encrypt(true),
            CkAttr::Decrypt(true),
        ];
        if let Some(l) = label {
            t.push(CkAttr::Label(l.as_bytes().to_vec()));
        }
        if let Some(i) = id {
            t.push(CkAttr::Id(i.to_vec()));
        }
        t
    };
    for (what, t) in [
        ("label and CKA_ID", template(Some(REAL), Some(&id))),
        ("label", template(Some(REAL), Some(b"other"))),
        ("CKA_ID", template(Some("innocent"), Some(&id))),
    ] {
        match s.generate_key(&CkMechanism::AesKeyGen, &t) {
            Err(cryptoki::error::Error::Pkcs11(rv, _)) => assert_eq!(
                rv,
                RvError::AttributeValueInvalid,
                "a squatter's key with the real key's {what}"
            ),
            other => panic!("a squatter's key with the real key's {what} was made: {other:?}"),
        }
    }
    drop(s);
    drop(p11);
    // The encrypter finds exactly the real key, by label and by CKA_ID.
    let (mut p, _, es) = session(&env, &enc);
    let by_label = p.find_labelled(es, CKO_SECRET_KEY, REAL);
    assert_eq!(by_label.len(), 1, "only the real key carries its label");
    assert_eq!(p.bytes(es, by_label[0], CKA_ID), id);
    let by_id = p.find(es, vec![bytes(CKA_ID, &id)]);
    assert_eq!(by_id, by_label, "only the real key carries its CKA_ID");
    // The refusals are audited.
    let out = env.ctl(&[
        "--json",
        "audit",
        "query",
        "--principal",
        CREATOR,
        "--action",
        "C_GenerateKey",
        "--result",
        "denied",
    ]);
    out.ok();
    assert_eq!(out.json_lines().len(), 3, "{out:#?}");
}

/// Every path that names a key refuses a taken label or CKA_ID, keeps the pairing rule,
/// and lets a key keep its own names.
#[test]
fn every_path_refuses_a_taken_label_or_id() {
    let (env, squatter, _) = world();
    env.ctl(&[
        "keyring",
        "update",
        RING,
        "--allow-plaintext-import",
        "true",
    ])
    .ok();
    let (mut p, _, s) = session(&env, &squatter);
    let real = real_id(&mut p, s);
    let first = aes(&mut p, s, Some(b"app"), Some(&[1, 2, 3])).expect("a free label and id");
    // C_GenerateKey.
    assert_eq!(
        aes(&mut p, s, Some(b"app"), Some(&[4])),
        Err(CKR_ATTRIBUTE_VALUE_INVALID)
    );
    assert_eq!(
        aes(&mut p, s, Some(b"x"), Some(&[1, 2, 3])),
        Err(CKR_ATTRIBUTE_VALUE_INVALID)
    );
    assert_eq!(
        aes(&mut p, s, None, Some(&real)),
        Err(CKR_ATTRIBUTE_VALUE_INVALID)
    );
    // C_GenerateKeyPair: the two halves share theirs; another key may not.
    let (pub_, priv_) = ec_pair(&mut p, s, b"pair", &[7]).expect("a pair sharing label and id");
    assert_eq!(
        ec_pair(&mut p, s, b"pair", &[8]),
        Err(CKR_ATTRIBUTE_VALUE_INVALID)
    );
    assert_eq!(
        ec_pair(&mut p, s, b"app", &[8]),
        Err(CKR_ATTRIBUTE_VALUE_INVALID)
    );
    assert_eq!(
        ec_pair(&mut p, s, b"pair2", &[1, 2, 3]),
        Err(CKR_ATTRIBUTE_VALUE_INVALID)
    );
    // C_CreateObject (plaintext import).
    assert_eq!(
        import_plain(&mut p, s, b"app", &[9]).map(|_| ()),
        Err(CKR_ATTRIBUTE_VALUE_INVALID)
    );
    assert_eq!(
        import_plain(&mut p, s, REAL.as_bytes(), &[9]).map(|_| ()),
        Err(CKR_ATTRIBUTE_VALUE_INVALID)
    );
    import_plain(&mut p, s, b"plain", &[9]).expect("a free label and id");
    // C_SetAttributeValue: another key's names are refused, a key's own are fine.
    let second = aes(&mut p, s, Some(b"second"), Some(&[5])).unwrap();
    for t in [
        vec![bytes(CKA_LABEL, b"app")],
        vec![bytes(CKA_ID, &[1, 2, 3])],
        vec![bytes(CKA_ID, &real)],
        vec![bytes(CKA_LABEL, b"pair")],
        vec![bytes(CKA_ID, &[7])],
    ] {
        assert_eq!(
            set(&mut p, s, second, t.clone()).map(|_| ()),
            Err(CKR_ATTRIBUTE_VALUE_INVALID),
            "{t:?}"
        );
    }
    set(
        &mut p,
        s,
        second,
        vec![bytes(CKA_LABEL, b"second"), bytes(CKA_ID, &[5])],
    )
    .expect("a key's own names");
    set(&mut p, s, first, vec![bytes(CKA_ID, &[6])]).expect("a free CKA_ID");
    assert_eq!(
        set(&mut p, s, second, vec![bytes(CKA_ID, &[1, 2, 3])]).map(|_| ()),
        Ok(()),
        "a CKA_ID its key gave up is free"
    );
    // NSS renames the halves of one pair one at a time.
    set(&mut p, s, priv_, vec![bytes(CKA_ID, &[0x77])]).expect("private half");
    set(&mut p, s, pub_, vec![bytes(CKA_ID, &[0x77])]).expect("public half joins it");
    // keywardctl key create: a key id that is another key's label.
    let out = env.ctl(&[
        "key",
        "create",
        "--keyring",
        RING,
        "--purpose",
        "ENCRYPT_DECRYPT",
        "--algorithm",
        "AES_256_GCM",
        "app",
    ]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("CKA_LABEL"), "{out:#?}");
    // BYOK into a new key whose id is another key's label.
    let job_pem = crate::common::byok::create_job(&env, RING, "j1", "rsa-oaep-3072-sha1-aes-256");
    let m = crate::common::byok::aes_material(env.dir(), "m");
    let wrapped = crate::common::byok::openssl_wrap(env.dir(), &job_pem, &m.wrapped_input, "m");
    let import = |key: &str| {
        env.ctl(&[
            "key",
            "import",
            "--import-job",
            "j1",
            "--key",
            &format!("{RING}/cryptoKeys/{key}"),
            "--wrapped-key-file",
            wrapped.to_str().unwrap(),
            "--algorithm",
            "AES_256_GCM",
        ])
    };
    let out = import("plain");
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("CKA_LABEL"), "{out:#?}");
    import("fresh").ok();
    // The same through C_UnwrapKey: CKA_LABEL "plain" names no key (so it would make one
    // with that id) but is another key's label.
    env.bind(RING, "roles/kms.importer", CREATOR);
    let (mut p, _, s) = session(&env, &squatter);
    let job = p.find_labelled(s, CKO_PRIVATE_KEY, "import-job-j1");
    assert_eq!(job.len(), 1, "the job's key");
    let job_id = p.bytes(s, job[0], CKA_ID);
    assert_eq!(
        aes(&mut p, s, None, Some(&job_id)),
        Err(CKR_ATTRIBUTE_VALUE_INVALID),
        "an import job's CKA_ID is taken too"
    );
    let blob = std::fs::read(&wrapped).unwrap();
    let unwrap = |p: &mut P11, label: &[u8]| {
        p.call(R::UnwrapKey {
            session: s,
            mechanism: keyward_wire::pkcs11::Mechanism {
                ty: 0x1054, // CKM_RSA_AES_KEY_WRAP
                params: keyward_wire::pkcs11::MechParams::RsaAesKeyWrap(
                    keyward_wire::pkcs11::RsaAesKeyWrapParams {
                        aes_key_bits: 256,
                        oaep: keyward_wire::pkcs11::OaepParams {
                            hash: 0x220, // CKM_SHA_1
                            mgf: 1,      // CKG_MGF1_SHA1
                            source: 0,
                            source_data: Blob::new(Vec::new()),
                        },
                    },
                ),
            },
            unwrapping_key: job[0],
            wrapped: Blob::new(blob.clone()),
            template: vec![
                ulong(CKA_CLASS, CKO_SECRET_KEY),
                ulong(CKA_KEY_TYPE, CKK_AES),
                flag(CKA_TOKEN, true),
                bytes(CKA_LABEL, label),
            ],
        })
        .map(|_| ())
    };
    assert_eq!(unwrap(&mut p, b"plain"), Err(CKR_ATTRIBUTE_VALUE_INVALID));
    assert_eq!(unwrap(&mut p, b"fresh2"), Ok(()));
}

/// keywardctl key ids, `id@vN` and `import-job-*` labels are reserved, generated key ids too.
#[test]
fn reserved_labels_are_refused() {
    let (env, squatter, _) = world();
    let (mut p, _, s) = session(&env, &squatter);
    aes(&mut p, s, Some(b"mine"), None).unwrap();
    let generated = generated_keys(&env)
        .pop()
        .expect("the generated key")
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    for label in [
        REAL.to_string(),
        format!("{REAL}@v2"),
        "anything@v7".to_string(),
        "import-job-j1".to_string(),
        generated.clone(),
        format!("{generated}@v1"),
    ] {
        assert_eq!(
            aes(&mut p, s, Some(label.as_bytes()), None),
            Err(CKR_ATTRIBUTE_VALUE_INVALID),
            "{label}"
        );
    }
    // Near misses are ordinary labels.
    for label in ["web-key-2", "v2", "@v", "a@vx", "import-jo"] {
        aes(&mut p, s, Some(label.as_bytes()), None)
            .unwrap_or_else(|rv| panic!("{label}: {rv:#x}"));
    }
}

/// NSS, Java and pkcs11-tool without --label make keys with no or empty CKA_LABEL/CKA_ID:
/// any number of them.
#[test]
fn empty_labels_and_ids_are_exempt() {
    let (env, squatter, _) = world();
    let (mut p, _, s) = session(&env, &squatter);
    for _ in 0..2 {
        aes(&mut p, s, None, None).expect("no label, no id");
        aes(&mut p, s, Some(b""), Some(b"")).expect("empty label and id");
        ec_pair(&mut p, s, b"", b"").expect("a pair with empty names");
    }
    // NSS sets CKA_ID after generating: the first to set one gets it.
    let (pub_, priv_) = ec_pair(&mut p, s, b"", b"").unwrap();
    set(&mut p, s, priv_, vec![bytes(CKA_ID, &[0x55; 20])]).unwrap();
    set(&mut p, s, pub_, vec![bytes(CKA_ID, &[0x55; 20])]).unwrap();
    let other = aes(&mut p, s, None, None).unwrap();
    assert_eq!(
        set(&mut p, s, other, vec![bytes(CKA_ID, &[0x55; 20])]).map(|_| ()),
        Err(CKR_ATTRIBUTE_VALUE_INVALID)
    );
}

/// Finds return objects in creation order, whatever the keys' names.
#[test]
fn finds_return_objects_in_creation_order() {
    let (env, squatter, _) = world();
    let (mut p, _, s) = session(&env, &squatter);
    // Generated key ids are p11-<random hex>: their order by name is random; REAL
    // ("web-key") sorts after every one of them.
    let mut made = Vec::new();
    for i in 0..6u8 {
        aes(
            &mut p,
            s,
            Some(format!("k{i}").as_bytes()),
            Some(&[0xA0, i]),
        )
        .unwrap();
        made.push(vec![0xA0, i]);
    }
    env.create_key(RING, "aaa-last", "ENCRYPT_DECRYPT", "AES_256_GCM");
    let all = p.find(s, vec![ulong(CKA_CLASS, CKO_SECRET_KEY)]);
    let ids: Vec<Vec<u8>> = all.iter().map(|o| p.bytes(s, *o, CKA_ID)).collect();
    assert_eq!(ids.len(), 8, "{ids:?}");
    let real = real_id(&mut p, s);
    let mut want = vec![real];
    want.extend(made);
    assert_eq!(
        ids[..7],
        want[..],
        "creation order: the real key, then k0..k5"
    );
    let labels: Vec<Vec<u8>> = all.iter().map(|o| p.bytes(s, *o, CKA_LABEL)).collect();
    assert_eq!(labels[7], b"aaa-last".to_vec(), "the newest key comes last");
}

/// A scheduled destruction frees the label and CKA_ID at once; restoring that version while
/// another key holds them is refused.
#[test]
fn destruction_frees_names_and_restore_checks_them() {
    let (env, squatter, _) = world();
    env.bind(RING, "roles/kms.admin", CREATOR);
    let (mut p, _, s) = session(&env, &squatter);
    let old = aes(&mut p, s, Some(b"rotating"), Some(&[0x31])).unwrap();
    let old_name = generated_keys(&env).pop().expect("the generated key");
    p.call(R::DestroyObject {
        session: s,
        object: old,
    })
    .expect("schedule the destruction");
    aes(&mut p, s, Some(b"rotating"), Some(&[0x31])).expect("the names are free at once");
    let out = env.ctl(&[
        "version",
        "restore",
        &format!("{old_name}/cryptoKeyVersions/1"),
    ]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stderr.contains("CKA_LABEL") || out.stderr.contains("CKA_ID"),
        "{out:#?}"
    );
}

/// Two creates with one label at the same time: exactly one key gets it.
#[test]
fn concurrent_creates_make_one_key() {
    let (env, squatter, _) = world();
    for round in 0..4u8 {
        let label = format!("race-{round}");
        let results: Vec<Result<ObjectHandle, u64>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    let (env, squatter, label) = (&env, &squatter, &label);
                    scope.spawn(move || {
                        let (mut p, _, s) = session(env, squatter);
                        aes(&mut p, s, Some(label.as_bytes()), None)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 1, "round {round}: {results:?}");
        assert!(
            results.contains(&Err(CKR_ATTRIBUTE_VALUE_INVALID)),
            "{results:?}"
        );
    }
}

/// Duplicates made before the rule existed are reported when keywardd starts, and stay
/// usable.
#[test]
fn existing_duplicates_are_reported_at_start() {
    let (mut env, squatter, _) = world();
    let (mut p, _, s) = session(&env, &squatter);
    aes(&mut p, s, Some(b"dup-a"), Some(&[0xD1])).unwrap();
    aes(&mut p, s, Some(b"dup-b"), Some(&[0xD2])).unwrap();
    drop(p);
    env.signal_and_wait("TERM");
    // What an older keywardd allowed: the second key takes the first's names.
    {
        let conn = rusqlite::Connection::open(&env.db).unwrap();
        let n = conn
            .execute(
                "UPDATE generic_keys SET cka_label = X'6475702d61', cka_id = X'D1' \
                 WHERE cka_label = X'6475702d62'",
                [],
            )
            .unwrap();
        assert_eq!(n, 1);
    }
    env.start();
    let log = env.daemon_log();
    assert!(
        log.lines()
            .any(|l| l.contains("duplicate") && l.contains(RING) && l.contains("CKA_LABEL")),
        "{log}"
    );
    let (mut p, _, s) = session(&env, &squatter);
    assert_eq!(p.find(s, vec![bytes(CKA_LABEL, b"dup-a")]).len(), 2);
}
