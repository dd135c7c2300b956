//! `keywardctl status` (the daemon, its token, store-wide counts and the audit chain head for
//! callers holding kms.auditLogs.read, a clear "down" when no keywardd answers) and
//! `keywardctl completions <shell>` (scripts that bash really completes with).

mod common;

use common::daemon::{Env, LABEL};
use common::{run_raw, Ctl};
use std::process::Command;

#[test]
fn status_reports_daemon_token_counts_and_audit_head() {
    let mut env = Env::new();
    let sa = env.service_account_offline("app");
    env.start();
    // (service_account_offline made project payments)
    let ring = "projects/payments/keyRings/web";
    env.ctl(&["keyring", "create", "--parent", "projects/payments", "web"])
        .ok();
    env.ctl(&[
        "key",
        "create",
        "--keyring",
        ring,
        "--purpose",
        "ASYMMETRIC_SIGN",
        "--algorithm",
        "EC_SIGN_P256_SHA256",
        "tls",
    ])
    .ok();
    env.bind(
        &format!("{ring}/cryptoKeys/tls"),
        "roles/kms.signerVerifier",
        "serviceAccount:app@payments",
    );

    // The org admin (this uid is mapped to it) holds kms.auditLogs.read: everything.
    let js = env.ctl(&["--json", "status"]).ok().json();
    assert_eq!(js["daemon"]["running"], true, "{js}");
    assert_eq!(js["daemon"]["pid"], env.pid(), "{js}");
    assert_eq!(js["token"]["label"], LABEL, "{js}");
    assert_eq!(js["token"]["loggedIn"], true, "{js}");
    assert!(js["token"]["manufacturer"]
        .as_str()
        .is_some_and(|m| m.contains("SoftHSM")));
    let c = &js["counts"];
    assert_eq!(c["organizations"], 1, "{js}");
    assert_eq!(c["projects"], 1, "{js}");
    assert_eq!(c["keyRings"], 1, "{js}");
    assert_eq!(c["cryptoKeys"], 1, "{js}");
    assert_eq!(c["keyVersions"], 1, "{js}");
    // orgAdmin on the org (init) and signerVerifier on the key.
    assert_eq!(c["bindings"], 2, "{js}");
    assert_eq!(c["serviceAccounts"], 1, "{js}");
    let head = &js["auditHead"];
    assert!(head["seq"].as_i64().unwrap() >= 5, "{js}");
    assert_eq!(head["hash"].as_str().map(str::len), Some(64), "{js}");
    // A plain read: status leaves no audit record.
    let again = env.ctl(&["--json", "status"]).ok().json();
    assert_eq!(again["auditHead"], *head);
    // The head is the newest record `audit tail` shows (tail's own record comes after).
    let tail = env.ctl(&["--json", "audit", "tail", "-n", "1"]);
    let last = tail.ok().json_lines().pop().expect("an empty audit log");
    assert_eq!(head["seq"], last["seq"], "{js} vs {last}");

    // The human table says the same.
    let out = env.ctl(&["status"]).ok().stdout.clone();
    assert!(
        out.contains(&format!("running (pid {})", env.pid())),
        "{out}"
    );
    assert!(out.contains(LABEL), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("key rings") && l.ends_with(" 1")),
        "{out}"
    );
    assert!(out.contains("audit head"), "{out}");

    // A service account bound only on a key: the daemon and token, no store-wide counts.
    let js = env.ctl_with_key(&sa, &["--json", "status"]).ok().json();
    assert_eq!(js["daemon"]["running"], true, "{js}");
    assert_eq!(js["token"]["label"], LABEL, "{js}");
    assert!(js["counts"].is_null(), "{js}");
    assert!(js["auditHead"].is_null(), "{js}");
    let out = env.ctl_with_key(&sa, &["status"]).ok().stdout.clone();
    assert!(out.contains("need kms.auditLogs.read"), "{out}");

    // Daemon down: exit 3 (keywardd not reachable, issue 18 item 2), said plainly, in both
    // forms.
    let sock = env.admin_socket.to_str().unwrap().to_string();
    assert!(env.signal_and_wait("TERM").success());
    let out = run_raw(&["status"], &[("KEYWARD_ADMIN_SOCKET", &sock)]);
    out.expect_code(3);
    assert!(out.stdout.contains("DOWN"), "{out:#?}");
    assert!(out.stderr.contains("keywardd is not running"), "{out:#?}");
    let out = run_raw(&["--json", "status"], &[("KEYWARD_ADMIN_SOCKET", &sock)]);
    out.expect_code(3);
    let js = out.json();
    assert_eq!(js["daemon"]["running"], false, "{js}");
    assert_eq!(js["daemon"]["socket"], sock.as_str(), "{js}");
}

#[test]
fn status_offline_has_no_token() {
    let ctl = Ctl::initialised();
    let js = ctl.admin(&["--json", "status"]).ok().json();
    assert_eq!(js["daemon"]["offline"], true, "{js}");
    assert!(js["token"].is_null(), "{js}");
    assert_eq!(js["counts"]["organizations"], 1, "{js}");
    // init wrote its record; nothing signed it yet (only keywardd does).
    assert_eq!(js["auditHead"]["seq"], 1, "{js}");
    assert!(js["auditHead"]["checkpointSeq"].is_null(), "{js}");
    let js = ctl
        .run_as("user:nobody@example.test", &["--json", "status"])
        .ok()
        .json();
    assert!(js["counts"].is_null(), "{js}");
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    let out = run_raw(&["completions", "bash"], &[]);
    out.ok();
    // bash loads it and completes subcommands and options with it.
    let script = format!(
        "{}\n\
         COMP_WORDS=(keywardctl sta); COMP_CWORD=1; COMP_LINE='keywardctl sta'; \
         COMP_POINT=${{#COMP_LINE}}; _keywardctl keywardctl sta keywardctl; \
         echo \"sub: ${{COMPREPLY[*]}}\"\n\
         COMP_WORDS=(keywardctl keyring cr); COMP_CWORD=2; _keywardctl keywardctl cr keyring; \
         echo \"keyring: ${{COMPREPLY[*]}}\"\n\
         COMP_WORDS=(keywardctl completions ''); COMP_CWORD=2; \
         _keywardctl keywardctl '' completions; echo \"shells: ${{COMPREPLY[*]}}\"\n",
        out.stdout
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("complete.bash");
    std::fs::write(&file, script).unwrap();
    let res = Command::new("bash")
        .arg("--norc")
        .arg(&file)
        .output()
        .expect("cannot run bash");
    let said = String::from_utf8_lossy(&res.stdout);
    assert!(res.status.success(), "{said} {res:?}");
    assert!(said.contains("sub: status"), "{said}");
    assert!(said.contains("keyring: create"), "{said}");
    let shells = said.lines().find(|l| l.starts_with("shells:")).unwrap();
    for sh in ["bash", "zsh", "fish"] {
        assert!(shells.contains(sh), "{said}");
    }

    let zsh = run_raw(&["completions", "zsh"], &[]);
    zsh.ok();
    assert!(zsh.stdout.starts_with("#compdef keywardctl"), "{zsh:#?}");
    assert!(zsh.stdout.contains("'status:"), "{zsh:#?}");
    let fish = run_raw(&["completions", "fish"], &[]);
    fish.ok();
    assert!(fish.stdout.contains("complete -c keywardctl"), "{fish:#?}");
    assert!(fish.stdout.contains("-a \"status\""), "{fish:#?}");

    run_raw(&["completions", "tcsh"], &[]).usage_error();
}
