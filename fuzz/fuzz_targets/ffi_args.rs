//! The module's template, mechanism-parameter and C_Initialize argument decoding from real
//! C structures: keyward_pkcs11::ffi::fuzzing::ffi_args.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_pkcs11::ffi::fuzzing::ffi_args(data));
