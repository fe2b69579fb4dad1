//! A microVM's monitor on the host: run by the server as
//! `paddock-agent vmm CONFIG.json`.
//!
//! 1. join the sandbox's cgroups, so the monitor, `virtiofsd` and qemu
//!    are all accounted and all die with them;
//! 2. in a mount namespace of its own, mount the sandbox's overlays (the
//!    same layers a container gets) and bind its files over them;
//! 3. join the VM's network namespace and bridge a tap device to its
//!    `eth0`, so the guest has the VM's address on paddock's bridge under
//!    the same host-side egress rules as a container;
//! 4. start `virtiofsd` serving that root, then qemu;
//! 5. report its pid to the parent (which prints it and exits, so the
//!    monitor is nobody's child and outlives the server), then serve the
//!    sandbox's `agent.sock` over the guest's virtio-serial port until qemu
//!    exits.
//!
//! Every mount lives in the monitor's namespace, so none can leak onto the
//! host, and the tap lives in the VM's network namespace.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sched::{unshare, CloneFlags};

use crate::boot::{mounts, nix_step, step, BootError};
pub use paddock_agent_protocol::config::VmmConfig;

const SOCKET_WAIT: Duration = Duration::from_secs(10);
/// The most of a guest's console kept on the host: whatever the guest
/// writes to its console (it may write without end) must not fill the
/// host's disk. Boot messages and failures come first and are kept.
const CONSOLE_LOG_MAX: u64 = 1 << 20;

/// Starts the monitor; returns its pid once it serves `agent.sock`.
pub fn launch(config_path: &Path) -> Result<crate::boot::Launched, BootError> {
    let config: VmmConfig = crate::boot::read_config(config_path)?;
    crate::boot::join_cgroups(&config.sandbox.cgroup_procs)?;
    crate::boot::fork_reporting("the monitor", |ready| monitor(&config, ready))
}

/// The monitor's whole life; its exit code.
fn monitor(config: &VmmConfig, mut ready: fs::File) -> i32 {
    let prepared = nix::unistd::setsid()
        .map_err(nix_step("setsid"))
        .and_then(|_| crate::boot::redirect_stdio(&config.sandbox.log_path))
        .and_then(|()| prepare_host_side(config));
    if let Err(e) = prepared {
        let _ = ready.write_all(crate::boot::error_chain(&e).as_bytes());
        return 1;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.write_all(format!("start the monitor's runtime: {e}").as_bytes());
            return 1;
        }
    };
    match runtime.block_on(run_vm(config, ready)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("paddock-agent (vmm): {}", crate::boot::error_chain(&e));
            1
        }
    }
}

/// What must happen while the monitor is still single-threaded: its own
/// mount namespace with the root in it, and the move into the VM's
/// network namespace with the tap made there.
fn prepare_host_side(config: &VmmConfig) -> Result<(), BootError> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(nix_step("unshare the mount namespace"))?;
    let sandbox = &config.sandbox;
    mounts::mount_layers(sandbox, None, &mut crate::boot::Phases::start())?;
    mounts::bind_files(
        &sandbox.root_mountpoint,
        &sandbox.bind_files,
        mounts::Staging::OwnTmpfs,
    )?;
    if let Some(path) = &sandbox.netns {
        crate::boot::join_network_namespace(path)?;
        if let Some(tap) = &config.tap {
            bridge_tap(tap)?;
        }
    }
    Ok(())
}

/// Makes `tap` and bridges it with `eth0`, whose address becomes the
/// guest's: the namespace itself keeps none.
fn bridge_tap(tap: &str) -> Result<(), BootError> {
    // A resumed VM's namespace has them from its first boot (the tap is
    // persistent).
    let exists = std::process::Command::new("ip")
        .args(["link", "show", "dev", tap])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if exists {
        return Ok(());
    }
    let batch = format!(
        "tuntap add dev {tap} mode tap\n\
         addr flush dev eth0\n\
         link add vmbr0 type bridge\n\
         link set eth0 master vmbr0\n\
         link set {tap} master vmbr0\n\
         link set {tap} up\n\
         link set vmbr0 up\n"
    );
    let mut child = std::process::Command::new("ip")
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(step("run ip"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(batch.as_bytes())
            .map_err(step("write to ip"))?;
    }
    let out = child.wait_with_output().map_err(step("run ip"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(BootError::Child(format!(
            "bridge the tap device: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

async fn run_vm(config: &VmmConfig, mut ready: fs::File) -> Result<(), BootError> {
    let started = start_processes(config).await;
    let (mut virtiofsd, mut qemu, listener) = match started {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.write_all(crate::boot::error_chain(&e).as_bytes());
            return Err(e);
        }
    };
    let _ = ready.write_all(b"ok");
    drop(ready);
    if let Some(console) = wait_for_socket(&config.console_socket).await {
        tokio::spawn(keep_console(console, config.console_log.clone()));
    }
    // One agent session after another: a session that ends (the guest's
    // agent started over, as a resumed one does) is followed by a new one
    // on a fresh connection to the port; the VM goes on.
    let serving = async {
        loop {
            let Some(port) = wait_for_socket(&config.port_socket).await else {
                eprintln!("paddock-agent (vmm): qemu never opened the agent port");
                return std::future::pending().await;
            };
            let handshake = config.session_handshake;
            if let Err(e) = crate::mux::serve_host(port, &listener, handshake).await {
                eprintln!("paddock-agent (vmm): an agent session ended: {e}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let virtiofsd_ended = async {
        match virtiofsd.as_mut() {
            Some(v) => v.wait().await,
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        status = qemu.wait() => {
            eprintln!("paddock-agent (vmm): qemu exited: {status:?}");
            Ok(())
        }
        status = virtiofsd_ended => {
            Err(BootError::Child(format!("virtiofsd exited: {status:?}")))
        }
        r = serving => r,
    };
    let _ = qemu.start_kill();
    let _ = qemu.wait().await;
    if let Some(v) = virtiofsd.as_mut() {
        let _ = v.start_kill();
        let _ = v.wait().await;
    }
    result
}

type Started = (
    Option<tokio::process::Child>,
    tokio::process::Child,
    tokio::net::UnixListener,
);

async fn start_processes(config: &VmmConfig) -> Result<Started, BootError> {
    let sandbox = &config.sandbox;
    let virtiofsd = match config.virtiofsd.split_first() {
        Some((program, args)) => Some(start_virtiofsd(config, program, args).await?),
        None => None,
    };
    let (program, args) = config
        .qemu
        .split_first()
        .ok_or_else(|| BootError::Child("no qemu command".into()))?;
    let _ = fs::remove_file(&config.port_socket);
    let _ = fs::remove_file(&config.console_socket);
    let qemu = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(step(format!("start {program}")))?;
    let _ = fs::remove_file(&sandbox.socket_path);
    let listener = tokio::net::UnixListener::bind(&sandbox.socket_path).map_err(step(format!(
        "bind the agent socket {}",
        sandbox.socket_path.display()
    )))?;
    Ok((virtiofsd, qemu, listener))
}

/// Starts `virtiofsd` serving the sandbox's root; returns once it listens.
async fn start_virtiofsd(
    config: &VmmConfig,
    program: &String,
    args: &[String],
) -> Result<tokio::process::Child, BootError> {
    let sandbox = &config.sandbox;
    let _ = fs::remove_file(&config.virtiofs_socket);
    let mut virtiofsd = tokio::process::Command::new(program)
        .args(args)
        .arg(format!(
            "--socket-path={}",
            config.virtiofs_socket.display()
        ))
        .arg("-o")
        .arg(format!("source={}", sandbox.root_mountpoint.display()))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(step(format!("start {program}")))?;
    // Only its file: virtiofsd serves the first connection and exits
    // when that one closes, so a probe would end it.
    if !wait_for_file(&config.virtiofs_socket).await {
        let status = virtiofsd.try_wait().ok().flatten();
        return Err(BootError::Child(format!(
            "virtiofsd did not listen on {} ({status:?})",
            config.virtiofs_socket.display()
        )));
    }
    Ok(virtiofsd)
}

/// Copies the guest's console into `log` up to [`CONSOLE_LOG_MAX`], then
/// reads and drops the rest (so the guest never blocks on it).
async fn keep_console(mut console: tokio::net::UnixStream, log: PathBuf) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut file) = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .await
    else {
        return;
    };
    let mut kept = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let mut buf = vec![0u8; 16 * 1024];
    let mut told = false;
    while let Ok(n) = console.read(&mut buf).await {
        if n == 0 {
            return;
        }
        let room = usize::try_from(CONSOLE_LOG_MAX.saturating_sub(kept)).unwrap_or(usize::MAX);
        let take = n.min(room);
        if take > 0 && file.write_all(&buf[..take]).await.is_ok() {
            kept += take as u64;
        }
        if take < n && !told {
            told = true;
            let _ = file
                .write_all(b"\n[paddock: console output beyond 1 MiB is dropped]\n")
                .await;
        }
    }
}

/// Whether `path` appears within [`SOCKET_WAIT`].
async fn wait_for_file(path: &Path) -> bool {
    let deadline = Instant::now() + SOCKET_WAIT;
    while !path.exists() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    true
}

/// Connects to the unix socket at `path` once something listens there.
async fn wait_for_socket(path: &Path) -> Option<tokio::net::UnixStream> {
    let deadline = Instant::now() + SOCKET_WAIT;
    loop {
        if let Ok(s) = tokio::net::UnixStream::connect(path).await {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
