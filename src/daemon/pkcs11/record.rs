//! Limits and audit for one client connection: the charges of design §9 "Resources"
//! (sessions, operations, key generations, buffered bytes) and the audit records of
//! design §6 (every decision; a refusal while the log cannot be written goes to the writer's
//! outage list and fails closed with `CKR_DEVICE_ERROR`).

use super::ck::*;
use super::ClientConnection;
use super::P11Error;
use crate::audit::writer::AuditUnavailable;
use crate::audit::{NewRecord, Outcome};
use crate::daemon::limits::{Buffer, Charge, Holder, Refused, Resource};
use crate::policy::Principal;

impl ClientConnection {
    // ------------------------------------------------------------------ limits

    /// Who this connection's uses are counted against, as `principal`.
    pub(super) fn holder(&self, principal: &Principal) -> Holder {
        Holder::new(self.caller.peer_uid, &principal.member.to_string())
    }

    /// Takes `n` of `resource` for `principal` on this connection's uid (design §9).
    pub(super) fn charge(
        &self,
        resource: Resource,
        principal: &Principal,
        n: usize,
    ) -> Result<Charge, Refused> {
        self.svc
            .limits()
            .charge(resource, &self.holder(principal), n)
    }

    /// Audits a refusal by a limit of the request being answered; returns the error (`rv`).
    pub(super) fn deny_limit(
        &self,
        principal: &Principal,
        resource: Option<String>,
        rv: u64,
        refused: Refused,
    ) -> P11Error {
        let why = refused.to_string();
        self.deny(principal, self.current, resource, rv, &why);
        P11Error::new(rv, why)
    }

    /// An operation's charge and its (empty) input buffer, or `CKR_DEVICE_MEMORY` (audited).
    pub(super) fn operation_charge(
        &self,
        principal: &Principal,
        resource: Option<String>,
    ) -> Result<(Charge, Buffer), P11Error> {
        let limits = self.svc.limits();
        let holder = self.holder(principal);
        limits
            .charge(Resource::Operations, &holder, 1)
            .and_then(|c| Ok((c, Buffer::new(limits, &holder)?)))
            .map_err(|r| self.deny_limit(principal, resource, CKR_DEVICE_MEMORY, r))
    }

    /// A key generation's charge (held while the token generates), or `CKR_DEVICE_MEMORY`
    /// (audited).
    pub(super) fn generation_charge(
        &self,
        principal: &Principal,
        ring: &str,
    ) -> Result<Charge, P11Error> {
        self.charge(Resource::KeyGenerations, principal, 1)
            .map_err(|r| self.deny_limit(principal, Some(ring.to_owned()), CKR_DEVICE_MEMORY, r))
    }

    // ------------------------------------------------------------------ audit

    pub(super) fn record(
        &self,
        principal: &Principal,
        action: &str,
        resource: Option<String>,
        outcome: Outcome,
        rv: u64,
        detail: Option<String>,
    ) -> Result<(), P11Error> {
        let rec = NewRecord {
            time_ms: self.svc.clock.now_ms(),
            principal: principal.member.to_string(),
            peer_pid: self.caller.peer_pid,
            peer_uid: self.caller.peer_uid,
            instance: self.caller.instance.clone(),
            action: action.to_owned(),
            resource,
            outcome,
            rv,
            detail,
            request_id: None,
        };
        self.svc.audit.submit(rec).map_err(|e| {
            // A uid over its audit rate is logged (rate-limited) by the writer.
            if !matches!(e, AuditUnavailable::RateLimited(_)) {
                tracing::error!(error = %e, action, "audit record refused: failing closed");
            }
            P11Error::new(e.ck_rv(), e.to_string())
        })
    }

    /// Records a denial (the denial stands whether or not the record could be written).
    pub(super) fn deny(
        &self,
        principal: &Principal,
        action: &str,
        resource: Option<String>,
        rv: u64,
        why: &str,
    ) {
        let _ = self.record(
            principal,
            action,
            resource,
            Outcome::Denied,
            rv,
            Some(why.to_owned()),
        );
    }

    /// `CKR_DEVICE_ERROR` while the audit log cannot be written; the refusal is recorded
    /// (as the instance's principal) when the log is writable again.
    pub(super) fn healthy(&self) -> Result<(), P11Error> {
        if self.svc.audit.is_healthy() {
            Ok(())
        } else {
            let base = self.inst.lock().base.clone();
            Err(P11Error::from(self.audit_down(&base, self.current)))
        }
    }

    /// Refuses an operation for want of an audit log: its denial goes to the writer's
    /// outage list (design §6: every denial is recorded); answers `CKR_DEVICE_ERROR`.
    pub(super) fn audit_down(&self, principal: &Principal, action: &str) -> u64 {
        tracing::error!(action, "audit log unavailable: operation refused");
        self.svc.audit.refuse(NewRecord {
            time_ms: self.svc.clock.now_ms(),
            principal: principal.member.to_string(),
            peer_pid: self.caller.peer_pid,
            peer_uid: self.caller.peer_uid,
            instance: self.caller.instance.clone(),
            action: action.to_owned(),
            resource: None,
            outcome: Outcome::Denied,
            rv: CKR_DEVICE_ERROR,
            detail: Some("the audit log could not be written".into()),
            request_id: None,
        });
        CKR_DEVICE_ERROR
    }
}
