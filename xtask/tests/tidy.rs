//! The project's own rules, checked on its source (as rust-analyzer's `tidy.rs` does):
//! - every name shared by the xtask, the fetcher and the templates has one home, the
//!   `aether-artifact` crate; no other source file or template spells one;
//! - the xtask's modules form no import cycle (a module may use its own submodules);
//! - tests wait on conditions, never on the clock: a sleep or timed receive in a test is either
//!   a request loop's pace (`// pace:`) or a window that observes an absence (`// window:`),
//!   said on its line; everything else waits through `aether-testkit`;
//! - one rule for "this is CI", in `aether-testkit` (and the one line the xtask needs for
//!   progress output): no test reads `CI` itself;
//! - the xtask's layers point down: a command (`cli/x`) imports no other command, workflows
//!   (`ops/`) import no command, targets (`targets/`) neither, and the foundation at the crate
//!   root (config, manifests, release, keys, …) none of the three;
//! - only `targets/cluster/kube/` runs `kubectl` or `microk8s` (the bench and the test runner,
//!   which drive a cluster the way a user does, excepted);
//! - no two source files share a name, and none has more than 500 lines before its tests.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use aether_artifact::store::{
    ENV_ACCESS_KEY, ENV_BUCKET, ENV_ENDPOINT, ENV_REGION, ENV_SECRET_KEY,
};
use aether_artifact::{keys, release, volume, FetcherEnv as E};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p, ext));
        } else if p.extension().is_some_and(|x| x == ext) {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Every contract string, from the crate that owns it.
fn contract_strings() -> Vec<String> {
    let mut v: Vec<String> = [
        E::ROOT,
        E::ANNOTATIONS_FILE,
        E::RELEASE_DIR,
        E::APP,
        E::PERIOD,
        E::TIMEOUT,
        E::MAX_BACKOFF,
        E::KEEP,
        E::GC_GRACE,
        E::MAX_FAILURES,
        E::ONE_TIME,
        E::HTTP_BIND,
        E::MAX_BYTES,
        E::MAX_ENTRIES,
        E::INSTALL_RUNNER,
        E::RUN_GRACE,
        E::RUN_STATUS,
        E::RUN_LISTEN,
        E::RUN_WATCH,
        E::RUN_STATUS_FILE,
        E::RUN_START_TIMEOUT,
        E::RUN_DRAIN,
        E::RUN_WARM,
        E::RUN_ENTRY_FROM,
        E::DEFAULT_RUN_DIR,
        E::DEFAULT_RUN_STATUS,
        E::DEFAULT_ROOT,
        E::DEFAULT_ANNOTATIONS_DIR,
        E::DEFAULT_ANNOTATIONS_FILE,
        E::DEFAULT_RELEASE_DIR,
        E::BIN_IN_IMAGE,
        E::PUBLIC_KEY,
        E::REQUIRE_SIGNATURES,
        E::APP_READY_PATH,
        ENV_ENDPOINT,
        ENV_REGION,
        ENV_BUCKET,
        ENV_ACCESS_KEY,
        ENV_SECRET_KEY,
        keys::APP,
        keys::DIGEST,
        keys::GENERATION,
        keys::FETCH_INTERVAL,
        keys::STAGE,
        keys::ACTIVATE_AT,
        volume::STATE_FILE,
        volume::RELOAD_TRIGGER,
        volume::RUNNER,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // The ConfigMap's name rule, e.g. "-release".
    v.push(release::configmap_name(""));
    v
}

/// Code without comments: a comment may explain a contract, only code must not restate it.
fn code_lines(text: &str, comment: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let code = l.split(comment).next().unwrap_or("");
            (!code.trim().is_empty()).then(|| (i + 1, code.to_string()))
        })
        .collect()
}

#[test]
fn contracts_have_one_home() {
    let root = root();
    let needles = contract_strings();
    let mut bad = Vec::new();
    let mut sources: Vec<PathBuf> = files(&root.join("xtask/src"), "rs");
    sources.extend(files(&root.join("sidecar/src"), "rs"));
    for f in &sources {
        let text = fs::read_to_string(f).unwrap();
        // Unit tests may spell the values they check (a test module of its own file says
        // `#![cfg(test)]`).
        let text = test_free(&text);
        for (n, line) in code_lines(text, "//") {
            for needle in &needles {
                // A Rust string literal that is the contract string, a path below it, or (for a
                // suffix such as "-release") ends with it.
                if line.contains(&format!("\"{needle}\""))
                    || line.contains(&format!("\"{needle}/"))
                    || (needle.starts_with('-') && line.contains(&format!("{needle}\"")))
                {
                    bad.push(format!(
                        "{}:{n}: restates {needle:?}: {}",
                        f.display(),
                        line.trim()
                    ));
                }
            }
        }
    }
    // The release keys are common words; in the xtask they must come from the contract too.
    for f in files(&root.join("xtask/src"), "rs") {
        let text = fs::read_to_string(&f).unwrap();
        let text = test_free(&text);
        for (n, line) in code_lines(text, "//") {
            for k in release::KEYS {
                if line.contains(&format!(".get(\"{k}\")"))
                    || line.contains(&format!("\"{k}\".into()"))
                {
                    bad.push(format!("{}:{n}: spells the release key {k:?}", f.display()));
                }
            }
        }
    }
    for f in files(&root.join("manifests"), "j2") {
        let text = fs::read_to_string(&f).unwrap();
        for (n, line) in code_lines(&text, "#") {
            for needle in &needles {
                if line.contains(needle.as_str()) {
                    bad.push(format!(
                        "{}:{n}: restates {needle:?}: {}",
                        f.display(),
                        line.trim()
                    ));
                }
            }
            for k in release::KEYS {
                if line.trim_start().starts_with(&format!("{k}:")) {
                    bad.push(format!("{}:{n}: spells the release key {k:?}", f.display()));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "take these from aether_artifact (contract, keys, volume, store) instead:\n{}",
        bad.join("\n")
    );
}

/// The module a file under `xtask/src` is: `cli/hot.rs` → `cli::hot`, `targets/mod.rs` →
/// `targets`, `main.rs` → the crate root (empty).
fn module_of(src: &Path, f: &Path) -> String {
    let rel = f.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "main") {
        parts.pop();
    }
    parts.join("::")
}

/// Module paths a file refers to (`crate::a::b`, `super::c`), cut to the longest known module.
fn references(module: &str, text: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
    let mut out = BTreeSet::new();
    let text = text.split("#[cfg(test)]").next().unwrap();
    for (prefix, base) in [("crate::", ""), ("super::", parent)] {
        for (i, _) in text.match_indices(prefix) {
            let rest = &text[i + prefix.len()..];
            let path: Vec<&str> = rest
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .next()
                .unwrap_or("")
                .split("::")
                .filter(|s| !s.is_empty())
                .collect();
            // `use crate::{a, b}` lists siblings in braces.
            let groups: Vec<Vec<&str>> = if rest.starts_with('{') {
                rest[1..rest.find('}').unwrap_or(1)]
                    .split(',')
                    .map(|s| s.trim().split("::").collect())
                    .collect()
            } else {
                vec![path]
            };
            for g in groups {
                let mut best = (!base.is_empty()).then(|| base.to_string());
                for n in 1..=g.len() {
                    let cand = std::iter::once(base)
                        .chain(g[..n].iter().copied())
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                        .join("::");
                    if known.contains(&cand) {
                        best = Some(cand);
                    }
                }
                if let Some(b) = best {
                    out.insert(b);
                }
            }
        }
    }
    out
}

#[test]
fn xtask_modules_form_no_cycle() {
    let src = root().join("xtask/src");
    let fs_files = files(&src, "rs");
    let known: BTreeSet<String> = fs_files.iter().map(|f| module_of(&src, f)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &fs_files {
        let m = module_of(&src, f);
        if m.is_empty() {
            continue; // the crate root declares every module
        }
        let text = fs::read_to_string(f).unwrap();
        let refs = references(&m, &text, &known)
            .into_iter()
            // Itself, its own submodules and the crate root are not dependencies.
            .filter(|r| !r.is_empty() && r != &m && !r.starts_with(&format!("{m}::")))
            .collect();
        edges.insert(m, refs);
    }
    // Sanity: the parser sees the real structure.
    assert!(
        edges["cli::hot"].contains("targets"),
        "{:?}",
        edges["cli::hot"]
    );
    assert!(edges["cli::hot"].contains("cli"), "{:?}", edges["cli::hot"]);

    // Depth-first search for a back edge; report the cycle.
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut c = stack[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, edges, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for n in edges.keys() {
        if let Some(cycle) = visit(n, &edges, &mut Vec::new(), &mut done) {
            panic!(
                "import cycle in xtask/src: {}\nedges: {edges:#?}",
                cycle.join(" -> ")
            );
        }
    }
}

/// Every test source of the workspace: integration tests and the test-support crate.
fn test_sources() -> Vec<PathBuf> {
    let root = root();
    let mut v = Vec::new();
    for d in [
        "xtask/tests",
        "sidecar/tests",
        "crates/artifact/tests",
        "crates/s3local/tests",
    ] {
        if root.join(d).is_dir() {
            v.extend(files(&root.join(d), "rs"));
        }
    }
    v
}

#[test]
fn tests_wait_on_conditions_not_on_the_clock() {
    let mut bad = Vec::new();
    // This file names the patterns it looks for.
    for f in test_sources()
        .into_iter()
        .filter(|f| !f.ends_with("tidy.rs"))
    {
        let text = fs::read_to_string(&f).unwrap();
        for (i, line) in text.lines().enumerate() {
            let timed = line.contains("sleep(") || line.contains("recv_timeout(");
            // The named patience of a wait is a deadline, not an order.
            let deadline = line.contains("recv_timeout(PATIENCE");
            let said = line.contains("// pace:") || line.contains("// window:");
            if timed && !deadline && !said && !line.trim_start().starts_with("//") {
                bad.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "a sleep orders nothing on a busy machine: wait for the condition with \
         aether_testkit::wait_until, or mark a request pace (`// pace:`) or an absence window \
         (`// window:`):\n{}",
        bad.join("\n")
    );
}

#[test]
fn one_rule_says_what_ci_is() {
    let mut bad = Vec::new();
    let mut sources: Vec<PathBuf> = test_sources()
        .into_iter()
        .filter(|f| !f.ends_with("tidy.rs"))
        .collect();
    sources.extend(files(&root().join("xtask/src"), "rs"));
    sources.extend(files(&root().join("sidecar/src"), "rs"));
    for f in sources {
        let text = fs::read_to_string(&f).unwrap();
        for (n, line) in code_lines(&text, "//") {
            // Setting CI for a child (the CI examples, the progress test) is not reading it.
            let reads = line.contains("var(\"CI\")") || line.contains("var_os(\"CI\")");
            let progress = f.ends_with("xtask/src/ops/packing.rs");
            if reads && !progress {
                bad.push(format!("{}:{n}: {}", f.display(), line.trim()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "read CI through aether_testkit::in_ci (skip, require), the one rule:\n{}",
        bad.join("\n")
    );
}

/// Every module of the xtask and the modules it refers to (itself and its submodules aside).
fn xtask_edges() -> BTreeMap<String, BTreeSet<String>> {
    let src = root().join("xtask/src");
    let fs_files = files(&src, "rs");
    let known: BTreeSet<String> = fs_files.iter().map(|f| module_of(&src, f)).collect();
    fs_files
        .iter()
        .map(|f| (module_of(&src, f), fs::read_to_string(f).unwrap()))
        .filter(|(m, _)| !m.is_empty())
        .map(|(m, text)| {
            let refs = references(&m, &text, &known)
                .into_iter()
                .filter(|r| !r.is_empty() && r != &m && !r.starts_with(&format!("{m}::")))
                .collect();
            (m, refs)
        })
        .collect()
}

#[test]
fn the_layers_point_down() {
    let layer = |m: &str| m.split("::").next().unwrap_or("").to_string();
    let mut bad = Vec::new();
    for (m, refs) in xtask_edges() {
        for r in refs {
            let (lm, lr) = (layer(&m), layer(&r));
            let wrong = match lm.as_str() {
                // A command may use the CLI's root (`Ctx`) and its own submodules only.
                "cli" => {
                    let own = m.split("::").nth(1).unwrap_or("");
                    lr == "cli" && r != "cli" && r.split("::").nth(1) != Some(own)
                }
                "ops" => lr == "cli",
                "targets" => lr == "cli" || lr == "ops",
                _ => ["cli", "ops", "targets"].contains(&lr.as_str()),
            };
            if wrong {
                bad.push(format!("{m} uses {r}"));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "a layer imports one above it or a sibling command: move the shared part down (a \
         workflow into ops/, a model into the crate root):\n{}",
        bad.join("\n")
    );
}

#[test]
fn only_kube_runs_kubectl_or_microk8s() {
    let src = root().join("xtask/src");
    let mut bad = Vec::new();
    for f in files(&src, "rs") {
        let rel = f.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
        // The transport itself; the bench measures kubectl's own cost and the test runner
        // checks a cluster answers, both as a user's shell would.
        if rel.starts_with("targets/cluster/kube/")
            || rel.starts_with("cli/bench/")
            || rel == "cli/test.rs"
        {
            continue;
        }
        let text = fs::read_to_string(&f).unwrap();
        let text = text.split("#[cfg(test)]").next().unwrap();
        for (n, line) in code_lines(text, "//") {
            // An xshell command line whose program (after any `sudo`) is one of them.
            let program = line
                .split_once("cmd!(")
                .and_then(|(_, rest)| rest.split_once('"'))
                .map(|(_, lit)| {
                    lit.trim_start_matches("sudo ")
                        .split(' ')
                        .next()
                        .unwrap_or("")
                });
            let spawns = matches!(program, Some("kubectl" | "microk8s" | "snap"))
                || line.contains("Command::new(\"kubectl\")")
                || line.contains("Command::new(\"microk8s\")");
            if spawns {
                bad.push(format!("{rel}:{n}: {}", line.trim()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "run kubectl and microk8s through targets::cluster::kube (Kube, kube::host):\n{}",
        bad.join("\n")
    );
}

#[test]
fn source_files_have_one_name_and_one_screenful_of_jobs() {
    let mut names: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut long = Vec::new();
    for dir in [
        "xtask/src",
        "sidecar/src",
        "crates/artifact/src",
        "crates/s3local/src",
        "crates/testkit/src",
    ] {
        let base = root().join(dir);
        for f in files(&base, "rs") {
            let rel = f
                .strip_prefix(root())
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            if dir == "xtask/src" && !["mod.rs", "main.rs", "lib.rs"].contains(&name.as_str()) {
                names.entry(name).or_default().push(rel.clone());
            }
            let text = fs::read_to_string(&f).unwrap();
            let before_tests = text.split("#[cfg(test)]").next().unwrap().lines().count();
            if before_tests > 500 {
                long.push(format!("{rel}: {before_tests} lines before its tests"));
            }
        }
    }
    let dups: Vec<String> = names
        .into_iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(n, v)| format!("{n}: {}", v.join(", ")))
        .collect();
    assert!(
        dups.is_empty(),
        "one name, one file (name them by their job):\n{}",
        dups.join("\n")
    );
    assert!(long.is_empty(), "split these by job:\n{}", long.join("\n"));
}

/// A source file without its unit tests: the text before `#[cfg(test)]`, nothing of a file
/// that is a test module itself (`#![cfg(test)]`).
fn test_free(text: &str) -> &str {
    if text.contains("#![cfg(test)]") {
        return "";
    }
    text.split("#[cfg(test)]").next().unwrap()
}
