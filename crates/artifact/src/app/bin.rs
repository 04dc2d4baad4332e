//! Package programs (`next`, `nest`, `fastify`): the JavaScript file a start command's program
//! name runs, found as the package manager would find it.

use std::fs;
use std::path::{Path, PathBuf};

/// The directories an app's packages resolve from, nearest first: its own `node_modules`, and
/// for a workspace member the root's too (the release gets both, merged, as its `node_modules`).
pub(super) fn modules_dirs(dir: &Path) -> Vec<PathBuf> {
    match super::workspace::find(dir) {
        Ok(Some(ws)) => ws.modules(),
        _ => vec![dir.join(super::DEPS_DIR)],
    }
}

/// The JS file a package bin runs, as a path in the release (`node_modules/…`): through the
/// `node_modules/.bin` link npm and yarn make, else the `bin` field of the package that declares
/// it (pnpm writes shell shims into `.bin`).
pub(super) fn package_bin(dir: &Path, bin: &str) -> Result<String, String> {
    let dirs: Vec<PathBuf> = modules_dirs(dir)
        .into_iter()
        .filter(|m| m.is_dir())
        .collect();
    if dirs.is_empty() {
        return Err(format!(
            "a package's program, and there is no node_modules in {}: run `npm install` (or your package manager's install) there first",
            dir.display()
        ));
    }
    let found = dirs.iter().find_map(|modules| {
        let via_link = fs::read_link(modules.join(".bin").join(bin))
            .ok()
            .and_then(|t| fs::canonicalize(modules.join(".bin").join(t)).ok());
        let target = via_link.or_else(|| declared_bin(modules, bin))?;
        Some((fs::canonicalize(modules).ok()?, target))
    });
    let (modules, target) = found.ok_or_else(|| {
        format!("no installed package provides the program {bin:?}: add the package that does to dependencies and install, or set \"aether\": {{\"start\": \"node <file>\"}}")
    })?;
    let rel = target
        .strip_prefix(&modules)
        .map_err(|_| format!("its program {} is outside node_modules", target.display()))?;
    let rel = format!("{}/{}", super::DEPS_DIR, rel.to_string_lossy());
    let js = matches!(
        Path::new(&rel).extension().and_then(|e| e.to_str()),
        Some("js" | "mjs" | "cjs")
    ) || fs::read(&target)
        .map(|b| {
            let first = b.split(|c| *c == b'\n').next().unwrap_or(&[]);
            first.starts_with(b"#!") && String::from_utf8_lossy(first).contains("node")
        })
        .unwrap_or(false);
    if !js {
        return Err(format!(
            "its program {rel} is not a Node.js script; aether-run starts node on a file: set \"aether\": {{\"start\": \"node <file>\"}}"
        ));
    }
    Ok(rel)
}

/// The file `bin` names in the `bin` field of a package in `modules` (scoped ones included).
fn declared_bin(modules: &Path, bin: &str) -> Option<std::path::PathBuf> {
    let mut pkgs = Vec::new();
    for e in fs::read_dir(modules).ok()?.flatten() {
        let p = e.path();
        if e.file_name().to_string_lossy().starts_with('@') {
            pkgs.extend(fs::read_dir(&p).ok()?.flatten().map(|e| e.path()));
        } else {
            pkgs.push(p);
        }
    }
    pkgs.sort();
    pkgs.into_iter().find_map(|p| {
        let pj: serde_json::Value =
            serde_json::from_slice(&fs::read(p.join("package.json")).ok()?).ok()?;
        let file = match &pj["bin"] {
            serde_json::Value::String(f) if pj["name"].as_str()?.rsplit('/').next()? == bin => f,
            serde_json::Value::Object(m) => m.get(bin)?.as_str()?,
            _ => return None,
        };
        fs::canonicalize(p.join(file)).ok()
    })
}
