//! A Postgres image built from this machine's Debian `postgresql` package, for clusters that
//! cannot pull `postgres:*` (no registry, as here). It keeps the upstream image's contract
//! (`POSTGRES_USER`, `POSTGRES_PASSWORD`, `POSTGRES_DB`, `PGDATA`, port 5432, a `pg_isready`
//! probe) so the same StatefulSet runs either. Files are the package's server and `pg_isready`,
//! the shared libraries `ldd` names for them, `dash` as `/bin/sh` for the entrypoint, and a
//! passwd entry for uid 70 (the upstream Alpine image's `postgres`, which the manifest runs as).
//! Not for production: the upstream image stays the default.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use super::Spec;

pub const NAME: &str = "docker.io/aether/postgres-debian";
pub const UID: u32 = 70;
const ENTRYPOINT: &str = "/usr/local/bin/aether-postgres-entrypoint";
const ENTRYPOINT_SH: &str = include_str!("postgres-entrypoint.sh");

pub fn run(sh: &Shell, out: Option<&Path>) -> Result<super::ImageInfo> {
    let info = super::write_archive(&spec(sh)?, out.unwrap_or(&archive()))?;
    super::report(&info);
    Ok(info)
}

pub fn archive() -> PathBuf {
    crate::target_dir().join("aether-postgres-image.tar")
}

/// The newest server the package installed: `/usr/lib/postgresql/<major>`.
fn installed_major() -> Result<u32> {
    let majors: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|m: &u32| Path::new(&format!("/usr/lib/postgresql/{m}/bin/postgres")).exists())
        .collect();
    majors.into_iter().max().context(
        "no Postgres server here (/usr/lib/postgresql/*/bin/postgres): install Debian's \
         `postgresql` package (apt-get install postgresql), or set AETHER_POSTGRES_IMAGE to an \
         image your cluster can pull",
    )
}

pub fn spec(sh: &Shell) -> Result<Spec> {
    let major = installed_major()?;
    let lib = PathBuf::from(format!("/usr/lib/postgresql/{major}"));
    let bin = lib.join("bin");
    let mut s = Spec {
        name: NAME.into(),
        version: format!("{major}"),
        title: "postgres (from Debian's package)".into(),
        entrypoint: vec![ENTRYPOINT.into()],
        env: vec![
            format!("PATH={}:/bin", bin.display()),
            "PGDATA=/var/lib/postgresql/data".into(),
            "TZ=UTC".into(),
        ],
        ports: vec![5432],
        ..Default::default()
    };
    let mut elves = vec![
        bin.join("postgres"),
        bin.join("initdb"),
        bin.join("pg_isready"),
    ];
    // Loaded at run time: PL/pgSQL, text search dictionaries, encoding conversions. The JIT
    // (llvmjit, 30 MB of LLVM) is left out and turned off.
    for e in std::fs::read_dir(lib.join("lib"))? {
        let p = e?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".so") && !name.starts_with("llvmjit") {
            elves.push(p);
        }
    }
    let dash = Path::new("/usr/bin/dash");
    if !dash.exists() {
        bail!("/usr/bin/dash is missing: install Debian's `dash` package");
    }
    elves.push(dash.into());
    let mut libs = std::collections::BTreeSet::new();
    for e in &elves {
        libs.extend(shared_libraries(sh, e)?);
    }
    for e in &elves {
        if e != dash {
            s.host_file(e)?;
        }
    }
    for l in &libs {
        s.host_file(l)?;
    }
    s.file("bin/sh", 0o755, std::fs::read(dash)?);
    add_tree(
        &mut s,
        &PathBuf::from(format!("/usr/share/postgresql/{major}")),
    )?;
    let utc = std::fs::read("/usr/share/zoneinfo/Etc/UTC")
        .context("reading /usr/share/zoneinfo/Etc/UTC: install Debian's `tzdata` package")?;
    s.file("usr/share/zoneinfo/Etc/UTC", 0o644, utc.clone());
    s.file("usr/share/zoneinfo/UTC", 0o644, utc);
    s.file(ENTRYPOINT, 0o755, ENTRYPOINT_SH.as_bytes().to_vec());
    s.user_entry("postgres", UID, "/var/lib/postgresql");
    for d in ["var/lib/postgresql/data", "var/run/postgresql", "tmp"] {
        s.entries.insert(d.into(), super::Entry::Dir);
    }
    Ok(s)
}

/// The libraries (and the loader) `ldd` resolves for `elf`.
fn shared_libraries(sh: &Shell, elf: &Path) -> Result<Vec<PathBuf>> {
    let out = cmd!(sh, "ldd {elf}")
        .quiet()
        .read()
        .with_context(|| format!("ldd {}: is it installed (libc-bin)?", elf.display()))?;
    if let Some(l) = out.lines().find(|l| l.contains("not found")) {
        bail!(
            "{} needs a library this machine lacks ({}): reinstall its package",
            elf.display(),
            l.trim()
        );
    }
    Ok(parse_ldd(&out))
}

/// `libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x…)` and `/lib64/ld-linux-x86-64.so.2 (0x…)`.
pub fn parse_ldd(out: &str) -> Vec<PathBuf> {
    out.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, r)) => r.trim(),
                None => l,
            };
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

fn add_tree(s: &mut Spec, dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            add_tree(s, &p)?;
        } else {
            s.host_file(&p)?;
        }
    }
    Ok(())
}
