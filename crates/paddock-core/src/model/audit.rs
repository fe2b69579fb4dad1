//! Audit events: who did what to which resource, from where, and how it
//! went. Written by the API for every mutating call on every surface,
//! every refused key and every key's first use from an address; read
//! back by the account they belong to, never changed or deleted through
//! the API (only retention removes them). No body is recorded, so no
//! secret can be.

use crate::clock::Timestamp;
use crate::ids::{AccountId, AuditEventId};

#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub id: AuditEventId,
    /// The account acted for; `None` for a key no account owns.
    pub account_id: Option<AccountId>,
    pub created_at: Timestamp,
    /// `vms`, `sessions`, `api-keys`, `gateway`, `definitions`, `auth`, …
    pub event_group: String,
    /// `vms.create`, `gateway.environments.connect`, `auth.failure`, …
    pub event_type: String,
    pub status: AuditStatus,
    /// The API key that acted, when one did.
    pub actor_key_id: Option<String>,
    pub user_email: Option<String>,
    pub vm_id: Option<String>,
    pub session_id: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub request_id: String,
    pub source_address: String,
    pub method: String,
    /// The path called, without its query (which may hold a key).
    pub path: String,
    pub http_status: u16,
    pub error_message: Option<String>,
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditStatus {
    Success,
    /// Refused for who asked: no valid key, or not allowed.
    Denied,
    /// Refused or failed for what was asked.
    Failure,
}

impl AuditStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Denied => "denied",
            Self::Failure => "failure",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "success" => Some(Self::Success),
            "denied" => Some(Self::Denied),
            "failure" => Some(Self::Failure),
            _ => None,
        }
    }

    /// The status of a call that answered `http`.
    pub fn of_http(http: u16) -> Self {
        match http {
            401 | 403 => Self::Denied,
            s if s >= 400 => Self::Failure,
            _ => Self::Success,
        }
    }
}

/// Which events to read, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub event_group: Option<String>,
    pub event_type: Option<String>,
    pub status: Option<AuditStatus>,
    pub actor_key_id: Option<String>,
    pub user_email: Option<String>,
    pub vm_id: Option<String>,
    pub session_id: Option<String>,
    pub resource_id: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    /// Events older than this position (a page's cursor).
    pub before_seq: Option<i64>,
    pub limit: u32,
}
