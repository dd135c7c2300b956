//! `audit tail`, `audit query`, `audit verify`: reading the log needs kms.auditLogs.read on
//! every organisation.

use super::render::{table, time_ms};
use super::{Ctx, Failure, Res};
use crate::audit::{self, Filter, Record};
use crate::policy::Permission as P;
use keyward_wire::admin::AdminResponse;
use serde_json::json;

fn records(rs: Vec<Record>) -> Res<AdminResponse> {
    let rows = rs
        .iter()
        .map(|r| {
            vec![
                r.seq.to_string(),
                time_ms(r.time_ms),
                r.principal.clone(),
                r.action.clone(),
                r.resource.clone().unwrap_or_else(|| "-".into()),
                // A coalesced record stands for `count` identical denials (design §6).
                if r.count > 1 {
                    format!("{} x{}", r.result, r.count)
                } else {
                    r.result.clone()
                },
                r.detail.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let js = serde_json::to_value(&rs).map_err(|e| Failure::Invalid(e.to_string()))?;
    Ok(table(
        &[
            "SEQ",
            "TIME",
            "PRINCIPAL",
            "ACTION",
            "RESOURCE",
            "RESULT",
            "DETAIL",
        ],
        rows,
        js,
    ))
}

pub fn tail(ctx: &mut Ctx<'_>, count: u32) -> Res<AdminResponse> {
    ctx.require_global(P::AuditLogsRead)?;
    let f = Filter {
        limit: Some(count),
        ..Filter::default()
    };
    records(audit::query(ctx.tx, &f)?)
}

pub fn query(ctx: &mut Ctx<'_>, f: &Filter) -> Res<AdminResponse> {
    if let Some(r) = &f.result {
        if !["allowed", "denied", "error"].contains(&r.as_str()) {
            return Err(Failure::Invalid(format!(
                "invalid result '{r}': use allowed, denied or error"
            )));
        }
    }
    ctx.require_global(P::AuditLogsRead)?;
    records(audit::query(ctx.tx, f)?)
}

pub fn verify(ctx: &mut Ctx<'_>) -> Res<AdminResponse> {
    ctx.require_global(P::AuditLogsRead)?;
    // With the token (keywardd), the signed checkpoints also catch truncation and a
    // recomputed chain. This runs inside the request's write transaction, which holds the
    // store's write lock: every record the token's head can name is already committed.
    if let Some(token) = ctx.token {
        let report = audit::checkpoint::verify_with_token(ctx.tx, token)
            .map_err(|e| Failure::Token(super::CKR_DEVICE_ERROR, e.to_string()))?;
        if !report.ok() {
            return Err(Failure::Precondition(report.summary()));
        }
        let mut resp = super::render::done(
            format!("audit log intact: {}", report.summary()),
            json!(report),
        );
        resp.table = None;
        return Ok(resp);
    }
    let report = audit::verify(ctx.tx)?;
    if !report.ok() {
        return Err(Failure::Precondition(format!(
            "audit log verification FAILED ({} records read): {}",
            report.records,
            report.problems.join("; ")
        )));
    }
    let mut resp = super::render::done(
        format!(
            "audit log intact: {} records, chain head {} (checked offline, by the chain only: \
             run it through keywardd to check the token-signed checkpoints too, which also \
             catch truncation and a recomputed chain)",
            report.records, report.head
        ),
        json!(report),
    );
    resp.table = None;
    Ok(resp)
}
