//! Golden files: what a run produced, normalised into sorted lines, compared with a file
//! committed under `tests/golden/`. A difference fails the test with a diff (`-` only in the
//! golden file, `+` only in this run).
//!
//! To regenerate after a deliberate change (e.g. renamed audit actions), run the test with
//! `KEYWARD_BLESS=1`: the file is rewritten from this run (and the test still checks the rest
//! of what it asserts); commit the new file with the change that made it.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// The environment variable that rewrites golden files instead of comparing with them.
pub const BLESS: &str = "KEYWARD_BLESS";

/// The path of golden file `name` (under `tests/golden/`).
pub fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// Compares `lines` (in any order; compared as a sorted multiset) with golden file `name`
/// after its header (`#` lines), or writes them there under `header` when [`BLESS`] is set.
/// Panics with the differing lines.
#[track_caller]
pub fn check(name: &str, header: &str, lines: &[String]) {
    let mut got: Vec<&str> = lines.iter().map(String::as_str).collect();
    got.sort_unstable();
    let file = path(name);
    if std::env::var_os(BLESS).is_some_and(|v| !v.is_empty() && v != "0") {
        let mut text = String::new();
        for h in header.lines() {
            text.push_str("# ");
            text.push_str(h);
            text.push('\n');
        }
        for l in &got {
            text.push_str(l);
            text.push('\n');
        }
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, text).unwrap_or_else(|e| panic!("cannot write {file:?}: {e}"));
        eprintln!("{BLESS}: wrote {} lines to {}", got.len(), file.display());
        return;
    }
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!("cannot read golden file {file:?} ({e}); run with {BLESS}=1 to write it")
    });
    let mut want: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    want.sort_unstable();
    let diff = diff(&want, &got);
    assert!(
        diff.is_empty(),
        "{} lines differ from the golden file {} (- golden, + this run; if the change is \
         deliberate, run again with {BLESS}=1 and commit the file):\n{}",
        diff.len(),
        file.display(),
        diff.join("\n")
    );
}

/// The multiset difference of two sorted line lists, in line order: `- line` for a line of
/// `want` missing from `got`, `+ line` for a line of `got` that `want` lacks.
fn diff(want: &[&str], got: &[&str]) -> Vec<String> {
    let mut n: BTreeMap<&str, i64> = BTreeMap::new();
    for l in want {
        *n.entry(l).or_default() -= 1;
    }
    for l in got {
        *n.entry(l).or_default() += 1;
    }
    let mut out = vec![];
    for (l, c) in n {
        let sign = if c < 0 { '-' } else { '+' };
        for _ in 0..c.unsigned_abs() {
            out.push(format!("{sign} {l}"));
        }
    }
    out
}
