//! `aether-control`: the control plane. It registers every upload with its provenance, keeps
//! each app's release history, and hands a pod short-lived read URLs for its own app's
//! artifacts once it has checked who the pod is, so pods hold no store credentials at all.

pub mod auth;
pub mod db;
pub mod server;

pub use aether_artifact::control::ControlEnv;
