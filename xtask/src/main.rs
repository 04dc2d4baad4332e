//! `cargo xtask`: the Aether developer loop. This file parses flags and dispatches; each
//! command is an argument struct in `cmd/` that owns its `run`.

mod cmd;
mod config;
mod cutover;
mod deps;
mod embedded;
mod image;
mod manifests;
mod package;
mod proc;
mod release;
mod sample;
mod signing;
mod target;

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
    target: target::TargetArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Package a directory as a deterministic tar.gz and print its digest.
    Package(cmd::package::Package),
    /// Package a directory and upload it, content-addressed, to the store.
    HotUpload(cmd::upload::HotUpload),
    /// Deploy an app (the generated sample when no path is given) and wait until it serves.
    DeploySample(cmd::deploy::DeploySample),
    /// Make a running app switch to an uploaded digest, without restarting its pod.
    HotPatch(cmd::hot::HotPatch),
    /// Go back to the previous digest (or --to one), as a new generation.
    Rollback(cmd::hot::Rollback),
    /// The wanted release and what each pod's fetcher reports (exit 1 unless all serve it).
    HotStatus(cmd::hot::HotStatus),
    /// Print the app's (or with --fetcher the fetcher's) log.
    Logs(cmd::hot::Logs),
    /// Print the Kubernetes manifests of an app (credentials as placeholders), for review or GitOps.
    Render(cmd::cluster::Render),
    /// Check every prerequisite and service; print what is missing and the command that fixes it.
    Doctor(cmd::platform::Doctor),
    /// Install or start what is missing: MicroK8s, its addons, the namespace, MinIO and Postgres.
    Bootstrap(cmd::platform::Bootstrap),
    /// Ensure MicroK8s is running and ready, addons dns and hostpath-storage are on, and the
    /// namespace exists. Changes nothing when all is in place.
    K8sStart(cmd::cluster::K8sStart),
    /// Stop the app (locally with the embedded store after the last app; on a cluster its
    /// Deployment, Service and release ConfigMap).
    Down(cmd::hot::Down),
    /// Watch a directory and hot-reload the app on every save.
    Dev(cmd::dev::Dev),
    /// (internal) Run the embedded S3 store.
    #[command(hide = true)]
    LocalStore(cmd::LocalStore),
    /// Make an Ed25519 (minisign) key pair for signing uploads; the secret key is never printed.
    Keygen(cmd::keygen::Keygen),
    /// Build the fetcher as a static binary and write its OCI image archive (no Docker needed).
    SidecarImage(cmd::image::SidecarImage),
    /// Install what the tests need (apt, when missing) and run every test in the workspace.
    Test(cmd::test::Test),
    /// Print packing and unpacking figures next to tar+gzip on the same machine.
    Bench(cmd::bench::Bench),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = Shell::new().map_err(anyhow::Error::from).and_then(|sh| {
        let ctx = cmd::Ctx {
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
            Cmd::K8sStart(c) => c.run(&ctx),
            Cmd::Down(c) => c.run(&ctx),
            Cmd::Dev(c) => c.run(&ctx),
            Cmd::LocalStore(c) => c.run(&ctx),
            Cmd::Keygen(c) => c.run(&ctx),
            Cmd::SidecarImage(c) => c.run(&ctx),
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

fn parse_digest(s: &str) -> Result<Digest, String> {
    Digest::parse(s).map_err(|e| e.to_string())
}
