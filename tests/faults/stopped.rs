//! A stopped keywardd (SIGSTOP; issue 15 item 3): every module call has a deadline (the
//! module's `timeout`, here 2 s), so a caller blocked on a hung keywardd gets
//! `CKR_DEVICE_REMOVED` after it instead of waiting as long as keywardd is stopped; later
//! calls on that session get `CKR_SESSION_HANDLE_INVALID`; once keywardd runs again
//! (SIGCONT) a new session is served, without restarting the process. A key generation
//! whose client left (its `keygen_timeout` passed while keywardd was stopped) leaves no key:
//! keywardd sees the closed connection before storing it, destroys the token object and
//! audits the attempt.

use crate::common::daemon::Env;
use crate::common::module::{self, ring_slot, Settings};
use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const RING: &str = "projects/payments/keyRings/web";
/// The module deadline the test configures (`timeout=2`).
const DEADLINE: Duration = Duration::from_secs(2);
/// How long the test waits for the stopped call before calling it hung: a hang detector,
/// many times the deadline, not a speed bound.
const HUNG: Duration = Duration::from_secs(60);

/// Sends `signal` to `pid`.
fn signal(pid: u32, signal: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("cannot run kill");
    assert!(ok.success(), "kill -{signal} {pid}");
}

/// Keeps keywardd stopped until dropped (also when the test fails).
struct Stopped(u32);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        signal(pid, "STOP");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

fn private_key(s: &Session) -> ObjectHandle {
    let found = s
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(b"ec".to_vec()),
        ])
        .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    found[0]
}

#[test]
fn a_stopped_keywardd_never_holds_a_caller_past_its_deadline() {
    let _excl = module::exclusive();
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
    let settings = Settings::from_string(format!(
        "{};timeout={}",
        Settings::new(&env.client_socket, &env.dir().join("module.toml"))
            .credentials(&env.dir().join("signer.key"), &signer)
            .as_str(),
        DEADLINE.as_secs()
    ));
    let p11 = module::cryptoki(&settings);
    let web = ring_slot(&p11, RING);
    let session = p11.open_rw_session(web).unwrap();
    session
        .login(cryptoki::session::UserType::User, None)
        .unwrap();
    let key = private_key(&session);
    let digest = [0x42u8; 32];
    session.sign(&Mechanism::Ecdsa, key, &digest).unwrap();

    let stopped = Stopped::new(env.pid());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let t0 = Instant::now();
        let first = session.sign(&Mechanism::Ecdsa, key, &digest);
        let took = t0.elapsed();
        let again = session.sign(&Mechanism::Ecdsa, key, &digest);
        let _ = tx.send((first, took, again));
        // The session object is dropped here: C_CloseSession on a dead session.
    });
    let (first, took, again) = match rx.recv_timeout(HUNG) {
        Ok(r) => r,
        Err(_) => {
            drop(stopped);
            panic!(
                "C_Sign still blocked {HUNG:?} after keywardd was stopped (deadline {DEADLINE:?})"
            );
        }
    };
    eprintln!("C_Sign against a stopped keywardd answered after {took:?} (deadline {DEADLINE:?})");
    assert_eq!(
        module::rv(first),
        RvError::DeviceRemoved,
        "the call that met the deadline"
    );
    assert_eq!(
        module::rv(again),
        RvError::SessionHandleInvalid,
        "a later call on the same session"
    );

    drop(stopped);
    // Running again: a new session in the same process is served.
    let t0 = Instant::now();
    let session = p11.open_rw_session(web).unwrap();
    session
        .login(cryptoki::session::UserType::User, None)
        .or_else(|e| match e {
            cryptoki::error::Error::Pkcs11(RvError::UserAlreadyLoggedIn, _) => Ok(()),
            e => Err(e),
        })
        .unwrap();
    let key = private_key(&session);
    session.sign(&Mechanism::Ecdsa, key, &digest).unwrap();
    eprintln!(
        "after SIGCONT a new session signed within {:?}",
        t0.elapsed()
    );
}

/// Audit records of `action`, as the admin.
fn audit(env: &Env, action: &str) -> Vec<serde_json::Value> {
    env.ctl(&["--json", "audit", "query", "--action", action])
        .json_lines()
}

#[test]
fn a_key_made_after_its_client_gave_up_is_not_kept() {
    let _excl = module::exclusive();
    let mut env = Env::new();
    let maker = env.service_account_offline("maker");
    env.start();
    env.ctl(&["keyring", "create", "--parent", "projects/payments", "web"])
        .ok();
    env.bind(RING, "roles/kms.admin", "serviceAccount:maker@payments");
    let settings = Settings::from_string(format!(
        "{};keygen_timeout={}",
        Settings::new(&env.client_socket, &env.dir().join("module.toml"))
            .credentials(&env.dir().join("maker.key"), &maker)
            .as_str(),
        DEADLINE.as_secs()
    ));
    let p11 = module::cryptoki(&settings);
    let web = ring_slot(&p11, RING);
    let session = p11.open_rw_session(web).unwrap();
    session
        .login(cryptoki::session::UserType::User, None)
        .unwrap();
    let template = |label: &str| {
        vec![
            Attribute::Token(true),
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(label.as_bytes().to_vec()),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
        ]
    };
    // Control: the same call with keywardd running makes a key.
    session
        .generate_key(&Mechanism::AesKeyGen, &template("kept"))
        .unwrap();
    let before = audit(&env, "C_GenerateKey").len();

    // keywardd stopped: the request waits in the socket; the module gives up after its
    // deadline and closes the connection; keywardd, continued, makes the key and must
    // undo it.
    let stopped = Stopped::new(env.pid());
    let (tx, rx) = mpsc::channel();
    let t = template("late");
    std::thread::spawn(move || {
        let _ = tx.send(session.generate_key(&Mechanism::AesKeyGen, &t));
    });
    let made = match rx.recv_timeout(HUNG) {
        Ok(r) => r,
        Err(_) => {
            drop(stopped);
            panic!("C_GenerateKey still blocked {HUNG:?} after keywardd was stopped");
        }
    };
    assert_eq!(module::rv(made), RvError::DeviceRemoved);
    drop(stopped);

    // keywardd answers the abandoned request (bounded wait for its audit record).
    let deadline = Instant::now() + Duration::from_secs(30);
    let recs = loop {
        let recs = audit(&env, "C_GenerateKey");
        if recs.len() > before {
            break recs;
        }
        assert!(
            Instant::now() < deadline,
            "no audit record of the abandoned generation: {recs:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let last = recs.last().unwrap();
    assert!(
        last["detail"]
            .as_str()
            .is_some_and(|d| d.contains("the client left")),
        "the abandoned generation is audited as such: {last:#}"
    );
    assert_ne!(last["rv"], 0, "{last:#}");

    // No key labelled "late" exists; the control key does.
    let s = p11.open_rw_session(web).unwrap();
    let find = |label: &str| {
        s.find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .unwrap()
        .len()
    };
    assert_eq!(find("kept"), 1, "the control key");
    assert_eq!(find("late"), 0, "a key whose client gave up was kept");
    env.ctl(&["audit", "verify"]).ok();
}
