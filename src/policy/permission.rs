//! Every permission of design §3, as a closed enum, and sets of them as a bitset.

use std::fmt;
use std::str::FromStr;

macro_rules! permissions {
    ($($variant:ident = $name:literal,)*) => {
        /// One fine-grained permission (design §3).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[allow(missing_docs)]
        pub enum Permission { $($variant,)* }

        impl Permission {
            /// Every permission, in declaration order.
            pub const ALL: &'static [Permission] = &[$(Permission::$variant,)*];

            /// The permission's name, e.g. `kms.cryptoKeyVersions.useToSign`.
            pub fn as_str(self) -> &'static str {
                match self { $(Permission::$variant => $name,)* }
            }
        }
    };
}

permissions! {
    KeyRingsCreate = "kms.keyRings.create",
    KeyRingsGet = "kms.keyRings.get",
    KeyRingsList = "kms.keyRings.list",
    KeyRingsUpdate = "kms.keyRings.update",
    KeyRingsDelete = "kms.keyRings.delete",
    KeyRingsGetIamPolicy = "kms.keyRings.getIamPolicy",
    KeyRingsSetIamPolicy = "kms.keyRings.setIamPolicy",
    CryptoKeysCreate = "kms.cryptoKeys.create",
    CryptoKeysGet = "kms.cryptoKeys.get",
    CryptoKeysList = "kms.cryptoKeys.list",
    CryptoKeysUpdate = "kms.cryptoKeys.update",
    CryptoKeysGetIamPolicy = "kms.cryptoKeys.getIamPolicy",
    CryptoKeysSetIamPolicy = "kms.cryptoKeys.setIamPolicy",
    VersionsCreate = "kms.cryptoKeyVersions.create",
    VersionsGet = "kms.cryptoKeyVersions.get",
    VersionsList = "kms.cryptoKeyVersions.list",
    VersionsUpdate = "kms.cryptoKeyVersions.update",
    VersionsDestroy = "kms.cryptoKeyVersions.destroy",
    VersionsRestore = "kms.cryptoKeyVersions.restore",
    UseToEncrypt = "kms.cryptoKeyVersions.useToEncrypt",
    UseToDecrypt = "kms.cryptoKeyVersions.useToDecrypt",
    UseToSign = "kms.cryptoKeyVersions.useToSign",
    UseToVerify = "kms.cryptoKeyVersions.useToVerify",
    ViewPublicKey = "kms.cryptoKeyVersions.viewPublicKey",
    ExportKeyMaterial = "kms.cryptoKeyVersions.exportKeyMaterial",
    ImportJobsCreate = "kms.importJobs.create",
    ImportJobsGet = "kms.importJobs.get",
    ImportJobsList = "kms.importJobs.list",
    ImportJobsUseToImport = "kms.importJobs.useToImport",
    ImportJobsGetIamPolicy = "kms.importJobs.getIamPolicy",
    ImportJobsSetIamPolicy = "kms.importJobs.setIamPolicy",
    OrganizationsCreate = "resourcemanager.organizations.create",
    OrganizationsGet = "resourcemanager.organizations.get",
    OrganizationsList = "resourcemanager.organizations.list",
    OrganizationsDelete = "resourcemanager.organizations.delete",
    OrganizationsUpdate = "resourcemanager.organizations.update",
    OrganizationsGetIamPolicy = "resourcemanager.organizations.getIamPolicy",
    OrganizationsSetIamPolicy = "resourcemanager.organizations.setIamPolicy",
    FoldersCreate = "resourcemanager.folders.create",
    FoldersGet = "resourcemanager.folders.get",
    FoldersList = "resourcemanager.folders.list",
    FoldersDelete = "resourcemanager.folders.delete",
    FoldersGetIamPolicy = "resourcemanager.folders.getIamPolicy",
    FoldersSetIamPolicy = "resourcemanager.folders.setIamPolicy",
    ProjectsCreate = "resourcemanager.projects.create",
    ProjectsGet = "resourcemanager.projects.get",
    ProjectsList = "resourcemanager.projects.list",
    ProjectsDelete = "resourcemanager.projects.delete",
    ProjectsGetIamPolicy = "resourcemanager.projects.getIamPolicy",
    ProjectsSetIamPolicy = "resourcemanager.projects.setIamPolicy",
    ServiceAccountsCreate = "iam.serviceAccounts.create",
    ServiceAccountsGet = "iam.serviceAccounts.get",
    ServiceAccountsList = "iam.serviceAccounts.list",
    ServiceAccountsDelete = "iam.serviceAccounts.delete",
    ServiceAccountKeysCreate = "iam.serviceAccountKeys.create",
    ServiceAccountKeysList = "iam.serviceAccountKeys.list",
    ServiceAccountKeysDelete = "iam.serviceAccountKeys.delete",
    RolesCreate = "iam.roles.create",
    RolesGet = "iam.roles.get",
    RolesList = "iam.roles.list",
    RolesUpdate = "iam.roles.update",
    RolesDelete = "iam.roles.delete",
    GroupsCreate = "iam.groups.create",
    GroupsGet = "iam.groups.get",
    GroupsList = "iam.groups.list",
    GroupsUpdate = "iam.groups.update",
    GroupsDelete = "iam.groups.delete",
    PrincipalMappingsCreate = "iam.principalMappings.create",
    PrincipalMappingsList = "iam.principalMappings.list",
    PrincipalMappingsDelete = "iam.principalMappings.delete",
    AuditLogsRead = "kms.auditLogs.read",
}

impl Permission {
    /// The bit of this permission in a [`PermSet`].
    fn bit(self) -> u128 {
        1u128 << (self as u32)
    }

    /// True for the `kms.*` resource permissions that make a key or key ring visible
    /// (design §4): key rings, keys, versions and import jobs; not `kms.auditLogs.read`.
    pub fn is_kms_resource(self) -> bool {
        let s = self.as_str();
        s.starts_with("kms.") && self != Permission::AuditLogsRead
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a permission name that does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownPermission(pub String);

impl fmt::Display for UnknownPermission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown permission '{}' (see `keywardctl role describe roles/keyward.orgAdmin` \
             for names, e.g. kms.cryptoKeyVersions.useToDecrypt)",
            self.0
        )
    }
}

impl std::error::Error for UnknownPermission {}

impl FromStr for Permission {
    type Err = UnknownPermission;
    /// Parses a permission; the Google Cloud prefix `cloudkms.` is accepted for `kms.`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let normal = match s.strip_prefix("cloudkms.") {
            Some(rest) => format!("kms.{rest}"),
            None => s.to_string(),
        };
        Permission::ALL
            .iter()
            .copied()
            .find(|p| p.as_str() == normal)
            .ok_or_else(|| UnknownPermission(s.to_string()))
    }
}

/// A set of permissions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PermSet(u128);

impl PermSet {
    /// The empty set.
    pub const EMPTY: PermSet = PermSet(0);

    /// The set of these permissions.
    pub fn of(perms: &[Permission]) -> PermSet {
        perms.iter().fold(PermSet::EMPTY, |s, p| s.with(*p))
    }

    /// Every permission.
    pub fn all() -> PermSet {
        PermSet::of(Permission::ALL)
    }

    /// This set plus `p`.
    pub fn with(self, p: Permission) -> PermSet {
        PermSet(self.0 | p.bit())
    }

    /// The union.
    pub fn union(self, other: PermSet) -> PermSet {
        PermSet(self.0 | other.0)
    }

    /// The intersection.
    pub fn intersect(self, other: PermSet) -> PermSet {
        PermSet(self.0 & other.0)
    }

    /// True if `p` is in the set.
    pub fn contains(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }

    /// True if the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The permissions in the set, in declaration order.
    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .iter()
            .copied()
            .filter(move |p| self.contains(*p))
    }

    /// Does the set allow reading public values (a public key, a certificate's value):
    /// viewPublicKey or any use permission (design §4)? Both sockets gate by this.
    pub fn reads_public_values(self) -> bool {
        [
            Permission::ViewPublicKey,
            Permission::UseToEncrypt,
            Permission::UseToDecrypt,
            Permission::UseToSign,
            Permission::UseToVerify,
        ]
        .iter()
        .any(|p| self.contains(*p))
    }

    /// The `kms.*` resource permissions (visibility, design §4).
    pub fn kms_resource() -> PermSet {
        PermSet::of(
            &Permission::ALL
                .iter()
                .copied()
                .filter(|p| p.is_kms_resource())
                .collect::<Vec<_>>(),
        )
    }
}

impl FromIterator<Permission> for PermSet {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        iter.into_iter().fold(PermSet::EMPTY, |s, p| s.with(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_fit_the_bitset() {
        assert!(Permission::ALL.len() <= 128);
        for p in Permission::ALL {
            assert_eq!(p.as_str().parse::<Permission>(), Ok(*p));
        }
        assert_eq!(
            "cloudkms.cryptoKeyVersions.useToSign".parse::<Permission>(),
            Ok(Permission::UseToSign)
        );
        assert!("kms.cryptoKeyVersions.useToFly"
            .parse::<Permission>()
            .is_err());
        assert!("".parse::<Permission>().is_err());
    }

    #[test]
    fn set_operations() {
        let s = PermSet::of(&[Permission::UseToSign, Permission::UseToVerify]);
        assert!(s.contains(Permission::UseToSign));
        assert!(!s.contains(Permission::UseToDecrypt));
        assert_eq!(s.iter().count(), 2);
        assert!(!PermSet::kms_resource().contains(Permission::AuditLogsRead));
        assert!(PermSet::kms_resource().contains(Permission::ImportJobsGet));
        assert!(!PermSet::kms_resource().contains(Permission::ProjectsGet));
    }
}
