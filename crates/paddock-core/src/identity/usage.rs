//! What an account consumed, as reports over the metered rows
//! (`vms/metering.rs`): per day and per VM over a period, or for a
//! session's VMs, priced at the operator's rates (`[usage]`; zero unless
//! set: paddock measures, it does not bill).

use std::collections::BTreeMap;
use std::sync::Arc;

use time::Date;

use crate::error::CoreError;
use crate::ids::{AccountId, VmId};
use crate::model::UsageRecord;
use crate::store::UsageStore;

/// The operator's rates, in dollars.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct UsagePrices {
    pub cpu_hour: f64,
    pub ram_gib_hour: f64,
    pub storage_gib_hour: f64,
    pub egress_gib: f64,
}

impl UsagePrices {
    pub fn cost(&self, r: &UsageRecord) -> f64 {
        r.cpu_seconds / 3600.0 * self.cpu_hour
            + r.memory_gib_seconds / 3600.0 * self.ram_gib_hour
            + r.storage_gib_seconds / 3600.0 * self.storage_gib_hour
            + r.egress_bytes as f64 / (1u64 << 30) as f64 * self.egress_gib
    }
}

/// A period of whole UTC days, first to last inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayRange {
    pub first: Date,
    pub last: Date,
}

/// The longest period a report covers.
pub const MAX_REPORT_DAYS: i64 = 366;

/// `YYYY-MM-DD`.
pub fn parse_day(field: &str, raw: &str) -> Result<Date, CoreError> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(raw, &format)
        .map_err(|_| CoreError::invalid(field, format!("{raw:?} is not a date like 2026-04-01")))
}

pub fn render_day(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

impl DayRange {
    /// From `start`/`end` when given, else the last `days` days up to
    /// `today`; refused when backwards or longer than a year.
    pub fn resolve(
        today: Date,
        start: Option<&str>,
        end: Option<&str>,
        days: u32,
    ) -> Result<Self, CoreError> {
        if !(1..=365).contains(&days) {
            return Err(CoreError::invalid("days", "must be between 1 and 365"));
        }
        let last = match end {
            Some(raw) => parse_day("end_date", raw)?,
            None => today,
        };
        let first = match start {
            Some(raw) => parse_day("start_date", raw)?,
            None => last - time::Duration::days(i64::from(days) - 1),
        };
        if first > last {
            return Err(CoreError::invalid("start_date", "is after end_date"));
        }
        if (last - first).whole_days() >= MAX_REPORT_DAYS {
            return Err(CoreError::invalid(
                "start_date",
                format!("a report covers at most {MAX_REPORT_DAYS} days"),
            ));
        }
        Ok(Self { first, last })
    }

    pub fn days(&self) -> Vec<Date> {
        let mut out = Vec::new();
        let mut d = self.first;
        while d <= self.last {
            out.push(d);
            match d.next_day() {
                Some(next) => d = next,
                None => break,
            }
        }
        out
    }
}

/// A period's consumption: each day (every day of the period, zeros
/// included), each VM, and the whole.
#[derive(Debug, Clone)]
pub struct UsageReport {
    pub range: DayRange,
    pub daily: Vec<(String, UsageRecord)>,
    pub vms: Vec<(VmId, UsageRecord)>,
    pub total: UsageRecord,
}

pub struct Usage {
    store: Arc<dyn UsageStore>,
    prices: UsagePrices,
}

impl Usage {
    pub fn new(store: Arc<dyn UsageStore>, prices: UsagePrices) -> Self {
        Self { store, prices }
    }

    /// Where metering stopped for each VM still measured.
    pub(crate) async fn cursors(&self) -> Result<Vec<crate::model::UsageCursor>, CoreError> {
        Ok(self.store.usage_cursors().await?)
    }

    /// Adds a metering round's `records` and moves its `cursors`, in one
    /// step; `ended` VMs lose theirs.
    pub(crate) async fn record(
        &self,
        records: &[UsageRecord],
        cursors: &[crate::model::UsageCursor],
        ended: &[crate::ids::VmId],
    ) -> Result<(), CoreError> {
        Ok(self.store.record_usage(records, cursors, ended).await?)
    }

    pub fn prices(&self) -> &UsagePrices {
        &self.prices
    }

    pub async fn report(
        &self,
        account: &AccountId,
        range: DayRange,
    ) -> Result<UsageReport, CoreError> {
        let rows = self
            .store
            .usage_between(account, &render_day(range.first), &render_day(range.last))
            .await?;
        let mut daily: BTreeMap<String, UsageRecord> = range
            .days()
            .into_iter()
            .map(|d| {
                let day = render_day(d);
                let record = UsageRecord {
                    day: day.clone(),
                    ..UsageRecord::default()
                };
                (day, record)
            })
            .collect();
        let mut vms: BTreeMap<VmId, UsageRecord> = BTreeMap::new();
        let mut total = UsageRecord::default();
        for row in &rows {
            if let Some(day) = daily.get_mut(&row.day) {
                day.add(row);
            }
            if let Some(vm) = &row.vm_id {
                vms.entry(vm.clone()).or_default().add(row);
            }
            total.add(row);
        }
        Ok(UsageReport {
            range,
            daily: daily.into_iter().collect(),
            vms: vms.into_iter().collect(),
            total,
        })
    }

    /// What these VMs consumed, all days together.
    pub async fn of_vms(&self, vms: &[VmId]) -> Result<UsageRecord, CoreError> {
        let mut total = UsageRecord::default();
        for row in self.store.usage_of_vms(vms).await? {
            total.add(&row);
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> Date {
        parse_day("d", s).expect("a date")
    }

    #[test]
    fn ranges_come_from_dates_or_a_count_of_days_and_refuse_nonsense() {
        let today = day("2026-12-05");
        let r = DayRange::resolve(today, None, None, 30).expect("30 days");
        assert_eq!(render_day(r.first), "2026-11-06");
        assert_eq!(r.days().len(), 30);
        let r =
            DayRange::resolve(today, Some("2026-02-27"), Some("2026-03-01"), 30).expect("dates");
        let days: Vec<String> = r.days().into_iter().map(render_day).collect();
        assert_eq!(days, ["2026-02-27", "2026-02-28", "2026-03-01"]);
        for (start, end, days, field) in [
            (Some("2026-3-1"), None, 30, "start_date"),
            (Some("2026-02-30"), None, 30, "start_date"),
            (None, Some("yesterday"), 30, "end_date"),
            (Some("2026-03-02"), Some("2026-03-01"), 30, "start_date"),
            (Some("2020-01-01"), Some("2026-01-01"), 30, "start_date"),
            (None, None, 0, "days"),
            (None, None, 366, "days"),
        ] {
            let e = DayRange::resolve(today, start, end, days).expect_err("refused");
            assert!(e.to_string().contains(field), "{e}");
        }
    }

    #[test]
    fn prices_apply_per_hour_and_per_gib() {
        let prices = UsagePrices {
            cpu_hour: 0.05,
            ram_gib_hour: 0.01,
            storage_gib_hour: 0.001,
            egress_gib: 0.1,
        };
        let r = UsageRecord {
            cpu_seconds: 7200.0,
            memory_gib_seconds: 3600.0,
            storage_gib_seconds: 36_000.0,
            egress_bytes: 1 << 30,
            ..UsageRecord::default()
        };
        assert!((prices.cost(&r) - (0.1 + 0.01 + 0.01 + 0.1)).abs() < 1e-9);
    }
}
