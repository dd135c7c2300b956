//! The payload codec: serde with postcard, one message per frame.
//!
//! postcard is compact and not self-describing, and its decoder works over the bounded
//! frame slice: lengths inside a message are checked against the bytes left, so hostile
//! input gives an error, never a panic or an allocation beyond the frame (serde itself caps
//! pre-allocation for sequences at 1 MiB). A message must fill its frame exactly.
//!
//! Types sent over the wire must therefore avoid serde features that need a self-describing
//! format: `#[serde(flatten)]`, untagged or internally tagged enums, `skip_serializing_if`,
//! and `serde_json::Value`.

use crate::error::WireError;
use crate::frame::{read_frame, write_frame};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use zeroize::Zeroizing;

/// Encodes `value` as a frame payload.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, WireError> {
    postcard::to_stdvec(value).map_err(WireError::Encode)
}

/// Decodes a whole frame payload as one `T`.
///
/// Returns [`WireError::Decode`] for malformed input and [`WireError::TrailingBytes`] if a
/// valid `T` does not use every byte.
pub fn decode<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, WireError> {
    let (value, rest) = postcard::take_from_bytes(payload).map_err(WireError::Decode)?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(WireError::TrailingBytes(rest.len()))
    }
}

/// Encodes `value` and writes it as one frame.
pub fn send<W: Write + ?Sized, T: Serialize + ?Sized>(
    w: &mut W,
    value: &T,
) -> Result<(), WireError> {
    write_frame(w, &encode(value)?)
}

/// Reads one frame and decodes it as a `T`.
pub fn recv<R: Read + ?Sized, T: DeserializeOwned>(r: &mut R) -> Result<T, WireError> {
    decode(&read_frame(r)?)
}

/// [`send`] for messages holding secrets: the encoded bytes are zeroised after writing.
pub fn send_secret<W: Write + ?Sized, T: Serialize + ?Sized>(
    w: &mut W,
    value: &T,
) -> Result<(), WireError> {
    let bytes = Zeroizing::new(encode(value)?);
    write_frame(w, &bytes)
}

/// [`recv`] for messages holding secrets: the frame's bytes are zeroised after decoding.
pub fn recv_secret<R: Read + ?Sized, T: DeserializeOwned>(r: &mut R) -> Result<T, WireError> {
    let bytes = Zeroizing::new(read_frame(r)?);
    decode(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Sample {
        A,
        B { n: u64, s: String, v: Vec<u32> },
    }

    #[test]
    fn round_trip() {
        let value = Sample::B {
            n: u64::MAX,
            s: "é".into(),
            v: vec![1, 2, 3],
        };
        let bytes = encode(&value).unwrap();
        assert_eq!(decode::<Sample>(&bytes).unwrap(), value);
        assert_eq!(
            decode::<Sample>(&encode(&Sample::A).unwrap()).unwrap(),
            Sample::A
        );
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode(&Sample::A).unwrap();
        bytes.extend_from_slice(&[0, 0]);
        assert!(matches!(
            decode::<Sample>(&bytes),
            Err(WireError::TrailingBytes(2))
        ));
    }

    #[test]
    fn malformed_is_an_error() {
        // Unknown variant tag.
        assert!(matches!(decode::<Sample>(&[9]), Err(WireError::Decode(_))));
        // Empty payload.
        assert!(matches!(decode::<Sample>(&[]), Err(WireError::Decode(_))));
        // A string announced longer than the frame.
        assert!(matches!(
            decode::<Sample>(&[1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f]),
            Err(WireError::Decode(_))
        ));
        // A vector announcing 2^63 elements in a 12-byte frame: error, no huge allocation.
        let mut bytes = vec![1, 0, 0];
        bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        assert!(matches!(
            decode::<Sample>(&bytes),
            Err(WireError::Decode(_))
        ));
    }

    #[test]
    fn send_and_recv_over_a_stream() {
        let mut buf = Vec::new();
        send(&mut buf, &Sample::A).unwrap();
        send_secret(
            &mut buf,
            &Sample::B {
                n: 1,
                s: String::new(),
                v: vec![],
            },
        )
        .unwrap();
        let mut r = Cursor::new(buf);
        assert_eq!(recv::<_, Sample>(&mut r).unwrap(), Sample::A);
        assert!(matches!(
            recv_secret::<_, Sample>(&mut r).unwrap(),
            Sample::B { n: 1, .. }
        ));
        assert!(matches!(recv::<_, Sample>(&mut r), Err(WireError::Closed)));
    }
}
