//! The PKCS#11 half of the request type: what the module asks of keywardd.
//!
//! Placeholder: only [`Pkcs11Request::Ping`] / [`Pkcs11Response::Pong`] exist so far; the
//! PKCS#11 calls themselves are filled in by a later issue. New variants go at the end
//! (postcard encodes a variant by its index) and bump [`crate::PROTOCOL_VERSION`] when an
//! existing variant changes.

use serde::{Deserialize, Serialize};

/// One PKCS#11 request from the module. Only `Ping` so far: the calls come with a later issue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Pkcs11Request {
    /// Liveness check; answered with [`Pkcs11Response::Pong`].
    Ping,
}

/// The successful answer to a [`Pkcs11Request`]. Only `Pong` so far: see [`Pkcs11Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Pkcs11Response {
    /// The answer to [`Pkcs11Request::Ping`].
    Pong,
}
