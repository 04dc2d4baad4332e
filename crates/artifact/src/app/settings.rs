//! Per-app settings: the `"aether"` key of the app's `package.json`. In the file people already
//! edit, beside `scripts` and `engines`, rather than one more file at the app's root.

use std::collections::BTreeMap;
use std::path::Path;

/// What `"aether"` may hold. Every key is optional; the defaults are the rules of [`super::detect`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The start command, instead of `scripts.start` (same rules).
    pub start: Option<String>,
    /// The port the app listens on, when it does not read `PORT`.
    pub port: Option<u16>,
    /// The Node.js major the app runs on, instead of `engines.node`.
    pub node: Option<u32>,
    /// Variables set for the app (over `K=V` in the start command).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

pub const ALLOWED: &str = "start (a command, e.g. \"node --enable-source-maps dist/main.js\"), port (1-65535), node (a major, e.g. 22), env (an object of strings)";

impl Settings {
    /// The settings in `pj`, the parsed contents of `path`; none when it has no `"aether"`.
    pub fn read(path: &Path, pj: &serde_json::Value) -> Result<Settings, String> {
        let Some(v) = pj.get("aether") else {
            return Ok(Settings::default());
        };
        let s: Settings = serde_json::from_value(v.clone())
            .map_err(|e| format!("{}: \"aether\": {e}; allowed: {ALLOWED}", path.display()))?;
        if s.port == Some(0) {
            return Err(format!(
                "{}: \"aether\".port is 0; set the port the app listens on (1-65535), or leave it out when the app reads PORT",
                path.display()
            ));
        }
        if let Some(k) = s.env.keys().find(|k| k.is_empty() || k.contains('=')) {
            return Err(format!(
                "{}: \"aether\".env has the name {k:?}; a variable's name is not empty and has no '='",
                path.display()
            ));
        }
        Ok(s)
    }
}
