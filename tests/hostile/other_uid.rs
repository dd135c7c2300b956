//! A second local user for the attacks: CI runs as root, so the attacker is `nobody`
//! (uid/gid 65534), reached with `Command::uid()`. What it runs (the test binary, keywardctl,
//! the module) and the sockets it dials must be reachable by it: [`open_for_others`] makes a
//! test's temporary directory traversable.
#![allow(dead_code)] // each attack module uses a different part

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// The attacker's uid and gid (`nobody`/`nogroup` on Debian).
pub const OTHER_UID: u32 = 65534;

/// Makes `dir` and every directory above it traversable (o+x) and `dir` itself readable, so
/// that [`OTHER_UID`] reaches the sockets and files in it. Files keep their own modes.
pub fn open_for_others(dir: &Path) {
    let mut p = Some(dir);
    while let Some(d) = p {
        if let Ok(meta) = std::fs::metadata(d) {
            let mode = meta.permissions().mode();
            if mode & 0o001 == 0 {
                let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode | 0o005));
            }
        }
        p = d.parent();
    }
}

/// `cmd` runs as [`OTHER_UID`] with no supplementary groups.
pub fn as_other(cmd: &mut Command) -> &mut Command {
    // std drops the supplementary groups when root sets a uid (setgroups(0)).
    cmd.uid(OTHER_UID).gid(OTHER_UID)
}
