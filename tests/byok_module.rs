//! BYOK through the built `libkeyward_pkcs11.so` (issue 7, design §4's `C_UnwrapKey` row and
//! §5): the import job's private key object `import-job-<id>`, `C_UnwrapKey` with
//! `CKM_RSA_AES_KEY_WRAP` of blobs wrapped by the openssl CLI into an existing key (a new
//! version; the primary stays) and into new keys named by `CKA_LABEL`; what the imported keys
//! encrypt and sign through the module OpenSSL decrypts and verifies with the original
//! material. Denials as the table says (`CKR_UNWRAPPING_KEY_HANDLE_INVALID` without
//! useToImport or for an expired job, `CKR_TOKEN_WRITE_PROTECTED` without create), a tampered
//! blob (`CKR_WRAPPED_KEY_INVALID`), all audited, nothing half-imported visible.

mod common;

use common::byok::{
    aes_material, asym_material, create_job, openssl, openssl_gcm_body, openssl_wrap, s as p,
};
use common::daemon::Env;
use common::module::{self, Mech, Settings, Ulong, CKR_OK};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;

const RING: &str = "projects/payments/keyRings/web";
const T0: i64 = 1_800_000_000;

const CKA_TOKEN: Ulong = 0x1;
const CKA_LABEL: Ulong = 0x3;
const CKA_KEY_TYPE: Ulong = 0x100;
const CKA_SIGN: Ulong = 0x108;
const CKA_PUBLIC_KEY_INFO: Ulong = 0x129;
const CKO_SECRET_KEY: Ulong = 4;
const CKO_PRIVATE_KEY: Ulong = 3;
const CKK_RSA: Ulong = 0;
const CKK_EC: Ulong = 3;
const CKK_AES: Ulong = 0x1F;
const CKM_SHA_1: Ulong = 0x220;
const CKM_SHA256: Ulong = 0x250;
const CKG_MGF1_SHA1: Ulong = 1;
const CKR_MECHANISM_PARAM_INVALID: Ulong = 0x71;
const CKR_UNWRAPPING_KEY_HANDLE_INVALID: Ulong = 0xF0;
const CKR_TOKEN_WRITE_PROTECTED: Ulong = 0xE2;
const CKR_WRAPPED_KEY_INVALID: Ulong = 0x110;
const CKR_TEMPLATE_INCOMPLETE: Ulong = 0xD0;
const CKR_TEMPLATE_INCONSISTENT: Ulong = 0xD1;

fn key(id: &str) -> String {
    format!("{RING}/cryptoKeys/{id}")
}

fn ul(v: Ulong) -> Vec<u8> {
    module::ulong_bytes(v)
}

fn rsa_aes() -> Mech {
    Mech::RsaAesKeyWrap {
        aes_bits: 256,
        hash: CKM_SHA_1,
        mgf: CKG_MGF1_SHA1,
    }
}

fn secret_template(label: &str) -> Vec<(Ulong, Vec<u8>)> {
    vec![
        (0, ul(CKO_SECRET_KEY)),
        (CKA_KEY_TYPE, ul(CKK_AES)),
        (CKA_TOKEN, vec![1]),
        (CKA_LABEL, label.as_bytes().to_vec()),
    ]
}

fn private_template(label: &str, key_type: Ulong, spki: &[u8]) -> Vec<(Ulong, Vec<u8>)> {
    vec![
        (0, ul(CKO_PRIVATE_KEY)),
        (CKA_KEY_TYPE, ul(key_type)),
        (CKA_TOKEN, vec![1]),
        (CKA_SIGN, vec![1]),
        (CKA_LABEL, label.as_bytes().to_vec()),
        (CKA_PUBLIC_KEY_INFO, spki.to_vec()),
    ]
}

fn label_of(s: &Session, h: ObjectHandle) -> String {
    match s.get_attributes(h, &[AttributeType::Label]).unwrap().pop() {
        Some(Attribute::Label(v)) => String::from_utf8(v).unwrap(),
        other => panic!("{other:?}"),
    }
}

fn job_key(s: &Session, id: &str) -> Vec<ObjectHandle> {
    s.find_objects(&[
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::Label(format!("import-job-{id}").into_bytes()),
    ])
    .unwrap()
}

/// The DER SPKI of a PEM public key file.
fn spki_der(pem: &std::path::Path) -> Vec<u8> {
    openssl(&["pkey", "-pubin", "-in", p(pem), "-outform", "DER"])
}

/// DER `ECDSA-Sig-Value` from a raw `r || s`.
fn ecdsa_der(raw: &[u8]) -> Vec<u8> {
    let int = |x: &[u8]| {
        let mut v: Vec<u8> = x.iter().skip_while(|b| **b == 0).copied().collect();
        if v.first().is_none_or(|b| *b & 0x80 != 0) {
            v.insert(0, 0);
        }
        let mut out = vec![0x02, v.len() as u8];
        out.extend(v);
        out
    };
    let (r, s) = raw.split_at(raw.len() / 2);
    let body: Vec<u8> = [int(r), int(s)].concat();
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

fn verify_with_openssl(env: &Env, public: &std::path::Path, data: &[u8], sig: &[u8], name: &str) {
    let d = env.dir().join(format!("{name}.data"));
    let g = env.dir().join(format!("{name}.sig"));
    std::fs::write(&d, data).unwrap();
    std::fs::write(&g, sig).unwrap();
    let out = openssl(&[
        "dgst",
        "-sha256",
        "-verify",
        p(public),
        "-signature",
        p(&g),
        p(&d),
    ]);
    assert!(String::from_utf8_lossy(&out).contains("Verified OK"));
}

/// Audit records of `action` (as the admin), waiting for the writer's batch.
fn audit_until(
    env: &Env,
    action: &str,
    pred: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let recs = env
            .ctl(&["--json", "audit", "query", "--action", action])
            .json_lines();
        if pred(&recs) {
            return recs;
        }
        assert!(std::time::Instant::now() < deadline, "{recs:#?}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn c_unwrapkey_imports_with_an_import_job_through_the_module() {
    let excl = module::exclusive();
    let mut env = Env::new();
    let owner = env.service_account_offline("owner");
    let importer = env.service_account_offline("importer");
    let viewer = env.service_account_offline("viewer");
    env.set_clock(T0);
    env.start();
    env.web_ring();
    // owner: imports into new keys (importer + admin's cryptoKeys.create) and uses them.
    for role in [
        "roles/kms.importer",
        "roles/kms.admin",
        "roles/kms.cryptoOperator",
    ] {
        env.bind(RING, role, "serviceAccount:owner@payments");
    }
    env.bind(
        RING,
        "roles/kms.importer",
        "serviceAccount:importer@payments",
    );
    env.bind(RING, "roles/kms.viewer", "serviceAccount:viewer@payments");
    let job_pem = create_job(&env, RING, "j1", "rsa-oaep-3072-sha1-aes-256");
    env.create_key(RING, "aes", "ENCRYPT_DECRYPT", "AES_256_GCM");
    let dir = env.dir().to_path_buf();

    let settings = Settings::new(&env.client_socket, &dir.join("module.toml"));
    let p11 = module::cryptoki(&settings);
    let slot = module::ring_slot(&p11, RING);
    let s = p11.open_rw_session(slot).unwrap();
    let raw = excl.raw();
    let (rv, rs) = raw.open_session(slot.id() as Ulong);
    assert_eq!(rv, CKR_OK);

    // Before login the job's private key is not visible; as owner it is, with its SPKI.
    assert!(job_key(&s, "j1").is_empty());
    s.login(UserType::User, Some(&AuthPin::from(owner.clone())))
        .unwrap();
    let job = job_key(&s, "j1");
    assert_eq!(job.len(), 1, "one import-job-j1 object");
    let job = job[0];
    let attrs = s
        .get_attributes(
            job,
            &[
                AttributeType::Unwrap,
                AttributeType::Decrypt,
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::PublicKeyInfo,
            ],
        )
        .unwrap();
    let mut spki = Vec::new();
    for a in attrs {
        match a {
            Attribute::Unwrap(b) | Attribute::Sensitive(b) => assert!(b),
            Attribute::Decrypt(b) | Attribute::Extractable(b) => assert!(!b),
            Attribute::PublicKeyInfo(v) => spki = v,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        spki,
        spki_der(&job_pem),
        "the object's SPKI is the job's public key"
    );
    let (rv, _, _) = raw.attribute(rs, job.handle() as Ulong, 0x11, None);
    assert_eq!(
        rv, 0x11,
        "CKA_VALUE of the job's key is CKR_ATTRIBUTE_SENSITIVE"
    );

    // The job's key only unwraps: decrypting or signing with it is not permitted, and it
    // cannot be destroyed or copied through the module.
    assert_eq!(
        raw.decrypt_init(rs, &Mech::Plain(0x1), job.handle() as Ulong),
        0x68,
        "CKR_KEY_FUNCTION_NOT_PERMITTED"
    );
    assert_eq!(raw.destroy_object(rs, job.handle() as Ulong), 0x1B);
    assert_eq!(raw.copy_object(rs, job.handle() as Ulong).0, 0x1B);

    // AES-256 into the existing key "aes": a new version, not primary (label aes@v2).
    let aes = aes_material(&dir, "aes");
    let blob = openssl_wrap(&dir, &job_pem, &aes.wrapped_input, "aes");
    let blob = std::fs::read(blob).unwrap();
    let (rv, h) = raw.unwrap_key(
        rs,
        &rsa_aes(),
        job.handle() as Ulong,
        &blob,
        &secret_template("aes"),
    );
    assert_eq!(rv, CKR_OK, "C_UnwrapKey into the existing key");
    let found = s
        .find_objects(&[Attribute::Label(b"aes@v2".to_vec())])
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].handle() as Ulong,
        h,
        "the returned handle is the new version"
    );
    assert_eq!(label_of(&s, found[0]), "aes@v2");
    // Imported, not generated: CKA_LOCAL, CKA_ALWAYS_SENSITIVE, CKA_NEVER_EXTRACTABLE FALSE;
    // sensitive and not extractable from now on.
    for a in s
        .get_attributes(
            found[0],
            &[
                AttributeType::Local,
                AttributeType::AlwaysSensitive,
                AttributeType::NeverExtractable,
                AttributeType::Sensitive,
                AttributeType::Extractable,
            ],
        )
        .unwrap()
    {
        match a {
            Attribute::Local(b)
            | Attribute::AlwaysSensitive(b)
            | Attribute::NeverExtractable(b) => {
                assert!(!b, "{a:?}")
            }
            Attribute::Sensitive(b) => assert!(b),
            Attribute::Extractable(b) => assert!(!b),
            other => panic!("{other:?}"),
        }
    }
    let k = env.ctl(&["--json", "key", "get", &key("aes")]).json();
    assert_eq!(
        k["primaryVersion"], 1,
        "an import never changes the primary"
    );
    // It encrypts (AES-GCM through the module) what OpenSSL decrypts with the material.
    let iv = [7u8; 12];
    let plain = b"imported through C_UnwrapKey, checked by OpenSSL".to_vec();
    let ct = s
        .encrypt(
            &Mechanism::AesGcm(
                cryptoki::mechanism::aead::GcmParams::new(&mut iv.clone(), &[], 128.into())
                    .unwrap(),
            ),
            found[0],
            &plain,
        )
        .unwrap();
    assert_eq!(
        openssl_gcm_body(&dir, &aes.original, &iv, &ct[..ct.len() - 16]),
        plain
    );

    // EC P-256 into a new key named by CKA_LABEL (its SPKI in CKA_PUBLIC_KEY_INFO).
    let ec = asym_material(
        &dir,
        "ec",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let ec_pub = ec.public.clone().unwrap();
    let blob = std::fs::read(openssl_wrap(&dir, &job_pem, &ec.wrapped_input, "ec")).unwrap();
    let (rv, h) = raw.unwrap_key(
        rs,
        &rsa_aes(),
        job.handle() as Ulong,
        &blob,
        &private_template("ec-m", CKK_EC, &spki_der(&ec_pub)),
    );
    assert_eq!(rv, CKR_OK, "C_UnwrapKey of an EC key into a new key");
    let ec_h = s
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(b"ec-m".to_vec()),
        ])
        .unwrap();
    assert_eq!(ec_h.len(), 1);
    assert_eq!(ec_h[0].handle() as Ulong, h);
    let data = b"signed through the module".to_vec();
    let sig = s.sign(&Mechanism::EcdsaSha256, ec_h[0], &data).unwrap();
    verify_with_openssl(&env, &ec_pub, &data, &ecdsa_der(&sig), "ec-m");
    // Its public half is there too, with the original public key.
    let pubs = s
        .find_objects(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Label(b"ec-m".to_vec()),
        ])
        .unwrap();
    assert_eq!(pubs.len(), 1);

    // RSA-3072 into a new key.
    let rsa = asym_material(
        &dir,
        "rsa",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072"],
    );
    let rsa_pub = rsa.public.clone().unwrap();
    let blob = std::fs::read(openssl_wrap(&dir, &job_pem, &rsa.wrapped_input, "rsa")).unwrap();
    let (rv, _) = raw.unwrap_key(
        rs,
        &rsa_aes(),
        job.handle() as Ulong,
        &blob,
        &private_template("rsa-m", CKK_RSA, &spki_der(&rsa_pub)),
    );
    assert_eq!(rv, CKR_OK, "C_UnwrapKey of an RSA key into a new key");
    let rsa_h = s
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(b"rsa-m".to_vec()),
        ])
        .unwrap();
    let sig = s.sign(&Mechanism::Sha256RsaPkcs, rsa_h[0], &data).unwrap();
    verify_with_openssl(&env, &rsa_pub, &data, &sig, "rsa-m");

    // RSA-2048 for decryption (CKA_DECRYPT, no CKA_SIGN: RSA_DECRYPT_OAEP_2048_SHA1): the
    // pair check is an OAEP round trip; then it decrypts what OpenSSL encrypted to the
    // original public key.
    let dec = asym_material(
        &dir,
        "dec",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let dec_pub = dec.public.clone().unwrap();
    let blob = std::fs::read(openssl_wrap(&dir, &job_pem, &dec.wrapped_input, "dec")).unwrap();
    let template = vec![
        (0, ul(CKO_PRIVATE_KEY)),
        (CKA_KEY_TYPE, ul(CKK_RSA)),
        (CKA_TOKEN, vec![1]),
        (0x105, vec![1]), // CKA_DECRYPT
        (CKA_LABEL, b"dec-m".to_vec()),
        (CKA_PUBLIC_KEY_INFO, spki_der(&dec_pub)),
    ];
    let (rv, _) = raw.unwrap_key(rs, &rsa_aes(), job.handle() as Ulong, &blob, &template);
    assert_eq!(rv, CKR_OK, "C_UnwrapKey of an RSA decryption key");
    let k = env.ctl(&["--json", "key", "get", &key("dec-m")]).json();
    assert_eq!(k["algorithm"], "RSA_DECRYPT_OAEP_2048_SHA1");
    let secret = dir.join("dec.secret");
    std::fs::write(&secret, b"for the imported decryption key").unwrap();
    let enc = dir.join("dec.enc");
    openssl(&[
        "pkeyutl",
        "-encrypt",
        "-pubin",
        "-inkey",
        p(&dec_pub),
        "-pkeyopt",
        "rsa_padding_mode:oaep",
        "-pkeyopt",
        "rsa_oaep_md:sha1",
        "-pkeyopt",
        "rsa_mgf1_md:sha1",
        "-in",
        p(&secret),
        "-out",
        p(&enc),
    ]);
    let dec_h = s
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(b"dec-m".to_vec()),
        ])
        .unwrap();
    let oaep = cryptoki::mechanism::rsa::PkcsOaepParams::new(
        cryptoki::mechanism::MechanismType::SHA1,
        cryptoki::mechanism::rsa::PkcsMgfType::MGF1_SHA1,
        cryptoki::mechanism::rsa::PkcsOaepSource::empty(),
    );
    let back = s
        .decrypt(
            &Mechanism::RsaPkcsOaep(oaep),
            dec_h[0],
            &std::fs::read(&enc).unwrap(),
        )
        .unwrap();
    assert_eq!(back, std::fs::read(&secret).unwrap());

    // wrap-for-import's output goes the same way.
    let aes2 = aes_material(&dir, "aes2");
    let w = dir.join("aes2.kw");
    env.ctl(&[
        "key",
        "wrap-for-import",
        "--import-job",
        &format!("{RING}/importJobs/j1"),
        "--key-material-file",
        p(&aes2.wrapped_input),
        "--out",
        p(&w),
    ])
    .ok();
    let (rv, _) = raw.unwrap_key(
        rs,
        &rsa_aes(),
        job.handle() as Ulong,
        &std::fs::read(&w).unwrap(),
        &secret_template("aes-w"),
    );
    assert_eq!(rv, CKR_OK);
    let aw = s
        .find_objects(&[Attribute::Label(b"aes-w".to_vec())])
        .unwrap();
    assert_eq!(aw.len(), 1);
    let ct = s
        .encrypt(
            &Mechanism::AesGcm(
                cryptoki::mechanism::aead::GcmParams::new(&mut iv.clone(), &[], 128.into())
                    .unwrap(),
            ),
            aw[0],
            &plain,
        )
        .unwrap();
    assert_eq!(
        openssl_gcm_body(&dir, &aes2.original, &iv, &ct[..ct.len() - 16]),
        plain
    );

    // Refusals. Wrong mechanism parameters (an AES-128 ephemeral key; SHA-256 OAEP).
    let aes_blob = std::fs::read(dir.join("aes.wrapped")).unwrap();
    for m in [
        Mech::RsaAesKeyWrap {
            aes_bits: 128,
            hash: CKM_SHA_1,
            mgf: CKG_MGF1_SHA1,
        },
        Mech::RsaAesKeyWrap {
            aes_bits: 256,
            hash: CKM_SHA256,
            mgf: 2,
        },
    ] {
        let (rv, _) = raw.unwrap_key(
            rs,
            &m,
            job.handle() as Ulong,
            &aes_blob,
            &secret_template("aes"),
        );
        assert_eq!(rv, CKR_MECHANISM_PARAM_INVALID);
    }
    // No label: incomplete.
    let mut no_label = secret_template("aes");
    no_label.retain(|(t, _)| *t != CKA_LABEL);
    let (rv, _) = raw.unwrap_key(rs, &rsa_aes(), job.handle() as Ulong, &aes_blob, &no_label);
    assert_eq!(rv, CKR_TEMPLATE_INCOMPLETE);
    // Wrong algorithm: an EC template for the AES key "aes"; EC material into it as AES.
    let ec_blob = std::fs::read(dir.join("ec.wrapped")).unwrap();
    let (rv, _) = raw.unwrap_key(
        rs,
        &rsa_aes(),
        job.handle() as Ulong,
        &ec_blob,
        &private_template("aes", CKK_EC, &spki_der(&ec_pub)),
    );
    assert_eq!(
        rv, CKR_TEMPLATE_INCONSISTENT,
        "the template does not fit AES_256_GCM"
    );
    let (rv, _) = raw.unwrap_key(
        rs,
        &rsa_aes(),
        job.handle() as Ulong,
        &ec_blob,
        &secret_template("aes"),
    );
    assert_eq!(
        rv, CKR_TEMPLATE_INCONSISTENT,
        "138 bytes of PKCS#8 are no AES-256 key"
    );
    // A tampered blob: CKR_WRAPPED_KEY_INVALID, and no new object visible.
    let before = s.find_objects(&[]).unwrap().len();
    let mut bad = aes_blob.clone();
    let n = bad.len();
    bad[n - 2] ^= 0x10;
    let (rv, _) = raw.unwrap_key(
        rs,
        &rsa_aes(),
        job.handle() as Ulong,
        &bad,
        &secret_template("aes"),
    );
    assert_eq!(rv, CKR_WRAPPED_KEY_INVALID);
    let (rv, _) = raw.unwrap_key(
        rs,
        &rsa_aes(),
        job.handle() as Ulong,
        &bad,
        &secret_template("aes-bad"),
    );
    assert_eq!(rv, CKR_WRAPPED_KEY_INVALID);
    assert_eq!(
        s.find_objects(&[]).unwrap().len(),
        before,
        "nothing half-imported is visible"
    );
    let states: Vec<String> = env.ctl(&["--json", "key", "get", &key("aes")]).json()["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        states,
        ["ENABLED", "ENABLED", "IMPORT_FAILED", "IMPORT_FAILED"]
    );

    // The importer alone: a new version of an existing key, but no new key.
    s.logout().unwrap();
    s.login(UserType::User, Some(&AuthPin::from(importer.clone())))
        .unwrap();
    let job_i = job_key(&s, "j1")[0];
    let (rv, _) = raw.unwrap_key(
        rs,
        &rsa_aes(),
        job_i.handle() as Ulong,
        &aes_blob,
        &secret_template("aes"),
    );
    assert_eq!(rv, CKR_OK, "roles/kms.importer alone adds a version");
    let (rv, _) = raw.unwrap_key(
        rs,
        &rsa_aes(),
        job_i.handle() as Ulong,
        &aes_blob,
        &secret_template("brand-new"),
    );
    assert_eq!(
        rv, CKR_TOKEN_WRITE_PROTECTED,
        "a new key also needs kms.cryptoKeys.create"
    );
    env.ctl(&["--json", "key", "get", &key("brand-new")])
        .failed();

    // The viewer sees the job's key (importJobs.get) but may not use it.
    s.logout().unwrap();
    s.login(UserType::User, Some(&AuthPin::from(viewer.clone())))
        .unwrap();
    let job_v = job_key(&s, "j1");
    assert_eq!(job_v.len(), 1);
    let (rv, _) = raw.unwrap_key(
        rs,
        &rsa_aes(),
        job_v[0].handle() as Ulong,
        &aes_blob,
        &secret_template("aes"),
    );
    assert_eq!(rv, CKR_UNWRAPPING_KEY_HANDLE_INVALID);

    // Expired: the object disappears; a handle kept from before is refused.
    env.set_clock(T0 + 3 * 86_400 + 60);
    s.logout().unwrap();
    s.login(UserType::User, Some(&AuthPin::from(owner.clone())))
        .unwrap();
    assert!(
        job_key(&s, "j1").is_empty(),
        "an EXPIRED job's key is not listed"
    );
    let (rv, _) = raw.unwrap_key(
        rs,
        &rsa_aes(),
        job.handle() as Ulong,
        &aes_blob,
        &secret_template("aes"),
    );
    assert_eq!(rv, CKR_UNWRAPPING_KEY_HANDLE_INVALID);

    // Audited: the imports, the failed unwraps, and the denials.
    let recs = audit_until(&env, "C_UnwrapKey", |r| {
        r.iter().filter(|x| x["result"] == "denied").count() >= 6
    });
    let count = |result: &str| recs.iter().filter(|r| r["result"] == result).count();
    assert_eq!(count("allowed"), 6, "{recs:#?}");
    assert_eq!(count("error"), 4, "{recs:#?}");
    assert!(recs
        .iter()
        .any(|r| r["detail"].as_str().is_some_and(|d| d.contains("EXPIRED"))));
    assert!(recs.iter().any(|r| r["rv"] == CKR_TOKEN_WRITE_PROTECTED));
    assert!(recs
        .iter()
        .any(|r| r["rv"] == CKR_UNWRAPPING_KEY_HANDLE_INVALID
            && r["principal"] == "serviceAccount:viewer@payments"));
    assert_eq!(raw.close_session(rs), CKR_OK);
}
