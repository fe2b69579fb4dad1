//! Metering: what each VM and account consumed, measured on the host.
//! Every `usage_interval` the server reads each running sandbox's
//! counters (CPU time and memory from its cgroup, bytes sent from its
//! veth) and the bytes the account's volumes and snapshots keep, and adds
//! what ran since the last sample to the day's rows. CPU time and bytes
//! sent are monotonic counters: a cursor per VM, kept in the store, says
//! where the last sample left them, so a restarted server counts neither
//! twice nor from zero. Memory and stored bytes are levels, integrated
//! over the time between samples (at most two intervals: across a gap
//! with no samples, what was held is not known).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::component::Vms;
use crate::clock::Timestamp;
use crate::error::error_chain;
use crate::error::CoreError;
use crate::ids::{AccountId, VmId};
use crate::model::{usage_day, UsageCounters, UsageCursor, UsageRecord, Vm, VmStatus, VmStatusSet};
use crate::shutdown::Shutdown;

const GIB: f64 = (1u64 << 30) as f64;

/// One running VM's counters at a sample.
#[derive(Debug, Clone)]
pub struct VmSample {
    pub vm_id: VmId,
    pub account_id: AccountId,
    pub started_at: Option<Timestamp>,
    pub counters: Option<UsageCounters>,
    pub egress_bytes: Option<u64>,
}

/// The cursors, and the arithmetic from samples to records.
#[derive(Debug, Default)]
pub struct Meter {
    cursors: HashMap<VmId, UsageCursor>,
    storage_at: Option<Timestamp>,
}

/// What one sample adds: records, the cursors to keep, the VMs whose
/// cursors go.
#[derive(Debug, Default)]
pub struct Advance {
    pub records: Vec<UsageRecord>,
    pub cursors: Vec<UsageCursor>,
    pub ended: Vec<VmId>,
}

/// How far a monotonic counter moved; a counter below its cursor was
/// reset (the sandbox restarted), so all of it is new.
fn moved(now: u64, before: Option<u64>) -> u64 {
    match before {
        Some(b) if now >= b => now - b,
        _ => now,
    }
}

/// Seconds between `from` and `to`, at most `cap`.
fn span(from: Timestamp, to: Timestamp, cap: Duration) -> f64 {
    let ms = (to.unix_millis() - from.unix_millis()).max(0) as f64;
    (ms / 1000.0).min(cap.as_secs_f64())
}

impl Meter {
    pub fn new(cursors: Vec<UsageCursor>) -> Self {
        Self {
            cursors: cursors.into_iter().map(|c| (c.vm_id.clone(), c)).collect(),
            storage_at: None,
        }
    }

    /// What ran between each VM's last sample and `now`. VMs that had a
    /// cursor and are not sampled any more have ended.
    pub fn advance(&mut self, now: Timestamp, interval: Duration, samples: &[VmSample]) -> Advance {
        let cap = interval * 2;
        let day = usage_day(now);
        let mut out = Advance::default();
        let mut seen = std::collections::HashSet::new();
        for s in samples {
            seen.insert(s.vm_id.clone());
            let before = self.cursors.get(&s.vm_id);
            let counters = s.counters.unwrap_or_default();
            let egress = s.egress_bytes.unwrap_or(0);
            let since = before
                .map(|c| c.at)
                .or(s.started_at)
                .unwrap_or(now)
                .max(s.started_at.unwrap_or(Timestamp::from_unix_millis(0)));
            let record = UsageRecord {
                account_id: Some(s.account_id.clone()),
                vm_id: Some(s.vm_id.clone()),
                day: day.clone(),
                cpu_seconds: moved(counters.cpu_ns, before.map(|c| c.cpu_ns)) as f64 / 1e9,
                memory_gib_seconds: counters.memory_bytes as f64 / GIB * span(since, now, cap),
                egress_bytes: moved(egress, before.map(|c| c.egress_bytes)),
                storage_gib_seconds: 0.0,
            };
            let cursor = UsageCursor {
                vm_id: s.vm_id.clone(),
                cpu_ns: counters.cpu_ns,
                egress_bytes: egress,
                at: now,
            };
            self.cursors.insert(s.vm_id.clone(), cursor.clone());
            out.cursors.push(cursor);
            out.records.push(record);
        }
        let ended: Vec<VmId> = self
            .cursors
            .keys()
            .filter(|id| !seen.contains(*id))
            .cloned()
            .collect();
        for id in &ended {
            self.cursors.remove(id);
        }
        out.ended = ended;
        out
    }

    /// The accounts' stored bytes held since the last storage sample.
    pub fn storage(
        &mut self,
        now: Timestamp,
        interval: Duration,
        held: &[(AccountId, u64)],
    ) -> Vec<UsageRecord> {
        let since = self.storage_at.replace(now);
        let Some(since) = since else {
            return Vec::new();
        };
        let seconds = span(since, now, interval * 2);
        held.iter()
            .filter(|(_, bytes)| *bytes > 0)
            .map(|(account, bytes)| UsageRecord {
                account_id: Some(account.clone()),
                vm_id: None,
                day: usage_day(now),
                storage_gib_seconds: *bytes as f64 / GIB * seconds,
                ..UsageRecord::default()
            })
            .collect()
    }
}

impl Vms {
    /// Samples usage every `usage_interval` until shutdown. A failed
    /// sample is logged and the next one tries again; the cursors make up
    /// for what it missed.
    pub async fn run_metering(self: Arc<Self>, mut shutdown: Shutdown) {
        let interval = self.config.usage_interval;
        let mut meter = match self.parts.usage.cursors().await {
            Ok(cursors) => Meter::new(cursors),
            Err(e) => {
                tracing::error!(error = %error_chain(&e), "metering: read the usage cursors");
                Meter::default()
            }
        };
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.cancelled() => return,
            }
            if let Err(e) = Arc::clone(&self).meter_once(&mut meter, interval).await {
                tracing::warn!(error = %error_chain(&e), "metering: a sample failed");
            }
        }
    }

    async fn meter_once(
        self: Arc<Self>,
        meter: &mut Meter,
        interval: Duration,
    ) -> Result<(), CoreError> {
        let began = std::time::Instant::now();
        let running = self
            .store
            .list_vms_in(&VmStatusSet::of(&[VmStatus::Running]))
            .await?;
        let count = running.len();
        // Three small file reads per sandbox: off the async workers.
        let this = Arc::clone(&self);
        let samples: Vec<VmSample> =
            tokio::task::spawn_blocking(move || running.iter().map(|vm| this.sample(vm)).collect())
                .await
                .map_err(|e| {
                    CoreError::Unavailable(format!("metering: the sample task failed: {e}"))
                })?;
        let now = Timestamp::now();
        let advance = meter.advance(now, interval, &samples);
        let held = self.stored_bytes().await?;
        let mut records = advance.records;
        records.extend(meter.storage(now, interval, &held));
        self.parts
            .usage
            .record(&records, &advance.cursors, &advance.ended)
            .await?;
        tracing::debug!(
            vms = count,
            elapsed_us = began.elapsed().as_micros() as u64,
            "metering: a sample taken"
        );
        Ok(())
    }

    fn sample(&self, vm: &Vm) -> VmSample {
        VmSample {
            vm_id: vm.id.clone(),
            account_id: vm.account_id.clone(),
            started_at: vm.started_at,
            counters: self.provider_of(vm).ok().and_then(|p| p.usage(&vm.id)),
            egress_bytes: vm
                .network
                .as_ref()
                .and_then(|n| self.network.egress_bytes(n)),
        }
    }

    /// Each account's bytes kept in volumes (their size) and snapshots.
    async fn stored_bytes(&self) -> Result<Vec<(AccountId, u64)>, CoreError> {
        let mut out = Vec::new();
        for account in self.parts.accounts.list_accounts().await? {
            let volumes = self.parts.volumes.bytes_held(&account.id, None).await?;
            let snapshots = self.parts.snapshots.bytes_held(&account.id).await?;
            out.push((account.id, volumes.saturating_add(snapshots)));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(vm: &VmId, account: &AccountId, cpu_ns: u64, memory: u64, egress: u64) -> VmSample {
        VmSample {
            vm_id: vm.clone(),
            account_id: account.clone(),
            started_at: Some(Timestamp::from_unix_millis(0)),
            counters: Some(UsageCounters {
                cpu_ns,
                memory_bytes: memory,
            }),
            egress_bytes: Some(egress),
        }
    }

    #[test]
    fn counters_add_what_moved_and_levels_integrate_over_time() {
        let (vm, account) = (VmId::generate(), AccountId::generate());
        let interval = Duration::from_secs(10);
        let t0 = Timestamp::from_unix_millis(86_400_000);
        // A cursor from before a restart: only what moved since counts.
        let mut meter = Meter::new(vec![UsageCursor {
            vm_id: vm.clone(),
            cpu_ns: 1_000_000_000,
            egress_bytes: 500,
            at: t0,
        }]);
        let t1 = t0.plus_seconds(10);
        let a = meter.advance(
            t1,
            interval,
            &[sample(&vm, &account, 3_000_000_000, 1 << 30, 1_500)],
        );
        assert_eq!(a.records.len(), 1);
        let r = &a.records[0];
        assert_eq!(r.cpu_seconds, 2.0);
        assert_eq!(r.egress_bytes, 1_000);
        assert_eq!(r.memory_gib_seconds, 10.0);
        assert_eq!(r.day, "1970-01-02");
        assert_eq!(a.cursors[0].cpu_ns, 3_000_000_000);

        // The sandbox restarted: its counters began again from zero.
        let t2 = t1.plus_seconds(10);
        let a = meter.advance(t2, interval, &[sample(&vm, &account, 400_000_000, 0, 20)]);
        assert_eq!(a.records[0].cpu_seconds, 0.4);
        assert_eq!(a.records[0].egress_bytes, 20);

        // A gap longer than two intervals counts two intervals of memory.
        let t3 = t2.plus_seconds(300);
        let a = meter.advance(
            t3,
            interval,
            &[sample(&vm, &account, 400_000_000, 1 << 30, 20)],
        );
        assert_eq!(a.records[0].memory_gib_seconds, 20.0);
        assert_eq!(a.records[0].cpu_seconds, 0.0);

        // Not sampled any more: the VM ended and its cursor goes.
        let a = meter.advance(t3.plus_seconds(10), interval, &[]);
        assert!(a.records.is_empty());
        assert_eq!(a.ended, vec![vm]);
    }

    #[test]
    fn stored_bytes_count_from_the_second_sample() {
        let account = AccountId::generate();
        let interval = Duration::from_secs(10);
        let mut meter = Meter::default();
        let t0 = Timestamp::from_unix_millis(0);
        assert!(meter
            .storage(t0, interval, &[(account.clone(), 1 << 30)])
            .is_empty());
        let r = meter.storage(t0.plus_seconds(5), interval, &[(account.clone(), 2 << 30)]);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].storage_gib_seconds, 10.0);
        assert_eq!(r[0].vm_id, None);
        assert!(meter
            .storage(t0.plus_seconds(10), interval, &[(account, 0)])
            .is_empty());
    }
}
