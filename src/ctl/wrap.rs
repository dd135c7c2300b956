//! `keywardctl key wrap-for-import`: the BYOK wrap, done here (design §5: never in
//! keywardd). RSA-OAEP (SHA-1 or SHA-256, MGF1 with the same hash, empty label) of a fresh
//! AES-256 key, then AES-KWP (RFC 5649) of the material, concatenated; or, for
//! `rsa-oaep-3072-sha256`, RSA-OAEP of the material itself.

use super::args::Global;
use super::error::print_json;
use super::render::path_str;
use super::transport::{run_request, CtlError};
use keyward_wire::admin::AdminRequest;
use keyward_wire::import::{ImportHash, ImportMethod, MAX_DIRECT_LEN};
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use rsa::{Oaep, RsaPublicKey};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Where the wrapping key comes from.
pub struct Source {
    pub import_job: Option<String>,
    pub public_key_file: Option<PathBuf>,
    pub method: Option<String>,
}

/// A usage error (`code` 2) or a failure here (1).
fn fail(code: u8, m: impl std::fmt::Display) -> Result<(), CtlError> {
    let m = m.to_string();
    Err(if code == 2 {
        CtlError::Usage(m)
    } else {
        CtlError::Failed(m)
    })
}

/// The job's public key (PEM) and method.
fn job_key(global: &Global, name: &str) -> Result<(String, ImportMethod), CtlError> {
    let resp = run_request(
        global,
        AdminRequest::ImportJobGet {
            name: name.to_string(),
            pem: false,
        },
    )?;
    let bad = |what: &str| CtlError::Usage(format!("keywardd's answer about {name} lacks {what}"));
    let js: serde_json::Value =
        serde_json::from_str(&resp.json).map_err(|_| bad("a JSON document"))?;
    if js["state"] != "ACTIVE" {
        return Err(CtlError::Usage(format!(
            "import job {name} is {}: create a new import job",
            js["state"].as_str().unwrap_or("not ACTIVE")
        )));
    }
    let pem = js["publicKey"]["pem"]
        .as_str()
        .ok_or_else(|| bad("the public key"))?
        .to_string();
    let method = js["importMethod"]
        .as_str()
        .ok_or_else(|| bad("the method"))?
        .parse()
        .map_err(CtlError::Usage)?;
    Ok((pem, method))
}

/// Wraps `material` for `method` under `key`.
pub fn wrap(key: &RsaPublicKey, method: ImportMethod, material: &[u8]) -> Result<Vec<u8>, String> {
    let bits = key.size() * 8;
    if bits != method.rsa_bits() {
        return Err(format!(
            "the wrapping key is RSA-{bits}, but {method} needs RSA-{}",
            method.rsa_bits()
        ));
    }
    let oaep = || match method.hash() {
        ImportHash::Sha1 => Oaep::new::<sha1::Sha1>(),
        ImportHash::Sha256 => Oaep::new::<sha2::Sha256>(),
    };
    let mut rng = rand::rngs::OsRng;
    if !method.uses_aes() {
        if material.is_empty() || material.len() > MAX_DIRECT_LEN {
            return Err(format!(
                "{method} carries symmetric keys of 1 to {MAX_DIRECT_LEN} bytes; this                      material has {} bytes",
                material.len()
            ));
        }
        return key
            .encrypt(&mut rng, oaep(), material)
            .map_err(|e| format!("RSA-OAEP failed: {e}"));
    }
    let mut ephemeral = Zeroizing::new([0u8; 32]);
    rand::RngCore::fill_bytes(&mut rng, ephemeral.as_mut_slice());
    let mut out = key
        .encrypt(&mut rng, oaep(), ephemeral.as_slice())
        .map_err(|e| format!("RSA-OAEP failed: {e}"))?;
    let kek = aes_kw::KekAes256::from(*ephemeral);
    let wrapped = kek
        .wrap_with_padding_vec(material)
        .map_err(|e| format!("AES-KWP failed: {e}"))?;
    out.extend_from_slice(&wrapped);
    Ok(out)
}

/// Runs `key wrap-for-import`: exit 0, 1 (refused), 2 (usage).
pub fn run(global: &Global, source: Source, material: &Path, out: &Path) -> Result<(), CtlError> {
    let (pem, method) = match (&source.import_job, &source.public_key_file) {
        (Some(job), _) => job_key(global, job)?,
        (None, Some(path)) => {
            let pem = match read_file(path).map(String::from_utf8) {
                Ok(Ok(p)) => p,
                Ok(Err(_)) => return fail(2, format!("{} is not PEM", path.display())),
                Err(e) => return fail(2, e),
            };
            let key = match RsaPublicKey::from_public_key_pem(pem.trim()) {
                Ok(k) => k,
                Err(e) => {
                    return fail(
                        2,
                        format!("{} is not an RSA public key: {e}", path.display()),
                    )
                }
            };
            let method = match &source.method {
                Some(m) => match m.parse() {
                    Ok(m) => m,
                    Err(e) => return fail(2, e),
                },
                None if key.size() == 512 => ImportMethod::RsaOaep4096Sha1Aes256,
                None => ImportMethod::RsaOaep3072Sha1Aes256,
            };
            (pem, method)
        }
        (None, None) => return fail(2, "name --import-job or --public-key-file"),
    };
    if source.import_job.is_some() && source.method.is_some() {
        return fail(
            2,
            "--method goes with --public-key-file; a job has its own method",
        );
    }
    let key = match RsaPublicKey::from_public_key_pem(pem.trim()) {
        Ok(k) => k,
        Err(e) => return fail(2, format!("the wrapping key is not an RSA public key: {e}")),
    };
    let material = match read_file(material) {
        Ok(m) => Zeroizing::new(m),
        Err(e) => return fail(2, e),
    };
    let blob = match wrap(&key, method, &material) {
        Ok(b) => b,
        Err(e) => return fail(1, e),
    };
    if let Err(e) = std::fs::write(out, &blob) {
        return fail(1, format!("cannot write {}: {e}", out.display()));
    }
    eprintln!(
        "wrapped {} bytes of key material for {method}: {} bytes in {}",
        material.len(),
        blob.len(),
        out.display()
    );
    if global.json {
        print_json(
            &serde_json::json!({"out": path_str(out), "bytes": blob.len(),
                                       "method": method.to_string()}),
        );
    }
    Ok(())
}

/// Reads a file named on the command line.
pub fn read_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}
