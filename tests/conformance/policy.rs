//! The refusals by policy the README lists ("Refused by policy", issue 14 item 10), each with
//! the code a client gets, through the built module: RSA under 2048 bits, DES/3DES, plaintext
//! private keys (token and session) and secret token keys without `allow_plaintext_import`,
//! custody under `strict_templates`, raw RSA, copy of a Keyward key, `C_DigestKey`, the token
//! flags of the login throttle, a keywardctl key with another algorithm's mechanism, and a
//! truncated HMAC verified without useToSign.

use crate::common::daemon::Env;
use crate::common::module::{self, rv, In, Mech, Settings};
use cryptoki::error::RvError;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;

const RING: &str = "projects/payments/keyRings/web";

fn login(s: &Session, pin: &str) {
    let _ = s.logout();
    s.login(UserType::User, Some(&AuthPin::new(pin.to_owned().into())))
        .unwrap_or_else(|e| panic!("C_Login: {e}"));
}

fn rsa(bits: u64, token: bool) -> (Vec<Attribute>, Vec<Attribute>) {
    (
        vec![
            Attribute::Token(token),
            Attribute::ModulusBits(bits.into()),
            Attribute::PublicExponent(vec![1, 0, 1]),
            Attribute::Verify(true),
        ],
        vec![Attribute::Token(token), Attribute::Sign(true)],
    )
}

#[test]
fn refusals_by_policy_answer_the_documented_codes() {
    let excl = module::exclusive();
    let mut env = Env::new();
    let verifier = env.service_account_offline("verifier");
    let owner = env.service_account_offline("owner");
    env.start();
    env.web_ring();
    env.create_key(RING, "gcm", "ENCRYPT_DECRYPT", "AES_256_GCM");
    for role in ["roles/kms.admin", "roles/kms.cryptoOperator"] {
        env.bind(RING, role, "serviceAccount:owner@payments");
    }
    env.bind(
        RING,
        "roles/kms.verifier",
        "serviceAccount:verifier@payments",
    );
    let settings = Settings::new(&env.client_socket, &env.dir().join("module.toml"));
    let p11 = module::cryptoki(&settings);
    let slot = module::ring_slot(&p11, RING);

    // The login throttle is per peer uid: the token never claims a PIN count.
    let ti = p11.get_token_info(slot).unwrap();
    assert!(
        !ti.user_pin_count_low() && !ti.user_pin_final_try() && !ti.user_pin_locked(),
        "{ti:?}"
    );
    // Neither DES/3DES nor raw RSA is listed; RSA starts at 2048 bits.
    let listed = p11.get_mechanism_list(slot).unwrap();
    for m in [
        MechanismType::DES3_KEY_GEN,
        MechanismType::DES3_CBC,
        MechanismType::DES3_ECB,
        MechanismType::RSA_X_509,
    ] {
        assert!(!listed.contains(&m), "{m} is listed");
    }
    let i = p11
        .get_mechanism_info(slot, MechanismType::RSA_PKCS_KEY_PAIR_GEN)
        .unwrap();
    assert_eq!(i.min_key_size(), 2048);

    let s = p11.open_rw_session(slot).unwrap();
    login(&s, &owner);
    for token in [true, false] {
        let (public, private) = rsa(1024, token);
        assert_eq!(
            rv(s.generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)),
            RvError::AttributeValueInvalid,
            "RSA-1024, token {token}"
        );
        assert_eq!(
            rv(s.generate_key(
                &Mechanism::Des3KeyGen,
                &[Attribute::Token(token), Attribute::Sign(false)]
            )),
            RvError::MechanismInvalid,
            "3DES, token {token}"
        );
        assert_eq!(
            rv(s.create_object(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::DES3),
                Attribute::Token(token),
                Attribute::Value(vec![1; 24]),
            ])),
            RvError::TemplateInconsistent,
            "3DES material, token {token}"
        );
        assert_eq!(
            rv(s.create_object(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(KeyType::EC),
                Attribute::Token(token),
                Attribute::EcParams(vec![
                    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07
                ]),
                Attribute::Value(vec![1; 32]),
            ])),
            RvError::TemplateInconsistent,
            "plaintext private key, token {token}"
        );
    }
    // A plaintext secret token key without allow_plaintext_import on the ring.
    assert_eq!(
        rv(s.create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(true),
            Attribute::Value(vec![1; 32]),
        ])),
        RvError::TemplateInconsistent
    );
    // Custody: corrected, or with strict_templates refused.
    let weak = [
        Attribute::Token(true),
        Attribute::ValueLen(32.into()),
        Attribute::Sensitive(false),
    ];
    let aes = s.generate_key(&Mechanism::AesKeyGen, &weak).unwrap();
    let got = s
        .get_attributes(aes, &[cryptoki::object::AttributeType::Sensitive])
        .unwrap();
    assert_eq!(got, vec![Attribute::Sensitive(true)]);
    env.ctl(&["keyring", "update", RING, "--strict-templates", "true"])
        .ok();
    assert_eq!(
        rv(s.generate_key(&Mechanism::AesKeyGen, &weak)),
        RvError::AttributeValueInvalid
    );
    env.ctl(&["keyring", "update", RING, "--strict-templates", "false"])
        .ok();
    // Copy of a Keyward key; C_DigestKey.
    assert_eq!(rv(s.copy_object(aes, &[])), RvError::ActionProhibited);
    s.digest_init(&Mechanism::Sha256).unwrap();
    assert_eq!(rv(s.digest_key(aes)), RvError::FunctionNotSupported);
    // Raw RSA on an RSA signing key.
    let (public, private) = rsa(2048, true);
    let (_, rsa_priv) = s
        .generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)
        .unwrap();
    assert_eq!(
        rv(s.sign(&Mechanism::RsaX509, rsa_priv, &[0; 256])),
        RvError::MechanismInvalid
    );
    // keywardctl's AES-GCM key in CBC.
    let gcm = s
        .find_objects(&[Attribute::Label(b"gcm".to_vec())])
        .unwrap();
    assert_eq!(gcm.len(), 1);
    assert_eq!(
        rv(s.encrypt(&Mechanism::AesCbcPad([0; 16]), gcm[0], b"x")),
        RvError::MechanismInvalid
    );

    // A truncated HMAC (the _GENERAL form) is verified only with useToSign; the full MAC
    // is verified with useToVerify alone.
    let mac_key = s
        .generate_key(
            &Mechanism::GenericSecretKeyGen,
            &[
                Attribute::Token(true),
                Attribute::ValueLen(32.into()),
                Attribute::Label(b"mac".to_vec()),
            ],
        )
        .unwrap();
    let data = b"policy".to_vec();
    let full = s.sign(&Mechanism::Sha256Hmac, mac_key, &data).unwrap();
    let raw = excl.raw();
    let (r, h) = raw.open_session(module::ring_slot_id(RING));
    assert_eq!(r, 0);
    let short = Mech::Bytes(0x252, module::ulong_bytes(16));
    let full_general = Mech::Bytes(0x252, module::ulong_bytes(32));
    let short_mac = module::raw_sign(raw, h, &short, mac_key.handle(), &data);
    assert_eq!(short_mac, full[..16].to_vec());
    login(&s, &verifier);
    let found = s
        .find_objects(&[Attribute::Label(b"mac".to_vec())])
        .unwrap();
    assert_eq!(found.len(), 1);
    let mac_key = found[0];
    s.verify(&Mechanism::Sha256Hmac, mac_key, &data, &full)
        .unwrap();
    // CKR_KEY_FUNCTION_NOT_PERMITTED
    assert_eq!(raw.verify_init(h, &short, mac_key.handle()), 0x68);
    assert_eq!(raw.verify_init(h, &full_general, mac_key.handle()), 0);
    assert_eq!(raw.verify(h, In::Bytes(&data), In::Bytes(&full)), 0);
    assert_eq!(raw.close_session(h), 0);
}
