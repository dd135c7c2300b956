//! A token that cannot store the signed audit head (design §6 cadence; issue 15 item 4): the
//! token directory made immutable (`chattr +i`: root ignores modes, not that). keywardd keeps
//! serving and retrying, logs the failure once (not once a second), `keywardctl status` and
//! `audit verify` say "token head stale since T, N records covered by the chain only"; after
//! 10x the (test-configured, 1 s) interval new operations are refused with `CKR_DEVICE_ERROR`;
//! when the directory is writable again the head is stored, operations are served, and
//! `audit verify` passes with the head current.

use crate::common::daemon::Env;
use crate::common::{Output, ADMIN};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const RING: &str = "projects/payments/keyRings/web";

/// Directories made immutable (`chattr +i`) until dropped.
struct Immutable(Vec<PathBuf>);

impl Immutable {
    fn set(dirs: Vec<PathBuf>) -> Immutable {
        for d in &dirs {
            let out = std::process::Command::new("chattr")
                .arg("+i")
                .arg(d)
                .output()
                .expect("chattr (e2fsprogs) is needed");
            assert!(
                out.status.success(),
                "chattr +i {}: {}",
                d.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Immutable(dirs)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(d)
                .status();
        }
    }
}

/// The token directories of the SoftHSM2 store beside `softhsm_conf`.
fn token_dirs(softhsm_conf: &Path) -> Vec<PathBuf> {
    let tokens = softhsm_conf.parent().unwrap().join("tokens");
    let mut dirs = vec![tokens.clone()];
    for e in std::fs::read_dir(&tokens).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            dirs.push(p);
        }
    }
    dirs
}

fn encrypt(env: &Env) -> Output {
    let plain = env.dir().join("plain");
    std::fs::write(&plain, b"records for the audit log").unwrap();
    let out = env.dir().join("sealed");
    let client = env.client_socket.to_str().unwrap().to_owned();
    env.ctl_env(
        &[
            "encrypt",
            "--key",
            &format!("{RING}/cryptoKeys/data"),
            "--in",
            plain.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[("KEYWARD_SOCKET", &client)],
    )
}

fn status_head(env: &Env) -> serde_json::Value {
    let out = env.ctl(&["--json", "status"]);
    out.ok();
    out.json()["auditHead"]["tokenHead"].clone()
}

/// Polls `f` every 200 ms until it gives `Some`, at most `secs` seconds.
fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_token_that_cannot_store_the_signed_head_is_reported_then_refused() {
    let mut env = Env::new();
    let mut config = std::fs::read_to_string(&env.config).unwrap();
    config.push_str("audit_checkpoint_secs = 1\n");
    std::fs::write(&env.config, config).unwrap();
    env.start();
    env.payments_ring();
    env.create_key(RING, "data", "ENCRYPT_DECRYPT", "AES_256_GCM");
    env.bind(
        &format!("{RING}/cryptoKeys/data"),
        "roles/kms.cryptoKeyEncrypterDecrypter",
        ADMIN,
    );
    encrypt(&env).ok();
    // Healthy: the token's head catches up with the newest checkpoint within a tick or two.
    wait_for(10, "a current token head", || {
        let h = status_head(&env);
        (h["seq"].as_i64() > Some(0) && h["staleSinceMs"].is_null()).then_some(())
    });

    let guard = Immutable::set(token_dirs(&env.softhsm_conf));
    let broken_at = Instant::now();
    // Records keep coming; the head cannot be stored: reported as stale.
    let stale = wait_for(8, "status to report a stale token head", || {
        encrypt(&env).ok();
        let h = status_head(&env);
        (!h["staleSinceMs"].is_null()).then_some(h)
    });
    assert!(stale["chainOnly"].as_i64() > Some(0), "{stale}");
    let text = env.ctl(&["status"]);
    assert!(
        text.stdout.contains("token head stale since"),
        "{}",
        text.stdout
    );
    let verify = env.ctl(&["audit", "verify"]);
    verify.ok();
    assert!(
        verify.stdout.contains("token head stale since"),
        "{verify:#?}"
    );
    // After 10x the interval unstored: new operations are refused.
    let refused = wait_for(25, "operations to be refused", || {
        let out = encrypt(&env);
        (out.code != 0).then_some(out)
    });
    assert!(
        broken_at.elapsed() >= Duration::from_secs(9),
        "refused after only {:?}",
        broken_at.elapsed()
    );
    assert!(
        refused.stderr.contains("audit log is unavailable"),
        "{refused:#?}"
    );
    // One failure line at the start, not one per retry (a retry a second for 10+ s).
    let log = env.daemon_log();
    let failures = log
        .lines()
        .filter(|l| l.contains("cannot store the signed audit head"))
        .count();
    assert!(
        (1..=2).contains(&failures),
        "{failures} failure lines:\n{log}"
    );

    drop(guard);
    wait_for(10, "operations to be served again", || {
        (encrypt(&env).code == 0).then_some(())
    });
    wait_for(10, "a current token head again", || {
        status_head(&env)["staleSinceMs"].is_null().then_some(())
    });
    let verify = env.ctl(&["audit", "verify"]);
    verify.ok();
    assert!(!verify.stdout.contains("stale"), "{verify:#?}");
}
