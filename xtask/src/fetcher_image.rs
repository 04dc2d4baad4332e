//! `cargo xtask sidecar-image`: the fetcher as a static binary in a `FROM scratch`-style OCI
//! image archive, written directly (no Docker): one layer holding `/aether-fetcher` and the
//! passwd/group entries of user 65532, no timestamps anywhere, so the same binary always gives
//! the same image digest.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use aether_artifact::FetcherEnv;
use anyhow::{Context, Result};
use flate2::{Compression, GzBuilder};
use sha2::{Digest as _, Sha256};
use xshell::{cmd, Shell};

/// The non-root user (distroless' `nonroot`).
pub const UID: u32 = 65532;
pub const NAME: &str = "docker.io/aether/fetcher";
pub const TAG: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, serde::Serialize)]
pub struct ImageInfo {
    pub reference: String,
    pub manifest_digest: String,
    pub archive: PathBuf,
    pub archive_bytes: u64,
    pub binary_bytes: u64,
}

pub fn run(sh: &Shell, out: Option<&Path>) -> Result<()> {
    let bin = build_static(sh)?;
    let out = out.map(Path::to_path_buf).unwrap_or_else(image_archive);
    let info = write_archive(&bin, &out)?;
    eprintln!(
        "wrote {} ({} archive, binary {}): {}",
        info.archive.display(),
        aether_artifact::human_bytes(info.archive_bytes),
        aether_artifact::human_bytes(info.binary_bytes),
        info.reference
    );
    eprintln!(
        "import it with `microk8s ctr image import {}` (deploy-sample does this when needed)",
        info.archive.display()
    );
    println!("image={}", info.reference);
    println!("digest={}", info.manifest_digest);
    Ok(())
}

/// Where `sidecar-image` writes the fetcher's OCI archive.
pub fn image_archive() -> PathBuf {
    if let Some(p) = std::env::var_os("AETHER_FETCHER_IMAGE_ARCHIVE") {
        return p.into();
    }
    crate::target_dir().join("aether-fetcher-image.tar")
}

/// A statically linked fetcher: musl when its target is installed, else glibc with
/// `crt-static` (static glibc still resolves names through /etc/hosts and DNS without NSS
/// modules; its built-in `files` and `dns` back ends need none).
pub fn build_static(sh: &Shell) -> Result<PathBuf> {
    let ws = crate::project_root();
    let target_dir = crate::target_dir().join("static");
    let installed = cmd!(sh, "rustup target list --installed")
        .quiet()
        .ignore_stderr()
        .read()
        .unwrap_or_default();
    let triple = if installed
        .lines()
        .any(|l| l.trim() == "x86_64-unknown-linux-musl")
    {
        "x86_64-unknown-linux-musl"
    } else {
        "x86_64-unknown-linux-gnu"
    };
    let _dir = sh.push_dir(&ws);
    // A separate target directory: RUSTFLAGS would otherwise invalidate the normal build.
    let _flags = sh.push_env("RUSTFLAGS", "-C target-feature=+crt-static");
    cmd!(sh, "cargo build --release --package aether-fetcher --target {triple} --target-dir {target_dir}")
        .run()
        .context("building the static fetcher")?;
    Ok(target_dir.join(triple).join("release/aether-fetcher"))
}

fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// A tar with fixed metadata; `entries` are (path, mode, content), `None` content = directory.
fn tar_of(entries: &[(&str, u32, Option<&[u8]>)]) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, mode, content) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mode(*mode);
        match content {
            Some(c) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(c.len() as u64);
                b.append_data(&mut h, path, *c)?;
            }
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, path, std::io::empty())?;
            }
        }
    }
    Ok(b.into_inner()?)
}

/// The image name an archive written by [`write_archive`] carries.
pub fn reference_in(archive: &Path) -> Result<String> {
    let f = fs::File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let mut t = tar::Archive::new(f);
    for e in t.entries()? {
        let e = e?;
        if e.path()?.as_os_str() == "index.json" {
            let index: serde_json::Value = serde_json::from_reader(e)?;
            if let Some(name) =
                index["manifests"][0]["annotations"]["io.containerd.image.name"].as_str()
            {
                return Ok(name.to_string());
            }
        }
    }
    anyhow::bail!(
        "{} is not an image archive of `cargo xtask sidecar-image`: run it again",
        archive.display()
    )
}

/// Writes the OCI image archive and returns what it holds.
pub fn write_archive(binary: &Path, out: &Path) -> Result<ImageInfo> {
    let bin = fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let passwd = format!("nonroot:x:{UID}:{UID}:nonroot:/:/sbin/nologin\n");
    let group = format!("nonroot:x:{UID}:\n");
    let layer_tar = tar_of(&[
        (
            FetcherEnv::BIN_IN_IMAGE.trim_start_matches('/'),
            0o755,
            Some(&bin),
        ),
        ("etc", 0o755, None),
        ("etc/group", 0o644, Some(group.as_bytes())),
        ("etc/passwd", 0o644, Some(passwd.as_bytes())),
    ])?;
    let diff_id = format!("sha256:{}", sha256_hex(&layer_tar));
    let mut gz = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), Compression::best());
    gz.write_all(&layer_tar)?;
    let layer = gz.finish()?;

    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": format!("{UID}:{UID}"),
            "Entrypoint": [FetcherEnv::BIN_IN_IMAGE],
            "WorkingDir": "/",
            "ExposedPorts": {"8081/tcp": {}},
            "Labels": {
                "org.opencontainers.image.title": "aether-fetcher",
                "org.opencontainers.image.version": TAG,
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    let config = serde_json::to_vec(&config)?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{}", sha256_hex(&config)), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": format!("sha256:{}", sha256_hex(&layer)), "size": layer.len()}],
    }))?;
    let manifest_digest = format!("sha256:{}", sha256_hex(&manifest));
    // The tag names the content: a rebuilt fetcher is a new image that `deploy-sample` imports,
    // never a stale one the node already holds under the same name.
    let tag = format!("{TAG}-{}", &diff_id["sha256:".len()..][..12]);
    let reference = format!("{NAME}:{tag}");
    // `ref.name` is the tag (what skopeo and umoci look up); `io.containerd.image.name` is the
    // full name `microk8s ctr image import` keeps (without it the image becomes import-<date>).
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag, "io.containerd.image.name": reference},
        }],
    }))?;
    let blob = |b: &[u8]| format!("blobs/sha256/{}", sha256_hex(b));
    let (cfg_path, layer_path, manifest_path) = (blob(&config), blob(&layer), blob(&manifest));
    // The archive holds the layout at its top level: an extra parent directory makes
    // `ctr image import` fail ("unrecognized image format", canonical/microk8s#4460).
    let archive = tar_of(&[
        ("blobs", 0o755, None),
        ("blobs/sha256", 0o755, None),
        (&cfg_path, 0o644, Some(&config)),
        (&layer_path, 0o644, Some(&layer)),
        (&manifest_path, 0o644, Some(&manifest)),
        ("index.json", 0o644, Some(&index)),
        (
            "oci-layout",
            0o644,
            Some(br#"{"imageLayoutVersion":"1.0.0"}"#),
        ),
    ])?;
    if let Some(parent) = out.parent() {
        fs::create_dir_all(parent)?;
    }
    let tmp = out.with_extension("tar.tmp");
    fs::write(&tmp, &archive)?;
    fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))?;
    Ok(ImageInfo {
        reference,
        manifest_digest,
        archive: out.to_path_buf(),
        archive_bytes: archive.len() as u64,
        binary_bytes: bin.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_binary_same_image_digest() {
        let t = tempfile::tempdir().unwrap();
        let bin = t.path().join("bin");
        fs::write(&bin, b"\x7fELF pretend binary").unwrap();
        let a = write_archive(&bin, &t.path().join("a.tar")).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let b = write_archive(&bin, &t.path().join("b.tar")).unwrap();
        assert_eq!(a.manifest_digest, b.manifest_digest);
        assert_eq!(
            fs::read(t.path().join("a.tar")).unwrap(),
            fs::read(t.path().join("b.tar")).unwrap()
        );
        fs::write(&bin, b"\x7fELF another binary").unwrap();
        let c = write_archive(&bin, &t.path().join("c.tar")).unwrap();
        assert_ne!(a.manifest_digest, c.manifest_digest);
        assert_ne!(
            a.reference, c.reference,
            "another binary must be another tag"
        );
    }

    #[test]
    fn layout_is_at_the_top_level_and_names_the_image() {
        let t = tempfile::tempdir().unwrap();
        let bin = t.path().join("bin");
        fs::write(&bin, b"x").unwrap();
        write_archive(&bin, &t.path().join("a.tar")).unwrap();
        let mut ar = tar::Archive::new(fs::File::open(t.path().join("a.tar")).unwrap());
        let mut index = None;
        let mut names = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().into_owned();
            if p == "index.json" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut e, &mut s).unwrap();
                index = Some(s);
            }
            names.push(p);
        }
        assert!(
            names.contains(&"oci-layout".to_string())
                && names
                    .iter()
                    .all(|n| !n.starts_with("./") && !n.starts_with('/'))
        );
        let index: serde_json::Value = serde_json::from_str(&index.unwrap()).unwrap();
        let ann = &index["manifests"][0]["annotations"];
        // The tag is the version plus the layer's content, so a rebuilt fetcher is a new image.
        let tag = ann["org.opencontainers.image.ref.name"].as_str().unwrap();
        let (version, content) = tag.split_once('-').unwrap();
        assert_eq!(version, TAG);
        assert_eq!(content.len(), 12);
        assert!(content.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(ann["io.containerd.image.name"], format!("{NAME}:{tag}"));
        assert_eq!(
            reference_in(&t.path().join("a.tar")).unwrap(),
            format!("{NAME}:{tag}")
        );
    }
}
