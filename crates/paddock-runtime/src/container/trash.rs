//! Deleting sandboxes' files off the delete's path. A sandbox's dirs (its
//! run dir on the data dir, its runtime dir on the server's tmpfs) are
//! renamed into the trash of their own file system (one atomic step
//! each: the sandbox's paths are free at once) and removed there by a
//! thread of the trash's own: unlinking a disk image that was written to
//! frees its extents, which takes milliseconds a sandbox, and removing
//! the loop device it recorded (when it is not kept for a later boot)
//! takes tens. A reference to the sandbox's disk may come with them: the
//! disk's mount then ends here, when it is dropped, before the device is
//! removed.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};

/// How many threads empty the trash.
const WORKERS: usize = 8;
/// The trash's directory in each file system it takes trees from.
pub(crate) const DIR: &str = "trash";

pub(crate) struct Trash {
    /// Each file system's trash directory, under the directory whose
    /// trees it takes (`DIR` in each of `roots`).
    dirs: Vec<PathBuf>,
    next: AtomicU64,
    remover: Mutex<Sender<Item>>,
}

/// One sandbox's trees to remove, and what holds a mount on them until
/// then.
struct Item {
    paths: Vec<PathBuf>,
    hold: Option<OwnedFd>,
}

impl Trash {
    /// The trash for trees under each of `roots` (a rename moves a tree
    /// only within its file system, so each root has a trash of its
    /// own), with what a stopped server left in them queued for removal.
    pub(crate) fn open(roots: &[&Path]) -> io::Result<Self> {
        let dirs: Vec<PathBuf> = roots.iter().map(|r| r.join(DIR)).collect();
        let (remover, queue) = std::sync::mpsc::channel::<Item>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..WORKERS {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("paddock-trash-{n}"))
                .spawn(move || work(&queue))?;
        }
        for dir in &dirs {
            fs::create_dir_all(dir)?;
            queue_leftovers(dir, &remover)?;
        }
        Ok(Self {
            dirs,
            next: AtomicU64::new(0),
            remover: Mutex::new(remover),
        })
    }

    /// Removes the trees at `paths` (one sandbox's): moved into the trash
    /// now, deleted there soon, after `hold` (a reference keeping a mount
    /// alive) is dropped. One that is not there is gone; one that cannot
    /// be moved is deleted here.
    pub(crate) fn discard(&self, paths: &[&Path], hold: Option<OwnedFd>) -> io::Result<()> {
        let mut moved = Vec::with_capacity(paths.len());
        let mut unmoved = Vec::new();
        for path in paths {
            match self.move_in(path) {
                Ok(Some(target)) => moved.push(target),
                Ok(None) => {}
                Err(_) => unmoved.push(path.to_path_buf()),
            }
        }
        if !unmoved.is_empty() {
            // Emptied here, each after the mount is let go.
            moved.extend(unmoved);
            return empty(moved, hold);
        }
        if moved.is_empty() {
            return Ok(());
        }
        let item = Item { paths: moved, hold };
        let unsent = match self.remover.lock() {
            Ok(r) => r.send(item).err().map(|e| e.0),
            Err(_) => Some(item),
        };
        match unsent {
            None => Ok(()),
            Some(item) => empty(item.paths, item.hold),
        }
    }

    /// Renames `path` into the trash of its file system: where it went,
    /// or `None` when it was not there.
    fn move_in(&self, path: &Path) -> io::Result<Option<PathBuf>> {
        // The trash of the deepest root above `path`.
        let dir = self
            .dirs
            .iter()
            .filter(|d| d.parent().is_some_and(|root| path.starts_with(root)))
            .max_by_key(|d| d.as_os_str().len())
            .ok_or_else(|| io::Error::other("no trash on this file system"))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let target = dir.join(format!("{name}.{}.{n}", std::process::id()));
        match fs::rename(path, &target) {
            Ok(()) => Ok(Some(target)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Queues each tree in the trash dir `dir` for removal, on its own.
fn queue_leftovers(dir: &Path, remover: &Sender<Item>) -> io::Result<()> {
    for entry in fs::read_dir(dir)?.flatten() {
        let _ = remover.send(Item {
            paths: vec![entry.path()],
            hold: None,
        });
    }
    Ok(())
}

/// One of the threads that empty the trash, until the server's side of
/// the queue is gone.
fn work(queue: &Mutex<Receiver<Item>>) {
    loop {
        let next = match queue.lock() {
            Ok(q) => q.recv(),
            Err(_) => return,
        };
        let Ok(item) = next else {
            return;
        };
        empty_logged(item);
    }
}

fn empty_logged(Item { paths, hold }: Item) {
    if let Err(e) = empty(paths, hold) {
        tracing::warn!(error = %e, "could not empty the trash");
    }
}

/// Runs `each` over `items` here and now, on as many threads as the
/// trash has workers (for `purge`, which has no server): what it does to
/// a sandbox is mostly waiting (a loop device's removal, an RCU grace
/// period; a disk image's discard), and the waits overlap.
pub(crate) fn side_by_side<I>(items: I, each: impl Fn(I::Item) + Sync)
where
    I: Iterator + Send,
    I::Item: Send,
{
    let queue = Mutex::new(items);
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| loop {
                let next = queue.lock().map(|mut q| q.next());
                let Ok(Some(item)) = next else {
                    return;
                };
                each(item);
            });
        }
    });
}

/// Empties the trashes under `roots` here and now, without a server (for
/// `purge`), with as many of the server's workers, and removes them.
pub(crate) fn empty_all(roots: &[&Path]) {
    let (remover, queue) = std::sync::mpsc::channel::<Item>();
    let dirs: Vec<PathBuf> = roots.iter().map(|r| r.join(DIR)).collect();
    for dir in &dirs {
        let _ = queue_leftovers(dir, &remover);
    }
    // Closed: the workers stop once the queue is empty.
    drop(remover);
    side_by_side(queue.into_iter(), empty_logged);
    for dir in dirs {
        let _ = fs::remove_dir(dir);
    }
}

/// Removes one sandbox's trees: first `hold` goes (the disk's mount ends,
/// freeing its device), then the loop device a tree recorded, then the
/// files. Every tree is tried; the first failure is reported.
fn empty(paths: Vec<PathBuf>, hold: Option<OwnedFd>) -> io::Result<()> {
    drop(hold);
    for path in &paths {
        super::loops::remove_recorded(path);
    }
    let mut result = Ok(());
    for path in &paths {
        let removed = remove_tree(path);
        if result.is_ok() {
            result = removed;
        }
    }
    result
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
        let trash = Trash::open(&[data.path()]).expect("trash");
        let run = data.path().join("sandboxes/vm_a");
        fs::create_dir_all(run.join("upper/etc")).expect("dirs");
        fs::write(run.join("upper/etc/f"), "x").expect("file");
        let hold: OwnedFd = fs::File::open(run.join("upper")).expect("hold").into();
        trash.discard(&[&run], Some(hold)).expect("discard");
        assert!(!run.exists());
        trash
            .discard(&[&run], None)
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
    fn a_sandboxs_dirs_each_go_into_the_trash_of_their_own_root() {
        let data = tempfile::tempdir().expect("tempdir");
        // The runtime root under the data dir, as the server has it (on a
        // tmpfs of its own there; the same file system here).
        let runtime = data.path().join("run");
        let trash = Trash::open(&[data.path(), &runtime]).expect("trash");
        let run = data.path().join("sandboxes/vm_c");
        let live = runtime.join("vm_c");
        for dir in [&run, &live] {
            fs::create_dir_all(dir.join("root")).expect("dirs");
        }
        trash.discard(&[&run, &live], None).expect("discard");
        assert!(!run.exists() && !live.exists());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        for dir in [data.path().join("trash"), runtime.join("trash")] {
            while fs::read_dir(&dir).expect("trash").count() > 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{} was never emptied",
                    dir.display()
                );
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        // A tree under no root of the trash's is removed where it is.
        let elsewhere = tempfile::tempdir().expect("tempdir");
        let stray = elsewhere.path().join("vm_d");
        fs::create_dir_all(stray.join("root")).expect("dirs");
        trash.discard(&[&stray], None).expect("discard");
        assert!(!stray.exists());
    }

    #[test]
    fn purge_empties_every_leftover_and_the_trash() {
        let data = tempfile::tempdir().expect("tempdir");
        for n in 0..3 * WORKERS {
            fs::create_dir_all(data.path().join(format!("trash/vm_{n}.1.0/upper")))
                .expect("leftover");
        }
        empty_all(&[data.path()]);
        assert!(!data.path().join("trash").exists());
    }

    #[test]
    fn what_a_stopped_server_left_in_the_trash_goes_at_open() {
        let data = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(data.path().join("trash/vm_b.1.0/upper")).expect("leftover");
        let _trash = Trash::open(&[data.path()]).expect("trash");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while data.path().join("trash/vm_b.1.0").exists() {
            assert!(std::time::Instant::now() < deadline, "the leftover stayed");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
