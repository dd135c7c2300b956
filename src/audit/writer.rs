//! The background audit writer (design §6): one thread that owns its own SQLite connection and
//! appends the records of the data path with group commit, and fails closed.
//!
//! # Data flow
//! Callers [`AuditWriter::submit`] a [`NewRecord`] into a bounded channel and go on (an allowed
//! operation never waits for the disk), or [`AuditWriter::submit_and_wait`] when the record
//! must be committed before they proceed. The writer thread takes everything queued and
//! appends it to the hash chain ([`super::append`]) in ONE `BEGIN IMMEDIATE` transaction: one
//! commit (and one fsync) per batch, however many threads submit. Under load it commits at
//! most once per batching window ([`WriterConfig::batch_window`], 10 ms by default), so a
//! batch gathers everything that arrives in the window; a record somebody waits for, a
//! [`AuditWriter::flush`] or a shutdown commits at once. When the queue is full `submit`
//! blocks until the writer has taken a batch (back-pressure; bounded by the busy timeout,
//! after which the writer fails and drains the queue).
//!
//! # Durability: what a crash can lose
//! The writer connection runs WAL with `synchronous=FULL` by default ([`Synchronous::Full`]):
//! each batch is fsynced by the writer thread when it commits, and no caller of `submit` waits
//! for that fsync. A crash of the process, the OS or the power therefore loses at most the
//! records submitted in the last batching window (10 ms by default) plus the one commit in
//! flight. [`Synchronous::Normal`] (WAL's usual setting) makes commits cheaper but only the
//! process-crash bound holds: after an OS crash or power loss, SQLite may lose every commit
//! since the last WAL checkpoint (still a consistent, intact chain, just shorter).
//! `submit_and_wait` returns after the commit (and, with `Full`, the fsync) of its record.
//!
//! # Failing closed
//! If a batch cannot be committed (disk full, read-only database, I/O error, the database
//! locked for longer than the busy timeout) the writer enters the failed state: it logs the
//! cause with `tracing::error!`, [`AuditWriter::is_healthy`] turns false and every further
//! `submit`, `submit_and_wait` and `flush` returns [`AuditUnavailable::Failed`], so callers
//! deny new operations. Records already accepted with `submit` (their operations went ahead)
//! are kept in memory and retried; records whose submitter waits are refused to it, never
//! written later. Every [`WriterConfig::retry_interval`] the writer reopens its connection
//! and tries again; on success it writes the kept records, then the denials of the operations
//! refused meanwhile ([`AuditWriter::refuse`], up to [`MAX_REFUSALS_KEPT`]), then an
//! `audit.unavailable` record (principal `keywardd`) that names the outage, its cause and how
//! many submissions were refused, and turns healthy.
//!
//! # Shutdown
//! [`AuditWriter::shutdown`] (also run on drop) refuses new records, writes everything queued
//! and joins the thread. A record submitted concurrently with the shutdown may be refused.
//!
//! # Locks
//! Only `Shared::failure` (the cause text) and `AuditWriter::thread`, each held for a few
//! instructions and never across a database call or each other.

use super::coalesce::{Coalescer, Limits, CKR_DEVICE_MEMORY};
use super::{append_counted, NewRecord, Outcome};
use crate::store::StoreError;
use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// While a batch gathers, how often the writer looks at the queue.
const GATHER_POLL: Duration = Duration::from_millis(1);
/// How many denials of operations refused during one outage are kept in memory and written
/// when the log is writable again; beyond that they are only counted.
pub const MAX_REFUSALS_KEPT: usize = 10_000;

/// `CKR_DEVICE_ERROR`: what an operation refused for want of an audit log returns.
pub use keyward_wire::rv::CKR_DEVICE_ERROR;

/// Why a record was not accepted: the caller must deny its operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditUnavailable {
    /// The writer cannot persist records (the cause); it retries in the background.
    #[error("the audit log cannot be written ({0}); operations are refused until it can")]
    Failed(String),
    /// The writer has been shut down.
    #[error("the audit writer has stopped")]
    Stopped,
    /// The caller's peer uid is over its audit rate (design §9): its operation is refused
    /// (the refusal itself is recorded, coalesced).
    #[error("peer uid {0} is over its audit rate: operation refused")]
    RateLimited(u32),
}

impl AuditUnavailable {
    /// The CK_RV an operation refused for this returns (store errors are
    /// `CKR_DEVICE_ERROR`, style.md).
    pub fn ck_rv(&self) -> u64 {
        match self {
            AuditUnavailable::Failed(_) | AuditUnavailable::Stopped => CKR_DEVICE_ERROR,
            // A resource limit of the caller, not a fault of the service.
            AuditUnavailable::RateLimited(_) => CKR_DEVICE_MEMORY,
        }
    }
}

/// SQLite's `synchronous` setting of the writer connection (see the module header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// fsync at every commit: a crash of any kind loses at most the last batching window.
    Full,
    /// fsync only at WAL checkpoints: a process crash loses at most the last window; an OS
    /// crash or power loss may lose every commit since the last WAL checkpoint.
    Normal,
}

/// Called with the last committed seq after every successful commit (for example
/// [`super::checkpoint::CheckpointerThread::notifier`]). Runs on the writer thread: keep it
/// short and never block.
pub type OnCommit = Arc<dyn Fn(i64) + Send + Sync>;

/// Settings of the writer.
#[derive(Clone)]
pub struct WriterConfig {
    /// Under load, commits are at least this far apart so that a batch gathers what arrives
    /// meanwhile; a record submitted with `submit` waits at most this long before its
    /// commit starts. Default 10 ms.
    pub batch_window: Duration,
    /// Records per transaction at most. Default 1024.
    pub max_batch: usize,
    /// Records queued at most before `submit` blocks. Default 1024. With the batch in
    /// flight, this bounds what a crash can lose of records `submit` acknowledged: about
    /// 2,000 records, i.e. some 10-20 ms at the writer's full rate (design §6); a larger
    /// queue absorbs bursts but loses more on a crash.
    pub queue_capacity: usize,
    /// How often a failed writer retries. Default 1 s.
    pub retry_interval: Duration,
    /// How long a commit waits for another connection's write lock before the writer counts
    /// as failed. Default 5 s.
    pub busy_timeout: Duration,
    /// The writer connection's `synchronous`. Default [`Synchronous::Full`].
    pub synchronous: Synchronous,
    /// Called after every commit; `None` by default.
    pub on_commit: Option<OnCommit>,
    /// While this flag is set the writer counts as unhealthy, so new operations are refused
    /// as in an outage (the checkpointer's: the token's signed head overdue, design §6);
    /// records are still written. `None` by default.
    pub hold: Option<Arc<AtomicBool>>,
    /// Coalescing of identical denials and the per-uid audit rate ([`super::coalesce`]).
    pub limits: Limits,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            batch_window: Duration::from_millis(10),
            max_batch: 1024,
            queue_capacity: 1024,
            retry_interval: Duration::from_secs(1),
            busy_timeout: Duration::from_secs(5),
            synchronous: Synchronous::Full,
            on_commit: None,
            hold: None,
            limits: Limits::default(),
        }
    }
}

impl fmt::Debug for WriterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriterConfig")
            .field("batch_window", &self.batch_window)
            .field("max_batch", &self.max_batch)
            .field("queue_capacity", &self.queue_capacity)
            .field("retry_interval", &self.retry_interval)
            .field("busy_timeout", &self.busy_timeout)
            .field("synchronous", &self.synchronous)
            .field("on_commit", &self.on_commit.is_some())
            .field("limits", &self.limits)
            .finish()
    }
}

/// Counters of the writer, for health endpoints and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterStatus {
    /// False while the writer cannot persist (new records are refused).
    pub healthy: bool,
    /// The cause of the current failure.
    pub failure: Option<String>,
    /// The seq of the last record this writer committed (0 before the first).
    pub last_seq: i64,
    /// Records committed by this writer.
    pub written: u64,
    /// Transactions committed by this writer (`written / commits` is the mean batch).
    pub commits: u64,
    /// Submissions refused because the writer had failed.
    pub refused: u64,
    /// Times the writer entered the failed state.
    pub failures: u64,
}

/// A oneshot reply to a waiting caller.
type Reply = SyncSender<Result<i64, AuditUnavailable>>;

/// A record and how many identical denials it stands for.
type Counted = (NewRecord, u64);

enum Msg {
    Record(Box<Counted>, Option<Reply>),
    /// The denial of an operation refused because the log could not be written.
    Refused(Box<NewRecord>),
    Flush(Reply),
    Shutdown(Reply),
}

struct Shared {
    healthy: AtomicBool,
    stopped: AtomicBool,
    failure: Mutex<Option<String>>,
    last_seq: AtomicI64,
    written: AtomicU64,
    commits: AtomicU64,
    refused: AtomicU64,
    failures: AtomicU64,
}

/// The background audit writer (see the module header). `Send + Sync`: share it behind an
/// `Arc` between every thread that records.
pub struct AuditWriter {
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
    hold: Option<Arc<AtomicBool>>,
    coalescer: Arc<Mutex<Coalescer>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for AuditWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditWriter")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl AuditWriter {
    /// Opens a second connection to the store at `path` (which [`crate::store::Store::open`]
    /// has created and migrated) and starts the writer thread. Fails if the database cannot
    /// be opened at all; a database that opens but cannot be written makes the first commit
    /// fail, which fails closed.
    pub fn open(path: &Path, config: WriterConfig) -> Result<AuditWriter, StoreError> {
        let conn = open_connection(path, &config)?;
        let hold = config.hold.clone();
        let (tx, rx) = mpsc::sync_channel(config.queue_capacity.max(1));
        let shared = Arc::new(Shared {
            healthy: AtomicBool::new(true),
            stopped: AtomicBool::new(false),
            failure: Mutex::new(None),
            last_seq: AtomicI64::new(0),
            written: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        });
        // As if the last commit were a window ago: the first record commits at once.
        let now = Instant::now();
        let last_commit = now.checked_sub(config.batch_window).unwrap_or(now);
        let coalescer = Arc::new(Mutex::new(Coalescer::new(config.limits)));
        let sweep_every = config
            .limits
            .window
            .min(Duration::from_secs(1))
            .max(Duration::from_millis(10));
        let worker = Worker {
            coalescer: Arc::clone(&coalescer),
            sweep_every,
            next_sweep: now + sweep_every,
            path: path.to_owned(),
            config,
            conn: Some(conn),
            rx,
            shared: Arc::clone(&shared),
            kept: Vec::new(),
            refusals: Vec::new(),
            refusals_dropped: 0,
            outage: None,
            last_commit,
        };
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || worker.run())
            .map_err(|e| StoreError::Corrupt(format!("cannot start the audit writer: {e}")))?;
        Ok(AuditWriter {
            tx,
            shared,
            hold,
            coalescer,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues `record` and returns at once; the writer commits it within the batching
    /// window. A denial identical to a recent one is only counted, and a record of a peer uid
    /// over its audit rate becomes a coalesced refusal ([`super::coalesce`]). An error means
    /// the record was NOT accepted: deny the operation
    /// ([`AuditUnavailable::RateLimited`]: the uid is over its rate; its refusal is recorded).
    pub fn submit(&self, record: NewRecord) -> Result<(), AuditUnavailable> {
        self.admit()?;
        let admission = self.coalescer.lock().admit(record, Instant::now());
        for counted in admission.write {
            self.tx
                .send(Msg::Record(Box::new(counted), None))
                .map_err(|_| AuditUnavailable::Stopped)?;
        }
        match admission.refused {
            Some(uid) => Err(AuditUnavailable::RateLimited(uid)),
            None => Ok(()),
        }
    }

    /// The coalescing window and the per-uid audit rate in force.
    pub fn limits(&self) -> Limits {
        self.coalescer.lock().limits()
    }

    /// Queues `record` and waits until it is committed; returns its seq. An error means it
    /// was not and will not be written: deny the operation. Never coalesced or rate-limited
    /// (for the few records that must be durable before their operation proceeds).
    pub fn submit_and_wait(&self, record: NewRecord) -> Result<i64, AuditUnavailable> {
        self.admit()?;
        let (reply, answer) = mpsc::sync_channel(1);
        self.tx
            .send(Msg::Record(Box::new((record, 1)), Some(reply)))
            .map_err(|_| AuditUnavailable::Stopped)?;
        answer.recv().unwrap_or(Err(AuditUnavailable::Stopped))
    }

    /// Records the denial of an operation refused because the log cannot be written (the
    /// caller has already refused it): counted as a refused submission and kept for the
    /// recovery, never blocking. While the writer is healthy it is an ordinary `submit`.
    pub fn refuse(&self, record: NewRecord) {
        if self.shared.stopped.load(Ordering::Acquire) {
            return;
        }
        if self.is_healthy() {
            let _ = self.submit(record);
            return;
        }
        self.shared.refused.fetch_add(1, Ordering::Relaxed);
        // A full queue drops the record; the count above still reports it.
        let _ = self.tx.try_send(Msg::Refused(Box::new(record)));
    }

    /// Waits until everything submitted before the call is committed; returns the last seq
    /// this writer committed. Fails while the writer has failed.
    pub fn flush(&self) -> Result<i64, AuditUnavailable> {
        if self.shared.stopped.load(Ordering::Acquire) {
            return Err(AuditUnavailable::Stopped);
        }
        let (reply, answer) = mpsc::sync_channel(1);
        self.tx
            .send(Msg::Flush(reply))
            .map_err(|_| AuditUnavailable::Stopped)?;
        answer.recv().unwrap_or(Err(AuditUnavailable::Stopped))
    }

    /// Refuses new records, writes everything queued and stops the thread. Idempotent; the
    /// first call reports whether the final write succeeded.
    pub fn shutdown(&self) -> Result<(), AuditUnavailable> {
        let result = if self.shared.stopped.swap(true, Ordering::AcqRel) {
            Ok(())
        } else {
            let (reply, answer) = mpsc::sync_channel(1);
            match self.tx.send(Msg::Shutdown(reply)) {
                Ok(()) => answer
                    .recv()
                    .unwrap_or(Err(AuditUnavailable::Stopped))
                    .map(|_| ()),
                Err(_) => Err(AuditUnavailable::Stopped),
            }
        };
        let thread = self.thread.lock().take();
        if let Some(thread) = thread {
            if thread.join().is_err() {
                tracing::error!("the audit writer thread panicked");
            }
        }
        result
    }

    /// False while the writer cannot persist: new operations must be denied.
    pub fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire)
            && !self.shared.stopped.load(Ordering::Acquire)
            && !self
                .hold
                .as_ref()
                .is_some_and(|h| h.load(Ordering::Acquire))
    }

    /// The writer's counters.
    pub fn status(&self) -> WriterStatus {
        let s = &self.shared;
        WriterStatus {
            healthy: s.healthy.load(Ordering::Acquire),
            failure: s.failure.lock().clone(),
            last_seq: s.last_seq.load(Ordering::Acquire),
            written: s.written.load(Ordering::Relaxed),
            commits: s.commits.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            failures: s.failures.load(Ordering::Relaxed),
        }
    }

    fn admit(&self) -> Result<(), AuditUnavailable> {
        if self.shared.stopped.load(Ordering::Acquire) {
            return Err(AuditUnavailable::Stopped);
        }
        if !self.shared.healthy.load(Ordering::Acquire) {
            self.shared.refused.fetch_add(1, Ordering::Relaxed);
            let cause = self
                .shared
                .failure
                .lock()
                .clone()
                .unwrap_or_else(|| "unknown failure".into());
            return Err(AuditUnavailable::Failed(cause));
        }
        Ok(())
    }
}

impl Drop for AuditWriter {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(error = %e, "audit writer: records queued at shutdown were not written");
        }
    }
}

fn open_connection(path: &Path, config: &WriterConfig) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(config.busy_timeout)?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Corrupt(format!(
            "the audit writer cannot switch the database to WAL (got {mode})"
        )));
    }
    let sync = match config.synchronous {
        Synchronous::Full => "PRAGMA synchronous=FULL",
        Synchronous::Normal => "PRAGMA synchronous=NORMAL",
    };
    conn.execute_batch(sync)?;
    Ok(conn)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What one pass of the writer took from the queue.
#[derive(Default)]
struct Batch {
    records: Vec<(Counted, Option<Reply>)>,
    flushes: Vec<Reply>,
    shutdown: Option<Reply>,
    /// Someone waits: commit without waiting for the window.
    urgent: bool,
}

impl Batch {
    fn add(&mut self, msg: Msg) {
        match msg {
            Msg::Record(r, reply) => {
                self.urgent |= reply.is_some();
                self.records.push((*r, reply));
            }
            // The outage ended before the writer saw it: an ordinary record.
            Msg::Refused(r) => self.records.push(((*r, 1), None)),
            Msg::Flush(reply) => {
                self.urgent = true;
                self.flushes.push(reply);
            }
            Msg::Shutdown(reply) => {
                self.urgent = true;
                self.shutdown = Some(reply);
            }
        }
    }
}

/// Since when and why the writer cannot persist.
struct Outage {
    since_ms: i64,
    cause: String,
    refused_before: u64,
    next_retry: Instant,
}

struct Worker {
    /// The open coalescing windows, shared with the submitters.
    coalescer: Arc<Mutex<Coalescer>>,
    /// How often the windows that ended are swept into a batch.
    sweep_every: Duration,
    next_sweep: Instant,
    path: PathBuf,
    config: WriterConfig,
    /// `None` after a failure: reopened at the next attempt.
    conn: Option<Connection>,
    rx: Receiver<Msg>,
    shared: Arc<Shared>,
    /// Records accepted with `submit` whose commit failed; written first when possible.
    kept: Vec<Counted>,
    /// Denials of operations refused during the outage (at most [`MAX_REFUSALS_KEPT`]).
    refusals: Vec<Counted>,
    /// Denials of the outage beyond [`MAX_REFUSALS_KEPT`] (counted only).
    refusals_dropped: u64,
    outage: Option<Outage>,
    last_commit: Instant,
}

impl Worker {
    fn run(mut self) {
        loop {
            let stop = if self.outage.is_some() {
                self.run_failed()
            } else {
                self.run_healthy()
            };
            if stop {
                return;
            }
        }
    }

    /// One batch: block for the first message, gather until the window closes, commit.
    /// Returns true when the writer must stop.
    fn run_healthy(&mut self) -> bool {
        let mut batch = Batch::default();
        loop {
            let wait = self.next_sweep.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(wait) {
                Ok(msg) => {
                    batch.add(msg);
                    break;
                }
                Err(RecvTimeoutError::Timeout) => {
                    // Coalescing windows that ended: their counts are records now.
                    if self.sweep(&mut batch, false) {
                        break;
                    }
                }
                // Every sender is gone (the AuditWriter was leaked or dropped without
                // shutdown).
                Err(RecvTimeoutError::Disconnected) => return true,
            }
        }
        let max = self.config.max_batch.max(1);
        while !batch.urgent && batch.records.len() < max {
            match self.rx.try_recv() {
                Ok(msg) => batch.add(msg),
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    let deadline = self.last_commit + self.config.batch_window;
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    // Sleep and look again rather than block on the channel: a blocked
                    // receiver is woken by every send, which would cost each audited
                    // operation a wake-up of this thread (issue 9's profile). A waiter
                    // (submit_and_wait, flush, shutdown) waits at most one GATHER_POLL more.
                    std::thread::sleep((deadline - now).min(GATHER_POLL));
                }
            }
        }
        // A waiter, flush or shutdown: take what else is already queued into the same commit.
        while batch.records.len() < max && batch.shutdown.is_none() {
            match self.rx.try_recv() {
                Ok(msg) => batch.add(msg),
                Err(_) => break,
            }
        }
        if batch.shutdown.is_some() {
            self.drain_into(&mut batch);
        }
        // A flush or a shutdown writes every pending count; otherwise the windows that ended.
        let all = batch.shutdown.is_some() || !batch.flushes.is_empty();
        self.sweep(&mut batch, all);
        self.commit_batch(batch)
    }

    /// Adds the counts of the coalescing windows that ended (every pending count if `all`)
    /// to `batch`; true if there were any.
    fn sweep(&mut self, batch: &mut Batch, all: bool) -> bool {
        let now = Instant::now();
        if !all && now < self.next_sweep {
            return false;
        }
        self.next_sweep = now + self.sweep_every;
        let due = {
            let mut c = self.coalescer.lock();
            if all {
                c.take_all()
            } else {
                c.take_due(now)
            }
        };
        let any = !due.is_empty();
        batch
            .records
            .extend(due.into_iter().map(|counted| (counted, None)));
        any
    }

    /// At shutdown: everything still queued joins the final batch.
    fn drain_into(&mut self, batch: &mut Batch) {
        while let Ok(msg) = self.rx.try_recv() {
            batch.add(msg);
        }
    }

    /// Commits `batch` (after any kept records); answers its waiters. Returns true at shutdown.
    fn commit_batch(&mut self, batch: Batch) -> bool {
        let Batch {
            records,
            flushes,
            shutdown,
            ..
        } = batch;
        let kept_records = std::mem::take(&mut self.kept);
        let kept = kept_records.len();
        let result = {
            let all: Vec<&Counted> = kept_records
                .iter()
                .chain(records.iter().map(|(r, _)| r))
                .collect();
            self.write(&all)
        };
        match result {
            Ok(seqs) => {
                let last = seqs.last().copied();
                for ((_, reply), seq) in records.into_iter().zip(seqs.into_iter().skip(kept)) {
                    if let Some(reply) = reply {
                        let _ = reply.try_send(Ok(seq));
                    }
                }
                let last = last.unwrap_or_else(|| self.shared.last_seq.load(Ordering::Acquire));
                for reply in flushes {
                    let _ = reply.try_send(Ok(last));
                }
                if let Some(reply) = shutdown {
                    let _ = reply.try_send(Ok(last));
                    return true;
                }
                false
            }
            Err(e) => {
                let cause = e.to_string();
                self.enter_failed(&cause);
                self.kept = kept_records;
                let refused = AuditUnavailable::Failed(cause);
                for (record, reply) in records {
                    match reply {
                        // The submitter is told and denies its operation: never written.
                        Some(reply) => {
                            let _ = reply.try_send(Err(refused.clone()));
                        }
                        // Its operation went ahead: keep it for the retry.
                        None => self.kept.push(record),
                    }
                }
                for reply in flushes {
                    let _ = reply.try_send(Err(refused.clone()));
                }
                if let Some(reply) = shutdown {
                    self.give_up();
                    let _ = reply.try_send(Err(refused));
                    return true;
                }
                false
            }
        }
    }

    /// Appends `records` in one transaction; returns their seqs.
    fn write(&mut self, records: &[&Counted]) -> Result<Vec<i64>, StoreError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let conn = match &mut self.conn {
            Some(conn) => conn,
            slot => slot.insert(open_connection(&self.path, &self.config)?),
        };
        let result = (|| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut seqs = Vec::with_capacity(records.len());
            for (r, count) in records {
                seqs.push(append_counted(&tx, r, *count)?);
            }
            tx.commit()?;
            Ok(seqs)
        })();
        match &result {
            Ok(seqs) => {
                self.last_commit = Instant::now();
                let last = seqs.last().copied().unwrap_or(0);
                let n = u64::try_from(seqs.len()).unwrap_or(u64::MAX);
                self.shared.last_seq.store(last, Ordering::Release);
                self.shared.written.fetch_add(n, Ordering::Relaxed);
                self.shared.commits.fetch_add(1, Ordering::Relaxed);
                if let Some(hook) = &self.config.on_commit {
                    hook(last);
                }
            }
            // Reopen at the next attempt: a connection that opened read-only or lost its
            // file stays broken.
            Err(_) => self.conn = None,
        }
        result
    }

    fn enter_failed(&mut self, cause: &str) {
        if self.outage.is_none() {
            tracing::error!(
                error = cause,
                "audit log cannot be written: new operations are refused until it can"
            );
            *self.shared.failure.lock() = Some(cause.to_owned());
            self.shared.healthy.store(false, Ordering::Release);
            self.shared.failures.fetch_add(1, Ordering::Relaxed);
            self.outage = Some(Outage {
                since_ms: now_ms(),
                cause: cause.to_owned(),
                refused_before: self.shared.refused.load(Ordering::Relaxed),
                next_retry: Instant::now() + self.config.retry_interval,
            });
        } else if let Some(o) = &mut self.outage {
            tracing::debug!(error = cause, "audit log still cannot be written");
            o.next_retry = Instant::now() + self.config.retry_interval;
        }
    }

    /// Failed: keep what was accepted, refuse waiters, retry on schedule. True when stopping.
    fn run_failed(&mut self) -> bool {
        let next_retry = match &self.outage {
            Some(o) => o.next_retry,
            None => return false,
        };
        loop {
            let now = Instant::now();
            if now >= next_retry {
                break;
            }
            match self.rx.recv_timeout(next_retry - now) {
                Ok(Msg::Record(record, None)) => self.kept.push(*record),
                Ok(Msg::Refused(record)) => {
                    if self.refusals.len() < MAX_REFUSALS_KEPT {
                        self.refusals.push((*record, 1));
                    } else {
                        self.refusals_dropped += 1;
                    }
                }
                Ok(Msg::Record(_, Some(reply))) | Ok(Msg::Flush(reply)) => {
                    let _ = reply.try_send(Err(self.failed_error()));
                }
                Ok(Msg::Shutdown(reply)) => {
                    let mut batch = Batch::default();
                    self.drain_into(&mut batch);
                    let pending = self.coalescer.lock().take_all();
                    self.kept.extend(pending);
                    let refused = self.failed_error();
                    for (record, waiter) in batch.records {
                        match waiter {
                            Some(waiter) => {
                                let _ = waiter.try_send(Err(refused.clone()));
                            }
                            None => self.kept.push(record),
                        }
                    }
                    for waiter in batch.flushes {
                        let _ = waiter.try_send(Err(refused.clone()));
                    }
                    let result = self.recover();
                    if result.is_err() {
                        self.give_up();
                    }
                    let _ = reply.try_send(result);
                    return true;
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    if self.recover().is_err() {
                        self.give_up();
                    }
                    return true;
                }
            }
        }
        let _ = self.recover();
        false
    }

    fn failed_error(&self) -> AuditUnavailable {
        AuditUnavailable::Failed(
            self.outage
                .as_ref()
                .map_or_else(|| "unknown failure".into(), |o| o.cause.clone()),
        )
    }

    /// Tries to write the kept records followed by the record of the outage; turns healthy
    /// on success. Returns the last seq written.
    fn recover(&mut self) -> Result<i64, AuditUnavailable> {
        let Some(outage) = &self.outage else {
            return Ok(self.shared.last_seq.load(Ordering::Acquire));
        };
        let refused = self
            .shared
            .refused
            .load(Ordering::Relaxed)
            .saturating_sub(outage.refused_before);
        let until = now_ms();
        let notice = NewRecord {
            time_ms: until,
            principal: "keywardd".into(),
            peer_pid: None,
            peer_uid: None,
            instance: None,
            action: "audit.unavailable".into(),
            resource: None,
            outcome: Outcome::Error,
            rv: CKR_DEVICE_ERROR,
            detail: Some(format!(
                "the audit log could not be written from time_ms {} to {}; cause: {}; {} \
                 submissions were refused meanwhile; the {} records accepted before the \
                 failure and the denials of {} refused operations precede this one ({} \
                 more denials were not kept)",
                outage.since_ms,
                until,
                outage.cause,
                refused,
                self.kept.len(),
                self.refusals.len(),
                self.refusals_dropped
            )),
            request_id: None,
        };
        let kept = std::mem::take(&mut self.kept);
        let refusals = std::mem::take(&mut self.refusals);
        let notice = (notice, 1);
        let result = {
            let all: Vec<&Counted> = kept
                .iter()
                .chain(refusals.iter())
                .chain(std::iter::once(&notice))
                .collect();
            self.write(&all)
        };
        match result {
            Ok(seqs) => {
                tracing::info!(
                    written = seqs.len(),
                    refused,
                    "audit log writable again; operations are accepted"
                );
                self.outage = None;
                self.refusals_dropped = 0;
                *self.shared.failure.lock() = None;
                self.shared.healthy.store(true, Ordering::Release);
                Ok(seqs.last().copied().unwrap_or(0))
            }
            Err(e) => {
                let cause = e.to_string();
                self.kept = kept;
                self.refusals = refusals;
                self.enter_failed(&cause);
                Err(AuditUnavailable::Failed(cause))
            }
        }
    }

    /// Stopping while failed: the kept records are lost; say so.
    fn give_up(&mut self) {
        if !self.kept.is_empty() {
            tracing::error!(
                lost = self.kept.len(),
                "audit writer stopped while the log could not be written: records lost"
            );
        }
        self.kept.clear();
        if !self.refusals.is_empty() || self.refusals_dropped > 0 {
            tracing::error!(
                lost = self.refusals.len() as u64 + self.refusals_dropped,
                "audit writer stopped while the log could not be written: denials not recorded"
            );
        }
        self.refusals.clear();
    }
}
