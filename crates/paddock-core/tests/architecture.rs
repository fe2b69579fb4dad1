//! The core's layout rules, checked on its source: no two files of the
//! core depend on each other in a cycle (through `crate::` paths), and
//! only `vms/` adds operations to the VM component.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/`, by its module path (`vms/component`,
/// `service`; a `mod.rs` is its folder), with its text less comments and
/// unit tests.
fn sources() -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path: PathBuf = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path
                .strip_prefix(&root)
                .expect("under src")
                .with_extension("");
            let mut name = rel.to_string_lossy().into_owned();
            if let Some(folder) = name.strip_suffix("/mod") {
                name = folder.to_owned();
            }
            let text = std::fs::read_to_string(&path).expect("read file");
            let text = text
                .split("#[cfg(test)]\nmod tests")
                .next()
                .unwrap_or_default();
            let code: Vec<&str> = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect();
            out.insert(name, code.join("\n"));
        }
    }
    out
}

/// The flat paths lib.rs re-exports (`exec` → `model/exec`).
fn aliases(lib: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in lib.lines() {
        let Some(rest) = line
            .strip_prefix("pub use ")
            .or_else(|| line.strip_prefix("pub(crate) use "))
        else {
            continue;
        };
        let rest = rest.trim_end_matches(';');
        let Some((folder, names)) = rest.split_once("::") else {
            continue;
        };
        if let Some((module, alias)) = names.split_once(" as ") {
            out.insert(alias.to_owned(), format!("{folder}/{module}"));
            continue;
        }
        let names = names.trim_start_matches('{').trim_end_matches('}');
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            out.insert(name.to_owned(), format!("{folder}/{name}"));
        }
    }
    out
}

/// The files each file names through `crate::` paths.
fn dependencies(files: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let aliases = aliases(&files["lib"]);
    let mut graph = BTreeMap::new();
    for (name, text) in files {
        let mut deps = BTreeSet::new();
        // `super::` in `vms/prewarm` is the folder `vms`.
        let parent: Vec<String> = name
            .rsplit_once('/')
            .map(|(folder, _)| folder.split('/').map(str::to_owned).collect())
            .unwrap_or_default();
        let paths = text
            .match_indices("crate::")
            .map(|(at, m)| (at + m.len(), Vec::new()))
            .chain(
                text.match_indices("super::")
                    .filter(|(at, _)| !text[..*at].ends_with("::"))
                    .map(|(at, m)| (at + m.len(), parent.clone())),
            );
        for (start, base) in paths {
            let path: String = text[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let mut parts: Vec<String> = base;
            parts.extend(
                path.split("::")
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned),
            );
            if let Some(target) = parts.first().and_then(|p| aliases.get(p)) {
                let mut expanded: Vec<String> = target.split('/').map(str::to_owned).collect();
                expanded.extend(parts.drain(1..));
                parts = expanded;
            }
            // The longest prefix of the path that is a file.
            let target = (1..=parts.len())
                .rev()
                .map(|k| parts[..k].join("/"))
                .find(|candidate| files.contains_key(candidate));
            if let Some(target) = target.filter(|t| t != name && t != "lib") {
                deps.insert(target);
            }
        }
        graph.insert(name.clone(), deps);
    }
    graph
}

/// A cycle through `from`, if there is one.
fn cycle_through(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    let mut stack = vec![(from.to_owned(), vec![from.to_owned()])];
    let mut seen = BTreeSet::new();
    while let Some((node, path)) = stack.pop() {
        for next in graph.get(&node).into_iter().flatten() {
            if next == from {
                return Some(path);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push((next.clone(), longer));
            }
        }
    }
    None
}

#[test]
fn no_two_core_files_depend_on_each_other_in_a_cycle() {
    let files = sources();
    let graph = dependencies(&files);
    assert!(
        graph["vms/component"].contains("vms/activity"),
        "the scan sees the component's dependencies: {:?}",
        graph["vms/component"]
    );
    for name in graph.keys() {
        assert_eq!(cycle_through(&graph, name), None, "a cycle through {name}");
    }
}

#[test]
fn only_vms_adds_operations_to_the_vm_component() {
    for (name, text) in sources() {
        if text.contains("impl Vms {") {
            assert!(name.starts_with("vms/"), "{name} has an `impl Vms`");
        }
    }
}
