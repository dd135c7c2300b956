//! The benchmark's world, made in a temporary directory: a SoftHSM2 token
//! (softhsm-config/init-token.sh), a Keyward store bootstrapped with keywardctl, keywardd on
//! its sockets, a service account whose key is the module's `KEYWARD_CREDENTIALS`, and
//! `p11-kit server` in front of the same token. Everything is stopped and removed on drop.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The backing token's label.
pub const TOKEN_LABEL: &str = "keyward-backing";
/// The label of the direct configuration's own token (SoftHSM2 direct and p11-kit).
pub const DIRECT_LABEL: &str = "bench-direct";
/// The organisation admin (this uid is mapped to it).
pub const ADMIN: &str = "user:admin@bench.test";
/// The key ring every Keyward key of the bench lives in (its token label is `bench`).
pub const RING: &str = "projects/bench/keyRings/bench";
/// The ring's token label as the module shows it.
pub const RING_LABEL: &str = "bench";
/// Audit records per second (and burst) the bench's uid may add: above any rate it reaches.
const AUDIT_RATE: u32 = 10_000_000;

/// Where the built binaries and the repository are.
#[derive(Debug, Clone)]
pub struct Paths {
    /// keywardd, keywardctl, libkeyward_pkcs11.so.
    pub bins: PathBuf,
    /// The repository (for softhsm-config/init-token.sh).
    pub repo: PathBuf,
}

impl Paths {
    /// keywardctl.
    pub fn keywardctl(&self) -> PathBuf {
        self.bins.join("keywardctl")
    }
    /// keywardd.
    pub fn keywardd(&self) -> PathBuf {
        self.bins.join("keywardd")
    }
    /// The module.
    pub fn module(&self) -> PathBuf {
        self.bins.join("libkeyward_pkcs11.so")
    }
    /// Checks that the binaries exist, with a message saying how to build them.
    pub fn check(&self) -> Result<(), String> {
        for p in [self.keywardctl(), self.keywardd(), self.module()] {
            if !p.exists() {
                return Err(format!(
                    "{} not found: build it first (cargo build --release -p keyward -p \
                     keyward-pkcs11), or pass --bin-dir",
                    p.display()
                ));
            }
        }
        Ok(())
    }
}

/// The temporary world.
pub struct Env {
    dir: tempfile::TempDir,
    paths: Paths,
    /// SOFTHSM2_CONF of the token.
    pub softhsm_conf: PathBuf,
    /// The token's user PIN.
    pub user_pin: String,
    /// keywardd's client socket.
    pub client_socket: PathBuf,
    admin_socket: PathBuf,
    /// The service account's credentials file (0600).
    pub credentials: PathBuf,
    daemon: Option<Child>,
    p11kit: Option<Child>,
}

fn my_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0)
}

impl Env {
    /// Makes the token and the store and starts keywardd (with room for `max_connections`
    /// connections and module instances, all of this one uid's: the bench is the only tenant).
    pub fn new(paths: &Paths, max_connections: usize) -> Result<Env, String> {
        paths.check()?;
        let dir = tempfile::Builder::new()
            .prefix("keyward-bench-")
            .tempdir()
            .map_err(|e| format!("cannot make a temporary directory: {e}"))?;
        let token_dir = dir.path().join("softhsm");
        let user_pin = init_token(paths, &token_dir, TOKEN_LABEL)?;
        let mut env = Env {
            softhsm_conf: token_dir.join("softhsm2.conf"),
            user_pin,
            client_socket: dir.path().join("client.sock"),
            admin_socket: dir.path().join("admin.sock"),
            credentials: dir.path().join("runner.key"),
            paths: paths.clone(),
            daemon: None,
            p11kit: None,
            dir,
        };
        env.offline(&["init", "--org", "bench", "--admin", ADMIN])?;
        env.offline(&[
            "--as",
            ADMIN,
            "iam",
            "map-uid",
            &my_uid().to_string(),
            ADMIN,
        ])?;
        env.start_daemon(&token_dir, max_connections)?;
        env.ctl(&[
            "project",
            "create",
            "--parent",
            "organizations/bench",
            "bench",
        ])?;
        env.ctl(&["keyring", "create", "--parent", "projects/bench", "bench"])?;
        env.ctl(&["sa", "create", "--project", "bench", "runner"])?;
        for role in ["roles/kms.admin", "roles/kms.cryptoOperator"] {
            env.ctl(&[
                "iam",
                "bind",
                "--resource",
                RING,
                "--role",
                role,
                "--member",
                "serviceAccount:runner@bench",
            ])?;
        }
        let json = env.ctl(&["--json", "sa", "key", "create", "runner@bench"])?;
        let key = json
            .split("\"key\":\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .ok_or("keywardctl sa key create printed no key")?
            .to_owned();
        std::fs::write(&env.credentials, format!("{key}\n"))
            .and_then(|()| {
                std::fs::set_permissions(&env.credentials, std::fs::Permissions::from_mode(0o600))
            })
            .map_err(|e| format!("cannot write the credentials: {e}"))?;
        env.ctl(&[
            "key",
            "create",
            "--keyring",
            RING,
            "--purpose",
            "MAC",
            "--algorithm",
            "HMAC_SHA256",
            "hmac",
        ])?;
        Ok(env)
    }

    /// A second SoftHSM2 token of its own, in its own directory with its own SOFTHSM2_CONF
    /// (keywardd never opens it): the direct and p11-kit configurations run on it, so their
    /// figures are SoftHSM2's own, not those of a store shared with keywardd (issue 19).
    /// Returns its SOFTHSM2_CONF and user PIN.
    pub fn own_token(&self) -> Result<(PathBuf, String), String> {
        let token_dir = self.dir().join("softhsm-direct");
        let pin = init_token(&self.paths, &token_dir, DIRECT_LABEL)?;
        Ok((token_dir.join("softhsm2.conf"), pin))
    }

    /// Stops (SIGSTOP) or continues (SIGCONT) keywardd, so that nothing of it runs while
    /// another configuration is measured.
    pub fn pause_daemon(&self, pause: bool) -> Result<(), String> {
        let Some(pid) = self.daemon_pid().and_then(|p| i32::try_from(p).ok()) else {
            return Ok(());
        };
        let pid = rustix::process::Pid::from_raw(pid).ok_or("keywardd has no pid")?;
        let sig = if pause {
            rustix::process::Signal::STOP
        } else {
            rustix::process::Signal::CONT
        };
        rustix::process::kill_process(pid, sig).map_err(|e| format!("cannot signal keywardd: {e}"))
    }

    /// The temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn run(&self, mut cmd: Command, what: &str) -> Result<String, String> {
        for (k, _) in std::env::vars() {
            if k.starts_with("KEYWARD_") {
                cmd.env_remove(k);
            }
        }
        let out = cmd
            .env("SOFTHSM2_CONF", &self.softhsm_conf)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {what}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{what} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn offline(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new(self.paths.keywardctl());
        cmd.arg("--db")
            .arg(self.dir().join("keyward.db"))
            .args(args);
        self.run(cmd, &format!("keywardctl {}", args.join(" ")))
    }

    /// keywardctl over the admin socket, as this uid (the admin).
    pub fn ctl(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new(self.paths.keywardctl());
        cmd.args(args);
        cmd.env("KEYWARD_ADMIN_SOCKET", &self.admin_socket);
        self.run(cmd, &format!("keywardctl {}", args.join(" ")))
    }

    /// Starts keywardd, its config with the per-uid audit rate of design §9 raised to
    /// `AUDIT_RATE`: the bench is one trusted service doing tens of thousands of operations a
    /// second, more than the default 10,000 records/s per uid (a uid over its rate is refused
    /// with CKR_DEVICE_MEMORY); a deployment running such a service raises it the same way.
    fn start_daemon(&mut self, token_dir: &Path, max_connections: usize) -> Result<(), String> {
        let config = self.dir().join("keyward.toml");
        let text = format!(
            "[store]\npath = \"{}\"\n\n[token]\nlabel = \"{TOKEN_LABEL}\"\npin_file = \"{}\"\n\n\
             [admin]\nsocket = \"{}\"\n\n[client]\nsocket = \"{}\"\n\n[daemon]\n\
             max_connections = {max_connections}\nmax_connections_per_uid = {max_connections}\n\
             max_instances = {max_connections}\nmax_instances_per_uid = {max_connections}\n\
             audit_records_per_uid_per_second = {AUDIT_RATE}\naudit_burst_per_uid = {AUDIT_RATE}\n",
            self.dir().join("keyward.db").display(),
            token_dir.join("user-pin").display(),
            self.admin_socket.display(),
            self.client_socket.display(),
        );
        std::fs::write(&config, text).map_err(|e| format!("cannot write the config: {e}"))?;
        let log = std::fs::File::create(self.dir().join("keywardd.log"))
            .map_err(|e| format!("cannot create the log: {e}"))?;
        let mut cmd = Command::new(self.paths.keywardd());
        for (k, _) in std::env::vars() {
            if k.starts_with("KEYWARD_") {
                cmd.env_remove(k);
            }
        }
        // The spin budget (crates/wire spin.rs) is passed on, so that a run can compare
        // keywardd with and without spinning (its CPU per operation shows the cost);
        // KEYWARD_DAEMON_SPIN_US sets keywardd's alone (the module keeps KEYWARD_SPIN_US).
        if let Ok(spin) = std::env::var("KEYWARD_SPIN_US") {
            cmd.env("KEYWARD_SPIN_US", spin);
        }
        if let Ok(spin) = std::env::var("KEYWARD_DAEMON_SPIN_US") {
            cmd.env("KEYWARD_SPIN_US", spin);
        }
        let child = cmd
            .arg("--config")
            .arg(&config)
            .env("SOFTHSM2_CONF", &self.softhsm_conf)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start keywardd: {e}"))?;
        self.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(Ok(Some(status))) = self.daemon.as_mut().map(Child::try_wait) {
                return Err(format!(
                    "keywardd exited at start with {status}: {}",
                    self.daemon_log()
                ));
            }
            if UnixStream::connect(&self.admin_socket).is_ok()
                && UnixStream::connect(&self.client_socket).is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("keywardd did not come up: {}", self.daemon_log()));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// keywardd's pid.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }

    /// keywardd's log so far.
    pub fn daemon_log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir().join("keywardd.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Starts `p11-kit server` in front of the token with SoftHSM2 as provider; returns the
    /// value for `P11_KIT_SERVER_ADDRESS`.
    pub fn start_p11kit(
        &mut self,
        softhsm: &Path,
        conf: &Path,
        label: &str,
    ) -> Result<String, String> {
        let sock = self.dir().join("p11kit.sock");
        let child = Command::new("p11-kit")
            .arg("server")
            .arg("-f")
            .arg("-n")
            .arg(&sock)
            .arg("--provider")
            .arg(softhsm)
            .arg(format!("pkcs11:token={label}"))
            .env("SOFTHSM2_CONF", conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start p11-kit server (is p11-kit installed?): {e}"))?;
        self.p11kit = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&sock).is_err() {
            if let Some(Ok(Some(status))) = self.p11kit.as_mut().map(Child::try_wait) {
                return Err(format!("p11-kit server exited at start with {status}"));
            }
            if Instant::now() > deadline {
                return Err("p11-kit server did not come up".into());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Ok(format!("unix:path={}", sock.display()))
    }

    /// p11-kit server's pid while it runs.
    pub fn p11kit_pid(&self) -> Option<u32> {
        self.p11kit.as_ref().map(Child::id)
    }

    /// Stops p11-kit server.
    pub fn stop_p11kit(&mut self) {
        if let Some(mut c) = self.p11kit.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop_p11kit();
        let _ = self.pause_daemon(false);
        if let Some(mut c) = self.daemon.take() {
            // SIGTERM first (a clean stop signs the audit head), then SIGKILL.
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Makes a SoftHSM2 token labelled `label` in `token_dir` (softhsm-config/init-token.sh);
/// returns its user PIN.
fn init_token(paths: &Paths, token_dir: &Path, label: &str) -> Result<String, String> {
    let script = paths.repo.join("softhsm-config/init-token.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(token_dir)
        .arg(label)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "init-token.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::read_to_string(token_dir.join("user-pin"))
        .map_err(|e| format!("cannot read the user PIN: {e}"))
}

/// CPU time (user + system) process `pid` has used so far, from /proc/<pid>/stat (all its
/// threads, in clock ticks of 10 ms on Linux; the bench divides a cell's difference by
/// thousands of operations).
pub fn proc_cpu(pid: u32) -> Option<Duration> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = stat_fields(&s)?.cpu_ticks;
    let hz = rustix::param::clock_ticks_per_second().max(1);
    Some(Duration::from_nanos(
        ticks.saturating_mul(1_000_000_000) / hz,
    ))
}

/// CPU time (user + system) of process `pid` and of its children and grandchildren now
/// running (p11-kit server serves each client in a child process of its own).
pub fn tree_cpu(pid: u32) -> Option<Duration> {
    let mut total = proc_cpu(pid)?;
    let mut parents = vec![pid];
    for _ in 0..2 {
        let children = children_of(&parents);
        for &c in &children {
            total += proc_cpu(c).unwrap_or_default();
        }
        parents = children;
    }
    Some(total)
}

/// The pids whose parent is one of `parents` (from /proc/<pid>/stat).
fn children_of(parents: &[u32]) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| stat_fields(&s).map(|f| f.ppid))
                .is_some_and(|ppid| parents.contains(&ppid))
        })
        .collect()
}

/// What the bench reads of a /proc/<pid>/stat line.
#[derive(Debug, PartialEq, Eq)]
struct StatFields {
    ppid: u32,
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
}

/// Parses a /proc/<pid>/stat line: the command name (field 2) may hold spaces and
/// parentheses, so the fields are counted from after its last ')'.
fn stat_fields(line: &str) -> Option<StatFields> {
    let rest = &line[line.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, ppid 4, utime 14 and stime 15.
    Some(StatFields {
        ppid: f.get(1)?.parse().ok()?,
        cpu_ticks: f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?,
    })
}

/// CPU time (user + system) this process has used so far, all threads
/// (CLOCK_PROCESS_CPUTIME_ID, the same account as getrusage(RUSAGE_SELF), in ns).
pub fn self_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// (VmRSS in KiB, threads) of process `pid`, from /proc.
pub fn proc_stats(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("Threads:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_line_with_spaces_and_parentheses_in_the_name() {
        let line = "4242 (p11 (kit) x) S 17 4242 4242 0 -1 4194560 100 0 0 0 \
                    731 229 0 0 20 0 3 0 12345 0 0\n";
        assert_eq!(
            stat_fields(line),
            Some(StatFields {
                ppid: 17,
                cpu_ticks: 960
            })
        );
        assert_eq!(stat_fields("4242 (cut) S 17 4242"), None);
        assert_eq!(stat_fields("no name at all"), None);
    }

    #[test]
    fn own_cpu_time_grows_with_work_and_the_tree_includes_the_process() {
        let me = std::process::id();
        let before = self_cpu();
        let mut x = 0u64;
        let until = std::time::Instant::now() + Duration::from_millis(30);
        while std::time::Instant::now() < until {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(self_cpu() > before, "CLOCK_PROCESS_CPUTIME_ID did not move");
        let own = proc_cpu(me).expect("our own /proc/<pid>/stat");
        let tree = tree_cpu(me).expect("our own tree");
        assert!(tree >= own, "{tree:?} < {own:?}");
        assert_eq!(proc_cpu(u32::MAX), None);
    }
}
