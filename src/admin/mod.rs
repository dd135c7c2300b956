//! The one admin handler: every keywardctl command is an [`AdminRequest`] handled here.
//! keywardctl runs it in-process with `--db`; keywardd serves it on the admin socket.

use crate::policy::Principal;
use keyward_wire::admin::{AdminRequest, AdminResponse};
use std::path::Path;

/// Who sent a request, as the transport established it.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The principal the request runs as.
    pub principal: Principal,
    /// The peer's pid, when known (SO_PEERCRED).
    pub peer_pid: Option<u32>,
    /// The peer's uid, when known.
    pub peer_uid: Option<u32>,
    /// The module instance or connection id, when there is one.
    pub instance: Option<String>,
}

/// An admin request that failed: a CK_RV for the wire and a message for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminError {
    /// The CK_RV that travels on the wire.
    pub rv: u64,
    /// What was wrong and what to do.
    pub message: String,
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AdminError {}

/// The admin service over one store.
pub struct AdminService {
    _private: (),
}

impl AdminService {
    /// Opens (creating if needed) the store at `db` and the handler over it.
    pub fn open(db: &Path) -> Result<AdminService, AdminError> {
        let _ = db;
        Err(AdminError { rv: 0x30, message: "not built yet".into() })
    }

    /// Handles one request for `caller`.
    pub fn handle(
        &mut self,
        caller: &Caller,
        req: AdminRequest,
    ) -> Result<AdminResponse, AdminError> {
        let _ = (caller, req);
        Err(AdminError { rv: 0x30, message: "not built yet".into() })
    }
}
