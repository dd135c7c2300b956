//! Groups, service accounts and their keys, and uid → principal mappings.

use super::credentials;
use super::iam::check_member_exists;
use super::render::{done, table, time};
use super::{bare_project, parse_member, Ctx, Failure, Res};
use crate::policy::names::{check_id, check_sa_id};
use crate::policy::{Member, Permission as P, Principal, ResourceName};
use crate::store::{iam as siam, resources};
use keyward_wire::admin::AdminResponse;
use serde_json::json;

fn group_name(g: &str) -> Res<String> {
    let bare = g.strip_prefix("group:").unwrap_or(g);
    match format!("group:{bare}").parse::<Member>() {
        Ok(Member::Group(name)) => Ok(name),
        Ok(_) => Err(Failure::Invalid(format!("invalid group '{g}'"))),
        Err(e) => Err(Failure::Invalid(e)),
    }
}

fn existing_group(ctx: &Ctx<'_>, g: &str) -> Res<String> {
    let name = group_name(g)?;
    if !siam::group_exists(ctx.tx, &name)? {
        return Err(Failure::Precondition(format!(
            "group {name} does not exist (`keywardctl group list` shows them)"
        )));
    }
    Ok(name)
}

pub fn group_create(ctx: &mut Ctx<'_>, g: &str) -> Res<AdminResponse> {
    let name = group_name(g)?;
    ctx.require_global(P::GroupsCreate)?;
    if !siam::create_group(ctx.tx, &name, ctx.now)? {
        return Err(Failure::Precondition(format!(
            "group {name} already exists"
        )));
    }
    Ok(done(
        format!("created group:{name}"),
        json!({"group": name}),
    ))
}

pub fn group_list(ctx: &mut Ctx<'_>) -> Res<AdminResponse> {
    ctx.require_global(P::GroupsList)?;
    let groups = siam::list_groups(ctx.tx)?;
    let rows = groups
        .iter()
        .map(|(g, n)| vec![format!("group:{g}"), n.to_string()])
        .collect();
    let js: Vec<_> = groups
        .iter()
        .map(|(g, n)| json!({"group": g, "members": n}))
        .collect();
    Ok(table(&["GROUP", "MEMBERS"], rows, json!(js)))
}

pub fn group_get(ctx: &mut Ctx<'_>, g: &str) -> Res<AdminResponse> {
    ctx.require_global(P::GroupsGet)?;
    let name = existing_group(ctx, g)?;
    let members = siam::group_members(ctx.tx, &name)?;
    let rows = members.iter().map(|m| vec![m.to_string()]).collect();
    let list: Vec<String> = members.iter().map(|m| m.to_string()).collect();
    Ok(table(
        &["MEMBER"],
        rows,
        json!({"group": name, "members": list}),
    ))
}

pub fn group_delete(ctx: &mut Ctx<'_>, g: &str) -> Res<AdminResponse> {
    ctx.require_global(P::GroupsDelete)?;
    let name = existing_group(ctx, g)?;
    siam::delete_group(ctx.tx, &name)?;
    Ok(done(
        format!("deleted group:{name} and every binding and membership naming it"),
        json!({"group": name, "deleted": true}),
    ))
}

pub fn group_add(
    ctx: &mut Ctx<'_>,
    g: &str,
    member: &str,
    allow_sod_violation: bool,
) -> Res<AdminResponse> {
    let member = parse_member(member)?;
    ctx.require_global(P::GroupsUpdate)?;
    let name = existing_group(ctx, g)?;
    check_member_exists(ctx, &member)?;
    if let Member::Group(inner) = &member {
        // Refuse cycles: `name` must not already be inside `inner`.
        let probe = crate::policy::Principal::new(Member::Group(name.clone()));
        let containing = ctx.snap.effective_members(&probe);
        if *inner == name || containing.contains(&Member::Group(inner.clone())) {
            return Err(Failure::Invalid(format!(
                "adding group:{inner} to group:{name} would make a cycle of groups"
            )));
        }
    }
    if !siam::add_group_member(ctx.tx, &name, &member)? {
        return Ok(done(
            format!("{member} is already in group:{name}"),
            json!({"changed": false}),
        ));
    }
    // Separation of duties over effective permissions: the member, and everyone inside it
    // when it is a group, now holds what the group (and the groups containing it) holds.
    let after = crate::store::build_snapshot(ctx.tx)?;
    let actors = super::iam::SodActor::reached_by(&after, &member);
    let warnings = super::iam::sod_check(
        ctx,
        &after,
        &actors,
        &after.organizations(),
        allow_sod_violation,
        "group.addMember.sodViolation",
        &format!("{member} added to group:{name}"),
        "add a different member",
    )?;
    let mut resp = done(
        format!("added {member} to group:{name}"),
        json!({"group": name, "member": member.to_string(), "changed": true,
               "warnings": warnings}),
    );
    resp.warnings = warnings;
    Ok(resp)
}

pub fn group_remove(ctx: &mut Ctx<'_>, g: &str, member: &str) -> Res<AdminResponse> {
    let member = parse_member(member)?;
    ctx.require_global(P::GroupsUpdate)?;
    let name = existing_group(ctx, g)?;
    if !siam::remove_group_member(ctx.tx, &name, &member)? {
        return Err(Failure::Precondition(format!(
            "{member} is not a member of group:{name}"
        )));
    }
    Ok(done(
        format!("removed {member} from group:{name}"),
        json!({"group": name, "member": member.to_string()}),
    ))
}

fn account_email(a: &str) -> &str {
    a.strip_prefix("serviceAccount:").unwrap_or(a)
}

/// A live account and its project.
fn live_account(ctx: &Ctx<'_>, a: &str, perm: P) -> Res<(String, ResourceName)> {
    let email = account_email(a);
    let m: Member = format!("serviceAccount:{email}")
        .parse()
        .map_err(Failure::Invalid)?;
    let Member::ServiceAccount(email) = m else {
        return Err(Failure::Invalid(format!("invalid service account '{a}'")));
    };
    let project = email
        .split_once('@')
        .map(|(_, p)| p.to_string())
        .unwrap_or_default();
    let project = ResourceName::Project(project);
    ctx.require(perm, &project)?;
    let live = siam::get_sa(ctx.tx, &email)?.is_some_and(|s| s.deleted_at.is_none());
    if !live {
        return Err(Failure::Precondition(format!(
            "service account {email} does not exist"
        )));
    }
    Ok((email, project))
}

pub fn sa_create(
    ctx: &mut Ctx<'_>,
    project: &str,
    id: &str,
    display_name: Option<&str>,
) -> Res<AdminResponse> {
    let project = bare_project(project);
    check_id("project", project).map_err(Failure::Invalid)?;
    check_sa_id(id).map_err(Failure::Invalid)?;
    let pname = ResourceName::Project(project.to_string());
    ctx.require(P::ServiceAccountsCreate, &pname)?;
    let prow = resources::get(ctx.tx, &pname)?
        .ok_or_else(|| Failure::Precondition(format!("{pname} does not exist")))?;
    let email = format!("{id}@{project}");
    if siam::get_sa(ctx.tx, &email)?.is_some() {
        return Err(Failure::Precondition(format!(
            "service account {email} already exists or existed (names are never reused)"
        )));
    }
    siam::create_sa(ctx.tx, &email, prow.id, display_name, ctx.now)?;
    Ok(done(
        format!("created serviceAccount:{email}"),
        json!({"email": email, "member": format!("serviceAccount:{email}"),
               "project": pname.to_string(), "displayName": display_name}),
    ))
}

pub fn sa_list(ctx: &mut Ctx<'_>, project: Option<&str>) -> Res<AdminResponse> {
    let want = project.map(|p| format!("projects/{}", bare_project(p)));
    if let Some(p) = &want {
        let pname: ResourceName = p.parse().map_err(Failure::Invalid)?;
        ctx.require(P::ServiceAccountsList, &pname)?;
    }
    let mut rows = Vec::new();
    let mut js = Vec::new();
    for sa in siam::list_sas(ctx.tx)? {
        if want.as_ref().is_some_and(|w| *w != sa.project) {
            continue;
        }
        let Ok(pname) = sa.project.parse::<ResourceName>() else {
            continue;
        };
        if !ctx.holds(P::ServiceAccountsList, &pname) && !ctx.holds(P::ServiceAccountsGet, &pname) {
            continue;
        }
        rows.push(vec![
            format!("serviceAccount:{}", sa.email),
            sa.project.clone(),
            sa.display_name.clone().unwrap_or_default(),
            time(sa.created_at),
        ]);
        js.push(
            json!({"email": sa.email, "project": sa.project, "displayName": sa.display_name,
                       "createTime": time(sa.created_at)}),
        );
    }
    Ok(table(
        &["ACCOUNT", "PROJECT", "DISPLAY NAME", "CREATED"],
        rows,
        json!(js),
    ))
}

pub fn sa_delete(ctx: &mut Ctx<'_>, account: &str) -> Res<AdminResponse> {
    let (email, _) = live_account(ctx, account, P::ServiceAccountsDelete)?;
    siam::delete_sa(ctx.tx, &email, ctx.now)?;
    let member = Member::ServiceAccount(email.clone());
    let removed = siam::forget_member(ctx.tx, &member)?;
    let mut unmapped = 0;
    for (uid, m) in siam::list_mappings(ctx.tx)? {
        if m == member {
            siam::unmap_uid(ctx.tx, uid)?;
            unmapped += 1;
        }
    }
    Ok(done(
        format!(
            "deleted {member}: its keys are revoked, {removed} binding(s)/membership(s) and \
             {unmapped} uid mapping(s) removed; the name is never reused"
        ),
        json!({"email": email, "deleted": true}),
    ))
}

pub fn sa_key_create(ctx: &mut Ctx<'_>, account: &str) -> Res<AdminResponse> {
    let (email, _) = live_account(ctx, account, P::ServiceAccountKeysCreate)?;
    let server_key = credentials::server_key(ctx.tx)?;
    let new = loop {
        let k = credentials::generate();
        if siam::get_sa_key(ctx.tx, &k.key_id)?.is_none() {
            break k;
        }
    };
    let mac = credentials::mac(&server_key, &new.key);
    siam::insert_sa_key(ctx.tx, &new.key_id, &email, &mac, ctx.now)?;
    let mut resp = done(
        format!(
            "created key {} for serviceAccount:{email}; it is shown once and cannot be read \
             again: use it as the PKCS#11 PIN or in a KEYWARD_CREDENTIALS file",
            new.key_id
        ),
        json!({"account": email, "keyId": new.key_id, "key": new.key.as_str()}),
    );
    resp.secret = Some(new.key.to_string());
    Ok(resp)
}

pub fn sa_key_list(ctx: &mut Ctx<'_>, account: &str) -> Res<AdminResponse> {
    let (email, _) = live_account(ctx, account, P::ServiceAccountKeysList)?;
    let keys = siam::list_sa_keys(ctx.tx, &email)?;
    let rows = keys
        .iter()
        .map(|k| {
            vec![
                k.key_id.clone(),
                time(k.created_at),
                k.revoked_at.map(time).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let js: Vec<_> = keys
        .iter()
        .map(|k| {
            json!({"keyId": k.key_id, "createTime": time(k.created_at),
                        "revokeTime": k.revoked_at.map(time)})
        })
        .collect();
    Ok(table(
        &["KEY ID", "CREATED", "REVOKED"],
        rows,
        json!({"account": email, "keys": js}),
    ))
}

pub fn sa_key_revoke(ctx: &mut Ctx<'_>, account: &str, key_id: &str) -> Res<AdminResponse> {
    let (email, _) = live_account(ctx, account, P::ServiceAccountKeysDelete)?;
    if !siam::revoke_sa_key(ctx.tx, &email, key_id, ctx.now)? {
        return Err(Failure::Precondition(format!(
            "serviceAccount:{email} has no live key {key_id} (`keywardctl sa key list` shows them)"
        )));
    }
    Ok(done(
        format!("revoked key {key_id} of serviceAccount:{email}"),
        json!({"account": email, "keyId": key_id, "revoked": true}),
    ))
}

pub fn map_uid(
    ctx: &mut Ctx<'_>,
    uid: u32,
    member: &str,
    allow_sod_violation: bool,
) -> Res<AdminResponse> {
    let member = parse_member(member)?;
    if !matches!(member, Member::User(_) | Member::ServiceAccount(_)) {
        return Err(Failure::Invalid(format!(
            "a uid maps to a user: or serviceAccount: member, not {member}"
        )));
    }
    ctx.require_global(P::PrincipalMappingsCreate)?;
    check_member_exists(ctx, &member)?;
    let old = siam::map_uid(ctx.tx, uid, &member, ctx.now)?;
    // Separation of duties: the uid now acts as `member` (design §1: a mapped uid is its
    // mapping, without its own or its groups' bindings).
    let before = Principal::new(old.clone().unwrap_or(Member::UnixUid(uid)));
    let after = crate::store::build_snapshot(ctx.tx)?;
    let actor = super::iam::SodActor::uid(uid, before, Principal::new(member.clone()));
    let warnings = super::iam::sod_check(
        ctx,
        &after,
        &[actor],
        &after.organizations(),
        allow_sod_violation,
        "iam.mapUid.sodViolation",
        &format!("unix-uid:{uid} mapped to {member}"),
        "map the uid to a member that does not hold both",
    )?;
    let msg = match old {
        Some(o) => format!("unix-uid:{uid} now acts as {member} (was {o})"),
        None => format!("unix-uid:{uid} now acts as {member}"),
    };
    let mut resp = done(
        msg,
        json!({"uid": uid, "member": member.to_string(), "warnings": warnings}),
    );
    resp.warnings = warnings;
    Ok(resp)
}

pub fn unmap_uid(ctx: &mut Ctx<'_>, uid: u32) -> Res<AdminResponse> {
    ctx.require_global(P::PrincipalMappingsDelete)?;
    if !siam::unmap_uid(ctx.tx, uid)? {
        return Err(Failure::Precondition(format!(
            "unix-uid:{uid} has no mapping"
        )));
    }
    Ok(done(
        format!("removed the mapping of unix-uid:{uid}"),
        json!({"uid": uid}),
    ))
}

pub fn list_mappings(ctx: &mut Ctx<'_>) -> Res<AdminResponse> {
    ctx.require_global(P::PrincipalMappingsList)?;
    let maps = siam::list_mappings(ctx.tx)?;
    let rows = maps
        .iter()
        .map(|(u, m)| vec![format!("unix-uid:{u}"), m.to_string()])
        .collect();
    let js: Vec<_> = maps
        .iter()
        .map(|(u, m)| json!({"uid": u, "member": m.to_string()}))
        .collect();
    Ok(table(&["UID", "ACTS AS"], rows, json!(js)))
}
