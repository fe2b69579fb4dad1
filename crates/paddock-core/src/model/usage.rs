//! What accounts consume, measured on the host: CPU time and memory from
//! each sandbox's cgroup, bytes its network interface sent, and the bytes
//! volumes and snapshots keep on disk, summed per VM (or per account for
//! storage) and per UTC day.

use crate::clock::Timestamp;
use crate::ids::{AccountId, VmId};

/// A sandbox's host counters at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UsageCounters {
    /// CPU time used since the sandbox started, in nanoseconds.
    pub cpu_ns: u64,
    /// Memory charged to the sandbox now, in bytes.
    pub memory_bytes: u64,
}

/// One day's consumption of a VM, or (with no VM) of an account's stored
/// data.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UsageRecord {
    pub account_id: Option<AccountId>,
    pub vm_id: Option<VmId>,
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub cpu_seconds: f64,
    pub memory_gib_seconds: f64,
    pub egress_bytes: u64,
    /// Volumes and snapshots, in GiB kept for a second.
    pub storage_gib_seconds: f64,
}

impl UsageRecord {
    pub fn add(&mut self, other: &UsageRecord) {
        self.cpu_seconds += other.cpu_seconds;
        self.memory_gib_seconds += other.memory_gib_seconds;
        self.egress_bytes = self.egress_bytes.saturating_add(other.egress_bytes);
        self.storage_gib_seconds += other.storage_gib_seconds;
    }
}

/// Where a VM's monotonic counters stood at its last sample, kept so a
/// restarted server neither counts twice nor loses what ran meanwhile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageCursor {
    pub vm_id: VmId,
    pub cpu_ns: u64,
    pub egress_bytes: u64,
    pub at: Timestamp,
}

/// The UTC day of an instant, `YYYY-MM-DD`.
pub fn usage_day(t: Timestamp) -> String {
    let rendered = t.to_rfc3339();
    rendered.get(..10).unwrap_or("1970-01-01").to_owned()
}
