//! Attacks: resources (design §9 "Resources", "Session objects").
//!
//! - Finding 10: a uid with no binding configures a ring as a slot (one that does not exist,
//!   one it may not see) and makes the token generate RSA-4096 session key pairs, random
//!   bytes and digests for it.
//! - Finding 6: one uid holds sessions, operations, buffered bytes and session objects until
//!   keywardd's memory grows without bound; the (N+1)th over each cap must be refused
//!   (`CKR_SESSION_COUNT` from `C_OpenSession`, `CKR_DEVICE_MEMORY` elsewhere) and audited
//!   while another uid keeps working. The memory attack itself (100 sessions × 4 MiB of digest
//!   input) runs on the default limits and prints keywardd's VmHWM (not asserted).
//! - Token CPU: while one uid holds its cap of RSA-4096 key generations, another uid's ECDSA
//!   signature completes.
//!
//! The attacker is this process (uid 0, mapped to the org admin: it sees every ring) speaking
//! raw frames, or `nobody` through the built module; the victim is the other one.

use crate::common::daemon::Env;
use crate::common::module::{self, Settings, CHILD_ROLE};
use crate::common::pkcs11::{mech, P11};
use crate::other_uid::{as_other, open_for_others, OTHER_UID};
use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism as CkMech;
use cryptoki::object::{Attribute as CkAttr, ObjectClass};
use cryptoki::session::UserType;
use keyward_wire::pkcs11::{
    AttrValue, Attribute, Blob, GcmLayout, GcmParams, MechParams, Mechanism, ObjectHandle,
    Operation, Pkcs11Request as R, Pkcs11Response as P, SessionId, SlotId,
};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

const CKR_DEVICE_MEMORY: u64 = 0x31;
const CKR_SESSION_COUNT: u64 = 0xB1;
const CKR_OPERATION_NOT_INITIALIZED: u64 = 0x91;
const CKA_TOKEN: u64 = 0x1;
const CKA_VALUE_LEN: u64 = 0x161;
const CKA_MODULUS_BITS: u64 = 0x121;
const CKA_PUBLIC_EXPONENT: u64 = 0x122;
const CKA_PRIVATE: u64 = 0x2;
const CKA_ENCRYPT: u64 = 0x104;
const CKA_DECRYPT: u64 = 0x105;
const CKM_AES_GCM: u64 = 0x1087;
const CKM_SHA256: u64 = 0x250;
const CKM_AES_KEY_GEN: u64 = 0x1080;
const CKM_RSA_PKCS_KEY_PAIR_GEN: u64 = 0x0;
const MIB: usize = 1 << 20;

/// A ring no one created.
const NO_RING: &str = "projects/nosuch/keyRings/free";

fn attr(ty: u64, value: AttrValue) -> Attribute {
    Attribute { ty, value }
}

/// The slot of `ring` on a raw connection (listed first, so the instance knows it).
fn raw_slot(p: &mut P11, ring: &str) -> SlotId {
    let slots = p.slots();
    slots
        .iter()
        .find(|s| s.ring == ring)
        .unwrap_or_else(|| panic!("no slot for {ring} in {slots:?}"))
        .slot
}

/// Runs this test binary again as [`OTHER_UID`] for `test` with [`CHILD_ROLE`] = `role`; its
/// stdin stays open until the caller drops it (the child may wait for that).
fn spawn_other(test: &str, role: &str, settings: &Settings) -> Child {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ROLE, role)
        .env("KEYWARD_MODULE_TEST_SETTINGS", settings.as_str())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    as_other(&mut cmd);
    cmd.spawn().expect("cannot run the test binary as nobody")
}

/// Waits for a child and returns its `child: KEY=VALUE` reports (panics with its output if it
/// failed).
fn child_reports(child: Child) -> Vec<(String, String)> {
    let out = child.wait_with_output().expect("wait for the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the child failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| l.split_once("child: ").map(|(_, r)| r))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The result of a cryptoki call as a report value: `ok` or the CK_RV's name.
fn outcome<T>(r: cryptoki::error::Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(cryptoki::error::Error::Pkcs11(rv, _)) => format!("{rv:?}"),
        Err(e) => format!("error {e}"),
    }
}

/// The denied audit records of `uid` whose detail mentions `needle`: at least `n` of them
/// (records are group-committed: asked again, a bounded number of times, until they are).
fn denials(env: &Env, needle: &str, uid: u32, n: usize) -> Vec<serde_json::Value> {
    let mut found = Vec::new();
    for _ in 0..50 {
        let out = env.ctl(&[
            "--json", "audit", "query", "--result", "denied", "--limit", "100000",
        ]);
        out.ok();
        found = out
            .json_lines()
            .into_iter()
            .filter(|r| r["detail"].as_str().is_some_and(|d| d.contains(needle)))
            .filter(|r| r["peer_uid"] == uid)
            .collect();
        if found.len() >= n {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    found
}

/// Token work a uid with no binding asks of a slot it configured (through the module).
fn unbound_child() {
    let settings = module::child_settings();
    let p11 = module::cryptoki(&settings);
    for (name, ring) in [
        ("absent", NO_RING),
        ("invisible", "projects/payments/keyRings/web"),
    ] {
        let slot = module::ring_slot(&p11, ring);
        let s = p11.open_rw_session(slot).expect("open a session");
        module::report(
            &format!("{name}_login"),
            outcome(s.login(UserType::User, None)),
        );
        let rsa = s.generate_key_pair(
            &CkMech::RsaPkcsKeyPairGen,
            &[
                CkAttr::Token(false),
                CkAttr::ModulusBits(4096.into()),
                CkAttr::PublicExponent(vec![1, 0, 1]),
            ],
            &[CkAttr::Token(false), CkAttr::Sign(true)],
        );
        module::report(&format!("{name}_rsa4096"), outcome(rsa));
        let aes = s.generate_key(
            &CkMech::AesKeyGen,
            &[CkAttr::Token(false), CkAttr::ValueLen(32.into())],
        );
        module::report(&format!("{name}_aes"), outcome(aes));
        let data = s.create_object(&[
            CkAttr::Class(ObjectClass::DATA),
            CkAttr::Token(false),
            CkAttr::Value(vec![7; 64]),
        ]);
        module::report(&format!("{name}_data"), outcome(data));
        module::report(
            &format!("{name}_random"),
            outcome(s.generate_random_vec(32)),
        );
        module::report(
            &format!("{name}_digest"),
            outcome(s.digest(&CkMech::Sha256, b"free hashing")),
        );
    }
}

#[test]
fn finding10_unbound_uid_gets_no_token_work() {
    if std::env::var(CHILD_ROLE).as_deref() == Ok("unbound") {
        return unbound_child();
    }
    let mut env = Env::new();
    env.start();
    let ring = env.payments_ring();
    env.create_key(ring, "sig", "asymmetric-sign", "ec-sign-p256-sha256");
    open_for_others(env.dir());
    let settings = Settings::new(&env.client_socket, &env.dir().join("module.toml"))
        .tokens(&format!("{NO_RING},{ring}"));
    let got = child_reports(spawn_other(
        "resources::finding10_unbound_uid_gets_no_token_work",
        "unbound",
        &settings,
    ));
    let value = |k: &str| {
        got.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {k} in {got:?}"))
    };
    for name in ["absent", "invisible"] {
        // An unbound uid may log in (it is some principal), but the token works for it not
        // at all: session objects as for an absent ring, no random bytes, no digests.
        assert_eq!(value(&format!("{name}_login")), "ok", "{got:?}");
        for what in ["rsa4096", "aes", "data"] {
            assert_eq!(
                value(&format!("{name}_{what}")),
                format!("{:?}", RvError::TokenWriteProtected),
                "{name} ring, session {what}: {got:?}"
            );
        }
        assert_eq!(
            value(&format!("{name}_random")),
            format!("{:?}", RvError::RandomNoRng),
            "{got:?}"
        );
        assert_eq!(
            value(&format!("{name}_digest")),
            format!("{:?}", RvError::MechanismInvalid),
            "{got:?}"
        );
    }
    // Every session-object refusal is audited as the unbound uid's denial.
    let refused = denials(&env, "session objects need a principal", OTHER_UID, 6);
    assert!(
        refused.len() >= 6,
        "{} audited refusals of session objects: {refused:#?}",
        refused.len()
    );
}

/// A victim uid's ordinary work while the attacker holds its caps (through the module).
fn victim_child() {
    let settings = module::child_settings();
    let p11 = module::cryptoki(&settings);
    let slot = module::ring_slot(&p11, "projects/payments/keyRings/web");
    let mut sessions = Vec::new();
    for i in 0..3 {
        match p11.open_rw_session(slot) {
            Ok(s) => sessions.push(s),
            Err(e) => module::report(&format!("open{i}"), format!("{e}")),
        }
    }
    module::report("sessions", sessions.len());
    let s = &sessions[0];
    module::report("login", outcome(s.login(UserType::User, None)));
    let key = s
        .find_objects(&[
            CkAttr::Class(ObjectClass::PRIVATE_KEY),
            CkAttr::Label(b"sig".to_vec()),
        ])
        .unwrap_or_default();
    module::report("found", key.len());
    if let Some(k) = key.first() {
        module::report(
            "sign",
            outcome(s.sign(&CkMech::EcdsaSha256, *k, b"the victim signs")),
        );
    }
    module::report(
        "digest",
        outcome(sessions[1].digest(&CkMech::Sha256, &vec![1u8; 512 * 1024])),
    );
    module::report(
        "session_key",
        outcome(s.generate_key(
            &CkMech::AesKeyGen,
            &[CkAttr::Token(false), CkAttr::ValueLen(32.into())],
        )),
    );
    module::report("random", outcome(s.generate_random_vec(16)));
    // Hold the sessions until the parent is done looking.
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

/// Starts a keywardd with `limits` appended to `[daemon]`, the ring `web` with the ECDSA key
/// `sig`, and `nobody` bound to sign with it; returns the env and the module settings for
/// `nobody`.
fn world(limits: &str) -> (Env, Settings) {
    let mut env = Env::new();
    let text = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(&env.config, format!("{text}{limits}")).unwrap();
    env.start();
    let ring = env.payments_ring();
    env.create_key(ring, "sig", "asymmetric-sign", "ec-sign-p256-sha256");
    env.bind(
        &format!("{ring}/cryptoKeys/sig"),
        "roles/kms.signerVerifier",
        &format!("unix-uid:{OTHER_UID}"),
    );
    open_for_others(env.dir());
    let settings = Settings::new(&env.client_socket, &env.dir().join("module.toml"));
    (env, settings)
}

fn open(p: &mut P11, slot: SlotId) -> Result<SessionId, u64> {
    match p.call(R::OpenSession {
        slot,
        read_write: true,
    }) {
        Ok(P::Session(s)) => Ok(s),
        Ok(other) => panic!("{other:?}"),
        Err(rv) => Err(rv),
    }
}

fn digest_init(p: &mut P11, session: SessionId) -> Result<(), u64> {
    p.call(R::OperationInit {
        op: Operation::Digest,
        session,
        mechanism: mech(CKM_SHA256),
        key: None,
    })
    .map(|_| ())
}

fn digest_update(p: &mut P11, session: SessionId, data: Vec<u8>) -> Result<(), u64> {
    p.call(R::OperationUpdate {
        op: Operation::Digest,
        session,
        data: Blob::new(data),
    })
    .map(|_| ())
}

/// `C_EncryptInit(CKM_AES_GCM)` with `key` on `session` (GCM buffers its input to `*Final`:
/// since multi-part operations stream, digests and the AES block modes buffer nothing).
fn gcm_init(p: &mut P11, session: SessionId, key: ObjectHandle) -> Result<(), u64> {
    p.init(
        Operation::Encrypt,
        session,
        Mechanism {
            ty: CKM_AES_GCM,
            params: MechParams::Gcm(GcmParams {
                iv: Blob::new(vec![7; 12]),
                iv_bits: 96,
                aad: Blob::default(),
                tag_bits: 128,
                layout: GcmLayout::WithIvBits,
            }),
        },
        key,
    )
}

fn encrypt_update(p: &mut P11, session: SessionId, data: Vec<u8>) -> Result<(), u64> {
    p.call(R::OperationUpdate {
        op: Operation::Encrypt,
        session,
        data: Blob::new(data),
    })
    .map(|_| ())
}

fn session_aes(p: &mut P11, session: SessionId) -> Result<ObjectHandle, u64> {
    match p.call(R::GenerateKey {
        session,
        mechanism: mech(CKM_AES_KEY_GEN),
        template: vec![
            attr(CKA_TOKEN, AttrValue::Bool(false)),
            attr(CKA_VALUE_LEN, AttrValue::Ulong(32)),
            attr(CKA_ENCRYPT, AttrValue::Bool(true)),
            attr(CKA_DECRYPT, AttrValue::Bool(true)),
        ],
    }) {
        Ok(P::Object(h)) => Ok(h),
        Ok(other) => panic!("{other:?}"),
        Err(rv) => Err(rv),
    }
}

fn victim_reports_ok(got: &[(String, String)]) {
    let value = |k: &str| {
        got.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("the victim reported no {k}: {got:?}"))
    };
    assert_eq!(value("sessions"), "3", "{got:?}");
    assert_eq!(value("found"), "1", "{got:?}");
    for k in ["login", "sign", "digest", "session_key", "random"] {
        assert_eq!(value(k), "ok", "the victim's {k}: {got:?}");
    }
}

#[test]
fn finding6_each_cap_refuses_the_next_and_spares_other_uids() {
    if std::env::var(CHILD_ROLE).as_deref() == Ok("victim") {
        return victim_child();
    }
    let (env, settings) = world(
        "max_sessions_per_uid = 8\nmax_operations_per_uid = 6\nmax_operation_bytes = 1048576\n\
         max_buffered_bytes_per_uid = 3145728\nmax_session_objects_per_uid = 5\n",
    );
    let ring = "projects/payments/keyRings/web";
    let mut a = P11::connect(&env.client_socket, None);
    let mut b = P11::connect(&env.client_socket, None);
    let slot = raw_slot(&mut a, ring);
    raw_slot(&mut b, ring);
    a.login(slot, "").expect("login");
    b.login(slot, "").expect("login");

    // Sessions: 8 per uid across connections; the 9th is CKR_SESSION_COUNT on either.
    let mut ss: Vec<SessionId> = (0..5).map(|_| open(&mut a, slot).unwrap()).collect();
    let mut bs: Vec<SessionId> = (0..3).map(|_| open(&mut b, slot).unwrap()).collect();
    assert_eq!(open(&mut a, slot), Err(CKR_SESSION_COUNT), "9th session");
    assert_eq!(
        open(&mut b, slot),
        Err(CKR_SESSION_COUNT),
        "9th session, 2nd conn"
    );
    // A closed session gives its place back.
    a.call(R::CloseSession { session: ss[4] }).unwrap();
    ss[4] = open(&mut a, slot).expect("a freed place");

    // Operations in flight: 6 per uid.
    for s in &ss {
        digest_init(&mut a, *s).expect("operation within the cap");
    }
    digest_init(&mut b, bs[0]).expect("6th operation, 2nd connection");
    assert_eq!(
        digest_init(&mut b, bs[1]),
        Err(CKR_DEVICE_MEMORY),
        "7th operation in flight"
    );

    // A digest streams: its input is hashed as it comes, nothing is buffered.
    digest_update(&mut a, ss[4], vec![0xAA; 2 * MIB]).expect("a digest buffers nothing");
    // Buffered bytes (AES-GCM buffers to its tag): 1 MiB per operation, 3 MiB per uid.
    let key = session_aes(&mut a, ss[0]).expect("a session AES key");
    for s in &ss[..4] {
        a.call(R::OperationCancel {
            op: Operation::Digest,
            session: *s,
        })
        .unwrap();
        gcm_init(&mut a, *s, key).expect("C_EncryptInit (GCM)");
    }
    for s in &ss[..3] {
        encrypt_update(&mut a, *s, vec![0xAA; MIB]).expect("1 MiB within the caps");
    }
    assert_eq!(
        encrypt_update(&mut a, ss[3], vec![1]),
        Err(CKR_DEVICE_MEMORY),
        "a byte over the uid's buffered bytes"
    );
    // The refused operation is over; the others hold their input.
    assert_eq!(
        encrypt_update(&mut a, ss[3], vec![1]),
        Err(CKR_OPERATION_NOT_INITIALIZED)
    );
    a.call(R::OperationCancel {
        op: Operation::Encrypt,
        session: ss[0],
    })
    .unwrap();
    // One operation's cap, with another key (its refusal names that object, so the audit
    // log does not coalesce it with the refusal above).
    let other = session_aes(&mut a, ss[0]).expect("a second session AES key");
    gcm_init(&mut a, ss[0], other).expect("C_EncryptInit (GCM)");
    encrypt_update(&mut a, ss[0], vec![0x55; MIB]).expect("the cancelled MiB is free again");
    assert_eq!(
        encrypt_update(&mut a, ss[0], vec![1]),
        Err(CKR_DEVICE_MEMORY),
        "a byte over one operation's cap"
    );
    match a.call(R::OperationFinal {
        op: Operation::Digest,
        session: ss[4],
    }) {
        Ok(P::Data(d)) => assert_eq!(d.as_slice().len(), 32),
        other => panic!("{other:?}"),
    }

    // Session objects: 5 per uid (two are the AES keys above).
    bs.truncate(3);
    for _ in 0..3 {
        session_aes(&mut b, bs[2]).expect("a session object within the cap");
    }
    assert_eq!(
        session_aes(&mut b, bs[2]),
        Err(CKR_DEVICE_MEMORY),
        "5th session object"
    );

    // Meanwhile another uid works: sessions, a signature, a digest, a session object.
    let victim = spawn_other(
        "resources::finding6_each_cap_refuses_the_next_and_spares_other_uids",
        "victim",
        &settings,
    );
    victim_reports_ok(&child_reports(victim));

    // Every refusal is audited, naming the limit.
    let me = crate::common::my_uid();
    for needle in [
        "sessions per uid",
        "operations in flight per uid",
        "buffered bytes per uid",
        "buffered bytes per operation",
        "session objects per uid",
    ] {
        assert!(
            !denials(&env, needle, me, 1).is_empty(),
            "no audited refusal by {needle}"
        );
    }
    // keywardd's log names the limit and the uid (rate-limited).
    let log = env.daemon_log();
    assert!(
        log.contains("refused by a resource limit") && log.contains(&format!("uid={me}")),
        "{log}"
    );
    drop((a, b));
}

/// keywardd's peak resident memory (VmHWM, kB).
fn vm_hwm(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn finding6_memory_attack_is_refused_on_the_default_limits() {
    // One uid, one connection, 100 sessions each C_EncryptInit(AES-GCM) + 4 MiB of updates
    // (the finding's attack was C_DigestInit: digests stream now and buffer nothing; GCM
    // buffers to its tag), on the default limits.
    let mut env = Env::new();
    env.start();
    let ring = env.payments_ring();
    let before = vm_hwm(env.pid());
    let mut a = P11::connect(&env.client_socket, None);
    let slot = raw_slot(&mut a, ring);
    a.login(slot, "").expect("login");
    let mut refused = 0usize;
    let mut accepted = 0usize;
    let mut key = None;
    for _ in 0..100 {
        let s = open(&mut a, slot).expect("100 sessions are within the default cap");
        let k = *key.get_or_insert_with(|| session_aes(&mut a, s).expect("a session AES key"));
        if gcm_init(&mut a, s, k).is_err() {
            refused += 1;
            continue;
        }
        for _ in 0..4 {
            match encrypt_update(&mut a, s, vec![0x5A; MIB]) {
                Ok(()) => accepted += 1,
                Err(rv) => {
                    assert_eq!(rv, CKR_DEVICE_MEMORY);
                    refused += 1;
                    break;
                }
            }
        }
        // The rest of the 100 would be refused the same way (nothing is buffered for a
        // refused update); stop early to keep the suite short.
        if refused >= 8 {
            break;
        }
    }
    let after = vm_hwm(env.pid());
    println!(
        "finding 6 attack: keywardd VmHWM {} MiB before, {} MiB after; {accepted} MiB \
         buffered, {refused} refusals",
        before / 1024,
        after / 1024
    );
    assert!(
        refused > 0 && accepted < 400,
        "400 MiB of GCM input from one uid were all buffered ({accepted} MiB accepted, VmHWM \
         {} MiB)",
        after / 1024
    );
    drop(a);
}

/// uid A's key generations, each an RSA-4096 session key pair, on connection `p`.
fn rsa4096_session_pair(p: &mut P11, session: SessionId) -> Result<(), u64> {
    p.call(R::GenerateKeyPair {
        session,
        mechanism: mech(CKM_RSA_PKCS_KEY_PAIR_GEN),
        public_template: vec![
            attr(CKA_TOKEN, AttrValue::Bool(false)),
            attr(CKA_MODULUS_BITS, AttrValue::Ulong(4096)),
            attr(
                CKA_PUBLIC_EXPONENT,
                AttrValue::Bytes(Blob::new(vec![1, 0, 1])),
            ),
        ],
        private_template: vec![
            attr(CKA_TOKEN, AttrValue::Bool(false)),
            attr(CKA_PRIVATE, AttrValue::Bool(false)),
        ],
    })
    .map(|_| ())
}

#[test]
fn token_cpu_keygen_cap_spares_another_uids_signature() {
    if std::env::var(CHILD_ROLE).as_deref() == Ok("victim") {
        return victim_child();
    }
    let (env, settings) = world("max_key_generations_per_uid = 2\n");
    let ring = "projects/payments/keyRings/web";
    // Three generators for a cap of two: until one is refused, at most 4 rounds each.
    let refused = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let made = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let socket = env.client_socket.clone();
            let (refused, stop, made) = (refused.clone(), stop.clone(), made.clone());
            std::thread::spawn(move || {
                let mut p = P11::connect(&socket, None);
                let slot = raw_slot(&mut p, ring);
                let s = open(&mut p, slot).unwrap();
                for _ in 0..4 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    match rsa4096_session_pair(&mut p, s) {
                        Ok(()) => {
                            made.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(CKR_DEVICE_MEMORY) => {
                            refused.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(rv) => panic!("RSA-4096 session pair: CK_RV {rv:#x}"),
                    }
                    if refused.load(Ordering::SeqCst) > 0 {
                        // Keep the others generating while the victim signs.
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                }
            })
        })
        .collect();
    // Wait (bounded) for the first refusal: uid A is at its cap.
    for _ in 0..600 {
        if refused.load(Ordering::SeqCst) > 0 || workers.iter().all(|w| w.is_finished()) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let at_cap = refused.load(Ordering::SeqCst) > 0;
    let victim = spawn_other(
        "resources::token_cpu_keygen_cap_spares_another_uids_signature",
        "victim",
        &settings,
    );
    let mut victim = victim;
    drop(victim.stdin.take());
    let got = child_reports(victim);
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().expect("a generator thread panicked");
    }
    println!(
        "uid A: {} RSA-4096 pairs made, {} generations refused",
        made.load(Ordering::SeqCst),
        refused.load(Ordering::SeqCst)
    );
    assert!(
        at_cap,
        "three concurrent RSA-4096 generations of one uid, cap 2: none refused ({} made)",
        made.load(Ordering::SeqCst)
    );
    victim_reports_ok(&got);
    let refusals = denials(
        &env,
        "key generations in flight per uid",
        crate::common::my_uid(),
        1,
    );
    assert!(!refusals.is_empty(), "the refused generation is audited");
}
