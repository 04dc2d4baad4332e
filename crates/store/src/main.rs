//! `aether-store`: an S3 server (SigV4 checked) on a directory, for a cluster with no object
//! store of its own. Keys come from the environment only, never from argv (visible in `ps`).

use std::net::SocketAddr;
use std::path::PathBuf;

use aether_store::StoreEnv;
use anyhow::{Context, Result};
use clap::Parser;

#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Directory holding one sub-directory per bucket.
    #[arg(long, env = StoreEnv::DIR, default_value = StoreEnv::DATA_IN_IMAGE)]
    dir: PathBuf,
    /// Address to listen on.
    #[arg(long, env = StoreEnv::LISTEN, default_value = "0.0.0.0:9000")]
    listen: SocketAddr,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let key = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .with_context(|| format!("{name} is not set: give the store's keys in the environment (a Secret), never as arguments"))
    };
    let (ak, sk) = (key(StoreEnv::ACCESS_KEY)?, key(StoreEnv::SECRET_KEY)?);
    let server = aether_s3local::Server::start_with(
        &args.dir,
        &[args.listen],
        &ak,
        &sk,
        Some(aether_store::read_keys(&sk)),
    )
    .with_context(|| {
        format!(
            "serving {} on {}: is the directory writable and the port free?",
            args.dir.display(),
            args.listen
        )
    })?;
    eprintln!(
        "aether-store: serving {} on {}",
        args.dir.display(),
        server.addr()
    );
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])?;
    if let Some(sig) = signals.forever().next() {
        eprintln!("aether-store: signal {sig}, stopping");
    }
    drop(server);
    Ok(())
}
