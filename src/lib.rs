//! Keyward: cloud-KMS-style IAM in front of a PKCS#11 token.
//!
//! # Layout
//! - [`policy`]: the pure permission model (names, permissions, roles, snapshot decisions).
//! - [`store`]: the SQLite store (hierarchy, principals, roles, bindings, keys, audit log).
//! - [`audit`]: the hash-chained audit log.
//! - [`context`]: who calls ([`context::Caller`]) and when ([`context::Clock`]), for both the
//!   admin handler and the data path.
//! - [`admin`]: the one admin handler, which keywardctl runs in-process (`--db`) and keywardd
//!   serves on its admin socket.
//! - [`ctl`]: keywardctl, the operator's command line (its `main` is `src/bin/keywardctl.rs`).
#![deny(unsafe_code)] // allowed only in daemon::peercred (SO_PEERGROUPS) and daemon::ring (mmap)

pub mod admin;
pub mod audit;
pub mod catalog;
pub mod context;
pub mod ctl;
pub mod daemon;
pub mod policy;
pub mod store;
pub mod x509;
