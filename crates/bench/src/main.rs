//! `keyward-bench`: the same PKCS#11 operations, through raw calls, against SoftHSM2 loaded
//! directly, SoftHSM2 behind `p11-kit server` (p11-kit-client.so), and Keyward's module in
//! front of keywardd in front of the same SoftHSM2 token (issue 9). Prints one markdown table.
//!
//! ```text
//! cargo build --release -p keyward -p keyward-pkcs11 -p keyward-bench
//! target/release/keyward-bench [--duration SECS] [--threads 1,2] [--smoke]
//! target/release/keyward-bench connections [--count 1000]
//! ```
//!
//! Everything runs in a temporary directory (tokens, store, keywardd, p11-kit server). Each
//! cell is timed on its own: every thread opens its own session, makes one `*Init` and one
//! call per operation (three calls for a find) with pre-sized buffers, after a warm-up. A
//! failing operation shows its CK_RV.
//!
//! SoftHSM2 direct and p11-kit run on a token of their own (own directory, own
//! SOFTHSM2_CONF, their own 1,000 find keys), with keywardd stopped (SIGSTOP) meanwhile and
//! p11-kit server running only for its own cells; `--shared-token` puts them on keywardd's
//! token instead, with keywardd running, as before issue 19 (to show what that costs). Each
//! cell also reports CPU time per operation: the bench process (CLOCK_PROCESS_CPUTIME_ID, all
//! threads) plus the server process (keywardd, or p11-kit server and its children: utime +
//! /proc/<pid>/stat) over the timed part, divided by the operations done. The exit status is 3 if any operation fails through
//! Keyward (CI's smoke run relies on it); timings are never judged by the exit status.

#![deny(unsafe_op_in_unsafe_fn)]

mod conns;
mod env;
mod raw;

use cryptoki_sys::*;
use env::{Env, Paths, DIRECT_LABEL, RING_LABEL, TOKEN_LABEL};
use raw::{rv_name, Mech, Module, Prepared, Rv, Step, Template};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Barrier;
use std::time::{Duration, Instant};

const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";
const P11KIT_CLIENT: &str = "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so";
/// The DER prefix of a SHA-256 DigestInfo: CKM_RSA_PKCS signs it followed by the digest.
const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];
/// DER OID of P-256 (CKA_EC_PARAMS).
const P256: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// The operations: exactly the rows of issue 9's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    GcmEnc,
    GcmDec,
    EcbEnc,
    Hmac,
    EcSign,
    EcVerify,
    RsaSign,
    Random,
    Find,
}

const OPS: [Op; 9] = [
    Op::GcmEnc,
    Op::GcmDec,
    Op::EcbEnc,
    Op::Hmac,
    Op::EcSign,
    Op::EcVerify,
    Op::RsaSign,
    Op::Random,
    Op::Find,
];

impl Op {
    fn name(self, find_keys: usize) -> String {
        match self {
            Op::GcmEnc => "AES-256-GCM enc 1 KiB".into(),
            Op::GcmDec => "AES-256-GCM dec 1 KiB".into(),
            Op::EcbEnc => "AES-256-ECB enc 1 KiB".into(),
            Op::Hmac => "HMAC-SHA256 1 KiB".into(),
            Op::EcSign => "ECDSA P-256 sign".into(),
            Op::EcVerify => "ECDSA P-256 verify".into(),
            Op::RsaSign => "RSA-2048 PKCS#1 sign".into(),
            Op::Random => "random 32 B".into(),
            Op::Find => format!("find by label among {} keys", thousands(find_keys as f64)),
        }
    }

    /// Issue 19's target for Keyward/direct throughput at 1 thread (find: issue 9's multiple
    /// of direct). AES-ECB has no target of its own in issue 19: AES-GCM's.
    fn target(self) -> f64 {
        match self {
            Op::GcmEnc | Op::GcmDec | Op::EcbEnc | Op::Hmac => 0.5,
            Op::EcSign => 0.8,
            Op::EcVerify => 0.85,
            Op::RsaSign => 0.97,
            Op::Random => 0.25,
            Op::Find => 10.0,
        }
    }
}

/// The three configurations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Config {
    Direct,
    P11Kit,
    Keyward,
}

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::Direct => "SoftHSM2 direct",
            Config::P11Kit => "p11-kit RPC",
            Config::Keyward => "Keyward",
        }
    }
}

/// The objects one configuration uses.
#[derive(Debug, Clone)]
struct Keys {
    aes: CK_OBJECT_HANDLE,
    hmac: CK_OBJECT_HANDLE,
    ec_priv: CK_OBJECT_HANDLE,
    ec_pub: CK_OBJECT_HANDLE,
    rsa_priv: CK_OBJECT_HANDLE,
    find_label: Vec<u8>,
}

/// A cell's result.
#[derive(Debug, Clone)]
enum Cell {
    Ok {
        ops_per_sec: f64,
        p50: Duration,
        p99: Duration,
        /// CPU µs per operation of the bench process (the client side).
        cpu_client: f64,
        /// CPU µs per operation of the server process (keywardd, p11-kit server; 0 direct).
        cpu_server: f64,
    },
    Failed(String),
    Skipped,
}

impl Cell {
    fn rate(&self) -> Option<f64> {
        match self {
            Cell::Ok { ops_per_sec, .. } => Some(*ops_per_sec),
            _ => None,
        }
    }
    fn p50(&self) -> Option<Duration> {
        match self {
            Cell::Ok { p50, .. } => Some(*p50),
            _ => None,
        }
    }
}

struct Options {
    duration: Duration,
    warmup: Duration,
    threads: Vec<usize>,
    smoke: bool,
    find_keys: usize,
    /// Direct and p11-kit on keywardd's token, keywardd running (the pre-issue-19 setup).
    shared_token: bool,
    /// Direct and p11-kit operate with session keys (CKA_TOKEN false): no object file.
    direct_session_keys: bool,
    /// Whole runs (each in a child process of its own, from setup to teardown); with more
    /// than one, a table of the per-cell medians follows.
    runs: usize,
    /// Where a child run writes its cells for the parent's median (hidden).
    cells_out: Option<PathBuf>,
    configs: Vec<Config>,
    ops: Vec<Op>,
    paths: Paths,
    softhsm: PathBuf,
    p11kit_client: PathBuf,
}

fn usage() -> &'static str {
    "usage: keyward-bench [--duration SECS] [--threads 1,2] [--smoke] [--find-keys N]\n\
     \x20                    [--configs direct,p11kit,keyward] [--ops gcm-enc,gcm-dec,ecb,hmac,\n\
     \x20                    ec-sign,ec-verify,rsa,random,find] [--bin-dir DIR] [--repo DIR]\n\
     \x20                    [--softhsm PATH] [--p11kit-client PATH] [--shared-token]\n\
     \x20                    [--direct-session-keys] [--runs N]\n\
     \x20      keyward-bench connections [--count N] [--bin-dir DIR] [--repo DIR]\n\
     --duration: seconds per cell (default 3); --smoke: tiny durations and 20 find keys\n\
     (CI); --shared-token: direct and p11-kit on keywardd's token with keywardd running\n\
     (default: a token of their own, keywardd stopped meanwhile); --direct-session-keys:\n\
     direct and p11-kit operate with session keys, not token objects; --runs N: N whole\n\
     runs (each table with its UTC start and load average), then the per-cell medians;\n\
     the binaries keywardd, keywardctl and libkeyward_pkcs11.so are taken from\n\
     --bin-dir (default: the directory of this program)."
}

fn default_paths() -> Paths {
    let bins = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("."));
    Paths {
        bins,
        repo: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")),
    }
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        duration: Duration::from_secs(3),
        warmup: Duration::from_millis(300),
        threads: vec![1, 2],
        smoke: false,
        find_keys: 1000,
        shared_token: false,
        direct_session_keys: false,
        runs: 1,
        cells_out: None,
        configs: vec![Config::Direct, Config::P11Kit, Config::Keyward],
        ops: OPS.to_vec(),
        paths: default_paths(),
        softhsm: PathBuf::from(SOFTHSM),
        p11kit_client: PathBuf::from(P11KIT_CLIENT),
    };
    let mut duration = None;
    let mut find_keys = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--duration" => {
                let s: f64 = val()?.parse().map_err(|_| "--duration: seconds")?;
                if !(s > 0.0 && s < 3600.0) {
                    return Err("--duration: between 0 and 3600 seconds".into());
                }
                duration = Some(Duration::from_secs_f64(s));
            }
            "--threads" => {
                o.threads = val()?
                    .split(',')
                    .map(|t| {
                        t.trim()
                            .parse::<usize>()
                            .ok()
                            .filter(|n| (1..=64).contains(n))
                    })
                    .collect::<Option<Vec<_>>>()
                    .ok_or("--threads: a list like 1,2 (1 to 64)")?;
            }
            "--smoke" => o.smoke = true,
            "--shared-token" => o.shared_token = true,
            "--direct-session-keys" => o.direct_session_keys = true,
            "--runs" => {
                o.runs = val()?
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=9).contains(n))
                    .ok_or("--runs: 1 to 9")?;
            }
            "--cells-out" => o.cells_out = Some(PathBuf::from(val()?)),
            "--find-keys" => {
                find_keys = Some(
                    val()?
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=100_000).contains(n))
                        .ok_or("--find-keys: 1 to 100000")?,
                );
            }
            "--configs" => {
                o.configs = val()?
                    .split(',')
                    .map(|c| match c.trim() {
                        "direct" => Ok(Config::Direct),
                        "p11kit" | "p11-kit" => Ok(Config::P11Kit),
                        "keyward" => Ok(Config::Keyward),
                        other => Err(format!("--configs: unknown {other:?}")),
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--ops" => {
                o.ops = val()?
                    .split(',')
                    .map(|c| match c.trim() {
                        "gcm-enc" => Ok(Op::GcmEnc),
                        "gcm-dec" => Ok(Op::GcmDec),
                        "ecb" => Ok(Op::EcbEnc),
                        "hmac" => Ok(Op::Hmac),
                        "ec-sign" => Ok(Op::EcSign),
                        "ec-verify" => Ok(Op::EcVerify),
                        "rsa" => Ok(Op::RsaSign),
                        "random" => Ok(Op::Random),
                        "find" => Ok(Op::Find),
                        other => Err(format!("--ops: unknown {other:?}")),
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--bin-dir" => o.paths.bins = PathBuf::from(val()?),
            "--repo" => o.paths.repo = PathBuf::from(val()?),
            "--softhsm" => o.softhsm = PathBuf::from(val()?),
            "--p11kit-client" => o.p11kit_client = PathBuf::from(val()?),
            "-h" | "--help" => return Err(usage().into()),
            other => return Err(format!("unknown argument {other:?}\n{}", usage())),
        }
    }
    if o.smoke {
        o.duration = duration.unwrap_or(Duration::from_millis(200));
        o.warmup = Duration::from_millis(50);
        o.find_keys = find_keys.unwrap_or(20);
    } else {
        o.duration = duration.unwrap_or(o.duration);
        o.find_keys = find_keys.unwrap_or(o.find_keys);
        o.warmup = (o.duration / 10).min(Duration::from_millis(500));
    }
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("conn-child") => return conns::child(),
        Some("connections") => conns::run(&args[1..], default_paths()),
        _ => parse(&args).and_then(|o| {
            if o.runs > 1 {
                repeat(&args, &o)
            } else {
                bench(&o)
            }
        }),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("keyward-bench: {e}");
            ExitCode::from(2)
        }
    }
}

fn ck<T>(what: &str, r: Result<T, Rv>) -> Result<T, String> {
    r.map_err(|rv| format!("{what}: {}", rv_name(rv)))
}

fn aes_template(label: &[u8], bytes: u64, token: bool) -> Template {
    Template::new()
        .bool(CKA_TOKEN, token)
        .bytes(CKA_LABEL, label)
        .ulong(CKA_VALUE_LEN, bytes)
        .bool(CKA_ENCRYPT, true)
        .bool(CKA_DECRYPT, true)
}

fn ec_pair(m: &Module, s: CK_SESSION_HANDLE, label: &[u8], token: bool) -> Result<(u64, u64), Rv> {
    m.generate_pair(
        s,
        Mech::plain(CKM_EC_KEY_PAIR_GEN),
        Template::new()
            .bool(CKA_TOKEN, token)
            .bytes(CKA_LABEL, label)
            .bytes(CKA_EC_PARAMS, &P256)
            .bool(CKA_VERIFY, true),
        Template::new()
            .bool(CKA_TOKEN, token)
            .bytes(CKA_LABEL, label)
            .bool(CKA_PRIVATE, true)
            .bool(CKA_SENSITIVE, true)
            .bool(CKA_SIGN, true),
    )
}

fn rsa_pair(m: &Module, s: CK_SESSION_HANDLE, label: &[u8], token: bool) -> Result<(u64, u64), Rv> {
    m.generate_pair(
        s,
        Mech::plain(CKM_RSA_PKCS_KEY_PAIR_GEN),
        Template::new()
            .bool(CKA_TOKEN, token)
            .bytes(CKA_LABEL, label)
            .ulong(CKA_MODULUS_BITS, 2048)
            .bytes(CKA_PUBLIC_EXPONENT, &[1, 0, 1])
            .bool(CKA_VERIFY, true),
        Template::new()
            .bool(CKA_TOKEN, token)
            .bytes(CKA_LABEL, label)
            .bool(CKA_PRIVATE, true)
            .bool(CKA_SENSITIVE, true)
            .bool(CKA_SIGN, true),
    )
}

fn by_label(class: CK_OBJECT_CLASS, label: &[u8]) -> Template {
    Template::new()
        .ulong(CKA_CLASS, class)
        .bytes(CKA_LABEL, label)
}

/// The direct configuration's keys, made in the token by SoftHSM2 itself (labels
/// `direct-*`), and found again by label (p11-kit uses the same objects). On a token of its
/// own (`own_find_keys` is then Some) the find row's haystack is `find_keys` AES keys
/// labelled `find-NNNNN` made here, as many as Keyward's ring holds. `token`: the keys
/// operated with are token objects (as Keyward's are), else session objects of this module
/// instance (`--direct-session-keys`; then p11-kit makes its own too).
fn direct_keys(
    m: &Module,
    s: CK_SESSION_HANDLE,
    create: bool,
    own_find_keys: Option<usize>,
    token: bool,
) -> Result<Keys, String> {
    if let (true, Some(n)) = (create, own_find_keys) {
        let started = Instant::now();
        for i in 0..n {
            let label = format!("find-{i:05}");
            ck(
                &format!("direct find key {label}"),
                m.generate_key(
                    s,
                    Mech::plain(CKM_AES_KEY_GEN),
                    aes_template(label.as_bytes(), 16, true),
                ),
            )?;
        }
        eprintln!(
            "keyward-bench: made {n} keys in the direct token in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    if create || !token {
        ck(
            "direct AES key",
            m.generate_key(
                s,
                Mech::plain(CKM_AES_KEY_GEN),
                aes_template(b"direct-aes", 32, token),
            ),
        )?;
        ck(
            "direct HMAC key",
            m.generate_key(
                s,
                Mech::plain(CKM_GENERIC_SECRET_KEY_GEN),
                Template::new()
                    .bool(CKA_TOKEN, token)
                    .bytes(CKA_LABEL, b"direct-hmac")
                    .ulong(CKA_KEY_TYPE, CKK_GENERIC_SECRET)
                    .ulong(CKA_VALUE_LEN, 32)
                    .bool(CKA_SIGN, true)
                    .bool(CKA_VERIFY, true),
            ),
        )?;
        ck("direct EC pair", ec_pair(m, s, b"direct-ec", token))?;
        ck("direct RSA pair", rsa_pair(m, s, b"direct-rsa", token))?;
    }
    let find = |class, label: &[u8]| {
        ck(
            &format!("find {}", String::from_utf8_lossy(label)),
            m.find_one(s, by_label(class, label)),
        )
    };
    let find_label = match own_find_keys {
        Some(n) => format!("find-{:05}", n / 2).into_bytes(),
        None => shared_find_label(m, s)?,
    };
    Ok(Keys {
        aes: find(CKO_SECRET_KEY, b"direct-aes")?,
        hmac: find(CKO_SECRET_KEY, b"direct-hmac")?,
        ec_priv: find(CKO_PRIVATE_KEY, b"direct-ec")?,
        ec_pub: find(CKO_PUBLIC_KEY, b"direct-ec")?,
        rsa_priv: find(CKO_PRIVATE_KEY, b"direct-rsa")?,
        find_label,
    })
}

/// On keywardd's token: find by label among the keys Keyward made, the label of one of its
/// backing objects (each carries its version's full name).
fn shared_find_label(m: &Module, s: CK_SESSION_HANDLE) -> Result<Vec<u8>, String> {
    let secrets = ck(
        "list secret keys",
        m.find(s, Template::new().ulong(CKA_CLASS, CKO_SECRET_KEY)),
    )?;
    let mut labels = Vec::new();
    for h in secrets {
        labels.push(ck("CKA_LABEL", m.attribute(s, h, CKA_LABEL))?);
    }
    let mut candidates: Vec<&Vec<u8>> = labels
        .iter()
        .filter(|l| l.windows(11).any(|w| w == b"cryptoKeys/"))
        .filter(|l| labels.iter().filter(|o| o == l).count() == 1)
        .collect();
    candidates.sort();
    candidates
        .get(candidates.len() / 2)
        .map(|l| l.to_vec())
        .ok_or_else(|| "no Keyward key found in the token for the find row".into())
}

/// SoftHSM2's direct token through `module` (SoftHSM2 itself, or p11-kit's client in front
/// of it), logged in, with the direct keys (made here if `create`, else found).
fn load_direct(
    module: &std::path::Path,
    name: &str,
    label: &str,
    pin: &str,
    create: bool,
    o: &Options,
) -> Result<Loaded, String> {
    let module = Module::load(module)?;
    let slot = module.slot_by_label(label)?;
    let s = ck(&format!("{name} C_OpenSession"), module.open_session(slot))?;
    ck(&format!("{name} C_Login"), module.login(s, pin.as_bytes()))?;
    let own_find = (!o.shared_token).then_some(o.find_keys);
    let keys = direct_keys(&module, s, create, own_find, !o.direct_session_keys)?;
    Ok(Loaded {
        module,
        slot,
        keys,
        _login: s,
    })
}

/// Keyward's keys, made through the module (generic keys; HMAC by keywardctl, as the module
/// makes no HMAC keys), and `find_keys` AES keys labelled `find-NNNNN`.
fn keyward_keys(m: &Module, s: CK_SESSION_HANDLE, find_keys: usize) -> Result<Keys, String> {
    let aes = ck(
        "Keyward AES key",
        m.generate_key(
            s,
            Mech::plain(CKM_AES_KEY_GEN),
            aes_template(b"kw-aes", 32, true),
        ),
    )?;
    let (ec_pub, ec_priv) = ck("Keyward EC pair", ec_pair(m, s, b"kw-ec", true))?;
    let (_, rsa_priv) = ck("Keyward RSA pair", rsa_pair(m, s, b"kw-rsa", true))?;
    let hmac = ck(
        "find the HMAC key",
        m.find_one(s, by_label(CKO_SECRET_KEY, b"hmac")),
    )?;
    let started = Instant::now();
    for i in 0..find_keys {
        let label = format!("find-{i:05}");
        ck(
            &format!("Keyward find key {label}"),
            m.generate_key(
                s,
                Mech::plain(CKM_AES_KEY_GEN),
                aes_template(label.as_bytes(), 16, true),
            ),
        )?;
    }
    eprintln!(
        "keyward-bench: made {find_keys} keys through Keyward in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(Keys {
        aes,
        hmac,
        ec_priv,
        ec_pub,
        rsa_priv,
        find_label: format!("find-{:05}", find_keys / 2).into_bytes(),
    })
}

/// The prepared operation `op` for one thread (a ciphertext or signature made first where
/// the row needs one).
fn prepare(m: &Module, s: CK_SESSION_HANDLE, op: Op, k: &Keys) -> Result<Prepared, Rv> {
    let p = |step, mech, key, input: Vec<u8>| Prepared {
        step,
        mech,
        key,
        input,
        extra: Vec::new(),
        template: Template::new(),
        out: vec![0u8; 4096],
    };
    let kib: Vec<u8> = (0..1024u32).map(|i| (i % 251) as u8).collect();
    let digest = [0x5au8; 32];
    let iv = [7u8; 12];
    Ok(match op {
        Op::GcmEnc => p(Step::Encrypt, Mech::gcm(iv), k.aes, kib),
        Op::GcmDec => {
            let mut enc = p(Step::Encrypt, Mech::gcm(iv), k.aes, kib);
            let ct = m.output(s, &mut enc)?;
            p(Step::Decrypt, Mech::gcm(iv), k.aes, ct)
        }
        Op::EcbEnc => p(Step::Encrypt, Mech::plain(CKM_AES_ECB), k.aes, kib),
        Op::Hmac => p(Step::Sign, Mech::plain(CKM_SHA256_HMAC), k.hmac, kib),
        Op::EcSign => p(
            Step::Sign,
            Mech::plain(CKM_ECDSA),
            k.ec_priv,
            digest.to_vec(),
        ),
        Op::EcVerify => {
            let mut sign = p(
                Step::Sign,
                Mech::plain(CKM_ECDSA),
                k.ec_priv,
                digest.to_vec(),
            );
            let sig = m.output(s, &mut sign)?;
            let mut v = p(
                Step::Verify,
                Mech::plain(CKM_ECDSA),
                k.ec_pub,
                digest.to_vec(),
            );
            v.extra = sig;
            v
        }
        Op::RsaSign => {
            let mut di = SHA256_DIGEST_INFO.to_vec();
            di.extend_from_slice(&digest);
            p(Step::Sign, Mech::plain(CKM_RSA_PKCS), k.rsa_priv, di)
        }
        Op::Random => p(Step::Random, Mech::plain(0), 0, vec![0u8; 32]),
        Op::Find => {
            let mut f = p(Step::Find, Mech::plain(0), 0, Vec::new());
            f.template = by_label(CKO_SECRET_KEY, &k.find_label);
            f
        }
    })
}

/// What one thread measured.
struct ThreadResult {
    ops: u64,
    elapsed: Duration,
    latencies: Vec<u32>,
}

/// Runs `op` on `threads` threads (each with its own session) for `o.duration`; the CPU
/// time of this process and of `server` (keywardd, or p11-kit server and the child serving
/// this client) is read between the warm-up and the end.
fn cell(l: &Loaded, op: Op, threads: usize, o: &Options, server: Option<u32>) -> Cell {
    let (m, slot, k) = (&l.module, l.slot, &l.keys);
    // The threads and this one: the CPU clocks are read once every thread is warm.
    let barrier = Barrier::new(threads + 1);
    let mut cpu_start = (Duration::ZERO, Duration::ZERO);
    let results: Vec<Result<ThreadResult, Rv>> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let barrier = &barrier;
                sc.spawn(move || -> Result<ThreadResult, Rv> {
                    let prepared = m.open_session(slot).and_then(|s| {
                        let p = prepare(m, s, op, k);
                        if p.is_err() {
                            m.close_session(s);
                        }
                        p.map(|p| (s, p))
                    });
                    // Every thread reaches the barrier, failed or not.
                    let (s, mut p) = match prepared {
                        Ok(x) => x,
                        Err(rv) => {
                            barrier.wait();
                            barrier.wait();
                            return Err(rv);
                        }
                    };
                    let r = timed(m, s, &mut p, barrier, o);
                    m.close_session(s);
                    r
                })
            })
            .collect();
        barrier.wait();
        cpu_start = (
            env::self_cpu(),
            server.and_then(env::tree_cpu).unwrap_or_default(),
        );
        barrier.wait();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Err(CKR_GENERAL_ERROR)))
            .collect()
    });
    let cpu_client = env::self_cpu().saturating_sub(cpu_start.0);
    let cpu_server = server
        .and_then(env::tree_cpu)
        .unwrap_or_default()
        .saturating_sub(cpu_start.1);
    let mut ops = 0u64;
    let mut rate = 0.0;
    let mut lat: Vec<u32> = Vec::new();
    for r in results {
        match r {
            Ok(t) => {
                rate += t.ops as f64 / t.elapsed.as_secs_f64().max(1e-9);
                ops += t.ops;
                lat.extend_from_slice(&t.latencies);
            }
            Err(rv) => return Cell::Failed(rv_name(rv)),
        }
    }
    if lat.is_empty() {
        return Cell::Failed("no operation completed".into());
    }
    lat.sort_unstable();
    let pick =
        |q: usize| Duration::from_nanos(u64::from(lat[(lat.len() * q / 100).min(lat.len() - 1)]));
    let per_op = |d: Duration| d.as_secs_f64() * 1e6 / ops.max(1) as f64;
    Cell::Ok {
        ops_per_sec: rate,
        p50: pick(50),
        p99: pick(99),
        cpu_client: per_op(cpu_client),
        cpu_server: per_op(cpu_server),
    }
}

fn timed(
    m: &Module,
    s: CK_SESSION_HANDLE,
    p: &mut Prepared,
    barrier: &Barrier,
    o: &Options,
) -> Result<ThreadResult, Rv> {
    // Warm-up (each thread on its own), then everyone starts together.
    let warm_end = Instant::now() + o.warmup;
    let mut warm = Ok(());
    while warm.is_ok() && Instant::now() < warm_end {
        warm = m.run(s, p);
    }
    barrier.wait();
    barrier.wait();
    warm?;
    let mut latencies: Vec<u32> = Vec::with_capacity(1 << 16);
    let start = Instant::now();
    let end = start + o.duration;
    let mut ops = 0u64;
    loop {
        let t0 = Instant::now();
        m.run(s, p)?;
        let t1 = Instant::now();
        latencies.push(u32::try_from((t1 - t0).as_nanos()).unwrap_or(u32::MAX));
        ops += 1;
        if t1 >= end {
            return Ok(ThreadResult {
                ops,
                elapsed: t1 - start,
                latencies,
            });
        }
    }
}

/// One configuration's module, slot and keys.
struct Loaded {
    module: Module,
    slot: CK_SLOT_ID,
    keys: Keys,
    _login: CK_SESSION_HANDLE,
}

fn bench(o: &Options) -> Result<ExitCode, String> {
    let started = Instant::now();
    let mut env = Env::new(&o.paths, 256)?;
    // The direct configuration's token: its own, unless --shared-token.
    let (direct_conf, direct_pin, direct_label) = if o.shared_token {
        (env.softhsm_conf.clone(), env.user_pin.clone(), TOKEN_LABEL)
    } else {
        let (conf, pin) = env.own_token()?;
        (conf, pin, DIRECT_LABEL)
    };
    // The modules read these at C_Initialize.
    std::env::set_var("SOFTHSM2_CONF", &direct_conf);
    std::env::set_var("KEYWARD_SOCKET", &env.client_socket);
    std::env::set_var("KEYWARD_CREDENTIALS", &env.credentials);
    std::env::remove_var("KEYWARD_TOKENS");
    std::env::remove_var("KEYWARD_CONFIG");

    // Keyward first: with --shared-token its keys are the find row's haystack for every
    // configuration.
    let kw = {
        let module = Module::load(&o.paths.module())?;
        let slot = module.slot_by_label(RING_LABEL)?;
        let s = ck("Keyward C_OpenSession", module.open_session(slot))?;
        ck("Keyward C_Login", module.login(s, b""))?;
        // Keyward's haystack is needed by its own cells, and by every configuration's on the
        // shared token; otherwise one key keeps the setup short.
        let haystack = if o.configs.contains(&Config::Keyward) || o.shared_token {
            o.find_keys
        } else {
            1
        };
        let keys = keyward_keys(&module, s, haystack)?;
        Loaded {
            module,
            slot,
            keys,
            _login: s,
        }
    };
    let direct = load_direct(&o.softhsm, "SoftHSM2", direct_label, &direct_pin, true, o)?;
    eprintln!(
        "keyward-bench: keywardd pid {}, bench pid {}; set up in {:.1} s; {} s per cell, \
         threads {:?}; direct and p11-kit on {}",
        env.daemon_pid().unwrap_or(0),
        std::process::id(),
        started.elapsed().as_secs_f64(),
        o.duration.as_secs_f64(),
        o.threads,
        if o.shared_token {
            "keywardd's token, keywardd running"
        } else {
            "a token of their own, keywardd stopped meanwhile"
        }
    );
    let daemon = env.daemon_pid();

    let mut table: Vec<(Op, usize, [Cell; 3])> = Vec::new();
    for &op in &o.ops {
        for &t in &o.threads {
            table.push((op, t, [Cell::Skipped, Cell::Skipped, Cell::Skipped]));
        }
    }
    // p11-kit server is started once and stays idle (blocked in its read) outside its own
    // cells.
    let p11kit = if o.configs.contains(&Config::P11Kit) {
        let loaded = env
            .start_p11kit(&o.softhsm, &direct_conf, direct_label)
            .and_then(|addr| {
                std::env::set_var("P11_KIT_SERVER_ADDRESS", addr);
                load_direct(
                    &o.p11kit_client,
                    "p11-kit",
                    direct_label,
                    &direct_pin,
                    false,
                    o,
                )
            });
        if let Err(e) = &loaded {
            eprintln!("keyward-bench: p11-kit configuration unavailable: {e}");
        }
        Some(loaded)
    } else {
        None
    };
    // One row at a time, its configurations one after the other: the machine's speed drifts
    // over minutes on a shared host (direct AES-GCM measured 47k then 35k ops/s twenty
    // minutes apart), so the cells a ratio compares are measured side by side, not one
    // configuration's whole column before the next.
    for row in table.iter_mut() {
        let (op, t, cells) = row;
        for &c in &o.configs {
            // Nothing of keywardd runs while another configuration is measured on a token
            // of its own.
            env.pause_daemon(c != Config::Keyward && !o.shared_token)?;
            let (idx, cell_of) = match c {
                Config::Direct => (0, cell(&direct, *op, *t, o, None)),
                Config::Keyward => (2, cell(&kw, *op, *t, o, daemon)),
                Config::P11Kit => match &p11kit {
                    Some(Ok(l)) => (1, cell(l, *op, *t, o, env.p11kit_pid())),
                    _ => (1, Cell::Failed("unavailable".into())),
                },
            };
            eprintln!("  {} {} x{t}: {cell_of:?}", c.name(), op.name(o.find_keys));
            cells[idx] = cell_of;
        }
    }
    if let Some(Ok(l)) = &p11kit {
        l.module.finalize();
    }
    env.stop_p11kit();
    env.pause_daemon(false)?;
    print_table(&table, o);
    if let Some(path) = &o.cells_out {
        std::fs::write(path, cells_text(&table))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let keyward_failed = o.configs.contains(&Config::Keyward)
        && table
            .iter()
            .any(|(_, _, c)| matches!(c[2], Cell::Failed(_)));
    kw.module.finalize();
    direct.module.finalize();
    if keyward_failed {
        eprintln!("keyward-bench: an operation failed through Keyward");
        if o.smoke {
            eprintln!("keywardd log:\n{}", env.daemon_log());
        }
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

/// `o.runs` whole runs, each a child process running this program with the same arguments
/// (without `--runs`), each table headed by its UTC start and the load average before and
/// after; then the table of per-cell medians (each figure its own median; a cell that failed
/// in any run shows the failure). The exit status is the first failing run's.
fn repeat(args: &[String], o: &Options) -> Result<ExitCode, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut child_args: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--runs" || a == "--cells-out" {
            it.next();
        } else {
            child_args.push(a.clone());
        }
    }
    let dir = tempfile::Builder::new()
        .prefix("keyward-bench-runs-")
        .tempdir()
        .map_err(|e| format!("cannot make a temporary directory: {e}"))?;
    let mut runs: Vec<Vec<(Op, usize, [Cell; 3])>> = Vec::new();
    let mut status = ExitCode::SUCCESS;
    for k in 1..=o.runs {
        let cells = dir.path().join(format!("run-{k}"));
        println!(
            "Run {k} of {} ({}, load average {}):\n",
            o.runs,
            utc_now(),
            loadavg()
        );
        let st = std::process::Command::new(&exe)
            .args(&child_args)
            .arg("--cells-out")
            .arg(&cells)
            .status()
            .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
        println!("\n(load average after run {k}: {})\n", loadavg());
        if !st.success() && status == ExitCode::SUCCESS {
            status = ExitCode::from(u8::try_from(st.code().unwrap_or(2)).unwrap_or(2));
        }
        let text = std::fs::read_to_string(&cells).unwrap_or_default();
        if let Some(t) = parse_cells(&text) {
            runs.push(t);
        }
    }
    if let Some(first) = runs.first() {
        let median: Vec<(Op, usize, [Cell; 3])> = (0..first.len())
            .map(|i| {
                let (op, t, _) = &first[i];
                let cells = [0, 1, 2]
                    .map(|c| median_cell(runs.iter().filter_map(|r| r.get(i)).map(|r| &r.2[c])));
                (*op, *t, cells)
            })
            .collect();
        println!(
            "Median of {} runs (each figure the median of its cell; ratios from the medians):\n",
            runs.len()
        );
        print_table(&median, o);
    }
    Ok(status)
}

fn utc_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M:%S UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "time unknown".into())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// One line per row: op index, threads, then per configuration `ok ops p50ns p99ns cpu_client
/// cpu_server`, `failed RV` or `skipped`, tab-separated.
fn cells_text(table: &[(Op, usize, [Cell; 3])]) -> String {
    let mut out = String::new();
    for (op, t, cells) in table {
        let i = OPS.iter().position(|x| x == op).unwrap_or(0);
        out.push_str(&format!("{i}\t{t}"));
        for c in cells {
            out.push('\t');
            match c {
                Cell::Ok {
                    ops_per_sec,
                    p50,
                    p99,
                    cpu_client,
                    cpu_server,
                } => out.push_str(&format!(
                    "ok {ops_per_sec} {} {} {cpu_client} {cpu_server}",
                    p50.as_nanos(),
                    p99.as_nanos()
                )),
                Cell::Failed(rv) => out.push_str(&format!("failed {rv}")),
                Cell::Skipped => out.push_str("skipped"),
            }
        }
        out.push('\n');
    }
    out
}

fn parse_cells(text: &str) -> Option<Vec<(Op, usize, [Cell; 3])>> {
    let cell = |s: &str| -> Option<Cell> {
        let mut w = s.split(' ');
        Some(match w.next()? {
            "ok" => {
                let mut f = || w.next()?.parse::<f64>().ok();
                let (ops, p50, p99, cc, cs) = (f()?, f()?, f()?, f()?, f()?);
                Cell::Ok {
                    ops_per_sec: ops,
                    p50: Duration::from_nanos(p50 as u64),
                    p99: Duration::from_nanos(p99 as u64),
                    cpu_client: cc,
                    cpu_server: cs,
                }
            }
            "failed" => Cell::Failed(w.collect::<Vec<_>>().join(" ")),
            _ => Cell::Skipped,
        })
    };
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let op = *OPS.get(f.first()?.parse::<usize>().ok()?)?;
            let t = f.get(1)?.parse().ok()?;
            Some((
                op,
                t,
                [cell(f.get(2)?)?, cell(f.get(3)?)?, cell(f.get(4)?)?],
            ))
        })
        .collect()
}

/// The median of a cell over runs: each figure's own median (the lower middle for an even
/// count); a failure in any run is the result.
fn median_cell<'a>(cells: impl Iterator<Item = &'a Cell>) -> Cell {
    let cells: Vec<&Cell> = cells.collect();
    if let Some(f) = cells.iter().find(|c| matches!(c, Cell::Failed(_))) {
        return (*f).clone();
    }
    let ok: Vec<[f64; 5]> = cells
        .iter()
        .filter_map(|c| match c {
            Cell::Ok {
                ops_per_sec,
                p50,
                p99,
                cpu_client,
                cpu_server,
            } => Some([
                *ops_per_sec,
                p50.as_secs_f64(),
                p99.as_secs_f64(),
                *cpu_client,
                *cpu_server,
            ]),
            _ => None,
        })
        .collect();
    if ok.is_empty() {
        return Cell::Skipped;
    }
    let med = |k: usize| {
        let mut v: Vec<f64> = ok.iter().map(|x| x[k]).collect();
        v.sort_by(f64::total_cmp);
        v[(v.len() - 1) / 2]
    };
    Cell::Ok {
        ops_per_sec: med(0),
        p50: Duration::from_secs_f64(med(1)),
        p99: Duration::from_secs_f64(med(2)),
        cpu_client: med(3),
        cpu_server: med(4),
    }
}

fn thousands(x: f64) -> String {
    let n = x.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn rate(x: f64) -> String {
    if x >= 100.0 {
        thousands(x)
    } else {
        format!("{x:.1}")
    }
}

fn lat(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else if us >= 100.0 {
        format!("{us:.0} µs")
    } else {
        format!("{us:.1} µs")
    }
}

fn signed_lat(a: Duration, b: Duration) -> String {
    if a >= b {
        format!("+{}", lat(a - b))
    } else {
        format!("-{}", lat(b - a))
    }
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "missed"
    }
}

/// CPU µs per operation: total, and (client + server) where there is a server process.
fn cpu(client: f64, server: f64, has_server: bool) -> String {
    if has_server {
        format!("{:.1} ({client:.1} + {server:.1})", client + server)
    } else {
        format!("{client:.1}")
    }
}

fn print_table(table: &[(Op, usize, [Cell; 3])], o: &Options) {
    println!(
        "| op | threads | direct ops/s | p50 | p99 | CPU µs/op | p11-kit ops/s | p50 | p99 | \
         CPU µs/op (client + server) | Keyward ops/s | p50 | p99 | CPU µs/op (client + \
         keywardd) | Keyward/direct | Keyward/p11-kit | p11-kit/direct | Keyward +p50 | \
         p11-kit +p50 | targets (issue 19) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (op, t, cells) in table {
        let mut row = format!("| {} | {t} |", op.name(o.find_keys));
        for (i, c) in cells.iter().enumerate() {
            match c {
                Cell::Ok {
                    ops_per_sec,
                    p50,
                    p99,
                    cpu_client,
                    cpu_server,
                } => row.push_str(&format!(
                    " {} | {} | {} | {} |",
                    rate(*ops_per_sec),
                    lat(*p50),
                    lat(*p99),
                    cpu(*cpu_client, *cpu_server, i > 0)
                )),
                Cell::Failed(rv) => row.push_str(&format!(" fails: {rv} | - | - | - |")),
                Cell::Skipped => row.push_str(" - | - | - | - |"),
            }
        }
        let ratio = |a: &Cell, b: &Cell| match (a.rate(), b.rate()) {
            (Some(x), Some(y)) if y > 0.0 => Some(x / y),
            _ => None,
        };
        let text = |r: Option<f64>| r.map_or_else(|| "-".to_string(), |r| format!("{r:.2}"));
        let added = |a: &Cell| match (a.p50(), cells[0].p50()) {
            (Some(x), Some(d)) => signed_lat(x, d),
            _ => "-".into(),
        };
        // Issue 19's targets: Keyward/direct at 1 thread; RSA at 2 threads ≥ 1.8× Keyward's
        // 1-thread figure; every op ≥ 1.5× p11-kit where p11-kit works.
        let mut targets = Vec::new();
        let target = op.target();
        if *t == 1 {
            if let Some(r) = ratio(&cells[2], &cells[0]) {
                targets.push(if *op == Op::Find {
                    format!("≥ {target:.0}× direct ({})", met(r >= target))
                } else {
                    format!("≥ {target:.2} ({})", met(r >= target))
                });
            }
        }
        if *op == Op::RsaSign && *t == 2 {
            let one = table
                .iter()
                .find(|(o2, t2, _)| *o2 == Op::RsaSign && *t2 == 1)
                .and_then(|(_, _, c)| c[2].rate());
            if let (Some(two), Some(one)) = (cells[2].rate(), one) {
                targets.push(format!(
                    "{:.2}× 1 thread, ≥ 1.8× ({})",
                    two / one,
                    met(two / one >= 1.8)
                ));
            }
        }
        if let Some(r) = ratio(&cells[2], &cells[1]) {
            targets.push(format!("≥ 1.5× p11-kit ({})", met(r >= 1.5)));
        }
        let targets = if targets.is_empty() {
            "-".to_string()
        } else {
            targets.join("; ")
        };
        row.push_str(&format!(
            " {} | {} | {} | {} | {} | {targets} |",
            text(ratio(&cells[2], &cells[0])),
            text(ratio(&cells[2], &cells[1])),
            text(ratio(&cells[1], &cells[0])),
            added(&cells[2]),
            added(&cells[1]),
        ));
        println!("{row}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(ops: f64, p50_us: u64, cpu: f64) -> Cell {
        Cell::Ok {
            ops_per_sec: ops,
            p50: Duration::from_micros(p50_us),
            p99: Duration::from_micros(p50_us * 3),
            cpu_client: cpu,
            cpu_server: cpu * 2.0,
        }
    }

    #[test]
    fn cells_survive_the_child_to_parent_text() {
        let table = vec![
            (
                Op::RsaSign,
                2,
                [
                    ok(1600.5, 610, 700.25),
                    Cell::Failed("CKR_MECHANISM_INVALID".into()),
                    Cell::Skipped,
                ],
            ),
            (
                Op::Find,
                1,
                [ok(100.0, 9000, 1.5), ok(2.0, 3, 4.0), ok(5.0, 6, 7.0)],
            ),
        ];
        let back = parse_cells(&cells_text(&table)).expect("parses");
        assert_eq!(back.len(), 2);
        assert_eq!((back[0].0, back[0].1), (Op::RsaSign, 2));
        assert_eq!((back[1].0, back[1].1), (Op::Find, 1));
        assert_eq!(back[0].2[0].rate(), Some(1600.5));
        assert_eq!(back[0].2[0].p50(), Some(Duration::from_micros(610)));
        assert!(matches!(&back[0].2[1], Cell::Failed(rv) if rv == "CKR_MECHANISM_INVALID"));
        assert!(matches!(back[0].2[2], Cell::Skipped));
        assert!(parse_cells("9\t1\tok 1 2 3 4 5\tskipped\tskipped").is_none());
    }

    #[test]
    fn the_median_is_per_figure_and_a_failure_wins() {
        let runs = [ok(300.0, 10, 9.0), ok(100.0, 30, 7.0), ok(200.0, 20, 8.0)];
        let m = median_cell(runs.iter());
        assert_eq!(m.rate(), Some(200.0));
        assert_eq!(m.p50(), Some(Duration::from_micros(20)));
        match m {
            Cell::Ok { cpu_client, .. } => assert_eq!(cpu_client, 8.0),
            other => panic!("{other:?}"),
        }
        let failed = [ok(1.0, 1, 1.0), Cell::Failed("CKR_GENERAL_ERROR".into())];
        assert!(matches!(median_cell(failed.iter()), Cell::Failed(_)));
        // An even count takes the lower middle.
        let two = [ok(10.0, 1, 1.0), ok(20.0, 2, 2.0)];
        assert_eq!(median_cell(two.iter()).rate(), Some(10.0));
    }
}
