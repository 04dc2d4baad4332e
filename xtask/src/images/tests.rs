use super::*;

fn tiny(content: &[u8]) -> Spec {
    let mut s = Spec {
        name: "docker.io/aether/test".into(),
        version: "1".into(),
        title: "test".into(),
        entrypoint: vec!["/bin/x".into()],
        ..Default::default()
    };
    s.file("bin/x", 0o755, content.to_vec());
    s.user_entry("nonroot", NONROOT, "/");
    s
}

#[test]
fn same_files_same_image_digest() {
    let t = tempfile::tempdir().unwrap();
    let a = write_archive(&tiny(b"\x7fELF one"), &t.path().join("a.tar")).unwrap();
    let b = write_archive(&tiny(b"\x7fELF one"), &t.path().join("b.tar")).unwrap();
    assert_eq!(a.manifest_digest, b.manifest_digest);
    assert_eq!(
        fs::read(t.path().join("a.tar")).unwrap(),
        fs::read(t.path().join("b.tar")).unwrap()
    );
    let c = write_archive(&tiny(b"\x7fELF two"), &t.path().join("c.tar")).unwrap();
    assert_ne!(a.manifest_digest, c.manifest_digest);
    assert_ne!(
        a.reference, c.reference,
        "other content must be another tag"
    );
}

#[test]
fn layout_at_the_top_level_names_the_image_and_parses_as_oci() {
    let t = tempfile::tempdir().unwrap();
    let info = write_archive(&tiny(b"x"), &t.path().join("a.tar")).unwrap();
    let mut ar = tar::Archive::new(fs::File::open(&info.archive).unwrap());
    let mut blobs = BTreeMap::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().into_owned();
        assert!(!p.starts_with("./") && !p.starts_with('/'), "{p}");
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut b).unwrap();
        blobs.insert(p, b);
    }
    assert!(blobs.contains_key("oci-layout"));
    let index = oci_spec::image::ImageIndex::from_reader(&blobs["index.json"][..]).unwrap();
    let m = &index.manifests()[0];
    let ann = m.annotations().as_ref().unwrap();
    let tag = &ann["org.opencontainers.image.ref.name"];
    assert_eq!(
        ann["io.containerd.image.name"],
        format!("docker.io/aether/test:{tag}")
    );
    assert_eq!(reference_in(&info.archive).unwrap(), info.reference);
    // Every descriptor points at a blob with that digest and size.
    let blob = |d: &oci_spec::image::Descriptor| {
        let b = &blobs[&format!("blobs/sha256/{}", d.digest().digest())];
        assert_eq!(b.len() as u64, d.size());
        assert_eq!(sha256_hex(b), d.digest().digest());
        b.clone()
    };
    let manifest = oci_spec::image::ImageManifest::from_reader(&blob(m)[..]).unwrap();
    let config =
        oci_spec::image::ImageConfiguration::from_reader(&blob(manifest.config())[..]).unwrap();
    let run = config.config().as_ref().unwrap();
    assert_eq!(run.user().as_deref(), Some("65532:65532"));
    assert_eq!(run.entrypoint().as_ref().unwrap(), &["/bin/x".to_string()]);
    // The layer holds the file under its parents, and passwd names the user.
    let layer = blob(&manifest.layers()[0]);
    let mut names = Vec::new();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&layer[..]));
    for e in ar.entries().unwrap() {
        names.push(e.unwrap().path().unwrap().to_string_lossy().into_owned());
    }
    assert_eq!(names, ["bin", "bin/x", "etc", "etc/group", "etc/passwd"]);
    assert_eq!(config.rootfs().diff_ids().len(), 1);
}

#[test]
fn ldd_lines() {
    let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x1)\n\t/lib64/ld-linux-x86-64.so.2 (0x2)\n\tlibgone.so => not found\n";
    assert_eq!(
        postgres::parse_ldd(out),
        [
            PathBuf::from("/lib/x86_64-linux-gnu/libz.so.1"),
            PathBuf::from("/lib64/ld-linux-x86-64.so.2")
        ]
    );
}
