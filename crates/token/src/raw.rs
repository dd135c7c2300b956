//! Raw two-call helpers cryptoki 0.12 lacks (design §7 allows `unsafe` here).
//!
//! cryptoki's `Session::encrypt` asks the module for the output length (`C_Encrypt` with a
//! NULL buffer) and then encrypts into a buffer of exactly that length. NSS softokn 3.87
//! answers the length query of `CKM_AES_GCM` with the plaintext's length, without the tag,
//! so the second call fails with `CKR_BUFFER_TOO_SMALL`, and leaves the operation active
//! (PKCS#11 §5.2: a call that returns `CKR_BUFFER_TOO_SMALL` does not end it).
//! [`encrypt_sized`] makes no length query: it encrypts into a buffer of the length the
//! caller knows the output has (AES-GCM: plaintext + tag), and takes the module's word only
//! if it asks for more.
//!
//! The module's function list is read once per [`crate::Token`] with `libloading` (the same
//! library cryptoki loaded: `dlopen` of a loaded path returns it, so the sessions and
//! objects are the ones cryptoki's calls use).
#![allow(unsafe_code)]

use cryptoki::context::Function;
use cryptoki::error::{Error as CryptokiError, Rv, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::Session;
use cryptoki_sys::{
    CK_ATTRIBUTE, CK_FUNCTION_LIST, CK_FUNCTION_LIST_PTR_PTR, CK_MECHANISM, CK_OBJECT_HANDLE,
    CK_RV, CK_ULONG,
};
use std::path::Path;

/// The entries of a loaded module's function list this module calls.
pub(crate) struct RawModule {
    list: CK_FUNCTION_LIST,
    // Keeps the module loaded for as long as `list`'s function pointers are used.
    _lib: libloading::Library,
}

impl std::fmt::Debug for RawModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawModule").finish_non_exhaustive()
    }
}

type GetFunctionList = unsafe extern "C" fn(CK_FUNCTION_LIST_PTR_PTR) -> CK_RV;

impl RawModule {
    /// The function list of the module at `path` (already loaded and `C_Initialize`d by
    /// cryptoki in this process).
    pub(crate) fn load(path: &Path) -> cryptoki::error::Result<RawModule> {
        let failed = |_| CryptokiError::Pkcs11(RvError::GeneralError, Function::GetFunctionList);
        // SAFETY: loading runs the library's initialisers; this is the library cryptoki has
        // already loaded from the same path (dlopen returns the loaded copy), so they ran.
        let lib = unsafe { libloading::Library::new(path) }.map_err(failed)?;
        let mut list = std::ptr::null_mut();
        {
            // SAFETY: `C_GetFunctionList` has this signature in every PKCS#11 version (§5.2).
            let get: libloading::Symbol<'_, GetFunctionList> =
                unsafe { lib.get(b"C_GetFunctionList\0") }.map_err(failed)?;
            // SAFETY: `list` is a valid out-pointer for the call.
            Rv::from(unsafe { get(&mut list) }).into_result(Function::GetFunctionList)?;
        }
        if list.is_null() {
            return Err(CryptokiError::Pkcs11(
                RvError::GeneralError,
                Function::GetFunctionList,
            ));
        }
        // SAFETY: the module returned a non-NULL pointer to its function list, which stays
        // valid while it is loaded; the struct is plain data (a version and function
        // pointers), copied here.
        let list = unsafe { *list };
        Ok(RawModule { list, _lib: lib })
    }
}

/// `C_EncryptInit` + one `C_Encrypt` into a buffer of `out_len` bytes; if the module answers
/// `CKR_BUFFER_TOO_SMALL` with a larger length, once more with that length. On an error the
/// operation may still be active: the caller's session must not be reused (the pool closes
/// a session after `CKR_BUFFER_TOO_SMALL`, see `PooledSession::note_error`).
pub(crate) fn encrypt_sized(
    raw: &RawModule,
    s: &Session,
    mechanism: &Mechanism<'_>,
    key: ObjectHandle,
    data: &[u8],
    out_len: usize,
) -> cryptoki::error::Result<Vec<u8>> {
    let (Some(init), Some(encrypt)) = (raw.list.C_EncryptInit, raw.list.C_Encrypt) else {
        return Err(CryptokiError::Pkcs11(
            RvError::FunctionNotSupported,
            Function::EncryptInit,
        ));
    };
    // Kept alive (with the parameters it points into, borrowed by `mechanism`) across the
    // calls that read it.
    let mut mech: CK_MECHANISM = mechanism.into();
    let data_len = CK_ULONG::try_from(data.len())?;
    // SAFETY: `mech` and the parameters it points to (borrowed from `mechanism`) live for
    // the call; the session and key handles are the module's own.
    Rv::from(unsafe { init(s.handle(), &mut mech, key.handle()) })
        .into_result(Function::EncryptInit)?;
    let mut out = vec![0u8; out_len];
    for _ in 0..2 {
        let mut len = CK_ULONG::try_from(out.len())?;
        // SAFETY: `data` is readable for `data_len` bytes (the module does not write it,
        // PKCS#11 §5.8), `out` writable for `len` bytes, `len` a valid in/out pointer.
        let rv = unsafe {
            encrypt(
                s.handle(),
                data.as_ptr().cast_mut(),
                data_len,
                out.as_mut_ptr(),
                &mut len,
            )
        };
        let len = usize::try_from(len)?;
        match Rv::from(rv).into_result(Function::Encrypt) {
            Ok(()) => {
                out.truncate(len.min(out.len()));
                return Ok(out);
            }
            Err(CryptokiError::Pkcs11(RvError::BufferTooSmall, _)) if len > out.len() => {
                // The operation is still active (§5.2): once more with the length asked.
                out = vec![0u8; len];
            }
            Err(e) => return Err(e),
        }
    }
    Err(CryptokiError::Pkcs11(
        RvError::BufferTooSmall,
        Function::Encrypt,
    ))
}

/// `C_UnwrapKey` with a mechanism cryptoki 0.12 cannot name (`mechanism_type`, no
/// parameter): `CKM_AES_KEY_WRAP_KWP` (0x210B, RFC 5649), which NSS softokn 3.87 has and
/// whose `CKM_AES_KEY_WRAP_PAD` is not RFC 5649 (see [`crate::kwp`]).
pub(crate) fn unwrap_key_no_param(
    raw: &RawModule,
    s: &Session,
    mechanism_type: CK_ULONG,
    unwrapping_key: ObjectHandle,
    wrapped: &[u8],
    template: &[Attribute],
) -> cryptoki::error::Result<ObjectHandle> {
    let Some(unwrap) = raw.list.C_UnwrapKey else {
        return Err(CryptokiError::Pkcs11(
            RvError::FunctionNotSupported,
            Function::UnwrapKey,
        ));
    };
    let mut mech = CK_MECHANISM {
        mechanism: mechanism_type,
        pParameter: std::ptr::null_mut(),
        ulParameterLen: 0,
    };
    // Kept alive across the call: each CK_ATTRIBUTE points into `template`'s values.
    let mut attrs: Vec<CK_ATTRIBUTE> = template.iter().map(CK_ATTRIBUTE::from).collect();
    let wrapped_len = CK_ULONG::try_from(wrapped.len())?;
    let attrs_len = CK_ULONG::try_from(attrs.len())?;
    let mut handle: CK_OBJECT_HANDLE = 0;
    // SAFETY: `mech` has no parameter; `wrapped` is readable for `wrapped_len` bytes (the
    // module does not write it, PKCS#11 §5.14); `attrs` and the values they point to
    // (borrowed from `template`) live for the call and are only read; `handle` is a valid
    // out-pointer; the session and key handles are the module's own.
    let rv = unsafe {
        unwrap(
            s.handle(),
            &mut mech,
            unwrapping_key.handle(),
            wrapped.as_ptr().cast_mut(),
            wrapped_len,
            attrs.as_mut_ptr(),
            attrs_len,
            &mut handle,
        )
    };
    Rv::from(rv).into_result(Function::UnwrapKey)?;
    // SAFETY: `handle` is the object the module just made in this session's token.
    Ok(unsafe { ObjectHandle::new_from_raw(handle) })
}

/// `C_WrapKey` with a mechanism cryptoki 0.12 cannot name (`mechanism_type`, no parameter):
/// `CKM_AES_KEY_WRAP_KWP` (0x210B, RFC 5649) on NSS softokn 3.87, whose
/// `CKM_AES_KEY_WRAP_PAD` is not RFC 5649 (see [`crate::kwp`]). PKCS#11's two-call length
/// protocol (§5.2): a NULL buffer asks for the length, then the key is wrapped into a buffer
/// of that length. softokn 3.87 answers the length query of `CKM_AES_KEY_WRAP_KWP` short
/// (then `CKR_BUFFER_TOO_SMALL`): on that answer the buffer grows (to the length the module
/// asks, or twice plus the 16 bytes RFC 5649 adds at most), a bounded number of times;
/// `C_WrapKey` keeps no operation active, so each call stands alone.
pub(crate) fn wrap_key_no_param(
    raw: &RawModule,
    s: &Session,
    mechanism_type: CK_ULONG,
    wrapping_key: ObjectHandle,
    key: ObjectHandle,
) -> cryptoki::error::Result<Vec<u8>> {
    let Some(wrap) = raw.list.C_WrapKey else {
        return Err(CryptokiError::Pkcs11(
            RvError::FunctionNotSupported,
            Function::WrapKey,
        ));
    };
    let mut mech = CK_MECHANISM {
        mechanism: mechanism_type,
        pParameter: std::ptr::null_mut(),
        ulParameterLen: 0,
    };
    let mut len: CK_ULONG = 0;
    // SAFETY: `mech` has no parameter and lives for the call; a NULL output buffer asks only
    // for the length (§5.2), written to `len`, a valid out-pointer; the session and key
    // handles are the module's own.
    let rv = unsafe {
        wrap(
            s.handle(),
            &mut mech,
            wrapping_key.handle(),
            key.handle(),
            std::ptr::null_mut(),
            &mut len,
        )
    };
    Rv::from(rv).into_result(Function::WrapKey)?;
    let mut out = vec![0u8; usize::try_from(len)?];
    for _ in 0..4 {
        let mut len = CK_ULONG::try_from(out.len())?;
        // SAFETY: as above; `out` is writable for `len` bytes and `len` a valid in/out
        // pointer.
        let rv = unsafe {
            wrap(
                s.handle(),
                &mut mech,
                wrapping_key.handle(),
                key.handle(),
                out.as_mut_ptr(),
                &mut len,
            )
        };
        let len = usize::try_from(len)?;
        match Rv::from(rv).into_result(Function::WrapKey) {
            Ok(()) => {
                out.truncate(len.min(out.len()));
                return Ok(out);
            }
            Err(CryptokiError::Pkcs11(RvError::BufferTooSmall, _)) => {
                out = vec![0u8; len.max(out.len() * 2 + 16)];
            }
            Err(e) => return Err(e),
        }
    }
    Err(CryptokiError::Pkcs11(
        RvError::BufferTooSmall,
        Function::WrapKey,
    ))
}
