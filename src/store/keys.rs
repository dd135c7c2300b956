//! Crypto keys and their versions, with the version state machine of design §2.
//! Token objects are made by keywardd (the token layer); this module keeps the rows and the
//! object map (`token_id`, the version's internal CKA_ID in the backing token).

use super::{corrupt, Result};
use rusqlite::{params, Connection, OptionalExtension};
use std::fmt;
use std::str::FromStr;

/// The state of a key version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VersionState {
    /// Usable.
    Enabled,
    /// Not usable; can be enabled again.
    Disabled,
    /// Destruction scheduled; `restore` returns it to Disabled until the destroy time.
    DestroyScheduled,
    /// The token object is gone.
    Destroyed,
    /// An import (BYOK) is under way.
    PendingImport,
    /// An import failed.
    ImportFailed,
}

impl VersionState {
    /// The store's and the CLI's name.
    pub fn as_str(self) -> &'static str {
        match self {
            VersionState::Enabled => "ENABLED",
            VersionState::Disabled => "DISABLED",
            VersionState::DestroyScheduled => "DESTROY_SCHEDULED",
            VersionState::Destroyed => "DESTROYED",
            VersionState::PendingImport => "PENDING_IMPORT",
            VersionState::ImportFailed => "IMPORT_FAILED",
        }
    }
}

impl fmt::Display for VersionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for VersionState {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        use VersionState::*;
        [
            Enabled,
            Disabled,
            DestroyScheduled,
            Destroyed,
            PendingImport,
            ImportFailed,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
        .ok_or_else(|| format!("unknown version state '{s}'"))
    }
}

/// A change asked of a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionAction {
    /// `version enable`
    Enable,
    /// `version disable`
    Disable,
    /// `version destroy` (schedules destruction)
    ScheduleDestroy,
    /// `version restore`
    Restore,
    /// The grace period ended and the token object was destroyed.
    Destroyed,
    /// An import finished.
    ImportSucceeded,
    /// An import failed.
    ImportFailed,
}

/// The state machine: the state after `action`, or why the action is not allowed.
pub fn transition(
    from: VersionState,
    action: VersionAction,
) -> std::result::Result<VersionState, String> {
    use VersionAction as A;
    use VersionState as S;
    match (from, action) {
        (S::Enabled | S::Disabled, A::Enable) => Ok(S::Enabled),
        (S::Enabled | S::Disabled, A::Disable) => Ok(S::Disabled),
        (S::Enabled | S::Disabled, A::ScheduleDestroy) => Ok(S::DestroyScheduled),
        (S::DestroyScheduled, A::Restore) => Ok(S::Disabled),
        (S::DestroyScheduled, A::Destroyed) => Ok(S::Destroyed),
        (S::PendingImport, A::ImportSucceeded) => Ok(S::Enabled),
        (S::PendingImport, A::ImportFailed) => Ok(S::ImportFailed),
        (S::DestroyScheduled, A::Enable | A::Disable) => Err(
            "the version is scheduled for destruction: restore it first (version restore)".into(),
        ),
        (S::Destroyed, _) => Err("the version is destroyed; nothing can change it".into()),
        (S::Enabled | S::Disabled, A::Restore) => {
            Err("only a version scheduled for destruction can be restored".into())
        }
        (S::DestroyScheduled, A::ScheduleDestroy) => {
            Err("the version is already scheduled for destruction".into())
        }
        (S::PendingImport, _) => Err("the version is still being imported".into()),
        (S::ImportFailed, _) => Err("the import of this version failed; import again".into()),
        (from, action) => Err(format!("{action:?} is not possible in state {from}")),
    }
}

/// A crypto key row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    /// The key's resource id.
    pub id: i64,
    /// Its purpose (keyward_wire::keys::Purpose name).
    pub purpose: String,
    /// Its algorithm, None for PKCS11_GENERIC keys.
    pub algorithm: Option<String>,
    /// May its material be exported (CKA_EXTRACTABLE)?
    pub exportable: bool,
    /// The primary version.
    pub primary_version: Option<u64>,
    /// Who created it (member string or module instance).
    pub created_by: String,
}

/// A key version row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRow {
    /// The version number.
    pub version: u64,
    /// Its state.
    pub state: VersionState,
    /// Its internal CKA_ID in the backing token.
    pub token_id: Option<Vec<u8>>,
    /// Its public key (DER SPKI), for asymmetric keys.
    pub public_key: Option<Vec<u8>>,
    /// Creation time.
    pub created_at: i64,
    /// When destruction happens, if scheduled.
    pub destroy_time: Option<i64>,
    /// When the token object was destroyed.
    pub destroyed_at: Option<i64>,
    /// Was its material imported (BYOK) rather than generated in the token?
    pub imported: bool,
}

/// Inserts the key row of a new crypto key resource.
pub fn insert_key(
    conn: &Connection,
    id: i64,
    purpose: &str,
    algorithm: Option<&str>,
    exportable: bool,
    created_by: &str,
) -> Result<()> {
    const SQL: &str = "INSERT INTO crypto_keys(resource_id, purpose, algorithm, exportable, \
                       created_by) VALUES (?1, ?2, ?3, ?4, ?5)";
    conn.execute(SQL, params![id, purpose, algorithm, exportable, created_by])?;
    Ok(())
}

/// A key row.
pub fn get_key(conn: &Connection, id: i64) -> Result<Option<KeyRow>> {
    const SQL: &str = "SELECT resource_id, purpose, algorithm, exportable, primary_version, \
                       created_by FROM crypto_keys WHERE resource_id = ?1";
    Ok(conn
        .query_row(SQL, params![id], |r| {
            Ok(KeyRow {
                id: r.get(0)?,
                purpose: r.get(1)?,
                algorithm: r.get(2)?,
                exportable: r.get(3)?,
                primary_version: r.get(4)?,
                created_by: r.get(5)?,
            })
        })
        .optional()?)
}

/// Adds the next version of a key and returns its number.
pub fn add_version(
    conn: &Connection,
    key_id: i64,
    state: VersionState,
    token_id: Option<&[u8]>,
    public_key: Option<&[u8]>,
    now: i64,
) -> Result<u64> {
    const NEXT: &str = "UPDATE crypto_keys SET next_version = next_version + 1 \
                        WHERE resource_id = ?1 RETURNING next_version - 1";
    let n: u64 = conn.query_row(NEXT, params![key_id], |r| r.get(0))?;
    const SQL: &str = "INSERT INTO key_versions(key_id, version, state, token_id, public_key, \
                       created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
    conn.execute(
        SQL,
        params![key_id, n, state.as_str(), token_id, public_key, now],
    )?;
    Ok(n)
}

fn version_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawVersion> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    ))
}

type RawVersion = (
    u64,
    String,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    i64,
    Option<i64>,
    Option<i64>,
    bool,
);

fn to_version(raw: RawVersion) -> Result<VersionRow> {
    Ok(VersionRow {
        version: raw.0,
        state: raw.1.parse().map_err(corrupt)?,
        token_id: raw.2,
        public_key: raw.3,
        created_at: raw.4,
        destroy_time: raw.5,
        destroyed_at: raw.6,
        imported: raw.7,
    })
}

const VERSION_COLS: &str =
    "version, state, token_id, public_key, created_at, destroy_time, destroyed_at, imported";

/// One version of a key.
pub fn get_version(conn: &Connection, key_id: i64, n: u64) -> Result<Option<VersionRow>> {
    let sql = format!("SELECT {VERSION_COLS} FROM key_versions WHERE key_id = ?1 AND version = ?2");
    conn.query_row(&sql, params![key_id, n], version_row)
        .optional()?
        .map(to_version)
        .transpose()
}

/// Every version of a key, oldest first.
pub fn list_versions(conn: &Connection, key_id: i64) -> Result<Vec<VersionRow>> {
    let sql = format!("SELECT {VERSION_COLS} FROM key_versions WHERE key_id = ?1 ORDER BY version");
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params![key_id], version_row)?;
    rows.map(|r| to_version(r?)).collect()
}

/// Applies `action` to a version through the state machine; returns the new state.
/// `destroy_time` is set for `ScheduleDestroy`, cleared by `Restore`.
pub fn change_version(
    conn: &Connection,
    key_id: i64,
    n: u64,
    action: VersionAction,
    destroy_time: Option<i64>,
    now: i64,
) -> Result<std::result::Result<VersionState, String>> {
    let Some(row) = get_version(conn, key_id, n)? else {
        return Ok(Err(format!("version {n} does not exist")));
    };
    let to = match transition(row.state, action) {
        Ok(to) => to,
        Err(e) => return Ok(Err(e)),
    };
    const SQL: &str = "UPDATE key_versions SET state = ?3, destroy_time = ?4, \
                       destroyed_at = CASE WHEN ?3 = 'DESTROYED' THEN ?5 ELSE destroyed_at END \
                       WHERE key_id = ?1 AND version = ?2";
    let dt = match action {
        VersionAction::ScheduleDestroy => destroy_time,
        VersionAction::Restore => None,
        _ => row.destroy_time,
    };
    conn.execute(SQL, params![key_id, n, to.as_str(), dt, now])?;
    Ok(Ok(to))
}

/// Sets the primary version.
pub fn set_primary(conn: &Connection, key_id: i64, n: u64) -> Result<()> {
    const SQL: &str = "UPDATE crypto_keys SET primary_version = ?2 WHERE resource_id = ?1";
    conn.execute(SQL, params![key_id, n])?;
    Ok(())
}

/// A version due for destruction: (key resource id, version, token id).
pub type DueVersion = (i64, u64, Option<Vec<u8>>);

/// Versions whose destroy time has come.
pub fn due_destructions(conn: &Connection, now: i64) -> Result<Vec<DueVersion>> {
    const SQL: &str = "SELECT key_id, version, token_id FROM key_versions \
                       WHERE state = 'DESTROY_SCHEDULED' AND destroy_time <= ?1 \
                       ORDER BY destroy_time";
    let mut stmt = conn.prepare(SQL)?;
    let rows = stmt.query_map(params![now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use VersionAction as A;
    use VersionState as S;

    #[test]
    fn state_machine() {
        assert_eq!(transition(S::Enabled, A::Disable), Ok(S::Disabled));
        assert_eq!(transition(S::Disabled, A::Enable), Ok(S::Enabled));
        assert_eq!(
            transition(S::Enabled, A::ScheduleDestroy),
            Ok(S::DestroyScheduled)
        );
        assert_eq!(transition(S::DestroyScheduled, A::Restore), Ok(S::Disabled));
        assert_eq!(
            transition(S::DestroyScheduled, A::Destroyed),
            Ok(S::Destroyed)
        );
        assert_eq!(
            transition(S::PendingImport, A::ImportSucceeded),
            Ok(S::Enabled)
        );
        assert_eq!(
            transition(S::PendingImport, A::ImportFailed),
            Ok(S::ImportFailed)
        );
        assert!(transition(S::Destroyed, A::Restore).is_err());
        assert!(transition(S::Destroyed, A::Enable).is_err());
        assert!(transition(S::Enabled, A::Restore).is_err());
        assert!(transition(S::DestroyScheduled, A::Enable).is_err());
        assert!(transition(S::Enabled, A::Destroyed).is_err());
        assert!(transition(S::ImportFailed, A::Enable).is_err());
    }
}

/// One entry of the object map: a version, its state and its token object's CKA_ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedObject {
    /// The version's resource name.
    pub name: String,
    /// Its state.
    pub state: VersionState,
    /// Its CKA_ID in the backing token.
    pub token_id: Vec<u8>,
}

/// The whole object map (versions with a token object id), for reconciliation.
pub fn object_map(conn: &Connection) -> Result<Vec<MappedObject>> {
    const SQL: &str = "SELECT r.name, v.version, v.state, v.token_id FROM key_versions v \
                       JOIN resources r ON r.id = v.key_id WHERE v.token_id IS NOT NULL \
                       ORDER BY r.name, v.version";
    let mut stmt = conn.prepare(SQL)?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, u64>(1)?,
            r.get::<_, String>(2)?,
            r.get(3)?,
        ))
    })?;
    rows.map(|row| {
        let (key, n, state, token_id) = row?;
        Ok(MappedObject {
            name: format!("{key}/cryptoKeyVersions/{n}"),
            state: state.parse().map_err(corrupt)?,
            token_id,
        })
    })
    .collect()
}

/// The PKCS#11 side of a key made through the module (`PKCS11_GENERIC`, design §4).
#[derive(Clone, PartialEq, Eq)]
pub struct GenericRow {
    /// Kind and size (`keyward_token::GenericKind` name: `EC_P256`, `RSA_2048`, `AES_256`).
    pub kind: String,
    /// The client's `CKA_ID` of the private or secret object, byte-exact.
    pub cka_id: Vec<u8>,
    /// The client's `CKA_LABEL` of the private or secret object, byte-exact.
    pub cka_label: Vec<u8>,
    /// The public half's `CKA_ID` (pairs).
    pub pub_cka_id: Option<Vec<u8>>,
    /// The public half's `CKA_LABEL` (pairs).
    pub pub_cka_label: Option<Vec<u8>>,
    /// Usage flags: encrypt, decrypt, sign, verify, wrap, unwrap.
    pub usage: [bool; 6],
    /// Generated in the token (`CKA_LOCAL`), not imported.
    pub local: bool,
    /// The module instance that made it.
    pub creator_instance: Option<String>,
}

impl fmt::Debug for GenericRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenericRow")
            .field("kind", &self.kind)
            .field("cka_id_len", &self.cka_id.len())
            .field("usage", &self.usage)
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

/// Records the PKCS#11 side of a generic key.
pub fn insert_generic(conn: &Connection, key_id: i64, g: &GenericRow) -> Result<()> {
    const SQL: &str = "INSERT INTO generic_keys(key_id, kind, cka_id, cka_label, pub_cka_id, \
                       pub_cka_label, encrypt, decrypt, sign, verify, wrap, unwrap, local, \
                       creator_instance) \
                       VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)";
    let u = g.usage;
    conn.execute(
        SQL,
        params![
            key_id,
            g.kind,
            g.cka_id,
            g.cka_label,
            g.pub_cka_id,
            g.pub_cka_label,
            u[0],
            u[1],
            u[2],
            u[3],
            u[4],
            u[5],
            g.local,
            g.creator_instance
        ],
    )?;
    Ok(())
}

/// The PKCS#11 side of one generic key.
pub fn get_generic(conn: &Connection, key_id: i64) -> Result<Option<GenericRow>> {
    const SQL: &str = "SELECT kind, cka_id, cka_label, pub_cka_id, pub_cka_label, encrypt, \
                       decrypt, sign, verify, wrap, unwrap, local, creator_instance \
                       FROM generic_keys WHERE key_id = ?1";
    Ok(conn
        .query_row(SQL, params![key_id], generic_row)
        .optional()?)
}

fn generic_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<GenericRow> {
    Ok(GenericRow {
        kind: r.get(0)?,
        cka_id: r.get(1)?,
        cka_label: r.get(2)?,
        pub_cka_id: r.get(3)?,
        pub_cka_label: r.get(4)?,
        usage: [
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
            r.get(8)?,
            r.get(9)?,
            r.get(10)?,
        ],
        local: r.get(11)?,
        creator_instance: r.get(12)?,
    })
}

/// Every generic key, by the key's resource name.
pub fn list_generic(conn: &Connection) -> Result<Vec<(String, GenericRow)>> {
    const SQL: &str = "SELECT g.kind, g.cka_id, g.cka_label, g.pub_cka_id, g.pub_cka_label, \
                       g.encrypt, g.decrypt, g.sign, g.verify, g.wrap, g.unwrap, g.local, \
                       g.creator_instance, r.name FROM generic_keys g \
                       JOIN resources r ON r.id = g.key_id ORDER BY r.name";
    let mut stmt = conn.prepare(SQL)?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(13)?, generic_row(r)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Changes the client's `CKA_ID` and/or `CKA_LABEL` of one half of a generic key
/// (`public`: the public half of a pair).
pub fn set_generic_names(
    conn: &Connection,
    key_id: i64,
    public: bool,
    cka_id: Option<&[u8]>,
    cka_label: Option<&[u8]>,
) -> Result<()> {
    const PRIVATE: &str = "UPDATE generic_keys SET cka_id = COALESCE(?2, cka_id), \
                           cka_label = COALESCE(?3, cka_label) WHERE key_id = ?1";
    const PUBLIC: &str = "UPDATE generic_keys SET pub_cka_id = COALESCE(?2, pub_cka_id), \
                          pub_cka_label = COALESCE(?3, pub_cka_label) WHERE key_id = ?1";
    conn.execute(
        if public { PUBLIC } else { PRIVATE },
        params![key_id, cka_id, cka_label],
    )?;
    Ok(())
}

/// What became of the public half of a version whose objects a client destroyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublicHalf {
    /// The private half was destroyed; the public half stays listed.
    Kept,
    /// The public half was destroyed.
    Destroyed,
}

impl PublicHalf {
    fn as_str(self) -> &'static str {
        match self {
            PublicHalf::Kept => "KEPT",
            PublicHalf::Destroyed => "DESTROYED",
        }
    }
}

/// Sets the public half's state of a version (`Kept` never overrides `Destroyed`).
pub fn set_public_half(conn: &Connection, key_id: i64, version: u64, to: PublicHalf) -> Result<()> {
    const SQL: &str = "INSERT INTO public_halves(key_id, version, state) VALUES (?1, ?2, ?3) \
                       ON CONFLICT(key_id, version) DO UPDATE SET state = \
                       CASE WHEN state = 'DESTROYED' THEN state ELSE excluded.state END";
    conn.execute(SQL, params![key_id, version, to.as_str()])?;
    Ok(())
}

/// Every recorded public half: (key resource name, version, state).
pub fn list_public_halves(conn: &Connection) -> Result<Vec<(String, u64, PublicHalf)>> {
    const SQL: &str = "SELECT r.name, p.version, p.state FROM public_halves p \
                       JOIN resources r ON r.id = p.key_id ORDER BY r.name, p.version";
    let mut stmt = conn.prepare(SQL)?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, u64>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    rows.map(|row| {
        let (name, n, state) = row?;
        let state = match state.as_str() {
            "KEPT" => PublicHalf::Kept,
            "DESTROYED" => PublicHalf::Destroyed,
            other => return Err(corrupt(format!("public half state '{other}'"))),
        };
        Ok((name, n, state))
    })
    .collect()
}

/// One version of a key of a ring, with what names its objects (design §9 "Squatting"):
/// the key, its generic row's client names if it has one, the version's state and public
/// key. Keys with no version give one row with `version` None.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedVersion {
    /// The key's resource id (creation order).
    pub key_rid: i64,
    /// The key's full name.
    pub key_name: String,
    /// The client's `CKA_ID`/`CKA_LABEL` (private or secret, public) of a generic key.
    pub generic: Option<[Vec<u8>; 4]>,
    /// The version number.
    pub version: Option<u64>,
    /// The version's state (`ENABLED`, ...).
    pub state: Option<String>,
    /// The version's public key (DER SPKI).
    pub public_key: Option<Vec<u8>>,
}

/// Every version of every live key of the ring whose resource id is `ring_id`, in creation
/// order (one statement).
pub fn ring_named_versions(conn: &Connection, ring_id: i64) -> Result<Vec<NamedVersion>> {
    const SQL: &str = "SELECT r.id, r.name, g.key_id, g.cka_id, g.cka_label, \
                       COALESCE(g.pub_cka_id, g.cka_id), COALESCE(g.pub_cka_label, g.cka_label), \
                       v.version, v.state, v.public_key \
                       FROM resources r JOIN crypto_keys k ON k.resource_id = r.id \
                       LEFT JOIN generic_keys g ON g.key_id = r.id \
                       LEFT JOIN key_versions v ON v.key_id = r.id \
                       WHERE r.parent_id = ?1 AND r.kind = 'cryptoKey' AND r.deleted_at IS NULL \
                       ORDER BY r.id, v.version";
    let mut stmt = conn.prepare(SQL)?;
    let rows = stmt.query_map(params![ring_id], |r| {
        let generic = match r.get::<_, Option<i64>>(2)? {
            Some(_) => Some([
                r.get::<_, Vec<u8>>(3)?,
                r.get::<_, Vec<u8>>(4)?,
                r.get::<_, Vec<u8>>(5)?,
                r.get::<_, Vec<u8>>(6)?,
            ]),
            None => None,
        };
        Ok(NamedVersion {
            key_rid: r.get(0)?,
            key_name: r.get(1)?,
            generic,
            version: r
                .get::<_, Option<i64>>(7)?
                .map(|v| u64::try_from(v).unwrap_or(0)),
            state: r.get(8)?,
            public_key: r.get(9)?,
        })
    })?;
    Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
}
