//! keywardctl: the operator's command line for Keyward (design §1-§3, §6).
//!
//! This is only the entry point: it parses the command line ([`keyward::ctl::args`]) and hands
//! each command to its runner; everything else lives in [`keyward::ctl`] (requests, transport,
//! rendering, the crypto, certificate and BYOK commands). Admin commands go to keywardd's admin
//! socket, or with `--db PATH` to the handler in this process; the crypto commands go to
//! keywardd's client socket.
#![forbid(unsafe_code)]

use clap::Parser;
use keyward::ctl::args::{CertCmd, Cli, Command, Global, KeyCmd, StoreCmd};
use keyward::ctl::render::{json_lines, print_response, printable};
use keyward::ctl::request::to_request;
use keyward::ctl::transport::{run_request, CtlError};
use keyward::ctl::{cert, crypto, wrap};
use keyward_wire::admin::AdminRequest;
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Cli { global, command } = cli;
    let command = match command {
        Command::Encrypt(a) => return crypto::run(&global, crypto::Kind::Encrypt, a),
        Command::Decrypt(a) => return crypto::run(&global, crypto::Kind::Decrypt, a),
        Command::Sign(a) => return crypto::run(&global, crypto::Kind::Sign, a),
        Command::Verify(a) => return crypto::run(&global, crypto::Kind::Verify, a),
        Command::Mac(a) => return crypto::run(&global, crypto::Kind::Mac, a),
        Command::Key(KeyCmd::Cert(CertCmd::Create {
            key,
            self_signed,
            subject,
            days,
            out,
            import_cert: None,
            ..
        })) => return cert::create(&global, &key, self_signed, subject, days, out),
        Command::Key(KeyCmd::Cert(CertCmd::Get { key })) => return cert::get(&global, key),
        Command::Key(KeyCmd::Export {
            key,
            version,
            wrapping_key,
            mechanism,
            out,
        }) => {
            return crypto::export(
                &global,
                key,
                version,
                wrapping_key,
                mechanism,
                out.as_deref(),
            )
        }
        Command::Completions { shell } => return completions(shell),
        Command::Status => return status(&global),
        Command::Store(StoreCmd::Check) => return store_check(&global),
        Command::Key(KeyCmd::WrapForImport {
            import_job,
            public_key_file,
            method,
            key_material_file,
            out,
        }) => {
            return wrap::run(
                &global,
                wrap::Source {
                    import_job,
                    public_key_file,
                    method,
                },
                &key_material_file,
                &out,
            )
        }
        other => other,
    };
    let req = match to_request(command) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let lines = json_lines(&req);
    match run_request(&global, req) {
        Ok(resp) => match print_response(&resp, global.json, lines) {
            Ok(()) => ExitCode::SUCCESS,
            // A closed pipe (`| head`) is not worth a message; the request was done.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: cannot write the answer: {e}");
                ExitCode::from(1)
            }
        },
        Err(CtlError::Usage(m) | CtlError::Unreachable(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(2)
        }
        Err(CtlError::Request(e)) => {
            eprintln!("error: {}", printable(&e.message));
            if global.json {
                let doc = serde_json::json!({"error": {"message": e.message, "rv": e.rv}});
                println!("{doc}");
            }
            ExitCode::from(1)
        }
    }
}

/// `keywardctl completions SHELL`: the completion script on stdout.
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
    let Some(db) = global.db.as_deref() else {
        eprintln!("error: store check reads the store file: give --db PATH");
        return ExitCode::from(2);
    };
    if !db.is_file() {
        eprintln!("error: no store at {}", db.display());
        return ExitCode::from(1);
    }
    let findings = match keyward::store::Store::open(db).and_then(|s| s.check()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: cannot check {}: {e}", db.display());
            return ExitCode::from(1);
        }
    };
    if global.json {
        let doc = serde_json::json!({"ok": findings.is_empty(), "findings": findings});
        println!("{doc}");
    } else if findings.is_empty() {
        println!("ok: {} passed SQLite's integrity check", db.display());
    } else {
        for f in &findings {
            println!("{f}");
        }
        eprintln!(
            "error: {} failed SQLite's integrity check ({} finding(s)); restore it from a backup",
            db.display(),
            findings.len()
        );
    }
    if findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `keywardctl status`: the status request; a daemon that does not answer is reported as down
/// (exit 1), in the table or, with `--json`, as `{"daemon": {"running": false, ...}}`.
fn status(global: &Global) -> ExitCode {
    match run_request(global, AdminRequest::Status) {
        Err(CtlError::Unreachable(m)) => {
            if global.json {
                let doc = serde_json::json!({"daemon": {
                    "running": false,
                    "socket": global.socket.display().to_string(),
                    "error": m,
                }});
                println!("{doc}");
            } else {
                println!("daemon  DOWN: {}", printable(&m));
            }
            eprintln!(
                "error: keywardd is not running at {}",
                global.socket.display()
            );
            ExitCode::from(1)
        }
        Err(CtlError::Usage(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(2)
        }
        Err(CtlError::Request(e)) => {
            eprintln!("error: {}", printable(&e.message));
            if global.json {
                let doc = serde_json::json!({"error": {"message": e.message, "rv": e.rv}});
                println!("{doc}");
            }
            ExitCode::from(1)
        }
        Ok(resp) => match print_response(&resp, global.json, false) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: cannot write the answer: {e}");
                ExitCode::from(1)
            }
        },
    }
}
