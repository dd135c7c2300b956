//! Fuzz harness of the module's argument decoding (issue 15 item 7), built only for the fuzz
//! targets (`cfg(fuzzing)`, see `fuzz/`) and for the unit test that replays the committed
//! corpus (`fuzz/corpus/ffi_args/`) in CI.
//!
//! It plays a hostile but ABI-correct client: from the fuzz input it builds real C
//! structures (`CK_ATTRIBUTE` templates, `CK_MECHANISM` with each parameter structure,
//! both `CK_GCM_PARAMS` layouts, `CK_C_INITIALIZE_ARGS`) whose every pointer is NULL or valid
//! for the length beside it, and hands them to the decoders of [`super::args`] exactly as the
//! entry points do. Any value is allowed; only the memory is honest.

use super::args;
use crate::mech::ParamKind;
use keyward_wire::pkcs11::{GcmLayout, MechParams};
use pkcs11_sys::*;
use std::ffi::c_void;
use std::mem::size_of;

/// Attributes in a template, at most.
const MAX_ATTRS: usize = 16;

/// The mechanisms whose parameters the module decodes, and some it does not know.
const MECHANISMS: [CK_ULONG; 24] = [
    CKM_AES_GCM,
    CKM_AES_CTR,
    CKM_AES_CBC,
    CKM_AES_CBC_PAD,
    CKM_AES_KEY_WRAP,
    CKM_AES_KEY_WRAP_PAD,
    0x210B, // CKM_AES_KEY_WRAP_KWP
    CKM_RSA_PKCS_OAEP,
    CKM_RSA_PKCS_PSS,
    CKM_SHA256_RSA_PKCS_PSS,
    CKM_RSA_AES_KEY_WRAP,
    CKM_ECDH1_DERIVE,
    CKM_RSA_PKCS,
    CKM_SHA256_RSA_PKCS,
    CKM_ECDSA,
    CKM_ECDSA_SHA256,
    CKM_AES_ECB,
    CKM_SHA256,
    CKM_SHA256_HMAC,
    CKM_AES_KEY_GEN,
    CKM_RSA_PKCS_KEY_PAIR_GEN,
    CKM_EC_KEY_PAIR_GEN,
    CKM_DES3_CBC,
    CKM_VENDOR_DEFINED,
];

/// Reads the fuzz input front to back; past its end every read is zero or empty.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.byte();
        }
        u64::from_le_bytes(b)
    }

    /// A CK_ULONG: a byte for small values (the common case), or a whole u64.
    fn ulong(&mut self) -> CK_ULONG {
        let b = self.byte();
        let v = if b == 0xff { self.u64() } else { u64::from(b) };
        CK_ULONG::try_from(v).unwrap_or(CK_ULONG::MAX)
    }

    /// Up to 255 bytes, length first.
    fn bytes(&mut self) -> Vec<u8> {
        let n = usize::from(self.byte()).min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head.to_vec()
    }
}

/// A client buffer: NULL (with length 0, or a hostile length: the decoder must refuse it
/// before reading), or owned bytes with their true length.
struct Buf {
    bytes: Option<Vec<u8>>,
    null_len: CK_ULONG,
}

impl Buf {
    fn read(input: &mut Input) -> Buf {
        match input.byte() % 4 {
            0 => Buf {
                bytes: None,
                null_len: 0,
            },
            1 => Buf {
                bytes: None,
                null_len: input.ulong(),
            },
            _ => Buf {
                bytes: Some(input.bytes()),
                null_len: 0,
            },
        }
    }

    fn ptr(&mut self) -> *mut u8 {
        self.bytes
            .as_mut()
            .map_or(std::ptr::null_mut(), |b| b.as_mut_ptr())
    }

    fn len(&self) -> CK_ULONG {
        match &self.bytes {
            Some(b) => CK_ULONG::try_from(b.len()).unwrap_or(CK_ULONG::MAX),
            None => self.null_len,
        }
    }
}

/// The CK_GCM_PARAMS of 2.40 as first published (no `ulIvBits`).
#[repr(C)]
#[derive(Clone, Copy)]
struct GcmParamsWithoutIvBits {
    pIv: CK_BYTE_PTR,
    ulIvLen: CK_ULONG,
    pAAD: CK_BYTE_PTR,
    ulAADLen: CK_ULONG,
    ulTagBits: CK_ULONG,
}

/// One fuzz input: the first byte picks the decoder, the rest describes the structures.
pub fn ffi_args(data: &[u8]) {
    let mut input = Input(data);
    match input.byte() % 3 {
        0 => template(&mut input),
        1 => mechanism(&mut input),
        _ => init_args(&mut input),
    }
}

fn template(input: &mut Input) {
    let count = usize::from(input.byte()) % (MAX_ATTRS + 1);
    let mut bufs: Vec<Buf> = Vec::with_capacity(count);
    let mut types: Vec<CK_ATTRIBUTE_TYPE> = Vec::with_capacity(count);
    for _ in 0..count {
        // Mostly standard types (a 12-bit number), with the array and vendor bits.
        let t = u64::from(input.byte()) | u64::from(input.byte()) << 8;
        let mut ty = (t & 0x0fff)
            | if t & 0x1000 != 0 { 0x4000_0000 } else { 0 }
            | if t & 0x2000 != 0 { 0x8000_0000 } else { 0 };
        if t & 0x4000 != 0 {
            ty = input.u64();
        }
        types.push(CK_ULONG::try_from(ty).unwrap_or(CK_ULONG::MAX));
        bufs.push(Buf::read(input));
    }
    let attrs: Vec<CK_ATTRIBUTE> = types
        .iter()
        .zip(bufs.iter_mut())
        .map(|(ty, b)| CK_ATTRIBUTE {
            type_: *ty,
            pValue: b.ptr().cast(),
            ulValueLen: b.len(),
        })
        .collect();
    let (p, n) = match input.byte() % 8 {
        // NULL with a count: refused before anything is read.
        0 => (std::ptr::null(), CK_ULONG::try_from(count).unwrap_or(0)),
        _ => (attrs.as_ptr(), CK_ULONG::try_from(attrs.len()).unwrap_or(0)),
    };
    // SAFETY: p is NULL or points to n CK_ATTRIBUTEs whose pValue is NULL or valid for
    // ulValueLen bytes (the buffers live in `bufs` until the end of this function).
    let decoded = unsafe { args::template(p, n) };
    if let Ok(list) = decoded {
        assert_eq!(list.len(), if p.is_null() { 0 } else { attrs.len() });
        for (a, raw) in list.iter().zip(&attrs) {
            assert_eq!(a.ty, args::ulong(raw.type_));
        }
    }
}

fn mechanism(input: &mut Input) {
    let sel = input.byte();
    let ty = if sel == 0xff {
        CK_ULONG::try_from(input.u64()).unwrap_or(CK_ULONG::MAX)
    } else {
        MECHANISMS[usize::from(sel) % MECHANISMS.len()]
    };
    // Every buffer the parameter structures point to; they outlive the decoding.
    let mut iv = Buf::read(input);
    let mut aad = Buf::read(input);
    let mut label = Buf::read(input);
    let mut shared = Buf::read(input);
    let mut public = Buf::read(input);
    let u = [input.ulong(), input.ulong(), input.ulong(), input.ulong()];
    let mut cb = [0u8; 16];
    cb.iter_mut().for_each(|b| *b = input.byte());
    let mut oaep = CK_RSA_PKCS_OAEP_PARAMS {
        hashAlg: u[0],
        mgf: u[1],
        source: u[2],
        pSourceData: label.ptr().cast(),
        ulSourceDataLen: label.len(),
    };
    // The parameter, by the input's choice of structure: any structure for any mechanism
    // (the decoder must check the length before it reads), or plain bytes.
    let mut gcm = CK_GCM_PARAMS {
        pIv: iv.ptr(),
        ulIvLen: iv.len(),
        ulIvBits: u[0],
        pAAD: aad.ptr(),
        ulAADLen: aad.len(),
        ulTagBits: u[1],
    };
    let mut gcm_old = GcmParamsWithoutIvBits {
        pIv: iv.ptr(),
        ulIvLen: iv.len(),
        pAAD: aad.ptr(),
        ulAADLen: aad.len(),
        ulTagBits: u[1],
    };
    let mut ctr = CK_AES_CTR_PARAMS {
        ulCounterBits: u[0],
        cb,
    };
    let mut pss = CK_RSA_PKCS_PSS_PARAMS {
        hashAlg: u[0],
        mgf: u[1],
        sLen: u[2],
    };
    let mut wrap = CK_RSA_AES_KEY_WRAP_PARAMS {
        ulAESKeyBits: u[3],
        pOAEPParams: if u[3] % 2 == 0 {
            &mut oaep
        } else {
            std::ptr::null_mut()
        },
    };
    let mut ecdh = CK_ECDH1_DERIVE_PARAMS {
        kdf: u[0],
        ulSharedDataLen: shared.len(),
        pSharedData: shared.ptr(),
        ulPublicDataLen: public.len(),
        pPublicData: public.ptr(),
    };
    let mut raw = Buf::read(input);
    fn param<T>(t: &mut T) -> (*mut c_void, usize) {
        (std::ptr::from_mut(t).cast(), std::mem::size_of::<T>())
    }
    // Each structure's address, taken once (and the plain bytes').
    let structs = [
        param(&mut gcm),
        param(&mut gcm_old),
        param(&mut ctr),
        param(&mut oaep),
        param(&mut pss),
        param(&mut wrap),
        param(&mut ecdh),
    ];
    let (pp, size) = structs
        .get(usize::from(input.byte() % 9))
        .copied()
        .unwrap_or_else(|| (raw.ptr().cast(), usize::try_from(raw.len()).unwrap_or(0)));
    // The length: the structure's own, or shorter (a client that declares less than it
    // passes); never longer than the memory behind the pointer.
    let short = usize::from(input.byte());
    let declared = if short % 4 == 0 {
        size.saturating_sub(short / 4)
    } else {
        size
    };
    let m = CK_MECHANISM {
        mechanism: ty,
        pParameter: pp,
        ulParameterLen: if pp.is_null() {
            raw.len()
        } else {
            CK_ULONG::try_from(declared).unwrap_or(0)
        },
    };
    // A client passes the structure its mechanism takes: where the declared length is that
    // of the mechanism's structure with pointers, only that structure may be behind it
    // (anything else would be read as garbage pointers). Other lengths, structures without
    // pointers and plain bytes are all fair: the decoder must check before it reads.
    let at = |i: usize| std::ptr::eq(pp, structs[i].0);
    let fits = match crate::mech::param_kind(args::ulong(ty)) {
        ParamKind::Gcm => Some(
            (at(0) && declared == size_of::<CK_GCM_PARAMS>())
                || (at(1) && declared == size_of::<GcmParamsWithoutIvBits>()),
        )
        .filter(|_| {
            [
                size_of::<CK_GCM_PARAMS>(),
                size_of::<GcmParamsWithoutIvBits>(),
            ]
            .contains(&declared)
        }),
        ParamKind::Oaep => (declared == size_of::<CK_RSA_PKCS_OAEP_PARAMS>()).then(|| at(3)),
        ParamKind::RsaAesKeyWrap => {
            (declared == size_of::<CK_RSA_AES_KEY_WRAP_PARAMS>()).then(|| at(5))
        }
        ParamKind::Ecdh1Derive => (declared == size_of::<CK_ECDH1_DERIVE_PARAMS>()).then(|| at(6)),
        _ => None,
    };
    if fits == Some(false) && !pp.is_null() {
        return;
    }
    // SAFETY: m is a valid CK_MECHANISM whose pParameter is NULL or valid for
    // ulParameterLen bytes (a live local or `raw`), with every nested pointer NULL or valid
    // for the length beside it (the Bufs above, alive until the end of this function).
    let decoded = unsafe { args::mechanism(&m) };
    let Ok(mech) = decoded else {
        return;
    };
    assert_eq!(mech.ty, args::ulong(ty));
    match &mech.params {
        MechParams::Gcm(g) => {
            assert_eq!(Some(g.iv.as_slice()), iv.bytes.as_deref());
            let aad_given = aad.bytes.as_deref().unwrap_or_default();
            assert_eq!(g.aad.as_slice(), aad_given);
            let layout = if at(0) {
                GcmLayout::WithIvBits
            } else {
                GcmLayout::WithoutIvBits
            };
            assert_eq!(g.layout, layout);
        }
        // From the CK_AES_CTR_PARAMS built here (other 24-byte structures are fair too).
        MechParams::Ctr(c) if at(2) => assert_eq!(c.cb, cb),
        _ => {}
    }
    // keywardd's generated IV or counter block goes back into the client's structure.
    let generated = input.bytes();
    // SAFETY: m is the mechanism just decoded into mech.params, still alive, and its
    // parameter structure and pIv are writable (owned by this function).
    let wrote = unsafe { args::write_generated_iv(&m, Some(&mech.params), &generated) };
    if wrote.is_ok() {
        match &mech.params {
            MechParams::Gcm(_) => assert_eq!(iv.bytes.as_deref(), Some(generated.as_slice())),
            MechParams::Ctr(_) => {
                let off = std::mem::offset_of!(CK_AES_CTR_PARAMS, cb);
                // SAFETY: the write succeeded, so pp is a 24-byte parameter (whichever
                // structure the input chose) whose bytes off..off + 16 were just written.
                let cb = unsafe { std::slice::from_raw_parts(pp.cast::<u8>().add(off), 16) };
                assert_eq!(cb, generated.as_slice());
            }
            _ => panic!("an IV written for {:?}", mech.params),
        }
    }
}

unsafe extern "C" fn create_mutex(_: CK_VOID_PTR_PTR) -> CK_RV {
    CKR_OK
}

unsafe extern "C" fn mutex_op(_: CK_VOID_PTR) -> CK_RV {
    CKR_OK
}

fn init_args(input: &mut Input) {
    let which = input.byte();
    let flags = input.ulong();
    let mut reserved = input.bytes();
    // pReserved: NULL or a NUL-terminated string (it may hold NULs of its own earlier).
    reserved.push(0);
    let a = CK_C_INITIALIZE_ARGS {
        CreateMutex: (which & 1 != 0).then_some(create_mutex as _),
        DestroyMutex: (which & 2 != 0).then_some(mutex_op as _),
        LockMutex: (which & 4 != 0).then_some(mutex_op as _),
        UnlockMutex: (which & 8 != 0).then_some(mutex_op as _),
        flags,
        pReserved: if which & 16 != 0 {
            std::ptr::null_mut()
        } else {
            reserved.as_mut_ptr().cast()
        },
    };
    let p: *const c_void = if which & 32 != 0 {
        std::ptr::null()
    } else {
        std::ptr::from_ref(&a).cast()
    };
    // SAFETY: p is NULL or a valid CK_C_INITIALIZE_ARGS whose pReserved is NULL or a
    // NUL-terminated string that lives until the end of this function.
    let decoded = unsafe { args::init_args(p) };
    match decoded {
        Ok(None) => assert!(p.is_null()),
        Ok(Some(init)) => {
            assert_eq!(init.os_locking_ok, flags & CKF_OS_LOCKING_OK != 0);
            if let Some(s) = &init.reserved {
                let end = reserved.iter().position(|b| *b == 0).unwrap_or(0);
                assert_eq!(s.as_bytes(), &reserved[..end]);
                // What C_Initialize does next with it.
                crate::config::fuzzing::load(Some(s), None, None);
            }
        }
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    /// Replays every file of `fuzz/corpus/ffi_args/` (the seeds and what the fuzzer kept).
    #[test]
    fn corpus_replays() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/ffi_args");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            super::ffi_args(&data);
            n += 1;
        }
        assert!(n >= 20, "only {n} corpus files");
    }
}
