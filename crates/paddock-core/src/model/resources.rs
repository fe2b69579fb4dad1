//! Compute resources of a sandbox and the server-wide bounds they must fit.

/// Server-wide bounds on what one sandbox may ask for (`[limits]` in the
/// server's config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub min_memory_mb: u32,
    pub max_memory_mb: u32,
    pub max_vcpu_count: u32,
    pub default_memory_mb: u32,
    pub default_vcpu_count: u32,
    /// Processes (and threads) one sandbox may hold at once.
    pub pids_max: u32,
    pub max_lifetime_seconds: u64,
    /// The size of a sandbox's writable layer (its root filesystem's
    /// changes, `/tmp` included).
    pub min_disk_mb: u32,
    pub max_disk_mb: u32,
    pub default_disk_mb: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            min_memory_mb: 64,
            max_memory_mb: 65_536,
            max_vcpu_count: 64,
            default_memory_mb: 512,
            default_vcpu_count: 1,
            pids_max: 1024,
            max_lifetime_seconds: 30 * 24 * 3600,
            min_disk_mb: 64,
            max_disk_mb: 1024 * 1024,
            default_disk_mb: 10 * 1024,
        }
    }
}

/// Which resource field is out of bounds, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    #[error("memory_mb must be between {min} and {max}")]
    Memory { min: u32, max: u32 },
    #[error("vcpu_count must be between 1 and {max}")]
    Vcpu { max: u32 },
    #[error("disk_mb must be between {min} and {max}")]
    Disk { min: u32, max: u32 },
    #[error("the CPU quota must be at least 1m (a thousandth of a CPU)")]
    CpuQuota,
}

impl ResourceError {
    pub fn field(&self) -> &'static str {
        match self {
            Self::Memory { .. } => "memory_mb",
            Self::Vcpu { .. } => "vcpu_count",
            Self::Disk { .. } => "disk_mb",
            Self::CpuQuota => "cpu",
        }
    }
}

/// `value` when it lies in `range`, `default` when unset, else `error`.
fn bounded(
    value: Option<i64>,
    default: u32,
    range: std::ops::RangeInclusive<u32>,
    error: ResourceError,
) -> Result<u32, ResourceError> {
    match value {
        None => Ok(default),
        Some(v) => u32::try_from(v)
            .ok()
            .filter(|v| range.contains(v))
            .ok_or(error),
    }
}

/// Resources that fit [`Limits`]; construct with [`Resources::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resources {
    memory_mb: u32,
    vcpu_count: u32,
    pids_max: u32,
    /// 0 for sandboxes made before disks had a size: no limit.
    disk_mb: u32,
    /// The CPU quota in thousandths of a CPU, when it is less than
    /// `vcpu_count` whole CPUs (`resources.cpu: "500m"`); 0: the whole
    /// CPUs.
    cpu_millis: u32,
}

impl Resources {
    pub fn new(
        memory_mb: Option<i64>,
        vcpu_count: Option<i64>,
        limits: &Limits,
    ) -> Result<Self, ResourceError> {
        Self::with_disk(memory_mb, vcpu_count, None, limits)
    }

    /// [`Resources::new`] with a disk size (`None`: the default).
    pub fn with_disk(
        memory_mb: Option<i64>,
        vcpu_count: Option<i64>,
        disk_mb: Option<i64>,
        limits: &Limits,
    ) -> Result<Self, ResourceError> {
        let l = limits;
        let memory_mb = bounded(
            memory_mb,
            l.default_memory_mb,
            l.min_memory_mb..=l.max_memory_mb,
            ResourceError::Memory {
                min: l.min_memory_mb,
                max: l.max_memory_mb,
            },
        )?;
        let vcpu_count = bounded(
            vcpu_count,
            l.default_vcpu_count,
            1..=l.max_vcpu_count,
            ResourceError::Vcpu {
                max: l.max_vcpu_count,
            },
        )?;
        let disk_mb = bounded(
            disk_mb,
            l.default_disk_mb,
            l.min_disk_mb..=l.max_disk_mb,
            ResourceError::Disk {
                min: l.min_disk_mb,
                max: l.max_disk_mb,
            },
        )?;
        Ok(Self {
            memory_mb,
            vcpu_count,
            pids_max: limits.pids_max,
            disk_mb,
            cpu_millis: 0,
        })
    }

    /// Rebuilds resources read back from the store, which were valid when
    /// written.
    pub fn from_stored(memory_mb: u32, vcpu_count: u32, pids_max: u32) -> Self {
        Self {
            memory_mb,
            vcpu_count,
            pids_max,
            disk_mb: 0,
            cpu_millis: 0,
        }
    }

    /// The same resources with the disk size read back from the store.
    pub fn with_stored_disk(self, disk_mb: u32) -> Self {
        Self { disk_mb, ..self }
    }

    /// A CPU quota of `millis` thousandths of a CPU: the sandbox sees
    /// `ceil(millis / 1000)` CPUs and may use `millis / 1000` of their
    /// time. `None` (or a quota of at least `vcpu_count` whole CPUs):
    /// unchanged. A quota of 0 is refused (below the 1 m minimum).
    pub fn with_cpu_millis(self, millis: Option<u32>) -> Result<Self, ResourceError> {
        match millis {
            None => Ok(self),
            Some(0) => Err(ResourceError::CpuQuota),
            Some(m) if m >= self.vcpu_count.saturating_mul(1000) => Ok(Self {
                cpu_millis: 0,
                ..self
            }),
            Some(m) => Ok(Self {
                cpu_millis: m,
                ..self
            }),
        }
    }

    /// The CPU time the sandbox may use, in thousandths of a CPU.
    pub fn cpu_millis(&self) -> u32 {
        if self.cpu_millis == 0 {
            self.vcpu_count.saturating_mul(1000)
        } else {
            self.cpu_millis
        }
    }

    /// The stored form of [`Resources::cpu_millis`]: 0 for whole CPUs.
    pub fn cpu_quota_millis(&self) -> u32 {
        self.cpu_millis
    }

    /// The writable layer's size in MiB; 0: unlimited (a sandbox made
    /// before disks had sizes).
    pub fn disk_mb(&self) -> u32 {
        self.disk_mb
    }

    pub fn memory_mb(&self) -> u32 {
        self.memory_mb
    }

    pub fn memory_bytes(&self) -> u64 {
        u64::from(self.memory_mb) * 1024 * 1024
    }

    pub fn vcpu_count(&self) -> u32 {
        self.vcpu_count
    }

    pub fn pids_max(&self) -> u32 {
        self.pids_max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply() {
        let r = Resources::new(None, None, &Limits::default()).expect("defaults are valid");
        assert_eq!((r.memory_mb(), r.vcpu_count()), (512, 1));
    }

    #[test]
    fn disks_default_and_are_bounded() {
        let l = Limits::default();
        let d = |v| Resources::with_disk(None, None, v, &l).map(|r| r.disk_mb());
        assert_eq!(d(None), Ok(l.default_disk_mb));
        assert_eq!(d(Some(100)), Ok(100));
        for bad in [0, 1, i64::from(l.max_disk_mb) + 1, -5, i64::MAX] {
            assert_eq!(d(Some(bad)).map_err(|e| e.field()), Err("disk_mb"));
        }
        // Stored VMs made before disks had sizes have none.
        assert_eq!(Resources::from_stored(512, 1, 1024).disk_mb(), 0);
    }

    #[test]
    fn bounds_are_checked() {
        let l = Limits::default();
        assert_eq!(
            Resources::new(Some(1), None, &l).map_err(|e| e.field()),
            Err("memory_mb")
        );
        assert_eq!(
            Resources::new(Some(i64::MAX), None, &l).map_err(|e| e.field()),
            Err("memory_mb")
        );
        assert_eq!(
            Resources::new(None, Some(0), &l).map_err(|e| e.field()),
            Err("vcpu_count")
        );
        assert_eq!(
            Resources::new(None, Some(-3), &l).map_err(|e| e.field()),
            Err("vcpu_count")
        );
        assert!(Resources::new(Some(64), Some(64), &l).is_ok());
    }
}
