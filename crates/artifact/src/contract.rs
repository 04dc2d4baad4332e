//! The contracts between the xtask, the templates and the fetcher that are not about the
//! artifact's bytes: the release ConfigMap, the fetcher's environment and its status. Each
//! name exists here once; the `tidy` test fails when another file restates one.

use std::path::PathBuf;

use crate::Digest;

/// The release ConfigMap (and the local target's release directory, written the same way).
pub mod release {
    /// Data keys.
    pub const DIGEST: &str = "digest";
    pub const GENERATION: &str = "generation";
    pub const HISTORY: &str = "history";
    /// Unix ms before which the release must not go live (a barrier's activation): a pod that
    /// sees the ConfigMap before its annotations must not switch ahead of the others.
    pub const ACTIVATE_AT: &str = "activate-at";
    /// Every key, in the order the ConfigMap lists them.
    pub const KEYS: [&str; 4] = [DIGEST, GENERATION, HISTORY, ACTIVATE_AT];
    /// A release every pod should fetch and keep ready without making it live (a cutover's
    /// first phase), beside the release in the ConfigMap: fetchers that watch the ConfigMap
    /// see it within milliseconds; the rest get it from their pod's `aether.dev/stage`.
    pub const STAGE: &str = "stage";
    /// Changed with every stage request, so asking again is a change a watch reports.
    pub const NUDGE: &str = "nudge";

    /// The ConfigMap's name for an app.
    pub fn configmap_name(app: &str) -> String {
        format!("{app}{SUFFIX}")
    }
    const SUFFIX: &str = "-release";

    // One parser for every reader of a release (the xtask's ConfigMap, the fetcher's mounted
    // files and annotations). What a reader does with an error is its own policy: the xtask
    // refuses to build a new generation on a broken one; the fetcher skips that source with
    // a warning and keeps serving.

    /// The digest: empty or absent is none; anything else must parse.
    pub fn parse_digest(v: Option<&str>) -> Result<Option<crate::Digest>, String> {
        match v.map(str::trim).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(d) => crate::Digest::parse(d).map(Some).map_err(|e| e.to_string()),
        }
    }

    /// The generation: empty or absent is 0; anything else must be a whole number.
    pub fn parse_generation(v: Option<&str>) -> Result<u64, String> {
        match v.map(str::trim).filter(|s| !s.is_empty()) {
            None => Ok(0),
            Some(g) => g
                .parse()
                .map_err(|_| format!("generation {g:?} is not a whole number")),
        }
    }

    /// The activation time, advisory: one that does not parse is absent, so the release goes
    /// live at once (as one without a time does) instead of never.
    pub fn parse_activate_at(v: Option<&str>) -> Option<u64> {
        v.map(str::trim)
            .filter(|s| !s.is_empty())
            .and_then(|s| s.parse().ok())
    }
}

/// The fetcher's environment: every flag of `aether-fetcher` is mirrored by one of these
/// variables (git-sync style). The deployment template, the local target and the fetcher's own
/// flag parser all take the names from here.
#[derive(Debug, Clone, Default)]
pub struct FetcherEnv {
    pub root: Option<PathBuf>,
    pub annotations_file: Option<PathBuf>,
    pub release_dir: Option<PathBuf>,
    pub app: Option<String>,
    pub period: Option<String>,
    pub http_bind: Option<String>,
}

impl FetcherEnv {
    pub const ROOT: &'static str = "AETHER_FETCHER_ROOT";
    pub const ANNOTATIONS_FILE: &'static str = "AETHER_FETCHER_ANNOTATIONS_FILE";
    pub const RELEASE_DIR: &'static str = "AETHER_FETCHER_RELEASE_DIR";
    pub const APP: &'static str = "AETHER_FETCHER_APP";
    pub const PERIOD: &'static str = "AETHER_FETCHER_PERIOD";
    pub const TIMEOUT: &'static str = "AETHER_FETCHER_TIMEOUT";
    pub const CONNECT_TIMEOUT: &'static str = "AETHER_FETCHER_CONNECT_TIMEOUT";
    pub const STALL_TIMEOUT: &'static str = "AETHER_FETCHER_STALL_TIMEOUT";
    pub const MAX_BACKOFF: &'static str = "AETHER_FETCHER_MAX_BACKOFF";
    pub const KEEP: &'static str = "AETHER_FETCHER_KEEP";
    pub const GC_GRACE: &'static str = "AETHER_FETCHER_GC_GRACE";
    pub const MAX_FAILURES: &'static str = "AETHER_FETCHER_MAX_FAILURES";
    pub const ONE_TIME: &'static str = "AETHER_FETCHER_ONE_TIME";
    pub const HTTP_BIND: &'static str = "AETHER_FETCHER_HTTP_BIND";
    /// Watch the release ConfigMap through the API server (`true` by default): news in
    /// milliseconds instead of the kubelet's volume refresh.
    pub const WATCH_API: &'static str = "AETHER_FETCHER_WATCH_API";
    /// The pod's namespace (downward API), for that watch.
    pub const NAMESPACE: &'static str = "AETHER_FETCHER_NAMESPACE";
    /// The port of the fetcher's `/status` in a pod (its default bind is `:8081`): the CLI
    /// reads it through the API server's pod proxy.
    pub const HTTP_PORT: u16 = 8081;
    pub const MAX_BYTES: &'static str = "AETHER_FETCHER_MAX_BYTES";
    pub const MAX_ENTRIES: &'static str = "AETHER_FETCHER_MAX_ENTRIES";
    pub const INSTALL_RUNNER: &'static str = "AETHER_FETCHER_INSTALL_RUNNER";
    pub const DURABLE: &'static str = "AETHER_FETCHER_DURABLE";
    /// A minisign public key: when set, only releases whose provenance it signed go live.
    pub const PUBLIC_KEY: &'static str = "AETHER_FETCHER_PUBLIC_KEY";
    /// `true`: refuse to start without [`FetcherEnv::PUBLIC_KEY`], so a key lost from the pod's
    /// configuration stops the fetcher instead of turning verification off.
    pub const REQUIRE_SIGNATURES: &'static str = "AETHER_FETCHER_REQUIRE_SIGNATURES";
    /// The fetcher's HTTP path that answers 200 only while `aether-run` reports a live app
    /// process (the app container's readiness probe): once `aether-run` holds the app's port, a
    /// TCP probe would pass through a crash loop.
    pub const APP_READY_PATH: &'static str = "/app-ready";
    /// Where the fetcher reads `aether-run`'s status, to report it in its own.
    pub const RUN_STATUS: &'static str = "AETHER_FETCHER_RUN_STATUS";
    /// `aether-run`'s grace period after the first stop signal.
    pub const RUN_GRACE: &'static str = "AETHER_RUN_GRACE";
    /// `aether-run`'s public address (`:3000`): it owns it and forwards each connection to the
    /// live app process, which listens on a private `PORT`.
    pub const RUN_LISTEN: &'static str = "AETHER_RUN_LISTEN";
    /// The directory whose trigger file (`.reload/trigger`) announces a published release.
    pub const RUN_WATCH: &'static str = "AETHER_RUN_WATCH";
    /// Where `aether-run` writes its status ([`RunnerStatus`]).
    pub const RUN_STATUS_FILE: &'static str = "AETHER_RUN_STATUS_FILE";
    /// How long a new app process may take to listen before it is abandoned.
    pub const RUN_START_TIMEOUT: &'static str = "AETHER_RUN_START_TIMEOUT";
    /// How long a replaced app process may keep serving its open connections.
    pub const RUN_DRAIN: &'static str = "AETHER_RUN_DRAIN";
    /// Whether `aether-run` keeps a booted `node` waiting for the next switch.
    pub const RUN_WARM: &'static str = "AETHER_RUN_WARM";
    /// The release directory whose record names the entry point `aether-run` starts.
    pub const RUN_ENTRY_FROM: &'static str = "AETHER_RUN_ENTRY_FROM";

    /// Defaults of the fetcher's flags: where a pod mounts the shared volume, the downward-API
    /// volume and the release ConfigMap.
    pub const DEFAULT_ROOT: &'static str = "/work";
    pub const DEFAULT_ANNOTATIONS_DIR: &'static str = "/etc/podinfo";
    /// The downward-API volume's item holding the pod's annotations.
    pub const ANNOTATIONS_ITEM: &'static str = "annotations";
    pub const DEFAULT_ANNOTATIONS_FILE: &'static str = "/etc/podinfo/annotations";
    pub const DEFAULT_RELEASE_DIR: &'static str = "/etc/aether/release";
    /// Where a pod mounts the store's CA (ConfigMap [`STORE_CA_CONFIGMAP`], key
    /// [`STORE_CA_ITEM`]) when the store is `https://` with a private CA.
    pub const STORE_CA_DIR: &'static str = "/etc/aether/store-ca";
    pub const STORE_CA_ITEM: &'static str = "ca.crt";
    pub const STORE_CA_CONFIGMAP: &'static str = "aether-store-ca";
    /// A small volume the app container writes (`aether-run`'s status) and the fetcher reads:
    /// the shared volume is read-only for the app.
    pub const DEFAULT_RUN_DIR: &'static str = "/run/aether";
    pub const RUN_STATUS_ITEM: &'static str = "status.json";
    pub const DEFAULT_RUN_STATUS: &'static str = "/run/aether/status.json";
    /// Where the fetcher binary sits in its image (a `FROM scratch` image has no PATH).
    pub const BIN_IN_IMAGE: &'static str = "/aether-fetcher";

    /// The variables that are set, as (name, value) pairs.
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        [
            (Self::ROOT, path(&self.root)),
            (Self::ANNOTATIONS_FILE, path(&self.annotations_file)),
            (Self::RELEASE_DIR, path(&self.release_dir)),
            (Self::APP, self.app.clone()),
            (Self::PERIOD, self.period.clone()),
            (Self::HTTP_BIND, self.http_bind.clone()),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
    }
}

/// What a fetcher reports: served on `/status`, written to `<root>/.fetcher/state.json` and
/// printed by `aether-fetcher status`; parsed by `hot-status` on every target.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Status {
    pub app: Option<String>,
    pub digest: Option<Digest>,
    pub generation: Option<u64>,
    /// The live release's dependency layer (`node_modules`), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deps_digest: Option<Digest>,
    /// RFC 3339, when the live release was published.
    pub fetched_at: Option<String>,
    pub last_error: Option<String>,
    /// What kind of failure `last_error` is.
    #[serde(default)]
    pub last_error_cause: Option<Cause>,
    /// Failed passes per cause since the fetcher started: the `cause` label of
    /// `aether_fetcher_failures_total`.
    #[serde(default)]
    pub failures_by_cause: std::collections::BTreeMap<Cause, u64>,
    /// RFC 3339, when the current run of failed passes began (`None` while healthy): a fetch
    /// that keeps failing or stalling shows "retrying since …" instead of silence.
    #[serde(default)]
    pub failing_since: Option<String>,
    pub consecutive_failures: u32,
    pub ready: bool,
    pub syncs: u64,
    pub failures: u64,
    pub bytes: u64,
    pub last_sync_ms: u64,
    /// Unix ms when the pass that published the live release started: the moment the fetcher
    /// saw the new wanted state (a reload's trace: signalled → seen → published → served).
    #[serde(default)]
    pub seen_at_ms: Option<u64>,
    /// Unix ms when the live release was published (`current` swapped, trigger written).
    #[serde(default)]
    pub published_at_ms: Option<u64>,
    /// Releases on disk that are no longer live, with when they stopped being live (unix ms).
    #[serde(default)]
    pub retired: Vec<(Digest, u64)>,
    /// The app's supervisor (`aether-run`), when it reports: which release the app process
    /// actually runs, its restarts and a failed start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<RunnerStatus>,
    /// A release fetched, verified and extracted but not live (a cutover's first phase).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged: Option<Digest>,
    /// Unix ms when `staged` became ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_at_ms: Option<u64>,
    /// The activation time the live release waited for (`activate-at`), when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activate_at_ms: Option<u64>,
    /// Timings of the last release this fetcher downloaded (to stage it or to make it live).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch: Option<FetchTrace>,
    /// How the news of a release reaches this fetcher: `api` (its watch on the release
    /// ConfigMap) or `volumes` (the kubelet's refresh of its mounted files), with why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub news: Option<String>,
    /// The id of the minisign key this fetcher requires signatures from (as in the `.pub`
    /// file's comment); absent: it does not verify signatures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifies_key: Option<String>,
}

/// Where the time of one fetch went, from the fetcher's own clock.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FetchTrace {
    pub digest: Digest,
    /// Unix ms when the pass that fetched it started: the moment the new wanted (or staged)
    /// state was seen.
    pub seen_at_ms: u64,
    /// Until the store's last byte arrived (app and dependency layers).
    pub download_ms: u64,
    /// After the last byte: the digest check, the end of extraction, linking the layer.
    /// Download and extraction overlap (the archive is unpacked as it streams in).
    pub verify_extract_ms: u64,
    /// Unix ms when the release was complete on disk.
    pub ready_at_ms: u64,
    pub bytes: u64,
}

impl Status {
    /// `Ok` while `aether-run` reports a live app process that serves; else why not (for the
    /// app container's readiness, [`FetcherEnv::APP_READY_PATH`]).
    pub fn app_ready(&self) -> Result<(), String> {
        let Some(r) = &self.runner else {
            return Err("aether-run has not reported yet".into());
        };
        match (r.state, r.pid) {
            (RunState::Serving, Some(_)) => Ok(()),
            (state, _) => Err(format!(
                "the app is {}{}",
                format!("{state:?}").to_lowercase(),
                r.last_exit
                    .as_deref()
                    .map(|e| format!(" (last exit: {e})"))
                    .unwrap_or_default()
            )),
        }
    }

    /// This status with `aether-run`'s status from `path`, when there is one.
    pub fn with_runner(mut self, path: &std::path::Path) -> Status {
        self.runner = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        self
    }
}

/// What `aether-run` reports (its `--status-file`, merged into the fetcher's `/status`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunnerStatus {
    pub state: RunState,
    /// The app process new connections go to.
    pub pid: Option<u32>,
    /// The private port it listens on (what the public port forwards to).
    pub port: Option<u16>,
    /// The booted `node` waiting to load the next release (`--warm`).
    #[serde(default)]
    pub standby_pid: Option<u32>,
    /// The release that process was started on (from the trigger it saw).
    pub digest: Option<Digest>,
    pub generation: Option<u64>,
    /// RFC 3339, when the live process started taking connections.
    pub serving_since: Option<String>,
    /// Unix ms when the supervisor saw the trigger of the live release.
    pub seen_at_ms: Option<u64>,
    /// Unix ms when new connections switched to the live process.
    pub switched_at_ms: Option<u64>,
    /// Releases switched to without a restart of the container.
    pub swaps: u64,
    /// App processes restarted after they exited on their own.
    pub restarts: u64,
    /// How the last app process that exited on its own ended.
    pub last_exit: Option<String>,
    /// Why the last new release did not go live (the old process kept serving).
    pub last_failure: Option<String>,
    pub failed_digest: Option<Digest>,
    pub last_failure_at: Option<String>,
    /// `127.0.0.1:<port>` when the live process runs with node's inspector (`cargo xtask
    /// debug`): reachable inside the pod only, through a port-forward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inspector: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// No app process listens yet.
    #[default]
    Starting,
    Serving,
    /// The app exited; it is restarted after a backoff. Connections wait for it.
    Restarting,
    Stopping,
}

/// The trigger file the fetcher rewrites after each publish, and when the pod's debug request
/// changes: one fixed-length line, `<digest> <generation, 20 digits> <inspector port, 5
/// digits, 0: off>`, so a rewrite in place is one write of the same size. `aether-run` starts a
/// new process whenever the line changes: turning the inspector on or off is a switch like a
/// release's, with no request dropped.
pub mod trigger {
    use crate::Digest;

    pub fn line(digest: &Digest, generation: u64, inspect: Option<u16>) -> String {
        format!("{digest} {generation:020} {:05}\n", inspect.unwrap_or(0))
    }

    pub fn parse(s: &str) -> Option<(Digest, u64)> {
        let mut f = s.split_whitespace();
        let (d, g) = (f.next()?, f.next()?);
        Some((Digest::parse(d).ok()?, g.parse().ok()?))
    }

    /// The inspector's port on 127.0.0.1 the app process must open (`None`: none).
    pub fn inspect(s: &str) -> Option<u16> {
        s.split_whitespace()
            .nth(2)?
            .parse()
            .ok()
            .filter(|p| *p != 0)
    }
}

/// Why a sync pass failed: one vocabulary for the fetcher's log line, its `/status`
/// (`last_error_cause`), `hot-status` and the `cause` label of `aether_fetcher_failures_total`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The volume is full (ENOSPC, EDQUOT).
    NoSpace,
    /// The fetcher may not write where it must (EACCES, EPERM, EROFS).
    PermissionDenied,
    /// No connection to the store, or it broke.
    StoreUnreachable,
    /// Connected, then the store went silent past the stall timeout.
    StoreStalled,
    /// The store's TLS certificate was not trusted.
    Tls,
    /// The store rejected the credentials.
    BadCredentials,
    /// The credentials lack permission.
    Forbidden,
    /// The artifact (or its bucket) is not in the store.
    NotFound,
    /// The bytes do not hash to the wanted digest.
    DigestMismatch,
    /// The archive was refused (unsafe entry, bomb, corrupt).
    ArchiveRefused,
    /// A signature is required and missing, or does not verify.
    BadSignature,
    /// The pass ran past its deadline.
    Timeout,
    /// A setting is missing or wrong.
    Config,
    Other,
}

impl Cause {
    pub const ALL: [Cause; 14] = [
        Cause::NoSpace,
        Cause::PermissionDenied,
        Cause::StoreUnreachable,
        Cause::StoreStalled,
        Cause::Tls,
        Cause::BadCredentials,
        Cause::Forbidden,
        Cause::NotFound,
        Cause::DigestMismatch,
        Cause::ArchiveRefused,
        Cause::BadSignature,
        Cause::Timeout,
        Cause::Config,
        Cause::Other,
    ];

    /// The snake_case name: the metrics label and the JSON value.
    pub fn label(self) -> &'static str {
        match self {
            Cause::NoSpace => "no_space",
            Cause::PermissionDenied => "permission_denied",
            Cause::StoreUnreachable => "store_unreachable",
            Cause::StoreStalled => "store_stalled",
            Cause::Tls => "tls",
            Cause::BadCredentials => "bad_credentials",
            Cause::Forbidden => "forbidden",
            Cause::NotFound => "not_found",
            Cause::DigestMismatch => "digest_mismatch",
            Cause::ArchiveRefused => "archive_refused",
            Cause::BadSignature => "bad_signature",
            Cause::Timeout => "timeout",
            Cause::Config => "config",
            Cause::Other => "other",
        }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// Now, in unix milliseconds: the unit of every `*_ms` timestamp in the fetcher's and
/// `aether-run`'s status and the release's `activate-at`, so the xtask and the pods stamp time
/// the same way (each on its own clock).
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_agree() {
        assert_eq!(
            FetcherEnv::DEFAULT_ANNOTATIONS_FILE,
            format!(
                "{}/{}",
                FetcherEnv::DEFAULT_ANNOTATIONS_DIR,
                FetcherEnv::ANNOTATIONS_ITEM
            )
        );
    }

    #[test]
    fn cause_labels_are_the_json_names() {
        for c in Cause::ALL {
            assert_eq!(
                serde_json::to_string(&c).unwrap(),
                format!("\"{}\"", c.label())
            );
        }
    }

    #[test]
    fn trigger_lines_round_trip_at_a_fixed_length() {
        let d = Digest::parse(&"ab".repeat(32)).unwrap();
        let (a, b) = (
            trigger::line(&d, 1, None),
            trigger::line(&d, u64::MAX, Some(65535)),
        );
        assert_eq!(a.len(), b.len());
        assert_eq!(trigger::parse(&a), Some((d, 1)));
        assert_eq!(trigger::parse(&b), Some((d, u64::MAX)));
        assert_eq!(trigger::inspect(&a), None);
        assert_eq!(trigger::inspect(&b), Some(65535));
        assert_eq!(trigger::parse("nonsense"), None);
        // The line before the inspector existed.
        let old = format!("{d} {:020}\n", 3);
        assert_eq!(trigger::parse(&old), Some((d, 3)));
        assert_eq!(trigger::inspect(&old), None);
    }

    #[test]
    fn run_status_path_is_dir_and_item() {
        assert_eq!(
            FetcherEnv::DEFAULT_RUN_STATUS,
            format!(
                "{}/{}",
                FetcherEnv::DEFAULT_RUN_DIR,
                FetcherEnv::RUN_STATUS_ITEM
            )
        );
    }

    #[test]
    fn names() {
        assert_eq!(release::configmap_name("demo"), "demo-release");
        let env = FetcherEnv {
            app: Some("demo".into()),
            root: Some("/work".into()),
            ..Default::default()
        };
        assert_eq!(
            env.vars(),
            [
                ("AETHER_FETCHER_ROOT", "/work".to_string()),
                ("AETHER_FETCHER_APP", "demo".to_string())
            ]
        );
    }
}
