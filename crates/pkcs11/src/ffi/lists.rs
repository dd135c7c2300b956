//! The function lists and interfaces: immutable statics generated from one list of names
//! (style rule 4; kryoptic hand-copies three tables of ~90 entries, we do not).
//!
//! [`pkcs11_functions!`] is the one list: the 2.40 functions, then those 3.0 added. It
//! builds `CK_FUNCTION_LIST` (2.40) and `CK_FUNCTION_LIST_3_0` with struct literals, so a
//! missing or misspelt entry is a compile error, never a NULL pointer. The 3.0 list differs
//! from the 2.40 one in six entries (`C_GetInfo` and the `*Init` with their NULL-mechanism
//! cancel), which are not exported: hosts that `dlsym` the symbols are 2.40 hosts.

use super::entries::*;
use pkcs11_sys::{
    CK_CHAR, CK_FLAGS, CK_FUNCTION_LIST, CK_FUNCTION_LIST_3_0, CK_INTERFACE, CK_INTERFACE_PTR,
    CK_VERSION,
};
use std::ffi::c_void;

macro_rules! pkcs11_functions {
    ($make:ident) => {
        $make! {
            v2: [
                C_Initialize, C_Finalize, C_GetInfo, C_GetFunctionList, C_GetSlotList,
                C_GetSlotInfo, C_GetTokenInfo, C_GetMechanismList, C_GetMechanismInfo,
                C_InitToken, C_InitPIN, C_SetPIN, C_OpenSession, C_CloseSession,
                C_CloseAllSessions, C_GetSessionInfo, C_GetOperationState,
                C_SetOperationState, C_Login, C_Logout, C_CreateObject, C_CopyObject,
                C_DestroyObject, C_GetObjectSize, C_GetAttributeValue, C_SetAttributeValue,
                C_FindObjectsInit, C_FindObjects, C_FindObjectsFinal, C_EncryptInit,
                C_Encrypt, C_EncryptUpdate, C_EncryptFinal, C_DecryptInit, C_Decrypt,
                C_DecryptUpdate, C_DecryptFinal, C_DigestInit, C_Digest, C_DigestUpdate,
                C_DigestKey, C_DigestFinal, C_SignInit, C_Sign, C_SignUpdate, C_SignFinal,
                C_SignRecoverInit, C_SignRecover, C_VerifyInit, C_Verify, C_VerifyUpdate,
                C_VerifyFinal, C_VerifyRecoverInit, C_VerifyRecover, C_DigestEncryptUpdate,
                C_DecryptDigestUpdate, C_SignEncryptUpdate, C_DecryptVerifyUpdate,
                C_GenerateKey, C_GenerateKeyPair, C_WrapKey, C_UnwrapKey, C_DeriveKey,
                C_SeedRandom, C_GenerateRandom, C_GetFunctionStatus, C_CancelFunction,
                C_WaitForSlotEvent
            ],
            v3: [
                C_GetInterfaceList, C_GetInterface, C_LoginUser, C_SessionCancel,
                C_MessageEncryptInit, C_EncryptMessage, C_EncryptMessageBegin,
                C_EncryptMessageNext, C_MessageEncryptFinal, C_MessageDecryptInit,
                C_DecryptMessage, C_DecryptMessageBegin, C_DecryptMessageNext,
                C_MessageDecryptFinal, C_MessageSignInit, C_SignMessage, C_SignMessageBegin,
                C_SignMessageNext, C_MessageSignFinal, C_MessageVerifyInit, C_VerifyMessage,
                C_VerifyMessageBegin, C_VerifyMessageNext, C_MessageVerifyFinal
            ]
        }
    };
}

macro_rules! make_lists {
    (v2: [$($a:ident),*], v3: [$($b:ident),*]) => {
        /// The PKCS#11 2.40 function list (`C_GetFunctionList`).
        pub static FUNCTION_LIST_240: CK_FUNCTION_LIST = CK_FUNCTION_LIST {
            version: CK_VERSION { major: 2, minor: 40 },
            $($a: Some($a),)*
        };
        /// Every 3.0 function, each the exported (2.40) entry point; [`FUNCTION_LIST_300`]
        /// replaces those whose 3.0 behaviour differs.
        const ALL_300: CK_FUNCTION_LIST_3_0 = CK_FUNCTION_LIST_3_0 {
            version: CK_VERSION { major: 3, minor: 0 },
            $($a: Some($a),)*
            $($b: Some($b),)*
        };
        /// The PKCS#11 3.0 function list (`C_GetInterface`): a NULL mechanism at `*Init`
        /// cancels the operation (2.40 has no such rule: `CKR_ARGUMENTS_BAD` there), and
        /// `C_GetInfo` says 3.0.
        pub static FUNCTION_LIST_300: CK_FUNCTION_LIST_3_0 = CK_FUNCTION_LIST_3_0 {
            C_GetInfo: Some(C_GetInfo_v3),
            C_EncryptInit: Some(C_EncryptInit_v3),
            C_DecryptInit: Some(C_DecryptInit_v3),
            C_DigestInit: Some(C_DigestInit_v3),
            C_SignInit: Some(C_SignInit_v3),
            C_VerifyInit: Some(C_VerifyInit_v3),
            ..ALL_300
        };
        /// How many functions each list holds (2.40, 3.0), for tests.
        pub const FUNCTION_COUNTS: (usize, usize) =
            ([$(stringify!($a)),*].len(), [$(stringify!($a)),*].len() + [$(stringify!($b)),*].len());
    };
}

pkcs11_functions!(make_lists);

/// A `CK_INTERFACE` that may live in a `static`.
#[repr(transparent)]
pub struct Interface(pub CK_INTERFACE);

// SAFETY: the pointers inside an `Interface` point to immutable statics (a NUL-terminated
// name and a function list) that nothing ever writes through; sharing them between threads
// is as safe as sharing `&'static` references.
unsafe impl Sync for Interface {}

static INTERFACE_NAME: [u8; 8] = *b"PKCS 11\0";

/// The interfaces, newest first; both "PKCS 11", no flags (the child of a fork must call
/// `C_Initialize` again, so `CKF_INTERFACE_FORK_SAFE` is not claimed).
pub static INTERFACES: [Interface; 2] = [
    Interface(CK_INTERFACE {
        pInterfaceName: &INTERFACE_NAME as *const [u8; 8] as *mut CK_CHAR,
        pFunctionList: &FUNCTION_LIST_300 as *const CK_FUNCTION_LIST_3_0 as *mut c_void,
        flags: 0,
    }),
    Interface(CK_INTERFACE {
        pInterfaceName: &INTERFACE_NAME as *const [u8; 8] as *mut CK_CHAR,
        pFunctionList: &FUNCTION_LIST_240 as *const CK_FUNCTION_LIST as *mut c_void,
        flags: 0,
    }),
];

/// The version of interface `i`'s function list.
fn interface_version(i: usize) -> (u8, u8) {
    if i == 0 {
        (3, 0)
    } else {
        (2, 40)
    }
}

/// C_GetInterface's lookup: `name` (`None`: any, i.e. the default), `version` (`None`: the
/// newest), and every bit of `flags` set on the interface.
pub fn find_interface(
    name: Option<&[u8]>,
    version: Option<(u8, u8)>,
    flags: CK_FLAGS,
) -> Option<CK_INTERFACE_PTR> {
    if name.is_some_and(|n| n != &INTERFACE_NAME[..7]) {
        return None;
    }
    INTERFACES
        .iter()
        .enumerate()
        .find(|(i, iface)| {
            version.is_none_or(|v| v == interface_version(*i)) && iface.0.flags & flags == flags
        })
        .map(|(_, iface)| &iface.0 as *const CK_INTERFACE as CK_INTERFACE_PTR)
}
