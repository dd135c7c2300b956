//! The PKCS#11 numbers keywardd's PKCS#11 half uses, as plain `u64`s: defined once in
//! `keyward_wire` ([`keyward_wire::ck`]: attribute types, classes, key types, mechanisms,
//! flags; [`keyward_wire::rv`]: return values) and named here for the half's files.

pub use keyward_wire::ck::*;
pub use keyward_wire::rv::*;
