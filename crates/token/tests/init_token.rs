//! softhsm-config/init-token.sh: what it writes (conf, 0600 PIN files without a newline),
//! what it prints (the export line, never a PIN), what it refuses.

mod common;

use common::init_token;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

fn fresh_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("init-token-tests")
        .join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    dir
}

#[test]
fn writes_conf_and_pins_and_prints_only_the_export_line() {
    let dir = fresh_dir("basic");
    let out = init_token(&dir, "kw-script");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conf = dir.join("softhsm2.conf");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("export SOFTHSM2_CONF={}\n", conf.display())
    );

    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(
        text.contains(&format!(
            "directories.tokendir = {}\n",
            dir.join("tokens").display()
        )),
        "{text}"
    );
    assert!(!text.contains("@TOKENDIR@"));

    let everything_printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for pin_file in ["so-pin", "user-pin"] {
        let path = dir.join(pin_file);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{pin_file} mode");
        let pin = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            pin.len(),
            32,
            "{pin_file}: 32 hex characters, no trailing newline"
        );
        assert!(pin.chars().all(|c| c.is_ascii_hexdigit()), "{pin_file}");
        assert!(!everything_printed.contains(&pin), "{pin_file} was printed");
    }
    assert_ne!(
        std::fs::read(dir.join("so-pin")).unwrap(),
        std::fs::read(dir.join("user-pin")).unwrap()
    );

    // softhsm2-util sees the token in this store only.
    let slots = Command::new("softhsm2-util")
        .arg("--show-slots")
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&slots.stdout).contains("kw-script"));

    // A second label shares the PINs; the same label again is refused.
    let user_pin = std::fs::read(dir.join("user-pin")).unwrap();
    let out = init_token(&dir, "kw-second");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(dir.join("user-pin")).unwrap(), user_pin);
    let out = init_token(&dir, "kw-script");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn refuses_bad_arguments_and_a_missing_softhsm2_util() {
    let dir = fresh_dir("refusals");
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../softhsm-config/init-token.sh");
    let out = Command::new("/bin/bash").arg(&script).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: init-token.sh DIR [LABEL]"));

    let out = init_token(&dir, "a-label-that-is-longer-than-32-bytes");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("longer than 32 bytes"));

    let out = Command::new("/bin/bash")
        .arg(&script)
        .arg(&dir)
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("softhsm2-util not found") && err.contains("apt-get install softhsm2"),
        "{err}"
    );
    assert!(!dir.exists(), "nothing is written before the checks pass");
}
