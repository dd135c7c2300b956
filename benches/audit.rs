//! The audit writer (issue 9): records/s sustained with the hash chain, and how many
//! acknowledged records a SIGKILL loses.
//!
//! Run: `cargo bench --bench audit` (prints markdown tables). Smoke mode (ci/bench-smoke.sh):
//! `KEYWARD_BENCH_AUDIT_SECS=0.2 KEYWARD_BENCH_AUDIT_KILL_MS=300 cargo test --bench audit`.
//! Timings are printed, never asserted; the one thing checked is that a record whose
//! `submit_and_wait` returned is never lost (the bench exits non-zero if one is).
//!
//! # Throughput
//! For 1, 4 and 16 submitting threads and `synchronous` FULL and NORMAL: a fresh store, one
//! `AuditWriter` with the default settings otherwise (10 ms batching window), every thread
//! calls `submit` in a loop for `KEYWARD_BENCH_AUDIT_SECS` (default 5) seconds, then one
//! `flush`; records/s = records committed / time until the flush returned (the queue, 65,536
//! records by default, `KEYWARD_BENCH_AUDIT_QUEUE` in smoke mode, is drained inside the
//! measured time). Also the latency
//! of `submit` itself (p50/p99), and of `submit_and_wait` from one thread.
//!
//! # SIGKILL
//! The bench re-executes itself with `KEYWARD_BENCH_AUDIT_CHILD=<db>,<ack file>,<mode>`: the
//! child opens a writer with the DEFAULT config (FULL, 10 ms window) and submits as fast as
//! it can, each record carrying `request_id = n`; after every call that returned `Ok` it
//! writes `n` (8 bytes, unbuffered `write(2)`) to the ack file, which survives the kill in the
//! page cache. The parent kills it with SIGKILL after `KEYWARD_BENCH_AUDIT_KILL_MS` (default
//! 2000) ms, opens the store and counts acknowledged request ids with no record, and checks
//! the chain with `audit::verify`. Mode `submit` (1 thread) expects a few lost (submit does
//! not wait for the commit); mode `wait` (`submit_and_wait`, 4 threads) must lose none.

use keyward::audit::writer::{AuditWriter, Synchronous, WriterConfig};
use keyward::audit::{self, NewRecord, Outcome};
use keyward::store::Store;
use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "KEYWARD_BENCH_AUDIT_CHILD";

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|v: &f64| *v > 0.0)
        .unwrap_or(default)
}

/// A record shaped like the data path's: a service account's C_SignInit on a key.
fn record(n: u64) -> NewRecord {
    NewRecord {
        time_ms: 1_764_000_000_000 + i64::try_from(n).unwrap_or(0),
        principal: "serviceAccount:web@payments".into(),
        peer_pid: Some(4242),
        peer_uid: Some(1000),
        instance: Some("3f2a9c1e".into()),
        action: "C_SignInit".into(),
        resource: Some("projects/payments/keyRings/web/cryptoKeys/tls/cryptoKeyVersions/1".into()),
        outcome: Outcome::Allowed,
        rv: 0,
        detail: None,
        request_id: Some(n.to_string()),
    }
}

/// The writer itself is measured: no per-uid audit rate (design §9 limits one uid's records;
/// the bench's records all carry uid 1000).
fn unlimited() -> keyward::audit::coalesce::Limits {
    keyward::audit::coalesce::Limits {
        rate: u32::MAX,
        burst: u32::MAX,
        ..Default::default()
    }
}

fn fresh_store(dir: &Path) -> std::path::PathBuf {
    let db = dir.join("keyward.db");
    drop(Store::open(&db).expect("create the store"));
    db
}

fn pct(samples: &mut [u32], q: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_unstable();
    f64::from(samples[((samples.len() - 1) as f64 * q) as usize]) / 1000.0
}

struct Throughput {
    records: u64,
    commits: u64,
    secs: f64,
    submit_p50_us: f64,
    submit_p99_us: f64,
}

fn throughput(threads: usize, sync: Synchronous, secs: f64) -> Throughput {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = fresh_store(dir.path());
    let mut config = WriterConfig {
        synchronous: sync,
        limits: unlimited(),
        ..WriterConfig::default()
    };
    if let Some(q) = std::env::var("KEYWARD_BENCH_AUDIT_QUEUE")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.queue_capacity = q;
    }
    let writer = Arc::new(AuditWriter::open(&db, config).expect("writer"));
    let counter = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let writer = Arc::clone(&writer);
            let counter = Arc::clone(&counter);
            std::thread::spawn(move || {
                let mut lat: Vec<u32> = Vec::new();
                while Instant::now() < deadline {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let rec = record(n);
                    let t = Instant::now();
                    writer.submit(rec).expect("submit");
                    lat.push(u32::try_from(t.elapsed().as_nanos()).unwrap_or(u32::MAX));
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<u32> = Vec::new();
    for h in handles {
        lat.extend(h.join().expect("submitter"));
    }
    writer.flush().expect("flush");
    let secs = start.elapsed().as_secs_f64();
    let status = writer.status();
    writer.shutdown().expect("shutdown");
    Throughput {
        records: status.written,
        commits: status.commits,
        secs,
        submit_p50_us: pct(&mut lat, 0.5),
        submit_p99_us: pct(&mut lat, 0.99),
    }
}

/// `submit_and_wait` from one thread: (ops/s, p50 µs, p99 µs).
fn wait_latency(sync: Synchronous, secs: f64) -> (f64, f64, f64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = fresh_store(dir.path());
    let config = WriterConfig {
        synchronous: sync,
        limits: unlimited(),
        ..WriterConfig::default()
    };
    let writer = AuditWriter::open(&db, config).expect("writer");
    let mut lat = Vec::new();
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed().as_secs_f64() < secs || n < 3 {
        let t = Instant::now();
        writer.submit_and_wait(record(n)).expect("submit_and_wait");
        lat.push(u32::try_from(t.elapsed().as_nanos()).unwrap_or(u32::MAX));
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    writer.shutdown().expect("shutdown");
    (rate, pct(&mut lat, 0.5), pct(&mut lat, 0.99))
}

/// The child of the SIGKILL test: submits until killed.
fn child(spec: &str) -> ! {
    let mut parts = spec.splitn(3, ',');
    let (Some(db), Some(acks), Some(mode)) = (parts.next(), parts.next(), parts.next()) else {
        eprintln!("bad {CHILD_ENV}: {spec}");
        std::process::exit(2);
    };
    let writer = Arc::new(
        AuditWriter::open(
            Path::new(db),
            WriterConfig {
                limits: unlimited(),
                ..WriterConfig::default()
            },
        )
        .expect("writer"),
    );
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(acks)
        .expect("ack file");
    let file = Arc::new(file);
    let counter = Arc::new(AtomicU64::new(1));
    let threads = if mode == "wait" { 4 } else { 1 };
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (writer, file, counter) =
                (Arc::clone(&writer), Arc::clone(&file), Arc::clone(&counter));
            let wait = mode == "wait";
            std::thread::spawn(move || loop {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let ok = if wait {
                    writer.submit_and_wait(record(n)).is_ok()
                } else {
                    writer.submit(record(n)).is_ok()
                };
                if ok {
                    // One write(2) of 8 bytes to an O_APPEND file: atomic, unbuffered.
                    (&*file).write_all(&n.to_le_bytes()).expect("ack");
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    std::process::exit(0);
}

struct KillResult {
    acked: usize,
    stored: usize,
    lost: usize,
    chain_ok: bool,
}

fn kill_run(mode: &str, kill_after: Duration) -> KillResult {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = fresh_store(dir.path());
    let acks = dir.path().join("acks");
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new(exe)
        .env(
            CHILD_ENV,
            format!("{},{},{mode}", db.display(), acks.display()),
        )
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn the child");
    std::thread::sleep(kill_after);
    // Child::kill sends SIGKILL on Unix.
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let bytes = std::fs::read(&acks).unwrap_or_default();
    let acked: HashSet<u64> = bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect();
    let store = Store::open(&db).expect("reopen the store");
    let conn = store.connection();
    let mut stmt = conn
        .prepare("SELECT request_id FROM audit_log")
        .expect("query");
    let stored: HashSet<u64> = stmt
        .query_map([], |r| r.get::<_, Option<String>>(0))
        .expect("rows")
        .filter_map(|r| r.ok().flatten().and_then(|s| s.parse().ok()))
        .collect();
    let lost = acked.iter().filter(|n| !stored.contains(n)).count();
    let chain_ok = audit::verify(conn).map(|r| r.ok()).unwrap_or(false);
    KillResult {
        acked: acked.len(),
        stored: stored.len(),
        lost,
        chain_ok,
    }
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child(&spec);
    }
    let secs = env_f64("KEYWARD_BENCH_AUDIT_SECS", 5.0);
    let kill_ms = env_f64("KEYWARD_BENCH_AUDIT_KILL_MS", 2000.0);
    let kill_runs = env_f64("KEYWARD_BENCH_AUDIT_KILL_RUNS", 3.0) as usize;

    println!("\n### Audit writer: sustained records/s with the chain ({secs} s per row)\n");
    println!("| threads | synchronous | records/s | records | commits | mean batch | submit p50 | submit p99 |");
    println!("|---|---|---|---|---|---|---|---|");
    for sync in [Synchronous::Full, Synchronous::Normal] {
        for threads in [1, 4, 16] {
            let t = throughput(threads, sync, secs);
            println!(
                "| {threads} | {sync:?} | {:.0} | {} | {} | {:.0} | {:.1} µs | {:.1} µs |",
                t.records as f64 / t.secs,
                t.records,
                t.commits,
                t.records as f64 / t.commits.max(1) as f64,
                t.submit_p50_us,
                t.submit_p99_us
            );
        }
    }
    println!("\n| submit_and_wait, 1 thread | ops/s | p50 | p99 |\n|---|---|---|---|");
    for sync in [Synchronous::Full, Synchronous::Normal] {
        let (rate, p50, p99) = wait_latency(sync, secs.min(2.0));
        println!("| {sync:?} | {rate:.0} | {p50:.0} µs | {p99:.0} µs |");
    }

    println!(
        "\n### SIGKILL after {kill_ms} ms, default writer config (synchronous FULL, 10 ms window)\n"
    );
    println!("| mode | run | acknowledged | stored | acknowledged but lost | chain verifies |");
    println!("|---|---|---|---|---|---|");
    let mut wait_lost = 0;
    for mode in ["submit", "wait"] {
        for run in 1..=kill_runs.max(1) {
            let r = kill_run(mode, Duration::from_secs_f64(kill_ms / 1000.0));
            let label = if mode == "wait" {
                "submit_and_wait (4 threads)"
            } else {
                "submit (1 thread)"
            };
            println!(
                "| {label} | {run} | {} | {} | {} | {} |",
                r.acked, r.stored, r.lost, r.chain_ok
            );
            if mode == "wait" {
                wait_lost += r.lost;
            }
            if !r.chain_ok {
                eprintln!("the chain does not verify after SIGKILL");
                std::process::exit(1);
            }
        }
    }
    println!();
    if wait_lost > 0 {
        eprintln!("{wait_lost} records acknowledged by submit_and_wait were lost");
        std::process::exit(1);
    }
}
