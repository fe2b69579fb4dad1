//! The host's NVIDIA GPUs: which there are (the gateway's GPU pools count
//! them) and what a sandbox that holds some needs, as the NVIDIA container
//! toolkit provides it: the GPUs' device nodes and the driver's control
//! nodes, the driver's user-space libraries and tools (read-only, under
//! `/usr/local/nvidia`, where CUDA images look), and the environment that
//! finds them. A sandbox holding no GPU gets none of this, and one holding
//! GPU 1 has no node for GPU 0: the driver cannot reach what it cannot open.

use std::path::PathBuf;

use paddock_agent_protocol::config::BindFile;

/// Where to find the driver on the host.
#[derive(Debug, Clone)]
pub struct GpuHost {
    /// Where the device nodes are (`/dev`).
    pub dev_dir: PathBuf,
    /// Where the driver's libraries may be.
    pub lib_dirs: Vec<PathBuf>,
    /// Where the driver's tools may be.
    pub bin_dirs: Vec<PathBuf>,
}

impl Default for GpuHost {
    fn default() -> Self {
        Self {
            dev_dir: PathBuf::from("/dev"),
            lib_dirs: [
                "/usr/local/nvidia/lib64",
                "/usr/lib/x86_64-linux-gnu",
                "/lib/x86_64-linux-gnu",
                "/usr/lib64",
                "/lib64",
            ]
            .map(PathBuf::from)
            .to_vec(),
            bin_dirs: ["/usr/local/nvidia/bin", "/usr/bin", "/bin"]
                .map(PathBuf::from)
                .to_vec(),
        }
    }
}

/// The driver's libraries a CUDA program or `nvidia-smi` loads (the
/// toolkit's "utility" and "compute" sets).
const LIBRARIES: &[&str] = &[
    "libnvidia-ml.so",
    "libcuda.so",
    "libcudadebugger.so",
    "libnvidia-ptxjitcompiler.so",
    "libnvidia-nvvm.so",
    "libnvidia-cfg.so",
    "libnvidia-allocator.so",
    "libnvidia-gpucomp.so",
    "libnvidia-opencl.so",
];

const TOOLS: &[&str] = &["nvidia-smi", "nvidia-debugdump", "nvidia-cuda-mps-control"];

/// Nodes every GPU user needs besides its GPUs' own.
const CONTROL_NODES: &[&str] = &[
    "nvidiactl",
    "nvidia-uvm",
    "nvidia-uvm-tools",
    "nvidia-modeset",
];

pub const LIB_DIR: &str = "/usr/local/nvidia/lib64";
pub const BIN_DIR: &str = "/usr/local/nvidia/bin";

/// What a sandbox holding `gpus` gets.
#[derive(Debug, Default)]
pub struct GpuBinds {
    pub devices: Vec<BindFile>,
    pub files: Vec<BindFile>,
    pub env: Vec<(String, String)>,
}

impl GpuHost {
    /// The N of every `nvidiaN` node, sorted.
    pub fn gpus(&self) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir(&self.dev_dir) else {
            return Vec::new();
        };
        let mut gpus: Vec<u32> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.strip_prefix("nvidia")?.parse().ok())
            .collect();
        gpus.sort_unstable();
        gpus
    }

    pub fn binds(&self, gpus: &[u32]) -> GpuBinds {
        if gpus.is_empty() {
            return GpuBinds::default();
        }
        let device = |name: &str| {
            let source = self.dev_dir.join(name);
            source.exists().then(|| BindFile {
                source,
                target: format!("/dev/{name}"),
                read_only: false,
            })
        };
        let mut devices: Vec<BindFile> = gpus
            .iter()
            .filter_map(|g| device(&format!("nvidia{g}")))
            .collect();
        devices.extend(CONTROL_NODES.iter().filter_map(|n| device(n)));
        // MIG and other capabilities, when the driver has them.
        if let Ok(caps) = std::fs::read_dir(self.dev_dir.join("nvidia-caps")) {
            for cap in caps.filter_map(Result::ok) {
                if let Some(name) = cap.file_name().to_str() {
                    devices.extend(device(&format!("nvidia-caps/{name}")));
                }
            }
        }
        let mut files = Vec::new();
        for lib in LIBRARIES {
            files.extend(
                self.find_versions(lib)
                    .into_iter()
                    .map(|(name, source)| BindFile {
                        source,
                        target: format!("{LIB_DIR}/{name}"),
                        read_only: true,
                    }),
            );
        }
        for tool in TOOLS {
            if let Some(source) = self
                .bin_dirs
                .iter()
                .map(|d| d.join(tool))
                .find(|p| p.is_file())
            {
                files.push(BindFile {
                    source,
                    target: format!("{BIN_DIR}/{tool}"),
                    read_only: true,
                });
            }
        }
        let visible = gpus
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        GpuBinds {
            devices,
            files,
            env: vec![
                ("NVIDIA_VISIBLE_DEVICES".into(), visible),
                ("LD_LIBRARY_PATH".into(), LIB_DIR.into()),
            ],
        }
    }

    /// `lib.so`, `lib.so.1` and `lib.so.<version>` of the first directory
    /// that has the library, each resolved to the real file (a bind of a
    /// symlink would follow it inside the sandbox).
    fn find_versions(&self, lib: &str) -> Vec<(String, PathBuf)> {
        for dir in &self.lib_dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let found: Vec<(String, PathBuf)> = entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().to_str()?.to_owned();
                    name.starts_with(lib).then_some(name)
                })
                .filter_map(|name| {
                    let real = std::fs::canonicalize(dir.join(&name)).ok()?;
                    real.is_file().then_some((name, real))
                })
                .collect();
            if !found.is_empty() {
                return found;
            }
        }
        Vec::new()
    }
}

/// Adds `dir` to a `PATH` value, last.
pub fn with_path(path: &str, dir: &str) -> String {
    if path.split(':').any(|p| p == dir) {
        path.to_owned()
    } else if path.is_empty() {
        dir.to_owned()
    } else {
        format!("{path}:{dir}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sandbox_gets_only_its_own_gpus_and_the_driver() {
        let dev = tempfile::tempdir().expect("tempdir");
        let lib = tempfile::tempdir().expect("tempdir");
        for n in ["nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"] {
            std::fs::write(dev.path().join(n), "").expect("node");
        }
        std::fs::create_dir(dev.path().join("nvidia-caps")).expect("caps");
        std::fs::write(dev.path().join("nvidia-caps/nvidia-cap1"), "").expect("cap");
        std::fs::write(lib.path().join("libnvidia-ml.so.550.1"), "").expect("lib");
        std::os::unix::fs::symlink(
            "libnvidia-ml.so.550.1",
            lib.path().join("libnvidia-ml.so.1"),
        )
        .expect("link");
        let host = GpuHost {
            dev_dir: dev.path().into(),
            lib_dirs: vec![lib.path().into()],
            bin_dirs: vec![],
        };
        assert_eq!(host.gpus(), vec![0, 1]);
        let b = host.binds(&[1]);
        let targets: Vec<&str> = b.devices.iter().map(|d| d.target.as_str()).collect();
        assert!(targets.contains(&"/dev/nvidia1"), "{targets:?}");
        assert!(!targets.contains(&"/dev/nvidia0"), "{targets:?}");
        assert!(
            targets.contains(&"/dev/nvidiactl")
                && targets.contains(&"/dev/nvidia-caps/nvidia-cap1")
        );
        let libs: Vec<&str> = b.files.iter().map(|f| f.target.as_str()).collect();
        assert!(
            libs.contains(&"/usr/local/nvidia/lib64/libnvidia-ml.so.1"),
            "{libs:?}"
        );
        assert!(b
            .files
            .iter()
            .all(|f| f.read_only && !f.source.ends_with("libnvidia-ml.so.1")));
        assert!(b
            .env
            .contains(&("NVIDIA_VISIBLE_DEVICES".into(), "1".into())));
        assert!(host.binds(&[]).devices.is_empty());
    }

    #[test]
    fn paths_gain_a_dir_once() {
        assert_eq!(with_path("/bin", BIN_DIR), "/bin:/usr/local/nvidia/bin");
        assert_eq!(
            with_path("/bin:/usr/local/nvidia/bin", BIN_DIR),
            "/bin:/usr/local/nvidia/bin"
        );
    }
}
