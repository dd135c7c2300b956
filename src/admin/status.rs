//! `keywardctl status`: who answers (keywardd, or the offline handler), the backing token as
//! `C_GetTokenInfo` describes it, and, for a caller holding kms.auditLogs.read on every
//! organisation (org admins, auditors: store-wide facts are theirs, as the audit log is),
//! store-wide counts and the audit chain head. Anyone who reaches the handler gets the first
//! two; counts are left out, and said to be, for everyone else. A plain read: not audited.

use super::render::{table, time_ms};
use super::{Ctx, Res};
use crate::policy::Permission as P;
use crate::store::stats;
use keyward_wire::admin::AdminResponse;
use serde_json::{json, Value};

pub fn status(ctx: &mut Ctx<'_>) -> Res<AdminResponse> {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut row = |k: &str, v: String| rows.push(vec![k.to_string(), v]);
    let version = env!("CARGO_PKG_VERSION");
    let daemon = match ctx.token {
        Some(_) => {
            row("daemon", format!("running (pid {})", std::process::id()));
            json!({"running": true, "pid": std::process::id(), "version": version})
        }
        None => {
            row("daemon", "not asked (offline: --db)".into());
            json!({"running": null, "offline": true, "version": version})
        }
    };
    row("version", version.into());
    let token = match ctx.token.map(|t| t.summary()) {
        Some(Ok(s)) => {
            row(
                "token",
                format!(
                    "{} (slot {}, {} {}, serial {}, firmware {})",
                    s.label, s.slot, s.manufacturer, s.model, s.serial, s.firmware
                ),
            );
            row(
                "token session",
                format!(
                    "logged in; {} idle in the pool; {} session objects",
                    s.idle_sessions, s.session_objects
                ),
            );
            // What the token cannot do (keywardctl token capabilities says why and what it
            // disables).
            let lacks: Vec<String> = ctx
                .token
                .map(|t| t.capabilities().report())
                .unwrap_or_default()
                .into_iter()
                .filter(|l| !l.available)
                .map(|l| l.name)
                .collect();
            row(
                "token lacks",
                if lacks.is_empty() {
                    "nothing Keyward uses".into()
                } else {
                    format!("{} (see keywardctl token capabilities)", lacks.join(", "))
                },
            );
            json!({
                "label": s.label, "slot": s.slot, "manufacturer": s.manufacturer,
                "model": s.model, "serial": s.serial, "firmware": s.firmware,
                "loggedIn": s.logged_in, "idleSessions": s.idle_sessions,
                "sessionObjects": s.session_objects, "lacks": lacks,
            })
        }
        Some(Err(e)) => {
            row("token", format!("ERROR: {e}"));
            json!({"error": e.to_string(), "rv": e.ck_rv()})
        }
        None => {
            row("token", "not open (offline)".into());
            Value::Null
        }
    };
    let store_wide = ctx.require_global(P::AuditLogsRead).is_ok();
    let (counts, head) = if store_wide {
        let c = stats::counts(ctx.tx)?;
        let h = stats::audit_head(ctx.tx)?;
        row("organizations", c.organizations.to_string());
        row("folders", c.folders.to_string());
        row("projects", c.projects.to_string());
        row("key rings", c.key_rings.to_string());
        row("crypto keys", c.crypto_keys.to_string());
        row("key versions", c.key_versions.to_string());
        row("bindings", c.bindings.to_string());
        row("service accounts", c.service_accounts.to_string());
        row("groups", c.groups.to_string());
        row("custom roles", c.custom_roles.to_string());
        row(
            "audit head",
            match (&h.hash, h.time_ms) {
                (Some(hash), Some(t)) => format!("record {} {hash} ({})", h.seq, time_ms(t)),
                _ => "empty log".into(),
            },
        );
        row(
            "audit checkpoint",
            match (h.checkpoint_seq, h.checkpoint_time_ms) {
                (Some(s), Some(t)) => format!("token-signed at record {s} ({})", time_ms(t)),
                _ => "none yet (keywardd signs one when it stops)".into(),
            },
        );
        let token_head = match ctx.token {
            Some(token) => token_head_row(ctx, token, &mut row)?,
            None => Value::Null,
        };
        let mut head = json!(h);
        head["tokenHead"] = token_head;
        (json!(c), head)
    } else {
        row(
            "counts",
            "not shown: they need kms.auditLogs.read on every organisation".into(),
        );
        (Value::Null, Value::Null)
    };
    let js = json!({
        "daemon": daemon,
        "token": token,
        "counts": counts,
        "auditHead": head,
    });
    Ok(table(&["FIELD", "VALUE"], rows, js))
}

/// `keywardctl token capabilities`: each capability keywardd learnt at start, whether the
/// token has it, why not, and what its absence disables. Needs keywardd (the token).
pub fn capabilities(ctx: &mut Ctx<'_>) -> Res<AdminResponse> {
    let Some(token) = ctx.token else {
        return Err(super::Failure::Precondition(
            "token capabilities are learnt by keywardd at start: ask the daemon (no --db)".into(),
        ));
    };
    let lines = token.capabilities().report();
    let rows = lines
        .iter()
        .map(|l| {
            vec![
                l.name.clone(),
                if l.available { "yes" } else { "no" }.to_string(),
                l.detail.clone(),
                l.disables.join("; "),
            ]
        })
        .collect();
    let js = json!({
        "token": token.label(),
        "capabilities": lines.iter().map(|l| json!({
            "name": l.name, "available": l.available, "detail": l.detail,
            "disables": l.disables,
        })).collect::<Vec<_>>(),
    });
    Ok(table(
        &["CAPABILITY", "AVAILABLE", "DETAIL", "DISABLES"],
        rows,
        js,
    ))
}

/// The signed head the token holds (design §6): its record, and when it is behind the
/// newest checkpoint, since when and how many records only the chain covers (truncation of
/// those is not detectable). Stored at most every `audit_checkpoint_secs`, so a few seconds of
/// lag is normal; a store that keeps failing shows here, and after 10x the interval keywardd
/// refuses new operations.
fn token_head_row(
    ctx: &mut Ctx<'_>,
    token: &keyward_token::Token,
    row: &mut impl FnMut(&str, String),
) -> Res<Value> {
    if let Ok(keyward_token::HeadStorage::Unavailable(why)) = token.head_storage() {
        row(
            "audit token head",
            format!(
                "no token head: the token cannot keep one ({why}); truncation of the log is \
                 not detectable (the chain and the signed checkpoints still catch edits)"
            ),
        );
        return Ok(json!({"seq": 0, "noTokenHead": why}));
    }
    let head = match crate::audit::checkpoint::token_head(token) {
        Ok(h) => h,
        Err(e) => {
            row("audit token head", format!("ERROR: {e}"));
            return Ok(json!({"error": e.to_string()}));
        }
    };
    let seq = head.map_or(0, |c| c.seq);
    let stale: Option<(i64, i64)> = ctx
        .tx
        .query_row(
            "SELECT (SELECT MIN(time_ms) FROM audit_checkpoints WHERE seq > ?1), \
                    (SELECT COUNT(*) FROM audit_log WHERE seq > ?1)",
            [seq],
            |r| Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, i64>(1)?)),
        )
        .map(|(since, n)| since.map(|t| (t, n)))
        .map_err(crate::store::StoreError::from)?;
    row(
        "audit token head",
        match (seq, stale) {
            (0, None) => "none yet".into(),
            (s, None) => format!("record {s} (the newest checkpoint)"),
            (s, Some((since, n))) => format!(
                "record {s}: token head stale since {}, {n} records covered by the chain only",
                time_ms(since)
            ),
        },
    );
    Ok(json!({
        "seq": seq,
        "staleSinceMs": stale.map(|(t, _)| t),
        "chainOnly": stale.map_or(0, |(_, n)| n),
    }))
}
