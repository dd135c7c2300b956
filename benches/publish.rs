//! Snapshot publish time (issue 16 item 4): how long keywardd takes, after a committed change,
//! to build what the data path reads, with 1,000 generic keys (PKCS#11 key pairs made through
//! the module) and 1,000 certificates in one ring.
//!
//! Run: `cargo bench --bench publish` (release; prints a markdown table). The store is an
//! in-memory SQLite database filled through the store layer (no token: the catalog never asks
//! it). Each sample is one [`AdminService::refresh`]: the read transaction that builds the
//! published state, generic keys, public halves, certificates and import jobs included (before
//! issue 16 item 4 the data path's first call after a publish read those in a second
//! transaction, under the admin mutex; README "Benchmarks" has both).
//! `KEYWARD_BENCH_PUBLISH_SAMPLES` (default 50) samples; timings are printed, never asserted.

use keyward::admin::{AdminService, SystemClock};
use keyward::policy::ResourceName;
use keyward::store::certs::{self as scerts, NewCert};
use keyward::store::keys::{self as skeys, GenericRow, VersionState};
use keyward::store::{resources, Store};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

const KEYS: usize = 1_000;
const CERTS: usize = 1_000;
const RING: &str = "projects/bench/keyRings/publish";

fn samples() -> usize {
    std::env::var("KEYWARD_BENCH_PUBLISH_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n: &usize| *n > 0)
        .unwrap_or(50)
}

/// A store with one ring holding `KEYS` generic EC keys (one ENABLED version each, with a
/// public key) and `CERTS` certificates, each owned by one of the keys' versions.
fn filled_store() -> Store {
    let mut store = Store::in_memory().expect("in-memory store");
    let tx = store.write().expect("write transaction");
    let org = ResourceName::from_str("organizations/bench").expect("organization name");
    let org_id = resources::insert(&tx, &org, None, 0).expect("organization");
    let project = ResourceName::from_str("projects/bench").expect("project name");
    let project_id = resources::insert(&tx, &project, Some(org_id), 0).expect("project");
    let ring = ResourceName::from_str(RING).expect("ring name");
    let ring_id = resources::insert(&tx, &ring, Some(project_id), 0).expect("ring");
    let (slot, label) = resources::ring_identity(&ring);
    resources::insert_key_ring(&tx, ring_id, &label, slot, "00000000000000aa").expect("ring row");
    // A P-256 SPKI: the catalog keeps it as bytes; the view parses it per object.
    let mut point = vec![0x04, 65, 4];
    point.extend([7u8; 64]);
    let params = keyward_token::public_key::Curve::P256.ec_params();
    let spki = keyward_token::public_key::ec_spki_der(&params, &point).expect("spki");
    let mut owners = Vec::with_capacity(KEYS);
    for i in 0..KEYS {
        let name = ResourceName::from_str(&format!("{RING}/cryptoKeys/k{i:04}")).expect("key");
        let id = resources::insert(&tx, &name, Some(ring_id), 0).expect("key resource");
        skeys::insert_key(
            &tx,
            id,
            "PKCS11_GENERIC",
            None,
            false,
            "user:bench@example.com",
        )
        .expect("key row");
        let token_id = format!("kw-{i:04}").into_bytes();
        let v = skeys::add_version(
            &tx,
            id,
            VersionState::Enabled,
            Some(&token_id),
            Some(&spki),
            0,
        )
        .expect("version");
        skeys::set_primary(&tx, id, v).expect("primary");
        let generic = GenericRow {
            kind: "EC_P256".into(),
            cka_id: format!("id-{i:04}").into_bytes(),
            cka_label: format!("label-{i:04}").into_bytes(),
            pub_cka_id: None,
            pub_cka_label: None,
            usage: [false, false, true, true, false, false],
            local: true,
            creator_instance: Some("bench".into()),
        };
        skeys::insert_generic(&tx, id, &generic).expect("generic row");
        owners.push((id, v));
    }
    // About the size of a real leaf certificate.
    let value = vec![0x30u8; 900];
    for i in 0..CERTS {
        let label = format!("cert-{i:04}").into_bytes();
        let cert = NewCert {
            ring_id,
            owner: Some(owners[i % owners.len()]),
            cka_id: &label,
            cka_label: &label,
            subject: b"subject",
            issuer: b"issuer",
            serial: &[2, 1, 1],
            value: &value,
            category: 0,
            trusted: false,
            created_by: "user:bench@example.com",
            creator_instance: None,
        };
        scerts::insert(&tx, &cert, 0).expect("certificate");
    }
    tx.commit().expect("commit");
    store
}

fn ms(ns: u128) -> f64 {
    ns as f64 / 1e6
}

fn quantile(sorted: &[u128], q: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    ms(sorted[i])
}

fn main() {
    // `cargo test --benches` runs this too: do nothing then.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let n = samples();
    let mut admin = AdminService::new(filled_store(), Arc::new(SystemClock));
    let mut publish = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        admin.refresh().expect("refresh");
        publish.push(t.elapsed().as_nanos());
        // Everything the data path reads is in it: it never goes back to the store.
        let state = admin.published().current();
        assert_eq!(state.catalog.keys.len(), KEYS);
        assert_eq!(state.catalog.generic.len(), KEYS);
        assert_eq!(state.catalog.certificates.len(), CERTS);
    }
    println!("snapshot publish, {KEYS} generic keys + {CERTS} certificates, {n} samples (ms)\n");
    println!("| step | median | p90 | max |");
    println!("|---|---|---|---|");
    publish.sort_unstable();
    println!(
        "| refresh (catalog::build, one read transaction) | {:.2} | {:.2} | {:.2} |",
        quantile(&publish, 0.5),
        quantile(&publish, 0.9),
        ms(*publish.last().unwrap_or(&0))
    );
}
