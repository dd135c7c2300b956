//! Token-signed checkpoints of the audit chain head (design §6), and the verification that
//! uses them to catch truncation and a recomputed chain.
//!
//! # The audit key and the signed head in the token
//! - **Audit key:** an EC P-256 key pair in the backing token with `CKA_ID` and `CKA_LABEL`
//!   [`AUDIT_KEY_ID`] = `keyward-audit-key` (a fixed id, longer than the 16-byte random ids of
//!   client keys, so it never collides with one), generated on first use by
//!   [`ensure_audit_key`] (private half `CKA_SENSITIVE`, not extractable, sign only) and found
//!   again by that id on every later start.
//! - **Checkpoint:** the audit key's raw ECDSA signature (`r || s`, 64 bytes) over
//!   [`checkpoint_digest`] = SHA-256([`CHECKPOINT_TAG`] || seq as 8 bytes big-endian || head),
//!   where head is the hash of record `seq`. Every checkpoint is a row of
//!   `audit_checkpoints(seq, head, signature, time_ms)`.
//! - **Signed head:** the latest checkpoint is also kept in the token, as a `CKO_DATA`
//!   object (`CKA_TOKEN`, `CKA_PRIVATE`, `CKA_LABEL` [`HEAD_LABEL`] = `keyward-audit-head`,
//!   `CKA_APPLICATION` `keyward`) whose `CKA_VALUE` is seq (8 bytes big-endian) || head
//!   (32 bytes) || signature (64 bytes), replaced at each checkpoint (PKCS#11 makes a data
//!   object's `CKA_VALUE` read-only after creation, so no `C_SetAttributeValue`). Only a
//!   holder of the token's user PIN (keywardd) can change it, so somebody who can only
//!   write the database can neither shorten the log below it nor recompute the chain under
//!   it without [`verify_with_token`] noticing. Reconciliation must leave both objects alone
//!   ([`is_audit_object`]).
//!
//! # When
//! [`Checkpointer::maybe_checkpoint`] signs when at least 1,000 records, or at least one
//! record and 10 s, have gone by since the last checkpoint; [`Checkpointer::checkpoint_now`]
//! signs at once (clean shutdown). Every checkpoint goes into `audit_checkpoints`; the token's
//! signed head is replaced at most every `store_every` (10 s; at once at a clean shutdown and
//! at the first checkpoint of a process), because replacing it holds some tokens exclusively
//! (SoftHSM2's file store: 7.3 ms) and 1,000-record checkpoints can come many times a second.
//!
//! # A token that cannot store the head
//! A failed store (e.g. a read-only token directory) is retried at every tick; it is logged
//! once, then at most once a minute with the count, and once when it works again. Meanwhile
//! truncation is detectable only up to the token's older head: `keywardctl status` and
//! `audit verify` say "token head stale since T, N records covered by the chain only". A head
//! left unstored for [`OVERDUE_FACTOR`]x `store_every` sets [`Checkpointer::overdue`], which the
//! audit writer's health includes: new operations are refused as in an audit outage until
//! the head is stored again (design §6 cadence). [`spawn_checkpointer`] runs `maybe_checkpoint` every
//! second and whenever the writer's commit hook ([`CheckpointerThread::notifier`]) says 1,000
//! records are due. Records after the last signed head, at most about 1,000 or 10 s worth
//! (plus what is appended while a signature is made), are covered by the chain only.
//!
//! Before signing, the checkpointer walks the records since its last signed head and checks
//! their links and hashes, and refuses to sign if the log is now shorter than the signed
//! head or the chain no longer runs through it: keywardd never signs over a truncated or
//! rewritten log, and never moves the token's signed head backwards.
//!
//! # Crash order
//! A checkpoint is committed to `audit_checkpoints` first (on a `synchronous=FULL`
//! connection, so it and every record before it are on disk), then written to the token. A
//! crash in between leaves the token one checkpoint behind the table, which verifies fine.
//!
//! # Locks
//! `Checkpointer::inner` (its connection and last signed head) is held across the whole
//! checkpoint, token calls included: it exists to serialise checkpoints. Lock order:
//! `Checkpointer::inner` → the token's own locks (keyward-token's header).

use super::{hex, record_hash, row, VerifyReport, COLS, GENESIS};
use crate::store::StoreError;
use keyward_token::{HeadObject, KeySpec, ObjectClass, SignMechanism, Token, TokenError};
use keyward_wire::keys::Algorithm;
use parking_lot::Mutex;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// `CKA_ID` and `CKA_LABEL` of the audit key pair.
pub const AUDIT_KEY_ID: &[u8] = b"keyward-audit-key";
/// `CKA_LABEL` of the audit key pair.
pub const AUDIT_KEY_LABEL: &str = "keyward-audit-key";
pub use keyward_token::{HeadStorage, HEAD_APPLICATION, HEAD_ID, HEAD_LABEL};
/// Domain tag of the signed digest.
pub const CHECKPOINT_TAG: &[u8] = b"keyward-audit-checkpoint-v1";

const HEAD_LEN: usize = 32;
const SIGNATURE_LEN: usize = 64;
const VALUE_LEN: usize = 8 + HEAD_LEN + SIGNATURE_LEN;

/// True for the token objects this module owns (the audit key pair and the signed head),
/// which reconciliation must not report as drift.
pub fn is_audit_object(id: &[u8], label: &[u8]) -> bool {
    id == AUDIT_KEY_ID || id == HEAD_ID || label.starts_with(HEAD_LABEL.as_bytes())
}

/// A failure to make or check checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The token failed.
    #[error("token: {0}")]
    Token(#[from] TokenError),
    /// The log no longer extends the last signed head: keywardd refuses to sign over it.
    #[error("refusing to sign the audit chain: {0}")]
    Tampered(String),
    /// The token holds half of the audit key pair or a malformed signed head.
    #[error("the token's audit objects are damaged: {0}")]
    BadToken(String),
}

impl From<rusqlite::Error> for CheckpointError {
    fn from(e: rusqlite::Error) -> Self {
        CheckpointError::Store(StoreError::Sqlite(e))
    }
}

/// Results of this module.
pub type Result<T> = std::result::Result<T, CheckpointError>;

/// A signed head left unstored in the token this many times `store_every` refuses new
/// operations (design §6).
pub const OVERDUE_FACTOR: u32 = 10;

/// How often a failure to store the head is logged again while it lasts.
const STORE_FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);

/// When [`Checkpointer::maybe_checkpoint`] signs, and how often the token's head is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointConfig {
    /// Sign when at least this many records came since the last checkpoint. Default 1,000.
    pub every_records: u64,
    /// Sign when this long has passed since the last checkpoint and a record came.
    /// Default 10 s.
    pub every: Duration,
    /// Replace the token's signed head at most this often (and at a clean shutdown).
    /// Default 10 s.
    pub store_every: Duration,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            every_records: 1000,
            every: Duration::from_secs(10),
            store_every: Duration::from_secs(10),
        }
    }
}

impl CheckpointConfig {
    /// Signing every `interval` (and 1,000 records), storing at most every `interval`.
    pub fn every(interval: Duration) -> CheckpointConfig {
        CheckpointConfig {
            every: interval,
            store_every: interval,
            ..CheckpointConfig::default()
        }
    }
}

/// One signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Checkpoint {
    /// The record whose hash is signed.
    pub seq: i64,
    /// That record's hash, hex in JSON.
    #[serde(serialize_with = "hex_ser")]
    pub head: Vec<u8>,
    /// Raw ECDSA P-256 `r || s` over [`checkpoint_digest`], hex in JSON.
    #[serde(serialize_with = "hex_ser")]
    pub signature: Vec<u8>,
    /// When it was signed (ms since the epoch; 0 for the token copy, which has no time).
    pub time_ms: i64,
}

fn hex_ser<S: serde::Serializer>(v: &[u8], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&hex(v))
}

/// SHA-256(`keyward-audit-checkpoint-v1` || seq as 8 bytes big-endian || head): what the
/// audit key signs.
pub fn checkpoint_digest(seq: i64, head: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(CHECKPOINT_TAG);
    h.update(seq.to_be_bytes());
    h.update(head);
    h.finalize().into()
}

/// `CKA_VALUE` of the signed-head object.
fn encode_head(cp: &Checkpoint) -> Vec<u8> {
    let mut v = Vec::with_capacity(VALUE_LEN);
    v.extend_from_slice(&cp.seq.to_be_bytes());
    v.extend_from_slice(&cp.head);
    v.extend_from_slice(&cp.signature);
    v
}

/// Parses the `CKA_VALUE` of the signed-head object.
pub fn decode_head(value: &[u8]) -> Option<Checkpoint> {
    if value.len() != VALUE_LEN {
        return None;
    }
    let (seq, rest) = value.split_at(8);
    let (head, signature) = rest.split_at(HEAD_LEN);
    Some(Checkpoint {
        seq: i64::from_be_bytes(seq.try_into().ok()?),
        head: head.to_vec(),
        signature: signature.to_vec(),
        time_ms: 0,
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Makes the audit key pair unless the token has it. Returns true if it was generated now.
pub fn ensure_audit_key(token: &Token) -> Result<bool> {
    let present = |token: &Token| -> Result<(bool, bool)> {
        let objects = token.find_by_id(AUDIT_KEY_ID)?;
        Ok((
            objects.iter().any(|o| o.class == ObjectClass::PRIVATE_KEY),
            objects.iter().any(|o| o.class == ObjectClass::PUBLIC_KEY),
        ))
    };
    match present(token)? {
        (true, true) => return Ok(false),
        (false, false) => {}
        (private, public) => {
            return Err(CheckpointError::BadToken(format!(
                "the audit key pair ({AUDIT_KEY_LABEL}) is incomplete: private key {}, \
                 public key {}",
                if private { "present" } else { "missing" },
                if public { "present" } else { "missing" },
            )))
        }
    }
    let spec = KeySpec {
        algorithm: Algorithm::EcSignP256Sha256,
        id: AUDIT_KEY_ID,
        label: AUDIT_KEY_LABEL,
        exportable: false,
    };
    match token.generate_key(&spec) {
        Ok(_) => {
            tracing::info!(
                label = AUDIT_KEY_LABEL,
                "generated the audit key in the token"
            );
            Ok(true)
        }
        // Another checkpointer made it meanwhile.
        Err(TokenError::InvalidArgument(_)) if present(token)? == (true, true) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The latest signed head kept in the token, if any. An object whose value is not a signed
/// head is an error; of several (a crash while replacing one), the highest seq wins.
pub fn token_head(token: &Token) -> Result<Option<Checkpoint>> {
    let values = token.signed_heads()?;
    let mut best: Option<Checkpoint> = None;
    for v in values {
        let cp = decode_head(&v).ok_or_else(|| {
            CheckpointError::BadToken(format!(
                "the {HEAD_LABEL} object holds {} bytes, not seq || head || signature \
                 ({VALUE_LEN} bytes)",
                v.len()
            ))
        })?;
        if best.as_ref().is_none_or(|b| cp.seq > b.seq) {
            best = Some(cp);
        }
    }
    Ok(best)
}

/// Writes `cp` as the token's signed head, replacing `previous` (the head this process
/// wrote last; without it every head found is replaced): [`Token::store_signed_head`].
/// Returns the new head's object.
fn store_token_head(
    token: &Token,
    cp: &Checkpoint,
    previous: Option<HeadObject>,
) -> Result<Option<HeadObject>> {
    Ok(Some(token.store_signed_head(&encode_head(cp), previous)?))
}

/// Verifies each `(digest, signature)` with the audit public key in one session.
/// `None` when the token has no audit public key.
fn verify_signatures(token: &Token, items: &[([u8; 32], &[u8])]) -> Result<Option<Vec<bool>>> {
    Ok(token.verify_ecdsa_digests(AUDIT_KEY_ID, items)?)
}

struct Inner {
    conn: Connection,
    /// The last signed (seq, head); (0, GENESIS) before the first checkpoint.
    last_seq: i64,
    last_head: Vec<u8>,
    last_at: Instant,
    /// The signed-head object this checkpointer made last (its handle), so the next one
    /// replaces it without a token-wide search; `None`: search (at the first checkpoint).
    head_object: Option<HeadObject>,
    /// The latest checkpoint not yet in the token.
    unstored: Option<Checkpoint>,
    /// The seq of the head this process knows the token holds.
    stored_seq: i64,
    /// When the token's head last became older than the latest checkpoint (monotonic, and
    /// as ms since the epoch for reports); `None` while the token holds the latest.
    unstored_since: Option<(Instant, i64)>,
    /// When the head was last stored; `None` before this process stored one.
    stored_at: Option<Instant>,
    /// Failed stores since the last success, and when the failure was last logged.
    store_failures: u64,
    failure_logged: Option<Instant>,
}

/// Signs the chain head every 1,000 records or 10 s (see the module header). `Send + Sync`.
pub struct Checkpointer {
    token: Arc<Token>,
    config: CheckpointConfig,
    signed_seq: AtomicI64,
    inner: Mutex<Inner>,
    /// Set while the head has been unstored for [`OVERDUE_FACTOR`]x `store_every`.
    overdue: Arc<AtomicBool>,
}

impl fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checkpointer")
            .field("config", &self.config)
            .field("signed_seq", &self.signed_seq())
            .finish_non_exhaustive()
    }
}

const LAST_RECORD: &str = "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1";
const HASH_AT: &str = "SELECT hash FROM audit_log WHERE seq = ?1";
const LAST_CHECKPOINT: &str =
    "SELECT seq, head, signature, time_ms FROM audit_checkpoints ORDER BY seq DESC LIMIT 1";
const INSERT_CHECKPOINT: &str =
    "INSERT INTO audit_checkpoints(seq, head, signature, time_ms) VALUES (?1, ?2, ?3, ?4) \
     ON CONFLICT(seq) DO UPDATE SET head = ?2, signature = ?3, time_ms = ?4";
const ALL_CHECKPOINTS: &str =
    "SELECT seq, head, signature, time_ms FROM audit_checkpoints ORDER BY seq";

fn checkpoint_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Checkpoint> {
    Ok(Checkpoint {
        seq: r.get(0)?,
        head: r.get(1)?,
        signature: r.get(2)?,
        time_ms: r.get(3)?,
    })
}

impl Checkpointer {
    /// Opens its own connection to the store at `path` (created and migrated by
    /// [`crate::store::Store::open`]), makes or finds the audit key, and takes the last
    /// signed head from the token and the checkpoint table (the later of the two).
    pub fn open(path: &Path, token: Arc<Token>, config: CheckpointConfig) -> Result<Checkpointer> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        // A checkpoint (and so every record before it) is on disk before the token says so.
        conn.execute_batch("PRAGMA synchronous=FULL")?;
        ensure_audit_key(&token)?;
        // Learnt now, so status and verify know it (design §6: a data object, else a
        // dedicated object's label, else no token head).
        token.head_storage()?;
        let in_token = token_head(&token)?;
        let in_table = conn
            .query_row(LAST_CHECKPOINT, [], checkpoint_row)
            .optional()?;
        let token_seq = in_token.as_ref().map_or(0, |c| c.seq);
        // A checkpoint the token does not hold yet (a crash between the two, or a store that
        // kept failing): stored at the first tick.
        let unstored = in_table.clone().filter(|d| d.seq > token_seq);
        let last = match (in_token, in_table) {
            (Some(t), Some(d)) => Some(if d.seq > t.seq { d } else { t }),
            (t, d) => t.or(d),
        };
        let (last_seq, last_head) = last.map_or((0, GENESIS.to_vec()), |c| (c.seq, c.head));
        let unstored_since = unstored.as_ref().map(|_| (Instant::now(), now_ms()));
        Ok(Checkpointer {
            token,
            config,
            signed_seq: AtomicI64::new(last_seq),
            inner: Mutex::new(Inner {
                conn,
                last_seq,
                last_head,
                last_at: Instant::now(),
                head_object: None,
                unstored,
                stored_seq: token_seq,
                unstored_since,
                stored_at: None,
                store_failures: 0,
                failure_logged: None,
            }),
            overdue: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The flag set while the token's head has been unstored for [`OVERDUE_FACTOR`]x
    /// `store_every`: the audit writer counts as unhealthy meanwhile
    /// ([`super::writer::WriterConfig::hold`]).
    pub fn overdue(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.overdue)
    }

    /// The seq of the last signed head (0 before the first checkpoint).
    pub fn signed_seq(&self) -> i64 {
        self.signed_seq.load(Ordering::Acquire)
    }

    /// The settings.
    pub fn config(&self) -> CheckpointConfig {
        self.config
    }

    /// Signs the chain head if at least `every_records` records, or at least one record and
    /// `every`, came since the last checkpoint; returns the checkpoint made, if any.
    pub fn maybe_checkpoint(&self) -> Result<Option<Checkpoint>> {
        self.checkpoint(false)
    }

    /// Signs the chain head now unless it is signed already (clean shutdown).
    pub fn checkpoint_now(&self) -> Result<Option<Checkpoint>> {
        self.checkpoint(true)
    }

    fn checkpoint(&self, force: bool) -> Result<Option<Checkpoint>> {
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        let made = self.sign_if_due(inner, force);
        if let Ok(Some(cp)) = &made {
            inner.unstored = Some(cp.clone());
            inner
                .unstored_since
                .get_or_insert((Instant::now(), cp.time_ms));
        }
        // Even when signing failed or was not due: a head that could not be stored before
        // is retried at every tick.
        let stored = self.store_if_due(inner, force);
        let made = made?;
        stored?;
        Ok(made)
    }

    /// Signs the chain head into `audit_checkpoints` if it is due (or `force`).
    fn sign_if_due(&self, inner: &mut Inner, force: bool) -> Result<Option<Checkpoint>> {
        // Read the head and check the records since the last signed head in one snapshot.
        let tx = inner
            .conn
            .transaction_with_behavior(TransactionBehavior::Deferred)?;
        let Some((seq, head)) = tx
            .query_row(LAST_RECORD, [], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .optional()?
        else {
            if inner.last_seq > 0 {
                return Err(self.tampered(format!(
                    "the log is empty but record {} was signed",
                    inner.last_seq
                )));
            }
            return Ok(None);
        };
        if seq < inner.last_seq {
            return Err(self.tampered(format!(
                "the log ends at record {seq} but record {} was signed: records were deleted",
                inner.last_seq
            )));
        }
        if seq == inner.last_seq {
            if head != inner.last_head {
                return Err(self.tampered(format!(
                    "record {seq} no longer has the signed hash: the chain was rewritten"
                )));
            }
            return Ok(None);
        }
        let due = u64::try_from(seq - inner.last_seq).unwrap_or(u64::MAX)
            >= self.config.every_records
            || inner.last_at.elapsed() >= self.config.every;
        if !force && !due {
            return Ok(None);
        }
        extends(&tx, inner.last_seq, &inner.last_head, seq).map_err(|why| self.tampered(why))?;
        tx.commit()?;

        let digest = checkpoint_digest(seq, &head);
        let signature = self
            .token
            .sign(AUDIT_KEY_ID, SignMechanism::Ecdsa, &digest)?;
        let cp = Checkpoint {
            seq,
            head,
            signature,
            time_ms: now_ms(),
        };
        let tx = inner
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            INSERT_CHECKPOINT,
            params![cp.seq, cp.head, cp.signature, cp.time_ms],
        )?;
        tx.commit()?;
        inner.last_seq = cp.seq;
        inner.last_head = cp.head.clone();
        inner.last_at = Instant::now();
        self.signed_seq.store(cp.seq, Ordering::Release);
        tracing::debug!(seq = cp.seq, "signed audit checkpoint");
        Ok(Some(cp))
    }

    /// Replaces the token's signed head with the latest checkpoint when one is unstored and
    /// `store_every` has passed since the last store (or `force`, or at this process's first
    /// store). A failure is logged (rate-limited) and retried at the next tick; only a forced
    /// store (clean shutdown) returns it. Updates [`Checkpointer::overdue`].
    fn store_if_due(&self, inner: &mut Inner, force: bool) -> Result<()> {
        let mut result = Ok(());
        if matches!(self.token.head_storage(), Ok(HeadStorage::Unavailable(_))) {
            // No head can be kept: nothing is unstored, and nothing is overdue (status and
            // verify say "no token head").
            inner.unstored = None;
            inner.unstored_since = None;
        }
        if let Some(cp) = inner.unstored.clone() {
            let due = force
                || inner
                    .stored_at
                    .is_none_or(|t| t.elapsed() >= self.config.store_every);
            if due {
                match store_token_head(&self.token, &cp, inner.head_object.take()) {
                    Ok(handle) => {
                        if inner.store_failures > 0 {
                            tracing::warn!(
                                seq = cp.seq,
                                failures = inner.store_failures,
                                "the signed audit head is stored in the token again"
                            );
                        }
                        inner.head_object = handle;
                        inner.stored_seq = cp.seq;
                        inner.stored_at = Some(Instant::now());
                        inner.unstored = None;
                        inner.unstored_since = None;
                        inner.store_failures = 0;
                        inner.failure_logged = None;
                    }
                    Err(e) => {
                        inner.store_failures += 1;
                        let log = inner
                            .failure_logged
                            .is_none_or(|t| t.elapsed() >= STORE_FAILURE_LOG_EVERY);
                        if log {
                            inner.failure_logged = Some(Instant::now());
                            tracing::error!(
                                error = %e,
                                token_seq = inner.stored_seq,
                                signed_seq = cp.seq,
                                failures = inner.store_failures,
                                "cannot store the signed audit head in the token (retried every \
                                 tick; truncation is detectable only up to the token's head)"
                            );
                        }
                        if force {
                            result = Err(e);
                        }
                    }
                }
            }
        }
        let overdue = inner
            .unstored_since
            .is_some_and(|(at, _)| at.elapsed() >= self.config.store_every * OVERDUE_FACTOR);
        if self.overdue.swap(overdue, Ordering::AcqRel) != overdue {
            if overdue {
                tracing::error!(
                    token_seq = inner.stored_seq,
                    "the signed audit head has not been stored in the token for {}x its \
                     interval: new operations are refused until it is",
                    OVERDUE_FACTOR
                );
            } else {
                tracing::warn!("the signed audit head is stored: operations are served again");
            }
        }
        result
    }

    fn tampered(&self, why: String) -> CheckpointError {
        tracing::error!(problem = %why, "audit log tampering detected; not signing");
        CheckpointError::Tampered(why)
    }
}

/// Checks that the records after `from_seq` up to `to_seq` are contiguous, each hash right,
/// and linked to `from_head` (the hash of record `from_seq`, still stored as such).
fn extends(
    conn: &Connection,
    from_seq: i64,
    from_head: &[u8],
    to_seq: i64,
) -> std::result::Result<(), String> {
    let db = |e: rusqlite::Error| format!("cannot read the log: {e}");
    if from_seq > 0 {
        let stored: Option<Vec<u8>> = conn
            .query_row(HASH_AT, [from_seq], |r| r.get(0))
            .optional()
            .map_err(db)?;
        match stored {
            None => return Err(format!("the signed record {from_seq} is missing")),
            Some(h) if h != from_head => {
                return Err(format!(
                    "record {from_seq} no longer has the signed hash: the chain was rewritten"
                ))
            }
            Some(_) => {}
        }
    }
    let sql = format!("SELECT {COLS} FROM audit_log WHERE seq > ?1 AND seq <= ?2 ORDER BY seq");
    let mut stmt = conn.prepare(&sql).map_err(db)?;
    let mut rows = stmt.query([from_seq, to_seq]).map_err(db)?;
    let (mut expected, mut prev) = (from_seq + 1, from_head.to_vec());
    while let Some(r) = rows.next().map_err(db)? {
        let rec = row(r).map_err(db)?;
        if rec.seq != expected {
            return Err(format!("record {expected} is missing"));
        }
        if rec.prev_hash != prev {
            return Err(format!(
                "record {} does not link to record {}",
                rec.seq,
                rec.seq - 1
            ));
        }
        if record_hash(rec.seq, &rec).as_slice() != rec.hash.as_slice() {
            return Err(format!("record {} does not match its hash", rec.seq));
        }
        prev = rec.hash;
        expected += 1;
    }
    if expected != to_seq + 1 {
        return Err(format!("record {expected} is missing"));
    }
    Ok(())
}

enum Tick {
    Nudge,
    Stop,
}

/// The thread of [`spawn_checkpointer`].
pub struct CheckpointerThread {
    checkpointer: Arc<Checkpointer>,
    tx: SyncSender<Tick>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for CheckpointerThread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointerThread")
            .field("checkpointer", &self.checkpointer)
            .finish_non_exhaustive()
    }
}

/// Runs `checkpointer.maybe_checkpoint()` every `tick` (1 s in keywardd) and when nudged,
/// logging failures with `tracing::error!`. Stop it with [`CheckpointerThread::stop`], then
/// call [`Checkpointer::checkpoint_now`] after the writer's shutdown.
pub fn spawn_checkpointer(checkpointer: Arc<Checkpointer>, tick: Duration) -> CheckpointerThread {
    let (tx, rx) = mpsc::sync_channel(1);
    let cp = Arc::clone(&checkpointer);
    let thread = std::thread::Builder::new()
        .name("audit-checkpointer".into())
        .spawn(move || loop {
            match rx.recv_timeout(tick) {
                Ok(Tick::Nudge) | Err(RecvTimeoutError::Timeout) => {
                    if let Err(e) = cp.maybe_checkpoint() {
                        tracing::error!(error = %e, "audit checkpoint failed");
                    }
                }
                Ok(Tick::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            }
        });
    let thread = match thread {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the audit checkpointer thread");
            None
        }
    };
    CheckpointerThread {
        checkpointer,
        tx,
        thread: Mutex::new(thread),
    }
}

impl CheckpointerThread {
    /// Asks for a `maybe_checkpoint` now (never blocks).
    pub fn nudge(&self) {
        let _ = self.tx.try_send(Tick::Nudge);
    }

    /// A commit hook for [`super::writer::WriterConfig::on_commit`]: nudges the thread when
    /// `every_records` records are due, so checkpoints keep pace with any record rate.
    pub fn notifier(&self) -> super::writer::OnCommit {
        let cp = Arc::clone(&self.checkpointer);
        let tx = self.tx.clone();
        Arc::new(move |seq| {
            let due = u64::try_from(seq - cp.signed_seq()).unwrap_or(0);
            if due >= cp.config.every_records {
                let _ = tx.try_send(Tick::Nudge);
            }
        })
    }

    /// The checkpointer.
    pub fn checkpointer(&self) -> &Arc<Checkpointer> {
        &self.checkpointer
    }

    /// Stops and joins the thread (idempotent). Does not sign: call
    /// [`Checkpointer::checkpoint_now`] once the writer has shut down.
    pub fn stop(&self) {
        let thread = self.thread.lock().take();
        if let Some(thread) = thread {
            // The channel holds one message: wait for room rather than lose the stop.
            let _ = self.tx.send(Tick::Stop);
            if thread.join().is_err() {
                tracing::error!("the audit checkpointer thread panicked");
            }
        }
    }
}

impl Drop for CheckpointerThread {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What [`verify_with_token`] found: the chain walk of [`super::verify`] plus the
/// checkpoints. Its JSON is the chain report's fields plus the ones below.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenVerifyReport {
    /// The chain walk; its `problems` also hold every checkpoint problem.
    #[serde(flatten)]
    pub chain: VerifyReport,
    /// Checkpoints in `audit_checkpoints`.
    pub checkpoints: u64,
    /// The seq of the signed head the token holds, if any.
    pub token_head_seq: Option<i64>,
    /// The last record covered by a valid signature that matches the chain (0: none).
    pub signed_seq: i64,
    /// Records after `signed_seq`: covered by the chain only.
    pub unsigned_tail: u64,
    /// When the token's head fell behind the latest checkpoint (ms since the epoch: the time
    /// of the first checkpoint it does not hold), if it is behind: a store failed, or is not
    /// due yet (design §6 stores at most every 10 s). Truncation is detectable only up to the
    /// token's head.
    pub token_head_stale_since_ms: Option<i64>,
    /// Records after the token's head (all of them without one): no truncation of these is
    /// detectable.
    pub after_token_head: u64,
    /// Set when the token cannot keep a signed head (design §6): why. Not a failure of the
    /// chain; truncation is then detectable by nothing in the token.
    pub no_token_head: Option<String>,
}

impl TokenVerifyReport {
    /// True if the chain and every checkpoint are intact.
    pub fn ok(&self) -> bool {
        self.chain.ok()
    }

    /// One line for operators, e.g. "2500 records intact, signed up to record 2000 (2
    /// checkpoints); 500 records after the last signed head are covered by the chain only".
    pub fn summary(&self) -> String {
        if !self.ok() {
            return format!(
                "audit log verification FAILED ({} records read): {}",
                self.chain.records,
                self.chain.problems.join("; ")
            );
        }
        let stale = match self.token_head_stale_since_ms {
            Some(t) => format!(
                "; token head stale since {} (record {}), {} records covered by the chain only",
                crate::admin::render::time_ms(t),
                self.token_head_seq.unwrap_or(0),
                self.after_token_head
            ),
            None => String::new(),
        };
        let none = match &self.no_token_head {
            Some(why) => format!(
                "; no token head: the token cannot keep one ({why}), so truncation of the log \
                 is not detectable (edits, deletions inside the log and recomputed chains are, \
                 by the chain and the signed checkpoints)"
            ),
            None => String::new(),
        };
        format!(
            "{} records intact, chain head {}, signed up to record {} ({} checkpoints); {} \
             records after the last signed head are covered by the chain only{stale}{none}",
            self.chain.records,
            self.chain.head,
            self.signed_seq,
            self.checkpoints,
            self.unsigned_tail
        )
    }
}

/// Verifies the audit log in `conn` against the checkpoints and the signed head in `token`:
/// the chain walk of [`super::verify`]; every stored checkpoint's signature verifies with
/// the token's audit key and its head is the chain's hash at its seq; the token's signed
/// head verifies and matches the chain at its seq (this catches truncation up to it and a
/// recomputed chain); and counts the records after the last signed head.
///
/// The token is read BEFORE the database. While keywardd runs, pass a plain connection or a
/// read transaction that has not read yet, so the snapshot is not older than the token's
/// head (which would look like truncation). `Err` only when the store or the token fails;
/// everything found is in the report's problems.
pub fn verify_with_token(conn: &Connection, token: &Token) -> Result<TokenVerifyReport> {
    let mut problems = Vec::new();
    let no_token_head = match token.head_storage()? {
        HeadStorage::Unavailable(why) => Some(why),
        _ => None,
    };
    let in_token = match token_head(token) {
        Ok(h) => h,
        Err(CheckpointError::BadToken(why)) => {
            problems.push(why);
            None
        }
        Err(e) => return Err(e),
    };
    let mut chain = super::verify(conn)?;
    let checkpoints: Vec<Checkpoint> = conn
        .prepare(ALL_CHECKPOINTS)?
        .query_map([], checkpoint_row)?
        .collect::<rusqlite::Result<_>>()?;

    let mut items: Vec<([u8; 32], &[u8])> = checkpoints
        .iter()
        .map(|c| (checkpoint_digest(c.seq, &c.head), c.signature.as_slice()))
        .collect();
    if let Some(t) = &in_token {
        items.push((checkpoint_digest(t.seq, &t.head), t.signature.as_slice()));
    }
    let valid = if items.is_empty() {
        Some(Vec::new())
    } else {
        verify_signatures(token, &items)?
    };
    let valid = match valid {
        Some(v) => v,
        None => {
            problems.push(format!(
                "the token holds no audit key ({AUDIT_KEY_LABEL}): {} checkpoints{} cannot be \
                 verified (wrong token, or the key was deleted)",
                checkpoints.len(),
                if in_token.is_some() {
                    " and the signed head"
                } else {
                    ""
                }
            ));
            vec![false; items.len()]
        }
    };

    let last_seq = chain.last_seq;
    let mut stmt = conn.prepare(HASH_AT)?;
    let mut hash_at = |seq: i64| -> Result<Option<Vec<u8>>> {
        Ok(stmt.query_row([seq], |r| r.get(0)).optional()?)
    };
    let mut signed_seq = 0i64;
    let mut check =
        |what: &str, cp: &Checkpoint, sig_ok: bool, problems: &mut Vec<String>| -> Result<()> {
            if !sig_ok {
                problems.push(format!(
                    "{what} at record {}: its signature does not verify with the token's audit \
                 key (forged or altered)",
                    cp.seq
                ));
                return Ok(());
            }
            match hash_at(cp.seq)? {
                None if cp.seq > last_seq => problems.push(format!(
                    "{what} at record {}: the log ends at record {last_seq}, so records {} to {} \
                 were deleted (truncated)",
                    cp.seq,
                    last_seq + 1,
                    cp.seq
                )),
                None => problems.push(format!(
                    "{what} at record {}: that record is missing (deleted)",
                    cp.seq
                )),
                Some(h) if h != cp.head => problems.push(format!(
                "{what} at record {}: the chain's hash there differs from the signed head (the \
                 chain was rewritten and recomputed)",
                cp.seq
            )),
                Some(_) => signed_seq = signed_seq.max(cp.seq),
            }
            Ok(())
        };
    for (cp, ok) in checkpoints.iter().zip(valid.iter()) {
        check("checkpoint", cp, *ok, &mut problems)?;
    }
    match &in_token {
        Some(t) => {
            check(
                "the token's signed head",
                t,
                valid.last().copied().unwrap_or(false),
                &mut problems,
            )?;
            if !checkpoints
                .iter()
                .any(|c| c.seq == t.seq && c.head == t.head)
            {
                problems.push(format!(
                    "the token's signed head (record {}) is missing from audit_checkpoints \
                     (checkpoint rows were deleted or changed)",
                    t.seq
                ));
            }
        }
        None if !checkpoints.is_empty() && no_token_head.is_none() => problems.push(format!(
            "the token holds no signed head ({HEAD_LABEL}) but {} checkpoints are stored \
             (wrong token, or the object was deleted)",
            checkpoints.len()
        )),
        None => {}
    }
    let unsigned_tail: i64 = conn.query_row(
        "SELECT COUNT(*) FROM audit_log WHERE seq > ?1",
        [signed_seq],
        |r| r.get(0),
    )?;
    let token_seq = in_token.as_ref().map_or(0, |t| t.seq);
    let token_head_stale_since_ms = checkpoints
        .iter()
        .find(|c| c.seq > token_seq && no_token_head.is_none())
        .map(|c| c.time_ms);
    let after_token_head: i64 = conn.query_row(
        "SELECT COUNT(*) FROM audit_log WHERE seq > ?1",
        [token_seq],
        |r| r.get(0),
    )?;
    chain.problems.extend(problems);
    Ok(TokenVerifyReport {
        chain,
        checkpoints: u64::try_from(checkpoints.len()).unwrap_or(u64::MAX),
        token_head_seq: in_token.map(|t| t.seq),
        signed_seq,
        unsigned_tail: u64::try_from(unsigned_tail).unwrap_or(0),
        token_head_stale_since_ms,
        after_token_head: u64::try_from(after_token_head).unwrap_or(0),
        no_token_head,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_value_round_trips_and_rejects_other_lengths() {
        let cp = Checkpoint {
            seq: 0x0102_0304_0506,
            head: vec![7; HEAD_LEN],
            signature: vec![9; SIGNATURE_LEN],
            time_ms: 0,
        };
        let v = encode_head(&cp);
        assert_eq!(v.len(), VALUE_LEN);
        assert_eq!(&v[..8], &0x0102_0304_0506i64.to_be_bytes());
        assert_eq!(decode_head(&v), Some(cp));
        assert_eq!(decode_head(&v[1..]), None);
        assert_eq!(decode_head(&[v.clone(), vec![0]].concat()), None);
    }

    #[test]
    fn digest_binds_tag_seq_and_head() {
        let head = [1u8; 32];
        let d = checkpoint_digest(1000, &head);
        assert_ne!(d, checkpoint_digest(1001, &head));
        assert_ne!(d, checkpoint_digest(1000, &[2u8; 32]));
        let mut h = Sha256::new();
        h.update(b"keyward-audit-checkpoint-v1");
        h.update(1000i64.to_be_bytes());
        h.update(head);
        assert_eq!(d, <[u8; 32]>::from(h.finalize()));
    }

    #[test]
    fn audit_objects_are_recognised() {
        assert!(is_audit_object(b"keyward-audit-key", b"anything"));
        assert!(is_audit_object(b"", b"keyward-audit-head"));
        // The dedicated head object of a token that refuses data objects (design §6).
        assert!(is_audit_object(
            b"keyward-audit-head",
            b"keyward-audit-head 00ff"
        ));
        assert!(!is_audit_object(&[0u8; 16], b"projects/p/keyRings/r"));
    }

    /// Design §6: on a token that can keep no head, verify says "no token head" and what is
    /// lost, and that is not a failure.
    #[test]
    fn no_token_head_is_reported_not_failed() {
        let report = TokenVerifyReport {
            chain: VerifyReport {
                records: 10,
                last_seq: 10,
                head: "ab".into(),
                problems: Vec::new(),
            },
            checkpoints: 1,
            token_head_seq: None,
            signed_seq: 10,
            unsigned_tail: 0,
            token_head_stale_since_ms: None,
            after_token_head: 10,
            no_token_head: Some("refused".into()),
        };
        assert!(report.ok());
        let line = report.summary();
        assert!(
            line.contains("no token head")
                && line.contains("truncation of the log is not detectable"),
            "{line}"
        );
    }
}
