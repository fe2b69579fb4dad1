//! Letting go of what the product holds for sandboxes that ended
//! without it (a lifetime that ran out, a delete through another API):
//! their envd commands, watchers, code contexts and CPU readings. Ending
//! or pausing through this surface lets go at once; this catches the
//! rest on a timer.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use paddock_core::ids::VmId;
use paddock_core::model::VmStatus;
use paddock_core::service::Shutdown;

use crate::E2b;

/// How often sandboxes that ended elsewhere are looked for.
const EVERY: Duration = Duration::from_secs(30);

impl E2b {
    /// Lets go of ended sandboxes' state every [`EVERY`] until shutdown.
    pub async fn run_janitor(self: Arc<Self>, mut shutdown: Shutdown) {
        let mut tick = tokio::time::interval(EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => self.forget_ended().await,
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// Forgets every sandbox it holds state for that no longer runs.
    pub async fn forget_ended(&self) {
        let held: BTreeSet<VmId> = self
            .processes
            .vms()
            .into_iter()
            .chain(self.watchers.vms())
            .chain(self.contexts.vms())
            .chain(self.cpu_readings.vms())
            .collect();
        let vms = self.core.vms();
        for vm in held {
            let running = match vms.owner_of(&vm).await {
                Ok(Some(account)) => match vms.find_vm_of(&account, &vm).await {
                    Ok(Some(v)) => matches!(v.status, VmStatus::Running | VmStatus::Creating),
                    Ok(None) => false,
                    Err(_) => continue,
                },
                Ok(None) => false,
                Err(_) => continue,
            };
            if !running {
                self.forget_vm(&vm);
            }
        }
    }
}
