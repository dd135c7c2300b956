//! Predefined roles (design §3): the Google Cloud KMS roles as `roles/kms.*`, the Thalassa
//! policies as `kms:*`, Keyward's own `roles/keyward.*`, and the Thalassa verbs custom roles
//! may use.

use super::permission::{PermSet, Permission, Permission as P};

/// A predefined role: its name, a title and its permissions.
#[derive(Debug, Clone)]
pub struct PredefinedRole {
    /// The role's name, e.g. `roles/kms.signerVerifier`.
    pub name: &'static str,
    /// A short human description.
    pub title: &'static str,
    /// What the role grants.
    pub permissions: PermSet,
}

/// Permissions of the Google seed dropped from this model (listed in the README).
pub const DROPPED_SEED_PERMISSIONS: &[&str] = &[
    "cloudkms.locations.*",
    "resourcemanager.projects.get (as granted by the KMS roles)",
    "cloudkms.ekmConfigs.*, cloudkms.ekmConnections.*",
    "cloudkms.cryptoKeyVersions.*ViaDelegation",
    "cloudkms.protectedResources.*",
    "cloudkms.cryptoKeyVersions.manageRaw*",
    "cloudkms.locations.generateRandomBytes",
    "cloudkms.keyRings.{create,delete,list}TagBinding, listEffectiveTags",
];

const GET_LIST: &[Permission] = &[
    P::KeyRingsGet,
    P::KeyRingsList,
    P::CryptoKeysGet,
    P::CryptoKeysList,
    P::VersionsGet,
    P::VersionsList,
];

fn kms_admin() -> PermSet {
    PermSet::of(&[
        P::KeyRingsCreate,
        P::KeyRingsGet,
        P::KeyRingsList,
        P::KeyRingsGetIamPolicy,
        P::KeyRingsSetIamPolicy,
        P::CryptoKeysCreate,
        P::CryptoKeysGet,
        P::CryptoKeysList,
        P::CryptoKeysUpdate,
        P::CryptoKeysGetIamPolicy,
        P::CryptoKeysSetIamPolicy,
        P::VersionsCreate,
        P::VersionsDestroy,
        P::VersionsGet,
        P::VersionsList,
        P::VersionsRestore,
        P::VersionsUpdate,
        P::ImportJobsCreate,
        P::ImportJobsGet,
        P::ImportJobsList,
        P::ImportJobsUseToImport,
        P::ImportJobsGetIamPolicy,
        P::ImportJobsSetIamPolicy,
    ])
}

fn kms_viewer() -> PermSet {
    PermSet::of(GET_LIST).union(PermSet::of(&[P::ImportJobsGet, P::ImportJobsList]))
}

/// A Thalassa verb (design §3), usable in custom roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThalassaVerb {
    /// `list`
    List,
    /// `read`
    Read,
    /// `create`
    Create,
    /// `update` (crypto use, rotate, key settings; not export)
    Update,
    /// `update:export` (export key material)
    UpdateExport,
    /// `delete` (disable, enable, destroy, restore)
    Delete,
}

impl ThalassaVerb {
    /// Parses a verb as written in a custom role (`list`, `read`, `create`, `update`,
    /// `update:export`, `delete`).
    pub fn parse(s: &str) -> Option<ThalassaVerb> {
        Some(match s {
            "list" => ThalassaVerb::List,
            "read" => ThalassaVerb::Read,
            "create" => ThalassaVerb::Create,
            "update" => ThalassaVerb::Update,
            "update:export" => ThalassaVerb::UpdateExport,
            "delete" => ThalassaVerb::Delete,
            _ => return None,
        })
    }

    /// The fine permissions the verb stands for.
    pub fn permissions(self) -> PermSet {
        match self {
            ThalassaVerb::List => PermSet::of(&[
                P::KeyRingsList,
                P::CryptoKeysList,
                P::VersionsList,
                P::ViewPublicKey,
            ]),
            ThalassaVerb::Read => PermSet::of(&[
                P::KeyRingsGet,
                P::CryptoKeysGet,
                P::VersionsGet,
                P::ViewPublicKey,
            ]),
            ThalassaVerb::Create => PermSet::of(&[
                P::CryptoKeysCreate,
                P::VersionsCreate,
                P::ImportJobsCreate,
                P::ImportJobsGet,
                P::ImportJobsList,
                P::ImportJobsUseToImport,
            ]),
            ThalassaVerb::Update => PermSet::of(&[
                P::UseToEncrypt,
                P::UseToDecrypt,
                P::UseToSign,
                P::UseToVerify,
                P::VersionsCreate,
                P::CryptoKeysUpdate,
            ]),
            ThalassaVerb::UpdateExport => PermSet::of(&[P::ExportKeyMaterial]),
            ThalassaVerb::Delete => {
                PermSet::of(&[P::VersionsUpdate, P::VersionsDestroy, P::VersionsRestore])
            }
        }
    }
}

fn verbs(v: &[ThalassaVerb]) -> PermSet {
    v.iter()
        .fold(PermSet::EMPTY, |s, v| s.union(v.permissions()))
}

/// Every predefined role.
pub fn predefined() -> Vec<PredefinedRole> {
    use ThalassaVerb as V;
    let r = |name, title, permissions| PredefinedRole {
        name,
        title,
        permissions,
    };
    let all_get_iam = PermSet::of(&[
        P::KeyRingsGetIamPolicy,
        P::CryptoKeysGetIamPolicy,
        P::ImportJobsGetIamPolicy,
        P::OrganizationsGetIamPolicy,
        P::FoldersGetIamPolicy,
        P::ProjectsGetIamPolicy,
    ]);
    let resourcemanager: PermSet = Permission::ALL
        .iter()
        .copied()
        .filter(|p| p.as_str().starts_with("resourcemanager."))
        .collect();
    let iam: PermSet = Permission::ALL
        .iter()
        .copied()
        .filter(|p| p.as_str().starts_with("iam."))
        .collect();
    vec![
        r("roles/kms.admin", "KMS admin: manage key rings, keys, versions, import jobs; no crypto use", kms_admin()),
        r("roles/kms.viewer", "Get and list key rings, keys, versions, import jobs", kms_viewer()),
        r("roles/kms.cryptoKeyEncrypter", "Encrypt", PermSet::of(&[P::UseToEncrypt])),
        r("roles/kms.cryptoKeyDecrypter", "Decrypt", PermSet::of(&[P::UseToDecrypt])),
        r("roles/kms.cryptoKeyEncrypterDecrypter", "Encrypt and decrypt", PermSet::of(&[P::UseToEncrypt, P::UseToDecrypt])),
        r("roles/kms.signer", "Sign", PermSet::of(&[P::UseToSign])),
        r("roles/kms.signerVerifier", "Sign, verify, view public key", PermSet::of(&[P::UseToSign, P::UseToVerify, P::ViewPublicKey])),
        r("roles/kms.verifier", "Verify, view public key", PermSet::of(&[P::UseToVerify, P::ViewPublicKey])),
        r("roles/kms.publicKeyViewer", "View public key", PermSet::of(&[P::ViewPublicKey])),
        r("roles/kms.importer", "Import key material (BYOK)", PermSet::of(&[P::ImportJobsCreate, P::ImportJobsGet, P::ImportJobsList, P::ImportJobsUseToImport])),
        r("roles/kms.cryptoOperator", "All crypto operations", PermSet::of(&[P::UseToEncrypt, P::UseToDecrypt, P::UseToSign, P::UseToVerify, P::ViewPublicKey])),
        r("kms:ReadAccess", "Thalassa: list and read", verbs(&[V::List, V::Read])),
        r("kms:FullAccess", "Thalassa: list, read, create, update (with export), delete", verbs(&[V::List, V::Read, V::Create, V::Update, V::UpdateExport, V::Delete])),
        r("kms:Encrypt", "Thalassa: encrypt", PermSet::of(&[P::UseToEncrypt])),
        r("kms:Decrypt", "Thalassa: decrypt", PermSet::of(&[P::UseToDecrypt])),
        r("kms:Sign", "Thalassa: sign", PermSet::of(&[P::UseToSign])),
        r("kms:Verify", "Thalassa: verify", PermSet::of(&[P::UseToVerify, P::ViewPublicKey])),
        r(
            "roles/keyward.orgAdmin",
            "Organisation admin: hierarchy, IAM, audit, key ring settings, KMS admin; no crypto use",
            resourcemanager
                .union(iam)
                .union(kms_admin())
                .with(P::AuditLogsRead)
                .with(P::KeyRingsUpdate)
                // Not in design §3's list, but §2 lets an empty ring be deleted and no other
                // predefined role could: the organisation admin may.
                .with(P::KeyRingsDelete),
        ),
        r(
            "roles/keyward.auditor",
            "Auditor: read the audit log, view resources and every IAM policy",
            kms_viewer().union(all_get_iam).with(P::AuditLogsRead),
        ),
    ]
}

/// Permissions that administer a key (separation of duties, design §3).
pub fn key_admin_permissions() -> PermSet {
    PermSet::of(&[P::CryptoKeysCreate, P::CryptoKeysUpdate, P::VersionsDestroy])
}

/// Permissions that use a key (separation of duties, design §3).
pub fn key_use_permissions() -> PermSet {
    PermSet::of(&[
        P::UseToEncrypt,
        P::UseToDecrypt,
        P::UseToSign,
        P::UseToVerify,
    ])
}

/// Parses a custom role's permission list: fine permissions and/or Thalassa verbs.
pub fn parse_custom_permissions(items: &[String]) -> Result<PermSet, String> {
    if items.is_empty() {
        return Err("a custom role needs at least one permission or Thalassa verb".into());
    }
    let mut set = PermSet::EMPTY;
    for item in items {
        for part in item.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if let Some(v) = ThalassaVerb::parse(part) {
                set = set.union(v.permissions());
            } else {
                let p: Permission = part.parse().map_err(|e| {
                    format!(
                        "{e}; Thalassa verbs are list, read, create, update, update:export, delete"
                    )
                })?;
                set = set.with(p);
            }
        }
    }
    Ok(set)
}
