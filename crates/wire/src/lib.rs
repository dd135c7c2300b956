//! Keyward's one wire protocol, shared by keywardd, keywardctl and the PKCS#11 module.
//!
//! Layers, bottom up (design §1 "Sockets and protocol"):
//! - [`frame`]: 4-byte big-endian length + payload, capped at [`MAX_FRAME_LEN`];
//! - [`codec`]: serde with postcard, one message per frame;
//! - [`handshake`]: [`Hello`] / [`HelloReply`], the protocol version and the instance secret;
//! - [`envelope`]: [`Request`] / [`Response`] with an admin half and a PKCS#11 half; every
//!   error travels as a CK_RV ([`rv`]) in an [`ErrorReply`];
//! - [`client`] and [`server`]: blocking helpers over `std::io` for each end; [`spin`]: the
//!   brief look for the next frame both ends make before they block; [`ring`]: the
//!   shared-memory transport over a sealed memfd, the socket its fallback.
//!
//! Everything is blocking `std::io`, with no threads of its own: the module is loaded into
//! arbitrary host processes.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod ck;
pub mod client;
pub mod codec;
pub mod crypto;
pub mod envelope;
pub mod error;
pub mod frame;
#[cfg(any(test, fuzzing))]
pub mod fuzzing;
pub mod handshake;
pub mod import;
pub mod keys;
pub mod pkcs11;
pub mod ring;
pub mod rv;
pub mod server;
pub mod spin;

pub use client::{Client, ClientOptions};
pub use codec::{decode, encode};
pub use crypto::{CryptoRequest, CryptoResponse};
pub use envelope::{ErrorReply, Request, RequestBody, Response, ResponseBody};
pub use error::WireError;
pub use frame::{read_frame, write_frame, MAX_FRAME_LEN};
pub use handshake::{
    ClientKind, Hello, HelloReply, InstanceSecret, ServiceAccountKey, PROTOCOL_VERSION,
};
pub use pkcs11::{Pkcs11Request, Pkcs11Response};
