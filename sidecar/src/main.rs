//! `aether-fetcher`: see `lib.rs`. This file parses flags (each mirrored by an
//! `AETHER_FETCHER_*` variable) and dispatches.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use aether_artifact::FetcherEnv;
use aether_fetcher::{Config, Fetcher};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "aether-fetcher",
    version,
    args_override_self = true,
    about = "Fetches, verifies and atomically publishes app releases named by the pod's annotations"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// The volume shared with the app; the live release is `<root>/current`.
    #[arg(
        long,
        env = FetcherEnv::ROOT,
        default_value = FetcherEnv::DEFAULT_ROOT,
        global = true
    )]
    root: PathBuf,
    /// `aether-run`'s status file (its `--status-file`), reported in this fetcher's status.
    #[arg(
        long,
        env = FetcherEnv::RUN_STATUS,
        default_value = FetcherEnv::DEFAULT_RUN_STATUS,
        global = true
    )]
    run_status: PathBuf,
    /// The downward-API annotations file.
    #[arg(
        long,
        env = FetcherEnv::ANNOTATIONS_FILE,
        default_value = FetcherEnv::DEFAULT_ANNOTATIONS_FILE
    )]
    annotations_file: PathBuf,
    /// The release ConfigMap, mounted as a directory (keys `digest`, `generation`).
    #[arg(
        long,
        env = FetcherEnv::RELEASE_DIR,
        default_value = FetcherEnv::DEFAULT_RELEASE_DIR
    )]
    release_dir: PathBuf,
    /// App name; defaults to the pod's `aether.dev/app` annotation.
    #[arg(long, env = FetcherEnv::APP)]
    app: Option<String>,
    /// Poll period (e.g. `5s`, `250ms`); file changes wake the fetcher earlier.
    #[arg(long, env = FetcherEnv::PERIOD, default_value = "5s", value_parser = parse_duration)]
    period: Duration,
    /// Deadline for one sync pass (download, verify, extract, publish).
    #[arg(long, env = FetcherEnv::TIMEOUT, default_value = "120s", value_parser = parse_duration)]
    timeout: Duration,
    /// How long a connection to the store may take before the attempt fails.
    #[arg(long, env = FetcherEnv::CONNECT_TIMEOUT, default_value = "5s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// How long a download may go without receiving a byte before the attempt fails.
    #[arg(long, env = FetcherEnv::STALL_TIMEOUT, default_value = "10s", value_parser = parse_duration)]
    stall_timeout: Duration,
    /// Cap of the exponential backoff after failures.
    #[arg(long, env = FetcherEnv::MAX_BACKOFF, default_value = "60s", value_parser = parse_duration)]
    max_backoff: Duration,
    /// Releases kept on the volume (the live one included) for instant rollback.
    #[arg(long, env = FetcherEnv::KEEP, default_value_t = 3)]
    keep: usize,
    /// How long a release stays on disk after it stopped being live (readers may hold files).
    #[arg(long, env = FetcherEnv::GC_GRACE, default_value = "60s", value_parser = parse_duration)]
    gc_grace: Duration,
    /// Exit non-zero after this many consecutive failed passes (0 = never).
    #[arg(long, env = FetcherEnv::MAX_FAILURES, default_value_t = 0)]
    max_failures: u32,
    /// Sync once and exit: 0 on success, 1 on failure or when nothing is wanted yet.
    #[arg(long, env = FetcherEnv::ONE_TIME)]
    one_time: bool,
    /// Address for /healthz, /readyz, /status and /metrics; empty turns HTTP off.
    #[arg(long, env = FetcherEnv::HTTP_BIND, default_value = ":8081")]
    http_bind: String,
    /// Cap on the bytes an artifact may expand to.
    #[arg(long, env = FetcherEnv::MAX_BYTES, default_value_t = 4 << 30)]
    max_bytes: u64,
    /// Copy this binary to `<root>/.aether/bin/aether-run` at start, for the app container.
    #[arg(long, env = FetcherEnv::INSTALL_RUNNER, default_value_t = true, action = clap::ArgAction::Set)]
    install_runner: bool,
    /// Flush each release to disk before it goes live (writeback + syncfs), so a node crash
    /// never leaves `current` on a partly written tree. `false` trades that for speed, e.g. on a
    /// tmpfs volume (where it costs nothing anyway) or a node whose disk is busy with others.
    #[arg(long, env = FetcherEnv::DURABLE, default_value_t = true, action = clap::ArgAction::Set)]
    durable: bool,
    /// Only releases whose provenance this minisign public key signed go live (base64, or the
    /// `.pub` file's two lines); unsigned or badly signed ones are refused.
    #[arg(long, env = FetcherEnv::PUBLIC_KEY)]
    public_key: Option<String>,
    /// Refuse to start without `--public-key`: a key lost from the pod's configuration stops
    /// the fetcher (the pod never gets ready) instead of turning verification off silently.
    #[arg(long, env = FetcherEnv::REQUIRE_SIGNATURES, default_value_t = false, action = clap::ArgAction::Set)]
    require_signatures: bool,
    /// Watch the release ConfigMap through the API server (the pod's ServiceAccount token),
    /// for news in milliseconds; the mounted volumes stay the fallback.
    #[arg(long, env = FetcherEnv::WATCH_API, default_value_t = true, action = clap::ArgAction::Set)]
    watch_api: bool,
    /// The pod's namespace, for that watch [default: the ServiceAccount's].
    #[arg(long, env = FetcherEnv::NAMESPACE)]
    namespace: Option<String>,
    /// Cap on the entries an artifact may hold.
    #[arg(long, env = FetcherEnv::MAX_ENTRIES, default_value_t = 500_000)]
    max_entries: u64,
    /// Get read URLs from this control plane instead of reading the store with a key (the pod
    /// then holds no store credentials).
    #[arg(long, env = aether_artifact::control::ENV_URL)]
    control_url: Option<String>,
    /// The token that proves to the control plane which app this pod is (re-read each time).
    #[arg(long, env = aether_artifact::control::ENV_TOKEN_FILE, default_value = "/var/run/secrets/aether/token")]
    control_token_file: std::path::PathBuf,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a command as a container's init (what `aether-run` does): forward stop signals to
    /// it, reap zombies, kill it `--grace` after the first stop signal.
    Run(RunArgs),
    /// Print the fetcher's status (from `<root>/.fetcher/state.json`) as JSON; works through
    /// `kubectl exec` in an image without a shell.
    Status,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Time the command has to exit after SIGTERM before it is killed.
    #[arg(long, env = FetcherEnv::RUN_GRACE, default_value = "1500ms", value_parser = parse_duration)]
    grace: Duration,
    /// Own this address (`:3000`, `127.0.0.1:3000`) and forward each connection to the live
    /// app process, which gets a private `PORT`; switch processes without dropping a request
    /// when the trigger in `--watch` changes, and restart a crashed one. Unset: run the command
    /// once, as a plain init.
    #[arg(long, env = FetcherEnv::RUN_LISTEN)]
    listen: Option<String>,
    /// The directory of the fetcher's reload trigger (`<root>/.reload`).
    #[arg(long, env = FetcherEnv::RUN_WATCH, requires = "listen")]
    watch: Option<PathBuf>,
    /// Where to write the supervisor's status, which the fetcher reports.
    #[arg(long, env = FetcherEnv::RUN_STATUS_FILE, requires = "listen")]
    status_file: Option<PathBuf>,
    /// How long a new app process may take to listen before the old one is kept; also how
    /// long a connection waits while no process listens.
    #[arg(long, env = FetcherEnv::RUN_START_TIMEOUT, default_value = "30s", value_parser = parse_duration)]
    start_timeout: Duration,
    /// How long a replaced process may keep serving its open connections before it is stopped.
    #[arg(long, env = FetcherEnv::RUN_DRAIN, default_value = "10s", value_parser = parse_duration)]
    drain: Duration,
    /// For `node [flags…] <entry>`: keep one booted node waiting, so a switch costs loading the
    /// app, not starting node (the entry point is resolved when it loads).
    #[arg(long, env = FetcherEnv::RUN_WARM, default_value_t = true, action = clap::ArgAction::Set)]
    warm: bool,
    /// A release directory (e.g. `current`) whose record (`.aether-release.json`) names the
    /// entry point and its arguments; they are appended to the command at each start.
    #[arg(long, env = FetcherEnv::RUN_ENTRY_FROM, requires = "listen")]
    entry_from: Option<PathBuf>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<std::ffi::OsString>,
}

/// `aether-run [--grace D] -- cmd…`: the same binary, called by its runner name.
#[derive(Parser)]
#[command(name = "aether-run", version)]
struct RunCli {
    #[command(flatten)]
    args: RunArgs,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("{e}: use e.g. `5s`, `250ms` or `2m`"))
}

fn main() -> ExitCode {
    let called_as = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_os_string()));
    if called_as.as_deref() == Some(std::ffi::OsStr::new(aether_artifact::volume::RUNNER_NAME)) {
        return run_mode(RunCli::parse().args);
    }
    let cli = Cli::parse();
    if let Some(Cmd::Run(args)) = cli.cmd {
        return run_mode(args);
    }
    if let Some(Cmd::Status) = cli.cmd {
        return match aether_fetcher::fetcher::status::read(&cli.root) {
            Ok(s) => {
                let s = s.with_runner(&cli.run_status);
                println!(
                    "{}",
                    serde_json::to_string_pretty(&s).expect("status serialises")
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("[fetcher] {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let public_key = cli.public_key.filter(|k| !k.trim().is_empty());
    if cli.require_signatures && public_key.is_none() {
        eprintln!(
            "[fetcher] fatal: signatures are required ({}=true) but no public key is set: set {} \
             (deploy with AETHER_VERIFY_KEY), or turn the requirement off on purpose",
            FetcherEnv::REQUIRE_SIGNATURES,
            FetcherEnv::PUBLIC_KEY
        );
        return ExitCode::FAILURE;
    }
    let cfg = Config {
        root: cli.root,
        annotations_file: cli.annotations_file,
        release_dir: cli.release_dir,
        app: cli.app,
        period: cli.period,
        timeout: cli.timeout,
        connect_timeout: cli.connect_timeout,
        stall_timeout: cli.stall_timeout,
        max_backoff: cli.max_backoff,
        keep: cli.keep.max(1),
        gc_grace: cli.gc_grace,
        max_failures: cli.max_failures,
        one_time: cli.one_time,
        http_bind: cli.http_bind,
        run_status: cli.run_status,
        public_key,
        watch_api: cli.watch_api,
        namespace: cli.namespace,
        control: cli
            .control_url
            .filter(|u| !u.trim().is_empty())
            .map(|url| (url, cli.control_token_file)),
        limits: aether_artifact::unpack::Limits {
            max_bytes: cli.max_bytes,
            max_entries: cli.max_entries,
            durable: cli.durable,
            ..Default::default()
        },
    };
    if !cli.one_time {
        stop_on_signals();
        if cli.install_runner {
            if let Err(e) = aether_fetcher::run::install(&cfg.root) {
                eprintln!("[fetcher] fatal: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    }
    match Fetcher::new(cfg).and_then(|f| f.run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("[fetcher] fatal: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_mode(a: RunArgs) -> ExitCode {
    aether_fetcher::run::run(aether_fetcher::run::RunConfig {
        command: a.command,
        grace: a.grace,
        listen: a.listen.filter(|l| !l.is_empty()),
        watch: a.watch,
        status_file: a.status_file,
        start_timeout: a.start_timeout,
        drain: a.drain,
        warm: a.warm,
        entry_from: a.entry_from,
    })
}

/// As PID 1 of its container the fetcher would ignore SIGTERM and hold the pod for its whole
/// grace period. Exiting at once is safe: every publish is an atomic rename, and the leftovers
/// of an interrupted extraction are removed at the next start.
fn stop_on_signals() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGTERM, SIGINT]) else {
        eprintln!("[fetcher] cannot install signal handlers; SIGTERM will not stop the fetcher");
        return;
    };
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            eprintln!("[fetcher] stopping on signal {sig}");
            std::process::exit(0);
        }
    });
}
