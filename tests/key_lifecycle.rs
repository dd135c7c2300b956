//! Key lifecycle through the admin handler over a real SoftHSM2 token and a real store: one
//! key of every algorithm the token serves, rotation, primary, disable/enable, scheduled
//! destruction, restore, destruction after the grace period (an injected clock), and after
//! each step the token's objects, read directly through cryptoki, match the store.

use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use keyward::admin::{AdminError, AdminService, Caller, Clock};
use keyward::policy::{Member, Principal};
use keyward::store::{keys as skeys, Store};
use keyward_token::Token;
use keyward_wire::admin::{AdminRequest as R, AdminResponse};
use keyward_wire::keys::Algorithm;
use secrecy::SecretString;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

const ADMIN: &str = "user:admin@acme.example";
const RING: &str = "projects/payments/keyRings/web";

struct TestClock(AtomicI64);
impl Clock for TestClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

fn caller(m: &str) -> Caller {
    Caller::new(Principal::new(m.parse::<Member>().unwrap()))
}

/// A private SoftHSM2 store with one token; returns the opened token.
fn open_token(dir: &Path) -> Token {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("softhsm-config/init-token.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(dir)
        .arg("kw-backing")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "init-token.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // This test binary has one test function: nothing else reads the environment.
    std::env::set_var("SOFTHSM2_CONF", dir.join("softhsm2.conf"));
    let pin = std::fs::read_to_string(dir.join("user-pin")).unwrap();
    let module = std::env::var_os("TEST_PKCS11_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"));
    Token::open(&module, "kw-backing", SecretString::from(pin)).expect("open the token")
}

/// Every token object as (CKA_ID, class, sensitive, extractable), read with raw cryptoki.
/// (CKA_ID, class, CKA_SENSITIVE, CKA_EXTRACTABLE)
type Obj = (Vec<u8>, ObjectClass, Option<bool>, Option<bool>);

fn token_objects(token: &Token) -> Vec<Obj> {
    token
        .with_session(|s| {
            let mut out = Vec::new();
            for h in s.find_objects(&[Attribute::Token(true)])? {
                let attrs = s.get_attributes(
                    h,
                    &[
                        AttributeType::Id,
                        AttributeType::Class,
                        AttributeType::Label,
                    ],
                )?;
                let (mut id, mut class, mut label) = (Vec::new(), None, Vec::new());
                for a in attrs {
                    match a {
                        Attribute::Id(v) => id = v,
                        Attribute::Class(c) => class = Some(c),
                        Attribute::Label(l) => label = l,
                        _ => {}
                    }
                }
                if label.starts_with(b"keyward-") {
                    continue; // Keyward's own objects (audit key), not key versions.
                }
                let class = class.expect("class");
                let (mut sens, mut extr) = (None, None);
                if class == ObjectClass::PRIVATE_KEY || class == ObjectClass::SECRET_KEY {
                    for a in s.get_attributes(
                        h,
                        &[AttributeType::Sensitive, AttributeType::Extractable],
                    )? {
                        match a {
                            Attribute::Sensitive(b) => sens = Some(b),
                            Attribute::Extractable(b) => extr = Some(b),
                            _ => {}
                        }
                    }
                }
                out.push((id, class, sens, extr));
            }
            Ok(out)
        })
        .unwrap()
}

struct World {
    svc: AdminService,
    clock: Arc<TestClock>,
    token: Arc<Token>,
}

impl World {
    fn as_(&mut self, who: &str, req: R) -> Result<AdminResponse, AdminError> {
        self.svc.handle(&caller(who), req)
    }
    fn admin(&mut self, req: R) -> AdminResponse {
        let d = format!("{req:?}");
        self.as_(ADMIN, req).unwrap_or_else(|e| panic!("{d}: {e}"))
    }
    fn json(&mut self, req: R) -> serde_json::Value {
        serde_json::from_str(&self.admin(req).json).unwrap()
    }
    /// The object map: CKA_ID → (version name, state), for versions not destroyed.
    fn map(&mut self) -> Vec<skeys::MappedObject> {
        skeys::object_map(self.svc.store_mut().connection()).unwrap()
    }
    /// Asserts the token holds exactly the objects of the live versions, with custody.
    fn assert_matches(&mut self, step: &str) {
        let map = self.map();
        let objects = token_objects(&self.token);
        let live: BTreeSet<Vec<u8>> = map
            .iter()
            .filter(|m| m.state != skeys::VersionState::Destroyed)
            .map(|m| m.token_id.clone())
            .collect();
        let present: BTreeSet<Vec<u8>> = objects.iter().map(|o| o.0.clone()).collect();
        assert_eq!(
            live, present,
            "{step}: token objects differ from the store's object map"
        );
        for (id, class, sensitive, extractable) in &objects {
            if *class == ObjectClass::PRIVATE_KEY || *class == ObjectClass::SECRET_KEY {
                assert_eq!(*sensitive, Some(true), "{step}: {id:02x?} not sensitive");
                assert!(extractable.is_some(), "{step}: no CKA_EXTRACTABLE");
            }
        }
        let report = self.svc.reconcile().unwrap();
        assert!(
            report.orphans.is_empty() && report.missing.is_empty(),
            "{step}: {report}"
        );
    }
    fn primary(&mut self, key: &str) -> u64 {
        self.json(R::KeyGet { name: key.into() })["primaryVersion"]
            .as_u64()
            .unwrap()
    }
    fn state(&mut self, version: &str) -> String {
        self.json(R::VersionGet {
            name: version.into(),
        })["state"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

fn create(
    w: &mut World,
    id: &str,
    alg: Algorithm,
    exportable: bool,
) -> Result<AdminResponse, AdminError> {
    w.as_(
        ADMIN,
        R::KeyCreate {
            keyring: RING.into(),
            id: id.into(),
            purpose: alg.purpose().as_str().into(),
            algorithm: alg.as_str().into(),
            exportable,
        },
    )
}

#[test]
fn key_lifecycle_against_softhsm2() {
    let dir = tempfile::tempdir().unwrap();
    let token = Arc::new(open_token(&dir.path().join("hsm")));
    let store = Store::open(&dir.path().join("keyward.db")).unwrap();
    let clock = Arc::new(TestClock(AtomicI64::new(1_795_000_000_000)));
    let svc = AdminService::with_token(store, clock.clone(), token.clone());
    let mut w = World { svc, clock, token };
    w.as_(
        "unix-uid:0",
        R::Init {
            org: "acme".into(),
            admin: ADMIN.into(),
        },
    )
    .unwrap();
    w.admin(R::ProjectCreate {
        parent: "organizations/acme".into(),
        id: "payments".into(),
    });
    w.admin(R::KeyRingCreate {
        parent: "projects/payments".into(),
        id: "web".into(),
        token_label: None,
    });
    w.assert_matches("empty");

    // One key of every algorithm; the SHA-256 OAEP ones are refused, naming the mechanism.
    for alg in Algorithm::ALL {
        let id = alg.as_str().to_lowercase().replace('_', "-");
        let r = create(&mut w, &id, alg, false);
        if alg.as_str().starts_with("RSA_DECRYPT_OAEP") && alg.as_str().ends_with("SHA256") {
            let e = r.expect_err(alg.as_str());
            assert!(e.message.contains("CKM_RSA_PKCS_OAEP with SHA-256"), "{e}");
        } else {
            r.unwrap_or_else(|e| panic!("{alg}: {e}"));
        }
    }
    w.assert_matches("after creating every algorithm");
    let map = w.map();
    assert_eq!(map.len(), 14, "14 algorithms SoftHSM2 2.6 serves");
    for (_, class, _, extractable) in token_objects(&w.token) {
        if class == ObjectClass::PRIVATE_KEY || class == ObjectClass::SECRET_KEY {
            assert_eq!(extractable, Some(false));
        }
    }

    // Exportable needs exportKeyMaterial on the ring: the org admin lacks it.
    let e = create(&mut w, "exp", Algorithm::Aes256Gcm, true).unwrap_err();
    assert!(
        e.message
            .contains("kms.cryptoKeyVersions.exportKeyMaterial"),
        "{e}"
    );
    w.admin(R::IamBind {
        resource: RING.into(),
        role: "kms:FullAccess".into(),
        member: ADMIN.into(),
        allow_sod_violation: false,
    });
    create(&mut w, "exp", Algorithm::Aes256Gcm, true).unwrap();
    let exp_id = w
        .map()
        .into_iter()
        .find(|m| m.name.contains("/cryptoKeys/exp/"))
        .unwrap()
        .token_id;
    let exp = token_objects(&w.token)
        .into_iter()
        .find(|o| o.0 == exp_id)
        .unwrap();
    assert_eq!(
        (exp.2, exp.3),
        (Some(true), Some(true)),
        "exportable: sensitive but extractable"
    );
    w.assert_matches("exportable");

    // A principal without kms.cryptoKeys.create cannot create a key; nothing reaches the token.
    w.admin(R::IamBind {
        resource: RING.into(),
        role: "roles/kms.viewer".into(),
        member: "user:v@acme.example".into(),
        allow_sod_violation: false,
    });
    let before = token_objects(&w.token).len();
    let e = w
        .as_(
            "user:v@acme.example",
            R::KeyCreate {
                keyring: RING.into(),
                id: "nope".into(),
                purpose: "MAC".into(),
                algorithm: "HMAC_SHA256".into(),
                exportable: false,
            },
        )
        .unwrap_err();
    assert!(e.message.contains("permission denied"), "{e}");
    assert_eq!(before, token_objects(&w.token).len());
    let q = w.json(R::AuditQuery {
        filter: keyward_wire::admin::AuditFilter {
            principal: Some("user:v@acme.example".into()),
            action: Some("key.create".into()),
            result: Some("denied".into()),
            ..Default::default()
        },
    });
    assert_eq!(q.as_array().unwrap().len(), 1, "the denial is audited");

    // Rotation: symmetric keys move their primary, asymmetric ones only when asked.
    let aes = format!("{RING}/cryptoKeys/aes-256-gcm");
    let ec = format!("{RING}/cryptoKeys/ec-sign-p256-sha256");
    w.admin(R::KeyRotate {
        name: aes.clone(),
        set_primary: false,
    });
    assert_eq!(w.primary(&aes), 2);
    w.admin(R::KeyRotate {
        name: ec.clone(),
        set_primary: false,
    });
    assert_eq!(w.primary(&ec), 1);
    w.admin(R::KeyRotate {
        name: ec.clone(),
        set_primary: true,
    });
    assert_eq!(w.primary(&ec), 3);
    w.admin(R::KeySetPrimary {
        name: ec.clone(),
        version: 2,
    });
    assert_eq!(w.primary(&ec), 2);
    w.assert_matches("after rotations");

    // The public key is a PEM that OpenSSL reads.
    let pem = w.json(R::KeyGetPublicKey {
        name: ec.clone(),
        version: None,
    })["pem"]
        .as_str()
        .unwrap()
        .to_string();
    let pem_path = dir.path().join("ec.pem");
    std::fs::write(&pem_path, &pem).unwrap();
    let out = Command::new("openssl")
        .args(["pkey", "-pubin", "-noout", "-text", "-in"])
        .arg(&pem_path)
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("prime256v1"),
        "{out:?}"
    );

    // Disable, enable, schedule destruction, restore, destroy after the grace period.
    let v1 = format!("{aes}/cryptoKeyVersions/1");
    w.admin(R::VersionDisable { name: v1.clone() });
    assert_eq!(w.state(&v1), "DISABLED");
    w.admin(R::VersionEnable { name: v1.clone() });
    assert_eq!(w.state(&v1), "ENABLED");
    let e = w
        .as_(
            ADMIN,
            R::VersionDestroy {
                name: v1.clone(),
                grace_secs: Some(3600),
            },
        )
        .unwrap_err();
    assert!(e.message.contains("at least 1 day"), "{e}");
    let e = w
        .as_(
            ADMIN,
            R::VersionDestroy {
                name: format!("{aes}/cryptoKeyVersions/2"),
                grace_secs: None,
            },
        )
        .unwrap_err();
    assert!(e.message.contains("is the primary"), "{e}");
    w.admin(R::VersionDestroy {
        name: v1.clone(),
        grace_secs: None,
    });
    assert_eq!(w.state(&v1), "DESTROY_SCHEDULED");
    w.assert_matches("scheduled: the object stays until the grace ends");
    w.admin(R::VersionRestore { name: v1.clone() });
    assert_eq!(w.state(&v1), "DISABLED");
    w.admin(R::VersionDestroy {
        name: v1.clone(),
        grace_secs: Some(86_400),
    });
    assert!(
        w.svc.destroy_due().unwrap().is_empty(),
        "nothing is due before the grace ends"
    );
    w.clock.0.fetch_add(86_400 * 1000 + 1000, Ordering::SeqCst);
    assert_eq!(w.svc.destroy_due().unwrap(), vec![v1.clone()]);
    assert_eq!(w.state(&v1), "DESTROYED");
    w.assert_matches("after destruction");
    let e = w
        .as_(ADMIN, R::VersionRestore { name: v1.clone() })
        .unwrap_err();
    assert!(e.message.contains("destroyed"), "{e}");

    // Reconciliation reports drift and deletes nothing.
    let stray = w.token.new_object_id().unwrap();
    w.token
        .generate_key(&keyward_token::KeySpec {
            algorithm: Algorithm::Aes128Gcm,
            id: &stray,
            label: "stray",
            exportable: false,
        })
        .unwrap();
    let gone = w
        .map()
        .into_iter()
        .find(|m| m.name.contains("hmac-sha256"))
        .unwrap();
    w.token.destroy_by_id(&gone.token_id).unwrap();
    let report = w.svc.reconcile().unwrap();
    assert_eq!(report.orphans.len(), 1, "{report}");
    assert!(report.orphans[0].contains("stray"), "{report}");
    assert_eq!(report.missing, vec![gone.name.clone()]);
    assert_eq!(
        w.token.find_by_id(&stray).unwrap().len(),
        1,
        "reconciliation deletes nothing"
    );
    let q = w.json(R::AuditQuery {
        filter: keyward_wire::admin::AuditFilter {
            action: Some("reconcile.orphan".into()),
            ..Default::default()
        },
    });
    assert!(!q.as_array().unwrap().is_empty());

    // Offline (no token) key operations are refused with a clear message.
    let mut offline = AdminService::new(
        Store::open(&dir.path().join("keyward.db")).unwrap(),
        w.clock.clone(),
    );
    let e = offline
        .handle(
            &caller(ADMIN),
            R::KeyRotate {
                name: aes.clone(),
                set_primary: false,
            },
        )
        .unwrap_err();
    assert!(e.message.contains("only keywardd holds"), "{e}");
}
