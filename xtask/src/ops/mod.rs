//! The workflows commands compose: each is written once, against the [`crate::targets::Target`]
//! trait where it touches a running app, and used by every command that needs it. Nothing here
//! parses arguments or decides how to print; that is the CLI's job (`crate::cli`).

pub mod cycle;
pub mod deploy;
pub mod deps;
pub mod fleet;
pub mod oci_image;
pub mod packing;
pub mod platform;
pub mod release;
pub mod reload;
pub mod sample;
pub mod signing;
pub mod upload;
