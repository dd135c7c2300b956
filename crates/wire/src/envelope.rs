//! The envelope around every request and response after the handshake.
//!
//! A connection carries one request at a time: the client sends a [`Request`] and reads the
//! [`Response`] with the same id before sending the next. The id lets the client notice a
//! connection that got out of step (say, after a timeout) instead of returning another
//! call's answer. Every error travels as a CK_RV ([`ErrorReply`]); admin errors add a message.

use crate::admin::{AdminRequest, AdminResponse};
use crate::crypto::{CryptoRequest, CryptoResponse};
use crate::pkcs11::{Pkcs11Request, Pkcs11Response};
use crate::rv;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A request: an id chosen by the client, and what it asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Echoed in the matching [`Response`].
    pub id: u64,
    /// What is asked.
    pub body: RequestBody,
}

/// The admin half or the PKCS#11 half of the request type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestBody {
    /// An admin request (keywardctl); served on the admin socket.
    Admin(AdminRequest),
    /// A PKCS#11 request (the module, keywardctl's crypto commands); served on the client socket.
    Pkcs11(Pkcs11Request),
    /// A crypto request (keywardctl encrypt/decrypt/sign/verify/mac); served on the client
    /// socket.
    Crypto(CryptoRequest),
}

/// A response: the request's id and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The id of the [`Request`] this answers.
    pub id: u64,
    /// The answer, or the CK_RV it failed with.
    pub body: Result<ResponseBody, ErrorReply>,
}

/// A successful answer; its half matches the request's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseBody {
    /// The answer to [`RequestBody::Admin`].
    Admin(AdminResponse),
    /// The answer to [`RequestBody::Pkcs11`].
    Pkcs11(Pkcs11Response),
    /// The answer to [`RequestBody::Crypto`].
    Crypto(CryptoResponse),
}

/// A failed request: the CK_RV, and for admin requests a message for the operator.
///
/// PKCS#11 replies carry no message: it stays in the daemon's log (style: "across the wire
/// only the numeric code travels").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// The CK_RV; never `CKR_OK` (the client treats that as a protocol violation).
    pub rv: u64,
    /// What went wrong, for admin requests.
    pub message: Option<String>,
}

impl ErrorReply {
    /// An error with a code only (PKCS#11 requests).
    pub fn new(rv: u64) -> Self {
        ErrorReply { rv, message: None }
    }

    /// An error with a code and a message (admin requests).
    pub fn with_message(rv: u64, message: impl Into<String>) -> Self {
        ErrorReply {
            rv,
            message: Some(message.into()),
        }
    }
}

impl fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:#x})", rv::rv_name(self.rv), self.rv)?;
        if let Some(message) = &self.message {
            write!(f, ": {message}")?;
        }
        Ok(())
    }
}

impl RequestBody {
    /// True if `response` is of the same half as this request.
    pub fn matches(&self, response: &ResponseBody) -> bool {
        matches!(
            (self, response),
            (RequestBody::Admin(_), ResponseBody::Admin(_))
                | (RequestBody::Pkcs11(_), ResponseBody::Pkcs11(_))
                | (RequestBody::Crypto(_), ResponseBody::Crypto(_))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};

    #[test]
    fn error_reply_display() {
        assert_eq!(
            ErrorReply::new(rv::CKR_PIN_INCORRECT).to_string(),
            "CKR_PIN_INCORRECT (0xa0)"
        );
        assert_eq!(
            ErrorReply::with_message(rv::CKR_ARGUMENTS_BAD, "no such role").to_string(),
            "CKR_ARGUMENTS_BAD (0x7): no such role"
        );
    }

    #[test]
    fn round_trip_each_variant() {
        let requests = [
            Request {
                id: 1,
                body: RequestBody::Pkcs11(Pkcs11Request::Ping),
            },
            Request {
                id: u64::MAX,
                body: RequestBody::Admin(AdminRequest::OrgList),
            },
        ];
        for r in requests {
            assert_eq!(decode::<Request>(&encode(&r).unwrap()).unwrap(), r);
        }
        let responses = [
            Response {
                id: 0,
                body: Ok(ResponseBody::Pkcs11(Pkcs11Response::Pong)),
            },
            Response {
                id: 2,
                body: Ok(ResponseBody::Admin(AdminResponse::default())),
            },
            Response {
                id: 3,
                body: Err(ErrorReply::with_message(rv::CKR_DEVICE_ERROR, "store")),
            },
        ];
        for r in responses {
            assert_eq!(decode::<Response>(&encode(&r).unwrap()).unwrap(), r);
        }
    }

    #[test]
    fn halves_must_match() {
        let admin = RequestBody::Admin(AdminRequest::OrgList);
        let ping = RequestBody::Pkcs11(Pkcs11Request::Ping);
        let pong = ResponseBody::Pkcs11(Pkcs11Response::Pong);
        let admin_ok = ResponseBody::Admin(AdminResponse::default());
        assert!(ping.matches(&pong));
        assert!(admin.matches(&admin_ok));
        assert!(!ping.matches(&admin_ok));
        assert!(!admin.matches(&pong));
    }
}
