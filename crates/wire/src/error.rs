//! The one error type of the wire crate, and its default mapping to a CK_RV.

use crate::envelope::ErrorReply;
use crate::rv;
use std::io;
use std::path::PathBuf;

/// Everything that can go wrong on a Keyward connection.
///
/// Two groups matter to callers (see [`WireError::is_disconnect`]): errors after which the
/// connection is gone or unusable (a reconnect may help), and answers from the peer
/// ([`WireError::Remote`], [`WireError::Refused`]) that leave the connection as it was.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Connecting to the daemon's socket failed (daemon not running, socket missing, ...).
    #[error("cannot connect to {}: {source}", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Reading or writing the socket failed.
    #[error("socket I/O: {0}")]
    Io(#[source] io::Error),
    /// A read or write timeout expired. The stream may now be mid-frame: drop the connection.
    #[error("timed out waiting for the peer")]
    Timeout,
    /// The peer closed the connection cleanly between two frames.
    #[error("connection closed by peer")]
    Closed,
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed mid-frame: got {got} of {expected} bytes")]
    Truncated {
        /// Bytes of the frame (4-byte header plus payload) that were expected.
        expected: u64,
        /// Bytes that arrived before end of file.
        got: u64,
    },
    /// A frame's length is over the cap; nothing was allocated for it.
    #[error("frame of {len} bytes exceeds the {max}-byte cap")]
    FrameTooLarge {
        /// The announced (or attempted) payload length.
        len: u64,
        /// The cap in force.
        max: u64,
    },
    /// A message could not be encoded.
    #[error("cannot encode message: {0}")]
    Encode(#[source] postcard::Error),
    /// A frame's payload is not a valid message of the expected type.
    #[error("malformed message: {0}")]
    Decode(#[source] postcard::Error),
    /// A frame held a valid message followed by extra bytes.
    #[error("{0} unexpected bytes after the message")]
    TrailingBytes(usize),
    /// The two sides speak different protocol versions.
    #[error("protocol version mismatch: we speak {ours}, the peer speaks {theirs}")]
    VersionMismatch {
        /// This side's [`crate::PROTOCOL_VERSION`].
        ours: u32,
        /// The peer's.
        theirs: u32,
    },
    /// The daemon refused the handshake.
    #[error("daemon refused the connection: {} ({rv:#x}): {message}", rv::rv_name(*rv))]
    Refused {
        /// The CK_RV the refusal maps to.
        rv: u64,
        /// The daemon's reason.
        message: String,
    },
    /// A response carried another request's id: the connection is out of step.
    #[error("response id {got} does not match request id {expected}")]
    IdMismatch {
        /// The id of the request in flight.
        expected: u64,
        /// The id the response carried.
        got: u64,
    },
    /// The peer sent a well-formed message that is wrong at this point of the protocol.
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// An earlier error left this connection unusable; open a new one.
    #[error("connection unusable after an earlier error")]
    Broken,
    /// The connection was opened by another process (this one is a forked child of it).
    #[error("connection belongs to process {owner}, not to this one")]
    Forked {
        /// The pid that opened the connection.
        owner: u32,
    },
    /// The daemon answered the request with an error.
    #[error("{0}")]
    Remote(ErrorReply),
}

impl WireError {
    /// Maps an I/O error of a blocking read or write, telling timeouts apart.
    pub(crate) fn from_io(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => WireError::Timeout,
            _ => WireError::Io(e),
        }
    }

    /// True if the connection is gone or out of step, so it must be dropped (and a new one
    /// may be opened). False for the peer's answers ([`WireError::Remote`],
    /// [`WireError::Refused`]), for version mismatches and for a fork (reconnecting does not
    /// help there), and for a message this side could not encode (nothing was sent).
    pub fn is_disconnect(&self) -> bool {
        match self {
            WireError::Connect { .. }
            | WireError::Io(_)
            | WireError::Timeout
            | WireError::Closed
            | WireError::Truncated { .. }
            | WireError::FrameTooLarge { .. }
            | WireError::Decode(_)
            | WireError::TrailingBytes(_)
            | WireError::IdMismatch { .. }
            | WireError::Protocol(_)
            | WireError::Broken => true,
            WireError::Encode(_)
            | WireError::VersionMismatch { .. }
            | WireError::Refused { .. }
            | WireError::Forked { .. }
            | WireError::Remote(_) => false,
        }
    }

    /// The default CK_RV for this error.
    ///
    /// The daemon's codes come back unchanged; a lost connection is `CKR_DEVICE_REMOVED`,
    /// a peer breaking the protocol (or a version mismatch) `CKR_DEVICE_ERROR`, a fork
    /// `CKR_CRYPTOKI_NOT_INITIALIZED`. The module narrows the disconnect case to what each
    /// C_ function may return (design §4: `CKR_TOKEN_NOT_PRESENT` at C_OpenSession).
    pub fn ck_rv(&self) -> u64 {
        match self {
            WireError::Remote(reply) => reply.rv,
            WireError::Refused { rv, .. } => *rv,
            WireError::Connect { .. } => rv::CKR_TOKEN_NOT_PRESENT,
            WireError::Io(_)
            | WireError::Timeout
            | WireError::Closed
            | WireError::Truncated { .. }
            | WireError::Broken => rv::CKR_DEVICE_REMOVED,
            WireError::FrameTooLarge { .. }
            | WireError::Decode(_)
            | WireError::TrailingBytes(_)
            | WireError::IdMismatch { .. }
            | WireError::Protocol(_)
            | WireError::VersionMismatch { .. } => rv::CKR_DEVICE_ERROR,
            WireError::Encode(_) => rv::CKR_GENERAL_ERROR,
            WireError::Forked { .. } => rv::CKR_CRYPTOKI_NOT_INITIALIZED,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_told_apart() {
        let e = WireError::from_io(io::Error::from(io::ErrorKind::WouldBlock));
        assert!(matches!(e, WireError::Timeout));
        let e = WireError::from_io(io::Error::from(io::ErrorKind::TimedOut));
        assert!(matches!(e, WireError::Timeout));
        let e = WireError::from_io(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(matches!(e, WireError::Io(_)));
    }

    #[test]
    fn default_codes() {
        let remote = WireError::Remote(ErrorReply::new(rv::CKR_PIN_LOCKED));
        assert_eq!(remote.ck_rv(), rv::CKR_PIN_LOCKED);
        assert!(!remote.is_disconnect());
        assert_eq!(WireError::Closed.ck_rv(), rv::CKR_DEVICE_REMOVED);
        assert!(WireError::Closed.is_disconnect());
        let mismatch = WireError::VersionMismatch { ours: 1, theirs: 2 };
        assert_eq!(mismatch.ck_rv(), rv::CKR_DEVICE_ERROR);
        assert!(!mismatch.is_disconnect());
        assert_eq!(
            WireError::Forked { owner: 1 }.ck_rv(),
            rv::CKR_CRYPTOKI_NOT_INITIALIZED
        );
        let connect = WireError::Connect {
            path: "/nonexistent".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        assert_eq!(connect.ck_rv(), rv::CKR_TOKEN_NOT_PRESENT);
    }

    #[test]
    fn refusal_message_names_the_code() {
        let e = WireError::Refused {
            rv: rv::CKR_DEVICE_ERROR,
            message: "nope".into(),
        };
        let text = e.to_string();
        assert!(text.contains("CKR_DEVICE_ERROR"), "{text}");
        assert!(text.contains("0x30"), "{text}");
        assert!(text.contains("nope"), "{text}");
    }
}
