//! Attacks: audit_files (design §6 "Coalescing", §9 "Resources" and "Files"; issue 13
//! findings 3, 9 and 13).
//!
//! - A flood of denied calls from one uid no longer adds one record per call (it filled the
//!   disk and failed the service closed for everyone): identical denials are one record with
//!   a count, a uid over its audit rate has its operations refused and its refusals coalesce,
//!   and a client-supplied string is cut before it reaches the log.
//! - The store is private to keywardd's user; the sockets' directory is not writable by others.
//! - The module refuses a credentials file others can read; parallel wrong keys get no more
//!   evaluations than the limit; attempts made while locked out are audited (coalesced).

use super::common::daemon::Env;
use super::common::module::{child_role, report, run_child, Settings};
use super::common::{Output, ADMIN};
use super::other_uid::{as_other, open_for_others, OTHER_UID};
use keyward_wire::pkcs11::{
    ring_identity, AttrValue, Attribute, ConfiguredToken, MechParams, Mechanism, Pkcs11Request,
    Pkcs11Response, SessionId, SlotId, UserType,
};
use keyward_wire::WireError;
use keyward_wire::{Client, ClientKind, Hello, RequestBody, ResponseBody, ServiceAccountKey};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

const RING: &str = "projects/payments/keyRings/web";
const KEY: &str = "projects/payments/keyRings/web/cryptoKeys/aes";
const CKM_AES_KEY_GEN: u64 = 0x1080;
const CKA_TOKEN: u64 = 0x1;
const CKA_VALUE_LEN: u64 = 0x161;
const CKR_FUNCTION_FAILED: u64 = 0x6;
const CKR_DEVICE_MEMORY: u64 = 0x31;
const CKR_PIN_INCORRECT: u64 = 0xA0;
const CKR_PIN_LOCKED: u64 = 0xA4;
const CKR_TOKEN_WRITE_PROTECTED: u64 = 0xE2;

/// Denied calls of the flood.
const FLOOD: usize = 20_000;
/// Distinct rings (a login and a denial each) used to exhaust the uid's audit burst.
const DISTINCT: usize = 600;
/// The attacker uid's audit burst in this test (no refill: the rate is 0).
const BURST: usize = 100;

fn s(p: &Path) -> &str {
    p.to_str().expect("temporary path is not UTF-8")
}

/// Appends `lines` to the `[daemon]` section of `env`'s configuration.
fn daemon_settings(env: &Env, lines: &str) {
    let text = std::fs::read_to_string(&env.config).expect("no configuration");
    let text = text.replacen("[daemon]\n", &format!("[daemon]\n{lines}\n"), 1);
    std::fs::write(&env.config, text).expect("cannot write the configuration");
}

/// A raw connection to the client socket, as a module instance with `key` as credentials.
fn raw_client(env: &Env, key: &str) -> Client {
    let hello = Hello::new(
        ClientKind::Module,
        None,
        Some(ServiceAccountKey::new(key.to_string())),
    );
    Client::connect(&env.client_socket, &hello).expect("handshake")
}

fn call(c: &mut Client, req: Pkcs11Request) -> Result<Pkcs11Response, u64> {
    match c.call(RequestBody::Pkcs11(req)) {
        Ok(ResponseBody::Pkcs11(r)) => Ok(r),
        Ok(other) => panic!("unexpected answer {other:?}"),
        Err(WireError::Remote(e)) => Err(e.rv),
        Err(e) => panic!("connection failed: {e}"),
    }
}

fn open_session(c: &mut Client, ring: &str) -> SessionId {
    let slot = ring_identity(ring).0;
    match call(
        c,
        Pkcs11Request::OpenSession {
            slot: SlotId(slot.0),
            read_write: true,
        },
    ) {
        Ok(Pkcs11Response::Session(s)) => s,
        other => panic!(
            "C_OpenSession on {}...: {other:?}",
            &ring[..ring.len().min(60)]
        ),
    }
}

/// `C_Login(CKU_USER)` with an empty PIN (the connection's principal) on `ring`'s slot.
fn login(c: &mut Client, ring: &str) -> Result<Pkcs11Response, u64> {
    call(
        c,
        Pkcs11Request::Login {
            slot: SlotId(ring_identity(ring).0 .0),
            user: UserType::User,
            pin: None,
        },
    )
}

fn generate_key(c: &mut Client, session: SessionId) -> Result<Pkcs11Response, u64> {
    call(
        c,
        Pkcs11Request::GenerateKey {
            session,
            mechanism: Mechanism {
                ty: CKM_AES_KEY_GEN,
                params: MechParams::None,
            },
            template: vec![
                Attribute {
                    ty: CKA_VALUE_LEN,
                    value: AttrValue::Ulong(32),
                },
                Attribute {
                    ty: CKA_TOKEN,
                    value: AttrValue::Bool(true),
                },
            ],
        },
    )
}

/// `keywardctl encrypt` of a small file as [`OTHER_UID`] (principal `unix-uid:65534`)
/// through the client socket.
fn encrypt_as_other(env: &Env, input: &Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keywardctl"));
    for (k, _) in std::env::vars() {
        if k.starts_with("KEYWARD_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(["encrypt", "--key", KEY, "--in", s(input)])
        .env("KEYWARD_SOCKET", &env.client_socket)
        .env("KEYWARD_ADMIN_SOCKET", &env.admin_socket);
    let out = as_other(&mut cmd).output().expect("cannot run keywardctl");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Every record of `action` by `principal`, read offline (keywardd stopped: its pending
/// counts are written at a clean stop).
fn records(env: &Env, principal: &str, action: &str) -> Vec<Value> {
    env.offline(&[
        "--as",
        ADMIN,
        "--json",
        "audit",
        "query",
        "--principal",
        principal,
        "--action",
        action,
    ])
    .ok()
    .json_lines()
}

fn count_of(r: &Value) -> u64 {
    // A record without a count (the format before coalescing) stands for one call.
    r["count"].as_u64().unwrap_or(1)
}

/// Finding 3 (acceptance 3): 20,000 denied C_GenerateKey from one uid add at most 2 records
/// whose counts sum to 20,000; logins and denials on 600 distinct rings add at most the uid's
/// burst (100) plus a few coalesced records: once it is spent, the uid's allowed operations
/// (its logins, the admin's encrypt from the same uid) are refused with `CKR_DEVICE_MEMORY`,
/// every refusal recorded and coalesced, while another uid's encrypt works throughout; a 1 MB
/// configured ring name does not reach the store; `audit verify` passes.
#[test]
fn an_audit_flood_from_one_uid_is_coalesced_and_limited_to_that_uid() {
    let mut env = Env::new();
    let attacker = env.service_account_offline("attacker");
    // Windows and rate set so that nothing ends or refills during the test.
    daemon_settings(
        &env,
        &format!(
            "audit_coalesce_window_ms = 3600000\naudit_records_per_uid_per_second = 0\n\
             audit_burst_per_uid = {BURST}"
        ),
    );
    open_for_others(env.dir());
    open_for_others(
        Path::new(env!("CARGO_BIN_EXE_keywardctl"))
            .parent()
            .unwrap(),
    );
    env.start();
    env.web_ring();
    env.create_key(RING, "aes", "ENCRYPT_DECRYPT", "AES_256_GCM");
    env.bind(
        KEY,
        "roles/kms.cryptoKeyEncrypterDecrypter",
        &format!("unix-uid:{OTHER_UID}"),
    );
    // This process's uid is the admin's, who may encrypt too (the same uid as the attacker).
    env.bind(KEY, "roles/kms.cryptoKeyEncrypterDecrypter", ADMIN);
    let input = env.dir().join("plain");
    std::fs::write(&input, b"legitimate data").unwrap();
    std::fs::set_permissions(&input, std::fs::Permissions::from_mode(0o644)).unwrap();
    encrypt_as_other(&env, &input).ok();
    let encrypt_mine = || {
        env.ctl_env(
            &["encrypt", "--key", KEY, "--in", s(&input)],
            &[("KEYWARD_SOCKET", s(&env.client_socket))],
        )
    };
    encrypt_mine().ok();

    // The attacker: an account with no binding, from this process's uid, on raw frames.
    let absent = "projects/payments/keyRings/absent";
    let huge = format!("projects/payments/keyRings/{}", "x".repeat(1 << 20));
    let distinct: Vec<String> = (0..DISTINCT)
        .map(|i| format!("projects/payments/keyRings/absent{i}"))
        .collect();
    let mut configured = vec![
        ConfiguredToken {
            ring: absent.into(),
            label: "absent".into(),
        },
        ConfiguredToken {
            ring: huge.clone(),
            label: "huge".into(),
        },
    ];
    configured.extend(distinct.iter().map(|r| ConfiguredToken {
        ring: r.clone(),
        label: "d".into(),
    }));
    let mut c = raw_client(&env, &attacker);
    call(&mut c, Pkcs11Request::ListSlots { configured }).expect("slot list");

    std::thread::scope(|scope| {
        // The legitimate principal, another uid, works while the flood runs.
        let legit = scope.spawn(|| {
            for _ in 0..3 {
                encrypt_as_other(&env, &input).ok();
            }
        });
        let session = open_session(&mut c, absent);
        login(&mut c, absent).expect("C_Login");
        for i in 0..FLOOD {
            assert_eq!(
                generate_key(&mut c, session),
                Err(CKR_TOKEN_WRITE_PROTECTED),
                "call {i}"
            );
        }
        legit.join().expect("the legitimate principal's encrypts");
    });
    // The 1 MB ring name (20 calls: 20 MB before).
    let session = open_session(&mut c, &huge);
    login(&mut c, &huge).expect("C_Login");
    for _ in 0..20 {
        assert_eq!(
            generate_key(&mut c, session),
            Err(CKR_TOKEN_WRITE_PROTECTED)
        );
    }
    // Distinct rings until the uid's burst is spent, and well past it: each login is an
    // allowed operation (refused with CKR_DEVICE_MEMORY once the burst is spent), each key
    // generation on a logged-in slot a distinct denial.
    let (mut logged_in, mut refused) = (0u64, 0u64);
    for ring in &distinct {
        let session = open_session(&mut c, ring);
        match login(&mut c, ring) {
            Ok(_) => {
                logged_in += 1;
                assert_eq!(
                    generate_key(&mut c, session),
                    Err(CKR_TOKEN_WRITE_PROTECTED)
                );
            }
            Err(rv) => {
                assert_eq!(rv, CKR_DEVICE_MEMORY, "C_Login over the audit rate");
                refused += 1;
            }
        }
    }
    assert!(
        refused > 0 && logged_in < BURST as u64,
        "{logged_in} logins"
    );
    // This uid is over its audit rate now: its allowed operations are refused (the admin's
    // encrypt from the same uid), another uid's are not; the admin socket still answers.
    let mine = encrypt_mine();
    encrypt_as_other(&env, &input).ok();
    env.ctl(&["status"]).ok();
    drop(c);
    env.signal_and_wait("TERM");

    let principal = "serviceAccount:attacker@payments";
    let gen = records(&env, principal, "C_GenerateKey");
    let total: u64 = gen.iter().map(count_of).sum();
    let expected = (FLOOD + 20) as u64 + logged_in;
    assert_eq!(total, expected, "the counts sum to every denied call");
    let of = |ring: &str| -> Vec<&Value> {
        gen.iter()
            .filter(|r| r["resource"].as_str() == Some(ring))
            .collect()
    };
    let flood = of(absent);
    assert!(
        flood.len() <= 2,
        "{FLOOD} identical denials: {} records",
        flood.len()
    );
    assert_eq!(flood.iter().map(|r| count_of(r)).sum::<u64>(), FLOOD as u64);
    let longest = gen
        .iter()
        .filter_map(|r| r["resource"].as_str())
        .map(str::len)
        .max()
        .unwrap_or(0);
    assert!(
        longest <= 1024,
        "a resource of {longest} bytes reached the store"
    );
    // Stated bound: the burst, plus one coalesced record per window per kind (the flood's 2,
    // the huge ring's 2, the refusals without resource 2).
    let bound = BURST + 6;
    assert!(
        gen.len() <= bound,
        "{} records for {expected} denied calls (bound {bound})",
        gen.len()
    );
    // The refused logins: every one recorded, coalesced.
    let logins = records(&env, principal, "C_Login");
    let refusals: Vec<&Value> = logins
        .iter()
        .filter(|r| r["rv"].as_u64() == Some(CKR_DEVICE_MEMORY))
        .collect();
    assert_eq!(refusals.iter().map(|r| count_of(r)).sum::<u64>(), refused);
    assert!(
        refusals.len() <= 2,
        "{} records of refusals",
        refusals.len()
    );
    let store = std::fs::metadata(&env.db).unwrap().len();
    assert!(store < 16 << 20, "the store grew to {store} bytes");
    eprintln!(
        "audit flood: {expected} denied calls -> {} records; store {store} bytes",
        gen.len()
    );
    assert_eq!(
        mine.code, 1,
        "the flooding uid's own operations are refused: {mine:#?}"
    );
    assert!(mine.stderr.contains("audit rate"), "{mine:#?}");

    env.start();
    let verify = env.ctl(&["audit", "verify"]);
    verify.ok();
}

/// Finding 13: 200 parallel wrong service-account keys from one uid get at most the limit of
/// 20 evaluations; every attempt refused while locked out is audited, coalesced.
#[test]
fn parallel_wrong_keys_get_at_most_the_limit_and_locked_attempts_are_audited() {
    let mut env = Env::new();
    env.start();
    let answers: Vec<u64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..200)
            .map(|i| {
                let env = &env;
                scope.spawn(move || {
                    // A well-formed key of an id nobody has.
                    let key = format!("kw{i:06}.AAAAAAAAAAAAAAAAAAAAAA");
                    let hello =
                        Hello::new(ClientKind::Module, None, Some(ServiceAccountKey::new(key)));
                    match Client::connect(&env.client_socket, &hello) {
                        Err(WireError::Refused { rv, .. }) => rv,
                        Ok(_) => panic!("a wrong key was accepted"),
                        Err(e) => panic!("handshake: {e}"),
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wrong = answers
        .iter()
        .filter(|&&rv| rv == CKR_PIN_INCORRECT)
        .count();
    let locked = answers.iter().filter(|&&rv| rv == CKR_PIN_LOCKED).count();
    assert_eq!(wrong + locked, 200, "{answers:?}");
    assert!(
        wrong <= 20,
        "{wrong} keys were evaluated against a limit of 20"
    );
    env.signal_and_wait("TERM");
    let me = format!("unix-uid:{}", super::common::my_uid());
    let recs = records(&env, &me, "auth.serviceAccountKey");
    let sum = |rv: u64| -> (usize, u64) {
        let of: Vec<&Value> = recs
            .iter()
            .filter(|r| r["rv"].as_u64() == Some(rv))
            .collect();
        (of.len(), of.iter().map(|r| count_of(r)).sum())
    };
    let (_, wrong_audited) = sum(CKR_PIN_INCORRECT);
    let (locked_records, locked_audited) = sum(CKR_PIN_LOCKED);
    assert_eq!(
        wrong_audited, wrong as u64,
        "every evaluated key is audited"
    );
    assert_eq!(
        locked_audited, locked as u64,
        "every attempt refused while locked out is audited"
    );
    assert!(
        locked_records <= 2,
        "{locked} locked attempts: {locked_records} records (coalesced: at most 2)"
    );
}

/// Child role of the credentials test: the module with a credentials file of the mode the
/// parent set; reports what `C_OpenSession` gave, twice.
fn credentials_child() {
    use super::common::module::{child_settings, Raw, CKR_OK};
    let raw = Raw::load();
    assert_eq!(raw.initialize(Some(&child_settings())), CKR_OK);
    let slot = ring_identity(RING).0 .0 as super::common::module::Ulong;
    for i in 0..2 {
        let (rv, _) = raw.open_session(slot);
        report(&format!("open{i}"), rv);
    }
    assert_eq!(raw.finalize(), CKR_OK);
}

/// Finding 13: the module refuses a credentials file its group or others may read (as
/// keywardctl does), with `CKR_FUNCTION_FAILED` (not `CKR_TOKEN_NOT_PRESENT`, which would
/// look like a dead keywardd), said once on stderr; the same file at 0600 works.
#[test]
fn the_module_refuses_a_credentials_file_others_can_read() {
    if child_role().as_deref() == Some("credentials") {
        credentials_child();
        return;
    }
    let mut env = Env::new();
    let key = env.service_account_offline("web");
    env.start();
    env.web_ring();
    env.bind(RING, "roles/kms.viewer", "serviceAccount:web@payments");
    let dir = env.dir();
    let cred = dir.join("web.key");
    let settings = Settings::new(&env.client_socket, &dir.join("module.toml"))
        .tokens(RING)
        .credentials(&cred, &key);
    let test = "audit_files::the_module_refuses_a_credentials_file_others_can_read";

    std::fs::set_permissions(&cred, std::fs::Permissions::from_mode(0o644)).unwrap();
    let open = run_child(test, "credentials", &settings, &[]);
    assert_eq!(open.code, 0, "{open:#?}");
    for i in 0..2 {
        assert_eq!(
            open.value(&format!("open{i}")),
            CKR_FUNCTION_FAILED.to_string(),
            "a 0644 credentials file: {open:#?}"
        );
    }
    assert_eq!(
        open.stderr.matches("chmod 600").count(),
        1,
        "said once on stderr: {open:#?}"
    );
    assert!(!open.stderr.contains(&key), "the key is never printed");

    std::fs::set_permissions(&cred, std::fs::Permissions::from_mode(0o600)).unwrap();
    let private = run_child(test, "credentials", &settings, &[]);
    assert_eq!(private.code, 0, "{private:#?}");
    assert_eq!(private.value("open0"), "0", "{private:#?}");
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Finding 9: `keywardctl init` creates the store 0600 under the default umask; keywardd sets
/// the store, `-wal` and `-shm` to 0600 at start; another uid cannot read them; keywardd
/// creates a missing socket directory 0755 and refuses one every user may write.
#[test]
fn the_store_is_private_and_the_socket_directory_is_not_writable_by_others() {
    let mut env = Env::bare();
    // keywardctl runs with this process's umask (022 by default, as under a login shell).
    env.offline(&["init", "--org", "acme", "--admin", ADMIN])
        .ok();
    assert_eq!(mode(&env.db), 0o600, "keywardctl init made the store");

    // A store opened up by hand is private again once keywardd starts.
    std::fs::set_permissions(&env.db, std::fs::Permissions::from_mode(0o644)).unwrap();
    // Sockets in a directory that does not exist yet: keywardd makes it 0755.
    let run = env.dir().join("run");
    env.admin_socket = run.join("admin.sock");
    env.client_socket = run.join("client.sock");
    env.write_config(
        &format!("pin_file = \"{}\"", env.pin_file.display()),
        super::common::daemon::LABEL,
    );
    open_for_others(env.dir());
    env.start();
    for suffix in ["", "-wal", "-shm"] {
        let f = std::path::PathBuf::from(format!("{}{suffix}", env.db.display()));
        if f.exists() {
            assert_eq!(mode(&f), 0o600, "{} while keywardd runs", f.display());
        } else {
            assert_eq!(suffix, "-shm", "{} missing", f.display());
        }
    }
    assert_eq!(mode(&run), 0o755, "the socket directory keywardd made");
    let read = as_other(Command::new("cat").arg(&env.db))
        .output()
        .expect("cat");
    assert!(!read.status.success(), "another uid read the store");
    env.signal_and_wait("TERM");

    // A socket directory every user may write (no sticky bit) is refused.
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = env.run_daemon_to_end();
    assert_ne!(out.code, 0, "{out:#?}");
    assert!(
        out.stderr.contains("may be written by every user"),
        "{out:#?}"
    );
}

/// Finding 3 (caps on client strings that reach the store): a key's `CKA_LABEL` or `CKA_ID`
/// longer than 1,024 bytes is refused with `CKR_ATTRIBUTE_VALUE_INVALID` at creation and at
/// `C_SetAttributeValue` (it is stored byte-exact and would reach every later record and
/// listing); one of 1,024 bytes is kept.
#[test]
fn a_label_or_id_longer_than_the_cap_does_not_reach_the_store() {
    const CKA_LABEL: u64 = 0x3;
    const CKA_ID: u64 = 0x102;
    const CKR_ATTRIBUTE_VALUE_INVALID: u64 = 0x13;
    let mut env = Env::new();
    let maker = env.service_account_offline("maker");
    env.start();
    env.web_ring();
    env.bind(RING, "roles/kms.admin", "serviceAccount:maker@payments");
    let mut c = raw_client(&env, &maker);
    call(&mut c, Pkcs11Request::ListSlots { configured: vec![] }).expect("slot list");
    let session = open_session(&mut c, RING);
    login(&mut c, RING).expect("C_Login");
    let gen = |c: &mut Client, extra: Vec<Attribute>| {
        let mut template = vec![
            Attribute {
                ty: CKA_VALUE_LEN,
                value: AttrValue::Ulong(32),
            },
            Attribute {
                ty: CKA_TOKEN,
                value: AttrValue::Bool(true),
            },
        ];
        template.extend(extra);
        call(
            c,
            Pkcs11Request::GenerateKey {
                session,
                mechanism: Mechanism {
                    ty: CKM_AES_KEY_GEN,
                    params: MechParams::None,
                },
                template,
            },
        )
    };
    let bytes = |ty: u64, n: usize| Attribute {
        ty,
        value: AttrValue::Bytes(keyward_wire::pkcs11::Blob::new(vec![b'a'; n])),
    };
    for ty in [CKA_LABEL, CKA_ID] {
        assert_eq!(
            gen(&mut c, vec![bytes(ty, 1 << 20)]),
            Err(CKR_ATTRIBUTE_VALUE_INVALID),
            "a 1 MB attribute {ty:#x}"
        );
    }
    let kept = match gen(&mut c, vec![bytes(CKA_LABEL, 1024), bytes(CKA_ID, 1024)]) {
        Ok(Pkcs11Response::Object(h)) => h,
        other => panic!("a 1,024-byte label and id: {other:?}"),
    };
    assert_eq!(
        call(
            &mut c,
            Pkcs11Request::SetAttributeValue {
                session,
                object: kept,
                template: vec![bytes(CKA_LABEL, 1025)],
            }
        ),
        Err(CKR_ATTRIBUTE_VALUE_INVALID)
    );
    drop(c);
    env.signal_and_wait("TERM");
    let store = std::fs::metadata(&env.db).unwrap().len();
    assert!(store < 1 << 20, "the store grew to {store} bytes");
}

/// Finding 3 (caps on client strings that reach the store, admin side): a service account's
/// display name or a role's title over 1,024 bytes is refused, naming the cap; at the cap it
/// is kept.
#[test]
fn a_long_display_name_or_title_does_not_reach_the_store() {
    let ctl = super::common::Ctl::with_payments();
    let long = "n".repeat(4096);
    let out = ctl.admin(&[
        "sa",
        "create",
        "--project",
        "payments",
        "--display-name",
        &long,
        "a",
    ]);
    out.failed();
    assert!(out.stderr.contains("at most 1024"), "{out:#?}");
    let out = ctl.admin(&[
        "role",
        "create",
        "--org",
        "acme",
        "--title",
        &long,
        "--permissions",
        "kms.cryptoKeys.get",
        "longTitle",
    ]);
    out.failed();
    assert!(out.stderr.contains("at most 1024"), "{out:#?}");
    let at_cap = "n".repeat(1024);
    ctl.admin(&[
        "sa",
        "create",
        "--project",
        "payments",
        "--display-name",
        &at_cap,
        "b",
    ])
    .ok();
    let store = std::fs::metadata(ctl.db()).unwrap().len();
    assert!(store < 1 << 20, "the store grew to {store} bytes");
}
