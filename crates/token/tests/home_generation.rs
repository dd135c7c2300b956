//! A session object's handle carries the generation of the home session that made it
//! (commit 5a30f71): once that session broke, the handle is refused by keywardd's token layer
//! and never sent to the token, which may by then have given the same handle to another
//! object. Its own binary: it logs the whole process out of the token.
mod common;

use cryptoki::context::Function;
use cryptoki::error::RvError;
use keyward_token::TokenError;
use keyward_wire::ck::{CKA_CLASS, CKA_PRIVATE, CKA_VALUE, CKO_DATA};
use keyward_wire::pkcs11::{AttrValue, Attribute, Blob};

fn data_object(private: bool) -> Vec<Attribute> {
    vec![
        Attribute {
            ty: CKA_CLASS,
            value: AttrValue::Ulong(CKO_DATA),
        },
        Attribute {
            ty: CKA_PRIVATE,
            value: AttrValue::Bool(private),
        },
        Attribute {
            ty: CKA_VALUE,
            value: AttrValue::Bytes(Blob::new(b"home generation".to_vec())),
        },
    ]
}

#[test]
fn a_handle_of_a_broken_home_session_is_refused_before_the_token() {
    let token = &common::fixture("home_generation").token;
    // A public session object (private ones go with a logout).
    let old = token
        .create_session_object(&data_object(false), false)
        .expect("a public session data object");
    assert!(token.session_object_attributes(old, &[CKA_VALUE]).is_ok());

    // C_Logout on any session logs the whole application out (PKCS#11 3.0 §5.6): the idle
    // home session now answers CKR_USER_NOT_LOGGED_IN for a private object, which counts as
    // broken.
    token.with_session(|s| s.logout()).expect("logout");
    let broke = token.create_session_object(&data_object(true), false);
    assert!(
        matches!(
            broke,
            Err(TokenError::Pkcs11 {
                rv: RvError::UserNotLoggedIn,
                ..
            })
        ),
        "{broke:?}"
    );

    // The object made before is refused without asking the token. (SoftHSM2 destroyed it
    // with the broken session and never reuses a handle, so its own answer would be the same
    // code: what shows the token was not asked is that the refusal is not C_DestroyObject's.
    // A token that reuses handles would otherwise destroy another instance's object.)
    let refused = token.destroy_session_object(old);
    assert!(
        matches!(
            refused,
            Err(TokenError::Pkcs11 {
                rv: RvError::ObjectHandleInvalid,
                function,
            }) if !matches!(function, Function::DestroyObject)
        ),
        "a handle of the broken home session reached the token: {refused:?}"
    );
    let refused = token.session_object_attributes(old, &[CKA_VALUE]);
    assert!(refused.is_err(), "{refused:?}");

    // A new home session logs in again, and what it makes is usable.
    let new = token
        .create_session_object(&data_object(true), false)
        .expect("a private session data object after logging in again");
    token
        .session_object_attributes(new, &[CKA_VALUE])
        .expect("the new object's attributes");
    token
        .destroy_session_object(new)
        .expect("destroy the new object");
}
