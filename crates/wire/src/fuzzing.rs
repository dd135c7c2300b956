//! Fuzz harness of the wire decoder (issue 15 item 7), built only for the fuzz targets
//! (`cfg(fuzzing)`, see `fuzz/`) and for the unit test that replays the committed corpus
//! (`fuzz/corpus/wire/`) in CI.
//!
//! [`wire`] feeds hostile bytes to both ends as they read them: keywardd's side (the `Hello`
//! then a stream of requests, through [`crate::server`]), the module's and keywardctl's side
//! (the `HelloReply` then responses, through a real [`Client`] over a socket pair), and every
//! top-level decoder on its own. Whatever decodes must encode and decode back to itself.

use crate::codec::{decode, encode};
use crate::envelope::{Request, RequestBody, Response};
use crate::handshake::{
    decode_hello, decode_reply, hello_version, reply_version, ClientKind, Hello, HelloReply,
    PROTOCOL_VERSION,
};
use crate::{admin::AdminRequest, crypto::CryptoRequest, pkcs11::Pkcs11Request, Client};
use crate::{ClientOptions, WireError};
use serde::{de::DeserializeOwned, Serialize};
use std::fmt::Debug;
use std::io::{self, Cursor, Read, Write};

/// Requests read per input on a stream, at most.
const MAX_MESSAGES: usize = 64;

/// One fuzz input: the first byte picks the side, the rest is what the peer sent.
pub fn wire(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => daemon_side(rest),
        1 => client_side(rest),
        _ => decoders(rest),
    }
}

/// `decode(encode(v)) == v` for every value that decoded.
fn round_trips<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) {
    let bytes = encode(value).expect("a decoded value encodes");
    let back: T = decode(&bytes).expect("an encoded value decodes");
    assert_eq!(&back, value, "round trip changed the value");
}

/// Every top-level decoder on the same bytes.
fn decoders(payload: &[u8]) {
    if let Ok(r) = decode::<Request>(payload) {
        round_trips(&r);
    }
    if let Ok(r) = decode::<Response>(payload) {
        round_trips(&r);
    }
    if let Ok(h) = decode::<Hello>(payload) {
        round_trips(&h);
    }
    if let Ok(h) = decode::<HelloReply>(payload) {
        round_trips(&h);
    }
    match decode_hello(payload) {
        Ok(h) => assert_eq!(h.protocol_version, PROTOCOL_VERSION),
        Err(WireError::VersionMismatch { theirs, .. }) => {
            assert_ne!(theirs, PROTOCOL_VERSION);
            assert_eq!(hello_version(payload).ok(), Some(theirs));
        }
        Err(_) => {}
    }
    match decode_reply(payload, PROTOCOL_VERSION) {
        Ok(_) | Err(WireError::Refused { .. }) => {
            assert_eq!(reply_version(payload).ok(), Some(PROTOCOL_VERSION));
        }
        Err(WireError::VersionMismatch { theirs, .. }) => assert_ne!(theirs, PROTOCOL_VERSION),
        Err(_) => {}
    }
}

/// Bytes in, bytes out, never blocking.
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

/// keywardd's side: the client's `Hello`, then requests until the stream ends or breaks.
fn daemon_side(input: &[u8]) {
    let stream = Duplex {
        input: Cursor::new(input.to_vec()),
        output: Vec::new(),
    };
    let accepted = match crate::server::accept(stream) {
        Ok(a) => a,
        Err(_) => return,
    };
    assert_eq!(accepted.hello.protocol_version, PROTOCOL_VERSION);
    round_trips(&accepted.hello);
    let secret = crate::InstanceSecret::from_bytes([7; 32]);
    let Ok(mut conn) = accepted.pending.welcome(&secret) else {
        return;
    };
    for _ in 0..MAX_MESSAGES {
        match conn.next_request() {
            Ok(Some(request)) => round_trips(&request),
            Ok(None) | Err(_) => return,
        }
    }
}

/// The module's (and keywardctl's) side: a real [`Client`] over a socket pair whose peer
/// already sent the fuzz input (the `HelloReply`, then responses) and hung up.
fn client_side(input: &[u8]) {
    let Ok((ours, mut theirs)) = std::os::unix::net::UnixStream::pair() else {
        return;
    };
    // Inputs are far below a socket buffer (libFuzzer's -max_len), so this cannot block.
    if theirs.write_all(input).is_err() || theirs.shutdown(std::net::Shutdown::Write).is_err() {
        return;
    }
    let hello = Hello::new(ClientKind::Module, None, None);
    let Ok(mut client) = Client::handshake(ours, &hello, &ClientOptions::default()) else {
        return;
    };
    // Each call's half comes from the response bytes so every pairing is reached.
    let bodies = [
        RequestBody::Pkcs11(Pkcs11Request::Ping),
        RequestBody::Admin(AdminRequest::Status),
        RequestBody::Crypto(CryptoRequest::Encrypt {
            key: String::new(),
            plaintext: Default::default(),
            aad: Default::default(),
        }),
    ];
    for i in 0..MAX_MESSAGES {
        let body = bodies[i % bodies.len()].clone();
        match client.call(body.clone()) {
            Ok(response) => assert!(body.matches(&response)),
            Err(WireError::Remote(reply)) => {
                assert_ne!(reply.rv, crate::rv::CKR_OK);
                assert!(client.is_usable());
            }
            Err(_) => {
                if !client.is_usable() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// Replays every file of `fuzz/corpus/wire/` (the seeds and what the fuzzer kept).
    #[test]
    fn corpus_replays() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/wire");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            super::wire(&std::fs::read(&path).unwrap());
            n += 1;
        }
        assert!(n >= 20, "only {n} corpus files");
    }
}
