//! ABI misuse through the built `libkeyward_pkcs11.so` against a real keywardd + SoftHSM2
//! (issue 5 acceptance 2): NULL pointers, zero and oversize lengths, short output buffers,
//! calls out of order, use after `C_Finalize`, both `CK_GCM_PARAMS` layouts; keywardd
//! SIGKILLed and restarted under a live instance; a forked child. Raw calls go through the
//! module's exported entry points (`common::module::Raw`) on the same module state cryptoki
//! would use.

mod common;

use common::daemon::Env;
use common::module::*;
use std::time::Instant;

const RING: &str = "projects/payments/keyRings/web";

fn slot_id(ring: &str) -> Ulong {
    keyward_wire::pkcs11::ring_identity(ring).0 .0 as Ulong
}

/// A keywardd with ring `web` holding `ec` (EC P-256) and `aes` (AES-256-GCM), and the
/// key of `user@payments`, bound to use both.
fn world() -> (Env, String) {
    let mut env = Env::new();
    let user = env.service_account_offline("user");
    env.start();
    env.web_ring();
    env.create_keys(
        RING,
        &[
            ("ec", "ASYMMETRIC_SIGN", "EC_SIGN_P256_SHA256"),
            ("aes", "ENCRYPT_DECRYPT", "AES_256_GCM"),
        ],
    );
    for (id, role) in [
        ("ec", "roles/kms.signerVerifier"),
        ("aes", "roles/kms.cryptoKeyEncrypterDecrypter"),
    ] {
        env.ctl(&[
            "iam",
            "bind",
            "--resource",
            &format!("{RING}/cryptoKeys/{id}"),
            "--role",
            role,
            "--member",
            "serviceAccount:user@payments",
        ])
        .ok();
    }
    (env, user)
}

fn labelled(raw: &Raw, h: Ulong, class: Ulong, label: &str) -> Ulong {
    let found = raw.find(
        h,
        &[
            (CKA_CLASS, ulong_bytes(class)),
            (CKA_LABEL, label.as_bytes().to_vec()),
        ],
    );
    assert_eq!(found.len(), 1, "{label}: {found:?}");
    found[0]
}

fn gcm48(iv: u8) -> Mech {
    Mech::Gcm48 {
        iv: vec![iv; 12],
        aad: b"aad".to_vec(),
        tag_bits: 128,
    }
}

fn gcm40(iv: u8) -> Mech {
    Mech::Gcm40 {
        iv: vec![iv; 12],
        aad: b"aad".to_vec(),
        tag_bits: 128,
    }
}

#[test]
fn abi_misuse_gives_the_spec_codes() {
    let t0 = Instant::now();
    let excl = exclusive();
    let raw = excl.raw();
    let (env, user) = world();
    let settings = Settings::new(&env.client_socket, &env.dir().join("module.toml"));
    let ecdsa = Mech::Plain(CKM_ECDSA_SHA256);

    // --- before C_Initialize.
    assert_eq!(raw.slot_list(None, false).0, CKR_CRYPTOKI_NOT_INITIALIZED);
    assert_eq!(raw.finalize(), CKR_CRYPTOKI_NOT_INITIALIZED);
    assert_eq!(raw.initialize(Some(&settings)), CKR_OK);
    assert_eq!(
        raw.initialize(Some(&settings)),
        CKR_CRYPTOKI_ALREADY_INITIALIZED
    );

    // --- NULL pointers: CKR_ARGUMENTS_BAD, before any IPC.
    assert_eq!(raw.get_info_null(), CKR_ARGUMENTS_BAD);
    assert_eq!(raw.slot_list(None, true).0, CKR_ARGUMENTS_BAD);
    assert_eq!(raw.open_session_null(slot_id(RING)), CKR_ARGUMENTS_BAD);
    assert_eq!(raw.finalize_with_reserved(), CKR_ARGUMENTS_BAD);

    // --- the slot list: two-call protocol, CKR_BUFFER_TOO_SMALL with the size.
    let (rv, n) = raw.slot_list(None, false);
    assert_eq!((rv, n), (CKR_OK, 1));
    let mut none: [Ulong; 0] = [];
    assert_eq!(
        raw.slot_list(Some(&mut none), false),
        (CKR_BUFFER_TOO_SMALL, 1)
    );
    let mut one = [0 as Ulong; 4];
    assert_eq!(raw.slot_list(Some(&mut one), false), (CKR_OK, 1));
    assert_eq!(one[0], slot_id(RING));
    assert_eq!(
        raw.open_session(0x1234).0,
        0x3 /* CKR_SLOT_ID_INVALID */
    );

    let (rv, h) = raw.open_session(slot_id(RING));
    assert_eq!(rv, CKR_OK);
    // Login: NULL PIN with a length is bad; the key as PIN works; twice is "already".
    assert_eq!(raw.login(h, In::Null(5)), CKR_ARGUMENTS_BAD);
    assert_eq!(raw.login(h, In::Oversize(b"x", !0)), CKR_ARGUMENTS_BAD);
    assert_eq!(raw.logout(h), CKR_USER_NOT_LOGGED_IN);
    assert_eq!(raw.login(h, In::Bytes(user.as_bytes())), CKR_OK);
    assert_eq!(
        raw.login(h, In::Bytes(user.as_bytes())),
        CKR_USER_ALREADY_LOGGED_IN
    );
    let ec = labelled(raw, h, CKO_PRIVATE_KEY, "ec");
    let ec_pub = labelled(raw, h, CKO_PUBLIC_KEY, "ec");
    let aes = labelled(raw, h, CKO_SECRET_KEY, "aes");

    // --- find: NULL outputs, zero max, out of order.
    assert_eq!(
        raw.find_objects(h, None, 0, false).0,
        CKR_OPERATION_NOT_INITIALIZED
    );
    assert_eq!(raw.find_final(h), CKR_OPERATION_NOT_INITIALIZED);
    assert_eq!(raw.find_init(h, &[]), CKR_OK);
    assert_eq!(raw.find_init(h, &[]), CKR_OPERATION_ACTIVE);
    assert_eq!(raw.find_objects(h, None, 0, true).0, CKR_ARGUMENTS_BAD);
    assert_eq!(raw.find_objects(h, None, 3, false).0, CKR_ARGUMENTS_BAD);
    assert_eq!(raw.find_objects(h, None, 0, false), (CKR_OK, 0));
    let mut got = [0 as Ulong; 8];
    assert_eq!(raw.find_objects(h, Some(&mut got), 8, false), (CKR_OK, 3));
    assert_eq!(raw.find_final(h), CKR_OK);

    // --- attributes: NULL template, length query, short buffer.
    assert_eq!(raw.attribute_null_template(h, ec_pub, 1), CKR_ARGUMENTS_BAD);
    let (rv, len, _) = raw.attribute(h, ec_pub, CKA_EC_POINT, None);
    assert_eq!((rv, len), (CKR_OK, 67), "DER OCTET STRING of a P-256 point");
    let (rv, len, _) = raw.attribute(h, ec_pub, CKA_EC_POINT, Some(10));
    assert_eq!(
        (rv, len),
        (CKR_BUFFER_TOO_SMALL, CK_UNAVAILABLE_INFORMATION),
        "a short attribute buffer: the code, and ulValueLen unavailable"
    );
    let (rv, len, point) = raw.attribute(h, ec_pub, CKA_EC_POINT, Some(67));
    assert_eq!((rv, len, &point[..2]), (CKR_OK, 67, &[0x04, 65][..]));

    // --- sign: out of order.
    assert_eq!(
        raw.sign_update(h, In::Bytes(b"x")),
        CKR_OPERATION_NOT_INITIALIZED
    );
    assert_eq!(
        raw.sign(h, In::Bytes(b"x"), Out::Query).0,
        CKR_OPERATION_NOT_INITIALIZED
    );
    assert_eq!(
        raw.sign_final(h, Out::Query).0,
        CKR_OPERATION_NOT_INITIALIZED
    );
    assert_eq!(
        raw.decrypt_final(h, Out::Query).0,
        CKR_OPERATION_NOT_INITIALIZED
    );
    assert_eq!(raw.sign_init(h, Some(&ecdsa), ec), CKR_OK);
    assert_eq!(raw.sign_init(h, Some(&ecdsa), ec), CKR_OPERATION_ACTIVE);
    // NULL / oversize data, NULL length pointer: refused, and the operation lives on.
    assert_eq!(raw.sign(h, In::Null(4), Out::Query).0, CKR_ARGUMENTS_BAD);
    assert_eq!(
        raw.sign(h, In::Bytes(b"x"), Out::NullLen).0,
        CKR_ARGUMENTS_BAD
    );
    assert_eq!(
        raw.sign(h, In::Oversize(b"data", 1 << 63), Out::Query).0,
        CKR_ARGUMENTS_BAD
    );
    assert_eq!(
        raw.sign(h, In::Oversize(b"data", !0), Out::Query).0,
        CKR_ARGUMENTS_BAD
    );
    assert_eq!(raw.sign_update(h, In::Null(1)), CKR_ARGUMENTS_BAD);
    // The length query, a short buffer (with the size), then the same signature.
    let data = b"two calls, one signature";
    let (rv, need) = raw.sign(h, In::Bytes(data), Out::Query);
    assert_eq!((rv, need), (CKR_OK, 64));
    let mut short = [0u8; 10];
    assert_eq!(
        raw.sign(h, In::Bytes(data), Out::Buf(&mut short)),
        (CKR_BUFFER_TOO_SMALL, 64)
    );
    let mut sig = [0u8; 100];
    assert_eq!(
        raw.sign(h, In::Bytes(data), Out::Buf(&mut sig)),
        (CKR_OK, 64)
    );
    // The operation ended with the signature.
    assert_eq!(
        raw.sign(h, In::Bytes(data), Out::Query).0,
        CKR_OPERATION_NOT_INITIALIZED
    );
    assert_eq!(raw.verify_init(h, &ecdsa, ec_pub), CKR_OK);
    assert_eq!(
        raw.verify(h, In::Bytes(data), In::Bytes(&sig[..64])),
        CKR_OK
    );
    // Zero-length data is data: the signature of the empty message verifies.
    let empty_sig = raw_sign(raw, h, &ecdsa, ec, b"");
    assert_eq!(raw.verify_init(h, &ecdsa, ec_pub), CKR_OK);
    assert_eq!(raw.verify(h, In::Null(0), In::Bytes(&empty_sig)), CKR_OK);
    assert_eq!(raw.verify_init(h, &ecdsa, ec_pub), CKR_OK);
    assert_eq!(
        raw.verify(h, In::Bytes(b"not empty"), In::Bytes(&empty_sig)),
        CKR_SIGNATURE_INVALID
    );
    // Multi-part, then a final with a short buffer.
    assert_eq!(raw.sign_init(h, Some(&ecdsa), ec), CKR_OK);
    assert_eq!(raw.sign_update(h, In::Bytes(b"two calls, ")), CKR_OK);
    assert_eq!(raw.sign_update(h, In::Null(0)), CKR_OK);
    assert_eq!(raw.sign_update(h, In::Bytes(b"one signature")), CKR_OK);
    let mut short = [0u8; 63];
    assert_eq!(
        raw.sign_final(h, Out::Buf(&mut short)),
        (CKR_BUFFER_TOO_SMALL, 64)
    );
    let mut sig2 = [0u8; 64];
    assert_eq!(raw.sign_final(h, Out::Buf(&mut sig2)), (CKR_OK, 64));
    assert_eq!(raw.verify_init(h, &ecdsa, ec_pub), CKR_OK);
    assert_eq!(raw.verify(h, In::Bytes(data), In::Bytes(&sig2)), CKR_OK);
    // A wrong-size mechanism parameter, a mechanism the key forbids.
    assert_eq!(
        raw.sign_init(h, Some(&Mech::Sized(CKM_ECDSA_SHA256, 8)), ec),
        CKR_MECHANISM_PARAM_INVALID
    );
    assert_eq!(
        raw.encrypt_init(h, &Mech::Sized(CKM_AES_GCM, 44), aes),
        CKR_MECHANISM_PARAM_INVALID,
        "a CK_GCM_PARAMS of neither 40 nor 48 bytes"
    );
    assert_eq!(raw.sign_init(h, Some(&gcm48(1)), ec), CKR_MECHANISM_INVALID);

    // --- both CK_GCM_PARAMS layouts: each decrypts what the other encrypted.
    let plain = b"both layouts, one plaintext".to_vec();
    let mut cts = vec![];
    for m in [gcm48(9), gcm40(9)] {
        assert_eq!(raw.encrypt_init(h, &m, aes), CKR_OK, "{m:?}");
        let (rv, n) = raw.encrypt(h, In::Bytes(&plain), Out::Query);
        assert_eq!((rv, n), (CKR_OK, plain.len() as Ulong + 16));
        let mut ct = vec![0u8; n as usize];
        assert_eq!(
            raw.encrypt(h, In::Bytes(&plain), Out::Buf(&mut ct)),
            (CKR_OK, n)
        );
        cts.push(ct);
    }
    assert_eq!(
        cts[0], cts[1],
        "same key, IV, AAD: the same ciphertext either layout"
    );
    for (m, ct) in [(gcm40(9), &cts[0]), (gcm48(9), &cts[1])] {
        assert_eq!(raw.decrypt_init(h, &m, aes), CKR_OK);
        let mut short = [0u8; 3];
        let (rv, n) = raw.decrypt(h, In::Bytes(ct), Out::Buf(&mut short));
        assert_eq!(rv, CKR_BUFFER_TOO_SMALL);
        assert!(n as usize >= plain.len(), "the size needed: {n}");
        let mut out = vec![0u8; 64];
        let (rv, n) = raw.decrypt(h, In::Bytes(ct), Out::Buf(&mut out));
        assert_eq!(rv, CKR_OK);
        assert_eq!(&out[..n as usize], &plain[..]);
    }
    // Zero-length plaintext: the tag only.
    assert_eq!(raw.encrypt_init(h, &gcm40(2), aes), CKR_OK);
    assert_eq!(raw.encrypt(h, In::Null(0), Out::Query), (CKR_OK, 16));

    // --- random: zero, NULL, oversize.
    assert_eq!(raw.random(h, None, 0), CKR_OK);
    assert_eq!(raw.random(h, None, 16), CKR_ARGUMENTS_BAD);
    let mut r = [0u8; 8];
    assert_eq!(raw.random(h, Some(&mut r), !0), CKR_ARGUMENTS_BAD);
    assert_eq!(raw.random(h, Some(&mut r), 8), CKR_OK);

    // --- unknown handles.
    assert_eq!(
        raw.sign_init(h + 1000, Some(&ecdsa), ec),
        CKR_SESSION_HANDLE_INVALID
    );
    assert_eq!(
        raw.sign_init(h, Some(&ecdsa), 0x7fff_0000 ^ ec),
        CKR_KEY_HANDLE_INVALID
    );

    // --- use after C_Finalize.
    assert_eq!(raw.finalize(), CKR_OK);
    assert_eq!(raw.slot_list(None, false).0, CKR_CRYPTOKI_NOT_INITIALIZED);
    assert_eq!(
        raw.open_session(slot_id(RING)).0,
        CKR_CRYPTOKI_NOT_INITIALIZED
    );
    assert_eq!(
        raw.sign_init(h, Some(&ecdsa), ec),
        CKR_CRYPTOKI_NOT_INITIALIZED
    );
    assert_eq!(
        raw.sign(h, In::Bytes(b"x"), Out::Query).0,
        CKR_CRYPTOKI_NOT_INITIALIZED
    );
    assert_eq!(raw.close_session(h), CKR_CRYPTOKI_NOT_INITIALIZED);
    assert_eq!(raw.finalize(), CKR_CRYPTOKI_NOT_INITIALIZED);
    // A new instance does not know the old session.
    assert_eq!(raw.initialize(Some(&settings)), CKR_OK);
    assert_eq!(raw.close_session(h), CKR_SESSION_HANDLE_INVALID);
    assert_eq!(raw.finalize(), CKR_OK);
    drop(excl);
    eprintln!("ABI misuse: {:?}", t0.elapsed());
}

#[test]
fn keywardd_killed_and_restarted_under_a_live_instance() {
    let t0 = Instant::now();
    let excl = exclusive();
    let raw = excl.raw();
    let (mut env, user) = world();
    let settings = Settings::new(&env.client_socket, &env.dir().join("module.toml")).tokens(RING);
    let ecdsa = Mech::Plain(CKM_ECDSA_SHA256);
    assert_eq!(raw.initialize(Some(&settings)), CKR_OK);
    let (rv, h) = raw.open_session(slot_id(RING));
    assert_eq!(rv, CKR_OK);
    let (rv, h2) = raw.open_session(slot_id(RING));
    assert_eq!(rv, CKR_OK);
    assert_eq!(raw.login(h, In::Bytes(user.as_bytes())), CKR_OK);
    let ec = labelled(raw, h, CKO_PRIVATE_KEY, "ec");
    raw_sign(raw, h, &ecdsa, ec, b"before");

    let status = env.signal_and_wait("KILL");
    assert!(!status.success());
    // The call that finds the connection gone: CKR_DEVICE_REMOVED; then the session is
    // gone: CKR_SESSION_HANDLE_INVALID; every session of that connection died with it.
    assert_eq!(raw.sign_init(h, Some(&ecdsa), ec), CKR_DEVICE_REMOVED);
    assert_eq!(
        raw.sign_init(h, Some(&ecdsa), ec),
        CKR_SESSION_HANDLE_INVALID
    );
    assert_eq!(
        raw.sign_init(h2, Some(&ecdsa), ec),
        CKR_SESSION_HANDLE_INVALID
    );
    assert_eq!(raw.find_init(h, &[]), CKR_SESSION_HANDLE_INVALID);
    // While keywardd is down: the slot stays listed (fixed list), the token is absent.
    assert_eq!(raw.slot_list_of(false, None, false), (CKR_OK, 1));
    assert_eq!(raw.slot_list_of(true, None, false), (CKR_OK, 0));
    assert_eq!(raw.token_info_rv(slot_id(RING)), CKR_TOKEN_NOT_PRESENT);
    assert_eq!(raw.open_session(slot_id(RING)).0, CKR_TOKEN_NOT_PRESENT);

    env.start();
    assert_eq!(raw.slot_list_of(true, None, false), (CKR_OK, 1));
    // No restart of this process: a new session reconnects and the login is replayed.
    let (rv, h3) = raw.open_session(slot_id(RING));
    assert_eq!(rv, CKR_OK);
    assert_eq!(
        raw.login(h3, In::Bytes(user.as_bytes())),
        CKR_USER_ALREADY_LOGGED_IN,
        "the login was replayed"
    );
    let ec = labelled(raw, h3, CKO_PRIVATE_KEY, "ec");
    let sig = raw_sign(raw, h3, &ecdsa, ec, b"after");
    let ec_pub = labelled(raw, h3, CKO_PUBLIC_KEY, "ec");
    assert_eq!(raw.verify_init(h3, &ecdsa, ec_pub), CKR_OK);
    assert_eq!(raw.verify(h3, In::Bytes(b"after"), In::Bytes(&sig)), CKR_OK);
    assert_eq!(raw.close_session(h), CKR_SESSION_HANDLE_INVALID);
    assert_eq!(raw.finalize(), CKR_OK);
    drop(excl);
    eprintln!("kill and restart: {:?}", t0.elapsed());
}

/// In a child process (one test thread): initialise, sign, fork. The forked child gets
/// CKR_CRYPTOKI_NOT_INITIALIZED until it calls C_Initialize, then works on its own
/// instance; the parent's session is unaffected, during and after the child.
fn fork_child_role() {
    let raw = Raw::load();
    let settings = child_settings();
    let user = std::env::var("KEYWARD_MODULE_TEST_KEY").unwrap();
    let ecdsa = Mech::Plain(CKM_ECDSA_SHA256);
    assert_eq!(raw.initialize(Some(&settings)), CKR_OK);
    let (rv, h) = raw.open_session(slot_id(RING));
    assert_eq!(rv, CKR_OK);
    assert_eq!(raw.login(h, In::Bytes(user.as_bytes())), CKR_OK);
    let ec = labelled(&raw, h, CKO_PRIVATE_KEY, "ec");
    raw_sign(&raw, h, &ecdsa, ec, b"parent before fork");
    // An operation in flight in the parent across the fork.
    assert_eq!(raw.sign_init(h, Some(&ecdsa), ec), CKR_OK);

    let code = fork_and_wait(|| {
        let mut failures = 0;
        let mut check = |what: &str, got: Rv, want: Rv| {
            if got != want {
                println!("child: FAIL {what}: {got:#x} != {want:#x}");
                failures += 1;
            }
        };
        check(
            "slot list",
            raw.slot_list(None, false).0,
            CKR_CRYPTOKI_NOT_INITIALIZED,
        );
        check(
            "the parent's session",
            raw.sign(h, In::Bytes(b"x"), Out::Query).0,
            CKR_CRYPTOKI_NOT_INITIALIZED,
        );
        check(
            "open",
            raw.open_session(slot_id(RING)).0,
            CKR_CRYPTOKI_NOT_INITIALIZED,
        );
        check("finalize", raw.finalize(), CKR_CRYPTOKI_NOT_INITIALIZED);
        check("initialize", raw.initialize(Some(&settings)), CKR_OK);
        check(
            "the parent's session after",
            raw.close_session(h),
            CKR_SESSION_HANDLE_INVALID,
        );
        let (rv, ch) = raw.open_session(slot_id(RING));
        check("open after", rv, CKR_OK);
        check("login", raw.login(ch, In::Bytes(user.as_bytes())), CKR_OK);
        let ec = labelled(&raw, ch, CKO_PRIVATE_KEY, "ec");
        let sig = raw_sign(&raw, ch, &ecdsa, ec, b"child");
        check("signature length", sig.len() as Ulong, 64);
        check("child finalize", raw.finalize(), CKR_OK);
        failures
    });
    report("fork_child_exit", code);
    // The parent: the operation begun before the fork completes; the session goes on.
    let (rv, n) = raw.sign(h, In::Bytes(b"parent after fork"), Out::Query);
    report("parent_sign_rv", rv);
    report("parent_sign_len", n);
    let mut sig = vec![0u8; n as usize];
    let (rv, _) = raw.sign(h, In::Bytes(b"parent after fork"), Out::Buf(&mut sig));
    report("parent_sign_rv2", rv);
    raw_sign(&raw, h, &ecdsa, ec, b"parent again");
    report("parent_ok", "yes");
    assert_eq!(raw.finalize(), CKR_OK);
}

#[test]
fn a_forked_child_initializes_again_and_the_parent_is_unaffected() {
    if child_role().as_deref() == Some("fork") {
        fork_child_role();
        return;
    }
    let t0 = Instant::now();
    let excl = exclusive();
    let (env, user) = world();
    let settings = Settings::new(&env.client_socket, &env.dir().join("module.toml"));
    let out = run_child(
        "a_forked_child_initializes_again_and_the_parent_is_unaffected",
        "fork",
        &settings,
        &[("KEYWARD_MODULE_TEST_KEY", user.as_str())],
    );
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(!out.stdout.contains("child: FAIL"), "{out:#?}");
    assert_eq!(out.value("fork_child_exit"), "0", "{out:#?}");
    assert_eq!(out.value("parent_sign_rv"), "0");
    assert_eq!(out.value("parent_sign_len"), "64");
    assert_eq!(out.value("parent_sign_rv2"), "0");
    assert_eq!(out.value("parent_ok"), "yes");
    drop(excl);
    eprintln!("fork: {:?}", t0.elapsed());
}
