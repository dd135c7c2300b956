//! The daemon's side of a connection: read the `Hello`, answer it, then serve requests.
//!
//! ```no_run
//! # use keyward_wire::server::{accept, Accepted};
//! # use keyward_wire::{ErrorReply, InstanceSecret, ResponseBody, rv};
//! # fn handle(_: keyward_wire::RequestBody) -> Result<ResponseBody, ErrorReply> {
//! #     Err(ErrorReply::new(rv::CKR_FUNCTION_NOT_SUPPORTED)) }
//! # fn f(stream: std::os::unix::net::UnixStream) -> Result<(), keyward_wire::WireError> {
//! let Accepted { hello, pending } = accept(stream)?; // a bad version is refused in there
//! // ... check hello.instance_secret, SO_PEERCRED, hello.credentials ...
//! let mut conn = pending.welcome(&InstanceSecret::from_bytes([0; 32]))?;
//! conn.serve(handle) // until the client hangs up
//! # }
//! ```
//!
//! Frames are zeroised after decoding and after sending: requests and replies may carry
//! PINs, keys or plaintext.

use crate::codec::{recv_secret, send_secret};
use crate::envelope::{ErrorReply, Request, RequestBody, Response, ResponseBody};
use crate::error::WireError;
use crate::frame::read_frame;
use crate::handshake::PROTOCOL_VERSION;
use crate::handshake::{decode_hello, version_refusal, Hello, HelloReply, InstanceSecret};
use crate::rv;
use std::io::{Read, Write};
use zeroize::Zeroizing;

/// A connection whose `Hello` was read and not yet answered.
#[derive(Debug)]
pub struct PendingHandshake<S> {
    stream: S,
}

/// What [`accept`] read: the client's `Hello` and the connection awaiting the answer.
#[derive(Debug)]
pub struct Accepted<S> {
    /// The client's `Hello`; its version is this build's.
    pub hello: Hello,
    /// Answer with [`PendingHandshake::welcome`] or [`PendingHandshake::refuse`].
    pub pending: PendingHandshake<S>,
}

/// Reads the client's `Hello`.
///
/// A `Hello` of another protocol version is answered with a `Refused` (`CKR_DEVICE_ERROR`,
/// naming both versions) and returned as [`WireError::VersionMismatch`]; a malformed one is
/// refused the same way and returned as the decode error. Either way the caller just drops
/// the connection. A client that hangs up first gives [`WireError::Closed`].
pub fn accept<S: Read + Write>(mut stream: S) -> Result<Accepted<S>, WireError> {
    let payload = Zeroizing::new(read_frame(&mut stream)?);
    match decode_hello(&payload) {
        Ok(hello) => Ok(Accepted {
            hello,
            pending: PendingHandshake { stream },
        }),
        Err(e) => {
            let refusal = match &e {
                WireError::VersionMismatch { theirs, .. } => version_refusal(*theirs),
                _ => HelloReply::Refused {
                    protocol_version: PROTOCOL_VERSION,
                    rv: rv::CKR_DEVICE_ERROR,
                    message: format!("malformed hello: {e}"),
                },
            };
            // Best effort: the client may already be gone, and the first error is the one
            // worth reporting.
            let _ = send_secret(&mut stream, &refusal);
            Err(e)
        }
    }
}

impl<S: Read + Write> PendingHandshake<S> {
    /// Accepts the client, giving it its instance secret, and returns the connection.
    pub fn welcome(mut self, instance_secret: &InstanceSecret) -> Result<Connection<S>, WireError> {
        let reply = HelloReply::Welcome {
            protocol_version: PROTOCOL_VERSION,
            instance_secret: instance_secret.clone(),
        };
        send_secret(&mut self.stream, &reply)?;
        Ok(Connection {
            stream: self.stream,
        })
    }

    /// Refuses the client with a CK_RV and a reason; the caller then drops the stream.
    pub fn refuse(mut self, rv: u64, message: impl Into<String>) -> Result<S, WireError> {
        let reply = HelloReply::Refused {
            protocol_version: PROTOCOL_VERSION,
            rv,
            message: message.into(),
        };
        send_secret(&mut self.stream, &reply)?;
        Ok(self.stream)
    }
}

/// A connection after the handshake: requests in, responses out, one at a time.
#[derive(Debug)]
pub struct Connection<S> {
    stream: S,
}

impl<S: Read + Write> Connection<S> {
    /// The next request, or `None` when the client hung up cleanly between requests.
    ///
    /// A malformed request is an error: the connection is out of step, drop it.
    pub fn next_request(&mut self) -> Result<Option<Request>, WireError> {
        match recv_secret(&mut self.stream) {
            Ok(request) => Ok(Some(request)),
            Err(WireError::Closed) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends the response to request `id`.
    pub fn respond(
        &mut self,
        id: u64,
        body: Result<ResponseBody, ErrorReply>,
    ) -> Result<(), WireError> {
        send_secret(&mut self.stream, &Response { id, body })
    }

    /// Answers each request with `handler` until the client hangs up (`Ok(())`) or the
    /// connection fails.
    pub fn serve<F>(&mut self, mut handler: F) -> Result<(), WireError>
    where
        F: FnMut(RequestBody) -> Result<ResponseBody, ErrorReply>,
    {
        while let Some(Request { id, body }) = self.next_request()? {
            let outcome = handler(body);
            self.respond(id, outcome)?;
        }
        Ok(())
    }

    /// The underlying stream (to read peer credentials, set timeouts, ...).
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The underlying stream, mutably (to write a frame beside a shared-memory ring).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Gives the stream back.
    pub fn into_inner(self) -> S {
        self.stream
    }
}

impl<S> PendingHandshake<S> {
    /// The underlying stream (to read peer credentials before answering).
    pub fn get_ref(&self) -> &S {
        &self.stream
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, send};
    use crate::frame::write_frame;
    use crate::handshake::{decode_reply, ClientKind};
    use crate::pkcs11::{Pkcs11Request, Pkcs11Response};
    use std::io::{self, Cursor};

    /// Input prepared in advance; output collected.
    #[derive(Debug)]
    struct Duplex {
        input: Cursor<Vec<u8>>,
        output: Vec<u8>,
    }
    impl Read for Duplex {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }
    impl Write for Duplex {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    fn duplex(input: Vec<u8>) -> Duplex {
        Duplex {
            input: Cursor::new(input),
            output: Vec::new(),
        }
    }

    #[test]
    fn welcome_then_serve_until_hangup() {
        let mut input = Vec::new();
        send(&mut input, &Hello::new(ClientKind::Module, None, None)).unwrap();
        for id in [5, 6] {
            let request = Request {
                id,
                body: RequestBody::Pkcs11(Pkcs11Request::Ping),
            };
            send(&mut input, &request).unwrap();
        }
        let Accepted { hello, pending } = accept(duplex(input)).unwrap();
        assert_eq!(hello.client, ClientKind::Module);
        let mut conn = pending
            .welcome(&InstanceSecret::from_bytes([3; 32]))
            .unwrap();
        let mut seen = 0;
        conn.serve(|body| {
            seen += 1;
            assert_eq!(body, RequestBody::Pkcs11(Pkcs11Request::Ping));
            Ok(ResponseBody::Pkcs11(Pkcs11Response::Pong))
        })
        .unwrap();
        assert_eq!(seen, 2);

        let mut out = Cursor::new(conn.into_inner().output);
        let welcome = read_frame(&mut out).unwrap();
        assert_eq!(
            decode_reply(&welcome, PROTOCOL_VERSION)
                .unwrap()
                .expose_secret(),
            &[3; 32]
        );
        for id in [5, 6] {
            let response: Response = decode(&read_frame(&mut out).unwrap()).unwrap();
            assert_eq!(response.id, id);
            assert_eq!(
                response.body,
                Ok(ResponseBody::Pkcs11(Pkcs11Response::Pong))
            );
        }
        assert!(matches!(read_frame(&mut out), Err(WireError::Closed)));
    }

    #[test]
    fn wrong_version_is_refused_on_the_wire() {
        let mut hello = Hello::new(ClientKind::Ctl, None, None);
        hello.protocol_version = PROTOCOL_VERSION + 1;
        let mut input = Vec::new();
        send(&mut input, &hello).unwrap();
        let mut stream = duplex(input);
        let err = accept(&mut stream).unwrap_err();
        assert!(
            matches!(err, WireError::VersionMismatch { theirs, .. } if theirs == PROTOCOL_VERSION + 1)
        );
        let reply: HelloReply =
            decode(&read_frame(&mut Cursor::new(&stream.output)).unwrap()).unwrap();
        assert!(matches!(
            reply,
            HelloReply::Refused {
                rv: rv::CKR_DEVICE_ERROR,
                ..
            }
        ));
    }

    #[test]
    fn malformed_hello_is_refused() {
        let mut input = Vec::new();
        write_frame(&mut input, &[PROTOCOL_VERSION as u8, 7]).unwrap();
        let mut stream = duplex(input);
        assert!(matches!(accept(&mut stream), Err(WireError::Decode(_))));
        let reply: HelloReply =
            decode(&read_frame(&mut Cursor::new(&stream.output)).unwrap()).unwrap();
        assert!(matches!(
            reply,
            HelloReply::Refused {
                rv: rv::CKR_DEVICE_ERROR,
                ..
            }
        ));
    }

    #[test]
    fn refuse_sends_the_code() {
        let mut input = Vec::new();
        send(&mut input, &Hello::new(ClientKind::Module, None, None)).unwrap();
        let Accepted { pending, .. } = accept(duplex(input)).unwrap();
        let stream = pending.refuse(rv::CKR_PIN_LOCKED, "locked").unwrap();
        let frame = read_frame(&mut Cursor::new(stream.output)).unwrap();
        assert!(matches!(
            decode_reply(&frame, PROTOCOL_VERSION),
            Err(WireError::Refused {
                rv: rv::CKR_PIN_LOCKED,
                ..
            })
        ));
    }

    #[test]
    fn garbage_request_is_an_error_and_hangup_is_none() {
        let mut input = Vec::new();
        send(&mut input, &Hello::new(ClientKind::Module, None, None)).unwrap();
        write_frame(&mut input, &[0xff]).unwrap();
        let Accepted { pending, .. } = accept(duplex(input)).unwrap();
        let mut conn = pending
            .welcome(&InstanceSecret::from_bytes([0; 32]))
            .unwrap();
        assert!(matches!(conn.next_request(), Err(WireError::Decode(_))));
        assert!(matches!(conn.next_request(), Ok(None)));
    }
}
