//! BYOK (design §5): import jobs and imports of wrapped key material, for keywardctl
//! (`import-job create|get|list|get-public-key`, `key import`) and for the PKCS#11 module's
//! `C_UnwrapKey` ([`AdminService::pkcs11_import`]).
//!
//! - An import job lives in a key ring as `<ring>/importJobs/<id>`; its permissions
//!   (`kms.importJobs.*`) are checked on the ring (bindings on a job itself are not offered).
//!   Creating one makes an RSA wrapping pair in the token (method checked against the token
//!   first: SoftHSM2 2.6 refuses the SHA-256 methods, naming the missing mechanism); the job
//!   is ACTIVE until it expires (3 days), then EXPIRED, and keywardd destroys its pair.
//! - An import needs `kms.importJobs.useToImport`; into a key that does not exist yet also
//!   `kms.cryptoKeys.create` (the key is made with the given algorithm). The material becomes
//!   a new version: PENDING_IMPORT while the token unwraps it, then ENABLED, or
//!   IMPORT_FAILED with the reason (that row and its audit record are committed; the token
//!   objects are gone). An import never changes an existing primary; a new key's first
//!   version becomes its primary.

use super::render::{done, table, time};
use super::{AdminService, Caller, Ctx, Failure, Res};
use crate::audit::hex;
use crate::policy::names::check_id;
use crate::policy::{CryptoKeyName, KeyRingName, Permission as P, ResourceName};
use crate::store::import_jobs::{self as sjobs, JobRow, JobState, NewJob};
use crate::store::keys::{self as skeys, VersionAction, VersionState};
use crate::store::resources;
use keyward_token::{ImportTarget, TokenError};
use keyward_wire::admin::AdminResponse;
use keyward_wire::import::ImportMethod;
use keyward_wire::keys::{Algorithm, KeyKind, Purpose};
use serde_json::json;

/// How long an import job stays ACTIVE: 3 days.
pub const JOB_LIFETIME_SECS: i64 = 3 * 86_400;

/// Token labels of import job pairs start with this (Keyward's own objects: reconciliation
/// leaves them alone).
pub const JOB_LABEL_PREFIX: &str = "keyward-import-job:";

use keyward_wire::rv::{
    CKR_TEMPLATE_INCONSISTENT, CKR_TOKEN_WRITE_PROTECTED, CKR_UNWRAPPING_KEY_HANDLE_INVALID,
    CKR_WRAPPED_KEY_INVALID,
};

/// A job's name: its ring and id.
fn job_name(ring: &KeyRingName, id: &str) -> String {
    format!("{}/importJobs/{id}", ResourceName::KeyRing(ring.clone()))
}

/// Parses `<ring>/importJobs/<id>`.
fn parse_job(s: &str) -> Res<(KeyRingName, String)> {
    let Some((ring, id)) = s.rsplit_once("/importJobs/") else {
        return Err(Failure::Invalid(format!(
            "'{s}' is not an import job name (.../keyRings/R/importJobs/J)"
        )));
    };
    check_id("import job", id).map_err(Failure::Invalid)?;
    match super::parse_resource(ring)? {
        ResourceName::KeyRing(r) => Ok((r, id.to_string())),
        other => Err(Failure::Invalid(format!("'{other}' is not a key ring"))),
    }
}

fn ring_of(s: &str) -> Res<KeyRingName> {
    match super::parse_resource(s)? {
        ResourceName::KeyRing(r) => Ok(r),
        other => Err(Failure::Invalid(format!("'{other}' is not a key ring"))),
    }
}

fn token<'a>(ctx: &Ctx<'a>) -> Res<&'a keyward_token::Token> {
    ctx.token.ok_or_else(|| {
        Failure::Precondition(
            "import jobs need the backing token, which only keywardd holds: run this through \
             keywardd (drop --db)"
                .into(),
        )
    })
}

fn method_of(row: &JobRow) -> Res<ImportMethod> {
    row.method
        .parse()
        .map_err(|e: String| Failure::Store(crate::store::corrupt(e)))
}

fn job_json(row: &JobRow, now: i64) -> Res<serde_json::Value> {
    let pem = keyward_token::public_key::spki_pem(&row.public_key)?;
    Ok(json!({
        "name": row.name,
        "importMethod": row.method,
        "state": row.state_at(now).as_str(),
        "createTime": time(row.created_at),
        "expireTime": time(row.expire_at),
        "createdBy": row.created_by,
        "publicKey": {"pem": pem},
    }))
}

pub(crate) fn job_create(
    ctx: &mut Ctx<'_>,
    keyring: &str,
    id: Option<&str>,
    method: &str,
) -> Res<AdminResponse> {
    let ring = ring_of(keyring)?;
    let method: ImportMethod = method.parse().map_err(Failure::Invalid)?;
    if let Some(id) = id {
        check_id("import job", id).map_err(Failure::Invalid)?;
    }
    let ring_res = ResourceName::KeyRing(ring.clone());
    ctx.require(P::ImportJobsCreate, &ring_res)?;
    let ring_row = resources::get_key_ring(ctx.tx, &ring_res)?
        .ok_or_else(|| Failure::Precondition(format!("key ring {ring_res} does not exist")))?;
    let token = token(ctx)?;
    token.check_import_method(method).map_err(|e| {
        Failure::Invalid(format!(
            "import method {method} cannot be used with this backing token: {e}"
        ))
    })?;
    let id = match id {
        Some(id) => id.to_string(),
        None => {
            let r = token.generate_random(6)?;
            format!("job-{}", hex(&r))
        }
    };
    let name = job_name(&ring, &id);
    if sjobs::name_taken(ctx.tx, &name)? {
        return Err(Failure::Precondition(format!(
            "import job {name} already exists (job names are never reused)"
        )));
    }
    let token_id = token.new_object_id()?;
    let public =
        token.generate_import_pair(method, &token_id, &format!("{JOB_LABEL_PREFIX}{name}"))?;
    let expire_at = ctx.now.saturating_add(JOB_LIFETIME_SECS);
    let who = ctx.caller.principal.member.to_string();
    let written = sjobs::insert(
        ctx.tx,
        &NewJob {
            ring_id: ring_row.resource.id,
            name: &name,
            method: method.as_str(),
            state: JobState::Active,
            token_id: &token_id,
            public_key: &public.der,
            created_at: ctx.now,
            expire_at,
            created_by: &who,
        },
    );
    if let Err(e) = written {
        let _ = token.destroy_by_id(&token_id);
        return Err(e.into());
    }
    let pem = public.pem()?;
    let mut resp = done(
        format!(
            "created import job {name} ({method}), ACTIVE until {}",
            time(expire_at)
        ),
        json!({"name": name, "importMethod": method.as_str(), "state": "ACTIVE",
               "createTime": time(ctx.now), "expireTime": time(expire_at),
               "publicKey": {"pem": pem}}),
    );
    resp.message = Some(format!(
        "created import job {name} ({method}), ACTIVE until {}\n{}",
        time(expire_at),
        pem.trim_end()
    ));
    Ok(resp)
}

/// The job row of a live job the caller may `perm`.
fn job_row(ctx: &Ctx<'_>, name: &str, perm: P) -> Res<(KeyRingName, JobRow)> {
    let (ring, id) = parse_job(name)?;
    ctx.require(perm, &ResourceName::KeyRing(ring.clone()))?;
    let full = job_name(&ring, &id);
    let row = sjobs::get(ctx.tx, &full)?
        .ok_or_else(|| Failure::Precondition(format!("import job {full} does not exist")))?;
    Ok((ring, row))
}

pub(crate) fn job_get(ctx: &mut Ctx<'_>, name: &str, pem_only: bool) -> Res<AdminResponse> {
    let (_, row) = job_row(ctx, name, P::ImportJobsGet)?;
    let js = job_json(&row, ctx.now)?;
    if pem_only {
        let mut resp = done(row.name.clone(), js);
        resp.message = Some(
            keyward_token::public_key::spki_pem(&row.public_key)?
                .trim_end()
                .to_string(),
        );
        return Ok(resp);
    }
    let rows = vec![
        vec!["name".into(), row.name.clone()],
        vec!["import method".into(), row.method.clone()],
        vec!["state".into(), row.state_at(ctx.now).as_str().into()],
        vec!["created".into(), time(row.created_at)],
        vec!["expires".into(), time(row.expire_at)],
        vec!["created by".into(), row.created_by.clone()],
    ];
    Ok(table(&["FIELD", "VALUE"], rows, js))
}

pub(crate) fn job_list(ctx: &mut Ctx<'_>, keyring: &str) -> Res<AdminResponse> {
    let ring = ring_of(keyring)?;
    let ring_res = ResourceName::KeyRing(ring);
    ctx.require(P::ImportJobsList, &ring_res)?;
    let ring_row = resources::get_key_ring(ctx.tx, &ring_res)?
        .ok_or_else(|| Failure::Precondition(format!("key ring {ring_res} does not exist")))?;
    let jobs = sjobs::list(ctx.tx, Some(ring_row.resource.id))?;
    let mut rows = Vec::new();
    let mut js = Vec::new();
    for j in &jobs {
        rows.push(vec![
            j.name.clone(),
            j.method.clone(),
            j.state_at(ctx.now).as_str().into(),
            time(j.expire_at),
        ]);
        js.push(job_json(j, ctx.now)?);
    }
    Ok(table(
        &["IMPORT JOB", "METHOD", "STATE", "EXPIRES"],
        rows,
        json!(js),
    ))
}

/// What to import and where.
pub(crate) struct ImportRequest<'a> {
    /// The job's full name.
    pub job: &'a str,
    /// The key (created if missing).
    pub key: CryptoKeyName,
    /// The algorithm: for an existing key it must be the key's; `None` (module) takes it.
    pub algorithm: Option<Algorithm>,
    /// The blob.
    pub wrapped: &'a [u8],
    /// The public key (DER SPKI) of an asymmetric import.
    pub public_key: Option<&'a [u8]>,
    /// What a missing use permission returns (module: `CKR_UNWRAPPING_KEY_HANDLE_INVALID`).
    pub denied_use: Option<u64>,
    /// What a missing create permission returns (module: `CKR_TOKEN_WRITE_PROTECTED`).
    pub denied_create: Option<u64>,
}

fn deny(rv: Option<u64>, f: Failure) -> Failure {
    match (rv, f) {
        (Some(rv), Failure::Denied(m)) => Failure::DeniedWith(rv, m),
        (_, f) => f,
    }
}

/// The import itself (both paths): the version made and whether the key was new.
/// An unwrap that fails in the token leaves an IMPORT_FAILED version: the error is
/// [`Failure::Recorded`] so the caller commits that row with the audit record.
pub(crate) fn import(ctx: &mut Ctx<'_>, req: &ImportRequest<'_>) -> Res<(u64, bool)> {
    let (job_ring, job_id) = parse_job(req.job)?;
    if job_ring != req.key.ring {
        return Err(Failure::Invalid(format!(
            "import job {} is in another key ring than {}: a job imports into its own ring",
            req.job,
            ResourceName::CryptoKey(req.key.clone())
        )));
    }
    let ring_res = ResourceName::KeyRing(job_ring.clone());
    ctx.require(P::ImportJobsUseToImport, &ring_res)
        .map_err(|f| deny(req.denied_use, f))?;
    let full = job_name(&job_ring, &job_id);
    let job = sjobs::get(ctx.tx, &full)?
        .ok_or_else(|| Failure::Precondition(format!("import job {full} does not exist")))?;
    let state = job.state_at(ctx.now);
    if state != JobState::Active {
        return Err(Failure::Precondition(format!(
            "import job {full} is {state} (it expired at {}): create a new import job",
            time(job.expire_at)
        )));
    }
    let method = method_of(&job)?;
    let key_res = ResourceName::CryptoKey(req.key.clone());
    let existing = match resources::get(ctx.tx, &key_res)? {
        Some(r) => Some((
            r.id,
            skeys::get_key(ctx.tx, r.id)?.ok_or_else(|| {
                Failure::Store(crate::store::corrupt(format!(
                    "key {key_res} has no key row"
                )))
            })?,
        )),
        None => None,
    };
    let algorithm = match (&existing, req.algorithm) {
        (Some((_, k)), asked) => {
            let Some(have) = k.algorithm.as_deref() else {
                return Err(Failure::Invalid(format!(
                    "{key_res} is a PKCS11_GENERIC key made through the module: import into a \
                     key with an algorithm"
                )));
            };
            let have: Algorithm = have
                .parse()
                .map_err(|e: String| Failure::Store(crate::store::corrupt(e)))?;
            if let Some(asked) = asked {
                if asked != have {
                    return Err(Failure::Invalid(format!(
                        "wrong algorithm: {key_res} is {have}, not {asked}"
                    )));
                }
            }
            have
        }
        (None, Some(a)) => a,
        (None, None) => {
            return Err(Failure::Invalid(format!(
                "{key_res} does not exist: name the algorithm of the new key"
            )))
        }
    };
    let token = token(ctx)?;
    token
        .check_algorithm(algorithm)
        .map_err(|e| Failure::Invalid(e.to_string()))?;
    if algorithm.is_asymmetric() != req.public_key.is_some() {
        return Err(Failure::Invalid(if algorithm.is_asymmetric() {
            format!("{algorithm} is asymmetric: the import needs its public key (SPKI)")
        } else {
            format!("{algorithm} is symmetric: it takes no public key")
        }));
    }
    if let Some(der) = req.public_key {
        let kind = keyward_token::spki_kind(der).map_err(|e| Failure::Invalid(e.to_string()))?;
        if kind != algorithm.kind() {
            let show = |k: KeyKind| match k {
                KeyKind::Ec(bits) => format!("EC P-{bits}"),
                KeyKind::Rsa(bits) => format!("RSA-{bits}"),
                KeyKind::Aes(n) => format!("AES-{}", n * 8),
                KeyKind::Hmac(n) => format!("a {n}-byte HMAC key"),
            };
            return Err(Failure::Invalid(format!(
                "wrong algorithm: the public key is {}, but {algorithm} needs {}",
                show(kind),
                show(algorithm.kind())
            )));
        }
    }
    let (key_id, new_key, exportable) = match existing {
        Some((id, k)) => (id, false, k.exportable),
        None => {
            ctx.require(P::CryptoKeysCreate, &ring_res)
                .map_err(|f| deny(req.denied_create, f))?;
            if resources::name_taken(ctx.tx, &key_res)? {
                return Err(Failure::Precondition(format!(
                    "crypto key {key_res} existed once (key names are never reused)"
                )));
            }
            let ring_row = resources::get_key_ring(ctx.tx, &ring_res)?.ok_or_else(|| {
                Failure::Precondition(format!("key ring {ring_res} does not exist"))
            })?;
            let rid = resources::insert(ctx.tx, &key_res, Some(ring_row.resource.id), ctx.now)?;
            skeys::insert_key(
                ctx.tx,
                rid,
                algorithm.purpose().as_str(),
                Some(algorithm.as_str()),
                false,
                &ctx.caller.principal.member.to_string(),
            )?;
            (rid, true, false)
        }
    };
    let token_id = token.new_object_id()?;
    let n = skeys::add_version(
        ctx.tx,
        key_id,
        VersionState::PendingImport,
        Some(&token_id),
        None,
        ctx.now,
    )?;
    sjobs::set_version_imported(ctx.tx, key_id, n)?;
    let vname = format!("{key_res}/cryptoKeyVersions/{n}");
    // Squatting (design §9): a new key's id becomes its CKA_LABEL, and the version's
    // CKA_ID is known from its name or public key: both must be free in the ring. The
    // PKCS#11 path (C_UnwrapKey, which sets `denied_use`) answers CKR_ATTRIBUTE_VALUE_INVALID.
    let cka_id = super::squat::keyward_cka_id(&vname, req.public_key);
    let label = if new_key { req.key.id.as_bytes() } else { &[] };
    super::squat::check(
        ctx,
        &req.key.ring,
        Some(key_id),
        &[label],
        &[&cka_id],
        req.denied_use
            .map(|_| super::squat::CKR_ATTRIBUTE_VALUE_INVALID),
    )?;
    let made = token.import_wrapped(
        &job.token_id,
        method,
        req.wrapped,
        &ImportTarget {
            algorithm,
            id: &token_id,
            label: &vname,
            exportable,
            public_key: req.public_key,
        },
    );
    let public = match made {
        Ok(p) => p,
        Err(e) => {
            let (rv, why) = import_error(&e);
            skeys::change_version(
                ctx.tx,
                key_id,
                n,
                VersionAction::ImportFailed,
                None,
                ctx.now,
            )?
            .map_err(|e| Failure::Precondition(format!("{vname}: {e}")))?;
            sjobs::set_import_failure(ctx.tx, key_id, n, &why)?;
            return Err(Failure::Recorded(Box::new(Failure::Token(
                rv,
                format!("import into {vname} failed, the version is IMPORT_FAILED: {why}"),
            ))));
        }
    };
    let written = (|| -> Res<()> {
        if let Some(p) = &public {
            sjobs::set_version_public_key(ctx.tx, key_id, n, &p.der)?;
        }
        skeys::change_version(
            ctx.tx,
            key_id,
            n,
            VersionAction::ImportSucceeded,
            None,
            ctx.now,
        )?
        .map_err(|e| Failure::Precondition(format!("{vname}: {e}")))?;
        if new_key {
            skeys::set_primary(ctx.tx, key_id, n)?;
        }
        Ok(())
    })();
    if let Err(e) = written {
        if let Err(d) = token.destroy_by_id(&token_id) {
            tracing::error!(error = %d, "cannot destroy the token objects of a failed import write; reconciliation will report them");
        }
        return Err(e);
    }
    Ok((n, new_key))
}

/// The CK_RV and reason of a failed unwrap. Token failures of the unwrap itself (a tampered
/// or truncated blob, the wrong job) are `CKR_WRAPPED_KEY_INVALID`; a key that does not fit
/// the algorithm or its public key is `CKR_TEMPLATE_INCONSISTENT`.
fn import_error(e: &TokenError) -> (u64, String) {
    let rv = match e {
        TokenError::InvalidArgument(_) => CKR_TEMPLATE_INCONSISTENT,
        TokenError::Pkcs11 { .. } => {
            let rv = e.ck_rv();
            // Device trouble stays what it is; anything else is the blob's fault (SoftHSM2 2.6
            // answers a failed AES-KWP integrity check with CKR_GENERAL_ERROR).
            if matches!(rv, 0x02 | 0x30 | 0x31 | 0x32) {
                rv
            } else {
                CKR_WRAPPED_KEY_INVALID
            }
        }
        other => other.ck_rv(),
    };
    let why = match e {
        TokenError::Pkcs11 { rv: token_rv, .. } if rv == CKR_WRAPPED_KEY_INVALID => format!(
            "the token could not unwrap the blob (C_UnwrapKey: {token_rv:?}): it is damaged, \
             or was not wrapped with this import job's public key and method"
        ),
        _ => e.to_string(),
    };
    (rv, why)
}

pub(crate) fn key_import(
    ctx: &mut Ctx<'_>,
    job: &str,
    key: &str,
    algorithm: &str,
    wrapped: &[u8],
    public_key: Option<&[u8]>,
) -> Res<AdminResponse> {
    let key = match super::parse_resource(key)? {
        ResourceName::CryptoKey(k) => k,
        other => {
            return Err(Failure::Invalid(format!(
                "'{other}' is not a crypto key (.../keyRings/R/cryptoKeys/K)"
            )))
        }
    };
    // A bare job id names a job in the key's ring.
    let job = if job.contains('/') {
        job.to_string()
    } else {
        job_name(&key.ring, job)
    };
    let algorithm: Algorithm = algorithm.parse().map_err(Failure::Invalid)?;
    if algorithm.purpose() == Purpose::Pkcs11Generic {
        return Err(Failure::Invalid(
            "PKCS11_GENERIC is not an algorithm".into(),
        ));
    }
    let spki = public_key.map(spki_der).transpose()?;
    let (n, new_key) = import(
        ctx,
        &ImportRequest {
            job: &job,
            key: key.clone(),
            algorithm: Some(algorithm),
            wrapped,
            public_key: spki.as_deref(),
            denied_use: None,
            denied_create: None,
        },
    )?;
    let vname = format!("{}/cryptoKeyVersions/{n}", ResourceName::CryptoKey(key));
    Ok(done(
        format!(
            "imported {vname} ({algorithm}) with {job}: ENABLED{}",
            if new_key {
                "; a new key, whose primary it is"
            } else {
                "; the primary version is unchanged"
            }
        ),
        json!({"name": vname, "algorithm": algorithm.as_str(), "state": "ENABLED",
               "importJob": job, "primary": new_key}),
    ))
}

/// DER SPKI from DER or PEM (`-----BEGIN PUBLIC KEY-----`).
fn spki_der(bytes: &[u8]) -> Res<Vec<u8>> {
    let text = std::str::from_utf8(bytes).ok().map(str::trim_start);
    if let Some(pem) = text.filter(|t| t.starts_with("-----BEGIN")) {
        let (label, der) = der::pem::decode_vec(pem.as_bytes())
            .map_err(|e| Failure::Invalid(format!("the public key file is not valid PEM: {e}")))?;
        if label != "PUBLIC KEY" {
            return Err(Failure::Invalid(format!(
                "the public key file holds a {label}, not a PUBLIC KEY (SPKI)"
            )));
        }
        return Ok(der);
    }
    Ok(bytes.to_vec())
}

/// A `C_UnwrapKey` of wrapped material with an import job (design §5), as the dispatcher
/// checked it.
pub struct Pkcs11Import {
    /// The session's ring.
    pub ring: KeyRingName,
    /// The job's id (in `ring`).
    pub job_id: String,
    /// The method the mechanism and its parameters name (must be the job's).
    pub method: ImportMethod,
    /// The template's `CKA_LABEL`: the target key's id.
    pub key_id: String,
    /// The algorithm a new key gets, or the template's error for a new key.
    pub new_key_algorithm: Result<Algorithm, u64>,
    /// Checks the template against an existing key's algorithm (a CK_RV if it does not fit).
    pub fits: fn(Algorithm, u64, u64) -> Result<(), u64>,
    /// The template's `CKA_CLASS` and `CKA_KEY_TYPE`.
    pub class_and_type: (u64, u64),
    /// The public key (`CKA_PUBLIC_KEY_INFO`) of an asymmetric import.
    pub public_key: Option<Vec<u8>>,
    /// The blob.
    pub wrapped: Vec<u8>,
}

impl std::fmt::Debug for Pkcs11Import {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Import")
            .field("ring", &self.ring)
            .field("job_id", &self.job_id)
            .field("method", &self.method)
            .field("key_id", &self.key_id)
            .field("wrapped_len", &self.wrapped.len())
            .finish_non_exhaustive()
    }
}

impl AdminService {
    /// `C_UnwrapKey` with an import job's key (design §4's table, §5): useToImport on the job
    /// (else `CKR_UNWRAPPING_KEY_HANDLE_INVALID`), plus kms.cryptoKeys.create when the label
    /// names no existing key (else `CKR_TOKEN_WRITE_PROTECTED`). Returns the new version.
    pub fn pkcs11_import(
        &mut self,
        caller: &Caller,
        req: Pkcs11Import,
    ) -> Result<(CryptoKeyName, u64), super::AdminError> {
        let job = job_name(&req.ring, &req.job_id);
        self.run_pkcs11(
            caller,
            "C_UnwrapKey",
            Some(job.clone()),
            CKR_UNWRAPPING_KEY_HANDLE_INVALID,
            |ctx| {
                check_id("crypto key", &req.key_id).map_err(|e| {
                    Failure::Token(
                        0x13,
                        format!("CKA_LABEL must be a key id to import into: {e}"),
                    )
                })?;
                let key = CryptoKeyName {
                    ring: req.ring.clone(),
                    id: req.key_id.clone(),
                };
                let key_res = ResourceName::CryptoKey(key.clone());
                let row = sjobs::get(ctx.tx, &job)?;
                if let Some(row) = &row {
                    if method_of(row)? != req.method {
                        return Err(Failure::Token(
                            0x71, // CKR_MECHANISM_PARAM_INVALID
                            format!(
                                "the mechanism's parameters name {}, but {job} is {}",
                                req.method, row.method
                            ),
                        ));
                    }
                }
                let algorithm = match resources::get(ctx.tx, &key_res)? {
                    Some(r) => {
                        let k = skeys::get_key(ctx.tx, r.id)?;
                        match k.and_then(|k| k.algorithm).and_then(|a| a.parse().ok()) {
                            Some(a) => {
                                let (class, ty) = req.class_and_type;
                                (req.fits)(a, class, ty).map_err(|rv| {
                                    Failure::Token(
                                        rv,
                                        format!("the template does not fit {key_res} ({a})"),
                                    )
                                })?;
                                None
                            }
                            None => {
                                return Err(Failure::Token(
                                    CKR_TEMPLATE_INCONSISTENT,
                                    format!("{key_res} has no algorithm to import into"),
                                ))
                            }
                        }
                    }
                    None => Some(req.new_key_algorithm.map_err(|rv| {
                        Failure::Token(rv, "the template does not describe a key to make".into())
                    })?),
                };
                let (n, new_key) = import(
                    ctx,
                    &ImportRequest {
                        job: &job,
                        key: key.clone(),
                        algorithm,
                        wrapped: &req.wrapped,
                        public_key: req.public_key.as_deref(),
                        denied_use: Some(CKR_UNWRAPPING_KEY_HANDLE_INVALID),
                        denied_create: Some(CKR_TOKEN_WRITE_PROTECTED),
                    },
                )?;
                let vname = format!("{key_res}/cryptoKeyVersions/{n}");
                let detail = format!(
                    "imported {vname} with {job} ({}){}",
                    req.method,
                    if new_key { "; new key" } else { "" }
                );
                Ok(((key, n), Some(vname), detail))
            },
        )
    }

    /// Destroys the wrapping pairs of import jobs past their expiry and marks them EXPIRED
    /// (audited as keywardd); returns their names.
    pub fn expire_import_jobs(&mut self) -> Result<Vec<String>, super::AdminError> {
        let Some(token) = self.token.clone() else {
            return Ok(Vec::new());
        };
        let now = self.clock.now_ms() / 1000;
        let due: Vec<JobRow> = {
            let tx = self
                .store
                .read()
                .map_err(|e| Failure::from(e).into_error())?;
            sjobs::list(&tx, None)
                .map_err(|e| Failure::from(e).into_error())?
                .into_iter()
                .filter(|j| j.state == JobState::Active && j.state_at(now) == JobState::Expired)
                .collect()
        };
        let mut done = Vec::new();
        for j in due {
            if let Err(e) = token.destroy_by_id(&j.token_id) {
                tracing::error!(job = %j.name, error = %e, "cannot destroy an expired import job's wrapping pair");
                continue;
            }
            let rec = super::maintenance::daemon_record(
                &*self.clock,
                "importJob.expired",
                Some(j.name.clone()),
                crate::audit::Outcome::Allowed,
                "the job expired: its wrapping pair was destroyed".into(),
            );
            let r = (|| -> Res<()> {
                let tx = self.store.write()?;
                sjobs::set_expired(&tx, j.id)?;
                crate::audit::append(&tx, &rec)?;
                tx.commit()?;
                Ok(())
            })();
            r.map_err(Failure::into_error)?;
            done.push(j.name);
        }
        if !done.is_empty() {
            self.refresh()?;
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_parse() {
        let (ring, id) = parse_job("projects/p/keyRings/r/importJobs/j1").unwrap();
        assert_eq!(id, "j1");
        assert_eq!(job_name(&ring, &id), "projects/p/keyRings/r/importJobs/j1");
        assert!(parse_job("projects/p/keyRings/r/cryptoKeys/k").is_err());
        assert!(parse_job("projects/p/importJobs/j").is_err());
        assert!(parse_job("projects/p/keyRings/r/importJobs/a b").is_err());
    }
}
