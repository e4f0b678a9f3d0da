//! The modules of `src/` depend on each other one way: front ends (prompt,
//! Redis port) -> the key-value service -> the Raft node -> network and store.
//! This reads every source file, collects which module names which (through
//! `crate::` and `super::` paths), and fails on any cycle, naming it. A module
//! naming its own submodules (a `mod.rs` re-exporting them) does not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`store::log`) of a file under `src/`.
fn module_of(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts
        .last()
        .is_some_and(|last| last == "mod" || last == "main")
    {
        parts.pop();
    }
    parts
}

fn sources(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

/// The code of a file without its comments (a path in a comment is no use).
fn without_comments(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The longest known module that `path` (words after `crate::`) starts with.
fn known_prefix(path: &[String], modules: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|candidate| modules.contains(candidate))
}

/// The paths named after `anchor` (`crate::` or `super::`): `a::b::c`, and
/// each name of a brace group `a::{b, c::d}`.
fn named_paths(code: &str, anchor: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(anchor) {
        let before = rest[..at].chars().last();
        rest = &rest[at + anchor.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let head: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let prefix: Vec<String> = head
            .split("::")
            .filter(|word| !word.is_empty())
            .map(str::to_string)
            .collect();
        let after = &rest[head.len()..];
        if head.ends_with("::") && after.starts_with('{') {
            let group = &after[1..after.find('}').unwrap_or(after.len())];
            for name in group.split(',') {
                let mut path = prefix.clone();
                path.extend(
                    name.trim()
                        .split("::")
                        .map(|w| w.split_whitespace().next().unwrap_or("").to_string())
                        .filter(|w| !w.is_empty() && w != "self"),
                );
                paths.push(path);
            }
        } else {
            paths.push(prefix);
        }
    }
    paths
}

#[test]
fn src_has_no_import_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let modules: BTreeSet<Vec<String>> = files
        .iter()
        .map(|file| module_of(file.strip_prefix(&src).unwrap()))
        .filter(|module| !module.is_empty())
        .collect();

    let mut uses: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for file in &files {
        let module = module_of(file.strip_prefix(&src).unwrap());
        let code = without_comments(&std::fs::read_to_string(file).unwrap());
        // `super` is the parent of the file's module (`a/mod.rs` is `a`).
        let parent: Vec<String> = module[..module.len().saturating_sub(1)].to_vec();
        let mut named: Vec<Vec<String>> = named_paths(&code, "crate::");
        named.extend(named_paths(&code, "super::").into_iter().map(|path| {
            let mut full = parent.clone();
            full.extend(path);
            full
        }));
        for path in named {
            let Some(target) = known_prefix(&path, &modules) else {
                continue;
            };
            // A module naming itself or its own submodules is not a layer edge.
            if target.starts_with(&module) {
                continue;
            }
            uses.entry(module.clone()).or_default().insert(target);
        }
    }

    // Checked twice: between the top-level modules (`store::records` counts
    // as `store`, so a cycle through a parent module is caught), and between
    // the files of one top-level module (`machine::script::libs` against
    // `machine::script::sandbox`).
    let mut top: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    let mut inner: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (from, targets) in &uses {
        for to in targets {
            if from[0] != to[0] {
                top.entry(from[..1].to_vec())
                    .or_default()
                    .insert(to[..1].to_vec());
            } else {
                inner.entry(from.clone()).or_default().insert(to.clone());
            }
        }
    }
    let mut cycles = cycles_in(&top);
    cycles.extend(cycles_in(&inner));
    assert!(
        cycles.is_empty(),
        "modules of src/ that depend on each other in a circle:\n{}",
        cycles.join("\n")
    );
}

/// Every path from a module back to itself, as `a -> b -> a`.
fn cycles_in(uses: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<String> {
    let show = |m: &Vec<String>| m.join("::");
    let mut cycles = Vec::new();
    for start in uses.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((at, path)) = stack.pop() {
            for next in uses.get(&at).into_iter().flatten() {
                if next == start {
                    let names: Vec<String> = path.iter().chain([start]).map(show).collect();
                    cycles.push(names.join(" -> "));
                } else if seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    cycles
}
