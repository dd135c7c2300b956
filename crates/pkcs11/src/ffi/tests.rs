//! In-process ABI tests: the extern fns called through `C_GetFunctionList` /
//! `C_GetInterface`, as a host would.

use crate::allow::Func;
use parking_lot::Mutex;

/// Serialises the tests that touch the module's global state (one instance per process).
pub(crate) static STATE_LOCK: Mutex<()> = Mutex::new(());

/// The test-only panic hook: a function named here panics inside its guard.
static PANIC_IN: Mutex<Option<Func>> = Mutex::new(None);

/// Called by [`super::guard`] in test builds.
pub(crate) fn maybe_panic(func: Func) {
    if *PANIC_IN.lock() == Some(func) {
        panic!("test hook: panic in {}", func.name());
    }
}

use keyward_wire::pkcs11::{
    ring_identity, AttrResult, AttrValue, Blob, MechParams, Pkcs11Request as Rq,
    Pkcs11Response as Rs, SessionId, SlotDescription, TokenInfo,
};
use keyward_wire::server::{accept, Accepted};
use keyward_wire::{ErrorReply, InstanceSecret, RequestBody, ResponseBody};
use pkcs11_sys::*;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::ptr::null_mut;
use std::sync::{Arc, OnceLock};
use std::thread;

const RING_A: &str = "projects/p/keyRings/r";
const RING_B: &str = "organizations/acme/keyRings/root-ca";
const LIVE_RING: &str = "projects/p/keyRings/live";
const GOOD_PIN: &[u8] = b"kwAbC123.0123456789abcdefghijkl";

/// Process-wide environment, set once: two configured tokens, no daemon at the default
/// socket, an empty config file (so a host's /etc/keyward/module.toml cannot interfere).
fn env() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("module.toml");
        std::fs::write(&cfg, "").unwrap();
        std::env::set_var("KEYWARD_CONFIG", &cfg);
        std::env::set_var("KEYWARD_SOCKET", dir.path().join("no-daemon.sock"));
        std::env::set_var("KEYWARD_TOKENS", format!("{RING_A}, {RING_B}=Acme Root CA"));
        std::env::remove_var("KEYWARD_CREDENTIALS");
        dir
    })
    .path()
}

fn list() -> &'static CK_FUNCTION_LIST {
    let mut p: CK_FUNCTION_LIST_PTR = null_mut();
    // SAFETY: a valid out pointer.
    assert_eq!(unsafe { super::entries::C_GetFunctionList(&mut p) }, CKR_OK);
    // SAFETY: C_GetFunctionList returned a pointer to an immutable static.
    unsafe { &*p }
}

fn init_with(reserved: Option<&str>) -> CK_RV {
    let cstr = reserved.map(|r| std::ffi::CString::new(r).unwrap());
    let mut args = CK_C_INITIALIZE_ARGS {
        flags: CKF_OS_LOCKING_OK,
        pReserved: cstr.as_ref().map_or(null_mut(), |c| c.as_ptr() as *mut _),
        ..Default::default()
    };
    // SAFETY: valid CK_C_INITIALIZE_ARGS with a NUL-terminated pReserved.
    unsafe { list().C_Initialize.unwrap()(&mut args as *mut _ as CK_VOID_PTR) }
}

fn finalize() -> CK_RV {
    // SAFETY: NULL pReserved.
    unsafe { list().C_Finalize.unwrap()(null_mut()) }
}

fn slots(present: bool) -> Vec<CK_SLOT_ID> {
    let f = list();
    let mut n: CK_ULONG = 0;
    // SAFETY: length query.
    assert_eq!(
        unsafe { f.C_GetSlotList.unwrap()(present.into(), null_mut(), &mut n) },
        CKR_OK
    );
    let mut v = vec![0; usize::try_from(n).unwrap()];
    // SAFETY: buffer of n ids.
    assert_eq!(
        unsafe { f.C_GetSlotList.unwrap()(present.into(), v.as_mut_ptr(), &mut n) },
        CKR_OK
    );
    v.truncate(usize::try_from(n).unwrap());
    v
}

fn slot_flags(slot: CK_SLOT_ID) -> CK_FLAGS {
    let mut info = CK_SLOT_INFO::default();
    // SAFETY: valid out pointer.
    assert_eq!(
        unsafe { list().C_GetSlotInfo.unwrap()(slot, &mut info) },
        CKR_OK
    );
    info.flags
}

fn open(slot: CK_SLOT_ID) -> Result<CK_SESSION_HANDLE, CK_RV> {
    let mut h: CK_SESSION_HANDLE = 0;
    let flags = CKF_SERIAL_SESSION | CKF_RW_SESSION;
    // SAFETY: valid out pointer; no notify callback.
    let rv = unsafe { list().C_OpenSession.unwrap()(slot, flags, null_mut(), None, &mut h) };
    if rv == CKR_OK {
        Ok(h)
    } else {
        Err(rv)
    }
}

fn id(ring: &str) -> CK_SLOT_ID {
    ring_identity(ring).0 .0
}

fn text(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap().trim_end()
}

#[test]
fn function_lists_and_interfaces() {
    let f = list();
    assert_eq!((f.version.major, f.version.minor), (2, 40));
    // SAFETY: NULL is rejected, not dereferenced.
    assert_eq!(
        unsafe { super::entries::C_GetFunctionList(null_mut()) },
        CKR_ARGUMENTS_BAD
    );
    let (n2, n3) = super::lists::FUNCTION_COUNTS;
    assert_eq!((n2, n3), (68, 92));
    let word = std::mem::size_of::<usize>();
    assert_eq!(std::mem::size_of::<CK_FUNCTION_LIST>(), word + n2 * word);
    assert_eq!(
        std::mem::size_of::<CK_FUNCTION_LIST_3_0>(),
        word + n3 * word
    );
    let check_all_set = |p: *const u8, n: usize| {
        // SAFETY: p is a function list of n pointers after the (padded) version.
        let ptrs = unsafe { std::slice::from_raw_parts(p.add(word).cast::<usize>(), n) };
        assert!(ptrs.iter().all(|x| *x != 0), "a NULL function pointer");
    };
    check_all_set((f as *const CK_FUNCTION_LIST).cast(), n2);

    // C_GetInterfaceList: two-call protocol.
    let mut n: CK_ULONG = 0;
    // SAFETY: length query.
    assert_eq!(
        unsafe { super::entries::C_GetInterfaceList(null_mut(), &mut n) },
        CKR_OK
    );
    assert_eq!(n, 2);
    let mut ifaces = [CK_INTERFACE::default(); 2];
    let mut short: CK_ULONG = 1;
    // SAFETY: a buffer of 1 interface, announced as 1.
    assert_eq!(
        unsafe { super::entries::C_GetInterfaceList(ifaces.as_mut_ptr(), &mut short) },
        CKR_BUFFER_TOO_SMALL
    );
    assert_eq!(short, 2);
    // SAFETY: a buffer of 2.
    assert_eq!(
        unsafe { super::entries::C_GetInterfaceList(ifaces.as_mut_ptr(), &mut n) },
        CKR_OK
    );
    for i in &ifaces {
        // SAFETY: the interface name is a static NUL-terminated string.
        let name = unsafe { std::ffi::CStr::from_ptr(i.pInterfaceName as *const _) };
        assert_eq!(name.to_str().unwrap(), "PKCS 11");
    }
    // SAFETY: NULL count pointer is rejected.
    assert_eq!(
        unsafe { super::entries::C_GetInterfaceList(null_mut(), null_mut()) },
        CKR_ARGUMENTS_BAD
    );

    let get = |name: Option<&[u8]>, version: Option<(u8, u8)>, flags: CK_FLAGS| {
        let mut p: CK_INTERFACE_PTR = null_mut();
        let mut v = version.map(|(major, minor)| CK_VERSION { major, minor });
        let vp = v.as_mut().map_or(null_mut(), |v| v as *mut CK_VERSION);
        let np = name.map_or(null_mut(), |n| n.as_ptr() as *mut CK_UTF8CHAR);
        // SAFETY: NUL-terminated name or NULL, version or NULL, valid out pointer.
        let rv = unsafe { super::entries::C_GetInterface(np, vp, &mut p, flags) };
        (rv, p)
    };
    // NULL name and version: the default, newest (3.0).
    let (rv, p) = get(None, None, 0);
    assert_eq!(rv, CKR_OK);
    // SAFETY: points to a static CK_INTERFACE.
    let iface = unsafe { &*p };
    // SAFETY: the 3.0 interface's list is a CK_FUNCTION_LIST_3_0.
    let l3 = unsafe { &*(iface.pFunctionList as *const CK_FUNCTION_LIST_3_0) };
    assert_eq!((l3.version.major, l3.version.minor), (3, 0));
    check_all_set((l3 as *const CK_FUNCTION_LIST_3_0).cast(), n3);
    let (rv, p) = get(Some(b"PKCS 11\0"), Some((2, 40)), 0);
    assert_eq!(rv, CKR_OK);
    // SAFETY: as above.
    let l2 = unsafe { &*((*p).pFunctionList as *const CK_FUNCTION_LIST) };
    assert_eq!((l2.version.major, l2.version.minor), (2, 40));
    assert!(std::ptr::eq(l2, f));
    assert_eq!(get(Some(b"PKCS 11\0"), None, 0).0, CKR_OK);
    assert_eq!(get(Some(b"Vendor\0"), None, 0).0, CKR_ARGUMENTS_BAD);
    assert_eq!(get(None, Some((3, 1)), 0).0, CKR_ARGUMENTS_BAD);
    assert_eq!(
        get(None, None, CKF_INTERFACE_FORK_SAFE).0,
        CKR_ARGUMENTS_BAD
    );
    // SAFETY: NULL ppInterface is rejected.
    assert_eq!(
        unsafe { super::entries::C_GetInterface(null_mut(), null_mut(), null_mut(), 0) },
        CKR_ARGUMENTS_BAD
    );
}

unsafe extern "C" fn fake_mutex(_: CK_VOID_PTR_PTR) -> CK_RV {
    CKR_OK
}
unsafe extern "C" fn fake_mutex_op(_: CK_VOID_PTR) -> CK_RV {
    CKR_OK
}

#[test]
fn initialize_finalize_rules_and_info() {
    let _g = STATE_LOCK.lock();
    env();
    let f = list();
    let mut info = CK_INFO::default();
    // Before C_Initialize.
    // SAFETY: valid pointers throughout this test.
    unsafe {
        assert_eq!(
            f.C_GetInfo.unwrap()(&mut info),
            CKR_CRYPTOKI_NOT_INITIALIZED
        );
        assert_eq!(
            f.C_Finalize.unwrap()(null_mut()),
            CKR_CRYPTOKI_NOT_INITIALIZED
        );
        let mut n: CK_ULONG = 0;
        assert_eq!(
            f.C_GetSlotList.unwrap()(0, null_mut(), &mut n),
            CKR_CRYPTOKI_NOT_INITIALIZED
        );
        assert_eq!(
            f.C_OpenSession.unwrap()(1, CKF_SERIAL_SESSION, null_mut(), None, &mut n),
            CKR_CRYPTOKI_NOT_INITIALIZED
        );
        // Bad arguments.
        let mut partial = CK_C_INITIALIZE_ARGS {
            CreateMutex: Some(fake_mutex),
            ..Default::default()
        };
        assert_eq!(
            f.C_Initialize.unwrap()(&mut partial as *mut _ as CK_VOID_PTR),
            CKR_ARGUMENTS_BAD
        );
        let mut all = CK_C_INITIALIZE_ARGS {
            CreateMutex: Some(fake_mutex),
            DestroyMutex: Some(fake_mutex_op),
            LockMutex: Some(fake_mutex_op),
            UnlockMutex: Some(fake_mutex_op),
            ..Default::default()
        };
        assert_eq!(
            f.C_Initialize.unwrap()(&mut all as *mut _ as CK_VOID_PTR),
            CKR_CANT_LOCK
        );
        assert_eq!(init_with(Some("bogus=1")), CKR_ARGUMENTS_BAD);
        assert_eq!(
            init_with(Some("config=/nonexistent/module.toml")),
            CKR_FUNCTION_FAILED
        );
        // Application callbacks with CKF_OS_LOCKING_OK: we use the OS's.
        all.flags = CKF_OS_LOCKING_OK;
        assert_eq!(
            f.C_Initialize.unwrap()(&mut all as *mut _ as CK_VOID_PTR),
            CKR_OK
        );
        assert_eq!(
            f.C_Initialize.unwrap()(null_mut()),
            CKR_CRYPTOKI_ALREADY_INITIALIZED
        );
        assert_eq!(f.C_GetInfo.unwrap()(null_mut()), CKR_ARGUMENTS_BAD);
        assert_eq!(f.C_GetInfo.unwrap()(&mut info), CKR_OK);
        assert_eq!(
            (info.cryptokiVersion.major, info.cryptokiVersion.minor),
            (2, 40)
        );
        assert_eq!(text(&info.manufacturerID), "Keyward");
        assert_eq!(text(&info.libraryDescription), "Keyward PKCS#11 module");
        assert_eq!(info.flags, 0);
        assert_eq!(info.manufacturerID.len(), 32);
        assert_eq!(f.C_Finalize.unwrap()(1 as CK_VOID_PTR), CKR_ARGUMENTS_BAD);
        assert_eq!(f.C_Finalize.unwrap()(null_mut()), CKR_OK);
        assert_eq!(
            f.C_GetInfo.unwrap()(&mut info),
            CKR_CRYPTOKI_NOT_INITIALIZED
        );
        // NULL args initialise too; use after finalize is refused again.
        assert_eq!(f.C_Initialize.unwrap()(null_mut()), CKR_OK);
        assert_eq!(finalize(), CKR_OK);
        assert_eq!(finalize(), CKR_CRYPTOKI_NOT_INITIALIZED);
    }
}

#[test]
fn no_daemon() {
    let _g = STATE_LOCK.lock();
    env();
    let f = list();
    assert_eq!(init_with(None), CKR_OK);
    // SAFETY: valid or deliberately NULL pointers throughout.
    unsafe {
        // Two-call protocol with the two configured tokens.
        let mut n: CK_ULONG = 0;
        assert_eq!(
            f.C_GetSlotList.unwrap()(0, null_mut(), null_mut()),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(f.C_GetSlotList.unwrap()(0, null_mut(), &mut n), CKR_OK);
        assert_eq!(n, 2);
        let mut one = [0 as CK_SLOT_ID; 1];
        let mut short: CK_ULONG = 1;
        assert_eq!(
            f.C_GetSlotList.unwrap()(0, one.as_mut_ptr(), &mut short),
            CKR_BUFFER_TOO_SMALL
        );
        assert_eq!(short, 2);
        let mut expected = vec![id(RING_A), id(RING_B)];
        expected.sort_unstable();
        assert_eq!(slots(false), expected);
        // No token is present while keywardd is down.
        assert_eq!(slots(true), Vec::<CK_SLOT_ID>::new());
        for s in [id(RING_A), id(RING_B)] {
            let flags = slot_flags(s);
            assert_ne!(flags & CKF_REMOVABLE_DEVICE, 0);
            assert_eq!(flags & CKF_TOKEN_PRESENT, 0);
        }
        let mut si = CK_SLOT_INFO::default();
        assert_eq!(f.C_GetSlotInfo.unwrap()(id(RING_B), &mut si), CKR_OK);
        assert_eq!(text(&si.slotDescription), RING_B);
        assert_eq!(
            f.C_GetSlotInfo.unwrap()(12345, &mut si),
            CKR_SLOT_ID_INVALID
        );
        assert_eq!(
            f.C_GetSlotInfo.unwrap()(id(RING_A), null_mut()),
            CKR_ARGUMENTS_BAD
        );
        let mut ti = CK_TOKEN_INFO::default();
        assert_eq!(
            f.C_GetTokenInfo.unwrap()(id(RING_A), &mut ti),
            CKR_TOKEN_NOT_PRESENT
        );
        assert_eq!(
            f.C_GetTokenInfo.unwrap()(12345, &mut ti),
            CKR_SLOT_ID_INVALID
        );
        assert_eq!(
            f.C_GetMechanismList.unwrap()(id(RING_A), null_mut(), &mut n),
            CKR_TOKEN_NOT_PRESENT
        );
        // Sessions.
        assert_eq!(open(id(RING_A)), Err(CKR_TOKEN_NOT_PRESENT));
        assert_eq!(open(12345), Err(CKR_SLOT_ID_INVALID));
        let mut h: CK_SESSION_HANDLE = 0;
        assert_eq!(
            f.C_OpenSession.unwrap()(id(RING_A), CKF_SERIAL_SESSION, null_mut(), None, null_mut()),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            f.C_OpenSession.unwrap()(id(RING_A), 0, null_mut(), None, &mut h),
            CKR_SESSION_PARALLEL_NOT_SUPPORTED
        );
        assert_eq!(f.C_CloseSession.unwrap()(77), CKR_SESSION_HANDLE_INVALID);
        assert_eq!(f.C_CloseAllSessions.unwrap()(id(RING_A)), CKR_OK);
        assert_eq!(
            f.C_Login.unwrap()(77, CKU_USER, null_mut(), 0),
            CKR_SESSION_HANDLE_INVALID
        );
        assert_eq!(
            f.C_Login.unwrap()(77, CKU_USER, null_mut(), 4),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            f.C_Login.unwrap()(77, 9, null_mut(), 0),
            CKR_USER_TYPE_INVALID
        );
        let mut data = [0u8; 4];
        let mut len: CK_ULONG = 4;
        assert_eq!(
            f.C_Sign.unwrap()(77, data.as_mut_ptr(), 4, null_mut(), null_mut()),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            f.C_Sign.unwrap()(77, null_mut(), 4, null_mut(), &mut len),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            f.C_Sign.unwrap()(77, data.as_mut_ptr(), 4, null_mut(), &mut len),
            CKR_SESSION_HANDLE_INVALID
        );
        assert_eq!(
            f.C_GenerateRandom.unwrap()(77, null_mut(), 4),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            f.C_FindObjects.unwrap()(77, null_mut(), 1, &mut n),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            f.C_GetAttributeValue.unwrap()(77, 1, null_mut(), 1),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            f.C_GenerateKey.unwrap()(77, null_mut(), null_mut(), 0, &mut h),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            f.C_SeedRandom.unwrap()(77, data.as_mut_ptr(), 4),
            CKR_SESSION_HANDLE_INVALID
        );
        // Not offered.
        assert_eq!(
            f.C_InitToken.unwrap()(id(RING_A), null_mut(), 0, null_mut()),
            CKR_FUNCTION_NOT_SUPPORTED
        );
        assert_eq!(
            f.C_WaitForSlotEvent.unwrap()(0, null_mut(), null_mut()),
            CKR_FUNCTION_NOT_SUPPORTED
        );
        assert_eq!(f.C_DigestKey.unwrap()(77, 1), CKR_FUNCTION_NOT_SUPPORTED);
        assert_eq!(
            f.C_GetFunctionStatus.unwrap()(77),
            CKR_FUNCTION_NOT_PARALLEL
        );
    }
    assert_eq!(finalize(), CKR_OK);
}

#[test]
fn a_panic_is_general_error() {
    let _g = STATE_LOCK.lock();
    env();
    // Initialised first: before C_Initialize the guard answers without running the body.
    assert_eq!(init_with(None), CKR_OK);
    *PANIC_IN.lock() = Some(Func::GetInfo);
    let mut info = CK_INFO::default();
    // SAFETY: valid out pointer.
    let rv = unsafe { list().C_GetInfo.unwrap()(&mut info) };
    *PANIC_IN.lock() = None;
    assert_eq!(rv, CKR_GENERAL_ERROR);
    // And the module still works afterwards.
    // SAFETY: valid out pointer.
    assert_eq!(unsafe { list().C_GetInfo.unwrap()(&mut info) }, CKR_OK);
    assert_eq!(finalize(), CKR_OK);
}

// ---------------------------------------------------------------- against a fake keywardd

/// What the fake daemon saw.
#[derive(Default)]
struct Seen {
    logins: Vec<Option<Vec<u8>>>,
    signs: usize,
    mechanisms: Vec<keyward_wire::pkcs11::Mechanism>,
    next_session: u64,
    cancels: usize,
}

/// A fake keywardd on a Unix socket: answers the PKCS#11 requests the tests use.
struct FakeDaemon {
    path: PathBuf,
    conns: Arc<parking_lot::Mutex<Vec<UnixStream>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

fn handle(seen: &parking_lot::Mutex<Seen>, body: RequestBody) -> Result<ResponseBody, ErrorReply> {
    let RequestBody::Pkcs11(req) = body else {
        return Err(ErrorReply::new(CKR_FUNCTION_NOT_SUPPORTED));
    };
    let token = |label: &str, serial: String| TokenInfo {
        label: label.into(),
        serial,
        flags: CKF_RNG | CKF_LOGIN_REQUIRED | CKF_TOKEN_INITIALIZED | CKF_WRITE_PROTECTED,
        session_count: None,
        rw_session_count: None,
    };
    let mut s = seen.lock();
    let r = match req {
        Rq::ListSlots { configured } => {
            let mut out = vec![];
            for (ring, label) in std::iter::once((LIVE_RING.to_owned(), "live".to_owned()))
                .chain(configured.into_iter().map(|c| (c.ring, c.label)))
            {
                let (slot, serial) = ring_identity(&ring);
                out.push(SlotDescription {
                    slot,
                    ring,
                    token: token(&label, serial),
                });
            }
            Rs::Slots(out)
        }
        Rq::GetTokenInfo { slot } => Rs::TokenInfo(token(
            &format!("token {}", slot.0),
            "0011223344556677".into(),
        )),
        Rq::GetMechanismList { .. } => Rs::Mechanisms(vec![CKM_ECDSA, CKM_RSA_X_509, CKM_AES_GCM]),
        Rq::OpenSession { .. } => {
            s.next_session += 1;
            Rs::Session(SessionId(s.next_session))
        }
        Rq::CloseSession { .. } | Rq::Logout { .. } => Rs::Done,
        Rq::Login { pin, .. } => {
            let pin = pin.map(|p| p.expose_secret().to_vec());
            s.logins.push(pin.clone());
            match pin {
                Some(p) if p != GOOD_PIN => return Err(ErrorReply::new(CKR_PIN_INCORRECT)),
                _ => Rs::Done,
            }
        }
        Rq::FindObjects { .. } => {
            Rs::Objects((1..=5).map(keyward_wire::pkcs11::ObjectHandle).collect())
        }
        Rq::GetAttributeValue { types, .. } => Rs::Attributes(
            types
                .into_iter()
                .map(|t| match t {
                    CKA_LABEL => AttrResult::Value(AttrValue::Bytes(Blob::from(&b"key-1"[..]))),
                    CKA_CLASS => AttrResult::Value(AttrValue::Ulong(CKO_PRIVATE_KEY)),
                    CKA_SIGN => AttrResult::Value(AttrValue::Bool(true)),
                    CKA_VALUE => AttrResult::Sensitive,
                    _ => AttrResult::TypeInvalid,
                })
                .collect(),
        ),
        // Design §9: an encrypt-only principal's IV / counter block is keywardd's (key 77
        // answers one that fits, key 78 one that does not).
        Rq::OperationInit {
            op: keyward_wire::pkcs11::Operation::Encrypt,
            mechanism,
            key: Some(keyward_wire::pkcs11::ObjectHandle(k @ (77 | 78))),
            ..
        } => {
            let n = match (&mechanism.params, k) {
                (_, 78) => 5,
                (MechParams::Ctr(_), _) => 16,
                _ => 12,
            };
            s.mechanisms.push(mechanism);
            Rs::GeneratedIv(Blob::new(vec![0x5A; n]))
        }
        Rq::OperationCancel { .. } => {
            s.cancels += 1;
            Rs::Done
        }
        Rq::OperationInit { mechanism, key, .. } => {
            if key == Some(keyward_wire::pkcs11::ObjectHandle(99)) {
                // Design §4: a denied use is refused at *Init; this code is narrowed.
                return Err(ErrorReply::new(CKR_ACTION_PROHIBITED));
            }
            s.mechanisms.push(mechanism);
            Rs::Done
        }
        Rq::OperationOneShot { .. } => {
            s.signs += 1;
            Rs::Data(Blob::new(vec![0xAB; 64]))
        }
        Rq::Verify { signature, .. } if signature.as_slice() == [0xAB; 64] => Rs::Done,
        Rq::Verify { .. } => return Err(ErrorReply::new(CKR_SIGNATURE_INVALID)),
        Rq::GenerateRandom { len, .. } => {
            Rs::Data(Blob::new(vec![7; usize::try_from(len).unwrap()]))
        }
        _ => return Err(ErrorReply::new(CKR_FUNCTION_NOT_SUPPORTED)),
    };
    Ok(ResponseBody::Pkcs11(r))
}

impl FakeDaemon {
    fn start(path: &Path, seen: Arc<parking_lot::Mutex<Seen>>) -> FakeDaemon {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).unwrap();
        let conns = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c2, s2, stop2) = (Arc::clone(&conns), Arc::clone(&seen), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { break };
                c2.lock().push(stream.try_clone().unwrap());
                let seen = Arc::clone(&s2);
                thread::spawn(move || {
                    let Ok(Accepted { pending, .. }) = accept(stream) else {
                        return;
                    };
                    let Ok(mut conn) = pending.welcome(&InstanceSecret::from_bytes([3; 32])) else {
                        return;
                    };
                    let _ = conn.serve(|body| handle(&seen, body));
                });
            }
        });
        FakeDaemon {
            path: path.to_owned(),
            conns,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops accepting and cuts every connection (keywardd killed).
    fn kill(mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        for c in self.conns.lock().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn sign(h: CK_SESSION_HANDLE, out: Option<&mut [u8]>, len: &mut CK_ULONG) -> CK_RV {
    let mut data = *b"digest";
    let p = out.map_or(null_mut(), |o| o.as_mut_ptr());
    // SAFETY: data of 6 bytes; out NULL or holding *len bytes.
    unsafe { list().C_Sign.unwrap()(h, data.as_mut_ptr(), 6, p, len) }
}

fn sign_init(h: CK_SESSION_HANDLE, key: CK_OBJECT_HANDLE) -> CK_RV {
    let mut m = CK_MECHANISM {
        mechanism: CKM_ECDSA,
        pParameter: null_mut(),
        ulParameterLen: 0,
    };
    // SAFETY: a valid mechanism.
    unsafe { list().C_SignInit.unwrap()(h, &mut m, key) }
}

#[test]
fn against_a_fake_daemon() {
    let _g = STATE_LOCK.lock();
    let dir = env();
    let sock = dir.join("fake.sock");
    let seen = Arc::new(parking_lot::Mutex::new(Seen::default()));
    let daemon = FakeDaemon::start(&sock, Arc::clone(&seen));
    let f = list();
    // pReserved wins over KEYWARD_SOCKET.
    assert_eq!(
        init_with(Some(&format!("socket={}", sock.display()))),
        CKR_OK
    );
    // The daemon's ring plus the configured ones, all present.
    let mut expected = vec![id(LIVE_RING), id(RING_A), id(RING_B)];
    expected.sort_unstable();
    assert_eq!(slots(false), expected);
    assert_eq!(slots(true), expected);
    assert_ne!(slot_flags(id(LIVE_RING)) & CKF_TOKEN_PRESENT, 0);
    // SAFETY: valid pointers throughout.
    unsafe {
        let mut ti = CK_TOKEN_INFO::default();
        assert_eq!(f.C_GetTokenInfo.unwrap()(id(RING_A), &mut ti), CKR_OK);
        assert_eq!(text(&ti.label), format!("token {}", id(RING_A)));
        assert_eq!(ti.flags & CKF_WRITE_PROTECTED, 0, "never write-protected");
        assert_eq!(ti.ulSessionCount, 0);
        let mut n: CK_ULONG = 0;
        assert_eq!(
            f.C_GetMechanismList.unwrap()(id(RING_A), null_mut(), &mut n),
            CKR_OK
        );
        let mut mechs = vec![0; usize::try_from(n).unwrap()];
        assert_eq!(
            f.C_GetMechanismList.unwrap()(id(RING_A), mechs.as_mut_ptr(), &mut n),
            CKR_OK
        );
        assert_eq!(
            mechs,
            vec![CKM_ECDSA, CKM_AES_GCM],
            "CKM_RSA_X_509 is never offered"
        );
    }
    let h = open(id(RING_A)).unwrap();
    // SAFETY: valid pointers throughout.
    unsafe {
        let mut bad = *b"kwAbC123.wrong";
        assert_eq!(
            f.C_Login.unwrap()(h, CKU_USER, bad.as_mut_ptr(), 14),
            CKR_PIN_INCORRECT
        );
        let mut good = GOOD_PIN.to_vec();
        let glen = CK_ULONG::try_from(good.len()).unwrap();
        assert_eq!(
            f.C_Login.unwrap()(h, CKU_USER, good.as_mut_ptr(), glen),
            CKR_OK
        );
        assert_eq!(
            f.C_Login.unwrap()(h, CKU_USER, good.as_mut_ptr(), glen),
            CKR_USER_ALREADY_LOGGED_IN
        );
        assert_eq!(
            f.C_Login.unwrap()(h, CKU_SO, good.as_mut_ptr(), glen),
            CKR_USER_ANOTHER_ALREADY_LOGGED_IN
        );
        let mut si = CK_SESSION_INFO::default();
        assert_eq!(f.C_GetSessionInfo.unwrap()(h, &mut si), CKR_OK);
        assert_eq!(si.state, CKS_RW_USER_FUNCTIONS);
        assert_eq!(si.slotID, id(RING_A));

        // Find: paged from one answer.
        let mut cls = CKO_PRIVATE_KEY;
        let mut tmpl = [CK_ATTRIBUTE {
            type_: CKA_CLASS,
            pValue: &mut cls as *mut _ as CK_VOID_PTR,
            ulValueLen: CK_ULONG::try_from(std::mem::size_of::<CK_ULONG>()).unwrap(),
        }];
        assert_eq!(
            f.C_FindObjects.unwrap()(h, null_mut(), 0, &mut 0),
            CKR_OPERATION_NOT_INITIALIZED
        );
        assert_eq!(
            f.C_FindObjectsInit.unwrap()(h, tmpl.as_mut_ptr(), 1),
            CKR_OK
        );
        assert_eq!(
            f.C_FindObjectsInit.unwrap()(h, tmpl.as_mut_ptr(), 1),
            CKR_OPERATION_ACTIVE
        );
        let mut found = [0 as CK_OBJECT_HANDLE; 3];
        let mut count: CK_ULONG = 0;
        assert_eq!(
            f.C_FindObjects.unwrap()(h, found.as_mut_ptr(), 3, &mut count),
            CKR_OK
        );
        assert_eq!((count, found), (3, [1, 2, 3]));
        assert_eq!(
            f.C_FindObjects.unwrap()(h, found.as_mut_ptr(), 3, &mut count),
            CKR_OK
        );
        assert_eq!((count, &found[..2]), (2, &[4, 5][..]));
        assert_eq!(
            f.C_FindObjects.unwrap()(h, found.as_mut_ptr(), 3, &mut count),
            CKR_OK
        );
        assert_eq!(count, 0);
        assert_eq!(f.C_FindObjectsFinal.unwrap()(h), CKR_OK);
        assert_eq!(
            f.C_FindObjectsFinal.unwrap()(h),
            CKR_OPERATION_NOT_INITIALIZED
        );
        // A wrongly sized CK_ULONG attribute never reaches the daemon.
        tmpl[0].ulValueLen = 3;
        assert_eq!(
            f.C_FindObjectsInit.unwrap()(h, tmpl.as_mut_ptr(), 1),
            CKR_ATTRIBUTE_VALUE_INVALID
        );

        // C_GetAttributeValue: every entry processed; sensitive wins.
        let mut label = [0u8; 16];
        let mut class: CK_ULONG = 0;
        let mut attrs = [
            CK_ATTRIBUTE {
                type_: CKA_LABEL,
                pValue: null_mut(),
                ulValueLen: 0,
            },
            CK_ATTRIBUTE {
                type_: CKA_VALUE,
                pValue: null_mut(),
                ulValueLen: 0,
            },
            CK_ATTRIBUTE {
                type_: CKA_MODULUS,
                pValue: null_mut(),
                ulValueLen: 0,
            },
            CK_ATTRIBUTE {
                type_: CKA_CLASS,
                pValue: &mut class as *mut _ as CK_VOID_PTR,
                ulValueLen: CK_ULONG::try_from(std::mem::size_of::<CK_ULONG>()).unwrap(),
            },
        ];
        assert_eq!(
            f.C_GetAttributeValue.unwrap()(h, 1, attrs.as_mut_ptr(), 4),
            CKR_ATTRIBUTE_SENSITIVE
        );
        assert_eq!(attrs[0].ulValueLen, 5);
        assert_eq!(attrs[1].ulValueLen, CK_UNAVAILABLE_INFORMATION);
        assert_eq!(attrs[2].ulValueLen, CK_UNAVAILABLE_INFORMATION);
        assert_eq!(class, CKO_PRIVATE_KEY);
        attrs[0].pValue = label.as_mut_ptr() as CK_VOID_PTR;
        attrs[0].ulValueLen = 2;
        assert_eq!(
            f.C_GetAttributeValue.unwrap()(h, 1, attrs.as_mut_ptr(), 1),
            CKR_BUFFER_TOO_SMALL
        );
        assert_eq!(attrs[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
        attrs[0].ulValueLen = 16;
        assert_eq!(
            f.C_GetAttributeValue.unwrap()(h, 1, attrs.as_mut_ptr(), 1),
            CKR_OK
        );
        assert_eq!(&label[..5], b"key-1");
        assert_eq!(
            f.C_GetAttributeValue.unwrap()(h, 1, attrs[2..].as_mut_ptr(), 1),
            CKR_ATTRIBUTE_TYPE_INVALID
        );
    }

    // Sign: two-call protocol over one computation.
    assert_eq!(
        sign_init(h, 99),
        CKR_KEY_FUNCTION_NOT_PERMITTED,
        "narrowed from ACTION_PROHIBITED"
    );
    assert_eq!(sign_init(h, 1), CKR_OK);
    let mut len: CK_ULONG = 0;
    assert_eq!(sign(h, None, &mut len), CKR_OK);
    assert_eq!(len, 64);
    let mut short = [0u8; 10];
    len = 10;
    assert_eq!(sign(h, Some(&mut short), &mut len), CKR_BUFFER_TOO_SMALL);
    assert_eq!(len, 64);
    let mut sig = [0u8; 80];
    len = 80;
    assert_eq!(sign(h, Some(&mut sig), &mut len), CKR_OK);
    assert_eq!((len, &sig[..64]), (64, &[0xAB; 64][..]));
    assert_eq!(seen.lock().signs, 1, "the signature was computed once");
    // SAFETY: valid pointers.
    unsafe {
        let mut m = CK_MECHANISM {
            mechanism: CKM_ECDSA,
            pParameter: null_mut(),
            ulParameterLen: 0,
        };
        assert_eq!(f.C_VerifyInit.unwrap()(h, &mut m, 2), CKR_OK);
        let mut data = *b"digest";
        assert_eq!(
            f.C_Verify.unwrap()(h, data.as_mut_ptr(), 6, sig.as_mut_ptr(), 64),
            CKR_OK
        );
        assert_eq!(
            f.C_Verify.unwrap()(h, data.as_mut_ptr(), 6, sig.as_mut_ptr(), 63),
            CKR_SIGNATURE_INVALID
        );
        let mut rnd = [0u8; 20];
        assert_eq!(f.C_GenerateRandom.unwrap()(h, rnd.as_mut_ptr(), 20), CKR_OK);
        assert_eq!(rnd, [7; 20]);
    }

    // Both CK_GCM_PARAMS layouts reach keywardd as the same typed parameters.
    let mut iv = [1u8; 12];
    let mut aad = [2u8; 5];
    let mut with = CK_GCM_PARAMS {
        pIv: iv.as_mut_ptr(),
        ulIvLen: 12,
        ulIvBits: 96,
        pAAD: aad.as_mut_ptr(),
        ulAADLen: 5,
        ulTagBits: 128,
    };
    #[repr(C)]
    struct Without {
        iv: *mut u8,
        iv_len: CK_ULONG,
        aad: *mut u8,
        aad_len: CK_ULONG,
        tag_bits: CK_ULONG,
    }
    let mut without = Without {
        iv: iv.as_mut_ptr(),
        iv_len: 12,
        aad: aad.as_mut_ptr(),
        aad_len: 5,
        tag_bits: 128,
    };
    let gcm = |p: CK_VOID_PTR, n: usize| {
        let mut m = CK_MECHANISM {
            mechanism: CKM_AES_GCM,
            pParameter: p,
            ulParameterLen: CK_ULONG::try_from(n).unwrap(),
        };
        // SAFETY: valid mechanism and parameters.
        unsafe { f.C_EncryptInit.unwrap()(h, &mut m, 3) }
    };
    assert_eq!(
        gcm(
            &mut with as *mut _ as CK_VOID_PTR,
            std::mem::size_of::<CK_GCM_PARAMS>()
        ),
        CKR_OK
    );
    assert_eq!(
        gcm(
            &mut without as *mut _ as CK_VOID_PTR,
            std::mem::size_of::<Without>()
        ),
        CKR_OK
    );
    assert_eq!(
        gcm(&mut with as *mut _ as CK_VOID_PTR, 44),
        CKR_MECHANISM_PARAM_INVALID
    );
    assert_eq!(gcm(null_mut(), 48), CKR_MECHANISM_PARAM_INVALID);
    {
        let s = seen.lock();
        let n = s.mechanisms.len();
        let (MechParams::Gcm(a), MechParams::Gcm(b)) =
            (&s.mechanisms[n - 2].params, &s.mechanisms[n - 1].params)
        else {
            panic!("not GCM: {:?}", &s.mechanisms[n - 2..]);
        };
        assert_eq!(
            (a.iv.as_slice(), a.aad.as_slice(), a.iv_bits, a.tag_bits),
            (&[1u8; 12][..], &[2u8; 5][..], 96, 128)
        );
        assert_eq!(
            (b.iv.as_slice(), b.aad.as_slice(), b.iv_bits, b.tag_bits),
            (&[1u8; 12][..], &[2u8; 5][..], 96, 128)
        );
        assert_ne!(a.layout, b.layout);
    }

    // keywardd killed under the live instance.
    daemon.kill();
    len = 0;
    assert_eq!(
        sign_init(h, 1),
        CKR_DEVICE_REMOVED,
        "the call that finds the connection dead"
    );
    assert_eq!(
        sign(h, None, &mut len),
        CKR_SESSION_HANDLE_INVALID,
        "its sessions are gone"
    );
    assert_eq!(open(id(RING_A)), Err(CKR_TOKEN_NOT_PRESENT));
    assert_eq!(slot_flags(id(RING_A)) & CKF_TOKEN_PRESENT, 0);
    // Restarted: a new session reconnects and logs in again with the kept PIN.
    let logins_before = seen.lock().logins.len();
    let daemon = FakeDaemon::start(&sock, Arc::clone(&seen));
    let h2 = open(id(RING_A)).unwrap();
    assert_ne!(h2, h);
    {
        let s = seen.lock();
        assert_eq!(s.logins.len(), logins_before + 1);
        assert_eq!(s.logins.last().unwrap().as_deref(), Some(GOOD_PIN));
    }
    assert_eq!(sign_init(h2, 1), CKR_OK);
    // SAFETY: valid pointers.
    unsafe {
        let mut si = CK_SESSION_INFO::default();
        assert_eq!(f.C_GetSessionInfo.unwrap()(h2, &mut si), CKR_OK);
        assert_eq!(si.state, CKS_RW_USER_FUNCTIONS);
        assert_eq!(f.C_Logout.unwrap()(h2), CKR_OK);
        assert_eq!(f.C_Logout.unwrap()(h2), CKR_USER_NOT_LOGGED_IN);
        assert_eq!(f.C_GetSessionInfo.unwrap()(h2, &mut si), CKR_OK);
        assert_eq!(si.state, CKS_RW_PUBLIC_SESSION);
        assert_eq!(f.C_CloseSession.unwrap()(h2), CKR_OK);
        assert_eq!(f.C_CloseSession.unwrap()(h2), CKR_SESSION_HANDLE_INVALID);
    }
    assert_eq!(finalize(), CKR_OK);
    daemon.kill();
}

#[test]
fn a_forked_child_must_initialise_again() {
    let _g = STATE_LOCK.lock();
    env();
    let f = list();
    assert_eq!(init_with(None), CKR_OK);
    let mut info = CK_INFO::default();
    // SAFETY: fork in a test process; the child only calls the module and _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: valid pointers; _exit ends the child without running the test harness.
        unsafe {
            let mut n: CK_ULONG = 0;
            let code = if f.C_GetInfo.unwrap()(&mut info) != CKR_CRYPTOKI_NOT_INITIALIZED {
                1
            } else if f.C_GetSlotList.unwrap()(0, null_mut(), &mut n)
                != CKR_CRYPTOKI_NOT_INITIALIZED
            {
                2
            } else if f.C_Initialize.unwrap()(null_mut()) != CKR_OK {
                3
            } else if f.C_GetSlotList.unwrap()(0, null_mut(), &mut n) != CKR_OK || n != 2 {
                4
            } else if f.C_Finalize.unwrap()(null_mut()) != CKR_OK {
                5
            } else {
                0
            };
            libc::_exit(code);
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "child did not exit: {status}");
    assert_eq!(libc::WEXITSTATUS(status), 0, "child step failed");
    // The parent is unaffected.
    // SAFETY: valid pointer.
    assert_eq!(unsafe { f.C_GetInfo.unwrap()(&mut info) }, CKR_OK);
    assert_eq!(finalize(), CKR_OK);
}

/// Runs `f` in a forked child and returns its exit status (`Err(signal)` if it was killed):
/// a crash of the module fails the test instead of killing the test harness.
fn in_child(f: impl FnOnce() -> i32) -> Result<i32, i32> {
    // SAFETY: fork in a test process; the child only calls the module and _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = f();
        // SAFETY: _exit ends the child without running the test harness.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    if libc::WIFSIGNALED(status) {
        Err(libc::WTERMSIG(status))
    } else {
        Ok(libc::WEXITSTATUS(status))
    }
}

/// `C_Initialize` with a `pReserved` that is no string (issue 14, bug 1): 1, a pointer to an
/// unmapped page, a `PROT_NONE` page and a string running into one: `CKR_ARGUMENTS_BAD`, no
/// crash; the module is not initialised after any of them.
#[test]
fn initialize_with_an_unreadable_p_reserved_is_arguments_bad() {
    let _g = STATE_LOCK.lock();
    env();
    let page = 4096usize;
    // Two pages: the first readable with a string without a NUL up to its end, the second
    // PROT_NONE.
    // SAFETY: anonymous private mappings of our own; nothing else refers to them.
    let base = unsafe {
        let base = libc::mmap(
            null_mut(),
            2 * page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(base, libc::MAP_FAILED);
        std::ptr::write_bytes(base.cast::<u8>(), b'a', page);
        assert_eq!(
            libc::mprotect(base.cast::<u8>().add(page).cast(), page, libc::PROT_NONE),
            0
        );
        base.cast::<u8>()
    };
    // NULL here: a page mapped and unmapped in the child, whose only thread maps nothing
    // before the call (unmapped in this multi-threaded harness, another test's thread could
    // map the address again, as a zeroed page: an empty settings string).
    let bad: [(&str, *mut u8); 5] = [
        ("1", std::ptr::dangling_mut::<u8>()),
        ("an unmapped page", null_mut()),
        (
            "a kernel address",
            std::ptr::without_provenance_mut(0xffff_ffff_ffff_0000),
        ),
        // SAFETY: within our two-page mapping.
        ("a PROT_NONE page", unsafe { base.add(page) }),
        ("a string running into a PROT_NONE page", base),
    ];
    let f = list();
    for (what, p) in bad {
        let got = in_child(|| {
            let p = if p.is_null() {
                // SAFETY: an anonymous mapping of our own, unmapped at once; only its
                // address is used (by the module, which must not fault on it).
                unsafe {
                    let gone = libc::mmap(
                        null_mut(),
                        page,
                        libc::PROT_READ,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    );
                    if gone == libc::MAP_FAILED || libc::munmap(gone, page) != 0 {
                        return 3;
                    }
                    gone.cast::<u8>()
                }
            } else {
                p
            };
            let mut args = CK_C_INITIALIZE_ARGS {
                flags: CKF_OS_LOCKING_OK,
                pReserved: p.cast(),
                ..Default::default()
            };
            // SAFETY: valid CK_C_INITIALIZE_ARGS; pReserved is what is under test.
            let rv = unsafe { f.C_Initialize.unwrap()(&mut args as *mut _ as CK_VOID_PTR) };
            let mut info = CK_INFO::default();
            // SAFETY: valid out pointer.
            let after = unsafe { f.C_GetInfo.unwrap()(&mut info) };
            match (rv, after) {
                (CKR_ARGUMENTS_BAD, CKR_CRYPTOKI_NOT_INITIALIZED) => 0,
                (CKR_ARGUMENTS_BAD, _) => 2,
                _ => 1,
            }
        });
        assert_eq!(
            got,
            Ok(0),
            "pReserved = {what}: Ok(1) wrong code, Ok(2) initialised anyway, Ok(3) no page to \
             unmap, Err(n) killed by signal n"
        );
    }
    // SAFETY: our own mapping.
    unsafe { libc::munmap(base.cast(), 2 * page) };
    // A pReserved that is a string but not key=value settings.
    assert_eq!(init_with(Some("not settings")), CKR_ARGUMENTS_BAD);
    assert_eq!(init_with(Some("\u{1}\u{2}")), CKR_ARGUMENTS_BAD);
}

#[test]
fn a_generated_iv_is_written_into_the_clients_structure() {
    let _g = STATE_LOCK.lock();
    let dir = env();
    let sock = dir.join("fake-iv.sock");
    let seen = Arc::new(parking_lot::Mutex::new(Seen::default()));
    let daemon = FakeDaemon::start(&sock, Arc::clone(&seen));
    let f = list();
    assert_eq!(
        init_with(Some(&format!("socket={}", sock.display()))),
        CKR_OK
    );
    let h = open(id(LIVE_RING)).unwrap();
    let encrypt_init = |m: &mut CK_MECHANISM, key| {
        // SAFETY: a valid mechanism whose parameter outlives the call.
        unsafe { f.C_EncryptInit.unwrap()(h, m, key) }
    };
    // The 48-byte CK_GCM_PARAMS: pIv gets keywardd's IV, nothing else changes.
    let mut iv = [0u8; 12];
    let mut aad = *b"aad";
    let mut g48 = CK_GCM_PARAMS {
        pIv: iv.as_mut_ptr(),
        ulIvLen: 12,
        ulIvBits: 96,
        pAAD: aad.as_mut_ptr(),
        ulAADLen: 3,
        ulTagBits: 128,
    };
    let mut m = CK_MECHANISM {
        mechanism: CKM_AES_GCM,
        pParameter: (&mut g48 as *mut CK_GCM_PARAMS).cast(),
        ulParameterLen: std::mem::size_of::<CK_GCM_PARAMS>() as CK_ULONG,
    };
    assert_eq!(encrypt_init(&mut m, 77), CKR_OK);
    assert_eq!(iv, [0x5A; 12]);
    assert_eq!((g48.ulIvLen, g48.ulIvBits, g48.ulTagBits), (12, 96, 128));
    assert_eq!(&aad, b"aad");
    // The 40-byte layout (no ulIvBits).
    #[repr(C)]
    struct Gcm40 {
        p_iv: *mut u8,
        ul_iv_len: CK_ULONG,
        p_aad: *mut u8,
        ul_aad_len: CK_ULONG,
        ul_tag_bits: CK_ULONG,
    }
    let mut iv40 = [0u8; 12];
    let mut g40 = Gcm40 {
        p_iv: iv40.as_mut_ptr(),
        ul_iv_len: 12,
        p_aad: null_mut(),
        ul_aad_len: 0,
        ul_tag_bits: 96,
    };
    let mut m = CK_MECHANISM {
        mechanism: CKM_AES_GCM,
        pParameter: (&mut g40 as *mut Gcm40).cast(),
        ulParameterLen: std::mem::size_of::<Gcm40>() as CK_ULONG,
    };
    let h2 = open(id(LIVE_RING)).unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { f.C_EncryptInit.unwrap()(h2, &mut m, 77) }, CKR_OK);
    assert_eq!(iv40, [0x5A; 12]);
    assert_eq!((g40.ul_iv_len, g40.ul_tag_bits), (12, 96));
    // CK_AES_CTR_PARAMS: cb gets the counter block.
    let mut c = CK_AES_CTR_PARAMS {
        ulCounterBits: 32,
        cb: [0; 16],
    };
    let mut m = CK_MECHANISM {
        mechanism: CKM_AES_CTR,
        pParameter: (&mut c as *mut CK_AES_CTR_PARAMS).cast(),
        ulParameterLen: std::mem::size_of::<CK_AES_CTR_PARAMS>() as CK_ULONG,
    };
    let h3 = open(id(LIVE_RING)).unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { f.C_EncryptInit.unwrap()(h3, &mut m, 77) }, CKR_OK);
    assert_eq!((c.ulCounterBits, c.cb), (32, [0x5A; 16]));
    // An IV that does not fit the client's field is not written; the operation keywardd
    // started is cancelled.
    let mut iv = [0u8; 12];
    g48.pIv = iv.as_mut_ptr();
    let mut m = CK_MECHANISM {
        mechanism: CKM_AES_GCM,
        pParameter: (&mut g48 as *mut CK_GCM_PARAMS).cast(),
        ulParameterLen: std::mem::size_of::<CK_GCM_PARAMS>() as CK_ULONG,
    };
    let h4 = open(id(LIVE_RING)).unwrap();
    let before = seen.lock().cancels;
    // SAFETY: as above.
    assert_eq!(
        unsafe { f.C_EncryptInit.unwrap()(h4, &mut m, 78) },
        CKR_DEVICE_ERROR
    );
    assert_eq!(iv, [0; 12], "nothing written");
    assert_eq!(
        seen.lock().cancels,
        before + 1,
        "the operation was cancelled"
    );
    assert_eq!(finalize(), CKR_OK);
    daemon.kill();
}

/// The 3.0 function list, through `C_GetInterface` (NULL name and version: the default).
fn list_300() -> &'static CK_FUNCTION_LIST_3_0 {
    let mut p: CK_INTERFACE_PTR = null_mut();
    // SAFETY: a valid out pointer; NULL name and version ask for the default interface.
    assert_eq!(
        unsafe { super::entries::C_GetInterface(null_mut(), null_mut(), &mut p, 0) },
        CKR_OK
    );
    // SAFETY: the interface and its list are immutable statics.
    unsafe { &*((*p).pFunctionList as *const CK_FUNCTION_LIST_3_0) }
}

/// Issue 14 bug 4: before `C_Initialize` every function but `C_Initialize`,
/// `C_GetFunctionList`, `C_GetInterfaceList` and `C_GetInterface` answers
/// `CKR_CRYPTOKI_NOT_INITIALIZED` before it touches its arguments: garbage mechanisms, pointers
/// to nothing and NULLs neither fault nor get another code (run in a child: a fault would kill
/// it, not the harness).
#[test]
fn before_c_initialize_nothing_touches_its_arguments() {
    let _g = STATE_LOCK.lock();
    env();
    let got = in_child(|| {
        let f = list();
        let g = list_300();
        let bad: *mut u8 = std::ptr::dangling_mut::<u8>();
        let mut garbage = CK_MECHANISM {
            mechanism: 0xFFFF_FFFF,
            pParameter: bad.cast(),
            ulParameterLen: 4096,
        };
        let m: CK_MECHANISM_PTR = &mut garbage;
        let bm: CK_MECHANISM_PTR = bad.cast();
        let ba: CK_ATTRIBUTE_PTR = bad.cast();
        let bu: CK_ULONG_PTR = bad.cast();
        // SAFETY: the module must not read any of these pointers before C_Initialize; that is
        // what is tested.
        let rvs: Vec<(&str, CK_RV)> = unsafe {
            vec![
                ("C_EncryptInit garbage", f.C_EncryptInit.unwrap()(1, m, 1)),
                ("C_EncryptInit dangling", f.C_EncryptInit.unwrap()(1, bm, 1)),
                ("C_DecryptInit", f.C_DecryptInit.unwrap()(1, bm, 1)),
                ("C_SignInit", f.C_SignInit.unwrap()(1, bm, 1)),
                ("C_VerifyInit 3.0", g.C_VerifyInit.unwrap()(1, bm, 1)),
                ("C_DigestInit", f.C_DigestInit.unwrap()(1, bm)),
                (
                    "C_GetSlotList",
                    f.C_GetSlotList.unwrap()(0, bad.cast(), null_mut()),
                ),
                ("C_GetInfo", f.C_GetInfo.unwrap()(bad.cast())),
                (
                    "C_GenerateKey",
                    f.C_GenerateKey.unwrap()(1, null_mut(), ba, 9, null_mut()),
                ),
                ("C_FindObjectsInit", f.C_FindObjectsInit.unwrap()(1, ba, 9)),
                ("C_Encrypt", f.C_Encrypt.unwrap()(1, bad, 99, bad, bu)),
                ("C_InitToken", f.C_InitToken.unwrap()(1, bad, 9, bad)),
                ("C_InitPIN", f.C_InitPIN.unwrap()(1, bad, 9)),
                ("C_SetPIN", f.C_SetPIN.unwrap()(1, bad, 9, bad, 9)),
                (
                    "C_WaitForSlotEvent",
                    f.C_WaitForSlotEvent.unwrap()(0, bad.cast(), null_mut()),
                ),
                ("C_Finalize", f.C_Finalize.unwrap()(bad.cast())),
                (
                    "C_MessageEncryptInit",
                    g.C_MessageEncryptInit.unwrap()(1, bm, 1),
                ),
                ("C_LoginUser", g.C_LoginUser.unwrap()(1, 1, bad, 9, bad, 9)),
            ]
        };
        let wrong: Vec<String> = rvs
            .iter()
            .filter(|(_, rv)| *rv != CKR_CRYPTOKI_NOT_INITIALIZED)
            .map(|(n, rv)| format!("{n}: {rv:#x}"))
            .collect();
        if wrong.is_empty() {
            0
        } else {
            println!("not CKR_CRYPTOKI_NOT_INITIALIZED: {}", wrong.join(", "));
            1
        }
    });
    assert_eq!(
        got,
        Ok(0),
        "Ok(1): a wrong code (printed above); Err(n): killed by signal n"
    );
}

/// Issue 14 bug 5: a NULL `pMechanism` in `*Init` cancels the operation only in PKCS#11 3.0.
/// Through `C_GetFunctionList`'s 2.40 list and the exported symbols it is
/// `CKR_ARGUMENTS_BAD`; through `C_GetInterface`'s 3.0 list it cancels. `C_GetInfo` reports
/// the version of the list it was called through.
#[test]
fn a_null_mechanism_cancels_only_through_the_3_0_interface() {
    let _g = STATE_LOCK.lock();
    let dir = env();
    let sock = dir.join("fake-null-mech.sock");
    let seen = Arc::new(parking_lot::Mutex::new(Seen::default()));
    let daemon = FakeDaemon::start(&sock, Arc::clone(&seen));
    let (f, g) = (list(), list_300());
    assert_eq!(
        init_with(Some(&format!("socket={}", sock.display()))),
        CKR_OK
    );
    let h = open(id(LIVE_RING)).unwrap();
    // SAFETY: valid session handle; NULL mechanisms are what is tested.
    unsafe {
        for (name, rv) in [
            ("C_EncryptInit", f.C_EncryptInit.unwrap()(h, null_mut(), 1)),
            ("C_DecryptInit", f.C_DecryptInit.unwrap()(h, null_mut(), 1)),
            ("C_DigestInit", f.C_DigestInit.unwrap()(h, null_mut())),
            ("C_SignInit", f.C_SignInit.unwrap()(h, null_mut(), 1)),
            ("C_VerifyInit", f.C_VerifyInit.unwrap()(h, null_mut(), 1)),
            (
                "exported C_SignInit",
                super::entries::C_SignInit(h, null_mut(), 1),
            ),
            (
                "exported C_EncryptInit",
                super::entries::C_EncryptInit(h, null_mut(), 1),
            ),
        ] {
            assert_eq!(rv, CKR_ARGUMENTS_BAD, "2.40: {name}");
        }
        let before = seen.lock().cancels;
        assert_eq!(sign_init(h, 1), CKR_OK);
        for (name, rv) in [
            ("C_SignInit", g.C_SignInit.unwrap()(h, null_mut(), 1)),
            ("C_EncryptInit", g.C_EncryptInit.unwrap()(h, null_mut(), 1)),
            ("C_DecryptInit", g.C_DecryptInit.unwrap()(h, null_mut(), 1)),
            ("C_DigestInit", g.C_DigestInit.unwrap()(h, null_mut())),
            ("C_VerifyInit", g.C_VerifyInit.unwrap()(h, null_mut(), 1)),
        ] {
            assert_eq!(rv, CKR_OK, "3.0: {name} with NULL cancels");
        }
        assert!(seen.lock().cancels > before, "no cancel reached keywardd");
        let mut info = CK_INFO::default();
        assert_eq!(f.C_GetInfo.unwrap()(&mut info), CKR_OK);
        assert_eq!(
            (info.cryptokiVersion.major, info.cryptokiVersion.minor),
            (2, 40)
        );
        assert_eq!(g.C_GetInfo.unwrap()(&mut info), CKR_OK);
        assert_eq!(
            (info.cryptokiVersion.major, info.cryptokiVersion.minor),
            (3, 0)
        );
    }
    assert_eq!(finalize(), CKR_OK);
    daemon.kill();
}
