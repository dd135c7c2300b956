//! Frames: a 4-byte big-endian payload length, then the payload.
//!
//! This layout never changes between protocol versions, so two sides of any version can
//! always exchange the handshake that tells them apart. A length over the cap is refused
//! before anything is allocated for it, and the payload buffer grows only as bytes actually
//! arrive, so a peer that announces 16 MiB and sends 4 bytes costs 4 bytes.

use crate::error::WireError;
use std::io::{self, Read, Write};

/// The default cap on a frame's payload: 16 MiB.
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;

/// How much payload buffer is reserved up front; more is added as bytes arrive.
const INITIAL_RESERVE: usize = 64 * 1024;

/// Reads one frame's payload, with the [`MAX_FRAME_LEN`] cap.
///
/// Returns [`WireError::Closed`] on end of file before the first header byte,
/// [`WireError::Truncated`] on end of file anywhere after it, [`WireError::FrameTooLarge`]
/// for a length over the cap (nothing of the payload is read or allocated),
/// [`WireError::Timeout`] if a socket timeout expired.
pub fn read_frame<R: Read + ?Sized>(r: &mut R) -> Result<Vec<u8>, WireError> {
    read_frame_with_limit(r, MAX_FRAME_LEN)
}

/// [`read_frame`] with a cap of `max` bytes instead of [`MAX_FRAME_LEN`].
pub fn read_frame_with_limit<R: Read + ?Sized>(
    r: &mut R,
    max: usize,
) -> Result<Vec<u8>, WireError> {
    let mut header = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        match r.read(&mut header[filled..]) {
            Ok(0) if filled == 0 => return Err(WireError::Closed),
            Ok(0) => {
                return Err(WireError::Truncated {
                    expected: HEADER_LEN as u64,
                    got: filled as u64,
                })
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(WireError::from_io(e)),
        }
    }
    let len = u32::from_be_bytes(header);
    let len_usize = usize::try_from(len).unwrap_or(usize::MAX);
    if len_usize > max {
        return Err(WireError::FrameTooLarge {
            len: u64::from(len),
            max: max as u64,
        });
    }
    let mut payload = Vec::with_capacity(len_usize.min(INITIAL_RESERVE));
    // `take` bounds the read; `read_to_end` retries on EINTR and grows the buffer only as
    // data arrives.
    let got = r
        .take(u64::from(len))
        .read_to_end(&mut payload)
        .map_err(WireError::from_io)?;
    if got < len_usize {
        return Err(WireError::Truncated {
            expected: (HEADER_LEN + len_usize) as u64,
            got: (HEADER_LEN + got) as u64,
        });
    }
    Ok(payload)
}

/// Writes `payload` as one frame and flushes, with the [`MAX_FRAME_LEN`] cap.
///
/// A payload over the cap is refused with [`WireError::FrameTooLarge`] and nothing is
/// written: the peer would refuse it anyway.
pub fn write_frame<W: Write + ?Sized>(w: &mut W, payload: &[u8]) -> Result<(), WireError> {
    write_frame_with_limit(w, payload, MAX_FRAME_LEN)
}

/// [`write_frame`] with a cap of `max` bytes instead of [`MAX_FRAME_LEN`].
pub fn write_frame_with_limit<W: Write + ?Sized>(
    w: &mut W,
    payload: &[u8],
    max: usize,
) -> Result<(), WireError> {
    let too_large = || WireError::FrameTooLarge {
        len: payload.len() as u64,
        max: max as u64,
    };
    if payload.len() > max {
        return Err(too_large());
    }
    let len = u32::try_from(payload.len()).map_err(|_| too_large())?;
    // One write for header and payload: two would wake the reader twice (it reads the
    // header, then blocks again until the payload comes), which costs more than the copy.
    // The copy may hold secrets, so it is zeroised.
    let mut frame = zeroize::Zeroizing::new(Vec::with_capacity(HEADER_LEN + payload.len()));
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(payload);
    w.write_all(&frame)
        .and_then(|()| w.flush())
        .map_err(WireError::from_io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_frame(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn layout_is_big_endian_length_then_payload() {
        assert_eq!(framed(b"abc"), [0, 0, 0, 3, b'a', b'b', b'c']);
        assert_eq!(framed(b""), [0, 0, 0, 0]);
        let long = vec![7u8; 0x0102];
        assert_eq!(&framed(&long)[..4], &[0, 0, 1, 2]);
    }

    #[test]
    fn round_trip_several_frames() {
        let mut bytes = framed(b"one");
        bytes.extend(framed(b""));
        bytes.extend(framed(b"three"));
        let mut r = Cursor::new(bytes);
        assert_eq!(read_frame(&mut r).unwrap(), b"one");
        assert_eq!(read_frame(&mut r).unwrap(), b"");
        assert_eq!(read_frame(&mut r).unwrap(), b"three");
        assert!(matches!(read_frame(&mut r), Err(WireError::Closed)));
    }

    #[test]
    fn eof_mid_header_is_truncated_not_closed() {
        let mut r = Cursor::new(vec![0u8, 0]);
        match read_frame(&mut r) {
            Err(WireError::Truncated { expected, got }) => {
                assert_eq!((expected, got), (4, 2));
            }
            other => panic!("expected Truncated, got {other:?}"),
        }
    }

    #[test]
    fn eof_mid_payload_is_truncated() {
        let mut bytes = framed(b"hello");
        bytes.truncate(7);
        match read_frame(&mut Cursor::new(bytes)) {
            Err(WireError::Truncated { expected, got }) => {
                assert_eq!((expected, got), (9, 7));
            }
            other => panic!("expected Truncated, got {other:?}"),
        }
    }

    #[test]
    fn length_over_cap_is_refused_before_reading_payload() {
        let mut bytes = (MAX_FRAME_LEN as u32 + 1).to_be_bytes().to_vec();
        bytes.extend_from_slice(b"rest");
        let mut r = Cursor::new(bytes);
        assert!(matches!(
            read_frame(&mut r),
            Err(WireError::FrameTooLarge { len, max })
                if len == MAX_FRAME_LEN as u64 + 1 && max == MAX_FRAME_LEN as u64
        ));
        // Only the header was consumed.
        assert_eq!(r.position(), 4);
        // Exactly at the cap is allowed (here: truncated, since the bytes are missing).
        let at_cap = (MAX_FRAME_LEN as u32).to_be_bytes();
        assert!(matches!(
            read_frame(&mut Cursor::new(at_cap)),
            Err(WireError::Truncated { .. })
        ));
    }

    #[test]
    fn custom_limit() {
        let bytes = framed(b"12345");
        assert!(matches!(
            read_frame_with_limit(&mut Cursor::new(&bytes), 4),
            Err(WireError::FrameTooLarge { len: 5, max: 4 })
        ));
        assert_eq!(
            read_frame_with_limit(&mut Cursor::new(&bytes), 5).unwrap(),
            b"12345"
        );
        let mut out = Vec::new();
        assert!(matches!(
            write_frame_with_limit(&mut out, b"12345", 4),
            Err(WireError::FrameTooLarge { len: 5, max: 4 })
        ));
        assert!(out.is_empty(), "nothing written for a refused frame");
    }

    /// A reader that fails with EINTR every other call, then yields one byte.
    struct Interrupting {
        inner: Cursor<Vec<u8>>,
        flip: bool,
    }
    impl Read for Interrupting {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.flip = !self.flip;
            if self.flip {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = buf.len().min(1);
            self.inner.read(&mut buf[..n])
        }
    }

    #[test]
    fn interrupted_reads_are_retried() {
        let mut r = Interrupting {
            inner: Cursor::new(framed(b"slow")),
            flip: false,
        };
        assert_eq!(read_frame(&mut r).unwrap(), b"slow");
        assert!(matches!(read_frame(&mut r), Err(WireError::Closed)));
    }

    struct TimingOut;
    impl Read for TimingOut {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }

    #[test]
    fn socket_timeout_is_reported_as_timeout() {
        assert!(matches!(
            read_frame(&mut TimingOut),
            Err(WireError::Timeout)
        ));
    }
}
