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
                r.result.clone(),
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
            "audit log intact: {} records, chain head {} (records after the last signed \
             checkpoint are covered by the chain only; token-signed checkpoints come with \
             keywardd)",
            report.records, report.head
        ),
        json!(report),
    );
    resp.table = None;
    Ok(resp)
}
