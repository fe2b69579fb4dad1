//! Suspending a microVM with its memory, and resuming it. qemu pauses the
//! guest and migrates it (memory and device state) into a pipe paddock
//! hands it over QMP; paddock seals the stream into `memory.img` in the
//! run dir ([`super::memory_image`]), and qemu exits, its monitor with it.
//! A resume starts the same machine with `-incoming defer` and feeds the
//! opened image back through a pipe. The guest's memory is never on disk
//! in clear, and never in the page cache of the VM's cgroup, which has no
//! room for a second copy of it.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use paddock_core::model::{RuntimeHandle, Vm};
use paddock_core::secrets::DataKey;
use paddock_core::RuntimeError;

use super::direct_io;
use super::disk_view;
use super::memory_image::{self, ImageError};
use super::{container, host_limits, on_block_devices, qmp, saved_config, MicroVmProvider};
use super::{GUEST_BOOT_TIMEOUT, QMP_SOCKET};

/// How long saving or loading a VM's memory may take.
const SAVE_TIMEOUT: Duration = Duration::from_secs(300);
/// A suspended microVM's memory and device state, sealed, in its run dir.
pub(super) const MEMORY_IMAGE: &str = "memory.img";
/// The names qemu knows the pipes by.
const SAVE_FD: &str = "paddock-save";
const LOAD_FD: &str = "paddock-load";
/// The pipes' buffer: several sealing chunks, so that sealing one
/// overlaps qemu writing (or reading) the next. With a pipe of one chunk
/// the two take turns, which halves the throughput.
const PIPE_BYTES: i32 = 8 << 20;

impl MicroVmProvider {
    /// Suspends a microVM: qemu pauses it, saves its memory and devices
    /// sealed under `key` to `memory.img` and exits, the monitor with it;
    /// the cgroups go. Its disks, network namespace and tap stay. Only a
    /// VM whose root is on block devices can be saved: qemu cannot migrate
    /// a virtiofs share.
    pub(super) async fn save(
        &self,
        vm: &Vm,
        handle: RuntimeHandle,
        key: &DataKey,
    ) -> Result<(), RuntimeError> {
        let run = self.container.run_dir(&vm.id);
        if !on_block_devices(&run)? {
            return Err(RuntimeError::Unsupported(
                "this microVM shares its root with the host over virtiofs, which qemu cannot \
                 save; a microVM started from an image (image_variant) can be suspended"
                    .into(),
            ));
        }
        let memory = run.join(MEMORY_IMAGE);
        // Its disk is left clean on the device and stays so while it is
        // saved: a snapshot reads it from the host.
        disk_view::freeze_for_save(&run).await?;
        let saved = async {
            let mut qmp = qmp::Qmp::connect(&run.join(QMP_SOCKET), Duration::from_secs(5)).await?;
            qmp.execute("stop", None).await?;
            match save_sealed(&mut qmp, &memory, key).await {
                Ok(bytes) => {
                    tracing::debug!(vm_id = %vm.id, bytes, "microVM memory sealed");
                    Ok(qmp)
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&memory);
                    let _ = qmp.execute("cont", None).await;
                    Err(e)
                }
            }
        };
        let mut qmp = match saved.await {
            Ok(qmp) => qmp,
            Err(e) => {
                if let Err(thaw) = disk_view::thaw_after_save(&run).await {
                    tracing::error!(vm_id = %vm.id, error = %thaw, "could not thaw a microVM's disk after a failed suspend");
                }
                return Err(e);
            }
        };
        // qemu exits; its monitor follows.
        let _ = qmp.execute("quit", None).await;
        self.end_monitor(vm, handle).await
    }

    /// Waits for a microVM's monitor to end (killing it after a while),
    /// then frees its cgroups; its run dir stays.
    pub(super) async fn end_monitor(
        &self,
        vm: &Vm,
        handle: RuntimeHandle,
    ) -> Result<(), RuntimeError> {
        use paddock_core::provider::Provider;
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while self.container.is_alive(&vm.id, handle) {
            if std::time::Instant::now() > deadline {
                let pid = nix::unistd::Pid::from_raw(handle.pid);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let cgroups = std::sync::Arc::clone(&self.container.cgroups);
        let id = vm.id.as_str().to_owned();
        tokio::task::spawn_blocking(move || cgroups.remove(&id))
            .await
            .map_err(|e| RuntimeError::Setup(format!("free the cgroups: {e}")))?
    }

    /// Resumes a saved microVM: a new monitor starts qemu with the same
    /// machine waiting for its state, the opened image is fed to it, then
    /// the guest continues.
    pub(super) async fn restore(
        &self,
        vm: &Vm,
        key: Option<&DataKey>,
    ) -> Result<RuntimeHandle, RuntimeError> {
        let run = self.container.run_dir(&vm.id);
        let memory = run.join(MEMORY_IMAGE);
        if !memory.is_file() {
            return Err(RuntimeError::Unsupported(
                "the microVM has no saved memory to resume from".into(),
            ));
        }
        let mut config = saved_config(&run)?;
        config.sandbox.cgroup_procs = self
            .container
            .cgroups
            .create(vm.id.as_str(), &host_limits(vm))?;
        config.qemu.extend(["-incoming".into(), "defer".into()]);
        let handle = self
            .container
            .launch_helper(&run, "vmm", &config, "the microVM monitor")
            .await?;
        let resumed = async {
            let mut qmp = qmp::Qmp::connect(&run.join(QMP_SOCKET), Duration::from_secs(10)).await?;
            load_sealed(&mut qmp, &memory, key).await?;
            qmp.execute("cont", None).await?;
            let socket = container::agent_socket(&run)?;
            crate::agent_client::ping_within(GUEST_BOOT_TIMEOUT, &socket)
                .await
                .map_err(|e| {
                    RuntimeError::Agent(format!("the resumed guest's agent never answered: {e}"))
                })?;
            disk_view::thaw_after_save(&run).await
        };
        match resumed.await {
            Ok(()) => {
                let _ = std::fs::remove_file(&memory);
                Ok(handle)
            }
            Err(e) => {
                // The saved image stays: the VM is still suspended.
                let pid = nix::unistd::Pid::from_raw(handle.pid);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = self.end_monitor(vm, handle).await;
                Err(e)
            }
        }
    }
}

/// Has the paused qemu behind `qmp` save into a pipe and seals what comes
/// out into `memory` (written whole to a temporary name, then renamed).
/// The sealed image's size.
async fn save_sealed(
    qmp: &mut qmp::Qmp,
    memory: &Path,
    key: &DataKey,
) -> Result<u64, RuntimeError> {
    let (from_qemu, to_sealer) = pipe()?;
    qmp.pass_fd(SAVE_FD, to_sealer.as_fd()).await?;
    // qemu holds its own copy now; with ours closed, the sealer sees the
    // end of the stream when qemu closes it.
    drop(to_sealer);
    let partial = partial_path(memory);
    let sealer = {
        let (partial, key) = (partial.clone(), key.clone());
        tokio::task::spawn_blocking(move || {
            seal_into(InPieces(File::from(from_qemu)), &partial, &key)
        })
    };
    let saved = qmp.save_into(SAVE_FD, SAVE_TIMEOUT).await;
    if saved.is_err() {
        // A failed migration may leave qemu holding the pipe open: the
        // sealer would wait for good.
        let _ = qmp.execute("migrate_cancel", None).await;
        let _ = qmp
            .execute("closefd", Some(serde_json::json!({ "fdname": SAVE_FD })))
            .await;
    }
    let sealed = sealer
        .await
        .map_err(|e| RuntimeError::Setup(format!("the memory sealer: {e}")))?;
    let outcome = saved.and_then(|()| sealed.map_err(|e| image_failed("seal", memory, e)));
    match outcome {
        Ok(bytes) => match std::fs::rename(&partial, memory) {
            Ok(()) => Ok(bytes),
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                Err(RuntimeError::host(memory.display().to_string(), e))
            }
        },
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

/// Feeds the image at `memory`, opened, to the qemu behind `qmp` (started
/// with `-incoming defer`) and waits until it has loaded it.
async fn load_sealed(
    qmp: &mut qmp::Qmp,
    memory: &Path,
    key: Option<&DataKey>,
) -> Result<(), RuntimeError> {
    let (to_qemu, from_feeder) = pipe()?;
    qmp.pass_fd(LOAD_FD, to_qemu.as_fd()).await?;
    drop(to_qemu);
    let feeder = {
        let (path, key) = (memory.to_path_buf(), key.cloned());
        tokio::task::spawn_blocking(move || {
            let image = direct_io::open_reader(&path)?;
            let mut pipe = InPieces(File::from(from_feeder));
            memory_image::open(image, &mut pipe, key.as_ref())
        })
    };
    let loaded = match qmp.load_from(LOAD_FD).await {
        Ok(()) => qmp.wait_loaded(SAVE_TIMEOUT).await,
        Err(e) => {
            let _ = qmp
                .execute("closefd", Some(serde_json::json!({ "fdname": LOAD_FD })))
                .await;
            Err(e)
        }
    };
    match loaded {
        Ok(()) => feeder
            .await
            .map_err(|e| RuntimeError::Setup(format!("the memory feeder: {e}")))?
            .map(|_| ())
            .map_err(|e| image_failed("open", memory, e)),
        Err(e) => {
            // A feeder that stopped (a chunk failed to open) is why qemu
            // did not load: its reason is the one to give. One still
            // writing ends when the caller stops qemu.
            match tokio::time::timeout(Duration::from_secs(2), feeder).await {
                Ok(Ok(Err(fed))) => Err(image_failed("open", memory, fed)),
                _ => Err(e),
            }
        }
    }
}

/// Seals everything read from `from` into a new file at `to`, readable
/// by the server alone, written past the page cache and on disk before
/// this returns.
fn seal_into(from: impl std::io::Read, to: &Path, key: &DataKey) -> Result<u64, ImageError> {
    let mut file = direct_io::create_writer(to)?;
    let bytes = memory_image::seal(from, &mut file, key)?;
    let file = file.finish()?;
    // The tail went through the cache.
    let _ = nix::fcntl::posix_fadvise(
        &file,
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
    Ok(bytes)
}

/// Reads from or writes to a pipe in pieces of [`PIPE_PIECE`]: a pipe
/// read or write holds the pipe's lock while it copies, so one of a whole
/// chunk keeps qemu, at the other end 32 KiB at a time, spinning on that
/// lock. In pieces, a resume took a quarter less time.
struct InPieces(File);

impl std::io::Read for InPieces {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = out.len().min(PIPE_PIECE);
        self.0.read(&mut out[..n])
    }
}

/// The most one write into a pipe copies.
const PIPE_PIECE: usize = 64 << 10;

impl std::io::Write for InPieces {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.write(&data[..data.len().min(PIPE_PIECE)])
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A pipe (read end, write end) of [`PIPE_BYTES`], closed on exec.
fn pipe() -> Result<(OwnedFd, OwnedFd), RuntimeError> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| RuntimeError::host("a pipe for the VM's memory", e.into()))?;
    // A smaller pipe only costs wake-ups: a refusal (over the user's
    // pipe-size limit) is not an error.
    let _ = nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_BYTES));
    Ok((read, write))
}

fn partial_path(memory: &Path) -> PathBuf {
    memory.with_extension("img.partial")
}

fn image_failed(what: &str, memory: &Path, e: ImageError) -> RuntimeError {
    match e {
        ImageError::Io(e) => RuntimeError::host(format!("{what} {}", memory.display()), e),
        damaged @ (ImageError::Tampered | ImageError::NoKey) => {
            RuntimeError::SavedStateDamaged(format!("the VM stays suspended: {damaged}"))
        }
    }
}
