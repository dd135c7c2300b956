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

/// The seed's Google Cloud KMS role names Keyward models, each an alias of the `roles/kms.*`
/// role it stands for (issue 18 item 3). A binding made with an alias is stored under the
/// `roles/kms.*` name ([`canonical_role`]): the snapshot resolves stored names only, so a
/// stored alias would grant nothing.
pub const CLOUDKMS_ALIASES: &[(&str, &str)] = &[
    ("roles/cloudkms.admin", "roles/kms.admin"),
    ("roles/cloudkms.viewer", "roles/kms.viewer"),
    (
        "roles/cloudkms.cryptoKeyEncrypter",
        "roles/kms.cryptoKeyEncrypter",
    ),
    (
        "roles/cloudkms.cryptoKeyDecrypter",
        "roles/kms.cryptoKeyDecrypter",
    ),
    (
        "roles/cloudkms.cryptoKeyEncrypterDecrypter",
        "roles/kms.cryptoKeyEncrypterDecrypter",
    ),
    ("roles/cloudkms.signer", "roles/kms.signer"),
    ("roles/cloudkms.signerVerifier", "roles/kms.signerVerifier"),
    ("roles/cloudkms.verifier", "roles/kms.verifier"),
    (
        "roles/cloudkms.publicKeyViewer",
        "roles/kms.publicKeyViewer",
    ),
    ("roles/cloudkms.importer", "roles/kms.importer"),
    ("roles/cloudkms.cryptoOperator", "roles/kms.cryptoOperator"),
];

/// The seed's roles this model leaves out (their permissions are in
/// [`DROPPED_SEED_PERMISSIONS`]), each with the modelled role nearest to it, if any.
pub const UNMODELLED_SEED_ROLES: &[(&str, Option<&str>)] = &[
    (
        "roles/cloudkms.cryptoKeyEncrypterViaDelegation",
        Some("roles/kms.cryptoKeyEncrypter"),
    ),
    (
        "roles/cloudkms.cryptoKeyDecrypterViaDelegation",
        Some("roles/kms.cryptoKeyDecrypter"),
    ),
    (
        "roles/cloudkms.cryptoKeyEncrypterDecrypterViaDelegation",
        Some("roles/kms.cryptoKeyEncrypterDecrypter"),
    ),
    ("roles/cloudkms.ekmConnectionsAdmin", None),
    ("roles/cloudkms.expertRawAesCbc", None),
    ("roles/cloudkms.expertRawAesCtr", None),
    ("roles/cloudkms.expertRawPKCS", None),
    ("roles/cloudkms.protectedResourcesViewer", None),
];

/// The name a role is stored and resolved under: the `roles/kms.*` role a
/// `roles/cloudkms.*` alias stands for, any other name unchanged.
pub fn canonical_role(name: &str) -> &str {
    CLOUDKMS_ALIASES
        .iter()
        .find(|(alias, _)| *alias == name)
        .map_or(name, |(_, role)| role)
}

/// Why a seed role this model leaves out is refused, or `None` for any other name.
pub fn unmodelled_seed_role(name: &str) -> Option<String> {
    let (_, nearest) = UNMODELLED_SEED_ROLES.iter().find(|(r, _)| *r == name)?;
    let instead = match nearest {
        Some(r) => format!("; the nearest role Keyward has is {r}"),
        None => String::new(),
    };
    Some(format!(
        "role '{name}' is a Cloud KMS role not modelled by Keyward (its permissions are left \
         out: see the README's Roles section){instead}"
    ))
}

/// The core of a role name for comparing: without `roles/`, `kms.`/`cloudkms.`/`kms:` and
/// case.
fn role_stem(name: &str) -> String {
    let name = name.to_ascii_lowercase();
    let s = name.strip_prefix("roles/").unwrap_or(&name);
    let s = ["cloudkms.", "kms.", "kms:", "keyward."]
        .iter()
        .find_map(|p| s.strip_prefix(p))
        .unwrap_or(s);
    s.to_string()
}

/// Levenshtein distance over bytes (role names are ASCII; anything else only counts more).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Up to three predefined roles whose names are nearest to `name` (a misspelt role or alias;
/// an alias's nearness counts for the role it stands for), nearest first; none when nothing
/// is close. Only predefined names are offered (custom roles stay private to their
/// organisation, design §9).
pub fn nearest_roles(name: &str) -> Vec<&'static str> {
    let stem = role_stem(name);
    if stem.len() > 256 {
        return Vec::new();
    }
    let limit = (stem.len() / 3).max(2);
    let mut scored: Vec<(usize, &'static str)> = predefined()
        .iter()
        .map(|r| (r.name, r.name))
        .chain(CLOUDKMS_ALIASES.iter().copied())
        .map(|(candidate, role)| (edit_distance(&stem, &role_stem(candidate)), role))
        .filter(|(d, _)| *d <= limit)
        .collect();
    scored.sort();
    let mut out: Vec<&'static str> = Vec::new();
    for (_, role) in scored {
        if !out.contains(&role) && out.len() < 3 {
            out.push(role);
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_alias_names_a_predefined_role_and_the_unmodelled_nearest_too() {
        let names: Vec<&str> = predefined().iter().map(|r| r.name).collect();
        for (alias, role) in CLOUDKMS_ALIASES {
            assert!(names.contains(role), "{alias} -> {role}");
            assert_eq!(canonical_role(alias), *role);
            assert_eq!(
                format!("roles/cloudkms.{}", &role["roles/kms.".len()..]),
                *alias
            );
        }
        for (r, nearest) in UNMODELLED_SEED_ROLES {
            assert!(nearest.is_none_or(|n| names.contains(&n)), "{r}");
            assert!(unmodelled_seed_role(r).is_some());
        }
        assert_eq!(canonical_role("roles/kms.signer"), "roles/kms.signer");
        assert_eq!(unmodelled_seed_role("roles/kms.signer"), None);
    }

    #[test]
    fn nearest_roles_offers_close_names_only() {
        assert_eq!(
            nearest_roles("roles/kms.signerVerifer")[0],
            "roles/kms.signerVerifier"
        );
        assert_eq!(
            nearest_roles("roles/cloudkms.cryptoKeyEncrypterDecryptor")[0],
            "roles/kms.cryptoKeyEncrypterDecrypter"
        );
        assert_eq!(nearest_roles("roles/KMS.ADMIN")[0], "roles/kms.admin");
        assert!(nearest_roles("roles/storage.objectViewer").is_empty());
        assert!(nearest_roles(&"x".repeat(100_000)).is_empty());
    }
}
