//! Resource rows: organisations, folders, projects, key rings and crypto keys.

use super::{corrupt, parse_name, Result};
use crate::policy::{ResourceKind, ResourceName};
use rusqlite::{params, Connection, OptionalExtension};

/// A resource row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRow {
    /// Row id.
    pub id: i64,
    /// Full name.
    pub name: ResourceName,
    /// Parent's name (None for an organisation).
    pub parent: Option<ResourceName>,
    /// Creation time (unix seconds).
    pub created_at: i64,
}

/// Key ring settings and token identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRingRow {
    /// The resource.
    pub resource: ResourceRow,
    /// Its PKCS#11 token label (≤ 32 bytes).
    pub token_label: String,
    /// Its PKCS#11 slot id (31-bit hash of the name).
    pub slot_id: u32,
    /// Its token serial (hash of the name, 16 hex digits).
    pub serial: String,
    /// Whether plaintext key material may be imported through C_CreateObject.
    pub allow_plaintext_import: bool,
    /// Whether templates asking for weaker custody are refused instead of corrected.
    pub strict_templates: bool,
}

/// The store's name for a kind.
pub fn kind_str(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::Organization => "organization",
        ResourceKind::Folder => "folder",
        ResourceKind::Project => "project",
        ResourceKind::KeyRing => "keyRing",
        ResourceKind::CryptoKey | ResourceKind::Version => "cryptoKey",
    }
}

const SELECT: &str = "SELECT r.id, r.name, p.name, r.created_at FROM resources r \
                      LEFT JOIN resources p ON p.id = r.parent_id";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, String, Option<String>, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn to_row(raw: (i64, String, Option<String>, i64)) -> Result<ResourceRow> {
    Ok(ResourceRow {
        id: raw.0,
        name: parse_name(&raw.1)?,
        parent: raw.2.as_deref().map(parse_name).transpose()?,
        created_at: raw.3,
    })
}

/// True if the name was ever used (names are never reused, even after deletion).
pub fn name_taken(conn: &Connection, name: &ResourceName) -> Result<bool> {
    const SQL: &str = "SELECT 1 FROM resources WHERE name = ?1";
    Ok(conn
        .query_row(SQL, params![name.to_string()], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Folder and project ids are unique across the store: is this id used by either?
pub fn container_id_taken(conn: &Connection, id: &str) -> Result<bool> {
    const SQL: &str = "SELECT 1 FROM resources WHERE name = ?1 OR name = ?2";
    let found = conn
        .query_row(
            SQL,
            params![format!("folders/{id}"), format!("projects/{id}")],
            |_| Ok(()),
        )
        .optional()?;
    Ok(found.is_some())
}

/// A live resource by name.
pub fn get(conn: &Connection, name: &ResourceName) -> Result<Option<ResourceRow>> {
    let sql = format!("{SELECT} WHERE r.name = ?1 AND r.deleted_at IS NULL");
    conn.query_row(&sql, params![name.to_string()], row)
        .optional()?
        .map(to_row)
        .transpose()
}

/// Live resources of a kind, optionally only the direct children of `parent`, by name.
pub fn list(
    conn: &Connection,
    kind: ResourceKind,
    parent: Option<&ResourceName>,
) -> Result<Vec<ResourceRow>> {
    let sql = format!(
        "{SELECT} WHERE r.kind = ?1 AND r.deleted_at IS NULL \
         AND (?2 IS NULL OR p.name = ?2) ORDER BY r.name"
    );
    let mut stmt = conn.prepare(&sql)?;
    let parent = parent.map(|p| p.to_string());
    let rows = stmt.query_map(params![kind_str(kind), parent], row)?;
    rows.map(|r| to_row(r?)).collect()
}

/// Inserts a resource row and returns its id.
pub fn insert(
    conn: &Connection,
    name: &ResourceName,
    parent_id: Option<i64>,
    now: i64,
) -> Result<i64> {
    const SQL: &str =
        "INSERT INTO resources(name, kind, parent_id, created_at) VALUES (?1, ?2, ?3, ?4)";
    conn.execute(
        SQL,
        params![name.to_string(), kind_str(name.kind()), parent_id, now],
    )?;
    let id = conn.last_insert_rowid();
    if name.kind() == ResourceKind::Organization {
        conn.execute(
            "INSERT INTO organizations(resource_id) VALUES (?1)",
            params![id],
        )?;
    }
    Ok(id)
}

/// Counts live children (resources and service accounts) of a resource.
pub fn live_children(conn: &Connection, id: i64) -> Result<i64> {
    const SQL: &str = "SELECT (SELECT COUNT(*) FROM resources WHERE parent_id = ?1 \
                         AND deleted_at IS NULL) \
                     + (SELECT COUNT(*) FROM service_accounts WHERE project_id = ?1 \
                         AND deleted_at IS NULL)";
    Ok(conn.query_row(SQL, params![id], |r| r.get(0))?)
}

/// Counts every child ever created under a resource (a key ring with any key, live or not,
/// is not empty: keys are never deleted).
pub fn any_children(conn: &Connection, id: i64) -> Result<i64> {
    const SQL: &str = "SELECT COUNT(*) FROM resources WHERE parent_id = ?1";
    Ok(conn.query_row(SQL, params![id], |r| r.get(0))?)
}

/// Marks a resource deleted (its name stays taken) and drops its bindings.
pub fn mark_deleted(conn: &Connection, id: i64, now: i64) -> Result<()> {
    conn.execute(
        "UPDATE resources SET deleted_at = ?2 WHERE id = ?1",
        params![id, now],
    )?;
    conn.execute("DELETE FROM bindings WHERE resource_id = ?1", params![id])?;
    Ok(())
}

/// The organisation's separation-of-duties mode.
pub fn sod_mode(conn: &Connection, org: &str) -> Result<String> {
    const SQL: &str = "SELECT o.sod_mode FROM organizations o JOIN resources r \
                       ON r.id = o.resource_id WHERE r.name = ?1";
    conn.query_row(SQL, params![format!("organizations/{org}")], |r| r.get(0))
        .optional()?
        .ok_or_else(|| corrupt(format!("organisation {org} has no settings row")))
}

/// Sets the organisation's separation-of-duties mode.
pub fn set_sod_mode(conn: &Connection, org_id: i64, mode: &str) -> Result<()> {
    const SQL: &str = "UPDATE organizations SET sod_mode = ?2 WHERE resource_id = ?1";
    conn.execute(SQL, params![org_id, mode])?;
    Ok(())
}

/// The 31-bit slot id and the token serial of a key ring (stable hashes of its name).
pub fn ring_identity(name: &ResourceName) -> (u32, String) {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(name.to_string().as_bytes());
    let slot = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) & 0x7fff_ffff;
    let serial: String = h[4..12].iter().map(|b| format!("{b:02x}")).collect();
    (slot, serial)
}

/// Is this slot id already used by another key ring?
pub fn slot_taken(conn: &Connection, slot: u32) -> Result<bool> {
    const SQL: &str = "SELECT 1 FROM key_rings WHERE slot_id = ?1";
    Ok(conn
        .query_row(SQL, params![slot], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Inserts the key ring details of a new ring resource.
pub fn insert_key_ring(
    conn: &Connection,
    id: i64,
    label: &str,
    slot: u32,
    serial: &str,
) -> Result<()> {
    const SQL: &str =
        "INSERT INTO key_rings(resource_id, token_label, slot_id, serial) VALUES (?1, ?2, ?3, ?4)";
    conn.execute(SQL, params![id, label, slot, serial])?;
    Ok(())
}

/// A live key ring with its settings.
pub fn get_key_ring(conn: &Connection, name: &ResourceName) -> Result<Option<KeyRingRow>> {
    let Some(resource) = get(conn, name)? else {
        return Ok(None);
    };
    const SQL: &str = "SELECT token_label, slot_id, serial, allow_plaintext_import, \
                       strict_templates FROM key_rings WHERE resource_id = ?1";
    let found = conn
        .query_row(SQL, params![resource.id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    let (token_label, slot_id, serial, allow_plaintext_import, strict_templates) =
        found.ok_or_else(|| corrupt(format!("key ring {name} has no settings row")))?;
    Ok(Some(KeyRingRow {
        resource,
        token_label,
        slot_id,
        serial,
        allow_plaintext_import,
        strict_templates,
    }))
}

/// Updates key ring settings (None leaves a setting as it is).
pub fn update_key_ring(
    conn: &Connection,
    id: i64,
    allow_plaintext_import: Option<bool>,
    strict_templates: Option<bool>,
    token_label: Option<&str>,
) -> Result<()> {
    const SQL: &str = "UPDATE key_rings SET \
        allow_plaintext_import = COALESCE(?2, allow_plaintext_import), \
        strict_templates = COALESCE(?3, strict_templates), \
        token_label = COALESCE(?4, token_label) WHERE resource_id = ?1";
    conn.execute(
        SQL,
        params![id, allow_plaintext_import, strict_templates, token_label],
    )?;
    Ok(())
}

/// Is any organisation there yet?
pub fn has_organization(conn: &Connection) -> Result<bool> {
    const SQL: &str = "SELECT 1 FROM resources WHERE kind = 'organization' LIMIT 1";
    Ok(conn.query_row(SQL, [], |_| Ok(())).optional()?.is_some())
}
