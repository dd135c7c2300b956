//! PKCS#11 conformance through the built `libkeyward_pkcs11.so` against a real keywardd and
//! SoftHSM2: what a client developer checks against the spec. One binary (cargo does not
//! discover `tests/conformance/*.rs` on its own); one module per area.

#[path = "../common/mod.rs"]
mod common;

mod hmac;
mod keygen;
mod mechanisms;
mod policy;
mod sessions;
mod streaming;
mod unwrap;
