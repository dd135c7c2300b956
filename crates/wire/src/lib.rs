//! Keyward's one wire protocol, shared by keywardd, keywardctl and the PKCS#11 module.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod keys;
