//! keywardctl's command line: help, argument parsing, usage errors (exit 2), name
//! normalisation and the output conventions, run through the built binary.
//!
//! Tests marked "handler" send a request through the real admin handler; the others stop
//! before any request is made.

mod common;

use common::{my_uid, run_raw, Ctl, ADMIN};

/// Every command group and its subcommands.
const TREE: &[(&str, &[&str])] = &[
    ("init", &[]),
    ("org", &["create", "list", "get", "delete", "set-sod"]),
    ("folder", &["create", "list", "get", "delete"]),
    ("project", &["create", "list", "get", "delete"]),
    ("keyring", &["create", "list", "get", "delete", "update"]),
    ("role", &["list", "describe", "create", "update", "delete"]),
    (
        "iam",
        &[
            "bind",
            "unbind",
            "policy",
            "test",
            "explain",
            "who-can",
            "sod-report",
            "map-uid",
            "unmap-uid",
            "mappings",
        ],
    ),
    (
        "group",
        &[
            "create",
            "list",
            "get",
            "delete",
            "add-member",
            "remove-member",
        ],
    ),
    ("sa", &["create", "list", "delete", "key"]),
    ("audit", &["tail", "query", "verify"]),
];

/// A command listed in a help text: `  name   description`.
fn lists(help: &str, name: &str) -> bool {
    help.lines().any(|l| {
        let mut words = l.split_whitespace();
        l.starts_with("  ") && words.next() == Some(name) && words.next().is_some()
    })
}

#[test]
fn help_lists_every_command() {
    let top = run_raw(&["--help"], &[]);
    top.ok();
    for (group, subs) in TREE {
        assert!(
            lists(&top.stdout, group),
            "--help does not list {group}:\n{}",
            top.stdout
        );
        if subs.is_empty() {
            continue;
        }
        let h = run_raw(&[group, "--help"], &[]);
        h.ok();
        for sub in *subs {
            assert!(
                lists(&h.stdout, sub),
                "{group} --help does not list {sub}:\n{}",
                h.stdout
            );
            run_raw(&[group, sub, "--help"], &[]).ok();
        }
    }
    let h = run_raw(&["sa", "key", "--help"], &[]);
    for sub in ["create", "list", "revoke"] {
        assert!(
            lists(&h.stdout, sub),
            "sa key --help does not list {sub}:\n{}",
            h.stdout
        );
    }
}

#[test]
fn help_names_permissions_and_exit_codes() {
    let top = run_raw(&["--help"], &[]);
    assert!(top.stdout.contains("Exit codes"), "{}", top.stdout);
    assert!(top.stdout.contains("--db"), "{}", top.stdout);
    assert!(top.stdout.contains("KEYWARD_DB"), "{}", top.stdout);
    let kr = run_raw(&["keyring", "--help"], &[]);
    assert!(
        kr.stdout.contains("kms.keyRings.create on the parent"),
        "{}",
        kr.stdout
    );
    let sa = run_raw(&["sa", "key", "--help"], &[]);
    assert!(
        sa.stdout.contains("iam.serviceAccountKeys.create"),
        "{}",
        sa.stdout
    );
}

#[test]
fn no_command_is_a_usage_error() {
    run_raw(&[], &[]).usage_error();
    run_raw(&["org"], &[]).usage_error();
    run_raw(&["org", "frobnicate"], &[]).usage_error();
}

#[test]
fn without_db_there_is_no_daemon_yet() {
    // keywardd not reachable: exit 3 (issue 18 item 2).
    let out = run_raw(&["org", "list"], &[]);
    out.expect_code(3);
    assert!(out.stderr.contains("use --db PATH"), "{out:#?}");
    assert!(out.stdout.is_empty(), "{out:#?}");
}

#[test]
fn a_missing_store_is_not_created_by_accident() {
    let ctl = Ctl::new();
    let out = ctl.run(&["--json", "org", "get", "acme"]);
    out.failed();
    assert!(out.stderr.starts_with("error: no store at"), "{out:#?}");
    let js = out.json();
    assert!(
        js["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no store at"),
        "{out:#?}"
    );
    assert!(js["error"]["rv"].is_u64(), "{out:#?}");
    assert!(!ctl.db().exists(), "a read command created the store");
}

#[test]
fn bad_result_value_is_a_usage_error() {
    let out = run_raw(
        &[
            "--db",
            "/nonexistent",
            "audit",
            "query",
            "--result",
            "maybe",
        ],
        &[],
    );
    out.usage_error();
    assert!(out.stderr.contains("allowed, denied, error"), "{out:#?}");
}

#[test]
fn garbage_times_are_usage_errors_with_a_hint() {
    let out = run_raw(
        &[
            "--db",
            "/nonexistent",
            "audit",
            "query",
            "--since",
            "garbage",
        ],
        &[],
    );
    out.usage_error();
    assert!(out.stderr.contains("'garbage' is not a time"), "{out:#?}");
    assert!(out.stderr.contains("RFC 3339"), "{out:#?}");
    let out = run_raw(
        &[
            "--db",
            "/x",
            "audit",
            "query",
            "--since",
            "2026-11-25T10:00:00Z",
            "--until",
            "100",
        ],
        &[],
    );
    out.usage_error();
    assert!(out.stderr.contains("--since"), "{out:#?}");
}

#[test]
fn bad_members_are_usage_errors() {
    let out = run_raw(
        &[
            "--db",
            "/x",
            "iam",
            "bind",
            "--resource",
            "projects/p",
            "--role",
            "kms.viewer",
        ],
        &[],
    );
    out.usage_error();
    let out = run_raw(
        &[
            "--db",
            "/x",
            "iam",
            "bind",
            "--resource",
            "projects/p",
            "--role",
            "kms.viewer",
            "--member",
            "alice",
        ],
        &[],
    );
    out.usage_error();
    assert!(out.stderr.contains("invalid member 'alice'"), "{out:#?}");
    let out = run_raw(
        &[
            "--db",
            "/x",
            "init",
            "--org",
            "acme",
            "--admin",
            "anonymous",
        ],
        &[],
    );
    out.usage_error();
    let out = run_raw(&["--db", "/x", "--as", "group:ops", "org", "list"], &[]);
    out.usage_error();
    assert!(out.stderr.contains("cannot be a caller"), "{out:#?}");
    run_raw(&["--db", "/x", "iam", "map-uid", "-1", "user:a@b"], &[]).usage_error();
}

#[test]
fn bad_enums_and_empty_updates_are_usage_errors() {
    run_raw(&["--db", "/x", "org", "set-sod", "acme", "sometimes"], &[]).usage_error();
    let out = run_raw(
        &["--db", "/x", "keyring", "update", "projects/p/keyRings/r"],
        &[],
    );
    out.usage_error();
    assert!(out.stderr.contains("nothing to update"), "{out:#?}");
    run_raw(
        &[
            "--db",
            "/x",
            "keyring",
            "update",
            "projects/p/keyRings/r",
            "--strict-templates",
            "yes",
        ],
        &[],
    )
    .usage_error();
    run_raw(
        &["--db", "/x", "role", "create", "--org", "acme", "reader"],
        &[],
    )
    .usage_error();
    run_raw(&["--db", "/x", "audit", "tail", "-n", "many"], &[]).usage_error();
}

// ---- handler ----

/// handler: init, then the default caller is the process's own unix uid.
#[test]
fn default_caller_is_my_unix_uid() {
    let ctl = Ctl::new();
    let me = format!("unix-uid:{}", my_uid());
    ctl.run(&["init", "--org", "acme", "--admin", &me]).ok();
    let out = ctl.run(&["--json", "org", "list"]);
    out.ok();
    assert_eq!(out.json()[0]["name"], "organizations/acme", "{out:#?}");
    // Someone else sees nothing and is refused a get.
    let out = ctl.run_as("user:mallory@example.com", &["--json", "org", "list"]);
    assert_eq!(out.json(), serde_json::json!([]), "{out:#?}");
    let out = ctl.run_as("user:mallory@example.com", &["org", "get", "acme"]);
    out.failed();
    assert!(out.stderr.contains("permission denied"), "{out:#?}");
}

/// handler: `KEYWARD_DB` stands for `--db`.
#[test]
fn keyward_db_from_the_environment() {
    let ctl = Ctl::initialised();
    let db = ctl.db().to_str().unwrap();
    let out = run_raw(
        &["--as", ADMIN, "--json", "org", "get", "acme"],
        &[("KEYWARD_DB", db)],
    );
    out.ok();
    assert_eq!(out.json()["name"], "organizations/acme");
}

/// handler: a failed request is exit 1, `error:` on stderr, an error document with --json.
#[test]
fn failed_request_exit_1_and_json_error() {
    let ctl = Ctl::initialised();
    let out = ctl.admin(&["--json", "org", "get", "nope"]);
    out.failed();
    assert!(out.stderr.starts_with("error: "), "{out:#?}");
    let js = out.json();
    let msg = js["error"]["message"].as_str().unwrap();
    assert!(msg.contains("organizations/nope"), "{out:#?}");
    assert!(out.stderr.contains(msg), "{out:#?}");
    assert!(js["error"]["rv"].as_u64().unwrap() > 0, "{out:#?}");
    // Without --json nothing goes to stdout.
    let out = ctl.admin(&["org", "get", "nope"]);
    out.failed();
    assert!(out.stdout.is_empty(), "{out:#?}");
}

/// handler: `acme` and `organizations/acme`, `eng` and `folders/eng`, `p` and `projects/p`.
#[test]
fn resource_names_are_normalised() {
    let ctl = Ctl::initialised();
    ctl.admin(&["org", "set-sod", "organizations/acme", "enforce"])
        .ok();
    let a = ctl.admin(&["--json", "org", "get", "acme"]);
    let b = ctl.admin(&["--json", "org", "get", "organizations/acme"]);
    assert_eq!(a.json(), b.json());
    assert_eq!(a.json()["separationOfDuties"], "enforce");
    ctl.admin(&["folder", "create", "--parent", "organizations/acme", "eng"])
        .ok();
    let a = ctl.admin(&["--json", "folder", "get", "eng"]);
    let b = ctl.admin(&["--json", "folder", "get", "folders/eng"]);
    assert_eq!(a.json()["name"], "folders/eng");
    assert_eq!(a.json(), b.json());
    ctl.admin(&["project", "create", "--parent", "folders/eng", "payments"])
        .ok();
    let a = ctl.admin(&["--json", "project", "get", "payments"]);
    assert_eq!(a.json()["name"], "projects/payments");
    assert_eq!(a.json()["parent"], "folders/eng");
    ctl.admin(&["project", "delete", "projects/payments"]).ok();
    ctl.admin(&["folder", "delete", "eng"]).ok();
}

/// handler: `group:ops` and `ops`; `serviceAccount:web@p` and `web@p`; `kms.viewer`.
#[test]
fn groups_accounts_and_roles_are_normalised() {
    let ctl = Ctl::initialised();
    ctl.admin(&["group", "create", "group:ops"]).ok();
    ctl.admin(&["group", "add-member", "ops", "user:bob@example.com"])
        .ok();
    let out = ctl.admin(&["--json", "group", "get", "group:ops"]);
    assert_eq!(out.json()["group"], "ops");
    assert_eq!(out.json()["members"][0], "user:bob@example.com");

    ctl.create_payments();
    ctl.admin(&["sa", "create", "--project", "projects/payments", "web"])
        .ok();
    ctl.admin(&["sa", "key", "create", "serviceAccount:web@payments"])
        .ok();
    let a = ctl.admin(&["--json", "sa", "key", "list", "web@payments"]);
    let b = ctl.admin(&["--json", "sa", "key", "list", "serviceAccount:web@payments"]);
    assert_eq!(a.json(), b.json());
    assert_eq!(a.json()["keys"].as_array().unwrap().len(), 1);

    ctl.admin(&[
        "iam",
        "bind",
        "--resource",
        "projects/payments",
        "--role",
        "kms.viewer",
        "--member",
        "group:ops",
    ])
    .ok();
    let out = ctl.admin(&["--json", "iam", "policy", "--resource", "projects/payments"]);
    let roles: Vec<_> = out.json()["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["role"].clone())
        .collect();
    assert!(
        roles.contains(&serde_json::json!("roles/kms.viewer")),
        "{out:#?}"
    );
}

/// handler: human output is the message and an aligned table; `--json` is one document and
/// `audit tail --json` is JSON lines.
#[test]
fn human_and_json_output() {
    let ctl = Ctl::with_payments();
    let out = ctl.admin(&["project", "list"]);
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{out:#?}");
    let col = lines[0].find("PARENT").unwrap();
    assert_eq!(lines[1].find("organizations/acme"), Some(col), "{out:#?}");

    let out = ctl.admin(&["--json", "project", "list"]);
    assert_eq!(out.json()[0]["name"], "projects/payments");

    // Plain reads are not audited: the log holds init and project.create.
    let out = ctl.admin(&["--json", "audit", "tail", "-n", "5"]);
    out.ok();
    let actions: Vec<_> = out
        .json_lines()
        .iter()
        .map(|r| r["action"].clone())
        .collect();
    assert_eq!(actions, ["init", "project.create"], "{out:#?}");
}

/// handler: control characters in what the store returns do not reach the terminal.
#[test]
fn terminal_escapes_are_neutralised() {
    let ctl = Ctl::initialised();
    // A refused request leaves its (attacker-chosen) resource in the audit log.
    ctl.run_as(
        "user:mallory@example.com",
        &["folder", "get", "x\u{1b}[2Jy"],
    )
    .failed();
    let out = ctl.admin(&["audit", "tail", "-n", "5"]);
    out.ok();
    assert!(!out.stdout.contains('\u{1b}'), "{out:#?}");
    assert!(out.stdout.contains("\\u{1b}[2J"), "{out:#?}");
}
