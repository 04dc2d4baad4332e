//! `cargo xtask test`: installs what the tests need on a fresh machine, then runs every test.
//! CI's `.ci/run` calls exactly this, so a missing install step fails CI rather than hiding
//! behind something a developer installed by hand.

use anyhow::{bail, Result};
use xshell::{cmd, Shell};

/// Tools the tests run, and the Debian package that provides each.
const TOOLS: &[(&str, &str)] = &[
    ("node", "nodejs"),
    ("curl", "curl"),
    ("skopeo", "skopeo"),
    ("umoci", "umoci"),
    ("runc", "runc"),
];

pub fn run(sh: &Shell, no_install: bool, extra: &[String]) -> Result<()> {
    let missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(t, _)| !has(sh, t))
        .map(|(_, p)| *p)
        .collect();
    if !missing.is_empty() {
        if no_install {
            eprintln!(
                "missing test tools (their tests will say so): {}",
                missing.join(" ")
            );
        } else {
            install(sh, &missing)?;
        }
    }
    cmd!(sh, "cargo test --workspace --locked {extra...}").run()?;
    Ok(())
}

fn has(sh: &Shell, tool: &str) -> bool {
    cmd!(sh, "sh -c 'command -v \"$0\"' {tool}")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_ok()
}

fn install(sh: &Shell, pkgs: &[&str]) -> Result<()> {
    let root = cmd!(sh, "id -u").quiet().read()? == "0";
    if !has(sh, "apt-get") {
        bail!("missing: {}; install them with your package manager, or run `cargo xtask test --no-install`", pkgs.join(" "));
    }
    eprintln!("installing test tools: {}", pkgs.join(" "));
    let _env = sh.push_env("DEBIAN_FRONTEND", "noninteractive");
    if root {
        cmd!(sh, "apt-get update -qq").run()?;
        cmd!(
            sh,
            "apt-get install -y -qq --no-install-recommends {pkgs...}"
        )
        .run()?;
    } else {
        cmd!(sh, "sudo apt-get update -qq").run()?;
        cmd!(
            sh,
            "sudo apt-get install -y -qq --no-install-recommends {pkgs...}"
        )
        .run()?;
    }
    Ok(())
}
