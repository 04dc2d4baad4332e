//! `cargo xtask`: the Aether developer loop. This file parses flags and dispatches; each
//! command lives in its own module with its `run` at the top.

mod bench;
mod config;
mod package;
mod test;
mod upload;

use std::path::PathBuf;

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
    /// Install what the tests need (apt, when missing) and run every test in the workspace.
    Test {
        /// Do not install anything; tests that need a missing tool say so.
        #[arg(long)]
        no_install: bool,
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
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let sh = Shell::new()?;
    match cli.cmd {
        Cmd::Package { dir, output } => package::run(&sh, &dir, output.as_deref()),
        Cmd::HotUpload {
            app,
            dir,
            json,
            url_expiry,
        } => upload::run(&sh, &cli.global, &app, &dir, json, url_expiry).map(|_| ()),
        Cmd::Test { no_install, extra } => test::run(&sh, no_install, &extra),
        Cmd::Bench { files, runs } => bench::run(&sh, files, runs),
    }
}

#[allow(dead_code)]
fn parse_digest(s: &str) -> Result<Digest, String> {
    Digest::parse(s).map_err(|e| e.to_string())
}
