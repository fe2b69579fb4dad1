//! A small internet of the test's own, in network namespaces it creates:
//! one "outside" namespace reached from the host through a veth, holding
//! two hosts' addresses (`.2` and `.3` of a 198.18.x.0/24 benchmarking
//! range), an HTTP server answering on both, and a knot DNS server for the
//! zone `test.` that accepts TSIG-signed dynamic updates. Paddock's VMs
//! reach it through the host's NAT like any outside host; no packet
//! leaves the machine. Dropping it kills its servers and removes it.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The TSIG key knot accepts updates with (base64 of 32 bytes).
pub const TSIG_NAME: &str = "paddock-test";
pub const TSIG_SECRET: &str = "cGFkZG9jay10ZXN0LXRzaWctc2VjcmV0LTMyYnl0ZXM=";
/// What the outside HTTP server returns for `/`.
pub const GREETING: &str = "hello from outside";

pub struct Internet {
    pub netns: String,
    host_link: String,
    /// `.1`: the host's end of the link.
    pub host: Ipv4Addr,
    /// `.2`: the web and DNS server (`web.allowed.test`, `ns.test`).
    pub web: Ipv4Addr,
    /// `.3`: a second address of the web server that no name points to,
    /// except `other.test`.
    pub other: Ipv4Addr,
    children: Vec<Child>,
    pub dir: tempfile::TempDir,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run a setup command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Internet {
    pub fn start() -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 256;
        let p = std::process::id() % 256;
        let netns = format!("pdkinet{p:02x}{n:02x}");
        let host_link = format!("pi{p:02x}{n:02x}");
        // 198.18.0.0/15 is set aside for benchmarks: routed nowhere real.
        let octet =
            |last: u8| Ipv4Addr::new(198, 18 + (n / 128) as u8, ((p * 2 + n) % 256) as u8, last);
        let (host, web, other) = (octet(1), octet(2), octet(3));
        // Leftovers of a run that was killed.
        for args in [["netns", "del", &netns], ["link", "del", &host_link]] {
            let _ = Command::new("ip").args(args).stderr(Stdio::null()).status();
        }
        run(Command::new("ip").args(["netns", "add", &netns]));
        run(Command::new("ip").args([
            "link", "add", &host_link, "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ]));
        run(Command::new("ip").args(["addr", "add", &format!("{host}/24"), "dev", &host_link]));
        run(Command::new("ip").args(["link", "set", &host_link, "up"]));
        let inside = |args: &[&str]| {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &netns]).args(args);
            run(&mut c);
        };
        inside(&["ip", "link", "set", "lo", "up"]);
        inside(&["ip", "addr", "add", &format!("{web}/24"), "dev", "eth0"]);
        inside(&["ip", "addr", "add", &format!("{other}/24"), "dev", "eth0"]);
        inside(&["ip", "link", "set", "eth0", "up"]);
        inside(&["ip", "route", "add", "default", "via", &host.to_string()]);

        let dir = tempfile::tempdir().expect("temp dir");
        let www = dir.path().join("www");
        std::fs::create_dir_all(&www).expect("www");
        std::fs::write(www.join("index.html"), GREETING).expect("index");
        let mut me = Self {
            netns,
            host_link,
            host,
            web,
            other,
            children: Vec::new(),
            dir,
        };
        let http = me.spawn_inside(&[
            "python3",
            "-m",
            "http.server",
            "80",
            "--bind",
            "0.0.0.0",
            "--directory",
            &www.display().to_string(),
        ]);
        me.children.push(http);
        let knot = me.start_knot();
        me.children.push(knot);
        wait_tcp(SocketAddr::from((web, 80)));
        wait_tcp(SocketAddr::from((web, 53)));
        // knotd listens before it has loaded its zone (it loads in the
        // background), and answers SERVFAIL until then: wait for an answer.
        let deadline = Instant::now() + Duration::from_secs(20);
        while me.lookup("web.allowed.test", "A") != web.to_string() {
            assert!(Instant::now() < deadline, "knotd never served its zone");
            std::thread::sleep(Duration::from_millis(50));
        }
        me
    }

    fn spawn_inside(&self, args: &[&str]) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a server in the outside namespace")
    }

    fn start_knot(&self) -> Child {
        let d = self.dir.path();
        let zone = format!(
            "$TTL 300\n\
             @ SOA ns.test. admin.test. 1 3600 600 86400 300\n\
             @ NS ns.test.\n\
             ns A {web}\n\
             web.allowed A {web}\n\
             other A {other}\n",
            web = self.web,
            other = self.other,
        );
        std::fs::write(d.join("test.zone"), zone).expect("zone file");
        let conf = format!(
            "server:\n    listen: {web}@53\n    rundir: {d}\n    user: root:root\n\
             database:\n    storage: {d}\n\
             key:\n  - id: {TSIG_NAME}\n    algorithm: hmac-sha256\n    secret: {TSIG_SECRET}\n\
             acl:\n  - id: update\n    key: {TSIG_NAME}\n    action: update\n\
             zone:\n  - domain: test\n    file: {d}/test.zone\n    acl: update\n    zonefile-sync: -1\n",
            web = self.web,
            d = d.display(),
        );
        let conf_path = d.join("knot.conf");
        std::fs::write(&conf_path, conf).expect("knot config");
        self.spawn_inside(&["knotd", "-c", &conf_path.display().to_string()])
    }

    /// The upstream paddock's resolver should forward to.
    pub fn dns(&self) -> String {
        format!("{}:53", self.web)
    }

    /// Looks `name` up at the outside DNS server, as `kdig +short` prints it.
    pub fn lookup(&self, name: &str, rtype: &str) -> String {
        let out = Command::new("kdig")
            .args([&format!("@{}", self.web), "+short", name, rtype])
            .output()
            .expect("run kdig");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

fn wait_tcp(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{addr} did not start listening");
}

impl Drop for Internet {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // `ip netns exec` forks: kill whatever still runs in the namespace.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.netns])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_link])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}
