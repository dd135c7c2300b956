//! The policy engine (design §3, §4): pure, no I/O. Resource names, members, permissions,
//! roles, and decisions over an immutable [`Snapshot`].

pub mod names;
pub mod permission;
pub mod roles;
pub mod snapshot;

pub use names::{CryptoKeyName, KeyRingName, Member, ResourceKind, ResourceName, RingParent};
pub use permission::{PermSet, Permission};
pub use snapshot::{
    Binding, Decision, Grant, Grantee, Principal, Snapshot, SnapshotBuilder, SodCause, SodViolation,
};
