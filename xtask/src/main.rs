//! `cargo xtask`: the Aether developer loop. This file parses flags and dispatches; each
//! command lives in its own module with its `run` at the top.

mod bench;
mod cluster;
mod config;
mod deploy;
mod dev;
mod embedded;
mod hot;
mod image;
mod kube;
mod local;
mod manifests;
mod package;
mod platform;
mod proc;
mod release;
mod sample;
mod target;
mod test;
mod upload;

use std::path::PathBuf;
use std::time::Duration;

use aether_artifact::{AppName, Digest};
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
    Package {
        dir: PathBuf,
        /// Write the archive here (default: only compute the digest).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Package a directory and upload it, content-addressed, to the store.
    HotUpload {
        app: AppName,
        dir: PathBuf,
        /// Print one JSON object instead of key=value lines.
        #[arg(long)]
        json: bool,
        /// Validity of the presigned URL, in seconds (at most 7 days).
        #[arg(long, default_value_t = 3600)]
        url_expiry: u64,
    },
    /// Deploy an app (the generated sample when no path is given) and wait until it serves.
    DeploySample {
        app: AppName,
        path: Option<PathBuf>,
        /// How long to wait for the app to run and answer, in seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// kube target: the command that loads the fetcher image into the cluster's nodes,
        /// with `{archive}` for the OCI archive, e.g. 'kind load image-archive {archive}'.
        /// Run only when a node lacks the image.
        #[arg(long, env = "AETHER_IMAGE_IMPORT")]
        image_import: Option<String>,
    },
    /// Make a running app switch to an uploaded digest, without restarting its pod.
    HotPatch {
        app: AppName,
        #[arg(value_parser = parse_digest)]
        digest: Digest,
        /// Wait (up to this many seconds) until the app serves the new version.
        #[arg(long)]
        wait: Option<u64>,
    },
    /// Go back to the previous digest (or --to one), as a new generation.
    Rollback {
        app: AppName,
        #[arg(long, value_parser = parse_digest)]
        to: Option<Digest>,
        /// Wait (up to this many seconds) until the app serves it.
        #[arg(long)]
        wait: Option<u64>,
    },
    /// The wanted release and what each pod's fetcher reports.
    HotStatus {
        app: AppName,
        #[arg(long)]
        json: bool,
    },
    /// Print the app's (or with --fetcher the fetcher's) log.
    Logs {
        app: AppName,
        #[arg(long)]
        fetcher: bool,
        /// Keep streaming.
        #[arg(short, long)]
        follow: bool,
    },
    /// Print the Kubernetes manifests of an app (credentials as placeholders), for review or GitOps.
    Render {
        app: AppName,
        #[arg(long, value_parser = parse_digest)]
        digest: Digest,
        /// Also print the MinIO and Postgres objects `bootstrap` applies.
        #[arg(long)]
        platform: bool,
    },
    /// Check every prerequisite and service; print what is missing and the command that fixes it.
    Doctor {
        #[arg(long)]
        json: bool,
    },
    /// Install or start what is missing: MicroK8s, its addons, the namespace, MinIO and Postgres.
    Bootstrap {
        /// Do not ask before steps that run sudo.
        #[arg(long)]
        yes: bool,
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Ensure MicroK8s is running and ready, addons dns and hostpath-storage are on, and the
    /// namespace exists. Changes nothing when all is in place.
    K8sStart,
    /// Stop the app's local pod (and the embedded store with the last app).
    Down { app: AppName },
    /// Watch a directory and hot-reload the app on every save.
    Dev {
        app: AppName,
        dir: Option<PathBuf>,
        /// Quiet time after the last change before a cycle starts, in milliseconds.
        #[arg(long, default_value_t = 100)]
        debounce_ms: u64,
    },
    /// (internal) Run the embedded S3 store of the local target.
    #[command(hide = true)]
    LocalStore {
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        port: u16,
        /// Also listen on this address (the cluster node's, for pods).
        #[arg(long)]
        also: Vec<std::net::IpAddr>,
    },
    /// Build the fetcher as a static binary and write its OCI image archive (no Docker needed).
    SidecarImage {
        /// Archive path [default: target/aether-fetcher-image.tar]
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Install what the tests need (apt, when missing) and run every test in the workspace.
    Test {
        /// Do not install anything; tests that need a missing tool say so.
        #[arg(long)]
        no_install: bool,
        /// Run the real-cluster suite instead, against the cluster KUBECONFIG names.
        #[arg(long)]
        cluster: bool,
        /// Passed on to `cargo test`.
        #[arg(last = true)]
        extra: Vec<String>,
    },
    /// Print packing and unpacking figures next to tar+gzip on the same machine.
    Bench {
        /// Files in the generated node_modules-like tree.
        #[arg(long, default_value_t = 7000)]
        files: usize,
        /// Repetitions of each measurement (the minimum is reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Edit-to-served cycles on the local target (0 skips it).
        #[arg(long, default_value_t = 20)]
        cycles: usize,
        /// Instead: hot-patch → served on the cluster KUBECONFIG names (10 cycles).
        #[arg(long)]
        cluster: bool,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let sh = Shell::new()?;
    match cli.cmd {
        Cmd::Package { dir, output } => package::run(&sh, &dir, output.as_deref()),
        Cmd::HotUpload {
            app,
            dir,
            json,
            url_expiry,
        } => upload::run(&sh, &cli.global, &cli.target, &app, &dir, json, url_expiry).map(|_| ()),
        Cmd::DeploySample {
            app,
            path,
            timeout,
            image_import,
        } => deploy::run(
            &sh,
            &cli.global,
            &cli.target,
            &app,
            path.as_deref(),
            Duration::from_secs(timeout),
            image_import.as_deref(),
        ),
        Cmd::HotPatch { app, digest, wait } => hot::patch(
            &sh,
            &cli.global,
            &cli.target,
            &app,
            digest,
            wait.map(Duration::from_secs),
        ),
        Cmd::Rollback { app, to, wait } => hot::rollback(
            &sh,
            &cli.global,
            &cli.target,
            &app,
            to,
            wait.map(Duration::from_secs),
        ),
        Cmd::HotStatus { app, json } => hot::status(&sh, &cli.global, &cli.target, &app, json),
        Cmd::Logs {
            app,
            fetcher,
            follow,
        } => hot::logs(&sh, &cli.global, &cli.target, &app, fetcher, follow),
        Cmd::Render {
            app,
            digest,
            platform,
        } => {
            let t = match cli.target.target {
                Some(target::Target::Kube) => target::Target::Kube,
                _ => target::Target::Microk8s,
            };
            print!(
                "{}",
                cluster::Cluster::new(&sh, &cli.global, &cli.target, t).render(&app, digest)?
            );
            if platform {
                print!("{}", platform::render(&cli.target.namespace)?);
            }
            Ok(())
        }
        Cmd::Doctor { json } => platform::doctor(&sh, &cli.global, &cli.target, json),
        Cmd::Bootstrap { yes, dry_run } => {
            platform::bootstrap(&sh, &cli.global, &cli.target, yes, dry_run)
        }
        Cmd::K8sStart => {
            let t = match cli.target.target {
                Some(target::Target::Kube) => target::Target::Kube,
                Some(target::Target::Local) => {
                    anyhow::bail!("k8s-start is for the microk8s and kube targets")
                }
                _ => target::Target::Microk8s,
            };
            cluster::Cluster::new(&sh, &cli.global, &cli.target, t).start()
        }
        Cmd::Down { app } => hot::down(&sh, &cli.global, &cli.target, &app),
        Cmd::Dev {
            app,
            dir,
            debounce_ms,
        } => dev::run(
            &sh,
            &cli.global,
            &cli.target,
            &app,
            dir.as_deref(),
            Duration::from_millis(debounce_ms),
        ),
        Cmd::LocalStore { data, port, also } => embedded::serve(&data, port, &also),
        Cmd::SidecarImage { output } => image::run(&sh, output.as_deref()),
        Cmd::Test {
            no_install,
            cluster,
            extra,
        } => test::run(&sh, no_install, cluster, &extra),
        Cmd::Bench {
            files,
            runs,
            cycles,
            cluster,
        } => {
            if cluster {
                bench::cluster(&sh, 10)
            } else {
                bench::run(&sh, files, runs, cycles)
            }
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
