//! The backing token's user PIN (design §1): from a file only its owner can read, or from an
//! environment variable; never from argv, never logged. One trailing newline is dropped.

use super::config::PinSource;
use secrecy::SecretString;
use std::fmt;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Why the PIN could not be loaded. Messages name the file or variable, never the PIN.
#[derive(Debug)]
pub enum PinError {
    /// The PIN file may be read or written by its group or others.
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The PIN file cannot be read (missing, not a file, not UTF-8, ...).
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The environment variable is unset or not UTF-8.
    EnvMissing(String),
    /// The PIN is empty.
    Empty(String),
}

impl fmt::Display for PinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinError::Permissions { path, mode } => write!(
                f,
                "the PIN file {} is open to its group or others (mode {mode:04o}): run `chmod \
                 600 {}`",
                path.display(),
                path.display()
            ),
            PinError::Unreadable { path, reason } => write!(
                f,
                "cannot read the PIN file {}: {reason}: fix [token] pin_file",
                path.display()
            ),
            PinError::EnvMissing(var) => write!(
                f,
                "the environment variable {var} named by [token] pin_env is not set (or not \
                 UTF-8)"
            ),
            PinError::Empty(what) => write!(f, "the PIN in {what} is empty"),
        }
    }
}

impl std::error::Error for PinError {}

/// Loads the PIN from `source`.
pub fn load(source: &PinSource) -> Result<SecretString, PinError> {
    match source {
        PinSource::File(path) => from_file(path),
        PinSource::Env(var) => {
            let value =
                Zeroizing::new(std::env::var(var).map_err(|_| PinError::EnvMissing(var.clone()))?);
            finish(&value, || format!("environment variable {var}"))
        }
    }
}

fn from_file(path: &Path) -> Result<SecretString, PinError> {
    let unreadable = |reason: String| PinError::Unreadable {
        path: path.to_owned(),
        reason,
    };
    let mut file = std::fs::File::open(path).map_err(|e| unreadable(e.to_string()))?;
    // Check the mode of the file we opened, not of whatever the path names later.
    let meta = file.metadata().map_err(|e| unreadable(e.to_string()))?;
    if !meta.is_file() {
        return Err(unreadable("not a regular file".into()));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(PinError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    let mut bytes = Zeroizing::new(Vec::new());
    file.by_ref()
        .take(4096)
        .read_to_end(&mut bytes)
        .map_err(|e| unreadable(e.to_string()))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| unreadable("not UTF-8".into()))?;
    finish(text, || format!("file {}", path.display()))
}

fn finish(value: &str, what: impl FnOnce() -> String) -> Result<SecretString, PinError> {
    let trimmed = value
        .strip_suffix("\r\n")
        .or_else(|| value.strip_suffix('\n'))
        .unwrap_or(value);
    if trimmed.is_empty() {
        return Err(PinError::Empty(what()));
    }
    Ok(SecretString::from(trimmed.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn file_pin_trims_one_newline() {
        let dir = tempfile::tempdir().unwrap();
        for (text, want) in [
            ("1234", "1234"),
            ("1234\n", "1234"),
            ("1234\r\n", "1234"),
            ("1234\n\n", "1234\n"),
            (" 12 34 ", " 12 34 "),
        ] {
            let p = write(dir.path(), "pin", text, 0o600);
            let pin = load(&PinSource::File(p)).unwrap();
            assert_eq!(pin.expose_secret(), want);
        }
        let p = write(dir.path(), "ro", "9", 0o400);
        assert_eq!(load(&PinSource::File(p)).unwrap().expose_secret(), "9");
    }

    #[test]
    fn open_files_are_refused_naming_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620, 0o660] {
            let p = write(dir.path(), "pin", "secret-pin", mode);
            let e = load(&PinSource::File(p.clone())).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, PinError::Permissions { .. }), "{msg}");
            assert!(msg.contains(&format!("chmod 600 {}", p.display())), "{msg}");
            assert!(!msg.contains("secret-pin"), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
    }

    #[test]
    fn missing_empty_and_directory() {
        let dir = tempfile::tempdir().unwrap();
        let e = load(&PinSource::File(dir.path().join("nope"))).unwrap_err();
        assert!(matches!(e, PinError::Unreadable { .. }), "{e}");
        let p = write(dir.path(), "empty", "\n", 0o600);
        assert!(matches!(
            load(&PinSource::File(p)).unwrap_err(),
            PinError::Empty(_)
        ));
        let e = load(&PinSource::Env("KEYWARD_TEST_SURELY_UNSET_VAR".into())).unwrap_err();
        assert!(
            e.to_string().contains("KEYWARD_TEST_SURELY_UNSET_VAR"),
            "{e}"
        );
    }
}
