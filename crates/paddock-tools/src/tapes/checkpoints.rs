//! A tape's filesystem checkpoints: what a VM changed since the last one,
//! read from its writable layer (the trees [`Vms::read_changes`] holds
//! still) and kept as a delta of entries whose files are stored once by
//! content. A checkpoint costs what changed: the layer is walked (a stat
//! per entry it holds), and only entries whose metadata moved since the
//! last checkpoint are read and hashed.
//!
//! [`Vms::read_changes`]: paddock_core::vms::component::Vms

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use paddock_core::model::{ChangedTree, IdShift};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One path of a VM's writable layer, as the sandbox sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    File {
        size: u64,
        mode: u32,
        uid: u32,
        gid: u32,
        /// The content's SHA-256, the name it is stored under.
        sha256: String,
    },
    Dir {
        mode: u32,
        uid: u32,
        gid: u32,
        /// What the image had below it is hidden.
        #[serde(default)]
        opaque: bool,
    },
    Symlink {
        target: String,
        uid: u32,
        gid: u32,
    },
    /// Removed: the image's entry is hidden.
    Removed,
    /// A device node or fifo: recorded, not restored.
    Special {
        mode: u32,
    },
}

impl Entry {
    pub fn size(&self) -> u64 {
        match self {
            Self::File { size, .. } => *size,
            _ => 0,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::File { .. } => "file",
            Self::Dir { .. } => "dir",
            Self::Symlink { .. } => "symlink",
            Self::Removed => "removed",
            Self::Special { .. } => "special",
        }
    }
}

/// What a checkpoint knows of an entry to tell whether it moved since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

/// The writable layer as of the last checkpoint: each path's entry and
/// stamp.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Manifest {
    pub entries: BTreeMap<String, (Entry, Stamp)>,
}

/// What changed between two checkpoints: entries set, and paths that left
/// the writable layer (back to what the image has).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    pub set: BTreeMap<String, Entry>,
    pub cleared: Vec<String>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.cleared.is_empty()
    }
}

/// A tape's files on the host: checkpoints' deltas and stored contents.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    dir: PathBuf,
}

impl CheckpointStore {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn blob_path(&self, sha256: &str) -> PathBuf {
        self.dir.join("blobs").join(sha256)
    }

    fn delta_path(&self, step: u64) -> PathBuf {
        self.dir
            .join("checkpoints")
            .join(format!("{step:012}.json"))
    }

    fn manifest_path(&self) -> PathBuf {
        self.dir.join("manifest.json")
    }

    /// Walks `trees` against the last checkpoint's manifest: the delta,
    /// with new contents stored, and the bytes stored for it. Changes
    /// nothing when the delta is empty.
    pub fn capture(&self, trees: &[ChangedTree], step: u64) -> io::Result<(Delta, u64)> {
        let before = self.load_manifest()?;
        let mut now = Manifest::default();
        let mut delta = Delta::default();
        let mut stored = 0;
        for tree in trees {
            let at = tree.at.trim_end_matches('/');
            let walk = Walk {
                ids: tree.ids,
                before: &before,
                now: &mut now,
                delta: &mut delta,
                store: self,
                stored: &mut stored,
            };
            walk.dir(&tree.dir, if at.is_empty() { "" } else { at })?;
        }
        for path in before.entries.keys() {
            if !now.entries.contains_key(path) {
                delta.cleared.push(path.clone());
            }
        }
        if !delta.is_empty() {
            write_json(&self.delta_path(step), &delta)?;
            write_json(&self.manifest_path(), &now)?;
        }
        Ok((delta, stored))
    }

    fn load_manifest(&self) -> io::Result<Manifest> {
        match fs::read(self.manifest_path()) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(io::Error::other),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Manifest::default()),
            Err(e) => Err(e),
        }
    }

    /// The steps that have a checkpoint, in order.
    pub fn steps(&self) -> io::Result<Vec<u64>> {
        let mut steps: Vec<u64> = match fs::read_dir(self.dir.join("checkpoints")) {
            Ok(dir) => dir
                .filter_map(|e| {
                    e.ok()?
                        .file_name()
                        .to_str()?
                        .strip_suffix(".json")?
                        .parse()
                        .ok()
                })
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        steps.sort_unstable();
        Ok(steps)
    }

    pub fn delta(&self, step: u64) -> io::Result<Delta> {
        serde_json::from_slice(&fs::read(self.delta_path(step))?).map_err(io::Error::other)
    }

    /// The writable layer as of `step`: every checkpoint up to it applied.
    pub fn state_at(&self, step: u64) -> io::Result<BTreeMap<String, Entry>> {
        let mut state = BTreeMap::new();
        for at in self.steps()?.into_iter().take_while(|s| *s <= step) {
            let delta = self.delta(at)?;
            for path in delta.cleared {
                state.remove(&path);
            }
            state.extend(delta.set);
        }
        Ok(state)
    }

    /// A stored content, at most `limit` bytes of it.
    pub fn read_blob(&self, sha256: &str, limit: u64) -> io::Result<Vec<u8>> {
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a content hash",
            ));
        }
        let mut out = Vec::new();
        fs::File::open(self.blob_path(sha256))?
            .take(limit)
            .read_to_end(&mut out)?;
        Ok(out)
    }

    /// The names of every stored content.
    pub fn blobs(&self) -> io::Result<Vec<String>> {
        match fs::read_dir(self.dir.join("blobs")) {
            Ok(dir) => Ok(dir
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.len() == 64)
                .collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Stores `path`'s content under its hash, once; the hash and the
    /// bytes newly stored.
    fn store_file(&self, path: &Path) -> io::Result<(String, u64)> {
        let blobs = self.dir.join("blobs");
        fs::create_dir_all(&blobs)?;
        let staging = blobs.join(format!(".in-{:016x}", rand::random::<u64>()));
        let mut hasher = Sha256::new();
        let mut copied = 0u64;
        {
            let mut source = fs::File::open(path)?;
            let mut out = fs::File::create(&staging)?;
            let mut buf = vec![0u8; 256 << 10];
            loop {
                let n = source.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n])?;
                copied += n as u64;
            }
        }
        let sha256 = hex::encode(hasher.finalize());
        let target = self.blob_path(&sha256);
        if target.exists() {
            fs::remove_file(&staging)?;
            return Ok((sha256, 0));
        }
        fs::rename(&staging, &target)?;
        Ok((sha256, copied))
    }

    /// The bytes the tape's files take.
    pub fn bytes(&self) -> u64 {
        fn size(dir: &Path) -> u64 {
            fs::read_dir(dir)
                .map(|d| {
                    d.filter_map(Result::ok)
                        .map(|e| match e.metadata() {
                            Ok(m) if m.is_dir() => size(&e.path()),
                            Ok(m) => m.len(),
                            Err(_) => 0,
                        })
                        .sum()
                })
                .unwrap_or(0)
        }
        size(&self.dir)
    }

    pub fn remove(&self) -> io::Result<()> {
        match fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let staging = path.with_extension("tmp");
    fs::write(
        &staging,
        serde_json::to_vec(value).map_err(io::Error::other)?,
    )?;
    fs::rename(staging, path)
}

/// One walk of a writable layer.
struct Walk<'a> {
    ids: Option<IdShift>,
    before: &'a Manifest,
    now: &'a mut Manifest,
    delta: &'a mut Delta,
    store: &'a CheckpointStore,
    stored: &'a mut u64,
}

impl Walk<'_> {
    fn dir(mut self, dir: &Path, rel: &str) -> io::Result<()> {
        self.walk(dir, rel)
    }

    fn owner(&self, id: u32) -> u32 {
        self.ids.map_or(id, |s| s.to_sandbox(id))
    }

    fn walk(&mut self, dir: &Path, rel: &str) -> io::Result<()> {
        let mut names: Vec<_> = fs::read_dir(dir)?
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        names.sort();
        for name in names {
            let Some(name) = name.to_str().map(str::to_owned) else {
                continue; // a name that is not UTF-8 cannot be told over JSON
            };
            let host = dir.join(&name);
            let path = format!("{rel}/{name}");
            let meta = fs::symlink_metadata(&host)?;
            let ft = meta.file_type();
            let stamp = Stamp {
                ino: meta.ino(),
                size: meta.len(),
                mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
                ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            };
            let (uid, gid, mode) = (
                self.owner(meta.uid()),
                self.owner(meta.gid()),
                meta.mode() & 0o7777,
            );
            let previous = self
                .before
                .entries
                .get(&path)
                .map(|(entry, _)| entry.clone());
            // A file whose stamp did not move keeps its stored content.
            let unchanged = self
                .before
                .entries
                .get(&path)
                .filter(|(_, was)| *was == stamp)
                .map(|(entry, _)| entry.clone());
            let entry = if ft.is_char_device() && meta.rdev() == 0 {
                Entry::Removed
            } else if ft.is_dir() {
                let opaque = xattr::get(&host, "trusted.overlay.opaque")
                    .ok()
                    .flatten()
                    .is_some_and(|v| v == b"y");
                Entry::Dir {
                    mode,
                    uid,
                    gid,
                    opaque,
                }
            } else if ft.is_symlink() {
                Entry::Symlink {
                    target: fs::read_link(&host)?.to_string_lossy().into_owned(),
                    uid,
                    gid,
                }
            } else if ft.is_file() {
                match unchanged.clone() {
                    Some(entry @ Entry::File { .. }) => entry,
                    _ => {
                        let (sha256, stored) = self.store.store_file(&host)?;
                        *self.stored += stored;
                        Entry::File {
                            size: meta.len(),
                            mode,
                            uid,
                            gid,
                            sha256,
                        }
                    }
                }
            } else {
                Entry::Special { mode: meta.mode() }
            };
            if previous.as_ref() != Some(&entry) {
                self.delta.set.insert(path.clone(), entry.clone());
            }
            self.now.entries.insert(path.clone(), (entry, stamp));
            if ft.is_dir() {
                self.walk(&host, &path)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(dir: &Path) -> Vec<ChangedTree> {
        vec![ChangedTree {
            dir: dir.to_owned(),
            at: String::new(),
            ids: None,
        }]
    }

    #[test]
    fn a_checkpoint_holds_only_what_changed_since_the_last() {
        let work = std::env::temp_dir().join(format!("tape-cp-{}", rand::random::<u64>()));
        let upper = work.join("upper");
        fs::create_dir_all(upper.join("app")).expect("upper");
        fs::write(upper.join("app/a.txt"), "one\n").expect("a");
        fs::write(upper.join("app/big.bin"), vec![7u8; 100_000]).expect("big");
        let store = CheckpointStore::new(work.join("tape"));

        let (first, stored) = store.capture(&tree(&upper), 0).expect("first");
        assert_eq!(first.set.len(), 3, "{first:?}");
        assert_eq!(stored, 100_004);

        fs::write(upper.join("app/a.txt"), "two\n").expect("a again");
        fs::remove_file(upper.join("app/big.bin")).expect("rm");
        std::os::unix::fs::symlink("a.txt", upper.join("app/link")).expect("link");
        let (second, stored) = store.capture(&tree(&upper), 3).expect("second");
        assert_eq!(stored, 4, "only the new content of a.txt is stored");
        assert_eq!(second.cleared, vec!["/app/big.bin".to_owned()]);
        assert_eq!(
            second.set.keys().collect::<Vec<_>>(),
            vec!["/app/a.txt", "/app/link"]
        );

        let (nothing, _) = store.capture(&tree(&upper), 5).expect("third");
        assert!(nothing.is_empty());
        assert_eq!(store.steps().expect("steps"), vec![0, 3]);

        let at_start = store.state_at(2).expect("state");
        assert_eq!(at_start["/app/big.bin"].size(), 100_000);
        let now = store.state_at(9).expect("state");
        assert!(!now.contains_key("/app/big.bin"));
        let Entry::File { sha256, .. } = &now["/app/a.txt"] else {
            panic!("a file")
        };
        assert_eq!(store.read_blob(sha256, 100).expect("blob"), b"two\n");
        fs::remove_dir_all(work).expect("clean up");
    }
}
