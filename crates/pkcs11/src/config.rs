//! The module's configuration (design §4 "Configuration"; `include/keyward.h` documents it for
//! C users).
//!
//! Settings, each from the first source that has it:
//! 1. `pReserved` of `CK_C_INITIALIZE_ARGS` (NSS `parameters=`, p11-kit
//!    `x-init-reserved:`): a NUL-terminated string of `key=value` settings separated by `;`
//!    or newlines; keys `socket`, `tokens`, `credentials`, `config`, `timeout`,
//!    `keygen_timeout`;
//! 2. the environment: `KEYWARD_SOCKET`, `KEYWARD_TOKENS`, `KEYWARD_CREDENTIALS`,
//!    `KEYWARD_CONFIG`, `KEYWARD_TIMEOUT`, `KEYWARD_KEYGEN_TIMEOUT`;
//! 3. the config file (`config=` / `KEYWARD_CONFIG`, else `/etc/keyward/module.toml` if it
//!    exists): TOML with `socket`, `tokens` (a list), `credentials`, `timeout`,
//!    `keygen_timeout`;
//! 4. defaults: socket `/run/keyward/client.sock`, no tokens, no credentials, deadlines
//!    [`DEFAULT_TIMEOUT`] and [`DEFAULT_KEYGEN_TIMEOUT`].
//!
//! **Deadlines** (issue 15 item 3): how long one call waits for keywardd's answer, in
//! seconds (a decimal number, more than 0 and at most [`MAX_TIMEOUT_SECS`]):
//! `keygen_timeout` for key generation and unwrapping (an RSA key generation on a slow token
//! takes seconds), `timeout` for every other call. A call whose deadline passes answers
//! `CKR_DEVICE_REMOVED` and ends the connection's sessions (design §4).
//!
//! A token entry is `RING` or `RING=LABEL`, `RING` the key ring's full name
//! (`organizations/acme/keyRings/root-ca`, `projects/p/keyRings/r`); the label defaults to the
//! ring id. In `KEYWARD_TOKENS` and `tokens=` entries are separated by `,`.
//!
//! The credential file holds one service-account key, on the first line that is neither
//! empty nor a `#` comment; it is read at each connection (so a rotated key is picked up).

use keyward_wire::pkcs11::ConfiguredToken;
use keyward_wire::ServiceAccountKey;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use zeroize::Zeroizing;

/// The client socket when nothing says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/keyward/client.sock";
/// The config file read when `KEYWARD_CONFIG` is not set (skipped if missing).
pub const DEFAULT_CONFIG_FILE: &str = "/etc/keyward/module.toml";
/// A token label holds at most 32 bytes (`CK_TOKEN_INFO.label`).
pub const MAX_LABEL_LEN: usize = 32;
/// The deadline of a call other than key generation and unwrapping (`timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The deadline of C_GenerateKey, C_GenerateKeyPair and C_UnwrapKey (`keygen_timeout`).
pub const DEFAULT_KEYGEN_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest deadline accepted, in seconds (a day).
pub const MAX_TIMEOUT_SECS: f64 = 86_400.0;

/// The module's settings for one instance (fixed at C_Initialize).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// keywardd's client socket.
    pub socket: PathBuf,
    /// Key rings that are always in the slot list.
    pub tokens: Vec<ConfiguredToken>,
    /// The credential file (`KEYWARD_CREDENTIALS`).
    pub credentials: Option<PathBuf>,
    /// How long a call waits for keywardd (`timeout`).
    pub timeout: Duration,
    /// How long key generation and unwrapping wait for keywardd (`keygen_timeout`).
    pub keygen_timeout: Duration,
}

/// A configuration error: C_Initialize fails with `CKR_FUNCTION_FAILED` (a bad `pReserved`
/// with `CKR_ARGUMENTS_BAD`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `pReserved` is not a list of known `key=value` settings.
    #[error("pReserved: {0}")]
    Reserved(String),
    /// A setting's value is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The credential file may be read or written by its group or others (design §9
    /// "Files"): refused, as keywardctl and keywardd's PIN file refuse it.
    #[error(
        "the KEYWARD_CREDENTIALS file {} is open to its group or others (mode {mode:04o}): \
         run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    CredentialsOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The config file cannot be read or parsed.
    #[error("config file {}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    socket: Option<PathBuf>,
    tokens: Option<Vec<String>>,
    credentials: Option<PathBuf>,
    timeout: Option<f64>,
    keygen_timeout: Option<f64>,
}

#[derive(Debug, Default)]
struct Reserved {
    socket: Option<String>,
    tokens: Option<String>,
    credentials: Option<String>,
    config: Option<String>,
    timeout: Option<String>,
    keygen_timeout: Option<String>,
}

fn parse_reserved(s: &str) -> Result<Reserved, ConfigError> {
    let mut r = Reserved::default();
    for item in s.split([';', '\n']) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| ConfigError::Reserved(format!("'{item}' is not key=value")))?;
        let value = Some(value.trim().to_owned());
        match key.trim() {
            "socket" => r.socket = value,
            "tokens" => r.tokens = value,
            "credentials" => r.credentials = value,
            "config" => r.config = value,
            "timeout" => r.timeout = value,
            "keygen_timeout" => r.keygen_timeout = value,
            other => {
                return Err(ConfigError::Reserved(format!(
                    "unknown setting '{other}' (known: socket, tokens, credentials, config, \
                     timeout, keygen_timeout)"
                )))
            }
        }
    }
    Ok(r)
}

/// Parses one token entry, `RING` or `RING=LABEL`.
pub fn parse_token(entry: &str) -> Result<ConfiguredToken, ConfigError> {
    let entry = entry.trim();
    let (ring, label) = match entry.split_once('=') {
        Some((ring, label)) => (ring.trim(), Some(label.trim())),
        None => (entry, None),
    };
    let id = ring
        .rsplit_once("/keyRings/")
        .map(|(_, id)| id)
        .filter(|id| !id.is_empty() && !id.contains('/'))
        .ok_or_else(|| {
            ConfigError::Invalid(format!(
                "token '{entry}': expected a key ring's full name such as \
                 organizations/ORG/keyRings/RING or projects/P/keyRings/RING, optionally \
                 followed by =LABEL"
            ))
        })?;
    let label = label.unwrap_or(id);
    if label.is_empty() || label.len() > MAX_LABEL_LEN {
        return Err(ConfigError::Invalid(format!(
            "token '{entry}': the label '{label}' must hold 1 to {MAX_LABEL_LEN} bytes"
        )));
    }
    Ok(ConfiguredToken {
        ring: ring.to_owned(),
        label: label.to_owned(),
    })
}

/// Parses a deadline in seconds (`timeout`, `keygen_timeout`): more than 0, at most
/// [`MAX_TIMEOUT_SECS`].
pub fn parse_timeout(key: &str, secs: f64) -> Result<Duration, ConfigError> {
    if !(secs > 0.0 && secs <= MAX_TIMEOUT_SECS) {
        return Err(ConfigError::Invalid(format!(
            "{key} = {secs}: a number of seconds, more than 0 and at most {MAX_TIMEOUT_SECS}"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The deadline `key` from a `pReserved` or environment string, else from the file, else
/// `default`.
fn timeout_setting(
    key: &str,
    text: Option<String>,
    file: Option<f64>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let secs = match text {
        Some(t) => t.trim().parse::<f64>().map_err(|_| {
            ConfigError::Invalid(format!("{key} = '{t}': expected a number of seconds"))
        })?,
        None => match file {
            Some(f) => f,
            None => return Ok(default),
        },
    };
    parse_timeout(key, secs)
}

fn parse_tokens<'a>(
    entries: impl Iterator<Item = &'a str>,
) -> Result<Vec<ConfiguredToken>, ConfigError> {
    let mut out: Vec<ConfiguredToken> = Vec::new();
    for e in entries.map(str::trim).filter(|e| !e.is_empty()) {
        let t = parse_token(e)?;
        if !out.iter().any(|o| o.ring == t.ring) {
            out.push(t);
        }
    }
    Ok(out)
}

impl Config {
    /// Loads the configuration from `reserved` (the `pReserved` string, if any), the
    /// environment as `env` reports it, and the config file.
    pub fn load(
        reserved: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        Config::load_with(reserved, env, &read_file)
    }

    /// [`Config::load`] with `read_file` standing in for the file system (the fuzz harness).
    fn load_with(
        reserved: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
        read_file: &dyn Fn(&Path, bool) -> Result<FileSettings, ConfigError>,
    ) -> Result<Config, ConfigError> {
        let r = match reserved {
            Some(s) => parse_reserved(s)?,
            None => Reserved::default(),
        };
        let env = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let file = match r.config.clone().or_else(|| env("KEYWARD_CONFIG")) {
            Some(path) => read_file(Path::new(&path), true)?,
            None => read_file(Path::new(DEFAULT_CONFIG_FILE), false)?,
        };
        let socket = r
            .socket
            .map(PathBuf::from)
            .or_else(|| env("KEYWARD_SOCKET").map(PathBuf::from))
            .or(file.socket)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
        let tokens = match r.tokens.or_else(|| env("KEYWARD_TOKENS")) {
            Some(list) => parse_tokens(list.split(','))?,
            None => parse_tokens(file.tokens.unwrap_or_default().iter().map(String::as_str))?,
        };
        let credentials = r
            .credentials
            .map(PathBuf::from)
            .or_else(|| env("KEYWARD_CREDENTIALS").map(PathBuf::from))
            .or(file.credentials);
        let timeout = timeout_setting(
            "timeout",
            r.timeout.or_else(|| env("KEYWARD_TIMEOUT")),
            file.timeout,
            DEFAULT_TIMEOUT,
        )?;
        let keygen_timeout = timeout_setting(
            "keygen_timeout",
            r.keygen_timeout.or_else(|| env("KEYWARD_KEYGEN_TIMEOUT")),
            file.keygen_timeout,
            DEFAULT_KEYGEN_TIMEOUT,
        )?;
        Ok(Config {
            socket,
            tokens,
            credentials,
            timeout,
            keygen_timeout,
        })
    }

    /// Loads the configuration from `reserved` and the process environment.
    pub fn from_process(reserved: Option<&str>) -> Result<Config, ConfigError> {
        Config::load(reserved, &|k| std::env::var(k).ok())
    }

    /// Reads the service-account key from the credential file, if one is configured. A file
    /// its group or others may read or write is refused ([`ConfigError::CredentialsOpen`]):
    /// its key is no longer secret.
    pub fn read_credentials(&self) -> Result<Option<ServiceAccountKey>, ConfigError> {
        use std::io::Read;
        use std::os::unix::fs::PermissionsExt;
        let Some(path) = &self.credentials else {
            return Ok(None);
        };
        let bad = |e: std::io::Error| ConfigError::File {
            path: path.clone(),
            message: e.to_string(),
        };
        let mut file = std::fs::File::open(path).map_err(bad)?;
        // The mode of the file opened, not of whatever the path names later.
        let mode = file.metadata().map_err(bad)?.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(ConfigError::CredentialsOpen {
                path: path.clone(),
                mode,
            });
        }
        let mut text = Zeroizing::new(String::new());
        file.by_ref()
            .take(64 * 1024)
            .read_to_string(&mut text)
            .map_err(bad)?;
        text.lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|key| Some(ServiceAccountKey::new(key)))
            .ok_or_else(|| ConfigError::File {
                path: path.clone(),
                message: "holds no service-account key".into(),
            })
    }
}

fn read_file(path: &Path, required: bool) -> Result<FileSettings, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(FileSettings::default())
        }
        Err(e) => {
            return Err(ConfigError::File {
                path: path.to_owned(),
                message: e.to_string(),
            })
        }
    };
    parse_file(path, &text)
}

/// Parses the text of the config file at `path`.
fn parse_file(path: &Path, text: &str) -> Result<FileSettings, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::File {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

#[cfg(any(test, fuzzing))]
pub mod fuzzing;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_with_an_empty_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("m.toml");
        std::fs::write(&f, "").unwrap();
        let c = Config::load(None, &env_of(&[("KEYWARD_CONFIG", f.to_str().unwrap())])).unwrap();
        assert_eq!(c.socket, Path::new(DEFAULT_SOCKET));
        assert!(c.tokens.is_empty());
        assert_eq!(c.credentials, None);
    }

    #[test]
    fn precedence_reserved_env_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("m.toml");
        std::fs::write(
            &f,
            "socket = \"/file.sock\"\ntokens = [\"projects/p/keyRings/file\"]\n\
             credentials = \"/file.cred\"\n",
        )
        .unwrap();
        let cfg = f.to_str().unwrap();
        let file_only = Config::load(None, &env_of(&[("KEYWARD_CONFIG", cfg)])).unwrap();
        assert_eq!(file_only.socket, Path::new("/file.sock"));
        assert_eq!(file_only.tokens[0].label, "file");
        assert_eq!(
            file_only.credentials.as_deref(),
            Some(Path::new("/file.cred"))
        );

        let env = env_of(&[
            ("KEYWARD_CONFIG", cfg),
            ("KEYWARD_SOCKET", "/env.sock"),
            (
                "KEYWARD_TOKENS",
                "organizations/o/keyRings/a, projects/p/keyRings/b=Bee CA",
            ),
        ]);
        let c = Config::load(None, &env).unwrap();
        assert_eq!(c.socket, Path::new("/env.sock"));
        assert_eq!(
            c.tokens,
            vec![
                ConfiguredToken {
                    ring: "organizations/o/keyRings/a".into(),
                    label: "a".into()
                },
                ConfiguredToken {
                    ring: "projects/p/keyRings/b".into(),
                    label: "Bee CA".into()
                },
            ]
        );
        assert_eq!(c.credentials.as_deref(), Some(Path::new("/file.cred")));

        let c = Config::load(
            Some("socket=/res.sock; tokens=projects/q/keyRings/r\ncredentials = /res.cred"),
            &env,
        )
        .unwrap();
        assert_eq!(c.socket, Path::new("/res.sock"));
        assert_eq!(c.tokens.len(), 1);
        assert_eq!(c.tokens[0].ring, "projects/q/keyRings/r");
        assert_eq!(c.credentials.as_deref(), Some(Path::new("/res.cred")));
    }

    #[test]
    fn bad_settings() {
        let none = env_of(&[("KEYWARD_CONFIG", "/nonexistent/keyward/module.toml")]);
        // An explicit config file must exist.
        assert!(matches!(
            Config::load(None, &none),
            Err(ConfigError::File { .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("m.toml");
        std::fs::write(&f, "sockett = 1\n").unwrap();
        let env = env_of(&[("KEYWARD_CONFIG", f.to_str().unwrap())]);
        assert!(matches!(
            Config::load(None, &env),
            Err(ConfigError::File { .. })
        ));
        std::fs::write(&f, "").unwrap();
        assert!(matches!(
            Config::load(Some("bogus=1"), &env),
            Err(ConfigError::Reserved(_))
        ));
        assert!(matches!(
            Config::load(Some("socket"), &env),
            Err(ConfigError::Reserved(_))
        ));
        for bad in [
            "root-ca",
            "organizations/o/keyRings/",
            "projects/p/keyRings/r/cryptoKeys/k",
            "projects/p/keyRings/r=",
            "projects/p/keyRings/r=0123456789012345678901234567890123",
        ] {
            assert!(parse_token(bad).is_err(), "{bad}");
        }
        // Duplicates collapse; empty entries are skipped.
        let env = env_of(&[
            ("KEYWARD_CONFIG", f.to_str().unwrap()),
            (
                "KEYWARD_TOKENS",
                "projects/p/keyRings/r,,projects/p/keyRings/r=X",
            ),
        ]);
        assert_eq!(Config::load(None, &env).unwrap().tokens.len(), 1);
    }

    #[test]
    fn deadlines() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("m.toml");
        std::fs::write(&f, "").unwrap();
        let cfg = f.to_str().unwrap();
        let c = Config::load(None, &env_of(&[("KEYWARD_CONFIG", cfg)])).unwrap();
        assert_eq!(
            (c.timeout, c.keygen_timeout),
            (DEFAULT_TIMEOUT, DEFAULT_KEYGEN_TIMEOUT)
        );
        std::fs::write(&f, "timeout = 7\nkeygen_timeout = 60.5\n").unwrap();
        let c = Config::load(None, &env_of(&[("KEYWARD_CONFIG", cfg)])).unwrap();
        assert_eq!(c.timeout, Duration::from_secs(7));
        assert_eq!(c.keygen_timeout, Duration::from_millis(60_500));
        let env = env_of(&[("KEYWARD_CONFIG", cfg), ("KEYWARD_TIMEOUT", "3")]);
        assert_eq!(
            Config::load(None, &env).unwrap().timeout,
            Duration::from_secs(3)
        );
        let c = Config::load(Some("timeout=2;keygen_timeout=0.5"), &env).unwrap();
        assert_eq!(c.timeout, Duration::from_secs(2));
        assert_eq!(c.keygen_timeout, Duration::from_millis(500));
        for bad in [
            "timeout=0",
            "timeout=-1",
            "timeout=abc",
            "keygen_timeout=1e9",
            "timeout=NaN",
        ] {
            assert!(
                matches!(Config::load(Some(bad), &env), Err(ConfigError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn credentials_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cred = dir.path().join("cred");
        std::fs::write(
            &cred,
            "# web@payments\n\n  kwAbC123.0123456789abcdefghijkl  \n",
        )
        .unwrap();
        // Readable by others: refused, naming the fix, never the key.
        for mode in [0o644, 0o640, 0o604, 0o620] {
            std::fs::set_permissions(&cred, std::fs::Permissions::from_mode(mode)).unwrap();
            let c = Config {
                socket: PathBuf::from(DEFAULT_SOCKET),
                tokens: vec![],
                credentials: Some(cred.clone()),
                timeout: DEFAULT_TIMEOUT,
                keygen_timeout: DEFAULT_KEYGEN_TIMEOUT,
            };
            let e = c.read_credentials().unwrap_err();
            assert!(matches!(e, ConfigError::CredentialsOpen { .. }), "{e}");
            assert!(e.to_string().contains("chmod 600"), "{e}");
            assert!(!e.to_string().contains("kwAbC123"), "{e}");
        }
        std::fs::set_permissions(&cred, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut c = Config {
            socket: PathBuf::from(DEFAULT_SOCKET),
            tokens: vec![],
            credentials: Some(cred.clone()),
            timeout: DEFAULT_TIMEOUT,
            keygen_timeout: DEFAULT_KEYGEN_TIMEOUT,
        };
        let key = c.read_credentials().unwrap().unwrap();
        assert_eq!(key.expose_secret(), "kwAbC123.0123456789abcdefghijkl");
        std::fs::write(&cred, "# nothing\n").unwrap();
        assert!(c.read_credentials().is_err());
        c.credentials = Some(dir.path().join("missing"));
        assert!(c.read_credentials().is_err());
        c.credentials = None;
        assert!(c.read_credentials().unwrap().is_none());
    }
}
