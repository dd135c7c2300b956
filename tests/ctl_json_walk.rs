//! Issue 18 acceptance 2: every keywardctl subcommand with `--json`, one success and one
//! failure each, through a real keywardd and SoftHSM2 (offline for `init` and `store check`):
//! a success is exit 0 with one JSON document on stdout (JSON lines for `audit tail|query`); a
//! failure is the exit of its kind (1 failed/invalid, 2 usage, 3 unreachable) with one
//! `{"error":{"code","message","rv"?}}` document. The walk is checked against clap's own list
//! of subcommands, so a new command without a case here fails the test.

mod common;

use clap::CommandFactory;
use common::daemon::Env;
use common::{run_raw, Output, ADMIN};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::Path;

const RING: &str = "projects/payments/keyRings/web";

fn key(id: &str) -> String {
    format!("{RING}/cryptoKeys/{id}")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every leaf subcommand path (`key cert create`), from clap's definition.
fn leaves() -> BTreeSet<String> {
    fn walk(cmd: &clap::Command, prefix: &str, out: &mut BTreeSet<String>) {
        let subs: Vec<_> = cmd
            .get_subcommands()
            .filter(|c| c.get_name() != "help")
            .collect();
        if subs.is_empty() {
            out.insert(prefix.trim().to_string());
        }
        for c in subs {
            walk(c, &format!("{prefix} {}", c.get_name()), out);
        }
    }
    let mut out = BTreeSet::new();
    walk(&keyward::ctl::args::Cli::command(), "", &mut out);
    out
}

/// The subcommand path of an argument list (its words up to the first option or operand that
/// is not a subcommand name).
fn path_of(args: &[&str], all: &BTreeSet<String>) -> String {
    let words: Vec<&str> = args.iter().copied().filter(|a| *a != "--json").collect();
    let mut best = String::new();
    for n in 1..=words.len().min(3) {
        let p = words[..n].join(" ");
        if all.contains(&p) {
            best = p;
        }
    }
    best
}

struct Walk {
    all: BTreeSet<String>,
    ok: RefCell<BTreeSet<String>>,
    failed: RefCell<BTreeSet<String>>,
}

impl Walk {
    #[track_caller]
    fn ok(&self, args: &[&str], out: Output) -> Output {
        assert_eq!(out.code, 0, "{args:?}: {out:#?}");
        let path = path_of(args, &self.all);
        if path.starts_with("audit tail") || path.starts_with("audit query") {
            out.json_lines();
        } else {
            let js = out.json();
            assert!(js.get("error").is_none(), "{args:?}: {out:#?}");
        }
        self.ok.borrow_mut().insert(path);
        out
    }

    #[track_caller]
    fn fail(&self, args: &[&str], code: &str, out: Output) {
        let exit = match code {
            "usage" => 2,
            "unreachable" => 3,
            _ => 1,
        };
        assert_eq!(out.code, exit, "{args:?}: {out:#?}");
        let js = out.json();
        assert_eq!(js["error"]["code"], code, "{args:?}: {out:#?}");
        assert!(
            js["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{args:?}: {out:#?}"
        );
        assert!(out.stderr.contains("error: "), "{args:?}: {out:#?}");
        self.failed.borrow_mut().insert(path_of(args, &self.all));
    }
}

#[test]
fn every_subcommand_with_json() {
    let mut env = Env::new();
    let app = env.service_account_offline("app");
    env.start();
    let dir = env.dir().to_path_buf();
    let w = Walk {
        all: leaves(),
        ok: RefCell::new(BTreeSet::new()),
        failed: RefCell::new(BTreeSet::new()),
    };
    // Admin commands over the admin socket as this uid (mapped to ADMIN, the org admin).
    let ok = |args: &[&str]| {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        w.ok(args, env.ctl(&all))
    };
    let fail = |args: &[&str], code: &str| {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        w.fail(args, code, env.ctl(&all));
    };
    // Crypto and certificate commands as the service account `app`, client socket too.
    let app_ok = |args: &[&str]| {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        w.ok(args, env.ctl_client_with_key(&app, &all))
    };
    let app_fail = |args: &[&str], code: &str| {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        w.fail(args, code, env.ctl_client_with_key(&app, &all));
    };

    // --- offline: init and store check.
    let fresh = dir.join("fresh.db");
    let db = env.db.clone();
    let offline = |store: &Path, args: &[&str]| {
        let mut all = vec!["--json", "--db", s(store)];
        all.extend_from_slice(args);
        run_raw(&all, &[])
    };
    let init = ["init", "--org", "zeta", "--admin", "user:z@example.com"];
    w.ok(&init, offline(&fresh, &init));
    w.fail(&init, "failed", offline(&fresh, &init));
    w.ok(&["store", "check"], offline(&db, &["store", "check"]));
    w.fail(
        &["store", "check"],
        "usage",
        run_raw(&["--json", "store", "check"], &[]),
    );

    // --- the hierarchy.
    ok(&["org", "create", "beta"]);
    fail(&["org", "create", "beta"], "failed");
    ok(&["org", "list"]);
    fail(&["org", "list", "--bogus"], "usage");
    ok(&["org", "get", "acme"]);
    fail(&["org", "get", "nope"], "failed");
    ok(&["org", "set-sod", "acme", "warn"]);
    fail(&["org", "set-sod", "nope", "warn"], "failed");
    ok(&["org", "delete", "beta"]);
    fail(&["org", "delete", "nope"], "failed");
    ok(&["folder", "create", "--parent", "organizations/acme", "eng"]);
    fail(
        &["folder", "create", "--parent", "organizations/acme", "eng"],
        "failed",
    );
    ok(&["folder", "list"]);
    fail(&["folder", "list", "--parent", "folders/nope"], "failed");
    ok(&["folder", "get", "eng"]);
    fail(&["folder", "get", "nope"], "failed");
    ok(&["folder", "create", "--parent", "organizations/acme", "tmpf"]);
    ok(&["folder", "delete", "tmpf"]);
    fail(&["folder", "delete", "nope"], "failed");
    ok(&["project", "create", "--parent", "folders/eng", "p2"]);
    fail(
        &["project", "create", "--parent", "folders/eng", "p2"],
        "failed",
    );
    ok(&["project", "list"]);
    fail(&["project", "list", "--parent", "folders/nope"], "failed");
    ok(&["project", "get", "p2"]);
    fail(&["project", "get", "nope"], "failed");
    ok(&["project", "delete", "p2"]);
    fail(&["project", "delete", "nope"], "failed");
    ok(&["keyring", "create", "--parent", "projects/payments", "web"]);
    fail(
        &["keyring", "create", "--parent", "projects/payments", "web"],
        "failed",
    );
    ok(&["keyring", "list"]);
    fail(&["keyring", "list", "--parent", "projects/nope"], "failed");
    ok(&["keyring", "get", RING]);
    fail(
        &["keyring", "get", "projects/payments/keyRings/nope"],
        "failed",
    );
    ok(&["keyring", "update", RING, "--strict-templates", "false"]);
    fail(
        &[
            "keyring",
            "update",
            "projects/payments/keyRings/nope",
            "--strict-templates",
            "false",
        ],
        "failed",
    );
    ok(&["keyring", "create", "--parent", "projects/payments", "tmp"]);
    ok(&["keyring", "delete", "projects/payments/keyRings/tmp"]);
    fail(
        &["keyring", "delete", "projects/payments/keyRings/nope"],
        "failed",
    );

    // --- roles, IAM, groups, service accounts.
    ok(&["role", "list"]);
    fail(&["role", "list", "--bogus"], "usage");
    ok(&["role", "describe", "roles/kms.viewer"]);
    fail(&["role", "describe", "roles/kms.nope"], "failed");
    ok(&[
        "role",
        "create",
        "--org",
        "acme",
        "app",
        "--permissions",
        "read,list",
    ]);
    fail(
        &[
            "role",
            "create",
            "--org",
            "acme",
            "app",
            "--permissions",
            "read",
        ],
        "failed",
    );
    ok(&[
        "role",
        "update",
        "organizations/acme/roles/app",
        "--permissions",
        "read",
    ]);
    fail(
        &[
            "role",
            "update",
            "organizations/acme/roles/nope",
            "--permissions",
            "read",
        ],
        "failed",
    );
    ok(&["role", "delete", "organizations/acme/roles/app"]);
    fail(
        &["role", "delete", "organizations/acme/roles/app"],
        "failed",
    );
    let viewer = [
        "--role",
        "roles/kms.viewer",
        "--member",
        "user:v@example.com",
    ];
    let bind_ok: Vec<&str> = ["iam", "bind", "--resource", RING]
        .iter()
        .chain(&viewer)
        .copied()
        .collect();
    ok(&bind_ok);
    let bind_bad: Vec<&str> = ["iam", "bind", "--resource", "projects/nope"]
        .iter()
        .chain(&viewer)
        .copied()
        .collect();
    fail(&bind_bad, "failed");
    let unbind_ok: Vec<&str> = ["iam", "unbind", "--resource", RING]
        .iter()
        .chain(&viewer)
        .copied()
        .collect();
    ok(&unbind_ok);
    let unbind_bad: Vec<&str> = ["iam", "unbind", "--resource", "projects/nope"]
        .iter()
        .chain(&viewer)
        .copied()
        .collect();
    fail(&unbind_bad, "failed");
    ok(&["iam", "policy", "--resource", RING]);
    fail(&["iam", "policy", "--resource", "projects/nope"], "failed");
    let member = ["--member", "user:v@example.com"];
    let t: Vec<&str> = ["iam", "test"]
        .iter()
        .chain(&member)
        .chain(&["--resource", RING, "kms.cryptoKeys.get"])
        .copied()
        .collect();
    ok(&t);
    let t: Vec<&str> = ["iam", "test"]
        .iter()
        .chain(&member)
        .chain(&["--resource", "projects/nope", "kms.cryptoKeys.get"])
        .copied()
        .collect();
    fail(&t, "failed");
    let e: Vec<&str> = ["iam", "explain"]
        .iter()
        .chain(&member)
        .chain(&["--resource", RING])
        .copied()
        .collect();
    ok(&e);
    let e: Vec<&str> = ["iam", "explain"]
        .iter()
        .chain(&member)
        .chain(&["--resource", "projects/nope"])
        .copied()
        .collect();
    fail(&e, "failed");
    ok(&[
        "iam",
        "who-can",
        "--resource",
        RING,
        "--permission",
        "kms.cryptoKeys.get",
    ]);
    fail(
        &[
            "iam",
            "who-can",
            "--resource",
            "projects/nope",
            "--permission",
            "kms.cryptoKeys.get",
        ],
        "failed",
    );
    ok(&["iam", "map-uid", "4242", "user:v@example.com"]);
    fail(&["iam", "map-uid", "4243", "allAuthenticated"], "failed");
    ok(&["iam", "mappings"]);
    fail(&["iam", "mappings", "--bogus"], "usage");
    ok(&["iam", "unmap-uid", "4242"]);
    fail(&["iam", "unmap-uid", "many"], "usage");
    ok(&["iam", "sod-report", "--org", "acme"]);
    fail(&["iam", "sod-report", "--org", "nope"], "failed");
    ok(&["group", "create", "sre"]);
    fail(&["group", "create", "sre"], "failed");
    ok(&["group", "list"]);
    fail(&["group", "list", "--bogus"], "usage");
    ok(&["group", "get", "sre"]);
    fail(&["group", "get", "nope"], "failed");
    ok(&["group", "add-member", "sre", "user:b@example.com"]);
    fail(
        &["group", "add-member", "nope", "user:b@example.com"],
        "failed",
    );
    ok(&["group", "remove-member", "sre", "user:b@example.com"]);
    fail(
        &["group", "remove-member", "nope", "user:b@example.com"],
        "failed",
    );
    ok(&["group", "delete", "sre"]);
    fail(&["group", "delete", "nope"], "failed");
    ok(&["sa", "create", "--project", "payments", "app2"]);
    fail(&["sa", "create", "--project", "payments", "app2"], "failed");
    ok(&["sa", "list"]);
    fail(&["sa", "list", "--project", "nope"], "failed");
    let made = ok(&["sa", "key", "create", "app2@payments"]).json();
    let key_id = made["keyId"].as_str().unwrap().to_string();
    fail(&["sa", "key", "create", "nope@payments"], "failed");
    ok(&["sa", "key", "list", "app2@payments"]);
    fail(&["sa", "key", "list", "nope@payments"], "failed");
    ok(&["sa", "key", "revoke", "app2@payments", &key_id]);
    fail(&["sa", "key", "revoke", "app2@payments", "knope"], "failed");
    ok(&["sa", "delete", "app2@payments"]);
    fail(&["sa", "delete", "nope@payments"], "failed");

    // --- keys and versions (in the token, through keywardd).
    let create = |id: &str, purpose: &str, alg: &str| {
        ok(&[
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
    };
    create("aes", "ENCRYPT_DECRYPT", "AES_256_GCM");
    fail(
        &[
            "key",
            "create",
            "--keyring",
            RING,
            "--purpose",
            "MAC",
            "--algorithm",
            "HMAC_SHA256",
            "aes",
        ],
        "failed",
    );
    create("ec", "ASYMMETRIC_SIGN", "EC_SIGN_P256_SHA256");
    create("hmac", "MAC", "HMAC_SHA256");
    ok(&["key", "list", "--keyring", RING]);
    fail(
        &[
            "key",
            "list",
            "--keyring",
            "projects/payments/keyRings/nope",
        ],
        "failed",
    );
    ok(&["key", "get", &key("aes")]);
    fail(&["key", "get", &key("nope")], "failed");
    ok(&["key", "rotate", &key("aes")]);
    fail(&["key", "rotate", &key("nope")], "failed");
    ok(&["key", "set-primary", &key("aes"), "1"]);
    fail(&["key", "set-primary", &key("aes"), "99"], "failed");
    let v1 = format!("{}/cryptoKeyVersions/1", key("aes"));
    let v99 = format!("{}/cryptoKeyVersions/99", key("aes"));
    ok(&["key", "set-primary", &key("aes"), "2"]);
    ok(&["version", "list", &key("aes")]);
    fail(&["version", "list", &key("nope")], "failed");
    ok(&["version", "get", &v1]);
    fail(&["version", "get", &v99], "failed");
    ok(&["version", "disable", &v1]);
    fail(&["version", "disable", &v99], "failed");
    ok(&["version", "enable", &v1]);
    fail(&["version", "enable", &v99], "failed");
    ok(&["version", "destroy", &v1]);
    fail(&["version", "destroy", &v99], "failed");
    ok(&["version", "restore", &v1]);
    fail(&["version", "restore", &v99], "failed");

    // --- BYOK.
    ok(&[
        "import-job",
        "create",
        "--keyring",
        RING,
        "--method",
        "rsa-oaep-3072-sha1-aes-256",
        "--id",
        "j1",
    ]);
    fail(
        &[
            "import-job",
            "create",
            "--keyring",
            RING,
            "--method",
            "rsa-oaep-3072-sha1-aes-256",
            "--id",
            "j1",
        ],
        "failed",
    );
    let job = format!("{RING}/importJobs/j1");
    let nojob = format!("{RING}/importJobs/nope");
    ok(&["import-job", "get", &job]);
    fail(&["import-job", "get", &nojob], "failed");
    ok(&["import-job", "get-public-key", &job]);
    fail(&["import-job", "get-public-key", &nojob], "failed");
    ok(&["import-job", "list", "--keyring", RING]);
    fail(
        &[
            "import-job",
            "list",
            "--keyring",
            "projects/payments/keyRings/nope",
        ],
        "failed",
    );
    let material = dir.join("material");
    std::fs::write(&material, [7u8; 32]).unwrap();
    let wrapped = dir.join("wrapped");
    let wrap = |j: &str| {
        vec![
            "key",
            "wrap-for-import",
            "--import-job",
            j,
            "--key-material-file",
            s(&material),
            "--out",
            s(&wrapped),
        ]
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>()
    };
    let args = wrap(&job);
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let args = wrap(&nojob);
    fail(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        "failed",
    );
    let import = |j: &str| {
        vec![
            "key",
            "import",
            "--import-job",
            j,
            "--key",
            &key("imp"),
            "--algorithm",
            "AES_256_GCM",
            "--wrapped-key-file",
            s(&wrapped),
        ]
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>()
    };
    let args = import("j1");
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let args = import("nope");
    fail(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        "failed",
    );

    // --- crypto and certificates, as the service account.
    let sa = "serviceAccount:app@payments";
    env.bind(RING, "roles/kms.cryptoKeyEncrypterDecrypter", sa);
    env.bind(RING, "roles/kms.signerVerifier", sa);
    env.bind(RING, "roles/kms.publicKeyViewer", sa);
    env.bind(RING, "roles/kms.viewer", sa);
    let pt = dir.join("pt");
    std::fs::write(&pt, b"walk").unwrap();
    let (ct, back, sig, tag, other) = (
        dir.join("ct"),
        dir.join("back"),
        dir.join("sig"),
        dir.join("tag"),
        dir.join("other"),
    );
    std::fs::write(&other, b"other").unwrap();
    app_ok(&["key", "get-public-key", &key("ec")]);
    app_fail(&["key", "get-public-key", &key("aes")], "failed");
    app_ok(&[
        "encrypt",
        "--key",
        &key("aes"),
        "--in",
        s(&pt),
        "--out",
        s(&ct),
    ]);
    app_fail(
        &[
            "encrypt",
            "--key",
            &key("nope"),
            "--in",
            s(&pt),
            "--out",
            s(&ct),
        ],
        "failed",
    );
    app_ok(&[
        "decrypt",
        "--key",
        &key("aes"),
        "--in",
        s(&ct),
        "--out",
        s(&back),
    ]);
    app_fail(
        &[
            "decrypt",
            "--key",
            &key("ec"),
            "--in",
            s(&ct),
            "--out",
            s(&back),
        ],
        "failed",
    );
    app_ok(&[
        "sign",
        "--key",
        &key("ec"),
        "--in",
        s(&pt),
        "--out",
        s(&sig),
    ]);
    app_fail(
        &[
            "sign",
            "--key",
            &key("aes"),
            "--in",
            s(&pt),
            "--out",
            s(&sig),
        ],
        "failed",
    );
    app_ok(&[
        "verify",
        "--key",
        &key("ec"),
        "--in",
        s(&pt),
        "--signature",
        s(&sig),
    ]);
    app_fail(
        &[
            "verify",
            "--key",
            &key("ec"),
            "--in",
            s(&other),
            "--signature",
            s(&sig),
        ],
        "invalid",
    );
    app_ok(&[
        "mac",
        "--key",
        &key("hmac"),
        "--in",
        s(&pt),
        "--out",
        s(&tag),
    ]);
    app_fail(
        &[
            "mac",
            "--key",
            &key("hmac"),
            "--in",
            s(&other),
            "--verify",
            s(&tag),
        ],
        "invalid",
    );
    let cert = dir.join("cert.pem");
    app_ok(&[
        "key",
        "cert",
        "create",
        "--key",
        &key("ec"),
        "--self-signed",
        "--no-attach",
        "--out",
        s(&cert),
    ]);
    app_fail(
        &[
            "key",
            "cert",
            "create",
            "--key",
            &key("aes"),
            "--csr",
            "--out",
            s(&cert),
        ],
        "failed",
    );
    ok(&[
        "key",
        "cert",
        "import",
        "--key",
        &key("ec"),
        "--cert",
        s(&cert),
    ]);
    fail(
        &[
            "key",
            "cert",
            "import",
            "--key",
            &key("hmac"),
            "--cert",
            s(&cert),
        ],
        "failed",
    );
    ok(&["key", "cert", "list", "--key", &key("ec")]);
    fail(&["key", "cert", "list", "--key", &key("nope")], "failed");
    app_ok(&["key", "cert", "get", "--key", &key("ec")]);
    app_fail(&["key", "cert", "get", "--key", &key("hmac")], "failed");
    // key export: a key made without --exportable is refused. Its success needs a wrapping key
    // made through the PKCS#11 module (tests/module_export.rs).
    app_fail(
        &[
            "key",
            "export",
            "--key",
            &key("aes"),
            "--wrapping-key",
            &key("aes"),
            "--out",
            s(&back),
        ],
        "failed",
    );

    // --- the audit log and status.
    ok(&["audit", "tail", "-n", "5"]);
    fail(&["audit", "tail", "-n", "many"], "usage");
    ok(&["audit", "query", "--limit", "5"]);
    fail(&["audit", "query", "--since", "yesterday"], "usage");
    ok(&["audit", "verify"]);
    fail(&["audit", "verify", "--bogus"], "usage");
    ok(&["status"]);
    ok(&["token", "capabilities"]);
    fail(&["token", "capabilities", "--bogus"], "usage");
    w.fail(
        &["status"],
        "unreachable",
        run_raw(
            &["--json", "status"],
            &[("KEYWARD_ADMIN_SOCKET", s(&dir.join("none.sock")))],
        ),
    );
    let _ = ADMIN;

    // Every subcommand was walked both ways (completions is exempt from --json; key export's
    // success needs the module, see above).
    let exempt_ok: BTreeSet<String> = ["completions", "key export"].map(String::from).into();
    let exempt_fail: BTreeSet<String> = ["completions"].map(String::from).into();
    let no_ok: Vec<_> = w
        .all
        .iter()
        .filter(|p| !w.ok.borrow().contains(*p) && !exempt_ok.contains(*p))
        .collect();
    let no_fail: Vec<_> = w
        .all
        .iter()
        .filter(|p| !w.failed.borrow().contains(*p) && !exempt_fail.contains(*p))
        .collect();
    assert!(no_ok.is_empty(), "no success walked for {no_ok:?}");
    assert!(no_fail.is_empty(), "no failure walked for {no_fail:?}");
}
