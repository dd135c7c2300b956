//! Operations (PKCS#11 3.0 §5.8-§5.13): `*Init` binds the use gate's decision (key, version,
//! token id, mechanism) to the session's operation; `*Update` streams input within the
//! limits of design §9 ([`super::stream`]); `*Final` and one-shot calls run the mechanism on
//! the backing token. Also `C_GenerateRandom`.

use super::ck::*;
use super::gate::{self, Denial};
use super::manage::Named;
use super::ops::{self, Plan};
use super::stream::{Chain, Hasher, Stream};
use super::P11Error;
use super::{init_action, Active, ClientConnection, MAX_RANDOM};
use crate::audit::Outcome;
use crate::daemon::limits::{Buffer, Refused};
use keyward_wire::pkcs11::{Blob, ObjectHandle, Operation, Pkcs11Response, SessionId, SlotId};
use std::sync::Arc;

impl ClientConnection {
    /// `C_EncryptInit`, `C_DecryptInit`, `C_SignInit`, `C_VerifyInit`, `C_DigestInit`
    /// (PKCS#11 3.0 §5.8-§5.12): a session object's operation, an import job's refusal, or
    /// [`ClientConnection::init`].
    pub(super) fn operation_init(
        &mut self,
        op: Operation,
        session: SessionId,
        mechanism: &keyward_wire::pkcs11::Mechanism,
        key: Option<ObjectHandle>,
    ) -> Result<Pkcs11Response, P11Error> {
        if let Some(h) = key {
            match self.named(session, h)? {
                Named::Session(o) => {
                    return self.init_session_object(op, session, mechanism, h, &o)
                }
                Named::Hidden => return Err(CKR_KEY_HANDLE_INVALID.into()),
                Named::Job => {
                    return Err(self.refuse_job(
                        session,
                        h,
                        init_action(op),
                        CKR_KEY_FUNCTION_NOT_PERMITTED,
                        CKR_KEY_HANDLE_INVALID,
                    ))
                }
                Named::Cert | Named::Key => {}
            }
        }
        self.init(op, session, mechanism, key)
    }

    /// `C_*Update`: what the active `op` outputs for `data` now.
    pub(super) fn update(
        &mut self,
        op: Operation,
        session: SessionId,
        data: &[u8],
    ) -> Result<Pkcs11Response, P11Error> {
        let out = self.append(op, session, data)?;
        Ok(Pkcs11Response::Data(Blob::new(out)))
    }

    /// `C_Verify` (one shot: data and signature).
    pub(super) fn verify(
        &mut self,
        session: SessionId,
        data: &[u8],
        signature: &[u8],
    ) -> Result<Pkcs11Response, P11Error> {
        self.finish(Operation::Verify, session, Some(signature), Some(data))
    }

    /// Ends the active `op` without a result (an `*Init` with a NULL mechanism cancels the
    /// active operation, PKCS#11 3.0); `Done` also when none was active.
    pub(super) fn cancel(
        &mut self,
        op: Operation,
        session: SessionId,
    ) -> Result<Pkcs11Response, P11Error> {
        self.session_mut(session)?.ops.remove(&op);
        Ok(Pkcs11Response::Done)
    }

    pub(super) fn random(
        &mut self,
        session: SessionId,
        len: u64,
    ) -> Result<Pkcs11Response, P11Error> {
        let slot = self.session(session)?.slot;
        if len > MAX_RANDOM {
            return Err(CKR_ARGUMENTS_BAD.into());
        }
        self.healthy()?;
        let state = self.svc.published.current();
        let ctx = self.slot_ctx(slot, &state)?;
        if ctx.ring.is_none() {
            return Err(CKR_RANDOM_NO_RNG.into());
        }
        let n = usize::try_from(len).map_err(|_| CKR_ARGUMENTS_BAD)?;
        let bytes = self.svc.token.generate_random(n).map_err(|e| {
            tracing::warn!(error = %e, "C_GenerateRandom failed in the token");
            e.ck_rv()
        })?;
        Ok(Pkcs11Response::Data(Blob::new(bytes)))
    }

    // ------------------------------------------------------------------ operations

    /// The start every `*Init` shares (a key's and a session object's): the session, no
    /// operation of this kind already active in it, and the action the audit records.
    pub(super) fn init_start(
        &self,
        op: Operation,
        session: SessionId,
    ) -> Result<(SlotId, &'static str), P11Error> {
        let s = self.session(session)?;
        if s.ops.contains_key(&op) {
            return Err(CKR_OPERATION_ACTIVE.into());
        }
        Ok((s.slot, init_action(op)))
    }

    pub(super) fn init(
        &mut self,
        op: Operation,
        session: SessionId,
        mechanism: &keyward_wire::pkcs11::Mechanism,
        key: Option<ObjectHandle>,
    ) -> Result<Pkcs11Response, P11Error> {
        let (slot, action) = self.init_start(op, session)?;
        let view = self.svc.view()?;
        let state = &view.state;
        let ctx = self.slot_ctx(slot, state)?;
        if !self.svc.audit.is_healthy() {
            return Err(P11Error::from(self.audit_down(&ctx.principal, action)));
        }
        let (Some(handle), Some(_)) = (key, gate::use_permission(op)) else {
            // C_DigestInit: no key and no IAM gate, but the slot's token must be one the
            // principal sees (design §9: an unbound uid cannot use the token).
            let hash = ops::digest_mechanism(mechanism)?;
            if let Err(d) = gate::digest_gate(ctx.ring.as_ref()) {
                return Err(self.refused(&ctx.principal, action, Some(ctx.ring_name.clone()), d));
            }
            let (charge, _) = self.operation_charge(&ctx.principal, Some(ctx.ring_name.clone()))?;
            self.record(&ctx.principal, action, None, Outcome::Allowed, 0, None)?;
            self.session_mut(session)?.ops.insert(
                op,
                Active::Digest {
                    hasher: Box::new(Hasher::new(hash)),
                    _charge: charge,
                },
            );
            return Ok(Pkcs11Response::Done);
        };
        let obj = self.resolve(&view, &ctx, handle, CKR_KEY_HANDLE_INVALID)?;
        let resource = Some(obj.id.version_name());
        let refuse_with =
            |this: &Self, d: Denial| Err(this.refused(&ctx.principal, action, resource.clone(), d));
        let refuse = |this: &Self, rv: u64, why: &str| refuse_with(this, Denial::new(rv, why));
        let mut plan = match ops::plan(op, mechanism, &obj, self.svc.token.mechanisms()) {
            Ok(p) => p,
            Err(rv) => {
                return refuse(
                    self,
                    rv.rv(),
                    &format!("mechanism {:#x} not allowed for this key", mechanism.ty),
                )
            }
        };
        if !obj.enabled() {
            return refuse(self, CKR_KEY_FUNCTION_NOT_PERMITTED, "version not ENABLED");
        }
        if ctx.login == Some(true) && obj.id.half.is_private() {
            return refuse(self, CKR_KEY_HANDLE_INVALID, "SO session");
        }
        let d = match gate::use_gate(&state.policy, &ctx.principal, op, &obj.id.key) {
            Ok(grant) => grant,
            Err(d) => return refuse_with(self, d),
        };
        // Design §9: the opposite use permission decides who chooses IVs and which modes are
        // offered (decided on this snapshot, bound to the operation with its plan).
        let token = &self.svc.token;
        let generated = match gate::iv_gate(op, d.holds_other, &mut plan, &mechanism.params, |n| {
            token.generate_random(n).map_err(|e| {
                tracing::warn!(error = %e, "cannot draw an IV in the token");
                P11Error::new(CKR_DEVICE_ERROR, format!("cannot draw an IV: {e}"))
            })
        }) {
            Ok(g) => g,
            Err(d) => return refuse_with(self, d),
        };
        let (charge, buf) = self.operation_charge(&ctx.principal, resource.clone())?;
        let granted = d.granted_by.map(|b| {
            if generated.is_some() {
                format!("granted by {b}; IV generated by keywardd")
            } else {
                format!("granted by {b}")
            }
        });
        self.record(
            &ctx.principal,
            action,
            resource,
            Outcome::Allowed,
            0,
            granted,
        )?;
        let active = Active::Keyed {
            object: obj.id.version_name(),
            plan,
            token_id: obj.token_id().to_vec(),
            session_object: None,
            buf,
            stream: None,
            _charge: charge,
        };
        self.session_mut(session)?.ops.insert(op, active);
        Ok(match generated {
            Some(iv) => Pkcs11Response::GeneratedIv(Blob::new(iv)),
            None => Pkcs11Response::Done,
        })
    }

    /// Adds input to the active `op` (an `*Update`) and returns what it outputs now. Over a
    /// limit of design §9 the operation ends with `CKR_DEVICE_MEMORY` (audited); any other
    /// failure ends it too.
    pub(super) fn append(
        &mut self,
        op: Operation,
        session: SessionId,
        data: &[u8],
    ) -> Result<Vec<u8>, P11Error> {
        let token = Arc::clone(&self.svc.token);
        let s = self.session_mut(session)?;
        let slot = s.slot;
        let active = s.ops.get_mut(&op).ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        let (result, object) = match active {
            Active::Digest { hasher, .. } => {
                hasher.update(data);
                (Ok(Vec::new()), None)
            }
            Active::Keyed {
                buf,
                object,
                plan,
                stream,
                token_id,
                session_object,
                ..
            } => {
                let stream = stream.get_or_insert_with(|| Box::new(Stream::of(op, plan)));
                let target = match session_object {
                    Some(o) => ops::KeyRef::Session(*o),
                    None => ops::KeyRef::Id(token_id),
                };
                let r = match &mut **stream {
                    Stream::Whole => buf.extend(data).map(|()| Vec::new()).map_err(Fail::Limit),
                    Stream::Hashed { hasher, .. } => {
                        hasher.update(data);
                        Ok(Vec::new())
                    }
                    Stream::Blocks(chain) => {
                        stream_part(&token, op, plan, chain, buf, target, data)
                    }
                };
                (r, Some(object.clone()))
            }
        };
        if result.is_err() {
            s.ops.remove(&op);
        }
        result.map_err(|fail| match fail {
            Fail::Rv(e) => {
                tracing::debug!(?object, error = %e, "operation part failed");
                e
            }
            Fail::Limit(r) => {
                let principal = self.inst.lock().principal(slot).0;
                self.deny_limit(&principal, object, CKR_DEVICE_MEMORY, r)
            }
        })
    }

    /// Ends the active `op` and returns its last output: a one-shot call (`last` is its
    /// whole input) runs the mechanism itself over it, nothing buffered; a `*Final` runs it
    /// over what an update left (the buffered input, a block mode's held-back bytes, or a
    /// streamed hash's digest).
    pub(super) fn finish(
        &mut self,
        op: Operation,
        session: SessionId,
        signature: Option<&[u8]>,
        last: Option<&[u8]>,
    ) -> Result<Pkcs11Response, P11Error> {
        if let Some(data) = last {
            // A one-shot call after updates (PKCS#11 forbids it; SoftHSM2 takes it): as an
            // update, then the final.
            if matches!(
                self.session_mut(session)?.ops.get(&op),
                Some(
                    Active::Digest { .. }
                        | Active::Keyed {
                            stream: Some(_),
                            ..
                        }
                )
            ) {
                self.append(op, session, data)?;
                return self.finish(op, session, signature, None);
            }
        }
        let s = self.session_mut(session)?;
        let active = s.ops.remove(&op).ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        match active {
            Active::Digest { hasher, .. } => Ok(Pkcs11Response::Data(Blob::new(hasher.finish()))),
            Active::Keyed {
                object,
                plan,
                token_id,
                session_object,
                buf,
                stream,
                ..
            } => {
                let target = match session_object {
                    Some(o) => ops::KeyRef::Session(o),
                    None => ops::KeyRef::Id(&token_id),
                };
                let out = match stream.map(|s| *s) {
                    None | Some(Stream::Whole) => ops::run_on(
                        &self.svc.token,
                        op,
                        &plan,
                        target,
                        last.unwrap_or(buf.as_slice()),
                        signature,
                    ),
                    Some(Stream::Hashed {
                        hasher,
                        last,
                        prefix,
                    }) => {
                        let digest = hasher.finish();
                        let data = [prefix.unwrap_or_default(), &digest[..]].concat();
                        ops::run_on(&self.svc.token, op, &last, target, &data, signature)
                    }
                    Some(Stream::Blocks(chain)) => {
                        let held = buf.as_slice();
                        if !chain.final_needs_token(held.len()) {
                            Ok(ops::Outcome::Data(Vec::new()))
                        } else if !chain.counter_fits(held.len()) {
                            Err(P11Error::new(
                                CKR_DATA_LEN_RANGE,
                                "the counter block would wrap",
                            ))
                        } else {
                            let last = Plan {
                                mech: chain.last(),
                                ..plan
                            };
                            ops::run_on(&self.svc.token, op, &last, target, held, signature)
                        }
                    }
                };
                // The buffer (and its charge) goes here; it zeroises itself.
                drop(buf);
                match out {
                    Ok(ops::Outcome::Data(d)) => Ok(Pkcs11Response::Data(Blob::new(d))),
                    Ok(ops::Outcome::Verified) => Ok(Pkcs11Response::Done),
                    Err(e) => {
                        tracing::debug!(%object, error = %e, "operation failed");
                        // The key is gone from the token under a version the catalog holds.
                        Err(if e.rv() == CKR_KEY_HANDLE_INVALID {
                            P11Error::new(CKR_DEVICE_ERROR, "the token lost the key")
                        } else {
                            e
                        })
                    }
                }
            }
        }
    }
}

/// Why an operation's update failed.
enum Fail {
    /// The token or a check refused it.
    Rv(P11Error),
    /// A limit of design §9.
    Limit(Refused),
}

/// One update of an AES block mode (see [`stream`]): buffers `data`, runs the whole blocks
/// that are ready as one single-part token call chained from `chain`, advances the chain,
/// and drops what was processed from `buf`.
fn stream_part(
    token: &keyward_token::Token,
    op: Operation,
    plan: &Plan,
    chain: &mut Chain,
    buf: &mut Buffer,
    target: ops::KeyRef<'_>,
    data: &[u8],
) -> Result<Vec<u8>, Fail> {
    let held = buf.as_slice().len();
    let n = chain.ready(op, held + data.len(), data.len());
    if n == 0 {
        buf.extend(data).map_err(Fail::Limit)?;
        return Ok(Vec::new());
    }
    if !chain.counter_fits(n) {
        return Err(Fail::Rv(P11Error::new(
            CKR_DATA_LEN_RANGE,
            "the counter block would wrap",
        )));
    }
    let part = Plan {
        mech: chain.middle(),
        ..plan.clone()
    };
    // Nothing held back: the part comes straight from the request and only the rest is
    // buffered (a stream of whole-block updates buffers nothing).
    if held > 0 {
        buf.extend(data).map_err(Fail::Limit)?;
    }
    let input = if held == 0 {
        &data[..n]
    } else {
        &buf.as_slice()[..n]
    };
    let out = match ops::run_on(token, op, &part, target, input, None).map_err(Fail::Rv)? {
        ops::Outcome::Data(d) => d,
        ops::Outcome::Verified => Vec::new(),
    };
    chain.advance(op, input, &out);
    if held == 0 {
        buf.extend(&data[n..]).map_err(Fail::Limit)?;
    } else {
        buf.consume(n);
    }
    Ok(out)
}
