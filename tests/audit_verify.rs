//! `keywardctl audit verify` against a log tampered with by the sqlite3 CLI: it passes on a
//! clean log and fails, naming the record, after a record in the middle is edited or deleted.

mod common;

use common::Ctl;
use std::process::Command;

/// Runs one statement with the sqlite3 command-line shell (installed by .ci/run).
fn sqlite3(ctl: &Ctl, sql: &str) {
    let out = Command::new("sqlite3")
        .arg(ctl.db())
        .arg(sql)
        .output()
        .expect("the sqlite3 CLI is needed: apt-get install sqlite3");
    assert!(
        out.status.success(),
        "sqlite3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A store with a few dozen audit records.
fn busy_store() -> Ctl {
    let ctl = Ctl::with_payments();
    for i in 0..10 {
        let id = format!("ring{i}");
        ctl.admin(&["keyring", "create", "--parent", "projects/payments", &id])
            .ok();
        let res = format!("projects/payments/keyRings/{id}");
        let member = format!("user:u{i}@acme.example");
        ctl.admin(&[
            "iam",
            "bind",
            "--resource",
            &res,
            "--role",
            "kms.signer",
            "--member",
            &member,
        ])
        .ok();
    }
    let out = ctl.admin(&["audit", "verify"]);
    out.ok();
    assert!(out.stdout.contains("audit log intact"), "{out:#?}");
    ctl
}

fn count(ctl: &Ctl) -> i64 {
    let out = Command::new("sqlite3")
        .arg(ctl.db())
        .arg("SELECT COUNT(*) FROM audit_log")
        .output()
        .expect("sqlite3");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a count")
}

#[test]
fn an_edited_record_is_named() {
    let ctl = busy_store();
    assert!(count(&ctl) >= 20);
    sqlite3(
        &ctl,
        "UPDATE audit_log SET result = 'denied' WHERE seq = 10",
    );
    let out = ctl.admin(&["audit", "verify"]);
    out.failed();
    assert!(
        out.stderr
            .contains("record 10: its contents do not match its hash"),
        "{out:#?}"
    );
}

#[test]
fn a_deleted_record_is_named() {
    let ctl = busy_store();
    sqlite3(&ctl, "DELETE FROM audit_log WHERE seq = 7");
    let out = ctl.admin(&["audit", "verify"]);
    out.failed();
    assert!(out.stderr.contains("record 7 is missing"), "{out:#?}");
    assert!(
        out.stderr
            .contains("record 8: its link to the previous record is broken"),
        "{out:#?}"
    );
}

#[test]
fn a_renumbered_deletion_still_breaks_the_chain() {
    // Deleting a record and renumbering the rest closes the gap, but not the chain.
    let ctl = busy_store();
    sqlite3(
        &ctl,
        "DELETE FROM audit_log WHERE seq = 5; UPDATE audit_log SET seq = seq - 1 WHERE seq > 5;",
    );
    let out = ctl.admin(&["audit", "verify"]);
    out.failed();
    assert!(out.stderr.contains("record 5"), "{out:#?}");
}
