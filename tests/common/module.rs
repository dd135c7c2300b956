//! Test helpers for the built `libkeyward_pkcs11.so` (issue 5 acceptance 1-3): where the
//! module is, its settings as a `pReserved` string, one user of the module per test process
//! at a time, re-running this test binary as a child process (another module instance, or a
//! process that forks), and raw C calls for the ABI misuse `cryptoki` cannot express.
//!
//! The module is a cdylib: `dlopen` of one path gives one copy per process, so every
//! `Pkcs11::new` and [`Raw::load`] of a test process share one module state. Tests of one
//! binary therefore take [`exclusive`] first, and a second instance lives in a child process.
//!
//! This is the one file of the tests with `unsafe`: `dlopen`/`dlsym` and the calls through
//! the resolved entry points, each with its `// SAFETY:` reasoning.
#![allow(unsafe_code)]

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use std::ffi::{c_void, CString};
use std::os::raw::c_ulong;
use std::path::PathBuf;
use std::process::Command;
use std::ptr::{null_mut, NonNull};
use std::sync::{Mutex, MutexGuard};

/// `CK_ULONG` (64 bits on Linux x86-64).
pub type Ulong = c_ulong;
/// `CK_RV`.
pub type Rv = Ulong;

pub const CKR_OK: Rv = 0x0;
pub const CKR_ARGUMENTS_BAD: Rv = 0x7;
pub const CKR_ACTION_PROHIBITED: Rv = 0x1B;
pub const CKR_DATA_LEN_RANGE: Rv = 0x21;
pub const CKR_DEVICE_ERROR: Rv = 0x30;
pub const CKR_DEVICE_REMOVED: Rv = 0x32;
pub const CKR_ENCRYPTED_DATA_INVALID: Rv = 0x40;
pub const CKR_FUNCTION_NOT_SUPPORTED: Rv = 0x54;
pub const CKR_KEY_HANDLE_INVALID: Rv = 0x60;
pub const CKR_MECHANISM_INVALID: Rv = 0x70;
pub const CKR_MECHANISM_PARAM_INVALID: Rv = 0x71;
pub const CKR_OBJECT_HANDLE_INVALID: Rv = 0x82;
pub const CKR_OPERATION_ACTIVE: Rv = 0x90;
pub const CKR_OPERATION_NOT_INITIALIZED: Rv = 0x91;
pub const CKR_SESSION_HANDLE_INVALID: Rv = 0xB3;
pub const CKR_SIGNATURE_INVALID: Rv = 0xC0;
pub const CKR_TOKEN_NOT_PRESENT: Rv = 0xE0;
pub const CKR_USER_ALREADY_LOGGED_IN: Rv = 0x100;
pub const CKR_USER_NOT_LOGGED_IN: Rv = 0x101;
pub const CKR_BUFFER_TOO_SMALL: Rv = 0x150;
pub const CKR_CRYPTOKI_NOT_INITIALIZED: Rv = 0x190;
pub const CKR_CRYPTOKI_ALREADY_INITIALIZED: Rv = 0x191;

pub const CKF_RW_SESSION: Ulong = 0x2;
pub const CKF_SERIAL_SESSION: Ulong = 0x4;
pub const CKF_OS_LOCKING_OK: Ulong = 0x2;
pub const CKU_USER: Ulong = 1;
pub const CKA_CLASS: Ulong = 0x0;
pub const CKA_LABEL: Ulong = 0x3;
pub const CKA_ID: Ulong = 0x102;
pub const CKA_EC_POINT: Ulong = 0x181;
pub const CKO_PUBLIC_KEY: Ulong = 2;
pub const CKO_PRIVATE_KEY: Ulong = 3;
pub const CKO_SECRET_KEY: Ulong = 4;
pub const CKM_ECDSA_SHA256: Ulong = 0x1044;
pub const CKM_AES_GCM: Ulong = 0x1087;
pub const CK_UNAVAILABLE_INFORMATION: Ulong = !0;

/// Where the built module is: `TEST_PKCS11_MODULE`, else the target directory this test
/// binary was built into (`target/debug/deps/<test>` → `target/debug/libkeyward_pkcs11.so`).
/// ci/test.sh runs `cargo build -p keyward-pkcs11` before `cargo test --workspace`; run that
/// (with the same `CARGO_TARGET_DIR`) before these tests.
pub fn module_path() -> PathBuf {
    if let Some(p) = std::env::var_os("TEST_PKCS11_MODULE") {
        let p = PathBuf::from(p);
        assert!(
            p.exists(),
            "TEST_PKCS11_MODULE={} does not exist",
            p.display()
        );
        return p;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe.parent().expect("deps directory");
    let candidates = [
        deps.join("../libkeyward_pkcs11.so"),
        deps.join("libkeyward_pkcs11.so"),
    ];
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "libkeyward_pkcs11.so is not built: none of {candidates:?} exists. Run \
                 `cargo build -p keyward-pkcs11` with the same CARGO_TARGET_DIR first (ci/test.sh \
                 does), or set TEST_PKCS11_MODULE to the module's path"
            )
        })
}

/// The module's settings as a `pReserved` string (include/keyward.h): always the socket and
/// an empty config file (so neither /etc/keyward/module.toml nor the environment decides).
#[derive(Debug, Clone)]
pub struct Settings {
    text: String,
}

impl Settings {
    /// `socket=SOCKET;config=CONFIG` (CONFIG: an empty file): no configured tokens, no
    /// credentials.
    pub fn new(socket: &std::path::Path, empty_config: &std::path::Path) -> Settings {
        if !empty_config.exists() {
            std::fs::write(empty_config, "").expect("cannot write the empty module config");
        }
        Settings {
            text: format!(
                "socket={};config={}",
                socket.display(),
                empty_config.display()
            ),
        }
    }

    /// Adds `tokens=LIST` (comma-separated `RING[=LABEL]`).
    pub fn tokens(mut self, list: &str) -> Settings {
        self.text.push_str(&format!(";tokens={list}"));
        self
    }

    /// Adds `credentials=FILE` (a credential file holding `key`, written 0600 to `path`).
    pub fn credentials(mut self, path: &std::path::Path, key: &str) -> Settings {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, format!("# test credentials\n{key}\n")).expect("credentials");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
        self.text
            .push_str(&format!(";credentials={}", path.display()));
        self
    }

    /// The string itself.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Parses a string made by [`Settings::as_str`] (a child process gets it that way).
    pub fn from_string(text: String) -> Settings {
        Settings { text }
    }
}

static EXCLUSIVE: Mutex<()> = Mutex::new(());

/// The module of this process, held by one test at a time; `C_Finalize` is called when the
/// guard goes (also when the test panicked), so the next test starts uninitialised.
pub struct Exclusive {
    _guard: MutexGuard<'static, ()>,
    raw: Raw,
}

impl Exclusive {
    /// The raw entry points.
    pub fn raw(&self) -> &Raw {
        &self.raw
    }
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        // Whatever state the test left: CKR_OK or CKR_CRYPTOKI_NOT_INITIALIZED.
        let _ = self.raw.finalize();
    }
}

/// Takes this process's module for one test. The KEYWARD_* environment is cleared first,
/// so only the `pReserved` settings count (`KEYWARD_BLESS`, for golden files, stays).
pub fn exclusive() -> Exclusive {
    let guard = EXCLUSIVE.lock().unwrap_or_else(|e| e.into_inner());
    for (k, _) in std::env::vars() {
        if k.starts_with("KEYWARD_") && k != CHILD_ROLE && k != super::golden::BLESS {
            std::env::remove_var(k);
        }
    }
    Exclusive {
        _guard: guard,
        raw: Raw::load(),
    }
}

/// The module loaded through cryptoki and initialised with `settings` in `pReserved`.
pub fn cryptoki(settings: &Settings) -> Pkcs11 {
    let path = module_path();
    let p11 = Pkcs11::new(&path).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));
    let text = CString::new(settings.as_str()).expect("settings hold no NUL");
    // SAFETY: pReserved points to a NUL-terminated string, which the module reads (and
    // copies) during C_Initialize only; `text` outlives that call.
    let args = unsafe {
        CInitializeArgs::new_with_reserved(
            CInitializeFlags::OS_LOCKING_OK,
            NonNull::new(text.as_ptr() as *mut c_void).expect("non-NULL"),
        )
    };
    p11.initialize(args)
        .unwrap_or_else(|e| panic!("C_Initialize with {settings:?}: {e}"));
    p11
}

/// The CK_RV of a call that must fail with one.
#[track_caller]
pub fn rv<T: std::fmt::Debug>(r: cryptoki::error::Result<T>) -> cryptoki::error::RvError {
    match r {
        Err(cryptoki::error::Error::Pkcs11(rv, _)) => rv,
        other => panic!("expected a CK_RV, got {other:?}"),
    }
}

/// The slot id keywardd gives key ring `ring`.
pub fn ring_slot_id(ring: &str) -> u64 {
    keyward_wire::pkcs11::ring_identity(ring).0 .0
}

/// Key ring `ring`'s slot among the module's.
#[track_caller]
pub fn ring_slot(p11: &Pkcs11, ring: &str) -> cryptoki::slot::Slot {
    let all = p11.get_all_slots().unwrap();
    *all.iter()
        .find(|s| s.id() == ring_slot_id(ring))
        .unwrap_or_else(|| panic!("no slot for {ring} in {all:?}"))
}

/// `C_Login` as the service account whose key is `key`.
#[track_caller]
pub fn login_with(s: &cryptoki::session::Session, key: &str) {
    s.login(
        cryptoki::session::UserType::User,
        Some(&cryptoki::types::AuthPin::new(key.into())),
    )
    .unwrap();
}

// ------------------------------------------------------------------ child processes

/// The environment variable that makes a test function run a child role instead.
pub const CHILD_ROLE: &str = "KEYWARD_MODULE_TEST_CHILD";

/// The role this process was started for, if it is a child.
pub fn child_role() -> Option<String> {
    std::env::var(CHILD_ROLE).ok()
}

/// What a child process gave.
#[derive(Debug)]
pub struct ChildOutput {
    /// Exit code (-1: killed by a signal).
    pub code: i32,
    /// `child: KEY=VALUE` lines of its stdout.
    pub values: Vec<(String, String)>,
    /// Everything it wrote.
    pub stdout: String,
    pub stderr: String,
}

impl ChildOutput {
    /// The value of `key` the child reported.
    #[track_caller]
    pub fn value(&self, key: &str) -> &str {
        self.values
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("the child reported no {key}: {self:#?}"))
    }
}

/// Reports `key=value` to the parent test (see [`ChildOutput::values`]).
pub fn report(key: &str, value: impl std::fmt::Display) {
    println!("child: {key}={value}");
}

/// Runs this test binary again as a child process that runs only `test` (with one test
/// thread; libtest's main thread just waits for it), with [`CHILD_ROLE`] = `role`, the
/// module settings in `KEYWARD_MODULE_TEST_SETTINGS`, and `env`.
pub fn run_child(test: &str, role: &str, settings: &Settings, env: &[(&str, &str)]) -> ChildOutput {
    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ROLE, role)
        .env("KEYWARD_MODULE_TEST_SETTINGS", settings.as_str())
        .envs(env.iter().copied())
        .output()
        .expect("cannot re-run the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let values = stdout
        .lines()
        // libtest may print "test NAME ... " on the same line first.
        .filter_map(|l| l.split_once("child: ").map(|(_, r)| r))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    ChildOutput {
        code: out.status.code().unwrap_or(-1),
        values,
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The settings a child was given.
pub fn child_settings() -> Settings {
    Settings::from_string(
        std::env::var("KEYWARD_MODULE_TEST_SETTINGS").expect("a child gets its settings"),
    )
}

/// Forks this process. The child runs `child` and leaves with `_exit(code)` (no atexit
/// handlers, no libtest epilogue); the parent waits and returns the child's exit code.
/// Call only from a child test process ([`run_child`]), where the only other thread is
/// libtest's main thread blocked waiting for the test.
pub fn fork_and_wait(child: impl FnOnce() -> i32) -> i32 {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // SAFETY: fork(2) has no memory-safety preconditions; the child only continues on this
    // thread, and the process's other thread (libtest's main, parked on a channel) holds no
    // lock the child needs.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(101);
        let _ = std::io::stdout().flush();
        // SAFETY: _exit(2) ends the child at once; nothing after it runs.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child; status is a valid int.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid, "waitpid");
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    }
}

// ------------------------------------------------------------------ raw C calls

#[repr(C)]
struct CkMechanism {
    mechanism: Ulong,
    p_parameter: *mut c_void,
    ul_parameter_len: Ulong,
}

#[repr(C)]
struct CkAttribute {
    type_: Ulong,
    p_value: *mut c_void,
    ul_value_len: Ulong,
}

/// `CK_GCM_PARAMS` with `ulIvBits` (2.40 errata, 3.0): 48 bytes on 64-bit Linux.
#[repr(C)]
struct GcmParams48 {
    p_iv: *mut u8,
    ul_iv_len: Ulong,
    ul_iv_bits: Ulong,
    p_aad: *mut u8,
    ul_aad_len: Ulong,
    ul_tag_bits: Ulong,
}

/// `CK_GCM_PARAMS` as first published in 2.40 (no `ulIvBits`): 40 bytes.
#[repr(C)]
struct GcmParams40 {
    p_iv: *mut u8,
    ul_iv_len: Ulong,
    p_aad: *mut u8,
    ul_aad_len: Ulong,
    ul_tag_bits: Ulong,
}

#[repr(C)]
struct InitArgs {
    create_mutex: *mut c_void,
    destroy_mutex: *mut c_void,
    lock_mutex: *mut c_void,
    unlock_mutex: *mut c_void,
    flags: Ulong,
    p_reserved: *mut c_void,
}

/// `CK_RSA_PKCS_OAEP_PARAMS`.
#[repr(C)]
struct OaepParams {
    hash_alg: Ulong,
    mgf: Ulong,
    source: Ulong,
    p_source_data: *mut c_void,
    ul_source_data_len: Ulong,
}

/// `CK_RSA_AES_KEY_WRAP_PARAMS`.
#[repr(C)]
struct RsaAesKeyWrapParams {
    ul_aes_key_bits: Ulong,
    p_oaep_params: *mut OaepParams,
}

/// A mechanism for the raw calls.
#[derive(Debug, Clone)]
pub enum Mech {
    /// No parameter.
    Plain(Ulong),
    /// AES-GCM with the 48-byte `CK_GCM_PARAMS` (with `ulIvBits`).
    Gcm48 {
        iv: Vec<u8>,
        aad: Vec<u8>,
        tag_bits: Ulong,
    },
    /// AES-GCM with the 40-byte `CK_GCM_PARAMS` (without `ulIvBits`).
    Gcm40 {
        iv: Vec<u8>,
        aad: Vec<u8>,
        tag_bits: Ulong,
    },
    /// A mechanism whose parameter is `len` bytes of zeros (a wrong-size structure).
    Sized(Ulong, usize),
    /// A mechanism whose parameter is these bytes (an IV).
    Bytes(Ulong, Vec<u8>),
    /// AES-GCM with every field chosen: the 48-byte layout (`ulIvBits` = `iv_bits`) or the
    /// 40-byte one, `pIv` NULL for `iv: None` (with `ulIvLen` = `iv_len` all the same).
    GcmRaw {
        with_iv_bits: bool,
        iv: Option<Vec<u8>>,
        iv_len: Ulong,
        iv_bits: Ulong,
        aad: Vec<u8>,
        tag_bits: Ulong,
    },
    /// `CKM_AES_CTR` with `CK_AES_CTR_PARAMS`.
    Ctr { counter_bits: Ulong, cb: [u8; 16] },
    /// `CKM_RSA_AES_KEY_WRAP` with `ulAESKeyBits` and OAEP `hashAlg`/`mgf` (no label).
    RsaAesKeyWrap {
        aes_bits: Ulong,
        hash: Ulong,
        mgf: Ulong,
    },
}

/// `CK_AES_CTR_PARAMS`.
#[repr(C)]
struct CtrParams {
    ul_counter_bits: Ulong,
    cb: [u8; 16],
}

impl Mech {
    /// Builds the C structure and runs `f` with a pointer to it.
    fn with<R>(&self, f: impl FnOnce(*mut CkMechanism) -> R) -> R {
        self.with_back(f).0
    }

    /// [`Mech::with`], also giving back the IV (GCM) or counter block (CTR) as it is in the
    /// structure after `f` (a module may write a generated one there: design §9).
    fn with_back<R>(&self, f: impl FnOnce(*mut CkMechanism) -> R) -> (R, Vec<u8>) {
        let (mut iv, mut aad) = match self {
            Mech::Gcm48 { iv, aad, .. } | Mech::Gcm40 { iv, aad, .. } => (iv.clone(), aad.clone()),
            Mech::GcmRaw { iv, aad, .. } => (iv.clone().unwrap_or_default(), aad.clone()),
            Mech::Bytes(_, b) => (b.clone(), vec![]),
            _ => (vec![], vec![]),
        };
        let mut ctr = CtrParams {
            ul_counter_bits: 0,
            cb: [0; 16],
        };
        if let Mech::Ctr { counter_bits, cb } = self {
            ctr.ul_counter_bits = *counter_bits;
            ctr.cb = *cb;
        }
        if let Mech::GcmRaw {
            with_iv_bits,
            iv: given,
            iv_len,
            iv_bits,
            tag_bits,
            ..
        } = self
        {
            let p_iv = if given.is_some() {
                iv.as_mut_ptr()
            } else {
                null_mut()
            };
            let r = if *with_iv_bits {
                let mut g = GcmParams48 {
                    p_iv,
                    ul_iv_len: *iv_len,
                    ul_iv_bits: *iv_bits,
                    p_aad: aad.as_mut_ptr(),
                    ul_aad_len: aad.len() as Ulong,
                    ul_tag_bits: *tag_bits,
                };
                let mut m = CkMechanism {
                    mechanism: CKM_AES_GCM,
                    p_parameter: (&mut g as *mut GcmParams48).cast(),
                    ul_parameter_len: std::mem::size_of::<GcmParams48>() as Ulong,
                };
                f(&mut m)
            } else {
                let mut g = GcmParams40 {
                    p_iv,
                    ul_iv_len: *iv_len,
                    p_aad: aad.as_mut_ptr(),
                    ul_aad_len: aad.len() as Ulong,
                    ul_tag_bits: *tag_bits,
                };
                let mut m = CkMechanism {
                    mechanism: CKM_AES_GCM,
                    p_parameter: (&mut g as *mut GcmParams40).cast(),
                    ul_parameter_len: std::mem::size_of::<GcmParams40>() as Ulong,
                };
                f(&mut m)
            };
            return (r, iv);
        }
        let mut g48 = GcmParams48 {
            p_iv: iv.as_mut_ptr(),
            ul_iv_len: iv.len() as Ulong,
            ul_iv_bits: (iv.len() * 8) as Ulong,
            p_aad: aad.as_mut_ptr(),
            ul_aad_len: aad.len() as Ulong,
            ul_tag_bits: 0,
        };
        let mut g40 = GcmParams40 {
            p_iv: iv.as_mut_ptr(),
            ul_iv_len: iv.len() as Ulong,
            p_aad: aad.as_mut_ptr(),
            ul_aad_len: aad.len() as Ulong,
            ul_tag_bits: 0,
        };
        let mut zeros = vec![0u8; 64];
        let (hash, mgf, aes_bits) = match self {
            Mech::RsaAesKeyWrap {
                aes_bits,
                hash,
                mgf,
            } => (*hash, *mgf, *aes_bits),
            _ => (0, 0, 0),
        };
        let mut oaep = OaepParams {
            hash_alg: hash,
            mgf,
            source: 1, // CKZ_DATA_SPECIFIED, empty
            p_source_data: null_mut(),
            ul_source_data_len: 0,
        };
        let mut rsa_aes = RsaAesKeyWrapParams {
            ul_aes_key_bits: aes_bits,
            p_oaep_params: &mut oaep,
        };
        let (ty, p, n): (Ulong, *mut c_void, usize) = match self {
            Mech::RsaAesKeyWrap { .. } => (
                0x1054,
                (&mut rsa_aes as *mut RsaAesKeyWrapParams).cast(),
                std::mem::size_of::<RsaAesKeyWrapParams>(),
            ),
            Mech::Plain(t) => (*t, null_mut(), 0),
            Mech::Gcm48 { tag_bits, .. } => {
                g48.ul_tag_bits = *tag_bits;
                (
                    CKM_AES_GCM,
                    (&mut g48 as *mut GcmParams48).cast(),
                    std::mem::size_of::<GcmParams48>(),
                )
            }
            Mech::Gcm40 { tag_bits, .. } => {
                g40.ul_tag_bits = *tag_bits;
                (
                    CKM_AES_GCM,
                    (&mut g40 as *mut GcmParams40).cast(),
                    std::mem::size_of::<GcmParams40>(),
                )
            }
            Mech::Sized(t, n) => {
                zeros.resize(*n, 0);
                (*t, zeros.as_mut_ptr().cast(), *n)
            }
            Mech::Bytes(t, _) => (*t, iv.as_mut_ptr().cast(), iv.len()),
            Mech::Ctr { .. } => (
                0x1086,
                (&mut ctr as *mut CtrParams).cast(),
                std::mem::size_of::<CtrParams>(),
            ),
            Mech::GcmRaw { .. } => unreachable!("built above"),
        };
        let mut m = CkMechanism {
            mechanism: ty,
            p_parameter: p,
            ul_parameter_len: n as Ulong,
        };
        let r = f(&mut m);
        let back = match self {
            Mech::Ctr { .. } => ctr.cb.to_vec(),
            _ => iv,
        };
        (r, back)
    }
}

/// An input buffer of a raw call.
#[derive(Debug, Clone, Copy)]
pub enum In<'a> {
    /// The bytes and their length.
    Bytes(&'a [u8]),
    /// A NULL pointer with this length.
    Null(Ulong),
    /// The bytes with a length above `isize::MAX` (no buffer can be that long, so the module
    /// must refuse it before reading; a module that reads crashes the test).
    Oversize(&'a [u8], Ulong),
}

impl In<'_> {
    fn parts(self) -> (*mut u8, Ulong) {
        match self {
            In::Bytes(b) => (b.as_ptr() as *mut u8, b.len() as Ulong),
            In::Null(n) => (null_mut(), n),
            In::Oversize(b, n) => {
                assert!(
                    n as u128 > isize::MAX as u128,
                    "In::Oversize needs > isize::MAX"
                );
                (b.as_ptr() as *mut u8, n)
            }
        }
    }
}

/// An output buffer of a raw call (the two-call protocol).
#[derive(Debug)]
pub enum Out<'a> {
    /// NULL buffer: the length query.
    Query,
    /// A buffer; its length is passed as the capacity.
    Buf(&'a mut [u8]),
    /// A NULL length pointer.
    NullLen,
}

impl Out<'_> {
    /// Runs `f` with (buffer, length pointer); returns its CK_RV and the length written.
    fn call(self, f: impl FnOnce(*mut u8, *mut Ulong) -> Rv) -> (Rv, Ulong) {
        let mut len: Ulong = 0;
        let rv = match self {
            Out::Query => f(null_mut(), &mut len),
            Out::Buf(b) => {
                len = b.len() as Ulong;
                f(b.as_mut_ptr(), &mut len)
            }
            Out::NullLen => f(null_mut(), null_mut()),
        };
        (rv, len)
    }
}

macro_rules! raw_fns {
    ($($name:ident($($ty:ty),*);)*) => {
        /// The module's exported entry points, resolved by name with `dlsym` from the same
        /// `dlopen` handle cryptoki uses (one module state per process).
        #[allow(non_snake_case)]
        pub struct Raw {
            _lib: *mut c_void,
            $($name: unsafe extern "C" fn($($ty),*) -> Rv,)*
        }

        impl Raw {
            /// `dlopen`s [`module_path`] and resolves every entry point used here.
            pub fn load() -> Raw {
                let path = module_path();
                let c = CString::new(path.to_str().expect("UTF-8 path")).unwrap();
                // SAFETY: a NUL-terminated path; the library's initialisers are Rust statics.
                let lib = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW) };
                assert!(!lib.is_null(), "dlopen {} failed", path.display());
                Raw {
                    _lib: lib,
                    $($name: {
                        let sym = CString::new(stringify!($name)).unwrap();
                        // SAFETY: lib is a live handle; sym is NUL-terminated.
                        let p = unsafe { libc::dlsym(lib, sym.as_ptr()) };
                        assert!(!p.is_null(), "the module exports no {}", stringify!($name));
                        // SAFETY: the module exports this C_ function with the PKCS#11
                        // prototype written here (keyward-pkcs11 ffi/entries.rs).
                        unsafe { std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($ty),*) -> Rv>(p) }
                    },)*
                }
            }
        }
    };
}

type P = *mut c_void;
type B = *mut u8;
type L = *mut Ulong;
type M = *mut CkMechanism;
type A = *mut CkAttribute;

raw_fns! {
    C_Initialize(P);
    C_Finalize(P);
    C_GetInfo(P);
    C_GetSlotList(u8, L, L);
    C_GetTokenInfo(Ulong, P);
    C_OpenSession(Ulong, Ulong, P, P, L);
    C_CloseSession(Ulong);
    C_Login(Ulong, Ulong, B, Ulong);
    C_Logout(Ulong);
    C_FindObjectsInit(Ulong, A, Ulong);
    C_FindObjects(Ulong, L, Ulong, L);
    C_FindObjectsFinal(Ulong);
    C_GetAttributeValue(Ulong, Ulong, A, Ulong);
    C_CopyObject(Ulong, Ulong, A, Ulong, L);
    C_DestroyObject(Ulong, Ulong);
    C_SignInit(Ulong, M, Ulong);
    C_Sign(Ulong, B, Ulong, B, L);
    C_SignUpdate(Ulong, B, Ulong);
    C_SignFinal(Ulong, B, L);
    C_VerifyInit(Ulong, M, Ulong);
    C_Verify(Ulong, B, Ulong, B, Ulong);
    C_EncryptInit(Ulong, M, Ulong);
    C_Encrypt(Ulong, B, Ulong, B, L);
    C_DecryptInit(Ulong, M, Ulong);
    C_Decrypt(Ulong, B, Ulong, B, L);
    C_DecryptFinal(Ulong, B, L);
    C_DeriveKey(Ulong, M, Ulong, A, Ulong, L);
    C_UnwrapKey(Ulong, M, Ulong, B, Ulong, A, Ulong, L);
    C_GenerateRandom(Ulong, B, Ulong);
}

// SAFETY (for every wrapper below): each passes the module pointers that are NULL or valid
// for the lengths passed with them (In::Oversize aside, see there), living across the call.
impl Raw {
    /// `C_Initialize` with `pReserved` = settings (NULL args if `None`).
    pub fn initialize(&self, settings: Option<&Settings>) -> Rv {
        let Some(s) = settings else {
            // SAFETY: NULL args are allowed.
            return unsafe { (self.C_Initialize)(null_mut()) };
        };
        let text = CString::new(s.as_str()).unwrap();
        let mut a = InitArgs {
            create_mutex: null_mut(),
            destroy_mutex: null_mut(),
            lock_mutex: null_mut(),
            unlock_mutex: null_mut(),
            flags: CKF_OS_LOCKING_OK,
            p_reserved: text.as_ptr() as *mut c_void,
        };
        // SAFETY: a valid CK_C_INITIALIZE_ARGS whose pReserved is NUL-terminated.
        unsafe { (self.C_Initialize)((&mut a as *mut InitArgs).cast()) }
    }

    /// `C_Finalize(NULL)`.
    pub fn finalize(&self) -> Rv {
        // SAFETY: NULL is the only valid argument.
        unsafe { (self.C_Finalize)(null_mut()) }
    }

    /// `C_Finalize` with a non-NULL `pReserved` (must be refused).
    pub fn finalize_with_reserved(&self) -> Rv {
        let mut x = 0u64;
        // SAFETY: the module must not dereference it; it points to a live u64 anyway.
        unsafe { (self.C_Finalize)((&mut x as *mut u64).cast()) }
    }

    /// `C_GetInfo(NULL)`.
    pub fn get_info_null(&self) -> Rv {
        // SAFETY: NULL must be refused.
        unsafe { (self.C_GetInfo)(null_mut()) }
    }

    /// `C_GetSlotList(tokenPresent = TRUE)`: `buf` NULL (`None`) or its capacity;
    /// `count_null` passes NULL pulCount. Returns the CK_RV and *pulCount.
    pub fn slot_list(&self, buf: Option<&mut [Ulong]>, count_null: bool) -> (Rv, Ulong) {
        self.slot_list_of(true, buf, count_null)
    }

    /// `C_GetSlotList(tokenPresent)`, as [`Raw::slot_list`].
    pub fn slot_list_of(
        &self,
        token_present: bool,
        buf: Option<&mut [Ulong]>,
        count_null: bool,
    ) -> (Rv, Ulong) {
        let mut n: Ulong = buf.as_ref().map_or(0, |b| b.len() as Ulong);
        let p = buf.map_or(null_mut(), |b| b.as_mut_ptr());
        let pn: *mut Ulong = if count_null { null_mut() } else { &mut n };
        // SAFETY: p holds n slots or is NULL; pn is valid or NULL.
        let rv = unsafe { (self.C_GetSlotList)(u8::from(token_present), p, pn) };
        (rv, n)
    }

    /// `C_GetTokenInfo` of `slot` into a buffer big enough for a CK_TOKEN_INFO.
    pub fn token_info_rv(&self, slot: Ulong) -> Rv {
        let mut buf = [0u64; 64];
        // SAFETY: 512 bytes, more than sizeof(CK_TOKEN_INFO) (208 on x86-64).
        unsafe { (self.C_GetTokenInfo)(slot, buf.as_mut_ptr().cast()) }
    }

    /// `C_OpenSession(slot, SERIAL|RW)`: the CK_RV and the handle.
    pub fn open_session(&self, slot: Ulong) -> (Rv, Ulong) {
        let mut h: Ulong = 0;
        // SAFETY: h is writable.
        let rv = unsafe {
            (self.C_OpenSession)(
                slot,
                CKF_SERIAL_SESSION | CKF_RW_SESSION,
                null_mut(),
                null_mut(),
                &mut h,
            )
        };
        (rv, h)
    }

    /// `C_OpenSession` with a NULL phSession.
    pub fn open_session_null(&self, slot: Ulong) -> Rv {
        // SAFETY: NULL must be refused.
        unsafe {
            (self.C_OpenSession)(slot, CKF_SERIAL_SESSION, null_mut(), null_mut(), null_mut())
        }
    }

    /// `C_CloseSession`.
    pub fn close_session(&self, h: Ulong) -> Rv {
        // SAFETY: no pointers.
        unsafe { (self.C_CloseSession)(h) }
    }

    /// `C_Login(h, CKU_USER, pin)`.
    pub fn login(&self, h: Ulong, pin: In<'_>) -> Rv {
        let (p, n) = pin.parts();
        // SAFETY: see In.
        unsafe { (self.C_Login)(h, CKU_USER, p, n) }
    }

    /// `C_Logout`.
    pub fn logout(&self, h: Ulong) -> Rv {
        // SAFETY: no pointers.
        unsafe { (self.C_Logout)(h) }
    }

    /// C_FindObjectsInit with a template of (type, value) pairs; C_FindObjects in chunks of
    /// 8; C_FindObjectsFinal. Panics on any error.
    #[track_caller]
    pub fn find(&self, h: Ulong, template: &[(Ulong, Vec<u8>)]) -> Vec<Ulong> {
        let rv = self.find_init(h, template);
        assert_eq!(rv, CKR_OK, "C_FindObjectsInit");
        let mut all = vec![];
        loop {
            let mut buf = [0 as Ulong; 8];
            let (rv, n) = self.find_objects(h, Some(&mut buf), 8, false);
            assert_eq!(rv, CKR_OK, "C_FindObjects");
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n as usize]);
        }
        assert_eq!(self.find_final(h), CKR_OK, "C_FindObjectsFinal");
        all
    }

    /// `C_FindObjectsInit`.
    pub fn find_init(&self, h: Ulong, template: &[(Ulong, Vec<u8>)]) -> Rv {
        let mut values: Vec<Vec<u8>> = template.iter().map(|(_, v)| v.clone()).collect();
        let mut attrs: Vec<CkAttribute> = template
            .iter()
            .zip(values.iter_mut())
            .map(|((t, _), v)| CkAttribute {
                type_: *t,
                p_value: v.as_mut_ptr().cast(),
                ul_value_len: v.len() as Ulong,
            })
            .collect();
        let p = if attrs.is_empty() {
            null_mut()
        } else {
            attrs.as_mut_ptr()
        };
        // SAFETY: attrs and the values they point to live across the call.
        unsafe { (self.C_FindObjectsInit)(h, p, attrs.len() as Ulong) }
    }

    /// `C_FindObjects`: `buf` (NULL if `None`) with `max`; `count_null` passes NULL
    /// pulObjectCount.
    pub fn find_objects(
        &self,
        h: Ulong,
        buf: Option<&mut [Ulong]>,
        max: Ulong,
        count_null: bool,
    ) -> (Rv, Ulong) {
        if let Some(b) = &buf {
            assert!(max as usize <= b.len());
        }
        let mut n: Ulong = 0;
        let p = buf.map_or(null_mut(), |b| b.as_mut_ptr());
        let pn: *mut Ulong = if count_null { null_mut() } else { &mut n };
        // SAFETY: p holds max handles or is NULL.
        let rv = unsafe { (self.C_FindObjects)(h, p, max, pn) };
        (rv, n)
    }

    /// `C_FindObjectsFinal`.
    pub fn find_final(&self, h: Ulong) -> Rv {
        // SAFETY: no pointers.
        unsafe { (self.C_FindObjectsFinal)(h) }
    }

    /// `C_GetAttributeValue` of one attribute with a buffer of `cap` bytes (`None`: NULL
    /// pValue, the length query): the CK_RV, ulValueLen and the bytes written.
    pub fn attribute(
        &self,
        h: Ulong,
        obj: Ulong,
        ty: Ulong,
        cap: Option<usize>,
    ) -> (Rv, Ulong, Vec<u8>) {
        let mut buf = vec![0u8; cap.unwrap_or(0)];
        let mut a = CkAttribute {
            type_: ty,
            p_value: if cap.is_some() {
                buf.as_mut_ptr().cast()
            } else {
                null_mut()
            },
            ul_value_len: cap.unwrap_or(0) as Ulong,
        };
        // SAFETY: one attribute whose pValue holds ulValueLen bytes or is NULL.
        let rv = unsafe { (self.C_GetAttributeValue)(h, obj, &mut a, 1) };
        let n = a.ul_value_len;
        if rv == CKR_OK {
            buf.truncate(n as usize);
        }
        (rv, n, buf)
    }

    /// `C_GetAttributeValue` with a NULL template and `count`.
    pub fn attribute_null_template(&self, h: Ulong, obj: Ulong, count: Ulong) -> Rv {
        // SAFETY: NULL with a count must be refused.
        unsafe { (self.C_GetAttributeValue)(h, obj, null_mut(), count) }
    }

    /// `C_CopyObject` with an empty template.
    pub fn copy_object(&self, h: Ulong, obj: Ulong) -> (Rv, Ulong) {
        let mut out: Ulong = 0;
        // SAFETY: empty template (NULL, 0); out is writable.
        let rv = unsafe { (self.C_CopyObject)(h, obj, null_mut(), 0, &mut out) };
        (rv, out)
    }

    /// `C_DestroyObject`.
    pub fn destroy_object(&self, h: Ulong, obj: Ulong) -> Rv {
        // SAFETY: no pointers.
        unsafe { (self.C_DestroyObject)(h, obj) }
    }

    /// `C_DeriveKey(h, mech, base, empty template)`.
    pub fn derive_key(&self, h: Ulong, mech: &Mech, base: Ulong) -> Rv {
        let mut out: Ulong = 0;
        // SAFETY: mech lives across the call; empty template; out writable.
        mech.with(|m| unsafe { (self.C_DeriveKey)(h, m, base, null_mut(), 0, &mut out) })
    }

    /// `C_UnwrapKey(h, mech, key, wrapped, template)`: the CK_RV and the new handle.
    pub fn unwrap_key(
        &self,
        h: Ulong,
        mech: &Mech,
        key: Ulong,
        wrapped: &[u8],
        template: &[(Ulong, Vec<u8>)],
    ) -> (Rv, Ulong) {
        let mut values: Vec<Vec<u8>> = template.iter().map(|(_, v)| v.clone()).collect();
        let mut attrs: Vec<CkAttribute> = template
            .iter()
            .zip(values.iter_mut())
            .map(|((t, _), v)| CkAttribute {
                type_: *t,
                p_value: v.as_mut_ptr().cast(),
                ul_value_len: v.len() as Ulong,
            })
            .collect();
        let mut w = wrapped.to_vec();
        let mut out: Ulong = 0;
        // SAFETY: mech, the blob, attrs and their values live across the call; out writable.
        let rv = mech.with(|m| unsafe {
            (self.C_UnwrapKey)(
                h,
                m,
                key,
                w.as_mut_ptr(),
                w.len() as Ulong,
                attrs.as_mut_ptr(),
                attrs.len() as Ulong,
                &mut out,
            )
        });
        (rv, out)
    }

    /// `C_SignInit` (`None`: NULL pMechanism).
    pub fn sign_init(&self, h: Ulong, mech: Option<&Mech>, key: Ulong) -> Rv {
        match mech {
            // SAFETY: mech lives across the call.
            Some(m) => m.with(|m| unsafe { (self.C_SignInit)(h, m, key) }),
            // SAFETY: NULL is allowed (3.0: cancels).
            None => unsafe { (self.C_SignInit)(h, null_mut(), key) },
        }
    }

    /// `C_Sign`.
    pub fn sign(&self, h: Ulong, data: In<'_>, out: Out<'_>) -> (Rv, Ulong) {
        let (d, n) = data.parts();
        // SAFETY: see In and Out.
        out.call(|o, l| unsafe { (self.C_Sign)(h, d, n, o, l) })
    }

    /// `C_SignUpdate`.
    pub fn sign_update(&self, h: Ulong, data: In<'_>) -> Rv {
        let (d, n) = data.parts();
        // SAFETY: see In.
        unsafe { (self.C_SignUpdate)(h, d, n) }
    }

    /// `C_SignFinal`.
    pub fn sign_final(&self, h: Ulong, out: Out<'_>) -> (Rv, Ulong) {
        // SAFETY: see Out.
        out.call(|o, l| unsafe { (self.C_SignFinal)(h, o, l) })
    }

    /// `C_VerifyInit`.
    pub fn verify_init(&self, h: Ulong, mech: &Mech, key: Ulong) -> Rv {
        // SAFETY: mech lives across the call.
        mech.with(|m| unsafe { (self.C_VerifyInit)(h, m, key) })
    }

    /// `C_Verify`.
    pub fn verify(&self, h: Ulong, data: In<'_>, sig: In<'_>) -> Rv {
        let (d, n) = data.parts();
        let (s, sn) = sig.parts();
        // SAFETY: see In.
        unsafe { (self.C_Verify)(h, d, n, s, sn) }
    }

    /// `C_EncryptInit`.
    pub fn encrypt_init(&self, h: Ulong, mech: &Mech, key: Ulong) -> Rv {
        // SAFETY: mech and its nested buffers live across the call.
        mech.with(|m| unsafe { (self.C_EncryptInit)(h, m, key) })
    }

    /// `C_EncryptInit`; also gives back the mechanism's IV (GCM, CBC) or counter block
    /// (CTR) as it is after the call.
    pub fn encrypt_init_iv(&self, h: Ulong, mech: &Mech, key: Ulong) -> (Rv, Vec<u8>) {
        // SAFETY: mech and its nested buffers live across the call.
        mech.with_back(|m| unsafe { (self.C_EncryptInit)(h, m, key) })
    }

    /// `C_Encrypt`.
    pub fn encrypt(&self, h: Ulong, data: In<'_>, out: Out<'_>) -> (Rv, Ulong) {
        let (d, n) = data.parts();
        // SAFETY: see In and Out.
        out.call(|o, l| unsafe { (self.C_Encrypt)(h, d, n, o, l) })
    }

    /// `C_DecryptInit`.
    pub fn decrypt_init(&self, h: Ulong, mech: &Mech, key: Ulong) -> Rv {
        // SAFETY: mech and its nested buffers live across the call.
        mech.with(|m| unsafe { (self.C_DecryptInit)(h, m, key) })
    }

    /// `C_Decrypt`.
    pub fn decrypt(&self, h: Ulong, data: In<'_>, out: Out<'_>) -> (Rv, Ulong) {
        let (d, n) = data.parts();
        // SAFETY: see In and Out.
        out.call(|o, l| unsafe { (self.C_Decrypt)(h, d, n, o, l) })
    }

    /// `C_DecryptFinal`.
    pub fn decrypt_final(&self, h: Ulong, out: Out<'_>) -> (Rv, Ulong) {
        // SAFETY: see Out.
        out.call(|o, l| unsafe { (self.C_DecryptFinal)(h, o, l) })
    }

    /// `C_GenerateRandom` into `buf` (`None`: NULL) with length `len`.
    pub fn random(&self, h: Ulong, buf: Option<&mut [u8]>, len: Ulong) -> Rv {
        let p = match buf {
            Some(b) => {
                assert!(len as usize <= b.len() || len as u128 > isize::MAX as u128);
                b.as_mut_ptr()
            }
            None => null_mut(),
        };
        // SAFETY: p holds len bytes, or is NULL, or len is one the module must refuse.
        unsafe { (self.C_GenerateRandom)(h, p, len) }
    }
}

/// An attribute value as the module returns a `CK_ULONG` (CKA_CLASS in a template).
pub fn ulong_bytes(v: Ulong) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

/// Signs `data` with ECDSA-SHA256 through the raw calls (both calls of the two-call
/// protocol); panics on error.
#[track_caller]
pub fn raw_sign(raw: &Raw, h: Ulong, mech: &Mech, key: Ulong, data: &[u8]) -> Vec<u8> {
    assert_eq!(raw.sign_init(h, Some(mech), key), CKR_OK, "C_SignInit");
    let (rv, n) = raw.sign(h, In::Bytes(data), Out::Query);
    assert_eq!(rv, CKR_OK, "C_Sign length");
    let mut sig = vec![0u8; n as usize];
    let (rv, n) = raw.sign(h, In::Bytes(data), Out::Buf(&mut sig));
    assert_eq!(rv, CKR_OK, "C_Sign");
    sig.truncate(n as usize);
    sig
}
