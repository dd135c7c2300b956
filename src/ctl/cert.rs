//! `keywardctl key cert ...`: certificates of asymmetric keys (issue 7). The
//! `TBSCertificate`/`CertificationRequestInfo` is built here ([`crate::x509`]) and signed in
//! the token through keywardd's client socket (`useToSign`, audited like `keywardctl sign`);
//! a self-signed certificate is then attached over the admin socket (`key.cert.import`).

use super::args::Global;
use super::error::print_json;
use super::render::{path_str, printable};
use super::transport::{call_on, call_socket, connect_socket, run_request, CtlError};
use crate::x509::{self, SigAlg};
use keyward_wire::admin::AdminRequest;
use keyward_wire::pkcs11::Blob;
use keyward_wire::{CryptoRequest, CryptoResponse, RequestBody, ResponseBody};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The certificate in `cert` (PEM or DER; more PEM blocks are its chain), then `chain`.
pub fn read_chain(cert: &Path, chain: Option<&Path>) -> Result<Vec<Vec<u8>>, String> {
    let read = |p: &Path| -> Result<Vec<Vec<u8>>, String> {
        let bytes = std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        x509::read_certificates(&bytes).map_err(|e| format!("{}: {e}", p.display()))
    };
    let mut out = read(cert)?;
    if let Some(c) = chain {
        out.extend(read(c)?);
    }
    Ok(out)
}

fn write_out(out: Option<&Path>, text: &str) -> Result<(), String> {
    match out {
        Some(p) if p != Path::new("-") => {
            std::fs::write(p, text).map_err(|e| format!("cannot write {}: {e}", p.display()))
        }
        _ => {
            let mut o = std::io::stdout().lock();
            o.write_all(text.as_bytes())
                .and_then(|()| o.flush())
                .map_err(|e| format!("cannot write stdout: {e}"))
        }
    }
}

/// The primary version's public key, as keywardd answers `key get-public-key`.
struct PublicKey {
    /// The version's name.
    version: String,
    /// The key's algorithm name; `None` for a key made through the PKCS#11 module.
    algorithm: Option<String>,
    /// The SubjectPublicKeyInfo, DER.
    spki: Vec<u8>,
    /// A key made through the module: its private object's `CKA_ID` and whether its
    /// flags allow signing.
    generic: Option<(Vec<u8>, bool)>,
}

fn public_key(global: &Global, key: &str) -> Result<PublicKey, CtlError> {
    let resp = run_request(
        global,
        AdminRequest::KeyGetPublicKey {
            name: key.to_string(),
            version: None,
        },
    )?;
    let bad = |m: &str| {
        CtlError::Request(crate::admin::AdminError {
            rv: keyward_wire::rv::CKR_GENERAL_ERROR,
            message: format!("keywardd's public key answer: {m}"),
        })
    };
    let js: serde_json::Value = serde_json::from_str(&resp.json).map_err(|_| bad("not JSON"))?;
    let field = |f: &str| js[f].as_str().map(str::to_string).ok_or_else(|| bad(f));
    let (version, pem) = (field("name")?, field("pem")?);
    let (_, spki) = der::pem::decode_vec(pem.as_bytes()).map_err(|_| bad("bad PEM"))?;
    let generic = match &js["generic"] {
        serde_json::Value::Null => None,
        g => {
            let id = g["ckaId"]
                .as_str()
                .and_then(unhex)
                .ok_or_else(|| bad("generic.ckaId"))?;
            let sign = g["sign"].as_bool().ok_or_else(|| bad("generic.sign"))?;
            Some((id, sign))
        }
    };
    let algorithm = js["algorithm"].as_str().map(str::to_string);
    if algorithm.is_none() && generic.is_none() {
        return Err(bad("algorithm"));
    }
    Ok(PublicKey {
        version,
        algorithm,
        spki,
        generic,
    })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// How `key` signs: its algorithm name's, or (a key made through the module) its public
/// key's, if its flags allow signing.
fn signature_algorithm(key: &str, pk: &PublicKey) -> Result<SigAlg, String> {
    let key = printable(key);
    match (&pk.algorithm, &pk.generic) {
        (Some(a), _) => SigAlg::for_algorithm(a).ok_or_else(|| {
            format!(
                "{key} is a {a} key: certificates need an asymmetric signing key \
                 (EC_SIGN_P256_SHA256, EC_SIGN_P384_SHA384, RSA_SIGN_PKCS1_*_SHA256, \
                 RSA_SIGN_PSS_*_SHA256, or an EC P-256/P-384 or RSA pair made through the \
                 PKCS#11 module with CKA_SIGN)"
            )
        }),
        (None, Some((_, false))) => Err(format!(
            "{key} was made through the PKCS#11 module without CKA_SIGN: its private key \
             may not sign, so it cannot sign a certificate or request"
        )),
        (None, _) => SigAlg::for_spki(&pk.spki)
            .map_err(|e| format!("{key} (made through the PKCS#11 module) is {e}")),
    }
}

/// Signs `data` with the private key of a key made through the module, as the module
/// would: a session on the ring's slot, the private key object with its `CKA_ID`, then
/// C_SignInit/C_Sign (the use gate and the audit of design §4). ECDSA: the DER
/// `Ecdsa-Sig-Value`; RSA: PKCS#1 v1.5 with SHA-256.
fn sign_generic(
    global: &Global,
    key: &str,
    cka_id: &[u8],
    alg: SigAlg,
    data: &[u8],
) -> Result<Vec<u8>, CtlError> {
    use keyward_wire::ck::{CKA_CLASS, CKA_ID, CKM_ECDSA, CKM_SHA256_RSA_PKCS, CKO_PRIVATE_KEY};
    use keyward_wire::pkcs11::{
        AttrValue, Attribute, MechParams, Mechanism, Operation, Pkcs11Request as Q,
        Pkcs11Response as A, UserType,
    };
    use keyward_wire::rv::CKR_USER_ALREADY_LOGGED_IN;
    use sha2::Digest;
    let ring = key
        .split_once("/cryptoKeys/")
        .map(|(r, _)| r)
        .ok_or_else(|| {
            CtlError::Failed(format!("'{}' is not a crypto key name", printable(key)))
        })?;
    let socket = &global.client_socket;
    let mut client = connect_socket(global, socket)?;
    let mut call = |req: Q| -> Result<A, CtlError> {
        match call_on(&mut client, socket, RequestBody::Pkcs11(req))? {
            ResponseBody::Pkcs11(a) => Ok(a),
            _ => Err(CtlError::Usage(
                "keywardd answered with another kind of response".into(),
            )),
        }
    };
    let unexpected =
        |what: &str, a: A| CtlError::Failed(format!("keywardd answered {what} with {a:?}"));
    let slot = match call(Q::ListSlots { configured: vec![] })? {
        A::Slots(slots) => slots
            .into_iter()
            .find(|s| s.ring == ring)
            .map(|s| s.slot)
            .ok_or_else(|| {
                CtlError::Failed(format!("{} is not a key ring you see", printable(ring)))
            })?,
        a => return Err(unexpected("C_GetSlotList", a)),
    };
    let session = match call(Q::OpenSession {
        slot,
        read_write: false,
    })? {
        A::Session(s) => s,
        a => return Err(unexpected("C_OpenSession", a)),
    };
    match call(Q::Login {
        slot,
        user: UserType::User,
        pin: None,
    }) {
        Ok(_) => {}
        Err(CtlError::Request(e)) if e.rv == CKR_USER_ALREADY_LOGGED_IN => {}
        Err(e) => return Err(e),
    }
    let template = vec![
        Attribute {
            ty: CKA_CLASS,
            value: AttrValue::Ulong(CKO_PRIVATE_KEY),
        },
        Attribute {
            ty: CKA_ID,
            value: AttrValue::Bytes(Blob::new(cka_id.to_vec())),
        },
    ];
    let object = match call(Q::FindObjects { session, template })? {
        A::Objects(o) if o.len() == 1 => o[0],
        A::Objects(o) if o.is_empty() => {
            return Err(CtlError::Failed(format!(
                "the private key of {} is not visible to you through the module",
                printable(key)
            )))
        }
        A::Objects(o) => {
            return Err(CtlError::Failed(format!(
                "{} private keys of {} share the CKA_ID of {}: cannot tell which to sign \
                 with",
                o.len(),
                printable(ring),
                printable(key)
            )))
        }
        a => return Err(unexpected("C_FindObjects", a)),
    };
    let (ty, input) = match alg {
        SigAlg::EcdsaSha256 => (CKM_ECDSA, sha2::Sha256::digest(data).to_vec()),
        SigAlg::EcdsaSha384 => (CKM_ECDSA, sha2::Sha384::digest(data).to_vec()),
        SigAlg::RsaPkcs1Sha256 => (CKM_SHA256_RSA_PKCS, data.to_vec()),
        SigAlg::RsaPssSha256 => {
            return Err(CtlError::Failed(
                "RSA-PSS is not made for module keys".into(),
            ))
        }
    };
    call(Q::OperationInit {
        op: Operation::Sign,
        session,
        mechanism: Mechanism {
            ty,
            params: MechParams::None,
        },
        key: Some(object),
    })?;
    let signature = match call(Q::OperationOneShot {
        op: Operation::Sign,
        session,
        data: Blob::new(input),
    })? {
        A::Data(sig) => sig.as_slice().to_vec(),
        a => return Err(unexpected("C_Sign", a)),
    };
    // Closing the connection closes the session too; this is only tidier.
    let _ = call(Q::CloseSession { session });
    match alg {
        SigAlg::EcdsaSha256 | SigAlg::EcdsaSha384 => {
            keyward_wire::crypto::ecdsa_raw_to_der(&signature).ok_or_else(|| {
                CtlError::Failed("the token gave a malformed ECDSA signature".into())
            })
        }
        _ => Ok(signature),
    }
}

/// What `key cert create` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Make {
    /// A self-signed certificate, attached to the key.
    SelfSigned,
    /// A self-signed certificate only written out (`--no-attach`): an admin attaches it.
    SelfSignedUnattached,
    /// A PKCS#10 request.
    Request,
}

/// `key cert create --self-signed [--no-attach]|--csr`. Under `--json`, the PEM is a JSON
/// string (`{"pem", "key", "version", "attached"}`, and `"out"` with `--out`).
pub fn create(
    global: &Global,
    key: &str,
    make: Make,
    subject: Option<String>,
    days: u32,
    out: Option<PathBuf>,
) -> Result<(), CtlError> {
    let failed = |m: String| CtlError::Failed(m);
    if global.db.is_some() || global.as_member.is_some() {
        return Err(CtlError::Usage(
            "key cert create signs in the token: it runs only through keywardd (no --db, no \
             --as; use KEYWARD_CREDENTIALS=FILE to act as a service account)"
                .into(),
        ));
    }
    let self_signed = make != Make::Request;
    let key_id = key.rsplit('/').next().unwrap_or(key);
    let subject = subject.unwrap_or_else(|| format!("CN={key_id}"));
    let name = x509::parse_subject(&subject).map_err(|e| CtlError::Usage(e.to_string()))?;
    let pk = public_key(global, key)?;
    let alg = signature_algorithm(key, &pk).map_err(failed)?;
    let PublicKey {
        version,
        spki,
        generic,
        ..
    } = pk;
    let to_sign = if self_signed {
        let mut serial: [u8; 16] = rand::random();
        serial[0] = (serial[0] & 0x7f) | 0x40;
        x509::self_signed_tbs(
            &spki,
            &name,
            days,
            &serial,
            std::time::SystemTime::now(),
            alg,
        )
    } else {
        x509::request_info(&spki, &name)
    };
    let to_sign = to_sign.map_err(|e| failed(format!("cannot encode the request: {e}")))?;
    let signature = if let Some((cka_id, _)) = &generic {
        sign_generic(global, key, cka_id, alg, &to_sign)?
    } else {
        let answer = call_socket(
            global,
            &global.client_socket,
            RequestBody::Crypto(CryptoRequest::Sign {
                key: key.to_string(),
                data: Blob::new(to_sign.clone()),
                prehashed: false,
            }),
        )?;
        match answer {
            ResponseBody::Crypto(CryptoResponse::Data(sig)) => sig.as_slice().to_vec(),
            _ => {
                return Err(failed(
                    "keywardd answered with another kind of response".into(),
                ))
            }
        }
    };
    // The primary version must not have moved between reading its key and signing.
    let now = public_key(global, key)?;
    if now.version != version || now.spki != spki {
        return Err(failed(format!(
            "the primary version of {} changed while signing: run it again",
            printable(key)
        )));
    }
    let (der, label) = if self_signed {
        (
            x509::assemble_certificate(&to_sign, alg, &signature),
            "CERTIFICATE",
        )
    } else {
        (
            x509::assemble_request(&to_sign, alg, &signature),
            "CERTIFICATE REQUEST",
        )
    };
    let (der, pem) = der
        .and_then(|d| x509::pem(label, &d).map(|p| (d, p)))
        .map_err(|e| failed(format!("cannot encode the result: {e}")))?;
    match make {
        Make::SelfSigned => {
            let req = AdminRequest::KeyCertImport {
                key: key.to_string(),
                certs: vec![der],
                label: None,
            };
            let resp = run_request(global, req)?;
            if let Some(m) = resp.message {
                eprintln!("{}", printable(&m));
            }
        }
        Make::SelfSignedUnattached => eprintln!(
            "self-signed certificate for {} ({subject}) signed by {version}, not attached: \
             attach it with `keywardctl key cert import --key {} --cert FILE`",
            printable(key),
            printable(key)
        ),
        Make::Request => eprintln!(
            "certificate request for {} ({subject}) signed by {version}",
            printable(key)
        ),
    }
    if global.json {
        if let Some(p) = out.as_deref().filter(|p| *p != Path::new("-")) {
            write_out(Some(p), &pem).map_err(failed)?;
        }
        let mut doc = serde_json::json!({"pem": pem, "key": key, "version": version,
                                         "attached": make == Make::SelfSigned});
        if let Some(p) = out.as_deref().filter(|p| *p != Path::new("-")) {
            doc["out"] = path_str(p).into();
        }
        print_json(&doc);
        return Ok(());
    }
    write_out(out.as_deref(), &pem).map_err(failed)
}

/// `key cert get`: the attached certificates as PEM (under `--json`, `{"key", "pem"}`, the
/// PEM a JSON string).
pub fn get(global: &Global, key: String) -> Result<(), CtlError> {
    let resp = run_request(global, AdminRequest::KeyCertList { key: key.clone() })?;
    let js: serde_json::Value = serde_json::from_str(&resp.json).unwrap_or_default();
    let pems: Vec<&str> = js
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["pem"].as_str()).collect())
        .unwrap_or_default();
    let attached = js.as_array().map_or(0, Vec::len);
    if pems.is_empty() && attached > 0 {
        return Err(CtlError::Failed(format!(
            "permission denied: {} has {attached} certificate(s) attached, but reading a \
             certificate (it carries the public key) needs \
             kms.cryptoKeyVersions.viewPublicKey or a use permission on the key",
            printable(&key)
        )));
    }
    if pems.is_empty() {
        return Err(CtlError::Failed(format!(
            "{} has no certificate attached",
            printable(&key)
        )));
    }
    if global.json {
        print_json(&serde_json::json!({"key": key, "pem": pems.concat(), "count": pems.len()}));
        return Ok(());
    }
    write_out(None, &pems.concat()).map_err(CtlError::Failed)
}
