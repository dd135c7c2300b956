//! The admin handler end to end over a real SQLite store: inheritance, groups, org-scoped
//! keys, custom roles, unbinding, separation of duties, bootstrap, admin rights, and bad
//! input that must change nothing.

use keyward::admin::{AdminError, AdminService, Caller, Clock};
use keyward::policy::{Member, Principal};
use keyward::store::{keys, resources, Store};
use keyward_wire::admin::{AdminRequest as R, AdminResponse};
use std::sync::Arc;

struct FixedClock;
impl Clock for FixedClock {
    fn now_ms(&self) -> i64 {
        1_795_000_000_000
    }
}

struct World {
    svc: AdminService,
    _dir: tempfile::TempDir,
}

fn caller(m: &str) -> Caller {
    Caller::new(Principal::new(m.parse::<Member>().unwrap()))
}

const ADMIN: &str = "user:admin@acme.example";

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("keyward.db")).unwrap();
        let mut svc = AdminService::new(store, Arc::new(FixedClock));
        svc.handle(
            &caller("unix-uid:0"),
            R::Init {
                org: "acme".into(),
                admin: ADMIN.into(),
            },
        )
        .unwrap();
        World { svc, _dir: dir }
    }

    fn as_(&mut self, who: &str, req: R) -> Result<AdminResponse, AdminError> {
        self.svc.handle(&caller(who), req)
    }

    fn admin(&mut self, req: R) -> AdminResponse {
        let desc = format!("{req:?}");
        self.as_(ADMIN, req)
            .unwrap_or_else(|e| panic!("{desc}: {e}"))
    }

    fn bind(&mut self, resource: &str, role: &str, member: &str) -> AdminResponse {
        self.admin(R::IamBind {
            resource: resource.into(),
            role: role.into(),
            member: member.into(),
            allow_sod_violation: false,
        })
    }

    /// The permissions `member` holds on `resource` (names), via `iam test`.
    fn perms(&mut self, member: &str, resource: &str) -> Vec<String> {
        let r = self.admin(R::IamTest {
            member: member.into(),
            resource: resource.into(),
            permissions: vec![],
        });
        let v: serde_json::Value = serde_json::from_str(&r.json).unwrap();
        v["permissions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().into())
            .collect()
    }

    fn can(&mut self, member: &str, perm: &str, resource: &str) -> bool {
        self.perms(member, resource).iter().any(|p| p == perm)
    }

    /// A crypto key row (keys come with the token; here only the store row).
    fn key(&mut self, ring: &str, id: &str) -> String {
        let name: keyward::policy::ResourceName =
            format!("{ring}/cryptoKeys/{id}").parse().unwrap();
        let store = self.svc.store_mut();
        let tx = store.write().unwrap();
        let ring_row = resources::get(&tx, &ring.parse().unwrap())
            .unwrap()
            .unwrap();
        let kid = resources::insert(&tx, &name, Some(ring_row.id), 0).unwrap();
        keys::insert_key(
            &tx,
            kid,
            "ENCRYPT_DECRYPT",
            Some("AES_256_GCM"),
            false,
            ADMIN,
        )
        .unwrap();
        let v = keys::add_version(&tx, kid, keys::VersionState::Enabled, None, None, 0).unwrap();
        keys::set_primary(&tx, kid, v).unwrap();
        tx.commit().unwrap();
        name.to_string()
    }

    /// Everything but the audit log, as text, to prove a failed request changed nothing.
    fn dump(&mut self) -> String {
        let conn = self.svc.store_mut().connection();
        let mut out = String::new();
        for table in [
            "resources",
            "organizations",
            "key_rings",
            "crypto_keys",
            "key_versions",
            "custom_roles",
            "bindings",
            "groups",
            "group_members",
            "service_accounts",
            "sa_keys",
            "uid_mappings",
        ] {
            let mut stmt = conn
                .prepare(&format!("SELECT * FROM {table} ORDER BY 1, 2"))
                .unwrap();
            let n = stmt.column_count();
            let rows = stmt
                .query_map([], |r| {
                    let mut s = String::new();
                    for i in 0..n {
                        s.push_str(&format!("{:?}|", r.get_ref(i)?));
                    }
                    Ok(s)
                })
                .unwrap();
            for r in rows {
                out.push_str(&format!("{table}:{}\n", r.unwrap()));
            }
        }
        out
    }
}

/// org acme → folder eng → folder platform → project payments → ring web → key k1;
/// and an org-scoped ring root-ca with key ca.
fn hierarchy(w: &mut World) -> (String, String) {
    w.admin(R::FolderCreate {
        parent: "organizations/acme".into(),
        id: "eng".into(),
    });
    w.admin(R::FolderCreate {
        parent: "folders/eng".into(),
        id: "platform".into(),
    });
    w.admin(R::ProjectCreate {
        parent: "folders/platform".into(),
        id: "payments".into(),
    });
    w.admin(R::ProjectCreate {
        parent: "organizations/acme".into(),
        id: "other".into(),
    });
    w.admin(R::KeyRingCreate {
        parent: "projects/payments".into(),
        id: "web".into(),
        token_label: None,
    });
    w.admin(R::KeyRingCreate {
        parent: "projects/other".into(),
        id: "web".into(),
        token_label: None,
    });
    w.admin(R::KeyRingCreate {
        parent: "organizations/acme".into(),
        id: "root-ca".into(),
        token_label: None,
    });
    let k = w.key("projects/payments/keyRings/web", "k1");
    let ca = w.key("organizations/acme/keyRings/root-ca", "ca");
    w.key("projects/other/keyRings/web", "k1");
    (k, ca)
}

const DEC: &str = "kms.cryptoKeyVersions.useToDecrypt";

#[test]
fn inheritance_from_every_level() {
    let mut w = World::new();
    let (key, _) = hierarchy(&mut w);
    let other_key = "projects/other/keyRings/web/cryptoKeys/k1";
    let levels = [
        "organizations/acme",
        "folders/eng",
        "folders/platform",
        "projects/payments",
        "projects/payments/keyRings/web",
        key.as_str(),
    ];
    for (i, level) in levels.iter().enumerate() {
        let m = format!("user:u{i}@acme.example");
        assert!(!w.can(&m, DEC, &key), "{m} before binding");
        w.bind(level, "roles/kms.cryptoKeyDecrypter", &m);
        assert!(
            w.can(&m, DEC, &key),
            "binding on {level} must reach the key"
        );
        assert!(!w.can(&m, "kms.cryptoKeyVersions.useToEncrypt", &key));
        // A binding below the organisation does not leak to a sibling project.
        assert_eq!(
            w.can(&m, DEC, other_key),
            i == 0,
            "binding on {level} vs other project"
        );
        // Versions inherit from their key.
        assert!(w.can(&m, DEC, &format!("{key}/cryptoKeyVersions/1")));
    }
}

#[test]
fn nested_groups_and_unbinding() {
    let mut w = World::new();
    let (key, _) = hierarchy(&mut w);
    w.admin(R::GroupCreate {
        group: "outer".into(),
    });
    w.admin(R::GroupCreate {
        group: "inner".into(),
    });
    w.admin(R::GroupAddMember {
        group: "outer".into(),
        member: "group:inner".into(),
        allow_sod_violation: false,
    });
    w.admin(R::GroupAddMember {
        group: "inner".into(),
        member: "user:carol@acme.example".into(),
        allow_sod_violation: false,
    });
    // A cycle is refused.
    let e = w
        .as_(
            ADMIN,
            R::GroupAddMember {
                group: "inner".into(),
                member: "group:outer".into(),
                allow_sod_violation: false,
            },
        )
        .unwrap_err();
    assert!(e.message.contains("cycle"), "{e}");
    w.bind(
        "projects/payments",
        "roles/kms.cryptoKeyDecrypter",
        "group:outer",
    );
    assert!(w.can("user:carol@acme.example", DEC, &key));
    // who-can names carol through both groups.
    let r = w.admin(R::IamWhoCan {
        resource: key.clone(),
        permission: DEC.into(),
    });
    let v: serde_json::Value = serde_json::from_str(&r.json).unwrap();
    let carol = v["principals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["member"] == "user:carol@acme.example")
        .expect("carol listed");
    assert_eq!(carol["viaGroups"], serde_json::json!(["outer", "inner"]));
    // Removing her from the inner group takes effect on the next request.
    w.admin(R::GroupRemoveMember {
        group: "inner".into(),
        member: "user:carol@acme.example".into(),
    });
    assert!(!w.can("user:carol@acme.example", DEC, &key));
    w.admin(R::GroupAddMember {
        group: "inner".into(),
        member: "user:carol@acme.example".into(),
        allow_sod_violation: false,
    });
    assert!(w.can("user:carol@acme.example", DEC, &key));
    // Unbinding takes effect in the next snapshot.
    w.admin(R::IamUnbind {
        resource: "projects/payments".into(),
        role: "roles/kms.cryptoKeyDecrypter".into(),
        member: "group:outer".into(),
    });
    assert!(!w.can("user:carol@acme.example", DEC, &key));
}

#[test]
fn org_scoped_keys_inherit_from_the_org_only() {
    let mut w = World::new();
    let (project_key, ca) = hierarchy(&mut w);
    let sign = "kms.cryptoKeyVersions.useToSign";
    w.bind(
        "organizations/acme/keyRings/root-ca",
        "roles/kms.signer",
        "user:ca@acme.example",
    );
    assert!(w.can("user:ca@acme.example", sign, &ca));
    assert!(!w.can("user:ca@acme.example", sign, &project_key));
    w.bind(
        "projects/payments",
        "roles/kms.signer",
        "user:p@acme.example",
    );
    assert!(
        !w.can("user:p@acme.example", sign, &ca),
        "a project binding reaches no org-scoped key"
    );
    w.bind(
        "organizations/acme",
        "roles/kms.signer",
        "user:o@acme.example",
    );
    assert!(w.can("user:o@acme.example", sign, &ca));
}

#[test]
fn custom_roles_from_permissions_and_thalassa_verbs() {
    let mut w = World::new();
    let (key, _) = hierarchy(&mut w);
    w.admin(R::RoleCreate {
        org: "acme".into(),
        id: "appCrypto".into(),
        title: Some("app".into()),
        permissions: vec!["read,list".into(), "update".into()],
    });
    w.admin(R::RoleCreate {
        org: "organizations/acme".into(),
        id: "decryptOnly".into(),
        title: None,
        permissions: vec![DEC.into()],
    });
    w.bind(
        &key,
        "organizations/acme/roles/appCrypto",
        "serviceAccount:none@payments"
            .replace("serviceAccount:none@payments", "user:app@acme.example")
            .as_str(),
    );
    let p = w.perms("user:app@acme.example", &key);
    for want in [
        DEC,
        "kms.cryptoKeyVersions.useToEncrypt",
        "kms.cryptoKeyVersions.useToSign",
        "kms.cryptoKeys.get",
        "kms.cryptoKeys.list",
        "kms.cryptoKeyVersions.create",
    ] {
        assert!(p.iter().any(|x| x == want), "missing {want} in {p:?}");
    }
    for not in [
        "kms.cryptoKeyVersions.exportKeyMaterial",
        "kms.cryptoKeyVersions.destroy",
        "kms.cryptoKeys.create",
    ] {
        assert!(
            !p.iter().any(|x| x == not),
            "{not} must not come with update"
        );
    }
    w.bind(
        &key,
        "organizations/acme/roles/decryptOnly",
        "user:d@acme.example",
    );
    assert_eq!(w.perms("user:d@acme.example", &key), vec![DEC.to_string()]);
    // A bound role cannot be deleted; unbound it can.
    let e = w.as_(
        ADMIN,
        R::RoleDelete {
            name: "organizations/acme/roles/decryptOnly".into(),
        },
    );
    assert!(e.unwrap_err().message.contains("used by 1 binding"));
    w.admin(R::IamUnbind {
        resource: key.clone(),
        role: "organizations/acme/roles/decryptOnly".into(),
        member: "user:d@acme.example".into(),
    });
    w.admin(R::RoleDelete {
        name: "organizations/acme/roles/decryptOnly".into(),
    });
}

#[test]
fn separation_of_duties_warn_and_enforce() {
    let mut w = World::new();
    let (key, _) = hierarchy(&mut w);
    let m = "user:both@acme.example";
    w.bind(&key, "roles/kms.admin", m);
    // Default warn: the binding is made, with a warning and an audit record.
    let r = w.bind(&key, "roles/kms.cryptoKeyDecrypter", m);
    assert_eq!(r.warnings.len(), 1, "{r:?}");
    assert!(r.warnings[0].contains("separation of duties"));
    assert!(w.can(m, DEC, &key));
    let q = w.admin(R::AuditQuery {
        filter: keyward_wire::admin::AuditFilter {
            action: Some("iam.bind.sodViolation".into()),
            ..Default::default()
        },
    });
    assert_eq!(q.table.unwrap().rows.len(), 1);
    // Enforce: refused, nothing changes; with the override it goes through.
    w.admin(R::OrgSetSod {
        name: "acme".into(),
        mode: "enforce".into(),
    });
    let m2 = "user:other@acme.example";
    w.bind("projects/payments", "roles/kms.cryptoKeyEncrypter", m2);
    let before = w.dump();
    let e = w
        .as_(
            ADMIN,
            R::IamBind {
                resource: key.clone(),
                role: "roles/kms.admin".into(),
                member: m2.into(),
                allow_sod_violation: false,
            },
        )
        .unwrap_err();
    assert!(e.message.contains("enforces separation of duties"), "{e}");
    assert_eq!(before, w.dump());
    let r = w.admin(R::IamBind {
        resource: key.clone(),
        role: "roles/kms.admin".into(),
        member: m2.into(),
        allow_sod_violation: true,
    });
    assert_eq!(r.warnings.len(), 1);
    // Off: no warning.
    w.admin(R::OrgSetSod {
        name: "acme".into(),
        mode: "off".into(),
    });
    let r = w.bind(
        &key,
        "roles/kms.cryptoKeyDecrypter",
        "user:third@acme.example",
    );
    assert!(r.warnings.is_empty());
    let r = w.bind(&key, "roles/kms.admin", "user:third@acme.example");
    assert!(r.warnings.is_empty());
}

#[test]
fn bootstrap_makes_only_the_named_admin_special() {
    let mut w = World::new();
    // init works once.
    let e = w
        .as_(
            ADMIN,
            R::Init {
                org: "second".into(),
                admin: ADMIN.into(),
            },
        )
        .unwrap_err();
    assert!(e.message.contains("already initialised"), "{e}");
    // root (uid 0) is nobody special.
    let e = w
        .as_(
            "unix-uid:0",
            R::ProjectCreate {
                parent: "organizations/acme".into(),
                id: "x".into(),
            },
        )
        .unwrap_err();
    assert!(e.message.contains("permission denied"), "{e}");
    assert!(w.can(
        ADMIN,
        "resourcemanager.projects.create",
        "organizations/acme"
    ));
    assert!(
        !w.can(ADMIN, DEC, "organizations/acme"),
        "the org admin has no crypto use"
    );
}

#[test]
fn admin_rights_are_checked_for_real() {
    let mut w = World::new();
    hierarchy(&mut w);
    let viewer = "user:viewer@acme.example";
    w.bind("organizations/acme", "roles/kms.viewer", viewer);
    let before = w.dump();
    let denied: Vec<R> = vec![
        R::ProjectCreate {
            parent: "organizations/acme".into(),
            id: "p2".into(),
        },
        R::FolderCreate {
            parent: "organizations/acme".into(),
            id: "f2".into(),
        },
        R::KeyRingCreate {
            parent: "projects/payments".into(),
            id: "r2".into(),
            token_label: None,
        },
        R::KeyRingUpdate {
            name: "projects/payments/keyRings/web".into(),
            allow_plaintext_import: Some(true),
            strict_templates: None,
            token_label: None,
        },
        R::IamBind {
            resource: "projects/payments".into(),
            role: "roles/kms.admin".into(),
            member: viewer.into(),
            allow_sod_violation: false,
        },
        R::GroupCreate { group: "g".into() },
        R::SaCreate {
            project: "payments".into(),
            id: "web".into(),
            display_name: None,
        },
        R::IamMapUid {
            uid: 1000,
            member: viewer.into(),
            allow_sod_violation: false,
        },
        R::AuditTail { count: 5 },
        R::OrgSetSod {
            name: "acme".into(),
            mode: "off".into(),
        },
        R::RoleCreate {
            org: "acme".into(),
            id: "mine".into(),
            title: None,
            permissions: vec!["read".into()],
        },
        R::IamWhoCan {
            resource: "projects/payments".into(),
            permission: DEC.into(),
        },
    ];
    for req in denied {
        let desc = format!("{req:?}");
        let e = w.as_(viewer, req).expect_err(&desc);
        assert!(e.message.contains("permission denied"), "{desc}: {e}");
        assert_eq!(e.rv, 0x1B, "{desc}: CKR_ACTION_PROHIBITED");
    }
    assert_eq!(before, w.dump(), "denied requests changed the store");
    // Every denial is in the audit log.
    let q = w.admin(R::AuditQuery {
        filter: keyward_wire::admin::AuditFilter {
            principal: Some(viewer.into()),
            result: Some("denied".into()),
            ..Default::default()
        },
    });
    assert_eq!(q.table.unwrap().rows.len(), 12);
    // What the viewer may do, it can.
    w.as_(
        viewer,
        R::KeyRingGet {
            name: "projects/payments/keyRings/web".into(),
        },
    )
    .unwrap();
}

#[test]
fn bad_input_gives_clear_errors_and_changes_nothing() {
    let mut w = World::new();
    let (key, _) = hierarchy(&mut w);
    w.admin(R::SaCreate {
        project: "payments".into(),
        id: "web".into(),
        display_name: None,
    });
    w.admin(R::GroupCreate {
        group: "ops".into(),
    });
    let cases: Vec<(R, &str)> = vec![
        (
            R::FolderCreate {
                parent: "organizations/acme".into(),
                id: "bad id".into(),
            },
            "invalid folder id",
        ),
        (
            R::FolderCreate {
                parent: "projects/payments".into(),
                id: "x".into(),
            },
            "parent is an organisation or a folder",
        ),
        (
            R::ProjectCreate {
                parent: "organizations/nope".into(),
                id: "x".into(),
            },
            "does not exist",
        ),
        (
            R::ProjectCreate {
                parent: "organizations/acme".into(),
                id: "payments".into(),
            },
            "never reused",
        ),
        (
            R::ProjectCreate {
                parent: "organizations/acme".into(),
                id: "eng".into(),
            },
            "never reused",
        ),
        (
            R::KeyRingCreate {
                parent: "projects/payments".into(),
                id: "web".into(),
                token_label: None,
            },
            "already exists",
        ),
        (
            R::KeyRingCreate {
                parent: "folders/eng".into(),
                id: "r".into(),
                token_label: None,
            },
            "parent is a project or an organisation",
        ),
        (
            R::KeyRingCreate {
                parent: "projects/payments".into(),
                id: "a".repeat(40),
                token_label: None,
            },
            "--token-label",
        ),
        (
            R::KeyRingCreate {
                parent: "projects/payments".into(),
                id: "r".into(),
                token_label: Some("x".repeat(33)),
            },
            "1 to 32 bytes",
        ),
        (
            R::KeyRingCreate {
                parent: "projects/payments".into(),
                id: "r".into(),
                token_label: Some(" pad".into()),
            },
            "spaces",
        ),
        (
            R::KeyRingDelete {
                name: "projects/payments/keyRings/web".into(),
            },
            "deleted only when empty",
        ),
        (
            R::ProjectDelete {
                name: "payments".into(),
            },
            "not empty",
        ),
        (
            R::KeyRingUpdate {
                name: "projects/payments/keyRings/web".into(),
                allow_plaintext_import: None,
                strict_templates: None,
                token_label: None,
            },
            "nothing to update",
        ),
        (
            R::IamBind {
                resource: format!("{key}/cryptoKeyVersions/1"),
                role: "roles/kms.signer".into(),
                member: "user:a@b.c".into(),
                allow_sod_violation: false,
            },
            "never to versions",
        ),
        (
            R::IamBind {
                resource: key.clone(),
                role: "roles/kms.wizard".into(),
                member: "user:a@b.c".into(),
                allow_sod_violation: false,
            },
            "unknown role",
        ),
        (
            R::IamBind {
                resource: key.clone(),
                role: "roles/kms.signer".into(),
                member: "alice".into(),
                allow_sod_violation: false,
            },
            "invalid member",
        ),
        (
            R::IamBind {
                resource: key.clone(),
                role: "roles/kms.signer".into(),
                member: "anonymous".into(),
                allow_sod_violation: false,
            },
            "cannot be bound",
        ),
        (
            R::IamBind {
                resource: key.clone(),
                role: "roles/kms.signer".into(),
                member: "serviceAccount:ghost@payments".into(),
                allow_sod_violation: false,
            },
            "does not exist",
        ),
        (
            R::IamBind {
                resource: key.clone(),
                role: "roles/kms.signer".into(),
                member: "group:ghosts".into(),
                allow_sod_violation: false,
            },
            "does not exist",
        ),
        (
            R::IamBind {
                resource: "projects/payments/keys/x".into(),
                role: "roles/kms.signer".into(),
                member: "user:a@b.c".into(),
                allow_sod_violation: false,
            },
            "invalid resource name",
        ),
        (
            R::IamUnbind {
                resource: key.clone(),
                role: "roles/kms.signer".into(),
                member: "user:a@b.c".into(),
            },
            "no binding",
        ),
        (
            R::IamTest {
                member: "user:a@b.c".into(),
                resource: key.clone(),
                permissions: vec!["kms.nope".into()],
            },
            "unknown permission",
        ),
        (
            R::IamWhoCan {
                resource: key.clone(),
                permission: "useToDecrypt".into(),
            },
            "unknown permission",
        ),
        (
            R::RoleCreate {
                org: "acme".into(),
                id: "r".into(),
                title: None,
                permissions: vec!["read".into()],
            },
            "invalid role id",
        ),
        (
            R::RoleCreate {
                org: "acme".into(),
                id: "role1".into(),
                title: None,
                permissions: vec!["publish".into()],
            },
            "Thalassa verbs",
        ),
        (
            R::RoleDelete {
                name: "roles/kms.admin".into(),
            },
            "predefined roles cannot be deleted",
        ),
        (
            R::GroupCreate {
                group: "ops".into(),
            },
            "already exists",
        ),
        (
            R::GroupCreate {
                group: "bad group".into(),
            },
            "invalid group",
        ),
        (
            R::GroupAddMember {
                group: "nope".into(),
                member: "user:a@b.c".into(),
                allow_sod_violation: false,
            },
            "does not exist",
        ),
        (
            R::GroupRemoveMember {
                group: "ops".into(),
                member: "user:a@b.c".into(),
            },
            "not a member",
        ),
        (
            R::SaCreate {
                project: "payments".into(),
                id: "web".into(),
                display_name: None,
            },
            "never reused",
        ),
        (
            R::SaCreate {
                project: "payments".into(),
                id: "Web".into(),
                display_name: None,
            },
            "invalid service account id",
        ),
        (
            R::SaKeyRevoke {
                account: "web@payments".into(),
                key_id: "zzzzzz".into(),
            },
            "no live key",
        ),
        (
            R::IamMapUid {
                uid: 5,
                member: "group:ops".into(),
                allow_sod_violation: false,
            },
            "maps to a user: or serviceAccount:",
        ),
        (R::IamUnmapUid { uid: 5 }, "no mapping"),
        (
            R::OrgSetSod {
                name: "acme".into(),
                mode: "sometimes".into(),
            },
            "off, warn or enforce",
        ),
        (R::OrgCreate { org: "acme".into() }, "never reused"),
        (
            R::AuditQuery {
                filter: keyward_wire::admin::AuditFilter {
                    result: Some("maybe".into()),
                    ..Default::default()
                },
            },
            "allowed, denied or error",
        ),
    ];
    let before = w.dump();
    for (req, want) in cases {
        let desc = format!("{req:?}");
        let e = w.as_(ADMIN, req).expect_err(&desc);
        assert!(e.message.contains(want), "{desc}: '{e}' lacks '{want}'");
        assert_eq!(before, w.dump(), "{desc} changed the store");
    }
}

#[test]
fn service_account_keys_authenticate_until_revoked() {
    let mut w = World::new();
    hierarchy(&mut w);
    w.admin(R::SaCreate {
        project: "payments".into(),
        id: "web".into(),
        display_name: None,
    });
    let r = w.admin(R::SaKeyCreate {
        account: "web@payments".into(),
    });
    let key = r.secret.expect("shown once");
    assert_eq!(key.len(), 31);
    let conn = w.svc.store_mut().connection();
    assert_eq!(
        keyward::admin::credentials::authenticate(conn, &key)
            .unwrap()
            .as_deref(),
        Some("web@payments")
    );
    // The secret is not stored anywhere in the database.
    let n: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sa_keys WHERE instr(CAST(mac AS TEXT), ?1) > 0",
            [&key[9..]],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 0);
    let mut wrong = key.clone();
    wrong.replace_range(30..31, if key.ends_with('A') { "B" } else { "A" });
    assert_eq!(
        keyward::admin::credentials::authenticate(conn, &wrong).unwrap(),
        None
    );
    let key_id = key[2..8].to_string();
    w.admin(R::SaKeyRevoke {
        account: "serviceAccount:web@payments".into(),
        key_id,
    });
    let conn = w.svc.store_mut().connection();
    assert_eq!(
        keyward::admin::credentials::authenticate(conn, &key).unwrap(),
        None
    );
}

#[test]
fn the_published_state_follows_every_change() {
    let mut w = World::new();
    w.svc.refresh().unwrap();
    let published = w.svc.published();
    assert!(published.current().catalog.rings.is_empty());
    hierarchy(&mut w);
    let state = published.current();
    assert_eq!(
        state.catalog.rings.len(),
        3,
        "rings created through the handler show at once"
    );
    let viewer = Principal::new("user:late@acme.example".parse().unwrap());
    let ring: keyward::policy::KeyRingName = match "projects/payments/keyRings/web".parse().unwrap()
    {
        keyward::policy::ResourceName::KeyRing(r) => r,
        _ => unreachable!(),
    };
    assert!(!state.policy.sees_key_ring(&viewer, &ring));
    w.bind(
        "projects/payments/keyRings/web",
        "roles/kms.viewer",
        "user:late@acme.example",
    );
    assert!(
        published.current().policy.sees_key_ring(&viewer, &ring),
        "a binding applies to the next call"
    );
    assert!(
        !state.policy.sees_key_ring(&viewer, &ring),
        "a state already taken does not change"
    );
}
