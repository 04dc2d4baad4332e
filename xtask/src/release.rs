//! The release record: what the app's release ConfigMap holds (keys `digest`, `generation`,
//! `history`), whichever target stores it. Every hot-patch and rollback makes a new generation.

use std::collections::BTreeMap;

use aether_artifact::{release, Digest};
use anyhow::{bail, Result};

/// Previous digests kept for `rollback`.
pub const HISTORY: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Release {
    pub digest: Option<Digest>,
    pub generation: u64,
    /// Previous digests, most recent first.
    pub history: Vec<Digest>,
    /// Unix ms before which no pod makes it live: set by a cutover across replicas, so every
    /// pod (also one that reads this before its annotations) switches at the same moment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activate_at: Option<u64>,
}

impl Release {
    /// From the ConfigMap's data (or the local release directory's files).
    pub fn from_data(data: &BTreeMap<String, String>) -> Result<Release> {
        let field = |k: &str| data.get(k).map(String::as_str);
        let digest = release::parse_digest(field(release::DIGEST))
            .map_err(|e| anyhow::anyhow!("release digest: {e}"))?;
        let generation = release::parse_generation(field(release::GENERATION))
            .map_err(|e| anyhow::anyhow!("release {e}"))?;
        let history = data
            .get(release::HISTORY)
            .map(|h| {
                h.split_whitespace()
                    .map(Digest::parse)
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        let activate_at = release::parse_activate_at(field(release::ACTIVATE_AT));
        Ok(Release {
            digest,
            generation,
            history,
            activate_at,
        })
    }

    /// The pod annotations that carry this release to the fetchers (the downward-API file
    /// they read), with the cutover's stage request `stage`: `None` clears it, as every
    /// publish does. Both targets write exactly these.
    pub fn annotations(&self, stage: Option<Digest>) -> BTreeMap<String, String> {
        use aether_artifact::keys;
        let mut a = BTreeMap::new();
        if let Some(d) = self.digest {
            a.insert(keys::DIGEST.to_string(), d.to_string());
        }
        a.insert(keys::GENERATION.to_string(), self.generation.to_string());
        a.insert(
            keys::ACTIVATE_AT.to_string(),
            self.activate_at.map(|t| t.to_string()).unwrap_or_default(),
        );
        a.insert(
            keys::STAGE.to_string(),
            stage.map(|d| d.to_string()).unwrap_or_default(),
        );
        a
    }

    pub fn to_data(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert(
            release::DIGEST.into(),
            self.digest.map(|d| d.to_string()).unwrap_or_default(),
        );
        m.insert(release::GENERATION.into(), self.generation.to_string());
        m.insert(
            release::HISTORY.into(),
            self.history
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        );
        m.insert(
            release::ACTIVATE_AT.into(),
            self.activate_at.map(|t| t.to_string()).unwrap_or_default(),
        );
        m
    }

    /// The release after switching to `digest`; `None` when it is already the live one.
    pub fn next(&self, digest: Digest) -> Option<Release> {
        if self.digest == Some(digest) {
            return None;
        }
        let mut history = self.history.clone();
        if let Some(prev) = self.digest {
            history.retain(|d| *d != prev);
            history.insert(0, prev);
        }
        history.retain(|d| *d != digest);
        history.truncate(HISTORY);
        Some(Release {
            digest: Some(digest),
            generation: self.generation + 1,
            history,
            activate_at: None,
        })
    }

    /// As [`Release::next`], saying so when there is nothing to do (shared by every target).
    pub fn next_or_say(&self, app: &impl std::fmt::Display, digest: Digest) -> Option<Release> {
        let next = self.next(digest);
        if next.is_none() {
            eprintln!(
                "{app} already wants {} (generation {}): nothing to do",
                digest.short(),
                self.generation
            );
        }
        next
    }

    /// Where `rollback` goes: `to`, or the most recent previous digest.
    pub fn rollback_target(&self, to: Option<Digest>) -> Result<Digest> {
        match to {
            Some(d) if self.digest == Some(d) => bail!("{d} is already the live version"),
            Some(d) => Ok(d),
            None => match self.history.first() {
                Some(d) => Ok(*d),
                None => bail!("no previous version to roll back to: the history is empty (pass --to <digest>)"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> Digest {
        Digest::parse(&c.to_string().repeat(64)).unwrap()
    }

    #[test]
    fn next_bumps_generation_and_keeps_bounded_history() {
        let r0 = Release::default();
        let r1 = r0.next(d('a')).unwrap();
        assert_eq!((r1.generation, r1.history.len()), (1, 0));
        assert!(
            r1.next(d('a')).is_none(),
            "same digest is not a new generation"
        );
        let r2 = r1.next(d('b')).unwrap();
        assert_eq!((r2.generation, r2.history.clone()), (2, vec![d('a')]));
        let back = r2.next(r2.rollback_target(None).unwrap()).unwrap();
        assert_eq!(
            (back.digest, back.generation, back.history.clone()),
            (Some(d('a')), 3, vec![d('b')])
        );
        let mut r = back;
        for c in "0123456789abcdef".chars() {
            r = r.next(d(c)).unwrap_or(r);
        }
        assert_eq!(r.history.len(), HISTORY);
        assert_eq!(Release::from_data(&r.to_data()).unwrap(), r);
        r.activate_at = Some(1_700_000_000_123);
        assert_eq!(Release::from_data(&r.to_data()).unwrap(), r);
        assert_eq!(r.next(d('e')).unwrap().activate_at, None);
    }

    #[test]
    fn rollback_errors() {
        assert!(Release::default()
            .rollback_target(None)
            .unwrap_err()
            .to_string()
            .contains("--to"));
        let r = Release::default().next(d('a')).unwrap();
        assert!(r
            .rollback_target(Some(d('a')))
            .unwrap_err()
            .to_string()
            .contains("already"));
        assert!(Release::from_data(
            &[("generation".to_string(), "x".to_string())]
                .into_iter()
                .collect()
        )
        .is_err());
    }
}
