//! The subcommands of the hierarchy (`org`, `folder`, `project`, `keyring`), `role`, `iam`,
//! `group`, `sa`, `store` and `audit`.

use super::{parse_member, parse_role, parse_time};
use clap::{Subcommand, ValueEnum};

#[derive(Debug, Subcommand)]
pub enum OrgCmd {
    /// Create an organisation; you become its orgAdmin (needs
    /// resourcemanager.organizations.create on every organisation)
    Create {
        /// Organisation id (or organizations/ID)
        org: String,
    },
    /// List the organisations you can get or list
    List,
    /// Show an organisation and its settings (needs resourcemanager.organizations.get)
    Get {
        /// acme or organizations/acme
        name: String,
    },
    /// Delete an empty organisation; its name is never reused (needs
    /// resourcemanager.organizations.delete)
    Delete {
        /// acme or organizations/acme
        name: String,
    },
    /// Set separation of duties for bindings (needs resourcemanager.organizations.update)
    SetSod {
        /// acme or organizations/acme
        name: String,
        /// off: allow; warn: allow, warn and audit; enforce: refuse unless --allow-sod-violation
        mode: SodMode,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SodMode {
    Off,
    Warn,
    Enforce,
}

/// `folder` and `project` take the same four commands; only their help differs (the
/// noun, the permissions, the examples).
macro_rules! container_cmd {
    (
        $name:ident,
        create: $create:tt,
        id: $id:tt,
        list: $list:tt,
        only: $only:tt,
        get: $get:tt,
        delete: $delete:tt,
        name: $example:tt $(,)?
    ) => {
        #[derive(Debug, Subcommand)]
        pub enum $name {
            #[doc = $create]
            Create {
                /// organizations/O or folders/F
                #[arg(long, value_name = "RESOURCE")]
                parent: String,
                #[doc = $id]
                id: String,
            },
            #[doc = $list]
            List {
                #[doc = $only]
                #[arg(long, value_name = "RESOURCE")]
                parent: Option<String>,
            },
            #[doc = $get]
            Get {
                #[doc = $example]
                name: String,
            },
            #[doc = $delete]
            Delete {
                #[doc = $example]
                name: String,
            },
        }
    };
}

container_cmd!(
    FolderCmd,
    create: "Create a folder (needs resourcemanager.folders.create on the parent)",
    id: "Folder id, unique in the store",
    list: "List folders (with --parent: needs resourcemanager.folders.list on it; else the \
           folders you can get or list)",
    only: "Only the folders directly under this organisation or folder",
    get: "Show a folder (needs resourcemanager.folders.get)",
    delete: "Delete an empty folder; its id is never reused (needs \
             resourcemanager.folders.delete)",
    name: "eng or folders/eng",
);

container_cmd!(
    ProjectCmd,
    create: "Create a project (needs resourcemanager.projects.create on the parent)",
    id: "Project id, unique in the store",
    list: "List projects (with --parent: needs resourcemanager.projects.list on it; else the \
           projects you can get or list)",
    only: "Only the projects directly under this organisation or folder",
    get: "Show a project (needs resourcemanager.projects.get)",
    delete: "Delete an empty project; its id is never reused (needs \
             resourcemanager.projects.delete)",
    name: "payments or projects/payments",
);

#[derive(Debug, Subcommand)]
pub enum KeyringCmd {
    /// Create a key ring, i.e. a PKCS#11 token (needs kms.keyRings.create on the parent)
    Create {
        /// projects/P, or organizations/O for an organisation-scoped ring
        #[arg(long, value_name = "RESOURCE")]
        parent: String,
        /// Key ring id
        id: String,
        /// Token label, 1-32 bytes [default: the id; required for ids over 32 bytes]
        #[arg(long, value_name = "LABEL")]
        token_label: Option<String>,
    },
    /// List key rings (with --parent: needs kms.keyRings.list on it; else the rings you can
    /// get or list)
    List {
        /// Only the rings of this project or organisation
        #[arg(long, value_name = "RESOURCE")]
        parent: Option<String>,
    },
    /// Show a key ring: token label, slot id, serial, settings (needs kms.keyRings.get)
    Get {
        /// Full name, e.g. projects/payments/keyRings/web
        name: String,
    },
    /// Delete an empty key ring; its name is never reused (needs kms.keyRings.delete)
    Delete {
        /// Full name, e.g. projects/payments/keyRings/web
        name: String,
    },
    /// Change a key ring's settings (needs kms.keyRings.update)
    Update {
        /// Full name, e.g. projects/payments/keyRings/web
        name: String,
        /// Accept plaintext private/secret keys in C_CreateObject (audited when used)
        #[arg(long, value_name = "true|false")]
        allow_plaintext_import: Option<bool>,
        /// Refuse templates asking for non-sensitive keys instead of overriding them
        #[arg(long, value_name = "true|false")]
        strict_templates: Option<bool>,
        /// New token label, 1-32 bytes
        #[arg(long, value_name = "LABEL")]
        token_label: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RoleCmd {
    /// List predefined roles and the custom roles you can list (iam.roles.list on their org)
    List,
    /// Show a role's permissions (custom roles: needs iam.roles.get on their organisation)
    Describe {
        /// roles/kms.admin (or kms.admin), or organizations/ORG/roles/ID
        name: String,
    },
    /// Create a custom role in an organisation (needs iam.roles.create on it)
    Create {
        /// The organisation: acme or organizations/acme
        #[arg(long, value_name = "ORG")]
        org: String,
        /// Role id: 3-64 characters from a-z, A-Z, 0-9, '_' and '.'
        id: String,
        /// A human title
        #[arg(long)]
        title: Option<String>,
        /// Fine permissions (kms.cryptoKeyVersions.useToDecrypt, ...) or Thalassa verbs (list,
        /// read, create, update, update:export, delete); comma-separated, repeatable
        #[arg(long, value_name = "P[,P...]", value_delimiter = ',', required = true)]
        permissions: Vec<String>,
    },
    /// Replace a custom role's permissions (needs iam.roles.update on its organisation);
    /// every member it is bound to is re-checked for separation of duties
    Update {
        /// organizations/ORG/roles/ID
        name: String,
        /// A new human title
        #[arg(long)]
        title: Option<String>,
        /// The new permissions (fine permissions or Thalassa verbs); comma-separated,
        /// repeatable
        #[arg(long, value_name = "P[,P...]", value_delimiter = ',', required = true)]
        permissions: Vec<String>,
        /// Update even if a member would then hold key administration and use where the
        /// organisation enforces separation of duties (audited)
        #[arg(long)]
        allow_sod_violation: bool,
    },
    /// Delete an unused custom role (needs iam.roles.delete on its organisation)
    Delete {
        /// organizations/ORG/roles/ID
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum IamCmd {
    /// Grant ROLE to MEMBER on a resource and everything below it (needs its setIamPolicy, e.g.
    /// kms.keyRings.setIamPolicy)
    Bind {
        /// An organisation, folder, project, key ring or key (full name)
        #[arg(long, value_name = "RESOURCE")]
        resource: String,
        /// roles/... (the prefix may be left out) or organizations/ORG/roles/ID
        #[arg(long, value_parser = parse_role)]
        role: String,
        /// user:, serviceAccount:, group:, unix-uid:, unix-gid: or allAuthenticated
        #[arg(long, value_parser = parse_member)]
        member: String,
        /// Bind even if the organisation enforces separation of duties (audited)
        #[arg(long)]
        allow_sod_violation: bool,
    },
    /// Remove a binding (needs its setIamPolicy permission)
    Unbind {
        /// An organisation, folder, project, key ring or key (full name)
        #[arg(long, value_name = "RESOURCE")]
        resource: String,
        /// roles/... (the prefix may be left out) or organizations/ORG/roles/ID
        #[arg(long, value_parser = parse_role)]
        role: String,
        /// user:, serviceAccount:, group:, unix-uid:, unix-gid: or allAuthenticated
        #[arg(long, value_parser = parse_member)]
        member: String,
    },
    /// Show the bindings on a resource, direct and inherited (needs its getIamPolicy permission)
    Policy {
        /// An organisation, folder, project, key ring or key (full name)
        #[arg(long, value_name = "RESOURCE")]
        resource: String,
    },
    /// Which of PERMs (all, when none given) MEMBER holds on a resource (needs getIamPolicy)
    Test {
        /// user:, serviceAccount:, group:, unix-uid:, unix-gid: or allAuthenticated
        #[arg(long, value_parser = parse_member)]
        member: String,
        /// An organisation, folder, project, key ring or key (full name)
        #[arg(long, value_name = "RESOURCE")]
        resource: String,
        /// Permissions to test, e.g. kms.cryptoKeyVersions.useToDecrypt (commas allowed)
        #[arg(value_name = "PERM", value_delimiter = ',')]
        permissions: Vec<String>,
    },
    /// Which binding grants MEMBER each permission on a resource (needs getIamPolicy)
    Explain {
        /// user:, serviceAccount:, group:, unix-uid:, unix-gid: or allAuthenticated
        #[arg(long, value_parser = parse_member)]
        member: String,
        /// An organisation, folder, project, key ring or key (full name)
        #[arg(long, value_name = "RESOURCE")]
        resource: String,
        /// Explain only this permission (and why it is not granted, if so)
        #[arg(long, value_name = "PERM")]
        permission: Option<String>,
    },
    /// Every principal holding PERM on a resource, through groups and inheritance (needs
    /// getIamPolicy)
    WhoCan {
        /// An organisation, folder, project, key ring or key (full name)
        #[arg(long, value_name = "RESOURCE")]
        resource: String,
        /// A permission, e.g. kms.cryptoKeyVersions.useToDecrypt
        #[arg(long, value_name = "PERM")]
        permission: String,
    },
    /// Make a unix uid act as a user: or serviceAccount: member (needs
    /// iam.principalMappings.create on every organisation)
    MapUid {
        /// The unix uid
        uid: u32,
        /// user:, serviceAccount:, group:, unix-uid:, unix-gid: or allAuthenticated
        #[arg(value_parser = parse_member)]
        member: String,
        /// Map even if the uid would then hold key administration and use where the
        /// organisation enforces separation of duties (audited)
        #[arg(long)]
        allow_sod_violation: bool,
    },
    /// Separation of duties: every member holding key administration and key use on the same
    /// keys of an organisation, with the bindings and groups that cause it (needs
    /// resourcemanager.organizations.getIamPolicy on it)
    SodReport {
        /// The organisation: acme or organizations/acme
        #[arg(long, value_name = "ORG")]
        org: String,
    },
    /// Remove a uid mapping (needs iam.principalMappings.delete on every organisation)
    UnmapUid {
        /// The unix uid
        uid: u32,
    },
    /// List uid mappings (needs iam.principalMappings.list on every organisation)
    Mappings,
}

#[derive(Debug, Subcommand)]
pub enum GroupCmd {
    /// Create a group (needs iam.groups.create on every organisation)
    Create {
        /// ops or group:ops
        group: String,
    },
    /// List groups (needs iam.groups.list on every organisation)
    List,
    /// Show a group's members (needs iam.groups.get on every organisation)
    Get {
        /// ops or group:ops
        group: String,
    },
    /// Delete a group (needs iam.groups.delete on every organisation)
    Delete {
        /// ops or group:ops
        group: String,
    },
    /// Add a member (any member, groups too) to a group (needs iam.groups.update)
    AddMember {
        /// ops or group:ops
        group: String,
        /// user:, serviceAccount:, group:, unix-uid:, unix-gid: or allAuthenticated
        #[arg(value_parser = parse_member)]
        member: String,
        /// Add even if a member would then hold key administration and use where the
        /// organisation enforces separation of duties (audited)
        #[arg(long)]
        allow_sod_violation: bool,
    },
    /// Remove a member from a group (needs iam.groups.update)
    RemoveMember {
        /// ops or group:ops
        group: String,
        /// user:, serviceAccount:, group:, unix-uid:, unix-gid: or allAuthenticated
        #[arg(value_parser = parse_member)]
        member: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SaCmd {
    /// Create a service account ID@PROJECT (needs iam.serviceAccounts.create on the project)
    Create {
        /// payments or projects/payments
        #[arg(long, value_name = "PROJECT")]
        project: String,
        /// Account id: 1-30 characters, a-z, 0-9 and '-', starting with a letter
        id: String,
        #[arg(long, value_name = "NAME")]
        display_name: Option<String>,
    },
    /// List service accounts (needs iam.serviceAccounts.list on their project)
    List {
        /// payments or projects/payments
        #[arg(long, value_name = "PROJECT")]
        project: Option<String>,
    },
    /// Delete a service account, its keys, bindings and mappings; never reused (needs
    /// iam.serviceAccounts.delete)
    Delete {
        /// web@payments or serviceAccount:web@payments
        account: String,
    },
    /// Service-account keys: the PINs and KEYWARD_CREDENTIALS secrets
    #[command(subcommand)]
    Key(SaKeyCmd),
}

#[derive(Debug, Subcommand)]
pub enum SaKeyCmd {
    /// Create a key, shown once (needs iam.serviceAccountKeys.create on the project)
    Create {
        /// web@payments or serviceAccount:web@payments
        account: String,
        /// Write the key to this new file (mode 0600) instead of stdout, e.g. a
        /// KEYWARD_CREDENTIALS file
        #[arg(long, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
    },
    /// List an account's keys (needs iam.serviceAccountKeys.list on the project)
    List {
        /// web@payments or serviceAccount:web@payments
        account: String,
    },
    /// Revoke a key (needs iam.serviceAccountKeys.delete on the project)
    Revoke {
        /// web@payments or serviceAccount:web@payments
        account: String,
        /// The key id (`sa key list` shows them)
        key_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum StoreCmd {
    /// SQLite's full integrity check (reads the whole file, so it is not run at every open);
    /// exit 0 if the store is sound, 1 with SQLite's findings if not
    Check,
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// What the backing token can and cannot do (learnt by keywardd at start), and which
    /// Keyward features each gap disables
    Capabilities,
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Show the newest records
    Tail {
        /// How many records
        #[arg(short = 'n', long = "count", value_name = "N", default_value_t = 20)]
        count: u32,
    },
    /// Search records (filters combine with AND)
    Query {
        /// Only records of this principal (member string, e.g. user:alice@example.com)
        #[arg(long, value_name = "MEMBER")]
        principal: Option<String>,
        /// Only records about this resource or anything below it
        #[arg(long, value_name = "RESOURCE")]
        resource: Option<String>,
        /// Only records of this action: a name (iam.bind, key.encrypt), what is under it (key),
        /// a method (encrypt), a prefix (C_Sign*), old names too; any case
        #[arg(long, value_name = "ACTION")]
        action: Option<String>,
        /// Only records with this result
        #[arg(long)]
        result: Option<AuditResult>,
        /// At or after TIME: a date (2026-12-07, midnight UTC), RFC 3339
        /// (2026-12-07T10:00:00Z), a duration back from now (1h, 7d, 1h30m) or unix seconds
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        since: Option<i64>,
        /// Before TIME (as --since)
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        until: Option<i64>,
        /// At most N records (the newest)
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
    /// Check the hash chain of the whole log
    Verify,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AuditResult {
    Allowed,
    Denied,
    Error,
}
