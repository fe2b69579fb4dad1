//! The changes to a VM that only the node running it can make, as another
//! node sends them there: a create placed on that node, and the lifecycle
//! calls (delete, stop, start, suspend, resume, patch, snapshot) of the
//! VMs it runs. Every surface (the VM API, E2B, the gateway, definitions)
//! reaches them through [`crate::vms::Vms`], which sends the call when the
//! VM is another node's; the answer names the record changed, read back
//! from the shared store by the caller.

use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::ids::{AccountId, SnapshotId, VmId, VolumeId};
use crate::model::{VmPatch, VmSpec};
use crate::RuntimeError;

/// One call another node makes here. Account-scoped calls are checked
/// against the account as the caller's own would be (another account's VM
/// is not found).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum NodeCall {
    Create {
        account: AccountId,
        spec: Box<VmSpec>,
        wait: bool,
    },
    Delete {
        account: AccountId,
        vm: VmId,
    },
    Stop {
        account: AccountId,
        vm: VmId,
    },
    /// The server's own stop (a main command ended): no account.
    Halt {
        vm: VmId,
        reason: String,
    },
    Start {
        account: AccountId,
        vm: VmId,
        wait: bool,
    },
    Suspend {
        account: AccountId,
        vm: VmId,
    },
    Resume {
        account: AccountId,
        vm: VmId,
    },
    Patch {
        account: AccountId,
        vm: VmId,
        patch: VmPatch,
    },
    Snapshot {
        account: AccountId,
        vm: VmId,
        name: Option<String>,
    },
    /// A volume made on a node for an API replica, which keeps no files.
    CreateVolume {
        account: AccountId,
        name: String,
        size_bytes: u64,
    },
    /// A volume whose files are on the node called.
    DeleteVolume {
        account: AccountId,
        volume: VolumeId,
    },
}

impl NodeCall {
    /// What the call is, for logs (never its body: a create's spec holds
    /// the VM's environment).
    pub fn what(&self) -> &'static str {
        match self {
            Self::Create { .. } => "create",
            Self::Delete { .. } => "delete",
            Self::Stop { .. } => "stop",
            Self::Halt { .. } => "halt",
            Self::Start { .. } => "start",
            Self::Suspend { .. } => "suspend",
            Self::Resume { .. } => "resume",
            Self::Patch { .. } => "patch",
            Self::Snapshot { .. } => "snapshot",
            Self::CreateVolume { .. } => "create volume",
            Self::DeleteVolume { .. } => "delete volume",
        }
    }
}

/// The record a call made or changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeAnswer {
    Vm(VmId),
    Snapshot(SnapshotId),
    Volume(VolumeId),
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeCallFailure {
    /// The node did not answer (down, unreachable, or it refused the
    /// internal token): the call may not have been made.
    #[error("node {node} did not answer: {why}")]
    Unreachable { node: String, why: String },
    /// The node made the call and refused it, as it would have refused
    /// its own caller.
    #[error(transparent)]
    Refused(CoreError),
}

impl From<NodeCallFailure> for CoreError {
    fn from(e: NodeCallFailure) -> Self {
        match e {
            NodeCallFailure::Refused(e) => e,
            unreachable => CoreError::Unavailable(unreachable.to_string()),
        }
    }
}

/// A [`CoreError`] as it crosses between nodes: its kind, the field it
/// names, and its message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub code: String,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub field: Option<String>,
    pub message: String,
}

/// The kinds of record a call can fail to find, for [`CoreError::NotFound`]'s
/// static name; another kind reads as a VM (the call's own subject).
const FOUND_KINDS: [&str; 8] = [
    "VM",
    "snapshot",
    "volume",
    "vault",
    "image",
    "session",
    "sandbox",
    "checkpoint",
];

impl From<&CoreError> for WireError {
    fn from(e: &CoreError) -> Self {
        let (code, kind, field) = match e {
            CoreError::NotFound { kind, .. } => ("not_found", Some((*kind).to_owned()), None),
            CoreError::InvalidArgument { field, .. } => ("invalid", None, Some(field.clone())),
            CoreError::Conflict(_) => ("conflict", None, None),
            CoreError::FailedPrecondition(_) => ("failed_precondition", None, None),
            CoreError::PermissionDenied(_) => ("permission_denied", None, None),
            CoreError::ResourceExhausted(_) => ("resource_exhausted", None, None),
            CoreError::Unauthenticated => ("unauthenticated", None, None),
            CoreError::RateLimited { .. } => ("unavailable", None, None),
            CoreError::Unavailable(_) => ("unavailable", None, None),
            CoreError::Upstream(_) => ("upstream", None, None),
            CoreError::DeadlineExceeded(_) => ("deadline_exceeded", None, None),
            CoreError::Runtime(_) | CoreError::Store(_) => ("internal", None, None),
        };
        let message = match e {
            CoreError::NotFound { id, .. } => id.clone(),
            CoreError::InvalidArgument { message, .. } => message.clone(),
            other => crate::error::error_chain(other),
        };
        Self {
            code: code.to_owned(),
            kind,
            field,
            message,
        }
    }
}

impl From<WireError> for CoreError {
    fn from(e: WireError) -> Self {
        match e.code.as_str() {
            "not_found" => {
                let named = e.kind.as_deref().unwrap_or("VM");
                let kind = FOUND_KINDS
                    .iter()
                    .find(|k| **k == named)
                    .copied()
                    .unwrap_or("VM");
                CoreError::NotFound {
                    kind,
                    id: e.message,
                }
            }
            "invalid" => CoreError::InvalidArgument {
                field: e.field.unwrap_or_else(|| "body".into()),
                message: e.message,
            },
            "conflict" => CoreError::Conflict(e.message),
            "failed_precondition" => CoreError::FailedPrecondition(e.message),
            "permission_denied" => CoreError::PermissionDenied(e.message),
            "resource_exhausted" => CoreError::ResourceExhausted(e.message),
            "unauthenticated" => CoreError::Unauthenticated,
            "unavailable" => CoreError::Unavailable(e.message),
            "upstream" => CoreError::Upstream(e.message),
            "deadline_exceeded" => CoreError::DeadlineExceeded(e.message),
            // The other node's own failure: still the server's fault here.
            _ => CoreError::Runtime(RuntimeError::Agent(e.message)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(e: CoreError) -> CoreError {
        let wire = WireError::from(&e);
        let text = serde_json::to_string(&wire).expect("JSON");
        CoreError::from(serde_json::from_str::<WireError>(&text).expect("a wire error"))
    }

    #[test]
    fn errors_keep_their_kind_and_field_across_nodes() {
        match round_trip(CoreError::invalid("memory_mb", "too much")) {
            CoreError::InvalidArgument { field, message } => {
                assert_eq!(
                    (field.as_str(), message.as_str()),
                    ("memory_mb", "too much")
                );
            }
            other => panic!("{other:?}"),
        }
        match round_trip(CoreError::not_found("snapshot", "snap_1")) {
            CoreError::NotFound { kind, id } => {
                assert_eq!((kind, id.as_str()), ("snapshot", "snap_1"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            round_trip(CoreError::FailedPrecondition("suspended".into())),
            CoreError::FailedPrecondition(m) if m == "suspended"
        ));
        assert!(matches!(
            round_trip(CoreError::Runtime(RuntimeError::Agent("boom".into()))),
            CoreError::Runtime(_)
        ));
    }

    #[test]
    fn a_call_names_itself_without_its_body() {
        let call = NodeCall::Halt {
            vm: "vm_abcdefghij0123456789".parse().expect("a VM id"),
            reason: "main command ended".into(),
        };
        let text = serde_json::to_string(&call).expect("JSON");
        assert!(text.contains("\"call\":\"halt\""), "{text}");
        assert_eq!(call.what(), "halt");
    }
}
