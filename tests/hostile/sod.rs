//! Attacks: separation of duties through groups, roles and uid mappings (issue 13 finding 11,
//! design §3). With `org set-sod acme enforce`, no change may give one principal both key
//! administration and key use on the same key unless the change says
//! `--allow-sod-violation` (audited): a binding to a group, a group membership (nested groups
//! too), a custom role's update and a uid mapping are re-checked over effective permissions,
//! in both orders. `iam sod-report` lists every principal that holds both, with the
//! bindings and groups that cause it.
//!
//! Runs keywardctl offline on a private store (the admin handler is the same in keywardd);
//! keys are written into the store directly (their token material plays no part here).

use crate::common::{Ctl, Output, ADMIN};
use keyward::store::{keys, resources, Store};

const RING: &str = "projects/payments/keyRings/web";
const KEY: &str = "projects/payments/keyRings/web/cryptoKeys/signing";
const SA: &str = "serviceAccount:app@payments";
const SIGN: &str = "kms.cryptoKeyVersions.useToSign";
const UPDATE: &str = "kms.cryptoKeys.update";

/// A store with `acme/payments`, ring `web` holding key `signing`, service account
/// `app@payments`, group `ops3`, and separation of duties in `mode`.
fn world(mode: &str) -> Ctl {
    let ctl = Ctl::with_payments();
    ctl.admin(&["keyring", "create", "--parent", "projects/payments", "web"])
        .ok();
    insert_key(&ctl, RING, "signing");
    ctl.admin(&["sa", "create", "--project", "payments", "app"])
        .ok();
    ctl.admin(&["group", "create", "ops3"]).ok();
    ctl.admin(&["org", "set-sod", "acme", mode]).ok();
    ctl
}

/// A key row in `ring` (no token material: policy is all that is tested here).
fn insert_key(ctl: &Ctl, ring: &str, id: &str) {
    let mut store = Store::open(ctl.db()).expect("open the store");
    let name: keyward::policy::ResourceName = format!("{ring}/cryptoKeys/{id}").parse().unwrap();
    let tx = store.write().unwrap();
    let ring_row = resources::get(&tx, &ring.parse().unwrap())
        .unwrap()
        .expect("the ring exists");
    let kid = resources::insert(&tx, &name, Some(ring_row.id), 0).unwrap();
    keys::insert_key(
        &tx,
        kid,
        "ASYMMETRIC_SIGN",
        Some("EC_SIGN_P256_SHA256"),
        false,
        ADMIN,
    )
    .unwrap();
    let v = keys::add_version(&tx, kid, keys::VersionState::Enabled, None, None, 0).unwrap();
    keys::set_primary(&tx, kid, v).unwrap();
    tx.commit().unwrap();
}

fn bind(ctl: &Ctl, resource: &str, role: &str, member: &str, allow: bool) -> Output {
    let mut args = vec![
        "iam",
        "bind",
        "--resource",
        resource,
        "--role",
        role,
        "--member",
        member,
    ];
    if allow {
        args.push("--allow-sod-violation");
    }
    ctl.admin(&args)
}

fn add_member(ctl: &Ctl, group: &str, member: &str) -> Output {
    ctl.admin(&["group", "add-member", group, member])
}

/// Does `member` hold `perm` on `resource` (`iam test`)?
fn holds(ctl: &Ctl, member: &str, resource: &str, perm: &str) -> bool {
    let out = ctl.admin(&[
        "--json",
        "iam",
        "test",
        "--member",
        member,
        "--resource",
        resource,
        perm,
    ]);
    out.ok();
    out.json()["permissions"]
        .as_array()
        .expect("permissions")
        .iter()
        .any(|p| p == perm)
}

/// The request was refused for separation of duties, naming the override.
#[track_caller]
fn refused_for_sod(out: &Output) {
    assert_eq!(
        out.code, 1,
        "expected a separation-of-duties refusal (exit 1), got {out:#?}"
    );
    assert!(
        out.stderr.contains("separation of duties") && out.stderr.contains("--allow-sod-violation"),
        "{out:#?}"
    );
}

/// The audit records of `action`.
fn audited(ctl: &Ctl, action: &str) -> usize {
    let out = ctl.admin(&["--json", "audit", "query", "--action", action]);
    out.ok();
    out.json_lines().len()
}

/// The attack: admin on the ring to a service account, signerVerifier on a key of
/// that ring to a group, then the account joins the group.
#[test]
fn sod_group_membership_added_after_the_binding_is_refused() {
    let ctl = world("enforce");
    bind(&ctl, RING, "roles/kms.admin", SA, false).ok();
    bind(&ctl, KEY, "roles/kms.signerVerifier", "group:ops3", false).ok();
    let out = add_member(&ctl, "ops3", SA);
    refused_for_sod(&out);
    assert!(
        out.stderr.contains(SA) && out.stderr.contains(KEY),
        "the refusal names the principal and the key: {out:#?}"
    );
    assert!(holds(&ctl, SA, KEY, UPDATE));
    assert!(
        !holds(&ctl, SA, KEY, SIGN),
        "a refused membership changes nothing"
    );
    // The override goes through, audited.
    ctl.admin(&["group", "add-member", "ops3", SA, "--allow-sod-violation"])
        .ok();
    assert!(holds(&ctl, SA, KEY, SIGN));
    assert_eq!(audited(&ctl, "group.addMember.sodViolation"), 1);
}

/// The other order: the account is in the group first, then the group is bound.
#[test]
fn sod_group_bound_after_the_member_joined_is_refused() {
    let ctl = world("enforce");
    bind(&ctl, RING, "roles/kms.admin", SA, false).ok();
    add_member(&ctl, "ops3", SA).ok();
    let out = bind(&ctl, KEY, "roles/kms.signerVerifier", "group:ops3", false);
    refused_for_sod(&out);
    assert!(!holds(&ctl, SA, KEY, SIGN));
    // And with the admin role reaching the account through a group, the use binding last.
    let ctl = world("enforce");
    ctl.admin(&["group", "create", "admins"]).ok();
    add_member(&ctl, "admins", SA).ok();
    bind(&ctl, RING, "roles/kms.admin", "group:admins", false).ok();
    let out = bind(&ctl, KEY, "roles/kms.signerVerifier", SA, false);
    refused_for_sod(&out);
    assert!(!holds(&ctl, SA, KEY, SIGN));
}

/// Nested groups, each link in both orders: ops3 ⊃ inner ⊃ the account.
#[test]
fn sod_nested_groups_are_followed() {
    // The inner group joins the bound group last.
    let ctl = world("enforce");
    ctl.admin(&["group", "create", "inner"]).ok();
    bind(&ctl, RING, "roles/kms.admin", SA, false).ok();
    bind(&ctl, KEY, "roles/kms.signer", "group:ops3", false).ok();
    add_member(&ctl, "inner", SA).ok();
    let out = add_member(&ctl, "ops3", "group:inner");
    refused_for_sod(&out);
    assert!(!holds(&ctl, SA, KEY, SIGN));
    // The account joins the inner group last.
    let ctl = world("enforce");
    ctl.admin(&["group", "create", "inner"]).ok();
    bind(&ctl, RING, "roles/kms.admin", SA, false).ok();
    bind(&ctl, KEY, "roles/kms.signer", "group:ops3", false).ok();
    add_member(&ctl, "ops3", "group:inner").ok();
    let out = add_member(&ctl, "inner", SA);
    refused_for_sod(&out);
    assert!(!holds(&ctl, SA, KEY, SIGN));
    // A member with nothing else is fine.
    add_member(&ctl, "inner", "user:carol@acme.example").ok();
}

/// `allAuthenticated` counts for every principal the store knows.
#[test]
fn sod_all_authenticated_counts_for_every_principal() {
    let ctl = world("enforce");
    bind(&ctl, RING, "roles/kms.admin", SA, false).ok();
    let out = bind(&ctl, KEY, "roles/kms.signer", "allAuthenticated", false);
    refused_for_sod(&out);
    assert!(
        out.stderr.contains(SA) && out.stderr.contains(ADMIN),
        "every administrator of the key is named: {out:#?}"
    );
    assert!(!holds(&ctl, SA, KEY, SIGN));
    // The other order (the organisation's admin is an accepted exception here).
    let ctl = world("enforce");
    bind(&ctl, KEY, "roles/kms.signer", "allAuthenticated", true).ok();
    let out = bind(&ctl, RING, "roles/kms.admin", SA, false);
    refused_for_sod(&out);
    assert!(!holds(&ctl, SA, RING, UPDATE));
}

/// A custom role that gains a use permission is re-checked for every member it is bound to.
#[test]
fn sod_role_update_is_rechecked() {
    let ctl = world("enforce");
    let role = "organizations/acme/roles/keyReader";
    ctl.admin(&[
        "role",
        "create",
        "--org",
        "acme",
        "keyReader",
        "--permissions",
        "kms.cryptoKeys.get",
    ])
    .ok();
    bind(&ctl, RING, "roles/kms.admin", SA, false).ok();
    ctl.admin(&["group", "create", "readers"]).ok();
    add_member(&ctl, "readers", SA).ok();
    bind(&ctl, KEY, role, "group:readers", false).ok();
    let out = ctl.admin(&[
        "role",
        "update",
        role,
        "--permissions",
        &format!("kms.cryptoKeys.get,{SIGN}"),
    ]);
    refused_for_sod(&out);
    assert!(!holds(&ctl, SA, KEY, SIGN));
    // A change that gives nobody both goes through.
    ctl.admin(&[
        "role",
        "update",
        role,
        "--permissions",
        "kms.cryptoKeys.get,kms.cryptoKeys.list",
    ])
    .ok();
    let out = ctl.admin(&["--json", "role", "describe", role]);
    out.ok();
    assert!(out.stdout.contains("kms.cryptoKeys.list"), "{out:#?}");
}

/// A uid mapped to a principal that holds both would act with both.
#[test]
fn sod_map_uid_is_rechecked() {
    let ctl = world("enforce");
    let both = "user:both@acme.example";
    bind(&ctl, RING, "roles/kms.admin", both, false).ok();
    bind(&ctl, KEY, "roles/kms.signer", both, true).ok();
    let out = ctl.admin(&["iam", "map-uid", "4242", both]);
    refused_for_sod(&out);
    assert!(
        out.stderr.contains("unix-uid:4242"),
        "the refusal names the uid: {out:#?}"
    );
    let out = ctl.admin(&["--json", "iam", "mappings"]);
    out.ok();
    assert!(!out.stdout.contains("4242"), "{out:#?}");
    ctl.admin(&["iam", "map-uid", "4242", both, "--allow-sod-violation"])
        .ok();
    assert_eq!(audited(&ctl, "iam.mapUid.sodViolation"), 1);
    // A principal holding one side only maps freely.
    bind(&ctl, KEY, "roles/kms.signer", "user:s@acme.example", false).ok();
    ctl.admin(&["iam", "map-uid", "4243", "user:s@acme.example"])
        .ok();
}

/// Under `warn` every path makes the change, warns and audits.
#[test]
fn sod_warn_mode_warns_on_every_path() {
    let ctl = world("warn");
    bind(&ctl, RING, "roles/kms.admin", SA, false).ok();
    bind(&ctl, KEY, "roles/kms.signerVerifier", "group:ops3", false).ok();
    let out = add_member(&ctl, "ops3", SA);
    out.ok();
    assert!(
        out.stderr.contains("warning: separation of duties"),
        "{out:#?}"
    );
    assert!(holds(&ctl, SA, KEY, SIGN));
    assert_eq!(audited(&ctl, "group.addMember.sodViolation"), 1);
    // Off: silent.
    let ctl = world("off");
    bind(&ctl, RING, "roles/kms.admin", SA, false).ok();
    bind(&ctl, KEY, "roles/kms.signerVerifier", "group:ops3", false).ok();
    let out = add_member(&ctl, "ops3", SA);
    out.ok();
    assert!(!out.stderr.contains("separation of duties"), "{out:#?}");
}

/// `iam sod-report` lists every principal holding both on a key, with its causes; it needs
/// resourcemanager.organizations.getIamPolicy on the organisation.
#[test]
fn sod_report_lists_violations_with_their_causes() {
    let ctl = world("warn");
    ctl.admin(&["group", "create", "inner"]).ok();
    bind(&ctl, RING, "roles/kms.admin", SA, false).ok();
    bind(&ctl, KEY, "roles/kms.signerVerifier", "group:ops3", false).ok();
    add_member(&ctl, "ops3", "group:inner").ok();
    add_member(&ctl, "inner", SA).ok();
    // One side only: not listed.
    bind(&ctl, KEY, "roles/kms.signer", "user:s@acme.example", false).ok();
    bind(&ctl, RING, "roles/kms.admin", "user:a@acme.example", false).ok();
    ctl.admin(&["iam", "map-uid", "5555", SA]).ok();
    let out = ctl.admin(&["--json", "iam", "sod-report", "--org", "acme"]);
    out.ok();
    let v = out.json();
    let rows = v["violations"].as_array().expect("violations");
    assert_eq!(rows.len(), 1, "{v:#}");
    let row = &rows[0];
    assert_eq!(row["member"], SA, "{v:#}");
    assert_eq!(row["resource"], KEY, "{v:#}");
    assert_eq!(row["mappedUids"][0], "unix-uid:5555", "{v:#}");
    let admin = row["administration"].to_string();
    let usage = row["use"].to_string();
    assert!(
        admin.contains("roles/kms.admin") && admin.contains(RING),
        "{v:#}"
    );
    assert!(
        usage.contains("roles/kms.signerVerifier")
            && usage.contains("group:ops3")
            && usage.contains("inner"),
        "the use side names the groups it came through: {v:#}"
    );
    // The text form names them too.
    let out = ctl.admin(&["iam", "sod-report", "--org", "acme"]);
    out.ok();
    assert!(
        out.stdout.contains(SA) && out.stdout.contains("group:ops3"),
        "{out:#?}"
    );
    // A key administrator without getIamPolicy on the organisation may not read it.
    let out = ctl.run_as(
        "user:a@acme.example",
        &["iam", "sod-report", "--org", "acme"],
    );
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("permission denied"), "{out:#?}");
}
