//! When each VM was last used, for `auto_stop` and the sweeper.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::ids::VmId;

/// When each VM was last used (exec, PTY, files, share traffic) and how
/// many commands run in it now. In memory: after a restart every VM
/// counts from the restart.
#[derive(Default)]
pub struct Activity {
    by_vm: Mutex<HashMap<VmId, Use>>,
}

#[derive(Clone, Copy)]
struct Use {
    last: Instant,
    running: u32,
}

impl Activity {
    fn with<R>(&self, id: &VmId, f: impl FnOnce(&mut Use) -> R) -> R {
        let mut map = self
            .by_vm
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = map.entry(id.clone()).or_insert(Use {
            last: Instant::now(),
            running: 0,
        });
        f(entry)
    }

    /// Records a use of the VM now.
    pub fn touch(&self, id: &VmId) {
        self.with(id, |u| u.last = Instant::now());
    }

    /// Records a command that runs until the guard drops: the VM is not
    /// idle meanwhile.
    pub fn busy(self: &Arc<Self>, id: &VmId) -> BusyGuard {
        self.with(id, |u| {
            u.last = Instant::now();
            u.running += 1;
        });
        BusyGuard {
            activity: Arc::clone(self),
            id: id.clone(),
        }
    }

    /// How long the VM has been idle, or `None` while a command runs.
    pub(super) fn idle_for(&self, id: &VmId, since: Instant) -> Option<std::time::Duration> {
        self.with(id, |u| {
            if u.last < since {
                u.last = since;
            }
            (u.running == 0).then(|| u.last.elapsed())
        })
    }

    pub(super) fn forget(&self, id: &VmId) {
        self.by_vm
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
    }
}

/// Ends a [`Activity::busy`] period when dropped.
pub struct BusyGuard {
    activity: Arc<Activity>,
    id: VmId,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.activity.with(&self.id, |u| {
            u.running = u.running.saturating_sub(1);
            u.last = Instant::now();
        });
    }
}
