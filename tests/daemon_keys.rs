//! Issue 4 end to end: a real SoftHSM2 token in a temporary directory, a real keywardd on
//! temporary sockets, keywardctl over the admin socket. One key of every algorithm SoftHSM2
//! serves, rotation, primary, disable, scheduled destruction, restore, destruction after the
//! grace period (keywardd's test clock); after each step the token's objects, listed by this
//! test through cryptoki directly against SoftHSM2, match the store's object map.

mod common;

use common::daemon::{Env, LABEL};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use keyward_wire::keys::Algorithm;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const RING: &str = "projects/payments/keyRings/web";
const T0: i64 = 1_795_000_000;

/// SoftHSM2, loaded in this process with the test token's configuration.
struct Direct {
    pkcs11: Pkcs11,
    slot: cryptoki::slot::Slot,
    pin: String,
}

/// One token object as read through cryptoki.
#[derive(Debug)]
struct Obj {
    id: Vec<u8>,
    class: ObjectClass,
    label: Vec<u8>,
    sensitive: Option<bool>,
    extractable: Option<bool>,
}

impl Direct {
    fn open(env: &Env) -> Direct {
        // The only test of this binary: nothing else reads the environment.
        std::env::set_var("SOFTHSM2_CONF", &env.softhsm_conf);
        let pkcs11 = Pkcs11::new("/usr/lib/softhsm/libsofthsm2.so").expect("load SoftHSM2");
        pkcs11
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .unwrap();
        let slot = pkcs11
            .get_slots_with_initialized_token()
            .unwrap()
            .into_iter()
            .find(|s| pkcs11.get_token_info(*s).unwrap().label() == LABEL)
            .expect("the test token");
        let pin = std::fs::read_to_string(&env.pin_file).unwrap();
        Direct { pkcs11, slot, pin }
    }

    /// Every token object (a fresh session each time, so objects keywardd made since show).
    fn objects(&self) -> Vec<Obj> {
        let s = self.pkcs11.open_ro_session(self.slot).unwrap();
        s.login(UserType::User, Some(&AuthPin::new(self.pin.clone().into())))
            .unwrap();
        let mut out = Vec::new();
        for h in s.find_objects(&[Attribute::Token(true)]).unwrap() {
            let mut o = Obj {
                id: vec![],
                class: ObjectClass::DATA,
                label: vec![],
                sensitive: None,
                extractable: None,
            };
            for a in s
                .get_attributes(
                    h,
                    &[
                        AttributeType::Id,
                        AttributeType::Class,
                        AttributeType::Label,
                    ],
                )
                .unwrap()
            {
                match a {
                    Attribute::Id(v) => o.id = v,
                    Attribute::Class(c) => o.class = c,
                    Attribute::Label(l) => o.label = l,
                    _ => {}
                }
            }
            if o.class == ObjectClass::PRIVATE_KEY || o.class == ObjectClass::SECRET_KEY {
                for a in s
                    .get_attributes(h, &[AttributeType::Sensitive, AttributeType::Extractable])
                    .unwrap()
                {
                    match a {
                        Attribute::Sensitive(b) => o.sensitive = Some(b),
                        Attribute::Extractable(b) => o.extractable = Some(b),
                        _ => {}
                    }
                }
            }
            out.push(o);
        }
        let _ = s.logout();
        out
    }
}

/// The store's object map: CKA_IDs of versions not destroyed (read-only, beside keywardd).
fn store_ids(env: &Env) -> BTreeSet<Vec<u8>> {
    let conn =
        rusqlite::Connection::open_with_flags(&env.db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    keyward::store::keys::object_map(&conn)
        .unwrap()
        .into_iter()
        .filter(|m| m.state != keyward::store::keys::VersionState::Destroyed)
        .map(|m| m.token_id)
        .collect()
}

fn assert_match(env: &Env, direct: &Direct, step: &str) {
    let objects = direct.objects();
    let token: BTreeSet<Vec<u8>> = objects
        .iter()
        .filter(|o| !o.label.starts_with(b"keyward-"))
        .map(|o| o.id.clone())
        .collect();
    assert_eq!(
        token,
        store_ids(env),
        "{step}: the token's objects differ from the store"
    );
    for o in &objects {
        if o.class == ObjectClass::PRIVATE_KEY || o.class == ObjectClass::SECRET_KEY {
            assert_eq!(o.sensitive, Some(true), "{step}: {o:?}");
        }
    }
}

fn state(env: &Env, version: &str) -> String {
    let out = env.ctl(&["--json", "version", "get", version]);
    out.ok();
    out.json()["state"].as_str().unwrap().to_string()
}

fn primary(env: &Env, key: &str) -> u64 {
    let out = env.ctl(&["--json", "key", "get", key]);
    out.ok();
    out.json()["primaryVersion"].as_u64().unwrap()
}

#[test]
fn key_lifecycle_through_keywardd() {
    let mut env = Env::new();
    env.set_clock(T0);
    env.start();
    let direct = Direct::open(&env);
    env.payments_ring();
    assert_match(&env, &direct, "empty");

    for alg in Algorithm::ALL {
        let id = alg.as_str().to_lowercase().replace('_', "-");
        let out = env.ctl(&[
            "key",
            "create",
            "--keyring",
            RING,
            "--purpose",
            alg.purpose().as_str(),
            "--algorithm",
            alg.as_str(),
            &id,
        ]);
        if alg.as_str().starts_with("RSA_DECRYPT_OAEP") && alg.as_str().ends_with("SHA256") {
            out.failed();
            assert!(
                out.stderr.contains("lacks CKM_RSA_PKCS_OAEP with SHA-256"),
                "{out:#?}"
            );
        } else {
            out.ok();
        }
    }
    assert_match(&env, &direct, "one key of every algorithm");
    assert_eq!(store_ids(&env).len(), 14);
    for o in direct.objects() {
        let secret = o.class == ObjectClass::PRIVATE_KEY || o.class == ObjectClass::SECRET_KEY;
        if secret && !o.label.starts_with(b"keyward-") {
            assert_eq!(o.extractable, Some(false), "{o:?}");
        }
    }

    // A principal without kms.cryptoKeys.create is refused through the socket, and audited.
    env.ctl(&["sa", "create", "--project", "payments", "viewer"])
        .ok();
    let out = env.ctl(&["sa", "key", "create", "viewer@payments"]);
    out.ok();
    let viewer = out
        .stdout
        .lines()
        .find(|l| l.starts_with("kw"))
        .expect("a key")
        .to_string();
    env.ctl(&[
        "iam",
        "bind",
        "--resource",
        RING,
        "--role",
        "roles/kms.viewer",
        "--member",
        "serviceAccount:viewer@payments",
    ])
    .ok();
    let before = direct.objects().len();
    let out = env.ctl_with_key(
        &viewer,
        &[
            "key",
            "create",
            "--keyring",
            RING,
            "--purpose",
            "MAC",
            "--algorithm",
            "HMAC_SHA256",
            "sneaky",
        ],
    );
    out.failed();
    assert!(
        out.stderr.contains("lacks kms.cryptoKeys.create"),
        "{out:#?}"
    );
    assert_eq!(
        before,
        direct.objects().len(),
        "a refused create reached the token"
    );
    let q = env.ctl(&[
        "--json",
        "audit",
        "query",
        "--principal",
        "serviceAccount:viewer@payments",
        "--action",
        "key.create",
        "--result",
        "denied",
    ]);
    q.ok();
    assert_eq!(q.json_lines().len(), 1, "{q:#?}");

    // Rotation and primary.
    let aes = format!("{RING}/cryptoKeys/aes-256-gcm");
    let ec = format!("{RING}/cryptoKeys/ec-sign-p384-sha384");
    env.ctl(&["key", "rotate", &aes]).ok();
    assert_eq!(primary(&env, &aes), 2);
    env.ctl(&["key", "rotate", &ec]).ok();
    assert_eq!(primary(&env, &ec), 1);
    env.ctl(&["key", "set-primary", &ec, "2"]).ok();
    assert_eq!(primary(&env, &ec), 2);
    assert_match(&env, &direct, "rotated");

    // Disable, schedule destruction, restore, destroy after the grace period.
    let v1 = format!("{aes}/cryptoKeyVersions/1");
    env.ctl(&["version", "disable", &v1]).ok();
    assert_eq!(state(&env, &v1), "DISABLED");
    env.ctl(&["version", "destroy", &v1]).ok();
    assert_eq!(state(&env, &v1), "DESTROY_SCHEDULED");
    assert_match(&env, &direct, "scheduled");
    env.ctl(&["version", "restore", &v1]).ok();
    assert_eq!(state(&env, &v1), "DISABLED");
    env.ctl(&["version", "destroy", "--grace", "1d", &v1]).ok();
    env.set_clock(T0 + 86_400 + 60);
    let deadline = Instant::now() + Duration::from_secs(20);
    while state(&env, &v1) != "DESTROYED" {
        assert!(
            Instant::now() < deadline,
            "not destroyed after the grace: {}",
            env.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_match(&env, &direct, "destroyed after the grace period");
    let log = env.ctl(&["--json", "audit", "query", "--action", "version.destroyed"]);
    log.ok();
    assert_eq!(log.json_lines().len(), 1);
    assert!(
        !env.daemon_log()
            .contains(&std::fs::read_to_string(&env.pin_file).unwrap()),
        "the PIN is in the log"
    );
}
