//! Certificate objects (design §4 "Objects", issue 7): X.509 certificates stored in a key
//! ring, made through the module (`C_CreateObject`, NSS `certutil -A`) or by keywardctl
//! (`key cert create --self-signed`, `key cert import`).
//!
//! A certificate belongs to the key whose public key it carries (matched by the public
//! values of the SPKI against the ring's versions), else to its ring (a CA of a chain). Who
//! sees the key sees its certificates; a ring's own certificates are seen by whoever sees
//! the ring's token. Gates:
//! - `C_CreateObject`: kms.cryptoKeys.create on the ring (else `CKR_TOKEN_WRITE_PROTECTED`);
//!   the client's `CKA_ID`/`CKA_LABEL`/`CKA_SUBJECT`/`CKA_ISSUER`/`CKA_SERIAL_NUMBER` are kept
//!   byte-exact, the missing ones derived (CKA_ID: the owning version's).
//! - `C_DestroyObject`, `C_SetAttributeValue` (`CKA_ID`, `CKA_LABEL`): kms.cryptoKeys.create on
//!   the ring or kms.cryptoKeys.update on the owning key, or its creator in the creating instance (else
//!   `CKR_ACTION_PROHIBITED`).
//! - `key cert import` (and the attach step of `key cert create --self-signed`):
//!   kms.cryptoKeys.update on the key; the first certificate must carry one of the key's
//!   public keys; the chain's certificates are linked issuer to subject.
//! - `key cert list`: kms.cryptoKeys.get on the key.

use super::render::{done, table};
use super::{AdminError, AdminService, Caller, Ctx, Failure, Res};
use crate::audit::hex;
use crate::catalog::CertEntry;
use crate::policy::{CryptoKeyName, KeyRingName, Permission as P, ResourceName};
use crate::store::certs::{self as scerts, CertRow, NewCert};
use crate::store::keys as skeys;
use crate::store::resources;
use crate::x509;
use keyward_token::public_key::PublicValues;
use keyward_wire::admin::AdminResponse;
use serde_json::json;

use keyward_wire::rv::{
    CKR_ATTRIBUTE_VALUE_INVALID, CKR_OBJECT_HANDLE_INVALID, CKR_TOKEN_WRITE_PROTECTED,
};

/// A certificate object to make through the module.
#[derive(Debug, Clone)]
pub struct NewCertObject {
    /// The session's ring.
    pub ring: KeyRingName,
    /// `CKA_VALUE` (DER).
    pub value: Vec<u8>,
    /// `CKA_ID`, if the template has it.
    pub cka_id: Option<Vec<u8>>,
    /// `CKA_LABEL`.
    pub cka_label: Vec<u8>,
    /// `CKA_SUBJECT`, if given.
    pub subject: Option<Vec<u8>>,
    /// `CKA_ISSUER`, if given.
    pub issuer: Option<Vec<u8>>,
    /// `CKA_SERIAL_NUMBER`, if given.
    pub serial: Option<Vec<u8>>,
    /// `CKA_CERTIFICATE_CATEGORY`.
    pub category: u64,
    /// `CKA_TRUSTED`.
    pub trusted: bool,
}

/// The version of the ring whose public key `spki` is (ENABLED first), with its `CKA_ID`.
struct Owner {
    key_id: i64,
    key: CryptoKeyName,
    version: u64,
    primary: bool,
    cka_id: Vec<u8>,
}

fn find_owner(ctx: &Ctx<'_>, ring_id: i64, spki: &[u8]) -> Res<Option<Owner>> {
    let Some(wanted) = PublicValues::from_spki(spki) else {
        return Ok(None);
    };
    let mut found = None;
    for v in scerts::public_versions(ctx.tx, ring_id)? {
        if PublicValues::from_spki(&v.public_key).as_ref() != Some(&wanted) {
            continue;
        }
        let better = match &found {
            None => true,
            Some((_, state)) => state != "ENABLED" && v.state == "ENABLED",
        };
        if better {
            let state = v.state.clone();
            found = Some((v, state));
        }
    }
    let Some((v, _)) = found else {
        return Ok(None);
    };
    let key = match super::parse_resource(&v.key)? {
        ResourceName::CryptoKey(k) => k,
        other => {
            return Err(Failure::Store(crate::store::corrupt(format!(
                "'{other}' is not a crypto key"
            ))))
        }
    };
    let row = skeys::get_key(ctx.tx, v.key_id)?;
    let primary = row.as_ref().and_then(|k| k.primary_version) == Some(v.version);
    // The version's CKA_ID as the dispatcher shows it: the client's for a key made through
    // the module, else SHA-1 of the public key value (design §4).
    let cka_id = match skeys::get_generic(ctx.tx, v.key_id)? {
        Some(g) => g.cka_id,
        None => wanted.nss_id(),
    };
    Ok(Some(Owner {
        key_id: v.key_id,
        key,
        version: v.version,
        primary,
        cka_id,
    }))
}

fn refuse(rv: u64, message: impl Into<String>) -> Failure {
    Failure::Token(rv, message.into())
}

impl AdminService {
    /// `C_CreateObject` of a certificate: kms.cryptoKeys.create on the ring (else
    /// `CKR_TOKEN_WRITE_PROTECTED`). Returns the certificate's id.
    pub fn pkcs11_create_cert(
        &mut self,
        caller: &Caller,
        req: NewCertObject,
    ) -> Result<i64, AdminError> {
        let ring_res = ResourceName::KeyRing(req.ring.clone());
        self.run_pkcs11(
            caller,
            "C_CreateObject",
            Some(ring_res.to_string()),
            CKR_TOKEN_WRITE_PROTECTED,
            |ctx| {
                ctx.require(P::CryptoKeysCreate, &ring_res)?;
                let ring = resources::get(ctx.tx, &ring_res)?.ok_or_else(|| {
                    refuse(
                        CKR_TOKEN_WRITE_PROTECTED,
                        format!("{ring_res} does not exist"),
                    )
                })?;
                let info = x509::parse_certificate(&req.value)
                    .map_err(|e| refuse(CKR_ATTRIBUTE_VALUE_INVALID, format!("CKA_VALUE: {e}")))?;
                let owner = find_owner(ctx, ring.id, &info.spki)?;
                let cka_id = match (&req.cka_id, &owner) {
                    (Some(id), _) => id.clone(),
                    (None, Some(o)) => o.cka_id.clone(),
                    (None, None) => PublicValues::from_spki(&info.spki)
                        .map(|p| p.nss_id())
                        .unwrap_or_default(),
                };
                let id = scerts::insert(
                    ctx.tx,
                    &NewCert {
                        ring_id: ring.id,
                        owner: owner.as_ref().map(|o| (o.key_id, o.version)),
                        cka_id: &cka_id,
                        cka_label: &req.cka_label,
                        subject: req.subject.as_deref().unwrap_or(&info.subject),
                        issuer: req.issuer.as_deref().unwrap_or(&info.issuer),
                        serial: req.serial.as_deref().unwrap_or(&info.serial),
                        value: &req.value,
                        category: req.category,
                        trusted: req.trusted,
                        created_by: &caller.principal.member.to_string(),
                        creator_instance: caller.instance.as_deref(),
                    },
                    ctx.now,
                )?;
                let (resource, whose) = match &owner {
                    Some(o) => (
                        ResourceName::Version(o.key.clone(), o.version).to_string(),
                        "of the key whose public key it carries".to_string(),
                    ),
                    None => (
                        ring_res.to_string(),
                        "of the ring (no key of the ring has its public key)".into(),
                    ),
                };
                Ok((
                    id,
                    Some(resource),
                    format!(
                        "certificate {id} ({}) stored, {whose}; CKA_ID {} ({} bytes)",
                        info.subject_text,
                        hex(&cka_id),
                        cka_id.len()
                    ),
                ))
            },
        )
    }

    /// Is the caller allowed to change or destroy this certificate?
    fn may_manage(ctx: &Ctx<'_>, caller: &Caller, c: &CertEntry) -> Res<String> {
        if caller.instance.is_some()
            && c.row.creator_instance == caller.instance
            && c.row.created_by == caller.principal.member.to_string()
        {
            return Ok("by the creating instance and principal".into());
        }
        if ctx.holds(P::CryptoKeysCreate, &ResourceName::KeyRing(c.ring.clone())) {
            return Ok("with kms.cryptoKeys.create on the ring".into());
        }
        if let Some((k, _)) = &c.owner {
            if ctx.holds(P::CryptoKeysUpdate, &ResourceName::CryptoKey(k.clone())) {
                return Ok("with kms.cryptoKeys.update on the key".into());
            }
        }
        Err(Failure::Denied(format!(
            "permission denied: {} lacks kms.cryptoKeys.create on {} and \
             kms.cryptoKeys.update on the certificate's key",
            caller.principal.member,
            ResourceName::KeyRing(c.ring.clone())
        )))
    }

    fn cert_entry(ctx: &Ctx<'_>, id: i64) -> Res<CertEntry> {
        let row = scerts::get(ctx.tx, id)?.ok_or_else(|| {
            refuse(
                CKR_OBJECT_HANDLE_INVALID,
                format!("certificate {id} is gone"),
            )
        })?;
        CertEntry::from_row(row).map_err(|e| Failure::Store(crate::store::corrupt(e)))
    }

    /// `C_DestroyObject` of a certificate (else `CKR_ACTION_PROHIBITED`).
    pub fn pkcs11_destroy_cert(&mut self, caller: &Caller, id: i64) -> Result<(), AdminError> {
        self.run_pkcs11(
            caller,
            "C_DestroyObject",
            None,
            super::CKR_ACTION_PROHIBITED,
            |ctx| {
                let c = Self::cert_entry(ctx, id)?;
                let how = Self::may_manage(ctx, caller, &c)?;
                scerts::delete(ctx.tx, id, ctx.now)?;
                Ok((
                    (),
                    Some(c.resource()),
                    format!("certificate {id} destroyed {how}"),
                ))
            },
        )
    }

    /// `C_SetAttributeValue` of a certificate's `CKA_ID`/`CKA_LABEL`.
    pub fn pkcs11_set_cert_names(
        &mut self,
        caller: &Caller,
        id: i64,
        cka_id: Option<Vec<u8>>,
        cka_label: Option<Vec<u8>>,
    ) -> Result<(), AdminError> {
        self.run_pkcs11(
            caller,
            "C_SetAttributeValue",
            None,
            super::CKR_ACTION_PROHIBITED,
            |ctx| {
                let c = Self::cert_entry(ctx, id)?;
                let how = Self::may_manage(ctx, caller, &c)?;
                scerts::set_names(ctx.tx, id, cka_id.as_deref(), cka_label.as_deref())?;
                let mut what = Vec::new();
                if let Some(i) = &cka_id {
                    what.push(format!("CKA_ID {}", hex(i)));
                }
                if let Some(l) = &cka_label {
                    what.push(format!("CKA_LABEL ({} bytes)", l.len()));
                }
                Ok((
                    (),
                    Some(c.resource()),
                    format!("certificate {id}: {} {how}", what.join(", ")),
                ))
            },
        )
    }
}

fn key_of(name: &str) -> Res<CryptoKeyName> {
    match super::parse_resource(name)? {
        ResourceName::CryptoKey(k) => Ok(k),
        other => Err(Failure::Invalid(format!(
            "'{other}' is a {}, not a crypto key (.../keyRings/R/cryptoKeys/K)",
            other.kind().noun()
        ))),
    }
}

/// `keywardctl key cert import --key K --cert FILE [--chain FILE]`: attaches a certificate of
/// one of K's public keys, and its chain, as certificate objects (kms.cryptoKeys.update on K).
pub(crate) fn import(
    ctx: &mut Ctx<'_>,
    key: &str,
    certs: &[Vec<u8>],
    label: Option<&str>,
) -> Res<AdminResponse> {
    let key = key_of(key)?;
    let key_res = ResourceName::CryptoKey(key.clone());
    ctx.require(P::CryptoKeysUpdate, &key_res)?;
    let ring_res = ResourceName::KeyRing(key.ring.clone());
    let ring = resources::get(ctx.tx, &ring_res)?
        .ok_or_else(|| Failure::Precondition(format!("key ring {ring_res} does not exist")))?;
    let Some((leaf, chain)) = certs.split_first() else {
        return Err(Failure::Invalid("no certificate given".into()));
    };
    let infos = certs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            x509::parse_certificate(c).map_err(|e| {
                Failure::Invalid(if i == 0 {
                    format!("the certificate: {e}")
                } else {
                    format!("certificate {} of the chain: {e}", i)
                })
            })
        })
        .collect::<Res<Vec<_>>>()?;
    let owner = find_owner(ctx, ring.id, &infos[0].spki)?
        .filter(|o| o.key == key)
        .ok_or_else(|| {
            Failure::Invalid(format!(
                "the certificate ({}) does not carry a public key of {key}: refused",
                infos[0].subject_text
            ))
        })?;
    for (i, pair) in infos.windows(2).enumerate() {
        if pair[0].issuer != pair[1].subject {
            return Err(Failure::Invalid(format!(
                "the chain is out of order: certificate {} ({}) was not issued by certificate \
                 {} ({})",
                i,
                pair[0].subject_text,
                i + 1,
                pair[1].subject_text
            )));
        }
    }
    let who = ctx.caller.principal.member.to_string();
    let live = scerts::list(ctx.tx)?;
    let ring_name = ring_res.to_string();
    let exists = |value: &[u8]| {
        live.iter()
            .any(|c| c.ring == ring_name && c.value.as_slice() == value)
    };
    // The default label is the key's: the client's CKA_LABEL of a key made through the
    // module (byte-exact), else the key id (keyid@vN for a version that is not the primary).
    let leaf_label: Vec<u8> = match (label, skeys::get_generic(ctx.tx, owner.key_id)?) {
        (Some(l), _) => l.as_bytes().to_vec(),
        (None, Some(g)) => g.cka_label,
        (None, None) if owner.primary => key.id.clone().into_bytes(),
        (None, None) => format!("{}@v{}", key.id, owner.version).into_bytes(),
    };
    let mut stored = Vec::new();
    let mut ids = Vec::new();
    let (tx, now) = (ctx.tx, ctx.now);
    // Stores one certificate of the chain: the leaf (category 1, token user) or a CA's (2).
    let mut add = |owner: Option<(i64, u64)>,
                   cka_id: &[u8],
                   cka_label: &[u8],
                   (value, info): (&[u8], &x509::CertInfo),
                   category: u64|
     -> Res<()> {
        let id = scerts::insert(
            tx,
            &NewCert {
                ring_id: ring.id,
                owner,
                cka_id,
                cka_label,
                subject: &info.subject,
                issuer: &info.issuer,
                serial: &info.serial,
                value,
                category,
                trusted: false,
                created_by: &who,
                creator_instance: None,
            },
            now,
        )?;
        ids.push(id);
        let what = if category == 1 {
            "certificate"
        } else {
            "CA certificate"
        };
        stored.push(format!("{what} {id} ({})", info.subject_text));
        Ok(())
    };
    if !exists(leaf) {
        add(
            Some((owner.key_id, owner.version)),
            &owner.cka_id,
            &leaf_label,
            (leaf, &infos[0]),
            1,
        )?;
    }
    for (c, info) in chain.iter().zip(&infos[1..]) {
        if exists(c) {
            continue;
        }
        let chain_owner = find_owner(ctx, ring.id, &info.spki)?;
        let cka_id = match &chain_owner {
            Some(o) => o.cka_id.clone(),
            None => PublicValues::from_spki(&info.spki)
                .map(|p| p.nss_id())
                .unwrap_or_default(),
        };
        add(
            chain_owner.as_ref().map(|o| (o.key_id, o.version)),
            &cka_id,
            info.subject_text.as_bytes(),
            (c, info),
            2,
        )?;
    }
    let version = ResourceName::Version(key.clone(), owner.version);
    let message = if stored.is_empty() {
        format!("{version}: these certificates are already attached")
    } else {
        format!("{version}: attached {}", stored.join(", "))
    };
    Ok(done(
        message,
        json!({"version": version.to_string(), "certificates": ids,
               "ckaId": hex(&owner.cka_id), "label": String::from_utf8_lossy(&leaf_label)}),
    ))
}

/// `keywardctl key cert list --key K`: the certificates of K (kms.cryptoKeys.get on K). A
/// certificate's value carries the public key: it is given (as `pem`) only to callers who may
/// read public values (viewPublicKey or a use permission on K), as through the module.
pub(crate) fn list(ctx: &mut Ctx<'_>, key: &str) -> Res<AdminResponse> {
    let key = key_of(key)?;
    let key_res = ResourceName::CryptoKey(key.clone());
    ctx.require(P::CryptoKeysGet, &key_res)?;
    let reads_values = ctx
        .snap
        .effective_permissions(&ctx.caller.principal, &key_res)
        .reads_public_values();
    let key_name = key_res.to_string();
    let certs: Vec<CertRow> = scerts::list(ctx.tx)?
        .into_iter()
        .filter(|c| c.owner.as_ref().is_some_and(|(k, _)| *k == key_name))
        .collect();
    let mut rows = Vec::new();
    let mut js = Vec::new();
    for c in &certs {
        let info = x509::parse_certificate(&c.value).ok();
        let subject = info
            .as_ref()
            .map(|i| i.subject_text.clone())
            .unwrap_or_default();
        let version = c.owner.as_ref().map(|(_, v)| *v).unwrap_or(0);
        let not_after = info
            .as_ref()
            .map(|i| super::render::time(i64::try_from(i.not_after).unwrap_or(i64::MAX)))
            .unwrap_or_default();
        rows.push(vec![
            c.id.to_string(),
            version.to_string(),
            String::from_utf8_lossy(&c.cka_label).into_owned(),
            subject.clone(),
            not_after.clone(),
        ]);
        let mut entry = json!({"id": c.id, "version": version,
                       "label": String::from_utf8_lossy(&c.cka_label),
                       "ckaId": hex(&c.cka_id), "subject": subject, "notAfter": not_after});
        if reads_values {
            entry["pem"] = json!(x509::pem("CERTIFICATE", &c.value).unwrap_or_default());
        }
        js.push(entry);
    }
    Ok(table(
        &["ID", "VERSION", "LABEL", "SUBJECT", "NOT AFTER"],
        rows,
        json!(js),
    ))
}
