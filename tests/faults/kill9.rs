//! keywardd killed with SIGKILL under a multi-process signing load (issue 15 item 6b): four
//! processes sign through the module, two with a credential file, two with their
//! service-account key as PIN and the ring configured (`tokens`); keywardd is killed and
//! started again; every process recovers without restarting (a new session after
//! `CKR_DEVICE_REMOVED` / `CKR_SESSION_HANDLE_INVALID`) and keeps signing with the key handle
//! it found before the kill, the key and its binding still serve,
//! `audit verify` passes, and every sign acknowledged more than 1 s before the kill has its
//! record: at most the signs of the last second (design §6: the audit writer coalesces) may be
//! lost, and the test prints how many were.

use crate::common::daemon::Env;
use crate::common::module::{self, child_role, child_settings, ring_slot, Settings, CHILD_ROLE};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const RING: &str = "projects/payments/keyRings/web";
const TEST: &str = "kill9::signers_recover_from_a_sigkill_and_acknowledged_signs_are_recorded";
const SIGNERS: usize = 4;
/// A signer's bound on signs and on reconnect attempts.
const MAX_SIGNS: usize = 200_000;
const MAX_RECONNECTS: usize = 2_000;

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// The child: signs until the stop file exists, appending the time of each acknowledged
/// sign to its ack file, reconnecting whenever a call fails.
fn signer_role() {
    let acks_path = std::env::var("KEYWARD_FAULT_ACKS").unwrap();
    let stop = PathBuf::from(std::env::var("KEYWARD_FAULT_STOP").unwrap());
    let mut acks = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&acks_path)
        .unwrap();
    // Set for the key-as-PIN style: the PIN of every C_Login.
    let pin = std::env::var("KEYWARD_FAULT_PIN").ok();
    let p11 = module::cryptoki(&child_settings());
    let web = ring_slot(&p11, RING);
    let digest = [0x42u8; 32];
    // Found once: a handle stays valid across reconnects and keywardd restarts (design §4).
    let mut key = None;
    let (mut signs, mut reconnects) = (0usize, 0usize);
    while signs < MAX_SIGNS && reconnects < MAX_RECONNECTS && !stop.exists() {
        reconnects += 1;
        let Ok(session) = p11.open_rw_session(web) else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let pin = pin
            .as_ref()
            .map(|p| cryptoki::types::AuthPin::new(p.clone().into()));
        match session.login(cryptoki::session::UserType::User, pin.as_ref()) {
            Ok(())
            | Err(cryptoki::error::Error::Pkcs11(
                cryptoki::error::RvError::UserAlreadyLoggedIn,
                _,
            )) => {}
            Err(_) => continue,
        }
        let key = match key {
            Some(k) => k,
            None => match session.find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(b"ec".to_vec()),
            ]) {
                Ok(found) if found.len() == 1 => *key.insert(found[0]),
                _ => continue,
            },
        };
        while signs < MAX_SIGNS && !stop.exists() {
            match session.sign(&Mechanism::Ecdsa, key, &digest) {
                Ok(_) => {
                    signs += 1;
                    writeln!(acks, "{}", now_ms()).unwrap();
                }
                Err(cryptoki::error::Error::Pkcs11(
                    rv @ (cryptoki::error::RvError::KeyHandleInvalid
                    | cryptoki::error::RvError::ObjectHandleInvalid),
                    _,
                )) => panic!("the key handle found before the kill was refused: {rv}"),
                Err(_) => break,
            }
        }
    }
    module::report("signs", signs);
}

fn spawn_signer(settings: &Settings, pin: Option<&str>, acks: &Path, stop: &Path) -> Child {
    let log = std::fs::File::create(acks.with_extension("log")).unwrap();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ROLE, "signer")
        .env("KEYWARD_MODULE_TEST_SETTINGS", settings.as_str())
        .env("KEYWARD_FAULT_ACKS", acks)
        .env("KEYWARD_FAULT_STOP", stop)
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(pin) = pin {
        cmd.env("KEYWARD_FAULT_PIN", pin);
    }
    cmd.spawn().expect("cannot start a signer")
}

/// The ack times in `path`.
fn acks(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Polls `f` every 50 ms until it holds, at most `secs` seconds.
fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sum of `count` over the successful records of `action`.
fn ok_records(env: &Env, action: &str) -> u64 {
    env.ctl(&["--json", "audit", "query", "--action", action])
        .json_lines()
        .iter()
        .filter(|r| r["rv"] == 0)
        .map(|r| r["count"].as_u64().unwrap_or(1))
        .sum()
}

/// Signers, killed when dropped (also when the test fails).
struct Signers(Vec<Child>);

impl Drop for Signers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn signers_recover_from_a_sigkill_and_acknowledged_signs_are_recorded() {
    if child_role().as_deref() == Some("signer") {
        signer_role();
        return;
    }
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
    // Two identity styles: a credential file; the key as PIN with the ring configured.
    let with_file = Settings::new(&env.client_socket, &env.dir().join("module.toml"))
        .credentials(&env.dir().join("signer.key"), &signer);
    let key_as_pin = Settings::new(&env.client_socket, &env.dir().join("module.toml")).tokens(RING);
    let stop = env.dir().join("stop");
    let files: Vec<PathBuf> = (0..SIGNERS)
        .map(|i| env.dir().join(format!("acks-{i}")))
        .collect();
    let mut signers = Signers(
        files
            .iter()
            .enumerate()
            .map(|(i, f)| match i % 2 {
                0 => spawn_signer(&with_file, None, f, &stop),
                _ => spawn_signer(&key_as_pin, Some(&signer), f, &stop),
            })
            .collect(),
    );
    wait_until(60, "every signer signing", || {
        files.iter().all(|f| acks(f).len() >= 50)
    });
    std::thread::sleep(Duration::from_millis(1500));

    let killed_at = now_ms();
    let status = env.signal_and_wait("KILL");
    assert!(!status.success());
    let t0 = Instant::now();
    env.start();
    let ready_at = now_ms();
    let restart = t0.elapsed();
    // Every signer signs again, in the same process.
    wait_until(60, "every signer signing after the restart", || {
        files.iter().all(|f| acks(f).iter().any(|&t| t >= ready_at))
    });
    let recovery: Vec<u64> = files
        .iter()
        .map(|f| {
            acks(f)
                .into_iter()
                .filter(|&t| t >= ready_at)
                .min()
                .unwrap()
                - ready_at
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(&stop, "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let logs = || -> String {
        files
            .iter()
            .map(|f| std::fs::read_to_string(f.with_extension("log")).unwrap_or_default())
            .filter(|l| l.contains("panicked"))
            .collect()
    };
    for c in &mut signers.0 {
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                assert!(s.success(), "a signer failed: {s}: {}", logs());
                break;
            }
            assert!(Instant::now() < deadline, "a signer did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    let all: Vec<u64> = files.iter().flat_map(|f| acks(f)).collect();
    let early = all.iter().filter(|&&t| t + 1000 < killed_at).count() as u64;
    let last_second = all
        .iter()
        .filter(|&&t| t + 1000 >= killed_at && t < ready_at)
        .count() as u64;
    let after = all.iter().filter(|&&t| t >= ready_at).count() as u64;
    // The writer flushes within its interval; bounded wait until the records settle.
    let mut recorded = 0;
    wait_until(
        20,
        "the audit records of the signs after the restart",
        || {
            recorded = ok_records(&env, "C_SignInit");
            recorded >= early + after
        },
    );
    let acked = early + last_second + after;
    let lost = acked.saturating_sub(recorded);
    // The writer appends in order: the lost ones are the newest before the kill; how far back
    // they reach is the window lost.
    let mut before_kill: Vec<u64> = all.iter().copied().filter(|&t| t < ready_at).collect();
    before_kill.sort_unstable();
    let window = usize::try_from(lost)
        .ok()
        .filter(|&n| n > 0)
        .and_then(|n| before_kill.len().checked_sub(n))
        .and_then(|i| before_kill.get(i))
        .map_or(0, |&t| killed_at.saturating_sub(t));
    eprintln!(
        "kill -9 under {SIGNERS} signing processes: keywardd ready {restart:?} after the kill; \
         signers signing again {recovery:?} ms after it was ready; {acked} signs acknowledged \
         ({early} more than 1 s before the kill, {last_second} in the last second, {after} \
         after), {recorded} recorded: {lost} of the last second lost (the last {window} ms \
         before the kill)"
    );
    assert!(
        lost <= last_second,
        "{lost} acknowledged signs lost, more than the last second's {last_second}"
    );
    env.ctl(&["audit", "verify"]).ok();
}
