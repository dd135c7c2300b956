//! Shared fixture of the token tests: one private SoftHSM2 token store per test binary.
//!
//! `SOFTHSM2_CONF` is process-wide and SoftHSM2 reads it once, at `C_Initialize`, so each test
//! binary (one process) makes one store under `CARGO_TARGET_TMPDIR/token-tests/NAME` (wiped at
//! the start of each run, left behind for inspection after it) inside a `OnceLock`, sets
//! `SOFTHSM2_CONF` there before any token call, and every test of the binary shares the
//! opened [`Token`], telling its objects apart by their own random `CKA_ID`s and labels.
//! The store holds two tokens: `kw-main` (opened here) and `kw-pin` (left for login tests).
#![allow(dead_code)]

use keyward_token::Token;
use secrecy::SecretString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Label of the token every test uses.
pub const MAIN_LABEL: &str = "kw-main";
/// Label of a second token that no fixture logs in to.
pub const PIN_LABEL: &str = "kw-pin";

/// The shared store and the open main token.
pub struct Fixture {
    /// The store directory (softhsm2.conf, tokens/, so-pin, user-pin).
    pub dir: PathBuf,
    /// `kw-main`, logged in.
    pub token: Token,
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

/// The PKCS#11 module: `TEST_PKCS11_MODULE` or Debian's SoftHSM2 path.
pub fn module_path() -> PathBuf {
    let path = std::env::var_os("TEST_PKCS11_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"));
    assert!(
        path.exists(),
        "PKCS#11 module {} not found: install SoftHSM2 (apt-get install softhsm2) or set TEST_PKCS11_MODULE",
        path.display()
    );
    path
}

/// The user PIN of the store's tokens.
pub fn user_pin(dir: &Path) -> SecretString {
    let pin = std::fs::read_to_string(dir.join("user-pin")).expect("read user-pin");
    assert!(
        !pin.ends_with('\n'),
        "init-token.sh writes PINs without a newline"
    );
    SecretString::from(pin)
}

/// The fixture of this test binary, made on first use; `name` names its directory.
pub fn fixture(name: &str) -> &'static Fixture {
    FIXTURE.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("token-tests")
            .join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).expect("remove the previous run's token store");
        }
        for label in [MAIN_LABEL, PIN_LABEL] {
            let out = init_token(&dir, label);
            assert!(
                out.status.success(),
                "init-token.sh {} {label} failed: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            let conf = dir.join("softhsm2.conf");
            assert_eq!(
                stdout.trim_end(),
                format!("export SOFTHSM2_CONF={}", conf.display())
            );
        }
        // Before any C_Initialize in this process, while other test threads wait on the
        // OnceLock: nothing reads the environment concurrently.
        std::env::set_var("SOFTHSM2_CONF", dir.join("softhsm2.conf"));
        let token = Token::open(&module_path(), MAIN_LABEL, user_pin(&dir))
            .unwrap_or_else(|e| panic!("open {MAIN_LABEL}: {e}"));
        Fixture { dir, token }
    })
}

/// Runs softhsm-config/init-token.sh DIR LABEL.
pub fn init_token(dir: &Path, label: &str) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../softhsm-config/init-token.sh");
    assert!(script.exists(), "{} not found", script.display());
    Command::new("bash")
        .arg(&script)
        .arg(dir)
        .arg(label)
        .output()
        .expect("run init-token.sh (is bash installed?)")
}

/// Runs openssl with `args`; returns its output whatever the status.
pub fn openssl(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl: install the openssl CLI")
}

/// Runs openssl and panics with its stderr unless it succeeds; returns stdout.
pub fn openssl_ok(args: &[&str]) -> String {
    let out = openssl(args);
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes `bytes` to a fresh file under the fixture dir and returns its path as a string.
pub fn write_file(fx: &Fixture, name: &str, bytes: &[u8]) -> String {
    let dir = fx.dir.join("files");
    std::fs::create_dir_all(&dir).expect("create files dir");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write test file");
    path.to_string_lossy().into_owned()
}

/// A fresh random `CKA_ID` from the token.
pub fn new_id(fx: &Fixture) -> Vec<u8> {
    let id = fx.token.new_object_id().expect("new_object_id");
    assert_eq!(id.len(), keyward_token::OBJECT_ID_LEN);
    id
}

/// Hex of an id, for file names and labels.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
