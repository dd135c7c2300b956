//! Policy at scale (issue 9): snapshot build time (from the builder and from a real SQLite
//! store), the snapshot's memory, and the latency of `authorize`, `sees_key`,
//! `visible_key_rings` and `who_can` over a generated world of 100k keys, 10k principals and
//! 1M bindings spread over organisation, folders, projects, key rings and keys.
//!
//! Run: `cargo bench --bench policy` (full scale; prints markdown tables, then criterion's
//! statistics). `KEYWARD_BENCH_SCALE` (default 1.0) scales every count of the world;
//! `KEYWARD_BENCH_STORE_SCALE` (default: the same) the world filled into SQLite. Smoke mode
//! (ci/bench-smoke.sh): a tiny scale under `cargo test --bench policy`, where criterion runs
//! each benchmark once. Timings are printed, never asserted.
//!
//! # The world (deterministic: seed 0x6b6579776172642d, "keyward-")
//! - one organisation, 10 top folders with 10 sub-folders each, 1,000 projects (under the
//!   sub-folders), 10 key rings per project, 10 keys per ring;
//! - 8,000 users and 2,000 service accounts; 500 groups nested three deep (50 top groups, 200
//!   mid groups each in a top group, 250 leaf groups each in a mid group); every user is in
//!   1-2 leaf groups, half the service accounts in one;
//! - bindings: 3 at the organisation (two org admins and an auditor group), 5 per folder
//!   (groups), 10 per project, 5 per key ring, and the rest (about 940k) on keys, 90% to users
//!   and service accounts, 10% to groups, with predefined roles;
//! - fixtures: user `deep@` is only in `fx-leaf` ⊂ `fx-mid` ⊂ `fx-top`, which holds
//!   `roles/kms.cryptoKeyDecrypter` on top folder 0 (a grant five levels above the key, through
//!   three groups); `direct@` holds `roles/kms.signer` on one key.

use criterion::{Criterion, SamplingMode};
use keyward::policy::{
    CryptoKeyName, KeyRingName, Member, Permission, Principal, ResourceName, RingParent, Snapshot,
    SnapshotBuilder,
};
use keyward::store::{self, iam, keys as skeys, resources, Store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::hint::black_box;
use std::time::{Duration, Instant};

const SEED: u64 = 0x6b65_7977_6172_642d;

const KEY_ROLES: &[&str] = &[
    "roles/kms.cryptoKeyEncrypterDecrypter",
    "roles/kms.cryptoKeyDecrypter",
    "roles/kms.signer",
    "roles/kms.signerVerifier",
    "roles/kms.verifier",
    "roles/kms.publicKeyViewer",
    "roles/kms.cryptoOperator",
];
const UPPER_ROLES: &[&str] = &[
    "roles/kms.viewer",
    "roles/kms.admin",
    "roles/kms.cryptoOperator",
    "roles/kms.signerVerifier",
];

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|v: &f64| *v > 0.0)
        .unwrap_or(default)
}

fn scaled(n: usize, scale: f64, min: usize) -> usize {
    ((n as f64 * scale).round() as usize).max(min)
}

/// The generated world, as plain data both the builder and the store are filled from.
struct World {
    org: String,
    /// (id, parent folder index or None for the organisation)
    folders: Vec<(String, Option<usize>)>,
    /// (id, parent folder index)
    projects: Vec<(String, usize)>,
    rings: Vec<KeyRingName>,
    keys: Vec<CryptoKeyName>,
    principals: Vec<Member>,
    groups: Vec<String>,
    group_members: Vec<(String, Member)>,
    bindings: Vec<(ResourceName, &'static str, Member)>,
    deep: Principal,
    direct: Principal,
    deep_key: CryptoKeyName,
    direct_key: CryptoKeyName,
    /// A key in another top folder, where `deep@` holds nothing.
    other_key: CryptoKeyName,
}

impl World {
    fn generate(scale: f64) -> World {
        let mut rng = StdRng::seed_from_u64(SEED);
        let n_keys = scaled(100_000, scale, 100);
        let n_rings = (n_keys / 10).max(10);
        let n_projects = (n_rings / 10).max(4);
        let n_sub = (n_projects / 10).max(2);
        let n_top = (n_sub / 10).max(2);
        let n_principals = scaled(10_000, scale, 10);
        let n_groups = scaled(500, scale, 10);
        let n_bindings = scaled(1_000_000, scale, 100);

        let org = "acme".to_string();
        let mut folders: Vec<(String, Option<usize>)> =
            (0..n_top).map(|i| (format!("f{i}"), None)).collect();
        for i in 0..n_sub {
            folders.push((format!("f{}-{i}", i % n_top), Some(i % n_top)));
        }
        let projects: Vec<(String, usize)> = (0..n_projects)
            .map(|i| (format!("p{i}"), n_top + i % n_sub))
            .collect();
        let rings: Vec<KeyRingName> = (0..n_rings)
            .map(|i| KeyRingName {
                parent: RingParent::Project(projects[i % n_projects].0.clone()),
                id: format!("r{i}"),
            })
            .collect();
        let keys: Vec<CryptoKeyName> = (0..n_keys)
            .map(|i| CryptoKeyName {
                ring: rings[i % n_rings].clone(),
                id: format!("k{i}"),
            })
            .collect();
        let n_users = n_principals * 4 / 5;
        let mut principals: Vec<Member> = (0..n_users)
            .map(|i| Member::User(format!("u{i}@acme.example")))
            .collect();
        principals.extend(
            (n_users..n_principals)
                .map(|i| Member::ServiceAccount(format!("sa{i}@{}", projects[i % n_projects].0))),
        );

        // Groups: [0, top) top, [top, mid) mid (each in a top group), [mid, n) leaf.
        let groups: Vec<String> = (0..n_groups).map(|i| format!("g{i}")).collect();
        let top = (n_groups / 10).max(1);
        let mid = (n_groups / 2).max(top + 1);
        let mut group_members: Vec<(String, Member)> = Vec::new();
        for g in top..n_groups {
            let parent = if g < mid {
                rng.gen_range(0..top)
            } else {
                rng.gen_range(top..mid)
            };
            group_members.push((groups[parent].clone(), Member::Group(groups[g].clone())));
        }
        let leaf_lo = mid.min(n_groups - 1);
        let leaf = |rng: &mut StdRng| rng.gen_range(leaf_lo..n_groups);
        for (i, p) in principals.iter().enumerate() {
            let count = match p {
                Member::User(_) => 1 + (i % 2),
                _ => i % 2,
            };
            let mut seen = HashSet::new();
            for _ in 0..count {
                let g = leaf(&mut rng);
                if seen.insert(g) {
                    group_members.push((groups[g].clone(), p.clone()));
                }
            }
        }

        // Fixtures.
        let deep = Principal::new(Member::User("deep@acme.example".into()));
        let direct = Principal::new(Member::User("direct@acme.example".into()));
        let fx = ["fx-top", "fx-mid", "fx-leaf"];
        let mut groups = groups;
        groups.extend(fx.iter().map(|s| s.to_string()));
        group_members.push(("fx-top".into(), Member::Group("fx-mid".into())));
        group_members.push(("fx-mid".into(), Member::Group("fx-leaf".into())));
        group_members.push(("fx-leaf".into(), deep.member.clone()));
        group_members.push((groups[leaf(&mut rng)].clone(), direct.member.clone()));
        principals.push(deep.member.clone());
        principals.push(direct.member.clone());

        // Keys under top folder 0 (via sub-folder index n_top + j with j % n_top == 0) and
        // keys elsewhere.
        let top_of_key = |k: usize| {
            let project = (k % n_rings) % n_projects;
            (project % n_sub) % n_top
        };
        let deep_key = keys[(0..n_keys).rev().find(|&k| top_of_key(k) == 0).unwrap_or(0)].clone();
        let other_key = keys[(0..n_keys).rev().find(|&k| top_of_key(k) == 1).unwrap_or(0)].clone();
        let direct_key = keys[n_keys / 2].clone();

        // Bindings, unique as the store keeps them.
        let mut bindings: Vec<(ResourceName, &'static str, Member)> =
            Vec::with_capacity(n_bindings);
        let mut seen: HashSet<(ResourceName, &'static str, Member)> = HashSet::new();
        let mut push =
            |b: (ResourceName, &'static str, Member),
             bindings: &mut Vec<(ResourceName, &'static str, Member)>| {
                if seen.insert(b.clone()) {
                    bindings.push(b);
                }
            };
        let org_res = ResourceName::Organization(org.clone());
        push(
            (
                org_res.clone(),
                "roles/keyward.orgAdmin",
                principals[0].clone(),
            ),
            &mut bindings,
        );
        push(
            (
                org_res.clone(),
                "roles/keyward.orgAdmin",
                principals[1].clone(),
            ),
            &mut bindings,
        );
        push(
            (
                org_res,
                "roles/keyward.auditor",
                Member::Group(groups[0].clone()),
            ),
            &mut bindings,
        );
        push(
            (
                ResourceName::Folder(folders[0].0.clone()),
                "roles/kms.cryptoKeyDecrypter",
                Member::Group("fx-top".into()),
            ),
            &mut bindings,
        );
        push(
            (
                ResourceName::CryptoKey(direct_key.clone()),
                "roles/kms.signer",
                direct.member.clone(),
            ),
            &mut bindings,
        );
        let pick_group =
            |rng: &mut StdRng| Member::Group(groups[rng.gen_range(0..n_groups)].clone());
        let upper = |rng: &mut StdRng| UPPER_ROLES[rng.gen_range(0..UPPER_ROLES.len())];
        for (f, _) in &folders {
            for _ in 0..5 {
                let b = (
                    ResourceName::Folder(f.clone()),
                    upper(&mut rng),
                    pick_group(&mut rng),
                );
                push(b, &mut bindings);
            }
        }
        for (p, _) in &projects {
            for _ in 0..10 {
                let m = if rng.gen_bool(0.5) {
                    pick_group(&mut rng)
                } else {
                    principals[rng.gen_range(0..n_principals)].clone()
                };
                push(
                    (ResourceName::Project(p.clone()), upper(&mut rng), m),
                    &mut bindings,
                );
            }
        }
        for r in &rings {
            for _ in 0..5 {
                let m = if rng.gen_bool(0.3) {
                    pick_group(&mut rng)
                } else {
                    principals[rng.gen_range(0..n_principals)].clone()
                };
                let role = KEY_ROLES[rng.gen_range(0..KEY_ROLES.len())];
                push((ResourceName::KeyRing(r.clone()), role, m), &mut bindings);
            }
        }
        while bindings.len() < n_bindings {
            let k = rng.gen_range(0..n_keys);
            let m = if rng.gen_bool(0.1) {
                pick_group(&mut rng)
            } else {
                principals[rng.gen_range(0..n_principals)].clone()
            };
            let role = KEY_ROLES[rng.gen_range(0..KEY_ROLES.len())];
            push(
                (ResourceName::CryptoKey(keys[k].clone()), role, m),
                &mut bindings,
            );
        }

        World {
            org,
            folders,
            projects,
            rings,
            keys,
            principals,
            groups,
            group_members,
            bindings,
            deep,
            direct,
            deep_key,
            direct_key,
            other_key,
        }
    }

    fn folder_parent(&self, parent: Option<usize>) -> ResourceName {
        match parent {
            Some(i) => ResourceName::Folder(self.folders[i].0.clone()),
            None => ResourceName::Organization(self.org.clone()),
        }
    }

    /// Feeds the builder in the order the store does.
    fn snapshot(&self) -> Snapshot {
        let mut b = SnapshotBuilder::new();
        b.organization(&self.org);
        for (f, parent) in &self.folders {
            b.folder(f, self.folder_parent(*parent));
        }
        for (p, parent) in &self.projects {
            b.project(p, ResourceName::Folder(self.folders[*parent].0.clone()));
        }
        for r in &self.rings {
            b.key_ring(r.clone());
        }
        for k in &self.keys {
            b.crypto_key(k.clone());
        }
        for (res, role, member) in &self.bindings {
            b.binding(res.clone(), role, member.clone());
        }
        for g in &self.groups {
            b.group(g);
        }
        for (g, m) in &self.group_members {
            b.group_member(g, m.clone());
        }
        b.build()
    }

    /// Fills a fresh store through the store's own row functions, plus prepared statements
    /// for the bindings and group rows, all in one transaction.
    fn fill_store(&self, store: &mut Store) -> store::Result<()> {
        let tx = store.write()?;
        let now = 1_764_000_000_000_i64;
        let org_id = resources::insert(
            &tx,
            &ResourceName::Organization(self.org.clone()),
            None,
            now,
        )?;
        let mut folder_ids = Vec::with_capacity(self.folders.len());
        for (f, parent) in &self.folders {
            let pid = parent.map_or(org_id, |i| folder_ids[i]);
            folder_ids.push(resources::insert(
                &tx,
                &ResourceName::Folder(f.clone()),
                Some(pid),
                now,
            )?);
        }
        let mut project_ids = std::collections::HashMap::new();
        for (p, parent) in &self.projects {
            let id = resources::insert(
                &tx,
                &ResourceName::Project(p.clone()),
                Some(folder_ids[*parent]),
                now,
            )?;
            project_ids.insert(p.clone(), id);
        }
        let mut ring_ids = std::collections::HashMap::new();
        for r in &self.rings {
            let RingParent::Project(p) = &r.parent else {
                continue;
            };
            let name = ResourceName::KeyRing(r.clone());
            let id = resources::insert(&tx, &name, Some(project_ids[p]), now)?;
            let (slot, serial) = resources::ring_identity(&name);
            let mut slot = slot;
            while resources::slot_taken(&tx, slot)? {
                slot = (slot + 1) & 0x7fff_ffff;
            }
            resources::insert_key_ring(&tx, id, &r.id, slot, &serial)?;
            ring_ids.insert(r.clone(), id);
        }
        for k in &self.keys {
            let id = resources::insert(
                &tx,
                &ResourceName::CryptoKey(k.clone()),
                Some(ring_ids[&k.ring]),
                now,
            )?;
            skeys::insert_key(
                &tx,
                id,
                "ENCRYPT_DECRYPT",
                Some("AES_256_GCM"),
                false,
                "user:u0@acme.example",
            )?;
        }
        for g in &self.groups {
            iam::create_group(&tx, g, now)?;
        }
        {
            const MEMBER: &str =
                "INSERT OR IGNORE INTO group_members(group_name, member) VALUES (?1, ?2)";
            let mut stmt = tx.prepare(MEMBER)?;
            for (g, m) in &self.group_members {
                stmt.execute(rusqlite::params![g, m.to_string()])?;
            }
            const ID: &str = "SELECT id FROM resources WHERE name = ?1";
            const BIND: &str = "INSERT OR IGNORE INTO bindings(resource_id, role, member, \
                                created_at) VALUES (?1, ?2, ?3, ?4)";
            let mut id_of = tx.prepare(ID)?;
            let mut bind = tx.prepare(BIND)?;
            for (res, role, member) in &self.bindings {
                let id: i64 = id_of.query_row([res.to_string()], |r| r.get(0))?;
                bind.execute(rusqlite::params![id, role, member.to_string(), now])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// Resident set size in bytes (/proc/self/statm, second field, in pages).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

fn fmt_dur(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns < 10_000.0 {
        format!("{:.2} µs", ns / 1_000.0)
    } else if ns < 1_000_000.0 {
        format!("{:.1} µs", ns / 1_000.0)
    } else {
        format!("{:.2} ms", ns / 1_000_000.0)
    }
}

/// Calls `f` repeatedly for about `budget` (at least `min` times); returns (p50, p99, mean).
fn latency(budget: Duration, min: usize, mut f: impl FnMut()) -> (Duration, Duration, Duration) {
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < min || start.elapsed() < budget {
        let t = Instant::now();
        f();
        samples.push(t.elapsed());
        if samples.len() >= 2_000_000 {
            break;
        }
    }
    let total: Duration = samples.iter().sum();
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99), total / samples.len() as u32)
}

fn main() {
    let scale = env_f64("KEYWARD_BENCH_SCALE", 1.0);
    let store_scale = env_f64("KEYWARD_BENCH_STORE_SCALE", scale);
    // Under `cargo test` (no --bench argument) criterion runs each benchmark once; shorten
    // our own latency loops the same way.
    let quick =
        !std::env::args().any(|a| a == "--bench") || std::env::args().any(|a| a == "--quick");
    let budget = if quick {
        Duration::from_millis(20)
    } else {
        Duration::from_millis(1500)
    };

    let t = Instant::now();
    let world = World::generate(scale);
    let gen_time = t.elapsed();
    let rss0 = rss_bytes();
    let t = Instant::now();
    let snap = world.snapshot();
    let build_time = t.elapsed();
    let rss1 = rss_bytes();

    println!("\n### Policy benchmark (scale {scale}, store scale {store_scale})\n");
    println!("| world | count |\n|---|---|");
    println!("| folders | {} |", world.folders.len());
    println!("| projects | {} |", world.projects.len());
    println!("| key rings | {} |", world.rings.len());
    println!("| keys | {} |", world.keys.len());
    println!(
        "| principals (users + service accounts) | {} |",
        world.principals.len()
    );
    println!("| groups (nested 3 deep) | {} |", world.groups.len());
    println!("| group memberships | {} |", world.group_members.len());
    println!("| bindings | {} |", world.bindings.len());
    println!("| (generated in) | {} |", fmt_dur(gen_time));

    // The store-backed world (maybe smaller).
    let store_world = if (store_scale - scale).abs() < f64::EPSILON {
        None
    } else {
        Some(World::generate(store_scale))
    };
    let sw = store_world.as_ref().unwrap_or(&world);
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("keyward.db");
    let mut store = Store::open(&db).expect("store");
    let t = Instant::now();
    sw.fill_store(&mut store).expect("fill the store");
    let fill_time = t.elapsed();
    let t = Instant::now();
    let from_store = store.snapshot().expect("snapshot from store");
    let store_build_time = t.elapsed();
    drop(from_store);
    let t = Instant::now();
    {
        let tx = store.read().expect("read");
        let state = keyward::catalog::build(&tx).expect("catalog");
        black_box(&state);
    }
    let catalog_time = t.elapsed();

    let d = &world.deep;
    let key = |k: &CryptoKeyName| ResourceName::CryptoKey(k.clone());
    let deep_key = key(&world.deep_key);
    let direct_key = key(&world.direct_key);
    let other_key = key(&world.other_key);
    let nobody = Principal::new(Member::User("nobody@acme.example".into()));
    // Sanity: the fixtures decide as designed.
    assert!(
        snap.authorize(d, Permission::UseToDecrypt, &deep_key)
            .allowed
    );
    assert!(
        !snap
            .authorize(d, Permission::ExportKeyMaterial, &deep_key)
            .allowed
    );
    assert!(
        snap.authorize(&world.direct, Permission::UseToSign, &direct_key)
            .allowed
    );
    assert!(
        !snap
            .authorize(d, Permission::UseToDecrypt, &other_key)
            .allowed
    );

    type Op<'a> = (&'a str, Box<dyn FnMut() + 'a>);
    let ops: Vec<Op> = vec![
        (
            "authorize, allowed: direct key binding",
            Box::new(|| {
                black_box(snap.authorize(&world.direct, Permission::UseToSign, &direct_key));
            }),
        ),
        (
            "authorize, allowed: folder binding 5 levels up, through 3 nested groups",
            Box::new(|| {
                black_box(snap.authorize(d, Permission::UseToDecrypt, &deep_key));
            }),
        ),
        (
            "authorize, denied: whole chain scanned (grouped principal)",
            Box::new(|| {
                black_box(snap.authorize(d, Permission::ExportKeyMaterial, &deep_key));
            }),
        ),
        (
            "authorize, denied: principal with no bindings",
            Box::new(|| {
                black_box(snap.authorize(&nobody, Permission::UseToDecrypt, &other_key));
            }),
        ),
        (
            "sees_key (visible)",
            Box::new(|| {
                black_box(snap.sees_key(d, &world.deep_key));
            }),
        ),
        (
            "sees_key (not visible)",
            Box::new(|| {
                black_box(snap.sees_key(d, &world.other_key));
            }),
        ),
        (
            "who_can useToDecrypt on a key",
            Box::new(|| {
                black_box(snap.who_can(&deep_key, Permission::UseToDecrypt));
            }),
        ),
        (
            "visible_key_rings (every ring checked)",
            Box::new(|| {
                black_box(snap.visible_key_rings(d));
            }),
        ),
    ];
    println!("\n| measurement | value |\n|---|---|");
    println!(
        "| snapshot build from the builder ({} bindings) | {} |",
        world.bindings.len(),
        fmt_dur(build_time)
    );
    println!(
        "| snapshot memory (RSS after − before the build) | {} |",
        mib(rss1.saturating_sub(rss0))
    );
    println!(
        "| store fill ({} keys, {} bindings, one transaction) | {} |",
        sw.keys.len(),
        sw.bindings.len(),
        fmt_dur(fill_time)
    );
    println!(
        "| snapshot build from the store (`Store::snapshot`) | {} |",
        fmt_dur(store_build_time)
    );
    println!(
        "| snapshot + key catalog from the store (`catalog::build`) | {} |",
        fmt_dur(catalog_time)
    );
    println!("\n| operation | p50 | p99 | mean | ops/s (1 thread) |\n|---|---|---|---|---|");
    for (name, mut f) in ops {
        let (p50, p99, mean) = latency(budget, if quick { 3 } else { 20 }, &mut f);
        println!(
            "| {name} | {} | {} | {} | {:.0} |",
            fmt_dur(p50),
            fmt_dur(p99),
            fmt_dur(mean),
            1.0 / mean.as_secs_f64()
        );
    }
    println!(
        "| (visible rings for deep@) | {} |  |  |  |",
        snap.visible_key_rings(d).len()
    );
    println!(
        "| (who_can answers) | {} |  |  |  |",
        snap.who_can(&deep_key, Permission::UseToDecrypt).len()
    );
    println!();

    // Criterion: the same operations with its statistics.
    let mut c = Criterion::default().configure_from_args();
    {
        let mut g = c.benchmark_group("policy/authorize");
        g.bench_function("allowed_direct", |b| {
            b.iter(|| snap.authorize(&world.direct, Permission::UseToSign, &direct_key))
        });
        g.bench_function("allowed_deep_groups", |b| {
            b.iter(|| snap.authorize(d, Permission::UseToDecrypt, &deep_key))
        });
        g.bench_function("denied_chain", |b| {
            b.iter(|| snap.authorize(d, Permission::ExportKeyMaterial, &deep_key))
        });
        g.bench_function("denied_nobody", |b| {
            b.iter(|| snap.authorize(&nobody, Permission::UseToDecrypt, &other_key))
        });
        g.finish();
    }
    {
        let mut g = c.benchmark_group("policy/visibility");
        g.bench_function("sees_key", |b| b.iter(|| snap.sees_key(d, &world.deep_key)));
        g.bench_function("who_can", |b| {
            b.iter(|| snap.who_can(&deep_key, Permission::UseToDecrypt))
        });
        g.sample_size(10);
        g.sampling_mode(SamplingMode::Flat);
        g.bench_function("visible_key_rings", |b| {
            b.iter(|| snap.visible_key_rings(d))
        });
        g.finish();
    }
    {
        let mut g = c.benchmark_group("policy/build");
        g.sample_size(10);
        g.sampling_mode(SamplingMode::Flat);
        g.bench_function("snapshot_from_builder", |b| b.iter(|| world.snapshot()));
        g.bench_function("snapshot_from_store", |b| {
            b.iter(|| store.snapshot().expect("snapshot"))
        });
        g.finish();
    }
    c.final_summary();
}
