//! PID 1 of a microVM: the same agent binary, started by the guest kernel
//! as `/init` from the initramfs paddock builds (see the runtime's
//! `microvm` module).
//!
//! 1. mount /dev, /proc and /sys, and send its output to the console;
//! 2. load the kernel modules the VM's devices need (Debian's kernel
//!    builds virtio, virtio-serial, virtio-net and virtiofs as modules);
//! 3. mount the root filesystem, which the host serves over virtiofs from
//!    the sandbox's overlay (so writes land in its upper layer on the host,
//!    exactly as a container's do);
//! 4. give `eth0` the VM's address and routes;
//! 5. move into the root and serve the agent protocol over the
//!    virtio-serial port named [`PORT_NAME`].
//!
//! The guest's memory and CPUs are its own, and the VM boundary is its
//! isolation: PID 1 keeps its capabilities and sets no seccomp filter.

use std::fs;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{mount, MsFlags};

use crate::boot::{nix_step, step, BootError};
use crate::sys;
pub use paddock_agent_protocol::config::{
    GuestConfig, GuestNetwork, GuestRoot, CONFIG_PATH, PORT_NAME, ROOT_TAG,
};

const NONE: Option<&str> = None;
const DEVICE_WAIT: Duration = Duration::from_secs(20);

/// Whether this process is a microVM's init.
pub fn is_guest_init() -> bool {
    std::process::id() == 1 && Path::new(CONFIG_PATH).exists()
}

/// Runs the guest's init; never returns while the VM lives.
pub fn run() -> std::process::ExitCode {
    let failure = match init() {
        Ok((port, defaults)) => match crate::serve::serve_port(&port, defaults) {
            Ok(()) => "the host closed the agent port".to_owned(),
            Err(e) => format!("serve failed: {e}"),
        },
        Err(e) => crate::boot::error_chain(&e),
    };
    eprintln!("paddock-agent (guest init): {failure}");
    // PID 1 exiting panics the kernel, which (with `panic=-1` and qemu's
    // `-no-reboot`) ends the VM: what a dead agent should do.
    std::process::ExitCode::FAILURE
}

fn init() -> Result<(PathBuf, crate::serve::Defaults), BootError> {
    mount_kernel_filesystems(Path::new("/"))?;
    console_stdio()?;
    mark("init");
    let config: GuestConfig = crate::boot::read_config(Path::new(CONFIG_PATH))?;
    for module in &config.modules {
        load_module(module)?;
    }
    mark("modules");
    let port = wait_for_port()?;
    let root = Path::new("/newroot");
    fs::create_dir_all(root).map_err(step("create /newroot"))?;
    match &config.root {
        GuestRoot::Virtiofs => wait_for(|| {
            mount(
                Some(ROOT_TAG),
                root,
                Some("virtiofs"),
                MsFlags::empty(),
                NONE,
            )
            .is_ok()
        })
        .ok_or_else(|| BootError::Child("the virtiofs root never mounted".into()))?,
        GuestRoot::Blocks {
            lower,
            upper,
            resolv_conf,
        } => mount_block_root(root, lower, upper, resolv_conf.as_deref())?,
    }
    mark("root");
    if let Some(net) = &config.network {
        configure_network(net)?;
    } else {
        sys::loopback_up().map_err(step("bring up loopback"))?;
    }
    mark("network");
    nix::unistd::sethostname(&config.hostname).map_err(nix_step("set the hostname"))?;
    // The writable disk's own mount is out of reach once the root is
    // switched: its root stays open for the host's freezes.
    let disk = match &config.root {
        GuestRoot::Blocks { .. } => {
            Some(fs::File::open(UPPER_MOUNT).map_err(step(format!("open {UPPER_MOUNT}")))?)
        }
        GuestRoot::Virtiofs => None,
    };
    switch_root(root)?;
    let user = crate::boot::working_dir_and_user(config.cwd.as_deref(), config.user.as_deref())?;
    mark("serving");
    Ok((
        port,
        crate::serve::Defaults {
            env: config.env,
            cwd: config.cwd,
            user,
            disk,
        },
    ))
}

/// Prints how long after the kernel started a boot step ended, to the
/// console (the VM's `console.log`): where a boot's time goes.
fn mark(step: &str) {
    let uptime = fs::read_to_string("/proc/uptime").unwrap_or_default();
    let seconds = uptime.split_whitespace().next().unwrap_or("?");
    eprintln!("paddock-guest: {step} at {seconds} s");
}

fn mount_kernel_filesystems(root: &Path) -> Result<(), BootError> {
    for (source, dir, fstype) in [
        ("devtmpfs", "dev", "devtmpfs"),
        ("proc", "proc", "proc"),
        ("sysfs", "sys", "sysfs"),
    ] {
        let target = root.join(dir);
        fs::create_dir_all(&target).map_err(step(format!("create /{dir}")))?;
        mount(
            Some(source),
            &target,
            Some(fstype),
            MsFlags::MS_NOSUID,
            NONE,
        )
        .map_err(nix_step(format!("mount /{dir}")))?;
    }
    Ok(())
}

/// Points stdio at the kernel console (its log is the VM's console file
/// on the host).
fn console_stdio() -> Result<(), BootError> {
    let console = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
        .map_err(step("open /dev/console"))?;
    for fd in 0..3 {
        sys::dup_onto(console.as_fd(), fd).map_err(step("redirect stdio to the console"))?;
    }
    Ok(())
}

fn load_module(path: &Path) -> Result<(), BootError> {
    let file = fs::File::open(path).map_err(step(format!("open {}", path.display())))?;
    match nix::kmod::finit_module(&file, c"", nix::kmod::ModuleInitFlags::empty()) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
        Err(e) => Err(nix_step(format!("load {}", path.display()))(e)),
    }
}

/// Polls `ready` until it holds or [`DEVICE_WAIT`] passes: devices probe
/// asynchronously after their module loads.
fn wait_for(mut ready: impl FnMut() -> bool) -> Option<()> {
    let deadline = Instant::now() + DEVICE_WAIT;
    loop {
        if ready() {
            return Some(());
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The device node of the agent's virtio-serial port.
fn wait_for_port() -> Result<PathBuf, BootError> {
    let mut found = None;
    wait_for(|| {
        found = fs::read_dir("/sys/class/virtio-ports")
            .into_iter()
            .flatten()
            .flatten()
            .find(|e| {
                fs::read_to_string(e.path().join("name")).is_ok_and(|n| n.trim() == PORT_NAME)
            })
            .map(|e| Path::new("/dev").join(e.file_name()))
            .filter(|dev| dev.exists());
        found.is_some()
    });
    found.ok_or_else(|| BootError::Child(format!("no virtio-serial port named {PORT_NAME}")))
}

/// `lo` and `eth0` up, `eth0` with the VM's address, and routes to the
/// gateway and through it. Done with ioctls: under TCG each `ip` process
/// would cost about a tenth of a second.
fn configure_network(net: &GuestNetwork) -> Result<(), BootError> {
    use std::net::Ipv4Addr;
    wait_for(|| Path::new("/sys/class/net/eth0").exists())
        .ok_or_else(|| BootError::Child("the VM has no eth0".into()))?;
    let address: Ipv4Addr = net
        .address
        .parse()
        .map_err(|_| BootError::Child(format!("bad guest address {}", net.address)))?;
    let gateway: Ipv4Addr = net
        .gateway
        .parse()
        .map_err(|_| BootError::Child(format!("bad gateway {}", net.gateway)))?;
    let host = Ipv4Addr::BROADCAST;
    sys::loopback_up().map_err(step("bring up lo"))?;
    sys::set_ipv4("eth0", address, host).map_err(step("address eth0"))?;
    sys::interface_up("eth0").map_err(step("bring up eth0"))?;
    sys::add_route(gateway, host, None, "eth0").map_err(step("route to the gateway"))?;
    sys::add_route(
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Some(gateway),
        "eth0",
    )
    .map_err(step("default route"))?;
    Ok(())
}

/// Assembles the root from block devices: the read-only `lower` (the
/// image), the writable `upper` (the sandbox's disk, holding the
/// overlay's upper and work dirs), and the overlay of the two at `root`.
/// Where the guest mounts its writable disk; the root's overlay keeps
/// its upper and work dirs on it.
const UPPER_MOUNT: &str = "/upper";

fn mount_block_root(
    root: &Path,
    lower: &str,
    upper: &str,
    resolv_conf: Option<&str>,
) -> Result<(), BootError> {
    for (device, at, flags) in [
        (lower, "/lower", MsFlags::MS_RDONLY),
        (upper, UPPER_MOUNT, MsFlags::empty()),
    ] {
        fs::create_dir_all(at).map_err(step(format!("create {at}")))?;
        wait_for(|| Path::new(device).exists())
            .ok_or_else(|| BootError::Child(format!("the VM has no {device}")))?;
        mount(Some(device), at, Some("ext4"), flags, NONE)
            .map_err(nix_step(format!("mount {device} at {at}")))?;
    }
    for dir in ["/upper/upper", "/upper/work"] {
        fs::create_dir_all(dir).map_err(step(format!("create {dir}")))?;
    }
    mount(
        Some("overlay"),
        root,
        Some("overlay"),
        MsFlags::empty(),
        Some("lowerdir=/lower,upperdir=/upper/upper,workdir=/upper/work"),
    )
    .map_err(nix_step("mount the root overlay"))?;
    if let Some(text) = resolv_conf {
        let etc = root.join("etc");
        fs::create_dir_all(&etc).map_err(step("create /etc"))?;
        fs::write(etc.join("resolv.conf"), text).map_err(step("write /etc/resolv.conf"))?;
    }
    Ok(())
}

/// Makes `root` the root: moves the kernel filesystems into it, then the
/// root itself over `/` (the initramfs cannot be pivoted away from).
fn switch_root(root: &Path) -> Result<(), BootError> {
    for dir in ["dev", "proc", "sys"] {
        let target = root.join(dir);
        fs::create_dir_all(&target).map_err(step(format!("create /{dir} in the root")))?;
        mount(
            Some(Path::new("/").join(dir).as_path()),
            &target,
            NONE,
            MsFlags::MS_MOVE,
            NONE,
        )
        .map_err(nix_step(format!("move /{dir} into the root")))?;
    }
    std::env::set_current_dir(root).map_err(step("enter the root"))?;
    mount(Some("."), "/", NONE, MsFlags::MS_MOVE, NONE)
        .map_err(nix_step("move the root over /"))?;
    nix::unistd::chroot(".").map_err(nix_step("chroot into the root"))?;
    std::env::set_current_dir("/").map_err(step("enter /"))?;
    for (source, dir, fstype, options) in [
        (
            "devpts",
            "/dev/pts",
            "devpts",
            Some("newinstance,ptmxmode=0666"),
        ),
        ("shm", "/dev/shm", "tmpfs", Some("mode=1777")),
    ] {
        fs::create_dir_all(dir).map_err(step(format!("create {dir}")))?;
        mount(
            Some(source),
            dir,
            Some(fstype),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            options,
        )
        .map_err(nix_step(format!("mount {dir}")))?;
    }
    // With a private devpts instance, /dev/ptmx must point into it.
    let _ = fs::remove_file("/dev/ptmx");
    std::os::unix::fs::symlink("pts/ptmx", "/dev/ptmx").map_err(step("link /dev/ptmx"))?;
    Ok(())
}
