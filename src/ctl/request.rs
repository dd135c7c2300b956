//! Every admin command becomes exactly one [`AdminRequest`] ([`to_request`]); names are
//! written canonically here (`acme` → `organizations/acme`), so the handler sees one form.

use super::args::*;
use super::cert;
use super::wrap::read_file;
use keyward_wire::admin::{AdminRequest, AuditFilter};

/// `acme` or `organizations/acme` → `acme` (what init and org create take).
pub fn org_id(s: &str) -> String {
    s.strip_prefix("organizations/").unwrap_or(s).to_string()
}

/// `acme` → `organizations/acme`; anything with a `/` is left for the handler to judge.
pub fn full_name(prefix: &str, s: &str) -> String {
    if s.contains('/') {
        s.to_string()
    } else {
        format!("{prefix}/{s}")
    }
}

/// `ops` or `group:ops` → `ops`.
pub fn group_name(s: &str) -> String {
    s.strip_prefix("group:").unwrap_or(s).to_string()
}

/// `web@payments` or `serviceAccount:web@payments` → `web@payments`.
pub fn account_email(s: &str) -> String {
    s.strip_prefix("serviceAccount:").unwrap_or(s).to_string()
}

/// `payments` or `projects/payments` → `payments`.
pub fn project_id(s: &str) -> String {
    s.strip_prefix("projects/").unwrap_or(s).to_string()
}

/// Where an admin command writes its answer instead of stdout (its `--out`), if anywhere:
/// the new service-account key, or the PEM of a public key.
pub fn out_file(cmd: &Command) -> Option<std::path::PathBuf> {
    match cmd {
        Command::Sa(SaCmd::Key(SaKeyCmd::Create { out, .. }))
        | Command::Key(KeyCmd::GetPublicKey { out, .. })
        | Command::ImportJob(ImportJobCmd::GetPublicKey { out, .. }) => out.clone(),
        _ => None,
    }
}

/// The one request a command stands for. An `Err` is a usage error.
pub fn to_request(cmd: Command) -> Result<AdminRequest, String> {
    use AdminRequest as R;
    let org = |s: String| full_name("organizations", &s);
    Ok(match cmd {
        Command::Encrypt(_)
        | Command::Decrypt(_)
        | Command::Sign(_)
        | Command::Verify(_)
        | Command::Mac(_) => {
            return Err("the crypto commands go to the client socket, not the admin".into())
        }
        Command::Completions { .. } => return Err("completions are made locally".into()),
        Command::Store(_) => return Err("store commands read the file given with --db".into()),
        Command::Status => R::Status,
        Command::Token(TokenCmd::Capabilities) => R::TokenCapabilities,
        Command::Init { org, admin } => R::Init {
            org: org_id(&org),
            admin,
        },
        Command::Org(c) => match c {
            OrgCmd::Create { org } => R::OrgCreate { org: org_id(&org) },
            OrgCmd::List => R::OrgList,
            OrgCmd::Get { name } => R::OrgGet { name: org(name) },
            OrgCmd::Delete { name } => R::OrgDelete { name: org(name) },
            OrgCmd::SetSod { name, mode } => {
                let mode = match mode {
                    SodMode::Off => "off",
                    SodMode::Warn => "warn",
                    SodMode::Enforce => "enforce",
                };
                R::OrgSetSod {
                    name: org(name),
                    mode: mode.into(),
                }
            }
        },
        Command::Folder(c) => match c {
            FolderCmd::Create { parent, id } => R::FolderCreate { parent, id },
            FolderCmd::List { parent } => R::FolderList { parent },
            FolderCmd::Get { name } => R::FolderGet {
                name: full_name("folders", &name),
            },
            FolderCmd::Delete { name } => R::FolderDelete {
                name: full_name("folders", &name),
            },
        },
        Command::Project(c) => match c {
            ProjectCmd::Create { parent, id } => R::ProjectCreate { parent, id },
            ProjectCmd::List { parent } => R::ProjectList { parent },
            ProjectCmd::Get { name } => R::ProjectGet {
                name: full_name("projects", &name),
            },
            ProjectCmd::Delete { name } => R::ProjectDelete {
                name: full_name("projects", &name),
            },
        },
        Command::Keyring(c) => match c {
            KeyringCmd::Create {
                parent,
                id,
                token_label,
            } => R::KeyRingCreate {
                parent,
                id,
                token_label,
            },
            KeyringCmd::List { parent } => R::KeyRingList { parent },
            KeyringCmd::Get { name } => R::KeyRingGet { name },
            KeyringCmd::Delete { name } => R::KeyRingDelete { name },
            KeyringCmd::Update {
                name,
                allow_plaintext_import,
                strict_templates,
                token_label,
            } => {
                if allow_plaintext_import.is_none()
                    && strict_templates.is_none()
                    && token_label.is_none()
                {
                    return Err("nothing to update: give --allow-plaintext-import, \
                                --strict-templates or --token-label"
                        .into());
                }
                R::KeyRingUpdate {
                    name,
                    allow_plaintext_import,
                    strict_templates,
                    token_label,
                }
            }
        },
        Command::Role(c) => match c {
            RoleCmd::List => R::RoleList,
            RoleCmd::Describe { name } => R::RoleDescribe {
                name: parse_role(&name)?,
            },
            RoleCmd::Create {
                org: o,
                id,
                title,
                permissions,
            } => {
                let permissions: Vec<String> = permissions
                    .into_iter()
                    .map(|p| p.trim().to_string())
                    .filter(|p| !p.is_empty())
                    .collect();
                if permissions.is_empty() {
                    return Err("--permissions lists no permission".into());
                }
                R::RoleCreate {
                    org: org(o),
                    id,
                    title,
                    permissions,
                }
            }
            RoleCmd::Update {
                name,
                title,
                permissions,
                allow_sod_violation,
            } => {
                let permissions: Vec<String> = permissions
                    .into_iter()
                    .map(|p| p.trim().to_string())
                    .filter(|p| !p.is_empty())
                    .collect();
                if permissions.is_empty() {
                    return Err("--permissions lists no permission".into());
                }
                R::RoleUpdate {
                    name: parse_role(&name)?,
                    title,
                    permissions,
                    allow_sod_violation,
                }
            }
            RoleCmd::Delete { name } => R::RoleDelete {
                name: parse_role(&name)?,
            },
        },
        Command::Iam(c) => match c {
            IamCmd::Bind {
                resource,
                role,
                member,
                allow_sod_violation,
            } => R::IamBind {
                resource,
                role,
                member,
                allow_sod_violation,
            },
            IamCmd::Unbind {
                resource,
                role,
                member,
            } => R::IamUnbind {
                resource,
                role,
                member,
            },
            IamCmd::Policy { resource } => R::IamPolicy { resource },
            IamCmd::Test {
                member,
                resource,
                permissions,
            } => {
                let permissions = permissions
                    .into_iter()
                    .map(|p| p.trim().to_string())
                    .filter(|p| !p.is_empty())
                    .collect();
                R::IamTest {
                    member,
                    resource,
                    permissions,
                }
            }
            IamCmd::Explain {
                member,
                resource,
                permission,
            } => R::IamExplain {
                member,
                resource,
                permission,
            },
            IamCmd::WhoCan {
                resource,
                permission,
            } => R::IamWhoCan {
                resource,
                permission,
            },
            IamCmd::MapUid {
                uid,
                member,
                allow_sod_violation,
            } => R::IamMapUid {
                uid,
                member,
                allow_sod_violation,
            },
            IamCmd::SodReport { org: o } => R::IamSodReport { org: org(o) },
            IamCmd::UnmapUid { uid } => R::IamUnmapUid { uid },
            IamCmd::Mappings => R::IamListMappings,
        },
        Command::Group(c) => match c {
            GroupCmd::Create { group } => R::GroupCreate {
                group: group_name(&group),
            },
            GroupCmd::List => R::GroupList,
            GroupCmd::Get { group } => R::GroupGet {
                group: group_name(&group),
            },
            GroupCmd::Delete { group } => R::GroupDelete {
                group: group_name(&group),
            },
            GroupCmd::AddMember {
                group,
                member,
                allow_sod_violation,
            } => R::GroupAddMember {
                group: group_name(&group),
                member,
                allow_sod_violation,
            },
            GroupCmd::RemoveMember { group, member } => R::GroupRemoveMember {
                group: group_name(&group),
                member,
            },
        },
        Command::Sa(c) => match c {
            SaCmd::Create {
                project,
                id,
                display_name,
            } => R::SaCreate {
                project: project_id(&project),
                id,
                display_name,
            },
            SaCmd::List { project } => R::SaList {
                project: project.as_deref().map(project_id),
            },
            SaCmd::Delete { account } => R::SaDelete {
                account: account_email(&account),
            },
            SaCmd::Key(k) => match k {
                SaKeyCmd::Create { account, .. } => R::SaKeyCreate {
                    account: account_email(&account),
                },
                SaKeyCmd::List { account } => R::SaKeyList {
                    account: account_email(&account),
                },
                SaKeyCmd::Revoke { account, key_id } => R::SaKeyRevoke {
                    account: account_email(&account),
                    key_id,
                },
            },
        },
        Command::Key(c) => match c {
            KeyCmd::Create {
                keyring,
                purpose,
                algorithm,
                exportable,
                id,
            } => R::KeyCreate {
                keyring,
                id,
                purpose,
                algorithm,
                exportable,
            },
            KeyCmd::List { keyring } => R::KeyList { keyring },
            KeyCmd::Get { name } => R::KeyGet { name },
            KeyCmd::Rotate { name, set_primary } => R::KeyRotate { name, set_primary },
            KeyCmd::SetPrimary { name, version } => R::KeySetPrimary { name, version },
            KeyCmd::GetPublicKey { name, version, .. } => R::KeyGetPublicKey { name, version },
            KeyCmd::Cert(CertCmd::List { key } | CertCmd::Get { key }) => R::KeyCertList { key },
            KeyCmd::Cert(CertCmd::Import {
                key,
                cert,
                chain,
                label,
            }) => R::KeyCertImport {
                key,
                certs: cert::read_chain(&cert, chain.as_deref())?,
                label,
            },
            KeyCmd::Cert(CertCmd::Create {
                key,
                import_cert: Some(cert),
                chain,
                ..
            }) => R::KeyCertImport {
                key,
                certs: cert::read_chain(&cert, chain.as_deref())?,
                label: None,
            },
            KeyCmd::Export { .. } => return Err("key export runs through keywardd".into()),
            KeyCmd::Cert(CertCmd::Create { .. }) => {
                return Err("key cert create --self-signed/--csr runs through keywardd".into())
            }
            KeyCmd::Import {
                import_job,
                key,
                wrapped_key_file,
                algorithm,
                public_key_file,
            } => R::KeyImport {
                import_job,
                key,
                algorithm,
                wrapped: read_file(&wrapped_key_file)?,
                public_key: public_key_file.as_deref().map(read_file).transpose()?,
            },
            KeyCmd::WrapForImport { .. } => {
                return Err("wrap-for-import runs in keywardctl, not as a request".into())
            }
        },
        Command::ImportJob(c) => match c {
            ImportJobCmd::Create {
                keyring,
                method,
                id,
            } => R::ImportJobCreate {
                keyring,
                id,
                method,
            },
            ImportJobCmd::Get { name } => R::ImportJobGet { name, pem: false },
            ImportJobCmd::GetPublicKey { name, .. } => R::ImportJobGet { name, pem: true },
            ImportJobCmd::List { keyring } => R::ImportJobList { keyring },
        },
        Command::Version(c) => match c {
            VersionCmd::List { key } => R::VersionList { key },
            VersionCmd::Get { name } => R::VersionGet { name },
            VersionCmd::Enable { name } => R::VersionEnable { name },
            VersionCmd::Disable { name } => R::VersionDisable { name },
            VersionCmd::Destroy { name, grace } => R::VersionDestroy {
                name,
                grace_secs: grace,
            },
            VersionCmd::Restore { name } => R::VersionRestore { name },
        },
        Command::Audit(c) => match c {
            AuditCmd::Tail { count } => R::AuditTail { count },
            AuditCmd::Query {
                principal,
                resource,
                action,
                result,
                since,
                until,
                limit,
            } => {
                if let (Some(s), Some(u)) = (since, until) {
                    if s >= u {
                        return Err(format!(
                            "--since ({s}) must be before --until ({u}): nothing lies between"
                        ));
                    }
                }
                let result = result.map(|r| {
                    match r {
                        AuditResult::Allowed => "allowed",
                        AuditResult::Denied => "denied",
                        AuditResult::Error => "error",
                    }
                    .to_string()
                });
                R::AuditQuery {
                    filter: AuditFilter {
                        principal,
                        resource,
                        action,
                        result,
                        since,
                        until,
                        limit,
                    },
                }
            }
            AuditCmd::Verify => R::AuditVerify,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn req(args: &[&str]) -> Result<AdminRequest, String> {
        let cli = Cli::try_parse_from(std::iter::once("keywardctl").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        to_request(cli.command)
    }

    #[test]
    fn names_are_normalised() {
        use AdminRequest as R;
        assert_eq!(
            req(&["org", "get", "acme"]),
            Ok(R::OrgGet {
                name: "organizations/acme".into()
            })
        );
        assert_eq!(
            req(&["org", "get", "organizations/acme"]),
            Ok(R::OrgGet {
                name: "organizations/acme".into()
            })
        );
        assert_eq!(
            req(&["org", "create", "organizations/acme"]),
            Ok(R::OrgCreate { org: "acme".into() })
        );
        assert_eq!(
            req(&["folder", "delete", "eng"]),
            Ok(R::FolderDelete {
                name: "folders/eng".into()
            })
        );
        assert_eq!(
            req(&["project", "get", "projects/p"]),
            Ok(R::ProjectGet {
                name: "projects/p".into()
            })
        );
        assert_eq!(
            req(&["group", "get", "group:ops"]),
            Ok(R::GroupGet {
                group: "ops".into()
            })
        );
        assert_eq!(
            req(&["sa", "key", "revoke", "serviceAccount:web@payments", "kabc"]),
            Ok(R::SaKeyRevoke {
                account: "web@payments".into(),
                key_id: "kabc".into()
            })
        );
        assert_eq!(
            req(&["sa", "create", "--project", "projects/payments", "web"]),
            Ok(R::SaCreate {
                project: "payments".into(),
                id: "web".into(),
                display_name: None
            })
        );
        assert_eq!(
            req(&[
                "role",
                "create",
                "--org",
                "acme",
                "dec",
                "--permissions",
                "read,list",
                "--permissions",
                "kms.cryptoKeyVersions.useToDecrypt"
            ]),
            Ok(R::RoleCreate {
                org: "organizations/acme".into(),
                id: "dec".into(),
                title: None,
                permissions: vec![
                    "read".into(),
                    "list".into(),
                    "kms.cryptoKeyVersions.useToDecrypt".into()
                ],
            })
        );
        assert_eq!(
            req(&[
                "iam",
                "bind",
                "--resource",
                "projects/p",
                "--role",
                "kms.viewer",
                "--member",
                "unix-uid:1001"
            ]),
            Ok(R::IamBind {
                resource: "projects/p".into(),
                role: "roles/kms.viewer".into(),
                member: "unix-uid:1001".into(),
                allow_sod_violation: false,
            })
        );
        // The Thalassa policies are bound by their own names.
        assert_eq!(
            parse_role("kms:ReadAccess"),
            Ok("kms:ReadAccess".to_string())
        );
        assert_eq!(parse_role("kms.signer"), Ok("roles/kms.signer".to_string()));
    }
}
