//! The CI examples in `examples/ci/` are run here as the CI systems run them: each `run:` step
//! of the GitHub workflow and each `script:` line of the GitLab job, in order, with `bash -eo
//! pipefail`, with the job's variables, in a checkout-like project directory. Only two things
//! differ: `AETHER_TARGET` is `local` (the tests have no cluster), and `cargo xtask` is this
//! build of the xtask (a `cargo` shim first on PATH).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

fn yaml(name: &str) -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/ci")
        .join(name);
    serde_norway::from_str(&fs::read_to_string(&p).unwrap()).unwrap()
}

/// Runs `scripts` one after the other like a CI runner; fails naming the step.
fn run_steps(project: &Path, env: &BTreeMap<String, String>, scripts: &[String]) {
    let bin = project.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let shim = bin.join("cargo");
    fs::write(
        &shim,
        format!(
            "#!/bin/sh\nif [ \"$1\" = xtask ]; then shift; exec '{}' \"$@\"; fi\necho 'only cargo xtask is expected here' >&2; exit 2\n",
            env!("CARGO_BIN_EXE_xtask")
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(&shim, fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    for s in scripts {
        let o = Command::new("bash")
            .args(["-eo", "pipefail", "-c", s])
            .current_dir(project)
            .env_clear()
            .env("PATH", &path)
            .env("HOME", project)
            .env("AETHER_PROJECT_DIR", project)
            .env("AETHER_APP_PORT", "0")
            .env("CI", "true")
            .envs(env)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "step failed:\n{s}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// The job's variables as the CI system would set them: `${{ secrets.X }}` from `secrets`
/// (empty when absent, as GitHub does).
fn job_env(vars: &serde_json::Value, secrets: &BTreeMap<&str, String>) -> BTreeMap<String, String> {
    vars.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let v = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            let v = match v
                .strip_prefix("${{ secrets.")
                .and_then(|r| r.strip_suffix(" }}"))
            {
                Some(name) => secrets.get(name).cloned().unwrap_or_default(),
                None => v,
            };
            (k.clone(), v)
        })
        .collect()
}

fn bump(project: &Path, to: &str) {
    let js = project.join("examples/sample-node/server.js");
    let s = fs::read_to_string(&js).unwrap();
    let at = s.find("const VERSION = '").unwrap() + "const VERSION = '".len();
    let end = at + s[at..].find('\'').unwrap();
    fs::write(&js, format!("{}{to}{}", &s[..at], &s[end..])).unwrap();
}

#[test]
fn the_ci_examples_run_as_written() {
    if !node_available() {
        return skip("node is not installed");
    }
    if Command::new("jq").arg("--version").output().is_err() {
        return skip("jq is not installed");
    }
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    let local = [("AETHER_TARGET", "local")];
    struct Down<'a>(&'a Path);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            xtask(self.0, &[("AETHER_TARGET", "local")], &["down", "myapp"]);
        }
    }
    let _down = Down(p);
    let keys: serde_json::Value =
        serde_json::from_str(&xtask(p, &[], &["keygen", "--json"]).ok().stdout).unwrap();
    let sk = keys["secret_key_file"].as_str().unwrap().to_string();
    // The app already runs (the job patches it); this also writes examples/sample-node.
    xtask(p, &local, &["deploy-sample", "myapp"]).ok();

    let secrets: BTreeMap<&str, String> = [("AETHER_SIGNING_KEY", sk.clone())].into();

    let gh = yaml("github-actions.yml");
    let job = &gh["jobs"]["hot-patch"];
    let mut env = job_env(&job["env"], &secrets);
    assert_eq!(
        env["AETHER_TARGET"], "kube",
        "the example targets a cluster"
    );
    env.insert("AETHER_TARGET".into(), "local".into());
    env.insert(
        "RUNNER_TEMP".into(),
        p.join("runner-tmp").display().to_string(),
    );
    env.insert(
        "GITHUB_ENV".into(),
        p.join("github-env").display().to_string(),
    );
    fs::create_dir_all(p.join("runner-tmp")).unwrap();
    let steps: Vec<String> = job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["run"].as_str().map(str::to_string))
        .collect();
    assert!(steps.len() >= 4, "{steps:?}");
    bump(p, "gh");
    run_steps(p, &env, &steps);
    let patch: serde_json::Value =
        serde_json::from_slice(&fs::read(p.join("patch.json")).unwrap()).unwrap();
    assert_eq!(patch["changed"], true);
    assert_eq!(patch["generation"], 2);

    let gl = yaml("gitlab-ci.yml");
    let job = &gl["hot-patch"];
    let mut env = job_env(&job["variables"], &secrets);
    env.insert("AETHER_TARGET".into(), "local".into());
    // A GitLab File variable: the variable holds the file's path.
    env.insert("AETHER_SIGNING_KEY".into(), sk.clone());
    let lines: Vec<String> = ["before_script", "script"]
        .iter()
        .flat_map(|k| job[*k].as_array().unwrap().iter())
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    bump(p, "gl");
    run_steps(p, &env, &lines);
    let patch: serde_json::Value =
        serde_json::from_slice(&fs::read(p.join("patch.json")).unwrap()).unwrap();
    assert_eq!(
        (patch["changed"].as_bool(), patch["generation"].as_u64()),
        (Some(true), Some(3))
    );
}
