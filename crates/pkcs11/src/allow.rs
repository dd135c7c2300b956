//! Which CK_RV each C_ function may return (PKCS#11 3.0 §5, each function's list), and the
//! narrowing of any other code to the closest allowed one.
//!
//! Every entry point ends in [`narrow`]: whatever the daemon, the connection or a bug
//! produced, the host sees only a code the spec lists for that function (style: "never a code
//! the function may not return"). [`Func`] names the functions; its table is the one list the
//! entry points, the panic hook and the tests share.

use pkcs11_sys as sys;
use pkcs11_sys::CK_RV;

/// Codes every function may return (3.0 §5.1: any function may fail with these; every
/// function has a "not supported" stub form; `CKR_ARGUMENTS_BAD` is listed for every function
/// that takes arguments, and the module only returns it for one that does).
const UNIVERSAL: &[CK_RV] = &[
    sys::CKR_OK,
    sys::CKR_GENERAL_ERROR,
    sys::CKR_HOST_MEMORY,
    sys::CKR_FUNCTION_FAILED,
    sys::CKR_FUNCTION_NOT_SUPPORTED,
    sys::CKR_ARGUMENTS_BAD,
];
/// Everything but C_Initialize, C_GetFunctionList and the interface functions.
const INIT: &[CK_RV] = &[sys::CKR_CRYPTOKI_NOT_INITIALIZED];
/// Functions that reach the token.
const DEVICE: &[CK_RV] = &[
    sys::CKR_DEVICE_ERROR,
    sys::CKR_DEVICE_MEMORY,
    sys::CKR_DEVICE_REMOVED,
];
/// Functions that take a session handle.
const SESSION: &[CK_RV] = &[sys::CKR_SESSION_CLOSED, sys::CKR_SESSION_HANDLE_INVALID];
/// Functions that take a slot id.
const SLOT: &[CK_RV] = &[
    sys::CKR_SLOT_ID_INVALID,
    sys::CKR_TOKEN_NOT_PRESENT,
    sys::CKR_TOKEN_NOT_RECOGNIZED,
];
/// `*Init` of encrypt, decrypt, sign, verify.
const KEY_INIT: &[CK_RV] = &[
    sys::CKR_FUNCTION_CANCELED,
    sys::CKR_KEY_FUNCTION_NOT_PERMITTED,
    sys::CKR_KEY_HANDLE_INVALID,
    sys::CKR_KEY_SIZE_RANGE,
    sys::CKR_KEY_TYPE_INCONSISTENT,
    sys::CKR_MECHANISM_INVALID,
    sys::CKR_MECHANISM_PARAM_INVALID,
    sys::CKR_OPERATION_ACTIVE,
    sys::CKR_PIN_EXPIRED,
    sys::CKR_USER_NOT_LOGGED_IN,
];
/// Calls inside an active operation.
const OP: &[CK_RV] = &[
    sys::CKR_FUNCTION_CANCELED,
    sys::CKR_OPERATION_NOT_INITIALIZED,
];
/// Functions that take a template and create objects.
const TEMPLATE: &[CK_RV] = &[
    sys::CKR_ATTRIBUTE_READ_ONLY,
    sys::CKR_ATTRIBUTE_TYPE_INVALID,
    sys::CKR_ATTRIBUTE_VALUE_INVALID,
    sys::CKR_CURVE_NOT_SUPPORTED,
    sys::CKR_DOMAIN_PARAMS_INVALID,
    sys::CKR_PIN_EXPIRED,
    sys::CKR_SESSION_READ_ONLY,
    sys::CKR_TEMPLATE_INCOMPLETE,
    sys::CKR_TEMPLATE_INCONSISTENT,
    sys::CKR_TOKEN_WRITE_PROTECTED,
    sys::CKR_USER_NOT_LOGGED_IN,
];
/// Key generation, wrapping and derivation.
const KEYMGMT: &[CK_RV] = &[
    sys::CKR_FUNCTION_CANCELED,
    sys::CKR_MECHANISM_INVALID,
    sys::CKR_MECHANISM_PARAM_INVALID,
    sys::CKR_OPERATION_ACTIVE,
];
macro_rules! functions {
    ($($name:ident => [$($group:ident),*] [$($rv:ident),*];)*) => {
        /// A PKCS#11 function of the 2.40 and 3.0 function lists.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Func {
            $(
                #[doc = concat!("C_", stringify!($name))]
                $name,
            )*
        }

        impl Func {
            /// Every function, in function-list order.
            pub const ALL: &'static [Func] = &[$(Func::$name),*];

            /// The C name, for logs.
            pub fn name(self) -> &'static str {
                match self {
                    $(Func::$name => concat!("C_", stringify!($name)),)*
                }
            }

            /// The codes this function may return besides [`UNIVERSAL`].
            fn specific(self) -> &'static [&'static [CK_RV]] {
                match self {
                    $(Func::$name => &[$($group,)* &[$(sys::$rv),*]],)*
                }
            }
        }
    };
}

functions! {
    Initialize => [] [CKR_CANT_LOCK, CKR_CRYPTOKI_ALREADY_INITIALIZED, CKR_NEED_TO_CREATE_THREADS];
    Finalize => [INIT] [];
    GetInfo => [INIT] [];
    GetFunctionList => [] [];
    GetSlotList => [INIT] [CKR_BUFFER_TOO_SMALL];
    GetSlotInfo => [INIT] [CKR_DEVICE_ERROR, CKR_SLOT_ID_INVALID];
    GetTokenInfo => [INIT, DEVICE, SLOT] [];
    GetMechanismList => [INIT, DEVICE, SLOT] [CKR_BUFFER_TOO_SMALL];
    GetMechanismInfo => [INIT, DEVICE, SLOT] [CKR_MECHANISM_INVALID];
    InitToken => [INIT, DEVICE, SLOT] [CKR_PIN_INCORRECT, CKR_PIN_LOCKED, CKR_SESSION_EXISTS,
        CKR_TOKEN_WRITE_PROTECTED];
    InitPin => [INIT, DEVICE, SESSION] [CKR_PIN_INVALID, CKR_PIN_LEN_RANGE, CKR_SESSION_READ_ONLY,
        CKR_USER_NOT_LOGGED_IN, CKR_TOKEN_WRITE_PROTECTED];
    SetPin => [INIT, DEVICE, SESSION] [CKR_PIN_INCORRECT, CKR_PIN_INVALID, CKR_PIN_LEN_RANGE,
        CKR_PIN_LOCKED, CKR_SESSION_READ_ONLY, CKR_TOKEN_WRITE_PROTECTED];
    OpenSession => [INIT, DEVICE, SLOT] [CKR_SESSION_COUNT, CKR_SESSION_PARALLEL_NOT_SUPPORTED,
        CKR_SESSION_READ_WRITE_SO_EXISTS, CKR_TOKEN_WRITE_PROTECTED];
    CloseSession => [INIT, DEVICE, SESSION] [];
    CloseAllSessions => [INIT, DEVICE, SLOT] [];
    GetSessionInfo => [INIT, DEVICE, SESSION] [];
    GetOperationState => [INIT, DEVICE, SESSION] [CKR_BUFFER_TOO_SMALL,
        CKR_OPERATION_NOT_INITIALIZED, CKR_STATE_UNSAVEABLE];
    SetOperationState => [INIT, DEVICE, SESSION] [CKR_KEY_CHANGED, CKR_KEY_NEEDED,
        CKR_KEY_NOT_NEEDED, CKR_SAVED_STATE_INVALID];
    Login => [INIT, DEVICE, SESSION] [CKR_FUNCTION_CANCELED, CKR_OPERATION_NOT_INITIALIZED,
        CKR_PIN_INCORRECT, CKR_PIN_LOCKED, CKR_SESSION_READ_ONLY_EXISTS,
        CKR_USER_ALREADY_LOGGED_IN, CKR_USER_ANOTHER_ALREADY_LOGGED_IN,
        CKR_USER_PIN_NOT_INITIALIZED, CKR_USER_TOO_MANY_TYPES, CKR_USER_TYPE_INVALID];
    Logout => [INIT, DEVICE, SESSION] [CKR_USER_NOT_LOGGED_IN];
    CreateObject => [INIT, DEVICE, SESSION, TEMPLATE] [];
    CopyObject => [INIT, DEVICE, SESSION, TEMPLATE] [CKR_ACTION_PROHIBITED,
        CKR_OBJECT_HANDLE_INVALID];
    DestroyObject => [INIT, DEVICE, SESSION] [CKR_ACTION_PROHIBITED, CKR_OBJECT_HANDLE_INVALID,
        CKR_PIN_EXPIRED, CKR_SESSION_READ_ONLY, CKR_TOKEN_WRITE_PROTECTED];
    GetObjectSize => [INIT, DEVICE, SESSION] [CKR_INFORMATION_SENSITIVE,
        CKR_OBJECT_HANDLE_INVALID];
    GetAttributeValue => [INIT, DEVICE, SESSION] [CKR_ATTRIBUTE_SENSITIVE,
        CKR_ATTRIBUTE_TYPE_INVALID, CKR_BUFFER_TOO_SMALL, CKR_OBJECT_HANDLE_INVALID];
    SetAttributeValue => [INIT, DEVICE, SESSION] [CKR_ACTION_PROHIBITED,
        CKR_ATTRIBUTE_READ_ONLY, CKR_ATTRIBUTE_TYPE_INVALID, CKR_ATTRIBUTE_VALUE_INVALID,
        CKR_OBJECT_HANDLE_INVALID, CKR_SESSION_READ_ONLY, CKR_TEMPLATE_INCONSISTENT,
        CKR_TOKEN_WRITE_PROTECTED, CKR_USER_NOT_LOGGED_IN];
    FindObjectsInit => [INIT, DEVICE, SESSION] [CKR_ATTRIBUTE_TYPE_INVALID,
        CKR_ATTRIBUTE_VALUE_INVALID, CKR_OPERATION_ACTIVE, CKR_PIN_EXPIRED];
    FindObjects => [INIT, DEVICE, SESSION] [CKR_OPERATION_NOT_INITIALIZED];
    FindObjectsFinal => [INIT, DEVICE, SESSION] [CKR_OPERATION_NOT_INITIALIZED];
    EncryptInit => [INIT, DEVICE, SESSION, KEY_INIT] [];
    Encrypt => [INIT, DEVICE, SESSION, OP] [CKR_BUFFER_TOO_SMALL, CKR_DATA_INVALID,
        CKR_DATA_LEN_RANGE];
    EncryptUpdate => [INIT, DEVICE, SESSION, OP] [CKR_BUFFER_TOO_SMALL, CKR_DATA_LEN_RANGE];
    EncryptFinal => [INIT, DEVICE, SESSION, OP] [CKR_BUFFER_TOO_SMALL, CKR_DATA_LEN_RANGE];
    DecryptInit => [INIT, DEVICE, SESSION, KEY_INIT] [];
    Decrypt => [INIT, DEVICE, SESSION, OP] [CKR_BUFFER_TOO_SMALL, CKR_ENCRYPTED_DATA_INVALID,
        CKR_ENCRYPTED_DATA_LEN_RANGE, CKR_USER_NOT_LOGGED_IN];
    DecryptUpdate => [INIT, DEVICE, SESSION, OP] [CKR_BUFFER_TOO_SMALL,
        CKR_ENCRYPTED_DATA_INVALID, CKR_ENCRYPTED_DATA_LEN_RANGE, CKR_USER_NOT_LOGGED_IN];
    DecryptFinal => [INIT, DEVICE, SESSION, OP] [CKR_BUFFER_TOO_SMALL,
        CKR_ENCRYPTED_DATA_INVALID, CKR_ENCRYPTED_DATA_LEN_RANGE, CKR_USER_NOT_LOGGED_IN];
    DigestInit => [INIT, DEVICE, SESSION] [CKR_FUNCTION_CANCELED, CKR_MECHANISM_INVALID,
        CKR_MECHANISM_PARAM_INVALID, CKR_OPERATION_ACTIVE, CKR_PIN_EXPIRED,
        CKR_USER_NOT_LOGGED_IN];
    Digest => [INIT, DEVICE, SESSION, OP] [CKR_BUFFER_TOO_SMALL];
    DigestUpdate => [INIT, DEVICE, SESSION, OP] [];
    DigestKey => [INIT, DEVICE, SESSION, OP] [CKR_KEY_HANDLE_INVALID, CKR_KEY_INDIGESTIBLE,
        CKR_KEY_SIZE_RANGE];
    DigestFinal => [INIT, DEVICE, SESSION, OP] [CKR_BUFFER_TOO_SMALL];
    SignInit => [INIT, DEVICE, SESSION, KEY_INIT] [];
    Sign => [INIT, DEVICE, SESSION, OP] [CKR_BUFFER_TOO_SMALL, CKR_DATA_INVALID,
        CKR_DATA_LEN_RANGE, CKR_USER_NOT_LOGGED_IN, CKR_FUNCTION_REJECTED];
    SignUpdate => [INIT, DEVICE, SESSION, OP] [CKR_DATA_LEN_RANGE, CKR_USER_NOT_LOGGED_IN];
    SignFinal => [INIT, DEVICE, SESSION, OP] [CKR_BUFFER_TOO_SMALL, CKR_DATA_LEN_RANGE,
        CKR_USER_NOT_LOGGED_IN, CKR_FUNCTION_REJECTED];
    SignRecoverInit => [INIT, DEVICE, SESSION, KEY_INIT] [];
    SignRecover => [INIT, DEVICE, SESSION, OP] [CKR_BUFFER_TOO_SMALL, CKR_DATA_INVALID,
        CKR_DATA_LEN_RANGE, CKR_USER_NOT_LOGGED_IN];
    VerifyInit => [INIT, DEVICE, SESSION, KEY_INIT] [];
    Verify => [INIT, DEVICE, SESSION, OP] [CKR_DATA_INVALID, CKR_DATA_LEN_RANGE,
        CKR_SIGNATURE_INVALID, CKR_SIGNATURE_LEN_RANGE];
    VerifyUpdate => [INIT, DEVICE, SESSION, OP] [CKR_DATA_LEN_RANGE];
    VerifyFinal => [INIT, DEVICE, SESSION, OP] [CKR_DATA_LEN_RANGE, CKR_SIGNATURE_INVALID,
        CKR_SIGNATURE_LEN_RANGE];
    VerifyRecoverInit => [INIT, DEVICE, SESSION, KEY_INIT] [];
    VerifyRecover => [INIT, DEVICE, SESSION, OP] [CKR_BUFFER_TOO_SMALL, CKR_DATA_INVALID,
        CKR_DATA_LEN_RANGE, CKR_SIGNATURE_INVALID, CKR_SIGNATURE_LEN_RANGE];
    DigestEncryptUpdate => [INIT, DEVICE, SESSION, OP] [CKR_BUFFER_TOO_SMALL,
        CKR_DATA_LEN_RANGE];
    DecryptDigestUpdate => [INIT, DEVICE, SESSION, OP] [CKR_BUFFER_TOO_SMALL,
        CKR_ENCRYPTED_DATA_INVALID, CKR_ENCRYPTED_DATA_LEN_RANGE];
    SignEncryptUpdate => [INIT, DEVICE, SESSION, OP] [CKR_BUFFER_TOO_SMALL,
        CKR_DATA_LEN_RANGE, CKR_USER_NOT_LOGGED_IN];
    DecryptVerifyUpdate => [INIT, DEVICE, SESSION, OP] [CKR_BUFFER_TOO_SMALL,
        CKR_DATA_LEN_RANGE, CKR_ENCRYPTED_DATA_INVALID, CKR_ENCRYPTED_DATA_LEN_RANGE];
    GenerateKey => [INIT, DEVICE, SESSION, TEMPLATE, KEYMGMT] [];
    GenerateKeyPair => [INIT, DEVICE, SESSION, TEMPLATE, KEYMGMT] [];
    WrapKey => [INIT, DEVICE, SESSION, KEYMGMT] [CKR_BUFFER_TOO_SMALL, CKR_KEY_HANDLE_INVALID,
        CKR_KEY_NOT_WRAPPABLE, CKR_KEY_SIZE_RANGE, CKR_KEY_UNEXTRACTABLE, CKR_PIN_EXPIRED,
        CKR_USER_NOT_LOGGED_IN, CKR_WRAPPING_KEY_HANDLE_INVALID, CKR_WRAPPING_KEY_SIZE_RANGE,
        CKR_WRAPPING_KEY_TYPE_INCONSISTENT];
    UnwrapKey => [INIT, DEVICE, SESSION, TEMPLATE, KEYMGMT] [CKR_BUFFER_TOO_SMALL,
        CKR_UNWRAPPING_KEY_HANDLE_INVALID, CKR_UNWRAPPING_KEY_SIZE_RANGE,
        CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT, CKR_WRAPPED_KEY_INVALID,
        CKR_WRAPPED_KEY_LEN_RANGE];
    DeriveKey => [INIT, DEVICE, SESSION, TEMPLATE, KEYMGMT] [CKR_KEY_HANDLE_INVALID,
        CKR_KEY_SIZE_RANGE, CKR_KEY_TYPE_INCONSISTENT];
    SeedRandom => [INIT, DEVICE, SESSION] [CKR_FUNCTION_CANCELED, CKR_OPERATION_ACTIVE,
        CKR_RANDOM_SEED_NOT_SUPPORTED, CKR_RANDOM_NO_RNG, CKR_USER_NOT_LOGGED_IN];
    GenerateRandom => [INIT, DEVICE, SESSION] [CKR_FUNCTION_CANCELED, CKR_OPERATION_ACTIVE,
        CKR_RANDOM_NO_RNG, CKR_USER_NOT_LOGGED_IN];
    GetFunctionStatus => [INIT, SESSION] [CKR_FUNCTION_NOT_PARALLEL];
    CancelFunction => [INIT, SESSION] [CKR_FUNCTION_NOT_PARALLEL];
    WaitForSlotEvent => [INIT] [CKR_NO_EVENT];
    GetInterfaceList => [] [CKR_BUFFER_TOO_SMALL];
    GetInterface => [] [];
    LoginUser => [INIT, DEVICE, SESSION] [CKR_PIN_INCORRECT, CKR_PIN_LOCKED,
        CKR_USER_ALREADY_LOGGED_IN, CKR_USER_ANOTHER_ALREADY_LOGGED_IN,
        CKR_USER_TYPE_INVALID];
    SessionCancel => [INIT, DEVICE, SESSION] [CKR_OPERATION_CANCEL_FAILED];
    MessageEncryptInit => [INIT, DEVICE, SESSION, KEY_INIT] [];
    EncryptMessage => [INIT, DEVICE, SESSION, OP] [CKR_BUFFER_TOO_SMALL];
    EncryptMessageBegin => [INIT, DEVICE, SESSION, OP] [];
    EncryptMessageNext => [INIT, DEVICE, SESSION, OP] [CKR_BUFFER_TOO_SMALL];
    MessageEncryptFinal => [INIT, DEVICE, SESSION, OP] [];
    MessageDecryptInit => [INIT, DEVICE, SESSION, KEY_INIT] [];
    DecryptMessage => [INIT, DEVICE, SESSION, OP] [CKR_BUFFER_TOO_SMALL];
    DecryptMessageBegin => [INIT, DEVICE, SESSION, OP] [];
    DecryptMessageNext => [INIT, DEVICE, SESSION, OP] [CKR_BUFFER_TOO_SMALL];
    MessageDecryptFinal => [INIT, DEVICE, SESSION, OP] [];
    MessageSignInit => [INIT, DEVICE, SESSION, KEY_INIT] [];
    SignMessage => [INIT, DEVICE, SESSION, OP] [CKR_BUFFER_TOO_SMALL];
    SignMessageBegin => [INIT, DEVICE, SESSION, OP] [];
    SignMessageNext => [INIT, DEVICE, SESSION, OP] [CKR_BUFFER_TOO_SMALL];
    MessageSignFinal => [INIT, DEVICE, SESSION, OP] [];
    MessageVerifyInit => [INIT, DEVICE, SESSION, KEY_INIT] [];
    VerifyMessage => [INIT, DEVICE, SESSION, OP] [CKR_SIGNATURE_INVALID];
    VerifyMessageBegin => [INIT, DEVICE, SESSION, OP] [];
    VerifyMessageNext => [INIT, DEVICE, SESSION, OP] [CKR_SIGNATURE_INVALID];
    MessageVerifyFinal => [INIT, DEVICE, SESSION, OP] [];
}

impl Func {
    /// Does this function need `C_Initialize` first (all but `C_Initialize`,
    /// `C_GetFunctionList`, `C_GetInterfaceList` and `C_GetInterface`)?
    pub fn needs_init(self) -> bool {
        INIT.iter().all(|rv| self.allows(*rv))
    }

    /// May this function return `rv`?
    pub fn allows(self, rv: CK_RV) -> bool {
        UNIVERSAL.contains(&rv) || self.specific().iter().any(|group| group.contains(&rv))
    }
}

/// `rv` if `func` may return it, else the closest code it may return.
///
/// The fallbacks, in order: a lost daemon is `CKR_DEVICE_REMOVED`, else
/// `CKR_SESSION_HANDLE_INVALID` (the session died with it), else `CKR_TOKEN_NOT_PRESENT`,
/// else `CKR_DEVICE_ERROR`; the key/object handle codes stand in for each other; a policy
/// denial becomes whichever denial code the function has; anything else is
/// `CKR_DEVICE_ERROR` where allowed and `CKR_FUNCTION_FAILED` (universal) otherwise.
pub fn narrow(func: Func, rv: CK_RV) -> CK_RV {
    if func.allows(rv) {
        return rv;
    }
    let candidates: &[CK_RV] = match rv {
        sys::CKR_TOKEN_NOT_PRESENT | sys::CKR_DEVICE_REMOVED => &[
            sys::CKR_DEVICE_REMOVED,
            sys::CKR_SESSION_HANDLE_INVALID,
            sys::CKR_TOKEN_NOT_PRESENT,
            sys::CKR_DEVICE_ERROR,
        ],
        sys::CKR_SESSION_CLOSED => &[sys::CKR_SESSION_HANDLE_INVALID],
        sys::CKR_KEY_HANDLE_INVALID => &[
            sys::CKR_OBJECT_HANDLE_INVALID,
            sys::CKR_WRAPPING_KEY_HANDLE_INVALID,
            sys::CKR_UNWRAPPING_KEY_HANDLE_INVALID,
        ],
        sys::CKR_OBJECT_HANDLE_INVALID => &[
            sys::CKR_KEY_HANDLE_INVALID,
            sys::CKR_WRAPPING_KEY_HANDLE_INVALID,
            sys::CKR_UNWRAPPING_KEY_HANDLE_INVALID,
        ],
        sys::CKR_ACTION_PROHIBITED
        | sys::CKR_KEY_FUNCTION_NOT_PERMITTED
        | sys::CKR_TOKEN_WRITE_PROTECTED => &[
            sys::CKR_KEY_FUNCTION_NOT_PERMITTED,
            sys::CKR_ACTION_PROHIBITED,
            sys::CKR_TOKEN_WRITE_PROTECTED,
            sys::CKR_KEY_UNEXTRACTABLE,
        ],
        sys::CKR_PIN_INCORRECT | sys::CKR_PIN_LOCKED => &[sys::CKR_PIN_INCORRECT],
        _ => &[],
    };
    candidates
        .iter()
        .copied()
        .chain([sys::CKR_DEVICE_ERROR, sys::CKR_FUNCTION_FAILED])
        .find(|c| func.allows(*c))
        .unwrap_or(sys::CKR_GENERAL_ERROR)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every CKR_* value of the 3.0 headers, plus some vendor and unassigned values.
    const EVERY_RV: &[CK_RV] = &[
        sys::CKR_OK,
        sys::CKR_CANCEL,
        sys::CKR_HOST_MEMORY,
        sys::CKR_SLOT_ID_INVALID,
        sys::CKR_GENERAL_ERROR,
        sys::CKR_FUNCTION_FAILED,
        sys::CKR_ARGUMENTS_BAD,
        sys::CKR_NO_EVENT,
        sys::CKR_NEED_TO_CREATE_THREADS,
        sys::CKR_CANT_LOCK,
        sys::CKR_ATTRIBUTE_READ_ONLY,
        sys::CKR_ATTRIBUTE_SENSITIVE,
        sys::CKR_ATTRIBUTE_TYPE_INVALID,
        sys::CKR_ATTRIBUTE_VALUE_INVALID,
        sys::CKR_ACTION_PROHIBITED,
        sys::CKR_DATA_INVALID,
        sys::CKR_DATA_LEN_RANGE,
        sys::CKR_DEVICE_ERROR,
        sys::CKR_DEVICE_MEMORY,
        sys::CKR_DEVICE_REMOVED,
        sys::CKR_ENCRYPTED_DATA_INVALID,
        sys::CKR_ENCRYPTED_DATA_LEN_RANGE,
        sys::CKR_FUNCTION_CANCELED,
        sys::CKR_FUNCTION_NOT_PARALLEL,
        sys::CKR_FUNCTION_NOT_SUPPORTED,
        sys::CKR_KEY_HANDLE_INVALID,
        sys::CKR_KEY_SIZE_RANGE,
        sys::CKR_KEY_TYPE_INCONSISTENT,
        sys::CKR_KEY_FUNCTION_NOT_PERMITTED,
        sys::CKR_KEY_UNEXTRACTABLE,
        sys::CKR_MECHANISM_INVALID,
        sys::CKR_MECHANISM_PARAM_INVALID,
        sys::CKR_OBJECT_HANDLE_INVALID,
        sys::CKR_OPERATION_ACTIVE,
        sys::CKR_OPERATION_NOT_INITIALIZED,
        sys::CKR_PIN_INCORRECT,
        sys::CKR_PIN_LOCKED,
        sys::CKR_SESSION_CLOSED,
        sys::CKR_SESSION_COUNT,
        sys::CKR_SESSION_HANDLE_INVALID,
        sys::CKR_SESSION_READ_ONLY,
        sys::CKR_SIGNATURE_INVALID,
        sys::CKR_SIGNATURE_LEN_RANGE,
        sys::CKR_TEMPLATE_INCOMPLETE,
        sys::CKR_TEMPLATE_INCONSISTENT,
        sys::CKR_TOKEN_NOT_PRESENT,
        sys::CKR_TOKEN_WRITE_PROTECTED,
        sys::CKR_UNWRAPPING_KEY_HANDLE_INVALID,
        sys::CKR_USER_ALREADY_LOGGED_IN,
        sys::CKR_USER_NOT_LOGGED_IN,
        sys::CKR_USER_TYPE_INVALID,
        sys::CKR_WRAPPED_KEY_INVALID,
        sys::CKR_WRAPPING_KEY_HANDLE_INVALID,
        sys::CKR_RANDOM_SEED_NOT_SUPPORTED,
        sys::CKR_BUFFER_TOO_SMALL,
        sys::CKR_CRYPTOKI_NOT_INITIALIZED,
        sys::CKR_CRYPTOKI_ALREADY_INITIALIZED,
        sys::CKR_FUNCTION_REJECTED,
        sys::CKR_VENDOR_DEFINED,
        sys::CKR_VENDOR_DEFINED + 42,
        0x7777,
    ];

    #[test]
    fn narrowed_codes_are_always_allowed() {
        for &func in Func::ALL {
            for &rv in EVERY_RV {
                let n = narrow(func, rv);
                assert!(func.allows(n), "{} {rv:#x} -> {n:#x}", func.name());
                if func.allows(rv) {
                    assert_eq!(n, rv, "{} changed an allowed {rv:#x}", func.name());
                }
            }
        }
    }

    #[test]
    fn spec_examples() {
        // A lost daemon: the session-less slot calls say the token went away...
        assert_eq!(
            narrow(Func::OpenSession, sys::CKR_TOKEN_NOT_PRESENT),
            sys::CKR_TOKEN_NOT_PRESENT
        );
        assert_eq!(
            narrow(Func::Sign, sys::CKR_DEVICE_REMOVED),
            sys::CKR_DEVICE_REMOVED
        );
        // ...and C_Sign may not say CKR_TOKEN_NOT_PRESENT.
        assert_eq!(
            narrow(Func::Sign, sys::CKR_TOKEN_NOT_PRESENT),
            sys::CKR_DEVICE_REMOVED
        );
        // C_FindObjectsInit has neither key handle code.
        assert_eq!(
            narrow(Func::GetAttributeValue, sys::CKR_KEY_HANDLE_INVALID),
            sys::CKR_OBJECT_HANDLE_INVALID
        );
        assert_eq!(
            narrow(Func::SignInit, sys::CKR_OBJECT_HANDLE_INVALID),
            sys::CKR_KEY_HANDLE_INVALID
        );
        // CKR_ACTION_PROHIBITED only for Copy/SetAttribute/Destroy (style.md).
        assert_eq!(
            narrow(Func::DestroyObject, sys::CKR_ACTION_PROHIBITED),
            sys::CKR_ACTION_PROHIBITED
        );
        assert_eq!(
            narrow(Func::SignInit, sys::CKR_ACTION_PROHIBITED),
            sys::CKR_KEY_FUNCTION_NOT_PERMITTED
        );
        // C_GetSlotList has no device codes at all.
        assert_eq!(
            narrow(Func::GetSlotList, sys::CKR_DEVICE_REMOVED),
            sys::CKR_FUNCTION_FAILED
        );
        // C_Initialize may not say "not initialised".
        assert_eq!(
            narrow(Func::Initialize, sys::CKR_CRYPTOKI_NOT_INITIALIZED),
            sys::CKR_FUNCTION_FAILED
        );
        assert!(!Func::Verify.allows(sys::CKR_BUFFER_TOO_SMALL));
        assert!(Func::Verify.allows(sys::CKR_SIGNATURE_INVALID));
    }

    #[test]
    fn names() {
        assert_eq!(Func::GetSlotList.name(), "C_GetSlotList");
        assert_eq!(Func::ALL.len(), 92);
    }
}
