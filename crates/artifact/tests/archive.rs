//! Packing and verified unpacking, on real directories and hand-crafted hostile archives.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use aether_artifact::pack::{pack_dir_with_threads, pack_to_vec};
use aether_artifact::unpack::{unpack_verified, Limits, UnpackError};
use aether_artifact::Digest;
use sha2::{Digest as _, Sha256};

fn sample_tree(root: &Path) {
    fs::create_dir_all(root.join("src/lib")).unwrap();
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    fs::write(root.join("package.json"), "{\"name\":\"x\"}\n").unwrap();
    fs::write(root.join("src/index.js"), "console.log('hi')\n").unwrap();
    fs::write(
        root.join("src/lib/util.js"),
        "module.exports = 1\n".repeat(1000),
    )
    .unwrap();
    fs::write(root.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::set_permissions(root.join("package.json"), fs::Permissions::from_mode(0o600)).unwrap();
    symlink("lib/util.js", root.join("src/util-link.js")).unwrap();
    symlink("../package.json", root.join("src/pkg.json")).unwrap();
    // Longer than the 100-byte ustar name field: exercises the GNU long-name path.
    let deep = root.join("d".repeat(60)).join("e".repeat(60));
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("f".repeat(80)), "deep").unwrap();
    // Bigger than one gzip member, so several members and threads are involved.
    let mut big = Vec::new();
    let mut x: u32 = 1;
    for _ in 0..(3 << 20) / 4 {
        x = x.wrapping_mul(1664525).wrapping_add(1013904223);
        big.extend_from_slice(&(x >> 24).to_le_bytes());
    }
    fs::write(root.join("big.bin"), big).unwrap();
}

fn copy_tree(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn same_tree_same_bytes_whatever_mtimes_owners_path_and_threads() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a");
    sample_tree(&a);
    let b = d.path().join("elsewhere/with/another-name");
    fs::create_dir_all(b.parent().unwrap()).unwrap();
    copy_tree(&a, &b);
    // Different mtimes and owners on the copy.
    let st = Command::new("touch")
        .args(["-d", "2001-02-03 04:05:06"])
        .arg(b.join("src/index.js"))
        .arg(b.join("src"))
        .status()
        .unwrap();
    assert!(st.success());
    if unsafe_is_root() {
        let st = Command::new("chown")
            .args(["-R", "1234:5678"])
            .arg(&b)
            .status()
            .unwrap();
        assert!(st.success());
    }
    let (bytes_a, pa) = pack_to_vec(&a).unwrap();
    let (bytes_b, pb) = pack_to_vec(&b).unwrap();
    assert_eq!(pa.digest, pb.digest);
    assert_eq!(bytes_a, bytes_b);
    for threads in [1, 3] {
        let mut v = Vec::new();
        let p = pack_dir_with_threads(&a, &mut v, threads).unwrap();
        assert_eq!(p.digest, pa.digest, "{threads} threads");
    }
    // The digest is the plain sha256 of the bytes: anyone can check it with sha256sum.
    let sum: [u8; 32] = Sha256::digest(&bytes_a).into();
    assert_eq!(Digest::from_bytes(sum), pa.digest);
    assert!(pa.bytes as usize == bytes_a.len());
    assert!(
        bytes_a.len() > (1 << 20),
        "the tree spans several gzip members"
    );
}

fn unsafe_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false)
}

#[test]
fn headers_are_normalised_and_system_tar_reads_the_archive() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a");
    sample_tree(&a);
    let (bytes, _) = pack_to_vec(&a).unwrap();
    let f = d.path().join("x.tar.gz");
    fs::write(&f, &bytes).unwrap();
    let out = Command::new("tar")
        .args(["--numeric-owner", "-tvzf"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8(out.stdout).unwrap();
    for line in listing.lines() {
        assert!(line.contains(" 0/0 "), "owner not 0/0: {line}");
        assert!(line.contains("1970-01-01"), "mtime not fixed: {line}");
        let mode = &line[..10];
        assert!(
            ["-rw-r--r--", "-rwxr-xr-x", "drwxr-xr-x", "lrwxrwxrwx"].contains(&mode),
            "{line}"
        );
    }
    assert!(listing.contains("-rwxr-xr-x 0/0") && listing.contains("run.sh"));
    assert!(listing.contains("src/util-link.js -> lib/util.js"));
    // Sorted, directory before its content.
    let names: Vec<&str> = listing
        .lines()
        .map(|l| l.split_whitespace().nth(5).unwrap())
        .collect();
    let pos = |n: &str| {
        names
            .iter()
            .position(|x| x.trim_end_matches('/') == n)
            .unwrap()
    };
    assert!(
        pos("big.bin") < pos("empty-dir")
            && pos("src") < pos("src/index.js")
            && pos("src/index.js") < pos("src/lib")
    );
    // gzip headers carry no timestamp (bytes 4..8) and no name flag.
    assert_eq!(&bytes[..4], &[0x1f, 0x8b, 8, 0]);
    assert_eq!(&bytes[4..8], &[0, 0, 0, 0]);
}

#[test]
fn round_trip_through_verified_unpack() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a");
    sample_tree(&a);
    let (bytes, p) = pack_to_vec(&a).unwrap();
    let out = d.path().join("out");
    let stats = unpack_verified(&bytes[..], &p.digest, &out, &Limits::default()).unwrap();
    assert_eq!(stats.entries, p.entries);
    assert_eq!(stats.content_bytes, p.content_bytes);
    let diff = Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(&a)
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        diff.status.success(),
        "{}",
        String::from_utf8_lossy(&diff.stdout)
    );
    assert_eq!(
        fs::metadata(out.join("run.sh"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o755
    );
    assert_eq!(
        fs::metadata(out.join("package.json"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o644
    );
    // Packing the unpacked tree gives the same digest.
    assert_eq!(pack_to_vec(&out).unwrap().1.digest, p.digest);
    only_entries(d.path(), &["a", "out"]);
}

#[test]
fn ignore_rules() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a");
    fs::create_dir_all(a.join(".git/objects")).unwrap();
    fs::write(a.join(".git/HEAD"), "ref").unwrap();
    fs::create_dir_all(a.join("logs")).unwrap();
    fs::write(a.join("logs/x.log"), "x").unwrap();
    fs::write(a.join("keep.js"), "x").unwrap();
    fs::write(a.join("secret.env"), "x").unwrap();
    fs::write(a.join(".aetherignore"), "logs/\n*.env\n").unwrap();
    let (bytes, _) = pack_to_vec(&a).unwrap();
    let names = list(&bytes);
    assert_eq!(names, vec![".aetherignore", "keep.js"]);
}

/// The xtask lives in the app's repository, so its root is often packed: aether-dev's own state
/// (the signing key, the embedded store's data) and Cargo's tagged `target/` never travel, at
/// any depth; a directory merely named `target` does.
#[test]
fn the_signing_key_and_build_caches_are_never_packed() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("repo");
    fs::create_dir_all(a.join(".aether/keys")).unwrap();
    fs::write(
        a.join(".aether/keys/aether.key"),
        "untrusted comment: secret",
    )
    .unwrap();
    fs::create_dir_all(a.join("target/debug")).unwrap();
    fs::write(
        a.join("target/CACHEDIR.TAG"),
        "Signature: 8a477f597d28d172789f06886806bc55\n# cargo\n",
    )
    .unwrap();
    fs::write(a.join("target/debug/xtask"), vec![0u8; 4096]).unwrap();
    fs::create_dir_all(a.join("packages/api/.aether")).unwrap();
    fs::write(a.join("packages/api/.aether/config.json"), "{}").unwrap();
    fs::create_dir_all(a.join("src/target")).unwrap();
    fs::write(a.join("src/target/aim.js"), "x").unwrap();
    // A tag with the wrong signature is no tag.
    fs::create_dir_all(a.join("fake-cache")).unwrap();
    fs::write(a.join("fake-cache/CACHEDIR.TAG"), "not a signature").unwrap();
    fs::write(a.join("Cargo.toml"), "[workspace]\n").unwrap();
    fs::write(a.join("server.js"), "x").unwrap();
    let (bytes, _) = pack_to_vec(&a).unwrap();
    let names = list(&bytes);
    assert_eq!(
        names,
        vec![
            "Cargo.toml",
            "fake-cache",
            "fake-cache/CACHEDIR.TAG",
            "packages",
            "packages/api",
            "server.js",
            "src",
            "src/target",
            "src/target/aim.js"
        ]
    );
    // `measure` (the progress bar's total) agrees with what is packed.
    let (files, _) = aether_artifact::pack::measure(&a).unwrap();
    assert_eq!(files, 4);
}

fn list(bytes: &[u8]) -> Vec<String> {
    let mut ar = tar::Archive::new(flate2::read::MultiGzDecoder::new(bytes));
    ar.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn pack_refuses_escaping_links_and_special_files() {
    let d = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Box<dyn Fn(&Path)>)> = vec![
        (
            "points outside",
            Box::new(|r: &Path| symlink("../../etc/passwd", r.join("x")).unwrap()),
        ),
        (
            "absolute",
            Box::new(|r: &Path| symlink("/etc/passwd", r.join("x")).unwrap()),
        ),
        (
            "FIFO",
            Box::new(|r: &Path| {
                assert!(Command::new("mkfifo")
                    .arg(r.join("fifo"))
                    .status()
                    .unwrap()
                    .success())
            }),
        ),
        (
            "socket",
            Box::new(|r: &Path| {
                std::os::unix::net::UnixListener::bind(r.join("sock"))
                    .map(std::mem::forget)
                    .unwrap()
            }),
        ),
    ];
    for (i, (why, make)) in cases.iter().enumerate() {
        let r = d.path().join(format!("t{i}"));
        fs::create_dir_all(r.join("sub")).unwrap();
        make(&r);
        let e = pack_to_vec(&r).unwrap_err().to_string();
        assert!(e.contains(why), "{why}: {e}");
        assert!(e.contains("cannot pack"), "{e}");
    }
    let e = pack_to_vec(&d.path().join("missing"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing"), "{e}");
}

// --- hostile archives -------------------------------------------------------------------------

enum Raw<'a> {
    File(&'a [u8], &'a [u8]),
    Dir(&'a [u8]),
    Symlink(&'a [u8], &'a [u8]),
    HardLink(&'a [u8], &'a [u8]),
    Char(&'a [u8]),
    Fifo(&'a [u8]),
    Mode(&'a [u8], u32),
}

/// Builds a tar.gz byte by byte, bypassing the tar crate's own path checks.
fn hostile(entries: &[Raw]) -> (Vec<u8>, Digest) {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        let (name, kind, link, data, mode): (&[u8], _, &[u8], &[u8], u32) = match e {
            Raw::File(n, d) => (n, tar::EntryType::Regular, b"", d, 0o644),
            Raw::Dir(n) => (n, tar::EntryType::Directory, b"", b"", 0o755),
            Raw::Symlink(n, t) => (n, tar::EntryType::Symlink, t, b"", 0o777),
            Raw::HardLink(n, t) => (n, tar::EntryType::Link, t, b"", 0o644),
            Raw::Char(n) => (n, tar::EntryType::Char, b"", b"", 0o644),
            Raw::Fifo(n) => (n, tar::EntryType::Fifo, b"", b"", 0o644),
            Raw::Mode(n, m) => (n, tar::EntryType::Regular, b"", b"x", *m),
        };
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let bytes = gz.finish().unwrap();
    let digest = Digest::from_bytes(Sha256::digest(&bytes).into());
    (bytes, digest)
}

fn only_entries(dir: &Path, expected: &[&str]) {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, expected, "leftovers in {}", dir.display());
}

fn refused(entries: &[Raw], why: &str) {
    let d = tempfile::tempdir().unwrap();
    let (bytes, digest) = hostile(entries);
    let e = unpack_verified(
        &bytes[..],
        &digest,
        &d.path().join("out"),
        &Limits::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains(why), "expected {why:?}, got {e}");
    only_entries(d.path(), &[]);
    assert!(!d.path().parent().unwrap().join("passwd").exists());
}

#[test]
fn refuses_path_traversal() {
    refused(
        &[Raw::File(b"ok.txt", b"x"), Raw::File(b"../escaped", b"x")],
        "..",
    );
    refused(&[Raw::File(b"a/../../escaped", b"x")], "..");
}

#[test]
fn refuses_absolute_paths() {
    refused(&[Raw::File(b"/tmp/aether-abs-test", b"x")], "absolute");
}

#[test]
fn refuses_escaping_symlinks_and_writes_through_links() {
    refused(&[Raw::Symlink(b"x", b"../../etc")], "points outside");
    refused(&[Raw::Symlink(b"x", b"/etc")], "absolute");
    // Lexically inside, but a later entry would write through it.
    refused(
        &[
            Raw::Dir(b"sub"),
            Raw::Symlink(b"l", b"sub"),
            Raw::File(b"l/f", b"x"),
        ],
        "through a symlink",
    );
    refused(
        &[Raw::Symlink(b"l", b"."), Raw::Symlink(b"l/up", b"..")],
        "through a symlink",
    );
}

/// A chain of links: `d/up -> ..` is the root (inside), `esc -> d/up/..` is `d` read lexically
/// but the directory above the release in fact; a directory entry over `esc` would set that
/// directory's mode. Refused in either order, with the directory above untouched.
#[test]
fn refuses_link_chains_and_directory_entries_over_links() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let above = d.path().join("releases");
    fs::create_dir(&above).unwrap();
    fs::set_permissions(&above, fs::Permissions::from_mode(0o700)).unwrap();
    let chains: [&[Raw]; 2] = [
        &[
            Raw::Dir(b"d"),
            Raw::Symlink(b"d/up", b".."),
            Raw::Symlink(b"esc", b"d/up/.."),
            Raw::Dir(b"esc"),
        ],
        // The link through `d/up` first, `d/up` made a link after it.
        &[
            Raw::Dir(b"d"),
            Raw::Symlink(b"esc", b"d/up/.."),
            Raw::Symlink(b"d/up", b".."),
        ],
    ];
    for entries in chains {
        let (bytes, digest) = hostile(entries);
        let e = unpack_verified(&bytes[..], &digest, &above.join("out"), &Limits::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("resolves through another symlink"), "{e}");
        only_entries(&above, &[]);
        let mode = fs::metadata(&above).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "the directory above the release was chmod-ed");
    }
    // A directory entry over a link that stays inside is refused as well.
    refused(
        &[
            Raw::Dir(b"real"),
            Raw::Symlink(b"l", b"real"),
            Raw::Dir(b"l"),
        ],
        "a directory entry over a symlink",
    );
    // Packing refuses the same chain in a real tree.
    let tree = d.path().join("tree");
    fs::create_dir_all(tree.join("d")).unwrap();
    std::os::unix::fs::symlink("..", tree.join("d/up")).unwrap();
    std::os::unix::fs::symlink("d/up/..", tree.join("esc")).unwrap();
    let e = pack_to_vec(&tree).unwrap_err().to_string();
    assert!(e.contains("resolves through another symlink"), "{e}");
}

/// The tar crate reads a GNU long-name or PAX header whole into memory: one that announces more
/// than 64 KiB is refused before its data is read, whatever the byte cap allows.
#[test]
fn refuses_oversized_long_name_and_pax_headers() {
    for kind in [tar::EntryType::GNULongName, tar::EntryType::XHeader] {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        let data = vec![b'a'; 1 << 20];
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, &data[..]).unwrap();
        let mut f = tar::Header::new_gnu();
        f.set_path("f").unwrap();
        f.set_size(1);
        f.set_cksum();
        b.append(&f, &b"x"[..]).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&b.into_inner().unwrap()).unwrap();
        let bytes = gz.finish().unwrap();
        let digest = Digest::from_bytes(Sha256::digest(&bytes).into());
        let d = tempfile::tempdir().unwrap();
        let e = unpack_verified(
            &bytes[..],
            &digest,
            &d.path().join("out"),
            &Limits::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("at most 65536"), "{kind:?}: {e}");
        only_entries(d.path(), &[]);
    }
}

#[test]
fn refuses_hard_links_devices_fifos_and_duplicates() {
    refused(
        &[Raw::File(b"a", b"x"), Raw::HardLink(b"b", b"a")],
        "hard links",
    );
    refused(&[Raw::Char(b"null")], "device");
    refused(&[Raw::Fifo(b"p")], "FIFO");
    refused(&[Raw::File(b"a", b"x"), Raw::File(b"a", b"y")], "twice");
}

#[test]
fn strips_setuid_setgid_and_sticky() {
    let d = tempfile::tempdir().unwrap();
    let (bytes, digest) = hostile(&[Raw::Mode(b"suid", 0o6755), Raw::Mode(b"sticky", 0o1666)]);
    let out = d.path().join("out");
    unpack_verified(&bytes[..], &digest, &out, &Limits::default()).unwrap();
    assert_eq!(
        fs::metadata(out.join("suid")).unwrap().permissions().mode() & 0o7777,
        0o755
    );
    assert_eq!(
        fs::metadata(out.join("sticky"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o644
    );
}

#[test]
fn bombs_stop_early() {
    let d = tempfile::tempdir().unwrap();
    // 64 MiB of zeros compresses to ~64 KiB.
    let zeros = vec![0u8; 64 << 20];
    let (bytes, digest) = hostile(&[Raw::File(b"zeros", &zeros)]);
    assert!(bytes.len() < 1 << 20);
    let limits = Limits {
        max_bytes: 8 << 20,
        max_entries: 100,
        ..Limits::default()
    };
    let e = unpack_verified(&bytes[..], &digest, &d.path().join("out"), &limits).unwrap_err();
    assert!(
        matches!(e, UnpackError::TooLarge { what: "bytes", .. }),
        "{e}"
    );
    let many: Vec<Vec<u8>> = (0..200).map(|i| format!("f{i}").into_bytes()).collect();
    let entries: Vec<Raw> = many.iter().map(|n| Raw::File(n, b"")).collect();
    let (bytes, digest) = hostile(&entries);
    let e = unpack_verified(&bytes[..], &digest, &d.path().join("out"), &limits).unwrap_err();
    assert!(
        matches!(
            e,
            UnpackError::TooLarge {
                what: "entries",
                ..
            }
        ),
        "{e}"
    );
    only_entries(d.path(), &[]);
}

#[test]
fn digest_mismatch_and_corruption_leave_nothing() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    sample_tree(&src);
    let (bytes, p) = pack_to_vec(&src).unwrap();
    let wrong = Digest::parse(&"0".repeat(64)).unwrap();
    let e = unpack_verified(
        &bytes[..],
        &wrong,
        &d.path().join("out"),
        &Limits::default(),
    )
    .unwrap_err();
    assert!(matches!(e, UnpackError::DigestMismatch { .. }), "{e}");
    assert!(e.to_string().contains(&p.digest.to_string()));
    // A flipped byte in the middle: gzip's CRC or the digest catches it, either way nothing is left.
    let mut bad = bytes.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    assert!(unpack_verified(
        &bad[..],
        &p.digest,
        &d.path().join("out"),
        &Limits::default()
    )
    .is_err());
    // Truncated.
    assert!(unpack_verified(
        &bytes[..bytes.len() - 10],
        &p.digest,
        &d.path().join("out"),
        &Limits::default()
    )
    .is_err());
    // Trailing garbage after the last member.
    let mut trailing = bytes.clone();
    trailing.extend_from_slice(b"garbage");
    assert!(unpack_verified(
        &trailing[..],
        &p.digest,
        &d.path().join("out"),
        &Limits::default()
    )
    .is_err());
    only_entries(d.path(), &["src"]);
}

/// A deadline that has passed stops the unpack between writes; nothing is left behind.
#[test]
fn a_passed_deadline_stops_the_unpack() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a");
    sample_tree(&a);
    let (bytes, p) = pack_to_vec(&a).unwrap();
    let out = d.path().join("out");
    let limits = Limits {
        deadline: Some(std::time::Instant::now()),
        ..Limits::default()
    };
    let e = unpack_verified(&bytes[..], &p.digest, &out, &limits).unwrap_err();
    assert!(matches!(e, UnpackError::Deadline { .. }), "{e}");
    assert!(e.to_string().contains("--timeout"), "{e}");
    assert_eq!(
        std::fs::read_dir(d.path()).unwrap().count(),
        1,
        "only the source is left"
    );
}

/// The app layer's layout: `node_modules` left out at the root only, the release record written
/// first (a file of the tree with its name left out), and the bytes still deterministic.
#[test]
fn layouts_exclude_at_the_root_and_add_their_files_first() {
    use aether_artifact::pack::{pack_layout, Layout};
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    fs::create_dir_all(root.join("node_modules/x")).unwrap();
    fs::write(root.join("node_modules/x/index.js"), "x").unwrap();
    fs::create_dir_all(root.join("lib/node_modules")).unwrap();
    fs::write(root.join("lib/node_modules/kept.js"), "k").unwrap();
    fs::write(root.join("index.js"), "i").unwrap();
    fs::write(root.join(".aether-release.json"), "the user's, replaced").unwrap();
    let layout = Layout {
        exclude_root: vec!["node_modules".into()],
        extra: vec![(".aether-release.json".into(), b"{\"ours\":1}".to_vec())],
    };
    let pack = || {
        let mut out = Vec::new();
        let p = pack_layout(root, &mut out, 2, &|_, _| {}, &layout).unwrap();
        (out, p)
    };
    let (a, pa) = pack();
    let (b, _) = pack();
    assert_eq!(a, b);
    assert_eq!(
        list(&a),
        [
            ".aether-release.json",
            "index.js",
            "lib",
            "lib/node_modules",
            "lib/node_modules/kept.js"
        ]
    );
    let dest = t.path().join("out");
    unpack_verified(&a[..], &pa.digest, &dest, &Limits::default()).unwrap();
    assert_eq!(
        fs::read_to_string(dest.join(".aether-release.json")).unwrap(),
        "{\"ours\":1}"
    );
    let (all, _) = pack_to_vec(root).unwrap();
    assert!(list(&all).contains(&"node_modules/x/index.js".to_string()));
}
