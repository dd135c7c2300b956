//! Encryption, decryption, message digesting, signing and verifying, random numbers
//! (3.0 §5.8–5.13, 5.15).
//!
//! Outputs go through the two-call protocol: when the client only asks the length (or its
//! buffer is short) the output keywardd computed is kept in the session as
//! [`crate::state::Pending`] and handed over by the next call with the same input, so every
//! result is computed once and an operation is not ended by a length query.

use crate::allow::Func;
use crate::buffer::{fit, Fit};
use crate::error::Error;
use crate::state::{instance, Pending};
use keyward_wire::pkcs11::{
    Blob, Mechanism, ObjectHandle, Operation, Pkcs11Request, Pkcs11Response,
};

/// C_EncryptInit, C_DecryptInit, C_SignInit, C_VerifyInit, C_DigestInit. A NULL mechanism
/// (`None`) cancels the active operation (3.0).
///
/// For an AES-GCM or AES-CTR encryption by a principal that may not decrypt with the key,
/// keywardd generates the IV / initial counter block (design §9): it is returned here for
/// the ffi layer to write into the client's `pIv` / `cb` (if it cannot, it calls
/// [`cancel`]).
pub fn op_init(
    h: u64,
    op: Operation,
    mechanism: Option<Mechanism>,
    key: Option<u64>,
) -> Result<Option<Blob>, Error> {
    let inst = instance()?;
    let s = inst.session(h)?;
    inst.clear_pending(h);
    let request = match mechanism {
        None => Pkcs11Request::OperationCancel {
            op,
            session: s.remote,
        },
        Some(mechanism) => Pkcs11Request::OperationInit {
            op,
            session: s.remote,
            mechanism,
            key: key.map(ObjectHandle),
        },
    };
    let encrypt =
        matches!(request, Pkcs11Request::OperationInit { .. }) && op == Operation::Encrypt;
    match inst.call_in(&s, request)? {
        Pkcs11Response::Done => Ok(None),
        Pkcs11Response::GeneratedIv(iv) if encrypt => Ok(Some(iv)),
        _ => {
            // Whatever keywardd started, the client cannot use: end it.
            let _ = cancel(h, op);
            Err(Error::UnexpectedResponse("expected Done"))
        }
    }
}

/// Ends the active `op` of session `h` without a result (as a NULL-mechanism `*Init`).
pub fn cancel(h: u64, op: Operation) -> Result<(), Error> {
    let inst = instance()?;
    let s = inst.session(h)?;
    inst.clear_pending(h);
    inst.call_in_done(
        &s,
        Pkcs11Request::OperationCancel {
            op,
            session: s.remote,
        },
    )
}

/// Runs `compute` for session `h` unless an output of `call` for `input` is pending, then
/// applies the two-call protocol for a buffer of `capacity` bytes: the output is returned
/// either way (the ffi writer copies it or reports its length) and kept unless it fits.
pub fn with_output(
    h: u64,
    call: Func,
    input: &[u8],
    capacity: Option<usize>,
    compute: impl FnOnce(&crate::state::Instance, &crate::state::SessionRef) -> Result<Blob, Error>,
) -> Result<Blob, Error> {
    let inst = instance()?;
    let s = inst.session(h)?;
    let output = match inst.take_pending(h, call, input) {
        Some(o) => o,
        None => compute(&inst, &s)?,
    };
    if fit(capacity, output.len()) != Fit::Fits {
        inst.keep_pending(
            h,
            Pending {
                call,
                input: Blob::from(input),
                output: output.clone(),
            },
        );
    }
    Ok(output)
}

/// C_Encrypt, C_Decrypt, C_Sign, C_Digest (one-shot).
pub fn one_shot(
    h: u64,
    call: Func,
    op: Operation,
    data: &[u8],
    capacity: Option<usize>,
) -> Result<Blob, Error> {
    with_output(h, call, data, capacity, |inst, s| {
        inst.call_in_data(
            s,
            Pkcs11Request::OperationOneShot {
                op,
                session: s.remote,
                data: Blob::from(data),
            },
        )
    })
}

/// C_EncryptUpdate, C_DecryptUpdate (with output).
pub fn update(
    h: u64,
    call: Func,
    op: Operation,
    data: &[u8],
    capacity: Option<usize>,
) -> Result<Blob, Error> {
    with_output(h, call, data, capacity, |inst, s| {
        inst.call_in_data(
            s,
            Pkcs11Request::OperationUpdate {
                op,
                session: s.remote,
                data: Blob::from(data),
            },
        )
    })
}

/// C_SignUpdate, C_VerifyUpdate, C_DigestUpdate (no output).
pub fn update_no_output(h: u64, op: Operation, data: &[u8]) -> Result<(), Error> {
    let inst = instance()?;
    let s = inst.session(h)?;
    inst.call_in_data(
        &s,
        Pkcs11Request::OperationUpdate {
            op,
            session: s.remote,
            data: Blob::from(data),
        },
    )
    .map(drop)
}

/// C_EncryptFinal, C_DecryptFinal, C_SignFinal, C_DigestFinal.
pub fn finish(h: u64, call: Func, op: Operation, capacity: Option<usize>) -> Result<Blob, Error> {
    with_output(h, call, &[], capacity, |inst, s| {
        inst.call_in_data(
            s,
            Pkcs11Request::OperationFinal {
                op,
                session: s.remote,
            },
        )
    })
}

/// C_Verify.
pub fn verify(h: u64, data: &[u8], signature: &[u8]) -> Result<(), Error> {
    let inst = instance()?;
    let s = inst.session(h)?;
    inst.call_in_done(
        &s,
        Pkcs11Request::Verify {
            session: s.remote,
            data: Blob::from(data),
            signature: Blob::from(signature),
        },
    )
}

/// C_VerifyFinal.
pub fn verify_final(h: u64, signature: &[u8]) -> Result<(), Error> {
    let inst = instance()?;
    let s = inst.session(h)?;
    inst.call_in_done(
        &s,
        Pkcs11Request::VerifyFinal {
            session: s.remote,
            signature: Blob::from(signature),
        },
    )
}

/// C_GenerateRandom: exactly `len` bytes.
pub fn generate_random(h: u64, len: usize) -> Result<Blob, Error> {
    let inst = instance()?;
    let s = inst.session(h)?;
    let n = u64::try_from(len).map_err(|_| Error::ArgumentsBad("length"))?;
    let out = inst.call_in_data(
        &s,
        Pkcs11Request::GenerateRandom {
            session: s.remote,
            len: n,
        },
    )?;
    if out.len() != len {
        return Err(Error::UnexpectedResponse(
            "random bytes of the wrong length",
        ));
    }
    Ok(out)
}

/// C_SeedRandom: the session must be valid; seeding is not supported.
pub fn seed_random(h: u64) -> Result<(), Error> {
    instance()?.session(h)?;
    Err(Error::RandomSeedNotSupported)
}
