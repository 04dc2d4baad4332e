use std::fmt;

/// An application name: a DNS-1123 label, because it becomes a Kubernetes object name, a label
/// value and a path component.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppName(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid app name {name:?}: {why}; an app name must be a DNS-1123 label: 1-63 characters, lowercase letters, digits and '-', starting and ending with a letter or digit (e.g. `demo`, `my-api`)")]
pub struct NameError {
    pub name: String,
    pub why: &'static str,
}

impl AppName {
    pub fn parse(s: &str) -> Result<AppName, NameError> {
        let err = |why| NameError {
            name: s.to_string(),
            why,
        };
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        if s.len() > 63 {
            return Err(err("it is longer than 63 characters"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(err("it contains a character other than a-z, 0-9 and '-'"));
        }
        if s.starts_with('-') || s.ends_with('-') {
            return Err(err("it starts or ends with '-'"));
        }
        Ok(AppName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for AppName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AppName::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names() {
        for n in ["a", "demo", "my-api", "a1", "1a", &"x".repeat(63)] {
            assert_eq!(AppName::parse(n).unwrap().as_str(), n);
        }
    }

    #[test]
    fn invalid_names_say_why_and_show_the_rule() {
        for (n, why) in [
            ("", "empty"),
            (&"x".repeat(64) as &str, "longer than 63"),
            ("Demo", "other than"),
            ("my_app", "other than"),
            ("a.b", "other than"),
            ("-a", "starts or ends"),
            ("a-", "starts or ends"),
            ("../x", "other than"),
        ] {
            let e = AppName::parse(n).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(why), "{n:?}: {msg}");
            assert!(msg.contains("DNS-1123"), "{msg}");
        }
    }
}
