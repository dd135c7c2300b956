//! Session rules of PKCS#11 3.0 §5.6 through the built module: while the SO is logged in on a
//! slot (in this module instance), a read-only session does not open there
//! (`CKR_SESSION_READ_WRITE_SO_EXISTS`, issue 14 bug 3); read-write ones do, and after
//! `C_Logout` read-only ones open again.

use crate::common::daemon::Env;
use crate::common::module::{self, rv, Settings};
use cryptoki::error::RvError;
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;

const RING: &str = "projects/payments/keyRings/web";

#[test]
fn a_read_only_session_does_not_open_while_the_so_is_logged_in() {
    let _excl = module::exclusive();
    let mut env = Env::new();
    env.start();
    env.payments_ring();
    let settings = Settings::new(&env.client_socket, &env.dir().join("module.toml"));
    let p11 = module::cryptoki(&settings);
    let slot = module::ring_slot(&p11, RING);
    let rw = p11.open_rw_session(slot).unwrap();
    // The organisation admin (this uid's mapping) holds kms.keyRings.setIamPolicy: an empty
    // PIN asserts it (design §1).
    rw.login(UserType::So, Some(&AuthPin::new(String::new().into())))
        .unwrap();
    assert_eq!(
        rv(p11.open_ro_session(slot)),
        RvError::SessionReadWriteSoExists
    );
    let rw2 = p11
        .open_rw_session(slot)
        .expect("a read-write session opens");
    drop(rw2);
    rw.logout().unwrap();
    let ro = p11
        .open_ro_session(slot)
        .expect("after C_Logout a read-only session opens");
    drop(ro);
}
