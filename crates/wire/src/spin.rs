//! Brief spinning before a blocking read (issue 9).
//!
//! A request/response exchange over a Unix socket costs two sleeps and two wake-ups, and on
//! virtual machines a wake-up across cores costs tens of microseconds, more than keywardd's
//! own work for a symmetric operation. So both ends look for the next frame for a while
//! (non-blocking `MSG_PEEK`, yielding the CPU between looks, so a runnable thread on the same
//! core goes first) before they fall back to the blocking read. The default budget, 1 ms,
//! covers an RSA-2048 signature (about 0.55 ms on SoftHSM2), whose wake-up otherwise cost
//! more than the 5% issue 9 allows; a longer answer costs at most the budget in CPU.
//! `KEYWARD_SPIN_US` sets it (0: never spin).

use rustix::io::Errno;
use rustix::net::RecvFlags;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a reader looks for its next frame before it blocks, by default.
pub const SPIN: Duration = Duration::from_micros(1000);

/// The spin budget of this process: `KEYWARD_SPIN_US` (microseconds, 0 turns spinning off,
/// at most 10,000) if set and valid, else [`SPIN`]. Read once.
pub fn budget() -> Duration {
    static BUDGET: OnceLock<Duration> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        std::env::var("KEYWARD_SPIN_US")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|us| *us <= 10_000)
            .map_or(SPIN, Duration::from_micros)
    })
}

/// Returns once `stream` has data (or end of file, or an error the read will report), or
/// after `budget`; then the caller's blocking read proceeds as usual.
pub fn wait_readable(stream: &UnixStream, budget: Duration) {
    if budget.is_zero() {
        return;
    }
    // At most half the cores' worth of threads of this process spin at once: a spinner
    // beside a thread that computes (two clients, two RSA signatures, two cores) slowed the
    // computation down more than the wake-ups it saved.
    if !enter() {
        return;
    }
    spin(stream, budget);
    leave();
}

/// Takes one of this process's spinning places (see [`wait_readable`]); false if all are
/// taken. A true answer is followed by [`leave`] when the spin ends.
pub fn enter() -> bool {
    if SPINNING.fetch_add(1, Ordering::Relaxed) >= max_spinners() {
        SPINNING.fetch_sub(1, Ordering::Relaxed);
        return false;
    }
    true
}

/// Gives back the place [`enter`] took.
pub fn leave() {
    SPINNING.fetch_sub(1, Ordering::Relaxed);
}

/// Threads of this process spinning now.
static SPINNING: AtomicUsize = AtomicUsize::new(0);

fn max_spinners() -> usize {
    static MAX: OnceLock<usize> = OnceLock::new();
    *MAX.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, std::num::NonZeroUsize::get)
            .div_ceil(2)
    })
}

fn spin(stream: &UnixStream, budget: Duration) {
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
