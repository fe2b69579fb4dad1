//! What changed in a VM's files between two steps of its tape: paths
//! added, changed and removed with their sizes, and a unified diff of
//! each small text file that changed.

use std::collections::BTreeMap;

use serde::Serialize;

use super::checkpoints::{CheckpointStore, Entry};

/// Files at most this big get a text diff.
const TEXT_DIFF_MAX_BYTES: u64 = 64 << 10;

/// The most text diffs one answer carries.
const TEXT_DIFFS_MAX: usize = 100;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PathChange {
    pub path: String,
    /// `file`, `dir`, `symlink` or `special`.
    pub kind: String,
    pub size: u64,
    /// For a change: the size before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_before: Option<u64>,
    /// For a small text file that changed or was added: a unified diff.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct TapeDiff {
    pub added: Vec<PathChange>,
    pub changed: Vec<PathChange>,
    pub removed: Vec<PathChange>,
}

/// Whether the path exists as something in the VM's tree.
fn present(entry: Option<&Entry>) -> Option<&Entry> {
    entry.filter(|e| !matches!(e, Entry::Removed))
}

fn text_of(store: &CheckpointStore, entry: Option<&Entry>) -> Option<String> {
    match entry {
        None => Some(String::new()),
        Some(Entry::File { sha256, size, .. }) if *size <= TEXT_DIFF_MAX_BYTES => {
            let bytes = store.read_blob(sha256, TEXT_DIFF_MAX_BYTES).ok()?;
            if bytes.contains(&0) {
                return None;
            }
            String::from_utf8(bytes).ok()
        }
        _ => None,
    }
}

/// The difference between the writable layer's states `from` and `to`.
/// A path the layer does not hold is as the image has it: one that
/// appears in the layer (an image file changed for the first time
/// included) is reported as added, as the image's version is not kept.
pub fn diff(
    store: &CheckpointStore,
    from: &BTreeMap<String, Entry>,
    to: &BTreeMap<String, Entry>,
) -> TapeDiff {
    let mut out = TapeDiff::default();
    let mut texts = 0usize;
    let mut text_diff = |path: &str, before: Option<&Entry>, after: Option<&Entry>| {
        if texts >= TEXT_DIFFS_MAX {
            return None;
        }
        let old = text_of(store, before)?;
        let new = text_of(store, after)?;
        texts += 1;
        Some(
            similar::TextDiff::from_lines(&old, &new)
                .unified_diff()
                .header(&format!("a{path}"), &format!("b{path}"))
                .to_string(),
        )
    };
    let paths: std::collections::BTreeSet<&String> = from.keys().chain(to.keys()).collect();
    for path in paths {
        let (before, after) = (present(from.get(path)), present(to.get(path)));
        match (before, after) {
            (None, Some(now)) => out.added.push(PathChange {
                path: path.clone(),
                kind: now.kind().to_owned(),
                size: now.size(),
                size_before: None,
                diff: matches!(now, Entry::File { .. })
                    .then(|| text_diff(path, None, Some(now)))
                    .flatten(),
            }),
            (Some(was), None) => out.removed.push(PathChange {
                path: path.clone(),
                kind: was.kind().to_owned(),
                size: was.size(),
                size_before: None,
                diff: None,
            }),
            (Some(was), Some(now)) if was != now => out.changed.push(PathChange {
                path: path.clone(),
                kind: now.kind().to_owned(),
                size: now.size(),
                size_before: Some(was.size()),
                diff: matches!((was, now), (Entry::File { .. }, Entry::File { .. }))
                    .then(|| text_diff(path, Some(was), Some(now)))
                    .flatten(),
            }),
            _ => {}
        }
    }
    out
}
