//! The store's directory on a full file system (issue 15 item 6a): a small tmpfs (CI runs as
//! root) holds keywardd's store; a filler file takes every free byte while a signer keeps
//! signing through the module. keywardd refuses with `CKR_DEVICE_ERROR` (fails closed, no
//! other code), serves again once the space is back, and loses nothing it acknowledged:
//! every C_Sign answered `CKR_OK` has its audit record and `audit verify` passes.

use crate::common::daemon::{Env, LABEL};
use crate::common::module::{self, ring_slot, Settings};
use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const RING: &str = "projects/payments/keyRings/web";
/// Signs tried while the disk is full before the test gives up waiting for a refusal.
const MAX_SIGNS_FULL: usize = 5_000;
/// Signs tried after the space is back before the test calls keywardd unrecovered.
const MAX_SIGNS_RECOVER: usize = 300;

/// A tmpfs mounted on a directory until dropped (lazy unmount, so a keywardd still holding
/// files there does not keep it).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .expect("mount(8) is needed");
        assert!(
            out.status.success(),
            "mount -t tmpfs on {} (the fault suite runs as root): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the file system holding `path` with one file, until it is full.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0xA5u8; 64 * 1024];
    let mut written = 0u64;
    // Bounded: a tmpfs of at most 1 GiB.
    for _ in 0..16_384 {
        match f.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    // Smaller pieces for the last bytes.
    for _ in 0..65_536 {
        match f.write(&chunk[..512]) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    let _ = f.sync_all();
    written
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

#[test]
fn a_full_store_file_system_refuses_then_recovers_and_loses_nothing_acknowledged() {
    let _excl = module::exclusive();
    let mut env = Env::new();
    let signer = env.service_account_offline("signer");
    // The store moves onto a 16 MiB tmpfs.
    let store_dir = env.dir().join("store");
    let _fs = Tmpfs::mount(&store_dir, "16m");
    let db = store_dir.join("keyward.db");
    std::fs::copy(&env.db, &db).unwrap();
    for side in ["-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{side}", env.db.display()));
        if from.exists() {
            std::fs::copy(&from, format!("{}{side}", db.display())).unwrap();
        }
    }
    env.db = db;
    env.write_config(&format!("pin_file = \"{}\"", env.pin_file.display()), LABEL);
    env.start();
    env.ctl(&["keyring", "create", "--parent", "projects/payments", "web"])
        .ok();
    env.create_key(RING, "ec", "ASYMMETRIC_SIGN", "EC_SIGN_P256_SHA256");
    env.bind(
        &format!("{RING}/cryptoKeys/ec"),
        "roles/kms.signerVerifier",
        "serviceAccount:signer@payments",
    );
    let settings = Settings::new(&env.client_socket, &env.dir().join("module.toml"))
        .credentials(&env.dir().join("signer.key"), &signer);
    let p11 = module::cryptoki(&settings);
    let web = ring_slot(&p11, RING);
    let session = p11.open_rw_session(web).unwrap();
    session
        .login(cryptoki::session::UserType::User, None)
        .unwrap();
    let key = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(b"ec".to_vec()),
        ])
        .unwrap()[0];
    let digest = [0x42u8; 32];
    let mut acked = 0u64;
    for _ in 0..50 {
        session.sign(&Mechanism::Ecdsa, key, &digest).unwrap();
        acked += 1;
    }
    let before = ok_records(&env, "C_SignInit");

    // Disk full.
    let filler = store_dir.join("filler");
    let filled = fill(&filler);
    eprintln!("filler: {filled} bytes");
    let mut refused = 0usize;
    let mut others = Vec::new();
    for _ in 0..MAX_SIGNS_FULL {
        match session.sign(&Mechanism::Ecdsa, key, &digest) {
            Ok(_) => acked += 1,
            Err(cryptoki::error::Error::Pkcs11(RvError::DeviceError, _)) => {
                refused += 1;
                if refused >= 20 {
                    break;
                }
            }
            Err(e) => {
                others.push(e.to_string());
                break;
            }
        }
    }
    assert!(
        others.is_empty(),
        "a full disk gave other errors: {others:?}"
    );
    assert!(
        refused > 0,
        "keywardd served {MAX_SIGNS_FULL} signs on a full store file system"
    );
    eprintln!("disk full: {refused} refusals (CKR_DEVICE_ERROR), {acked} signs acknowledged");

    // Space back: keywardd serves again.
    std::fs::remove_file(&filler).unwrap();
    let t0 = Instant::now();
    let mut recovered = None;
    for i in 0..MAX_SIGNS_RECOVER {
        match session.sign(&Mechanism::Ecdsa, key, &digest) {
            Ok(_) => {
                acked += 1;
                recovered = Some(i);
                break;
            }
            Err(cryptoki::error::Error::Pkcs11(RvError::DeviceError, _)) => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("after the space came back: {e}"),
        }
    }
    let recovered = recovered.unwrap_or_else(|| {
        panic!(
            "still refused after {MAX_SIGNS_RECOVER} tries with space back: {}",
            env.daemon_log()
        )
    });
    eprintln!(
        "recovered after {:?} ({recovered} refused tries)",
        t0.elapsed()
    );
    for _ in 0..20 {
        session.sign(&Mechanism::Ecdsa, key, &digest).unwrap();
        acked += 1;
    }
    drop(session);

    // Nothing acknowledged lost: every C_Sign answered CKR_OK has its record (bounded wait
    // for the writer to flush), and the chain verifies.
    let deadline = Instant::now() + Duration::from_secs(20);
    let recorded = loop {
        let n = ok_records(&env, "C_SignInit");
        if n >= acked || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!(
        "C_SignInit records: {acked} acknowledged, {recorded} recorded ({before} before the fill)"
    );
    assert!(
        recorded >= acked,
        "{} acknowledged signs have no audit record ({acked} acknowledged, {recorded} recorded)",
        acked - recorded
    );
    env.ctl(&["audit", "verify"]).ok();
}
