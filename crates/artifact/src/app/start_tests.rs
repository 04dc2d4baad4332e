//! The start rules, one by one.

use super::*;

fn app(files: &[(&str, &str)]) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    for (p, c) in files {
        let p = t.path().join(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, c).unwrap();
    }
    t
}

fn start(script: &str, files: &[(&str, &str)]) -> Result<Start, String> {
    let pj = serde_json::json!({ "scripts": { "start": script, "build": "tsc", "serve": "node --enable-source-maps dist/main.js" } });
    let mut all = vec![("package.json", pj.to_string())];
    all.extend(files.iter().map(|(p, c)| (*p, c.to_string())));
    let all: Vec<(&str, &str)> = all.iter().map(|(p, c)| (*p, c.as_str())).collect();
    detect(app(&all).path())
}

#[test]
fn entry_point_rules() {
    let t = app(&[
        (
            "package.json",
            r#"{"scripts":{"start":"node src/app.js --port 1"},"main":"x.js"}"#,
        ),
        ("src/app.js", ""),
    ]);
    let s = detect(t.path()).unwrap();
    assert_eq!(
        (s.entry.as_str(), s.args.clone(), s.from.as_str()),
        (
            "src/app.js",
            vec!["--port".into(), "1".into()],
            "scripts.start"
        )
    );
    assert_eq!(s.node_major, 20);
    assert!(s.node_flags.is_empty() && s.env.is_empty() && s.warnings.is_empty());

    let t = app(&[
        (
            "package.json",
            r#"{"main":"lib/app","engines":{"node":">=22.1"}}"#,
        ),
        ("lib/app.js", ""),
    ]);
    let s = detect(t.path()).unwrap();
    assert_eq!(
        (s.entry.as_str(), s.node_major, s.from.as_str()),
        ("lib/app.js", 22, "main")
    );

    let t = app(&[
        ("package.json", r#"{"name":"x"}"#),
        ("index.js", ""),
        ("server.js", ""),
    ]);
    assert_eq!(detect(t.path()).unwrap().entry, "index.js");
    let t = app(&[("server.js", "")]);
    assert_eq!(detect(t.path()).unwrap().entry, "server.js");

    let t = app(&[("package.json", r#"{"name":"x"}"#), ("app.js", "")]);
    let e = detect(t.path()).unwrap_err();
    assert!(e.contains("add \"main\": \"<file>\""), "{e}");
    let t = app(&[("package.json", r#"{"main":"gone.js"}"#)]);
    assert!(detect(t.path())
        .unwrap_err()
        .contains("main (\"gone.js\") is not a file"));
    let t = app(&[("package.json", r#"{"main":"../etc/passwd"}"#)]);
    assert!(detect(t.path()).is_err());
    let t = app(&[
        (
            "package.json",
            r#"{"main":"a.js","engines":{"node":"16.x"}}"#,
        ),
        ("a.js", ""),
    ]);
    assert!(detect(t.path())
        .unwrap_err()
        .contains("oldest supported is 18"));
    let t = app(&[("package.json", "{not json")]);
    assert!(detect(t.path()).unwrap_err().contains("not valid JSON"));
}

#[test]
fn node_flags_and_variables_are_kept() {
    let s = start(
        "NODE_ENV=production node --enable-source-maps -r dotenv/config --max-old-space-size=256 dist/main a b",
        &[("dist/main.js", "")],
    )
    .unwrap();
    assert_eq!(s.entry, "dist/main.js");
    assert_eq!(s.args, ["a", "b"]);
    assert_eq!(
        s.node_flags,
        [
            "--enable-source-maps",
            "-r",
            "dotenv/config",
            "--max-old-space-size=256"
        ]
    );
    assert_eq!(s.env["NODE_ENV"], "production");
    // `-r` loads code from where node starts: no warm standby, and it says so.
    assert!(s.warnings[0].contains("starts cold"), "{:?}", s.warnings);
    assert!(!standby_safe(&s.node_flags, &s.env));

    let s = start(
        "cross-env PORT=1 node --enable-source-maps --watch server.js",
        &[("server.js", "")],
    )
    .unwrap();
    assert_eq!(s.node_flags, ["--enable-source-maps"]);
    assert!(standby_safe(&s.node_flags, &s.env));
    assert!(
        s.warnings[0].contains("dropped node's --watch"),
        "{:?}",
        s.warnings
    );
    let s = start("node --env-file=.env server.js", &[("server.js", "")]).unwrap();
    assert!(!standby_safe(&s.node_flags, &s.env));
}

#[test]
fn scripts_are_followed_through_the_package_manager() {
    for script in [
        "npm run serve",
        "npm run-script serve",
        "yarn serve",
        "pnpm run serve",
        "npx --no-install node --enable-source-maps dist/main.js",
    ] {
        let s = start(script, &[("dist/main.js", "")]).unwrap_or_else(|e| panic!("{script}: {e}"));
        assert_eq!(
            (s.entry.as_str(), s.node_flags.as_slice()),
            ("dist/main.js", &["--enable-source-maps".to_string()][..]),
            "{script}"
        );
    }
    let s = start("npm run serve -- --verbose", &[("dist/main.js", "")]).unwrap();
    assert_eq!(s.args, ["--verbose"]);
    let e = start("npm start", &[]).unwrap_err();
    assert!(e.contains("deep or in a circle"), "{e}");
    let e = start("npm run gone", &[]).unwrap_err();
    assert!(e.contains("does not have"), "{e}");
    let e = start("npm install", &[]).unwrap_err();
    assert!(e.contains("does not start a server"), "{e}");
}

#[test]
fn what_needs_a_shell_or_is_not_a_server_is_refused_with_the_fix() {
    for (script, why) in [
        (
            "npm run build && node dist/main.js",
            "needs a shell (\"&&\")",
        ),
        ("node server.js > log", "needs a shell"),
        ("node server.js --port $PORT", "needs a shell (\"$\")"),
        ("node -e 'require(1)'", "does not start a server"),
        ("node --test", "does not start a server"),
        ("node --enable-source-maps", "without a file"),
        ("node 'x", "unbalanced quotes"),
        ("bun run index.ts", "not Node.js"),
        (
            "npm run build",
            "runs \"build\" (\"tsc\"), which runs \"tsc\"",
        ),
    ] {
        let e = start(script, &[]).unwrap_err();
        assert!(e.contains(why), "{script}: {e}");
        assert!(
            e.contains("\"aether\": {\"start\"") || e.contains("node_modules"),
            "{script}: {e}"
        );
    }
}

#[test]
fn package_bins_resolve_to_their_javascript() {
    let bin = "#!/usr/bin/env node\nrequire('../dist/cli')\n";
    let files = [
        (
            "node_modules/fastify-cli/package.json",
            r#"{"name":"fastify-cli","bin":{"fastify":"cli.js"}}"#,
        ),
        ("node_modules/fastify-cli/cli.js", bin),
        (
            "node_modules/@nestjs/cli/package.json",
            r#"{"name":"@nestjs/cli","bin":{"nest":"bin/nest.js"}}"#,
        ),
        ("node_modules/@nestjs/cli/bin/nest.js", bin),
        (
            "node_modules/shelly/package.json",
            r#"{"name":"shelly","bin":"run.sh"}"#,
        ),
        ("node_modules/shelly/run.sh", "#!/bin/sh\nexec x\n"),
        ("app.js", ""),
    ];
    let s = start("fastify start -l info app.js", &files).unwrap();
    assert_eq!(
        (s.entry.as_str(), s.args.as_slice()),
        (
            "node_modules/fastify-cli/cli.js",
            &["start", "-l", "info", "app.js"].map(String::from)[..]
        )
    );
    let s = start("nest start", &files).unwrap();
    assert_eq!(s.entry, "node_modules/@nestjs/cli/bin/nest.js");
    let e = start("shelly", &files).unwrap_err();
    assert!(e.contains("not a Node.js script"), "{e}");
    let e = start("next start", &files).unwrap_err();
    assert!(
        e.contains("no installed package provides the program \"next\""),
        "{e}"
    );
    let e = start("next start", &[]).unwrap_err();
    assert!(e.contains("run `npm install`"), "{e}");
}

#[test]
fn typescript_runs_by_type_stripping_or_the_apps_tsx() {
    let files = [
        ("src/server.ts", ""),
        ("node_modules/tsx/package.json", "{}"),
    ];
    let s = start("tsx watch src/server.ts", &files).unwrap();
    assert_eq!(s.node_flags, ["--import", "tsx"]);
    let s = start("node src/server.ts", &files).unwrap();
    assert_eq!(s.node_flags, ["--import", "tsx"]);
    assert!(
        s.warnings.iter().any(|w| w.contains("cannot strip types")),
        "{:?}",
        s.warnings
    );
    let e = start("node src/server.ts", &[("src/server.ts", "")]).unwrap_err();
    assert!(e.contains("\"aether\": {\"node\": 22}"), "{e}");
    let t = app(&[
        (
            "package.json",
            r#"{"scripts":{"start":"node src/server.ts"},"aether":{"node":22}}"#,
        ),
        ("src/server.ts", ""),
    ]);
    let s = detect(t.path()).unwrap();
    assert_eq!(
        (s.node_major, s.node_flags.as_slice()),
        (22, &["--experimental-strip-types".to_string()][..])
    );
    assert!(standby_safe(&s.node_flags, &s.env));
}

#[test]
fn settings_override_and_are_checked() {
    let t = app(&[
        (
            "package.json",
            r#"{"scripts":{"start":"npm run build && node x.js"},"aether":{"start":"node --enable-source-maps dist/main.js","port":8080,"env":{"LOG":"debug"}}}"#,
        ),
        ("dist/main.js", ""),
    ]);
    let s = detect(t.path()).unwrap();
    assert_eq!(
        (s.entry.as_str(), s.port, s.from.as_str()),
        ("dist/main.js", Some(8080), "aether.start")
    );
    assert_eq!(s.env["LOG"], "debug");
    for (aether, why) in [
        (r#"{"prot":1}"#, "unknown field `prot`"),
        (r#"{"port":"8080"}"#, "invalid type"),
        (r#"{"port":0}"#, "port is 0"),
        (r#"{"port":70000}"#, "port"),
        (r#"{"node":16}"#, "oldest supported"),
        (r#"{"env":{"A":1}}"#, "invalid type"),
    ] {
        let pj = format!(r#"{{"main":"a.js","aether":{aether}}}"#);
        let t = app(&[("package.json", &pj), ("a.js", "")]);
        let e = detect(t.path()).unwrap_err();
        assert!(
            e.contains(why) && e.contains("package.json"),
            "{aether}: {e}"
        );
    }
}
