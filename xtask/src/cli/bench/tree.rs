//! A synthetic app tree (many small files, like a `node_modules`) for the packing figures.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

/// A tree shaped like node_modules: packages of many small JS-like text files (which compress
/// about 4:1, like real JS), a few large bundles, package.json files, some nesting.
pub fn generate_tree(root: &Path, files: usize) -> Result<(usize, u64)> {
    const WORDS: &[&str] = &[
        "function",
        "return",
        "const",
        "let",
        "var",
        "if",
        "else",
        "for",
        "while",
        "require",
        "module",
        "exports",
        "this",
        "new",
        "typeof",
        "undefined",
        "null",
        "true",
        "false",
        "async",
        "await",
        "Promise",
        "resolve",
        "reject",
        "callback",
        "options",
        "value",
        "key",
        "index",
        "length",
        "prototype",
        "Object",
        "Array",
        "String",
        "Error",
        "throw",
        "catch",
        "try",
        "buffer",
        "stream",
        "=",
        "==",
        "===",
        "(",
        ")",
        "{",
        "}",
        ";",
        ",",
        ".",
        "=>",
        "+",
        "-",
        "&&",
        "||",
        "!",
        "[",
        "]",
    ];
    let mut seed: u64 = 0x2545F4914F6CDD1D;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut total = 0u64;
    let mut made = 0usize;
    let mut pkg = 0usize;
    while made < files {
        let dir = root
            .join(format!("pkg-{pkg:04}"))
            .join(if pkg.is_multiple_of(3) {
                "lib/internal"
            } else {
                "lib"
            });
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::write(
            root.join(format!("pkg-{pkg:04}/package.json")),
            format!(
                "{{\"name\":\"pkg-{pkg}\",\"version\":\"1.{pkg}.0\",\"main\":\"lib/index.js\"}}\n"
            ),
        )?;
        made += 1;
        let per_pkg = 10 + (rnd() % 20) as usize;
        for i in 0..per_pkg.min(files.saturating_sub(made)) {
            // Mostly 1-16 KB; about 1 in 140 files is a 300-900 KB bundle.
            let size = if rnd() % 140 == 0 {
                300_000 + rnd() % 600_000
            } else {
                1_000 + rnd() % 13_000
            } as usize;
            let mut s = String::with_capacity(size + 64);
            while s.len() < size {
                let w = WORDS[(rnd() % WORDS.len() as u64) as usize];
                s.push_str(w);
                if rnd() % 9 == 0 {
                    s.push_str(&format!("_{}", rnd() % 5000));
                }
                s.push(if rnd() % 12 == 0 { '\n' } else { ' ' });
            }
            total += s.len() as u64;
            fs::write(dir.join(format!("m{i}.js")), s)?;
            made += 1;
        }
        pkg += 1;
    }
    Ok((made, total))
}
