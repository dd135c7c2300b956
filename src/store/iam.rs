//! IAM rows: bindings, custom roles, groups, service accounts and their keys, uid mappings.

use super::{parse_member, Result};
use crate::policy::Member;
use rusqlite::{params, Connection, OptionalExtension};

/// Adds a binding; false if it was already there.
pub fn bind(
    conn: &Connection,
    resource_id: i64,
    role: &str,
    member: &Member,
    now: i64,
) -> Result<bool> {
    const SQL: &str = "INSERT OR IGNORE INTO bindings(resource_id, role, member, created_at) \
                       VALUES (?1, ?2, ?3, ?4)";
    Ok(conn.execute(SQL, params![resource_id, role, member.to_string(), now])? == 1)
}

/// Removes a binding; false if there was none.
pub fn unbind(conn: &Connection, resource_id: i64, role: &str, member: &Member) -> Result<bool> {
    const SQL: &str = "DELETE FROM bindings WHERE resource_id = ?1 AND role = ?2 AND member = ?3";
    Ok(conn.execute(SQL, params![resource_id, role, member.to_string()])? == 1)
}

/// How many bindings use a role.
pub fn role_binding_count(conn: &Connection, role: &str) -> Result<i64> {
    const SQL: &str = "SELECT COUNT(*) FROM bindings WHERE role = ?1";
    Ok(conn.query_row(SQL, params![role], |r| r.get(0))?)
}

/// Removes every binding and group membership naming a member (a deleted service account).
pub fn forget_member(conn: &Connection, member: &Member) -> Result<usize> {
    let m = member.to_string();
    let a = conn.execute("DELETE FROM bindings WHERE member = ?1", params![m])?;
    let b = conn.execute("DELETE FROM group_members WHERE member = ?1", params![m])?;
    Ok(a + b)
}

/// A custom role row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomRole {
    /// `organizations/{org}/roles/{id}`
    pub name: String,
    /// Title.
    pub title: Option<String>,
    /// Space-separated fine permissions.
    pub permissions: String,
}

/// Inserts a custom role.
pub fn create_role(
    conn: &Connection,
    name: &str,
    org_id: i64,
    title: Option<&str>,
    perms: &str,
    now: i64,
) -> Result<()> {
    const SQL: &str = "INSERT INTO custom_roles(name, org_id, title, permissions, created_at) \
                       VALUES (?1, ?2, ?3, ?4, ?5)";
    conn.execute(SQL, params![name, org_id, title, perms, now])?;
    Ok(())
}

/// Replaces a custom role's permissions, and its title when one is given. False if there is
/// no such role.
pub fn update_role(
    conn: &Connection,
    name: &str,
    title: Option<&str>,
    perms: &str,
) -> Result<bool> {
    const SQL: &str = "UPDATE custom_roles SET permissions = ?2, title = COALESCE(?3, title) \
                       WHERE name = ?1";
    Ok(conn.execute(SQL, params![name, perms, title])? == 1)
}

/// A custom role by name.
pub fn get_role(conn: &Connection, name: &str) -> Result<Option<CustomRole>> {
    const SQL: &str = "SELECT name, title, permissions FROM custom_roles WHERE name = ?1";
    Ok(conn
        .query_row(SQL, params![name], |r| {
            Ok(CustomRole {
                name: r.get(0)?,
                title: r.get(1)?,
                permissions: r.get(2)?,
            })
        })
        .optional()?)
}

/// Every custom role, by name.
pub fn list_roles(conn: &Connection) -> Result<Vec<CustomRole>> {
    const SQL: &str = "SELECT name, title, permissions FROM custom_roles ORDER BY name";
    let mut stmt = conn.prepare(SQL)?;
    let rows = stmt.query_map([], |r| {
        Ok(CustomRole {
            name: r.get(0)?,
            title: r.get(1)?,
            permissions: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Deletes a custom role.
pub fn delete_role(conn: &Connection, name: &str) -> Result<bool> {
    Ok(conn.execute("DELETE FROM custom_roles WHERE name = ?1", params![name])? == 1)
}

/// Creates a group; false if it exists.
pub fn create_group(conn: &Connection, name: &str, now: i64) -> Result<bool> {
    const SQL: &str = "INSERT OR IGNORE INTO groups(name, created_at) VALUES (?1, ?2)";
    Ok(conn.execute(SQL, params![name, now])? == 1)
}

/// Does the group exist?
pub fn group_exists(conn: &Connection, name: &str) -> Result<bool> {
    const SQL: &str = "SELECT 1 FROM groups WHERE name = ?1";
    Ok(conn
        .query_row(SQL, params![name], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Deletes a group, its memberships and the bindings and memberships naming it.
pub fn delete_group(conn: &Connection, name: &str) -> Result<bool> {
    forget_member(conn, &Member::Group(name.to_string()))?;
    Ok(conn.execute("DELETE FROM groups WHERE name = ?1", params![name])? == 1)
}

/// Every group with its member count, by name.
pub fn list_groups(conn: &Connection) -> Result<Vec<(String, i64)>> {
    const SQL: &str = "SELECT g.name, (SELECT COUNT(*) FROM group_members m \
                       WHERE m.group_name = g.name) FROM groups g ORDER BY g.name";
    let mut stmt = conn.prepare(SQL)?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Direct members of a group, sorted.
pub fn group_members(conn: &Connection, name: &str) -> Result<Vec<Member>> {
    const SQL: &str = "SELECT member FROM group_members WHERE group_name = ?1 ORDER BY member";
    let mut stmt = conn.prepare(SQL)?;
    let rows = stmt.query_map(params![name], |r| r.get::<_, String>(0))?;
    rows.map(|m| parse_member(&m?)).collect()
}

/// Adds a member to a group; false if already there.
pub fn add_group_member(conn: &Connection, group: &str, member: &Member) -> Result<bool> {
    const SQL: &str = "INSERT OR IGNORE INTO group_members(group_name, member) VALUES (?1, ?2)";
    Ok(conn.execute(SQL, params![group, member.to_string()])? == 1)
}

/// Removes a member from a group; false if it was not there.
pub fn remove_group_member(conn: &Connection, group: &str, member: &Member) -> Result<bool> {
    const SQL: &str = "DELETE FROM group_members WHERE group_name = ?1 AND member = ?2";
    Ok(conn.execute(SQL, params![group, member.to_string()])? == 1)
}

/// A service account row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    /// `id@project`
    pub email: String,
    /// Its project's resource name.
    pub project: String,
    /// Display name.
    pub display_name: Option<String>,
    /// Creation time.
    pub created_at: i64,
    /// Deletion time, if deleted.
    pub deleted_at: Option<i64>,
}

const SA_SELECT: &str = "SELECT s.email, r.name, s.display_name, s.created_at, s.deleted_at \
                         FROM service_accounts s JOIN resources r ON r.id = s.project_id";

fn sa_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ServiceAccount> {
    Ok(ServiceAccount {
        email: r.get(0)?,
        project: r.get(1)?,
        display_name: r.get(2)?,
        created_at: r.get(3)?,
        deleted_at: r.get(4)?,
    })
}

/// Creates a service account.
pub fn create_sa(
    conn: &Connection,
    email: &str,
    project_id: i64,
    display_name: Option<&str>,
    now: i64,
) -> Result<()> {
    const SQL: &str = "INSERT INTO service_accounts(email, project_id, display_name, created_at) \
                       VALUES (?1, ?2, ?3, ?4)";
    conn.execute(SQL, params![email, project_id, display_name, now])?;
    Ok(())
}

/// A service account by email, deleted or not.
pub fn get_sa(conn: &Connection, email: &str) -> Result<Option<ServiceAccount>> {
    let sql = format!("{SA_SELECT} WHERE s.email = ?1");
    Ok(conn.query_row(&sql, params![email], sa_row).optional()?)
}

/// Live service accounts, by email.
pub fn list_sas(conn: &Connection) -> Result<Vec<ServiceAccount>> {
    let sql = format!("{SA_SELECT} WHERE s.deleted_at IS NULL ORDER BY s.email");
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map([], sa_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Marks a service account deleted and revokes its keys.
pub fn delete_sa(conn: &Connection, email: &str, now: i64) -> Result<()> {
    conn.execute(
        "UPDATE service_accounts SET deleted_at = ?2 WHERE email = ?1",
        params![email, now],
    )?;
    conn.execute(
        "UPDATE sa_keys SET revoked_at = ?2 WHERE account = ?1 AND revoked_at IS NULL",
        params![email, now],
    )?;
    Ok(())
}

/// A service-account key row (the secret itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaKey {
    /// The public key id.
    pub key_id: String,
    /// The account.
    pub account: String,
    /// HMAC-SHA-256 of the key under the server key.
    pub mac: Vec<u8>,
    /// Creation time.
    pub created_at: i64,
    /// Revocation time, if revoked.
    pub revoked_at: Option<i64>,
}

fn key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SaKey> {
    Ok(SaKey {
        key_id: r.get(0)?,
        account: r.get(1)?,
        mac: r.get(2)?,
        created_at: r.get(3)?,
        revoked_at: r.get(4)?,
    })
}

/// Stores a new key's MAC.
pub fn insert_sa_key(
    conn: &Connection,
    key_id: &str,
    account: &str,
    mac: &[u8],
    now: i64,
) -> Result<()> {
    const SQL: &str =
        "INSERT INTO sa_keys(key_id, account, mac, created_at) VALUES (?1, ?2, ?3, ?4)";
    conn.execute(SQL, params![key_id, account, mac, now])?;
    Ok(())
}

/// A key by id.
pub fn get_sa_key(conn: &Connection, key_id: &str) -> Result<Option<SaKey>> {
    const SQL: &str =
        "SELECT key_id, account, mac, created_at, revoked_at FROM sa_keys WHERE key_id = ?1";
    Ok(conn.query_row(SQL, params![key_id], key_row).optional()?)
}

/// Keys of an account, oldest first.
pub fn list_sa_keys(conn: &Connection, account: &str) -> Result<Vec<SaKey>> {
    const SQL: &str = "SELECT key_id, account, mac, created_at, revoked_at FROM sa_keys \
                       WHERE account = ?1 ORDER BY created_at, key_id";
    let mut stmt = conn.prepare(SQL)?;
    let rows = stmt.query_map(params![account], key_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Revokes a key; false if it was not live.
pub fn revoke_sa_key(conn: &Connection, account: &str, key_id: &str, now: i64) -> Result<bool> {
    const SQL: &str = "UPDATE sa_keys SET revoked_at = ?3 WHERE account = ?1 AND key_id = ?2 \
                       AND revoked_at IS NULL";
    Ok(conn.execute(SQL, params![account, key_id, now])? == 1)
}

/// Maps a uid to a member (replacing an earlier mapping); returns the old one.
pub fn map_uid(conn: &Connection, uid: u32, member: &Member, now: i64) -> Result<Option<Member>> {
    let old = get_mapping(conn, uid)?;
    const SQL: &str = "INSERT INTO uid_mappings(uid, member, created_at) VALUES (?1, ?2, ?3) \
                       ON CONFLICT(uid) DO UPDATE SET member = ?2, created_at = ?3";
    conn.execute(SQL, params![uid, member.to_string(), now])?;
    Ok(old)
}

/// The member a uid maps to.
pub fn get_mapping(conn: &Connection, uid: u32) -> Result<Option<Member>> {
    const SQL: &str = "SELECT member FROM uid_mappings WHERE uid = ?1";
    let m: Option<String> = conn.query_row(SQL, params![uid], |r| r.get(0)).optional()?;
    m.as_deref().map(parse_member).transpose()
}

/// Removes a mapping; false if there was none.
pub fn unmap_uid(conn: &Connection, uid: u32) -> Result<bool> {
    Ok(conn.execute("DELETE FROM uid_mappings WHERE uid = ?1", params![uid])? == 1)
}

/// Every mapping, by uid.
pub fn list_mappings(conn: &Connection) -> Result<Vec<(u32, Member)>> {
    const SQL: &str = "SELECT uid, member FROM uid_mappings ORDER BY uid";
    let mut stmt = conn.prepare(SQL)?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?)))?;
    rows.map(|r| {
        let (uid, m) = r?;
        Ok((uid, parse_member(&m)?))
    })
    .collect()
}
