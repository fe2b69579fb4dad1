//! What an account consumed, measured on the host (`get_usage_breakdown`,
//! `instavm billing usage`, `get_usage`): per day and per VM over a
//! period, and per session.

use axum::extract::State;
use axum::Json;
use paddock_core::model::UsageRecord;
use paddock_core::usage::{render_day, DayRange, UsagePrices};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorDetail, HttpValidationError};
use super::extract::{Caller, CallerUser, ValidPath, ValidQuery};
use super::session_id;
use crate::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BreakdownQuery {
    /// The last this many days, up to `end_date` or today (1 to 365,
    /// default 30), when `start_date` is not given.
    pub days: Option<u32>,
    /// `YYYY-MM-DD`, UTC.
    pub start_date: Option<String>,
    /// `YYYY-MM-DD`, UTC; default today.
    pub end_date: Option<String>,
}

/// Consumption over a span: measured figures, and their cost at the
/// server's `[usage]` rates (0 when none are set).
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageFigures {
    pub cost_dollars: f64,
    /// CPU time used, in hours of one CPU.
    pub cpu_hours: f64,
    /// Memory held, in GiB-hours.
    pub ram_gib_hours: f64,
    /// Volumes and snapshots kept, in GiB-hours.
    pub storage_gib_hours: f64,
    /// Bytes sent by the VMs' network interfaces.
    pub egress_bytes: u64,
}

impl UsageFigures {
    fn of(r: &UsageRecord, prices: &UsagePrices) -> Self {
        Self {
            cost_dollars: prices.cost(r),
            cpu_hours: r.cpu_seconds / 3600.0,
            ram_gib_hours: r.memory_gib_seconds / 3600.0,
            storage_gib_hours: r.storage_gib_seconds / 3600.0,
            egress_bytes: r.egress_bytes,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DayUsage {
    /// `YYYY-MM-DD`, UTC.
    pub date: String,
    #[serde(flatten)]
    pub figures: UsageFigures,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VmUsage {
    pub vm_id: String,
    #[serde(flatten)]
    pub figures: UsageFigures,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageBreakdown {
    pub period_start: String,
    pub period_end: String,
    pub total_days: usize,
    pub totals: UsageFigures,
    /// Every day of the period, oldest first.
    pub daily_breakdown: Vec<DayUsage>,
    /// Each VM that ran in the period.
    pub vms: Vec<VmUsage>,
}

#[utoipa::path(get, path = "/v1/users/me/usage-breakdown", tag = "users", params(BreakdownQuery),
    responses((status = 200, body = UsageBreakdown), (status = 422, body = HttpValidationError)))]
pub(crate) async fn breakdown(
    State(state): State<AppState>,
    CallerUser(who): CallerUser,
    ValidQuery(q): ValidQuery<BreakdownQuery>,
) -> Result<Json<UsageBreakdown>, ApiError> {
    let today = time::OffsetDateTime::now_utc().date();
    let range = DayRange::resolve(
        today,
        q.start_date.as_deref(),
        q.end_date.as_deref(),
        q.days.unwrap_or(30),
    )
    .map_err(ApiError::in_query)?;
    let usage = state.service.usage();
    let report = usage.report(&who.account_id, range).await?;
    let prices = usage.prices();
    Ok(Json(UsageBreakdown {
        period_start: render_day(report.range.first),
        period_end: render_day(report.range.last),
        total_days: report.daily.len(),
        totals: UsageFigures::of(&report.total, prices),
        daily_breakdown: report
            .daily
            .iter()
            .map(|(date, r)| DayUsage {
                date: date.clone(),
                figures: UsageFigures::of(r, prices),
            })
            .collect(),
        vms: report
            .vms
            .iter()
            .map(|(vm, r)| VmUsage {
                vm_id: vm.to_string(),
                figures: UsageFigures::of(r, prices),
            })
            .collect(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionUsage {
    pub session_id: String,
    /// The session's VMs, newest first.
    pub vm_ids: Vec<String>,
    pub cpu_seconds: f64,
    pub memory_gib_seconds: f64,
    #[serde(flatten)]
    pub figures: UsageFigures,
}

#[utoipa::path(get, path = "/v1/sessions/usage/{session_id}", tag = "sessions",
    params(("session_id" = String, Path)),
    responses((status = 200, body = SessionUsage), (status = 404, body = ErrorDetail)))]
pub(crate) async fn session(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<SessionUsage>, ApiError> {
    let session = session_id(&raw)?;
    let (vms, total) = state.vms().session_usage(&account, &session).await?;
    Ok(Json(SessionUsage {
        session_id: session.to_string(),
        vm_ids: vms.iter().map(|vm| vm.id.to_string()).collect(),
        cpu_seconds: total.cpu_seconds,
        memory_gib_seconds: total.memory_gib_seconds,
        figures: UsageFigures::of(&total, state.service.usage().prices()),
    }))
}
