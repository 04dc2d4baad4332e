//! The sample Node.js app `deploy-sample` generates when no path is given. Its template lives
//! inside the xtask (`xtask/templates/sample-node`), apart from the copy it writes for the user
//! (`examples/sample-node`, git-ignored here): editing or deleting that copy never touches the
//! tool or makes it recompile.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

const SERVER_JS: &str = include_str!("../../templates/sample-node/server.js");
const DB_JS: &str = include_str!("../../templates/sample-node/db.js");
const PACKAGE_JSON: &str = include_str!("../../templates/sample-node/package.json");
const README: &str = include_str!("../../templates/sample-node/README.md");

/// Writes the sample into `dir` unless it already holds a `server.js` (a user's edits win).
pub fn ensure(dir: &Path) -> Result<bool> {
    if dir.join("server.js").exists() {
        return Ok(false);
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::write(dir.join("server.js"), SERVER_JS)?;
    fs::write(dir.join("db.js"), DB_JS)?;
    fs::write(dir.join("package.json"), PACKAGE_JSON)?;
    fs::write(dir.join("README.md"), README)?;
    Ok(true)
}
