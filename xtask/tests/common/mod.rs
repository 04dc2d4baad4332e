//! Helpers shared by the xtask's integration tests: run the real binary with an isolated
//! project directory and store settings in its environment (never on its command line).
#![allow(dead_code)]

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
