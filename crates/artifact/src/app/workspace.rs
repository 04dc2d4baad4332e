//! Monorepos: an app that is one package of an npm or Yarn (classic) workspace finds most of its
//! dependencies in the root's `node_modules` (hoisted there by the package manager), and its
//! sibling packages as links in it. Its dependency layer is that tree as the app resolves it.

use std::fs;
use std::path::{Path, PathBuf};

use super::{DEPS_DIR, LOCKFILES};

/// The workspace an app directory belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    pub root: PathBuf,
    /// The app's directory relative to the root, `/`-separated (`packages/api`).
    pub member: String,
}

impl Workspace {
    /// The `node_modules` directories the app resolves from, nearest first.
    pub fn modules(&self) -> Vec<PathBuf> {
        vec![
            self.root.join(&self.member).join(DEPS_DIR),
            self.root.join(DEPS_DIR),
        ]
    }
}

/// The workspace `dir` is a member of: the nearest ancestor whose `package.json` lists `dir`
/// under `workspaces`. `Err` for layouts whose dependencies cannot be shipped as a tree (pnpm's
/// linked store, Yarn Plug'n'Play), naming the fix.
pub fn find(dir: &Path) -> Result<Option<Workspace>, String> {
    let dir = fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for root in dir.ancestors().skip(1) {
        let member = dir
            .strip_prefix(root)
            .expect("an ancestor")
            .to_string_lossy()
            .replace('\\', "/");
        let found = Workspace {
            root: root.to_path_buf(),
            member,
        };
        if root.join("pnpm-workspace.yaml").is_file() {
            // pnpm's `node-linker=hoisted` installs a plain tree, as npm does.
            let modules = fs::read_to_string(root.join(DEPS_DIR).join(".modules.yaml"));
            return match modules {
                Ok(m) if m.contains("nodeLinker: hoisted") => Ok(Some(found)),
                _ => Err(pnpm_refusal(root)),
            };
        }
        let Ok(bytes) = fs::read(root.join("package.json")) else {
            continue;
        };
        let Ok(pj) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        let patterns: Vec<&str> = match &pj["workspaces"] {
            serde_json::Value::Array(a) => a.iter().filter_map(|v| v.as_str()).collect(),
            serde_json::Value::Object(o) => o
                .get("packages")
                .and_then(|p| p.as_array())
                .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default(),
            _ => continue,
        };
        if !patterns.iter().any(|p| matches(p, &found.member)) {
            continue;
        }
        if root.join(".pnp.cjs").is_file() {
            return Err(format!(
                "{} uses Yarn Plug'n'Play (.pnp.cjs): its dependencies live in zip archives that only Yarn's loader reads, not in a node_modules tree aether-dev can ship; set `nodeLinker: node-modules` in .yarnrc.yml and run `yarn install` again",
                root.display()
            ));
        }
        return Ok(Some(found));
    }
    Ok(None)
}

fn pnpm_refusal(root: &Path) -> String {
    format!(
        "{} is a pnpm workspace: its node_modules are links into the root's .pnpm store, which a release cannot carry as they are; add `node-linker=hoisted` to .npmrc and run `pnpm install` again (a plain node_modules tree, which aether-dev ships)",
        root.display()
    )
}

/// A workspace pattern (`packages/*`, `apps/**`, `api`) against a member path.
fn matches(pattern: &str, member: &str) -> bool {
    let pattern = pattern.trim_start_matches("./").trim_end_matches('/');
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .is_ok_and(|g| g.compile_matcher().is_match(member))
}

/// The lockfile of the workspace: the root's.
pub fn lockfile(ws: &Workspace) -> Option<(&'static str, Vec<u8>)> {
    LOCKFILES
        .iter()
        .find_map(|n| fs::read(ws.root.join(n)).ok().map(|b| (*n, b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for (p, c) in files {
            let p = t.path().join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, c).unwrap();
        }
        t
    }

    #[test]
    fn members_are_found_by_the_roots_patterns() {
        let t = tree(&[
            ("package.json", r#"{"workspaces":["packages/*"]}"#),
            ("packages/api/package.json", "{}"),
            ("tools/x/package.json", "{}"),
        ]);
        let ws = find(&t.path().join("packages/api")).unwrap().unwrap();
        assert_eq!(ws.member, "packages/api");
        assert_eq!(ws.root, fs::canonicalize(t.path()).unwrap());
        assert_eq!(find(&t.path().join("tools/x")).unwrap(), None);
        let t = tree(&[
            ("package.json", r#"{"workspaces":{"packages":["apps/**"]}}"#),
            ("apps/web/api/package.json", "{}"),
        ]);
        assert!(find(&t.path().join("apps/web/api")).unwrap().is_some());
    }

    #[test]
    fn pnpm_and_plug_n_play_are_refused_with_the_setting_that_works() {
        let t = tree(&[
            ("pnpm-workspace.yaml", "packages: ['packages/*']\n"),
            ("package.json", "{}"),
            ("packages/api/package.json", "{}"),
        ]);
        let e = find(&t.path().join("packages/api")).unwrap_err();
        assert!(e.contains("node-linker=hoisted"), "{e}");
        let t = tree(&[
            ("package.json", r#"{"workspaces":["packages/*"]}"#),
            (".pnp.cjs", ""),
            ("packages/api/package.json", "{}"),
        ]);
        let e = find(&t.path().join("packages/api")).unwrap_err();
        assert!(e.contains("nodeLinker: node-modules"), "{e}");
    }
}
