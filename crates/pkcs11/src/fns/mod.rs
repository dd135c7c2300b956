//! The safe inner functions, one file per chapter of PKCS#11 3.0 §5 (kryoptic's `fns/`).
//!
//! Each takes typed arguments the ffi layer checked and decoded, and returns
//! `Result<T, Error>`; none sees a raw pointer.

pub mod crypto;
pub mod general;
pub mod keys;
pub mod object;
pub mod session;
pub mod slot;
