//! The host's NVIDIA GPUs, as the gateway's GPU pools count them.

/// The N of every `/dev/nvidiaN` on the host, sorted.
pub fn host_gpus() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/dev") else {
        return Vec::new();
    };
    let mut gpus: Vec<u32> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("nvidia")?.parse().ok())
        .collect();
    gpus.sort_unstable();
    gpus
}
