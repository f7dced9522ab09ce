//! Dependencies point one way (ARCHITECTURE.md, "Layers"): a test that
//! fails on an import crossing a boundary, by reading the sources.
//!
//! It looks for `crate::…` and `super::…` paths in the text, which is how
//! this crate imports; a path written some other way would slip through.

use std::path::{Path, PathBuf};

/// Modules that depend on nothing of ours but each other. (`metrics` is
/// not one: it names `cloud::model::Status`.)
const LEAVES: &[&str] = &["secret", "retry", "ratelimit"];

/// The config toolkit: key paths, problems, raw structs, env, durations.
const TOOLKIT: &[&str] = &["check", "key", "raw", "env", "dur"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, with its text.
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("a readable source dir") {
            let path = entry.expect("a dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("a readable source file");
                out.push((path, text));
            }
        }
    }
    out
}

/// The paths following each `prefix` in `text`, up to the first character
/// that cannot be part of a path: `crate::config::check::Checker` →
/// `config::check::Checker`.
fn paths<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.match_indices(prefix)
        .map(|(at, _)| {
            let rest = &text[at + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            rest[..end].trim_end_matches(':')
        })
        .collect()
}

fn first(path: &str) -> &str {
    path.split("::").next().unwrap_or(path)
}

fn is_toolkit(path: &str) -> bool {
    let mut segs = path.split("::");
    segs.next() == Some("config") && segs.next().is_some_and(|s| TOOLKIT.contains(&s))
}

#[test]
fn leaves_and_the_config_toolkit_import_only_leaves_and_the_toolkit() {
    let mut files: Vec<PathBuf> = LEAVES
        .iter()
        .map(|m| src().join(format!("{m}.rs")))
        .collect();
    files.extend(
        TOOLKIT
            .iter()
            .map(|m| src().join("config").join(format!("{m}.rs"))),
    );
    for file in files {
        let text = std::fs::read_to_string(&file).expect("a readable source file");
        for path in paths(&text, "crate::") {
            assert!(
                LEAVES.contains(&first(path)) || is_toolkit(path),
                "{} imports crate::{path}, above the leaves",
                file.display()
            );
        }
        if file.parent() == Some(&src().join("config")) {
            for path in paths(&text, "super::") {
                assert!(
                    path.is_empty() || TOOLKIT.contains(&first(path)),
                    "{} imports super::{path}, beyond the config toolkit",
                    file.display()
                );
            }
        }
    }
}

#[test]
fn notify_sees_only_the_config_toolkit_never_the_assembled_config() {
    for (file, text) in sources(&src().join("notify")) {
        for path in paths(&text, "crate::") {
            let top = first(path);
            assert!(
                top != "config" || is_toolkit(path),
                "{} imports crate::{path}: notify may use config::{{{}}} only",
                file.display(),
                TOOLKIT.join(", ")
            );
            assert!(
                !["daemon", "cli", "sim"].contains(&top),
                "{} imports crate::{path}, from the app layer",
                file.display()
            );
        }
    }
}

#[test]
fn cloud_knows_nothing_of_config_watch_notify_or_the_app() {
    for (file, text) in sources(&src().join("cloud")) {
        for path in paths(&text, "crate::") {
            let top = first(path);
            assert!(
                !["config", "watch", "notify", "store", "daemon", "cli", "sim"].contains(&top),
                "{} imports crate::{path}",
                file.display()
            );
        }
    }
}
