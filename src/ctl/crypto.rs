//! `keywardctl encrypt|decrypt|sign|verify|mac`: one request on the client socket.

use super::args::{CryptoArgs, Global};
use super::render::printable;
use super::transport::{call_socket, CtlError};
use keyward_wire::pkcs11::Blob;
use keyward_wire::{CryptoRequest, CryptoResponse, RequestBody, ResponseBody};
use sha2::Digest;
use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

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

fn write(path: Option<&Path>, bytes: &[u8]) -> Result<(), String> {
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

fn usage(m: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {m}");
    ExitCode::from(2)
}

/// The exit of an answer that is not the one asked for: an unexpected response or a
/// refusal (1), bad usage or no daemon (2).
fn failure(answer: Result<ResponseBody, CtlError>) -> ExitCode {
    match answer {
        Ok(_) => {
            eprintln!("error: keywardd answered with another kind of response");
            ExitCode::from(1)
        }
        Err(CtlError::Usage(m) | CtlError::Unreachable(m)) => usage(m),
        Err(CtlError::Request(e)) => {
            eprintln!("error: {}", printable(&e.message));
            ExitCode::from(1)
        }
    }
}

/// Runs one crypto command; exit 0, 1 (refused, invalid), 2 (usage).
pub fn run(global: &Global, kind: Kind, a: CryptoArgs) -> ExitCode {
    if global.db.is_some() || global.as_member.is_some() {
        return usage(
            "the crypto commands run only through keywardd's client socket (no --db, no \
             --as; use KEYWARD_CREDENTIALS=FILE to act as a service account)",
        );
    }
    let data = match read(a.input.as_deref()) {
        Ok(d) => d,
        Err(e) => return usage(e),
    };
    let aad = match a.aad_file.as_deref().map(|p| read(Some(p))).transpose() {
        Ok(d) => d.unwrap_or_default(),
        Err(e) => return usage(e),
    };
    if a.aad_file.is_some() && !matches!(kind, Kind::Encrypt | Kind::Decrypt) {
        return usage("--aad-file applies to encrypt and decrypt only");
    }
    let (data, prehashed) = match a.digest.as_deref() {
        None => (data, false),
        Some(_) if !matches!(kind, Kind::Sign | Kind::Verify) => {
            return usage("--digest applies to sign and verify only")
        }
        Some("sha384") => (sha2::Sha384::digest(&data).to_vec(), true),
        Some(_) => (sha2::Sha256::digest(&data).to_vec(), true),
    };
    let check = match kind {
        Kind::Verify => match a.signature.as_deref() {
            Some(p) => Some(p),
            None => return usage("verify needs --signature FILE"),
        },
        Kind::Mac => a.verify.as_deref(),
        _ => None,
    };
    let signature = match check.map(|p| read(Some(p))).transpose() {
        Ok(s) => s,
        Err(e) => return usage(e),
    };
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
    let answer = call_socket(global, &global.client_socket, RequestBody::Crypto(req));
    match answer {
        Ok(ResponseBody::Crypto(CryptoResponse::Data(bytes))) => {
            match write(a.out.as_deref(), bytes.as_slice()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Ok(ResponseBody::Crypto(CryptoResponse::Verified(true))) => {
            eprintln!("signature valid ({})", printable(&a.key));
            ExitCode::SUCCESS
        }
        Ok(ResponseBody::Crypto(CryptoResponse::Verified(false))) => {
            eprintln!(
                "error: signature INVALID for this data and key ({})",
                printable(&a.key)
            );
            ExitCode::from(1)
        }
        other => failure(other),
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
) -> ExitCode {
    if global.db.is_some() || global.as_member.is_some() {
        return usage(
            "key export runs only through keywardd's client socket (no --db, no --as; use \
             KEYWARD_CREDENTIALS=FILE to act as a service account)",
        );
    }
    let req = CryptoRequest::Export {
        key: key.clone(),
        version,
        wrapping_key,
        mechanism,
    };
    match call_socket(global, &global.client_socket, RequestBody::Crypto(req)) {
        Ok(ResponseBody::Crypto(CryptoResponse::Data(bytes))) => {
            match write(out, bytes.as_slice()) {
                Ok(()) => {
                    eprintln!(
                        "warning: the key material of {} left the token wrapped ({} bytes); \
                         this export is in the audit log",
                        printable(&key),
                        bytes.as_slice().len()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
        other => failure(other),
    }
}
