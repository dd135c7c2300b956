//! Test helpers: run the built keywardctl against a private temporary store.
#![allow(dead_code)] // each test crate uses a different part of this module

use std::path::{Path, PathBuf};
use std::process::Command;

/// The first organisation's admin in tests.
pub const ADMIN: &str = "user:alice@example.com";

/// What one keywardctl run gave.
#[derive(Debug)]
pub struct Output {
    /// The exit code (-1 if killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Output {
    /// Panics with the whole output unless the run exited with `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Output {
        assert_eq!(self.code, code, "expected exit code {code}, got {self:#?}");
        self
    }

    /// Panics unless the run succeeded.
    #[track_caller]
    pub fn ok(&self) -> &Output {
        self.expect_code(0)
    }

    /// Panics unless the request failed (exit 1).
    #[track_caller]
    pub fn failed(&self) -> &Output {
        self.expect_code(1)
    }

    /// Panics unless keywardctl refused the command line (exit 2).
    #[track_caller]
    pub fn usage_error(&self) -> &Output {
        self.expect_code(2)
    }

    /// stdout parsed as one JSON document.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self:#?}"))
    }

    /// stdout parsed as JSON lines.
    #[track_caller]
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("line {l:?} is not JSON ({e}): {self:#?}"))
            })
            .collect()
    }
}

/// Runs keywardctl with exactly `args` and `env`, in a clean environment (no KEYWARD_*).
pub fn run_raw(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keywardctl"));
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("KEYWARD_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("cannot run keywardctl");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A private store in a temporary directory (removed on drop).
pub struct Ctl {
    dir: tempfile::TempDir,
    db: PathBuf,
}

impl Ctl {
    /// A new, not yet initialised, store path.
    pub fn new() -> Ctl {
        let dir = tempfile::tempdir().expect("cannot make a temporary directory");
        let db = dir.path().join("keyward.db");
        Ctl { dir, db }
    }

    /// A store initialised with organisation `acme` and [`ADMIN`] as its admin.
    pub fn initialised() -> Ctl {
        let ctl = Ctl::new();
        ctl.run(&["init", "--org", "acme", "--admin", ADMIN]).ok();
        ctl
    }

    /// [`Ctl::initialised`] with project `payments` in `acme`.
    pub fn with_payments() -> Ctl {
        let ctl = Ctl::initialised();
        ctl.create_payments();
        ctl
    }

    /// Creates project `payments` in organisation `acme` (as [`ADMIN`]).
    pub fn create_payments(&self) {
        self.admin(&[
            "project",
            "create",
            "--parent",
            "organizations/acme",
            "payments",
        ])
        .ok();
    }

    /// The store's path.
    pub fn db(&self) -> &Path {
        &self.db
    }

    /// The temporary directory holding the store.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `keywardctl --db <store> ARGS` as this process's own unix uid.
    pub fn run(&self, args: &[&str]) -> Output {
        let db = self.db.to_str().expect("temporary path is not UTF-8");
        let mut all = vec!["--db", db];
        all.extend_from_slice(args);
        run_raw(&all, &[])
    }

    /// Runs `keywardctl --db <store> --as MEMBER ARGS`.
    pub fn run_as(&self, member: &str, args: &[&str]) -> Output {
        let mut all = vec!["--as", member];
        all.extend_from_slice(args);
        self.run(&all)
    }

    /// Runs ARGS as [`ADMIN`].
    pub fn admin(&self, args: &[&str]) -> Output {
        self.run_as(ADMIN, args)
    }
}

/// This process's real uid (what keywardctl takes as the default caller).
pub fn my_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("no /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("no Uid: line")
}
pub mod backing;
pub mod byok;
pub mod daemon;
pub mod golden;
pub mod module;
pub mod nss;
pub mod pkcs11;
pub mod tpm2;

/// `openssl ARGS` run in `dir`, which must succeed; its stdout.
#[track_caller]
pub fn openssl_ok(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A self-signed EC P-256 CA `/CN=CN` made by openssl in `dir`: `NAME.pem` and `NAME.key`.
#[track_caller]
pub fn openssl_ca(dir: &Path, cn: &str, name: &str) {
    openssl_ok(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            "-days",
            "30",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

/// A certificate `/CN=CN` for the public key in the PEM file `public` issued by the CA
/// `CA.pem`/`CA.key` (files in `dir`), written to `out` (PEM, or DER if `out` ends `.der`).
#[track_caller]
pub fn openssl_issue(dir: &Path, public: &str, cn: &str, ca: &str, out: &str) {
    let form = if out.ends_with(".der") { "DER" } else { "PEM" };
    openssl_ok(
        dir,
        &[
            "x509",
            "-new",
            "-subj",
            &format!("/CN={cn}"),
            "-days",
            "30",
            "-force_pubkey",
            public,
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-outform",
            form,
            "-out",
            out,
        ],
    );
}
