//! The policy snapshot and the pure decisions over it: `authorize`, visibility, `who_can`,
//! `explain` and separation-of-duties checks.
//!
//! A snapshot is immutable: keywardd builds a new one from the store (in one read transaction)
//! after every change and swaps it in. Nothing here does I/O, and every lookup that fails
//! (unknown resource, unknown role, a parent chain that does not reach an organisation) is a
//! deny, never a panic.

use super::names::{CryptoKeyName, KeyRingName, Member, ResourceName};
use super::permission::{PermSet, Permission};
use super::roles;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// The snapshot's maps: foldhash (fast, randomly seeded) instead of SipHash; the snapshot
/// hashes a million names when it is built and several per decision.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The deepest parent chain followed (organisation, 60 folders, project, ring, key, version).
const MAX_DEPTH: usize = 64;

/// A role binding: `member` holds `role` on `resource` and everything below it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Binding {
    /// Where the binding is attached.
    pub resource: ResourceName,
    /// The role's name.
    pub role: String,
    /// Who it names.
    pub member: Member,
}

impl std::fmt::Display for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} on {} for {}", self.role, self.resource, self.member)
    }
}

/// Who is calling: one identity plus, for kernel-authenticated callers, its unix groups.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    /// The identity (`user:`, `serviceAccount:`, `unix-uid:` or `anonymous`).
    pub member: Member,
    /// The caller's unix groups, matched by `unix-gid:N` bindings.
    pub unix_gids: Vec<u32>,
}

impl Principal {
    /// A principal with no unix groups.
    pub fn new(member: Member) -> Principal {
        Principal {
            member,
            unix_gids: Vec::new(),
        }
    }

    /// The anonymous principal.
    pub fn anonymous() -> Principal {
        Principal::new(Member::Anonymous)
    }

    /// True unless anonymous.
    pub fn is_authenticated(&self) -> bool {
        self.member != Member::Anonymous
    }
}

/// The outcome of [`Snapshot::authorize`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allowed or not.
    pub allowed: bool,
    /// The binding that granted it (the nearest one), when allowed.
    pub granted_by: Option<Binding>,
    /// Why it was denied, when it was (for logs and `iam explain`, never for callers that
    /// must not learn whether a resource exists).
    pub reason: Option<String>,
}

impl Decision {
    fn deny(reason: impl Into<String>) -> Decision {
        Decision {
            allowed: false,
            granted_by: None,
            reason: Some(reason.into()),
        }
    }
}

/// One answer of [`Snapshot::who_can`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grantee {
    /// A principal-like member: `user:`, `serviceAccount:`, `unix-uid:`, `unix-gid:` or
    /// `allAuthenticated`.
    pub member: Member,
    /// The binding that grants it.
    pub binding: Binding,
    /// The groups between the binding's member and this one (outermost first).
    pub via_groups: Vec<String>,
}

/// One answer of [`Snapshot::explain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The permission held.
    pub permission: Permission,
    /// Every binding that grants it, nearest first.
    pub bindings: Vec<Binding>,
}

/// An immutable view of the hierarchy, roles, groups and bindings.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every live resource (not versions) and its parent.
    parents: Map<ResourceName, Option<ResourceName>>,
    /// Keys of each ring.
    ring_keys: Map<KeyRingName, Vec<CryptoKeyName>>,
    /// Children of each node, for walking down.
    children: Map<ResourceName, Vec<ResourceName>>,
    /// Bindings by resource.
    bindings: Map<ResourceName, Vec<(Arc<str>, Member)>>,
    /// Every role (predefined and custom) by name.
    roles: Map<String, PermSet>,
    /// Direct members of each group.
    group_members: Map<String, BTreeSet<Member>>,
    /// The groups each member is directly in.
    member_of: Map<Member, Vec<String>>,
    /// Every group each member is in, directly or through nested groups, computed once by
    /// [`SnapshotBuilder::build`]: the decisions look a principal's groups up here instead of
    /// walking `member_of` on every call.
    group_closure: Map<Member, Vec<Member>>,
    /// Every resource that has at least one binding of a role with a `kms.*` resource
    /// permission (what makes a key ring visible), numbered; computed by `build`.
    bound: Vec<ResourceName>,
    /// For each member, the numbers in `bound` of the resources where it holds such a
    /// binding: [`Snapshot::visible_key_rings`] starts from these instead of every ring.
    member_bound: Map<Member, Vec<u32>>,
}

/// Who a principal counts as, borrowed from the snapshot's group index: no allocation beyond
/// one small vector (see [`Snapshot::effective_members`] for the definition it matches).
struct Membership<'a> {
    principal: &'a Principal,
    /// The group closures of the principal's member, its unix groups and `allAuthenticated`.
    groups: Vec<&'a [Member]>,
}

impl Membership<'_> {
    fn contains(&self, m: &Member) -> bool {
        if *m == self.principal.member {
            return true;
        }
        match m {
            Member::UnixGid(g) => self.principal.unix_gids.contains(g),
            Member::AllAuthenticated => self.principal.is_authenticated(),
            Member::Group(_) => self.groups.iter().any(|gs| gs.contains(m)),
            _ => false,
        }
    }
}

/// Builds a [`Snapshot`]; the store feeds it in one read transaction.
#[derive(Debug, Default)]
pub struct SnapshotBuilder {
    snap: Snapshot,
    /// Role names, each allocated once however many bindings name it.
    role_names: Map<String, Arc<str>>,
}

impl SnapshotBuilder {
    /// A builder that already knows every predefined role.
    pub fn new() -> SnapshotBuilder {
        let mut snap = Snapshot::default();
        for r in roles::predefined() {
            snap.roles.insert(r.name.to_string(), r.permissions);
        }
        SnapshotBuilder {
            snap,
            role_names: Map::default(),
        }
    }

    fn node(&mut self, name: ResourceName, parent: Option<ResourceName>) {
        if let Some(p) = &parent {
            self.snap
                .children
                .entry(p.clone())
                .or_default()
                .push(name.clone());
        }
        self.snap.parents.insert(name, parent);
    }

    /// Adds an organisation.
    pub fn organization(&mut self, id: &str) -> &mut Self {
        self.node(ResourceName::Organization(id.into()), None);
        self
    }

    /// Adds a folder under an organisation or folder.
    pub fn folder(&mut self, id: &str, parent: ResourceName) -> &mut Self {
        self.node(ResourceName::Folder(id.into()), Some(parent));
        self
    }

    /// Adds a project under an organisation or folder.
    pub fn project(&mut self, id: &str, parent: ResourceName) -> &mut Self {
        self.node(ResourceName::Project(id.into()), Some(parent));
        self
    }

    /// Adds a key ring (its parent is in its name).
    pub fn key_ring(&mut self, ring: KeyRingName) -> &mut Self {
        let parent = ResourceName::KeyRing(ring.clone()).parent_by_name();
        self.snap.ring_keys.entry(ring.clone()).or_default();
        self.node(ResourceName::KeyRing(ring), parent);
        self
    }

    /// Adds a crypto key.
    pub fn crypto_key(&mut self, key: CryptoKeyName) -> &mut Self {
        self.snap
            .ring_keys
            .entry(key.ring.clone())
            .or_default()
            .push(key.clone());
        self.node(
            ResourceName::CryptoKey(key.clone()),
            Some(ResourceName::KeyRing(key.ring)),
        );
        self
    }

    /// Adds a custom role.
    pub fn role(&mut self, name: &str, permissions: PermSet) -> &mut Self {
        self.snap.roles.insert(name.to_string(), permissions);
        self
    }

    /// Adds a binding.
    pub fn binding(&mut self, resource: ResourceName, role: &str, member: Member) -> &mut Self {
        let role = match self.role_names.get(role) {
            Some(r) => Arc::clone(r),
            None => {
                let r: Arc<str> = Arc::from(role);
                self.role_names.insert(role.to_owned(), Arc::clone(&r));
                r
            }
        };
        self.snap
            .bindings
            .entry(resource)
            .or_default()
            .push((role, member));
        self
    }

    /// Adds a member to a group (a group may contain groups).
    pub fn group_member(&mut self, group: &str, member: Member) -> &mut Self {
        self.snap
            .group_members
            .entry(group.to_string())
            .or_default()
            .insert(member.clone());
        self.snap
            .member_of
            .entry(member)
            .or_default()
            .push(group.to_string());
        self
    }

    /// Adds a group with no members yet.
    pub fn group(&mut self, group: &str) -> &mut Self {
        self.snap
            .group_members
            .entry(group.to_string())
            .or_default();
        self
    }

    /// The finished snapshot (computes the transitive group index).
    pub fn build(mut self) -> Snapshot {
        let member_of = &self.snap.member_of;
        let mut closure = Map::with_capacity_and_hasher(member_of.len(), Default::default());
        for (m, direct) in member_of {
            let mut seen: HashSet<&str> = HashSet::new();
            let mut out = Vec::new();
            let mut queue: VecDeque<&str> = direct.iter().map(String::as_str).collect();
            while let Some(g) = queue.pop_front() {
                if !seen.insert(g) {
                    continue;
                }
                let group = Member::Group(g.to_string());
                if let Some(up) = member_of.get(&group) {
                    queue.extend(up.iter().map(String::as_str));
                }
                out.push(group);
            }
            closure.insert(m.clone(), out);
        }
        self.snap.group_closure = closure;
        let snap = &mut self.snap;
        let visible = PermSet::kms_resource();
        // Role names are shared (`role_names`): one lookup per distinct role, by pointer.
        let mut grants_cache: Vec<(*const u8, bool)> = Vec::new();
        for (res, list) in &snap.bindings {
            let mut number = None;
            for (role, member) in list {
                let ptr = role.as_ptr();
                let grants = match grants_cache.iter().find(|(p, _)| *p == ptr) {
                    Some((_, g)) => *g,
                    None => {
                        let g = snap
                            .roles
                            .get(&**role)
                            .is_some_and(|p| !p.intersect(visible).is_empty());
                        grants_cache.push((ptr, g));
                        g
                    }
                };
                if !grants {
                    continue;
                }
                let n = *number.get_or_insert_with(|| {
                    snap.bound.push(res.clone());
                    u32::try_from(snap.bound.len() - 1).unwrap_or(u32::MAX)
                });
                match snap.member_bound.get_mut(member) {
                    Some(v) => v.push(n),
                    None => {
                        snap.member_bound.insert(member.clone(), vec![n]);
                    }
                }
            }
        }
        for v in snap.member_bound.values_mut() {
            v.sort_unstable();
            v.dedup();
        }
        self.snap
    }
}

impl ResourceName {
    /// The parent as far as the name alone tells (key rings, keys, versions).
    fn parent_by_name(&self) -> Option<ResourceName> {
        use super::names::RingParent;
        match self {
            ResourceName::KeyRing(r) => Some(match &r.parent {
                RingParent::Project(p) => ResourceName::Project(p.clone()),
                RingParent::Organization(o) => ResourceName::Organization(o.clone()),
            }),
            ResourceName::CryptoKey(k) => Some(ResourceName::KeyRing(k.ring.clone())),
            ResourceName::Version(k, _) => Some(ResourceName::CryptoKey(k.clone())),
            _ => None,
        }
    }
}

impl Snapshot {
    /// True if the resource exists (a version: if its key exists).
    pub fn exists(&self, resource: &ResourceName) -> bool {
        match resource {
            ResourceName::Version(k, _) => self
                .parents
                .contains_key(&ResourceName::CryptoKey(k.clone())),
            r => self.parents.contains_key(r),
        }
    }

    /// The resource and its ancestors, nearest first; None if any link is missing.
    pub fn ancestors(&self, resource: &ResourceName) -> Option<Vec<ResourceName>> {
        let mut out = Vec::new();
        let mut cur = match resource {
            ResourceName::Version(k, _) => ResourceName::CryptoKey(k.clone()),
            r => r.clone(),
        };
        loop {
            if out.len() >= MAX_DEPTH {
                return None;
            }
            let parent = self.parents.get(&cur)?.clone();
            out.push(cur);
            match parent {
                Some(p) => cur = p,
                None => {
                    return matches!(out.last(), Some(ResourceName::Organization(_))).then_some(out)
                }
            }
        }
    }

    /// [`Snapshot::ancestors`] borrowed from the snapshot (no clones).
    fn chain<'a>(&'a self, resource: &ResourceName) -> Option<Vec<&'a ResourceName>> {
        let key;
        let start = match resource {
            ResourceName::Version(k, _) => {
                key = ResourceName::CryptoKey(k.clone());
                &key
            }
            r => r,
        };
        let (mut cur, mut parent) = self.parents.get_key_value(start)?;
        let mut out = Vec::with_capacity(8);
        loop {
            if out.len() >= MAX_DEPTH {
                return None;
            }
            out.push(cur);
            match parent {
                Some(p) => (cur, parent) = self.parents.get_key_value(p)?,
                None => return matches!(cur, ResourceName::Organization(_)).then_some(out),
            }
        }
    }

    fn membership<'a>(&'a self, principal: &'a Principal) -> Membership<'a> {
        let mut groups = Vec::new();
        let mut add = |m: &Member| {
            if let Some(gs) = self.group_closure.get(m) {
                groups.push(gs.as_slice());
            }
        };
        add(&principal.member);
        for g in &principal.unix_gids {
            add(&Member::UnixGid(*g));
        }
        if principal.is_authenticated() {
            add(&Member::AllAuthenticated);
        }
        Membership { principal, groups }
    }

    /// [`Snapshot::effective_permissions`] for a membership already looked up.
    fn permissions_of(&self, members: &Membership<'_>, resource: &ResourceName) -> PermSet {
        let Some(chain) = self.chain(resource) else {
            return PermSet::EMPTY;
        };
        let mut out = PermSet::EMPTY;
        for res in chain {
            for (role, member) in self.bindings.get(res).into_iter().flatten() {
                if members.contains(member) {
                    if let Some(p) = self.roles.get(&**role) {
                        out = out.union(*p);
                    }
                }
            }
        }
        out
    }

    /// The organisation a resource belongs to.
    pub fn organization_of(&self, resource: &ResourceName) -> Option<String> {
        match self.ancestors(resource)?.pop()? {
            ResourceName::Organization(o) => Some(o),
            _ => None,
        }
    }

    /// The permissions of a role, if it exists.
    pub fn role_permissions(&self, role: &str) -> Option<PermSet> {
        self.roles.get(role).copied()
    }

    /// Every member the principal counts as: itself, its unix groups, `allAuthenticated`
    /// unless anonymous, and every group containing any of those, transitively.
    pub fn effective_members(&self, principal: &Principal) -> HashSet<Member> {
        let mut set: HashSet<Member> = HashSet::new();
        let mut queue: VecDeque<Member> = VecDeque::new();
        queue.push_back(principal.member.clone());
        queue.extend(principal.unix_gids.iter().map(|g| Member::UnixGid(*g)));
        if principal.is_authenticated() {
            queue.push_back(Member::AllAuthenticated);
        }
        while let Some(m) = queue.pop_front() {
            if !set.insert(m.clone()) {
                continue;
            }
            if let Some(groups) = self.member_of.get(&m) {
                queue.extend(groups.iter().map(|g| Member::Group(g.clone())));
            }
        }
        set
    }

    fn granting_bindings<'a>(
        &'a self,
        members: &'a HashSet<Member>,
        chain: &'a [ResourceName],
    ) -> impl Iterator<Item = (Binding, PermSet)> + 'a {
        chain.iter().flat_map(move |res| {
            self.bindings
                .get(res)
                .into_iter()
                .flatten()
                .filter_map(move |(role, member)| {
                    if !members.contains(member) {
                        return None;
                    }
                    let perms = self.roles.get(&**role)?;
                    Some((
                        Binding {
                            resource: res.clone(),
                            role: role.to_string(),
                            member: member.clone(),
                        },
                        *perms,
                    ))
                })
        })
    }

    /// Everything the principal holds on the resource (empty if the resource is unknown).
    pub fn effective_permissions(&self, principal: &Principal, resource: &ResourceName) -> PermSet {
        self.permissions_of(&self.membership(principal), resource)
    }

    /// Does the principal hold `permission` on `resource`? Names the nearest granting binding.
    pub fn authorize(
        &self,
        principal: &Principal,
        permission: Permission,
        resource: &ResourceName,
    ) -> Decision {
        let Some(chain) = self.chain(resource) else {
            return Decision::deny(format!("{resource} does not exist"));
        };
        let members = self.membership(principal);
        for res in chain {
            for (role, member) in self.bindings.get(res).into_iter().flatten() {
                if members.contains(member)
                    && self
                        .roles
                        .get(&**role)
                        .is_some_and(|p| p.contains(permission))
                {
                    return Decision {
                        allowed: true,
                        granted_by: Some(Binding {
                            resource: res.clone(),
                            role: role.to_string(),
                            member: member.clone(),
                        }),
                        reason: None,
                    };
                }
            }
        }
        Decision::deny(format!(
            "{} does not hold {permission} on {resource}",
            principal.member
        ))
    }

    /// [`Snapshot::authorize`] with a permission given by name: an unknown name is a deny.
    pub fn authorize_named(
        &self,
        principal: &Principal,
        permission: &str,
        resource: &ResourceName,
    ) -> Decision {
        match permission.parse::<Permission>() {
            Ok(p) => self.authorize(principal, p, resource),
            Err(e) => Decision::deny(e.to_string()),
        }
    }

    /// Every permission the principal holds on the resource, with the bindings granting it.
    pub fn explain(&self, principal: &Principal, resource: &ResourceName) -> Vec<Grant> {
        let Some(chain) = self.ancestors(resource) else {
            return Vec::new();
        };
        let members = self.effective_members(principal);
        let mut out: BTreeMap<Permission, Vec<Binding>> = BTreeMap::new();
        for (b, perms) in self.granting_bindings(&members, &chain) {
            for p in perms.iter() {
                out.entry(p).or_default().push(b.clone());
            }
        }
        out.into_iter()
            .map(|(permission, bindings)| Grant {
                permission,
                bindings,
            })
            .collect()
    }

    /// Does the principal see this key (design §4): any `kms.*` resource permission on it,
    /// direct or inherited (which covers `kms.cryptoKeys.list` on its ring).
    pub fn sees_key(&self, principal: &Principal, key: &CryptoKeyName) -> bool {
        self.sees_key_as(&self.membership(principal), key)
    }

    fn sees_key_as(&self, members: &Membership<'_>, key: &CryptoKeyName) -> bool {
        !self
            .permissions_of(members, &ResourceName::CryptoKey(key.clone()))
            .intersect(PermSet::kms_resource())
            .is_empty()
    }

    fn sees_key_ring_as(&self, members: &Membership<'_>, ring: &KeyRingName) -> bool {
        let on_ring = self.permissions_of(members, &ResourceName::KeyRing(ring.clone()));
        if !on_ring.intersect(PermSet::kms_resource()).is_empty() {
            return true;
        }
        self.ring_keys
            .get(ring)
            .is_some_and(|keys| keys.iter().any(|k| self.sees_key_as(members, k)))
    }

    /// Does the principal see this key ring's token: a `kms.*` permission on the ring or any
    /// visible key in it.
    pub fn sees_key_ring(&self, principal: &Principal, ring: &KeyRingName) -> bool {
        self.sees_key_ring_as(&self.membership(principal), ring)
    }

    /// Every key ring whose token the principal sees, sorted by name.
    ///
    /// A ring is visible only through a binding (of a role with a `kms.*` permission, to one
    /// of the principal's members) on the ring, a key in it or an ancestor: the candidates
    /// come from those bindings (`member_bound`), and each is then checked with the same
    /// rule as [`Snapshot::sees_key_ring`].
    pub fn visible_key_rings(&self, principal: &Principal) -> Vec<KeyRingName> {
        let members = self.membership(principal);
        let mut own: Vec<&Member> = vec![&principal.member];
        let gids: Vec<Member> = principal
            .unix_gids
            .iter()
            .map(|g| Member::UnixGid(*g))
            .collect();
        own.extend(gids.iter());
        if principal.is_authenticated() {
            own.push(&Member::AllAuthenticated);
        }
        let mut candidates: BTreeSet<&KeyRingName> = BTreeSet::new();
        let mut below: Vec<&ResourceName> = Vec::new();
        let every = own
            .into_iter()
            .chain(members.groups.iter().flat_map(|gs| gs.iter()));
        for m in every {
            for n in self.member_bound.get(m).into_iter().flatten() {
                let Some(res) = self.bound.get(*n as usize) else {
                    continue;
                };
                match res {
                    ResourceName::CryptoKey(k) => {
                        candidates.insert(&k.ring);
                    }
                    ResourceName::KeyRing(r) => {
                        candidates.insert(r);
                    }
                    ResourceName::Version(k, _) => {
                        candidates.insert(&k.ring);
                    }
                    other => below.push(other),
                }
            }
        }
        // Bindings above rings: every ring under them (each node once).
        let mut seen: HashSet<&ResourceName> = HashSet::new();
        while let Some(node) = below.pop() {
            if !seen.insert(node) {
                continue;
            }
            for child in self.children.get(node).into_iter().flatten() {
                match child {
                    ResourceName::KeyRing(r) => {
                        candidates.insert(r);
                    }
                    ResourceName::Organization(_)
                    | ResourceName::Folder(_)
                    | ResourceName::Project(_) => below.push(child),
                    _ => {}
                }
            }
        }
        candidates
            .into_iter()
            .filter(|r| self.ring_keys.contains_key(*r) && self.sees_key_ring_as(&members, r))
            .cloned()
            .collect()
    }

    /// The keys of a ring the principal sees, sorted by name.
    pub fn visible_keys(&self, principal: &Principal, ring: &KeyRingName) -> Vec<CryptoKeyName> {
        let members = self.membership(principal);
        let mut keys: Vec<CryptoKeyName> = self
            .ring_keys
            .get(ring)
            .into_iter()
            .flatten()
            .filter(|k| self.sees_key_as(&members, k))
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    /// Every principal-like member holding `permission` on `resource`, through inheritance
    /// and (nested) groups: "who can decrypt with this key?". Each member is listed once, with
    /// the nearest binding that grants it.
    pub fn who_can(&self, resource: &ResourceName, permission: Permission) -> Vec<Grantee> {
        let Some(chain) = self.ancestors(resource) else {
            return Vec::new();
        };
        let mut found: BTreeMap<Member, Grantee> = BTreeMap::new();
        for res in &chain {
            for (role, member) in self.bindings.get(res).into_iter().flatten() {
                if !self
                    .roles
                    .get(&**role)
                    .is_some_and(|p| p.contains(permission))
                {
                    continue;
                }
                let binding = Binding {
                    resource: res.clone(),
                    role: role.to_string(),
                    member: member.clone(),
                };
                // Breadth-first through nested groups; `seen` stops cycles.
                let mut queue: VecDeque<(Member, Vec<String>)> =
                    VecDeque::from([(member.clone(), Vec::new())]);
                let mut seen: HashSet<String> = HashSet::new();
                while let Some((m, path)) = queue.pop_front() {
                    match &m {
                        Member::Group(g) => {
                            if !seen.insert(g.clone()) {
                                continue;
                            }
                            let mut inner = path.clone();
                            inner.push(g.clone());
                            for sub in self.group_members.get(g).into_iter().flatten() {
                                queue.push_back((sub.clone(), inner.clone()));
                            }
                        }
                        _ => {
                            found.entry(m.clone()).or_insert_with(|| Grantee {
                                member: m.clone(),
                                binding: binding.clone(),
                                via_groups: path,
                            });
                        }
                    }
                }
            }
        }
        found.into_values().collect()
    }

    /// Separation of duties (design §3): the keys at or below `resource` (or `resource`
    /// itself, for keys created there later) on which `member`, counted as a principal, holds
    /// both a key-administration and a key-use permission.
    pub fn sod_conflicts(&self, member: &Member, resource: &ResourceName) -> Vec<ResourceName> {
        let principal = Principal::new(member.clone());
        let admin = roles::key_admin_permissions();
        let usage = roles::key_use_permissions();
        let conflicted = |r: &ResourceName| {
            let eff = self.effective_permissions(&principal, r);
            !eff.intersect(admin).is_empty() && !eff.intersect(usage).is_empty()
        };
        let mut out = Vec::new();
        let mut stack = vec![resource.clone()];
        while let Some(r) = stack.pop() {
            if conflicted(&r) {
                out.push(r.clone());
            }
            if let Some(kids) = self.children.get(&r) {
                stack.extend(kids.iter().cloned());
            }
        }
        out.sort();
        out
    }

    /// The bindings attached directly to a resource.
    pub fn bindings_on(&self, resource: &ResourceName) -> Vec<Binding> {
        self.bindings
            .get(resource)
            .into_iter()
            .flatten()
            .map(|(role, member)| Binding {
                resource: resource.clone(),
                role: role.to_string(),
                member: member.clone(),
            })
            .collect()
    }

    /// The direct members of a group.
    pub fn group_members(&self, group: &str) -> Option<&BTreeSet<Member>> {
        self.group_members.get(group)
    }
}
