//! Keys made, destroyed and renamed through the PKCS#11 module (design §4 "Objects",
//! "Custody", "Destroying a pair"): the entry points keywardd's PKCS#11 dispatcher calls.
//!
//! Each runs like an admin request: one write transaction in which the caller is authorised
//! again on a fresh snapshot, the token object is made (generation or a plaintext import),
//! the rows are written and the audit record appended; then the published state is rebuilt
//! so the next call of any session sees the change. A refused or failed call changes nothing
//! and leaves its own `denied`/`error` record. Errors carry the CK_RV the C_ function returns
//! (the dispatcher has already mapped the template; what is left here are re-checks).
//! What the dispatcher reads of them (the client's `CKA_ID`/`CKA_LABEL`, usage flags and kind
//! of generic keys, the public halves of versions a client destroyed) is in the published
//! catalog ([`crate::catalog::GenericAttrs`]).

use super::keys::DEFAULT_GRACE_SECS;
use super::{AdminError, AdminService, Caller, Ctx, Failure, Res};
use crate::audit;
use crate::audit::hex;
use crate::policy::{CryptoKeyName, KeyRingName, Permission as P, ResourceName};
use crate::store::keys::{self as skeys, GenericRow, PublicHalf, VersionAction, VersionState};
use crate::store::resources;
use keyward_token::{GenericKind, GenericSpec, GenericUsage};
use keyward_wire::keys::Purpose;
use std::fmt;

use keyward_wire::rv::{
    CKR_ATTRIBUTE_VALUE_INVALID, CKR_OBJECT_HANDLE_INVALID, CKR_TEMPLATE_INCONSISTENT,
    CKR_WRAPPED_KEY_INVALID,
};

/// A generic key to make.
pub struct NewGenericKey {
    /// The ring (the session's slot).
    pub ring: KeyRingName,
    /// Kind and size.
    pub kind: GenericKind,
    /// Usage flags.
    pub usage: GenericUsage,
    /// `CKA_EXTRACTABLE` (the dispatcher checked exportKeyMaterial).
    pub exportable: bool,
    /// The client's `CKA_ID`/`CKA_LABEL` of the private or secret object.
    pub cka_id: Vec<u8>,
    /// See `cka_id`.
    pub cka_label: Vec<u8>,
    /// The client's `CKA_ID`/`CKA_LABEL` of the public object (pairs).
    pub pub_cka_id: Option<Vec<u8>>,
    /// See `pub_cka_id`.
    pub pub_cka_label: Option<Vec<u8>>,
    /// Plaintext key material (`C_CreateObject` with `allow_plaintext_import`); `None`
    /// generates the key in the token.
    pub material: Option<zeroize::Zeroizing<Vec<u8>>>,
    /// A wrapped key the token unwraps into the new key (`C_UnwrapKey` with a Keyward AES
    /// key: a plaintext import too, design §4, since the blob's maker knew the material).
    pub unwrap: Option<UnwrapFrom>,
    /// `C_GenerateKey`, `C_GenerateKeyPair` or `C_CreateObject`, for the audit record.
    pub action: &'static str,
    /// What the audit record says about the template (mechanism, flags; never material).
    pub detail: String,
    /// True once the client that asked has closed its connection (its call's deadline
    /// passed while keywardd was stopped or slow, issue 15 item 3): asked after the token
    /// made the key and before it is stored, so that no key exists that its client never saw.
    pub client_left: Option<Box<dyn Fn() -> bool>>,
}

/// The wrapped material of an unwrap (design §4 "No side doors").
#[derive(Debug, Clone)]
pub struct UnwrapFrom {
    /// The unwrapping Keyward key's internal `CKA_ID`.
    pub unwrapping_id: Vec<u8>,
    /// `CKM_AES_KEY_WRAP_PAD` (else `CKM_AES_KEY_WRAP`).
    pub pad: bool,
    /// The wrapped key.
    pub wrapped: Vec<u8>,
}

impl fmt::Debug for NewGenericKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the material (style rule 12).
        f.debug_struct("NewGenericKey")
            .field("ring", &self.ring)
            .field("kind", &self.kind)
            .field("usage", &self.usage)
            .field("exportable", &self.exportable)
            .field("action", &self.action)
            .finish_non_exhaustive()
    }
}

fn usage_row(u: GenericUsage) -> [bool; 6] {
    [u.encrypt, u.decrypt, u.sign, u.verify, u.wrap, u.unwrap]
}

/// A failure with the CK_RV the C_ function returns.
fn refuse(rv: u64, message: impl Into<String>) -> Failure {
    Failure::Token(rv, message.into())
}

impl AdminService {
    /// Runs `f` in one write transaction like [`AdminService::handle`]: audited (the record
    /// `f` describes, or a denied/error record of its own), committed, state republished.
    /// `denied_rv` is what a policy denial returns.
    pub(super) fn run_pkcs11<T>(
        &mut self,
        caller: &Caller,
        action: &str,
        resource: Option<String>,
        denied_rv: u64,
        f: impl FnOnce(&mut Ctx<'_>) -> Res<(T, Option<String>, String)>,
    ) -> Result<T, AdminError> {
        let now_ms = self.clock.now_ms();
        let record = caller.record(action, resource, now_ms);
        let result = self
            .in_write(
                caller,
                now_ms,
                &record,
                f,
                |tx, (_, resource, detail), _| {
                    let mut rec = record.clone();
                    if resource.is_some() {
                        rec.resource = resource.clone();
                    }
                    rec.detail = Some(detail.clone());
                    audit::append(tx, &rec)?;
                    Ok(())
                },
            )
            .map(|(value, _, _)| value);
        self.finish(record, result, true, Some(denied_rv))
    }

    /// Makes a `PKCS11_GENERIC` key with a generated id in `req.ring` (design §4): needs
    /// kms.cryptoKeys.create on the ring (else `CKR_TOKEN_WRITE_PROTECTED`), and
    /// exportKeyMaterial for an extractable key. Version 1 is made in the token with an
    /// internal random `CKA_ID`. Returns the key and its version.
    pub fn pkcs11_create_key(
        &mut self,
        caller: &Caller,
        req: NewGenericKey,
    ) -> Result<(CryptoKeyName, u64), AdminError> {
        let ring_res = ResourceName::KeyRing(req.ring.clone());
        let action = req.action;
        self.run_pkcs11(
            caller,
            action,
            Some(ring_res.to_string()),
            0xE2,
            |ctx| {
                ctx.require(P::CryptoKeysCreate, &ring_res)?;
                if req.exportable {
                    ctx.require(P::ExportKeyMaterial, &ring_res)?;
                }
                let ring_row = resources::get_key_ring(ctx.tx, &ring_res)?
                    .ok_or_else(|| refuse(0xE2, format!("key ring {ring_res} does not exist")))?;
                let plaintext = req.material.is_some() || req.unwrap.is_some();
                if plaintext && !ring_row.allow_plaintext_import {
                    return Err(refuse(
                        CKR_TEMPLATE_INCONSISTENT,
                        "plaintext key material needs allow_plaintext_import on the ring",
                    ));
                }
                // Squatting (design §9): the names must be free in the ring (a pair's two
                // halves share theirs).
                super::squat::check(
                    ctx,
                    &req.ring,
                    None,
                    &[
                        &req.cka_label,
                        req.pub_cka_label.as_deref().unwrap_or_default(),
                    ],
                    &[&req.cka_id, req.pub_cka_id.as_deref().unwrap_or_default()],
                    Some(CKR_ATTRIBUTE_VALUE_INVALID),
                )?;
                let token = ctx.token.ok_or_else(|| {
                    refuse(0x30, "key creation needs the backing token (keywardd)")
                })?;
                req.kind
                    .check()
                    .map_err(|e| refuse(CKR_ATTRIBUTE_VALUE_INVALID, e.to_string()))?;
                // A fresh key id: p11- and 16 hex digits from the token's RNG.
                let key = loop {
                    let r = token.generate_random(8)?;
                    let id = format!("p11-{}", hex(&r));
                    let key = CryptoKeyName {
                        ring: req.ring.clone(),
                        id,
                    };
                    if !resources::name_taken(ctx.tx, &ResourceName::CryptoKey(key.clone()))? {
                        break key;
                    }
                };
                let name = ResourceName::CryptoKey(key.clone());
                let version_name = format!("{name}/cryptoKeyVersions/1");
                let token_id = token.new_object_id()?;
                let spec = GenericSpec {
                    kind: req.kind,
                    id: &token_id,
                    label: &version_name,
                    exportable: req.exportable,
                    usage: req.usage,
                };
                let public_key = match (&req.material, &req.unwrap) {
                    (_, Some(u)) => {
                        token
                            .unwrap_generic_secret(&spec, &u.unwrapping_id, u.pad, &u.wrapped)
                            .map_err(|e| {
                                let rv = match e {
                                    keyward_token::TokenError::InvalidArgument(_) => {
                                        CKR_WRAPPED_KEY_INVALID
                                    }
                                    // SoftHSM2 2.6: a wrong integrity value is a general
                                    // error; PKCS#11 says CKR_WRAPPED_KEY_INVALID.
                                    ref other if other.ck_rv() == 0x5 => CKR_WRAPPED_KEY_INVALID,
                                    ref other => other.ck_rv(),
                                };
                                refuse(rv, e.to_string())
                            })?;
                        None
                    }
                    (Some(m), None) => {
                        token.import_generic_secret(&spec, m).map_err(|e| {
                            let rv = match e {
                                keyward_token::TokenError::InvalidArgument(_) => {
                                    CKR_TEMPLATE_INCONSISTENT
                                }
                                ref other => other.ck_rv(),
                            };
                            refuse(rv, e.to_string())
                        })?;
                        None
                    }
                    (None, None) => token.generate_generic(&spec)?.map(|p| p.der),
                };
                // The client gave up (a generation can take longer than its deadline): the
                // key is undone before anything is stored; the refusal is audited.
                if req.client_left.as_ref().is_some_and(|left| left()) {
                    if let Err(d) = token.destroy_by_id(&token_id) {
                        tracing::error!(error = %d, "cannot destroy the token object of a key its client left; reconciliation will report it");
                    }
                    return Err(Failure::Precondition(format!(
                        "the client left before the key was made (its call's deadline \
                         passed?): the token object was destroyed, {version_name} was not \
                         stored"
                    )));
                }
                let written = (|| -> Res<u64> {
                    let rid = resources::insert(ctx.tx, &name, Some(ring_row.resource.id), ctx.now)?;
                    skeys::insert_key(
                        ctx.tx,
                        rid,
                        Purpose::Pkcs11Generic.as_str(),
                        None,
                        req.exportable,
                        &caller.principal.member.to_string(),
                    )?;
                    skeys::insert_generic(
                        ctx.tx,
                        rid,
                        &GenericRow {
                            kind: req.kind.to_string(),
                            cka_id: req.cka_id.clone(),
                            cka_label: req.cka_label.clone(),
                            pub_cka_id: req.pub_cka_id.clone(),
                            pub_cka_label: req.pub_cka_label.clone(),
                            usage: usage_row(req.usage),
                            local: !plaintext,
                            creator_instance: caller.instance.clone(),
                        },
                    )?;
                    let n = skeys::add_version(
                        ctx.tx,
                        rid,
                        VersionState::Enabled,
                        Some(&token_id),
                        public_key.as_deref(),
                        ctx.now,
                    )?;
                    skeys::set_primary(ctx.tx, rid, n)?;
                    Ok(n)
                })();
                let n = match written {
                    Ok(n) => n,
                    Err(e) => {
                        if let Err(d) = token.destroy_by_id(&token_id) {
                            tracing::error!(error = %d, "cannot destroy the token object of a failed key write; reconciliation will report it");
                        }
                        return Err(e);
                    }
                };
                let detail = format!(
                    "{} {} {}; CKA_ID {} ({} bytes), exportable={}",
                    if req.material.is_some() {
                        "imported plaintext"
                    } else {
                        "generated"
                    },
                    Purpose::Pkcs11Generic.as_str(),
                    req.kind,
                    hex(&req.cka_id),
                    req.cka_id.len(),
                    req.exportable,
                ) + &format!("; {}", req.detail);
                Ok(((key, n), Some(version_name), detail))
            },
        )
    }

    /// `C_DestroyObject` of a Keyward key (design §4 "Destroying a pair"): needs
    /// kms.cryptoKeyVersions.destroy (else `CKR_ACTION_PROHIBITED`). The private or secret
    /// half schedules the version's destruction (default grace) and keeps the public half
    /// listed; the public half is hidden by itself.
    pub fn pkcs11_destroy(
        &mut self,
        caller: &Caller,
        key: &CryptoKeyName,
        version: u64,
        public_half: bool,
    ) -> Result<(), AdminError> {
        let res = ResourceName::CryptoKey(key.clone());
        let vname = format!("{res}/cryptoKeyVersions/{version}");
        self.run_pkcs11(
            caller,
            "C_DestroyObject",
            Some(vname.clone()),
            super::CKR_ACTION_PROHIBITED,
            |ctx| {
                ctx.require(P::VersionsDestroy, &res)?;
                let row = resources::get(ctx.tx, &res)?
                    .ok_or_else(|| refuse(CKR_OBJECT_HANDLE_INVALID, format!("{res} is gone")))?;
                let k = skeys::get_key(ctx.tx, row.id)?
                    .ok_or_else(|| refuse(CKR_OBJECT_HANDLE_INVALID, format!("{res} is gone")))?;
                let v = skeys::get_version(ctx.tx, row.id, version)?
                    .ok_or_else(|| refuse(CKR_OBJECT_HANDLE_INVALID, format!("{vname} is gone")))?;
                if public_half {
                    skeys::set_public_half(ctx.tx, row.id, version, PublicHalf::Destroyed)?;
                    return Ok(((), None, "public half destroyed".to_string()));
                }
                let generic = k.purpose == Purpose::Pkcs11Generic.as_str();
                let asymmetric = v.public_key.is_some();
                if k.primary_version == Some(version) && !generic && !asymmetric {
                    return Err(refuse(
                        super::CKR_ACTION_PROHIBITED,
                        format!(
                            "version {version} is the primary of {res}: rotate the key first \
                             (keywardctl key rotate)"
                        ),
                    ));
                }
                let grace = i64::try_from(DEFAULT_GRACE_SECS).unwrap_or(i64::MAX);
                let destroy_time = ctx.now.saturating_add(grace);
                skeys::change_version(
                    ctx.tx,
                    row.id,
                    version,
                    VersionAction::ScheduleDestroy,
                    Some(destroy_time),
                    ctx.now,
                )?
                .map_err(|e| refuse(CKR_OBJECT_HANDLE_INVALID, format!("{vname}: {e}")))?;
                if asymmetric {
                    skeys::set_public_half(ctx.tx, row.id, version, PublicHalf::Kept)?;
                }
                Ok((
                    (),
                    None,
                    format!(
                        "destruction scheduled at {} (unix seconds){}",
                        destroy_time,
                        if asymmetric {
                            "; the public half stays until destroyed"
                        } else {
                            ""
                        }
                    ),
                ))
            },
        )
    }

    /// `C_SetAttributeValue` of `CKA_ID`/`CKA_LABEL` on a generic key: the creating module
    /// instance, or kms.cryptoKeys.update (else `CKR_ACTION_PROHIBITED`).
    pub fn pkcs11_set_names(
        &mut self,
        caller: &Caller,
        key: &CryptoKeyName,
        public_half: bool,
        cka_id: Option<Vec<u8>>,
        cka_label: Option<Vec<u8>>,
    ) -> Result<(), AdminError> {
        let res = ResourceName::CryptoKey(key.clone());
        self.run_pkcs11(
            caller,
            "C_SetAttributeValue",
            Some(res.to_string()),
            super::CKR_ACTION_PROHIBITED,
            |ctx| {
                let row = resources::get(ctx.tx, &res)?
                    .ok_or_else(|| refuse(CKR_OBJECT_HANDLE_INVALID, format!("{res} is gone")))?;
                let g = skeys::get_generic(ctx.tx, row.id)?.ok_or_else(|| {
                    refuse(0x10, format!("{res} was not made through the module"))
                })?;
                let creator = caller.instance.is_some() && g.creator_instance == caller.instance;
                let how = if creator {
                    "by the creating instance".to_string()
                } else {
                    ctx.require(P::CryptoKeysUpdate, &res)?;
                    "with kms.cryptoKeys.update".to_string()
                };
                // Squatting (design §9): another key's names, or reserved labels, are
                // refused; the key's own (its other half's) are not.
                super::squat::check(
                    ctx,
                    &key.ring,
                    Some(row.id),
                    &[cka_label.as_deref().unwrap_or_default()],
                    &[cka_id.as_deref().unwrap_or_default()],
                    Some(CKR_ATTRIBUTE_VALUE_INVALID),
                )?;
                skeys::set_generic_names(
                    ctx.tx,
                    row.id,
                    public_half,
                    cka_id.as_deref(),
                    cka_label.as_deref(),
                )?;
                let mut what = Vec::new();
                if let Some(id) = &cka_id {
                    what.push(format!("CKA_ID {}", hex(id)));
                }
                if let Some(l) = &cka_label {
                    what.push(format!("CKA_LABEL ({} bytes)", l.len()));
                }
                Ok((
                    (),
                    None,
                    format!(
                        "{} of the {} half {how}",
                        what.join(", "),
                        if public_half { "public" } else { "private" }
                    ),
                ))
            },
        )
    }
}
