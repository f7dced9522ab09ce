//! The dependency rule of ARCHITECTURE.md, checked: its `layers` block
//! lists the crate's parts from the top down, and a part may name
//! (`use crate::…`, `super::…`, or an inline `crate::…` path) only parts on
//! a lower line. Between the files of one part, no two may name each
//! other, directly or around a loop.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The `layers` block: top line first; each line the parts on one level.
fn layers() -> Vec<Vec<String>> {
    let doc = std::fs::read_to_string(Path::new(ROOT).join("ARCHITECTURE.md"))
        .expect("ARCHITECTURE.md is at the root");
    let block = doc
        .split("```layers\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("ARCHITECTURE.md has a ```layers block");
    block
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .map(|line| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|parts| !parts.is_empty())
        .collect()
}

/// Every `.rs` file under `src/`, by its module path (`watch::poller`;
/// `lib.rs` and `main.rs` are the crate root).
fn modules() -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("src/ reads") {
            let path = entry.expect("a dir entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let src = Path::new(ROOT).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    files
        .into_iter()
        .map(|file| {
            let rel = file.strip_prefix(&src).expect("under src/");
            let mut parts: Vec<String> = rel
                .with_extension("")
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            (parts.join("::"), file)
        })
        .filter(|(module, _)| !module.is_empty())
        .collect()
}

/// The text with comments, string and char literals blanked out, so that
/// a path in a doc comment or a message is not read as a dependency.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
                out.push(' ');
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                    }
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            // A char literal ('x', '\n', '"'), not a lifetime ('a).
            '\'' => {
                let rest: String = chars.clone().take(3).collect();
                let literal = rest.starts_with('\\') || rest.chars().nth(1) == Some('\'');
                if literal {
                    let mut escaped = false;
                    for c in chars.by_ref() {
                        if escaped {
                            escaped = false;
                        } else if c == '\\' {
                            escaped = true;
                        } else if c == '\'' {
                            break;
                        }
                    }
                    out.push_str("' '");
                } else {
                    out.push(c);
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// The code before a file's `#[cfg(test)] mod …` (the unit tests, last in
/// the file by our custom): they may use what they like, and `use super::*`
/// there means the file itself.
fn without_tests(code: &str) -> &str {
    code.match_indices("#[cfg(test)]")
        .find(|(at, attr)| code[at + attr.len()..].trim_start().starts_with("mod "))
        .map_or(code, |(at, _)| &code[..at])
}

/// Expands a use tree (`a::{b, c::{d, e}}`) into its paths.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let path = tree.split(" as ").next().unwrap_or_default().trim();
        return vec![path.to_owned()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .filter(|item| !item.trim().is_empty())
        .flat_map(expand)
        .map(|rest| match rest.as_str() {
            "self" => prefix.trim_end_matches("::").to_owned(),
            _ => format!("{prefix}{rest}"),
        })
        .collect()
}

/// The module paths `module`'s code names, absolute (`crate::` dropped).
fn references(module: &str, code: &str) -> BTreeSet<String> {
    let mut paths = Vec::new();
    // `use` items, however they are split over lines.
    for item in code.split("use ").skip(1) {
        if let Some(tree) = item.split(';').next() {
            paths.extend(expand(tree));
        }
    }
    // Inline paths.
    for (at, _) in code.match_indices("crate::") {
        let path: String = code[at..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        paths.push(path);
    }
    let here: Vec<&str> = module.split("::").collect();
    paths
        .into_iter()
        .filter_map(|path| {
            let mut parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
            match parts.first() {
                Some(&"crate") => {
                    parts.remove(0);
                }
                Some(&"super") => {
                    let mut base = here.clone();
                    while parts.first() == Some(&"super") {
                        parts.remove(0);
                        base.pop();
                    }
                    base.extend(parts);
                    parts = base;
                }
                Some(&"self") => {
                    parts.remove(0);
                    let mut base = here.clone();
                    base.extend(parts);
                    parts = base;
                }
                _ => return None,
            }
            Some(parts.join("::"))
        })
        .collect()
}

/// The longest of `candidates` that `path` is, or is inside.
fn owner<'a>(path: &str, candidates: impl IntoIterator<Item = &'a String>) -> Option<&'a String> {
    candidates
        .into_iter()
        .filter(|c| path == c.as_str() || path.starts_with(&format!("{c}::")))
        .max_by_key(|c| c.len())
}

/// One file-level loop among `edges`, if any.
fn a_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|node| visit(node, edges, &mut Vec::new(), &mut done))
}

#[test]
fn every_dependency_points_down_the_layers_and_no_files_form_a_loop() {
    let layers = layers();
    let level: BTreeMap<&String, usize> = layers
        .iter()
        .enumerate()
        .flat_map(|(i, parts)| parts.iter().map(move |p| (p, i)))
        .collect();
    let modules = modules();
    let mut wrong = Vec::new();
    let mut file_edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, file) in &modules {
        let code = code_only(&std::fs::read_to_string(file).expect("a source file"));
        let code = without_tests(&code);
        let Some(part) = owner(module, level.keys().copied()) else {
            wrong.push(format!("{module}: not in any layer of ARCHITECTURE.md"));
            continue;
        };
        for path in references(module, code) {
            // What is named: the most specific file, and its layer part.
            let Some(target) = owner(&path, modules.keys()) else {
                continue; // a crate-root item (e.g. `install_crypto_provider`)
            };
            if target == module || module.starts_with(&format!("{target}::")) {
                continue; // itself, or an enclosing module
            }
            let Some(to) = owner(target, level.keys().copied()) else {
                continue; // reported above, as its own module
            };
            if to == part {
                file_edges
                    .entry(module.clone())
                    .or_default()
                    .insert(target.clone());
            } else if level[to] <= level[part] {
                wrong.push(format!(
                    "{module} ({}) uses {path} ({to}): not a lower layer",
                    file.strip_prefix(ROOT).unwrap_or(file).display()
                ));
            }
        }
    }
    if let Some(cycle) = a_cycle(&file_edges) {
        wrong.push(format!(
            "files that depend on each other: {}",
            cycle.join(" → ")
        ));
    }
    assert!(
        wrong.is_empty(),
        "dependencies against ARCHITECTURE.md's layers:\n  {}",
        wrong.join("\n  ")
    );
}

/// Two rules the layers alone do not say: the engine and its callers
/// reach state through `storage::Storage`, never a backend (the daemon
/// sits above `store` and `pg` and could); and nothing but `store` and
/// `pg` speaks SQL, each its own driver.
#[test]
fn callers_name_no_backend_and_only_the_store_speaks_sql() {
    let modules = modules();
    let mut wrong = Vec::new();
    for (module, file) in &modules {
        let code = code_only(&std::fs::read_to_string(file).expect("a source file"));
        let within = |part: &str| module == part || module.starts_with(&format!("{part}::"));
        if !within("store") && code.contains("rusqlite") {
            wrong.push(format!("{module} uses rusqlite: only store writes SQL"));
        }
        if !within("pg") && (code.contains("tokio_postgres") || code.contains("deadpool")) {
            wrong.push(format!("{module} uses tokio_postgres: only pg writes SQL"));
        }
        let caller = ["watch", "notify", "daemon", "cli"].into_iter().any(within);
        if caller {
            for path in references(module, &code) {
                let backend = ["store", "pg"]
                    .iter()
                    .any(|b| path == *b || path.starts_with(&format!("{b}::")));
                if backend {
                    wrong.push(format!(
                        "{module} uses {path}: callers use storage::Storage, never a backend"
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_reader_of_use_trees_and_paths_is_right() {
    assert_eq!(
        expand("crate::a::{b, c::{d, e as f}, self}"),
        [
            "crate::a::b",
            "crate::a::c::d",
            "crate::a::c::e",
            "crate::a"
        ]
    );
    let code = code_only(
        "use super::http::X; // crate::nope\nlet s = \"crate::nor::this\"; let c = '\"'; crate::y::z(); 'a: loop {}",
    );
    let refs = references("sim::auth", &code);
    assert_eq!(
        refs.into_iter().collect::<Vec<_>>(),
        ["sim::http::X", "y::z"]
    );
}
