//! Property tests: `authorize` and `who_can` agree with a slow reference that walks every
//! ancestor and expands every group, over random hierarchies, groups and bindings; and
//! bindings on one project never grant anything on another.

use keyward::policy::{
    CryptoKeyName, KeyRingName, Member, Permission, Principal, ResourceName, RingParent,
    SnapshotBuilder,
};
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};

const ROLES: &[&str] = &[
    "roles/kms.admin",
    "roles/kms.viewer",
    "roles/kms.cryptoKeyDecrypter",
    "roles/kms.signerVerifier",
    "roles/keyward.orgAdmin",
    "kms:FullAccess",
    "roles/custom",
    "roles/does-not-exist",
];

const PERMS: &[Permission] = &[
    Permission::UseToDecrypt,
    Permission::UseToSign,
    Permission::ViewPublicKey,
    Permission::CryptoKeysCreate,
    Permission::KeyRingsList,
    Permission::ProjectsCreate,
    Permission::ExportKeyMaterial,
    Permission::AuditLogsRead,
];

fn principals() -> Vec<Principal> {
    vec![
        Principal::new(Member::User("a@x".into())),
        Principal::new(Member::User("b@x".into())),
        Principal::new(Member::ServiceAccount("s@p0".into())),
        Principal {
            member: Member::UnixUid(1),
            unix_gids: vec![10, 11],
        },
        Principal::anonymous(),
    ]
}

fn member_pool(groups: usize) -> Vec<Member> {
    let mut v = vec![
        Member::User("a@x".into()),
        Member::User("b@x".into()),
        Member::ServiceAccount("s@p0".into()),
        Member::UnixUid(1),
        Member::UnixGid(10),
        Member::AllAuthenticated,
    ];
    v.extend((0..groups).map(|g| Member::Group(format!("g{g}"))));
    v
}

/// A random world, described by indices (resolved modulo the sizes).
#[derive(Debug, Clone)]
struct World {
    folders: Vec<usize>,
    projects: Vec<usize>,
    rings: Vec<(bool, usize)>,
    keys: Vec<usize>,
    groups: usize,
    memberships: Vec<(usize, usize)>,
    bindings: Vec<(usize, usize, usize)>,
}

fn world() -> impl Strategy<Value = World> {
    (
        prop::collection::vec(any::<usize>(), 0..4),
        prop::collection::vec(any::<usize>(), 1..4),
        prop::collection::vec((any::<bool>(), any::<usize>()), 1..4),
        prop::collection::vec(any::<usize>(), 1..6),
        0usize..4,
        prop::collection::vec((any::<usize>(), any::<usize>()), 0..8),
        prop::collection::vec((any::<usize>(), any::<usize>(), any::<usize>()), 0..12),
    )
        .prop_map(
            |(folders, projects, rings, keys, groups, memberships, bindings)| World {
                folders,
                projects,
                rings,
                keys,
                groups,
                memberships,
                bindings,
            },
        )
}

/// The world built twice: as a snapshot, and as plain maps for the reference.
struct Built {
    snap: keyward::policy::Snapshot,
    resources: Vec<ResourceName>,
    parent: HashMap<ResourceName, Option<ResourceName>>,
    bindings: Vec<(ResourceName, String, Member)>,
    groups: HashMap<String, Vec<Member>>,
    roles: HashMap<String, HashSet<Permission>>,
}

fn build(w: &World, keep_binding: &dyn Fn(&ResourceName) -> bool) -> Built {
    let mut b = SnapshotBuilder::new();
    let mut parent: HashMap<ResourceName, Option<ResourceName>> = HashMap::new();
    let org = ResourceName::Organization("o".into());
    b.organization("o");
    parent.insert(org.clone(), None);
    let mut containers = vec![org.clone()];
    for (i, p) in w.folders.iter().enumerate() {
        let par = containers[p % containers.len()].clone();
        let f = ResourceName::Folder(format!("f{i}"));
        b.folder(&format!("f{i}"), par.clone());
        parent.insert(f.clone(), Some(par));
        containers.push(f);
    }
    let mut projects = Vec::new();
    for (i, p) in w.projects.iter().enumerate() {
        let par = containers[p % containers.len()].clone();
        b.project(&format!("p{i}"), par.clone());
        let name = ResourceName::Project(format!("p{i}"));
        parent.insert(name.clone(), Some(par));
        projects.push(format!("p{i}"));
    }
    let mut rings = Vec::new();
    for (i, (org_scoped, p)) in w.rings.iter().enumerate() {
        let rp = if *org_scoped {
            RingParent::Organization("o".into())
        } else {
            RingParent::Project(projects[p % projects.len()].clone())
        };
        let ring = KeyRingName {
            parent: rp.clone(),
            id: format!("r{i}"),
        };
        b.key_ring(ring.clone());
        let par = match rp {
            RingParent::Organization(o) => ResourceName::Organization(o),
            RingParent::Project(p) => ResourceName::Project(p),
        };
        parent.insert(ResourceName::KeyRing(ring.clone()), Some(par));
        rings.push(ring);
    }
    for (i, r) in w.keys.iter().enumerate() {
        let ring = rings[r % rings.len()].clone();
        let key = CryptoKeyName {
            ring: ring.clone(),
            id: format!("k{i}"),
        };
        b.crypto_key(key.clone());
        parent.insert(
            ResourceName::CryptoKey(key),
            Some(ResourceName::KeyRing(ring)),
        );
    }
    let custom: HashSet<Permission> = [Permission::UseToSign, Permission::ExportKeyMaterial]
        .into_iter()
        .collect();
    b.role("roles/custom", custom.iter().copied().collect());
    let mut roles: HashMap<String, HashSet<Permission>> = HashMap::new();
    for r in keyward::policy::roles::predefined() {
        roles.insert(r.name.to_string(), r.permissions.iter().collect());
    }
    roles.insert("roles/custom".into(), custom);
    let pool = member_pool(w.groups);
    let mut groups: HashMap<String, Vec<Member>> = HashMap::new();
    if w.groups > 0 {
        for (g, m) in &w.memberships {
            let g = format!("g{}", g % w.groups);
            let m = pool[m % pool.len()].clone();
            b.group_member(&g, m.clone());
            groups.entry(g).or_default().push(m);
        }
    }
    let mut resources: Vec<ResourceName> = parent.keys().cloned().collect();
    resources.sort();
    let mut bindings = Vec::new();
    for (r, role, m) in &w.bindings {
        let res = resources[r % resources.len()].clone();
        if !keep_binding(&res) {
            continue;
        }
        let role = ROLES[role % ROLES.len()].to_string();
        let m = pool[m % pool.len()].clone();
        b.binding(res.clone(), &role, m.clone());
        bindings.push((res, role, m));
    }
    Built {
        snap: b.build(),
        resources,
        parent,
        bindings,
        groups,
        roles,
    }
}

/// Reference: is `p` (transitively) in group `g`?
fn in_group(built: &Built, p: &Principal, g: &str, seen: &mut HashSet<String>) -> bool {
    if !seen.insert(g.to_string()) {
        return false;
    }
    built.groups.get(g).into_iter().flatten().any(|m| match m {
        Member::Group(inner) => in_group(built, p, inner, seen),
        m => matches_direct(p, m),
    })
}

fn matches_direct(p: &Principal, m: &Member) -> bool {
    match m {
        Member::AllAuthenticated => p.is_authenticated(),
        Member::UnixGid(g) => p.unix_gids.contains(g),
        m => *m == p.member,
    }
}

fn matches(built: &Built, p: &Principal, m: &Member) -> bool {
    match m {
        Member::Group(g) => in_group(built, p, g, &mut HashSet::new()),
        m => matches_direct(p, m),
    }
}

fn ancestors_ref(built: &Built, r: &ResourceName) -> Vec<ResourceName> {
    let mut out = vec![r.clone()];
    let mut cur = r.clone();
    while let Some(Some(p)) = built.parent.get(&cur) {
        out.push(p.clone());
        cur = p.clone();
    }
    out
}

fn authorize_ref(built: &Built, p: &Principal, perm: Permission, r: &ResourceName) -> bool {
    let chain = ancestors_ref(built, r);
    built.bindings.iter().any(|(res, role, m)| {
        chain.contains(res)
            && built.roles.get(role).is_some_and(|s| s.contains(&perm))
            && matches(built, p, m)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn authorize_matches_reference(w in world()) {
        let built = build(&w, &|_| true);
        for r in &built.resources {
            for perm in PERMS {
                for p in principals() {
                    let fast = built.snap.authorize(&p, *perm, r);
                    let slow = authorize_ref(&built, &p, *perm, r);
                    prop_assert_eq!(fast.allowed, slow, "{:?} {} on {}", p.member, perm, r);
                    if let Some(b) = fast.granted_by {
                        // The named binding really grants it.
                        prop_assert!(ancestors_ref(&built, r).contains(&b.resource));
                        prop_assert!(built.roles[&b.role].contains(perm));
                        prop_assert!(matches(&built, &p, &b.member));
                    }
                }
            }
        }
    }

    #[test]
    fn who_can_matches_reference(w in world()) {
        let built = build(&w, &|_| true);
        for r in &built.resources {
            for perm in PERMS {
                let who = built.snap.who_can(r, *perm);
                for g in &who {
                    prop_assert!(!matches!(g.member, Member::Group(_)));
                }
                let listed: HashSet<Member> = who.into_iter().map(|g| g.member).collect();
                for p in principals() {
                    let covered = listed.iter().any(|m| matches_direct(&p, m));
                    prop_assert_eq!(covered, authorize_ref(&built, &p, *perm, r),
                        "{:?} {} on {}", p.member, perm, r);
                }
            }
        }
    }

    #[test]
    fn bindings_in_one_project_grant_nothing_in_another(w in world()) {
        // Keep only bindings attached to project p0 or below it.
        let probe = build(&w, &|_| true);
        let p0 = ResourceName::Project("p0".into());
        let under_p0 = |r: &ResourceName| ancestors_ref(&probe, r).contains(&p0);
        let built = build(&w, &under_p0);
        for r in &built.resources {
            if under_p0(r) {
                continue;
            }
            for perm in PERMS {
                for p in principals() {
                    prop_assert!(!built.snap.authorize(&p, *perm, r).allowed,
                        "{:?} got {} on {} from bindings in p0", p.member, perm, r);
                }
            }
        }
    }

    #[test]
    fn visible_key_rings_is_every_ring_the_principal_sees(w in world()) {
        // The index-driven listing equals checking every ring one by one.
        let built = build(&w, &|_| true);
        let rings: Vec<&KeyRingName> = built
            .resources
            .iter()
            .filter_map(|r| match r {
                ResourceName::KeyRing(k) => Some(k),
                _ => None,
            })
            .collect();
        for p in principals() {
            let mut slow: Vec<KeyRingName> = rings
                .iter()
                .filter(|r| built.snap.sees_key_ring(&p, r))
                .map(|r| (*r).clone())
                .collect();
            slow.sort();
            slow.dedup();
            prop_assert_eq!(built.snap.visible_key_rings(&p), slow, "{:?}", p.member);
        }
    }

    #[test]
    fn unknown_resources_are_denied(w in world()) {
        let built = build(&w, &|_| true);
        let ghost: ResourceName = "projects/ghost/keyRings/r/cryptoKeys/k".parse().unwrap();
        for p in principals() {
            for perm in PERMS {
                prop_assert!(!built.snap.authorize(&p, *perm, &ghost).allowed);
            }
        }
        prop_assert!(built.snap.who_can(&ghost, Permission::UseToSign).is_empty());
    }
}
