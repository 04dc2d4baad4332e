use std::fmt;

/// A SHA-256 digest of an artifact's tar.gz bytes, as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid digest {input:?}: {why}; a digest is 64 lowercase hex characters (the sha256 of the artifact), optionally prefixed by `sha256:`, as printed by `cargo xtask hot-upload`")]
pub struct DigestError {
    pub input: String,
    pub why: &'static str,
}

impl Digest {
    pub fn parse(s: &str) -> Result<Digest, DigestError> {
        let err = |why| DigestError {
            input: s.to_string(),
            why,
        };
        let hex = s.strip_prefix("sha256:").unwrap_or(s);
        if hex.len() != 64 {
            return Err(err("it is not 64 characters long"));
        }
        let mut out = [0u8; 32];
        for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
            let nib = |c: u8| match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None,
            };
            match (nib(pair[0]), nib(pair[1])) {
                (Some(h), Some(l)) => out[i] = h << 4 | l,
                _ => return Err(err("it contains a character other than 0-9 and a-f")),
            }
        }
        Ok(Digest(out))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Digest {
        Digest(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 12 hex characters, for humans.
    pub fn short(&self) -> String {
        self.to_string()[..12].to_string()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl std::str::FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_prefix() {
        let hex = "0123456789abcdef".repeat(4);
        let d = Digest::parse(&hex).unwrap();
        assert_eq!(d.to_string(), hex);
        assert_eq!(Digest::parse(&format!("sha256:{hex}")).unwrap(), d);
        assert_eq!(d.short(), "0123456789ab");
    }

    #[test]
    fn refusals() {
        for (s, why) in [
            ("", "64"),
            ("abc", "64"),
            (&"A".repeat(64) as &str, "0-9 and a-f"),
            (&"g".repeat(64), "0-9 and a-f"),
            (&format!("sha512:{}", "a".repeat(64)), "64"),
            (&format!(" {}", "a".repeat(63)), "0-9 and a-f"),
        ] {
            let e = Digest::parse(s).unwrap_err().to_string();
            assert!(e.contains(why), "{s:?}: {e}");
            assert!(e.contains("64 lowercase hex"), "{e}");
        }
    }
}
