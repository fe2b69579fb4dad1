//! Deleting sandboxes' files off the delete's path. A run dir is renamed
//! into the trash (one atomic step: the sandbox's path is free at once)
//! and removed there by a thread of its own: unlinking a disk image that
//! was written to frees its extents, which takes milliseconds a sandbox.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Mutex;

pub(crate) struct Trash {
    dir: PathBuf,
    next: AtomicU64,
    remover: Mutex<Sender<PathBuf>>,
}

impl Trash {
    /// The trash under `data_dir` (on the same file system as the run
    /// dirs, so a rename moves them), with what a stopped server left in
    /// it queued for removal.
    pub(crate) fn open(data_dir: &Path) -> io::Result<Self> {
        let dir = data_dir.join("trash");
        fs::create_dir_all(&dir)?;
        let (remover, queue) = std::sync::mpsc::channel::<PathBuf>();
        std::thread::Builder::new()
            .name("paddock-trash".into())
            .spawn(move || {
                for path in queue {
                    if let Err(e) = remove_tree(&path) {
                        tracing::warn!(path = %path.display(), error = %e, "could not empty the trash");
                    }
                }
            })?;
        for entry in fs::read_dir(&dir)?.flatten() {
            let _ = remover.send(entry.path());
        }
        Ok(Self {
            dir,
            next: AtomicU64::new(0),
            remover: Mutex::new(remover),
        })
    }

    /// Removes the tree at `path`: moved into the trash now, deleted
    /// there soon. One that is not there is gone; one that cannot be
    /// moved is deleted here.
    pub(crate) fn discard(&self, path: &Path) -> io::Result<()> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let target = self.dir.join(format!("{name}.{}.{n}", std::process::id()));
        match fs::rename(path, &target) {
            Ok(()) => {
                let sent = self
                    .remover
                    .lock()
                    .map(|r| r.send(target.clone()).is_ok())
                    .unwrap_or(false);
                if sent {
                    Ok(())
                } else {
                    remove_tree(&target)
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(_) => remove_tree(path),
        }
    }
}

/// Removes a tree; one that is not there is gone.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_discarded_tree_is_gone_at_once_and_emptied_soon() {
        let data = tempfile::tempdir().expect("tempdir");
        let trash = Trash::open(data.path()).expect("trash");
        let run = data.path().join("sandboxes/vm_a");
        fs::create_dir_all(run.join("upper/etc")).expect("dirs");
        fs::write(run.join("upper/etc/f"), "x").expect("file");
        trash.discard(&run).expect("discard");
        assert!(!run.exists());
        trash.discard(&run).expect("a second time: already gone");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while fs::read_dir(data.path().join("trash"))
            .expect("trash")
            .count()
            > 0
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the trash was never emptied"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn what_a_stopped_server_left_in_the_trash_goes_at_open() {
        let data = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(data.path().join("trash/vm_b.1.0/upper")).expect("leftover");
        let _trash = Trash::open(data.path()).expect("trash");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while data.path().join("trash/vm_b.1.0").exists() {
            assert!(std::time::Instant::now() < deadline, "the leftover stayed");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
