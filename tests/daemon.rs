//! keywardd end to end: a real SoftHSM2 token in a temporary directory, a store bootstrapped
//! with keywardctl, the built keywardd on temporary sockets, and keywardctl over its admin
//! socket.

mod common;

use common::daemon::{assert_refused, Env, LABEL};
use common::{my_uid, ADMIN};
use keyward_wire::admin::AdminRequest;
use keyward_wire::{
    encode, write_frame, Client, ClientKind, Hello, Pkcs11Request, Pkcs11Response, RequestBody,
    ResponseBody, WireError,
};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

const CKR_PIN_INCORRECT: u64 = 0xA0;

/// The newest `n` audit records, read over the socket as the mapped admin.
fn audit_tail(env: &Env, n: usize) -> Vec<serde_json::Value> {
    let out = env.ctl(&["--json", "audit", "tail", "-n", &n.to_string()]);
    out.ok();
    out.json_lines()
}

#[test]
fn the_admin_socket_serves_the_callers_mapped_uid() {
    let mut env = Env::new();
    env.start();
    let out = env.ctl(&[
        "project",
        "create",
        "--parent",
        "organizations/acme",
        "payments",
    ]);
    out.ok();
    let out = env.ctl(&["--json", "project", "list"]);
    out.ok();
    assert!(out.stdout.contains("projects/payments"), "{out:#?}");

    // The record names the mapped principal and the kernel's view of the peer.
    let rec = audit_tail(&env, 20)
        .into_iter()
        .find(|r| r["action"] == "project.create")
        .expect("no project.create record");
    assert_eq!(rec["principal"], ADMIN, "{rec}");
    assert_eq!(rec["peer_uid"], my_uid(), "{rec}");
    assert!(rec["peer_pid"].as_u64().is_some_and(|p| p > 0), "{rec}");
    assert_ne!(
        rec["peer_pid"],
        std::process::id(),
        "keywardctl's pid, not ours"
    );
    assert!(rec["instance"].is_string(), "{rec}");

    // --as is for offline use only: keywardd decides who is calling.
    let out = env.ctl(&["--as", ADMIN, "org", "list"]);
    out.usage_error();
    assert!(out.stderr.contains("--as works only offline"), "{out:#?}");

    // Mode 0660 on the admin socket, 0666 on the client socket.
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&env.admin_socket), 0o660);
    assert_eq!(mode(&env.client_socket), 0o666);
}

#[test]
fn the_client_socket_refuses_admin_requests_and_answers_ping() {
    let mut env = Env::new();
    env.start();
    let hello = Hello::new(ClientKind::Ctl, None, None);
    let mut client = Client::connect(&env.client_socket, &hello).unwrap();
    match client.call(RequestBody::Admin(AdminRequest::OrgList)) {
        Err(WireError::Remote(reply)) => {
            let msg = reply.message.unwrap_or_default();
            assert!(msg.contains("admin socket"), "{msg}");
            assert!(
                msg.contains(env.admin_socket.to_str().unwrap()),
                "names the admin socket: {msg}"
            );
        }
        other => panic!("admin request served on the client socket: {other:?}"),
    }
    // The refusal leaves the connection usable.
    let pong = client
        .call(RequestBody::Pkcs11(Pkcs11Request::Ping))
        .unwrap();
    assert_eq!(pong, ResponseBody::Pkcs11(Pkcs11Response::Pong));

    // And the admin socket does not serve the PKCS#11 half.
    let mut admin = Client::connect(&env.admin_socket, &hello).unwrap();
    assert!(matches!(
        admin.call(RequestBody::Pkcs11(Pkcs11Request::Ping)),
        Err(WireError::Remote(_))
    ));
    let orgs = admin.call(RequestBody::Admin(AdminRequest::OrgList));
    assert!(matches!(orgs, Ok(ResponseBody::Admin(_))), "{orgs:?}");
}

#[test]
fn a_service_account_key_in_keyward_credentials_is_the_caller() {
    let mut env = Env::new();
    let key = env.service_account_offline("web");
    env.offline(&[
        "--as",
        ADMIN,
        "iam",
        "bind",
        "--resource",
        "projects/payments",
        "--role",
        "roles/kms.admin",
        "--member",
        "serviceAccount:web@payments",
    ])
    .ok();
    env.start();

    let out = env.ctl_with_key(
        &key,
        &["keyring", "create", "--parent", "projects/payments", "web"],
    );
    out.ok();
    let rec = audit_tail(&env, 20)
        .into_iter()
        .find(|r| r["action"] == "keyring.create")
        .expect("no keyring.create record");
    assert_eq!(rec["principal"], "serviceAccount:web@payments", "{rec}");
    assert_eq!(rec["result"], "allowed", "{rec}");

    // The same uid without the key is the mapped admin again, not the account.
    let out = env.ctl(&["--json", "org", "list"]);
    out.ok();

    // A credentials file others can read is refused before anything is sent.
    let path = env.dir().join("open-credentials");
    std::fs::write(&path, &key).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = env.ctl_env(
        &["org", "list"],
        &[("KEYWARD_CREDENTIALS", path.to_str().unwrap())],
    );
    out.failed();
    assert!(
        out.stderr
            .contains(&format!("chmod 600 {}", path.display())),
        "{out:#?}"
    );
}

#[test]
fn a_wrong_key_is_refused_after_a_delay_and_audited() {
    let mut env = Env::new();
    let key = env.service_account_offline("web");
    env.start();
    // Same key id, another secret.
    let (id, secret) = key.split_once('.').unwrap();
    let flipped = if secret.starts_with('A') { "B" } else { "A" };
    let wrong = format!("{id}.{flipped}{}", &secret[1..]);
    assert_ne!(wrong, key);

    for attempt in 1..=2u32 {
        let started = Instant::now();
        let out = env.ctl_with_key(&wrong, &["--json", "org", "list"]);
        let took = started.elapsed();
        out.failed();
        assert_eq!(out.json()["error"]["rv"], CKR_PIN_INCORRECT, "{out:#?}");
        assert!(out.stderr.contains("wrong, revoked"), "{out:#?}");
        assert!(!out.stderr.contains(secret), "the secret is never echoed");
        // 100 ms, then 200 ms: the delay grows per (key id, peer uid).
        let min = Duration::from_millis(100 << (attempt - 1));
        assert!(took >= min, "attempt {attempt} answered after {took:?}");
    }
    // A malformed key is refused the same way.
    let out = env.ctl_with_key("not-a-key", &["--json", "org", "list"]);
    assert_eq!(out.json()["error"]["rv"], CKR_PIN_INCORRECT, "{out:#?}");
    // The right key still works: key ids are not secret, nobody locks others out.
    env.ctl_with_key(&key, &["org", "list"]).ok();

    let denied: Vec<_> = audit_tail(&env, 50)
        .into_iter()
        .filter(|r| r["action"] == "auth.serviceAccountKey")
        .collect();
    assert_eq!(denied.len(), 3, "{denied:#?}");
    assert_eq!(denied[0]["result"], "denied");
    assert_eq!(denied[0]["rv"], CKR_PIN_INCORRECT);
    assert_eq!(
        denied[0]["resource"],
        format!("serviceAccountKey:{}", &id[2..])
    );
    assert_eq!(denied[0]["peer_uid"], my_uid());
    let log = env.daemon_log();
    assert!(!log.contains(secret), "secret in the daemon log");
    assert!(!log.contains(&wrong), "wrong key in the daemon log");
}

#[test]
fn a_caller_without_rights_is_denied_and_audited() {
    let mut env = Env::new();
    let key = env.service_account_offline("nobody");
    env.start();
    let out = env.ctl_with_key(
        &key,
        &["folder", "create", "--parent", "organizations/acme", "eng"],
    );
    out.failed();
    assert!(out.stderr.contains("permission denied"), "{out:#?}");
    assert!(
        out.stderr.contains("serviceAccount:nobody@payments"),
        "{out:#?}"
    );
    // Nothing was made.
    let out = env.ctl(&["--json", "folder", "list", "--parent", "organizations/acme"]);
    out.ok();
    assert!(!out.stdout.contains("folders/eng"), "{out:#?}");

    let out = env.ctl(&[
        "--json",
        "audit",
        "query",
        "--principal",
        "serviceAccount:nobody@payments",
        "--result",
        "denied",
    ]);
    out.ok();
    let recs = out.json_lines();
    assert_eq!(recs.len(), 1, "{out:#?}");
    assert_eq!(recs[0]["action"], "folder.create");
    assert_eq!(recs[0]["peer_uid"], my_uid());
}

#[test]
fn db_writes_are_refused_while_keywardd_holds_the_store() {
    let mut env = Env::new();
    env.start();
    let folder = ["folder", "create", "--parent", "organizations/acme", "eng"];
    let mut args = vec!["--as", ADMIN];
    args.extend_from_slice(&folder);
    let out = env.offline(&args);
    out.failed();
    assert!(
        out.stderr
            .contains("keywardd is running on this store: drop --db to go through its socket"),
        "{out:#?}"
    );
    // Reads may go on.
    env.offline(&["--as", ADMIN, "org", "list"]).ok();
    // A second keywardd on the same store refuses to start (other sockets, same store).
    let other = env.dir().join("second.toml");
    let text = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace("admin.sock", "admin2.sock")
        .replace("client.sock", "client2.sock");
    std::fs::write(&other, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keywardd"))
        .arg("--config")
        .arg(&other)
        .env("SOFTHSM2_CONF", &env.softhsm_conf)
        .output()
        .unwrap();
    let out = common::Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_refused(&out, 5, &["held by another keywardd"]);
    // Through the socket the write goes.
    env.ctl(&folder).ok();
}

#[test]
fn sigterm_and_sigint_stop_cleanly() {
    let mut env = Env::new();
    for signal in ["TERM", "INT"] {
        env.start();
        env.ctl(&["org", "list"]).ok();
        let status = env.signal_and_wait(signal);
        assert_eq!(status.code(), Some(0), "SIG{signal}: {}", env.daemon_log());
        assert!(!env.admin_socket.exists(), "admin socket left behind");
        assert!(!env.client_socket.exists(), "client socket left behind");
        assert!(env.daemon_log().contains("keywardd stopped"));
        // Keyward's own token objects (the audit key and head) are no drift at a restart.
        assert!(
            env.daemon_log().contains("reconciliation: no drift"),
            "{}",
            env.daemon_log()
        );
        // The audit chain head was signed in the token at the stop.
        let conn = rusqlite::Connection::open(&env.db).unwrap();
        let last: i64 = conn
            .query_row("SELECT max(seq) FROM audit_log", [], |r| r.get(0))
            .unwrap();
        let signed: Option<i64> = conn
            .query_row("SELECT max(seq) FROM audit_checkpoints", [], |r| r.get(0))
            .unwrap();
        assert_eq!(signed, Some(last), "{}", env.daemon_log());
        // keywardctl says how to get in without a daemon (exit 3: not reachable).
        let out = env.ctl(&["org", "list"]);
        out.expect_code(3);
        assert!(out.stderr.contains("cannot reach keywardd"), "{out:#?}");
        assert!(out.stderr.contains("--db PATH"), "{out:#?}");
        // The store is free again: --db writes work.
        env.offline(&[
            "--as",
            ADMIN,
            "folder",
            "create",
            "--parent",
            "organizations/acme",
            &format!("f{signal}"),
        ])
        .ok();
    }
}

#[test]
fn a_scheduled_destroy_happens_when_keywardds_clock_passes_the_grace() {
    let mut env = Env::new();
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    env.set_clock(now);
    env.start();
    let ring = "projects/payments/keyRings/web";
    let version = format!("{ring}/cryptoKeys/k1/cryptoKeyVersions/1");
    env.payments_ring();
    env.ctl(&[
        "key",
        "create",
        "--keyring",
        ring,
        "--purpose",
        "ENCRYPT_DECRYPT",
        "--algorithm",
        "AES_256_GCM",
        "k1",
    ])
    .ok();
    // A symmetric rotation makes version 2 the primary, so version 1 may be destroyed.
    env.ctl(&["key", "rotate", &format!("{ring}/cryptoKeys/k1")])
        .ok();
    env.ctl(&["version", "destroy", &version, "--grace", "1d"])
        .ok();
    let state = |env: &Env| {
        let out = env.ctl(&["--json", "version", "get", &version]);
        out.ok();
        out.json()["state"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(state(&env), "DESTROY_SCHEDULED");
    // The destroy check runs every second; the clock has not moved, so nothing happens.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(state(&env), "DESTROY_SCHEDULED");

    env.set_clock(now + 2 * 86_400);
    let deadline = Instant::now() + Duration::from_secs(15);
    while state(&env) != "DESTROYED" {
        assert!(
            Instant::now() < deadline,
            "not destroyed: {}",
            env.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        env.daemon_log().contains("grace period over"),
        "{}",
        env.daemon_log()
    );
}

#[test]
fn hostile_bytes_on_the_admin_socket_do_not_kill_the_daemon() {
    let mut env = Env::new();
    env.start();
    let socket = env.admin_socket.clone();
    let send = |bytes: &[u8]| {
        let mut s = UnixStream::connect(&socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut sink);
    };
    let mut hello = Vec::new();
    write_frame(
        &mut hello,
        &encode(&Hello::new(ClientKind::Ctl, None, None)).unwrap(),
    )
    .unwrap();
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff, 0xff, 0xff, 0xff],
        vec![0, 0, 0, 5, 1, 2],
        vec![0, 0, 0, 8, 0xde, 0xad, 0xbe, 0xef, 0xff, 0xff, 0xff, 0xff],
        (0..=255u8).cycle().take(10_000).collect(),
        [hello.clone(), vec![0, 0, 0, 3, 9, 9, 9]].concat(),
        [hello.clone(), vec![0xff, 0xff, 0xff, 0xff]].concat(),
        [hello.clone(), vec![0, 0, 0, 2, 7]].concat(),
    ];
    for case in &cases {
        send(case);
        assert!(
            env.running(),
            "keywardd died on {case:?}: {}",
            env.daemon_log()
        );
    }
    // A peer that connects and says nothing holds no request up.
    let _silent = UnixStream::connect(&env.admin_socket).unwrap();
    env.ctl(&["org", "list"]).ok();
    assert!(env.running());
}

#[test]
fn the_connection_limit_refuses_extra_clients_and_the_admin_group_owns_the_socket() {
    use std::os::unix::fs::MetadataExt;
    let mut env = Env::new();
    // Root may give the socket to any group; others only to their own.
    let gid = if my_uid() == 0 {
        4242
    } else {
        std::fs::metadata(env.dir()).unwrap().gid()
    };
    let text = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace("[admin]\n", &format!("[admin]\ngroup = \"{gid}\"\n"))
        .replace(
            "destroy_check_secs = 1\n",
            "destroy_check_secs = 1\nmax_admin_connections = 2\n",
        );
    std::fs::write(&env.config, text).unwrap();
    env.start();
    assert_eq!(std::fs::metadata(&env.admin_socket).unwrap().gid(), gid);

    // Let the start-up probes' connections end, then take both admin slots with real
    // handshakes. (The admin socket has its own budget, design §9: the client socket's
    // connections do not count against it, nor its against theirs.)
    std::thread::sleep(Duration::from_millis(300));
    let hello = Hello::new(ClientKind::Ctl, None, None);
    let a = Client::connect(&env.admin_socket, &hello).unwrap();
    let b = Client::connect(&env.admin_socket, &hello).unwrap();
    let c = Client::connect(&env.client_socket, &hello).unwrap();
    let out = env.ctl(&["org", "list"]);
    out.failed();
    assert!(out.stderr.contains("limit of 2 connections"), "{out:#?}");
    drop((a, b, c));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = env.ctl(&["org", "list"]);
        if out.code == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "slots never freed: {out:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn refuses_a_world_readable_pin_file() {
    let env = Env::new();
    std::fs::set_permissions(&env.pin_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = env.run_daemon_to_end();
    let fix = format!("chmod 600 {}", env.pin_file.display());
    assert_refused(&out, 6, &[env.pin_file.to_str().unwrap(), &fix]);
    assert!(!env.admin_socket.exists());
}

#[test]
fn refuses_a_missing_token() {
    let env = Env::new();
    env.write_config(
        &format!("pin_file = \"{}\"", env.pin_file.display()),
        "no-such-token",
    );
    let out = env.run_daemon_to_end();
    assert_refused(&out, 4, &["no-such-token", LABEL, "fix [token] label"]);
    // A module that is not there is exit 4 too.
    let text = std::fs::read_to_string(&env.config).unwrap().replace(
        "[token]\n",
        "[token]\nmodule = \"/nonexistent/libnothing.so\"\n",
    );
    std::fs::write(&env.config, text).unwrap();
    let out = env.run_daemon_to_end();
    assert_refused(
        &out,
        4,
        &["/nonexistent/libnothing.so", "fix [token] module"],
    );
}

#[test]
fn refuses_a_wrong_pin() {
    let env = Env::new();
    let wrong = env.dir().join("wrong-pin");
    std::fs::write(&wrong, "0000000000000000\n").unwrap();
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    env.write_config(&format!("pin_file = \"{}\"", wrong.display()), LABEL);
    let out = env.run_daemon_to_end();
    assert_refused(&out, 3, &["PIN is incorrect", wrong.to_str().unwrap()]);
    // From an environment variable too, naming the variable; the PIN itself never shows.
    env.write_config("pin_env = \"KEYWARD_TEST_PIN\"", LABEL);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_keywardd"));
    let out = cmd
        .arg("--config")
        .arg(&env.config)
        .env("SOFTHSM2_CONF", &env.softhsm_conf)
        .env("KEYWARD_TEST_PIN", "9876543210fedcba")
        .output()
        .unwrap();
    let out = common::Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_refused(&out, 3, &["KEYWARD_TEST_PIN"]);
    assert!(!out.stderr.contains("9876543210fedcba"), "{out:#?}");
}

#[test]
fn refuses_a_corrupt_or_missing_store() {
    let env = Env::bare();
    let out = env.run_daemon_to_end();
    assert_refused(&out, 5, &["no store at", "keywardctl --db"]);
    assert!(!env.db.exists(), "keywardd must not create a store");

    std::fs::write(&env.db, vec![0x5a; 8192]).unwrap();
    let out = env.run_daemon_to_end();
    assert_refused(&out, 5, &[env.db.to_str().unwrap(), "unusable", "backup"]);
}

#[test]
fn refuses_a_bad_configuration_and_documents_exit_codes() {
    let env = Env::bare();
    let text = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace("label =", "lable =");
    std::fs::write(&env.config, text).unwrap();
    let out = env.run_daemon_to_end();
    assert_refused(&out, 2, &[env.config.to_str().unwrap(), "lable"]);

    let help = std::process::Command::new(env!("CARGO_BIN_EXE_keywardd"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for needle in [
        "3  wrong token PIN",
        "RestartPreventExitStatus=3",
        "6  the PIN file",
    ] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
}
