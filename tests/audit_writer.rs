//! The background audit writer (design §6): group commit from many threads, the batching
//! window, fail closed while the database cannot be written and recovery afterwards, and a
//! shutdown that writes everything queued. Every test uses its own store in a temp dir.

use keyward::audit::writer::{AuditUnavailable, AuditWriter, WriterConfig};
use keyward::audit::{self, Filter, NewRecord, Outcome};
use keyward::store::Store;
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn record(principal: &str, i: usize) -> NewRecord {
    NewRecord {
        time_ms: 1_700_000_000_000,
        principal: principal.to_owned(),
        peer_pid: Some(4242),
        peer_uid: Some(1000),
        instance: Some("inst-1".into()),
        action: "C_SignInit".into(),
        resource: Some("projects/p/keyRings/r/cryptoKeys/k".into()),
        outcome: Outcome::Allowed,
        rv: 0,
        detail: Some(format!("n={i}")),
        request_id: Some(format!("req-{i}")),
    }
}

/// A migrated store at DIR/keyward.db.
fn new_store(dir: &Path) -> PathBuf {
    let path = dir.join("keyward.db");
    Store::open(&path).expect("create the store");
    path
}

fn count(path: &Path, sql: &str) -> i64 {
    let conn = Connection::open(path).expect("open for counting");
    conn.query_row(sql, [], |r| r.get(0)).expect("count")
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

fn verify_ok(path: &Path) -> audit::VerifyReport {
    let conn = Connection::open(path).expect("open for verify");
    let report = audit::verify(&conn).expect("verify");
    assert!(report.ok(), "chain broken: {:?}", report.problems);
    report
}

#[test]
fn group_commit_from_many_threads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = new_store(dir.path());
    let writer = Arc::new(AuditWriter::open(&path, WriterConfig::default()).expect("writer"));
    const THREADS: usize = 8;
    const PER_THREAD: usize = 2500;
    const ADMIN: usize = 50;
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..THREADS {
        let writer = Arc::clone(&writer);
        handles.push(std::thread::spawn(move || {
            for i in 0..PER_THREAD {
                writer
                    .submit(record(&format!("serviceAccount:t{t}@p"), i))
                    .expect("submit while healthy");
            }
        }));
    }
    // Admin changes append in their own transactions on the store's connection meanwhile.
    let admin_path = path.clone();
    handles.push(std::thread::spawn(move || {
        let mut store = Store::open(&admin_path).expect("admin store");
        for i in 0..ADMIN {
            let tx = store.write().expect("admin tx");
            audit::append(&tx, &record("user:admin@example.com", i)).expect("admin append");
            tx.commit().expect("admin commit");
            std::thread::sleep(Duration::from_millis(1));
        }
    }));
    for h in handles {
        h.join().expect("thread");
    }
    let last = writer.flush().expect("flush");
    let elapsed = start.elapsed();
    let total = THREADS * PER_THREAD + ADMIN;
    let status = writer.status();
    eprintln!(
        "{} records in {elapsed:?} ({} commits by the writer)",
        total, status.commits
    );
    assert!(status.healthy);
    assert_eq!(status.written, (THREADS * PER_THREAD) as u64);
    assert!(last > 0 && last <= total as i64);
    assert_eq!(count(&path, "SELECT COUNT(*) FROM audit_log"), total as i64);
    for t in 0..THREADS {
        let sql = format!(
            "SELECT COUNT(DISTINCT request_id) FROM audit_log WHERE principal = 'serviceAccount:t{t}@p'"
        );
        assert_eq!(count(&path, &sql), PER_THREAD as i64, "thread {t}");
    }
    // Group commit: far fewer transactions than records.
    assert!(
        status.commits * 10 <= status.written,
        "mean batch below 10 records: {status:?}"
    );
    let report = verify_ok(&path);
    assert_eq!(report.records, total as u64);
    assert_eq!(report.last_seq, total as i64);

    // A record somebody waits for is committed when submit_and_wait returns.
    let seq = writer
        .submit_and_wait(record("user:waiter@example.com", 0))
        .expect("submit_and_wait");
    assert_eq!(seq, total as i64 + 1);
    let conn = Connection::open(&path).expect("open");
    let who: String = conn
        .query_row(
            "SELECT principal FROM audit_log WHERE seq = ?1",
            [seq],
            |r| r.get(0),
        )
        .expect("the waited-for record");
    assert_eq!(who, "user:waiter@example.com");
    writer.shutdown().expect("shutdown");
}

#[test]
fn records_wait_at_most_the_batching_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = new_store(dir.path());
    let config = WriterConfig {
        batch_window: Duration::from_millis(1500),
        ..WriterConfig::default()
    };
    let writer = AuditWriter::open(&path, config).expect("writer");
    // The first record after a quiet spell commits at once ...
    writer
        .submit(record("user:a@example.com", 0))
        .expect("submit");
    assert!(
        wait_until(Duration::from_secs(1), || count(
            &path,
            "SELECT COUNT(*) FROM audit_log"
        ) == 1),
        "the first record was not committed promptly"
    );
    // ... the next one waits for the window to gather company ...
    writer
        .submit(record("user:a@example.com", 1))
        .expect("submit");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count(&path, "SELECT COUNT(*) FROM audit_log"), 1);
    // ... and is committed when the window closes, without a flush.
    assert!(
        wait_until(Duration::from_secs(3), || count(
            &path,
            "SELECT COUNT(*) FROM audit_log"
        ) == 2),
        "the second record was not committed when the window closed"
    );
    assert_eq!(writer.status().commits, 2);
    writer.shutdown().expect("shutdown");
}

#[test]
fn fail_closed_while_the_database_is_locked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = new_store(dir.path());
    let config = WriterConfig {
        busy_timeout: Duration::from_millis(100),
        retry_interval: Duration::from_millis(100),
        ..WriterConfig::default()
    };
    let writer = AuditWriter::open(&path, config).expect("writer");
    for i in 0..10 {
        writer
            .submit(record("user:before@example.com", i))
            .expect("submit");
    }
    writer.flush().expect("flush while healthy");

    // Another connection holds the write lock far longer than the busy timeout.
    let locker = Connection::open(&path).expect("locker");
    locker
        .execute_batch("BEGIN IMMEDIATE")
        .expect("take the lock");
    for i in 0..5 {
        writer
            .submit(record("user:accepted@example.com", i))
            .expect("accepted before the writer noticed");
    }
    assert!(
        wait_until(Duration::from_secs(5), || !writer.is_healthy()),
        "the writer did not notice it cannot write"
    );
    let status = writer.status();
    assert!(
        status.failure.as_deref().unwrap_or("").contains("locked"),
        "{status:?}"
    );
    // Fail closed: nothing new is accepted.
    match writer.submit(record("user:refused@example.com", 0)) {
        Err(AuditUnavailable::Failed(cause)) => assert!(cause.contains("locked"), "{cause}"),
        other => panic!("submit while failed: {other:?}"),
    }
    assert!(matches!(
        writer.submit_and_wait(record("user:refused@example.com", 1)),
        Err(AuditUnavailable::Failed(_))
    ));
    assert!(matches!(writer.flush(), Err(AuditUnavailable::Failed(_))));
    assert_eq!(writer.status().refused, 2);

    // Writable again: the writer recovers on its own.
    locker.execute_batch("ROLLBACK").expect("release the lock");
    assert!(
        wait_until(Duration::from_secs(5), || writer.is_healthy()),
        "the writer did not recover"
    );
    writer.flush().expect("flush after recovery");
    writer
        .submit(record("user:after@example.com", 0))
        .expect("accepted again");
    writer.flush().expect("flush");

    let conn = Connection::open(&path).expect("open");
    let rows = audit::query(&conn, &Filter::default()).expect("query");
    let principals: Vec<&str> = rows.iter().map(|r| r.principal.as_str()).collect();
    assert_eq!(rows.len(), 10 + 5 + 1 + 1, "{principals:?}");
    // The accepted records were kept and written, then the outage, then the new record.
    assert!(principals[10..15]
        .iter()
        .all(|p| *p == "user:accepted@example.com"));
    let notice = &rows[15];
    assert_eq!(notice.principal, "keywardd");
    assert_eq!(notice.action, "audit.unavailable");
    assert_eq!(notice.result, "error");
    let detail = notice.detail.as_deref().unwrap_or("");
    assert!(detail.contains("locked"), "{detail}");
    assert!(detail.contains("2 submissions were refused"), "{detail}");
    assert_eq!(principals[16], "user:after@example.com");
    assert!(!principals.contains(&"user:refused@example.com"));
    verify_ok(&path);
    assert_eq!(writer.status().failures, 1);
    writer.shutdown().expect("shutdown");
}

/// Unmounts the test's tmpfs even when the test fails.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn fail_closed_when_the_disk_is_full() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("small-disk");
    std::fs::create_dir(&mnt).expect("mkdir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&mnt)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    // A real full disk needs a filesystem of our own: root with CAP_SYS_ADMIN, as CI and the
    // development machines run. A test that cannot run fails rather than skipping itself.
    assert!(
        mounted,
        "cannot mount a 4 MiB tmpfs (needs root / CAP_SYS_ADMIN)"
    );
    let _mount = Mount(mnt.clone());
    let path = new_store(&mnt);
    let config = WriterConfig {
        retry_interval: Duration::from_millis(100),
        ..WriterConfig::default()
    };
    let writer = AuditWriter::open(&path, config).expect("writer");
    for i in 0..5 {
        writer
            .submit(record("user:before@example.com", i))
            .expect("submit");
    }
    writer.flush().expect("flush");

    // Fill the disk.
    let filler = mnt.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0u8; 16 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    // Big records until the writer runs out of space.
    let mut accepted = 0usize;
    let mut refused = None;
    for i in 0..5000 {
        let mut r = record("user:big@example.com", i);
        r.detail = Some("x".repeat(8 * 1024));
        match writer.submit(r) {
            Ok(()) => accepted += 1,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    match refused {
        Some(AuditUnavailable::Failed(cause)) => assert!(cause.contains("full"), "{cause}"),
        other => panic!("expected the writer to fail closed on a full disk, got {other:?}"),
    }
    assert!(!writer.is_healthy());

    // Space again: recovery, and every accepted record is there.
    std::fs::remove_file(&filler).expect("remove filler");
    assert!(
        wait_until(Duration::from_secs(5), || writer.is_healthy()),
        "the writer did not recover: {:?}",
        writer.status()
    );
    writer.flush().expect("flush after recovery");
    assert_eq!(
        count(
            &path,
            "SELECT COUNT(*) FROM audit_log WHERE principal = 'user:big@example.com'"
        ),
        accepted as i64
    );
    let detail: String = Connection::open(&path)
        .expect("open")
        .query_row(
            "SELECT detail FROM audit_log WHERE action = 'audit.unavailable'",
            [],
            |r| r.get(0),
        )
        .expect("the outage is recorded");
    assert!(detail.contains("full"), "{detail}");
    verify_ok(&path);
    writer.shutdown().expect("shutdown");
}

#[test]
fn shutdown_writes_everything_queued() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = new_store(dir.path());
    let config = WriterConfig {
        batch_window: Duration::from_millis(200),
        ..WriterConfig::default()
    };
    let writer = Arc::new(AuditWriter::open(&path, config).expect("writer"));
    let handles: Vec<_> = (0..3)
        .map(|t| {
            let writer = Arc::clone(&writer);
            std::thread::spawn(move || {
                for i in 0..1000 {
                    writer
                        .submit(record(&format!("user:t{t}@example.com"), i))
                        .expect("submit");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    writer.shutdown().expect("shutdown");
    assert_eq!(count(&path, "SELECT COUNT(*) FROM audit_log"), 3000);
    assert!(!writer.is_healthy());
    assert_eq!(
        writer.submit(record("user:late@example.com", 0)),
        Err(AuditUnavailable::Stopped)
    );
    assert_eq!(writer.flush(), Err(AuditUnavailable::Stopped));
    writer.shutdown().expect("a second shutdown is a no-op");
    verify_ok(&path);
}
