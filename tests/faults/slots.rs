//! Issue 15 item 2: an unauthenticated `ListSlots` naming 100,000 configured rings is refused
//! (`CKR_ARGUMENTS_BAD`) without the quadratic cost, one naming the cap's worth is answered,
//! and the per-instance slot tables go with their instances (status counts them).
//!
//! The client is this test binary run again as a child process (its instance is forgotten
//! when it exits), speaking raw frames on the client socket (`keyward_wire::Client`).

use crate::common::daemon::Env;
use crate::common::module::{child_role, child_settings, report, run_child, Settings};
use keyward_wire::pkcs11::{ConfiguredToken, Pkcs11Request, Pkcs11Response};
use keyward_wire::{Client, ClientKind, Hello, RequestBody, ResponseBody, WireError};
use std::time::{Duration, Instant};

const RINGS_ENV: &str = "KEYWARD_FAULTS_RINGS";
const CKR_ARGUMENTS_BAD: u64 = 0x7;
/// The default `[daemon] max_unseen_configured_rings`.
const CAP: usize = 1024;

/// The child: one `ListSlots` naming `KEYWARD_FAULTS_RINGS` rings nobody has, on the socket
/// of its settings; reports the CK_RV (0: answered), the slots listed and the time.
fn list(socket: &str, rings: usize) {
    let mut c =
        Client::connect(socket, &Hello::new(ClientKind::Module, None, None)).expect("connect");
    let configured: Vec<ConfiguredToken> = (0..rings)
        .map(|i| ConfiguredToken {
            ring: format!("projects/p{i}/keyRings/r{i}"),
            label: format!("r{i}"),
        })
        .collect();
    let t = Instant::now();
    let r = c.call(RequestBody::Pkcs11(Pkcs11Request::ListSlots { configured }));
    report("ms", t.elapsed().as_millis());
    match r {
        Ok(ResponseBody::Pkcs11(Pkcs11Response::Slots(s))) => {
            report("rv", 0);
            report("slots", s.len());
        }
        Err(WireError::Remote(e)) => report("rv", e.rv),
        other => panic!("ListSlots: {other:?}"),
    }
}

#[test]
fn slots_child_role() {
    if child_role().as_deref() == Some("list") {
        let settings = child_settings();
        let socket = settings
            .as_str()
            .split(';')
            .find_map(|kv| kv.strip_prefix("socket="))
            .unwrap()
            .to_string();
        let rings: usize = std::env::var(RINGS_ENV).unwrap().parse().unwrap();
        list(&socket, rings);
    }
}

fn instances(env: &Env) -> u64 {
    let js = env.ctl(&["--json", "status"]).ok().json();
    js["daemon"]["moduleInstances"].as_u64().unwrap()
}

#[test]
fn a_huge_configured_slot_list_is_refused_and_its_state_goes_with_the_instance() {
    let mut env = Env::new();
    env.start();
    let before = instances(&env);
    let settings = Settings::new(&env.client_socket, &env.dir().join("empty.toml"));
    let run = |rings: usize| {
        let n = rings.to_string();
        let out = run_child(
            "slots::slots_child_role",
            "list",
            &settings,
            &[(RINGS_ENV, n.as_str())],
        );
        assert_eq!(out.code, 0, "{out:#?}");
        out
    };
    let huge = run(100_000);
    eprintln!(
        "ListSlots naming 100,000 configured rings: rv {} in {} ms",
        huge.value("rv"),
        huge.value("ms")
    );
    assert_eq!(
        huge.value("rv"),
        CKR_ARGUMENTS_BAD.to_string(),
        "100,000 configured rings nobody sees: {huge:#?}"
    );
    let capped = run(CAP);
    eprintln!(
        "ListSlots naming {CAP} configured rings: {} slots in {} ms",
        capped.value("slots"),
        capped.value("ms")
    );
    assert_eq!(capped.value("rv"), "0", "{capped:#?}");
    assert_eq!(capped.value("slots"), CAP.to_string(), "{capped:#?}");
    // Both clients exited: their instances (and slot tables) are forgotten.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut now = instances(&env);
    while now != before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        now = instances(&env);
    }
    assert_eq!(now, before, "module instances after the clients exited");
}
