//! General-purpose functions (3.0 §5.4): initialise, finalise, library info.

use crate::config::Config;
use crate::error::Error;
use crate::state::{instance, Instance, STATE};
use std::sync::Arc;

/// Which of the four mutex callbacks of `CK_C_INITIALIZE_ARGS` the application supplied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MutexCallbacks {
    /// None of them.
    None,
    /// All four.
    All,
    /// Some but not all: `CKR_ARGUMENTS_BAD`.
    Partial,
}

/// `CK_C_INITIALIZE_ARGS`, decoded (`None` for a NULL `pInitArgs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitArgs {
    /// The mutex callbacks.
    pub mutexes: MutexCallbacks,
    /// `CKF_OS_LOCKING_OK`.
    pub os_locking_ok: bool,
    /// `pReserved` as `key=value` settings.
    pub reserved: Option<String>,
}

/// C_Initialize: a new instance for this process. Never needs keywardd (design §4): it
/// tries once for the slot list and goes on without it.
pub fn initialize(args: Option<InitArgs>) -> Result<(), Error> {
    let reserved = match &args {
        None => None,
        Some(a) => {
            match (a.mutexes, a.os_locking_ok) {
                (MutexCallbacks::Partial, _) => {
                    return Err(Error::ArgumentsBad("some but not all mutex callbacks"))
                }
                // The application insists on its own locks: we only have the OS's.
                (MutexCallbacks::All, false) => return Err(Error::CantLock),
                _ => {}
            }
            a.reserved.as_deref()
        }
    };
    {
        let state = STATE.read();
        if matches!(&*state, Some(i) if i.pid == std::process::id()) {
            return Err(Error::AlreadyInitialized);
        }
    }
    let config = Config::from_process(reserved).map_err(|e| match e {
        crate::config::ConfigError::Reserved(_) => Error::ArgumentsBad("bad pReserved settings"),
        other => Error::Config(other.to_string()),
    })?;
    // Built outside the lock: it may talk to keywardd.
    let new = Arc::new(Instance::new(config));
    let old = {
        let mut state = STATE.write();
        if matches!(&*state, Some(i) if i.pid == std::process::id()) {
            return Err(Error::AlreadyInitialized);
        }
        // A forked child replaces its parent's instance (dropped outside the lock).
        state.replace(new)
    };
    drop(old);
    Ok(())
}

/// C_Finalize: drops the instance; its connection closes, which closes its sessions on
/// keywardd; the kept PINs are zeroised as they drop.
pub fn finalize() -> Result<(), Error> {
    let old = {
        let mut state = STATE.write();
        match &*state {
            Some(i) if i.pid == std::process::id() => state.take(),
            _ => return Err(Error::NotInitialized),
        }
    };
    drop(old);
    Ok(())
}

/// What C_GetInfo reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryInfo {
    /// `cryptokiVersion`: 2.40, the version of `C_GetFunctionList`'s list (NSS refuses a
    /// major version other than 2); the 3.0 list is reached through `C_GetInterface`.
    pub cryptoki_version: (u8, u8),
    /// `manufacturerID`.
    pub manufacturer: &'static str,
    /// `libraryDescription`.
    pub description: &'static str,
    /// `libraryVersion`: the crate's major.minor.
    pub library_version: (u8, u8),
}

/// C_GetInfo.
pub fn info() -> Result<LibraryInfo, Error> {
    instance()?;
    Ok(LibraryInfo {
        cryptoki_version: (2, 40),
        manufacturer: "Keyward",
        description: "Keyward PKCS#11 module",
        library_version: (
            env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap_or(0),
            env!("CARGO_PKG_VERSION_MINOR").parse().unwrap_or(0),
        ),
    })
}
