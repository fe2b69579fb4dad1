//! The loop devices sandboxes' disks are on.
//!
//! The boot helper takes a free device from the kernel (the lowest free
//! one, made when none is free) and records its number in the run dir.
//! When the sandbox goes, the kernel unbinds the device but never removes
//! it, and every device that exists is a line of `/proc/diskstats`,
//! which lxcfs reads whole (quadratically, in the kernel) for each
//! sandbox's view of that file: 5,000 left by a past peak made each read
//! cost 20-60 ms. Making a device costs a boot about a millisecond, so a
//! few freed ones are kept for the next boots and the rest removed.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use paddock_agent_protocol::config::LOOP_RECORD;

/// An estimate of the freed devices kept: boots take free devices and
/// teardowns free them; the kernel decides which, so this only bounds
/// how many this server leaves unbound.
pub struct FreeLoops {
    kept: AtomicUsize,
    keep: usize,
}

impl FreeLoops {
    /// Keeping at most `keep` freed devices.
    pub fn keeping(keep: usize) -> Self {
        Self {
            kept: AtomicUsize::new(0),
            keep,
        }
    }

    /// A boot took a free device (perhaps one kept here).
    pub fn taken(&self) {
        let _ = self
            .kept
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |k| k.checked_sub(1));
    }

    /// The sandbox of `run` is gone: its device is kept for a later boot
    /// while fewer than its `keep` are (its record dropped), else it is
    /// to be removed: true, and the record stays in `run` for
    /// [`remove_recorded`], which the caller runs (removing a device
    /// takes tens of milliseconds, so the trash does it for a run dir
    /// that goes).
    #[must_use]
    pub fn release(&self, run: &Path) -> bool {
        let kept = self
            .kept
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |k| {
                (k < self.keep).then_some(k + 1)
            })
            .is_ok();
        if kept {
            let _ = fs::remove_file(run.join(LOOP_RECORD));
        }
        !kept
    }
}

/// Removes the loop device recorded in `run`, if it is free: bound to no
/// file and opened by no one (the sandbox's processes are gone, and with
/// the last of them its disk's mount and the device's binding). One the
/// kernel handed to another sandbox since is left to that sandbox.
pub fn remove_recorded(run: &Path) {
    let record = run.join(LOOP_RECORD);
    let Some(n) = fs::read_to_string(&record)
        .ok()
        .and_then(|n| n.trim().parse::<u32>().ok())
    else {
        return;
    };
    match crate::sys::remove_free_loop(n) {
        Ok(_) => {
            let _ = fs::remove_file(&record);
        }
        Err(e) => {
            tracing::warn!(device = n, error = %e, "could not remove a sandbox's loop device")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_bounded_few_and_counts_boots_taking_them() {
        let dir = tempfile::tempdir().expect("dir");
        const KEEP: usize = 4;
        let loops = FreeLoops::keeping(KEEP);
        for _ in 0..KEEP {
            // A record to keep: only the record goes, no device is touched.
            fs::write(dir.path().join(LOOP_RECORD), "999999").expect("record");
            if loops.release(dir.path()) {
                remove_recorded(dir.path());
            }
            assert!(!dir.path().join(LOOP_RECORD).exists());
        }
        assert_eq!(loops.kept.load(Ordering::SeqCst), KEEP);
        loops.taken();
        assert_eq!(loops.kept.load(Ordering::SeqCst), KEEP - 1);
        for _ in 0..2 * KEEP {
            loops.taken();
        }
        assert_eq!(loops.kept.load(Ordering::SeqCst), 0, "never below zero");
    }
}
