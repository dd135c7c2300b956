//! Label and ID squatting (design §9 "Squatting", issue 13 finding 7): within a key ring a
//! non-empty `CKA_LABEL` or `CKA_ID` names one key.
//!
//! What a key holds: the `CKA_LABEL`s and `CKA_ID`s of the objects of its versions that are
//! ENABLED, DISABLED or PENDING_IMPORT (a version scheduled for destruction frees its names at
//! once, design §4 "Destroying a pair"): a generic key's client names (both halves of a pair
//! share them: they are one key), a keywardctl key's `CKA_ID`s (SHA-1 of the public key, or
//! 16 bytes of SHA-256 of the version's name; objects.rs); an import job that has not
//! expired holds its private key's `CKA_ID` (SHA-1 of its modulus). Reserved labels, whatever holds
//! what: every key id of the ring (a keywardctl key's primary label, and BYOK's "import into
//! this key"), `anything@vN` (keywardctl's labels of other versions) and `import-job-*`
//! (import jobs' private keys). Empty values are exempt: NSS, Java and pkcs11-tool without
//! `--label` make such keys, and NSS sets `CKA_ID` after generating.
//!
//! Every path that gives a key names calls [`check`] inside its write transaction; writes
//! are serialised (one writer: `BEGIN IMMEDIATE`), so two concurrent creates cannot both
//! take a name. [`duplicates`] reports what older stores hold (keywardd logs it at start).

use super::{Ctx, Failure, Res};
use crate::policy::{KeyRingName, ResourceName};
use crate::store::keys::{ring_named_versions, NamedVersion};
use crate::store::resources;
use keyward_token::public_key::PublicValues;
use rusqlite::Connection;
use sha2::{Digest, Sha256};

/// `CKR_ATTRIBUTE_VALUE_INVALID`: what a PKCS#11 path returns for a taken name.
pub use keyward_wire::rv::CKR_ATTRIBUTE_VALUE_INVALID;

/// Version states whose objects hold their names.
fn holds(state: Option<&str>) -> bool {
    matches!(state, Some("ENABLED" | "DISABLED" | "PENDING_IMPORT"))
}

/// The `CKA_ID` keywardctl gives a version (objects.rs `ObjectView::cka_id`).
pub fn keyward_cka_id(version_name: &str, public_key: Option<&[u8]>) -> Vec<u8> {
    match public_key.and_then(PublicValues::from_spki) {
        Some(p) => p.nss_id(),
        None => Sha256::digest(version_name.as_bytes())[..16].to_vec(),
    }
}

/// What one key of a ring holds.
#[derive(Debug, Clone)]
struct Held {
    key_rid: i64,
    key_name: String,
    key_id: String,
    labels: Vec<Vec<u8>>,
    ids: Vec<Vec<u8>>,
}

/// The names each key of the ring holds, in creation order.
fn held(conn: &Connection, ring_rid: i64) -> Res<Vec<Held>> {
    let mut out: Vec<Held> = Vec::new();
    for v in ring_named_versions(conn, ring_rid)? {
        let NamedVersion {
            key_rid,
            key_name,
            generic,
            version,
            state,
            public_key,
        } = v;
        if out.last().map(|h| h.key_rid) != Some(key_rid) {
            let key_id = key_name.rsplit('/').next().unwrap_or_default().to_string();
            out.push(Held {
                key_rid,
                key_name: key_name.clone(),
                key_id,
                labels: Vec::new(),
                ids: Vec::new(),
            });
        }
        let Some(h) = out.last_mut() else { continue };
        if !holds(state.as_deref()) {
            continue;
        }
        let add = |list: &mut Vec<Vec<u8>>, value: Vec<u8>| {
            if !value.is_empty() && !list.contains(&value) {
                list.push(value);
            }
        };
        match generic {
            Some([id, label, pub_id, pub_label]) => {
                add(&mut h.ids, id);
                add(&mut h.ids, pub_id);
                add(&mut h.labels, label);
                add(&mut h.labels, pub_label);
            }
            None => {
                if let Some(n) = version {
                    let vname = format!("{key_name}/cryptoKeyVersions/{n}");
                    add(&mut h.ids, keyward_cka_id(&vname, public_key.as_deref()));
                }
            }
        }
    }
    // Import jobs' private keys (design §5) carry SHA-1 of their modulus as CKA_ID (byok.rs)
    // until the job expires: a key may not take it either.
    for job in crate::store::import_jobs::list(conn, Some(ring_rid))? {
        if job.state == crate::store::import_jobs::JobState::Expired {
            continue;
        }
        if let Some(p) = PublicValues::from_spki(&job.public_key) {
            out.push(Held {
                key_rid: -job.id,
                key_name: job.name,
                key_id: String::new(),
                labels: Vec::new(),
                ids: vec![p.nss_id()],
            });
        }
    }
    Ok(out)
}

/// A label that shows at most 64 characters, escaped (for messages and logs).
fn show(b: &[u8]) -> String {
    let s: String = String::from_utf8_lossy(b).chars().take(64).collect();
    format!("{:?}", s)
}

fn hex(b: &[u8]) -> String {
    b.iter().take(32).map(|x| format!("{x:02x}")).collect()
}

/// Is `label` one of the reserved forms (`anything@vN`, `import-job-*`)?
fn reserved_form(label: &[u8]) -> Option<&'static str> {
    if label.starts_with(b"import-job-") {
        return Some("labels import-job-* are import jobs'");
    }
    if let Some(at) = label.windows(2).rposition(|w| w == b"@v") {
        let digits = &label[at + 2..];
        if at > 0 && !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) {
            return Some("labels ID@vN are keywardctl's names of key versions");
        }
    }
    None
}

/// Why a key in `ring` (other than `except`, a key's resource id) may not take `labels` and
/// `ids`, if it may not: a reserved label, or a name another key holds. Empty values are
/// exempt.
pub(crate) fn taken(
    ctx: &Ctx<'_>,
    ring: &KeyRingName,
    except: Option<i64>,
    labels: &[&[u8]],
    ids: &[&[u8]],
) -> Res<Option<String>> {
    let ring_res = ResourceName::KeyRing(ring.clone());
    let Some(ring_row) = resources::get(ctx.tx, &ring_res)? else {
        return Ok(None);
    };
    let keys = held(ctx.tx, ring_row.id)?;
    for label in labels.iter().filter(|l| !l.is_empty()) {
        if let Some(why) = reserved_form(label) {
            return Ok(Some(format!(
                "CKA_LABEL {} is reserved in {ring_res} ({why})",
                show(label)
            )));
        }
        for k in keys.iter().filter(|k| Some(k.key_rid) != except) {
            if k.key_id.as_bytes() == *label {
                return Ok(Some(format!(
                    "CKA_LABEL {} is the id of key {} (key ids are reserved labels)",
                    show(label),
                    k.key_name
                )));
            }
            if k.labels.iter().any(|l| l == label) {
                return Ok(Some(format!(
                    "CKA_LABEL {} is taken by key {} in {ring_res}",
                    show(label),
                    k.key_name
                )));
            }
        }
    }
    for id in ids.iter().filter(|i| !i.is_empty()) {
        if let Some(k) = keys
            .iter()
            .filter(|k| Some(k.key_rid) != except)
            .find(|k| k.ids.iter().any(|i| i == id))
        {
            return Ok(Some(format!(
                "CKA_ID {} is taken by {} in {ring_res}",
                hex(id),
                k.key_name
            )));
        }
    }
    Ok(None)
}

/// [`taken`] as a refusal: `rv` for the PKCS#11 paths (`CKR_ATTRIBUTE_VALUE_INVALID`), a
/// failed precondition for keywardctl's.
pub(crate) fn check(
    ctx: &Ctx<'_>,
    ring: &KeyRingName,
    except: Option<i64>,
    labels: &[&[u8]],
    ids: &[&[u8]],
    rv: Option<u64>,
) -> Res<()> {
    match taken(ctx, ring, except, labels, ids)? {
        None => Ok(()),
        Some(why) => Err(match rv {
            Some(rv) => {
                Failure::DeniedWith(rv, format!("{why} (design §9: names are unique in a ring)"))
            }
            None => Failure::Precondition(format!(
                "{why}: a label or CKA_ID names one key in a ring (design §9); choose another \
                 name, or destroy the key holding it"
            )),
        }),
    }
}

/// Labels and `CKA_ID`s that more than one key of a ring holds (stores from before the rule):
/// one line each, for keywardd's log at start.
pub(crate) fn duplicates(conn: &Connection) -> Res<Vec<String>> {
    let mut out = Vec::new();
    for ring in resources::list(conn, crate::policy::ResourceKind::KeyRing, None)? {
        let keys = held(conn, ring.id)?;
        let mut report = |what: &str,
                          show_it: &dyn Fn(&[u8]) -> String,
                          pick: &dyn Fn(&Held) -> &Vec<Vec<u8>>| {
            let mut seen: Vec<(&[u8], Vec<&str>)> = Vec::new();
            for k in &keys {
                for v in pick(k) {
                    match seen.iter_mut().find(|(s, _)| *s == v.as_slice()) {
                        Some((_, names)) => names.push(&k.key_name),
                        None => seen.push((v.as_slice(), vec![&k.key_name])),
                    }
                }
            }
            for (v, names) in seen.into_iter().filter(|(_, n)| n.len() > 1) {
                out.push(format!(
                    "duplicate {what} {} in {}: keys {} (finds return the oldest first; rename \
                     or destroy the others)",
                    show_it(v),
                    ring.name,
                    names.join(", ")
                ));
            }
        };
        report("CKA_LABEL", &|v| show(v), &|k| &k.labels);
        report("CKA_ID", &|v| hex(v), &|k| &k.ids);
    }
    Ok(out)
}

impl super::AdminService {
    /// [`duplicates`] in one read transaction (keywardd logs them at start).
    pub fn name_duplicates(&mut self) -> Result<Vec<String>, super::AdminError> {
        let run = |svc: &mut super::AdminService| -> Res<Vec<String>> {
            let tx = svc.store.read()?;
            let out = duplicates(&tx)?;
            tx.commit()?;
            Ok(out)
        };
        run(self).map_err(Failure::into_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_forms() {
        assert!(reserved_form(b"web@v2").is_some());
        assert!(reserved_form(b"a@b@v10").is_some());
        assert!(reserved_form(b"import-job-x").is_some());
        for ok in [
            &b"@v1"[..],
            b"web@v",
            b"web@vx",
            b"v2",
            b"import-jo",
            b"",
            b"web",
        ] {
            assert!(reserved_form(ok).is_none(), "{ok:?}");
        }
    }
}
