//! Attacks: connections and module instances (design §9 "Resources", connection part, and
//! "Lifecycles"; issue 13 findings 2 and 5).
//!
//! The attacker is `nobody` ([`super::other_uid`]), this test binary run again as a child
//! that speaks raw frames on the client socket (`keyward_wire::Client`: a `Hello` per
//! connection, each without an instance secret making a new module instance). The victims
//! are this process's uid: the module (through `cryptoki`) and `keywardctl status`.

use super::common::daemon::Env;
use super::common::module::{self, child_role, ring_slot, Settings, CHILD_ROLE};
use super::other_uid::{as_other, open_for_others};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use keyward_wire::{Client, ClientKind, Hello, WireError};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RING: &str = "projects/payments/keyRings/web";
/// CKR_DEVICE_MEMORY: what a refusal by a limit carries.
const CKR_DEVICE_MEMORY: u64 = 0x31;
/// The child's environment: which socket to flood.
const SOCKET_ENV: &str = "KEYWARD_HOSTILE_SOCKET";
/// The child's environment: how many connections to try at most.
const TRIES_ENV: &str = "KEYWARD_HOSTILE_TRIES";

/// A started keywardd whose `[daemon]` section gets `daemon_lines`, with ring `web`, key `ec`
/// (EC P-256) and service account `signer@payments` bound signerVerifier on it; its
/// directory reachable by the attacker. Returns the account's key.
fn world(daemon_lines: &str) -> (Env, String) {
    let mut env = Env::new();
    let signer = env.service_account_offline("signer");
    // The configuration ends with its [daemon] section.
    let text = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(&env.config, format!("{text}{daemon_lines}")).unwrap();
    env.start();
    env.ctl(&["keyring", "create", "--parent", "projects/payments", "web"])
        .ok();
    env.create_key(RING, "ec", "ASYMMETRIC_SIGN", "EC_SIGN_P256_SHA256");
    env.bind(
        &format!("{RING}/cryptoKeys/ec"),
        "roles/kms.signerVerifier",
        "serviceAccount:signer@payments",
    );
    open_for_others(env.dir());
    let exe = std::env::current_exe().unwrap();
    open_for_others(exe.parent().unwrap());
    (env, signer)
}

/// `keywardctl --json status` as this uid (the org admin).
fn status(env: &Env) -> serde_json::Value {
    env.ctl(&["--json", "status"]).ok().json()
}

/// The module instances keywardd reports.
#[track_caller]
fn instances(env: &Env) -> u64 {
    let js = status(env);
    js["daemon"]["moduleInstances"]
        .as_u64()
        .unwrap_or_else(|| panic!("status reports no daemon.moduleInstances: {js}"))
}

/// Waits (at most 20 s) until keywardd reports `want` module instances; returns the last
/// count seen.
fn settle_instances(env: &Env, want: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = instances(env);
        if n == want || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The attacker: this test binary as `nobody`, running `test` in child role `role`.
struct Attacker {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
    values: Vec<(String, String)>,
}

impl Attacker {
    fn spawn(test: &str, role: &str, socket: &std::path::Path, tries: usize) -> Attacker {
        let exe = std::env::current_exe().unwrap();
        let mut cmd = Command::new(exe);
        cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ROLE, role)
            .env(SOCKET_ENV, socket)
            .env(TRIES_ENV, tries.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        as_other(&mut cmd);
        let mut child = cmd.spawn().expect("cannot start the attacker");
        let out = BufReader::new(child.stdout.take().unwrap());
        Attacker {
            child,
            out,
            values: vec![],
        }
    }

    /// Reads the attacker's reports until it says `ready` (it then holds what it took until
    /// its stdin closes) or exits.
    fn wait_ready(&mut self) {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.out.read_line(&mut line).unwrap();
            assert!(
                n > 0,
                "the attacker ended before it was ready: {:?}",
                self.values
            );
            if let Some((_, kv)) = line.trim_end().split_once("child: ") {
                if kv == "ready" {
                    return;
                }
                if let Some((k, v)) = kv.split_once('=') {
                    self.values.push((k.into(), v.into()));
                }
            }
        }
    }

    #[track_caller]
    fn value(&self, key: &str) -> &str {
        self.values
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("the attacker reported no {key}: {:?}", self.values))
    }

    /// Lets the attacker go (it drops what it holds and exits).
    fn finish(mut self) {
        drop(self.child.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the attacker failed: {status}");
    }
}

/// In the child: connects with `hello` until keywardd refuses or `tries` are spent; keeps
/// the connections. Returns (made, the refusal's CK_RV or 0, its message).
fn flood(
    socket: &str,
    tries: usize,
    hello: &dyn Fn() -> Hello,
    held: &mut Vec<Client>,
) -> (usize, u64, String) {
    let mut made = 0;
    for _ in 0..tries {
        match Client::connect(socket, &hello()) {
            Ok(c) => {
                held.push(c);
                made += 1;
            }
            Err(WireError::Refused { rv, message }) => return (made, rv, message),
            Err(e) => return (made, 0, e.to_string()),
        }
    }
    (made, 0, String::new())
}

/// Child role `flood`: new instances until refused, then more connections of the first one
/// until refused; holds them all until stdin closes.
fn flood_child() {
    let socket = std::env::var(SOCKET_ENV).unwrap();
    let tries: usize = std::env::var(TRIES_ENV).unwrap().parse().unwrap();
    let mut held = Vec::new();
    let fresh = || Hello::new(ClientKind::Module, None, None);
    let (instances, rv, message) = flood(&socket, tries, &fresh, &mut held);
    module::report("instances", instances);
    module::report("instance_rv", rv);
    module::report("instance_refusal", message.replace('\n', " "));
    if let Some(first) = held.first() {
        let secret = first.instance_secret().clone();
        let join = || Hello::new(ClientKind::Module, Some(secret.clone()), None);
        let (more, rv, message) = flood(&socket, tries, &join, &mut held);
        module::report("joined", more);
        module::report("connection_rv", rv);
        module::report("connection_refusal", message.replace('\n', " "));
    }
    module::report("connections", held.len());
    println!("child: ready");
    let _ = std::io::stdout().flush();
    let mut rest = String::new();
    let _ = std::io::stdin().read_line(&mut rest);
    drop(held);
}

/// Child role `churn`: `tries` module instances one after the other, each dropped at once
/// (finding 5's 10,050). Reports how many were made and refused.
fn churn_child() {
    let socket = std::env::var(SOCKET_ENV).unwrap();
    let tries: usize = std::env::var(TRIES_ENV).unwrap().parse().unwrap();
    let (mut made, mut refused, mut other) = (0usize, 0usize, 0usize);
    for _ in 0..tries {
        match Client::connect(&socket, &Hello::new(ClientKind::Module, None, None)) {
            Ok(c) => {
                made += 1;
                drop(c);
            }
            Err(WireError::Refused { rv, .. }) if rv == CKR_DEVICE_MEMORY => refused += 1,
            Err(_) => other += 1,
        }
    }
    module::report("made", made);
    module::report("refused", refused);
    module::report("other", other);
    println!("child: ready");
}

/// Opens a session, logs in (the settings' credentials) and finds key `ec`'s private half.
fn signer_session(p11: &cryptoki::context::Pkcs11) -> (Session, ObjectHandle) {
    let s = p11.open_rw_session(ring_slot(p11, RING)).unwrap();
    s.login(UserType::User, None).unwrap();
    let found = s
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(b"ec".to_vec()),
        ])
        .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    (s, found[0])
}

#[test]
fn a_uid_flooding_the_client_socket_holds_only_its_own_share() {
    if child_role().as_deref() == Some("flood") {
        return flood_child();
    }
    let excl = module::exclusive();
    let (env, signer) = world(
        "max_connections = 40\nmax_connections_per_uid = 8\nmax_instances = 20\n\
         max_instances_per_uid = 3\n",
    );
    let mut attacker = Attacker::spawn(
        "connections::a_uid_flooding_the_client_socket_holds_only_its_own_share",
        "flood",
        &env.client_socket,
        60,
    );
    attacker.wait_ready();
    // Meanwhile this uid signs through the module, on several lanes...
    let settings = Settings::new(&env.client_socket, &env.dir().join("module.toml"))
        .credentials(&env.dir().join("signer.key"), &signer);
    let p11 = module::cryptoki(&settings);
    let (s, key) = signer_session(&p11);
    let more: Vec<Session> = (0..3)
        .map(|_| p11.open_rw_session(ring_slot(&p11, RING)).unwrap())
        .collect();
    for s in std::iter::once(&s).chain(&more) {
        s.sign(&Mechanism::Ecdsa, key, &[7u8; 32])
            .expect("C_Sign while another uid holds its caps");
    }
    // ...and the admin reads the status, which counts the attacker's holdings.
    let js = status(&env);
    eprintln!("flood: {:?}; status: {}", attacker.values, js["daemon"]);
    assert_eq!(js["daemon"]["running"], true, "{js}");
    assert!(
        js["daemon"]["connections"]["client"].as_u64() >= Some(8 + 1),
        "{js}"
    );
    assert_eq!(js["daemon"]["moduleInstances"], 3 + 1, "{js}");
    // nobody got its caps, no more, and was told so with CKR_DEVICE_MEMORY.
    assert_eq!(attacker.value("instances"), "3", "{:?}", attacker.values);
    assert_eq!(
        attacker.value("instance_rv"),
        CKR_DEVICE_MEMORY.to_string(),
        "{:?}",
        attacker.values
    );
    assert!(
        attacker
            .value("instance_refusal")
            .contains("max_instances_per_uid"),
        "{:?}",
        attacker.values
    );
    assert_eq!(attacker.value("connections"), "8", "{:?}", attacker.values);
    assert_eq!(
        attacker.value("connection_rv"),
        CKR_DEVICE_MEMORY.to_string(),
        "{:?}",
        attacker.values
    );
    assert!(
        attacker
            .value("connection_refusal")
            .contains("max_connections_per_uid"),
        "{:?}",
        attacker.values
    );

    drop(more);
    drop(s);
    drop(p11);
    drop(excl);
    // The attacker's process leaves: its instances go with it (this process's stays: it
    // lives on).
    attacker.finish();
    assert_eq!(
        settle_instances(&env, 1),
        1,
        "instances of exited processes"
    );
    let log = env.daemon_log();
    assert!(
        log.contains("max_connections_per_uid") && log.contains("uid=65534"),
        "the refusals are logged, naming the limit and the uid: {log}"
    );
}

#[test]
fn one_uids_instances_never_evict_anothers() {
    if child_role().as_deref() == Some("churn") {
        return churn_child();
    }
    let excl = module::exclusive();
    // keywardd's defaults: the attack of finding 5 as filed.
    let (env, signer) = world("");
    let settings = Settings::new(&env.client_socket, &env.dir().join("module.toml"))
        .credentials(&env.dir().join("signer.key"), &signer);
    let p11 = module::cryptoki(&settings);
    let (s, key) = signer_session(&p11);
    s.sign(&Mechanism::Ecdsa, key, &[1u8; 32]).unwrap();

    let mut attacker = Attacker::spawn(
        "connections::one_uids_instances_never_evict_anothers",
        "churn",
        &env.client_socket,
        10_050,
    );
    attacker.wait_ready();
    eprintln!("churn: {:?}", attacker.values);
    let made: usize = attacker.value("made").parse().unwrap();
    let refused: usize = attacker.value("refused").parse().unwrap();
    assert_eq!(
        made + refused,
        10_050,
        "every attempt was made or refused by a limit: {:?}",
        attacker.values
    );
    attacker.finish();

    // The victim's next session gets a new lane (connection), which joins its instance:
    // the handle it was given stays valid.
    let again = p11.open_rw_session(ring_slot(&p11, RING)).unwrap();
    again
        .sign(&Mechanism::Ecdsa, key, &[2u8; 32])
        .expect("the victim's key handle on a new lane after 10,050 instances of another uid");
    s.sign(&Mechanism::Ecdsa, key, &[3u8; 32]).unwrap();
    drop(again);
    drop(s);
    drop(p11);
    drop(excl);
}

#[test]
fn a_slow_handshake_is_closed_at_the_whole_handshake_deadline() {
    let (env, _) = world("handshake_timeout_secs = 1\n");
    let hello = Hello::new(ClientKind::Module, None, None);
    let mut frame = Vec::new();
    keyward_wire::write_frame(&mut frame, &keyward_wire::encode(&hello).unwrap()).unwrap();
    // One byte every 500 ms: each read comes well within any per-read timeout, the whole
    // Hello takes several seconds.
    let mut stream = UnixStream::connect(&env.client_socket).unwrap();
    let mut sent = 0;
    let mut closed = false;
    let start = Instant::now();
    for b in &frame[..frame.len() - 1] {
        std::thread::sleep(Duration::from_millis(500));
        if stream.write_all(std::slice::from_ref(b)).is_err() {
            closed = true;
            break;
        }
        sent += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    assert!(
        closed,
        "keywardd kept a handshake trickling one byte per 500 ms open for {sent} of {} \
         bytes ({secs:.1} s; handshake_timeout_secs = 1)",
        frame.len()
    );
    assert!(sent < frame.len() - 1);

    // After a finished handshake, a connection that holds nothing (no session, no login)
    // gets the same deadline for each whole request.
    let mut stream = UnixStream::connect(&env.client_socket).unwrap();
    stream.write_all(&frame).unwrap();
    let reply = keyward_wire::read_frame(&mut stream).unwrap();
    assert!(!reply.is_empty());
    let request = keyward_wire::Request {
        id: 1,
        body: keyward_wire::RequestBody::Pkcs11(keyward_wire::Pkcs11Request::Ping),
    };
    let mut frame = Vec::new();
    keyward_wire::write_frame(&mut frame, &keyward_wire::encode(&request).unwrap()).unwrap();
    let (mut sent, mut closed) = (0, false);
    for b in &frame[..frame.len() - 1] {
        std::thread::sleep(Duration::from_millis(500));
        if stream.write_all(std::slice::from_ref(b)).is_err() {
            closed = true;
            break;
        }
        sent += 1;
    }
    assert!(
        closed,
        "keywardd kept a request trickling one byte per 500 ms open for {sent} of {} bytes",
        frame.len()
    );
    // Others are served as before.
    env.ctl(&["status"]).ok();
}

#[test]
fn a_process_that_exits_frees_its_instance() {
    if child_role().as_deref() == Some("sign-and-exit") {
        let settings = module::child_settings();
        let p11 = module::cryptoki(&settings);
        let (s, key) = signer_session(&p11);
        s.sign(&Mechanism::Ecdsa, key, &[9u8; 32]).unwrap();
        module::report("signed", 1);
        // Leaves without C_Finalize, its sessions open.
        std::process::exit(0);
    }
    let (env, signer) = world("");
    assert_eq!(instances(&env), 0);
    let settings = Settings::new(&env.client_socket, &env.dir().join("module.toml"))
        .credentials(&env.dir().join("signer.key"), &signer);
    for round in 0..3 {
        let out = module::run_child(
            "connections::a_process_that_exits_frees_its_instance",
            "sign-and-exit",
            &settings,
            &[],
        );
        assert_eq!(out.code, 0, "{out:#?}");
        assert_eq!(out.value("signed"), "1");
        assert_eq!(
            settle_instances(&env, 0),
            0,
            "round {round}: the exited process's instance is forgotten"
        );
    }
    // A process that finalises and initialises again replaces its instance: C_Finalize
    // closed the old one's connections, and the same pid making a new one is done with it.
    let excl = module::exclusive();
    for round in 0..3 {
        let p11 = module::cryptoki(&settings);
        let (s, key) = signer_session(&p11);
        s.sign(&Mechanism::Ecdsa, key, &[round; 32]).unwrap();
        // The previous round's instance goes when keywardd's threads see its connections
        // close (after C_Finalize), which under load may come a little after this sign.
        assert_eq!(
            settle_instances(&env, 1),
            1,
            "round {round}: one instance per live process"
        );
        drop(s);
        drop(p11);
        assert_eq!(excl.raw().finalize(), module::CKR_OK);
    }
    drop(excl);
}

#[test]
fn a_long_lived_client_keeps_its_sessions_through_idle_periods() {
    let excl = module::exclusive();
    let (env, signer) = world("client_idle_secs = 1\n");
    let settings = Settings::new(&env.client_socket, &env.dir().join("module.toml"))
        .credentials(&env.dir().join("signer.key"), &signer);
    let p11 = module::cryptoki(&settings);
    let slot = ring_slot(&p11, RING);
    // Four sessions, one per lane; then lanes 0 and 3 lose theirs. No login: every lane
    // without a session may be closed when idle.
    let mut sessions: Vec<Option<Session>> = (0..4)
        .map(|_| Some(p11.open_rw_session(slot).unwrap()))
        .collect();
    sessions[0] = None;
    sessions[3] = None;
    let find_public = |s: &Session| {
        s.find_objects(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Label(b"ec".to_vec()),
        ])
        .unwrap()
    };
    let public = find_public(sessions[1].as_ref().unwrap())[0];
    let connections = || status(&env)["daemon"]["connections"]["client"].as_u64();
    for round in 0..2 {
        // Longer than client_idle_secs: keywardd closes the two lanes without a session.
        let deadline = Instant::now() + Duration::from_secs(15);
        while connections() != Some(2) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(
            connections(),
            Some(2),
            "round {round}: idle session-less lanes closed"
        );
        // The sessions on lanes 1 and 2 live on; session-less calls and new sessions
        // connect again without ending them.
        for s in sessions.iter().flatten() {
            assert_eq!(find_public(s), vec![public], "round {round}");
        }
        p11.get_token_info(slot)
            .expect("C_GetTokenInfo after lane 0 was closed");
        let extra = p11.open_rw_session(slot).unwrap();
        assert_eq!(find_public(&extra), vec![public]);
        drop(extra);
        for s in sessions.iter().flatten() {
            assert_eq!(
                find_public(s),
                vec![public],
                "round {round}, after reconnecting"
            );
        }
    }
    // Logged in, nothing is closed for idleness: the login is kept on every lane.
    let s1 = sessions[1].take().unwrap();
    s1.login(UserType::User, None).unwrap();
    let extra: Vec<Session> = (0..2).map(|_| p11.open_rw_session(slot).unwrap()).collect();
    drop(extra);
    let key = s1
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(b"ec".to_vec()),
        ])
        .unwrap()[0];
    let before = connections();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(connections(), before, "logged in: no lane closed");
    s1.sign(&Mechanism::Ecdsa, key, &[5u8; 32]).unwrap();
    let s2 = sessions[2].take().unwrap();
    s2.sign(&Mechanism::Ecdsa, key, &[6u8; 32]).unwrap();
    drop(s2);
    drop(s1);
    drop(p11);
    drop(excl);
}

#[test]
fn a_refused_extra_lane_is_shared_not_an_error() {
    let excl = module::exclusive();
    // This uid may hold two client connections: the module's lanes 2 and 3 are refused.
    let (env, signer) = world("max_connections_per_uid = 2\n");
    let settings = Settings::new(&env.client_socket, &env.dir().join("module.toml"))
        .credentials(&env.dir().join("signer.key"), &signer);
    let p11 = module::cryptoki(&settings);
    let (first, key) = signer_session(&p11);
    let slot = ring_slot(&p11, RING);
    let rest: Vec<Session> = (0..5)
        .map(|i| {
            p11.open_rw_session(slot)
                .unwrap_or_else(|e| panic!("session {}: {e}", i + 2))
        })
        .collect();
    for (i, s) in std::iter::once(&first).chain(&rest).enumerate() {
        s.sign(&Mechanism::Ecdsa, key, &[i as u8; 32])
            .unwrap_or_else(|e| panic!("session {} signs: {e}", i + 1));
    }
    let js = status(&env);
    assert_eq!(js["daemon"]["connections"]["client"], 2, "{js}");
    assert!(
        env.daemon_log().contains("max_connections_per_uid"),
        "the refusal is logged"
    );
    drop(rest);
    drop(first);
    drop(p11);
    drop(excl);
}
