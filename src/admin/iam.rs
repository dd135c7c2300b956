//! Roles and bindings, and the questions about them: `iam test`, `iam explain`,
//! `iam who-can`, `iam policy`.

use super::hierarchy::org_resource;
use super::render::{done, table};
use super::{parse_member, parse_resource, Ctx, Failure, Res};
use crate::policy::roles::{self, parse_custom_permissions};
use crate::policy::snapshot::SodViolation;
use crate::policy::{
    Member, PermSet, Permission, Permission as P, Principal, ResourceName, Snapshot,
};
use crate::store::{self, iam as siam, resources};
use keyward_wire::admin::AdminResponse;
use serde_json::json;

fn set_policy_perm(r: &ResourceName) -> Res<Permission> {
    Ok(match r {
        ResourceName::Organization(_) => P::OrganizationsSetIamPolicy,
        ResourceName::Folder(_) => P::FoldersSetIamPolicy,
        ResourceName::Project(_) => P::ProjectsSetIamPolicy,
        ResourceName::KeyRing(_) => P::KeyRingsSetIamPolicy,
        ResourceName::CryptoKey(_) => P::CryptoKeysSetIamPolicy,
        ResourceName::Version(..) => {
            return Err(Failure::Invalid(format!(
                "{r} is a key version: bindings attach to organisations, folders, projects, key \
                 rings and keys, never to versions (as in Cloud KMS); bind on the key"
            )))
        }
    })
}

fn get_policy_perm(r: &ResourceName) -> Permission {
    match r {
        ResourceName::Organization(_) => P::OrganizationsGetIamPolicy,
        ResourceName::Folder(_) => P::FoldersGetIamPolicy,
        ResourceName::Project(_) => P::ProjectsGetIamPolicy,
        ResourceName::KeyRing(_) => P::KeyRingsGetIamPolicy,
        ResourceName::CryptoKey(_) | ResourceName::Version(..) => P::CryptoKeysGetIamPolicy,
    }
}

fn perm_names(set: PermSet) -> Vec<&'static str> {
    set.iter().map(Permission::as_str).collect()
}

/// The organisation a custom role name belongs to: `organizations/{org}/roles/{id}`.
fn custom_role_org(name: &str) -> Option<ResourceName> {
    let rest = name.strip_prefix("organizations/")?;
    let (org, id) = rest.split_once("/roles/")?;
    (!id.is_empty() && !id.contains('/')).then(|| ResourceName::Organization(org.to_string()))
}

pub fn role_list(ctx: &mut Ctx<'_>) -> Res<AdminResponse> {
    let mut rows = Vec::new();
    let mut js = Vec::new();
    for r in roles::predefined() {
        rows.push(vec![
            r.name.to_string(),
            "predefined".into(),
            r.permissions.iter().count().to_string(),
            r.title.to_string(),
        ]);
        js.push(
            json!({"name": r.name, "kind": "predefined", "title": r.title,
                       "permissions": perm_names(r.permissions)}),
        );
    }
    for r in siam::list_roles(ctx.tx)? {
        let visible = custom_role_org(&r.name).is_some_and(|o| ctx.holds(P::RolesList, &o));
        if !visible {
            continue;
        }
        let perms = store::parse_perms(&r.permissions)?;
        rows.push(vec![
            r.name.clone(),
            "custom".into(),
            perms.iter().count().to_string(),
            r.title.clone().unwrap_or_default(),
        ]);
        js.push(json!({"name": r.name, "kind": "custom", "title": r.title,
                       "permissions": perm_names(perms)}));
    }
    Ok(table(
        &["ROLE", "KIND", "PERMISSIONS", "TITLE"],
        rows,
        json!(js),
    ))
}

/// The permissions of a role the caller may know: a predefined role, or a custom role of an
/// organisation it knows (design §9); any other name is "unknown", whether it exists or not.
/// A `roles/cloudkms.*` alias is taken as the `roles/kms.*` role it stands for (pass the name
/// through [`roles::canonical_role`] first); an unknown name is answered with the nearest
/// predefined names.
fn role_permissions(ctx: &Ctx<'_>, name: &str) -> Res<PermSet> {
    if let Some(why) = roles::unmodelled_seed_role(name) {
        return Err(Failure::Invalid(why));
    }
    let known = custom_role_org(name).is_none_or(|org| ctx.may_know(&org));
    known
        .then(|| ctx.snap.role_permissions(name))
        .flatten()
        .ok_or_else(|| {
            let nearest = roles::nearest_roles(name);
            let hint = if nearest.is_empty() {
                String::new()
            } else {
                format!("; did you mean {}?", nearest.join(", "))
            };
            Failure::Invalid(format!(
                "unknown role '{name}'{hint} (`keywardctl role list` shows the predefined \
                 roles and your custom roles, organizations/ORG/roles/ID; `roles/cloudkms.*` \
                 names are accepted for their `roles/kms.*` roles)"
            ))
        })
}

/// What an alias's answer adds to its message: ` (given as its alias ...)`.
fn alias_note(given: &str, role: &str) -> String {
    if given == role {
        String::new()
    } else {
        format!(" (given as its alias {given})")
    }
}

pub fn role_describe(ctx: &mut Ctx<'_>, name: &str) -> Res<AdminResponse> {
    let name = roles::canonical_role(name);
    if let Some(org) = custom_role_org(name) {
        ctx.require(P::RolesGet, &org)?;
    }
    let perms = role_permissions(ctx, name)?;
    let rows = perms.iter().map(|p| vec![p.as_str().to_string()]).collect();
    Ok(table(
        &["PERMISSION"],
        rows,
        json!({"name": name, "permissions": perm_names(perms)}),
    ))
}

pub fn role_create(
    ctx: &mut Ctx<'_>,
    org: &str,
    id: &str,
    title: Option<&str>,
    permissions: &[String],
) -> Res<AdminResponse> {
    let org = org_resource(org)?;
    let ok = (3..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
    if !ok {
        return Err(Failure::Invalid(format!(
            "invalid role id '{id}': 3 to 64 characters from a-z, A-Z, 0-9, '_' and '.'"
        )));
    }
    let perms = parse_custom_permissions(permissions).map_err(Failure::Invalid)?;
    ctx.require(P::RolesCreate, &org)?;
    let org_row = resources::get(ctx.tx, &org)?
        .ok_or_else(|| Failure::Precondition(format!("{org} does not exist")))?;
    let name = format!("{org}/roles/{id}");
    if siam::get_role(ctx.tx, &name)?.is_some() {
        return Err(Failure::Precondition(format!("role {name} already exists")));
    }
    let list = perm_names(perms).join(" ");
    siam::create_role(ctx.tx, &name, org_row.id, title, &list, ctx.now)?;
    Ok(done(
        format!(
            "created role {name} with {} permission(s)",
            perms.iter().count()
        ),
        json!({"name": name, "title": title, "permissions": perm_names(perms)}),
    ))
}

pub fn role_delete(ctx: &mut Ctx<'_>, name: &str) -> Res<AdminResponse> {
    let Some(org) = custom_role_org(name) else {
        return Err(Failure::Invalid(format!(
            "'{name}' is not a custom role: predefined roles cannot be deleted"
        )));
    };
    ctx.require(P::RolesDelete, &org)?;
    if siam::get_role(ctx.tx, name)?.is_none() {
        return Err(Failure::Precondition(format!("role {name} does not exist")));
    }
    let n = siam::role_binding_count(ctx.tx, name)?;
    if n > 0 {
        return Err(Failure::Precondition(format!(
            "role {name} is used by {n} binding(s): unbind them first (`keywardctl iam policy`)"
        )));
    }
    siam::delete_role(ctx.tx, name)?;
    Ok(done(
        format!("deleted role {name}"),
        json!({"name": name, "deleted": true}),
    ))
}

/// Checks that a member named in a binding or group exists where it can be checked, and is
/// known to the caller (design §9): a service account to callers who know its project, a
/// group to callers holding a groups permission on every organisation or inside it. An
/// unknown one gets the answer of an absent one.
pub(crate) fn check_member_exists(ctx: &Ctx<'_>, m: &Member) -> Res<()> {
    match m {
        Member::ServiceAccount(sa) => {
            let project = sa
                .split_once('@')
                .map(|(_, p)| ResourceName::Project(p.to_string()));
            let known =
                project.is_some_and(|p| ctx.may_know(&p)) || ctx.caller.principal.member == *m;
            let live = known && siam::get_sa(ctx.tx, sa)?.is_some_and(|s| s.deleted_at.is_none());
            if !live {
                return Err(Failure::Invalid(format!(
                    "service account {sa} does not exist or is not visible to you: create it \
                     with `keywardctl sa create`"
                )));
            }
        }
        Member::Group(g) => {
            let known = knows_groups(ctx)
                || ctx
                    .snap
                    .effective_members(&ctx.caller.principal)
                    .contains(m);
            if !known || !siam::group_exists(ctx.tx, g)? {
                return Err(Failure::Invalid(format!(
                    "group {g} does not exist or is not visible to you: create it with \
                     `keywardctl group create {g}`"
                )));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Groups are store-wide: the caller knows them if it holds a groups permission on every
/// organisation.
fn knows_groups(ctx: &Ctx<'_>) -> bool {
    [
        P::GroupsGet,
        P::GroupsList,
        P::GroupsUpdate,
        P::GroupsCreate,
    ]
    .into_iter()
    .any(|p| ctx.require_global(p).is_ok())
}

/// Uid mappings are store-wide: the caller may see them if it holds
/// `iam.principalMappings.list` on every organisation.
fn knows_mappings(ctx: &Ctx<'_>) -> bool {
    ctx.require_global(P::PrincipalMappingsList).is_ok()
}

pub fn bind(
    ctx: &mut Ctx<'_>,
    resource: &str,
    role: &str,
    member: &str,
    allow_sod_violation: bool,
) -> Res<AdminResponse> {
    let res = parse_resource(resource)?;
    let perm = set_policy_perm(&res)?;
    let member = parse_member(member)?;
    let given = role;
    let role = roles::canonical_role(role);
    role_permissions(ctx, role)?;
    ctx.require(perm, &res)?;
    if let Some(role_org) = custom_role_org(role) {
        if ctx.snap.organization_of(&res) != ctx.snap.organization_of(&role_org) {
            return Err(Failure::Invalid(format!(
                "custom role {role} belongs to {role_org}; {res} is in another organisation"
            )));
        }
    }
    check_member_exists(ctx, &member)?;
    let row = resources::get(ctx.tx, &res)?
        .ok_or_else(|| Failure::Precondition(format!("{res} does not exist")))?;
    if !siam::bind(ctx.tx, row.id, role, &member, ctx.now)? {
        return Ok(done(
            format!(
                "{member} already holds {role}{} on {res}; nothing changed",
                alias_note(given, role)
            ),
            json!({"resource": res.to_string(), "role": role, "member": member.to_string(),
                   "changed": false}),
        ));
    }
    let after = store::build_snapshot(ctx.tx)?;
    let org = after
        .organization_of(&res)
        .ok_or_else(|| Failure::Precondition(format!("{res} has no organisation")))?;
    let actors = SodActor::reached_by(&after, &member);
    let warnings = sod_check(
        ctx,
        &after,
        &actors,
        &[org],
        allow_sod_violation,
        "iam.bind.sodViolation",
        &format!("role {role} on {res}"),
        "bind a different member",
    )?;
    let mut resp = done(
        format!(
            "bound {role}{} to {member} on {res}",
            alias_note(given, role)
        ),
        json!({"resource": res.to_string(), "role": role, "member": member.to_string(),
               "changed": true, "warnings": warnings}),
    );
    resp.warnings = warnings;
    Ok(resp)
}

pub fn unbind(ctx: &mut Ctx<'_>, resource: &str, role: &str, member: &str) -> Res<AdminResponse> {
    let role = roles::canonical_role(role);
    let res = parse_resource(resource)?;
    let perm = set_policy_perm(&res)?;
    let member = parse_member(member)?;
    ctx.require(perm, &res)?;
    let row = resources::get(ctx.tx, &res)?
        .ok_or_else(|| Failure::Precondition(format!("{res} does not exist")))?;
    if !siam::unbind(ctx.tx, row.id, role, &member)? {
        return Err(Failure::Precondition(format!(
            "there is no binding of {role} for {member} on {res} (`keywardctl iam policy \
             --resource {res}` lists them; inherited bindings are removed where they are \
             attached)"
        )));
    }
    Ok(done(
        format!("removed {role} from {member} on {res}"),
        json!({"resource": res.to_string(), "role": role, "member": member.to_string()}),
    ))
}

pub fn policy(ctx: &mut Ctx<'_>, resource: &str) -> Res<AdminResponse> {
    let res = parse_resource(resource)?;
    ctx.require(get_policy_perm(&res), &res)?;
    let chain = ctx.snap.ancestors(&res).unwrap_or_default();
    let mut rows = Vec::new();
    let mut js = Vec::new();
    for (i, r) in chain.iter().enumerate() {
        let mut bs = ctx.snap.bindings_on(r);
        bs.sort();
        for b in bs {
            let inherited = i > 0 || matches!(res, ResourceName::Version(..));
            rows.push(vec![
                b.role.clone(),
                b.member.to_string(),
                b.resource.to_string(),
                if inherited {
                    "inherited".into()
                } else {
                    "direct".into()
                },
            ]);
            js.push(json!({"role": b.role, "member": b.member.to_string(),
                           "resource": b.resource.to_string(), "inherited": inherited}));
        }
    }
    Ok(table(
        &["ROLE", "MEMBER", "ATTACHED TO", "HOW"],
        rows,
        json!({"resource": res.to_string(), "bindings": js}),
    ))
}

/// The principal a member argument stands for: a mapped uid acts as its mapping. Mappings
/// are store-wide: a uid is asked about only by callers who may list them (the answer would
/// name or betray the mapping), whether the uid is mapped or not.
fn principal_of(ctx: &Ctx<'_>, member: &str) -> Res<(Principal, Option<String>)> {
    let m = parse_member(member)?;
    if let Member::UnixUid(uid) = m {
        if !knows_mappings(ctx) {
            return Err(Failure::Denied(format!(
                "permission denied: a uid acts as its mapping, and {} lacks \
                 {} on at least one organisation (store-wide objects need it on every \
                 organisation): ask about the member it maps to",
                ctx.caller.principal.member,
                P::PrincipalMappingsList
            )));
        }
        if let Some(mapped) = siam::get_mapping(ctx.tx, uid)? {
            let note = format!("unix-uid:{uid} is mapped to {mapped}");
            return Ok((Principal::new(mapped), Some(note)));
        }
    }
    Ok((Principal::new(m), None))
}

fn parse_perms(list: &[String]) -> Res<Vec<Permission>> {
    if list.is_empty() {
        return Ok(Permission::ALL.to_vec());
    }
    list.iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<Permission>()
                .map_err(|e| Failure::Invalid(e.to_string()))
        })
        .collect()
}

pub fn test(
    ctx: &mut Ctx<'_>,
    member: &str,
    resource: &str,
    permissions: &[String],
) -> Res<AdminResponse> {
    let res = parse_resource(resource)?;
    let (principal, note) = principal_of(ctx, member)?;
    let perms = parse_perms(permissions)?;
    ctx.require(get_policy_perm(&res), &res)?;
    let mut granted = Vec::new();
    let mut rows = Vec::new();
    for p in perms {
        let ok = ctx.snap.authorize(&principal, p, &res).allowed;
        if ok {
            granted.push(p.as_str());
        }
        if ok || !permissions.is_empty() {
            rows.push(vec![
                p.as_str().to_string(),
                if ok { "granted" } else { "denied" }.into(),
            ]);
        }
    }
    let mut resp = table(
        &["PERMISSION", "RESULT"],
        rows,
        json!({"member": principal.member.to_string(), "resource": res.to_string(),
               "permissions": granted}),
    );
    resp.message = Some(match note {
        Some(n) => format!(
            "{n}; it holds {} of the permissions asked on {res}",
            granted.len()
        ),
        None => format!(
            "{} holds {} of the permissions asked on {res}",
            principal.member,
            granted.len()
        ),
    });
    Ok(resp)
}

pub fn explain(
    ctx: &mut Ctx<'_>,
    member: &str,
    resource: &str,
    permission: Option<&str>,
) -> Res<AdminResponse> {
    let res = parse_resource(resource)?;
    let (principal, note) = principal_of(ctx, member)?;
    let only = permission
        .map(|p| {
            p.parse::<Permission>()
                .map_err(|e| Failure::Invalid(e.to_string()))
        })
        .transpose()?;
    ctx.require(get_policy_perm(&res), &res)?;
    let grants: Vec<_> = ctx
        .snap
        .explain(&principal, &res)
        .into_iter()
        .filter(|g| only.is_none_or(|p| p == g.permission))
        .collect();
    let mut rows = Vec::new();
    let mut js = Vec::new();
    for g in &grants {
        for b in &g.bindings {
            rows.push(vec![
                g.permission.as_str().to_string(),
                b.role.clone(),
                b.resource.to_string(),
                b.member.to_string(),
            ]);
        }
        js.push(json!({
            "permission": g.permission.as_str(),
            "bindings": g.bindings.iter().map(|b| json!({"role": b.role,
                "resource": b.resource.to_string(), "member": b.member.to_string()}))
                .collect::<Vec<_>>(),
        }));
    }
    let mut resp = table(
        &["PERMISSION", "ROLE", "BOUND ON", "AS MEMBER"],
        rows,
        json!({"member": principal.member.to_string(), "resource": res.to_string(), "grants": js}),
    );
    let mut msg = match (&only, grants.is_empty()) {
        (Some(p), true) => {
            let d = ctx.snap.authorize(&principal, *p, &res);
            format!("not granted: {}", d.reason.unwrap_or_default())
        }
        _ => format!(
            "{} holds {} permission(s) on {res}",
            principal.member,
            grants.len()
        ),
    };
    if let Some(n) = note {
        msg = format!("{n}; {msg}");
    }
    resp.message = Some(msg);
    Ok(resp)
}

pub fn who_can(ctx: &mut Ctx<'_>, resource: &str, permission: &str) -> Res<AdminResponse> {
    let res = parse_resource(resource)?;
    let perm: Permission =
        permission
            .parse()
            .map_err(|e: crate::policy::permission::UnknownPermission| {
                Failure::Invalid(e.to_string())
            })?;
    ctx.require(get_policy_perm(&res), &res)?;
    // Mapped uids are shown only to callers who may list the mappings.
    let mappings = if knows_mappings(ctx) {
        siam::list_mappings(ctx.tx)?
    } else {
        Vec::new()
    };
    let grantees = ctx.snap.who_can(&res, perm);
    let mut rows = Vec::new();
    let mut js = Vec::new();
    for g in &grantees {
        let uids: Vec<String> = mappings
            .iter()
            .filter(|(_, m)| *m == g.member)
            .map(|(u, _)| format!("unix-uid:{u}"))
            .collect();
        let via = if g.via_groups.is_empty() {
            "-".to_string()
        } else {
            g.via_groups
                .iter()
                .map(|v| format!("group:{v}"))
                .collect::<Vec<_>>()
                .join(" > ")
        };
        rows.push(vec![
            g.member.to_string(),
            g.binding.role.clone(),
            g.binding.resource.to_string(),
            via.clone(),
            if uids.is_empty() {
                "-".into()
            } else {
                uids.join(",")
            },
        ]);
        js.push(
            json!({"member": g.member.to_string(), "role": g.binding.role,
                       "boundOn": g.binding.resource.to_string(), "viaGroups": g.via_groups,
                       "mappedUids": uids}),
        );
    }
    let mut resp = table(
        &["MEMBER", "ROLE", "BOUND ON", "VIA GROUPS", "MAPPED UIDS"],
        rows,
        json!({"resource": res.to_string(), "permission": perm.as_str(), "principals": js}),
    );
    resp.message = Some(format!(
        "{} principal(s) hold {perm} on {res}",
        grantees.len()
    ));
    Ok(resp)
}

/// Someone a change may give both key administration and key use: how messages name it,
/// and who it acts as before and after the change.
pub(crate) struct SodActor {
    name: String,
    before: Principal,
    after: Principal,
}

impl SodActor {
    /// The members whose effective permissions a grant to `member` changes (itself, every
    /// member of a group, nested, or everyone for `allAuthenticated`), each acting as itself.
    pub(crate) fn reached_by(after: &Snapshot, member: &Member) -> Vec<SodActor> {
        after
            .members_reached_by(member)
            .into_iter()
            .map(|m| SodActor {
                name: m.to_string(),
                before: Principal::new(m.clone()),
                after: Principal::new(m),
            })
            .collect()
    }

    /// A uid that acted as `before` and now acts as `after` (`iam map-uid`).
    pub(crate) fn uid(uid: u32, before: Principal, after: Principal) -> SodActor {
        SodActor {
            name: format!("unix-uid:{uid} (acting as {})", after.member),
            before,
            after,
        }
    }
}

/// Separation of duties after a change (design §3, issue 13): the violations the change
/// adds for `actors` in `orgs`, over effective permissions (groups, nested groups,
/// `allAuthenticated`, custom roles): compared with the snapshot the request started from
/// (`ctx.snap`), `after` the change. In an organisation whose mode is `enforce` a new
/// violation refuses the request unless `allow` (the caller rolls the change back by
/// failing); `warn`, and `enforce` with `allow`, let it through with a warning and an audit
/// record `action`; `off` says nothing. Returns the warnings.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sod_check(
    ctx: &mut Ctx<'_>,
    after: &Snapshot,
    actors: &[SodActor],
    orgs: &[String],
    allow: bool,
    action: &'static str,
    what: &str,
    instead: &str,
) -> Res<Vec<String>> {
    let mut findings: Vec<(String, String, String)> = Vec::new();
    for org in orgs {
        let mode = resources::sod_mode(ctx.tx, org)?;
        if mode == "off" {
            continue;
        }
        let top = ResourceName::Organization(org.clone());
        let befores: Vec<Principal> = actors.iter().map(|a| a.before.clone()).collect();
        let afters: Vec<Principal> = actors.iter().map(|a| a.after.clone()).collect();
        let was = ctx.snap.sod_violations_each(&befores, &top, false);
        let now = after.sod_violations_each(&afters, &top, false);
        let mut parts = Vec::new();
        for ((a, was), now) in actors.iter().zip(was).zip(now) {
            let new: Vec<String> = now
                .into_iter()
                .filter(|v| !was.iter().any(|w| w.resource == v.resource))
                .map(|v| v.resource.to_string())
                .collect();
            if !new.is_empty() {
                parts.push(format!(
                    "{} would both administer and use keys at {}",
                    a.name,
                    new.join(", ")
                ));
            }
        }
        if !parts.is_empty() {
            let text = format!(
                "separation of duties: {} (key administration: cryptoKeys.create/update or \
                 version destroy; use: useToEncrypt/Decrypt/Sign/Verify)",
                parts.join("; ")
            );
            findings.push((org.clone(), mode, text));
        }
    }
    if !allow {
        if let Some((org, _, text)) = findings.iter().find(|(_, mode, _)| mode == "enforce") {
            return Err(Failure::Precondition(format!(
                "{text}; organizations/{org} enforces separation of duties: {instead}, or pass \
                 --allow-sod-violation (audited)"
            )));
        }
    }
    let mut warnings = Vec::new();
    for (org, mode, text) in findings {
        let detail = format!("{text} [mode {mode}, {what}]");
        ctx.audit_extra(action, Some(format!("organizations/{org}")), detail);
        warnings.push(text);
    }
    Ok(warnings)
}

/// `role update`: replaces a custom role's permissions (iam.roles.update on its
/// organisation); every member the role is bound to is re-checked for separation of duties.
pub fn role_update(
    ctx: &mut Ctx<'_>,
    name: &str,
    title: Option<&str>,
    permissions: &[String],
    allow_sod_violation: bool,
) -> Res<AdminResponse> {
    let Some(org) = custom_role_org(name) else {
        return Err(Failure::Invalid(format!(
            "'{name}' is not a custom role: predefined roles cannot be changed"
        )));
    };
    let perms = parse_custom_permissions(permissions).map_err(Failure::Invalid)?;
    ctx.require(P::RolesUpdate, &org)?;
    let list = perm_names(perms).join(" ");
    if !siam::update_role(ctx.tx, name, title, &list)? {
        return Err(Failure::Precondition(format!("role {name} does not exist")));
    }
    let after = store::build_snapshot(ctx.tx)?;
    let ResourceName::Organization(org_id) = &org else {
        return Err(Failure::Invalid(format!("'{name}' is not a custom role")));
    };
    let mut members: Vec<Member> = after
        .bindings_with_role(name)
        .into_iter()
        .flat_map(|b| after.members_reached_by(&b.member))
        .collect();
    members.sort();
    members.dedup();
    let actors: Vec<SodActor> = members
        .into_iter()
        .map(|m| SodActor {
            name: m.to_string(),
            before: Principal::new(m.clone()),
            after: Principal::new(m),
        })
        .collect();
    let warnings = sod_check(
        ctx,
        &after,
        &actors,
        std::slice::from_ref(org_id),
        allow_sod_violation,
        "role.update.sodViolation",
        &format!("role {name}"),
        "leave the use permissions out of this role",
    )?;
    let mut resp = done(
        format!(
            "updated role {name}: {} permission(s)",
            perms.iter().count()
        ),
        json!({"name": name, "permissions": perm_names(perms), "warnings": warnings}),
    );
    resp.warnings = warnings;
    Ok(resp)
}

fn cause_json(c: &crate::policy::snapshot::SodCause) -> serde_json::Value {
    json!({"permission": c.permission.as_str(), "role": c.binding.role,
           "boundOn": c.binding.resource.to_string(), "member": c.binding.member.to_string(),
           "viaGroups": c.via_groups})
}

/// A side of a violation as text: `role on resource [via group:a > group:b]`, each once.
fn causes_text(causes: &[crate::policy::snapshot::SodCause]) -> String {
    let mut out: Vec<String> = Vec::new();
    for c in causes {
        let mut t = format!("{} on {}", c.binding.role, c.binding.resource);
        if !c.via_groups.is_empty() {
            let path: Vec<String> = c.via_groups.iter().map(|g| format!("group:{g}")).collect();
            t.push_str(&format!(" via {}", path.join(" > ")));
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out.join("; ")
}

/// `iam sod-report --org ORG`: every member holding key administration and key use on the
/// same keys in the organisation (the topmost resource where it starts), with the bindings
/// and groups that cause each side. Needs resourcemanager.organizations.getIamPolicy on the
/// organisation (the auditor role has it).
pub fn sod_report(ctx: &mut Ctx<'_>, org: &str) -> Res<AdminResponse> {
    let org_res = org_resource(org)?;
    ctx.require(P::OrganizationsGetIamPolicy, &org_res)?;
    let ResourceName::Organization(org_id) = &org_res else {
        return Err(Failure::Invalid(format!("'{org}' is not an organisation")));
    };
    let mode = resources::sod_mode(ctx.tx, org_id)?;
    // Mapped uids are shown only to callers who may list the mappings (as `iam who-can`).
    let mappings = if knows_mappings(ctx) {
        siam::list_mappings(ctx.tx)?
    } else {
        Vec::new()
    };
    let principals: Vec<Principal> = ctx
        .snap
        .known_members()
        .into_iter()
        .map(Principal::new)
        .collect();
    let found: Vec<SodViolation> = ctx
        .snap
        .sod_violations_each(&principals, &org_res, true)
        .into_iter()
        .flatten()
        .collect();
    let mut rows = Vec::new();
    let mut js = Vec::new();
    for v in &found {
        let uids: Vec<String> = mappings
            .iter()
            .filter(|(_, m)| *m == v.member)
            .map(|(u, _)| format!("unix-uid:{u}"))
            .collect();
        rows.push(vec![
            v.member.to_string(),
            v.resource.to_string(),
            causes_text(&v.administration),
            causes_text(&v.usage),
        ]);
        js.push(json!({
            "member": v.member.to_string(),
            "resource": v.resource.to_string(),
            "administration": v.administration.iter().map(cause_json).collect::<Vec<_>>(),
            "use": v.usage.iter().map(cause_json).collect::<Vec<_>>(),
            "mappedUids": uids,
        }));
    }
    let mut resp = table(
        &["MEMBER", "KEYS AT", "ADMINISTRATION FROM", "USE FROM"],
        rows,
        json!({"organization": org_res.to_string(), "separationOfDuties": mode,
               "violations": js}),
    );
    resp.message = Some(format!(
        "{} member(s) hold both key administration and key use in {org_res} (separation of \
         duties: {mode})",
        found.len()
    ));
    Ok(resp)
}
