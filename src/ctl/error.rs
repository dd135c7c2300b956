//! keywardctl's one failure type and its contract (issue 18 items 1 and 2): every failure is
//! `error: MESSAGE` on stderr and, under `--json`, one `{"error":{"code","message","rv"}}`
//! document on stdout (`rv` where keywardd or the handler gave a CK_RV); the exit code says
//! which kind it was.
//!
//! | exit | `code` | meaning |
//! |---|---|---|
//! | 0 | | success; a signature or MAC is valid |
//! | 1 | `failed` | the request was refused or failed (with its `rv`) |
//! | 1 | `invalid` | a signature or MAC tag is not valid for this data and key |
//! | 2 | `usage` | the command line cannot be served as given |
//! | 3 | `unreachable` | keywardd is not reachable: no socket, nothing listening, no permission |

use super::render::printable;
use crate::admin::AdminError;
use std::io::Write;
use std::process::ExitCode;

/// Why a command did not do what it was asked.
#[derive(Debug)]
pub enum CtlError {
    /// The command line cannot be served as given (exit 2).
    Usage(String),
    /// The request was made and refused or failed, with its CK_RV (exit 1).
    Request(AdminError),
    /// It failed here, with no CK_RV: a file not written, an answer not understood (exit 1).
    Failed(String),
    /// A signature or MAC tag is not valid (exit 1).
    Invalid(String),
    /// keywardd cannot be reached (exit 3). `down`: nothing listens there (no socket, or
    /// connection refused), as opposed to a socket this user may not open.
    Unreachable {
        /// What happened, naming the socket and what to do.
        message: String,
        /// No daemon there (rather than no permission).
        down: bool,
    },
}

impl CtlError {
    /// The `code` of the JSON error document.
    pub fn code(&self) -> &'static str {
        match self {
            CtlError::Usage(_) => "usage",
            CtlError::Request(_) | CtlError::Failed(_) => "failed",
            CtlError::Invalid(_) => "invalid",
            CtlError::Unreachable { .. } => "unreachable",
        }
    }

    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Usage(_) => 2,
            CtlError::Request(_) | CtlError::Failed(_) | CtlError::Invalid(_) => 1,
            CtlError::Unreachable { .. } => 3,
        }
    }

    /// The message (unescaped).
    pub fn message(&self) -> &str {
        match self {
            CtlError::Usage(m) | CtlError::Failed(m) | CtlError::Invalid(m) => m,
            CtlError::Request(e) => &e.message,
            CtlError::Unreachable { message, .. } => message,
        }
    }

    /// The CK_RV, if there is one.
    pub fn rv(&self) -> Option<u64> {
        match self {
            CtlError::Request(e) => Some(e.rv),
            _ => None,
        }
    }

    /// The JSON error document.
    pub fn json(&self) -> serde_json::Value {
        let mut e = serde_json::json!({"code": self.code(), "message": self.message()});
        if let Some(rv) = self.rv() {
            e["rv"] = rv.into();
        }
        serde_json::json!({ "error": e })
    }

    /// Prints the failure (stderr; and the JSON document on stdout under `--json`) and
    /// returns its exit code.
    pub fn report(&self, json: bool) -> ExitCode {
        eprintln!("error: {}", printable(self.message()));
        if json {
            print_json(&self.json());
        }
        ExitCode::from(self.exit_code())
    }
}

/// One JSON document and a newline on stdout; a closed pipe is not an error worth a word.
pub fn print_json(doc: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{doc}").and_then(|()| out.flush());
}

/// A command's outcome as the process exit: success, or the failure reported.
pub fn finish(result: Result<(), CtlError>, json: bool) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(json),
    }
}
