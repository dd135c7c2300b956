//! keywardctl, the operator's command line (design §1-§3, §6), as a library the thin
//! `src/bin/keywardctl.rs` main drives.
//!
//! Every admin command becomes exactly one [`AdminRequest`](keyward_wire::admin::AdminRequest)
//! ([`request::to_request`]), which is sent to the one admin handler
//! ([`transport::run_request`]: in-process over `--db PATH`, else keywardd's admin socket) and
//! whose answer is printed ([`render::print_response`]). The crypto commands ([`crypto`]), key
//! export, the certificate commands ([`cert`]) and the BYOK wrap ([`wrap`]) have their own
//! runners, which talk to keywardd's client socket.
//!
//! Output: by default a one-line message, an aligned table and warnings on stderr; with
//! `--json` the response's JSON document as is (JSON lines for `audit tail|query`, for a SIEM,
//! design §6). Failures and exit codes (0, 1, 2, 3) are one contract, in [`error`].
//!
//! The offline caller (`--as` absent) is `unix-uid:<real uid>` with the process's unix groups,
//! read from `/proc/self/status` (`Uid:`, `Gid:`, `Groups:`): no `unsafe`, no extra crate, and
//! the same identity keywardd derives from `SO_PEERCRED`/`SO_PEERGROUPS`.
//!
//! | module | what |
//! |---|---|
//! | [`args`] | the clap definitions and value parsers |
//! | [`request`] | command → [`AdminRequest`](keyward_wire::admin::AdminRequest), names normalised |
//! | [`transport`] | `--db` in-process, or keywardd's sockets |
//! | [`error`] | [`error::CtlError`]: the JSON error document and the exit codes |
//! | [`render`] | messages, tables, JSON, control characters escaped |
//! | [`crypto`] | encrypt, decrypt, sign, verify, mac, key export (client socket) |
//! | [`cert`] | `key cert create/get`: certificates and CSRs signed in the token |
//! | [`wrap`] | `key wrap-for-import`: the BYOK wrap, done in this process |
#![forbid(unsafe_code)]

pub mod args;
pub mod cert;
pub mod crypto;
pub mod error;
pub mod render;
pub mod request;
pub mod transport;
pub mod wrap;
