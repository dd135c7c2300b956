//! keywardctl: the operator's command line for Keyward (design §1-§3, §6).
//!
//! Every command becomes exactly one [`AdminRequest`] ([`to_request`]), which is sent to the one
//! admin handler ([`run_request`]) and whose [`AdminResponse`] is printed ([`print_response`]).
//! With `--db PATH` the handler runs in-process over the SQLite store; the keywardd admin
//! socket will take its place behind [`run_request`] when the daemon lands.
//!
//! Output: by default a one-line message, an aligned table and warnings on stderr; with
//! `--json` the response's JSON document as is (JSON lines for `audit tail|query`, for a SIEM,
//! design §6). Exit codes: 0 ok, 1 the request failed, 2 usage error.
//!
//! The offline caller (`--as` absent) is `unix-uid:<real uid>` with the process's unix groups,
//! read from `/proc/self/status` (`Uid:`, `Gid:`, `Groups:`): no `unsafe`, no extra crate, and
//! the same identity keywardd will derive from `SO_PEERCRED`/`SO_PEERGROUPS`.
#![forbid(unsafe_code)]

use clap::{Args, Parser, Subcommand, ValueEnum};
use keyward::admin::{AdminError, AdminService, Caller};
use keyward::policy::{Member, Principal};
use keyward_wire::admin::{AdminRequest, AdminResponse, AuditFilter, Table};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// CKR_ARGUMENTS_BAD: the code of a request keywardctl refuses before sending it.
const CKR_ARGUMENTS_BAD: u64 = 0x07;

/// The help heading of the options every command takes.
const GLOBAL: &str = "Global options";

const AFTER_HELP: &str = "\
Members: user:EMAIL, serviceAccount:ID@PROJECT, group:NAME, unix-uid:N, unix-gid:N,
allAuthenticated. Resources: organizations/O, folders/F, projects/P, projects/P/keyRings/R,
organizations/O/keyRings/R, .../cryptoKeys/K.

Exit codes: 0 success; 1 the request failed (error: on stderr, and with --json an
{\"error\": {\"message\", \"rv\"}} document on stdout); 2 usage error.";

/// Keyward administration: resources, IAM, service accounts and the audit log.
#[derive(Debug, Parser)]
#[command(name = "keywardctl", version, after_help = AFTER_HELP)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options of every command.
#[derive(Debug, Args)]
struct Global {
    /// Run offline on the store at PATH (the handler runs in this process)
    #[arg(long, global = true, env = "KEYWARD_DB", value_name = "PATH", help_heading = GLOBAL)]
    db: Option<PathBuf>,

    /// Offline only: act as MEMBER (user:, serviceAccount:, unix-uid: or anonymous)
    /// [default: unix-uid:<your uid>, with your unix groups]
    #[arg(
        long = "as",
        global = true,
        value_name = "MEMBER",
        value_parser = parse_caller,
        help_heading = GLOBAL
    )]
    as_member: Option<Member>,

    /// Print the answer as one JSON document (JSON lines for audit tail/query)
    #[arg(long, global = true, help_heading = GLOBAL)]
    json: bool,

    /// keywardd's admin socket (used without --db)
    #[arg(
        long,
        global = true,
        env = "KEYWARD_ADMIN_SOCKET",
        value_name = "PATH",
        default_value = "/run/keyward/admin.sock",
        help_heading = GLOBAL
    )]
    socket: PathBuf,

    /// keywardd's client socket (encrypt, decrypt, sign, verify, mac)
    #[arg(
        long,
        global = true,
        env = "KEYWARD_SOCKET",
        value_name = "PATH",
        default_value = "/run/keyward/client.sock",
        help_heading = GLOBAL
    )]
    client_socket: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Bootstrap an empty store: create ORG and bind roles/keyward.orgAdmin to MEMBER (offline)
    Init {
        /// The first organisation's id (or organizations/ID)
        #[arg(long, value_name = "ORG")]
        org: String,
        /// Its first administrator
        #[arg(long, value_name = "MEMBER", value_parser = parse_member)]
        admin: String,
    },
    /// Organisations: the top of the resource hierarchy
    #[command(subcommand)]
    Org(OrgCmd),
    /// Folders: optional, nestable groupings under an organisation
    #[command(subcommand)]
    Folder(FolderCmd),
    /// Projects: hold key rings and service accounts
    #[command(subcommand)]
    Project(ProjectCmd),
    /// Key rings: each is one PKCS#11 token
    #[command(subcommand)]
    Keyring(KeyringCmd),
    /// Roles: predefined (roles/...) and custom (organizations/ORG/roles/ID)
    #[command(subcommand)]
    Role(RoleCmd),
    /// Bindings and the questions about them (test, explain, who-can), uid mappings
    #[command(subcommand)]
    Iam(IamCmd),
    /// Groups of members (bindable as group:NAME; may nest)
    #[command(subcommand)]
    Group(GroupCmd),
    /// Service accounts and their keys
    #[command(subcommand)]
    Sa(SaCmd),
    /// Crypto keys: create, rotate, primary version, public key (through keywardd)
    #[command(subcommand)]
    Key(KeyCmd),
    /// Key versions: enable, disable, schedule destruction, restore (through keywardd)
    #[command(subcommand)]
    Version(VersionCmd),
    /// BYOK import jobs: RSA wrapping pairs made in the token (through keywardd)
    #[command(subcommand)]
    ImportJob(ImportJobCmd),
    /// The hash-chained audit log (needs kms.auditLogs.read on every organisation)
    #[command(subcommand)]
    Audit(AuditCmd),
    /// AES-GCM encrypt with the key's primary version (client socket, as you)
    Encrypt(CryptoArgs),
    /// Decrypt a `keywardctl encrypt` ciphertext with the version it names (client socket)
    Decrypt(CryptoArgs),
    /// Sign with an asymmetric key's primary version; DER signature out (client socket)
    Sign(CryptoArgs),
    /// Verify a signature: exit 0 if valid, 1 if not (client socket)
    Verify(CryptoArgs),
    /// HMAC-SHA256 tag with a MAC key, or check one with --verify (client socket)
    Mac(CryptoArgs),
    /// Is keywardd up? Its token, and (with kms.auditLogs.read) counts and the audit head;
    /// exit 1 if the daemon is down
    Status,
    /// The store file itself (needs --db: the file's permissions are the gate)
    #[command(subcommand)]
    Store(StoreCmd),
    /// Print a shell completion script: `source <(keywardctl completions bash)`
    Completions {
        /// The shell
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// The options of the crypto commands.
#[derive(Debug, Args)]
struct CryptoArgs {
    /// The crypto key (projects/P/keyRings/R/cryptoKeys/K)
    #[arg(long, value_name = "KEY")]
    key: String,
    /// Input file [default: stdin]
    #[arg(long = "in", value_name = "FILE")]
    input: Option<PathBuf>,
    /// Output file [default: stdout]
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// encrypt/decrypt: additional authenticated data, read from FILE
    #[arg(long, value_name = "FILE")]
    aad_file: Option<PathBuf>,
    /// sign/verify: hash the input here with this digest and send only the digest
    #[arg(long, value_name = "ALG", value_parser = ["sha256", "sha384"])]
    digest: Option<String>,
    /// verify: the signature file; mac: check this tag file instead of making a tag
    #[arg(long, value_name = "FILE")]
    signature: Option<PathBuf>,
    /// mac: check the tag in FILE (exit 0 if valid, 1 if not)
    #[arg(long, value_name = "FILE")]
    verify: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum KeyCmd {
    /// Create a key; its first version is generated in the token (needs kms.cryptoKeys.create
    /// on the ring, and kms.cryptoKeyVersions.exportKeyMaterial for --exportable)
    Create {
        /// The key ring, e.g. projects/payments/keyRings/web
        #[arg(long, value_name = "KEYRING")]
        keyring: String,
        /// ENCRYPT_DECRYPT, ASYMMETRIC_SIGN, ASYMMETRIC_DECRYPT or MAC
        #[arg(long, value_name = "PURPOSE")]
        purpose: String,
        /// e.g. AES_256_GCM, EC_SIGN_P256_SHA256, RSA_SIGN_PSS_3072_SHA256,
        /// RSA_DECRYPT_OAEP_3072_SHA1, HMAC_SHA256
        #[arg(long, value_name = "ALGORITHM")]
        algorithm: String,
        /// Let the key material leave the token wrapped (CKA_EXTRACTABLE; still sensitive)
        #[arg(long)]
        exportable: bool,
        /// Key id
        id: String,
    },
    /// List the keys of a ring (needs kms.cryptoKeys.list)
    List {
        /// The key ring
        #[arg(long, value_name = "KEYRING")]
        keyring: String,
    },
    /// Show a key and its versions (needs kms.cryptoKeys.get)
    Get {
        /// Full name, e.g. projects/p/keyRings/r/cryptoKeys/k
        name: String,
    },
    /// Add a version: primary at once for symmetric keys, for asymmetric ones only with
    /// --set-primary (needs kms.cryptoKeyVersions.create; + kms.cryptoKeys.update to move the
    /// primary of an asymmetric key)
    Rotate {
        /// The key
        name: String,
        /// Make the new version primary (asymmetric keys)
        #[arg(long)]
        set_primary: bool,
    },
    /// Make an ENABLED version primary (needs kms.cryptoKeys.update)
    SetPrimary {
        /// The key
        name: String,
        /// The version number
        version: u64,
    },
    /// Import wrapped key material (BYOK) as a new version of KEY, made if missing; the
    /// primary version never changes (needs kms.importJobs.useToImport; + kms.cryptoKeys.create
    /// for a new key)
    Import {
        /// The import job: its full name, or its id in the key's ring
        #[arg(long, value_name = "JOB")]
        import_job: String,
        /// The key, e.g. projects/p/keyRings/r/cryptoKeys/k
        #[arg(long, value_name = "KEY")]
        key: String,
        /// The wrapped material: RSA-OAEP(ephemeral AES-256 key) || AES-KWP(material), as
        /// `key wrap-for-import` or openssl make it
        #[arg(long, value_name = "FILE")]
        wrapped_key_file: PathBuf,
        /// The key's algorithm, e.g. AES_256_GCM, EC_SIGN_P256_SHA256, RSA_SIGN_PKCS1_3072_SHA256
        #[arg(long, value_name = "ALGORITHM")]
        algorithm: String,
        /// The public key (SPKI, PEM or DER) of an asymmetric key: keywardd checks the pair
        #[arg(long, value_name = "FILE")]
        public_key_file: Option<PathBuf>,
    },
    /// Wrap key material for an import job, here in keywardctl (never in keywardd): raw bytes
    /// for AES/HMAC, PKCS#8 DER for EC/RSA private keys
    WrapForImport {
        /// The import job whose public key and method to use (needs kms.importJobs.get)
        #[arg(long, value_name = "JOB", required_unless_present = "public_key_file")]
        import_job: Option<String>,
        /// Or: the job's public key (PEM SPKI), with --method
        #[arg(long, value_name = "FILE", conflicts_with = "import_job")]
        public_key_file: Option<PathBuf>,
        /// The import method, with --public-key-file [default: rsa-oaep-<bits>-sha1-aes-256]
        #[arg(long, value_name = "METHOD")]
        method: Option<String>,
        /// The plain key material
        #[arg(long, value_name = "FILE")]
        key_material_file: PathBuf,
        /// Where to write the wrapped blob
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Print a version's public key as PEM (needs kms.cryptoKeyVersions.viewPublicKey)
    GetPublicKey {
        /// The key (its primary version) or a version's full name
        name: String,
        /// The version number [default: the primary]
        #[arg(long)]
        version: Option<u64>,
    },
    /// Certificates of an asymmetric key: make one signed in the token, attach a CA-issued
    /// one and its chain, list them (certificate objects through the PKCS#11 module)
    #[command(subcommand)]
    Cert(CertCmd),
    /// Export an --exportable key's material wrapped by a wrapping key, through keywardd's
    /// client socket (needs kms.cryptoKeyVersions.exportKeyMaterial on the key and
    /// useToEncrypt on the wrapping key, an AES or RSA key made with CKA_WRAP through the
    /// module; audited at warning level)
    Export {
        /// The key to export
        #[arg(long, value_name = "KEY")]
        key: String,
        /// Its version [default: the primary]
        #[arg(long, value_name = "N")]
        version: Option<u64>,
        /// The wrapping key (its primary version)
        #[arg(long, value_name = "KEY")]
        wrapping_key: String,
        /// aes-kwp (RFC 5649), aes-kw (RFC 3394), rsa-oaep-sha1 or rsa-oaep-sha256
        #[arg(long, value_name = "MECH", default_value = "aes-kwp",
              value_parser = ["aes-kwp", "aes-kw", "rsa-oaep-sha1", "rsa-oaep-sha256"])]
        mechanism: String,
        /// Write the wrapped key here [default: stdout]
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum CertCmd {
    /// Make a self-signed certificate (attached to the key) or a PKCS#10 request for the key's
    /// primary version, signed in the token through keywardd (needs viewPublicKey and
    /// useToSign on the key; attaching needs kms.cryptoKeys.update); or, with --import-cert,
    /// attach a CA-issued certificate like `key cert import`
    #[command(group(clap::ArgGroup::new("what").required(true).args(["self_signed", "csr", "import_cert"])))]
    Create {
        /// The key (projects/P/keyRings/R/cryptoKeys/K): EC P-256/P-384 or RSA signing key
        #[arg(long, value_name = "KEY")]
        key: String,
        /// A self-signed X.509 v3 certificate, attached to the key as a certificate object
        #[arg(long)]
        self_signed: bool,
        /// A PKCS#10 certificate signing request (nothing is attached)
        #[arg(long)]
        csr: bool,
        /// Attach this CA-issued certificate (PEM or DER) instead
        #[arg(long, value_name = "FILE")]
        import_cert: Option<PathBuf>,
        /// With --import-cert: the issuing chain (PEM, issuer first)
        #[arg(long, value_name = "FILE", requires = "import_cert")]
        chain: Option<PathBuf>,
        /// Subject, RFC 4514 (e.g. CN=web,O=Example) [default: CN=<key id>]
        #[arg(long, value_name = "DN")]
        subject: Option<String>,
        /// Validity of a self-signed certificate, in days
        #[arg(long, value_name = "N", default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36500))]
        days: u32,
        /// Write the PEM here [default: stdout]
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Attach a CA-issued certificate of the key (PEM or DER) and its chain, so that Java and
    /// NSS find them through the module (needs kms.cryptoKeys.update); a certificate whose
    /// public key is not one of the key's is refused
    #[command(alias = "import-cert")]
    Import {
        /// The key
        #[arg(long, value_name = "KEY")]
        key: String,
        /// The certificate (PEM or DER; more PEM blocks after the first are its chain)
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        /// The issuing chain (PEM, issuer first)
        #[arg(long, value_name = "FILE")]
        chain: Option<PathBuf>,
        /// CKA_LABEL of the certificate object [default: the key's label: the CKA_LABEL of a
        /// key made through the PKCS#11 module, else the key id]
        #[arg(long, value_name = "LABEL")]
        label: Option<String>,
    },
    /// List the certificates attached to a key (needs kms.cryptoKeys.get)
    List {
        /// The key
        #[arg(long, value_name = "KEY")]
        key: String,
    },
    /// Print the certificates attached to a key as PEM (needs kms.cryptoKeys.get)
    Get {
        /// The key
        #[arg(long, value_name = "KEY")]
        key: String,
    },
}

#[derive(Debug, Subcommand)]
enum ImportJobCmd {
    /// Create an import job: an RSA wrapping pair generated in the token (the private key
    /// never leaves it); prints the public key as PEM. ACTIVE for 3 days
    /// (needs kms.importJobs.create)
    Create {
        /// The key ring
        #[arg(long, value_name = "KEYRING")]
        keyring: String,
        /// rsa-oaep-3072-sha1-aes-256, rsa-oaep-4096-sha1-aes-256,
        /// rsa-oaep-3072-sha256-aes-256, rsa-oaep-4096-sha256-aes-256 or rsa-oaep-3072-sha256
        #[arg(long, value_name = "METHOD")]
        method: String,
        /// Job id [default: job-<random>]
        #[arg(long, value_name = "ID")]
        id: Option<String>,
    },
    /// Show a job (needs kms.importJobs.get)
    Get {
        /// Full name, e.g. projects/p/keyRings/r/importJobs/j
        name: String,
    },
    /// Print a job's public key as PEM (needs kms.importJobs.get)
    GetPublicKey {
        /// Full name
        name: String,
    },
    /// List a ring's import jobs (needs kms.importJobs.list)
    List {
        /// The key ring
        #[arg(long, value_name = "KEYRING")]
        keyring: String,
    },
}

#[derive(Debug, Subcommand)]
enum VersionCmd {
    /// List a key's versions (needs kms.cryptoKeyVersions.list)
    List {
        /// The key
        key: String,
    },
    /// Show a version (needs kms.cryptoKeyVersions.get)
    Get {
        /// Full name, e.g. .../cryptoKeys/k/cryptoKeyVersions/2
        name: String,
    },
    /// Enable a DISABLED version (needs kms.cryptoKeyVersions.update)
    Enable {
        /// The version
        name: String,
    },
    /// Disable a version: it stays in the token but cannot be used
    /// (needs kms.cryptoKeyVersions.update)
    Disable {
        /// The version
        name: String,
    },
    /// Schedule a version's destruction; its token object is destroyed when the grace ends
    /// (needs kms.cryptoKeyVersions.destroy)
    Destroy {
        /// The version
        name: String,
        /// Grace period: 30d, 36h, or seconds; at least 1 day [default: 30d]
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        grace: Option<u64>,
    },
    /// Cancel a scheduled destruction; the version comes back DISABLED
    /// (needs kms.cryptoKeyVersions.restore)
    Restore {
        /// The version
        name: String,
    },
}

/// `30d`, `36h`, `90m`, `3600s` or plain seconds.
fn parse_duration(s: &str) -> Result<u64, String> {
    let (num, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c),
        _ => (s, 's'),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration '{s}': use e.g. 30d, 36h, 90m or seconds"))?;
    let mult = match unit {
        'd' => 86_400,
        'h' => 3_600,
        'm' => 60,
        's' => 1,
        _ => return Err(format!("invalid duration '{s}': units are d, h, m, s")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("duration '{s}' is too long"))
}

#[derive(Debug, Subcommand)]
enum OrgCmd {
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
enum SodMode {
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
        enum $name {
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
enum KeyringCmd {
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
enum RoleCmd {
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
enum IamCmd {
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
enum GroupCmd {
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
enum SaCmd {
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
enum SaKeyCmd {
    /// Create a key, shown once (needs iam.serviceAccountKeys.create on the project)
    Create {
        /// web@payments or serviceAccount:web@payments
        account: String,
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
enum StoreCmd {
    /// SQLite's full integrity check (reads the whole file, so it is not run at every open);
    /// exit 0 if the store is sound, 1 with SQLite's findings if not
    Check,
}

#[derive(Debug, Subcommand)]
enum AuditCmd {
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
        /// Only records of this action, e.g. iam.bind
        #[arg(long, value_name = "ACTION")]
        action: Option<String>,
        /// Only records with this result
        #[arg(long)]
        result: Option<AuditResult>,
        /// At or after TIME (RFC 3339, e.g. 2026-11-25T10:00:00Z, or unix seconds)
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        since: Option<i64>,
        /// Before TIME (RFC 3339 or unix seconds)
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
enum AuditResult {
    Allowed,
    Denied,
    Error,
}

/// A member argument, checked and written canonically.
fn parse_member(s: &str) -> Result<String, String> {
    s.parse::<Member>().map(|m| m.to_string())
}

/// The `--as` caller: an identity a request can run as.
fn parse_caller(s: &str) -> Result<Member, String> {
    if s == "anonymous" {
        return Ok(Member::Anonymous);
    }
    match s.parse::<Member>()? {
        m @ (Member::User(_) | Member::ServiceAccount(_) | Member::UnixUid(_)) => Ok(m),
        m => Err(format!(
            "{m} cannot be a caller: use user:, serviceAccount:, unix-uid: or anonymous"
        )),
    }
}

/// A role argument: `kms.admin` stands for `roles/kms.admin`.
fn parse_role(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("empty role name".into());
    }
    // `kms.viewer` means `roles/kms.viewer`; full names and the Thalassa policies
    // (`kms:ReadAccess`, ...) are taken as written.
    Ok(if s.contains('/') || s.contains(':') {
        s.to_string()
    } else {
        format!("roles/{s}")
    })
}

/// A time argument: RFC 3339 or unix seconds.
fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(secs);
    }
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| {
            format!(
                "'{s}' is not a time ({e}): use RFC 3339 like 2026-11-25T10:00:00Z or \
                 2026-11-25T11:00:00+01:00, or unix seconds like 1795600800"
            )
        })
}

/// `acme` or `organizations/acme` → `acme` (what init and org create take).
fn org_id(s: &str) -> String {
    s.strip_prefix("organizations/").unwrap_or(s).to_string()
}

/// `acme` → `organizations/acme`; anything with a `/` is left for the handler to judge.
fn full_name(prefix: &str, s: &str) -> String {
    if s.contains('/') {
        s.to_string()
    } else {
        format!("{prefix}/{s}")
    }
}

/// `ops` or `group:ops` → `ops`.
fn group_name(s: &str) -> String {
    s.strip_prefix("group:").unwrap_or(s).to_string()
}

/// `web@payments` or `serviceAccount:web@payments` → `web@payments`.
fn account_email(s: &str) -> String {
    s.strip_prefix("serviceAccount:").unwrap_or(s).to_string()
}

/// `payments` or `projects/payments` → `payments`.
fn project_id(s: &str) -> String {
    s.strip_prefix("projects/").unwrap_or(s).to_string()
}

/// The one request a command stands for. An `Err` is a usage error.
fn to_request(cmd: Command) -> Result<AdminRequest, String> {
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
                SaKeyCmd::Create { account } => R::SaKeyCreate {
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
            KeyCmd::GetPublicKey { name, version } => R::KeyGetPublicKey { name, version },
            KeyCmd::Cert(CertCmd::List { key } | CertCmd::Get { key }) => R::KeyCertList { key },
            KeyCmd::Cert(CertCmd::Import {
                key,
                cert,
                chain,
                label,
            }) => R::KeyCertImport {
                key,
                certs: certcmd::read_chain(&cert, chain.as_deref())?,
                label,
            },
            KeyCmd::Cert(CertCmd::Create {
                key,
                import_cert: Some(cert),
                chain,
                ..
            }) => R::KeyCertImport {
                key,
                certs: certcmd::read_chain(&cert, chain.as_deref())?,
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
            ImportJobCmd::GetPublicKey { name } => R::ImportJobGet { name, pem: true },
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

/// Why a command did not produce a response.
#[derive(Debug)]
enum CtlError {
    /// The command line cannot be served as given (exit 2).
    Usage(String),
    /// The request was made and failed (exit 1).
    Request(AdminError),
    /// No keywardd listens at the socket (exit 2; `status` reports the daemon down).
    Unreachable(String),
}

/// Sends one request to the handler: to keywardd's admin socket, or in-process over `--db`
/// (refused for requests that write while a keywardd holds that store).
fn run_request(global: &Global, req: AdminRequest) -> Result<AdminResponse, CtlError> {
    let Some(db) = &global.db else {
        return run_over_socket(global, req);
    };
    if keyward::daemon::store_is_held(db) && !keyward::daemon::is_read_only(&req) {
        return Err(CtlError::Request(AdminError {
            rv: CKR_ARGUMENTS_BAD,
            message: "keywardd is running on this store: drop --db to go through its socket".into(),
        }));
    }
    // Only init may create a store: a mistyped --db must not silently make an empty one.
    if !matches!(req, AdminRequest::Init { .. }) && !db.exists() {
        return Err(CtlError::Request(AdminError {
            rv: CKR_ARGUMENTS_BAD,
            message: format!(
                "no store at {}: check --db, or create one with `keywardctl --db {} init --org \
                 ORG --admin MEMBER`",
                db.display(),
                db.display()
            ),
        }));
    }
    // The real uid is recorded as the peer even under --as, so the audit log shows who ran it.
    let me = process_principal();
    let peer_uid = match &me {
        Ok(Principal {
            member: Member::UnixUid(uid),
            ..
        }) => Some(*uid),
        _ => None,
    };
    let principal = match &global.as_member {
        Some(m) => Principal::new(m.clone()),
        None => me.map_err(CtlError::Usage)?,
    };
    let caller = Caller {
        principal,
        peer_pid: Some(std::process::id()),
        peer_uid,
        instance: None,
    };
    let mut service = AdminService::open(db).map_err(CtlError::Request)?;
    service.handle(&caller, req).map_err(CtlError::Request)
}

/// Sends one request over keywardd's admin socket. keywardd decides who is calling (peer
/// credentials, or the service-account key in the file named by `KEYWARD_CREDENTIALS`).
fn run_over_socket(global: &Global, req: AdminRequest) -> Result<AdminResponse, CtlError> {
    use keyward_wire::{rv, RequestBody, ResponseBody};
    let fail = |rv: u64, message: String| CtlError::Request(AdminError { rv, message });
    match call_socket(global, &global.socket, RequestBody::Admin(req))? {
        ResponseBody::Admin(resp) => Ok(resp),
        _ => Err(fail(
            rv::CKR_DEVICE_ERROR,
            "keywardd answered an admin request with another kind of response".into(),
        )),
    }
}

/// Sends one request over a keywardd socket as the caller (peer credentials, or the
/// service-account key in the file named by `KEYWARD_CREDENTIALS`).
fn call_socket(
    global: &Global,
    socket: &std::path::Path,
    body: keyward_wire::RequestBody,
) -> Result<keyward_wire::ResponseBody, CtlError> {
    let mut client = connect_socket(global, socket)?;
    call_on(&mut client, socket, body)
}

/// Connects to a keywardd socket as the caller (see [`call_socket`]).
fn connect_socket(
    global: &Global,
    socket: &std::path::Path,
) -> Result<keyward_wire::Client, CtlError> {
    use keyward_wire::{Client, WireError};
    use keyward_wire::{ClientKind, Hello, ServiceAccountKey};
    use std::os::unix::fs::PermissionsExt;
    if global.as_member.is_some() {
        return Err(CtlError::Usage(
            "--as works only offline (--db): over the socket keywardd decides who is calling \
             (use KEYWARD_CREDENTIALS=FILE to act as a service account)"
                .into(),
        ));
    }
    let fail = |rv: u64, message: String| CtlError::Request(AdminError { rv, message });
    let credentials = match std::env::var_os("KEYWARD_CREDENTIALS").filter(|v| !v.is_empty()) {
        None => None,
        Some(path) => {
            let path = PathBuf::from(path);
            let shown = path.display();
            let bad = |e: std::io::Error| {
                fail(
                    CKR_ARGUMENTS_BAD,
                    format!("cannot read KEYWARD_CREDENTIALS file {shown}: {e}"),
                )
            };
            let mode = std::fs::metadata(&path).map_err(bad)?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(fail(
                    CKR_ARGUMENTS_BAD,
                    format!(
                        "the KEYWARD_CREDENTIALS file {shown} is open to its group or others \
                         (mode {:04o}): run `chmod 600 {shown}`",
                        mode & 0o7777
                    ),
                ));
            }
            let text = zeroize::Zeroizing::new(std::fs::read_to_string(&path).map_err(bad)?);
            // As the module reads it: the first line that is neither blank nor a # comment.
            let key = text
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'))
                .unwrap_or("");
            if key.is_empty() {
                return Err(fail(
                    CKR_ARGUMENTS_BAD,
                    format!("the KEYWARD_CREDENTIALS file {shown} holds no key"),
                ));
            }
            Some(ServiceAccountKey::new(key))
        }
    };
    let hello = Hello::new(ClientKind::Ctl, None, credentials);
    Client::connect(socket, &hello).map_err(|e| match e {
        // No daemon at that path: the command line must name another way in (exit 2).
        WireError::Connect { source, .. } => CtlError::Unreachable(format!(
            "cannot reach keywardd at {} ({source}): start keywardd, give --socket PATH, or \
             use --db PATH to work offline",
            socket.display()
        )),
        WireError::Refused { rv, message } => {
            fail(rv, format!("keywardd refused the connection: {message}"))
        }
        other => fail(
            other.ck_rv(),
            format!("keywardd at {}: {other}", socket.display()),
        ),
    })
}

/// One request on a connection made by [`connect_socket`].
fn call_on(
    client: &mut keyward_wire::Client,
    socket: &std::path::Path,
    body: keyward_wire::RequestBody,
) -> Result<keyward_wire::ResponseBody, CtlError> {
    use keyward_wire::{rv, WireError};
    let fail = |rv: u64, message: String| CtlError::Request(AdminError { rv, message });
    match client.call(body) {
        Ok(resp) => Ok(resp),
        Err(WireError::Remote(reply)) => Err(fail(
            reply.rv,
            reply
                .message
                .unwrap_or_else(|| format!("keywardd: {}", rv::rv_name(reply.rv))),
        )),
        Err(e) => Err(fail(
            e.ck_rv(),
            format!("keywardd at {}: {e}", socket.display()),
        )),
    }
}

/// This process's identity as keywardd would see it: `unix-uid:<real uid>` and its groups.
fn process_principal() -> Result<Principal, String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| {
        format!("cannot read /proc/self/status to learn your uid ({e}): give --as MEMBER")
    })?;
    let ids = |field: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .map(|rest| {
                rest.split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let uid = *ids("Uid:")
        .first()
        .ok_or("no Uid: line in /proc/self/status: give --as MEMBER")?;
    let mut gids: Vec<u32> = ids("Gid:")
        .into_iter()
        .take(1)
        .chain(ids("Groups:"))
        .collect();
    gids.sort_unstable();
    gids.dedup();
    Ok(Principal {
        member: Member::UnixUid(uid),
        unix_gids: gids,
    })
}

/// Replaces control characters (terminal escapes in names or audit details) with escapes.
fn printable(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// An aligned text table: two spaces between columns, the last column unpadded.
fn render_table(t: &Table) -> String {
    let header: Vec<String> = t.headers.iter().map(|h| printable(h)).collect();
    let rows: Vec<Vec<String>> = t
        .rows
        .iter()
        .map(|r| r.iter().map(|c| printable(c)).collect())
        .collect();
    let ncols = rows
        .iter()
        .map(Vec::len)
        .chain([header.len()])
        .max()
        .unwrap_or(0);
    let mut widths = vec![0usize; ncols];
    for row in std::iter::once(&header).chain(&rows) {
        for (i, c) in row.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, c) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(c);
            if i + 1 < row.len() {
                line.push_str(&" ".repeat(widths[i] - c.chars().count()));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if rows.is_empty() {
        out.push_str("(none)\n");
    }
    out
}

/// True for the requests whose `--json` output is JSON lines (a SIEM feed, design §6).
fn json_lines(req: &AdminRequest) -> bool {
    matches!(
        req,
        AdminRequest::AuditTail { .. } | AdminRequest::AuditQuery { .. }
    )
}

fn print_response(resp: &AdminResponse, json: bool, lines: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    for w in &resp.warnings {
        eprintln!("warning: {}", printable(w));
    }
    if json {
        match serde_json::from_str::<serde_json::Value>(&resp.json) {
            Ok(serde_json::Value::Array(items)) if lines => {
                for item in items {
                    writeln!(out, "{item}")?;
                }
            }
            _ => writeln!(out, "{}", resp.json)?,
        }
        return out.flush();
    }
    if let Some(m) = &resp.message {
        // Multi-line messages (a PEM) keep their lines; other control characters are escaped.
        for line in m.split('\n') {
            writeln!(out, "{}", printable(line))?;
        }
    }
    if let Some(t) = &resp.table {
        write!(out, "{}", render_table(t))?;
    }
    if let Some(s) = &resp.secret {
        writeln!(out, "{s}")?;
        out.flush()?;
        eprintln!("note: the secret above is shown only this once; Keyward keeps only a MAC of it");
    }
    out.flush()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Cli { global, command } = cli;
    let command = match command {
        Command::Encrypt(a) => return crypto::run(&global, crypto::Kind::Encrypt, a),
        Command::Decrypt(a) => return crypto::run(&global, crypto::Kind::Decrypt, a),
        Command::Sign(a) => return crypto::run(&global, crypto::Kind::Sign, a),
        Command::Verify(a) => return crypto::run(&global, crypto::Kind::Verify, a),
        Command::Mac(a) => return crypto::run(&global, crypto::Kind::Mac, a),
        Command::Key(KeyCmd::Cert(CertCmd::Create {
            key,
            self_signed,
            subject,
            days,
            out,
            import_cert: None,
            ..
        })) => return certcmd::create(&global, &key, self_signed, subject, days, out),
        Command::Key(KeyCmd::Cert(CertCmd::Get { key })) => return certcmd::get(&global, key),
        Command::Key(KeyCmd::Export {
            key,
            version,
            wrapping_key,
            mechanism,
            out,
        }) => {
            return crypto::export(
                &global,
                key,
                version,
                wrapping_key,
                mechanism,
                out.as_deref(),
            )
        }
        Command::Completions { shell } => return completions(shell),
        Command::Status => return status(&global),
        Command::Store(StoreCmd::Check) => return store_check(&global),
        Command::Key(KeyCmd::WrapForImport {
            import_job,
            public_key_file,
            method,
            key_material_file,
            out,
        }) => {
            return wrap::run(
                &global,
                wrap::Source {
                    import_job,
                    public_key_file,
                    method,
                },
                &key_material_file,
                &out,
            )
        }
        other => other,
    };
    let req = match to_request(command) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let lines = json_lines(&req);
    match run_request(&global, req) {
        Ok(resp) => match print_response(&resp, global.json, lines) {
            Ok(()) => ExitCode::SUCCESS,
            // A closed pipe (`| head`) is not worth a message; the request was done.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: cannot write the answer: {e}");
                ExitCode::from(1)
            }
        },
        Err(CtlError::Usage(m) | CtlError::Unreachable(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(2)
        }
        Err(CtlError::Request(e)) => {
            eprintln!("error: {}", printable(&e.message));
            if global.json {
                let doc = serde_json::json!({"error": {"message": e.message, "rv": e.rv}});
                println!("{doc}");
            }
            ExitCode::from(1)
        }
    }
}

/// `keywardctl completions SHELL`: the completion script on stdout.
fn completions(shell: clap_complete::Shell) -> ExitCode {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    // Into a buffer first: clap_complete panics on a write error (`| head`).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "keywardctl", &mut script);
    let mut out = std::io::stdout().lock();
    match out.write_all(&script).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write the completion script: {e}");
            ExitCode::from(1)
        }
    }
}

/// `keywardctl --db PATH store check`: `PRAGMA integrity_check` on the store file, which may be
/// held by a running keywardd (the check only reads; WAL lets it read beside the daemon).
fn store_check(global: &Global) -> ExitCode {
    let Some(db) = global.db.as_deref() else {
        eprintln!("error: store check reads the store file: give --db PATH");
        return ExitCode::from(2);
    };
    if !db.is_file() {
        eprintln!("error: no store at {}", db.display());
        return ExitCode::from(1);
    }
    let findings = match keyward::store::Store::open(db).and_then(|s| s.check()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: cannot check {}: {e}", db.display());
            return ExitCode::from(1);
        }
    };
    if global.json {
        let doc = serde_json::json!({"ok": findings.is_empty(), "findings": findings});
        println!("{doc}");
    } else if findings.is_empty() {
        println!("ok: {} passed SQLite's integrity check", db.display());
    } else {
        for f in &findings {
            println!("{f}");
        }
        eprintln!(
            "error: {} failed SQLite's integrity check ({} finding(s)); restore it from a backup",
            db.display(),
            findings.len()
        );
    }
    if findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `keywardctl status`: the status request; a daemon that does not answer is reported as down
/// (exit 1), in the table or, with `--json`, as `{"daemon": {"running": false, ...}}`.
fn status(global: &Global) -> ExitCode {
    match run_request(global, AdminRequest::Status) {
        Err(CtlError::Unreachable(m)) => {
            if global.json {
                let doc = serde_json::json!({"daemon": {
                    "running": false,
                    "socket": global.socket.display().to_string(),
                    "error": m,
                }});
                println!("{doc}");
            } else {
                println!("daemon  DOWN: {}", printable(&m));
            }
            eprintln!(
                "error: keywardd is not running at {}",
                global.socket.display()
            );
            ExitCode::from(1)
        }
        Err(CtlError::Usage(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(2)
        }
        Err(CtlError::Request(e)) => {
            eprintln!("error: {}", printable(&e.message));
            if global.json {
                let doc = serde_json::json!({"error": {"message": e.message, "rv": e.rv}});
                println!("{doc}");
            }
            ExitCode::from(1)
        }
        Ok(resp) => match print_response(&resp, global.json, false) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: cannot write the answer: {e}");
                ExitCode::from(1)
            }
        },
    }
}

/// Reads a file named on the command line.
fn read_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// `keywardctl key wrap-for-import`: the BYOK wrap, done here (design §5: never in
/// keywardd). RSA-OAEP (SHA-1 or SHA-256, MGF1 with the same hash, empty label) of a fresh
/// AES-256 key, then AES-KWP (RFC 5649) of the material, concatenated; or, for
/// `rsa-oaep-3072-sha256`, RSA-OAEP of the material itself.
mod wrap {
    use super::{printable, read_file, run_request, CtlError, Global};
    use keyward_wire::admin::AdminRequest;
    use keyward_wire::import::{ImportHash, ImportMethod, MAX_DIRECT_LEN};
    use rsa::pkcs8::DecodePublicKey;
    use rsa::traits::PublicKeyParts;
    use rsa::{Oaep, RsaPublicKey};
    use std::path::{Path, PathBuf};
    use std::process::ExitCode;
    use zeroize::Zeroizing;

    /// Where the wrapping key comes from.
    pub struct Source {
        pub import_job: Option<String>,
        pub public_key_file: Option<PathBuf>,
        pub method: Option<String>,
    }

    fn fail(code: u8, m: impl std::fmt::Display) -> ExitCode {
        eprintln!("error: {}", printable(&m.to_string()));
        ExitCode::from(code)
    }

    /// The job's public key (PEM) and method.
    fn job_key(global: &Global, name: &str) -> Result<(String, ImportMethod), CtlError> {
        let resp = run_request(
            global,
            AdminRequest::ImportJobGet {
                name: name.to_string(),
                pem: false,
            },
        )?;
        let bad =
            |what: &str| CtlError::Usage(format!("keywardd's answer about {name} lacks {what}"));
        let js: serde_json::Value =
            serde_json::from_str(&resp.json).map_err(|_| bad("a JSON document"))?;
        if js["state"] != "ACTIVE" {
            return Err(CtlError::Usage(format!(
                "import job {name} is {}: create a new import job",
                js["state"].as_str().unwrap_or("not ACTIVE")
            )));
        }
        let pem = js["publicKey"]["pem"]
            .as_str()
            .ok_or_else(|| bad("the public key"))?
            .to_string();
        let method = js["importMethod"]
            .as_str()
            .ok_or_else(|| bad("the method"))?
            .parse()
            .map_err(CtlError::Usage)?;
        Ok((pem, method))
    }

    /// Wraps `material` for `method` under `key`.
    pub fn wrap(
        key: &RsaPublicKey,
        method: ImportMethod,
        material: &[u8],
    ) -> Result<Vec<u8>, String> {
        let bits = key.size() * 8;
        if bits != method.rsa_bits() {
            return Err(format!(
                "the wrapping key is RSA-{bits}, but {method} needs RSA-{}",
                method.rsa_bits()
            ));
        }
        let oaep = || match method.hash() {
            ImportHash::Sha1 => Oaep::new::<sha1::Sha1>(),
            ImportHash::Sha256 => Oaep::new::<sha2::Sha256>(),
        };
        let mut rng = rand::rngs::OsRng;
        if !method.uses_aes() {
            if material.is_empty() || material.len() > MAX_DIRECT_LEN {
                return Err(format!(
                    "{method} carries symmetric keys of 1 to {MAX_DIRECT_LEN} bytes; this                      material has {} bytes",
                    material.len()
                ));
            }
            return key
                .encrypt(&mut rng, oaep(), material)
                .map_err(|e| format!("RSA-OAEP failed: {e}"));
        }
        let mut ephemeral = Zeroizing::new([0u8; 32]);
        rand::RngCore::fill_bytes(&mut rng, ephemeral.as_mut_slice());
        let mut out = key
            .encrypt(&mut rng, oaep(), ephemeral.as_slice())
            .map_err(|e| format!("RSA-OAEP failed: {e}"))?;
        let kek = aes_kw::KekAes256::from(*ephemeral);
        let wrapped = kek
            .wrap_with_padding_vec(material)
            .map_err(|e| format!("AES-KWP failed: {e}"))?;
        out.extend_from_slice(&wrapped);
        Ok(out)
    }

    /// Runs `key wrap-for-import`: exit 0, 1 (refused), 2 (usage).
    pub fn run(global: &Global, source: Source, material: &Path, out: &Path) -> ExitCode {
        let (pem, method) = match (&source.import_job, &source.public_key_file) {
            (Some(job), _) => match job_key(global, job) {
                Ok(k) => k,
                Err(CtlError::Usage(m) | CtlError::Unreachable(m)) => return fail(2, m),
                Err(CtlError::Request(e)) => return fail(1, e.message),
            },
            (None, Some(path)) => {
                let pem = match read_file(path).map(String::from_utf8) {
                    Ok(Ok(p)) => p,
                    Ok(Err(_)) => return fail(2, format!("{} is not PEM", path.display())),
                    Err(e) => return fail(2, e),
                };
                let key = match RsaPublicKey::from_public_key_pem(pem.trim()) {
                    Ok(k) => k,
                    Err(e) => {
                        return fail(
                            2,
                            format!("{} is not an RSA public key: {e}", path.display()),
                        )
                    }
                };
                let method = match &source.method {
                    Some(m) => match m.parse() {
                        Ok(m) => m,
                        Err(e) => return fail(2, e),
                    },
                    None if key.size() == 512 => ImportMethod::RsaOaep4096Sha1Aes256,
                    None => ImportMethod::RsaOaep3072Sha1Aes256,
                };
                (pem, method)
            }
            (None, None) => return fail(2, "name --import-job or --public-key-file"),
        };
        if source.import_job.is_some() && source.method.is_some() {
            return fail(
                2,
                "--method goes with --public-key-file; a job has its own method",
            );
        }
        let key = match RsaPublicKey::from_public_key_pem(pem.trim()) {
            Ok(k) => k,
            Err(e) => return fail(2, format!("the wrapping key is not an RSA public key: {e}")),
        };
        let material = match read_file(material) {
            Ok(m) => Zeroizing::new(m),
            Err(e) => return fail(2, e),
        };
        let blob = match wrap(&key, method, &material) {
            Ok(b) => b,
            Err(e) => return fail(1, e),
        };
        if let Err(e) = std::fs::write(out, &blob) {
            return fail(1, format!("cannot write {}: {e}", out.display()));
        }
        eprintln!(
            "wrapped {} bytes of key material for {method}: {} bytes in {}",
            material.len(),
            blob.len(),
            out.display()
        );
        ExitCode::SUCCESS
    }
}

/// `keywardctl encrypt|decrypt|sign|verify|mac`: one request on the client socket.
mod crypto {
    use super::{call_socket, printable, CryptoArgs, CtlError, Global};
    use keyward_wire::pkcs11::Blob;
    use keyward_wire::{CryptoRequest, CryptoResponse, RequestBody, ResponseBody};
    use sha2::Digest;
    use std::io::{Read, Write};
    use std::path::Path;
    use std::process::ExitCode;

    /// Which command.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Kind {
        Encrypt,
        Decrypt,
        Sign,
        Verify,
        Mac,
    }

    fn read(path: Option<&Path>) -> Result<Vec<u8>, String> {
        match path {
            None => {
                let mut buf = Vec::new();
                std::io::stdin()
                    .lock()
                    .read_to_end(&mut buf)
                    .map_err(|e| format!("cannot read stdin: {e}"))?;
                Ok(buf)
            }
            Some(p) if p == Path::new("-") => read(None),
            Some(p) => std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display())),
        }
    }

    fn write(path: Option<&Path>, bytes: &[u8]) -> Result<(), String> {
        match path {
            Some(p) if p != Path::new("-") => {
                std::fs::write(p, bytes).map_err(|e| format!("cannot write {}: {e}", p.display()))
            }
            _ => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes)
                    .and_then(|()| out.flush())
                    .map_err(|e| format!("cannot write stdout: {e}"))
            }
        }
    }

    fn usage(m: impl std::fmt::Display) -> ExitCode {
        eprintln!("error: {m}");
        ExitCode::from(2)
    }

    /// The exit of an answer that is not the one asked for: an unexpected response or a
    /// refusal (1), bad usage or no daemon (2).
    fn failure(answer: Result<ResponseBody, CtlError>) -> ExitCode {
        match answer {
            Ok(_) => {
                eprintln!("error: keywardd answered with another kind of response");
                ExitCode::from(1)
            }
            Err(CtlError::Usage(m) | CtlError::Unreachable(m)) => usage(m),
            Err(CtlError::Request(e)) => {
                eprintln!("error: {}", printable(&e.message));
                ExitCode::from(1)
            }
        }
    }

    /// Runs one crypto command; exit 0, 1 (refused, invalid), 2 (usage).
    pub fn run(global: &Global, kind: Kind, a: CryptoArgs) -> ExitCode {
        if global.db.is_some() || global.as_member.is_some() {
            return usage(
                "the crypto commands run only through keywardd's client socket (no --db, no \
                 --as; use KEYWARD_CREDENTIALS=FILE to act as a service account)",
            );
        }
        let data = match read(a.input.as_deref()) {
            Ok(d) => d,
            Err(e) => return usage(e),
        };
        let aad = match a.aad_file.as_deref().map(|p| read(Some(p))).transpose() {
            Ok(d) => d.unwrap_or_default(),
            Err(e) => return usage(e),
        };
        if a.aad_file.is_some() && !matches!(kind, Kind::Encrypt | Kind::Decrypt) {
            return usage("--aad-file applies to encrypt and decrypt only");
        }
        let (data, prehashed) = match a.digest.as_deref() {
            None => (data, false),
            Some(_) if !matches!(kind, Kind::Sign | Kind::Verify) => {
                return usage("--digest applies to sign and verify only")
            }
            Some("sha384") => (sha2::Sha384::digest(&data).to_vec(), true),
            Some(_) => (sha2::Sha256::digest(&data).to_vec(), true),
        };
        let check = match kind {
            Kind::Verify => match a.signature.as_deref() {
                Some(p) => Some(p),
                None => return usage("verify needs --signature FILE"),
            },
            Kind::Mac => a.verify.as_deref(),
            _ => None,
        };
        let signature = match check.map(|p| read(Some(p))).transpose() {
            Ok(s) => s,
            Err(e) => return usage(e),
        };
        let key = a.key.clone();
        let req = match (kind, signature) {
            (Kind::Encrypt, _) => CryptoRequest::Encrypt {
                key,
                plaintext: Blob::new(data),
                aad: Blob::new(aad),
            },
            (Kind::Decrypt, _) => CryptoRequest::Decrypt {
                key,
                ciphertext: Blob::new(data),
                aad: Blob::new(aad),
            },
            (Kind::Sign | Kind::Mac, None) => CryptoRequest::Sign {
                key,
                data: Blob::new(data),
                prehashed,
            },
            (_, Some(sig)) => CryptoRequest::Verify {
                key,
                data: Blob::new(data),
                prehashed,
                signature: Blob::new(sig),
            },
            (Kind::Verify, None) => return usage("verify needs --signature FILE"),
        };
        let answer = call_socket(global, &global.client_socket, RequestBody::Crypto(req));
        match answer {
            Ok(ResponseBody::Crypto(CryptoResponse::Data(bytes))) => {
                match write(a.out.as_deref(), bytes.as_slice()) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("error: {e}");
                        ExitCode::from(1)
                    }
                }
            }
            Ok(ResponseBody::Crypto(CryptoResponse::Verified(true))) => {
                eprintln!("signature valid ({})", printable(&a.key));
                ExitCode::SUCCESS
            }
            Ok(ResponseBody::Crypto(CryptoResponse::Verified(false))) => {
                eprintln!(
                    "error: signature INVALID for this data and key ({})",
                    printable(&a.key)
                );
                ExitCode::from(1)
            }
            other => failure(other),
        }
    }

    /// `keywardctl key export`: one Export request on the client socket.
    pub fn export(
        global: &Global,
        key: String,
        version: Option<u64>,
        wrapping_key: String,
        mechanism: String,
        out: Option<&Path>,
    ) -> ExitCode {
        if global.db.is_some() || global.as_member.is_some() {
            return usage(
                "key export runs only through keywardd's client socket (no --db, no --as; use \
                 KEYWARD_CREDENTIALS=FILE to act as a service account)",
            );
        }
        let req = CryptoRequest::Export {
            key: key.clone(),
            version,
            wrapping_key,
            mechanism,
        };
        match call_socket(global, &global.client_socket, RequestBody::Crypto(req)) {
            Ok(ResponseBody::Crypto(CryptoResponse::Data(bytes))) => {
                match write(out, bytes.as_slice()) {
                    Ok(()) => {
                        eprintln!(
                            "warning: the key material of {} left the token wrapped ({} bytes); \
                             this export is in the audit log",
                            printable(&key),
                            bytes.as_slice().len()
                        );
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        ExitCode::from(1)
                    }
                }
            }
            other => failure(other),
        }
    }
}

/// `keywardctl key cert ...`: certificates of asymmetric keys (issue 7). The
/// `TBSCertificate`/`CertificationRequestInfo` is built here ([`keyward::x509`]) and signed in
/// the token through keywardd's client socket (`useToSign`, audited like `keywardctl sign`);
/// a self-signed certificate is then attached over the admin socket (`key.cert.import`).
mod certcmd {
    use super::{call_on, call_socket, connect_socket, printable, run_request, CtlError, Global};
    use keyward::x509::{self, SigAlg};
    use keyward_wire::admin::AdminRequest;
    use keyward_wire::pkcs11::Blob;
    use keyward_wire::{CryptoRequest, CryptoResponse, RequestBody, ResponseBody};
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::process::ExitCode;

    /// The certificate in `cert` (PEM or DER; more PEM blocks are its chain), then `chain`.
    pub fn read_chain(cert: &Path, chain: Option<&Path>) -> Result<Vec<Vec<u8>>, String> {
        let read = |p: &Path| -> Result<Vec<Vec<u8>>, String> {
            let bytes =
                std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            x509::read_certificates(&bytes).map_err(|e| format!("{}: {e}", p.display()))
        };
        let mut out = read(cert)?;
        if let Some(c) = chain {
            out.extend(read(c)?);
        }
        Ok(out)
    }

    fn fail(e: CtlError) -> ExitCode {
        match e {
            CtlError::Usage(m) | CtlError::Unreachable(m) => {
                eprintln!("error: {m}");
                ExitCode::from(2)
            }
            CtlError::Request(e) => {
                eprintln!("error: {}", printable(&e.message));
                ExitCode::from(1)
            }
        }
    }

    fn error(m: impl std::fmt::Display) -> ExitCode {
        eprintln!("error: {m}");
        ExitCode::from(1)
    }

    fn write_out(out: Option<&Path>, text: &str) -> Result<(), String> {
        match out {
            Some(p) if p != Path::new("-") => {
                std::fs::write(p, text).map_err(|e| format!("cannot write {}: {e}", p.display()))
            }
            _ => {
                let mut o = std::io::stdout().lock();
                o.write_all(text.as_bytes())
                    .and_then(|()| o.flush())
                    .map_err(|e| format!("cannot write stdout: {e}"))
            }
        }
    }

    /// The primary version's public key, as keywardd answers `key get-public-key`.
    struct PublicKey {
        /// The version's name.
        version: String,
        /// The key's algorithm name; `None` for a key made through the PKCS#11 module.
        algorithm: Option<String>,
        /// The SubjectPublicKeyInfo, DER.
        spki: Vec<u8>,
        /// A key made through the module: its private object's `CKA_ID` and whether its
        /// flags allow signing.
        generic: Option<(Vec<u8>, bool)>,
    }

    fn public_key(global: &Global, key: &str) -> Result<PublicKey, CtlError> {
        let resp = run_request(
            global,
            AdminRequest::KeyGetPublicKey {
                name: key.to_string(),
                version: None,
            },
        )?;
        let bad = |m: &str| {
            CtlError::Request(keyward::admin::AdminError {
                rv: 0x05,
                message: format!("keywardd's public key answer: {m}"),
            })
        };
        let js: serde_json::Value =
            serde_json::from_str(&resp.json).map_err(|_| bad("not JSON"))?;
        let field = |f: &str| js[f].as_str().map(str::to_string).ok_or_else(|| bad(f));
        let (version, pem) = (field("name")?, field("pem")?);
        let (_, spki) = der::pem::decode_vec(pem.as_bytes()).map_err(|_| bad("bad PEM"))?;
        let generic = match &js["generic"] {
            serde_json::Value::Null => None,
            g => {
                let id = g["ckaId"]
                    .as_str()
                    .and_then(unhex)
                    .ok_or_else(|| bad("generic.ckaId"))?;
                let sign = g["sign"].as_bool().ok_or_else(|| bad("generic.sign"))?;
                Some((id, sign))
            }
        };
        let algorithm = js["algorithm"].as_str().map(str::to_string);
        if algorithm.is_none() && generic.is_none() {
            return Err(bad("algorithm"));
        }
        Ok(PublicKey {
            version,
            algorithm,
            spki,
            generic,
        })
    }

    fn unhex(s: &str) -> Option<Vec<u8>> {
        if s.len() % 2 != 0 {
            return None;
        }
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
            .collect()
    }

    /// How `key` signs: its algorithm name's, or (a key made through the module) its public
    /// key's, if its flags allow signing.
    fn signature_algorithm(key: &str, pk: &PublicKey) -> Result<SigAlg, String> {
        let key = printable(key);
        match (&pk.algorithm, &pk.generic) {
            (Some(a), _) => SigAlg::for_algorithm(a).ok_or_else(|| {
                format!(
                    "{key} is a {a} key: certificates need an asymmetric signing key \
                     (EC_SIGN_P256_SHA256, EC_SIGN_P384_SHA384, RSA_SIGN_PKCS1_*_SHA256, \
                     RSA_SIGN_PSS_*_SHA256, or an EC P-256/P-384 or RSA pair made through the \
                     PKCS#11 module with CKA_SIGN)"
                )
            }),
            (None, Some((_, false))) => Err(format!(
                "{key} was made through the PKCS#11 module without CKA_SIGN: its private key \
                 may not sign, so it cannot sign a certificate or request"
            )),
            (None, _) => SigAlg::for_spki(&pk.spki)
                .map_err(|e| format!("{key} (made through the PKCS#11 module) is {e}")),
        }
    }

    /// Signs `data` with the private key of a key made through the module, as the module
    /// would: a session on the ring's slot, the private key object with its `CKA_ID`, then
    /// C_SignInit/C_Sign (the use gate and the audit of design §4). ECDSA: the DER
    /// `Ecdsa-Sig-Value`; RSA: PKCS#1 v1.5 with SHA-256.
    fn sign_generic(
        global: &Global,
        key: &str,
        cka_id: &[u8],
        alg: SigAlg,
        data: &[u8],
    ) -> Result<Vec<u8>, String> {
        use keyward_wire::pkcs11::{
            AttrValue, Attribute, MechParams, Mechanism, Operation, Pkcs11Request as Q,
            Pkcs11Response as A, UserType,
        };
        use sha2::Digest;
        const CKA_CLASS: u64 = 0x0;
        const CKA_ID: u64 = 0x102;
        const CKO_PRIVATE_KEY: u64 = 0x3;
        const CKM_ECDSA: u64 = 0x1041;
        const CKM_SHA256_RSA_PKCS: u64 = 0x40;
        const CKR_USER_ALREADY_LOGGED_IN: u64 = 0x100;
        let ring = key
            .split_once("/cryptoKeys/")
            .map(|(r, _)| r)
            .ok_or_else(|| format!("'{}' is not a crypto key name", printable(key)))?;
        let socket = &global.client_socket;
        let mut client = connect_socket(global, socket).map_err(message)?;
        let mut call = |req: Q| -> Result<A, CtlError> {
            match call_on(&mut client, socket, RequestBody::Pkcs11(req))? {
                ResponseBody::Pkcs11(a) => Ok(a),
                _ => Err(CtlError::Usage(
                    "keywardd answered with another kind of response".into(),
                )),
            }
        };
        let unexpected = |what: &str, a: A| format!("keywardd answered {what} with {a:?}");
        let slot = match call(Q::ListSlots { configured: vec![] }).map_err(message)? {
            A::Slots(slots) => slots
                .into_iter()
                .find(|s| s.ring == ring)
                .map(|s| s.slot)
                .ok_or_else(|| format!("{} is not a key ring you see", printable(ring)))?,
            a => return Err(unexpected("C_GetSlotList", a)),
        };
        let session = match call(Q::OpenSession {
            slot,
            read_write: false,
        })
        .map_err(message)?
        {
            A::Session(s) => s,
            a => return Err(unexpected("C_OpenSession", a)),
        };
        match call(Q::Login {
            slot,
            user: UserType::User,
            pin: None,
        }) {
            Ok(_) => {}
            Err(CtlError::Request(e)) if e.rv == CKR_USER_ALREADY_LOGGED_IN => {}
            Err(e) => return Err(message(e)),
        }
        let template = vec![
            Attribute {
                ty: CKA_CLASS,
                value: AttrValue::Ulong(CKO_PRIVATE_KEY),
            },
            Attribute {
                ty: CKA_ID,
                value: AttrValue::Bytes(Blob::new(cka_id.to_vec())),
            },
        ];
        let object = match call(Q::FindObjects { session, template }).map_err(message)? {
            A::Objects(o) if o.len() == 1 => o[0],
            A::Objects(o) if o.is_empty() => {
                return Err(format!(
                    "the private key of {} is not visible to you through the module",
                    printable(key)
                ))
            }
            A::Objects(o) => {
                return Err(format!(
                    "{} private keys of {} share the CKA_ID of {}: cannot tell which to sign \
                     with",
                    o.len(),
                    printable(ring),
                    printable(key)
                ))
            }
            a => return Err(unexpected("C_FindObjects", a)),
        };
        let (ty, input) = match alg {
            SigAlg::EcdsaSha256 => (CKM_ECDSA, sha2::Sha256::digest(data).to_vec()),
            SigAlg::EcdsaSha384 => (CKM_ECDSA, sha2::Sha384::digest(data).to_vec()),
            SigAlg::RsaPkcs1Sha256 => (CKM_SHA256_RSA_PKCS, data.to_vec()),
            SigAlg::RsaPssSha256 => return Err("RSA-PSS is not made for module keys".into()),
        };
        call(Q::OperationInit {
            op: Operation::Sign,
            session,
            mechanism: Mechanism {
                ty,
                params: MechParams::None,
            },
            key: Some(object),
        })
        .map_err(message)?;
        let signature = match call(Q::OperationOneShot {
            op: Operation::Sign,
            session,
            data: Blob::new(input),
        })
        .map_err(message)?
        {
            A::Data(sig) => sig.as_slice().to_vec(),
            a => return Err(unexpected("C_Sign", a)),
        };
        // Closing the connection closes the session too; this is only tidier.
        let _ = call(Q::CloseSession { session });
        match alg {
            SigAlg::EcdsaSha256 | SigAlg::EcdsaSha384 => {
                keyward_wire::crypto::ecdsa_raw_to_der(&signature)
                    .ok_or_else(|| "the token gave a malformed ECDSA signature".to_string())
            }
            _ => Ok(signature),
        }
    }

    fn message(e: CtlError) -> String {
        match e {
            CtlError::Usage(m) | CtlError::Unreachable(m) => m,
            CtlError::Request(e) => printable(&e.message),
        }
    }

    /// `key cert create --self-signed|--csr`.
    pub fn create(
        global: &Global,
        key: &str,
        self_signed: bool,
        subject: Option<String>,
        days: u32,
        out: Option<PathBuf>,
    ) -> ExitCode {
        if global.db.is_some() || global.as_member.is_some() {
            eprintln!(
                "error: key cert create signs in the token: it runs only through keywardd (no \
                 --db, no --as; use KEYWARD_CREDENTIALS=FILE to act as a service account)"
            );
            return ExitCode::from(2);
        }
        let pk = match public_key(global, key) {
            Ok(v) => v,
            Err(e) => return fail(e),
        };
        let alg = match signature_algorithm(key, &pk) {
            Ok(a) => a,
            Err(e) => return error(e),
        };
        let PublicKey {
            version,
            spki,
            generic,
            ..
        } = pk;
        let key_id = key.rsplit('/').next().unwrap_or(key);
        let subject = subject.unwrap_or_else(|| format!("CN={key_id}"));
        let name = match x509::parse_subject(&subject) {
            Ok(n) => n,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        let to_sign = if self_signed {
            let mut serial: [u8; 16] = rand::random();
            serial[0] = (serial[0] & 0x7f) | 0x40;
            x509::self_signed_tbs(
                &spki,
                &name,
                days,
                &serial,
                std::time::SystemTime::now(),
                alg,
            )
        } else {
            x509::request_info(&spki, &name)
        };
        let to_sign = match to_sign {
            Ok(t) => t,
            Err(e) => return error(format!("cannot encode the request: {e}")),
        };
        let signature = if let Some((cka_id, _)) = &generic {
            match sign_generic(global, key, cka_id, alg, &to_sign) {
                Ok(sig) => sig,
                Err(e) => return error(e),
            }
        } else {
            let answer = call_socket(
                global,
                &global.client_socket,
                RequestBody::Crypto(CryptoRequest::Sign {
                    key: key.to_string(),
                    data: Blob::new(to_sign.clone()),
                    prehashed: false,
                }),
            );
            match answer {
                Ok(ResponseBody::Crypto(CryptoResponse::Data(sig))) => sig.as_slice().to_vec(),
                Ok(_) => return error("keywardd answered with another kind of response"),
                Err(e) => return fail(e),
            }
        };
        // The primary version must not have moved between reading its key and signing.
        match public_key(global, key) {
            Ok(now) if now.version == version && now.spki == spki => {}
            Ok(_) => {
                return error(format!(
                    "the primary version of {} changed while signing: run it again",
                    printable(key)
                ))
            }
            Err(e) => return fail(e),
        }
        let (der, label) = if self_signed {
            (
                x509::assemble_certificate(&to_sign, alg, &signature),
                "CERTIFICATE",
            )
        } else {
            (
                x509::assemble_request(&to_sign, alg, &signature),
                "CERTIFICATE REQUEST",
            )
        };
        let pem = match der.and_then(|d| x509::pem(label, &d).map(|p| (d, p))) {
            Ok(v) => v,
            Err(e) => return error(format!("cannot encode the result: {e}")),
        };
        if self_signed {
            let req = AdminRequest::KeyCertImport {
                key: key.to_string(),
                certs: vec![pem.0.clone()],
                label: None,
            };
            match run_request(global, req) {
                Ok(resp) => {
                    if let Some(m) = resp.message {
                        eprintln!("{}", printable(&m));
                    }
                }
                Err(e) => return fail(e),
            }
        } else {
            eprintln!(
                "certificate request for {} ({subject}) signed by {version}",
                printable(key)
            );
        }
        match write_out(out.as_deref(), &pem.1) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => error(e),
        }
    }

    /// `key cert get`: the attached certificates as PEM.
    pub fn get(global: &Global, key: String) -> ExitCode {
        let resp = match run_request(global, AdminRequest::KeyCertList { key: key.clone() }) {
            Ok(r) => r,
            Err(e) => return fail(e),
        };
        let js: serde_json::Value = serde_json::from_str(&resp.json).unwrap_or_default();
        let pems: Vec<&str> = js
            .as_array()
            .map(|a| a.iter().filter_map(|c| c["pem"].as_str()).collect())
            .unwrap_or_default();
        let attached = js.as_array().map_or(0, Vec::len);
        if pems.is_empty() && attached > 0 {
            return error(format!(
                "permission denied: {} has {attached} certificate(s) attached, but reading a \
                 certificate (it carries the public key) needs \
                 kms.cryptoKeyVersions.viewPublicKey or a use permission on the key",
                printable(&key)
            ));
        }
        if pems.is_empty() {
            return error(format!("{} has no certificate attached", printable(&key)));
        }
        match write_out(None, &pems.concat()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => error(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

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

    #[test]
    fn times_parse() {
        assert_eq!(parse_time("1795600800"), Ok(1_795_600_800));
        assert_eq!(parse_time("1970-01-01T00:01:00Z"), Ok(60));
        assert_eq!(parse_time("1970-01-01T01:01:00+01:00"), Ok(60));
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn tables_align() {
        let t = Table {
            headers: vec!["A".into(), "BB".into()],
            rows: vec![
                vec!["long".into(), "x".into()],
                vec!["s\x1b[2J".into(), "y".into()],
            ],
        };
        assert_eq!(
            render_table(&t),
            "A           BB\nlong        x\ns\\u{1b}[2J  y\n"
        );
    }
}
