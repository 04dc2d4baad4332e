//! Helpers shared by the xtask's integration tests: run the real binary with an isolated
//! project directory and store settings in its environment (never on its command line).
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const AK: &str = "xtask-test-access";
pub const SK: &str = "xtask-test-secret-never-printed";

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
    pub fn last(&self, key: &str) -> String {
        let prefix = format!("{key}=");
        self.stdout
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {key}= in {}", self.stdout))
            .to_string()
    }
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

pub fn xtask(project: &Path, envs: &[(&str, &str)], args: &[&str]) -> Run {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.args(args)
        .env("AETHER_PROJECT_DIR", project)
        .env_remove("AETHER_S3_ENDPOINT")
        .env_remove("AETHER_TARGET")
        // Tests run in parallel: never compete for port 3000.
        .env("AETHER_APP_PORT", "0");
    for (k, v) in envs {
        c.env(k, v);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = c.output().unwrap();
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into(),
        stderr: String::from_utf8_lossy(&stderr).into(),
    }
}

pub fn store_env(endpoint: &str, secret: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AETHER_S3_ENDPOINT", endpoint.to_string()),
        ("AETHER_S3_ACCESS_KEY", AK.to_string()),
        ("AETHER_S3_SECRET_KEY", secret.to_string()),
        ("AETHER_S3_BUCKET", "xtask-test".to_string()),
    ]
}

pub fn as_refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

pub fn app_dir(root: &Path, body: &str) -> PathBuf {
    let d = root.join("app");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("server.js"), body).unwrap();
    d
}

pub struct Shim {
    _t: tempfile::TempDir,
    pub dir: PathBuf,
    pub bin: PathBuf,
}

impl Shim {
    pub fn new() -> Shim {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("state");
        let bin = t.path().join("bin");
        fs::create_dir_all(&dir).unwrap();
        fs::create_dir_all(&bin).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/shim/kubectl");
        for name in ["kubectl", "microk8s"] {
            fs::copy(&script, bin.join(name)).unwrap();
        }
        fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pods.json"),
            dir.join("pods.json"),
        )
        .unwrap();
        fs::write(dir.join("service.json"), SERVICE).unwrap();
        fs::write(
            dir.join("namespace-aether-system.json"),
            r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"aether-system"}}"#,
        )
        .unwrap();
        fs::write(
            dir.join("images.txt"),
            "docker.io/aether/fetcher:0.1.0\ndocker.io/library/node:20-alpine\n",
        )
        .unwrap();
        Shim { _t: t, dir, bin }
    }
    pub fn configmap(&self, digest: &str, generation: u64, history: &[&str]) {
        let v = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "demo-release", "namespace": "aether-system", "resourceVersion": "4711", "labels": {"aether.dev/app": "demo"}},
            "data": {"digest": digest, "generation": generation.to_string(), "history": history.join("\n")}
        });
        fs::write(self.dir.join("configmap.json"), v.to_string()).unwrap();
    }
    pub fn calls(&self) -> Vec<String> {
        fs::read_to_string(self.dir.join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
    pub fn stdins(&self) -> Vec<String> {
        let mut v: Vec<_> = fs::read_dir(&self.dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("stdin-"))
            .map(|e| e.path())
            .collect();
        v.sort();
        v.iter().map(|p| fs::read_to_string(p).unwrap()).collect()
    }
    pub fn run(&self, project: &Path, env: &[(&'static str, String)], args: &[&str]) -> Run {
        let path = format!("{}:{}", self.bin.display(), std::env::var("PATH").unwrap());
        let mut full = vec!["--target", "microk8s"];
        full.extend_from_slice(args);
        self.run_path(project, env, &path, &full)
    }
    /// With an explicit PATH (the shim's bin directory is not added).
    pub fn run_path(
        &self,
        project: &Path,
        env: &[(&'static str, String)],
        path: &str,
        args: &[&str],
    ) -> Run {
        let dir = self.dir.display().to_string();
        let mut e = as_refs(env);
        e.push(("PATH", path));
        e.push(("SHIM_DIR", &dir));
        xtask(project, &e, args)
    }
}

pub const SERVICE: &str = r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"demo","namespace":"aether-system"},"spec":{"type":"NodePort","clusterIP":"10.152.183.20","selector":{"aether.dev/app":"demo"},"ports":[{"name":"http","port":80,"protocol":"TCP","targetPort":"http","nodePort":31234}]}}"#;

// The one skip rule, the one wait and the rest every suite shares.
#[allow(unused_imports)]
pub use aether_testkit::{node_available, skip, wait_for, wait_until, PATIENCE};

/// Every file under `dir`, recursively (e.g. the objects on an S3 server's disk).
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The body at `url` (empty when it does not answer within 10 s).
pub fn get(url: &str) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", url])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stops an app's local pod even when an assertion fails half-way.
pub struct DownApp<'a>(pub &'a Path, pub &'a str);
impl Drop for DownApp<'_> {
    fn drop(&mut self) {
        xtask(self.0, &[("AETHER_TARGET", "local")], &["down", self.1]);
    }
}

/// Runs npm in `dir`, failing the test with its stderr.
pub fn npm(dir: &Path, args: &[&str]) {
    let out = Command::new("npm")
        .args(args)
        .args(["--no-audit", "--no-fund"])
        .current_dir(dir)
        .output()
        .expect("running npm");
    assert!(
        out.status.success(),
        "npm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn npm_available() -> bool {
    Command::new("npm")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `package <dir> -o <out>` through the real binary.
pub fn package_to(project: &Path, dir: &Path, out: &Path) -> Run {
    xtask(
        project,
        &[],
        &[
            "package",
            dir.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
    )
}

/// A store client from `AETHER_S3_*` values as `get` finds them (a pod's Secret, a process's
/// environment).
#[allow(dead_code)]
pub fn store_from(get: impl Fn(&str) -> Option<String>) -> aether_artifact::store::Store {
    aether_artifact::store::Store::new(
        aether_artifact::store::PartialStore::from_lookup(get)
            .finish()
            .unwrap(),
    )
    .unwrap()
}
