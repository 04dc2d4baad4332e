//! Which version is wanted: the release ConfigMap as the API watch delivers it (fastest), the
//! pod's annotations (patched by `hot-patch`) and the ConfigMap's mounted files (durable: what
//! a new pod starts from). The higher generation wins. Both files are re-opened on every read
//! because the kubelet replaces them through a `..data` symlink swap.

use std::fs;
use std::io;
use std::path::Path;
use std::time::Duration;

use aether_artifact::podinfo::parse_annotations;
use aether_artifact::{keys, release, Digest};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub digest: Digest,
    pub generation: u64,
    pub source: &'static str,
    /// Unix ms before which it must not go live (a barrier's activation).
    pub activate_at_ms: Option<u64>,
}

#[derive(Debug, Default)]
pub struct Desired {
    pub wanted: Option<Wanted>,
    /// `aether.dev/app` from the annotations.
    pub app: Option<String>,
    /// `aether.dev/fetch-interval` from the annotations.
    pub interval: Option<Duration>,
    /// A release to fetch and keep ready without making it live (`aether.dev/stage`).
    pub stage: Option<Digest>,
    /// The inspector port `cargo xtask debug` asked this pod's app for (`aether.dev/debug`).
    pub inspect: Option<u16>,
    /// Problems worth a log line; a broken source is skipped, never fatal.
    pub warnings: Vec<String>,
}

pub fn read(
    annotations_file: &Path,
    release_dir: &Path,
    api: Option<&std::collections::BTreeMap<String, String>>,
) -> Desired {
    let mut d = Desired::default();
    let mut candidates = Vec::new();
    let mut api_stage = None;
    if let Some(data) = api {
        let get = |k: &str| data.get(k).map(String::as_str);
        match source(
            "api",
            get(release::DIGEST),
            get(release::GENERATION),
            get(release::ACTIVATE_AT),
        ) {
            Ok(Some(w)) => candidates.push(w),
            Ok(None) => {}
            Err(e) => d.warnings.push(format!("the watched ConfigMap: {e}")),
        }
        if let Some(s) = get(release::STAGE).map(str::trim).filter(|s| !s.is_empty()) {
            match Digest::parse(s) {
                Ok(dg) => api_stage = Some(dg),
                Err(e) => d.warnings.push(format!(
                    "the watched ConfigMap's {} ignored: {e}",
                    release::STAGE
                )),
            }
        }
    }

    match fs::read_to_string(annotations_file) {
        Ok(text) => {
            let parsed = parse_annotations(&text);
            for (line, why) in &parsed.bad {
                d.warnings.push(format!(
                    "{}: line {line} ignored: {why}",
                    annotations_file.display()
                ));
            }
            let v = &parsed.values;
            d.app = v.get(keys::APP).cloned();
            if let Some(iv) = v.get(keys::FETCH_INTERVAL) {
                match humantime::parse_duration(iv) {
                    Ok(i) if i >= Duration::from_millis(10) => d.interval = Some(i),
                    _ => d.warnings.push(format!(
                        "annotation {} = {iv:?} is not a duration like `2s`; ignored",
                        keys::FETCH_INTERVAL
                    )),
                }
            }
            match v
                .get(keys::DEBUG)
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
            {
                None => {}
                Some(p) => match p.parse::<u16>() {
                    Ok(p) if p > 0 => d.inspect = Some(p),
                    _ => d.warnings.push(format!(
                        "annotation {} = {p:?} is not a port; the inspector stays off",
                        keys::DEBUG
                    )),
                },
            }
            if let Some(s) = v
                .get(keys::STAGE)
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
            {
                match Digest::parse(s) {
                    Ok(dg) => d.stage = Some(dg),
                    Err(e) => d
                        .warnings
                        .push(format!("annotation {} ignored: {e}", keys::STAGE)),
                }
            }
            match source(
                "annotations",
                v.get(keys::DIGEST).map(String::as_str),
                v.get(keys::GENERATION).map(String::as_str),
                v.get(keys::ACTIVATE_AT).map(String::as_str),
            ) {
                Ok(Some(w)) => candidates.push(w),
                Ok(None) => {}
                Err(e) => d
                    .warnings
                    .push(format!("{}: {e}", annotations_file.display())),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => d
            .warnings
            .push(format!("{}: {e}; skipped", annotations_file.display())),
    }

    // Both keys from one snapshot: the kubelet publishes a new `..data` by symlink swap and adds
    // the visible per-key symlinks one by one on first write, so opening each key by its own
    // name could pair a new digest with an old (or not yet linked) generation.
    let snapshot = fs::read_link(release_dir.join(aether_artifact::podinfo::DATA_LINK))
        .map(|t| release_dir.join(t))
        .unwrap_or_else(|_| release_dir.to_path_buf());
    let read_key = |k: &str| -> Result<Option<String>, String> {
        match fs::read_to_string(snapshot.join(k)) {
            Ok(s) => Ok(Some(s.trim().to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}; skipped", release_dir.join(k).display())),
        }
    };
    match (
        read_key(release::DIGEST),
        read_key(release::GENERATION),
        read_key(release::ACTIVATE_AT),
    ) {
        (Ok(dg), Ok(gen), Ok(at)) => {
            match source("release", dg.as_deref(), gen.as_deref(), at.as_deref()) {
                Ok(Some(w)) => candidates.push(w),
                Ok(None) => {}
                Err(e) => d.warnings.push(format!("{}: {e}", release_dir.display())),
            }
        }
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => d.warnings.push(e),
    }

    // A stage request the watch delivered is the freshest news; the annotation is the fallback
    // (and what a CLI that writes only annotations uses).
    d.stage = api_stage.or(d.stage);
    // Ties go to the first candidate: all name the same version then.
    d.wanted = candidates
        .into_iter()
        .reduce(|a, b| if b.generation > a.generation { b } else { a });
    d
}

fn source(
    name: &'static str,
    digest: Option<&str>,
    generation: Option<&str>,
    activate_at: Option<&str>,
) -> Result<Option<Wanted>, String> {
    let skipped = |e: String| format!("{e}; skipped");
    let Some(digest) = release::parse_digest(digest).map_err(skipped)? else {
        return Ok(None);
    };
    let generation = release::parse_generation(generation).map_err(skipped)?;
    let activate_at_ms = release::parse_activate_at(activate_at);
    Ok(Some(Wanted {
        digest,
        generation,
        source: name,
        activate_at_ms,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aether_artifact::podinfo::{format_annotations, write_atomic_volume};
    use std::collections::BTreeMap;

    fn d(c: char) -> String {
        c.to_string().repeat(64)
    }

    fn setup(
        ann: Option<&[(&str, &str)]>,
        rel: Option<(&str, &str)>,
    ) -> (tempfile::TempDir, Desired) {
        let t = tempfile::tempdir().unwrap();
        if let Some(a) = ann {
            let m: BTreeMap<String, String> = a
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let files = [(
                "annotations".to_string(),
                format_annotations(&m).into_bytes(),
            )]
            .into_iter()
            .collect();
            write_atomic_volume(&t.path().join("podinfo"), &files).unwrap();
        }
        if let Some((dg, gen)) = rel {
            let files = [
                ("digest".to_string(), dg.as_bytes().to_vec()),
                ("generation".to_string(), gen.as_bytes().to_vec()),
            ]
            .into_iter()
            .collect();
            write_atomic_volume(&t.path().join("release"), &files).unwrap();
        }
        let des = read(
            &t.path().join("podinfo/annotations"),
            &t.path().join("release"),
            None,
        );
        (t, des)
    }

    #[test]
    fn higher_generation_wins_either_way() {
        let (_t, x) = setup(
            Some(&[
                (keys::DIGEST, &d('a')),
                (keys::GENERATION, "5"),
                (keys::APP, "demo"),
            ]),
            Some((&d('b'), "4")),
        );
        assert_eq!(x.wanted.unwrap().digest.to_string(), d('a'));
        assert_eq!(x.app.as_deref(), Some("demo"));
        let (_t, x) = setup(
            Some(&[(keys::DIGEST, &d('a')), (keys::GENERATION, "5")]),
            Some((&d('b'), "6")),
        );
        let w = x.wanted.unwrap();
        assert_eq!(
            (w.digest.to_string(), w.generation, w.source),
            (d('b'), 6, "release")
        );
    }

    #[test]
    fn missing_and_broken_sources_are_skipped_with_a_warning() {
        let (_t, x) = setup(None, None);
        assert!(x.wanted.is_none() && x.warnings.is_empty());
        let (_t, x) = setup(
            Some(&[(keys::DIGEST, "not-a-digest"), (keys::GENERATION, "9")]),
            Some((&d('c'), "2")),
        );
        assert_eq!(x.wanted.unwrap().digest.to_string(), d('c'));
        assert!(
            x.warnings.iter().any(|w| w.contains("64 lowercase hex")),
            "{:?}",
            x.warnings
        );
        let (_t, x) = setup(None, Some((&d('c'), "two")));
        assert!(x.wanted.is_none());
        assert!(
            x.warnings.iter().any(|w| w.contains("whole number")),
            "{:?}",
            x.warnings
        );
        let (_t, x) = setup(Some(&[(keys::FETCH_INTERVAL, "250ms")]), None);
        assert_eq!(x.interval, Some(Duration::from_millis(250)));
    }

    #[test]
    fn stage_and_activation_time_are_read() {
        let (_t, x) = setup(
            Some(&[
                (keys::DIGEST, &d('a')),
                (keys::GENERATION, "5"),
                (keys::STAGE, &d('b')),
                (keys::ACTIVATE_AT, "1700000000123"),
            ]),
            None,
        );
        assert_eq!(x.stage.unwrap().to_string(), d('b'));
        assert_eq!(x.wanted.unwrap().activate_at_ms, Some(1700000000123));
        // Cleared (empty) and broken values: nothing staged, activation at once.
        let (_t, x) = setup(
            Some(&[
                (keys::DIGEST, &d('a')),
                (keys::STAGE, ""),
                (keys::ACTIVATE_AT, "soon"),
            ]),
            None,
        );
        assert_eq!(x.stage, None);
        assert_eq!(x.wanted.unwrap().activate_at_ms, None);
        let (_t, x) = setup(Some(&[(keys::STAGE, "zz")]), None);
        assert!(x.stage.is_none() && !x.warnings.is_empty());
    }

    #[test]
    fn the_watched_configmap_is_one_more_source_and_its_stage_wins() {
        let (t, _) = setup(
            Some(&[
                (keys::DIGEST, &d('a')),
                (keys::GENERATION, "5"),
                (keys::STAGE, &d('e')),
            ]),
            Some((&d('b'), "5")),
        );
        let api: std::collections::BTreeMap<String, String> = [
            (release::DIGEST, d('c')),
            (release::GENERATION, "6".to_string()),
            (release::ACTIVATE_AT, "1700000000999".to_string()),
            (release::STAGE, d('f')),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let x = read(
            &t.path().join("podinfo/annotations"),
            &t.path().join("release"),
            Some(&api),
        );
        let w = x.wanted.unwrap();
        assert_eq!(
            (
                w.digest.to_string(),
                w.generation,
                w.source,
                w.activate_at_ms
            ),
            (d('c'), 6, "api", Some(1700000000999))
        );
        assert_eq!(x.stage.unwrap().to_string(), d('f'));
        // An older generation from the watch loses; no stage there: the annotation's.
        let old: std::collections::BTreeMap<String, String> = [
            (release::DIGEST.to_string(), d('c')),
            (release::GENERATION.to_string(), "4".into()),
        ]
        .into_iter()
        .collect();
        let x = read(
            &t.path().join("podinfo/annotations"),
            &t.path().join("release"),
            Some(&old),
        );
        assert_eq!(x.wanted.unwrap().digest.to_string(), d('a'));
        assert_eq!(x.stage.unwrap().to_string(), d('e'));
    }
}
