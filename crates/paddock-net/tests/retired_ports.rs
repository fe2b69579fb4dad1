//! A retired port (renamed into its server's retired names, still up and
//! on its bridge until the release task deletes it) carries no frame
//! either way, on the real kernel: two namespaces on a bridge reach each
//! other until one's port is retired, and not after.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use paddock_net::link;
use paddock_net::nft::{self, Layout};

/// The link group the test's port is retired into (a server's groups
/// come from its bridge's name, with the high bit set, as this one has).
const GROUP: u32 = 0x8000_abcd;

fn root_with_tools() -> bool {
    nix::unistd::geteuid().is_root()
        && ["nft", "ip", "python3"].iter().all(|tool| {
            Command::new(tool)
                .arg(if *tool == "ip" { "-V" } else { "--version" })
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run a setup command");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn quietly(args: &[&str]) {
    let _ = Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Two namespaces, each with its `eth0` on one bridge through a port
/// named as paddock names a VM's; removed when dropped.
struct Wire {
    bridge: String,
    table: String,
    namespaces: [String; 2],
    addresses: [Ipv4Addr; 2],
}

impl Wire {
    fn new(retired: &str) -> Self {
        let tag = std::process::id() % 0x1_0000;
        let third = (tag % 250) as u8;
        let wire = Self {
            bridge: format!("pdrb{tag:04x}"),
            table: format!("pdrt{tag:04x}"),
            namespaces: [format!("pdra{tag:04x}"), format!("pdrz{tag:04x}")],
            addresses: [
                Ipv4Addr::new(10, 251, third, 2),
                Ipv4Addr::new(10, 251, third, 3),
            ],
        };
        wire.remove();
        run(&["ip", "link", "add", &wire.bridge, "type", "bridge"]);
        run(&["ip", "link", "set", &wire.bridge, "up"]);
        for (ns, address) in wire.namespaces.iter().zip(wire.addresses) {
            let port = link::port_name(address);
            run(&["ip", "netns", "add", ns]);
            run(&[
                "ip", "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ]);
            run(&["ip", "link", "set", &port, "master", &wire.bridge, "up"]);
            let inside = |args: &[&str]| {
                let mut all = vec!["ip", "netns", "exec", ns];
                all.extend_from_slice(args);
                run(&all);
            };
            inside(&["ip", "addr", "add", &format!("{address}/24"), "dev", "eth0"]);
            inside(&["ip", "link", "set", "eth0", "up"]);
        }
        let layout = Layout {
            table: wire.table.clone(),
            subnet: paddock_core::model::Ipv4Cidr::parse(&format!("10.251.{third}.0/24"))
                .expect("subnet"),
            blocked: Vec::new(),
            retired: retired.to_owned(),
        };
        let rules = nft::full_ruleset(&layout, &[], &[]);
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(nft::apply(&rules))
            .expect("apply the ruleset");
        wire
    }

    /// Whether a UDP datagram from namespace `from` reaches the other.
    fn reaches(&self, from: usize) -> bool {
        let to = 1 - from;
        let listen = format!(
            "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); \
             s.bind(('{}', 9999)); s.settimeout(3)\n\
             try: s.recv(16); print('got')\nexcept OSError: print('none')",
            self.addresses[to]
        );
        let listener = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.namespaces[to],
                "python3",
                "-c",
                &listen,
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("listener");
        let send = format!(
            "import socket, time; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             for _ in range(20):\n    s.sendto(b'x', ('{}', 9999)); time.sleep(0.1)",
            self.addresses[to]
        );
        quietly(&[
            "ip",
            "netns",
            "exec",
            &self.namespaces[from],
            "python3",
            "-c",
            &send,
        ]);
        let out = listener.wait_with_output().expect("listener's answer");
        String::from_utf8_lossy(&out.stdout).trim() == "got"
    }

    fn remove(&self) {
        for ns in &self.namespaces {
            quietly(&["ip", "netns", "del", ns]);
        }
        for address in self.addresses {
            quietly(&["ip", "link", "del", &link::port_name(address)]);
        }
        quietly(&["ip", "link", "del", &self.bridge]);
        quietly(&["nft", "delete", "table", "inet", &self.table]);
        quietly(&["nft", "delete", "table", "bridge", &self.table]);
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        self.remove();
        // The retired port went with its namespace's end; a kernel that
        // kept it has it in the group.
        quietly(&["ip", "link", "del", "group", &GROUP.to_string()]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retired_port_carries_nothing_either_way() {
    if !root_with_tools() {
        eprintln!("skipped: needs root, nft, ip and python3 (scripts/deps.sh)");
        return;
    }
    let group = GROUP;
    let wire = tokio::task::spawn_blocking(move || Wire::new(&link::retired_prefix(group)))
        .await
        .expect("set up");
    let wire = std::sync::Arc::new(wire);
    let w = wire.clone();
    let before = tokio::task::spawn_blocking(move || (w.reaches(0), w.reaches(1)))
        .await
        .expect("before");
    assert_eq!(
        before,
        (true, true),
        "the two ends reach each other at first"
    );

    let port = link::port_name(wire.addresses[0]);
    link::retire_ports(&[wire.addresses[0]], group)
        .await
        .expect("retire");
    let net = std::path::Path::new("/sys/class/net");
    assert!(!net.join(&port).exists(), "{port} keeps its name");
    let retired: Vec<String> = std::fs::read_dir(net)
        .expect("links")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&link::retired_prefix(group)))
        .collect();
    assert_eq!(retired.len(), 1, "{retired:?}");

    let w = wire.clone();
    let after = tokio::task::spawn_blocking(move || (w.reaches(0), w.reaches(1)))
        .await
        .expect("after");
    assert_eq!(after, (false, false), "a retired port carried a frame");
    link::reap(group).await.expect("reap");
    assert!(
        !net.join(&retired[0]).exists(),
        "the reap left {}",
        retired[0]
    );
}
