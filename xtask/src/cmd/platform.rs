//! `doctor` (what is there, what is missing, how to fix it; changes nothing) and `bootstrap`
//! (MicroK8s, then MinIO and Postgres inside the cluster, idempotently).

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use aether_artifact::store::{PartialStore, Secret, Store};
use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use super::Ctx;
use crate::config::{Global, ProjectConfig};
use crate::manifests::{self, PlatformValues};
use crate::target::cluster::kube::Flavor;
use crate::target::cluster::Cluster;
use crate::target::{Kind, Target, TargetArgs};

/// MicroK8s channel bootstrap installs: native sidecars are on by default from 1.29, GA in 1.33.
pub const MICROK8S_CHANNEL: &str = "1.33/stable";
const MIN_MICROK8S: (u32, u32) = (1, 29);
const DB_USER: &str = "aether";
const DB_NAME: &str = "aether";

// --- doctor ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Missing,
    Broken,
    Skipped,
}

#[derive(Debug, serde::Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    pub fix: Option<String>,
    pub required: bool,
}

fn version_of(sh: &Shell, program: &str, args: &[&str]) -> Option<String> {
    cmd!(sh, "{program} {args...}")
        .quiet()
        .ignore_stderr()
        .read()
        .ok()
        .map(|s| s.lines().next().unwrap_or("").trim().to_string())
}

/// "MicroK8s v1.33.1 revision 7996" → (1, 33).
pub fn parse_microk8s_version(s: &str) -> Option<(u32, u32)> {
    let v = s
        .split_whitespace()
        .find(|w| w.starts_with('v'))?
        .trim_start_matches('v');
    let mut it = v.split('.');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

pub fn doctor(sh: &Shell, global: &Global, targs: &TargetArgs, json: bool) -> Result<()> {
    let t = targs.resolve(sh);
    let cluster = t != Kind::Local;
    let mut checks = Vec::new();
    let mut tool = |name: &'static str, program: &str, args: &[&str], required: bool, fix: &str| {
        let c = match version_of(sh, program, args) {
            Some(v) => Check {
                name,
                status: Status::Ok,
                detail: v,
                fix: None,
                required,
            },
            None => Check {
                name,
                status: Status::Missing,
                detail: "not found on PATH".into(),
                fix: Some(fix.into()),
                required,
            },
        };
        checks.push(c);
    };
    tool(
        "cargo",
        "cargo",
        &["--version"],
        true,
        "install Rust with rustup: https://rustup.rs",
    );
    tool(
        "rustup",
        "rustup",
        &["--version"],
        false,
        "install rustup to manage toolchains (optional)",
    );
    tool("kubectl", "kubectl", &["version", "--client"], t == Kind::Kube, "install kubectl (e.g. `sudo snap install kubectl --classic`); MicroK8s users can use `microk8s kubectl`");
    tool(
        "docker",
        "docker",
        &["--version"],
        false,
        "optional: not needed (sidecar-image writes OCI archives itself)",
    );

    // node: the local target runs the app with it.
    checks.push(match version_of(sh, "node", &["--version"]) {
        Some(v) => {
            let major = crate::target::local::node_major(&v);
            if major >= 18 {
                Check {
                    name: "node",
                    status: Status::Ok,
                    detail: v,
                    fix: None,
                    required: !cluster,
                }
            } else {
                Check {
                    name: "node",
                    status: Status::Broken,
                    detail: format!("{v} is older than 18"),
                    fix: Some("install Node.js 20 (e.g. `sudo apt-get install nodejs`)".into()),
                    required: !cluster,
                }
            }
        }
        None => Check {
            name: "node",
            status: Status::Missing,
            detail: "not found on PATH".into(),
            fix: Some("install Node.js 20 (e.g. `sudo apt-get install nodejs`)".into()),
            required: !cluster,
        },
    });

    let mk_required = t == Kind::Microk8s;
    checks.push(match version_of(sh, "microk8s", &["version"]) {
        None => Check {
            name: "microk8s",
            status: Status::Missing,
            detail: "not installed".into(),
            fix: Some(format!("sudo snap install microk8s --classic --channel={MICROK8S_CHANNEL} (or `cargo xtask bootstrap`)")),
            required: mk_required,
        },
        Some(v) => match parse_microk8s_version(&v) {
            Some(mm) if mm >= MIN_MICROK8S => Check { name: "microk8s", status: Status::Ok, detail: v, fix: None, required: mk_required },
            _ => Check {
                name: "microk8s",
                status: Status::Broken,
                detail: format!("{v}: native sidecars need 1.29 or newer"),
                fix: Some(format!("sudo snap refresh microk8s --channel={MICROK8S_CHANNEL}")),
                required: mk_required,
            },
        },
    });

    checks.push(store_check(global, t)?);
    checks.push(database_check(global)?);
    if cluster {
        checks.extend(cluster_checks(sh, global, targs, t));
    } else {
        checks.push(Check {
            name: "cluster",
            status: Status::Skipped,
            detail: "local target: no cluster needed".into(),
            fix: None,
            required: false,
        });
    }

    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| c.required && matches!(c.status, Status::Missing | Status::Broken))
        .map(|c| c.name)
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        for c in &checks {
            let status = format!("{:?}", c.status).to_lowercase();
            let req = if c.required { "" } else { " (optional)" };
            println!("{status:<8} {:<10} {}{req}", c.name, c.detail);
            if let (Some(fix), false) = (&c.fix, c.status == Status::Ok) {
                println!("{:<8} {:<10} fix: {fix}", "", "");
            }
        }
    }
    if !failed.is_empty() {
        bail!("required pieces missing or broken: {}", failed.join(", "));
    }
    Ok(())
}

fn store_check(global: &Global, t: Kind) -> Result<Check> {
    let layers = global.store_layers()?;
    if t == Kind::Local && layers.endpoint.is_none() {
        return Ok(Check {
            name: "store",
            status: Status::Ok,
            detail: "embedded S3 store (started on demand by the local target)".into(),
            fix: None,
            required: false,
        });
    }
    let layers = layers.or(PartialStore {
        endpoint: Some(crate::target::cluster::DEFAULT_HOST_ENDPOINT.into()),
        ..Default::default()
    });
    let cfg = match layers.finish() {
        Ok(c) => c,
        Err(e) => {
            return Ok(Check {
                name: "store",
                status: Status::Missing,
                detail: e,
                fix: Some("cargo xtask bootstrap".into()),
                required: t != Kind::Local,
            })
        }
    };
    let endpoint = cfg.endpoint.clone();
    let bucket = cfg.bucket.clone();
    let store = Store::with_timeout(cfg, Duration::from_secs(5))?;
    Ok(match store.bucket_exists() {
        Ok(true) => Check {
            name: "store",
            status: Status::Ok,
            detail: format!("{endpoint}, bucket {bucket} present, credentials valid"),
            fix: None,
            required: t != Kind::Local,
        },
        Ok(false) => Check {
            name: "store",
            status: Status::Broken,
            detail: format!("{endpoint}: credentials valid, bucket {bucket} missing"),
            fix: Some("`cargo xtask hot-upload` creates it (or `cargo xtask bootstrap`)".into()),
            required: t != Kind::Local,
        },
        Err(e) => Check {
            name: "store",
            status: if e.kind == aether_artifact::store::ErrorKind::Unreachable {
                Status::Missing
            } else {
                Status::Broken
            },
            detail: format!("{e}"),
            fix: Some("cargo xtask bootstrap".into()),
            required: t != Kind::Local,
        },
    })
}

/// The database as this machine reaches it: `AETHER_DATABASE_URL`, else the config file.
/// host:port of a postgres:// URL, without its credentials.
fn url_host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.split_once("://")?.1;
    let hostpart = rest.split('/').next()?;
    let hostpart = hostpart.rsplit_once('@').map_or(hostpart, |(_, h)| h);
    let (host, port) = match hostpart.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().ok()?),
        None => (hostpart.to_string(), 5432),
    };
    Some((host, port))
}

fn database_reachable(url: &Secret) -> Result<String, String> {
    use std::net::ToSocketAddrs;
    let (host, port) = url_host_port(url.expose()).ok_or("the database URL does not parse")?;
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("{host}:{port}: {e}"))?
        .next()
        .ok_or("no address")?;
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("{host}:{port}: {e}"))?;
    Ok(format!("{host}:{port} reachable"))
}

fn database_check(global: &Global) -> Result<Check> {
    Ok(match global.database_url()? {
        None => Check {
            name: "database",
            status: Status::Missing,
            detail: "no database configured".into(),
            fix: Some("cargo xtask bootstrap (or set AETHER_DATABASE_URL)".into()),
            required: false,
        },
        Some(url) => match database_reachable(&url) {
            Ok(d) => Check {
                name: "database",
                status: Status::Ok,
                detail: d,
                fix: None,
                required: false,
            },
            Err(e) => Check {
                name: "database",
                status: Status::Broken,
                detail: e,
                fix: Some("cargo xtask bootstrap (starts Postgres in the cluster)".into()),
                required: false,
            },
        },
    })
}

fn cluster_checks(sh: &Shell, global: &Global, targs: &TargetArgs, t: Kind) -> Vec<Check> {
    let c = Cluster::new(sh, global, targs, t);
    let ns = c.kube.namespace.clone();
    let mut out = Vec::new();
    match c.kube.get::<serde_json::Value>("namespace", &ns) {
        Ok(Some(_)) => out.push(Check {
            name: "cluster",
            status: Status::Ok,
            detail: format!("reachable, namespace {ns} present"),
            fix: None,
            required: true,
        }),
        Ok(None) => out.push(Check {
            name: "cluster",
            status: Status::Broken,
            detail: format!("reachable, namespace {ns} missing"),
            fix: Some("cargo xtask k8s-start".into()),
            required: true,
        }),
        Err(e) => {
            let first = format!("{e:#}")
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            out.push(Check {
                name: "cluster",
                status: Status::Missing,
                detail: first,
                fix: Some("cargo xtask k8s-start (or check your kubeconfig context)".into()),
                required: true,
            });
            return out;
        }
    }
    if c.kube.flavor == Flavor::Microk8s {
        out.push(match c.kube.images() {
            Ok(i) if i.iter().any(|x| x == manifests::FETCHER_IMAGE) => Check {
                name: "sidecar",
                status: Status::Ok,
                detail: format!("{} present", manifests::FETCHER_IMAGE),
                fix: None,
                required: false,
            },
            Ok(_) => Check {
                name: "sidecar",
                status: Status::Missing,
                detail: format!("{} not imported", manifests::FETCHER_IMAGE),
                fix: Some("cargo xtask sidecar-image (deploy-sample imports it)".into()),
                required: false,
            },
            Err(e) => Check {
                name: "sidecar",
                status: Status::Broken,
                detail: format!("{e:#}").lines().next().unwrap_or_default().into(),
                fix: None,
                required: false,
            },
        });
    }
    out
}

// --- bootstrap ------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    InstallMicrok8s,
    StartMicrok8s,
    EnableAddon(&'static str),
    CreateNamespace,
    GenerateCredentials,
    RecoverCredentials,
    DeployMinio,
    DeployPostgres,
}

impl Step {
    fn sudo(&self) -> bool {
        matches!(self, Step::InstallMicrok8s | Step::StartMicrok8s)
    }
    fn describe(&self, ns: &str) -> String {
        match self {
            Step::InstallMicrok8s => format!("install MicroK8s: sudo snap install microk8s --classic --channel={MICROK8S_CHANNEL}"),
            Step::StartMicrok8s => "start MicroK8s: sudo microk8s start, then wait until it is ready".into(),
            Step::EnableAddon(a) => format!("enable the {a} addon: microk8s enable {a}"),
            Step::CreateNamespace => format!("create namespace {ns}"),
            Step::GenerateCredentials => "generate store and database credentials (saved to .aether/config.json, mode 0600, and to Secrets; never printed)".into(),
            Step::RecoverCredentials => "read the existing credentials from the cluster's Secrets into .aether/config.json (mode 0600)".into(),
            Step::DeployMinio => format!("deploy MinIO ({}) with a 10Gi volume, NodePort {}", manifests::MINIO_IMAGE, manifests::MINIO_NODE_PORT),
            Step::DeployPostgres => format!("deploy Postgres ({}) with a 5Gi volume, NodePort {}", manifests::POSTGRES_IMAGE, manifests::POSTGRES_NODE_PORT),
        }
    }
}

/// What is there now, as far as can be seen without changing anything.
#[derive(Debug, Default)]
pub struct Probe {
    pub microk8s: Option<String>,
    pub running: bool,
    pub disabled_addons: Vec<&'static str>,
    pub namespace: bool,
    pub minio: bool,
    pub postgres: bool,
    pub credentials: bool,
}

pub fn probe(sh: &Shell, c: &Cluster, global: &Global) -> Result<Probe> {
    let mut p = Probe {
        credentials: have_credentials(global)?,
        ..Default::default()
    };
    p.microk8s = version_of(sh, "microk8s", &["version"]);
    if p.microk8s.is_none() {
        return Ok(p);
    }
    p.running = c.kube.microk8s_wait_ready(10).is_ok();
    if !p.running {
        return Ok(p);
    }
    for a in ["dns", "hostpath-storage"] {
        if !c.kube.addon_enabled(a)? {
            p.disabled_addons.push(a);
        }
    }
    let ns = c.kube.namespace.clone();
    p.namespace = c.kube.get::<serde_json::Value>("namespace", &ns)?.is_some();
    if p.namespace {
        p.minio = c
            .kube
            .get::<serde_json::Value>("deployment", "minio")?
            .is_some();
        p.postgres = c
            .kube
            .get::<serde_json::Value>("statefulset", "postgres")?
            .is_some();
    }
    Ok(p)
}

/// The config file holds store credentials and a database URL (the environment may override
/// them at use time, but a later run without it must still work).
fn have_credentials(global: &Global) -> Result<bool> {
    let cfg = ProjectConfig::load(&global.state_dir())?;
    Ok(cfg.store.access_key.is_some()
        && cfg.store.secret_key.is_some()
        && cfg.database_url.is_some())
}

pub fn plan(p: &Probe) -> Vec<Step> {
    let mut steps = Vec::new();
    if p.microk8s.is_none() {
        steps.push(Step::InstallMicrok8s);
    }
    if !p.running {
        steps.push(Step::StartMicrok8s);
    }
    // Nothing is known about addons on a cluster that is not running yet: plan both.
    let addons: Vec<&'static str> = if p.running {
        p.disabled_addons.clone()
    } else {
        vec!["dns", "hostpath-storage"]
    };
    steps.extend(addons.into_iter().map(Step::EnableAddon));
    if !p.namespace {
        steps.push(Step::CreateNamespace);
    }
    if !p.credentials {
        steps.push(if p.minio {
            Step::RecoverCredentials
        } else {
            Step::GenerateCredentials
        });
    }
    if !p.minio {
        steps.push(Step::DeployMinio);
    }
    if !p.postgres {
        steps.push(Step::DeployPostgres);
    }
    steps
}

pub fn bootstrap(
    sh: &Shell,
    global: &Global,
    targs: &TargetArgs,
    yes: bool,
    dry_run: bool,
) -> Result<()> {
    let c = Cluster::new(sh, global, targs, Kind::Microk8s);
    let ns = c.kube.namespace.clone();
    let p = probe(sh, &c, global)?;
    let steps = plan(&p);
    if steps.is_empty() {
        println!("plan: nothing to do: MicroK8s, addons, namespace {ns}, MinIO and Postgres are in place");
    } else {
        println!("plan:");
        for (i, s) in steps.iter().enumerate() {
            println!(
                "  {}. {}{}",
                i + 1,
                s.describe(&ns),
                if s.sudo() { " [sudo]" } else { "" }
            );
        }
    }
    if dry_run {
        println!("dry run: nothing was changed");
        return Ok(());
    }
    for (i, s) in steps.iter().enumerate() {
        eprintln!("step {}/{}: {}", i + 1, steps.len(), s.describe(&ns));
        if s.sudo()
            && !yes
            && !confirm(&format!(
                "this step runs sudo: {}. Go ahead?",
                s.describe(&ns)
            ))?
        {
            bail!("stopped before a sudo step; run it yourself or rerun with --yes");
        }
        run_step(sh, &c, global, s)?;
    }
    verify(&c, global)?;
    if steps.is_empty() {
        eprintln!("everything was already in place; MinIO and Postgres answer");
    } else {
        eprintln!("bootstrap done; MinIO and Postgres answer");
    }
    Ok(())
}

fn confirm(q: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    eprint!("{q} [y/N] ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

fn run_step(sh: &Shell, c: &Cluster, global: &Global, s: &Step) -> Result<()> {
    let ns = c.kube.namespace.clone();
    match s {
        Step::InstallMicrok8s => cmd!(
            sh,
            "sudo snap install microk8s --classic --channel={MICROK8S_CHANNEL}"
        )
        .run()?,
        Step::StartMicrok8s => {
            cmd!(sh, "sudo microk8s start").run()?;
            c.kube.microk8s_wait_ready(300)?;
        }
        Step::EnableAddon(a) => c.kube.enable(a)?,
        Step::CreateNamespace => {
            c.kube.apply(&manifests::render(
                "namespace",
                &serde_json::json!({ "ns": ns }),
            )?)?;
        }
        Step::GenerateCredentials => {
            let layers = global.store_layers()?;
            let mut cfg = ProjectConfig::load(&global.state_dir())?;
            // Credentials already given (environment or config) are kept; the rest is random.
            cfg.store.endpoint = cfg
                .store
                .endpoint
                .or(Some(crate::target::cluster::DEFAULT_HOST_ENDPOINT.into()));
            cfg.store.access_key = Some(
                layers
                    .access_key
                    .unwrap_or(format!("aether-{}", crate::config::random_hex(6)?)),
            );
            cfg.store.secret_key = Some(
                layers
                    .secret_key
                    .unwrap_or(Secret::new(crate::config::random_hex(24)?)),
            );
            if let Some(url) = std::env::var("AETHER_DATABASE_URL")
                .ok()
                .filter(|u| !u.is_empty())
            {
                cfg.database_url = Some(Secret::new(url));
            }
            if cfg.database_url.is_none() {
                let pw = crate::config::random_hex(18)?;
                cfg.database_url = Some(Secret::new(format!(
                    "postgres://{DB_USER}:{pw}@127.0.0.1:{}/{DB_NAME}",
                    manifests::POSTGRES_NODE_PORT
                )));
            }
            cfg.save(&global.state_dir())?;
        }
        Step::RecoverCredentials => {
            let secret: k8s_openapi::api::core::v1::Secret =
                c.kube.get("secret", "aether-minio")?.context(
                    "Secret aether-minio is gone; delete the minio Deployment and rerun bootstrap",
                )?;
            let data = secret.data.unwrap_or_default();
            let get = |k: &str| {
                data.get(k)
                    .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                    .with_context(|| format!("Secret aether-minio lacks {k}"))
            };
            let mut cfg = ProjectConfig::load(&global.state_dir())?;
            cfg.store.endpoint = cfg
                .store
                .endpoint
                .or(Some(crate::target::cluster::DEFAULT_HOST_ENDPOINT.into()));
            cfg.store.access_key = Some(get("MINIO_ROOT_USER")?);
            cfg.store.secret_key = Some(Secret::new(get("MINIO_ROOT_PASSWORD")?));
            if let Some(pg) = c
                .kube
                .get::<k8s_openapi::api::core::v1::Secret>("secret", "aether-postgres")?
            {
                if let Some(pw) = pg.data.unwrap_or_default().get("POSTGRES_PASSWORD") {
                    let pw = String::from_utf8_lossy(&pw.0).into_owned();
                    cfg.database_url = Some(Secret::new(format!(
                        "postgres://{DB_USER}:{pw}@127.0.0.1:{}/{DB_NAME}",
                        manifests::POSTGRES_NODE_PORT
                    )));
                }
            }
            cfg.save(&global.state_dir())?;
        }
        Step::DeployMinio | Step::DeployPostgres => {
            let v = platform_values(c, global)?;
            let name = if *s == Step::DeployMinio {
                "minio"
            } else {
                "postgres"
            };
            c.kube.apply(&manifests::render(name, &v)?)?;
        }
    }
    Ok(())
}

/// Check every prerequisite and service; print what is missing and the command that fixes it.
#[derive(clap::Args)]
pub struct Doctor {
    #[arg(long)]
    json: bool,
}

impl Doctor {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        doctor(ctx.sh, &ctx.global, &ctx.target, self.json)
    }
}

/// Install or start what is missing: MicroK8s, its addons, the namespace, MinIO and Postgres.
#[derive(clap::Args)]
pub struct Bootstrap {
    /// Do not ask before steps that run sudo.
    #[arg(long)]
    yes: bool,
    /// Print the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
}

impl Bootstrap {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        bootstrap(ctx.sh, &ctx.global, &ctx.target, self.yes, self.dry_run)
    }
}

/// The MinIO and Postgres objects as `bootstrap` applies them, credentials as placeholders.
pub fn render(ns: &str) -> Result<String> {
    let v = PlatformValues {
        ns: ns.into(),
        storage_class: manifests::STORAGE_CLASS.into(),
        minio_image: manifests::MINIO_IMAGE.into(),
        minio_node_port: manifests::MINIO_NODE_PORT,
        access_key: "REPLACE_ME".into(),
        secret_key: "REPLACE_ME".into(),
        postgres_image: manifests::POSTGRES_IMAGE.into(),
        postgres_node_port: manifests::POSTGRES_NODE_PORT,
        db_user: DB_USER.into(),
        db_password: "REPLACE_ME".into(),
        db_name: DB_NAME.into(),
        cluster_database_url: format!(
            "postgres://{DB_USER}:REPLACE_ME@postgres.{ns}.svc.cluster.local:5432/{DB_NAME}"
        ),
    };
    let mut out = String::new();
    for name in ["minio", "postgres"] {
        out.push_str("---\n");
        out.push_str(&manifests::render(name, &v)?);
    }
    Ok(out)
}

fn platform_values(c: &Cluster, global: &Global) -> Result<PlatformValues> {
    let store = global.store_layers()?;
    let (Some(ak), Some(sk)) = (store.access_key, store.secret_key) else {
        bail!("no store credentials: the credentials step did not run")
    };
    let db = global
        .database_url()?
        .context("no database URL: the credentials step did not run")?;
    let pw = db
        .expose()
        .split_once("://")
        .and_then(|(_, r)| r.split_once('@'))
        .and_then(|(up, _)| up.split_once(':'))
        .map(|(_, p)| p.to_string())
        .context("the database URL has no password")?;
    let ns = c.kube.namespace.clone();
    Ok(PlatformValues {
        cluster_database_url: format!(
            "postgres://{DB_USER}:{pw}@postgres.{ns}.svc.cluster.local:5432/{DB_NAME}"
        ),
        ns,
        storage_class: manifests::STORAGE_CLASS.into(),
        minio_image: manifests::MINIO_IMAGE.into(),
        minio_node_port: manifests::MINIO_NODE_PORT,
        access_key: ak,
        secret_key: sk.expose().into(),
        postgres_image: manifests::POSTGRES_IMAGE.into(),
        postgres_node_port: manifests::POSTGRES_NODE_PORT,
        db_user: DB_USER.into(),
        db_password: pw,
        db_name: DB_NAME.into(),
    })
}

/// Both services answer: the rollouts are complete, the store accepts our credentials (the
/// bucket is created), the database accepts connections.
fn verify(c: &Cluster, global: &Global) -> Result<()> {
    c.kube.rollout_status("deployment/minio", 300)?;
    c.kube.rollout_status("statefulset/postgres", 300)?;
    let store = c.store()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        match store.ensure_bucket() {
            Ok(_) => break,
            Err(e)
                if std::time::Instant::now() < deadline
                    && e.kind == aether_artifact::store::ErrorKind::Unreachable =>
            {
                std::thread::sleep(Duration::from_secs(2))
            }
            Err(e) => return Err(e.into()),
        }
    }
    let db = global
        .database_url()?
        .context("no database URL configured")?;
    loop {
        match database_reachable(&db) {
            Ok(_) => break,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_secs(2))
            }
            Err(e) => bail!("Postgres does not answer: {e}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microk8s_versions() {
        assert_eq!(
            parse_microk8s_version("MicroK8s v1.33.1 revision 7996"),
            Some((1, 33))
        );
        assert_eq!(
            parse_microk8s_version("MicroK8s v1.28.15 revision 7001"),
            Some((1, 28))
        );
        assert!(parse_microk8s_version("MicroK8s v1.28.15") < Some(MIN_MICROK8S));
        assert_eq!(parse_microk8s_version("garbage"), None);
    }

    #[test]
    fn database_urls() {
        assert_eq!(
            url_host_port("postgres://u:p@127.0.0.1:30432/db"),
            Some(("127.0.0.1".into(), 30432))
        );
        assert_eq!(
            url_host_port("postgres://db.example/x"),
            Some(("db.example".into(), 5432))
        );
        assert_eq!(
            url_host_port("postgres://u:p:w@h:1/x"),
            Some(("h".into(), 1))
        );
    }

    #[test]
    fn plans() {
        let nothing = Probe::default();
        assert_eq!(
            plan(&nothing),
            [
                Step::InstallMicrok8s,
                Step::StartMicrok8s,
                Step::EnableAddon("dns"),
                Step::EnableAddon("hostpath-storage"),
                Step::CreateNamespace,
                Step::GenerateCredentials,
                Step::DeployMinio,
                Step::DeployPostgres
            ]
        );
        let up = Probe {
            microk8s: Some("v1.33".into()),
            running: true,
            namespace: true,
            minio: true,
            postgres: true,
            credentials: true,
            ..Default::default()
        };
        assert!(plan(&up).is_empty());
        let lost_config = Probe {
            credentials: false,
            ..up
        };
        assert_eq!(plan(&lost_config), [Step::RecoverCredentials]);
    }
}
