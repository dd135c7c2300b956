//! keywardctl's command line: the clap definitions of the global options and the
//! top-level commands, and the parsers of their values. The subcommands of each resource
//! are in [`keys`] (keys, versions, certificates, import jobs) and [`admin`] (hierarchy,
//! roles, IAM, groups, service accounts, store, audit).

use crate::policy::Member;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

pub mod admin;
pub mod keys;

pub use admin::*;
pub use keys::*;

/// The help heading of the options every command takes.
pub const GLOBAL: &str = "Global options";

pub const AFTER_HELP: &str = "\
Members: user:EMAIL, serviceAccount:ID@PROJECT, group:NAME, unix-uid:N, unix-gid:N,
allAuthenticated. Resources: organizations/O, folders/F, projects/P, projects/P/keyRings/R,
organizations/O/keyRings/R, .../cryptoKeys/K.

Exit codes (every command, status included): 0 success, or a valid signature or MAC;
1 refused or failed, or a signature or MAC not valid; 2 usage error; 3 keywardd not reachable
(no socket, nothing listening, or no permission on it). Every failure is `error: ...` on
stderr and, with --json, one {\"error\": {\"code\", \"message\", \"rv\"}} document on stdout
(code: failed, invalid, usage or unreachable; rv where there is one). With --json, commands
that write bytes need --out and print a JSON summary.";

/// Keyward administration: resources, IAM, service accounts and the audit log.
#[derive(Debug, Parser)]
#[command(name = "keywardctl", version, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options of every command.
#[derive(Debug, Args)]
pub struct Global {
    /// Run offline on the store at PATH (the handler runs in this process)
    #[arg(long, global = true, env = "KEYWARD_DB", value_name = "PATH", help_heading = GLOBAL)]
    pub db: Option<PathBuf>,

    /// Offline only: act as MEMBER (user:, serviceAccount:, unix-uid: or anonymous)
    /// [default: unix-uid:<your uid>, with your unix groups]
    #[arg(
        long = "as",
        global = true,
        value_name = "MEMBER",
        value_parser = parse_caller,
        help_heading = GLOBAL
    )]
    pub as_member: Option<Member>,

    /// Print the answer as one JSON document (JSON lines for audit tail/query)
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,

    /// keywardd's admin socket (used without --db) [env: KEYWARD_ADMIN_SOCKET] [default:
    /// /run/keyward/admin.sock]
    #[arg(long = "socket", global = true, value_name = "PATH", help_heading = GLOBAL)]
    socket_arg: Option<PathBuf>,

    /// keywardd's client socket (encrypt, decrypt, sign, verify, mac) [env: KEYWARD_SOCKET]
    /// [default: /run/keyward/client.sock]
    #[arg(long = "client-socket", global = true, value_name = "PATH", help_heading = GLOBAL)]
    client_socket_arg: Option<PathBuf>,

    /// keywardd's admin socket: `--socket`, else `KEYWARD_ADMIN_SOCKET`, else the default
    /// (set by [`Global::resolve`]). The environment is read here rather than by clap, so a
    /// usage line never shows the sockets as if they were required (issue 18 item 9).
    #[arg(skip)]
    pub socket: PathBuf,

    /// keywardd's client socket: `--client-socket`, else `KEYWARD_SOCKET`, else the default.
    #[arg(skip)]
    pub client_socket: PathBuf,
}

impl Global {
    /// Fills [`Global::socket`] and [`Global::client_socket`] from the options, the
    /// environment and the defaults (an empty variable counts as unset).
    pub fn resolve(&mut self) {
        let pick = |arg: &Option<PathBuf>, var: &str, default: &str| -> PathBuf {
            arg.clone()
                .or_else(|| {
                    std::env::var_os(var)
                        .filter(|v| !v.is_empty())
                        .map(PathBuf::from)
                })
                .unwrap_or_else(|| PathBuf::from(default))
        };
        self.socket = pick(
            &self.socket_arg,
            "KEYWARD_ADMIN_SOCKET",
            "/run/keyward/admin.sock",
        );
        self.client_socket = pick(
            &self.client_socket_arg,
            "KEYWARD_SOCKET",
            "/run/keyward/client.sock",
        );
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
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
    /// The backing token
    #[command(subcommand)]
    Token(TokenCmd),
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
pub struct CryptoArgs {
    /// The crypto key (projects/P/keyRings/R/cryptoKeys/K)
    #[arg(long, value_name = "KEY")]
    pub key: String,
    /// Input file [default: stdin]
    #[arg(long = "in", value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Output file [default: stdout]
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// encrypt/decrypt: additional authenticated data, read from FILE
    #[arg(long, value_name = "FILE")]
    pub aad_file: Option<PathBuf>,
    /// sign/verify: hash the input here with this digest and send only the digest
    #[arg(long, value_name = "ALG", value_parser = ["sha256", "sha384"])]
    pub digest: Option<String>,
    /// verify: the signature file; mac: check this tag file instead of making a tag
    #[arg(long, value_name = "FILE")]
    pub signature: Option<PathBuf>,
    /// mac: check the tag in FILE (exit 0 if valid, 1 if not)
    #[arg(long, value_name = "FILE")]
    pub verify: Option<PathBuf>,
}

/// `30d`, `36h`, `90m`, `3600s` or plain seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
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

/// A member argument, checked and written canonically.
pub fn parse_member(s: &str) -> Result<String, String> {
    s.parse::<Member>().map(|m| m.to_string())
}

/// The `--as` caller: an identity a request can run as.
pub fn parse_caller(s: &str) -> Result<Member, String> {
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
pub fn parse_role(s: &str) -> Result<String, String> {
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

/// A time argument (`audit query --since/--until`, issue 18 item 7), in unix seconds: a date
/// (`2026-12-07`, its midnight UTC), RFC 3339 (`2026-12-07T10:00:00Z`; a space for the `T` and
/// no offset are taken as UTC), a duration back from now as people write them (`1h`, `7d`,
/// `1h30m`, `2weeks`: humantime), or unix seconds.
pub fn parse_time(s: &str) -> Result<i64, String> {
    parse_time_at(s, std::time::SystemTime::now())
}

/// [`parse_time`] with `now` for the durations.
fn parse_time_at(s: &str, now: std::time::SystemTime) -> Result<i64, String> {
    use time::format_description::well_known::Rfc3339;
    let t = s.trim();
    let unix = |st: std::time::SystemTime| -> Option<i64> {
        let d = st.duration_since(std::time::UNIX_EPOCH).ok()?;
        i64::try_from(d.as_secs()).ok()
    };
    if let Ok(secs) = t.parse::<i64>() {
        return Ok(secs);
    }
    const DATE: &[time::format_description::FormatItem<'_>] =
        time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(t, DATE) {
        return Ok(d.midnight().assume_utc().unix_timestamp());
    }
    if let Ok(dt) = time::OffsetDateTime::parse(t, &Rfc3339) {
        return Ok(dt.unix_timestamp());
    }
    if let Some(secs) = humantime::parse_rfc3339_weak(t).ok().and_then(unix) {
        return Ok(secs);
    }
    if let Ok(d) = humantime::parse_duration(t) {
        return now
            .checked_sub(d)
            .and_then(unix)
            .ok_or_else(|| format!("'{s}' reaches back before 1970"));
    }
    Err(format!(
        "'{s}' is not a time: use a date like 2026-12-07 (midnight UTC), RFC 3339 like \
         2026-12-07T10:00:00Z or 2026-12-07T11:00:00+01:00, a duration back from now like 1h, \
         7d or 1h30m, or unix seconds like 1796601600"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn times_parse() {
        assert_eq!(parse_time("1795600800"), Ok(1_795_600_800));
        assert_eq!(parse_time("1970-01-01T00:01:00Z"), Ok(60));
        assert_eq!(parse_time("1970-01-01T01:01:00+01:00"), Ok(60));
        assert!(parse_time("yesterday").is_err());
        // Dates are midnight UTC; durations reach back from now; the weak RFC 3339 is UTC.
        assert_eq!(parse_time("1970-01-02"), Ok(86_400));
        assert_eq!(parse_time("2026-12-07"), Ok(1_796_601_600));
        assert_eq!(parse_time("1970-01-01 00:02:00"), Ok(120));
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        assert_eq!(parse_time_at("1h", now), Ok(1_000_000 - 3_600));
        assert_eq!(parse_time_at("7d", now), Ok(1_000_000 - 7 * 86_400));
        assert_eq!(parse_time_at("1h30m", now), Ok(1_000_000 - 5_400));
        assert!(parse_time_at("20d", now).is_err(), "before 1970");
        for bad in ["-1h", "2026-13-01", "5 parsecs", ""] {
            let e = parse_time(bad).unwrap_err();
            assert!(e.contains("2026-12-07") && e.contains("7d"), "{bad}: {e}");
        }
    }
}
