//! Existence timing (issue 13, finding 8; design §9 "costs the same work"): on the client
//! socket's crypto path, how long keywardd takes to refuse an encrypt with a key that exists
//! but the caller may not see, and with a key that does not exist.
//!
//! Run: `cargo bench --bench existence` (prints a markdown table). A real keywardd on a
//! private SoftHSM2 token (the helpers of `tests/common`); one service account that sees
//! exactly one key of the ring; one connection; the two requests alternate so that drift
//! (the audit store growing, the page cache) hits both alike. Three rounds of
//! `KEYWARD_BENCH_EXISTENCE_SAMPLES` (default 20,000) samples of each; per round the median
//! and p90 of each, and their difference. Timings are printed, never asserted; the bench
//! only checks that both answers are the same refusal.

#[path = "../tests/common/mod.rs"]
mod common;

use common::daemon::Env;
use keyward_wire::handshake::{ClientKind, Hello, ServiceAccountKey};
use keyward_wire::pkcs11::Blob;
use keyward_wire::{Client, CryptoRequest, RequestBody, WireError};
use std::time::Instant;

const RING: &str = "projects/payments/keyRings/web";

fn samples() -> usize {
    std::env::var("KEYWARD_BENCH_EXISTENCE_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n: &usize| *n > 0)
        .unwrap_or(20_000)
}

/// One refused encrypt: its time in nanoseconds and its (rv, message).
fn probe(client: &mut Client, key: &str) -> (u64, (u64, String)) {
    let body = RequestBody::Crypto(CryptoRequest::Encrypt {
        key: key.to_string(),
        plaintext: Blob::new(b"probe".to_vec()),
        aad: Blob::new(Vec::new()),
    });
    let t = Instant::now();
    let r = client.call(body);
    let ns = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
    match r {
        Err(WireError::Remote(reply)) => (ns, (reply.rv, reply.message.unwrap_or_default())),
        other => panic!("{key}: expected a refusal, got {other:?}"),
    }
}

fn quantile(sorted: &[u64], q: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn main() {
    // `cargo test --benches` runs this too: do nothing then.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let n = samples();
    let mut env = Env::new();
    let prober = env.service_account_offline("prober");
    env.start();
    env.web_ring();
    env.create_keys(
        RING,
        &[
            ("aes", "ENCRYPT_DECRYPT", "AES_256_GCM"),
            ("own", "ENCRYPT_DECRYPT", "AES_256_GCM"),
        ],
    );
    env.bind(
        &format!("{RING}/cryptoKeys/own"),
        "roles/kms.cryptoKeyEncrypterDecrypter",
        "serviceAccount:prober@payments",
    );
    let hello = Hello::new(
        ClientKind::Ctl,
        None,
        Some(ServiceAccountKey::new(prober.as_str())),
    );
    let mut client = Client::connect(&env.client_socket, &hello).expect("connect");
    let invisible = format!("{RING}/cryptoKeys/aes");
    // The same length as the invisible key's name: the request frames are the same size.
    let absent = format!("{RING}/cryptoKeys/abx");
    let (_, a) = probe(&mut client, &invisible);
    let (_, b) = probe(&mut client, &absent);
    assert_eq!(
        (a.0, a.1.replace(&invisible, "K")),
        (b.0, b.1.replace(&absent, "K")),
        "the two refusals differ"
    );
    // Warm-up.
    for _ in 0..1000 {
        probe(&mut client, &invisible);
        probe(&mut client, &absent);
    }
    println!(
        "## Existence: encrypt refused on the client socket, invisible vs absent key ({n} \
         samples each per round, alternating, one connection)\n"
    );
    println!("| round | invisible median (µs) | absent median (µs) | Δ median (µs) | invisible p90 (µs) | absent p90 (µs) |");
    println!("|---|---|---|---|---|---|");
    // Every sample must be the same refusal (not, say, a rate limit's).
    let want = a.0;
    let timed = |client: &mut Client, key: &str| {
        let (ns, (rv, _)) = probe(client, key);
        assert_eq!(rv, want, "{key}: another answer than the first");
        ns
    };
    for round in 1..=3 {
        let mut inv = Vec::with_capacity(n);
        let mut abs = Vec::with_capacity(n);
        for i in 0..n {
            // Alternate which goes first, so neither always follows the other.
            if i % 2 == 0 {
                inv.push(timed(&mut client, &invisible));
                abs.push(timed(&mut client, &absent));
            } else {
                abs.push(timed(&mut client, &absent));
                inv.push(timed(&mut client, &invisible));
            }
        }
        inv.sort_unstable();
        abs.sort_unstable();
        let (mi, ma) = (quantile(&inv, 0.5), quantile(&abs, 0.5));
        println!(
            "| {round} | {mi:.2} | {ma:.2} | {:+.2} | {:.2} | {:.2} |",
            ma - mi,
            quantile(&inv, 0.9),
            quantile(&abs, 0.9)
        );
    }
}
