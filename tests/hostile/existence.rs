//! Attacks: existence (design §9). Every answer, on every socket and in every error text, is
//! the same for "does not exist" and "exists but you may not know it"; for keys and rings
//! §4's visibility decides, on the admin socket too. Certificate values are public values:
//! gated like public keys.

use crate::common::daemon::Env;
use crate::common::Output;
use keyward::admin::{AdminError, AdminService, Caller, Clock};
use keyward::policy::{Member, Principal};
use keyward::store::{iam as siam, keys, resources, Store};
use keyward_wire::admin::{AdminRequest as R, AdminResponse, AuditFilter};
use std::sync::Arc;

const RING: &str = "projects/payments/keyRings/web";

fn key(id: &str) -> String {
    format!("{RING}/cryptoKeys/{id}")
}

/// The denied records of `action` naming `resource`, read as the admin (the audit thread
/// writes within its batching window: bounded retries).
fn denied_records(env: &Env, action: &str, resource: &str) -> Vec<serde_json::Value> {
    let mut last = Vec::new();
    for _ in 0..50 {
        let log = env.ctl(&["--json", "audit", "query", "--result", "denied"]);
        log.ok();
        last = log
            .json_lines()
            .into_iter()
            .filter(|r| r["action"] == action && r["resource"] == resource)
            .collect();
        if !last.is_empty() {
            return last;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    last
}

/// stderr with `name` replaced by `NAME`.
fn text(out: &Output, name: &str) -> String {
    out.stderr.replace(name, "NAME")
}

/// Finding 8: on the client socket's crypto path an absent key takes the same visibility
/// check as an invisible one and leaves the same denial record; the answers are identical.
/// Finding 12: a viewer (kms.cryptoKeys.get, no viewPublicKey, no use) does not get a
/// certificate's value (the public key it carries) through `key cert get`/`list`.
#[test]
fn absent_and_invisible_keys_answer_and_audit_alike_and_cert_values_are_gated() {
    let mut env = Env::new();
    let prober = env.service_account_offline("prober");
    let viewer = env.service_account_offline("viewer");
    let signer = env.service_account_offline("certsigner");
    let peeker = env.service_account_offline("peeker");
    env.start();
    env.web_ring();
    env.create_keys(
        RING,
        &[
            ("aes", "ENCRYPT_DECRYPT", "AES_256_GCM"),
            ("own", "ENCRYPT_DECRYPT", "AES_256_GCM"),
            ("ec", "ASYMMETRIC_SIGN", "EC_SIGN_P256_SHA256"),
        ],
    );
    // The prober sees exactly one key of the ring (design §4).
    env.bind(
        &key("own"),
        "roles/kms.cryptoKeyEncrypterDecrypter",
        "serviceAccount:prober@payments",
    );
    env.bind(RING, "roles/kms.viewer", "serviceAccount:viewer@payments");
    env.bind(
        &key("ec"),
        "roles/kms.signerVerifier",
        "serviceAccount:certsigner@payments",
    );
    env.bind(
        &key("ec"),
        "roles/kms.admin",
        "serviceAccount:certsigner@payments",
    );

    // Finding 8: encrypt with an invisible key ("aes") and with an absent one ("abx").
    let input = env.dir().join("plain");
    std::fs::write(&input, b"probe").unwrap();
    let input = input.to_str().unwrap();
    let invisible =
        env.ctl_client_with_key(&prober, &["encrypt", "--key", &key("aes"), "--in", input]);
    let absent =
        env.ctl_client_with_key(&prober, &["encrypt", "--key", &key("abx"), "--in", input]);
    assert_eq!(invisible.code, 1, "{invisible:#?}");
    assert_eq!(
        (absent.code, text(&absent, &key("abx"))),
        (invisible.code, text(&invisible, &key("aes"))),
        "absent and invisible keys answer differently on the client socket"
    );
    let inv = denied_records(&env, "key.encrypt", &key("aes"));
    let abs = denied_records(&env, "key.encrypt", &key("abx"));
    assert_eq!(
        inv.len(),
        1,
        "one denial record for the invisible key: {inv:#?}"
    );
    assert_eq!(
        abs.len(),
        1,
        "an absent-key probe leaves no denial record (the invisible one does: {inv:#?})"
    );
    for f in ["principal", "rv", "detail", "result"] {
        assert_eq!(abs[0][f], inv[0][f], "field {f}: {abs:#?} vs {inv:#?}");
    }

    // The admin socket, through keywardctl: the same exit code and text for both, for the
    // prober and for a holder of an unrelated permission on the project (finding 4).
    env.ctl(&[
        "role",
        "create",
        "--org",
        "acme",
        "peek",
        "--permissions",
        "resourcemanager.projects.get",
    ])
    .ok();
    env.bind(
        "projects/payments",
        "organizations/acme/roles/peek",
        "serviceAccount:peeker@payments",
    );
    for args in [
        &["key", "get"][..],
        &["key", "get-public-key"][..],
        &["version", "list"][..],
    ] {
        for who in [&prober, &peeker] {
            let run = |k: &str| {
                let mut a = args.to_vec();
                a.push(k);
                env.ctl_with_key(who, &a)
            };
            let (i, a) = (run(&key("aes")), run(&key("abx")));
            assert_ne!(i.code, 0, "{i:#?}");
            assert_eq!(
                (a.code, text(&a, &key("abx"))),
                (i.code, text(&i, &key("aes"))),
                "{args:?}: absent and invisible keys answer differently on the admin socket"
            );
        }
    }

    // Finding 12: a certificate attached to "ec" by its signer/admin.
    let cert = env.dir().join("ec.pem");
    env.ctl_client_with_key(
        &signer,
        &[
            "key",
            "cert",
            "create",
            "--key",
            &key("ec"),
            "--self-signed",
            "--subject",
            "CN=ec",
            "--out",
            cert.to_str().unwrap(),
        ],
    )
    .ok();
    // The signer reads it back.
    let got = env.ctl_with_key(&signer, &["key", "cert", "get", "--key", &key("ec")]);
    got.ok();
    assert!(got.stdout.contains("BEGIN CERTIFICATE"), "{got:#?}");
    // The viewer may not read the public key ...
    env.ctl_with_key(&viewer, &["key", "get-public-key", &key("ec")])
        .failed();
    // ... so neither the certificate that carries it.
    let got = env.ctl_with_key(&viewer, &["key", "cert", "get", "--key", &key("ec")]);
    assert!(
        !got.stdout.contains("BEGIN CERTIFICATE") && got.code != 0,
        "a viewer without viewPublicKey reads the certificate (its public key) through `key \
         cert get`: {got:#?}"
    );
    let list = env.ctl_with_key(
        &viewer,
        &["--json", "key", "cert", "list", "--key", &key("ec")],
    );
    list.ok();
    assert!(
        !list.stdout.contains("BEGIN CERTIFICATE") && list.json()[0]["pem"].is_null(),
        "`key cert list` gives the viewer the certificate: {list:#?}"
    );
    assert_eq!(list.json().as_array().map(Vec::len), Some(1), "{list:#?}");
}

// ---------------------------------------------------------------------------------------
// Finding 4: the admin handler (the admin socket's and `keywardctl --db`'s), in-process.

struct FixedClock;
impl Clock for FixedClock {
    fn now_ms(&self) -> i64 {
        1_795_000_000_000
    }
}

const ACME_ADMIN: &str = "user:admin@acme.example";
/// The admin of another organisation.
const MALLORY: &str = "user:mallory@evil.example";
/// Holds only a custom role with `resourcemanager.projects.get` on `projects/payments`.
const PEEKER: &str = "user:peeker@acme.example";
/// Holds only `roles/kms.signerVerifier` on one key of the ring (sees exactly that key).
const SIGNER: &str = "user:signer@acme.example";
/// Holds `roles/kms.viewer` on the ring (sees every key in it): a positive control.
const VIEWER: &str = "user:viewer@acme.example";
/// A uid mapped to the acme admin.
const MAPPED_UID: u32 = 4242;

fn as_caller(m: &str) -> Caller {
    Caller::new(Principal::new(m.parse::<Member>().unwrap()))
}

/// The ids a probe names; [`Names::existing`] are real (and invisible to the attackers),
/// each `nx*` one is absent.
#[derive(Clone)]
struct Names {
    org: &'static str,
    folder: &'static str,
    project: &'static str,
    ring: &'static str,
    key: &'static str,
    role: &'static str,
    sa: &'static str,
    group: &'static str,
    uid: u32,
}

impl Names {
    fn existing() -> Names {
        Names {
            org: "acme",
            folder: "eng",
            project: "payments",
            ring: "web",
            key: "aes",
            role: "custom1",
            sa: "websa",
            group: "ops",
            uid: MAPPED_UID,
        }
    }

    /// The existing names with one dimension absent.
    fn absent(dim: &str) -> Names {
        let mut n = Names::existing();
        match dim {
            "org" => n.org = "nxorg",
            "folder" => n.folder = "nxfld",
            "project" => n.project = "nxprj",
            "ring" => n.ring = "nxrng",
            "key" => n.key = "nxkey",
            "role" => n.role = "nxrole",
            "sa" => n.sa = "nxsa",
            "group" => n.group = "nxgrp",
            "uid" => n.uid = 4343,
            other => panic!("no dimension {other}"),
        }
        n
    }

    /// An absent answer's text with the absent id replaced by the existing one.
    fn unify(&self, text: &str) -> String {
        let e = Names::existing();
        let mut t = text.to_string();
        for (a, b) in [
            (self.org, e.org),
            (self.folder, e.folder),
            (self.project, e.project),
            (self.ring, e.ring),
            (self.key, e.key),
            (self.role, e.role),
            (self.sa, e.sa),
            (self.group, e.group),
        ] {
            if a != b {
                t = t.replace(a, b);
            }
        }
        if self.uid != e.uid {
            t = t.replace(&self.uid.to_string(), &e.uid.to_string());
        }
        t
    }

    fn org_name(&self) -> String {
        format!("organizations/{}", self.org)
    }
    fn project_name(&self) -> String {
        format!("projects/{}", self.project)
    }
    fn ring_name(&self) -> String {
        format!("projects/{}/keyRings/{}", self.project, self.ring)
    }
    fn key_name(&self) -> String {
        format!("{}/cryptoKeys/{}", self.ring_name(), self.key)
    }
    fn role_name(&self) -> String {
        format!("organizations/{}/roles/{}", self.org, self.role)
    }
    fn sa_email(&self) -> String {
        format!("{}@{}", self.sa, self.project)
    }
}

/// How the existence rule applies to a request (design §9). The match has no `_` arm: a new
/// request does not compile here until it is classified (and, if it names a resource, probed
/// in [`probes`]).
#[derive(Debug, PartialEq, Eq)]
enum Class {
    /// Reads, changes or deletes a named resource (or names one as parent, role or member):
    /// absent and invisible answer alike.
    Named,
    /// Store-wide (groups, uid mappings, the audit log): refused unless the caller holds the
    /// permission on every organisation; the refusal names no organisation.
    StoreWide,
    /// Creates an object whose id is global: a taken id is necessarily revealed (README,
    /// Threat model, Existence); the rest of the request is `Named`.
    CreateGlobalId,
    /// Names no resource (lists are filtered; `init` works on an empty store only).
    Unnamed,
}

fn class(r: &R) -> Class {
    use Class::*;
    match r {
        R::Init { .. } | R::OrgList | R::RoleList | R::Status | R::TokenCapabilities => Unnamed,
        R::OrgCreate { .. } => CreateGlobalId,
        R::OrgGet { .. } | R::OrgDelete { .. } | R::OrgSetSod { .. } => Named,
        R::FolderCreate { .. } | R::ProjectCreate { .. } | R::KeyRingCreate { .. } => {
            CreateGlobalId
        }
        R::FolderList { .. } | R::FolderGet { .. } | R::FolderDelete { .. } => Named,
        R::ProjectList { .. } | R::ProjectGet { .. } | R::ProjectDelete { .. } => Named,
        R::KeyRingList { .. }
        | R::KeyRingGet { .. }
        | R::KeyRingDelete { .. }
        | R::KeyRingUpdate { .. } => Named,
        R::RoleDescribe { .. }
        | R::RoleCreate { .. }
        | R::RoleUpdate { .. }
        | R::RoleDelete { .. } => Named,
        R::IamSodReport { .. } => Named,
        R::IamBind { .. }
        | R::IamUnbind { .. }
        | R::IamPolicy { .. }
        | R::IamTest { .. }
        | R::IamExplain { .. }
        | R::IamWhoCan { .. } => Named,
        R::IamMapUid { .. } | R::IamUnmapUid { .. } | R::IamListMappings => StoreWide,
        R::GroupCreate { .. } => StoreWide,
        R::GroupList
        | R::GroupGet { .. }
        | R::GroupDelete { .. }
        | R::GroupAddMember { .. }
        | R::GroupRemoveMember { .. } => StoreWide,
        R::SaCreate { .. }
        | R::SaList { .. }
        | R::SaDelete { .. }
        | R::SaKeyCreate { .. }
        | R::SaKeyList { .. }
        | R::SaKeyRevoke { .. } => Named,
        R::KeyCreate { .. }
        | R::KeyList { .. }
        | R::KeyGet { .. }
        | R::KeyRotate { .. }
        | R::KeySetPrimary { .. }
        | R::KeyGetPublicKey { .. }
        | R::VersionList { .. }
        | R::VersionGet { .. }
        | R::VersionEnable { .. }
        | R::VersionDisable { .. }
        | R::VersionDestroy { .. }
        | R::VersionRestore { .. } => Named,
        R::ImportJobCreate { .. } | R::ImportJobGet { .. } | R::ImportJobList { .. } => Named,
        R::KeyImport { .. } => Named,
        R::AuditTail { .. } | R::AuditQuery { .. } | R::AuditVerify => StoreWide,
        R::KeyCertImport { .. } | R::KeyCertList { .. } => Named,
    }
}

/// Every request naming a resource, with the names `n`, and who sends it: the attackers
/// hold nothing that lets them see the existing resources named.
fn probes(n: &Names) -> Vec<(&'static str, R)> {
    let org = n.org_name();
    let folder = format!("folders/{}", n.folder);
    let project = n.project_name();
    let ring = n.ring_name();
    let key = n.key_name();
    let v1 = format!("{key}/cryptoKeyVersions/1");
    let job = format!("{ring}/importJobs/job1");
    let sa = n.sa_email();
    let evil = "organizations/evil".to_string();
    let mut out: Vec<(&'static str, R)> = Vec::new();
    // Containers, roles, service accounts: the admin of another organisation.
    {
        let who = MALLORY;
        out.extend([
            (who, R::OrgGet { name: org.clone() }),
            (who, R::OrgDelete { name: org.clone() }),
            (
                who,
                R::OrgSetSod {
                    name: org.clone(),
                    mode: "warn".into(),
                },
            ),
            (
                who,
                R::FolderCreate {
                    parent: org.clone(),
                    id: "newfolder".into(),
                },
            ),
            (
                who,
                R::FolderCreate {
                    parent: folder.clone(),
                    id: "newfolder".into(),
                },
            ),
            (
                who,
                R::FolderList {
                    parent: Some(org.clone()),
                },
            ),
            (
                who,
                R::FolderList {
                    parent: Some(folder.clone()),
                },
            ),
            (
                who,
                R::FolderGet {
                    name: folder.clone(),
                },
            ),
            (
                who,
                R::FolderDelete {
                    name: folder.clone(),
                },
            ),
            (
                who,
                R::ProjectCreate {
                    parent: org.clone(),
                    id: "newproject".into(),
                },
            ),
            (
                who,
                R::ProjectCreate {
                    parent: folder.clone(),
                    id: "newproject".into(),
                },
            ),
            (
                who,
                R::ProjectList {
                    parent: Some(org.clone()),
                },
            ),
            (
                who,
                R::ProjectList {
                    parent: Some(folder.clone()),
                },
            ),
            (
                who,
                R::ProjectGet {
                    name: project.clone(),
                },
            ),
            (
                who,
                R::ProjectDelete {
                    name: project.clone(),
                },
            ),
            (
                who,
                R::KeyRingCreate {
                    parent: project.clone(),
                    id: "newring".into(),
                    token_label: None,
                },
            ),
            (
                who,
                R::KeyRingCreate {
                    parent: org.clone(),
                    id: "newring".into(),
                    token_label: None,
                },
            ),
            (
                who,
                R::KeyRingList {
                    parent: Some(project.clone()),
                },
            ),
            (
                who,
                R::RoleDescribe {
                    name: n.role_name(),
                },
            ),
            (
                who,
                R::RoleDelete {
                    name: n.role_name(),
                },
            ),
            (
                who,
                R::RoleUpdate {
                    name: n.role_name(),
                    title: None,
                    permissions: vec!["kms.cryptoKeys.get".into()],
                    allow_sod_violation: false,
                },
            ),
            (who, R::IamSodReport { org: org.clone() }),
            (
                who,
                R::RoleCreate {
                    org: org.clone(),
                    id: "newrole".into(),
                    title: None,
                    permissions: vec!["kms.cryptoKeys.get".into()],
                },
            ),
            // A role of another organisation, bound on one's own organisation.
            (
                who,
                R::IamBind {
                    resource: evil.clone(),
                    role: n.role_name(),
                    member: "user:x@evil.example".into(),
                    allow_sod_violation: false,
                },
            ),
            // A service account or group of another organisation as a member.
            (
                who,
                R::IamBind {
                    resource: evil.clone(),
                    role: "roles/kms.viewer".into(),
                    member: format!("serviceAccount:{sa}"),
                    allow_sod_violation: false,
                },
            ),
            (
                who,
                R::IamBind {
                    resource: evil.clone(),
                    role: "roles/kms.viewer".into(),
                    member: format!("group:{}", n.group),
                    allow_sod_violation: false,
                },
            ),
            // A mapped uid as the member asked about.
            (
                who,
                R::IamTest {
                    member: format!("unix-uid:{}", n.uid),
                    resource: evil.clone(),
                    permissions: vec![],
                },
            ),
            (
                who,
                R::IamExplain {
                    member: format!("unix-uid:{}", n.uid),
                    resource: evil.clone(),
                    permission: None,
                },
            ),
            (
                who,
                R::SaCreate {
                    project: project.clone(),
                    id: "newsa".into(),
                    display_name: None,
                },
            ),
            (
                who,
                R::SaList {
                    project: Some(project.clone()),
                },
            ),
            (
                who,
                R::SaDelete {
                    account: sa.clone(),
                },
            ),
            (
                who,
                R::SaKeyCreate {
                    account: sa.clone(),
                },
            ),
            (
                who,
                R::SaKeyList {
                    account: sa.clone(),
                },
            ),
            (
                who,
                R::SaKeyRevoke {
                    account: sa.clone(),
                    key_id: "kwnothing".into(),
                },
            ),
        ]);
    }
    // Key rings and keys: the admin of another organisation, a holder of an unrelated
    // permission on the project, a principal that sees exactly one other key of the ring.
    for who in [MALLORY, PEEKER, SIGNER] {
        for res in [
            org.clone(),
            folder.clone(),
            project.clone(),
            ring.clone(),
            key.clone(),
            v1.clone(),
        ] {
            out.extend([
                (
                    who,
                    R::IamPolicy {
                        resource: res.clone(),
                    },
                ),
                (
                    who,
                    R::IamUnbind {
                        resource: res.clone(),
                        role: "roles/kms.viewer".into(),
                        member: "user:x@acme.example".into(),
                    },
                ),
                (
                    who,
                    R::IamBind {
                        resource: res.clone(),
                        role: "roles/kms.viewer".into(),
                        member: "user:x@acme.example".into(),
                        allow_sod_violation: false,
                    },
                ),
                (
                    who,
                    R::IamTest {
                        member: "user:x@acme.example".into(),
                        resource: res.clone(),
                        permissions: vec![],
                    },
                ),
                (
                    who,
                    R::IamExplain {
                        member: "user:x@acme.example".into(),
                        resource: res.clone(),
                        permission: None,
                    },
                ),
                (
                    who,
                    R::IamWhoCan {
                        resource: res.clone(),
                        permission: "kms.cryptoKeys.get".into(),
                    },
                ),
            ]);
        }
        out.extend([
            (who, R::KeyRingGet { name: ring.clone() }),
            (who, R::KeyRingDelete { name: ring.clone() }),
            (
                who,
                R::KeyRingUpdate {
                    name: ring.clone(),
                    allow_plaintext_import: Some(true),
                    strict_templates: None,
                    token_label: None,
                },
            ),
            (
                who,
                R::KeyCreate {
                    keyring: ring.clone(),
                    id: "newkey".into(),
                    purpose: "ENCRYPT_DECRYPT".into(),
                    algorithm: "AES_256_GCM".into(),
                    exportable: false,
                },
            ),
            (
                who,
                R::KeyList {
                    keyring: ring.clone(),
                },
            ),
            (who, R::KeyGet { name: key.clone() }),
            (
                who,
                R::KeyRotate {
                    name: key.clone(),
                    set_primary: true,
                },
            ),
            (
                who,
                R::KeySetPrimary {
                    name: key.clone(),
                    version: 1,
                },
            ),
            (
                who,
                R::KeyGetPublicKey {
                    name: key.clone(),
                    version: None,
                },
            ),
            (who, R::VersionList { key: key.clone() }),
            (who, R::VersionGet { name: v1.clone() }),
            (who, R::VersionEnable { name: v1.clone() }),
            (who, R::VersionDisable { name: v1.clone() }),
            (
                who,
                R::VersionDestroy {
                    name: v1.clone(),
                    grace_secs: None,
                },
            ),
            (who, R::VersionRestore { name: v1.clone() }),
            (
                who,
                R::ImportJobCreate {
                    keyring: ring.clone(),
                    id: Some("job2".into()),
                    method: "RSA_OAEP_3072_SHA256_AES_256".into(),
                },
            ),
            (
                who,
                R::ImportJobGet {
                    name: job.clone(),
                    pem: false,
                },
            ),
            (
                who,
                R::ImportJobList {
                    keyring: ring.clone(),
                },
            ),
            (
                who,
                R::KeyImport {
                    import_job: job.clone(),
                    key: key.clone(),
                    algorithm: "AES_256_GCM".into(),
                    wrapped: vec![0; 40],
                    public_key: None,
                },
            ),
            (
                who,
                R::KeyCertImport {
                    key: key.clone(),
                    certs: vec![vec![0x30, 0]],
                    label: None,
                },
            ),
            (who, R::KeyCertList { key: key.clone() }),
        ]);
    }
    out
}

struct World {
    svc: AdminService,
    _dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("keyward.db")).unwrap();
        let svc = AdminService::new(store, Arc::new(FixedClock));
        let mut w = World { svc, _dir: dir };
        w.svc
            .handle(
                &as_caller("unix-uid:0"),
                R::Init {
                    org: "acme".into(),
                    admin: ACME_ADMIN.into(),
                },
            )
            .unwrap();
        let e = Names::existing();
        w.admin(R::OrgCreate { org: "evil".into() });
        w.admin(R::FolderCreate {
            parent: e.org_name(),
            id: e.folder.into(),
        });
        w.admin(R::ProjectCreate {
            parent: e.org_name(),
            id: e.project.into(),
        });
        w.admin(R::ProjectCreate {
            parent: "organizations/evil".into(),
            id: "evilproj".into(),
        });
        w.admin(R::KeyRingCreate {
            parent: e.project_name(),
            id: e.ring.into(),
            token_label: None,
        });
        w.key(&e.ring_name(), e.key);
        w.key(&e.ring_name(), "own");
        w.admin(R::RoleCreate {
            org: e.org_name(),
            id: e.role.into(),
            title: None,
            permissions: vec!["resourcemanager.projects.get".into()],
        });
        w.admin(R::SaCreate {
            project: e.project.into(),
            id: e.sa.into(),
            display_name: None,
        });
        w.admin(R::GroupCreate {
            group: e.group.into(),
        });
        w.admin(R::IamMapUid {
            uid: MAPPED_UID,
            member: ACME_ADMIN.into(),
            allow_sod_violation: false,
        });
        w.bind("organizations/evil", "roles/keyward.orgAdmin", MALLORY);
        w.bind(&e.project_name(), &e.role_name(), PEEKER);
        w.bind(
            &format!("{}/cryptoKeys/own", e.ring_name()),
            "roles/kms.signerVerifier",
            SIGNER,
        );
        w.bind(&e.ring_name(), "roles/kms.viewer", VIEWER);
        {
            let store = w.svc.store_mut();
            let tx = store.write().unwrap();
            let ring = resources::get(&tx, &e.ring_name().parse().unwrap())
                .unwrap()
                .unwrap();
            keyward::store::import_jobs::insert(
                &tx,
                &keyward::store::import_jobs::NewJob {
                    ring_id: ring.id,
                    name: &format!("{}/importJobs/job1", e.ring_name()),
                    method: "RSA_OAEP_3072_SHA256_AES_256",
                    state: keyward::store::import_jobs::JobState::Active,
                    token_id: b"job1",
                    public_key: b"not a key",
                    created_at: 0,
                    expire_at: i64::MAX / 2,
                    created_by: ACME_ADMIN,
                },
            )
            .unwrap();
            tx.commit().unwrap();
        }
        assert!(siam::group_exists(&w.svc.store_mut().read().unwrap(), e.group).unwrap());
        w
    }

    fn admin(&mut self, req: R) -> AdminResponse {
        let desc = format!("{req:?}");
        self.svc
            .handle(&as_caller(ACME_ADMIN), req)
            .unwrap_or_else(|e| panic!("{desc}: {e}"))
    }

    fn bind(&mut self, resource: &str, role: &str, member: &str) {
        self.admin(R::IamBind {
            resource: resource.into(),
            role: role.into(),
            member: member.into(),
            allow_sod_violation: false,
        });
    }

    fn key(&mut self, ring: &str, id: &str) {
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
            ACME_ADMIN,
        )
        .unwrap();
        let v = keys::add_version(&tx, kid, keys::VersionState::Enabled, None, None, 0).unwrap();
        keys::set_primary(&tx, kid, v).unwrap();
        tx.commit().unwrap();
    }

    fn ask(&mut self, who: &str, req: R) -> Result<AdminResponse, AdminError> {
        self.svc.handle(&as_caller(who), req)
    }
}

/// One answer as compared: the CK_RV and the text, or "ok".
fn answer(r: &Result<AdminResponse, AdminError>) -> (u64, String) {
    match r {
        Ok(resp) => (
            0,
            format!("ok: {}", resp.message.clone().unwrap_or_default()),
        ),
        Err(e) => (e.rv, e.message.clone()),
    }
}

/// Finding 4 (acceptance 4): every admin request naming a resource answers "absent" and
/// "exists, invisible to you" with the same CK_RV and text; store-wide refusals name no
/// organisation; the creates that necessarily reveal a taken global id are the README's.
#[test]
fn the_admin_socket_answers_absent_and_invisible_alike() {
    let mut w = World::new();
    let existing = Names::existing();
    let base = probes(&existing);
    let mut covered = std::collections::BTreeSet::new();
    let mut diffs = Vec::new();
    for dim in [
        "org", "folder", "project", "ring", "key", "role", "sa", "group", "uid",
    ] {
        let absent = Names::absent(dim);
        let other = probes(&absent);
        assert_eq!(base.len(), other.len());
        for ((who, req_e), (_, req_a)) in base.iter().zip(other) {
            let shown = format!("{req_e:?}");
            if shown == format!("{req_a:?}") {
                continue; // this request does not name the dimension
            }
            assert_ne!(class(req_e), Class::Unnamed, "{shown}");
            covered.insert(shown.split([' ', '{']).next().unwrap_or("").to_string());
            let e = answer(&w.ask(who, req_e.clone()));
            let a = answer(&w.ask(who, req_a.clone()));
            let a = (a.0, absent.unify(&a.1));
            if e != a {
                diffs.push(format!(
                    "{who} {shown} [{dim}]:\n    exists, invisible: {e:?}\n    absent:            {a:?}"
                ));
            }
        }
    }
    assert!(
        diffs.is_empty(),
        "{} request(s) tell absent from invisible:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
    // Every Named request kind was probed.
    for name in [
        "OrgGet",
        "OrgDelete",
        "OrgSetSod",
        "FolderList",
        "FolderGet",
        "FolderDelete",
        "ProjectList",
        "ProjectGet",
        "ProjectDelete",
        "KeyRingList",
        "KeyRingGet",
        "KeyRingDelete",
        "KeyRingUpdate",
        "RoleDescribe",
        "RoleCreate",
        "RoleDelete",
        "RoleUpdate",
        "IamSodReport",
        "IamBind",
        "IamUnbind",
        "IamPolicy",
        "IamTest",
        "IamExplain",
        "IamWhoCan",
        "SaCreate",
        "SaList",
        "SaDelete",
        "SaKeyCreate",
        "SaKeyList",
        "SaKeyRevoke",
        "KeyCreate",
        "KeyList",
        "KeyGet",
        "KeyRotate",
        "KeySetPrimary",
        "KeyGetPublicKey",
        "VersionList",
        "VersionGet",
        "VersionEnable",
        "VersionDisable",
        "VersionDestroy",
        "VersionRestore",
        "ImportJobCreate",
        "ImportJobGet",
        "ImportJobList",
        "KeyImport",
        "KeyCertImport",
        "KeyCertList",
        "FolderCreate",
        "ProjectCreate",
        "KeyRingCreate",
    ] {
        assert!(covered.contains(name), "{name} is not probed");
    }

    // Store-wide refusals name no organisation (they used to list the one refused).
    let store_wide = [
        R::IamMapUid {
            uid: 7,
            member: MALLORY.into(),
            allow_sod_violation: false,
        },
        R::IamUnmapUid { uid: MAPPED_UID },
        R::IamListMappings,
        R::GroupCreate { group: "g2".into() },
        R::GroupList,
        R::GroupGet {
            group: "ops".into(),
        },
        R::GroupDelete {
            group: "ops".into(),
        },
        R::GroupAddMember {
            group: "ops".into(),
            member: MALLORY.into(),
            allow_sod_violation: false,
        },
        R::GroupRemoveMember {
            group: "ops".into(),
            member: MALLORY.into(),
        },
        R::AuditTail { count: 1 },
        R::AuditQuery {
            filter: AuditFilter::default(),
        },
        R::AuditVerify,
        R::OrgCreate {
            org: "neworg".into(),
        },
    ];
    for req in store_wide {
        let c = class(&req);
        assert!(
            matches!(c, Class::StoreWide | Class::CreateGlobalId),
            "{req:?}"
        );
        let shown = format!("{req:?}");
        let (rv, text) = answer(&w.ask(MALLORY, req));
        assert_ne!(rv, 0, "{shown}");
        assert!(
            !text.contains("acme"),
            "{shown}: the refusal names an organisation: {text}"
        );
    }

    // Legitimate callers keep a precise "does not exist": the admin, and a viewer of the ring
    // for keys in it.
    let absent_key = Names::absent("key").key_name();
    for who in [ACME_ADMIN, VIEWER] {
        let (_, text) = answer(&w.ask(
            who,
            R::KeyGet {
                name: absent_key.clone(),
            },
        ));
        assert!(
            text.contains("does not exist") && !text.contains("permission denied"),
            "{who}: {text}"
        );
    }
    let (_, text) = answer(&w.ask(
        ACME_ADMIN,
        R::ProjectGet {
            name: "projects/nxprj".into(),
        },
    ));
    assert!(
        text.contains("does not exist") && !text.contains("permission denied"),
        "{text}"
    );

    // The creates of a taken global id: each reveals it (the README lists them).
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("### Existence")
        .nth(1)
        .and_then(|s| s.split("\n### ").next())
        .unwrap_or_default()
        .to_string();
    // Each: who may send it, the request with a taken id, and the same request with a free
    // one; the taken id is refused ("taken"/"exists"), the free one goes through.
    let exceptions: [(&str, R, R, &str); 4] = [
        (
            ACME_ADMIN,
            R::OrgCreate { org: "acme".into() },
            R::OrgCreate {
                org: "neworg1".into(),
            },
            "org create",
        ),
        (
            MALLORY,
            R::FolderCreate {
                parent: "organizations/evil".into(),
                id: "payments".into(),
            },
            R::FolderCreate {
                parent: "organizations/evil".into(),
                id: "evilfolder".into(),
            },
            "folder create",
        ),
        (
            MALLORY,
            R::ProjectCreate {
                parent: "organizations/evil".into(),
                id: "eng".into(),
            },
            R::ProjectCreate {
                parent: "organizations/evil".into(),
                id: "evilproj2".into(),
            },
            "project create",
        ),
        (
            ACME_ADMIN,
            R::GroupCreate {
                group: "ops".into(),
            },
            R::GroupCreate {
                group: "ops2".into(),
            },
            "group create",
        ),
    ];
    for (who, taken, free, readme_name) in exceptions {
        assert!(matches!(
            class(&taken),
            Class::CreateGlobalId | Class::StoreWide
        ));
        assert!(
            section.contains(readme_name),
            "README's Existence section does not list `{readme_name}`"
        );
        let shown = format!("{taken:?}");
        let (rv, text) = answer(&w.ask(who, taken));
        assert_ne!(rv, 0, "{shown}");
        assert!(
            text.contains("taken") || text.contains("exists"),
            "{shown}: {text}"
        );
        let shown = format!("{free:?}");
        let (rv, text) = answer(&w.ask(who, free));
        assert_eq!(rv, 0, "{shown}: {text}");
    }
    // Key rings: the slot id (a hash of the name) is global; README lists it.
    assert!(
        section.contains("keyring create"),
        "README's Existence section does not list `keyring create`"
    );
    // The folder/project id space is global: the admin of another organisation learns that
    // `payments` is taken (the listed exception), nothing else about it.
    let (rv, text) = answer(&w.ask(
        MALLORY,
        R::ProjectCreate {
            parent: "organizations/evil".into(),
            id: "payments".into(),
        },
    ));
    assert_ne!(rv, 0);
    assert!(!text.contains("acme"), "{text}");
}
