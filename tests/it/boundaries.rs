//! The module boundaries ARCHITECTURE.md states, checked on the source
//! text (STYLE.md item 16): an import that crosses one fails here.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/<dir>` (or the file `src/<dir>`).
fn sources(dir: &str) -> Vec<PathBuf> {
    fn walk(path: &Path, out: &mut Vec<PathBuf>) {
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .expect("reads the source tree")
                .map(|e| e.expect("a directory entry").path())
                .collect();
            entries.sort();
            for entry in entries {
                walk(&entry, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path.to_owned());
        }
    }
    let mut out = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir),
        &mut out,
    );
    assert!(!out.is_empty(), "no sources under src/{dir}");
    out
}

/// No file under `src/<dir>` mentions any of `forbidden`.
#[track_caller]
fn check(dir: &str, forbidden: &[&str], why: &str) {
    for path in sources(dir) {
        let text = std::fs::read_to_string(&path).expect("reads a source file");
        for needle in forbidden {
            assert!(
                !text.contains(needle),
                "{} uses {needle}: {why}",
                path.display()
            );
        }
    }
}

#[test]
fn dependencies_point_one_way() {
    check(
        "route.rs",
        &[
            "crate::config",
            "crate::store",
            "crate::storage",
            "crate::notify",
        ],
        "routes and grouping depend on the events alone; config builds them",
    );
    check(
        "watch",
        &["crate::config", "crate::store::", "crate::store;"],
        "the poller takes its routes from `route` and its state from `storage`",
    );
    for dir in ["notify", "daemon", "cli"] {
        check(
            dir,
            &["crate::store::", "crate::store;", "rusqlite"],
            "callers use `storage::Storage`, never a backend",
        );
    }
    for dir in [
        "cloud",
        "config",
        "route.rs",
        "storage.rs",
        "watch",
        "notify",
        "daemon",
        "cli",
        "sim",
    ] {
        check(dir, &["rusqlite"], "nothing but `store` writes SQL");
    }
}
