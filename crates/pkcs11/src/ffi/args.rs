//! Reading raw arguments into typed values. Each reader states what it needs of the pointer
//! it is given; NULL where a value is required, or a length that does not fit, is
//! `CKR_ARGUMENTS_BAD` (mechanism parameters: `CKR_MECHANISM_PARAM_INVALID`).

use crate::error::Error;
use crate::fns::general::{InitArgs, MutexCallbacks};
use crate::mech::{gcm_layout, param_kind, ParamKind};
use keyward_wire::pkcs11::{
    Attribute, Blob, CtrParams, Ecdh1DeriveParams, GcmLayout, GcmParams, MechParams, Mechanism,
    OaepParams, PssParams, RsaAesKeyWrapParams,
};
use pkcs11_sys::*;
use std::ffi::c_void;

/// The longest `pReserved` string read (settings are a few paths and ring names).
const MAX_RESERVED: usize = 64 * 1024;

/// `CK_ULONG` to `usize` (style rule 6: never `as`).
pub(super) fn len(ul: CK_ULONG) -> Result<usize, Error> {
    let n = usize::try_from(ul).map_err(|_| Error::ArgumentsBad("length does not fit"))?;
    // No slice may exceed isize::MAX bytes.
    isize::try_from(n).map_err(|_| Error::ArgumentsBad("length too large"))?;
    Ok(n)
}

/// `CK_ULONG` to `u64` (a no-op where CK_ULONG is 64 bits, a widening on Windows).
#[allow(clippy::useless_conversion)]
pub(super) fn ulong(ul: CK_ULONG) -> u64 {
    u64::from(ul)
}

/// The `n` items at `p`; NULL is an empty slice when `n` is 0 and an error otherwise.
///
/// # Safety
/// A non-NULL `p` must point to `n` readable, initialised, aligned `T`s that outlive `'a`.
pub(super) unsafe fn slice<'a, T>(p: *const T, n: CK_ULONG) -> Result<&'a [T], Error> {
    let n = len(n)?;
    if p.is_null() {
        return if n == 0 {
            Ok(&[])
        } else {
            Err(Error::ArgumentsBad("NULL buffer with a non-zero length"))
        };
    }
    // SAFETY: p is non-NULL and, per this function's contract, valid for n reads of T.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// `*p`, for a required pointer argument.
///
/// # Safety
/// A non-NULL `p` must be valid for reading a `T` (alignment not required).
pub(super) unsafe fn read<T: Copy>(p: *const T) -> Result<T, Error> {
    if p.is_null() {
        return Err(Error::ArgumentsBad("NULL pointer"));
    }
    // SAFETY: non-NULL and valid for a read per the contract; read_unaligned tolerates
    // clients that pack their structures.
    Ok(unsafe { std::ptr::read_unaligned(p) })
}

/// A template of `count` attributes at `p`, decoded into typed attributes.
///
/// # Safety
/// A non-NULL `p` must point to `count` `CK_ATTRIBUTE`s whose `pValue` are NULL or valid
/// for `ulValueLen` bytes.
pub(super) unsafe fn template(
    p: *const CK_ATTRIBUTE,
    count: CK_ULONG,
) -> Result<Vec<Attribute>, Error> {
    // SAFETY: forwarded contract.
    let raw = unsafe { slice(p, count)? };
    raw.iter()
        .map(|a| {
            // SAFETY: per the contract pValue is NULL or valid for ulValueLen bytes.
            let bytes = unsafe { slice(a.pValue as *const u8, a.ulValueLen)? };
            crate::attr::decode(ulong(a.type_), bytes)
        })
        .collect()
}

fn param_bytes_err(what: &'static str) -> Error {
    Error::MechanismParamInvalid(what)
}

/// Bytes of a mechanism parameter field; NULL with a length is a parameter error.
///
/// # Safety
/// A non-NULL `p` must be valid for `n` bytes.
unsafe fn param_bytes(p: *const u8, n: CK_ULONG) -> Result<Blob, Error> {
    if p.is_null() && n != 0 {
        return Err(param_bytes_err("NULL parameter buffer with a length"));
    }
    // SAFETY: forwarded contract; NULL only with n == 0.
    Ok(Blob::from(unsafe { slice(p, n)? }))
}

/// A parameter structure `T`, which must be exactly `ulParameterLen` bytes.
///
/// # Safety
/// A non-NULL `p` must be valid for `n` bytes.
unsafe fn param_struct<T: Copy>(p: *const c_void, n: usize) -> Result<T, Error> {
    if p.is_null() || n != std::mem::size_of::<T>() {
        return Err(param_bytes_err("parameter structure of the wrong size"));
    }
    // SAFETY: non-NULL, n == size_of::<T>() bytes readable per the contract.
    Ok(unsafe { std::ptr::read_unaligned(p.cast::<T>()) })
}

/// The 2.40 `CK_GCM_PARAMS` as first published (no `ulIvBits`).
#[repr(C)]
#[derive(Clone, Copy)]
struct GcmParamsWithoutIvBits {
    pIv: CK_BYTE_PTR,
    ulIvLen: CK_ULONG,
    pAAD: CK_BYTE_PTR,
    ulAADLen: CK_ULONG,
    ulTagBits: CK_ULONG,
}

/// # Safety
/// `o.pSourceData` must be NULL or valid for `o.ulSourceDataLen` bytes.
unsafe fn oaep(o: &CK_RSA_PKCS_OAEP_PARAMS) -> Result<OaepParams, Error> {
    Ok(OaepParams {
        hash: ulong(o.hashAlg),
        mgf: ulong(o.mgf),
        source: ulong(o.source),
        // SAFETY: forwarded contract.
        source_data: unsafe { param_bytes(o.pSourceData as *const u8, o.ulSourceDataLen)? },
    })
}

/// A `CK_MECHANISM`, decoded with typed parameters (either `CK_GCM_PARAMS` layout).
///
/// # Safety
/// A non-NULL `p` must point to a `CK_MECHANISM` whose parameter is valid for
/// `ulParameterLen` bytes and whose nested pointers are valid as PKCS#11 specifies.
pub(super) unsafe fn mechanism(p: *const CK_MECHANISM) -> Result<Mechanism, Error> {
    // SAFETY: forwarded contract.
    let m = unsafe { read(p)? };
    let ty = ulong(m.mechanism);
    let n = len(m.ulParameterLen)?;
    let pp = m.pParameter as *const c_void;
    let params = match param_kind(ty) {
        ParamKind::None if n == 0 => MechParams::None,
        ParamKind::None => return Err(param_bytes_err("this mechanism takes no parameter")),
        ParamKind::Unknown if n == 0 => MechParams::None,
        ParamKind::Unknown => return Err(Error::MechanismInvalid(ty)),
        // SAFETY: pParameter is valid for n bytes per the contract.
        ParamKind::Bytes => MechParams::Bytes(unsafe { param_bytes(pp.cast(), m.ulParameterLen)? }),
        ParamKind::Gcm => {
            let layout = gcm_layout(n)?;
            let (iv, iv_len, iv_bits, aad, aad_len, tag_bits) = match layout {
                GcmLayout::WithIvBits => {
                    // SAFETY: n is this layout's size; valid per the contract.
                    let g: CK_GCM_PARAMS = unsafe { param_struct(pp, n)? };
                    (
                        g.pIv,
                        g.ulIvLen,
                        Some(g.ulIvBits),
                        g.pAAD,
                        g.ulAADLen,
                        g.ulTagBits,
                    )
                }
                GcmLayout::WithoutIvBits => {
                    // SAFETY: as above, for the shorter layout.
                    let g: GcmParamsWithoutIvBits = unsafe { param_struct(pp, n)? };
                    (g.pIv, g.ulIvLen, None, g.pAAD, g.ulAADLen, g.ulTagBits)
                }
            };
            // SAFETY: the nested buffers are valid for their lengths per the contract.
            let iv = unsafe { param_bytes(iv, iv_len)? };
            // SAFETY: as above.
            let aad = unsafe { param_bytes(aad, aad_len)? };
            if iv.is_empty() {
                return Err(param_bytes_err("GCM without an IV"));
            }
            let iv_bits = match iv_bits {
                Some(b) => ulong(b),
                None => u64::try_from(iv.len())
                    .ok()
                    .and_then(|l| l.checked_mul(8))
                    .ok_or(param_bytes_err("IV too long"))?,
            };
            MechParams::Gcm(GcmParams {
                iv,
                iv_bits,
                aad,
                tag_bits: ulong(tag_bits),
                layout,
            })
        }
        ParamKind::Ctr => {
            // SAFETY: size checked by param_struct; valid per the contract.
            let c: CK_AES_CTR_PARAMS = unsafe { param_struct(pp, n)? };
            MechParams::Ctr(CtrParams {
                counter_bits: ulong(c.ulCounterBits),
                cb: c.cb,
            })
        }
        ParamKind::Oaep => {
            // SAFETY: size checked; valid per the contract.
            let o: CK_RSA_PKCS_OAEP_PARAMS = unsafe { param_struct(pp, n)? };
            // SAFETY: nested label valid per the contract.
            MechParams::Oaep(unsafe { oaep(&o)? })
        }
        ParamKind::Pss => {
            // SAFETY: size checked; valid per the contract.
            let s: CK_RSA_PKCS_PSS_PARAMS = unsafe { param_struct(pp, n)? };
            MechParams::Pss(PssParams {
                hash: ulong(s.hashAlg),
                mgf: ulong(s.mgf),
                salt_len: ulong(s.sLen),
            })
        }
        ParamKind::RsaAesKeyWrap => {
            // SAFETY: size checked; valid per the contract.
            let w: CK_RSA_AES_KEY_WRAP_PARAMS = unsafe { param_struct(pp, n)? };
            if w.pOAEPParams.is_null() {
                return Err(param_bytes_err("RSA-AES key wrap without OAEP parameters"));
            }
            // SAFETY: non-NULL nested structure, valid per the contract.
            let o = unsafe { std::ptr::read_unaligned(w.pOAEPParams) };
            MechParams::RsaAesKeyWrap(RsaAesKeyWrapParams {
                aes_key_bits: ulong(w.ulAESKeyBits),
                // SAFETY: nested label valid per the contract.
                oaep: unsafe { oaep(&o)? },
            })
        }
        ParamKind::MacGeneral => {
            // SAFETY: size checked by param_struct; valid per the contract.
            let len: CK_ULONG = unsafe { param_struct(pp, n)? };
            MechParams::MacLen(ulong(len))
        }
        ParamKind::Ecdh1Derive => {
            // SAFETY: size checked; valid per the contract.
            let e: CK_ECDH1_DERIVE_PARAMS = unsafe { param_struct(pp, n)? };
            MechParams::Ecdh1Derive(Ecdh1DeriveParams {
                kdf: ulong(e.kdf),
                // SAFETY: nested buffers valid per the contract.
                shared_data: unsafe { param_bytes(e.pSharedData, e.ulSharedDataLen)? },
                // SAFETY: as above.
                public_data: unsafe { param_bytes(e.pPublicData, e.ulPublicDataLen)? },
            })
        }
    };
    Ok(Mechanism { ty, params })
}

/// Writes the IV (AES-GCM) or initial counter block (AES-CTR) keywardd generated at
/// C_EncryptInit (design §9) into the client's mechanism `m`, decoded before as `params`: into
/// `pIv` of its `CK_GCM_PARAMS` (the layout it used, 48 or 40 bytes), or `cb` of its
/// `CK_AES_CTR_PARAMS`. The generated value must fill that field exactly (`ulIvLen` bytes,
/// 16 for `cb`); anything else is keywardd answering out of turn (`CKR_DEVICE_ERROR`).
///
/// # Safety
/// `m` must be the non-NULL `CK_MECHANISM` that was decoded into `params`, still valid, with
/// its parameter structure and `pIv` writable (PKCS#11 declares them non-const).
pub(super) unsafe fn write_generated_iv(
    m: *const CK_MECHANISM,
    params: Option<&MechParams>,
    iv: &[u8],
) -> Result<(), Error> {
    let unexpected = || Error::UnexpectedResponse("a generated IV that does not fit");
    // SAFETY: forwarded contract.
    let mech = unsafe { read(m)? };
    let n = len(mech.ulParameterLen)?;
    let pp = mech.pParameter;
    match params {
        Some(MechParams::Gcm(g)) => {
            let (p_iv, iv_len) = match g.layout {
                GcmLayout::WithIvBits => {
                    // SAFETY: the structure decoded before, of this layout's size.
                    let c: CK_GCM_PARAMS = unsafe { param_struct(pp, n)? };
                    (c.pIv, c.ulIvLen)
                }
                GcmLayout::WithoutIvBits => {
                    // SAFETY: as above, for the shorter layout.
                    let c: GcmParamsWithoutIvBits = unsafe { param_struct(pp, n)? };
                    (c.pIv, c.ulIvLen)
                }
            };
            if len(iv_len)? != iv.len() {
                return Err(unexpected());
            }
            // SAFETY: pIv holds ulIvLen (= iv.len()) writable bytes per the contract.
            unsafe { super::out::bytes_into(p_iv, iv) }
        }
        Some(MechParams::Ctr(_)) => {
            if n != std::mem::size_of::<CK_AES_CTR_PARAMS>() || pp.is_null() || iv.len() != 16 {
                return Err(unexpected());
            }
            let off = std::mem::offset_of!(CK_AES_CTR_PARAMS, cb);
            // SAFETY: pp points to a whole CK_AES_CTR_PARAMS (size checked), whose cb field
            // is 16 bytes at `off`; bytes have no alignment.
            unsafe { super::out::bytes_into(pp.cast::<u8>().add(off), iv) }
        }
        _ => Err(unexpected()),
    }
}

/// `CK_C_INITIALIZE_ARGS` at `p` (NULL: `None`).
///
/// # Safety
/// A non-NULL `p` must point to a `CK_C_INITIALIZE_ARGS` whose `pReserved` is NULL or a
/// NUL-terminated string.
pub(super) unsafe fn init_args(p: *const c_void) -> Result<Option<InitArgs>, Error> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL, a CK_C_INITIALIZE_ARGS per the contract.
    let a: CK_C_INITIALIZE_ARGS = unsafe { std::ptr::read_unaligned(p.cast()) };
    let given = [
        a.CreateMutex.is_some(),
        a.DestroyMutex.is_some(),
        a.LockMutex.is_some(),
        a.UnlockMutex.is_some(),
    ];
    let mutexes = match given.iter().filter(|g| **g).count() {
        0 => MutexCallbacks::None,
        4 => MutexCallbacks::All,
        _ => MutexCallbacks::Partial,
    };
    let reserved = if a.pReserved.is_null() {
        None
    } else {
        // The spec wants pReserved NULL; design §4 lets it carry a settings string (NSS
        // `parameters=`, p11-kit `x-init-reserved:`). Anything else must not crash the host,
        // so it is read through the kernel, which answers EFAULT instead of a SIGSEGV.
        let bytes = probe_c_string(a.pReserved as *const u8, MAX_RESERVED)?;
        Some(String::from_utf8(bytes).map_err(|_| Error::ArgumentsBad("pReserved is not UTF-8"))?)
    };
    Ok(Some(InitArgs {
        mutexes,
        os_locking_ok: a.flags & CKF_OS_LOCKING_OK != 0,
        reserved,
    }))
}

/// The bytes of the NUL-terminated string at `p` (without the NUL), at most `max` bytes,
/// read without ever touching unreadable memory: each piece (never crossing a page) is
/// written by the kernel from `p` into a pipe and read back; a piece the kernel cannot read
/// (an unmapped or `PROT_NONE` page, a small integer cast to a pointer) is `EFAULT`, answered
/// with `CKR_ARGUMENTS_BAD`. No signal handler (the JVM owns SIGSEGV) and no
/// `process_vm_readv` (seccomp filters block it); `pipe2`, `write` and `read` are allowed
/// everywhere.
fn probe_c_string(p: *const u8, max: usize) -> Result<Vec<u8>, Error> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    const UNREADABLE: Error = Error::ArgumentsBad("pReserved is not a readable string");
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .ok()
        .filter(|p| *p > 0)
        .unwrap_or(4096);
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds is an array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::ArgumentsBad("pReserved cannot be read (no pipe)"));
    }
    // SAFETY: pipe2 succeeded: both are open descriptors owned by nobody else.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let mut out = Vec::new();
    let mut piece = vec![0u8; page];
    let start = p as usize;
    while out.len() < max {
        let at = start.checked_add(out.len()).ok_or(UNREADABLE)?;
        // Up to the end of this page (a page is readable whole or not at all), and max.
        let want = (page - at % page).min(max - out.len());
        // SAFETY: write(2) only reads `want` bytes at `at` in the kernel, which checks the
        // address and answers EFAULT if it is not readable; nothing is dereferenced here.
        let n = unsafe { libc::write(wr.as_raw_fd(), at as *const libc::c_void, want) };
        let n = match usize::try_from(n) {
            Ok(n) if n > 0 => n,
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {
                continue
            }
            _ => return Err(UNREADABLE),
        };
        let mut got = 0;
        while got < n {
            // SAFETY: piece has room for n <= page bytes from offset got.
            let r =
                unsafe { libc::read(rd.as_raw_fd(), piece[got..].as_mut_ptr().cast(), n - got) };
            match usize::try_from(r) {
                Ok(r) if r > 0 => got += r,
                _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
                _ => return Err(UNREADABLE),
            }
        }
        if let Some(end) = piece[..n].iter().position(|b| *b == 0) {
            out.extend_from_slice(&piece[..end]);
            return Ok(out);
        }
        out.extend_from_slice(&piece[..n]);
    }
    Err(Error::ArgumentsBad("string too long or not NUL-terminated"))
}

/// The bytes of the NUL-terminated string at `p` (without the NUL), at most `max` bytes.
///
/// # Safety
/// `p` must be non-NULL and point to a NUL-terminated string (or at least `max` readable
/// bytes).
pub(super) unsafe fn c_string(p: *const u8, max: usize) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    for i in 0..max {
        // SAFETY: every byte up to and including the NUL is readable per the contract, and
        // we stop at the NUL.
        let b = unsafe { *p.add(i) };
        if b == 0 {
            return Ok(out);
        }
        out.push(b);
    }
    Err(Error::ArgumentsBad("string too long or not NUL-terminated"))
}
