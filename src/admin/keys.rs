//! Crypto keys and versions: create, rotate, primary, enable/disable, destroy/restore, public
//! key. Token objects are made in the backing token; without one (offline `--db`) these
//! requests are refused.

use super::{Ctx, Failure, Res};
use keyward_wire::admin::AdminResponse;

/// A state change asked of a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Enable.
    Enable,
    /// Disable.
    Disable,
    /// Schedule destruction.
    Destroy,
    /// Restore from scheduled destruction.
    Restore,
}

fn todo() -> Res<AdminResponse> {
    Err(Failure::Precondition("not built yet".into()))
}

pub fn create(_: &mut Ctx<'_>, _: &str, _: &str, _: &str, _: &str, _: bool) -> Res<AdminResponse> {
    todo()
}
pub fn list(_: &mut Ctx<'_>, _: &str) -> Res<AdminResponse> {
    todo()
}
pub fn get(_: &mut Ctx<'_>, _: &str) -> Res<AdminResponse> {
    todo()
}
pub fn rotate(_: &mut Ctx<'_>, _: &str, _: bool) -> Res<AdminResponse> {
    todo()
}
pub fn set_primary(_: &mut Ctx<'_>, _: &str, _: u64) -> Res<AdminResponse> {
    todo()
}
pub fn public_key(_: &mut Ctx<'_>, _: &str, _: Option<u64>) -> Res<AdminResponse> {
    todo()
}
pub fn versions(_: &mut Ctx<'_>, _: &str) -> Res<AdminResponse> {
    todo()
}
pub fn version_get(_: &mut Ctx<'_>, _: &str) -> Res<AdminResponse> {
    todo()
}
pub fn version_change(_: &mut Ctx<'_>, _: &str, _: Change, _: Option<u64>) -> Res<AdminResponse> {
    todo()
}
