//! Where the time of one reload went: its stages, each ending when the slowest pod ends it,
//! from the command's own clock and each fetcher's and `aether-run`'s timestamps.

use aether_artifact::Digest;

use crate::release::Release;
use crate::targets::PodStatus;

/// One request of the probe: (sent, answered or failed, answered with 2xx), unix ms.
pub type Shot = (u64, u64, bool);

/// The stages of the pods' fetch of `digest`: "seen" (the latest of their fetches' and
/// `seen`), "download", "verify+extract". Returns that "seen".
pub(super) fn fetch_marks(
    marks: &mut Vec<(Stage, u64)>,
    pods: &[PodStatus],
    digest: &Digest,
    seen: Option<u64>,
) -> Option<u64> {
    let fetched: Vec<_> = pods
        .iter()
        .filter_map(|p| p.status.as_ref()?.fetch.clone())
        .filter(|f| f.digest == *digest)
        .collect();
    let seen = fetched.iter().map(|f| f.seen_at_ms).chain(seen).max();
    if let Some(s) = seen {
        marks.push((Stage::Seen, s));
    }
    push_max(
        marks,
        Stage::Download,
        fetched.iter().map(|f| f.seen_at_ms + f.download_ms),
    );
    push_max(
        marks,
        Stage::VerifyExtract,
        fetched.iter().map(|f| f.ready_at_ms),
    );
    seen
}

pub(super) fn push_max(marks: &mut Vec<(Stage, u64)>, name: Stage, v: impl Iterator<Item = u64>) {
    if let Some(m) = v.max() {
        marks.push((name, m));
    }
}

/// Where the time of one reload went: the critical path through every pod, from the command's
/// own clock and each fetcher's and `aether-run`'s timestamps.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Trace {
    pub digest: Digest,
    pub generation: u64,
    pub pods: usize,
    pub barrier: bool,
    /// The origin (unix ms): the command's start, the save (`dev`), or the first pod seeing it.
    pub started_at_ms: u64,
    /// In order; each stage's time runs from the end of the one before (the slowest pod's).
    pub stages: Vec<StageTime>,
    pub total_ms: u64,
    /// From the first to the last pod switching its app to the release (more than one pod).
    pub spread_ms: Option<u64>,
    /// Requests the probe sent during the reload, and how many did not get a 2xx.
    pub requests: usize,
    pub failed_requests: usize,
    /// Per pod: its own timestamps (unix ms).
    pub per_pod: Vec<PodTrace>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StageTime {
    pub stage: Stage,
    pub ms: u64,
}

/// The stages of a reload, in the order they can happen; each ends at a mark of the command's
/// own clock or of the slowest pod's. Printed (and in `--json`) by [`Stage::name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The command started: the origin, not a stage of its own.
    Start,
    /// `dev`: the edit was saved (the origin of a `dev` trace).
    Save,
    Debounce,
    Pack,
    Upload,
    /// The cutover's first phase was asked of every pod.
    Prepare,
    /// The release was published without a cutover.
    Signal,
    Seen,
    Download,
    VerifyExtract,
    /// The cutover's release was published with its activation time.
    ActivationSignal,
    UntilActivation,
    Swap,
    AppReady,
    FirstResponse,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Start => "start",
            Stage::Save => "save",
            Stage::Debounce => "debounce",
            Stage::Pack => "pack",
            Stage::Upload => "upload",
            Stage::Prepare => "stage signal",
            Stage::Signal => "signal",
            Stage::Seen => "seen",
            Stage::Download => "download",
            Stage::VerifyExtract => "verify+extract",
            Stage::ActivationSignal => "activation signal",
            Stage::UntilActivation => "until activation",
            Stage::Swap => "swap",
            Stage::AppReady => "app ready",
            Stage::FirstResponse => "first response",
        }
    }

    /// The command telling the pods: what ends the command's own work and starts theirs (the
    /// first of these in a trace).
    pub fn tells_the_pods(self) -> bool {
        matches!(
            self,
            Stage::Signal | Stage::Prepare | Stage::ActivationSignal
        )
    }
}

impl serde::Serialize for Stage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PodTrace {
    pub pod: String,
    pub seen_at_ms: Option<u64>,
    pub download_ms: Option<u64>,
    pub verify_extract_ms: Option<u64>,
    /// When the release was complete on disk (the end of verify+extract, as the whole trace's
    /// stage counts it).
    pub ready_at_ms: Option<u64>,
    pub published_at_ms: Option<u64>,
    pub switched_at_ms: Option<u64>,
}

impl Trace {
    pub fn new(
        release: &Release,
        mut marks: Vec<(Stage, u64)>,
        pods: &[PodStatus],
        probes: &[Shot],
        barrier: bool,
    ) -> Trace {
        let digest = release.digest.expect("a published release names a digest");
        let per_pod: Vec<PodTrace> = pods
            .iter()
            .filter_map(|p| {
                let s = p.status.as_ref()?;
                let f = s.fetch.as_ref().filter(|f| f.digest == digest);
                let live = s.digest == Some(digest);
                Some(PodTrace {
                    pod: p.pod.clone(),
                    seen_at_ms: if live { s.seen_at_ms } else { None },
                    download_ms: f.map(|f| f.download_ms),
                    verify_extract_ms: f.map(|f| f.verify_extract_ms),
                    ready_at_ms: f.map(|f| f.ready_at_ms),
                    published_at_ms: if live { s.published_at_ms } else { None },
                    switched_at_ms: s
                        .runner
                        .as_ref()
                        .filter(|r| r.digest == Some(digest))
                        .and_then(|r| r.switched_at_ms),
                })
            })
            .collect();
        if !barrier {
            // Without a barrier the pass that made it live also fetched it (or found it on
            // disk: a rollback).
            let seen = per_pod.iter().filter_map(|p| p.seen_at_ms).max();
            fetch_marks(&mut marks, pods, &digest, seen);
        }
        push_max(
            &mut marks,
            Stage::Swap,
            per_pod.iter().filter_map(|p| p.published_at_ms),
        );
        let switched: Vec<u64> = per_pod.iter().filter_map(|p| p.switched_at_ms).collect();
        push_max(&mut marks, Stage::AppReady, switched.iter().copied());
        let last_switch = switched.iter().max().copied();
        let start = marks.first().map_or(0, |m| m.1);
        let from = last_switch.unwrap_or(start);
        if let Some(first) = probes.iter().find(|s| s.2 && s.0 >= from) {
            marks.push((Stage::FirstResponse, first.1));
        }
        let mut stages = Vec::new();
        let mut prev = start;
        for (name, at) in marks.iter().skip(1) {
            stages.push(StageTime {
                stage: *name,
                ms: at.saturating_sub(prev),
            });
            prev = prev.max(*at);
        }
        let in_reload: Vec<&Shot> = probes.iter().filter(|s| s.0 >= start).collect();
        Trace {
            digest,
            generation: release.generation,
            pods: pods.len(),
            barrier,
            started_at_ms: start,
            stages,
            total_ms: prev.saturating_sub(start),
            spread_ms: (switched.len() > 1)
                .then(|| switched.iter().max().unwrap() - switched.iter().min().unwrap()),
            requests: in_reload.len(),
            failed_requests: in_reload.iter().filter(|s| !s.2).count(),
            per_pod,
        }
    }

    /// One line: `trace <digest> gen N (pods, barrier): stage 12 ms · … = total; spread; probe`.
    pub fn line(&self) -> String {
        let stages: Vec<String> = self
            .stages
            .iter()
            .map(|s| format!("{} {} ms", s.stage.name(), s.ms))
            .collect();
        let mut out = format!(
            "trace {} gen {} ({} pod{}{}): {} = {} ms",
            self.digest.short(),
            self.generation,
            self.pods,
            if self.pods == 1 { "" } else { "s" },
            if self.barrier { ", barrier" } else { "" },
            stages.join(" · "),
            self.total_ms
        );
        if let Some(s) = self.spread_ms {
            out.push_str(&format!("; replicas switched within {s} ms"));
        }
        if self.requests > 0 {
            out.push_str(&format!(
                "; {} of {} requests failed",
                self.failed_requests, self.requests
            ));
        }
        out
    }
}
