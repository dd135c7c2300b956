//! Crypto keys and versions (design §2): create, rotate, primary, enable/disable,
//! destroy/restore, public key. Each version is one token object (or key pair) with an
//! internal random `CKA_ID`, made in the backing token; without one (offline `--db`) these
//! requests are refused. The token object is made before the rows are written; if the
//! transaction then fails, the object is destroyed again, and if keywardd dies in between,
//! start-up reconciliation reports it.

use super::render::{done, table, time};
use super::{Ctx, Failure, Res};
use crate::policy::names::check_id;
use crate::policy::{CryptoKeyName, Permission as P, ResourceKind, ResourceName};
use crate::store::keys::{self as skeys, KeyRow, VersionAction, VersionRow, VersionState};
use crate::store::resources;
use keyward_token::{KeySpec, Token, TokenError};
use keyward_wire::admin::AdminResponse;
use keyward_wire::keys::{Algorithm, Purpose};
use serde_json::json;

/// A state change asked of a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Enable.
    Enable,
    /// Disable.
    Disable,
    /// Schedule destruction.
    Destroy,
    /// Restore from scheduled destruction.
    Restore,
}

/// Default grace before a scheduled version is destroyed: 30 days.
pub const DEFAULT_GRACE_SECS: u64 = 30 * 86_400;
/// The shortest grace allowed: 1 day.
pub const MIN_GRACE_SECS: u64 = 86_400;

impl From<TokenError> for Failure {
    fn from(e: TokenError) -> Failure {
        Failure::Token(e.ck_rv(), e.to_string())
    }
}

fn token<'a>(ctx: &Ctx<'a>) -> Res<&'a Token> {
    ctx.token.ok_or_else(|| {
        Failure::Precondition(
            "key operations need the backing token, which only keywardd holds: run this \
             through keywardd (drop --db)"
                .into(),
        )
    })
}

fn key_name(s: &str) -> Res<CryptoKeyName> {
    match super::parse_resource(s)? {
        ResourceName::CryptoKey(k) => Ok(k),
        other => Err(Failure::Invalid(format!(
            "'{other}' is a {}, not a crypto key (.../keyRings/R/cryptoKeys/K)",
            other.kind().noun()
        ))),
    }
}

fn version_name(s: &str) -> Res<(CryptoKeyName, u64)> {
    match super::parse_resource(s)? {
        ResourceName::Version(k, n) => Ok((k, n)),
        other => Err(Failure::Invalid(format!(
            "'{other}' is a {}, not a key version (.../cryptoKeys/K/cryptoKeyVersions/N)",
            other.kind().noun()
        ))),
    }
}

/// The key row of a live key.
fn key_row(ctx: &Ctx<'_>, key: &CryptoKeyName) -> Res<KeyRow> {
    let name = ResourceName::CryptoKey(key.clone());
    let row = resources::get(ctx.tx, &name)?
        .ok_or_else(|| Failure::Precondition(format!("crypto key {name} does not exist")))?;
    skeys::get_key(ctx.tx, row.id)?
        .ok_or_else(|| Failure::Store(crate::store::corrupt(format!("key {name} has no key row"))))
}

fn version_row(ctx: &Ctx<'_>, key: &KeyRow, key_name: &CryptoKeyName, n: u64) -> Res<VersionRow> {
    skeys::get_version(ctx.tx, key.id, n)?.ok_or_else(|| {
        Failure::Precondition(format!("{key_name}/cryptoKeyVersions/{n} does not exist"))
    })
}

fn algorithm_of(key: &KeyRow) -> Res<Option<Algorithm>> {
    key.algorithm
        .as_deref()
        .map(|a| {
            a.parse::<Algorithm>()
                .map_err(|e| Failure::Store(crate::store::corrupt(e)))
        })
        .transpose()
}

/// Generates a version's token object(s) and returns (CKA_ID, public key DER).
fn generate(
    token: &Token,
    algorithm: Algorithm,
    label: &str,
    exportable: bool,
) -> Res<(Vec<u8>, Option<Vec<u8>>)> {
    let id = token.new_object_id()?;
    let made = token.generate_key(&KeySpec {
        algorithm,
        id: &id,
        label,
        exportable,
    })?;
    Ok((made.id, made.public_key.map(|p| p.der)))
}

/// Writes a version's rows; on failure destroys the token objects just made.
fn record_version(
    ctx: &Ctx<'_>,
    key_id: i64,
    token_id: &[u8],
    public_key: Option<&[u8]>,
) -> Res<u64> {
    match skeys::add_version(
        ctx.tx,
        key_id,
        VersionState::Enabled,
        Some(token_id),
        public_key,
        ctx.now,
    ) {
        Ok(n) => Ok(n),
        Err(e) => {
            if let Some(t) = ctx.token {
                if let Err(d) = t.destroy_by_id(token_id) {
                    tracing::error!(error = %d, "cannot destroy the token object of a failed key write; reconciliation will report it");
                }
            }
            Err(e.into())
        }
    }
}

pub fn create(
    ctx: &mut Ctx<'_>,
    keyring: &str,
    id: &str,
    purpose: &str,
    algorithm: &str,
    exportable: bool,
) -> Res<AdminResponse> {
    let ring = match super::parse_resource(keyring)? {
        ResourceName::KeyRing(r) => r,
        other => {
            return Err(Failure::Invalid(format!("'{other}' is not a key ring")));
        }
    };
    check_id("crypto key", id).map_err(Failure::Invalid)?;
    let purpose: Purpose = purpose.parse().map_err(Failure::Invalid)?;
    let algorithm: Algorithm = algorithm.parse().map_err(Failure::Invalid)?;
    if purpose == Purpose::Pkcs11Generic {
        return Err(Failure::Invalid(
            "PKCS11_GENERIC keys are made through the PKCS#11 module (C_GenerateKey), not by \
             keywardctl"
                .into(),
        ));
    }
    if algorithm.purpose() != purpose {
        return Err(Failure::Invalid(format!(
            "algorithm {algorithm} belongs to purpose {}, not {purpose}",
            algorithm.purpose()
        )));
    }
    let ring_res = ResourceName::KeyRing(ring.clone());
    ctx.require(P::CryptoKeysCreate, &ring_res)?;
    if exportable {
        ctx.require(P::ExportKeyMaterial, &ring_res)?;
    }
    let ring_row = resources::get(ctx.tx, &ring_res)?
        .ok_or_else(|| Failure::Precondition(format!("key ring {ring_res} does not exist")))?;
    let key = CryptoKeyName {
        ring,
        id: id.to_string(),
    };
    let name = ResourceName::CryptoKey(key.clone());
    if resources::name_taken(ctx.tx, &name)? {
        return Err(Failure::Precondition(format!(
            "crypto key {name} already exists (keys are never deleted nor their names reused)"
        )));
    }
    // Squatting (design §9): the key id becomes the primary's CKA_LABEL; a symmetric
    // version's CKA_ID is known now (an asymmetric one is SHA-1 of a fresh public key).
    let first = format!("{name}/cryptoKeyVersions/1");
    let sym_id = (!algorithm.is_asymmetric()).then(|| super::squat::keyward_cka_id(&first, None));
    super::squat::check(
        ctx,
        &key.ring,
        None,
        &[id.as_bytes()],
        &[sym_id.as_deref().unwrap_or_default()],
        None,
    )?;
    let token = token(ctx)?;
    token
        .check_algorithm(algorithm)
        .map_err(|e| Failure::Invalid(e.to_string()))?;
    let (token_id, public_key) = generate(token, algorithm, &first, exportable)?;
    let rid = resources::insert(ctx.tx, &name, Some(ring_row.id), ctx.now);
    let rid = match rid.and_then(|rid| {
        skeys::insert_key(
            ctx.tx,
            rid,
            purpose.as_str(),
            Some(algorithm.as_str()),
            exportable,
            &ctx.caller.principal.member.to_string(),
        )
        .map(|_| rid)
    }) {
        Ok(rid) => rid,
        Err(e) => {
            let _ = token.destroy_by_id(&token_id);
            return Err(e.into());
        }
    };
    let n = record_version(ctx, rid, &token_id, public_key.as_deref())?;
    skeys::set_primary(ctx.tx, rid, n)?;
    Ok(done(
        format!(
            "created {name} ({purpose}, {algorithm}{}), primary version {n}",
            if exportable { ", exportable" } else { "" }
        ),
        json!({"name": name.to_string(), "purpose": purpose.as_str(),
               "algorithm": algorithm.as_str(), "exportable": exportable,
               "primaryVersion": n}),
    ))
}

fn key_json(name: &CryptoKeyName, k: &KeyRow, versions: &[VersionRow]) -> serde_json::Value {
    json!({
        "name": name.to_string(),
        "purpose": k.purpose,
        "algorithm": k.algorithm,
        "exportable": k.exportable,
        "primaryVersion": k.primary_version,
        "createdBy": k.created_by,
        "versions": versions.iter().map(|v| version_json(name, v)).collect::<Vec<_>>(),
    })
}

fn version_json(key: &CryptoKeyName, v: &VersionRow) -> serde_json::Value {
    json!({
        "name": format!("{key}/cryptoKeyVersions/{}", v.version),
        "state": v.state.as_str(),
        "createTime": time(v.created_at),
        "destroyTime": v.destroy_time.map(time),
        "destroyEventTime": v.destroyed_at.map(time),
        "imported": v.imported,
    })
}

pub fn list(ctx: &mut Ctx<'_>, keyring: &str) -> Res<AdminResponse> {
    let ring = super::parse_resource(keyring)?;
    if ring.kind() != ResourceKind::KeyRing {
        return Err(Failure::Invalid(format!("'{ring}' is not a key ring")));
    }
    ctx.require(P::CryptoKeysList, &ring)?;
    let mut rows = Vec::new();
    let mut js = Vec::new();
    for r in resources::list(ctx.tx, ResourceKind::CryptoKey, Some(&ring))? {
        let ResourceName::CryptoKey(name) = &r.name else {
            continue;
        };
        let k = key_row(ctx, name)?;
        let versions = skeys::list_versions(ctx.tx, k.id)?;
        // A key made through the PKCS#11 module is known by its CKA_LABEL (issue 18 item 9);
        // a KMS-style key's label is its id.
        let label = match skeys::get_generic(ctx.tx, k.id)? {
            Some(g) => String::from_utf8_lossy(&g.cka_label).into_owned(),
            None => name.id.clone(),
        };
        let primary_state = k
            .primary_version
            .and_then(|p| versions.iter().find(|v| v.version == p))
            .map(|v| v.state.as_str())
            .unwrap_or("-");
        rows.push(vec![
            name.to_string(),
            k.purpose.clone(),
            k.algorithm.clone().unwrap_or_else(|| "-".into()),
            k.primary_version
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into()),
            primary_state.to_string(),
            versions.len().to_string(),
            if label.is_empty() {
                "-".into()
            } else {
                label.clone()
            },
        ]);
        let mut doc = key_json(name, &k, &versions);
        doc["label"] = label.into();
        js.push(doc);
    }
    Ok(table(
        &[
            "KEY",
            "PURPOSE",
            "ALGORITHM",
            "PRIMARY",
            "PRIMARY STATE",
            "VERSIONS",
            "LABEL",
        ],
        rows,
        json!(js),
    ))
}

pub fn get(ctx: &mut Ctx<'_>, name: &str) -> Res<AdminResponse> {
    let key = key_name(name)?;
    ctx.require(P::CryptoKeysGet, &ResourceName::CryptoKey(key.clone()))?;
    let k = key_row(ctx, &key)?;
    let versions = skeys::list_versions(ctx.tx, k.id)?;
    let rows = vec![
        vec!["name".into(), key.to_string()],
        vec!["purpose".into(), k.purpose.clone()],
        vec![
            "algorithm".into(),
            k.algorithm.clone().unwrap_or_else(|| "-".into()),
        ],
        vec!["exportable".into(), super::render::yes(k.exportable)],
        vec![
            "primary version".into(),
            k.primary_version
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into()),
        ],
        vec!["versions".into(), versions.len().to_string()],
        vec!["created by".into(), k.created_by.clone()],
    ];
    Ok(table(
        &["FIELD", "VALUE"],
        rows,
        key_json(&key, &k, &versions),
    ))
}

pub fn rotate(ctx: &mut Ctx<'_>, name: &str, set_primary: bool) -> Res<AdminResponse> {
    let key = key_name(name)?;
    let res = ResourceName::CryptoKey(key.clone());
    ctx.require(P::VersionsCreate, &res)?;
    let k = key_row(ctx, &key)?;
    let Some(algorithm) = algorithm_of(&k)? else {
        return Err(Failure::Precondition(format!(
            "{key} is a PKCS11_GENERIC key made through the module: it has no algorithm to \
             rotate to"
        )));
    };
    let becomes_primary = !algorithm.is_asymmetric() || set_primary;
    if algorithm.is_asymmetric() && set_primary {
        ctx.require(P::CryptoKeysUpdate, &res)?;
    }
    let token = token(ctx)?;
    let next = skeys::list_versions(ctx.tx, k.id)?
        .last()
        .map(|v| v.version + 1)
        .unwrap_or(1);
    if !algorithm.is_asymmetric() {
        // Squatting (design §9): the new version's CKA_ID is derived from its name.
        let id = super::squat::keyward_cka_id(&format!("{key}/cryptoKeyVersions/{next}"), None);
        super::squat::check(ctx, &key.ring, Some(k.id), &[], &[&id], None)?;
    }
    let (token_id, public_key) = generate(
        token,
        algorithm,
        &format!("{key}/cryptoKeyVersions/{next}"),
        k.exportable,
    )?;
    let n = record_version(ctx, k.id, &token_id, public_key.as_deref())?;
    if becomes_primary {
        skeys::set_primary(ctx.tx, k.id, n)?;
    }
    let note = if becomes_primary {
        "it is now the primary version".to_string()
    } else {
        format!(
            "the primary stays version {} (asymmetric keys change primary only with \
             --set-primary or key set-primary)",
            k.primary_version
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into())
        )
    };
    Ok(done(
        format!("created {key}/cryptoKeyVersions/{n}; {note}"),
        json!({"name": format!("{key}/cryptoKeyVersions/{n}"), "primary": becomes_primary}),
    ))
}

pub fn set_primary(ctx: &mut Ctx<'_>, name: &str, version: u64) -> Res<AdminResponse> {
    let key = key_name(name)?;
    ctx.require(P::CryptoKeysUpdate, &ResourceName::CryptoKey(key.clone()))?;
    let k = key_row(ctx, &key)?;
    let v = version_row(ctx, &k, &key, version)?;
    if v.state != VersionState::Enabled {
        return Err(Failure::Precondition(format!(
            "{key}/cryptoKeyVersions/{version} is {}: only an ENABLED version can be primary",
            v.state
        )));
    }
    skeys::set_primary(ctx.tx, k.id, version)?;
    Ok(done(
        format!("the primary version of {key} is now {version}"),
        json!({"name": key.to_string(), "primaryVersion": version}),
    ))
}

pub fn public_key(ctx: &mut Ctx<'_>, name: &str, version: Option<u64>) -> Res<AdminResponse> {
    let (key, n) = match super::parse_resource(name)? {
        ResourceName::Version(k, n) => (k, Some(n)),
        ResourceName::CryptoKey(k) => (k, version),
        other => {
            return Err(Failure::Invalid(format!(
                "'{other}' is not a key or key version"
            )))
        }
    };
    ctx.require(P::ViewPublicKey, &ResourceName::CryptoKey(key.clone()))?;
    let k = key_row(ctx, &key)?;
    let n = n
        .or(k.primary_version)
        .ok_or_else(|| Failure::Precondition(format!("{key} has no primary version: name one")))?;
    let v = version_row(ctx, &k, &key, n)?;
    let Some(der) = v.public_key.as_deref() else {
        return Err(Failure::Precondition(format!(
            "{key} has purpose {}: only asymmetric keys (purpose ASYMMETRIC_SIGN or \
             ASYMMETRIC_DECRYPT) have a public key",
            k.purpose
        )));
    };
    if v.state != VersionState::Enabled {
        return Err(Failure::Precondition(format!(
            "{key}/cryptoKeyVersions/{n} is {}: public keys are served for ENABLED versions",
            v.state
        )));
    }
    let pem = keyward_token::public_key::spki_pem(der)?;
    let mut js = json!({"name": format!("{key}/cryptoKeyVersions/{n}"), "algorithm": k.algorithm,
                        "pem": pem});
    // A key made through the PKCS#11 module has no algorithm name: its kind, the private
    // object's CKA_ID and whether its flags allow signing (keywardctl key cert create).
    if let Some(g) = skeys::get_generic(ctx.tx, k.id)? {
        js["generic"] = json!({"kind": g.kind, "ckaId": crate::audit::hex(&g.cka_id),
                               "sign": g.usage[2]});
    }
    let mut resp = done(format!("{key}/cryptoKeyVersions/{n}"), js);
    // The PEM is the output humans want on stdout, with nothing around it.
    resp.message = Some(pem.trim_end().to_string());
    Ok(resp)
}

pub fn versions(ctx: &mut Ctx<'_>, name: &str) -> Res<AdminResponse> {
    let key = key_name(name)?;
    ctx.require(P::VersionsList, &ResourceName::CryptoKey(key.clone()))?;
    let k = key_row(ctx, &key)?;
    let vs = skeys::list_versions(ctx.tx, k.id)?;
    let rows = vs
        .iter()
        .map(|v| {
            vec![
                format!("{key}/cryptoKeyVersions/{}", v.version),
                v.state.as_str().to_string(),
                if k.primary_version == Some(v.version) {
                    "yes"
                } else {
                    ""
                }
                .to_string(),
                time(v.created_at),
                v.destroy_time.map(time).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let js: Vec<_> = vs.iter().map(|v| version_json(&key, v)).collect();
    Ok(table(
        &["VERSION", "STATE", "PRIMARY", "CREATED", "DESTROY TIME"],
        rows,
        json!(js),
    ))
}

pub fn version_get(ctx: &mut Ctx<'_>, name: &str) -> Res<AdminResponse> {
    let (key, n) = version_name(name)?;
    ctx.require(P::VersionsGet, &ResourceName::CryptoKey(key.clone()))?;
    let k = key_row(ctx, &key)?;
    let v = version_row(ctx, &k, &key, n)?;
    let mut js = version_json(&key, &v);
    js["primary"] = json!(k.primary_version == Some(n));
    let failure = if v.state == VersionState::ImportFailed {
        crate::store::import_jobs::import_failure(ctx.tx, k.id, n)?
    } else {
        None
    };
    js["importFailureReason"] = json!(failure);
    let rows = vec![
        vec!["name".into(), format!("{key}/cryptoKeyVersions/{n}")],
        vec!["state".into(), v.state.as_str().to_string()],
        vec![
            "primary".into(),
            super::render::yes(k.primary_version == Some(n)),
        ],
        vec!["created".into(), time(v.created_at)],
        vec![
            "destroy time".into(),
            v.destroy_time.map(time).unwrap_or_else(|| "-".into()),
        ],
    ];
    let mut rows = rows;
    rows.push(vec!["imported".into(), super::render::yes(v.imported)]);
    if let Some(why) = failure {
        rows.push(vec!["import failure".into(), why]);
    }
    Ok(table(&["FIELD", "VALUE"], rows, js))
}

pub fn version_change(
    ctx: &mut Ctx<'_>,
    name: &str,
    change: Change,
    grace_secs: Option<u64>,
) -> Res<AdminResponse> {
    let (key, n) = version_name(name)?;
    let (perm, action) = match change {
        Change::Enable => (P::VersionsUpdate, VersionAction::Enable),
        Change::Disable => (P::VersionsUpdate, VersionAction::Disable),
        Change::Destroy => (P::VersionsDestroy, VersionAction::ScheduleDestroy),
        Change::Restore => (P::VersionsRestore, VersionAction::Restore),
    };
    let grace = grace_secs.unwrap_or(DEFAULT_GRACE_SECS);
    if change == Change::Destroy && grace < MIN_GRACE_SECS {
        return Err(Failure::Invalid(format!(
            "a grace period of {grace} s is too short: at least 1 day (86400 s)"
        )));
    }
    ctx.require(perm, &ResourceName::CryptoKey(key.clone()))?;
    let k = key_row(ctx, &key)?;
    let v = version_row(ctx, &k, &key, n)?;
    if change == Change::Restore && v.state == VersionState::DestroyScheduled {
        // Squatting (design §9): the version's names were freed when its destruction was
        // scheduled; another key may hold them now.
        let vname = format!("{key}/cryptoKeyVersions/{n}");
        let (labels, ids) = match skeys::get_generic(ctx.tx, k.id)? {
            Some(g) => {
                let pub_id = g.pub_cka_id.unwrap_or_default();
                let pub_label = g.pub_cka_label.unwrap_or_default();
                (vec![g.cka_label, pub_label], vec![g.cka_id, pub_id])
            }
            None => (
                Vec::new(),
                vec![super::squat::keyward_cka_id(
                    &vname,
                    v.public_key.as_deref(),
                )],
            ),
        };
        let labels: Vec<&[u8]> = labels.iter().map(Vec::as_slice).collect();
        let ids: Vec<&[u8]> = ids.iter().map(Vec::as_slice).collect();
        super::squat::check(ctx, &key.ring, Some(k.id), &labels, &ids, None)?;
    }
    if change == Change::Destroy && k.primary_version == Some(n) {
        let asym = algorithm_of(&k)?.is_some_and(Algorithm::is_asymmetric);
        if !asym {
            return Err(Failure::Precondition(format!(
                "version {n} is the primary of {key}: rotate the key or set another primary first"
            )));
        }
    }
    let destroy_time = ctx
        .now
        .saturating_add(i64::try_from(grace).unwrap_or(i64::MAX));
    let to = skeys::change_version(ctx.tx, k.id, n, action, Some(destroy_time), ctx.now)?
        .map_err(|e| Failure::Precondition(format!("{key}/cryptoKeyVersions/{n}: {e}")))?;
    let extra = if to == VersionState::DestroyScheduled {
        format!(" (destroyed at {} unless restored)", time(destroy_time))
    } else {
        String::new()
    };
    Ok(done(
        format!("{key}/cryptoKeyVersions/{n} is now {to}{extra}"),
        json!({"name": format!("{key}/cryptoKeyVersions/{n}"), "state": to.as_str(),
               "destroyTime": (to == VersionState::DestroyScheduled).then(|| time(destroy_time))}),
    ))
}
