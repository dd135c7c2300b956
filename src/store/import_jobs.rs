//! BYOK import jobs (design §5): rows of the `import_jobs` table. The wrapping pair itself
//! lives in the token (keywardd makes it); this keeps the job's name, method, state, times,
//! the pair's internal `CKA_ID` and its public key.

use super::{corrupt, Result};
use rusqlite::{params, Connection, OptionalExtension};
use std::fmt;

/// An import job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    /// The wrapping pair is being made (never seen outside the creating transaction).
    Pending,
    /// Usable for imports until it expires.
    Active,
    /// Past its expiry: refused for imports; its wrapping pair is (or is about to be)
    /// destroyed.
    Expired,
}

impl JobState {
    /// The store's and the CLI's name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "PENDING",
            JobState::Active => "ACTIVE",
            JobState::Expired => "EXPIRED",
        }
    }

    fn parse(s: &str) -> Result<JobState> {
        match s {
            "PENDING" => Ok(JobState::Pending),
            "ACTIVE" => Ok(JobState::Active),
            "EXPIRED" => Ok(JobState::Expired),
            other => Err(corrupt(format!("import job state '{other}'"))),
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One import job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRow {
    /// Row id.
    pub id: i64,
    /// The key ring's resource id.
    pub ring_id: i64,
    /// Full name: `<ring>/importJobs/<id>`.
    pub name: String,
    /// The import method's name (`keyward_wire::import::ImportMethod`).
    pub method: String,
    /// The stored state (see [`JobRow::state_at`] for the effective one).
    pub state: JobState,
    /// The wrapping pair's CKA_ID in the token.
    pub token_id: Vec<u8>,
    /// The wrapping public key (DER SPKI).
    pub public_key: Vec<u8>,
    /// Creation time (unix seconds).
    pub created_at: i64,
    /// Expiry time (unix seconds).
    pub expire_at: i64,
    /// Who created it.
    pub created_by: String,
}

impl JobRow {
    /// The state at `now`: an ACTIVE job past its expiry is EXPIRED.
    pub fn state_at(&self, now: i64) -> JobState {
        match self.state {
            JobState::Active if now >= self.expire_at => JobState::Expired,
            s => s,
        }
    }
}

/// A new job's row.
#[derive(Debug, Clone, Copy)]
pub struct NewJob<'a> {
    /// The key ring's resource id.
    pub ring_id: i64,
    /// Full name.
    pub name: &'a str,
    /// Method name.
    pub method: &'a str,
    /// State (ACTIVE once the pair exists).
    pub state: JobState,
    /// The pair's CKA_ID.
    pub token_id: &'a [u8],
    /// The public key (DER SPKI).
    pub public_key: &'a [u8],
    /// Now.
    pub created_at: i64,
    /// Expiry.
    pub expire_at: i64,
    /// Creator (member string).
    pub created_by: &'a str,
}

const COLS: &str = "id, ring_id, name, method, state, token_id, public_key, created_at, \
                    expire_at, created_by";

fn job_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(JobRow, String)> {
    let state: String = r.get(4)?;
    Ok((
        JobRow {
            id: r.get(0)?,
            ring_id: r.get(1)?,
            name: r.get(2)?,
            method: r.get(3)?,
            state: JobState::Pending,
            token_id: r.get(5)?,
            public_key: r.get(6)?,
            created_at: r.get(7)?,
            expire_at: r.get(8)?,
            created_by: r.get(9)?,
        },
        state,
    ))
}

fn finish((mut row, state): (JobRow, String)) -> Result<JobRow> {
    row.state = JobState::parse(&state)?;
    Ok(row)
}

/// Inserts a job.
pub fn insert(conn: &Connection, j: &NewJob<'_>) -> Result<i64> {
    const SQL: &str = "INSERT INTO import_jobs(ring_id, name, method, state, token_id, \
                       public_key, created_at, expire_at, created_by) \
                       VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
    conn.execute(
        SQL,
        params![
            j.ring_id,
            j.name,
            j.method,
            j.state.as_str(),
            j.token_id,
            j.public_key,
            j.created_at,
            j.expire_at,
            j.created_by
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Is a job name taken (names are never reused)?
pub fn name_taken(conn: &Connection, name: &str) -> Result<bool> {
    const SQL: &str = "SELECT 1 FROM import_jobs WHERE name = ?1";
    Ok(conn
        .query_row(SQL, params![name], |_| Ok(()))
        .optional()?
        .is_some())
}

/// One job by full name.
pub fn get(conn: &Connection, name: &str) -> Result<Option<JobRow>> {
    let sql = format!("SELECT {COLS} FROM import_jobs WHERE name = ?1");
    conn.query_row(&sql, params![name], job_row)
        .optional()?
        .map(finish)
        .transpose()
}

/// The jobs of a ring (every ring when `ring_id` is None), by name.
pub fn list(conn: &Connection, ring_id: Option<i64>) -> Result<Vec<JobRow>> {
    let sql =
        format!("SELECT {COLS} FROM import_jobs WHERE ?1 IS NULL OR ring_id = ?1 ORDER BY name");
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params![ring_id], job_row)?;
    rows.map(|r| finish(r?)).collect()
}

/// Marks a job EXPIRED (its wrapping pair has been destroyed).
pub fn set_expired(conn: &Connection, id: i64) -> Result<()> {
    const SQL: &str = "UPDATE import_jobs SET state = 'EXPIRED' WHERE id = ?1";
    conn.execute(SQL, params![id])?;
    Ok(())
}

/// Marks a version as imported (BYOK).
pub fn set_version_imported(conn: &Connection, key_id: i64, version: u64) -> Result<()> {
    const SQL: &str = "UPDATE key_versions SET imported = 1 WHERE key_id = ?1 AND version = ?2";
    conn.execute(SQL, params![key_id, version])?;
    Ok(())
}

/// Records why an import of a version failed (the version is IMPORT_FAILED).
pub fn set_import_failure(conn: &Connection, key_id: i64, version: u64, why: &str) -> Result<()> {
    const SQL: &str = "UPDATE key_versions SET import_failure = ?3 \
                       WHERE key_id = ?1 AND version = ?2";
    conn.execute(SQL, params![key_id, version, why])?;
    Ok(())
}

/// Sets the public key (DER SPKI) of an imported asymmetric version.
pub fn set_version_public_key(
    conn: &Connection,
    key_id: i64,
    version: u64,
    der: &[u8],
) -> Result<()> {
    const SQL: &str = "UPDATE key_versions SET public_key = ?3 WHERE key_id = ?1 AND version = ?2";
    conn.execute(SQL, params![key_id, version, der])?;
    Ok(())
}

/// Why the import of a version failed, if it did.
pub fn import_failure(conn: &Connection, key_id: i64, version: u64) -> Result<Option<String>> {
    const SQL: &str = "SELECT import_failure FROM key_versions WHERE key_id = ?1 AND version = ?2";
    Ok(conn
        .query_row(SQL, params![key_id, version], |r| r.get(0))
        .optional()?
        .flatten())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(state: JobState) -> JobRow {
        JobRow {
            id: 1,
            ring_id: 1,
            name: "projects/p/keyRings/r/importJobs/j".into(),
            method: "rsa-oaep-3072-sha1-aes-256".into(),
            state,
            token_id: vec![1],
            public_key: vec![2],
            created_at: 100,
            expire_at: 200,
            created_by: "user:a@b".into(),
        }
    }

    #[test]
    fn a_job_expires_at_its_expire_time() {
        let j = row(JobState::Active);
        assert_eq!(j.state_at(100), JobState::Active);
        assert_eq!(j.state_at(199), JobState::Active);
        assert_eq!(j.state_at(200), JobState::Expired);
        assert_eq!(row(JobState::Expired).state_at(150), JobState::Expired);
        for s in [JobState::Pending, JobState::Active, JobState::Expired] {
            assert_eq!(JobState::parse(s.as_str()).unwrap(), s);
        }
        assert!(JobState::parse("DONE").is_err());
    }

    #[test]
    fn rows_round_trip_through_the_schema() {
        let mut store = crate::store::Store::in_memory().unwrap();
        let tx = store.write().unwrap();
        tx.execute(
            "INSERT INTO resources(id, name, kind, created_at) \
             VALUES (7, 'projects/p/keyRings/r', 'keyRing', 0)",
            [],
        )
        .unwrap();
        let name = "projects/p/keyRings/r/importJobs/j";
        assert!(!name_taken(&tx, name).unwrap());
        insert(
            &tx,
            &NewJob {
                ring_id: 7,
                name,
                method: "rsa-oaep-3072-sha1-aes-256",
                state: JobState::Active,
                token_id: &[1, 2],
                public_key: &[3],
                created_at: 10,
                expire_at: 20,
                created_by: "user:a@b",
            },
        )
        .unwrap();
        assert!(name_taken(&tx, name).unwrap());
        let got = get(&tx, name).unwrap().unwrap();
        assert_eq!((got.state, got.expire_at), (JobState::Active, 20));
        assert_eq!(list(&tx, Some(7)).unwrap().len(), 1);
        assert_eq!(list(&tx, Some(8)).unwrap().len(), 0);
        set_expired(&tx, got.id).unwrap();
        assert_eq!(get(&tx, name).unwrap().unwrap().state, JobState::Expired);
    }
}
