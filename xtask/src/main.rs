//! `cargo xtask`: the Aether developer loop. This file parses flags and dispatches; each
//! command is an argument struct in `cli/` that owns its `run`.

mod cli;
mod config;
mod embedded;
mod embedded_control;
mod images;
mod k8s_local;
mod keys;
mod manifests;
mod ops;
mod proc;
mod release;
mod targets;

use aether_artifact::Digest;
use clap::{Parser, Subcommand};
use xshell::Shell;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Aether dev loop: package, upload and hot-reload apps on Kubernetes or locally"
)]
struct Cli {
    #[command(flatten)]
    global: config::Global,
    #[command(flatten)]
    target: targets::TargetArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Package a directory as a deterministic tar.gz and print its digest.
    Package(cli::package::Package),
    /// Package a directory and upload it, content-addressed, to the store.
    HotUpload(cli::hot_upload::HotUpload),
    /// Deploy an app (the generated sample when no path is given) and wait until it serves.
    DeploySample(cli::deploy_sample::DeploySample),
    /// Make a running app switch to an uploaded digest, without restarting its pod.
    HotPatch(cli::hot::HotPatch),
    /// Go back to the previous digest (or --to one), as a new generation.
    Rollback(cli::hot::Rollback),
    /// The wanted release and what each pod's fetcher reports (exit 1 unless all serve it).
    HotStatus(cli::hot::HotStatus),
    /// Print the app's (or with --fetcher the fetcher's) log.
    Logs(cli::hot::Logs),
    /// Print the Kubernetes manifests of an app (credentials as placeholders), for review or GitOps.
    Render(cli::cluster::Render),
    /// Check every prerequisite and service; print what is missing and the command that fixes it.
    Doctor(cli::platform::Doctor),
    /// Install or start what is missing: on MicroK8s the snap and its addons; on any cluster the
    /// namespace, an object store (ours by default) and Postgres.
    Bootstrap(cli::platform::Bootstrap),
    /// Remove what bootstrap deployed, and its namespace when it created it and nothing is left.
    Uninstall(cli::platform::Uninstall),
    /// Ensure MicroK8s is running and ready, addons dns and hostpath-storage are on, and the
    /// namespace exists. Changes nothing when all is in place.
    K8sStart(cli::cluster::K8sStart),
    /// Stop the app (locally with the embedded store after the last app; on a cluster its
    /// Deployment, Service and release ConfigMap).
    Down(cli::hot::Down),
    /// Watch a directory and hot-reload the app on every save.
    Dev(cli::dev::Dev),
    /// Serve a live page on 127.0.0.1: every pod, each reload's waterfall, the merged logs, and
    /// buttons for hot-patch and rollback.
    Ui(cli::ui::Ui),
    /// Restart a pod's app with node's inspector (no rollout), forward it here, and print the
    /// address for Chrome DevTools; back to normal on Ctrl-C.
    Debug(cli::debug::Debug),
    /// (internal) Run the embedded S3 store.
    #[command(hide = true)]
    LocalStore(cli::LocalStore),
    /// Make an Ed25519 (minisign) key pair for signing uploads; the secret key is never printed.
    Keygen(cli::keygen::Keygen),
    /// Build the fetcher as a static binary and write its OCI image archive (no Docker needed).
    SidecarImage(cli::image::SidecarImage),
    /// Write the OCI image archive of the fetcher, the in-cluster store or a Debian-built Postgres.
    Image(cli::image::Image),
    /// Install what the tests need (apt, when missing) and run every test in the workspace.
    Test(cli::test::Test),
    /// Print packing and unpacking figures next to tar+gzip on the same machine.
    Bench(cli::bench::Bench),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = Shell::new().map_err(anyhow::Error::from).and_then(|sh| {
        let ctx = cli::Ctx {
            sh: &sh,
            global: cli.global,
            target: cli.target,
        };
        match cli.cmd {
            Cmd::Package(c) => c.run(&ctx),
            Cmd::HotUpload(c) => c.run(&ctx),
            Cmd::DeploySample(c) => c.run(&ctx),
            Cmd::HotPatch(c) => c.run(&ctx),
            Cmd::Rollback(c) => c.run(&ctx),
            Cmd::HotStatus(c) => c.run(&ctx),
            Cmd::Logs(c) => c.run(&ctx),
            Cmd::Render(c) => c.run(&ctx),
            Cmd::Doctor(c) => c.run(&ctx),
            Cmd::Bootstrap(c) => c.run(&ctx),
            Cmd::Uninstall(c) => c.run(&ctx),
            Cmd::K8sStart(c) => c.run(&ctx),
            Cmd::Down(c) => c.run(&ctx),
            Cmd::Dev(c) => c.run(&ctx),
            Cmd::Ui(c) => c.run(&ctx),
            Cmd::Debug(c) => c.run(&ctx),
            Cmd::LocalStore(c) => c.run(&ctx),
            Cmd::Keygen(c) => c.run(&ctx),
            Cmd::SidecarImage(c) => c.run(&ctx),
            Cmd::Image(c) => c.run(&ctx),
            Cmd::Test(c) => c.run(&ctx),
            Cmd::Bench(c) => c.run(&ctx),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The workspace this xtask was built from: the one place that computes it.
pub fn project_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Cargo's build output: `CARGO_TARGET_DIR`, else `target/` in the workspace.
pub fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| project_root().join("target"))
}

fn parse_digest(s: &str) -> Result<Digest, String> {
    Digest::parse(s).map_err(|e| e.to_string())
}
