//! MicroVMs: create → first exec through paddock, next to a bare qemu
//! boot of the same kernel to its init in the same run, and qemu's host
//! memory per idle VM.
//!
//! `cargo bench --bench microvm` (root; Debian's qemu-system-x86,
//! linux-image-amd64 and busybox-static). Prints:
//! - the accelerator (`kvm` or `tcg`) and the guest kernel;
//! - baseline: qemu `microvm` with the same kernel, memory, vCPUs and
//!   accelerator, booting a busybox initramfs whose `/init` prints a
//!   marker: spawn → marker on the serial console;
//! - paddock: `POST /v1/vms` (`"provider": "microvm"`) → first exec output;
//! - an exec round trip (`echo hi`) in a running microVM;
//! - where a paddock boot's time goes, from the guest's own marks;
//! - per idle VM: qemu's anonymous memory, the guest memory it touched,
//!   its file-backed pages (shared between VMs), and virtiofsd's and the
//!   monitor's resident memory.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{percentile, row, Api};
use paddock_runtime::microvm::qemu::cpu_khz;
use paddock_runtime::microvm::Accelerator;
use serde_json::{json, Value};

const ROUNDS: usize = 10;
const IDLE_VMS: usize = 3;
const MARKER: &str = "BARE-INIT-REACHED";

/// A busybox initramfs whose init prints [`MARKER`] and powers off.
fn bare_initrd(dir: &Path) -> PathBuf {
    let root = dir.join("bare");
    std::fs::create_dir_all(root.join("bin")).expect("dirs");
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static");
    let init = root.join("init");
    std::fs::write(
        &init,
        format!("#!/bin/busybox sh\necho {MARKER}\n/bin/busybox poweroff -f\n"),
    )
    .expect("init");
    Command::new("chmod")
        .arg("755")
        .arg(&init)
        .status()
        .expect("chmod");
    let out = dir.join("bare.cpio");
    let list = "bin\nbin/busybox\ninit\n";
    let mut child = Command::new("/bin/busybox")
        .args(["cpio", "-o", "-H", "newc"])
        .current_dir(&root)
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&out).expect("cpio out"))
        .spawn()
        .expect("busybox cpio");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(list.as_bytes())
        .expect("list");
    assert!(child.wait().expect("cpio").success());
    out
}

/// One bare boot: qemu spawned → the marker on its console.
fn bare_boot(kernel: &Path, initrd: &Path, accel: Accelerator) -> Duration {
    let mut append = "console=ttyS0 quiet reboot=t panic=-1 rdinit=/init".to_owned();
    if let Some(k) = cpu_khz() {
        append.push_str(&format!(" tsc_early_khz={k}"));
    }
    // Exactly the options paddock gives its guests.
    let (accel, cpu) = accel.qemu_options();
    let t = Instant::now();
    let mut qemu = Command::new("qemu-system-x86_64")
        .args(["-M", "microvm,rtc=on", "-accel", accel, "-cpu", cpu])
        .args(["-m", "512M", "-smp", "1", "-nographic", "-nodefaults"])
        .args(["-no-user-config", "-no-reboot", "-serial", "stdio"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", &append])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu");
    let stdout = qemu.stdout.take().expect("stdout");
    let mut elapsed = None;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if line.contains(MARKER) {
            elapsed = Some(t.elapsed());
            break;
        }
    }
    let _ = qemu.kill();
    let _ = qemu.wait();
    elapsed.expect("the bare guest reached its init")
}

fn status_kib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Pids whose command line starts with a program ending in `program` and
/// mentions `needle`.
fn pids_of(program: &str, needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let text = String::from_utf8_lossy(&c);
                text.split('\0')
                    .next()
                    .is_some_and(|p| p.ends_with(program))
                    && text.contains(needle)
            })
        })
        .collect()
}

/// The guest's boot marks (`paddock-guest: STEP at SECONDS s`).
fn guest_marks(console: &Path) -> Vec<(String, f64)> {
    std::fs::read_to_string(console)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let rest = l.split("paddock-guest: ").nth(1)?;
            let (step, at) = rest.split_once(" at ")?;
            Some((step.to_owned(), at.trim_end_matches(" s").parse().ok()?))
        })
        .collect()
}

#[tokio::main]
async fn main() {
    common::install_crypto();
    let server = common::start_server(None);
    let api = Api {
        http: reqwest::Client::new(),
        base: server.base.clone(),
        key: server.key.clone(),
    };
    let ready: Value = reqwest::get(format!("{}/readyz", server.base))
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    let accel = ready["runtime"]["microvm"]["accelerator"]
        .as_str()
        .unwrap_or_else(|| panic!("no microVM provider: {ready}"))
        .to_owned();
    let release = ready["runtime"]["microvm"]["guest_kernel"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    // paddock: create → first exec. The first boot also uncompresses the
    // kernel and builds the initramfs: it is not counted.
    let create = || api.create_to_first_exec(json!({"provider": "microvm"}));
    let (_, warm) = create().await;
    api.delete(&warm).await;

    let kernel = server.data.join("microvm").join(&release).join("vmlinux");
    let tmp = tempfile::tempdir().expect("tempdir");
    let initrd = bare_initrd(tmp.path());
    let accelerator: Accelerator =
        serde_json::from_value(json!(accel)).expect("a known accelerator");
    bare_boot(&kernel, &initrd, accelerator);

    // Interleaved, so both see the same host load.
    let (mut bare, mut paddock, mut round_trip) = (Vec::new(), Vec::new(), Vec::new());
    let mut marks: Vec<Vec<(String, f64)>> = Vec::new();
    for _ in 0..ROUNDS {
        bare.push(bare_boot(&kernel, &initrd, accelerator));
        let (t, id) = create().await;
        paddock.push(t);
        for _ in 0..3 {
            let t = Instant::now();
            api.stream_exec(&id, "echo hi").await;
            round_trip.push(t.elapsed());
        }
        marks.push(guest_marks(
            &server.data.join("sandboxes").join(&id).join("console.log"),
        ));
        api.delete(&id).await;
    }

    // Idle VMs' memory.
    let mut idle = Vec::new();
    for _ in 0..IDLE_VMS {
        idle.push(create().await.1);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (mut anon, mut shmem, mut file, mut fsd, mut monitor) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for id in &idle {
        let qemu = pids_of("qemu-system-x86_64", id);
        assert_eq!(qemu.len(), 1, "qemu of {id}");
        anon += status_kib(qemu[0], "RssAnon:");
        shmem += status_kib(qemu[0], "RssShmem:");
        file += status_kib(qemu[0], "RssFile:");
        let run = server.data.join("sandboxes").join(id);
        let socket = run.join("virtiofs.sock").display().to_string();
        for pid in pids_of("virtiofsd", &socket) {
            fsd += status_kib(pid, "VmRSS:");
        }
        for pid in pids_of("paddock-agent", id) {
            monitor += status_kib(pid, "VmRSS:");
        }
    }
    for id in &idle {
        api.delete(id).await;
    }
    let per_vm = |kib: f64| kib / IDLE_VMS as f64 / 1024.0;

    println!("accelerator: {accel}; guest kernel: {release}; {ROUNDS} rounds, 512 MiB, 1 vCPU");
    println!();
    println!(
        "| {:<52} | {:>9} | {:>9} | {:>5} |",
        "", "p50 ms", "p99 ms", "n"
    );
    println!("|{:-<54}|{:-<11}|{:-<11}|{:-<7}|", "", "", "", "");
    row(
        "baseline: bare qemu boot of the kernel to its init",
        &mut bare,
    );
    row("paddock: create -> first exec output", &mut paddock);
    row("exec round trip (echo hi)", &mut round_trip);
    let bare50 = percentile(&mut bare, 0.5).as_secs_f64();
    let paddock50 = percentile(&mut paddock, 0.5).as_secs_f64();
    println!();
    println!(
        "paddock over the bare boot (p50): +{:.0} ms, {:+.1}%",
        (paddock50 - bare50) * 1e3,
        (paddock50 / bare50 - 1.0) * 100.0
    );
    println!();
    println!("where a paddock boot goes (guest uptime at each mark, median s):");
    let steps: Vec<String> = marks
        .first()
        .map(|m| m.iter().map(|(s, _)| s.clone()).collect())
        .unwrap_or_default();
    for step in steps {
        let mut at: Vec<f64> = marks
            .iter()
            .filter_map(|m| m.iter().find(|(s, _)| *s == step).map(|(_, t)| *t))
            .collect();
        at.sort_by(f64::total_cmp);
        if let Some(mid) = at.get(at.len() / 2) {
            println!("  {step:<10} {mid:.3}");
        }
    }
    println!();
    println!("host memory per idle microVM ({IDLE_VMS} VMs, MiB):");
    println!(
        "  qemu anonymous (its own heap, TCG code cache): {:.1}",
        per_vm(anon)
    );
    println!(
        "  guest memory touched (shared memfd):            {:.1}",
        per_vm(shmem)
    );
    println!(
        "  qemu file-backed (binary, kernel; shared):      {:.1}",
        per_vm(file)
    );
    println!(
        "  virtiofsd resident:                             {:.1}",
        per_vm(fsd)
    );
    println!(
        "  monitor (paddock-agent vmm) resident:           {:.1}",
        per_vm(monitor)
    );
    println!(
        "  paddock's own overhead (anon + virtiofsd + monitor): {:.1}",
        per_vm(anon + fsd + monitor)
    );
}
