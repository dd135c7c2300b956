//! The attack suite of design §9 ("Hostile tenants"): each test is one attack a local user
//! with a shell and no binding, or a narrow one, would try, run through the built module and,
//! where the attack needs it, raw frames on keywardd's sockets. One binary (cargo does not
//! discover `tests/hostile/*.rs` on its own); one module per family of attacks.

#[path = "../common/mod.rs"]
mod common;

mod other_uid;

mod audit_files;
mod connections;
mod crypto;
mod existence;
mod resources;
mod ring;
mod sod;
mod squatting;
