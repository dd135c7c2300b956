//! Every PKCS#11 entry point. Each body checks its pointers first (`CKR_ARGUMENTS_BAD`,
//! before any IPC), decodes raw structures into typed values, calls the safe inner function
//! in [`crate::fns`], and writes the results back. Spec references are to
//! [PKCS#11 3.0 base](https://docs.oasis-open.org/pkcs11/pkcs11-base/v3.0/os/pkcs11-base-v3.0-os.html).

use super::args::{self, init_args, mechanism, read, slice, template, ulong, write_generated_iv};
use super::out::{self, put, two_call};
use super::{entry, list_entry, unsupported};
use crate::allow::Func;
use crate::attr::{pad, plan_get};
use crate::error::Error;
use crate::fns::{crypto, general, keys, object, session, slot};
use keyward_wire::pkcs11::{Operation, Pin};
use pkcs11_sys::*;
use std::ffi::c_void;

/// `CK_VERSION` of the crate's major.minor.
fn version((major, minor): (u8, u8)) -> CK_VERSION {
    CK_VERSION { major, minor }
}

// ------------------------------------------------------------------ 5.4 general purpose

entry! {
    /// `C_Initialize` (3.0 §5.4): a new module instance for this process. NULL args, or
    /// `CK_C_INITIALIZE_ARGS` with `CKF_OS_LOCKING_OK` (application mutex callbacks without it
    /// are `CKR_CANT_LOCK`, some but not all of them `CKR_ARGUMENTS_BAD`); `pReserved` may be
    /// a NUL-terminated `key=value` settings string (design §4). Never needs keywardd.
    fn C_Initialize = Initialize(pInitArgs: CK_VOID_PTR) {
        // SAFETY: pInitArgs is NULL or a CK_C_INITIALIZE_ARGS per the spec.
        let a = unsafe { init_args(pInitArgs as *const c_void)? };
        general::initialize(a)
    }
}

entry! {
    /// `C_Finalize` (3.0 §5.4): ends the instance; `pReserved` must be NULL.
    fn C_Finalize = Finalize(pReserved: CK_VOID_PTR) {
        if !pReserved.is_null() {
            return Err(Error::ArgumentsBad("pReserved must be NULL"));
        }
        general::finalize()
    }
}

entry! {
    /// `C_GetInfo` (3.0 §5.4), through the 2.40 list and the exported symbol: version 2.40.
    fn C_GetInfo = GetInfo(pInfo: CK_INFO_PTR) {
        // SAFETY: pInfo is NULL or a CK_INFO per the spec.
        unsafe { get_info(pInfo, None) }
    }
}

list_entry! {
    /// `C_GetInfo` (3.0 §5.4) through the 3.0 function list: version 3.0, the version of the
    /// list it was called through.
    fn C_GetInfo_v3 = GetInfo(pInfo: CK_INFO_PTR) {
        // SAFETY: pInfo is NULL or a CK_INFO per the spec.
        unsafe { get_info(pInfo, Some((3, 0))) }
    }
}

/// `C_GetInfo`'s body; `list_version` overrides the reported Cryptoki version.
///
/// # Safety
/// `pInfo` is NULL or points to a writable `CK_INFO`.
unsafe fn get_info(pInfo: CK_INFO_PTR, list_version: Option<(u8, u8)>) -> Result<(), Error> {
    if pInfo.is_null() {
        return Err(Error::ArgumentsBad("NULL pInfo"));
    }
    let i = general::info()?;
    let info = CK_INFO {
        cryptokiVersion: version(list_version.unwrap_or(i.cryptoki_version)),
        manufacturerID: pad(i.manufacturer),
        flags: 0,
        libraryDescription: pad(i.description),
        libraryVersion: version(i.library_version),
    };
    // SAFETY: pInfo is non-NULL and points to a CK_INFO per the spec.
    unsafe { put(pInfo, info) }
}

entry! {
    /// `C_GetFunctionList` (3.0 §5.4): the 2.40 function list, an immutable static.
    fn C_GetFunctionList = GetFunctionList(ppFunctionList: CK_FUNCTION_LIST_PTR_PTR) {
        let list = &super::lists::FUNCTION_LIST_240 as *const CK_FUNCTION_LIST as CK_FUNCTION_LIST_PTR;
        // SAFETY: ppFunctionList is NULL (rejected by put) or writable per the spec.
        unsafe { put(ppFunctionList, list) }
    }
}

entry! {
    /// `C_GetInterfaceList` (3.0 §5.4): "PKCS 11" 3.0 and 2.40, with the two-call protocol.
    fn C_GetInterfaceList = GetInterfaceList(pInterfacesList: CK_INTERFACE_PTR, pulCount: CK_ULONG_PTR) {
        let all: Vec<CK_INTERFACE> = super::lists::INTERFACES.iter().map(|i| i.0).collect();
        // SAFETY: pulCount and pInterfacesList are valid per the spec (NULLs are handled).
        unsafe { two_call(pInterfacesList, pulCount, &all) }
    }
}

entry! {
    /// `C_GetInterface` (3.0 §5.4): by name ("PKCS 11"; NULL: the default, 3.0), version
    /// (NULL: the newest) and required flags; no match is `CKR_ARGUMENTS_BAD`.
    fn C_GetInterface = GetInterface(
        pInterfaceName: CK_UTF8CHAR_PTR,
        pVersion: CK_VERSION_PTR,
        ppInterface: CK_INTERFACE_PTR_PTR,
        flags: CK_FLAGS,
    ) {
        if ppInterface.is_null() {
            return Err(Error::ArgumentsBad("NULL ppInterface"));
        }
        let name = if pInterfaceName.is_null() {
            None
        } else {
            // SAFETY: a NUL-terminated string per the spec; at most 256 bytes are read.
            Some(unsafe { args::c_string(pInterfaceName as *const u8, 256)? })
        };
        let version = if pVersion.is_null() {
            None
        } else {
            // SAFETY: non-NULL CK_VERSION per the spec.
            let v = unsafe { read(pVersion as *const CK_VERSION)? };
            Some((v.major, v.minor))
        };
        let found = super::lists::find_interface(name.as_deref(), version, flags)
            .ok_or(Error::ArgumentsBad("no such interface"))?;
        // SAFETY: ppInterface is non-NULL and writable per the spec.
        unsafe { put(ppInterface, found) }
    }
}

// ------------------------------------------------------------------ 5.5 slot and token

entry! {
    /// `C_GetSlotList` (3.0 §5.5): the list fixed at `C_Initialize`, two-call protocol.
    fn C_GetSlotList = GetSlotList(tokenPresent: CK_BBOOL, pSlotList: CK_SLOT_ID_PTR, pulCount: CK_ULONG_PTR) {
        if pulCount.is_null() {
            return Err(Error::ArgumentsBad("NULL pulCount"));
        }
        let ids = slot::slot_list(tokenPresent != 0)?
            .into_iter()
            .map(out::ulong64)
            .collect::<Result<Vec<CK_SLOT_ID>, _>>()?;
        // SAFETY: pulCount non-NULL, pSlotList NULL or holding *pulCount ids, per the spec.
        unsafe { two_call(pSlotList, pulCount, &ids) }
    }
}

entry! {
    /// `C_GetSlotInfo` (3.0 §5.5): `CKF_REMOVABLE_DEVICE`, and `CKF_TOKEN_PRESENT` while
    /// keywardd is reachable.
    fn C_GetSlotInfo = GetSlotInfo(slotID: CK_SLOT_ID, pInfo: CK_SLOT_INFO_PTR) {
        if pInfo.is_null() {
            return Err(Error::ArgumentsBad("NULL pInfo"));
        }
        let s = slot::slot_info(ulong(slotID))?;
        let info = CK_SLOT_INFO {
            slotDescription: pad(&s.description),
            manufacturerID: pad("Keyward"),
            flags: s.flags,
            hardwareVersion: version((0, 1)),
            firmwareVersion: version((0, 1)),
        };
        // SAFETY: non-NULL CK_SLOT_INFO per the spec.
        unsafe { put(pInfo, info) }
    }
}

entry! {
    /// `C_GetTokenInfo` (3.0 §5.5): keywardd's description of the key ring's token;
    /// `CKR_TOKEN_NOT_PRESENT` while keywardd is down.
    fn C_GetTokenInfo = GetTokenInfo(slotID: CK_SLOT_ID, pInfo: CK_TOKEN_INFO_PTR) {
        if pInfo.is_null() {
            return Err(Error::ArgumentsBad("NULL pInfo"));
        }
        let t = slot::token_info(ulong(slotID))?;
        let count = |c: Option<u64>| c.map_or(Ok(CK_UNAVAILABLE_INFORMATION), out::ulong64);
        let info = CK_TOKEN_INFO {
            label: pad(&t.label),
            manufacturerID: pad("Keyward"),
            model: pad("keywardd"),
            serialNumber: pad(&t.serial),
            flags: t.flags,
            ulMaxSessionCount: CK_EFFECTIVELY_INFINITE,
            ulSessionCount: count(t.session_count)?,
            ulMaxRwSessionCount: CK_EFFECTIVELY_INFINITE,
            ulRwSessionCount: count(t.rw_session_count)?,
            ulMaxPinLen: 64,
            ulMinPinLen: 0,
            ulTotalPublicMemory: CK_UNAVAILABLE_INFORMATION,
            ulFreePublicMemory: CK_UNAVAILABLE_INFORMATION,
            ulTotalPrivateMemory: CK_UNAVAILABLE_INFORMATION,
            ulFreePrivateMemory: CK_UNAVAILABLE_INFORMATION,
            hardwareVersion: version((0, 1)),
            firmwareVersion: version((0, 1)),
            utcTime: [b' '; 16],
        };
        // SAFETY: non-NULL CK_TOKEN_INFO per the spec.
        unsafe { put(pInfo, info) }
    }
}

entry! {
    /// `C_GetMechanismList` (3.0 §5.5): what keywardd can serve, two-call protocol.
    fn C_GetMechanismList = GetMechanismList(slotID: CK_SLOT_ID, pMechanismList: CK_MECHANISM_TYPE_PTR, pulCount: CK_ULONG_PTR) {
        if pulCount.is_null() {
            return Err(Error::ArgumentsBad("NULL pulCount"));
        }
        let list = slot::mechanism_list(ulong(slotID))?
            .into_iter()
            .map(out::ulong64)
            .collect::<Result<Vec<CK_MECHANISM_TYPE>, _>>()?;
        // SAFETY: as for C_GetSlotList.
        unsafe { two_call(pMechanismList, pulCount, &list) }
    }
}

entry! {
    /// `C_GetMechanismInfo` (3.0 §5.5).
    fn C_GetMechanismInfo = GetMechanismInfo(slotID: CK_SLOT_ID, type_: CK_MECHANISM_TYPE, pInfo: CK_MECHANISM_INFO_PTR) {
        if pInfo.is_null() {
            return Err(Error::ArgumentsBad("NULL pInfo"));
        }
        let m = slot::mechanism_info(ulong(slotID), ulong(type_))?;
        let info = CK_MECHANISM_INFO {
            ulMinKeySize: out::ulong64(m.min_key_size)?,
            ulMaxKeySize: out::ulong64(m.max_key_size)?,
            flags: m.flags,
        };
        // SAFETY: non-NULL CK_MECHANISM_INFO per the spec.
        unsafe { put(pInfo, info) }
    }
}

// ------------------------------------------------------------------ 5.6 sessions

entry! {
    /// `C_OpenSession` (3.0 §5.6): connects (and logs in again) if need be;
    /// `CKR_TOKEN_NOT_PRESENT` when keywardd is unreachable. Notify callbacks are not used.
    fn C_OpenSession = OpenSession(slotID: CK_SLOT_ID, flags: CK_FLAGS, pApplication: CK_VOID_PTR, Notify: CK_NOTIFY, phSession: CK_SESSION_HANDLE_PTR) {
        let _ = (pApplication, Notify);
        if phSession.is_null() {
            return Err(Error::ArgumentsBad("NULL phSession"));
        }
        let h = session::open_session(ulong(slotID), flags)?;
        // SAFETY: non-NULL per the check above, writable per the spec.
        unsafe { put(phSession, out::ulong64(h)?) }
    }
}

entry! {
    /// `C_CloseSession` (3.0 §5.6).
    fn C_CloseSession = CloseSession(hSession: CK_SESSION_HANDLE) {
        session::close_session(ulong(hSession))
    }
}

entry! {
    /// `C_CloseAllSessions` (3.0 §5.6).
    fn C_CloseAllSessions = CloseAllSessions(slotID: CK_SLOT_ID) {
        session::close_all_sessions(ulong(slotID))
    }
}

entry! {
    /// `C_GetSessionInfo` (3.0 §5.6).
    fn C_GetSessionInfo = GetSessionInfo(hSession: CK_SESSION_HANDLE, pInfo: CK_SESSION_INFO_PTR) {
        if pInfo.is_null() {
            return Err(Error::ArgumentsBad("NULL pInfo"));
        }
        let i = session::session_info(ulong(hSession))?;
        let info = CK_SESSION_INFO {
            slotID: out::ulong64(i.slot)?,
            state: i.state,
            flags: i.flags,
            ulDeviceError: 0,
        };
        // SAFETY: non-NULL CK_SESSION_INFO per the spec.
        unsafe { put(pInfo, info) }
    }
}

entry! {
    /// `C_Login` (3.0 §5.6; design §1): a service-account key as PIN, or an empty / NULL PIN
    /// for the pre-login principal.
    fn C_Login = Login(hSession: CK_SESSION_HANDLE, userType: CK_USER_TYPE, pPin: CK_UTF8CHAR_PTR, ulPinLen: CK_ULONG) {
        // SAFETY: pPin is NULL or valid for ulPinLen bytes per the spec.
        let pin = unsafe { slice(pPin as *const u8, ulPinLen)? };
        let pin = (!pPin.is_null()).then(|| Pin::new(pin.to_vec()));
        session::login(ulong(hSession), ulong(userType), pin)
    }
}

entry! {
    /// `C_Logout` (3.0 §5.6).
    fn C_Logout = Logout(hSession: CK_SESSION_HANDLE) {
        session::logout(ulong(hSession))
    }
}

// ------------------------------------------------------------------ 5.7 objects

entry! {
    /// `C_CreateObject` (3.0 §5.7).
    fn C_CreateObject = CreateObject(hSession: CK_SESSION_HANDLE, pTemplate: CK_ATTRIBUTE_PTR, ulCount: CK_ULONG, phObject: CK_OBJECT_HANDLE_PTR) {
        if phObject.is_null() {
            return Err(Error::ArgumentsBad("NULL phObject"));
        }
        // SAFETY: pTemplate is NULL or holds ulCount attributes per the spec.
        let t = unsafe { template(pTemplate, ulCount)? };
        let o = object::create_object(ulong(hSession), t)?;
        // SAFETY: non-NULL, writable per the spec.
        unsafe { put(phObject, out::ulong64(o)?) }
    }
}

entry! {
    /// `C_CopyObject` (3.0 §5.7): a Keyward key is `CKR_ACTION_PROHIBITED` (design §4).
    fn C_CopyObject = CopyObject(hSession: CK_SESSION_HANDLE, hObject: CK_OBJECT_HANDLE, pTemplate: CK_ATTRIBUTE_PTR, ulCount: CK_ULONG, phNewObject: CK_OBJECT_HANDLE_PTR) {
        if phNewObject.is_null() {
            return Err(Error::ArgumentsBad("NULL phNewObject"));
        }
        // SAFETY: as for C_CreateObject.
        let t = unsafe { template(pTemplate, ulCount)? };
        let o = object::copy_object(ulong(hSession), ulong(hObject), t)?;
        // SAFETY: non-NULL, writable per the spec.
        unsafe { put(phNewObject, out::ulong64(o)?) }
    }
}

entry! {
    /// `C_DestroyObject` (3.0 §5.7).
    fn C_DestroyObject = DestroyObject(hSession: CK_SESSION_HANDLE, hObject: CK_OBJECT_HANDLE) {
        object::destroy_object(ulong(hSession), ulong(hObject))
    }
}

entry! {
    /// `C_GetObjectSize` (3.0 §5.7).
    fn C_GetObjectSize = GetObjectSize(hSession: CK_SESSION_HANDLE, hObject: CK_OBJECT_HANDLE, pulSize: CK_ULONG_PTR) {
        if pulSize.is_null() {
            return Err(Error::ArgumentsBad("NULL pulSize"));
        }
        let n = object::object_size(ulong(hSession), ulong(hObject))?;
        let n = n.map_or(Ok(CK_UNAVAILABLE_INFORMATION), out::ulong64)?;
        // SAFETY: non-NULL, writable per the spec.
        unsafe { put(pulSize, n) }
    }
}

entry! {
    /// `C_GetAttributeValue` (3.0 §5.7): every attribute is processed; a sensitive or
    /// unknown one, or a short buffer, gets `CK_UNAVAILABLE_INFORMATION` and the call's code
    /// says which (design §4: public values without permission are sensitive).
    fn C_GetAttributeValue = GetAttributeValue(hSession: CK_SESSION_HANDLE, hObject: CK_OBJECT_HANDLE, pTemplate: CK_ATTRIBUTE_PTR, ulCount: CK_ULONG) {
        if pTemplate.is_null() && ulCount != 0 {
            return Err(Error::ArgumentsBad("NULL pTemplate"));
        }
        let n = args::len(ulCount)?;
        // SAFETY: pTemplate holds ulCount attributes, read-write, per the spec.
        let raw = unsafe { slice(pTemplate as *const CK_ATTRIBUTE, ulCount)? };
        let types: Vec<u64> = raw.iter().map(|a| ulong(a.type_)).collect();
        let caps = raw
            .iter()
            .map(|a| if a.pValue.is_null() { Ok(None) } else { args::len(a.ulValueLen).map(Some) })
            .collect::<Result<Vec<_>, _>>()?;
        let results = object::get_attribute_value(ulong(hSession), ulong(hObject), types)?;
        let (outs, rv) = plan_get(results, &caps)?;
        for (i, o) in outs.into_iter().enumerate().take(n) {
            // SAFETY: i < ulCount, inside the caller's template.
            let entry = unsafe { pTemplate.add(i) };
            // SAFETY: as above; the template is writable per the spec.
            let a = unsafe { read(entry as *const CK_ATTRIBUTE)? };
            if let Some(bytes) = &o.bytes {
                // SAFETY: pValue is non-NULL (bytes are only planned then) and holds at
                // least ulValueLen >= bytes.len() bytes per the spec.
                unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), a.pValue as *mut u8, bytes.len()) };
            }
            let len = o.len.map_or(Ok(CK_UNAVAILABLE_INFORMATION), out::ulong)?;
            // SAFETY: ulValueLen of entry i, writable per the spec.
            unsafe { put(std::ptr::addr_of_mut!((*entry).ulValueLen), len)? };
        }
        rv.map_or(Ok(()), Err)
    }
}

entry! {
    /// `C_SetAttributeValue` (3.0 §5.7).
    fn C_SetAttributeValue = SetAttributeValue(hSession: CK_SESSION_HANDLE, hObject: CK_OBJECT_HANDLE, pTemplate: CK_ATTRIBUTE_PTR, ulCount: CK_ULONG) {
        // SAFETY: as for C_CreateObject.
        let t = unsafe { template(pTemplate, ulCount)? };
        object::set_attribute_value(ulong(hSession), ulong(hObject), t)
    }
}

entry! {
    /// `C_FindObjectsInit` (3.0 §5.7).
    fn C_FindObjectsInit = FindObjectsInit(hSession: CK_SESSION_HANDLE, pTemplate: CK_ATTRIBUTE_PTR, ulCount: CK_ULONG) {
        // SAFETY: as for C_CreateObject.
        let t = unsafe { template(pTemplate, ulCount)? };
        object::find_init(ulong(hSession), t)
    }
}

entry! {
    /// `C_FindObjects` (3.0 §5.7).
    fn C_FindObjects = FindObjects(hSession: CK_SESSION_HANDLE, phObject: CK_OBJECT_HANDLE_PTR, ulMaxObjectCount: CK_ULONG, pulObjectCount: CK_ULONG_PTR) {
        if pulObjectCount.is_null() || (phObject.is_null() && ulMaxObjectCount != 0) {
            return Err(Error::ArgumentsBad("NULL output"));
        }
        let found = object::find(ulong(hSession), args::len(ulMaxObjectCount)?)?;
        for (i, h) in found.iter().enumerate() {
            // SAFETY: i < found.len() <= ulMaxObjectCount, inside the caller's array.
            unsafe { put(phObject.add(i), out::ulong64(*h)?)? };
        }
        // SAFETY: non-NULL, writable per the spec.
        unsafe { put(pulObjectCount, out::ulong(found.len())?) }
    }
}

entry! {
    /// `C_FindObjectsFinal` (3.0 §5.7).
    fn C_FindObjectsFinal = FindObjectsFinal(hSession: CK_SESSION_HANDLE) {
        object::find_final(ulong(hSession))
    }
}

// ------------------------------------------------------------------ 5.8-5.13 crypto

/// Which function list an entry point serves: a NULL mechanism at `*Init` cancels the
/// operation in PKCS#11 3.0 only; in 2.40 (`C_GetFunctionList`'s list and the exported
/// symbols, which 2.40 hosts call) it is `CKR_ARGUMENTS_BAD`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    V2,
    V3,
}

/// `*Init`: a NULL mechanism cancels the operation (3.0 list) or is `CKR_ARGUMENTS_BAD`.
///
/// # Safety
/// `m` is NULL or a valid `CK_MECHANISM`.
unsafe fn init(
    h: CK_SESSION_HANDLE,
    op: Operation,
    m: CK_MECHANISM_PTR,
    key: Option<CK_OBJECT_HANDLE>,
    api: Api,
) -> Result<(), Error> {
    let mech = if m.is_null() {
        if api == Api::V2 {
            return Err(Error::ArgumentsBad("NULL pMechanism (2.40 has no cancel)"));
        }
        None
    } else {
        // SAFETY: forwarded contract.
        Some(unsafe { mechanism(m)? })
    };
    let params = mech.as_ref().map(|x| x.params.clone());
    let Some(iv) = crypto::op_init(ulong(h), op, mech, key.map(ulong))? else {
        return Ok(());
    };
    // Design §9: keywardd chose the IV / counter block; the client reads it back from its
    // own structure (the AWS CloudHSM / Thales convention).
    // SAFETY: m is non-NULL here (a mechanism was sent) and valid per the contract; the
    // structure it points to is the one decoded above, whose pIv holds ulIvLen bytes.
    let written = unsafe { write_generated_iv(m, params.as_ref(), iv.as_slice()) };
    if written.is_err() {
        let _ = crypto::cancel(ulong(h), op);
    }
    written
}

/// One-shot, update and final calls with output: the two-call protocol over a result
/// computed once.
///
/// # Safety
/// `out` is NULL or holds `*out_len` bytes; `out_len` is valid; `input` is NULL or holds
/// `input_len` bytes.
unsafe fn with_output(
    out: CK_BYTE_PTR,
    out_len: CK_ULONG_PTR,
    input: CK_BYTE_PTR,
    input_len: CK_ULONG,
    run: impl FnOnce(&[u8], Option<usize>) -> Result<keyward_wire::pkcs11::Blob, Error>,
) -> Result<(), Error> {
    // SAFETY: forwarded contract.
    let cap = unsafe { out::capacity(out, out_len)? };
    // SAFETY: forwarded contract.
    let data = unsafe { slice(input as *const u8, input_len)? };
    let result = run(data, cap)?;
    // SAFETY: forwarded contract.
    unsafe { two_call(out, out_len, result.as_slice()) }
}

macro_rules! crypto_entries {
    ($op:ident: $init:ident / $init3:ident = $finit:ident, $one:ident = $fone:ident, $upd:ident = $fupd:ident, $fin:ident = $ffin:ident) => {
        entry! {
            #[doc = concat!("`", stringify!($init), "` (3.0 §5.8-5.12): the use gate of design §4 is checked by keywardd here; a NULL mechanism is `CKR_ARGUMENTS_BAD` (2.40).")]
            fn $init = $finit(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR, hKey: CK_OBJECT_HANDLE) {
                // SAFETY: pMechanism is NULL or valid per the spec.
                unsafe { init(hSession, Operation::$op, pMechanism, Some(hKey), Api::V2) }
            }
        }
        list_entry! {
            #[doc = concat!("`", stringify!($init), "` of the 3.0 list: a NULL mechanism cancels the operation.")]
            fn $init3 = $finit(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR, hKey: CK_OBJECT_HANDLE) {
                // SAFETY: pMechanism is NULL or valid per the spec.
                unsafe { init(hSession, Operation::$op, pMechanism, Some(hKey), Api::V3) }
            }
        }
        entry! {
            #[doc = concat!("`", stringify!($one), "` (3.0 §5.8-5.12): one-shot, two-call protocol.")]
            fn $one = $fone(hSession: CK_SESSION_HANDLE, pData: CK_BYTE_PTR, ulDataLen: CK_ULONG, pOut: CK_BYTE_PTR, pulOutLen: CK_ULONG_PTR) {
                // SAFETY: buffers valid for their lengths per the spec.
                unsafe {
                    with_output(pOut, pulOutLen, pData, ulDataLen, |d, cap| {
                        crypto::one_shot(ulong(hSession), Func::$fone, Operation::$op, d, cap)
                    })
                }
            }
        }
        entry! {
            #[doc = concat!("`", stringify!($upd), "` (3.0 §5.8-5.12): two-call protocol.")]
            fn $upd = $fupd(hSession: CK_SESSION_HANDLE, pPart: CK_BYTE_PTR, ulPartLen: CK_ULONG, pOut: CK_BYTE_PTR, pulOutLen: CK_ULONG_PTR) {
                // SAFETY: buffers valid for their lengths per the spec.
                unsafe {
                    with_output(pOut, pulOutLen, pPart, ulPartLen, |d, cap| {
                        crypto::update(ulong(hSession), Func::$fupd, Operation::$op, d, cap)
                    })
                }
            }
        }
        entry! {
            #[doc = concat!("`", stringify!($fin), "` (3.0 §5.8-5.12): two-call protocol.")]
            fn $fin = $ffin(hSession: CK_SESSION_HANDLE, pOut: CK_BYTE_PTR, pulOutLen: CK_ULONG_PTR) {
                // SAFETY: buffers valid for their lengths per the spec.
                unsafe {
                    with_output(pOut, pulOutLen, std::ptr::null_mut(), 0, |_, cap| {
                        crypto::finish(ulong(hSession), Func::$ffin, Operation::$op, cap)
                    })
                }
            }
        }
    };
}

crypto_entries!(Encrypt: C_EncryptInit / C_EncryptInit_v3 = EncryptInit, C_Encrypt = Encrypt, C_EncryptUpdate = EncryptUpdate, C_EncryptFinal = EncryptFinal);
crypto_entries!(Decrypt: C_DecryptInit / C_DecryptInit_v3 = DecryptInit, C_Decrypt = Decrypt, C_DecryptUpdate = DecryptUpdate, C_DecryptFinal = DecryptFinal);

entry! {
    /// `C_DigestInit` (3.0 §5.10).
    fn C_DigestInit = DigestInit(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR) {
        // SAFETY: pMechanism is NULL or valid per the spec.
        unsafe { init(hSession, Operation::Digest, pMechanism, None, Api::V2) }
    }
}

list_entry! {
    /// `C_DigestInit` of the 3.0 list: a NULL mechanism cancels the operation.
    fn C_DigestInit_v3 = DigestInit(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR) {
        // SAFETY: pMechanism is NULL or valid per the spec.
        unsafe { init(hSession, Operation::Digest, pMechanism, None, Api::V3) }
    }
}

entry! {
    /// `C_Digest` (3.0 §5.10): two-call protocol.
    fn C_Digest = Digest(hSession: CK_SESSION_HANDLE, pData: CK_BYTE_PTR, ulDataLen: CK_ULONG, pDigest: CK_BYTE_PTR, pulDigestLen: CK_ULONG_PTR) {
        // SAFETY: buffers valid for their lengths per the spec.
        unsafe {
            with_output(pDigest, pulDigestLen, pData, ulDataLen, |d, cap| {
                crypto::one_shot(ulong(hSession), Func::Digest, Operation::Digest, d, cap)
            })
        }
    }
}

entry! {
    /// `C_DigestUpdate` (3.0 §5.10).
    fn C_DigestUpdate = DigestUpdate(hSession: CK_SESSION_HANDLE, pPart: CK_BYTE_PTR, ulPartLen: CK_ULONG) {
        // SAFETY: pPart valid for ulPartLen bytes per the spec.
        let d = unsafe { slice(pPart as *const u8, ulPartLen)? };
        crypto::update_no_output(ulong(hSession), Operation::Digest, d)
    }
}

entry! {
    /// `C_DigestFinal` (3.0 §5.10): two-call protocol.
    fn C_DigestFinal = DigestFinal(hSession: CK_SESSION_HANDLE, pDigest: CK_BYTE_PTR, pulDigestLen: CK_ULONG_PTR) {
        // SAFETY: buffers valid for their lengths per the spec.
        unsafe {
            with_output(pDigest, pulDigestLen, std::ptr::null_mut(), 0, |_, cap| {
                crypto::finish(ulong(hSession), Func::DigestFinal, Operation::Digest, cap)
            })
        }
    }
}

entry! {
    /// `C_SignInit` (3.0 §5.11): the use gate of design §4 is checked by keywardd here.
    fn C_SignInit = SignInit(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR, hKey: CK_OBJECT_HANDLE) {
        // SAFETY: pMechanism is NULL or valid per the spec.
        unsafe { init(hSession, Operation::Sign, pMechanism, Some(hKey), Api::V2) }
    }
}

list_entry! {
    /// `C_SignInit` of the 3.0 list: a NULL mechanism cancels the operation.
    fn C_SignInit_v3 = SignInit(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR, hKey: CK_OBJECT_HANDLE) {
        // SAFETY: pMechanism is NULL or valid per the spec.
        unsafe { init(hSession, Operation::Sign, pMechanism, Some(hKey), Api::V3) }
    }
}

entry! {
    /// `C_Sign` (3.0 §5.11): two-call protocol (the signature is computed once).
    fn C_Sign = Sign(hSession: CK_SESSION_HANDLE, pData: CK_BYTE_PTR, ulDataLen: CK_ULONG, pSignature: CK_BYTE_PTR, pulSignatureLen: CK_ULONG_PTR) {
        // SAFETY: buffers valid for their lengths per the spec.
        unsafe {
            with_output(pSignature, pulSignatureLen, pData, ulDataLen, |d, cap| {
                crypto::one_shot(ulong(hSession), Func::Sign, Operation::Sign, d, cap)
            })
        }
    }
}

entry! {
    /// `C_SignUpdate` (3.0 §5.11).
    fn C_SignUpdate = SignUpdate(hSession: CK_SESSION_HANDLE, pPart: CK_BYTE_PTR, ulPartLen: CK_ULONG) {
        // SAFETY: pPart valid for ulPartLen bytes per the spec.
        let d = unsafe { slice(pPart as *const u8, ulPartLen)? };
        crypto::update_no_output(ulong(hSession), Operation::Sign, d)
    }
}

entry! {
    /// `C_SignFinal` (3.0 §5.11): two-call protocol.
    fn C_SignFinal = SignFinal(hSession: CK_SESSION_HANDLE, pSignature: CK_BYTE_PTR, pulSignatureLen: CK_ULONG_PTR) {
        // SAFETY: buffers valid for their lengths per the spec.
        unsafe {
            with_output(pSignature, pulSignatureLen, std::ptr::null_mut(), 0, |_, cap| {
                crypto::finish(ulong(hSession), Func::SignFinal, Operation::Sign, cap)
            })
        }
    }
}

entry! {
    /// `C_VerifyInit` (3.0 §5.12): the use gate of design §4 is checked by keywardd here.
    fn C_VerifyInit = VerifyInit(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR, hKey: CK_OBJECT_HANDLE) {
        // SAFETY: pMechanism is NULL or valid per the spec.
        unsafe { init(hSession, Operation::Verify, pMechanism, Some(hKey), Api::V2) }
    }
}

list_entry! {
    /// `C_VerifyInit` of the 3.0 list: a NULL mechanism cancels the operation.
    fn C_VerifyInit_v3 = VerifyInit(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR, hKey: CK_OBJECT_HANDLE) {
        // SAFETY: pMechanism is NULL or valid per the spec.
        unsafe { init(hSession, Operation::Verify, pMechanism, Some(hKey), Api::V3) }
    }
}

entry! {
    /// `C_Verify` (3.0 §5.12).
    fn C_Verify = Verify(hSession: CK_SESSION_HANDLE, pData: CK_BYTE_PTR, ulDataLen: CK_ULONG, pSignature: CK_BYTE_PTR, ulSignatureLen: CK_ULONG) {
        // SAFETY: buffers valid for their lengths per the spec.
        let d = unsafe { slice(pData as *const u8, ulDataLen)? };
        // SAFETY: as above.
        let s = unsafe { slice(pSignature as *const u8, ulSignatureLen)? };
        crypto::verify(ulong(hSession), d, s)
    }
}

entry! {
    /// `C_VerifyUpdate` (3.0 §5.12).
    fn C_VerifyUpdate = VerifyUpdate(hSession: CK_SESSION_HANDLE, pPart: CK_BYTE_PTR, ulPartLen: CK_ULONG) {
        // SAFETY: pPart valid for ulPartLen bytes per the spec.
        let d = unsafe { slice(pPart as *const u8, ulPartLen)? };
        crypto::update_no_output(ulong(hSession), Operation::Verify, d)
    }
}

entry! {
    /// `C_VerifyFinal` (3.0 §5.12).
    fn C_VerifyFinal = VerifyFinal(hSession: CK_SESSION_HANDLE, pSignature: CK_BYTE_PTR, ulSignatureLen: CK_ULONG) {
        // SAFETY: pSignature valid for ulSignatureLen bytes per the spec.
        let s = unsafe { slice(pSignature as *const u8, ulSignatureLen)? };
        crypto::verify_final(ulong(hSession), s)
    }
}

// ------------------------------------------------------------------ 5.14 keys

entry! {
    /// `C_GenerateKey` (3.0 §5.14): a `PKCS11_GENERIC` Keyward key (design §2).
    fn C_GenerateKey = GenerateKey(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR, pTemplate: CK_ATTRIBUTE_PTR, ulCount: CK_ULONG, phKey: CK_OBJECT_HANDLE_PTR) {
        if pMechanism.is_null() || phKey.is_null() {
            return Err(Error::ArgumentsBad("NULL pMechanism or phKey"));
        }
        // SAFETY: valid per the spec.
        let m = unsafe { mechanism(pMechanism)? };
        // SAFETY: as for C_CreateObject.
        let t = unsafe { template(pTemplate, ulCount)? };
        let k = keys::generate_key(ulong(hSession), m, t)?;
        // SAFETY: non-NULL, writable per the spec.
        unsafe { put(phKey, out::ulong64(k)?) }
    }
}

entry! {
    /// `C_GenerateKeyPair` (3.0 §5.14).
    fn C_GenerateKeyPair = GenerateKeyPair(
        hSession: CK_SESSION_HANDLE,
        pMechanism: CK_MECHANISM_PTR,
        pPublicKeyTemplate: CK_ATTRIBUTE_PTR,
        ulPublicKeyAttributeCount: CK_ULONG,
        pPrivateKeyTemplate: CK_ATTRIBUTE_PTR,
        ulPrivateKeyAttributeCount: CK_ULONG,
        phPublicKey: CK_OBJECT_HANDLE_PTR,
        phPrivateKey: CK_OBJECT_HANDLE_PTR,
    ) {
        if pMechanism.is_null() || phPublicKey.is_null() || phPrivateKey.is_null() {
            return Err(Error::ArgumentsBad("NULL pMechanism or key handle pointer"));
        }
        // SAFETY: valid per the spec.
        let m = unsafe { mechanism(pMechanism)? };
        // SAFETY: as for C_CreateObject.
        let public = unsafe { template(pPublicKeyTemplate, ulPublicKeyAttributeCount)? };
        // SAFETY: as for C_CreateObject.
        let private = unsafe { template(pPrivateKeyTemplate, ulPrivateKeyAttributeCount)? };
        let (pu, pr) = keys::generate_key_pair(ulong(hSession), m, public, private)?;
        // SAFETY: non-NULL, writable per the spec.
        unsafe { put(phPublicKey, out::ulong64(pu)?)? };
        // SAFETY: as above.
        unsafe { put(phPrivateKey, out::ulong64(pr)?) }
    }
}

entry! {
    /// `C_WrapKey` (3.0 §5.14): two-call protocol (the wrapped key is computed once).
    fn C_WrapKey = WrapKey(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR, hWrappingKey: CK_OBJECT_HANDLE, hKey: CK_OBJECT_HANDLE, pWrappedKey: CK_BYTE_PTR, pulWrappedKeyLen: CK_ULONG_PTR) {
        if pMechanism.is_null() {
            return Err(Error::ArgumentsBad("NULL pMechanism"));
        }
        // SAFETY: valid per the spec.
        let m = unsafe { mechanism(pMechanism)? };
        // SAFETY: buffers valid for their lengths per the spec.
        unsafe {
            with_output(pWrappedKey, pulWrappedKeyLen, std::ptr::null_mut(), 0, |_, cap| {
                keys::wrap_key(ulong(hSession), m, ulong(hWrappingKey), ulong(hKey), cap)
            })
        }
    }
}

entry! {
    /// `C_UnwrapKey` (3.0 §5.14; BYOK, design §5).
    fn C_UnwrapKey = UnwrapKey(
        hSession: CK_SESSION_HANDLE,
        pMechanism: CK_MECHANISM_PTR,
        hUnwrappingKey: CK_OBJECT_HANDLE,
        pWrappedKey: CK_BYTE_PTR,
        ulWrappedKeyLen: CK_ULONG,
        pTemplate: CK_ATTRIBUTE_PTR,
        ulAttributeCount: CK_ULONG,
        phKey: CK_OBJECT_HANDLE_PTR,
    ) {
        if pMechanism.is_null() || phKey.is_null() {
            return Err(Error::ArgumentsBad("NULL pMechanism or phKey"));
        }
        // SAFETY: valid per the spec.
        let m = unsafe { mechanism(pMechanism)? };
        // SAFETY: valid for ulWrappedKeyLen bytes per the spec.
        let w = unsafe { slice(pWrappedKey as *const u8, ulWrappedKeyLen)? };
        // SAFETY: as for C_CreateObject.
        let t = unsafe { template(pTemplate, ulAttributeCount)? };
        let k = keys::unwrap_key(ulong(hSession), m, ulong(hUnwrappingKey), w, t)?;
        // SAFETY: non-NULL, writable per the spec.
        unsafe { put(phKey, out::ulong64(k)?) }
    }
}

entry! {
    /// `C_DeriveKey` (3.0 §5.14): from a Keyward key `CKR_MECHANISM_INVALID` (design §4).
    fn C_DeriveKey = DeriveKey(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR, hBaseKey: CK_OBJECT_HANDLE, pTemplate: CK_ATTRIBUTE_PTR, ulAttributeCount: CK_ULONG, phKey: CK_OBJECT_HANDLE_PTR) {
        if pMechanism.is_null() || phKey.is_null() {
            return Err(Error::ArgumentsBad("NULL pMechanism or phKey"));
        }
        // SAFETY: valid per the spec.
        let m = unsafe { mechanism(pMechanism)? };
        // SAFETY: as for C_CreateObject.
        let t = unsafe { template(pTemplate, ulAttributeCount)? };
        let k = keys::derive_key(ulong(hSession), m, ulong(hBaseKey), t)?;
        // SAFETY: non-NULL, writable per the spec.
        unsafe { put(phKey, out::ulong64(k)?) }
    }
}

// ------------------------------------------------------------------ 5.15 random

entry! {
    /// `C_SeedRandom` (3.0 §5.15): `CKR_RANDOM_SEED_NOT_SUPPORTED`.
    fn C_SeedRandom = SeedRandom(hSession: CK_SESSION_HANDLE, pSeed: CK_BYTE_PTR, ulSeedLen: CK_ULONG) {
        // SAFETY: valid for ulSeedLen bytes per the spec (checked, not used).
        unsafe { slice(pSeed as *const u8, ulSeedLen)? };
        crypto::seed_random(ulong(hSession))
    }
}

entry! {
    /// `C_GenerateRandom` (3.0 §5.15).
    fn C_GenerateRandom = GenerateRandom(hSession: CK_SESSION_HANDLE, RandomData: CK_BYTE_PTR, ulRandomLen: CK_ULONG) {
        let n = args::len(ulRandomLen)?;
        if RandomData.is_null() && n != 0 {
            return Err(Error::ArgumentsBad("NULL RandomData"));
        }
        if n == 0 {
            return crypto::generate_random(ulong(hSession), 0).map(drop);
        }
        let bytes = crypto::generate_random(ulong(hSession), n)?;
        // SAFETY: RandomData is non-NULL and holds ulRandomLen == bytes.len() bytes.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_slice().as_ptr(), RandomData, n) };
        Ok(())
    }
}

// ------------------------------------------------------------------ 5.16 legacy parallel

entry! {
    /// `C_GetFunctionStatus` (3.0 §5.16): legacy; `CKR_FUNCTION_NOT_PARALLEL`.
    fn C_GetFunctionStatus = GetFunctionStatus(hSession: CK_SESSION_HANDLE) {
        crate::state::instance()?;
        let _ = hSession;
        Err(Error::FunctionNotParallel)
    }
}

entry! {
    /// `C_CancelFunction` (3.0 §5.16): legacy; `CKR_FUNCTION_NOT_PARALLEL`.
    fn C_CancelFunction = CancelFunction(hSession: CK_SESSION_HANDLE) {
        crate::state::instance()?;
        let _ = hSession;
        Err(Error::FunctionNotParallel)
    }
}

// ------------------------------------------------------------------ not offered

unsupported! {
    C_InitToken = InitToken(slotID: CK_SLOT_ID, pPin: CK_UTF8CHAR_PTR, ulPinLen: CK_ULONG, pLabel: CK_UTF8CHAR_PTR);
    C_InitPIN = InitPin(hSession: CK_SESSION_HANDLE, pPin: CK_UTF8CHAR_PTR, ulPinLen: CK_ULONG);
    C_SetPIN = SetPin(hSession: CK_SESSION_HANDLE, pOldPin: CK_UTF8CHAR_PTR, ulOldLen: CK_ULONG, pNewPin: CK_UTF8CHAR_PTR, ulNewLen: CK_ULONG);
    C_GetOperationState = GetOperationState(hSession: CK_SESSION_HANDLE, pOperationState: CK_BYTE_PTR, pulOperationStateLen: CK_ULONG_PTR);
    C_SetOperationState = SetOperationState(hSession: CK_SESSION_HANDLE, pOperationState: CK_BYTE_PTR, ulOperationStateLen: CK_ULONG, hEncryptionKey: CK_OBJECT_HANDLE, hAuthenticationKey: CK_OBJECT_HANDLE);
    C_DigestKey = DigestKey(hSession: CK_SESSION_HANDLE, hKey: CK_OBJECT_HANDLE);
    C_SignRecoverInit = SignRecoverInit(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR, hKey: CK_OBJECT_HANDLE);
    C_SignRecover = SignRecover(hSession: CK_SESSION_HANDLE, pData: CK_BYTE_PTR, ulDataLen: CK_ULONG, pSignature: CK_BYTE_PTR, pulSignatureLen: CK_ULONG_PTR);
    C_VerifyRecoverInit = VerifyRecoverInit(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR, hKey: CK_OBJECT_HANDLE);
    C_VerifyRecover = VerifyRecover(hSession: CK_SESSION_HANDLE, pSignature: CK_BYTE_PTR, ulSignatureLen: CK_ULONG, pData: CK_BYTE_PTR, pulDataLen: CK_ULONG_PTR);
    C_DigestEncryptUpdate = DigestEncryptUpdate(hSession: CK_SESSION_HANDLE, pPart: CK_BYTE_PTR, ulPartLen: CK_ULONG, pEncryptedPart: CK_BYTE_PTR, pulEncryptedPartLen: CK_ULONG_PTR);
    C_DecryptDigestUpdate = DecryptDigestUpdate(hSession: CK_SESSION_HANDLE, pEncryptedPart: CK_BYTE_PTR, ulEncryptedPartLen: CK_ULONG, pPart: CK_BYTE_PTR, pulPartLen: CK_ULONG_PTR);
    C_SignEncryptUpdate = SignEncryptUpdate(hSession: CK_SESSION_HANDLE, pPart: CK_BYTE_PTR, ulPartLen: CK_ULONG, pEncryptedPart: CK_BYTE_PTR, pulEncryptedPartLen: CK_ULONG_PTR);
    C_DecryptVerifyUpdate = DecryptVerifyUpdate(hSession: CK_SESSION_HANDLE, pEncryptedPart: CK_BYTE_PTR, ulEncryptedPartLen: CK_ULONG, pPart: CK_BYTE_PTR, pulPartLen: CK_ULONG_PTR);
    C_WaitForSlotEvent = WaitForSlotEvent(flags: CK_FLAGS, pSlot: CK_SLOT_ID_PTR, pRserved: CK_VOID_PTR);
    C_LoginUser = LoginUser(hSession: CK_SESSION_HANDLE, userType: CK_USER_TYPE, pPin: CK_UTF8CHAR_PTR, ulPinLen: CK_ULONG, pUsername: CK_UTF8CHAR_PTR, ulUsernameLen: CK_ULONG);
    C_SessionCancel = SessionCancel(hSession: CK_SESSION_HANDLE, flags: CK_FLAGS);
    C_MessageEncryptInit = MessageEncryptInit(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR, hKey: CK_OBJECT_HANDLE);
    C_EncryptMessage = EncryptMessage(hSession: CK_SESSION_HANDLE, pParameter: CK_VOID_PTR, ulParameterLen: CK_ULONG, pAssociatedData: CK_BYTE_PTR, ulAssociatedDataLen: CK_ULONG, pPlaintext: CK_BYTE_PTR, ulPlaintextLen: CK_ULONG, pCiphertext: CK_BYTE_PTR, pulCiphertextLen: CK_ULONG_PTR);
    C_EncryptMessageBegin = EncryptMessageBegin(hSession: CK_SESSION_HANDLE, pParameter: CK_VOID_PTR, ulParameterLen: CK_ULONG, pAssociatedData: CK_BYTE_PTR, ulAssociatedDataLen: CK_ULONG);
    C_EncryptMessageNext = EncryptMessageNext(hSession: CK_SESSION_HANDLE, pParameter: CK_VOID_PTR, ulParameterLen: CK_ULONG, pPlaintextPart: CK_BYTE_PTR, ulPlaintextPartLen: CK_ULONG, pCiphertextPart: CK_BYTE_PTR, pulCiphertextPartLen: CK_ULONG_PTR, flags: CK_FLAGS);
    C_MessageEncryptFinal = MessageEncryptFinal(hSession: CK_SESSION_HANDLE);
    C_MessageDecryptInit = MessageDecryptInit(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR, hKey: CK_OBJECT_HANDLE);
    C_DecryptMessage = DecryptMessage(hSession: CK_SESSION_HANDLE, pParameter: CK_VOID_PTR, ulParameterLen: CK_ULONG, pAssociatedData: CK_BYTE_PTR, ulAssociatedDataLen: CK_ULONG, pCiphertext: CK_BYTE_PTR, ulCiphertextLen: CK_ULONG, pPlaintext: CK_BYTE_PTR, pulPlaintextLen: CK_ULONG_PTR);
    C_DecryptMessageBegin = DecryptMessageBegin(hSession: CK_SESSION_HANDLE, pParameter: CK_VOID_PTR, ulParameterLen: CK_ULONG, pAssociatedData: CK_BYTE_PTR, ulAssociatedDataLen: CK_ULONG);
    C_DecryptMessageNext = DecryptMessageNext(hSession: CK_SESSION_HANDLE, pParameter: CK_VOID_PTR, ulParameterLen: CK_ULONG, pCiphertextPart: CK_BYTE_PTR, ulCiphertextPartLen: CK_ULONG, pPlaintextPart: CK_BYTE_PTR, pulPlaintextPartLen: CK_ULONG_PTR, flags: CK_FLAGS);
    C_MessageDecryptFinal = MessageDecryptFinal(hSession: CK_SESSION_HANDLE);
    C_MessageSignInit = MessageSignInit(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR, hKey: CK_OBJECT_HANDLE);
    C_SignMessage = SignMessage(hSession: CK_SESSION_HANDLE, pParameter: CK_VOID_PTR, ulParameterLen: CK_ULONG, pData: CK_BYTE_PTR, ulDataLen: CK_ULONG, pSignature: CK_BYTE_PTR, pulSignatureLen: CK_ULONG_PTR);
    C_SignMessageBegin = SignMessageBegin(hSession: CK_SESSION_HANDLE, pParameter: CK_VOID_PTR, ulParameterLen: CK_ULONG);
    C_SignMessageNext = SignMessageNext(hSession: CK_SESSION_HANDLE, pParameter: CK_VOID_PTR, ulParameterLen: CK_ULONG, pData: CK_BYTE_PTR, ulDataLen: CK_ULONG, pSignature: CK_BYTE_PTR, pulSignatureLen: CK_ULONG_PTR);
    C_MessageSignFinal = MessageSignFinal(hSession: CK_SESSION_HANDLE);
    C_MessageVerifyInit = MessageVerifyInit(hSession: CK_SESSION_HANDLE, pMechanism: CK_MECHANISM_PTR, hKey: CK_OBJECT_HANDLE);
    C_VerifyMessage = VerifyMessage(hSession: CK_SESSION_HANDLE, pParameter: CK_VOID_PTR, ulParameterLen: CK_ULONG, pData: CK_BYTE_PTR, ulDataLen: CK_ULONG, pSignature: CK_BYTE_PTR, ulSignatureLen: CK_ULONG);
    C_VerifyMessageBegin = VerifyMessageBegin(hSession: CK_SESSION_HANDLE, pParameter: CK_VOID_PTR, ulParameterLen: CK_ULONG);
    C_VerifyMessageNext = VerifyMessageNext(hSession: CK_SESSION_HANDLE, pParameter: CK_VOID_PTR, ulParameterLen: CK_ULONG, pData: CK_BYTE_PTR, ulDataLen: CK_ULONG, pSignature: CK_BYTE_PTR, ulSignatureLen: CK_ULONG);
    C_MessageVerifyFinal = MessageVerifyFinal(hSession: CK_SESSION_HANDLE);
}
