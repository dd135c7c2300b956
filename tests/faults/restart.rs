//! Issue 15 item 1: a process keeps working across a keywardd kill -9 and restart, for both
//! identity styles (a credentials file; a key given as PIN with configured rings): the same
//! process opens a new session, logs in again if need be (the module replays its login), and
//! signs and verifies with the object handles it found before the restart (keys and a
//! certificate); a handle of a key it no longer sees is invalid after the restart.

use crate::common::daemon::Env;
use crate::common::module::*;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use std::time::{Duration, Instant};

const RING: &str = "projects/payments/keyRings/web";

/// keywardd with ring web, key ec and service account a@payments bound signerVerifier on
/// it. Returns a's key.
fn world() -> (Env, String) {
    let mut env = Env::new();
    let a = env.service_account_offline("a");
    let certs = env.service_account_offline("certs");
    env.start();
    env.web_ring();
    env.create_key(RING, "ec", "ASYMMETRIC_SIGN", "EC_SIGN_P256_SHA256");
    env.ctl(&[
        "iam",
        "bind",
        "--resource",
        &format!("{RING}/cryptoKeys/ec"),
        "--role",
        "roles/kms.signerVerifier",
        "--member",
        "serviceAccount:a@payments",
    ])
    .ok();
    // A self-signed certificate for it (made by account certs, which signs with the key).
    for role in ["roles/kms.admin", "roles/kms.signerVerifier"] {
        env.bind(
            &format!("{RING}/cryptoKeys/ec"),
            role,
            "serviceAccount:certs@payments",
        );
    }
    env.ctl_client_with_key(
        &certs,
        &[
            "key",
            "cert",
            "create",
            "--key",
            &format!("{RING}/cryptoKeys/ec"),
            "--self-signed",
            "--subject",
            "CN=ec",
        ],
    )
    .ok();
    (env, a)
}

/// The certificate's `CKA_VALUE` through `handle`.
fn cert_value(s: &Session, handle: ObjectHandle) -> Vec<u8> {
    match s
        .get_attributes(handle, &[cryptoki::object::AttributeType::Value])
        .unwrap_or_else(|e| panic!("the certificate's value: {e}"))
        .pop()
    {
        Some(Attribute::Value(v)) => v,
        other => panic!("no CKA_VALUE: {other:?}"),
    }
}

fn one(s: &Session, class: ObjectClass) -> ObjectHandle {
    let found = s
        .find_objects(&[Attribute::Class(class), Attribute::Label(b"ec".to_vec())])
        .unwrap();
    assert_eq!(found.len(), 1, "one {class:?} labelled ec: {found:?}");
    found[0]
}

/// Signs with the handles found before a kill -9 and restart of keywardd; `key_as_pin`:
/// the process logs in with a's key (configured ring, no credentials file).
fn survives_a_restart(key_as_pin: bool) {
    let excl = exclusive();
    let (mut env, a) = world();
    if key_as_pin {
        // This process's uid maps to no principal: before login it sees nothing, so it
        // reaches the ring only because the ring is configured.
        env.ctl(&["iam", "unmap-uid", &crate::common::my_uid().to_string()])
            .ok();
    }
    let settings = Settings::new(&env.client_socket, &env.dir().join("empty.toml"));
    let settings = if key_as_pin {
        settings.tokens(RING)
    } else {
        settings.credentials(&env.dir().join("creds"), &a)
    };
    let p11 = cryptoki(&settings);
    let slot = ring_slot(&p11, RING);
    let login = |s: &Session| {
        let pin = key_as_pin.then(|| AuthPin::new(a.clone().into()));
        {
            match s.login(UserType::User, pin.as_ref()) {
                Ok(()) => {}
                Err(cryptoki::error::Error::Pkcs11(
                    cryptoki::error::RvError::UserAlreadyLoggedIn,
                    _,
                )) => {}
                Err(e) => panic!("C_Login: {e}"),
            }
        }
    };
    let s = p11.open_rw_session(slot).unwrap();
    login(&s);
    let private = one(&s, ObjectClass::PRIVATE_KEY);
    let public = one(&s, ObjectClass::PUBLIC_KEY);
    let cert = one(&s, ObjectClass::CERTIFICATE);
    let der = cert_value(&s, cert);
    let data = b"before the restart".to_vec();
    let sig = s.sign(&Mechanism::EcdsaSha256, private, &data).unwrap();
    s.verify(&Mechanism::EcdsaSha256, public, &data, &sig)
        .unwrap();

    assert!(!env.signal_and_wait("KILL").success());
    // While keywardd is down: no new session (the token is absent).
    assert_eq!(
        rv(p11.open_rw_session(slot)),
        cryptoki::error::RvError::TokenNotPresent
    );
    env.start();
    let ready = Instant::now();

    // The same process, a new session; the handles found before.
    let mut last = None;
    let mut s2 = None;
    for _ in 0..200 {
        match p11.open_rw_session(slot) {
            Ok(s) => {
                s2 = Some(s);
                break;
            }
            Err(e) => last = Some(e.to_string()),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let s2 = s2.unwrap_or_else(|| panic!("no session after the restart: {last:?}"));
    login(&s2);
    let data = b"after the restart".to_vec();
    let sig = s2
        .sign(&Mechanism::EcdsaSha256, private, &data)
        .unwrap_or_else(|e| panic!("signing with the handle found before the restart: {e}"));
    let recovered = ready.elapsed();
    s2.verify(&Mechanism::EcdsaSha256, public, &data, &sig)
        .unwrap_or_else(|e| panic!("verifying with the handle found before the restart: {e}"));
    assert_eq!(
        cert_value(&s2, cert),
        der,
        "the certificate through the handle found before the restart"
    );
    // The handles are the ones a find gives now.
    assert_eq!(one(&s2, ObjectClass::CERTIFICATE), cert);
    assert_eq!(one(&s2, ObjectClass::PRIVATE_KEY), private);
    assert_eq!(one(&s2, ObjectClass::PUBLIC_KEY), public);
    eprintln!(
        "restart ({}): signed with the old handle {} ms after keywardd was ready",
        if key_as_pin {
            "key as PIN"
        } else {
            "credentials file"
        },
        recovered.as_millis()
    );
    drop(s2);
    drop(s);
    drop(p11);
    drop(excl);
}

#[test]
fn key_as_pin_client_recovers_from_a_restart_with_its_handles() {
    survives_a_restart(true);
}

#[test]
fn credentials_client_recovers_from_a_restart_with_its_handles() {
    survives_a_restart(false);
}

/// A handle found before the restart names nothing once the principal no longer sees its
/// key: the binding is taken away while keywardd is down; after the restart the old handles
/// are `CKR_KEY_HANDLE_INVALID` / `CKR_OBJECT_HANDLE_INVALID`, and a find returns nothing.
#[test]
fn a_handle_of_a_key_no_longer_seen_after_a_restart_is_invalid() {
    let excl = exclusive();
    let (mut env, a) = world();
    // A second key a sees through a ring-wide binding that stays.
    env.create_key(RING, "other", "ASYMMETRIC_SIGN", "EC_SIGN_P256_SHA256");
    env.ctl(&[
        "iam",
        "bind",
        "--resource",
        &format!("{RING}/cryptoKeys/other"),
        "--role",
        "roles/kms.signerVerifier",
        "--member",
        "serviceAccount:a@payments",
    ])
    .ok();
    let settings = Settings::new(&env.client_socket, &env.dir().join("empty.toml"))
        .credentials(&env.dir().join("creds"), &a);
    let p11 = cryptoki(&settings);
    let slot = ring_slot(&p11, RING);
    let s = p11.open_rw_session(slot).unwrap();
    s.login(UserType::User, None).unwrap();
    let private = one(&s, ObjectClass::PRIVATE_KEY);
    let public = one(&s, ObjectClass::PUBLIC_KEY);
    s.sign(&Mechanism::EcdsaSha256, private, b"before").unwrap();

    assert!(!env.signal_and_wait("KILL").success());
    env.offline(&[
        "--as",
        crate::common::ADMIN,
        "iam",
        "unbind",
        "--resource",
        &format!("{RING}/cryptoKeys/ec"),
        "--role",
        "roles/kms.signerVerifier",
        "--member",
        "serviceAccount:a@payments",
    ])
    .ok();
    env.start();
    let mut s2 = None;
    for _ in 0..200 {
        if let Ok(s) = p11.open_rw_session(slot) {
            s2 = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let s2 = s2.expect("a session after the restart");
    match s2.login(UserType::User, None) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {
        }
        Err(e) => panic!("C_Login: {e}"),
    }
    assert_eq!(
        rv(s2.sign(&Mechanism::EcdsaSha256, private, b"after")),
        cryptoki::error::RvError::KeyHandleInvalid,
        "the old handle of a key a no longer sees"
    );
    assert_eq!(
        rv(s2.get_attributes(public, &[cryptoki::object::AttributeType::Label])),
        cryptoki::error::RvError::ObjectHandleInvalid,
        "the old handle of a public key a no longer sees"
    );
    assert!(s2
        .find_objects(&[Attribute::Label(b"ec".to_vec())])
        .unwrap()
        .is_empty());
    // The key it still sees signs; its handle is not one of the old ones.
    let other = s2
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(b"other".to_vec()),
        ])
        .unwrap();
    assert_eq!(other.len(), 1);
    assert!(other[0] != private && other[0] != public);
    s2.sign(&Mechanism::EcdsaSha256, other[0], b"after")
        .unwrap();
    drop(s2);
    drop(s);
    drop(p11);
    drop(excl);
}
