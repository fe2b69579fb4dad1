//! Privileges of everything in the sandbox, set by PID 1 before it serves
//! and inherited by every command it runs.
//!
//! Capabilities: Docker's default set without `MKNOD` and `NET_RAW`:
//! enough for package managers and servers (chown, setuid to a service
//! user, bind low ports), nothing that reaches the kernel's admin
//! interfaces (`SYS_ADMIN`, `SYS_MODULE`, `SYS_PTRACE`, `NET_ADMIN`, …).
//!
//! Seccomp: a deny list returning `EPERM`, in groups ([`DENIED`]), each
//! with the reason it is denied; it covers Docker's default profile and
//! more. `clone` with a namespace flag is refused too, and `clone3` gets
//! `ENOSYS` so libc falls back to `clone`, whose flags can be checked.
//! `personality` takes only the values Docker's profile allows.
//!
//! PID 1 also makes itself non-dumpable: no process of the sandbox can
//! trace it, read its memory or environment (`/proc/1/mem`, `environ`,
//! `process_vm_readv`), or read its descriptors; its memory, where staged
//! secrets live, stays its own.

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

/// The denied system calls, by why. `SECURITY.md` points here: this is
/// the one list.
pub const DENIED: &[(&str, &[i64])] = &[
    (
        "mounts and namespaces: a sandbox's filesystem and namespaces are \
         set up once by paddock, from outside; the new mount API too",
        &[
            libc::SYS_mount,
            libc::SYS_umount2,
            libc::SYS_pivot_root,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_fsopen,
            libc::SYS_fsconfig,
            libc::SYS_fsmount,
            libc::SYS_fspick,
            libc::SYS_open_tree,
            libc::SYS_move_mount,
            libc::SYS_mount_setattr,
        ],
    ),
    (
        "the kernel itself: modules, kexec, reboot, swap, accounting, \
         quotas, the kernel log and obsolete interfaces",
        &[
            libc::SYS_init_module,
            libc::SYS_finit_module,
            libc::SYS_delete_module,
            libc::SYS_kexec_load,
            libc::SYS_kexec_file_load,
            libc::SYS_reboot,
            libc::SYS_swapon,
            libc::SYS_swapoff,
            libc::SYS_acct,
            libc::SYS_quotactl,
            libc::SYS_syslog,
            libc::SYS_vhangup,
            libc::SYS_sethostname,
            libc::SYS_setdomainname,
            libc::SYS_sysfs,
            libc::SYS_ustat,
            libc::SYS_uselib,
            libc::SYS_lookup_dcookie,
            libc::SYS_nfsservctl,
        ],
    ),
    (
        "the host's clock, shared by every sandbox",
        &[
            libc::SYS_settimeofday,
            libc::SYS_clock_settime,
            libc::SYS_clock_adjtime,
            libc::SYS_adjtimex,
        ],
    ),
    (
        "kernel keyrings: not namespaced, a shared store across sandboxes",
        &[libc::SYS_add_key, libc::SYS_keyctl, libc::SYS_request_key],
    ),
    (
        "large kernel attack surfaces a sandbox does not need, the usual \
         ground of kernel exploits: eBPF, perf, userfaultfd (used to win \
         kernel races), io_uring (denied by most hardened hosts)",
        &[
            libc::SYS_bpf,
            libc::SYS_perf_event_open,
            libc::SYS_userfaultfd,
            libc::SYS_io_uring_setup,
            libc::SYS_io_uring_enter,
            libc::SYS_io_uring_register,
        ],
    ),
    (
        "file handles and notification that reach past the sandbox's root \
         (open_by_handle_at is the classic container escape), and kcmp, \
         which compares other processes' kernel objects",
        &[
            libc::SYS_open_by_handle_at,
            libc::SYS_name_to_handle_at,
            libc::SYS_fanotify_init,
            libc::SYS_kcmp,
        ],
    ),
    (
        "NUMA placement: host memory policy, as Docker without CAP_SYS_NICE",
        &[
            libc::SYS_mbind,
            libc::SYS_set_mempolicy,
            libc::SYS_get_mempolicy,
            libc::SYS_migrate_pages,
            libc::SYS_move_pages,
        ],
    ),
    #[cfg(target_arch = "x86_64")]
    (
        "x86 port I/O, and sysctl(2), which the kernel no longer has \
         (Docker's create_module, get_kernel_syms and query_module are gone \
         from the kernel's table altogether)",
        &[libc::SYS_iopl, libc::SYS_ioperm, libc::SYS__sysctl],
    ),
];

/// The `personality` values a sandbox may set (Docker's list): Linux,
/// `UNAME26`, `ADDR_NO_RANDOMIZE` (used by debuggers), their sum, and
/// the query.
const ALLOWED_PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

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
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = DENIED
        .iter()
        .flat_map(|(_, calls)| calls.iter())
        .map(|&nr| (nr, Vec::new()))
        .collect();
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
    let other_personality = ALLOWED_PERSONALITIES
        .iter()
        .map(|&p| SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, p))
        .collect::<Result<Vec<_>, _>>()
        .and_then(SeccompRule::new)
        .map_err(seccomp_err("build the personality rule"))?;
    rules.insert(libc::SYS_personality, vec![other_personality]);
    compile(rules, libc::EPERM, arch, "compile the seccomp deny list")
}

fn clone3_filter(arch: TargetArch) -> Result<BpfProgram, BootError> {
    let rules = [(libc::SYS_clone3, Vec::new())].into_iter().collect();
    compile(rules, libc::ENOSYS, arch, "compile the clone3 filter")
}

/// A filter that allows every call but those `rules` match, which fail
/// with `errno`.
fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    errno: i32,
    arch: TargetArch,
    what: &'static str,
) -> Result<BpfProgram, BootError> {
    SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch,
    )
    .and_then(BpfProgram::try_from)
    .map_err(seccomp_err(what))
}

pub(super) fn lock_down() -> Result<(), BootError> {
    // After every change of credentials, which resets it.
    nix::sys::prctl::set_dumpable(false).map_err(super::nix_step("make the agent non-dumpable"))?;
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
        let denied = DENIED.iter().map(|(_, c)| c.len()).sum::<usize>();
        assert!(deny_filter(arch).expect("deny list compiles").len() > denied);
        assert!(!clone3_filter(arch)
            .expect("clone3 filter compiles")
            .is_empty());
    }
}
