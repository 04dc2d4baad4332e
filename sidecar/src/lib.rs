//! The fetcher sidecar's two jobs, one binary: `fetcher` follows the wanted release and makes
//! it live on the shared volume; `run` (`aether-run`) is the app container's PID 1 that switches
//! the app to it without dropping a request.

pub mod fetcher;
pub mod run;

pub use fetcher::{Config, Fetcher};
