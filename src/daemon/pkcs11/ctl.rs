//! The crypto half of the client socket: `keywardctl encrypt|decrypt|sign|verify|mac`, as the
//! connection's principal, through the module's gate ([`ops::plan`], the version state, the
//! policy's `authorize`, one audit record per call) and its token operations ([`ops::run`]).

use super::ck::*;
use super::gate::{self, Denial};
use super::objects::{self, Half};
use super::ops::{self, Outcome};
use super::ClientConnection;
use crate::audit::actions;
use crate::audit::Outcome as AuditOutcome;
use crate::policy::{CryptoKeyName, ResourceName};
use crate::store::keys::VersionState;
use keyward_wire::crypto::{
    ecdsa_der_to_raw, ecdsa_raw_to_der, CryptoRequest, CryptoResponse, Envelope,
};
use keyward_wire::keys::{Algorithm, KeyKind, Purpose};
use keyward_wire::pkcs11::{
    Blob, GcmLayout, GcmParams, MechParams, Mechanism, Operation, PssParams,
};
use keyward_wire::ErrorReply;
use std::str::FromStr;

use super::stream::SHA256_DIGEST_INFO;

/// The message of an operation refused because its audit record was: the caller's uid over
/// its audit rate (`CKR_DEVICE_MEMORY`), or the log unavailable.
fn audit_refusal(rv: u64) -> &'static str {
    if rv == crate::audit::coalesce::CKR_DEVICE_MEMORY {
        "refused: your uid is over its audit rate ([daemon] audit_records_per_uid_per_second); \
         try again later"
    } else {
        "the audit log is unavailable: refused"
    }
}

fn err(rv: u64, message: impl Into<String>) -> ErrorReply {
    ErrorReply::with_message(rv, message)
}

/// One gated call: the key, the version (`None`: the primary) and the half to use.
struct Call<'a> {
    action: &'static str,
    op: Operation,
    key: &'a str,
    version: Option<u64>,
    mech: Mechanism,
}

impl ClientConnection {
    /// Answers a crypto request; errors carry a message for the operator.
    pub fn crypto(&mut self, req: CryptoRequest) -> Result<CryptoResponse, ErrorReply> {
        match req {
            CryptoRequest::Encrypt {
                key,
                plaintext,
                aad,
            } => {
                let (_, purpose) = self.key_info(&key, actions::KEY_ENCRYPT)?;
                if purpose != Purpose::EncryptDecrypt {
                    return Err(err(
                        CKR_KEY_FUNCTION_NOT_PERMITTED,
                        format!(
                            "{key} has purpose {purpose}: encrypt and decrypt need a key of \
                             purpose ENCRYPT_DECRYPT"
                        ),
                    ));
                }
                // Design §9: the IV is always keywardd's (the request carries none), so no
                // caller, encrypt-only or not, chooses or repeats one.
                let iv_bytes = self
                    .svc
                    .token
                    .generate_random(12)
                    .map_err(|e| err(e.ck_rv(), format!("cannot draw an IV: {e}")))?;
                let mut iv = [0u8; 12];
                iv.copy_from_slice(&iv_bytes);
                let (version, out) = self.gated(
                    Call {
                        action: actions::KEY_ENCRYPT,
                        op: Operation::Encrypt,
                        key: &key,
                        version: None,
                        mech: gcm(&iv, aad.as_slice()),
                    },
                    plaintext.as_slice(),
                    None,
                )?;
                let ciphertext = data(out)?;
                Ok(CryptoResponse::Data(Blob::new(
                    Envelope {
                        version,
                        iv,
                        ciphertext,
                    }
                    .encode(),
                )))
            }
            CryptoRequest::Decrypt {
                key,
                ciphertext,
                aad,
            } => {
                let env = Envelope::decode(ciphertext.as_slice()).ok_or_else(|| {
                    err(
                        CKR_ENCRYPTED_DATA_INVALID,
                        "not a Keyward ciphertext (expected the KW1 envelope of keywardctl encrypt)",
                    )
                })?;
                let out = self.gated(
                    Call {
                        action: actions::KEY_DECRYPT,
                        op: Operation::Decrypt,
                        key: &key,
                        version: Some(env.version),
                        mech: gcm(&env.iv, aad.as_slice()),
                    },
                    &env.ciphertext,
                    None,
                );
                match out {
                    Ok((_, o)) => Ok(CryptoResponse::Data(Blob::new(data(o)?))),
                    Err(e) if e.rv == CKR_ENCRYPTED_DATA_INVALID => Err(err(
                        e.rv,
                        format!(
                            "decryption failed with version {}: wrong key, wrong AAD or a \
                             damaged ciphertext",
                            env.version
                        ),
                    )),
                    Err(e) => Err(e),
                }
            }
            CryptoRequest::Sign {
                key,
                data: input,
                prehashed,
            } => {
                let (alg, _) = self.key_info(&key, actions::KEY_SIGN)?;
                let (mech, input) = sign_mech(&key, alg, prehashed, input.as_slice())?;
                // One name for MACs and signatures (the key says which).
                let action = actions::KEY_SIGN;
                let (_, out) = self.gated(
                    Call {
                        action,
                        op: Operation::Sign,
                        key: &key,
                        version: None,
                        mech,
                    },
                    &input,
                    None,
                )?;
                let sig = data(out)?;
                let sig = match alg.kind() {
                    KeyKind::Ec(_) => ecdsa_raw_to_der(&sig).ok_or_else(|| {
                        err(
                            CKR_DEVICE_ERROR,
                            "the token gave a malformed ECDSA signature",
                        )
                    })?,
                    _ => sig,
                };
                Ok(CryptoResponse::Data(Blob::new(sig)))
            }
            CryptoRequest::Export {
                key,
                version,
                wrapping_key,
                mechanism,
            } => self.export(&key, version, &wrapping_key, &mechanism),
            CryptoRequest::Verify {
                key,
                data: input,
                prehashed,
                signature,
            } => {
                let (alg, _) = self.key_info(&key, actions::KEY_VERIFY)?;
                let (mech, input) = sign_mech(&key, alg, prehashed, input.as_slice())?;
                let signature = match alg.kind() {
                    KeyKind::Ec(bits) => {
                        match ecdsa_der_to_raw(signature.as_slice(), bits.div_ceil(8)) {
                            Some(raw) => raw,
                            None => return Ok(CryptoResponse::Verified(false)),
                        }
                    }
                    _ => signature.as_slice().to_vec(),
                };
                // One name for MACs and signatures (the key says which).
                let action = actions::KEY_VERIFY;
                let out = self.gated(
                    Call {
                        action,
                        op: Operation::Verify,
                        key: &key,
                        version: None,
                        mech,
                    },
                    &input,
                    Some(&signature),
                );
                match out {
                    Ok(_) => Ok(CryptoResponse::Verified(true)),
                    Err(e) if e.rv == CKR_SIGNATURE_INVALID || e.rv == CKR_SIGNATURE_LEN_RANGE => {
                        Ok(CryptoResponse::Verified(false))
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// `keywardctl key export`: the module's export gate on the keys' objects.
    fn export(
        &self,
        key: &str,
        version: Option<u64>,
        wrapping_key: &str,
        mechanism: &str,
    ) -> Result<CryptoResponse, ErrorReply> {
        use keyward_token::{OaepHash, WrapMechanism};
        let m = match mechanism {
            "aes-kwp" => WrapMechanism::AesKeyWrapPad,
            "aes-kw" => WrapMechanism::AesKeyWrap,
            "rsa-oaep-sha1" => WrapMechanism::RsaOaep(OaepHash::Sha1),
            "rsa-oaep-sha256" => WrapMechanism::RsaOaep(OaepHash::Sha256),
            other => {
                return Err(err(
                    CKR_MECHANISM_INVALID,
                    format!(
                        "unknown wrapping mechanism '{other}': use aes-kwp, aes-kw, \
                         rsa-oaep-sha1 or rsa-oaep-sha256"
                    ),
                ))
            }
        };
        if !self.svc.audit.is_healthy() {
            return Err(err(
                CKR_DEVICE_ERROR,
                "the audit log is unavailable: refused",
            ));
        }
        let view = self
            .svc
            .view()
            .map_err(|rv| err(rv.rv(), "keywardd cannot read its state"))?;
        let state = &view.state;
        let principal = &self.caller.principal;
        // The object of `name`'s version `n` (default: the primary) with the half wanted.
        let object = |name: &str, n: Option<u64>, want: &dyn Fn(bool) -> Half| {
            let kname = self.visible_key(state, name, actions::KEY_EXPORT)?;
            let entry = state
                .catalog
                .keys
                .get(&kname)
                .ok_or_else(|| missing(name))?;
            let number = n.or(entry.primary_version).ok_or_else(|| {
                err(
                    CKR_KEY_HANDLE_INVALID,
                    format!("{name} has no primary version: name one"),
                )
            })?;
            let v = entry
                .versions
                .iter()
                .find(|v| v.version == number)
                .ok_or_else(|| {
                    err(
                        CKR_KEY_HANDLE_INVALID,
                        format!("{name} has no version {number}"),
                    )
                })?;
            let perms = gate::attribute_rights(&state.policy, principal, &kname);
            let half = want(v.public_key.is_some());
            objects::version_objects(entry, v, perms, self.extra(&view, &kname, number))
                .into_iter()
                .find(|o| o.id.half == half)
                .ok_or_else(|| {
                    err(
                        CKR_KEY_HANDLE_INVALID,
                        format!(
                            "{name} version {number} has no key material (state {})",
                            v.state
                        ),
                    )
                })
        };
        let kobj = object(key, version, &|pair| {
            if pair {
                Half::Private
            } else {
                Half::Secret
            }
        })?;
        let wobj = object(wrapping_key, None, &|pair| {
            if pair {
                Half::Public
            } else {
                Half::Secret
            }
        })?;
        let resource = kobj.id.version_name();
        self.export_gated(&view, principal, actions::KEY_EXPORT, m, &wobj, &kobj)
            .map(|blob| CryptoResponse::Data(Blob::new(blob)))
            .map_err(|(rv, why)| err(rv, format!("{why} ({resource})")))
    }

    /// The key's algorithm and purpose, if the caller sees the key.
    fn key_info(&self, key: &str, action: &str) -> Result<(Algorithm, Purpose), ErrorReply> {
        let view = self
            .svc
            .view()
            .map_err(|rv| err(rv.rv(), "keywardd cannot read its state"))?;
        let name = self.visible_key(&view.state, key, action)?;
        let entry = view
            .state
            .catalog
            .keys
            .get(&name)
            .ok_or_else(|| missing(key))?;
        let purpose: Purpose = entry.purpose.parse().map_err(|_| missing(key))?;
        let alg = entry
            .algorithm
            .as_deref()
            .and_then(|a| a.parse::<Algorithm>().ok())
            .ok_or_else(|| {
                err(
                    CKR_KEY_FUNCTION_NOT_PERMITTED,
                    format!(
                        "{key} has purpose {purpose} but no Cloud KMS algorithm (a key made \
                         through the module): keywardctl's crypto commands work on keys made \
                         with `keywardctl key create`"
                    ),
                )
            })?;
        Ok((alg, purpose))
    }

    fn visible_key(
        &self,
        state: &crate::catalog::State,
        key: &str,
        action: &str,
    ) -> Result<CryptoKeyName, ErrorReply> {
        let name = match ResourceName::from_str(key) {
            Ok(ResourceName::CryptoKey(k)) => k,
            _ => {
                return Err(err(
                    CKR_ARGUMENTS_BAD,
                    format!(
                        "'{key}' is not a crypto key name \
                         (projects/P/keyRings/R/cryptoKeys/K)"
                    ),
                ))
            }
        };
        // An absent key takes the same visibility check and leaves the same denial record as
        // an invisible one: the answer, its record and its work are the same (design §9).
        let seen = gate::visibility(
            &state.policy,
            &self.caller.principal,
            &name,
            CKR_KEY_HANDLE_INVALID,
        )
        .and_then(|()| match state.catalog.keys.contains_key(&name) {
            true => Ok(()),
            false => Err(Denial::new(
                CKR_KEY_HANDLE_INVALID,
                "not visible to the caller",
            )),
        });
        if let Err(d) = seen {
            // Told "absent", recorded as refused (design §4, §6).
            self.refused(
                &self.caller.principal,
                action,
                Some(ResourceName::CryptoKey(name).to_string()),
                d,
            );
            return Err(missing(key));
        }
        Ok(name)
    }

    /// The module's gate and token operation for one call; answers the version used.
    fn gated(
        &self,
        call: Call<'_>,
        input: &[u8],
        signature: Option<&[u8]>,
    ) -> Result<(u64, Outcome), ErrorReply> {
        let principal = &self.caller.principal;
        if !self.svc.audit.is_healthy() {
            return Err(err(
                self.audit_down(principal, call.action),
                "the audit log is unavailable: refused",
            ));
        }
        let view = self
            .svc
            .view()
            .map_err(|rv| err(rv.rv(), "keywardd cannot read its state"))?;
        let state = &view.state;
        let name = self.visible_key(state, call.key, call.action)?;
        let entry = state
            .catalog
            .keys
            .get(&name)
            .ok_or_else(|| missing(call.key))?;
        let number = match call.version.or(entry.primary_version) {
            Some(v) => v,
            None => {
                return Err(err(
                    CKR_KEY_FUNCTION_NOT_PERMITTED,
                    format!("{} has no primary version", call.key),
                ))
            }
        };
        let version = entry
            .versions
            .iter()
            .find(|v| v.version == number)
            .ok_or_else(|| {
                // Only decrypt names a version (its ciphertext's): a version the key lacks
                // means the ciphertext came from another key (issue 18 item 5).
                let have = match entry.versions.iter().map(|v| v.version).max() {
                    Some(m) => format!("versions 1 to {m}"),
                    None => "no versions".to_string(),
                };
                err(
                    CKR_KEY_HANDLE_INVALID,
                    format!(
                        "{} has no version {number} (it has {have}): the ciphertext names \
                         version {number} of the key that made it, so this is the wrong key \
                         (or a damaged ciphertext): decrypt with the key that encrypted it",
                        call.key
                    ),
                )
            })?;
        let perms = gate::attribute_rights(&state.policy, principal, &name);
        let half = match call.op {
            Operation::Sign | Operation::Decrypt if version.public_key.is_some() => Half::Private,
            _ if version.public_key.is_some() => Half::Public,
            _ => Half::Secret,
        };
        let resource = format!("{}/cryptoKeyVersions/{number}", call.key);
        let refuse = |rv: u64, why: String| {
            let message = format!("{why} ({resource})");
            let rv = self.refused(
                principal,
                call.action,
                Some(resource.clone()),
                Denial::new(rv, why),
            );
            Err(err(rv.rv(), message))
        };
        let Some(obj) =
            objects::version_objects(entry, version, perms, self.extra(&view, &name, number))
                .into_iter()
                .find(|o| o.id.half == half)
        else {
            return refuse(
                CKR_KEY_FUNCTION_NOT_PERMITTED,
                format!(
                    "version {number} has no key material (state {})",
                    version.state
                ),
            );
        };
        let plan = match ops::plan(call.op, &call.mech, &obj, self.svc.token.mechanisms()) {
            Ok(p) => p,
            Err(rv) => return refuse(rv.rv(), "this key cannot do that operation".into()),
        };
        if version.state != VersionState::Enabled || !obj.enabled() {
            return refuse(
                CKR_KEY_FUNCTION_NOT_PERMITTED,
                format!("version {number} is {}, not ENABLED", version.state),
            );
        }
        let grant = match gate::use_gate(&state.policy, principal, call.op, &name) {
            Ok(g) => g,
            Err(d) => {
                let why = match gate::use_permission(call.op) {
                    Some(permission) => format!(
                        "permission denied: {} needs {permission} on {}",
                        principal.member, call.key
                    ),
                    None => d.why,
                };
                return refuse(d.rv, why);
            }
        };
        let granted = grant.granted_by.map(|b| format!("granted by {b}"));
        self.record(
            principal,
            call.action,
            Some(resource.clone()),
            AuditOutcome::Allowed,
            0,
            granted,
        )
        .map_err(|rv| err(rv.rv(), audit_refusal(rv.rv())))?;
        let out = ops::run(
            &self.svc.token,
            call.op,
            &plan,
            obj.token_id(),
            input,
            signature,
        )
        .map_err(|rv| {
            err(
                rv.rv(),
                format!("the token refused: {}", keyward_wire::rv::rv_name(rv.rv())),
            )
        })?;
        Ok((number, out))
    }
}

fn missing(key: &str) -> ErrorReply {
    err(
        CKR_KEY_HANDLE_INVALID,
        format!("no crypto key {key}, or you cannot see it"),
    )
}

fn data(out: Outcome) -> Result<Vec<u8>, ErrorReply> {
    match out {
        Outcome::Data(d) => Ok(d),
        Outcome::Verified => Err(err(CKR_DEVICE_ERROR, "unexpected token answer")),
    }
}

fn gcm(iv: &[u8; 12], aad: &[u8]) -> Mechanism {
    Mechanism {
        ty: CKM_AES_GCM,
        params: MechParams::Gcm(GcmParams {
            iv: Blob::new(iv.to_vec()),
            iv_bits: 96,
            aad: Blob::new(aad.to_vec()),
            tag_bits: 128,
            layout: GcmLayout::WithIvBits,
        }),
    }
}

/// A digest given for signing or verifying (`--digest`) must be the one the key's algorithm
/// signs, as in Cloud KMS: SHA-384 for `EC_SIGN_P384_SHA384`, SHA-256 for every other signing
/// key. Refused before the token with what to give instead (issue 18 item 5: a SHA-384 digest
/// on a P-256 key came back as the token's `CKR_DATA_LEN_RANGE`; on an RSA PKCS#1 key it would
/// have been signed behind a SHA-256 DigestInfo, a signature nobody verifies).
fn digest_fits(key: &str, alg: Algorithm, len: usize) -> Result<(), ErrorReply> {
    let (want, hash, flag) = match alg.kind() {
        KeyKind::Ec(384) => (48, "SHA-384", "sha384"),
        KeyKind::Ec(_) | KeyKind::Rsa(_) => (32, "SHA-256", "sha256"),
        // MAC and other keys are refused by `sign_mech` with their own message.
        _ => return Ok(()),
    };
    if len == want {
        return Ok(());
    }
    let curve = match alg.kind() {
        KeyKind::Ec(384) => "P-384 keys".to_string(),
        KeyKind::Ec(_) => "P-256 keys".to_string(),
        _ => format!("{} keys", alg.as_str()),
    };
    Err(err(
        CKR_DATA_LEN_RANGE,
        format!(
            "{key} is {}: {curve} sign {hash} digests ({want} bytes), and this digest has \
             {len} bytes: use --digest {flag} (or give the data and let the key hash it)",
            alg.as_str()
        ),
    ))
}

/// The mechanism and input for signing or verifying with a key of `alg`.
fn sign_mech(
    key: &str,
    alg: Algorithm,
    prehashed: bool,
    input: &[u8],
) -> Result<(Mechanism, Vec<u8>), ErrorReply> {
    let plain = |ty| Mechanism {
        ty,
        params: MechParams::None,
    };
    let pss = |ty| Mechanism {
        ty,
        params: MechParams::Pss(PssParams {
            hash: CKM_SHA256,
            mgf: CKG_MGF1_SHA256,
            salt_len: 32,
        }),
    };
    let name = format!("{alg:?}");
    if prehashed {
        digest_fits(key, alg, input.len())?;
    }
    Ok(match alg.kind() {
        KeyKind::Ec(bits) => {
            let composed = if bits == 384 {
                CKM_ECDSA_SHA384
            } else {
                CKM_ECDSA_SHA256
            };
            let ty = if prehashed { CKM_ECDSA } else { composed };
            (plain(ty), input.to_vec())
        }
        KeyKind::Rsa(_) if name.starts_with("RsaSignPkcs1") => {
            if prehashed {
                (
                    plain(CKM_RSA_PKCS),
                    [&SHA256_DIGEST_INFO[..], input].concat(),
                )
            } else {
                (plain(CKM_SHA256_RSA_PKCS), input.to_vec())
            }
        }
        KeyKind::Rsa(_) if name.starts_with("RsaSignPss") => {
            let ty = if prehashed {
                CKM_RSA_PKCS_PSS
            } else {
                CKM_SHA256_RSA_PKCS_PSS
            };
            (pss(ty), input.to_vec())
        }
        KeyKind::Hmac(_) if !prehashed => (plain(CKM_SHA256_HMAC), input.to_vec()),
        KeyKind::Hmac(_) => {
            return Err(err(
                CKR_ARGUMENTS_BAD,
                "--digest does not apply to MAC keys: give the data",
            ))
        }
        _ => {
            return Err(err(
                CKR_KEY_FUNCTION_NOT_PERMITTED,
                format!("{key} ({name}) cannot sign: use an ASYMMETRIC_SIGN or MAC key"),
            ))
        }
    })
}
