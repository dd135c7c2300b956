//! The SQLite store (rusqlite): hierarchy, principals, roles, bindings, keys and versions, the
//! object map, and the audit log. WAL, foreign keys on, every write in one transaction with
//! its audit record. The policy snapshot is built in one read transaction.

pub mod certs;
pub mod iam;
pub mod import_jobs;
pub mod keys;
pub mod resources;
mod schema;
pub mod stats;

use crate::policy::{
    CryptoKeyName, Member, PermSet, Permission, ResourceName, Snapshot, SnapshotBuilder,
};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction};
use std::path::Path;

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The data breaks an invariant (a hand-edited or damaged database).
    #[error("the database is damaged: {0}")]
    Corrupt(String),
    /// The store was written by a newer Keyward.
    #[error("the database has schema version {found}, newer than this Keyward ({supported}); upgrade Keyward")]
    TooNew {
        /// The version found.
        found: i64,
        /// The newest this build knows.
        supported: i64,
    },
}

/// Results of the store.
pub type Result<T> = std::result::Result<T, StoreError>;

/// The store: one SQLite database.
pub struct Store {
    conn: Connection,
}

const SCHEMA_VERSION: i64 = schema::MIGRATIONS.len() as i64;

impl Store {
    /// Opens the store at `path`, creating it and migrating it to the current schema. A new
    /// store is created 0600 whatever the umask (design §9 "Files": it holds the audit log,
    /// every binding and the service-account key MAC key); SQLite gives its `-wal` and `-shm`
    /// the store's mode.
    pub fn open(path: &Path) -> Result<Store> {
        create_private(path)?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        Store::from_connection(conn)
    }

    fn from_connection(mut conn: Connection) -> Result<Store> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // journal_mode returns a row; query it rather than execute it.
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
            return Err(StoreError::Corrupt(format!(
                "cannot switch to WAL (got {mode})"
            )));
        }
        conn.execute_batch("PRAGMA foreign_keys=ON; PRAGMA synchronous=NORMAL;")?;
        // No integrity check here: it reads the whole file, so every open (keywardd's start,
        // each `keywardctl --db`) would grow with the audit log. `Store::check` runs it on
        // demand (`keywardctl store check`); SQLite reports corruption it meets as it goes.
        migrate(&mut conn)?;
        Ok(Store { conn })
    }

    /// SQLite's full integrity check (`PRAGMA integrity_check`: every page, index and
    /// constraint; O(file size)). `Ok(vec![])` when the store is sound, else SQLite's findings
    /// (at most 100).
    pub fn check(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare("PRAGMA integrity_check(100)")?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<std::result::Result<Vec<String>, _>>()?;
        Ok(if rows.len() == 1 && rows[0] == "ok" {
            Vec::new()
        } else {
            rows
        })
    }

    /// An in-memory store (tests).
    pub fn in_memory() -> Result<Store> {
        Store::from_connection(Connection::open_in_memory()?)
    }

    /// Starts a write transaction (IMMEDIATE: takes the write lock at once).
    pub fn write(&mut self) -> Result<Transaction<'_>> {
        Ok(self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?)
    }

    /// Starts a read transaction (DEFERRED: one consistent view).
    pub fn read(&mut self) -> Result<Transaction<'_>> {
        Ok(self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Deferred)?)
    }

    /// The raw connection (tests and read-only reports).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Builds the policy snapshot in one read transaction.
    pub fn snapshot(&mut self) -> Result<Snapshot> {
        let tx = self.read()?;
        let snap = build_snapshot(&tx)?;
        tx.commit()?;
        Ok(snap)
    }
}

/// Creates `path` empty with mode 0600 if it does not exist (an existing file is left as it
/// is: keywardd tightens its store at start, [`restrict_files`]).
fn create_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        // Let SQLite report a missing directory or a read-only file system its own way.
        Err(_) => Ok(()),
    }
}

/// The store's files: the database, its `-wal` and its `-shm`.
pub fn store_files(path: &Path) -> [std::path::PathBuf; 3] {
    let with = |suffix: &str| {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        std::path::PathBuf::from(p)
    };
    [path.to_owned(), with("-wal"), with("-shm")]
}

/// Sets the store, its `-wal` and its `-shm` (those that exist) to 0600 (design §9 "Files";
/// keywardd does at start). Returns the files changed with their former modes; an error names
/// the file that could not be changed.
pub fn restrict_files(path: &Path) -> std::result::Result<Vec<(std::path::PathBuf, u32)>, String> {
    use std::os::unix::fs::PermissionsExt;
    let mut changed = Vec::new();
    for f in store_files(path) {
        let meta = match std::fs::metadata(&f) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("cannot check {}: {e}", f.display())),
        };
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| format!("cannot set mode 0600 on {}: {e}", f.display()))?;
            changed.push((f, mode));
        }
    }
    Ok(changed)
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, sql) in schema::MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(found).unwrap_or(0))
    {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(
            None,
            "user_version",
            i64::try_from(i + 1).unwrap_or(i64::MAX),
        )?;
        tx.commit()?;
    }
    Ok(())
}

pub(crate) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

/// Parses a name stored in the database.
pub(crate) fn parse_name(s: &str) -> Result<ResourceName> {
    s.parse()
        .map_err(|e| corrupt(format!("stored resource name: {e}")))
}

/// Parses a member stored in the database.
pub(crate) fn parse_member(s: &str) -> Result<Member> {
    s.parse()
        .map_err(|e| corrupt(format!("stored member: {e}")))
}

/// Parses a stored permission list (space-separated fine permissions).
pub(crate) fn parse_perms(s: &str) -> Result<PermSet> {
    s.split_whitespace()
        .map(|p| {
            p.parse::<Permission>()
                .map_err(|e| corrupt(format!("stored role: {e}")))
        })
        .collect()
}

/// Reads a value from the meta table.
pub fn meta_get(conn: &Connection, key: &str) -> Result<Option<Vec<u8>>> {
    const SQL: &str = "SELECT v FROM meta WHERE k = ?1";
    Ok(conn.query_row(SQL, params![key], |r| r.get(0)).optional()?)
}

/// Writes a value to the meta table.
pub fn meta_set(conn: &Connection, key: &str, value: &[u8]) -> Result<()> {
    const SQL: &str = "INSERT INTO meta(k, v) VALUES (?1, ?2) ON CONFLICT(k) DO UPDATE SET v = ?2";
    conn.execute(SQL, params![key, value])?;
    Ok(())
}

/// Builds the snapshot from the store inside an open transaction.
pub fn build_snapshot(conn: &Connection) -> Result<Snapshot> {
    let mut b = SnapshotBuilder::new();
    // Parents come before children: ids grow with creation, and a parent exists first.
    const RES: &str = "SELECT r.name, r.kind, p.name FROM resources r \
                       LEFT JOIN resources p ON p.id = r.parent_id \
                       WHERE r.deleted_at IS NULL ORDER BY r.id";
    let mut stmt = conn.prepare(RES)?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
        ))
    })?;
    for row in rows {
        let (name, kind, parent) = row?;
        let name = parse_name(&name)?;
        let parent = parent.as_deref().map(parse_name).transpose()?;
        match (kind.as_str(), name, parent) {
            ("organization", ResourceName::Organization(o), None) => {
                b.organization(&o);
            }
            ("folder", ResourceName::Folder(f), Some(p)) => {
                b.folder(&f, p);
            }
            ("project", ResourceName::Project(p), Some(parent)) => {
                b.project(&p, parent);
            }
            ("keyRing", ResourceName::KeyRing(r), Some(_)) => {
                b.key_ring(r);
            }
            ("cryptoKey", ResourceName::CryptoKey(k), Some(_)) => {
                b.crypto_key(k);
            }
            (kind, name, _) => return Err(corrupt(format!("resource {name} of kind {kind}"))),
        }
    }
    const ROLES: &str = "SELECT name, permissions FROM custom_roles";
    let mut stmt = conn.prepare(ROLES)?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    for row in rows {
        let (name, perms) = row?;
        b.role(&name, parse_perms(&perms)?);
    }
    const BINDINGS: &str = "SELECT r.name, b.role, b.member FROM bindings b \
                            JOIN resources r ON r.id = b.resource_id WHERE r.deleted_at IS NULL";
    let mut stmt = conn.prepare(BINDINGS)?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (res, role, member) = row?;
        b.binding(parse_name(&res)?, &role, parse_member(&member)?);
    }
    let mut stmt = conn.prepare("SELECT name FROM groups")?;
    for g in stmt.query_map([], |r| r.get::<_, String>(0))? {
        b.group(&g?);
    }
    let mut stmt = conn.prepare("SELECT group_name, member FROM group_members")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    for row in rows {
        let (g, m) = row?;
        b.group_member(&g, parse_member(&m)?);
    }
    Ok(b.build())
}

/// The crypto key of a resource name, if it names a key or a version.
pub fn key_of(name: &ResourceName) -> Option<&CryptoKeyName> {
    match name {
        ResourceName::CryptoKey(k) | ResourceName::Version(k, _) => Some(k),
        _ => None,
    }
}
