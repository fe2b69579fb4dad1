//! The raw system calls nix does not wrap (or wraps in a shape we cannot
//! use), each in a small safe function. Everything above this module is
//! safe code.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

/// How a reaped child ended, with the CPU time it and its waited-for
/// descendants used.
#[derive(Debug, Clone, Copy)]
pub struct Reaped {
    pub pid: i32,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub cpu_time: Duration,
}

/// `wait4(-1, WNOHANG)`: one exited child, or `None` when none is waiting.
/// nix's `waitpid` does not return the rusage we report as `cpu_time`.
pub fn reap_one() -> Option<Reaped> {
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live, writable locals of the right type.
    let pid = unsafe { libc::wait4(-1, &mut status, libc::WNOHANG, &mut usage) };
    if pid <= 0 {
        return None;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    let (code, signal) = if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (None, None)
    };
    Some(Reaped {
        pid,
        code,
        signal,
        cpu_time: tv(usage.ru_utime) + tv(usage.ru_stime),
    })
}

/// Sets a terminal's window size (`TIOCSWINSZ`).
pub fn set_window_size(fd: BorrowedFd<'_>, cols: u16, rows: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: fd is a live descriptor borrowed for the call; ws is a valid winsize.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs in a forked child just before `execve`: only async-signal-safe
/// calls. Starts a new session (so a kill of the process group reaches the
/// whole command), optionally takes fd 0 as controlling terminal, restores
/// default signal dispositions and the signal mask, and makes the child the
/// OOM killer's first choice over the agent.
pub fn prepare_child(controlling_tty: bool, inherit: Option<i32>) -> io::Result<()> {
    // SAFETY: setsid, ioctl, fcntl, sigprocmask, signal, open, write and
    // close are async-signal-safe; every pointer passed is to a live local.
    unsafe {
        if libc::setsid() < 0 {
            return Err(io::Error::last_os_error());
        }
        // The one descriptor this child keeps across execve (a script
        // file); every other of the agent's is close-on-exec.
        if let Some(fd) = inherit {
            if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        if controlling_tty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        for sig in [
            libc::SIGPIPE,
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGCHLD,
        ] {
            libc::signal(sig, libc::SIG_DFL);
        }
        let path = c"/proc/self/oom_score_adj";
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd >= 0 {
            let v = b"500";
            libc::write(fd, v.as_ptr().cast(), v.len());
            libc::close(fd);
        }
    }
    Ok(())
}

/// Brings the loopback interface of the current network namespace up.
pub fn loopback_up() -> io::Result<()> {
    interface_up("lo")
}

/// An `AF_INET` datagram socket: the handle network ioctls go through.
fn inet_socket() -> io::Result<std::os::fd::OwnedFd> {
    // SAFETY: a plain datagram socket; the fd is checked, then owned.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and nothing else owns it.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// An `ifreq` naming `name` (at most 15 bytes), otherwise zeroed.
fn ifreq_for(name: &str) -> io::Result<libc::ifreq> {
    if name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad interface name",
        ));
    }
    // SAFETY: an all-zero ifreq is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn sockaddr_of(address: std::net::Ipv4Addr) -> libc::sockaddr {
    let inet = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(address.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr are both 16 bytes, and a sockaddr
    // is read by the kernel by its family, which is AF_INET here.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(inet) }
}

/// `ioctl(fd, request, arg)`, with errno as the error.
///
/// # Safety
/// `arg` must point at the structure `request` reads (and writes).
unsafe fn ioctl_on<T>(
    fd: &std::os::fd::OwnedFd,
    request: libc::Ioctl,
    arg: *mut T,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: upheld by the caller; fd is an open socket.
    if unsafe { libc::ioctl(fd.as_raw_fd(), request, arg) } < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sets `IFF_UP` on the interface `name`.
pub fn interface_up(name: &str) -> io::Result<()> {
    let fd = inet_socket()?;
    let mut req = ifreq_for(name)?;
    // SAFETY: SIOCGIFFLAGS reads and writes an ifreq.
    unsafe { ioctl_on(&fd, libc::SIOCGIFFLAGS as libc::Ioctl, &mut req)? };
    // SAFETY: the union field read is the one SIOCGIFFLAGS just wrote.
    unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads an ifreq.
    unsafe { ioctl_on(&fd, libc::SIOCSIFFLAGS as libc::Ioctl, &mut req) }
}

/// Gives the interface `name` the IPv4 `address` with `netmask`.
pub fn set_ipv4(
    name: &str,
    address: std::net::Ipv4Addr,
    netmask: std::net::Ipv4Addr,
) -> io::Result<()> {
    let fd = inet_socket()?;
    let mut req = ifreq_for(name)?;
    req.ifr_ifru.ifru_addr = sockaddr_of(address);
    // SAFETY: SIOCSIFADDR reads an ifreq holding an AF_INET address.
    unsafe { ioctl_on(&fd, libc::SIOCSIFADDR as libc::Ioctl, &mut req)? };
    req.ifr_ifru.ifru_netmask = sockaddr_of(netmask);
    // SAFETY: SIOCSIFNETMASK reads an ifreq holding an AF_INET mask.
    unsafe { ioctl_on(&fd, libc::SIOCSIFNETMASK as libc::Ioctl, &mut req) }
}

/// Adds an IPv4 route to `destination`/`netmask` on `device`, through
/// `gateway` when given (else on-link).
pub fn add_route(
    destination: std::net::Ipv4Addr,
    netmask: std::net::Ipv4Addr,
    gateway: Option<std::net::Ipv4Addr>,
    device: &str,
) -> io::Result<()> {
    let fd = inet_socket()?;
    let mut device = std::ffi::CString::new(device)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad interface name"))?
        .into_bytes_with_nul();
    // SAFETY: an all-zero rtentry is valid.
    let mut route: libc::rtentry = unsafe { std::mem::zeroed() };
    route.rt_dst = sockaddr_of(destination);
    route.rt_genmask = sockaddr_of(netmask);
    route.rt_flags = libc::RTF_UP;
    if netmask == std::net::Ipv4Addr::BROADCAST {
        route.rt_flags |= libc::RTF_HOST;
    }
    if let Some(g) = gateway {
        route.rt_gateway = sockaddr_of(g);
        route.rt_flags |= libc::RTF_GATEWAY;
    }
    route.rt_dev = device.as_mut_ptr().cast();
    // SAFETY: SIOCADDRT reads an rtentry; rt_dev points at `device`, a
    // NUL-terminated name alive until the call returns.
    unsafe { ioctl_on(&fd, libc::SIOCADDRT as libc::Ioctl, &mut route) }
}

/// `fork(2)`. Called only by the boot helper while it is single-threaded.
pub enum Forked {
    Parent { child: i32 },
    Child,
}

pub fn fork() -> io::Result<Forked> {
    // SAFETY: the boot helper is single-threaded here (no runtime, no
    // threads started), so the child may run arbitrary code.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent { child: pid }),
    }
}

/// `pivot_root(new_root, put_old)`; nix's wrapper exists, but this keeps
/// the root switch beside the other mount-namespace calls it needs.
pub fn pivot_root_here() -> io::Result<()> {
    let dot = c".";
    // SAFETY: both arguments are valid NUL-terminated strings.
    let r = unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `dup2(from, to)`, for pointing a standard descriptor elsewhere.
pub fn dup_onto(from: BorrowedFd<'_>, to: i32) -> io::Result<()> {
    // SAFETY: `from` is live for the call; `to` is a standard descriptor
    // the process owns for its whole life, replaced atomically by dup2.
    if unsafe { libc::dup2(from.as_raw_fd(), to) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `dup3(from, to, O_CLOEXEC)`: a descriptor at a fixed number that no
/// command inherits.
pub fn dup_to_cloexec(from: BorrowedFd<'_>, to: i32) -> io::Result<()> {
    // SAFETY: `from` is live for the call; `to` is a number this process
    // reserves for the descriptor (dup3 replaces whatever was there).
    if unsafe { libc::dup3(from.as_raw_fd(), to, libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes `cmd` call [`prepare_child`] in the child before `execve`.
pub fn set_pre_exec(cmd: &mut std::process::Command, controlling_tty: bool, inherit: Option<i32>) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prepare_child makes only async-signal-safe calls and touches
    // no memory of the parent.
    unsafe {
        cmd.pre_exec(move || prepare_child(controlling_tty, inherit));
    }
}

/// Registers an owned descriptor with the tokio reactor.
pub fn async_fd(
    fd: std::os::fd::OwnedFd,
) -> io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    // SAFETY: an OwnedFd stays open and names the same file description
    // until the AsyncFd that owns it is dropped.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}

// The new mount API (Linux 5.2+, `mount_setattr` 5.12+). nix wraps none of
// it; the constants are those of <linux/mount.h>.
const OPEN_TREE_CLONE: libc::c_uint = 0x1;
const OPEN_TREE_CLOEXEC: libc::c_uint = libc::O_CLOEXEC as libc::c_uint;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr` of <linux/mount.h>.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `open_tree(path, OPEN_TREE_CLONE)`: a detached copy of the mount at
/// `path`, which can be moved into another mount namespace.
pub fn open_tree_clone(path: &std::ffi::CStr) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: path is a valid NUL-terminated string; the flags are plain ints.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open_tree returned a new descriptor that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// `mount_setattr(tree, "", AT_EMPTY_PATH, {attr_set})` on a detached
/// tree; with `idmap`, the tree also becomes idmapped through that user
/// namespace (`MOUNT_ATTR_IDMAP`): its files' owners are seen as that
/// namespace maps them.
pub fn set_mount_attrs(
    tree: BorrowedFd<'_>,
    attr_set: u64,
    idmap: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: attr_set | idmap.map_or(0, |_| MOUNT_ATTR_IDMAP),
        attr_clr: 0,
        propagation: 0,
        userns_fd: idmap.map_or(0, |fd| fd.as_raw_fd() as u64),
    };
    let empty = c"";
    // SAFETY: tree is live; empty is a valid string; attr is a valid
    // mount_attr whose size is passed with it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `move_mount(tree, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH)`:
/// attaches a detached tree at `target` in the caller's mount namespace.
pub fn move_mount_to(tree: BorrowedFd<'_>, target: &std::ffi::CStr) -> io::Result<()> {
    let empty = c"";
    // SAFETY: tree is live; both strings are valid and NUL-terminated.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes this process the reaper of its orphaned descendants.
pub fn set_child_subreaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)
}

/// Registers an owned file with the tokio reactor.
pub fn async_file(file: std::fs::File) -> std::io::Result<tokio::io::unix::AsyncFd<std::fs::File>> {
    // SAFETY: `file` is moved into the `AsyncFd` and owns its descriptor:
    // it stays open, and `as_raw_fd` returns the same number, until the
    // `AsyncFd` is dropped.
    unsafe { tokio::io::unix::AsyncFd::register(file) }
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// `_exit(code)`: ends a forked child at once, without running the
/// parent's exit handlers or flushing its buffers a second time.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

// Loop devices. Hand-written: the loop-device crates on crates.io generate
// their bindings with bindgen at build time, which needs libclang on every
// build machine, for two ioctls and one struct of <linux/loop.h>.
const LOOP_CTL_GET_FREE: libc::Ioctl = 0x4C82;
const LOOP_CONFIGURE: libc::Ioctl = 0x4C0A;
/// The device detaches itself when its last user (the mount) goes.
const LO_FLAGS_AUTOCLEAR: u32 = 4;
/// Reads and writes go to the image file without the host's page cache:
/// the sandbox's ext4 caches its own, and a second copy of every page in
/// the host's cache only crowds memory (thousands of sandboxes' images
/// fragment it, and kswapd then walks every sandbox's memory cgroup to
/// make room). The kernel falls back to buffered I/O by itself where the
/// file system cannot do direct I/O.
const LO_FLAGS_DIRECT_IO: u32 = 16;

/// `struct loop_info64` of <linux/loop.h>.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` of <linux/loop.h> (Linux 5.8+).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Attaches the image `file` to a free loop device that detaches itself
/// once nothing uses it: its path, and the device held open (it detaches
/// when that closes unless something, a mount, uses it by then). Retries
/// when another process takes the free device first, or removes it (the
/// server removes a sandbox's freed device) before it is opened.
pub fn loop_attach(file: BorrowedFd<'_>) -> io::Result<(std::path::PathBuf, std::fs::File)> {
    use std::os::unix::fs::OpenOptionsExt;
    let control = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/loop-control")?;
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument; control is open.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let path = std::path::PathBuf::from(format!("/dev/loop{n}"));
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path);
        let device = match opened {
            Ok(d) => d,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENXIO)) => continue,
            Err(e) => return Err(e),
        };
        // SAFETY: an all-zero loop_config is valid; the fields set below
        // are plain integers.
        let mut config: LoopConfig = unsafe { std::mem::zeroed() };
        config.fd = file.as_raw_fd() as u32;
        config.info.lo_flags = LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO;
        // SAFETY: LOOP_CONFIGURE reads a loop_config, which config is.
        let mut r = unsafe { libc::ioctl(device.as_raw_fd(), LOOP_CONFIGURE, &config) };
        if r != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
            // A kernel that refuses direct I/O on this file system rather
            // than falling back: buffered, then.
            config.info.lo_flags = LO_FLAGS_AUTOCLEAR;
            // SAFETY: as above.
            r = unsafe { libc::ioctl(device.as_raw_fd(), LOOP_CONFIGURE, &config) };
        }
        if r == 0 {
            return Ok((path, device));
        }
        let e = io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::EBUSY | libc::ENXIO)) {
            return Err(e);
        }
    }
    Err(io::Error::other("no loop device stayed free"))
}

/// `FIFREEZE` / `FITHAW` (`_IOWR('X', 119 | 120, int)`), which libc does
/// not name.
const FIFREEZE: libc::Ioctl = 0xC004_5877_u32 as libc::Ioctl;
const FITHAW: libc::Ioctl = 0xC004_5878_u32 as libc::Ioctl;

/// Freezes (or thaws) the file system `fd` is on. Freezing one that is
/// frozen, or thawing one that is not, is not an error.
pub fn freeze_filesystem(fd: BorrowedFd<'_>, frozen: bool) -> io::Result<()> {
    let request = if frozen { FIFREEZE } else { FITHAW };
    // SAFETY: both requests take no argument the kernel reads or writes
    // through; `fd` is open for the call.
    match unsafe { libc::ioctl(fd.as_raw_fd(), request, 0) } {
        0 => Ok(()),
        _ => match io::Error::last_os_error() {
            e if frozen && e.raw_os_error() == Some(libc::EBUSY) => Ok(()),
            e if !frozen && e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
            e => Err(e),
        },
    }
}

/// Buffers of 16 KiB and more get mappings of their own, returned to the
/// kernel when freed. An idle sandbox's agent then keeps none of the
/// buffers its last exec used (two of 64 KiB for output), which glibc's
/// heap would hold on to: thousands of idle sandboxes each kept about
/// 200 KiB of heap that way.
pub fn unmap_large_buffers_when_freed() {
    // SAFETY: mallopt sets an allocator tunable; it touches no memory the
    // caller owns.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 16 * 1024);
    }
}
