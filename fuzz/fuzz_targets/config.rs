//! The configuration parsers: keywardd's keyward.toml (first byte even) and the module's
//! pReserved / KEYWARD_TOKENS / module.toml (first byte odd).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some((&mode, rest)) = data.split_first() {
        if mode % 2 == 0 {
            keyward::daemon::config::fuzzing::daemon_config(rest);
        } else {
            keyward_pkcs11::config::fuzzing::module_config(rest);
        }
    }
});
