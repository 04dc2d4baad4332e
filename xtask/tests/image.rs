//! The sidecar image: built by `cargo xtask sidecar-image`, validated by skopeo, unpacked by
//! umoci and run by runc (`--one-time`, read-only root, uid 65532) against a real S3 server.

mod common;
use common::*;

use std::fs;
use std::process::Command;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n")
}

fn sha256_file(p: &std::path::Path) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(fs::read(p).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn sidecar_image_is_reproducible_valid_and_runs() {
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a.tar");
    let b = t.path().join("b.tar");
    let first = xtask(t.path(), &[], &["sidecar-image", "-o", a.to_str().unwrap()]).ok();
    let second = xtask(t.path(), &[], &["sidecar-image", "-o", b.to_str().unwrap()]).ok();
    assert_eq!(
        first.last("digest"),
        second.last("digest"),
        "same binary, same image digest"
    );
    assert_eq!(sha256_file(&a), sha256_file(&b));
    let image = first.last("image");
    assert!(
        image.starts_with("docker.io/aether/fetcher:") && !image.ends_with(":latest"),
        "{image}"
    );
    let tag = image.rsplit_once(':').unwrap().1.to_string();
    eprintln!("image archive: {} bytes", fs::metadata(&a).unwrap().len());

    let missing: Vec<&str> = ["skopeo", "umoci", "runc"]
        .into_iter()
        .filter(|t| !have(t))
        .collect();
    if !missing.is_empty() || !is_root() {
        // `cargo xtask test` installs these; only a bare `cargo test` without them gets here.
        return skip(&format!(
            "image validation: missing {missing:?} or not root (runc needs root)"
        ));
    }
    // skopeo reads the archive and its config.
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--config",
            &format!("oci-archive:{}:{tag}", a.display()),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cfg["config"]["User"], "65532:65532");
    assert_eq!(cfg["config"]["Entrypoint"][0], "/aether-fetcher");

    // umoci unpacks it into a runtime bundle.
    let layout = t.path().join("layout");
    fs::create_dir(&layout).unwrap();
    assert!(Command::new("tar")
        .arg("-xf")
        .arg(&a)
        .arg("-C")
        .arg(&layout)
        .status()
        .unwrap()
        .success());
    let bundle = t.path().join("bundle");
    let out = Command::new("umoci")
        .args(["unpack", "--image", &format!("{}:{tag}", layout.display())])
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "umoci: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entries: Vec<String> = fs::read_dir(bundle.join("rootfs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut entries = entries;
    entries.sort();
    assert_eq!(
        entries,
        ["aether-fetcher", "etc"],
        "nothing but the binary and passwd/group"
    );

    // A real artifact in a real store; the container fetches it once and exits 0.
    let server = aether_s3local::Server::start_ephemeral(&t.path().join("s3"), AK, SK).unwrap();
    let env = store_env(&server.endpoint(), SK);
    let app = app_dir(t.path(), "console.log('from the image test')\n");
    let digest = xtask(
        t.path(),
        &as_refs(&env),
        &["hot-upload", "demo", app.to_str().unwrap()],
    )
    .ok()
    .last("digest");
    let host = t.path().join("host");
    for d in ["work", "podinfo", "release"] {
        fs::create_dir_all(host.join(d)).unwrap();
    }
    assert!(Command::new("chown")
        .args(["65532:65532"])
        .arg(host.join("work"))
        .status()
        .unwrap()
        .success());
    fs::write(host.join("podinfo/annotations"), format!("aether.dev/app=\"demo\"\naether.dev/digest=\"{digest}\"\naether.dev/generation=\"1\"\nkubernetes.io/config.source=\"api\"")).unwrap();
    let cfg_path = bundle.join("config.json");
    let mut c: serde_json::Value = serde_json::from_slice(&fs::read(&cfg_path).unwrap()).unwrap();
    // Share the host's network so the container reaches the store on loopback.
    let ns: Vec<serde_json::Value> = c["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["type"] != "network")
        .cloned()
        .collect();
    c["linux"]["namespaces"] = serde_json::json!(ns);
    c["process"]["args"] = serde_json::json!(["/aether-fetcher", "--one-time", "--app", "demo"]);
    c["process"]["env"] = serde_json::json!([
        "PATH=/",
        format!("AETHER_S3_ENDPOINT={}", server.endpoint()),
        format!("AETHER_S3_ACCESS_KEY={AK}"),
        format!("AETHER_S3_SECRET_KEY={SK}"),
        "AETHER_S3_BUCKET=xtask-test",
    ]);
    c["process"]["terminal"] = serde_json::json!(false);
    c["root"]["readonly"] = serde_json::json!(true);
    let mounts = c["mounts"].as_array_mut().unwrap();
    for (src, dst, mode) in [
        ("work", "/work", "rw"),
        ("podinfo", "/etc/podinfo", "ro"),
        ("release", "/etc/aether/release", "ro"),
    ] {
        mounts.push(serde_json::json!({"destination": dst, "type": "bind", "source": host.join(src), "options": ["rbind", mode]}));
    }
    fs::write(&cfg_path, serde_json::to_vec(&c).unwrap()).unwrap();
    let id = format!("aether-image-test-{}", std::process::id());
    let out = Command::new("timeout")
        .args(["60", "runc", "run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .output()
        .unwrap();
    let _ = Command::new("runc").args(["delete", "-f", &id]).output();
    let log =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "runc: {log}");
    assert!(
        log.contains(&format!("new digest {digest} generation 1")),
        "{log}"
    );
    assert_eq!(
        fs::read_to_string(host.join("work/current/server.js")).unwrap(),
        "console.log('from the image test')\n"
    );
    assert!(!log.contains(SK));
    // Files were written by uid 65532, not root.
    let meta =
        std::os::unix::fs::MetadataExt::uid(&fs::metadata(host.join("work/.releases")).unwrap());
    assert_eq!(meta, 65532);
}
