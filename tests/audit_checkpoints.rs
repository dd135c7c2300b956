//! Token-signed audit checkpoints (design §6) against a real SoftHSM2 token: the audit key
//! and the signed-head object, a checkpoint every 1,000 records or after the interval, the
//! checkpointer thread behind the writer, and `verify_with_token` on a clean log, after
//! truncation, after a recomputed chain, with a forged signature, and its unsigned tail.
//!
//! One private token store per test binary (`SOFTHSM2_CONF` is read once per process, at
//! `C_Initialize`), made in a `OnceLock` before any token call. The token holds one audit key
//! and ONE signed head for the whole process, so the tests run one at a time (`SERIAL`), each
//! with a fresh database and the signed head removed first.

use keyward::audit::checkpoint::{
    self, checkpoint_digest, spawn_checkpointer, verify_with_token, CheckpointConfig,
    CheckpointError, Checkpointer, AUDIT_KEY_ID, HEAD_LABEL,
};
use keyward::audit::writer::{AuditWriter, WriterConfig};
use keyward::audit::{self, Filter, NewRecord, Outcome};
use keyward::store::Store;
use keyward_token::{ObjectClass, SignMechanism, Token};
use parking_lot::{Mutex, MutexGuard};
use rusqlite::{params, Connection};
use secrecy::SecretString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

const LABEL: &str = "kw-audit";

struct Fixture {
    token: Arc<Token>,
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();
static SERIAL: Mutex<()> = Mutex::new(());

fn module_path() -> PathBuf {
    let path = std::env::var_os("TEST_PKCS11_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"));
    assert!(
        path.exists(),
        "PKCS#11 module {} not found: install SoftHSM2 or set TEST_PKCS11_MODULE",
        path.display()
    );
    path
}

fn fixture() -> &'static Fixture {
    FIXTURE.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("audit-checkpoints-token");
        if dir.exists() {
            std::fs::remove_dir_all(&dir).expect("remove the previous run's token store");
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("softhsm-config/init-token.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg(&dir)
            .arg(LABEL)
            .output()
            .expect("run init-token.sh");
        assert!(
            out.status.success(),
            "init-token.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Before any C_Initialize in this process, while other test threads wait here.
        std::env::set_var("SOFTHSM2_CONF", dir.join("softhsm2.conf"));
        let pin = std::fs::read_to_string(dir.join("user-pin")).expect("user-pin");
        let token = Token::open(&module_path(), LABEL, SecretString::from(pin))
            .unwrap_or_else(|e| panic!("open {LABEL}: {e}"));
        Fixture {
            token: Arc::new(token),
        }
    })
}

/// One test at a time, a fresh database, and no signed head left in the token.
struct Setup {
    _serial: MutexGuard<'static, ()>,
    _dir: tempfile::TempDir,
    path: PathBuf,
    token: Arc<Token>,
}

fn setup() -> Setup {
    let serial = SERIAL.lock();
    let token = Arc::clone(&fixture().token);
    token
        .with_exclusive_session(|s| {
            for h in s.find_objects(&[
                cryptoki::object::Attribute::Class(ObjectClass::DATA),
                cryptoki::object::Attribute::Label(HEAD_LABEL.as_bytes().to_vec()),
            ])? {
                s.destroy_object(h)?;
            }
            Ok(())
        })
        .expect("remove the signed head");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keyward.db");
    Store::open(&path).expect("create the store");
    Setup {
        _serial: serial,
        _dir: dir,
        path,
        token,
    }
}

fn record(i: i64) -> NewRecord {
    NewRecord {
        time_ms: 1_700_000_000_000 + i,
        principal: "serviceAccount:web@payments".into(),
        peer_pid: Some(77),
        peer_uid: Some(1000),
        instance: None,
        action: "C_SignInit".into(),
        resource: Some("projects/payments/keyRings/web/cryptoKeys/tls".into()),
        outcome: Outcome::Allowed,
        rv: 0,
        detail: None,
        request_id: Some(format!("r{i}")),
    }
}

/// Appends `n` records in one transaction, as an admin change would.
fn append(path: &Path, n: usize) {
    let mut store = Store::open(path).expect("store");
    let tx = store.write().expect("tx");
    for i in 0..n {
        audit::append(&tx, &record(i as i64)).expect("append");
    }
    tx.commit().expect("commit");
}

fn conn(path: &Path) -> Connection {
    Connection::open(path).expect("open")
}

fn checkpoint_seqs(path: &Path) -> Vec<i64> {
    let c = conn(path);
    let mut stmt = c
        .prepare("SELECT seq FROM audit_checkpoints ORDER BY seq")
        .expect("prepare");
    let seqs = stmt
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<rusqlite::Result<Vec<i64>>>()
        .expect("rows");
    seqs
}

fn checkpointer(s: &Setup, config: CheckpointConfig) -> Checkpointer {
    Checkpointer::open(&s.path, Arc::clone(&s.token), config).expect("checkpointer")
}

/// Every checkpoint also stored in the token at once (keywardd stores at most every 10 s).
fn storing_every_checkpoint() -> CheckpointConfig {
    CheckpointConfig {
        store_every: Duration::ZERO,
        ..CheckpointConfig::default()
    }
}

/// 2,537 records, checkpoints at 1,000 and 2,000, both stored in the token as made: the state
/// most tests start from.
fn signed_log(s: &Setup) -> Checkpointer {
    let cp = checkpointer(s, storing_every_checkpoint());
    append(&s.path, 1000);
    assert_eq!(
        cp.maybe_checkpoint().expect("cp").map(|c| c.seq),
        Some(1000)
    );
    append(&s.path, 1000);
    assert_eq!(
        cp.maybe_checkpoint().expect("cp").map(|c| c.seq),
        Some(2000)
    );
    append(&s.path, 537);
    assert_eq!(cp.maybe_checkpoint().expect("cp"), None);
    cp
}

fn problems(path: &Path, token: &Token) -> Vec<String> {
    let report = verify_with_token(&conn(path), token).expect("verify_with_token");
    assert_eq!(report.ok(), report.chain.problems.is_empty());
    report.chain.problems
}

#[test]
fn audit_key_and_signed_head_live_in_the_token() {
    let s = setup();
    let cp = checkpointer(&s, CheckpointConfig::default());
    // Made once, found again.
    assert!(!checkpoint::ensure_audit_key(&s.token).expect("ensure"));
    let objects = s.token.find_by_id(AUDIT_KEY_ID).expect("find");
    assert_eq!(objects.len(), 2, "one key pair: {objects:?}");
    let private = objects
        .iter()
        .find(|o| o.class == ObjectClass::PRIVATE_KEY)
        .expect("private key");
    assert_eq!(private.sensitive, Some(true));
    assert_eq!(private.extractable, Some(false));
    assert!(private.token && private.private);
    assert_eq!(private.label, b"keyward-audit-key");

    assert_eq!(cp.checkpoint_now().expect("empty log"), None);
    append(&s.path, 5);
    let first = cp.checkpoint_now().expect("sign").expect("a checkpoint");
    assert_eq!(first.seq, 5);
    assert_eq!(cp.checkpoint_now().expect("again"), None, "already signed");
    let digest = checkpoint_digest(first.seq, &first.head);
    assert!(s
        .token
        .verify(
            AUDIT_KEY_ID,
            SignMechanism::Ecdsa,
            &digest,
            &first.signature
        )
        .expect("verify"));

    // The CKO_DATA object: token, private, labelled, value = seq || head || signature.
    let read_head_objects = || {
        s.token
            .with_session(|sess| {
                use cryptoki::object::{Attribute, AttributeType};
                let mut out = Vec::new();
                for h in sess.find_objects(&[Attribute::Label(HEAD_LABEL.as_bytes().to_vec())])? {
                    let attrs = sess.get_attributes(
                        h,
                        &[
                            AttributeType::Class,
                            AttributeType::Token,
                            AttributeType::Private,
                            AttributeType::Value,
                        ],
                    )?;
                    out.push(attrs);
                }
                Ok(out)
            })
            .expect("read the head object")
    };
    let objects = read_head_objects();
    assert_eq!(objects.len(), 1);
    let mut expected = 5i64.to_be_bytes().to_vec();
    expected.extend_from_slice(&first.head);
    expected.extend_from_slice(&first.signature);
    use cryptoki::object::Attribute;
    assert!(objects[0].contains(&Attribute::Class(ObjectClass::DATA)));
    assert!(objects[0].contains(&Attribute::Token(true)));
    assert!(objects[0].contains(&Attribute::Private(true)));
    assert!(objects[0].contains(&Attribute::Value(expected)));

    // Replaced (a data object's CKA_VALUE is read-only): one object, a new one.
    let handle = || {
        s.token
            .with_session(|sess| {
                sess.find_objects(&[cryptoki::object::Attribute::Label(
                    HEAD_LABEL.as_bytes().to_vec(),
                )])
            })
            .expect("find the head object")
    };
    let before = handle();
    append(&s.path, 3);
    let second = cp.checkpoint_now().expect("sign").expect("a checkpoint");
    assert_eq!(second.seq, 8);
    assert_eq!(read_head_objects().len(), 1);
    let after = handle();
    assert_eq!(after.len(), 1);
    assert_ne!(after, before, "the old object was kept");
    let in_token = checkpoint::token_head(&s.token)
        .expect("token head")
        .expect("present");
    assert_eq!((in_token.seq, &in_token.head), (8, &second.head));
    assert_eq!(checkpoint_seqs(&s.path), vec![5, 8]);

    // A new Checkpointer (a restart) picks up where the last one stopped.
    drop(cp);
    let again = checkpointer(&s, CheckpointConfig::default());
    assert_eq!(again.signed_seq(), 8);
    assert_eq!(again.checkpoint_now().expect("nothing new"), None);
}

#[test]
fn a_checkpoint_every_1000_records_or_after_the_interval() {
    let s = setup();
    let cp = checkpointer(&s, CheckpointConfig::default());
    append(&s.path, 999);
    assert_eq!(cp.maybe_checkpoint().expect("999"), None);
    append(&s.path, 1);
    assert_eq!(
        cp.maybe_checkpoint().expect("1000").map(|c| c.seq),
        Some(1000)
    );
    assert_eq!(cp.maybe_checkpoint().expect("again"), None);
    append(&s.path, 999);
    assert_eq!(cp.maybe_checkpoint().expect("1999"), None);
    append(&s.path, 1);
    assert_eq!(
        cp.maybe_checkpoint().expect("2000").map(|c| c.seq),
        Some(2000)
    );
    assert_eq!(checkpoint_seqs(&s.path), vec![1000, 2000]);

    // Time: a few records and the interval passed.
    let timed = checkpointer(
        &s,
        CheckpointConfig {
            every_records: 1000,
            every: Duration::from_millis(300),
            ..CheckpointConfig::default()
        },
    );
    append(&s.path, 5);
    assert_eq!(timed.maybe_checkpoint().expect("too soon"), None);
    std::thread::sleep(Duration::from_millis(350));
    assert_eq!(
        timed.maybe_checkpoint().expect("interval").map(|c| c.seq),
        Some(2005)
    );
    // The interval alone signs nothing new when no record came.
    std::thread::sleep(Duration::from_millis(350));
    assert_eq!(timed.maybe_checkpoint().expect("idle"), None);
    assert_eq!(checkpoint_seqs(&s.path), vec![1000, 2000, 2005]);
}

#[test]
fn the_checkpointer_thread_keeps_pace_with_the_writer() {
    let s = setup();
    let cp = Arc::new(checkpointer(&s, CheckpointConfig::default()));
    let thread = spawn_checkpointer(Arc::clone(&cp), Duration::from_secs(1));
    let writer = Arc::new(
        AuditWriter::open(
            &s.path,
            WriterConfig {
                max_batch: 256,
                on_commit: Some(thread.notifier()),
                ..WriterConfig::default()
            },
        )
        .expect("writer"),
    );
    let start = Instant::now();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let writer = Arc::clone(&writer);
            std::thread::spawn(move || {
                for i in 0..1000 {
                    writer.submit(record(i)).expect("submit");
                    // About 8,000 records/s in all: faster than one checkpoint per 1,000
                    // needs, slow enough that signing keeps pace.
                    if i % 50 == 0 {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    writer.flush().expect("flush");
    let deadline = Instant::now() + Duration::from_secs(5);
    while cp.signed_seq() < 3000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "4000 records, checkpoints {:?} in {:?}",
        checkpoint_seqs(&s.path),
        start.elapsed()
    );
    assert!(
        cp.signed_seq() >= 3000,
        "signed only to {}",
        cp.signed_seq()
    );
    // Nudged by the writer's commits, not only the 1 s tick: a checkpoint once 1,000 new
    // records are there (never sooner, as 10 s did not pass), covering whatever came while
    // the previous one was signed (how much that is depends on the machine's load, so only
    // the lower bound is asserted; keeping pace is the `signed_seq` check above).
    let running = checkpoint_seqs(&s.path);
    assert!(running.len() >= 2, "{running:?}");
    let mut prev = 0;
    for seq in &running {
        assert!(seq - prev >= 1000, "checkpoint gaps: {running:?}");
        prev = *seq;
    }
    // Clean shutdown: stop the thread, drain the writer, sign the head.
    thread.stop();
    writer.shutdown().expect("writer shutdown");
    let last = cp.checkpoint_now().expect("final checkpoint");
    assert_eq!(cp.signed_seq(), 4000, "{last:?}");
    assert_eq!(last.is_some(), running.last() != Some(&4000));
    let report = verify_with_token(&conn(&s.path), &s.token).expect("verify");
    assert!(report.ok(), "{:?}", report.chain.problems);
    assert_eq!((report.signed_seq, report.unsigned_tail), (4000, 0));
}

#[test]
fn verify_passes_on_a_clean_log_and_counts_the_unsigned_tail() {
    let s = setup();
    let _cp = signed_log(&s);
    let c = conn(&s.path);
    let report = verify_with_token(&c, &s.token).expect("verify");
    assert!(report.ok(), "{:?}", report.chain.problems);
    assert_eq!(report.chain.records, 2537);
    assert_eq!(report.checkpoints, 2);
    assert_eq!(report.token_head_seq, Some(2000));
    assert_eq!(report.signed_seq, 2000);
    assert_eq!(report.unsigned_tail, 537);
    assert!(
        report
            .summary()
            .contains("537 records after the last signed head are covered by the chain only"),
        "{}",
        report.summary()
    );
    let json = serde_json::to_value(&report).expect("json");
    assert_eq!(json["unsigned_tail"], 537);
    assert_eq!(json["records"], 2537);
    // The plain chain walk still works offline.
    assert!(audit::verify(&c).expect("verify").ok());

    // A log nobody signed yet: everything is tail, nothing is wrong.
    let s2 = {
        drop(c);
        drop(s);
        setup()
    };
    append(&s2.path, 12);
    let report = verify_with_token(&conn(&s2.path), &s2.token).expect("verify");
    assert!(report.ok(), "{:?}", report.chain.problems);
    assert_eq!((report.signed_seq, report.unsigned_tail), (0, 12));
}

#[test]
fn truncation_below_the_signed_head_fails() {
    let s = setup();
    let cp = signed_log(&s);
    let c = conn(&s.path);

    // Deleting only unsigned records is what the chain alone cannot see (design §6).
    c.execute("DELETE FROM audit_log WHERE seq > 2400", [])
        .expect("delete tail");
    let report = verify_with_token(&c, &s.token).expect("verify");
    assert!(report.ok(), "{:?}", report.chain.problems);
    assert_eq!(report.unsigned_tail, 400);

    // Deleting the newest records below the signed head: the chain alone still looks fine ...
    c.execute("DELETE FROM audit_log WHERE seq > 1500", [])
        .expect("truncate");
    assert!(audit::verify(&c).expect("verify").ok());
    // ... the checkpoints and the token's signed head do not.
    let found = problems(&s.path, &s.token);
    assert!(
        found
            .iter()
            .any(|p| p.contains("checkpoint at record 2000") && p.contains("truncated")),
        "{found:?}"
    );
    // Removing the checkpoint rows too does not help: the token still holds the head.
    c.execute("DELETE FROM audit_checkpoints WHERE seq > 1500", [])
        .expect("delete checkpoints");
    let found = problems(&s.path, &s.token);
    assert!(
        found
            .iter()
            .any(|p| p.contains("the token's signed head at record 2000")
                && p.contains("records 1501 to 2000 were deleted (truncated)")),
        "{found:?}"
    );
    // keywardd refuses to sign over it, and the token keeps the old head.
    append(&s.path, 10);
    assert!(matches!(
        cp.checkpoint_now(),
        Err(CheckpointError::Tampered(_))
    ));
    let head = checkpoint::token_head(&s.token)
        .expect("head")
        .expect("present");
    assert_eq!(head.seq, 2000);
}

#[test]
fn a_recomputed_chain_fails() {
    let s = setup();
    let cp = signed_log(&s);
    let c = conn(&s.path);
    // Rewrite record 1500 and recompute every hash after it with the same algorithm.
    let mut rows = audit::query(&c, &Filter::default()).expect("query");
    assert_eq!(rows.len(), 2537);
    rows[1499].principal = "user:innocent@example.com".into();
    let mut prev = rows[1498].hash.clone();
    let tx = c.unchecked_transaction().expect("tx");
    for r in rows.iter_mut().skip(1499) {
        r.prev_hash = prev.clone();
        r.hash = audit::hash_record(r).to_vec();
        tx.execute(
            "UPDATE audit_log SET principal = ?1, prev_hash = ?2, hash = ?3 WHERE seq = ?4",
            params![r.principal, r.prev_hash, r.hash, r.seq],
        )
        .expect("rewrite");
        prev = r.hash.clone();
    }
    tx.commit().expect("commit");
    // The recomputed chain is self-consistent ...
    assert!(audit::verify(&c).expect("verify").ok());
    // ... but not what was signed.
    let found = problems(&s.path, &s.token);
    assert!(
        found
            .iter()
            .any(|p| p.contains("checkpoint at record 2000") && p.contains("recomputed")),
        "{found:?}"
    );
    assert!(
        !found
            .iter()
            .any(|p| p.contains("checkpoint at record 1000")),
        "record 1000 is before the rewrite: {found:?}"
    );
    // Even with the checkpoint rows gone, the token's head catches it.
    c.execute("DELETE FROM audit_checkpoints", [])
        .expect("delete checkpoints");
    let found = problems(&s.path, &s.token);
    assert!(
        found
            .iter()
            .any(|p| p.contains("the token's signed head at record 2000")
                && p.contains("recomputed")),
        "{found:?}"
    );
    // keywardd does not sign the rewritten chain.
    append(&s.path, 1000);
    assert!(matches!(
        cp.maybe_checkpoint(),
        Err(CheckpointError::Tampered(_))
    ));
}

#[test]
fn a_forged_checkpoint_fails() {
    let s = setup();
    let _cp = signed_log(&s);
    let c = conn(&s.path);
    let mut sig: Vec<u8> = c
        .query_row(
            "SELECT signature FROM audit_checkpoints WHERE seq = 1000",
            [],
            |r| r.get(0),
        )
        .expect("signature");
    sig[10] ^= 0x01;
    c.execute(
        "UPDATE audit_checkpoints SET signature = ?1 WHERE seq = 1000",
        params![sig],
    )
    .expect("forge");
    let found = problems(&s.path, &s.token);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("checkpoint at record 1000") && found[0].contains("does not verify"),
        "{found:?}"
    );
}

/// Design §6 cadence: every checkpoint is signed into `audit_checkpoints`, but the token's
/// head is replaced at most every `store_every` (and at once by `checkpoint_now`, the clean
/// shutdown). Until it is, `audit verify` says the token's head is stale since the first
/// checkpoint it lacks and counts the records after it.
#[test]
fn the_token_head_is_stored_at_most_every_interval() {
    let s = setup();
    let cp = checkpointer(
        &s,
        CheckpointConfig {
            // Long enough that appending and signing 1,000 records under a loaded CI
            // machine stays inside one interval (400 ms did not, once: Some(2000) stored).
            store_every: Duration::from_secs(3),
            ..CheckpointConfig::default()
        },
    );
    append(&s.path, 1000);
    assert_eq!(
        cp.maybe_checkpoint().expect("cp").map(|c| c.seq),
        Some(1000)
    );
    let head = |s: &Setup| {
        checkpoint::token_head(&s.token)
            .expect("head")
            .map(|c| c.seq)
    };
    assert_eq!(
        head(&s),
        Some(1000),
        "the first checkpoint of a process is stored"
    );
    append(&s.path, 1000);
    assert_eq!(
        cp.maybe_checkpoint().expect("cp").map(|c| c.seq),
        Some(2000)
    );
    assert_eq!(head(&s), Some(1000), "stored again before the interval");
    let report = verify_with_token(&conn(&s.path), &s.token).expect("verify");
    assert!(report.ok(), "{:?}", report.chain.problems);
    assert_eq!(report.signed_seq, 2000);
    assert_eq!(report.token_head_seq, Some(1000));
    assert!(report.token_head_stale_since_ms.is_some());
    assert_eq!(report.after_token_head, 1000);
    assert!(
        report.summary().contains("token head stale since"),
        "{}",
        report.summary()
    );
    std::thread::sleep(Duration::from_millis(3050));
    // Nothing new to sign: the unstored head is stored at the next tick.
    assert_eq!(cp.maybe_checkpoint().expect("tick"), None);
    assert_eq!(head(&s), Some(2000));
    let report = verify_with_token(&conn(&s.path), &s.token).expect("verify");
    assert_eq!(report.token_head_stale_since_ms, None);
    assert_eq!(report.after_token_head, 0);
    append(&s.path, 5);
    assert_eq!(cp.checkpoint_now().expect("now").map(|c| c.seq), Some(2005));
    assert_eq!(head(&s), Some(2005), "a clean shutdown stores at once");
}
