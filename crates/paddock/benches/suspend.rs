//! Suspend and resume with memory: microVMs started from an image, with a
//! given amount of their memory touched (random bytes in a tmpfs, which
//! qemu cannot skip as zero pages), suspended and resumed through
//! paddock, next to a cold create of the same microVM in the same run.
//!
//! `cargo bench --bench suspend` (root; Debian's qemu-system-x86,
//! linux-image-amd64, busybox-static and docker-registry). Prints per
//! memory size: create -> first exec (cold), the suspend call, resume ->
//! first exec, and the saved memory image's size on disk.

mod common;
#[path = "../tests/common/registry.rs"]
mod registry;
#[path = "../tests/common/token.rs"]
mod token;

/// What the tests' registry helpers call on their parent module.
fn install_crypto() {
    common::install_crypto();
}

use std::time::{Duration, Instant};

use common::{percentile, row, Api};
use serde_json::json;

const ROUNDS: usize = 3;
const TOUCHED_MB: [u32; 2] = [256, 1024];

#[tokio::main]
async fn main() {
    install_crypto();
    let reg = registry::Registry::start();
    let image = reg.reference("bench/guest:v1");
    registry::push(
        &image,
        vec![(
            registry::gzip(&registry::busybox_base().bytes()),
            registry::GZIP,
        )],
        registry::config_json(&["PATH=/bin"], "/work", ""),
    )
    .await;
    let server = common::start_server(Some(&reg.paddock_config()));
    let api = Api {
        http: reqwest::Client::new(),
        base: server.base.clone(),
        key: server.key.clone(),
    };
    let create = |memory_mb: u32| {
        api.create_to_first_exec(
            json!({"provider": "microvm", "image_variant": image, "memory_mb": memory_mb}),
        )
    };
    // The first boot makes the image's lower disk, the kernel and the
    // initramfs: not counted.
    let (_, warm) = create(512).await;
    api.delete(&warm).await;

    println!("paddock suspend/resume benchmark: microVMs from an image, {ROUNDS} rounds each");
    for touched in TOUCHED_MB {
        // A tmpfs holds at most half the guest's memory.
        let memory_mb = touched * 2 + 128;
        let (mut cold, mut suspend, mut resume, mut sizes) = (vec![], vec![], vec![], vec![]);
        for _ in 0..ROUNDS {
            let (took, id) = create(memory_mb).await;
            cold.push(took);
            let filled = api
                .stream_exec(
                    &id,
                    &format!(
                        "dd if=/dev/urandom of=/dev/shm/fill bs=1M count={touched} 2>/dev/null; \
                         echo filled"
                    ),
                )
                .await;
            assert!(filled.contains("filled"), "{filled}");
            let t = Instant::now();
            let vm = api.post(&format!("/v1/vms/{id}/suspend"), json!({})).await;
            assert_eq!(vm["status"], "suspended", "{vm}");
            suspend.push(t.elapsed());
            let saved = server.data.join("sandboxes").join(&id).join("memory.img");
            sizes.push(std::fs::metadata(&saved).map(|m| m.len()).unwrap_or(0));
            let t = Instant::now();
            let vm = api.post(&format!("/v1/vms/{id}/resume"), json!({})).await;
            assert_eq!(vm["status"], "active", "{vm}");
            let out = api.stream_exec(&id, "echo ready").await;
            assert!(out.contains("ready"), "{out}");
            resume.push(t.elapsed());
            api.delete(&id).await;
        }
        println!();
        println!("{touched} MiB touched ({memory_mb} MiB VM):");
        println!("| measurement                                          |  p50 (ms) |  p99 (ms) |     n |");
        println!("|{:-<54}|{:-<11}|{:-<11}|{:-<7}|", "", "", "", "");
        row("create -> first exec (cold boot)", &mut cold);
        row("suspend", &mut suspend);
        row("resume -> first exec", &mut resume);
        sizes.sort_unstable();
        let size_mb = sizes[sizes.len() / 2] as f64 / f64::from(1 << 20);
        let (cold50, suspend50, resume50) = (
            secs(percentile(&mut cold, 0.5)),
            secs(percentile(&mut suspend, 0.5)),
            secs(percentile(&mut resume, 0.5)),
        );
        println!(
            "saved memory image: {size_mb:.0} MiB; resume -> first exec is {:.0}% of a cold boot \
             (goal <= 50%); suspend {:.2} s per GiB touched (goal <= 2)",
            100.0 * resume50 / cold50,
            suspend50 * 1024.0 / f64::from(touched),
        );
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}
