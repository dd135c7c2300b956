//! The backing token a test's keywardd runs on: SoftHSM2 by default, or another PKCS#11
//! token (tpm2-pkcs11 over swtpm in [`super::tpm2`]; NSS softokn) described by the same few
//! facts: the module, the token label, the PIN files, the environment the module needs and
//! the `C_Initialize` parameters (`[token] init_args`). A token that runs helper processes
//! keeps them in `processes`: they are stopped, by PID, when the `BackingToken` is dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

/// SoftHSM2's module on Debian.
pub const SOFTHSM2_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// One backing token, ready for keywardd.
pub struct BackingToken {
    /// Short name ("softhsm2", "tpm2", "nss"): the README's "Backing tokens" column.
    pub name: &'static str,
    /// The PKCS#11 module (`[token] module`).
    pub module: PathBuf,
    /// The token label (`[token] label`).
    pub label: String,
    /// The user PIN, in a 0600 file without a newline (`[token] pin_file`).
    pub pin_file: PathBuf,
    /// The SO PIN, in a 0600 file, where the token has one.
    pub so_pin_file: Option<PathBuf>,
    /// Environment the module needs in every process that loads it (keywardd, and a test
    /// that opens the token itself).
    pub env: Vec<(String, String)>,
    /// `C_Initialize` parameters (`pReserved`, `[token] init_args`), if the module needs any.
    pub init_args: Option<String>,
    /// Helper processes this token runs (stopped by PID on drop).
    pub processes: Vec<u32>,
}

impl BackingToken {
    /// A private SoftHSM2 token in `dir` (softhsm-config/init-token.sh).
    pub fn softhsm2(dir: &Path) -> BackingToken {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("softhsm-config/init-token.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg(dir)
            .output()
            .expect("cannot run init-token.sh");
        assert!(
            out.status.success(),
            "init-token.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        BackingToken {
            name: "softhsm2",
            module: PathBuf::from(SOFTHSM2_MODULE),
            label: super::daemon::LABEL.to_owned(),
            pin_file: dir.join("user-pin"),
            so_pin_file: Some(dir.join("so-pin")),
            env: vec![(
                "SOFTHSM2_CONF".to_owned(),
                dir.join("softhsm2.conf").display().to_string(),
            )],
            init_args: None,
            processes: Vec::new(),
        }
    }

    /// The value of environment variable `key` this token sets, if any.
    pub fn env_var(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sets this token's environment on `cmd`.
    pub fn apply_env(&self, cmd: &mut Command) {
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
    }

    /// The `[token]` section keywardd's configuration needs, with `pin_line`
    /// (`pin_file = ...` or `pin_env = ...`) and `label`.
    /// SoftHSM2's module is keywardd's default and is left out.
    pub fn config_section(&self, pin_line: &str, label: &str) -> String {
        let mut s = format!("[token]\nlabel = \"{label}\"\n{pin_line}\n");
        if self.module != Path::new(SOFTHSM2_MODULE) {
            s.push_str(&format!("module = \"{}\"\n", self.module.display()));
        }
        if let Some(args) = &self.init_args {
            s.push_str(&format!("init_args = \"{}\"\n", args.replace('"', "\\\"")));
        }
        s
    }
}

impl Drop for BackingToken {
    fn drop(&mut self) {
        // Last started first: the TPM's resource manager before its bus and the TPM itself.
        for pid in self.processes.iter().rev() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

/// The README's "Backing tokens" table: for each capability row, the cell of column `token`
/// ("SoftHSM2", "tpm2", "NSS"), as `Some(true)` (yes), `Some(false)` (no) or `None` (not
/// filled in).
pub fn readme_column(token: &str) -> Vec<(String, Option<bool>)> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let section = readme
        .split("\n### Backing tokens\n")
        .nth(1)
        .expect("README has a ### Backing tokens section");
    let rows: Vec<Vec<String>> = section
        .lines()
        .skip_while(|l| !l.starts_with("| capability |"))
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().trim_matches('`').to_owned())
                .collect()
        })
        .collect();
    let header = rows.first().expect("the Backing tokens table");
    let col = header
        .iter()
        .position(|h| h == token)
        .unwrap_or_else(|| panic!("no column {token} in {header:?}"));
    rows.iter()
        .skip(2)
        .map(|r| {
            let cell = match r.get(col).map(String::as_str) {
                Some("yes") => Some(true),
                Some("no") => Some(false),
                _ => None,
            };
            (r[0].clone(), cell)
        })
        .collect()
}

/// Asserts that `keywardctl --json token capabilities` output `json` (from a keywardd on the
/// token of README column `column`) and the README's table agree on every capability, and
/// that the table has a row for each.
#[track_caller]
pub fn assert_readme_matches(column: &str, json: &serde_json::Value) {
    let table = readme_column(column);
    let caps = json["capabilities"].as_array().expect("capabilities array");
    let mut wrong = Vec::new();
    for c in caps {
        let name = c["name"].as_str().expect("name");
        let available = c["available"].as_bool().expect("available");
        match table.iter().find(|(n, _)| n == name) {
            None => wrong.push(format!("{name}: no README row (token says {available})")),
            Some((_, cell)) if *cell != Some(available) => wrong.push(format!(
                "{name}: README says {cell:?}, the token {available} ({})",
                c["detail"]
            )),
            Some(_) => {}
        }
    }
    for (name, _) in &table {
        if !caps.iter().any(|c| c["name"] == name.as_str()) {
            wrong.push(format!("{name}: README row the token does not report"));
        }
    }
    assert!(
        wrong.is_empty(),
        "README \"Backing tokens\" column {column} disagrees with keywardctl --json token \
         capabilities:\n{}",
        wrong.join("\n")
    );
}
