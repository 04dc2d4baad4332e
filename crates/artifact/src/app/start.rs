//! How an app starts: what `npm start` would run, reduced to `node [flags] <entry> [args]` with
//! its environment, or refused with what to write instead. One set of rules for every target;
//! the result is recorded in the release, so the fetcher and `aether-run` never guess.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Component, Path};

use super::settings::Settings;
use super::DEFAULT_NODE_MAJOR;

/// How the app starts, read from its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    pub entry: String,
    pub args: Vec<String>,
    /// Node's own flags, before the entry point (`--enable-source-maps`, `--import tsx`).
    pub node_flags: Vec<String>,
    /// Variables set for the app: `K=V` before the command, then the settings' `env`.
    pub env: BTreeMap<String, String>,
    /// The port the app listens on when it does not read `PORT` (the settings' `port`).
    pub port: Option<u16>,
    pub node_major: u32,
    /// Why this entry point: `aether.start`, `scripts.start`, `main`, or the file found.
    pub from: String,
    pub warnings: Vec<String>,
}

impl Start {
    /// The command as a shell would show it: `K=V node [flags] <entry> [args]`.
    pub fn command_line(&self) -> String {
        let env = self.env.iter().map(|(k, v)| format!("{k}={v}"));
        let words: Vec<String> = env
            .chain(["node".to_string()])
            .chain(self.node_flags.iter().cloned())
            .chain([self.entry.clone()])
            .chain(self.args.iter().cloned())
            .collect();
        shlex::try_join(words.iter().map(String::as_str)).unwrap_or_else(|_| words.join(" "))
    }
}

/// The node flags that load code or read files when node starts, resolved against the
/// directory node starts in: a warm standby booted before the release is known cannot have them.
const LOADS_AT_START: [&str; 6] = [
    "-r",
    "--require",
    "--import",
    "--loader",
    "--experimental-loader",
    "--env-file",
];

/// Flags whose value is the next word when not written `--flag=value`: those above, and these.
const TAKES_VALUE: [&str; 6] = [
    "--env-file-if-exists",
    "-C",
    "--conditions",
    "--input-type",
    "--title",
    "--disable-warning",
];

/// Flags that make node do something else than run a file.
const NOT_A_SERVER: [&str; 12] = [
    "-e",
    "--eval",
    "-p",
    "--print",
    "-c",
    "--check",
    "-i",
    "--interactive",
    "--test",
    "--run",
    "-v",
    "--version",
];

/// Whether a process started with these flags and variables can be a standby booted ahead of
/// the release it will run (see `aether-run`): not when a flag loads code or reads a file
/// relative to where node starts, or `NODE_OPTIONS` could.
pub fn standby_safe(node_flags: &[String], env: &BTreeMap<String, String>) -> bool {
    !env.contains_key("NODE_OPTIONS")
        && !node_flags.iter().any(|f| {
            let name = f.split('=').next().unwrap_or(f);
            LOADS_AT_START.contains(&name) || name.starts_with("--env-file")
        })
}

/// The rules, the same on every target, in order: the settings' `start`; `scripts.start`; else
/// `main`, else `index.js` or `server.js`. The Node major from the settings' `node`, else
/// `engines.node` when it names one, else [`DEFAULT_NODE_MAJOR`].
pub fn detect(dir: &Path) -> Result<Start, String> {
    let pj_path = dir.join("package.json");
    let pj: Option<serde_json::Value> = match fs::read(&pj_path) {
        Ok(b) => Some(
            serde_json::from_slice(&b)
                .map_err(|e| format!("{}: not valid JSON: {e}", pj_path.display()))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("{}: {e}", pj_path.display())),
    };
    let pj = pj.unwrap_or(serde_json::Value::Null);
    let settings = Settings::read(&pj_path, &pj)?;
    let node_major = match (settings.node, pj["engines"]["node"].as_str()) {
        (Some(m), _) if m >= 18 => m,
        (Some(m), _) => {
            return Err(format!(
                "{}: \"aether\".node is {m}; the oldest supported Node.js is 18: set 18 or later",
                pj_path.display()
            ))
        }
        (None, Some(range)) => match first_number(range) {
            Some(m) if m >= 18 => m,
            Some(m) => {
                return Err(format!(
                    "package.json asks for Node.js {m} (engines.node {range:?}); the oldest supported is 18: raise engines.node"
                ))
            }
            None => DEFAULT_NODE_MAJOR,
        },
        (None, None) => DEFAULT_NODE_MAJOR,
    };
    let mut warnings = Vec::new();
    let script = match (&settings.start, pj["scripts"]["start"].as_str()) {
        (Some(s), _) => Some((s.as_str(), "aether.start")),
        (None, Some(s)) => Some((s, "scripts.start")),
        (None, None) => None,
    };
    let mut cmd = match script {
        Some((script, from)) => {
            let mut c = command(dir, &pj, script, 0, &mut warnings)
                .map_err(|why| format!("{from} ({script:?}) {why}"))?;
            c.from = from.into();
            c
        }
        None => {
            let (entry, from) = default_entry(dir, &pj)?;
            Cmd {
                entry,
                from,
                ..Cmd::default()
            }
        }
    };
    let entry = found(dir, &cmd.entry).ok_or_else(|| {
        format!(
            "{} runs {:?}, which is not a file in {}: fix it or add the file",
            cmd.from,
            cmd.entry,
            dir.display()
        )
    })?;
    typescript(dir, &entry, node_major, &mut cmd.flags, &mut warnings)?;
    cmd.env.extend(settings.env.clone());
    if !standby_safe(&cmd.flags, &cmd.env) {
        warnings.push(format!(
            "node starts with {} (a flag that loads code or reads a file when node starts): each release starts cold, without the warm standby (~100 ms more per switch)",
            cmd.flags.join(" ")
        ));
    }
    Ok(Start {
        entry,
        args: cmd.args,
        node_flags: cmd.flags,
        env: cmd.env,
        port: settings.port,
        node_major,
        from: cmd.from,
        warnings,
    })
}

/// A start command reduced to node running a file.
#[derive(Debug, Default)]
struct Cmd {
    env: BTreeMap<String, String>,
    flags: Vec<String>,
    entry: String,
    args: Vec<String>,
    from: String,
}

/// Without a start script: `main`, else `index.js`, else `server.js`.
fn default_entry(dir: &Path, pj: &serde_json::Value) -> Result<(String, String), String> {
    if let Some(main) = pj["main"].as_str() {
        return found(dir, main).map(|e| (e, "main".into())).ok_or_else(|| {
            format!(
                "package.json's main ({main:?}) is not a file in {}: fix main or add the file",
                dir.display()
            )
        });
    }
    for f in ["index.js", "server.js"] {
        if dir.join(f).is_file() {
            return Ok((f.into(), f.into()));
        }
    }
    Err(format!(
        "cannot tell how to start the app in {}: add \"main\": \"<file>\" or \"scripts\": {{\"start\": \"node <file>\"}} to package.json, or an index.js or server.js",
        dir.display()
    ))
}

/// The file node would run for `rel` in `dir`, as it resolves a path: the path, then with
/// `.js`, then its `index.js`. `None` outside `dir`.
fn found(dir: &Path, rel: &str) -> Option<String> {
    let rel = rel.trim_start_matches("./");
    let safe = Path::new(rel)
        .components()
        .all(|c| matches!(c, Component::Normal(_)));
    if !safe || rel.is_empty() {
        return None;
    }
    [
        rel.to_string(),
        format!("{rel}.js"),
        format!("{}/index.js", rel.trim_end_matches('/')),
    ]
    .into_iter()
    .find(|c| dir.join(c).is_file())
}

const SHELL: [&str; 9] = ["&&", "||", ";", "|", ">", "<", "`", "$", "&"];
const MAX_DEPTH: usize = 4;

/// What `script` runs, followed through `npm run`, package bins and runners to node and a file.
/// The error reads after the script's name: "… is refused: <why and the fix>".
fn command(
    dir: &Path,
    pj: &serde_json::Value,
    script: &str,
    depth: usize,
    warnings: &mut Vec<String>,
) -> Result<Cmd, String> {
    let fix = "set \"aether\": {\"start\": \"node <flags> <file> <args>\"} in package.json to the command that, in the end, runs the server";
    if depth > MAX_DEPTH {
        return Err(format!(
            "runs scripts {MAX_DEPTH} deep or in a circle: {fix}"
        ));
    }
    if let Some(op) = SHELL.iter().find(|op| script.contains(**op)) {
        return Err(format!(
            "needs a shell ({op:?}): aether-run starts one process and runs no shell, and a build step belongs before packing: {fix}"
        ));
    }
    let words = shlex::split(script).ok_or_else(|| format!("has unbalanced quotes: {fix}"))?;
    let mut cmd = Cmd::default();
    let mut w = words.as_slice();
    // `K=V cmd`, `cross-env K=V cmd`, `npx cmd`: set variables, or find cmd, as a shell would.
    loop {
        match w.first().map(String::as_str) {
            Some("cross-env" | "env") => w = &w[1..],
            // npx's own options (`--no-install`, `-y`) come before the program.
            Some("npx") => {
                w = &w[1..];
                while w.first().is_some_and(|o| o.starts_with('-')) {
                    w = &w[1..];
                }
            }
            Some(kv) if is_assignment(kv) => {
                let (k, v) = kv.split_once('=').expect("checked");
                cmd.env.insert(k.into(), v.into());
                w = &w[1..];
            }
            _ => break,
        }
    }
    let Some((prog, rest)) = w.split_first() else {
        return Err(format!("runs nothing: {fix}"));
    };
    match prog.as_str() {
        "node" | "nodejs" => node(&mut cmd, rest, warnings, fix)?,
        "nodemon" | "node-dev" | "supervisor" => {
            warnings.push(format!(
                "{prog} restarts the app on changes; aether-dev does that itself: running node instead"
            ));
            node(&mut cmd, rest, warnings, fix)?
        }
        "tsx" | "ts-node" | "ts-node-esm" => {
            let rest = match rest.split_first() {
                Some((watch, r)) if watch == "watch" => {
                    warnings.push(format!("`{prog} watch` restarts the app on changes; aether-dev does that itself: running it once"));
                    r
                }
                _ => rest,
            };
            node(&mut cmd, rest, warnings, fix)?;
            let hook = match prog.as_str() {
                "tsx" => ["--import", "tsx"],
                _ => ["-r", "ts-node/register"],
            };
            cmd.flags.splice(0..0, hook.map(String::from));
        }
        "npm" | "yarn" | "pnpm" => {
            let (name, extra) = script_of(prog, rest).ok_or_else(|| {
                format!(
                    "runs `{prog} {}`, which does not start a server: {fix}",
                    rest.join(" ")
                )
            })?;
            let inner = pj["scripts"][name].as_str().ok_or_else(|| {
                format!("runs the script {name:?}, which package.json does not have: {fix}")
            })?;
            let mut c = command(dir, pj, inner, depth + 1, warnings)
                .map_err(|why| format!("runs {name:?} ({inner:?}), which {why}"))?;
            c.env.extend(cmd.env);
            c.args.extend(extra.iter().cloned());
            return Ok(c);
        }
        "bun" | "deno" => {
            return Err(format!(
                "runs {prog}, not Node.js; aether-dev runs Node.js apps: {fix}"
            ))
        }
        bin => {
            cmd.entry =
                super::bin::package_bin(dir, bin).map_err(|why| format!("runs {bin:?}: {why}"))?;
            cmd.args = rest.to_vec();
        }
    }
    Ok(cmd)
}

fn is_assignment(w: &str) -> bool {
    w.split_once('=').is_some_and(|(k, _)| {
        !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// `npm start`, `npm run x -- a`, `yarn x a`, `pnpm run x a`: the script's name, and the
/// arguments it passes on.
fn script_of<'a>(pm: &str, rest: &'a [String]) -> Option<(&'a str, &'a [String])> {
    let (first, after) = rest.split_first()?;
    let (name, extra) = match first.as_str() {
        "start" => ("start", after),
        "run" | "run-script" => {
            let (n, e) = after.split_first()?;
            (n.as_str(), e)
        }
        n if pm != "npm" && !n.starts_with('-') => (n, after),
        _ => return None,
    };
    Some((
        name,
        extra.strip_prefix(&["--".to_string()][..]).unwrap_or(extra),
    ))
}

/// `node [flags] <entry> [args]` into `cmd`.
fn node(
    cmd: &mut Cmd,
    words: &[String],
    warnings: &mut Vec<String>,
    fix: &str,
) -> Result<(), String> {
    let mut i = 0;
    while let Some(w) = words.get(i) {
        if w == "--" {
            i += 1;
            break;
        }
        if !w.starts_with('-') {
            break;
        }
        let name = w.split('=').next().unwrap_or(w);
        let takes =
            (LOADS_AT_START.contains(&name) || TAKES_VALUE.contains(&name)) && !w.contains('=');
        let value = if takes {
            Some(
                words
                    .get(i + 1)
                    .ok_or_else(|| format!("ends with {w}, which needs a value: {fix}"))?,
            )
        } else {
            None
        };
        i += 1 + usize::from(takes);
        if NOT_A_SERVER.contains(&name) || name == "-h" || name == "--help" {
            return Err(format!(
                "runs node {w}, which does not start a server from a file: {fix}"
            ));
        }
        if name.starts_with("--watch") || name.starts_with("--inspect") {
            warnings.push(format!(
                "dropped node's {w}: aether-dev reloads the app itself, and a debugger port in a pod is reached with `kubectl port-forward`"
            ));
            continue;
        }
        cmd.flags.push(w.clone());
        cmd.flags.extend(value.cloned());
    }
    let (entry, args) = words[i..]
        .split_first()
        .ok_or_else(|| format!("runs node without a file: {fix}"))?;
    cmd.entry = entry.clone();
    cmd.args = args.to_vec();
    Ok(())
}

/// A TypeScript entry runs through Node's type stripping where the major has it (22: behind
/// a flag until 22.18; 23.6 and later: on), else through the app's own `tsx`.
fn typescript(
    dir: &Path,
    entry: &str,
    node_major: u32,
    flags: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Result<(), String> {
    let ts = [".ts", ".mts", ".cts"].iter().any(|e| entry.ends_with(e));
    let hooked = flags
        .iter()
        .any(|f| f.contains("tsx") || f.contains("ts-node") || f.contains("--loader"));
    if !ts || hooked {
        return Ok(());
    }
    if node_major >= 22 {
        if node_major < 24 {
            flags.insert(0, "--experimental-strip-types".into());
        }
        return Ok(());
    }
    if super::bin::modules_dirs(dir)
        .iter()
        .any(|m| m.join("tsx").is_dir())
    {
        warnings.push(format!(
            "{entry} is TypeScript and Node.js {node_major} cannot strip types: running it with the app's tsx (--import tsx); Node.js 22 or later runs it alone (\"aether\": {{\"node\": 22}})"
        ));
        flags.splice(0..0, ["--import".to_string(), "tsx".into()]);
        return Ok(());
    }
    Err(format!(
        "{entry} is TypeScript, which Node.js {node_major} cannot run: set \"aether\": {{\"node\": 22}} (or engines.node) for Node's own type stripping, or add tsx to dependencies, or start the compiled JavaScript"
    ))
}

fn first_number(s: &str) -> Option<u32> {
    let start = s.find(|c: char| c.is_ascii_digit())?;
    let digits: String = s[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
#[path = "start_tests.rs"]
mod tests;
