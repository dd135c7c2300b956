//! `audit query --since/--until` time input (issue 18 item 7): dates (`2026-12-07`, midnight
//! UTC), RFC 3339, unix seconds and durations back from now (`1h`, `7d`, `1h30m`), over a
//! private store whose records were written moments ago by this test.

mod common;

use common::Ctl;

/// The actions of `audit query --json` with ARGS, but the records of these queries.
#[track_caller]
fn query(ctl: &Ctl, args: &[&str]) -> Vec<String> {
    let mut all = vec!["--json", "audit", "query"];
    all.extend_from_slice(args);
    let out = ctl.admin(&all);
    out.ok();
    out.json_lines()
        .iter()
        .map(|r| r["action"].as_str().expect("action").to_string())
        .filter(|a| a != "audit.query")
        .collect()
}

#[test]
fn since_and_until_take_dates_rfc3339_and_durations() {
    let ctl = Ctl::with_payments();
    let all = query(&ctl, &[]);
    assert!(all.len() >= 2, "{all:?}");
    let today = time::OffsetDateTime::now_utc().date();
    let tomorrow = today.next_day().expect("a next day");
    let today = today.to_string(); // YYYY-MM-DD
    let tomorrow = tomorrow.to_string();

    // Everything was written within the last hour, today, and before tomorrow.
    for args in [
        &["--since", "1h"][..],
        &["--since", "7d"],
        &["--since", "1h 30m"],
        &["--since", &today],
        &["--until", &tomorrow],
        &["--since", &today, "--until", &tomorrow],
        &["--since", "1970-01-01T00:00:00Z"],
    ] {
        assert_eq!(query(&ctl, args), all, "{args:?}");
    }
    // Nothing was written before today began, or more than an hour ago, or from tomorrow on.
    for args in [
        &["--until", &today][..],
        &["--until", "1h"],
        &["--since", &tomorrow],
    ] {
        assert_eq!(query(&ctl, args), Vec::<String>::new(), "{args:?}");
    }

    // What is not a time is a usage error that shows the forms it takes.
    for bad in ["yesterday", "2026-13-01", "5 parsecs", "-1h"] {
        let out = ctl.admin(&["audit", "query", &format!("--since={bad}")]);
        out.usage_error();
        assert!(
            out.stderr.contains("2026-12-07") && out.stderr.contains("7d"),
            "{bad}: {out:#?}"
        );
    }
}
