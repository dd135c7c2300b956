//! The two-call buffer protocol (PKCS#11 3.0 §5.2), the decision half.
//!
//! A caller passes a NULL buffer to learn the length, or a buffer with its capacity; a short
//! one gets `CKR_BUFFER_TOO_SMALL` and the length. [`fit`] decides; the one writer in
//! `ffi::out` acts on it. Callers whose output costs a round trip to keywardd (crypto
//! results) keep the output when [`fit`] is not [`Fit::Fits`], so the second call returns it
//! without asking again (`crate::state::Pending`).

/// What to do with an output of `needed` items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// NULL buffer: report the length only (`CKR_OK`).
    SizeOnly,
    /// The buffer is short: report the length and `CKR_BUFFER_TOO_SMALL`.
    TooSmall,
    /// Copy the output and its length.
    Fits,
}

/// Decides the two-call protocol for an output of `needed` items into a buffer of
/// `capacity` items (`None`: NULL buffer).
pub fn fit(capacity: Option<usize>, needed: usize) -> Fit {
    match capacity {
        None => Fit::SizeOnly,
        Some(c) if c < needed => Fit::TooSmall,
        Some(_) => Fit::Fits,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        assert_eq!(fit(None, 0), Fit::SizeOnly);
        assert_eq!(fit(None, 10), Fit::SizeOnly);
        assert_eq!(fit(Some(9), 10), Fit::TooSmall);
        assert_eq!(fit(Some(10), 10), Fit::Fits);
        assert_eq!(fit(Some(0), 0), Fit::Fits);
        assert_eq!(fit(Some(usize::MAX), 1), Fit::Fits);
    }
}
