//! Attacks: crypto semantics (design §9 "Crypto semantics, not only call rights"; issue 13
//! finding 1). A permission grants a capability, never an oracle for another:
//!
//! - an encrypt-only principal (`roles/kms.cryptoKeyEncrypter`) that could choose a GCM IV or
//!   a CTR counter block reuses a victim's and recovers the victim's plaintext by XOR; with
//!   ECB, CBC or CBC-PAD it has a raw block-encryption oracle. keywardd therefore generates
//!   its GCM IV / CTR counter block at `C_EncryptInit` and the module writes it into the
//!   caller's `pIv` / `cb`; ECB and CBC(-PAD) are refused to it;
//! - a decrypt-only principal given CTR has an encryption oracle: refused;
//! - a principal holding both keeps its own IVs.
//!
//! Through the built module (raw C calls, so both `CK_GCM_PARAMS` layouts, a NULL `pIv` and a
//! CTR structure can be written) against a real keywardd and SoftHSM2.

use crate::common::daemon::Env;
use crate::common::module::*;

const RING: &str = "projects/payments/keyRings/web";
/// A KMS-style key (`keywardctl key create`, AES-256-GCM).
const KMS_KEY: &str = "secret";
/// An AES key made through the module (offers ECB, CBC, CBC-PAD and CTR too).
const MOD_KEY: &[u8] = b"m-aes";

const CKM_AES_ECB: Ulong = 0x1081;
const CKM_AES_CBC: Ulong = 0x1082;
const CKM_AES_CBC_PAD: Ulong = 0x1085;
const CKR_KEY_FUNCTION_NOT_PERMITTED: Rv = 0x68;

const DATA: &[u8] = b"attack at dawn; bring the keys and the ledger";

/// The principals: `victim` and `both` hold encrypterDecrypter, `enc` encrypter, `dec`
/// decrypter, all on the ring.
struct World {
    env: Env,
    victim: String,
    enc: String,
    dec: String,
    both: String,
}

fn world() -> World {
    let mut env = Env::new();
    let victim = env.service_account_offline("victim");
    let enc = env.service_account_offline("enc");
    let dec = env.service_account_offline("dec");
    let both = env.service_account_offline("both");
    env.start();
    env.web_ring();
    env.create_key(RING, KMS_KEY, "ENCRYPT_DECRYPT", "AES_256_GCM");
    for (who, role) in [
        ("victim", "roles/kms.cryptoKeyEncrypterDecrypter"),
        ("both", "roles/kms.cryptoKeyEncrypterDecrypter"),
        ("enc", "roles/kms.cryptoKeyEncrypter"),
        ("dec", "roles/kms.cryptoKeyDecrypter"),
    ] {
        env.bind(RING, role, &format!("serviceAccount:{who}@payments"));
    }
    World {
        env,
        victim,
        enc,
        dec,
        both,
    }
}

fn gcm48(iv: &[u8]) -> Mech {
    Mech::GcmRaw {
        with_iv_bits: true,
        iv: Some(iv.to_vec()),
        iv_len: iv.len() as Ulong,
        iv_bits: (iv.len() * 8) as Ulong,
        aad: b"aad".to_vec(),
        tag_bits: 128,
    }
}

fn gcm40(iv: &[u8]) -> Mech {
    Mech::GcmRaw {
        with_iv_bits: false,
        iv: Some(iv.to_vec()),
        iv_len: iv.len() as Ulong,
        iv_bits: 0,
        aad: b"aad".to_vec(),
        tag_bits: 128,
    }
}

fn ctr(cb: [u8; 16]) -> Mech {
    Mech::Ctr {
        counter_bits: 128,
        cb,
    }
}

/// A module session on [`RING`]'s slot logged in as the service account whose key is `key`.
struct As<'a> {
    raw: &'a Raw,
    h: Ulong,
}

impl<'a> As<'a> {
    fn new(raw: &'a Raw, key: &str) -> As<'a> {
        let (rv, h) = raw.open_session(ring_slot_id(RING) as Ulong);
        assert_eq!(rv, CKR_OK, "C_OpenSession");
        assert_eq!(raw.login(h, In::Bytes(key.as_bytes())), CKR_OK, "C_Login");
        As { raw, h }
    }

    /// The secret key labelled `label`.
    fn key(&self, label: &[u8]) -> Ulong {
        let found = self.raw.find(
            self.h,
            &[
                (CKA_CLASS, ulong_bytes(CKO_SECRET_KEY)),
                (CKA_LABEL, label.to_vec()),
            ],
        );
        assert_eq!(found.len(), 1, "one secret key labelled {label:?}");
        found[0]
    }

    /// `C_EncryptInit` then (if it worked) `C_Encrypt` of `data`: the Init's CK_RV, the
    /// IV / counter block in the caller's structure afterwards, the ciphertext.
    fn encrypt(&self, mech: &Mech, key: Ulong, data: &[u8]) -> (Rv, Vec<u8>, Vec<u8>) {
        let (rv, iv) = self.raw.encrypt_init_iv(self.h, mech, key);
        if rv != CKR_OK {
            return (rv, iv, vec![]);
        }
        let mut out = vec![0u8; data.len() + 64];
        let (rv, n) = self
            .raw
            .encrypt(self.h, In::Bytes(data), Out::Buf(&mut out));
        assert_eq!(rv, CKR_OK, "C_Encrypt");
        out.truncate(n as usize);
        (CKR_OK, iv, out)
    }

    /// `C_DecryptInit` then (if it worked) `C_Decrypt`: the Init's CK_RV and the plaintext.
    fn decrypt(&self, mech: &Mech, key: Ulong, ct: &[u8]) -> (Rv, Vec<u8>) {
        let rv = self.raw.decrypt_init(self.h, mech, key);
        if rv != CKR_OK {
            return (rv, vec![]);
        }
        let mut out = vec![0u8; ct.len() + 64];
        let (rv, n) = self.raw.decrypt(self.h, In::Bytes(ct), Out::Buf(&mut out));
        assert_eq!(rv, CKR_OK, "C_Decrypt");
        out.truncate(n as usize);
        (CKR_OK, out)
    }
}

impl Drop for As<'_> {
    fn drop(&mut self) {
        let _ = self.raw.logout(self.h);
        let _ = self.raw.close_session(self.h);
    }
}

fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

/// Finding 1 as reported: the victim encrypts with `keywardctl encrypt`; the encrypt-only
/// attacker takes the IV from the victim's KW1 envelope, encrypts zeros with it through the
/// module and XORs: the victim's plaintext must not come out. keywardctl's own encrypt never
/// lets the caller choose the IV (a fresh one per call, also for an encrypt-only caller).
#[test]
fn encrypt_only_principal_cannot_reuse_a_victims_iv() {
    let excl = exclusive();
    let raw = excl.raw();
    let w = world();
    let env = &w.env;
    let key_name = format!("{RING}/cryptoKeys/{KMS_KEY}");
    let secret = b"the payroll password is hunter2, do not share";
    let pt = env.dir().join("victim.txt");
    std::fs::write(&pt, secret).unwrap();
    let ct_path = env.dir().join("victim.kw1");
    env.ctl_client_with_key(
        &w.victim,
        &[
            "encrypt",
            "--key",
            &key_name,
            "--in",
            pt.to_str().unwrap(),
            "--out",
            ct_path.to_str().unwrap(),
        ],
    )
    .ok();
    let envelope = std::fs::read(&ct_path).unwrap();
    assert_eq!(&envelope[..3], b"KW1");
    let victim_iv = envelope[11..23].to_vec();
    let victim_ct = &envelope[23..23 + secret.len()];

    let settings = Settings::new(&env.client_socket, &env.dir().join("module.toml"));
    assert_eq!(raw.initialize(Some(&settings)), CKR_OK);
    let attacker = As::new(raw, &w.enc);
    let k = attacker.key(KMS_KEY.as_bytes());
    let zeros = vec![0u8; secret.len()];
    // With the victim's IV itself (both GCM layouts), then with a zero IV.
    for (what, mech) in [
        ("the victim's IV, 48-byte CK_GCM_PARAMS", gcm48(&victim_iv)),
        ("the victim's IV, 40-byte CK_GCM_PARAMS", gcm40(&victim_iv)),
        ("a zero IV", gcm48(&[0u8; 12])),
    ] {
        let (rv, used_iv, keystream) = attacker.encrypt(&mech, k, &zeros);
        if rv != CKR_OK {
            assert_eq!(
                rv, CKR_MECHANISM_PARAM_INVALID,
                "{what}: refused with the wrong code"
            );
            continue;
        }
        assert!(
            xor(&keystream, victim_ct) != secret,
            "the encrypt-only principal recovered the victim's plaintext with {what}"
        );
        assert_ne!(used_iv, victim_iv, "{what}: the victim's IV was used");
    }
    drop(attacker);

    // keywardctl encrypt as the encrypt-only principal: keywardd draws each IV.
    let mut ivs = Vec::new();
    for i in 0..2 {
        let out = env.dir().join(format!("enc-{i}.kw1"));
        env.ctl_client_with_key(
            &w.enc,
            &[
                "encrypt",
                "--key",
                &key_name,
                "--in",
                pt.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
        )
        .ok();
        let e = std::fs::read(&out).unwrap();
        ivs.push(e[11..23].to_vec());
    }
    assert_ne!(ivs[0], ivs[1], "keywardctl encrypt repeated an IV");
    assert!(
        !ivs.contains(&victim_iv),
        "keywardctl encrypt reused the victim's IV"
    );
    assert!(
        ivs.iter().all(|iv| iv != &[0u8; 12]),
        "keywardctl encrypt used a zero IV"
    );
}

/// Acceptance 2: the IV rules of design §9 through the module, on a KMS-style key (GCM) and a
/// key made through the module (GCM, CTR, ECB, CBC, CBC-PAD).
#[test]
fn iv_rules_for_encrypt_only_decrypt_only_and_both() {
    let excl = exclusive();
    let raw = excl.raw();
    let w = world();
    let env = &w.env;
    let settings = Settings::new(&env.client_socket, &env.dir().join("module.toml"));
    // The AES key made through the module by the pre-login principal (the organisation's
    // admin, this uid; logged in with an empty PIN): with CKA_ENCRYPT and CKA_DECRYPT.
    let p11 = cryptoki(&settings);
    {
        use cryptoki::mechanism::Mechanism;
        use cryptoki::object::{Attribute, KeyType, ObjectClass};
        let s = p11.open_rw_session(ring_slot(&p11, RING)).unwrap();
        login_with(&s, "");
        s.generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32.into()),
                Attribute::Label(MOD_KEY.to_vec()),
                Attribute::Id(MOD_KEY.to_vec()),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
            ],
        )
        .unwrap();
        s.logout().unwrap();
    }
    let zero12 = [0u8; 12];

    // ---- The encrypt-only principal.
    let enc = As::new(raw, &w.enc);
    let kms = enc.key(KMS_KEY.as_bytes());
    let m = enc.key(MOD_KEY);
    let mut gcm_results = Vec::new();
    for (what, key) in [("KMS key", kms), ("module key", m)] {
        for (layout, mech) in [("48", gcm48(&zero12)), ("40", gcm40(&zero12))] {
            let (rv, iv, ct) = enc.encrypt(&mech, key, DATA);
            assert_eq!(
                rv, CKR_OK,
                "{what}, {layout}-byte GCM, zero IV: C_EncryptInit"
            );
            assert_eq!(iv.len(), 12);
            assert_ne!(
                iv, zero12,
                "{what}, {layout}-byte GCM: the generated IV was not written to pIv"
            );
            gcm_results.push((what, key, layout, iv, ct));
        }
        // Anything but a zero 12-byte IV (and ulIvBits 96) in a non-NULL pIv.
        let nonzero: Vec<u8> = (1..=12).collect();
        let refused = [
            ("a non-zero IV", gcm48(&nonzero)),
            ("a non-zero IV, 40-byte layout", gcm40(&nonzero)),
            ("a short zero IV", gcm48(&[0u8; 8])),
            ("a long zero IV", gcm48(&[0u8; 16])),
            (
                "ulIvBits 0",
                Mech::GcmRaw {
                    with_iv_bits: true,
                    iv: Some(zero12.to_vec()),
                    iv_len: 12,
                    iv_bits: 0,
                    aad: vec![],
                    tag_bits: 128,
                },
            ),
            (
                "a NULL pIv of length 12",
                Mech::GcmRaw {
                    with_iv_bits: true,
                    iv: None,
                    iv_len: 12,
                    iv_bits: 96,
                    aad: vec![],
                    tag_bits: 128,
                },
            ),
            (
                "a NULL pIv of length 0",
                Mech::GcmRaw {
                    with_iv_bits: false,
                    iv: None,
                    iv_len: 0,
                    iv_bits: 0,
                    aad: vec![],
                    tag_bits: 128,
                },
            ),
        ];
        for (case, mech) in refused {
            let (rv, _, _) = enc.encrypt(&mech, key, DATA);
            assert_eq!(
                rv, CKR_MECHANISM_PARAM_INVALID,
                "{what}: GCM with {case} by the encrypt-only principal"
            );
        }
    }
    let ivs: Vec<&Vec<u8>> = gcm_results.iter().map(|r| &r.3).collect();
    for (i, a) in ivs.iter().enumerate() {
        assert!(
            !ivs[i + 1..].contains(a),
            "a generated GCM IV repeated: {ivs:?}"
        );
    }
    // CTR: a generated counter block.
    let (rv, cb, ctr_ct) = enc.encrypt(&ctr([0; 16]), m, DATA);
    assert_eq!(rv, CKR_OK, "CTR, zero counter block: C_EncryptInit");
    assert_ne!(
        cb,
        vec![0u8; 16],
        "CTR: the generated counter block was not written to cb"
    );
    // A short counter (8 bits: 256 blocks) still covers what it would from a zero block: the
    // generated block's counter bits start at 0.
    let long = vec![0x42u8; 256 * 16];
    let short_ctr = Mech::Ctr {
        counter_bits: 8,
        cb: [0; 16],
    };
    let (rv, short_cb, short_ct) = enc.encrypt(&short_ctr, m, &long);
    assert_eq!(rv, CKR_OK, "CTR with an 8-bit counter: C_EncryptInit");
    assert_eq!(
        short_ct.len(),
        long.len(),
        "CTR with an 8-bit counter over 256 blocks"
    );
    assert_ne!(
        short_cb[..15],
        [0u8; 15],
        "CTR: the nonce part was not generated"
    );
    let (rv, _, _) = enc.encrypt(&ctr([9; 16]), m, DATA);
    assert_eq!(
        rv, CKR_MECHANISM_PARAM_INVALID,
        "CTR with a chosen counter block by the encrypt-only principal"
    );
    // ECB, CBC, CBC-PAD: a raw block-encryption oracle.
    for (what, mech) in [
        ("ECB", Mech::Plain(CKM_AES_ECB)),
        ("CBC", Mech::Bytes(CKM_AES_CBC, vec![0; 16])),
        ("CBC-PAD", Mech::Bytes(CKM_AES_CBC_PAD, vec![0; 16])),
        (
            "CBC-PAD, non-zero IV",
            Mech::Bytes(CKM_AES_CBC_PAD, vec![5; 16]),
        ),
    ] {
        let (rv, _, _) = enc.encrypt(&mech, m, &[0u8; 32]);
        assert_eq!(
            rv, CKR_KEY_FUNCTION_NOT_PERMITTED,
            "{what} by the encrypt-only principal"
        );
    }
    drop(enc);

    // ---- The decrypt-only principal: decrypts with the IVs written back; no CTR.
    let dec = As::new(raw, &w.dec);
    for (what, key, layout, iv, ct) in &gcm_results {
        let mech = if *layout == "48" {
            gcm48(iv)
        } else {
            gcm40(iv)
        };
        let (rv, back) = dec.decrypt(&mech, *key, ct);
        assert_eq!(
            rv, CKR_OK,
            "{what}, {layout}-byte GCM: C_DecryptInit by the decrypter"
        );
        assert_eq!(
            back, DATA,
            "{what}, {layout}-byte GCM: decrypted with the written IV"
        );
    }
    let (rv, _) = dec.decrypt(&ctr(cb.clone().try_into().unwrap()), m, &ctr_ct);
    assert_eq!(
        rv, CKR_KEY_FUNCTION_NOT_PERMITTED,
        "CTR by the decrypt-only principal (an encryption oracle)"
    );
    drop(dec);

    // ---- A principal holding both keeps its own IVs.
    let both = As::new(raw, &w.both);
    let (rv, back) = both.decrypt(&ctr(cb.clone().try_into().unwrap()), m, &ctr_ct);
    assert_eq!(rv, CKR_OK);
    assert_eq!(
        back, DATA,
        "CTR decrypted with the counter block written to cb"
    );
    let short = Mech::Ctr {
        counter_bits: 8,
        cb: short_cb.clone().try_into().unwrap(),
    };
    let (rv, back) = both.decrypt(&short, m, &short_ct);
    assert_eq!(
        (rv, back == long),
        (CKR_OK, true),
        "8-bit CTR decrypted with its cb"
    );
    let mine: Vec<u8> = (1..=12).collect();
    for (what, key) in [("KMS key", kms), ("module key", m)] {
        for iv in [&mine[..], &zero12[..]] {
            let (rv, used, ct) = both.encrypt(&gcm48(iv), key, DATA);
            assert_eq!(rv, CKR_OK, "{what}: GCM by encrypt+decrypt");
            assert_eq!(
                used, iv,
                "{what}: the encrypt+decrypt principal's IV was changed"
            );
            let (rv, back) = both.decrypt(&gcm48(iv), key, &ct);
            assert_eq!((rv, back.as_slice()), (CKR_OK, DATA));
        }
    }
    let cb_mine = [3u8; 16];
    let (rv, used, _) = both.encrypt(&ctr(cb_mine), m, DATA);
    assert_eq!((rv, used.as_slice()), (CKR_OK, &cb_mine[..]), "CTR by both");
    for (what, mech) in [
        ("ECB", Mech::Plain(CKM_AES_ECB)),
        ("CBC", Mech::Bytes(CKM_AES_CBC, vec![0; 16])),
        ("CBC-PAD", Mech::Bytes(CKM_AES_CBC_PAD, vec![5; 16])),
    ] {
        let (rv, _, _) = both.encrypt(&mech, m, &[0u8; 32]);
        assert_eq!(rv, CKR_OK, "{what} by the encrypt+decrypt principal");
    }
    drop(both);
    drop(p11);
}
