//! `keywardctl key cert` (issue 7 acceptance 3, first half): self-signed certificates and
//! PKCS#10 requests for EC P-256/P-384, RSA PKCS#1 and RSA-PSS keys, signed in the token
//! through keywardd and checked by `openssl verify` / `openssl req -verify`; the self-signed
//! certificate is attached to the key; a CA-issued certificate and its chain are attached with
//! `key cert import`, one of another key is refused; signing needs useToSign, attaching
//! kms.cryptoKeys.update.

mod common;

use common::daemon::Env;
use common::Output;
use std::path::Path;
use std::process::Command;

const RING: &str = "projects/payments/keyRings/web";

fn key(id: &str) -> String {
    format!("{RING}/cryptoKeys/{id}")
}

fn sa(id: &str) -> String {
    format!("serviceAccount:{id}@payments")
}

/// keywardctl ARGS through keywardd's sockets as the account whose key is `who`.
fn as_sa(env: &Env, who: &str, args: &[&str]) -> Output {
    use std::os::unix::fs::PermissionsExt;
    let path = env.dir().join(format!("creds-{}", &who[..8]));
    std::fs::write(&path, format!("{who}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let client = env.client_socket.to_str().unwrap().to_string();
    env.ctl_env(
        args,
        &[
            ("KEYWARD_CREDENTIALS", path.to_str().unwrap()),
            ("KEYWARD_SOCKET", &client),
        ],
    )
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

fn create(env: &Env, id: &str, purpose: &str, alg: &str) {
    env.ctl(&[
        "key",
        "create",
        "--keyring",
        RING,
        "--purpose",
        purpose,
        "--algorithm",
        alg,
        id,
    ])
    .ok();
}

#[test]
fn self_signed_certificates_and_requests_verify_with_openssl() {
    let mut env = Env::new();
    let certs = env.service_account_offline("certs");
    let signer = env.service_account_offline("signer");
    env.start();
    env.ctl(&["keyring", "create", "--parent", "projects/payments", "web"])
        .ok();
    let keys = [
        ("ec", "EC_SIGN_P256_SHA256"),
        ("ec384", "EC_SIGN_P384_SHA384"),
        ("rsa", "RSA_SIGN_PKCS1_2048_SHA256"),
        ("pss", "RSA_SIGN_PSS_2048_SHA256"),
    ];
    for (id, alg) in keys {
        create(&env, id, "ASYMMETRIC_SIGN", alg);
    }
    create(&env, "aes", "ENCRYPT_DECRYPT", "AES_256_GCM");
    env.bind(RING, "roles/kms.signerVerifier", &sa("certs"));
    env.bind(RING, "roles/kms.admin", &sa("certs"));
    env.bind(&key("ec"), "roles/kms.signerVerifier", &sa("signer"));
    let dir = env.dir().to_path_buf();

    for (id, _) in keys {
        let cert = format!("{id}.pem");
        let csr = format!("{id}.csr");
        let out = as_sa(
            &env,
            &certs,
            &[
                "key",
                "cert",
                "create",
                "--key",
                &key(id),
                "--self-signed",
                "--subject",
                &format!("CN={id}.example,O=Keyward Test"),
                "--days",
                "30",
                "--out",
                dir.join(&cert).to_str().unwrap(),
            ],
        );
        out.ok();
        assert!(out.stderr.contains("attached certificate"), "{out:#?}");
        let v = openssl(&["verify", "-CAfile", &cert, &cert], &dir);
        assert!(
            v.status.success() && text(&v).contains(": OK"),
            "{id}: {}",
            text(&v)
        );
        // It certifies the key's own public key, with the subject asked for.
        let pubkey = openssl(&["x509", "-in", &cert, "-noout", "-pubkey"], &dir);
        let want = as_sa(&env, &certs, &["key", "get-public-key", &key(id)]);
        want.ok();
        assert_eq!(
            String::from_utf8_lossy(&pubkey.stdout).trim(),
            want.stdout.trim()
        );
        let subj = openssl(&["x509", "-in", &cert, "-noout", "-subject"], &dir);
        assert!(text(&subj).contains("CN = ec") || text(&subj).contains(&format!("CN = {id}")));
        assert!(text(&subj).contains("O = Keyward Test"), "{}", text(&subj));

        let out = as_sa(
            &env,
            &certs,
            &[
                "key",
                "cert",
                "create",
                "--key",
                &key(id),
                "--csr",
                "--out",
                dir.join(&csr).to_str().unwrap(),
            ],
        );
        out.ok();
        let v = openssl(&["req", "-in", &csr, "-noout", "-verify"], &dir);
        assert!(text(&v).contains("verify OK"), "{id}: {}", text(&v));
        let pubkey = openssl(&["req", "-in", &csr, "-noout", "-pubkey"], &dir);
        assert_eq!(
            String::from_utf8_lossy(&pubkey.stdout).trim(),
            want.stdout.trim()
        );
        let subj = openssl(&["req", "-in", &csr, "-noout", "-subject"], &dir);
        assert!(
            text(&subj).contains(&format!("CN = {id}")),
            "{}",
            text(&subj)
        );
    }

    // The self-signed certificate is attached: listed, and `get` prints it as written.
    let list = as_sa(
        &env,
        &certs,
        &["--json", "key", "cert", "list", "--key", &key("ec")],
    );
    list.ok();
    let js = list.json();
    let arr = js.as_array().unwrap();
    assert_eq!(arr.len(), 1, "{js}");
    assert_eq!(arr[0]["label"], "ec");
    assert_eq!(arr[0]["version"], 1);
    let got = as_sa(&env, &certs, &["key", "cert", "get", "--key", &key("ec")]);
    got.ok();
    assert_eq!(
        got.stdout,
        std::fs::read_to_string(dir.join("ec.pem")).unwrap()
    );

    // A symmetric key has no certificate.
    let out = as_sa(
        &env,
        &certs,
        &["key", "cert", "create", "--key", &key("aes"), "--csr"],
    );
    out.failed();
    assert!(
        out.stderr.contains("ENCRYPT_DECRYPT") || out.stderr.contains("asymmetric"),
        "{out:#?}"
    );

    // signer (signerVerifier on ec, no cryptoKeys.update): a request yes, attaching no.
    let out = as_sa(
        &env,
        &signer,
        &["key", "cert", "create", "--key", &key("ec"), "--csr"],
    );
    out.ok();
    assert!(out
        .stdout
        .starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
    let out = as_sa(
        &env,
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
    let out = as_sa(
        &env,
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
    env.ctl(&["keyring", "create", "--parent", "projects/payments", "web"])
        .ok();
    create(&env, "ec", "ASYMMETRIC_SIGN", "EC_SIGN_P256_SHA256");
    create(&env, "other", "ASYMMETRIC_SIGN", "EC_SIGN_P256_SHA256");
    env.bind(RING, "roles/kms.signerVerifier", &sa("certs"));
    env.bind(RING, "roles/kms.admin", &sa("certs"));
    let dir = env.dir().to_path_buf();
    let pem = as_sa(&env, &certs, &["key", "get-public-key", &key("ec")]);
    pem.ok();
    std::fs::write(dir.join("ec-pub.pem"), &pem.stdout).unwrap();
    // A root, an intermediate it signs, and a leaf for ec's public key the intermediate signs.
    let ok = |args: &[&str]| {
        let o = openssl(args, &dir);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
    };
    ok(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=Root CA",
        "-days",
        "30",
        "-keyout",
        "root.key",
        "-out",
        "root.pem",
    ]);
    ok(&[
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
    ]);
    std::fs::write(dir.join("ca.ext"), "basicConstraints=critical,CA:TRUE\n").unwrap();
    ok(&[
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
    ]);
    ok(&[
        "x509",
        "-new",
        "-subj",
        "/CN=ec.example",
        "-days",
        "30",
        "-force_pubkey",
        "ec-pub.pem",
        "-CA",
        "int.pem",
        "-CAkey",
        "int.key",
        "-out",
        "leaf.pem",
    ]);
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

    // Not the key's public key: refused, nothing stored.
    let out = as_sa(
        &env,
        &certs,
        &[
            "key",
            "cert",
            "import",
            "--key",
            &key("other"),
            "--cert",
            &p("leaf.pem"),
        ],
    );
    out.failed();
    assert!(
        out.stderr.contains("does not carry a public key"),
        "{out:#?}"
    );
    // A chain that does not link: refused.
    let out = as_sa(
        &env,
        &certs,
        &[
            "key",
            "cert",
            "import",
            "--key",
            &key("ec"),
            "--cert",
            &p("leaf.pem"),
            "--chain",
            &p("bad-chain.pem"),
        ],
    );
    out.failed();
    assert!(out.stderr.contains("out of order"), "{out:#?}");
    // The spelling: key cert create --import-cert.
    let out = as_sa(
        &env,
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
    let list = as_sa(
        &env,
        &certs,
        &["--json", "key", "cert", "list", "--key", &key("ec")],
    );
    list.ok();
    assert_eq!(list.json().as_array().unwrap().len(), 1, "the leaf is ec's");
    // Again: nothing new.
    let out = as_sa(
        &env,
        &certs,
        &[
            "key",
            "cert",
            "import",
            "--key",
            &key("ec"),
            "--cert",
            &p("leaf.pem"),
            "--chain",
            &p("chain.pem"),
        ],
    );
    out.ok();
    assert!(out.stdout.contains("already attached"), "{out:#?}");
    // Without kms.cryptoKeys.update: refused and audited.
    env.bind(&key("ec"), "roles/kms.viewer", &sa("viewer"));
    let out = as_sa(
        &env,
        &viewer,
        &[
            "key",
            "cert",
            "import",
            "--key",
            &key("ec"),
            "--cert",
            &p("leaf.pem"),
        ],
    );
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
