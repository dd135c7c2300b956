//! keywardctl's contract for scripts and people (issue 18 items 1, 2, 4, 5 client side, 8, 9):
//! under `--json` every failure is one `{"error":{"code","message","rv"?}}` document on stdout;
//! byte output needs `--out` under `--json` and is summarised; exit codes are 0 success or
//! valid, 1 refused/failed/invalid, 2 usage, 3 keywardd not reachable, for every command
//! including `status`. Through a real keywardd and SoftHSM2 where it matters.

mod common;

use common::daemon::Env;
use common::{run_raw, Output, ADMIN};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const RING: &str = "projects/payments/keyRings/web";

fn key(id: &str) -> String {
    format!("{RING}/cryptoKeys/{id}")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The `{"error": ...}` document of a failed `--json` run, with its `code`.
#[track_caller]
fn json_error(out: &Output, code: &str) -> serde_json::Value {
    let js = out.json();
    let e = &js["error"];
    assert_eq!(e["code"], code, "{out:#?}");
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{out:#?}"
    );
    e.clone()
}

/// Item 2 and item 1's "daemon unreachable also JSON": no keywardd at the sockets is exit 3
/// for every command, `status` included, and a JSON error under `--json`.
#[test]
fn unreachable_daemon_is_exit_3_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let admin = dir.path().join("admin.sock");
    let client = dir.path().join("client.sock");
    let env = [
        ("KEYWARD_ADMIN_SOCKET", s(&admin)),
        ("KEYWARD_SOCKET", s(&client)),
    ];
    let input = dir.path().join("in");
    std::fs::write(&input, b"x").unwrap();
    let out = run_raw(&["org", "list"], &env);
    out.expect_code(3);
    assert!(out.stderr.contains(s(&admin)), "{out:#?}");
    let out = run_raw(&["--json", "org", "list"], &env);
    out.expect_code(3);
    let e = json_error(&out, "unreachable");
    assert!(e["message"].as_str().unwrap().contains(s(&admin)), "{e}");

    let out = run_raw(&["status"], &env);
    out.expect_code(3);
    let out = run_raw(&["--json", "status"], &env);
    out.expect_code(3);
    let js = out.json();
    assert_eq!(js["daemon"]["running"], false, "{js}");
    assert_eq!(js["error"]["code"], "unreachable", "{js}");

    let out_file = dir.path().join("out");
    let k = key("aes");
    for args in [
        vec!["encrypt", "--key", &k, "--in", s(&input)],
        vec![
            "--json",
            "encrypt",
            "--key",
            &k,
            "--in",
            s(&input),
            "--out",
            s(&out_file),
        ],
        vec!["--json", "key", "cert", "get", "--key", &k],
        vec!["--json", "key", "get-public-key", &k],
    ] {
        let out = run_raw(&args, &env);
        out.expect_code(3);
        if args[0] == "--json" {
            json_error(&out, "unreachable");
        }
    }
}

/// Item 1: usage errors under `--json` are JSON too (clap's and keywardctl's own), exit 2;
/// bytes on stdout under `--json` are a usage error.
#[test]
fn json_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::write(&input, b"x").unwrap();
    let env = [("KEYWARD_SOCKET", "/nonexistent/client.sock")];
    let out = run_raw(&["--json", "key", "create", "--purpose", "MAC", "k"], &env);
    out.usage_error();
    json_error(&out, "usage");
    let k = key("aes");
    for verb in ["encrypt", "decrypt", "sign", "mac"] {
        let out = run_raw(&["--json", verb, "--key", &k, "--in", s(&input)], &env);
        out.usage_error();
        let e = json_error(&out, "usage");
        assert!(e["message"].as_str().unwrap().contains("--out"), "{e}");
    }
    let out = run_raw(
        &["--json", "key", "export", "--key", &k, "--wrapping-key", &k],
        &env,
    );
    out.usage_error();
    json_error(&out, "usage");
    // Completions are exempt: a script, whatever --json says.
    let out = run_raw(&["--json", "completions", "bash"], &[]);
    out.ok();
    assert!(out.stdout.contains("_keywardctl"), "{out:#?}");
}

/// Item 9: the usage line after a missing argument does not show the sockets as required
/// when they come from the environment.
#[test]
fn usage_line_does_not_show_env_sockets() {
    let out = run_raw(
        &["key", "list"],
        &[
            ("KEYWARD_ADMIN_SOCKET", "/tmp/a.sock"),
            ("KEYWARD_SOCKET", "/tmp/c.sock"),
        ],
    );
    out.usage_error();
    let usage = out
        .stderr
        .lines()
        .find(|l| l.starts_with("Usage:"))
        .unwrap_or_else(|| panic!("no usage line: {out:#?}"));
    assert_eq!(
        usage, "Usage: keywardctl key list --keyring <KEYRING>",
        "{out:#?}"
    );
}

/// Item 4: a socket keywardctl may not open is named, said to exist, with the group that grants
/// access; exit 3 (not "daemon DOWN ... start keywardd").
#[test]
fn socket_permission_error_names_socket_and_group() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = dir.path().join("admin.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o660)).unwrap();
    let group = group_name(std::fs::metadata(&sock).unwrap().gid_of());
    let bin = env!("CARGO_BIN_EXE_keywardctl");
    // As root, DAC does not apply: run keywardctl as nobody (not in the socket's group).
    let run = |json: bool| -> Output {
        let mut cmd = if common::my_uid() == 0 {
            let mut c = std::process::Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", bin]);
            c
        } else {
            std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o000)).unwrap();
            std::process::Command::new(bin)
        };
        if json {
            cmd.arg("--json");
        }
        cmd.args(["status"]).env("KEYWARD_ADMIN_SOCKET", &sock);
        let o = cmd.output().unwrap();
        Output {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    };
    let out = run(false);
    out.expect_code(3);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains(s(&sock)), "{out:#?}");
    assert!(all.contains("permission denied"), "{out:#?}");
    assert!(all.contains("exists"), "{out:#?}");
    assert!(all.contains(&format!("group '{group}'")), "{out:#?}");
    assert!(!all.contains("start keywardd"), "{out:#?}");
    let out = run(true);
    out.expect_code(3);
    let e = json_error(&out, "unreachable");
    assert!(e["message"].as_str().unwrap().contains(&group), "{e}");
}

trait Gid {
    fn gid_of(&self) -> u32;
}
impl Gid for std::fs::Metadata {
    fn gid_of(&self) -> u32 {
        std::os::unix::fs::MetadataExt::gid(self)
    }
}

fn group_name(gid: u32) -> String {
    std::fs::read_to_string("/etc/group")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2] == gid.to_string()).then(|| f[0].to_string())
        })
        .unwrap_or_else(|| gid.to_string())
}

/// Items 1, 2, 5 (client side) through keywardd: JSON summaries of byte output, invalid
/// signatures and MACs as JSON errors with exit 1, and messages a user can act on.
#[test]
fn crypto_json_and_messages() {
    let mut env = Env::new();
    let who = env.service_account_offline("crypter");
    env.start();
    env.web_ring();
    env.create_keys(
        RING,
        &[
            ("aes", "ENCRYPT_DECRYPT", "AES_256_GCM"),
            ("aes2", "ENCRYPT_DECRYPT", "AES_256_GCM"),
            ("ec", "ASYMMETRIC_SIGN", "EC_SIGN_P256_SHA256"),
            ("hmac", "MAC", "HMAC_SHA256"),
        ],
    );
    let member = "serviceAccount:crypter@payments";
    env.bind(RING, "roles/kms.cryptoKeyEncrypterDecrypter", member);
    env.bind(RING, "roles/kms.signerVerifier", member);
    env.bind(RING, "roles/kms.publicKeyViewer", member);
    // aes encrypts with its version 2, which aes2 (one version) lacks.
    env.ctl(&["key", "rotate", &key("aes")]).ok();
    let run = |args: &[&str]| env.ctl_client_with_key(&who, args);
    let dir = env.dir().to_path_buf();
    let pt = dir.join("pt");
    std::fs::write(&pt, b"attack at dawn").unwrap();
    let ct = dir.join("ct");

    // encrypt --json --out: a summary, the bytes in the file.
    let out = run(&[
        "--json",
        "encrypt",
        "--key",
        &key("aes"),
        "--in",
        s(&pt),
        "--out",
        s(&ct),
    ]);
    out.ok();
    let js = out.json();
    let n = std::fs::metadata(&ct).unwrap().len();
    assert_eq!(js["out"], s(&ct), "{js}");
    assert_eq!(js["bytes"], n, "{js}");

    // Decrypting with the wrong key says so (keywardd's words, tests/ctl_messages.rs).
    let out = run(&["decrypt", "--key", &key("aes2"), "--in", s(&ct)]);
    out.failed();
    assert!(out.stderr.contains("wrong key"), "{out:#?}");
    let out = run(&[
        "--json",
        "decrypt",
        "--key",
        &key("aes2"),
        "--in",
        s(&ct),
        "--out",
        s(&dir.join("x")),
    ]);
    out.failed();
    let e = json_error(&out, "failed");
    assert!(e["rv"].is_u64(), "{e}");

    // encrypt with a signing key: never "a ENCRYPT_DECRYPT key".
    let out = run(&["encrypt", "--key", &key("ec"), "--in", s(&pt)]);
    out.failed();
    assert!(out.stderr.contains("ENCRYPT_DECRYPT"), "{out:#?}");
    assert!(!out.stderr.contains(" a ENCRYPT_DECRYPT"), "{out:#?}");
    assert!(!out.stderr.contains(" a ASYMMETRIC_SIGN"), "{out:#?}");

    // sign, then verify a bad signature: JSON error "invalid", exit 1; a good one: valid.
    let sig = dir.join("sig");
    run(&[
        "sign",
        "--key",
        &key("ec"),
        "--in",
        s(&pt),
        "--out",
        s(&sig),
    ])
    .ok();
    let other = dir.join("other");
    std::fs::write(&other, b"attack at dusk").unwrap();
    let out = run(&[
        "--json",
        "verify",
        "--key",
        &key("ec"),
        "--in",
        s(&other),
        "--signature",
        s(&sig),
    ]);
    out.failed();
    json_error(&out, "invalid");
    let out = run(&[
        "--json",
        "verify",
        "--key",
        &key("ec"),
        "--in",
        s(&pt),
        "--signature",
        s(&sig),
    ]);
    out.ok();
    assert_eq!(out.json()["valid"], true, "{out:#?}");

    // mac --verify speaks of a MAC tag, not a signature.
    let tag = dir.join("tag");
    run(&[
        "mac",
        "--key",
        &key("hmac"),
        "--in",
        s(&pt),
        "--out",
        s(&tag),
    ])
    .ok();
    let out = run(&[
        "mac",
        "--key",
        &key("hmac"),
        "--in",
        s(&pt),
        "--verify",
        s(&tag),
    ]);
    out.ok();
    assert!(out.stderr.contains("MAC tag valid"), "{out:#?}");
    assert!(!out.stderr.contains("signature"), "{out:#?}");
    let out = run(&[
        "--json",
        "mac",
        "--key",
        &key("hmac"),
        "--in",
        s(&other),
        "--verify",
        s(&tag),
    ]);
    out.failed();
    json_error(&out, "invalid");

    // PEM under --json is a JSON string.
    let out = run(&["--json", "key", "get-public-key", &key("ec")]);
    out.ok();
    assert!(out.json()["pem"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN PUBLIC KEY-----"));
    let _ = ADMIN;
}

/// Item 8: a signer makes a self-signed certificate without attaching it (no
/// kms.cryptoKeys.update), and the admin attaches it with `key cert import`.
#[test]
fn self_signed_without_attaching_then_import() {
    let mut env = Env::new();
    let signer = env.service_account_offline("signer");
    env.start();
    env.web_ring();
    env.create_key(RING, "ec", "ASYMMETRIC_SIGN", "EC_SIGN_P256_SHA256");
    let member = "serviceAccount:signer@payments";
    env.bind(&key("ec"), "roles/kms.signerVerifier", member);
    env.bind(&key("ec"), "roles/kms.publicKeyViewer", member);
    let cert = env.dir().join("cert.pem");
    let out = env.ctl_client_with_key(
        &signer,
        &[
            "key",
            "cert",
            "create",
            "--key",
            &key("ec"),
            "--self-signed",
            "--no-attach",
            "--out",
            s(&cert),
        ],
    );
    out.ok();
    let pem = std::fs::read_to_string(&cert).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    let js = env
        .ctl(&["--json", "key", "cert", "list", "--key", &key("ec")])
        .ok()
        .json();
    assert_eq!(js.as_array().map(Vec::len), Some(0), "{js}");
    env.ctl(&[
        "key",
        "cert",
        "import",
        "--key",
        &key("ec"),
        "--cert",
        s(&cert),
    ])
    .ok();
    let js = env
        .ctl(&["--json", "key", "cert", "list", "--key", &key("ec")])
        .ok()
        .json();
    assert_eq!(js.as_array().map(Vec::len), Some(1), "{js}");
    // import-job create prints only the PEM on stdout; get-public-key --out writes it.
    let out = env.ctl(&[
        "import-job",
        "create",
        "--keyring",
        RING,
        "--method",
        "rsa-oaep-3072-sha1-aes-256",
        "--id",
        "j1",
    ]);
    out.ok();
    assert!(
        out.stdout.starts_with("-----BEGIN PUBLIC KEY-----"),
        "{out:#?}"
    );
    assert!(
        out.stdout.trim_end().ends_with("-----END PUBLIC KEY-----"),
        "{out:#?}"
    );
    let job_pem = env.dir().join("job.pem");
    let job = format!("{RING}/importJobs/j1");
    env.ctl(&["import-job", "get-public-key", &job, "--out", s(&job_pem)])
        .ok();
    assert_eq!(std::fs::read_to_string(&job_pem).unwrap(), out.stdout);
    // --no-attach goes with --self-signed only, and needs --out.
    let out = env.ctl_client_with_key(
        &signer,
        &[
            "key",
            "cert",
            "create",
            "--key",
            &key("ec"),
            "--self-signed",
            "--no-attach",
        ],
    );
    out.usage_error();
}

/// Item 9: `sa key create --out`, `import-job get-public-key --out`, and `import-job create`
/// printing only the PEM on stdout (its message on stderr).
#[test]
fn out_files_and_clean_pem() {
    let env = Env::new();
    let dir = env.dir().to_path_buf();
    let offline = |args: &[&str]| {
        let mut all = vec!["--as", ADMIN];
        all.extend_from_slice(args);
        env.offline(&all)
    };
    offline(&[
        "project",
        "create",
        "--parent",
        "organizations/acme",
        "payments",
    ])
    .ok();
    offline(&["sa", "create", "--project", "payments", "web"]).ok();
    let keyfile = dir.join("web.key");
    let out = offline(&["sa", "key", "create", "web@payments", "--out", s(&keyfile)]);
    out.ok();
    let secret = std::fs::read_to_string(&keyfile).unwrap();
    assert!(secret.trim().starts_with("kw"), "{secret}");
    assert!(!out.stdout.contains(secret.trim()), "{out:#?}");
    assert_eq!(
        std::fs::metadata(&keyfile).unwrap().permissions().mode() & 0o077,
        0,
        "the key file is private"
    );
}
