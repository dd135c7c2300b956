//! The fault suite: keywardd against a real SoftHSM2 token, broken the way an operator would
//! break it. One binary (cargo does not discover `tests/faults/*.rs` on its own); one module
//! per kind of fault.

#[path = "../common/mod.rs"]
mod common;

mod disk_full;
mod kill9;
mod restart;
mod slots;
mod startup;
mod stopped;
mod token_head;
