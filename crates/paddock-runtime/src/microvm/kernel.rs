//! The guest kernel: the host distribution's own (Debian's
//! `linux-image-amd64`), uncompressed once into paddock's data dir, and
//! the modules a microVM's devices need from its module tree.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use paddock_core::RuntimeError;

/// The modules a guest loads, by name; their dependencies come along.
/// Debian builds all of these as modules.
const WANTED: &[&str] = &[
    "virtio_mmio",
    "virtio_console",
    "virtio_net",
    "virtiofs",
    // A root on block devices: the disks, their filesystem (ext4 asks the
    // crypto API for crc32c when it mounts) and the overlay over them.
    "virtio_blk",
    "crc32c_generic",
    "ext4",
    "overlay",
];

/// The modules only a root on block devices needs, with their own
/// dependencies (file names without `.ko`): a guest on virtiofs skips them.
pub const BLOCK_ROOT_MODULES: &[&str] = &[
    "virtio_blk",
    "crc32c_generic",
    "crc16",
    "mbcache",
    "jbd2",
    "ext4",
    "overlay",
];

/// Whether the module at `path` (`…/ext4.ko`) is one of
/// [`BLOCK_ROOT_MODULES`].
pub fn is_block_root_module(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".ko"))
        .is_some_and(|n| BLOCK_ROOT_MODULES.contains(&n))
}

/// The xz stream magic that starts a bzImage's compressed payload.
const XZ_MAGIC: &[u8] = b"\xfd7zXZ\x00";

#[derive(Debug, Clone)]
pub struct GuestKernel {
    /// `uname -r` of the guest.
    pub release: String,
    /// The compressed kernel (`vmlinuz`) it comes from.
    pub image: PathBuf,
    /// Module files on the host, in load order.
    pub modules: Vec<PathBuf>,
}

fn setup(what: impl Into<String>) -> impl FnOnce(io::Error) -> RuntimeError {
    let what = what.into();
    move |e| RuntimeError::Setup(format!("{what}: {e}"))
}

impl GuestKernel {
    /// The kernel at `image` (a `vmlinuz`), or the newest one in `/boot`
    /// with a module tree.
    pub fn find(image: Option<&Path>) -> Result<Self, RuntimeError> {
        let image = match image {
            Some(p) => p.to_path_buf(),
            None => newest_kernel().ok_or_else(|| {
                RuntimeError::Setup(
                    "no guest kernel: install linux-image-amd64 (a /boot/vmlinuz-* with its \
                     /lib/modules tree) or set [microvm] kernel"
                        .into(),
                )
            })?,
        };
        let release = image
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("vmlinuz-"))
            .ok_or_else(|| {
                RuntimeError::Setup(format!("{} is not named vmlinuz-RELEASE", image.display()))
            })?
            .to_owned();
        let module_dir = Path::new("/lib/modules").join(&release);
        let dep = fs::read_to_string(module_dir.join("modules.dep"))
            .map_err(setup(format!("read the modules of kernel {release}")))?;
        let modules = load_order(&dep, WANTED)
            .map_err(RuntimeError::Setup)?
            .into_iter()
            .map(|m| module_dir.join(m))
            .collect();
        Ok(Self {
            release,
            image,
            modules,
        })
    }

    /// The uncompressed ELF kernel qemu boots directly (a bzImage boots
    /// too, but decompressing itself under TCG costs seconds), made in
    /// `cache` once. Written beside and renamed into place, so servers
    /// sharing the cache never see half of one.
    pub fn vmlinux(&self, cache: &Path) -> Result<PathBuf, RuntimeError> {
        let dir = cache.join(&self.release);
        let vmlinux = dir.join("vmlinux");
        if vmlinux.is_file() {
            return Ok(vmlinux);
        }
        fs::create_dir_all(&dir).map_err(setup(dir.display().to_string()))?;
        let compressed = fs::read(&self.image).map_err(setup(self.image.display().to_string()))?;
        let elf = uncompress(&compressed).map_err(|e| {
            RuntimeError::Setup(format!("uncompress {}: {e}", self.image.display()))
        })?;
        let tmp = dir.join(format!("vmlinux.{}.partial", std::process::id()));
        fs::write(&tmp, elf).map_err(setup(tmp.display().to_string()))?;
        fs::rename(&tmp, &vmlinux).map_err(setup(vmlinux.display().to_string()))?;
        Ok(vmlinux)
    }
}

/// The highest-versioned `/boot/vmlinuz-*` that has a module tree.
fn newest_kernel() -> Option<PathBuf> {
    let mut found: Vec<(String, PathBuf)> = fs::read_dir("/boot")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            let release = name.strip_prefix("vmlinuz-")?.to_owned();
            Path::new("/lib/modules")
                .join(&release)
                .join("modules.dep")
                .exists()
                .then(|| (release, e.path()))
        })
        .collect();
    found.sort_by(|a, b| natural_cmp(&a.0, &b.0));
    found.pop().map(|(_, p)| p)
}

/// Compares version strings number by number (`6.10` after `6.9`).
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let key = |s: &str| -> Vec<(u64, String)> {
        s.split(|c: char| !c.is_ascii_alphanumeric())
            .map(|p| (p.parse().unwrap_or(0), p.to_owned()))
            .collect()
    };
    key(a).cmp(&key(b))
}

/// The ELF inside a bzImage whose payload is xz-compressed (Debian's).
fn uncompress(bzimage: &[u8]) -> Result<Vec<u8>, String> {
    let start = bzimage
        .windows(XZ_MAGIC.len())
        .position(|w| w == XZ_MAGIC)
        .ok_or("no xz payload (only xz-compressed kernels are supported)")?;
    // liblzma, not a pure-Rust decoder: the kernel's stream uses the x86
    // BCJ filter. Decoding stops at the end of the stream; what follows is
    // the image's trailer.
    let mut decoder =
        xz2::stream::Stream::new_stream_decoder(u64::MAX, 0).map_err(|e| e.to_string())?;
    let mut input = &bzimage[start..];
    let mut out: Vec<u8> = Vec::with_capacity(bzimage.len() * 8);
    loop {
        if out.capacity() - out.len() < 1 << 20 {
            out.reserve(16 << 20);
        }
        let before = decoder.total_in();
        let status = decoder
            .process_vec(input, &mut out, xz2::stream::Action::Run)
            .map_err(|e| e.to_string())?;
        let used = usize::try_from(decoder.total_in() - before).map_err(|e| e.to_string())?;
        input = &input[used..];
        match status {
            xz2::stream::Status::StreamEnd => break,
            _ if input.is_empty() => return Err("the xz stream is truncated".into()),
            _ => {}
        }
    }
    if !out.starts_with(b"\x7fELF") {
        return Err("the payload is not an ELF kernel".into());
    }
    Ok(out)
}

/// The module files (relative to the module tree) to load for `wanted`,
/// each after its dependencies, from `modules.dep`.
fn load_order(modules_dep: &str, wanted: &[&str]) -> Result<Vec<String>, String> {
    let mut deps: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for line in modules_dep.lines() {
        let Some((file, rest)) = line.split_once(':') else {
            continue;
        };
        deps.insert(
            module_name(file),
            (
                file.to_owned(),
                rest.split_whitespace().map(module_name).collect(),
            ),
        );
    }
    let mut order = Vec::new();
    fn visit(
        name: &str,
        deps: &BTreeMap<String, (String, Vec<String>)>,
        order: &mut Vec<String>,
        depth: usize,
    ) -> Result<(), String> {
        let (file, needs) = deps
            .get(name)
            .ok_or_else(|| format!("the guest kernel has no module {name}"))?;
        if order.contains(file) {
            return Ok(());
        }
        if depth > 32 {
            return Err(format!("module dependencies of {name} loop"));
        }
        for n in needs {
            visit(n, deps, order, depth + 1)?;
        }
        if !order.contains(file) {
            order.push(file.clone());
        }
        Ok(())
    }
    for w in wanted {
        visit(w, &deps, &mut order, 0)?;
    }
    Ok(order)
}

/// `kernel/fs/fuse/virtiofs.ko` → `virtiofs` (dashes read as underscores,
/// as modprobe does).
fn module_name(file: &str) -> String {
    let base = file.rsplit('/').next().unwrap_or(file);
    let base = base.split(".ko").next().unwrap_or(base);
    base.replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_on_virtiofs_skips_the_block_root_modules() {
        assert!(is_block_root_module(Path::new("/paddock/modules/ext4.ko")));
        assert!(is_block_root_module(Path::new(
            "/paddock/modules/virtio_blk.ko"
        )));
        assert!(!is_block_root_module(Path::new(
            "/paddock/modules/virtiofs.ko"
        )));
        assert!(!is_block_root_module(Path::new(
            "/paddock/modules/virtio_mmio.ko"
        )));
    }

    const DEP: &str = "kernel/fs/fuse/fuse.ko:\n\
kernel/fs/fuse/virtiofs.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko kernel/fs/fuse/fuse.ko\n\
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko\n\
kernel/drivers/virtio/virtio_ring.ko:\n\
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n";

    #[test]
    fn dependencies_load_first_and_once() {
        let order = load_order(DEP, &["virtio_mmio", "virtiofs"]).expect("order");
        assert_eq!(
            order,
            [
                "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/drivers/virtio/virtio.ko",
                "kernel/drivers/virtio/virtio_mmio.ko",
                "kernel/fs/fuse/fuse.ko",
                "kernel/fs/fuse/virtiofs.ko",
            ]
        );
        let missing = load_order(DEP, &["virtio_net"]).expect_err("not in the tree");
        assert!(missing.contains("virtio_net"), "{missing}");
    }

    #[test]
    fn versions_compare_by_number() {
        assert!(natural_cmp("6.10.0-1-amd64", "6.9.0-2-amd64").is_gt());
        assert!(natural_cmp("6.1.0-56-amd64", "6.1.0-9-amd64").is_gt());
    }

    #[test]
    fn a_kernel_without_an_xz_payload_is_refused() {
        assert!(uncompress(b"MZ not a kernel").is_err());
    }
}
