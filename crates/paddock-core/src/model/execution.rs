//! Asynchronous executions: a command started now, its result read later.

use crate::clock::Timestamp;
use crate::ids::{AccountId, ExecutionId, SessionId, VmId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionStatus {
    Running,
    Completed,
    Failed,
}

impl ExecutionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => Self::Running,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Execution {
    pub id: ExecutionId,
    pub account_id: AccountId,
    pub vm_id: VmId,
    pub session_id: SessionId,
    pub status: ExecutionStatus,
    pub stdout: String,
    pub stderr: String,
    pub exit_code: Option<i32>,
    pub execution_time: Option<f64>,
    pub cpu_time: Option<f64>,
    pub error: Option<String>,
    pub created_at: Timestamp,
    pub completed_at: Option<Timestamp>,
}

impl Execution {
    /// The record of a command `id` that starts now in `vm`.
    pub fn started(id: ExecutionId, vm: &crate::model::Vm) -> Self {
        Self {
            id,
            account_id: vm.account_id.clone(),
            vm_id: vm.id.clone(),
            session_id: vm.session_id.clone(),
            status: ExecutionStatus::Running,
            stdout: String::new(),
            stderr: String::new(),
            exit_code: None,
            execution_time: None,
            cpu_time: None,
            error: None,
            created_at: Timestamp::now(),
            completed_at: None,
        }
    }
}
