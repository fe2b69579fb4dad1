//! What the host must allow for as many sandboxes as the server may run
//! (and what it holds that slows them: free loop devices), checked once
//! at start. A limit too low for that number is logged
//! with the setting that raises it, so an operator learns of it before
//! sandboxes fail one by one (and a create the network cannot hold is
//! refused with 503: see `NetworkBackend::room`).

/// The host's settings that bound the number of sandboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readings {
    /// The server's open-file limit (soft, once raised to the hard one).
    pub open_files: u64,
    /// `kernel.pid_max`.
    pub pid_max: u64,
    /// `net.netfilter.nf_conntrack_max`, when conntrack is loaded.
    pub conntrack_max: Option<u64>,
    /// `net.ipv4.neigh.default.gc_thresh3`: the host's ARP entries.
    pub neighbours: Option<u64>,
    /// `vm.watermark_boost_factor`.
    pub watermark_boost: Option<u64>,
    /// Loop devices bound to no file: the kernel keeps a device after it
    /// is detached until someone removes it.
    pub free_loop_devices: u64,
}

/// The open files the server itself needs, whatever the number of
/// sandboxes; it holds one more per sandbox (a pidfd its liveness is
/// checked through).
const SERVER_FILES: u64 = 4096;
/// Processes and threads a sandbox is expected to hold on average.
const PIDS_PER_SANDBOX: u64 = 8;
/// Connections a sandbox is expected to track at once.
const FLOWS_PER_SANDBOX: u64 = 16;
/// From this many sandboxes on, kswapd's reclaim passes cost enough to
/// matter (each walks every sandbox's memory cgroup and file systems).
const RECLAIM_MATTERS_AT: u64 = 1_000;

/// From this many free loop devices on, lxcfs's reads of
/// `/proc/diskstats` (a line per device, read back quadratically in the
/// kernel) cost sandboxes milliseconds each.
const FREE_LOOPS_MATTER_AT: u64 = 256;

/// The sandboxes one host is planned for when its network holds more:
/// the density paddock is built and benchmarked for (`benches/scale.rs`).
pub const PLANNED_SANDBOXES: u64 = 5_000;

/// The warnings for a host that may run `sandboxes` at once (the most
/// its network holds, up to [`PLANNED_SANDBOXES`]).
pub fn warnings(r: Readings, sandboxes: u64) -> Vec<String> {
    let mut out = Vec::new();
    let sandboxes = sandboxes.min(PLANNED_SANDBOXES);
    let files = SERVER_FILES.saturating_add(sandboxes);
    if r.open_files < files {
        out.push(format!(
            "the server may open {} files (RLIMIT_NOFILE); raise its hard limit to at least \
             {files} (LimitNOFILE= in a systemd unit, `ulimit -Hn`)",
            r.open_files
        ));
    }
    let pids = sandboxes.saturating_mul(PIDS_PER_SANDBOX);
    if r.pid_max < pids {
        out.push(format!(
            "kernel.pid_max is {} but {sandboxes} sandboxes of {PIDS_PER_SANDBOX} processes need \
             {pids}: sysctl -w kernel.pid_max={pids}",
            r.pid_max
        ));
    }
    if let Some(max) = r.conntrack_max {
        let flows = sandboxes.saturating_mul(FLOWS_PER_SANDBOX);
        if max < flows {
            out.push(format!(
                "net.netfilter.nf_conntrack_max is {max}; {sandboxes} sandboxes with \
                 {FLOWS_PER_SANDBOX} connections each need {flows}: sysctl -w \
                 net.netfilter.nf_conntrack_max={flows}"
            ));
        }
    }
    if let Some(n) = r.neighbours {
        let want = sandboxes + 256;
        if n < want {
            out.push(format!(
                "net.ipv4.neigh.default.gc_thresh3 is {n}: the host's ARP table holds fewer \
                 entries than {sandboxes} sandboxes need; sysctl -w \
                 net.ipv4.neigh.default.gc_thresh3={want} (and gc_thresh2 near it)"
            ));
        }
    }
    if r.watermark_boost.is_some_and(|b| b > 0) && sandboxes >= RECLAIM_MATTERS_AT {
        out.push(
            "vm.watermark_boost_factor is on: after each fragmentation event kswapd reclaims \
             across every sandbox's memory cgroup and file system, which took half a CPU at \
             2,000 sandboxes and slowed every create; sysctl -w vm.watermark_boost_factor=0"
                .to_owned(),
        );
    }
    if r.free_loop_devices >= FREE_LOOPS_MATTER_AT {
        out.push(format!(
            "{} loop devices are bound to nothing (the kernel keeps a detached device until it \
             is removed): each is a line of /proc/diskstats, which lxcfs reads whole for every \
             read of a sandbox's view of it; remove them (LOOP_CTL_REMOVE, or `rmmod loop` while \
             none is in use). paddock removes those it frees beyond [sandbox] spare_loop_devices",
            r.free_loop_devices
        ));
    }
    out
}

/// The loop devices (`/sys/block/loopN`) bound to no file.
fn count_free_loop_devices() -> u64 {
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("loop"))
        .filter(|e| !e.path().join("loop/backing_file").exists())
        .count() as u64
}

fn read_u64(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Raises the open-file limit to its hard one and reads the others.
pub fn read() -> Readings {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let open_files = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 0,
    };
    Readings {
        open_files,
        pid_max: read_u64("/proc/sys/kernel/pid_max").unwrap_or(u64::MAX),
        conntrack_max: read_u64("/proc/sys/net/netfilter/nf_conntrack_max"),
        neighbours: read_u64("/proc/sys/net/ipv4/neigh/default/gc_thresh3"),
        watermark_boost: read_u64("/proc/sys/vm/watermark_boost_factor"),
        free_loop_devices: count_free_loop_devices(),
    }
}

/// Logs what the host lacks for `sandboxes` networked sandboxes.
pub fn check(sandboxes: u64) {
    let readings = read();
    for w in warnings(readings, sandboxes) {
        tracing::warn!(sandboxes, "host limit: {w}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOMY: Readings = Readings {
        open_files: 1 << 20,
        pid_max: 4 << 20,
        conntrack_max: Some(1 << 20),
        neighbours: Some(1 << 16),
        watermark_boost: Some(0),
        free_loop_devices: 8,
    };

    #[test]
    fn a_roomy_host_gets_no_warning() {
        assert!(warnings(ROOMY, 1000).is_empty());
        assert!(warnings(ROOMY, 65344).is_empty());
    }

    #[test]
    fn each_short_limit_is_named_with_its_setting() {
        let tight = Readings {
            open_files: 1024,
            pid_max: 32768,
            conntrack_max: Some(65536),
            neighbours: Some(1024),
            watermark_boost: Some(15000),
            free_loop_devices: 5008,
        };
        let w = warnings(tight, 65344).join("\n");
        for setting in [
            "RLIMIT_NOFILE); raise its hard limit to at least 9096",
            "kernel.pid_max=40000",
            "nf_conntrack_max=80000",
            "gc_thresh3=5256",
            "vm.watermark_boost_factor=0",
            "5008 loop devices",
        ] {
            assert!(w.contains(setting), "{setting}: {w}");
        }
    }
}
