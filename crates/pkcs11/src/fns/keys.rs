//! Key management (3.0 §5.14): generate, wrap, unwrap, derive.

use crate::allow::Func;
use crate::error::Error;
use crate::fns::crypto::with_output;
use crate::state::instance;
use keyward_wire::pkcs11::{
    Attribute, Blob, Mechanism, ObjectHandle, Pkcs11Request, Pkcs11Response,
};

/// C_GenerateKey.
pub fn generate_key(h: u64, mechanism: Mechanism, template: Vec<Attribute>) -> Result<u64, Error> {
    let inst = instance()?;
    let s = inst.session(h)?;
    let o = inst.call_in_object(
        &s,
        Pkcs11Request::GenerateKey {
            session: s.remote,
            mechanism,
            template,
        },
    )?;
    Ok(o.0)
}

/// C_GenerateKeyPair: (public, private).
pub fn generate_key_pair(
    h: u64,
    mechanism: Mechanism,
    public_template: Vec<Attribute>,
    private_template: Vec<Attribute>,
) -> Result<(u64, u64), Error> {
    let inst = instance()?;
    let s = inst.session(h)?;
    match inst.call_in(
        &s,
        Pkcs11Request::GenerateKeyPair {
            session: s.remote,
            mechanism,
            public_template,
            private_template,
        },
    )? {
        Pkcs11Response::KeyPair { public, private } => Ok((public.0, private.0)),
        _ => Err(Error::UnexpectedResponse("expected KeyPair")),
    }
}

/// C_WrapKey, with the two-call protocol (the wrapped key is computed once).
pub fn wrap_key(
    h: u64,
    mechanism: Mechanism,
    wrapping_key: u64,
    key: u64,
    capacity: Option<usize>,
) -> Result<Blob, Error> {
    let mut input = wrapping_key.to_le_bytes().to_vec();
    input.extend_from_slice(&key.to_le_bytes());
    input.extend_from_slice(&mechanism.ty.to_le_bytes());
    with_output(h, Func::WrapKey, &input, capacity, |inst, s| {
        inst.call_in_data(
            s,
            Pkcs11Request::WrapKey {
                session: s.remote,
                mechanism,
                wrapping_key: ObjectHandle(wrapping_key),
                key: ObjectHandle(key),
            },
        )
    })
}

/// C_UnwrapKey.
pub fn unwrap_key(
    h: u64,
    mechanism: Mechanism,
    unwrapping_key: u64,
    wrapped: &[u8],
    template: Vec<Attribute>,
) -> Result<u64, Error> {
    let inst = instance()?;
    let s = inst.session(h)?;
    let o = inst.call_in_object(
        &s,
        Pkcs11Request::UnwrapKey {
            session: s.remote,
            mechanism,
            unwrapping_key: ObjectHandle(unwrapping_key),
            wrapped: Blob::from(wrapped),
            template,
        },
    )?;
    Ok(o.0)
}

/// C_DeriveKey (from a Keyward key keywardd answers `CKR_MECHANISM_INVALID`, design §4).
pub fn derive_key(
    h: u64,
    mechanism: Mechanism,
    base_key: u64,
    template: Vec<Attribute>,
) -> Result<u64, Error> {
    let inst = instance()?;
    let s = inst.session(h)?;
    let o = inst.call_in_object(
        &s,
        Pkcs11Request::DeriveKey {
            session: s.remote,
            mechanism,
            base_key: ObjectHandle(base_key),
            template,
        },
    )?;
    Ok(o.0)
}
