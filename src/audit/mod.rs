//! The hash-chained audit log (design §6).
//!
//! Every record carries the SHA-256 of the previous record's hash and its own fields, so an
//! edited record no longer matches its hash and a deleted one leaves a gap in the sequence and
//! a broken link. Admin changes append their record in the same transaction as the change.
//! (Token-signed checkpoints of the chain head, which also catch truncation and a recomputed
//! chain, come with keywardd.)

pub mod actions;
pub mod checkpoint;
pub mod coalesce;
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
    /// How many identical denials this record stands for (design §6 "Coalescing"): 1 for
    /// every allowed operation and every record of format 1.
    pub count: u64,
    /// The record format: 1 (before coalescing; no count) or 2 (with the count). Old records
    /// are never rewritten; [`verify`] checks each by its own format.
    pub format: u32,
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

/// The format of the records [`append`] writes now (2: with a count).
pub const FORMAT: u32 = 2;

/// Bytes kept of a client-supplied field of a record (principal, instance, action, resource,
/// request id) before it is cut with [`cap`]: longer than any valid resource name, so only a
/// hostile or broken client is cut (design §9: a string a client sends is capped before it
/// reaches the log).
pub const MAX_FIELD: usize = 1024;
/// Bytes kept of a record's detail.
pub const MAX_DETAIL: usize = 4096;

/// `s` if it has at most `max` bytes; else its longest prefix (at a character boundary) that
/// leaves room for the marker `…[cut: N bytes]` naming the original length, and the marker.
/// The result has at most `max` bytes (for `max` of 32 or more).
pub fn cap(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return std::borrow::Cow::Borrowed(s);
    }
    let marker = format!("\u{2026}[cut: {} bytes]", s.len());
    let mut end = max.saturating_sub(marker.len());
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}{marker}", &s[..end]))
}

fn cap_owned(s: &str, max: usize) -> String {
    cap(s, max).into_owned()
}

fn field(h: &mut Sha256, v: Option<&[u8]>) {
    match v {
        Some(b) => {
            h.update(u64::try_from(b.len()).unwrap_or(u64::MAX).to_be_bytes());
            h.update(b);
        }
        None => h.update(u64::MAX.to_be_bytes()),
    }
}

/// The hash of a record: SHA-256 over a tag naming the format, the sequence number, every
/// field (length-prefixed, absent fields marked), in format 2 the count after the CK_RV, and
/// the previous hash. A record of an unknown format hashes to zeros (never a match).
fn record_hash(seq: i64, r: &Record) -> [u8; 32] {
    let mut h = Sha256::new();
    match r.format {
        1 => h.update(b"keyward-audit-v1"),
        2 => h.update(b"keyward-audit-v2"),
        _ => return [0u8; 32],
    }
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
    if r.format >= 2 {
        h.update(r.count.to_be_bytes());
    }
    field(&mut h, r.detail.as_deref().map(str::as_bytes));
    field(&mut h, r.request_id.as_deref().map(str::as_bytes));
    field(&mut h, Some(&r.prev_hash));
    h.finalize().into()
}

/// Appends a record to the chain inside the caller's transaction; returns its seq.
pub fn append(conn: &Connection, rec: &NewRecord) -> Result<i64> {
    append_counted(conn, rec, 1)
}

/// [`append`] of a record standing for `count` identical denials (design §6 "Coalescing").
/// Every client-supplied field is cut to [`MAX_FIELD`] bytes, the detail to [`MAX_DETAIL`]
/// ([`cap`]).
pub fn append_counted(conn: &Connection, rec: &NewRecord, count: u64) -> Result<i64> {
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
        principal: cap_owned(&rec.principal, MAX_FIELD),
        peer_pid: rec.peer_pid,
        peer_uid: rec.peer_uid,
        instance: rec.instance.as_deref().map(|s| cap_owned(s, MAX_FIELD)),
        action: cap_owned(&rec.action, MAX_FIELD),
        resource: rec.resource.as_deref().map(|s| cap_owned(s, MAX_FIELD)),
        result: rec.outcome.as_str().to_string(),
        rv: rec.rv,
        detail: rec.detail.as_deref().map(|s| cap_owned(s, MAX_DETAIL)),
        request_id: rec.request_id.as_deref().map(|s| cap_owned(s, MAX_FIELD)),
        count: count.max(1),
        format: FORMAT,
        severity: severity(&rec.action),
        prev_hash,
        hash: Vec::new(),
    };
    r.hash = record_hash(seq, &r).to_vec();
    const INSERT: &str = "INSERT INTO audit_log(seq, time_ms, principal, peer_pid, peer_uid, \
        instance, action, resource, result, rv, detail, request_id, prev_hash, hash, count, \
        format) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)";
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
        r.hash,
        i64::try_from(r.count).unwrap_or(i64::MAX),
        r.format
    ])?;
    Ok(seq)
}

const COLS: &str = "seq, time_ms, principal, peer_pid, peer_uid, instance, action, resource, \
                    result, rv, detail, request_id, prev_hash, hash, count, format";

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
        count: u64::try_from(r.get::<_, i64>(14)?).unwrap_or(0),
        format: r.get(15)?,
    })
}

/// Actions recorded at warning level: every export of key material (allowed or refused),
/// under its new and old names ([`actions::ACTIONS`] marks them).
pub const WARNING_ACTIONS: &[&str] = &[actions::C_WRAP_KEY, actions::KEY_EXPORT, "ExportKey"];

/// The severity of a record of `action`: `warning` or `info` ([`actions::severity`]).
pub fn severity(action: &str) -> &'static str {
    actions::severity(action)
}

/// Filters for [`query`].
pub use keyward_wire::admin::AuditFilter as Filter;

/// Records matching the filter, oldest first (the newest `limit` if a limit is given).
pub fn query(conn: &Connection, f: &Filter) -> Result<Vec<Record>> {
    let sql = format!(
        "SELECT {COLS} FROM (SELECT * FROM audit_log WHERE \
         (?1 IS NULL OR principal = ?1) AND \
         (?2 IS NULL OR resource = ?2 OR resource LIKE ?2 || '/%') AND \
         (?3 IS NULL OR EXISTS (SELECT 1 FROM json_each(?3) AS p \
           WHERE audit_log.action LIKE p.value ESCAPE '\\')) AND (?4 IS NULL OR result = ?4) AND \
         (?5 IS NULL OR time_ms >= ?5 * 1000) AND (?6 IS NULL OR time_ms < ?6 * 1000) \
         ORDER BY seq DESC LIMIT ?7) ORDER BY seq"
    );
    let limit = f.limit.map(i64::from).unwrap_or(-1);
    // `--action` matches old and new names, prefixes and any case ([`actions::sql_patterns`]),
    // passed as a JSON array of LIKE patterns.
    let action = f
        .action
        .as_deref()
        .map(|t| serde_json::Value::from(actions::sql_patterns(t)).to_string());
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(
        params![
            f.principal,
            f.resource,
            action,
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
    let mut newest_format = 1u32;
    while let Some(r) = rows.next()? {
        let rec = row(r)?;
        report.records += 1;
        if !(1..=FORMAT).contains(&rec.format) {
            report.problems.push(format!(
                "record {}: unknown record format {} (the record was edited, or this \
                 keywardctl is older than the log)",
                rec.seq, rec.format
            ));
        } else if rec.format < newest_format {
            report.problems.push(format!(
                "record {}: format {} after a record of format {newest_format} (the record \
                 was edited)",
                rec.seq, rec.format
            ));
        } else if rec.format == 1 && rec.count != 1 {
            report.problems.push(format!(
                "record {}: a format-1 record with a count of {} (the record was edited)",
                rec.seq, rec.count
            ));
        }
        newest_format = newest_format.max(rec.format);
        if rec.format >= 2 && rec.count == 0 {
            report.problems.push(format!(
                "record {}: a count of 0 (the record was edited)",
                rec.seq
            ));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn rec(i: i64, outcome: Outcome) -> NewRecord {
        NewRecord {
            time_ms: i,
            principal: "unix-uid:7".into(),
            peer_pid: Some(1),
            peer_uid: Some(7),
            instance: None,
            action: "C_GenerateKey".into(),
            resource: Some("projects/p/keyRings/r".into()),
            outcome,
            rv: 0xE2,
            detail: None,
            request_id: None,
        }
    }

    /// Appends a record the way the code before record format 2 did (format 1, no count in
    /// the hash), as a store migrated from schema 6 holds it.
    fn append_v1(conn: &Connection, r: &NewRecord) {
        let (seq, prev): (i64, Vec<u8>) = conn
            .query_row(
                "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
                [],
                |x| Ok((x.get::<_, i64>(0)?, x.get::<_, Vec<u8>>(1)?)),
            )
            .optional()
            .unwrap()
            .map(|(s, h)| (s + 1, h))
            .unwrap_or((1, GENESIS.to_vec()));
        let mut full = Record {
            seq,
            time_ms: r.time_ms,
            principal: r.principal.clone(),
            peer_pid: r.peer_pid,
            peer_uid: r.peer_uid,
            instance: r.instance.clone(),
            action: r.action.clone(),
            resource: r.resource.clone(),
            result: r.outcome.as_str().into(),
            rv: r.rv,
            detail: r.detail.clone(),
            request_id: r.request_id.clone(),
            count: 1,
            format: 1,
            severity: "info",
            prev_hash: prev,
            hash: vec![],
        };
        full.hash = hash_record(&full).to_vec();
        conn.execute(
            "INSERT INTO audit_log(seq, time_ms, principal, peer_pid, peer_uid, instance, \
             action, resource, result, rv, detail, request_id, prev_hash, hash) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            params![
                full.seq,
                full.time_ms,
                full.principal,
                full.peer_pid,
                full.peer_uid,
                full.instance,
                full.action,
                full.resource,
                full.result,
                0xE2i64,
                full.detail,
                full.request_id,
                full.prev_hash,
                full.hash
            ],
        )
        .unwrap();
    }

    fn problems(store: &Store) -> Vec<String> {
        verify(store.connection()).unwrap().problems
    }

    #[test]
    fn old_and_new_records_verify_each_by_its_format() {
        let store = Store::in_memory().unwrap();
        let conn = store.connection();
        for i in 1..=3 {
            append_v1(conn, &rec(i, Outcome::Denied));
        }
        append_counted(conn, &rec(4, Outcome::Denied), 20_000).unwrap();
        append(conn, &rec(5, Outcome::Allowed)).unwrap();
        assert_eq!(problems(&store), Vec::<String>::new());
        let all = query(conn, &Filter::default()).unwrap();
        let formats: Vec<(u32, u64)> = all.iter().map(|r| (r.format, r.count)).collect();
        assert_eq!(formats, [(1, 1), (1, 1), (1, 1), (2, 20_000), (2, 1)]);

        // A changed count breaks the record's hash; a count on a format-1 record, a format
        // turned back to 1 and a count of 0 are named.
        let edit = |sql: &str| {
            let store = Store::in_memory().unwrap();
            let conn = store.connection();
            for i in 1..=2 {
                append_v1(conn, &rec(i, Outcome::Denied));
            }
            append_counted(conn, &rec(3, Outcome::Denied), 5).unwrap();
            conn.execute_batch(sql).unwrap();
            problems(&store)
        };
        let p = edit("UPDATE audit_log SET count = 1 WHERE seq = 3");
        assert!(
            p.iter()
                .any(|m| m.contains("record 3") && m.contains("edited")),
            "{p:?}"
        );
        let p = edit("UPDATE audit_log SET count = 9 WHERE seq = 1");
        assert!(
            p.iter().any(|m| m.contains("format-1 record with a count")),
            "{p:?}"
        );
        let p = edit("UPDATE audit_log SET format = 1, count = 1 WHERE seq = 3");
        assert!(p.iter().any(|m| m.contains("record 3")), "{p:?}");
        let p = edit("UPDATE audit_log SET format = 2 WHERE seq = 1");
        assert!(p.iter().any(|m| m.contains("record 1")), "{p:?}");
        let p = edit("UPDATE audit_log SET count = 0 WHERE seq = 3");
        assert!(p.iter().any(|m| m.contains("count of 0")), "{p:?}");
    }

    #[test]
    fn long_fields_are_cut_with_a_marker_before_they_are_hashed() {
        let store = Store::in_memory().unwrap();
        let conn = store.connection();
        let mut r = rec(1, Outcome::Denied);
        r.resource = Some("é".repeat(1 << 19));
        r.detail = Some("d".repeat(1 << 20));
        append(conn, &r).unwrap();
        let got = &query(conn, &Filter::default()).unwrap()[0];
        let res = got.resource.as_deref().unwrap();
        assert!(res.len() <= MAX_FIELD, "{}", res.len());
        assert!(res.ends_with("[cut: 1048576 bytes]"), "{res}");
        assert!(got.detail.as_deref().unwrap().len() <= MAX_DETAIL);
        assert_eq!(problems(&store), Vec::<String>::new());
    }
}
