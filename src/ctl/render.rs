//! Printing an answer: a one-line message, an aligned table and warnings on stderr; with
//! `--json` the response's JSON document as is (JSON lines for `audit tail|query`, for a SIEM,
//! design §6). Control characters in names and details are escaped.

use super::error::CtlError;
use keyward_wire::admin::{AdminRequest, AdminResponse, Table};
use std::io::Write;
use std::path::Path;

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

/// Prints an admin answer: warnings on stderr; then, with `--json`, its JSON document (JSON
/// lines when `lines`); else its message, table and once-shown secret. A message carrying a
/// PEM block prints only the PEM on stdout, the words before it on stderr. With `out`
/// (`--out FILE`), the secret or the PEM goes to that file instead of stdout.
pub fn print_response(
    resp: &AdminResponse,
    json: bool,
    lines: bool,
    out_file: Option<&Path>,
) -> Result<(), CtlError> {
    for w in &resp.warnings {
        eprintln!("warning: {}", printable(w));
    }
    let written = match out_file {
        Some(path) => Some(write_out_file(resp, path)?),
        None => None,
    };
    let mut out = std::io::stdout().lock();
    let res = (|| -> std::io::Result<()> {
        if json {
            match serde_json::from_str::<serde_json::Value>(&resp.json) {
                Ok(serde_json::Value::Array(items)) if lines => {
                    for item in items {
                        writeln!(out, "{item}")?;
                    }
                }
                Ok(mut doc @ serde_json::Value::Object(_)) if written.is_some() => {
                    if resp.secret.is_some() {
                        // The secret went to the file only.
                        if let Some(o) = doc.as_object_mut() {
                            o.remove("key");
                        }
                    }
                    doc["out"] = path_str(out_file.unwrap_or(Path::new(""))).into();
                    doc["bytes"] = written.unwrap_or(0).into();
                    writeln!(out, "{doc}")?;
                }
                _ => writeln!(out, "{}", resp.json)?,
            }
            return out.flush();
        }
        if let Some(m) = &resp.message {
            let (words, pem) = split_pem(m);
            if let Some(words) = words {
                // Multi-line messages keep their lines; other control characters are escaped.
                for line in words.split('\n') {
                    if pem.is_some() {
                        eprintln!("{}", printable(line));
                    } else {
                        writeln!(out, "{}", printable(line))?;
                    }
                }
            }
            if let (Some(pem), None) = (pem, written) {
                for line in pem.split('\n') {
                    writeln!(out, "{}", printable(line))?;
                }
            }
        }
        if let Some(t) = &resp.table {
            write!(out, "{}", render_table(t))?;
        }
        if let Some(s) = &resp.secret {
            if let Some(path) = out_file {
                out.flush()?;
                eprintln!(
                    "note: the key is in {} (mode 0600) and shown nowhere else; Keyward keeps \
                     only a MAC of it",
                    path.display()
                );
            } else {
                writeln!(out, "{s}")?;
                out.flush()?;
                eprintln!(
                    "note: the secret above is shown only this once; Keyward keeps only a MAC of it"
                );
            }
        } else if let Some(path) = out_file {
            eprintln!("wrote {}", path.display());
        }
        out.flush()
    })();
    match res {
        Ok(()) => Ok(()),
        // A closed pipe (`| head`) is not worth a message; the request was done.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CtlError::Failed(format!("cannot write the answer: {e}"))),
    }
}

/// A message's words and its PEM block (from the first `-----BEGIN `), if it has one.
fn split_pem(m: &str) -> (Option<&str>, Option<&str>) {
    match m.find("-----BEGIN ") {
        None => (Some(m), None),
        Some(0) => (None, Some(m)),
        Some(i) => (Some(m[..i].trim_end_matches('\n')), Some(&m[i..])),
    }
}

/// Writes the secret (a new file, mode 0600) or the PEM of `resp` to `path`; its size.
fn write_out_file(resp: &AdminResponse, path: &Path) -> Result<usize, CtlError> {
    use std::os::unix::fs::OpenOptionsExt;
    let cannot =
        |e: std::io::Error| CtlError::Failed(format!("cannot write {}: {e}", path.display()));
    if let Some(secret) = &resp.secret {
        let text = zeroize::Zeroizing::new(format!("{secret}\n"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(cannot)?;
        f.write_all(text.as_bytes()).map_err(cannot)?;
        return Ok(text.len());
    }
    let pem = resp
        .message
        .as_deref()
        .and_then(|m| split_pem(m).1)
        .ok_or_else(|| CtlError::Failed("keywardd's answer has no PEM to write to --out".into()))?;
    let text = format!("{}\n", pem.trim_end());
    std::fs::write(path, &text).map_err(cannot)?;
    Ok(text.len())
}

/// A path as a JSON string (lossy for non-UTF-8 names).
pub fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
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
