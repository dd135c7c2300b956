//! keywardd's access to the one backing PKCS#11 token (SoftHSM2 or any HSM), through cryptoki.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
