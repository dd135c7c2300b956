//! What the data path reads on every call: the policy snapshot and the key catalog (rings,
//! keys, versions, the object map), built together in one read transaction and published as
//! one immutable [`State`]. keywardd swaps in a new `State` after every committed change, so
//! a policy change applies to the next call of a live session, and no call queries SQLite
//! (design §4).

use crate::policy::{CryptoKeyName, KeyRingName, ResourceKind, ResourceName, Snapshot};
use crate::store::keys::{self as skeys, VersionState};
use crate::store::{self, resources, Result};
use parking_lot::RwLock;
use rusqlite::Connection;
use std::collections::BTreeMap;
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

/// Rings and keys by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    /// Every live key ring, by name.
    pub rings: BTreeMap<KeyRingName, RingEntry>,
    /// Every key, by name.
    pub keys: BTreeMap<CryptoKeyName, KeyEntry>,
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
    Ok(State { policy, catalog })
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
