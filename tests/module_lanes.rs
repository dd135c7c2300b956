//! The module's lanes (issue 9): one instance spreads its sessions over up to 4 connections
//! to keywardd, so sessions of different threads are served in parallel, and keywardd still
//! sees one instance: one login, one handle space across all lanes.
//!
//! The module is needed built: ci/test.sh runs `cargo build -p keyward-pkcs11` first (see
//! `common::module::module_path`).

mod common;

use common::daemon::Env;
use common::module::{self, ring_slot, Settings};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::{Session, UserType};
use std::time::{Duration, Instant};

const RING: &str = "projects/payments/keyRings/web";
/// The module's lanes per instance (crates/pkcs11/src/state.rs `LANES`).
const LANES: usize = 4;

/// keywardd's threads: 4 of its own plus one per open connection.
fn daemon_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("keywardd's /proc/PID/task")
        .count()
}

/// Waits until keywardd has `want` threads (connection threads end a moment after their
/// client leaves); returns the last count seen.
fn settle(pid: u32, want: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = daemon_threads(pid);
        if n == want || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn find_one(s: &Session, class: ObjectClass, label: &str) -> cryptoki::object::ObjectHandle {
    let found = s
        .find_objects(&[
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .unwrap();
    assert_eq!(found.len(), 1, "{label}: {found:?}");
    found[0]
}

#[test]
fn sessions_spread_over_lanes_share_one_instance_and_run_in_parallel() {
    let excl = module::exclusive();
    let mut env = Env::new();
    let signer = env.service_account_offline("signer");
    env.start();
    env.ctl(&["keyring", "create", "--parent", "projects/payments", "web"])
        .ok();
    env.create_key(RING, "ec", "ASYMMETRIC_SIGN", "EC_SIGN_P256_SHA256");
    env.bind(
        &format!("{RING}/cryptoKeys/ec"),
        "roles/kms.signerVerifier",
        "serviceAccount:signer@payments",
    );
    let pid = env.pid();
    // keywardd's own threads, no connection open.
    let base = settle(pid, 4);
    assert_eq!(base, 4, "keywardd's idle threads");

    let settings = Settings::new(&env.client_socket, &env.dir().join("module.toml"))
        .credentials(&env.dir().join("signer.key"), &signer);
    let p11 = module::cryptoki(&settings);
    let web = ring_slot(&p11, RING);
    // C_Initialize's slot list: lane 0.
    assert_eq!(
        settle(pid, base + 1),
        base + 1,
        "one connection after C_Initialize"
    );

    // Six sessions: the first four take one lane each, the next two share.
    let sessions: Vec<Session> = (0..6).map(|_| p11.open_rw_session(web).unwrap()).collect();
    assert_eq!(
        settle(pid, base + LANES),
        base + LANES,
        "six sessions use the four lanes, no more"
    );

    // One login (on any session) holds for the instance: every lane sees private objects.
    sessions[3].login(UserType::User, None).unwrap();
    for s in &sessions {
        let private = s
            .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
            .unwrap();
        assert_eq!(private.len(), 1, "the login holds on every lane");
    }
    // A handle found on one lane works on the others.
    let key = find_one(&sessions[1], ObjectClass::PRIVATE_KEY, "ec");
    let public = find_one(&sessions[2], ObjectClass::PUBLIC_KEY, "ec");
    let digest = [0x42u8; 32];
    for s in &sessions {
        let sig = s.sign(&Mechanism::Ecdsa, key, &digest).unwrap();
        sessions[0]
            .verify(&Mechanism::Ecdsa, public, &digest, &sig)
            .unwrap();
    }

    // Four threads, each on its own session (own lane), sign at once; every signature
    // verifies.
    let mut sessions = sessions;
    let rest = sessions.split_off(4);
    let signatures: Vec<Vec<Vec<u8>>> = std::thread::scope(|sc| {
        let handles: Vec<_> = sessions
            .drain(..)
            .map(|s| {
                sc.spawn(move || {
                    (0..20)
                        .map(|_| s.sign(&Mechanism::Ecdsa, key, &digest).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(signatures.len(), 4);
    for sig in signatures.iter().flatten() {
        rest[0]
            .verify(&Mechanism::Ecdsa, public, &digest, sig)
            .unwrap();
    }

    // Closing sessions closes no lane; a new session reuses one. (Closing the slot's last
    // session logged the instance out, PKCS#11 §5.6: log in again.)
    drop(rest);
    drop(sessions);
    let again = p11.open_rw_session(web).unwrap();
    again.login(UserType::User, None).unwrap();
    again.sign(&Mechanism::Ecdsa, key, &digest).unwrap();
    assert_eq!(settle(pid, base + LANES), base + LANES);

    // C_Finalize (the exclusive guard makes it) closes every lane.
    drop(again);
    drop(p11);
    drop(excl);
    assert_eq!(settle(pid, base), base, "every lane closed at C_Finalize");
}
