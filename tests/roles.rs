//! Pins the exact permission set of every predefined role against design §3, written out
//! here by hand (not derived from the code under test).

use keyward::policy::roles::{parse_custom_permissions, predefined};
use std::collections::BTreeSet;

fn set(perms: &[&str]) -> BTreeSet<String> {
    perms.iter().map(|p| p.to_string()).collect()
}

fn role(name: &str) -> BTreeSet<String> {
    let r = predefined()
        .into_iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("{name}"));
    r.permissions
        .iter()
        .map(|p| p.as_str().to_string())
        .collect()
}

const KMS_ADMIN: &[&str] = &[
    "kms.keyRings.create",
    "kms.keyRings.get",
    "kms.keyRings.list",
    "kms.keyRings.getIamPolicy",
    "kms.keyRings.setIamPolicy",
    "kms.cryptoKeys.create",
    "kms.cryptoKeys.get",
    "kms.cryptoKeys.list",
    "kms.cryptoKeys.update",
    "kms.cryptoKeys.getIamPolicy",
    "kms.cryptoKeys.setIamPolicy",
    "kms.cryptoKeyVersions.create",
    "kms.cryptoKeyVersions.destroy",
    "kms.cryptoKeyVersions.get",
    "kms.cryptoKeyVersions.list",
    "kms.cryptoKeyVersions.restore",
    "kms.cryptoKeyVersions.update",
    "kms.importJobs.create",
    "kms.importJobs.get",
    "kms.importJobs.list",
    "kms.importJobs.useToImport",
    "kms.importJobs.getIamPolicy",
    "kms.importJobs.setIamPolicy",
];

const KMS_VIEWER: &[&str] = &[
    "kms.keyRings.get",
    "kms.keyRings.list",
    "kms.cryptoKeys.get",
    "kms.cryptoKeys.list",
    "kms.cryptoKeyVersions.get",
    "kms.cryptoKeyVersions.list",
    "kms.importJobs.get",
    "kms.importJobs.list",
];

const RESOURCEMANAGER: &[&str] = &[
    "resourcemanager.organizations.create",
    "resourcemanager.organizations.get",
    "resourcemanager.organizations.list",
    "resourcemanager.organizations.delete",
    "resourcemanager.organizations.update",
    "resourcemanager.organizations.getIamPolicy",
    "resourcemanager.organizations.setIamPolicy",
    "resourcemanager.folders.create",
    "resourcemanager.folders.get",
    "resourcemanager.folders.list",
    "resourcemanager.folders.delete",
    "resourcemanager.folders.getIamPolicy",
    "resourcemanager.folders.setIamPolicy",
    "resourcemanager.projects.create",
    "resourcemanager.projects.get",
    "resourcemanager.projects.list",
    "resourcemanager.projects.delete",
    "resourcemanager.projects.getIamPolicy",
    "resourcemanager.projects.setIamPolicy",
];

const IAM: &[&str] = &[
    "iam.serviceAccounts.create",
    "iam.serviceAccounts.get",
    "iam.serviceAccounts.list",
    "iam.serviceAccounts.delete",
    "iam.serviceAccountKeys.create",
    "iam.serviceAccountKeys.list",
    "iam.serviceAccountKeys.delete",
    "iam.roles.create",
    "iam.roles.get",
    "iam.roles.list",
    "iam.roles.update",
    "iam.roles.delete",
    "iam.groups.create",
    "iam.groups.get",
    "iam.groups.list",
    "iam.groups.update",
    "iam.groups.delete",
    "iam.principalMappings.create",
    "iam.principalMappings.list",
    "iam.principalMappings.delete",
];

const ENC: &str = "kms.cryptoKeyVersions.useToEncrypt";
const DEC: &str = "kms.cryptoKeyVersions.useToDecrypt";
const SIGN: &str = "kms.cryptoKeyVersions.useToSign";
const VERIFY: &str = "kms.cryptoKeyVersions.useToVerify";
const VIEW: &str = "kms.cryptoKeyVersions.viewPublicKey";
const EXPORT: &str = "kms.cryptoKeyVersions.exportKeyMaterial";

#[test]
fn google_seed_roles() {
    assert_eq!(role("roles/kms.admin"), set(KMS_ADMIN));
    assert_eq!(role("roles/kms.viewer"), set(KMS_VIEWER));
    assert_eq!(role("roles/kms.cryptoKeyEncrypter"), set(&[ENC]));
    assert_eq!(role("roles/kms.cryptoKeyDecrypter"), set(&[DEC]));
    assert_eq!(
        role("roles/kms.cryptoKeyEncrypterDecrypter"),
        set(&[ENC, DEC])
    );
    assert_eq!(role("roles/kms.signer"), set(&[SIGN]));
    assert_eq!(role("roles/kms.signerVerifier"), set(&[SIGN, VERIFY, VIEW]));
    assert_eq!(role("roles/kms.verifier"), set(&[VERIFY, VIEW]));
    assert_eq!(role("roles/kms.publicKeyViewer"), set(&[VIEW]));
    assert_eq!(
        role("roles/kms.importer"),
        set(&[
            "kms.importJobs.create",
            "kms.importJobs.get",
            "kms.importJobs.list",
            "kms.importJobs.useToImport"
        ])
    );
    assert_eq!(
        role("roles/kms.cryptoOperator"),
        set(&[ENC, DEC, SIGN, VERIFY, VIEW])
    );
}

#[test]
fn kms_admin_has_no_crypto_use() {
    let admin = role("roles/kms.admin");
    for p in [ENC, DEC, SIGN, VERIFY, VIEW, EXPORT] {
        assert!(!admin.contains(p), "{p}");
    }
}

const LIST: &[&str] = &[
    "kms.keyRings.list",
    "kms.cryptoKeys.list",
    "kms.cryptoKeyVersions.list",
    "kms.cryptoKeyVersions.viewPublicKey",
];
const READ: &[&str] = &[
    "kms.keyRings.get",
    "kms.cryptoKeys.get",
    "kms.cryptoKeyVersions.get",
    "kms.cryptoKeyVersions.viewPublicKey",
];
const CREATE: &[&str] = &[
    "kms.cryptoKeys.create",
    "kms.cryptoKeyVersions.create",
    "kms.importJobs.create",
    "kms.importJobs.get",
    "kms.importJobs.list",
    "kms.importJobs.useToImport",
];
const UPDATE: &[&str] = &[
    ENC,
    DEC,
    SIGN,
    VERIFY,
    "kms.cryptoKeyVersions.create",
    "kms.cryptoKeys.update",
];
const DELETE: &[&str] = &[
    "kms.cryptoKeyVersions.update",
    "kms.cryptoKeyVersions.destroy",
    "kms.cryptoKeyVersions.restore",
];

fn union(parts: &[&[&str]]) -> BTreeSet<String> {
    parts
        .iter()
        .flat_map(|p| p.iter())
        .map(|p| p.to_string())
        .collect()
}

#[test]
fn thalassa_policies() {
    assert_eq!(role("kms:ReadAccess"), union(&[LIST, READ]));
    assert_eq!(
        role("kms:FullAccess"),
        union(&[LIST, READ, CREATE, UPDATE, &[EXPORT], DELETE])
    );
    assert_eq!(role("kms:Encrypt"), set(&[ENC]));
    assert_eq!(role("kms:Decrypt"), set(&[DEC]));
    assert_eq!(role("kms:Sign"), set(&[SIGN]));
    assert_eq!(role("kms:Verify"), set(&[VERIFY, VIEW]));
}

#[test]
fn keyward_roles() {
    let org_admin = union(&[
        RESOURCEMANAGER,
        IAM,
        KMS_ADMIN,
        &[
            "kms.auditLogs.read",
            "kms.keyRings.update",
            "kms.keyRings.delete",
        ],
    ]);
    assert_eq!(role("roles/keyward.orgAdmin"), org_admin);
    let auditor = union(&[
        KMS_VIEWER,
        &[
            "kms.auditLogs.read",
            "kms.keyRings.getIamPolicy",
            "kms.cryptoKeys.getIamPolicy",
            "kms.importJobs.getIamPolicy",
            "resourcemanager.organizations.getIamPolicy",
            "resourcemanager.folders.getIamPolicy",
            "resourcemanager.projects.getIamPolicy",
        ],
    ]);
    assert_eq!(role("roles/keyward.auditor"), auditor);
}

#[test]
fn every_predefined_role_is_pinned() {
    let names: BTreeSet<&str> = predefined().iter().map(|r| r.name).collect();
    let pinned: BTreeSet<&str> = [
        "roles/kms.admin",
        "roles/kms.viewer",
        "roles/kms.cryptoKeyEncrypter",
        "roles/kms.cryptoKeyDecrypter",
        "roles/kms.cryptoKeyEncrypterDecrypter",
        "roles/kms.signer",
        "roles/kms.signerVerifier",
        "roles/kms.verifier",
        "roles/kms.publicKeyViewer",
        "roles/kms.importer",
        "roles/kms.cryptoOperator",
        "kms:ReadAccess",
        "kms:FullAccess",
        "kms:Encrypt",
        "kms:Decrypt",
        "kms:Sign",
        "kms:Verify",
        "roles/keyward.orgAdmin",
        "roles/keyward.auditor",
    ]
    .into_iter()
    .collect();
    assert_eq!(names, pinned);
}

#[test]
fn custom_roles_from_verbs_and_permissions() {
    let names = |items: &[&str]| -> BTreeSet<String> {
        let v: Vec<String> = items.iter().map(|s| s.to_string()).collect();
        parse_custom_permissions(&v)
            .unwrap()
            .iter()
            .map(|p| p.as_str().to_string())
            .collect()
    };
    // Thalassa's recommended application role: read, list, update; update has no export.
    let app = names(&["read,list", "update"]);
    assert_eq!(app, union(&[READ, LIST, UPDATE]));
    assert!(!app.contains(EXPORT));
    assert!(!app.contains("kms.cryptoKeyVersions.destroy"));
    assert_eq!(names(&["update:export"]), set(&[EXPORT]));
    assert_eq!(
        names(&["cloudkms.cryptoKeyVersions.useToDecrypt"]),
        set(&[DEC])
    );
    let err =
        parse_custom_permissions(&["kms.cryptoKeyVersions.useToFly".to_string()]).unwrap_err();
    assert!(err.contains("unknown permission"), "{err}");
    assert!(parse_custom_permissions(&["publish".to_string()]).is_err());
    assert!(parse_custom_permissions(&[]).is_err());
}
