//! The CK_RV return values Keyward sends across the wire, with their PKCS#11 names.
//!
//! Every error on the wire travels as a CK_RV (design §1). Values are those of the PKCS#11
//! 3.x headers (`pkcs11t.h`); each one below was checked against them. Only the codes the
//! project uses have constants here; [`rv_name`] names every standard code for log and error
//! messages.

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

// The other codes keywardd returns (until issue 16 each file of the daemon defined its own).
/// `CKR_SLOT_ID_INVALID`.
pub const CKR_SLOT_ID_INVALID: u64 = 0x0000_0003;
/// `CKR_FUNCTION_FAILED`.
pub const CKR_FUNCTION_FAILED: u64 = 0x0000_0006;
/// `CKR_ATTRIBUTE_READ_ONLY`.
pub const CKR_ATTRIBUTE_READ_ONLY: u64 = 0x0000_0010;
/// `CKR_ATTRIBUTE_TYPE_INVALID`.
pub const CKR_ATTRIBUTE_TYPE_INVALID: u64 = 0x0000_0012;
/// `CKR_DATA_INVALID`.
pub const CKR_DATA_INVALID: u64 = 0x0000_0020;
/// `CKR_DATA_LEN_RANGE`.
pub const CKR_DATA_LEN_RANGE: u64 = 0x0000_0021;
/// `CKR_ENCRYPTED_DATA_INVALID`.
pub const CKR_ENCRYPTED_DATA_INVALID: u64 = 0x0000_0040;
/// `CKR_ENCRYPTED_DATA_LEN_RANGE`.
pub const CKR_ENCRYPTED_DATA_LEN_RANGE: u64 = 0x0000_0041;
/// `CKR_KEY_SIZE_RANGE`.
pub const CKR_KEY_SIZE_RANGE: u64 = 0x0000_0062;
/// `CKR_KEY_TYPE_INCONSISTENT`.
pub const CKR_KEY_TYPE_INCONSISTENT: u64 = 0x0000_0063;
/// `CKR_KEY_NOT_WRAPPABLE`.
pub const CKR_KEY_NOT_WRAPPABLE: u64 = 0x0000_0069;
/// `CKR_MECHANISM_PARAM_INVALID`.
pub const CKR_MECHANISM_PARAM_INVALID: u64 = 0x0000_0071;
/// `CKR_OPERATION_ACTIVE`.
pub const CKR_OPERATION_ACTIVE: u64 = 0x0000_0090;
/// `CKR_OPERATION_NOT_INITIALIZED`.
pub const CKR_OPERATION_NOT_INITIALIZED: u64 = 0x0000_0091;
/// `CKR_SESSION_COUNT`.
pub const CKR_SESSION_COUNT: u64 = 0x0000_00B1;
/// `CKR_SESSION_READ_ONLY`.
pub const CKR_SESSION_READ_ONLY: u64 = 0x0000_00B5;
/// `CKR_SIGNATURE_INVALID`.
pub const CKR_SIGNATURE_INVALID: u64 = 0x0000_00C0;
/// `CKR_SIGNATURE_LEN_RANGE`.
pub const CKR_SIGNATURE_LEN_RANGE: u64 = 0x0000_00C1;
/// `CKR_TEMPLATE_INCOMPLETE`.
pub const CKR_TEMPLATE_INCOMPLETE: u64 = 0x0000_00D0;
/// `CKR_USER_ALREADY_LOGGED_IN`.
pub const CKR_USER_ALREADY_LOGGED_IN: u64 = 0x0000_0100;
/// `CKR_USER_TYPE_INVALID`.
pub const CKR_USER_TYPE_INVALID: u64 = 0x0000_0103;
/// `CKR_USER_ANOTHER_ALREADY_LOGGED_IN`.
pub const CKR_USER_ANOTHER_ALREADY_LOGGED_IN: u64 = 0x0000_0104;
/// `CKR_WRAPPED_KEY_INVALID`.
pub const CKR_WRAPPED_KEY_INVALID: u64 = 0x0000_0110;
/// `CKR_WRAPPED_KEY_LEN_RANGE`.
pub const CKR_WRAPPED_KEY_LEN_RANGE: u64 = 0x0000_0112;
/// `CKR_WRAPPING_KEY_TYPE_INCONSISTENT`.
pub const CKR_WRAPPING_KEY_TYPE_INCONSISTENT: u64 = 0x0000_0115;
/// `CKR_RANDOM_NO_RNG`.
pub const CKR_RANDOM_NO_RNG: u64 = 0x0000_0121;
/// `CKR_CURVE_NOT_SUPPORTED`.
pub const CKR_CURVE_NOT_SUPPORTED: u64 = 0x0000_0140;

/// The PKCS#11 name of `rv` for messages: `"CKR_PIN_INCORRECT"` for 0xA0.
///
/// Every standard value is named; others give `"CKR_VENDOR_DEFINED"` at or above
/// [`CKR_VENDOR_DEFINED`] and `"CKR_UNKNOWN"` below it.
pub fn rv_name(rv: u64) -> &'static str {
    match NAMES.binary_search_by_key(&rv, |&(v, _)| v) {
        Ok(i) => NAMES[i].1,
        Err(_) if rv >= CKR_VENDOR_DEFINED => "CKR_VENDOR_DEFINED",
        Err(_) => "CKR_UNKNOWN",
    }
}

/// Every return value of the PKCS#11 3.x headers (`pkcs11t.h`, as `cryptoki-sys` 0.5 binds
/// them), by value: a token's refusal is named in messages whatever the code (issue 18 item
/// 5: "the token refused: CKR_UNKNOWN" was `CKR_DATA_LEN_RANGE`, which had no name here).
const NAMES: &[(u64, &str)] = &[
    (0x0000, "CKR_OK"),
    (0x0001, "CKR_CANCEL"),
    (0x0002, "CKR_HOST_MEMORY"),
    (0x0003, "CKR_SLOT_ID_INVALID"),
    (0x0005, "CKR_GENERAL_ERROR"),
    (0x0006, "CKR_FUNCTION_FAILED"),
    (0x0007, "CKR_ARGUMENTS_BAD"),
    (0x0008, "CKR_NO_EVENT"),
    (0x0009, "CKR_NEED_TO_CREATE_THREADS"),
    (0x000A, "CKR_CANT_LOCK"),
    (0x0010, "CKR_ATTRIBUTE_READ_ONLY"),
    (0x0011, "CKR_ATTRIBUTE_SENSITIVE"),
    (0x0012, "CKR_ATTRIBUTE_TYPE_INVALID"),
    (0x0013, "CKR_ATTRIBUTE_VALUE_INVALID"),
    (0x001B, "CKR_ACTION_PROHIBITED"),
    (0x0020, "CKR_DATA_INVALID"),
    (0x0021, "CKR_DATA_LEN_RANGE"),
    (0x0030, "CKR_DEVICE_ERROR"),
    (0x0031, "CKR_DEVICE_MEMORY"),
    (0x0032, "CKR_DEVICE_REMOVED"),
    (0x0040, "CKR_ENCRYPTED_DATA_INVALID"),
    (0x0041, "CKR_ENCRYPTED_DATA_LEN_RANGE"),
    (0x0042, "CKR_AEAD_DECRYPT_FAILED"),
    (0x0050, "CKR_FUNCTION_CANCELED"),
    (0x0051, "CKR_FUNCTION_NOT_PARALLEL"),
    (0x0054, "CKR_FUNCTION_NOT_SUPPORTED"),
    (0x0060, "CKR_KEY_HANDLE_INVALID"),
    (0x0062, "CKR_KEY_SIZE_RANGE"),
    (0x0063, "CKR_KEY_TYPE_INCONSISTENT"),
    (0x0064, "CKR_KEY_NOT_NEEDED"),
    (0x0065, "CKR_KEY_CHANGED"),
    (0x0066, "CKR_KEY_NEEDED"),
    (0x0067, "CKR_KEY_INDIGESTIBLE"),
    (0x0068, "CKR_KEY_FUNCTION_NOT_PERMITTED"),
    (0x0069, "CKR_KEY_NOT_WRAPPABLE"),
    (0x006A, "CKR_KEY_UNEXTRACTABLE"),
    (0x0070, "CKR_MECHANISM_INVALID"),
    (0x0071, "CKR_MECHANISM_PARAM_INVALID"),
    (0x0082, "CKR_OBJECT_HANDLE_INVALID"),
    (0x0090, "CKR_OPERATION_ACTIVE"),
    (0x0091, "CKR_OPERATION_NOT_INITIALIZED"),
    (0x00A0, "CKR_PIN_INCORRECT"),
    (0x00A1, "CKR_PIN_INVALID"),
    (0x00A2, "CKR_PIN_LEN_RANGE"),
    (0x00A3, "CKR_PIN_EXPIRED"),
    (0x00A4, "CKR_PIN_LOCKED"),
    (0x00B0, "CKR_SESSION_CLOSED"),
    (0x00B1, "CKR_SESSION_COUNT"),
    (0x00B3, "CKR_SESSION_HANDLE_INVALID"),
    (0x00B4, "CKR_SESSION_PARALLEL_NOT_SUPPORTED"),
    (0x00B5, "CKR_SESSION_READ_ONLY"),
    (0x00B6, "CKR_SESSION_EXISTS"),
    (0x00B7, "CKR_SESSION_READ_ONLY_EXISTS"),
    (0x00B8, "CKR_SESSION_READ_WRITE_SO_EXISTS"),
    (0x00C0, "CKR_SIGNATURE_INVALID"),
    (0x00C1, "CKR_SIGNATURE_LEN_RANGE"),
    (0x00D0, "CKR_TEMPLATE_INCOMPLETE"),
    (0x00D1, "CKR_TEMPLATE_INCONSISTENT"),
    (0x00E0, "CKR_TOKEN_NOT_PRESENT"),
    (0x00E1, "CKR_TOKEN_NOT_RECOGNIZED"),
    (0x00E2, "CKR_TOKEN_WRITE_PROTECTED"),
    (0x00F0, "CKR_UNWRAPPING_KEY_HANDLE_INVALID"),
    (0x00F1, "CKR_UNWRAPPING_KEY_SIZE_RANGE"),
    (0x00F2, "CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT"),
    (0x0100, "CKR_USER_ALREADY_LOGGED_IN"),
    (0x0101, "CKR_USER_NOT_LOGGED_IN"),
    (0x0102, "CKR_USER_PIN_NOT_INITIALIZED"),
    (0x0103, "CKR_USER_TYPE_INVALID"),
    (0x0104, "CKR_USER_ANOTHER_ALREADY_LOGGED_IN"),
    (0x0105, "CKR_USER_TOO_MANY_TYPES"),
    (0x0110, "CKR_WRAPPED_KEY_INVALID"),
    (0x0112, "CKR_WRAPPED_KEY_LEN_RANGE"),
    (0x0113, "CKR_WRAPPING_KEY_HANDLE_INVALID"),
    (0x0114, "CKR_WRAPPING_KEY_SIZE_RANGE"),
    (0x0115, "CKR_WRAPPING_KEY_TYPE_INCONSISTENT"),
    (0x0120, "CKR_RANDOM_SEED_NOT_SUPPORTED"),
    (0x0121, "CKR_RANDOM_NO_RNG"),
    (0x0130, "CKR_DOMAIN_PARAMS_INVALID"),
    (0x0140, "CKR_CURVE_NOT_SUPPORTED"),
    (0x0150, "CKR_BUFFER_TOO_SMALL"),
    (0x0160, "CKR_SAVED_STATE_INVALID"),
    (0x0170, "CKR_INFORMATION_SENSITIVE"),
    (0x0180, "CKR_STATE_UNSAVEABLE"),
    (0x0190, "CKR_CRYPTOKI_NOT_INITIALIZED"),
    (0x0191, "CKR_CRYPTOKI_ALREADY_INITIALIZED"),
    (0x01A0, "CKR_MUTEX_BAD"),
    (0x01A1, "CKR_MUTEX_NOT_LOCKED"),
    (0x01B0, "CKR_NEW_PIN_MODE"),
    (0x01B1, "CKR_NEXT_OTP"),
    (0x01B5, "CKR_EXCEEDED_MAX_ITERATIONS"),
    (0x01B6, "CKR_FIPS_SELF_TEST_FAILED"),
    (0x01B7, "CKR_LIBRARY_LOAD_FAILED"),
    (0x01B8, "CKR_PIN_TOO_WEAK"),
    (0x01B9, "CKR_PUBLIC_KEY_INVALID"),
    (0x0200, "CKR_FUNCTION_REJECTED"),
    (0x0201, "CKR_TOKEN_RESOURCE_EXCEEDED"),
    (0x0202, "CKR_OPERATION_CANCEL_FAILED"),
    (0x0203, "CKR_KEY_EXHAUSTED"),
    (0x0204, "CKR_PENDING"),
    (0x0205, "CKR_SESSION_ASYNC_NOT_SUPPORTED"),
    (0x0206, "CKR_SEED_RANDOM_REQUIRED"),
    (0x0207, "CKR_OPERATION_NOT_VALIDATED"),
    (0x0208, "CKR_TOKEN_NOT_INITIALIZED"),
    (0x0209, "CKR_PARAMETER_SET_NOT_SUPPORTED"),
];

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

    /// The codes without a message name, against the headers in decimal.
    #[test]
    fn unnamed_values_match_the_spec_headers() {
        let expected: &[(u64, u64)] = &[
            (CKR_SLOT_ID_INVALID, 3),
            (CKR_FUNCTION_FAILED, 6),
            (CKR_ATTRIBUTE_READ_ONLY, 16),
            (CKR_ATTRIBUTE_TYPE_INVALID, 18),
            (CKR_DATA_INVALID, 32),
            (CKR_DATA_LEN_RANGE, 33),
            (CKR_ENCRYPTED_DATA_INVALID, 64),
            (CKR_ENCRYPTED_DATA_LEN_RANGE, 65),
            (CKR_KEY_SIZE_RANGE, 98),
            (CKR_KEY_TYPE_INCONSISTENT, 99),
            (CKR_KEY_NOT_WRAPPABLE, 105),
            (CKR_MECHANISM_PARAM_INVALID, 113),
            (CKR_OPERATION_ACTIVE, 144),
            (CKR_OPERATION_NOT_INITIALIZED, 145),
            (CKR_SESSION_COUNT, 177),
            (CKR_SESSION_READ_ONLY, 181),
            (CKR_SIGNATURE_INVALID, 192),
            (CKR_SIGNATURE_LEN_RANGE, 193),
            (CKR_TEMPLATE_INCOMPLETE, 208),
            (CKR_USER_ALREADY_LOGGED_IN, 256),
            (CKR_USER_TYPE_INVALID, 259),
            (CKR_USER_ANOTHER_ALREADY_LOGGED_IN, 260),
            (CKR_WRAPPED_KEY_INVALID, 272),
            (CKR_WRAPPED_KEY_LEN_RANGE, 274),
            (CKR_WRAPPING_KEY_TYPE_INCONSISTENT, 277),
            (CKR_RANDOM_NO_RNG, 289),
            (CKR_CURVE_NOT_SUPPORTED, 320),
        ];
        for (i, (value, spec)) in expected.iter().enumerate() {
            assert_eq!(value, spec, "entry {i}");
        }
    }

    #[test]
    fn unnamed_values() {
        assert_eq!(rv_name(0x1), "CKR_CANCEL");
        assert_eq!(rv_name(0x21), "CKR_DATA_LEN_RANGE");
        assert_eq!(rv_name(0x4), "CKR_UNKNOWN");
        assert!(
            NAMES.windows(2).all(|w| w[0].0 < w[1].0),
            "NAMES is sorted by value"
        );
        assert_eq!(rv_name(CKR_VENDOR_DEFINED), "CKR_VENDOR_DEFINED");
        assert_eq!(rv_name(CKR_VENDOR_DEFINED + 7), "CKR_VENDOR_DEFINED");
        assert_eq!(rv_name(u64::MAX), "CKR_VENDOR_DEFINED");
    }
}
