//! keywardctl: the operator's command line for Keyward (design §1-§3, §6).
//!
//! This is only the entry point: it parses the command line ([`keyward::ctl::args`]) and hands
//! each command to its runner; everything else lives in [`keyward::ctl`] (requests, transport,
//! rendering, the crypto, certificate and BYOK commands). Admin commands go to keywardd's admin
//! socket, or with `--db PATH` to the handler in this process; the crypto commands go to
//! keywardd's client socket. Failures and exit codes follow [`keyward::ctl::error`].
#![forbid(unsafe_code)]

use clap::Parser;
use keyward::ctl::args::{CertCmd, Cli, Command, Global, KeyCmd, StoreCmd};
use keyward::ctl::cert::{self, Make};
use keyward::ctl::error::{finish, print_json, CtlError};
use keyward::ctl::render::{json_lines, print_response, printable};
use keyward::ctl::request::{out_file, to_request};
use keyward::ctl::transport::run_request;
use keyward::ctl::{crypto, wrap};
use keyward_wire::admin::AdminRequest;
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Cli {
        mut global,
        command,
    } = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return parse_error(e),
    };
    global.resolve();
    let json = global.json;
    let result = match command {
        Command::Encrypt(a) => crypto::run(&global, crypto::Kind::Encrypt, a),
        Command::Decrypt(a) => crypto::run(&global, crypto::Kind::Decrypt, a),
        Command::Sign(a) => crypto::run(&global, crypto::Kind::Sign, a),
        Command::Verify(a) => crypto::run(&global, crypto::Kind::Verify, a),
        Command::Mac(a) => crypto::run(&global, crypto::Kind::Mac, a),
        Command::Key(KeyCmd::Cert(CertCmd::Create {
            key,
            self_signed,
            no_attach,
            subject,
            days,
            out,
            import_cert: None,
            ..
        })) => {
            let make = match (self_signed, no_attach) {
                (true, false) => Make::SelfSigned,
                (true, true) => Make::SelfSignedUnattached,
                _ => Make::Request,
            };
            cert::create(&global, &key, make, subject, days, out)
        }
        Command::Key(KeyCmd::Cert(CertCmd::Get { key })) => cert::get(&global, key),
        Command::Key(KeyCmd::Export {
            key,
            version,
            wrapping_key,
            mechanism,
            out,
        }) => crypto::export(
            &global,
            key,
            version,
            wrapping_key,
            mechanism,
            out.as_deref(),
        ),
        Command::Completions { shell } => return completions(shell),
        Command::Status => return status(&global),
        Command::Store(StoreCmd::Check) => return store_check(&global),
        Command::Key(KeyCmd::WrapForImport {
            import_job,
            public_key_file,
            method,
            key_material_file,
            out,
        }) => wrap::run(
            &global,
            wrap::Source {
                import_job,
                public_key_file,
                method,
            },
            &key_material_file,
            &out,
        ),
        other => admin(&global, other),
    };
    finish(result, json)
}

/// An admin command: its one request, to the handler, and the answer printed.
fn admin(global: &Global, command: Command) -> Result<(), CtlError> {
    let out = out_file(&command);
    let req = to_request(command).map_err(CtlError::Usage)?;
    let lines = json_lines(&req);
    let resp = run_request(global, req)?;
    print_response(&resp, global.json, lines, out.as_deref())
}

/// A command line clap refused: help and version as clap prints them (exit 0); a usage error
/// as clap prints it, exit 2, and under `--json` also as a JSON error document.
fn parse_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        e.exit();
    }
    let _ = e.print();
    // `--json` before a `--` (after it, it is an argument's value).
    let json = std::env::args()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json");
    if json {
        let text = e.render().to_string();
        let first = text.lines().next().unwrap_or("usage error");
        let message = first.strip_prefix("error: ").unwrap_or(first);
        print_json(&serde_json::json!({"error": {"code": "usage", "message": message}}));
    }
    ExitCode::from(2)
}

/// `keywardctl completions SHELL`: the completion script on stdout (exempt from `--json`).
fn completions(shell: clap_complete::Shell) -> ExitCode {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    // Into a buffer first: clap_complete panics on a write error (`| head`).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "keywardctl", &mut script);
    let mut out = std::io::stdout().lock();
    match out.write_all(&script).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write the completion script: {e}");
            ExitCode::from(1)
        }
    }
}

/// `keywardctl --db PATH store check`: `PRAGMA integrity_check` on the store file, which may be
/// held by a running keywardd (the check only reads; WAL lets it read beside the daemon).
fn store_check(global: &Global) -> ExitCode {
    let json = global.json;
    let Some(db) = global.db.as_deref() else {
        return CtlError::Usage("store check reads the store file: give --db PATH".into())
            .report(json);
    };
    if !db.is_file() {
        return CtlError::Failed(format!("no store at {}", db.display())).report(json);
    }
    let findings = match keyward::store::Store::open(db).and_then(|s| s.check()) {
        Ok(f) => f,
        Err(e) => {
            return CtlError::Failed(format!("cannot check {}: {e}", db.display())).report(json)
        }
    };
    if findings.is_empty() {
        if json {
            print_json(&serde_json::json!({"ok": true, "findings": findings}));
        } else {
            println!("ok: {} passed SQLite's integrity check", db.display());
        }
        return ExitCode::SUCCESS;
    }
    let e = CtlError::Failed(format!(
        "{} failed SQLite's integrity check ({} finding(s)); restore it from a backup",
        db.display(),
        findings.len()
    ));
    if json {
        // One document: the error and what the check found.
        let mut doc = e.json();
        doc["ok"] = false.into();
        doc["findings"] = serde_json::json!(findings);
        print_json(&doc);
    } else {
        for f in &findings {
            println!("{f}");
        }
    }
    eprintln!("error: {}", printable(e.message()));
    ExitCode::from(e.exit_code())
}

/// `keywardctl status`: the status request; a daemon that cannot be reached is exit 3, said in
/// the table (`daemon  DOWN`, or `daemon  UNREACHABLE` for a socket this user may not open)
/// or, with `--json`, as `{"daemon": {"running": false, ...}, "error": {...}}`.
fn status(global: &Global) -> ExitCode {
    match run_request(global, AdminRequest::Status) {
        Err(e @ CtlError::Unreachable { .. }) => {
            let CtlError::Unreachable { message, down } = &e else {
                return e.report(global.json);
            };
            let socket = global.socket.display().to_string();
            if global.json {
                let mut doc = e.json();
                doc["daemon"] = serde_json::json!({
                    "running": false,
                    "socket": socket,
                    "error": message,
                });
                print_json(&doc);
            } else if *down {
                println!("daemon  DOWN: {}", printable(message));
            } else {
                println!("daemon  UNREACHABLE: {}", printable(message));
            }
            if *down {
                eprintln!("error: keywardd is not running at {socket}");
            } else {
                eprintln!("error: {}", printable(message));
            }
            ExitCode::from(e.exit_code())
        }
        Err(e) => e.report(global.json),
        Ok(resp) => finish(print_response(&resp, global.json, false, None), global.json),
    }
}
