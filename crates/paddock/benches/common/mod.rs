//! The real server every benchmark measures: release `paddock serve` on a
//! free loopback port with a temporary data dir (and an optional config),
//! killed and purged of its sandboxes when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    _dir: tempfile::TempDir,
    pub data: PathBuf,
    pub base: String,
    pub key: String,
    pub child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = paddock_runtime::container::purge(&self.data);
    }
}

pub fn start_server(config_toml: Option<&str>) -> Server {
    let dir = tempfile::Builder::new()
        .prefix("pdkbench")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let data = dir.path().join("data");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_paddock"));
    cmd.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
    ])
    .arg(&data);
    if let Some(toml) = config_toml {
        let config = dir.path().join("paddock.toml");
        std::fs::write(&config, toml).expect("config");
        cmd.arg("--config").arg(config);
    }
    let child = cmd
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start paddock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let key = std::fs::read_to_string(data.join("admin.key"))
        .expect("admin.key")
        .trim()
        .to_owned();
    Server {
        _dir: dir,
        data,
        base: format!("http://127.0.0.1:{port}"),
        key,
        child,
    }
}
