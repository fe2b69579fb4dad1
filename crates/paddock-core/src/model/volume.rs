//! Volumes: persistent, size-limited directories a VM mounts, and their
//! checkpoints (copy-on-write copies of their content).

use crate::clock::Timestamp;
use crate::ids::{AccountId, CheckpointId, VmId, VolumeId};

#[derive(Debug, Clone)]
pub struct Volume {
    pub id: VolumeId,
    pub account_id: AccountId,
    pub name: String,
    pub size_bytes: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The node its files are on (VMs that mount it run there); `None`
    /// for a volume made before nodes existed.
    pub node: Option<crate::ids::NodeId>,
}

#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub id: CheckpointId,
    pub volume_id: VolumeId,
    pub name: String,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MountMode {
    ReadWrite,
    ReadOnly,
}

impl MountMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadWrite => "rw",
            Self::ReadOnly => "ro",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "rw" => Some(Self::ReadWrite),
            "ro" => Some(Self::ReadOnly),
            _ => None,
        }
    }
}

/// A volume as a VM asked to mount it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MountRequest {
    pub volume_id: VolumeId,
    pub mount_path: String,
    pub mode: MountMode,
    pub checkpoint_id: Option<CheckpointId>,
    /// A directory inside the volume to show instead of its root.
    pub subpath: Option<String>,
}

/// A volume mounted in a VM.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub vm_id: VmId,
    pub volume_id: VolumeId,
    pub mount_path: String,
    pub mode: MountMode,
    /// Set when the mount shows this checkpoint (read-only) rather than
    /// the volume's live content.
    pub checkpoint_id: Option<CheckpointId>,
    pub created_at: Timestamp,
    /// A directory inside the volume shown instead of its root (relative,
    /// without `..`; created on first mount).
    pub subpath: Option<String>,
}

/// A mount path inside a VM: absolute, normalised, not `/` and not under
/// the kernel's own trees.
pub fn validate_mount_path(path: &str) -> Result<String, &'static str> {
    if !path.starts_with('/') || path.len() > 1024 || path.contains('\0') {
        return Err("must be an absolute path of at most 1024 bytes");
    }
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.contains(&"..") {
        return Err("must not contain '..'");
    }
    if parts.is_empty() {
        return Err("must not be /");
    }
    if matches!(parts[0], "proc" | "sys" | "dev") {
        return Err("must not be under /proc, /sys or /dev");
    }
    Ok(format!("/{}", parts.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_normalised_and_checked() {
        assert_eq!(validate_mount_path("/data/./x/").as_deref(), Ok("/data/x"));
        assert!(validate_mount_path("data").is_err());
        assert!(validate_mount_path("/").is_err());
        assert!(validate_mount_path("/a/../etc").is_err());
        assert!(validate_mount_path("/proc/x").is_err());
    }
}
