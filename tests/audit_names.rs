//! Audit action names (issue 18 item 6): one scheme for new records (`C_*` for module calls,
//! `service.method` for the rest), every name a run records documented in the README, and
//! `audit query --action` matching old and new names, prefixes and any case. Old records are
//! never rewritten: a record of the old scheme, appended to the chain as the code before
//! wrote it, is found by its new name and keeps its severity. A real SoftHSM2 token and a
//! real keywardd in temporary directories.

mod common;

use common::daemon::Env;
use common::{Output, ADMIN};
use keyward::audit::{self, NewRecord, Outcome};
use keyward::store::Store;
use std::collections::BTreeSet;
use std::path::Path;

const RING: &str = "projects/payments/keyRings/web";

fn key(id: &str) -> String {
    format!("{RING}/cryptoKeys/{id}")
}

/// The README's section that documents the action names: from its heading to the next.
fn readme_names_section() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let start = readme
        .find("### Audit action names")
        .expect("the README has no \"### Audit action names\" section");
    let rest = &readme[start + 3..];
    let end = rest
        .find("\n## ")
        .or_else(|| rest.find("\n### "))
        .unwrap_or(rest.len());
    rest[..end].to_string()
}

fn actions_of(out: &Output) -> Vec<String> {
    out.json_lines()
        .iter()
        .map(|r| r["action"].as_str().expect("action").to_string())
        .collect()
}

/// `audit query --action TERM --json` (through keywardd, or offline with `db`).
fn query(env: &Env, offline: bool, term: &str) -> Vec<String> {
    let args = ["--json", "audit", "query", "--action", term];
    let out = if offline {
        let mut all = vec!["--as", ADMIN];
        all.extend_from_slice(&args);
        env.offline(&all)
    } else {
        env.ctl(&args)
    };
    out.ok();
    actions_of(&out)
}

#[test]
fn action_names_are_documented_and_queried_by_old_and_new_names() {
    let mut env = Env::new();
    let crypter = env.service_account_offline("crypter");
    env.start();
    env.web_ring();
    env.create_keys(
        RING,
        &[
            ("aes", "ENCRYPT_DECRYPT", "AES_256_GCM"),
            ("ec", "ASYMMETRIC_SIGN", "EC_SIGN_P256_SHA256"),
        ],
    );
    env.bind(
        &key("aes"),
        "roles/kms.cryptoKeyEncrypterDecrypter",
        "serviceAccount:crypter@payments",
    );
    let plain = env.dir().join("plain");
    std::fs::write(&plain, b"order 42").expect("write");
    let ct = env.dir().join("ct");
    let pt = plain.to_str().expect("utf-8");
    let ct_s = ct.to_str().expect("utf-8");
    env.ctl_client_with_key(
        &crypter,
        &["encrypt", "--key", &key("aes"), "--in", pt, "--out", ct_s],
    )
    .ok();
    env.ctl_client_with_key(&crypter, &["decrypt", "--key", &key("aes"), "--in", ct_s])
        .ok();
    // A denied sign (no binding on the EC key) and a public key read.
    env.ctl_client_with_key(&crypter, &["sign", "--key", &key("ec"), "--in", pt])
        .failed();
    env.ctl(&["key", "get-public-key", &key("ec")]);

    // Every action this run recorded (the admin side, the crypto commands, keywardd's own
    // records) is documented in the README, and so is every action of the denial matrix's
    // golden file (the module's calls).
    let out = env.ctl(&["--json", "audit", "query"]);
    out.ok();
    let mut recorded: BTreeSet<String> = actions_of(&out).into_iter().collect();
    let golden = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/denial_matrix.audit"),
    )
    .expect("the denial matrix's golden file");
    recorded.extend(
        golden
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(' ').nth(1))
            .map(str::to_string),
    );
    // `--action` finds the crypto commands by their verb, by their full name, and by a
    // prefix, in any case.
    for term in ["encrypt", "key.encrypt", "KEY.ENCRYPT", "Encrypt"] {
        let got = query(&env, false, term);
        assert_eq!(got, ["key.encrypt"], "--action {term}");
    }
    let got = query(&env, false, "key");
    for want in ["key.create", "key.encrypt", "key.decrypt", "key.sign"] {
        assert!(
            got.iter().any(|a| a == want),
            "--action key: no {want} in {got:?}"
        );
    }
    assert!(
        got.iter().all(|a| a.starts_with("key.")),
        "--action key: {got:?}"
    );
    let got = query(&env, false, "C_Sign*");
    assert!(got.iter().all(|a| a.starts_with("C_Sign")), "{got:?}");

    // Old records: appended as the code before this scheme wrote them (never rewritten).
    env.signal_and_wait("TERM");
    {
        let store = Store::open(&env.db).expect("the store");
        for action in ["ExportKey", "Encrypt", "AsymmetricSign"] {
            audit::append(
                store.connection(),
                &NewRecord {
                    time_ms: 1,
                    principal: "serviceAccount:crypter@payments".into(),
                    peer_pid: None,
                    peer_uid: None,
                    instance: None,
                    action: action.into(),
                    resource: Some(key("aes")),
                    outcome: Outcome::Denied,
                    rv: 0x68,
                    detail: None,
                    request_id: None,
                },
            )
            .expect("append an old record");
        }
    }
    let got = query(&env, true, "key.export");
    assert_eq!(got, ["ExportKey"], "--action key.export");
    let got = query(&env, true, "encrypt");
    assert_eq!(got, ["key.encrypt", "Encrypt"], "--action encrypt");
    let got = query(&env, true, "key.sign");
    assert!(got.iter().any(|a| a == "AsymmetricSign"), "{got:?}");
    // The old export record is a warning, as the new one is.
    let out = env.offline(&[
        "--as",
        ADMIN,
        "--json",
        "audit",
        "query",
        "--action",
        "ExportKey",
    ]);
    out.ok();
    let rec = &out.json_lines()[0];
    assert_eq!(rec["severity"], "warning", "{rec}");
    env.offline(&["--as", ADMIN, "audit", "verify"]).ok();

    // Documented last, so the queries above fail first on a code without the scheme.
    let section = readme_names_section();
    let undocumented: Vec<&String> = recorded
        .iter()
        .filter(|a| !section.contains(&format!("`{a}`")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "actions recorded but not documented in the README: {undocumented:?}"
    );
}

/// Every name of the one table (`src/audit/actions.rs`), new and old, is in the README's list.
#[test]
fn every_name_of_the_table_is_documented() {
    let section = readme_names_section();
    let missing: Vec<&str> = audit::actions::ACTIONS
        .iter()
        .flat_map(|e| std::iter::once(e.name).chain(e.old.iter().copied()))
        .filter(|n| !section.contains(&format!("`{n}`")))
        .collect();
    assert!(missing.is_empty(), "not in the README's list: {missing:?}");
}
