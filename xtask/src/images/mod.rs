//! OCI image archives written directly (no Docker, no registry): the fetcher, the in-cluster
//! store and the Postgres built from this machine's Debian package all go through one builder
//! on `oci-spec`'s types. One layer, no timestamps, entries sorted: the same files always give
//! the same image digest, and the tag names the content, so a rebuilt image is a new name that
//! a deploy imports rather than a stale one a node already holds.

pub mod control;
pub mod fetcher;
pub mod postgres;
pub mod store_server;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use flate2::{Compression, GzBuilder};
use oci_spec::image::{
    Arch, ConfigBuilder, DescriptorBuilder, ImageConfigurationBuilder, ImageIndexBuilder,
    ImageManifestBuilder, MediaType, Os, RootFsBuilder, Sha256Digest, SCHEMA_VERSION,
};
use sha2::{Digest as _, Sha256};
use xshell::{cmd, Shell};

/// The non-root user of the project's own images (distroless' `nonroot`).
pub const NONROOT: u32 = 65532;
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// One entry of the image's only layer.
#[derive(Debug, Clone)]
pub enum Entry {
    File { mode: u32, content: Vec<u8> },
    Dir,
}

/// What an image holds and how it runs.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// Repository without tag, e.g. `docker.io/aether/fetcher`.
    pub name: String,
    /// Prefix of the tag; the content's digest completes it.
    pub version: String,
    pub title: String,
    /// Path inside the image (no leading `/`) → entry; parents are added as directories.
    pub entries: BTreeMap<String, Entry>,
    pub user: String,
    pub entrypoint: Vec<String>,
    pub env: Vec<String>,
    pub ports: Vec<u16>,
}

impl Spec {
    pub fn file(&mut self, path: &str, mode: u32, content: Vec<u8>) {
        self.entries.insert(
            path.trim_start_matches('/').into(),
            Entry::File { mode, content },
        );
    }

    /// `/etc/passwd` and `/etc/group` naming `uid`, so programs that look their user up find it.
    pub fn user_entry(&mut self, name: &str, uid: u32, home: &str) {
        self.file(
            "etc/passwd",
            0o644,
            format!("{name}:x:{uid}:{uid}:{name}:{home}:/sbin/nologin\n").into_bytes(),
        );
        self.file(
            "etc/group",
            0o644,
            format!("{name}:x:{uid}:\n").into_bytes(),
        );
        self.user = format!("{uid}:{uid}");
    }

    /// Copies a host file (following links) to the same path in the image, mode kept.
    pub fn host_file(&mut self, host: &Path) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let meta = fs::metadata(host).with_context(|| format!("reading {}", host.display()))?;
        let content = fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        self.file(
            &host.to_string_lossy(),
            meta.permissions().mode() & 0o7777,
            content,
        );
        Ok(())
    }

    /// Every path with its parents, sorted, so the tar lists a directory before its content.
    fn layer_entries(&self) -> BTreeMap<String, Entry> {
        let mut all = self.entries.clone();
        for p in self.entries.keys() {
            let mut parent = Path::new(p).parent();
            while let Some(d) = parent.filter(|d| !d.as_os_str().is_empty()) {
                all.entry(d.to_string_lossy().into_owned())
                    .or_insert(Entry::Dir);
                parent = d.parent();
            }
        }
        all
    }
}

#[derive(Debug, serde::Serialize)]
pub struct ImageInfo {
    pub reference: String,
    pub manifest_digest: String,
    pub archive: PathBuf,
    pub archive_bytes: u64,
    pub content_bytes: u64,
}

fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// A tar with fixed metadata (owner root, mtime 0).
fn tar_of<'a>(entries: impl IntoIterator<Item = (&'a str, &'a Entry)>) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, e) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            Entry::File { mode, content } => {
                h.set_mode(*mode);
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(content.len() as u64);
                b.append_data(&mut h, path, content.as_slice())?;
            }
            Entry::Dir => {
                h.set_mode(0o755);
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, path, std::io::empty())?;
            }
        }
    }
    Ok(b.into_inner()?)
}

/// JSON with sorted keys: oci-spec keeps labels and annotations in `HashMap`s, whose order
/// changes from run to run, and the digests must not.
fn canonical(v: &impl serde::Serialize) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(&serde_json::to_value(v)?)?)
}

fn descriptor(media: MediaType, blob: &[u8]) -> Result<oci_spec::image::Descriptor> {
    let digest: Sha256Digest = sha256_hex(blob).parse()?;
    Ok(DescriptorBuilder::default()
        .media_type(media)
        .digest(digest)
        .size(blob.len() as u64)
        .build()?)
}

/// Writes the image as an OCI layout archive (the layout at its top level: an extra parent
/// directory makes `ctr image import` fail, canonical/microk8s#4460).
pub fn write_archive(spec: &Spec, out: &Path) -> Result<ImageInfo> {
    let entries = spec.layer_entries();
    let content_bytes = entries
        .values()
        .map(|e| match e {
            Entry::File { content, .. } => content.len() as u64,
            Entry::Dir => 0,
        })
        .sum();
    let layer_tar = tar_of(entries.iter().map(|(p, e)| (p.as_str(), e)))?;
    let diff_id = format!("sha256:{}", sha256_hex(&layer_tar));
    let mut gz = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), Compression::best());
    gz.write_all(&layer_tar)?;
    let layer = gz.finish()?;

    let mut labels = std::collections::HashMap::new();
    labels.insert("org.opencontainers.image.title".into(), spec.title.clone());
    labels.insert(
        "org.opencontainers.image.version".into(),
        spec.version.clone(),
    );
    let mut run = ConfigBuilder::default()
        .user(spec.user.clone())
        .entrypoint(spec.entrypoint.clone())
        .working_dir("/")
        .labels(labels);
    if !spec.env.is_empty() {
        run = run.env(spec.env.clone());
    }
    if !spec.ports.is_empty() {
        run = run.exposed_ports(
            spec.ports
                .iter()
                .map(|p| format!("{p}/tcp"))
                .collect::<Vec<_>>(),
        );
    }
    let config = ImageConfigurationBuilder::default()
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .config(run.build()?)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![diff_id])
                .build()?,
        )
        .build()?;
    let config = canonical(&config)?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(MediaType::ImageConfig, &config)?)
        .layers(vec![descriptor(MediaType::ImageLayerGzip, &layer)?])
        .build()?;
    let manifest = canonical(&manifest)?;
    let manifest_digest = format!("sha256:{}", sha256_hex(&manifest));
    let tag = format!(
        "{}-{}",
        spec.version,
        &manifest_digest["sha256:".len()..][..12]
    );
    let reference = format!("{}:{tag}", spec.name);
    // `ref.name` is the tag (what skopeo and umoci look up); `io.containerd.image.name` is the
    // full name `ctr image import` keeps (without it the image becomes import-<date>).
    let mut ann = std::collections::HashMap::new();
    ann.insert("org.opencontainers.image.ref.name".to_string(), tag);
    ann.insert("io.containerd.image.name".to_string(), reference.clone());
    let mut entry = descriptor(MediaType::ImageManifest, &manifest)?;
    entry.set_annotations(Some(ann));
    let index = ImageIndexBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![entry])
        .build()?;
    let index = canonical(&index)?;
    let blob = |b: &[u8]| format!("blobs/sha256/{}", sha256_hex(b));
    let file = |b: &[u8]| Entry::File {
        mode: 0o644,
        content: b.to_vec(),
    };
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    let parts = [
        ("blobs".to_string(), Entry::Dir),
        ("blobs/sha256".to_string(), Entry::Dir),
        (blob(&config), file(&config)),
        (blob(&layer), file(&layer)),
        (blob(&manifest), file(&manifest)),
        ("index.json".to_string(), file(&index)),
        ("oci-layout".to_string(), file(layout)),
    ];
    let archive = tar_of(parts.iter().map(|(p, e)| (p.as_str(), e)))?;
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
        content_bytes,
    })
}

/// The image name an archive written by [`write_archive`] carries.
pub fn reference_in(archive: &Path) -> Result<String> {
    let f = fs::File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let mut t = tar::Archive::new(f);
    for e in t.entries()? {
        let e = e?;
        if e.path()?.as_os_str() == "index.json" {
            let index = oci_spec::image::ImageIndex::from_reader(e)?;
            if let Some(name) = index
                .manifests()
                .first()
                .and_then(|m| m.annotations().as_ref())
                .and_then(|a| a.get("io.containerd.image.name"))
            {
                return Ok(name.clone());
            }
        }
    }
    bail!(
        "{} is not an image archive of `cargo xtask image`: build it again",
        archive.display()
    )
}

/// Every static binary an image is made of. They are built together: built one by one, each
/// unified the shared crates' features its own way and compiled them again (three release
/// builds with LTO, 85 s in CI, against one).
const STATIC_PACKAGES: [&str; 3] = ["aether-fetcher", "aether-store", "aether-control"];

/// A statically linked binary of `package`: musl when its target is installed, else glibc
/// with `crt-static` (static glibc still resolves names through /etc/hosts and DNS without NSS
/// modules; its built-in `files` and `dns` back ends need none).
pub fn build_static(sh: &Shell, package: &str) -> Result<PathBuf> {
    anyhow::ensure!(
        STATIC_PACKAGES.contains(&package),
        "{package} is not one of the static images' binaries"
    );
    let packages: Vec<String> = STATIC_PACKAGES
        .iter()
        .flat_map(|p| ["--package".to_string(), p.to_string()])
        .collect();
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
    cmd!(
        sh,
        "cargo build --release {packages...} --target {triple} --target-dir {target_dir}"
    )
    .run()
    .context("building the static binaries of the images")?;
    Ok(target_dir.join(triple).join("release").join(package))
}

/// A `FROM scratch` image of one static binary at `bin_in_image`, run as the non-root user.
pub fn scratch(
    name: &str,
    title: &str,
    bin_in_image: &str,
    binary: &Path,
    port: u16,
) -> Result<Spec> {
    let mut s = Spec {
        name: name.into(),
        version: VERSION.into(),
        title: title.into(),
        entrypoint: vec![bin_in_image.into()],
        ports: vec![port],
        ..Default::default()
    };
    let bin = fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    s.file(bin_in_image, 0o755, bin);
    s.user_entry("nonroot", NONROOT, "/");
    Ok(s)
}

/// Builds `package` as a static binary and writes the image `spec` makes of it to `out`.
pub fn static_image(
    sh: &Shell,
    package: &str,
    spec: impl Fn(&Path) -> Result<Spec>,
    out: &Path,
) -> Result<ImageInfo> {
    let bin = build_static(sh, package)?;
    let info = write_archive(&spec(&bin)?, out)?;
    report(&info);
    Ok(info)
}

/// Where an image's archive is written and looked for: `env` when set, else `target/<file>`.
pub fn archive_at(env: &str, file: &str) -> PathBuf {
    std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::target_dir().join(file))
}

/// Prints what was written, for people (stderr) and scripts (stdout `image=`, `digest=`).
pub fn report(info: &ImageInfo) {
    eprintln!(
        "wrote {} ({} archive, {} of files): {}",
        info.archive.display(),
        aether_artifact::human_bytes(info.archive_bytes),
        aether_artifact::human_bytes(info.content_bytes),
        info.reference
    );
    println!("image={}", info.reference);
    println!("digest={}", info.manifest_digest);
}

#[cfg(test)]
mod tests;
