//! The workflows commands compose (the middle layer): each is written once, against the
//! [`crate::targets::Target`] trait where it touches a running app, and used by every command
//! that needs it. Nothing here parses arguments; that is the job of the commands in `cli/`, and
//! nothing here imports it (`xtask/tests/tidy.rs`).

pub mod cycle;
pub mod deploy;
pub mod deps;
pub mod fleet;
pub mod inspector;
pub mod packing;
pub mod platform;
pub mod registry;
pub mod reload;
pub mod sample;
pub mod signing;
pub mod trace;
pub mod ui;
pub mod upload;
pub mod workspace;
