//! `keywardctl encrypt|decrypt|sign|verify|mac` and `key export`: one request on the client
//! socket. Under `--json`, bytes go only to `--out` and stdout gets a summary
//! (`{"out","bytes","key"}`); a verification prints `{"valid":true,"key"}`, and an invalid
//! signature or tag is a failure with code `invalid` (exit 1).

use super::args::{CryptoArgs, Global};
use super::error::print_json;
use super::render::{path_str, printable};
use super::transport::{call_socket, CtlError};
use keyward_wire::pkcs11::Blob;
use keyward_wire::{CryptoRequest, CryptoResponse, RequestBody, ResponseBody};
use sha2::Digest;
use std::io::{Read, Write};
use std::path::Path;

/// Which command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Encrypt,
    Decrypt,
    Sign,
    Verify,
    Mac,
}

fn read(path: Option<&Path>) -> Result<Vec<u8>, String> {
    match path {
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .lock()
                .read_to_end(&mut buf)
                .map_err(|e| format!("cannot read stdin: {e}"))?;
            Ok(buf)
        }
        Some(p) if p == Path::new("-") => read(None),
        Some(p) => std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display())),
    }
}

/// Writes the bytes to `--out` (or stdout); under `--json`, only to `--out`, with the summary
/// on stdout.
fn write(global: &Global, key: &str, path: Option<&Path>, bytes: &[u8]) -> Result<(), CtlError> {
    write_bytes(path, bytes).map_err(CtlError::Failed)?;
    if global.json {
        let out = path.map(path_str).unwrap_or_default();
        print_json(&serde_json::json!({"out": out, "bytes": bytes.len(), "key": key}));
    }
    Ok(())
}

/// Under `--json`, bytes need a file: stdout carries the JSON document.
fn need_out(global: &Global, out: Option<&Path>, what: &str) -> Result<(), CtlError> {
    match out {
        Some(p) if p != Path::new("-") => Ok(()),
        _ if global.json => Err(CtlError::Usage(format!(
            "{what} writes bytes: with --json give --out FILE (stdout carries the JSON summary)"
        ))),
        _ => Ok(()),
    }
}

fn write_bytes(path: Option<&Path>, bytes: &[u8]) -> Result<(), String> {
    match path {
        Some(p) if p != Path::new("-") => {
            std::fs::write(p, bytes).map_err(|e| format!("cannot write {}: {e}", p.display()))
        }
        _ => {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes)
                .and_then(|()| out.flush())
                .map_err(|e| format!("cannot write stdout: {e}"))
        }
    }
}

/// An answer that is not the one asked for.
fn unexpected(answer: Result<ResponseBody, CtlError>) -> CtlError {
    match answer {
        Ok(_) => CtlError::Failed("keywardd answered with another kind of response".into()),
        Err(e) => e,
    }
}

/// Runs one crypto command.
pub fn run(global: &Global, kind: Kind, a: CryptoArgs) -> Result<(), CtlError> {
    let usage = |m: &str| Err(CtlError::Usage(m.to_string()));
    if global.db.is_some() || global.as_member.is_some() {
        return usage(
            "the crypto commands run only through keywardd's client socket (no --db, no \
             --as; use KEYWARD_CREDENTIALS=FILE to act as a service account)",
        );
    }
    if a.aad_file.is_some() && !matches!(kind, Kind::Encrypt | Kind::Decrypt) {
        return usage("--aad-file applies to encrypt and decrypt only");
    }
    if a.digest.is_some() && !matches!(kind, Kind::Sign | Kind::Verify) {
        return usage("--digest applies to sign and verify only");
    }
    let check = match kind {
        Kind::Verify => match a.signature.as_deref() {
            Some(p) => Some(p),
            None => return usage("verify needs --signature FILE"),
        },
        Kind::Mac => a.verify.as_deref(),
        _ => None,
    };
    if check.is_none() {
        let what = match kind {
            Kind::Encrypt => "encrypt",
            Kind::Decrypt => "decrypt",
            Kind::Sign => "sign",
            _ => "mac",
        };
        need_out(global, a.out.as_deref(), what)?;
    }
    let data = read(a.input.as_deref()).map_err(CtlError::Usage)?;
    let aad = a
        .aad_file
        .as_deref()
        .map(|p| read(Some(p)))
        .transpose()
        .map_err(CtlError::Usage)?
        .unwrap_or_default();
    let (data, prehashed) = match a.digest.as_deref() {
        None => (data, false),
        Some("sha384") => (sha2::Sha384::digest(&data).to_vec(), true),
        Some(_) => (sha2::Sha256::digest(&data).to_vec(), true),
    };
    let signature = check
        .map(|p| read(Some(p)))
        .transpose()
        .map_err(CtlError::Usage)?;
    let key = a.key.clone();
    let req = match (kind, signature) {
        (Kind::Encrypt, _) => CryptoRequest::Encrypt {
            key,
            plaintext: Blob::new(data),
            aad: Blob::new(aad),
        },
        (Kind::Decrypt, _) => CryptoRequest::Decrypt {
            key,
            ciphertext: Blob::new(data),
            aad: Blob::new(aad),
        },
        (Kind::Sign | Kind::Mac, None) => CryptoRequest::Sign {
            key,
            data: Blob::new(data),
            prehashed,
        },
        (_, Some(sig)) => CryptoRequest::Verify {
            key,
            data: Blob::new(data),
            prehashed,
            signature: Blob::new(sig),
        },
        (Kind::Verify, None) => return usage("verify needs --signature FILE"),
    };
    // A MAC has a tag; a signature is a signature.
    let what = if kind == Kind::Mac {
        "MAC tag"
    } else {
        "signature"
    };
    let answer = call_socket(global, &global.client_socket, RequestBody::Crypto(req));
    match answer {
        Ok(ResponseBody::Crypto(CryptoResponse::Data(bytes))) => {
            write(global, &a.key, a.out.as_deref(), bytes.as_slice())
        }
        Ok(ResponseBody::Crypto(CryptoResponse::Verified(true))) => {
            eprintln!("{what} valid ({})", printable(&a.key));
            if global.json {
                print_json(&serde_json::json!({"valid": true, "key": a.key}));
            }
            Ok(())
        }
        Ok(ResponseBody::Crypto(CryptoResponse::Verified(false))) => {
            Err(CtlError::Invalid(format!(
                "{what} INVALID for this data and key ({})",
                printable(&a.key)
            )))
        }
        other => Err(unexpected(other)),
    }
}

/// `keywardctl key export`: one Export request on the client socket.
pub fn export(
    global: &Global,
    key: String,
    version: Option<u64>,
    wrapping_key: String,
    mechanism: String,
    out: Option<&Path>,
) -> Result<(), CtlError> {
    if global.db.is_some() || global.as_member.is_some() {
        return Err(CtlError::Usage(
            "key export runs only through keywardd's client socket (no --db, no --as; use \
             KEYWARD_CREDENTIALS=FILE to act as a service account)"
                .into(),
        ));
    }
    need_out(global, out, "key export")?;
    let req = CryptoRequest::Export {
        key: key.clone(),
        version,
        wrapping_key,
        mechanism,
    };
    match call_socket(global, &global.client_socket, RequestBody::Crypto(req)) {
        Ok(ResponseBody::Crypto(CryptoResponse::Data(bytes))) => {
            write(global, &key, out, bytes.as_slice())?;
            eprintln!(
                "warning: the key material of {} left the token wrapped ({} bytes); this \
                 export is in the audit log",
                printable(&key),
                bytes.as_slice().len()
            );
            Ok(())
        }
        other => Err(unexpected(other)),
    }
}
