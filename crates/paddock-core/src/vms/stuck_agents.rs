//! Sandboxes whose agent stopped answering. Every call to an agent has a
//! deadline (the runtime's); one that passes it marks the VM here and in
//! its record (`status_reason`), and for a while after, further calls to
//! that VM fail at once instead of each waiting out its own deadline.
//! The first call that gets an answer again clears the mark.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::ids::VmId;
use crate::CoreError;

/// How long calls to a stuck agent fail without trying.
const FAIL_FAST_FOR: Duration = Duration::from_secs(10);
/// The VM's `status_reason` while its agent is stuck.
pub(crate) const STUCK_REASON: &str =
    "the VM's agent did not answer in time; retry, or delete the VM";

#[derive(Debug, Default)]
pub(crate) struct StuckAgents {
    since: Mutex<HashMap<VmId, Instant>>,
}

impl StuckAgents {
    fn since(&self) -> std::sync::MutexGuard<'_, HashMap<VmId, Instant>> {
        self.since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Refuses a call to `vm` while its agent was stuck moments ago.
    pub(crate) fn check(&self, vm: &VmId) -> Result<(), CoreError> {
        match self.since().get(vm) {
            Some(at) if at.elapsed() < FAIL_FAST_FOR => {
                Err(CoreError::DeadlineExceeded(STUCK_REASON.to_owned()))
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn mark(&self, vm: &VmId) {
        self.since().insert(vm.clone(), Instant::now());
    }

    /// Forgets `vm`'s mark; whether it had one.
    pub(crate) fn clear(&self, vm: &VmId) -> bool {
        self.since().remove(vm).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marked_vm_fails_fast_until_cleared() {
        let stuck = StuckAgents::default();
        let vm = VmId::generate();
        assert!(stuck.check(&vm).is_ok());
        stuck.mark(&vm);
        assert!(matches!(
            stuck.check(&vm),
            Err(CoreError::DeadlineExceeded(_))
        ));
        assert!(stuck.clear(&vm));
        assert!(stuck.check(&vm).is_ok());
        assert!(!stuck.clear(&vm));
    }
}
