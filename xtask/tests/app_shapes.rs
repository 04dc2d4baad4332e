//! Node.js apps as people write them (issue 24), on the local target with the real fetcher,
//! `aether-run` and `node`: each committed example deploys, swaps an edit with no failed
//! request, and shows in `hot-status`; what cannot run is refused before anything is uploaded.

mod common;
use common::*;

use std::fs;
use std::path::{Path, PathBuf};

/// A copy of `examples/<name>` (without its `node_modules`) in `root`.
fn example(root: &Path, name: &str) -> PathBuf {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name);
    let to = root.join(name);
    for f in walk(&from) {
        let rel = f.strip_prefix(&from).unwrap();
        if rel.starts_with("node_modules") {
            continue;
        }
        fs::create_dir_all(to.join(rel).parent().unwrap()).unwrap();
        fs::copy(&f, to.join(rel)).unwrap();
    }
    to
}

/// Deploys `dir` as `app`, checks the first answer, makes `edit` to `file`, swaps it in with
/// `hot-patch --wait` and checks the answer (`then`) and that no request failed during the
/// switch.
fn deploy_and_swap(
    p: &Path,
    app: &str,
    dir: &Path,
    first: &str,
    file: &str,
    edit: (&str, &str),
    then: &str,
) -> common::Run {
    let env = [("AETHER_TARGET", "local")];
    let dir_s = dir.to_str().unwrap();
    let d = xtask(p, &env, &["deploy-sample", app, dir_s]).ok();
    let url = d.last("url");
    assert!(get(&url).contains(first), "{}: {}", get(&url), d.all());
    let path = dir.join(file);
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains(edit.0), "{file} has no {:?}", edit.0);
    fs::write(&path, text.replace(edit.0, edit.1)).unwrap();
    let v2 = xtask(p, &env, &["hot-upload", app, dir_s])
        .ok()
        .last("digest");
    let r = xtask(p, &env, &["hot-patch", app, &v2, "--wait", "30", "--json"]).ok();
    let out: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(out["trace"]["failed_requests"], 0, "{out}");
    assert!(get(&url).contains(then), "{}", get(&url));
    let st: serde_json::Value =
        serde_json::from_str(&xtask(p, &env, &["hot-status", app, "--json"]).ok().stdout).unwrap();
    assert_eq!(st["pods"][0]["runner"]["digest"], v2.as_str(), "{st}");
    d
}

/// `tsx watch src/server.ts` runs as `node --import tsx src/server.ts`: TypeScript with an
/// import of another `.ts` file, no build step; an edit to the imported file swaps in.
#[test]
fn a_typescript_app_started_by_tsx() {
    if !node_available() || !npm_available() {
        return skip("node and npm are not installed");
    }
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    let dir = example(p, "typescript");
    npm(&dir, &["ci"]);
    let _down = DownApp(p, "ts");
    let pack = xtask(p, &[], &["package", dir.to_str().unwrap(), "--json"]).ok();
    assert!(
        pack.stderr
            .contains("starts as `node --import tsx src/server.ts`"),
        "{}",
        pack.stderr
    );
    assert!(pack.stderr.contains("starts cold"), "{}", pack.stderr);
    let rec: serde_json::Value = serde_json::from_str(&pack.stdout).unwrap();
    assert_eq!(
        rec["release"]["node_flags"],
        serde_json::json!(["--import", "tsx"]),
        "{rec}"
    );
    deploy_and_swap(
        p,
        "ts",
        &dir,
        "hello from typescript",
        "src/greeting.ts",
        ("'hello from typescript'", "'typed and swapped'"),
        "typed and swapped",
    );
}

/// A built app (`dist/main.js`) started with node flags and a variable, listening on a fixed
/// port and reading a file relative to where it starts: all kept, served on the pod's port.
#[test]
fn a_built_app_with_flags_on_a_fixed_port() {
    if !node_available() {
        return skip("node is not installed");
    }
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    let dir = example(p, "fixed-port");
    let _down = DownApp(p, "fixed");
    let d = deploy_and_swap(
        p,
        "fixed",
        &dir,
        "v1 production welcome [--enable-source-maps --max-old-space-size=128]",
        "dist/main.js",
        ("const VERSION = 'v1'", "const VERSION = 'v2'"),
        "v2 production welcome",
    );
    assert!(!d.stderr.contains("starts cold"), "{}", d.stderr);
    let log = walk(&p.join(".aether/local/fixed"))
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "log"))
        .map(|f| fs::read_to_string(f).unwrap_or_default())
        .collect::<String>();
    assert!(
        log.contains("the app listens on port 8080, not on PORT"),
        "no word of the fixed port in the pod's logs:\n{log}"
    );
}

/// What cannot run is refused at once, naming the script and the fix, with nothing uploaded.
#[test]
fn start_commands_that_cannot_run_are_refused_before_upload() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    let dir = p.join("chain");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("package.json"),
        r#"{"scripts":{"start":"npm run build && node dist/main.js","build":"tsc"}}"#,
    )
    .unwrap();
    let r = xtask(
        p,
        &[("AETHER_TARGET", "local")],
        &["hot-upload", "chain", dir.to_str().unwrap()],
    );
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(
        r.stderr.contains("needs a shell (\"&&\")")
            && r.stderr
                .contains("\"aether\": {\"start\": \"node <flags> <file> <args>\"}"),
        "{}",
        r.stderr
    );
    // Refused before the embedded store (or anything else) started.
    assert!(!p.join(".aether/local/store.json").exists(), "{}", r.all());
    fs::write(
        dir.join("package.json"),
        r#"{"main":"a.js","aether":{"prot":8080}}"#,
    )
    .unwrap();
    fs::write(dir.join("a.js"), "").unwrap();
    let r = xtask(p, &[], &["package", dir.to_str().unwrap()]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr
            .contains("package.json: \"aether\": unknown field `prot`"),
        "{}",
        r.stderr
    );
}

/// A big app layer is packed (it is the user's call) with a warning naming where the bytes are.
#[test]
fn a_big_app_layer_is_named_with_its_biggest_directories() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("big");
    fs::create_dir_all(dir.join("assets/video")).unwrap();
    fs::create_dir_all(dir.join("src")).unwrap();
    fs::write(dir.join("index.js"), "").unwrap();
    fs::write(dir.join("src/a.js"), "x".repeat(1000)).unwrap();
    let f = fs::File::create(dir.join("assets/video/intro.bin")).unwrap();
    f.set_len(51 << 20).unwrap();
    let out = t.path().join("big.tar.gz");
    let r = package_to(t.path(), &dir, &out).ok();
    assert!(
        r.stderr.contains(
            "warning: the app layer holds 51.0 MiB (biggest: assets/ 51.0 MiB, src/ 1000 B)"
        ) && r.stderr.contains(".aetherignore"),
        "{}",
        r.stderr
    );
    fs::write(dir.join(".aetherignore"), "assets/\n").unwrap();
    let r = package_to(t.path(), &dir, &out).ok();
    assert!(!r.stderr.contains("warning"), "{}", r.stderr);
}

/// An npm workspaces monorepo: the app in `packages/api` resolves `ms` from the root's
/// `node_modules` and `@mono/util` through a workspace link. Its layer holds both; an edit to
/// the app uploads only the app, an edit to the shared package a new layer, and both swap in.
#[test]
fn a_workspace_member_ships_what_it_resolves_from_the_root() {
    if !node_available() || !npm_available() {
        return skip("node and npm are not installed");
    }
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    let root = example(p, "monorepo");
    npm(&root, &["ci"]);
    let dir = root.join("packages/api");
    let _down = DownApp(p, "api");
    let d = deploy_and_swap(
        p,
        "api",
        &dir,
        "HELLO FROM THE MONOREPO! (2m)",
        "server.js",
        ("'hello from the monorepo'", "'edited app'"),
        "EDITED APP! (2m)",
    );
    assert!(
        d.stderr.contains("(package-lock.json): uploaded"),
        "{}",
        d.stderr
    );
    let env = [("AETHER_TARGET", "local")];
    let up = |what: &str| -> serde_json::Value {
        let r = xtask(
            p,
            &env,
            &["hot-upload", "api", dir.to_str().unwrap(), "--json"],
        )
        .ok();
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{what}: {e}: {}", r.stdout))
    };
    let same = up("the app again");
    assert_eq!(same["deps"]["uploaded"], false, "{same}");
    let util = root.join("packages/util/index.js");
    let text = fs::read_to_string(&util).unwrap();
    fs::write(&util, text.replace("toUpperCase()}!", "toUpperCase()}?!")).unwrap();
    let edited = up("the shared package edited");
    assert_eq!(edited["deps"]["uploaded"], true, "{edited}");
    assert_ne!(edited["deps"]["digest"], same["deps"]["digest"]);
    let v = edited["digest"].as_str().unwrap();
    let r = xtask(p, &env, &["hot-patch", "api", v, "--wait", "30", "--json"]).ok();
    let out: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(out["trace"]["failed_requests"], 0, "{out}");
    let url = d.last("url");
    assert!(get(&url).contains("EDITED APP?! (2m)"), "{}", get(&url));
}
