//! Writing results through the caller's pointers, and the one two-call buffer helper.

use crate::buffer::{fit, Fit};
use crate::error::Error;
use pkcs11_sys::CK_ULONG;

/// Writes `v` to `*p`; NULL is `CKR_ARGUMENTS_BAD`.
///
/// # Safety
/// A non-NULL `p` must be valid for writing a `T` (alignment not required).
pub(super) unsafe fn put<T>(p: *mut T, v: T) -> Result<(), Error> {
    if p.is_null() {
        return Err(Error::ArgumentsBad("NULL output pointer"));
    }
    // SAFETY: non-NULL and writable per the contract.
    unsafe { std::ptr::write_unaligned(p, v) };
    Ok(())
}

/// Copies `src` into the caller's buffer `dst` of exactly `src.len()` bytes; NULL is
/// `CKR_ARGUMENTS_BAD`.
///
/// # Safety
/// A non-NULL `dst` must be valid for writing `src.len()` bytes.
pub(super) unsafe fn bytes_into(dst: *mut u8, src: &[u8]) -> Result<(), Error> {
    if dst.is_null() {
        return Err(Error::ArgumentsBad("NULL output buffer"));
    }
    // SAFETY: non-NULL and writable for src.len() bytes per the contract; the caller's
    // memory cannot overlap our own slice.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
    Ok(())
}

/// `usize` to `CK_ULONG` (style rule 6: never `as`).
pub(super) fn ulong(n: usize) -> Result<CK_ULONG, Error> {
    CK_ULONG::try_from(n).map_err(|_| Error::ArgumentsBad("length does not fit CK_ULONG"))
}

/// `u64` to `CK_ULONG`.
pub(super) fn ulong64(n: u64) -> Result<CK_ULONG, Error> {
    CK_ULONG::try_from(n).map_err(|_| Error::UnexpectedResponse("value does not fit CK_ULONG"))
}

/// The capacity of an output buffer in the two-call protocol: `None` for a NULL `out`,
/// else `*len`. NULL `len` is `CKR_ARGUMENTS_BAD`.
///
/// # Safety
/// A non-NULL `len` must be valid for reading a `CK_ULONG`.
pub(super) unsafe fn capacity<T>(
    out: *const T,
    len: *const CK_ULONG,
) -> Result<Option<usize>, Error> {
    if len.is_null() {
        return Err(Error::ArgumentsBad("NULL length pointer"));
    }
    if out.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL and readable per the contract.
    let cap = unsafe { std::ptr::read_unaligned(len) };
    super::args::len(cap).map(Some)
}

/// The two-call buffer protocol (PKCS#11 3.0 §5.2), for every output list or buffer:
/// `*len` is set to `src.len()`; a NULL `out` is the length query (`CKR_OK`); a buffer of
/// fewer than `src.len()` items (its capacity read from `*len` first) is
/// `CKR_BUFFER_TOO_SMALL`; otherwise `src` is copied.
///
/// # Safety
/// `len` must be valid for reading and writing a `CK_ULONG`; a non-NULL `out` must be valid
/// for writing `*len` items of `T`.
pub(super) unsafe fn two_call<T: Copy>(
    out: *mut T,
    len: *mut CK_ULONG,
    src: &[T],
) -> Result<(), Error> {
    // SAFETY: forwarded contract.
    let cap = unsafe { capacity(out, len)? };
    let needed = ulong(src.len())?;
    // SAFETY: len is non-NULL (checked by capacity) and writable per the contract.
    unsafe { put(len, needed)? };
    match fit(cap, src.len()) {
        Fit::SizeOnly => Ok(()),
        Fit::TooSmall => Err(Error::BufferTooSmall { needed: src.len() }),
        Fit::Fits => {
            // SAFETY: out is non-NULL (cap is Some) and holds at least src.len() items per
            // the contract; the caller's buffer cannot overlap our own slice.
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), out, src.len()) };
            Ok(())
        }
    }
}
