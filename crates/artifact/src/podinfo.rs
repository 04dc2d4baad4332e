//! The kubelet's downward-API annotations format and its atomic volume writer.
//!
//! Format (`pkg/fieldpath/fieldpath.go`, `FormatMap`): one `key="value"` line per annotation,
//! keys sorted bytewise, values quoted by Go's `%q` (`strconv.Quote`), final newline trimmed.
//! Writer (`pkg/volume/util/atomic_writer.go`): content goes into a fresh `..<timestamp>`
//! directory, a `..data_tmp` symlink is renamed over `..data`, visible names are symlinks into
//! `..data/`. The local target writes volumes with [`write_atomic_volume`] so the fetcher sees
//! exactly what it sees in a pod.

/// The symlink an atomically written volume (the kubelet's `AtomicWriter`) swaps to publish a
/// new snapshot of all its files at once.
pub const DATA_LINK: &str = "..data";

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::Path;

/// Renders annotations exactly as the kubelet does.
pub fn format_annotations(map: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    for (k, v) in map {
        let _ = writeln!(out, "{k}={}", go_quote(v));
    }
    out.pop();
    out
}

/// Parses the annotations file. Lines that do not parse are returned in `bad` (with the
/// reason) rather than failing the whole file: one odd annotation from another tool must not
/// stop the fetcher.
pub fn parse_annotations(text: &str) -> ParsedAnnotations {
    let mut out = ParsedAnnotations::default();
    for (i, line) in text.split('\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        // Annotation keys cannot contain '=', values can: split at the first one.
        let Some((k, v)) = line.split_once('=') else {
            out.bad.push((i + 1, "no `=` in the line".into()));
            continue;
        };
        match go_unquote(v) {
            Ok(v) => {
                out.values.insert(k.to_string(), v);
            }
            Err(why) => out.bad.push((i + 1, why)),
        }
    }
    out
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ParsedAnnotations {
    pub values: BTreeMap<String, String>,
    /// (1-based line number, reason) for each line that did not parse.
    pub bad: Vec<(usize, String)>,
}

/// Go's `strconv.Quote`. Exact for ASCII and for printable non-ASCII text; for non-ASCII code
/// points Go's `unicode.IsPrint` is approximated by "not a control or whitespace character",
/// which matches it for everything an annotation realistically holds.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            ' ' => out.push(' '),
            c if (c as u32) < 0x20 || c == '\x7f' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_ascii() => out.push(c),
            c if c.is_control() || c.is_whitespace() || is_unassigned_format(c) => {
                if (c as u32) < 0x10000 {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                } else {
                    let _ = write!(out, "\\U{:08x}", c as u32);
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn is_unassigned_format(c: char) -> bool {
    // A few format characters Go escapes that Rust does not class as control or whitespace.
    matches!(c as u32, 0xad | 0x200b..=0x200f | 0x2028..=0x202e | 0x2060..=0x2064 | 0xfeff)
}

/// Go's `strconv.Unquote` for a double-quoted string. Invalid UTF-8 produced by `\x` escapes is
/// replaced by U+FFFD (annotation values come from JSON, so that never happens in practice).
pub fn go_unquote(q: &str) -> Result<String, String> {
    let inner = q
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .filter(|_| q.len() >= 2)
        .ok_or_else(|| format!("value {q:?} is not a double-quoted string"))?;
    let mut out: Vec<u8> = Vec::with_capacity(inner.len());
    let mut chars = inner.chars();
    let hex = |chars: &mut std::str::Chars, n: usize| -> Result<u32, String> {
        let s: String = chars.by_ref().take(n).collect();
        if s.len() != n || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("bad escape digits {s:?} in {q:?}"));
        }
        Ok(u32::from_str_radix(&s, 16).unwrap())
    };
    while let Some(c) = chars.next() {
        match c {
            '"' => return Err(format!("unescaped quote in {q:?}")),
            '\\' => {
                let e = chars
                    .next()
                    .ok_or_else(|| format!("dangling backslash in {q:?}"))?;
                let simple = match e {
                    'a' => Some(b'\x07'),
                    'b' => Some(b'\x08'),
                    'f' => Some(b'\x0c'),
                    'n' => Some(b'\n'),
                    'r' => Some(b'\r'),
                    't' => Some(b'\t'),
                    'v' => Some(b'\x0b'),
                    '\\' => Some(b'\\'),
                    '"' => Some(b'"'),
                    _ => None,
                };
                if let Some(b) = simple {
                    out.push(b);
                    continue;
                }
                match e {
                    'x' => out.push(hex(&mut chars, 2)? as u8),
                    'u' | 'U' => {
                        let v = hex(&mut chars, if e == 'u' { 4 } else { 8 })?;
                        let ch = char::from_u32(v)
                            .ok_or_else(|| format!("invalid code point in {q:?}"))?;
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                    }
                    '0'..='7' => {
                        let rest: String = chars.by_ref().take(2).collect();
                        let digits = format!("{e}{rest}");
                        let v = u32::from_str_radix(&digits, 8)
                            .ok()
                            .filter(|v| digits.len() == 3 && *v <= 255)
                            .ok_or_else(|| format!("bad octal escape in {q:?}"))?;
                        out.push(v as u8);
                    }
                    other => return Err(format!("unknown escape \\{other} in {q:?}")),
                }
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Writes `files` into `dir` the way the kubelet's atomic writer does, replacing whatever the
/// previous call wrote. Readers that re-open `dir/<name>` always see one complete version.
pub fn write_atomic_volume(dir: &Path, files: &BTreeMap<String, Vec<u8>>) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let ts = format!(
        "..{}_{:09}.{}",
        now.as_secs(),
        now.subsec_nanos(),
        std::process::id()
    );
    let ts_dir = dir.join(&ts);
    fs::create_dir(&ts_dir)?;
    for (name, content) in files {
        fs::write(ts_dir.join(name), content)?;
    }
    let tmp_link = dir.join("..data_tmp");
    let _ = fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(&ts, &tmp_link)?;
    let old = fs::read_link(dir.join(DATA_LINK)).ok();
    fs::rename(&tmp_link, dir.join(DATA_LINK))?;
    for name in files.keys() {
        let visible = dir.join(name);
        if fs::symlink_metadata(&visible).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &visible)?;
        }
    }
    // Names that disappeared and the previous timestamped directory go last, as in the kubelet.
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !files.contains_key(&name) {
            let _ = fs::remove_file(entry.path());
        }
    }
    if let Some(old) = old {
        if old != Path::new(&ts) {
            let _ = fs::remove_dir_all(dir.join(old));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_table_matches_go() {
        // Expected strings are what Go 1.22's fmt.Sprintf("%q", s) prints.
        let cases: &[(&str, &str)] = &[
            ("", r#""""#),
            ("plain", r#""plain""#),
            ("a\"b", r#""a\"b""#),
            ("back\\slash", r#""back\\slash""#),
            ("\x07\x08\x0c\n\r\t\x0b", r#""\a\b\f\n\r\t\v""#),
            ("\x00\x01\x1f\x7f", r#""\x00\x01\x1f\x7f""#),
            ("héllo wörld", "\"héllo wörld\""),
            ("日本語", "\"日本語\""),
            ("nbsp\u{a0}x", r#""nbsp\u00a0x""#),
            ("zwsp\u{200b}", r#""zwsp\u200b""#),
            ("emoji 🚀", "\"emoji 🚀\""),
            ("{\"json\":[1,2]}", r#""{\"json\":[1,2]}""#),
            ("a=b", r#""a=b""#),
        ];
        for (raw, quoted) in cases {
            assert_eq!(go_quote(raw), *quoted, "quote {raw:?}");
            assert_eq!(go_unquote(quoted).unwrap(), *raw, "unquote {quoted:?}");
        }
    }

    #[test]
    fn unquote_accepts_every_go_escape() {
        assert_eq!(
            go_unquote(r#""\x41\101\u00e9\U0001F680""#).unwrap(),
            "AAé🚀"
        );
        // Invalid UTF-8 as Go prints it (%q of "\xff") decodes to the replacement character.
        assert_eq!(go_unquote(r#""\xff""#).unwrap(), "\u{fffd}");
        for bad in [
            r#""\q""#,
            r#""\x4""#,
            r#""\u12""#,
            r#""abc"#,
            r#"abc""#,
            r#"""#,
            r#""a"b""#,
            r#""\"#,
            r#""\400""#,
        ] {
            assert!(go_unquote(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn parse_real_kubelet_file() {
        let text = "aether.dev/app=\"demo\"\naether.dev/digest=\"abc\"\naether.dev/generation=\"7\"\nkubectl.kubernetes.io/last-applied-configuration=\"{\\\"apiVersion\\\":\\\"v1\\\"}\\n\"\nkubernetes.io/config.seen=\"2024-05-01T10:00:00.123456789Z\"\nkubernetes.io/config.source=\"api\"";
        let p = parse_annotations(text);
        assert!(p.bad.is_empty(), "{:?}", p.bad);
        assert_eq!(p.values["aether.dev/generation"], "7");
        assert_eq!(
            p.values["kubectl.kubernetes.io/last-applied-configuration"],
            "{\"apiVersion\":\"v1\"}\n"
        );
        assert_eq!(p.values["kubernetes.io/config.source"], "api");
        assert_eq!(format_annotations(&p.values), text);
    }

    #[test]
    fn parse_odd_lines() {
        assert_eq!(parse_annotations(""), ParsedAnnotations::default());
        let p = parse_annotations("no-equals-here\na=\"1\"\nb=unquoted\nc=\"x=y\"");
        assert_eq!(p.values.len(), 2);
        assert_eq!(p.values["c"], "x=y");
        assert_eq!(p.bad.iter().map(|b| b.0).collect::<Vec<_>>(), vec![1, 3]);
    }

    #[test]
    fn format_sorts_and_trims_final_newline() {
        let m: BTreeMap<_, _> = [("b", "2"), ("a", "1")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(format_annotations(&m), "a=\"1\"\nb=\"2\"");
    }

    #[test]
    fn atomic_volume_swaps_and_cleans() {
        let d = tempfile::tempdir().unwrap();
        let vol = d.path().join("podinfo");
        let files = |v: &str| -> BTreeMap<String, Vec<u8>> {
            [("annotations".to_string(), v.as_bytes().to_vec())]
                .into_iter()
                .collect()
        };
        write_atomic_volume(&vol, &files("one")).unwrap();
        assert_eq!(fs::read_to_string(vol.join("annotations")).unwrap(), "one");
        assert_eq!(
            fs::read_link(vol.join("annotations")).unwrap(),
            Path::new("..data/annotations")
        );
        write_atomic_volume(&vol, &files("two")).unwrap();
        assert_eq!(fs::read_to_string(vol.join("annotations")).unwrap(), "two");
        let ts_dirs = fs::read_dir(&vol).unwrap().filter(|e| {
            let n = e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .into_owned();
            n.starts_with("..") && n != "..data"
        });
        assert_eq!(
            ts_dirs.count(),
            1,
            "the old timestamped directory is removed"
        );
    }
}
