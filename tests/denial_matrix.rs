//! The denial matrix (issue 6 acceptance 1 and 2), through the built
//! `libkeyward_pkcs11.so` against a real keywardd and SoftHSM2: every predefined role ×
//! every gated call of design §4 on keys made through the module (an RSA pair with sign,
//! verify, encrypt and decrypt flags and an AES key), so that a denial can only come from
//! policy. The expected result of each cell comes from the role's permission set
//! (`keyward::policy::roles::predefined()`) and design §4's table: allowed, its denial code,
//! or invisible (not found / handle invalid). Every role is bound at organisation, folder,
//! project, key-ring and key level, and through a group (bound on the ring): 19 × 6 runs.
//! One service account per (role, level),
//! its key given as the PIN, all in one keywardd and one module instance (C_Logout /
//! C_Login between runs); the keys are made by another instance (a child process), so the
//! creator exception never applies. The six Thalassa policies (`kms:ReadAccess` ...) are
//! bound by their own names.
//!
//! The rows of export, BYOK and certificates too, on objects the maker child made:
//! - `C_WrapKey` (AES-KWP) of an exportable AES key (`CKA_EXTRACTABLE`; the maker holds
//!   exportKeyMaterial on the ring) with an AES key made with `CKA_WRAP`: exportKeyMaterial
//!   on the key, useToEncrypt on the wrapping key (`CKR_KEY_UNEXTRACTABLE` /
//!   `CKR_WRAPPING_KEY_HANDLE_INVALID`); also with a second wrapping key and of a second
//!   exportable key, bound like the AES key (not at key level: there the wrapping key or the
//!   key is not seen, `CKR_WRAPPING_KEY_HANDLE_INVALID` / `CKR_KEY_HANDLE_INVALID`).
//! - `C_UnwrapKey` (`CKM_RSA_AES_KEY_WRAP`) with an import job's key (`import-job-<id>`, seen
//!   with kms.importJobs.get on the ring) of one blob made once by `keywardctl key
//!   wrap-for-import`: into an existing key (a new version: useToImport suffices; every
//!   allowed run adds one) and into a new key named per run (also cryptoKeys.create):
//!   `CKR_UNWRAPPING_KEY_HANDLE_INVALID` / `CKR_TOKEN_WRITE_PROTECTED`.
//!   The job's key is found and read only with kms.importJobs.get on the ring.
//! - `C_CreateObject` of a certificate (cryptoKeys.create on the ring, one label per run), and
//!   `CKA_VALUE` of the certificates of the RSA key and of an EC key bound like the AES key
//!   (viewPublicKey or a use permission, else `CKR_ATTRIBUTE_SENSITIVE`; not found where the
//!   key is not seen).
//!
//! HMAC keys and AES key unwrap (issue 14 items 8 and 9), on keys the maker made and bound
//! like the AES key (not seen at key level):
//! - `C_SignInit` / `C_VerifyInit` with a generic secret (`m-mac`): `CKM_SHA256_HMAC` and
//!   `CKM_SHA256_HMAC_GENERAL`: useToSign / useToVerify; a truncated (16-byte) `_GENERAL` MAC
//!   is verified only with useToSign too (design §9: a short-MAC verify is a forging oracle),
//!   else `CKR_KEY_FUNCTION_NOT_PERMITTED`; a full-length one with useToVerify alone.
//! - `C_UnwrapKey` (`CKM_AES_KEY_WRAP_PAD`) with an AES key made with `CKA_UNWRAP`
//!   (`m-kwk`) of a blob the maker wrapped with it, into a session object: useToDecrypt on
//!   `m-kwk`, else (or where it is not seen) `CKR_UNWRAPPING_KEY_HANDLE_INVALID`.
//!
//! The AES key's encryption cells follow design §9 ("Crypto semantics") too: a principal
//! holding useToEncrypt but not useToDecrypt gets `CKR_MECHANISM_PARAM_INVALID` for a chosen
//! GCM IV, keywardd's IV written into its zero `pIv` (GCM) or `cb` (CTR), and
//! `CKR_KEY_FUNCTION_NOT_PERMITTED` for ECB, CBC and CBC-PAD; one holding useToDecrypt but
//! not useToEncrypt gets `CKR_KEY_FUNCTION_NOT_PERMITTED` for CTR decryption; one holding
//! both keeps its IVs (the `IvWritten` cells).
//!
//! Every call's audit record (design §6) is checked afterwards with `keywardctl audit query`;
//! a refusal on an invisible key answers "not found" to the caller and is recorded as a denial
//! ("not visible to the caller") all the same.
//!
//! Last, every audit record of the run, normalised, must be the golden file
//! `tests/golden/denial_matrix.audit` (issue 16 acceptance 6; a diff is printed). After a
//! deliberate change of audit records, regenerate it with
//! `KEYWARD_BLESS=1 cargo test --test denial_matrix denial_matrix_through_the_module` and
//! commit it with the change (`tests/common/golden.rs`).

mod common;

use common::byok::{openssl, s as path_str};
use common::daemon::Env;
use common::module::*;
use common::ADMIN;
use cryptoki::context::Pkcs11;
use cryptoki::error::{Error, Rv as CkRv, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectHandle;
use cryptoki::object::{
    Attribute, AttributeInfo, AttributeType, CertificateType, KeyType, ObjectClass,
};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use keyward::policy::permission::{PermSet, Permission as P};
use keyward::policy::roles::predefined;
use std::collections::BTreeSet;
use std::time::Instant;

const RING: &str = "projects/payments/keyRings/web";
const RSA_LABEL: &[u8] = b"m-rsa";
const AES_LABEL: &[u8] = b"m-aes";
/// The exportable key (bound at key level too) and one the key-level runs do not see.
const EXP_LABEL: &[u8] = b"m-exp";
const EXP2_LABEL: &[u8] = b"m-exp2";
/// The wrapping key (`CKA_WRAP`; bound at key level too) and one the key-level runs do not see.
const KEK_LABEL: &[u8] = b"m-kek";
const KEK2_LABEL: &[u8] = b"m-kek2";
/// The existing key the runs import into (made by keywardctl), and the import job.
const IMP_KEY: &str = "m-imp";
const JOB: &str = "mj";
/// An EC key bound like m-aes (not at key level). The maker makes a certificate of it and of
/// the RSA key, labelled `<key label>-cert`.
const EC_LABEL: &[u8] = b"m-ec";
/// The DER OID of P-256 (`CKA_EC_PARAMS`).
const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const CKA_TOKEN: Ulong = 0x1;
const CKA_LABEL: Ulong = 0x3;
const CKA_KEY_TYPE: Ulong = 0x100;
const CKO_SECRET_KEY: Ulong = 4;
const CKK_AES: Ulong = 0x1F;
const CKM_SHA_1: Ulong = 0x220;
const CKG_MGF1_SHA1: Ulong = 1;
const DATA: &[u8] = b"the denial matrix";
const IV: [u8; 12] = [7u8; 12];
/// A chosen 16-byte IV (CBC) or counter block (CTR).
const IV16: [u8; 16] = [7u8; 16];
const CKM_AES_ECB: Ulong = 0x1081;
const CKM_AES_CBC: Ulong = 0x1082;
const CKM_AES_CBC_PAD: Ulong = 0x1085;
const CKM_SHA256_HMAC_GENERAL: Ulong = 0x252;
/// The HMAC key and the unwrapping key (both bound like m-aes).
const MAC_LABEL: &[u8] = b"m-mac";
const KWK_LABEL: &[u8] = b"m-kwk";

/// Cells where keywardd differs from design §4, found by this test; they are reported
/// and not asserted (role, level, call).
const KNOWN: &[(&str, &str, &str)] = &[];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Org,
    Folder,
    Project,
    Ring,
    Key,
    Group,
}

impl Level {
    fn tag(self) -> &'static str {
        match self {
            Level::Org => "org",
            Level::Folder => "folder",
            Level::Project => "project",
            Level::Ring => "ring",
            Level::Key => "key",
            Level::Group => "group",
        }
    }
}

struct Run {
    role: &'static str,
    /// The role bound (its name).
    bind_role: String,
    perms: PermSet,
    level: Level,
    sa: String,
    key: String,
}

fn slot_id(ring: &str) -> u64 {
    keyward_wire::pkcs11::ring_identity(ring).0 .0 as u64
}

fn slot_of(p11: &Pkcs11, ring: &str) -> Slot {
    let all = p11.get_all_slots().unwrap();
    *all.iter()
        .find(|s| s.id() == slot_id(ring))
        .unwrap_or_else(|| panic!("no slot for {ring} in {all:?}"))
}

/// The outcome of one call: OK or its CK_RV.
type Outcome = Result<(), RvError>;

fn outcome<T>(r: cryptoki::error::Result<T>) -> Outcome {
    match r {
        Ok(_) => Ok(()),
        Err(Error::Pkcs11(rv, _)) => Err(rv),
        Err(e) => panic!("not a CK_RV: {e:?}"),
    }
}

fn labelled(s: &Session, class: ObjectClass, label: &[u8]) -> ObjectHandle {
    let v = s
        .find_objects(&[Attribute::Class(class), Attribute::Label(label.to_vec())])
        .unwrap();
    assert_eq!(v.len(), 1, "one {class:?} labelled {label:?}: {v:?}");
    v[0]
}

fn gcm(iv: &mut [u8; 12]) -> Mechanism<'_> {
    Mechanism::AesGcm(GcmParams::new(iv, b"", 128.into()).unwrap())
}

fn aes_template(label: &[u8]) -> Vec<Attribute> {
    vec![
        Attribute::Token(true),
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32.into()),
        Attribute::Label(label.to_vec()),
        Attribute::Id(label.to_vec()),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
    ]
}

fn cert_template(der: &[u8], label: &[u8], id: &[u8]) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::CERTIFICATE),
        Attribute::CertificateType(CertificateType::X_509),
        Attribute::Token(true),
        Attribute::Label(label.to_vec()),
        Attribute::Id(id.to_vec()),
        Attribute::Value(der.to_vec()),
    ]
}

/// A `C_UnwrapKey` template: an AES key of [`RING`] whose key id is `key_id`.
fn unwrap_template(key_id: &str) -> Vec<(Ulong, Vec<u8>)> {
    vec![
        (0, ulong_bytes(CKO_SECRET_KEY)),
        (CKA_KEY_TYPE, ulong_bytes(CKK_AES)),
        (CKA_TOKEN, vec![1]),
        (CKA_LABEL, key_id.as_bytes().to_vec()),
    ]
}

/// The full names of the keys of [`RING`].
fn key_names(env: &Env) -> BTreeSet<String> {
    fn walk(v: &serde_json::Value, out: &mut BTreeSet<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    if let (true, Some(s)) = (k == "name", x.as_str()) {
                        if s.contains("/cryptoKeys/") && !s.contains("/cryptoKeyVersions/") {
                            out.insert(s.to_owned());
                        }
                    }
                    walk(x, out);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let out = env.ctl(&["--json", "key", "list", "--keyring", RING]);
    out.ok();
    let mut names = BTreeSet::new();
    for l in out.stdout.lines().filter(|l| !l.trim().is_empty()) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(l) {
            walk(&v, &mut names);
        }
    }
    if names.is_empty() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&out.stdout) {
            walk(&v, &mut names);
        }
    }
    names
}

/// Runs the maker child (another module instance) making `what`; returns the key names it
/// added to the ring.
fn make(env: &Env, settings: &Settings, maker: &str, what: &str) -> Vec<String> {
    let before = key_names(env);
    let out = run_child(
        "denial_matrix_through_the_module",
        "maker",
        settings,
        &[("KEYWARD_MATRIX_MAKE", what), ("KEYWARD_MATRIX_PIN", maker)],
    );
    assert_eq!(out.code, 0, "maker child: {out:#?}");
    assert_eq!(out.value("made"), "ok");
    key_names(env).difference(&before).cloned().collect()
}

/// The maker child: logs in with its key and makes the RSA pair (`rsa:LABEL`), AES keys
/// (`aes:L1,L2,...`; `kek:...` with CKA_WRAP, `exp:...` with CKA_EXTRACTABLE), an EC P-256
/// pair (`ec:LABEL`) or a key's certificate (`cert:LABEL-cert:DER_FILE`).
fn maker_child() {
    let settings = child_settings();
    let what = std::env::var("KEYWARD_MATRIX_MAKE").unwrap();
    let pin = std::env::var("KEYWARD_MATRIX_PIN").unwrap();
    let p11 = cryptoki(&settings);
    let slot = slot_of(&p11, RING);
    let s = p11.open_rw_session(slot).unwrap();
    s.login(UserType::User, Some(&AuthPin::from(pin))).unwrap();
    if let Some(label) = what.strip_prefix("rsa:") {
        let label = label.as_bytes().to_vec();
        let public = [
            Attribute::Token(true),
            Attribute::ModulusBits(2048.into()),
            Attribute::PublicExponent(vec![1, 0, 1]),
            Attribute::Verify(true),
            Attribute::Encrypt(true),
            Attribute::Label(label.clone()),
            Attribute::Id(label.clone()),
        ];
        let private = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sign(true),
            Attribute::Decrypt(true),
            Attribute::Label(label.clone()),
            Attribute::Id(label),
        ];
        s.generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)
            .unwrap();
    } else if let Some(label) = what.strip_prefix("ec:") {
        let label = label.as_bytes().to_vec();
        let public = [
            Attribute::Token(true),
            Attribute::EcParams(P256.to_vec()),
            Attribute::Verify(true),
            Attribute::Label(label.clone()),
            Attribute::Id(label.clone()),
        ];
        let private = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sign(true),
            Attribute::Label(label.clone()),
            Attribute::Id(label),
        ];
        s.generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
            .unwrap();
    } else if let Some(label) = what.strip_prefix("mac:") {
        let t = [
            Attribute::Token(true),
            Attribute::ValueLen(32.into()),
            Attribute::Sign(true),
            Attribute::Verify(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(label.as_bytes().to_vec()),
        ];
        s.generate_key(&Mechanism::GenericSecretKeyGen, &t).unwrap();
    } else if let Some(rest) = what.strip_prefix("kwk:") {
        // An AES key with CKA_WRAP and CKA_UNWRAP, and m-exp wrapped with it into a file:
        // `kwk:LABEL:FILE`.
        let (label, path) = rest.split_once(':').unwrap();
        let mut t = aes_template(label.as_bytes());
        t.extend([Attribute::Wrap(true), Attribute::Unwrap(true)]);
        let kwk = s.generate_key(&Mechanism::AesKeyGen, &t).unwrap();
        let exp = labelled(&s, ObjectClass::SECRET_KEY, EXP_LABEL);
        let blob = s.wrap_key(&Mechanism::AesKeyWrapPad, kwk, exp).unwrap();
        std::fs::write(path, blob).unwrap();
    } else if let Some(rest) = what.strip_prefix("cert:") {
        // A key's certificate (its SPKI pairs it with the key): `cert:LABEL:DER_FILE`.
        let (label, path) = rest.split_once(':').unwrap();
        let der = std::fs::read(path).unwrap();
        let id = label.strip_suffix("-cert").unwrap();
        s.create_object(&cert_template(&der, label.as_bytes(), id.as_bytes()))
            .unwrap();
    } else {
        // aes: plain, kek: with CKA_WRAP, exp: with CKA_EXTRACTABLE (needs exportKeyMaterial).
        let (kind, labels) = what.split_once(':').unwrap();
        let extra = match kind {
            "aes" => None,
            "kek" => Some(Attribute::Wrap(true)),
            "exp" => Some(Attribute::Extractable(true)),
            other => panic!("maker: {other}?"),
        };
        for l in labels.split(',') {
            let mut t = aes_template(l.as_bytes());
            t.extend(extra.clone());
            s.generate_key(&Mechanism::AesKeyGen, &t).unwrap();
        }
    }
    report("made", "ok");
}

/// The least-privilege child: its only identity is the credentials of its settings.
fn least_privilege_child() {
    let settings = child_settings();
    let p11 = cryptoki(&settings);
    let slots = p11.get_slots_with_token().unwrap();
    report(
        "slots",
        slots
            .iter()
            .map(|s| s.id().to_string())
            .collect::<Vec<_>>()
            .join(","),
    );
    let s = p11.open_rw_session(slots[0]).unwrap();
    s.login(UserType::User, Some(&AuthPin::from(String::new())))
        .unwrap();
    let all = s.find_objects(&[]).unwrap();
    let mut ids = BTreeSet::new();
    for o in &all {
        let a = s.get_attributes(*o, &[AttributeType::Id]).unwrap();
        if let Some(Attribute::Id(id)) = a.first() {
            ids.insert(String::from_utf8_lossy(id).into_owned());
        }
    }
    report("objects", all.len());
    report("ids", ids.into_iter().collect::<Vec<_>>().join(","));
    let private = labelled(&s, ObjectClass::PRIVATE_KEY, RSA_LABEL);
    let sig = s.sign(&Mechanism::Sha256RsaPkcs, private, DATA).unwrap();
    report("signature", sig.len());
}

#[derive(Default)]
struct Tally {
    cells: usize,
    /// (run, audited action, expected outcome) of every asserted call design §6 records.
    audited: Vec<(usize, &'static str, Outcome)>,
    run: usize,
    mismatches: Vec<String>,
    known: Vec<String>,
    /// How many cells of each call expected each outcome (printed: the matrix's shape).
    shape: std::collections::BTreeMap<String, std::collections::BTreeMap<String, usize>>,
}

impl Tally {
    fn check(&mut self, run: &Run, call: &str, expected: Option<Outcome>, got: Outcome) {
        let Some(expected) = expected else { return };
        self.cells += 1;
        let shown = match expected {
            Ok(()) => "OK".to_string(),
            Err(rv) => format!("{rv:?}"),
        };
        *self
            .shape
            .entry(call.to_string())
            .or_default()
            .entry(shown)
            .or_default() += 1;
        let action = call.split(' ').next().unwrap();
        if action != "FindObjects" && action != "GenerateRandom" && action != "IvWritten" {
            let action = audit_action(action);
            self.audited.push((self.run, action, expected));
        }
        if expected == got {
            return;
        }
        let line = format!(
            "{} at {} ({}): {call}: expected {expected:?}, got {got:?}",
            run.role,
            run.level.tag(),
            run.sa
        );
        if KNOWN
            .iter()
            .any(|(r, l, c)| *r == run.role && *l == run.level.tag() && *c == call)
        {
            self.known.push(line);
        } else {
            self.mismatches.push(line);
        }
    }
}

/// The audit action of a call of the matrix.
fn audit_action(call: &str) -> &'static str {
    match call {
        "GetAttributeValue" => "C_GetAttributeValue",
        "EncryptInit" => "C_EncryptInit",
        "DecryptInit" => "C_DecryptInit",
        "SignInit" => "C_SignInit",
        "VerifyInit" => "C_VerifyInit",
        "GenerateKey" => "C_GenerateKey",
        "GenerateKeyPair" => "C_GenerateKeyPair",
        "SetAttributeValue" => "C_SetAttributeValue",
        "CopyObject" => "C_CopyObject",
        "DestroyObject" => "C_DestroyObject",
        "WrapKey" => "C_WrapKey",
        "UnwrapKey" => "C_UnwrapKey",
        "CreateObject" => "C_CreateObject",
        other => panic!("no audit action for {other}"),
    }
}

fn is_invisible(rv: RvError) -> bool {
    matches!(rv, RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid)
}

/// The CK_RV of the codes the matrix expects.
fn ck_rv(rv: RvError) -> u64 {
    match rv {
        RvError::AttributeSensitive => 0x11,
        RvError::ActionProhibited => 0x1B,
        RvError::KeyHandleInvalid => 0x60,
        RvError::KeyFunctionNotPermitted => 0x68,
        RvError::KeyUnextractable => 0x6A,
        RvError::MechanismParamInvalid => 0x71,
        RvError::ObjectHandleInvalid => 0x82,
        RvError::TokenWriteProtected => 0xE2,
        RvError::UnwrappingKeyHandleInvalid => 0xF0,
        RvError::WrappingKeyHandleInvalid => 0x113,
        other => panic!("no CK_RV for {other:?}"),
    }
}

/// Expected outcome of C_WrapKey (design §4; the order keywardd checks in: the wrapping key
/// seen, the key seen, useToEncrypt on the wrapping key, exportKeyMaterial on the key).
fn wrap_gate(
    (wrapping_vis, wrapping_perms): (bool, PermSet),
    (key_vis, key_perms): (bool, PermSet),
) -> Option<Outcome> {
    Some(if !wrapping_vis {
        Err(RvError::WrappingKeyHandleInvalid)
    } else if !key_vis {
        Err(RvError::KeyHandleInvalid)
    } else if !wrapping_perms.contains(P::UseToEncrypt) {
        Err(RvError::WrappingKeyHandleInvalid)
    } else if !key_perms.contains(P::ExportKeyMaterial) {
        Err(RvError::KeyUnextractable)
    } else {
        Ok(())
    })
}

/// Expected outcome of C_UnwrapKey with the import job's key (design §4, §5): the job seen
/// (kms.importJobs.get on the ring) and useToImport, else
/// CKR_UNWRAPPING_KEY_HANDLE_INVALID; for a new key also cryptoKeys.create, else
/// CKR_TOKEN_WRITE_PROTECTED.
fn unwrap_gate(ring_perms: PermSet, new_key: bool) -> Option<Outcome> {
    Some(
        if !ring_perms.contains(P::ImportJobsGet) || !ring_perms.contains(P::ImportJobsUseToImport)
        {
            Err(RvError::UnwrappingKeyHandleInvalid)
        } else if new_key && !ring_perms.contains(P::CryptoKeysCreate) {
            Err(RvError::TokenWriteProtected)
        } else {
            Ok(())
        },
    )
}

fn has_use(p: PermSet) -> bool {
    [
        P::UseToEncrypt,
        P::UseToDecrypt,
        P::UseToSign,
        P::UseToVerify,
    ]
    .iter()
    .any(|x| p.contains(*x))
}

/// An encryption on the AES key whose outcome design §9 decides beyond the use gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AesEncrypt {
    /// AES-GCM with an IV the caller chose ([`IV`]).
    ChosenIv,
    /// AES-GCM with a zero IV (keywardd's to fill for an encrypt-only principal).
    ZeroIv,
    /// AES-CTR with a zero counter block (likewise).
    ZeroCtr,
    /// AES-ECB, AES-CBC, AES-CBC-PAD: a block-encryption oracle with a known IV.
    BlockMode,
}

/// Expected outcome of C_EncryptInit on the AES key (design §4, then §9): the use gate; a
/// principal without useToDecrypt never chooses the IV (`CKR_MECHANISM_PARAM_INVALID`) and
/// is not offered ECB or CBC (`CKR_KEY_FUNCTION_NOT_PERMITTED`).
fn aes_encrypt_gate(visible: bool, perms: PermSet, case: AesEncrypt) -> Option<Outcome> {
    let g = gate(visible, perms, P::UseToEncrypt)?;
    if g.is_err() || perms.contains(P::UseToDecrypt) {
        return Some(g);
    }
    Some(match case {
        AesEncrypt::ChosenIv => Err(RvError::MechanismParamInvalid),
        AesEncrypt::ZeroIv | AesEncrypt::ZeroCtr => Ok(()),
        AesEncrypt::BlockMode => Err(RvError::KeyFunctionNotPermitted),
    })
}

/// Expected outcome of C_DecryptInit with AES-CTR (design §9): the use gate; a principal
/// without useToEncrypt is not offered a keystream mode (`CKR_KEY_FUNCTION_NOT_PERMITTED`).
fn aes_ctr_decrypt_gate(visible: bool, perms: PermSet) -> Option<Outcome> {
    let g = gate(visible, perms, P::UseToDecrypt)?;
    Some(if g.is_ok() && !perms.contains(P::UseToEncrypt) {
        Err(RvError::KeyFunctionNotPermitted)
    } else {
        g
    })
}

/// Expected outcome of a use gate: invisible, allowed or CKR_KEY_FUNCTION_NOT_PERMITTED.
fn gate(visible: bool, perms: PermSet, needed: P) -> Option<Outcome> {
    Some(if !visible {
        Err(RvError::KeyHandleInvalid)
    } else if perms.contains(needed) {
        Ok(())
    } else {
        Err(RvError::KeyFunctionNotPermitted)
    })
}

/// Handles the matrix uses (found by a service account that sees everything).
struct Handles {
    rsa_priv: ObjectHandle,
    rsa_pub: ObjectHandle,
    aes: ObjectHandle,
    victims: Vec<ObjectHandle>,
    signature: Vec<u8>,
    aes_ct: Vec<u8>,
    rsa_ct: Vec<u8>,
    exp: ObjectHandle,
    exp2: ObjectHandle,
    kek: ObjectHandle,
    kek2: ObjectHandle,
    /// The import job's private key (`import-job-mj`).
    job: ObjectHandle,
    /// AES-256 material wrapped for the job (`keywardctl key wrap-for-import`).
    wrapped: Vec<u8>,
    /// The RSA key's certificate (the maker's), and a CA certificate (DER) runs create.
    cert: ObjectHandle,
    ca_der: Vec<u8>,
    /// The EC key's certificate (its key is bound like m-aes).
    ec_cert: ObjectHandle,
    /// The HMAC key, the unwrapping key and a blob wrapped with it (AES-KWP).
    mac: ObjectHandle,
    kwk: ObjectHandle,
    kwk_blob: Vec<u8>,
}

#[allow(clippy::too_many_arguments)]
fn one_run(
    p11: &Pkcs11,
    raw: &Raw,
    slot: Slot,
    anchor: &Session,
    h: &Handles,
    i: usize,
    run: &Run,
    t: &mut Tally,
) {
    anchor
        .login(UserType::User, Some(&AuthPin::from(run.key.clone())))
        .unwrap_or_else(|e| panic!("login as {}: {e}", run.sa));
    let kms = run.perms.iter().any(|p| p.is_kms_resource());
    // Key-level runs are bound on the RSA key, the run's victim, the exportable key and the
    // wrapping key only.
    let rsa_vis = kms;
    let aes_vis = kms && run.level != Level::Key;
    let victim_vis = kms;
    let aes_perms = if aes_vis { run.perms } else { PermSet::EMPTY };
    let ring_perms = if run.level == Level::Key {
        PermSet::EMPTY
    } else {
        run.perms
    };
    let victim = h.victims[i];

    // C_FindObjects: visibility.
    let found: Vec<ObjectHandle> = anchor.find_objects(&[]).unwrap();
    for (what, o, vis) in [
        ("FindObjects rsa private", h.rsa_priv, rsa_vis),
        ("FindObjects rsa public", h.rsa_pub, rsa_vis),
        ("FindObjects aes", h.aes, aes_vis),
        ("FindObjects victim", victim, victim_vis),
        ("FindObjects exportable", h.exp, kms),
        ("FindObjects wrapping", h.kek, kms),
        (
            "FindObjects import job",
            h.job,
            ring_perms.contains(P::ImportJobsGet),
        ),
        ("FindObjects certificate", h.cert, rsa_vis),
        ("FindObjects certificate of m-ec", h.ec_cert, aes_vis),
    ] {
        let got = if found.contains(&o) {
            Ok(())
        } else {
            Err(RvError::ObjectHandleInvalid)
        };
        let expected = if vis {
            Ok(())
        } else {
            Err(RvError::ObjectHandleInvalid)
        };
        t.check(run, what, Some(expected), got);
    }

    // C_GetAttributeValue of a public value.
    let expected = if !rsa_vis {
        Err(RvError::ObjectHandleInvalid)
    } else if run.perms.contains(P::ViewPublicKey) || has_use(run.perms) {
        Ok(())
    } else {
        Err(RvError::AttributeSensitive)
    };
    for (what, o) in [
        ("GetAttributeValue CKA_MODULUS public", h.rsa_pub),
        ("GetAttributeValue CKA_MODULUS private", h.rsa_priv),
    ] {
        let got = match anchor.get_attribute_info(o, &[AttributeType::Modulus]) {
            Ok(v) => match v[0] {
                AttributeInfo::Available(_) => Ok(()),
                AttributeInfo::Sensitive => Err(RvError::AttributeSensitive),
                ref other => panic!("{what}: {other:?}"),
            },
            Err(e) => outcome::<()>(Err(e)),
        };
        t.check(run, what, Some(expected), got);
    }

    // The use gates, each in a session of its own (an Init that works leaves an operation).
    let fresh = || p11.open_rw_session(slot).unwrap();
    let mut iv = IV;
    let got = outcome(fresh().encrypt_init(&gcm(&mut iv), h.aes));
    t.check(
        run,
        "EncryptInit aes",
        aes_encrypt_gate(aes_vis, aes_perms, AesEncrypt::ChosenIv),
        got,
    );
    // Design §9 through raw calls (cryptoki has no CTR structure and reads no pIv back), each
    // Init in a session of its own.
    let raw_fresh = |f: &dyn Fn(Ulong) -> (Ulong, Vec<u8>)| {
        let (rv, rs) = raw.open_session(slot.id() as Ulong);
        assert_eq!(rv, CKR_OK);
        let r = f(rs);
        assert_eq!(raw.close_session(rs), CKR_OK);
        r
    };
    let raw_outcome = |rv: Ulong| match CkRv::from(rv) {
        CkRv::Ok => Ok(()),
        CkRv::Error(e) => Err(e),
    };
    let aes_h = h.aes.handle() as Ulong;
    let zero_gcm = Mech::Gcm48 {
        iv: vec![0; 12],
        aad: vec![],
        tag_bits: 128,
    };
    let zero_ctr = Mech::Ctr {
        counter_bits: 128,
        cb: [0; 16],
    };
    let encrypt_only = aes_perms.contains(P::UseToEncrypt) && !aes_perms.contains(P::UseToDecrypt);
    for (what, mech, case, zero_len) in [
        ("EncryptInit aes zero IV", &zero_gcm, AesEncrypt::ZeroIv, 12),
        (
            "EncryptInit aes CTR zero counter",
            &zero_ctr,
            AesEncrypt::ZeroCtr,
            16,
        ),
    ] {
        let (rv, back) = raw_fresh(&|rs| raw.encrypt_init_iv(rs, mech, aes_h));
        let got = raw_outcome(rv);
        let expected = aes_encrypt_gate(aes_vis, aes_perms, case);
        t.check(run, what, expected, got);
        // Where it worked: keywardd's IV was written back to an encrypt-only principal, and
        // a principal holding both kept its own (zero) one.
        if got.is_ok() {
            let written = back != vec![0u8; zero_len];
            let ok = if written == encrypt_only {
                Ok(())
            } else {
                Err(RvError::GeneralError)
            };
            t.check(run, &format!("IvWritten {what}"), Some(Ok(())), ok);
        }
    }
    for (what, mech) in [
        ("EncryptInit aes ECB", Mech::Plain(CKM_AES_ECB)),
        (
            "EncryptInit aes CBC",
            Mech::Bytes(CKM_AES_CBC, IV16.to_vec()),
        ),
        (
            "EncryptInit aes CBC-PAD",
            Mech::Bytes(CKM_AES_CBC_PAD, IV16.to_vec()),
        ),
    ] {
        let (rv, _) = raw_fresh(&|rs| raw.encrypt_init_iv(rs, &mech, aes_h));
        t.check(
            run,
            what,
            aes_encrypt_gate(aes_vis, aes_perms, AesEncrypt::BlockMode),
            raw_outcome(rv),
        );
    }
    let (rv, _) = raw_fresh(&|rs| {
        let ctr = Mech::Ctr {
            counter_bits: 128,
            cb: IV16,
        };
        (raw.decrypt_init(rs, &ctr, aes_h), vec![])
    });
    t.check(
        run,
        "DecryptInit aes CTR",
        aes_ctr_decrypt_gate(aes_vis, aes_perms),
        raw_outcome(rv),
    );
    let got = outcome(fresh().encrypt_init(&Mechanism::RsaPkcs, h.rsa_pub));
    t.check(
        run,
        "EncryptInit rsa",
        gate(rsa_vis, run.perms, P::UseToEncrypt),
        got,
    );
    let got = outcome(fresh().decrypt_init(&gcm(&mut iv), h.aes));
    t.check(
        run,
        "DecryptInit aes",
        gate(aes_vis, aes_perms, P::UseToDecrypt),
        got,
    );
    let got = outcome(fresh().decrypt_init(&Mechanism::RsaPkcs, h.rsa_priv));
    t.check(
        run,
        "DecryptInit rsa",
        gate(rsa_vis, run.perms, P::UseToDecrypt),
        got,
    );
    let got = outcome(fresh().sign_init(&Mechanism::Sha256RsaPkcs, h.rsa_priv));
    t.check(
        run,
        "SignInit rsa",
        gate(rsa_vis, run.perms, P::UseToSign),
        got,
    );
    let got = outcome(fresh().verify_init(&Mechanism::Sha256RsaPkcs, h.rsa_pub));
    t.check(
        run,
        "VerifyInit rsa",
        gate(rsa_vis, run.perms, P::UseToVerify),
        got,
    );

    // Whole operations where allowed: the Init's permission carries the operation through.
    if rsa_vis && run.perms.contains(P::UseToSign) {
        let sig = anchor
            .sign(&Mechanism::Sha256RsaPkcs, h.rsa_priv, DATA)
            .unwrap();
        assert_eq!(sig, h.signature, "PKCS#1 v1.5 is deterministic");
    }
    if rsa_vis && run.perms.contains(P::UseToVerify) {
        anchor
            .verify(&Mechanism::Sha256RsaPkcs, h.rsa_pub, DATA, &h.signature)
            .unwrap();
    }
    if aes_vis && aes_perms.contains(P::UseToDecrypt) {
        let mut iv = IV;
        assert_eq!(
            anchor.decrypt(&gcm(&mut iv), h.aes, &h.aes_ct).unwrap(),
            DATA
        );
    }
    if rsa_vis && run.perms.contains(P::UseToDecrypt) {
        assert_eq!(
            anchor
                .decrypt(&Mechanism::RsaPkcs, h.rsa_priv, &h.rsa_ct)
                .unwrap(),
            DATA
        );
    }

    // HMAC (m-mac, bound like m-aes): the use gates; a truncated MAC's verify needs
    // useToSign too (design §9).
    let mac_h = h.mac.handle() as Ulong;
    let short = Mech::Bytes(CKM_SHA256_HMAC_GENERAL, ulong_bytes(16));
    let full = Mech::Bytes(CKM_SHA256_HMAC_GENERAL, ulong_bytes(32));
    let plain = Mech::Plain(0x251);
    let sign_gate = gate(aes_vis, aes_perms, P::UseToSign);
    let verify_gate = gate(aes_vis, aes_perms, P::UseToVerify);
    let short_verify_gate = verify_gate.map(|g| {
        if g.is_ok() && !aes_perms.contains(P::UseToSign) {
            Err(RvError::KeyFunctionNotPermitted)
        } else {
            g
        }
    });
    for (what, mech, verify, expected) in [
        ("SignInit mac", &plain, false, sign_gate),
        ("SignInit mac general 16", &short, false, sign_gate),
        ("VerifyInit mac", &plain, true, verify_gate),
        ("VerifyInit mac general 32", &full, true, verify_gate),
        ("VerifyInit mac general 16", &short, true, short_verify_gate),
    ] {
        let (rv, _) = raw_fresh(&|rs| {
            let rv = if verify {
                raw.verify_init(rs, mech, mac_h)
            } else {
                raw.sign_init(rs, Some(mech), mac_h)
            };
            (rv, vec![])
        });
        t.check(run, what, expected, raw_outcome(rv));
    }

    // C_UnwrapKey with m-kwk (bound like m-aes) into a session object: useToDecrypt.
    let expected = Some(if aes_vis && aes_perms.contains(P::UseToDecrypt) {
        Ok(())
    } else {
        Err(RvError::UnwrappingKeyHandleInvalid)
    });
    let got = outcome(anchor.unwrap_key(
        &Mechanism::AesKeyWrapPad,
        h.kwk,
        &h.kwk_blob,
        &[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
        ],
    ));
    t.check(
        run,
        "UnwrapKey with kwk into a session object",
        expected,
        got,
    );

    // C_GenerateKey(Pair): kms.cryptoKeys.create on the ring.
    let expected = if ring_perms.contains(P::CryptoKeysCreate) {
        Ok(())
    } else {
        Err(RvError::TokenWriteProtected)
    };
    let label = format!("gen-{i}");
    let got = outcome(anchor.generate_key(&Mechanism::AesKeyGen, &aes_template(label.as_bytes())));
    t.check(run, "GenerateKey", Some(expected), got);
    let ec_pub = [
        Attribute::Token(true),
        Attribute::EcParams(P256.to_vec()),
        Attribute::Verify(true),
        Attribute::Label(format!("genp-{i}").into_bytes()),
    ];
    let ec_priv = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sign(true),
        Attribute::Label(format!("genp-{i}").into_bytes()),
    ];
    let got = outcome(anchor.generate_key_pair(&Mechanism::EccKeyPairGen, &ec_pub, &ec_priv));
    t.check(run, "GenerateKeyPair", Some(expected), got);

    // C_SetAttributeValue (the same label: nothing changes if allowed) and C_CopyObject.
    let expected = if !rsa_vis {
        Err(RvError::ObjectHandleInvalid)
    } else if run.perms.contains(P::CryptoKeysUpdate) {
        Ok(())
    } else {
        Err(RvError::ActionProhibited)
    };
    let got =
        outcome(anchor.update_attributes(h.rsa_priv, &[Attribute::Label(RSA_LABEL.to_vec())]));
    t.check(run, "SetAttributeValue", Some(expected), got);
    let expected = if rsa_vis {
        Err(RvError::ActionProhibited)
    } else {
        Err(RvError::ObjectHandleInvalid)
    };
    let got = outcome(anchor.copy_object(h.rsa_priv, &[]));
    t.check(run, "CopyObject", Some(expected), got);

    // The same object calls on the AES key, invisible at key level (a handle this instance
    // got from another principal): not found, whatever the role. Destroying it is tried
    // only where it is invisible (it is shared by every run).
    let invisible_or = |allowed: Outcome| {
        Some(if aes_vis {
            allowed
        } else {
            Err(RvError::ObjectHandleInvalid)
        })
    };
    let got = outcome(anchor.get_attributes(h.aes, &[AttributeType::Label]));
    t.check(
        run,
        "GetAttributeValue CKA_LABEL aes",
        invisible_or(Ok(())),
        got,
    );
    let set_allowed = if aes_perms.contains(P::CryptoKeysUpdate) {
        Ok(())
    } else {
        Err(RvError::ActionProhibited)
    };
    let got = outcome(anchor.update_attributes(h.aes, &[Attribute::Label(AES_LABEL.to_vec())]));
    t.check(run, "SetAttributeValue aes", invisible_or(set_allowed), got);
    let got = outcome(anchor.copy_object(h.aes, &[]));
    t.check(
        run,
        "CopyObject aes",
        invisible_or(Err(RvError::ActionProhibited)),
        got,
    );
    if !aes_vis {
        let got = outcome(anchor.destroy_object(h.aes));
        t.check(run, "DestroyObject aes", invisible_or(Ok(())), got);
    }

    // C_DestroyObject: the run's own victim key.
    let expected = if !victim_vis {
        Err(RvError::ObjectHandleInvalid)
    } else if run.perms.contains(P::VersionsDestroy) {
        Ok(())
    } else {
        Err(RvError::ActionProhibited)
    };
    let got = outcome(anchor.destroy_object(victim));
    t.check(run, "DestroyObject", Some(expected), got);

    // C_WrapKey (AES-KWP): exportKeyMaterial on the key, useToEncrypt on the wrapping key.
    // m-exp2 and m-kek2 are bound like m-aes (not at key level).
    let mine = (kms, run.perms);
    let like_aes = (aes_vis, aes_perms);
    for (what, wrapping, key, expected) in [
        ("WrapKey exp", h.kek, h.exp, wrap_gate(mine, mine)),
        (
            "WrapKey exp with kek2",
            h.kek2,
            h.exp,
            wrap_gate(like_aes, mine),
        ),
        ("WrapKey exp2", h.kek, h.exp2, wrap_gate(mine, like_aes)),
    ] {
        let got = outcome(anchor.wrap_key(&Mechanism::AesKeyWrapPad, wrapping, key));
        t.check(run, what, expected, got);
    }

    // C_UnwrapKey with the import job's key (a handle the seer found): into the existing
    // key (a new version) and into a new key of the run's own.
    let (rv, rs) = raw.open_session(slot.id() as Ulong);
    assert_eq!(rv, CKR_OK);
    let rsa_aes = Mech::RsaAesKeyWrap {
        aes_bits: 256,
        hash: CKM_SHA_1,
        mgf: CKG_MGF1_SHA1,
    };
    let new_key = format!("imp-{i}");
    for (what, target, new) in [
        ("UnwrapKey into an existing key", IMP_KEY, false),
        ("UnwrapKey into a new key", new_key.as_str(), true),
    ] {
        let (rv, _) = raw.unwrap_key(
            rs,
            &rsa_aes,
            h.job.handle() as Ulong,
            &h.wrapped,
            &unwrap_template(target),
        );
        let got = match CkRv::from(rv) {
            CkRv::Ok => Ok(()),
            CkRv::Error(e) => Err(e),
        };
        t.check(run, what, unwrap_gate(ring_perms, new), got);
    }
    assert_eq!(raw.close_session(rs), CKR_OK);

    // C_CreateObject of a certificate: kms.cryptoKeys.create on the ring.
    let expected = if ring_perms.contains(P::CryptoKeysCreate) {
        Ok(())
    } else {
        Err(RvError::TokenWriteProtected)
    };
    let label = format!("cert-{i}");
    let got = outcome(anchor.create_object(&cert_template(&h.ca_der, label.as_bytes(), b"")));
    t.check(run, "CreateObject certificate", Some(expected), got);

    // CKA_VALUE of the RSA key's certificate: viewPublicKey or a use permission.
    let expected = if !rsa_vis {
        Err(RvError::ObjectHandleInvalid)
    } else if run.perms.contains(P::ViewPublicKey) || has_use(run.perms) {
        Ok(())
    } else {
        Err(RvError::AttributeSensitive)
    };
    let got = match anchor.get_attribute_info(h.cert, &[AttributeType::Value]) {
        Ok(v) => match v[0] {
            AttributeInfo::Available(_) => Ok(()),
            AttributeInfo::Sensitive => Err(RvError::AttributeSensitive),
            ref other => panic!("certificate CKA_VALUE: {other:?}"),
        },
        Err(e) => outcome::<()>(Err(e)),
    };
    t.check(
        run,
        "GetAttributeValue CKA_VALUE certificate",
        Some(expected),
        got,
    );
    // The same of the EC key's certificate, not seen at key level.
    let expected = if !aes_vis {
        Err(RvError::ObjectHandleInvalid)
    } else if aes_perms.contains(P::ViewPublicKey) || has_use(aes_perms) {
        Ok(())
    } else {
        Err(RvError::AttributeSensitive)
    };
    let got = match anchor.get_attribute_info(h.ec_cert, &[AttributeType::Value]) {
        Ok(v) => match v[0] {
            AttributeInfo::Available(_) => Ok(()),
            AttributeInfo::Sensitive => Err(RvError::AttributeSensitive),
            ref other => panic!("certificate CKA_VALUE: {other:?}"),
        },
        Err(e) => outcome::<()>(Err(e)),
    };
    t.check(
        run,
        "GetAttributeValue CKA_VALUE certificate of m-ec",
        Some(expected),
        got,
    );
    // The import job's key: seen with kms.importJobs.get on the ring (its label is no
    // secret to whoever sees it).
    let expected = if ring_perms.contains(P::ImportJobsGet) {
        Ok(())
    } else {
        Err(RvError::ObjectHandleInvalid)
    };
    let got = outcome(anchor.get_attributes(h.job, &[AttributeType::Label]));
    t.check(
        run,
        "GetAttributeValue CKA_LABEL import job",
        Some(expected),
        got,
    );

    // C_GenerateRandom: the token is seen.
    let got = outcome(anchor.generate_random_vec(16));
    t.check(run, "GenerateRandom", kms.then_some(Ok(())), got);

    anchor.logout().unwrap();
}

#[test]
fn denial_matrix_through_the_module() {
    match child_role().as_deref() {
        Some("maker") => return maker_child(),
        Some("least") => return least_privilege_child(),
        _ => {}
    }
    let t0 = Instant::now();
    let excl = exclusive();
    let mut env = Env::new();
    let admin = |args: &[&str]| {
        let mut all = vec!["--as", ADMIN];
        all.extend_from_slice(args);
        env.offline(&all).ok();
    };
    admin(&["folder", "create", "--parent", "organizations/acme", "eng"]);
    admin(&["project", "create", "--parent", "folders/eng", "payments"]);
    let maker = env.service_account_offline("maker");
    let seer = env.service_account_offline("seer");
    let solo = env.service_account_offline("solo");

    // One service account per (role, level).
    let roles = predefined();
    let mut runs = vec![];
    for level in [
        Level::Ring,
        Level::Group,
        Level::Org,
        Level::Folder,
        Level::Project,
        Level::Key,
    ] {
        for r in &roles {
            // Every role by its own name, the Thalassa policies (`kms:ReadAccess` ...) too.
            let bind_role = r.name.to_string();
            let id = format!("m{}-{}", runs.len(), level.tag());
            let key = env.service_account_offline(&id);
            runs.push(Run {
                role: r.name,
                bind_role,
                perms: r.permissions,
                level,
                sa: format!("serviceAccount:{id}@payments"),
                key,
            });
        }
    }
    let expected_roles = 19;
    assert_eq!(
        roles.len(),
        expected_roles,
        "{:?}",
        roles.iter().map(|r| r.name).collect::<Vec<_>>()
    );
    for (i, run) in runs.iter().enumerate() {
        let bind = |resource: &str, member: &str| {
            admin(&[
                "iam",
                "bind",
                "--resource",
                resource,
                "--role",
                &run.bind_role,
                "--member",
                member,
            ])
        };
        match run.level {
            Level::Org => bind("organizations/acme", &run.sa),
            Level::Folder => bind("folders/eng", &run.sa),
            Level::Project => bind("projects/payments", &run.sa),
            Level::Group => {
                let g = format!("grp-{i}");
                admin(&["group", "create", &g]);
                admin(&["group", "add-member", &g, &run.sa]);
            }
            Level::Ring | Level::Key => {}
        }
    }
    eprintln!("offline set-up: {:?}", t0.elapsed());
    env.start();
    env.ctl(&["keyring", "create", "--parent", "projects/payments", "web"])
        .ok();
    env.bind(RING, "roles/kms.admin", "serviceAccount:maker@payments");
    // An exportable key (CKA_EXTRACTABLE) needs exportKeyMaterial on the ring.
    env.bind(RING, "kms:FullAccess", "serviceAccount:maker@payments");
    env.bind(
        RING,
        "roles/kms.cryptoOperator",
        "serviceAccount:seer@payments",
    );
    env.bind(RING, "roles/kms.viewer", "serviceAccount:seer@payments");
    for (i, run) in runs.iter().enumerate() {
        match run.level {
            Level::Ring => env.bind(RING, &run.bind_role, &run.sa),
            Level::Group => env.bind(RING, &run.bind_role, &format!("group:grp-{i}")),
            _ => {}
        }
    }
    let dir = env.dir().to_path_buf();
    let settings = Settings::new(&env.client_socket, &dir.join("module.toml")).tokens(RING);
    let rsa_key = make(&env, &settings, &maker, "rsa:m-rsa");
    assert_eq!(rsa_key.len(), 1, "{rsa_key:?}");
    let aes_key = make(&env, &settings, &maker, "aes:m-aes");
    assert_eq!(aes_key.len(), 1, "{aes_key:?}");
    let exp_key = make(&env, &settings, &maker, "exp:m-exp");
    assert_eq!(exp_key.len(), 1, "{exp_key:?}");
    let kek_key = make(&env, &settings, &maker, "kek:m-kek");
    assert_eq!(kek_key.len(), 1, "{kek_key:?}");
    assert_eq!(make(&env, &settings, &maker, "exp:m-exp2").len(), 1);
    assert_eq!(make(&env, &settings, &maker, "kek:m-kek2").len(), 1);
    assert_eq!(make(&env, &settings, &maker, "ec:m-ec").len(), 1);
    assert_eq!(make(&env, &settings, &maker, "mac:m-mac").len(), 1);
    let kwk_file = dir.join("kwk.blob");
    let kwk_what = format!("kwk:m-kwk:{}", path_str(&kwk_file));
    assert_eq!(make(&env, &settings, &maker, &kwk_what).len(), 1);
    let kwk_blob = std::fs::read(&kwk_file).unwrap();
    // BYOK: an existing key to import into, the import job, one blob for every run.
    env.ctl(&[
        "key",
        "create",
        "--keyring",
        RING,
        "--purpose",
        "ENCRYPT_DECRYPT",
        "--algorithm",
        "AES_256_GCM",
        IMP_KEY,
    ])
    .ok();
    env.ctl(&[
        "import-job",
        "create",
        "--keyring",
        RING,
        "--method",
        "rsa-oaep-3072-sha1-aes-256",
        "--id",
        JOB,
    ])
    .ok();
    let material = dir.join("material.key");
    openssl(&["rand", "-out", path_str(&material), "32"]);
    let wrapped_file = dir.join("material.wrapped");
    env.ctl(&[
        "key",
        "wrap-for-import",
        "--import-job",
        &format!("{RING}/importJobs/{JOB}"),
        "--key-material-file",
        path_str(&material),
        "--out",
        path_str(&wrapped_file),
    ])
    .ok();
    let wrapped = std::fs::read(&wrapped_file).unwrap();
    let bulk: Vec<String> = (0..runs.len())
        .filter(|i| runs[*i].level != Level::Key)
        .map(|i| format!("victim-{i}"))
        .collect();
    make(&env, &settings, &maker, &format!("aes:{}", bulk.join(",")));
    for (i, run) in runs.iter().enumerate() {
        if run.level == Level::Key {
            let v = make(&env, &settings, &maker, &format!("aes:victim-{i}"));
            assert_eq!(v.len(), 1, "{v:?}");
            for k in [&rsa_key[0], &v[0], &exp_key[0], &kek_key[0]] {
                env.bind(k, &run.bind_role, &run.sa);
            }
        }
    }
    env.bind(
        &rsa_key[0],
        "roles/kms.signerVerifier",
        "serviceAccount:solo@payments",
    );
    eprintln!("set-up with keys: {:?}", t0.elapsed());

    // Acceptance 2: a signerVerifier bound on one key sees one token with exactly that key
    // (its two halves) and signs with it.
    let lp = run_child(
        "denial_matrix_through_the_module",
        "least",
        &Settings::new(&env.client_socket, &dir.join("module.toml"))
            .credentials(&dir.join("solo.key"), &solo),
        &[],
    );
    assert_eq!(lp.code, 0, "{lp:#?}");
    assert_eq!(lp.value("slots"), slot_id(RING).to_string(), "{lp:#?}");
    assert_eq!(lp.value("objects"), "2", "{lp:#?}");
    assert_eq!(lp.value("ids"), "m-rsa", "{lp:#?}");
    assert_eq!(lp.value("signature"), "256", "{lp:#?}");

    let p11 = cryptoki(&settings);
    let slot = slot_of(&p11, RING);
    let anchor = p11.open_rw_session(slot).unwrap();
    anchor
        .login(UserType::User, Some(&AuthPin::from(seer.clone())))
        .unwrap();
    let rsa_priv = labelled(&anchor, ObjectClass::PRIVATE_KEY, RSA_LABEL);
    let rsa_pub = labelled(&anchor, ObjectClass::PUBLIC_KEY, RSA_LABEL);
    let aes = labelled(&anchor, ObjectClass::SECRET_KEY, AES_LABEL);
    let victims = (0..runs.len())
        .map(|i| {
            labelled(
                &anchor,
                ObjectClass::SECRET_KEY,
                format!("victim-{i}").as_bytes(),
            )
        })
        .collect();
    let exp = labelled(&anchor, ObjectClass::SECRET_KEY, EXP_LABEL);
    let exp2 = labelled(&anchor, ObjectClass::SECRET_KEY, EXP2_LABEL);
    let kek = labelled(&anchor, ObjectClass::SECRET_KEY, KEK_LABEL);
    let kek2 = labelled(&anchor, ObjectClass::SECRET_KEY, KEK2_LABEL);
    let mac = labelled(&anchor, ObjectClass::SECRET_KEY, MAC_LABEL);
    let kwk = labelled(&anchor, ObjectClass::SECRET_KEY, KWK_LABEL);
    let job = labelled(
        &anchor,
        ObjectClass::PRIVATE_KEY,
        format!("import-job-{JOB}").as_bytes(),
    );
    // The RSA and EC keys' certificates: issued by a CA (openssl) for their public keys,
    // made by the maker; the CA's certificate is what the runs create.
    let f = |name: &str| dir.join(name);
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=Matrix CA",
        "-days",
        "30",
        "-keyout",
        path_str(&f("ca.key")),
        "-out",
        path_str(&f("ca.pem")),
    ]);
    let ca_der = openssl(&["x509", "-outform", "DER", "-in", path_str(&f("ca.pem"))]);
    let certify = |public: ObjectHandle, label: &[u8]| -> ObjectHandle {
        let name = String::from_utf8(label.to_vec()).unwrap();
        let spki = match anchor
            .get_attributes(public, &[AttributeType::PublicKeyInfo])
            .unwrap()
            .pop()
        {
            Some(Attribute::PublicKeyInfo(v)) => v,
            other => panic!("{other:?}"),
        };
        let (der, pem, leaf) = (
            f(&format!("{name}.pub.der")),
            f(&format!("{name}.pub.pem")),
            f(&format!("{name}-cert.der")),
        );
        std::fs::write(&der, &spki).unwrap();
        openssl(&[
            "pkey",
            "-pubin",
            "-inform",
            "DER",
            "-in",
            path_str(&der),
            "-out",
            path_str(&pem),
        ]);
        openssl(&[
            "x509",
            "-new",
            "-subj",
            &format!("/CN={name}"),
            "-days",
            "30",
            "-force_pubkey",
            path_str(&pem),
            "-CA",
            path_str(&f("ca.pem")),
            "-CAkey",
            path_str(&f("ca.key")),
            "-outform",
            "DER",
            "-out",
            path_str(&leaf),
        ]);
        make(
            &env,
            &settings,
            &maker,
            &format!("cert:{name}-cert:{}", path_str(&leaf)),
        );
        labelled(
            &anchor,
            ObjectClass::CERTIFICATE,
            format!("{name}-cert").as_bytes(),
        )
    };
    let cert = certify(rsa_pub, RSA_LABEL);
    let ec_pub = labelled(&anchor, ObjectClass::PUBLIC_KEY, EC_LABEL);
    let ec_cert = certify(ec_pub, EC_LABEL);
    let signature = anchor
        .sign(&Mechanism::Sha256RsaPkcs, rsa_priv, DATA)
        .unwrap();
    let mut iv = IV;
    let aes_ct = anchor.encrypt(&gcm(&mut iv), aes, DATA).unwrap();
    let rsa_ct = anchor.encrypt(&Mechanism::RsaPkcs, rsa_pub, DATA).unwrap();
    anchor.logout().unwrap();
    let h = Handles {
        rsa_priv,
        rsa_pub,
        aes,
        victims,
        signature,
        aes_ct,
        rsa_ct,
        exp,
        exp2,
        kek,
        kek2,
        job,
        wrapped,
        cert,
        ca_der,
        ec_cert,
        mac,
        kwk,
        kwk_blob,
    };

    let t1 = Instant::now();
    let mut tally = Tally::default();
    for (i, run) in runs.iter().enumerate() {
        tally.run = i;
        one_run(&p11, excl.raw(), slot, &anchor, &h, i, run, &mut tally);
    }
    eprintln!(
        "denial matrix: {} runs, {} cells in {:?} (set-up {:?})",
        runs.len(),
        tally.cells,
        t1.elapsed(),
        t1 - t0
    );
    for (call, outcomes) in &tally.shape {
        let v: Vec<String> = outcomes.iter().map(|(o, n)| format!("{o} {n}")).collect();
        eprintln!("  {call}: {}", v.join(", "));
    }
    for k in &tally.known {
        eprintln!("known discrepancy: {k}");
    }
    assert!(
        tally.mismatches.is_empty(),
        "{} cells differ from design §4:\n{}",
        tally.mismatches.len(),
        tally.mismatches.join("\n")
    );
    drop(anchor);
    p11.finalize().unwrap();
    drop(excl);

    // Acceptance 4 (first half): the audit records of these calls, per principal.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut audit_mismatches = vec![];
    for (i, run) in runs.iter().enumerate() {
        let out = env.ctl(&[
            "--json",
            "audit",
            "query",
            "--principal",
            &run.sa,
            "--limit",
            "10000",
        ]);
        out.ok();
        let recs = out.json_lines();
        let logins = recs
            .iter()
            .filter(|r| r["action"] == "C_Login" && r["result"] == "allowed")
            .count();
        if logins != 1 {
            audit_mismatches.push(format!(
                "{} at {}: {logins} C_Login records",
                run.role,
                run.level.tag()
            ));
        }
        for r in &recs {
            assert!(
                r["instance"].is_string() && r["peer_pid"].is_number(),
                "{r}"
            );
        }
        let mut actions: Vec<&str> = tally
            .audited
            .iter()
            .filter(|(r, _, _)| *r == i)
            .map(|(_, a, _)| *a)
            .collect();
        actions.sort_unstable();
        actions.dedup();
        for action in actions {
            let mut want_denied: Vec<u64> = vec![];
            let mut want_allowed = 0;
            let mut want_invisible: Vec<u64> = vec![];
            for (_, _, e) in tally
                .audited
                .iter()
                .filter(|(r, a, _)| *r == i && *a == action)
            {
                match e {
                    // Allowed reads are counted per session (design §6), not one record each.
                    Ok(()) if action == "C_GetAttributeValue" => {}
                    Ok(()) => want_allowed += 1,
                    Err(rv) if is_invisible(*rv) => want_invisible.push(ck_rv(*rv)),
                    Err(rv) => want_denied.push(ck_rv(*rv)),
                }
            }
            // A record with a count stands for that many identical denials (design §6
            // "Coalescing").
            let of = |result: &str| -> Vec<u64> {
                let mut v: Vec<u64> = recs
                    .iter()
                    .filter(|r| r["action"] == action && r["result"] == result)
                    .flat_map(|r| {
                        let n = r["count"].as_u64().unwrap_or(1);
                        std::iter::repeat_n(r["rv"].as_u64().unwrap(), n as usize)
                    })
                    .collect();
                v.sort();
                v
            };
            let got_allowed = of("allowed").len();
            // A denial and a refusal on an invisible object are both recorded as denials
            // with the code the caller got (some codes are both: C_WrapKey's
            // CKR_WRAPPING_KEY_HANDLE_INVALID, C_UnwrapKey's
            // CKR_UNWRAPPING_KEY_HANDLE_INVALID).
            let got_denied = of("denied");
            let mut want_all: Vec<u64> =
                want_denied.iter().chain(&want_invisible).copied().collect();
            want_all.sort();
            want_denied.sort();
            want_invisible.sort();
            let line = format!(
                "{} at {}: {action}: denied records {got_denied:?} (want {want_denied:?} and, \
                 not found, {want_invisible:?}), allowed {got_allowed} (want >= {want_allowed})",
                run.role,
                run.level.tag()
            );
            if got_denied != want_all || got_allowed < want_allowed {
                audit_mismatches.push(line);
            }
        }
    }
    // Issue 16 acceptance 6: every audit record of the run, normalised, is the golden file's
    // (`KEYWARD_BLESS=1` rewrites it; see `tests/common/golden.rs`). keywardd stops first so
    // that everything it has accepted is written.
    let status = env.signal_and_wait("TERM");
    assert!(status.success(), "keywardd after SIGTERM: {status}");
    common::golden::check(GOLDEN, GOLDEN_HEADER, &audit_golden(&env.db));
    assert!(
        audit_mismatches.is_empty(),
        "{} audit differences from design §6:\n{}",
        audit_mismatches.len(),
        audit_mismatches.join("\n")
    );
}

/// The golden file of [`denial_matrix_through_the_module`]'s audit records.
const GOLDEN: &str = "denial_matrix.audit";
const GOLDEN_HEADER: &str = "\
Every audit record of a full run of tests/denial_matrix.rs denial_matrix_through_the_module
(set-up, keywardctl and the module), normalised: one line per distinct
(principal, action, resource, result, rv) with the number of records of it (counts of
coalesced denials added up), sorted. Generated key ids (p11-<16 hex digits>) are replaced by
the key's CKA_LABEL; times, pids, instances, request ids, details and order are left out.
Regenerate: KEYWARD_BLESS=1 cargo test --test denial_matrix denial_matrix_through_the_module
principal action resource result rv xcount";

/// The audit records of the store at `db`, normalised for [`GOLDEN`].
fn audit_golden(db: &std::path::Path) -> Vec<String> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    // Generated key id -> the client's CKA_LABEL.
    let mut labels = std::collections::HashMap::new();
    let mut q = conn
        .prepare(
            "SELECT r.name, g.cka_label FROM generic_keys g JOIN resources r ON r.id = g.key_id",
        )
        .unwrap();
    let rows = q
        .query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
        })
        .unwrap();
    for row in rows {
        let (name, label) = row.unwrap();
        let id = name.rsplit('/').next().unwrap().to_string();
        labels.insert(id, format!("p11{:?}", String::from_utf8_lossy(&label)));
    }
    let normal = |resource: &str| -> String {
        resource
            .split('/')
            .map(|part| match labels.get(part) {
                Some(l) => l.as_str(),
                None if part.starts_with("p11-") => "p11-UNKNOWN",
                None => part,
            })
            .collect::<Vec<_>>()
            .join("/")
    };
    let mut n: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    let mut q = conn
        .prepare(
            "SELECT principal, action, resource, result, rv, count FROM audit_log ORDER BY seq",
        )
        .unwrap();
    let rows = q
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })
        .unwrap();
    for row in rows {
        let (principal, action, resource, result, rv, count) = row.unwrap();
        let resource = resource.map_or("-".to_string(), |r| normal(&r));
        let line = format!("{principal} {action} {resource} {result} {rv:#x}");
        *n.entry(line).or_default() += u64::try_from(count).unwrap();
    }
    n.into_iter().map(|(l, c)| format!("{l} x{c}")).collect()
}

/// Acceptance 3: a binding revoked with keywardctl while a session is open stops the next
/// C_SignInit; an operation past C_SignInit stays bound to its key (a second C_SignInit is
/// CKR_OPERATION_ACTIVE, and the signature is the first key's); a new binding works at the
/// next call, without reconnecting.
#[test]
fn revocation_applies_to_the_next_init() {
    match child_role().as_deref() {
        Some("maker") => return maker_child(),
        Some(_) => return,
        None => {}
    }
    let excl = exclusive();
    let mut env = Env::new();
    let maker = env.service_account_offline("maker");
    let signer = env.service_account_offline("signer");
    env.start();
    env.ctl(&["keyring", "create", "--parent", "projects/payments", "web"])
        .ok();
    env.bind(RING, "roles/kms.admin", "serviceAccount:maker@payments");
    env.bind(RING, "roles/kms.viewer", "serviceAccount:signer@payments");
    env.bind(
        RING,
        "roles/kms.signerVerifier",
        "serviceAccount:signer@payments",
    );
    let dir = env.dir().to_path_buf();
    let settings = Settings::new(&env.client_socket, &dir.join("module.toml")).tokens(RING);
    let run = |what: &str| {
        let out = run_child(
            "revocation_applies_to_the_next_init",
            "maker",
            &settings,
            &[
                ("KEYWARD_MATRIX_MAKE", what),
                ("KEYWARD_MATRIX_PIN", &maker),
            ],
        );
        assert_eq!(out.code, 0, "maker child: {out:#?}");
    };
    run("rsa:a");
    run("rsa:b");
    let p11 = cryptoki(&settings);
    let slot = slot_of(&p11, RING);
    let s = p11.open_rw_session(slot).unwrap();
    s.login(UserType::User, Some(&AuthPin::from(signer)))
        .unwrap();
    let a = labelled(&s, ObjectClass::PRIVATE_KEY, b"a");
    let a_pub = labelled(&s, ObjectClass::PUBLIC_KEY, b"a");
    let b = labelled(&s, ObjectClass::PRIVATE_KEY, b"b");
    let b_pub = labelled(&s, ObjectClass::PUBLIC_KEY, b"b");
    let m = Mechanism::Sha256RsaPkcs;

    // Past C_SignInit on a, the operation is a's: another key cannot take it over.
    s.sign_init(&m, a).unwrap();
    assert_eq!(outcome(s.sign_init(&m, b)), Err(RvError::OperationActive));
    s.sign_update(DATA).unwrap();
    let sig = s.sign_final().unwrap();
    s.verify(&m, a_pub, DATA, &sig).unwrap();
    assert_eq!(
        outcome(s.verify(&m, b_pub, DATA, &sig)),
        Err(RvError::SignatureInvalid)
    );

    // Revoked while the session is open: the next C_SignInit is refused (the key is still
    // seen through kms.viewer).
    env.ctl(&[
        "iam",
        "unbind",
        "--resource",
        RING,
        "--role",
        "roles/kms.signerVerifier",
        "--member",
        "serviceAccount:signer@payments",
    ])
    .ok();
    assert_eq!(
        outcome(s.sign_init(&m, a)),
        Err(RvError::KeyFunctionNotPermitted)
    );
    assert_eq!(
        outcome(s.sign_init(&m, b)),
        Err(RvError::KeyFunctionNotPermitted)
    );

    // A new binding works at the next call, same session, no reconnect.
    env.bind(RING, "roles/kms.signer", "serviceAccount:signer@payments");
    let sig = s.sign(&m, b, DATA).unwrap();
    assert_eq!(
        outcome(s.verify(&m, b_pub, DATA, &sig)),
        Err(RvError::KeyFunctionNotPermitted),
        "kms.signer has no useToVerify"
    );
    drop(s);
    p11.finalize().unwrap();
    drop(excl);
}

/// How a test makes the audit database unwritable; dropping the value makes it writable again.
type Breakage = Box<dyn std::any::Any>;

/// Acceptance 4 (second half): the audit database made READ-ONLY (`chattr +i` on the
/// database and its WAL: unlike a 0444 mode, which root ignores, an immutable file refuses
/// every write, even through descriptors opened before, and a reopened connection is
/// read-only). New operations are refused with CKR_DEVICE_ERROR and logged: on keywardd's
/// stderr at once, and, once the database is writable again, each refused operation's
/// denial followed by an `audit.unavailable` record that counts them.
#[test]
fn audit_database_read_only_refuses_new_operations() {
    audit_outage("audit_database_read_only_refuses_new_operations", |env| {
        Box::new(Immutable::set(&[
            env.db.clone(),
            env.db.with_extension("db-wal"),
        ]))
    });
}

/// The same while another connection holds the database's write lock past the writer's
/// busy timeout.
#[test]
fn audit_database_locked_refuses_new_operations() {
    audit_outage("audit_database_locked_refuses_new_operations", |env| {
        let locker = rusqlite::Connection::open(&env.db).unwrap();
        locker.execute_batch("BEGIN IMMEDIATE").unwrap();
        Box::new(locker)
    });
}

/// Files made immutable (`chattr +i`) until dropped.
struct Immutable(Vec<std::path::PathBuf>);

impl Immutable {
    fn set(files: &[std::path::PathBuf]) -> Immutable {
        let mut guard = Immutable(Vec::new());
        for f in files {
            assert!(f.exists(), "{} does not exist", f.display());
            let out = std::process::Command::new("chattr")
                .arg("+i")
                .arg(f)
                .output()
                .expect("chattr (e2fsprogs) is needed");
            assert!(
                out.status.success(),
                "chattr +i {}: {} (the test directory must be on a file system with \
                 immutable files, e.g. ext4)",
                f.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            guard.0.push(f.clone());
        }
        guard
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(f)
                .status();
        }
    }
}

fn audit_outage(test: &str, unwritable: impl FnOnce(&Env) -> Breakage) {
    match child_role().as_deref() {
        Some("maker") => return maker_child(),
        Some(_) => return,
        None => {}
    }
    let excl = exclusive();
    let mut env = Env::new();
    let maker = env.service_account_offline("maker");
    let signer = env.service_account_offline("signer");
    env.start();
    env.ctl(&["keyring", "create", "--parent", "projects/payments", "web"])
        .ok();
    env.bind(RING, "roles/kms.admin", "serviceAccount:maker@payments");
    env.bind(RING, "roles/kms.signer", "serviceAccount:signer@payments");
    let dir = env.dir().to_path_buf();
    let settings = Settings::new(&env.client_socket, &dir.join("module.toml")).tokens(RING);
    let out = run_child(
        test,
        "maker",
        &settings,
        &[
            ("KEYWARD_MATRIX_MAKE", "rsa:a"),
            ("KEYWARD_MATRIX_PIN", &maker),
        ],
    );
    assert_eq!(out.code, 0, "maker child: {out:#?}");
    let p11 = cryptoki(&settings);
    let slot = slot_of(&p11, RING);
    let s = p11.open_rw_session(slot).unwrap();
    s.login(UserType::User, Some(&AuthPin::from(signer)))
        .unwrap();
    let a = labelled(&s, ObjectClass::PRIVATE_KEY, b"a");
    let m = Mechanism::Sha256RsaPkcs;
    s.sign(&m, a, DATA).unwrap();

    let breakage = unwritable(&env);
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    let refused = loop {
        match outcome(s.sign(&m, a, DATA)) {
            Ok(()) => {}
            Err(rv) => break rv,
        }
        assert!(
            Instant::now() < deadline,
            "never refused while the audit is down"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(refused, RvError::DeviceError);
    assert_eq!(outcome(s.sign(&m, a, DATA)), Err(RvError::DeviceError));
    assert!(
        env.daemon_log()
            .contains("audit log unavailable: operation refused"),
        "{}",
        env.daemon_log()
    );
    drop(breakage);
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    while outcome(s.sign(&m, a, DATA)).is_err() {
        assert!(Instant::now() < deadline, "never recovered");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = env.ctl(&["--json", "audit", "query", "--action", "audit.unavailable"]);
    out.ok();
    let recs = out.json_lines();
    assert_eq!(recs.len(), 1, "{recs:#?}");
    assert_eq!(recs[0]["principal"], "keywardd", "{recs:#?}");
    eprintln!("audit outage record: {}", recs[0]);
    // Every operation refused during the outage left its denial, written before the
    // outage's record, and the outage's record counts them.
    let notice = recs[0]["detail"].as_str().unwrap().to_owned();
    let notice_seq = recs[0]["seq"].as_i64().unwrap();
    // The refusals are the signer's C_SignInit denials, and an operation whose Init was
    // granted just before the outage and whose C_Sign was then refused (recorded as
    // `operation`): the outage's record counts both.
    let out = env.ctl(&[
        "--json",
        "audit",
        "query",
        "--principal",
        "serviceAccount:signer@payments",
        "--result",
        "denied",
    ]);
    out.ok();
    let denials: Vec<_> = out
        .json_lines()
        .into_iter()
        .filter(|r| r["rv"] == 0x30)
        .collect();
    // A refusal racing with the recovery may land just after the outage's record.
    let before = denials
        .iter()
        .filter(|d| d["seq"].as_i64().unwrap() < notice_seq)
        .count();
    assert!(before >= 2, "{denials:#?}");
    for d in &denials {
        assert_eq!(d["principal"], "serviceAccount:signer@payments", "{d}");
        assert!(
            d["instance"].is_string() && d["peer_pid"].is_number(),
            "{d}"
        );
    }
    let counted: usize = notice
        .split(" submissions were refused")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in the outage record: {notice}"));
    assert!(
        (before..=denials.len()).contains(&counted),
        "{before} denials before the outage's record, {} in all; it counts {counted}: {notice}",
        denials.len()
    );
    let out = env.ctl(&["audit", "verify"]);
    out.ok();
    drop(s);
    p11.finalize().unwrap();
    drop(excl);
}
