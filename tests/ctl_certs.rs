//! `keywardctl key cert` (issue 7 acceptance 3, first half): self-signed certificates and
//! PKCS#10 requests for EC P-256/P-384, RSA PKCS#1 and RSA-PSS keys, signed in the token
//! through keywardd and checked by `openssl verify` / `openssl req -verify`; the self-signed
//! certificate is attached to the key; a CA-issued certificate and its chain are attached with
//! `key cert import`, one of another key is refused; signing needs useToSign, attaching
//! kms.cryptoKeys.update. Pairs made through the PKCS#11 module (no algorithm name) sign by
//! their public key's algorithm through the module's gate, and their certificates take the
//! pair's CKA_ID and CKA_LABEL (the module is needed built: `cargo build -p keyward-pkcs11`).

mod common;

use common::daemon::Env;
use common::Output;
use common::{openssl_ca, openssl_issue, openssl_ok};
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
fn openssl(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl")
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `key cert create --key KEY --self-signed --subject SUBJECT [EXTRA] --out DIR/FILE` run by
/// `ctl`: it succeeds and attaches the certificate, `openssl verify` accepts it, and it
/// carries KEY's public key. Returns that public key (PEM, as `key get-public-key` prints it).
#[track_caller]
fn self_signed(
    ctl: &dyn Fn(&[&str]) -> Output,
    dir: &Path,
    key: &str,
    subject: &str,
    extra: &[&str],
    file: &str,
) -> String {
    let out_path = dir.join(file);
    let mut args = vec![
        "key",
        "cert",
        "create",
        "--key",
        key,
        "--self-signed",
        "--subject",
        subject,
    ];
    args.extend_from_slice(extra);
    args.extend(["--out", out_path.to_str().unwrap()]);
    let out = ctl(&args);
    out.ok();
    assert!(out.stderr.contains("attached certificate"), "{out:#?}");
    let v = openssl(&["verify", "-CAfile", file, file], dir);
    assert!(
        v.status.success() && text(&v).contains(": OK"),
        "{key}: {}",
        text(&v)
    );
    let pubkey = openssl(&["x509", "-in", file, "-noout", "-pubkey"], dir);
    let want = ctl(&["key", "get-public-key", key]);
    want.ok();
    assert_eq!(
        String::from_utf8_lossy(&pubkey.stdout).trim(),
        want.stdout.trim()
    );
    want.stdout
}

/// `key cert create --key KEY --csr --out DIR/FILE` run by `ctl`: it succeeds and `openssl
/// req -verify` accepts the request.
#[track_caller]
fn request(ctl: &dyn Fn(&[&str]) -> Output, dir: &Path, key: &str, file: &str) {
    let out_path = dir.join(file);
    let out = ctl(&[
        "key",
        "cert",
        "create",
        "--key",
        key,
        "--csr",
        "--out",
        out_path.to_str().unwrap(),
    ]);
    out.ok();
    let v = openssl(&["req", "-in", file, "-noout", "-verify"], dir);
    assert!(text(&v).contains("verify OK"), "{key}: {}", text(&v));
}

#[test]
fn self_signed_certificates_and_requests_verify_with_openssl() {
    let mut env = Env::new();
    let certs = env.service_account_offline("certs");
    let signer = env.service_account_offline("signer");
    env.start();
    env.web_ring();
    let keys = [
        ("ec", "EC_SIGN_P256_SHA256"),
        ("ec384", "EC_SIGN_P384_SHA384"),
        ("rsa", "RSA_SIGN_PKCS1_2048_SHA256"),
        ("pss", "RSA_SIGN_PSS_2048_SHA256"),
    ];
    for (id, alg) in keys {
        env.create_key(RING, id, "ASYMMETRIC_SIGN", alg);
    }
    env.create_key(RING, "aes", "ENCRYPT_DECRYPT", "AES_256_GCM");
    env.bind(RING, "roles/kms.signerVerifier", &sa("certs"));
    env.bind(RING, "roles/kms.admin", &sa("certs"));
    env.bind(&key("ec"), "roles/kms.signerVerifier", &sa("signer"));
    let dir = env.dir().to_path_buf();

    let as_certs = |args: &[&str]| env.ctl_client_with_key(&certs, args);
    for (id, _) in keys {
        let cert = format!("{id}.pem");
        let csr = format!("{id}.csr");
        // It certifies the key's own public key, with the subject asked for.
        let want = self_signed(
            &as_certs,
            &dir,
            &key(id),
            &format!("CN={id}.example,O=Keyward Test"),
            &["--days", "30"],
            &cert,
        );
        let subj = openssl(&["x509", "-in", &cert, "-noout", "-subject"], &dir);
        assert!(text(&subj).contains("CN = ec") || text(&subj).contains(&format!("CN = {id}")));
        assert!(text(&subj).contains("O = Keyward Test"), "{}", text(&subj));

        request(&as_certs, &dir, &key(id), &csr);
        let pubkey = openssl(&["req", "-in", &csr, "-noout", "-pubkey"], &dir);
        assert_eq!(String::from_utf8_lossy(&pubkey.stdout).trim(), want.trim());
        let subj = openssl(&["req", "-in", &csr, "-noout", "-subject"], &dir);
        assert!(
            text(&subj).contains(&format!("CN = {id}")),
            "{}",
            text(&subj)
        );
    }

    // The self-signed certificate is attached: listed, and `get` prints it as written.
    let list = env.ctl_client_with_key(
        &certs,
        &["--json", "key", "cert", "list", "--key", &key("ec")],
    );
    list.ok();
    let js = list.json();
    let arr = js.as_array().unwrap();
    assert_eq!(arr.len(), 1, "{js}");
    assert_eq!(arr[0]["label"], "ec");
    assert_eq!(arr[0]["version"], 1);
    let got = env.ctl_client_with_key(&certs, &["key", "cert", "get", "--key", &key("ec")]);
    got.ok();
    assert_eq!(
        got.stdout,
        std::fs::read_to_string(dir.join("ec.pem")).unwrap()
    );

    // A symmetric key has no certificate.
    let out = env.ctl_client_with_key(
        &certs,
        &["key", "cert", "create", "--key", &key("aes"), "--csr"],
    );
    out.failed();
    assert!(
        out.stderr.contains("ENCRYPT_DECRYPT") || out.stderr.contains("asymmetric"),
        "{out:#?}"
    );

    // signer (signerVerifier on ec, no cryptoKeys.update): a request yes, attaching no.
    let out = env.ctl_client_with_key(
        &signer,
        &["key", "cert", "create", "--key", &key("ec"), "--csr"],
    );
    out.ok();
    assert!(out
        .stdout
        .starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
    let out = env.ctl_client_with_key(
        &signer,
        &[
            "key",
            "cert",
            "create",
            "--key",
            &key("ec"),
            "--self-signed",
        ],
    );
    out.failed();
    assert!(out.stderr.contains("kms.cryptoKeys.update"), "{out:#?}");
    // ... and nothing on a key it may not sign with (no viewPublicKey either).
    let out = env.ctl_client_with_key(
        &signer,
        &["key", "cert", "create", "--key", &key("rsa"), "--csr"],
    );
    out.failed();
    // Offline there is no token to sign with.
    let out = env.offline(&["key", "cert", "create", "--key", &key("ec"), "--csr"]);
    out.usage_error();
    assert!(out.stderr.contains("keywardd"), "{out:#?}");
}

#[test]
fn ca_issued_certificates_and_chains_attach_to_their_key_only() {
    let mut env = Env::new();
    let certs = env.service_account_offline("certs");
    let viewer = env.service_account_offline("viewer");
    env.start();
    env.web_ring();
    env.create_key(RING, "ec", "ASYMMETRIC_SIGN", "EC_SIGN_P256_SHA256");
    env.create_key(RING, "other", "ASYMMETRIC_SIGN", "EC_SIGN_P256_SHA256");
    env.bind(RING, "roles/kms.signerVerifier", &sa("certs"));
    env.bind(RING, "roles/kms.admin", &sa("certs"));
    let dir = env.dir().to_path_buf();
    let pem = env.ctl_client_with_key(&certs, &["key", "get-public-key", &key("ec")]);
    pem.ok();
    std::fs::write(dir.join("ec-pub.pem"), &pem.stdout).unwrap();
    // A root, an intermediate it signs, and a leaf for ec's public key the intermediate signs.
    openssl_ca(&dir, "Root CA", "root");
    openssl_ok(
        &dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=Issuing CA",
            "-keyout",
            "int.key",
            "-out",
            "int.csr",
        ],
    );
    std::fs::write(dir.join("ca.ext"), "basicConstraints=critical,CA:TRUE\n").unwrap();
    openssl_ok(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "int.csr",
            "-CA",
            "root.pem",
            "-CAkey",
            "root.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            "ca.ext",
            "-out",
            "int.pem",
        ],
    );
    openssl_issue(&dir, "ec-pub.pem", "ec.example", "int", "leaf.pem");
    let chain = format!(
        "{}{}",
        std::fs::read_to_string(dir.join("int.pem")).unwrap(),
        std::fs::read_to_string(dir.join("root.pem")).unwrap()
    );
    std::fs::write(dir.join("chain.pem"), &chain).unwrap();
    std::fs::write(
        dir.join("bad-chain.pem"),
        std::fs::read_to_string(dir.join("root.pem")).unwrap(),
    )
    .unwrap();
    let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
    // `key cert import --key KEY --cert DIR/LEAF [--chain DIR/CHAIN]` as `who`.
    let import = |who: &str, k: &str, leaf: &str, chain: Option<&str>| {
        let (k, leaf, chain) = (key(k), p(leaf), chain.map(p));
        let mut args = vec!["key", "cert", "import", "--key", &k, "--cert", &leaf];
        if let Some(c) = &chain {
            args.extend(["--chain", c]);
        }
        env.ctl_client_with_key(who, &args)
    };

    // Not the key's public key: refused, nothing stored.
    let out = import(&certs, "other", "leaf.pem", None);
    out.failed();
    assert!(
        out.stderr.contains("does not carry a public key"),
        "{out:#?}"
    );
    // A chain that does not link: refused.
    let out = import(&certs, "ec", "leaf.pem", Some("bad-chain.pem"));
    out.failed();
    assert!(out.stderr.contains("out of order"), "{out:#?}");
    // The issue's spelling: key cert create --import-cert.
    let out = env.ctl_client_with_key(
        &certs,
        &[
            "key",
            "cert",
            "create",
            "--key",
            &key("ec"),
            "--import-cert",
            &p("leaf.pem"),
            "--chain",
            &p("chain.pem"),
        ],
    );
    out.ok();
    assert!(out.stdout.contains("CA certificate"), "{out:#?}");
    let list = env.ctl_client_with_key(
        &certs,
        &["--json", "key", "cert", "list", "--key", &key("ec")],
    );
    list.ok();
    assert_eq!(list.json().as_array().unwrap().len(), 1, "the leaf is ec's");
    // No --label: a KMS-style key's certificate is labelled with the key id.
    assert_eq!(list.json()[0]["label"], "ec");
    // Again: nothing new.
    let out = import(&certs, "ec", "leaf.pem", Some("chain.pem"));
    out.ok();
    assert!(out.stdout.contains("already attached"), "{out:#?}");
    // Without kms.cryptoKeys.update: refused and audited.
    env.bind(&key("ec"), "roles/kms.viewer", &sa("viewer"));
    let out = import(&viewer, "ec", "leaf.pem", None);
    out.failed();
    assert!(out.stderr.contains("kms.cryptoKeys.update"), "{out:#?}");
    let log = env.ctl(&["--json", "audit", "query", "--action", "key.cert.import"]);
    log.ok();
    let recs = log.json_lines();
    assert!(recs
        .iter()
        .any(|r| r["result"] == "denied" && r["principal"] == sa("viewer").as_str()));
    assert!(recs.iter().any(|r| r["result"] == "allowed"));
}

/// The names of the ring's keys made through the PKCS#11 module.
fn generic_keys(env: &Env) -> Vec<String> {
    let out = env.ctl(&["--json", "key", "list", "--keyring", RING]);
    out.ok();
    out.json()
        .as_array()
        .expect("a list")
        .iter()
        .filter(|k| k["algorithm"].is_null())
        .map(|k| k["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn pairs_made_through_the_module_get_self_signed_certificates() {
    use common::module::{self, Settings};
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::{Attribute, AttributeType, CertificateType, ObjectClass};
    use cryptoki::session::UserType;
    use cryptoki::types::Ulong;

    let excl = module::exclusive();
    let mut env = Env::new();
    let certs = env.service_account_offline("certs");
    env.start();
    env.web_ring();
    env.bind(RING, "roles/kms.admin", &sa("certs"));
    env.bind(RING, "roles/kms.signerVerifier", &sa("certs"));
    let dir = env.dir().to_path_buf();
    let creds = dir.join("certs.key");
    let settings =
        Settings::new(&env.client_socket, &dir.join("module.toml")).credentials(&creds, &certs);
    let p11 = module::cryptoki(&settings);
    let slot = module::ring_slot(&p11, RING);
    let s = p11.open_rw_session(slot).unwrap();
    s.login(UserType::User, None).unwrap();

    // What a Java or pkcs11-tool user makes: pairs with their own CKA_ID and CKA_LABEL.
    const P256: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    const P384: [u8; 7] = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
    // (CKA_LABEL, CKA_ID, EC curve or RSA, CKA_SIGN)
    type Pair<'a> = (&'a str, &'a [u8], Option<&'a [u8]>, bool);
    let pairs: [Pair; 4] = [
        ("java-ec", &[0xec, 0x01], Some(&P256), true),
        ("java-ec384", &[0xec, 0x03], Some(&P384), true),
        ("java-rsa", &[0x5a, 0x01], None, true),
        ("no-sign", &[0xee], Some(&P256), false),
    ];
    let mut names = Vec::new();
    for (label, id, curve, sign) in pairs {
        let common = [
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.to_vec()),
        ];
        let mut public = common.to_vec();
        public.push(Attribute::Verify(true));
        let mut private = common.to_vec();
        private.extend([Attribute::Private(true), Attribute::Sign(sign)]);
        let mech = match curve {
            Some(c) => {
                public.push(Attribute::EcParams(c.to_vec()));
                Mechanism::EccKeyPairGen
            }
            None => {
                public.extend([
                    Attribute::ModulusBits(Ulong::from(2048)),
                    Attribute::PublicExponent(vec![1, 0, 1]),
                ]);
                Mechanism::RsaPkcsKeyPairGen
            }
        };
        let before = generic_keys(&env);
        s.generate_key_pair(&mech, &public, &private)
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        let made: Vec<String> = generic_keys(&env)
            .into_iter()
            .filter(|k| !before.contains(k))
            .collect();
        assert_eq!(made.len(), 1, "{label}: {made:?}");
        names.push(made[0].clone());
    }
    // `key list` shows each pair's CKA_LABEL beside its p11-... id (issue 18 item 9).
    let table = env
        .ctl(&["key", "list", "--keyring", RING])
        .ok()
        .stdout
        .clone();
    assert!(
        table.lines().next().unwrap_or("").contains("LABEL"),
        "{table}"
    );
    for ((label, ..), name) in pairs.iter().zip(&names) {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(name.as_str()) && l.contains(label)),
            "{name} {label}: {table}"
        );
    }
    let listed = env
        .ctl(&["--json", "key", "list", "--keyring", RING])
        .ok()
        .json();
    for ((label, ..), name) in pairs.iter().zip(&names) {
        let k = listed
            .as_array()
            .and_then(|a| a.iter().find(|k| k["name"] == name.as_str()))
            .unwrap_or_else(|| panic!("{name} not listed: {listed}"));
        assert_eq!(k["label"], *label, "{k}");
    }
    let client = env.client_socket.to_str().unwrap().to_string();
    let ctl = |args: &[&str]| {
        env.ctl_env(
            args,
            &[
                ("KEYWARD_CREDENTIALS", creds.to_str().unwrap()),
                ("KEYWARD_SOCKET", &client),
            ],
        )
    };

    for ((label, id, _, _), name) in pairs.iter().zip(&names).take(3) {
        let file = format!("{label}.pem");
        // The certificate carries the pair's public key, signed the way the key allows.
        self_signed(&ctl, &dir, name, &format!("CN={label}"), &[], &file);
        let shown = text(&openssl(&["x509", "-in", &file, "-noout", "-text"], &dir));
        let sig = match *label {
            "java-ec" => "ecdsa-with-SHA256",
            "java-ec384" => "ecdsa-with-SHA384",
            _ => "sha256WithRSAEncryption",
        };
        assert!(shown.contains(sig), "{label}: {shown}");
        let der = openssl(&["x509", "-in", &file, "-outform", "DER"], &dir).stdout;

        // Through the module: the certificate object with the pair's CKA_ID, labelled like
        // the pair, holding what keywardctl wrote.
        let found = s
            .find_objects(&[
                Attribute::Class(ObjectClass::CERTIFICATE),
                Attribute::CertificateType(CertificateType::X_509),
                Attribute::Id(id.to_vec()),
            ])
            .unwrap();
        assert_eq!(found.len(), 1, "{label}");
        let attrs = s
            .get_attributes(
                found[0],
                &[
                    AttributeType::Label,
                    AttributeType::Value,
                    AttributeType::Id,
                ],
            )
            .unwrap();
        assert_eq!(
            attrs,
            vec![
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Value(der),
                Attribute::Id(id.to_vec()),
            ],
            "{label}"
        );

        // A PKCS#10 request too.
        request(&ctl, &dir, name, &format!("{label}.csr"));
    }
    // The signatures went through the module's gate: audited as C_SignInit of the caller.
    let log = env.ctl(&["--json", "audit", "query", "--action", "C_SignInit"]);
    log.ok();
    assert!(
        log.json_lines()
            .iter()
            .any(|r| r["result"] == "allowed" && r["principal"] == sa("certs").as_str()),
        "{}",
        log.stdout
    );

    // A pair whose private key may not sign: a clear error, nothing attached.
    let out = ctl(&["key", "cert", "create", "--key", &names[3], "--self-signed"]);
    out.failed();
    assert!(out.stderr.contains("without CKA_SIGN"), "{out:#?}");
    assert!(s
        .find_objects(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::Id(vec![0xee])
        ])
        .unwrap()
        .is_empty());

    // key cert import without --label: the certificate takes the pair's CKA_LABEL.
    let pem = ctl(&["key", "get-public-key", &names[0]]);
    pem.ok();
    std::fs::write(dir.join("java-ec-pub.pem"), &pem.stdout).unwrap();
    openssl_ca(&dir, "Java CA", "ca");
    openssl_issue(&dir, "java-ec-pub.pem", "java.example", "ca", "issued.pem");
    let out = ctl(&[
        "--json",
        "key",
        "cert",
        "import",
        "--key",
        &names[0],
        "--cert",
        dir.join("issued.pem").to_str().unwrap(),
    ]);
    out.ok();
    assert_eq!(out.json()["label"], "java-ec", "{out:#?}");
    let list = ctl(&["--json", "key", "cert", "list", "--key", &names[0]]);
    list.ok();
    let js = list.json();
    let labels: Vec<&str> = js
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["java-ec", "java-ec"], "{js}");
    let found = s
        .find_objects(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::Label(b"java-ec".to_vec()),
        ])
        .unwrap();
    assert_eq!(found.len(), 2);
    for c in found {
        assert_eq!(
            s.get_attributes(c, &[AttributeType::Id]).unwrap(),
            vec![Attribute::Id(vec![0xec, 0x01])]
        );
    }
    drop(s);
    drop(p11);
    drop(excl);
}
