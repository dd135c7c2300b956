//! The token layer's one error type, [`TokenError`], and the reverse map from cryptoki's
//! [`RvError`] to the numeric `CK_RV` (cryptoki maps codes to `RvError` but not back).
//!
//! Every PKCS#11 failure keeps its `CK_RV` and the function that returned it, so keywardd can
//! pass the code on unchanged (style.md, "How CK_RV errors flow") and log the function.
//! Messages never contain a PIN or key bytes.

use cryptoki::context::Function;
use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki_sys::*;
use keyward_wire::keys::Algorithm;
use std::path::PathBuf;

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, TokenError>;

/// Everything that can go wrong in the token layer.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The PKCS#11 module could not be loaded or initialised.
    #[error("cannot load PKCS#11 module {path}: {source}")]
    Load {
        /// The module path given to [`crate::Token::open`].
        path: PathBuf,
        /// What cryptoki reported.
        #[source]
        source: CryptokiError,
    },
    /// No slot holds a token with the requested label.
    #[error("no token labelled '{label}' in the PKCS#11 module (tokens present: {})", fmt_labels(.available))]
    TokenNotFound {
        /// The label asked for.
        label: String,
        /// Labels of the initialised tokens that do exist.
        available: Vec<String>,
    },
    /// Two or more slots hold a token with the requested label.
    #[error("{count} tokens are labelled '{label}': token labels must be unique")]
    AmbiguousToken {
        /// The label asked for.
        label: String,
        /// How many tokens carry it.
        count: usize,
    },
    /// `C_Login` said the user PIN is wrong (`CKR_PIN_INCORRECT`).
    #[error("token '{label}': the user PIN is incorrect")]
    PinIncorrect {
        /// The token's label.
        label: String,
    },
    /// The token was already logged in by this process, so the PIN cannot be checked: a token
    /// is opened once per process.
    #[error("token '{label}' is already open (logged in) in this process")]
    AlreadyOpen {
        /// The token's label.
        label: String,
    },
    /// The token cannot serve an algorithm: the named mechanism (or variant) is missing.
    #[error("{algorithm} is not supported by the backing token: it lacks {mechanism}")]
    Unsupported {
        /// The algorithm asked for.
        algorithm: Algorithm,
        /// The missing mechanism, e.g. `CKM_RSA_PKCS_OAEP with SHA-256`.
        mechanism: String,
    },
    /// A mechanism the token lacks was asked for outside key generation.
    #[error("the backing token lacks {mechanism}")]
    MechanismUnavailable {
        /// The missing mechanism.
        mechanism: String,
    },
    /// The token has the mechanism but not with these parameters (OAEP with SHA-256 on
    /// SoftHSM2 2.6, which answers `CKR_ARGUMENTS_BAD` itself).
    #[error("the backing token lacks {mechanism}")]
    MechanismParamUnsupported {
        /// The missing variant, e.g. `CKM_RSA_PKCS_OAEP with SHA-256 ...`.
        mechanism: String,
    },
    /// The token refuses session keys of this kind (`CKA_TOKEN=FALSE`; tpm2-pkcs11 1.9 for
    /// key pairs): module clients get `CKR_TEMPLATE_INCONSISTENT` (make a token object).
    #[error("the backing token cannot make session keys of this kind ({0}): use CKA_TOKEN=TRUE")]
    SessionKeysUnsupported(String),
    /// No object of the needed class carries this `CKA_ID`.
    #[error("no {what} with CKA_ID {} in the token", hex(.id))]
    KeyNotFound {
        /// The `CKA_ID` looked up.
        id: Vec<u8>,
        /// What was looked for (e.g. "private key").
        what: &'static str,
    },
    /// More than one object of one class carries this `CKA_ID`.
    #[error("{count} objects of class {what} carry CKA_ID {}", hex(.id))]
    DuplicateId {
        /// The `CKA_ID` looked up.
        id: Vec<u8>,
        /// The class looked for.
        what: &'static str,
        /// How many were found.
        count: usize,
    },
    /// A caller-supplied argument is invalid (before any token call).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The token returned something this layer cannot decode (a bad public key, a missing
    /// attribute).
    #[error("unexpected data from the token: {0}")]
    BadTokenData(String),
    /// A PKCS#11 function failed.
    #[error("{function} failed: {rv}")]
    Pkcs11 {
        /// The cryptoki error, which maps back to the numeric CK_RV with [`rv_to_ck_rv`].
        rv: RvError,
        /// The PKCS#11 function that failed.
        function: Function,
    },
    /// cryptoki failed outside a PKCS#11 call (a conversion, a missing function pointer).
    #[error("cryptoki: {0}")]
    Cryptoki(CryptokiError),
}

impl From<CryptokiError> for TokenError {
    fn from(e: CryptokiError) -> Self {
        match e {
            CryptokiError::Pkcs11(rv, function) => TokenError::Pkcs11 { rv, function },
            other => TokenError::Cryptoki(other),
        }
    }
}

impl TokenError {
    /// The numeric `CK_RV` this error stands for. A PKCS#11 failure gives the token's own
    /// code unchanged; errors of this layer get the nearest code:
    /// not found / ambiguous token → `CKR_TOKEN_NOT_PRESENT`, wrong PIN → `CKR_PIN_INCORRECT`,
    /// already open → `CKR_USER_ALREADY_LOGGED_IN`, unsupported → `CKR_MECHANISM_INVALID`
    /// (`CKR_MECHANISM_PARAM_INVALID` for an unsupported variant of a present mechanism),
    /// missing key → `CKR_KEY_HANDLE_INVALID`, bad argument → `CKR_ARGUMENTS_BAD`, and
    /// load, undecodable token data, duplicate ids or cryptoki trouble → `CKR_DEVICE_ERROR` /
    /// `CKR_GENERAL_ERROR`.
    pub fn ck_rv(&self) -> u64 {
        let rv: CK_RV = match self {
            TokenError::Load { .. } => CKR_DEVICE_ERROR,
            TokenError::TokenNotFound { .. } | TokenError::AmbiguousToken { .. } => {
                CKR_TOKEN_NOT_PRESENT
            }
            TokenError::PinIncorrect { .. } => CKR_PIN_INCORRECT,
            TokenError::AlreadyOpen { .. } => CKR_USER_ALREADY_LOGGED_IN,
            TokenError::Unsupported { .. } | TokenError::MechanismUnavailable { .. } => {
                CKR_MECHANISM_INVALID
            }
            TokenError::MechanismParamUnsupported { .. } => CKR_MECHANISM_PARAM_INVALID,
            TokenError::SessionKeysUnsupported(_) => CKR_TEMPLATE_INCONSISTENT,
            TokenError::KeyNotFound { .. } => CKR_KEY_HANDLE_INVALID,
            TokenError::DuplicateId { .. } | TokenError::BadTokenData(_) => CKR_DEVICE_ERROR,
            TokenError::InvalidArgument(_) => CKR_ARGUMENTS_BAD,
            TokenError::Pkcs11 { rv, .. } => return rv_to_ck_rv(*rv),
            TokenError::Cryptoki(_) => CKR_GENERAL_ERROR,
        };
        widen(rv)
    }

    /// The PKCS#11 function that failed, for a PKCS#11 failure.
    pub fn function(&self) -> Option<Function> {
        match self {
            TokenError::Pkcs11 { function, .. } => Some(*function),
            _ => None,
        }
    }

    /// The cryptoki error code, for a PKCS#11 failure.
    pub fn rv_error(&self) -> Option<RvError> {
        match self {
            TokenError::Pkcs11 { rv, .. } => Some(*rv),
            _ => None,
        }
    }
}

/// A `CK_RV` as `u64` (`CK_ULONG` is 64 bits on Linux, 32 on Windows).
#[allow(clippy::useless_conversion)]
fn widen(rv: CK_RV) -> u64 {
    u64::from(rv)
}

fn fmt_labels(labels: &[String]) -> String {
    if labels.is_empty() {
        "none".to_owned()
    } else {
        labels
            .iter()
            .map(|l| format!("'{l}'"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Lower-case hex of a byte string (for ids in messages; never used on key material).
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The numeric `CK_RV` of a cryptoki [`RvError`]: the exact inverse of cryptoki's
/// `Rv::from(CK_RV)`. Exhaustive, with no wildcard arm, so a new cryptoki variant fails to
/// compile here instead of becoming a wrong code.
pub fn rv_to_ck_rv(rv: RvError) -> u64 {
    let code: CK_RV = match rv {
        RvError::Cancel => CKR_CANCEL,
        RvError::HostMemory => CKR_HOST_MEMORY,
        RvError::SlotIdInvalid => CKR_SLOT_ID_INVALID,
        RvError::GeneralError => CKR_GENERAL_ERROR,
        RvError::FunctionFailed => CKR_FUNCTION_FAILED,
        RvError::ArgumentsBad => CKR_ARGUMENTS_BAD,
        RvError::NoEvent => CKR_NO_EVENT,
        RvError::NeedToCreateThreads => CKR_NEED_TO_CREATE_THREADS,
        RvError::CantLock => CKR_CANT_LOCK,
        RvError::AttributeReadOnly => CKR_ATTRIBUTE_READ_ONLY,
        RvError::AttributeSensitive => CKR_ATTRIBUTE_SENSITIVE,
        RvError::AttributeTypeInvalid => CKR_ATTRIBUTE_TYPE_INVALID,
        RvError::AttributeValueInvalid => CKR_ATTRIBUTE_VALUE_INVALID,
        RvError::ActionProhibited => CKR_ACTION_PROHIBITED,
        RvError::DataInvalid => CKR_DATA_INVALID,
        RvError::DataLenRange => CKR_DATA_LEN_RANGE,
        RvError::DeviceError => CKR_DEVICE_ERROR,
        RvError::DeviceMemory => CKR_DEVICE_MEMORY,
        RvError::DeviceRemoved => CKR_DEVICE_REMOVED,
        RvError::EncryptedDataInvalid => CKR_ENCRYPTED_DATA_INVALID,
        RvError::EncryptedDataLenRange => CKR_ENCRYPTED_DATA_LEN_RANGE,
        RvError::FunctionCanceled => CKR_FUNCTION_CANCELED,
        RvError::FunctionNotParallel => CKR_FUNCTION_NOT_PARALLEL,
        RvError::FunctionNotSupported => CKR_FUNCTION_NOT_SUPPORTED,
        RvError::CurveNotSupported => CKR_CURVE_NOT_SUPPORTED,
        RvError::KeyHandleInvalid => CKR_KEY_HANDLE_INVALID,
        RvError::KeySizeRange => CKR_KEY_SIZE_RANGE,
        RvError::KeyTypeInconsistent => CKR_KEY_TYPE_INCONSISTENT,
        RvError::KeyNotNeeded => CKR_KEY_NOT_NEEDED,
        RvError::KeyChanged => CKR_KEY_CHANGED,
        RvError::KeyNeeded => CKR_KEY_NEEDED,
        RvError::KeyIndigestible => CKR_KEY_INDIGESTIBLE,
        RvError::KeyFunctionNotPermitted => CKR_KEY_FUNCTION_NOT_PERMITTED,
        RvError::KeyNotWrappable => CKR_KEY_NOT_WRAPPABLE,
        RvError::KeyUnextractable => CKR_KEY_UNEXTRACTABLE,
        RvError::MechanismInvalid => CKR_MECHANISM_INVALID,
        RvError::MechanismParamInvalid => CKR_MECHANISM_PARAM_INVALID,
        RvError::ObjectHandleInvalid => CKR_OBJECT_HANDLE_INVALID,
        RvError::OperationActive => CKR_OPERATION_ACTIVE,
        RvError::OperationNotInitialized => CKR_OPERATION_NOT_INITIALIZED,
        RvError::PinIncorrect => CKR_PIN_INCORRECT,
        RvError::PinInvalid => CKR_PIN_INVALID,
        RvError::PinLenRange => CKR_PIN_LEN_RANGE,
        RvError::PinExpired => CKR_PIN_EXPIRED,
        RvError::PinLocked => CKR_PIN_LOCKED,
        RvError::SessionClosed => CKR_SESSION_CLOSED,
        RvError::SessionCount => CKR_SESSION_COUNT,
        RvError::SessionHandleInvalid => CKR_SESSION_HANDLE_INVALID,
        RvError::SessionParallelNotSupported => CKR_SESSION_PARALLEL_NOT_SUPPORTED,
        RvError::SessionReadOnly => CKR_SESSION_READ_ONLY,
        RvError::SessionExists => CKR_SESSION_EXISTS,
        RvError::SessionReadOnlyExists => CKR_SESSION_READ_ONLY_EXISTS,
        RvError::SessionReadWriteSoExists => CKR_SESSION_READ_WRITE_SO_EXISTS,
        RvError::SignatureInvalid => CKR_SIGNATURE_INVALID,
        RvError::SignatureLenRange => CKR_SIGNATURE_LEN_RANGE,
        RvError::TemplateIncomplete => CKR_TEMPLATE_INCOMPLETE,
        RvError::TemplateInconsistent => CKR_TEMPLATE_INCONSISTENT,
        RvError::TokenNotPresent => CKR_TOKEN_NOT_PRESENT,
        RvError::TokenNotRecognized => CKR_TOKEN_NOT_RECOGNIZED,
        RvError::TokenWriteProtected => CKR_TOKEN_WRITE_PROTECTED,
        RvError::UnwrappingKeyHandleInvalid => CKR_UNWRAPPING_KEY_HANDLE_INVALID,
        RvError::UnwrappingKeySizeRange => CKR_UNWRAPPING_KEY_SIZE_RANGE,
        RvError::UnwrappingKeyTypeInconsistent => CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT,
        RvError::UserAlreadyLoggedIn => CKR_USER_ALREADY_LOGGED_IN,
        RvError::UserNotLoggedIn => CKR_USER_NOT_LOGGED_IN,
        RvError::UserPinNotInitialized => CKR_USER_PIN_NOT_INITIALIZED,
        RvError::UserTypeInvalid => CKR_USER_TYPE_INVALID,
        RvError::UserAnotherAlreadyLoggedIn => CKR_USER_ANOTHER_ALREADY_LOGGED_IN,
        RvError::UserTooManyTypes => CKR_USER_TOO_MANY_TYPES,
        RvError::WrappedKeyInvalid => CKR_WRAPPED_KEY_INVALID,
        RvError::WrappedKeyLenRange => CKR_WRAPPED_KEY_LEN_RANGE,
        RvError::WrappingKeyHandleInvalid => CKR_WRAPPING_KEY_HANDLE_INVALID,
        RvError::WrappingKeySizeRange => CKR_WRAPPING_KEY_SIZE_RANGE,
        RvError::WrappingKeyTypeInconsistent => CKR_WRAPPING_KEY_TYPE_INCONSISTENT,
        RvError::RandomSeedNotSupported => CKR_RANDOM_SEED_NOT_SUPPORTED,
        RvError::RandomNoRng => CKR_RANDOM_NO_RNG,
        RvError::DomainParamsInvalid => CKR_DOMAIN_PARAMS_INVALID,
        RvError::BufferTooSmall => CKR_BUFFER_TOO_SMALL,
        RvError::SavedStateInvalid => CKR_SAVED_STATE_INVALID,
        RvError::InformationSensitive => CKR_INFORMATION_SENSITIVE,
        RvError::StateUnsaveable => CKR_STATE_UNSAVEABLE,
        RvError::CryptokiNotInitialized => CKR_CRYPTOKI_NOT_INITIALIZED,
        RvError::CryptokiAlreadyInitialized => CKR_CRYPTOKI_ALREADY_INITIALIZED,
        RvError::MutexBad => CKR_MUTEX_BAD,
        RvError::MutexNotLocked => CKR_MUTEX_NOT_LOCKED,
        RvError::NewPinMode => CKR_NEW_PIN_MODE,
        RvError::NextOtp => CKR_NEXT_OTP,
        RvError::ExceededMaxIterations => CKR_EXCEEDED_MAX_ITERATIONS,
        RvError::FipsSelfTestFailed => CKR_FIPS_SELF_TEST_FAILED,
        RvError::LibraryLoadFailed => CKR_LIBRARY_LOAD_FAILED,
        RvError::PinTooWeak => CKR_PIN_TOO_WEAK,
        RvError::PublicKeyInvalid => CKR_PUBLIC_KEY_INVALID,
        RvError::FunctionRejected => CKR_FUNCTION_REJECTED,
        RvError::VendorDefined(code) => code,
        RvError::UnknownErrorCode(code) => code,
    };
    widen(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptoki::error::Rv;

    /// Every CKR_* code cryptoki knows, mapped forward by cryptoki and back by us.
    const CODES: &[CK_RV] = &[
        CKR_CANCEL,
        CKR_HOST_MEMORY,
        CKR_SLOT_ID_INVALID,
        CKR_GENERAL_ERROR,
        CKR_FUNCTION_FAILED,
        CKR_ARGUMENTS_BAD,
        CKR_NO_EVENT,
        CKR_NEED_TO_CREATE_THREADS,
        CKR_CANT_LOCK,
        CKR_ATTRIBUTE_READ_ONLY,
        CKR_ATTRIBUTE_SENSITIVE,
        CKR_ATTRIBUTE_TYPE_INVALID,
        CKR_ATTRIBUTE_VALUE_INVALID,
        CKR_ACTION_PROHIBITED,
        CKR_DATA_INVALID,
        CKR_DATA_LEN_RANGE,
        CKR_DEVICE_ERROR,
        CKR_DEVICE_MEMORY,
        CKR_DEVICE_REMOVED,
        CKR_ENCRYPTED_DATA_INVALID,
        CKR_ENCRYPTED_DATA_LEN_RANGE,
        CKR_FUNCTION_CANCELED,
        CKR_FUNCTION_NOT_PARALLEL,
        CKR_FUNCTION_NOT_SUPPORTED,
        CKR_CURVE_NOT_SUPPORTED,
        CKR_KEY_HANDLE_INVALID,
        CKR_KEY_SIZE_RANGE,
        CKR_KEY_TYPE_INCONSISTENT,
        CKR_KEY_NOT_NEEDED,
        CKR_KEY_CHANGED,
        CKR_KEY_NEEDED,
        CKR_KEY_INDIGESTIBLE,
        CKR_KEY_FUNCTION_NOT_PERMITTED,
        CKR_KEY_NOT_WRAPPABLE,
        CKR_KEY_UNEXTRACTABLE,
        CKR_MECHANISM_INVALID,
        CKR_MECHANISM_PARAM_INVALID,
        CKR_OBJECT_HANDLE_INVALID,
        CKR_OPERATION_ACTIVE,
        CKR_OPERATION_NOT_INITIALIZED,
        CKR_PIN_INCORRECT,
        CKR_PIN_INVALID,
        CKR_PIN_LEN_RANGE,
        CKR_PIN_EXPIRED,
        CKR_PIN_LOCKED,
        CKR_SESSION_CLOSED,
        CKR_SESSION_COUNT,
        CKR_SESSION_HANDLE_INVALID,
        CKR_SESSION_PARALLEL_NOT_SUPPORTED,
        CKR_SESSION_READ_ONLY,
        CKR_SESSION_EXISTS,
        CKR_SESSION_READ_ONLY_EXISTS,
        CKR_SESSION_READ_WRITE_SO_EXISTS,
        CKR_SIGNATURE_INVALID,
        CKR_SIGNATURE_LEN_RANGE,
        CKR_TEMPLATE_INCOMPLETE,
        CKR_TEMPLATE_INCONSISTENT,
        CKR_TOKEN_NOT_PRESENT,
        CKR_TOKEN_NOT_RECOGNIZED,
        CKR_TOKEN_WRITE_PROTECTED,
        CKR_UNWRAPPING_KEY_HANDLE_INVALID,
        CKR_UNWRAPPING_KEY_SIZE_RANGE,
        CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT,
        CKR_USER_ALREADY_LOGGED_IN,
        CKR_USER_NOT_LOGGED_IN,
        CKR_USER_PIN_NOT_INITIALIZED,
        CKR_USER_TYPE_INVALID,
        CKR_USER_ANOTHER_ALREADY_LOGGED_IN,
        CKR_USER_TOO_MANY_TYPES,
        CKR_WRAPPED_KEY_INVALID,
        CKR_WRAPPED_KEY_LEN_RANGE,
        CKR_WRAPPING_KEY_HANDLE_INVALID,
        CKR_WRAPPING_KEY_SIZE_RANGE,
        CKR_WRAPPING_KEY_TYPE_INCONSISTENT,
        CKR_RANDOM_SEED_NOT_SUPPORTED,
        CKR_RANDOM_NO_RNG,
        CKR_DOMAIN_PARAMS_INVALID,
        CKR_BUFFER_TOO_SMALL,
        CKR_SAVED_STATE_INVALID,
        CKR_INFORMATION_SENSITIVE,
        CKR_STATE_UNSAVEABLE,
        CKR_CRYPTOKI_NOT_INITIALIZED,
        CKR_CRYPTOKI_ALREADY_INITIALIZED,
        CKR_MUTEX_BAD,
        CKR_MUTEX_NOT_LOCKED,
        CKR_NEW_PIN_MODE,
        CKR_NEXT_OTP,
        CKR_EXCEEDED_MAX_ITERATIONS,
        CKR_FIPS_SELF_TEST_FAILED,
        CKR_LIBRARY_LOAD_FAILED,
        CKR_PIN_TOO_WEAK,
        CKR_PUBLIC_KEY_INVALID,
        CKR_FUNCTION_REJECTED,
    ];

    #[test]
    fn every_ckr_code_round_trips() {
        assert_eq!(CODES.len(), 93);
        for &code in CODES {
            match Rv::from(code) {
                Rv::Error(rv) => assert_eq!(rv_to_ck_rv(rv), widen(code), "{rv:?}"),
                Rv::Ok => panic!("{code:#x} mapped to Ok"),
            }
        }
        // Vendor-defined and unknown codes keep their number.
        for code in [CKR_VENDOR_DEFINED, CKR_VENDOR_DEFINED + 7, 0x0000_0fff] {
            let Rv::Error(rv) = Rv::from(code) else {
                panic!("{code:#x} mapped to Ok")
            };
            assert_eq!(rv_to_ck_rv(rv), widen(code));
        }
    }

    #[test]
    fn layer_errors_have_codes() {
        let e = TokenError::PinIncorrect { label: "t".into() };
        assert_eq!(e.ck_rv(), widen(CKR_PIN_INCORRECT));
        let e = TokenError::from(CryptokiError::Pkcs11(
            RvError::KeyHandleInvalid,
            Function::SignInit,
        ));
        assert_eq!(e.ck_rv(), widen(CKR_KEY_HANDLE_INVALID));
        assert!(e.to_string().contains("SignInit"), "{e}");
        let e = TokenError::TokenNotFound {
            label: "x".into(),
            available: vec!["a".into(), "b".into()],
        };
        assert_eq!(
            e.to_string(),
            "no token labelled 'x' in the PKCS#11 module (tokens present: 'a', 'b')"
        );
    }
}
