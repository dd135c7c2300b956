//! The wire decoder, both directions and the handshake: keyward_wire::fuzzing::wire.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_wire::fuzzing::wire(data));
