//! Multi-part operations stream (issue 14 bug 6): keywardd keeps each operation's state
//! between calls and runs every `*Update` as one single-part token call, so AES-CBC, CBC-PAD,
//! ECB and CTR updates output their whole blocks at once (never more than their input rounded
//! down to a block), inputs far beyond 4 MiB go through, and the results are byte-identical to
//! the one-shot calls; digests and sign/verify with a hash are hashed as the data comes.
//! `pkcs11-tool --encrypt`/`--decrypt` with AES-CBC-PAD takes a 64 MiB file through and back.

use crate::common::daemon::Env;
use crate::common::module::{self, login_with, Settings};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use sha2::Digest;
use std::process::Command;

const RING: &str = "projects/payments/keyRings/web";

/// `CK_AES_CTR_PARAMS` (cryptoki 0.12 has no `CKM_AES_CTR` variant).
#[repr(C)]
struct CtrParams {
    counter_bits: std::ffi::c_ulong,
    cb: [u8; 16],
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn find(s: &Session, class: ObjectClass, label: &str) -> ObjectHandle {
    let found = s
        .find_objects(&[Attribute::Class(class), Attribute::Label(label.into())])
        .unwrap();
    assert_eq!(found.len(), 1, "{label}: {found:?}");
    found[0]
}

/// Encrypts (or decrypts) `input` in `part`-byte updates; checks that no update outputs more
/// than its input rounded down to a block; returns the whole output.
fn streamed(
    s: &Session,
    m: &Mechanism,
    key: ObjectHandle,
    input: &[u8],
    part: usize,
    enc: bool,
) -> Vec<u8> {
    let mut out = Vec::new();
    if enc {
        s.encrypt_init(m, key).unwrap();
    } else {
        s.decrypt_init(m, key).unwrap();
    }
    for chunk in input.chunks(part) {
        let o = if enc {
            s.encrypt_update(chunk).unwrap()
        } else {
            s.decrypt_update(chunk).unwrap()
        };
        assert!(
            o.len() <= chunk.len() - chunk.len() % 16,
            "an update of {} bytes output {} ({m:?})",
            chunk.len(),
            o.len()
        );
        out.extend(o);
    }
    out.extend(if enc {
        s.encrypt_final().unwrap()
    } else {
        s.decrypt_final().unwrap()
    });
    out
}

#[test]
fn multi_part_operations_stream_and_match_one_shot() {
    let _excl = module::exclusive();
    let mut env = Env::new();
    let user = env.service_account_offline("streamer");
    env.start();
    env.web_ring();
    let sa = "serviceAccount:streamer@payments";
    env.create_keys(
        RING,
        &[
            ("rsa", "ASYMMETRIC_SIGN", "RSA_SIGN_PKCS1_2048_SHA256"),
            ("pss", "ASYMMETRIC_SIGN", "RSA_SIGN_PSS_2048_SHA256"),
            ("ec", "ASYMMETRIC_SIGN", "EC_SIGN_P256_SHA256"),
        ],
    );
    for role in [
        "kms:FullAccess",
        "roles/kms.cryptoKeyEncrypterDecrypter",
        "roles/kms.signerVerifier",
    ] {
        env.bind(RING, role, sa);
    }
    let settings = Settings::new(&env.client_socket, &env.dir().join("module.toml"));
    let p11 = module::cryptoki(&settings);
    let slot = module::ring_slot(&p11, RING);
    let s = p11.open_rw_session(slot).unwrap();
    login_with(&s, &user);
    let aes = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::ValueLen(32.into()),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Label(b"stream".to_vec()),
                // pkcs11-tool --decrypt looks for a private key first: --id finds this one.
                Attribute::Id(b"ST".to_vec()),
            ],
        )
        .unwrap();

    // 5 MiB in 64 KiB parts (the 65th part used to be CKR_DATA_LEN_RANGE): CBC-PAD both ways.
    let big = data(5 * 1024 * 1024 + 7);
    let iv = [9u8; 16];
    let pad = Mechanism::AesCbcPad(iv);
    let ct = streamed(&s, &pad, aes, &big, 64 * 1024, true);
    assert_eq!(ct.len(), big.len() + 16 - big.len() % 16);
    assert_eq!(streamed(&s, &pad, aes, &ct, 64 * 1024, false), big);
    let small = data(10_000);
    assert_eq!(
        s.encrypt(&pad, aes, &small).unwrap(),
        streamed(&s, &pad, aes, &small, 1000, true)
    );
    // Odd part sizes for every block mode: the same bytes as one shot.
    let whole = data(16 * 700);
    let mut ctr = CtrParams {
        counter_bits: 64,
        cb: [0u8; 16],
    };
    ctr.cb[15] = 1;
    for m in [
        Mechanism::AesCbc(iv),
        Mechanism::AesEcb,
        Mechanism::VendorDefined(VendorDefinedMechanism::new(
            MechanismType::AES_CTR,
            Some(&ctr),
        )),
        Mechanism::AesCbcPad(iv),
    ] {
        let one = s.encrypt(&m, aes, &whole).unwrap();
        for part in [1000, 16, 4096 + 5] {
            assert_eq!(
                streamed(&s, &m, aes, &whole, part, true),
                one,
                "{m:?} in {part}"
            );
            let back = streamed(&s, &m, aes, &one, part, false);
            assert_eq!(back, whole, "{m:?} decrypted in {part}");
        }
    }

    // A digest of 5 MiB in parts.
    s.digest_init(&Mechanism::Sha256).unwrap();
    for chunk in big.chunks(64 * 1024) {
        s.digest_update(chunk).unwrap();
    }
    assert_eq!(
        s.digest_final().unwrap(),
        sha2::Sha256::digest(&big).to_vec()
    );

    // Sign and verify with a hash, in parts: PKCS#1 v1.5 is deterministic (the same bytes as
    // one shot); ECDSA and PSS verify both ways.
    let rsa = find(&s, ObjectClass::PRIVATE_KEY, "rsa");
    let rsa_pub = find(&s, ObjectClass::PUBLIC_KEY, "rsa");
    let m = Mechanism::Sha256RsaPkcs;
    let one = s.sign(&m, rsa, &big).unwrap();
    s.sign_init(&m, rsa).unwrap();
    for chunk in big.chunks(100_000) {
        s.sign_update(chunk).unwrap();
    }
    assert_eq!(s.sign_final().unwrap(), one);
    s.verify_init(&m, rsa_pub).unwrap();
    for chunk in big.chunks(100_000) {
        s.verify_update(chunk).unwrap();
    }
    s.verify_final(&one).unwrap();
    let pss = Mechanism::Sha256RsaPkcsPss(PkcsPssParams {
        hash_alg: MechanismType::SHA256,
        mgf: PkcsMgfType::MGF1_SHA256,
        s_len: 32.into(),
    });
    for (label, m) in [("pss", pss), ("ec", Mechanism::EcdsaSha256)] {
        let private = find(&s, ObjectClass::PRIVATE_KEY, label);
        let public = find(&s, ObjectClass::PUBLIC_KEY, label);
        s.sign_init(&m, private).unwrap();
        for chunk in small.chunks(999) {
            s.sign_update(chunk).unwrap();
        }
        let sig = s.sign_final().unwrap();
        s.verify(&m, public, &small, &sig).unwrap();
        let one = s.sign(&m, private, &small).unwrap();
        s.verify_init(&m, public).unwrap();
        for chunk in small.chunks(999) {
            s.verify_update(chunk).unwrap();
        }
        s.verify_final(&one).unwrap();
        let mut other = small.clone();
        other[0] ^= 1;
        assert!(
            s.verify(&m, public, &other, &sig).is_err(),
            "{label}: a wrong message verified"
        );
    }
    drop(s);
    drop(p11);

    // pkcs11-tool 0.23 streams 1,024-byte parts into 1,024-byte buffers: 64 MiB through and back.
    let dir = env.dir();
    let plain = dir.join("plain.bin");
    std::fs::write(&plain, data(64 * 1024 * 1024)).unwrap();
    let tool = |args: &[&str]| {
        let out = Command::new("pkcs11-tool")
            .arg("--module")
            .arg(module::module_path())
            .args([
                "--slot",
                &module::ring_slot_id(RING).to_string(),
                "--login",
                "--pin",
                &user,
            ])
            .args(args)
            .env("KEYWARD_SOCKET", &env.client_socket)
            .env("KEYWARD_CONFIG", dir.join("module.toml"))
            .output()
            .expect("pkcs11-tool");
        assert!(
            out.status.success(),
            "pkcs11-tool {args:?}: {} {}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    };
    let (enc, dec) = (dir.join("enc.bin"), dir.join("dec.bin"));
    let iv = "000102030405060708090a0b0c0d0e0f";
    for (op, input, output) in [("--encrypt", &plain, &enc), ("--decrypt", &enc, &dec)] {
        tool(&[
            op,
            "--mechanism",
            "AES-CBC-PAD",
            "--iv",
            iv,
            "--id",
            "5354",
            "--input-file",
            input.to_str().unwrap(),
            "--output-file",
            output.to_str().unwrap(),
        ]);
    }
    assert_eq!(
        std::fs::metadata(&enc).unwrap().len(),
        64 * 1024 * 1024 + 16
    );
    assert!(
        std::fs::read(&dec).unwrap() == std::fs::read(&plain).unwrap(),
        "64 MiB changed"
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", env.pid())).unwrap();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("VmHWM: ?");
    println!("keywardd after 64 MiB through pkcs11-tool AES-CBC-PAD both ways: {hwm}");
}
