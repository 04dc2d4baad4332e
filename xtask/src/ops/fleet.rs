//! The fleet: what runs where. The pods grouped by the release their app serves, and why each
//! pod off the wanted release is there. `hot-status` prints it; the cutover and the UI read it.

use aether_artifact::Digest;

use crate::release::Release;
use crate::targets::PodStatus;

/// What runs where: the pods grouped by the release their app serves, and why a pod does not
/// serve the wanted one.
#[derive(Debug, serde::Serialize)]
pub struct Fleet {
    pub wanted: Option<Digest>,
    pub pods: usize,
    /// Pods whose app serves the wanted release.
    pub serving_wanted: usize,
    /// Every pod serves the wanted release (what the exit code says).
    pub in_sync: bool,
    /// Pods serve more than one release.
    pub skew: bool,
    pub versions: Vec<Version>,
    pub members: Vec<Member>,
}

#[derive(Debug, serde::Serialize)]
pub struct Version {
    /// `null`: nothing served (no release yet, or the status is unreadable).
    pub digest: Option<Digest>,
    pub wanted: bool,
    pub pods: Vec<String>,
}

#[derive(Debug, serde::Serialize)]
pub struct Member {
    pub pod: String,
    pub serves: Option<Digest>,
    pub generation: Option<u64>,
    pub in_sync: bool,
    /// Why it does not serve the wanted release.
    pub reason: Option<String>,
}

impl Fleet {
    pub fn of(desired: &Release, pods: &[PodStatus]) -> Fleet {
        let members: Vec<Member> = pods
            .iter()
            .map(|p| {
                let reason = match desired.digest {
                    Some(w) => p.behind(&w),
                    None => Some("no release is wanted".into()),
                };
                Member {
                    pod: p.pod.clone(),
                    serves: p.serves(),
                    generation: p.status.as_ref().and_then(|s| s.generation),
                    in_sync: reason.is_none(),
                    reason,
                }
            })
            .collect();
        let mut versions: Vec<Version> = Vec::new();
        for m in &members {
            match versions.iter_mut().find(|v| v.digest == m.serves) {
                Some(v) => v.pods.push(m.pod.clone()),
                None => versions.push(Version {
                    digest: m.serves,
                    wanted: m.serves.is_some() && m.serves == desired.digest,
                    pods: vec![m.pod.clone()],
                }),
            }
        }
        versions.sort_by_key(|v| (!v.wanted, std::cmp::Reverse(v.pods.len())));
        let serving_wanted = members.iter().filter(|m| m.in_sync).count();
        Fleet {
            wanted: desired.digest,
            pods: members.len(),
            serving_wanted,
            in_sync: !members.is_empty() && serving_wanted == members.len(),
            skew: versions.len() > 1,
            versions,
            members,
        }
    }

    /// One line: all in sync, or the skew and why each pod off the wanted release is there.
    pub fn line(&self) -> String {
        let short = |d: &Option<Digest>| d.map(|d| d.short()).unwrap_or_else(|| "nothing".into());
        if self.in_sync {
            return format!(
                "fleet: all {} pod(s) serve {} (wanted)",
                self.pods,
                short(&self.wanted)
            );
        }
        let groups: Vec<String> = self
            .versions
            .iter()
            .map(|v| {
                format!(
                    "{} serve{} {}{}",
                    v.pods.len(),
                    if v.pods.len() == 1 { "s" } else { "" },
                    short(&v.digest),
                    if v.wanted { " (wanted)" } else { "" }
                )
            })
            .collect();
        let why: Vec<String> = self
            .members
            .iter()
            .filter_map(|m| m.reason.clone())
            .collect();
        format!(
            "fleet: {}{}: {}",
            if self.skew { "SKEW: " } else { "" },
            groups.join(", "),
            why.join("; ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aether_artifact::Status;

    /// The fleet view groups pods by what their app serves (aether-run's digest over the
    /// fetcher's), and names the reason of each pod off the wanted release.
    #[test]
    fn the_fleet_view_flags_skew_with_reasons() {
        let d = |c: char| Digest::parse(&c.to_string().repeat(64)).unwrap();
        let want = Release::default().next(d('a')).unwrap();
        let pod = |name: &str, live: char, runs: char| PodStatus {
            pod: name.into(),
            url: None,
            status: Some(Status {
                digest: Some(d(live)),
                generation: Some(1),
                runner: Some(aether_artifact::RunnerStatus {
                    digest: Some(d(runs)),
                    last_failure: (live != runs).then(|| "exited with status 3".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            error: None,
        };
        let all = [pod("p1", 'a', 'a'), pod("p2", 'a', 'a')];
        let f = Fleet::of(&want, &all);
        assert!(f.in_sync && !f.skew, "{f:?}");
        assert_eq!(f.line(), "fleet: all 2 pod(s) serve aaaaaaaaaaaa (wanted)");
        // p3 fetched the release but its app did not start it: it serves b.
        let split = [
            pod("p1", 'a', 'a'),
            pod("p2", 'a', 'a'),
            pod("p3", 'a', 'b'),
        ];
        let f = Fleet::of(&want, &split);
        assert!(!f.in_sync && f.skew);
        assert_eq!(f.serving_wanted, 2);
        assert_eq!(f.versions[0].pods, ["p1", "p2"]);
        assert_eq!(f.versions[1].digest, Some(d('b')));
        let line = f.line();
        assert!(
            line.starts_with("fleet: SKEW: 2 serve aaaaaaaaaaaa (wanted), 1 serves bbbbbbbbbbbb: p3 fetched aaaaaaaaaaaa but its app still runs bbbbbbbbbbbb (exited with status 3)"),
            "{line}"
        );
        let unreadable = [PodStatus::new(
            "p4".into(),
            None,
            Err(anyhow::anyhow!("gone")),
        )];
        let f = Fleet::of(&want, &unreadable);
        assert!(!f.in_sync && !f.skew, "one pod is no skew, only behind");
        assert_eq!(
            f.members[0].reason.as_deref(),
            Some("p4: status unreadable: gone")
        );
    }
}
