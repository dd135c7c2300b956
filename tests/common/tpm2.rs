//! A private tpm2-pkcs11 token over swtpm (a software TPM 2.0) for one test: ci/tpm2-token.sh
//! starts swtpm, a private session D-Bus and tpm2-abrmd in a temporary directory and adds a
//! token with random PINs; the three processes are stopped by PID when the
//! [`super::backing::BackingToken`] is dropped. About 1.5 s on an idle machine.

use super::backing::BackingToken;
use std::path::{Path, PathBuf};
use std::process::Command;

/// tpm2-pkcs11's module on Debian.
pub const TPM2_MODULE: &str = "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so";

/// A tpm2-pkcs11 token labelled [`super::daemon::LABEL`] whose state lives in `dir`.
pub fn token(dir: &Path) -> BackingToken {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("ci/tpm2-token.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(dir)
        .arg(super::daemon::LABEL)
        .output()
        .expect("cannot run ci/tpm2-token.sh");
    // Collect the PIDs first: a failed setup must not leave processes behind.
    let processes: Vec<u32> = ["swtpm.pid", "dbus.pid", "abrmd.pid"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let mut token = BackingToken {
        name: "tpm2",
        module: PathBuf::from(TPM2_MODULE),
        label: super::daemon::LABEL.to_owned(),
        pin_file: dir.join("user-pin"),
        so_pin_file: Some(dir.join("so-pin")),
        env: Vec::new(),
        init_args: None,
        processes,
    };
    assert!(
        out.status.success(),
        "ci/tpm2-token.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let env = std::fs::read_to_string(dir.join("env")).expect("tpm2-token.sh wrote no env");
    token.env = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    token
}
