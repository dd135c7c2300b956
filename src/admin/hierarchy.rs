//! Organisations, folders, projects and key rings: create, list, get, delete, settings.

use super::render::{done, table, time, yes};
use super::{org_name, parse_member, parse_resource, Ctx, Failure, Res};
use crate::policy::names::check_id;
use crate::policy::{KeyRingName, Permission as P, ResourceKind, ResourceName, RingParent};
use crate::store::{meta_set, resources};
use keyward_wire::admin::AdminResponse;
use rand::RngCore;
use serde_json::json;

/// The role `init` binds to the first admin.
pub const ORG_ADMIN_ROLE: &str = "roles/keyward.orgAdmin";

/// The meta key of the server key service-account keys are MACed under.
pub const SA_MAC_KEY: &str = "sa_key_mac_key";

fn perms(kind: ResourceKind) -> (P, P, P, P) {
    // (create, get, list, delete)
    match kind {
        ResourceKind::Organization => (
            P::OrganizationsCreate,
            P::OrganizationsGet,
            P::OrganizationsList,
            P::OrganizationsDelete,
        ),
        ResourceKind::Folder => (
            P::FoldersCreate,
            P::FoldersGet,
            P::FoldersList,
            P::FoldersDelete,
        ),
        ResourceKind::Project => (
            P::ProjectsCreate,
            P::ProjectsGet,
            P::ProjectsList,
            P::ProjectsDelete,
        ),
        ResourceKind::KeyRing => (
            P::KeyRingsCreate,
            P::KeyRingsGet,
            P::KeyRingsList,
            P::KeyRingsDelete,
        ),
        ResourceKind::CryptoKey | ResourceKind::Version => (
            P::CryptoKeysCreate,
            P::CryptoKeysGet,
            P::CryptoKeysList,
            P::VersionsDestroy,
        ),
    }
}

/// Parses a name argument of a given kind; `acme` is accepted for `organizations/acme`,
/// `eng` for `folders/eng`, `payments` for `projects/payments`.
fn name_of(kind: ResourceKind, s: &str) -> Res<ResourceName> {
    let full = if s.contains('/') {
        s.to_string()
    } else {
        match kind {
            ResourceKind::Organization => format!("organizations/{s}"),
            ResourceKind::Folder => format!("folders/{s}"),
            ResourceKind::Project => format!("projects/{s}"),
            _ => s.to_string(),
        }
    };
    let name = parse_resource(&full)?;
    if name.kind() != kind {
        return Err(Failure::Invalid(format!(
            "'{s}' is a {}, not a {}",
            name.kind().noun(),
            kind.noun()
        )));
    }
    Ok(name)
}

pub fn init(ctx: &mut Ctx<'_>, org: &str, admin: &str) -> Res<AdminResponse> {
    let org = org.strip_prefix("organizations/").unwrap_or(org);
    check_id("organisation", org).map_err(Failure::Invalid)?;
    let admin = parse_member(admin)?;
    if resources::has_organization(ctx.tx)? {
        return Err(Failure::Precondition(
            "the store is already initialised: init works on an empty store only; use \
             `keywardctl org create` for another organisation"
                .into(),
        ));
    }
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    meta_set(ctx.tx, SA_MAC_KEY, &key)?;
    let name = ResourceName::Organization(org.to_string());
    let id = resources::insert(ctx.tx, &name, None, ctx.now)?;
    crate::store::iam::bind(ctx.tx, id, ORG_ADMIN_ROLE, &admin, ctx.now)?;
    Ok(done(
        format!("initialised: created {name} and bound {ORG_ADMIN_ROLE} to {admin}"),
        json!({"organization": name.to_string(), "admin": admin.to_string(), "role": ORG_ADMIN_ROLE}),
    ))
}

pub fn org_create(ctx: &mut Ctx<'_>, org: &str) -> Res<AdminResponse> {
    let org = org.strip_prefix("organizations/").unwrap_or(org);
    check_id("organisation", org).map_err(Failure::Invalid)?;
    ctx.require_global(P::OrganizationsCreate)?;
    let name = ResourceName::Organization(org.to_string());
    if resources::name_taken(ctx.tx, &name)? {
        return Err(Failure::Precondition(format!(
            "{name} already exists or existed (names are never reused)"
        )));
    }
    let id = resources::insert(ctx.tx, &name, None, ctx.now)?;
    let creator = ctx.caller.principal.member.clone();
    crate::store::iam::bind(ctx.tx, id, ORG_ADMIN_ROLE, &creator, ctx.now)?;
    Ok(done(
        format!("created {name}; {creator} holds {ORG_ADMIN_ROLE} on it"),
        json!({"name": name.to_string(), "admin": creator.to_string()}),
    ))
}

pub fn org_set_sod(ctx: &mut Ctx<'_>, org: &str, mode: &str) -> Res<AdminResponse> {
    let name = name_of(ResourceKind::Organization, org)?;
    if !["off", "warn", "enforce"].contains(&mode) {
        return Err(Failure::Invalid(format!(
            "invalid separation-of-duties mode '{mode}': use off, warn or enforce"
        )));
    }
    ctx.require(P::OrganizationsUpdate, &name)?;
    let row = resources::get(ctx.tx, &name)?
        .ok_or_else(|| Failure::Precondition(format!("{name} does not exist")))?;
    resources::set_sod_mode(ctx.tx, row.id, mode)?;
    Ok(done(
        format!("separation of duties on {name}: {mode}"),
        json!({"name": name.to_string(), "separationOfDuties": mode}),
    ))
}

pub fn container_create(
    ctx: &mut Ctx<'_>,
    kind: ResourceKind,
    parent: &str,
    id: &str,
) -> Res<AdminResponse> {
    check_id(kind.noun(), id).map_err(Failure::Invalid)?;
    let parent = parse_resource(parent)?;
    if !matches!(
        parent,
        ResourceName::Organization(_) | ResourceName::Folder(_)
    ) {
        return Err(Failure::Invalid(format!(
            "a {}'s parent is an organisation or a folder, not {parent}",
            kind.noun()
        )));
    }
    let (create, ..) = perms(kind);
    ctx.require(create, &parent)?;
    let parent_row = resources::get(ctx.tx, &parent)?
        .ok_or_else(|| Failure::Precondition(format!("{parent} does not exist")))?;
    if resources::container_id_taken(ctx.tx, id)? {
        return Err(Failure::Precondition(format!(
            "the id '{id}' is taken by a folder or project, now or before (folder and project \
             ids are unique and never reused)"
        )));
    }
    let name = match kind {
        ResourceKind::Folder => ResourceName::Folder(id.to_string()),
        _ => ResourceName::Project(id.to_string()),
    };
    resources::insert(ctx.tx, &name, Some(parent_row.id), ctx.now)?;
    Ok(done(
        format!("created {name} under {parent}"),
        json!({"name": name.to_string(), "parent": parent.to_string()}),
    ))
}

fn check_token_label(label: &str) -> Res<()> {
    if label.is_empty() || label.len() > 32 {
        return Err(Failure::Invalid(format!(
            "token label '{label}' is {} bytes: a PKCS#11 token label holds 1 to 32 bytes",
            label.len()
        )));
    }
    if label.trim() != label || label.chars().any(char::is_control) {
        return Err(Failure::Invalid(format!(
            "token label '{label}' may not start or end with spaces or hold control characters \
             (PKCS#11 pads labels with spaces)"
        )));
    }
    Ok(())
}

pub fn key_ring_create(
    ctx: &mut Ctx<'_>,
    parent: &str,
    id: &str,
    token_label: Option<&str>,
) -> Res<AdminResponse> {
    check_id("key ring", id).map_err(Failure::Invalid)?;
    let parent_name = parse_resource(parent)?;
    let ring_parent = match &parent_name {
        ResourceName::Project(p) => RingParent::Project(p.clone()),
        ResourceName::Organization(o) => RingParent::Organization(o.clone()),
        other => {
            return Err(Failure::Invalid(format!(
                "a key ring's parent is a project or an organisation, not {other}"
            )))
        }
    };
    let label = match token_label {
        Some(l) => l.to_string(),
        None if id.len() > 32 => {
            return Err(Failure::Invalid(format!(
                "key ring id '{id}' is {} bytes, longer than a PKCS#11 token label (32): give \
                 --token-label",
                id.len()
            )))
        }
        None => id.to_string(),
    };
    check_token_label(&label)?;
    ctx.require(P::KeyRingsCreate, &parent_name)?;
    let parent_row = resources::get(ctx.tx, &parent_name)?
        .ok_or_else(|| Failure::Precondition(format!("{parent_name} does not exist")))?;
    let name = ResourceName::KeyRing(KeyRingName {
        parent: ring_parent,
        id: id.to_string(),
    });
    if resources::name_taken(ctx.tx, &name)? {
        return Err(Failure::Precondition(format!(
            "key ring {name} already exists or existed (names are never reused)"
        )));
    }
    let (slot, serial) = resources::ring_identity(&name);
    if resources::slot_taken(ctx.tx, slot)? {
        return Err(Failure::Precondition(format!(
            "key ring {name} would get slot id {slot}, already used by another key ring (a \
             31-bit hash collision): choose another id"
        )));
    }
    let rid = resources::insert(ctx.tx, &name, Some(parent_row.id), ctx.now)?;
    resources::insert_key_ring(ctx.tx, rid, &label, slot, &serial)?;
    Ok(done(
        format!("created key ring {name} (token label '{label}', slot {slot})"),
        json!({"name": name.to_string(), "tokenLabel": label, "slotId": slot, "serial": serial}),
    ))
}

pub fn key_ring_update(
    ctx: &mut Ctx<'_>,
    name: &str,
    allow_plaintext_import: Option<bool>,
    strict_templates: Option<bool>,
    token_label: Option<&str>,
) -> Res<AdminResponse> {
    let name = name_of(ResourceKind::KeyRing, name)?;
    if allow_plaintext_import.is_none() && strict_templates.is_none() && token_label.is_none() {
        return Err(Failure::Invalid(
            "nothing to update: give --allow-plaintext-import, --strict-templates or \
             --token-label"
                .into(),
        ));
    }
    if let Some(l) = token_label {
        check_token_label(l)?;
    }
    ctx.require(P::KeyRingsUpdate, &name)?;
    let row = resources::get_key_ring(ctx.tx, &name)?
        .ok_or_else(|| Failure::Precondition(format!("key ring {name} does not exist")))?;
    resources::update_key_ring(
        ctx.tx,
        row.resource.id,
        allow_plaintext_import,
        strict_templates,
        token_label,
    )?;
    let after = resources::get_key_ring(ctx.tx, &name)?
        .ok_or_else(|| Failure::Precondition(format!("key ring {name} does not exist")))?;
    Ok(done(
        format!(
            "updated {name}: token label '{}', allow_plaintext_import {}, strict_templates {}",
            after.token_label, after.allow_plaintext_import, after.strict_templates
        ),
        ring_json(&after),
    ))
}

fn ring_json(r: &resources::KeyRingRow) -> serde_json::Value {
    json!({
        "name": r.resource.name.to_string(),
        "tokenLabel": r.token_label,
        "slotId": r.slot_id,
        "serial": r.serial,
        "allowPlaintextImport": r.allow_plaintext_import,
        "strictTemplates": r.strict_templates,
        "createTime": time(r.resource.created_at),
    })
}

pub fn list(ctx: &mut Ctx<'_>, kind: ResourceKind, parent: Option<&str>) -> Res<AdminResponse> {
    let (_, get, list, _) = perms(kind);
    let parent = parent.map(parse_resource).transpose()?;
    if let Some(p) = &parent {
        ctx.require(list, p)?;
    }
    let rows = resources::list(ctx.tx, kind, parent.as_ref())?;
    let rows: Vec<_> = rows
        .into_iter()
        .filter(|r| parent.is_some() || ctx.holds(get, &r.name) || ctx.holds(list, &r.name))
        .collect();
    if kind == ResourceKind::KeyRing {
        let mut out = Vec::new();
        let mut js = Vec::new();
        for r in rows {
            if let Some(k) = resources::get_key_ring(ctx.tx, &r.name)? {
                out.push(vec![
                    k.resource.name.to_string(),
                    k.token_label.clone(),
                    k.slot_id.to_string(),
                    yes(k.allow_plaintext_import),
                    yes(k.strict_templates),
                ]);
                js.push(ring_json(&k));
            }
        }
        return Ok(table(
            &[
                "NAME",
                "TOKEN LABEL",
                "SLOT",
                "PLAINTEXT IMPORT",
                "STRICT TEMPLATES",
            ],
            out,
            json!(js),
        ));
    }
    let js: Vec<_> = rows
        .iter()
        .map(|r| {
            json!({"name": r.name.to_string(), "parent": r.parent.as_ref().map(|p| p.to_string()),
                   "createTime": time(r.created_at)})
        })
        .collect();
    let out = rows
        .iter()
        .map(|r| {
            vec![
                r.name.to_string(),
                r.parent
                    .as_ref()
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "-".into()),
                time(r.created_at),
            ]
        })
        .collect();
    Ok(table(&["NAME", "PARENT", "CREATED"], out, json!(js)))
}

pub fn get(ctx: &mut Ctx<'_>, kind: ResourceKind, name: &str) -> Res<AdminResponse> {
    let name = name_of(kind, name)?;
    let (_, get, ..) = perms(kind);
    ctx.require(get, &name)?;
    let row = resources::get(ctx.tx, &name)?
        .ok_or_else(|| Failure::Precondition(format!("{} {name} does not exist", kind.noun())))?;
    let mut js = json!({
        "name": name.to_string(),
        "parent": row.parent.as_ref().map(|p| p.to_string()),
        "createTime": time(row.created_at),
    });
    let mut rows = vec![
        vec!["name".to_string(), name.to_string()],
        vec![
            "parent".to_string(),
            row.parent
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into()),
        ],
        vec!["created".to_string(), time(row.created_at)],
    ];
    if let ResourceName::Organization(o) = &name {
        let mode = resources::sod_mode(ctx.tx, o)?;
        rows.push(vec!["separation of duties".into(), mode.clone()]);
        js["separationOfDuties"] = json!(mode);
    }
    if kind == ResourceKind::KeyRing {
        if let Some(k) = resources::get_key_ring(ctx.tx, &name)? {
            rows.push(vec!["token label".into(), k.token_label.clone()]);
            rows.push(vec!["slot id".into(), k.slot_id.to_string()]);
            rows.push(vec!["token serial".into(), k.serial.clone()]);
            rows.push(vec![
                "allow plaintext import".into(),
                yes(k.allow_plaintext_import),
            ]);
            rows.push(vec!["strict templates".into(), yes(k.strict_templates)]);
            js = ring_json(&k);
        }
    }
    Ok(table(&["FIELD", "VALUE"], rows, js))
}

pub fn delete(ctx: &mut Ctx<'_>, kind: ResourceKind, name: &str) -> Res<AdminResponse> {
    let name = name_of(kind, name)?;
    let (.., delete) = perms(kind);
    ctx.require(delete, &name)?;
    let row = resources::get(ctx.tx, &name)?
        .ok_or_else(|| Failure::Precondition(format!("{} {name} does not exist", kind.noun())))?;
    if kind == ResourceKind::KeyRing {
        let n = resources::any_children(ctx.tx, row.id)?;
        if n > 0 {
            return Err(Failure::Precondition(format!(
                "key ring {name} holds {n} key(s): a key ring is deleted only when empty, and \
                 keys are never deleted (destroy their versions instead)"
            )));
        }
        let active = crate::store::import_jobs::list(ctx.tx, Some(row.id))?
            .into_iter()
            .filter(|j| j.state_at(ctx.now) == crate::store::import_jobs::JobState::Active)
            .count();
        if active > 0 {
            return Err(Failure::Precondition(format!(
                "key ring {name} has {active} ACTIVE import job(s): delete it after they expire"
            )));
        }
    } else {
        let n = resources::live_children(ctx.tx, row.id)?;
        if n > 0 {
            return Err(Failure::Precondition(format!(
                "{} {name} is not empty ({n} live child resource(s) or service account(s)): \
                 delete them first",
                kind.noun()
            )));
        }
    }
    resources::mark_deleted(ctx.tx, row.id, ctx.now)?;
    Ok(done(
        format!("deleted {} {name} (its name is never reused)", kind.noun()),
        json!({"name": name.to_string(), "deleted": true}),
    ))
}

/// Normalises an organisation argument.
pub fn org_resource(s: &str) -> Res<ResourceName> {
    name_of(ResourceKind::Organization, &org_name(s))
}
