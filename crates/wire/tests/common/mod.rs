//! Helpers shared by the wire crate's integration tests.
#![allow(dead_code)]

use keyward_wire::admin::{AdminRequest, AdminResponse};
use keyward_wire::server::{accept, Accepted};
use keyward_wire::{
    rv, ClientKind, ErrorReply, Hello, InstanceSecret, Pkcs11Request, Pkcs11Response, RequestBody,
    ResponseBody, ServiceAccountKey, WireError,
};
use std::os::unix::net::UnixStream;
use std::thread::{self, JoinHandle};

/// A well-formed service-account key (design §1 format).
pub const KEY: &str = "kwAbC123.0123456789abcdefghijkl";

/// The secret the test daemon hands out.
pub fn daemon_secret() -> InstanceSecret {
    InstanceSecret::from_bytes([0x5a; 32])
}

/// A module's first Hello, with credentials.
pub fn module_hello() -> Hello {
    Hello::new(ClientKind::Module, None, Some(ServiceAccountKey::new(KEY)))
}

/// The test daemon's handler: Ping → Pong; other PKCS#11 requests →
/// CKR_FUNCTION_NOT_SUPPORTED; every admin request → CKR_ACTION_PROHIBITED with
/// a message naming it.
pub fn handler(body: RequestBody) -> Result<ResponseBody, ErrorReply> {
    match body {
        RequestBody::Pkcs11(Pkcs11Request::Ping) => Ok(ResponseBody::Pkcs11(Pkcs11Response::Pong)),
        RequestBody::Pkcs11(_) | RequestBody::Crypto(_) => {
            Err(ErrorReply::new(rv::CKR_FUNCTION_NOT_SUPPORTED))
        }
        RequestBody::Admin(AdminRequest::OrgList) => Ok(ResponseBody::Admin(AdminResponse {
            message: Some("no orgs".into()),
            ..AdminResponse::default()
        })),
        RequestBody::Admin(other) => Err(ErrorReply::with_message(
            rv::CKR_ACTION_PROHIBITED,
            format!("denied: {other:?}"),
        )),
    }
}

/// What the test daemon's thread returns: the Hello and how serving ended, or the accept error.
pub type DaemonOutcome = Result<(Hello, Result<(), WireError>), WireError>;

/// Runs the real server helpers on `stream` in a thread: accept, welcome with
/// [`daemon_secret`], serve with [`handler`]. The thread returns the Hello it received (or
/// the accept error) and how serving ended.
pub fn spawn_daemon(stream: UnixStream) -> JoinHandle<DaemonOutcome> {
    thread::spawn(move || {
        let Accepted { hello, pending } = accept(stream)?;
        let mut conn = pending.welcome(&daemon_secret())?;
        let served = conn.serve(handler);
        Ok((hello, served))
    })
}
