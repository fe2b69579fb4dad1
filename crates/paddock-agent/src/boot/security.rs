//! Privileges of everything in the sandbox, set by PID 1 before it serves
//! and inherited by every command it runs.
//!
//! Capabilities: Docker's default set without `MKNOD` and `NET_RAW`:
//! enough for package managers and servers (chown, setuid to a service
//! user, bind low ports), nothing that reaches the kernel's admin
//! interfaces (`SYS_ADMIN`, `SYS_MODULE`, `SYS_PTRACE`, `NET_ADMIN`, …).
//!
//! Seccomp: a deny list returning `EPERM` for what a sandbox never needs
//! and what widens the kernel's attack surface (new namespaces, keyrings,
//! bpf, perf, module and mount calls, clock changes), plus `ENOSYS` for
//! `clone3` so libc falls back to `clone`, whose flags can be checked.

use std::collections::BTreeMap;

use caps::{CapSet, Capability};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::BootError;

pub const KEPT_CAPABILITIES: [Capability; 12] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FOWNER,
    Capability::CAP_FSETID,
    Capability::CAP_KILL,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_SETFCAP,
    Capability::CAP_AUDIT_WRITE,
];

const DENIED_SYSCALLS: &[i64] = &[
    libc::SYS_acct,
    libc::SYS_add_key,
    libc::SYS_adjtimex,
    libc::SYS_bpf,
    libc::SYS_clock_adjtime,
    libc::SYS_clock_settime,
    libc::SYS_delete_module,
    libc::SYS_finit_module,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fsopen,
    libc::SYS_fspick,
    libc::SYS_init_module,
    libc::SYS_kexec_file_load,
    libc::SYS_kexec_load,
    libc::SYS_keyctl,
    libc::SYS_mount,
    libc::SYS_mount_setattr,
    libc::SYS_move_mount,
    libc::SYS_name_to_handle_at,
    libc::SYS_open_by_handle_at,
    libc::SYS_open_tree,
    libc::SYS_perf_event_open,
    libc::SYS_pivot_root,
    libc::SYS_quotactl,
    libc::SYS_reboot,
    libc::SYS_request_key,
    libc::SYS_setns,
    libc::SYS_settimeofday,
    libc::SYS_swapoff,
    libc::SYS_swapon,
    libc::SYS_syslog,
    libc::SYS_umount2,
    libc::SYS_unshare,
    libc::SYS_userfaultfd,
    libc::SYS_vhangup,
];

const NAMESPACE_FLAGS: [libc::c_int; 7] = [
    libc::CLONE_NEWNS,
    libc::CLONE_NEWCGROUP,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
];

fn seccomp_err<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> BootError {
    move |e| BootError::Child(format!("{what}: {e}"))
}

fn caps_err(what: &'static str) -> impl FnOnce(caps::errors::CapsError) -> BootError {
    move |e| BootError::Child(format!("{what}: {e}"))
}

fn deny_filter(arch: TargetArch) -> Result<BpfProgram, BootError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED_SYSCALLS.iter().map(|&nr| (nr, Vec::new())).collect();
    let clone_rules = NAMESPACE_FLAGS
        .iter()
        .map(|&flag| {
            let flag = flag as u64;
            SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )
            .and_then(|c| SeccompRule::new(vec![c]))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(seccomp_err("build the clone rule"))?;
    rules.insert(libc::SYS_clone, clone_rules);
    SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .and_then(BpfProgram::try_from)
    .map_err(seccomp_err("compile the seccomp deny list"))
}

fn clone3_filter(arch: TargetArch) -> Result<BpfProgram, BootError> {
    let rules: BTreeMap<i64, Vec<SeccompRule>> =
        [(libc::SYS_clone3, Vec::new())].into_iter().collect();
    SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .and_then(BpfProgram::try_from)
    .map_err(seccomp_err("compile the clone3 filter"))
}

pub(super) fn lock_down() -> Result<(), BootError> {
    let kept: caps::CapsHashSet = KEPT_CAPABILITIES.into_iter().collect();
    for cap in caps::all() {
        if !kept.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(caps_err("drop a bounding capability"))?;
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(caps_err("clear ambient capabilities"))?;
    caps::set(None, CapSet::Inheritable, &caps::CapsHashSet::new())
        .map_err(caps_err("clear inheritable capabilities"))?;
    caps::set(None, CapSet::Effective, &kept).map_err(caps_err("set effective capabilities"))?;
    caps::set(None, CapSet::Permitted, &kept).map_err(caps_err("set permitted capabilities"))?;

    nix::sys::prctl::set_no_new_privs().map_err(super::nix_step("set no_new_privs"))?;
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(seccomp_err("this architecture has no seccomp support"))?;
    for program in [clone3_filter(arch)?, deny_filter(arch)?] {
        seccompiler::apply_filter(&program).map_err(seccomp_err("install the seccomp filter"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_compile() {
        let arch = TargetArch::try_from(std::env::consts::ARCH).expect("supported arch");
        assert!(deny_filter(arch).expect("deny list compiles").len() > DENIED_SYSCALLS.len());
        assert!(!clone3_filter(arch)
            .expect("clone3 filter compiles")
            .is_empty());
    }
}
