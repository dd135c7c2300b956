//! `C_GetMechanismList` / `C_GetMechanismInfo` report exactly what works (issue 14 bug 7):
//! AES key wrap (`C_WrapKey` exports with it) is listed with `CKF_WRAP`, `CKM_RSA_PKCS_OAEP`
//! carries `CKF_WRAP`/`CKF_UNWRAP` (export to an RSA key, BYOK import), every listed mechanism
//! has its info, and raw RSA is never offered (design §4 "No side doors").

use crate::common::daemon::Env;
use crate::common::module::{self, Settings};
use cryptoki::mechanism::{MechanismInfo, MechanismType};

const RING: &str = "projects/payments/keyRings/web";

#[test]
fn the_mechanism_list_reports_what_works_with_its_flags() {
    let _excl = module::exclusive();
    let mut env = Env::new();
    env.start();
    env.payments_ring();
    let settings = Settings::new(&env.client_socket, &env.dir().join("module.toml"));
    let p11 = module::cryptoki(&settings);
    let slot = module::ring_slot(&p11, RING);
    let listed = p11.get_mechanism_list(slot).unwrap();
    let info = |m: MechanismType| -> MechanismInfo {
        p11.get_mechanism_info(slot, m)
            .unwrap_or_else(|e| panic!("{m} is listed but has no info: {e}"))
    };
    for m in &listed {
        info(*m);
    }
    for m in [MechanismType::AES_KEY_WRAP, MechanismType::AES_KEY_WRAP_PAD] {
        assert!(listed.contains(&m), "{m} missing from {listed:?}");
        let i = info(m);
        assert!(i.wrap(), "{m} without CKF_WRAP: {i:?}");
        // C_UnwrapKey with an AES key made through the module (issue 14 item 9).
        assert!(i.unwrap(), "{m} without CKF_UNWRAP: {i:?}");
        assert_eq!((i.min_key_size(), i.max_key_size()), (16, 32), "{m}: {i:?}");
    }
    let oaep = info(MechanismType::RSA_PKCS_OAEP);
    assert!(
        oaep.encrypt() && oaep.decrypt() && oaep.wrap() && oaep.unwrap(),
        "CKM_RSA_PKCS_OAEP: {oaep:?}"
    );
    assert!(
        !listed.contains(&MechanismType::RSA_X_509),
        "raw RSA is offered: {listed:?}"
    );
}
