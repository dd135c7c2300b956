//! keywardd on SoftHSM2 (the default token): `keywardctl token capabilities` agrees with the
//! README's "Backing tokens" column, and says nothing Keyward uses is missing but OAEP with
//! SHA-256 (SoftHSM2 2.6 does OAEP with SHA-1 only).

use crate::common::backing::assert_readme_matches;
use crate::common::daemon::Env;

#[test]
fn softhsm2_capabilities_match_the_readme() {
    let mut env = Env::new();
    env.start();
    let out = env.ctl(&["--json", "token", "capabilities"]);
    out.ok();
    let json = out.json();
    println!("{json:#}");
    let oaep256 = json["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "oaep-sha256")
        .expect("oaep-sha256 reported")
        .clone();
    assert_eq!(oaep256["available"], false, "{oaep256}");
    assert!(
        oaep256["disables"]
            .to_string()
            .contains("RSA_DECRYPT_OAEP_*_SHA256"),
        "{oaep256}"
    );
    let human = env.ctl(&["token", "capabilities"]);
    human.ok();
    assert!(
        human.stdout.contains("CKM_RSA_PKCS_OAEP with SHA-256"),
        "{human:#?}"
    );
    let status = env.ctl(&["status"]);
    status.ok();
    assert!(status.stdout.contains("oaep-sha256"), "{status:#?}");
    // Offline there is no token to ask.
    let offline = env.offline(&["--as", crate::common::ADMIN, "token", "capabilities"]);
    offline.failed();
    assert_readme_matches("SoftHSM2", &json);
}
