//! keywardd's configuration file (TOML).
//!
//! ```toml
//! [store]
//! path = "/var/lib/keyward/keyward.db"
//!
//! [token]
//! module = "/usr/lib/softhsm/libsofthsm2.so"   # the default
//! label = "keyward-backing"
//! pin_file = "/etc/keyward/user-pin"           # mode 0600; or pin_env = "KEYWARD_TOKEN_PIN"
//! # init_args = "configdir='sql:/var/lib/keyward/nssdb' ..."  # optional: C_Initialize's
//! #   pReserved, for modules that read their parameters there (NSS softokn, README "Backing
//! #   tokens"); passed as is (no path is resolved), at most 4,096 bytes, no NUL byte
//!
//! [admin]
//! socket = "/run/keyward/admin.sock"           # mode 0660
//! group = "keyward"                            # optional: the socket's group
//!
//! [client]
//! socket = "/run/keyward/client.sock"          # mode 0666
//!
//! [daemon]
//! destroy_check_secs = 60                      # how often scheduled destroys are run
//! # Connections and module instances (design §9; README "Connections and module instances").
//! max_connections = 4096                       # client socket, every uid together
//! max_connections_per_uid = 1024               # client socket, one peer uid (200 processes x 4 lanes, and room)
//! max_admin_connections = 64                   # admin socket, every uid together (its own reserve)
//! max_admin_connections_per_uid = 16           # admin socket, one peer uid
//! handshake_timeout_secs = 10                  # the whole handshake; each whole request of a connection
//!                                              # with no session and no login
//! client_idle_secs = 300                       # a client connection with no session and no login
//! admin_idle_secs = 300                        # an admin connection between requests
//! max_instances = 8192                         # module instances, every uid together
//! max_instances_per_uid = 1024                 # module instances of one peer uid
//! instance_grace_secs = 600                    # an instance with no connection and no pid to watch
//! session_objects_per_instance = 1000          # session objects (CKA_TOKEN=FALSE) per module instance
//! max_unseen_configured_rings = 1024           # configured key rings (KEYWARD_TOKENS) the caller does not
//!                                              # see that one slot list may name (CKR_ARGUMENTS_BAD)
//! audit_checkpoint_secs = 10                   # sign the audit head (and store it in the token)
//!                                              # at least this often; 10x this unstored: refuse
//! audit_coalesce_window_ms = 1000              # identical denials within this are one record with a count
//! audit_records_per_uid_per_second = 10000     # audit records one peer uid adds, sustained (0: no refill)
//! audit_burst_per_uid = 50000                  # ... and at once; over it, that uid's operations are refused
//!
//! # Resource limits of the client socket (design §9 "Resources"). Each is counted per peer
//! # uid (uid 0 included), per principal, and in total; a use over a cap is refused
//! # (CKR_SESSION_COUNT from C_OpenSession, CKR_DEVICE_MEMORY elsewhere), audited, and logged
//! # (rate-limited) with the limit and the uid. Defaults fit a busy host: 200 worker processes
//! # of one uid with 4 connections each, a few sessions and operations per connection.
//! max_sessions_per_uid = 8192                  # open PKCS#11 sessions
//! max_sessions_per_principal = 8192
//! max_sessions = 32768
//! max_operations_per_uid = 8192                # operations in flight (*Init to the end)
//! max_operations_per_principal = 8192
//! max_operations = 32768
//! max_operation_bytes = 4194304                # bytes one multi-part operation may buffer (4 MiB)
//! max_buffered_bytes_per_uid = 134217728       # bytes buffered by operations in flight (128 MiB)
//! max_buffered_bytes_per_principal = 134217728
//! max_buffered_bytes = 536870912               # 512 MiB
//! max_session_objects_per_uid = 4096           # session objects in the token
//! max_session_objects_per_principal = 4096
//! max_session_objects = 16384
//! max_key_generations_per_uid = 4              # C_GenerateKey(Pair) running in the token (CPU)
//! max_key_generations_per_principal = 4
//! max_key_generations = 16
//!
//! [testing]
//! clock_file = "/tmp/t/clock"                  # TESTS ONLY: unix seconds read from this file
//! ```
//!
//! Relative paths are taken relative to the directory of the configuration file. Unknown keys
//! are refused, so a typo is not silently ignored.

use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// The longest `[token] init_args` accepted.
const MAX_INIT_ARGS: usize = 4096;

/// SoftHSM2's module on Debian and Ubuntu.
pub const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// The default period of the scheduled-destroy check.
pub const DEFAULT_DESTROY_CHECK_SECS: u64 = 60;

/// The default cap on client-socket connections, every uid together.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// The default cap on one peer uid's client-socket connections: 200 worker processes with
/// the module's 4 lanes each, and room.
pub const DEFAULT_MAX_CONNECTIONS_PER_UID: usize = 1024;
/// The default cap on admin-socket connections, every uid together. The admin socket's
/// connections never count against the client socket's caps (its reserve, design §9).
pub const DEFAULT_MAX_ADMIN_CONNECTIONS: usize = 64;
/// The default cap on one peer uid's admin-socket connections.
pub const DEFAULT_MAX_ADMIN_CONNECTIONS_PER_UID: usize = 16;
/// The default deadline of a whole handshake (seconds).
pub const DEFAULT_HANDSHAKE_TIMEOUT_SECS: u64 = 10;
/// The default idle time after which a client connection with no session and no login is
/// closed (seconds).
pub const DEFAULT_CLIENT_IDLE_SECS: u64 = 300;
/// The default idle time after which an admin connection is closed (seconds).
pub const DEFAULT_ADMIN_IDLE_SECS: u64 = 300;
/// The default cap on module instances, every uid together.
pub const DEFAULT_MAX_INSTANCES: usize = 8192;
/// The default cap on one peer uid's module instances.
pub const DEFAULT_MAX_INSTANCES_PER_UID: usize = 1024;
/// The default time an instance with no connection and no process to watch is kept (seconds).
pub const DEFAULT_INSTANCE_GRACE_SECS: u64 = 600;

/// The default cap on one module instance's session objects (design §4 "Session objects").
pub const DEFAULT_SESSION_OBJECTS_PER_INSTANCE: usize = 1000;

/// The default cap on configured key rings the caller does not see in one slot list (design
/// §9): far more than a process configures; the rings it sees are not counted.
pub const DEFAULT_MAX_UNSEEN_CONFIGURED_RINGS: usize = 1024;

/// The default audit checkpoint interval (design §6 cadence: sign every 1,000 records or 10 s,
/// store the signed head in the token at most every 10 s).
pub const DEFAULT_AUDIT_CHECKPOINT_SECS: u64 = 10;
/// Default `[daemon] max_sessions_per_uid` (and `_per_principal`).
pub const DEFAULT_MAX_SESSIONS_PER_UID: usize = 8192;
/// Default `[daemon] max_sessions`.
pub const DEFAULT_MAX_SESSIONS: usize = 32768;
/// Default `[daemon] max_operations_per_uid` (and `_per_principal`).
pub const DEFAULT_MAX_OPERATIONS_PER_UID: usize = 8192;
/// Default `[daemon] max_operations`.
pub const DEFAULT_MAX_OPERATIONS: usize = 32768;
/// Default `[daemon] max_operation_bytes` (4 MiB).
pub const DEFAULT_MAX_OPERATION_BYTES: usize = 4 << 20;
/// Default `[daemon] max_buffered_bytes_per_uid` (and `_per_principal`): 128 MiB.
pub const DEFAULT_MAX_BUFFERED_BYTES_PER_UID: usize = 128 << 20;
/// Default `[daemon] max_buffered_bytes`: 512 MiB.
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 512 << 20;
/// Default `[daemon] max_session_objects_per_uid` (and `_per_principal`).
pub const DEFAULT_MAX_SESSION_OBJECTS_PER_UID: usize = 4096;
/// Default `[daemon] max_session_objects`.
pub const DEFAULT_MAX_SESSION_OBJECTS: usize = 16384;
/// Default `[daemon] max_key_generations_per_uid` (and `_per_principal`).
pub const DEFAULT_MAX_KEY_GENERATIONS_PER_UID: usize = 4;
/// Default `[daemon] max_key_generations`.
pub const DEFAULT_MAX_KEY_GENERATIONS: usize = 16;

/// The default coalescing window of identical denials (design §6 "Coalescing").
pub const DEFAULT_AUDIT_COALESCE_WINDOW_MS: u64 = 1000;

/// The default sustained audit rate of one peer uid (design §9 "Resources"): 200 worker
/// processes of one uid at 50 audited operations a second each (each allowed `*Init` is one
/// record), a tenth of what the writer commits (about 100,000 records/s).
pub const DEFAULT_AUDIT_RECORDS_PER_UID_PER_SECOND: u32 = 10_000;

/// The default burst of one peer uid's audit records (5 s at the default rate).
pub const DEFAULT_AUDIT_BURST_PER_UID: u32 = 50_000;

/// A configuration file that cannot be used; the message says what to fix (one line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Where the token's user PIN comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSource {
    /// A file of mode 0600 (one trailing newline is ignored).
    File(PathBuf),
    /// An environment variable of keywardd.
    Env(String),
}

/// keywardd's connection and module-instance limits (`[daemon]`, design §9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Client-socket connections, every uid together.
    pub max_connections: usize,
    /// Client-socket connections of one peer uid.
    pub max_connections_per_uid: usize,
    /// Admin-socket connections, every uid together.
    pub max_admin_connections: usize,
    /// Admin-socket connections of one peer uid.
    pub max_admin_connections_per_uid: usize,
    /// Deadline of the whole handshake (seconds).
    pub handshake_timeout_secs: u64,
    /// Idle time before a client connection with no session and no login is closed.
    pub client_idle_secs: u64,
    /// Idle time before an admin connection is closed.
    pub admin_idle_secs: u64,
    /// Module instances, every uid together.
    pub max_instances: usize,
    /// Module instances of one peer uid.
    pub max_instances_per_uid: usize,
    /// How long an instance with no connection and no process to watch is kept (seconds).
    pub instance_grace_secs: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_uid: DEFAULT_MAX_CONNECTIONS_PER_UID,
            max_admin_connections: DEFAULT_MAX_ADMIN_CONNECTIONS,
            max_admin_connections_per_uid: DEFAULT_MAX_ADMIN_CONNECTIONS_PER_UID,
            handshake_timeout_secs: DEFAULT_HANDSHAKE_TIMEOUT_SECS,
            client_idle_secs: DEFAULT_CLIENT_IDLE_SECS,
            admin_idle_secs: DEFAULT_ADMIN_IDLE_SECS,
            max_instances: DEFAULT_MAX_INSTANCES,
            max_instances_per_uid: DEFAULT_MAX_INSTANCES_PER_UID,
            instance_grace_secs: DEFAULT_INSTANCE_GRACE_SECS,
        }
    }
}

/// keywardd's whole configuration, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The SQLite store.
    pub store_path: PathBuf,
    /// The PKCS#11 module to load.
    pub token_module: PathBuf,
    /// The label of the one backing token.
    pub token_label: String,
    /// `[token] init_args`: the string passed as `pReserved` to the module's `C_Initialize`.
    pub token_init_args: Option<String>,
    /// Where the user PIN comes from.
    pub pin: PinSource,
    /// The admin socket (0660).
    pub admin_socket: PathBuf,
    /// The admin socket's group (name or number), if any.
    pub admin_group: Option<String>,
    /// The client socket (0666).
    pub client_socket: PathBuf,
    /// How often scheduled destroys are run.
    pub destroy_check_secs: u64,
    /// The connection, handshake, idle and instance limits (design §9).
    pub limits: Limits,
    /// The cap on one module instance's session objects (more is `CKR_DEVICE_MEMORY`).
    pub session_objects_per_instance: usize,
    /// Configured key rings the caller does not see that one slot list may name (more is
    /// `CKR_ARGUMENTS_BAD`; the rings it sees are not counted).
    pub max_unseen_configured_rings: usize,
    /// Audit checkpoints: the chain head is signed at least this often (and every 1,000
    /// records) and stored in the token at most this often; a head left unstored for 10x
    /// this refuses new operations (design §6).
    pub audit_checkpoint_secs: u64,
    /// The client socket's resource limits per uid, per principal and in total.
    pub resources: super::limits::Settings,
    /// Identical denials within this many milliseconds are one audit record with a count.
    pub audit_coalesce_window_ms: u64,
    /// Audit records one peer uid may add per second, sustained (0: no refill).
    pub audit_records_per_uid_per_second: u32,
    /// Audit records one peer uid may add at once; beyond the rate and this, its operations
    /// are refused (`CKR_DEVICE_MEMORY`) and its denials coalesce without their resource.
    pub audit_burst_per_uid: u32,
    /// Tests only: read the time (unix seconds) from this file.
    pub clock_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    store: RawStore,
    token: RawToken,
    admin: RawAdmin,
    client: RawClient,
    #[serde(default)]
    daemon: RawDaemon,
    #[serde(default)]
    testing: RawTesting,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    path: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    module: Option<PathBuf>,
    label: String,
    pin_file: Option<PathBuf>,
    pin_env: Option<String>,
    init_args: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    socket: PathBuf,
    group: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    socket: PathBuf,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    destroy_check_secs: Option<u64>,
    max_connections: Option<usize>,
    max_connections_per_uid: Option<usize>,
    max_admin_connections: Option<usize>,
    max_admin_connections_per_uid: Option<usize>,
    handshake_timeout_secs: Option<u64>,
    client_idle_secs: Option<u64>,
    admin_idle_secs: Option<u64>,
    max_instances: Option<usize>,
    max_instances_per_uid: Option<usize>,
    instance_grace_secs: Option<u64>,
    session_objects_per_instance: Option<usize>,
    max_unseen_configured_rings: Option<usize>,
    audit_checkpoint_secs: Option<u64>,
    max_sessions_per_uid: Option<usize>,
    max_sessions_per_principal: Option<usize>,
    max_sessions: Option<usize>,
    max_operations_per_uid: Option<usize>,
    max_operations_per_principal: Option<usize>,
    max_operations: Option<usize>,
    max_operation_bytes: Option<usize>,
    max_buffered_bytes_per_uid: Option<usize>,
    max_buffered_bytes_per_principal: Option<usize>,
    max_buffered_bytes: Option<usize>,
    max_session_objects_per_uid: Option<usize>,
    max_session_objects_per_principal: Option<usize>,
    max_session_objects: Option<usize>,
    max_key_generations_per_uid: Option<usize>,
    max_key_generations_per_principal: Option<usize>,
    max_key_generations: Option<usize>,
    audit_coalesce_window_ms: Option<u64>,
    audit_records_per_uid_per_second: Option<u32>,
    audit_burst_per_uid: Option<u32>,
}

impl RawDaemon {
    /// The resource limits, each at least 1.
    fn resources(&self) -> Result<super::limits::Settings, ConfigError> {
        use super::limits::Caps;
        let d = super::limits::Settings::default();
        let one = |v: Option<usize>, default: usize, key: &str| match v {
            Some(0) => Err(ConfigError(format!("[daemon] {key} must be at least 1"))),
            Some(v) => Ok(v),
            None => Ok(default),
        };
        let caps = |u: Option<usize>,
                    p: Option<usize>,
                    g: Option<usize>,
                    d: Caps,
                    name: &str|
         -> Result<Caps, ConfigError> {
            Ok(Caps {
                per_uid: one(u, d.per_uid, &format!("max_{name}_per_uid"))?,
                per_principal: one(p, d.per_principal, &format!("max_{name}_per_principal"))?,
                global: one(g, d.global, &format!("max_{name}"))?,
            })
        };
        Ok(super::limits::Settings {
            sessions: caps(
                self.max_sessions_per_uid,
                self.max_sessions_per_principal,
                self.max_sessions,
                d.sessions,
                "sessions",
            )?,
            operations: caps(
                self.max_operations_per_uid,
                self.max_operations_per_principal,
                self.max_operations,
                d.operations,
                "operations",
            )?,
            operation_bytes: one(
                self.max_operation_bytes,
                d.operation_bytes,
                "max_operation_bytes",
            )?,
            buffered_bytes: caps(
                self.max_buffered_bytes_per_uid,
                self.max_buffered_bytes_per_principal,
                self.max_buffered_bytes,
                d.buffered_bytes,
                "buffered_bytes",
            )?,
            session_objects: caps(
                self.max_session_objects_per_uid,
                self.max_session_objects_per_principal,
                self.max_session_objects,
                d.session_objects,
                "session_objects",
            )?,
            key_generations: caps(
                self.max_key_generations_per_uid,
                self.max_key_generations_per_principal,
                self.max_key_generations,
                d.key_generations,
                "key_generations",
            )?,
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTesting {
    clock_file: Option<PathBuf>,
}

impl Config {
    /// Reads and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(format!(
                "cannot read the configuration file {}: {e}",
                path.display()
            ))
        })?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let base = parent.canonicalize().unwrap_or_else(|_| parent.to_owned());
        Config::parse(&text, &base).map_err(|ConfigError(m)| {
            ConfigError(format!("configuration file {}: {m}", path.display()))
        })
    }

    /// Parses and validates configuration text; relative paths are taken from `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw: Raw = toml::from_str(text).map_err(|e| {
            // toml's messages span several lines (a snippet of the file); keep one.
            let msg = e.message().trim().to_string();
            let at = e
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!(" (line {line})")
                })
                .unwrap_or_default();
            ConfigError(format!("{}{at}", one_line(&msg)))
        })?;
        let abs = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let label = raw.token.label;
        if label.is_empty() || label.len() > 32 {
            return Err(ConfigError(format!(
                "[token] label must be 1 to 32 bytes (a PKCS#11 token label), got {} bytes",
                label.len()
            )));
        }
        let token_init_args = match raw.token.init_args {
            Some(a) if a.is_empty() || a.len() > MAX_INIT_ARGS || a.contains('\0') => {
                return Err(ConfigError(format!(
                    "[token] init_args must be 1 to {MAX_INIT_ARGS} bytes without a NUL byte, \
                     got {} bytes",
                    a.len()
                )))
            }
            a => a,
        };
        let pin = match (raw.token.pin_file, raw.token.pin_env) {
            (Some(f), None) => PinSource::File(abs(f)),
            (None, Some(v)) if !v.is_empty() => PinSource::Env(v),
            (None, Some(_)) => {
                return Err(ConfigError("[token] pin_env must name a variable".into()))
            }
            _ => {
                return Err(ConfigError(
                    "[token] needs exactly one of pin_file (a 0600 file) or pin_env (an \
                     environment variable); the PIN never goes on the command line"
                        .into(),
                ))
            }
        };
        let admin_socket = abs(raw.admin.socket);
        let client_socket = abs(raw.client.socket);
        if admin_socket == client_socket {
            return Err(ConfigError(
                "[admin] socket and [client] socket must be different paths".into(),
            ));
        }
        if let Some(g) = &raw.admin.group {
            if g.is_empty() {
                return Err(ConfigError(
                    "[admin] group is empty: name a group or remove the key".into(),
                ));
            }
        }
        let destroy_check_secs = raw
            .daemon
            .destroy_check_secs
            .unwrap_or(DEFAULT_DESTROY_CHECK_SECS);
        if destroy_check_secs == 0 {
            return Err(ConfigError(
                "[daemon] destroy_check_secs must be at least 1".into(),
            ));
        }
        let limits = limits(&raw.daemon)?;
        let audit_checkpoint_secs = raw
            .daemon
            .audit_checkpoint_secs
            .unwrap_or(DEFAULT_AUDIT_CHECKPOINT_SECS);
        if audit_checkpoint_secs == 0 {
            return Err(ConfigError(
                "[daemon] audit_checkpoint_secs must be at least 1".into(),
            ));
        }
        let resources = raw.daemon.resources()?;
        let audit_coalesce_window_ms = raw
            .daemon
            .audit_coalesce_window_ms
            .unwrap_or(DEFAULT_AUDIT_COALESCE_WINDOW_MS);
        if audit_coalesce_window_ms == 0 || audit_coalesce_window_ms > 3_600_000 {
            return Err(ConfigError(
                "[daemon] audit_coalesce_window_ms must be 1 to 3600000 (an hour)".into(),
            ));
        }
        let audit_burst_per_uid = raw
            .daemon
            .audit_burst_per_uid
            .unwrap_or(DEFAULT_AUDIT_BURST_PER_UID);
        if audit_burst_per_uid == 0 {
            return Err(ConfigError(
                "[daemon] audit_burst_per_uid must be at least 1".into(),
            ));
        }
        Ok(Config {
            store_path: abs(raw.store.path),
            token_module: raw
                .token
                .module
                .map(abs)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_MODULE)),
            token_label: label,
            token_init_args,
            pin,
            admin_socket,
            admin_group: raw.admin.group,
            client_socket,
            destroy_check_secs,
            limits,
            // 0 turns session objects off (every creation is CKR_DEVICE_MEMORY).
            session_objects_per_instance: raw
                .daemon
                .session_objects_per_instance
                .unwrap_or(DEFAULT_SESSION_OBJECTS_PER_INSTANCE),
            max_unseen_configured_rings: raw
                .daemon
                .max_unseen_configured_rings
                .unwrap_or(DEFAULT_MAX_UNSEEN_CONFIGURED_RINGS),
            audit_checkpoint_secs,
            resources,
            audit_coalesce_window_ms,
            audit_records_per_uid_per_second: raw
                .daemon
                .audit_records_per_uid_per_second
                .unwrap_or(DEFAULT_AUDIT_RECORDS_PER_UID_PER_SECOND),
            audit_burst_per_uid,
            clock_file: raw.testing.clock_file.map(abs),
        })
    }
}

/// The `[daemon]` limits, each at least 1, and per-uid caps no larger than their global ones.
fn limits(d: &RawDaemon) -> Result<Limits, ConfigError> {
    let def = Limits::default();
    let at_least_one = |key: &str, v: u64| {
        if v == 0 {
            Err(ConfigError(format!("[daemon] {key} must be at least 1")))
        } else {
            Ok(v)
        }
    };
    let count = |key: &str, v: Option<usize>, default: usize| {
        let v = v.unwrap_or(default);
        at_least_one(key, v as u64).map(|_| v)
    };
    let secs = |key: &str, v: Option<u64>, default: u64| at_least_one(key, v.unwrap_or(default));
    let l = Limits {
        max_connections: count("max_connections", d.max_connections, def.max_connections)?,
        max_connections_per_uid: count(
            "max_connections_per_uid",
            d.max_connections_per_uid,
            def.max_connections_per_uid,
        )?,
        max_admin_connections: count(
            "max_admin_connections",
            d.max_admin_connections,
            def.max_admin_connections,
        )?,
        max_admin_connections_per_uid: count(
            "max_admin_connections_per_uid",
            d.max_admin_connections_per_uid,
            def.max_admin_connections_per_uid,
        )?,
        handshake_timeout_secs: secs(
            "handshake_timeout_secs",
            d.handshake_timeout_secs,
            def.handshake_timeout_secs,
        )?,
        client_idle_secs: secs("client_idle_secs", d.client_idle_secs, def.client_idle_secs)?,
        admin_idle_secs: secs("admin_idle_secs", d.admin_idle_secs, def.admin_idle_secs)?,
        max_instances: count("max_instances", d.max_instances, def.max_instances)?,
        max_instances_per_uid: count(
            "max_instances_per_uid",
            d.max_instances_per_uid,
            def.max_instances_per_uid,
        )?,
        instance_grace_secs: secs(
            "instance_grace_secs",
            d.instance_grace_secs,
            def.instance_grace_secs,
        )?,
    };
    // A per-uid cap above its global one would only mislead: clamp it, as the global cap
    // refuses first anyway.
    Ok(Limits {
        max_connections_per_uid: l.max_connections_per_uid.min(l.max_connections),
        max_admin_connections_per_uid: l.max_admin_connections_per_uid.min(l.max_admin_connections),
        max_instances_per_uid: l.max_instances_per_uid.min(l.max_instances),
        ..l
    })
}

/// Joins a multi-line message into one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(any(test, fuzzing))]
pub mod fuzzing;

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[store]
path = "keyward.db"
[token]
label = "keyward-backing"
pin_file = "user-pin"
[admin]
socket = "/run/keyward/admin.sock"
[client]
socket = "/run/keyward/client.sock"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/keyward"))
    }

    #[test]
    fn defaults_and_relative_paths() {
        let c = parse(BASE).unwrap();
        assert_eq!(c.store_path, Path::new("/etc/keyward/keyward.db"));
        assert_eq!(c.token_module, Path::new(DEFAULT_MODULE));
        assert_eq!(c.pin, PinSource::File("/etc/keyward/user-pin".into()));
        assert_eq!(c.admin_socket, Path::new("/run/keyward/admin.sock"));
        assert_eq!(c.admin_group, None);
        assert_eq!(c.destroy_check_secs, 60);
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.limits.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(
            c.session_objects_per_instance,
            DEFAULT_SESSION_OBJECTS_PER_INSTANCE
        );
        assert_eq!(c.resources, crate::daemon::limits::Settings::default());
        assert_eq!(c.resources.sessions.per_uid, DEFAULT_MAX_SESSIONS_PER_UID);
        assert_eq!(
            c.resources.key_generations.global,
            DEFAULT_MAX_KEY_GENERATIONS
        );
        assert_eq!(c.clock_file, None);
        assert_eq!(c.token_init_args, None);
    }

    #[test]
    fn init_args_passed_as_is_and_checked() {
        let nss = "configdir='sql:db' certPrefix='' keyPrefix='' secmod='secmod.db' \
                   flags=optimizeSpace dbTokenDescription='keyward-backing'";
        let text = BASE.replace("pin_file", &format!("init_args = \"{nss}\"\npin_file"));
        // Not a path: the relative configdir stays as written.
        assert_eq!(parse(&text).unwrap().token_init_args.as_deref(), Some(nss));
        for bad in [
            String::new(),
            "a".repeat(MAX_INIT_ARGS + 1),
            "a\\u0000b".into(),
        ] {
            let text = BASE.replace("pin_file", &format!("init_args = \"{bad}\"\npin_file"));
            let e = parse(&text).unwrap_err();
            assert!(e.0.contains("init_args must be 1 to 4096 bytes"), "{e}");
        }
    }

    #[test]
    fn every_key() {
        let text = r#"
[store]
path = "/s/k.db"
[token]
module = "/m/lib.so"
label = "t"
pin_env = "PIN"
[admin]
socket = "a.sock"
group = "keyward"
[client]
socket = "c.sock"
[daemon]
destroy_check_secs = 5
max_connections = 3
max_connections_per_uid = 2
max_admin_connections = 5
max_admin_connections_per_uid = 9
handshake_timeout_secs = 4
client_idle_secs = 6
admin_idle_secs = 8
max_instances = 10
max_instances_per_uid = 11
instance_grace_secs = 12
session_objects_per_instance = 7
max_unseen_configured_rings = 9
max_sessions_per_uid = 11
max_sessions_per_principal = 12
max_sessions = 13
max_operations_per_uid = 21
max_operations_per_principal = 22
max_operations = 23
max_operation_bytes = 30
max_buffered_bytes_per_uid = 31
max_buffered_bytes_per_principal = 32
max_buffered_bytes = 33
max_session_objects_per_uid = 41
max_session_objects_per_principal = 42
max_session_objects = 43
max_key_generations_per_uid = 51
max_key_generations_per_principal = 52
max_key_generations = 53
[testing]
clock_file = "clock"
"#;
        let c = parse(text).unwrap();
        assert_eq!(c.token_module, Path::new("/m/lib.so"));
        assert_eq!(c.pin, PinSource::Env("PIN".into()));
        assert_eq!(c.admin_socket, Path::new("/etc/keyward/a.sock"));
        assert_eq!(c.admin_group.as_deref(), Some("keyward"));
        assert_eq!(c.destroy_check_secs, 5);
        let l = &c.limits;
        assert_eq!((l.max_connections, l.max_connections_per_uid), (3, 2));
        // Per-uid caps above their global ones are clamped.
        assert_eq!(
            (l.max_admin_connections, l.max_admin_connections_per_uid),
            (5, 5)
        );
        assert_eq!((l.max_instances, l.max_instances_per_uid), (10, 10));
        assert_eq!(
            (
                l.handshake_timeout_secs,
                l.client_idle_secs,
                l.admin_idle_secs
            ),
            (4, 6, 8)
        );
        assert_eq!(l.instance_grace_secs, 12);
        assert_eq!(c.session_objects_per_instance, 7);
        assert_eq!(c.max_unseen_configured_rings, 9);
        let l = c.resources;
        let caps = |c: crate::daemon::limits::Caps| (c.per_uid, c.per_principal, c.global);
        assert_eq!(caps(l.sessions), (11, 12, 13));
        assert_eq!(caps(l.operations), (21, 22, 23));
        assert_eq!(l.operation_bytes, 30);
        assert_eq!(caps(l.buffered_bytes), (31, 32, 33));
        assert_eq!(caps(l.session_objects), (41, 42, 43));
        assert_eq!(caps(l.key_generations), (51, 52, 53));
        assert_eq!(c.clock_file, Some("/etc/keyward/clock".into()));
    }

    #[test]
    fn exactly_one_pin_source() {
        let both = BASE.replace("pin_file", "pin_env = \"X\"\npin_file");
        let e = parse(&both).unwrap_err();
        assert!(e.0.contains("exactly one of pin_file"), "{e}");
        let none = BASE.replace("pin_file = \"user-pin\"\n", "");
        let e = parse(&none).unwrap_err();
        assert!(e.0.contains("exactly one of pin_file"), "{e}");
    }

    #[test]
    fn refusals_are_one_line() {
        for (text, needle) in [
            (BASE.replace("label = ", "lable = "), "lable"),
            (
                BASE.replace("[client]\nsocket", "[client]\nsockets"),
                "sockets",
            ),
            (BASE.replace("keyward-backing", &"x".repeat(33)), "1 to 32"),
            (BASE.replace("client.sock", "admin.sock"), "different"),
            (
                format!("{BASE}[daemon]\ndestroy_check_secs = 0\n"),
                "at least 1",
            ),
            (
                format!("{BASE}[daemon]\nmax_connections = 0\n"),
                "at least 1",
            ),
            (
                format!("{BASE}[daemon]\nmax_instances_per_uid = 0\n"),
                "max_instances_per_uid must be at least 1",
            ),
            (
                format!("{BASE}[daemon]\nhandshake_timeout_secs = 0\n"),
                "handshake_timeout_secs must be at least 1",
            ),
            (
                format!("{BASE}[daemon]\nmax_key_generations_per_uid = 0\n"),
                "max_key_generations_per_uid must be at least 1",
            ),
            ("[store".to_string(), ""),
            (BASE.replace("[admin]\n", ""), ""),
        ] {
            let e = parse(&text).unwrap_err();
            assert!(e.0.contains(needle), "{needle}: {e}");
            assert!(!e.0.contains('\n'), "{e:?}");
        }
    }
}
