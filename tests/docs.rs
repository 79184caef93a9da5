//! Every config example in the docs is a complete config file that the agent
//! accepts, so the docs cannot drift from the parser: each ```` ```toml ```` block of
//! README.md, ARCHITECTURE.md and docs/*.md goes through `Config::parse`, in a
//! folder holding the public keys `[trust]` examples name.

use std::path::{Path, PathBuf};

use fota_agent::config::Config;

/// The Markdown files whose examples are checked.
fn doc_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md"), root.join("ARCHITECTURE.md")];
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    files.extend(pages);
    files
}

/// The ```` ```toml ```` blocks of `text`, each with the line its fence opens on.
fn toml_blocks(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        match &mut open {
            None if line.trim_start() == "```toml" => open = Some((n + 1, String::new())),
            None => {}
            Some(_) if line.trim_start().starts_with("```") => {
                blocks.extend(open.take());
            }
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    assert!(open.is_none(), "an unclosed ```toml block");
    blocks
}

/// A config folder with the minisign public keys the examples name
/// (`keys/release.pub`, `keys/next.pub`), made with the real `minisign` CLI, and
/// the secret files their `{ file = … }` keys name.
fn config_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("secrets")).unwrap();
    for secret in ["tb.token", "secrets/tb.token"] {
        std::fs::write(dir.path().join(secret), "DOC-EXAMPLE-TOKEN\n").unwrap();
    }
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    for name in ["release", "next"] {
        let keys = dir.path().join("keys");
        let out = std::process::Command::new("minisign")
            .args(["-G", "-W", "-f", "-p"])
            .arg(keys.join(format!("{name}.pub")))
            .arg("-s")
            .arg(keys.join(format!("{name}.key")))
            .output()
            .expect("minisign (apt install minisign)");
        assert!(out.status.success(), "{out:?}");
    }
    dir
}

#[test]
fn every_toml_example_in_the_docs_is_a_valid_config() {
    let dir = config_dir();
    let path = dir.path().join("config.toml");
    let mut checked = 0;
    let mut failures = Vec::new();
    for file in doc_files() {
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for (line, block) in toml_blocks(&text) {
            checked += 1;
            if let Err(e) = Config::parse(&block, &path) {
                failures.push(format!("{}:{line}: {e}", file.display()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "bad examples:\n{}",
        failures.join("\n")
    );
    // One per source and handler page at least: a lost fence would pass silently.
    assert!(checked >= 10, "only {checked} toml examples found");
}

#[test]
fn a_broken_example_is_caught() {
    let blocks = toml_blocks("text\n```toml\n[agent]\npoll_intervall = \"1h\"\n```\n");
    assert_eq!(blocks.len(), 1);
    let err = Config::parse(&blocks[0].1, Path::new("config.toml")).unwrap_err();
    assert!(err.to_string().contains("poll_intervall"), "{err}");
}
