//! Where a request goes: to the admin handler in this process over `--db`, or to keywardd's
//! admin or client socket as the caller (peer credentials, or the service-account key in the
//! file named by `KEYWARD_CREDENTIALS`).

use super::args::Global;
use crate::admin::{AdminError, AdminService};
use crate::context::Caller;
use crate::policy::{Member, Principal};
use keyward_wire::admin::{AdminRequest, AdminResponse};
use keyward_wire::rv::CKR_ARGUMENTS_BAD;
use std::path::PathBuf;

pub use super::error::CtlError;

/// Sends one request to the handler: to keywardd's admin socket, or in-process over `--db`
/// (refused for requests that write while a keywardd holds that store).
pub fn run_request(global: &Global, req: AdminRequest) -> Result<AdminResponse, CtlError> {
    let Some(db) = &global.db else {
        return run_over_socket(global, req);
    };
    if crate::daemon::store_is_held(db) && !crate::daemon::is_read_only(&req) {
        return Err(CtlError::Request(AdminError {
            rv: CKR_ARGUMENTS_BAD,
            message: "keywardd is running on this store: drop --db to go through its socket".into(),
        }));
    }
    // Only init may create a store: a mistyped --db must not silently make an empty one.
    if !matches!(req, AdminRequest::Init { .. }) && !db.exists() {
        return Err(CtlError::Request(AdminError {
            rv: CKR_ARGUMENTS_BAD,
            message: format!(
                "no store at {}: check --db, or create one with `keywardctl --db {} init --org \
                 ORG --admin MEMBER`",
                db.display(),
                db.display()
            ),
        }));
    }
    // The real uid is recorded as the peer even under --as, so the audit log shows who ran it.
    let me = process_principal();
    let peer_uid = match &me {
        Ok(Principal {
            member: Member::UnixUid(uid),
            ..
        }) => Some(*uid),
        _ => None,
    };
    let principal = match &global.as_member {
        Some(m) => Principal::new(m.clone()),
        None => me.map_err(CtlError::Usage)?,
    };
    let caller = Caller {
        principal,
        peer_pid: Some(std::process::id()),
        peer_uid,
        instance: None,
    };
    let mut service = AdminService::open(db).map_err(CtlError::Request)?;
    service.handle(&caller, req).map_err(CtlError::Request)
}

/// Sends one request over keywardd's admin socket. keywardd decides who is calling (peer
/// credentials, or the service-account key in the file named by `KEYWARD_CREDENTIALS`).
pub fn run_over_socket(global: &Global, req: AdminRequest) -> Result<AdminResponse, CtlError> {
    use keyward_wire::{rv, RequestBody, ResponseBody};
    let fail = |rv: u64, message: String| CtlError::Request(AdminError { rv, message });
    match call_socket(global, &global.socket, RequestBody::Admin(req))? {
        ResponseBody::Admin(resp) => Ok(resp),
        _ => Err(fail(
            rv::CKR_DEVICE_ERROR,
            "keywardd answered an admin request with another kind of response".into(),
        )),
    }
}

/// Sends one request over a keywardd socket as the caller (peer credentials, or the
/// service-account key in the file named by `KEYWARD_CREDENTIALS`).
pub fn call_socket(
    global: &Global,
    socket: &std::path::Path,
    body: keyward_wire::RequestBody,
) -> Result<keyward_wire::ResponseBody, CtlError> {
    let mut client = connect_socket(global, socket)?;
    call_on(&mut client, socket, body)
}

/// Connects to a keywardd socket as the caller (see [`call_socket`]).
pub fn connect_socket(
    global: &Global,
    socket: &std::path::Path,
) -> Result<keyward_wire::Client, CtlError> {
    use keyward_wire::{Client, WireError};
    use keyward_wire::{ClientKind, Hello, ServiceAccountKey};
    use std::os::unix::fs::PermissionsExt;
    if global.as_member.is_some() {
        return Err(CtlError::Usage(
            "--as works only offline (--db): over the socket keywardd decides who is calling \
             (use KEYWARD_CREDENTIALS=FILE to act as a service account)"
                .into(),
        ));
    }
    let fail = |rv: u64, message: String| CtlError::Request(AdminError { rv, message });
    let credentials = match std::env::var_os("KEYWARD_CREDENTIALS").filter(|v| !v.is_empty()) {
        None => None,
        Some(path) => {
            let path = PathBuf::from(path);
            let shown = path.display();
            let bad = |e: std::io::Error| {
                fail(
                    CKR_ARGUMENTS_BAD,
                    format!("cannot read KEYWARD_CREDENTIALS file {shown}: {e}"),
                )
            };
            let mode = std::fs::metadata(&path).map_err(bad)?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(fail(
                    CKR_ARGUMENTS_BAD,
                    format!(
                        "the KEYWARD_CREDENTIALS file {shown} is open to its group or others \
                         (mode {:04o}): run `chmod 600 {shown}`",
                        mode & 0o7777
                    ),
                ));
            }
            let text = zeroize::Zeroizing::new(std::fs::read_to_string(&path).map_err(bad)?);
            // As the module reads it: the first line that is neither blank nor a # comment.
            let key = text
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'))
                .unwrap_or("");
            if key.is_empty() {
                return Err(fail(
                    CKR_ARGUMENTS_BAD,
                    format!("the KEYWARD_CREDENTIALS file {shown} holds no key"),
                ));
            }
            Some(ServiceAccountKey::new(key))
        }
    };
    let hello = Hello::new(ClientKind::Ctl, None, credentials);
    Client::connect(socket, &hello).map_err(|e| match e {
        // No daemon there, or a socket this user may not open (exit 3).
        WireError::Connect { source, .. } => unreachable(socket, &source),
        WireError::Refused { rv, message } => {
            fail(rv, format!("keywardd refused the connection: {message}"))
        }
        other => fail(
            other.ck_rv(),
            format!("keywardd at {}: {other}", socket.display()),
        ),
    })
}

/// One request on a connection made by [`connect_socket`].
pub fn call_on(
    client: &mut keyward_wire::Client,
    socket: &std::path::Path,
    body: keyward_wire::RequestBody,
) -> Result<keyward_wire::ResponseBody, CtlError> {
    use keyward_wire::{rv, WireError};
    let fail = |rv: u64, message: String| CtlError::Request(AdminError { rv, message });
    match client.call(body) {
        Ok(resp) => Ok(resp),
        Err(WireError::Remote(reply)) => Err(fail(
            reply.rv,
            reply
                .message
                .unwrap_or_else(|| format!("keywardd: {}", rv::rv_name(reply.rv))),
        )),
        Err(e) => Err(fail(
            e.ck_rv(),
            format!("keywardd at {}: {e}", socket.display()),
        )),
    }
}

/// This process's identity as keywardd would see it: `unix-uid:<real uid>` and its groups.
pub fn process_principal() -> Result<Principal, String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| {
        format!("cannot read /proc/self/status to learn your uid ({e}): give --as MEMBER")
    })?;
    let ids = |field: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .map(|rest| {
                rest.split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let uid = *ids("Uid:")
        .first()
        .ok_or("no Uid: line in /proc/self/status: give --as MEMBER")?;
    let mut gids: Vec<u32> = ids("Gid:")
        .into_iter()
        .take(1)
        .chain(ids("Groups:"))
        .collect();
    gids.sort_unstable();
    gids.dedup();
    Ok(Principal {
        member: Member::UnixUid(uid),
        unix_gids: gids,
    })
}

/// Why `socket` could not be connected to, in words a user can act on: no socket, nothing
/// listening (start keywardd), or a socket that exists but this user may not open (which
/// group grants access).
fn unreachable(socket: &std::path::Path, source: &std::io::Error) -> CtlError {
    use std::os::unix::fs::MetadataExt;
    let shown = socket.display();
    if source.kind() == std::io::ErrorKind::PermissionDenied {
        let message = match std::fs::metadata(socket) {
            Ok(md) => {
                let group = group_name(md.gid());
                format!(
                    "permission denied on keywardd's socket {shown}: it exists, but this user \
                     may not connect to it (mode {:04o}, owner uid {}, group '{group}'); the \
                     group '{group}' grants access: add this user to it (`usermod -aG {group} \
                     USER`, then log in again)",
                    md.mode() & 0o7777,
                    md.uid()
                )
            }
            Err(_) => format!(
                "permission denied on the way to keywardd's socket {shown}: a directory of \
                 that path is closed to this user"
            ),
        };
        return CtlError::Unreachable {
            message,
            down: false,
        };
    }
    CtlError::Unreachable {
        message: format!(
            "cannot reach keywardd at {shown} ({source}): start keywardd, give --socket PATH, \
             or use --db PATH to work offline"
        ),
        down: true,
    }
}

/// The name of group `gid` from `/etc/group` (its number if it has none there).
fn group_name(gid: u32) -> String {
    let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
    groups
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let id = f.nth(1)?;
            (id.parse() == Ok(gid)).then(|| name.to_string())
        })
        .unwrap_or_else(|| gid.to_string())
}
