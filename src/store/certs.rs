//! Certificate objects (`certificates`, migration 4; design §4 "Objects"): X.509
//! certificates in a key ring, owned by the key whose public key they carry or by the ring.

use super::Result;
use rusqlite::{params, Connection, OptionalExtension};

/// One stored certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRow {
    /// Its row id (stable; handles and audit records name it).
    pub id: i64,
    /// The ring's resource name.
    pub ring: String,
    /// The owning key's resource name and version, if its public key is a key's.
    pub owner: Option<(String, u64)>,
    /// `CKA_ID` as the client gave it (or the version's).
    pub cka_id: Vec<u8>,
    /// `CKA_LABEL`.
    pub cka_label: Vec<u8>,
    /// `CKA_SUBJECT` (DER).
    pub subject: Vec<u8>,
    /// `CKA_ISSUER` (DER).
    pub issuer: Vec<u8>,
    /// `CKA_SERIAL_NUMBER` (DER INTEGER).
    pub serial: Vec<u8>,
    /// `CKA_VALUE`: the certificate (DER).
    pub value: Vec<u8>,
    /// `CKA_CERTIFICATE_CATEGORY`.
    pub category: u64,
    /// `CKA_TRUSTED`.
    pub trusted: bool,
    /// The principal that made it.
    pub created_by: String,
    /// The module instance that made it.
    pub creator_instance: Option<String>,
}

/// A certificate to insert (ids resolved by the caller).
#[derive(Debug, Clone)]
pub struct NewCert<'a> {
    /// The ring's resource row id.
    pub ring_id: i64,
    /// The owning key's row id and version.
    pub owner: Option<(i64, u64)>,
    /// See [`CertRow`].
    pub cka_id: &'a [u8],
    /// See [`CertRow`].
    pub cka_label: &'a [u8],
    /// See [`CertRow`].
    pub subject: &'a [u8],
    /// See [`CertRow`].
    pub issuer: &'a [u8],
    /// See [`CertRow`].
    pub serial: &'a [u8],
    /// See [`CertRow`].
    pub value: &'a [u8],
    /// See [`CertRow`].
    pub category: u64,
    /// See [`CertRow`].
    pub trusted: bool,
    /// See [`CertRow`].
    pub created_by: &'a str,
    /// See [`CertRow`].
    pub creator_instance: Option<&'a str>,
}

/// Inserts a certificate; returns its id.
pub fn insert(conn: &Connection, c: &NewCert<'_>, now: i64) -> Result<i64> {
    const SQL: &str = "INSERT INTO certificates(ring_id, key_id, version, cka_id, cka_label, \
                       subject, issuer, serial, value, category, trusted, created_by, \
                       creator_instance, created_at) \
                       VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)";
    let category = i64::try_from(c.category).unwrap_or(0);
    let version = c.owner.map(|(_, v)| i64::try_from(v).unwrap_or(i64::MAX));
    conn.execute(
        SQL,
        params![
            c.ring_id,
            c.owner.map(|(k, _)| k),
            version,
            c.cka_id,
            c.cka_label,
            c.subject,
            c.issuer,
            c.serial,
            c.value,
            category,
            c.trusted,
            c.created_by,
            c.creator_instance,
            now
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

const SELECT: &str = "SELECT c.id, ring.name, k.name, c.version, c.cka_id, c.cka_label, \
                      c.subject, c.issuer, c.serial, c.value, c.category, c.trusted, \
                      c.created_by, c.creator_instance FROM certificates c \
                      JOIN resources ring ON ring.id = c.ring_id \
                      LEFT JOIN resources k ON k.id = c.key_id \
                      WHERE c.deleted_at IS NULL";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CertRow> {
    let key: Option<String> = r.get(2)?;
    let version: Option<i64> = r.get(3)?;
    let category: i64 = r.get(10)?;
    Ok(CertRow {
        id: r.get(0)?,
        ring: r.get(1)?,
        owner: key.map(|k| (k, u64::try_from(version.unwrap_or(0)).unwrap_or(0))),
        cka_id: r.get(4)?,
        cka_label: r.get(5)?,
        subject: r.get(6)?,
        issuer: r.get(7)?,
        serial: r.get(8)?,
        value: r.get(9)?,
        category: u64::try_from(category).unwrap_or(0),
        trusted: r.get(11)?,
        created_by: r.get(12)?,
        creator_instance: r.get(13)?,
    })
}

/// Every live certificate, oldest first.
pub fn list(conn: &Connection) -> Result<Vec<CertRow>> {
    let sql = format!("{SELECT} ORDER BY c.id");
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map([], row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// One live certificate.
pub fn get(conn: &Connection, id: i64) -> Result<Option<CertRow>> {
    let sql = format!("{SELECT} AND c.id = ?1");
    Ok(conn.query_row(&sql, params![id], row).optional()?)
}

/// Marks a certificate destroyed; false if it was not live.
pub fn delete(conn: &Connection, id: i64, now: i64) -> Result<bool> {
    const SQL: &str =
        "UPDATE certificates SET deleted_at = ?2 WHERE id = ?1 AND deleted_at IS NULL";
    Ok(conn.execute(SQL, params![id, now])? == 1)
}

/// Changes a certificate's `CKA_ID` and/or `CKA_LABEL`.
pub fn set_names(
    conn: &Connection,
    id: i64,
    cka_id: Option<&[u8]>,
    cka_label: Option<&[u8]>,
) -> Result<()> {
    const SQL: &str = "UPDATE certificates SET cka_id = COALESCE(?2, cka_id), \
                       cka_label = COALESCE(?3, cka_label) WHERE id = ?1";
    conn.execute(SQL, params![id, cka_id, cka_label])?;
    Ok(())
}

/// A version with a public key in a ring: a candidate owner of a certificate.
#[derive(Debug, Clone)]
pub struct PublicVersion {
    /// The key's resource row id.
    pub key_id: i64,
    /// The key's resource name.
    pub key: String,
    /// The version number.
    pub version: u64,
    /// Its public key (DER SPKI).
    pub public_key: Vec<u8>,
    /// Its state name.
    pub state: String,
}

/// Every version with a public key of the keys of the ring `ring_id`, not destroyed.
pub fn public_versions(conn: &Connection, ring_id: i64) -> Result<Vec<PublicVersion>> {
    const SQL: &str = "SELECT r.id, r.name, v.version, v.public_key, v.state \
                       FROM key_versions v JOIN resources r ON r.id = v.key_id \
                       WHERE r.parent_id = ?1 AND r.deleted_at IS NULL \
                       AND v.public_key IS NOT NULL AND v.state <> 'DESTROYED' \
                       ORDER BY r.name, v.version";
    let mut stmt = conn.prepare(SQL)?;
    let rows = stmt.query_map(params![ring_id], |r| {
        let v: i64 = r.get(2)?;
        Ok(PublicVersion {
            key_id: r.get(0)?,
            key: r.get(1)?,
            version: u64::try_from(v).unwrap_or(0),
            public_key: r.get(3)?,
            state: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
