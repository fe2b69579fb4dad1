//! Sandboxes booted ahead of demand in the server's default shape (the
//! default provider, variant, size, disk and egress policy), so that the
//! most common create, `POST /v1/vms` with `{}`, takes one that already
//! runs instead of booting one: the namespaces, disk, cgroups and network
//! are all made before anyone asks.
//!
//! A prepared sandbox is keyed by the VM id it will carry: its run dir,
//! cgroups and network namespace are already named after it, so claiming
//! it is only writing the VM's row. Until then it has no row, so a server
//! that dies with sandboxes in its pool frees them at its next start like
//! any other orphan; a server that stops cleanly stops them.
//!
//! What a claimed sandbox shows of having waited: `/proc/uptime` counts
//! from its boot in the pool, not from the create. Variables of the VM's
//! `env` reach it through [`Provider::stage_env`](crate::provider::Provider::stage_env)
//! (every exec and PTY sees them, as at boot).

use std::sync::Mutex;

use crate::ids::VmId;
use crate::model::RuntimeHandle;
use crate::network_backend::VmNetwork;

/// A sandbox that runs in the default shape and waits for a VM.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub id: VmId,
    pub handle: RuntimeHandle,
    pub network: Option<VmNetwork>,
}

/// The prepared sandboxes and the filler's wake-up call.
#[derive(Default)]
pub(crate) struct WarmPool {
    ready: Mutex<Vec<Prepared>>,
    pub(super) wake: tokio::sync::Notify,
}

impl WarmPool {
    pub(super) fn len(&self) -> usize {
        self.ready.lock().map(|r| r.len()).unwrap_or(0)
    }

    pub(super) fn push(&self, prepared: Prepared) {
        if let Ok(mut ready) = self.ready.lock() {
            ready.push(prepared);
        }
    }

    /// The oldest prepared sandbox, if any; the filler is woken to make
    /// its replacement.
    pub(super) fn take(&self) -> Option<Prepared> {
        let taken = self.ready.lock().ok().and_then(|mut r| {
            if r.is_empty() {
                None
            } else {
                Some(r.remove(0))
            }
        });
        self.wake.notify_one();
        taken
    }

    pub(super) fn drain(&self) -> Vec<Prepared> {
        self.ready
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }
}
