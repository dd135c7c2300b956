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

/// One side of a separation-of-duties violation: a permission and the binding granting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SodCause {
    /// The permission.
    pub permission: Permission,
    /// The binding that grants it.
    pub binding: Binding,
    /// When the binding names a group: the groups from it down to the member (outermost
    /// first).
    pub via_groups: Vec<String>,
}

/// One answer of [`Snapshot::sod_violations`]: `member` both administers and uses the keys
/// at `resource` (and below it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SodViolation {
    /// Who.
    pub member: Member,
    /// Where (the topmost resource; everything below inherits it).
    pub resource: ResourceName,
    /// The key-administration permissions held, with their bindings.
    pub administration: Vec<SodCause>,
    /// The key-use permissions held, with their bindings.
    pub usage: Vec<SodCause>,
}

/// "No resource" in the snapshot's id-indexed vectors (a node without a parent).
const NONE: u32 = u32::MAX;
/// `Snapshot::flags`: the resource is a node of the hierarchy (added by the builder).
const NODE: u8 = 1;
/// `Snapshot::flags`: the resource is a key ring with a (maybe empty) list of keys.
const RING: u8 = 2;

/// An id for the `n`-th interned name (the snapshot cannot hold 2^32 names: the memory for
/// them runs out long before).
fn next_id(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(NONE)
}

/// Writes a string of a name key: its length (one byte below 255, else 255 and eight
/// bytes), then its bytes.
fn key_str(buf: &mut Vec<u8>, s: &str) {
    match u8::try_from(s.len()) {
        Ok(n) if n < u8::MAX => buf.push(n),
        _ => {
            buf.push(u8::MAX);
            buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
        }
    }
    buf.extend_from_slice(s.as_bytes());
}

/// The key of a member in `Snapshot::member_ids` (a tag, then the name or number).
fn member_key(buf: &mut Vec<u8>, member: &Member) {
    buf.clear();
    match member {
        Member::User(u) => {
            buf.push(0);
            key_str(buf, u);
        }
        Member::ServiceAccount(s) => {
            buf.push(1);
            key_str(buf, s);
        }
        Member::Group(g) => {
            buf.push(2);
            key_str(buf, g);
        }
        Member::UnixUid(u) => {
            buf.push(3);
            buf.extend_from_slice(&u.to_le_bytes());
        }
        Member::UnixGid(g) => {
            buf.push(4);
            buf.extend_from_slice(&g.to_le_bytes());
        }
        Member::AllAuthenticated => buf.push(5),
        Member::Anonymous => buf.push(6),
    }
}

/// How many bytes of a key [`NameKey`] keeps inline.
const INLINE: usize = 30;

/// A name's key as the snapshot's indexes store it: short keys (nearly all) inline, so a
/// lookup reads the table's slot and no other memory.
#[derive(Debug, Clone)]
enum NameKey {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl NameKey {
    fn new(key: &[u8]) -> NameKey {
        match u8::try_from(key.len()) {
            Ok(len) if key.len() <= INLINE => {
                let mut bytes = [0; INLINE];
                bytes[..key.len()].copy_from_slice(key);
                NameKey::Inline { len, bytes }
            }
            _ => NameKey::Heap(key.into()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            NameKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            NameKey::Heap(b) => b,
        }
    }
}

impl PartialEq for NameKey {
    fn eq(&self, other: &NameKey) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for NameKey {}

impl std::hash::Hash for NameKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl std::borrow::Borrow<[u8]> for NameKey {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

fn key_ring_body(buf: &mut Vec<u8>, ring: &KeyRingName) {
    use super::names::RingParent;
    match &ring.parent {
        RingParent::Project(p) => {
            buf.push(0);
            key_str(buf, p);
        }
        RingParent::Organization(o) => {
            buf.push(1);
            key_str(buf, o);
        }
    }
    key_str(buf, &ring.id);
}

/// The key of a key ring's name in `Snapshot::ids` (as [`name_key`] writes it).
fn ring_key(buf: &mut Vec<u8>, ring: &KeyRingName) {
    buf.clear();
    buf.push(3);
    key_ring_body(buf, ring);
}

/// The key of a crypto key's name in `Snapshot::ids` (as [`name_key`] writes it).
fn crypto_key_key(buf: &mut Vec<u8>, key: &CryptoKeyName) {
    buf.clear();
    buf.push(4);
    key_ring_body(buf, &key.ring);
    key_str(buf, &key.id);
}

/// The key of a resource name in `Snapshot::ids`: the name as one byte string (a tag per
/// kind, then each part with its length, so distinct names have distinct keys). Looking a
/// name up hashes and compares one contiguous string instead of following several heap
/// strings, which is what a build of a million bindings waits on.
fn name_key(buf: &mut Vec<u8>, name: &ResourceName) {
    buf.clear();
    match name {
        ResourceName::Organization(o) => {
            buf.push(0);
            key_str(buf, o);
        }
        ResourceName::Folder(f) => {
            buf.push(1);
            key_str(buf, f);
        }
        ResourceName::Project(p) => {
            buf.push(2);
            key_str(buf, p);
        }
        ResourceName::KeyRing(r) => ring_key(buf, r),
        ResourceName::CryptoKey(k) => crypto_key_key(buf, k),
        ResourceName::Version(k, v) => {
            crypto_key_key(buf, k);
            buf[0] = 5;
            buf.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// An immutable view of the hierarchy, roles, groups and bindings.
///
/// Names are interned when the snapshot is built: every resource name the builder saw gets a
/// `u32` id (`names` / `ids`), every member one too (`members` / `member_ids`), every role
/// name a small id with its permissions resolved by [`SnapshotBuilder::build`] (an unknown
/// role grants nothing). The hierarchy, the bindings and the indexes are vectors indexed by
/// those ids, so a decision hashes the names it is given once and then follows integers.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every resource name the builder saw (nodes, parents, bound resources), by id.
    names: Vec<ResourceName>,
    /// The id of each name in `names`, by its key ([`name_key`]).
    ids: Map<NameKey, u32>,
    /// `NODE` / `RING` per resource id.
    flags: Vec<u8>,
    /// The parent of each node (`NONE` for none), by resource id.
    parent: Vec<u32>,
    /// Children of each node, for walking down, by resource id.
    children: Vec<Vec<u32>>,
    /// Keys of each key ring (resource ids), by the ring's resource id.
    ring_keys: Vec<Vec<u32>>,
    /// The bindings of resource `i` are `binds[bind_start[i]..bind_start[i + 1]]`.
    bind_start: Vec<usize>,
    /// Every binding as (role id, member id), grouped by resource, in the order added.
    binds: Vec<(u32, u32)>,
    /// Every role (predefined and custom) by name.
    roles: Map<String, PermSet>,
    /// The role names bindings use, by role id.
    role_names: Vec<Arc<str>>,
    /// The permissions of each role id (empty for an unknown role: fail closed).
    role_perms: Vec<PermSet>,
    /// Every member named by a binding or a group membership, by id.
    members: Vec<Member>,
    /// The id of each member in `members`, by its key ([`member_key`]).
    member_ids: Map<NameKey, u32>,
    /// Direct members of each group.
    group_members: Map<String, BTreeSet<Member>>,
    /// The groups each member is directly in.
    member_of: Map<Member, Vec<String>>,
    /// Every group (member id) each member is in, directly or through nested groups, by
    /// member id; computed once by [`SnapshotBuilder::build`].
    group_closure: Vec<Vec<u32>>,
    /// Every resource (id) that has at least one binding of a role with a `kms.*` resource
    /// permission (what makes a key ring visible), numbered; computed by `build`.
    bound: Vec<u32>,
    /// For each member id, the numbers in `bound` of the resources where it holds such a
    /// binding: [`Snapshot::visible_key_rings`] starts from these instead of every ring.
    member_bound: Vec<Vec<u32>>,
}

/// Who a principal counts as, as member ids: its own member, its unix groups,
/// `allAuthenticated` unless anonymous, and the group closures of those (see
/// [`Snapshot::effective_members`] for the definition it matches). Members no binding or
/// group names have no id and cannot match anything.
struct Membership {
    ids: Vec<u32>,
}

impl Membership {
    fn contains(&self, member: u32) -> bool {
        self.ids.contains(&member)
    }
}

/// Builds a [`Snapshot`]; the store feeds it in one read transaction.
#[derive(Debug, Default)]
pub struct SnapshotBuilder {
    snap: Snapshot,
    /// Role name to role id.
    role_ids: Map<String, u32>,
    /// The bindings added, as (resource id, role id, member id); grouped by resource in
    /// `build`.
    pending: Vec<(u32, u32, u32)>,
    /// Room for a name's key while looking it up.
    scratch: Vec<u8>,
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
            ..SnapshotBuilder::default()
        }
    }

    /// The id of a resource name, interning it if new.
    fn resource_id(&mut self, name: ResourceName) -> u32 {
        let mut buf = std::mem::take(&mut self.scratch);
        name_key(&mut buf, &name);
        let id = self.intern_key(&buf, || name);
        self.scratch = buf;
        id
    }

    /// The id of the name whose key is `key`, interning `name()` if new.
    fn intern_key(&mut self, key: &[u8], name: impl FnOnce() -> ResourceName) -> u32 {
        let s = &mut self.snap;
        if let Some(id) = s.ids.get(key) {
            return *id;
        }
        let id = next_id(s.names.len());
        s.ids.insert(NameKey::new(key), id);
        s.names.push(name());
        s.flags.push(0);
        s.parent.push(NONE);
        s.children.push(Vec::new());
        s.ring_keys.push(Vec::new());
        id
    }

    /// The id of a member, interning it if new.
    fn member_id(&mut self, member: Member) -> u32 {
        let mut buf = std::mem::take(&mut self.scratch);
        member_key(&mut buf, &member);
        let s = &mut self.snap;
        let id = match s.member_ids.get(&buf[..]) {
            Some(id) => *id,
            None => {
                let id = next_id(s.members.len());
                s.member_ids.insert(NameKey::new(&buf), id);
                s.members.push(member);
                id
            }
        };
        self.scratch = buf;
        id
    }

    /// The id of a role name, interning it if new.
    fn role_id(&mut self, role: &str) -> u32 {
        if let Some(id) = self.role_ids.get(role) {
            return *id;
        }
        let id = next_id(self.snap.role_names.len());
        self.snap.role_names.push(Arc::from(role));
        self.role_ids.insert(role.to_owned(), id);
        id
    }

    fn node_id(&mut self, id: u32, parent: Option<u32>) {
        let s = &mut self.snap;
        let i = id as usize;
        s.flags[i] |= NODE;
        s.parent[i] = parent.unwrap_or(NONE);
        if let Some(p) = parent {
            s.children[p as usize].push(id);
        }
    }

    fn node(&mut self, name: ResourceName, parent: Option<ResourceName>) {
        let parent = parent.map(|p| self.resource_id(p));
        let id = self.resource_id(name);
        self.node_id(id, parent);
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
        let name = ResourceName::KeyRing(ring);
        let parent = name.parent_by_name().map(|p| self.resource_id(p));
        let id = self.resource_id(name);
        self.snap.flags[id as usize] |= RING;
        self.node_id(id, parent);
        self
    }

    /// Adds a crypto key.
    pub fn crypto_key(&mut self, key: CryptoKeyName) -> &mut Self {
        let mut buf = std::mem::take(&mut self.scratch);
        ring_key(&mut buf, &key.ring);
        let ring = self.intern_key(&buf, || ResourceName::KeyRing(key.ring.clone()));
        crypto_key_key(&mut buf, &key);
        let id = self.intern_key(&buf, || ResourceName::CryptoKey(key));
        self.scratch = buf;
        let s = &mut self.snap;
        s.flags[ring as usize] |= RING;
        s.ring_keys[ring as usize].push(id);
        self.node_id(id, Some(ring));
        self
    }

    /// Adds a custom role.
    pub fn role(&mut self, name: &str, permissions: PermSet) -> &mut Self {
        self.snap.roles.insert(name.to_string(), permissions);
        self
    }

    /// Adds a binding.
    pub fn binding(&mut self, resource: ResourceName, role: &str, member: Member) -> &mut Self {
        let resource = self.resource_id(resource);
        let role = self.role_id(role);
        let member = self.member_id(member);
        self.pending.push((resource, role, member));
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

    /// The finished snapshot: resolves the roles, groups the bindings by resource and
    /// computes the transitive group index and the visibility index.
    pub fn build(mut self) -> Snapshot {
        // Roles: resolved once; an unknown role grants nothing.
        let role_perms: Vec<PermSet> = self
            .snap
            .role_names
            .iter()
            .map(|r| self.snap.roles.get(&**r).copied().unwrap_or(PermSet::EMPTY))
            .collect();
        self.snap.role_perms = role_perms;

        // Bindings grouped by resource (a stable counting sort: each resource keeps the
        // order its bindings were added in).
        let n = self.snap.names.len();
        let mut start = vec![0usize; n + 1];
        for &(r, _, _) in &self.pending {
            start[r as usize + 1] += 1;
        }
        for i in 0..n {
            start[i + 1] += start[i];
        }
        let mut next = start.clone();
        let mut binds = vec![(0u32, 0u32); self.pending.len()];
        for &(r, role, member) in &self.pending {
            let at = &mut next[r as usize];
            binds[*at] = (role, member);
            *at += 1;
        }
        self.pending = Vec::new();
        self.snap.bind_start = start;
        self.snap.binds = binds;

        // The transitive group index.
        let member_of = std::mem::take(&mut self.snap.member_of);
        let mut closures: Vec<(u32, Vec<u32>)> = Vec::with_capacity(member_of.len());
        for (m, direct) in &member_of {
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
                out.push(self.member_id(group));
            }
            closures.push((self.member_id(m.clone()), out));
        }
        self.snap.member_of = member_of;
        let n_members = self.snap.members.len();
        let mut group_closure = vec![Vec::new(); n_members];
        for (m, out) in closures {
            group_closure[m as usize] = out;
        }
        self.snap.group_closure = group_closure;

        // The visibility index.
        let snap = &mut self.snap;
        let visible = PermSet::kms_resource();
        let grants: Vec<bool> = snap
            .role_perms
            .iter()
            .map(|p| !p.intersect(visible).is_empty())
            .collect();
        let mut member_bound: Vec<Vec<u32>> = vec![Vec::new(); n_members];
        for res in 0..n {
            let mut number = None;
            for &(role, member) in &snap.binds[snap.bind_start[res]..snap.bind_start[res + 1]] {
                if !grants[role as usize] {
                    continue;
                }
                let k = *number.get_or_insert_with(|| {
                    snap.bound.push(next_id(res));
                    next_id(snap.bound.len() - 1)
                });
                member_bound[member as usize].push(k);
            }
        }
        for v in &mut member_bound {
            v.sort_unstable();
            v.dedup();
        }
        snap.member_bound = member_bound;
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
    /// The id of a resource name exactly as given.
    fn id(&self, resource: &ResourceName) -> Option<u32> {
        let mut buf = Vec::with_capacity(64);
        name_key(&mut buf, resource);
        self.ids.get(&buf[..]).copied()
    }

    fn key_id(&self, key: &CryptoKeyName) -> Option<u32> {
        let mut buf = Vec::with_capacity(64);
        crypto_key_key(&mut buf, key);
        self.ids.get(&buf[..]).copied()
    }

    fn ring_id(&self, ring: &KeyRingName) -> Option<u32> {
        let mut buf = Vec::with_capacity(48);
        ring_key(&mut buf, ring);
        self.ids.get(&buf[..]).copied()
    }

    /// The id decisions start from: a version's key, otherwise the resource itself.
    fn start_id(&self, resource: &ResourceName) -> Option<u32> {
        match resource {
            ResourceName::Version(k, _) => self.key_id(k),
            r => self.id(r),
        }
    }

    fn has_flag(&self, id: u32, flag: u8) -> bool {
        self.flags.get(id as usize).is_some_and(|f| f & flag != 0)
    }

    /// The bindings attached to a resource id, as (role id, member id).
    fn binds_of(&self, id: u32) -> &[(u32, u32)] {
        let i = id as usize;
        match (self.bind_start.get(i), self.bind_start.get(i + 1)) {
            (Some(&a), Some(&b)) => self.binds.get(a..b).unwrap_or(&[]),
            _ => &[],
        }
    }

    fn role_perms_of(&self, role: u32) -> PermSet {
        self.role_perms
            .get(role as usize)
            .copied()
            .unwrap_or(PermSet::EMPTY)
    }

    /// The owned [`Binding`] for ids.
    fn binding_at(&self, resource: u32, role: u32, member: u32) -> Binding {
        Binding {
            resource: self.names[resource as usize].clone(),
            role: self.role_names[role as usize].to_string(),
            member: self.members[member as usize].clone(),
        }
    }

    /// The node and its ancestors (ids), nearest first; None if the start is not a node, a
    /// link is missing or the chain does not end at an organisation.
    fn chain(&self, start: u32) -> Option<Vec<u32>> {
        if !self.has_flag(start, NODE) {
            return None;
        }
        let mut out = Vec::with_capacity(8);
        let mut cur = start;
        loop {
            if out.len() >= MAX_DEPTH {
                return None;
            }
            out.push(cur);
            let parent = *self.parent.get(cur as usize)?;
            if parent == NONE {
                let top = self.names.get(cur as usize)?;
                return matches!(top, ResourceName::Organization(_)).then_some(out);
            }
            if !self.has_flag(parent, NODE) {
                return None;
            }
            cur = parent;
        }
    }

    /// [`Snapshot::chain`] of a resource by name (a version: its key's).
    fn chain_of(&self, resource: &ResourceName) -> Option<Vec<u32>> {
        self.chain(self.start_id(resource)?)
    }

    /// True if the resource exists (a version: if its key exists).
    pub fn exists(&self, resource: &ResourceName) -> bool {
        self.start_id(resource)
            .is_some_and(|id| self.has_flag(id, NODE))
    }

    /// The resource and its ancestors, nearest first; None if any link is missing.
    pub fn ancestors(&self, resource: &ResourceName) -> Option<Vec<ResourceName>> {
        let chain = self.chain_of(resource)?;
        Some(
            chain
                .into_iter()
                .map(|id| self.names[id as usize].clone())
                .collect(),
        )
    }

    fn membership(&self, principal: &Principal) -> Membership {
        let mut ids = Vec::with_capacity(8);
        let mut buf = Vec::with_capacity(48);
        let mut add = |m: &Member| {
            member_key(&mut buf, m);
            if let Some(&id) = self.member_ids.get(&buf[..]) {
                ids.push(id);
                if let Some(gs) = self.group_closure.get(id as usize) {
                    ids.extend_from_slice(gs);
                }
            }
        };
        add(&principal.member);
        for g in &principal.unix_gids {
            add(&Member::UnixGid(*g));
        }
        if principal.is_authenticated() {
            add(&Member::AllAuthenticated);
        }
        Membership { ids }
    }

    /// Everything a membership holds on a resource id (empty if its chain is broken).
    fn permissions_at(&self, members: &Membership, start: u32) -> PermSet {
        let Some(chain) = self.chain(start) else {
            return PermSet::EMPTY;
        };
        let mut out = PermSet::EMPTY;
        for res in chain {
            for &(role, member) in self.binds_of(res) {
                if members.contains(member) {
                    out = out.union(self.role_perms_of(role));
                }
            }
        }
        out
    }

    /// The organisation a resource belongs to.
    pub fn organization_of(&self, resource: &ResourceName) -> Option<String> {
        let top = *self.chain_of(resource)?.last()?;
        match self.names.get(top as usize)? {
            ResourceName::Organization(o) => Some(o.clone()),
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

    /// Everything the principal holds on the resource (empty if the resource is unknown).
    pub fn effective_permissions(&self, principal: &Principal, resource: &ResourceName) -> PermSet {
        match self.start_id(resource) {
            Some(id) => self.permissions_at(&self.membership(principal), id),
            None => PermSet::EMPTY,
        }
    }

    /// Does the principal hold `permission` on `resource`? Names the nearest granting binding.
    pub fn authorize(
        &self,
        principal: &Principal,
        permission: Permission,
        resource: &ResourceName,
    ) -> Decision {
        let Some(chain) = self.chain_of(resource) else {
            return Decision::deny(format!("{resource} does not exist"));
        };
        let members = self.membership(principal);
        for res in chain {
            for &(role, member) in self.binds_of(res) {
                if members.contains(member) && self.role_perms_of(role).contains(permission) {
                    return Decision {
                        allowed: true,
                        granted_by: Some(self.binding_at(res, role, member)),
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
        let Some(chain) = self.chain_of(resource) else {
            return Vec::new();
        };
        let members = self.effective_members(principal);
        let mut out: BTreeMap<Permission, Vec<Binding>> = BTreeMap::new();
        for res in chain {
            for &(role, member) in self.binds_of(res) {
                if !members.contains(&self.members[member as usize]) {
                    continue;
                }
                let perms = self.role_perms_of(role);
                if perms.is_empty() {
                    continue;
                }
                let b = self.binding_at(res, role, member);
                for p in perms.iter() {
                    out.entry(p).or_default().push(b.clone());
                }
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
    ///
    /// An absent key is never seen, but it costs what an invisible one does (design §9: the
    /// answer and its work are the same): the membership, then the same walk from its ring.
    pub fn sees_key(&self, principal: &Principal, key: &CryptoKeyName) -> bool {
        let members = self.membership(principal);
        match self.key_id(key).filter(|id| self.has_flag(*id, NODE)) {
            Some(id) => self.sees_key_at(&members, id),
            None => {
                if let Some(ring) = self.ring_id(&key.ring) {
                    std::hint::black_box(self.sees_key_at(&members, ring));
                }
                false
            }
        }
    }

    fn sees_key_at(&self, members: &Membership, key: u32) -> bool {
        !self
            .permissions_at(members, key)
            .intersect(PermSet::kms_resource())
            .is_empty()
    }

    fn sees_key_ring_at(&self, members: &Membership, ring: u32) -> bool {
        let on_ring = self.permissions_at(members, ring);
        if !on_ring.intersect(PermSet::kms_resource()).is_empty() {
            return true;
        }
        self.ring_keys
            .get(ring as usize)
            .is_some_and(|keys| keys.iter().any(|k| self.sees_key_at(members, *k)))
    }

    /// Does the principal see this key ring's token: a `kms.*` permission on the ring or any
    /// visible key in it.
    pub fn sees_key_ring(&self, principal: &Principal, ring: &KeyRingName) -> bool {
        self.ring_id(ring)
            .is_some_and(|id| self.sees_key_ring_at(&self.membership(principal), id))
    }

    /// The id of a key's ring: the key node's parent, else looked up by name.
    fn ring_of(&self, key_id: Option<u32>, key: &CryptoKeyName) -> Option<u32> {
        if let Some(p) = key_id
            .filter(|k| self.has_flag(*k, NODE))
            .and_then(|k| self.parent.get(k as usize).copied())
        {
            if matches!(self.names.get(p as usize), Some(ResourceName::KeyRing(r)) if *r == key.ring)
            {
                return Some(p);
            }
        }
        self.ring_id(&key.ring)
    }

    /// Every key ring whose token the principal sees, sorted by name.
    ///
    /// A ring is visible only through a binding (of a role with a `kms.*` permission, to one
    /// of the principal's members) on the ring, a key in it or an ancestor: the candidates
    /// come from those bindings (`member_bound`), and each is then checked with the same
    /// rule as [`Snapshot::sees_key_ring`].
    pub fn visible_key_rings(&self, principal: &Principal) -> Vec<KeyRingName> {
        let members = self.membership(principal);
        let mut candidates: BTreeMap<&KeyRingName, Option<u32>> = BTreeMap::new();
        let mut below: Vec<u32> = Vec::new();
        for &m in &members.ids {
            for n in self.member_bound.get(m as usize).into_iter().flatten() {
                let Some(&res) = self.bound.get(*n as usize) else {
                    continue;
                };
                match self.names.get(res as usize) {
                    Some(ResourceName::CryptoKey(k)) => {
                        candidates
                            .entry(&k.ring)
                            .or_insert_with(|| self.ring_of(Some(res), k));
                    }
                    Some(ResourceName::KeyRing(r)) => {
                        candidates.insert(r, Some(res));
                    }
                    Some(ResourceName::Version(k, _)) => {
                        candidates
                            .entry(&k.ring)
                            .or_insert_with(|| self.ring_of(None, k));
                    }
                    Some(_) => below.push(res),
                    None => {}
                }
            }
        }
        // Bindings above rings: every ring under them (each node once).
        let mut seen: HashSet<u32> = HashSet::new();
        while let Some(node) = below.pop() {
            if !seen.insert(node) {
                continue;
            }
            for &child in self.children.get(node as usize).into_iter().flatten() {
                match self.names.get(child as usize) {
                    Some(ResourceName::KeyRing(r)) => {
                        candidates.insert(r, Some(child));
                    }
                    Some(
                        ResourceName::Organization(_)
                        | ResourceName::Folder(_)
                        | ResourceName::Project(_),
                    ) => below.push(child),
                    _ => {}
                }
            }
        }
        candidates
            .into_iter()
            .filter(|(_, id)| {
                id.is_some_and(|id| self.has_flag(id, RING) && self.sees_key_ring_at(&members, id))
            })
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// The keys of a ring the principal sees, sorted by name.
    pub fn visible_keys(&self, principal: &Principal, ring: &KeyRingName) -> Vec<CryptoKeyName> {
        let Some(ring) = self.ring_id(ring) else {
            return Vec::new();
        };
        let members = self.membership(principal);
        let mut keys: Vec<CryptoKeyName> = self
            .ring_keys
            .get(ring as usize)
            .into_iter()
            .flatten()
            .filter(|k| self.sees_key_at(&members, **k))
            .filter_map(|k| match self.names.get(*k as usize) {
                Some(ResourceName::CryptoKey(k)) => Some(k.clone()),
                _ => None,
            })
            .collect();
        keys.sort();
        keys
    }

    /// May the principal know whether `resource` exists (design §4, §9)? The one rule by which
    /// both sockets tell "does not exist" apart from "not permitted": where it is false, the
    /// answer for an absent resource must be the one for an existing resource it may not see.
    ///
    /// - An existing key (or version) or key ring: [`Snapshot::sees_key`] /
    ///   [`Snapshot::sees_key_ring`] (a `kms.*` permission on it or an ancestor, or
    ///   `cryptoKeys.list` on its ring; resourcemanager.*, iam.* and others do not count).
    /// - An existing organisation, folder or project: some permission on it (inherited
    ///   included) or a binding on something below it.
    /// - An absent resource: whether the principal would know it if it existed: for keys and
    ///   rings a `kms.*` permission on the nearest existing ancestor by name; for containers
    ///   (whose ids name no parent), and below an absent project, some permission (`kms.*`
    ///   for keys and rings) on every organisation.
    pub fn may_know(&self, principal: &Principal, resource: &ResourceName) -> bool {
        let members = self.membership(principal);
        let live = |r: &ResourceName| self.start_id(r).filter(|id| self.has_flag(*id, NODE));
        if let Some(id) = live(resource) {
            return match resource {
                ResourceName::CryptoKey(_) | ResourceName::Version(..) => {
                    self.sees_key_at(&members, id)
                }
                ResourceName::KeyRing(_) => self.sees_key_ring_at(&members, id),
                _ => {
                    !self.permissions_at(&members, id).is_empty() || self.bound_below(&members, id)
                }
            };
        }
        let kms_only = matches!(
            resource,
            ResourceName::KeyRing(_) | ResourceName::CryptoKey(_) | ResourceName::Version(..)
        );
        let grants = |id: u32| {
            let p = self.permissions_at(&members, id);
            if kms_only {
                !p.intersect(PermSet::kms_resource()).is_empty()
            } else {
                !p.is_empty()
            }
        };
        let mut cur = resource.parent_by_name();
        while let Some(r) = cur {
            if let Some(id) = live(&r) {
                return grants(id);
            }
            cur = r.parent_by_name();
        }
        let mut orgs = self
            .names
            .iter()
            .enumerate()
            .filter(|(i, n)| {
                matches!(n, ResourceName::Organization(_))
                    && u32::try_from(*i).is_ok_and(|i| self.has_flag(i, NODE))
            })
            .filter_map(|(i, _)| u32::try_from(i).ok())
            .peekable();
        orgs.peek().is_some() && orgs.all(grants)
    }

    /// Does one of `members` hold a binding (of a role granting something) on a node below
    /// `id`?
    fn bound_below(&self, members: &Membership, id: u32) -> bool {
        let mut stack: Vec<u32> = self.children.get(id as usize).cloned().unwrap_or_default();
        while let Some(n) = stack.pop() {
            if self
                .binds_of(n)
                .iter()
                .any(|&(role, m)| members.contains(m) && !self.role_perms_of(role).is_empty())
            {
                return true;
            }
            stack.extend(self.children.get(n as usize).into_iter().flatten());
        }
        false
    }

    /// Every principal-like member holding `permission` on `resource`, through inheritance
    /// and (nested) groups: "who can decrypt with this key?". Each member is listed once, with
    /// the nearest binding that grants it.
    pub fn who_can(&self, resource: &ResourceName, permission: Permission) -> Vec<Grantee> {
        let Some(chain) = self.chain_of(resource) else {
            return Vec::new();
        };
        let mut found: BTreeMap<Member, Grantee> = BTreeMap::new();
        for res in chain {
            for &(role, member) in self.binds_of(res) {
                if !self.role_perms_of(role).contains(permission) {
                    continue;
                }
                let binding = self.binding_at(res, role, member);
                let member = &self.members[member as usize];
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

    /// Separation of duties (design §3, issue 13): the topmost resources at or below `under`
    /// on which `principal` (its own member, its groups, nested, and `allAuthenticated`)
    /// holds both a key-administration and a key-use permission. Everything below a listed
    /// resource inherits the conflict (keys created there later too), so it is not listed
    /// again. Each answer names the bindings (and the groups they reach the principal
    /// through) that grant each side.
    pub fn sod_violations(&self, principal: &Principal, under: &ResourceName) -> Vec<SodViolation> {
        self.sod_violations_each(std::slice::from_ref(principal), under, true)
            .pop()
            .unwrap_or_default()
    }

    /// [`Snapshot::sod_violations`] for several principals, one list each (in order): the
    /// index of where each member is bound is built once. Without `causes` the answers name
    /// the resources only (their `administration` and `usage` are empty): a change's check
    /// needs no more.
    ///
    /// A topmost conflicting resource holds a binding for the principal (its parent, which
    /// has every permission inherited, does not conflict), so only the resources where its
    /// members are bound are looked at, not the whole tree.
    pub fn sod_violations_each(
        &self,
        principals: &[Principal],
        under: &ResourceName,
        causes: bool,
    ) -> Vec<Vec<SodViolation>> {
        let Some(start) = self.id(under).filter(|id| self.has_flag(*id, NODE)) else {
            return vec![Vec::new(); principals.len()];
        };
        let admin = roles::key_admin_permissions();
        let usage = roles::key_use_permissions();
        // Where each member id is bound: one pass over the bindings.
        let mut bound_at: Vec<Vec<u32>> = vec![Vec::new(); self.members.len()];
        for res in 0..self.names.len() {
            let id = next_id(res);
            for &(_, m) in self.binds_of(id) {
                if let Some(v) = bound_at.get_mut(m as usize) {
                    if v.last() != Some(&id) {
                        v.push(id);
                    }
                }
            }
        }
        principals
            .iter()
            .map(|principal| {
                let members = self.membership(principal);
                let conflict = |id: u32| {
                    let eff = self.permissions_at(&members, id);
                    !eff.intersect(admin).is_empty() && !eff.intersect(usage).is_empty()
                };
                let mut tops: BTreeSet<u32> = BTreeSet::new();
                if conflict(start) {
                    tops.insert(start);
                } else {
                    for &m in &members.ids {
                        for &n in bound_at.get(m as usize).into_iter().flatten() {
                            if tops.contains(&n) {
                                continue;
                            }
                            let below = self
                                .chain(n)
                                .is_some_and(|c| c.iter().skip(1).any(|a| *a == start));
                            if !below || !conflict(n) {
                                continue;
                            }
                            let parent = self.parent.get(n as usize).copied().unwrap_or(NONE);
                            if parent == NONE || !conflict(parent) {
                                tops.insert(n);
                            }
                        }
                    }
                }
                let mut out: Vec<SodViolation> = tops
                    .into_iter()
                    .map(|node| match causes {
                        true => self.sod_violation_at(principal, node),
                        false => SodViolation {
                            member: principal.member.clone(),
                            resource: self.names[node as usize].clone(),
                            administration: Vec::new(),
                            usage: Vec::new(),
                        },
                    })
                    .collect();
                out.sort_by(|a, b| a.resource.cmp(&b.resource));
                out
            })
            .collect()
    }

    /// The violation of `principal` at resource id `node`, with its causes.
    fn sod_violation_at(&self, principal: &Principal, node: u32) -> SodViolation {
        let admin = roles::key_admin_permissions();
        let usage = roles::key_use_permissions();
        let resource = self.names[node as usize].clone();
        let mut administration = Vec::new();
        let mut use_ = Vec::new();
        for g in self.explain(principal, &resource) {
            let side = if admin.contains(g.permission) {
                &mut administration
            } else if usage.contains(g.permission) {
                &mut use_
            } else {
                continue;
            };
            for b in g.bindings {
                let via_groups = match &b.member {
                    Member::Group(grp) => self.group_path(principal, grp),
                    _ => Vec::new(),
                };
                side.push(SodCause {
                    permission: g.permission,
                    binding: b,
                    via_groups,
                });
            }
        }
        SodViolation {
            member: principal.member.clone(),
            resource,
            administration,
            usage: use_,
        }
    }

    /// The groups from `group` down to the principal (outermost first, `group` included):
    /// how a binding of `group` reaches it. Empty if it does not.
    fn group_path(&self, principal: &Principal, group: &str) -> Vec<String> {
        let mut starts = vec![principal.member.clone()];
        starts.extend(principal.unix_gids.iter().map(|g| Member::UnixGid(*g)));
        if principal.is_authenticated() {
            starts.push(Member::AllAuthenticated);
        }
        // Breadth-first up through the groups each member is in; `from` leads back down.
        let mut from: HashMap<String, Option<String>> = HashMap::new();
        let mut queue: VecDeque<String> = VecDeque::new();
        for m in &starts {
            for g in self.member_of.get(m).into_iter().flatten() {
                if !from.contains_key(g) {
                    from.insert(g.clone(), None);
                    queue.push_back(g.clone());
                }
            }
        }
        while let Some(g) = queue.pop_front() {
            if g == group {
                let mut path = vec![g.clone()];
                let mut cur = g;
                while let Some(Some(down)) = from.get(&cur) {
                    path.push(down.clone());
                    cur = down.clone();
                }
                return path;
            }
            for up in self
                .member_of
                .get(&Member::Group(g.clone()))
                .into_iter()
                .flatten()
            {
                if !from.contains_key(up) {
                    from.insert(up.clone(), Some(g.clone()));
                    queue.push_back(up.clone());
                }
            }
        }
        Vec::new()
    }

    /// Every member a binding or group names, but `anonymous`, sorted: who a
    /// separation-of-duties report looks at (`allAuthenticated` and `unix-gid:` members
    /// stand for themselves: the store cannot tell who they cover).
    pub fn known_members(&self) -> Vec<Member> {
        let mut out: Vec<Member> = self
            .members
            .iter()
            .filter(|m| **m != Member::Anonymous)
            .cloned()
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The members whose effective permissions a grant to `member` changes: itself; for a
    /// group, every member inside it (nested groups too); for `allAuthenticated`, every
    /// member the snapshot knows.
    pub fn members_reached_by(&self, member: &Member) -> Vec<Member> {
        let mut out = BTreeSet::from([member.clone()]);
        match member {
            Member::AllAuthenticated => out.extend(self.known_members()),
            Member::Group(_) => {
                let mut queue = VecDeque::from([member.clone()]);
                let mut seen: HashSet<String> = HashSet::new();
                while let Some(m) = queue.pop_front() {
                    let Member::Group(g) = &m else { continue };
                    if !seen.insert(g.clone()) {
                        continue;
                    }
                    for sub in self.group_members.get(g).into_iter().flatten() {
                        out.insert(sub.clone());
                        queue.push_back(sub.clone());
                    }
                }
            }
            _ => {}
        }
        out.into_iter().collect()
    }

    /// Every binding of `role`, anywhere.
    pub fn bindings_with_role(&self, role: &str) -> Vec<Binding> {
        let mut out = Vec::new();
        for res in 0..self.names.len() {
            let id = next_id(res);
            for &(r, member) in self.binds_of(id) {
                if &*self.role_names[r as usize] == role {
                    out.push(self.binding_at(id, r, member));
                }
            }
        }
        out
    }

    /// The organisations, sorted.
    pub fn organizations(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .names
            .iter()
            .enumerate()
            .filter(|(i, _)| self.has_flag(next_id(*i), NODE))
            .filter_map(|(_, n)| match n {
                ResourceName::Organization(o) => Some(o.clone()),
                _ => None,
            })
            .collect();
        out.sort();
        out
    }

    /// The bindings attached directly to a resource.
    pub fn bindings_on(&self, resource: &ResourceName) -> Vec<Binding> {
        let Some(id) = self.id(resource) else {
            return Vec::new();
        };
        self.binds_of(id)
            .iter()
            .map(|&(role, member)| self.binding_at(id, role, member))
            .collect()
    }

    /// The direct members of a group.
    pub fn group_members(&self, group: &str) -> Option<&BTreeSet<Member>> {
        self.group_members.get(group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::names::RingParent;

    fn ring(project: &str, id: &str) -> KeyRingName {
        KeyRingName {
            parent: RingParent::Project(project.into()),
            id: id.into(),
        }
    }

    /// The interned keys keep names apart whose parts concatenate alike, and long names
    /// (kept out of line, with long lengths) decide as short ones do.
    #[test]
    fn interned_names_stay_distinct() {
        let long = "p".repeat(300);
        let mut b = SnapshotBuilder::new();
        b.organization("o");
        for p in ["ab", "a", &long] {
            b.project(p, ResourceName::Organization("o".into()));
        }
        b.key_ring(ring("ab", "c"));
        b.key_ring(ring("a", "bc"));
        b.key_ring(ring(&long, "c"));
        let alice = Member::User("alice@example.com".into());
        let bob = Member::User("bob@example.com".into());
        b.binding(
            ResourceName::KeyRing(ring("ab", "c")),
            "roles/kms.viewer",
            alice.clone(),
        );
        b.binding(
            ResourceName::KeyRing(ring(&long, "c")),
            "roles/kms.viewer",
            bob.clone(),
        );
        let snap = b.build();
        let (a, bb) = (Principal::new(alice), Principal::new(bob));
        assert!(snap.sees_key_ring(&a, &ring("ab", "c")));
        assert!(!snap.sees_key_ring(&a, &ring("a", "bc")));
        assert!(!snap.sees_key_ring(&bb, &ring("ab", "c")));
        assert!(snap.sees_key_ring(&bb, &ring(&long, "c")));
        assert_eq!(snap.visible_key_rings(&a), vec![ring("ab", "c")]);
        assert_eq!(snap.visible_key_rings(&bb), vec![ring(&long, "c")]);
        assert!(snap
            .bindings_on(&ResourceName::KeyRing(ring("a", "bc")))
            .is_empty());
        assert_eq!(
            snap.ancestors(&ResourceName::KeyRing(ring(&long, "c"))),
            Some(vec![
                ResourceName::KeyRing(ring(&long, "c")),
                ResourceName::Project(long.clone()),
                ResourceName::Organization("o".into()),
            ])
        );
    }

    /// Separation of duties: the topmost conflicting resources, through nested groups, found
    /// from the principal's bindings alone, agree with a walk of the whole tree.
    #[test]
    fn sod_violations_are_the_topmost_conflicts() {
        let mut b = SnapshotBuilder::new();
        b.organization("o");
        b.project("p", ResourceName::Organization("o".into()));
        b.project("q", ResourceName::Organization("o".into()));
        for (p, r) in [("p", "a"), ("p", "b"), ("q", "c")] {
            b.key_ring(ring(p, r));
            for k in ["k1", "k2"] {
                b.crypto_key(CryptoKeyName {
                    ring: ring(p, r),
                    id: k.into(),
                });
            }
        }
        let key = |p: &str, r: &str, k: &str| {
            ResourceName::CryptoKey(CryptoKeyName {
                ring: ring(p, r),
                id: k.into(),
            })
        };
        let sa = Member::ServiceAccount("app@p".into());
        b.group_member("outer", Member::Group("inner".into()));
        b.group_member("inner", sa.clone());
        b.binding(
            ResourceName::Project("p".into()),
            "roles/kms.admin",
            sa.clone(),
        );
        b.binding(
            key("p", "a", "k1"),
            "roles/kms.signer",
            Member::Group("outer".into()),
        );
        b.binding(
            ResourceName::KeyRing(ring("p", "b")),
            "roles/kms.signer",
            sa.clone(),
        );
        b.binding(key("q", "c", "k2"), "roles/kms.signer", sa.clone());
        let snap = b.build();
        let p = Principal::new(sa);
        let found: Vec<ResourceName> = snap
            .sod_violations(&p, &ResourceName::Organization("o".into()))
            .into_iter()
            .map(|v| v.resource)
            .collect();
        assert_eq!(
            found,
            vec![ResourceName::KeyRing(ring("p", "b")), key("p", "a", "k1")]
        );
        // A brute-force walk agrees.
        let admin = roles::key_admin_permissions();
        let usage = roles::key_use_permissions();
        let mut brute = Vec::new();
        let mut stack = vec![ResourceName::Organization("o".into())];
        while let Some(r) = stack.pop() {
            let eff = snap.effective_permissions(&p, &r);
            if !eff.intersect(admin).is_empty() && !eff.intersect(usage).is_empty() {
                brute.push(r);
                continue;
            }
            let id = snap.id(&r).unwrap();
            stack.extend(
                snap.children[id as usize]
                    .iter()
                    .map(|c| snap.names[*c as usize].clone()),
            );
        }
        brute.sort();
        assert_eq!(found, brute);
        let v = &snap.sod_violations(&p, &key("p", "a", "k1"))[0];
        assert_eq!(
            v.usage[0].via_groups,
            vec!["outer".to_string(), "inner".to_string()]
        );
        assert_eq!(v.administration[0].binding.role, "roles/kms.admin");
        // From a resource below the conflict, the conflict starts there.
        assert_eq!(
            snap.sod_violations(&p, &key("p", "b", "k2"))[0].resource,
            key("p", "b", "k2")
        );
    }
}
