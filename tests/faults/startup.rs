//! Start-up does not grow with the audit log: what keywardd reads before it serves (the
//! `rchar` of `/proc/PID/io`: every byte read through read(2)) is about the same with 200,000
//! audit records as with 1,000. A full integrity check runs only on demand
//! (`keywardctl store check`).

use crate::common::daemon::Env;

/// Bytes keywardd read before its sockets answered, with `records` audit records in the store.
fn rchar_at_ready(records: u64) -> (u64, u64) {
    let mut env = Env::new();
    // Copies of the bootstrap's first record: start-up must not walk them (their chain is not
    // checked at start; `audit verify` would refuse it, which is not what is measured here).
    let sql = format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {records})
         INSERT INTO audit_log (time_ms, principal, peer_pid, peer_uid, instance, action,
                                resource, result, rv, detail, request_id, prev_hash, hash)
         SELECT a.time_ms, a.principal, a.peer_pid, a.peer_uid, a.instance, a.action,
                a.resource || '/' || n.i, a.result, a.rv, printf('%.200c', 'x'), a.request_id,
                a.prev_hash, a.hash
         FROM n, (SELECT * FROM audit_log ORDER BY seq LIMIT 1) a;"
    );
    let out = std::process::Command::new("sqlite3")
        .arg(&env.db)
        .arg(sql)
        .output()
        .expect("sqlite3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let size = std::fs::metadata(&env.db).unwrap().len();
    env.start();
    let io = std::fs::read_to_string(format!("/proc/{}/io", env.pid())).unwrap();
    let rchar = io
        .lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("rchar in /proc/PID/io");
    (rchar, size)
}

#[test]
fn bytes_read_before_ready_do_not_grow_with_the_audit_log() {
    let (small, small_size) = rchar_at_ready(1_000);
    let (large, large_size) = rchar_at_ready(200_000);
    assert!(
        large_size > small_size + 30 * 1024 * 1024,
        "the large store is not large: {large_size} vs {small_size} bytes"
    );
    eprintln!("rchar before ready: {small} bytes with 1k records ({small_size} B store), {large} with 200k ({large_size} B)");
    // The large store is 30+ MiB bigger; reading it whole (a quick_check, a chain walk) shows
    // as that much more. 1 MiB of slack covers what varies between two starts.
    assert!(
        large < small + 1024 * 1024,
        "keywardd read {large} bytes before ready with 200k records ({large_size} bytes of \
         store) against {small} with 1k ({small_size} bytes)"
    );
}

/// What start-up no longer checks is checked on demand: `keywardctl --db PATH store check`
/// passes a sound store (beside a running keywardd) and names what is wrong with a damaged one.
#[test]
fn store_check_runs_the_full_integrity_check_on_demand() {
    let mut env = Env::new();
    env.start();
    let ok = env.offline(&["store", "check"]);
    ok.ok();
    assert!(ok.stdout.contains("passed"), "{ok:#?}");
    let json = env.offline(&["--json", "store", "check"]);
    json.ok();
    assert_eq!(json.json()["ok"], true, "{json:#?}");
    assert!(
        env.signal_and_wait("TERM").success(),
        "keywardd did not stop cleanly"
    );
    // An index whose definition no longer matches its entries: rows "missing from index".
    let out = std::process::Command::new("sqlite3")
        .arg(&env.db)
        .arg(
            "PRAGMA writable_schema=ON; \
             UPDATE sqlite_schema SET sql = 'CREATE INDEX audit_principal ON audit_log(action)' \
             WHERE name = 'audit_principal';",
        )
        .output()
        .expect("sqlite3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = env.offline(&["store", "check"]);
    bad.failed();
    assert!(bad.stdout.contains("audit_principal"), "{bad:#?}");
    assert!(
        bad.stderr.contains("failed SQLite's integrity check"),
        "{bad:#?}"
    );
    let bad = env.offline(&["--json", "store", "check"]);
    bad.failed();
    assert_eq!(bad.json()["ok"], false, "{bad:#?}");
    // Without --db: a usage error.
    let no_db = crate::common::run_raw(&["store", "check"], &[]);
    no_db.usage_error();
}
