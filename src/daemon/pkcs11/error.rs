//! The data path's error (style guide "How CK_RV errors flow", rule 5): a [`P11Error`] is the
//! CK_RV the C_ function returns, chosen where the failure is found (the same cause is
//! `CKR_OBJECT_HANDLE_INVALID` for one function and `CKR_KEY_HANDLE_INVALID` for another,
//! design §4), with its cause and the place that produced it for keywardd's log. Only the
//! CK_RV crosses the wire ([`ClientConnection::handle`](super::ClientConnection::handle)
//! logs the rest at debug level); a cause never holds a PIN, a credential or key material.
//!
//! A struct, not one `thiserror` variant per cause (style rule 5's form): the data path
//! returns some sixty codes, each picked per function from what the spec allows it; an enum
//! of causes would need a second table from cause and function to CK_RV, which is the
//! decision this type keeps at the site that makes it. The conversion into CK_RV is total
//! (a field read; no `_` arm to forget).

use std::borrow::Cow;
use std::fmt;
use std::panic::Location;

/// A data-path call's failure: the CK_RV its C_ function returns, and why.
#[derive(Debug, Clone)]
pub struct P11Error {
    rv: u64,
    cause: Cow<'static, str>,
    at: &'static Location<'static>,
}

impl P11Error {
    /// `rv` because of `cause` (logs only; never key material, PINs or credentials).
    #[track_caller]
    pub fn new(rv: u64, cause: impl Into<Cow<'static, str>>) -> Self {
        P11Error {
            rv,
            cause: cause.into(),
            at: Location::caller(),
        }
    }

    /// The CK_RV the C_ function returns (the only part sent to the module).
    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// Why (for logs).
    pub fn cause(&self) -> &str {
        &self.cause
    }

    /// Where in keywardd the code was chosen.
    pub fn at(&self) -> &'static Location<'static> {
        self.at
    }
}

/// A bare CK_RV (from a helper that returns one, the token crate's or the audit writer's
/// `ck_rv`): the cause is the place the code became this call's error.
impl From<u64> for P11Error {
    #[track_caller]
    fn from(rv: u64) -> Self {
        P11Error {
            rv,
            cause: Cow::Borrowed(""),
            at: Location::caller(),
        }
    }
}

impl From<P11Error> for u64 {
    fn from(e: P11Error) -> u64 {
        e.rv
    }
}

/// Errors are equal when their codes are (the cause and site are for logs).
impl PartialEq for P11Error {
    fn eq(&self, other: &P11Error) -> bool {
        self.rv == other.rv
    }
}

impl PartialEq<u64> for P11Error {
    fn eq(&self, rv: &u64) -> bool {
        self.rv == *rv
    }
}

impl fmt::Display for P11Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CK_RV {:#x} at {}", self.rv, self.at)?;
        if !self.cause.is_empty() {
            write!(f, ": {}", self.cause)?;
        }
        Ok(())
    }
}

impl std::error::Error for P11Error {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::pkcs11::ck::{CKR_KEY_HANDLE_INVALID, CKR_SLOT_ID_INVALID};

    fn refuse() -> Result<(), P11Error> {
        Err(CKR_SLOT_ID_INVALID)?;
        Ok(())
    }

    #[test]
    fn the_code_is_what_crosses_and_the_site_is_kept() {
        let e = refuse().unwrap_err();
        assert_eq!(u64::from(e.clone()), CKR_SLOT_ID_INVALID);
        assert_eq!(e.at().file(), file!());
        let e = P11Error::new(CKR_KEY_HANDLE_INVALID, "not visible to the caller");
        assert_eq!(e.rv(), CKR_KEY_HANDLE_INVALID);
        assert_eq!(
            e.to_string(),
            format!("CK_RV 0x60 at {}: not visible to the caller", e.at())
        );
    }
}
