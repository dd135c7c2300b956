//! The CK_RV return values Keyward sends across the wire, with their PKCS#11 names.
//!
//! Every error on the wire travels as a CK_RV (design §1). Values are those of the PKCS#11
//! 3.x headers (`pkcs11t.h`); each one below was checked against them. Only the codes the
//! project uses are named; [`rv_name`] gives a name for log and error messages.

/// `CKR_OK`: success.
pub const CKR_OK: u64 = 0x0000_0000;
/// `CKR_GENERAL_ERROR`: an unrecoverable error (the module also maps a caught panic to it).
pub const CKR_GENERAL_ERROR: u64 = 0x0000_0005;
/// `CKR_ARGUMENTS_BAD`: bad pointers or lengths, found before any IPC.
pub const CKR_ARGUMENTS_BAD: u64 = 0x0000_0007;
/// `CKR_ATTRIBUTE_SENSITIVE`: the attribute's value may not be revealed.
pub const CKR_ATTRIBUTE_SENSITIVE: u64 = 0x0000_0011;
/// `CKR_ATTRIBUTE_VALUE_INVALID`: a template value is invalid.
pub const CKR_ATTRIBUTE_VALUE_INVALID: u64 = 0x0000_0013;
/// `CKR_ACTION_PROHIBITED`: the action is prohibited by policy (Copy/SetAttribute/Destroy).
pub const CKR_ACTION_PROHIBITED: u64 = 0x0000_001B;
/// `CKR_DEVICE_ERROR`: a problem with the token; also a protocol mismatch with keywardd.
pub const CKR_DEVICE_ERROR: u64 = 0x0000_0030;
/// `CKR_DEVICE_MEMORY`: a limit of keywardd's refused the call (design §9: connections,
/// instances, sessions, buffers per uid), or the token is out of memory.
pub const CKR_DEVICE_MEMORY: u64 = 0x0000_0031;
/// `CKR_DEVICE_REMOVED`: the token went away during the call (the connection died).
pub const CKR_DEVICE_REMOVED: u64 = 0x0000_0032;
/// `CKR_FUNCTION_NOT_SUPPORTED`: the function is not supported.
pub const CKR_FUNCTION_NOT_SUPPORTED: u64 = 0x0000_0054;
/// `CKR_KEY_HANDLE_INVALID`: the key handle is invalid (or the key is not visible).
pub const CKR_KEY_HANDLE_INVALID: u64 = 0x0000_0060;
/// `CKR_KEY_FUNCTION_NOT_PERMITTED`: the key may not be used this way (policy deny at `*Init`).
pub const CKR_KEY_FUNCTION_NOT_PERMITTED: u64 = 0x0000_0068;
/// `CKR_KEY_UNEXTRACTABLE`: the key cannot be wrapped.
pub const CKR_KEY_UNEXTRACTABLE: u64 = 0x0000_006A;
/// `CKR_MECHANISM_INVALID`: the mechanism is invalid for this key or call.
pub const CKR_MECHANISM_INVALID: u64 = 0x0000_0070;
/// `CKR_OBJECT_HANDLE_INVALID`: the object handle is invalid (or the object is not visible).
pub const CKR_OBJECT_HANDLE_INVALID: u64 = 0x0000_0082;
/// `CKR_PIN_INCORRECT`: the PIN (service-account key) is wrong.
pub const CKR_PIN_INCORRECT: u64 = 0x0000_00A0;
/// `CKR_PIN_LOCKED`: too many failures from this peer; locked for a while.
pub const CKR_PIN_LOCKED: u64 = 0x0000_00A4;
/// `CKR_SESSION_HANDLE_INVALID`: the session handle is invalid (e.g. died with the connection).
pub const CKR_SESSION_HANDLE_INVALID: u64 = 0x0000_00B3;
/// `CKR_TEMPLATE_INCONSISTENT`: the template is inconsistent (e.g. plaintext key import).
pub const CKR_TEMPLATE_INCONSISTENT: u64 = 0x0000_00D1;
/// `CKR_TOKEN_NOT_PRESENT`: the token is absent (keywardd is not reachable).
pub const CKR_TOKEN_NOT_PRESENT: u64 = 0x0000_00E0;
/// `CKR_TOKEN_WRITE_PROTECTED`: creation on this token is denied for the caller.
pub const CKR_TOKEN_WRITE_PROTECTED: u64 = 0x0000_00E2;
/// `CKR_UNWRAPPING_KEY_HANDLE_INVALID`: the unwrapping key handle is invalid or not usable.
pub const CKR_UNWRAPPING_KEY_HANDLE_INVALID: u64 = 0x0000_00F0;
/// `CKR_USER_NOT_LOGGED_IN`: the call needs a logged-in user.
pub const CKR_USER_NOT_LOGGED_IN: u64 = 0x0000_0101;
/// `CKR_WRAPPING_KEY_HANDLE_INVALID`: the wrapping key handle is invalid or not usable.
pub const CKR_WRAPPING_KEY_HANDLE_INVALID: u64 = 0x0000_0113;
/// `CKR_BUFFER_TOO_SMALL`: the output buffer is too small (two-call protocol).
pub const CKR_BUFFER_TOO_SMALL: u64 = 0x0000_0150;
/// `CKR_CRYPTOKI_NOT_INITIALIZED`: `C_Initialize` was not called (also: in a forked child).
pub const CKR_CRYPTOKI_NOT_INITIALIZED: u64 = 0x0000_0190;
/// `CKR_VENDOR_DEFINED`: the first vendor-defined value; every value at or above it is vendor's.
pub const CKR_VENDOR_DEFINED: u64 = 0x8000_0000;

/// The PKCS#11 name of `rv` for messages: `"CKR_PIN_INCORRECT"` for 0xA0.
///
/// Values not named in this module give `"CKR_VENDOR_DEFINED"` at or above
/// [`CKR_VENDOR_DEFINED`] and `"CKR_UNKNOWN"` below it.
pub fn rv_name(rv: u64) -> &'static str {
    match rv {
        CKR_OK => "CKR_OK",
        CKR_GENERAL_ERROR => "CKR_GENERAL_ERROR",
        CKR_ARGUMENTS_BAD => "CKR_ARGUMENTS_BAD",
        CKR_ATTRIBUTE_SENSITIVE => "CKR_ATTRIBUTE_SENSITIVE",
        CKR_ATTRIBUTE_VALUE_INVALID => "CKR_ATTRIBUTE_VALUE_INVALID",
        CKR_ACTION_PROHIBITED => "CKR_ACTION_PROHIBITED",
        CKR_DEVICE_ERROR => "CKR_DEVICE_ERROR",
        CKR_DEVICE_MEMORY => "CKR_DEVICE_MEMORY",
        CKR_DEVICE_REMOVED => "CKR_DEVICE_REMOVED",
        CKR_FUNCTION_NOT_SUPPORTED => "CKR_FUNCTION_NOT_SUPPORTED",
        CKR_KEY_HANDLE_INVALID => "CKR_KEY_HANDLE_INVALID",
        CKR_KEY_FUNCTION_NOT_PERMITTED => "CKR_KEY_FUNCTION_NOT_PERMITTED",
        CKR_KEY_UNEXTRACTABLE => "CKR_KEY_UNEXTRACTABLE",
        CKR_MECHANISM_INVALID => "CKR_MECHANISM_INVALID",
        CKR_OBJECT_HANDLE_INVALID => "CKR_OBJECT_HANDLE_INVALID",
        CKR_PIN_INCORRECT => "CKR_PIN_INCORRECT",
        CKR_PIN_LOCKED => "CKR_PIN_LOCKED",
        CKR_SESSION_HANDLE_INVALID => "CKR_SESSION_HANDLE_INVALID",
        CKR_TEMPLATE_INCONSISTENT => "CKR_TEMPLATE_INCONSISTENT",
        CKR_TOKEN_NOT_PRESENT => "CKR_TOKEN_NOT_PRESENT",
        CKR_TOKEN_WRITE_PROTECTED => "CKR_TOKEN_WRITE_PROTECTED",
        CKR_UNWRAPPING_KEY_HANDLE_INVALID => "CKR_UNWRAPPING_KEY_HANDLE_INVALID",
        CKR_USER_NOT_LOGGED_IN => "CKR_USER_NOT_LOGGED_IN",
        CKR_WRAPPING_KEY_HANDLE_INVALID => "CKR_WRAPPING_KEY_HANDLE_INVALID",
        CKR_BUFFER_TOO_SMALL => "CKR_BUFFER_TOO_SMALL",
        CKR_CRYPTOKI_NOT_INITIALIZED => "CKR_CRYPTOKI_NOT_INITIALIZED",
        v if v >= CKR_VENDOR_DEFINED => "CKR_VENDOR_DEFINED",
        _ => "CKR_UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values as printed in OASIS PKCS#11 3.1 `pkcs11t.h`, written out in decimal so a typo
    /// in the hex constants above cannot hide behind the same typo here.
    #[test]
    fn values_match_the_spec_headers() {
        let expected: [(u64, &str); 25] = [
            (0, "CKR_OK"),
            (5, "CKR_GENERAL_ERROR"),
            (7, "CKR_ARGUMENTS_BAD"),
            (17, "CKR_ATTRIBUTE_SENSITIVE"),
            (19, "CKR_ATTRIBUTE_VALUE_INVALID"),
            (27, "CKR_ACTION_PROHIBITED"),
            (48, "CKR_DEVICE_ERROR"),
            (50, "CKR_DEVICE_REMOVED"),
            (84, "CKR_FUNCTION_NOT_SUPPORTED"),
            (96, "CKR_KEY_HANDLE_INVALID"),
            (104, "CKR_KEY_FUNCTION_NOT_PERMITTED"),
            (106, "CKR_KEY_UNEXTRACTABLE"),
            (112, "CKR_MECHANISM_INVALID"),
            (130, "CKR_OBJECT_HANDLE_INVALID"),
            (160, "CKR_PIN_INCORRECT"),
            (164, "CKR_PIN_LOCKED"),
            (179, "CKR_SESSION_HANDLE_INVALID"),
            (209, "CKR_TEMPLATE_INCONSISTENT"),
            (224, "CKR_TOKEN_NOT_PRESENT"),
            (226, "CKR_TOKEN_WRITE_PROTECTED"),
            (240, "CKR_UNWRAPPING_KEY_HANDLE_INVALID"),
            (257, "CKR_USER_NOT_LOGGED_IN"),
            (275, "CKR_WRAPPING_KEY_HANDLE_INVALID"),
            (336, "CKR_BUFFER_TOO_SMALL"),
            (400, "CKR_CRYPTOKI_NOT_INITIALIZED"),
        ];
        for (value, name) in expected {
            assert_eq!(rv_name(value), name, "value {value:#x}");
        }
        assert_eq!(CKR_PIN_INCORRECT, 160);
        assert_eq!(CKR_CRYPTOKI_NOT_INITIALIZED, 400);
    }

    #[test]
    fn unnamed_values() {
        assert_eq!(rv_name(0x1), "CKR_UNKNOWN");
        assert_eq!(rv_name(CKR_VENDOR_DEFINED), "CKR_VENDOR_DEFINED");
        assert_eq!(rv_name(CKR_VENDOR_DEFINED + 7), "CKR_VENDOR_DEFINED");
        assert_eq!(rv_name(u64::MAX), "CKR_VENDOR_DEFINED");
    }
}
