//! Printing an answer: a one-line message, an aligned table and warnings on stderr; with
//! `--json` the response's JSON document as is (JSON lines for `audit tail|query`, for a SIEM,
//! design §6). Control characters in names and details are escaped.

use keyward_wire::admin::{AdminRequest, AdminResponse, Table};
use std::io::Write;

/// Replaces control characters (terminal escapes in names or audit details) with escapes.
pub fn printable(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// An aligned text table: two spaces between columns, the last column unpadded.
pub fn render_table(t: &Table) -> String {
    let header: Vec<String> = t.headers.iter().map(|h| printable(h)).collect();
    let rows: Vec<Vec<String>> = t
        .rows
        .iter()
        .map(|r| r.iter().map(|c| printable(c)).collect())
        .collect();
    let ncols = rows
        .iter()
        .map(Vec::len)
        .chain([header.len()])
        .max()
        .unwrap_or(0);
    let mut widths = vec![0usize; ncols];
    for row in std::iter::once(&header).chain(&rows) {
        for (i, c) in row.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, c) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(c);
            if i + 1 < row.len() {
                line.push_str(&" ".repeat(widths[i] - c.chars().count()));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if rows.is_empty() {
        out.push_str("(none)\n");
    }
    out
}

/// True for the requests whose `--json` output is JSON lines (a SIEM feed, design §6).
pub fn json_lines(req: &AdminRequest) -> bool {
    matches!(
        req,
        AdminRequest::AuditTail { .. } | AdminRequest::AuditQuery { .. }
    )
}

pub fn print_response(resp: &AdminResponse, json: bool, lines: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    for w in &resp.warnings {
        eprintln!("warning: {}", printable(w));
    }
    if json {
        match serde_json::from_str::<serde_json::Value>(&resp.json) {
            Ok(serde_json::Value::Array(items)) if lines => {
                for item in items {
                    writeln!(out, "{item}")?;
                }
            }
            _ => writeln!(out, "{}", resp.json)?,
        }
        return out.flush();
    }
    if let Some(m) = &resp.message {
        // Multi-line messages (a PEM) keep their lines; other control characters are escaped.
        for line in m.split('\n') {
            writeln!(out, "{}", printable(line))?;
        }
    }
    if let Some(t) = &resp.table {
        write!(out, "{}", render_table(t))?;
    }
    if let Some(s) = &resp.secret {
        writeln!(out, "{s}")?;
        out.flush()?;
        eprintln!("note: the secret above is shown only this once; Keyward keeps only a MAC of it");
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = Table {
            headers: vec!["A".into(), "BB".into()],
            rows: vec![
                vec!["long".into(), "x".into()],
                vec!["s\x1b[2J".into(), "y".into()],
            ],
        };
        assert_eq!(
            render_table(&t),
            "A           BB\nlong        x\ns\\u{1b}[2J  y\n"
        );
    }
}
