//! The one helper every integration test uses: a real `paddock serve` on a
//! free loopback port with its own temporary data dir, and a small HTTP
//! client for it. Dropping the server kills it and every sandbox it made.
#![allow(dead_code)]

pub mod docker;
pub mod internet;
pub mod registry;
pub mod token;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Server {
    pub dir: tempfile::TempDir,
    pub base: String,
    pub key: String,
    child: Option<Child>,
    port: u16,
    /// The share proxy's port.
    pub share_port: u16,
    /// The share proxy's TLS port.
    pub share_tls_port: u16,
    /// The SSH gateway's port.
    pub ssh_port: u16,
    /// The environment the server runs with (its config overrides).
    pub env: Vec<(String, String)>,
    config: Option<PathBuf>,
}

/// A bridge and subnet of its own for each server, so servers running at
/// once (tests of one binary run in parallel) never share rules.
fn network_env() -> Vec<(String, String)> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 256;
    let p = std::process::id() % 128;
    vec![
        (
            "PADDOCK_NETWORK__BRIDGE".into(),
            format!("pt{p:02x}{n:02x}"),
        ),
        (
            "PADDOCK_NETWORK__SUBNET".into(),
            format!("10.{}.{n}.0/24", 64 + p),
        ),
        ("PADDOCK_NETWORK__WARM".into(), "2".into()),
        // Tests count the sandboxes they leave, which a warm pool's would
        // join; the pool has its own tests (`warm_pool.rs`), and the
        // hardening probes run in pooled sandboxes.
        ("PADDOCK_SANDBOX__WARM_POOL".into(), "0".into()),
    ]
}

/// `PADDOCK_TEST_POSTGRES` names a PostgreSQL the tests may use (an admin
/// URL, as `scripts/postgres.sh` prints). With `PADDOCK_TEST_STORE=postgres`
/// too, every server keeps its records in a database of its own there
/// instead of its data dir's SQLite: the whole suite runs on either.
fn store_env() -> Vec<(String, String)> {
    if std::env::var("PADDOCK_TEST_STORE").as_deref() != Ok("postgres") {
        return Vec::new();
    }
    let admin = std::env::var("PADDOCK_TEST_POSTGRES")
        .expect("PADDOCK_TEST_STORE=postgres needs PADDOCK_TEST_POSTGRES");
    vec![("PADDOCK_STORE".into(), fresh_postgres_database(&admin))]
}

/// Creates an empty database on the test PostgreSQL; its URL.
pub fn fresh_postgres_database(admin: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // The start time too: a test process's pid is reused by later runs,
    // whose databases stay on a long-lived PostgreSQL.
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let name = format!("paddock_{}_{started}_{n}", std::process::id());
    let out = Command::new("psql")
        .args(["-X", "-q", admin, "-c", &format!("CREATE DATABASE {name}")])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "create {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (server, _) = admin
        .rsplit_once('/')
        .expect("an admin URL with a database");
    format!("{server}/{name}")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_paddock"))
}

impl Server {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with a TOML config file.
    pub fn start_with_config(toml: &str) -> Self {
        Self::start_full(&[], Some(toml))
    }

    /// Starts a server with a TOML config file and extra environment.
    pub fn start_full_env(env: &[(&str, &str)], toml: &str) -> Self {
        Self::start_full(env, Some(toml))
    }

    /// Starts a server with extra environment (config overrides).
    pub fn start_with(env: &[(&str, &str)]) -> Self {
        Self::start_full(env, None)
    }

    /// Another node of `first`'s installation: a server of its own (data
    /// dir, ports, bridge, subnet) over `first`'s PostgreSQL store, with
    /// the master key and admin key the installation's nodes share.
    /// `None` when the suite runs without PostgreSQL.
    pub fn start_sharing(first: &Server, toml: Option<&str>) -> Option<Self> {
        let store = first
            .env
            .iter()
            .find(|(k, _)| k == "PADDOCK_STORE")
            .map(|(_, v)| v.clone())?;
        Some(Self::start_prepared(
            &[("PADDOCK_STORE", &store)],
            toml,
            |data| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::create_dir_all(data).expect("data dir");
                std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700))
                    .expect("restrict the data dir");
                for key in ["master.key", "admin.key"] {
                    std::fs::copy(first.data_dir().join(key), data.join(key)).expect(key);
                }
            },
        ))
    }

    fn start_full(env: &[(&str, &str)], toml: Option<&str>) -> Self {
        Self::start_prepared(env, toml, |_| {})
    }

    /// A server on a PostgreSQL store of its own, whatever the suite runs
    /// on; `None` without a PostgreSQL to use.
    pub fn start_on_postgres(toml: &str) -> Option<Self> {
        let admin = std::env::var("PADDOCK_TEST_POSTGRES").ok()?;
        let store = fresh_postgres_database(&admin);
        Some(Self::start_prepared(
            &[("PADDOCK_STORE", &store)],
            Some(toml),
            |_| {},
        ))
    }

    /// A server on its data dir's SQLite store whatever the suite runs on
    /// (a store to move to PostgreSQL).
    pub fn start_on_sqlite(toml: &str) -> Self {
        Self::start_prepared(&[("PADDOCK_STORE", "")], Some(toml), |_| {})
    }

    /// Starts a server once `prepare` has filled its data dir.
    fn start_prepared(
        env: &[(&str, &str)],
        toml: Option<&str>,
        prepare: impl FnOnce(&Path),
    ) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pdk")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let port = free_port();
        let share_port = free_port();
        let share_tls_port = free_port();
        let ssh_port = free_port();
        let mut s = Self {
            share_port,
            share_tls_port,
            ssh_port,
            dir,
            base: format!("http://127.0.0.1:{port}"),
            key: String::new(),
            child: None,
            port,
            env: network_env()
                .into_iter()
                .chain(if env.iter().any(|(k, _)| *k == "PADDOCK_STORE") {
                    Vec::new()
                } else {
                    store_env()
                })
                .chain([
                    (
                        "PADDOCK_SHARES__LISTEN".to_owned(),
                        format!("127.0.0.1:{share_port}"),
                    ),
                    (
                        "PADDOCK_SHARES__TLS_LISTEN".to_owned(),
                        format!("127.0.0.1:{share_tls_port}"),
                    ),
                    (
                        "PADDOCK_SSH__LISTEN".to_owned(),
                        format!("127.0.0.1:{ssh_port}"),
                    ),
                ])
                .chain(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())))
                // An empty PADDOCK_STORE asks for the data dir's SQLite.
                .filter(|(k, v)| !(k == "PADDOCK_STORE" && v.is_empty()))
                .collect(),
            config: None,
        };
        if let Some(toml) = toml {
            let path = s.dir.path().join("paddock.toml");
            std::fs::write(&path, toml).expect("write config");
            s.config = Some(path);
        }
        prepare(&s.data_dir());
        s.spawn();
        s.key = std::fs::read_to_string(s.data_dir().join("admin.key"))
            .expect("admin.key written on first start")
            .trim()
            .to_owned();
        s
    }

    /// Runs a statement on the server's store (stopped or not): the
    /// SQLite spelling or the PostgreSQL one, whichever it keeps.
    pub fn edit_store(&self, sqlite: &str, postgres: &str) {
        let store = self
            .env
            .iter()
            .find(|(k, _)| k == "PADDOCK_STORE")
            .map(|(_, v)| v.clone());
        let status = match store {
            Some(url) => Command::new("psql")
                .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", &url, "-c", postgres])
                .status(),
            None => Command::new("python3")
                .arg("-c")
                .arg(
                    "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); \
                     db.execute(sys.argv[2]); db.commit()",
                )
                .arg(self.data_dir().join("paddock.db"))
                .arg(sqlite)
                .status(),
        };
        assert!(
            status.expect("run the store's client").success(),
            "{sqlite}"
        );
    }

    /// A query's rows on the server's PostgreSQL store, one per line, its
    /// columns `|`-separated.
    pub fn query_store(&self, sql: &str) -> String {
        let url = self
            .env
            .iter()
            .find(|(k, _)| k == "PADDOCK_STORE")
            .map(|(_, v)| v.clone())
            .expect("a PostgreSQL store");
        let out = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                &url,
                "-c",
                sql,
            ])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the server. A port picked free can be taken by another test
    /// before the server binds it: then fresh ports are picked and the
    /// start is tried again.
    fn spawn(&mut self) {
        for _ in 0..5 {
            let logged = self.log().len();
            if self.try_spawn() {
                return;
            }
            let tail = self.log().get(logged..).unwrap_or_default().to_owned();
            if !tail.contains("Address already in use") {
                panic!("the server did not start: {}", self.log());
            }
            self.kill();
            self.pick_ports();
        }
        panic!("the server found no free ports: {}", self.log());
    }

    fn pick_ports(&mut self) {
        self.port = free_port();
        self.base = format!("http://127.0.0.1:{}", self.port);
        self.share_port = free_port();
        self.share_tls_port = free_port();
        self.ssh_port = free_port();
        for (k, v) in &mut self.env {
            match k.as_str() {
                "PADDOCK_SSH__LISTEN" => *v = format!("127.0.0.1:{}", self.ssh_port),
                "PADDOCK_SHARES__LISTEN" => *v = format!("127.0.0.1:{}", self.share_port),
                "PADDOCK_SHARES__TLS_LISTEN" => *v = format!("127.0.0.1:{}", self.share_tls_port),
                _ => {}
            }
        }
    }

    /// True once the server answers; false when it exited first.
    fn try_spawn(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("server log");
        // A relative data dir, as the README's default `.paddock` is: the
        // server must resolve it before any helper works from elsewhere.
        let child = Command::new(bin())
            .current_dir(self.dir.path())
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{}", self.port),
                "--data-dir",
                "data",
            ])
            .args(
                self.config
                    .iter()
                    .flat_map(|c| [std::ffi::OsStr::new("--config"), c.as_os_str()]),
            )
            // The resolver at debug: when a lookup fails in a test, its
            // log says whether upstream was slow or the policy refused it.
            .env(
                "RUST_LOG",
                "info,sqlx=warn,tower_http=warn,paddock_net::dns=debug",
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start paddock serve");
        self.child = Some(child);
        let logged = self.log().len();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            // Its own log, not the port: a port picked free may be another
            // test's server by now, which would answer in its place.
            let serving = self
                .log()
                .get(logged..)
                .is_some_and(|new| new.contains("paddock is serving"));
            if serving && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the server did not start: {}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// `paddock rotate-master-key` on the data dir (the server stopped
    /// first by the caller); its output, once it succeeded.
    pub fn rotate_master_key(&self) -> std::process::Output {
        let out = Command::new(bin())
            .args(["rotate-master-key", "--data-dir"])
            .arg(self.data_dir())
            .output()
            .expect("run rotate-master-key");
        assert!(out.status.success(), "{out:?}");
        out
    }

    /// How many file descriptors the server process holds open.
    pub fn open_fds(&self) -> usize {
        let pid = self
            .child
            .as_ref()
            .map(|c| c.id())
            .expect("the server runs");
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .expect("/proc/PID/fd")
    }

    /// `kill -9` the server (its sandboxes keep running).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server as an operator would (SIGTERM) and waits for it
    /// to exit.
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn client(&self) -> Client {
        install_crypto();
        Client {
            http: reqwest::Client::new(),
            base: self.base.clone(),
            key: Some(self.key.clone()),
        }
    }

    /// The id of the account made at first start.
    pub fn default_account_id(&self) -> String {
        let out = Command::new(bin())
            .args(["keys", "--data-dir"])
            .arg(self.data_dir())
            .args(["--json", "list"])
            .output()
            .expect("paddock keys list");
        assert!(out.status.success(), "{out:?}");
        let keys: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        keys[0]["account_id"]
            .as_str()
            .expect("the admin key's account")
            .to_owned()
    }

    /// Lets the default account use the `local` provider (which admits no
    /// account unless listed): the config's last section must be
    /// `[providers]`. Restarts the server.
    pub fn allow_local(&mut self) {
        let line = format!("local_accounts = [{:?}]\n", self.default_account_id());
        self.edit_config(|toml| toml + &line);
    }

    /// Rewrites the server's config file with `edit` and restarts it.
    pub fn edit_config(&mut self, edit: impl FnOnce(String) -> String) {
        let path = self.config.clone().expect("a config file");
        let toml = std::fs::read_to_string(&path).expect("read config");
        std::fs::write(&path, edit(toml)).expect("write config");
        self.restart();
    }

    /// A key of a new, separate account.
    pub fn other_account_key(&self) -> String {
        self.create_key(&["--new-account", "other"])
    }

    /// `paddock keys create ARGS` on this server's data dir: the secret.
    pub fn create_key(&self, args: &[&str]) -> String {
        let out = Command::new(bin())
            .args(["keys", "--data-dir"])
            .arg(self.data_dir())
            .arg("create")
            .args(args)
            .output()
            .expect("paddock keys create");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        // A failed assertion says what the server saw.
        if std::thread::panicking() {
            eprintln!(
                "--- server log ---\n{}--- end of server log ---",
                self.log()
            );
        }
        // The CLI purges sandboxes, mounts and this server's network.
        let mut purge = Command::new(bin());
        purge.args(["purge", "--data-dir"]).arg(self.data_dir());
        if let Some(config) = &self.config {
            purge.arg("--config").arg(config);
        }
        let _ = purge
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// reqwest needs the process's TLS crypto provider installed first.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub key: Option<String>,
}

pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Client {
    pub fn with_key(&self, key: Option<&str>) -> Client {
        Client {
            http: self.http.clone(),
            base: self.base.clone(),
            key: key.map(str::to_owned),
        }
    }

    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, format!("{}{}", self.base, path));
        match &self.key {
            Some(k) => rb.header("X-API-Key", k),
            None => rb,
        }
    }

    pub async fn send(&self, rb: reqwest::RequestBuilder) -> Reply {
        let resp = rb.send().await.expect("request reaches the server");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("a body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply {
            status,
            body,
            headers,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.req(reqwest::Method::GET, path)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(self.req(reqwest::Method::DELETE, path)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(self.req(reqwest::Method::POST, path).json(&body))
            .await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.send(self.req(reqwest::Method::PATCH, path).json(&body))
            .await
    }

    pub async fn post_raw(&self, path: &str, body: &'static str) -> Reply {
        self.send(
            self.req(reqwest::Method::POST, path)
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    /// Creates a running VM and returns its record.
    pub async fn create_vm(&self, body: Value) -> Value {
        let r = self.post("/v1/vms?wait=true", body).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["status"], "active", "{}", r.body);
        r.body
    }

    /// Runs a shell command through the streaming exec and returns
    /// (stdout, stderr, exit event).
    pub async fn exec(&self, vm_id: &str, command: &str) -> (String, String, Value) {
        self.exec_body(vm_id, serde_json::json!({ "command": command }))
            .await
    }

    pub async fn exec_body(&self, vm_id: &str, body: Value) -> (String, String, Value) {
        let r = self.post(&format!("/v1/vms/{vm_id}/exec"), body).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let text = r
            .body
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| r.body.to_string());
        let (mut out, mut err, mut exit) = (String::new(), String::new(), Value::Null);
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).expect("ndjson line");
            match v["type"].as_str() {
                Some("stdout") => out.push_str(v["data"].as_str().unwrap_or("")),
                Some("stderr") => err.push_str(v["data"].as_str().unwrap_or("")),
                Some("exit") => exit = v,
                other => panic!("unexpected event {other:?}: {v}"),
            }
        }
        (out, err, exit)
    }
}

/// Processes on the host whose command line mentions `needle`.
pub fn host_processes_mentioning(needle: &Path) -> usize {
    // A sandbox's helpers name its run dir by its last part only
    // (`paddock-agent boot - <vm id>`).
    let label = needle
        .file_name()
        .map(|n| format!("\0-\0{}", n.to_string_lossy()));
    let needle = needle.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .chars()
                        .all(|c| c.is_ascii_digit())
                })
                .filter(|e| {
                    std::fs::read(e.path().join("cmdline"))
                        .map(|c| {
                            let c = String::from_utf8_lossy(&c);
                            c.contains(&needle) || label.as_ref().is_some_and(|l| c.contains(l))
                        })
                        .unwrap_or(false)
                })
                .count()
        })
        .unwrap_or(0)
}

/// The host pid of the sandbox `vm_id`'s PID 1, whose command line is
/// `paddock-agent boot - <vm id>`.
pub fn sandbox_init_pid(vm_id: &str) -> i32 {
    let needle = format!("boot\0-\0{vm_id}");
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                .unwrap_or(false)
        })
        .expect("the sandbox's PID 1")
}

/// What `count` reads once it reaches 0, or after 10 s: a deleted
/// sandbox is killed before its delete answers, and its processes and
/// cgroups are gone a few milliseconds later, off the delete's path.
pub fn settled(count: impl Fn() -> usize) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = count();
        if n == 0 || std::time::Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Host processes in the cgroups of this server's sandboxes.
pub fn sandbox_processes(data_dir: &Path) -> usize {
    let needle = format!(
        "/paddock/{}/",
        paddock_runtime::container::instance_id(data_dir)
    );
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    std::fs::read_to_string(e.path().join("cgroup"))
                        .is_ok_and(|c| c.contains(&needle))
                })
                .count()
        })
        .unwrap_or(0)
}

/// cgroup directories of sandboxes under this server's instance.
pub fn sandbox_cgroups(data_dir: &Path) -> usize {
    let instance = paddock_runtime::container::instance_id(data_dir);
    ["memory", "pids", "cpu", "freezer", ""]
        .iter()
        .map(|c| {
            Path::new("/sys/fs/cgroup")
                .join(c)
                .join("paddock")
                .join(&instance)
        })
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .count()
}
