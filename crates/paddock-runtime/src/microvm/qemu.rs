//! qemu's `microvm` machine: the accelerator it runs under and the command
//! line of one VM.

use std::path::{Path, PathBuf};

use paddock_agent_protocol::config::{PORT_NAME, ROOT_TAG};

/// How the guest's instructions run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accelerator {
    /// Hardware virtualization through `/dev/kvm`.
    Kvm,
    /// qemu's software emulation: slow but available everywhere.
    Tcg,
}

impl Accelerator {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        }
    }

    /// qemu's `-accel` and `-cpu` values for it. TCG's code cache is
    /// capped at 64 MiB: by default it grows to hundreds per VM.
    pub fn qemu_options(self) -> (&'static str, &'static str) {
        match self {
            Self::Kvm => ("kvm", "host"),
            Self::Tcg => ("tcg,tb-size=64", "max"),
        }
    }

    /// KVM when `/dev/kvm` can be opened and the CPU has hardware
    /// virtualization (`vmx` or `svm`); TCG otherwise. A `/dev/kvm` without
    /// either flag is a paravirtual one (such as PVM) that boots only
    /// guest kernels built for it, which Debian's is not.
    pub fn detect() -> Self {
        let kvm = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        if kvm && has_hardware_virtualization(&cpuinfo) {
            Self::Kvm
        } else {
            Self::Tcg
        }
    }
}

fn has_hardware_virtualization(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

/// The host CPU's frequency in kHz, for the guest's `tsc_early_khz`: under
/// TCG, Debian's kernel often hangs calibrating its TSC without it.
pub fn cpu_khz() -> Option<u64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    cpuinfo
        .lines()
        .find(|l| l.starts_with("cpu MHz"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|mhz| mhz.trim().parse::<f64>().ok())
        .map(|mhz| (mhz * 1000.0) as u64)
        .filter(|khz| *khz > 0)
}

/// Where the guest's root comes from.
pub enum MachineRoot<'a> {
    /// virtiofsd's socket: the host's overlay, shared (which qemu cannot
    /// migrate).
    Virtiofs(&'a Path),
    /// Disk images: the read-only lower and the writable upper, the
    /// guest's `/dev/vda` and `/dev/vdb`.
    Blocks { lower: &'a Path, upper: &'a Path },
}

/// One VM's machine.
pub struct Machine<'a> {
    pub qemu: &'a Path,
    pub accelerator: Accelerator,
    pub name: &'a str,
    pub memory_mb: u32,
    pub vcpus: u32,
    /// The host's TSC frequency for the guest ([`cpu_khz`]).
    pub tsc_khz: Option<u64>,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    /// The unix socket qemu serves the guest's serial console on.
    pub console_socket: &'a Path,
    pub port_socket: &'a Path,
    /// qemu's QMP socket: how the VM is paused, saved and continued.
    pub qmp_socket: &'a Path,
    pub root: MachineRoot<'a>,
    /// The tap device and the NIC's MAC address.
    pub nic: Option<(&'a str, String)>,
}

impl Machine<'_> {
    /// qemu's argv, qemu first.
    pub fn argv(&self) -> Vec<String> {
        let mut append = String::from("console=ttyS0 quiet reboot=t panic=-1 rdinit=/init");
        if let Some(khz) = self.tsc_khz {
            append.push_str(&format!(" tsc_early_khz={khz}"));
        }
        let (accel, cpu) = self.accelerator.qemu_options();
        let path = |p: &Path| p.display().to_string();
        // virtiofs needs the guest's memory in a shared memfd that
        // virtiofsd maps. Without it the guest's memory is ordinary
        // anonymous memory, which qemu reads without allocating what the
        // guest never touched when it saves the VM (a private memfd
        // mapping would allocate every page it reads).
        let shared_memory = matches!(self.root, MachineRoot::Virtiofs(_));
        let mut argv: Vec<String> = vec![
            path(self.qemu),
            "-name".into(),
            self.name.into(),
            // libvhost-user serves only modern (non-legacy) virtio.
            "-M".into(),
            if shared_memory {
                "microvm,rtc=on,memory-backend=mem".into()
            } else {
                "microvm,rtc=on".into()
            },
            "-global".into(),
            "virtio-mmio.force-legacy=false".into(),
            "-accel".into(),
            accel.into(),
            "-cpu".into(),
            cpu.into(),
            "-m".into(),
            format!("{}M", self.memory_mb),
            "-smp".into(),
            self.vcpus.to_string(),
            "-nographic".into(),
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-no-reboot".into(),
            "-chardev".into(),
            format!(
                "socket,id=console,path={},server=on,wait=off",
                path(self.console_socket)
            ),
            "-serial".into(),
            "chardev:console".into(),
            "-kernel".into(),
            path(self.kernel),
            "-initrd".into(),
            path(self.initrd),
            "-append".into(),
            append,
            "-device".into(),
            "virtio-serial-device".into(),
            "-chardev".into(),
            format!(
                "socket,id=agent,path={},server=on,wait=off",
                path(self.port_socket)
            ),
            "-device".into(),
            format!("virtserialport,chardev=agent,name={PORT_NAME}"),
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", path(self.qmp_socket)),
        ];
        if shared_memory {
            argv.extend([
                "-object".into(),
                format!(
                    "memory-backend-memfd,id=mem,size={}M,share=on",
                    self.memory_mb
                ),
            ]);
        }
        match &self.root {
            MachineRoot::Virtiofs(socket) => argv.extend([
                "-chardev".into(),
                format!("socket,id=fs,path={}", path(socket)),
                "-device".into(),
                format!("vhost-user-fs-device,chardev=fs,tag={ROOT_TAG}"),
            ]),
            MachineRoot::Blocks { lower, upper } => {
                for (id, file, read_only) in [("lower", lower, true), ("upper", upper, false)] {
                    argv.extend([
                        "-drive".into(),
                        format!(
                            "file={},if=none,id={id},format=raw,readonly={},cache=none,aio=threads",
                            path(file),
                            if read_only { "on" } else { "off" }
                        ),
                        "-device".into(),
                        format!("virtio-blk-device,drive={id}"),
                    ]);
                }
            }
        }
        if let Some((tap, mac)) = &self.nic {
            argv.extend([
                "-netdev".into(),
                format!("tap,id=net0,ifname={tap},script=no,downscript=no"),
                "-device".into(),
                format!("virtio-net-device,netdev=net0,mac={mac}"),
            ]);
        }
        argv
    }
}

/// `qemu-system-x86_64` on `PATH`, if installed.
pub fn find_qemu() -> Option<PathBuf> {
    find_program("qemu-system-x86_64")
}

/// Debian's virtiofsd: the C one qemu 7 ships, or the Rust one.
pub fn find_virtiofsd() -> Option<PathBuf> {
    ["/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

fn find_program(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(["/usr/bin".into(), "/usr/local/bin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A stable, locally administered MAC for the VM at `address`.
pub fn mac_for(address: std::net::Ipv4Addr) -> String {
    let [a, b, c, d] = address.octets();
    format!("02:71:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paravirtual_kvm_is_not_hardware_virtualization() {
        assert!(has_hardware_virtualization("flags\t: fpu vme vmx sse\n"));
        assert!(has_hardware_virtualization("flags\t: fpu svm\n"));
        assert!(!has_hardware_virtualization(
            "flags\t: fpu vme sse hypervisor\n"
        ));
    }

    #[test]
    fn the_machine_has_its_memory_cpus_and_devices() {
        let argv = Machine {
            qemu: Path::new("/usr/bin/qemu-system-x86_64"),
            accelerator: Accelerator::Tcg,
            name: "vm_x",
            memory_mb: 384,
            vcpus: 2,
            tsc_khz: Some(2_000_000),
            kernel: Path::new("/k"),
            initrd: Path::new("/i"),
            console_socket: Path::new("/c"),
            port_socket: Path::new("/p"),
            qmp_socket: Path::new("/q"),
            root: MachineRoot::Virtiofs(Path::new("/f")),
            nic: Some(("tap0", mac_for(std::net::Ipv4Addr::new(10, 0, 0, 2)))),
        }
        .argv();
        let joined = argv.join(" ");
        assert!(joined.contains("-m 384M -smp 2"), "{joined}");
        assert!(joined.contains("size=384M,share=on"), "{joined}");
        assert!(joined.contains("-accel tcg"), "{joined}");
        assert!(joined.contains("tsc_early_khz=2000000"), "{joined}");
        assert!(joined.contains("mac=02:71:0a:00:00:02"), "{joined}");
        assert!(joined.contains("name=paddock.agent"), "{joined}");
    }
}
