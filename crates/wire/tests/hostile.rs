//! Hostile and malformed input, and the protocol over real sockets.

mod common;

use common::{daemon_secret, module_hello, spawn_daemon, KEY};
use keyward_wire::admin::{AdminRequest, AdminResponse};
use keyward_wire::codec::{decode, encode, send};
use keyward_wire::frame::{read_frame, write_frame, HEADER_LEN};
use keyward_wire::handshake::{decode_hello, decode_reply, HelloReply};
use keyward_wire::server::{accept, Accepted};
use keyward_wire::{
    rv, Client, ClientKind, ClientOptions, ErrorReply, Hello, InstanceSecret, Pkcs11Request,
    Pkcs11Response, Request, RequestBody, Response, ResponseBody, ServiceAccountKey, WireError,
    MAX_FRAME_LEN, PROTOCOL_VERSION,
};
use proptest::prelude::*;
use std::io::{Cursor, Read};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::Duration;

// ---------------------------------------------------------------- frames

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any bytes: read_frame never panics, and its answer agrees with a simple model.
    #[test]
    fn read_frame_agrees_with_model(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        // Small lengths are common in the input only if we make them so: force the top
        // bytes of the length to zero half the time.
        let mut bytes = bytes;
        if bytes.len() >= 2 && bytes[0] % 2 == 0 {
            bytes[0] = 0;
            bytes[1] = 0;
            if bytes.len() >= 3 { bytes[2] = 0; }
        }
        let result = read_frame(&mut Cursor::new(&bytes));
        if bytes.is_empty() {
            prop_assert!(matches!(result, Err(WireError::Closed)));
        } else if bytes.len() < HEADER_LEN {
            let is_truncated = matches!(result, Err(WireError::Truncated { .. }));
            prop_assert!(is_truncated, "{:?}", result);
        } else {
            let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
            if len > MAX_FRAME_LEN {
                let too_large = matches!(result, Err(WireError::FrameTooLarge { .. }));
                prop_assert!(too_large, "{:?}", result);
            } else if bytes.len() - HEADER_LEN < len {
                let is_truncated = matches!(result, Err(WireError::Truncated { .. }));
                prop_assert!(is_truncated, "{:?}", result);
            } else {
                prop_assert_eq!(result.unwrap(), &bytes[4..4 + len]);
            }
        }
    }

    /// Every cut of a valid frame is an error: Closed at 0, Truncated after.
    #[test]
    fn truncated_frames_error(payload in proptest::collection::vec(any::<u8>(), 0..300),
                              cut in any::<prop::sample::Index>()) {
        let mut framed = Vec::new();
        write_frame(&mut framed, &payload).unwrap();
        let cut = cut.index(framed.len()); // 0..len: always short of the whole frame
        let result = read_frame(&mut Cursor::new(&framed[..cut]));
        if cut == 0 {
            prop_assert!(matches!(result, Err(WireError::Closed)));
        } else {
            // Mid-header, the frame's length is not known yet: the header is what was expected.
            let whole = if cut < HEADER_LEN { HEADER_LEN } else { framed.len() };
            let ok = matches!(result, Err(WireError::Truncated { expected, got })
                if expected == whole as u64 && got == cut as u64);
            prop_assert!(ok, "cut {} of {}: {:?}", cut, framed.len(), result);
        }
    }

    /// A length over the cap is refused after reading the header and nothing more.
    #[test]
    fn oversized_length_prefix_errors(len in (MAX_FRAME_LEN as u32 + 1)..=u32::MAX) {
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0xAA; 64]);
        let mut cursor = Cursor::new(bytes);
        let result = read_frame(&mut cursor);
        let ok = matches!(result, Err(WireError::FrameTooLarge { len: l, .. }) if l == u64::from(len));
        prop_assert!(ok, "{:?}", result);
        prop_assert_eq!(cursor.position(), HEADER_LEN as u64);
    }

    /// Any bytes into every decoder: never a panic; whatever decodes re-encodes to itself.
    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(r) = decode::<Request>(&bytes) {
            prop_assert_eq!(decode::<Request>(&encode(&r).unwrap()).unwrap(), r);
        }
        if let Ok(r) = decode::<Response>(&bytes) {
            prop_assert_eq!(decode::<Response>(&encode(&r).unwrap()).unwrap(), r);
        }
        if let Ok(h) = decode_hello(&bytes) {
            prop_assert_eq!(h.protocol_version, PROTOCOL_VERSION);
            prop_assert_eq!(decode::<Hello>(&encode(&h).unwrap()).unwrap(), h);
        }
        let _ = decode::<HelloReply>(&bytes);
        let _ = decode_reply(&bytes, PROTOCOL_VERSION);
    }

    /// Mutating one byte of a valid message: still never a panic.
    #[test]
    fn mutated_messages_never_panic(org in ".{0,40}", at in any::<prop::sample::Index>(),
                                    value in any::<u8>()) {
        let request = Request { id: 7, body: RequestBody::Admin(AdminRequest::OrgCreate { org }) };
        let mut bytes = encode(&request).unwrap();
        let i = at.index(bytes.len());
        bytes[i] = value;
        let _ = decode::<Request>(&bytes);
        let mut framed = Vec::new();
        write_frame(&mut framed, &bytes).unwrap();
        let i = at.index(framed.len());
        framed[i] = value;
        if let Ok(payload) = read_frame(&mut Cursor::new(&framed)) {
            let _ = decode::<Request>(&payload);
        }
    }
}

// ---------------------------------------------------------------- envelope round trips

fn request_body() -> impl Strategy<Value = RequestBody> {
    prop_oneof![
        Just(RequestBody::Pkcs11(Pkcs11Request::Ping)),
        Just(RequestBody::Admin(AdminRequest::OrgList)),
        ".*".prop_map(|org| RequestBody::Admin(AdminRequest::OrgCreate { org })),
    ]
}

fn response_body() -> impl Strategy<Value = Result<ResponseBody, ErrorReply>> {
    prop_oneof![
        Just(Ok(ResponseBody::Pkcs11(Pkcs11Response::Pong))),
        (
            proptest::option::of(".*"),
            proptest::collection::vec(".*", 0..3)
        )
            .prop_map(|(message, warnings)| Ok(ResponseBody::Admin(AdminResponse {
                message,
                warnings,
                ..AdminResponse::default()
            }))),
        any::<u64>().prop_map(|rv| Err(ErrorReply::new(rv))),
        (any::<u64>(), ".*").prop_map(|(rv, m)| Err(ErrorReply::with_message(rv, m))),
    ]
}

proptest! {
    #[test]
    fn every_request_variant_round_trips(id in any::<u64>(), body in request_body()) {
        let request = Request { id, body };
        let mut framed = Vec::new();
        send(&mut framed, &request).unwrap();
        let payload = read_frame(&mut Cursor::new(framed)).unwrap();
        prop_assert_eq!(decode::<Request>(&payload).unwrap(), request);
    }

    #[test]
    fn every_response_variant_round_trips(id in any::<u64>(), body in response_body()) {
        let response = Response { id, body };
        prop_assert_eq!(decode::<Response>(&encode(&response).unwrap()).unwrap(), response);
    }

    #[test]
    fn hello_and_replies_round_trip(secret in proptest::option::of(any::<[u8; 32]>()),
                                    key in proptest::option::of("[a-zA-Z0-9._-]{0,40}"),
                                    rv in any::<u64>(), message in ".*") {
        for client in [ClientKind::Module, ClientKind::Ctl] {
            let hello = Hello::new(client, secret.map(InstanceSecret::from_bytes),
                                   key.clone().map(ServiceAccountKey::new));
            prop_assert_eq!(decode_hello(&encode(&hello).unwrap()).unwrap(), hello);
        }
        let welcome = HelloReply::Welcome {
            protocol_version: PROTOCOL_VERSION,
            instance_secret: InstanceSecret::from_bytes(secret.unwrap_or([1; 32])),
        };
        prop_assert_eq!(decode::<HelloReply>(&encode(&welcome).unwrap()).unwrap(), welcome);
        let refused = HelloReply::Refused { protocol_version: PROTOCOL_VERSION, rv, message };
        prop_assert_eq!(decode::<HelloReply>(&encode(&refused).unwrap()).unwrap(), refused);
    }
}

// ---------------------------------------------------------------- over real sockets

#[test]
fn handshake_and_calls_over_a_socket_pair() {
    let (client_end, daemon_end) = UnixStream::pair().unwrap();
    let daemon = spawn_daemon(daemon_end);

    let mut client = Client::handshake(client_end, &module_hello(), &ClientOptions::default())
        .expect("handshake");
    assert_eq!(client.instance_secret(), &daemon_secret());

    let pong = client
        .call(RequestBody::Pkcs11(Pkcs11Request::Ping))
        .unwrap();
    assert_eq!(pong, ResponseBody::Pkcs11(Pkcs11Response::Pong));
    match client
        .call(RequestBody::Admin(AdminRequest::OrgList))
        .unwrap()
    {
        ResponseBody::Admin(r) => assert_eq!(r.message.as_deref(), Some("no orgs")),
        other => panic!("{other:?}"),
    }
    // The daemon's error: code and message arrive, and the connection stays usable.
    let err = client
        .call(RequestBody::Admin(AdminRequest::OrgCreate {
            org: "acme".into(),
        }))
        .unwrap_err();
    match &err {
        WireError::Remote(reply) => {
            assert_eq!(reply.rv, rv::CKR_ACTION_PROHIBITED);
            assert!(reply.message.as_deref().unwrap().contains("acme"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.ck_rv(), rv::CKR_ACTION_PROHIBITED);
    assert!(client.is_usable());
    assert!(client
        .call(RequestBody::Pkcs11(Pkcs11Request::Ping))
        .is_ok());

    drop(client);
    let (hello, served) = daemon.join().unwrap().unwrap();
    assert!(
        served.is_ok(),
        "clean hang-up ends serve with Ok: {served:?}"
    );
    assert_eq!(hello.client, ClientKind::Module);
    assert_eq!(hello.credentials, Some(ServiceAccountKey::new(KEY)));
    assert_eq!(hello.instance_secret, None);
}

#[test]
fn second_connection_presents_the_instance_secret() {
    let (client_end, daemon_end) = UnixStream::pair().unwrap();
    let daemon = spawn_daemon(daemon_end);
    let hello = Hello::new(ClientKind::Module, Some(daemon_secret()), None);
    let client = Client::handshake(client_end, &hello, &ClientOptions::default()).unwrap();
    drop(client);
    let (seen, _) = daemon.join().unwrap().unwrap();
    assert_eq!(seen.instance_secret, Some(daemon_secret()));
    assert_eq!(seen.credentials, None);
}

#[test]
fn version_mismatch_is_clear_on_both_sides() {
    let (client_end, daemon_end) = UnixStream::pair().unwrap();
    let daemon = spawn_daemon(daemon_end);
    let mut hello = module_hello();
    hello.protocol_version = PROTOCOL_VERSION + 1;
    let err = Client::handshake(client_end, &hello, &ClientOptions::default()).unwrap_err();
    match err {
        WireError::VersionMismatch { ours, theirs } => {
            assert_eq!((ours, theirs), (PROTOCOL_VERSION + 1, PROTOCOL_VERSION));
        }
        other => panic!("client: {other:?}"),
    }
    match daemon.join().unwrap() {
        Err(WireError::VersionMismatch { ours, theirs }) => {
            assert_eq!((ours, theirs), (PROTOCOL_VERSION, PROTOCOL_VERSION + 1));
        }
        other => panic!("daemon: {other:?}"),
    }
}

#[test]
fn client_of_this_version_against_a_newer_daemon() {
    let (client_end, mut daemon_end) = UnixStream::pair().unwrap();
    let daemon = thread::spawn(move || {
        let _hello = read_frame(&mut daemon_end).unwrap();
        // A v2 daemon's refusal: variant 1, version 2, then whatever v2 puts there.
        write_frame(&mut daemon_end, &[1, 2, 0xde, 0xad]).unwrap();
    });
    let err =
        Client::handshake(client_end, &module_hello(), &ClientOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            WireError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: 2
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.ck_rv(), rv::CKR_DEVICE_ERROR);
    daemon.join().unwrap();
}

#[test]
fn refusal_reaches_the_client() {
    let (client_end, daemon_end) = UnixStream::pair().unwrap();
    let daemon = thread::spawn(move || {
        let Accepted { pending, .. } = accept(daemon_end).unwrap();
        pending
            .refuse(rv::CKR_PIN_LOCKED, "too many failures")
            .unwrap();
    });
    let err =
        Client::handshake(client_end, &module_hello(), &ClientOptions::default()).unwrap_err();
    assert!(
        matches!(&err, WireError::Refused { rv: rv::CKR_PIN_LOCKED, message } if message == "too many failures"),
        "{err:?}"
    );
    assert!(!err.is_disconnect());
    daemon.join().unwrap();
}

/// A fake daemon: welcomes, then answers each request with `answer(request)`.
fn fake_daemon(
    stream: UnixStream,
    mut answer: impl FnMut(Request) -> Response + Send + 'static,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let Accepted { pending, .. } = accept(stream).unwrap();
        let mut conn = pending.welcome(&daemon_secret()).unwrap();
        while let Ok(Some(request)) = conn.next_request() {
            let Response { id, body } = answer(request);
            if conn.respond(id, body).is_err() {
                break;
            }
        }
    })
}

#[test]
fn request_id_mismatch_is_detected_and_poisons_the_client() {
    let (client_end, daemon_end) = UnixStream::pair().unwrap();
    let daemon = fake_daemon(daemon_end, |r| Response {
        id: r.id + 100,
        body: Ok(ResponseBody::Pkcs11(Pkcs11Response::Pong)),
    });
    let mut client =
        Client::handshake(client_end, &module_hello(), &ClientOptions::default()).unwrap();
    let err = client
        .call(RequestBody::Pkcs11(Pkcs11Request::Ping))
        .unwrap_err();
    assert!(
        matches!(
            err,
            WireError::IdMismatch {
                expected: 1,
                got: 101
            }
        ),
        "{err:?}"
    );
    assert!(err.is_disconnect());
    assert!(!client.is_usable());
    assert!(matches!(
        client.call(RequestBody::Pkcs11(Pkcs11Request::Ping)),
        Err(WireError::Broken)
    ));
    drop(client);
    daemon.join().unwrap();
}

#[test]
fn ids_increase_per_call() {
    let (client_end, daemon_end) = UnixStream::pair().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let daemon = fake_daemon(daemon_end, move |r| {
        log.lock().unwrap().push(r.id);
        Response {
            id: r.id,
            body: Ok(ResponseBody::Pkcs11(Pkcs11Response::Pong)),
        }
    });
    let mut client =
        Client::handshake(client_end, &module_hello(), &ClientOptions::default()).unwrap();
    for _ in 0..3 {
        client
            .call(RequestBody::Pkcs11(Pkcs11Request::Ping))
            .unwrap();
    }
    drop(client);
    daemon.join().unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![1, 2, 3]);
}

#[test]
fn wrong_half_and_ok_error_are_protocol_violations() {
    for bad in [
        Ok(ResponseBody::Admin(AdminResponse::default())),
        Err(ErrorReply::new(rv::CKR_OK)),
    ] {
        let (client_end, daemon_end) = UnixStream::pair().unwrap();
        let daemon = fake_daemon(daemon_end, move |r| Response {
            id: r.id,
            body: bad.clone(),
        });
        let mut client =
            Client::handshake(client_end, &module_hello(), &ClientOptions::default()).unwrap();
        let err = client
            .call(RequestBody::Pkcs11(Pkcs11Request::Ping))
            .unwrap_err();
        assert!(matches!(err, WireError::Protocol(_)), "{err:?}");
        assert_ne!(err.ck_rv(), rv::CKR_OK);
        assert!(!client.is_usable());
        drop(client);
        daemon.join().unwrap();
    }
}

#[test]
fn daemon_hanging_up_mid_call_is_a_disconnect() {
    let (client_end, mut daemon_end) = UnixStream::pair().unwrap();
    let daemon = thread::spawn(move || {
        let _ = read_frame(&mut daemon_end).unwrap();
        send(
            &mut daemon_end,
            &HelloReply::Welcome {
                protocol_version: PROTOCOL_VERSION,
                instance_secret: daemon_secret(),
            },
        )
        .unwrap();
        let _ = read_frame(&mut daemon_end).unwrap();
        // Half a response, then gone.
        std::io::Write::write_all(&mut daemon_end, &[0, 0, 0, 9, 1]).unwrap();
    });
    let mut client =
        Client::handshake(client_end, &module_hello(), &ClientOptions::default()).unwrap();
    let err = client
        .call(RequestBody::Pkcs11(Pkcs11Request::Ping))
        .unwrap_err();
    daemon.join().unwrap();
    assert!(
        matches!(
            err,
            WireError::Truncated {
                expected: 13,
                got: 5
            }
        ),
        "{err:?}"
    );
    assert!(err.is_disconnect());
    assert_eq!(err.ck_rv(), rv::CKR_DEVICE_REMOVED);
    // The daemon is gone: writing now fails with EPIPE (no SIGPIPE), reported as Broken
    // since the client already gave up on this stream.
    assert!(matches!(
        client.call(RequestBody::Pkcs11(Pkcs11Request::Ping)),
        Err(WireError::Broken)
    ));
}

#[test]
fn writing_to_a_vanished_daemon_is_an_io_error() {
    let (client_end, daemon_end) = UnixStream::pair().unwrap();
    let daemon = thread::spawn(move || {
        let Accepted { pending, .. } = accept(daemon_end).unwrap();
        let conn = pending.welcome(&daemon_secret()).unwrap();
        drop(conn);
    });
    let mut client =
        Client::handshake(client_end, &module_hello(), &ClientOptions::default()).unwrap();
    daemon.join().unwrap();
    let err = client
        .call(RequestBody::Pkcs11(Pkcs11Request::Ping))
        .unwrap_err();
    // Either the write sees EPIPE or the read sees a clean close, depending on timing.
    assert!(
        matches!(err, WireError::Io(_) | WireError::Closed),
        "{err:?}"
    );
    assert!(err.is_disconnect());
}

#[test]
fn read_timeout_gives_timeout_then_broken() {
    let (client_end, daemon_end) = UnixStream::pair().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let daemon = thread::spawn(move || {
        let Accepted { pending, .. } = accept(daemon_end).unwrap();
        let mut conn = pending.welcome(&daemon_secret()).unwrap();
        let _ = conn.next_request();
        // Never answer; wait until the test is done.
        let _ = rx.recv();
    });
    let options = ClientOptions {
        read_timeout: Some(Duration::from_millis(100)),
        write_timeout: Some(Duration::from_secs(5)),
    };
    let mut client = Client::handshake(client_end, &module_hello(), &options).unwrap();
    let err = client
        .call(RequestBody::Pkcs11(Pkcs11Request::Ping))
        .unwrap_err();
    assert!(matches!(err, WireError::Timeout), "{err:?}");
    assert!(matches!(
        client.call(RequestBody::Pkcs11(Pkcs11Request::Ping)),
        Err(WireError::Broken)
    ));
    tx.send(()).unwrap();
    daemon.join().unwrap();
}

#[test]
fn connect_through_a_listening_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keywardd.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let daemon = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        spawn_daemon(stream).join().unwrap()
    });
    let mut client = Client::connect(&path, &module_hello()).unwrap();
    assert_eq!(
        client
            .call(RequestBody::Pkcs11(Pkcs11Request::Ping))
            .unwrap(),
        ResponseBody::Pkcs11(Pkcs11Response::Pong)
    );
    drop(client);
    assert!(daemon.join().unwrap().is_ok());
}

#[test]
fn no_daemon_is_a_connect_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.sock");
    let err = Client::connect(&path, &module_hello()).unwrap_err();
    assert!(
        matches!(&err, WireError::Connect { path: p, .. } if *p == path),
        "{err:?}"
    );
    assert_eq!(err.ck_rv(), rv::CKR_TOKEN_NOT_PRESENT);
}

#[test]
fn a_hostile_client_cannot_make_the_daemon_allocate_or_panic() {
    // Over-cap length: accept errors out after the header.
    let (mut client_end, daemon_end) = UnixStream::pair().unwrap();
    std::io::Write::write_all(&mut client_end, &u32::MAX.to_be_bytes()).unwrap();
    let err = accept(daemon_end).unwrap_err();
    assert!(matches!(err, WireError::FrameTooLarge { .. }), "{err:?}");

    // Garbage Hello of the right version: refused with a decodable reply.
    let (mut client_end, daemon_end) = UnixStream::pair().unwrap();
    write_frame(&mut client_end, &[PROTOCOL_VERSION as u8, 0xff, 0xff]).unwrap();
    assert!(matches!(accept(daemon_end), Err(WireError::Decode(_))));
    let mut reply = Vec::new();
    client_end.read_to_end(&mut reply).unwrap();
    let payload = read_frame(&mut Cursor::new(reply)).unwrap();
    assert!(matches!(
        decode_reply(&payload, PROTOCOL_VERSION),
        Err(WireError::Refused {
            rv: rv::CKR_DEVICE_ERROR,
            ..
        })
    ));
}
