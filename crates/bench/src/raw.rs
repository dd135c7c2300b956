//! The raw PKCS#11 calls of the benchmark: a module loaded with `libloading`, its
//! `CK_FUNCTION_LIST`, and one function per call the bench makes. Design §7 allows `unsafe`
//! here (cryptoki's convenience calls add a size query to every operation, which the
//! references a user compares with do not make). Every block says why it is sound.

#![allow(unsafe_code)]

use cryptoki_sys::*;
use std::ffi::c_void;
use std::path::Path;
use std::ptr;

/// A CK_RV, or a failure of the bench itself (as `CKR_GENERAL_ERROR` with a message).
pub type Rv = CK_RV;

/// A loaded, `C_Initialize`d PKCS#11 module.
pub struct Module {
    list: *const CK_FUNCTION_LIST,
    // Kept loaded for as long as `list` is used.
    _lib: libloading::Library,
}

// SAFETY: the function list is immutable after C_GetFunctionList, and the module is
// initialised with CKF_OS_LOCKING_OK, so PKCS#11 (§5.1, "Thread-safety") lets any thread call
// it; every session is used by one thread at a time (each bench thread opens its own).
unsafe impl Send for Module {}
// SAFETY: as above.
unsafe impl Sync for Module {}

/// Calls one entry of the function list, or gives CKR_FUNCTION_NOT_SUPPORTED if it is NULL.
macro_rules! call {
    ($m:expr, $f:ident ( $($a:expr),* )) => {{
        // SAFETY: `list` points at the module's function list (checked non-NULL at load), which
        // stays valid while `_lib` is loaded; the arguments are checked by each caller.
        match unsafe { (*$m.list).$f } {
            // SAFETY: see each call site: every pointer passed is valid for the call's length.
            Some(func) => unsafe { func($($a),*) },
            None => CKR_FUNCTION_NOT_SUPPORTED,
        }
    }};
}

fn check(rv: CK_RV) -> Result<(), Rv> {
    if rv == CKR_OK {
        Ok(())
    } else {
        Err(rv)
    }
}

fn ulong(n: usize) -> CK_ULONG {
    CK_ULONG::try_from(n).unwrap_or(CK_ULONG::MAX)
}

fn usize_of(n: CK_ULONG) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// An attribute template whose values it owns.
#[derive(Default)]
pub struct Template {
    attrs: Vec<CK_ATTRIBUTE>,
    // Boxed so the pointers in `attrs` stay valid when this vector grows.
    values: Vec<Box<[u8]>>,
}

// SAFETY: the raw pointers point into `values`, owned by the template and never shared.
unsafe impl Send for Template {}

impl Template {
    /// An empty template.
    pub fn new() -> Template {
        Template::default()
    }

    /// Adds an attribute of raw bytes.
    pub fn bytes(mut self, ty: CK_ATTRIBUTE_TYPE, v: &[u8]) -> Template {
        let mut b: Box<[u8]> = v.into();
        self.attrs.push(CK_ATTRIBUTE {
            type_: ty,
            pValue: b.as_mut_ptr().cast::<c_void>(),
            ulValueLen: ulong(b.len()),
        });
        self.values.push(b);
        self
    }

    /// Adds a CK_ULONG attribute.
    pub fn ulong(self, ty: CK_ATTRIBUTE_TYPE, v: CK_ULONG) -> Template {
        self.bytes(ty, &v.to_ne_bytes())
    }

    /// Adds a CK_BBOOL attribute.
    pub fn bool(self, ty: CK_ATTRIBUTE_TYPE, v: bool) -> Template {
        self.bytes(ty, &[CK_BBOOL::from(v)])
    }

    fn ptr(&mut self) -> (*mut CK_ATTRIBUTE, CK_ULONG) {
        (self.attrs.as_mut_ptr(), ulong(self.attrs.len()))
    }
}

/// A mechanism with an optional parameter it owns.
pub struct Mech {
    raw: CK_MECHANISM,
    _gcm: Option<Box<(CK_GCM_PARAMS, [u8; 12])>>,
}

// SAFETY: the raw pointers point into the boxes the mechanism owns and never shares.
unsafe impl Send for Mech {}

impl Mech {
    /// A mechanism without parameter.
    pub fn plain(ty: CK_MECHANISM_TYPE) -> Mech {
        Mech {
            raw: CK_MECHANISM {
                mechanism: ty,
                pParameter: ptr::null_mut(),
                ulParameterLen: 0,
            },
            _gcm: None,
        }
    }

    /// CKM_AES_GCM with a 96-bit IV, no AAD, a 128-bit tag (PKCS#11 2.40 layout, with
    /// `ulIvBits`, which SoftHSM2 2.6 reads and the Keyward module decodes).
    pub fn gcm(iv: [u8; 12]) -> Mech {
        let mut b = Box::new((
            CK_GCM_PARAMS {
                pIv: ptr::null_mut(),
                ulIvLen: 12,
                ulIvBits: 96,
                pAAD: ptr::null_mut(),
                ulAADLen: 0,
                ulTagBits: 128,
            },
            iv,
        ));
        b.0.pIv = b.1.as_mut_ptr();
        let param = ptr::addr_of_mut!(b.0).cast::<c_void>();
        Mech {
            raw: CK_MECHANISM {
                mechanism: CKM_AES_GCM,
                pParameter: param,
                ulParameterLen: ulong(std::mem::size_of::<CK_GCM_PARAMS>()),
            },
            _gcm: Some(b),
        }
    }

    fn ptr(&mut self) -> *mut CK_MECHANISM {
        &mut self.raw
    }
}

impl Module {
    /// Loads the module at `path`, calls its C_GetFunctionList and C_Initialize (OS locking).
    pub fn load(path: &Path) -> Result<Module, String> {
        // SAFETY: loading a PKCS#11 module runs its initialisers; the modules the bench loads
        // (SoftHSM2, p11-kit-client, Keyward's) are made to be dlopened by any host.
        let lib = unsafe { libloading::Library::new(path) }
            .map_err(|e| format!("cannot load {}: {e}", path.display()))?;
        // SAFETY: C_GetFunctionList has this signature in every PKCS#11 version.
        let get: libloading::Symbol<'_, unsafe extern "C" fn(*mut *mut CK_FUNCTION_LIST) -> CK_RV> =
            unsafe { lib.get(b"C_GetFunctionList\0") }
                .map_err(|e| format!("{}: no C_GetFunctionList: {e}", path.display()))?;
        let mut list: *mut CK_FUNCTION_LIST = ptr::null_mut();
        // SAFETY: `list` is a valid out-pointer for the call.
        let rv = unsafe { get(&mut list) };
        if rv != CKR_OK || list.is_null() {
            return Err(format!(
                "{}: C_GetFunctionList failed: {}",
                path.display(),
                rv_name(rv)
            ));
        }
        let m = Module { list, _lib: lib };
        let mut args = CK_C_INITIALIZE_ARGS {
            CreateMutex: None,
            DestroyMutex: None,
            LockMutex: None,
            UnlockMutex: None,
            flags: CKF_OS_LOCKING_OK,
            pReserved: ptr::null_mut(),
        };
        let args_ptr = ptr::addr_of_mut!(args).cast::<c_void>();
        // `args` outlives the call.
        let rv = call!(m, C_Initialize(args_ptr));
        if rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED {
            return Err(format!(
                "{}: C_Initialize failed: {}",
                path.display(),
                rv_name(rv)
            ));
        }
        Ok(m)
    }

    /// The slot whose token is labelled `label`.
    pub fn slot_by_label(&self, label: &str) -> Result<CK_SLOT_ID, String> {
        let mut n: CK_ULONG = 0;
        // NULL list: the count only.
        check(call!(self, C_GetSlotList(CK_TRUE, ptr::null_mut(), &mut n)))
            .map_err(|rv| format!("C_GetSlotList: {}", rv_name(rv)))?;
        let mut slots = vec![0 as CK_SLOT_ID; usize_of(n)];
        // `slots` holds `n` entries.
        check(call!(
            self,
            C_GetSlotList(CK_TRUE, slots.as_mut_ptr(), &mut n)
        ))
        .map_err(|rv| format!("C_GetSlotList: {}", rv_name(rv)))?;
        slots.truncate(usize_of(n));
        let mut seen = Vec::new();
        for s in slots {
            // SAFETY: CK_TOKEN_INFO is plain data; all-zero is a valid value to overwrite.
            let mut info: CK_TOKEN_INFO = unsafe { std::mem::zeroed() };
            if call!(self, C_GetTokenInfo(s, &mut info)) != CKR_OK {
                continue;
            }
            let l = String::from_utf8_lossy(&info.label).trim_end().to_owned();
            if l == label {
                return Ok(s);
            }
            seen.push(l);
        }
        Err(format!("no token labelled {label:?} (tokens: {seen:?})"))
    }

    /// Opens a read/write session on `slot`.
    pub fn open_session(&self, slot: CK_SLOT_ID) -> Result<CK_SESSION_HANDLE, Rv> {
        let mut h: CK_SESSION_HANDLE = 0;
        // No notify callback; `h` is a valid out-pointer.
        check(call!(
            self,
            C_OpenSession(
                slot,
                CKF_SERIAL_SESSION | CKF_RW_SESSION,
                ptr::null_mut(),
                None,
                &mut h
            )
        ))?;
        Ok(h)
    }

    /// Closes a session.
    pub fn close_session(&self, s: CK_SESSION_HANDLE) {
        let _ = call!(self, C_CloseSession(s));
    }

    /// C_Login(CKU_USER, pin); already logged in is fine.
    pub fn login(&self, s: CK_SESSION_HANDLE, pin: &[u8]) -> Result<(), Rv> {
        let mut p = pin.to_vec();
        let ptr = if p.is_empty() {
            ptr::null_mut()
        } else {
            p.as_mut_ptr()
        };
        // `p` holds `pin.len()` bytes (NULL for an empty PIN).
        match call!(self, C_Login(s, CKU_USER, ptr, ulong(pin.len()))) {
            CKR_OK | CKR_USER_ALREADY_LOGGED_IN => Ok(()),
            rv => Err(rv),
        }
    }

    /// Every object matching `t`.
    pub fn find(&self, s: CK_SESSION_HANDLE, mut t: Template) -> Result<Vec<CK_OBJECT_HANDLE>, Rv> {
        let (p, n) = t.ptr();
        // The template's values live in `t`.
        check(call!(self, C_FindObjectsInit(s, p, n)))?;
        let mut out = Vec::new();
        let mut buf = [0 as CK_OBJECT_HANDLE; 64];
        loop {
            let mut got: CK_ULONG = 0;
            // `buf` holds 64 handles.
            let rv = call!(self, C_FindObjects(s, buf.as_mut_ptr(), 64, &mut got));
            if rv != CKR_OK {
                let _ = call!(self, C_FindObjectsFinal(s));
                return Err(rv);
            }
            let got = usize_of(got).min(64);
            out.extend_from_slice(&buf[..got]);
            if got < 64 {
                break;
            }
        }
        check(call!(self, C_FindObjectsFinal(s)))?;
        Ok(out)
    }

    /// The one object matching `t` (CKR_OBJECT_HANDLE_INVALID if none or several).
    pub fn find_one(&self, s: CK_SESSION_HANDLE, t: Template) -> Result<CK_OBJECT_HANDLE, Rv> {
        match self.find(s, t)?.as_slice() {
            [h] => Ok(*h),
            _ => Err(CKR_OBJECT_HANDLE_INVALID),
        }
    }

    /// One attribute's value.
    pub fn attribute(
        &self,
        s: CK_SESSION_HANDLE,
        o: CK_OBJECT_HANDLE,
        ty: CK_ATTRIBUTE_TYPE,
    ) -> Result<Vec<u8>, Rv> {
        let mut a = CK_ATTRIBUTE {
            type_: ty,
            pValue: ptr::null_mut(),
            ulValueLen: 0,
        };
        // NULL value: the length only.
        check(call!(self, C_GetAttributeValue(s, o, &mut a, 1)))?;
        let mut v = vec![0u8; usize_of(a.ulValueLen)];
        a.pValue = v.as_mut_ptr().cast::<c_void>();
        // `v` holds `ulValueLen` bytes.
        check(call!(self, C_GetAttributeValue(s, o, &mut a, 1)))?;
        v.truncate(usize_of(a.ulValueLen));
        Ok(v)
    }

    /// C_GenerateKey.
    pub fn generate_key(
        &self,
        s: CK_SESSION_HANDLE,
        mut m: Mech,
        mut t: Template,
    ) -> Result<CK_OBJECT_HANDLE, Rv> {
        let mut h: CK_OBJECT_HANDLE = 0;
        let (p, n) = t.ptr();
        // Mechanism and template live in `m` and `t`; `h` is a valid out-pointer.
        check(call!(self, C_GenerateKey(s, m.ptr(), p, n, &mut h)))?;
        Ok(h)
    }

    /// C_GenerateKeyPair: (public, private).
    pub fn generate_pair(
        &self,
        s: CK_SESSION_HANDLE,
        mut m: Mech,
        mut public: Template,
        mut private: Template,
    ) -> Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE), Rv> {
        let (mut hp, mut hs): (CK_OBJECT_HANDLE, CK_OBJECT_HANDLE) = (0, 0);
        let (pp, pn) = public.ptr();
        let (sp, sn) = private.ptr();
        // Mechanism and templates are owned here; both out-pointers are valid.
        check(call!(
            self,
            C_GenerateKeyPair(s, m.ptr(), pp, pn, sp, sn, &mut hp, &mut hs)
        ))?;
        Ok((hp, hs))
    }

    /// C_Finalize.
    pub fn finalize(&self) {
        let _ = call!(self, C_Finalize(ptr::null_mut()));
    }
}

/// What one timed operation does.
pub enum Step {
    /// C_EncryptInit + C_Encrypt.
    Encrypt,
    /// C_DecryptInit + C_Decrypt.
    Decrypt,
    /// C_SignInit + C_Sign.
    Sign,
    /// C_VerifyInit + C_Verify (the input's signature in `extra`).
    Verify,
    /// C_GenerateRandom of `input.len()` bytes.
    Random,
    /// C_FindObjectsInit + C_FindObjects + C_FindObjectsFinal; exactly one object expected.
    Find,
}

/// One thread's prepared operation: mechanism, key, input and a pre-sized output buffer.
pub struct Prepared {
    /// What to do.
    pub step: Step,
    /// The mechanism (unused for random and find).
    pub mech: Mech,
    /// The key (unused for random and find).
    pub key: CK_OBJECT_HANDLE,
    /// The input (for random: its length is the request).
    pub input: Vec<u8>,
    /// For verify: the signature.
    pub extra: Vec<u8>,
    /// For find: the template.
    pub template: Template,
    /// The output buffer, sized for the largest answer.
    pub out: Vec<u8>,
}

impl Module {
    /// Runs `p` once in session `s`: one *Init and one call (three for a find).
    #[inline]
    pub fn run(&self, s: CK_SESSION_HANDLE, p: &mut Prepared) -> Result<(), Rv> {
        let in_ptr = p.input.as_mut_ptr();
        let in_len = ulong(p.input.len());
        let mut out_len = ulong(p.out.len());
        let out_ptr = p.out.as_mut_ptr();
        // For every call below: `p.mech`, `p.input`, `p.extra`, `p.out` and `p.template` are
        // owned by `p`, which this thread holds exclusively; the lengths passed are theirs.
        match p.step {
            Step::Encrypt => {
                check(call!(self, C_EncryptInit(s, p.mech.ptr(), p.key)))?;
                check(call!(
                    self,
                    C_Encrypt(s, in_ptr, in_len, out_ptr, &mut out_len)
                ))
            }
            Step::Decrypt => {
                check(call!(self, C_DecryptInit(s, p.mech.ptr(), p.key)))?;
                check(call!(
                    self,
                    C_Decrypt(s, in_ptr, in_len, out_ptr, &mut out_len)
                ))
            }
            Step::Sign => {
                check(call!(self, C_SignInit(s, p.mech.ptr(), p.key)))?;
                check(call!(
                    self,
                    C_Sign(s, in_ptr, in_len, out_ptr, &mut out_len)
                ))
            }
            Step::Verify => {
                check(call!(self, C_VerifyInit(s, p.mech.ptr(), p.key)))?;
                let sig_len = ulong(p.extra.len());
                check(call!(
                    self,
                    C_Verify(s, in_ptr, in_len, p.extra.as_mut_ptr(), sig_len)
                ))
            }
            Step::Random => check(call!(self, C_GenerateRandom(s, out_ptr, in_len))),
            Step::Find => {
                let (tp, tn) = p.template.ptr();
                check(call!(self, C_FindObjectsInit(s, tp, tn)))?;
                let mut found = [0 as CK_OBJECT_HANDLE; 2];
                let mut n: CK_ULONG = 0;
                let rv = call!(self, C_FindObjects(s, found.as_mut_ptr(), 2, &mut n));
                let fin = call!(self, C_FindObjectsFinal(s));
                check(rv)?;
                check(fin)?;
                if n == 1 {
                    Ok(())
                } else {
                    Err(CKR_OBJECT_HANDLE_INVALID)
                }
            }
        }
    }

    /// Runs `p` once and keeps the output (to make a ciphertext or signature for the
    /// decrypt and verify rows).
    pub fn output(&self, s: CK_SESSION_HANDLE, p: &mut Prepared) -> Result<Vec<u8>, Rv> {
        let in_ptr = p.input.as_mut_ptr();
        let in_len = ulong(p.input.len());
        let mut out_len = ulong(p.out.len());
        let out_ptr = p.out.as_mut_ptr();
        // As in `run`.
        match p.step {
            Step::Encrypt => {
                check(call!(self, C_EncryptInit(s, p.mech.ptr(), p.key)))?;
                check(call!(
                    self,
                    C_Encrypt(s, in_ptr, in_len, out_ptr, &mut out_len)
                ))?;
            }
            Step::Sign => {
                check(call!(self, C_SignInit(s, p.mech.ptr(), p.key)))?;
                check(call!(
                    self,
                    C_Sign(s, in_ptr, in_len, out_ptr, &mut out_len)
                ))?;
            }
            _ => return Err(CKR_FUNCTION_NOT_SUPPORTED),
        }
        Ok(p.out[..usize_of(out_len).min(p.out.len())].to_vec())
    }
}

/// The name of a CK_RV.
pub fn rv_name(rv: CK_RV) -> String {
    match keyward_wire::rv::rv_name(rv) {
        "CKR_UNKNOWN" | "CKR_VENDOR_DEFINED" => format!("CK_RV {rv:#x}"),
        name => name.to_owned(),
    }
}
