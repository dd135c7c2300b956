//! Brief spinning before a blocking read (issue 9).
//!
//! A request/response exchange over a Unix socket costs two sleeps and two wake-ups, and on
//! virtual machines a wake-up across cores costs tens of microseconds, more than keywardd's
//! own work for a symmetric operation. So both ends look for the next frame for a short while
//! (non-blocking `MSG_PEEK`, yielding the CPU between looks) before they fall back to the
//! blocking read; an answer that takes longer (an RSA signature) costs at most the spin.

use rustix::io::Errno;
use rustix::net::RecvFlags;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// How long a reader looks for its next frame before it blocks.
pub const SPIN: Duration = Duration::from_micros(60);

/// Returns once `stream` has data (or end of file, or an error the read will report), or
/// after `budget`; then the caller's blocking read proceeds as usual.
pub fn wait_readable(stream: &UnixStream, budget: Duration) {
    if budget.is_zero() {
        return;
    }
    let start = Instant::now();
    let mut probe = [0u8; 1];
    loop {
        match rustix::net::recv(stream, &mut probe, RecvFlags::PEEK | RecvFlags::DONTWAIT) {
            Err(e) if e == Errno::AGAIN || e == Errno::INTR => {}
            _ => return,
        }
        if start.elapsed() >= budget {
            return;
        }
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn returns_at_once_with_data_and_after_the_budget_without() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let t = Instant::now();
        wait_readable(&b, Duration::from_millis(50));
        assert!(t.elapsed() >= Duration::from_millis(50));
        a.write_all(b"x").unwrap();
        let t = Instant::now();
        wait_readable(&b, Duration::from_secs(10));
        assert!(t.elapsed() < Duration::from_secs(5));
        // The peeked byte is still there for the real read.
        let mut got = [0u8; 1];
        std::io::Read::read_exact(&mut &b, &mut got).unwrap();
        assert_eq!(&got, b"x");
    }
}
