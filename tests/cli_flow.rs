//! End-to-end keywardctl flows over a private store (design §1-§3, §6): bootstrap, hierarchy,
//! bindings and the questions about them, groups, uid mappings, service-account keys, custom
//! roles, separation of duties and the audit log. All of them run the real admin handler.

mod common;

use common::{Ctl, ADMIN};
use serde_json::Value;

const RING: &str = "projects/payments/keyRings/web";
const SA: &str = "serviceAccount:web@payments";
const SIGN: &str = "kms.cryptoKeyVersions.useToSign";
const DECRYPT: &str = "kms.cryptoKeyVersions.useToDecrypt";

/// acme → project payments → key ring web, and service account web@payments.
fn payments() -> Ctl {
    let ctl = Ctl::with_payments();
    ctl.admin(&["keyring", "create", "--parent", "projects/payments", "web"])
        .ok();
    ctl.admin(&[
        "sa",
        "create",
        "--project",
        "payments",
        "web",
        "--display-name",
        "web tier",
    ])
    .ok();
    ctl
}

fn bind(ctl: &Ctl, resource: &str, role: &str, member: &str) -> common::Output {
    ctl.admin(&[
        "iam",
        "bind",
        "--resource",
        resource,
        "--role",
        role,
        "--member",
        member,
    ])
}

/// `--json iam who-can --resource RESOURCE --permission PERMISSION` as the admin, which
/// must succeed.
#[track_caller]
fn who_can(ctl: &Ctl, resource: &str, permission: &str) -> common::Output {
    let out = ctl.admin(&[
        "--json",
        "iam",
        "who-can",
        "--resource",
        resource,
        "--permission",
        permission,
    ]);
    out.ok();
    out
}

/// `--json iam explain --member MEMBER --resource RESOURCE --permission PERMISSION` as the
/// admin, which must succeed.
#[track_caller]
fn explain(ctl: &Ctl, member: &str, resource: &str, permission: &str) -> common::Output {
    let out = ctl.admin(&[
        "--json",
        "iam",
        "explain",
        "--member",
        member,
        "--resource",
        resource,
        "--permission",
        permission,
    ]);
    out.ok();
    out
}

fn members(who_can: &Value) -> Vec<String> {
    who_can["principals"]
        .as_array()
        .expect("principals")
        .iter()
        .map(|p| p["member"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn bootstrap_bind_test_who_can_verify() {
    let ctl = payments();
    let out = bind(&ctl, RING, "roles/kms.signer", SA);
    out.ok();
    assert!(out.stdout.contains("bound roles/kms.signer"), "{out:#?}");

    // testIamPermissions: only what the signer role gives.
    let out = ctl.admin(&[
        "--json",
        "iam",
        "test",
        "--member",
        SA,
        "--resource",
        RING,
        SIGN,
        DECRYPT,
    ]);
    out.ok();
    assert_eq!(
        out.json()["permissions"],
        serde_json::json!([SIGN]),
        "{out:#?}"
    );
    // Human output; permissions may also be given comma-separated.
    let out = ctl.admin(&[
        "iam",
        "test",
        "--member",
        SA,
        "--resource",
        RING,
        &format!("{SIGN},{DECRYPT}"),
    ]);
    out.ok();
    assert!(
        out.stdout.contains("granted") && out.stdout.contains("denied"),
        "{out:#?}"
    );

    let out = who_can(&ctl, RING, SIGN);
    assert_eq!(members(&out.json()), [SA], "{out:#?}");
    let out = who_can(&ctl, RING, DECRYPT);
    assert!(!members(&out.json()).contains(&SA.to_string()), "{out:#?}");

    let out = explain(&ctl, SA, RING, SIGN);
    let grant = &out.json()["grants"][0];
    assert_eq!(grant["permission"], SIGN, "{out:#?}");
    assert_eq!(grant["bindings"][0]["role"], "roles/kms.signer", "{out:#?}");
    assert_eq!(grant["bindings"][0]["resource"], RING, "{out:#?}");

    // The admin holds everything on the ring through the organisation.
    let out = ctl.admin(&["--json", "iam", "policy", "--resource", RING]);
    out.ok();
    let bindings = out.json()["bindings"].as_array().unwrap().clone();
    assert!(bindings
        .iter()
        .any(|b| b["role"] == "roles/keyward.orgAdmin"
            && b["member"] == ADMIN
            && b["inherited"] == true));
    assert!(bindings
        .iter()
        .any(|b| b["role"] == "roles/kms.signer" && b["inherited"] == false));

    let out = ctl.admin(&["audit", "verify"]);
    out.ok();
    assert!(out.stdout.contains("intact"), "{out:#?}");

    // Unbinding takes it away again.
    ctl.admin(&[
        "iam",
        "unbind",
        "--resource",
        RING,
        "--role",
        "kms.signer",
        "--member",
        SA,
    ])
    .ok();
    let out = ctl.admin(&[
        "--json",
        "iam",
        "test",
        "--member",
        SA,
        "--resource",
        RING,
        SIGN,
    ]);
    assert_eq!(out.json()["permissions"], serde_json::json!([]), "{out:#?}");
}

#[test]
fn init_works_once_and_nobody_else_is_special() {
    let ctl = Ctl::initialised();
    let out = ctl.admin(&["init", "--org", "other", "--admin", ADMIN]);
    out.failed();
    assert!(out.stderr.contains("already initialised"), "{out:#?}");
    // Not even this process's own uid (root included) holds anything.
    let out = ctl.run(&["project", "create", "--parent", "organizations/acme", "p"]);
    out.failed();
    assert!(out.stderr.contains("permission denied"), "{out:#?}");
    let out = ctl.run(&["audit", "tail"]);
    out.failed();
}

#[test]
fn keyring_lifecycle_and_names_never_reused() {
    let ctl = payments();
    let out = ctl.admin(&["--json", "keyring", "get", RING]);
    out.ok();
    let js = out.json();
    assert_eq!(js["tokenLabel"], "web");
    assert_eq!(js["strictTemplates"], false);
    assert_eq!(js["allowPlaintextImport"], false);

    let out = ctl.admin(&[
        "--json",
        "keyring",
        "update",
        RING,
        "--strict-templates",
        "true",
    ]);
    out.ok();
    assert_eq!(out.json()["strictTemplates"], true, "{out:#?}");

    let long = "a-key-ring-id-that-is-longer-than-32-bytes";
    let out = ctl.admin(&["keyring", "create", "--parent", "projects/payments", long]);
    out.failed();
    assert!(out.stderr.contains("--token-label"), "{out:#?}");
    ctl.admin(&[
        "keyring",
        "create",
        "--parent",
        "projects/payments",
        long,
        "--token-label",
        "long",
    ])
    .ok();
    let out = ctl.admin(&["--json", "keyring", "list", "--parent", "projects/payments"]);
    assert_eq!(out.json().as_array().unwrap().len(), 2, "{out:#?}");

    // roles/keyward.orgAdmin holds kms.keyRings.delete (an addition to design §3, which
    // gave it to no predefined role); a viewer does not.
    bind(
        &ctl,
        "organizations/acme",
        "kms.viewer",
        "user:viewer@acme.example",
    )
    .ok();
    let out = ctl.run_as("user:viewer@acme.example", &["keyring", "delete", RING]);
    out.failed();
    assert!(out.stderr.contains("kms.keyRings.delete"), "{out:#?}");
    ctl.admin(&["keyring", "delete", RING]).ok();
    let out = ctl.admin(&["keyring", "create", "--parent", "projects/payments", "web"]);
    out.failed();
    assert!(out.stderr.contains("never reused"), "{out:#?}");
}

#[test]
fn separation_of_duties_warn_then_enforce() {
    let ctl = payments();
    bind(&ctl, RING, "kms.signer", SA).ok();
    // Default `warn`: allowed, with a warning on stderr.
    let out = bind(&ctl, RING, "kms.admin", SA);
    out.ok();
    assert!(
        out.stderr.contains("warning: separation of duties"),
        "{out:#?}"
    );
    ctl.admin(&[
        "iam",
        "unbind",
        "--resource",
        RING,
        "--role",
        "kms.admin",
        "--member",
        SA,
    ])
    .ok();

    ctl.admin(&["org", "set-sod", "acme", "enforce"]).ok();
    let out = bind(&ctl, RING, "kms.admin", SA);
    out.failed();
    assert!(out.stderr.contains("--allow-sod-violation"), "{out:#?}");
    let out = ctl.admin(&[
        "iam",
        "bind",
        "--resource",
        RING,
        "--role",
        "kms.admin",
        "--member",
        SA,
        "--allow-sod-violation",
    ]);
    out.ok();
    assert!(
        out.stderr.contains("warning: separation of duties"),
        "{out:#?}"
    );

    // Both violations are audited.
    let out = ctl.admin(&[
        "--json",
        "audit",
        "query",
        "--action",
        "iam.bind.sodViolation",
    ]);
    out.ok();
    assert_eq!(out.json_lines().len(), 2, "{out:#?}");
}

#[test]
fn groups_nest_and_who_can_sees_through_them() {
    let ctl = payments();
    ctl.admin(&["group", "create", "ops"]).ok();
    ctl.admin(&["group", "create", "oncall"]).ok();
    ctl.admin(&["group", "add-member", "ops", "group:oncall"])
        .ok();
    ctl.admin(&[
        "group",
        "add-member",
        "group:oncall",
        "user:bob@example.com",
    ])
    .ok();
    bind(
        &ctl,
        "projects/payments",
        "kms.cryptoKeyDecrypter",
        "group:ops",
    )
    .ok();

    let out = who_can(&ctl, RING, DECRYPT);
    let js = out.json();
    let bob = js["principals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["member"] == "user:bob@example.com")
        .unwrap_or_else(|| panic!("bob is not listed: {out:#?}"));
    assert_eq!(bob["boundOn"], "projects/payments", "{out:#?}");
    assert!(!bob["viaGroups"].as_array().unwrap().is_empty(), "{out:#?}");

    let member = "user:bob@example.com";
    let out = ctl.admin(&[
        "--json",
        "iam",
        "test",
        "--member",
        member,
        "--resource",
        RING,
        DECRYPT,
    ]);
    assert_eq!(
        out.json()["permissions"],
        serde_json::json!([DECRYPT]),
        "{out:#?}"
    );

    ctl.admin(&["group", "remove-member", "oncall", member])
        .ok();
    let out = ctl.admin(&[
        "--json",
        "iam",
        "test",
        "--member",
        member,
        "--resource",
        RING,
        DECRYPT,
    ]);
    assert_eq!(out.json()["permissions"], serde_json::json!([]), "{out:#?}");
    let out = ctl.admin(&["--json", "group", "list"]);
    assert_eq!(out.json().as_array().unwrap().len(), 2, "{out:#?}");
}

#[test]
fn uid_mapping_makes_a_uid_act_as_an_account() {
    let ctl = payments();
    bind(&ctl, RING, "kms.signer", SA).ok();
    ctl.admin(&["iam", "map-uid", "1001", SA]).ok();
    let out = ctl.admin(&["--json", "iam", "mappings"]);
    assert_eq!(out.json()[0]["uid"], 1001, "{out:#?}");
    assert_eq!(out.json()[0]["member"], SA, "{out:#?}");

    let out = ctl.admin(&[
        "iam",
        "test",
        "--member",
        "unix-uid:1001",
        "--resource",
        RING,
        SIGN,
    ]);
    out.ok();
    assert!(out.stdout.contains("mapped"), "{out:#?}");
    assert!(out.stdout.contains("granted"), "{out:#?}");
    // who-can names the uids that act as a grantee.
    let out = who_can(&ctl, RING, SIGN);
    assert_eq!(
        out.json()["principals"][0]["mappedUids"][0],
        "unix-uid:1001",
        "{out:#?}"
    );

    ctl.admin(&["iam", "unmap-uid", "1001"]).ok();
    ctl.admin(&["iam", "unmap-uid", "1001"]).failed();
    // Only user: and serviceAccount: members are mapping targets.
    ctl.admin(&["iam", "map-uid", "1002", "group:ops"]).failed();
}

#[test]
fn service_account_keys_are_shown_once() {
    let ctl = payments();
    let out = ctl.admin(&["sa", "key", "create", "web@payments"]);
    out.ok();
    let secret = out
        .stdout
        .lines()
        .find(|l| l.starts_with("kw"))
        .unwrap_or_else(|| panic!("no secret printed: {out:#?}"))
        .to_string();
    assert!(
        secret.len() <= 32,
        "a PIN holds at most 32 bytes (libp11): {secret}"
    );
    assert!(out.stderr.contains("shown only this once"), "{out:#?}");

    let out = ctl.admin(&["--json", "sa", "key", "list", SA]);
    out.ok();
    assert!(
        !out.stdout.contains(&secret[secret.find('.').unwrap()..]),
        "secret leaked"
    );
    let key_id = out.json()["keys"][0]["keyId"].as_str().unwrap().to_string();
    assert!(
        secret.contains(&key_id),
        "the key id is part of the key: {secret} {key_id}"
    );
    // The audit log never holds the secret either.
    let out = ctl.admin(&["--json", "audit", "tail", "-n", "100"]);
    assert!(!out.stdout.contains(&secret), "secret in the audit log");

    ctl.admin(&["sa", "key", "revoke", SA, &key_id]).ok();
    let out = ctl.admin(&["--json", "sa", "key", "list", "web@payments"]);
    assert!(out.json()["keys"][0]["revokeTime"].is_string(), "{out:#?}");
    ctl.admin(&["sa", "key", "revoke", SA, &key_id]).failed();

    let out = ctl.admin(&["--json", "sa", "list", "--project", "payments"]);
    assert_eq!(out.json()[0]["email"], "web@payments", "{out:#?}");
    ctl.admin(&["sa", "delete", SA]).ok();
    ctl.admin(&["sa", "create", "--project", "payments", "web"])
        .failed();
}

#[test]
fn custom_roles_from_thalassa_verbs_and_fine_permissions() {
    let ctl = payments();
    let name = "organizations/acme/roles/readSigner";
    ctl.admin(&[
        "role",
        "create",
        "--org",
        "acme",
        "readSigner",
        "--title",
        "Read and sign",
        "--permissions",
        "read,list",
        "--permissions",
        SIGN,
    ])
    .ok();
    let out = ctl.admin(&["--json", "role", "describe", name]);
    out.ok();
    let perms = out.json()["permissions"].clone();
    assert!(
        perms.as_array().unwrap().contains(&Value::from(SIGN)),
        "{out:#?}"
    );
    assert!(
        perms
            .as_array()
            .unwrap()
            .contains(&Value::from("kms.keyRings.get")),
        "{out:#?}"
    );
    let out = ctl.admin(&["--json", "role", "list"]);
    assert!(
        out.json()
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == name),
        "{out:#?}"
    );

    bind(&ctl, RING, name, SA).ok();
    let out = ctl.admin(&["role", "delete", name]);
    out.failed();
    assert!(out.stderr.contains("binding"), "{out:#?}");
    ctl.admin(&[
        "iam",
        "unbind",
        "--resource",
        RING,
        "--role",
        name,
        "--member",
        SA,
    ])
    .ok();
    ctl.admin(&["role", "delete", name]).ok();
    // Predefined roles stay.
    ctl.admin(&["role", "delete", "kms.admin"]).failed();
}

#[test]
fn audit_records_denials_and_detects_tampering() {
    let ctl = payments();
    let mallory = "user:mallory@example.com";
    ctl.run_as(
        mallory,
        &["keyring", "create", "--parent", "projects/payments", "x"],
    )
    .failed();
    ctl.run_as(mallory, &["audit", "tail"]).failed();

    let out = ctl.admin(&[
        "--json",
        "audit",
        "query",
        "--principal",
        mallory,
        "--result",
        "denied",
    ]);
    out.ok();
    let recs = out.json_lines();
    assert_eq!(recs.len(), 2, "{out:#?}");
    assert_eq!(recs[0]["action"], "keyring.create");
    assert_eq!(recs[0]["result"], "denied");
    // The real uid and pid of the process are recorded even under --as.
    assert_eq!(recs[0]["peer_uid"], common::my_uid(), "{out:#?}");

    let out = ctl.admin(&[
        "--json",
        "audit",
        "query",
        "--since",
        "2100-01-01T00:00:00Z",
    ]);
    out.ok();
    assert!(out.stdout.is_empty(), "{out:#?}");
    let out = ctl.admin(&[
        "--json",
        "audit",
        "query",
        "--until",
        "1000000000",
        "--limit",
        "5",
    ]);
    assert!(out.stdout.is_empty(), "{out:#?}");
    let out = ctl.admin(&[
        "--json",
        "audit",
        "query",
        "--resource",
        "projects/payments",
    ]);
    assert!(!out.json_lines().is_empty(), "{out:#?}");

    ctl.admin(&["audit", "verify"]).ok();
    // Rewrite who did something: the chain no longer matches.
    let db = rusqlite::Connection::open(ctl.db()).unwrap();
    let n = db
        .execute(
            "UPDATE audit_log SET principal = 'user:someone@else.com' WHERE seq = 2",
            [],
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(db);
    let out = ctl.admin(&["--json", "audit", "verify"]);
    out.failed();
    assert!(out.stderr.contains("FAILED"), "{out:#?}");
    assert!(out.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("FAILED"));
}

#[test]
fn hierarchy_under_folders_and_delete_only_when_empty() {
    let ctl = Ctl::initialised();
    ctl.admin(&["folder", "create", "--parent", "organizations/acme", "eng"])
        .ok();
    ctl.admin(&["folder", "create", "--parent", "folders/eng", "backend"])
        .ok();
    ctl.admin(&["project", "create", "--parent", "folders/backend", "api"])
        .ok();
    let out = ctl.admin(&["--json", "folder", "list", "--parent", "folders/eng"]);
    assert_eq!(out.json()[0]["name"], "folders/backend", "{out:#?}");
    let out = ctl.admin(&["--json", "project", "list"]);
    assert_eq!(out.json()[0]["parent"], "folders/backend", "{out:#?}");

    // Organisation-scoped key ring (Thalassa seed).
    ctl.admin(&[
        "keyring",
        "create",
        "--parent",
        "organizations/acme",
        "root",
    ])
    .ok();
    ctl.admin(&[
        "--json",
        "keyring",
        "get",
        "organizations/acme/keyRings/root",
    ])
    .ok();

    let out = ctl.admin(&["folder", "delete", "eng"]);
    out.failed();
    assert!(out.stderr.contains("not empty"), "{out:#?}");
    ctl.admin(&["project", "delete", "api"]).ok();
    ctl.admin(&["folder", "delete", "backend"]).ok();
    ctl.admin(&["folder", "delete", "eng"]).ok();
    // Ids of folders and projects are unique and never reused.
    ctl.admin(&["project", "create", "--parent", "organizations/acme", "eng"])
        .failed();

    // A second organisation, by the first one's admin.
    ctl.admin(&["org", "create", "beta"]).ok();
    let out = ctl.admin(&["--json", "org", "list"]);
    assert_eq!(out.json().as_array().unwrap().len(), 2, "{out:#?}");
    ctl.admin(&["org", "delete", "beta"]).ok();
}
