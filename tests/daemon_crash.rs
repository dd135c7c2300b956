//! Issue 4, acceptance 5: keywardd killed with SIGKILL in the middle of a batch of key
//! creations, then restarted: no committed key is lost, any orphan is reported by
//! reconciliation, and `audit verify` passes and reports the unsigned tail. After a clean stop,
//! deleting the newest audit records with sqlite3 makes `audit verify` fail.

mod common;

use common::daemon::Env;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const RING: &str = "projects/payments/keyRings/web";

#[test]
fn sigkill_mid_batch_then_restart() {
    let mut env = Env::new();
    env.start();
    env.payments_ring();

    // Create keys from a second thread until keywardd dies under it.
    let env = Arc::new(Mutex::new(env));
    let created: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let batch = {
        let (created, stop) = (created.clone(), stop.clone());
        let (admin_socket, dir) = {
            let e = env.lock().unwrap();
            (e.admin_socket.clone(), e.dir().to_path_buf())
        };
        std::thread::spawn(move || {
            let _ = dir;
            let sock = admin_socket.to_str().unwrap().to_string();
            for i in 0..200 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let id = format!("k{i}");
                let alg = if i % 2 == 0 {
                    "EC_SIGN_P256_SHA256"
                } else {
                    "AES_256_GCM"
                };
                let purpose = if i % 2 == 0 {
                    "ASYMMETRIC_SIGN"
                } else {
                    "ENCRYPT_DECRYPT"
                };
                let out = common::run_raw(
                    &[
                        "key",
                        "create",
                        "--keyring",
                        RING,
                        "--purpose",
                        purpose,
                        "--algorithm",
                        alg,
                        &id,
                    ],
                    &[("KEYWARD_ADMIN_SOCKET", sock.as_str())],
                );
                if out.code == 0 {
                    created
                        .lock()
                        .unwrap()
                        .push(format!("{RING}/cryptoKeys/{id}"));
                } else {
                    break; // keywardd is gone
                }
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while created.lock().unwrap().len() < 10 {
        assert!(Instant::now() < deadline, "the batch made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = env.lock().unwrap().signal_and_wait("KILL");
    assert!(!status.success(), "keywardd survived SIGKILL?");
    stop.store(true, Ordering::SeqCst);
    batch.join().unwrap();
    let created = created.lock().unwrap().clone();
    let mut env = Arc::try_unwrap(env).ok().unwrap().into_inner().unwrap();

    // Restart: every key whose creation was acknowledged is there.
    env.start();
    for key in &created {
        env.ctl(&["key", "get", key]).ok();
    }
    let listed = env.ctl(&["--json", "key", "list", "--keyring", RING]);
    listed.ok();
    assert!(listed.json().as_array().unwrap().len() >= created.len());

    // Reconciliation ran at start and said what it found: nothing missing; any orphan (a token
    // object made just before the kill, whose rows never committed) is reported.
    let rec = env.ctl(&["--json", "audit", "query", "--action", "reconcile"]);
    rec.ok();
    let last = rec
        .json_lines()
        .last()
        .cloned()
        .expect("a reconcile record");
    let detail = last["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("0 version(s) missing"), "{detail}");
    let orphans = env.ctl(&["--json", "audit", "query", "--action", "reconcile.orphan"]);
    orphans.ok();
    let n_orphans = orphans.json_lines().len();
    assert!(
        detail.contains(&format!("{n_orphans} orphan token object(s)")),
        "{detail}"
    );

    // The chain is intact; the records after the last signed head are reported.
    let v = env.ctl(&["audit", "verify"]);
    v.ok();
    eprintln!(
        "{} keys acknowledged before SIGKILL; {detail}; {}",
        created.len(),
        v.stdout.trim()
    );
    assert!(
        v.stdout
            .contains("records after the last signed head are covered by the chain only"),
        "{v:#?}"
    );

    // A clean stop signs the head; deleting the newest records is then detected.
    assert!(env.signal_and_wait("TERM").success());
    let out = std::process::Command::new("sqlite3")
        .arg(&env.db)
        .arg("DELETE FROM audit_log WHERE seq > (SELECT MAX(seq) - 3 FROM audit_log)")
        .output()
        .expect("sqlite3");
    assert!(out.status.success(), "{out:?}");
    env.start();
    let v = env.ctl(&["audit", "verify"]);
    v.failed();
    assert!(v.stderr.contains("verification FAILED"), "{v:#?}");
    eprintln!("after deleting the newest records: {}", v.stderr.trim());
}
