//! Deleting sandboxes' files off the delete's path. A run dir is renamed
//! into the trash (one atomic step: the sandbox's path is free at once)
//! and removed there by a thread of its own: unlinking a disk image that
//! was written to frees its extents, which takes milliseconds a sandbox,
//! and removing the loop device it recorded (when it is not kept for a
//! later boot) takes tens. A reference to the sandbox's disk may come
//! with it: the disk's mount then ends here, when it is dropped, before
//! the device is removed.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};

/// How many threads empty the trash.
const WORKERS: usize = 8;

pub(crate) struct Trash {
    dir: PathBuf,
    next: AtomicU64,
    remover: Mutex<Sender<Item>>,
}

/// A tree to remove, and what holds a mount on it until then.
struct Item {
    path: PathBuf,
    hold: Option<OwnedFd>,
}

impl Trash {
    /// The trash under `data_dir` (on the same file system as the run
    /// dirs, so a rename moves them), with what a stopped server left in
    /// it queued for removal.
    pub(crate) fn open(data_dir: &Path) -> io::Result<Self> {
        let dir = data_dir.join("trash");
        fs::create_dir_all(&dir)?;
        let (remover, queue) = std::sync::mpsc::channel::<Item>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..WORKERS {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("paddock-trash-{n}"))
                .spawn(move || work(&queue))?;
        }
        for entry in fs::read_dir(&dir)?.flatten() {
            let _ = remover.send(Item {
                path: entry.path(),
                hold: None,
            });
        }
        Ok(Self {
            dir,
            next: AtomicU64::new(0),
            remover: Mutex::new(remover),
        })
    }

    /// Removes the tree at `path`: moved into the trash now, deleted
    /// there soon, after `hold` (a reference keeping a mount alive) is
    /// dropped. One that is not there is gone; one that cannot be moved
    /// is deleted here.
    pub(crate) fn discard(&self, path: &Path, hold: Option<OwnedFd>) -> io::Result<()> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let target = self.dir.join(format!("{name}.{}.{n}", std::process::id()));
        match fs::rename(path, &target) {
            Ok(()) => {
                let item = Item {
                    path: target.clone(),
                    hold,
                };
                let unsent = match self.remover.lock() {
                    Ok(r) => r.send(item).err().map(|e| e.0),
                    Err(_) => Some(item),
                };
                match unsent {
                    None => Ok(()),
                    Some(item) => {
                        drop(item.hold);
                        empty(&target)
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(_) => {
                drop(hold);
                empty(path)
            }
        }
    }
}

/// One of the threads that empty the trash, until the server's side of
/// the queue is gone.
fn work(queue: &Mutex<Receiver<Item>>) {
    loop {
        let next = match queue.lock() {
            Ok(q) => q.recv(),
            Err(_) => return,
        };
        let Ok(Item { path, hold }) = next else {
            return;
        };
        // The disk's mount ends here, freeing its device.
        drop(hold);
        if let Err(e) = empty(&path) {
            tracing::warn!(path = %path.display(), error = %e, "could not empty the trash");
        }
    }
}

/// Empties the trash under `data_dir` here and now, without a server
/// (for `purge`), with as many of the server's workers.
pub(crate) fn empty_all(data_dir: &Path) {
    let dir = data_dir.join("trash");
    let (remover, queue) = std::sync::mpsc::channel::<Item>();
    for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
        let _ = remover.send(Item {
            path: entry.path(),
            hold: None,
        });
    }
    // Closed: the workers stop once the queue is empty.
    drop(remover);
    let queue = Mutex::new(queue);
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| work(&queue));
        }
    });
    let _ = fs::remove_dir(&dir);
}

/// Removes a run dir: the loop device it recorded, then its files.
fn empty(path: &Path) -> io::Result<()> {
    super::loops::remove_recorded(path);
    remove_tree(path)
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
        let hold: OwnedFd = fs::File::open(run.join("upper")).expect("hold").into();
        trash.discard(&run, Some(hold)).expect("discard");
        assert!(!run.exists());
        trash
            .discard(&run, None)
            .expect("a second time: already gone");
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
    fn purge_empties_every_leftover_and_the_trash() {
        let data = tempfile::tempdir().expect("tempdir");
        for n in 0..3 * WORKERS {
            fs::create_dir_all(data.path().join(format!("trash/vm_{n}.1.0/upper")))
                .expect("leftover");
        }
        empty_all(data.path());
        assert!(!data.path().join("trash").exists());
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
