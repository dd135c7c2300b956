//! A private NSS softokn token for one test: ci/nss-token.sh makes an NSS database in a
//! temporary directory (its password the user PIN) and writes the `C_Initialize` parameters
//! that open it as a token labelled [`super::daemon::LABEL`] (`[token] init_args`). No helper
//! process runs.

use super::backing::BackingToken;
use std::path::{Path, PathBuf};
use std::process::Command;

/// NSS softokn's module on Debian (package libnss3).
pub const NSS_MODULE: &str = "/usr/lib/x86_64-linux-gnu/libsoftokn3.so";

/// An NSS softokn token labelled [`super::daemon::LABEL`] whose database lives in `dir`.
pub fn token(dir: &Path) -> BackingToken {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("ci/nss-token.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(dir)
        .arg(super::daemon::LABEL)
        .output()
        .expect("cannot run ci/nss-token.sh");
    assert!(
        out.status.success(),
        "ci/nss-token.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let init_args =
        std::fs::read_to_string(dir.join("init-args")).expect("nss-token.sh wrote no init-args");
    BackingToken {
        name: "nss",
        module: PathBuf::from(NSS_MODULE),
        label: super::daemon::LABEL.to_owned(),
        pin_file: dir.join("user-pin"),
        so_pin_file: None,
        env: Vec::new(),
        init_args: Some(init_args),
        processes: Vec::new(),
    }
}
