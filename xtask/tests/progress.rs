//! Packing shows progress on a terminal, and nothing when piped or under `CI=true`. The
//! terminal is a real pseudo-terminal from util-linux's `script`.

mod common;
use common::*;

use std::process::Command;

fn tree(root: &std::path::Path) -> std::path::PathBuf {
    let d = root.join("tree");
    for i in 0..300 {
        let sub = d.join(format!("pkg{}", i % 10));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(
            sub.join(format!("f{i}.js")),
            format!("module.exports = {i};\n").repeat(200),
        )
        .unwrap();
    }
    // An app: `package` packs the app layer, which needs an entry point.
    std::fs::write(d.join("index.js"), "require('./pkg0/f0.js');\n").unwrap();
    d
}

/// Runs `xtask package <dir>` under a pseudo-terminal; returns what the terminal showed.
fn on_a_terminal(dir: &std::path::Path, ci: bool) -> Option<String> {
    let line = format!("{} package {}", env!("CARGO_BIN_EXE_xtask"), dir.display());
    let mut c = Command::new("script");
    c.args(["-q", "-e", "-c", &line, "/dev/null"]);
    if ci {
        c.env("CI", "true");
    } else {
        c.env_remove("CI");
    }
    let out = c.output().ok()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn packing_progress_only_on_a_terminal_and_never_in_ci() {
    let t = tempfile::tempdir().unwrap();
    let d = tree(t.path());
    let Some(shown) = on_a_terminal(&d, false) else {
        return skip("`script` (util-linux) is not installed");
    };
    assert!(shown.contains("packing 301 files"), "{shown}");
    assert!(shown.contains("digest="), "{shown}");
    let ci = on_a_terminal(&d, true).unwrap();
    assert!(!ci.contains("packing"), "{ci}");
    assert!(ci.contains("digest="), "{ci}");
    // Piped: no progress either.
    let piped = xtask(t.path(), &[], &["package", d.to_str().unwrap()]).ok();
    assert!(!piped.stderr.contains("packing"), "{}", piped.stderr);
}
