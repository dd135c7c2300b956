//! What the data path reads on every call: the policy snapshot and the key catalog (rings,
//! keys, versions; the PKCS#11 side of generic keys, the public halves clients destroyed,
//! certificates and import jobs), built together in one read transaction and published as
//! one immutable [`State`]. keywardd swaps in a new `State` after every committed change, so
//! a policy change applies to the next call of a live session, and no call queries SQLite
//! or waits for the admin handler (design §4).

use crate::policy::names::check_id;
use crate::policy::{CryptoKeyName, KeyRingName, ResourceKind, ResourceName, Snapshot};
use crate::store::certs::{self as scerts, CertRow};
use crate::store::import_jobs::{self as sjobs, JobRow, JobState};
use crate::store::keys::{self as skeys, GenericRow, PublicHalf, VersionState};
use crate::store::{self, resources, Result};
use keyward_token::{GenericKind, GenericUsage};
use keyward_wire::import::ImportMethod;
use parking_lot::RwLock;
use rusqlite::Connection;
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::Arc;

/// A key ring as PKCS#11 shows it: one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingEntry {
    /// Its name.
    pub name: KeyRingName,
    /// The slot id (31-bit hash of the name).
    pub slot_id: u32,
    /// The token label (≤ 32 bytes).
    pub token_label: String,
    /// The token serial (16 hex digits).
    pub serial: String,
    /// `allow_plaintext_import`.
    pub allow_plaintext_import: bool,
    /// `strict_templates`.
    pub strict_templates: bool,
}

/// One version of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionEntry {
    /// Its number.
    pub version: u64,
    /// Its state.
    pub state: VersionState,
    /// Its internal CKA_ID in the backing token.
    pub token_id: Option<Vec<u8>>,
    /// Its public key (DER SPKI), for asymmetric keys.
    pub public_key: Option<Vec<u8>>,
    /// Its material was imported (BYOK), not generated in the token.
    pub imported: bool,
}

/// A crypto key and its versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    /// Its name.
    pub name: CryptoKeyName,
    /// Its purpose (`keyward_wire::keys::Purpose` name).
    pub purpose: String,
    /// Its algorithm (None for PKCS11_GENERIC keys).
    pub algorithm: Option<String>,
    /// May its material leave the token wrapped?
    pub exportable: bool,
    /// The primary version.
    pub primary_version: Option<u64>,
    /// Who created it.
    pub created_by: String,
    /// Its versions, oldest first.
    pub versions: Vec<VersionEntry>,
    /// Its resource id: keys are numbered in creation order (finds return objects in that
    /// order, design §9 "Squatting").
    pub seq: i64,
}

/// The PKCS#11 side of a generic key (made through the module), as the dispatcher shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenericAttrs {
    /// Kind and size.
    pub kind: GenericKind,
    /// The client's `CKA_ID` of the private or secret object.
    pub cka_id: Vec<u8>,
    /// The client's `CKA_LABEL` of the private or secret object.
    pub cka_label: Vec<u8>,
    /// The public half's `CKA_ID`.
    pub pub_cka_id: Vec<u8>,
    /// The public half's `CKA_LABEL`.
    pub pub_cka_label: Vec<u8>,
    /// Usage flags.
    pub usage: GenericUsage,
    /// `CKA_LOCAL`: generated in the token.
    pub local: bool,
    /// The module instance that made it.
    pub creator_instance: Option<String>,
}

impl GenericAttrs {
    /// Reads a stored row (the kind parsed; a missing public `CKA_ID`/`CKA_LABEL` is the
    /// private object's).
    pub fn from_row(g: GenericRow) -> std::result::Result<GenericAttrs, String> {
        let kind = g.kind.parse::<GenericKind>()?;
        let u = g.usage;
        Ok(GenericAttrs {
            kind,
            pub_cka_id: g.pub_cka_id.unwrap_or_else(|| g.cka_id.clone()),
            pub_cka_label: g.pub_cka_label.unwrap_or_else(|| g.cka_label.clone()),
            cka_id: g.cka_id,
            cka_label: g.cka_label,
            usage: GenericUsage {
                encrypt: u[0],
                decrypt: u[1],
                sign: u[2],
                verify: u[3],
                wrap: u[4],
                unwrap: u[5],
            },
            local: g.local,
            creator_instance: g.creator_instance,
        })
    }
}

/// A certificate object as the dispatcher shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertEntry {
    /// The stored row.
    pub row: CertRow,
    /// Its ring.
    pub ring: KeyRingName,
    /// The owning key and version.
    pub owner: Option<(CryptoKeyName, u64)>,
}

impl CertEntry {
    /// Reads a stored row (names parsed).
    pub fn from_row(row: CertRow) -> std::result::Result<CertEntry, String> {
        let ring = match ResourceName::from_str(&row.ring) {
            Ok(ResourceName::KeyRing(r)) => r,
            _ => return Err(format!("certificate {}: bad ring {}", row.id, row.ring)),
        };
        let owner = match &row.owner {
            None => None,
            Some((k, v)) => match ResourceName::from_str(k) {
                Ok(ResourceName::CryptoKey(k)) => Some((k, *v)),
                _ => return Err(format!("certificate {}: bad key {k}", row.id)),
            },
        };
        Ok(CertEntry { row, ring, owner })
    }

    /// The resource name audit records use: the owning version's, else the ring's.
    pub fn resource(&self) -> String {
        match &self.owner {
            Some((k, v)) => ResourceName::Version(k.clone(), *v).to_string(),
            None => ResourceName::KeyRing(self.ring.clone()).to_string(),
        }
    }
}

/// An import job as the PKCS#11 dispatcher shows it (its private key object, design §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEntry {
    /// Its ring.
    pub ring: KeyRingName,
    /// Its id.
    pub id: String,
    /// Its full name.
    pub name: String,
    /// Its method.
    pub method: ImportMethod,
    /// Its stored state (ACTIVE ones expire at `expire_at`).
    state: JobState,
    expire_at: i64,
    /// The wrapping public key (DER SPKI).
    pub public_key: Vec<u8>,
}

impl JobEntry {
    /// Reads a stored row (name and method parsed).
    pub fn from_row(row: JobRow) -> std::result::Result<JobEntry, String> {
        let bad = || format!("import job {}: bad name", row.name);
        let (ring, id) = row.name.rsplit_once("/importJobs/").ok_or_else(bad)?;
        check_id("import job", id)?;
        let Ok(ResourceName::KeyRing(ring)) = ResourceName::from_str(ring) else {
            return Err(bad());
        };
        Ok(JobEntry {
            ring,
            id: id.to_string(),
            method: row.method.parse()?,
            state: row.state,
            expire_at: row.expire_at,
            public_key: row.public_key,
            name: row.name,
        })
    }

    /// Is the job ACTIVE at `now` (unix seconds)?
    pub fn active_at(&self, now: i64) -> bool {
        self.state == JobState::Active && now < self.expire_at
    }
}

/// Rings and keys by name, and the other objects PKCS#11 shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    /// Every live key ring, by name.
    pub rings: BTreeMap<KeyRingName, RingEntry>,
    /// Every key, by name.
    pub keys: BTreeMap<CryptoKeyName, KeyEntry>,
    /// The PKCS#11 side of generic keys (made through the module), by key name.
    pub generic: HashMap<CryptoKeyName, GenericAttrs>,
    /// What a client did to the public half of a version (design §4 "Destroying a pair").
    pub public_halves: HashMap<(CryptoKeyName, u64), PublicHalf>,
    /// The live certificate objects, oldest first.
    pub certificates: Vec<CertEntry>,
    /// Every import job (the ACTIVE ones show as private key objects, design §5).
    pub import_jobs: Vec<JobEntry>,
}

impl Catalog {
    /// The ring with this slot id.
    pub fn ring_by_slot(&self, slot: u32) -> Option<&RingEntry> {
        self.rings.values().find(|r| r.slot_id == slot)
    }

    /// The keys of a ring, by name.
    pub fn keys_of<'a>(&'a self, ring: &'a KeyRingName) -> impl Iterator<Item = &'a KeyEntry> + 'a {
        self.keys.values().filter(move |k| &k.name.ring == ring)
    }
}

/// The policy snapshot and the catalog, from one read transaction.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// Who may do what.
    pub policy: Snapshot,
    /// What exists.
    pub catalog: Catalog,
}

/// Builds the state inside an open (read) transaction.
pub fn build(conn: &Connection) -> Result<State> {
    let policy = store::build_snapshot(conn)?;
    let mut catalog = Catalog::default();
    for r in resources::list(conn, ResourceKind::KeyRing, None)? {
        if let Some(k) = resources::get_key_ring(conn, &r.name)? {
            let ResourceName::KeyRing(name) = k.resource.name.clone() else {
                continue;
            };
            catalog.rings.insert(
                name.clone(),
                RingEntry {
                    name,
                    slot_id: k.slot_id,
                    token_label: k.token_label,
                    serial: k.serial,
                    allow_plaintext_import: k.allow_plaintext_import,
                    strict_templates: k.strict_templates,
                },
            );
        }
    }
    for r in resources::list(conn, ResourceKind::CryptoKey, None)? {
        let ResourceName::CryptoKey(name) = r.name.clone() else {
            continue;
        };
        let Some(k) = skeys::get_key(conn, r.id)? else {
            continue;
        };
        let versions = skeys::list_versions(conn, r.id)?
            .into_iter()
            .map(|v| VersionEntry {
                version: v.version,
                state: v.state,
                token_id: v.token_id,
                public_key: v.public_key,
                imported: v.imported,
            })
            .collect();
        catalog.keys.insert(
            name.clone(),
            KeyEntry {
                name,
                purpose: k.purpose,
                algorithm: k.algorithm,
                exportable: k.exportable,
                primary_version: k.primary_version,
                created_by: k.created_by,
                versions,
                seq: r.id,
            },
        );
    }
    for (name, g) in skeys::list_generic(conn)? {
        let attrs = GenericAttrs::from_row(g).map_err(store::corrupt)?;
        catalog.generic.insert(key_name(&name)?, attrs);
    }
    for (name, n, half) in skeys::list_public_halves(conn)? {
        catalog.public_halves.insert((key_name(&name)?, n), half);
    }
    for row in scerts::list(conn)? {
        catalog
            .certificates
            .push(CertEntry::from_row(row).map_err(store::corrupt)?);
    }
    for row in sjobs::list(conn, None)? {
        catalog
            .import_jobs
            .push(JobEntry::from_row(row).map_err(store::corrupt)?);
    }
    Ok(State { policy, catalog })
}

/// A stored crypto key name.
fn key_name(s: &str) -> Result<CryptoKeyName> {
    match ResourceName::from_str(s) {
        Ok(ResourceName::CryptoKey(k)) => Ok(k),
        _ => Err(store::corrupt(format!("'{s}' is not a crypto key"))),
    }
}

/// The published state: readers clone the `Arc` (cheap) and keep a consistent view for the
/// whole call; the admin handler swaps in a new one after each committed change.
#[derive(Debug, Clone, Default)]
pub struct Published(Arc<RwLock<Arc<State>>>);

impl Published {
    /// The current state.
    pub fn current(&self) -> Arc<State> {
        self.0.read().clone()
    }

    /// Replaces the state.
    pub fn publish(&self, state: State) {
        *self.0.write() = Arc::new(state);
    }
}
