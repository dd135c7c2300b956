//! The module's one error type and its exhaustive mapping to a CK_RV (style rules 5, "How
//! CK_RV errors flow").
//!
//! The cause is kept for the log; only the CK_RV crosses the ABI, and then only after
//! [`crate::allow::narrow`] made it a code the function may return.

use keyward_wire::WireError;
use pkcs11_sys as sys;
use pkcs11_sys::CK_RV;

/// Everything a C_ function of the module can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A NULL pointer, a length that does not fit, an inconsistent argument: found before
    /// any IPC.
    #[error("bad arguments: {0}")]
    ArgumentsBad(&'static str),
    /// `C_Initialize` was not called (or was called in the parent of this forked process).
    #[error("the module is not initialised in this process")]
    NotInitialized,
    /// `C_Initialize` twice.
    #[error("the module is already initialised")]
    AlreadyInitialized,
    /// The application asked for its own locking primitives without `CKF_OS_LOCKING_OK`.
    #[error("the module locks with OS primitives only")]
    CantLock,
    /// The configuration (environment, file, `pReserved`) is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// A slot id not in the instance's slot list.
    #[error("slot {0} is not in the slot list")]
    SlotIdInvalid(u64),
    /// A session handle the instance does not have, or one that died with its connection.
    #[error("session handle {0} is not valid")]
    SessionHandleInvalid(u64),
    /// keywardd is not reachable (token absent, design §4).
    #[error("keywardd is not reachable: {0}")]
    TokenNotPresent(String),
    /// The output buffer is too small; the length was written.
    #[error("output buffer too small: {needed} bytes needed")]
    BufferTooSmall {
        /// The length the caller needs.
        needed: usize,
    },
    /// C_FindObjects(Final) without C_FindObjectsInit.
    #[error("no operation of this kind is active")]
    OperationNotInitialized,
    /// C_FindObjectsInit while a search is active.
    #[error("an operation of this kind is already active")]
    OperationActive,
    /// A mechanism the module cannot marshal.
    #[error("mechanism {0:#x} is not supported")]
    MechanismInvalid(u64),
    /// Mechanism parameters of the wrong size or with NULL pointers.
    #[error("bad mechanism parameters: {0}")]
    MechanismParamInvalid(&'static str),
    /// An attribute value of the wrong size for its type.
    #[error("attribute {0:#x} has an invalid value")]
    AttributeValueInvalid(u64),
    /// An attribute value may not be revealed (C_GetAttributeValue, after filling the rest).
    #[error("an attribute is sensitive")]
    AttributeSensitive,
    /// An attribute the object does not have (C_GetAttributeValue, after filling the rest).
    #[error("an attribute type is invalid")]
    AttributeTypeInvalid,
    /// C_Login of the user already logged in.
    #[error("already logged in")]
    UserAlreadyLoggedIn,
    /// C_Login while the other user type is logged in.
    #[error("another user type is logged in")]
    UserAnotherAlreadyLoggedIn,
    /// C_Logout without a login.
    #[error("not logged in")]
    UserNotLoggedIn,
    /// An unknown `CKU_*`.
    #[error("user type {0:#x} is invalid")]
    UserTypeInvalid(u64),
    /// C_Login(CKU_SO) while a read-only session is open on the token.
    #[error("a read-only session exists")]
    SessionReadOnlyExists,
    /// C_OpenSession of a read-only session while the SO is logged in on the token.
    #[error("the SO is logged in: only read-write sessions open")]
    SessionReadWriteSoExists,
    /// C_OpenSession without `CKF_SERIAL_SESSION`.
    #[error("sessions must be serial")]
    SessionParallelNotSupported,
    /// A function Keyward does not offer.
    #[error("function not supported")]
    FunctionNotSupported,
    /// C_GetFunctionStatus / C_CancelFunction (legacy parallel functions).
    #[error("function not parallel")]
    FunctionNotParallel,
    /// C_SeedRandom.
    #[error("seeding the RNG is not supported")]
    RandomSeedNotSupported,
    /// The connection failed, or keywardd answered with an error (its CK_RV, unchanged).
    #[error("keywardd: {0}")]
    Wire(#[from] WireError),
    /// keywardd answered with the wrong response variant or inconsistent data.
    #[error("unexpected answer from keywardd: {0}")]
    UnexpectedResponse(&'static str),
    /// A panic was caught at the ABI boundary.
    #[error("internal error (panic): {0}")]
    Panic(String),
}

impl From<Error> for CK_RV {
    fn from(e: Error) -> CK_RV {
        match e {
            Error::ArgumentsBad(_) => sys::CKR_ARGUMENTS_BAD,
            Error::NotInitialized => sys::CKR_CRYPTOKI_NOT_INITIALIZED,
            Error::AlreadyInitialized => sys::CKR_CRYPTOKI_ALREADY_INITIALIZED,
            Error::CantLock => sys::CKR_CANT_LOCK,
            Error::Config(_) => sys::CKR_FUNCTION_FAILED,
            Error::SlotIdInvalid(_) => sys::CKR_SLOT_ID_INVALID,
            Error::SessionHandleInvalid(_) => sys::CKR_SESSION_HANDLE_INVALID,
            Error::TokenNotPresent(_) => sys::CKR_TOKEN_NOT_PRESENT,
            Error::BufferTooSmall { .. } => sys::CKR_BUFFER_TOO_SMALL,
            Error::OperationNotInitialized => sys::CKR_OPERATION_NOT_INITIALIZED,
            Error::OperationActive => sys::CKR_OPERATION_ACTIVE,
            Error::MechanismInvalid(_) => sys::CKR_MECHANISM_INVALID,
            Error::MechanismParamInvalid(_) => sys::CKR_MECHANISM_PARAM_INVALID,
            Error::AttributeValueInvalid(_) => sys::CKR_ATTRIBUTE_VALUE_INVALID,
            Error::AttributeSensitive => sys::CKR_ATTRIBUTE_SENSITIVE,
            Error::AttributeTypeInvalid => sys::CKR_ATTRIBUTE_TYPE_INVALID,
            Error::UserAlreadyLoggedIn => sys::CKR_USER_ALREADY_LOGGED_IN,
            Error::UserAnotherAlreadyLoggedIn => sys::CKR_USER_ANOTHER_ALREADY_LOGGED_IN,
            Error::UserNotLoggedIn => sys::CKR_USER_NOT_LOGGED_IN,
            Error::UserTypeInvalid(_) => sys::CKR_USER_TYPE_INVALID,
            Error::SessionReadOnlyExists => sys::CKR_SESSION_READ_ONLY_EXISTS,
            Error::SessionReadWriteSoExists => sys::CKR_SESSION_READ_WRITE_SO_EXISTS,
            Error::SessionParallelNotSupported => sys::CKR_SESSION_PARALLEL_NOT_SUPPORTED,
            Error::FunctionNotSupported => sys::CKR_FUNCTION_NOT_SUPPORTED,
            Error::FunctionNotParallel => sys::CKR_FUNCTION_NOT_PARALLEL,
            Error::RandomSeedNotSupported => sys::CKR_RANDOM_SEED_NOT_SUPPORTED,
            // The daemon's code unchanged; a lost connection CKR_DEVICE_REMOVED, a connect
            // failure CKR_TOKEN_NOT_PRESENT (narrowed per function afterwards).
            Error::Wire(w) => w.ck_rv(),
            Error::UnexpectedResponse(_) => sys::CKR_DEVICE_ERROR,
            Error::Panic(_) => sys::CKR_GENERAL_ERROR,
        }
    }
}

impl Error {
    /// True for conditions clients meet in normal use (logged at debug level, style rule 12).
    pub fn is_routine(&self) -> bool {
        matches!(
            self,
            Error::BufferTooSmall { .. }
                | Error::AttributeSensitive
                | Error::AttributeTypeInvalid
                | Error::UserAlreadyLoggedIn
                | Error::UserNotLoggedIn
                | Error::FunctionNotSupported
                | Error::OperationNotInitialized
                | Error::TokenNotPresent(_)
                | Error::Wire(WireError::Remote(_))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_wire::ErrorReply;

    #[test]
    fn daemon_codes_come_back_unchanged() {
        let e = Error::Wire(WireError::Remote(ErrorReply::new(sys::CKR_PIN_INCORRECT)));
        assert_eq!(CK_RV::from(e), sys::CKR_PIN_INCORRECT);
        let e = Error::Wire(WireError::Closed);
        assert_eq!(CK_RV::from(e), sys::CKR_DEVICE_REMOVED);
        assert_eq!(
            CK_RV::from(Error::BufferTooSmall { needed: 3 }),
            sys::CKR_BUFFER_TOO_SMALL
        );
        assert_eq!(
            CK_RV::from(Error::Panic("x".into())),
            sys::CKR_GENERAL_ERROR
        );
    }
}
