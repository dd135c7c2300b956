//! Test helpers for keywardd: a private backing token (SoftHSM2 by default,
//! softhsm-config/init-token.sh; or any [`BackingToken`]), a store bootstrapped with
//! keywardctl, a configuration file, and the built keywardd on sockets in a temporary
//! directory, killed on drop.

use super::backing::BackingToken;
use super::{run_raw, Output, ADMIN};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The token label init-token.sh gives by default.
pub const LABEL: &str = "keyward-backing";

/// How long a keywardd may take to come up (SoftHSM2 + store open + reconcile).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A token, a store and a configuration in one temporary directory, and maybe a keywardd.
pub struct Env {
    /// The backing token (dropped, and its helper processes stopped, before `dir` goes).
    pub token: BackingToken,
    dir: tempfile::TempDir,
    /// The store.
    pub db: PathBuf,
    /// The configuration file.
    pub config: PathBuf,
    /// The admin socket.
    pub admin_socket: PathBuf,
    /// The client socket.
    pub client_socket: PathBuf,
    /// SOFTHSM2_CONF for this token (a path that does not exist on other tokens).
    pub softhsm_conf: PathBuf,
    /// The user PIN file init-token.sh wrote (0600).
    pub pin_file: PathBuf,
    daemon: Option<Child>,
    stderr: PathBuf,
}

impl Env {
    /// A token and a store whose organisation `acme` has [`ADMIN`] as admin, with this
    /// process's uid mapped to [`ADMIN`]; the configuration is written, keywardd not started.
    pub fn new() -> Env {
        Env::new_on(BackingToken::softhsm2)
    }

    /// [`Env::new`] on the backing token `make` sets up in the directory it is given.
    pub fn new_on(make: impl FnOnce(&Path) -> BackingToken) -> Env {
        let env = Env::bare_on(make);
        env.offline(&["init", "--org", "acme", "--admin", ADMIN])
            .ok();
        env.offline(&[
            "--as",
            ADMIN,
            "iam",
            "map-uid",
            &super::my_uid().to_string(),
            ADMIN,
        ])
        .ok();
        env
    }

    /// A token and a configuration; no store.
    pub fn bare() -> Env {
        Env::bare_on(BackingToken::softhsm2)
    }

    /// [`Env::bare`] on the backing token `make` sets up in the directory it is given.
    pub fn bare_on(make: impl FnOnce(&Path) -> BackingToken) -> Env {
        let dir = tempfile::tempdir().expect("cannot make a temporary directory");
        let token_dir = dir.path().join("token");
        let token = make(&token_dir);
        let env = Env {
            db: dir.path().join("keyward.db"),
            config: dir.path().join("keyward.toml"),
            admin_socket: dir.path().join("admin.sock"),
            client_socket: dir.path().join("client.sock"),
            softhsm_conf: token_dir.join("softhsm2.conf"),
            pin_file: token.pin_file.clone(),
            token,
            stderr: dir.path().join("keywardd.stderr"),
            dir,
            daemon: None,
        };
        env.write_config(&format!("pin_file = \"{}\"", env.pin_file.display()), LABEL);
        env
    }

    /// The temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes the configuration with `pin_line` (`pin_file = ...` or `pin_env = ...`) and
    /// the token label `label`.
    pub fn write_config(&self, pin_line: &str, label: &str) {
        let text = format!(
            "[store]\npath = \"{}\"\n\n{}\n[admin]\n\
             socket = \"{}\"\n\n[client]\nsocket = \"{}\"\n\n[daemon]\ndestroy_check_secs = \
             1\n",
            self.db.display(),
            self.token.config_section(pin_line, label),
            self.admin_socket.display(),
            self.client_socket.display(),
        );
        std::fs::write(&self.config, text).expect("cannot write the configuration");
    }

    /// TESTS ONLY clock: keywardd reads the time from a file (`[testing] clock_file`), set
    /// here to `unix_secs`; call again to move it.
    pub fn set_clock(&self, unix_secs: i64) {
        let clock = self.dir().join("clock");
        std::fs::write(&clock, format!("{unix_secs}\n")).expect("cannot write the clock");
        let text = std::fs::read_to_string(&self.config).expect("no configuration");
        if !text.contains("[testing]") {
            let text = format!("{text}\n[testing]\nclock_file = \"{}\"\n", clock.display());
            std::fs::write(&self.config, text).expect("cannot write the configuration");
        }
    }

    /// Runs `keywardctl --db <store> ARGS` (offline).
    pub fn offline(&self, args: &[&str]) -> Output {
        let db = self.db.to_str().expect("temporary path is not UTF-8");
        let mut all = vec!["--db", db];
        all.extend_from_slice(args);
        run_raw(&all, &[])
    }

    /// Binds `role` to `member` on `resource` through keywardd (as this process's uid).
    pub fn bind(&self, resource: &str, role: &str, member: &str) {
        self.ctl(&[
            "iam",
            "bind",
            "--resource",
            resource,
            "--role",
            role,
            "--member",
            member,
        ])
        .ok();
    }

    /// Creates project `payments` and its key ring `web` through keywardd; returns the ring.
    pub fn payments_ring(&self) -> &'static str {
        self.ctl(&[
            "project",
            "create",
            "--parent",
            "organizations/acme",
            "payments",
        ])
        .ok();
        self.web_ring()
    }

    /// Runs keywardctl ARGS over the admin socket, as this process's uid.
    pub fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_env(args, &[])
    }

    /// Runs keywardctl ARGS over the admin socket with extra environment.
    pub fn ctl_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let sock = self
            .admin_socket
            .to_str()
            .expect("temporary path is not UTF-8");
        let mut all = vec![("KEYWARD_ADMIN_SOCKET", sock)];
        all.extend_from_slice(env);
        run_raw(args, &all)
    }

    /// A 0600 credentials file holding the service-account key `key` (one file per key).
    pub fn credentials_file(&self, key: &str) -> PathBuf {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        let path = self.dir().join(format!("credentials-{:016x}", h.finish()));
        std::fs::write(&path, format!("{key}\n")).expect("cannot write credentials");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    /// Runs keywardctl ARGS over the admin socket as the service account whose key is `key`
    /// (written to a 0600 credentials file).
    pub fn ctl_with_key(&self, key: &str, args: &[&str]) -> Output {
        let path = self.credentials_file(key);
        self.ctl_env(args, &[("KEYWARD_CREDENTIALS", path.to_str().unwrap())])
    }

    /// [`Env::ctl_with_key`] with the client socket too (the crypto commands and `key cert
    /// create` sign through it).
    pub fn ctl_client_with_key(&self, key: &str, args: &[&str]) -> Output {
        let path = self.credentials_file(key);
        let client = self.client_socket.to_str().unwrap();
        self.ctl_env(
            args,
            &[
                ("KEYWARD_CREDENTIALS", path.to_str().unwrap()),
                ("KEYWARD_SOCKET", client),
            ],
        )
    }

    /// `openssl dgst -HASH -verify PEM -signature SIG DATA` (files in this directory): does
    /// `sig` (DER for ECDSA) verify over `data` with the public key `pem`?
    pub fn openssl_verify(&self, hash: &str, pem: &str, data: &[u8], sig: &[u8]) -> bool {
        let dir = self.dir();
        std::fs::write(dir.join("pub.pem"), pem).unwrap();
        std::fs::write(dir.join("data"), data).unwrap();
        std::fs::write(dir.join("sig"), sig).unwrap();
        Command::new("openssl")
            .args(["dgst", &format!("-{hash}"), "-verify"])
            .arg(dir.join("pub.pem"))
            .arg("-signature")
            .arg(dir.join("sig"))
            .arg(dir.join("data"))
            .output()
            .expect("run openssl")
            .status
            .success()
    }

    /// Creates key ring `web` in project `payments` through keywardd; returns its name.
    pub fn web_ring(&self) -> &'static str {
        self.ctl(&["keyring", "create", "--parent", "projects/payments", "web"])
            .ok();
        "projects/payments/keyRings/web"
    }

    /// Creates key `id` in `ring` through keywardd (`key create`), which must succeed.
    pub fn create_key(&self, ring: &str, id: &str, purpose: &str, algorithm: &str) {
        self.ctl(&[
            "key",
            "create",
            "--keyring",
            ring,
            "--purpose",
            purpose,
            "--algorithm",
            algorithm,
            id,
        ])
        .ok();
    }

    /// [`Env::create_key`] for each `(id, purpose, algorithm)`.
    pub fn create_keys(&self, ring: &str, keys: &[(&str, &str, &str)]) {
        for (id, purpose, algorithm) in keys {
            self.create_key(ring, id, purpose, algorithm);
        }
    }

    /// Runs keywardd on this configuration to its end (for refusals to start).
    pub fn run_daemon_to_end(&self) -> Output {
        let out = self
            .daemon_command()
            .stdin(Stdio::null())
            .output()
            .expect("cannot run keywardd");
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn daemon_command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keywardd"));
        cmd.arg("--config").arg(&self.config);
        for (k, _) in std::env::vars() {
            if k.starts_with("KEYWARD_") {
                cmd.env_remove(k);
            }
        }
        self.token.apply_env(&mut cmd);
        cmd
    }

    /// Starts keywardd and waits until its admin socket answers.
    pub fn start(&mut self) {
        assert!(self.daemon.is_none(), "keywardd already started");
        let log = std::fs::File::create(&self.stderr).expect("cannot create the log file");
        let child = self
            .daemon_command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start keywardd");
        self.daemon = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.daemon.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "keywardd exited at start with {status}: {}",
                    self.daemon_log()
                );
            }
            if UnixStream::connect(&self.admin_socket).is_ok()
                && UnixStream::connect(&self.client_socket).is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "keywardd did not come up: {}",
                self.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// keywardd's pid.
    pub fn pid(&self) -> u32 {
        self.daemon.as_ref().expect("keywardd not started").id()
    }

    /// True while keywardd runs.
    pub fn running(&mut self) -> bool {
        match &mut self.daemon {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// Sends `signal` (e.g. "TERM") to keywardd and waits for it to exit.
    pub fn signal_and_wait(&mut self, signal: &str) -> ExitStatus {
        let pid = self.pid().to_string();
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("cannot run kill");
        assert!(ok.success(), "kill -{signal} {pid} failed");
        let mut child = self.daemon.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "keywardd did not exit after SIG{signal}: {}",
                    self.daemon_log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What keywardd wrote on stderr so far.
    pub fn daemon_log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.stderr) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Makes service account `id@payments` (project `payments` is created if needed) and a
    /// key for it, offline as [`ADMIN`]; returns the key.
    pub fn service_account_offline(&self, id: &str) -> String {
        let _ = self.offline(&[
            "--as",
            ADMIN,
            "project",
            "create",
            "--parent",
            "organizations/acme",
            "payments",
        ]);
        self.offline(&["--as", ADMIN, "sa", "create", "--project", "payments", id])
            .ok();
        let out = self.offline(&[
            "--as",
            ADMIN,
            "sa",
            "key",
            "create",
            &format!("{id}@payments"),
        ]);
        out.ok();
        out.stdout
            .lines()
            .find(|l| l.starts_with("kw"))
            .unwrap_or_else(|| panic!("no key printed: {out:#?}"))
            .to_string()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Asserts `out` is keywardd refusing to start with `code`, in exactly one stderr line that
/// contains every one of `needles`.
#[track_caller]
pub fn assert_refused(out: &Output, code: i32, needles: &[&str]) {
    assert_eq!(out.code, code, "exit code: {out:#?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {out:#?}");
    assert!(lines[0].starts_with("keywardd: "), "{out:#?}");
    for n in needles {
        assert!(lines[0].contains(n), "{n:?} missing: {out:#?}");
    }
}
