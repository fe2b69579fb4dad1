//! A sandbox's resource use as E2B's `get_metrics` reads it: CPU use
//! since the last look (or over a short sample), memory charged to its
//! cgroup, and its root file system's use as the sandbox sees it.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use paddock_core::clock::Timestamp;
use paddock_core::error::CoreError;
use paddock_core::exec::ExecRequest;
use paddock_core::ids::{AccountId, VmId};

use crate::E2b;

/// The shortest window CPU use is measured over.
const MIN_WINDOW: Duration = Duration::from_millis(200);
/// A previous look older than this is not used as the window's start.
const MAX_WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct SandboxMetric {
    pub at: Timestamp,
    pub cpu_count: u32,
    pub cpu_used_pct: f64,
    pub mem_used: u64,
    pub mem_total: u64,
    /// Page cache, from the sandbox's own `/proc/meminfo` (lxcfs's view
    /// of its cgroup in a container, the guest's in a microVM).
    pub mem_cache: u64,
    pub disk_used: u64,
    pub disk_total: u64,
}

/// The last CPU reading of each sandbox.
#[derive(Default)]
pub(crate) struct CpuReadings(Mutex<HashMap<VmId, (Instant, u64)>>);

impl CpuReadings {
    fn swap(&self, vm: &VmId, now: (Instant, u64)) -> Option<(Instant, u64)> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(vm.clone(), now)
    }

    pub(crate) fn vms(&self) -> Vec<VmId> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    pub(crate) fn forget_vm(&self, vm: &VmId) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(vm);
    }
}

/// `df -kP /`'s total and used bytes.
fn parse_df(out: &str) -> Option<(u64, u64)> {
    let line = out.lines().nth(1)?;
    let mut cols = line.split_whitespace().skip(1);
    let total: u64 = cols.next()?.parse().ok()?;
    let used: u64 = cols.next()?.parse().ok()?;
    Some((total * 1024, used * 1024))
}

impl E2b {
    pub async fn sandbox_metrics(
        &self,
        account: &AccountId,
        id: &str,
    ) -> Result<Vec<SandboxMetric>, CoreError> {
        let info = self.get_sandbox(account, id).await?;
        let vm: VmId = info
            .sandbox_id
            .parse()
            .map_err(|_| CoreError::not_found("sandbox", id))?;
        let vms = self.core.vms();
        let read = || async {
            vms.usage_now(account, &vm).await?.ok_or_else(|| {
                CoreError::FailedPrecondition(
                    "this sandbox's provider keeps no usage counters".into(),
                )
            })
        };
        let first = read().await?;
        let now = Instant::now();
        let start = match self.cpu_readings.swap(&vm, (now, first.cpu_ns)) {
            Some((at, ns))
                if now - at >= MIN_WINDOW && now - at <= MAX_WINDOW && ns <= first.cpu_ns =>
            {
                (at, ns)
            }
            _ => {
                tokio::time::sleep(MIN_WINDOW).await;
                let second = read().await?;
                let later = Instant::now();
                self.cpu_readings.swap(&vm, (later, second.cpu_ns));
                let pct = cpu_pct(first.cpu_ns, second.cpu_ns, later - now, info.cpu_count);
                return Ok(vec![
                    self.metric(account, &vm, &info, pct, second.memory_bytes)
                        .await,
                ]);
            }
        };
        let pct = cpu_pct(start.1, first.cpu_ns, now - start.0, info.cpu_count);
        Ok(vec![
            self.metric(account, &vm, &info, pct, first.memory_bytes)
                .await,
        ])
    }

    async fn metric(
        &self,
        account: &AccountId,
        vm: &VmId,
        info: &crate::SandboxInfo,
        cpu_used_pct: f64,
        mem_used: u64,
    ) -> SandboxMetric {
        let look = ExecRequest {
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                "df -kP /; cat /proc/meminfo".into(),
            ],
            timeout: Some(Duration::from_secs(5)),
            ..Default::default()
        };
        let out = match self.core.vms().exec_collect(account, vm, look).await {
            Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
            Err(_) => String::new(),
        };
        let (disk_total, disk_used) = parse_df(&out).unwrap_or_default();
        let mem_cache = parse_cached(&out).unwrap_or_default();
        SandboxMetric {
            at: Timestamp::now(),
            cpu_count: info.cpu_count,
            cpu_used_pct,
            mem_used,
            mem_total: u64::from(info.memory_mb) << 20,
            mem_cache,
            disk_used,
            disk_total,
        }
    }
}

/// `/proc/meminfo`'s `Cached:` in bytes.
fn parse_cached(out: &str) -> Option<u64> {
    let line = out.lines().find(|l| l.starts_with("Cached:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU use over a window, in percent of the sandbox's CPUs.
fn cpu_pct(from_ns: u64, to_ns: u64, window: Duration, cpus: u32) -> f64 {
    let used = to_ns.saturating_sub(from_ns) as f64;
    let available = window.as_nanos() as f64 * f64::from(cpus.max(1));
    if available <= 0.0 {
        return 0.0;
    }
    ((used / available) * 100.0).clamp(0.0, 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn df_output_is_read() {
        let out = "Filesystem     1024-blocks    Used Available Capacity Mounted on\noverlay          10255636  123456  9600000       2% /\n";
        assert_eq!(parse_df(out), Some((10255636 * 1024, 123456 * 1024)));
        assert_eq!(parse_df("junk"), None);
        let mem = "MemTotal: 1024 kB\nCached:  300 kB\n";
        assert_eq!(parse_cached(mem), Some(300 * 1024));
    }

    #[test]
    fn cpu_share_of_the_sandboxs_cpus() {
        let pct = cpu_pct(0, 100_000_000, Duration::from_millis(200), 1);
        assert!((pct - 50.0).abs() < 1e-9);
        assert_eq!(cpu_pct(5, 1, Duration::from_secs(1), 2), 0.0);
    }
}
