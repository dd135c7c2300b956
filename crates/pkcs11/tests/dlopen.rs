//! The built `libkeyward_pkcs11.so` loaded through `cryptoki`, as keywardd's clients load
//! modules, with no keywardd running: initialise, list slots (the configured tokens, absent),
//! token info (`CKR_TOKEN_NOT_PRESENT`), session (`CKR_TOKEN_NOT_PRESENT`), finalize.
//!
//! The module comes from `TEST_PKCS11_MODULE`, else from the target directory this test was
//! built into (cargo builds the cdylib with the test). Environment variables are
//! process-wide, so this binary holds one test.

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::slot::Slot;
use std::path::PathBuf;

fn module_path() -> PathBuf {
    if let Some(p) = std::env::var_os("TEST_PKCS11_MODULE") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe.parent().expect("deps directory");
    [
        deps.join("libkeyward_pkcs11.so"),
        deps.join("../libkeyward_pkcs11.so"),
    ]
    .into_iter()
    .find(|p| p.exists())
    .unwrap_or_else(|| panic!("libkeyward_pkcs11.so not found near {}", deps.display()))
}

fn slot_id(ring: &str) -> u64 {
    keyward_wire::pkcs11::ring_identity(ring).0 .0
}

#[test]
fn load_list_and_finalize_without_a_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("module.toml");
    std::fs::write(&cfg, "").unwrap();
    std::env::set_var("KEYWARD_CONFIG", &cfg);
    std::env::set_var("KEYWARD_SOCKET", dir.path().join("nobody-listens.sock"));
    std::env::set_var(
        "KEYWARD_TOKENS",
        "projects/payments/keyRings/web,organizations/acme/keyRings/root-ca=Acme Root CA",
    );
    std::env::remove_var("KEYWARD_CREDENTIALS");

    let path = module_path();
    let p11 = Pkcs11::new(&path).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    assert!(matches!(
        p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)),
        Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _))
    ));

    let info = p11.get_library_info().unwrap();
    assert_eq!(info.manufacturer_id(), "Keyward");
    // cryptoki loads the module through C_GetInterface: the 3.0 list, which says 3.0.
    assert_eq!(info.cryptoki_version().major(), 3);

    let all = p11.get_all_slots().unwrap();
    let mut ids: Vec<u64> = all.iter().map(Slot::id).collect();
    ids.sort_unstable();
    let mut expected = vec![
        slot_id("projects/payments/keyRings/web"),
        slot_id("organizations/acme/keyRings/root-ca"),
    ];
    expected.sort_unstable();
    assert_eq!(ids, expected);
    assert!(ids.iter().all(|id| *id <= 0x7fff_ffff), "31-bit slot ids");
    assert!(p11.get_slots_with_token().unwrap().is_empty());

    for slot in &all {
        let si = p11.get_slot_info(*slot).unwrap();
        assert!(si.removable_device());
        assert!(!si.token_present());
        assert!(
            si.slot_description().contains("/keyRings/"),
            "{}",
            si.slot_description()
        );
        assert!(matches!(
            p11.get_token_info(*slot),
            Err(Error::Pkcs11(RvError::TokenNotPresent, _))
        ));
        assert!(matches!(
            p11.open_ro_session(*slot),
            Err(Error::Pkcs11(RvError::TokenNotPresent, _))
        ));
    }
    p11.finalize().unwrap();
}
