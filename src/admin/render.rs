//! Building [`AdminResponse`]s: one JSON document for scripts and a table for humans.

use keyward_wire::admin::{AdminResponse, Table};
use serde_json::Value;

/// A response with a message and a JSON body.
pub fn done(message: impl Into<String>, json: Value) -> AdminResponse {
    AdminResponse {
        message: Some(message.into()),
        json: json.to_string(),
        ..AdminResponse::default()
    }
}

/// A response with a table and a JSON body.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>, json: Value) -> AdminResponse {
    AdminResponse {
        table: Some(Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows,
        }),
        json: json.to_string(),
        ..AdminResponse::default()
    }
}

/// RFC 3339 (UTC) of unix seconds.
pub fn time(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

/// RFC 3339 (UTC, milliseconds) of unix milliseconds.
pub fn time_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// "yes"/"no".
pub fn yes(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}
