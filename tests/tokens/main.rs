//! The token matrix (issue 17): keywardd on backing tokens other than SoftHSM2, each set up
//! privately for one test (tpm2-pkcs11 over swtpm: [`common::tpm2`]; NSS softokn: [`common::nss`]). One binary (cargo does
//! not discover `tests/tokens/*.rs` on its own); one module per token.

#[path = "../common/mod.rs"]
mod common;

mod nss;
mod softhsm2;
mod tpm2;
