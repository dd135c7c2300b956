//! Isolation through the built `libkeyward_pkcs11.so` (issue 5 acceptance 3): a principal of
//! project A sees no token and no object of project B (even with B's ring configured); an
//! object handle of one module instance (process) is invalid in another; C_CopyObject of a
//! Keyward key is CKR_ACTION_PROHIBITED and C_DeriveKey from one CKR_MECHANISM_INVALID.

mod common;

use common::daemon::Env;
use common::module::*;
use cryptoki::error::RvError;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use std::time::Instant;

const A_RING: &str = "projects/payments/keyRings/web";
const B_RING: &str = "projects/billing/keyRings/vault";
const CKM_ECDH1_DERIVE: Ulong = 0x1050;
const CKM_SHA256_KEY_DERIVATION: Ulong = 0x393;

fn slot_id(ring: &str) -> Ulong {
    keyward_wire::pkcs11::ring_identity(ring).0 .0 as Ulong
}

/// Project A (payments, ring web, key ec, account a@payments bound signerVerifier) and
/// project B (billing, ring vault, key bec, account b@billing bound signerVerifier).
/// Returns the keys of a and b.
fn world() -> (Env, String, String) {
    let mut env = Env::new();
    let a = env.service_account_offline("a");
    for args in [
        &[
            "project",
            "create",
            "--parent",
            "organizations/acme",
            "billing",
        ][..],
        &["sa", "create", "--project", "billing", "b"][..],
    ] {
        let mut all = vec!["--as", common::ADMIN];
        all.extend_from_slice(args);
        env.offline(&all).ok();
    }
    let out = env.offline(&["--as", common::ADMIN, "sa", "key", "create", "b@billing"]);
    out.ok();
    let b = out
        .stdout
        .lines()
        .find(|l| l.starts_with("kw"))
        .expect("a key")
        .to_string();
    env.start();
    for (parent, ring, key, member) in [
        (
            "projects/payments",
            A_RING,
            "ec",
            "serviceAccount:a@payments",
        ),
        (
            "projects/billing",
            B_RING,
            "bec",
            "serviceAccount:b@billing",
        ),
    ] {
        let id = ring.rsplit('/').next().unwrap();
        env.ctl(&["keyring", "create", "--parent", parent, id]).ok();
        env.create_key(ring, key, "ASYMMETRIC_SIGN", "EC_SIGN_P256_SHA256");
        env.ctl(&[
            "iam",
            "bind",
            "--resource",
            &format!("{ring}/cryptoKeys/{key}"),
            "--role",
            "roles/kms.signerVerifier",
            "--member",
            member,
        ])
        .ok();
    }
    (env, a, b)
}

#[test]
fn a_principal_of_project_a_sees_nothing_of_project_b() {
    let t0 = Instant::now();
    let excl = exclusive();
    let (env, a, b) = world();
    let dir = env.dir();
    // B's ring is even configured: it is listed (as configured), but shows nothing.
    let settings = Settings::new(&env.client_socket, &dir.join("module.toml"))
        .tokens(&format!("{B_RING}=Vault"))
        .credentials(&dir.join("a.key"), &a);
    let p11 = cryptoki(&settings);
    let mut ids: Vec<u64> = p11
        .get_all_slots()
        .unwrap()
        .iter()
        .map(|s| s.id())
        .collect();
    ids.sort_unstable();
    let mut want = vec![slot_id(A_RING) as u64, slot_id(B_RING) as u64];
    want.sort_unstable();
    assert_eq!(ids, want, "A's ring and the configured one, nothing else");
    let slots = p11.get_all_slots().unwrap();
    let b_slot = *slots
        .iter()
        .find(|s| s.id() == slot_id(B_RING) as u64)
        .unwrap();
    let a_slot = *slots
        .iter()
        .find(|s| s.id() == slot_id(A_RING) as u64)
        .unwrap();
    assert_eq!(p11.get_token_info(b_slot).unwrap().label(), "Vault");
    let s = p11.open_rw_session(b_slot).unwrap();
    assert!(s.find_objects(&[]).unwrap().is_empty());
    s.login(UserType::User, None).unwrap();
    assert!(s.find_objects(&[]).unwrap().is_empty());
    assert!(s
        .find_objects(&[Attribute::Label(b"bec".to_vec())])
        .unwrap()
        .is_empty());
    s.logout().unwrap();
    // A's key as PIN on B's slot: a valid login, and still nothing.
    s.login(UserType::User, Some(&AuthPin::from(a.clone())))
        .unwrap();
    assert!(s.find_objects(&[]).unwrap().is_empty());
    let sa = p11.open_rw_session(a_slot).unwrap();
    assert_eq!(
        sa.find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
            .unwrap()
            .len(),
        0,
        "login is per slot: A's slot is not logged in"
    );
    sa.login(UserType::User, None).unwrap();
    let mine = sa.find_objects(&[]).unwrap();
    assert_eq!(mine.len(), 2, "A's ec pair only");
    drop(sa);
    drop(s);
    p11.finalize().unwrap();

    // The same from B's side, in a fresh instance of this process: B sees its ring and
    // none of A's.
    let settings = Settings::new(&env.client_socket, &dir.join("module.toml"))
        .credentials(&dir.join("b.key"), &b);
    let p11 = cryptoki(&settings);
    let ids: Vec<u64> = p11
        .get_all_slots()
        .unwrap()
        .iter()
        .map(|s| s.id())
        .collect();
    assert_eq!(ids, vec![slot_id(B_RING) as u64]);
    let s = p11
        .open_rw_session(p11.get_all_slots().unwrap()[0])
        .unwrap();
    s.login(UserType::User, None).unwrap();
    let labels: Vec<Vec<u8>> = s
        .find_objects(&[])
        .unwrap()
        .into_iter()
        .map(
            |o| match s.get_attributes(o, &[AttributeType::Label]).unwrap().pop() {
                Some(Attribute::Label(l)) => l,
                other => panic!("{other:?}"),
            },
        )
        .collect();
    assert_eq!(labels, vec![b"bec".to_vec(), b"bec".to_vec()]);
    // A's ring is not a slot of B's instance: CKR_SLOT_ID_INVALID.
    let raw = excl.raw();
    assert_eq!(
        raw.open_session(slot_id(A_RING)).0,
        0x3 /* CKR_SLOT_ID_INVALID */
    );
    drop(s);
    p11.finalize().unwrap();
    drop(excl);
    eprintln!("project isolation: {:?}", t0.elapsed());
}

/// Child role: another module instance (another process) finds A's ec private key and
/// reports its handle and the public half's.
fn handle_child_role() {
    let raw = Raw::load();
    assert_eq!(raw.initialize(Some(&child_settings())), CKR_OK);
    let (rv, h) = raw.open_session(slot_id(A_RING));
    assert_eq!(rv, CKR_OK);
    assert_eq!(raw.login(h, In::Null(0)), CKR_OK);
    for (name, class) in [("priv", CKO_PRIVATE_KEY), ("pub", CKO_PUBLIC_KEY)] {
        let found = raw.find(
            h,
            &[(CKA_CLASS, ulong_bytes(class)), (CKA_LABEL, b"ec".to_vec())],
        );
        assert_eq!(found.len(), 1);
        report(name, found[0]);
    }
    // The handle works here.
    let priv_h = raw.find(h, &[(CKA_CLASS, ulong_bytes(CKO_PRIVATE_KEY))])[0];
    raw_sign(&raw, h, &Mech::Plain(CKM_ECDSA_SHA256), priv_h, b"child");
    assert_eq!(raw.finalize(), CKR_OK);
}

#[test]
fn an_object_handle_of_one_instance_is_invalid_in_another() {
    if child_role().as_deref() == Some("handles") {
        handle_child_role();
        return;
    }
    let t0 = Instant::now();
    let excl = exclusive();
    let raw = excl.raw();
    let (env, a, _) = world();
    let dir = env.dir();
    let settings = Settings::new(&env.client_socket, &dir.join("module.toml"))
        .credentials(&dir.join("a.key"), &a);
    let out = run_child(
        "an_object_handle_of_one_instance_is_invalid_in_another",
        "handles",
        &settings,
        &[],
    );
    assert_eq!(out.code, 0, "{out:#?}");
    let their_priv: Ulong = out.value("priv").parse().unwrap();
    let their_pub: Ulong = out.value("pub").parse().unwrap();

    // This process: the same principal, logged in, but its own instance.
    assert_eq!(raw.initialize(Some(&settings)), CKR_OK);
    let (rv, h) = raw.open_session(slot_id(A_RING));
    assert_eq!(rv, CKR_OK);
    assert_eq!(raw.login(h, In::Null(0)), CKR_OK);
    let ecdsa = Mech::Plain(CKM_ECDSA_SHA256);
    assert_eq!(
        raw.sign_init(h, Some(&ecdsa), their_priv),
        CKR_KEY_HANDLE_INVALID
    );
    assert_eq!(
        raw.attribute(h, their_pub, CKA_LABEL, Some(16)).0,
        CKR_OBJECT_HANDLE_INVALID
    );
    assert_eq!(raw.copy_object(h, their_priv).0, CKR_OBJECT_HANDLE_INVALID);
    // Found here, the same objects get this instance's own handles.
    let mine = raw.find(h, &[(CKA_LABEL, b"ec".to_vec())]);
    assert_eq!(mine.len(), 2);
    assert!(
        !mine.contains(&their_priv) && !mine.contains(&their_pub),
        "{mine:?}"
    );
    // And a handle of this instance means nothing to the next instance of this process.
    let my_priv = raw.find(h, &[(CKA_CLASS, ulong_bytes(CKO_PRIVATE_KEY))])[0];
    raw_sign(raw, h, &ecdsa, my_priv, b"mine");
    assert_eq!(raw.finalize(), CKR_OK);
    assert_eq!(raw.initialize(Some(&settings)), CKR_OK);
    let (rv, h) = raw.open_session(slot_id(A_RING));
    assert_eq!(rv, CKR_OK);
    assert_eq!(raw.login(h, In::Null(0)), CKR_OK);
    assert_eq!(
        raw.sign_init(h, Some(&ecdsa), my_priv),
        CKR_KEY_HANDLE_INVALID
    );
    assert_eq!(raw.finalize(), CKR_OK);
    drop(excl);
    eprintln!("handles per instance: {:?}", t0.elapsed());
}

#[test]
fn copy_and_derive_of_a_keyward_key_are_refused() {
    let t0 = Instant::now();
    let excl = exclusive();
    let raw = excl.raw();
    let (env, a, _) = world();
    let dir = env.dir();
    let settings = Settings::new(&env.client_socket, &dir.join("module.toml"))
        .credentials(&dir.join("a.key"), &a);
    let p11 = cryptoki(&settings);
    let slot = p11.get_all_slots().unwrap()[0];
    let s = p11.open_rw_session(slot).unwrap();
    s.login(UserType::User, None).unwrap();
    let ec = s
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(b"ec".to_vec()),
        ])
        .unwrap()[0];
    let ec_pub = s
        .find_objects(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Label(b"ec".to_vec()),
        ])
        .unwrap()[0];
    // The key says so: not copyable, not derivable.
    let attrs = s
        .get_attributes(ec, &[AttributeType::Copyable, AttributeType::Derive])
        .unwrap();
    assert!(attrs.contains(&Attribute::Copyable(false)), "{attrs:?}");
    assert!(attrs.contains(&Attribute::Derive(false)), "{attrs:?}");
    // C_CopyObject: CKR_ACTION_PROHIBITED, through cryptoki and raw, either half.
    assert_eq!(
        rv(s.copy_object(ec, &[Attribute::Token(false)])),
        RvError::ActionProhibited
    );
    let h = s.handle();
    assert_eq!(raw.copy_object(h, ec.handle()), (CKR_ACTION_PROHIBITED, 0));
    assert_eq!(raw.copy_object(h, ec_pub.handle()).0, CKR_ACTION_PROHIBITED);
    // C_DeriveKey: CKR_MECHANISM_INVALID, with ECDH (a 40-byte CK_ECDH1_DERIVE_PARAMS) and
    // with a parameterless derivation.
    assert_eq!(
        raw.derive_key(h, &Mech::Sized(CKM_ECDH1_DERIVE, 40), ec.handle()),
        CKR_MECHANISM_INVALID
    );
    assert_eq!(
        raw.derive_key(h, &Mech::Plain(CKM_SHA256_KEY_DERIVATION), ec.handle()),
        CKR_MECHANISM_INVALID
    );
    // Nothing was made: still one pair.
    assert_eq!(s.find_objects(&[]).unwrap().len(), 2);
    drop(s);
    p11.finalize().unwrap();
    drop(excl);
    eprintln!("copy and derive: {:?}", t0.elapsed());
}
