//! The artifact contract: what an artifact is, where it lives and how it is made and consumed.
//!
//! Both the xtask (which makes artifacts) and `aether-fetcher` (which consumes them) depend on
//! this crate, so each rule exists exactly once.

pub mod app;
pub mod contract;
pub mod control;
mod digest;
mod name;
pub mod pack;
pub mod podinfo;
pub mod provenance;
pub mod store;
pub mod unpack;

pub use contract::{
    release, trigger, unix_now_ms, Cause, FetchTrace, FetcherEnv, RunState, RunnerStatus, Status,
};
pub use digest::{Digest, DigestError};
pub use name::{AppName, NameError};

/// The object key of an artifact: `artifacts/<app>/<digest>/app.tar.gz`.
pub fn object_key(app: &AppName, digest: &Digest) -> String {
    format!("{}{app}/{digest}/app.tar.gz", KEY_PREFIX)
}

/// A byte count for people: `996 B`, `1.6 KiB`, `40.0 MiB`, `1.2 GiB`.
pub fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// Prefix of every artifact key in the bucket.
pub const KEY_PREFIX: &str = "artifacts/";

/// Annotation and label keys shared by the xtask, the manifests and the fetcher.
pub mod keys {
    pub const APP: &str = "aether.dev/app";
    pub const DIGEST: &str = "aether.dev/digest";
    pub const GENERATION: &str = "aether.dev/generation";
    pub const FETCH_INTERVAL: &str = "aether.dev/fetch-interval";
    /// The first phase of a cutover across replicas: a digest to fetch, verify and extract
    /// without making it live (empty: nothing to stage). Every publish clears it.
    pub const STAGE: &str = "aether.dev/stage";
    /// The second phase: unix ms before which the wanted release must not go live, so that
    /// replicas that staged it switch together (empty: at once).
    pub const ACTIVATE_AT: &str = "aether.dev/activate-at";
    /// Unix ms of the last stage request. The fetcher ignores it; it exists so that asking a
    /// pod again is a change: the kubelet refreshes a downward-API volume only on a change,
    /// and a stage request that a pod did not see in seconds is asked again.
    pub const NUDGE: &str = "aether.dev/nudge";
    /// `cargo xtask debug`: the port on 127.0.0.1 where this pod's app process opens node's
    /// inspector (empty or absent: off). Per pod, so only a pod's annotations carry it.
    pub const DEBUG: &str = "aether.dev/debug";
}

/// Layout of the volume shared by the fetcher and the app.
pub mod volume {
    /// Symlink to the live release, relative target `.releases/<digest>`.
    pub const CURRENT: &str = "current";
    /// Per-digest extracted releases.
    pub const RELEASES: &str = ".releases";
    /// Per-digest extracted dependency layers; a release links its own as `node_modules`.
    pub const LAYERS: &str = ".layers";
    /// Directory `aether-run` watches; only the trigger file changes in it.
    pub const RELOAD_DIR: &str = ".reload";
    pub const RELOAD_TRIGGER: &str = ".reload/trigger";
    /// Fetcher state (status JSON), readable by `aether-fetcher status`.
    pub const STATE_DIR: &str = ".fetcher";
    pub const STATE_FILE: &str = ".fetcher/state.json";
    /// The fetcher installs its own binary here at start; the app container runs it as its
    /// init (`aether-run -- node …`), so the app image needs nothing of ours.
    pub const RUNNER: &str = ".aether/bin/aether-run";
    /// The runner's name: the fetcher binary behaves as `aether-run` when called by it.
    pub const RUNNER_NAME: &str = "aether-run";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_layout() {
        let app = AppName::parse("demo").unwrap();
        let d = Digest::parse(&"ab".repeat(32)).unwrap();
        assert_eq!(
            object_key(&app, &d),
            format!("artifacts/demo/{}/app.tar.gz", "ab".repeat(32))
        );
    }
}
