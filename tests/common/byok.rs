//! BYOK test helpers: key material made by the openssl CLI, wrapped for an import job with the
//! openssl CLI only (RSA-OAEP-SHA1 of an ephemeral AES-256 key, then `id-aes256-wrap-pad`),
//! and AES-GCM ciphertexts decrypted by OpenSSL (issue 7).

use super::daemon::Env;
use std::path::{Path, PathBuf};

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `openssl ARGS`, asserting success; returns stdout.
#[track_caller]
pub fn openssl(args: &[&str]) -> Vec<u8> {
    super::openssl_ok(Path::new("."), args)
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Key material made by openssl in `dir`: (material file for wrapping, public key PEM file).
pub struct Material {
    /// Raw bytes (AES) or PKCS#8 DER (EC, RSA).
    pub wrapped_input: PathBuf,
    /// The private key PEM (asymmetric) or the raw key (symmetric), for OpenSSL's side.
    pub original: PathBuf,
    /// The public key PEM (asymmetric).
    pub public: Option<PathBuf>,
}

pub fn aes_material(dir: &Path, name: &str) -> Material {
    let raw = dir.join(format!("{name}.key"));
    openssl(&["rand", "-out", s(&raw), "32"]);
    Material {
        wrapped_input: raw.clone(),
        original: raw,
        public: None,
    }
}

pub fn asym_material(dir: &Path, name: &str, genpkey: &[&str]) -> Material {
    let pem = dir.join(format!("{name}.pem"));
    let der = dir.join(format!("{name}.p8.der"));
    let public = dir.join(format!("{name}.pub.pem"));
    let mut args = vec!["genpkey"];
    args.extend_from_slice(genpkey);
    args.extend_from_slice(&["-out", s(&pem)]);
    openssl(&args);
    openssl(&[
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        s(&pem),
        "-outform",
        "DER",
        "-out",
        s(&der),
    ]);
    openssl(&["pkey", "-in", s(&pem), "-pubout", "-out", s(&public)]);
    Material {
        wrapped_input: der,
        original: pem,
        public: Some(public),
    }
}

/// Wraps `material` for the job whose public key is `job_pem`, with the openssl CLI only.
pub fn openssl_wrap(dir: &Path, job_pem: &Path, material: &Path, name: &str) -> PathBuf {
    openssl_wrap_oaep(dir, job_pem, material, name, "sha1")
}

/// [`openssl_wrap`] with RSA-OAEP (and MGF1) over `hash` (`sha1`, `sha256`): the
/// `rsa-oaep-3072-<hash>-aes-256` methods.
pub fn openssl_wrap_oaep(
    dir: &Path,
    job_pem: &Path,
    material: &Path,
    name: &str,
    hash: &str,
) -> PathBuf {
    let md = format!("rsa_oaep_md:{hash}");
    let mgf = format!("rsa_mgf1_md:{hash}");
    let eph = dir.join(format!("{name}.eph"));
    let eph_wrapped = dir.join(format!("{name}.eph.wrapped"));
    let mat_wrapped = dir.join(format!("{name}.mat.wrapped"));
    openssl(&["rand", "-out", s(&eph), "32"]);
    openssl(&[
        "pkeyutl",
        "-encrypt",
        "-pubin",
        "-inkey",
        s(job_pem),
        "-pkeyopt",
        "rsa_padding_mode:oaep",
        "-pkeyopt",
        &md,
        "-pkeyopt",
        &mgf,
        "-in",
        s(&eph),
        "-out",
        s(&eph_wrapped),
    ]);
    let k = hex(&std::fs::read(&eph).unwrap());
    openssl(&[
        "enc",
        "-id-aes256-wrap-pad",
        "-K",
        &k,
        "-iv",
        "A65959A6",
        "-in",
        s(material),
        "-out",
        s(&mat_wrapped),
    ]);
    let mut blob = std::fs::read(&eph_wrapped).unwrap();
    assert_eq!(blob.len(), 384, "RSA-3072 OAEP output");
    blob.extend(std::fs::read(&mat_wrapped).unwrap());
    let out = dir.join(format!("{name}.wrapped"));
    std::fs::write(&out, blob).unwrap();
    out
}

/// Decrypts a `keywardctl encrypt` envelope (KW1 || version || IV || ct || tag) with OpenSSL:
/// AES-GCM's keystream is AES-CTR from the counter block IV || 00000002.
pub fn openssl_gcm_decrypt(dir: &Path, key: &Path, envelope: &[u8]) -> Vec<u8> {
    assert_eq!(&envelope[..3], b"KW1");
    openssl_gcm_body(
        dir,
        key,
        &envelope[11..23],
        &envelope[23..envelope.len() - 16],
    )
}

/// The plaintext of an AES-256-GCM ciphertext body (tag removed) with a 12-byte IV, by
/// OpenSSL's AES-CTR from the counter block IV || 00000002.
pub fn openssl_gcm_body(dir: &Path, key: &Path, iv: &[u8], body: &[u8]) -> Vec<u8> {
    let ct = dir.join("gcm-body");
    std::fs::write(&ct, body).unwrap();
    let k = hex(&std::fs::read(key).unwrap());
    let ctr = format!("{}00000002", hex(iv));
    openssl(&[
        "enc",
        "-d",
        "-aes-256-ctr",
        "-K",
        &k,
        "-iv",
        &ctr,
        "-in",
        s(&ct),
    ])
}

/// `import-job create --keyring RING --method METHOD --id ID` as the mapped admin, which must
/// print the job's public key as `import-job get-public-key` does; returns that PEM's file.
pub fn create_job(env: &Env, ring: &str, id: &str, method: &str) -> PathBuf {
    let job = format!("{ring}/importJobs/{id}");
    let out = env.ctl(&[
        "import-job",
        "create",
        "--keyring",
        ring,
        "--method",
        method,
        "--id",
        id,
    ]);
    out.ok();
    // The message on stderr, only the PEM on stdout (issue 18 item 9).
    assert!(
        out.stderr.contains(&format!("created import job {job}")),
        "{out:#?}"
    );
    assert!(
        out.stdout.starts_with("-----BEGIN PUBLIC KEY-----"),
        "{out:#?}"
    );
    let pem = env.ctl(&["import-job", "get-public-key", &job]);
    pem.ok();
    assert!(
        pem.stdout.starts_with("-----BEGIN PUBLIC KEY-----"),
        "{pem:#?}"
    );
    assert!(
        out.stdout.contains(pem.stdout.trim()),
        "create prints the same PEM"
    );
    let path = env.dir().join(format!("job-{id}.pem"));
    std::fs::write(&path, &pem.stdout).unwrap();
    path
}
