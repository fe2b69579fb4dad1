//! A real Docker Engine for the docker provider's tests: Debian's
//! `dockerd` (scripts/deps.sh installs docker.io) on a socket of its own,
//! with its own data and exec roots, no bridge and no iptables rules, so
//! it touches nothing of the host's network. Images come from
//! `docker import` of a busybox root the test builds: there is no
//! registry to pull from.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct DockerEngine {
    pub dir: tempfile::TempDir,
    child: Child,
}

impl DockerEngine {
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pdkdocker")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let child = Self::spawn(dir.path());
        let engine = Self { dir, child };
        engine.wait_ready();
        engine
    }

    /// Stops the engine (its containers stop with it) and starts it
    /// again on the same data, as a host's engine restart does.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Stops the engine (its containers stop with it); `start_again` brings it
    /// back.
    pub fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }

    pub fn start_again(&mut self) {
        self.child = Self::spawn(self.dir.path());
        self.wait_ready();
    }

    fn spawn(root: &std::path::Path) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join("dockerd.log"))
            .expect("log");
        Command::new("dockerd")
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .arg("--data-root")
            .arg(root.join("data"))
            .arg("--exec-root")
            .arg(root.join("exec"))
            .arg("--pidfile")
            .arg(root.join("dockerd.pid"))
            .arg("--host")
            .arg(format!("unix://{}", root.join("docker.sock").display()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dockerd from docker.io (scripts/deps.sh installs it)")
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.cli(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "dockerd did not start: {}",
                std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The engine's address, as `[providers] docker` takes it.
    pub fn host(&self) -> String {
        format!("unix://{}", self.dir.path().join("docker.sock").display())
    }

    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker")
            .arg("-H")
            .arg(self.host())
            .args(args)
            .output()
            .expect("the docker CLI (docker.io)")
    }

    /// Imports `root` (a tar of a root filesystem) as `tag`.
    pub fn import(&self, root: &[u8], tag: &str) {
        let file = self.dir.path().join("import.tar");
        std::fs::write(&file, root).expect("write the root tar");
        let out = self.cli(&["import", &file.display().to_string(), tag]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The names of the engine's containers, stopped ones included.
    pub fn containers(&self) -> Vec<String> {
        let out = self.cli(&["ps", "-a", "--format", "{{.Names}}"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for DockerEngine {
    fn drop(&mut self) {
        // SIGTERM lets dockerd stop its containers and unmount their
        // layers before its data root goes.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
