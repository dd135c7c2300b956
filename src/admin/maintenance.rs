//! What keywardd does by itself: destroy versions whose grace has ended, and reconcile the
//! store's object map with the token at start. Both are audited as the principal `keywardd`.

use super::{AdminError, AdminService, Failure};
use crate::audit::hex;
use crate::audit::{self, NewRecord, Outcome};
use crate::store::keys::{self as skeys, VersionAction, VersionState};
use std::collections::HashSet;
use std::fmt;

/// Token objects whose label starts with this are Keyward's own (the audit key, the signed
/// audit head), not key versions: reconciliation leaves them alone.
pub const RESERVED_LABEL_PREFIX: &str = "keyward-";

/// What reconciliation found. It deletes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReconcileReport {
    /// Token objects no version row names (CKA_ID hex and label).
    pub orphans: Vec<String>,
    /// Versions whose token object is gone.
    pub missing: Vec<String>,
    /// Versions whose objects were found.
    pub matched: usize,
}

impl fmt::Display for ReconcileReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} version(s) match the token; {} orphan token object(s){}; {} version(s) \
             missing their token object{}",
            self.matched,
            self.orphans.len(),
            if self.orphans.is_empty() {
                String::new()
            } else {
                format!(": {}", self.orphans.join(", "))
            },
            self.missing.len(),
            if self.missing.is_empty() {
                String::new()
            } else {
                format!(": {}", self.missing.join(", "))
            },
        )
    }
}

fn failure(f: Failure) -> AdminError {
    f.into_error()
}

pub(super) fn daemon_record(
    clock: &dyn super::Clock,
    action: &str,
    resource: Option<String>,
    outcome: Outcome,
    detail: String,
) -> NewRecord {
    {
        NewRecord {
            time_ms: clock.now_ms(),
            principal: "keywardd".into(),
            peer_pid: Some(std::process::id()),
            peer_uid: None,
            instance: None,
            action: action.into(),
            resource,
            outcome,
            rv: 0,
            detail: Some(detail),
            request_id: None,
        }
    }
}

impl AdminService {
    /// Destroys the token objects of versions whose destroy time has come and marks them
    /// DESTROYED; returns their names. Each destruction is audited.
    pub fn destroy_due(&mut self) -> Result<Vec<String>, AdminError> {
        let Some(token) = self.token.clone() else {
            return Ok(Vec::new());
        };
        let clock = self.clock.clone();
        let now = self.clock.now_ms() / 1000;
        let due = {
            let tx = self.store.read().map_err(|e| failure(e.into()))?;
            let due = skeys::due_destructions(&tx, now).map_err(|e| failure(e.into()))?;
            let names =
                crate::store::resources::list(&tx, crate::policy::ResourceKind::CryptoKey, None)
                    .map_err(|e| failure(e.into()))?;
            due.into_iter()
                .map(|(key_id, n, token_id)| {
                    let key = names
                        .iter()
                        .find(|r| r.id == key_id)
                        .map(|r| r.name.to_string());
                    (
                        key_id,
                        n,
                        token_id,
                        key.unwrap_or_else(|| format!("key#{key_id}")),
                    )
                })
                .collect::<Vec<_>>()
        };
        let mut done = Vec::new();
        for (key_id, n, token_id, key) in due {
            let name = format!("{key}/cryptoKeyVersions/{n}");
            if let Some(id) = &token_id {
                if let Err(e) = token.destroy_by_id(id) {
                    tracing::error!(version = %name, error = %e, "cannot destroy a version's token object");
                    let rec = daemon_record(
                        &*clock,
                        "version.destroyed",
                        Some(name),
                        Outcome::Error,
                        e.to_string(),
                    );
                    let _ = self.append_alone(&rec);
                    continue;
                }
            }
            let tx = self.store.write().map_err(|e| failure(e.into()))?;
            let changed =
                skeys::change_version(&tx, key_id, n, VersionAction::Destroyed, None, now)
                    .map_err(|e| failure(e.into()))?;
            if let Err(e) = changed {
                tracing::warn!(version = %name, reason = %e, "scheduled destruction skipped");
                continue;
            }
            let rec = daemon_record(
                &*clock,
                "version.destroyed",
                Some(name.clone()),
                Outcome::Allowed,
                "grace period ended: token object destroyed".into(),
            );
            audit::append(&tx, &rec).map_err(|e| failure(e.into()))?;
            tx.commit().map_err(|e| failure(Failure::from(e)))?;
            done.push(name);
        }
        if !done.is_empty() {
            self.refresh()?;
        }
        Ok(done)
    }

    fn append_alone(&mut self, rec: &NewRecord) -> Result<(), AdminError> {
        let tx = self.store.write().map_err(|e| failure(e.into()))?;
        audit::append(&tx, rec).map_err(|e| failure(e.into()))?;
        tx.commit().map_err(|e| failure(Failure::from(e)))
    }

    /// Compares the store's object map with the token and audits any drift. Deletes nothing.
    pub fn reconcile(&mut self) -> Result<ReconcileReport, AdminError> {
        let Some(token) = self.token.clone() else {
            return Ok(ReconcileReport::default());
        };
        let clock = self.clock.clone();
        let objects = token.list_objects().map_err(|e| failure(e.into()))?;
        let map = {
            let tx = self.store.read().map_err(|e| failure(e.into()))?;
            skeys::object_map(&tx).map_err(|e| failure(e.into()))?
        };
        let live: Vec<_> = map
            .iter()
            .filter(|m| m.state != VersionState::Destroyed)
            .collect();
        let mapped: HashSet<&[u8]> = live.iter().map(|m| m.token_id.as_slice()).collect();
        let present: HashSet<&[u8]> = objects.iter().map(|o| o.id.as_slice()).collect();
        let mut report = ReconcileReport::default();
        let mut seen = HashSet::new();
        for o in &objects {
            // Import jobs' wrapping pairs are labelled keyward-import-job:... (the prefix).
            if o.label.starts_with(RESERVED_LABEL_PREFIX.as_bytes())
                || mapped.contains(o.id.as_slice())
            {
                continue;
            }
            if seen.insert(o.id.clone()) {
                report.orphans.push(format!(
                    "CKA_ID {} (label '{}')",
                    hex(&o.id),
                    String::from_utf8_lossy(&o.label)
                ));
            }
        }
        for m in &live {
            if present.contains(m.token_id.as_slice()) {
                report.matched += 1;
            } else if m.state != VersionState::PendingImport
                && m.state != VersionState::ImportFailed
            {
                report.missing.push(m.name.clone());
            }
        }
        let tx = self.store.write().map_err(|e| failure(e.into()))?;
        for o in &report.orphans {
            let rec = daemon_record(
                &*clock,
                "reconcile.orphan",
                None,
                Outcome::Error,
                format!("token object with no version row: {o}"),
            );
            audit::append(&tx, &rec).map_err(|e| failure(e.into()))?;
        }
        for m in &report.missing {
            let rec = daemon_record(
                &*clock,
                "reconcile.missing",
                Some(m.clone()),
                Outcome::Error,
                "the version's token object is gone".into(),
            );
            audit::append(&tx, &rec).map_err(|e| failure(e.into()))?;
        }
        let rec = daemon_record(
            &*clock,
            "reconcile",
            None,
            Outcome::Allowed,
            report.to_string(),
        );
        audit::append(&tx, &rec).map_err(|e| failure(e.into()))?;
        tx.commit().map_err(|e| failure(Failure::from(e)))?;
        // keywardd calls this once at start: the data path's first state comes from here.
        self.refresh()?;
        Ok(report)
    }
}
