//! Deleting sandboxes' files off the delete's path. A sandbox's dirs (its
//! run dir on the data dir, its runtime dir on the server's tmpfs) are
//! renamed into the trash of their own file system (one atomic step
//! each: the sandbox's paths are free at once) and removed there by a
//! thread of the trash's own: unlinking a disk image that was written to
//! frees its extents, which takes milliseconds a sandbox, and removing
//! the loop device it recorded (when it is not kept for a later boot)
//! takes tens. A reference to the sandbox's disk may come with them: the
//! disk's mount then ends here, when it is dropped, before the device is
//! removed. So may a first step ([`Reap`]): what is left of a killed
//! sandbox's teardown (waiting for its processes to be gone, removing its
//! cgroups), run by the trash before its trees go.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// Items sent and not yet emptied.
    pending: Arc<AtomicUsize>,
}

/// What the trash runs before it empties a sandbox's trees, given where
/// each of them went (in the order given, `None` for one that was not
/// there).
pub(crate) type Reap = Box<dyn FnOnce(&[Option<PathBuf>]) + Send>;

/// One sandbox's trees to remove, what holds a mount on them until then,
/// and what runs first.
struct Item {
    paths: Vec<Option<PathBuf>>,
    hold: Option<OwnedFd>,
    first: Option<Reap>,
}

impl Trash {
    /// The trash for trees under each of `roots` (a rename moves a tree
    /// only within its file system, so each root has a trash of its
    /// own), with what a stopped server left in them queued for removal.
    pub(crate) fn open(roots: &[&Path]) -> io::Result<Self> {
        let dirs: Vec<PathBuf> = roots.iter().map(|r| r.join(DIR)).collect();
        let (remover, queue) = std::sync::mpsc::channel::<Item>();
        let queue = Arc::new(Mutex::new(queue));
        let pending = Arc::new(AtomicUsize::new(0));
        for n in 0..WORKERS {
            let queue = Arc::clone(&queue);
            let pending = Arc::clone(&pending);
            std::thread::Builder::new()
                .name(format!("paddock-trash-{n}"))
                .spawn(move || work(&queue, &pending))?;
        }
        for dir in &dirs {
            fs::create_dir_all(dir)?;
            queue_leftovers(dir, &remover, &pending)?;
        }
        Ok(Self {
            dirs,
            next: AtomicU64::new(0),
            remover: Mutex::new(remover),
            pending,
        })
    }

    /// Waits until everything sent to the trash is emptied, up to
    /// `within`; whether it was.
    pub(crate) fn settle(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.pending.load(Ordering::SeqCst) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Removes the trees at `paths` (one sandbox's): moved into the trash
    /// now, deleted there soon, after `hold` (a reference keeping a mount
    /// alive) is dropped. One that is not there is gone; one that cannot
    /// be moved is deleted here.
    pub(crate) fn discard(&self, paths: &[&Path], hold: Option<OwnedFd>) -> io::Result<()> {
        self.discard_after(paths, hold, None)
    }

    /// [`Trash::discard`], with `first` run by the trash (given where the
    /// trees went) before it lets `hold` go and empties them; here, before
    /// that, when a tree cannot be moved.
    pub(crate) fn discard_after(
        &self,
        paths: &[&Path],
        hold: Option<OwnedFd>,
        first: Option<Reap>,
    ) -> io::Result<()> {
        let mut moved = Vec::with_capacity(paths.len());
        let mut unmoved = false;
        for path in paths {
            match self.move_in(path) {
                Ok(target) => moved.push(target),
                Err(_) => {
                    unmoved = true;
                    moved.push(Some(path.to_path_buf()));
                }
            }
        }
        let item = Item {
            paths: moved,
            hold,
            first,
        };
        if unmoved {
            // Emptied here, each after the mount is let go.
            return empty(item);
        }
        if item.first.is_none() && item.paths.iter().all(Option::is_none) {
            return Ok(());
        }
        let unsent = match self.remover.lock() {
            Ok(r) => send(&r, &self.pending, item).err(),
            Err(_) => Some(item),
        };
        match unsent {
            None => Ok(()),
            Some(item) => empty(item),
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

/// Queues each tree in the trash dir `dir` for removal, on its own,
/// counting each in `pending` until it is emptied.
fn queue_leftovers(dir: &Path, remover: &Sender<Item>, pending: &AtomicUsize) -> io::Result<()> {
    for entry in fs::read_dir(dir)?.flatten() {
        let item = Item {
            paths: vec![Some(entry.path())],
            hold: None,
            first: None,
        };
        let _ = send(remover, pending, item);
    }
    Ok(())
}

/// Sends `item` to the trash's threads, counted in `pending` until one of
/// them has emptied it; given back when no thread is left to take it.
fn send(remover: &Sender<Item>, pending: &AtomicUsize, item: Item) -> Result<(), Item> {
    pending.fetch_add(1, Ordering::SeqCst);
    remover.send(item).map_err(|unsent| {
        pending.fetch_sub(1, Ordering::SeqCst);
        unsent.0
    })
}

/// One of the threads that empty the trash, until the server's side of
/// the queue is gone.
fn work(queue: &Mutex<Receiver<Item>>, pending: &AtomicUsize) {
    loop {
        let next = match queue.lock() {
            Ok(q) => q.recv(),
            Err(_) => return,
        };
        let Ok(item) = next else {
            return;
        };
        empty_logged(item);
        pending.fetch_sub(1, Ordering::SeqCst);
    }
}

fn empty_logged(item: Item) {
    if let Err(e) = empty(item) {
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
        let _ = queue_leftovers(dir, &remover, &AtomicUsize::new(0));
    }
    // Closed: the workers stop once the queue is empty.
    drop(remover);
    side_by_side(queue.into_iter(), empty_logged);
    for dir in dirs {
        let _ = fs::remove_dir(dir);
    }
}

/// Removes one sandbox's trees: its first step runs, then `hold` goes
/// (the disk's mount ends, freeing its device), then the loop device a
/// tree recorded, then the files. Every tree is tried; the first failure
/// is reported.
fn empty(Item { paths, hold, first }: Item) -> io::Result<()> {
    if let Some(first) = first {
        first(&paths);
    }
    drop(hold);
    let paths: Vec<PathBuf> = paths.into_iter().flatten().collect();
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
    fn a_reap_step_runs_first_on_the_moved_trees_and_settle_waits_for_it() {
        let data = tempfile::tempdir().expect("tempdir");
        let trash = Trash::open(&[data.path()]).expect("trash");
        let run = data.path().join("sandboxes/vm_r");
        let absent = data.path().join("sandboxes/vm_never");
        fs::create_dir_all(run.join("upper")).expect("dirs");
        fs::write(run.join("ids"), "100000 65536").expect("file");
        let (seen_tx, seen_rx) = std::sync::mpsc::channel();
        let reap: Reap = Box::new(move |moved: &[Option<PathBuf>]| {
            // Slow, as a sandbox's cgroups are: settle must wait for it.
            std::thread::sleep(Duration::from_millis(50));
            let read = moved[0]
                .as_ref()
                .and_then(|run| fs::read_to_string(run.join("ids")).ok());
            let _ = seen_tx.send((moved.to_vec(), read));
        });
        trash
            .discard_after(&[&run, &absent], None, Some(reap))
            .expect("discard");
        assert!(!run.exists(), "its path is free at once");
        assert!(trash.settle(Duration::from_secs(5)), "the trash settled");
        let (moved, read) = seen_rx.try_recv().expect("the reap step ran");
        let in_trash = moved[0].as_ref().expect("the run dir went");
        assert!(in_trash.starts_with(data.path().join(DIR)), "{in_trash:?}");
        assert_eq!(moved[1], None, "a tree that was not there");
        assert_eq!(
            read.as_deref(),
            Some("100000 65536"),
            "before its files went"
        );
        assert!(!in_trash.exists(), "then the tree was emptied");
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
