//! The hash-chained audit log (design §6).
//!
//! Every record carries the SHA-256 of the previous record's hash and its own fields, so an
//! edited record no longer matches its hash and a deleted one leaves a gap in the sequence and
//! a broken link. Admin changes append their record in the same transaction as the change.
//! (Token-signed checkpoints of the chain head, which also catch truncation and a recomputed
//! chain, come with keywardd.)

pub mod checkpoint;
pub mod writer;

use crate::store::Result;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The outcome recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The request was allowed and done.
    Allowed,
    /// Policy refused it.
    Denied,
    /// It was allowed but failed (bad input, precondition, internal error).
    Error,
}

impl Outcome {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
        }
    }
}

/// A record to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    /// Milliseconds since the epoch.
    pub time_ms: i64,
    /// The caller's principal.
    pub principal: String,
    /// The peer's pid, when known.
    pub peer_pid: Option<u32>,
    /// The peer's uid, when known.
    pub peer_uid: Option<u32>,
    /// The module instance, when there is one.
    pub instance: Option<String>,
    /// What was asked (`keyring.create`, `iam.bind`, `C_SignInit`, ...).
    pub action: String,
    /// The resource it was about.
    pub resource: Option<String>,
    /// The outcome.
    pub outcome: Outcome,
    /// The CK_RV returned (0 when allowed).
    pub rv: u64,
    /// Detail for reviewers (never a secret).
    pub detail: Option<String>,
    /// The request id, when there is one.
    pub request_id: Option<String>,
}

/// A stored record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Record {
    /// Position in the chain (1, 2, ...).
    pub seq: i64,
    /// Milliseconds since the epoch.
    pub time_ms: i64,
    /// The caller's principal.
    pub principal: String,
    /// The peer's pid.
    pub peer_pid: Option<u32>,
    /// The peer's uid.
    pub peer_uid: Option<u32>,
    /// The module instance.
    pub instance: Option<String>,
    /// The action.
    pub action: String,
    /// The resource.
    pub resource: Option<String>,
    /// `allowed`, `denied` or `error`.
    pub result: String,
    /// The CK_RV.
    pub rv: u64,
    /// Detail.
    pub detail: Option<String>,
    /// The request id.
    pub request_id: Option<String>,
    /// `warning` for the actions reviewers must see ([`WARNING_ACTIONS`]: key material
    /// leaving the token), else `info`. Derived from the action, which the hash covers.
    pub severity: &'static str,
    /// The previous record's hash, hex.
    #[serde(serialize_with = "hex_ser")]
    pub prev_hash: Vec<u8>,
    /// This record's hash, hex.
    #[serde(serialize_with = "hex_ser")]
    pub hash: Vec<u8>,
}

fn hex_ser<S: serde::Serializer>(v: &[u8], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&hex(v))
}

/// Lower-case hex.
pub fn hex(v: &[u8]) -> String {
    v.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hash of the (absent) record before the first.
pub const GENESIS: [u8; 32] = [0u8; 32];

fn field(h: &mut Sha256, v: Option<&[u8]>) {
    match v {
        Some(b) => {
            h.update(u64::try_from(b.len()).unwrap_or(u64::MAX).to_be_bytes());
            h.update(b);
        }
        None => h.update(u64::MAX.to_be_bytes()),
    }
}

/// The hash of a record: SHA-256 over a tag, the sequence number, every field
/// (length-prefixed, absent fields marked) and the previous hash.
#[allow(clippy::too_many_arguments)]
fn record_hash(seq: i64, r: &Record) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"keyward-audit-v1");
    h.update(seq.to_be_bytes());
    h.update(r.time_ms.to_be_bytes());
    field(&mut h, Some(r.principal.as_bytes()));
    field(
        &mut h,
        r.peer_pid.map(|p| p.to_be_bytes()).as_ref().map(|b| &b[..]),
    );
    field(
        &mut h,
        r.peer_uid.map(|p| p.to_be_bytes()).as_ref().map(|b| &b[..]),
    );
    field(&mut h, r.instance.as_deref().map(str::as_bytes));
    field(&mut h, Some(r.action.as_bytes()));
    field(&mut h, r.resource.as_deref().map(str::as_bytes));
    field(&mut h, Some(r.result.as_bytes()));
    h.update(r.rv.to_be_bytes());
    field(&mut h, r.detail.as_deref().map(str::as_bytes));
    field(&mut h, r.request_id.as_deref().map(str::as_bytes));
    field(&mut h, Some(&r.prev_hash));
    h.finalize().into()
}

/// Appends a record to the chain inside the caller's transaction; returns its seq.
pub fn append(conn: &Connection, rec: &NewRecord) -> Result<i64> {
    const LAST: &str = "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1";
    // Cached statements: the writer appends every record of the data path (issue 9: parsing
    // the SQL per record was a visible part of its profile).
    let last: Option<(i64, Vec<u8>)> = conn
        .prepare_cached(LAST)?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (seq, prev_hash) = match last {
        Some((s, h)) => (s + 1, h),
        None => (1, GENESIS.to_vec()),
    };
    let mut r = Record {
        seq,
        time_ms: rec.time_ms,
        principal: rec.principal.clone(),
        peer_pid: rec.peer_pid,
        peer_uid: rec.peer_uid,
        instance: rec.instance.clone(),
        action: rec.action.clone(),
        resource: rec.resource.clone(),
        result: rec.outcome.as_str().to_string(),
        rv: rec.rv,
        detail: rec.detail.clone(),
        request_id: rec.request_id.clone(),
        severity: severity(&rec.action),
        prev_hash,
        hash: Vec::new(),
    };
    r.hash = record_hash(seq, &r).to_vec();
    const INSERT: &str = "INSERT INTO audit_log(seq, time_ms, principal, peer_pid, peer_uid, \
        instance, action, resource, result, rv, detail, request_id, prev_hash, hash) \
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)";
    conn.prepare_cached(INSERT)?.execute(params![
        r.seq,
        r.time_ms,
        r.principal,
        r.peer_pid,
        r.peer_uid,
        r.instance,
        r.action,
        r.resource,
        r.result,
        // SQLite integers are signed; CK_RVs fit (vendor codes are below 2^63).
        i64::try_from(r.rv).unwrap_or(i64::MAX),
        r.detail,
        r.request_id,
        r.prev_hash,
        r.hash
    ])?;
    Ok(seq)
}

const COLS: &str = "seq, time_ms, principal, peer_pid, peer_uid, instance, action, resource, \
                    result, rv, detail, request_id, prev_hash, hash";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Record> {
    Ok(Record {
        seq: r.get(0)?,
        time_ms: r.get(1)?,
        principal: r.get(2)?,
        peer_pid: r.get(3)?,
        peer_uid: r.get(4)?,
        instance: r.get(5)?,
        action: r.get(6)?,
        resource: r.get(7)?,
        result: r.get(8)?,
        rv: u64::try_from(r.get::<_, i64>(9)?).unwrap_or(u64::MAX),
        detail: r.get(10)?,
        request_id: r.get(11)?,
        severity: severity(&r.get::<_, String>(6)?),
        prev_hash: r.get(12)?,
        hash: r.get(13)?,
    })
}

/// Actions recorded at warning level: every export of key material (allowed or refused).
pub const WARNING_ACTIONS: &[&str] = &["C_WrapKey", "ExportKey"];

/// The severity of a record of `action`: `warning` or `info`.
pub fn severity(action: &str) -> &'static str {
    if WARNING_ACTIONS.contains(&action) {
        "warning"
    } else {
        "info"
    }
}

/// Filters for [`query`].
pub use keyward_wire::admin::AuditFilter as Filter;

/// Records matching the filter, oldest first (the newest `limit` if a limit is given).
pub fn query(conn: &Connection, f: &Filter) -> Result<Vec<Record>> {
    let sql = format!(
        "SELECT {COLS} FROM (SELECT * FROM audit_log WHERE \
         (?1 IS NULL OR principal = ?1) AND \
         (?2 IS NULL OR resource = ?2 OR resource LIKE ?2 || '/%') AND \
         (?3 IS NULL OR action = ?3) AND (?4 IS NULL OR result = ?4) AND \
         (?5 IS NULL OR time_ms >= ?5 * 1000) AND (?6 IS NULL OR time_ms < ?6 * 1000) \
         ORDER BY seq DESC LIMIT ?7) ORDER BY seq"
    );
    let limit = f.limit.map(i64::from).unwrap_or(-1);
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(
        params![
            f.principal,
            f.resource,
            f.action,
            f.result,
            f.since,
            f.until,
            limit
        ],
        row,
    )?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// What `audit verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Records read.
    pub records: u64,
    /// The last sequence number seen.
    pub last_seq: i64,
    /// The hash of the chain head, hex.
    pub head: String,
    /// Every problem, each naming the record.
    pub problems: Vec<String>,
}

impl VerifyReport {
    /// True if the chain is intact.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Walks the whole chain and checks every link and hash.
pub fn verify(conn: &Connection) -> Result<VerifyReport> {
    let sql = format!("SELECT {COLS} FROM audit_log ORDER BY seq");
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query([])?;
    let mut report = VerifyReport {
        records: 0,
        last_seq: 0,
        head: hex(&GENESIS),
        problems: Vec::new(),
    };
    let mut prev_hash = GENESIS.to_vec();
    let mut expected_seq = 1i64;
    while let Some(r) = rows.next()? {
        let rec = row(r)?;
        report.records += 1;
        if rec.seq != expected_seq {
            let missing = if rec.seq == expected_seq + 1 {
                format!("record {expected_seq} is missing (deleted)")
            } else {
                format!(
                    "records {expected_seq} to {} are missing (deleted)",
                    rec.seq - 1
                )
            };
            report.problems.push(missing);
        }
        if rec.prev_hash != prev_hash {
            report.problems.push(format!(
                "record {}: its link to the previous record is broken (a record before it was \
                 deleted or changed)",
                rec.seq
            ));
        }
        if record_hash(rec.seq, &rec).as_slice() != rec.hash.as_slice() {
            report.problems.push(format!(
                "record {}: its contents do not match its hash (the record was edited)",
                rec.seq
            ));
        }
        prev_hash = rec.hash.clone();
        expected_seq = rec.seq + 1;
        report.last_seq = rec.seq;
    }
    report.head = hex(&prev_hash);
    Ok(report)
}

/// The hash a record must carry given its fields and `prev_hash` (the function [`append`]
/// and [`verify`] use): for external verifiers, and for tests that recompute a chain.
pub fn hash_record(r: &Record) -> [u8; 32] {
    record_hash(r.seq, r)
}
